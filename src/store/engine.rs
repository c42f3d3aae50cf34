//! Which engine a node stores in, chosen by `[store] backend`: the embedded sled folder, or
//! PostgreSQL shared with other nodes. Everything above hands out the two trait objects and
//! never knows which engine is behind them.

use super::postgres::{self as pg, PgStore};
use super::{SledStore, TerminalStore, TransactionStore};
use crate::config::{StoreBackend, StoreConfig};
use std::sync::Arc;

#[derive(Clone)]
pub enum Engine {
    Sled(SledStore),
    Postgres(PgStore),
}

impl Engine {
    /// Open the configured engine. PostgreSQL: start the pool, then apply pending migrations
    /// (`store.migrate`) or refuse a schema other than this binary's.
    pub fn open(cfg: &StoreConfig) -> Result<Engine, String> {
        match cfg.backend {
            StoreBackend::Sled => SledStore::open_with(&cfg.path, &cfg.sled_options())
                .map(Engine::Sled)
                .map_err(|e| format!("cannot open the store at {}: {e}", cfg.path.display())),
            StoreBackend::Postgres => {
                let settings = cfg.postgres()?;
                let at = pg::redact_url(&settings.url);
                let s = PgStore::open(&settings).map_err(|e| format!("{at}: {e}"))?;
                if cfg.migrate {
                    let (from, to) = pg::migrate(s.pool()).map_err(|e| format!("{at}: {e}"))?;
                    if from != to {
                        tracing::info!(from, to, "database schema migrated");
                    }
                } else {
                    pg::check_schema(s.pool()).map_err(|e| format!("{at}: {e}"))?;
                }
                Ok(Engine::Postgres(s))
            }
        }
    }

    pub fn terminals(&self) -> Arc<dyn TerminalStore> {
        match self {
            Engine::Sled(s) => Arc::new(s.clone()),
            Engine::Postgres(p) => Arc::new(p.clone()),
        }
    }

    pub fn transactions(&self) -> Result<Arc<dyn TransactionStore>, String> {
        match self {
            Engine::Sled(s) => Ok(Arc::new(s.transactions().map_err(|e| e.to_string())?)),
            Engine::Postgres(p) => Ok(Arc::new(p.transactions())),
        }
    }

    /// Merchant and application profiles.
    pub fn profiles(&self) -> Result<Arc<dyn super::ProfileStore>, String> {
        match self {
            Engine::Sled(s) => Ok(Arc::new(s.profiles().map_err(|e| e.to_string())?)),
            Engine::Postgres(p) => Ok(Arc::new(p.profiles())),
        }
    }

    /// POS pairing's codes, certificates and deny list.
    pub fn pairing(&self) -> Result<Arc<dyn super::pairing::PairingStore>, String> {
        match self {
            Engine::Sled(s) => Ok(Arc::new(
                super::pairing::SledPairingStore::open(s).map_err(|e| e.to_string())?,
            )),
            Engine::Postgres(p) => Ok(Arc::new(p.pairing())),
        }
    }

    /// The Cloud Connector's clients and device presence.
    pub fn connector(&self) -> Result<Arc<dyn super::connector::ConnectorStore>, String> {
        match self {
            Engine::Sled(s) => Ok(Arc::new(
                super::connector::SledConnectorStore::open(s).map_err(|e| e.to_string())?,
            )),
            Engine::Postgres(p) => Ok(Arc::new(p.connector())),
        }
    }

    /// fdatasync calls the sled engine made (metrics); PostgreSQL syncs its own WAL: 0.
    pub fn fdatasyncs(&self) -> u64 {
        match self {
            Engine::Sled(s) => s.fdatasyncs(),
            Engine::Postgres(_) => 0,
        }
    }

    /// For an operator command run beside the server: the engine, or None when it is a sled
    /// folder a running server holds (the command then goes through the admin listener).
    /// PostgreSQL is shared by every node, so it is always opened directly.
    pub fn open_local(cfg: &StoreConfig) -> Result<Option<Engine>, String> {
        match cfg.backend {
            StoreBackend::Sled => Ok(SledStore::open_now(&cfg.path, &cfg.sled_options())
                .ok()
                .map(Engine::Sled)),
            StoreBackend::Postgres => Engine::open(cfg).map(Some),
        }
    }

    /// Lockout counters shared with other nodes: PostgreSQL only (one sled process is alone).
    pub fn lockout(&self) -> Option<Arc<dyn super::lockout::LockoutStore>> {
        match self {
            Engine::Sled(_) => None,
            Engine::Postgres(p) => Some(Arc::new(p.clone())),
        }
    }

    /// Where it stores, for logs (no password).
    pub fn describe(&self, cfg: &StoreConfig) -> String {
        match self {
            Engine::Sled(_) => cfg.path.display().to_string(),
            Engine::Postgres(_) => cfg
                .postgres()
                .map(|s| pg::redact_url(&s.url))
                .unwrap_or_default(),
        }
    }
}
