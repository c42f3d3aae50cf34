//! Issue 10: the platform's own contract, byte for byte. Each test is one fact of the platform's
//! published 2.0.19 schema that a client generated from it (svcutil, JAXB) enforces.

mod common;

use common::*;

const EXT_NS: &str = "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/External";
const COMMON_NS: &str = "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common";
const PING_ACTION: &str =
    "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/IExternallyFacingStandardOperations/Ping";
const PING_BODY: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"/></s:Body></s:Envelope>"#;

async fn registered(srv: &TestServer) -> String {
    srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await
}

async fn authorized(srv: &TestServer, tok: &str, counter: u32, amount: &str) -> String {
    let r = srv
        .swipe("Authorize", tok, &ksn(TDES_KSN_BASE, counter), amount)
        .await;
    r.assert_ok();
    r.text_of("TransactionId").unwrap()
}

#[tokio::test]
async fn fault_details_omit_an_unknown_transaction_state_instead_of_nil() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    let missing = "0123456789ABCDEF0123456789ABCDEF";
    let r = srv.follow("Capture", &tok, missing, "").await;
    r.assert_fault("CWSFault", 326);
    let x = r.xml();
    let detail = find(&x, "CWSFault").unwrap();
    assert_eq!(detail.child_text("TransactionId").unwrap(), Some(missing));
    assert!(
        detail.child("TransactionState").unwrap().is_none(),
        "TransactionState is a non-nillable enumeration: omitted when unknown\n{}",
        r.body
    );
    assert!(!r.body.contains("<TransactionState i:nil"), "{}", r.body);

    // A known state is still sent, as a value of the enumeration.
    let id = authorized(&srv, &tok, 2, "4.00").await;
    srv.follow("Undo", &tok, &id, "").await.assert_ok();
    let r = srv.follow("Undo", &tok, &id, "").await;
    r.assert_fault("CWSFault", 326);
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Undone"));
}

#[tokio::test]
async fn undo_answers_a_capture_state_of_the_schema() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    for (counter, op) in [(2, "Authorize"), (3, "AuthorizeAndCapture")] {
        let r = srv
            .swipe(op, &tok, &ksn(TDES_KSN_BASE, counter), "6.00")
            .await;
        let id = r.assert_ok().text_of("TransactionId").unwrap();
        let r = srv.follow("Undo", &tok, &id, "").await;
        r.assert_ok();
        assert_eq!(r.text_of("TransactionState").as_deref(), Some("Undone"));
        assert_eq!(
            r.text_of("CaptureState").as_deref(),
            Some("CannotCapture"),
            "{op}: the schema has no \"Undone\" capture state"
        );
    }
}

#[tokio::test]
async fn capture_and_return_with_amount_zero_mean_the_full_amount() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    let id = authorized(&srv, &tok, 2, "12.34").await;
    // What a WCF proxy sends for an unset decimal member.
    let r = srv
        .follow(
            "Capture",
            &tok,
            &id,
            "<b:Amount>0</b:Amount><b:TipAmount>0.00</b:TipAmount>",
        )
        .await;
    r.assert_ok();
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Captured"));
    assert_eq!(
        srv.app.sandbox.get(&id).unwrap().unwrap().captured_cents,
        1234
    );

    let r = srv
        .follow("ReturnById", &tok, &id, "<b:Amount>0.00</b:Amount>")
        .await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("12.34"));
    let t = srv.app.sandbox.get(&id).unwrap().unwrap();
    assert_eq!(t.returned_cents, 1234, "a zero amount is a full return");
    assert_eq!(
        srv.follow("ReturnById", &tok, &id, "").await.fault(),
        Some(("CWSFault".into(), 326)),
        "nothing is left to return"
    );
}

/// `b:TransactionSummaryData/b:<Totals>/b:<field>` of one capture response.
fn totals(result: &snapgate::cws::soap::Element, which: &str) -> (String, String) {
    let b = "http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard";
    let s = result
        .children
        .iter()
        .find(|c| c.is(b, "TransactionSummaryData"))
        .expect("TransactionSummaryData");
    let t = s.children.iter().find(|c| c.is(b, which)).expect(which);
    let field = |n: &str| {
        t.children
            .iter()
            .find(|c| c.is(b, n))
            .map(|c| c.text.to_string())
            .unwrap()
    };
    (field("NetAmount"), field("Count"))
}

#[tokio::test]
async fn capture_answers_carry_transaction_summary_data() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    let id = authorized(&srv, &tok, 2, "10.00").await;
    let r = srv
        .follow("Capture", &tok, &id, "<b:Amount>8.00</b:Amount>")
        .await;
    r.assert_ok();
    let x = r.xml();
    let result = find(&x, "CaptureResult").unwrap();
    assert_eq!(totals(result, "SaleTotals"), ("8.00".into(), "1".into()));
    assert_eq!(totals(result, "NetTotals"), ("8.00".into(), "1".into()));

    authorized(&srv, &tok, 3, "1.00").await;
    authorized(&srv, &tok, 4, "2.50").await;
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
    let results = &find(&x, "CaptureAllResult").unwrap().children;
    assert_eq!(results.len(), 2);
    for res in results {
        assert_eq!(totals(res, "SaleTotals"), ("3.50".into(), "2".into()));
    }
}

#[tokio::test]
async fn ping_members_are_in_the_external_namespace() {
    let srv = TestServer::start().await;
    for path in ["/2.1.32/SIS.svc", "/2.1.32/TPS.svc"] {
        let r = srv.soap(path, PING_ACTION, PING_BODY).await;
        r.assert_ok();
        let x = r.xml();
        let resp = find(&x, "PingResponse").unwrap();
        assert_eq!(resp.ns.as_deref(), Some(COMMON_NS));
        let result = resp.child("PingResult").unwrap().unwrap();
        assert_eq!(result.ns.as_deref(), Some(COMMON_NS));
        let ok = result.child("IsSuccess").unwrap().unwrap();
        assert!(ok.is(EXT_NS, "IsSuccess"), "{}", r.body);
        assert_eq!(ok.text, "true");
        assert!(result
            .child("Message")
            .unwrap()
            .unwrap()
            .is(EXT_NS, "Message"));
    }
}

#[tokio::test]
async fn every_version_path_of_the_platform_answers() {
    let srv = TestServer::start().await;
    for path in [
        "/2.0.19/SvcInfo",
        "/2.0.19/Txn",
        "/2.1.28/SIS.svc",
        "/2.1.28/TPS.svc",
        "/2.1.32/SIS.svc",
        "/SIS.svc",
        "/TPS.svc",
    ] {
        let r = srv.soap(path, PING_ACTION, PING_BODY).await;
        r.assert_ok();
        assert_eq!(r.text_of("IsSuccess").as_deref(), Some("true"), "{path}");
        let w = srv.get(&format!("{path}?wsdl")).await;
        assert_eq!(w.status, 200, "{path}?wsdl");
        assert!(w.body.contains("wsdl:definitions"), "{path}");
    }
    // A terminal configured for 2.0.19 registers and transacts there.
    let k = ksn(TDES_KSN_BASE, 1);
    let es = srv.encrypt_secret(&k, "MP1|B1234567");
    let r = srv
        .soap(
            "/2.0.19/SvcInfo",
            SIS_ACTION,
            &register_envelope(SERVICE_KEY, VENDOR_ID, &es, &k),
        )
        .await;
    let tok = r.assert_ok().text_of("RegisterTerminalResult").unwrap();
    let track = srv.encrypt_track(&ksn(TDES_KSN_BASE, 2), TRACK2);
    let body = fixture(
        "tps/new_transaction.xml",
        &[
            ("OP", "AuthorizeAndCapture"),
            ("TOKEN", &tok),
            ("TRACK", &track),
            ("KSN", &ksn(TDES_KSN_BASE, 2)),
            ("AMOUNT", "3.00"),
            ("REFERENCE", "R1"),
        ],
    );
    let r = srv
        .soap("/2.0.19/Txn", &tps_action("AuthorizeAndCapture"), &body)
        .await;
    r.assert_ok();
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Captured"));
    assert_eq!(srv.get("/2.0.19/Nope").await.status, 404);
}

/// Item 6: node `soap` without `xsi:type` sent TenderData and its children in the
/// TransactionProcessing namespace. Strict (the default) refuses it naming the element, as the
/// platform would fail it; lenient accepts it; both count it in /metrics.
#[tokio::test]
async fn elements_in_the_wrong_namespace_are_refused_or_counted() {
    for (mode, strict) in [
        (snapgate::cws::ops::namespaces::NamespaceMode::Strict, true),
        (
            snapgate::cws::ops::namespaces::NamespaceMode::Lenient,
            false,
        ),
    ] {
        let srv = TestServer::start_with(|c| c.cws.namespaces = mode).await;
        let tok = registered(&srv).await;
        let k = ksn(TDES_KSN_BASE, 2);
        let track = srv.encrypt_track(&k, TRACK2);
        let body = swipe_envelope("AuthorizeAndCapture", &tok, &track, &k, "2.00", "R1")
            .replace("<b:TenderData>", "<TenderData>")
            .replace("</b:TenderData>", "</TenderData>")
            .replace("t:SecurePaymentAccountData", "SecurePaymentAccountData");
        let r = srv.tps("AuthorizeAndCapture", &body).await;
        let metrics = srv.app.metrics.render();
        if strict {
            r.assert_fault("CWSValidationResultFault", 325);
            assert_eq!(r.text_of("RuleKey").as_deref(), Some("NamespaceMismatch"));
            assert_eq!(
                r.text_of("RuleLocationKey").as_deref(),
                Some("AuthorizeAndCapture/transaction/TenderData")
            );
            assert!(metrics.contains(
                "snapgate_namespace_mismatches_total{element=\"TenderData\",action=\"refused\"} 1"
            ));
        } else {
            r.assert_ok();
            assert_eq!(r.text_of("Status").as_deref(), Some("Successful"));
            assert!(metrics.contains(
                "snapgate_namespace_mismatches_total{element=\"SecurePaymentAccountData\",action=\"accepted\"} 1"
            ), "{metrics}");
        }
    }
}

fn profile(id: &str, active: bool, serials: &[&str]) -> snapgate::store::profiles::MerchantProfile {
    snapgate::store::profiles::MerchantProfile {
        service_key: SERVICE_KEY.into(),
        merchant_profile_id: id.into(),
        name: String::new(),
        service_id: None,
        active,
        device_serials: serials.iter().map(|s| s.to_string()).collect(),
        created_at_ms: 0,
    }
}

/// Item 2: a terminal that encrypted `MP-12345|B1234567` with the IV 0102030405060708 (a
/// wrong convention) is decrypted (zero IV) to `LR.5753=|B1234567`: CBC garbles only the first
/// block and this garbage is printable. The profile is not declared, so it is refused.
#[tokio::test]
async fn registration_refuses_merchant_profiles_nobody_declared() {
    let srv = TestServer::start().await;
    srv.app
        .profiles
        .put_merchant(&profile("MP-12345", true, &[]))
        .unwrap();
    let garbled: String = "MP-12345"
        .bytes()
        .zip(1u8..)
        .map(|(b, iv)| (b ^ iv) as char)
        .collect();
    assert_eq!(garbled, "LR.5753=");
    srv.register(&ksn(TDES_KSN_BASE, 1), &format!("{garbled}|B1234567"))
        .await
        .assert_fault("AuthenticationFault", 406);
    srv.register_ok(&ksn(TDES_KSN_BASE, 2), "MP-12345|B1234567")
        .await;
    assert!(srv
        .app
        .metrics
        .render()
        .contains("snapgate_registrations_total{result=\"unknown_merchant_profile\"} 1"));

    // Inactive, or a serial the profile's allow-list lacks: the same fault.
    srv.app
        .profiles
        .put_merchant(&profile("MP-OFF", false, &[]))
        .unwrap();
    srv.app
        .profiles
        .put_merchant(&profile("MP-LIST", true, &["ALLOWED1"]))
        .unwrap();
    srv.register(&ksn(TDES_KSN_BASE, 3), "MP-OFF|B7")
        .await
        .assert_fault("AuthenticationFault", 406);
    srv.register(&ksn(TDES_KSN_BASE, 4), "MP-LIST|OTHER1")
        .await
        .assert_fault("AuthenticationFault", 406);
    srv.register_ok(&ksn(TDES_KSN_BASE, 5), "MP-LIST|ALLOWED1")
        .await;
    // The profile of one service key is not another's.
    assert!(srv
        .app
        .profiles
        .merchant("OTHERKEY", "MP-12345")
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn transactions_must_name_declared_profiles() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    // The terminal's own, declared profile: accepted.
    srv.keyed("Authorize", &tok, "MP1", "1.00")
        .await
        .assert_ok();
    // Deactivated after registration: a transaction naming it is refused.
    srv.app
        .profiles
        .put_merchant(&profile("MP1", false, &[]))
        .unwrap();
    let r = srv.keyed("Authorize", &tok, "MP1", "1.00").await;
    r.assert_fault("CWSValidationResultFault", 325);
    assert_eq!(
        r.text_of("RuleLocationKey").as_deref(),
        Some("Authorize/merchantProfileId")
    );
    srv.app
        .profiles
        .put_merchant(&profile("MP1", true, &[]))
        .unwrap();
    // applicationProfileId must name a saved application profile (the dev setup has 14560).
    let k = ksn(TDES_KSN_BASE, 2);
    let track = srv.encrypt_track(&k, TRACK2);
    let body =
        swipe_envelope("Authorize", &tok, &track, &k, "1.00", "R1").replace(">14560<", ">99999<");
    let r = srv.tps("Authorize", &body).await;
    r.assert_fault("CWSValidationResultFault", 325);
    assert_eq!(
        r.text_of("RuleLocationKey").as_deref(),
        Some("Authorize/applicationProfileId")
    );
}

fn sis_action(op: &str) -> String {
    format!("http://schemas.evosnap.com/CWS/v2.0/ServiceInformation/ICWSServiceInformation/{op}")
}

fn sis_body(op: &str, inner: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
         <{op} xmlns=\"{SIS_NS}\">{inner}</{op}></s:Body></s:Envelope>"
    )
}

/// Item 0 / (e): what EVO's sample calls before its first transaction, answered from a real,
/// stored application profile; other SIS operations get a fault the SIS schema declares.
#[tokio::test]
async fn sis_operations_a_platform_client_calls_before_its_first_transaction() {
    let srv = TestServer::start().await;
    let tok = registered(&srv).await;
    let call = |op: &'static str, inner: String| {
        let srv = &srv;
        async move {
            srv.soap(SIS_PATH, &sis_action(op), &sis_body(op, &inner))
                .await
        }
    };
    let r = call(
        "GetServiceInformation",
        format!("<sessionToken>{tok}</sessionToken>"),
    )
    .await;
    r.assert_ok();
    assert_eq!(r.text_of("ServiceId").as_deref(), Some("2317000001"));
    assert_eq!(r.text_of("AuthAndCapture").as_deref(), Some("true"));
    assert_eq!(r.text_of("Verify").as_deref(), Some("false"));
    assert_eq!(r.text_of("Credit").as_deref(), Some("true"));

    let r = call(
        "SaveApplicationData",
        format!(
            "<sessionToken>{tok}</sessionToken><applicationData>\
             <ApplicationAttended>true</ApplicationAttended><ApplicationName>Till 3</ApplicationName>\
             <SoftwareVersion>1.2</SoftwareVersion><Unknown>x</Unknown></applicationData>"
        ),
    )
    .await;
    r.assert_ok();
    let app_id = r.text_of("SaveApplicationDataResult").unwrap();
    let r = call(
        "GetApplicationData",
        format!("<sessionToken>{tok}</sessionToken><applicationProfileId>{app_id}</applicationProfileId>"),
    )
    .await;
    r.assert_ok();
    assert_eq!(r.text_of("ApplicationName").as_deref(), Some("Till 3"));
    assert_eq!(r.text_of("Unknown"), None);

    // A transaction naming it is accepted; after DeleteApplicationData it is refused.
    let k = ksn(TDES_KSN_BASE, 2);
    let track = srv.encrypt_track(&k, TRACK2);
    let body = swipe_envelope("Authorize", &tok, &track, &k, "1.00", "R1")
        .replace(">14560<", &format!(">{app_id}<"));
    srv.tps("Authorize", &body).await.assert_ok();
    call(
        "DeleteApplicationData",
        format!("<sessionToken>{tok}</sessionToken><applicationProfileId>{app_id}</applicationProfileId>"),
    )
    .await
    .assert_ok();
    let k = ksn(TDES_KSN_BASE, 3);
    let track = srv.encrypt_track(&k, TRACK2);
    let body = swipe_envelope("Authorize", &tok, &track, &k, "1.00", "R1")
        .replace(">14560<", &format!(">{app_id}<"));
    srv.tps("Authorize", &body)
        .await
        .assert_fault("CWSValidationResultFault", 325);

    // A bad token is the usual token fault; an unsupported SIS operation a declared CWSFault.
    call(
        "GetServiceInformation",
        "<sessionToken>nope</sessionToken>".into(),
    )
    .await
    .assert_fault("InvalidTokenFault", 5005);
    let r = call(
        "ValidateMerchantProfile",
        format!("<sessionToken>{tok}</sessionToken>"),
    )
    .await;
    r.assert_fault("CWSFault", 208);
    assert!(r
        .text_of("ProblemType")
        .unwrap()
        .contains("ValidateMerchantProfile"));
}

/// Item 2: the SIS merchant-profile operations, protected by an operator token from the key
/// file (`snapgate keys add-operator`), scoped to its service key; never open.
#[tokio::test]
async fn sis_merchant_profile_operations_need_an_operator_token() {
    let srv = TestServer::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_snapgate"))
        .args([
            "keys",
            "add-operator",
            "ops1",
            "--service-key",
            SERVICE_KEY,
            "--config",
        ])
        .arg(srv.data_dir().join("snapgate.toml"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let op_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let keys = std::fs::read_to_string(srv.data_dir().join("keys.toml")).unwrap();
    assert!(!keys.contains(&op_token), "only the token's hash is stored");
    srv.app.reload().unwrap();
    let terminal = registered(&srv).await;

    let call = |op: &'static str, inner: String| {
        let srv = &srv;
        async move {
            srv.soap(SIS_PATH, &sis_action(op), &sis_body(op, &inner))
                .await
        }
    };
    let save = |tok: &str| {
        format!(
            "<sessionToken>{tok}</sessionToken><serviceId>2317000001</serviceId><tenderType>Credit</tenderType>\
             <merchantProfiles><MerchantProfile><ProfileId>MP-900</ProfileId><ServiceId>2317000001</ServiceId>\
             </MerchantProfile></merchantProfiles>"
        )
    };
    // A terminal's token, no token or a wrong one: InvalidTokenFault, nothing stored.
    for tok in [terminal.as_str(), "", "op.0000"] {
        call("SaveMerchantProfiles", save(tok))
            .await
            .assert_fault("InvalidTokenFault", 5005);
    }
    assert!(srv
        .app
        .profiles
        .merchant(SERVICE_KEY, "MP-900")
        .unwrap()
        .is_none());

    call("SaveMerchantProfiles", save(&op_token))
        .await
        .assert_ok();
    let r = call(
        "GetMerchantProfileIds",
        format!("<sessionToken>{op_token}</sessionToken>"),
    )
    .await;
    r.assert_ok();
    let x = r.xml();
    let ids: Vec<String> = find(&x, "GetMerchantProfileIdsResult")
        .unwrap()
        .children
        .iter()
        .map(|c| c.text.to_string())
        .collect();
    assert_eq!(ids, ["MP-900", "MP1", "MP2"]);
    let one = |op: &'static str| {
        call(
            op,
            format!("<sessionToken>{op_token}</sessionToken><merchantProfileId>MP-900</merchantProfileId>"),
        )
    };
    let r = one("GetMerchantProfile").await;
    r.assert_ok();
    assert_eq!(r.text_of("ServiceId").as_deref(), Some("2317000001"));
    let r = one("IsMerchantProfileInitialized").await;
    assert_eq!(
        r.text_of("IsMerchantProfileInitializedResult").as_deref(),
        Some("true")
    );
    let r = call(
        "GetMerchantProfiles",
        format!("<sessionToken>{op_token}</sessionToken>"),
    )
    .await;
    r.assert_ok();
    // A terminal registers under the profile declared over SIS.
    srv.register_ok(&ksn(TDES_KSN_BASE, 2), "MP-900|SISDECL1")
        .await;
    one("DeleteMerchantProfile").await.assert_ok();
    assert_eq!(
        one("IsMerchantProfileInitialized")
            .await
            .text_of("IsMerchantProfileInitializedResult")
            .as_deref(),
        Some("false")
    );
    one("GetMerchantProfile")
        .await
        .assert_fault("CWSValidationResultFault", 225);
}
