//! The in-process server fixture: `snapgate::server::run` on a loopback socket, a real sled
//! database and dev keys in a temporary folder, and a `ManualClock` the test moves.

use super::*;
use chrono::{DateTime, Duration, Utc};
use snapgate::app::App;
use snapgate::clock::{Clock, ManualClock};
use snapgate::config::{self, Config, Keys};
use snapgate::store::engine::Engine;
use snapgate::store::SledStore;
use snapgate::token::{self, Claims, TokenError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Start with the dev config, adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak).await
    }

    /// Start on an existing folder (a restart keeps the database and keys).
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let cfg_path = dir.path().join("snapgate.toml");
        if !cfg_path.exists() {
            config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
            use_test_backend(&cfg_path);
        }
        let mut cfg = Config::load(&cfg_path).unwrap();
        tweak(&mut cfg);
        let keys = Keys::load(&cfg.security.keys_file).unwrap();
        let engine = if cfg.store.backend == config::StoreBackend::Postgres {
            Engine::open(&cfg.store).unwrap()
        } else {
            // A stopped server's background tasks may hold sled's file lock for a moment.
            Engine::Sled(open_store_when_free(&cfg.store.path).await)
        };
        let clock = ManualClock::new(t0());
        let app = App::with_engine(cfg, keys, engine, Arc::new(clock.clone()))
            .unwrap()
            .with_config_path(cfg_path.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(snapgate::server::run(app.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            clock,
            app,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stop gracefully and hand back the folder, for a restart. Returns once the store's
    /// file lock is free, so another process (the CLI) can open the folder.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        let TestServer { app, dir, .. } = self;
        let db = app.config.store.path.clone();
        let sled = app.config.store.backend == config::StoreBackend::Sled;
        drop(app);
        if sled {
            drop(open_store_when_free(&db).await);
        }
        dir
    }

    /// An admin listener (metrics, health, operator endpoints) on its own loopback port for
    /// this server's App; returns its base URL.
    pub async fn start_admin(&self) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(snapgate::admin::run(
            self.app.clone(),
            l,
            std::future::pending(),
        ));
        base
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn advance_days(&self, days: i64) {
        self.clock.advance(Duration::days(days));
    }

    /// The stored record of the terminal `serial` (under the dev service key); panics if none.
    pub fn record(&self, serial: &str) -> snapgate::store::TerminalRecord {
        use snapgate::store::{TerminalId, TerminalStore};
        self.app
            .store
            .get(&TerminalId::new(SERVICE_KEY, serial))
            .unwrap()
            .unwrap_or_else(|| panic!("terminal {serial} is not in the store"))
    }

    /// Verify a token with the server's current signing keys at the server's clock, no skew.
    pub fn verify(&self, tok: &str) -> Result<Claims, TokenError> {
        token::verify(&self.app.keys().signing, tok, self.now(), Duration::zero())
            .map(|v| v.claims().clone())
    }

    /// Encrypt `secret` as a terminal holding `ksn` would, with the configured BDK.
    pub fn encrypt_secret(&self, ksn: &str, secret: &str) -> String {
        encrypt_as_terminal(&self.app.keys(), ksn, secret, Usage::Secret)
    }

    /// Encrypt track data as a terminal holding `ksn` would.
    pub fn encrypt_track(&self, ksn: &str, track: &str) -> String {
        encrypt_as_terminal(&self.app.keys(), ksn, track, Usage::Track)
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
        send(self.addr, "POST", path, headers, body.to_owned().into()).await
    }

    /// POST a JSON body (content-type application/json) with extra `headers`.
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> HttpReply {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.post(path, &h, &body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> HttpReply {
        send(self.addr, "GET", path, &[], bytes::Bytes::new()).await
    }

    /// POST a SOAP request with the right content type and action.
    pub async fn soap(&self, path: &str, action: &str, body: &str) -> HttpReply {
        try_soap(self.addr, path, action, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path} ({action}): {e}"))
    }

    /// RegisterTerminal over SOAP with a freshly encrypted secret.
    pub async fn register(&self, ksn: &str, secret: &str) -> HttpReply {
        let es = self.encrypt_secret(ksn, secret);
        self.soap(
            SIS_PATH,
            SIS_ACTION,
            &register_envelope(SERVICE_KEY, VENDOR_ID, &es, ksn),
        )
        .await
    }

    /// Register and return the token, panicking with the reply if it fails.
    pub async fn register_ok(&self, ksn: &str, secret: &str) -> String {
        let r = self.register(ksn, secret).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.text_of("RegisterTerminalResult").expect("a token")
    }

    pub async fn tps(&self, op: &str, body: &str) -> HttpReply {
        self.soap(TPS_PATH, &tps_action(op), body).await
    }

    /// Authorize / AuthorizeAndCapture / ReturnUnlinked with EVO's card as encrypted track 2.
    pub async fn swipe(&self, op: &str, token: &str, ksn_hex: &str, amount: &str) -> HttpReply {
        let track = self.encrypt_track(ksn_hex, TRACK2);
        self.tps(
            op,
            &swipe_envelope(op, token, &track, ksn_hex, amount, "R1"),
        )
        .await
    }

    /// A keyed (no track data) transaction.
    pub async fn keyed(&self, op: &str, token: &str, merchant: &str, amount: &str) -> HttpReply {
        self.tps(op, &keyed_envelope(op, token, merchant, amount))
            .await
    }

    /// Capture / Adjust / Undo / ReturnById on a transaction id; `extra` is inner XML.
    pub async fn follow(&self, op: &str, token: &str, txn_id: &str, extra: &str) -> HttpReply {
        self.tps(op, &follow_envelope(op, token, txn_id, extra))
            .await
    }
}

/// Open a sled folder, waiting (bounded, 10 s) for a stopped server's background tasks to let
/// go of its file lock.
pub async fn open_store_when_free(path: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(path) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("cannot open the store {}: {e}", path.display())
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}
