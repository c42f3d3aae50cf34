//! Reading a TPS request: the new transaction (tender data, amounts) and the follow-ups'
//! amounts, with the schema's paths for error messages.

use crate::cws::error::Error;
use crate::cws::ops::OpName;
use crate::cws::processor::sandbox::Follow;
use crate::cws::processor::{amount_in_range, parse_amount, parse_signed_amount};
use crate::cws::soap::Element;
use crate::dukpt::Ksn;

pub(super) const T_PATH: &str = "CWS/v2.0/Transactions";
pub(super) const B_PATH: &str = "CWS/v2.0/Transactions/Bankcard";
pub(super) const BP_PATH: &str = "CWS/v2.0/Transactions/Bankcard/Pro";

pub(super) fn dup(path: &str) -> impl Fn(String) -> Error + '_ {
    move |name| {
        Error::validation(
            format!("{path}/{name}"),
            "The element appears more than once",
        )
    }
}

pub(super) fn text<'a>(e: &'a Element, path: &str, name: &str) -> Result<Option<&'a str>, Error> {
    e.child_text(name).map_err(dup(path))
}

pub(super) fn child<'a, 'x>(
    e: &'a Element<'x>,
    path: &str,
    name: &str,
) -> Result<Option<&'a Element<'x>>, Error> {
    Ok(e.child(name).map_err(dup(path))?.filter(|c| !c.nil))
}

pub(super) fn amount(e: &Element, path: &str, name: &str) -> Result<Option<i64>, Error> {
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
pub(super) struct SecureTrack {
    pub(super) ksn: Ksn,
    pub(super) data: String,
}

/// A new transaction read from the request.
pub(super) struct NewRequest {
    pub(super) amount_cents: i64,
    pub(super) reference: Option<String>,
    /// TransactionData/TransactionDateTime: with the amount, a keyed sale's idempotency key.
    pub(super) datetime: Option<String>,
    pub(super) secure: Option<SecureTrack>,
    pub(super) keyed_pan: Option<zeroize::Zeroizing<String>>,
}

pub(super) fn parse_new(op: &Element, name: &str) -> Result<NewRequest, Error> {
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
    let tpath = format!("{name}/transaction/TransactionData");
    let tdata = child(txn, "transaction", "TransactionData")?
        .ok_or_else(|| Error::validation(&tpath, "TransactionData is required"))?;
    let amount_cents = amount(tdata, &tpath, "Amount")?
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            Error::validation(format!("{tpath}/Amount"), "A positive Amount is required")
        })?;
    let tip = amount(tdata, &tpath, "TipAmount")?.unwrap_or(0);
    let total = amount_cents + tip;
    if !amount_in_range(total) {
        return Err(Error::validation(
            format!("{tpath}/TipAmount"),
            "Amount plus TipAmount is above 99999999.99",
        ));
    }
    let reference = text(tdata, &tpath, "Reference")?.map(str::to_owned);
    let datetime = text(tdata, &tpath, "TransactionDateTime")?
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned);

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
        amount_cents: total,
        reference,
        datetime,
        secure,
        keyed_pan,
    })
}

/// Capture's and ReturnById's `Amount` is optional: "capture a different amount" / "a partial
/// return". WCF proxies send an unset decimal member as `0`, so 0 means unset there (the
/// authorized amount, a full return); the same for a zero TipAmount.
pub(super) fn zero_is_unset(name: OpName) -> bool {
    matches!(
        name,
        OpName::Capture | OpName::CaptureAll | OpName::ReturnById
    )
}

pub(super) fn parse_follow_for(name: OpName, e: &Element, path: &str) -> Result<Follow, Error> {
    let mut f = parse_follow(e, path, name == OpName::Adjust)?;
    if zero_is_unset(name) {
        f.amount_cents = f.amount_cents.filter(|a| *a != 0);
        f.tip_cents = f.tip_cents.filter(|a| *a != 0);
    }
    Ok(f)
}

/// Adjust's `Amount` is a signed change; every other amount is unsigned.
pub(super) fn parse_follow(e: &Element, path: &str, signed: bool) -> Result<Follow, Error> {
    let change = if signed {
        match text(e, path, "Amount")? {
            None => None,
            Some(s) => Some(parse_signed_amount(s).ok_or_else(|| {
                Error::validation(
                    format!("{path}/Amount"),
                    "The change must be a decimal with at most two places, from -99999999.99 \
                     to 99999999.99",
                )
            })?),
        }
    } else {
        amount(e, path, "Amount")?
    };
    let transaction_id = text(e, path, "TransactionId")?
        .ok_or_else(|| {
            Error::validation(format!("{path}/TransactionId"), "TransactionId is required")
        })?
        .to_owned();
    Ok(Follow {
        transaction_id,
        amount_cents: change,
        tip_cents: amount(e, path, "TipAmount")?,
    })
}
