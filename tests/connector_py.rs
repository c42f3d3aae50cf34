//! Test plan R with a real third-party client: Python `websockets` (tests/connector/relay.py) as
//! device and POS against the server on loopback, one case per test. `scripts/test` installs
//! websockets into .venv; SNAPGATE_PYTHON names another Python that has it.

mod common;

use common::*;
use snapgate::config::Config;
use snapgate::connector::oauth;
use snapgate::store::connector::{ClientRole, Scope};
use std::path::PathBuf;

/// Seconds, as the Python side reads them.
fn secs(ms: u64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

async fn run_case(case: &str, tls: bool, tweak: impl FnOnce(&mut Config)) {
    run_case_as(case, tls, tweak, false).await
}

/// `terminal`: the clients are merchant-wide for merchant profile MP1, and a terminal of MP1
/// registered with RegisterTerminal is passed as `--terminal TOKEN:SERIAL`.
async fn run_case_as(case: &str, tls: bool, tweak: impl FnOnce(&mut Config), terminal: bool) {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = tls.then(|| snapgate::tls::write_dev_pki(&pki_dir.path().join("tls")).unwrap());
    let tls_cfg = pki.as_ref().map(|p| p.tls_config(false));
    let srv = TestServer::start_with(|c| {
        let k = &mut c.connector;
        k.hash_memory_kib = 256;
        k.hash_iterations = 1;
        k.ping_interval_ms = 1_000;
        k.pong_timeout_ms = 1_000;
        k.reconnect_grace_ms = 1_000;
        k.send_timeout_ms = 5_000;
        c.tls = tls_cfg;
        tweak(c)
    })
    .await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(snapgate::admin::run(
        srv.app.clone(),
        admin,
        std::future::pending(),
    ));
    let mk = |role| {
        let n = oauth::add_client(
            &*srv.app.connector.store,
            None,
            "test",
            role,
            if terminal {
                Scope {
                    merchant: "MP1".into(),
                    store: None,
                    tsn: None,
                }
            } else {
                Scope {
                    merchant: "M1".into(),
                    store: Some("S1".into()),
                    tsn: None,
                }
            },
            256,
            1,
            0,
        )
        .unwrap();
        format!("{}:{}", n.record.id, n.secret.as_str())
    };
    let (device, pos, pos2) = (
        mk(ClientRole::Device),
        mk(ClientRole::Pos),
        mk(ClientRole::Pos),
    );
    let k = &srv.app.config.connector;
    let (scheme, host) = if tls {
        ("s", format!("localhost:{}", srv.addr.port()))
    } else {
        ("", srv.addr.to_string())
    };
    let mut args = vec![
        case.to_owned(),
        "--base".into(),
        format!("ws{scheme}://{host}"),
        "--http".into(),
        format!("http{scheme}://{host}"),
        "--admin".into(),
        format!("http://{admin_addr}"),
        "--device".into(),
        device,
        "--pos".into(),
        pos,
        "--pos2".into(),
        pos2,
        "--grace".into(),
        secs(k.reconnect_grace_ms),
        "--ping".into(),
        secs(k.ping_interval_ms),
        "--pong".into(),
        secs(k.pong_timeout_ms),
    ];
    if terminal {
        let tat = srv
            .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
            .await;
        args.push("--terminal".into());
        args.push(format!("{tat}:B1234567"));
    }
    if let Some(p) = &pki {
        args.push("--cafile".into());
        args.push(p.ca_cert.display().to_string());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/connector/relay.py");
    let run = tokio::process::Command::new(python("websockets"))
        .arg(script)
        .args(&args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the Python case finishes within 180 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {case}")),
        "case {case} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_token_endpoint_with_curl_and_urllib() {
    run_case("token", false, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_token_endpoint_over_https_with_the_dev_ca() {
    run_case("token", true, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_thousand_text_and_binary_messages_each_way() {
    run_case("happy", false, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_the_happy_path_over_wss_with_the_dev_ca() {
    run_case("happy", true, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_jwt_replay_is_401_and_another_tsns_jwt_is_403() {
    run_case("jwt", false, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_busy_takeover_unknown_offline() {
    run_case("claims", false, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_abrupt_drop_within_and_past_the_grace() {
    run_case("drop", false, |c| c.connector.reconnect_grace_ms = 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_a_half_open_device_is_dropped_within_ping_plus_deadline() {
    run_case("halfopen", false, |c| {
        c.connector.ping_interval_ms = 300;
        c.connector.pong_timeout_ms = 500;
        c.connector.reconnect_grace_ms = 300;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_oversize_is_1009_and_a_non_reading_peer_is_1008() {
    run_case("limits", false, |c| {
        c.connector.max_queued_bytes = 256 << 10;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_rapid_reconnects_leave_the_live_session_alone() {
    run_case("rapid", false, |c| c.connector.reconnect_grace_ms = 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_token_device_and_claims_by_serial_alone() {
    run_case_as("terminal", false, |_| {}, true).await;
}
