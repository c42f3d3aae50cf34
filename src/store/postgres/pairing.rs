//! POS pairing state in PostgreSQL (`pairing_codes`, `pairing_certs`, `pairing_denied`), with
//! the sled engine's semantics: a code is taken by one `DELETE … RETURNING` (of two nodes
//! racing for it, exactly one gets it), and changes that go together run in one transaction
//! under an advisory lock on the slot or POS, so two nodes cannot interleave them. Every
//! statement commits synchronously, so `flush` has nothing left to do.

use super::{dec, enc, p, prepared, PgStore, Pool};
use crate::store::pairing::{CodeRecord, Denied, IssuedCert, PairingStore};
use crate::store::StoreError;
use postgres::Row;
use std::sync::Arc;

#[derive(Clone)]
pub struct PgPairing {
    pool: Arc<Pool>,
}

impl PgStore {
    pub fn pairing(&self) -> PgPairing {
        PgPairing {
            pool: self.pool.clone(),
        }
    }
}

/// Serialise the changes of one slot or POS across nodes for the rest of the transaction.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))";
const CODE_OF_SLOT: &str = "DELETE FROM pairing_codes WHERE slot = $1 RETURNING rec, failures";
const CODE_PUT: &str = "INSERT INTO pairing_codes (hash, slot, expires_ms, failures, rec) \
                        VALUES ($1, $2, $3, $4, $5)";
const CODE_TAKE: &str = "DELETE FROM pairing_codes WHERE hash = $1 RETURNING rec, failures";
/// One wrong try charged to the slot's code (every code with no slot): spent and expired ones
/// go, the others count it.
const CODE_DROP: &str = "DELETE FROM pairing_codes WHERE ($1::text IS NULL OR slot = $1) \
                         AND (failures + 1 >= $2 OR expires_ms <= $3)";
const CODE_CHARGE: &str =
    "UPDATE pairing_codes SET failures = failures + 1 WHERE ($1::text IS NULL OR slot = $1)";
const CODES: &str = "SELECT rec, failures FROM pairing_codes ORDER BY hash";
const CERT_GET: &str = "SELECT rec FROM pairing_certs WHERE pos_id = $1";
const CERT_PUT: &str = "INSERT INTO pairing_certs (pos_id, rec) VALUES ($1, $2) \
                        ON CONFLICT (pos_id) DO UPDATE SET rec = excluded.rec";
const CERT_DEL: &str = "DELETE FROM pairing_certs WHERE pos_id = $1 RETURNING rec";
const CERTS: &str = "SELECT rec FROM pairing_certs ORDER BY pos_id";
const DENY: &str = "INSERT INTO pairing_denied (fingerprint, rec) VALUES ($1, $2) \
                    ON CONFLICT (fingerprint) DO NOTHING";
const IS_DENIED: &str = "SELECT 1 FROM pairing_denied WHERE fingerprint = $1";
const DENIED: &str = "SELECT rec FROM pairing_denied ORDER BY fingerprint";

/// A code row: the record, with the wrong tries the row counts.
fn code(r: &Row) -> Result<CodeRecord, StoreError> {
    let mut rec: CodeRecord = dec(r.get::<_, &[u8]>(0))?;
    rec.failures = u32::try_from(r.get::<_, i32>(1)).unwrap_or(0);
    Ok(rec)
}

fn rec<T: serde::de::DeserializeOwned>(r: &Row) -> Result<T, StoreError> {
    dec(r.get::<_, &[u8]>(0))
}

fn deny_row(old: &IssuedCert, reason: &str, now_ms: i64) -> (Vec<u8>, Vec<u8>) {
    (
        old.fingerprint.to_vec(),
        enc(&Denied::of(old, reason, now_ms)),
    )
}

impl PairingStore for PgPairing {
    fn put_code(&self, rec: &CodeRecord) -> Result<Option<CodeRecord>, StoreError> {
        let lock_key = format!("pairing-slot:{}", rec.slot);
        let (hash, slot, expires) = (rec.hash.to_vec(), rec.slot.clone(), rec.expires_ms);
        let failures = i32::try_from(rec.failures).unwrap_or(i32::MAX);
        let bytes = enc(rec);
        let old = self.pool.call(move |c, s| {
            let (lock, take, put) = (
                prepared(c, s, LOCK)?,
                prepared(c, s, CODE_OF_SLOT)?,
                prepared(c, s, CODE_PUT)?,
            );
            let mut tx = c.transaction()?;
            tx.execute(&lock, &[&lock_key])?;
            let old = tx.query_opt(&take, &[&slot])?;
            tx.execute(&put, &[&hash, &slot, &expires, &failures, &bytes])?;
            tx.commit()?;
            Ok(old)
        })?;
        old.as_ref().map(code).transpose()
    }

    fn take_code(&self, hash: &[u8; 32]) -> Result<Option<CodeRecord>, StoreError> {
        let row = self.pool.query_opt(CODE_TAKE, vec![p(hash.to_vec())])?;
        row.as_ref().map(code).transpose()
    }

    fn charge_failure(
        &self,
        slot: Option<&str>,
        max_failures: u32,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let slot = slot.map(str::to_owned);
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        let removed = self.pool.call(move |c, s| {
            let (drop, charge) = (prepared(c, s, CODE_DROP)?, prepared(c, s, CODE_CHARGE)?);
            let mut tx = c.transaction()?;
            let n = tx.execute(&drop, &[&slot, &max, &now_ms])?;
            tx.execute(&charge, &[&slot])?;
            tx.commit()?;
            Ok(n)
        })?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    fn codes(&self) -> Result<Vec<CodeRecord>, StoreError> {
        self.pool.query(CODES, vec![])?.iter().map(code).collect()
    }

    fn record_issue(
        &self,
        cert: &IssuedCert,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<IssuedCert>, StoreError> {
        let lock_key = format!("pairing-pos:{}", cert.pos_id);
        let (pos, bytes, reason) = (cert.pos_id.clone(), enc(cert), reason.to_owned());
        self.pool
            .call(move |c, s| {
                let (lock, get, put, deny) = (
                    prepared(c, s, LOCK)?,
                    prepared(c, s, CERT_GET)?,
                    prepared(c, s, CERT_PUT)?,
                    prepared(c, s, DENY)?,
                );
                let mut tx = c.transaction()?;
                tx.execute(&lock, &[&lock_key])?;
                let old = tx.query_opt(&get, &[&pos])?;
                let old: Option<Result<IssuedCert, StoreError>> =
                    old.map(|r| dec(r.get::<_, &[u8]>(0)));
                if let Some(Ok(o)) = &old {
                    let (fp, rec) = deny_row(o, &reason, now_ms);
                    tx.execute(&deny, &[&fp, &rec])?;
                }
                if matches!(old, Some(Err(_))) {
                    return Ok(old); // rolled back: a corrupt row is reported, not replaced
                }
                tx.execute(&put, &[&pos, &bytes])?;
                tx.commit()?;
                Ok(old)
            })?
            .transpose()
    }

    fn revoke(&self, pos_id: &str, now_ms: i64) -> Result<Option<IssuedCert>, StoreError> {
        let lock_key = format!("pairing-pos:{pos_id}");
        let pos = pos_id.to_owned();
        self.pool
            .call(move |c, s| {
                let (lock, del, deny) = (
                    prepared(c, s, LOCK)?,
                    prepared(c, s, CERT_DEL)?,
                    prepared(c, s, DENY)?,
                );
                let mut tx = c.transaction()?;
                tx.execute(&lock, &[&lock_key])?;
                let Some(row) = tx.query_opt(&del, &[&pos])? else {
                    return Ok(None);
                };
                let old: Result<IssuedCert, StoreError> = dec(row.get::<_, &[u8]>(0));
                let Ok(o) = &old else {
                    return Ok(Some(old)); // rolled back
                };
                let (fp, rec) = deny_row(o, "revoked", now_ms);
                tx.execute(&deny, &[&fp, &rec])?;
                tx.commit()?;
                Ok(Some(old))
            })?
            .transpose()
    }

    fn issued(&self, pos_id: &str) -> Result<Option<IssuedCert>, StoreError> {
        let row = self.pool.query_opt(CERT_GET, vec![p(pos_id.to_owned())])?;
        row.as_ref().map(rec).transpose()
    }

    fn list_issued(&self) -> Result<Vec<IssuedCert>, StoreError> {
        self.pool.query(CERTS, vec![])?.iter().map(rec).collect()
    }

    fn is_denied(&self, fingerprint: &[u8; 32]) -> Result<bool, StoreError> {
        let row = self
            .pool
            .query_opt(IS_DENIED, vec![p(fingerprint.to_vec())])?;
        Ok(row.is_some())
    }

    fn denied(&self) -> Result<Vec<Denied>, StoreError> {
        self.pool.query(DENIED, vec![])?.iter().map(rec).collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(()) // every statement above committed synchronously before returning
    }
}
