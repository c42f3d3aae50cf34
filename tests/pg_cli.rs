//! `snapgate db migrate | status | copy`, the real binary against a real PostgreSQL.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn snapgate(cfg: &Path, url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_snapgate"))
        .args(["db", "--config"])
        .arg(cfg)
        .args(args)
        .env_remove("SNAPGATE_CONFIG")
        .env("SNAPGATE_STORE_URL", url)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn migrate_is_idempotent_and_status_reports_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let url = fresh_database();
    let latest = snapgate::store::postgres::latest_version();
    let (ok, out) = snapgate(&cfg, &url, &["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("schema version 0;"), "{out}");
    let (ok, out) = snapgate(&cfg, &url, &["migrate"]);
    assert!(
        ok && out.contains(&format!("from version 0 to {latest}")),
        "{out}"
    );
    let (ok, out) = snapgate(&cfg, &url, &["migrate"]);
    assert!(ok && out.contains("already at version"), "{out}");
    let tables = shared_postgres().psql(&url, "SELECT count(*) FROM snapgate_schema");
    assert_eq!(tables, latest.to_string());
}

#[test]
fn a_password_in_the_url_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    // Wrong password on a trust server still connects; a closed port fails: either way the
    // output names the database without the password.
    let url = "postgresql://postgres:hunter2-secret@127.0.0.1:1/nowhere";
    let (ok, out) = snapgate(&cfg, url, &["status"]);
    assert!(!ok);
    assert!(!out.contains("hunter2-secret"), "{out}");
    assert!(out.contains("postgres:***@127.0.0.1:1"), "{out}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let url = fresh_database();
    assert!(snapgate(&cfg, &url, &["migrate"]).0);
    shared_postgres().psql(
        &url,
        "INSERT INTO snapgate_schema (version, name) VALUES (9999, 'future')",
    );
    let (ok, out) = snapgate(&cfg, &url, &["migrate"]);
    assert!(!ok && out.contains("newer than this binary"), "{out}");
}

#[tokio::test]
async fn copy_moves_terminals_and_transactions_verifies_and_can_be_rerun() {
    // The source is a sled folder, whatever engine the other tests run on.
    let srv =
        TestServer::start_with(|c| c.store.backend = snapgate::config::StoreBackend::Sled).await;
    let mut tokens = Vec::new();
    for i in 0..3 {
        tokens.push(
            srv.register_ok(&ksn(TDES_KSN_BASE, 1 + i), &format!("MP1|CP{i}"))
                .await,
        );
    }
    for (i, tok) in tokens.iter().enumerate() {
        srv.swipe(
            "Authorize",
            tok,
            &ksn(TDES_KSN_BASE, 10 + i as u32),
            "25.00",
        )
        .await
        .assert_ok();
    }
    let cfg = srv.data_dir().join("snapgate.toml");
    let sled_dir = srv.app.config.store.path.clone();
    let dir = srv.stop().await;
    let url = fresh_database();
    let from = sled_dir.to_str().unwrap();
    let (ok, out) = snapgate(&cfg, "", &["copy", "--from", from, "--to", &url]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "terminals 3 read, 3 inserted, 0 already present; transactions 3 read, 3 inserted"
        ),
        "{out}"
    );
    let pg = shared_postgres();
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM terminals"), "3");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM sandbox_txns"), "3");
    // The authorized (capturable) ones are indexed under copied terminals.
    assert_eq!(
        pg.psql(
            &url,
            "SELECT count(*) FROM sandbox_index i JOIN terminals t ON t.id = i.terminal \
             JOIN sandbox_txns s ON s.id = i.id"
        ),
        "3"
    );
    // A re-run keeps what is there and still verifies.
    let (ok, out) = snapgate(&cfg, "", &["copy", "--from", from, "--to", &url]);
    assert!(ok, "{out}");
    assert!(
        out.contains("terminals 3 read, 0 inserted, 3 already present; transactions 3 read, 0 inserted, 3 already present"),
        "{out}"
    );
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM terminals"), "3");
    drop(dir);
}
