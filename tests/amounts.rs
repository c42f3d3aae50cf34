//! Issue 13 point 5: amounts. The final amount of every operation (amount plus tip, an adjusted
//! total, a capture with its tip) is checked against every limit: 0 to 99,999,999.99, and a
//! capture never above what was authorized. Adjust follows the schema: `Amount` is the
//! positive or negative change, `TipAmount` a tip added to the total.

mod common;

use common::*;

/// A keyed sale of `amount` with `tip` in TransactionData/TipAmount.
async fn keyed_with_tip(
    srv: &TestServer,
    op: &str,
    tok: &str,
    amount: &str,
    tip: &str,
) -> HttpReply {
    let body = keyed_envelope(op, tok, "MP1", amount).replace(
        "<t:CurrencyCode>USD</t:CurrencyCode>",
        &format!("<t:CurrencyCode>USD</t:CurrencyCode><b:TipAmount>{tip}</b:TipAmount>"),
    );
    srv.tps(op, &body).await
}

async fn setup() -> (TestServer, String) {
    let srv = TestServer::start().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    (srv, tok)
}

#[tokio::test]
async fn a_tip_is_added_to_a_new_transaction_and_the_total_is_capped() {
    let (srv, tok) = setup().await;
    let r = keyed_with_tip(&srv, "Authorize", &tok, "10.00", "2.50").await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("12.50"));
    // Each part within the maximum, the sum above it.
    keyed_with_tip(&srv, "AuthorizeAndCapture", &tok, "99999999.99", "0.01")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    let r = keyed_with_tip(&srv, "AuthorizeAndCapture", &tok, "99999999.98", "0.01").await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("99999999.99"));
}

#[tokio::test]
async fn a_capture_with_its_tip_cannot_exceed_the_authorized_amount() {
    let (srv, tok) = setup().await;
    let a = keyed_with_tip(&srv, "Authorize", &tok, "10.00", "0").await;
    let id = a.text_of("TransactionId").unwrap();
    srv.follow(
        "Capture",
        &tok,
        &id,
        "<b:Amount>10.00</b:Amount><b:TipAmount>1.00</b:TipAmount>",
    )
    .await
    .assert_fault("CWSValidationResultFault", 325);
    srv.follow("Capture", &tok, &id, "<b:TipAmount>0.01</b:TipAmount>")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    srv.follow(
        "Capture",
        &tok,
        &id,
        "<b:Amount>9.00</b:Amount><b:TipAmount>1.00</b:TipAmount>",
    )
    .await
    .assert_ok();
    assert_eq!(
        srv.app.sandbox.get(&id).unwrap().unwrap().captured_cents,
        1000
    );
}

#[tokio::test]
async fn adjust_changes_the_amount_by_a_signed_amount_plus_tip_within_the_limits() {
    let (srv, tok) = setup().await;
    let a = keyed_with_tip(&srv, "Authorize", &tok, "10.00", "0").await;
    let id = a.text_of("TransactionId").unwrap();
    let adjust = |extra: &'static str| srv.follow("Adjust", &tok, &id, extra);
    let r = adjust("<t:Amount>-3.00</t:Amount>").await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("7.00"));
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Adjusted"));
    let r = adjust("<t:Amount>2.00</t:Amount><t:TipAmount>1.50</t:TipAmount>").await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("10.50"));
    // Below zero: refused, nothing changes.
    adjust("<t:Amount>-10.51</t:Amount>")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    assert_eq!(
        srv.app.sandbox.get(&id).unwrap().unwrap().amount_cents,
        1050
    );
    // Down to zero is allowed.
    let r = adjust("<t:Amount>-10.50</t:Amount>").await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("0.00"));
    // Up to the maximum, not beyond (Adjust had no cap).
    adjust("<t:Amount>99999999.99</t:Amount>").await.assert_ok();
    adjust("<t:TipAmount>0.01</t:TipAmount>")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    adjust("<t:Amount>0.01</t:Amount>")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    // A negative tip is not a tip.
    adjust("<t:TipAmount>-1.00</t:TipAmount>")
        .await
        .assert_fault("CWSValidationResultFault", 325);
    assert_eq!(
        srv.app.sandbox.get(&id).unwrap().unwrap().amount_cents,
        9_999_999_999
    );
}

#[tokio::test]
async fn adjusting_a_captured_sale_answers_adjusted_and_keeps_it_captured() {
    let (srv, tok) = setup().await;
    let s = keyed_with_tip(&srv, "AuthorizeAndCapture", &tok, "10.00", "0").await;
    let id = s.text_of("TransactionId").unwrap();
    let r = srv
        .follow("Adjust", &tok, &id, "<t:Amount>1.00</t:Amount>")
        .await;
    r.assert_ok();
    assert_eq!(r.text_of("TransactionState").as_deref(), Some("Adjusted"));
    assert_eq!(r.text_of("CaptureState").as_deref(), Some("Captured"));
    assert_eq!(r.text_of("Amount").as_deref(), Some("11.00"));
    assert_eq!(
        srv.app.sandbox.get(&id).unwrap().unwrap().captured_cents,
        1100
    );
    // Still a captured sale: it can be returned, in full, at the adjusted amount.
    let r = srv.follow("ReturnById", &tok, &id, "").await;
    r.assert_ok();
    assert_eq!(r.text_of("Amount").as_deref(), Some("11.00"));
}
