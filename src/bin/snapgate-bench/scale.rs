//! `snapgate-bench scale`: how snapgate's store holds a million terminals.
//!
//! Bulk path: `TerminalRecord`s shaped like the ones RegisterTerminal writes, inserted through
//! `TerminalStore::compare_and_swap` (as a first registration does) from a few threads, then one
//! `flush`. Reported: write rate, bytes on disk per terminal (`du`-style, after the flush),
//! this process's RSS, and restart time = `SledStore::open` + reading one record, both here and
//! in a fresh child process (whose RSS is what a restarted server starts with).
//!
//! Records are stored as the server stores them (`store.rs`: names interned, device id packed).
//! To compare, `--sled` opens the database with other sled settings through
//! `SledStore::from_db`. (The `--record compact` experiment that preceded the store's layout is
//! gone: the store now writes that layout itself.)

use crate::load::{machine, Machine};
use crate::sys::{self, ScratchDir};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use snapgate::config::{DEV_SERVICE_KEY, DEV_VENDOR_ID};
use snapgate::dukpt::Ksn;
use snapgate::store::{SledStore, TerminalId, TerminalRecord, TerminalStore};
use snapgate::token::TokenId;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SledVariant {
    /// `SledStore::open`, exactly as the server opens it by default (32 MiB page cache).
    Store,
    /// As `store`, with the former 64 MiB page cache.
    Cache64m,
    /// As `store`, with a 16 MiB page cache.
    Cache16m,
}

impl SledVariant {
    pub fn open(self, path: &Path) -> Result<SledStore, String> {
        let r = match self {
            SledVariant::Store => SledStore::open(path),
            SledVariant::Cache64m => SledStore::open_with_cache(path, 64 << 20),
            SledVariant::Cache16m => SledStore::open_with_cache(path, 16 << 20),
        };
        r.map_err(|e| e.to_string())
    }
}

/// Read and decode every record, a page of `list` at a time; how many there were.
fn scan(store: &SledStore) -> Result<u64, String> {
    let mut n = 0u64;
    let mut after = None;
    loop {
        let page = store
            .list(after.as_ref(), 10_000)
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(*last);
        n += page.len() as u64;
    }
    Ok(n)
}

/// The dev key file's TDES BDK id, as RegisterTerminal records it.
const BDK_ID: &str = "ansi-test-tdes";

#[derive(clap::Args, Serialize, Clone)]
pub struct ScaleArgs {
    /// Terminals to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub terminals: u64,
    /// Writer threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// How to open the database (`store` is what the server does).
    #[arg(long, value_enum, default_value_t = SledVariant::Store)]
    pub sled: SledVariant,
    /// Folder for the scratch database (default: the system temp dir).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Keep the database folder afterwards (its path is printed).
    #[arg(long)]
    pub keep: bool,
    /// Skip the restart in a fresh child process.
    #[arg(long)]
    pub no_child: bool,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct ScaleResult {
    tool: &'static str,
    date: String,
    machine: Machine,
    settings: ScaleArgs,
    terminals: u64,
    /// Encoded record + 16-byte key: the payload the store must hold per terminal.
    payload_bytes_per_terminal: f64,
    write_s: f64,
    writes_per_s: f64,
    flush_ms: f64,
    disk_apparent_bytes: u64,
    disk_allocated_bytes: u64,
    /// `du`-style (allocated) bytes per terminal after the flush.
    bytes_per_terminal: f64,
    rss_after_write_bytes: u64,
    peak_rss_bytes: u64,
    /// Reopen (`SledStore::open`) + read one record, in this process.
    restart_ms: f64,
    child: Option<ReopenReport>,
    disk_allocated_after_restart_bytes: u64,
    goals: Vec<crate::report::Goal>,
}

/// What the fresh child process measured.
#[derive(Serialize, Deserialize, Clone)]
pub struct ReopenReport {
    pub open_ms: f64,
    pub first_get_ms: f64,
    pub restart_ms: f64,
    pub rss_after_open_bytes: u64,
    /// Every record read once (a server that has seen every terminal since it started).
    pub scan_ms: f64,
    pub scanned: u64,
    pub rss_after_scan_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// The key-set ids of the dev key file: 3 x 2^19 distinct devices.
const KEY_SETS: [[u8; 5]; 3] = [
    [0xFF, 0xFF, 0x98, 0x76, 0x54],
    [0x90, 0x10, 0x01, 0x0B, 0x0C],
    [0xFF, 0xFF, 0x00, 0x79, 0x00],
];

/// A record shaped like the one RegisterTerminal writes for terminal `i`.
fn record(i: u64, now_ms: i64) -> (TerminalId, TerminalRecord) {
    let device = (i % u64::from(crate::fleet::MAX_DEVICES)) as u32;
    let mut b = [0u8; 10];
    b[..5].copy_from_slice(&KEY_SETS[(i >> 19) as usize % KEY_SETS.len()]);
    b[5] = (device >> 11) as u8;
    b[6] = (device >> 3) as u8;
    b[7] = ((device & 7) << 5) as u8;
    let ksn = Ksn::Tdes(b).with_counter(1);
    let serial = format!("BENCH{i:07}");
    let day = 86_400_000;
    let rec = TerminalRecord {
        merchant_profile_id: format!("MP{}", i % 100),
        device_serial: serial.clone(),
        service_key: DEV_SERVICE_KEY.into(),
        vendor_id: DEV_VENDOR_ID.into(),
        service_id: None,
        bdk_id: BDK_ID.into(),
        device_id: ksn.device_id(),
        registered_at_ms: now_ms,
        token_id: TokenId::random(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + 90 * day,
        refresh_due_at_ms: now_ms + 30 * day,
        refresh_flag: false,
        pending: None,
        last_counter: ksn.counter(),
        revoked: false,
        recent: Vec::new(),
    };
    (TerminalId::new(DEV_SERVICE_KEY, &serial), rec)
}

pub fn run(args: ScaleArgs) -> Result<(), String> {
    if args.terminals == 0 {
        return Err("--terminals must be at least 1".into());
    }
    let mut dir = ScratchDir::new(args.scratch.as_deref(), "snapgate-scale")?;
    dir.keep = args.keep;
    let db_path = dir.path().join("db");
    let n = args.terminals;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let store = Arc::new(args.sled.open(&db_path)?);
    let payload = {
        // Interns the record's names, as the first registration does.
        let (_, r) = record(n / 2, now_ms);
        (store.encode(&r).map_err(|e| e.to_string())?.len() + 16) as f64
    };
    eprintln!(
        "snapgate-bench scale: {n} terminals into {} (sled: {:?})",
        db_path.display(),
        args.sled
    );

    let written = Arc::new(AtomicU64::new(0));
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(n);
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_prefix("write");
        b
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let threads = args.threads.max(1) as u64;
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, written) = (store.clone(), written.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut i = t;
                while i < n {
                    let (id, rec) = record(i, now_ms);
                    if !store
                        .compare_and_swap(&id, None, &rec)
                        .map_err(|e| e.to_string())?
                    {
                        return Err(format!("terminal {i} was already there"));
                    }
                    written.fetch_add(1, Ordering::Relaxed);
                    i += threads;
                }
                Ok(())
            })
        })
        .collect();
    while !writers.iter().all(|w| w.is_finished()) {
        bar.set_position(written.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(200));
    }
    for w in writers {
        w.join().map_err(|_| "a writer panicked")??;
    }
    let write_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let flush_started = Instant::now();
    store.flush().map_err(|e| e.to_string())?;
    let flush_ms = flush_started.elapsed().as_secs_f64() * 1e3;
    let (rss, _) = sys::memory();
    let (apparent, allocated) = sys::disk_usage(&db_path);
    eprintln!(
        "wrote {n} in {write_s:.1} s ({:.0}/s), flush {flush_ms:.0} ms, {:.1} B/terminal on disk, RSS {} MiB",
        n as f64 / write_s,
        allocated as f64 / n as f64,
        rss >> 20
    );
    drop(store);

    let (probe_id, probe_rec) = record(n - 1, now_ms);
    let restart_started = Instant::now();
    let reopened = args.sled.open(&db_path)?;
    let got = reopened.get(&probe_id).map_err(|e| e.to_string())?;
    let restart_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    // The whole record but its token id, which `record` draws at random.
    let same = |r: TerminalRecord| {
        TerminalRecord {
            token_id: probe_rec.token_id,
            ..r
        } == probe_rec
    };
    if !got.is_some_and(same) {
        return Err("the probe record did not read back after reopening".into());
    }
    drop(reopened);
    let (_, peak) = sys::memory();

    let child = if args.no_child {
        None
    } else {
        Some(spawn_child(&db_path, &args, &probe_id)?)
    };
    let (_, allocated_after) = sys::disk_usage(&db_path);
    let bpt = allocated as f64 / n as f64;
    let clean_rss = child
        .as_ref()
        .map_or(rss, |c| c.rss_after_scan_bytes.max(c.rss_after_open_bytes));
    let restart = child.as_ref().map_or(restart_ms, |c| c.restart_ms);
    let mib = |b: u64| b as f64 / 1048576.0;
    let goals = vec![
        crate::report::Goal::new(
            "<= 300 B/terminal on disk",
            format!("{bpt:.1} B/terminal ({n} terminals)"),
            bpt <= 300.0,
        ),
        crate::report::Goal::new(
            "RSS <= 256 MB",
            format!(
                "writer {:.0} MiB (peak {:.0}); restarted process {}",
                mib(rss),
                mib(peak),
                child.as_ref().map_or("not run".into(), |c| format!(
                    "{:.0} MiB after open, {:.0} MiB after reading every record",
                    mib(c.rss_after_open_bytes),
                    mib(c.rss_after_scan_bytes)
                ))
            ),
            clean_rss <= 256 << 20 && rss <= 256 << 20,
        ),
        crate::report::Goal::new(
            "restart <= 2 s",
            format!(
                "{restart:.0} ms{}",
                if child.is_some() {
                    " (fresh process)"
                } else {
                    ""
                }
            ),
            restart <= 2000.0,
        ),
    ];
    let result = ScaleResult {
        tool: "snapgate-bench scale",
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: machine(),
        settings: args.clone(),
        terminals: n,
        payload_bytes_per_terminal: payload,
        write_s,
        writes_per_s: n as f64 / write_s,
        flush_ms,
        disk_apparent_bytes: apparent,
        disk_allocated_bytes: allocated,
        bytes_per_terminal: bpt,
        rss_after_write_bytes: rss,
        peak_rss_bytes: peak,
        restart_ms,
        child,
        disk_allocated_after_restart_bytes: allocated_after,
        goals,
    };
    print_scale(&result);
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if args.keep {
        eprintln!("kept {}", dir.path().display());
    }
    Ok(())
}

fn print_scale(r: &ScaleResult) {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("terminals               {}", r.terminals);
    println!(
        "bulk write              {:.1} s = {:.0} records/s, flush {:.0} ms",
        r.write_s, r.writes_per_s, r.flush_ms
    );
    println!(
        "on disk                 {:.1} MiB allocated ({:.1} MiB apparent) = {:.1} B/terminal (payload {:.0} B)",
        mib(r.disk_allocated_bytes),
        mib(r.disk_apparent_bytes),
        r.bytes_per_terminal,
        r.payload_bytes_per_terminal
    );
    println!(
        "writer RSS              {:.0} MiB (peak {:.0} MiB)",
        mib(r.rss_after_write_bytes),
        mib(r.peak_rss_bytes)
    );
    println!("restart (same process)  {:.0} ms", r.restart_ms);
    if let Some(c) = &r.child {
        println!(
            "restart (fresh process) {:.0} ms (open {:.0} ms + first get {:.2} ms), RSS {:.0} MiB",
            c.restart_ms,
            c.open_ms,
            c.first_get_ms,
            mib(c.rss_after_open_bytes)
        );
        println!(
            "read every record       {:.0} ms for {}, RSS then {:.0} MiB (peak {:.0} MiB)",
            c.scan_ms,
            c.scanned,
            mib(c.rss_after_scan_bytes),
            mib(c.peak_rss_bytes)
        );
    }
    println!(
        "on disk after restart   {:.1} MiB",
        mib(r.disk_allocated_after_restart_bytes)
    );
    println!("goals:");
    crate::report::print_goals(&r.goals);
}

/// The command-line spelling of a value enum (its serde kebab-case name).
fn flag_value(v: impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn spawn_child(db: &Path, args: &ScaleArgs, probe: &TerminalId) -> Result<ReopenReport, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .arg("scale-reopen")
        .arg("--dir")
        .arg(db)
        .arg("--sled")
        .arg(flag_value(args.sled))
        .arg("--probe")
        .arg(probe.to_hex())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start the child process: {e}"))?;
    if !out.status.success() {
        return Err(format!("the child process failed: {}", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("child output: {e}"))
}

/// The child: reopen, read the probe, then every record; print the measurements as JSON.
pub fn reopen_child(dir: &Path, sled: SledVariant, probe: &str) -> Result<(), String> {
    let id = TerminalId::from_hex(probe).ok_or("--probe must be 32 hex digits")?;
    let started = Instant::now();
    let store = sled.open(dir)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let get_started = Instant::now();
    store
        .get(&id)
        .map_err(|e| e.to_string())?
        .ok_or("the probe record is missing")?;
    let first_get_ms = get_started.elapsed().as_secs_f64() * 1e3;
    let restart_ms = started.elapsed().as_secs_f64() * 1e3;
    let (rss_after_open, _) = sys::memory();
    let scan_started = Instant::now();
    let scanned = scan(&store)?;
    let scan_ms = scan_started.elapsed().as_secs_f64() * 1e3;
    let (rss_after_scan, peak) = sys::memory();
    let report = ReopenReport {
        open_ms,
        first_get_ms,
        restart_ms,
        rss_after_open_bytes: rss_after_open,
        scan_ms,
        scanned,
        rss_after_scan_bytes: rss_after_scan,
        peak_rss_bytes: peak,
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}
