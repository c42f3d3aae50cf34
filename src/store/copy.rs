//! `snapgate db copy`: move a sled folder's terminals (and sandbox transactions) into
//! PostgreSQL, for the switch from one node to several.
//!
//! The other services' records come along: merchant and application profiles, the
//! certificates issued to POS systems and the deny list, and the Cloud Connector's clients
//! (live setup codes and device presence are short-lived and are not copied).
//!
//! Safe to re-run: a row already in PostgreSQL is kept as it is (never overwritten by an
//! older copy), and the copy then checks that every source key is present in the target.

use super::postgres::{encode_terminal, migrate, PgStore};
use super::{SledStore, StoreError, TerminalStore};

/// What a copy did, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub terminals_read: u64,
    pub terminals_inserted: u64,
    pub terminals_present: u64,
    pub transactions_read: u64,
    pub transactions_inserted: u64,
    pub transactions_present: u64,
    /// Profiles, pairing certificates and deny list entries, connector clients.
    pub others_read: u64,
    pub others_inserted: u64,
}

/// A terminals row: id, record, last_counter, refresh_flag, revoked.
type TerminalRow = (Vec<u8>, Vec<u8>, i64, bool, bool);

/// Rows per PostgreSQL transaction.
const PAGE: usize = 1_000;

/// Copy everything from `from` into `to` (migrating its schema first), then verify.
pub fn copy_sled_to_postgres(from: &SledStore, to: &PgStore) -> Result<CopyReport, StoreError> {
    migrate(to.pool())?;
    let mut report = CopyReport::default();
    let mut after = None;
    loop {
        let page = from.list(after.as_ref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        report.terminals_read += page.len() as u64;
        let rows: Vec<TerminalRow> = page
            .iter()
            .map(|(id, r)| {
                (
                    id.0.to_vec(),
                    encode_terminal(r),
                    i64::from(r.last_counter),
                    r.refresh_flag,
                    r.revoked,
                )
            })
            .collect();
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.0.clone()).collect();
        let inserted = to.pool().call(move |c, _| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(
                "INSERT INTO terminals (id, rec, last_counter, refresh_flag, revoked) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )?;
            let mut n = 0;
            for (id, rec, counter, flag, revoked) in &rows {
                n += tx.execute(&st, &[id, rec, counter, flag, revoked])?;
            }
            tx.commit()?;
            Ok(n)
        })?;
        report.terminals_inserted += inserted;
        report.terminals_present += page.len() as u64 - inserted;
        verify_present(to, "terminals", ids)?;
    }
    // Sandbox transactions and their per-terminal index: the sled trees' bytes as they are
    // (the sandbox owns their format; the PostgreSQL engine stores the same bytes).
    let tree = from.db().open_tree(SANDBOX_TREE)?;
    let mut rows = Vec::with_capacity(PAGE);
    for kv in tree.iter() {
        let (k, v) = kv?;
        rows.push((k.to_vec(), v.to_vec()));
        if rows.len() == PAGE {
            copy_txns(to, std::mem::take(&mut rows), &mut report)?;
        }
    }
    if !rows.is_empty() {
        copy_txns(to, rows, &mut report)?;
    }
    let index = from.db().open_tree(SANDBOX_INDEX_TREE)?;
    let mut keys = Vec::with_capacity(PAGE);
    for kv in index.iter() {
        let (k, _) = kv?;
        if k.len() == 32 {
            keys.push((k[..16].to_vec(), k[16..].to_vec()));
        }
        if keys.len() == PAGE {
            copy_index(to, std::mem::take(&mut keys))?;
        }
    }
    if !keys.is_empty() {
        copy_index(to, keys)?;
    }
    copy_others(from, to, &mut report)?;
    Ok(report)
}

type Param = Box<dyn postgres::types::ToSql + Send + Sync>;

/// The other services' sled trees, row for row (the PostgreSQL engines keep the same record
/// bytes): tree, INSERT (keeping a row already there), and the row's parameters.
#[allow(clippy::type_complexity)]
const OTHERS: &[(&str, &str, fn(&[u8], &[u8]) -> Option<Vec<Param>>)] = &[
    (
        "merchant_profiles",
        "INSERT INTO merchant_profiles (service_key, id, rec) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        |k, v| {
            let at = k.iter().position(|b| *b == 0x1F)?;
            let sk = String::from_utf8(k[..at].to_vec()).ok()?;
            let id = String::from_utf8(k[at + 1..].to_vec()).ok()?;
            Some(vec![Box::new(sk), Box::new(id), Box::new(v.to_vec())])
        },
    ),
    (
        "application_profiles",
        "INSERT INTO application_profiles (id, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        text_key,
    ),
    (
        "pairing_certs",
        "INSERT INTO pairing_certs (pos_id, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        text_key,
    ),
    (
        "pairing_denied",
        "INSERT INTO pairing_denied (fingerprint, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        |k, v| Some(vec![Box::new(k.to_vec()), Box::new(v.to_vec())]),
    ),
    (
        "connector_clients",
        "INSERT INTO connector_clients (id, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        text_key,
    ),
];

fn text_key(k: &[u8], v: &[u8]) -> Option<Vec<Param>> {
    let k = String::from_utf8(k.to_vec()).ok()?;
    Some(vec![Box::new(k), Box::new(v.to_vec())])
}

fn copy_others(from: &SledStore, to: &PgStore, report: &mut CopyReport) -> Result<(), StoreError> {
    let mut max_app_id = 0i64;
    for (tree, sql, row) in OTHERS {
        let mut rows = Vec::new();
        for kv in from.db().open_tree(tree)?.iter() {
            let (k, v) = kv?;
            let params = row(&k, &v).ok_or_else(|| {
                StoreError::Database(format!("copy: a key in sled tree {tree} is not valid"))
            })?;
            if *tree == "application_profiles" {
                let id = std::str::from_utf8(&k).ok().and_then(|s| s.parse().ok());
                max_app_id = max_app_id.max(id.unwrap_or(0));
            }
            rows.push(params);
        }
        report.others_read += rows.len() as u64;
        let sql: &'static str = sql;
        report.others_inserted += to.pool().call(move |c, _| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(sql)?;
            let mut n = 0;
            for r in &rows {
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    r.iter().map(|b| &**b as _).collect();
                n += tx.execute(&st, &p)?;
            }
            tx.commit()?;
            Ok(n)
        })?;
    }
    // New applicationProfileIds continue past the copied ones.
    to.pool().call(move |c, _| {
        c.execute(
            "SELECT setval('application_profile_ids', \
             greatest((SELECT last_value FROM application_profile_ids), $1))",
            &[&max_app_id],
        )
        .map(|_| ())
    })
}

/// The sled trees the sandbox keeps its transactions (by id) and index (terminal id then
/// transaction id) in (`SledStore::transactions`).
const SANDBOX_TREE: &str = "transactions";
const SANDBOX_INDEX_TREE: &str = "terminal_transactions";

fn copy_txns(
    to: &PgStore,
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    report: &mut CopyReport,
) -> Result<(), StoreError> {
    let len = rows.len() as u64;
    report.transactions_read += len;
    let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.0.clone()).collect();
    let inserted = to.pool().call(move |c, _| {
        let mut tx = c.transaction()?;
        let st = tx.prepare(
            "INSERT INTO sandbox_txns (id, rec) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )?;
        let mut n = 0;
        for (id, rec) in &rows {
            n += tx.execute(&st, &[id, rec])?;
        }
        tx.commit()?;
        Ok(n)
    })?;
    report.transactions_inserted += inserted;
    report.transactions_present += len - inserted;
    verify_present(to, "sandbox_txns", ids)
}

fn copy_index(to: &PgStore, keys: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
    to.pool().call(move |c, _| {
        let mut tx = c.transaction()?;
        let st = tx.prepare(
            "INSERT INTO sandbox_index (terminal, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )?;
        for (terminal, id) in &keys {
            tx.execute(&st, &[terminal, id])?;
        }
        tx.commit()
    })
}

/// Every key in `ids` is in `table` (copied now or by an earlier run).
fn verify_present(to: &PgStore, table: &'static str, ids: Vec<Vec<u8>>) -> Result<(), StoreError> {
    let want = ids.len() as i64;
    let sql = format!("SELECT count(*) FROM {table} WHERE id = ANY($1)");
    let found: i64 = to
        .pool()
        .call(move |c, _| Ok(c.query_one(sql.as_str(), &[&ids])?.get(0)))?;
    if found == want {
        Ok(())
    } else {
        Err(StoreError::Database(format!(
            "copy check failed: {found} of {want} {table} rows present after the copy"
        )))
    }
}
