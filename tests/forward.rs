//! Forward mode: snapgate authenticates the terminal and runs the refresh flow, and relays the
//! transaction to an upstream CWS endpoint: here a small upstream started by the test.

mod common;

use common::*;

const UPSTREAM_FAULT: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>nope</faultstring><detail><CWSFault xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions/Faults"><ErrorID>326</ErrorID><ProblemType>upstream says no</ProblemType></CWSFault></detail></s:Fault></s:Body></s:Envelope>"#;

#[tokio::test]
async fn forward_mode_relays_the_transaction_and_still_runs_the_refresh_flow() {
    let up = Upstream::start(200, UPSTREAM_OK).await;
    let srv = TestServer::start_with(|c| {
        forward_to(c, up.url(TPS_PATH));
        c.processor.upstream_session_token = Some("UPSTREAM-SESSION".into());
    })
    .await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    let r = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "10.00")
        .await;
    r.assert_ok();
    assert_eq!(
        r.text_of("TransactionId").as_deref(),
        Some("CCED01ACF1F44E5A8DAE8E956EFD1DE5")
    );
    assert_eq!(
        find(&r.xml(), "AuthorizeAndCaptureResult")
            .unwrap()
            .type_name(),
        Some("BankcardTransactionResponsePro")
    );
    assert_eq!(r.renewed_token(), None);
    {
        let seen = up.requests();
        let (action, body) = &seen[0];
        assert_eq!(
            action,
            &format!("\"{}\"", tps_action("AuthorizeAndCapture"))
        );
        assert!(body.contains("UPSTREAM-SESSION"), "{body}");
        assert!(
            !body.contains(&tok),
            "the terminal's token is not sent upstream"
        );
        assert!(body.contains("SecurePaymentAccountData"), "{body}");
    }
    // Day 30: the relayed response carries the renewed token too.
    srv.advance_days(30);
    let r = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 3), "10.00")
        .await;
    assert!(r.assert_ok().renewed_token().is_some());
    // Authentication still happens locally: a bad token never reaches the upstream.
    let before = up.requests().len();
    srv.swipe(
        "AuthorizeAndCapture",
        "garbage",
        &ksn(TDES_KSN_BASE, 4),
        "1.00",
    )
    .await
    .assert_fault("InvalidTokenFault", 5005);
    assert_eq!(up.requests().len(), before);
}

#[tokio::test]
async fn upstream_faults_get_our_fault_and_an_unreachable_upstream_is_a_connection_fault() {
    let up = Upstream::start(500, UPSTREAM_FAULT).await;
    let srv = TestServer::start_with(|c| forward_to(c, up.url("/TPS.svc"))).await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    let r = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await;
    // Our fault, not the upstream's text (tests/security.rs an_upstream_fault_is_not_relayed_verbatim).
    r.assert_fault("CWSFault", 326);
    assert_eq!(
        r.text_of("ProblemType").as_deref(),
        Some(snapgate::cws::error::UPSTREAM_REFUSED_PROBLEM)
    );

    // Nothing listens on this port.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let srv = TestServer::start_with(|c| {
        forward_to(c, format!("http://{dead}/TPS.svc"));
        c.processor.upstream_timeout_ms = 2_000;
    })
    .await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_fault("CWSConnectionFault", 328);
}

/// A swipe through a node forwarding over HTTPS to `up`, trusting only `ca`.
async fn swipe_via_https(up: &Upstream, ca: std::path::PathBuf) -> HttpReply {
    let srv = TestServer::start_with(|c| {
        forward_to(c, up.url(TPS_PATH));
        c.processor.allow_insecure_upstream = false;
        c.processor.upstream_ca_file = Some(ca.clone());
    })
    .await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "10.00")
        .await
}

/// Production forward mode: an HTTPS upstream, verified against the configured CA (the dev
/// PKI's); plain HTTP no longer allowed. The same upstream with a CA that did not sign it is a
/// connection fault, never a relayed card.
#[tokio::test]
async fn an_https_upstream_is_verified_against_the_configured_ca() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = snapgate::tls::write_dev_pki(&pki_dir.path().join("pki")).unwrap();
    let acceptor = snapgate::tls::acceptor(&pki.tls_config(false)).unwrap();
    let up = Upstream::start_tls(200, UPSTREAM_OK, acceptor).await;
    let r = swipe_via_https(&up, pki.ca_cert.clone()).await;
    r.assert_ok();
    assert_eq!(
        r.text_of("TransactionId").as_deref(),
        Some("CCED01ACF1F44E5A8DAE8E956EFD1DE5")
    );
    assert_eq!(up.requests().len(), 1);
    // Another CA: the TLS handshake fails, the terminal gets a fault, nothing was sent.
    let other_dir = tempfile::tempdir().unwrap();
    let other = snapgate::tls::write_dev_pki(&other_dir.path().join("pki")).unwrap();
    let r = swipe_via_https(&up, other.ca_cert.clone()).await;
    assert!(!r.successful() && r.fault().is_some(), "{}", r.body);
    assert_eq!(up.requests().len(), 1, "nothing reached the upstream");
}

/// Forward mode checks the card's counter in the same store trip that settles it: a replayed
/// counter is refused before anything is settled or relayed, and the next counter still goes.
#[tokio::test]
async fn forward_mode_refuses_a_replayed_counter_before_settling_or_relaying() {
    let up = Upstream::start(200, UPSTREAM_OK).await;
    let srv = TestServer::start_with(|c| {
        forward_to(c, up.url(TPS_PATH));
        c.processor.upstream_session_token = Some("UPSTREAM-SESSION".into());
    })
    .await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_ok();
    assert_eq!(up.requests().len(), 1);
    srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_fault("AuthenticationFault", 406);
    assert_eq!(up.requests().len(), 1, "a refused request is not relayed");
    let stored = |srv: &TestServer| {
        let id = snapgate::store::TerminalId::new(SERVICE_KEY, "B1");
        srv.app.store.get(&id).unwrap().unwrap().last_counter
    };
    assert_eq!(stored(&srv), 2, "the refusal settled nothing");
    srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 3), "1.00")
        .await
        .assert_ok();
    assert_eq!(up.requests().len(), 2);
    assert_eq!(stored(&srv), 3);
}
