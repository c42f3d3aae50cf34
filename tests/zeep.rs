//! A real SOAP client (Python zeep) loads our WSDL and calls the server over a real socket.
//! `scripts/test` creates the virtualenv with zeep; set SNAPGATE_PYTHON to use another Python.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Output;

pub async fn zeep(args: Vec<String>) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/zeep/client.py");
    tokio::process::Command::new(python("zeep"))
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// The client's stdout, after checking it exited 0.
fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "zeep failed: {}\n{}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

#[tokio::test]
async fn zeep_registers_a_terminal_from_our_wsdl_and_the_server_wsdl() {
    let srv = TestServer::start().await;
    let base = srv.url("");
    for (i, from_server) in [false, true].into_iter().enumerate() {
        let k = ksn(TDES_KSN_BASE, 1 + i as u32);
        let es = srv.encrypt_secret(&k, "MP1|ZEEP0001");
        let mut args = vec![];
        if from_server {
            args.push("--wsdl-from-server".to_string());
        }
        args.extend(
            ["register", &base, SERVICE_KEY, VENDOR_ID, &es, &k]
                .iter()
                .map(|s| s.to_string()),
        );
        let tok = ok_stdout(&zeep(args).await);
        assert_eq!(srv.now(), t0());
        let claims = srv.verify(&tok).expect("zeep got a valid token");
        assert_eq!(claims.device_serial, "ZEEP0001");
    }
}

#[tokio::test]
async fn zeep_sees_a_typed_authentication_fault() {
    let srv = TestServer::start().await;
    let k = ksn(TDES_KSN_BASE, 1);
    let out = zeep(
        [
            "register",
            &srv.url(""),
            SERVICE_KEY,
            VENDOR_ID,
            &"00".repeat(16),
            &k,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "FAULT AuthenticationFault 406");
}

#[tokio::test]
async fn zeep_calls_authorize_and_capture_from_the_wsdl_and_reads_the_renewed_token() {
    let srv = TestServer::start().await;
    let base = srv.url("");
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    let call = |tok: String, counter: u32| {
        let k = ksn(TDES_KSN_BASE, counter);
        let track = srv.encrypt_track(&k, TRACK2);
        let base = base.clone();
        async move {
            zeep(
                ["authorize-and-capture", &base, &tok, &track, &k, "10.00"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            )
            .await
        }
    };
    let v = ok_stdout(&call(tok.clone(), 2).await);
    assert!(v.contains("\"Status\": \"Successful\""), "{v}");
    assert!(v.contains("\"MaskedPAN\": \"545454XXXXXX5454\""), "{v}");
    assert!(v.contains("\"TerminalAccessToken\": null"), "{v}");

    srv.advance_days(30);
    let v = ok_stdout(&call(tok.clone(), 3).await);
    assert!(v.contains("\"TerminalAccessToken\": \"PHNhbWw6"), "{v}");
}

/// Issue 10 item 1: a client in WSDL mode (it calls the soap:address the WSDL names, as gSOAP,
/// Mono and Perl SOAP::Lite do) works on a non-default port and on the platform's 2.0.19 paths.
#[tokio::test]
async fn zeep_in_wsdl_mode_calls_the_address_the_served_wsdl_names() {
    let srv = TestServer::start().await;
    assert_ne!(srv.addr.port(), 8080);
    let base = srv.url("");
    for paths in [
        "/2.1.32/SIS.svc,/2.1.32/TPS.svc",
        "/2.0.19/SvcInfo,/2.0.19/Txn",
    ] {
        let w = srv
            .get(&format!("{}?wsdl", paths.split(',').nth(1).unwrap()))
            .await;
        assert!(
            w.body.contains(&format!(
                "location=\"http://{}{}\"",
                srv.addr,
                paths.split(',').nth(1).unwrap()
            )),
            "{paths}: the served address is where the client reached us"
        );
        let mode = |cmd: &[&str]| {
            let mut a = vec!["--wsdl-mode".to_string(), paths.to_string()];
            a.extend(cmd.iter().map(|s| s.to_string()));
            a
        };
        let v = ok_stdout(&zeep(mode(&["ping", &base])).await);
        assert!(v.contains("\"IsSuccess\": true"), "{paths}: {v}");

        let counter = if paths.starts_with("/2.1") { 1 } else { 3 };
        let k = ksn(TDES_KSN_BASE, counter);
        let es = srv.encrypt_secret(&k, "MP1|ZEEPWSDL");
        let tok =
            ok_stdout(&zeep(mode(&["register", &base, SERVICE_KEY, VENDOR_ID, &es, &k])).await);
        assert!(srv.verify(&tok).is_ok(), "{paths}");

        let k = ksn(TDES_KSN_BASE, counter + 1);
        let track = srv.encrypt_track(&k, TRACK2);
        let v = ok_stdout(
            &zeep(mode(&[
                "authorize-and-capture",
                &base,
                &tok,
                &track,
                &k,
                "7.00",
            ]))
            .await,
        );
        assert!(v.contains("\"Status\": \"Successful\""), "{paths}: {v}");
    }
}

#[tokio::test]
async fn the_served_wsdl_names_server_public_url_when_set() {
    let srv = TestServer::start_with(|c| {
        c.server.public_url = Some("https://gw.example.com/cws/".into());
    })
    .await;
    for (path, want) in [
        (
            "/2.1.32/SIS.svc?wsdl",
            "https://gw.example.com/cws/2.1.32/SIS.svc",
        ),
        (
            "/2.0.19/Txn?singleWsdl",
            "https://gw.example.com/cws/2.0.19/Txn",
        ),
        (
            "/wsdl/TPS.wsdl",
            "https://gw.example.com/cws/2.1.32/TPS.svc",
        ),
    ] {
        let w = srv.get(path).await;
        assert_eq!(w.status, 200, "{path}");
        assert!(
            w.body.contains(&format!("location=\"{want}\"")),
            "{path}: {}",
            w.body.lines().rev().nth(3).unwrap_or_default()
        );
        assert!(!w.body.contains("localhost:8080"), "{path}");
    }
}
