//! Graceful shutdown of the real binary: SIGTERM stops accepting, finishes the request in
//! flight, flushes sled and exits 0.

mod common;

use common::*;
use snapgate::store::TerminalId;
use std::process::Command;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    // With the admin listener running too: both must stop.
    edit_config(&cfg, |c| c.server.admin_listen = Some(loopback(0)));
    let mut srv = BinaryServer::start(&cfg).await;
    let addr = srv.addr;

    // The secret as the CLI encrypts it.
    let k = ksn(TDES_KSN_BASE, 1);
    let es = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_snapgate"))
            .args([
                "encrypt-secret",
                "--ksn",
                &k,
                "--secret",
                "MP1|TERM01",
                "--config",
            ])
            .arg(&cfg)
            .env_remove("SNAPGATE_CONFIG")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let body = register_envelope(SERVICE_KEY, VENDOR_ID, es.trim(), &k);
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A first request on this keep-alive connection proves the server accepted it and serves
    // it: the request begun next is in flight on a live connection, not waiting in the backlog.
    healthz_keep_alive(&mut s).await;
    s.write_all(
        format!(
            "POST /SIS.svc HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n{head}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // hyper answers "100 Continue" once the handler reads the body: the request is then in
    // flight, not bytes still waiting in the socket (a SIGTERM before that would find the
    // connection idle and close it, which is right but not what this test is about).
    let mut seen = Vec::new();
    tokio::time::timeout(REQUEST_DEADLINE, async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("100 Continue\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "closed before 100 Continue");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("100 Continue within the deadline");

    srv.terminate();
    srv.wait_for_log("shutdown requested", Duration::from_secs(10))
        .await;
    // New connections are no longer accepted (once the accept loop has ended)...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await;
        if !matches!(c, Ok(Ok(_))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...but the request in flight is finished.
    s.write_all(tail.as_bytes()).await.unwrap();
    let resp = read_to_close(&mut s, REQUEST_DEADLINE)
        .await
        .expect("in-flight request answered and the connection closed");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("RegisterTerminalResult"), "{resp}");

    let status = srv.wait_exit().await;
    let log = srv.log();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("store flushed"), "{log}");
    // The registration answered during shutdown is on disk.
    let store = open_store(&cfg);
    let rec = store.get(&TerminalId::new(SERVICE_KEY, "TERM01")).unwrap();
    assert!(rec.is_some());
}
