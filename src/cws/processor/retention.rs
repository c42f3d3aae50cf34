//! Sandbox retention: a background sweep deletes sandbox transactions older than
//! `processor.sandbox_retention_days`, at most `processor.sandbox_prune_per_tick` looked at per
//! step, so the store (and the cost of a sale) stays flat however long the sandbox runs.
//! Transaction ids start with their creation time, so the old ones are the first in id order.

use crate::app::App;
use crate::store::to_ms;
use std::sync::Weak;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
/// Between steps when the last one reached the end of the old transactions.
const IDLE: Duration = Duration::from_secs(1);
/// Between steps while a backlog remains: bounded work per step, and a breather for requests.
const BUSY: Duration = Duration::from_millis(100);
/// Between pages of a pass that found nothing to delete. At `BUSY` pace the sweep decoded
/// 20,000 records a second for as long as the server ran, on the cores the sales use (issue 9:
/// the largest source of allocations in a sale's callgrind profile). At this pace a pass over a
/// million stored transactions takes about 8 minutes at the default 2,000 a page: plenty for a
/// retention counted in days.
const SCAN: Duration = Duration::from_secs(1);

/// How long to wait after a step that deleted `deleted` and stopped at `next`.
fn pause_after(deleted: usize, next: Option<&[u8; 16]>) -> Duration {
    match next {
        None => IDLE,
        Some(_) if deleted > 0 => BUSY,
        Some(_) => SCAN,
    }
}

/// Run until the app is dropped. Each step runs on a blocking thread (it reads and deletes).
pub async fn run(app: Weak<App>) {
    let mut after: Option<[u8; 16]> = None;
    loop {
        let Some(a) = app.upgrade() else { return };
        let p = &a.config.processor;
        let (days, limit) = (p.sandbox_retention_days, p.sandbox_prune_per_tick);
        let pause = if days == 0 || a.forward.is_some() {
            Duration::from_secs(60)
        } else {
            let cutoff = to_ms(a.clock.now()) - i64::from(days) * DAY_MS;
            let sandbox = a.sandbox.clone();
            let from = after;
            let step = tokio::task::spawn_blocking(move || {
                sandbox.prune_step(cutoff, from.as_ref(), limit)
            });
            match step.await {
                Ok(Ok((deleted, next))) => {
                    if deleted > 0 {
                        tracing::debug!(deleted, "sandbox retention: pruned transactions");
                    }
                    after = next;
                    pause_after(deleted, next.as_ref())
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "sandbox retention step failed");
                    IDLE
                }
                Err(e) => {
                    tracing::error!(error = %e, "sandbox retention step panicked");
                    IDLE
                }
            }
        };
        drop(a);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use crate::cws::card::Card;
    use crate::cws::processor::sandbox::{NewTxn, Sandbox, Txn};
    use crate::store::{from_ms, SledStore, TerminalId, TransactionStore};
    use std::sync::Arc;

    const DAY_MS: i64 = super::DAY_MS;

    fn sale(cents: i64) -> NewTxn {
        NewTxn {
            amount_cents: cents,
            card: Card {
                masked_pan: "476173XXXXXX0010".into(),
                card_type: "Visa",
                expire: "2512".into(),
            },
            reference: None,
            id: None,
        }
    }

    #[test]
    fn prune_steps_delete_old_transactions_in_bounded_batches_and_keep_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let txns = store.transactions().unwrap();
        let sandbox = Sandbox::new(Arc::new(txns.clone()));
        let term = TerminalId([7; 16]);
        let t0 = 1_800_000_000_000;
        let old: Vec<String> = [(false, 100), (true, 200), (true, 300)]
            .into_iter()
            .map(|(capture, c)| {
                sandbox
                    .authorize(&term, &sale(c), capture, from_ms(t0))
                    .unwrap()
                    .transaction_id
            })
            .collect();
        let now = t0 + 40 * DAY_MS;
        let new: Vec<String> = (0..2)
            .map(|_| {
                sandbox
                    .authorize(&term, &sale(400), false, from_ms(now))
                    .unwrap()
                    .transaction_id
            })
            .collect();
        // A transaction from before time-ordered ids, whose random id sorts first: recent, so
        // it must survive the sweep.
        let mut legacy: Txn = sandbox.get(&new[0]).unwrap().unwrap();
        legacy.created_at_ms = now;
        txns.insert(
            &term,
            &[0; 16],
            postcard::to_allocvec(&legacy).unwrap(),
            false,
        )
        .unwrap();

        let cutoff = now - 30 * DAY_MS;
        let (d1, next) = sandbox.prune_step(cutoff, None, 2).unwrap();
        assert_eq!(d1, 1, "the legacy record is looked at, and kept");
        let (d2, next) = sandbox.prune_step(cutoff, next.as_ref(), 2).unwrap();
        assert_eq!(d2, 2);
        assert!(next.is_some(), "a full batch: there may be more");
        // The rest of the tree: the two recent sales (a full batch), then the end.
        let (d3, next) = sandbox.prune_step(cutoff, next.as_ref(), 2).unwrap();
        assert_eq!(d3, 0);
        assert_eq!(
            sandbox.prune_step(cutoff, next.as_ref(), 2).unwrap(),
            (0, None)
        );
        for id in &old {
            assert_eq!(sandbox.get(id).unwrap(), None, "{id} pruned");
        }
        for id in &new {
            assert!(sandbox.get(id).unwrap().is_some(), "{id} kept");
        }
        assert!(txns.get(&[0; 16]).unwrap().is_some(), "legacy kept");
        // The pruned authorization left CaptureAll's index; the two recent ones are on it.
        assert_eq!(txns.indexed(&term).unwrap().len(), 2);
    }

    #[test]
    fn ids_start_with_their_creation_time_so_they_sort_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let sandbox = Sandbox::new(Arc::new(store.transactions().unwrap()));
        let term = TerminalId([7; 16]);
        let ids: Vec<String> = [3, 1, 2]
            .into_iter()
            .map(|d| {
                sandbox
                    .authorize(&term, &sale(100), true, from_ms(d * DAY_MS))
                    .unwrap()
                    .transaction_id
            })
            .collect();
        assert!(ids[1] < ids[2] && ids[2] < ids[0], "{ids:?}");
        assert!(ids[1].starts_with(&format!("{:012X}", DAY_MS)));
    }

    #[test]
    fn the_sweep_hurries_only_while_it_deletes() {
        use super::{pause_after, BUSY, IDLE, SCAN};
        assert_eq!(
            pause_after(5, Some(&[1; 16])),
            BUSY,
            "a backlog: next page soon"
        );
        assert_eq!(
            pause_after(0, Some(&[1; 16])),
            SCAN,
            "nothing old here: scan slowly"
        );
        assert_eq!(pause_after(0, None), IDLE);
        assert_eq!(pause_after(3, None), IDLE, "the pass is over");
        assert!(SCAN >= 10 * BUSY);
    }
}
