//! Terminal records in PostgreSQL (`terminals`) and the sweep's lease (`snapgate_leases`).

use super::{prepared, PgStore};
use crate::store::{codec, StoreError, TerminalId, TerminalRecord, TerminalStore};
use std::time::Duration;

/// postcard of the record, then its recent sales if it has any (`codec::append_recent`): a
/// record without them keeps the bytes of schema 5, which `UPDATE`'s `rec = $6` compares.
pub(crate) fn encode(r: &TerminalRecord) -> Vec<u8> {
    let mut out = postcard::to_allocvec(r).expect("records always serialize");
    codec::append_recent(&mut out, &r.recent);
    out
}

fn decode(b: &[u8]) -> Result<TerminalRecord, StoreError> {
    let (mut r, rest): (TerminalRecord, _) = postcard::take_from_bytes(b)?;
    r.recent = codec::read_recent(rest)?;
    Ok(r)
}

const GET: &str = "SELECT rec FROM terminals WHERE id = $1";
const INSERT: &str = "INSERT INTO terminals (id, rec, last_counter, refresh_flag, revoked) \
                      VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
const UPDATE: &str = "UPDATE terminals SET rec = $2, last_counter = $3, refresh_flag = $4, \
                      revoked = $5, updated_at = now() WHERE id = $1 AND rec = $6";
const LEASE: &str = "INSERT INTO snapgate_leases (name, holder, until) \
                     VALUES ($1, $2, now() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                     WHERE snapgate_leases.until < now() OR snapgate_leases.holder = excluded.holder";
const LIST_FIRST: &str = "SELECT id, rec FROM terminals ORDER BY id LIMIT $1";
const LIST_AFTER: &str = "SELECT id, rec FROM terminals WHERE id > $1 ORDER BY id LIMIT $2";

impl TerminalStore for PgStore {
    fn get(&self, id: &TerminalId) -> Result<Option<TerminalRecord>, StoreError> {
        let key = id.0.to_vec();
        let row = self.pool.call(move |c, s| {
            let st = prepared(c, s, GET)?;
            c.query_opt(&st, &[&key])
        })?;
        match row {
            Some(r) => Ok(Some(decode(r.get::<_, &[u8]>(0))?)),
            None => Ok(None),
        }
    }

    fn compare_and_swap(
        &self,
        id: &TerminalId,
        expected: Option<&TerminalRecord>,
        new: &TerminalRecord,
    ) -> Result<bool, StoreError> {
        let key = id.0.to_vec();
        let rec = encode(new);
        let counter = i64::from(new.last_counter);
        let (flag, revoked) = (new.refresh_flag, new.revoked);
        let old = expected.map(encode);
        let n = self.pool.call(move |c, s| match old {
            None => {
                let st = prepared(c, s, INSERT)?;
                c.execute(&st, &[&key, &rec, &counter, &flag, &revoked])
            }
            Some(old) => {
                let st = prepared(c, s, UPDATE)?;
                c.execute(&st, &[&key, &rec, &counter, &flag, &revoked, &old])
            }
        })?;
        Ok(n == 1)
    }

    fn list(
        &self,
        after: Option<&TerminalId>,
        limit: usize,
    ) -> Result<Vec<(TerminalId, TerminalRecord)>, StoreError> {
        let after = after.map(|a| a.0.to_vec());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.pool.call(move |c, s| match after {
            None => {
                let st = prepared(c, s, LIST_FIRST)?;
                c.query(&st, &[&limit])
            }
            Some(a) => {
                let st = prepared(c, s, LIST_AFTER)?;
                c.query(&st, &[&a, &limit])
            }
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let k: &[u8] = r.get(0);
            let Ok(k) = <[u8; 16]>::try_from(k) else {
                continue;
            };
            out.push((TerminalId(k), decode(r.get::<_, &[u8]>(1))?));
        }
        Ok(out)
    }

    fn len(&self) -> usize {
        let n = self.pool.call(|c, _| {
            c.query_one("SELECT count(*) FROM terminals", &[])
                .map(|r| r.get::<_, i64>(0))
        });
        match n {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count terminals");
                0
            }
        }
    }

    /// Every write committed (synchronously) before it returned: nothing left to flush.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Take or renew the lease `name` for `ttl`: one conditional upsert, so of several nodes
    /// asking at once exactly one holds it until it lapses.
    fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let secs = ttl.as_secs_f64();
        let n = self.pool.call(move |c, s| {
            let st = prepared(c, s, LEASE)?;
            c.execute(&st, &[&name, &holder, &secs])
        })?;
        Ok(n == 1)
    }

    /// One round trip to the database: readiness.
    fn ping(&self) -> Result<(), StoreError> {
        self.pool.call(|c, s| {
            let st = prepared(c, s, "SELECT 1")?;
            c.query_one(&st, &[]).map(|_| ())
        })
    }
}
