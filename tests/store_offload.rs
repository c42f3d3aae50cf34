//! Issue 13, point 3: store I/O must not block the async workers. The server runs on a
//! runtime with ONE worker thread over a store whose next flush or compare-and-swap, once
//! armed, stops until the test releases it (a wrapper over the real sled store). While it is
//! stopped, other requests must still be answered: the ordering is proven with channels (the
//! stall has begun, the other request is answered, only then is the stall released), never
//! with timing.

mod common;
use common::*;
use snapgate::app::App;
use snapgate::clock::ManualClock;
use snapgate::config::{self, Config, Keys};
use snapgate::store::{
    GroupCommit, SledStore, StoreError, TerminalId, TerminalRecord, TerminalStore,
};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PING_ACTION: &str =
    "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/IExternallyFacingStandardOperations/Ping";
const PING_BODY: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"/></s:Body></s:Envelope>"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Flush,
    CompareAndSwap,
}

/// What an armed call does: say it has begun, then wait for the release.
struct Arm {
    call: Call,
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// The real sled store; the armed call (once) stalls inside the store, as a slow disk would.
struct Stalling {
    inner: SledStore,
    arm: Mutex<Option<Arm>>,
}

impl Stalling {
    fn stall_if_armed(&self, call: Call) {
        let arm = {
            let mut a = self.arm.lock().unwrap();
            match a.as_ref() {
                Some(x) if x.call == call => a.take(),
                _ => None,
            }
        };
        if let Some(a) = arm {
            a.entered.send(()).unwrap();
            // Bounded, so a broken test cannot hang the run.
            let _ = a.release.recv_timeout(Duration::from_secs(60));
        }
    }
}

impl TerminalStore for Stalling {
    fn get(&self, id: &TerminalId) -> Result<Option<TerminalRecord>, StoreError> {
        self.inner.get(id)
    }
    fn compare_and_swap(
        &self,
        id: &TerminalId,
        expected: Option<&TerminalRecord>,
        new: &TerminalRecord,
    ) -> Result<bool, StoreError> {
        self.stall_if_armed(Call::CompareAndSwap);
        self.inner.compare_and_swap(id, expected, new)
    }
    fn list(
        &self,
        after: Option<&TerminalId>,
        limit: usize,
    ) -> Result<Vec<(TerminalId, TerminalRecord)>, StoreError> {
        self.inner.list(after, limit)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.stall_if_armed(Call::Flush);
        self.inner.flush()
    }
}

/// A server and its admin listener on a runtime with one worker, over a `Stalling` store.
struct OneWorker {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    admin: SocketAddr,
    store: Arc<Stalling>,
    keys: Keys,
    _dir: tempfile::TempDir,
}

impl OneWorker {
    fn start() -> OneWorker {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("snapgate.toml");
        config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        let keys = Keys::load(&cfg.security.keys_file).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sled = SledStore::open(&cfg.store.path).unwrap();
        let store = Arc::new(Stalling {
            inner: sled.clone(),
            arm: Mutex::new(None),
        });
        let (addr, admin) = rt.block_on(async {
            let server_keys = Keys::load(&cfg.security.keys_file).unwrap();
            let app = App::new(cfg, server_keys, sled, Arc::new(ManualClock::new(t0()))).unwrap();
            // The same App, with every terminal-store call (and group commit) going through
            // the stalling wrapper.
            let mut app = Arc::try_unwrap(app)
                .ok()
                .expect("a fresh App has one owner");
            app.store = store.clone();
            app.commit = GroupCommit::start(store.clone(), Duration::ZERO, Duration::ZERO);
            let app = Arc::new(app);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (addr, admin) = (l.local_addr().unwrap(), a.local_addr().unwrap());
            tokio::spawn(snapgate::admin::run(app.clone(), a, std::future::pending()));
            tokio::spawn(snapgate::server::run(app, l, std::future::pending()));
            (addr, admin)
        });
        OneWorker {
            rt,
            addr,
            admin,
            store,
            keys,
            _dir: dir,
        }
    }

    /// Stall the next `call`; returns (stall has begun, release it).
    fn arm(&self, call: Call) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        *self.store.arm.lock().unwrap() = Some(Arm {
            call,
            entered: entered_tx,
            release: release_rx,
        });
        (entered_rx, release_tx)
    }

    fn register_body(&self, counter: u32, serial: &str) -> String {
        let k = ksn(TDES_KSN_BASE, counter);
        let es = encrypt_as_terminal(&self.keys, &k, &format!("MP1|{serial}"), Usage::Secret);
        register_envelope(SERVICE_KEY, VENDOR_ID, &es, &k)
    }
}

/// A client on its own thread and runtime, so nothing it does runs on the server's worker.
fn client() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Run `request` on another thread; its answer comes back on the returned channel.
fn in_background<T: Send + 'static>(
    request: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || client().block_on(request))
}

/// What the server answers while a store call is stalled: /healthz on the admin listener and
/// a SOAP Ping on the CWS listener (each bounded by `REQUEST_DEADLINE`).
fn answers_while_stalled(srv: &OneWorker) -> (Result<u16, String>, Result<u16, String>) {
    let c = client();
    let health = c
        .block_on(try_send(
            srv.admin,
            "GET",
            "/healthz",
            &[],
            Default::default(),
        ))
        .map(|r| r.status);
    let ping = c
        .block_on(try_soap(srv.addr, SIS_PATH, PING_ACTION, PING_BODY))
        .map(|r| r.status);
    (health, ping)
}

#[test]
fn a_stalled_operator_flush_does_not_stall_other_requests() {
    let srv = OneWorker::start();
    let c = client();
    let body = srv.register_body(1, "OFF1");
    let r = c
        .block_on(try_soap(srv.addr, SIS_PATH, SIS_ACTION, &body))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // The admin revoke flushes inline after its write: stall that flush.
    let (entered, release) = srv.arm(Call::Flush);
    let admin = srv.admin;
    let revoke = in_background(async move {
        let path = format!("/admin/terminals/{SERVICE_KEY}/OFF1/revoke");
        try_send(admin, "POST", &path, &[], Default::default()).await
    });
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the revoke reached its flush");
    let (health, ping) = answers_while_stalled(&srv);
    // Released only now: both answers above came while the flush was still stalled.
    release.send(()).unwrap();
    let revoked = revoke.join().unwrap();
    assert_eq!(
        health,
        Ok(200),
        "/healthz while an operator flush is stalled"
    );
    assert_eq!(
        ping,
        Ok(200),
        "SOAP Ping while an operator flush is stalled"
    );
    let revoked = revoked.expect("the revoke is answered once its flush finishes");
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(revoked.json()["revoked"], true);
    drop(srv.rt);
}

#[test]
fn a_stalled_registration_write_does_not_stall_other_requests() {
    let srv = OneWorker::start();
    // RegisterTerminal's compare-and-swap (where a new name is interned and fsynced under the
    // name lock) stalls.
    let (entered, release) = srv.arm(Call::CompareAndSwap);
    let (addr, body) = (srv.addr, srv.register_body(1, "OFF2"));
    let register = in_background(async move { try_soap(addr, SIS_PATH, SIS_ACTION, &body).await });
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the registration reached its write");
    let (health, ping) = answers_while_stalled(&srv);
    release.send(()).unwrap();
    let registered = register.join().unwrap();
    assert_eq!(
        health,
        Ok(200),
        "/healthz while a registration write is stalled"
    );
    assert_eq!(
        ping,
        Ok(200),
        "SOAP Ping while a registration write is stalled"
    );
    let registered = registered.expect("the registration is answered once its write finishes");
    assert_eq!(registered.status, 200, "{}", registered.body);
    assert!(registered.text_of("RegisterTerminalResult").is_some());
    drop(srv.rt);
}

#[test]
fn a_stalled_sale_write_does_not_stall_other_requests() {
    let srv = OneWorker::start();
    let c = client();
    let body = srv.register_body(1, "OFF3");
    let r = c
        .block_on(try_soap(srv.addr, SIS_PATH, SIS_ACTION, &body))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.text_of("RegisterTerminalResult").unwrap();
    // The sale records its KSN counter with a compare-and-swap: stall it.
    let (entered, release) = srv.arm(Call::CompareAndSwap);
    let k = ksn(TDES_KSN_BASE, 2);
    let track = encrypt_as_terminal(&srv.keys, &k, TRACK2, Usage::Track);
    let sale = swipe_envelope("AuthorizeAndCapture", &token, &track, &k, "10.00", "R1");
    let addr = srv.addr;
    let sold = in_background(async move {
        try_soap(addr, TPS_PATH, &tps_action("AuthorizeAndCapture"), &sale).await
    });
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the sale reached its write");
    let (health, ping) = answers_while_stalled(&srv);
    release.send(()).unwrap();
    let sold = sold.join().unwrap();
    assert_eq!(health, Ok(200), "/healthz while a sale's write is stalled");
    assert_eq!(ping, Ok(200), "SOAP Ping while a sale's write is stalled");
    let sold = sold.expect("the sale is answered once its write finishes");
    assert!(sold.successful(), "{}", sold.body);
}
