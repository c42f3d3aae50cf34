//! Lockout counters that several nodes share, so brute force cannot be spread across them.
//! The in-memory `cws::limiter::Limiter` stays the first check; with a shared engine it also
//! calls this trait. Subjects are opaque strings; times are Unix milliseconds.

use super::StoreError;

pub trait LockoutStore: Send + Sync {
    /// True if any of `subjects` is locked out at `now_ms`.
    fn locked(&self, subjects: &[String], now_ms: i64) -> Result<bool, StoreError>;
    /// Count one failure against `subject` (a new window if the last began `window_ms` ago or
    /// more); lock it for `lockout_ms` when the count reaches `threshold`. Atomic across nodes.
    fn failed(
        &self,
        subject: &str,
        threshold: u32,
        window_ms: i64,
        lockout_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Forget these subjects (a device that registered successfully).
    fn clear(&self, subjects: &[String]) -> Result<(), StoreError>;
}
