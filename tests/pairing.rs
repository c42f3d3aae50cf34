//! POS pairing end to end, with real tools on loopback: curl does the exchange and a SOAP call
//! over mTLS with the certificate it got, openssl checks the bundle (chain, key, dates, names)
//! and is refused by the mTLS listener without a certificate, with a foreign one and with a
//! replaced one; Python `websockets` pairs over WSS. Codes come from the service (as the
//! operator's CLI gets them) and time moves on the test's manual clock.

mod common;

use common::*;
use snapgate::pairing::{self, PairingConfig};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

const PING_ACTION: &str =
    "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/IExternallyFacingStandardOperations/Ping";
const PING_BODY: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"/></s:Body></s:Envelope>"#;

/// A node with TLS (dev CA), mTLS on the main listener (dev terminal CA plus the pairing CA)
/// and the pairing listener on its own port.
struct Node {
    srv: TestServer,
    /// The node's clock at start: the wall clock (minus `back`), so that certificates it issues
    /// are valid for openssl, curl and rustls, which check them against the real time.
    start: chrono::DateTime<chrono::Utc>,
    pairing: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Node {
    async fn start(tweak: impl FnOnce(&mut PairingConfig)) -> Node {
        Self::start_back(chrono::Duration::zero(), tweak).await
    }

    async fn start_back(back: chrono::Duration, tweak: impl FnOnce(&mut PairingConfig)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        snapgate::config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        snapgate::tls::init_dev_tls(dir.path()).unwrap();
        pairing::ca::write_dev_ca(&dir.path().join("tls")).unwrap();
        let base = dir.path().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paddr = listener.local_addr().unwrap();
        let srv = TestServer::start_in(dir, |cfg| {
            let mut p = PairingConfig {
                listen: Some(paddr),
                key_pool: 0,
                ..PairingConfig::default()
            };
            p.resolve_paths(&base);
            tweak(&mut p);
            cfg.pairing = Some(p);
            let tls = cfg.tls.as_mut().unwrap();
            tls.client_ca_file = Some(base.join("tls/ca.pem"));
        })
        .await;
        use chrono::SubsecRound;
        let start = (chrono::Utc::now() - back).trunc_subsecs(0);
        srv.clock.set(start);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pairing::listener::run(
            srv.app.clone(),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        Node {
            srv,
            start,
            pairing: paddr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn tls(&self, name: &str) -> PathBuf {
        self.srv.dir.path().join("tls").join(name)
    }

    fn p(&self) -> &pairing::Pairing {
        self.srv.app.pairing.as_ref().unwrap()
    }

    fn code(&self, terminal: Option<&str>) -> String {
        let now = self.srv.app.clock.now();
        self.p()
            .new_code(terminal, now)
            .unwrap()
            .code
            .reveal()
            .to_owned()
    }

    fn pair_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.pairing.port())
    }

    fn main_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.srv.addr.port())
    }

    /// curl with the dev server CA, resolving localhost to loopback.
    async fn curl(&self, args: &[&str]) -> Output {
        let ca = self.tls("ca.pem");
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .args(["-w", "\n%{http_code}"])
            .args(args);
        cmd.output().await.expect("curl runs")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        self.srv.stop().await;
    }
}

/// curl's body and status (the `-w` line).
fn split(o: &Output) -> (String, u16) {
    assert!(
        o.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (body.to_owned(), code.trim().parse().unwrap())
}

fn body(pos: &str, code: &str) -> String {
    serde_json::json!({ "posId": pos, "setupCode": code }).to_string()
}

async fn pair(node: &Node, pos: &str, code: &str) -> (String, u16) {
    let b = body(pos, code);
    split(&node.curl(&["-d", &b, &node.pair_url("/")]).await)
}

/// The PEM blocks of a bundle, in order, as (label, whole block).
fn blocks(pem: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in pem.lines() {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            cur = Some((label.to_owned(), String::new()));
        }
        if let Some((_, text)) = cur.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
        if line.starts_with("-----END ") {
            out.push(cur.take().unwrap());
        }
    }
    out
}

async fn openssl(args: &[&str]) -> Output {
    tokio::process::Command::new("openssl")
        .args(args)
        .output()
        .await
        .expect("openssl runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The bundle written as key.pem, client.pem, inter.pem, root.pem in `dir`.
fn write_bundle(dir: &Path, pem: &str) -> [PathBuf; 4] {
    let b = blocks(pem);
    assert_eq!(b.len(), 4, "{pem}");
    let names = ["key.pem", "client.pem", "inter.pem", "root.pem"];
    let paths = names.map(|n| dir.join(n));
    for (p, (_, text)) in paths.iter().zip(&b) {
        std::fs::write(p, text).unwrap();
    }
    paths
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn a_pos_pairs_over_https_and_openssl_accepts_the_bundle() {
    let node = Node::start(|_| {}).await;
    // Bootstrap: the root as the seed's JSON, also from the main listener.
    let (root_json, status) = split(&node.curl(&[&node.pair_url("/rootca")]).await);
    assert_eq!(status, 200, "{root_json}");
    let root: serde_json::Value = serde_json::from_str(&root_json).unwrap();
    let root_pem = root["certificateChain"].as_str().unwrap().to_owned();
    assert_eq!(
        root_pem,
        std::fs::read_to_string(node.tls("pairing-root.pem")).unwrap()
    );

    let code = node.code(None);
    // Typed sloppily: lower case with a dash.
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let (pem, status) = pair(&node, "123", &typed).await;
    assert_eq!(status, 200, "{pem}");
    let labels: Vec<String> = blocks(&pem).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        [
            "RSA PRIVATE KEY",
            "CERTIFICATE",
            "CERTIFICATE",
            "CERTIFICATE"
        ]
    );
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));

    let dir = tempfile::tempdir().unwrap();
    let [key, client, inter, rootf] = write_bundle(dir.path(), &pem);
    assert_eq!(std::fs::read_to_string(&rootf).unwrap(), root_pem);
    let v = openssl(&[
        "verify",
        "-CAfile",
        s(&rootf),
        "-untrusted",
        s(&inter),
        s(&client),
    ])
    .await;
    assert!(
        v.status.success() && text(&v).contains(": OK"),
        "{}",
        text(&v)
    );
    let v = openssl(&["rsa", "-check", "-noout", "-in", s(&key)]).await;
    assert!(
        v.status.success() && text(&v).contains("RSA key ok"),
        "{}",
        text(&v)
    );
    let bits = openssl(&["rsa", "-noout", "-text", "-in", s(&key)]).await;
    assert!(
        text(&bits).contains("Private-Key: (2048 bit"),
        "{}",
        text(&bits)
    );
    let m_key = openssl(&["rsa", "-noout", "-modulus", "-in", s(&key)]).await;
    let m_cert = openssl(&["x509", "-noout", "-modulus", "-in", s(&client)]).await;
    assert!(m_key.status.success() && m_cert.status.success());
    assert_eq!(m_key.stdout, m_cert.stdout, "the key fits the certificate");
    let x = openssl(&[
        "x509",
        "-noout",
        "-dates",
        "-serial",
        "-subject",
        "-ext",
        "subjectAltName,extendedKeyUsage",
        "-in",
        s(&client),
    ])
    .await;
    let x = text(&x);
    // Backdated one minute, 90 days, on the node's (manual) clock.
    let nb = (node.start - chrono::Duration::minutes(1))
        .format("%b %e %H:%M:%S %Y GMT")
        .to_string();
    let na = (node.start + chrono::Duration::days(90))
        .format("%b %e %H:%M:%S %Y GMT")
        .to_string();
    assert!(x.contains(&format!("notBefore={nb}")), "{x}");
    assert!(x.contains(&format!("notAfter={na}")), "{x}");
    assert!(x.contains("URI:urn:snapgate:pos:123"), "{x}");
    assert!(x.contains("TLS Web Client Authentication"), "{x}");
    assert!(x.contains("CN=123") || x.contains("CN = 123"), "{x}");
    let serial = x.lines().find_map(|l| l.strip_prefix("serial=")).unwrap();
    assert_eq!(serial.len(), 32, "128-bit serial: {serial}");

    // Single use: the same code again gets the one error for every bad code.
    let (again, status) = pair(&node, "124", &code).await;
    assert_eq!(status, 403);
    let (wrong, status2) = pair(&node, "124", "00000000").await;
    assert_eq!(status2, 403);
    assert_eq!(again, wrong);
    assert!(again.contains("invalid_setup_code"), "{again}");

    let issued = node.p().store.list_issued().unwrap();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].pos_id, "123");
    assert_eq!(issued[0].serial, serial);
    let metrics = node.srv.app.metrics.render();
    assert!(
        metrics.contains("snapgate_pairings_total{operation=\"exchange\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "snapgate_pairings_total{operation=\"exchange\",result=\"invalid_setup_code\"} 2"
    ));
    node.stop().await;
}

/// `openssl s_client` against the main (mTLS) listener; its combined output.
async fn s_client(node: &Node, cert: Option<(&Path, &Path)>) -> String {
    let ca = node.tls("ca.pem");
    let port = node.srv.addr.port().to_string();
    let connect = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        connect,
        "-servername".into(),
        "localhost".into(),
        "-CAfile".into(),
        s(&ca).into(),
        "-verify_return_error".into(),
    ];
    if let Some((c, k)) = cert {
        args.extend(["-cert".into(), s(c).into(), "-key".into(), s(k).into()]);
    }
    // A request to send, so s_client reads until the server answers or alerts.
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    // Keep stdin open until the server closes (s_client exits on EOF of stdin otherwise).
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("s_client finishes")
        .unwrap();
    drop(stdin);
    text(&out)
}

#[tokio::test]
async fn the_mtls_listener_takes_the_paired_certificate_and_refuses_others() {
    let node = Node::start(|_| {}).await;
    let code = node.code(None);
    let (pem, status) = pair(&node, "till-1", &code).await;
    assert_eq!(status, 200, "{pem}");
    let dir = tempfile::tempdir().unwrap();
    let [key, client, _, _] = write_bundle(dir.path(), &pem);

    // curl: a SOAP call over mTLS with the paired certificate.
    let (reply, status) = split(
        &node
            .curl(&[
                "--cert",
                s(&client),
                "--key",
                s(&key),
                "-H",
                "Content-Type: text/xml; charset=utf-8",
                "-H",
                &format!("SOAPAction: \"{PING_ACTION}\""),
                "-d",
                PING_BODY,
                &node.main_url("/2.1.32/SIS.svc"),
            ])
            .await,
    );
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("PingResponse"), "{reply}");
    // Without a certificate curl gets no answer.
    let o = node.curl(&[&node.main_url("/healthz")]).await;
    assert!(!o.status.success(), "{}", text(&o));

    // s_client: paired certificate accepted, none refused, foreign CA refused.
    let ok = s_client(&node, Some((&client, &key))).await;
    assert!(ok.contains("HTTP/1.1 200"), "{ok}");
    let none = s_client(&node, None).await;
    assert!(none.contains("certificate required"), "{none}");
    let fkey = dir.path().join("foreign-key.pem");
    let fcert = dir.path().join("foreign.pem");
    let g = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        s(&fkey),
        "-out",
        s(&fcert),
        "-days",
        "1",
        "-subj",
        "/CN=till-1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=clientAuth",
    ])
    .await;
    assert!(g.status.success(), "{}", text(&g));
    let foreign = s_client(&node, Some((&fcert, &fkey))).await;
    assert!(foreign.contains("unknown ca"), "{foreign}");

    // Re-pairing till-1 revokes its first certificate on the very next handshake.
    let code = node.code(None);
    let (pem2, status) = pair(&node, "till-1", &code).await;
    assert_eq!(status, 200, "{pem2}");
    let old = s_client(&node, Some((&client, &key))).await;
    assert!(old.contains("certificate revoked"), "{old}");
    let dir2 = tempfile::tempdir().unwrap();
    let [key2, client2, _, _] = write_bundle(dir2.path(), &pem2);
    let new = s_client(&node, Some((&client2, &key2))).await;
    assert!(new.contains("HTTP/1.1 200"), "{new}");

    // The operator revokes: the new one is refused too.
    assert!(node.p().revoke(&node.srv.app, "till-1").unwrap().is_some());
    let revoked = s_client(&node, Some((&client2, &key2))).await;
    assert!(revoked.contains("certificate revoked"), "{revoked}");
    let m = node.srv.app.metrics.render();
    assert!(
        m.contains("snapgate_pairing_certs_revoked_total{reason=\"repaired\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("snapgate_pairing_certs_revoked_total{reason=\"revoked\"} 1"),
        "{m}"
    );
    node.stop().await;
}

#[tokio::test]
async fn wrong_tries_kill_the_code_and_the_address_gets_429() {
    let node = Node::start(|p| {
        p.max_failures_per_address = 8;
        p.address_lockout_seconds = 120;
    })
    .await;
    let code = node.code(None);
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let mut first = None;
    for _ in 0..5 {
        let (b, status) = pair(&node, "p", wrong).await;
        assert_eq!(status, 403, "{b}");
        first.get_or_insert(b.clone());
        assert_eq!(Some(&b), first.as_ref(), "one identical error");
    }
    // The code is dead: the right code now gets the same error.
    let (b, status) = pair(&node, "p", &code).await;
    assert_eq!((status, Some(&b)), (403, first.as_ref()));
    // Two more failures reach the address limit: 429 with Retry-After, even for a good code.
    for _ in 0..2 {
        assert_eq!(pair(&node, "p", wrong).await.1, 403);
    }
    let good = node.code(None);
    let o = node
        .curl(&["-i", "-d", &body("p", &good), &node.pair_url("/")])
        .await;
    let (b, status) = split(&o);
    assert_eq!(status, 429, "{b}");
    assert!(b.to_lowercase().contains("retry-after: 120"), "{b}");
    assert!(b.contains("too_many_attempts"), "{b}");
    // After the lockout (on the node's clock) the good code works: it was not charged.
    node.srv.clock.advance(chrono::Duration::seconds(120));
    let (_, status) = pair(&node, "p", &good).await;
    assert_eq!(status, 200);
    assert_eq!(node.p().store.list_issued().unwrap().len(), 1);
    node.stop().await;
}

#[tokio::test]
async fn codes_expire_on_the_injected_clock_and_a_new_code_replaces_the_old() {
    let node = Node::start(|p| p.code_lifetime_seconds = 300).await;
    let old = node.code(None);
    node.srv.clock.advance(chrono::Duration::seconds(301));
    let (b, status) = pair(&node, "p", &old).await;
    assert_eq!(status, 403, "{b}");
    let code = node.code(None);
    node.srv.clock.advance(chrono::Duration::seconds(299));
    // One live code per slot: making another revokes this one.
    let replaced = node.code(None);
    assert_eq!(pair(&node, "p", &code).await.1, 403);
    assert_eq!(pair(&node, "p", &replaced).await.1, 200);
    // Terminal-bound codes live side by side; the certificate names the terminal.
    let a = node.code(Some("SK1/SERIAL-A"));
    let b = node.code(Some("SK1/SERIAL-B"));
    let (pem, status) = split(
        &node
            .curl(&[
                "-d",
                &body("pos-a", &a),
                &node.pair_url("/pair/SK1/SERIAL-A"),
            ])
            .await,
    );
    assert_eq!(status, 200, "{pem}");
    // A code is only good at its own terminal's URL.
    let (_, status) = split(
        &node
            .curl(&[
                "-d",
                &body("pos-b", &b),
                &node.pair_url("/pair/SK1/SERIAL-A"),
            ])
            .await,
    );
    assert_eq!(status, 403);
    let dir = tempfile::tempdir().unwrap();
    let [_, client, _, _] = write_bundle(dir.path(), &pem);
    let x = text(
        &openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            s(&client),
        ])
        .await,
    );
    assert!(x.contains("URI:urn:snapgate:pos:pos-a"), "{x}");
    assert!(x.contains("URI:urn:snapgate:terminal:SK1/SERIAL-A"), "{x}");
    node.stop().await;
}

#[tokio::test]
async fn two_pos_racing_for_one_code_get_exactly_one_certificate() {
    let node = Arc::new(Node::start(|_| {}).await);
    let code = node.code(None);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let node = node.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            pair(&node, &format!("racer-{i}"), &code).await.1
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 403, 403, 403, 403, 403]);
    assert_eq!(node.p().store.list_issued().unwrap().len(), 1);
    let node = Arc::try_unwrap(node).ok().unwrap();
    node.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_cost_nothing() {
    let node = Node::start(|p| p.max_body_bytes = 4096).await;
    let code = node.code(None);
    let long = "x".repeat(65);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_request"),
        (
            format!(r#"{{"posId":"1","setupCode":"{code}","admin":true}}"#),
            400,
            "unknown field `admin`",
        ),
        (
            format!(r#"{{"posId":"","setupCode":"{code}"}}"#),
            400,
            "invalid_pos_id",
        ),
        (
            format!(r#"{{"posId":"{long}","setupCode":"{code}"}}"#),
            400,
            "over 64",
        ),
        (
            format!(r#"{{"posId":"1","setupCode":"{code}","csr":"nope"}}"#),
            400,
            "invalid_csr",
        ),
        (
            format!(
                r#"{{"posId":"1","setupCode":"{code}","pad":"{}"}}"#,
                "z".repeat(5000)
            ),
            413,
            "body_too_large",
        ),
    ];
    for (b, want_status, want_text) in &cases {
        let (reply, status) = split(&node.curl(&["-d", b, &node.pair_url("/")]).await);
        assert_eq!(status, *want_status, "{b:.80}: {reply}");
        assert!(reply.contains(want_text), "{b:.80}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(v["error"].is_string() && v["message"].is_string());
        assert!(!reply.contains(&code), "the code is never echoed");
    }
    assert!(node.p().store.list_issued().unwrap().is_empty());
    // None of it cost the code anything.
    assert_eq!(pair(&node, "1", &code).await.1, 200);
    // Unknown paths and methods.
    let (_, status) = split(&node.curl(&[&node.pair_url("/nothing")]).await);
    assert_eq!(status, 404);
    let (_, status) = split(
        &node
            .curl(&["-X", "DELETE", &node.pair_url("/rootca")])
            .await,
    );
    assert_eq!(status, 405);
    node.stop().await;
}

async fn wss(node: &Node, path: &str, body: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/zeep/pairing_wss.py");
    let url = format!("wss://localhost:{}{path}", node.pairing.port());
    let o = tokio::process::Command::new(python("websockets"))
        .arg(script)
        .arg(&url)
        .arg(node.tls("ca.pem"))
        .arg(body)
        .output()
        .await
        .expect("python runs");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test]
async fn a_pos_pairs_over_wss_with_python_websockets() {
    let node = Node::start(|p| p.max_body_bytes = 4096).await;
    let code = node.code(Some("SK9/WSS-1"));
    let out = wss(&node, "/pair/SK9/WSS-1", &body("ws-pos", &code)).await;
    assert!(out.trim_end().ends_with("close=1000 reason="), "{out}");
    let pem = out.rsplit_once("close=").unwrap().0;
    let dir = tempfile::tempdir().unwrap();
    let [key, client, inter, root] = write_bundle(dir.path(), pem);
    let v = openssl(&[
        "verify",
        "-CAfile",
        s(&root),
        "-untrusted",
        s(&inter),
        s(&client),
    ])
    .await;
    assert!(v.status.success(), "{}", text(&v));
    let v = openssl(&["rsa", "-check", "-noout", "-in", s(&key)]).await;
    assert!(text(&v).contains("RSA key ok"), "{}", text(&v));
    let x = text(
        &openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            s(&client),
        ])
        .await,
    );
    assert!(x.contains("URI:urn:snapgate:terminal:SK9/WSS-1"), "{x}");

    // The used code over WSS: the JSON error, then a policy close naming it.
    let out = wss(&node, "/", &body("ws-pos", &code)).await;
    assert!(out.contains("\"error\":\"invalid_setup_code\""), "{out}");
    assert!(
        out.trim_end()
            .ends_with("close=1008 reason=invalid_setup_code"),
        "{out}"
    );
    // Bad JSON: 1008 with invalid_request; an oversize message: 1009.
    let out = wss(&node, "/", "{\"posId\":1}").await;
    assert!(
        out.trim_end()
            .ends_with("close=1008 reason=invalid_request"),
        "{out}"
    );
    let big = body("p", &"A".repeat(5000));
    let out = wss(&node, "/", &big).await;
    assert!(
        out.trim_end().ends_with("close=1009 reason=body_too_large"),
        "{out}"
    );
    assert_eq!(node.p().store.list_issued().unwrap().len(), 1);
    node.stop().await;
}

async fn snapgate(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_snapgate"))
        .args(args)
        .output()
        .await
        .expect("snapgate runs")
}

/// The code in `snapgate pairing code`'s "Details".
fn code_in(details: &str) -> String {
    details
        .lines()
        .find_map(|l| l.strip_prefix("POS connection code:"))
        .unwrap_or_else(|| panic!("no code in {details}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_operator_cli_makes_codes_lists_and_revokes_offline_and_through_admin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let o = snapgate(&["init", "--dir", s(&d), "--tls", "--listen", "127.0.0.1:0"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("pairing CA"), "{}", text(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in ["pairing-root-key.pem", "pairing-ca-key.pem"] {
            let mode = std::fs::metadata(d.join("tls").join(k))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
    }
    let cfg_path = d.join("snapgate.toml");
    let cfg = s(&cfg_path).to_owned();

    // Server stopped: the CLI works on the data folder.
    let o = snapgate(&["pairing", "code", "--config", &cfg]).await;
    assert!(o.status.success(), "{}", text(&o));
    let details = text(&o);
    assert!(
        details.contains("pair at:             https://127.0.0.1:8443/"),
        "{details}"
    );
    assert!(details.contains("root CA SHA-256:"), "{details}");
    let offline_code = code_in(&details);
    let o = snapgate(&["pairing", "list", "--config", &cfg]).await;
    assert!(text(&o).contains("\"slot\": \"operator\""), "{}", text(&o));
    assert!(!text(&o).contains(&offline_code), "list never shows a code");

    // Server running (its pairing listener and admin listener on free ports).
    let base = d.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = listener.local_addr().unwrap();
    let moved = tempfile::TempDir::new().unwrap();
    // TestServer owns a TempDir: hand it one holding our data folder's files.
    for e in std::fs::read_dir(&base).unwrap() {
        let e = e.unwrap();
        let to = moved.path().join(e.file_name());
        std::fs::rename(e.path(), to).unwrap();
    }
    let root = moved.path().to_owned();
    let srv = TestServer::start_in(moved, |c| {
        c.pairing.as_mut().unwrap().listen = Some(paddr);
        c.pairing.as_mut().unwrap().key_pool = 0;
    })
    .await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let ptask = tokio::spawn(pairing::listener::run(
        srv.app.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    let admin_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_l.local_addr().unwrap());
    let (atx, arx) = tokio::sync::oneshot::channel::<()>();
    let atask = tokio::spawn(snapgate::admin::run(srv.app.clone(), admin_l, async move {
        let _ = arx.await;
    }));
    let cfg = root.join("snapgate.toml");
    let cfg = s(&cfg);
    let curl_pair = |code: String, pos: &'static str| {
        let ca = root.join("tls/ca.pem");
        let url = format!("https://localhost:{}/", paddr.port());
        async move {
            let o = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "20",
                    "-w",
                    "\n%{http_code}",
                    "--cacert",
                ])
                .arg(ca)
                .args(["-d", &body(pos, &code), &url])
                .output()
                .await
                .unwrap();
            split(&o)
        }
    };
    // The code made offline is still good once the server runs.
    let (pem, status) = curl_pair(offline_code, "till-9").await;
    assert_eq!(status, 200, "{pem}");
    let o = snapgate(&["pairing", "code", "--config", cfg, "--admin", &admin]).await;
    assert!(o.status.success(), "{}", text(&o));
    let (_, status) = curl_pair(code_in(&text(&o)), "till-10").await;
    assert_eq!(status, 200);
    let o = snapgate(&[
        "pairing",
        "code",
        "--config",
        cfg,
        "--admin",
        &admin,
        "--terminal",
        "NOPE/1",
    ])
    .await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no registered terminal NOPE/1"),
        "{}",
        text(&o)
    );
    let o = snapgate(&["pairing", "list", "--config", cfg, "--admin", &admin]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["certificates"].as_array().unwrap().len(), 2, "{v}");
    let o = snapgate(&[
        "pairing", "revoke", "till-9", "--config", cfg, "--admin", &admin,
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("\"pos_id\":\"till-9\""), "{}", text(&o));
    let o = snapgate(&[
        "pairing", "revoke", "till-9", "--config", cfg, "--admin", &admin,
    ])
    .await;
    assert!(
        !o.status.success() && text(&o).contains("HTTP 404"),
        "{}",
        text(&o)
    );
    let m = srv.app.metrics.render();
    assert!(
        m.contains("snapgate_pairing_codes_total{source=\"operator\"} 1"),
        "{m}"
    );
    let _ = tx.send(());
    let _ = atx.send(());
    ptask.await.unwrap().unwrap();
    atask.await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn a_csr_keeps_the_key_on_the_pos_and_a_paired_pos_renews_over_mtls() {
    // Paired 70 days ago (on the node's clock), renewed now.
    let node = Node::start_back(chrono::Duration::days(70), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let pos_key = dir.path().join("pos-key.pem");
    let csr = dir.path().join("pos.csr");
    let g = openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        s(&pos_key),
        "-out",
        s(&csr),
        "-subj",
        "/CN=whatever-the-pos-says",
    ])
    .await;
    assert!(g.status.success(), "{}", text(&g));
    let csr_pem = std::fs::read_to_string(&csr).unwrap();
    let code = node.code(None);
    let req =
        serde_json::json!({"posId": "csr-pos", "setupCode": code, "csr": csr_pem}).to_string();
    let (pem, status) = split(&node.curl(&["-d", &req, &node.pair_url("/pair")]).await);
    assert_eq!(status, 200, "{pem}");
    let b = blocks(&pem);
    assert_eq!(b.len(), 3, "certificates only: {pem}");
    assert!(b.iter().all(|(l, _)| l == "CERTIFICATE"));
    let client = dir.path().join("client.pem");
    std::fs::write(&client, &b[0].1).unwrap();
    let m_key = openssl(&["rsa", "-noout", "-modulus", "-in", s(&pos_key)]).await;
    let m_cert = openssl(&["x509", "-noout", "-modulus", "-in", s(&client)]).await;
    assert_eq!(m_key.stdout, m_cert.stdout, "certifies the POS's own key");
    let x = text(
        &openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
            s(&client),
        ])
        .await,
    );
    assert!(
        x.contains("csr-pos") && !x.contains("whatever-the-pos-says"),
        "{x}"
    );

    // Renewal: over TLS with the current certificate, no code.
    let o = node.curl(&["-X", "POST", &node.pair_url("/renew")]).await;
    let (b, status) = split(&o);
    assert_eq!(status, 401, "{b}");
    assert!(b.contains("certificate_required"), "{b}");
    node.srv.clock.advance(chrono::Duration::days(70));
    let (renewed, status) = split(
        &node
            .curl(&[
                "--cert",
                s(&client),
                "--key",
                s(&pos_key),
                "-X",
                "POST",
                &node.pair_url("/renew"),
            ])
            .await,
    );
    assert_eq!(status, 200, "{renewed}");
    let dir2 = tempfile::tempdir().unwrap();
    let [key2, client2, _, _] = write_bundle(dir2.path(), &renewed);
    let x = text(&openssl(&["x509", "-noout", "-dates", "-in", s(&client2)]).await);
    let na = (node.start + chrono::Duration::days(160))
        .format("%b %e %H:%M:%S %Y GMT")
        .to_string();
    assert!(x.contains(&format!("notAfter={na}")), "{x}");
    // The renewed certificate works on the mTLS listener; the one it replaced does not.
    assert!(s_client(&node, Some((&client2, &key2)))
        .await
        .contains("HTTP/1.1 200"));
    assert!(s_client(&node, Some((&client, &pos_key)))
        .await
        .contains("certificate revoked"));
    // Nor can the replaced one renew again (refused in the handshake).
    let o = node
        .curl(&[
            "--cert",
            s(&client),
            "--key",
            s(&pos_key),
            "-X",
            "POST",
            &node.pair_url("/renew"),
        ])
        .await;
    assert!(!o.status.success() || split(&o).1 != 200, "{}", text(&o));
    let m = node.srv.app.metrics.render();
    assert!(
        m.contains("snapgate_pairings_total{operation=\"renew\",result=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("snapgate_pairing_certs_revoked_total{reason=\"renewed\"} 1"),
        "{m}"
    );
    node.stop().await;
}

/// The text of the first `<name>` element in `xml`.
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_owned())
}

#[tokio::test]
async fn a_registered_terminal_gets_its_own_code_over_soap_and_rest() {
    let node = Node::start(|_| {}).await;
    // The terminal talks to the mTLS listener with the dev terminal certificate.
    let (tc, tk) = (node.tls("client.pem"), node.tls("client-key.pem"));
    let k = ksn(TDES_KSN_BASE, 1);
    let es = node.srv.encrypt_secret(&k, "MP1|B1234567");
    let env = register_envelope(SERVICE_KEY, VENDOR_ID, &es, &k);
    let node_ref = &node;
    let soap = |action: String, env: String| {
        let node = node_ref;
        let (tc, tk) = (tc.clone(), tk.clone());
        let url = node.main_url("/2.1.32/SIS.svc");
        async move {
            split(
                &node
                    .curl(&[
                        "--cert",
                        s(&tc),
                        "--key",
                        s(&tk),
                        "-H",
                        "Content-Type: text/xml; charset=utf-8",
                        "-H",
                        &format!("SOAPAction: \"{action}\""),
                        "-d",
                        &env,
                        &url,
                    ])
                    .await,
            )
        }
    };
    let (reply, status) = soap(SIS_ACTION.to_owned(), env).await;
    assert_eq!(status, 200, "{reply}");
    let token = element(&reply, "RegisterTerminalResult").unwrap();

    let action = "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation/ICWSServiceInformation/CreatePairingCode";
    let req = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
         <CreatePairingCode xmlns=\"{SIS_NS}\"><sessionToken>{token}</sessionToken>\
         </CreatePairingCode></s:Body></s:Envelope>"
    );
    let (reply, status) = soap(action.to_owned(), req.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let code = element(&reply, "SetupCode").unwrap();
    let terminal = format!("{SERVICE_KEY}/B1234567");
    let path = format!("/pair/{terminal}");
    assert!(
        reply.contains(&format!(
            "<Address>https://{}{path}</Address>",
            node.pairing
        )),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("<Address>wss://{}{path}</Address>", node.pairing)),
        "{reply}"
    );
    // A bad token: the usual token fault, no code.
    let bad = req.replace(&token, "not-a-token");
    let (reply, status) = soap(action.to_owned(), bad).await;
    assert_eq!(status, 500, "{reply}");
    assert!(reply.contains("InvalidTokenFault"), "{reply}");

    // REST: the token as the Basic username. The new code replaces the SOAP one.
    let (json, status) = split(
        &node
            .curl(&[
                "--cert",
                s(&tc),
                "--key",
                s(&tk),
                "-u",
                &format!("{token}:"),
                "-X",
                "POST",
                &node.main_url("/REST/SIS.svc/pairingCode"),
            ])
            .await,
    );
    assert_eq!(status, 200, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rest_code = v["SetupCode"].as_str().unwrap().to_owned();
    assert_ne!(rest_code, code);
    let (_, status) = split(
        &node
            .curl(&[
                "--cert",
                s(&tc),
                "--key",
                s(&tk),
                "-u",
                "nope:",
                "-X",
                "POST",
                &node.main_url("/REST/SIS.svc/pairingCode"),
            ])
            .await,
    );
    assert_eq!(status, 401);

    let url = node.pair_url(&path);
    let (_, status) = split(&node.curl(&["-d", &body("pos-1", &code), &url]).await);
    assert_eq!(status, 403, "replaced by the REST code");
    let (pem, status) = split(&node.curl(&["-d", &body("pos-1", &rest_code), &url]).await);
    assert_eq!(status, 200, "{pem}");
    let dir = tempfile::tempdir().unwrap();
    let [_, client, _, _] = write_bundle(dir.path(), &pem);
    let x = text(
        &openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            s(&client),
        ])
        .await,
    );
    assert!(
        x.contains(&format!("URI:urn:snapgate:terminal:{terminal}")),
        "{x}"
    );
    let m = node.srv.app.metrics.render();
    assert!(
        m.contains("snapgate_pairing_codes_total{source=\"terminal\"} 2"),
        "{m}"
    );
    node.stop().await;
}
