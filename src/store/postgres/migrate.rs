//! The schema: versioned migrations embedded in the binary (`sql/NNNN_*.sql`), applied in one
//! transaction under an advisory lock, recorded in `snapgate_schema`.

use super::Pool;
use crate::store::StoreError;

/// Schema migrations, in order; `snapgate_schema` records the ones applied. Never edit one
/// that has shipped: add the next.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "terminals", include_str!("sql/0001_terminals.sql")),
    (
        2,
        "sandbox transactions",
        include_str!("sql/0002_transactions.sql"),
    ),
    (3, "leases", include_str!("sql/0003_leases.sql")),
    (4, "lockout", include_str!("sql/0004_lockout.sql")),
    (
        5,
        "profiles, pairing, connector",
        include_str!("sql/0005_services.sql"),
    ),
    (
        6,
        "recent sales in terminal records",
        include_str!("sql/0006_recent_sales.sql"),
    ),
];

/// The schema version this binary writes and reads.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// An advisory lock key ("snapgate" in ASCII), held while migrating so two nodes that start
/// together apply each migration once.
const MIGRATE_LOCK: i64 = 0x736e_6170_6761_7465;

/// Apply every migration this binary has that the database lacks, in one transaction under an
/// advisory lock. Idempotent; refuses a database whose schema is newer than this binary's.
/// Returns (version before, version after).
pub fn migrate(pool: &Pool) -> Result<(i32, i32), StoreError> {
    let latest = latest_version();
    let out = pool.call(move |c, _| {
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS snapgate_schema (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        let row = tx.query_one("SELECT coalesce(max(version), 0) FROM snapgate_schema", &[])?;
        let before: i32 = row.get(0);
        if before > latest {
            return Ok(Err(before));
        }
        for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > before) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO snapgate_schema (version, name) VALUES ($1, $2)",
                &[v, name],
            )?;
        }
        tx.commit()?;
        Ok(Ok(before))
    })?;
    match out {
        Ok(before) => Ok((before, latest)),
        Err(found) => Err(StoreError::Schema(format!(
            "the database's schema is version {found}, newer than this binary's {latest}: \
             upgrade snapgate"
        ))),
    }
}

/// The schema version the database is at (0: never migrated).
pub fn schema_version(pool: &Pool) -> Result<i32, StoreError> {
    pool.call(|c, _| {
        let exists: bool = c
            .query_one("SELECT to_regclass('snapgate_schema') IS NOT NULL", &[])?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(
            c.query_one("SELECT coalesce(max(version), 0) FROM snapgate_schema", &[])?
                .get(0),
        )
    })
}

/// Refuse to serve on a schema other than this binary's.
pub fn check_schema(pool: &Pool) -> Result<(), StoreError> {
    let v = schema_version(pool)?;
    let latest = latest_version();
    match v.cmp(&latest) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::Schema(format!(
            "the database's schema is version {v}, this binary needs {latest}: \
             run `snapgate db migrate` (or set store.migrate = true)"
        ))),
        std::cmp::Ordering::Greater => Err(StoreError::Schema(format!(
            "the database's schema is version {v}, newer than this binary's {latest}: \
             upgrade snapgate"
        ))),
    }
}
