//! Card data from encrypted track 2: decrypt `SecurePaymentAccountData` with the terminal's
//! DUKPT key, read PAN and expiry, and keep only what may be kept: the masked PAN, the card
//! type and the expiry. The clear PAN lives in zeroized buffers and never leaves this module.

use crate::config::Keys;
use crate::dukpt::{self, Ksn};

/// Longest SecurePaymentAccountData accepted, in hex digits.
pub const MAX_TRACK_HEX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("EncryptionKeyId is not a KSN")]
    BadKsn,
    #[error("no BDK serves this KSN")]
    UnknownKeySet,
    #[error("SecurePaymentAccountData is not hex of whole cipher blocks")]
    BadCiphertext,
    #[error("SecurePaymentAccountData does not decrypt to track 2 data")]
    NotTrack2,
    #[error("the card number fails its check digit")]
    BadCheckDigit,
}

/// What snapgate keeps of a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// First six and last four digits, the rest `X` (e.g. `545454XXXXXX5454`).
    pub masked_pan: String,
    pub card_type: &'static str,
    /// YYMM as on the track.
    pub expire: String,
}

/// Decrypt encrypted track data and read the card from it.
pub fn from_secure_track(keys: &Keys, ksn: &Ksn, hex_data: &str) -> Result<Card, CardError> {
    let bdk = keys.bdk_for(ksn).ok_or(CardError::UnknownKeySet)?;
    if hex_data.len() > MAX_TRACK_HEX {
        return Err(CardError::BadCiphertext);
    }
    let ct = hex::decode(hex_data).map_err(|_| CardError::BadCiphertext)?;
    let key = bdk
        .bdk
        .working_key(ksn, &bdk.track_usage)
        .map_err(|_| CardError::BadKsn)?;
    let plain = dukpt::decrypt_cbc(&key, &ct).map_err(|_| CardError::BadCiphertext)?;
    from_track2(dukpt::strip_zero_padding(&plain))
}

/// Read `;PAN=YYMM...?` (sentinels optional).
pub fn from_track2(track: &[u8]) -> Result<Card, CardError> {
    let t = track.strip_prefix(b";").unwrap_or(track);
    let sep = t
        .iter()
        .position(|&b| b == b'=' || b == b'D')
        .ok_or(CardError::NotTrack2)?;
    let rest = &t[sep + 1..];
    if rest.len() < 4 || !rest[..4].iter().all(u8::is_ascii_digit) {
        return Err(CardError::NotTrack2);
    }
    let tail = rest[4..].strip_suffix(b"?").unwrap_or(&rest[4..]);
    if !tail.iter().all(u8::is_ascii_digit) {
        return Err(CardError::NotTrack2);
    }
    card(&t[..sep], String::from_utf8_lossy(&rest[..4]).into_owned())
}

/// A keyed PAN (CardData/PAN): same checks and the same masking.
pub fn from_keyed_pan(pan: &str) -> Result<Card, CardError> {
    card(pan.trim().as_bytes(), String::new())
}

/// Check a PAN (borrowed from a buffer the caller zeroizes) and keep only its masked form.
fn card(pan: &[u8], expire: String) -> Result<Card, CardError> {
    if !(12..=19).contains(&pan.len()) || !pan.iter().all(u8::is_ascii_digit) {
        return Err(CardError::NotTrack2);
    }
    if !luhn_ok(pan) {
        return Err(CardError::BadCheckDigit);
    }
    Ok(Card {
        masked_pan: mask(pan),
        card_type: card_type(pan),
        expire,
    })
}

fn mask(pan: &[u8]) -> String {
    let n = pan.len();
    let mut m = String::with_capacity(n);
    for (i, &d) in pan.iter().enumerate() {
        m.push(if i < 6 || i >= n - 4 { d as char } else { 'X' });
    }
    m
}

fn luhn_ok(pan: &[u8]) -> bool {
    let sum: u32 = pan
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let v = u32::from(d - b'0');
            if i % 2 == 1 {
                let x = v * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                v
            }
        })
        .sum();
    sum % 10 == 0
}

/// The CWS TypeCardType name for a PAN's brand, from its leading digits.
fn card_type(pan: &[u8]) -> &'static str {
    let prefix = |n: usize| -> u32 {
        pan[..n]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    match (prefix(1), prefix(2), prefix(4)) {
        (4, _, _) => "Visa",
        (_, 51..=55, _) | (_, _, 2221..=2720) => "MasterCard",
        (_, 34 | 37, _) => "AmericanExpress",
        (_, 65, _) | (_, _, 6011) => "Discover",
        (_, 36 | 38, _) | (_, 30, _) => "DinersClub",
        (_, 35, _) => "JCB",
        _ => "NotSet",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evo_sample_track_masks_and_types() {
        let c = from_track2(b";5454545454545454=13121010134988000010?").unwrap();
        assert_eq!(c.masked_pan, "545454XXXXXX5454");
        assert_eq!(c.card_type, "MasterCard");
        assert_eq!(c.expire, "1312");
    }

    #[test]
    fn bad_tracks_are_refused() {
        for t in [
            &b"garbage"[..],
            b";5454=1312?",
            b";5454545454545454=13?",
            b";5454545454545455=13121010134988000010?",
            b";54545454545454x4=1312?",
        ] {
            assert!(from_track2(t).is_err(), "{:?}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn keyed_visa_test_card() {
        let c = from_keyed_pan("4012888888881881").unwrap();
        assert_eq!(
            (c.masked_pan.as_str(), c.card_type),
            ("401288XXXXXX1881", "Visa")
        );
    }
}
