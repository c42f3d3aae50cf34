//! Who is calling a transaction operation, and the renewed-token state machine.
//!
//! `authenticate` checks a TerminalAccessToken: signature and validity window (no store access),
//! then one store read to see that it is the terminal's current token or its pending renewed
//! one. Using the pending token is the terminal's proof that it received it: only then does it
//! become current, the flag clear, and the old token stop working.
//!
//! `settle` runs once the request is known to be valid: it records the KSN counter (replay
//! protection), raises the RefreshToken flag once the token is `refresh_age` old, and, when the
//! transaction carries encrypted track data and the flag is up, returns the renewed token to
//! append. There is at most one pending token per terminal, and re-sending it mints the same
//! bytes, so concurrent transactions all hand out the same token and none can strand the
//! terminal. Transactions without track data and without a due refresh write nothing.
//!
//! Their store calls run through `store::blocking`, off the async worker.

use crate::app::App;
use crate::cws::error::{AuthFailure, Error};
use crate::dukpt::Ksn;
use crate::store::{self, from_ms, to_ms, PendingToken, RecentSale, TerminalId, TerminalRecord};
use crate::token::{self, Claims, TokenError, TokenId, VerifiedToken};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub terminal_id: TerminalId,
    pub token: VerifiedToken,
    /// The terminal record as read (after promoting a pending token, if that happened).
    pub record: TerminalRecord,
    /// Authenticating wrote to the store (a pending token became current).
    pub wrote: bool,
}

/// What `settle` did.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The renewed token to append to the response.
    pub renewed: Option<String>,
    /// The terminal record changed (counter, flag or pending token): flush before answering.
    pub wrote: bool,
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidToken(reason)
}

/// Check a session token and find its terminal.
pub fn authenticate(app: &App, session_token: Option<&str>) -> Result<Session, Error> {
    let raw = session_token.ok_or(invalid("missing"))?;
    let now = app.clock.now();
    let verified =
        token::verify(&app.keys().signing, raw, now, app.token().skew()).map_err(|e| match e {
            TokenError::Expired => Error::ExpiredToken,
            TokenError::Malformed => invalid("malformed"),
            TokenError::UnknownKey => invalid("unknown signing key"),
            TokenError::BadSignature => invalid("bad signature"),
            TokenError::NotYetValid => invalid("not yet valid"),
        })?;
    let c = verified.claims();
    let id = TerminalId::new(&c.service_key, &c.device_serial);
    let record = store::blocking(|| app.store.get(&id))?.ok_or(invalid("unknown terminal"))?;
    if record.revoked {
        return Err(invalid("terminal revoked"));
    }
    if record.device_id != c.device_id || record.merchant_profile_id != c.merchant_profile_id {
        return Err(invalid("terminal re-registered"));
    }
    if record.token_id == c.token_id {
        return Ok(Session {
            terminal_id: id,
            token: verified,
            record,
            wrote: false,
        });
    }
    match record.pending {
        Some(p) if p.token_id == c.token_id => {
            let record = store::blocking(|| promote(app, &id, c.token_id))?;
            tracing::info!(terminal = %id, token_id = %c.token_id, "renewed token received; now current");
            Ok(Session {
                terminal_id: id,
                token: verified,
                record,
                wrote: true,
            })
        }
        _ => Err(invalid("superseded")),
    }
}

/// Make the pending token `token_id` current: the terminal has shown it holds it.
fn promote(app: &App, id: &TerminalId, token_id: TokenId) -> Result<TerminalRecord, Error> {
    let refresh_age = app.token().refresh_age();
    store::update(&*app.store, id, |cur| {
        let cur = cur.ok_or(invalid("unknown terminal"))?;
        if cur.token_id == token_id {
            // Another request promoted it first.
            return Ok((None, cur.clone()));
        }
        let p = match cur.pending {
            Some(p) if p.token_id == token_id => p,
            _ => return Err(invalid("superseded")),
        };
        let mut r = cur.clone();
        r.token_id = p.token_id;
        r.issued_at_ms = p.issued_at_ms;
        r.expires_at_ms = p.expires_at_ms;
        r.refresh_due_at_ms = to_ms(from_ms(p.issued_at_ms) + refresh_age);
        r.refresh_flag = false;
        r.pending = None;
        Ok((Some(r.clone()), r))
    })
}

/// Encrypted track data a transaction carried, already decrypted successfully.
#[derive(Debug, Clone, Copy)]
pub struct TrackKsn(pub Ksn);

/// Before any track data is decrypted: it must come from the token's own device and carry a
/// counter above the last one seen (pure; `settle` checks again under the store's CAS).
pub fn check_track(app: &App, s: &Session, ksn: &Ksn) -> Result<(), Error> {
    let r = &s.record;
    if app.config.security.device_binding && !ksn.device_id_is(&s.token.claims().device_id) {
        return Err(invalid("track data from another device"));
    }
    if app.config.security.replay_protection
        && ksn.device_id_is(&r.device_id)
        && ksn.counter() <= r.last_counter
    {
        return Err(Error::Authentication(AuthFailure::Replay));
    }
    Ok(())
}

/// Record what this transaction tells about the terminal; return the renewed token to append,
/// if one is due and the transaction carried encrypted track data.
///
/// `sale`: a new sandbox transaction's idempotency key and id, recorded among the terminal's
/// recent sales in the same write (docs/DECISIONS.md, "Issue 9: recent sales"). A key already
/// recorded for another id is a request racing its twin: refused as a replay, as a second swipe
/// with a spent KSN is.
pub fn settle(
    app: &App,
    s: &Session,
    track: Option<TrackKsn>,
    sale: Option<RecentSale>,
) -> Result<Settled, Error> {
    let now = app.clock.now();
    let now_ms = to_ms(now);
    let binding = app.config.security.device_binding;
    let replay = app.config.security.replay_protection;
    let claims = s.token.claims();
    if let Some(TrackKsn(ksn)) = track {
        if binding && !ksn.device_id_is(&claims.device_id) {
            return Err(invalid("track data from another device"));
        }
    }
    let tcfg = app.token();
    let depth = app.config.processor.idempotency_depth;
    let due = |r: &TerminalRecord| r.refresh_flag || now_ms >= r.refresh_due_at_ms;
    // Fast path: nothing to record, nothing to hand out.
    if track.is_none() && sale.is_none() && (!due(&s.record) || s.record.refresh_flag) {
        return Ok(Settled::default());
    }
    // The record authenticate just read is the first guess; CAS catches any change since.
    let (pending, wrote) = store::blocking(|| {
        store::update_from(&*app.store, &s.terminal_id, Some(s.record.clone()), |cur| {
            let cur = cur.ok_or(invalid("unknown terminal"))?;
            if cur.token_id != claims.token_id {
                return Err(invalid("superseded"));
            }
            let mut r = cur.clone();
            if let Some(TrackKsn(ksn)) = track {
                if replay && ksn.device_id_is(&r.device_id) && ksn.counter() <= r.last_counter {
                    return Err(Error::Authentication(AuthFailure::Replay));
                }
                r.last_counter = ksn.counter();
            }
            if let Some(sale) = sale {
                match r.recent.iter().find(|e| e.key == sale.key) {
                    // Recorded by an earlier attempt whose sale was not stored: reuse it.
                    Some(e) if e.id == sale.id => {}
                    Some(_) => return Err(Error::Authentication(AuthFailure::Replay)),
                    None => {
                        r.recent.push(sale);
                        let over = r.recent.len().saturating_sub(depth);
                        r.recent.drain(..over);
                    }
                }
            }
            if due(&r) {
                r.refresh_flag = true;
                if track.is_some() && r.pending.is_none() {
                    r.pending = Some(PendingToken {
                        token_id: TokenId::random(),
                        issued_at_ms: now_ms,
                        expires_at_ms: to_ms(now + tcfg.lifetime()),
                    });
                }
            }
            let pending = if track.is_some() { r.pending } else { None };
            let write = (r != *cur).then_some(r);
            let wrote = write.is_some();
            Ok((write, (pending, wrote)))
        })
    })?;
    let renewed = pending.map(|p| {
        tracing::info!(terminal = %s.terminal_id, token_id = %p.token_id, "renewed token appended");
        issue_pending(app, s, &p)
    });
    Ok(Settled { renewed, wrote })
}

/// The renewed token pending for this terminal, byte for byte as `settle` hands it out (for a
/// retried transaction's answer).
pub fn pending_token(app: &App, s: &Session) -> Option<String> {
    s.record.pending.map(|p| issue_pending(app, s, &p))
}

fn issue_pending(app: &App, s: &Session, p: &PendingToken) -> String {
    let claims = s.token.claims();
    let renewed = Claims {
        token_id: p.token_id,
        issuer: app.token().issuer.clone(),
        issued_at: from_ms(p.issued_at_ms),
        not_on_or_after: from_ms(p.expires_at_ms),
        service_key: claims.service_key.clone(),
        merchant_profile_id: claims.merchant_profile_id.clone(),
        device_serial: claims.device_serial.clone(),
        device_id: claims.device_id.clone(),
    };
    token::issue(&app.keys().signing, &renewed)
}

/// Raise the RefreshToken flag of every terminal whose token is due, so the store shows it even
/// before the terminal's next transaction. Returns how many flags were raised. Blocking: run it
/// on a blocking thread (`snapgate serve` does).
pub fn sweep(app: &App) -> Result<usize, Error> {
    let now_ms = to_ms(app.clock.now());
    let mut raised = 0;
    let mut after: Option<TerminalId> = None;
    loop {
        let page = app.store.list(after.as_ref(), 1024)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (id, r) in &page {
            if r.refresh_flag || r.revoked || now_ms < r.refresh_due_at_ms {
                continue;
            }
            let flagged = store::update(&*app.store, id, |cur| {
                let Some(cur) = cur else {
                    return Ok::<_, Error>((None, false));
                };
                if cur.refresh_flag || now_ms < cur.refresh_due_at_ms {
                    return Ok((None, false));
                }
                let mut r = cur.clone();
                r.refresh_flag = true;
                Ok((Some(r), true))
            })?;
            raised += usize::from(flagged);
        }
    }
    if raised > 0 {
        app.store.flush()?;
        tracing::info!(raised, "RefreshToken flags raised");
    }
    Ok(raised)
}
