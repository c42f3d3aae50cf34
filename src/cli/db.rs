//! `snapgate db`: the PostgreSQL schema (migrate, status) and the move from sled (copy).

use super::resolve_config;
use crate::store::SledStore;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DbAction {
    /// Apply the schema migrations this binary embeds (idempotent; refuses a newer schema).
    Migrate,
    /// Print the database's schema version and this binary's.
    Status,
    /// Copy a sled folder's terminals and sandbox transactions into PostgreSQL, then check
    /// that every one is there. Safe to re-run: rows already present are kept.
    Copy {
        /// The sled folder (the config's store.path when omitted).
        #[arg(long)]
        from: Option<PathBuf>,
        /// PostgreSQL URL (the config's store.url or SNAPGATE_STORE_URL when omitted).
        #[arg(long)]
        to: Option<String>,
    },
}

/// `snapgate db ...`: on the PostgreSQL database the config (or `--to`) names.
pub fn db(config: Option<PathBuf>, action: DbAction) -> Result<(), String> {
    use crate::store::postgres::{self as pg, PgStore};
    let cfg = resolve_config(config)?;
    let settings = match &action {
        DbAction::Copy { to: Some(url), .. } => cfg.store.postgres_with_url(url.clone()),
        _ => cfg.store.postgres()?,
    };
    let where_ = pg::redact_url(&settings.url);
    let store = PgStore::open(&settings).map_err(|e| e.to_string())?;
    let pool = store.pool();
    match action {
        DbAction::Migrate => {
            let (before, after) = pg::migrate(pool).map_err(|e| format!("{where_}: {e}"))?;
            if before == after {
                println!("{where_}: schema already at version {after}");
            } else {
                println!("{where_}: schema migrated from version {before} to {after}");
            }
        }
        DbAction::Status => {
            let v = pg::schema_version(pool).map_err(|e| format!("{where_}: {e}"))?;
            println!(
                "{where_}: schema version {v}; this binary's is {}",
                pg::latest_version()
            );
        }
        DbAction::Copy { from, .. } => {
            let from = from.unwrap_or(cfg.store.path.clone());
            let sled = SledStore::open(&from)
                .map_err(|e| format!("cannot open the sled store {}: {e}", from.display()))?;
            let r = crate::store::copy::copy_sled_to_postgres(&sled, &store)
                .map_err(|e| format!("{where_}: {e}"))?;
            println!(
                "copied {} -> {where_}: terminals {} read, {} inserted, {} already present; \
                 transactions {} read, {} inserted, {} already present; profiles, pairing \
                 certificates and connector clients {} read, {} inserted; all verified present",
                from.display(),
                r.terminals_read,
                r.terminals_inserted,
                r.terminals_present,
                r.transactions_read,
                r.transactions_inserted,
                r.transactions_present,
                r.others_read,
                r.others_inserted
            );
        }
    }
    store.pool().close();
    Ok(())
}
