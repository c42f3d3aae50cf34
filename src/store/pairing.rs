//! Pairing state: live setup codes (by keyed hash, never the code), the certificate issued to
//! each POS, and the deny list of certificates that were replaced or revoked. The
//! `PairingStore` trait is what `pairing` uses; `SledPairingStore` keeps it in four trees of
//! the node's sled database. Every change that must happen together runs in one transaction.

use super::StoreError;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

/// A live setup code. The key it is stored under is its keyed hash (`pairing::code::hash`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The code's hash again, compared in constant time after the lookup.
    pub hash: [u8; 32],
    /// One live code per slot: the terminal (`SERVICEKEY/SERIAL`) or `operator`.
    pub slot: String,
    /// The terminal the code is bound to, named in the certificate.
    pub terminal: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// Wrong tries charged to this code so far.
    pub failures: u32,
}

/// The certificate a POS holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub pos_id: String,
    /// Hex, as `openssl x509 -serial` shows it.
    pub serial: String,
    /// SHA-256 of the certificate's DER: what the TLS verifier looks up in the deny list.
    pub fingerprint: [u8; 32],
    pub terminal: Option<String>,
    pub issued_ms: i64,
    pub not_after_ms: i64,
    /// True when the key was made by the POS (CSR), false when we generated it.
    pub from_csr: bool,
}

/// A certificate that must no longer be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    pub pos_id: String,
    pub serial: String,
    pub revoked_ms: i64,
    pub not_after_ms: i64,
    /// `repaired`, `renewed` or `revoked`.
    pub reason: String,
}

impl Denied {
    pub(crate) fn of(cert: &IssuedCert, reason: &str, now_ms: i64) -> Denied {
        Denied {
            pos_id: cert.pos_id.clone(),
            serial: cert.serial.clone(),
            revoked_ms: now_ms,
            not_after_ms: cert.not_after_ms,
            reason: reason.to_owned(),
        }
    }
}

pub trait PairingStore: Send + Sync {
    /// Store a new code for `rec.slot`, removing the slot's previous code (returned).
    fn put_code(&self, rec: &CodeRecord) -> Result<Option<CodeRecord>, StoreError>;
    /// Remove and return the code stored under `hash`: of concurrent callers exactly one gets it.
    fn take_code(&self, hash: &[u8; 32]) -> Result<Option<CodeRecord>, StoreError>;
    /// Charge one wrong try to every live code in `slot` (all slots when none). Codes that reach
    /// `max_failures`, and expired ones, are removed. Returns how many codes were removed.
    fn charge_failure(
        &self,
        slot: Option<&str>,
        max_failures: u32,
        now_ms: i64,
    ) -> Result<usize, StoreError>;
    /// Live (stored) codes, for operators: records only, never a code.
    fn codes(&self) -> Result<Vec<CodeRecord>, StoreError>;
    /// Record `cert` as `cert.pos_id`'s certificate; the one it replaces (returned) is denied
    /// with `reason`.
    fn record_issue(
        &self,
        cert: &IssuedCert,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<IssuedCert>, StoreError>;
    /// Deny `pos_id`'s certificate and forget it. Returns it, if there was one.
    fn revoke(&self, pos_id: &str, now_ms: i64) -> Result<Option<IssuedCert>, StoreError>;
    fn issued(&self, pos_id: &str) -> Result<Option<IssuedCert>, StoreError>;
    fn list_issued(&self) -> Result<Vec<IssuedCert>, StoreError>;
    fn is_denied(&self, fingerprint: &[u8; 32]) -> Result<bool, StoreError>;
    fn denied(&self) -> Result<Vec<Denied>, StoreError>;
    /// Block until every write made so far is on disk.
    fn flush(&self) -> Result<(), StoreError>;
}

#[derive(Clone)]
pub struct SledPairingStore {
    /// The node's store: its `flush` also fdatasyncs sled's log (acknowledged = durable).
    store: super::SledStore,
    /// code hash → CodeRecord
    codes: sled::Tree,
    /// slot → code hash
    slots: sled::Tree,
    /// posId → IssuedCert
    certs: sled::Tree,
    /// certificate SHA-256 → Denied
    denied: sled::Tree,
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("pairing records always serialize")
}

fn dec<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(b)?)
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Engine(e),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

impl SledPairingStore {
    pub fn open(store: &super::SledStore) -> Result<Self, StoreError> {
        let db = store.db();
        Ok(SledPairingStore {
            store: store.clone(),
            codes: db.open_tree("pairing_codes")?,
            slots: db.open_tree("pairing_slots")?,
            certs: db.open_tree("pairing_certs")?,
            denied: db.open_tree("pairing_denied")?,
        })
    }
}

impl PairingStore for SledPairingStore {
    fn put_code(&self, rec: &CodeRecord) -> Result<Option<CodeRecord>, StoreError> {
        (&self.codes, &self.slots)
            .transaction(|(codes, slots)| {
                let mut old = None;
                if let Some(h) = slots.insert(rec.slot.as_bytes(), &rec.hash[..])? {
                    if let Some(v) = codes.remove(h)? {
                        old = Some(dec::<CodeRecord>(&v).map_err(abort)?);
                    }
                }
                codes.insert(&rec.hash[..], enc(rec))?;
                Ok(old)
            })
            .map_err(tx_err)
    }

    fn take_code(&self, hash: &[u8; 32]) -> Result<Option<CodeRecord>, StoreError> {
        (&self.codes, &self.slots)
            .transaction(|(codes, slots)| {
                let Some(v) = codes.remove(&hash[..])? else {
                    return Ok(None);
                };
                let rec: CodeRecord = dec(&v).map_err(abort)?;
                if slots.get(rec.slot.as_bytes())?.as_deref() == Some(&hash[..]) {
                    slots.remove(rec.slot.as_bytes())?;
                }
                Ok(Some(rec))
            })
            .map_err(tx_err)
    }

    fn charge_failure(
        &self,
        slot: Option<&str>,
        max_failures: u32,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let hashes: Vec<sled::IVec> = match slot {
            Some(s) => self.slots.get(s.as_bytes())?.into_iter().collect(),
            None => self.codes.iter().keys().collect::<Result<_, _>>()?,
        };
        let mut removed = 0;
        for h in hashes {
            let gone = (&self.codes, &self.slots)
                .transaction(|(codes, slots)| {
                    let Some(v) = codes.get(&h)? else {
                        return Ok(false);
                    };
                    let mut rec: CodeRecord = dec(&v).map_err(abort)?;
                    rec.failures += 1;
                    if rec.failures >= max_failures || now_ms >= rec.expires_ms {
                        codes.remove(&h)?;
                        if slots.get(rec.slot.as_bytes())?.as_deref() == Some(&h[..]) {
                            slots.remove(rec.slot.as_bytes())?;
                        }
                        Ok(true)
                    } else {
                        codes.insert(&h, enc(&rec))?;
                        Ok(false)
                    }
                })
                .map_err(tx_err)?;
            removed += usize::from(gone);
        }
        Ok(removed)
    }

    fn codes(&self) -> Result<Vec<CodeRecord>, StoreError> {
        self.codes.iter().values().map(|v| dec(&v?)).collect()
    }

    fn record_issue(
        &self,
        cert: &IssuedCert,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<IssuedCert>, StoreError> {
        (&self.certs, &self.denied)
            .transaction(|(certs, denied)| {
                let old = certs.insert(cert.pos_id.as_bytes(), enc(cert))?;
                let Some(old) = old else { return Ok(None) };
                let old: IssuedCert = dec(&old).map_err(abort)?;
                denied.insert(&old.fingerprint[..], enc(&Denied::of(&old, reason, now_ms)))?;
                Ok(Some(old))
            })
            .map_err(tx_err)
    }

    fn revoke(&self, pos_id: &str, now_ms: i64) -> Result<Option<IssuedCert>, StoreError> {
        (&self.certs, &self.denied)
            .transaction(|(certs, denied)| {
                let Some(old) = certs.remove(pos_id.as_bytes())? else {
                    return Ok(None);
                };
                let old: IssuedCert = dec(&old).map_err(abort)?;
                denied.insert(
                    &old.fingerprint[..],
                    enc(&Denied::of(&old, "revoked", now_ms)),
                )?;
                Ok(Some(old))
            })
            .map_err(tx_err)
    }

    fn issued(&self, pos_id: &str) -> Result<Option<IssuedCert>, StoreError> {
        self.certs
            .get(pos_id.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    fn list_issued(&self) -> Result<Vec<IssuedCert>, StoreError> {
        self.certs.iter().values().map(|v| dec(&v?)).collect()
    }

    fn is_denied(&self, fingerprint: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.denied.contains_key(&fingerprint[..])?)
    }

    fn denied(&self) -> Result<Vec<Denied>, StoreError> {
        self.denied.iter().values().map(|v| dec(&v?)).collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        super::TerminalStore::flush(&self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SledPairingStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(&dir.path().join("db")).unwrap();
        (dir, SledPairingStore::open(&store).unwrap())
    }

    fn code(n: u8, slot: &str) -> CodeRecord {
        CodeRecord {
            hash: [n; 32],
            slot: slot.into(),
            terminal: None,
            created_ms: 0,
            expires_ms: 300_000,
            failures: 0,
        }
    }

    #[test]
    fn a_pairing_flush_fdatasyncs_the_nodes_log() {
        let dir = tempfile::tempdir().unwrap();
        let node = crate::store::SledStore::open(&dir.path().join("db")).unwrap();
        let s = SledPairingStore::open(&node).unwrap();
        let before = node.fdatasyncs();
        s.put_code(&code(1, "operator")).unwrap();
        s.flush().unwrap();
        assert!(
            node.fdatasyncs() > before,
            "a pairing write is durable once flushed"
        );
    }

    fn cert(pos: &str, n: u8) -> IssuedCert {
        IssuedCert {
            pos_id: pos.into(),
            serial: format!("{n:02x}"),
            fingerprint: [n; 32],
            terminal: None,
            issued_ms: 0,
            not_after_ms: 1,
            from_csr: false,
        }
    }

    #[test]
    fn a_new_code_for_a_slot_replaces_the_old_one() {
        let (_d, s) = store();
        assert_eq!(s.put_code(&code(1, "operator")).unwrap(), None);
        assert_eq!(s.put_code(&code(2, "t/1")).unwrap(), None);
        assert_eq!(
            s.put_code(&code(3, "operator")).unwrap(),
            Some(code(1, "operator"))
        );
        assert_eq!(s.take_code(&[1; 32]).unwrap(), None);
        assert_eq!(s.take_code(&[3; 32]).unwrap(), Some(code(3, "operator")));
        assert_eq!(s.take_code(&[3; 32]).unwrap(), None, "single use");
        assert_eq!(s.codes().unwrap(), vec![code(2, "t/1")]);
    }

    #[test]
    fn failures_kill_codes_in_scope_only() {
        let (_d, s) = store();
        s.put_code(&code(1, "a")).unwrap();
        s.put_code(&code(2, "b")).unwrap();
        for _ in 0..4 {
            assert_eq!(s.charge_failure(Some("a"), 5, 0).unwrap(), 0);
        }
        assert_eq!(s.charge_failure(Some("a"), 5, 0).unwrap(), 1);
        assert_eq!(s.take_code(&[1; 32]).unwrap(), None);
        // Unscoped: every live code is charged; an expired one goes at once.
        assert_eq!(s.charge_failure(None, 5, 300_000).unwrap(), 1);
        assert!(s.codes().unwrap().is_empty());
    }

    #[test]
    fn reissue_and_revoke_deny_the_previous_certificate() {
        let (_d, s) = store();
        assert_eq!(s.record_issue(&cert("p", 1), "repaired", 5).unwrap(), None);
        assert!(!s.is_denied(&[1; 32]).unwrap());
        assert_eq!(
            s.record_issue(&cert("p", 2), "repaired", 5).unwrap(),
            Some(cert("p", 1))
        );
        assert!(s.is_denied(&[1; 32]).unwrap());
        assert!(!s.is_denied(&[2; 32]).unwrap());
        assert_eq!(s.revoke("p", 6).unwrap(), Some(cert("p", 2)));
        assert!(s.is_denied(&[2; 32]).unwrap());
        assert_eq!(s.revoke("p", 6).unwrap(), None);
        assert!(s.list_issued().unwrap().is_empty());
        let reasons: Vec<_> = s.denied().unwrap().into_iter().map(|d| d.reason).collect();
        assert_eq!(reasons.len(), 2);
        assert!(reasons.contains(&"revoked".to_string()));
    }
}
