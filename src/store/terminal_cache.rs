//! The sled engine's copy of recently used terminal records' bytes (`store.terminal_cache`),
//! so a sale's authentication and settle read their terminal from memory instead of walking
//! sled's tree.
//!
//! Bytes, not decoded records: one allocation per entry, usually the very buffer sled stores.
//! Decoded records (seven strings each) measured ~9.5 KiB of RSS per entry in the server: the
//! long-lived strings pinned allocator pages of threads that had since exited.
//!
//! Coherence: every write of the `terminals` tree in the process goes through `SledStore`,
//! which holds the record's shard lock across sled's write and the cache update; a miss holds
//! it across sled's read and the fill. So an entry is always exactly what sled holds, and a
//! reader can never put back a value a writer has just replaced. sled locks its folder to one
//! process, and a second store on the same database (`SledStore::from_db`, tests and tools
//! only) has no cache.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Default `store.terminal_cache`: entries kept. A record's bytes and their slot are ~0.2 KiB,
/// so ~13 MiB at most; a million-terminal node keeps its busiest 65,536 in memory.
pub const DEFAULT_TERMINAL_CACHE_ENTRIES: usize = 65_536;

/// Shards: the store threads rarely meet on one lock.
const SHARDS: usize = 64;

/// A cached record: exactly the bytes sled holds for the key.
pub(super) type Entry = sled::IVec;

pub(super) struct Shard {
    map: HashMap<[u8; 16], Entry>,
    /// Keys in the order they were filled; the oldest goes first when the shard is full.
    /// May hold keys already dropped (`forget`): they are skipped when popped.
    order: VecDeque<[u8; 16]>,
    cap: usize,
}

impl Shard {
    pub fn get(&self, key: &[u8; 16]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Set what sled now holds for `key`.
    pub fn put(&mut self, key: [u8; 16], entry: Entry) {
        if self.cap == 0 {
            return;
        }
        if self.map.insert(key, entry).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        // Keys dropped by `forget` linger in `order`: rebuild it before it doubles.
        if self.order.len() > 2 * self.cap {
            let live: std::collections::HashSet<_> = self.map.keys().copied().collect();
            self.order.retain(|k| live.contains(k));
        }
    }

    /// Drop `key`: sled's value is no longer known here.
    pub fn forget(&mut self, key: &[u8; 16]) {
        self.map.remove(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

pub(super) struct TerminalCache {
    shards: Box<[Mutex<Shard>]>,
}

impl TerminalCache {
    /// Room for about `entries` records (0: nothing is kept, every call goes to sled).
    pub fn new(entries: usize) -> Self {
        let cap = entries.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    order: VecDeque::new(),
                    cap,
                })
            })
            .collect();
        TerminalCache { shards }
    }

    /// The shard that owns `key`, locked. Held across sled's read or write of the key.
    pub fn lock(&self, key: &[u8; 16]) -> MutexGuard<'_, Shard> {
        // Terminal ids are already hashes (SHA-256 of service key and serial).
        let i = usize::from(key[0]) % SHARDS;
        let m = &self.shards[i];
        m.lock().unwrap_or_else(|p| {
            // A panic mid-update may have left an entry sled no longer holds: start empty.
            let mut shard = p.into_inner();
            shard.map.clear();
            shard.order.clear();
            m.clear_poison();
            shard
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}
