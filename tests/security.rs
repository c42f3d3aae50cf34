//! Issue 13, the security review: each hole the review found, shown over a real socket.

mod common;

use common::*;

/// Garbage under a genuine terminal's KSN proves nothing about that device: it must not lock
/// the device out (the address limit still applies to whoever sends it).
#[tokio::test]
async fn garbage_under_a_victims_ksn_does_not_lock_the_victim_out() {
    let srv = TestServer::start_with(|c| c.security.lockout.max_failures_per_address = 100).await;
    for counter in 1..=10 {
        let body = register_envelope(
            SERVICE_KEY,
            VENDOR_ID,
            &"00".repeat(16),
            &ksn(TDES_KSN_BASE, counter),
        );
        srv.soap(SIS_PATH, SIS_ACTION, &body)
            .await
            .assert_fault("AuthenticationFault", 406);
    }
    srv.register_ok(&ksn(TDES_KSN_BASE, 11), "MP1|VICTIM").await;
}

/// An address that keeps failing is locked out, even when it then sends the right secret,
/// until the lockout ends.
#[tokio::test]
async fn an_address_that_keeps_failing_is_locked_out_until_the_lockout_ends() {
    let srv = TestServer::start_with(|c| c.security.lockout.max_failures_per_address = 5).await;
    for counter in 1..=5 {
        let body = register_envelope(
            SERVICE_KEY,
            VENDOR_ID,
            &"00".repeat(16),
            &ksn(TDES_KSN_BASE, counter),
        );
        srv.soap(SIS_PATH, SIS_ACTION, &body)
            .await
            .assert_fault("AuthenticationFault", 406);
    }
    srv.register(&ksn(TDES_KSN_BASE, 6), "MP1|B1")
        .await
        .assert_fault("AuthenticationFault", 406);
    assert_eq!(srv.app.store.len(), 0);
    let m = srv.app.metrics.render();
    assert!(
        m.contains("snapgate_registrations_total{result=\"rate_limited\"} 1"),
        "{m}"
    );
    srv.clock.advance(chrono::Duration::seconds(301));
    srv.register_ok(&ksn(TDES_KSN_BASE, 7), "MP1|B1").await;
}
