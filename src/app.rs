//! The shared state every request sees: configuration, keys, the store, the clock, metrics.
//!
//! Keys and token settings are "live": `reload` swaps them from the files without a restart,
//! and every request takes the current ones with `keys()` / `token()` (an `Arc` clone).

use crate::clock::Clock;
use crate::config::{Config, Keys, ProcessorMode, Settings, TokenConfig};
use crate::cws::limiter::Limiter;
use crate::cws::processor::forward::Forward;
use crate::cws::processor::sandbox::Sandbox;
use crate::cws::soap::XmlLimits;
use crate::metrics::Metrics;
use crate::store::engine::Engine;
use crate::store::{GroupCommit, ProfileStore, SledStore, TerminalStore};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

pub struct App {
    /// Restart-only settings; the live token settings are `token()`.
    pub config: Settings,
    /// The config file the server was started from, for `reload`.
    config_path: OnceLock<PathBuf>,
    keys: RwLock<Arc<Keys>>,
    token: RwLock<Arc<TokenConfig>>,
    pub store: Arc<dyn TerminalStore>,
    /// Merchant and application profiles (issue 10).
    pub profiles: Arc<dyn ProfileStore>,
    /// The engine behind `store` and the sandbox (sled or PostgreSQL).
    pub engine: Engine,
    pub commit: GroupCommit,
    pub clock: Arc<dyn Clock>,
    pub xml_limits: XmlLimits,
    pub sandbox: Sandbox,
    /// Set in forward mode: transactions go upstream instead of to the sandbox.
    pub forward: Option<Forward>,
    pub metrics: Metrics,
    pub limiter: Limiter,
    /// POS pairing, when `[pairing]` is configured.
    pub pairing: Option<crate::pairing::Pairing>,
    pub connector: Arc<crate::connector::Connector>,
}

impl App {
    /// Build the state. Must run inside a tokio runtime (group commit starts a task).
    pub fn new(
        config: Config,
        keys: Keys,
        sled: SledStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<App>, String> {
        Self::with_engine(config, keys, Engine::Sled(sled), clock)
    }

    /// Build the state on any engine (`Engine::open` picks it from `[store]`).
    pub fn with_engine(
        config: Config,
        keys: Keys,
        engine: Engine,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<App>, String> {
        config.validate()?;
        let (config, token) = config.into_settings();
        let sandbox = Sandbox::new(engine.transactions()?);
        let forward = match config.processor.mode {
            ProcessorMode::Sandbox => None,
            ProcessorMode::Forward => {
                let url = config.processor.upstream_url.as_deref().ok_or(
                    "processor.mode = \"forward\" needs processor.upstream_url".to_string(),
                )?;
                Some(Forward::new(
                    url,
                    std::time::Duration::from_millis(config.processor.upstream_timeout_ms),
                    config.processor.upstream_ca_file.as_deref(),
                )?)
            }
        };
        // `store.offload = "network"`: sled's in-memory calls stay on the worker.
        crate::store::set_inline(
            config.store.offload == crate::config::StoreOffload::Network
                && matches!(engine, Engine::Sled(_)),
        );
        // The store threads of `store::offload` (`store.threads`; 0 picks by engine).
        let max = config.limits.max_blocking_threads;
        crate::store::set_max_threads(match (config.store.threads, &engine) {
            // At least two: one trip waiting on the disk never holds up every other.
            (0, Engine::Sled(_)) => std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .max(2)
                .min(max),
            (0, _) => config.store.pool_size.min(max),
            (n, _) => n,
        });
        let store: Arc<dyn TerminalStore> = engine.terminals();
        let profiles = engine.profiles()?;
        let commit = GroupCommit::start(
            store.clone(),
            std::time::Duration::from_micros(config.store.group_commit_window_us),
            std::time::Duration::from_micros(config.store.group_commit_gather_us),
        );
        let l = &config.limits;
        let xml_limits = XmlLimits {
            max_depth: l.max_xml_depth,
            max_elements: l.max_xml_elements,
            max_attributes: l.max_xml_attributes,
        };
        let limiter = Limiter::new(config.security.lockout.clone()).with_shared(engine.lockout());
        let pairing = match &config.pairing {
            Some(p) => Some(crate::pairing::Pairing::open(p, engine.pairing()?)?),
            None => None,
        };
        let metrics = Metrics::default();
        let connector = crate::connector::Connector::new(
            &config,
            engine.connector()?,
            clock.clone(),
            metrics.relay.clone(),
        )?;
        Ok(Arc::new(App {
            token: RwLock::new(Arc::new(token)),
            config,
            config_path: OnceLock::new(),
            keys: RwLock::new(Arc::new(keys)),
            store,
            profiles,
            engine,
            commit,
            clock,
            xml_limits,
            sandbox,
            forward,
            metrics,
            limiter,
            pairing,
            connector,
        }))
    }

    /// Remember the config file, so `reload` can read it again (the first call wins).
    pub fn with_config_path(self: Arc<Self>, path: PathBuf) -> Arc<Self> {
        let _ = self.config_path.set(path);
        self
    }

    /// The keys in force now.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The token settings in force now.
    pub fn token(&self) -> Arc<TokenConfig> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swap in new keys and token settings (they apply to tokens issued from now on).
    pub fn replace(&self, keys: Keys, token: TokenConfig) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(token);
    }

    /// Re-read the config file's `[token]` section and the key file. Other settings (listen
    /// addresses, limits, store) need a restart. Nothing changes if either file is bad.
    pub fn reload(&self) -> Result<(), String> {
        let path = self
            .config_path
            .get()
            .ok_or("the server was not started from a config file")?;
        let cfg = Config::load(path).map_err(|e| e.to_string())?;
        let keys = Keys::load_for(&cfg.security).map_err(|e| e.to_string())?;
        tracing::info!(
            lifetime_days = cfg.token.lifetime_days,
            refresh_age_days = cfg.token.refresh_age_days,
            signing_key = keys.signing.active().kid(),
            bdks = keys.bdks.len(),
            "reloaded keys and token settings"
        );
        self.replace(keys, cfg.token);
        Ok(())
    }
}
