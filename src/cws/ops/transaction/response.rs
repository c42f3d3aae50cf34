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
    use std::fmt::Write;
    let name = op.as_str();
    let b = base.uri();
    // `write!` into the one buffer: no intermediate String per piece (issue 9).
    let mut out = String::with_capacity(1536);
    let ns_decls = |out: &mut String| {
        let _ = write!(
            out,
            " xmlns:i=\"{XSI_NS}\" xmlns:t=\"{b}{T_PATH}\" xmlns:b=\"{b}{B_PATH}\" xmlns:bp=\"{b}{BP_PATH}\""
        );
    };
    let _ = write!(out, "<{name}Response xmlns=\"{b}{TPS_PATH}\">");
    let capture = is_capture(op).then(|| Summary::of(outcomes));
    if op == OpName::CaptureAll {
        out.push_str("<CaptureAllResult");
        ns_decls(&mut out);
        out.push('>');
        for o in outcomes {
            let _ = write!(out, "<t:Response i:type=\"{}\">", result_type(op));
            write_outcome(&mut out, o, capture.as_ref());
            out.push_str("</t:Response>");
        }
        out.push_str("</CaptureAllResult>");
    } else {
        for o in outcomes {
            let _ = write!(out, "<{name}Result");
            ns_decls(&mut out);
            let _ = write!(out, " i:type=\"{}\">", result_type(op));
            write_outcome(&mut out, o, capture.as_ref());
            let _ = write!(out, "</{name}Result>");
        }
    }
    let _ = write!(out, "</{name}Response>");
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
        use std::fmt::Write;
        let amount = format_amount(self.cents);
        out.push_str("<b:TransactionSummaryData>");
        for totals in ["NetTotals", "SaleTotals"] {
            let _ = write!(
                out,
                "<b:{totals}><b:NetAmount>{amount}</b:NetAmount><b:Count>{}</b:Count></b:{totals}>",
                self.count
            );
        }
        out.push_str("</b:TransactionSummaryData>");
    }
}

/// The members of t:Response, then b:BankcardTransactionResponse's or b:BankcardCaptureResponse's,
/// in schema order.
pub(super) fn write_outcome(out: &mut String, o: &Outcome, capture: Option<&Summary>) {
    // Qualified names written out: no `format!` per element (issue 9).
    let el = soap::text_element;
    el(
        out,
        "t:Status",
        Some(if o.approved { "Successful" } else { "Failure" }),
    );
    el(out, "t:StatusCode", Some(&o.status_code));
    el(out, "t:StatusMessage", Some(&o.status_message));
    el(out, "t:TransactionId", Some(&o.transaction_id));
    el(
        out,
        "t:OriginatorTransactionId",
        o.originator_transaction_id.as_deref(),
    );
    el(out, "t:CaptureState", Some(o.capture_state));
    el(out, "t:TransactionState", Some(o.transaction_state));
    el(out, "t:IsAcknowledged", Some("false"));
    el(out, "t:Reference", o.reference.as_deref());
    if let Some(summary) = capture {
        el(out, "b:BatchId", o.batch_id.as_deref());
        summary.write(out);
        return;
    }
    let card = o.card.as_ref();
    el(out, "b:Amount", Some(&format_amount(o.amount_cents)));
    el(
        out,
        "b:CardType",
        Some(card.map_or("NotSet", |c| c.card_type)),
    );
    el(out, "b:ApprovalCode", o.approval_code.as_deref());
    el(out, "b:MaskedPAN", card.map(|c| c.masked_pan.as_str()));
}
