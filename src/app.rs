//! The shared state every request sees: configuration, keys, the store, the clock.

use crate::clock::Clock;
use crate::config::{Config, Keys, ProcessorMode};
use crate::processor::forward::Forward;
use crate::processor::sandbox::Sandbox;
use crate::soap::XmlLimits;
use crate::store::{GroupCommit, SledStore, TerminalStore};
use std::sync::Arc;

pub struct App {
    pub config: Config,
    pub keys: Keys,
    pub store: Arc<dyn TerminalStore>,
    pub sled: SledStore,
    pub commit: GroupCommit,
    pub clock: Arc<dyn Clock>,
    pub xml_limits: XmlLimits,
    pub sandbox: Sandbox,
    /// Set in forward mode: transactions go upstream instead of to the sandbox.
    pub forward: Option<Forward>,
}

impl App {
    /// Build the state. Must run inside a tokio runtime (group commit starts a task).
    pub fn new(
        config: Config,
        keys: Keys,
        sled: SledStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<App>, String> {
        let sandbox = Sandbox::open(sled.db()).map_err(|e| e.to_string())?;
        let forward = match config.processor.mode {
            ProcessorMode::Sandbox => None,
            ProcessorMode::Forward => {
                let url = config.processor.upstream_url.as_deref().ok_or(
                    "processor.mode = \"forward\" needs processor.upstream_url".to_string(),
                )?;
                Some(Forward::new(
                    url,
                    std::time::Duration::from_millis(config.processor.upstream_timeout_ms),
                )?)
            }
        };
        let store: Arc<dyn TerminalStore> = Arc::new(sled.clone());
        let commit = GroupCommit::start(
            store.clone(),
            std::time::Duration::from_micros(config.store.group_commit_window_us),
        );
        let l = &config.limits;
        let xml_limits = XmlLimits {
            max_depth: l.max_xml_depth,
            max_elements: l.max_xml_elements,
            max_attributes: l.max_xml_attributes,
        };
        Ok(Arc::new(App {
            config,
            keys,
            store,
            sled,
            commit,
            clock,
            xml_limits,
            sandbox,
            forward,
        }))
    }
}
