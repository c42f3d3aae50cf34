//! The Cloud Connector: a self-hosted relay between a POS and a payment device that cannot reach
//! each other on a local network. Both authenticate with OAuth2 client credentials (`oauth`) and
//! connect out over WebSockets on the main listener:
//!
//! - a device opens `/cloud-connector/v1/device-listener`, registers its terminal serial number
//!   (`tsn`), gets a connection URL with a single-use JWT (`jwt`), and connects there;
//! - a POS opens `/cloud-connector/v1/pos-listener`, claims a `tsn`, gets a session URL with a
//!   single-use JWT, and connects there;
//! - then `relay` moves opaque frames both ways, with `registry` keeping who holds what.
//!
//! Several nodes share the store (presence: which node holds each device) and the key file;
//! a claim at any node gets a session URL on the node that holds the device (docs/CONNECTOR.md).
//! Errors map to the wire in `error` only.

pub mod admin;
pub mod cli;
pub mod config;
pub mod error;
pub mod jwt;
mod listeners;
pub mod oauth;
pub mod registry;
pub mod relay;
pub mod terminal;

pub use listeners::{handles, route, valid_tsn};

use crate::app::App;
use crate::clock::Clock;
use crate::metrics::RelayMetrics;
use crate::store::connector::{
    tsn_matches, tsn_serial, ClientRecord, ConnectorStore, DeviceRecord, Scope,
};
use bytes::Bytes;
use error::{close, ConnectorError};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use jwt::{Claims, Kind};
use registry::{Bounds, Registry};
use relay::Role;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

pub use config::ConnectorConfig;

const TOKEN_PREFIX: &str = "/oauth2/v1/";
const PREFIX: &str = "/cloud-connector/v1/";
const DEVICES: &str = "devices/";
const SESSIONS: &str = "sessions/";

pub struct Connector {
    pub config: ConnectorConfig,
    pub keys: jwt::Keys,
    pub store: Arc<dyn ConnectorStore>,
    pub clock: Arc<dyn Clock>,
    pub registry: Registry,
    pub metrics: Arc<RelayMetrics>,
    pub hash_permits: Arc<Semaphore>,
    dummy: OnceLock<String>,
    pub max_body: usize,
    pub body_timeout: Duration,
    tls: bool,
    /// This node in presence records: its public URL, or "local" when it has none.
    pub node: String,
    /// Connection JWTs issued before this process started are refused: the used-jti memory
    /// below does not survive a restart.
    boot_s: i64,
    used: Mutex<UsedJtis>,
    /// Set at shutdown: connections attached from now on close with 1001 at once.
    stopping: std::sync::atomic::AtomicBool,
    /// Relay connections still running.
    live: std::sync::atomic::AtomicUsize,
    /// The presence heartbeat was started (once per Connector, by the first `server::run`).
    heartbeat: std::sync::atomic::AtomicBool,
    gone: tokio::sync::Notify,
}

#[derive(Default)]
struct UsedJtis {
    exp: HashMap<String, i64>,
    prune_at: usize,
}

impl Connector {
    pub fn new(
        cfg: &crate::config::Settings,
        store: Arc<dyn ConnectorStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<RelayMetrics>,
    ) -> Result<Arc<Connector>, String> {
        let c = &cfg.connector;
        let keys = if c.enabled {
            jwt::Keys::load_or_create(&c.secret_path(&cfg.store.path))?
        } else {
            // Never used: the routes are off. No key file is created for a disabled connector.
            jwt::Keys::from_secret(&rand::random::<[u8; 32]>())
        };
        let node = c
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| "local".into());
        if c.enabled {
            let n = store.forget_node(&node).map_err(|e| e.to_string())?;
            if n > 0 {
                tracing::info!(
                    devices = n,
                    "marked devices of this node's last run offline"
                );
            }
        }
        Ok(Arc::new(Connector {
            registry: Registry::new(
                Bounds {
                    buffer_messages: c.buffer_messages,
                    buffer_bytes: c.buffer_bytes,
                    max_sessions: c.max_sessions,
                    max_devices: c.max_devices,
                },
                metrics.clone(),
            ),
            keys,
            store,
            boot_s: clock.now().timestamp(),
            clock,
            metrics,
            hash_permits: Arc::new(Semaphore::new(c.hash_concurrency.max(1))),
            dummy: OnceLock::new(),
            max_body: cfg.limits.max_body_bytes,
            body_timeout: cfg.limits.body_timeout(),
            tls: cfg.tls.is_some(),
            node,
            used: Mutex::default(),
            stopping: Default::default(),
            live: Default::default(),
            heartbeat: Default::default(),
            gone: tokio::sync::Notify::new(),
            config: c.clone(),
        }))
    }

    /// Close every relay connection with 1001 (going away) and wait for them, at most the send
    /// timeout. The server calls this once it has stopped accepting.
    pub async fn shutdown(&self) {
        // A close order per connection (not a shared signal every relay loop would poll: that
        // was one lock shared by all connections, taken per message).
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.registry
            .close_all(close::GOING_AWAY, "server shutting down");
        let wait = async {
            loop {
                let notified = self.gone.notified();
                if self.live.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(self.config.send_timeout(), wait).await;
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// A hash of the configured cost for unknown client ids to be checked against.
    pub fn dummy_hash(&self) -> String {
        self.dummy
            .get_or_init(|| {
                oauth::hash_secret(
                    "no such client",
                    self.config.hash_memory_kib,
                    self.config.hash_iterations,
                )
                .unwrap_or_default()
            })
            .clone()
    }

    /// Mark `tsn` offline in presence (called under its slot lock, so in order).
    fn presence_offline(&self, tsn: &str) {
        // Under the slot lock: the store I/O runs off the async worker.
        crate::store::blocking(|| self.presence_offline_now(tsn))
    }

    fn presence_offline_now(&self, tsn: &str) {
        match self.store.get_device(tsn) {
            Ok(Some(mut d)) if d.node.as_deref() == Some(&self.node) => {
                d.online = false;
                d.node = None;
                d.last_seen_ms = self.now_ms();
                if let Err(e) = self.store.put_device(&d) {
                    tracing::warn!(error = %e, "could not record a device offline");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read device presence"),
        }
    }

    /// Refresh the presence of every device this node holds (connected or in its grace):
    /// `last_seen_ms` = now, so other nodes keep reading it as live. Under each slot's lock, so
    /// it is ordered with the connection's own presence writes; a record another node has taken
    /// meanwhile is left alone (`touch_device` is conditional on the record naming this node).
    /// Returns how many it refreshed.
    pub fn refresh_presence(&self) -> usize {
        let mut n = 0;
        for slot in self.registry.snapshot() {
            let s = slot.lock();
            if s.device.is_none() && s.grace.is_none() {
                continue;
            }
            match self
                .store
                .touch_device(&slot.tsn, &self.node, self.now_ms())
            {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not refresh device presence"),
            }
        }
        n
    }

    /// Start the presence heartbeat (once; later calls do nothing). It stops at shutdown or
    /// when the Connector is dropped.
    pub fn start_heartbeat(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.config.enabled || self.heartbeat.swap(true, SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = self.config.presence_refresh();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = weak.upgrade() else { return };
                if c.stopping.load(SeqCst) {
                    return;
                }
                // Store I/O (a network round trip on a shared engine): off the async workers.
                if let Err(e) = tokio::task::spawn_blocking(move || c.refresh_presence()).await {
                    tracing::error!(error = %e, "presence heartbeat panicked");
                }
            }
        });
    }

    /// Record a connection JWT's id as used; false if it was already.
    fn consume(&self, jti: &str, exp: i64) -> bool {
        let now = self.clock.now().timestamp();
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if u.exp.len() >= u.prune_at {
            u.exp.retain(|_, e| *e > now);
            u.prune_at = (u.exp.len() * 2).max(1024);
        }
        u.exp.insert(jti.to_owned(), exp).is_none()
    }

    /// Where clients reach this node: `public_url`, else ws(s)://Host.
    fn base_url<B>(&self, req: &Request<B>) -> Result<String, ConnectorError> {
        if let Some(u) = &self.config.public_url {
            return Ok(u.trim_end_matches('/').to_owned());
        }
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .ok_or_else(|| {
                ConnectorError::InvalidRequest("a valid Host header is required".into())
            })?;
        let scheme = if self.tls { "wss" } else { "ws" };
        Ok(format!("{scheme}://{host}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsns_are_serials_or_make_model_serial() {
        for ok in ["1234567", "PAX/A920/1234567", "v:1.2_3-4"] {
            assert!(valid_tsn(ok), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "a b", "a%2Fb", &"x".repeat(129)] {
            assert!(!valid_tsn(bad), "{bad}");
        }
    }
}
