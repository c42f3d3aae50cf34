//! The sandbox's transactions in PostgreSQL (`sandbox_txns`, `sandbox_index`).

use super::{prepared, PgStore, Pool};
use crate::store::{StoreError, TerminalId, TxnId};
use std::sync::Arc;
/// The sandbox's transactions in PostgreSQL (`sandbox_txns`, `sandbox_index`), with the
/// semantics of `SledTransactions`: compare-and-swap is a conditional UPDATE, and `transact`
/// re-reads the row `FOR UPDATE` inside one database transaction and writes only if it still
/// holds the bytes `f` saw (else `f` runs again on the new bytes).
#[derive(Clone)]
pub struct PgTransactions {
    pool: Arc<Pool>,
}

impl PgStore {
    /// The sandbox's transactions, on the same pool.
    pub fn transactions(&self) -> PgTransactions {
        PgTransactions {
            pool: self.pool.clone(),
        }
    }
}

const TXN_GET: &str = "SELECT rec FROM sandbox_txns WHERE id = $1";
const TXN_INSERT: &str = "INSERT INTO sandbox_txns (id, rec) VALUES ($1, $2)";
const TXN_INDEX: &str =
    "INSERT INTO sandbox_index (terminal, id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const TXN_CAS: &str =
    "UPDATE sandbox_txns SET rec = $2, updated_at = now() WHERE id = $1 AND rec = $3";
const TXN_UNINDEX: &str = "DELETE FROM sandbox_index WHERE terminal = $1 AND id = $2";
const TXN_INDEXED: &str = "SELECT id FROM sandbox_index WHERE terminal = $1 ORDER BY id";
const TXN_LOCK: &str = "SELECT rec FROM sandbox_txns WHERE id = $1 FOR UPDATE";
const TXN_RANGE_FIRST: &str = "SELECT id, rec FROM sandbox_txns WHERE id < $1 ORDER BY id LIMIT $2";
const TXN_RANGE_AFTER: &str =
    "SELECT id, rec FROM sandbox_txns WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3";
const TXN_REMOVE: &str = "DELETE FROM sandbox_txns WHERE id = $1";
const TXN_UPSERT: &str = "INSERT INTO sandbox_txns (id, rec) VALUES ($1, $2) \
                          ON CONFLICT (id) DO UPDATE SET rec = excluded.rec, updated_at = now()";

impl crate::store::TransactionStore for PgTransactions {
    fn get(&self, id: &TxnId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = id.to_vec();
        let row = self.pool.call(move |c, s| {
            let st = prepared(c, s, TXN_GET)?;
            c.query_opt(&st, &[&key])
        })?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn insert(
        &self,
        terminal: &TerminalId,
        id: &TxnId,
        bytes: Vec<u8>,
        index: bool,
    ) -> Result<(), StoreError> {
        let (key, term) = (id.to_vec(), terminal.0.to_vec());
        self.pool.call(move |c, s| {
            let ins = prepared(c, s, TXN_INSERT)?;
            if !index {
                return c.execute(&ins, &[&key, &bytes]).map(|_| ());
            }
            let idx = prepared(c, s, TXN_INDEX)?;
            // Both rows or neither.
            let mut tx = c.transaction()?;
            tx.execute(&ins, &[&key, &bytes])?;
            tx.execute(&idx, &[&term, &key])?;
            tx.commit()
        })
    }

    fn compare_and_swap(
        &self,
        id: &TxnId,
        expected: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let (key, old) = (id.to_vec(), expected.to_vec());
        let n = self.pool.call(move |c, s| {
            let st = prepared(c, s, TXN_CAS)?;
            c.execute(&st, &[&key, &new, &old])
        })?;
        Ok(n == 1)
    }

    fn unindex(&self, terminal: &TerminalId, id: &TxnId) -> Result<(), StoreError> {
        let (key, term) = (id.to_vec(), terminal.0.to_vec());
        self.pool.call(move |c, s| {
            let st = prepared(c, s, TXN_UNINDEX)?;
            c.execute(&st, &[&term, &key]).map(|_| ())
        })
    }

    fn indexed(&self, terminal: &TerminalId) -> Result<Vec<TxnId>, StoreError> {
        let term = terminal.0.to_vec();
        let rows = self.pool.call(move |c, s| {
            let st = prepared(c, s, TXN_INDEXED)?;
            c.query(&st, &[&term])
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| TxnId::try_from(r.get::<_, &[u8]>(0)).ok())
            .collect())
    }

    fn transact(
        &self,
        id: &TxnId,
        f: &mut dyn FnMut(Option<&[u8]>) -> Option<Vec<(TxnId, Vec<u8>)>>,
    ) -> Result<(), StoreError> {
        // `f` borrows the caller's state, so it runs here, between two pool calls: read, then
        // write in one transaction only if the row still holds what `f` saw.
        let mut seen = self.get(id)?;
        loop {
            let Some(writes) = f(seen.as_deref()) else {
                return Ok(());
            };
            let key = id.to_vec();
            let expect = seen.clone();
            let writes: Vec<(Vec<u8>, Vec<u8>)> =
                writes.into_iter().map(|(k, v)| (k.to_vec(), v)).collect();
            let moved = self.pool.call(move |c, s| {
                let lock = prepared(c, s, TXN_LOCK)?;
                let upsert = prepared(c, s, TXN_UPSERT)?;
                let mut tx = c.transaction()?;
                let now: Option<Vec<u8>> = tx.query_opt(&lock, &[&key])?.map(|r| r.get(0));
                if now != expect {
                    return Ok(Some(now)); // dropped: rolled back
                }
                for (k, v) in &writes {
                    tx.execute(&upsert, &[k, v])?;
                }
                tx.commit()?;
                Ok(None)
            })?;
            match moved {
                None => return Ok(()),
                Some(now) => seen = now,
            }
        }
    }

    fn range(
        &self,
        after: Option<&TxnId>,
        before: &TxnId,
        limit: usize,
    ) -> Result<Vec<(TxnId, Vec<u8>)>, StoreError> {
        let (after, before) = (after.map(|a| a.to_vec()), before.to_vec());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.pool.call(move |c, s| match after {
            None => {
                let st = prepared(c, s, TXN_RANGE_FIRST)?;
                c.query(&st, &[&before, &limit])
            }
            Some(a) => {
                let st = prepared(c, s, TXN_RANGE_AFTER)?;
                c.query(&st, &[&a, &before, &limit])
            }
        })?;
        rows.iter()
            .map(|r| {
                let id = TxnId::try_from(r.get::<_, &[u8]>(0))
                    .map_err(|_| StoreError::Database("a transaction id is not 16 bytes".into()))?;
                Ok((id, r.get::<_, Vec<u8>>(1)))
            })
            .collect()
    }

    fn remove(&self, id: &TxnId) -> Result<(), StoreError> {
        let key = id.to_vec();
        self.pool.call(move |c, s| {
            let st = prepared(c, s, TXN_REMOVE)?;
            c.execute(&st, &[&key]).map(|_| ())
        })
    }
}
