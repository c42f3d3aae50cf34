//! Acknowledged means durable: every full store flush ends in fdatasync of the write-ahead log
//! and of sled's log file, and a sale's flush (`flush_logged`) in fdatasync of the write-ahead
//! log alone, seen here from the kernel with strace. Its own test binary, because it forks: a fork in a
//! process whose other tests hold sled files open would share their file locks for a moment.

use snapgate::store::{SledStore, TerminalId, TerminalStore, TransactionStore};

/// Seen from the kernel: run this test again under `strace` and count the fdatasync calls on
/// `<dir>/db`, sled's log file, and on `<dir>/wal/<segment>`, the write-ahead log. Skipped
/// when strace is not installed.
#[test]
fn strace_sees_fdatasync_on_sleds_log_file() {
    const CHILD: &str = "SNAPGATE_FDATASYNC_CHILD";
    if let Some(dir) = std::env::var_os(CHILD) {
        // The traced child: open (one sync of each file), one write, three full flushes,
        // another write, three logged flushes.
        let s = SledStore::open(std::path::Path::new(&dir)).unwrap();
        let t = s.transactions().unwrap();
        t.insert(&TerminalId([1; 16]), &[2; 16], vec![3; 40], false)
            .unwrap();
        for _ in 0..3 {
            s.flush().unwrap();
        }
        t.insert(&TerminalId([1; 16]), &[4; 16], vec![5; 40], false)
            .unwrap();
        for _ in 0..3 {
            s.flush_logged().unwrap();
        }
        return;
    }
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("strace is not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sled");
    let trace = dir.path().join("trace");
    let status = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fdatasync,fsync",
            "-e",
            "signal=none",
            "-o",
        ])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "strace_sees_fdatasync_on_sleds_log_file",
            "--test-threads=1",
        ])
        .env(CHILD, &db)
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(&trace).unwrap();
    let calls = whole_calls(&log);
    let synced = |file: std::path::PathBuf| {
        let file = format!("<{}>)", file.display());
        calls
            .iter()
            .filter(|l| l.contains("fdatasync(") && l.contains(&file) && l.ends_with("= 0"))
            .count()
    };
    assert_eq!(synced(db.join("db")), 4, "sled's file, trace:\n{log}");
    let wal = db.join("wal").join(format!("{:020}.wal", 1));
    assert_eq!(synced(wal), 7, "the write-ahead log, trace:\n{log}");
    // The segment's directory entry: the log's folder is fsynced when a segment is created.
    let folder = format!("<{}>)", db.join("wal").display());
    let dir_syncs = calls
        .iter()
        .filter(|l| l.contains("fsync(") && l.contains(&folder) && l.ends_with("= 0"))
        .count();
    assert!(dir_syncs >= 1, "the log's folder is fsynced, trace:\n{log}");
}

/// strace's lines with each call whole: a call that another traced thread interrupted is
/// printed as `PID name(args <unfinished ...>` and later `PID <... name resumed>rest`.
fn whole_calls(log: &str) -> Vec<String> {
    let mut open = std::collections::HashMap::new();
    let mut out = Vec::new();
    for l in log.lines() {
        let pid = l.split_whitespace().next().unwrap_or("");
        if let Some(head) = l.strip_suffix(" <unfinished ...>") {
            open.insert(pid, head);
        } else if let Some(i) = l.find(" resumed>") {
            if let Some(head) = open.remove(pid) {
                out.push(format!("{head}{}", &l[i + " resumed>".len()..]));
            }
        } else {
            out.push(l.to_owned());
        }
    }
    out
}
