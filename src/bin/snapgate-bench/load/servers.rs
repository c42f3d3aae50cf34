//! The servers a load run talks to: snapgate in this process (dev config, real sled in a
//! scratch folder) or `--target` (one node or several), the forward-mode snapgate and its fast
//! upstream, the plain-hyper baseline; and the prefill of stored transactions.

use super::LoadArgs;
use crate::baseline;
use crate::sys::ScratchDir;
use hyper::header::HeaderValue;
use snapgate::app::App;
use snapgate::clock::SystemClock;
use snapgate::config::{self, Config, Keys};
use snapgate::cws::card::Card;
use snapgate::cws::processor::sandbox::{NewTxn, Sandbox};
use snapgate::store::{SledStore, TerminalId, TerminalStore};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Stops the in-process snapgate, and its task (which flushes the store on the way out).
pub(super) type ServerHandle = (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
);

/// Where snapgate runs for this load run.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    /// Further nodes (`--target A,B`).
    pub(super) more: Vec<SocketAddr>,
    pub(super) keys: Keys,
    /// Set when snapgate runs in this process: stop it with this.
    pub(super) stop: Option<ServerHandle>,
    /// Set when snapgate runs in this process: its store and config, for the prefill and the
    /// forward-mode server.
    pub(super) local: Option<Local>,
    pub(super) _scratch: ScratchDir,
}

pub(super) struct Local {
    pub(super) store: SledStore,
    pub(super) cfg_path: PathBuf,
}

/// Parse `--target` and refuse anything that is not a loopback address.
pub fn loopback_target(url: &str) -> Result<SocketAddr, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("--target {url}: {e}"))?;
    match uri.scheme_str() {
        None | Some("http") => {}
        Some(s) => {
            return Err(format!(
                "--target {url}: scheme {s} is not supported (http only)"
            ))
        }
    }
    let host = uri.host().ok_or(format!("--target {url}: no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("--target {url}: the host must be an IP address or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--target {url}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed"
        ));
    }
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)))
}

pub(super) fn external(
    url: &str,
    keys: Option<PathBuf>,
    scratch: Option<&std::path::Path>,
) -> Result<Server, String> {
    let mut addrs = url.split(',').map(|u| loopback_target(u.trim()));
    let addr = addrs.next().ok_or("--target is empty")??;
    let more = addrs.collect::<Result<Vec<_>, _>>()?;
    let dir = ScratchDir::new(scratch, "snapgate-bench")?;
    let keys = match keys {
        Some(p) => Keys::load(&p).map_err(|e| e.to_string())?,
        None => {
            // The dev key file's BDKs are the public test ones; its signing key is not needed.
            let p = dir.path().join("keys.toml");
            config::write_private(&p, &config::dev_key_file()).map_err(|e| e.to_string())?;
            Keys::load(&p).map_err(|e| e.to_string())?
        }
    };
    Ok(Server {
        addr,
        more,
        keys,
        stop: None,
        local: None,
        _scratch: dir,
    })
}

pub(super) fn in_process(rt: &Runtime, args: &LoadArgs) -> Result<Server, String> {
    let dir = ScratchDir::new(args.scratch.as_deref(), "snapgate-bench")?;
    let cfg_path = config::init_dev(dir.path(), "127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| e.to_string())?;
    let mut cfg = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    cfg.store.offload = match args.offload.as_str() {
        "always" => config::StoreOffload::Always,
        "network" => config::StoreOffload::Network,
        o => return Err(format!("--offload {o}: always or network")),
    };
    cfg.store.threads = args.store_threads;
    cfg.store.group_commit_window_us = args.commit_window_us;
    if let Some(g) = args.gather_us {
        cfg.store.group_commit_gather_us = g;
    }
    if args.cache_mb > 0 {
        cfg.store.cache_mb = args.cache_mb;
    }
    if let Some(w) = args.wal {
        cfg.store.wal = w;
    }
    if let Some(n) = args.ipek_cache_entries {
        cfg.security.ipek_cache_entries = n as usize;
    }
    if args.server_log != "off" {
        let file =
            std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
        let filter = tracing_subscriber::EnvFilter::try_new(&args.server_log)
            .map_err(|e| format!("--server-log: {e}"))?;
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    }
    let server_keys = Keys::load_for(&cfg.security).map_err(|e| e.to_string())?;
    let keys = Keys::load(&cfg.security.keys_file).map_err(|e| e.to_string())?;
    let store = SledStore::open_with(&cfg.store.path, &cfg.store.sled_options())
        .map_err(|e| e.to_string())?;
    let local = Local {
        store: store.clone(),
        cfg_path,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let task = rt.spawn(async move {
        let app = App::new(cfg, server_keys, store, Arc::new(SystemClock))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
        snapgate::server::run(app, listener, async move {
            let _ = rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let addr = match addr_rx.recv() {
        Ok(a) => a?,
        Err(_) => {
            return Err(match rt.block_on(task) {
                Ok(Err(e)) => format!("snapgate did not start: {e}"),
                _ => "snapgate did not start".into(),
            })
        }
    };
    Ok(Server {
        addr,
        more: Vec::new(),
        keys,
        stop: Some((tx, task)),
        local: Some(local),
        _scratch: dir,
    })
}

/// Write `n` captured sandbox transactions, shaped like the bench's sales, from 2 threads,
/// through the sandbox itself (time-ordered ids, real records), then flush.
pub(super) fn prefill(store: &SledStore, n: u64) -> Result<(), String> {
    let txns = store.transactions().map_err(|e| e.to_string())?;
    let sandbox = Sandbox::new(Arc::new(txns));
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|w| {
                let sandbox = sandbox.clone();
                s.spawn(move || -> Result<(), String> {
                    for i in (w..n).step_by(2) {
                        let term = TerminalId::new("bench", &format!("PREFILL{}", i % 50_000));
                        let req = NewTxn {
                            amount_cents: 1000,
                            card: Card {
                                masked_pan: "476173XXXXXX0010".into(),
                                card_type: "Visa",
                                expire: "2512".into(),
                            },
                            reference: Some(format!("prefill-{i}")),
                            id: None,
                        };
                        sandbox
                            .authorize(&term, &req, true, chrono::Utc::now())
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "prefill panicked".to_string())?)
    })?;
    store.flush().map_err(|e| e.to_string())
}

/// A second snapgate on the same store (same terminals, keys and tokens) in forward mode,
/// relaying to `upstream`, on the server runtime.
pub(super) async fn start_forward(
    rt: &Runtime,
    l: &Local,
    upstream: SocketAddr,
) -> Result<BaselineHandle, String> {
    let mut cfg = Config::load(&l.cfg_path).map_err(|e| e.to_string())?;
    cfg.processor.mode = config::ProcessorMode::Forward;
    cfg.processor.upstream_url = Some(format!("http://{upstream}/"));
    // A loopback upstream in this process: plain HTTP is allowed for it alone (issue 13
    // refuses it otherwise), and it gets its own session token, never the terminal's.
    cfg.processor.allow_insecure_upstream = true;
    cfg.processor.upstream_session_token = Some("snapgate-bench-upstream".into());
    let keys = Keys::load_for(&cfg.security).map_err(|e| e.to_string())?;
    let store = l.store.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let task = rt.spawn(async move {
        let app = match App::new(cfg, keys, store, Arc::new(SystemClock)) {
            Ok(a) => a,
            Err(e) => {
                let _ = addr_tx.send(Err(e));
                return;
            }
        };
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                let _ = addr_tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
        let _ = snapgate::server::run(app, listener, async move {
            let _ = rx.await;
        })
        .await;
    });
    let addr = addr_rx
        .await
        .map_err(|_| "the forward-mode snapgate did not start".to_string())??;
    Ok((tx, task, addr))
}

pub(super) type BaselineHandle = (oneshot::Sender<()>, tokio::task::JoinHandle<()>, SocketAddr);

/// Start the baseline server on the server runtime, on 127.0.0.1:0.
pub(super) async fn start_baseline(
    rt: &Runtime,
    body: bytes::Bytes,
    ctype: HeaderValue,
) -> Result<BaselineHandle, String> {
    spawn_server(rt, "the baseline server", move |listener, stop| {
        baseline::serve(listener, body, ctype, stop)
    })
    .await
}

/// The relay baseline (`baseline::serve_relay`) in front of `upstream`, with the client and
/// the upstream timeout the forward-mode snapgate gets from the same config.
pub(super) async fn start_relay(
    rt: &Runtime,
    l: &Local,
    upstream: SocketAddr,
    ctype: HeaderValue,
) -> Result<BaselineHandle, String> {
    let cfg = Config::load(&l.cfg_path).map_err(|e| e.to_string())?;
    let fwd = snapgate::cws::processor::forward::Forward::new(
        &format!("http://{upstream}/"),
        std::time::Duration::from_millis(cfg.processor.upstream_timeout_ms),
        None,
    )?;
    spawn_server(rt, "the relay baseline", move |listener, stop| {
        baseline::serve_relay(listener, fwd, ctype, stop)
    })
    .await
}

/// Bind 127.0.0.1:0 on the server runtime and run `serve(listener, stop)` there until the
/// handle's sender fires; `what` names the server in the error if it does not start.
async fn spawn_server<F, Fut>(rt: &Runtime, what: &str, serve: F) -> Result<BaselineHandle, String>
where
    F: FnOnce(tokio::net::TcpListener, StopSignal) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let task = rt.spawn(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                let _ = addr_tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
        let stop: StopSignal = Box::pin(async move {
            let _ = rx.await;
        });
        serve(listener, stop).await;
    });
    let addr = addr_rx
        .await
        .map_err(|_| format!("{what} did not start"))??;
    Ok((tx, task, addr))
}

/// Resolves when the server is told to stop.
type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
