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
use snapgate::cws::soap::{self, Element, XmlLimits};
use snapgate::dukpt::{self, Ksn};
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
        let app = App::new(cfg, keys, store, Arc::new(clock.clone()))
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
        let db = app.config.store.path.clone();
        drop(app);
        // Background tasks let go of sled's file lock a moment later: wait for it, so another
        // process (the CLI) can open the folder.
        for _ in 0..200 {
            if SledStore::open(&db).is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
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
        self.encrypt(ksn, secret, false)
    }

    /// Encrypt track data as a terminal holding `ksn` would.
    pub fn encrypt_track(&self, ksn: &str, track: &str) -> String {
        self.encrypt(ksn, track, true)
    }

    fn encrypt(&self, ksn: &str, text: &str, track: bool) -> String {
        let ksn = Ksn::parse_hex(ksn).unwrap();
        let keys = self.app.keys();
        let bdk = keys.bdk_for(&ksn).expect("a BDK serves this KSN");
        let usage = if track {
            &bdk.track_usage
        } else {
            &bdk.secret_usage
        };
        let key = dukpt::working_key(&bdk.bdk, &ksn, usage).unwrap();
        hex::encode_upper(dukpt::encrypt_cbc(&key, text.as_bytes()))
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

/// One request on its own connection; panics if the exchange fails.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> HttpReply {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on its own connection; Err when the server is gone or the exchange breaks.
pub async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpReply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(HttpReply {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A free loopback port: bind port 0 and let it go (callers retry if someone takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

// ---------------------------------------------------------------------------------------------
// TLS clients (tests/tls.rs): rustls via tokio-rustls, HTTP/1.1 via hyper's client.

/// A TLS client config trusting the CA certificates in `ca_file`, presenting the client
/// certificate `(cert_file, key_file)` when given.
pub fn tls_client_config(
    ca_file: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(snapgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    Arc::new(config)
}

/// One HTTP/1.1 request over TLS to `addr` as server name `localhost`. An error (refused
/// handshake, TLS alert, closed connection) comes back with its whole source chain.
pub async fn send_tls(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpReply, String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| error_chain(&e))?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| error_chain(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| error_chain(&e))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", addr.port()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body)).unwrap())
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?
            .to_bytes();
        Ok(HttpReply {
            status,
            content_type,
            body: String::from_utf8(body.to_vec()).unwrap(),
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}
