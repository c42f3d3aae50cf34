//! The sandbox processor: approves or declines by deterministic rules and keeps every
//! transaction (through `store::TransactionStore`, sled today) with a real state machine, so follow-up operations behave like a real
//! processor's.
//!
//! Decline triggers (by the cents of the amount): `.05` → 005 DECLINE, `.13` → 013 INVLD AMOUNT
//! (the platform's own sample decline), `.51` → 051 INSUFF FUNDS. Everything else is approved.
//!
//! States: Authorize → Authorized/ReadyForCapture; AuthorizeAndCapture → Captured/Captured.
//! Authorized → Captured (Capture, CaptureAll) / Undone (Undo) / Adjusted (Adjust, amount
//! changed). Captured → Undone (Undo, before any return) / Returned or PartiallyReturned
//! (ReturnById, up to the captured amount). Anything else is a CWSFault naming the state.

use super::Outcome;
use crate::cws::card::Card;
use crate::cws::error::Error;
use crate::store::{to_ms, StoreError, TerminalId, TransactionStore};
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
    fn transaction_state(self, adjusted: bool) -> &'static str {
        match self {
            State::Authorized if adjusted => "Adjusted",
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
            State::Declined => "CannotCapture",
            State::Undone => "Undone",
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

fn new_id() -> [u8; 16] {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Six digits derived from the transaction id: stable for a transaction, varied across them.
fn approval_code(id: &[u8; 16]) -> String {
    let n = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) % 1_000_000;
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
        let id = new_id();
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
        let id = new_id();
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
            let amount = c.amount_cents.unwrap_or(t.amount_cents) + c.tip_cents.unwrap_or(0);
            if amount <= 0 || c.amount_cents.is_some_and(|a| a > t.amount_cents) {
                return Err(Error::validation(
                    "Capture/Amount",
                    "The capture amount must be positive and not above the authorized amount",
                ));
            }
            t.state = State::Captured;
            t.amount_cents = amount;
            t.captured_cents = amount;
            Ok(())
        })
    }

    pub fn adjust(&self, terminal: &TerminalId, a: &Follow) -> Result<Outcome, Error> {
        let id = a.transaction_id.clone();
        let amount = a
            .amount_cents
            .ok_or_else(|| Error::validation("Adjust/Amount", "Adjust needs an Amount"))?;
        self.modify(terminal, &id, |t| {
            if !matches!(t.state, State::Authorized | State::Captured) {
                return Err(state_fault(&id, t, "The transaction cannot be adjusted"));
            }
            let total = amount + a.tip_cents.unwrap_or(0);
            if total <= 0 {
                return Err(Error::validation(
                    "Adjust/Amount",
                    "The adjusted amount must be positive",
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
        let new = new_id();
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
