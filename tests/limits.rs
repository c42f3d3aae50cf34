//! Slow and abusive clients: header and body timeouts (slowloris), idle keep-alive connections,
//! and the connection cap. Timeouts here are hang guards, not speed assertions.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the server closes the connection (or `limit` passes); returns what was read.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let srv = TestServer::start_with(|c| c.limits.header_timeout_ms = 300).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /SIS.svc HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(got.is_some(), "the server kept a half-sent request open");
    // The server is fine for everyone else.
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_a_408_fault() {
    let srv = TestServer::start_with(|c| c.limits.body_timeout_ms = 300).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(
        b"POST /SIS.svc HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<s:Envelope",
    )
    .await
    .unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("CWSValidationResultFault"), "{got}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let srv = TestServer::start_with(|c| c.limits.header_timeout_ms = 300).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 15];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    // Now say nothing: the server must not keep the socket forever.
    let rest = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(rest.is_some(), "idle keep-alive connection never closed");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let srv = TestServer::start_with(|c| {
        c.limits.max_connections = 2;
        c.limits.header_timeout_ms = 60_000;
    })
    .await;
    let a = TcpStream::connect(srv.addr).await.unwrap();
    let b = TcpStream::connect(srv.addr).await.unwrap();
    // Both slots are held by idle connections: a third request is not served yet.
    let third = tokio::spawn({
        let addr = srv.addr;
        async move { send(addr, "GET", "/healthz", &[], bytes::Bytes::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served beyond max_connections");
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(r.status, 200);
    drop(b);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let srv = TestServer::start_with(|c| c.limits.max_header_bytes = 8192).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let big = "a".repeat(20_000);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 431"), "{got}");
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
}
