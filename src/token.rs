//! TerminalAccessToken: a base64 SAML 1.1-shaped `<saml:Assertion>` signed with HMAC-SHA256.
//!
//! The signature is an enveloped `ds:Signature` in a fixed-length trailer at the very end of
//! the assertion, and it covers every byte before it. `verify` checks the trailer's template,
//! looks the key up by its `KeyName` and checks the MAC in constant time before a single
//! attribute is read, so a second Assertion, a moved signature or any other wrapping trick
//! changes the signed bytes and fails. Only `verify` builds a `VerifiedToken`.
//!
//! HMAC rather than Ed25519: snapgate both issues and verifies the token, so a public key buys
//! nothing, and HMAC verifies in about a microsecond where Ed25519 takes ~50 µs per transaction.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

use crate::util::xml_escape_into;

type HmacSha256 = Hmac<Sha256>;

/// Length of a key id: short, fixed, so the signature trailer has a fixed length.
pub const KID_LEN: usize = 8;
/// Tokens longer than this are refused before decoding.
pub const MAX_TOKEN_CHARS: usize = 4096;

const SAML_NS: &str = "urn:oasis:names:tc:SAML:1.0:assertion";
const ATTR_NS: &str = "http://schemas.evosnap.com/Identity";
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

const TRAILER_HEAD: &str = concat!(
    "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>",
    "<ds:CanonicalizationMethod Algorithm=\"urn:snapgate:exact-bytes\"/>",
    "<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#hmac-sha256\"/>",
    "</ds:SignedInfo><ds:SignatureValue>"
);
const SIG_B64_LEN: usize = 44; // base64 of 32 bytes
const TRAILER_MID: &str = "</ds:SignatureValue><ds:KeyInfo><ds:KeyName>";
const TRAILER_TAIL: &str = "</ds:KeyName></ds:KeyInfo></ds:Signature></saml:Assertion>";
const TRAILER_LEN: usize =
    TRAILER_HEAD.len() + SIG_B64_LEN + TRAILER_MID.len() + KID_LEN + TRAILER_TAIL.len();

/// Why a token was refused. Everything but `Expired` is an invalid token to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not well formed")]
    Malformed,
    #[error("token names an unknown signing key")]
    UnknownKey,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token has expired")]
    Expired,
}

/// One HMAC signing key. The bytes are zeroized on drop and never printed.
#[derive(Clone)]
pub struct SigningKey {
    kid: [u8; KID_LEN],
    key: Zeroizing<[u8; 32]>,
}

impl SigningKey {
    /// `kid` must be exactly 8 characters of `[A-Za-z0-9_-]`.
    pub fn new(kid: &str, key: [u8; 32]) -> Result<Self, KeyIdError> {
        let bytes = kid.as_bytes();
        if bytes.len() != KID_LEN
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(KeyIdError);
        }
        let mut k = [0u8; KID_LEN];
        k.copy_from_slice(bytes);
        Ok(SigningKey {
            kid: k,
            key: Zeroizing::new(key),
        })
    }

    /// A fresh random key with a random key id.
    pub fn generate() -> Self {
        use rand::{Rng, RngCore};
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rngs::OsRng;
        let mut kid = [0u8; KID_LEN];
        for b in kid.iter_mut() {
            *b = ALPHABET[rng.gen_range(0..ALPHABET.len())];
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        SigningKey { kid, key }
    }

    pub fn kid(&self) -> &str {
        std::str::from_utf8(&self.kid).expect("kid is ASCII by construction")
    }

    /// Hex of the key bytes, for writing a key file. Never log the result.
    pub fn key_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_ref()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.key.as_ref()).expect("HMAC takes any key length")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.kid())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a signing key id is exactly 8 characters of A-Z, a-z, 0-9, '-' or '_'")]
pub struct KeyIdError;

/// The signing keys: one signs new tokens, all verify. Old keys stay until their tokens expire.
#[derive(Clone, Debug)]
pub struct KeyRing {
    active: usize,
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// `active` is the kid that signs; it must be among `keys`, and kids must be unique.
    pub fn new(keys: Vec<SigningKey>, active: &str) -> Option<Self> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid == k.kid) {
                return None;
            }
        }
        let active = keys.iter().position(|k| k.kid() == active)?;
        Some(KeyRing { active, keys })
    }

    pub fn active(&self) -> &SigningKey {
        &self.keys[self.active]
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    fn find(&self, kid: &[u8]) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid[..] == *kid)
    }
}

/// A token id: 16 random bytes, written as 32 uppercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    pub fn random() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        TokenId(b)
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(TokenId(b))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub token_id: TokenId,
    pub issuer: String,
    pub issued_at: DateTime<Utc>,
    pub not_on_or_after: DateTime<Utc>,
    pub service_key: String,
    pub merchant_profile_id: String,
    pub device_serial: String,
    /// The KSN's device id (counter removed) the terminal registered with.
    pub device_id: String,
}

/// A token whose signature and validity window were checked. Only `verify` makes one.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    claims: Claims,
}

impl VerifiedToken {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

/// Sign `claims` with the ring's active key and return the base64 token.
pub fn issue(ring: &KeyRing, claims: &Claims) -> String {
    let key = ring.active();
    let mut xml = String::with_capacity(1400);
    let mut issued = String::with_capacity(24);
    format_time(&mut issued, &claims.issued_at);
    xml.push_str("<saml:Assertion MajorVersion=\"1\" MinorVersion=\"1\" AssertionID=\"_");
    xml.push_str(&claims.token_id.to_hex());
    xml.push_str("\" Issuer=\"");
    xml_escape_into(&mut xml, &claims.issuer);
    xml.push_str("\" IssueInstant=\"");
    xml.push_str(&issued);
    xml.push_str("\" xmlns:saml=\"");
    xml.push_str(SAML_NS);
    xml.push_str("\"><saml:Conditions NotBefore=\"");
    xml.push_str(&issued);
    xml.push_str("\" NotOnOrAfter=\"");
    format_time(&mut xml, &claims.not_on_or_after);
    xml.push_str("\"/><saml:AttributeStatement><saml:Subject><saml:NameIdentifier>");
    xml_escape_into(&mut xml, &claims.service_key);
    xml.push_str("</saml:NameIdentifier></saml:Subject>");
    for (name, value) in [
        ("MerchantProfileId", claims.merchant_profile_id.as_str()),
        ("DeviceSerialNumber", claims.device_serial.as_str()),
        ("ServiceKey", claims.service_key.as_str()),
        ("DeviceId", claims.device_id.as_str()),
    ] {
        xml.push_str("<saml:Attribute AttributeName=\"");
        xml.push_str(name);
        xml.push_str("\" AttributeNamespace=\"");
        xml.push_str(ATTR_NS);
        xml.push_str("\"><saml:AttributeValue>");
        xml_escape_into(&mut xml, value);
        xml.push_str("</saml:AttributeValue></saml:Attribute>");
    }
    xml.push_str("</saml:AttributeStatement>");

    let mut mac = key.mac();
    mac.update(xml.as_bytes());
    mac.update(&key.kid);
    let sig = mac.finalize().into_bytes();

    xml.push_str(TRAILER_HEAD);
    B64.encode_string(sig, &mut xml);
    xml.push_str(TRAILER_MID);
    xml.push_str(key.kid());
    xml.push_str(TRAILER_TAIL);
    B64.encode(xml.as_bytes())
}

/// Check a token's signature over its exact bytes, then its validity window at `now`,
/// allowing `skew` either way.
pub fn verify(
    ring: &KeyRing,
    token: &str,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<VerifiedToken, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_CHARS || token.is_empty() {
        return Err(TokenError::Malformed);
    }
    let raw = B64.decode(token).map_err(|_| TokenError::Malformed)?;
    if raw.len() <= TRAILER_LEN {
        return Err(TokenError::Malformed);
    }
    let (signed, trailer) = raw.split_at(raw.len() - TRAILER_LEN);
    let (head, rest) = trailer.split_at(TRAILER_HEAD.len());
    let (sig_b64, rest) = rest.split_at(SIG_B64_LEN);
    let (mid, rest) = rest.split_at(TRAILER_MID.len());
    let (kid, tail) = rest.split_at(KID_LEN);
    if head != TRAILER_HEAD.as_bytes()
        || mid != TRAILER_MID.as_bytes()
        || tail != TRAILER_TAIL.as_bytes()
    {
        return Err(TokenError::Malformed);
    }
    let key = ring.find(kid).ok_or(TokenError::UnknownKey)?;
    let mut sig = [0u8; 33];
    match B64.decode_slice(sig_b64, &mut sig) {
        Ok(32) => {}
        _ => return Err(TokenError::BadSignature),
    }
    let mut mac = key.mac();
    mac.update(signed);
    mac.update(kid);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig[..32])
        .map_err(|_| TokenError::BadSignature)?;

    let text = std::str::from_utf8(signed).map_err(|_| TokenError::Malformed)?;
    let claims = parse_signed(text).ok_or(TokenError::Malformed)?;
    if now + skew < claims.issued_at {
        return Err(TokenError::NotYetValid);
    }
    if now >= claims.not_on_or_after + skew {
        return Err(TokenError::Expired);
    }
    Ok(VerifiedToken { claims })
}

/// Read back the fields `issue` wrote. The bytes are authentic by now, so this walks the
/// exact layout `issue` produces and refuses anything else.
fn parse_signed(text: &str) -> Option<Claims> {
    let mut c = Cursor(text);
    c.expect("<saml:Assertion MajorVersion=\"1\" MinorVersion=\"1\" AssertionID=\"_")?;
    let token_id = TokenId::from_hex(c.until('"')?)?;
    c.expect("\" Issuer=\"")?;
    let issuer = unescape(c.until('"')?)?;
    c.expect("\" IssueInstant=\"")?;
    let issued_text = c.until('"')?;
    let issued_at = parse_time(issued_text)?;
    c.expect("\" xmlns:saml=\"")?;
    c.expect(SAML_NS)?;
    c.expect("\"><saml:Conditions NotBefore=\"")?;
    // NotBefore is always IssueInstant: compare the text instead of parsing it again.
    let not_before_is_issue = c.until('"')? == issued_text;
    c.expect("\" NotOnOrAfter=\"")?;
    let not_on_or_after = parse_time(c.until('"')?)?;
    c.expect("\"/><saml:AttributeStatement><saml:Subject><saml:NameIdentifier>")?;
    let subject = unescape(c.until('<')?)?;
    c.expect("</saml:NameIdentifier></saml:Subject>")?;
    let mut values: [String; 4] = Default::default();
    for (slot, name) in values.iter_mut().zip([
        "MerchantProfileId",
        "DeviceSerialNumber",
        "ServiceKey",
        "DeviceId",
    ]) {
        c.expect("<saml:Attribute AttributeName=\"")?;
        c.expect(name)?;
        c.expect("\" AttributeNamespace=\"")?;
        c.expect(ATTR_NS)?;
        c.expect("\"><saml:AttributeValue>")?;
        *slot = unescape(c.until('<')?)?;
        c.expect("</saml:AttributeValue></saml:Attribute>")?;
    }
    c.expect("</saml:AttributeStatement>")?;
    if !c.0.is_empty() || !not_before_is_issue {
        return None;
    }
    let [merchant_profile_id, device_serial, service_key, device_id] = values;
    if subject != service_key {
        return None;
    }
    Some(Claims {
        token_id,
        issuer,
        issued_at,
        not_on_or_after,
        service_key,
        merchant_profile_id,
        device_serial,
        device_id,
    })
}

struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn expect(&mut self, lit: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(lit)?;
        Some(())
    }

    fn until(&mut self, stop: char) -> Option<&'a str> {
        let i = self.0.find(stop)?;
        let (v, rest) = self.0.split_at(i);
        self.0 = rest;
        Some(v)
    }
}

/// Read `YYYY-MM-DDTHH:MM:SS.mmmZ` by position: chrono's format-string parser costs ~200 ns a
/// call, a fifth of a whole verify.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 24 || [b[4], b[7], b[10], b[13], b[16], b[19], b[23]] != *b"--T::.Z" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let t = date.and_hms_milli_opt(num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?)?;
    Some(t.and_utc())
}

/// Write the same layout `parse_time` reads.
fn format_time(out: &mut String, d: &DateTime<Utc>) {
    use std::fmt::Write;
    let _ = write!(out, "{}", d.format(TIME_FORMAT));
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('&') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (ch, len) = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .iter()
        .find(|(e, _)| rest.starts_with(e))
        .map(|(e, c)| (*c, e.len()))?;
        out.push(ch);
        rest = &rest[len..];
    }
    out.push_str(rest);
    Some(out)
}

/// Decode a token without checking it, for operator display only. Never for authentication.
pub fn decode_unverified(token: &str) -> Option<String> {
    let raw = B64.decode(token.trim()).ok()?;
    String::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(
            vec![SigningKey::new("k1test00", [7u8; 32]).unwrap()],
            "k1test00",
        )
        .unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            token_id: TokenId([0xAB; 16]),
            issuer: "snapgate".into(),
            issued_at: t0(),
            not_on_or_after: t0() + Duration::days(90),
            service_key: "6B2866C8FD500001".into(),
            merchant_profile_id: "Merchant <&> \"One\"".into(),
            device_serial: "B1234567".into(),
            device_id: "TFFFF0079000007E0".into(),
        }
    }

    /// A token over arbitrary assertion bytes, signed as `issue` signs: what an attacker who
    /// held the key could not make, and what a bug in `parse_signed` would have to catch.
    fn sign_raw(ring: &KeyRing, xml: &str) -> String {
        let key = ring.active();
        let mut mac = key.mac();
        mac.update(xml.as_bytes());
        mac.update(&key.kid);
        let sig = mac.finalize().into_bytes();
        let mut out = xml.to_owned();
        out.push_str(TRAILER_HEAD);
        B64.encode_string(sig, &mut out);
        out.push_str(TRAILER_MID);
        out.push_str(key.kid());
        out.push_str(TRAILER_TAIL);
        B64.encode(out.as_bytes())
    }

    /// The signed assertion of a genuine token (its bytes without the signature trailer).
    fn genuine_xml() -> String {
        let raw = B64.decode(issue(&ring(), &claims())).unwrap();
        String::from_utf8(raw[..raw.len() - TRAILER_LEN].to_vec()).unwrap()
    }

    /// Defence in depth behind the signature (issue 13 point 9's surviving mutants in
    /// `parse_signed`): correctly signed bytes that `issue` would never write are refused as
    /// Malformed, each for its own reason; the unchanged bytes, re-signed, still verify.
    #[test]
    fn signed_but_not_as_issued_is_malformed() {
        let now = t0() + Duration::days(1);
        let skew = Duration::minutes(5);
        let xml = genuine_xml();
        assert!(verify(&ring(), &sign_raw(&ring(), &xml), now, skew).is_ok());
        let issued = "2026-09-21T14:13:20.000Z";
        assert!(xml.contains(issued), "{xml}");
        let cases = [
            ("trailing bytes", format!("{xml}<x/>")),
            (
                "NotBefore other than IssueInstant",
                xml.replacen(
                    &format!("NotBefore=\"{issued}\""),
                    "NotBefore=\"2026-09-20T14:13:20.000Z\"",
                    1,
                ),
            ),
            (
                "subject other than the service key",
                xml.replacen(
                    "<saml:NameIdentifier>6B2866C8FD500001<",
                    "<saml:NameIdentifier>6B2866C8FD500002<",
                    1,
                ),
            ),
        ];
        for (what, bad) in cases {
            assert_ne!(bad, xml, "{what}: the edit applied");
            assert_eq!(
                verify(&ring(), &sign_raw(&ring(), &bad), now, skew).map(|_| ()),
                Err(TokenError::Malformed),
                "{what}"
            );
        }
    }

    #[test]
    fn issued_token_is_base64_saml_assertion_and_round_trips() {
        let tok = issue(&ring(), &claims());
        assert!(tok.starts_with("PHNhbWw6QXNzZXJ0a"), "{tok}");
        let v = verify(&ring(), &tok, t0(), Duration::zero()).unwrap();
        assert_eq!(v.claims(), &claims());
    }

    #[test]
    fn every_single_byte_flip_is_rejected() {
        let tok = issue(&ring(), &claims());
        let raw = B64.decode(&tok).unwrap();
        for i in 0..raw.len() {
            let mut m = raw.clone();
            m[i] ^= 0x01;
            let r = verify(&ring(), &B64.encode(&m), t0(), Duration::zero());
            assert!(r.is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn token_from_unknown_or_other_key_is_rejected() {
        let tok = issue(&ring(), &claims());
        let other = KeyRing::new(
            vec![SigningKey::new("k1test00", [8u8; 32]).unwrap()],
            "k1test00",
        )
        .unwrap();
        assert_eq!(
            verify(&other, &tok, t0(), Duration::zero()).unwrap_err(),
            TokenError::BadSignature
        );
        let unknown = KeyRing::new(
            vec![SigningKey::new("k2test00", [7u8; 32]).unwrap()],
            "k2test00",
        )
        .unwrap();
        assert_eq!(
            verify(&unknown, &tok, t0(), Duration::zero()).unwrap_err(),
            TokenError::UnknownKey
        );
    }

    #[test]
    fn relabelled_kid_with_the_same_key_bytes_is_rejected() {
        // The kid is inside the MAC, so moving a token to another key name fails.
        let tok = issue(&ring(), &claims());
        let mut raw = B64.decode(&tok).unwrap();
        let n = raw.len();
        let kid_at = n - TRAILER_TAIL.len() - KID_LEN;
        raw[kid_at..kid_at + KID_LEN].copy_from_slice(b"k9test00");
        let both = KeyRing::new(
            vec![
                SigningKey::new("k1test00", [7u8; 32]).unwrap(),
                SigningKey::new("k9test00", [7u8; 32]).unwrap(),
            ],
            "k1test00",
        )
        .unwrap();
        assert_eq!(
            verify(&both, &B64.encode(&raw), t0(), Duration::zero()).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn expiry_and_not_before_are_enforced_with_skew() {
        let tok = issue(&ring(), &claims());
        let skew = Duration::seconds(60);
        let end = t0() + Duration::days(90);
        assert!(verify(&ring(), &tok, end - Duration::seconds(1), Duration::zero()).is_ok());
        assert_eq!(
            verify(&ring(), &tok, end, Duration::zero()).unwrap_err(),
            TokenError::Expired
        );
        assert!(verify(&ring(), &tok, end + Duration::seconds(59), skew).is_ok());
        assert_eq!(
            verify(&ring(), &tok, end + Duration::seconds(60), skew).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            verify(&ring(), &tok, t0() - Duration::seconds(61), skew).unwrap_err(),
            TokenError::NotYetValid
        );
        assert!(verify(&ring(), &tok, t0() - Duration::seconds(60), skew).is_ok());
    }

    #[test]
    fn wrapped_assertion_with_a_valid_signature_elsewhere_is_rejected() {
        let good = String::from_utf8(B64.decode(issue(&ring(), &claims())).unwrap()).unwrap();
        // A forged assertion with the genuine signed assertion nested inside it.
        let forged = good.replacen("B1234567", "EVIL0001", 1);
        let wrapped = format!("{}<!--{good}-->", &forged[..forged.len() - TRAILER_LEN]);
        assert!(verify(&ring(), &B64.encode(wrapped), t0(), Duration::zero()).is_err());
        // The genuine assertion followed by a second, unsigned one.
        let appended = format!("{good}{forged}");
        assert!(verify(&ring(), &B64.encode(appended), t0(), Duration::zero()).is_err());
        // The signature moved to the front.
        let trailer = &good[good.len() - TRAILER_LEN..];
        let moved = format!("{trailer}{}", &good[..good.len() - TRAILER_LEN]);
        assert!(verify(&ring(), &B64.encode(moved), t0(), Duration::zero()).is_err());
    }

    #[test]
    fn time_parser_agrees_with_chrono_and_refuses_other_layouts() {
        for d in [
            t0(),
            t0() + Duration::milliseconds(123),
            DateTime::from_timestamp(0, 0).unwrap(),
        ] {
            let mut s = String::new();
            format_time(&mut s, &d);
            assert_eq!(parse_time(&s), Some(d), "{s}");
        }
        for bad in [
            "2026-11-23T11:22:54Z",
            "2026-13-01T00:00:00.000Z",
            "2026-11-23 11:22:54.000Z",
            "2026-11-23T11:22:5x.000Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for s in ["", "!!!!", "PHNhbWw6", &"A".repeat(MAX_TOKEN_CHARS + 4)] {
            assert!(verify(&ring(), s, t0(), Duration::zero()).is_err());
        }
    }

    #[test]
    fn signing_key_debug_hides_the_key() {
        let k = SigningKey::new("k1test00", [0x5A; 32]).unwrap();
        let dbg = format!("{k:?} {:?}", ring());
        assert!(!dbg.to_lowercase().contains("5a5a"), "{dbg}");
    }

    #[test]
    fn key_ids_are_validated_and_unique() {
        assert!(SigningKey::new("short", [0; 32]).is_err());
        assert!(SigningKey::new("has<tag", [0; 32]).is_err());
        let k = SigningKey::new("abcdefgh", [0; 32]).unwrap();
        assert!(KeyRing::new(vec![k.clone(), k], "abcdefgh").is_none());
        assert!(KeyRing::new(vec![SigningKey::generate()], "nothere0").is_none());
    }

    #[test]
    fn signing_key_debug_names_the_kid_and_says_redacted() {
        // Operators read this in logs: the kid identifies the key, the key itself never shows.
        let k = SigningKey::new("k1test00", [0x5A; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "SigningKey(k1test00, <redacted>)");
    }

    #[test]
    fn token_id_displays_as_its_uppercase_hex() {
        let id = TokenId([0xAB; 16]);
        assert_eq!(id.to_string(), "AB".repeat(16));
        assert_eq!(TokenId::from_hex(&id.to_string()), Some(id));
    }

    #[test]
    fn the_length_bound_admits_exactly_max_token_chars_and_refuses_longer_signed_tokens() {
        // Genuinely signed tokens around the bound (a long merchant profile id): only the
        // length check can refuse the longer one, and it must not refuse the one at the bound.
        let r = ring();
        let with_len = |n: usize| {
            let mut c = claims();
            c.merchant_profile_id = "M".repeat(n);
            issue(&r, &c)
        };
        let base = with_len(0).len();
        let guess = (MAX_TOKEN_CHARS - base) * 3 / 4;
        let near: Vec<String> = (guess.saturating_sub(8)..guess + 8).map(with_len).collect();
        let exact = near.iter().find(|t| t.len() == MAX_TOKEN_CHARS).unwrap();
        assert!(verify(&r, exact, t0(), Duration::zero()).is_ok());
        let over = near.iter().find(|t| t.len() > MAX_TOKEN_CHARS).unwrap();
        assert_eq!(
            verify(&r, over, t0(), Duration::zero()).unwrap_err(),
            TokenError::Malformed
        );
        assert_eq!(
            verify(&r, " ", t0(), Duration::zero()).unwrap_err(),
            TokenError::Malformed
        );
    }

    #[test]
    fn decode_unverified_shows_the_assertion_and_refuses_what_is_not_base64() {
        let t = issue(&ring(), &claims());
        let shown = decode_unverified(&format!(" {t}\n")).unwrap();
        assert!(shown.starts_with('<'), "{shown}");
        assert!(shown.contains("B1234567") && shown.contains("6B2866C8FD500001"));
        assert_eq!(decode_unverified("!!!"), None);
    }
}
