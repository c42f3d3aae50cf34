//! Terminal records and their storage: the `TerminalStore` trait, its sled implementation, and
//! group commit so that many registrations share one fsync.
//!
//! A terminal is identified by (serviceKey, DeviceSerialNumber): the physical device under a
//! service. Registering it again replaces its record, which is how the old token stops working.

use crate::token::TokenId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("storage is shutting down")]
    Closed,
}

/// The store key of a terminal: the first 16 bytes of SHA-256(serviceKey 0x1F serial).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TerminalId(pub [u8; 16]);

impl TerminalId {
    pub fn new(service_key: &str, device_serial: &str) -> Self {
        let mut h = Sha256::new();
        h.update(service_key.as_bytes());
        h.update([0x1F]);
        h.update(device_serial.as_bytes());
        let d = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        TerminalId(id)
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(TerminalId(b))
    }
}

impl fmt::Debug for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TerminalId({})", self.to_hex())
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A renewed token that was minted but whose receipt the terminal has not yet proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingToken {
    pub token_id: TokenId,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Everything snapgate keeps about one terminal. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalRecord {
    pub merchant_profile_id: String,
    pub device_serial: String,
    pub service_key: String,
    pub vendor_id: String,
    pub service_id: Option<String>,
    pub bdk_id: String,
    /// The KSN device id (counter removed) the terminal registered with.
    pub device_id: String,
    pub registered_at_ms: i64,
    /// The token that currently authenticates the terminal.
    pub token_id: TokenId,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub refresh_due_at_ms: i64,
    /// Set once the current token is `refresh_age` old; cleared when the terminal uses a renewed one.
    pub refresh_flag: bool,
    pub pending: Option<PendingToken>,
    /// Highest KSN counter seen for `device_id`.
    pub last_counter: u32,
    /// An operator revoked the terminal: every token fails until it registers again.
    pub revoked: bool,
}

impl TerminalRecord {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("records always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Where terminal records live. Writes go through `compare_and_swap` so concurrent requests for
/// one terminal never lose each other's updates; `flush` makes everything written so far durable.
pub trait TerminalStore: Send + Sync {
    fn get(&self, id: &TerminalId) -> Result<Option<TerminalRecord>, StoreError>;
    /// Write `new` if the stored record still equals `expected` (None: absent). False if it moved.
    fn compare_and_swap(
        &self,
        id: &TerminalId,
        expected: Option<&TerminalRecord>,
        new: &TerminalRecord,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` records in key order, starting after `after`.
    fn list(
        &self,
        after: Option<&TerminalId>,
        limit: usize,
    ) -> Result<Vec<(TerminalId, TerminalRecord)>, StoreError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Block until every write made so far is on disk.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Read-modify-write one terminal: `f` sees the current record and returns the record to write
/// (or none to leave it) and a value to hand back. Retried when another writer got there first.
pub fn update<S, T, E>(
    store: &S,
    id: &TerminalId,
    mut f: impl FnMut(Option<&TerminalRecord>) -> Result<(Option<TerminalRecord>, T), E>,
) -> Result<T, E>
where
    S: TerminalStore + ?Sized,
    E: From<StoreError>,
{
    loop {
        let current = store.get(id)?;
        let (new, out) = f(current.as_ref())?;
        match new {
            None => return Ok(out),
            Some(new) => {
                if store.compare_and_swap(id, current.as_ref(), &new)? {
                    return Ok(out);
                }
            }
        }
    }
}

/// The sled-backed store. Terminals live in the `terminals` tree; other modules may open trees
/// of their own on the same database through `db()`.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    terminals: sled::Tree,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        Self::from_db(db)
    }

    pub fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let terminals = db.open_tree("terminals")?;
        Ok(SledStore { db, terminals })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl TerminalStore for SledStore {
    fn get(&self, id: &TerminalId) -> Result<Option<TerminalRecord>, StoreError> {
        match self.terminals.get(id.0)? {
            Some(v) => Ok(Some(TerminalRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn compare_and_swap(
        &self,
        id: &TerminalId,
        expected: Option<&TerminalRecord>,
        new: &TerminalRecord,
    ) -> Result<bool, StoreError> {
        let old = expected.map(TerminalRecord::encode);
        let res = self
            .terminals
            .compare_and_swap(id.0, old, Some(new.encode()))?;
        Ok(res.is_ok())
    }

    fn list(
        &self,
        after: Option<&TerminalId>,
        limit: usize,
    ) -> Result<Vec<(TerminalId, TerminalRecord)>, StoreError> {
        let iter = match after {
            Some(a) => self.terminals.range((
                std::ops::Bound::Excluded(a.0.to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.terminals.iter(),
        };
        let mut out = Vec::new();
        for kv in iter.take(limit) {
            let (k, v) = kv?;
            let mut id = [0u8; 16];
            if k.len() != 16 {
                continue;
            }
            id.copy_from_slice(&k);
            out.push((TerminalId(id), TerminalRecord::decode(&v)?));
        }
        Ok(out)
    }

    fn len(&self) -> usize {
        self.terminals.len()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

type FlushWaiter = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Group commit: callers that need durability queue here; one background task runs a single
/// `flush` for everyone queued while the previous flush ran, so the fsync rate does not cap
/// the registration rate.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<FlushWaiter>,
}

impl GroupCommit {
    /// Start the flusher on the current tokio runtime.
    pub fn start(store: Arc<dyn TerminalStore>, window: std::time::Duration) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<FlushWaiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if !window.is_zero() {
                    tokio::time::sleep(window).await;
                }
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let s = store.clone();
                let res = tokio::task::spawn_blocking(move || s.flush())
                    .await
                    .unwrap_or(Err(StoreError::Closed))
                    .map_err(Arc::new);
                for w in waiters {
                    let _ = w.send(res.clone());
                }
            }
        });
        GroupCommit { tx }
    }

    /// Wait until everything written before this call is durable.
    pub async fn durable(&self) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| Arc::new(StoreError::Closed))?;
        rx.await.unwrap_or(Err(Arc::new(StoreError::Closed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: &str) -> TerminalRecord {
        TerminalRecord {
            merchant_profile_id: "MP1".into(),
            device_serial: serial.into(),
            service_key: "6B2866C8FD500001".into(),
            vendor_id: "A96A5D589D".into(),
            service_id: None,
            bdk_id: "ansi".into(),
            device_id: "TFFFF9876543210E0".into(),
            registered_at_ms: 1,
            token_id: TokenId([1; 16]),
            issued_at_ms: 1,
            expires_at_ms: 2,
            refresh_due_at_ms: 3,
            refresh_flag: false,
            pending: None,
            last_counter: 1,
            revoked: false,
        }
    }

    #[test]
    fn records_survive_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let id = TerminalId::new("6B2866C8FD500001", "B1");
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert!(s.compare_and_swap(&id, None, &record("B1")).unwrap());
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&id).unwrap(), Some(record("B1")));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn compare_and_swap_refuses_a_stale_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let id = TerminalId::new("k", "B1");
        let a = record("B1");
        let mut b = a.clone();
        b.last_counter = 9;
        assert!(s.compare_and_swap(&id, None, &a).unwrap());
        assert!(!s.compare_and_swap(&id, None, &b).unwrap());
        assert!(s.compare_and_swap(&id, Some(&a), &b).unwrap());
        assert!(!s.compare_and_swap(&id, Some(&a), &a).unwrap());
    }

    #[test]
    fn update_retries_until_it_applies_on_the_latest_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SledStore::open(dir.path()).unwrap());
        let id = TerminalId::new("k", "B1");
        s.compare_and_swap(&id, None, &record("B1")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        update(&*s, &id, |cur| {
                            let mut r = cur.unwrap().clone();
                            r.last_counter += 1;
                            Ok::<_, StoreError>((Some(r), ()))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get(&id).unwrap().unwrap().last_counter, 1 + 8 * 50);
    }

    #[test]
    fn terminal_id_depends_on_service_key_and_serial() {
        assert_eq!(TerminalId::new("a", "b"), TerminalId::new("a", "b"));
        assert_ne!(TerminalId::new("a", "b"), TerminalId::new("a", "c"));
        assert_ne!(TerminalId::new("ab", "c"), TerminalId::new("a", "bc"));
    }

    #[tokio::test]
    async fn group_commit_answers_every_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn TerminalStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let gc = GroupCommit::start(s, std::time::Duration::ZERO);
        let waits: Vec<_> = (0..32)
            .map(|_| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.durable().await })
            })
            .collect();
        for w in waits {
            assert!(w.await.unwrap().is_ok());
        }
    }
}
