//! Group commit: callers that need durability queue here, and one background task runs a single
//! `flush` for everyone queued while the previous flush ran, so the fsync rate does not cap the
//! registration rate. `close` answers whoever is queued, stops the task and waits for it.

use super::{StoreError, TerminalStore};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

type FlushWaiter = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Cheap to clone; every clone feeds the same flusher. `close` on any clone stops it.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<FlushWaiter>,
    stop: Arc<Notify>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl GroupCommit {
    /// Start the flusher on the current tokio runtime.
    pub fn start(store: Arc<dyn TerminalStore>, window: std::time::Duration) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<FlushWaiter>();
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    w = rx.recv() => match w {
                        Some(w) => w,
                        None => return,
                    },
                    _ = stopped.notified() => break,
                };
                if !window.is_zero() {
                    tokio::time::sleep(window).await;
                }
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                flush_for(&store, waiters).await;
            }
            // Closed: refuse new waiters, and answer those already queued with one last flush.
            rx.close();
            let mut waiters = Vec::new();
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            if !waiters.is_empty() {
                flush_for(&store, waiters).await;
            }
        });
        GroupCommit {
            tx,
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Wait until everything written before this call is durable.
    pub async fn durable(&self) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| Arc::new(StoreError::Closed))?;
        rx.await.unwrap_or(Err(Arc::new(StoreError::Closed)))
    }

    /// Stop the flusher once it has answered every waiter queued so far, and wait for it.
    /// Later `durable` calls fail with `StoreError::Closed`. A second call returns at once.
    pub async fn close(&self) {
        self.stop.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// One flush, on a blocking thread, and its result to every waiter.
async fn flush_for(store: &Arc<dyn TerminalStore>, waiters: Vec<FlushWaiter>) {
    let s = store.clone();
    let res = tokio::task::spawn_blocking(move || s.flush())
        .await
        .unwrap_or(Err(StoreError::Closed))
        .map_err(Arc::new);
    for w in waiters {
        let _ = w.send(res.clone());
    }
}
