//! Terminal records and their storage: the `TerminalStore` trait, its sled implementation with
//! the on-disk record layout and the `names` table it uses, and group commit so that many
//! registrations share one fsync.
//!
//! A terminal is identified by (serviceKey, DeviceSerialNumber): the physical device under a
//! service. Registering it again replaces its record, which is how the old token stops working.
//!
//! On disk a record is a tag byte (`TAG_INDEXED`) then postcard of `StoredRecord`. sled 0.34
//! costs about 100 B per entry plus twice its bytes (docs/BENCHMARKS.md), so the bytes matter:
//! serviceKey, vendorId and the BDK id, the same few strings for every terminal of a
//! deployment, are u16 indexes into the `names` tree, and the KSN device id is its scheme plus
//! 8 raw bytes. Records written before this layout are postcard `TerminalRecord`s; they still
//! decode, and their next update rewrites them.

use crate::token::TokenId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{mpsc, oneshot};

pub mod copy;
pub mod health;
pub mod postgres;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("stored record uses name index {0}, which the name table lacks")]
    UnknownName(u16),
    #[error("name table is corrupt: {0}")]
    CorruptNames(&'static str),
    #[error("storage is shutting down")]
    Closed,
    #[error("database: {0}")]
    Database(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database schema: {0}")]
    Schema(String),
    #[error("store configuration: {0}")]
    Config(String),
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

/// First byte of a record in the current layout whose three names are name-table indexes.
/// A record in the earlier layout starts with the varint length of its merchant profile id, at
/// most 64 (`register_terminal::MAX_FIELD_LEN`): that byte is 0xC2 only for a length of 194 or
/// more.
const TAG_INDEXED: u8 = 0xC2;
/// The same layout with the three names kept as strings, because one of them is too long to
/// intern or the table is full (0xC3 would need a merchant profile id of 195 bytes or more).
const TAG_INLINE: u8 = 0xC3;

/// Longer names are kept inline in each record, which bounds the name table (65,536 x 128 B)
/// even where a wildcard lets terminals choose their vendorId.
const MAX_NAME_BYTES: usize = 128;

/// A `TerminalRecord` as stored after its tag; `N` is how serviceKey, vendorId and the BDK id
/// are held: u16 indexes, or the strings. Times stay Unix milliseconds, which postcard writes as
/// zigzag varints (6 bytes until 2039).
#[derive(Serialize, Deserialize)]
struct StoredRecord<'a, N> {
    merchant_profile_id: Cow<'a, str>,
    device_serial: Cow<'a, str>,
    service_key: N,
    vendor_id: N,
    service_id: Option<Cow<'a, str>>,
    bdk_id: N,
    device_id: StoredDeviceId<'a>,
    registered_at_ms: i64,
    token_id: TokenId,
    issued_at_ms: i64,
    expires_at_ms: i64,
    refresh_due_at_ms: i64,
    refresh_flag: bool,
    pending: Option<PendingToken>,
    last_counter: u32,
    revoked: bool,
}

impl<'a, N> StoredRecord<'a, N> {
    /// `names`: serviceKey, vendorId, BDK id.
    fn new(r: &'a TerminalRecord, [service_key, vendor_id, bdk_id]: [N; 3]) -> Self {
        StoredRecord {
            merchant_profile_id: Cow::Borrowed(&r.merchant_profile_id),
            device_serial: Cow::Borrowed(&r.device_serial),
            service_key,
            vendor_id,
            service_id: r.service_id.as_deref().map(Cow::Borrowed),
            bdk_id,
            device_id: StoredDeviceId::pack(&r.device_id),
            registered_at_ms: r.registered_at_ms,
            token_id: r.token_id,
            issued_at_ms: r.issued_at_ms,
            expires_at_ms: r.expires_at_ms,
            refresh_due_at_ms: r.refresh_due_at_ms,
            refresh_flag: r.refresh_flag,
            pending: r.pending,
            last_counter: r.last_counter,
            revoked: r.revoked,
        }
    }

    /// The record, given what its names (serviceKey, vendorId, BDK id) resolve to.
    fn into_record(
        self,
        resolve: impl FnOnce([N; 3]) -> Result<[String; 3], StoreError>,
    ) -> Result<TerminalRecord, StoreError> {
        let [service_key, vendor_id, bdk_id] =
            resolve([self.service_key, self.vendor_id, self.bdk_id])?;
        Ok(TerminalRecord {
            merchant_profile_id: self.merchant_profile_id.into_owned(),
            device_serial: self.device_serial.into_owned(),
            service_key,
            vendor_id,
            service_id: self.service_id.map(Cow::into_owned),
            bdk_id,
            device_id: self.device_id.unpack(),
            registered_at_ms: self.registered_at_ms,
            token_id: self.token_id,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            refresh_due_at_ms: self.refresh_due_at_ms,
            refresh_flag: self.refresh_flag,
            pending: self.pending,
            last_counter: self.last_counter,
            revoked: self.revoked,
        })
    }
}

/// The KSN device id (`Ksn::device_id`): `T`/`A` + 16 uppercase hex digits is stored as the
/// variant (the scheme) + 8 raw bytes. Any other string is kept as text, so that every record
/// reads back exactly as it was written.
#[derive(Serialize, Deserialize)]
enum StoredDeviceId<'a> {
    Tdes([u8; 8]),
    Aes([u8; 8]),
    Text(Cow<'a, str>),
}

impl<'a> StoredDeviceId<'a> {
    fn pack(id: &'a str) -> Self {
        // Uppercase only: lowercase would read back uppercase, a different string.
        let raw = |digits: &str| {
            let mut b = [0u8; 8];
            let upper = digits
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F'));
            (upper && hex::decode_to_slice(digits, &mut b).is_ok()).then_some(b)
        };
        if let Some(b) = id.strip_prefix('T').and_then(raw) {
            StoredDeviceId::Tdes(b)
        } else if let Some(b) = id.strip_prefix('A').and_then(raw) {
            StoredDeviceId::Aes(b)
        } else {
            StoredDeviceId::Text(Cow::Borrowed(id))
        }
    }

    fn unpack(self) -> String {
        let (scheme, raw) = match self {
            StoredDeviceId::Tdes(b) => (b'T', b),
            StoredDeviceId::Aes(b) => (b'A', b),
            StoredDeviceId::Text(s) => return s.into_owned(),
        };
        let mut id = [scheme; 17];
        hex::encode_to_slice(raw, &mut id[1..]).expect("16 hex digits for 8 bytes");
        id.make_ascii_uppercase();
        String::from_utf8(id.to_vec()).expect("ASCII")
    }
}

/// Keys of the `names` tree. All three kinds are written in one transaction, so a recovered
/// database never has a name without its index or the reverse.
const NAME_PREFIX: &[u8] = b"name:"; // + the name -> u16 BE index
const INDEX_PREFIX: &[u8] = b"index:"; // + u16 BE index -> the name
const COUNT_KEY: &[u8] = b"count"; // -> u32 BE, indexes handed out so far

#[derive(Default)]
struct NameCache {
    by_name: HashMap<String, u16>,
    by_index: Vec<Option<String>>,
    /// Every u16 is taken. The table never shrinks, so new names stay inline from now on.
    full: bool,
}

impl NameCache {
    fn add(&mut self, name: String, i: u16) {
        let at = usize::from(i);
        if self.by_index.len() <= at {
            self.by_index.resize(at + 1, None);
        }
        self.by_index[at] = Some(name.clone());
        self.by_name.insert(name, i);
    }

    fn name(&self, i: u16) -> Option<&str> {
        self.by_index.get(usize::from(i))?.as_deref()
    }
}

/// The interned names: the `names` tree and its in-memory copy, loaded at open.
///
/// A name enters the cache only after a flush that follows the transaction that gave it its
/// index. Records are encoded from the cache, so any index a record holds is already on disk
/// when the record is written, whatever the order sled recovers its log in after a crash.
struct Names {
    tree: sled::Tree,
    cache: RwLock<NameCache>,
    /// One interner at a time in this process: writers that meet the same new name wait here
    /// and then find it cached, instead of each running a transaction and a flush.
    interning: Mutex<()>,
}

impl Names {
    fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree("names")?;
        let mut cache = NameCache::default();
        for kv in tree.scan_prefix(INDEX_PREFIX) {
            let (k, v) = kv?;
            let index = parse_index(&k[INDEX_PREFIX.len()..])?;
            let name = parse_name(&v)?;
            cache.add(name, index);
        }
        cache.full = parse_count(tree.get(COUNT_KEY)?.as_deref())? > u32::from(u16::MAX);
        Ok(Names {
            tree,
            cache: RwLock::new(cache),
            interning: Mutex::new(()),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, NameCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, NameCache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of `name`; with `intern`, a new name gets one first. None: it stays inline.
    fn index(&self, name: &str, intern: bool) -> Result<Option<u16>, StoreError> {
        {
            let cache = self.read();
            if let Some(&i) = cache.by_name.get(name) {
                return Ok(Some(i));
            }
            if !intern || cache.full || name.len() > MAX_NAME_BYTES {
                return Ok(None);
            }
        }
        self.intern(name)
    }

    /// Give `name` an index, durably; None if the table is full.
    fn intern(&self, name: &str) -> Result<Option<u16>, StoreError> {
        let _one = self.interning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = self.read().by_name.get(name) {
            return Ok(Some(i));
        }
        let name_key = [NAME_PREFIX, name.as_bytes()].concat();
        // sled runs transactions one at a time under a process-wide lock and retries on
        // conflict, so two stores on this database cannot hand out one index twice, nor two
        // indexes for one name; the in-process lock above does not cover other `SledStore`s.
        let index = self
            .tree
            .transaction(|tx| {
                let abort = ConflictableTransactionError::Abort;
                if let Some(v) = tx.get(&name_key)? {
                    return Ok(Some(parse_index(&v).map_err(abort)?));
                }
                let count = parse_count(tx.get(COUNT_KEY)?.as_deref()).map_err(abort)?;
                let Ok(index) = u16::try_from(count) else {
                    return Ok(None);
                };
                let ib = index.to_be_bytes();
                tx.insert(name_key.as_slice(), &ib[..])?;
                tx.insert([INDEX_PREFIX, &ib].concat(), name.as_bytes())?;
                tx.insert(COUNT_KEY, &(count + 1).to_be_bytes()[..])?;
                Ok(Some(index))
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Engine(e),
            })?;
        match index {
            Some(i) => {
                // Durable before the cache, and so any record, can use it. Once per name.
                self.tree.flush()?;
                self.write().add(name.to_owned(), i);
            }
            None => self.write().full = true,
        }
        Ok(index)
    }

    /// The names at these indexes.
    fn names<const N: usize>(&self, indexes: [u16; N]) -> Result<[String; N], StoreError> {
        {
            let cache = self.read();
            if indexes.iter().all(|&i| cache.name(i).is_some()) {
                return Ok(indexes.map(|i| cache.name(i).unwrap_or_default().to_owned()));
            }
        }
        let mut out = indexes.map(|_| String::new());
        for (o, i) in out.iter_mut().zip(indexes) {
            *o = self.name(i)?;
        }
        Ok(out)
    }

    fn name(&self, i: u16) -> Result<String, StoreError> {
        if let Some(s) = self.read().name(i) {
            return Ok(s.to_owned());
        }
        // Interned since this store opened, by another `SledStore` on the same database.
        let v = self
            .tree
            .get([INDEX_PREFIX, &i.to_be_bytes()].concat())?
            .ok_or(StoreError::UnknownName(i))?;
        let s = parse_name(&v)?;
        self.write().add(s.clone(), i);
        Ok(s)
    }
}

fn parse_index(b: &[u8]) -> Result<u16, StoreError> {
    let b: [u8; 2] = b
        .try_into()
        .map_err(|_| StoreError::CorruptNames("an index is not 2 bytes"))?;
    Ok(u16::from_be_bytes(b))
}

fn parse_name(b: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(b.to_vec()).map_err(|_| StoreError::CorruptNames("a name is not UTF-8"))
}

fn parse_count(b: Option<&[u8]>) -> Result<u32, StoreError> {
    let Some(b) = b else { return Ok(0) };
    let b: [u8; 4] = b
        .try_into()
        .map_err(|_| StoreError::CorruptNames("the count is not 4 bytes"))?;
    Ok(u32::from_be_bytes(b))
}

/// sled's page cache. 64 MiB put a 1M-terminal writer at 271-279 MiB RSS (goal 256); 32 MiB
/// gave 204 MiB with the same bytes on disk (docs/BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The sled-backed store. Terminals live in the `terminals` tree, the strings their records
/// share in the `names` tree; other modules may open trees of their own on the same database
/// through `db()`.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    terminals: sled::Tree,
    names: Arc<Names>,
}

impl SledStore {
    /// Open with the default page cache (`DEFAULT_CACHE_BYTES`).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Open with a page cache of `cache_bytes` (sled's own cache; the OS page cache is extra).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        Self::from_db(db)
    }

    pub fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let terminals = db.open_tree("terminals")?;
        let names = Arc::new(Names::open(&db)?);
        Ok(SledStore {
            db,
            terminals,
            names,
        })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The bytes this store writes for `record`, giving its names an index first if they are
    /// new. The same record always gives the same bytes once its names have an index.
    pub fn encode(&self, record: &TerminalRecord) -> Result<Vec<u8>, StoreError> {
        self.encode_with(record, true)
    }

    fn encode_with(&self, r: &TerminalRecord, intern: bool) -> Result<Vec<u8>, StoreError> {
        let index = |name: &str| self.names.index(name, intern);
        let mut out = Vec::with_capacity(96);
        let out = match (
            index(&r.service_key)?,
            index(&r.vendor_id)?,
            index(&r.bdk_id)?,
        ) {
            (Some(s), Some(v), Some(b)) => {
                out.push(TAG_INDEXED);
                postcard::to_extend(&StoredRecord::new(r, [s, v, b]), out)
            }
            _ => {
                out.push(TAG_INLINE);
                let names = [&r.service_key, &r.vendor_id, &r.bdk_id].map(|s| s.as_str());
                postcard::to_extend(&StoredRecord::new(r, names), out)
            }
        };
        Ok(out.expect("records always serialize"))
    }

    fn decode(&self, bytes: &[u8]) -> Result<TerminalRecord, StoreError> {
        match bytes.first() {
            Some(&TAG_INDEXED) => {
                let s: StoredRecord<'_, u16> = whole(&bytes[1..])?;
                s.into_record(|i| self.names.names(i))
            }
            Some(&TAG_INLINE) => {
                let s: StoredRecord<'_, Cow<'_, str>> = whole(&bytes[1..])?;
                s.into_record(|s| Ok(s.map(Cow::into_owned)))
            }
            // The earlier layout: postcard of the `TerminalRecord` itself.
            _ => Ok(postcard::from_bytes(bytes)?),
        }
    }
}

/// Postcard of exactly `bytes`: trailing bytes mean the record is not what was written.
fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    match postcard::take_from_bytes(bytes)? {
        (t, []) => Ok(t),
        _ => Err(postcard::Error::DeserializeBadEncoding.into()),
    }
}

impl TerminalStore for SledStore {
    fn get(&self, id: &TerminalId) -> Result<Option<TerminalRecord>, StoreError> {
        match self.terminals.get(id.0)? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    fn compare_and_swap(
        &self,
        id: &TerminalId,
        expected: Option<&TerminalRecord>,
        new: &TerminalRecord,
    ) -> Result<bool, StoreError> {
        let new = self.encode(new)?;
        // Names looked up, not interned: if one has no index here, these bytes will not match
        // and the check below decides.
        let old = expected.map(|r| self.encode_with(r, false)).transpose()?;
        let Err(moved) = self.terminals.compare_and_swap(id.0, old, Some(new))? else {
            return Ok(true);
        };
        // Other bytes can hold the same record: the earlier layout, or indexes this store has
        // not cached. Compare the records, then swap against the bytes actually stored.
        match (expected, moved.current) {
            (Some(expected), Some(current)) if self.decode(&current)? == *expected => Ok(self
                .terminals
                .compare_and_swap(id.0, Some(current), moved.proposed)?
                .is_ok()),
            _ => Ok(false),
        }
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
            out.push((TerminalId(id), self.decode(&v)?));
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

    /// A record with every optional field set and extreme values.
    fn full_record(serial: &str) -> TerminalRecord {
        TerminalRecord {
            merchant_profile_id: "Merchant Profile 9".into(),
            device_serial: serial.into(),
            service_key: "6B2866C8FD500002".into(),
            vendor_id: "".into(),
            service_id: Some("39C6700001".into()),
            bdk_id: "aes-prod".into(),
            device_id: "A1234567890ABCDEF".into(),
            registered_at_ms: i64::MIN,
            token_id: TokenId([0xA5; 16]),
            issued_at_ms: -1,
            expires_at_ms: i64::MAX,
            refresh_due_at_ms: 0,
            refresh_flag: true,
            pending: Some(PendingToken {
                token_id: TokenId([0x5A; 16]),
                issued_at_ms: 1_790_000_000_000,
                expires_at_ms: 1_797_776_000_000,
            }),
            last_counter: u32::MAX,
            revoked: true,
        }
    }

    /// Encode, decode, encode again: the same record and the same bytes (CAS compares bytes).
    fn round_trip(s: &SledStore, r: &TerminalRecord) -> Vec<u8> {
        let bytes = s.encode(r).unwrap();
        let back = s.decode(&bytes).unwrap();
        assert_eq!(&back, r);
        assert_eq!(s.encode(&back).unwrap(), bytes, "{r:?}");
        bytes
    }

    #[test]
    fn records_round_trip_with_every_field_set_or_unset() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let mut records = vec![record("B1"), full_record("B2")];
        // Device ids that are not `T`/`A` + 16 uppercase hex digits are kept as text.
        for device_id in [
            "TFFFF9876543210E0",
            "tFFFF9876543210E0",
            "Tffff9876543210e0",
            "TFFFF9876543210E",
            "TFFFF9876543210E00",
            "XFFFF9876543210E0",
            "T+FFF9876543210E0",
            "Té",
            "",
        ] {
            let mut r = record("B3");
            r.device_id = device_id.into();
            records.push(r);
        }
        for r in &records {
            let bytes = round_trip(&s, r);
            assert_eq!(bytes[0], TAG_INDEXED);
            let id = TerminalId::new(&r.service_key, &r.device_serial);
            let before = s.get(&id).unwrap();
            assert!(s.compare_and_swap(&id, before.as_ref(), r).unwrap());
            assert_eq!(s.get(&id).unwrap().as_ref(), Some(r));
        }
        // A name too long to intern keeps every name inline.
        let mut r = full_record("B4");
        r.vendor_id = "V".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(round_trip(&s, &r)[0], TAG_INLINE);
    }

    #[test]
    fn a_typical_record_is_76_bytes_against_124_before() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        // As RegisterTerminal writes it, with the dev config (as `snapgate-bench scale` does).
        let now = 1_790_000_000_000; // 2026-09
        let day = 86_400_000;
        let r = TerminalRecord {
            merchant_profile_id: "MP42".into(),
            device_serial: "BENCH0000042".into(),
            service_key: "6B2866C8FD500001".into(),
            vendor_id: "A96A5D589D".into(),
            service_id: None,
            bdk_id: "ansi-test-tdes".into(),
            device_id: "TFFFF9876543210E0".into(),
            registered_at_ms: now,
            token_id: TokenId([0xEE; 16]),
            issued_at_ms: now,
            expires_at_ms: now + 90 * day,
            refresh_due_at_ms: now + 30 * day,
            refresh_flag: false,
            pending: None,
            last_counter: 1,
            revoked: false,
        };
        // tag 1 + merchant 1+4 + serial 1+12 + three name indexes 1 each + no service id 1
        // + device id 1+8 + 4 times x 6 (zigzag varints of ~3.6e12 < 2^42) + token 16
        // + refresh flag, no pending, counter, revoked 1 each = 76.
        assert_eq!(round_trip(&s, &r).len(), 76);
        // The earlier layout: the names (17 + 11 + 15 B) and the device id (18 B) as strings.
        assert_eq!(postcard::to_allocvec(&r).unwrap().len(), 124);
    }

    #[test]
    fn records_in_the_earlier_layout_still_decode_and_update() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let (a, b) = (record("B1"), full_record("B2"));
        let ids = [TerminalId::new("k", "B1"), TerminalId::new("k", "B2")];
        for (id, r) in ids.iter().zip([&a, &b]) {
            let old = postcard::to_allocvec(r).unwrap();
            assert!(old[0] <= 64, "starts with the merchant profile id's length");
            s.terminals.insert(id.0, old).unwrap();
        }
        assert_eq!(s.get(&ids[0]).unwrap().as_ref(), Some(&a));
        let listed: Vec<_> = s.list(None, 10).unwrap().into_iter().map(|e| e.1).collect();
        assert!(listed.contains(&a) && listed.contains(&b));
        // A stale expectation is still refused, and the record stays as it was.
        let mut stale = b.clone();
        stale.last_counter = 7;
        assert!(!s.compare_and_swap(&ids[1], Some(&stale), &a).unwrap());
        assert_eq!(s.get(&ids[1]).unwrap().as_ref(), Some(&b));
        // An update applies (the bytes differ from what `b` encodes to now) and rewrites it.
        update(&s, &ids[1], |cur| {
            let mut r = cur.unwrap().clone();
            r.last_counter = 9;
            Ok::<_, StoreError>((Some(r), ()))
        })
        .unwrap();
        let stored = s.terminals.get(ids[1].0).unwrap().unwrap();
        assert_eq!(stored[0], TAG_INDEXED);
        assert_eq!(s.get(&ids[1]).unwrap().unwrap().last_counter, 9);
    }

    #[test]
    fn concurrent_interning_gives_one_index_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = SledStore::open(dir.path()).unwrap();
        // A second store on the same database: the in-process lock does not cover it.
        let b = SledStore::from_db(a.db().clone()).unwrap();
        let names: Vec<String> = (0..24).map(|i| format!("vendor-{i}")).collect();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = if t % 2 == 0 { a.clone() } else { b.clone() };
                let names = names.clone();
                std::thread::spawn(move || {
                    let mut got = HashMap::new();
                    for k in 0..names.len() {
                        let name = &names[(k + 3 * t) % names.len()];
                        got.insert(name.clone(), s.names.index(name, true).unwrap().unwrap());
                    }
                    got
                })
            })
            .collect();
        let maps: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(maps.iter().all(|m| *m == maps[0]));
        let mut indexes: Vec<u16> = maps[0].values().copied().collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..24).collect::<Vec<u16>>());
        let count = a.names.tree.get(COUNT_KEY).unwrap();
        assert_eq!(parse_count(count.as_deref()).unwrap(), 24);
        assert_eq!(a.names.tree.scan_prefix(NAME_PREFIX).count(), 24);
    }

    #[test]
    fn a_reopen_keeps_the_name_table() {
        let dir = tempfile::tempdir().unwrap();
        let id = TerminalId::new("k", "B2");
        let (bytes, table) = {
            let s = SledStore::open(dir.path()).unwrap();
            s.names.index("first", true).unwrap();
            assert!(s.compare_and_swap(&id, None, &full_record("B2")).unwrap());
            s.flush().unwrap();
            let table = s.names.read().by_name.clone();
            (s.terminals.get(id.0).unwrap().unwrap(), table)
        };
        assert_eq!(table.len(), 4);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.names.read().by_name, table);
        assert_eq!(s.get(&id).unwrap(), Some(full_record("B2")));
        // The same record encodes to the same bytes, so the next CAS matches them as they are.
        assert_eq!(s.encode(&full_record("B2")).unwrap(), bytes.to_vec());
        assert_eq!(s.names.index("next", true).unwrap(), Some(4));
    }

    #[test]
    fn a_full_name_table_keeps_new_names_inline() {
        let dir = tempfile::tempdir().unwrap();
        let id = TerminalId::new("k", "B1");
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.names.index("6B2866C8FD500001", true).unwrap();
            // As if 65,536 names had been interned.
            let full = (u32::from(u16::MAX) + 1).to_be_bytes();
            s.names.tree.insert(COUNT_KEY, &full[..]).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let r = record("B1");
        assert!(s.compare_and_swap(&id, None, &r).unwrap());
        assert_eq!(s.terminals.get(id.0).unwrap().unwrap()[0], TAG_INLINE);
        assert_eq!(s.names.index("ansi", true).unwrap(), None);
        let mut r2 = r.clone();
        r2.revoked = true;
        assert!(s.compare_and_swap(&id, Some(&r), &r2).unwrap());
        assert_eq!(s.get(&id).unwrap(), Some(r2));
    }

    #[test]
    fn bad_stored_bytes_are_typed_errors() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (s1, s2) = (
            SledStore::open(d1.path()).unwrap(),
            SledStore::open(d2.path()).unwrap(),
        );
        let mut bytes = s1.encode(&record("B1")).unwrap();
        // Indexes the other database never handed out.
        assert!(matches!(s2.decode(&bytes), Err(StoreError::UnknownName(0))));
        bytes.push(0);
        assert!(matches!(s1.decode(&bytes), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            s1.decode(&bytes[..20]),
            Err(StoreError::Corrupt(_))
        ));
    }

    const KILLED_CHILD_DIR: &str = "SNAPGATE_STORE_TEST_KILLED_DIR";

    /// In a child process (the same test, re-run with `KILLED_CHILD_DIR` set): intern a name on
    /// a database with no background flusher, say so, and wait to be killed. In the parent:
    /// kill the child once it has interned, reopen, and find the name.
    #[test]
    fn an_interned_name_survives_a_kill_without_a_flush() {
        use std::io::{BufRead, Write};
        const NAME: &str = "store::tests::an_interned_name_survives_a_kill_without_a_flush";
        if let Some(dir) = std::env::var_os(KILLED_CHILD_DIR) {
            // No background flusher: only interning itself can make the name durable.
            let db = sled::Config::new()
                .path(dir)
                .flush_every_ms(None)
                .open()
                .unwrap();
            let s = SledStore::from_db(db).unwrap();
            let i = s.names.index("ansi-test-tdes", true).unwrap();
            println!("interned {i:?}");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(std::time::Duration::from_secs(60));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "--nocapture", NAME])
            .env(KILLED_CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let line = out
            .lines()
            .map(Result::unwrap)
            .find(|l| l.starts_with("interned"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(line.as_deref(), Some("interned Some(0)"));
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.names.read().by_name.get("ansi-test-tdes"), Some(&0));
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
    fn update_from_a_stale_guess_rereads_and_applies_to_the_latest_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let id = TerminalId::new("k", "B1");
        let stale = record("B1");
        s.compare_and_swap(&id, None, &stale).unwrap();
        let mut moved = stale.clone();
        moved.last_counter = 7;
        assert!(s.compare_and_swap(&id, Some(&stale), &moved).unwrap());
        let seen = update_from(&s, &id, Some(stale.clone()), |cur| {
            let mut r = cur.unwrap().clone();
            let before = r.last_counter;
            r.last_counter += 1;
            Ok::<_, StoreError>((Some(r), before))
        })
        .unwrap();
        assert_eq!(seen, 7, "the second attempt saw the moved record");
        assert_eq!(s.get(&id).unwrap().unwrap().last_counter, 8);
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
