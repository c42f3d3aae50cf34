//! Several real `snapgate serve` processes on one real PostgreSQL: what one node does, every
//! node sees; exactly-once across nodes; a node killed or the database stopped under load
//! loses nothing acknowledged.

mod common;
use common::*;

use snapgate::config::{Keys, StoreBackend, DEV_SERVICE_KEY};
use snapgate::dukpt::Ksn;
use snapgate::store::{self, postgres::StoreUrl, StoreError, TerminalId, TerminalStore};
use snapgate::token::TokenId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A terminal with its own KSN device under the ANSI test key set, as in crash.rs.
#[derive(Clone)]
struct Terminal {
    serial: String,
    ksn: Ksn,
}

impl Terminal {
    fn new(device: u16, serial: &str) -> Terminal {
        let ksn = Ksn::parse_hex(&format!("FFFF987654{device:04X}E00000")).unwrap();
        Terminal {
            serial: serial.to_owned(),
            ksn,
        }
    }

    fn id(&self) -> TerminalId {
        TerminalId::new(DEV_SERVICE_KEY, &self.serial)
    }

    async fn register(
        &self,
        addr: SocketAddr,
        keys: &Keys,
        counter: u32,
    ) -> Result<HttpReply, String> {
        let ksn = self.ksn.with_counter(counter).to_hex();
        let es = encrypt_as_terminal(keys, &ksn, &format!("MP1|{}", self.serial), Usage::Secret);
        try_soap(
            addr,
            SIS_PATH,
            SIS_ACTION,
            &register_envelope(SERVICE_KEY, VENDOR_ID, &es, &ksn),
        )
        .await
    }

    async fn swipe(&self, addr: SocketAddr, keys: &Keys, token: &str, counter: u32) -> HttpReply {
        self.swipe_amount(addr, keys, token, counter, "10.00").await
    }

    async fn swipe_amount(
        &self,
        addr: SocketAddr,
        keys: &Keys,
        token: &str,
        counter: u32,
        amount: &str,
    ) -> HttpReply {
        let ksn = self.ksn.with_counter(counter).to_hex();
        let track = encrypt_as_terminal(keys, &ksn, TRACK2, Usage::Track);
        let op = "AuthorizeAndCapture";
        let body = swipe_envelope(op, token, &track, &ksn, amount, &self.serial);
        try_soap(addr, TPS_PATH, &tps_action(op), &body)
            .await
            .unwrap()
    }
}

fn token_id(keys: &Keys, token: &str) -> TokenId {
    snapgate::token::verify(
        &keys.signing,
        token,
        chrono::Utc::now(),
        chrono::Duration::minutes(5),
    )
    .unwrap()
    .claims()
    .token_id
}

/// N nodes on the database `url`, each with its own folder and ports and the same key file
/// (how keys reach every node: the same file, see docs/SCALING.md).
struct Cluster {
    nodes: Vec<Option<BinaryServer>>,
    cfgs: Vec<PathBuf>,
    _dirs: Vec<tempfile::TempDir>,
    keys: Arc<Keys>,
}

impl Cluster {
    async fn start(n: usize, url: &str, tweak: impl Fn(&mut snapgate::config::Config)) -> Cluster {
        let mut dirs = Vec::new();
        let mut cfgs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let cfg = init(dir.path());
            if i > 0 {
                std::fs::copy(
                    dirs_first(&dirs).join("keys.toml"),
                    dir.path().join("keys.toml"),
                )
                .unwrap();
            }
            edit_config(&cfg, |c| {
                c.store.backend = StoreBackend::Postgres;
                c.store.url = Some(StoreUrl::new(url));
                c.store.migrate = true;
                tweak(c);
            });
            if i == 0 {
                copy_dev_folder_to_postgres(&cfg);
            }
            cfgs.push(cfg);
            dirs.push(dir);
        }
        let keys = keys_of(&cfgs[0]);
        let mut nodes = Vec::new();
        for cfg in &cfgs {
            nodes.push(Some(BinaryServer::start(cfg).await));
        }
        Cluster {
            nodes,
            cfgs,
            _dirs: dirs,
            keys,
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().unwrap().addr
    }

    fn store(&self) -> Arc<dyn TerminalStore> {
        open_store(&self.cfgs[0])
    }
}

fn dirs_first(dirs: &[tempfile::TempDir]) -> PathBuf {
    dirs[0].path().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_on_one_node_transact_on_another_and_a_counter_is_accepted_once() {
    let url = fresh_database();
    let c = Cluster::start(2, &url, |_| {}).await;
    let (a, b, keys) = (c.addr(0), c.addr(1), &*c.keys);
    let t = Terminal::new(1, "MN0001");
    let tok = t.register(a, keys, 1).await.unwrap();
    assert_eq!(tok.status, 200, "{}", tok.body);
    let tok = tok.text_of("RegisterTerminalResult").unwrap();
    let sale = t.swipe(b, keys, &tok, 2).await;
    sale.assert_ok();
    let id = sale.text_of("TransactionId").unwrap();
    // Counter 2 was accepted on B: on A the same swipe is a retry (issue 13's idempotency key,
    // terminal + KSN) and answers the stored sale, not a second one; the same counter with
    // another amount is a replay and refused.
    let retry = t.swipe(a, keys, &tok, 2).await;
    assert_eq!(retry.text_of("TransactionId"), Some(id), "{}", retry.body);
    let edited = t.swipe_amount(a, keys, &tok, 2, "99.00").await;
    assert!(
        !edited.successful() && edited.fault().is_some(),
        "{}",
        edited.body
    );
    // The same new counter on both nodes at once: exactly one accepted, each time.
    for counter in 3..8 {
        let (x, y) = tokio::join!(
            t.swipe(a, keys, &tok, counter),
            t.swipe(b, keys, &tok, counter)
        );
        // One sale: both answers name it, or the loser of the race gets the replay fault.
        let ids: Vec<String> = [&x, &y]
            .iter()
            .filter(|r| r.successful())
            .map(|r| r.text_of("TransactionId").unwrap())
            .collect();
        assert!(!ids.is_empty(), "counter {counter}: {}\n{}", x.body, y.body);
        assert!(ids.iter().all(|i| *i == ids[0]), "two sales: {ids:?}");
        for r in [&x, &y].iter().filter(|r| !r.successful()) {
            assert!(r.fault().is_some(), "{}", r.body);
        }
    }
    // Re-registering on B kills the old token on A at once.
    let tok2 = t
        .register(b, keys, 8)
        .await
        .unwrap()
        .text_of("RegisterTerminalResult")
        .unwrap();
    let old = t.swipe(a, keys, &tok, 9).await;
    assert!(!old.successful() && old.fault().is_some(), "{}", old.body);
    t.swipe(a, keys, &tok2, 10).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligible_transactions_on_two_nodes_give_one_renewed_token_promoted_once() {
    let url = fresh_database();
    let c = Cluster::start(2, &url, |_| {}).await;
    let (a, b, keys) = (c.addr(0), c.addr(1), &*c.keys);
    let store = c.store();
    for round in 0..3u16 {
        let t = Terminal::new(100 + round, &format!("RN{round:04}"));
        let tok = t
            .register(a, keys, 1)
            .await
            .unwrap()
            .text_of("RegisterTerminalResult")
            .unwrap();
        // Flag it for a renewed token, as the sweep would.
        store::update(&*store, &t.id(), |cur| {
            let mut r = cur.unwrap().clone();
            r.refresh_flag = true;
            Ok::<_, StoreError>((Some(r), ()))
        })
        .unwrap();
        let (x, y) = tokio::join!(t.swipe(a, keys, &tok, 2), t.swipe(b, keys, &tok, 3));
        let renewed = answered_in_counter_order(&x, &y);
        assert!(!renewed.is_empty(), "no renewed token handed out");
        assert!(
            renewed.iter().all(|r| *r == renewed[0]),
            "two different renewed tokens"
        );
        let new_id = token_id(keys, &renewed[0]);
        let rec = store.get(&t.id()).unwrap().unwrap();
        assert_eq!(
            rec.pending.map(|p| p.token_id),
            Some(new_id),
            "one pending token"
        );
        // Its first use, on both nodes at once: promoted once, both answered.
        let (x, y) = tokio::join!(
            t.swipe(a, keys, &renewed[0], 4),
            t.swipe(b, keys, &renewed[0], 5)
        );
        answered_in_counter_order(&x, &y);
        let rec = store.get(&t.id()).unwrap().unwrap();
        assert_eq!(rec.token_id, new_id);
        assert!(rec.pending.is_none() && !rec.refresh_flag);
        assert!(rec.last_counter >= 5);
    }
}

/// Two swipes sent at once with counters n (x) and n+1 (y): y succeeds; x succeeds too unless
/// y was processed first, when x's lower counter is refused (AuthenticationFault 406), as on
/// one node. Returns the renewed tokens the successful ones carried.
fn answered_in_counter_order(x: &HttpReply, y: &HttpReply) -> Vec<String> {
    y.assert_ok();
    if !x.successful() {
        x.assert_fault("AuthenticationFault", 406);
    }
    [x, y]
        .iter()
        .filter(|r| r.successful())
        .filter_map(|r| r.renewed_token())
        .collect()
}

/// Registrations spread over three nodes; one is SIGKILLed mid-load. The others keep
/// answering, and every registration any node acknowledged is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_nothing_acknowledged() {
    let url = fresh_database();
    let mut c = Cluster::start(3, &url, |_| {}).await;
    let keys = c.keys.clone();
    let acked: Arc<Mutex<Vec<(Terminal, String, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..6usize {
        let node = client % 3;
        let addr = c.addr(node);
        let (keys, acked, stop) = (keys.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut errors_after_answer = 0;
            for n in 0..400u16 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let t = Terminal::new(client as u16 * 1000 + n, &format!("K{client}-{n:04}"));
                match t.register(addr, &keys, 1).await {
                    Ok(r) if r.status == 200 => {
                        let tok = r.text_of("RegisterTerminalResult").unwrap();
                        acked.lock().unwrap().push((t, tok, node));
                    }
                    Ok(r) => panic!("node {node} answered a fault: {}", r.body),
                    // The killed node's clients stop at the first refused connection.
                    Err(_) => {
                        errors_after_answer += 1;
                        break;
                    }
                }
            }
            errors_after_answer
        }));
    }
    let count = |node: Option<usize>| {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| node.is_none_or(|n| a.2 == n))
            .count()
    };
    wait_until("node C acknowledged 10", Duration::from_secs(60), || {
        count(Some(2)) >= 10
    })
    .await;
    c.nodes[2].take().unwrap().kill9();
    let at_kill = count(None);
    // The survivors keep answering.
    wait_until(
        "the survivors answered 30 more",
        Duration::from_secs(60),
        || count(Some(0)) + count(Some(1)) >= at_kill + 30,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut refused = 0;
    for cl in clients {
        refused += cl.await.unwrap();
    }
    assert!(
        refused <= 2,
        "only the killed node's two clients may meet a refused connection"
    );
    let store = c.store();
    let acked = acked.lock().unwrap();
    for (t, tok, node) in acked.iter() {
        let rec = store
            .get(&t.id())
            .unwrap()
            .unwrap_or_else(|| panic!("{} acknowledged by node {node} is lost", t.serial));
        assert_eq!(rec.token_id, token_id(&keys, tok), "{}", t.serial);
    }
}

/// PostgreSQL stopped under load: requests get `s:Server` faults (never a wrong answer, never
/// a hang); started again: the nodes recover by themselves and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_gives_server_faults_then_recovery() {
    let mut pg = Postgres::start();
    let url = pg.fresh_database();
    let c = Cluster::start(2, &url, |c| {
        c.store.statement_timeout_ms = 1_000;
        c.limits.handler_timeout_ms = 3_000;
    })
    .await;
    let keys = c.keys.clone();
    let acked: Arc<Mutex<Vec<(Terminal, String)>>> = Arc::default();
    let faults = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4usize {
        let addr = c.addr(client % 2);
        let (keys, acked, faults, stop) =
            (keys.clone(), acked.clone(), faults.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            for n in 0..2000u16 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let t = Terminal::new(client as u16 * 5000 + n, &format!("O{client}-{n:04}"));
                let started = Instant::now();
                let r = t
                    .register(addr, &keys, 1)
                    .await
                    .expect("every request is answered");
                assert!(
                    started.elapsed() < Duration::from_secs(8),
                    "an answer took too long"
                );
                if r.status == 200 {
                    let tok = r.text_of("RegisterTerminalResult").unwrap();
                    acked.lock().unwrap().push((t, tok));
                } else {
                    assert_eq!(r.status, 500, "{}", r.body);
                    assert!(r.body.contains("s:Server"), "{}", r.body);
                    faults.lock().unwrap().push(t.serial);
                }
            }
        }));
    }
    wait_until("20 acknowledged", Duration::from_secs(60), || {
        acked.lock().unwrap().len() >= 20
    })
    .await;
    pg.stop();
    // Readiness says so while the database is away; liveness does not.
    let live = send(c.addr(0), "GET", "/livez", &[], Default::default()).await;
    assert_eq!(live.status, 200);
    wait_until("8 faults", Duration::from_secs(30), || {
        faults.lock().unwrap().len() >= 8
    })
    .await;
    let ready = send(c.addr(0), "GET", "/readyz", &[], Default::default()).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    pg.restart();
    let after = acked.lock().unwrap().len();
    wait_until("20 more acknowledged", Duration::from_secs(60), || {
        acked.lock().unwrap().len() >= after + 20
    })
    .await;
    let ready = send(c.addr(1), "GET", "/readyz", &[], Default::default()).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    stop.store(true, Ordering::SeqCst);
    for cl in clients {
        cl.await.unwrap();
    }
    let store = c.store();
    for (t, tok) in acked.lock().unwrap().iter() {
        let rec = store
            .get(&t.id())
            .unwrap()
            .unwrap_or_else(|| panic!("{} lost", t.serial));
        assert_eq!(rec.token_id, token_id(&keys, tok));
    }
}

/// Failed registrations for one device spread over two nodes add up: the lockout is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_nodes_lock_the_device_on_every_node() {
    let url = fresh_database();
    let c = Cluster::start(2, &url, |c| {
        c.security.lockout.max_failures_per_device = 3;
        c.security.lockout.max_failures_per_address = 1000;
    })
    .await;
    let (a, b, keys) = (c.addr(0), c.addr(1), &*c.keys);
    let t = Terminal::new(7, "LOCK01");
    let first = t.register(a, keys, 10).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    // Garbage under the device's KSN proves nothing: it counts against the address only
    // (issue 13), so it never locks the genuine terminal out, on any node.
    for (addr, counter) in [(a, 11), (b, 12), (a, 13), (b, 14)] {
        let ksn = t.ksn.with_counter(counter).to_hex();
        let body = register_envelope(SERVICE_KEY, VENDOR_ID, &"00".repeat(16), &ksn);
        let r = try_soap(addr, SIS_PATH, SIS_ACTION, &body).await.unwrap();
        assert_eq!(r.fault().map(|f| f.0), Some("AuthenticationFault".into()));
    }
    // Replays of the genuine secret (counters already used) do count against the device: two
    // on A and one on B, neither node alone saw three.
    for (addr, counter) in [(a, 1), (b, 2), (a, 3)] {
        let r = t.register(addr, keys, counter).await.unwrap();
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(r.fault().map(|f| f.0), Some("AuthenticationFault".into()));
    }
    // Locked on both nodes, fresh counters of the genuine secret included.
    for (addr, counter) in [(b, 20), (a, 21)] {
        let r = t.register(addr, keys, counter).await.unwrap();
        assert_eq!(r.status, 500, "locked out: {}", r.body);
    }
    // Another device from the same address is not affected.
    let other = Terminal::new(8, "LOCK02");
    let r = other.register(b, keys, 1).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The Cloud Connector across two processes on one PostgreSQL (issue 12): a device connected
/// to node A, a POS claiming it at node B is sent to node A (presence in the shared store, the
/// session URL names the owning node), and frames flow both ways. Clients are added with the
/// real `snapgate connector clients add` against the database; both nodes share the connector
/// key file, as docs/CONNECTOR.md says they must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pos_on_one_node_reaches_a_device_held_by_another() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let url = fresh_database();
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("connector.key");
    let c = Cluster::start(2, &url, |c| {
        c.connector.public_url = Some(format!("ws://{}", c.server.listen));
        c.connector.secret_file = Some(key.clone());
        c.connector.hash_memory_kib = 256;
        c.connector.hash_iterations = 1;
        // Heartbeat every 0.5 s: a dead node's presence reads offline 1.5 s after its last.
        c.connector.presence_ttl_ms = 1_500;
    })
    .await;
    let (a, b) = (c.addr(0), c.addr(1));
    let add = |role: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapgate"))
            .args(["connector", "clients", "add", "--role", role])
            .args([
                "--merchant",
                "M1",
                "--store",
                "S1",
                "--domain",
                "test",
                "-c",
            ])
            .arg(&c.cfgs[1])
            .env("SNAPGATE_STORE_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    };
    let token = |node: SocketAddr, (id, secret): (String, String)| async move {
        let body = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
        let r = send(
            node,
            "POST",
            "/oauth2/v1/test/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            body.into(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    };
    let ws = |node: SocketAddr, url: String, bearer: String| async move {
        let mut req = url.as_str().into_client_request().unwrap();
        let auth = format!("Bearer {bearer}").parse().unwrap();
        req.headers_mut().insert("authorization", auth);
        let tcp = tokio::net::TcpStream::connect(node).await.unwrap();
        tokio_tungstenite::client_async(req, tcp).await.unwrap().0
    };
    let answer = |mut l: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
                  msg: serde_json::Value| async move {
        l.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), l.next()).await;
            if let Ok(Some(Ok(Message::Text(t)))) = m {
                return serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap();
            }
            assert!(matches!(m, Ok(Some(Ok(_)))), "listener ended: {m:?}");
        }
    };
    // Tokens from either node verify on the other (one key file).
    let dev = token(b, add("device")).await;
    let pos = token(a, add("pos")).await;
    // The device registers and connects at node A.
    let listener = ws(
        a,
        format!("ws://{a}/cloud-connector/v1/device-listener"),
        dev,
    )
    .await;
    let reg = answer(
        listener,
        serde_json::json!({"type": "register", "tsn": "MN-T1"}),
    )
    .await;
    assert_eq!(reg["type"], "connection", "{reg}");
    let dev_url = reg["url"].as_str().unwrap().to_owned();
    assert!(dev_url.starts_with(&format!("ws://{a}/")), "{dev_url}");
    let mut device = ws(a, dev_url, reg["token"].as_str().unwrap().into()).await;
    // The POS claims it at node B and is sent to node A.
    let claim = serde_json::json!({"type": "claim", "tsn": "MN-T1", "takeover": false});
    let mut session = None;
    for _ in 0..50 {
        // Presence is written as the device connects; give that write a moment, bounded.
        let listener = ws(
            b,
            format!("ws://{b}/cloud-connector/v1/pos-listener"),
            pos.clone(),
        )
        .await;
        let s = answer(listener, claim.clone()).await;
        if s["type"] == "session" {
            session = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = session.expect("the claim at node B never found the device");
    let pos_url = s["url"].as_str().unwrap().to_owned();
    assert!(
        pos_url.starts_with(&format!("ws://{a}/")),
        "sent to node A: {pos_url}"
    );
    let mut pos_ws = ws(a, pos_url, s["token"].as_str().unwrap().into()).await;
    // Opaque frames both ways, in order.
    async fn next(w: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Message {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
                Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return m,
                Ok(Some(Ok(_))) => continue, // pings
                other => panic!("expected a data frame, got {other:?}"),
            }
        }
    }
    for i in 0..20u8 {
        pos_ws.send(Message::binary(vec![i; 100])).await.unwrap();
        assert_eq!(next(&mut device).await, Message::binary(vec![i; 100]));
        device
            .send(Message::text(format!("ack {i}")))
            .await
            .unwrap();
        assert_eq!(next(&mut pos_ws).await, Message::text(format!("ack {i}")));
    }
    // Node A dies holding the device. Its presence row still names it until the heartbeat
    // lapses; then a claim at node B says the device is offline instead of sending the POS to a
    // dead node. Polled, bounded: separate processes cannot share an injected clock.
    let mut c = c;
    c.nodes[0].take().unwrap().kill9();
    drop((device, pos_ws));
    let mut last = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let listener = ws(
            b,
            format!("ws://{b}/cloud-connector/v1/pos-listener"),
            pos.clone(),
        )
        .await;
        last = answer(listener, claim.clone()).await;
        if last["error"] == "device_offline" {
            break;
        }
        assert_eq!(
            last["type"], "session",
            "before the lapse: sent to A; {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last["error"], "device_offline", "{last}");
    assert_eq!(last["status"], 409, "{last}");
}
