//! Lockout for failed attempts, per source address and per proven device. In memory, bounded
//! in size, on the injectable clock.
//!
//! Who is counted where is the callers' business (see docs/DECISIONS.md, "Issue 13"): an
//! address for every failure, a device only once a request proved something about it. The
//! table holds at most `max_tracked` subjects. Making room is O(1) amortised: subjects sit in a
//! queue in the order they were last counted, and the oldest ones are evicted only once their
//! window and lockout are over. A table full of live entries fails closed: a subject it cannot
//! track is refused rather than waved through, and no lock is ever evicted early.
//!
//! With a shared store (`with_shared`, PostgreSQL) the counts are also kept there, so that
//! every node sees them (brute force cannot be spread across nodes).

use crate::config::LockoutConfig;
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Address(IpAddr),
    /// A KSN device id whose secret decrypted to a well-formed value.
    Device(String),
    /// `service key/serial` of a secret that decrypted to a well-formed value.
    Serial(String),
    /// A registered terminal (its token verified) that sent card data that did not read.
    Terminal(String),
}

impl Subject {
    /// The address subject for a peer. IPv6 peers are grouped by their /64: one host usually
    /// holds a whole /64, and counting each address apart would let it fill the table.
    pub fn address(ip: IpAddr) -> Subject {
        match ip {
            IpAddr::V4(_) => Subject::Address(ip),
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                Subject::Address(IpAddr::from(o))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: DateTime<Utc>,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
    /// Which queue item is this entry's current one (older items for it are stale).
    seq: u64,
}

#[derive(Default)]
struct Table {
    map: HashMap<Subject, Entry>,
    /// (seq, subject) in the order subjects were last counted.
    order: VecDeque<(u64, Subject)>,
    next_seq: u64,
    /// How many times stale items were dropped (the amortised O(1) the tests check).
    compactions: u64,
}

/// How many live entries `make_room` moves to the back before giving up (keeps it O(1)).
const MAX_ROTATIONS: usize = 8;

pub struct Limiter {
    cfg: LockoutConfig,
    entries: Mutex<Table>,
    shared: Option<std::sync::Arc<dyn crate::store::lockout::LockoutStore>>,
}

impl Subject {
    /// The key of this subject in a shared lockout store.
    fn shared_key(&self) -> String {
        match self {
            Subject::Address(a) => format!("a:{a}"),
            Subject::Device(d) => format!("d:{d}"),
            Subject::Serial(s) => format!("s:{s}"),
            Subject::Terminal(t) => format!("t:{t}"),
        }
    }
}

impl Limiter {
    pub fn new(cfg: LockoutConfig) -> Self {
        Limiter {
            cfg,
            entries: Mutex::new(Table::default()),
            shared: None,
        }
    }

    /// Also count in a store other nodes share. If it cannot be reached, the local counts
    /// still apply (and the registration itself then fails on the same store).
    pub fn with_shared(
        mut self,
        shared: Option<std::sync::Arc<dyn crate::store::lockout::LockoutStore>>,
    ) -> Self {
        self.shared = shared;
        self
    }

    fn threshold(&self, s: &Subject) -> u32 {
        match s {
            Subject::Address(_) => self.cfg.max_failures_per_address,
            _ => self.cfg.max_failures_per_device,
        }
    }

    fn window(&self) -> Duration {
        Duration::seconds(self.cfg.window_seconds.into())
    }

    /// An entry still matters while its window is open or its lockout runs.
    fn live(&self, e: &Entry, now: DateTime<Utc>) -> bool {
        now - e.window_start < self.window() || e.locked_until.is_some_and(|u| u > now)
    }

    /// Evict dead entries from the front of the queue until one more subject fits. False when
    /// the table is full of live entries.
    fn make_room(&self, t: &mut Table, now: DateTime<Utc>) -> bool {
        let mut rotations = 0;
        while t.map.len() >= self.cfg.max_tracked {
            let Some((seq, s)) = t.order.pop_front() else {
                return false;
            };
            let Some(e) = t.map.get(&s) else { continue };
            if e.seq != seq {
                continue; // stale: the subject was counted again later
            }
            if !self.live(e, now) {
                t.map.remove(&s);
                continue;
            }
            // Live (say a long lockout ahead of expired windows): move it back, try the next.
            t.order.push_back((seq, s));
            rotations += 1;
            if rotations >= MAX_ROTATIONS {
                return false;
            }
        }
        true
    }

    /// True if none of the subjects is locked out now. A subject the full table could not
    /// track is refused (fail closed).
    pub fn allowed(&self, subjects: &[Subject], now: DateTime<Utc>) -> bool {
        let local = {
            let mut t = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            subjects.iter().all(|s| match t.map.get(s) {
                Some(e) => e.locked_until.is_none_or(|until| now >= until),
                None => self.make_room(&mut t, now),
            })
        };
        let Some(shared) = self
            .shared
            .as_ref()
            .filter(|_| local && !subjects.is_empty())
        else {
            return local;
        };
        let keys: Vec<String> = subjects.iter().map(Subject::shared_key).collect();
        // A network round trip on a shared engine: off the async worker (`store::blocking`).
        match crate::store::blocking(|| shared.locked(&keys, now.timestamp_millis())) {
            Ok(locked) => !locked,
            Err(e) => {
                tracing::warn!(error = %e, "shared lockout unreachable; local counts only");
                true
            }
        }
    }

    /// Count a failed attempt against each subject; lock those that reach their threshold.
    pub fn failed(&self, subjects: &[Subject], now: DateTime<Utc>) {
        let lockout = Duration::seconds(self.cfg.lockout_seconds.into());
        let window = self.window();
        if let Some(shared) = &self.shared {
            for s in subjects {
                let r = crate::store::blocking(|| {
                    shared.failed(
                        &s.shared_key(),
                        self.threshold(s),
                        window.num_milliseconds(),
                        lockout.num_milliseconds(),
                        now.timestamp_millis(),
                    )
                });
                if let Err(e) = r {
                    tracing::warn!(error = %e, "shared lockout unreachable; counted locally");
                }
            }
        }
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let t = &mut *guard;
        for s in subjects {
            if !t.map.contains_key(s) && !self.make_room(t, now) {
                // `allowed` refuses it from now on, as long as the table stays full.
                tracing::warn!("lockout table full of live entries; refusing untracked sources");
                continue;
            }
            let seq = t.next_seq;
            t.next_seq += 1;
            let e = t.map.entry(s.clone()).or_insert(Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
                seq,
            });
            if now - e.window_start >= window {
                e.window_start = now;
                e.failures = 0;
                e.locked_until = e.locked_until.filter(|u| *u > now);
            }
            e.failures += 1;
            e.seq = seq;
            if e.failures >= self.threshold(s) {
                e.locked_until = Some(now + lockout);
                tracing::warn!(subject = ?s, "locked out after repeated failures");
            }
            t.order.push_back((seq, s.clone()));
        }
        // Stale queue items pile up while the table is not full: drop them now and then
        // (O(n) once per n pushes).
        if t.order.len() > 2 * self.cfg.max_tracked + 16 {
            let map = &t.map;
            t.order
                .retain(|(seq, s)| map.get(s).is_some_and(|e| e.seq == *seq));
            t.compactions += 1;
        }
    }

    /// A success clears the device's record (not the address's: one good terminal behind an
    /// address says nothing about the others).
    pub fn succeeded(&self, subjects: &[Subject]) {
        if let Some(shared) = &self.shared {
            let devices: Vec<String> = subjects
                .iter()
                .filter(|s| !matches!(s, Subject::Address(_)))
                .map(Subject::shared_key)
                .collect();
            if !devices.is_empty() {
                if let Err(e) = crate::store::blocking(|| shared.clear(&devices)) {
                    tracing::warn!(error = %e, "shared lockout unreachable; not cleared");
                }
            }
        }
        let mut t = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for s in subjects {
            if !matches!(s, Subject::Address(_)) {
                t.map.remove(s);
            }
        }
    }

    /// How many subjects are tracked now.
    pub fn tracked(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LockoutConfig {
        LockoutConfig {
            max_failures_per_address: 3,
            max_failures_per_device: 2,
            window_seconds: 60,
            lockout_seconds: 300,
            max_tracked: 4,
        }
    }

    #[test]
    fn locks_after_threshold_and_unlocks_after_the_lockout() {
        let l = Limiter::new(cfg());
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let dev = [Subject::Device("T1".into())];
        assert!(l.allowed(&dev, t));
        l.failed(&dev, t);
        assert!(l.allowed(&dev, t));
        l.failed(&dev, t);
        assert!(!l.allowed(&dev, t));
        assert!(!l.allowed(&dev, t + Duration::seconds(299)));
        assert!(l.allowed(&dev, t + Duration::seconds(300)));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = Limiter::new(cfg());
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let dev = [Subject::Device("T1".into())];
        l.failed(&dev, t);
        l.failed(&dev, t + Duration::seconds(61));
        assert!(l.allowed(&dev, t + Duration::seconds(61)));
    }

    #[test]
    fn table_stays_bounded() {
        let l = Limiter::new(cfg());
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        for i in 0..100u8 {
            l.failed(&[Subject::Serial(format!("s{i}"))], t);
        }
        assert_eq!(l.tracked(), 4);
        assert!(l.entries.lock().unwrap().order.len() <= 2 * 4 + 16);
    }

    fn addr(n: u8) -> Subject {
        Subject::Address(std::net::IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn an_address_uses_its_own_threshold() {
        // Address threshold 3, device threshold 2: two failures lock a device, not an address.
        let l = Limiter::new(cfg());
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        l.failed(&[addr(1)], t);
        l.failed(&[addr(1)], t);
        assert!(l.allowed(&[addr(1)], t));
        l.failed(&[addr(1)], t);
        assert!(!l.allowed(&[addr(1)], t));
    }

    #[test]
    fn a_success_does_not_reset_the_address_count() {
        let l = Limiter::new(cfg());
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let dev = Subject::Device("T1".into());
        l.failed(&[addr(1), dev.clone()], t);
        l.failed(&[addr(1)], t);
        l.succeeded(&[addr(1), dev.clone()]);
        l.failed(&[addr(1)], t);
        assert!(!l.allowed(&[addr(1)], t), "one success cleared the address");
        // The device's record is cleared: one failure after the success does not lock it.
        l.failed(std::slice::from_ref(&dev), t);
        assert!(l.allowed(&[dev], t));
    }

    #[test]
    fn a_full_table_keeps_its_locks_and_refuses_new_addresses() {
        // Capacity 4. A locked device, then three live addresses: the table is full.
        let l = Limiter::new(cfg());
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let locked = [Subject::Serial("victim-target".into())];
        l.failed(&locked, t);
        l.failed(&locked, t);
        assert!(!l.allowed(&locked, t));
        for i in 0..3 {
            l.failed(&[addr(i)], t);
        }
        // Chosen serials flooding in cannot evict the lock...
        for i in 0..50 {
            l.failed(&[Subject::Serial(format!("s{i}"))], t);
        }
        assert!(!l.allowed(&locked, t), "a lock was evicted by a flood");
        // ...and an address that cannot be tracked is refused (fails closed), not waved through.
        assert!(
            !l.allowed(&[addr(200)], t),
            "an untracked address was let in"
        );
        // Once the window has passed, unlocked entries make room again.
        let later = t + Duration::seconds(61);
        assert!(l.allowed(&[addr(200)], later));
        assert!(!l.allowed(&locked, later));
    }

    /// A shared lockout store in memory that records what it was asked (issue 13 point 9: the
    /// keys, thresholds and fail-open rule of the shared path had no test on the embedded
    /// engine).
    #[derive(Default)]
    struct Shared {
        calls: Mutex<Vec<String>>,
        counts: Mutex<HashMap<String, (u32, i64)>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl crate::store::lockout::LockoutStore for Shared {
        fn locked(
            &self,
            subjects: &[String],
            now_ms: i64,
        ) -> Result<bool, crate::store::StoreError> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(crate::store::StoreError::Closed);
            }
            self.calls
                .lock()
                .unwrap()
                .push(format!("locked {}", subjects.join(",")));
            let c = self.counts.lock().unwrap();
            Ok(subjects
                .iter()
                .any(|s| c.get(s).is_some_and(|&(_, until)| until > now_ms)))
        }
        fn failed(
            &self,
            subject: &str,
            threshold: u32,
            _window_ms: i64,
            lockout_ms: i64,
            now_ms: i64,
        ) -> Result<(), crate::store::StoreError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("failed {subject} {threshold}"));
            let mut c = self.counts.lock().unwrap();
            let e = c.entry(subject.to_owned()).or_insert((0, 0));
            e.0 += 1;
            if e.0 >= threshold {
                e.1 = now_ms + lockout_ms;
            }
            Ok(())
        }
        fn clear(&self, subjects: &[String]) -> Result<(), crate::store::StoreError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("clear {}", subjects.join(",")));
            let mut c = self.counts.lock().unwrap();
            for s in subjects {
                c.remove(s);
            }
            Ok(())
        }
    }

    #[test]
    fn a_shared_store_counts_each_subject_under_its_own_key() {
        let shared = std::sync::Arc::new(Shared::default());
        let node = |s: &std::sync::Arc<Shared>| {
            let s: std::sync::Arc<dyn crate::store::lockout::LockoutStore> = s.clone();
            Limiter::new(cfg()).with_shared(Some(s))
        };
        let (a, b) = (node(&shared), node(&shared));
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let all = [
            addr(1),
            Subject::Device("D".into()),
            Subject::Serial("S".into()),
            Subject::Terminal("T".into()),
        ];
        a.failed(&all, t);
        a.succeeded(&all);
        assert_eq!(
            *shared.calls.lock().unwrap(),
            [
                "failed a:10.0.0.1 3",
                "failed d:D 2",
                "failed s:S 2",
                "failed t:T 2",
                "clear d:D,s:S,t:T",
            ]
        );
        // Node a counts a device to its threshold; node b, which has counted nothing, refuses it
        // and still lets another device in.
        let dev = [Subject::Device("D".into())];
        a.failed(&dev, t);
        a.failed(&dev, t);
        assert!(!b.allowed(&dev, t));
        assert!(b.allowed(&[Subject::Device("E".into())], t));
        // A shared store that cannot be reached leaves the local counts in charge (fail open
        // there, as documented: the registration then fails on the same store).
        shared
            .down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(b.allowed(&dev, t));
        assert!(!a.allowed(&dev, t), "a's own count still locks");
    }

    #[test]
    fn entries_make_room_exactly_when_their_window_and_lockout_end() {
        // Capacity 4, window 60 s, lockout 300 s. A full table of plain failures frees up at
        // the window's end to the second (a window is [start, start + 60 s), as in `failed`)...
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let l = Limiter::new(cfg());
        for i in 0..4 {
            l.failed(&[Subject::Serial(format!("s{i}"))], t);
        }
        assert!(!l.allowed(&[addr(9)], t + Duration::seconds(59)));
        assert!(l.allowed(&[addr(9)], t + Duration::seconds(60)));
        // ...and a full table of locks at the lockout's end (when `allowed` lets them in again).
        let l = Limiter::new(cfg());
        for i in 0..4 {
            let s = [Subject::Serial(format!("s{i}"))];
            l.failed(&s, t);
            l.failed(&s, t);
        }
        assert!(!l.allowed(&[addr(9)], t + Duration::seconds(299)));
        assert!(l.allowed(&[addr(9)], t + Duration::seconds(300)));
    }

    #[test]
    fn a_lock_at_the_front_does_not_stop_room_being_made_behind_it() {
        // Capacity 4: a locked serial counted first, then three plain failures. Once their
        // window is over, the lock (still live) is moved back and the dead entry behind it
        // makes room.
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let l = Limiter::new(cfg());
        let locked = [Subject::Serial("locked".into())];
        l.failed(&locked, t);
        l.failed(&locked, t);
        for i in 0..3 {
            l.failed(&[Subject::Serial(format!("s{i}"))], t);
        }
        let later = t + Duration::seconds(61);
        assert!(
            l.allowed(&[addr(9)], later),
            "a live lock at the front blocked eviction"
        );
        assert!(!l.allowed(&locked, later));
    }

    #[test]
    fn one_subject_counted_again_and_again_keeps_the_queue_bounded() {
        // Every count queues an item and makes the subject's older items stale; stale items are
        // dropped now and then, so the queue stays bounded by the table, not by the traffic.
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let l = Limiter::new(cfg());
        for i in 0..100 {
            l.failed(&[addr(1)], t + Duration::seconds(i));
        }
        assert_eq!(l.tracked(), 1);
        assert!(l.entries.lock().unwrap().order.len() <= 2 * 4 + 16);
    }

    #[test]
    fn stale_items_are_dropped_once_per_many_pushes() {
        // After one call with one subject, two subjects per call: the queue grows two at a time
        // (odd lengths: it steps over its bound of 2 * 4 + 16), is compacted once past it, and
        // the O(n) compaction runs about once per 11 calls, not per call.
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let l = Limiter::new(cfg());
        let dev = Subject::Device("D".into());
        l.failed(&[addr(2)], t);
        for i in 0..100 {
            l.failed(&[addr(1), dev.clone()], t + Duration::seconds(i));
            assert!(l.entries.lock().unwrap().order.len() <= 2 * 4 + 16 + 2);
        }
        let compactions = l.entries.lock().unwrap().compactions;
        assert!((5..=10).contains(&compactions), "{compactions} compactions");
    }

    #[test]
    fn the_queue_is_compacted_only_past_twice_the_table() {
        // Table of 100: the queue may hold 2 * 100 + 16 items before stale ones are dropped.
        let l = Limiter::new(LockoutConfig {
            max_tracked: 100,
            ..cfg()
        });
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        for i in 0..216 {
            l.failed(&[addr(1)], t + Duration::seconds(i));
        }
        let (len, compactions) = {
            let g = l.entries.lock().unwrap();
            (g.order.len(), g.compactions)
        };
        assert_eq!((len, compactions), (216, 0));
        l.failed(&[addr(1)], t + Duration::seconds(216));
        let g = l.entries.lock().unwrap();
        assert_eq!((g.order.len(), g.compactions), (1, 1));
    }

    #[test]
    fn compaction_keeps_what_eviction_needs() {
        // Three serials, then one address counted 30 times: the queue is compacted (past 24
        // items), and once the serials' window is over they are still found and evicted.
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let l = Limiter::new(cfg());
        for i in 0..3 {
            l.failed(&[Subject::Serial(format!("s{i}"))], t);
        }
        for _ in 0..30 {
            l.failed(&[addr(1)], t);
        }
        assert!(l.entries.lock().unwrap().compactions >= 1);
        let later = t + Duration::seconds(61);
        assert!(
            l.allowed(&[addr(9)], later),
            "compaction lost the items eviction reads"
        );
        assert!(!l.allowed(&[addr(1)], later), "the address is still locked");
    }

    #[test]
    fn a_new_window_does_not_end_a_running_lockout() {
        // Window 60 s, lockout 300 s: a failure after the window but inside the lockout starts
        // a new count and keeps the lock.
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let l = Limiter::new(cfg());
        let dev = [Subject::Device("D".into())];
        l.failed(&dev, t);
        l.failed(&dev, t);
        l.failed(&dev, t + Duration::seconds(61));
        assert!(!l.allowed(&dev, t + Duration::seconds(62)));
        assert!(l.allowed(&dev, t + Duration::seconds(300)));
    }
}
