//! Graceful shutdown of the real binary: SIGTERM stops accepting, finishes the request in
//! flight, flushes sled and exits 0.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_snapgate");
    let port = free_port();
    let ok = Command::new(bin)
        .args(["init", "--dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let cfg = dir.path().join("snapgate.toml");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            drop(s);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not start: {}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let k = ksn(TDES_KSN_BASE, 1);
    let es = String::from_utf8(
        Command::new(bin)
            .args([
                "encrypt-secret",
                "--ksn",
                &k,
                "--secret",
                "MP1|TERM01",
                "--config",
            ])
            .arg(&cfg)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let body = register_envelope(SERVICE_KEY, VENDOR_ID, es.trim(), &k);
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /SIS.svc HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{head}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are no longer accepted...
    let refused =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "still accepting after SIGTERM"
    );
    // ...but the request in flight is finished.
    s.write_all(tail.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
        .await
        .expect("in-flight request answered")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("RegisterTerminalResult"), "{resp}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("store flushed"), "{log}");
    // The registration answered during shutdown is on disk.
    let store = snapgate::store::SledStore::open(&dir.path().join("db")).unwrap();
    use snapgate::store::TerminalStore;
    let rec = store
        .get(&snapgate::store::TerminalId::new(SERVICE_KEY, "TERM01"))
        .unwrap();
    assert!(rec.is_some());
}
