//! Transaction processors: the embedded `sandbox` (a real state machine on sled, deterministic
//! outcomes) and `forward` (relay to an upstream CWS endpoint). The operation layer hands them
//! an authenticated, parsed request; they answer with transaction outcomes or typed errors.

pub mod forward;
pub mod retention;
pub mod sandbox;

use crate::cws::card::Card;

/// What a transaction looks like to the terminal afterwards: one result of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub approved: bool,
    pub status_code: String,
    pub status_message: String,
    pub transaction_id: String,
    pub capture_state: &'static str,
    pub transaction_state: &'static str,
    pub amount_cents: i64,
    pub approval_code: Option<String>,
    pub card: Option<Card>,
    pub reference: Option<String>,
    pub batch_id: Option<String>,
    pub originator_transaction_id: Option<String>,
}

/// Dollars and cents as CWS writes them: `10.00`.
pub fn format_amount(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// The largest amount (in cents) any operation may end with: 99,999,999.99.
pub const MAX_AMOUNT_CENTS: i64 = 9_999_999_999;

/// Whether a final amount (after tips and adjustments) is within 0 to `MAX_AMOUNT_CENTS`.
pub fn amount_in_range(cents: i64) -> bool {
    (0..=MAX_AMOUNT_CENTS).contains(&cents)
}

/// Parse a signed CWS decimal amount (Adjust's change): an optional `-`, then `parse_amount`.
pub fn parse_signed_amount(s: &str) -> Option<i64> {
    let s = s.trim();
    match s.strip_prefix('-') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            parse_amount(rest).map(|c| -c)
        }
        Some(_) => None,
        None => parse_amount(s),
    }
}

/// Parse a CWS decimal amount into cents: up to 2 decimals, 0 to 99,999,999.99.
pub fn parse_amount(s: &str) -> Option<i64> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty()
        || whole.len() > 8
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let w: i64 = whole.parse().ok()?;
    let f: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    Some(w * 100 + f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_format_in_cents() {
        assert_eq!(parse_amount("10.00"), Some(1000));
        assert_eq!(parse_amount("10.5"), Some(1050));
        assert_eq!(parse_amount(" 7 "), Some(700));
        assert_eq!(parse_amount("0.13"), Some(13));
        for bad in ["", "-1.00", "1.001", "1e3", "abc", ".5", "123456789.00"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
        assert_eq!(format_amount(1000), "10.00");
        assert_eq!(format_amount(5), "0.05");
        assert_eq!(parse_signed_amount("-3.50"), Some(-350));
        assert_eq!(parse_signed_amount("3.50"), Some(350));
        for bad in ["--1", "- 1", "+1", "-"] {
            assert_eq!(parse_signed_amount(bad), None, "{bad}");
        }
        assert!(amount_in_range(0) && amount_in_range(MAX_AMOUNT_CENTS));
        assert!(!amount_in_range(-1) && !amount_in_range(MAX_AMOUNT_CENTS + 1));
    }
}
