//! Acknowledged means durable, seen by an operator: every answered registration and sale waited
//! for a group-commit flush, and every flush ran fdatasync on sled's log (`/metrics`).

mod common;

use common::*;
use hyper::Method;
use snapgate::admin;

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test]
async fn every_acknowledged_write_waited_for_a_flush_and_every_flush_fdatasynced() {
    let srv = TestServer::start().await;
    let base = srv.start_admin().await;
    let (_, text) = admin::call(&base, Method::GET, "/metrics").await.unwrap();
    let (flushes0, waiters0, syncs0) = (
        metric(&text, "snapgate_store_flushes_total"),
        metric(&text, "snapgate_store_flush_waiters_total"),
        metric(&text, "snapgate_store_fdatasync_total"),
    );
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    for i in 2..5 {
        srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, i), "1.00")
            .await
            .assert_ok();
    }
    let (_, text) = admin::call(&base, Method::GET, "/metrics").await.unwrap();
    let flushes = metric(&text, "snapgate_store_flushes_total") - flushes0;
    let waiters = metric(&text, "snapgate_store_flush_waiters_total") - waiters0;
    let syncs = metric(&text, "snapgate_store_fdatasync_total") - syncs0;
    // One after the other: each of the 4 answers waited for a flush of its own.
    assert_eq!(waiters, 4);
    assert_eq!(flushes, 4);
    // Each flush synced the log (interning a new name syncs it as well, hence not equal; the
    // store's unit test counts exactly one per flush).
    assert!(syncs >= flushes, "{text}");
}
