//! Logs never carry a secret: no token, no clear PAN, no BDK, no signing key, no secret
//! ciphertext, even at trace level, through registrations, failures, transactions and renewals.
//! One test in this file: it installs the process-wide log subscriber.

mod common;

use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_pan_or_token_reaches_the_logs() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let srv = TestServer::start().await;
    let k1 = ksn(TDES_KSN_BASE, 1);
    let secret_ct = srv.encrypt_secret(&k1, "MP1|B1234567");
    let tok = srv.register_ok(&k1, "MP1|B1234567").await;
    srv.register(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await
        .assert_fault("AuthenticationFault", 406);
    let k2 = ksn(TDES_KSN_BASE, 2);
    let track_ct = srv.encrypt_track(&k2, TRACK2);
    srv.swipe("AuthorizeAndCapture", &tok, &k2, "10.00")
        .await
        .assert_ok();
    srv.advance_days(31);
    let renewed = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 3), "10.00")
        .await
        .renewed_token()
        .unwrap();
    srv.swipe("Authorize", &renewed, &ksn(TDES_KSN_BASE, 4), "1.00")
        .await
        .assert_ok();
    srv.swipe("Authorize", "bogus-token", &ksn(TDES_KSN_BASE, 5), "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("terminal registered"),
        "the logs were captured:\n{logs}"
    );
    assert!(logs.contains("renewed token appended"));
    assert!(logs.contains("\"id\":"), "request ids are logged");
    let keys = srv.app.keys();
    let signing_hex = keys.signing.active().key_hex();
    let forbidden: Vec<(&str, &str)> = vec![
        ("token", &tok[..40]),
        ("renewed token", &renewed[..40]),
        ("clear PAN", "5454545454545454"),
        ("BDK", snapgate::config::ANSI_TEST_BDK),
        ("AES BDK", snapgate::config::AES_TEST_BDK),
        ("signing key", &signing_hex[..32]),
        ("secret ciphertext", &secret_ct),
        ("track ciphertext", &track_ct),
        ("clear secret", "MP1|B1234567"),
    ];
    for (what, s) in forbidden {
        assert!(!logs.contains(s), "{what} found in the logs");
        assert!(
            !logs.to_lowercase().contains(&s.to_lowercase()),
            "{what} (any case) found in the logs"
        );
    }
}
