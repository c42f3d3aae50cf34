//! Test harness: a real snapgate server on a loopback socket with a real sled database in a
//! temporary folder and a manual clock, plus a small HTTP client and request builders.
#![allow(dead_code)]

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use snapgate::app::App;
use snapgate::clock::ManualClock;
use snapgate::config::{self, Config, Keys};
use snapgate::dukpt::{self, Ksn};
use snapgate::soap::{self, Element, XmlLimits};
use snapgate::store::SledStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub const SERVICE_KEY: &str = config::DEV_SERVICE_KEY;
pub const VENDOR_ID: &str = config::DEV_VENDOR_ID;
pub const SIS_NS: &str = "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation";
pub const SIS_ACTION: &str =
    "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation/ICWSServiceInformation/RegisterTerminal";
/// A TDES KSN under the ANSI test BDK's sample key set (device FFFF9876543210E0).
pub const TDES_KSN_BASE: &str = "FFFF9876543210E00000";
/// An AES KSN under the X9.24-3 sample BDK ID 12345678.
pub const AES_KSN_BASE: &str = "123456789012345600000000";

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

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
        }
        let mut cfg = Config::load(&cfg_path).unwrap();
        tweak(&mut cfg);
        let keys = Keys::load(&cfg.security.keys_file).unwrap();
        // A stopped server's background tasks may hold sled's file lock for a moment.
        let mut tries = 0;
        let store = loop {
            match SledStore::open(&cfg.store.path) {
                Ok(s) => break s,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        };
        let clock = ManualClock::new(t0());
        let app = App::new(cfg, keys, store, Arc::new(clock.clone())).unwrap();
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

    /// Stop gracefully and hand back the folder, for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        // Let the App (and so sled's file lock) go before a restart opens the folder again.
        let TestServer { app, dir, .. } = self;
        drop(app);
        dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn advance_days(&self, days: i64) {
        self.clock.advance(Duration::days(days));
    }

    /// Encrypt `secret` as a terminal holding `ksn` would, with the configured BDK.
    pub fn encrypt_secret(&self, ksn: &str, secret: &str) -> String {
        let ksn = Ksn::parse_hex(ksn).unwrap();
        let bdk = self.app.keys.bdk_for(&ksn).expect("a BDK serves this KSN");
        let key = dukpt::working_key(&bdk.bdk, &ksn, &bdk.secret_usage).unwrap();
        hex::encode_upper(dukpt::encrypt_cbc(&key, secret.as_bytes()))
    }

    /// Encrypt track data as a terminal holding `ksn` would.
    pub fn encrypt_track(&self, ksn: &str, track: &str) -> String {
        let ksn = Ksn::parse_hex(ksn).unwrap();
        let bdk = self.app.keys.bdk_for(&ksn).expect("a BDK serves this KSN");
        let key = dukpt::working_key(&bdk.bdk, &ksn, &bdk.track_usage).unwrap();
        hex::encode_upper(dukpt::encrypt_cbc(&key, track.as_bytes()))
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
        send(
            self.addr,
            "POST",
            path,
            headers,
            Bytes::from(body.to_owned()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> HttpReply {
        send(self.addr, "GET", path, &[], Bytes::new()).await
    }

    /// POST a SOAP request with the right content type and action.
    pub async fn soap(&self, path: &str, action: &str, body: &str) -> HttpReply {
        self.post(
            path,
            &[
                ("content-type", "text/xml; charset=utf-8"),
                ("soapaction", action),
            ],
            body,
        )
        .await
    }

    /// RegisterTerminal over SOAP with a freshly encrypted secret.
    pub async fn register(&self, ksn: &str, secret: &str) -> HttpReply {
        let es = self.encrypt_secret(ksn, secret);
        self.soap(
            "/2.1.32/SIS.svc",
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
}

/// A KSN from a base with a counter.
pub fn ksn(base: &str, counter: u32) -> String {
    Ksn::parse_hex(base).unwrap().with_counter(counter).to_hex()
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpReply {
    pub fn xml(&self) -> Element {
        soap::parse_document(
            &self.body,
            &XmlLimits {
                max_depth: 64,
                max_elements: 10_000,
                max_attributes: 64,
            },
        )
        .unwrap_or_else(|e| panic!("reply is not XML ({e}): {}", self.body))
    }

    /// Text of the first element with this local name anywhere in the reply.
    pub fn text_of(&self, name: &str) -> Option<String> {
        find(&self.xml(), name).map(|e| e.text.trim().to_owned())
    }

    /// The fault detail element's (local name, ErrorID), if the reply is a fault.
    pub fn fault(&self) -> Option<(String, u32)> {
        let x = self.xml();
        let detail = find(&x, "detail")?;
        let d = detail.children.first()?;
        let id = d.child_text("ErrorID").ok()??.parse().ok()?;
        Some((d.name.clone(), id))
    }

    pub fn assert_fault(&self, detail: &str, id: u32) {
        assert_eq!(self.status, 500, "{}", self.body);
        assert!(
            self.content_type.starts_with("text/xml"),
            "{}",
            self.content_type
        );
        assert_eq!(self.fault(), Some((detail.to_owned(), id)), "{}", self.body);
    }
}

pub fn find<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    if e.name == name {
        return Some(e);
    }
    e.children.iter().find_map(|c| find(c, name))
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> HttpReply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    HttpReply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Fill a fixture template: `{{NAME}}` placeholders.
pub fn fixture(name: &str, vars: &[(&str, &str)]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut s =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

pub fn register_envelope(sk: &str, vendor: &str, es: &str, ksn: &str) -> String {
    fixture(
        "register_terminal.xml",
        &[
            ("SERVICE_KEY", sk),
            ("VENDOR_ID", vendor),
            ("ENCRYPTED_SECRET", es),
            ("KSN", ksn),
        ],
    )
}

pub const TPS_PATH: &str = "/2.1.32/TPS.svc";
/// EVO's sample card on track 2.
pub const TRACK2: &str = ";5454545454545454=13121010134988000010?";

pub fn tps_action(op: &str) -> String {
    format!(
        "http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing/ICwsTransactionProcessing/{op}"
    )
}

impl TestServer {
    pub async fn tps(&self, op: &str, body: &str) -> HttpReply {
        self.soap(TPS_PATH, &tps_action(op), body).await
    }

    /// Authorize / AuthorizeAndCapture / ReturnUnlinked with EVO's card as encrypted track 2.
    pub async fn swipe(&self, op: &str, token: &str, ksn_hex: &str, amount: &str) -> HttpReply {
        let track = self.encrypt_track(ksn_hex, TRACK2);
        let body = fixture(
            "tps/new_transaction.xml",
            &[
                ("OP", op),
                ("TOKEN", token),
                ("TRACK", &track),
                ("KSN", ksn_hex),
                ("AMOUNT", amount),
                ("REFERENCE", "R1"),
            ],
        );
        self.tps(op, &body).await
    }

    /// A keyed (no track data) transaction.
    pub async fn keyed(&self, op: &str, token: &str, merchant: &str, amount: &str) -> HttpReply {
        let body = fixture(
            "tps/keyed_transaction.xml",
            &[
                ("OP", op),
                ("TOKEN", token),
                ("PAN", "4012888888881881"),
                ("AMOUNT", amount),
                ("MERCHANT", merchant),
            ],
        );
        self.tps(op, &body).await
    }

    /// Capture / Adjust / Undo / ReturnById on a transaction id; `extra` is inner XML.
    pub async fn follow(&self, op: &str, token: &str, txn_id: &str, extra: &str) -> HttpReply {
        let ty = match op {
            "Capture" => "b:BankcardCapture",
            "Adjust" => "t:Adjust",
            "Undo" => "b:BankcardUndo",
            _ => "b:BankcardReturn",
        };
        let body = fixture(
            "tps/follow_up.xml",
            &[
                ("OP", op),
                ("TOKEN", token),
                ("TYPE", ty),
                ("TXN_ID", txn_id),
                ("EXTRA", extra),
            ],
        );
        self.tps(op, &body).await
    }
}

impl HttpReply {
    /// The renewed TerminalAccessToken in the SOAP header, if any.
    pub fn renewed_token(&self) -> Option<String> {
        let x = self.xml();
        let header = x.children.iter().find(|c| c.name == "Header")?;
        let t = header
            .children
            .iter()
            .find(|c| c.name == "TerminalAccessToken")?;
        assert_eq!(
            t.ns.as_deref(),
            Some("http://schemas.evosnap.com/CWS/v2.0/ServiceInformation")
        );
        Some(t.text.trim().to_owned())
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }
}
