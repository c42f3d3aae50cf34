//! Writing a TPS response: `<OpResponse><OpResult i:type=…>`, the t:Response and Bankcard
//! members in schema order, and a capture's TransactionSummaryData.

use super::request::{BP_PATH, B_PATH, T_PATH};
use crate::cws::ops::{OpName, TPS_PATH};
use crate::cws::processor::{format_amount, Outcome};
use crate::cws::soap::{self, Base, XSI_NS};

pub(super) fn is_capture(name: OpName) -> bool {
    matches!(name, OpName::Capture | OpName::CaptureAll)
}

pub(super) fn result_type(name: OpName) -> &'static str {
    if is_capture(name) {
        "b:BankcardCaptureResponse"
    } else {
        "bp:BankcardTransactionResponsePro"
    }
}

/// The response body: `<OpResponse><OpResult i:type=...>` (CaptureAll: an array of them).
pub fn respond(base: Base, op: OpName, outcomes: &[Outcome]) -> String {
    let name = op.as_str();
    let b = base.uri();
    let mut out = String::with_capacity(1536);
    out.push_str(&format!("<{name}Response xmlns=\"{b}{TPS_PATH}\">"));
    let ns_decls = format!(
        " xmlns:i=\"{XSI_NS}\" xmlns:t=\"{b}{T_PATH}\" xmlns:b=\"{b}{B_PATH}\" xmlns:bp=\"{b}{BP_PATH}\""
    );
    let capture = is_capture(op).then(|| Summary::of(outcomes));
    if op == OpName::CaptureAll {
        out.push_str(&format!("<CaptureAllResult{ns_decls}>"));
        for o in outcomes {
            out.push_str(&format!("<t:Response i:type=\"{}\">", result_type(op)));
            write_outcome(&mut out, o, capture.as_ref());
            out.push_str("</t:Response>");
        }
        out.push_str("</CaptureAllResult>");
    } else {
        for o in outcomes {
            out.push_str(&format!(
                "<{name}Result{ns_decls} i:type=\"{}\">",
                result_type(op)
            ));
            write_outcome(&mut out, o, capture.as_ref());
            out.push_str(&format!("</{name}Result>"));
        }
    }
    out.push_str(&format!("</{name}Response>"));
    out
}

/// What one Capture or CaptureAll captured: b:TransactionSummaryData's sale and net totals.
/// Every response of a CaptureAll carries the totals of the whole call (they share one batch).
pub(super) struct Summary {
    count: usize,
    cents: i64,
}

impl Summary {
    fn of(outcomes: &[Outcome]) -> Summary {
        let captured = outcomes.iter().filter(|o| o.approved);
        Summary {
            count: captured.clone().count(),
            cents: captured.map(|o| o.amount_cents).sum(),
        }
    }

    fn write(&self, out: &mut String) {
        let totals = format!(
            "<b:NetAmount>{}</b:NetAmount><b:Count>{}</b:Count>",
            format_amount(self.cents),
            self.count
        );
        out.push_str(&format!(
            "<b:TransactionSummaryData><b:NetTotals>{totals}</b:NetTotals>\
             <b:SaleTotals>{totals}</b:SaleTotals></b:TransactionSummaryData>"
        ));
    }
}

/// The members of t:Response, then b:BankcardTransactionResponse's or b:BankcardCaptureResponse's,
/// in schema order.
pub(super) fn write_outcome(out: &mut String, o: &Outcome, capture: Option<&Summary>) {
    let t =
        |out: &mut String, n: &str, v: Option<&str>| soap::text_element(out, &format!("t:{n}"), v);
    let b =
        |out: &mut String, n: &str, v: Option<&str>| soap::text_element(out, &format!("b:{n}"), v);
    t(
        out,
        "Status",
        Some(if o.approved { "Successful" } else { "Failure" }),
    );
    t(out, "StatusCode", Some(&o.status_code));
    t(out, "StatusMessage", Some(&o.status_message));
    t(out, "TransactionId", Some(&o.transaction_id));
    t(
        out,
        "OriginatorTransactionId",
        o.originator_transaction_id.as_deref(),
    );
    t(out, "CaptureState", Some(o.capture_state));
    t(out, "TransactionState", Some(o.transaction_state));
    t(out, "IsAcknowledged", Some("false"));
    t(out, "Reference", o.reference.as_deref());
    if let Some(summary) = capture {
        b(out, "BatchId", o.batch_id.as_deref());
        summary.write(out);
        return;
    }
    let card = o.card.as_ref();
    b(out, "Amount", Some(&format_amount(o.amount_cents)));
    b(
        out,
        "CardType",
        Some(card.map_or("NotSet", |c| c.card_type)),
    );
    b(out, "ApprovalCode", o.approval_code.as_deref());
    b(out, "MaskedPAN", card.map(|c| c.masked_pan.as_str()));
}
