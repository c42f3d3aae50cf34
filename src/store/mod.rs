//! Terminal records and where they live: the record types, the `TerminalStore` trait every
//! engine implements and the compare-and-swap helpers (`update`, `update_from`) the services
//! write through; the sandbox's `TransactionStore`. Engines and parts, one file each:
//! `codec` (the pure on-disk record layout), `sled` (the sled engine and its name table),
//! `commit` (group commit: many writers, one fsync), `blocking` (store I/O off the async
//! workers).
//!
//! A terminal is identified by (serviceKey, DeviceSerialNumber): the physical device under a
//! service. Registering it again replaces its record, which is how the old token stops working.

mod blocking;
pub mod codec;
mod commit;
pub mod profiles;
mod sled;
mod sled_profiles;
#[cfg(test)]
mod tests;
mod wal;
#[cfg(test)]
mod wal_tests;

pub use self::blocking::{
    blocking, blocking_io, offload, offload_durable, set_inline, set_max_threads, Flushed,
};
pub use self::commit::GroupCommit;
pub use self::profiles::ProfileStore;
pub use self::sled::{
    SledOptions, SledStore, SledTransactions, DEFAULT_CACHE_BYTES, DEFAULT_WAL_CHECKPOINT_BYTES,
};
pub use self::sled_profiles::SledProfiles;

pub mod pairing;

pub mod connector;

use crate::token::TokenId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

pub mod copy;
pub mod engine;
pub mod health;
pub mod lockout;
pub mod postgres;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] ::sled::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("stored record uses name index {0}, which the name table lacks")]
    UnknownName(u16),
    #[error("name table is corrupt: {0}")]
    CorruptNames(&'static str),
    #[error("storage is shutting down")]
    Closed,
    #[error("stored profile is corrupt: {0}")]
    CorruptProfile(String),
    #[error("database: {0}")]
    Database(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database schema: {0}")]
    Schema(String),
    #[error("store configuration: {0}")]
    Config(String),
    #[error("write-ahead log: {0}")]
    Wal(String),
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

/// One of a terminal's latest new sandbox transactions: its idempotency key (a hash of the
/// terminal and the request's KSN, or of its TransactionDateTime and amount) and the id it was
/// stored under. A retry finds its stored answer here (docs/DECISIONS.md, "Issue 9: recent
/// sales").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentSale {
    pub key: [u8; 16],
    pub id: TxnId,
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
    /// The terminal's latest new sandbox transactions, oldest first, at most
    /// `processor.idempotency_depth`. Not in the serde layout: the codecs append it after the
    /// record (`codec::append_recent`), so records written before it read back with none.
    #[serde(skip)]
    pub recent: Vec<RecentSale>,
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
    /// Block until every write made so far to terminal records and sandbox transactions is on
    /// disk; writes elsewhere may not be. sled with its write-ahead log syncs only the log.
    fn flush_logged(&self) -> Result<(), StoreError> {
        self.flush()
    }
    /// Checkpoint the write-ahead log if it is due (`always`: in any case, at shutdown) and
    /// keep its segment filled with zeros ahead of the writes; on the flush thread after a
    /// batch is answered. Nothing to do elsewhere.
    fn checkpoint(&self, _always: bool) -> Result<(), StoreError> {
        Ok(())
    }
    /// Hold the lease `name` as `holder` for `ttl` (taking it if free or lapsed, renewing it if
    /// ours): jobs that should run on one node at a time. One process owns an embedded engine.
    fn try_lease(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// One round trip to the engine, for readiness. An embedded engine is always there.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Read-modify-write one terminal: `f` sees the current record and returns the record to write
/// (or none to leave it) and a value to hand back. Retried when another writer got there first.
pub fn update<S, T, E>(
    store: &S,
    id: &TerminalId,
    f: impl FnMut(Option<&TerminalRecord>) -> Result<(Option<TerminalRecord>, T), E>,
) -> Result<T, E>
where
    S: TerminalStore + ?Sized,
    E: From<StoreError>,
{
    let current = store.get(id)?;
    update_from(store, id, current, f)
}

/// `update` starting from a record the caller has just read, saving the first read: the
/// compare-and-swap still catches a record that has moved since.
pub fn update_from<S, T, E>(
    store: &S,
    id: &TerminalId,
    mut current: Option<TerminalRecord>,
    mut f: impl FnMut(Option<&TerminalRecord>) -> Result<(Option<TerminalRecord>, T), E>,
) -> Result<T, E>
where
    S: TerminalStore + ?Sized,
    E: From<StoreError>,
{
    loop {
        let (new, out) = f(current.as_ref())?;
        match new {
            None => return Ok(out),
            Some(new) => {
                if store.compare_and_swap(id, current.as_ref(), &new)? {
                    return Ok(out);
                }
            }
        }
        current = store.get(id)?;
    }
}

/// A sandbox transaction's id.
pub type TxnId = [u8; 16];

/// Where the sandbox processor keeps its transactions: their bytes by id, and per terminal an
/// index of the ones it may still capture. The sandbox owns the bytes' format.
pub trait TransactionStore: Send + Sync {
    fn get(&self, id: &TxnId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store a new transaction; with `index`, list it under `terminal` too.
    fn insert(
        &self,
        terminal: &TerminalId,
        id: &TxnId,
        bytes: Vec<u8>,
        index: bool,
    ) -> Result<(), StoreError>;
    /// Write `new` if `expected` is still what is stored. False if it moved.
    fn compare_and_swap(
        &self,
        id: &TxnId,
        expected: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError>;
    /// Take `id` off `terminal`'s index.
    fn unindex(&self, terminal: &TerminalId, id: &TxnId) -> Result<(), StoreError>;
    /// The ids on `terminal`'s index, in key order.
    fn indexed(&self, terminal: &TerminalId) -> Result<Vec<TxnId>, StoreError>;
    /// Atomically read `id` and write what `f` returns for it (ids and their bytes); None
    /// writes nothing. `f` may run more than once.
    #[allow(clippy::type_complexity)]
    fn transact(
        &self,
        id: &TxnId,
        f: &mut dyn FnMut(Option<&[u8]>) -> Option<Vec<(TxnId, Vec<u8>)>>,
    ) -> Result<(), StoreError>;
    /// Up to `limit` transactions with ids above `after` (None: from the first) and below
    /// `before`, in id order: the retention sweep's read.
    #[allow(clippy::type_complexity)]
    fn range(
        &self,
        after: Option<&TxnId>,
        before: &TxnId,
        limit: usize,
    ) -> Result<Vec<(TxnId, Vec<u8>)>, StoreError>;
    /// Delete a transaction (its index entry is the caller's, through `unindex`).
    fn remove(&self, id: &TxnId) -> Result<(), StoreError>;
}
