//! The write-ahead log through the sled store, on real folders: what a replay puts back, a
//! torn tail, checkpoints, turning the log off, and which flush a batch of waiters gets.

use super::tests::record;
use super::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn opts(checkpoint_bytes: Option<u64>) -> SledOptions {
    SledOptions {
        wal_checkpoint_bytes: checkpoint_bytes,
        ..SledOptions::default()
    }
}

/// Open once an earlier handle's sled threads have let the folder go (bounded).
fn open(path: &Path, o: &SledOptions) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open_with(path, o) {
            Ok(s) => return s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn segments(db: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(db.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn id(n: u8) -> TerminalId {
    TerminalId::new("6B2866C8FD500001", &format!("W{n}"))
}

/// `<root>/live`, a store closed cleanly after `setup` and a checkpoint, and `<root>/old`, a
/// copy of its folder then: sled's files there predate whatever `live` is given next.
fn live_and_old(
    root: &Path,
    o: &SledOptions,
    setup: impl FnOnce(&SledStore),
) -> (PathBuf, PathBuf) {
    let (live, old) = (root.join("live"), root.join("old"));
    {
        let s = open(&live, o);
        setup(&s);
        s.flush().unwrap();
        s.checkpoint(true).unwrap();
        assert_eq!(s.wal_checkpoints(), 1);
    }
    copy_dir(&live, &old);
    (live, old)
}

/// Give `old` the log `live` has now, in place of its own.
fn copy_log(live: &Path, old: &Path) {
    std::fs::remove_dir_all(old.join("wal")).unwrap();
    copy_dir(&live.join("wal"), &old.join("wal"));
}

/// A sale as the sandbox writes it: a record, and its entry in the terminal's index.
fn sale(t: &dyn TransactionStore, n: u8) {
    t.insert(&id(n), &[n; 16], vec![n; 300], true).unwrap();
}

/// The proof that the log, not sled, carries an acknowledged write: sled's files from before
/// the writes plus the log from after them give back every write. A clean close first, so
/// the copy of sled's folder is whole.
#[test]
fn the_log_puts_back_what_sleds_older_files_lack() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Some(DEFAULT_WAL_CHECKPOINT_BYTES));
    let (live, old) = live_and_old(dir.path(), &o, |s| {
        assert!(s.compare_and_swap(&id(0), None, &record("W0")).unwrap());
    });
    {
        let s = open(&live, &o);
        let t = s.transactions().unwrap();
        let mut r = record("W0");
        r.last_counter = 7;
        assert!(s.compare_and_swap(&id(0), Some(&record("W0")), &r).unwrap());
        assert!(s.compare_and_swap(&id(1), None, &record("W1")).unwrap());
        for n in 1..=3 {
            sale(&t, n);
        }
        assert!(t
            .compare_and_swap(&[2; 16], &[2; 300], vec![9; 20])
            .unwrap());
        t.remove(&[3; 16]).unwrap();
        t.unindex(&id(3), &[3; 16]).unwrap();
        let before = s.fdatasyncs();
        s.flush_logged().unwrap();
        assert_eq!(s.fdatasyncs(), before + 1, "one fdatasync, of the log");
        // Only the log goes to the old folder: sled's files there predate every write above.
        copy_log(&live, &old);
    }
    let s = open(&old, &o);
    let t = s.transactions().unwrap();
    assert_eq!(s.get(&id(0)).unwrap().unwrap().last_counter, 7);
    assert_eq!(s.get(&id(1)).unwrap(), Some(record("W1")));
    assert_eq!(t.get(&[1; 16]).unwrap(), Some(vec![1; 300]));
    assert_eq!(t.get(&[2; 16]).unwrap(), Some(vec![9; 20]));
    assert_eq!(t.get(&[3; 16]).unwrap(), None);
    assert_eq!(t.indexed(&id(1)).unwrap(), vec![[1; 16]]);
    assert!(t.indexed(&id(3)).unwrap().is_empty());
    // Replayed, made durable in sled, and gone: one fresh segment.
    assert_eq!(segments(&old).len(), 1);
}

/// A record cut short by a crash is left out whole; the records before it are replayed, and
/// the store opens.
#[test]
fn a_torn_last_record_is_left_out_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Some(DEFAULT_WAL_CHECKPOINT_BYTES));
    let (live, old) = live_and_old(dir.path(), &o, |_| ());
    {
        let s = open(&live, &o);
        let t = s.transactions().unwrap();
        sale(&t, 1);
        s.flush_logged().unwrap();
        sale(&t, 2);
        s.flush_logged().unwrap();
        copy_log(&live, &old);
    }
    // The last record's final byte never reached the disk: zero where it was.
    let seg = segments(&old).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[last] = 0;
    std::fs::write(&seg, bytes).unwrap();
    let s = open(&old, &o);
    let t = s.transactions().unwrap();
    assert_eq!(t.get(&[1; 16]).unwrap(), Some(vec![1; 300]));
    assert_eq!(
        t.get(&[2; 16]).unwrap(),
        None,
        "the torn sale is not half there"
    );
    assert_eq!(t.indexed(&id(2)).unwrap(), Vec::<TxnId>::new());
}

/// Once a segment outgrows `wal_checkpoint_bytes`, a checkpoint starts a new one and deletes
/// the old: the folder holds one segment, and a reopen finds every write.
#[test]
fn checkpoints_keep_one_segment_and_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Some(4096));
    {
        let s = open(dir.path(), &o);
        let t = s.transactions().unwrap();
        for n in 0..40 {
            sale(&t, n);
            s.flush_logged().unwrap();
            s.checkpoint(false).unwrap();
        }
        // 40 sales of ~350 logged bytes: a checkpoint every ~12.
        assert!(
            (2..=4).contains(&s.wal_checkpoints()),
            "{}",
            s.wal_checkpoints()
        );
        assert_eq!(segments(dir.path()).len(), 1);
    }
    let s = open(dir.path(), &o);
    let t = s.transactions().unwrap();
    for n in 0..40 {
        assert_eq!(t.get(&[n; 16]).unwrap(), Some(vec![n; 300]), "sale {n}");
    }
}

/// `store.wal = false` with a log left behind: it is still replayed, then removed, and the
/// store runs without one.
#[test]
fn a_log_left_behind_is_replayed_when_the_log_is_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Some(DEFAULT_WAL_CHECKPOINT_BYTES));
    let (live, old) = live_and_old(dir.path(), &o, |_| ());
    {
        let s = open(&live, &o);
        sale(&s.transactions().unwrap(), 5);
        s.flush_logged().unwrap();
        copy_log(&live, &old);
    }
    let s = open(&old, &opts(None));
    let t = s.transactions().unwrap();
    assert_eq!(t.get(&[5; 16]).unwrap(), Some(vec![5; 300]));
    assert!(segments(&old).is_empty());
    // Without a log, a logged flush is the full one: sled's flush, then fdatasync.
    sale(&t, 6);
    let before = s.fdatasyncs();
    s.flush_logged().unwrap();
    assert_eq!(s.fdatasyncs(), before + 1);
    assert!(segments(&old).is_empty());
}

/// A replay over a sled state that already holds the writes (a clean stop without a
/// checkpoint) gives each key its last logged value.
#[test]
fn a_replay_over_writes_sled_already_has_ends_on_the_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Some(DEFAULT_WAL_CHECKPOINT_BYTES));
    {
        let s = open(dir.path(), &o);
        let mut r = record("W0");
        assert!(s.compare_and_swap(&id(0), None, &r).unwrap());
        for c in 2..=5 {
            let mut next = r.clone();
            next.last_counter = c;
            assert!(s.compare_and_swap(&id(0), Some(&r), &next).unwrap());
            r = next;
        }
        s.flush().unwrap();
    }
    let s = open(dir.path(), &o);
    assert_eq!(s.get(&id(0)).unwrap().unwrap().last_counter, 5);
}

/// Counts which flush the group commit asks for.
#[derive(Default)]
struct CountingStore {
    full: AtomicU64,
    logged: AtomicU64,
}

impl TerminalStore for CountingStore {
    fn get(&self, _: &TerminalId) -> Result<Option<TerminalRecord>, StoreError> {
        Ok(None)
    }
    fn compare_and_swap(
        &self,
        _: &TerminalId,
        _: Option<&TerminalRecord>,
        _: &TerminalRecord,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn list(
        &self,
        _: Option<&TerminalId>,
        _: usize,
    ) -> Result<Vec<(TerminalId, TerminalRecord)>, StoreError> {
        Ok(Vec::new())
    }
    fn len(&self) -> usize {
        0
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.full.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn flush_logged(&self) -> Result<(), StoreError> {
        self.logged.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A batch of logged waiters only gets the log's flush; a plain `durable` caller (a pairing
/// or connector write, unlogged trees) gets the full flush, whoever shares its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_batch_of_logged_waiters_gets_the_logs_flush() {
    let store = Arc::new(CountingStore::default());
    let gc = GroupCommit::start(
        store.clone(),
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
    );
    gc.durable_logged().await.unwrap();
    assert_eq!(store.logged.load(Ordering::SeqCst), 1);
    assert_eq!(store.full.load(Ordering::SeqCst), 0);
    gc.durable().await.unwrap();
    assert_eq!(store.full.load(Ordering::SeqCst), 1);
    // A store trip's waiter (`offload_durable`) is a logged one.
    let (done, flushed) = offload_durable(&gc, || ("sale", true)).await;
    assert!(flushed.is_ok());
    assert_eq!(done, "sale");
    assert_eq!(store.logged.load(Ordering::SeqCst), 2);
    // Mixed: a window makes both share one flush, which must be the full one.
    gc.close().await;
    let store = Arc::new(CountingStore::default());
    let gc = GroupCommit::start(
        store.clone(),
        std::time::Duration::from_millis(200),
        std::time::Duration::ZERO,
    );
    let (a, b) = tokio::join!(gc.durable_logged(), gc.durable());
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(gc.flushes(), 1, "both in one batch");
    assert_eq!(store.full.load(Ordering::SeqCst), 1);
    assert_eq!(store.logged.load(Ordering::SeqCst), 0);
    gc.close().await;
}

/// A bulk writer that never asks for a flush (the bench's prefill, a long retention sweep at
/// idle) does not grow the buffer or the segment without bound: a full buffer is written out,
/// and a due checkpoint runs from the writer. Every write is there after a reopen.
#[test]
fn a_writer_that_never_flushes_spills_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Some(512 * 1024));
    let n = 3_500u32;
    {
        let s = open(dir.path(), &o);
        let t = s.transactions().unwrap();
        for i in 0..n {
            let mut txn = [0u8; 16];
            txn[..4].copy_from_slice(&i.to_be_bytes());
            t.insert(&id(0), &txn, vec![7; 300], false).unwrap();
        }
        assert!(s.wal_checkpoints() >= 1, "no flush, still checkpointed");
        assert_eq!(segments(dir.path()).len(), 1);
        s.flush_logged().unwrap();
    }
    let s = open(dir.path(), &o);
    let t = s.transactions().unwrap();
    for i in [0, 1, n / 2, n - 1] {
        let mut txn = [0u8; 16];
        txn[..4].copy_from_slice(&i.to_be_bytes());
        assert_eq!(t.get(&txn).unwrap(), Some(vec![7; 300]), "sale {i}");
    }
}

/// A segment is filled with zeros ahead of its writes (an fdatasync then writes data only,
/// not the file's growth): at least 512 KiB at creation, and still at least half of that
/// after ~700 KB of flushed sales, the flush thread's `checkpoint` having refilled it.
#[test]
fn segments_are_filled_with_zeros_ahead_of_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), &opts(Some(DEFAULT_WAL_CHECKPOINT_BYTES)));
    let seg = segments(dir.path()).pop().unwrap();
    let created = std::fs::read(&seg).unwrap();
    assert!(created.len() >= 512 * 1024, "{} bytes", created.len());
    assert!(created[8..].iter().all(|&b| b == 0));
    let t = s.transactions().unwrap();
    for i in 0..2_000u32 {
        let mut txn = [0u8; 16];
        txn[..4].copy_from_slice(&i.to_be_bytes());
        t.insert(&id(1), &txn, vec![9; 300], false).unwrap();
        if i % 50 == 49 {
            s.flush_logged().unwrap();
            s.checkpoint(false).unwrap();
        }
    }
    assert_eq!(segments(dir.path()), vec![seg.clone()], "no checkpoint yet");
    let bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(end > 600_000, "the sales are in this segment: {end}");
    assert!(
        bytes.len() - end >= 256 * 1024,
        "{} zero bytes ahead of {end}",
        bytes.len() - end
    );
}
