//! The sled engine: `SledStore` keeps terminal records in the `terminals` tree (bytes from
//! `codec`), the names they share in the `names` tree (`Names`, interned here and nowhere
//! else), and through `SledTransactions` the sandbox's `transactions` and
//! `terminal_transactions` trees, all in one database.

use super::codec;
use super::wal::{Ops, Tree, Wal};
use super::{StoreError, TerminalId, TerminalRecord, TerminalStore, TransactionStore, TxnId};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Longer names are kept inline in each record, which bounds the name table (65,536 x 128 B)
/// even where a wildcard lets terminals choose their vendorId.
pub(super) const MAX_NAME_BYTES: usize = 128;

/// Keys of the `names` tree. All three kinds are written in one transaction, so a recovered
/// database never has a name without its index or the reverse.
pub(super) const NAME_PREFIX: &[u8] = b"name:"; // + the name -> u16 BE index
const INDEX_PREFIX: &[u8] = b"index:"; // + u16 BE index -> the name
pub(super) const COUNT_KEY: &[u8] = b"count"; // -> u32 BE, indexes handed out so far

#[derive(Default)]
pub(super) struct NameCache {
    pub(super) by_name: HashMap<String, u16>,
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
pub(super) struct Names {
    pub(super) tree: sled::Tree,
    cache: RwLock<NameCache>,
    /// One interner at a time in this process: writers that meet the same new name wait here
    /// and then find it cached, instead of each running a transaction and a flush.
    interning: Mutex<()>,
    /// The store's fdatasync, so a name is on the platter, not just written, before use.
    sync: std::sync::OnceLock<Arc<DataSync>>,
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
            sync: std::sync::OnceLock::new(),
        })
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, NameCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, NameCache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of `name`; with `intern`, a new name gets one first. None: it stays inline.
    pub(super) fn index(&self, name: &str, intern: bool) -> Result<Option<u16>, StoreError> {
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
                // Durable before the cache, and so any record, can use it. Once per name; an
                // fsync, so off the async worker whatever `store.offload` says.
                super::blocking_io(|| -> Result<(), StoreError> {
                    self.tree.flush()?;
                    if let Some(s) = self.sync.get() {
                        s.sync()?;
                    }
                    Ok(())
                })?;
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

pub(super) fn parse_count(b: Option<&[u8]>) -> Result<u32, StoreError> {
    let Some(b) = b else { return Ok(0) };
    let b: [u8; 4] = b
        .try_into()
        .map_err(|_| StoreError::CorruptNames("the count is not 4 bytes"))?;
    Ok(u32::from_be_bytes(b))
}

/// sled's page cache. 64 MiB put a 1M-terminal writer at 271-279 MiB RSS (goal 256); 32 MiB
/// gave 204 MiB with the same bytes on disk (docs/BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The write-ahead log starts a new segment (and sled is flushed) once its segment holds this
/// much: at ~15,000 sales a second (~6 MB/s of log) about every 11 s, and at most this much
/// to replay at open.
pub const DEFAULT_WAL_CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// The write-ahead log's folder inside sled's.
const WAL_DIR: &str = "wal";

/// How to open a sled store (`[store]`: `cache_mb`, `wal`, `wal_checkpoint_mb`).
#[derive(Clone, Copy, Debug)]
pub struct SledOptions {
    pub cache_bytes: u64,
    /// Log the hot trees' writes (`wal.rs`) and checkpoint at this size; None: no log, every
    /// durable flush is sled's flush then fdatasync. A log left by an earlier process is
    /// replayed at open either way.
    pub wal_checkpoint_bytes: Option<u64>,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            wal_checkpoint_bytes: Some(DEFAULT_WAL_CHECKPOINT_BYTES),
        }
    }
}

/// The sled-backed store. Terminals live in the `terminals` tree, the strings their records
/// share in the `names` tree; other modules may open trees of their own on the same database
/// through `db()`.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    pub(super) terminals: sled::Tree,
    pub(super) names: Arc<Names>,
    /// The files sled's flush leaves in the page cache, synced after it. None for a `from_db`
    /// store, whose folder we do not know: its flush is sled's alone.
    sync: Option<Arc<DataSync>>,
    /// The hot trees' write-ahead log (`SledOptions::wal_checkpoint_bytes`).
    wal: Option<Arc<Wal>>,
}

/// What sled 0.34's `flush` does not make durable, and the handles to make it so.
///
/// sled keeps its whole log (every segment) in one file, `<path>/db`, and writes it with
/// `pwrite` then `sync_file_range` (`pagecache/iobuf.rs`), which neither flushes the device's
/// write cache nor the file's size; only the background flusher every `flush_every_ms` calls
/// `sync_all`. Values too large for a segment (over segment_size / 16, 32 KiB by default) go to
/// `<path>/blobs/<lsn>`, written once and never synced (`pagecache/blob_io.rs`). `conf` and the
/// `snap.*` snapshots are synced by sled itself.
struct DataSync {
    data: File,
    blobs: PathBuf,
    /// Blob files already synced (sled never rewrites one; it only deletes them).
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
    fdatasyncs: AtomicU64,
}

impl DataSync {
    fn open(path: &Path) -> Result<Self, StoreError> {
        // Read-only is enough for fdatasync on Linux, and cannot touch sled's lock.
        let data = File::open(path.join("db")).map_err(sled::Error::Io)?;
        let s = DataSync {
            data,
            blobs: path.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
            fdatasyncs: AtomicU64::new(0),
        };
        // The folder's entries for `db`, `conf` and `blobs`, once: a new database survives a
        // power cut only if its directory entries do.
        sync_dir(path)?;
        s.sync()?;
        Ok(s)
    }

    /// After sled's flush: new blobs (and their directory), then the log file.
    fn sync(&self) -> Result<(), StoreError> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        let mut new_blob = false;
        for e in std::fs::read_dir(&self.blobs).map_err(sled::Error::Io)? {
            let e = e.map_err(sled::Error::Io)?;
            let name = e.file_name();
            if !synced.contains(&name) {
                // Gone since the listing: sled collected it, nothing to keep.
                if let Ok(f) = File::open(e.path()) {
                    f.sync_data().map_err(sled::Error::Io)?;
                }
                new_blob = true;
            }
            seen.insert(name);
        }
        if new_blob {
            sync_dir(&self.blobs)?;
        }
        *synced = seen;
        drop(synced);
        self.data.sync_data().map_err(sled::Error::Io)?;
        self.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Engine(sled::Error::Io(e)))
}

/// How long `open` waits for a lock this process may just have released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl SledStore {
    /// Open with the default page cache (`DEFAULT_CACHE_BYTES`).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Open with a page cache of `cache_bytes` (sled's own cache; the OS page cache is extra).
    ///
    /// A folder this process let go of a moment ago may still be locked: sled's threads release
    /// the lock once they notice the drop (`snapgate serve` writing the dev setup, then opening
    /// it). So a held lock is retried for up to `LOCK_WAIT`; another process holding it is
    /// reported after that.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let opts = SledOptions {
            cache_bytes,
            ..SledOptions::default()
        };
        Self::open_with(path, &opts)
    }

    /// `open_with_cache`, with every option.
    pub fn open_with(path: &Path, opts: &SledOptions) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match Self::open_now(path, opts) {
                Err(StoreError::Engine(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// Open without waiting for a held lock: an operator command that goes through the admin
    /// listener when the server holds the folder should not wait to find that out.
    pub fn open_now(path: &Path, opts: &SledOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_bytes)
            .open()?;
        let mut s = Self::from_db(db)?;
        let sync = Arc::new(DataSync::open(path)?);
        let _ = s.names.sync.set(sync.clone());
        s.sync = Some(sync);
        let t = s.transactions()?;
        let apply = |tree: Tree, k: &[u8], v: Option<&[u8]>| -> Result<(), StoreError> {
            let tree = match tree {
                Tree::Terminals => &s.terminals,
                Tree::Transactions => &t.txns,
                Tree::TerminalTransactions => &t.by_terminal,
            };
            match v {
                Some(v) => tree.insert(k, v)?,
                None => tree.remove(k)?,
            };
            Ok(())
        };
        let dir = path.join(WAL_DIR);
        let (db, data) = (s.db.clone(), s.sync.clone());
        let settle = Box::new(move || settle(&db, data.as_deref()));
        let wal = match opts.wal_checkpoint_bytes {
            Some(bytes) => Some(Wal::open(&dir, bytes, apply, settle)?),
            // Off now, but what an earlier process logged is still replayed.
            None if dir.exists() => {
                Wal::replay(&dir, apply, &settle)?;
                None
            }
            None => None,
        };
        s.wal = wal.map(Arc::new);
        Ok(s)
    }

    fn settle(&self) -> Result<(), StoreError> {
        settle(&self.db, self.sync.as_deref())
    }

    /// Run `f`'s writes to the hot trees under the write-ahead log (see `wal.rs`), if any.
    fn logged<R>(
        &self,
        f: impl FnOnce(&mut Ops<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        logged(&self.wal, f)
    }

    /// Write-ahead log checkpoints since the open.
    pub fn wal_checkpoints(&self) -> u64 {
        self.wal.as_ref().map_or(0, |w| w.checkpoints())
    }

    /// A store on a database opened elsewhere. Its `flush` is sled's only (no fdatasync):
    /// for tests and the scale experiments, not for the server.
    pub fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let terminals = db.open_tree("terminals")?;
        let names = Arc::new(Names::open(&db)?);
        Ok(SledStore {
            db,
            terminals,
            names,
            sync: None,
            wal: None,
        })
    }

    /// How many times this store has called fdatasync on sled's log file or on its own
    /// write-ahead log since the open.
    pub fn fdatasyncs(&self) -> u64 {
        let sled = self
            .sync
            .as_ref()
            .map_or(0, |s| s.fdatasyncs.load(Ordering::Relaxed));
        sled + self.wal.as_ref().map_or(0, |w| w.fdatasyncs())
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
        let indexes = match (
            index(&r.service_key)?,
            index(&r.vendor_id)?,
            index(&r.bdk_id)?,
        ) {
            (Some(s), Some(v), Some(b)) => Some([s, v, b]),
            _ => None,
        };
        Ok(codec::encode(r, indexes))
    }

    pub(super) fn decode(&self, bytes: &[u8]) -> Result<TerminalRecord, StoreError> {
        codec::decode(bytes, |i| self.names.names(i))
    }

    /// Merchant and application profiles, in this database.
    pub fn profiles(&self) -> Result<super::SledProfiles, StoreError> {
        super::SledProfiles::open(self)
    }

    /// The sandbox's transactions, in this database.
    pub fn transactions(&self) -> Result<SledTransactions, StoreError> {
        Ok(SledTransactions {
            txns: self.db.open_tree("transactions")?,
            by_terminal: self.db.open_tree("terminal_transactions")?,
            wal: self.wal.clone(),
        })
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
        // Encoded before the log's lock: a new name's interning waits for a flush.
        let new = sled::IVec::from(self.encode(new)?);
        // Names looked up, not interned: if one has no index here, these bytes will not match
        // and the check below decides.
        let old = expected.map(|r| self.encode_with(r, false)).transpose()?;
        self.logged(|ops| {
            let Err(moved) = self
                .terminals
                .compare_and_swap(id.0, old, Some(new.clone()))?
            else {
                ops.put(Tree::Terminals, &id.0, &new);
                return Ok(true);
            };
            // Other bytes can hold the same record: the earlier layout, or indexes this store
            // has not cached. Compare the records, then swap against the bytes actually stored.
            match (expected, moved.current) {
                (Some(expected), Some(current)) if self.decode(&current)? == *expected => {
                    let swapped = self
                        .terminals
                        .compare_and_swap(id.0, Some(current), Some(new.clone()))?
                        .is_ok();
                    if swapped {
                        ops.put(Tree::Terminals, &id.0, &new);
                    }
                    Ok(swapped)
                }
                _ => Ok(false),
            }
        })
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

    /// The write-ahead log's buffer written and fdatasynced, then sled's flush, which writes
    /// its log and waits for the writes, and fdatasync, which makes them durable against power
    /// loss (see `DataSync`). One call serves every write before it, to any tree. The log goes
    /// first so that it is never older than sled's durable state for a write acknowledged
    /// here: a replay would otherwise put back an older logged value.
    fn flush(&self) -> Result<(), StoreError> {
        if let Some(w) = &self.wal {
            w.sync()?;
        }
        self.settle()
    }

    /// With the write-ahead log: its buffer written and fdatasynced only (`wal.rs`).
    fn flush_logged(&self) -> Result<(), StoreError> {
        match &self.wal {
            Some(w) => w.sync(),
            None => self.flush(),
        }
    }

    fn checkpoint(&self, always: bool) -> Result<(), StoreError> {
        let Some(w) = &self.wal else { return Ok(()) };
        if always || w.checkpoint_due() {
            w.checkpoint()?;
        }
        w.prepare()
    }
}

/// sled's flush, then fdatasync: everything applied to sled so far is durable.
fn settle(db: &sled::Db, data: Option<&DataSync>) -> Result<(), StoreError> {
    db.flush()?;
    if let Some(s) = data {
        s.sync()?;
    }
    Ok(())
}

fn logged<R>(
    wal: &Option<Arc<Wal>>,
    f: impl FnOnce(&mut Ops<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    match wal {
        Some(w) => w.write(f),
        None => f(&mut Ops::none()),
    }
}

/// The sandbox's trees: `transactions` (id -> bytes) and `terminal_transactions` (terminal id
/// then transaction id -> nothing), from `SledStore::transactions`.
#[derive(Clone)]
pub struct SledTransactions {
    txns: sled::Tree,
    by_terminal: sled::Tree,
    wal: Option<Arc<Wal>>,
}

/// The per-terminal index key: terminal id then transaction id.
fn index_key(terminal: &TerminalId, id: &TxnId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&terminal.0);
    k[16..].copy_from_slice(id);
    k
}

impl TransactionStore for SledTransactions {
    fn get(&self, id: &TxnId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.txns.get(id)?.map(|v| v.to_vec()))
    }

    fn insert(
        &self,
        terminal: &TerminalId,
        id: &TxnId,
        bytes: Vec<u8>,
        index: bool,
    ) -> Result<(), StoreError> {
        let bytes = sled::IVec::from(bytes);
        logged(&self.wal, |ops| {
            self.txns.insert(id, bytes.clone())?;
            ops.put(Tree::Transactions, id, &bytes);
            if index {
                let k = index_key(terminal, id);
                self.by_terminal.insert(k, &[])?;
                ops.put(Tree::TerminalTransactions, &k, &[]);
            }
            Ok(())
        })
    }

    fn compare_and_swap(
        &self,
        id: &TxnId,
        expected: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let new = sled::IVec::from(new);
        logged(&self.wal, |ops| {
            let swapped = self
                .txns
                .compare_and_swap(id, Some(expected), Some(new.clone()))?
                .is_ok();
            if swapped {
                ops.put(Tree::Transactions, id, &new);
            }
            Ok(swapped)
        })
    }

    fn unindex(&self, terminal: &TerminalId, id: &TxnId) -> Result<(), StoreError> {
        let k = index_key(terminal, id);
        logged(&self.wal, |ops| {
            self.by_terminal.remove(k)?;
            ops.del(Tree::TerminalTransactions, &k);
            Ok(())
        })
    }

    fn indexed(&self, terminal: &TerminalId) -> Result<Vec<TxnId>, StoreError> {
        let mut out = Vec::new();
        for kv in self.by_terminal.scan_prefix(terminal.0) {
            let (k, _) = kv?;
            if let Ok(id) = TxnId::try_from(&k[16..]) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn transact(
        &self,
        id: &TxnId,
        f: &mut dyn FnMut(Option<&[u8]>) -> Option<Vec<(TxnId, Vec<u8>)>>,
    ) -> Result<(), StoreError> {
        // sled wants an `Fn`: the caller's `FnMut` runs once per attempt, never concurrently.
        let f = std::cell::RefCell::new(f);
        // The writes of the attempt that committed, for the log.
        let wrote = std::cell::RefCell::new(Vec::new());
        logged(&self.wal, |ops| {
            let res = self.txns.transaction(|tx| {
                let cur = tx.get(id)?;
                let Some(writes) = (f.borrow_mut())(cur.as_deref()) else {
                    return Err(ConflictableTransactionError::Abort(()));
                };
                let mut wrote = wrote.borrow_mut();
                wrote.clear();
                for (k, v) in writes {
                    let v = sled::IVec::from(v);
                    tx.insert(&k[..], v.clone())?;
                    wrote.push((k, v));
                }
                Ok(())
            });
            match res {
                Ok(()) => {
                    for (k, v) in wrote.borrow().iter() {
                        ops.put(Tree::Transactions, k, v);
                    }
                    Ok(())
                }
                Err(TransactionError::Abort(())) => Ok(()),
                Err(TransactionError::Storage(e)) => Err(e.into()),
            }
        })
    }

    fn range(
        &self,
        after: Option<&TxnId>,
        before: &TxnId,
        limit: usize,
    ) -> Result<Vec<(TxnId, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let lo = after.map_or(Bound::Unbounded, |a| Bound::Excluded(*a));
        let mut out = Vec::new();
        for kv in self.txns.range((lo, Bound::Excluded(*before))).take(limit) {
            let (k, v) = kv?;
            if let Ok(id) = TxnId::try_from(&k[..]) {
                out.push((id, v.to_vec()));
            }
        }
        Ok(out)
    }

    fn remove(&self, id: &TxnId) -> Result<(), StoreError> {
        logged(&self.wal, |ops| {
            self.txns.remove(id)?;
            ops.del(Tree::Transactions, id);
            Ok(())
        })
    }
}
