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

// ---------------------------------------------------------------------------------------------
// Point 1: the decryption-format oracle.

/// Another device under the same BDK (same key set id, another device id).
const FOREIGN_KSN_BASE: &str = "FFFF9876543211E00000";

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Flip one bit in the first cipher block of a hex ciphertext.
fn edit_first_block(hex_ct: &str) -> String {
    let mut b = hex::decode(hex_ct).unwrap();
    b[3] ^= 0x10;
    hex::encode_upper(b)
}

async fn swipe_raw(srv: &TestServer, tok: &str, track_hex: &str, ksn_hex: &str) -> HttpReply {
    srv.tps(
        "Authorize",
        &swipe_envelope("Authorize", tok, track_hex, ksn_hex, "1.00", "R1"),
    )
    .await
}

#[tokio::test]
async fn card_data_under_a_foreign_ksn_gets_one_fault_and_nothing_is_decrypted() {
    let srv = TestServer::start_with(|c| c.security.lockout.max_failures_per_device = 1000).await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let foreign = ksn(FOREIGN_KSN_BASE, 5);
    let genuine = srv.encrypt_track(&foreign, TRACK2);
    let variants = [
        genuine.clone(),
        edit_first_block(&genuine),
        "00".repeat(16),
        "ZZ".to_owned(),
        "ABC".to_owned(),
        srv.encrypt_track(&foreign, "hello world"),
    ];
    let mut replies = Vec::new();
    for v in &variants {
        replies.push(swipe_raw(&srv, &tok, v, &foreign).await);
    }
    replies[0].assert_fault("InvalidTokenFault", 5005);
    for (v, r) in variants.iter().zip(&replies) {
        assert_eq!(r.status, replies[0].status, "{v}");
        assert_eq!(r.body, replies[0].body, "a different answer for {v}");
    }
    // Counted as card-data failures of the foreign-device kind: none reached a decryption.
    let m = srv.app.metrics.render();
    assert_eq!(
        metric(
            &m,
            "snapgate_card_data_failures_total{reason=\"foreign_device\"}"
        ),
        variants.len() as u64,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "snapgate_card_data_failures_total{reason=\"unreadable\"}"
        ),
        0,
        "{m}"
    );
}

#[tokio::test]
async fn card_data_that_does_not_read_gets_one_generic_fault() {
    let srv = TestServer::start_with(|c| c.security.lockout.max_failures_per_device = 1000).await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let mut counter = 2;
    let mut next = || {
        counter += 1;
        ksn(TDES_KSN_BASE, counter)
    };
    let mut replies = Vec::new();
    let k = next();
    replies.push(swipe_raw(&srv, &tok, &"00".repeat(16), &k).await);
    let k = next();
    replies.push(
        swipe_raw(
            &srv,
            &tok,
            &edit_first_block(&srv.encrypt_track(&k, TRACK2)),
            &k,
        )
        .await,
    );
    let k = next();
    let bad_luhn = ";5454545454545455=13121010134988000010?";
    replies.push(swipe_raw(&srv, &tok, &srv.encrypt_track(&k, bad_luhn), &k).await);
    let k = next();
    replies.push(swipe_raw(&srv, &tok, &srv.encrypt_track(&k, "hello world"), &k).await);
    let k = next();
    replies.push(swipe_raw(&srv, &tok, "ABC", &k).await);
    // A keyed PAN failing its check digit: the same answer.
    let keyed = fixture(
        "tps/keyed_transaction.xml",
        &[
            ("OP", "Authorize"),
            ("TOKEN", &tok),
            ("PAN", "4012888888881882"),
            ("AMOUNT", "1.00"),
            ("MERCHANT", "MP1"),
        ],
    );
    replies.push(srv.tps("Authorize", &keyed).await);
    replies[0].assert_fault("CWSValidationResultFault", 325);
    for r in &replies {
        assert_eq!(r.body, replies[0].body);
    }
    assert!(
        !replies[0].body.contains("check digit") && !replies[0].body.contains("track 2"),
        "{}",
        replies[0].body
    );
    let m = srv.app.metrics.render();
    assert_eq!(
        metric(
            &m,
            "snapgate_card_data_failures_total{reason=\"unreadable\"}"
        ),
        replies.len() as u64,
        "{m}"
    );
}

#[tokio::test]
async fn a_replayed_counter_is_refused_before_its_track_data_is_decrypted() {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let k = ksn(TDES_KSN_BASE, 2);
    srv.swipe("Authorize", &tok, &k, "1.00").await.assert_ok();
    // Garbage under the spent counter: the replay answer, not a card-data answer.
    swipe_raw(&srv, &tok, &"00".repeat(16), &k)
        .await
        .assert_fault("AuthenticationFault", 406);
    let m = srv.app.metrics.render();
    assert_eq!(
        metric(&m, "snapgate_card_data_failures_total{reason=\"replay\"}"),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn a_terminal_that_keeps_sending_bad_card_data_is_locked_out_for_a_while() {
    let srv = TestServer::start_with(|c| c.security.lockout.max_failures_per_device = 3).await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let garbage = "00".repeat(16);
    let first = swipe_raw(&srv, &tok, &garbage, &ksn(TDES_KSN_BASE, 2)).await;
    for c in 3..=4 {
        let r = swipe_raw(&srv, &tok, &garbage, &ksn(TDES_KSN_BASE, c)).await;
        assert_eq!(r.body, first.body);
    }
    // Locked: even good card data gets the same answer, and is not processed.
    let r = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 5), "1.00")
        .await;
    assert_eq!(r.body, first.body);
    let m = srv.app.metrics.render();
    assert_eq!(
        metric(
            &m,
            "snapgate_card_data_failures_total{reason=\"locked_out\"}"
        ),
        1,
        "{m}"
    );
    srv.clock.advance(chrono::Duration::seconds(301));
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 6), "1.00")
        .await
        .assert_ok();
}

// ---------------------------------------------------------------------------------------------
// Point 2: the commit point and idempotent retries.

/// How many authorized (uncaptured) transactions the terminal has: CaptureAll captures them all.
async fn capture_all_count(srv: &TestServer, tok: &str) -> usize {
    let r = srv
        .tps(
            "CaptureAll",
            &fixture(
                "tps/capture_all.xml",
                &[("TOKEN", tok), ("MERCHANT", "MP1")],
            ),
        )
        .await;
    r.assert_ok();
    find(&r.xml(), "CaptureAllResult").unwrap().children.len()
}

fn keyed_at(tok: &str, datetime: &str, amount: &str) -> String {
    keyed_envelope("Authorize", tok, "MP1", amount).replace(
        "<t:CurrencyCode>USD</t:CurrencyCode>",
        &format!(
            "<t:CurrencyCode>USD</t:CurrencyCode><t:TransactionDateTime>{datetime}</t:TransactionDateTime>"
        ),
    )
}

#[tokio::test]
async fn a_sale_whose_flush_outlives_the_handler_timeout_is_finished_not_abandoned() {
    // The flush waits 100 ms (group commit window); the handler timeout is 1 ms. The sale is
    // written before the flush: abandoning it there would answer "unknown error" for a sale that
    // stands.
    let srv = TestServer::start_with(|c| {
        c.limits.handler_timeout_ms = 1;
        c.store.group_commit_window_us = 100_000;
    })
    .await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let r = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await;
    r.assert_ok();
    let id = r.text_of("TransactionId").unwrap();
    assert!(srv.app.sandbox.get(&id).unwrap().is_some());
}

#[tokio::test]
async fn a_retried_swipe_returns_the_stored_answer_instead_of_a_second_sale() {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let k = ksn(TDES_KSN_BASE, 2);
    let body = swipe_envelope(
        "Authorize",
        &tok,
        &srv.encrypt_track(&k, TRACK2),
        &k,
        "7.00",
        "R7",
    );
    let first = srv.tps("Authorize", &body).await;
    first.assert_ok();
    let again = srv.tps("Authorize", &body).await;
    again.assert_ok();
    assert_eq!(
        again.body, first.body,
        "the retry is answered as the sale was"
    );
    // The same KSN with another amount is not a retry: a replay.
    let other = body.replace("<t:Amount>7.00</t:Amount>", "<t:Amount>8.00</t:Amount>");
    srv.tps("Authorize", &other)
        .await
        .assert_fault("AuthenticationFault", 406);
    assert_eq!(capture_all_count(&srv, &tok).await, 1);
}

#[tokio::test]
async fn a_retried_keyed_sale_with_the_same_transaction_datetime_and_amount_is_one_sale() {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let at = "2026-11-29T10:00:00Z";
    let first = srv.tps("Authorize", &keyed_at(&tok, at, "3.00")).await;
    first.assert_ok();
    let again = srv.tps("Authorize", &keyed_at(&tok, at, "3.00")).await;
    assert_eq!(again.body, first.body);
    // Another time or another amount: another sale.
    srv.tps("Authorize", &keyed_at(&tok, "2026-11-29T10:00:01Z", "3.00"))
        .await
        .assert_ok();
    srv.tps("Authorize", &keyed_at(&tok, at, "4.00"))
        .await
        .assert_ok();
    assert_eq!(capture_all_count(&srv, &tok).await, 3);
}

/// Issue 9, recent sales: a sale is stored under a time-ordered id (its first 48 bits are the
/// clock's Unix milliseconds), and a retry is found among the terminal's latest
/// `processor.idempotency_depth` sales; past them, the same keyed request is a new sale.
#[tokio::test]
async fn a_retry_is_found_among_the_terminals_latest_sales_and_ids_are_time_ordered() {
    let srv = TestServer::start_with(|c| c.processor.idempotency_depth = 2).await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let at = |s: u32| format!("2026-11-29T10:00:{s:02}Z");
    let first = srv.tps("Authorize", &keyed_at(&tok, &at(0), "3.00")).await;
    first.assert_ok();
    let id = first.text_of("TransactionId").unwrap();
    let ms = snapgate::clock::Clock::now(&srv.clock).timestamp_millis();
    assert_eq!(id[..12], format!("{ms:012X}"), "{id}");
    // A swipe too: stored under a time-ordered id, and its retry answered as it was.
    let k = ksn(TDES_KSN_BASE, 2);
    let swipe = swipe_envelope(
        "Authorize",
        &tok,
        &srv.encrypt_track(&k, TRACK2),
        &k,
        "5.00",
        "R5",
    );
    let swiped = srv.tps("Authorize", &swipe).await;
    swiped.assert_ok();
    assert_eq!(swiped.text_of("TransactionId").unwrap()[..12], id[..12]);
    assert_eq!(srv.tps("Authorize", &swipe).await.body, swiped.body);
    // The first sale is still among the latest two: its retry is answered as it was.
    assert_eq!(
        srv.tps("Authorize", &keyed_at(&tok, &at(0), "3.00"))
            .await
            .body,
        first.body
    );
    srv.tps("Authorize", &keyed_at(&tok, &at(1), "3.00"))
        .await
        .assert_ok();
    // Two newer sales since: the same request is no longer recognised, and is a new sale.
    let late = srv.tps("Authorize", &keyed_at(&tok, &at(0), "3.00")).await;
    late.assert_ok();
    assert_ne!(late.text_of("TransactionId").unwrap(), id);
    assert_eq!(capture_all_count(&srv, &tok).await, 4);
}

#[tokio::test]
async fn past_the_commit_point_a_slow_flush_answers_outcome_unknown_and_the_retry_tells() {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    // Restarted with a commit timeout (1 ms) shorter than the flush (100 ms).
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |c| {
        c.limits.commit_timeout_ms = 1;
        c.store.group_commit_window_us = 100_000;
    })
    .await;
    let k = ksn(TDES_KSN_BASE, 2);
    let body = swipe_envelope(
        "AuthorizeAndCapture",
        &tok,
        &srv.encrypt_track(&k, TRACK2),
        &k,
        "9.00",
        "R9",
    );
    let r = srv.tps("AuthorizeAndCapture", &body).await;
    r.assert_fault("CWSFault", 326);
    assert!(
        r.body.contains("outcome of the request is unknown"),
        "{}",
        r.body
    );
    let m = srv.app.metrics.render();
    assert!(
        m.contains("snapgate_faults_total{kind=\"outcome_unknown\"} 1"),
        "{m}"
    );
    // Back to a normal commit timeout: the same request again learns the outcome, and it is
    // one sale.
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |_| {}).await;
    let again = srv.tps("AuthorizeAndCapture", &body).await;
    again.assert_ok();
    let id = again.text_of("TransactionId").unwrap();
    let stored = srv.app.sandbox.get(&id).unwrap().expect("the sale stood");
    assert_eq!(stored.amount_cents, 900);
    assert_eq!(
        again.text_of("TransactionState").as_deref(),
        Some("Captured")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_abandoned_by_the_handler_timeout_on_a_store_thread_is_not_stored() {
    // On a multi-threaded runtime a sale's store trip runs on a store thread, and the handler
    // timeout (1 ms here, shorter than a debug build's trip) can answer before the trip ends.
    // Whichever comes first wins: an abandoned trip stops before its first write, a trip past
    // its commit point is finished. So every sale answered OK is stored and no timed-out one is.
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |c| c.limits.handler_timeout_ms = 1).await;
    let (mut ok, mut timed_out) = (0, 0);
    for i in 0..24u32 {
        let r = srv
            .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2 + i), "1.00")
            .await;
        if r.status == 200 {
            assert!(r.text_of("TransactionId").is_some(), "{}", r.body);
            ok += 1;
        } else {
            r.assert_fault("CWSFault", 326);
            assert!(
                !r.body.contains("outcome of the request is unknown"),
                "{}",
                r.body
            );
            timed_out += 1;
        }
    }
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(
        capture_all_count(&srv, &tok).await,
        ok,
        "{ok} answered OK, {timed_out} timed out"
    );
}

// ---------------------------------------------------------------------------------------------
// Point 7: leaks. Clients get our fault texts only.

#[tokio::test]
async fn a_body_hyper_cannot_read_gets_our_text_not_hypers() {
    use tokio::io::AsyncWriteExt;
    let srv = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(
        b"POST /2.1.32/TPS.svc HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZZZ\r\nnot a chunk\r\n",
    )
    .await
    .unwrap();
    let reply = read_to_close(&mut s, REQUEST_DEADLINE)
        .await
        .expect("an answer");
    let body = &reply[reply.find("\r\n\r\n").expect("a whole reply") + 4..];
    let r = HttpReply {
        status: 500,
        content_type: "text/xml".into(),
        body: body.to_owned(),
    };
    assert_eq!(
        r.text_of("RuleMessage").as_deref(),
        Some("The request body could not be read"),
        "{reply}"
    );
    assert!(!reply.to_lowercase().contains("chunk"), "{reply}");
}

const UPSTREAM_FAULT: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>internal host db7.example failed</faultstring><detail><CWSFault xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions/Faults"><ErrorID>326</ErrorID><ProblemType>upstream stack trace at db7.example</ProblemType></CWSFault></detail></s:Fault></s:Body></s:Envelope>"#;

#[tokio::test]
async fn an_upstream_fault_is_not_relayed_verbatim() {
    let up = Upstream::start(500, UPSTREAM_FAULT).await;
    let srv = TestServer::start_with(|c| forward_to(c, up.url("/TPS.svc"))).await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let r = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await;
    assert_eq!(r.status, 500);
    assert!(!r.body.contains("db7.example"), "{}", r.body);
    assert!(r.fault().is_some(), "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// Point 6: card data handling in forward mode.

#[tokio::test]
async fn forward_mode_never_sends_the_terminals_own_token_upstream() {
    // Without an upstream token the terminal's would be relayed: the config is refused.
    let mut cfg = dev_keys().config;
    cfg.processor.mode = snapgate::config::ProcessorMode::Forward;
    cfg.processor.upstream_url = Some("http://127.0.0.1:9/TPS.svc".into());
    cfg.processor.upstream_session_token = None;
    let err = cfg
        .validate()
        .expect_err("forward mode without an upstream token");
    assert!(err.contains("upstream_session_token"), "{err}");
    // With one, the upstream sees it and never the terminal's.
    let up = Upstream::start(200, UPSTREAM_OK).await;
    let srv = TestServer::start_with(|c| forward_to(c, up.url("/TPS.svc"))).await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_ok();
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].1.contains(&tok),
        "the terminal's token went upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Points 8 and 9: the refresh sweep's filter and its paging.

/// Write `record` under the dev service key and `serial`.
fn put(srv: &TestServer, serial: &str, mut record: snapgate::store::TerminalRecord) {
    use snapgate::store::{self, StoreError, TerminalId};
    record.device_serial = serial.to_owned();
    store::update(
        &*srv.app.store,
        &TerminalId::new(SERVICE_KEY, serial),
        |_| Ok::<_, StoreError>((Some(record.clone()), ())),
    )
    .unwrap();
}

#[tokio::test]
async fn the_sweep_flags_every_due_terminal_across_pages_and_never_a_revoked_one() {
    let srv = TestServer::start().await;
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|REAL").await;
    let template = srv.record("REAL");
    // More than one page (1,024) of due terminals, one revoked among them.
    for i in 0..1_100 {
        put(&srv, &format!("S{i:05}"), template.clone());
    }
    let mut revoked = template.clone();
    revoked.revoked = true;
    put(&srv, "REVOKED", revoked);
    // Before the due date nothing is flagged; well past it (day 45, not exactly day 30),
    // everything due is.
    srv.advance_days(29);
    assert_eq!(snapgate::cws::session::sweep(&srv.app).unwrap(), 0);
    srv.advance_days(16);
    assert_eq!(snapgate::cws::session::sweep(&srv.app).unwrap(), 1_101);
    assert!(srv.record("S01099").refresh_flag && srv.record("REAL").refresh_flag);
    assert!(
        !srv.record("REVOKED").refresh_flag,
        "a revoked terminal was flagged"
    );
    // Flagged ones are not counted again.
    assert_eq!(snapgate::cws::session::sweep(&srv.app).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Point 9: soap.rs guards that mutants showed untested.

fn envelope(
    inner: &str,
) -> Result<snapgate::cws::soap::Envelope<'static>, snapgate::cws::soap::EnvelopeError> {
    let limits = snapgate::cws::soap::XmlLimits {
        max_depth: 32,
        max_elements: 2_000,
        max_attributes: 32,
    };
    let xml = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">{inner}</s:Envelope>"
    );
    snapgate::cws::soap::parse_envelope(xml.as_bytes(), &limits).map(|e| e.into_owned())
}

#[test]
fn header_smuggling_is_refused() {
    let h = |t: &str| format!("<s:Header><T xmlns=\"urn:x\">{t}</T></s:Header>");
    let body = "<s:Body><Ping xmlns=\"urn:x\"/></s:Body>";
    let one = envelope(&format!("{}{body}", h("first"))).unwrap();
    assert_eq!(one.header.unwrap().children[0].text, "first");
    // A second Header (the last would win), or a Header after the Body: refused.
    assert!(envelope(&format!("{}{}{body}", h("first"), h("second"))).is_err());
    assert!(envelope(&format!("{body}{}", h("late"))).is_err());
}

#[test]
fn nil_elements_have_no_value_and_a_late_xml_declaration_is_refused() {
    let e = envelope(
        "<s:Body><Op xmlns=\"urn:x\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <Amount i:nil=\"true\">5.00</Amount></Op></s:Body>",
    )
    .unwrap();
    assert_eq!(
        e.operation.child_text("Amount").unwrap(),
        None,
        "i:nil with text read as a value"
    );
    let late =
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><?xml version=\"1.0\"?>\
                <s:Body><Ping xmlns=\"urn:x\"/></s:Body></s:Envelope>";
    let limits = snapgate::cws::soap::XmlLimits {
        max_depth: 32,
        max_elements: 2_000,
        max_attributes: 32,
    };
    assert!(snapgate::cws::soap::parse_envelope(late.as_bytes(), &limits).is_err());
}
