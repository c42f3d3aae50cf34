//! Lockout for failed registrations, per source address and per device (KSN device id or
//! serial). In memory, bounded in size, on the injectable clock.

use crate::config::LockoutConfig;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Address(std::net::IpAddr),
    Device(String),
    Serial(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: DateTime<Utc>,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
}

pub struct Limiter {
    cfg: LockoutConfig,
    entries: Mutex<HashMap<Subject, Entry>>,
}

impl Limiter {
    pub fn new(cfg: LockoutConfig) -> Self {
        Limiter {
            cfg,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn threshold(&self, s: &Subject) -> u32 {
        match s {
            Subject::Address(_) => self.cfg.max_failures_per_address,
            _ => self.cfg.max_failures_per_device,
        }
    }

    /// True if none of the subjects is locked out now.
    pub fn allowed(&self, subjects: &[Subject], now: DateTime<Utc>) -> bool {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        subjects.iter().all(|s| {
            map.get(s)
                .and_then(|e| e.locked_until)
                .is_none_or(|until| now >= until)
        })
    }

    /// Count a failed attempt against each subject; lock those that reach their threshold.
    pub fn failed(&self, subjects: &[Subject], now: DateTime<Utc>) {
        let window = Duration::seconds(self.cfg.window_seconds.into());
        let lockout = Duration::seconds(self.cfg.lockout_seconds.into());
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.cfg.max_tracked {
            map.retain(|_, e| {
                now - e.window_start < window || e.locked_until.is_some_and(|u| u > now)
            });
        }
        for s in subjects {
            if !map.contains_key(s) && map.len() >= self.cfg.max_tracked {
                tracing::warn!("lockout table full; not tracking a new source");
                continue;
            }
            let e = map.entry(s.clone()).or_insert(Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            });
            if now - e.window_start >= window {
                *e = Entry {
                    window_start: now,
                    failures: 0,
                    locked_until: e.locked_until.filter(|u| *u > now),
                };
            }
            e.failures += 1;
            if e.failures >= self.threshold(s) {
                e.locked_until = Some(now + lockout);
                tracing::warn!(subject = ?s, "locked out after repeated failed registrations");
            }
        }
    }

    /// A success clears the device's record (not the address's: one good terminal behind an
    /// address says nothing about the others).
    pub fn succeeded(&self, subjects: &[Subject]) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for s in subjects {
            if !matches!(s, Subject::Address(_)) {
                map.remove(s);
            }
        }
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
        assert!(l.entries.lock().unwrap().len() <= 4);
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
        l.failed(&[dev.clone()], t);
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
}
