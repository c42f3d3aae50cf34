//! Store I/O from async code. `blocking(f)` runs `f`, which may block (a sled read that misses
//! the cache, an intern's fsync under the name lock, an operator's flush, a PostgreSQL pool
//! checkout), after the tokio worker it runs on has handed its other tasks to another thread
//! (`tokio::task::block_in_place`): a slow store stalls the request that waits for it, never
//! the requests queued behind it on the same worker (docs/DECISIONS.md, "Issue 13").
//!
//! Not `spawn_blocking`: the closure borrows the request (the parsed envelope, the session),
//! the services' store steps are plain synchronous functions, and `block_in_place` adds no
//! await point, so the handler timeout cannot abandon a store write half-way while it goes on
//! in the background (the commit point in `cws::ops::execute` stays exact).

use std::sync::atomic::{AtomicBool, Ordering};

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
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::blocking;

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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
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
}
