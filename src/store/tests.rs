//! Tests of the store: the record layout through the sled engine, the name table, CAS and group commit.

use super::codec::{self, TAG_INDEXED, TAG_INLINE};
use super::sled::{parse_count, COUNT_KEY, MAX_NAME_BYTES, NAME_PREFIX};
use super::*;
use crate::token::TokenId;
use std::collections::HashMap;
use std::sync::Arc;

/// Open the store at `path` again once an earlier handle is dropped. sled releases its file
/// lock when its background threads notice the drop, a moment later: wait for that, bounded.
pub(crate) fn reopen(path: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(path) {
            Ok(s) => return s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopen {}: {e}", path.display()),
        }
    }
}

pub(super) fn record(serial: &str) -> TerminalRecord {
    TerminalRecord {
        merchant_profile_id: "MP1".into(),
        device_serial: serial.into(),
        service_key: "6B2866C8FD500001".into(),
        vendor_id: "A96A5D589D".into(),
        service_id: None,
        bdk_id: "ansi".into(),
        device_id: "TFFFF9876543210E0".into(),
        registered_at_ms: 1,
        token_id: TokenId([1; 16]),
        issued_at_ms: 1,
        expires_at_ms: 2,
        refresh_due_at_ms: 3,
        refresh_flag: false,
        pending: None,
        last_counter: 1,
        revoked: false,
        recent: Vec::new(),
    }
}

/// A record with every optional field set and extreme values.
fn full_record(serial: &str) -> TerminalRecord {
    TerminalRecord {
        merchant_profile_id: "Merchant Profile 9".into(),
        device_serial: serial.into(),
        service_key: "6B2866C8FD500002".into(),
        vendor_id: "".into(),
        service_id: Some("39C6700001".into()),
        bdk_id: "aes-prod".into(),
        device_id: "A1234567890ABCDEF".into(),
        registered_at_ms: i64::MIN,
        token_id: TokenId([0xA5; 16]),
        issued_at_ms: -1,
        expires_at_ms: i64::MAX,
        refresh_due_at_ms: 0,
        refresh_flag: true,
        pending: Some(PendingToken {
            token_id: TokenId([0x5A; 16]),
            issued_at_ms: 1_790_000_000_000,
            expires_at_ms: 1_797_776_000_000,
        }),
        last_counter: u32::MAX,
        revoked: true,
        recent: (0..4u8)
            .map(|i| RecentSale {
                key: [i; 16],
                id: [0xF0 | i; 16],
            })
            .collect(),
    }
}

/// Encode, decode, encode again: the same record and the same bytes (CAS compares bytes).
fn round_trip(s: &SledStore, r: &TerminalRecord) -> Vec<u8> {
    let bytes = s.encode(r).unwrap();
    let back = s.decode(&bytes).unwrap();
    assert_eq!(&back, r);
    assert_eq!(s.encode(&back).unwrap(), bytes, "{r:?}");
    bytes
}

#[test]
fn records_round_trip_with_every_field_set_or_unset() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path());
    let mut records = vec![record("B1"), full_record("B2")];
    // Device ids that are not `T`/`A` + 16 uppercase hex digits are kept as text.
    for device_id in [
        "TFFFF9876543210E0",
        "tFFFF9876543210E0",
        "Tffff9876543210e0",
        "TFFFF9876543210E",
        "TFFFF9876543210E00",
        "XFFFF9876543210E0",
        "T+FFF9876543210E0",
        "Té",
        "",
    ] {
        let mut r = record("B3");
        r.device_id = device_id.into();
        records.push(r);
    }
    for r in &records {
        let bytes = round_trip(&s, r);
        assert_eq!(bytes[0], TAG_INDEXED);
        let id = TerminalId::new(&r.service_key, &r.device_serial);
        let before = s.get(&id).unwrap();
        assert!(s.compare_and_swap(&id, before.as_ref(), r).unwrap());
        assert_eq!(s.get(&id).unwrap().as_ref(), Some(r));
    }
    // A name too long to intern keeps every name inline.
    let mut r = full_record("B4");
    r.vendor_id = "V".repeat(MAX_NAME_BYTES + 1);
    assert_eq!(round_trip(&s, &r)[0], TAG_INLINE);
}

#[test]
fn a_typical_record_is_76_bytes_against_124_before() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path());
    // As RegisterTerminal writes it, with the dev config (as `snapgate-bench scale` does).
    let now = 1_790_000_000_000; // 2026-09
    let day = 86_400_000;
    let r = TerminalRecord {
        merchant_profile_id: "MP42".into(),
        device_serial: "BENCH0000042".into(),
        service_key: "6B2866C8FD500001".into(),
        vendor_id: "A96A5D589D".into(),
        service_id: None,
        bdk_id: "ansi-test-tdes".into(),
        device_id: "TFFFF9876543210E0".into(),
        registered_at_ms: now,
        token_id: TokenId([0xEE; 16]),
        issued_at_ms: now,
        expires_at_ms: now + 90 * day,
        refresh_due_at_ms: now + 30 * day,
        refresh_flag: false,
        pending: None,
        last_counter: 1,
        revoked: false,
        recent: Vec::new(),
    };
    // tag 1 + merchant 1+4 + serial 1+12 + three name indexes 1 each + no service id 1
    // + device id 1+8 + 4 times x 6 (zigzag varints of ~3.6e12 < 2^42) + token 16
    // + refresh flag, no pending, counter, revoked 1 each = 76.
    assert_eq!(round_trip(&s, &r).len(), 76);
    // The earlier layout: the names (17 + 11 + 15 B) and the device id (18 B) as strings.
    assert_eq!(postcard::to_allocvec(&r).unwrap().len(), 124);
}

#[test]
fn records_in_the_earlier_layout_still_decode_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path());
    // Recent sales came after the earlier layout: its records have none.
    let (a, mut b) = (record("B1"), full_record("B2"));
    b.recent.clear();
    let ids = [TerminalId::new("k", "B1"), TerminalId::new("k", "B2")];
    for (id, r) in ids.iter().zip([&a, &b]) {
        let old = postcard::to_allocvec(r).unwrap();
        assert!(old[0] <= 64, "starts with the merchant profile id's length");
        s.terminals.insert(id.0, old).unwrap();
    }
    assert_eq!(s.get(&ids[0]).unwrap().as_ref(), Some(&a));
    let listed: Vec<_> = s.list(None, 10).unwrap().into_iter().map(|e| e.1).collect();
    assert!(listed.contains(&a) && listed.contains(&b));
    // A stale expectation is still refused, and the record stays as it was.
    let mut stale = b.clone();
    stale.last_counter = 7;
    assert!(!s.compare_and_swap(&ids[1], Some(&stale), &a).unwrap());
    assert_eq!(s.get(&ids[1]).unwrap().as_ref(), Some(&b));
    // An update applies (the bytes differ from what `b` encodes to now) and rewrites it.
    update(&s, &ids[1], |cur| {
        let mut r = cur.unwrap().clone();
        r.last_counter = 9;
        Ok::<_, StoreError>((Some(r), ()))
    })
    .unwrap();
    let stored = s.terminals.get(ids[1].0).unwrap().unwrap();
    assert_eq!(stored[0], TAG_INDEXED);
    assert_eq!(s.get(&ids[1]).unwrap().unwrap().last_counter, 9);
}

#[test]
fn concurrent_interning_gives_one_index_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = SledStore::open(dir.path()).unwrap();
    // A second store on the same database: the in-process lock does not cover it.
    let b = SledStore::from_db(a.db().clone()).unwrap();
    let names: Vec<String> = (0..24).map(|i| format!("vendor-{i}")).collect();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = if t % 2 == 0 { a.clone() } else { b.clone() };
            let names = names.clone();
            std::thread::spawn(move || {
                let mut got = HashMap::new();
                for k in 0..names.len() {
                    let name = &names[(k + 3 * t) % names.len()];
                    got.insert(name.clone(), s.names.index(name, true).unwrap().unwrap());
                }
                got
            })
        })
        .collect();
    let maps: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(maps.iter().all(|m| *m == maps[0]));
    let mut indexes: Vec<u16> = maps[0].values().copied().collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..24).collect::<Vec<u16>>());
    let count = a.names.tree.get(COUNT_KEY).unwrap();
    assert_eq!(parse_count(count.as_deref()).unwrap(), 24);
    assert_eq!(a.names.tree.scan_prefix(NAME_PREFIX).count(), 24);
}

#[test]
fn a_reopen_keeps_the_name_table() {
    let dir = tempfile::tempdir().unwrap();
    let id = TerminalId::new("k", "B2");
    let (bytes, table) = {
        let s = SledStore::open(dir.path()).unwrap();
        s.names.index("first", true).unwrap();
        assert!(s.compare_and_swap(&id, None, &full_record("B2")).unwrap());
        s.flush().unwrap();
        let table = s.names.read().by_name.clone();
        (s.terminals.get(id.0).unwrap().unwrap(), table)
    };
    assert_eq!(table.len(), 4);
    let s = reopen(dir.path());
    assert_eq!(s.names.read().by_name, table);
    assert_eq!(s.get(&id).unwrap(), Some(full_record("B2")));
    // The same record encodes to the same bytes, so the next CAS matches them as they are.
    assert_eq!(s.encode(&full_record("B2")).unwrap(), bytes.to_vec());
    assert_eq!(s.names.index("next", true).unwrap(), Some(4));
}

#[test]
fn a_full_name_table_keeps_new_names_inline() {
    let dir = tempfile::tempdir().unwrap();
    let id = TerminalId::new("k", "B1");
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.names.index("6B2866C8FD500001", true).unwrap();
        // As if 65,536 names had been interned.
        let full = (u32::from(u16::MAX) + 1).to_be_bytes();
        s.names.tree.insert(COUNT_KEY, &full[..]).unwrap();
        s.flush().unwrap();
    }
    let s = reopen(dir.path());
    let r = record("B1");
    assert!(s.compare_and_swap(&id, None, &r).unwrap());
    assert_eq!(s.terminals.get(id.0).unwrap().unwrap()[0], TAG_INLINE);
    assert_eq!(s.names.index("ansi", true).unwrap(), None);
    let mut r2 = r.clone();
    r2.revoked = true;
    assert!(s.compare_and_swap(&id, Some(&r), &r2).unwrap());
    assert_eq!(s.get(&id).unwrap(), Some(r2));
}

#[test]
fn bad_stored_bytes_are_typed_errors() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (
        SledStore::open(d1.path()).unwrap(),
        SledStore::open(d2.path()).unwrap(),
    );
    let mut bytes = s1.encode(&record("B1")).unwrap();
    // Indexes the other database never handed out.
    assert!(matches!(s2.decode(&bytes), Err(StoreError::UnknownName(0))));
    bytes.push(0);
    assert!(matches!(s1.decode(&bytes), Err(StoreError::Corrupt(_))));
    assert!(matches!(
        s1.decode(&bytes[..20]),
        Err(StoreError::Corrupt(_))
    ));
}

const KILLED_CHILD_DIR: &str = "SNAPGATE_STORE_TEST_KILLED_DIR";

/// In a child process (the same test, re-run with `KILLED_CHILD_DIR` set): intern a name on
/// a database with no background flusher, say so, and wait to be killed. In the parent:
/// kill the child once it has interned, reopen, and find the name.
#[test]
fn an_interned_name_survives_a_kill_without_a_flush() {
    use std::io::{BufRead, Write};
    const NAME: &str = "store::tests::an_interned_name_survives_a_kill_without_a_flush";
    if let Some(dir) = std::env::var_os(KILLED_CHILD_DIR) {
        // No background flusher: only interning itself can make the name durable.
        let db = ::sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let s = SledStore::from_db(db).unwrap();
        let i = s.names.index("ansi-test-tdes", true).unwrap();
        println!("interned {i:?}");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "--nocapture", NAME])
        .env(KILLED_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = out
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("interned"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(line.as_deref(), Some("interned Some(0)"));
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.names.read().by_name.get("ansi-test-tdes"), Some(&0));
}

#[test]
fn records_survive_reopen_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let id = TerminalId::new("6B2866C8FD500001", "B1");
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.compare_and_swap(&id, None, &record("B1")).unwrap());
        s.flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_eq!(s.get(&id).unwrap(), Some(record("B1")));
    assert_eq!(s.len(), 1);
}

#[test]
fn compare_and_swap_refuses_a_stale_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let id = TerminalId::new("k", "B1");
    let a = record("B1");
    let mut b = a.clone();
    b.last_counter = 9;
    assert!(s.compare_and_swap(&id, None, &a).unwrap());
    assert!(!s.compare_and_swap(&id, None, &b).unwrap());
    assert!(s.compare_and_swap(&id, Some(&a), &b).unwrap());
    assert!(!s.compare_and_swap(&id, Some(&a), &a).unwrap());
}

#[test]
fn update_from_a_stale_guess_rereads_and_applies_to_the_latest_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let id = TerminalId::new("k", "B1");
    let stale = record("B1");
    s.compare_and_swap(&id, None, &stale).unwrap();
    let mut moved = stale.clone();
    moved.last_counter = 7;
    assert!(s.compare_and_swap(&id, Some(&stale), &moved).unwrap());
    let seen = update_from(&s, &id, Some(stale.clone()), |cur| {
        let mut r = cur.unwrap().clone();
        let before = r.last_counter;
        r.last_counter += 1;
        Ok::<_, StoreError>((Some(r), before))
    })
    .unwrap();
    assert_eq!(seen, 7, "the second attempt saw the moved record");
    assert_eq!(s.get(&id).unwrap().unwrap().last_counter, 8);
}

#[test]
fn update_retries_until_it_applies_on_the_latest_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SledStore::open(dir.path()).unwrap());
    let id = TerminalId::new("k", "B1");
    s.compare_and_swap(&id, None, &record("B1")).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    update(&*s, &id, |cur| {
                        let mut r = cur.unwrap().clone();
                        r.last_counter += 1;
                        Ok::<_, StoreError>((Some(r), ()))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.get(&id).unwrap().unwrap().last_counter, 1 + 8 * 50);
}

#[test]
fn terminal_id_depends_on_service_key_and_serial() {
    assert_eq!(TerminalId::new("a", "b"), TerminalId::new("a", "b"));
    assert_ne!(TerminalId::new("a", "b"), TerminalId::new("a", "c"));
    assert_ne!(TerminalId::new("ab", "c"), TerminalId::new("a", "bc"));
}

#[tokio::test]
async fn group_commit_answers_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn TerminalStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let gc = GroupCommit::start(s, std::time::Duration::ZERO, std::time::Duration::ZERO);
    let waits: Vec<_> = (0..32)
        .map(|_| {
            let gc = gc.clone();
            tokio::spawn(async move { gc.durable().await })
        })
        .collect();
    for w in waits {
        assert!(w.await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn group_commit_close_stops_the_flusher_and_refuses_later_waits() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn TerminalStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let gc = GroupCommit::start(s, std::time::Duration::ZERO, std::time::Duration::ZERO);
    assert!(gc.durable().await.is_ok());
    let other = gc.clone();
    gc.close().await;
    let refused = other.durable().await.unwrap_err();
    assert!(matches!(*refused, StoreError::Closed));
    // A second close, from any clone, returns at once.
    other.close().await;
}

/// What `fuzz/fuzz_targets/record.rs` checks, on every one-byte change and every cut of real
/// records' bytes: decode returns, and what it accepts re-encodes to the same record and bytes.
#[test]
fn damaged_record_bytes_decode_or_fail_without_panicking() {
    fn names(i: [u16; 3]) -> Result<[String; 3], StoreError> {
        Ok(i.map(|n| format!("name-{n}")))
    }
    let (mut accepted, mut refused) = (0, 0);
    for r in [record("B1"), full_record("B2")] {
        let indexed = codec::encode(&r, Some([0, 1, 2]));
        let inline = codec::encode(&r, None);
        let legacy = postcard::to_allocvec(&r).unwrap();
        for good in [indexed, inline, legacy] {
            let mut inputs: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
            for at in 0..good.len() {
                for v in [0x00, 0x01, 0x7F, 0x80, 0xC2, 0xC3, 0xFF] {
                    let mut b = good.clone();
                    b[at] = v;
                    inputs.push(b);
                }
            }
            for b in inputs {
                let mut seen = None;
                let Ok(back) = codec::decode(&b, |i| {
                    seen = Some(i);
                    names(i)
                }) else {
                    refused += 1;
                    continue;
                };
                accepted += 1;
                for indexes in [seen, None] {
                    let bytes = codec::encode(&back, indexes);
                    assert_eq!(codec::decode(&bytes, names).unwrap(), back);
                    assert_eq!(codec::encode(&back, indexes), bytes);
                }
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// A store whose flush waits for the test's go-ahead, to hold the flush thread busy.
struct GatedStore {
    started: std::sync::mpsc::Sender<()>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

use std::sync::Mutex;

impl TerminalStore for GatedStore {
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
        let _ = self.started.send(());
        // A test that drops its `go` makes the held flush panic.
        self.go
            .lock()
            .unwrap()
            .recv()
            .expect("the test let go: this flush panics");
        Ok(())
    }
}

/// One flush thread: while a flush runs, new callers queue; the next flush serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_during_a_flush_share_the_next_one() {
    let (gc, started, go) = gated_commit();
    let first = tokio::spawn({
        let gc = gc.clone();
        async move { gc.durable().await }
    });
    // The first flush is running (and blocked) once `started` fires.
    let started = next_flush(started).await;
    let waits: Vec<_> = (0..10)
        .map(|_| {
            let gc = gc.clone();
            tokio::spawn(async move { gc.durable().await })
        })
        .collect();
    while gc.queued() < 10 {
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap(); // flush 1 ends
    let _started = next_flush(started).await; // flush 2 began, with all ten taken
    assert_eq!(gc.queued(), 0);
    go.send(()).unwrap();
    assert!(first.await.unwrap().is_ok());
    for w in waits {
        assert!(w.await.unwrap().is_ok());
    }
    assert_eq!(gc.flushes(), 2);
    assert_eq!(gc.served(), 11);
    gc.close().await;
}

/// A group commit over a `GatedStore`: each flush reports on `started` and waits for `go`.
fn gated_commit() -> (
    GroupCommit,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let store = Arc::new(GatedStore {
        started: started_tx,
        go: Mutex::new(go_rx),
    });
    let gc = GroupCommit::start(store, std::time::Duration::ZERO, std::time::Duration::ZERO);
    (gc, started, go)
}

/// A `durable` caller on its own task, returned once it waits in the queue.
async fn queued_durable(gc: &GroupCommit) -> tokio::task::JoinHandle<Result<(), Arc<StoreError>>> {
    let before = gc.queued();
    let task = tokio::spawn({
        let gc = gc.clone();
        async move { gc.durable().await }
    });
    while gc.queued() <= before {
        tokio::task::yield_now().await;
    }
    task
}

async fn next_flush(started: std::sync::mpsc::Receiver<()>) -> std::sync::mpsc::Receiver<()> {
    tokio::task::spawn_blocking(move || {
        started.recv().unwrap();
        started
    })
    .await
    .unwrap()
}

/// Every full flush of the real store ends in fdatasync of the write-ahead log and of sled's
/// log, counted by the store; group commit runs one per batch.
#[tokio::test]
async fn each_flush_fdatasyncs_and_group_commit_does_one_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let at_open = s.fdatasyncs();
    assert_eq!(at_open, 1, "the open syncs once");
    let t = s.transactions().unwrap();
    t.insert(&TerminalId([1; 16]), &[2; 16], vec![3; 40], false)
        .unwrap();
    s.flush().unwrap();
    // The full flush syncs the write-ahead log, then sled's log file.
    assert_eq!(s.fdatasyncs(), at_open + 2);
    let gc = GroupCommit::start(
        Arc::new(s.clone()),
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
    );
    let waits: Vec<_> = (0..32)
        .map(|_| {
            let gc = gc.clone();
            tokio::spawn(async move { gc.durable().await })
        })
        .collect();
    for w in waits {
        assert!(w.await.unwrap().is_ok());
    }
    assert_eq!(gc.served(), 32);
    assert!((1..=32).contains(&gc.flushes()));
    assert_eq!(s.fdatasyncs(), at_open + 2 + 2 * gc.flushes());
    gc.close().await;
}

/// `offload_durable`: a trip that wrote is answered by the flush that follows it, never before
/// it ends; a trip that wrote nothing is answered at once; a closed commit answers `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_that_wrote_is_answered_by_the_flush_after_it() {
    let (gc, started, go) = gated_commit();
    let trip = tokio::spawn({
        let gc = gc.clone();
        async move { offload_durable(&gc, || ("sale", true)).await }
    });
    // The store thread queued the flush itself; it runs, held, and the trip is not answered.
    let started = next_flush(started).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!trip.is_finished(), "answered before its flush ended");
    go.send(()).unwrap();
    let (v, flushed) = trip.await.unwrap();
    assert_eq!(v, "sale");
    assert!(flushed.is_ok());
    assert_eq!((gc.flushes(), gc.served()), (1, 1));

    let (v, flushed) = offload_durable(&gc, || (7, false)).await;
    assert_eq!(v, 7);
    assert!(flushed.is_ok());
    assert_eq!(gc.flushes(), 1, "nothing written, nothing flushed");
    drop(started);

    gc.close().await;
    let (_, flushed) = offload_durable(&gc, || ((), true)).await;
    assert!(matches!(flushed, Err(e) if matches!(*e, StoreError::Closed)));
}

/// Gathering: a flush waits for a trip that said it will queue (`expect`), then serves both in
/// one flush; a withdrawn trip ends the wait; the wait is bounded by `gather`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_waits_for_the_trips_in_flight_then_serves_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn TerminalStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let long = std::time::Duration::from_secs(600);
    let gc = GroupCommit::start(s.clone(), std::time::Duration::ZERO, long);

    let trip = gc.expect();
    let first = queued_durable(&gc).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(gc.flushes(), 0, "flushed without the trip in flight");
    let (tx, rx) = tokio::sync::oneshot::channel();
    trip.then(move |r| {
        let _ = tx.send(r);
    });
    assert!(rx.await.unwrap().is_ok());
    assert!(first.await.unwrap().is_ok());
    assert_eq!((gc.flushes(), gc.served()), (1, 2));

    // A trip that wrote nothing withdraws, and the flush goes ahead.
    let trip = gc.expect();
    let second = queued_durable(&gc).await;
    drop(trip);
    assert!(second.await.unwrap().is_ok());
    assert_eq!((gc.flushes(), gc.served()), (2, 3));
    gc.close().await;

    // Bounded: a trip that never lands holds a flush back at most `gather`.
    let gc = GroupCommit::start(
        s,
        std::time::Duration::ZERO,
        std::time::Duration::from_millis(20),
    );
    let _stuck = gc.expect();
    assert!(gc.durable().await.is_ok());
    assert_eq!(gc.flushes(), 1);
    gc.close().await;
}

/// A flush that panics ends the thread; the callers in its batch and those queued behind it are
/// answered `Closed`, not left waiting, and later callers are refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_flush_answers_every_caller_closed() {
    let (gc, started, go) = gated_commit();
    let (tx, rx) = std::sync::mpsc::channel();
    let in_batch = tx.clone();
    gc.then(move |r| in_batch.send(("in the batch", r)).unwrap());
    let _started = next_flush(started).await;
    gc.then(move |r| tx.send(("queued behind", r)).unwrap());
    drop(go); // the held flush panics
    for _ in 0..2 {
        let (who, r) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(
            matches!(r, Err(ref e) if matches!(**e, StoreError::Closed)),
            "{who}: {r:?}"
        );
    }
    let refused = gc.durable().await.unwrap_err();
    assert!(matches!(*refused, StoreError::Closed));
}
