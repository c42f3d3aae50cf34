//! Operator tooling: /metrics and /healthz on the admin listener, terminal list/show/revoke/
//! refresh over it and from the CLI, signing-key rotation and live reload.

mod common;

use common::*;
use hyper::Method;
use snapgate::admin;
use std::process::Command;

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test]
async fn metrics_count_registrations_transactions_renewals_and_faults() {
    let srv = TestServer::start().await;
    let base = srv.start_admin().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let unknown_bdk = register_envelope(
        SERVICE_KEY,
        VENDOR_ID,
        &"00".repeat(16),
        "ABCDEF0123456789E001",
    );
    srv.soap("/SIS.svc", SIS_ACTION, &unknown_bdk)
        .await
        .assert_fault("AuthenticationFault", 406);
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_ok();
    srv.swipe("Authorize", "junk", &ksn(TDES_KSN_BASE, 3), "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    srv.advance_days(30);
    assert!(srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 4), "1.00")
        .await
        .renewed_token()
        .is_some());

    let (status, text) = admin::call(&base, Method::GET, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "snapgate_registrations_total{result=\"ok\"}"),
        1
    );
    assert_eq!(
        metric(
            &text,
            "snapgate_registrations_total{result=\"unknown_key_set\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "snapgate_transactions_total{operation=\"Authorize\",outcome=\"ok\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "snapgate_transactions_total{operation=\"Authorize\",outcome=\"invalid_token\"}"
        ),
        1
    );
    assert_eq!(metric(&text, "snapgate_tokens_renewed_total"), 1);
    assert_eq!(
        metric(&text, "snapgate_faults_total{kind=\"authentication\"}"),
        1
    );
    assert_eq!(
        metric(
            &text,
            "snapgate_request_duration_seconds_count{operation=\"RegisterTerminal\"}"
        ),
        2
    );
    let (status, body) = admin::call(&base, Method::GET, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn admin_endpoints_list_show_revoke_and_force_a_refresh() {
    let srv = TestServer::start().await;
    let base = srv.start_admin().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let (_, list) = admin::call(&base, Method::GET, "/admin/terminals")
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = list[0]["terminal_id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["device_serial"], "B1");
    assert!(!list.to_string().contains(&tok), "tokens are never shown");

    // Refresh: the next swipe gets a renewed token although the token is a day old.
    srv.advance_days(1);
    let (status, v) = admin::call(
        &base,
        Method::POST,
        &format!("/admin/terminals/{id}/refresh"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{v}");
    let r = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await;
    assert!(r.assert_ok().renewed_token().is_some());

    // Revoke by service key and serial: the token stops working at once.
    let path = format!("/admin/terminals/{SERVICE_KEY}/B1/revoke");
    let (status, v) = admin::call(&base, Method::POST, &path).await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(v.contains("\"revoked\":true"), "{v}");
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 3), "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    let (status, _) = admin::call(
        &base,
        Method::GET,
        &format!("/admin/terminals/{}", "00".repeat(16)),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    // Registering again brings it back.
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 4), "MP1|B1").await;
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 5), "1.00")
        .await
        .assert_ok();
}

#[tokio::test]
async fn rotated_keys_and_new_lifetimes_apply_on_reload_and_old_tokens_keep_working() {
    let srv = TestServer::start().await;
    let old = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let keys_file = srv.app.config.security.keys_file.clone();
    let old_kid = srv.app.keys().signing.active().kid().to_owned();
    let new_kid = snapgate::config::rotate_signing_key(&keys_file).unwrap();
    let cfg_file = srv.data_dir().join("snapgate.toml");
    let text = std::fs::read_to_string(&cfg_file).unwrap();
    std::fs::write(
        &cfg_file,
        text.replace("lifetime_days = 90", "lifetime_days = 45"),
    )
    .unwrap();
    srv.app.reload().unwrap();
    assert_eq!(srv.app.keys().signing.active().kid(), new_kid);
    assert_eq!(srv.app.token().lifetime_days, 45);

    // The old token (old key) still works; new tokens use the new key and lifetime.
    srv.swipe("Authorize", &old, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_ok();
    let new = srv.register_ok(&ksn(TDES_KSN_BASE, 3), "MP1|B2").await;
    let decoded = snapgate::token::decode_unverified(&new).unwrap();
    assert!(decoded.contains(&format!("<ds:KeyName>{new_kid}</ds:KeyName>")));
    assert!(!decoded.contains(&old_kid));
    let c = snapgate::token::verify(
        &srv.app.keys().signing,
        &new,
        t0(),
        chrono::Duration::zero(),
    )
    .unwrap();
    assert_eq!(
        c.claims().not_on_or_after,
        t0() + chrono::Duration::days(45)
    );

    // A broken key file is refused and the running keys stay.
    std::fs::write(&keys_file, "garbage").unwrap();
    assert!(srv.app.reload().is_err());
    assert_eq!(srv.app.keys().signing.active().kid(), new_kid);
}

#[tokio::test]
async fn cli_lists_shows_revokes_and_rotates_on_the_data_folder() {
    let srv = TestServer::start().await;
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|CLI01").await;
    let dir = srv.stop().await;
    let cfg = dir.path().join("snapgate.toml");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_snapgate"))
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
    let (ok, out, err) = run(&["terminals", "list"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["device_serial"], "CLI01");
    assert_eq!(v[0]["refresh_flag"], false);
    let serial = format!("{SERVICE_KEY}/CLI01");
    let (ok, out, err) = run(&["terminals", "refresh", &serial]);
    assert!(ok, "{err}");
    assert!(out.contains("\"refresh_flag\": true"), "{out}");
    let (ok, out, _) = run(&["terminals", "revoke", &serial]);
    assert!(ok && out.contains("\"revoked\": true"), "{out}");
    let (ok, _, err) = run(&["terminals", "show", &format!("{SERVICE_KEY}/NOPE")]);
    assert!(!ok && err.contains("no such terminal"), "{err}");
    let (ok, out, err) = run(&["keys", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains("new active signing key"), "{out}");
    let keys = std::fs::read_to_string(dir.path().join("keys.toml")).unwrap();
    assert_eq!(keys.matches("[[signing_key]]").count(), 2);
    assert!(
        !out.contains(&keys[keys.find("key = \"").unwrap() + 7..][..16]),
        "key printed"
    );
}

#[tokio::test]
async fn replaying_a_serials_registration_locks_that_serial_out() {
    let srv = TestServer::start_with(|c| c.security.lockout.max_failures_per_device = 3).await;
    srv.register_ok(&ksn(TDES_KSN_BASE, 10), "MP1|VICTIM").await;
    // A captured registration replayed as is: the secret is genuine, so besides the address and
    // the KSN device, the serial is known and counted too.
    let captured = ksn(TDES_KSN_BASE, 10);
    let es = srv.encrypt_secret(&captured, "MP1|VICTIM");
    for _ in 0..3 {
        srv.soap(
            "/SIS.svc",
            SIS_ACTION,
            &register_envelope(SERVICE_KEY, VENDOR_ID, &es, &captured),
        )
        .await
        .assert_fault("AuthenticationFault", 406);
    }
    // Locked now, even with a fresh counter.
    srv.register(&ksn(TDES_KSN_BASE, 11), "MP1|VICTIM")
        .await
        .assert_fault("AuthenticationFault", 406);
    let m = srv.app.metrics.render();
    assert!(
        m.contains("snapgate_registrations_total{result=\"replay\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("snapgate_registrations_total{result=\"rate_limited\"} 1"),
        "{m}"
    );
    srv.clock.advance(chrono::Duration::seconds(301));
    srv.register_ok(&ksn(TDES_KSN_BASE, 12), "MP1|VICTIM").await;
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn rest_registrations_are_timed_and_counted_like_soap_ones() {
    let srv = TestServer::start().await;
    let base = srv.start_admin().await;
    let path = format!("/2.1.32/REST/SIS.svc/registerTerminal/{SERVICE_KEY}/{VENDOR_ID}");
    let k = ksn(TDES_KSN_BASE, 1);
    let good = format!(
        "Basic {}",
        b64(&format!("{}:{k}", srv.encrypt_secret(&k, "MP1|REST01")))
    );
    assert_eq!(
        srv.post(&path, &[("authorization", &good)], "")
            .await
            .status,
        200
    );
    let bad = format!("Basic {}", b64(&format!("{}:{k}", "00".repeat(16))));
    assert_eq!(
        srv.post(&path, &[("authorization", &bad)], "").await.status,
        401
    );

    let (_, text) = admin::call(&base, Method::GET, "/metrics").await.unwrap();
    assert_eq!(
        metric(
            &text,
            "snapgate_request_duration_seconds_count{operation=\"RegisterTerminal\"}"
        ),
        2
    );
    assert_eq!(
        metric(&text, "snapgate_faults_total{kind=\"authentication\"}"),
        1
    );
}

/// Issue 10 item 4: only `serve` and `init` write a dev setup. Operator commands run in a
/// folder without a config fail with a message saying what to pass, and create nothing; with
/// `--admin` they need no config at all.
#[tokio::test]
async fn operator_commands_never_create_a_dev_setup() {
    let srv = TestServer::start().await;
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|NODEV01").await;
    let admin = srv.start_admin().await;
    let empty = tempfile::tempdir().unwrap();
    // tokio's Command: the admin listener runs on this test's runtime meanwhile.
    let run = |args: &[&str]| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_snapgate"))
            .args(args)
            .current_dir(empty.path())
            .env_remove("SNAPGATE_CONFIG")
            .env_remove("SNAPGATE_ADMIN")
            .output();
        async move {
            let out = out.await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    for args in [
        &["terminals", "list"][..],
        &["keys", "rotate"],
        &["reload"],
        &[
            "encrypt-secret",
            "--ksn",
            TDES_KSN_BASE,
            "--secret",
            "MP1|X",
        ],
    ] {
        let (ok, _, err) = run(args).await;
        assert!(!ok, "{args:?} succeeded without a config");
        assert!(
            err.contains("--config") && err.contains("snapgate init"),
            "{args:?}: the message says what to pass: {err}"
        );
    }
    let (ok, out, err) = run(&["terminals", "--admin", &admin, "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("NODEV01"), "{out}");
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing was created in the working folder"
    );
}

/// Issue 10 item 2: `snapgate merchants add|list|show|remove` on the data folder and through
/// the admin endpoints, and RegisterTerminal following what is declared.
#[tokio::test]
async fn merchants_cli_and_admin_endpoints_declare_the_profiles_registration_accepts() {
    let srv = TestServer::start().await;
    let admin = srv.start_admin().await;
    let run = |args: Vec<String>| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_snapgate"))
            .args(args)
            .env_remove("SNAPGATE_ADMIN")
            .output();
        async move {
            let out = out.await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let remote = |a: &[&str]| {
        let mut v: Vec<String> = vec!["merchants".into(), "--admin".into(), admin.clone()];
        v.extend(a.iter().map(|s| s.to_string()));
        v
    };
    // The dev setup declares MP1 and MP2.
    let (ok, out, err) = run(remote(&["list", "--service-key", SERVICE_KEY])).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["merchant_profile_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["MP1", "MP2"]);

    srv.register(&ksn(TDES_KSN_BASE, 1), "MP-777|S1")
        .await
        .assert_fault("AuthenticationFault", 406);
    let (ok, out, err) = run(remote(&[
        "add",
        "--service-key",
        SERVICE_KEY,
        "MP-777",
        "--name",
        "Corner shop",
        "--serial",
        "S1",
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"Corner shop\""), "{out}");
    srv.register_ok(&ksn(TDES_KSN_BASE, 2), "MP-777|S1").await;
    srv.register(&ksn(TDES_KSN_BASE, 3), "MP-777|S2")
        .await
        .assert_fault("AuthenticationFault", 406);
    let one = format!("{SERVICE_KEY}/MP-777");
    let (ok, out, _) = run(remote(&["show", &one])).await;
    assert!(ok && out.contains("\"S1\""), "{out}");
    let (ok, _, _) = run(remote(&["remove", &one])).await;
    assert!(ok);
    let (ok, _, err) = run(remote(&["show", &one])).await;
    assert!(!ok && err.contains("404"), "{err}");
    srv.register(&ksn(TDES_KSN_BASE, 4), "MP-777|S1")
        .await
        .assert_fault("AuthenticationFault", 406);
    // Bad input is a clear 400, nothing stored.
    let (ok, out, _) = run(remote(&["add", "--service-key", SERVICE_KEY, "A|B"])).await;
    assert!(!ok && out.contains("error"), "{out}");

    // On the data folder of a stopped server (this one's admin task holds its folder).
    let dir = TestServer::start().await.stop().await;
    let cfg = dir.path().join("snapgate.toml");
    let local = |a: &[&str]| {
        let mut v: Vec<String> = vec!["merchants".into(), "--config".into()];
        v.push(cfg.display().to_string());
        v.extend(a.iter().map(|s| s.to_string()));
        v
    };
    let (ok, _, err) = run(local(&["add", "--service-key", "SK2", "MPX", "--inactive"])).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(local(&["show", "SK2/MPX"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"active\": false"), "{out}");
    let (ok, out, _) = run(local(&["list"])).await;
    assert!(ok && out.contains("MPX") && out.contains("MP1"), "{out}");
}
