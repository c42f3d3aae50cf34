//! TLS and mTLS over a real socket: a rustls client (tokio-rustls and hyper's HTTP/1.1 client)
//! against the in-process server, configured with the dev PKI that `snapgate init --tls` writes.

mod common;

use bytes::Bytes;
use common::*;
use snapgate::tls::{write_dev_pki, DevPki};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh dev PKI in its own folder (kept alive by the returned TempDir).
fn dev_pki() -> (tempfile::TempDir, DevPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_dev_pki(&dir.path().join("tls")).unwrap();
    (dir, pki)
}

/// RegisterTerminal over SOAP, over TLS with `client`.
async fn register_tls(
    srv: &TestServer,
    client: std::sync::Arc<rustls::ClientConfig>,
    counter: u32,
) -> Result<HttpReply, String> {
    let ksn = ksn(TDES_KSN_BASE, counter);
    let es = srv.encrypt_secret(&ksn, "MP1|B1234567");
    let body = register_envelope(SERVICE_KEY, VENDOR_ID, &es, &ksn);
    send_tls(
        srv.addr,
        client,
        "POST",
        SIS_PATH,
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", SIS_ACTION),
        ],
        Bytes::from(body),
    )
    .await
}

#[tokio::test]
async fn register_terminal_over_https_trusting_the_dev_ca() {
    let (_d, pki) = dev_pki();
    let srv = TestServer::start_with(|c| c.tls = Some(pki.tls_config(false))).await;
    let client = tls_client_config(&pki.ca_cert, None);

    let r = register_tls(&srv, client.clone(), 1).await.unwrap();
    r.assert_ok();
    assert!(r.text_of("RegisterTerminalResult").is_some(), "{}", r.body);
    let h = send_tls(srv.addr, client, "GET", "/healthz", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));

    // A client trusting another CA (same name, other key) refuses the server.
    let (_o, other) = dev_pki();
    let e = register_tls(&srv, tls_client_config(&other.ca_cert, None), 2)
        .await
        .unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let (_d, pki) = dev_pki();
    let srv = TestServer::start_with(|c| c.tls = Some(pki.tls_config(false))).await;
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the server closes the connection");
    assert!(!got.starts_with("HTTP/"), "{got:?}");
    // The server is still fine for TLS clients.
    let client = tls_client_config(&pki.ca_cert, None);
    register_tls(&srv, client, 1).await.unwrap().assert_ok();
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let (_d, pki) = dev_pki();
    let srv = TestServer::start_with(|c| c.tls = Some(pki.tls_config(true))).await;

    let anonymous = tls_client_config(&pki.ca_cert, None);
    let e = register_tls(&srv, anonymous, 1).await.unwrap_err();
    assert!(e.contains("CertificateRequired"), "{e}");

    let (_o, other) = dev_pki();
    let stranger = tls_client_config(&pki.ca_cert, Some((&other.client_cert, &other.client_key)));
    let e = register_tls(&srv, stranger, 2).await.unwrap_err();
    // Same subject name as the dev CA, different key: the signature check fails.
    assert!(e.contains("received fatal alert"), "{e}");

    let terminal = tls_client_config(&pki.ca_cert, Some((&pki.client_cert, &pki.client_key)));
    let r = register_tls(&srv, terminal, 3).await.unwrap();
    r.assert_ok();
    assert!(r.text_of("RegisterTerminalResult").is_some(), "{}", r.body);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_header_timeout() {
    let (_d, pki) = dev_pki();
    let srv = TestServer::start_with(|c| {
        c.tls = Some(pki.tls_config(false));
        c.limits.header_timeout_ms = 300;
    })
    .await;
    // Taken before the connection exists, so the server's timer cannot start earlier.
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "expected the server to close the connection: {read:?}"
    );
    // Closed by the header timeout (300 ms), not at once and not by the 5 s hang guard.
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(3)).contains(&took),
        "closed after {took:?}"
    );
}
