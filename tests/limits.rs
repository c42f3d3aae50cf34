//! Slow and abusive clients: header and body timeouts (slowloris), idle keep-alive connections,
//! and the connection cap. Timeouts here are hang guards, not speed assertions.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    // Two idle keep-alive connections, each proven accepted by an answered request: they hold
    // both slots.
    let mut a = TcpStream::connect(srv.addr).await.unwrap();
    let mut b = TcpStream::connect(srv.addr).await.unwrap();
    healthz_keep_alive(&mut a).await;
    healthz_keep_alive(&mut b).await;
    // A third connection, with its whole request written, is not served yet...
    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // ...while the server goes on answering on the connections it holds (each round trip
    // passes through its accept loop's runtime, so an unbounded accept would have served it).
    for _ in 0..3 {
        healthz_keep_alive(&mut b).await;
    }
    let mut probe = [0u8; 1];
    assert!(
        matches!(third.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "served beyond max_connections"
    );
    drop(a);
    let r = read_to_close(&mut third, Duration::from_secs(10))
        .await
        .expect("served once a slot freed");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(b);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let srv = TestServer::start_with(|c| c.limits.max_header_bytes = 8192).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // Exactly the limit, and no end of headers: the server reads every byte sent, finds the
    // headers unfinished at its limit and must answer 431. (Sending more than it reads would
    // let its close reset the connection and lose the answer: an empty reply proves nothing.)
    let head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ";
    let req = format!("{head}{}", "a".repeat(8192 - head.len()));
    assert_eq!(req.len(), 8192);
    s.write_all(req.as_bytes()).await.unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    assert!(got.starts_with("HTTP/1.1 431"), "{got:?}");
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
}
