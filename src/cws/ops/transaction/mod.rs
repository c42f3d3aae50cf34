//! What the TPS operations share. Authorize, AuthorizeAndCapture and ReturnUnlinked read a
//! `NewTransaction` (tender data, amount); Capture, Adjust, Undo and ReturnById a `FollowUp` of
//! one `Follow`, CaptureAll a `FollowUp` of many. Each operation's own file picks its reader and
//! its processor step; `run` does the rest in one order for all: authenticate the
//! `sessionToken`, read the card from encrypted track data, settle the refresh flow, run the
//! processor (or relay upstream), make it durable, and append a renewed TerminalAccessToken as
//! a SOAP header when one is due. On the sandbox path every store read and write of a request
//! is one trip off the async worker (`store::blocking`); forward mode's one trip settles, and
//! the relay follows it.

use super::{soap_action, CommitPoint, Context, OpName, Reply, SIS_PATH};
use crate::app::App;
use crate::cws::card::{self, Card, CardError};
use crate::cws::error::{Error, Service};
use crate::cws::limiter::Subject;
use crate::cws::processor::forward::Forward;
use crate::cws::processor::sandbox::{self, Follow, NewTxn, Sandbox, State, Txn};
use crate::cws::processor::Outcome;
use crate::cws::session::{self, Session, Settled, TrackKsn};
use crate::cws::soap::{self, Base, Element};
use crate::store::{self, RecentSale, TerminalId};
use chrono::{DateTime, Utc};
use std::sync::Arc;

mod request;
mod response;

use request::*;
pub use response::respond;

/// Read the card of a new transaction, so that nothing about card data leaks: a terminal that
/// keeps sending bad card data is locked out; track data is decrypted only after its device and
/// counter check out; every failure to read is one generic fault. Each refusal is counted by
/// reason in the metrics and logged without the data.
fn read_card(
    app: &App,
    session: &Session,
    secure: Option<&SecureTrack>,
    keyed_pan: Option<&str>,
) -> Result<Card, Error> {
    let now = app.clock.now();
    let subject = [Subject::Terminal(session.terminal_id.to_string())];
    let refuse = |reason: &'static str, e: Error| {
        app.metrics.card_data_failure(reason);
        if reason != "locked_out" {
            app.limiter.failed(&subject, now);
        }
        tracing::info!(terminal = %session.terminal_id, reason, "card data refused");
        e
    };
    if !app.limiter.allowed(&subject, now) {
        return Err(refuse("locked_out", Error::CardData("locked out")));
    }
    let read: Result<Card, CardError> = match (secure, keyed_pan) {
        (Some(s), _) => {
            if let Err(e) = session::check_track(app, session, &s.ksn) {
                let reason = match e {
                    Error::Authentication(_) => "replay",
                    _ => "foreign_device",
                };
                return Err(refuse(reason, e));
            }
            card::from_secure_track(&app.keys(), &s.ksn, &s.data)
        }
        (None, Some(pan)) => card::from_keyed_pan(pan),
        (None, None) => return Err(Error::Internal("no card data to read".into())),
    };
    read.map_err(|e| {
        tracing::debug!(error = %e, "card data did not read");
        refuse("unreadable", Error::CardData("unreadable"))
    })
}

/// A new transaction's request: Authorize, AuthorizeAndCapture, ReturnUnlinked.
///
/// The body is read at parse time but its validation error is raised only after the session
/// token authenticates: a caller without a valid token learns nothing about the body (and the
/// token faults come first, as on the platform).
pub struct NewTransaction<'a> {
    name: OpName,
    element: &'a Element<'a>,
    caller: Caller,
    request: Result<NewRequest, Error>,
}

/// Who a TPS request says it is: owned, so the sandbox path's store trip can take it along.
struct Caller {
    session_token: Option<String>,
    /// Only new transactions name one.
    merchant_profile_id: Option<String>,
    application_profile_id: Option<String>,
}

impl<'a> NewTransaction<'a> {
    pub fn parse(name: OpName, op: &'a Element<'a>) -> Result<Self, Error> {
        let path = name.as_str();
        Ok(NewTransaction {
            name,
            element: op,
            caller: Caller {
                session_token: text(op, path, "sessionToken")?.map(str::to_owned),
                merchant_profile_id: text(op, path, "merchantProfileId")?.map(str::to_owned),
                application_profile_id: text(op, path, "applicationProfileId")?.map(str::to_owned),
            },
            request: parse_new(op, path),
        })
    }
}

/// A follow-up's request: one `Follow` (Capture, Adjust, Undo, ReturnById) or many (CaptureAll).
/// Like `NewTransaction`, its validation error waits for the token to authenticate.
pub struct FollowUp<'a, F> {
    name: OpName,
    element: &'a Element<'a>,
    caller: Caller,
    follow: Result<F, Error>,
}

/// A follow-up's caller: its token and application profile (no merchant profile).
fn follow_caller(op: &Element, path: &str) -> Result<Caller, Error> {
    Ok(Caller {
        session_token: text(op, path, "sessionToken")?.map(str::to_owned),
        merchant_profile_id: None,
        application_profile_id: text(op, path, "applicationProfileId")?.map(str::to_owned),
    })
}

impl<'a> FollowUp<'a, Follow> {
    /// The single `differenceData` of Capture, Adjust, Undo and ReturnById.
    pub fn parse_one(name: OpName, op: &'a Element<'a>) -> Result<Self, Error> {
        let path = name.as_str();
        let follow = child(op, path, "differenceData").and_then(|d| {
            let d = d.ok_or_else(|| {
                Error::validation(
                    format!("{path}/differenceData"),
                    "differenceData is required",
                )
            })?;
            parse_follow_for(name, d, &format!("{path}/differenceData"))
        });
        Ok(FollowUp {
            name,
            element: op,
            caller: follow_caller(op, path)?,
            follow,
        })
    }
}

impl<'a> FollowUp<'a, Vec<Follow>> {
    /// CaptureAll's array of `Capture` entries (none: capture everything authorized).
    pub fn parse_all(name: OpName, op: &'a Element<'a>) -> Result<Self, Error> {
        let path = name.as_str();
        let follow = child(op, path, "differenceData").and_then(|arr| match arr {
            Some(arr) => arr
                .children
                .iter()
                .filter(|c| !c.nil)
                .map(|c| parse_follow_for(name, c, &format!("{path}/differenceData/Capture")))
                .collect::<Result<_, _>>(),
            None => Ok(Vec::new()),
        });
        Ok(FollowUp {
            name,
            element: op,
            caller: follow_caller(op, path)?,
            follow,
        })
    }
}

/// `applicationProfileId`, when sent, must name an application profile saved with
/// SaveApplicationData (sandbox mode: in forward mode the upstream owns them).
fn check_application(app: &App, name: OpName, id: Option<&str>) -> Result<(), Error> {
    match id {
        Some(id) if app.forward.is_none() && !app.profiles.has_application(id)? => {
            Err(Error::validation(
                format!("{}/applicationProfileId", name.as_str()),
                "applicationProfileId names no application profile (SaveApplicationData)",
            ))
        }
        _ => Ok(()),
    }
}

/// Run a new transaction: `step` is the operation's processor call.
///
/// On the sandbox path everything up to the stored sale (reads, the idempotency look-up, the
/// card, settle, process) is one trip to a store thread (`store::offload`), which owns what it
/// needs. Forward mode's trip reads and settles, and the relay follows it (`relay_new`).
pub async fn run_new(
    app: &Arc<App>,
    ctx: &Context,
    t: NewTransaction<'_>,
    step: impl FnOnce(&Sandbox, &TerminalId, &NewTxn, DateTime<Utc>) -> Result<Outcome, Error>
        + Send
        + 'static,
) -> Result<Reply, Error> {
    let NewTransaction {
        name,
        element,
        caller,
        request,
    } = t;
    if app.forward.is_some() {
        return relay_new(app, ctx, name, element, move |app: &App| {
            let session = read_caller(app, name, &caller)?;
            let n = request?;
            let track = n.secure.as_ref().map(|s| TrackKsn(s.ksn));
            match &n.secure {
                // Not decrypted here, but its device and counter are checked just the same.
                Some(s) => session::check_track(app, &session, &s.ksn)?,
                None => {
                    if let Some(pan) = &n.keyed_pan {
                        read_card(app, &session, None, Some(pan))?;
                    }
                }
            }
            Ok((session, track))
        })
        .await;
    }
    let (app2, commit) = (app.clone(), ctx.commit.clone());
    // The trip queues the group commit itself, so this task wakes once, after the flush.
    let (done, flushed) = store::offload_durable(&app.commit, move || {
        let done = new_trip(&app2, &commit, name, &caller, request, step).and_then(|d| {
            if let Done::Retry(_) = d {
                // The first answer may not be durable yet (it may have timed out waiting for
                // that): flushed again, unless the handler timeout answered this request.
                commit.mark()?;
            }
            Ok(d)
        });
        let wrote = done.is_ok();
        (done, wrote)
    })
    .await;
    answer(app, ctx, name, done?, flushed)
}

/// The sandbox path's store trip for a new transaction (see `run_new`).
fn new_trip(
    app: &App,
    commit: &CommitPoint,
    name: OpName,
    caller: &Caller,
    request: Result<NewRequest, Error>,
    step: impl FnOnce(&Sandbox, &TerminalId, &NewTxn, DateTime<Utc>) -> Result<Outcome, Error>,
) -> Result<Done, Error> {
    let session = read_caller(app, name, caller)?;
    let n = request?;
    // The key finds the id among the terminal's recent sales (its record, read already), and
    // the sale is stored under a time-ordered id: a new sale lands at the tail of the
    // transactions, whatever their number (docs/DECISIONS.md, "Issue 9: recent sales").
    let key = idempotency_key(&session.terminal_id, &n);
    let slot = key.and_then(|k| {
        let mut recent = session.record.recent.iter().rev();
        recent.find(|e| e.key == k).map(|e| e.id)
    });
    let mut stored = match &slot {
        Some(id) => app.sandbox.stored(&session.terminal_id, id)?,
        None => None,
    };
    // A retry of a swipe carries its spent KSN counter: find its stored answer before the
    // counter check would call it a replay.
    let mut found = None;
    if let (Some(_), Some(_)) = (key, &n.secure) {
        match retried(app, name, &session, &n, None, stored.take()) {
            Retry::Answer(o) => {
                return Ok(Done::Retry(Box::new((session, n.secure.is_some(), *o))))
            }
            other => found = Some(other),
        }
    }
    // The card: decrypted from track data, or keyed.
    let card =
        match (&n.secure, &n.keyed_pan) {
            (Some(s), _) => read_card(app, &session, Some(s), None)?,
            (None, Some(pan)) => read_card(app, &session, None, Some(pan))?,
            (None, None) => return Err(Error::validation(
                format!("{}/transaction/TenderData", name.as_str()),
                "TenderData needs SecurePaymentAccountData with EncryptionKeyId, or CardData/PAN",
            )),
        };
    let sale = match key {
        Some(key) => match found
            .unwrap_or_else(|| retried(app, name, &session, &n, Some(&card), stored.take()))
        {
            Retry::Answer(o) => {
                return Ok(Done::Retry(Box::new((session, n.secure.is_some(), *o))))
            }
            // The slot of an attempt whose sale was not stored is used again.
            Retry::Free => Some(RecentSale {
                key,
                id: slot.unwrap_or_else(|| sandbox::new_id(app.clock.now())),
            }),
            Retry::Taken => None,
        },
        None => None,
    };
    let track = n.secure.as_ref().map(|s| TrackKsn(s.ksn));
    let req = NewTxn {
        id: sale.map(|s| s.id),
        amount_cents: n.amount_cents,
        card,
        reference: n.reference,
    };
    let (settled, outcomes) =
        settle_and_process(app, commit, &session, track, sale, |sb, term, now| {
            Ok(vec![step(sb, term, &req, now)?])
        })?;
    Ok(Done::Processed(settled, outcomes))
}

/// Authenticate a TPS request's caller and check the profiles it names (a new transaction's
/// body error waits for this: see `NewTransaction`).
fn read_caller(app: &App, name: OpName, caller: &Caller) -> Result<Session, Error> {
    let session = session::authenticate(app, caller.session_token.as_deref())?;
    if let Some(mp) = &caller.merchant_profile_id {
        let declared = app
            .profiles
            .merchant(&session.record.service_key, mp)?
            .is_some_and(|p| p.active);
        if *mp != session.record.merchant_profile_id || !declared {
            return Err(Error::validation(
                format!("{}/merchantProfileId", name.as_str()),
                "merchantProfileId is not the terminal's declared, active merchant profile",
            ));
        }
    }
    check_application(app, name, caller.application_profile_id.as_deref())?;
    Ok(session)
}

/// What the sandbox path's store trip ended with.
enum Done {
    /// A retried request: its stored answer (the session, whether it carried track data).
    Retry(Box<(Session, bool, Outcome)>),
    /// Settled and processed.
    Processed(Settled, Vec<Outcome>),
}

/// Answer once what the trip wrote (or the retried answer) is durable: `flushed` is the group
/// commit the trip queued after its writes (`store::offload_durable`).
fn answer(
    app: &App,
    ctx: &Context,
    name: OpName,
    done: Done,
    flushed: store::Flushed,
) -> Result<Reply, Error> {
    flushed.map_err(outcome_unknown)?;
    match done {
        Done::Processed(settled, outcomes) => Ok(Reply {
            header: settled.renewed.map(|t| renewed_header(ctx, &t)),
            body: respond(ctx.base, name, &outcomes),
        }),
        Done::Retry(retry) => {
            let (session, swiped, outcome) = *retry;
            let header = if swiped {
                session::pending_token(app, &session).map(|t| renewed_header(ctx, &t))
            } else {
                None
            };
            tracing::info!(terminal = %session.terminal_id, transaction = %outcome.transaction_id, "retry answered from the stored sale");
            Ok(Reply {
                header,
                body: respond(ctx.base, name, &[outcome]),
            })
        }
    }
}

/// A new sale's idempotency key (docs/DECISIONS.md, "Issue 13"): a hash of the terminal and
/// the KSN of its track data, or for a keyed sale of the terminal, TransactionDateTime and
/// amount. None without a key.
fn idempotency_key(terminal: &TerminalId, n: &NewRequest) -> Option<[u8; 16]> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"snapgate/idempotency/v1\0");
    h.update(terminal.0);
    match (&n.secure, &n.datetime) {
        (Some(s), _) => {
            h.update(b"ksn\0");
            h.update(s.ksn.to_hex().as_bytes());
        }
        (None, Some(dt)) => {
            h.update(b"keyed\0");
            h.update(dt.as_bytes());
            h.update(b"\0");
            h.update(n.amount_cents.to_be_bytes());
        }
        (None, None) => return None,
    }
    let d = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&d[..16]);
    Some(key)
}

/// What the idempotency key found.
enum Retry {
    /// The same request was stored before: here is its answer.
    Answer(Box<Outcome>),
    /// Nothing stored under the key: store the sale there.
    Free,
    /// Another request holds the key (same KSN or time and amount, different sale): not a retry.
    Taken,
}

/// Whether `stored`, the sale under the request's idempotency key, is this very request again
/// (same operation, amount, reference and card).
fn retried(
    app: &App,
    name: OpName,
    session: &Session,
    n: &NewRequest,
    card: Option<&Card>,
    stored: Option<(Txn, Outcome)>,
) -> Retry {
    let Some((txn, outcome)) = stored else {
        return Retry::Free;
    };
    let read;
    let card = match (card, &n.secure) {
        (Some(c), _) => Some(c),
        (None, Some(s)) => {
            // Only the token's own device: its ciphertext decrypted under this KSN before.
            if !s.ksn.device_id_is(&session.token.claims().device_id) {
                return Retry::Taken;
            }
            read = card::from_secure_track(&app.keys(), &s.ksn, &s.data).ok();
            read.as_ref()
        }
        (None, None) => None,
    };
    let refund = txn.state == State::Refund && txn.original.is_none();
    let same = card.is_some_and(|c| c.masked_pan == txn.masked_pan)
        && txn.amount_cents == n.amount_cents
        && txn.reference == n.reference
        && refund == (name == OpName::ReturnUnlinked);
    if same {
        Retry::Answer(Box::new(outcome))
    } else {
        Retry::Taken
    }
}

fn outcome_unknown(e: std::sync::Arc<crate::store::StoreError>) -> Error {
    Error::OutcomeUnknown(format!("flush failed: {e}"))
}

fn renewed_header(ctx: &Context, token: &str) -> String {
    format!(
        "<TerminalAccessToken xmlns=\"{}{SIS_PATH}\">{token}</TerminalAccessToken>",
        ctx.base.uri()
    )
}

/// Run a follow-up: `step` is the operation's processor call. On the sandbox path, one trip
/// to a store thread as for `run_new`.
pub async fn run_follow<F: Send + 'static>(
    app: &Arc<App>,
    ctx: &Context,
    f: FollowUp<'_, F>,
    step: impl FnOnce(&Sandbox, &TerminalId, &F, DateTime<Utc>) -> Result<Vec<Outcome>, Error>
        + Send
        + 'static,
) -> Result<Reply, Error> {
    let FollowUp {
        name,
        element,
        caller,
        follow,
    } = f;
    if app.forward.is_some() {
        return relay_new(app, ctx, name, element, move |app: &App| {
            let session = read_caller(app, name, &caller)?;
            follow?;
            Ok((session, None))
        })
        .await;
    }
    let (app2, commit) = (app.clone(), ctx.commit.clone());
    let (done, flushed) = store::offload_durable(&app.commit, move || {
        let done = (|| -> Result<_, Error> {
            let app = &*app2;
            let session = read_caller(app, name, &caller)?;
            let follow = follow?;
            let (settled, outcomes) =
                settle_and_process(app, &commit, &session, None, None, |sb, term, now| {
                    step(sb, term, &follow, now)
                })?;
            Ok(Done::Processed(settled, outcomes))
        })();
        let wrote = done.is_ok();
        (done, wrote)
    })
    .await;
    answer(app, ctx, name, done?, flushed)
}

/// The commit point, then settle the refresh flow and process: both are store writes, made
/// durable by the caller's one wait. Runs inside the request's store trip; refused (nothing
/// written) if the request was abandoned meanwhile.
fn settle_and_process(
    app: &App,
    commit: &CommitPoint,
    session: &Session,
    track: Option<TrackKsn>,
    sale: Option<RecentSale>,
    process: impl FnOnce(&Sandbox, &TerminalId, DateTime<Utc>) -> Result<Vec<Outcome>, Error>,
) -> Result<(Settled, Vec<Outcome>), Error> {
    let now = app.clock.now();
    // The commit point: from the first write on, the request is finished, not abandoned.
    commit.mark()?;
    let settled = session::settle(app, session, track, sale)?;
    Ok((settled, process(&app.sandbox, &session.terminal_id, now)?))
}

/// Forward mode: in one store trip, read the caller (`check`: authenticate, validate, the
/// card's device and counter) and settle the refresh flow; then relay upstream. One trip,
/// like the sandbox path's: the relay comes after both, so nothing needs the worker between
/// them (two trips cost a second hand-off to a store thread and back per sale).
async fn relay_new(
    app: &Arc<App>,
    ctx: &Context,
    name: OpName,
    element: &Element<'_>,
    check: impl FnOnce(&App) -> Result<(Session, Option<TrackKsn>), Error> + Send + 'static,
) -> Result<Reply, Error> {
    let fwd = app
        .forward
        .as_ref()
        .ok_or_else(|| Error::Internal("relay without an upstream".into()))?;
    let (a, commit) = (app.clone(), ctx.commit.clone());
    // What authenticate and settle recorded (counter, flag, pending or promoted token) is
    // durable before the relay, as the sandbox path's single flush makes it there; the trip
    // queues that flush itself (`store::offload_durable`). A request refused before settle
    // answers at once, as before: nothing it may have written is waited for.
    let (settled, flushed) = store::offload_durable(&app.commit, move || {
        let settled = check(&a).and_then(|(session, track)| {
            // The commit point: from the first write on, the request is finished, not
            // abandoned.
            commit.mark()?;
            let settled = session::settle(&a, &session, track, None)?;
            let wrote = settled.wrote || session.wrote;
            Ok((settled, wrote))
        });
        let wrote = matches!(&settled, Ok((_, true)));
        (settled.map(|(s, _)| s), wrote)
    })
    .await;
    let settled = settled?;
    flushed.map_err(outcome_unknown)?;
    let header = settled.renewed.map(|t| renewed_header(ctx, &t));
    let body = relay(app, fwd, name, element, ctx.base).await?;
    Ok(Reply { header, body })
}

/// Send the request upstream (with the upstream's own session token, if configured) and return
/// the upstream's response element, re-written.
async fn relay(
    app: &App,
    fwd: &Forward,
    name: OpName,
    op: &Element<'_>,
    base: Base,
) -> Result<String, Error> {
    // Never the terminal's own token: the upstream's (config requires one), or none at all.
    // Written in its place as the element is written, so the tree is not copied.
    let upstream = app.config.processor.upstream_session_token.as_deref();
    // Our copy of a keyed PAN is zeroized; the envelope handed to the client is not ours.
    let mut body = zeroize::Zeroizing::new(String::with_capacity(2048));
    soap::write_element_with(&mut body, op, None, |out, c| {
        if c.name != "sessionToken" {
            return soap::write_element(out, c, op.ns.as_deref());
        }
        if let Some(tok) = upstream {
            // Built from the child's name only: the terminal's token is not copied.
            let st = Element {
                ns: c.ns.clone(),
                name: c.name.clone(),
                xsi_type: None,
                nil: false,
                text: tok.into(),
                children: Vec::new(),
            };
            soap::write_element(out, &st, op.ns.as_deref());
        }
    });
    let up = fwd
        .send(
            &soap_action(Service::Tps, base, name.as_str()),
            soap::envelope(None, &body),
        )
        .await?;
    let text = std::str::from_utf8(&up.body)
        .map_err(|_| Error::Upstream("response is not UTF-8".into()))?;
    let env = soap::parse_envelope(up.body.as_ref(), &app.xml_limits)
        .map_err(|e| Error::Upstream(format!("unreadable response: {e}")))?;
    if env.operation.is(soap::SOAP_ENV_NS, "Fault") {
        // Bounded: the log line, not the upstream, decides how much is kept.
        let shown: String = text.chars().take(2048).collect();
        return Err(Error::UpstreamFault(shown));
    }
    if up.status != 200 {
        return Err(Error::Upstream(format!("HTTP {}", up.status)));
    }
    let mut out = String::with_capacity(up.body.len());
    soap::write_element(&mut out, &env.operation, None);
    Ok(out)
}
