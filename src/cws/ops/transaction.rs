//! The TPS operations: Authorize, AuthorizeAndCapture, ReturnUnlinked (a new transaction with
//! tender data), Capture, Adjust, Undo, ReturnById (a follow-up by TransactionId) and CaptureAll.
//! They share one shape, so they share this file: authenticate the `sessionToken`, read the
//! request, read the card from encrypted track data, settle the refresh flow, run the
//! processor, and append a renewed TerminalAccessToken as a SOAP header when one is due.

use super::{soap_action, Context, Reply, SIS_PATH, TPS_PATH};
use crate::app::App;
use crate::cws::card::{self, Card, CardError};
use crate::cws::error::{Error, Service};
use crate::cws::processor::sandbox::{Follow, NewTxn};
use crate::cws::processor::{format_amount, parse_amount, Outcome};
use crate::cws::session::{self, TrackKsn};
use crate::cws::soap::{self, Base, Element, XSI_NS};
use crate::dukpt::Ksn;

/// The TPS operations snapgate answers.
pub const OPERATIONS: &[&str] = &[
    "Authorize",
    "AuthorizeAndCapture",
    "ReturnUnlinked",
    "Capture",
    "Adjust",
    "Undo",
    "ReturnById",
    "CaptureAll",
];

const T_PATH: &str = "CWS/v2.0/Transactions";
const B_PATH: &str = "CWS/v2.0/Transactions/Bankcard";
const BP_PATH: &str = "CWS/v2.0/Transactions/Bankcard/Pro";

fn dup(path: &str) -> impl Fn(String) -> Error + '_ {
    move |name| {
        Error::validation(
            format!("{path}/{name}"),
            "The element appears more than once",
        )
    }
}

fn text<'a>(e: &'a Element, path: &str, name: &str) -> Result<Option<&'a str>, Error> {
    e.child_text(name).map_err(dup(path))
}

fn child<'a>(e: &'a Element, path: &str, name: &str) -> Result<Option<&'a Element>, Error> {
    Ok(e.child(name).map_err(dup(path))?.filter(|c| !c.nil))
}

fn amount(e: &Element, path: &str, name: &str) -> Result<Option<i64>, Error> {
    match text(e, path, name)? {
        None => Ok(None),
        Some(s) => parse_amount(s).map(Some).ok_or_else(|| {
            Error::validation(
                format!("{path}/{name}"),
                "The amount must be a decimal with at most two places, from 0 to 99999999.99",
            )
        }),
    }
}

/// Encrypted track data from TenderData: (KSN, hex ciphertext).
struct SecureTrack {
    ksn: Ksn,
    data: String,
}

/// A new transaction read from the request.
struct NewRequest {
    amount_cents: i64,
    reference: Option<String>,
    secure: Option<SecureTrack>,
    keyed_pan: Option<zeroize::Zeroizing<String>>,
}

fn parse_new(op: &Element, merchant_profile_id: &str) -> Result<NewRequest, Error> {
    let name = op.name.as_str();
    let txn = child(op, name, "transaction")?.ok_or_else(|| {
        Error::validation(format!("{name}/transaction"), "transaction is required")
    })?;
    if let Some(t) = txn.type_name() {
        if t != "BankcardTransaction" && t != "BankcardTransactionPro" {
            return Err(Error::validation(
                format!("{name}/transaction"),
                format!("Transaction type {t} is not supported; use b:BankcardTransaction"),
            ));
        }
    }
    if let Some(mp) = text(op, name, "merchantProfileId")? {
        if mp != merchant_profile_id {
            return Err(Error::validation(
                format!("{name}/merchantProfileId"),
                "merchantProfileId is not the terminal's merchant profile",
            ));
        }
    }
    let tpath = format!("{name}/transaction/TransactionData");
    let tdata = child(txn, "transaction", "TransactionData")?
        .ok_or_else(|| Error::validation(&tpath, "TransactionData is required"))?;
    let amount_cents = amount(tdata, &tpath, "Amount")?
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            Error::validation(format!("{tpath}/Amount"), "A positive Amount is required")
        })?;
    let tip = amount(tdata, &tpath, "TipAmount")?.unwrap_or(0);
    let reference = text(tdata, &tpath, "Reference")?.map(str::to_owned);

    let tender_path = format!("{name}/transaction/TenderData");
    let tender = child(txn, "transaction", "TenderData")?;
    let (mut secure, mut keyed_pan) = (None, None);
    if let Some(td) = tender {
        let data = text(td, &tender_path, "SecurePaymentAccountData")?;
        let kid = text(td, &tender_path, "EncryptionKeyId")?;
        match (data, kid) {
            (Some(d), Some(k)) => {
                let ksn = Ksn::parse_hex(k).map_err(|_| {
                    Error::validation(
                        format!("{tender_path}/EncryptionKeyId"),
                        "EncryptionKeyId must be a KSN of 20 or 24 hexadecimal digits",
                    )
                })?;
                secure = Some(SecureTrack {
                    ksn,
                    data: d.to_owned(),
                });
            }
            (Some(_), None) => {
                return Err(Error::validation(
                    format!("{tender_path}/EncryptionKeyId"),
                    "EncryptionKeyId is required with SecurePaymentAccountData",
                ))
            }
            _ => {}
        }
        if let Some(cd) = child(td, &tender_path, "CardData")? {
            keyed_pan = text(cd, "CardData", "PAN")?.map(|p| zeroize::Zeroizing::new(p.to_owned()));
        }
    }
    Ok(NewRequest {
        amount_cents: amount_cents + tip,
        reference,
        secure,
        keyed_pan,
    })
}

fn parse_follow(e: &Element, path: &str) -> Result<Follow, Error> {
    let transaction_id = text(e, path, "TransactionId")?
        .ok_or_else(|| {
            Error::validation(format!("{path}/TransactionId"), "TransactionId is required")
        })?
        .to_owned();
    Ok(Follow {
        transaction_id,
        amount_cents: amount(e, path, "Amount")?,
        tip_cents: amount(e, path, "TipAmount")?,
    })
}

fn card_error(e: CardError) -> Error {
    let location = match e {
        CardError::BadKsn | CardError::UnknownKeySet => "TenderData/EncryptionKeyId",
        _ => "TenderData/SecurePaymentAccountData",
    };
    Error::validation(location, e.to_string())
}

/// Run a TPS operation.
pub async fn apply(app: &App, name: &str, op: &Element, ctx: &Context) -> Result<Reply, Error> {
    let token = text(op, name, "sessionToken")?;
    let session = session::authenticate(app, token)?;
    let terminal = session.terminal_id;
    let now = app.clock.now();
    let forward = app.forward.as_ref();

    // Read the request fully before anything is recorded.
    let new = match name {
        "Authorize" | "AuthorizeAndCapture" | "ReturnUnlinked" => {
            Some(parse_new(op, &session.record.merchant_profile_id)?)
        }
        _ => None,
    };
    let follows: Vec<Follow> = match name {
        "Capture" | "Adjust" | "Undo" | "ReturnById" => {
            let d = child(op, name, "differenceData")?.ok_or_else(|| {
                Error::validation(
                    format!("{name}/differenceData"),
                    "differenceData is required",
                )
            })?;
            vec![parse_follow(d, &format!("{name}/differenceData"))?]
        }
        "CaptureAll" => match child(op, name, "differenceData")? {
            Some(arr) => arr
                .children
                .iter()
                .filter(|c| !c.nil)
                .map(|c| parse_follow(c, "CaptureAll/differenceData/Capture"))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        },
        _ => Vec::new(),
    };

    // The card: decrypted from track data (sandbox), or keyed.
    let mut card: Option<Card> = None;
    let mut track = None;
    if let Some(n) = &new {
        if let Some(s) = &n.secure {
            track = Some(TrackKsn(s.ksn));
            if forward.is_none() {
                card = Some(
                    card::from_secure_track(&app.keys(), &s.ksn, &s.data).map_err(card_error)?,
                );
            }
        } else if let Some(pan) = &n.keyed_pan {
            card = Some(
                card::from_keyed_pan(pan)
                    .map_err(|e| Error::validation("TenderData/CardData/PAN", e.to_string()))?,
            );
        } else if forward.is_none() {
            return Err(Error::validation(
                format!("{name}/transaction/TenderData"),
                "TenderData needs SecurePaymentAccountData with EncryptionKeyId, or CardData/PAN",
            ));
        }
    }

    let settled = session::settle(app, &session, track)?;
    let header = settled.renewed.map(|t| {
        format!(
            "<TerminalAccessToken xmlns=\"{}{SIS_PATH}\">{t}</TerminalAccessToken>",
            ctx.base.uri()
        )
    });

    if let Some(fwd) = forward {
        // What authenticate and settle recorded (counter, flag, pending or promoted token) is
        // durable before the answer, as the sandbox path's single flush makes it there.
        if session.wrote || settled.wrote {
            app.commit.durable().await?;
        }
        let body = relay(app, fwd, name, op, ctx.base).await?;
        return Ok(Reply { header, body });
    }

    let sandbox = &app.sandbox;
    let outcomes: Vec<Outcome> = match (name, new) {
        ("Authorize", Some(n)) | ("AuthorizeAndCapture", Some(n)) | ("ReturnUnlinked", Some(n)) => {
            let req = NewTxn {
                amount_cents: n.amount_cents,
                card: card
                    .ok_or_else(|| Error::Internal("no card read for a new transaction".into()))?,
                reference: n.reference,
            };
            vec![match name {
                "Authorize" => sandbox.authorize(&terminal, &req, false, now)?,
                "AuthorizeAndCapture" => sandbox.authorize(&terminal, &req, true, now)?,
                _ => sandbox.return_unlinked(&terminal, &req, now)?,
            }]
        }
        ("Capture", _) => vec![sandbox.capture(&terminal, &follows[0])?],
        ("Adjust", _) => vec![sandbox.adjust(&terminal, &follows[0])?],
        ("Undo", _) => vec![sandbox.undo(&terminal, &follows[0])?],
        ("ReturnById", _) => vec![sandbox.return_by_id(&terminal, &follows[0], now)?],
        ("CaptureAll", _) => sandbox.capture_all(&terminal, &follows)?,
        _ => return Err(Error::UnknownOperation(name.to_owned())),
    };
    app.commit.durable().await?;
    Ok(Reply {
        header,
        body: respond(ctx.base, name, &outcomes),
    })
}

/// Send the request upstream (with the upstream's own session token, if configured) and return
/// the upstream's response element, re-written.
async fn relay(
    app: &App,
    fwd: &crate::cws::processor::forward::Forward,
    name: &str,
    op: &Element,
    base: Base,
) -> Result<String, Error> {
    let mut op = op.clone();
    if let Some(tok) = &app.config.processor.upstream_session_token {
        if let Some(st) = op.children.iter_mut().find(|c| c.name == "sessionToken") {
            st.text = tok.clone();
        }
    }
    let mut body = String::with_capacity(2048);
    soap::write_element(&mut body, &op, None);
    let up = fwd
        .send(
            &soap_action(Service::Tps, base, name),
            soap::envelope(None, &body),
        )
        .await?;
    let text = std::str::from_utf8(&up.body)
        .map_err(|_| Error::Upstream("response is not UTF-8".into()))?;
    let env = soap::parse_envelope(up.body.as_ref(), &app.xml_limits)
        .map_err(|e| Error::Upstream(format!("unreadable response: {e}")))?;
    if env.operation.is(soap::SOAP_ENV_NS, "Fault") {
        return Err(Error::UpstreamFault(text.to_owned()));
    }
    if up.status != 200 {
        return Err(Error::Upstream(format!("HTTP {}", up.status)));
    }
    let mut out = String::with_capacity(up.body.len());
    soap::write_element(&mut out, &env.operation, None);
    Ok(out)
}

fn result_type(name: &str) -> &'static str {
    match name {
        "Capture" | "CaptureAll" => "b:BankcardCaptureResponse",
        _ => "bp:BankcardTransactionResponsePro",
    }
}

/// The response body: `<OpResponse><OpResult i:type=...>` (CaptureAll: an array of them).
pub fn respond(base: Base, name: &str, outcomes: &[Outcome]) -> String {
    let b = base.uri();
    let mut out = String::with_capacity(1536);
    out.push_str(&format!("<{name}Response xmlns=\"{b}{TPS_PATH}\">"));
    let ns_decls = format!(
        " xmlns:i=\"{XSI_NS}\" xmlns:t=\"{b}{T_PATH}\" xmlns:b=\"{b}{B_PATH}\" xmlns:bp=\"{b}{BP_PATH}\""
    );
    let capture = matches!(name, "Capture" | "CaptureAll");
    if name == "CaptureAll" {
        out.push_str(&format!("<CaptureAllResult{ns_decls}>"));
        for o in outcomes {
            out.push_str(&format!("<t:Response i:type=\"{}\">", result_type(name)));
            write_outcome(&mut out, o, capture);
            out.push_str("</t:Response>");
        }
        out.push_str("</CaptureAllResult>");
    } else {
        for o in outcomes {
            out.push_str(&format!(
                "<{name}Result{ns_decls} i:type=\"{}\">",
                result_type(name)
            ));
            write_outcome(&mut out, o, capture);
            out.push_str(&format!("</{name}Result>"));
        }
    }
    out.push_str(&format!("</{name}Response>"));
    out
}

/// The members of t:Response, then b:BankcardTransactionResponse's or b:BankcardCaptureResponse's,
/// in schema order.
fn write_outcome(out: &mut String, o: &Outcome, capture: bool) {
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
    if capture {
        b(out, "BatchId", o.batch_id.as_deref());
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
