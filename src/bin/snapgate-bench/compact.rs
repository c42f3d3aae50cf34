//! An experiment for the scale check, not the server's format: the same information as a
//! `TerminalRecord`, in fewer bytes, to measure what a smaller record saves on disk.
//!
//! Differences from the stored postcard `TerminalRecord`:
//! - serviceKey, vendorId and the BDK id are the same few strings for every terminal of a
//!   deployment: they are stored as a 16-bit index into a small `names` tree;
//! - the KSN device id (`T`/`A` + 16 hex digits) is stored as its scheme byte + 8 raw bytes;
//! - a leading tag byte (0xC2) tells this format from a postcard `TerminalRecord`, whose first
//!   byte is the merchant profile id's length (at most 64), so both can be read during a
//!   migration.
//!
//! Times stay in milliseconds and every other field is kept as it is.

use serde::{Deserialize, Serialize};
use snapgate::store::{PendingToken, TerminalRecord};
use snapgate::token::TokenId;
use std::collections::HashMap;

/// The first byte of every compact record.
pub const TAG: u8 = 0xC2;

#[derive(Serialize, Deserialize)]
struct CompactRecord {
    tag: u8,
    merchant_profile_id: String,
    device_serial: String,
    service_key: u16,
    vendor_id: u16,
    service_id: Option<String>,
    bdk_id: u16,
    device_scheme: u8,
    device_id: [u8; 8],
    registered_at_ms: i64,
    token_id: TokenId,
    issued_at_ms: i64,
    expires_at_ms: i64,
    refresh_due_at_ms: i64,
    refresh_flag: bool,
    pending: Option<PendingToken>,
    last_counter: u32,
    revoked: bool,
}

/// The interned strings: index <-> string.
#[derive(Default, Clone)]
pub struct Names {
    index: HashMap<String, u16>,
    list: Vec<String>,
}

impl Names {
    /// The index of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> u16 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u16::try_from(self.list.len()).expect("fewer than 65536 names");
        self.list.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }

    pub fn list(&self) -> &[String] {
        &self.list
    }

    pub fn from_list(list: Vec<String>) -> Names {
        let mut n = Names::default();
        for s in &list {
            n.intern(s);
        }
        n
    }

    fn get(&self, s: &str) -> Option<u16> {
        self.index.get(s).copied()
    }

    fn name(&self, i: u16) -> Option<&str> {
        self.list.get(usize::from(i)).map(String::as_str)
    }
}

/// Encode; None when a string is not interned or the device id is not `T`/`A` + 16 hex.
pub fn encode(r: &TerminalRecord, names: &Names) -> Option<Vec<u8>> {
    let (scheme, hex_id) = r.device_id.split_at_checked(1)?;
    let mut device_id = [0u8; 8];
    hex::decode_to_slice(hex_id, &mut device_id).ok()?;
    let c = CompactRecord {
        tag: TAG,
        merchant_profile_id: r.merchant_profile_id.clone(),
        device_serial: r.device_serial.clone(),
        service_key: names.get(&r.service_key)?,
        vendor_id: names.get(&r.vendor_id)?,
        service_id: r.service_id.clone(),
        bdk_id: names.get(&r.bdk_id)?,
        device_scheme: *scheme.as_bytes().first()?,
        device_id,
        registered_at_ms: r.registered_at_ms,
        token_id: r.token_id,
        issued_at_ms: r.issued_at_ms,
        expires_at_ms: r.expires_at_ms,
        refresh_due_at_ms: r.refresh_due_at_ms,
        refresh_flag: r.refresh_flag,
        pending: r.pending,
        last_counter: r.last_counter,
        revoked: r.revoked,
    };
    Some(postcard::to_allocvec(&c).expect("records serialize"))
}

pub fn decode(bytes: &[u8], names: &Names) -> Option<TerminalRecord> {
    let c: CompactRecord = postcard::from_bytes(bytes).ok()?;
    if c.tag != TAG {
        return None;
    }
    Some(TerminalRecord {
        merchant_profile_id: c.merchant_profile_id,
        device_serial: c.device_serial,
        service_key: names.name(c.service_key)?.to_owned(),
        vendor_id: names.name(c.vendor_id)?.to_owned(),
        service_id: c.service_id,
        bdk_id: names.name(c.bdk_id)?.to_owned(),
        device_id: format!(
            "{}{}",
            char::from(c.device_scheme),
            hex::encode_upper(c.device_id)
        ),
        registered_at_ms: c.registered_at_ms,
        token_id: c.token_id,
        issued_at_ms: c.issued_at_ms,
        expires_at_ms: c.expires_at_ms,
        refresh_due_at_ms: c.refresh_due_at_ms,
        refresh_flag: c.refresh_flag,
        pending: c.pending,
        last_counter: c.last_counter,
        revoked: c.revoked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_smaller() {
        let r = TerminalRecord {
            merchant_profile_id: "MP1".into(),
            device_serial: "BENCH0000001".into(),
            service_key: "6B2866C8FD500001".into(),
            vendor_id: "A96A5D589D".into(),
            service_id: None,
            bdk_id: "ansi-test-tdes".into(),
            device_id: "TFFFF9876543210E0".into(),
            registered_at_ms: 1_790_000_000_000,
            token_id: TokenId([7; 16]),
            issued_at_ms: 1_790_000_000_000,
            expires_at_ms: 1_797_776_000_000,
            refresh_due_at_ms: 1_792_592_000_000,
            refresh_flag: false,
            pending: None,
            last_counter: 1,
            revoked: false,
        };
        let mut names = Names::default();
        for s in [&r.service_key, &r.vendor_id, &r.bdk_id] {
            names.intern(s);
        }
        let bytes = encode(&r, &names).unwrap();
        assert_eq!(bytes[0], TAG);
        assert!(bytes.len() + 40 < r.encode().len(), "{}", bytes.len());
        assert_eq!(decode(&bytes, &names), Some(r.clone()));
        assert!(
            r.encode()[0] <= 64,
            "postcard records start with a short length"
        );
    }
}
