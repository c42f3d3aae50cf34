//! `snapgate-bench pairing`: POS pairings against an in-process node over real TLS sockets.
//!
//! Phases: SOAP Ping latency alone (one keep-alive TLS connection), a burst of concurrent
//! pairings (each its own TLS connection and code), then pairings at a fixed rate with Pings
//! running beside them. The burst runs twice: with the key pool empty (every key generated on
//! demand) and with it full. Reports pairings/s, p50/p99/max and the Ping latency while keys
//! are generated, against the issue's goals.

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use snapgate::app::App;
use snapgate::clock::SystemClock;
use snapgate::config::{self, Config, Keys};
use snapgate::store::SledStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct PairingArgs {
    /// Pairings in each burst (all at once).
    #[arg(long, default_value_t = 20)]
    burst: usize,
    /// Sustained phase: pairings per second.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Sustained phase: seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Key pool size for the pooled phases.
    #[arg(long, default_value_t = 20)]
    pool: usize,
    /// Pings for the baseline.
    #[arg(long, default_value_t = 300)]
    pings: usize,
}

const PING_ACTION: &str =
    "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/IExternallyFacingStandardOperations/Ping";
const PING_BODY: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"/></s:Body></s:Envelope>"#;

struct Node {
    app: Arc<App>,
    main: SocketAddr,
    pairing: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    _dir: crate::sys::ScratchDir,
}

async fn start(pool: usize) -> Result<Node, String> {
    let dir = crate::sys::ScratchDir::new(None, "snapgate-bench-pairing")?;
    let cfg_path = config::init_dev(dir.path(), "127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| e.to_string())?;
    snapgate::tls::init_dev_tls(dir.path()).map_err(|e| e.to_string())?;
    let pl = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let paddr = pl.local_addr().map_err(|e| e.to_string())?;
    snapgate::pairing::init_dev(dir.path(), paddr).map_err(|e| e.to_string())?;
    let mut cfg = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    let p = cfg.pairing.as_mut().ok_or("no [pairing] section")?;
    p.key_pool = pool;
    // The bench reuses loopback for every pairing: no address limit here.
    p.max_failures_per_address = u32::MAX;
    cfg.log.level = "warn".into();
    let keys = Keys::load_for(&cfg.security).map_err(|e| e.to_string())?;
    let store = SledStore::open(&cfg.store.path).map_err(|e| e.to_string())?;
    let ca = dir.path().join("tls/ca.pem");
    let app = App::new(cfg, keys, store, Arc::new(SystemClock))?;
    let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let main = ml.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(snapgate::server::run(
        app.clone(),
        ml,
        std::future::pending::<()>(),
    ));
    tokio::spawn(snapgate::pairing::listener::run(
        app.clone(),
        pl,
        std::future::pending::<()>(),
    ));
    Ok(Node {
        app,
        main,
        pairing: paddr,
        client: client_config(&ca)?,
        _dir: dir,
    })
}

fn client_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(snapgate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(node: &Node, addr: SocketAddr) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("literal");
    let tls = tokio_rustls::TlsConnector::from(node.client.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn post(
    s: &mut Sender,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(u16, Bytes), String> {
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = s
        .send_request(
            req.body(Full::new(Bytes::from(body)))
                .expect("valid request"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One pairing on a fresh TLS connection (as a POS does): latency from connect to bundle.
async fn pair_once(node: Arc<Node>, slot: String) -> Result<Duration, String> {
    let p = node.app.pairing.as_ref().ok_or("pairing is off")?;
    let code = p
        .new_code(Some(&slot), node.app.clock.now())
        .map_err(|e| e.to_string())?;
    let body = serde_json::json!({"posId": slot, "setupCode": code.code.reveal()}).to_string();
    let started = Instant::now();
    let mut s = connect(&node, node.pairing).await?;
    let (status, bundle) = post(&mut s, &format!("/pair/{slot}"), &[], body).await?;
    let took = started.elapsed();
    if status != 200 || !bundle.starts_with(b"-----BEGIN RSA PRIVATE KEY-----") {
        return Err(format!(
            "pairing answered {status}: {}",
            String::from_utf8_lossy(&bundle)
        ));
    }
    Ok(took)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[derive(serde::Serialize)]
struct Lat {
    n: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn lat(h: &Histogram<u64>) -> Lat {
    Lat {
        n: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// Pings on one keep-alive connection until `stop`, into a histogram.
async fn pings_until(node: Arc<Node>, stop: tokio::sync::watch::Receiver<bool>) -> Histogram<u64> {
    let mut h = hist();
    let Ok(mut s) = connect(&node, node.main).await else {
        return h;
    };
    let headers = [
        ("content-type", "text/xml; charset=utf-8"),
        ("soapaction", PING_ACTION),
    ];
    while !*stop.borrow() {
        let t = Instant::now();
        match post(&mut s, "/2.1.32/SIS.svc", &headers, PING_BODY.into()).await {
            Ok((200, _)) => {
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
            _ => break,
        }
        // About 200 Pings/s: steady traffic, not a saturation test.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h
}

async fn burst(node: &Arc<Node>, n: usize, tag: &str) -> Result<(Lat, f64), String> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(pair_once(node.clone(), format!("{tag}/{i}"))))
        .collect();
    let mut h = hist();
    for t in tasks {
        let took = t.await.map_err(|e| e.to_string())??;
        let _ = h.record(took.as_micros() as u64);
    }
    let wall = started.elapsed().as_secs_f64();
    Ok((lat(&h), n as f64 / wall))
}

async fn wait_pool(node: &Node, want: usize) {
    let p = node.app.pairing.as_ref().expect("pairing on");
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.pooled_keys() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn run(args: PairingArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(args))
}

async fn run_async(args: PairingArgs) -> Result<(), String> {
    // Keygen speed alone, on this machine.
    let t = Instant::now();
    for _ in 0..5 {
        snapgate::pairing::ca::generate_key().map_err(|e| e.to_string())?;
    }
    let keygen_ms = t.elapsed().as_secs_f64() * 1000.0 / 5.0;

    let cold = Arc::new(start(0).await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pinger = tokio::spawn(pings_until(cold.clone(), stop_rx));
    tokio::time::sleep(Duration::from_millis(300.max(args.pings as u64 * 5))).await;
    let _ = stop_tx.send(true);
    let ping_alone = lat(&pinger.await.map_err(|e| e.to_string())?);
    let (cold_burst, cold_rate) = burst(&cold, args.burst, "cold").await?;

    let warm = Arc::new(start(args.pool).await?);
    wait_pool(&warm, args.pool).await;
    let (warm_burst, warm_rate) = burst(&warm, args.burst, "warm").await?;

    // Sustained: `rate` pairings/s for `seconds`, Pings beside them.
    wait_pool(&warm, args.pool).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pinger = tokio::spawn(pings_until(warm.clone(), stop_rx));
    let total = (args.rate * args.seconds) as usize;
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(period);
    for i in 0..total {
        tick.tick().await;
        tasks.push(tokio::spawn(pair_once(warm.clone(), format!("steady/{i}"))));
    }
    let mut h = hist();
    for t in tasks {
        let took = t.await.map_err(|e| e.to_string())??;
        let _ = h.record(took.as_micros() as u64);
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let ping_during = lat(&pinger.await.map_err(|e| e.to_string())?);
    let steady = lat(&h);
    let steady_rate = total as f64 / wall;

    let report = serde_json::json!({
        "machine": "shared 2-core machine (other builds running); loopback",
        "rsa2048_keygen_ms_mean": keygen_ms,
        "ping_alone": ping_alone,
        "burst_no_pool": { "latency": cold_burst, "pairings_per_s": cold_rate },
        "burst_pool": { "pool": args.pool, "latency": warm_burst, "pairings_per_s": warm_rate },
        "sustained": { "target_per_s": args.rate, "seconds": args.seconds, "latency": steady,
                       "pairings_per_s": steady_rate },
        "ping_during_sustained": ping_during,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    let goals = [
        (
            format!("burst of {} with pool: p99 < 50 ms", args.burst),
            format!("{:.1} ms", warm_burst.p99_ms),
            warm_burst.p99_ms < 50.0,
        ),
        (
            "sustained >= 10 pairings/s".to_string(),
            format!("{steady_rate:.1}/s (p99 {:.1} ms)", steady.p99_ms),
            steady_rate >= 10.0 * 0.95,
        ),
        (
            "Ping p99 during pairing within 2x of alone (or < 5 ms)".to_string(),
            format!(
                "{:.2} ms vs {:.2} ms",
                ping_during.p99_ms, ping_alone.p99_ms
            ),
            ping_during.p99_ms < (2.0 * ping_alone.p99_ms).max(5.0),
        ),
    ];
    for (goal, measured, pass) in goals {
        println!("{} {goal}: {measured}", if pass { "PASS" } else { "MISS" });
    }
    Ok(())
}
