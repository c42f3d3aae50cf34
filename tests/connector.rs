//! The Cloud Connector end to end with a real WebSocket client (tokio-tungstenite) over loopback:
//! the token endpoint, device and POS listeners, the relay both ways, JWT replay and audience,
//! busy/takeover/offline/unknown, a device drop inside and past the grace, limits, two nodes on
//! one shared store, and wss with the dev CA. Timers are shrunk through `[connector]`; the
//! Python `websockets` twins of these cases are in tests/connector/ (run by tests/connector_py.rs).

mod common;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use snapgate::config::Config;
use snapgate::connector::oauth;
use snapgate::store::connector::{ClientRole, Scope};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Ws = WebSocketStream<Box<dyn Io>>;

/// Short timers so that nothing waits long; cheap hashing for test clients.
fn fast(c: &mut Config) {
    let k = &mut c.connector;
    k.hash_memory_kib = 256;
    k.hash_iterations = 1;
    // Long enough that a test client not reading for a moment (so not answering pings) on a
    // busy machine is not dropped; the liveness tests shrink them further.
    k.ping_interval_ms = 2_000;
    k.pong_timeout_ms = 3_000;
    k.reconnect_grace_ms = 1_500;
    k.send_timeout_ms = 2_000;
}

struct Client {
    id: String,
    secret: String,
}

fn client(srv: &TestServer, role: ClientRole, merchant: &str, store: Option<&str>) -> Client {
    let n = oauth::add_client(
        &*srv.app.connector.store,
        None,
        "test",
        role,
        Scope {
            merchant: merchant.into(),
            store: store.map(Into::into),
            tsn: None,
        },
        256,
        1,
        0,
    )
    .unwrap();
    Client {
        id: n.record.id,
        secret: n.secret.to_string(),
    }
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

async fn token(srv: &TestServer, c: &Client) -> String {
    let auth = basic(&c.id, &c.secret);
    let r = srv
        .post(
            "/oauth2/v1/test/token",
            &[FORM, ("authorization", &auth)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// Open a WebSocket to `url` (on the server at `srv.addr`) with a bearer token. Err: the HTTP
/// status of a refused upgrade.
async fn ws(srv: &TestServer, url: &str, bearer: &str) -> Result<Ws, u16> {
    ws_at(srv.addr, None, url, bearer).await
}

async fn ws_at(
    addr: std::net::SocketAddr,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    url: &str,
    bearer: &str,
) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            Box::new(
                tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .unwrap(),
            )
        }
    };
    match tokio_tungstenite::client_async(req, io).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The next JSON text message (listeners answer with one).
async fn json(ws: &mut Ws) -> serde_json::Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }
}

/// Read until the close frame; its code (None: the connection ended without one).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    for _ in 0..100_000 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => {
                eprintln!("ended without a close frame: {other:?}");
                return None;
            }
            Err(_) => panic!("no close within 10 s"),
        }
    }
    panic!("no close after 100,000 messages")
}

/// Through a listener: send `msg`, get the answer, see the listener close.
async fn listen(
    srv: &TestServer,
    base: &str,
    path: &str,
    bearer: &str,
    msg: serde_json::Value,
) -> (serde_json::Value, Option<u16>) {
    let mut l = ws(srv, &format!("{base}{path}"), bearer).await.unwrap();
    l.send(Message::text(msg.to_string())).await.unwrap();
    let answer = json(&mut l).await;
    let code = close_code(&mut l).await;
    (answer, code)
}

fn base(srv: &TestServer) -> String {
    format!("ws://{}", srv.addr)
}

/// Device registration: listener → URL + JWT; returns the answer.
async fn register(srv: &TestServer, access: &str, tsn: &str) -> serde_json::Value {
    let (a, code) = listen(
        srv,
        &base(srv),
        "/cloud-connector/v1/device-listener",
        access,
        serde_json::json!({"type": "register", "tsn": tsn}),
    )
    .await;
    assert_eq!(code, Some(1000), "{a}");
    assert_eq!(a["type"], "connection", "{a}");
    a
}

async fn device_online(srv: &TestServer, access: &str, tsn: &str) -> Ws {
    let a = register(srv, access, tsn).await;
    let w = ws(
        srv,
        a["url"].as_str().unwrap(),
        a["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    until_online(&*srv.app.connector.store, tsn).await;
    w
}

/// Send one message to a listener of the node at `addr` and return its JSON answer.
async fn ask_listener(
    addr: std::net::SocketAddr,
    listener: &str,
    bearer: &str,
    msg: &'static str,
) -> serde_json::Value {
    let url = format!("ws://{addr}/cloud-connector/v1/{listener}");
    let mut l = ws_at(addr, None, &url, bearer).await.unwrap();
    l.send(Message::text(msg)).await.unwrap();
    json(&mut l).await
}

/// The server attaches a device's connection (and writes its presence) just after the
/// handshake: wait for that (bounded), so that a claim which follows finds the device.
async fn until_online(store: &dyn snapgate::store::connector::ConnectorStore, tsn: &str) {
    for _ in 0..1_000 {
        if store.get_device(tsn).unwrap().is_some_and(|d| d.online) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{tsn} never attached")
}

async fn claim(srv: &TestServer, access: &str, tsn: &str, takeover: bool) -> serde_json::Value {
    listen(
        srv,
        &base(srv),
        "/cloud-connector/v1/pos-listener",
        access,
        serde_json::json!({"type": "claim", "tsn": tsn, "takeover": takeover}),
    )
    .await
    .0
}

async fn pos_session(srv: &TestServer, access: &str, tsn: &str, takeover: bool) -> Ws {
    let a = claim(srv, access, tsn, takeover).await;
    assert_eq!(a["type"], "session", "{a}");
    ws(
        srv,
        a["url"].as_str().unwrap(),
        a["token"].as_str().unwrap(),
    )
    .await
    .unwrap()
}

/// The next data message, skipping control frames.
async fn data(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return m,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a data message, got {other:?}"),
        }
    }
}

struct Setup {
    srv: TestServer,
    dev: String,
    pos: String,
}

async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    let srv = TestServer::start_with(|c| {
        fast(c);
        tweak(c)
    })
    .await;
    let d = client(&srv, ClientRole::Device, "M1", Some("S1"));
    let p = client(&srv, ClientRole::Pos, "M1", Some("S1"));
    let dev = token(&srv, &d).await;
    let pos = token(&srv, &p).await;
    Setup { srv, dev, pos }
}

#[tokio::test]
async fn the_token_endpoint_answers_client_credentials_and_refuses_the_rest() {
    let srv = TestServer::start_with(fast).await;
    let c = client(&srv, ClientRole::Pos, "M1", None);
    let url = "/oauth2/v1/test/token";
    // Basic, then the body.
    let auth = basic(&c.id, &c.secret);
    let r = srv
        .post(
            url,
            &[FORM, ("authorization", &auth)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(v["access_token"].as_str().unwrap().len() > 40);
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        c.id, c.secret
    );
    let r = send(srv.addr, "POST", url, &[FORM], Bytes::from(body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let bad = basic(&c.id, "wrong");
    for (headers, body, status, code) in [
        (
            vec![FORM, ("authorization", bad.as_str())],
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            vec![FORM],
            "grant_type=client_credentials&client_id=nobody&client_secret=x",
            401,
            "invalid_client",
        ),
        (
            vec![FORM],
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            vec![FORM, ("authorization", auth.as_str())],
            "grant_type=password",
            400,
            "unsupported_grant_type",
        ),
        (
            vec![FORM, ("authorization", auth.as_str())],
            "",
            400,
            "invalid_request",
        ),
        (
            vec![("content-type", "application/json")],
            "{}",
            400,
            "invalid_request",
        ),
        (
            vec![FORM, ("authorization", auth.as_str())],
            "grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
        ),
    ] {
        let r = srv.post(url, &headers, body).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"], code, "{body}");
        assert!(!r.body.contains(&c.secret));
    }
    // The right client at another domain is refused the same way.
    let r = srv
        .post(
            "/oauth2/v1/other/token",
            &[FORM, ("authorization", &auth)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // An access token is refused before the upgrade once expired (on the injected clock), and
    // once its client is removed.
    let access = token(&srv, &c).await;
    let listener = format!("{}/cloud-connector/v1/pos-listener", base(&srv));
    assert!(ws(&srv, &listener, &access).await.is_ok());
    srv.clock.advance(chrono::Duration::seconds(3600));
    assert_eq!(ws(&srv, &listener, &access).await.err(), Some(401));
    let access = token(&srv, &c).await;
    assert!(
        oauth::add_client(
            &*srv.app.connector.store,
            Some(c.id.clone()),
            "test",
            ClientRole::Pos,
            Scope {
                merchant: "M1".into(),
                store: None,
                tsn: None
            },
            256,
            1,
            0
        )
        .is_err(),
        "ids are unique"
    );
    srv.app.connector.store.remove_client(&c.id).unwrap();
    assert_eq!(ws(&srv, &listener, &access).await.err(), Some(401));
    assert_eq!(ws(&srv, &listener, "garbage").await.err(), Some(401));
}

#[tokio::test]
async fn a_thousand_text_and_binary_messages_each_way_arrive_byte_exact_and_in_order() {
    let s = setup(|_| {}).await;
    let dev = device_online(&s.srv, &s.dev, "PAX/A920/0001").await;
    let pos = pos_session(&s.srv, &s.pos, "PAX/A920/0001", false).await;
    let msg = |i: usize| -> Message {
        if i % 2 == 0 {
            Message::text(format!("text {i} ✓ {}", "x".repeat(i % 97)))
        } else {
            let b: Vec<u8> = (0..(i % 1500)).map(|j| (i * 31 + j) as u8).collect();
            Message::binary(b)
        }
    };
    const N: usize = 1000;
    let (pos_tx, mut pos_rx) = pos.split();
    let (dev_tx, mut dev_rx) = dev.split();
    let send_all = |mut tx: futures_util::stream::SplitSink<Ws, Message>| async move {
        for i in 0..N {
            tx.send(msg(i)).await.unwrap();
        }
        tx
    };
    let a = tokio::spawn(send_all(pos_tx));
    let b = tokio::spawn(send_all(dev_tx));
    for i in 0..N {
        assert_eq!(data_split(&mut dev_rx).await, msg(i), "to the device, #{i}");
    }
    for i in 0..N {
        assert_eq!(data_split(&mut pos_rx).await, msg(i), "to the POS, #{i}");
    }
    drop(a.await.unwrap());
    drop(b.await.unwrap());
    let m = s.srv.app.metrics.render();
    assert!(
        m.contains("snapgate_connector_messages_total{direction=\"pos_to_device\"} 1000"),
        "{m}"
    );
    assert!(
        m.contains("snapgate_connector_messages_total{direction=\"device_to_pos\"} 1000"),
        "{m}"
    );
    assert!(m.contains("snapgate_connector_sessions 1"), "{m}");
}

async fn data_split(rx: &mut futures_util::stream::SplitStream<Ws>) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return m,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a data message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_replayed_jwt_is_401_and_another_tsns_jwt_is_403() {
    let s = setup(|_| {}).await;
    let a = register(&s.srv, &s.dev, "T-1").await;
    let (url, jwt) = (a["url"].as_str().unwrap(), a["token"].as_str().unwrap());
    let _dev = ws(&s.srv, url, jwt).await.unwrap();
    assert_eq!(ws(&s.srv, url, jwt).await.err(), Some(401), "replay");
    let b = register(&s.srv, &s.dev, "T-2").await;
    let other = b["token"].as_str().unwrap();
    assert_eq!(
        ws(&s.srv, url, other).await.err(),
        Some(403),
        "T-2's JWT at T-1's URL"
    );
    // The access token is not a connection JWT, nor is a POS's session JWT.
    assert_eq!(ws(&s.srv, url, &s.dev).await.err(), Some(401));
    // Expired after its 60 s (injected clock).
    let c = register(&s.srv, &s.dev, "T-3").await;
    s.srv.clock.advance(chrono::Duration::seconds(60));
    assert_eq!(
        ws(
            &s.srv,
            c["url"].as_str().unwrap(),
            c["token"].as_str().unwrap()
        )
        .await
        .err(),
        Some(401)
    );
    // No token at all.
    assert_eq!(ws(&s.srv, url, "").await.err(), Some(401));
}

#[tokio::test]
async fn claims_are_busy_for_a_second_pos_taken_over_by_the_same_client_404_unknown_409_offline() {
    let s = setup(|_| {}).await;
    let _dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut first = pos_session(&s.srv, &s.pos, "T1", false).await;
    // Another POS client of the same store: busy, at the listener and even with takeover.
    let other = client(&s.srv, ClientRole::Pos, "M1", Some("S1"));
    let other = token(&s.srv, &other).await;
    let (a, code) = listen(
        &s.srv,
        &base(&s.srv),
        "/cloud-connector/v1/pos-listener",
        &other,
        serde_json::json!({"type": "claim", "tsn": "T1", "takeover": true}),
    )
    .await;
    assert_eq!(
        (a["error"].as_str(), a["status"].as_u64(), code),
        (Some("session_busy"), Some(409), Some(4409)),
        "{a}"
    );
    // The same client without takeover: busy too.
    let a = claim(&s.srv, &s.pos, "T1", false).await;
    assert_eq!(a["error"], "session_busy");
    // Takeover by the same client: the first POS is closed with 4001 and the new one relays.
    let mut second = pos_session(&s.srv, &s.pos, "T1", true).await;
    assert_eq!(close_code(&mut first).await, Some(4001));
    let mut dev = _dev;
    second.send(Message::text("after takeover")).await.unwrap();
    assert_eq!(data(&mut dev).await, Message::text("after takeover"));
    // Unknown, out of scope (another merchant: also unknown to it), offline.
    let a = claim(&s.srv, &s.pos, "NOPE", false).await;
    assert_eq!(
        (a["error"].as_str(), a["status"].as_u64()),
        (Some("unknown_device"), Some(404))
    );
    let stranger = client(&s.srv, ClientRole::Pos, "M2", None);
    let stranger = token(&s.srv, &stranger).await;
    let a = claim(&s.srv, &stranger, "T1", false).await;
    assert_eq!(a["error"], "unknown_device");
    let _d2 = device_online(&s.srv, &s.dev, "T2").await;
    drop(_d2); // closes without a close frame, and there is no session: offline at once
    let mut offline = None;
    for _ in 0..200 {
        let a = claim(&s.srv, &s.pos, "T2", false).await;
        if a["error"] == "device_offline" {
            offline = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(offline.expect("T2 offline")["status"], 409);
    // A POS client may not register devices, nor a device client claim.
    let listener = format!("{}/cloud-connector/v1/device-listener", base(&s.srv));
    assert_eq!(ws(&s.srv, &listener, &s.pos).await.err(), Some(403));
}

/// Abort a client's TCP connection without a close frame.
fn abort(ws: Ws) {
    drop(ws);
}

#[tokio::test]
async fn a_device_that_drops_and_returns_within_the_grace_gets_the_buffered_messages_in_order() {
    let s = setup(|c| c.connector.reconnect_grace_ms = 30_000).await;
    let dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    abort(dev);
    // Wait until the server has seen the drop (the admin status says so).
    let c = s.srv.app.connector.clone();
    for i in 0.. {
        let st = snapgate::connector::admin::devices(&c, None, 10).unwrap();
        if st["devices"][0]["in_grace"] == true {
            break;
        }
        assert!(i < 500, "the drop was not seen: {st}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..10 {
        pos.send(Message::text(format!("held {i}"))).await.unwrap();
    }
    // Buffered, not lost: wait until all ten are in.
    for i in 0.. {
        let st = snapgate::connector::admin::devices(&c, None, 10).unwrap();
        if st["devices"][0]["session"]["buffered_messages"] == 10 {
            break;
        }
        assert!(i < 500, "not buffered: {st}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut dev = device_online(&s.srv, &s.dev, "T1").await;
    pos.send(Message::text("live")).await.unwrap();
    for i in 0..10 {
        assert_eq!(data(&mut dev).await, Message::text(format!("held {i}")));
    }
    assert_eq!(data(&mut dev).await, Message::text("live"));
    dev.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(data(&mut pos).await, Message::binary(vec![1, 2, 3]));
}

#[tokio::test]
async fn after_the_grace_the_pos_is_closed_with_4002() {
    let s = setup(|c| c.connector.reconnect_grace_ms = 300).await;
    let dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    let started = std::time::Instant::now();
    abort(dev);
    assert_eq!(close_code(&mut pos).await, Some(4002));
    let took = started.elapsed();
    // Not before the grace; well within a generous bound after it.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let a = claim(&s.srv, &s.pos, "T1", false).await;
    assert_eq!(a["error"], "device_offline");
    // A device that closes cleanly ends the session at once.
    let mut dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    dev.close(None).await.unwrap();
    assert_eq!(close_code(&mut pos).await, Some(4002));
}

#[tokio::test]
async fn an_oversize_message_is_closed_with_1009_and_a_fragmented_one_under_the_limit_passes() {
    let s = setup(|c| {
        c.connector.max_frame_bytes = 16 << 10;
        c.connector.max_message_bytes = 64 << 10;
    })
    .await;
    let mut dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    // One 20 KiB frame: over the frame limit.
    pos.send(Message::binary(vec![7u8; 20 << 10]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut pos).await, Some(1009));
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    // 10 KiB is fine, a 70 KiB message is over the message limit even in small frames
    // (tungstenite's client sends one frame; send raw fragments instead).
    pos.send(Message::binary(vec![1u8; 10 << 10]))
        .await
        .unwrap();
    assert_eq!(data(&mut dev).await, Message::binary(vec![1u8; 10 << 10]));
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    for i in 0..5 {
        let last = i == 4;
        let op = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let f = Frame::message(vec![2u8; 14 << 10], op, last);
        if pos.send(Message::Frame(f)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut pos).await, Some(1009));
    let m = s.srv.app.metrics.render();
    assert!(
        m.contains("snapgate_connector_drops_total{reason=\"too_big\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn a_pos_that_does_not_answer_pings_is_dropped_and_its_session_freed() {
    // The client reads nothing, so tungstenite never answers the server's pings.
    let s = setup(|c| {
        c.connector.ping_interval_ms = 100;
        c.connector.pong_timeout_ms = 200;
    })
    .await;
    let mut dev = device_online(&s.srv, &s.dev, "T1").await;
    // The device reads (and so answers pings) all along.
    tokio::spawn(async move { while let Some(Ok(_)) = dev.next().await {} });
    let _silent = pos_session(&s.srv, &s.pos, "T1", false).await;
    let started = std::time::Instant::now();
    let mut freed = false;
    for _ in 0..500 {
        if s.srv.app.connector.registry.sessions() == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    assert!(freed, "the silent POS still holds the session");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        s.srv
            .app
            .metrics
            .relay
            .dropped(snapgate::metrics::DropReason::NoPong)
            >= 1
    );
    let _again = pos_session(&s.srv, &s.pos, "T1", false).await;
}

#[tokio::test]
async fn rapid_device_reconnects_leave_the_live_session_alone() {
    // frp#5526: many drops, each with a grace timer; only the last connection is live.
    let s = setup(|c| {
        c.connector.reconnect_grace_ms = 200;
        // The clients below sit without reading (so without answering pings) for a while.
        c.connector.ping_interval_ms = 60_000;
    })
    .await;
    let mut dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    for _ in 0..20 {
        // A new connection first (the old one is replaced with 4001), then some abrupt drops.
        let newer = device_online(&s.srv, &s.dev, "T1").await;
        assert_eq!(close_code(&mut dev).await, Some(4001));
        dev = newer;
    }
    for _ in 0..5 {
        abort(dev);
        dev = device_online(&s.srv, &s.dev, "T1").await;
    }
    // Let every stale grace timer run out (4 graces), then check the session is whole.
    tokio::time::sleep(Duration::from_millis(800)).await;
    pos.send(Message::text("still paired")).await.unwrap();
    assert_eq!(data(&mut dev).await, Message::text("still paired"));
    dev.send(Message::text("yes")).await.unwrap();
    assert_eq!(data(&mut pos).await, Message::text("yes"));
    assert_eq!(s.srv.app.connector.registry.sessions(), 1);
    assert_eq!(s.srv.app.connector.registry.devices(), 1);
}

#[tokio::test]
async fn max_sessions_and_idle_and_lifetime_limits_close_with_their_codes() {
    let s = setup(|c| {
        c.connector.max_sessions = 1;
        c.connector.idle_timeout_ms = 300;
    })
    .await;
    let _d1 = device_online(&s.srv, &s.dev, "T1").await;
    let _d2 = device_online(&s.srv, &s.dev, "T2").await;
    let mut p1 = pos_session(&s.srv, &s.pos, "T1", false).await;
    let a = claim(&s.srv, &s.pos, "T2", false).await;
    assert_eq!(
        (a["error"].as_str(), a["status"].as_u64()),
        (Some("too_many_sessions"), Some(503))
    );
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut p1).await, Some(4003));
    assert!(started.elapsed() < Duration::from_secs(5));
    let s2 = setup(|c| c.connector.max_session_ms = 300).await;
    let _d = device_online(&s2.srv, &s2.dev, "T1").await;
    let mut p = pos_session(&s2.srv, &s2.pos, "T1", false).await;
    // Traffic does not extend the absolute limit.
    p.send(Message::text("x")).await.unwrap();
    assert_eq!(close_code(&mut p).await, Some(4004));
}

#[tokio::test]
async fn two_nodes_on_one_store_send_a_pos_to_the_node_that_holds_the_device() {
    // Node A and node B: separate listeners, registries and App state; they share only the
    // store and the connector key file, as two processes on PostgreSQL would.
    let dir = tempfile::tempdir().unwrap();
    snapgate::config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut cfg = Config::load(&dir.path().join("snapgate.toml")).unwrap();
    fast(&mut cfg);
    let sled = snapgate::store::SledStore::open(&cfg.store.path).unwrap();
    let mut nodes = vec![];
    for _ in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = cfg.clone();
        c.connector.public_url = Some(format!("ws://{addr}"));
        let clock = snapgate::clock::ManualClock::new(t0());
        let app = snapgate::app::App::new(
            c,
            snapgate::config::Keys::load(&cfg.security.keys_file).unwrap(),
            sled.clone(),
            std::sync::Arc::new(clock),
        )
        .unwrap();
        tokio::spawn(snapgate::server::run(
            app.clone(),
            l,
            std::future::pending(),
        ));
        nodes.push((addr, app));
    }
    let (a_addr, a) = &nodes[0];
    let (b_addr, _b) = &nodes[1];
    let store = &*a.connector.store;
    let mk = |role| {
        oauth::add_client(
            store,
            None,
            "test",
            role,
            Scope {
                merchant: "M".into(),
                store: None,
                tsn: None,
            },
            256,
            1,
            0,
        )
        .unwrap()
    };
    let (d, p) = (mk(ClientRole::Device), mk(ClientRole::Pos));
    let tok = |addr: std::net::SocketAddr, c: &oauth::NewClient| {
        let auth = basic(&c.record.id, &c.secret);
        async move {
            let r = send(
                addr,
                "POST",
                "/oauth2/v1/test/token",
                &[FORM, ("authorization", &auth)],
                Bytes::from("grant_type=client_credentials"),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // The device registers at A; the POS gets its token from B and claims at B.
    let dev_access = tok(*a_addr, &d).await;
    let pos_access = tok(*b_addr, &p).await;
    let reg = ask_listener(
        *a_addr,
        "device-listener",
        &dev_access,
        r#"{"type":"register","tsn":"T1"}"#,
    )
    .await;
    let mut dev = ws_at(
        *a_addr,
        None,
        reg["url"].as_str().unwrap(),
        reg["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    until_online(store, "T1").await;
    let ses = ask_listener(
        *b_addr,
        "pos-listener",
        &pos_access,
        r#"{"type":"claim","tsn":"T1"}"#,
    )
    .await;
    let url = ses["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("ws://{a_addr}/")),
        "B sends the POS to A: {ses}"
    );
    let mut pos = ws_at(*a_addr, None, url, ses["token"].as_str().unwrap())
        .await
        .unwrap();
    pos.send(Message::text("across nodes")).await.unwrap();
    assert_eq!(data(&mut dev).await, Message::text("across nodes"));
    dev.send(Message::text("back")).await.unwrap();
    assert_eq!(data(&mut pos).await, Message::text("back"));
}

#[tokio::test]
async fn the_relay_works_over_wss_with_the_dev_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = snapgate::tls::write_dev_pki(&dir.path().join("tls")).unwrap();
    let srv = TestServer::start_with(|c| {
        fast(c);
        c.tls = Some(pki.tls_config(false))
    })
    .await;
    let tls = tls_client_config(&pki.ca_cert, None);
    let tls_token = |c: Client| {
        let tls = tls.clone();
        let addr = srv.addr;
        async move {
            let auth = basic(&c.id, &c.secret);
            let r = send_tls(
                addr,
                tls,
                "POST",
                "/oauth2/v1/test/token",
                &[FORM, ("authorization", &auth)],
                Bytes::from("grant_type=client_credentials"),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let dev_access = tls_token(client(&srv, ClientRole::Device, "M1", None)).await;
    let pos_access = tls_token(client(&srv, ClientRole::Pos, "M1", None)).await;
    let s = (srv, dev_access, pos_access);
    struct S {
        srv: TestServer,
        dev: String,
        pos: String,
    }
    let s = S {
        srv: s.0,
        dev: s.1,
        pos: s.2,
    };
    let wss = format!("wss://localhost:{}", s.srv.addr.port());
    let mut l = ws_at(
        s.srv.addr,
        Some(tls.clone()),
        &format!("{wss}/cloud-connector/v1/device-listener"),
        &s.dev,
    )
    .await
    .unwrap();
    l.send(Message::text(r#"{"type":"register","tsn":"T1"}"#))
        .await
        .unwrap();
    let reg = json(&mut l).await;
    assert!(
        reg["url"].as_str().unwrap().starts_with("wss://localhost:"),
        "{reg}"
    );
    let mut dev = ws_at(
        s.srv.addr,
        Some(tls.clone()),
        reg["url"].as_str().unwrap(),
        reg["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let mut l = ws_at(
        s.srv.addr,
        Some(tls.clone()),
        &format!("{wss}/cloud-connector/v1/pos-listener"),
        &s.pos,
    )
    .await
    .unwrap();
    l.send(Message::text(r#"{"type":"claim","tsn":"T1"}"#))
        .await
        .unwrap();
    let ses = json(&mut l).await;
    let mut pos = ws_at(
        s.srv.addr,
        Some(tls),
        ses["url"].as_str().unwrap(),
        ses["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    for i in 0..100u8 {
        pos.send(Message::binary(vec![i; 1000])).await.unwrap();
    }
    for i in 0..100u8 {
        assert_eq!(data(&mut dev).await, Message::binary(vec![i; 1000]));
    }
}

#[tokio::test]
async fn a_server_shutdown_closes_relayed_connections_with_1001_and_marks_devices_offline() {
    let s = setup(|_| {}).await;
    let mut dev = device_online(&s.srv, &s.dev, "T1").await;
    let mut pos = pos_session(&s.srv, &s.pos, "T1", false).await;
    let codes =
        tokio::spawn(async move { (close_code(&mut dev).await, close_code(&mut pos).await) });
    let dir = s.srv.stop().await;
    let (d, p) = codes.await.unwrap();
    assert_eq!(d, Some(1001));
    assert!(p == Some(1001) || p == Some(4002), "{p:?}");
    // The presence left behind says offline.
    let cfg = Config::load(&dir.path().join("snapgate.toml")).unwrap();
    let store = snapgate::store::engine::Engine::open_local(&cfg.store)
        .unwrap()
        .expect("the server stopped: its store is free")
        .connector()
        .unwrap();
    assert!(!store.get_device("T1").unwrap().unwrap().online);
}

#[tokio::test]
async fn the_cli_adds_lists_and_removes_clients_on_the_data_folder_and_through_the_admin_listener()
{
    let exe = env!("CARGO_BIN_EXE_snapgate");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("snapgate.toml");
    snapgate::config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .arg("connector")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "clients",
        "add",
        "--role",
        "pos",
        "--merchant",
        "ACME",
        "--store",
        "S1",
        "--domain",
        "acme",
        "--id",
        "till-1",
    ]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43, "256-bit secret: {secret}");
    assert_eq!(
        (
            v["client_id"].as_str(),
            v["role"].as_str(),
            v["store"].as_str()
        ),
        (Some("till-1"), Some("pos"), Some("S1"))
    );
    let (ok, out, _) = run(&["clients", "list"]);
    assert!(
        ok && out.contains("till-1") && !out.contains(&secret) && !out.contains("argon2"),
        "{out}"
    );
    let (ok, _, err) = run(&["clients", "add", "--role", "cashier", "--merchant", "ACME"]);
    assert!(!ok && err.contains("role must be"), "{err}");
    // While a server holds the folder: through its admin listener; the secret authenticates.
    let srv = TestServer::start_in(dir, |c| c.connector.hash_memory_kib = 1024).await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    tokio::spawn(snapgate::admin::run(
        srv.app.clone(),
        admin,
        std::future::pending(),
    ));
    let auth = basic("till-1", &secret);
    let r = srv
        .post(
            "/oauth2/v1/acme/token",
            &[FORM, ("authorization", &auth)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cfg = srv.data_dir().join("snapgate.toml");
    let via = |args: Vec<String>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(exe)
                .arg("connector")
                .args(&args)
                .arg("--config")
                .arg(&cfg)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let a = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .chain(["--admin".to_string(), admin_url.clone()])
            .collect::<Vec<_>>()
    };
    let (ok, out, err) = via(a(&[
        "clients",
        "add",
        "--role",
        "device",
        "--merchant",
        "ACME",
    ]))
    .await
    .unwrap();
    assert!(ok && out.contains("client_secret"), "{out}{err}");
    let (ok, out, err) = via(a(&["devices"])).await.unwrap();
    assert!(ok && out.contains("\"devices\""), "{out}{err}");
    let (ok, out, err) = via(a(&["clients", "remove", "till-1"])).await.unwrap();
    assert!(ok && out.contains("till-1"), "{out}{err}");
    let r = srv
        .post(
            "/oauth2/v1/acme/token",
            &[FORM, ("authorization", &auth)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, 401, "a removed client is refused: {}", r.body);
    let (ok, _, err) = via(a(&["clients", "remove", "till-1"])).await.unwrap();
    assert!(!ok && err.contains("404"), "{err}");
}

/// The device listener's answer to `bearer` registering `tsn`: (the JSON, the close code), or
/// the refused upgrade's HTTP status.
async fn try_register(
    srv: &TestServer,
    bearer: &str,
    tsn: &str,
) -> Result<(serde_json::Value, Option<u16>), u16> {
    let mut l = ws(
        srv,
        &format!("{}/cloud-connector/v1/device-listener", base(srv)),
        bearer,
    )
    .await?;
    l.send(Message::text(
        serde_json::json!({"type": "register", "tsn": tsn}).to_string(),
    ))
    .await
    .unwrap();
    let answer = json(&mut l).await;
    Ok((answer, close_code(&mut l).await))
}

/// One text message each way through a session.
async fn relays(dev: &mut Ws, pos: &mut Ws, what: &str) {
    pos.send(Message::text(format!("to device: {what}")))
        .await
        .unwrap();
    assert_eq!(data(dev).await, Message::text(format!("to device: {what}")));
    dev.send(Message::text(format!("to pos: {what}")))
        .await
        .unwrap();
    assert_eq!(data(pos).await, Message::text(format!("to pos: {what}")));
}

#[tokio::test]
async fn a_registered_terminal_connects_with_its_terminal_access_token_for_its_own_serial_only() {
    let srv = TestServer::start_with(fast).await;
    // A real RegisterTerminal over SOAP: merchant profile MP1, serial B1234567.
    let tat = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    let other = srv.register_ok(&ksn(AES_KSN_BASE, 1), "MP1|C7654321").await;
    // Its serial alone, or as make/model/serial; then the relay to a POS of its merchant profile.
    let a = register(&srv, &tat, "PAX/A920/B1234567").await;
    assert!(a["url"]
        .as_str()
        .unwrap()
        .ends_with("/cloud-connector/v1/devices/PAX/A920/B1234567"));
    let a = register(&srv, &tat, "B1234567").await;
    let mut dev = ws(
        &srv,
        a["url"].as_str().unwrap(),
        a["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let p = client(&srv, ClientRole::Pos, "MP1", None);
    let pos_access = token(&srv, &p).await;
    let mut pos = pos_session(&srv, &pos_access, "B1234567", false).await;
    relays(&mut dev, &mut pos, "hello").await;
    let d = srv
        .app
        .connector
        .store
        .get_device("B1234567")
        .unwrap()
        .unwrap();
    assert!(d.client_id.starts_with("terminal:"), "{}", d.client_id);
    assert_eq!(d.owner.merchant, "MP1");
    // A POS of another merchant does not see it.
    let q = client(&srv, ClientRole::Pos, "MP2", None);
    let a = claim(&srv, &token(&srv, &q).await, "B1234567", false).await;
    assert_eq!(a["error"], "unknown_device", "{a}");

    // Another terminal's serial, or another serial under this one's make/model: 403 / 4403.
    for tsn in ["C7654321", "PAX/A920/C7654321", "B12345678", "X1234567"] {
        let (a, code) = try_register(&srv, &tat, tsn).await.unwrap();
        assert_eq!(a["error"], "forbidden", "{tsn}: {a}");
        assert_eq!(a["status"], 403);
        assert_eq!(code, Some(4403), "{tsn}");
    }
    // A token that is not one (no dot, so not taken for a JWT) is 401 before the upgrade.
    assert_eq!(
        try_register(&srv, "bm90IGEgdG9rZW4=", "B1234567")
            .await
            .err(),
        Some(401)
    );

    // Expired (90 days on the injected clock): 401; valid again when the clock comes back.
    srv.clock.set(t0() + chrono::Duration::days(91));
    assert_eq!(
        try_register(&srv, &other, "C7654321").await.err(),
        Some(401)
    );
    srv.clock.set(t0());
    let pending = register(&srv, &other, "C7654321").await;

    // Revoked by the operator: the token is refused, and so is a connection JWT handed out
    // before the revocation.
    let id = snapgate::store::TerminalId::new(SERVICE_KEY, "C7654321");
    snapgate::admin::revoke(&*srv.app.store, &id)
        .unwrap()
        .unwrap();
    assert_eq!(
        try_register(&srv, &other, "C7654321").await.err(),
        Some(401)
    );
    assert_eq!(
        ws(
            &srv,
            pending["url"].as_str().unwrap(),
            pending["token"].as_str().unwrap()
        )
        .await
        .err(),
        Some(401)
    );
    // The live session of the other terminal is untouched.
    relays(&mut dev, &mut pos, "still here").await;
    srv.stop().await;

    // With `terminal_tokens = false` a TerminalAccessToken is not accepted.
    let srv = TestServer::start_with(|c| {
        fast(c);
        c.connector.terminal_tokens = false;
    })
    .await;
    let tat = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    assert_eq!(try_register(&srv, &tat, "B1234567").await.err(), Some(401));
}

#[tokio::test]
async fn a_claim_by_serial_alone_finds_the_fully_qualified_device_and_the_reverse_unless_ambiguous()
{
    let s = setup(|_| {}).await;
    let srv = &s.srv;
    let mut dev = device_online(srv, &s.dev, "PAX/A920/123").await;
    // By serial alone: the session is on the registered tsn, which the answer names.
    let a = claim(srv, &s.pos, "123", false).await;
    assert_eq!(a["type"], "session", "{a}");
    assert_eq!(a["tsn"], "PAX/A920/123");
    assert!(a["url"]
        .as_str()
        .unwrap()
        .ends_with("/cloud-connector/v1/sessions/PAX/A920/123"));
    let mut pos = ws(
        srv,
        a["url"].as_str().unwrap(),
        a["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    relays(&mut dev, &mut pos, "by serial").await;
    // (`pos` keeps that session: the later claims of it ask for a takeover by the same client.)

    // The reverse: a device registered by serial alone, claimed as make/model/serial.
    let mut dev2 = device_online(srv, &s.dev, "456").await;
    let a = claim(srv, &s.pos, "VRF/P400/456", false).await;
    assert_eq!(a["tsn"], "456", "{a}");
    let mut pos2 = ws(
        srv,
        a["url"].as_str().unwrap(),
        a["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    relays(&mut dev2, &mut pos2, "reverse").await;
    // Two fully qualified tsns with the same serial are different terminals.
    let a = claim(srv, &s.pos, "ING/M70/123", false).await;
    assert_eq!(a["error"], "unknown_device", "{a}");

    // A device of another merchant with the same serial is out of this POS's sight: no
    // ambiguity, and its tsn is not named.
    let n = client(srv, ClientRole::Device, "M2", None);
    let _other = device_online(srv, &token(srv, &n).await, "ING/M70/123").await;
    let a = claim(srv, &s.pos, "123", true).await;
    assert_eq!(a["tsn"], "PAX/A920/123", "{a}");
    // A second device of this merchant with serial 123: a claim by serial alone is ambiguous
    // (409 / 4409, naming both), the fully qualified claims still work.
    let _vrf = device_online(srv, &s.dev, "VRF/P400/123").await;
    let mut l = ws(
        srv,
        &format!("{}/cloud-connector/v1/pos-listener", base(srv)),
        &s.pos,
    )
    .await
    .unwrap();
    l.send(Message::text(r#"{"type":"claim","tsn":"123"}"#))
        .await
        .unwrap();
    let a = json(&mut l).await;
    assert_eq!(a["error"], "ambiguous_device", "{a}");
    assert_eq!(a["status"], 409);
    let text = a["error_description"].as_str().unwrap();
    assert!(
        text.contains("PAX/A920/123") && text.contains("VRF/P400/123"),
        "{text}"
    );
    assert!(!text.contains("ING/M70/123"), "{text}");
    assert_eq!(close_code(&mut l).await, Some(4409));
    for tsn in ["PAX/A920/123", "VRF/P400/123"] {
        let a = claim(srv, &s.pos, tsn, true).await;
        assert_eq!(a["type"], "session", "{tsn}: {a}");
        assert_eq!(a["tsn"], tsn);
    }
    // An exact registration of the serial alone wins over the fully qualified ones.
    let _bare = device_online(srv, &s.dev, "123").await;
    let a = claim(srv, &s.pos, "123", false).await;
    assert_eq!(a["tsn"], "123", "{a}");
}

#[tokio::test]
async fn presence_older_than_its_lifetime_reads_offline_and_the_heartbeat_keeps_live_devices_fresh()
{
    // A 300 ms presence lifetime on the injected clock; the heartbeat runs every 100 ms of real
    // time and stamps the injected clock's time.
    let s = setup(|c| c.connector.presence_ttl_ms = 300).await;
    let srv = &s.srv;
    let store = srv.app.connector.store.clone();
    // What a node that crashed leaves behind: its device still "online" there.
    let dead = snapgate::store::connector::DeviceRecord {
        tsn: "DEAD1".into(),
        client_id: "x".into(),
        owner: Scope {
            merchant: "M1".into(),
            store: Some("S1".into()),
            tsn: None,
        },
        node: Some("ws://127.0.0.1:9".into()),
        online: true,
        last_seen_ms: srv.now().timestamp_millis(),
    };
    store.put_device(&dead).unwrap();
    // Fresh: the POS is sent to that node.
    let a = claim(srv, &s.pos, "DEAD1", false).await;
    assert!(
        a["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ws://127.0.0.1:9/"),
        "{a}"
    );
    let _dev = device_online(srv, &s.dev, "LIVE1").await;

    // 301 ms later on the injected clock: the dead node's row is past its lifetime.
    srv.clock.advance(chrono::Duration::milliseconds(301));
    let a = claim(srv, &s.pos, "DEAD1", false).await;
    assert_eq!(a["error"], "device_offline", "{a}");
    let admin = srv.start_admin().await;
    let addr: std::net::SocketAddr = admin.trim_start_matches("http://").parse().unwrap();
    let r = send(addr, "GET", "/admin/connector/devices", &[], Bytes::new()).await;
    let v = r.json();
    let row = |tsn: &str| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["tsn"] == tsn)
            .unwrap_or_else(|| panic!("{tsn} not listed: {v}"))
            .clone()
    };
    assert_eq!(row("DEAD1")["online"], false, "{v}");
    assert_eq!(row("DEAD1")["presence_expired"], true, "{v}");
    assert_eq!(row("LIVE1")["connected_here"], true, "{v}");

    // This node's heartbeat refreshes the device it holds to the (injected) time now.
    let now = srv.now().timestamp_millis();
    wait_until(
        "the heartbeat refreshed LIVE1",
        Duration::from_secs(10),
        || store.get_device("LIVE1").unwrap().unwrap().last_seen_ms == now,
    )
    .await;
    assert!(store.get_device("LIVE1").unwrap().unwrap().live(now, 300));
    // ... and leaves the dead node's row alone.
    assert_eq!(store.get_device("DEAD1").unwrap().unwrap(), dead);
    let r = send(addr, "GET", "/admin/connector/devices", &[], Bytes::new()).await;
    let v = r.json();
    let live = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["tsn"] == "LIVE1")
        .unwrap()
        .clone();
    assert_eq!(live["online"], true, "{v}");
    assert_eq!(live["presence_expired"], false, "{v}");
    assert_eq!(srv.app.connector.refresh_presence(), 1);

    // A row another node has taken since (the device reconnected there) is that node's to
    // refresh: this node leaves it alone even while its old connection lingers here.
    let mut moved = store.get_device("LIVE1").unwrap().unwrap();
    moved.node = Some("ws://127.0.0.1:10".into());
    store.put_device(&moved).unwrap();
    srv.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(srv.app.connector.refresh_presence(), 0);
    assert_eq!(store.get_device("LIVE1").unwrap().unwrap(), moved);
}

#[tokio::test]
async fn a_terminals_pending_renewed_token_at_the_device_listener_becomes_current() {
    let srv = TestServer::start_with(fast).await;
    let old = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    // Day 30: a swipe raises the refresh flag and carries the renewed token, still pending.
    srv.clock.set(day(30));
    let renewed = srv
        .swipe("AuthorizeAndCapture", &old, &ksn(TDES_KSN_BASE, 2), "10.00")
        .await
        .assert_ok()
        .renewed_token()
        .expect("a renewed token");
    let pending = srv.record("B1234567").pending.expect("pending");
    // The old token still works until the new one is used ...
    register(&srv, &old, "B1234567").await;
    // ... and using the new one at the connector is the terminal's proof of receipt: it is
    // current (in the store) and the old one stops working, as after a transaction.
    register(&srv, &renewed, "B1234567").await;
    let r = srv.record("B1234567");
    assert_eq!(r.token_id, pending.token_id);
    assert!(r.pending.is_none());
    assert_eq!(try_register(&srv, &old, "B1234567").await.err(), Some(401));
    register(&srv, &renewed, "B1234567").await;
}
