//! The sandbox processor: approves or declines by deterministic rules and keeps every
//! transaction (through `store::TransactionStore`, sled today) with a real state machine, so follow-up operations behave like a real
//! processor's.
//!
//! Decline triggers (by the cents of the amount): `.05` → 005 DECLINE, `.13` → 013 INVLD AMOUNT
//! (the platform's own sample decline), `.51` → 051 INSUFF FUNDS. Everything else is approved.
//!
//! States: Authorize → Authorized/ReadyForCapture; AuthorizeAndCapture → Captured/Captured.
//! Authorized → Captured (Capture, CaptureAll) / Undone (Undo) / Adjusted (Adjust, amount
//! changed). Captured → Adjusted (Adjust; CaptureState stays Captured) / Undone (Undo, before
//! any return) / Returned or PartiallyReturned
//! (ReturnById, up to the captured amount). Anything else is a CWSFault naming the state.

use super::Outcome;
use crate::cws::card::Card;
use crate::cws::error::Error;
use crate::store::{to_ms, StoreError, TerminalId, TransactionStore, TxnId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Authorized,
    Captured,
    Declined,
    Undone,
    Returned,
    PartiallyReturned,
    /// A return transaction (ReturnById or ReturnUnlinked).
    Refund,
}

impl State {
    /// The platform's TransactionState. An adjusted authorization or sale answers `Adjusted`
    /// (its CaptureState still says whether it is captured) until its next change.
    fn transaction_state(self, adjusted: bool) -> &'static str {
        match self {
            State::Authorized | State::Captured if adjusted => "Adjusted",
            State::Authorized => "Authorized",
            State::Captured => "Captured",
            State::Declined => "Declined",
            State::Undone => "Undone",
            State::Returned | State::Refund => "Returned",
            State::PartiallyReturned => "PartiallyReturned",
        }
    }

    fn capture_state(self) -> &'static str {
        match self {
            State::Authorized => "ReadyForCapture",
            State::Captured | State::Returned | State::PartiallyReturned | State::Refund => {
                "Captured"
            }
            // The platform's CaptureState has no "Undone": CannotCapture is its value for "a
            // declined authorization or the subsequent undoing of a successful one".
            State::Declined | State::Undone => "CannotCapture",
        }
    }
}

/// One stored transaction. No clear PAN: only what `Card` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub terminal: [u8; 16],
    pub state: State,
    pub adjusted: bool,
    pub amount_cents: i64,
    pub captured_cents: i64,
    pub returned_cents: i64,
    pub masked_pan: String,
    pub card_type: String,
    pub expire: String,
    pub approval_code: Option<String>,
    pub status_code: String,
    pub status_message: String,
    pub reference: Option<String>,
    pub original: Option<[u8; 16]>,
    pub created_at_ms: i64,
}

/// A new transaction request, as the sandbox needs it.
#[derive(Debug, Clone)]
pub struct NewTxn {
    /// The id to store it under (`new_id`, recorded with the request's idempotency key among
    /// the terminal's recent sales), or None for a new one.
    pub id: Option<TxnId>,
    pub amount_cents: i64,
    pub card: Card,
    pub reference: Option<String>,
}

/// A follow-up on an earlier transaction.
#[derive(Debug, Clone)]
pub struct Follow {
    pub transaction_id: String,
    pub amount_cents: Option<i64>,
    pub tip_cents: Option<i64>,
}

#[derive(Clone)]
pub struct Sandbox {
    db: Arc<dyn TransactionStore>,
}

fn enc(t: &Txn) -> Vec<u8> {
    postcard::to_allocvec(t).expect("transactions serialize")
}

fn dec(b: &[u8]) -> Result<Txn, Error> {
    postcard::from_bytes(b).map_err(|e| Error::Store(StoreError::Corrupt(e)))
}

fn state_fault(id: &str, t: &Txn, message: &str) -> Error {
    Error::Transaction {
        message: message.to_owned(),
        transaction_id: Some(id.to_owned()),
        state: Some(t.state.transaction_state(t.adjusted).to_owned()),
    }
}

fn not_found(id: &str) -> Error {
    Error::Transaction {
        message: "The transaction was not found".into(),
        transaction_id: Some(id.to_owned()),
        state: None,
    }
}

/// A new transaction id: its creation time (Unix ms, 48 bits, big-endian) then 80 random bits.
/// Time first, so a new transaction lands at the tail of the tree, where sled's cache already
/// is, however many are stored (random ids touched a random, often uncached, leaf per sale),
/// and the retention sweep finds the old ones at the head, in id order.
pub fn new_id(now: chrono::DateTime<chrono::Utc>) -> [u8; 16] {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b[6..]);
    b[..6].copy_from_slice(&id_time(to_ms(now)));
    b
}

fn id_time(ms: i64) -> [u8; 6] {
    let t = u64::try_from(ms)
        .unwrap_or(0)
        .min((1 << 48) - 1)
        .to_be_bytes();
    [t[2], t[3], t[4], t[5], t[6], t[7]]
}

/// The lowest id a transaction created at `ms` can have.
pub fn id_floor(ms: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&id_time(ms));
    b
}

/// Six digits derived from the transaction id's random part: stable for a transaction,
/// varied across them.
fn approval_code(id: &[u8; 16]) -> String {
    let n = u32::from_be_bytes([id[12], id[13], id[14], id[15]]) % 1_000_000;
    format!("{n:06}")
}

fn decline(cents: i64) -> Option<(&'static str, &'static str)> {
    match cents % 100 {
        5 => Some(("005", "DECLINE")),
        13 => Some(("013", "INVLD AMOUNT")),
        51 => Some(("051", "INSUFF FUNDS")),
        _ => None,
    }
}

impl Sandbox {
    pub fn new(db: Arc<dyn TransactionStore>) -> Self {
        Sandbox { db }
    }

    fn outcome(id: &[u8; 16], t: &Txn) -> Outcome {
        Outcome {
            approved: t.state != State::Declined,
            status_code: t.status_code.clone(),
            status_message: t.status_message.clone(),
            transaction_id: hex::encode_upper(id),
            capture_state: t.state.capture_state(),
            transaction_state: t.state.transaction_state(t.adjusted),
            amount_cents: t.amount_cents,
            approval_code: t.approval_code.clone(),
            card: Some(Card {
                masked_pan: t.masked_pan.clone(),
                card_type: card_type_static(&t.card_type),
                expire: t.expire.clone(),
            }),
            reference: t.reference.clone(),
            batch_id: None,
            originator_transaction_id: t.original.map(hex::encode_upper),
        }
    }

    /// Store a new transaction. Only authorized (uncaptured) ones go into the per-terminal
    /// index: CaptureAll is its only reader, and a sale then costs one write, not two.
    fn insert(&self, terminal: &TerminalId, id: &[u8; 16], t: &Txn) -> Result<(), Error> {
        let index = t.state == State::Authorized;
        Ok(self.db.insert(terminal, id, enc(t), index)?)
    }

    /// Authorize (capture = false) or AuthorizeAndCapture (capture = true).
    pub fn authorize(
        &self,
        terminal: &TerminalId,
        req: &NewTxn,
        capture: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Outcome, Error> {
        let id = req.id.unwrap_or_else(|| new_id(now));
        let declined = decline(req.amount_cents);
        let state = match (declined, capture) {
            (Some(_), _) => State::Declined,
            (None, false) => State::Authorized,
            (None, true) => State::Captured,
        };
        let (code, msg) = declined.unwrap_or(("000", "AP"));
        let t = Txn {
            terminal: terminal.0,
            state,
            adjusted: false,
            amount_cents: req.amount_cents,
            captured_cents: if state == State::Captured {
                req.amount_cents
            } else {
                0
            },
            returned_cents: 0,
            masked_pan: req.card.masked_pan.clone(),
            card_type: req.card.card_type.to_owned(),
            expire: req.card.expire.clone(),
            approval_code: declined.is_none().then(|| approval_code(&id)),
            status_code: code.into(),
            status_message: msg.into(),
            reference: req.reference.clone(),
            original: None,
            created_at_ms: to_ms(now),
        };
        self.insert(terminal, &id, &t)?;
        Ok(Self::outcome(&id, &t))
    }

    /// ReturnUnlinked: a refund to a card with no earlier transaction.
    pub fn return_unlinked(
        &self,
        terminal: &TerminalId,
        req: &NewTxn,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Outcome, Error> {
        let id = req.id.unwrap_or_else(|| new_id(now));
        let t = Txn {
            terminal: terminal.0,
            state: State::Refund,
            adjusted: false,
            amount_cents: req.amount_cents,
            captured_cents: req.amount_cents,
            returned_cents: 0,
            masked_pan: req.card.masked_pan.clone(),
            card_type: req.card.card_type.to_owned(),
            expire: req.card.expire.clone(),
            approval_code: Some(approval_code(&id)),
            status_code: "000".into(),
            status_message: "AP".into(),
            reference: req.reference.clone(),
            original: None,
            created_at_ms: to_ms(now),
        };
        self.insert(terminal, &id, &t)?;
        Ok(Self::outcome(&id, &t))
    }

    fn parse_id(id: &str) -> Result<[u8; 16], Error> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(id.trim(), &mut b).map_err(|_| {
            Error::validation(
                "TransactionId",
                "TransactionId must be 32 hexadecimal digits",
            )
        })?;
        Ok(b)
    }

    /// Change one transaction of this terminal with `f`, atomically.
    fn modify(
        &self,
        terminal: &TerminalId,
        id_hex: &str,
        mut f: impl FnMut(&mut Txn) -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        let id = Self::parse_id(id_hex)?;
        loop {
            let cur = self.db.get(&id)?;
            let Some(cur) = cur else {
                return Err(not_found(id_hex));
            };
            let mut t = dec(&cur)?;
            if t.terminal != terminal.0 {
                // Another terminal's transaction is not this terminal's business.
                return Err(not_found(id_hex));
            }
            f(&mut t)?;
            if self.db.compare_and_swap(&id, &cur, enc(&t))? {
                if t.state != State::Authorized {
                    // Captured or undone: nothing left for CaptureAll to find.
                    self.db.unindex(terminal, &id)?;
                }
                return Ok(Self::outcome(&id, &t));
            }
        }
    }

    pub fn capture(&self, terminal: &TerminalId, c: &Follow) -> Result<Outcome, Error> {
        let id = c.transaction_id.clone();
        self.modify(terminal, &id, |t| {
            match t.state {
                State::Authorized => {}
                State::Captured | State::Returned | State::PartiallyReturned => {
                    return Err(state_fault(&id, t, "The transaction is already captured"))
                }
                State::Undone => return Err(state_fault(&id, t, "The transaction was undone")),
                _ => return Err(state_fault(&id, t, "The transaction cannot be captured")),
            }
            // The final amount, tip included, is what must stay within the authorization.
            let amount = c.amount_cents.unwrap_or(t.amount_cents) + c.tip_cents.unwrap_or(0);
            if amount <= 0 || amount > t.amount_cents {
                return Err(Error::validation(
                    "Capture/Amount",
                    "The capture amount with its tip must be positive and not above the \
                     authorized amount",
                ));
            }
            t.state = State::Captured;
            t.adjusted = false;
            t.amount_cents = amount;
            t.captured_cents = amount;
            Ok(())
        })
    }

    /// Adjust: `Amount` is the signed change to the current amount, `TipAmount` a tip added
    /// on top; the result must stay within 0 to the maximum amount.
    pub fn adjust(&self, terminal: &TerminalId, a: &Follow) -> Result<Outcome, Error> {
        let id = a.transaction_id.clone();
        if a.amount_cents.is_none() && a.tip_cents.is_none() {
            return Err(Error::validation(
                "Adjust/Amount",
                "Adjust needs an Amount (the change) or a TipAmount",
            ));
        }
        let change = a.amount_cents.unwrap_or(0) + a.tip_cents.unwrap_or(0);
        self.modify(terminal, &id, |t| {
            if !matches!(t.state, State::Authorized | State::Captured) {
                return Err(state_fault(&id, t, "The transaction cannot be adjusted"));
            }
            let total = t.amount_cents + change;
            if !super::amount_in_range(total) {
                return Err(Error::validation(
                    "Adjust/Amount",
                    format!(
                        "The adjusted amount must be from 0.00 to 99999999.99; the change \
                         gives {}",
                        super::format_amount(total)
                    ),
                ));
            }
            t.amount_cents = total;
            if t.state == State::Captured {
                t.captured_cents = total;
            }
            t.adjusted = true;
            Ok(())
        })
    }

    pub fn undo(&self, terminal: &TerminalId, u: &Follow) -> Result<Outcome, Error> {
        let id = u.transaction_id.clone();
        self.modify(terminal, &id, |t| match t.state {
            State::Authorized | State::Captured => {
                t.state = State::Undone;
                Ok(())
            }
            State::Undone => Err(state_fault(&id, t, "The transaction was already undone")),
            _ => Err(state_fault(&id, t, "The transaction cannot be undone")),
        })
    }

    /// ReturnById: refund part or all of a captured transaction, as a new transaction.
    pub fn return_by_id(
        &self,
        terminal: &TerminalId,
        r: &Follow,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Outcome, Error> {
        let orig_id = Self::parse_id(&r.transaction_id)?;
        let new = new_id(now);
        let id_hex = r.transaction_id.clone();
        // The check and both writes in one store transaction; `f` may run more than once.
        let mut res: Result<Txn, Error> = Err(not_found(&id_hex));
        let apply = |cur: Option<&[u8]>| -> Result<(Txn, Txn), Error> {
            let Some(cur) = cur else {
                return Err(not_found(&id_hex));
            };
            let mut t = dec(cur)?;
            if t.terminal != terminal.0 {
                return Err(not_found(&id_hex));
            }
            if !matches!(t.state, State::Captured | State::PartiallyReturned) {
                return Err(state_fault(
                    &id_hex,
                    &t,
                    "Only a captured transaction can be returned",
                ));
            }
            let remaining = t.captured_cents - t.returned_cents;
            let amount = r.amount_cents.unwrap_or(remaining);
            if amount <= 0 || amount > remaining {
                return Err(Error::validation(
                    "Return/Amount",
                    format!(
                        "The return amount must be positive and at most the {} still captured",
                        super::format_amount(remaining)
                    ),
                ));
            }
            t.returned_cents += amount;
            t.state = if t.returned_cents == t.captured_cents {
                State::Returned
            } else {
                State::PartiallyReturned
            };
            let refund = Txn {
                terminal: terminal.0,
                state: State::Refund,
                adjusted: false,
                amount_cents: amount,
                captured_cents: amount,
                returned_cents: 0,
                masked_pan: t.masked_pan.clone(),
                card_type: t.card_type.clone(),
                expire: t.expire.clone(),
                approval_code: Some(approval_code(&new)),
                status_code: "000".into(),
                status_message: "AP".into(),
                reference: t.reference.clone(),
                original: Some(orig_id),
                created_at_ms: to_ms(now),
            };
            Ok((t, refund))
        };
        self.db.transact(&orig_id, &mut |cur| match apply(cur) {
            Ok((t, refund)) => {
                let writes = vec![(orig_id, enc(&t)), (new, enc(&refund))];
                res = Ok(refund);
                Some(writes)
            }
            Err(e) => {
                res = Err(e);
                None
            }
        })?;
        let refund = res?;
        Ok(Self::outcome(&new, &refund))
    }

    /// CaptureAll: capture every authorized transaction of this terminal (the listed ones, if
    /// any are listed, with their amounts).
    pub fn capture_all(
        &self,
        terminal: &TerminalId,
        listed: &[Follow],
    ) -> Result<Vec<Outcome>, Error> {
        if !listed.is_empty() {
            return listed.iter().map(|c| self.capture(terminal, c)).collect();
        }
        let mut out = Vec::new();
        for id in self.db.indexed(terminal)? {
            let id_hex = hex::encode_upper(id);
            // The index may briefly lag a concurrent capture: check the transaction itself.
            let pending = match self.db.get(&id)? {
                Some(v) => dec(&v)?.state == State::Authorized,
                None => false,
            };
            if pending {
                match self.capture(
                    terminal,
                    &Follow {
                        transaction_id: id_hex,
                        amount_cents: None,
                        tip_cents: None,
                    },
                ) {
                    Ok(o) => out.push(o),
                    // Captured or undone by a concurrent request since the scan: skip it.
                    Err(Error::Transaction { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// This terminal's transaction stored under `id`, and its answer as it stands now.
    pub fn stored(
        &self,
        terminal: &TerminalId,
        id: &TxnId,
    ) -> Result<Option<(Txn, Outcome)>, Error> {
        match self.db.get(id)? {
            Some(v) => {
                let t = dec(&v)?;
                if t.terminal != terminal.0 {
                    return Ok(None);
                }
                let o = Self::outcome(id, &t);
                Ok(Some((t, o)))
            }
            None => Ok(None),
        }
    }

    /// One bounded step of the retention sweep: look at up to `limit` transactions with ids
    /// above `after`, and delete those whose record was created before `cutoff_ms`.
    /// Returns (deleted, the last id looked at: where the next step resumes; None at the end).
    pub fn prune_step(
        &self,
        cutoff_ms: i64,
        after: Option<&[u8; 16]>,
        limit: usize,
    ) -> Result<(usize, Option<[u8; 16]>), Error> {
        // New sales are stored under time-ordered ids, but those stored before the terminal's
        // recent sales existed have ids hashed from their idempotency key: the step walks the
        // whole tree in bounded pages and decides by each record's own creation time.
        let batch = self.db.range(after, &[0xff; 16], limit)?;
        let mut deleted = 0;
        for (id, bytes) in &batch {
            let Ok(t) = dec(bytes) else { continue };
            if t.created_at_ms >= cutoff_ms {
                continue;
            }
            if t.state == State::Authorized {
                self.db.unindex(&TerminalId(t.terminal), id)?;
            }
            self.db.remove(id)?;
            deleted += 1;
        }
        let next = (batch.len() == limit)
            .then(|| batch.last().map(|(id, _)| *id))
            .flatten();
        Ok((deleted, next))
    }

    /// A stored transaction, for tests and operators.
    pub fn get(&self, id_hex: &str) -> Result<Option<Txn>, Error> {
        let id = Self::parse_id(id_hex)?;
        match self.db.get(&id)? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }
}

fn card_type_static(s: &str) -> &'static str {
    [
        "Visa",
        "MasterCard",
        "AmericanExpress",
        "Discover",
        "DinersClub",
        "JCB",
    ]
    .into_iter()
    .find(|t| *t == s)
    .unwrap_or("NotSet")
}
