//! Lockout for failed registrations, per source address and per device (KSN device id or
//! serial). In memory, bounded in size, on the injectable clock; with a shared store
//! (`with_shared`, PostgreSQL) the counts are also kept there, so that every node sees them.

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
    shared: Option<std::sync::Arc<dyn crate::store::lockout::LockoutStore>>,
}

impl Subject {
    /// The key of this subject in a shared lockout store.
    fn shared_key(&self) -> String {
        match self {
            Subject::Address(a) => format!("a:{a}"),
            Subject::Device(d) => format!("d:{d}"),
            Subject::Serial(s) => format!("s:{s}"),
        }
    }
}

impl Limiter {
    pub fn new(cfg: LockoutConfig) -> Self {
        Limiter {
            cfg,
            entries: Mutex::new(HashMap::new()),
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

    /// True if none of the subjects is locked out now.
    pub fn allowed(&self, subjects: &[Subject], now: DateTime<Utc>) -> bool {
        let local = {
            let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            subjects.iter().all(|s| {
                map.get(s)
                    .and_then(|e| e.locked_until)
                    .is_none_or(|until| now >= until)
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
        match shared.locked(&keys, now.timestamp_millis()) {
            Ok(locked) => !locked,
            Err(e) => {
                tracing::warn!(error = %e, "shared lockout unreachable; local counts only");
                true
            }
        }
    }

    /// Count a failed attempt against each subject; lock those that reach their threshold.
    pub fn failed(&self, subjects: &[Subject], now: DateTime<Utc>) {
        let window = Duration::seconds(self.cfg.window_seconds.into());
        let lockout = Duration::seconds(self.cfg.lockout_seconds.into());
        if let Some(shared) = &self.shared {
            for s in subjects {
                let r = shared.failed(
                    &s.shared_key(),
                    self.threshold(s),
                    window.num_milliseconds(),
                    lockout.num_milliseconds(),
                    now.timestamp_millis(),
                );
                if let Err(e) = r {
                    tracing::warn!(error = %e, "shared lockout unreachable; counted locally");
                }
            }
        }
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
        if let Some(shared) = &self.shared {
            let devices: Vec<String> = subjects
                .iter()
                .filter(|s| !matches!(s, Subject::Address(_)))
                .map(Subject::shared_key)
                .collect();
            if !devices.is_empty() {
                if let Err(e) = shared.clear(&devices) {
                    tracing::warn!(error = %e, "shared lockout unreachable; not cleared");
                }
            }
        }
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
}
