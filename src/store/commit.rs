//! Group commit: callers that need durability queue here, and one dedicated flush thread runs a
//! single `flush` (sled's flush, then fdatasync) for everyone who queued before that flush
//! started. At low load a lone caller is flushed at once; under load the queue grows while the
//! previous flush runs, so batches grow with the load and the fsync rate never caps throughput.
//! `close` answers whoever is queued, stops the thread and waits for it.
//!
//! A waiter is a callback the flush thread calls with the flush's result: `durable` awaits one,
//! and a store trip can queue one itself (`then`) so its request wakes once, after the flush
//! (`store::offload_durable`).
//!
//! Gathering: a trip that will want a flush says so before it starts (`expect`). A flush
//! about to start waits, up to `store.group_commit_gather_us`, until no such trip is still
//! running: a trip is tens of µs, a flush hundreds (sled's write-out and wake-ups, then the
//! fdatasync), so the trip that would have just missed this flush shares it instead of
//! waiting for it and then for a flush of its own. At low load nothing is in flight and the
//! flush starts at once; the wait grows only with the trips that are actually running.

use super::{StoreError, TerminalStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// A queued caller: answered once with the flush's result, or with `Closed` if it is dropped
/// unanswered (the thread ended, or a flush panicked with its batch in hand), so no caller
/// ever waits for an answer that cannot come.
struct FlushWaiter {
    f: Option<Callback>,
    /// Its writes were all to the logged trees (`TerminalStore::flush_logged` covers them).
    logged: bool,
}

type Callback = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;

impl FlushWaiter {
    fn new(f: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static, logged: bool) -> Self {
        FlushWaiter {
            f: Some(Box::new(f)),
            logged,
        }
    }

    fn answer(mut self, r: Result<(), Arc<StoreError>>) {
        if let Some(f) = self.f.take() {
            f(r);
        }
    }
}

impl Drop for FlushWaiter {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(Err(Arc::new(StoreError::Closed)));
        }
    }
}

#[derive(Default)]
struct Queue {
    waiters: Vec<FlushWaiter>,
    closed: bool,
    /// The thread sleeps on the condvar: only then does a new waiter pay for a wake-up.
    idle: bool,
    /// Trips that said they will queue a waiter (`expect`) and have not yet.
    in_flight: usize,
    /// The thread waits for `in_flight` to reach 0 before it flushes.
    gathering: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    flushes: AtomicU64,
    served: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        drop(q);
        self.wake.notify_one();
    }
}

/// Dropping the last `GroupCommit` stops the thread too, so a dropped app releases its store.
struct Handle {
    shared: Arc<Shared>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Cheap to clone; every clone feeds the same flusher. `close` on any clone stops it.
#[derive(Clone)]
pub struct GroupCommit {
    h: Arc<Handle>,
}

/// Marks the queue closed when the thread ends, however it ends, so no later caller waits for
/// a thread that is gone, and answers whoever is still queued with `Closed`.
struct ExitGuard {
    shared: Arc<Shared>,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.closed = true;
        let queued = std::mem::take(&mut q.waiters);
        drop(q);
        drop(queued); // each answers `Closed`
        if let Some(d) = self.done.take() {
            let _ = d.send(());
        }
    }
}

impl GroupCommit {
    /// Start the flush thread. `window` > 0 makes each flush wait that long for company first
    /// (`store.group_commit_window_us`); 0, the default, flushes as soon as there is work.
    /// `gather` bounds the wait for trips in flight (`store.group_commit_gather_us`; 0: none).
    pub fn start(store: Arc<dyn TerminalStore>, window: Duration, gather: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let (done_tx, done_rx) = oneshot::channel();
        let guard = ExitGuard {
            shared: shared.clone(),
            done: Some(done_tx),
        };
        std::thread::Builder::new()
            .name("snapgate-flush".into())
            .spawn(move || flush_loop(store, window, gather, guard))
            .expect("spawn the group commit thread");
        GroupCommit {
            h: Arc::new(Handle {
                shared,
                done: Mutex::new(Some(done_rx)),
            }),
        }
    }

    /// Wait until everything written before this call is durable.
    pub async fn durable(&self) -> Result<(), Arc<StoreError>> {
        self.wait(false).await
    }

    /// `durable` for writes to terminal records and sandbox transactions only (see
    /// `Expected::then_logged`).
    pub async fn durable_logged(&self) -> Result<(), Arc<StoreError>> {
        self.wait(true).await
    }

    async fn wait(&self, logged: bool) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = oneshot::channel();
        let waiter = FlushWaiter::new(
            move |r| {
                let _ = tx.send(r);
            },
            logged,
        );
        self.push(Some(waiter), false);
        rx.await.unwrap_or(Err(Arc::new(StoreError::Closed)))
    }

    /// Call `f` with the result of a flush that starts after this call: everything written
    /// before it is then durable (or the flush failed). Once closed, `f` gets `Closed` at once.
    pub fn then(&self, f: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static) {
        self.push(Some(FlushWaiter::new(f, false)), false);
    }

    /// Queue a waiter and/or mark an expected trip landed, under one lock, and wake the flush
    /// thread if it sleeps with work now, or gathers and nothing is in flight any more.
    fn push(&self, waiter: Option<FlushWaiter>, landed: bool) {
        let shared = &self.h.shared;
        let mut q = shared.lock();
        if landed {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        if let Some(f) = waiter {
            if q.closed {
                drop(q);
                return f.answer(Err(Arc::new(StoreError::Closed)));
            }
            q.waiters.push(f);
        }
        if (q.idle && !q.waiters.is_empty()) || (q.gathering && q.in_flight == 0) {
            q.idle = false;
            q.gathering = false;
            drop(q);
            shared.wake.notify_one();
        }
    }

    /// Say that a trip about to run will queue a waiter: a flush about to start waits for it
    /// (bounded, see the module text). The `Expected` queues it (`then`) or, dropped, withdraws.
    pub fn expect(&self) -> Expected {
        self.h.shared.lock().in_flight += 1;
        Expected {
            commit: Some(self.clone()),
        }
    }

    /// Flushes run so far.
    pub fn flushes(&self) -> u64 {
        self.h.shared.flushes.load(Ordering::Relaxed)
    }

    /// Callers answered so far (over `flushes()`: the mean batch).
    pub fn served(&self) -> u64 {
        self.h.shared.served.load(Ordering::Relaxed)
    }

    /// Callers queued for the next flush.
    pub fn queued(&self) -> usize {
        self.h.shared.lock().waiters.len()
    }

    /// The group commit's counters and `fdatasyncs` (the store's count), read when `/metrics`
    /// is scraped (names without `_total`: the OpenMetrics encoder appends it).
    pub fn scraped(&self, fdatasyncs: u64) -> [crate::metrics::Scraped; 3] {
        use crate::metrics::{Scraped, ScrapedKind::Counter};
        [
            Scraped {
                name: "snapgate_store_flushes",
                help: "Group-commit flushes (one fdatasync each on sled).",
                kind: Counter(self.flushes()),
            },
            Scraped {
                name: "snapgate_store_flush_waiters",
                help: "Durable writes answered by group commit (over flushes: the mean batch).",
                kind: Counter(self.served()),
            },
            Scraped {
                name: "snapgate_store_fdatasync",
                help: "fdatasync calls on the store's files (the write-ahead log, sled's log) since it opened.",
                kind: Counter(fdatasyncs),
            },
        ]
    }

    /// Stop the flusher once it has answered every waiter queued so far, and wait for it.
    /// Later `durable` calls fail with `StoreError::Closed`. A second call returns at once.
    pub async fn close(&self) {
        self.h.shared.close();
        let done = self.h.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

/// A trip that will queue a waiter (`GroupCommit::expect`).
pub struct Expected {
    commit: Option<GroupCommit>,
}

impl Expected {
    /// Queue `f` for the next flush (as `GroupCommit::then`), no longer in flight.
    pub fn then(mut self, f: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static) {
        if let Some(c) = self.commit.take() {
            c.push(Some(FlushWaiter::new(f, false)), true);
        }
    }

    /// `then` for a trip whose writes were all to terminal records and sandbox transactions:
    /// a batch of such waiters only is answered by `TerminalStore::flush_logged` (with sled's
    /// write-ahead log, one fdatasync of the log instead of sled's flush).
    pub fn then_logged(mut self, f: impl FnOnce(Result<(), Arc<StoreError>>) + Send + 'static) {
        if let Some(c) = self.commit.take() {
            c.push(Some(FlushWaiter::new(f, true)), true);
        }
    }
}

/// Dropped without `then` (the trip wrote nothing, or panicked): withdrawn.
impl Drop for Expected {
    fn drop(&mut self) {
        if let Some(c) = self.commit.take() {
            c.push(None, true);
        }
    }
}

fn flush_loop(store: Arc<dyn TerminalStore>, window: Duration, gather: Duration, guard: ExitGuard) {
    let shared = guard.shared.clone();
    let mut q = shared.lock();
    loop {
        while q.waiters.is_empty() && !q.closed {
            q.idle = true;
            q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.idle = false;
        if q.waiters.is_empty() {
            break; // closed, and everyone answered
        }
        if !window.is_zero() {
            drop(q);
            std::thread::sleep(window);
            q = shared.lock();
        }
        if q.in_flight > 0 && !gather.is_zero() {
            let deadline = std::time::Instant::now() + gather;
            while q.in_flight > 0 && !q.closed {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                q.gathering = true;
                q = shared
                    .wake
                    .wait_timeout(q, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            q.gathering = false;
        }
        // Everyone queued now: their writes all happened before this flush starts.
        let batch = std::mem::take(&mut q.waiters);
        drop(q);
        let res = match batch.iter().all(|w| w.logged) {
            true => store.flush_logged(),
            false => store.flush(),
        }
        .map_err(Arc::new);
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared
            .served
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for w in batch {
            w.answer(res.clone());
        }
        // After the answers: a checkpoint (sled's flush) delays only later callers, once a
        // segment's worth of writes.
        if let Err(e) = store.checkpoint(false) {
            tracing::error!(error = %e, "write-ahead log checkpoint failed");
        }
        q = shared.lock();
    }
    drop(q);
    drop(store);
    drop(guard);
}
