//! A bounded cache of TDES IPEKs per device, owned by the BDK they derive from (`CachedBdk`),
//! so a sale skips the IPEK's two TDES encryptions and the BDK's key schedules (issue 9 item
//! 5). Keyed by the initial KSN (the KSN's first 8 bytes, counter bits masked); sharded so the
//! store threads do not contend; first in, first out within a shard once it is full. IPEKs live
//! only in a per-shard slab that never reallocates, overwritten in place on eviction and
//! zeroized on drop. Nothing here prints them. AES BDKs are never cached.

use super::{derive_working_key, tdes, Bdk, DukptError, KeyUsage, Ksn, WorkingKey};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

/// `security.ipek_cache_entries`' default: devices per TDES BDK whose IPEK is kept (~1.5 MiB of
/// slab per BDK when full).
pub const DEFAULT_IPEK_CACHE_ENTRIES: usize = 65_536;

/// The largest `security.ipek_cache_entries` (~100 MiB per TDES BDK when full).
pub const MAX_IPEK_CACHE_ENTRIES: usize = 1 << 22;

/// At most this many shards: with two store threads, 64 makes a shared lock rare.
const MAX_SHARDS: usize = 64;

/// The initial KSN of a TDES KSN: its first 8 bytes with the counter's top bits masked (the
/// same masking `tdes::ipek` applies), so every counter of a device maps to one entry.
fn initial_ksn(ksn: &[u8; 10]) -> [u8; 8] {
    let mut iksn = [0u8; 8];
    iksn.copy_from_slice(&ksn[..8]);
    iksn[7] &= 0xE0;
    iksn
}

struct Slot {
    iksn: [u8; 8],
    ipek: Zeroizing<[u8; 16]>,
}

struct Shard {
    /// Initial KSN -> its slot. Holds no key material, so its own reallocations leak nothing.
    index: HashMap<[u8; 8], usize>,
    /// Reserved at `cap` up front and never grown past it, so the IPEKs are never moved (a
    /// reallocation would leave copies in freed memory). Untouched capacity costs no RAM.
    slots: Vec<Slot>,
    cap: usize,
    /// The slot to overwrite next once full: the oldest insertion.
    next: usize,
}

impl Shard {
    fn get(&self, iksn: &[u8; 8]) -> Option<Zeroizing<[u8; 16]>> {
        self.index
            .get(iksn)
            .map(|&i| Zeroizing::new(*self.slots[i].ipek))
    }

    fn insert(&mut self, iksn: [u8; 8], ipek: &[u8; 16]) {
        if self.index.contains_key(&iksn) {
            // Another thread derived it meanwhile: the same bytes.
            return;
        }
        if self.slots.len() < self.cap {
            self.index.insert(iksn, self.slots.len());
            self.slots.push(Slot {
                iksn,
                ipek: Zeroizing::new(*ipek),
            });
            return;
        }
        let i = self.next;
        let slot = &mut self.slots[i];
        self.index.remove(&slot.iksn);
        // Overwrites the evicted IPEK in place.
        *slot.ipek = *ipek;
        slot.iksn = iksn;
        self.index.insert(iksn, i);
        self.next = (i + 1) % self.cap;
    }
}

/// Bounded, sharded map from initial KSN to IPEK. Holds IPEKs of one BDK only: it is private
/// to the `CachedBdk` that owns that BDK.
pub(crate) struct IpekCache {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard; seeded per process, so a client cannot aim its KSNs at one shard.
    hasher: RandomState,
    capacity: usize,
}

impl IpekCache {
    /// A cache of at most `entries` IPEKs (at least 1), in `min(entries, 64)` shards.
    pub(crate) fn new(entries: usize) -> IpekCache {
        IpekCache::with_shards(entries, entries.clamp(1, MAX_SHARDS))
    }

    /// `entries` spread over `shards` shards (the first `entries % shards` get one more).
    pub(crate) fn with_shards(entries: usize, shards: usize) -> IpekCache {
        let entries = entries.max(1);
        let shards = shards.clamp(1, entries);
        let shards = (0..shards)
            .map(|i| {
                let cap = entries / shards + usize::from(i < entries % shards);
                Mutex::new(Shard {
                    index: HashMap::new(),
                    slots: Vec::with_capacity(cap),
                    cap,
                    next: 0,
                })
            })
            .collect();
        IpekCache {
            shards,
            hasher: RandomState::new(),
            capacity: entries,
        }
    }

    fn shard(&self, iksn: &[u8; 8]) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(iksn) % self.shards.len() as u64;
        // A panic under the lock can only be an allocation failure: the shard stays consistent.
        self.shards[i as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The IPEK of `ksn`'s device: cached, or `derive`d (outside the lock) and kept.
    pub(crate) fn get_or_derive(
        &self,
        ksn: &[u8; 10],
        derive: impl FnOnce() -> Zeroizing<[u8; 16]>,
    ) -> Zeroizing<[u8; 16]> {
        let iksn = initial_ksn(ksn);
        if let Some(ipek) = self.shard(&iksn).get(&iksn) {
            return ipek;
        }
        let ipek = derive();
        self.shard(&iksn).insert(iksn, &ipek);
        ipek
    }

    /// Most IPEKs kept.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// IPEKs kept now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).index.len())
            .sum()
    }

    /// Whether `ksn`'s device has an IPEK in the cache.
    #[cfg(test)]
    pub(crate) fn contains(&self, ksn: &[u8; 10]) -> bool {
        let iksn = initial_ksn(ksn);
        self.shard(&iksn).index.contains_key(&iksn)
    }

    /// Whether any slot holds these bytes (tests: an evicted IPEK is gone from memory we own).
    #[cfg(test)]
    pub(crate) fn holds_bytes(&self, ipek: &[u8; 16]) -> bool {
        self.shards.iter().any(|s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.slots.iter().any(|slot| *slot.ipek == *ipek)
        })
    }
}

impl fmt::Debug for IpekCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpekCache({} of {} entries)", self.len(), self.capacity)
    }
}

/// A BDK together with the cache of the IPEKs derived from it. The cache is created with the
/// BDK and cannot be detached from it or given another BDK, so an IPEK is only ever reused
/// for the BDK it came from: a key file reload builds new `CachedBdk`s with empty caches.
/// Reads as a `Bdk` (`Deref`); Debug is redacted.
pub struct CachedBdk {
    bdk: Bdk,
    /// None: an AES BDK, or the cache is off (0 entries).
    ipeks: Option<IpekCache>,
}

impl CachedBdk {
    /// `bdk` with room for `ipek_cache_entries` devices' IPEKs (TDES only; 0: no cache).
    pub fn new(bdk: Bdk, ipek_cache_entries: usize) -> CachedBdk {
        let ipeks = (matches!(bdk, Bdk::Tdes(_)) && ipek_cache_entries > 0)
            .then(|| IpekCache::new(ipek_cache_entries));
        CachedBdk { bdk, ipeks }
    }

    /// The BDK itself.
    pub fn bdk(&self) -> &Bdk {
        &self.bdk
    }

    /// `dukpt::working_key(self.bdk(), ksn, usage)`, bit for bit and error for error, with a
    /// TDES device's IPEK taken from the cache when it is there.
    pub fn working_key(&self, ksn: &Ksn, usage: &KeyUsage) -> Result<WorkingKey, DukptError> {
        derive_working_key(&self.bdk, ksn, usage, |k, s| match &self.ipeks {
            Some(c) => c.get_or_derive(s, || tdes::ipek(k, s)),
            None => tdes::ipek(k, s),
        })
    }

    /// Devices whose IPEK is cached now (0 when the cache is off).
    pub fn cached_ipeks(&self) -> usize {
        self.ipeks.as_ref().map_or(0, IpekCache::len)
    }

    /// Most devices cached (0 when the cache is off).
    pub fn ipek_cache_capacity(&self) -> usize {
        self.ipeks.as_ref().map_or(0, IpekCache::capacity)
    }

    #[cfg(test)]
    pub(crate) fn ipek_cache(&self) -> Option<&IpekCache> {
        self.ipeks.as_ref()
    }
}

impl std::ops::Deref for CachedBdk {
    type Target = Bdk;
    fn deref(&self) -> &Bdk {
        &self.bdk
    }
}

impl fmt::Debug for CachedBdk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedBdk({:?}, ipek cache {:?})", self.bdk, self.ipeks)
    }
}
