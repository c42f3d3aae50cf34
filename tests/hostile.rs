//! Hostile input against RegisterTerminal (`/2.1.32/SIS.svc`) over the real socket: entity
//! tricks, resource exhaustion, malformed and ambiguous envelopes, wrong media types, and
//! signature wrapping on the token. Every case asserts the exact answer, that nothing was
//! stored, and that the server still answers a Ping and a registration afterwards.
//!
//! The request bodies are in `fixtures/hostile/` (one file per case); huge payloads are
//! generated here into a `{{PAYLOAD}}` placeholder. Every request runs under a 10 s hang guard.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use snapgate::token::{self, TokenError};
use std::future::Future;
use std::time::Duration;

const PATH: &str = "/2.1.32/SIS.svc";
const PING_ACTION: &str =
    "http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/IExternallyFacingStandardOperations/Ping";
const PING_BODY: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"/></s:Body></s:Envelope>"#;
const XML: &str = "text/xml; charset=utf-8";
const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// A fault must never echo a large part of the request.
const MAX_FAULT_BYTES: usize = 2048;
const HANG_GUARD: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Fail the test if `fut` has not finished within the hang guard.
async fn guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG_GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {HANG_GUARD:?}"),
    }
}

/// The credentials a hostile body carries: valid ones by default, so that a trick that got
/// through would register a terminal and show up in the store.
struct Creds {
    ksn: String,
    secret: String,
}

impl Creds {
    fn valid(srv: &TestServer) -> Creds {
        let ksn = ksn(TDES_KSN_BASE, 1);
        let secret = srv.encrypt_secret(&ksn, "MP1|HOSTILE1");
        Creds { ksn, secret }
    }

    /// A well-formed but wrong secret: the envelope is fine, authentication fails.
    fn bad(srv: &TestServer) -> Creds {
        Creds {
            secret: "00".repeat(16),
            ..Creds::valid(srv)
        }
    }
}

/// A hostile fixture filled with `creds` and `extra` placeholders.
fn hostile(name: &str, creds: &Creds, extra: &[(&str, &str)]) -> String {
    let mut vars = vec![
        ("SERVICE_KEY", SERVICE_KEY),
        ("VENDOR_ID", VENDOR_ID),
        ("ENCRYPTED_SECRET", creds.secret.as_str()),
        ("KSN", creds.ksn.as_str()),
    ];
    vars.extend_from_slice(extra);
    fixture(&format!("hostile/{name}"), &vars)
}

/// The raw bytes of a hostile fixture (for the ones that are not UTF-8 on purpose).
fn hostile_bytes(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hostile")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// POST a SOAP RegisterTerminal request (text/xml and the right SOAPAction).
async fn post_register(srv: &TestServer, what: &str, body: &str) -> HttpReply {
    guard(what, srv.soap(PATH, SIS_ACTION, body)).await
}

/// POST raw bytes with the given headers through the harness client.
async fn post_bytes(
    srv: &TestServer,
    what: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpReply {
    guard(what, send(srv.addr, "POST", PATH, headers, body.into())).await
}

/// POST a large body over a plain socket, writing while reading, so that a server answering
/// before it read the whole body (413) is seen rather than a broken pipe. `chunked` sends no
/// Content-Length, so only the body reader's limit can stop it.
async fn post_large(srv: &TestServer, what: &str, body: Vec<u8>, chunked: bool) -> HttpReply {
    guard(
        what,
        post_streaming(
            srv.addr,
            PATH,
            &[
                ("content-type", XML),
                ("soapaction", &format!("\"{SIS_ACTION}\"")),
            ],
            body,
            chunked,
        ),
    )
    .await
}

/// A `CWSValidationResultFault` 225 with one error: check status, rule and location, and
/// return the message.
fn validation(r: &HttpReply, status: u16, rule: &str, location: &str) -> String {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.content_type.starts_with("text/xml"), "{}", r.content_type);
    assert_eq!(
        r.fault(),
        Some(("CWSValidationResultFault".to_owned(), 225)),
        "{}",
        r.body
    );
    assert_eq!(r.text_of("faultcode").as_deref(), Some("s:Client"));
    assert_eq!(r.text_of("RuleKey").as_deref(), Some(rule), "{}", r.body);
    assert_eq!(
        r.text_of("RuleLocationKey").as_deref(),
        Some(location),
        "{}",
        r.body
    );
    assert!(
        r.body.len() <= MAX_FAULT_BYTES,
        "fault of {} bytes echoes the request",
        r.body.len()
    );
    r.text_of("RuleMessage").expect("a RuleMessage")
}

/// The envelope reader refused the request with exactly `message`.
fn assert_malformed(r: &HttpReply, message: &str) {
    assert_eq!(
        validation(r, 500, "MalformedRequest", "Envelope"),
        message,
        "{}",
        r.body
    );
}

/// The envelope reader refused the request as not well-formed; returns quick-xml's reason.
fn assert_not_well_formed(r: &HttpReply) -> String {
    let m = validation(r, 500, "MalformedRequest", "Envelope");
    m.strip_prefix("the request is not well-formed XML: ")
        .unwrap_or_else(|| panic!("not a syntax error: {m}"))
        .to_owned()
}

/// The envelope was fine; the credentials were not.
fn assert_authentication_fault(r: &HttpReply) {
    r.assert_fault("AuthenticationFault", 406);
    assert_eq!(
        r.text_of("ProblemType").as_deref(),
        Some("Terminal could not be authenticated")
    );
    assert!(r.body.len() <= MAX_FAULT_BYTES, "{}", r.body.len());
}

fn assert_http_fault(r: &HttpReply, status: u16, rule: &str) {
    let location = match rule {
        "RequestTooLarge" => "Body",
        "UnsupportedMediaType" => "Content-Type",
        other => panic!("no location known for {other}"),
    };
    validation(r, status, rule, location);
}

/// Nothing was stored, and the server still answers a Ping and a real registration.
async fn still_serves(srv: &TestServer) {
    assert_eq!(srv.app.store.len(), 0, "a hostile request stored something");
    let r = guard("ping afterwards", srv.soap(PATH, PING_ACTION, PING_BODY)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.text_of("IsSuccess").as_deref(), Some("true"));
    let tok = guard(
        "registration afterwards",
        srv.register_ok(&ksn(TDES_KSN_BASE, 2), "MP1|AFTER001"),
    )
    .await;
    let v = srv
        .verify(&tok)
        .expect("the token from the registration afterwards verifies");
    assert_eq!(v.device_serial, "AFTER001");
    assert_eq!(srv.app.store.len(), 1);
}

fn never_leaks_passwd(r: &HttpReply) {
    for needle in ["root:", ":0:0:", "/bin/", "nologin", "daemon"] {
        assert!(
            !r.body.contains(needle),
            "reply leaks {needle:?}: {}",
            r.body
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Entities and external resources

#[tokio::test]
async fn xxe_external_entity_is_refused_without_reading_the_file() {
    let srv = TestServer::start().await;
    let body = hostile("xxe_external_entity.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "xxe", &body).await;
    assert_malformed(&r, "document type declarations are not accepted");
    never_leaks_passwd(&r);
    still_serves(&srv).await;
}

#[tokio::test]
async fn xxe_parameter_entity_and_external_dtd_are_refused() {
    let srv = TestServer::start().await;
    for f in ["xxe_parameter_entity.xml", "external_dtd_reference.xml"] {
        let r = post_register(&srv, f, &hostile(f, &Creds::valid(&srv), &[])).await;
        assert_malformed(&r, "document type declarations are not accepted");
        never_leaks_passwd(&r);
    }
    still_serves(&srv).await;
}

#[tokio::test]
async fn undeclared_entity_reference_is_not_well_formed() {
    let srv = TestServer::start().await;
    let body = hostile("undeclared_entity.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "undeclared entity", &body).await;
    let why = assert_not_well_formed(&r);
    assert!(why.contains("xxe"), "{why}");
    still_serves(&srv).await;
}

#[tokio::test]
async fn xinclude_is_just_an_element_and_includes_nothing() {
    let srv = TestServer::start().await;
    let body = hostile("xinclude.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "xinclude", &body).await;
    // encryptedSecret holds an element and no text: the credentials are missing.
    assert_authentication_fault(&r);
    never_leaks_passwd(&r);
    still_serves(&srv).await;
}

#[tokio::test]
async fn billion_laughs_is_refused_at_the_doctype() {
    let srv = TestServer::start().await;
    let body = hostile("billion_laughs.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "billion laughs", &body).await;
    assert_malformed(&r, "document type declarations are not accepted");
    assert!(!r.body.contains("lollol"), "{}", r.body);
    still_serves(&srv).await;
}

#[tokio::test]
async fn processing_instruction_is_refused() {
    let srv = TestServer::start().await;
    let body = hostile("processing_instruction.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "processing instruction", &body).await;
    assert_malformed(&r, "processing instructions are not accepted");
    still_serves(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// Resource exhaustion

#[tokio::test]
async fn ten_thousand_levels_of_nesting_stop_at_the_depth_limit() {
    // Balanced, the document is ~70 KB: over the default body limit, so it gets 413 there...
    let srv = TestServer::start().await;
    let balanced = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
    let body = hostile(
        "deep_nesting.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &balanced)],
    );
    assert!(body.len() > DEFAULT_MAX_BODY);
    let r = post_large(
        &srv,
        "deep nesting, default limit",
        body.clone().into(),
        false,
    )
    .await;
    assert_http_fault(&r, 413, "RequestTooLarge");
    // ...and the same depth without the closing tags fits and hits the depth limit.
    let open = "<a>".repeat(10_000);
    let unclosed = hostile(
        "deep_nesting.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &open)],
    );
    assert!(unclosed.len() < DEFAULT_MAX_BODY);
    let r = post_register(&srv, "deep nesting, unclosed", &unclosed).await;
    assert_malformed(&r, "elements nest deeper than 32");
    still_serves(&srv).await;

    // With room for the whole document, the depth limit answers.
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 1 << 20).await;
    let r = post_large(&srv, "deep nesting, 1 MiB limit", body.into(), false).await;
    assert_malformed(&r, "elements nest deeper than 32");
    still_serves(&srv).await;
}

#[tokio::test]
async fn too_many_elements_stop_at_the_element_limit() {
    let srv = TestServer::start().await;
    let many = "<a/>".repeat(2_001);
    let body = hostile(
        "too_many_elements.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &many)],
    );
    let r = post_register(&srv, "too many elements", &body).await;
    assert_malformed(&r, "the envelope has more than 2000 elements");
    still_serves(&srv).await;
}

fn megabyte_attribute(srv: &TestServer) -> String {
    let value = "A".repeat(1 << 20);
    hostile(
        "huge_attribute.xml",
        &Creds::bad(srv),
        &[("PAYLOAD", &value)],
    )
}

#[tokio::test]
async fn megabyte_attribute_is_too_large_for_the_default_body_limit() {
    let srv = TestServer::start().await;
    let body = megabyte_attribute(&srv);
    // Refused from the Content-Length, before the body is read...
    let r = post_large(&srv, "1 MB attribute", body.clone().into(), false).await;
    assert_http_fault(&r, 413, "RequestTooLarge");
    assert_eq!(
        r.text_of("RuleMessage").as_deref(),
        Some("The request body is larger than 65536 bytes")
    );
    // ...and without one (chunked), by the body reader's limit.
    let r = post_large(&srv, "1 MB attribute, chunked", body.into(), true).await;
    assert_http_fault(&r, 413, "RequestTooLarge");
    still_serves(&srv).await;
}

#[tokio::test]
async fn megabyte_attribute_within_a_raised_body_limit_is_read_in_bounded_time() {
    // There is no limit on one attribute's length: an attribute the tree does not keep is
    // skipped without a copy, so the body limit bounds it. The envelope is fine, the (wrong)
    // credentials are refused.
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 4 << 20).await;
    let body = megabyte_attribute(&srv);
    let r = post_large(&srv, "1 MB attribute, 4 MiB limit", body.into(), false).await;
    assert_authentication_fault(&r);
    // The same attribute as i:type is kept: still one bounded copy.
    let value = "A".repeat(1 << 20);
    let typed = hostile(
        "huge_attribute.xml",
        &Creds::bad(&srv),
        &[("PAYLOAD", &value)],
    )
    .replace(
        "padding=\"",
        "xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" i:type=\"",
    );
    let r = post_large(&srv, "1 MB i:type", typed.into(), false).await;
    assert_authentication_fault(&r);
    still_serves(&srv).await;
}

fn namespace_declarations(n: usize) -> String {
    (0..n)
        .map(|i| format!("xmlns:a{i}=\"u\""))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn thousands_of_namespace_declarations_hit_the_attribute_limit() {
    let srv = TestServer::start().await;
    let decls = namespace_declarations(3_000);
    let body = hostile(
        "namespace_flood.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &decls)],
    );
    assert!(body.len() < DEFAULT_MAX_BODY, "{}", body.len());
    let r = post_register(&srv, "3,000 namespace declarations", &body).await;
    assert_malformed(&r, "an element has more than 32 attributes");
    still_serves(&srv).await;

    // 200,000 on one element with a 4 MiB body limit: still linear, still refused.
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 4 << 20).await;
    let decls = namespace_declarations(200_000);
    let body = hostile(
        "namespace_flood.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &decls)],
    );
    let r = post_large(&srv, "200,000 namespace declarations", body.into(), false).await;
    assert_malformed(&r, "an element has more than 32 attributes");
    still_serves(&srv).await;
}

#[tokio::test]
async fn thousands_of_namespace_declarations_spread_over_elements_are_read() {
    // 30 declarations (under the attribute limit) on each of 100 elements: the envelope is
    // fine, and the wrong credentials get the authentication fault.
    let srv = TestServer::start().await;
    let decls = namespace_declarations(30);
    let payload = format!("<x {decls}/>").repeat(100);
    let body = hostile(
        "namespace_redeclared.xml",
        &Creds::bad(&srv),
        &[("PAYLOAD", &payload)],
    );
    assert!(body.len() < DEFAULT_MAX_BODY, "{}", body.len());
    let r = post_register(&srv, "3,000 declarations over 100 elements", &body).await;
    assert_authentication_fault(&r);
    still_serves(&srv).await;
}

#[tokio::test]
async fn a_long_namespace_inherited_by_many_elements_is_refused() {
    // 30 KB of default namespace inherited by 1,900 empty elements: ~38 KB of request that
    // would become ~57 MB of copied namespace names in the tree.
    let srv = TestServer::start().await;
    let ns = "n".repeat(30_000);
    let children = "<a/>".repeat(1_900);
    let body = hostile(
        "namespace_amplification.xml",
        &Creds::bad(&srv),
        &[("PAYLOAD", &ns), ("CHILDREN", &children)],
    );
    assert!(body.len() < DEFAULT_MAX_BODY, "{}", body.len());
    let r = post_register(&srv, "namespace amplification", &body).await;
    assert_malformed(&r, "a namespace name is longer than 512 bytes");
    still_serves(&srv).await;
}

#[tokio::test]
async fn huge_text_node_is_refused_without_being_echoed() {
    let srv = TestServer::start().await;
    // 60,000 hex digits as the encrypted secret: fits the body limit, fails authentication.
    let text = "AB".repeat(30_000);
    let body = hostile(
        "huge_text_node.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &text)],
    );
    assert!(body.len() < DEFAULT_MAX_BODY, "{}", body.len());
    let r = post_register(&srv, "60 KB text node", &body).await;
    assert_authentication_fault(&r);
    assert!(!r.body.contains("ABABABAB"), "{}", r.body);
    still_serves(&srv).await;

    // 3 MB of text with a 4 MiB body limit.
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 4 << 20).await;
    let text = "AB".repeat(3 << 19);
    let body = hostile(
        "huge_text_node.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &text)],
    );
    let r = post_large(&srv, "3 MB text node", body.into(), false).await;
    assert_authentication_fault(&r);
    assert!(!r.body.contains("ABABABAB"), "{}", r.body);
    still_serves(&srv).await;
}

#[tokio::test]
async fn long_undeclared_prefix_is_not_echoed_in_full() {
    let srv = TestServer::start().await;
    let prefix = "p".repeat(30_000);
    let body = hostile(
        "long_undeclared_prefix.xml",
        &Creds::valid(&srv),
        &[("PAYLOAD", &prefix)],
    );
    assert!(body.len() < DEFAULT_MAX_BODY, "{}", body.len());
    let r = post_register(&srv, "long undeclared prefix", &body).await;
    let why = assert_not_well_formed(&r);
    assert!(why.starts_with("undeclared namespace prefix"), "{why}");
    still_serves(&srv).await;
}

#[tokio::test]
async fn long_non_ascii_mismatched_end_tag_is_a_fault_not_a_panic() {
    // The syntax error quotes the tag names and is cut to a short excerpt; with 3-byte
    // characters at least two of these three land the cut inside a character.
    let srv = TestServer::start().await;
    for pad in ["", "a", "aa"] {
        let name = format!("{pad}{}", "中".repeat(100));
        let body = hostile(
            "mismatched_end_tag_non_ascii.xml",
            &Creds::valid(&srv),
            &[("PAYLOAD", &name)],
        );
        let r = post_register(&srv, "non-ASCII end tag mismatch", &body).await;
        let why = assert_not_well_formed(&r);
        assert!(why.contains("中中中"), "{why}");
    }
    still_serves(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// Encodings and broken documents

#[tokio::test]
async fn invalid_utf8_is_refused() {
    let srv = TestServer::start().await;
    let r = post_bytes(
        &srv,
        "invalid UTF-8",
        &[("content-type", XML), ("soapaction", SIS_ACTION)],
        hostile_bytes("invalid_utf8.xml"),
    )
    .await;
    assert_malformed(&r, "the request is not UTF-8");

    // A UTF-16 envelope (with a BOM) of a valid registration: UTF-8 only.
    let c = Creds::valid(&srv);
    let body = register_envelope(SERVICE_KEY, VENDOR_ID, &c.secret, &c.ksn);
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(body.encode_utf16().flat_map(u16::to_le_bytes));
    let r = post_bytes(
        &srv,
        "UTF-16",
        &[
            ("content-type", "text/xml; charset=utf-16"),
            ("soapaction", SIS_ACTION),
        ],
        utf16,
    )
    .await;
    assert_malformed(&r, "the request is not UTF-8");
    still_serves(&srv).await;
}

#[tokio::test]
async fn truncated_envelope_is_not_well_formed() {
    let srv = TestServer::start().await;
    let body = hostile("truncated_envelope.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "truncated between tags", &body).await;
    assert_eq!(
        assert_not_well_formed(&r),
        "the document ends inside an element"
    );
    // Cut inside a start tag.
    let full = register_envelope(SERVICE_KEY, VENDOR_ID, "00", &ksn(TDES_KSN_BASE, 1));
    let cut = &full[..full.find("<encryptionKeyId").unwrap() + 8];
    let r = post_register(&srv, "truncated inside a tag", cut).await;
    assert_not_well_formed(&r);
    still_serves(&srv).await;
}

#[tokio::test]
async fn two_bodies_are_refused() {
    let srv = TestServer::start().await;
    let body = hostile("two_bodies.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "two bodies", &body).await;
    assert_malformed(&r, "the Envelope must hold exactly one Body");
    still_serves(&srv).await;
}

#[tokio::test]
async fn a_second_envelope_after_the_first_is_refused() {
    let srv = TestServer::start().await;
    let body = hostile("trailing_second_envelope.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "second envelope", &body).await;
    assert_eq!(assert_not_well_formed(&r), "content after the root element");
    still_serves(&srv).await;
}

#[tokio::test]
async fn two_register_terminal_operations_in_one_body_are_refused() {
    let srv = TestServer::start().await;
    let body = hostile("duplicate_operation.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "two operations", &body).await;
    assert_malformed(&r, "the Body must hold exactly one element");
    still_serves(&srv).await;
}

#[tokio::test]
async fn duplicate_register_terminal_children_are_refused() {
    // The first encryptionKeyId is the right one: a reader taking either copy would register.
    let srv = TestServer::start().await;
    let body = hostile("duplicate_children.xml", &Creds::valid(&srv), &[]);
    let r = post_register(&srv, "duplicate children", &body).await;
    let m = validation(
        &r,
        500,
        "InvalidElement",
        "RegisterTerminal/encryptionKeyId",
    );
    assert_eq!(m, "The element appears more than once");
    assert_eq!(r.text_of("Operation").as_deref(), Some("RegisterTerminal"));
    still_serves(&srv).await;
}

#[tokio::test]
async fn soap_action_that_names_another_operation_is_refused() {
    let srv = TestServer::start().await;
    let body = hostile("soapaction_mismatch.xml", &Creds::valid(&srv), &[]);
    let sign_on = SIS_ACTION.replace("RegisterTerminal", "SignOnWithToken");
    let ipc = SIS_ACTION.replace("evosnap", "ipcommerce");
    for action in [PING_ACTION, sign_on.as_str(), ipc.as_str()] {
        let r = guard(action, srv.soap(PATH, action, &body)).await;
        let m = validation(&r, 500, "SOAPActionMismatch", "SOAPAction");
        assert_eq!(
            m,
            "The SOAPAction header names another operation than the body"
        );
        assert_eq!(r.text_of("Operation").as_deref(), Some("RegisterTerminal"));
    }
    // A Ping body under the RegisterTerminal action.
    let r = post_register(&srv, "ping body, register action", PING_BODY).await;
    validation(&r, 500, "SOAPActionMismatch", "SOAPAction");
    still_serves(&srv).await;
}

#[tokio::test]
async fn non_xml_bodies_are_refused() {
    let srv = TestServer::start().await;
    let headers = [("content-type", XML), ("soapaction", SIS_ACTION)];
    let json = hostile("non_xml.json", &Creds::valid(&srv), &[]);
    let r = post_bytes(&srv, "JSON", &headers, json.into_bytes()).await;
    assert_eq!(assert_not_well_formed(&r), "text outside the root element");

    let r = post_bytes(&srv, "binary", &headers, hostile_bytes("non_xml.bin")).await;
    assert_malformed(&r, "the request is not UTF-8");

    // Binary that happens to be UTF-8 (control characters and ASCII).
    let ascii: Vec<u8> = (0u8..0x80).rev().collect();
    let r = post_bytes(&srv, "ASCII binary", &headers, ascii).await;
    assert_not_well_formed(&r);

    for (what, empty) in [("empty", ""), ("whitespace", " \r\n\t ")] {
        let r = post_bytes(&srv, what, &headers, empty.into()).await;
        assert_eq!(assert_not_well_formed(&r), "no root element", "{what}");
    }
    still_serves(&srv).await;
}

#[tokio::test]
async fn wrong_content_types_get_415() {
    let srv = TestServer::start().await;
    let c = Creds::valid(&srv);
    // A valid registration: only the media type is wrong.
    let body = register_envelope(SERVICE_KEY, VENDOR_ID, &c.secret, &c.ksn);
    for ct in [
        Some("application/json"),
        Some("application/soap+xml; charset=utf-8"),
        Some("text/plain"),
        Some(""),
        None,
    ] {
        let mut headers = vec![("soapaction", SIS_ACTION)];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let r = post_bytes(&srv, "content type", &headers, body.clone().into()).await;
        assert_http_fault(&r, 415, "UnsupportedMediaType");
        assert_eq!(
            r.text_of("RuleMessage").as_deref(),
            Some("SOAP 1.1 requests must be sent as text/xml"),
            "{ct:?}"
        );
    }
    still_serves(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// Signature wrapping on the TerminalAccessToken

/// A token as a registration issues it, decoded: (assertion before the signature, signature
/// trailer including `</saml:Assertion>`). The keys come from the dev config: no server needed.
fn genuine_token(keys: &DevKeys) -> (String, String) {
    let tok = keys.issue(&ksn(TDES_KSN_BASE, 1), "B1234567");
    keys.verify(&tok).expect("the genuine token verifies");
    let xml = String::from_utf8(B64.decode(&tok).unwrap()).unwrap();
    let at = xml.find("<ds:Signature").expect("a signature");
    assert!(xml.ends_with("</ds:Signature></saml:Assertion>"), "{xml}");
    (xml[..at].to_owned(), xml[at..].to_owned())
}

/// Verify an altered assertion (given as XML) short enough to reach the signature check, and
/// expect `want`.
fn refused(keys: &DevKeys, what: &str, xml: &str, want: TokenError) {
    let tok = B64.encode(xml);
    assert!(
        tok.len() <= token::MAX_TOKEN_CHARS,
        "{what}: too long to test the MAC"
    );
    assert_eq!(keys.verify(&tok), Err(want), "{what}: {xml}");
}

/// A whole second assertion doubles the token past `MAX_TOKEN_CHARS`: refused by its size
/// before it is even decoded.
fn refused_for_size(keys: &DevKeys, what: &str, xml: &str) {
    let tok = B64.encode(xml);
    assert!(tok.len() > token::MAX_TOKEN_CHARS, "{what}: {}", tok.len());
    assert_eq!(keys.verify(&tok), Err(TokenError::Malformed), "{what}");
}

#[tokio::test]
async fn a_second_assertion_appended_or_prepended_is_refused() {
    let keys = dev_keys();
    let (signed, trailer) = genuine_token(&keys);
    let good = format!("{signed}{trailer}");
    let forged_signed = signed.replace("B1234567", "EVIL0001");
    // The forged assertion, unsigned and with the genuine signature copied on.
    let forged_bare = format!("{forged_signed}</saml:Assertion>");
    let forged_copied = format!("{forged_signed}{trailer}");
    refused(
        &keys,
        "forged alone",
        &forged_copied,
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "genuine + unsigned forged",
        &format!("{good}{forged_bare}"),
        TokenError::Malformed,
    );
    refused_for_size(
        &keys,
        "genuine + forged with copied signature",
        &format!("{good}{forged_copied}"),
    );
    refused(
        &keys,
        "genuine's signed bytes + forged with copied signature",
        &format!("{signed}{forged_copied}"),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "forged + genuine",
        &format!("{forged_bare}{good}"),
        TokenError::BadSignature,
    );
    // XSW: the genuine assertion wrapped inside the forged one.
    refused_for_size(
        &keys,
        "genuine inside an Advice of the forged one",
        &format!("{forged_signed}<saml:Advice>{good}</saml:Advice>{trailer}"),
    );
    refused(
        &keys,
        "genuine's signed bytes inside an Advice of the forged one",
        &format!("{forged_signed}<saml:Advice>{signed}</saml:Advice>{trailer}"),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "forged wrapping genuine, no signature of its own",
        &format!("{forged_signed}<saml:Advice>{good}</saml:Advice></saml:Assertion>"),
        TokenError::Malformed,
    );
}

#[tokio::test]
async fn a_moved_or_second_signature_is_refused() {
    let keys = dev_keys();
    let (signed, trailer) = genuine_token(&keys);
    let signature = trailer.strip_suffix("</saml:Assertion>").unwrap();
    let start_tag_end = signed.find('>').unwrap() + 1;
    refused(
        &keys,
        "signature moved to the front",
        &format!("{trailer}{signed}"),
        TokenError::Malformed,
    );
    refused(
        &keys,
        "signature moved to the first child",
        &format!(
            "{}{signature}{}</saml:Assertion>",
            &signed[..start_tag_end],
            &signed[start_tag_end..]
        ),
        TokenError::Malformed,
    );
    refused(
        &keys,
        "a second Signature before the real one",
        &format!("{signed}{signature}{trailer}"),
        TokenError::BadSignature,
    );
    // The last copy matches the trailer template, so the MAC covers the first: it fails.
    refused(
        &keys,
        "a second Signature after the real one",
        &format!("{signed}{signature}{signature}</saml:Assertion>"),
        TokenError::BadSignature,
    );
    let other_value = {
        let at = signature.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
        format!(
            "{}{}{}",
            &signature[..at],
            "A".repeat(43) + "=",
            &signature[at + 44..]
        )
    };
    refused(
        &keys,
        "a forged Signature first, the real one after",
        &format!("{signed}{other_value}{trailer}"),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "the real Signature replaced by a forged value",
        &format!("{signed}{other_value}</saml:Assertion>"),
        TokenError::BadSignature,
    );
}

#[tokio::test]
async fn comment_injection_is_refused() {
    let keys = dev_keys();
    let (signed, trailer) = genuine_token(&keys);
    refused(
        &keys,
        "comment inside the serial number",
        &format!("{}{trailer}", signed.replace("B1234567", "B1234<!---->567")),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "comment before the signature",
        &format!("{signed}<!-- x -->{trailer}"),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "comment after the assertion",
        &format!("{signed}{trailer}<!-- x -->"),
        TokenError::Malformed,
    );
    let in_trailer = trailer.replacen("<ds:KeyInfo>", "<!-- x --><ds:KeyInfo>", 1);
    refused(
        &keys,
        "comment inside the signature",
        &format!("{signed}{in_trailer}"),
        TokenError::Malformed,
    );
    let forged = signed.replace("B1234567", "EVIL0001");
    refused_for_size(
        &keys,
        "the whole genuine assertion commented into a forged one",
        &format!("{forged}<!--{signed}{trailer}-->{trailer}"),
    );
    refused(
        &keys,
        "the genuine signed bytes commented into a forged one",
        &format!("{forged}<!--{signed}-->{trailer}"),
        TokenError::BadSignature,
    );
}

#[tokio::test]
async fn whitespace_and_encoding_changes_are_refused() {
    let keys = dev_keys();
    let (signed, trailer) = genuine_token(&keys);
    let good = format!("{signed}{trailer}");
    refused(
        &keys,
        "newline between elements",
        &format!("{}{trailer}", signed.replacen("><", ">\n<", 1)),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "space before />",
        &format!("{}{trailer}", signed.replacen("\"/>", "\" />", 1)),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "space inside the serial number",
        &format!("{}{trailer}", signed.replace(">B1234567<", "> B1234567<")),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "newline inside the signature",
        &format!("{signed}{}", trailer.replacen("><", ">\n<", 1)),
        TokenError::Malformed,
    );
    refused(
        &keys,
        "trailing newline",
        &format!("{good}\n"),
        TokenError::Malformed,
    );
    refused(
        &keys,
        "CRLF line ends",
        &good.replace("><", ">\r\n<"),
        TokenError::Malformed,
    );
    refused(
        &keys,
        "character reference for the same character",
        &format!(
            "{}{trailer}",
            signed.replace(">B1234567<", ">&#66;1234567<")
        ),
        TokenError::BadSignature,
    );
    refused(
        &keys,
        "an XML declaration in front",
        &format!("<?xml version=\"1.0\"?>{good}"),
        TokenError::BadSignature,
    );
    // Whitespace inside the base64 text (MIME line wrapping) is not base64.
    let tok = B64.encode(&good);
    let wrapped: Vec<&str> = tok
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    assert_eq!(
        keys.verify(&wrapped.join("\r\n")),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        keys.verify(&format!("{} {}", &tok[..40], &tok[40..])),
        Err(TokenError::Malformed)
    );
    // The genuine token still verifies after all of that.
    assert!(keys.verify(&tok).is_ok());
}
