//! Lockout counters shared by every node (`lockout`): one statement per failure.

use super::{prepared, PgStore};
use crate::store::lockout::LockoutStore;
use crate::store::StoreError;
const LOCKED: &str =
    "SELECT count(*) FROM lockout WHERE subject = ANY($1) AND locked_until_ms > $2";
/// One statement: a new window or one more failure, and the lock when it reaches the threshold.
const FAILED: &str = "INSERT INTO lockout AS l (subject, window_start_ms, failures, locked_until_ms) \
     VALUES ($1::text, $2::bigint, 1, CASE WHEN 1 >= $3::int THEN $2::bigint + $5::bigint END) \
     ON CONFLICT (subject) DO UPDATE SET \
       window_start_ms = CASE WHEN $2 - l.window_start_ms >= $4::bigint THEN $2 ELSE l.window_start_ms END, \
       failures = CASE WHEN $2 - l.window_start_ms >= $4 THEN 1 ELSE l.failures + 1 END, \
       locked_until_ms = CASE \
         WHEN (CASE WHEN $2 - l.window_start_ms >= $4 THEN 1 ELSE l.failures + 1 END) >= $3 \
           THEN $2 + $5 \
         WHEN l.locked_until_ms > $2 THEN l.locked_until_ms END";
const CLEAR: &str = "DELETE FROM lockout WHERE subject = ANY($1)";
/// Rows that no longer lock and whose window is over (run now and then, keeps the table small).
const PRUNE: &str = "DELETE FROM lockout WHERE coalesce(locked_until_ms, 0) <= $1 \
                     AND window_start_ms < $1 - $2";

impl LockoutStore for PgStore {
    fn locked(&self, subjects: &[String], now_ms: i64) -> Result<bool, StoreError> {
        let subjects = subjects.to_vec();
        let n: i64 = self.pool.call(move |c, s| {
            let st = prepared(c, s, LOCKED)?;
            Ok(c.query_one(&st, &[&subjects, &now_ms])?.get(0))
        })?;
        Ok(n > 0)
    }

    fn failed(
        &self,
        subject: &str,
        threshold: u32,
        window_ms: i64,
        lockout_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let subject = subject.to_owned();
        let threshold = i32::try_from(threshold).unwrap_or(i32::MAX);
        let prune = rand::random::<u8>() < 4;
        self.pool.call(move |c, s| {
            let st = prepared(c, s, FAILED)?;
            c.execute(
                &st,
                &[&subject, &now_ms, &threshold, &window_ms, &lockout_ms],
            )?;
            if prune {
                let st = prepared(c, s, PRUNE)?;
                c.execute(&st, &[&now_ms, &window_ms])?;
            }
            Ok(())
        })
    }

    fn clear(&self, subjects: &[String]) -> Result<(), StoreError> {
        let subjects = subjects.to_vec();
        self.pool.call(move |c, s| {
            let st = prepared(c, s, CLEAR)?;
            c.execute(&st, &[&subjects]).map(|_| ())
        })
    }
}
