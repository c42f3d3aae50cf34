//! RegisterTerminal end to end: real socket, real sled, real DUKPT.

mod common;

use base64::Engine;
use common::*;
use snapgate::store::TerminalId;
use snapgate::token;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn verify(srv: &TestServer, tok: &str) -> token::Claims {
    srv.verify(tok).expect("token verifies")
}

#[tokio::test]
async fn tdes_terminal_registers_and_gets_a_signed_90_day_token() {
    let srv = TestServer::start().await;
    let r = srv.register(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.starts_with("text/xml"));
    let x = r.xml();
    let resp = find(&x, "RegisterTerminalResponse").unwrap();
    assert_eq!(resp.ns.as_deref(), Some(SIS_NS));
    let tok = r.text_of("RegisterTerminalResult").unwrap();
    assert!(tok.starts_with("PHNhbWw6QXNzZXJ0a"), "{tok}");
    let c = verify(&srv, &tok);
    assert_eq!(c.merchant_profile_id, "MP1");
    assert_eq!(c.device_serial, "B1234567");
    assert_eq!(c.service_key, SERVICE_KEY);
    assert_eq!(c.issued_at, t0());
    assert_eq!(c.not_on_or_after, t0() + chrono::Duration::days(90));

    let rec = srv
        .app
        .store
        .get(&TerminalId::new(SERVICE_KEY, "B1234567"))
        .unwrap()
        .expect("record stored");
    assert_eq!(rec.token_id, c.token_id);
    assert_eq!(rec.bdk_id, "ansi-test-tdes");
    assert_eq!(rec.vendor_id, VENDOR_ID);
    assert_eq!(rec.last_counter, 1);
    assert_eq!(rec.device_id, c.device_id);
    assert!(!rec.refresh_flag);
    assert_eq!(
        rec.refresh_due_at_ms,
        (t0() + chrono::Duration::days(30)).timestamp_millis()
    );
}

#[tokio::test]
async fn aes_terminal_registers() {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(AES_KSN_BASE, 7), "MP2|AES-0001").await;
    let c = verify(&srv, &tok);
    assert_eq!(c.device_serial, "AES-0001");
    let rec = srv.record("AES-0001");
    assert_eq!(rec.bdk_id, "x9-test-aes128");
}

#[tokio::test]
async fn operator_configured_lifetime_is_used() {
    let srv = TestServer::start_with(|c| {
        c.token.lifetime_days = 10;
        c.token.refresh_age_days = 3;
    })
    .await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    assert_eq!(
        verify(&srv, &tok).not_on_or_after,
        t0() + chrono::Duration::days(10)
    );
}

#[tokio::test]
async fn credentials_from_the_basic_username_with_or_without_trailing_colon() {
    let srv = TestServer::start().await;
    for (i, trailing) in ["", ":"].iter().enumerate() {
        let k = ksn(TDES_KSN_BASE, 10 + i as u32);
        let es = srv.encrypt_secret(&k, "MP1|BASIC01");
        let auth = format!("Basic {}", b64(&format!("{es}:{k}{trailing}")));
        let body = fixture(
            "register_terminal_basic.xml",
            &[("SERVICE_KEY", SERVICE_KEY), ("VENDOR_ID", VENDOR_ID)],
        );
        let r = srv
            .post(
                "/SIS.svc",
                &[
                    ("content-type", "text/xml"),
                    ("soapaction", &format!("\"{SIS_ACTION}\"")),
                    ("authorization", &auth),
                ],
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            verify(&srv, &r.text_of("RegisterTerminalResult").unwrap()).device_serial,
            "BASIC01"
        );
    }
}

#[tokio::test]
async fn rest_form_registers_with_basic_credentials_and_an_empty_body() {
    let srv = TestServer::start().await;
    let k = ksn(TDES_KSN_BASE, 3);
    let es = srv.encrypt_secret(&k, "MP1|REST01");
    let path = format!("/2.1.32/REST/SIS.svc/registerTerminal/{SERVICE_KEY}/{VENDOR_ID}");
    let auth = format!("Basic {}", b64(&format!("{es}:{k}:")));
    let r = srv.post(&path, &[("authorization", &auth)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tok = r.body.trim().trim_matches('"');
    assert_eq!(r.json().as_str(), Some(tok), "the token as a JSON string");
    assert_eq!(verify(&srv, tok).device_serial, "REST01");

    let bad = format!("Basic {}", b64(&format!("{}:{k}:", "00".repeat(16))));
    let r = srv.post(&path, &[("authorization", &bad)], "").await;
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("Terminal could not be authenticated"),
        "{}",
        r.body
    );
    assert!(r.body.contains("\"ErrorId\":406"), "{}", r.body);
    assert_eq!(r.json()["ErrorId"], 406, "{}", r.body);
}

#[tokio::test]
async fn ip_commerce_namespace_and_prefixed_children_in_any_order_are_answered_in_kind() {
    let srv = TestServer::start().await;
    let k = ksn(TDES_KSN_BASE, 4);
    let es = srv.encrypt_secret(&k, "MP1|IPC01");
    let body = fixture(
        "register_terminal_ipcommerce.xml",
        &[
            ("SERVICE_KEY", SERVICE_KEY),
            ("VENDOR_ID", VENDOR_ID),
            ("ENCRYPTED_SECRET", &es),
            ("KSN", &k),
        ],
    );
    let action = SIS_ACTION.replace("evosnap", "ipcommerce");
    let r = srv.soap("/2.1.32/SIS.svc", &action, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let x = r.xml();
    assert_eq!(
        find(&x, "RegisterTerminalResponse").unwrap().ns.as_deref(),
        Some("http://schemas.ipcommerce.com/CWS/v2.0/ServiceInformation")
    );
}

#[tokio::test]
async fn every_registration_failure_is_the_same_authentication_fault_and_stores_nothing() {
    // Lockout would turn later cases into rate-limit refusals; it has its own test.
    let srv = TestServer::start_with(|c| {
        c.security.lockout.max_failures_per_address = 1000;
        c.security.lockout.max_failures_per_device = 1000;
    })
    .await;
    // A registered terminal whose record must survive every failed attempt untouched.
    srv.register_ok(&ksn(TDES_KSN_BASE, 5), "MP1|B1234567")
        .await;
    let id = TerminalId::new(SERVICE_KEY, "B1234567");
    let before = srv.app.store.get(&id).unwrap().unwrap();
    let count = srv.app.store.len();

    let k = ksn(TDES_KSN_BASE, 6);
    let good = srv.encrypt_secret(&k, "MP1|B1234567");
    // The same secret under the data-request key instead of the configured PIN variant.
    let wrong_key = {
        use snapgate::dukpt::{self, Ksn};
        let ksn_v = Ksn::parse_hex(&k).unwrap();
        let keys = srv.app.keys();
        let bdk = keys.bdk_for(&ksn_v).unwrap();
        let mut usage = bdk.secret_usage;
        usage.tdes_variant = snapgate::dukpt::TdesVariant::DataRequest;
        usage.tdes_data_owf = true;
        let key = dukpt::working_key(&bdk.bdk, &ksn_v, &usage).unwrap();
        hex::encode_upper(dukpt::encrypt_cbc(&key, b"MP1|B1234567"))
    };
    let cases: Vec<(&str, String, String, String, String)> = vec![
        (
            "bad hex",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            "ZZ".repeat(16),
            k.clone(),
        ),
        (
            "odd length hex",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            good[1..].into(),
            k.clone(),
        ),
        (
            "not a block multiple",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            good[..good.len() - 2].into(),
            k.clone(),
        ),
        (
            "unknown BDK",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            good.clone(),
            "ABCDEF0123456789E006".into(),
        ),
        (
            "wrong key",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            wrong_key,
            k.clone(),
        ),
        (
            "wrong service key",
            "0000000000000001".into(),
            VENDOR_ID.into(),
            good.clone(),
            k.clone(),
        ),
        (
            "wrong vendor",
            SERVICE_KEY.into(),
            "BADVENDOR".into(),
            good.clone(),
            k.clone(),
        ),
        (
            "one field",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            srv.encrypt_secret(&k, "MP1B1234567"),
            k.clone(),
        ),
        (
            "three fields",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            srv.encrypt_secret(&k, "MP1|B1234567|X"),
            k.clone(),
        ),
        (
            "control bytes",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            srv.encrypt_secret(&k, "MP1|B12\x07"),
            k.clone(),
        ),
        (
            "zero counter",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            good.clone(),
            ksn(TDES_KSN_BASE, 0),
        ),
        (
            "short KSN",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            good.clone(),
            "FFFF98765432".into(),
        ),
        (
            "non-hex KSN",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            good.clone(),
            "FFFF9876543210E0000G".into(),
        ),
        (
            "replayed counter",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            srv.encrypt_secret(&ksn(TDES_KSN_BASE, 5), "MP1|B1234567"),
            ksn(TDES_KSN_BASE, 5),
        ),
        (
            "older counter",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            srv.encrypt_secret(&ksn(TDES_KSN_BASE, 4), "MP1|B1234567"),
            ksn(TDES_KSN_BASE, 4),
        ),
        (
            "empty secret",
            SERVICE_KEY.into(),
            VENDOR_ID.into(),
            "".into(),
            k.clone(),
        ),
        (
            "empty service key",
            "".into(),
            VENDOR_ID.into(),
            good.clone(),
            k.clone(),
        ),
    ];
    for (what, sk, vendor, es, ksn_hex) in cases {
        let r = srv
            .soap(
                "/2.1.32/SIS.svc",
                SIS_ACTION,
                &register_envelope(&sk, &vendor, &es, &ksn_hex),
            )
            .await;
        r.assert_fault("AuthenticationFault", 406);
        assert_eq!(
            r.text_of("ProblemType").as_deref(),
            Some("Terminal could not be authenticated"),
            "{what}"
        );
        assert!(
            !r.body.contains(&es) || es.is_empty(),
            "{what}: fault echoes the secret"
        );
        assert_eq!(
            srv.app.store.get(&id).unwrap().unwrap(),
            before,
            "{what} changed the record"
        );
        assert_eq!(srv.app.store.len(), count, "{what} stored something");
    }
    // Finally the untouched terminal can still register with a fresh counter.
    srv.register_ok(&k, "MP1|B1234567").await;
}

#[tokio::test]
async fn registering_again_resets_the_terminal_with_a_new_token() {
    let srv = TestServer::start().await;
    let old = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    srv.advance_days(5);
    let new = srv.register_ok(&ksn(TDES_KSN_BASE, 2), "MP1|B1").await;
    let (o, n) = (verify(&srv, &old), verify(&srv, &new));
    assert_ne!(o.token_id, n.token_id);
    let rec = srv.record("B1");
    assert_eq!(rec.token_id, n.token_id, "only the new token is current");
    assert_eq!(
        rec.issued_at_ms,
        (t0() + chrono::Duration::days(5)).timestamp_millis()
    );
    assert_eq!(rec.last_counter, 2);
}

#[tokio::test]
async fn registrations_survive_a_restart_and_tokens_still_verify() {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |_| {}).await;
    let c = verify(&srv, &tok);
    let rec = srv.record("B1");
    assert_eq!(rec.token_id, c.token_id);
}

#[tokio::test]
async fn malformed_requests_get_validation_faults_not_authentication_faults() {
    let srv = TestServer::start().await;
    let k = ksn(TDES_KSN_BASE, 1);
    let vars = [
        ("SERVICE_KEY", SERVICE_KEY),
        ("VENDOR_ID", VENDOR_ID),
        ("ENCRYPTED_SECRET", "00"),
        ("KSN", k.as_str()),
    ];
    for f in [
        "bad/register_terminal_duplicate_child.xml",
        "bad/not_well_formed.xml",
    ] {
        let r = srv.soap("/SIS.svc", SIS_ACTION, &fixture(f, &vars)).await;
        r.assert_fault("CWSValidationResultFault", 225);
        assert!(r.text_of("RuleMessage").is_some(), "{f}: {}", r.body);
    }
    let r = srv
        .soap(
            "/SIS.svc",
            "urn:x",
            &fixture("bad/ping_with_wrong_namespace.xml", &[]),
        )
        .await;
    // SIS declares no CWSInvalidOperationFault: a CWSFault with its ErrorID (issue 10).
    r.assert_fault("CWSFault", 208);
    assert_eq!(srv.app.store.len(), 0);
}

#[tokio::test]
async fn soap_action_must_match_the_body_when_given() {
    let srv = TestServer::start().await;
    let k = ksn(TDES_KSN_BASE, 1);
    let body = register_envelope(
        SERVICE_KEY,
        VENDOR_ID,
        &srv.encrypt_secret(&k, "MP1|B1"),
        &k,
    );
    let wrong = SIS_ACTION.replace("RegisterTerminal", "SignOnWithToken");
    srv.soap("/SIS.svc", &wrong, &body)
        .await
        .assert_fault("CWSValidationResultFault", 225);
    // Absent SOAPAction: dispatch on the body.
    let r = srv
        .post("/SIS.svc", &[("content-type", "text/xml")], &body)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The HTTP-level refusal: its status and a typed `CWSValidationResultFault` 225 naming the
/// rule and what it applies to, with a message saying what was wrong.
fn assert_http_refusal(r: &HttpReply, status: u16, rule: &str, location: &str, says: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.content_type.starts_with("text/xml"), "{}", r.content_type);
    assert_eq!(
        r.fault(),
        Some(("CWSValidationResultFault".to_owned(), 225)),
        "{}",
        r.body
    );
    assert_eq!(
        r.text_of("faultcode").as_deref(),
        Some("s:Client"),
        "{}",
        r.body
    );
    assert_eq!(r.text_of("RuleKey").as_deref(), Some(rule), "{}", r.body);
    assert_eq!(
        r.text_of("RuleLocationKey").as_deref(),
        Some(location),
        "{}",
        r.body
    );
    let message = r.text_of("RuleMessage").unwrap_or_default();
    assert!(message.contains(says), "{message:?} in {}", r.body);
}

#[tokio::test]
async fn http_level_limits_answer_with_soap_faults_and_proper_status() {
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 2048).await;
    for ct in [
        "application/json",
        "text/xmlfoo",
        "text/xml-ish; charset=utf-8",
    ] {
        let r = srv.post("/SIS.svc", &[("content-type", ct)], "{}").await;
        assert_http_refusal(&r, 415, "UnsupportedMediaType", "Content-Type", "text/xml");
    }
    let big = format!("<x>{}</x>", "a".repeat(4096));
    let r = srv
        .post("/SIS.svc", &[("content-type", "text/xml")], &big)
        .await;
    assert_http_refusal(&r, 413, "RequestTooLarge", "Body", "larger than 2048 bytes");
    let r = srv.get("/nope").await;
    assert_http_refusal(&r, 404, "NotFound", "Path", "No service at this path");
    let r = srv
        .post("/2.1.32/SIS.svc?x", &[("content-type", "text/xml")], "")
        .await;
    r.assert_fault("CWSValidationResultFault", 225);
    // Nothing got through to the store.
    assert_eq!(srv.app.store.len(), 0);
}

#[tokio::test]
async fn wsdl_is_served_for_both_services() {
    let srv = TestServer::start().await;
    for (path, op) in [
        ("/2.1.32/SIS.svc?wsdl", "RegisterTerminal"),
        ("/SIS.svc?wsdl", "RegisterTerminal"),
        ("/2.1.32/TPS.svc?wsdl", "AuthorizeAndCapture"),
    ] {
        let r = srv.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.contains("wsdl:definitions") || r.body.contains("definitions"));
        assert!(r.body.contains(op), "{path}");
    }
}

#[tokio::test]
async fn ping_answers_on_both_services() {
    let srv = TestServer::start().await;
    let body = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"/></s:Body></s:Envelope>"#;
    for path in ["/SIS.svc", "/TPS.svc"] {
        let r = srv
            .soap(
                path,
                "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/IExternallyFacingStandardOperations/Ping",
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.text_of("IsSuccess").as_deref(), Some("true"));
    }
}
