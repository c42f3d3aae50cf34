//! Store I/O from async code. `blocking(f)` runs `f`, which may block (a sled read that misses
//! the cache, an intern's fsync under the name lock, an operator's flush, a PostgreSQL pool
//! checkout), after the tokio worker it runs on has handed its other tasks to another thread
//! (`tokio::task::block_in_place`): a slow store stalls the request that waits for it, never
//! the requests queued behind it on the same worker (docs/DECISIONS.md, "Issue 13").
//!
//! `blocking` suits closures that borrow the request: `block_in_place` adds no await point.
//! The hot paths (a sale, a follow-up) own what their trip needs and use `offload` instead: the
//! closure runs on one of the store threads below while the worker goes on with other tasks,
//! and the request awaits its answer. That costs a queue push and a wake-up instead of
//! `block_in_place`'s hand-over of the worker's whole queue to another thread (issue 9: about
//! 16 against 7 µs of CPU per call in a microbenchmark on this VM, docs/BENCHMARKS.md). An
//! offloaded trip can outlive a request abandoned by the handler timeout; `CommitPoint` makes
//! such a trip stop before its first write (`cws::ops::execute`).

use super::GroupCommit;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// Set by `set_inline`: `blocking` runs its store calls in place (`store.offload = "network"`
/// on the embedded engine).
static INLINE: AtomicBool = AtomicBool::new(false);

/// `store.offload = "network"` with sled: the request path's store calls (in-memory sled work,
/// microseconds) run on the worker, saving the hand-off `block_in_place` costs per call; calls
/// that wait on the disk go through `blocking_io`, which always hands off. Process-wide: a node
/// runs one engine.
pub fn set_inline(inline: bool) {
    INLINE.store(inline, Ordering::Relaxed);
}

/// Run a request path's store calls off the async worker (see the module text), unless
/// `set_inline` chose to run them in place.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if INLINE.load(Ordering::Relaxed) {
        return f();
    }
    blocking_io(f)
}

/// Run `f`, which may wait on the disk or the network (a flush, an fsync, an operator's
/// action), off the async worker whatever the setting. On a multi-threaded runtime's worker
/// this is `block_in_place`; anywhere else (a current-thread runtime, as in `#[tokio::test]`,
/// a blocking thread, a nested call, no runtime) `f` simply runs, as it would have before.
pub fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    if in_multi_thread_runtime() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Inside a multi-threaded runtime: the only place a store call can stall other tasks, and the
/// only place `block_in_place` works.
fn in_multi_thread_runtime() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Most store threads (`store.threads`); set at start by `set_max_threads`.
static MAX_THREADS: AtomicUsize = AtomicUsize::new(64);

/// Bound the store threads `offload` may start (at least one): `store.threads`, resolved by
/// `App` at start. Process-wide, as a node runs one engine; threads already started stay.
pub fn set_max_threads(n: usize) {
    MAX_THREADS.store(n.max(1), Ordering::Relaxed);
}

type Job = Box<dyn FnOnce() + Send>;

/// The store threads: started on demand up to the bound, kept while the process runs (an idle
/// one sleeps on the condvar). A thread that finishes a job takes the next without sleeping.
#[derive(Default)]
struct Pool {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    threads: usize,
    /// Threads asleep on the condvar, and wake-ups sent to them not yet taken: a job starts a
    /// thread only when every sleeper is already spoken for.
    idle: usize,
    notified: usize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `job`; None once a thread will run it. Some(job) back only if no store thread
    /// exists and none could be started (the caller then runs it itself).
    fn submit(&'static self, job: Job) -> Option<Job> {
        let mut q = self.lock();
        q.jobs.push_back(job);
        if q.idle > q.notified {
            q.notified += 1;
            drop(q);
            self.wake.notify_one();
            return None;
        }
        if q.threads < MAX_THREADS.load(Ordering::Relaxed) {
            let started = std::thread::Builder::new()
                .name("snapgate-store".into())
                .spawn(move || self.serve());
            match started {
                Ok(_) => q.threads += 1,
                Err(e) => {
                    tracing::warn!(error = %e, threads = q.threads, "could not start a store thread");
                    if q.threads == 0 {
                        return q.jobs.pop_back();
                    }
                }
            }
        }
        None
    }

    fn serve(&self) {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                drop(q);
                job();
                q = self.lock();
                continue;
            }
            q.idle += 1;
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
            q.notified = q.notified.saturating_sub(1);
        }
    }
}

/// Run `f` on a store thread and await its result: the hot paths' trip off the async worker
/// (see the module text). Inline where `blocking` would run inline (`store.offload = "network"`
/// on sled, a current-thread runtime, no runtime, or already on a store thread). `f` runs in
/// the caller's tracing span; a panic in `f` resumes in the caller, as it would inline.
pub async fn offload<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if INLINE.load(Ordering::Relaxed) || !in_multi_thread_runtime() {
        return f();
    }
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| span.in_scope(f)));
        // The request may be gone (abandoned by the handler timeout): nobody to answer.
        let _ = tx.send(r);
    });
    submit_and_wait(job, rx).await
}

/// `offload` for a trip that writes: when `f` says it wrote (`true`), its result comes back
/// with the result of a group commit queued by the store thread right after `f`, so the
/// request's task wakes once, after the flush, instead of once for the trip and again for the
/// flush (issue 9: at moderate load every wake-up is a context switch). When `f` wrote nothing
/// there is nothing of its own to make durable: `Ok(())` at once, no flush.
///
/// `f` may write terminal records and sandbox transactions only: the flush that answers is
/// `TerminalStore::flush_logged`, which with sled's write-ahead log covers nothing else.
pub async fn offload_durable<T, F>(commit: &GroupCommit, f: F) -> (T, Flushed)
where
    F: FnOnce() -> (T, bool) + Send + 'static,
    T: Send + 'static,
{
    if INLINE.load(Ordering::Relaxed) || !in_multi_thread_runtime() {
        let (v, wrote) = f();
        return match wrote {
            true => (v, commit.durable_logged().await),
            false => (v, Ok(())),
        };
    }
    let span = tracing::Span::current();
    // Counted before it is queued: a flush about to start waits for it (`GroupCommit::expect`).
    let expected = commit.expect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| span.in_scope(f))) {
            // Queued after the trip's writes: the flush that answers covers them.
            Ok((v, true)) => expected.then_logged(move |flushed| {
                let _ = tx.send(Ok((v, flushed)));
            }),
            Ok((v, false)) => {
                let _ = tx.send(Ok((v, Ok(()))));
            }
            Err(panic) => {
                let _ = tx.send(Err(panic));
            }
        }
    });
    submit_and_wait(job, rx).await
}

/// Hand `job` to a store thread and await what it sends on `rx`; a panic it caught resumes
/// here.
async fn submit_and_wait<T>(job: Job, rx: Answer<T>) -> T {
    if let Some(job) = POOL.get_or_init(Pool::default).submit(job) {
        blocking_io(job);
    }
    match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("a store thread dropped its job unanswered"),
    }
}

type Answer<T> = tokio::sync::oneshot::Receiver<std::thread::Result<T>>;

/// A group commit's result, as `offload_durable` hands it back.
pub type Flushed = Result<(), std::sync::Arc<super::StoreError>>;

#[cfg(test)]
mod tests {
    use super::{blocking, offload};

    /// A multi-threaded runtime with one worker: a blocked worker stalls everything on it.
    fn one_worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn runs_without_a_runtime() {
        assert_eq!(blocking(|| 7), 7);
    }

    #[tokio::test]
    async fn runs_inline_on_a_current_thread_runtime() {
        // block_in_place would panic here; the helper must not.
        assert_eq!(blocking(|| 8), 8);
    }

    #[test]
    fn frees_the_only_worker_while_it_blocks() {
        // One worker: a task blocked inside `blocking` must not stop another task from running.
        let rt = one_worker();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocked = rt.spawn(async move {
            blocking(move || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            });
            "released"
        });
        entered_rx.recv().unwrap();
        // Another task runs while the first is still blocked (its release comes after). The
        // answer is awaited on this thread with a bound, so a stalled worker fails the test.
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move { tx.send(42).unwrap() });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(42));
        release_tx.send(()).unwrap();
        assert_eq!(rt.block_on(blocked).unwrap(), "released");
        // Nested calls run inline.
        assert_eq!(
            rt.block_on(async { tokio::spawn(async { blocking(|| blocking(|| 9)) }).await })
                .unwrap(),
            9
        );
    }

    #[test]
    fn offload_frees_the_only_worker_and_runs_nested_calls_in_place() {
        // One worker: while one offloaded call blocks, another task runs, and a second
        // offloaded call is served by another store thread.
        let rt = one_worker();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocked = rt.spawn(offload(move || {
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            std::thread::current().name().map(str::to_owned)
        }));
        entered_rx.recv().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move { tx.send(offload(|| 42).await).unwrap() });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(42));
        release_tx.send(()).unwrap();
        assert_eq!(
            rt.block_on(blocked).unwrap().as_deref(),
            Some("snapgate-store")
        );
        // Nested: already on a store thread, the inner call runs in place.
        let nested = rt.block_on(rt.spawn(offload(|| {
            let here = std::thread::current().id();
            let inner = futures_lite_block_on(offload(move || std::thread::current().id()));
            inner == here
        })));
        assert!(nested.unwrap());
    }

    /// Where `offload_durable` runs its trip: on a store thread under a multi-thread runtime,
    /// in place on a current-thread one.
    #[test]
    fn offload_durable_runs_on_a_store_thread_unless_inline() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let zero = std::time::Duration::ZERO;
        let gc = super::GroupCommit::start(store, zero, zero);
        let name = || std::thread::current().name().map(str::to_owned);
        let rt = one_worker();
        let (on, flushed) = rt
            .block_on({
                let gc = gc.clone();
                rt.spawn(async move { super::offload_durable(&gc, move || (name(), true)).await })
            })
            .unwrap();
        assert_eq!(on.as_deref(), Some("snapgate-store"));
        assert!(flushed.is_ok());
        assert_eq!(gc.flushes(), 1);
        let here = std::thread::current().id();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (same, flushed) = rt.block_on(super::offload_durable(&gc, move || {
            (std::thread::current().id() == here, false)
        }));
        assert!(same, "not run in place on a current-thread runtime");
        assert!(flushed.is_ok());
        assert_eq!(gc.flushes(), 1, "nothing written, nothing flushed");
    }

    #[test]
    fn offload_resumes_a_panic_in_the_caller() {
        let rt = one_worker();
        let r = rt.block_on(rt.spawn(offload(|| -> u8 { panic!("boom") })));
        assert!(r.unwrap_err().is_panic());
        // The store thread survived: the next call is answered.
        assert_eq!(rt.block_on(offload(|| 5)), 5);
    }

    /// Poll a future that is ready at once (an inline `offload`) without a runtime.
    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("not ready at once"),
        }
    }
}
