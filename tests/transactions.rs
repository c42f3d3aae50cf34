//! TPS operations over a real socket: every operation, the sandbox state machine, token faults,
//! device binding and replay.

mod common;

use common::*;

async fn registered(srv: &TestServer) -> String {
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await
}

#[tokio::test]
async fn authorize_capture_return_walks_the_state_machine() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;

    let r = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "25.00")
        .await;
    r.assert_ok();
    let x = r.xml();
    let result = find(&x, "AuthorizeResult").unwrap();
    assert_eq!(result.type_name(), Some("BankcardTransactionResponsePro"));
    assert_eq!(r.text_of("Status").as_deref(), Some("Successful"));
    assert_eq!(r.text_of("StatusCode").as_deref(), Some("000"));
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Authorized"));
    assert_eq!(
        r.text_of("CaptureState").as_deref(),
        Some("ReadyForCapture")
    );
    assert_eq!(r.text_of("MaskedPAN").as_deref(), Some("545454XXXXXX5454"));
    assert_eq!(r.text_of("CardType").as_deref(), Some("MasterCard"));
    assert_eq!(r.text_of("Amount").as_deref(), Some("25.00"));
    assert_eq!(r.text_of("ApprovalCode").unwrap().len(), 6);
    assert!(
        !r.body.contains("5454545454545454"),
        "clear PAN in the response"
    );
    let id = r.text_of("TransactionId").unwrap();
    assert_eq!(id.len(), 32);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_eq!(r.renewed_token(), None);

    let r = srv
        .follow("Capture", &tok, &id, "<b:Amount>20.00</b:Amount>")
        .await;
    r.assert_ok();
    assert_eq!(
        find(&r.xml(), "CaptureResult").unwrap().type_name(),
        Some("BankcardCaptureResponse")
    );
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Captured"));

    // Capturing twice is a state fault naming the transaction and its state.
    let r = srv.follow("Capture", &tok, &id, "").await;
    r.assert_fault("CWSFault", 326);
    assert_eq!(r.text_of("TransactionId").as_deref(), Some(id.as_str()));
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Captured"));

    let r = srv
        .follow("ReturnById", &tok, &id, "<b:Amount>5.00</b:Amount>")
        .await;
    r.assert_ok();
    let refund = r.text_of("TransactionId").unwrap();
    assert_ne!(refund, id);
    assert_eq!(
        r.text_of("OriginatorTransactionId").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(r.text_of("Amount").as_deref(), Some("5.00"));
    assert_eq!(
        srv.app.sandbox.get(&id).unwrap().unwrap().returned_cents,
        500
    );

    // 15.00 remain captured: 15.01 is too much, 15.00 is fine, then nothing is left.
    srv.follow("ReturnById", &tok, &id, "<b:Amount>15.01</b:Amount>")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    srv.follow("ReturnById", &tok, &id, "<b:Amount>15.00</b:Amount>")
        .await
        .assert_ok();
    srv.follow("ReturnById", &tok, &id, "<b:Amount>0.01</b:Amount>")
        .await
        .assert_fault("CWSFault", 326);
    // A follow-up never carries track data, so never a token either.
    assert!(!srv
        .app
        .sandbox
        .get(&id)
        .unwrap()
        .unwrap()
        .masked_pan
        .contains("5454545454545454"));
}

#[tokio::test]
async fn undo_adjust_and_capture_all() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    let sale = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "10.00")
        .await;
    sale.assert_ok();
    assert_eq!(sale.text_of("CaptureState").as_deref(), Some("Captured"));
    let sale_id = sale.text_of("TransactionId").unwrap();

    let r = srv.follow("Undo", &tok, &sale_id, "").await;
    r.assert_ok();
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Undone"));
    srv.follow("Undo", &tok, &sale_id, "")
        .await
        .assert_fault("CWSFault", 326);
    srv.follow("Capture", &tok, &sale_id, "")
        .await
        .assert_fault("CWSFault", 326);
    srv.follow("ReturnById", &tok, &sale_id, "")
        .await
        .assert_fault("CWSFault", 326);

    let a1 = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 3), "1.00")
        .await;
    let a1 = a1.text_of("TransactionId").unwrap();
    let a2 = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 4), "2.00")
        .await;
    let a2 = a2.text_of("TransactionId").unwrap();
    let r = srv
        .follow("Adjust", &tok, &a2, "<t:Amount>1.00</t:Amount>")
        .await;
    r.assert_ok();
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Adjusted"));
    assert_eq!(r.text_of("Amount").as_deref(), Some("3.00"));

    let r = srv
        .tps(
            "CaptureAll",
            &fixture(
                "tps/capture_all.xml",
                &[("TOKEN", &tok), ("MERCHANT", "MP1")],
            ),
        )
        .await;
    r.assert_ok();
    let x = r.xml();
    let results: Vec<_> = find(&x, "CaptureAllResult")
        .unwrap()
        .children
        .iter()
        .collect();
    let mut ids: Vec<String> = results
        .iter()
        .map(|e| e.child_text("TransactionId").unwrap().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "only the two authorized transactions are captured"
    );
    assert_eq!(
        srv.app.sandbox.get(&a2).unwrap().unwrap().captured_cents,
        300
    );
}

#[tokio::test]
async fn decline_triggers_and_return_unlinked() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    for (i, (amount, code, msg)) in [
        ("1.13", "013", "INVLD AMOUNT"),
        ("2.05", "005", "DECLINE"),
        ("3.51", "051", "INSUFF FUNDS"),
    ]
    .iter()
    .enumerate()
    {
        let r = srv
            .swipe(
                "AuthorizeAndCapture",
                &tok,
                &ksn(TDES_KSN_BASE, 2 + i as u32),
                amount,
            )
            .await;
        r.assert_ok();
        assert_eq!(r.text_of("Status").as_deref(), Some("Failure"));
        assert_eq!(r.text_of("StatusCode").as_deref(), Some(*code));
        assert_eq!(r.text_of("StatusMessage").as_deref(), Some(*msg));
        assert_eq!(r.text_of("TransactionState").as_deref(), Some("Declined"));
        assert_eq!(r.text_of("CaptureState").as_deref(), Some("CannotCapture"));
        let id = r.text_of("TransactionId").unwrap();
        srv.follow("Capture", &tok, &id, "")
            .await
            .assert_fault("CWSFault", 326);
    }
    let r = srv
        .swipe("ReturnUnlinked", &tok, &ksn(TDES_KSN_BASE, 9), "4.00")
        .await;
    r.assert_ok();
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Returned"));
    let r = srv.keyed("Authorize", &tok, "MP1", "5.00").await;
    r.assert_ok();
    assert_eq!(r.text_of("MaskedPAN").as_deref(), Some("401288XXXXXX1881"));
    assert_eq!(r.text_of("CardType").as_deref(), Some("Visa"));
}

#[tokio::test]
async fn malformed_transactions_get_validation_faults() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    for amount in ["-1.00", "abc", "0.00", "1.001"] {
        srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), amount)
            .await
            .assert_fault("CWSValidationResultFault", 325);
    }
    // Track data that is not a card, and a keyed PAN failing its check digit.
    let k = ksn(TDES_KSN_BASE, 3);
    let junk = srv.encrypt_track(&k, "hello world");
    let body = fixture(
        "tps/new_transaction.xml",
        &[
            ("OP", "Authorize"),
            ("TOKEN", &tok),
            ("TRACK", &junk),
            ("KSN", &k),
            ("AMOUNT", "1.00"),
            ("REFERENCE", "x"),
        ],
    );
    srv.tps("Authorize", &body)
        .await
        .assert_fault("CWSValidationResultFault", 325);
    let body = fixture(
        "tps/keyed_transaction.xml",
        &[
            ("OP", "Authorize"),
            ("TOKEN", &tok),
            ("PAN", "4012888888881882"),
            ("AMOUNT", "1.00"),
            ("MERCHANT", "MP1"),
        ],
    );
    srv.tps("Authorize", &body)
        .await
        .assert_fault("CWSValidationResultFault", 325);
    // Another merchant profile than the token's.
    srv.keyed("Authorize", &tok, "MP2", "1.00")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    // A transaction id that is not one, and one that does not exist.
    srv.follow("Capture", &tok, "xyz", "")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    srv.follow("Capture", &tok, &"AB".repeat(16), "")
        .await
        .assert_fault("CWSFault", 326);
}

#[tokio::test]
async fn token_problems_get_the_sts_faults() {
    let srv = TestServer::start_with(|c| c.token.clock_skew_seconds = 0).await;
    let tok = registered(&srv).await;
    let k = ksn(TDES_KSN_BASE, 2);
    srv.swipe("Authorize", "", &k, "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    srv.swipe("Authorize", "bm90IGEgdG9rZW4=", &k, "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    // One flipped base64 character.
    let mut forged: Vec<u8> = tok.clone().into_bytes();
    forged[200] = if forged[200] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    srv.swipe("Authorize", &forged, &k, "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    // A token signed by someone else's key, for the same terminal.
    let claims = snapgate::token::verify(
        &srv.app.keys().signing,
        &tok,
        t0(),
        chrono::Duration::zero(),
    )
    .unwrap()
    .claims()
    .clone();
    let kid = srv.app.keys().signing.active().kid().to_owned();
    let impostor = snapgate::token::KeyRing::new(
        vec![snapgate::token::SigningKey::new(&kid, [9u8; 32]).unwrap()],
        &kid,
    )
    .unwrap();
    let forged = snapgate::token::issue(&impostor, &claims);
    srv.swipe("Authorize", &forged, &k, "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    // Re-registration supersedes the old token.
    let new = srv
        .register_ok(&ksn(TDES_KSN_BASE, 3), "MP1|B1234567")
        .await;
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 4), "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    srv.swipe("Authorize", &new, &ksn(TDES_KSN_BASE, 5), "1.00")
        .await
        .assert_ok();
    // Expired at day 90.
    srv.advance_days(90);
    srv.swipe("Authorize", &new, &ksn(TDES_KSN_BASE, 6), "1.00")
        .await
        .assert_fault("ExpiredTokenFault", 5000);
    // A RegisterTerminal token is not a SIS credential for RegisterTerminal's own service: TPS only.
    let r = srv.tps("Authorize", "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><Authorize xmlns=\"http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing\"/></s:Body></s:Envelope>").await;
    r.assert_fault("InvalidTokenFault", 5005);
}

#[tokio::test]
async fn token_is_bound_to_the_registering_device_and_counters_cannot_replay() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    // Same key set (same BDK), another device id.
    let other_device = ksn("FFFF9876543211E00000", 2);
    srv.swipe("Authorize", &tok, &other_device, "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);
    let k = ksn(TDES_KSN_BASE, 7);
    srv.swipe("Authorize", &tok, &k, "1.00").await.assert_ok();
    // The same request again is a retry (answered from the stored sale, tests/security.rs);
    // the same counter on another request is a replay.
    srv.swipe("Authorize", &tok, &k, "2.00")
        .await
        .assert_fault("AuthenticationFault", 406);
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 6), "1.00")
        .await
        .assert_fault("AuthenticationFault", 406);
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 8), "1.00")
        .await
        .assert_ok();
}

#[tokio::test]
async fn binding_and_replay_checks_can_be_turned_off() {
    let srv = TestServer::start_with(|c| {
        c.security.device_binding = false;
        c.security.replay_protection = false;
    })
    .await;
    let tok = registered(&srv).await;
    let k = ksn(TDES_KSN_BASE, 7);
    srv.swipe("Authorize", &tok, &k, "1.00").await.assert_ok();
    srv.swipe("Authorize", &tok, &k, "1.00").await.assert_ok();
    srv.swipe("Authorize", &tok, &ksn("FFFF9876543211E00000", 2), "1.00")
        .await
        .assert_ok();
}

#[tokio::test]
async fn sign_on_with_the_terminal_token_returns_it_as_the_session_token() {
    let srv = TestServer::start_with(|c| c.token.clock_skew_seconds = 0).await;
    let tok = registered(&srv).await;
    let body = |t: &str| {
        format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <SignOnWithToken xmlns=\"{SIS_NS}\"><identityToken>{t}</identityToken></SignOnWithToken>\
             </s:Body></s:Envelope>"
        )
    };
    let action = SIS_ACTION.replace("RegisterTerminal", "SignOnWithToken");
    let r = srv.soap("/2.1.32/SIS.svc", &action, &body(&tok)).await;
    r.assert_ok();
    assert_eq!(
        r.text_of("SignOnWithTokenResult").as_deref(),
        Some(tok.as_str())
    );
    srv.soap("/2.1.32/SIS.svc", &action, &body("forged"))
        .await
        .assert_fault("InvalidTokenFault", 5005);
    srv.advance_days(90);
    srv.soap("/2.1.32/SIS.svc", &action, &body(&tok))
        .await
        .assert_fault("ExpiredTokenFault", 5000);
}

/// `store.offload = "network"` (sled's in-memory calls on the worker, on a multi-threaded
/// runtime like `serve`'s) serves registrations and sales the same way; the default, `always`,
/// is what every other test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_store_offload_network_serves_sales_the_same() {
    let srv = TestServer::start_with(|c| {
        c.store.offload = snapgate::config::StoreOffload::Network;
    })
    .await;
    let tok = registered(&srv).await;
    for counter in 2..6 {
        let r = srv
            .swipe(
                "AuthorizeAndCapture",
                &tok,
                &ksn(TDES_KSN_BASE, counter),
                "10.00",
            )
            .await;
        r.assert_ok();
    }
    // The setting is process-wide: put it back for anything else in this binary.
    snapgate::store::set_inline(false);
}
