//! Key serial numbers: parsing (TDES 10 bytes, AES 12 bytes), the counter, and the ids a
//! terminal is known by (`key_set_id`, `device_id`). Nothing here is secret.

use super::DukptError;
use std::fmt;

/// TDES counter: the low 21 bits of the 10-byte KSN.
pub(super) const TDES_COUNTER_MASK: u32 = 0x1F_FFFF;

/// A key serial number. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ksn {
    /// 10 bytes: 59-bit initial KSN + 21-bit counter.
    Tdes([u8; 10]),
    /// 12 bytes: BDK ID (4) + derivation ID (4) + 32-bit counter.
    Aes([u8; 12]),
}

impl Ksn {
    /// 20 hex digits -> Tdes, 24 -> Aes, 16 hex digits -> Tdes left-padded with FFFF.
    /// Upper or lower case accepted. Anything else -> Err.
    pub fn parse_hex(s: &str) -> Result<Ksn, DukptError> {
        match s.len() {
            16 => {
                let mut b = [0xFFu8; 10];
                hex::decode_to_slice(s, &mut b[2..]).map_err(|_| DukptError::BadHex)?;
                Ok(Ksn::Tdes(b))
            }
            20 => {
                let mut b = [0u8; 10];
                hex::decode_to_slice(s, &mut b).map_err(|_| DukptError::BadHex)?;
                Ok(Ksn::Tdes(b))
            }
            24 => {
                let mut b = [0u8; 12];
                hex::decode_to_slice(s, &mut b).map_err(|_| DukptError::BadHex)?;
                Ok(Ksn::Aes(b))
            }
            n => Err(DukptError::BadKsnLength(n)),
        }
    }

    /// The raw KSN bytes (10 or 12).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Ksn::Tdes(b) => b,
            Ksn::Aes(b) => b,
        }
    }

    /// Uppercase hex of the full KSN.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.as_bytes())
    }

    /// TDES: low 21 bits; AES: last 4 bytes.
    pub fn counter(&self) -> u32 {
        match self {
            Ksn::Tdes(b) => u32::from_be_bytes([0, b[7], b[8], b[9]]) & TDES_COUNTER_MASK,
            Ksn::Aes(b) => u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// Same initial KSN with a new counter (TDES masks the counter to 21 bits).
    pub fn with_counter(&self, counter: u32) -> Ksn {
        match *self {
            Ksn::Tdes(mut b) => {
                let c = (counter & TDES_COUNTER_MASK).to_be_bytes();
                b[7] = (b[7] & 0xE0) | c[1];
                b[8] = c[2];
                b[9] = c[3];
                Ksn::Tdes(b)
            }
            Ksn::Aes(mut b) => {
                b[8..12].copy_from_slice(&counter.to_be_bytes());
                Ksn::Aes(b)
            }
        }
    }

    /// Uppercase hex: TDES first 5 bytes (10 hex), AES the 4-byte BDK ID (8 hex).
    pub fn key_set_id(&self) -> String {
        match self {
            Ksn::Tdes(b) => hex::encode_upper(&b[..5]),
            Ksn::Aes(b) => hex::encode_upper(&b[..4]),
        }
    }

    /// The KSN without its counter, prefixed "T" (TDES: KSN[0..8] with byte 7 &= 0xE0)
    /// or "A" (AES: the 8-byte initial key ID), so the schemes never collide.
    pub fn device_id(&self) -> String {
        String::from_utf8(self.device_id_bytes().to_vec()).expect("ASCII")
    }

    /// Whether `id` is this KSN's `device_id`, without building it as a String (a sale
    /// compares it several times: issue 9).
    pub fn device_id_is(&self, id: &str) -> bool {
        id.as_bytes() == self.device_id_bytes()
    }

    /// `device_id` in a stack buffer: the scheme letter, then 16 uppercase hex digits.
    fn device_id_bytes(&self) -> [u8; 17] {
        let (scheme, mut d) = match self {
            Ksn::Tdes(b) => (b'T', [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            Ksn::Aes(b) => (b'A', [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        };
        if scheme == b'T' {
            d[7] &= 0xE0;
        }
        let mut out = [scheme; 17];
        hex::encode_to_slice(d, &mut out[1..]).expect("16 hex digits for 8 bytes");
        out[1..].make_ascii_uppercase();
        out
    }

    /// Whether a terminal could have produced this counter: TDES 1..=10 one-bits,
    /// AES 1..=16 one-bits. Host derivation works for any non-zero counter regardless.
    pub fn counter_is_standard(&self) -> bool {
        let ones = self.counter().count_ones();
        match self {
            Ksn::Tdes(_) => (1..=10).contains(&ones),
            Ksn::Aes(_) => (1..=16).contains(&ones),
        }
    }
}

impl fmt::Display for Ksn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
