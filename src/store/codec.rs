//! The on-disk record layout, as pure functions: `TerminalRecord` <-> bytes, no I/O. The
//! engine decides which names have a table index (and interns new ones); the codec only takes
//! those indexes when encoding and asks a resolver for their names when decoding, so stored
//! bytes can be fuzzed (`fuzz/fuzz_targets/record.rs`).
//!
//! A record is a tag byte (`TAG_INDEXED` or `TAG_INLINE`) then postcard of `StoredRecord`.
//! sled 0.34 costs about 100 B per entry plus twice its bytes (docs/BENCHMARKS.md), so the
//! bytes matter: serviceKey, vendorId and the BDK id, the same few strings for every terminal of
//! a deployment, are u16 indexes into the engine's name table, and the KSN device id is its
//! scheme plus 8 raw bytes. Records written before this layout are postcard `TerminalRecord`s;
//! they still decode, and their next update rewrites them.
//!
//! A terminal's recent sales (`TerminalRecord::recent`), when it has any, follow the record as
//! a postcard list; a record without them is byte for byte what it was before they existed.

use super::{PendingToken, RecentSale, StoreError, TerminalRecord};
use crate::cws::ops::register_terminal::MAX_FIELD_LEN;
use crate::token::TokenId;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// First byte of a record in the current layout whose three names are name-table indexes.
/// A record in the earlier layout starts with the varint length of its merchant profile id, at
/// most `register_terminal::MAX_FIELD_LEN` (asserted below): one byte under 0x80.
pub const TAG_INDEXED: u8 = 0xC2;
/// The same layout with the three names kept as strings, because one of them is too long to
/// intern or the table is full.
pub const TAG_INLINE: u8 = 0xC3;

// The earlier layout is told apart by its first byte: a merchant profile id short enough for a
// one-byte varint length can never start with either tag.
const _: () = assert!(MAX_FIELD_LEN < 0x80 && TAG_INDEXED >= 0x80 && TAG_INLINE >= 0x80);

/// A `TerminalRecord` as stored after its tag; `N` is how serviceKey, vendorId and the BDK id
/// are held: u16 indexes, or the strings. Times stay Unix milliseconds, which postcard writes as
/// zigzag varints (6 bytes until 2039).
#[derive(Serialize, Deserialize)]
struct StoredRecord<'a, N> {
    merchant_profile_id: Cow<'a, str>,
    device_serial: Cow<'a, str>,
    service_key: N,
    vendor_id: N,
    service_id: Option<Cow<'a, str>>,
    bdk_id: N,
    device_id: StoredDeviceId<'a>,
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

impl<'a, N> StoredRecord<'a, N> {
    /// `names`: serviceKey, vendorId, BDK id.
    fn new(r: &'a TerminalRecord, [service_key, vendor_id, bdk_id]: [N; 3]) -> Self {
        StoredRecord {
            merchant_profile_id: Cow::Borrowed(&r.merchant_profile_id),
            device_serial: Cow::Borrowed(&r.device_serial),
            service_key,
            vendor_id,
            service_id: r.service_id.as_deref().map(Cow::Borrowed),
            bdk_id,
            device_id: StoredDeviceId::pack(&r.device_id),
            registered_at_ms: r.registered_at_ms,
            token_id: r.token_id,
            issued_at_ms: r.issued_at_ms,
            expires_at_ms: r.expires_at_ms,
            refresh_due_at_ms: r.refresh_due_at_ms,
            refresh_flag: r.refresh_flag,
            pending: r.pending,
            last_counter: r.last_counter,
            revoked: r.revoked,
        }
    }

    /// The record, given what its names (serviceKey, vendorId, BDK id) resolve to.
    fn into_record(
        self,
        resolve: impl FnOnce([N; 3]) -> Result<[String; 3], StoreError>,
    ) -> Result<TerminalRecord, StoreError> {
        let [service_key, vendor_id, bdk_id] =
            resolve([self.service_key, self.vendor_id, self.bdk_id])?;
        Ok(TerminalRecord {
            merchant_profile_id: self.merchant_profile_id.into_owned(),
            device_serial: self.device_serial.into_owned(),
            service_key,
            vendor_id,
            service_id: self.service_id.map(Cow::into_owned),
            bdk_id,
            device_id: self.device_id.unpack(),
            registered_at_ms: self.registered_at_ms,
            token_id: self.token_id,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            refresh_due_at_ms: self.refresh_due_at_ms,
            refresh_flag: self.refresh_flag,
            pending: self.pending,
            last_counter: self.last_counter,
            revoked: self.revoked,
            recent: Vec::new(),
        })
    }
}

/// The KSN device id (`Ksn::device_id`): `T`/`A` + 16 uppercase hex digits is stored as the
/// variant (the scheme) + 8 raw bytes. Any other string is kept as text, so that every record
/// reads back exactly as it was written.
#[derive(Serialize, Deserialize)]
enum StoredDeviceId<'a> {
    Tdes([u8; 8]),
    Aes([u8; 8]),
    Text(Cow<'a, str>),
}

impl<'a> StoredDeviceId<'a> {
    fn pack(id: &'a str) -> Self {
        // Uppercase only: lowercase would read back uppercase, a different string.
        let raw = |digits: &str| {
            let mut b = [0u8; 8];
            let upper = digits
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F'));
            (upper && hex::decode_to_slice(digits, &mut b).is_ok()).then_some(b)
        };
        if let Some(b) = id.strip_prefix('T').and_then(raw) {
            StoredDeviceId::Tdes(b)
        } else if let Some(b) = id.strip_prefix('A').and_then(raw) {
            StoredDeviceId::Aes(b)
        } else {
            StoredDeviceId::Text(Cow::Borrowed(id))
        }
    }

    fn unpack(self) -> String {
        let (scheme, raw) = match self {
            StoredDeviceId::Tdes(b) => (b'T', b),
            StoredDeviceId::Aes(b) => (b'A', b),
            StoredDeviceId::Text(s) => return s.into_owned(),
        };
        let mut id = [scheme; 17];
        hex::encode_to_slice(raw, &mut id[1..]).expect("16 hex digits for 8 bytes");
        id.make_ascii_uppercase();
        String::from_utf8(id.to_vec()).expect("ASCII")
    }
}

/// The bytes for `r`: with `indexes` (serviceKey, vendorId, BDK id in the name table) the
/// indexed layout, without them the names inline. The same input always gives the same bytes.
pub fn encode(r: &TerminalRecord, indexes: Option<[u16; 3]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    let out = match indexes {
        Some(i) => {
            out.push(TAG_INDEXED);
            postcard::to_extend(&StoredRecord::new(r, i), out)
        }
        None => {
            out.push(TAG_INLINE);
            let names = [&r.service_key, &r.vendor_id, &r.bdk_id].map(|s| s.as_str());
            postcard::to_extend(&StoredRecord::new(r, names), out)
        }
    };
    let mut out = out.expect("records always serialize");
    append_recent(&mut out, &r.recent);
    out
}

/// Append `recent` after a record's bytes: nothing when there are none, so such a record keeps
/// the bytes it had before recent sales existed (and compare-and-swap on them still matches).
pub fn append_recent(out: &mut Vec<u8>, recent: &[RecentSale]) {
    if !recent.is_empty() {
        let bytes = std::mem::take(out);
        *out = postcard::to_extend(recent, bytes).expect("records always serialize");
    }
}

/// The recent sales after a record's bytes (`append_recent`): none for no bytes; anything but
/// exactly one non-empty list is corrupt (an empty one is never written, and would re-encode
/// to other bytes).
pub fn read_recent(rest: &[u8]) -> Result<Vec<RecentSale>, StoreError> {
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<RecentSale> = whole(rest)?;
    if list.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding.into());
    }
    Ok(list)
}

/// The record in `bytes`, any layout. `resolve` gives the names at the indexes an indexed
/// record holds (serviceKey, vendorId, BDK id); it is not called for the other layouts.
pub fn decode(
    bytes: &[u8],
    resolve: impl FnOnce([u16; 3]) -> Result<[String; 3], StoreError>,
) -> Result<TerminalRecord, StoreError> {
    let (mut record, rest) = match bytes.first() {
        Some(&TAG_INDEXED) => {
            let (s, rest): (StoredRecord<'_, u16>, _) = postcard::take_from_bytes(&bytes[1..])?;
            (s.into_record(resolve)?, rest)
        }
        Some(&TAG_INLINE) => {
            let (s, rest): (StoredRecord<'_, Cow<'_, str>>, _) =
                postcard::take_from_bytes(&bytes[1..])?;
            (s.into_record(|s| Ok(s.map(Cow::into_owned)))?, rest)
        }
        // The earlier layout: postcard of the `TerminalRecord` itself.
        _ => postcard::take_from_bytes(bytes)?,
    };
    record.recent = read_recent(rest)?;
    Ok(record)
}

/// Postcard of exactly `bytes`: trailing bytes mean the record is not what was written.
fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    match postcard::take_from_bytes(bytes)? {
        (t, []) => Ok(t),
        _ => Err(postcard::Error::DeserializeBadEncoding.into()),
    }
}
