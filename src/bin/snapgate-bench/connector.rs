//! `snapgate-bench connector`: the Cloud Connector under load, on loopback.
//!
//! The server runs as a child process (`connector-server`, hidden) so that its CPU time and
//! resident memory are its own; the devices and POS run in this process.
//!
//! 1. `sessions`: `--sessions` devices register and connect, as many POS claim them; each device
//!    echoes, each POS keeps `--inflight` messages of `--message-bytes` in flight. Measured:
//!    relayed messages/s (both directions), POS → device → POS round trip percentiles, server CPU
//!    per relayed message.
//! 2. `idle`: `--idle-devices` devices connect and sit; the server's RSS growth per device.
//! 3. `storm`: `--storm` of those devices drop at once (no close frame) and reconnect at once;
//!    the time until all are connected again.

use crate::report::{self, Goal};
use crate::sys::{self, ScratchDir};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use snapgate::config::{self, Config};
use snapgate::store::connector::{ClientRole, Scope, SledConnectorStore};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

const CLIENT_THREADS: &str = "bench-client";

#[derive(clap::Args, Serialize, Clone)]
pub struct ConnectorArgs {
    /// Concurrent sessions (device + POS pairs) in the sessions phase.
    #[arg(long, default_value_t = 1_000)]
    pub sessions: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1_024)]
    pub message_bytes: usize,
    /// Messages each POS keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    /// Seconds measured in the sessions phase (after `--warmup`).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Idle devices for the memory measurement (0 skips it and the storm).
    #[arg(long, default_value_t = 10_000)]
    pub idle_devices: usize,
    /// Devices that drop and reconnect at once (at most `--idle-devices`).
    #[arg(long, default_value_t = 1_000)]
    pub storm: usize,
    /// Worker threads of the server (child) and of the clients (this process).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub scratch: Option<PathBuf>,
}

#[derive(Serialize, Default)]
struct ConnectorResult {
    tool: &'static str,
    date: String,
    cpus: usize,
    note: &'static str,
    settings: Option<ConnectorArgs>,
    setup_pairs_per_s: f64,
    round_trips: u64,
    relayed_messages_per_s: f64,
    rtt: Option<report::Latency>,
    server_cpu_us_per_message: f64,
    client_cpu_s: f64,
    server_rss_before_idle: u64,
    server_rss_after_idle: u64,
    rss_per_idle_device: f64,
    storm_seconds: f64,
    goals: Vec<Goal>,
}

/// The hidden child: serve the folder's config until stdin closes.
pub fn serve_child(dir: &Path, threads: usize) -> Result<(), String> {
    let cfg = Config::load(&dir.join("snapgate.toml")).map_err(|e| e.to_string())?;
    let keys = config::Keys::load_for(&cfg.security).map_err(|e| e.to_string())?;
    let store = snapgate::store::SledStore::open(&cfg.store.path).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .max_blocking_threads(cfg.limits.max_blocking_threads)
        .thread_name("snapgate-server")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        println!("listening {}", l.local_addr().map_err(|e| e.to_string())?);
        let app =
            snapgate::app::App::new(cfg, keys, store, Arc::new(snapgate::clock::SystemClock))?;
        snapgate::server::run(app, l, async {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await
        .map_err(|e| e.to_string())
    })
}

/// Resident memory and CPU seconds of another process.
fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cpu = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            let f: Vec<f64> = r
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: ConnectorArgs) -> Result<(), String> {
    let scratch = ScratchDir::new(args.scratch.as_deref(), "snapgate-bench-connector")?;
    let dir = scratch.path();
    let cfg_path = config::init_dev(dir, "127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| e.to_string())?;
    let mut cfg = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    let conns = 2 * (args.sessions + args.idle_devices) + 1_000;
    cfg.limits.max_connections = conns;
    cfg.log.level = "warn".into();
    cfg.connector.max_sessions = args.sessions + 100;
    cfg.connector.max_devices = args.sessions + args.idle_devices + 100;
    std::fs::write(&cfg_path, toml::to_string(&cfg).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    // Clients, written before the server opens the store.
    let creds = {
        let sled = snapgate::store::SledStore::open(&cfg.store.path).map_err(|e| e.to_string())?;
        let store = SledConnectorStore::open(&sled).map_err(|e| e.to_string())?;
        let mk = |role| {
            let scope = Scope {
                merchant: "bench".into(),
                store: None,
                tsn: None,
            };
            snapgate::connector::oauth::add_client(
                &store,
                None,
                "bench",
                role,
                scope,
                19 * 1024,
                2,
                0,
            )
            .map(|n| (n.record.id, n.secret.to_string()))
        };
        (mk(ClientRole::Device)?, mk(ClientRole::Pos)?)
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args([
            "connector-server",
            "--threads",
            &args.server_threads.to_string(),
            "--dir",
        ])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no child stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let child = Child(child);
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or(format!("the server child said {line:?}"))?;
    let pid = child.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut result = rt.block_on(drive(&args, addr, pid, creds))?;
    result.tool = "snapgate-bench connector";
    result.date = chrono::Utc::now().to_rfc3339();
    result.cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    result.note = "client and server share these cores (and the machine is shared with other work)";
    result.settings = Some(args.clone());
    drop(child);
    println!(
        "connector: {} sessions, {} B messages, {} in flight per POS",
        args.sessions, args.message_bytes, args.inflight
    );
    println!(
        "  setup: {:.0} device+POS pairs/s",
        result.setup_pairs_per_s
    );
    println!(
        "  relayed: {:.0} messages/s ({} round trips)",
        result.relayed_messages_per_s, result.round_trips
    );
    if let Some(l) = &result.rtt {
        println!(
            "  round trip: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    println!(
        "  server CPU: {:.1} us per relayed message; client CPU {:.1} s",
        result.server_cpu_us_per_message, result.client_cpu_s
    );
    if args.idle_devices > 0 {
        println!(
            "  idle: {} devices, server RSS {} -> {} MiB, {:.1} KiB per device",
            args.idle_devices,
            result.server_rss_before_idle >> 20,
            result.server_rss_after_idle >> 20,
            result.rss_per_idle_device / 1024.0
        );
        println!(
            "  storm: {} devices back in {:.2} s",
            args.storm.min(args.idle_devices),
            result.storm_seconds
        );
    }
    report::print_goals(&result.goals);
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

async fn token(addr: SocketAddr, (id, secret): &(String, String)) -> Result<String, String> {
    use base64::Engine;
    use http_body_util::BodyExt;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/oauth2/v1/bench/token")
        .header("host", addr.to_string())
        .header("authorization", format!("Basic {auth}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"grant_type=client_credentials",
        )))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("no token: {v}"))
}

async fn ws(addr: SocketAddr, url: &str, bearer: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {bearer}")
            .parse()
            .map_err(|_| "bad header")?,
    );
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    tokio_tungstenite::client_async(req, tcp)
        .await
        .map(|(w, _)| w)
        .map_err(|e| format!("{url}: {e}"))
}

/// Listener, then the URL it names.
async fn through(addr: SocketAddr, access: &str, path: &str, msg: String) -> Result<Ws, String> {
    let mut l = ws(addr, &format!("ws://{addr}{path}"), access).await?;
    l.send(Message::text(msg))
        .await
        .map_err(|e| e.to_string())?;
    let answer = loop {
        match l.next().await {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(_)) => continue,
            other => return Err(format!("listener: {other:?}")),
        }
    };
    drop(l);
    let v: serde_json::Value = serde_json::from_str(answer.as_str()).map_err(|e| e.to_string())?;
    let (Some(url), Some(jwt)) = (v["url"].as_str(), v["token"].as_str()) else {
        return Err(format!("listener answered {v}"));
    };
    ws(addr, url, jwt).await
}

async fn device(addr: SocketAddr, access: &str, tsn: &str) -> Result<Ws, String> {
    through(
        addr,
        access,
        "/cloud-connector/v1/device-listener",
        format!(r#"{{"type":"register","tsn":"{tsn}"}}"#),
    )
    .await
}

async fn pos(addr: SocketAddr, access: &str, tsn: &str) -> Result<Ws, String> {
    through(
        addr,
        access,
        "/cloud-connector/v1/pos-listener",
        format!(r#"{{"type":"claim","tsn":"{tsn}"}}"#),
    )
    .await
}

/// Run `f(i)` for i in 0..n with at most `conc` at once; all results, in order.
async fn bounded<T, F, Fut>(n: usize, conc: usize, f: F) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let results: Vec<Result<T, String>> = futures_util::stream::iter((0..n).map(f))
        .buffered(conc.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn drive(
    args: &ConnectorArgs,
    addr: SocketAddr,
    pid: u32,
    creds: ((String, String), (String, String)),
) -> Result<ConnectorResult, String> {
    let mut r = ConnectorResult::default();
    let dev_access = token(addr, &creds.0).await?;
    let pos_access = token(addr, &creds.1).await?;
    // Sessions.
    let started = Instant::now();
    let devs = bounded(args.sessions, args.connect_concurrency, |i| {
        let a = dev_access.clone();
        async move { device(addr, &a, &format!("S{i}")).await }
    })
    .await?;
    let poss = bounded(args.sessions, args.connect_concurrency, |i| {
        let a = pos_access.clone();
        async move { pos(addr, &a, &format!("S{i}")).await }
    })
    .await?;
    r.setup_pairs_per_s = args.sessions as f64 / started.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicU64::new(0));
    // One histogram per POS, read after the window (the tasks are aborted, not joined).
    let mut hists = vec![];
    let epoch = Instant::now();
    let mut tasks = vec![];
    for mut d in devs {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(m)) = d.next().await {
                if m.is_binary() && d.send(m).await.is_err() {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }));
    }
    for mut p in poss {
        let hist = Arc::new(Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ));
        hists.push(hist.clone());
        let (stop, recording, trips) = (stop.clone(), recording.clone(), trips.clone());
        let size = args.message_bytes.max(8);
        let inflight = args.inflight.max(1);
        tasks.push(tokio::spawn(async move {
            let msg = |epoch: Instant| {
                let mut b = vec![0x5Au8; size];
                b[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
                Message::binary(b)
            };
            for _ in 0..inflight {
                if p.send(msg(epoch)).await.is_err() {
                    return;
                }
            }
            while let Some(Ok(m)) = p.next().await {
                if let Message::Binary(b) = &m {
                    let sent = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
                    let rtt_us = (epoch.elapsed().as_nanos() as u64).saturating_sub(sent) / 1_000;
                    if recording.load(Ordering::Relaxed) {
                        trips.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = hist.lock() {
                            let _ = h.record(rtt_us.max(1));
                        }
                    }
                    if stop.load(Ordering::Relaxed) || p.send(msg(epoch)).await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let (_, cpu0) = proc_stats(pid);
    let (c0, _) = sys::cpu_split(CLIENT_THREADS);
    recording.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    recording.store(false, Ordering::Relaxed);
    let secs = window.elapsed().as_secs_f64();
    let (_, cpu1) = proc_stats(pid);
    let (c1, _) = sys::cpu_split(CLIENT_THREADS);
    stop.store(true, Ordering::Relaxed);
    r.round_trips = trips.load(Ordering::Relaxed);
    let relayed = 2.0 * r.round_trips as f64;
    r.relayed_messages_per_s = relayed / secs;
    r.server_cpu_us_per_message = (cpu1 - cpu0) * 1e6 / relayed.max(1.0);
    r.client_cpu_s = c1 - c0;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let lat = {
        let mut all =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
        for h in &hists {
            let h = h.lock().map_err(|_| "histogram lock")?;
            all.add(&*h).map_err(|e| e.to_string())?;
        }
        report::Latency::of(&all)
    };
    let p99_ms = lat.p99_ms;
    r.goals.push(Goal::new(
        ">= 50,000 relayed 1 KiB messages/s at 1,000 sessions",
        format!("{:.0}/s", r.relayed_messages_per_s),
        r.relayed_messages_per_s >= 50_000.0,
    ));
    r.goals.push(Goal::new(
        "p99 POS -> device -> POS < 5 ms at 1,000 sessions",
        format!("{p99_ms:.2} ms"),
        p99_ms < 5.0,
    ));
    r.rtt = Some(lat);
    // Idle devices and the storm.
    if args.idle_devices > 0 {
        // Let the closed sessions go.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (before, _) = proc_stats(pid);
        r.server_rss_before_idle = before;
        let idle = bounded(args.idle_devices, args.connect_concurrency, |i| {
            let a = dev_access.clone();
            async move { device(addr, &a, &format!("I{i}")).await }
        })
        .await?;
        // Each device answers pings from a reader task of its own (client memory, not server).
        let mut readers = vec![];
        for mut d in idle {
            readers.push(tokio::spawn(async move {
                while let Some(Ok(_)) = d.next().await {}
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (after, _) = proc_stats(pid);
        r.server_rss_after_idle = after;
        r.rss_per_idle_device = after.saturating_sub(before) as f64 / args.idle_devices as f64;
        r.goals.push(Goal::new(
            "<= 32 KiB server RSS per idle connected device (10,000 devices)",
            format!("{:.1} KiB", r.rss_per_idle_device / 1024.0),
            r.rss_per_idle_device <= 32.0 * 1024.0,
        ));
        // The storm: abort `storm` of them at once, reconnect them all at once.
        let n = args.storm.min(readers.len());
        let t0 = Instant::now();
        for t in readers.iter().take(n) {
            t.abort(); // drops the socket: no close frame
        }
        let back = bounded(n, n, |i| {
            let a = dev_access.clone();
            async move { device(addr, &a, &format!("I{i}")).await }
        })
        .await?;
        r.storm_seconds = t0.elapsed().as_secs_f64();
        r.goals.push(Goal::new(
            "a reconnect storm of 1,000 devices absorbed within 10 s",
            format!("{} devices in {:.2} s", back.len(), r.storm_seconds),
            r.storm_seconds <= 10.0,
        ));
        for t in readers {
            t.abort();
        }
    }
    Ok(r)
}
