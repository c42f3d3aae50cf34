//! Properties over arbitrary input: the envelope reader never panics and never returns a tree
//! beyond its limits; every altered token is refused, with the error its altered part calls
//! for; DUKPT encryption matches an independent reference host (`reference/dukpt.rs`) for any
//! counter, key and plaintext; KSN parsing never panics and accepts exactly the hex forms.
//!
//! Case counts are kept moderate (256, fewer for the costlier ones) so the suite stays fast on
//! a 2-core machine.

mod common;
#[path = "reference/dukpt.rs"]
mod dukpt_reference;

use common::t0;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Duration;
use proptest::prelude::*;
use proptest::sample::Index;
use snapgate::cws::soap::{self, Element, XmlLimits, MAX_NAMESPACE_BYTES};
use snapgate::dukpt::{self, AesKeyType, AesUsage, Bdk, KeyUsage, Ksn, Scheme, TdesVariant};
use snapgate::token::{self, Claims, KeyRing, SigningKey, TokenError, TokenId};

// ---------------------------------------------------------------------------------------------
// The envelope reader

/// Small limits, so random input reaches them often.
const LIMITS: XmlLimits = XmlLimits {
    max_depth: 8,
    max_elements: 64,
    max_attributes: 4,
};

/// Pieces of XML, SOAP and hostile constructs for input that gets past the first byte.
const XMLISH: &[&str] = &[
    "<",
    ">",
    "</",
    "/>",
    " ",
    "\n",
    "=",
    "\"",
    "'",
    ":",
    "a",
    "b:c",
    "s:Envelope",
    "s:Body",
    "s:Header",
    " xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"",
    " xmlns=\"urn:x\"",
    " xmlns:b=\"\"",
    " xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"",
    " i:type=\"b:c\"",
    " i:nil=\"true\"",
    " x=\"1\"",
    "RegisterTerminal",
    "&amp;",
    "&lt;",
    "&#x10FFFF;",
    "&#0;",
    "&#xD800;",
    "&bogus;",
    "&",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?xml version=\"1.0\"?>",
    "<?pi?>",
    "<!DOCTYPE x [<!ENTITY e \"v\">]>",
    "<!ENTITY",
    "中",
    "é",
    "\u{FEFF}",
    "\0",
];

fn xmlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(XMLISH), 0..96).prop_map(|v| v.concat())
}

/// An Ok envelope respects every limit: depth, element count and namespace name length.
fn assert_within_limits(env: &soap::Envelope, limits: &XmlLimits) {
    fn walk(e: &Element, depth: usize, count: &mut usize, limits: &XmlLimits) {
        assert!(depth <= limits.max_depth, "depth {depth}");
        *count += 1;
        for ns in [
            e.ns.as_deref(),
            e.xsi_type.as_ref().and_then(|t| t.0.as_deref()),
        ]
        .into_iter()
        .flatten()
        {
            assert!(ns.len() <= MAX_NAMESPACE_BYTES);
        }
        for c in &e.children {
            walk(c, depth + 1, count, limits);
        }
    }
    // Envelope and Body are levels 1 and 2.
    let mut count = 2;
    if let Some(h) = &env.header {
        walk(h, 2, &mut count, limits);
    }
    walk(&env.operation, 3, &mut count, limits);
    assert!(count <= limits.max_elements, "{count} elements");
}

fn parse(bytes: &[u8]) {
    if let Ok(env) = soap::parse_envelope(bytes, &LIMITS) {
        assert_within_limits(&env, &LIMITS);
    }
}

fn valid_envelope() -> String {
    common::register_envelope(
        common::SERVICE_KEY,
        common::VENDOR_ID,
        "0123456789ABCDEF0123456789ABCDEF",
        "FFFF9876543210E00001",
    )
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    InsertXml(Index, &'static str),
    Delete(Index, usize),
    Truncate(Index),
    Duplicate(Index, usize, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), prop::sample::select(XMLISH)).prop_map(|(i, s)| Edit::InsertXml(i, s)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1usize..200, any::<Index>())
            .prop_map(|(i, n, at)| Edit::Duplicate(i, n, at)),
    ]
}

fn apply(mut b: Vec<u8>, e: &Edit) -> Vec<u8> {
    let at = |i: &Index, b: &Vec<u8>| i.index(b.len() + 1);
    match e {
        Edit::Set(i, v) if !b.is_empty() => {
            let i = i.index(b.len());
            b[i] = *v;
        }
        Edit::Set(..) => {}
        Edit::Insert(i, v) => {
            let i = at(i, &b);
            b.splice(i..i, v.iter().copied());
        }
        Edit::InsertXml(i, s) => {
            let i = at(i, &b);
            b.splice(i..i, s.bytes());
        }
        Edit::Delete(i, n) => {
            let i = at(i, &b);
            let end = (i + n).min(b.len());
            b.drain(i..end);
        }
        Edit::Truncate(i) => {
            let i = at(i, &b);
            b.truncate(i);
        }
        Edit::Duplicate(i, n, to) => {
            let i = at(i, &b);
            let end = (i + n).min(b.len());
            let piece = b[i..end].to_vec();
            let to = at(to, &b);
            b.splice(to..to, piece);
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_reader(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        parse(&bytes);
    }

    #[test]
    fn arbitrary_strings_never_panic_the_envelope_reader(s in any::<String>()) {
        parse(s.as_bytes());
    }

    #[test]
    fn xml_like_input_never_panics_and_stays_within_limits(soup in xmlish()) {
        parse(soup.as_bytes());
        // The same inside a real Envelope and Body, so more of it reaches the tree.
        let wrapped = format!(
            "<s:Envelope xmlns:s=\"{}\"><s:Body>{soup}</s:Body></s:Envelope>",
            soap::SOAP_ENV_NS
        );
        parse(wrapped.as_bytes());
    }

    #[test]
    fn mutations_of_a_valid_envelope_never_panic(
        edits in prop::collection::vec(edit(), 1..8)
    ) {
        let base = valid_envelope();
        let limits = XmlLimits { max_depth: 32, max_elements: 2_000, max_attributes: 32 };
        let env = soap::parse_envelope(base.as_bytes(), &limits).expect("the fixture parses");
        prop_assert_eq!(&*env.operation.name, "RegisterTerminal");
        let mut b = base.into_bytes();
        for e in &edits {
            b = apply(b, e);
        }
        if let Ok(env) = soap::parse_envelope(&b, &limits) {
            assert_within_limits(&env, &limits);
        }
        parse(&b);
    }
}

// ---------------------------------------------------------------------------------------------
// The token

fn ring() -> KeyRing {
    KeyRing::new(
        vec![SigningKey::new("proptest", [0x42; 32]).unwrap()],
        "proptest",
    )
    .unwrap()
}

fn claims() -> Claims {
    Claims {
        token_id: TokenId([0x5A; 16]),
        issuer: "snapgate".into(),
        issued_at: t0(),
        not_on_or_after: t0() + Duration::days(90),
        service_key: "6B2866C8FD500001".into(),
        merchant_profile_id: "MP1".into(),
        device_serial: "B1234567".into(),
        device_id: "TFFFF9876543210E0".into(),
    }
}

fn verify(tok: &str) -> Result<Claims, token::TokenError> {
    token::verify(&ring(), tok, t0(), Duration::zero()).map(|v| v.claims().clone())
}

/// The genuine token: verifies, decoded to its bytes.
fn genuine() -> (String, Vec<u8>) {
    let tok = token::issue(&ring(), &claims());
    assert_eq!(verify(&tok), Ok(claims()));
    let raw = B64.decode(&tok).unwrap();
    (tok, raw)
}

const B64_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

/// Where the genuine token's signature trailer and its two variable parts (SignatureValue,
/// KeyName) sit, found in the token's own text. Offsets count within the trailer, which
/// `verify` reads from the end of the bytes.
struct Layout {
    trailer: usize,
    sig: std::ops::Range<usize>,
    kid: std::ops::Range<usize>,
}

fn layout(raw: &[u8]) -> Layout {
    let text = std::str::from_utf8(raw).unwrap();
    let start = text.rfind("<ds:Signature ").unwrap();
    let t = &text[start..];
    let after = |tag: &str| t.find(tag).unwrap() + tag.len();
    let at = |tag: &str| t.find(tag).unwrap();
    Layout {
        trailer: text.len() - start,
        sig: after("<ds:SignatureValue>")..at("</ds:SignatureValue>"),
        kid: after("<ds:KeyName>")..at("</ds:KeyName>"),
    }
}

/// The refusal a token decoding to `bytes` must get, from the order of checks the token
/// module documents: the trailer's fixed template (Malformed), then its key name
/// (UnknownKey: the ring holds one key), then the MAC over everything before the signature
/// value (BadSignature). None: these are the genuine bytes.
fn refusal_for_bytes(genuine: &[u8], bytes: &[u8]) -> Option<TokenError> {
    let l = layout(genuine);
    if bytes.len() <= l.trailer {
        return Some(TokenError::Malformed);
    }
    let (signed, trailer) = bytes.split_at(bytes.len() - l.trailer);
    let (g_signed, g_trailer) = genuine.split_at(genuine.len() - l.trailer);
    let differs = |r: std::ops::Range<usize>| trailer[r.clone()] != g_trailer[r];
    let template = [0..l.sig.start, l.sig.end..l.kid.start, l.kid.end..l.trailer];
    if template.into_iter().any(differs) {
        Some(TokenError::Malformed)
    } else if differs(l.kid.clone()) {
        Some(TokenError::UnknownKey)
    } else if differs(l.sig.clone()) || signed != g_signed {
        Some(TokenError::BadSignature)
    } else {
        None
    }
}

/// The refusal for a token text: text that is not base64 (after trimming) is Malformed.
fn refusal_for_text(genuine: &[u8], text: &str) -> Option<TokenError> {
    let t = text.trim();
    if t.is_empty() || t.len() > token::MAX_TOKEN_CHARS {
        return Some(TokenError::Malformed);
    }
    match B64.decode(t) {
        Ok(bytes) => refusal_for_bytes(genuine, &bytes),
        Err(_) => Some(TokenError::Malformed),
    }
}

/// `verify` refuses `text` with exactly the expected error.
fn assert_refused(genuine: &[u8], text: &str) -> Result<(), TestCaseError> {
    let want = refusal_for_text(genuine, text);
    prop_assert!(want.is_some(), "the alteration changed nothing: {}", text);
    prop_assert_eq!(verify(text).err(), want, "{}", text);
    Ok(())
}

#[test]
fn each_byte_of_the_token_is_refused_with_the_error_of_its_part() {
    // Every position, not a sample: the key name is 8 bytes of ~900.
    let (_, raw) = genuine();
    let mut seen = Vec::new();
    for i in 0..raw.len() {
        let mut b = raw.clone();
        b[i] ^= 0x01;
        let want = refusal_for_bytes(&raw, &b).expect("a change");
        assert_eq!(verify(&B64.encode(&b)).err(), Some(want), "byte {i}");
        seen.push(want);
    }
    // The oracle is not trivially one answer: every part of the token was hit.
    for e in [
        TokenError::Malformed,
        TokenError::UnknownKey,
        TokenError::BadSignature,
    ] {
        assert!(seen.contains(&e), "no position gave {e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_single_byte_change_of_the_token_is_refused(i in any::<Index>(), v in any::<u8>()) {
        let (_, mut raw) = genuine();
        let genuine_raw = raw.clone();
        let i = i.index(raw.len());
        prop_assume!(raw[i] != v);
        raw[i] = v;
        assert_refused(&genuine_raw, &B64.encode(&raw))?;
    }

    #[test]
    fn every_single_character_change_of_the_base64_is_refused(
        i in any::<Index>(),
        c in prop_oneof![prop::sample::select(B64_CHARS.chars().collect::<Vec<_>>()), any::<char>()],
    ) {
        let (tok, raw) = genuine();
        let mut chars: Vec<char> = tok.chars().collect();
        let i = i.index(chars.len());
        prop_assume!(chars[i] != c);
        chars[i] = c;
        let altered: String = chars.into_iter().collect();
        assert_refused(&raw, &altered)?;
    }

    #[test]
    fn every_truncation_of_the_token_is_refused(i in any::<Index>()) {
        let (tok, raw) = genuine();
        let n = i.index(raw.len());
        prop_assert_eq!(verify(&B64.encode(&raw[..n])).err(), Some(TokenError::Malformed), "raw cut at {}", n);
        let n = i.index(tok.len());
        prop_assert_eq!(verify(&tok[..n]).err(), Some(TokenError::Malformed), "base64 cut at {}", n);
    }

    #[test]
    fn every_extension_of_the_token_is_refused(
        suffix in prop::collection::vec(any::<u8>(), 1..64),
        prefix in prop::collection::vec(any::<u8>(), 1..64),
        text in "[A-Za-z0-9+/=]{1,16}",
    ) {
        let (tok, raw) = genuine();
        // Bytes after the trailer move it: the template no longer matches.
        let longer = [raw.as_slice(), &suffix].concat();
        prop_assert_eq!(verify(&B64.encode(longer)).err(), Some(TokenError::Malformed));
        // Bytes before it are signed bytes the MAC did not cover.
        let longer = [prefix.as_slice(), &raw].concat();
        prop_assert_eq!(verify(&B64.encode(longer)).err(), Some(TokenError::BadSignature));
        assert_refused(&raw, &format!("{tok}{text}"))?;
        assert_refused(&raw, &format!("{text}{tok}"))?;
    }

    #[test]
    fn issued_tokens_verify_with_the_claims_they_carry(
        issuer in ".{0,32}",
        merchant in ".{0,32}",
        serial in ".{0,32}",
        service_key in ".{0,32}",
        device_id in ".{0,32}",
        id in any::<[u8; 16]>(),
        days in 1i64..400,
    ) {
        let c = Claims {
            token_id: TokenId(id),
            issuer,
            issued_at: t0(),
            not_on_or_after: t0() + Duration::days(days),
            service_key,
            merchant_profile_id: merchant,
            device_serial: serial,
            device_id,
        };
        let tok = token::issue(&ring(), &c);
        prop_assert_eq!(verify(&tok), Ok(c));
    }
}

// ---------------------------------------------------------------------------------------------
// DUKPT

fn tdes_variant() -> impl Strategy<Value = TdesVariant> {
    prop::sample::select(vec![
        TdesVariant::Pin,
        TdesVariant::MacRequest,
        TdesVariant::MacResponse,
        TdesVariant::DataRequest,
        TdesVariant::DataResponse,
    ])
}

fn aes_usage() -> impl Strategy<Value = AesUsage> {
    prop::sample::select(vec![
        AesUsage::Pin,
        AesUsage::MacGenerate,
        AesUsage::MacVerify,
        AesUsage::DataEncrypt,
        AesUsage::DataDecrypt,
        AesUsage::DataBoth,
    ])
}

/// Plaintext without trailing zero bytes (zero padding cannot tell those from padding).
fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    })
}

/// The implementation's ciphertext is the independent reference's (`tests/reference/dukpt.rs`,
/// written from X9.24-1 and X9.24-3) byte for byte, and decrypts back to the plaintext. The
/// reference derives its own key: a derivation that ignored the counter, BDK or usage differs.
fn round_trip(
    bdk: &Bdk,
    ksn: &Ksn,
    usage: &KeyUsage,
    reference: &[u8],
    plain: &[u8],
) -> Result<(), TestCaseError> {
    let key = dukpt::working_key(bdk, ksn, usage).expect("a working key");
    let bs = key.block_len();
    let ct = dukpt::encrypt_cbc(&key, plain);
    prop_assert_eq!(ct.len() % bs, 0);
    prop_assert_eq!(ct.len(), plain.len().div_ceil(bs).max(1) * bs);
    prop_assert_eq!(hex::encode_upper(&ct), hex::encode_upper(reference));
    let back = dukpt::decrypt_cbc(&key, &ct).expect("decrypts");
    prop_assert_eq!(dukpt::strip_zero_padding(&back), plain);
    Ok(())
}

/// What the reference host encrypts for (BDK bytes, KSN, usage).
fn reference_ct(bdk: &[u8], ksn: &Ksn, u: &KeyUsage, plain: &[u8]) -> Vec<u8> {
    match ksn {
        Ksn::Tdes(k) => {
            let bdk: [u8; 16] = bdk.try_into().unwrap();
            let key = dukpt_reference::tdes_working_key(&bdk, k, u.tdes_variant, u.tdes_data_owf);
            dukpt_reference::cbc_encrypt(8, dukpt_reference::tdes_block(key), plain)
        }
        Ksn::Aes(k) => {
            let bytes = match u.aes_key_type {
                AesKeyType::Aes128 => 16,
                AesKeyType::Aes256 => 32,
            };
            let code = dukpt_reference::aes_usage_code(u.aes_usage);
            let key = dukpt_reference::aes_working_key(bdk, k, code, bytes);
            dukpt_reference::cbc_encrypt(16, dukpt_reference::aes_block(key), plain)
        }
    }
}

fn usage(tdes_variant: TdesVariant, owf: bool, aes: AesUsage, kt: AesKeyType) -> KeyUsage {
    KeyUsage {
        tdes_variant,
        tdes_data_owf: owf,
        aes_usage: aes,
        aes_key_type: kt,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tdes_dukpt_round_trips(
        bdk in any::<[u8; 16]>(),
        iksn in any::<[u8; 8]>(),
        counter in 1u32..=0x1F_FFFF,
        variant in tdes_variant(),
        owf in any::<bool>(),
        plain in plaintext(),
    ) {
        let bdk_bytes = bdk;
        let bdk = Bdk::from_slice(Scheme::Tdes, &bdk).unwrap();
        let mut k = [0u8; 10];
        k[..8].copy_from_slice(&iksn);
        let ksn = Ksn::Tdes(k).with_counter(counter);
        prop_assert_eq!(ksn.counter(), counter);
        let u = usage(variant, owf, AesUsage::DataEncrypt, AesKeyType::Aes128);
        let reference = reference_ct(&bdk_bytes, &ksn, &u, &plain);
        round_trip(&bdk, &ksn, &u, &reference, &plain)?;
    }

    #[test]
    fn aes128_dukpt_round_trips(
        bdk in any::<[u8; 16]>(),
        iksn in any::<[u8; 8]>(),
        counter in 1u32..,
        aes in aes_usage(),
        plain in plaintext(),
    ) {
        let bdk_bytes = bdk;
        let bdk = Bdk::from_slice(Scheme::Aes128, &bdk).unwrap();
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&iksn);
        let ksn = Ksn::Aes(k).with_counter(counter);
        prop_assert_eq!(ksn.counter(), counter);
        let u = usage(TdesVariant::Pin, false, aes, AesKeyType::Aes128);
        let reference = reference_ct(&bdk_bytes, &ksn, &u, &plain);
        round_trip(&bdk, &ksn, &u, &reference, &plain)?;
        // An AES-256 working key cannot come from an AES-128 BDK.
        let too_strong = usage(TdesVariant::Pin, false, aes, AesKeyType::Aes256);
        prop_assert_eq!(
            dukpt::working_key(&bdk, &ksn, &too_strong).unwrap_err(),
            dukpt::DukptError::KeyTooStrong
        );
    }

    #[test]
    fn aes256_dukpt_round_trips(
        bdk in any::<[u8; 32]>(),
        iksn in any::<[u8; 8]>(),
        counter in 1u32..,
        aes in aes_usage(),
        key_type in prop::sample::select(vec![AesKeyType::Aes128, AesKeyType::Aes256]),
        plain in plaintext(),
    ) {
        let bdk_bytes = bdk;
        let bdk = Bdk::from_slice(Scheme::Aes256, &bdk).unwrap();
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&iksn);
        let ksn = Ksn::Aes(k).with_counter(counter);
        let u = usage(TdesVariant::Pin, false, aes, key_type);
        let reference = reference_ct(&bdk_bytes, &ksn, &u, &plain);
        round_trip(&bdk, &ksn, &u, &reference, &plain)?;
    }
}

// ---------------------------------------------------------------------------------------------
// KSN parsing

/// Whether `s` is one of the accepted KSN forms: 16, 20 or 24 hex digits.
fn is_ksn_hex(s: &str) -> bool {
    matches!(s.len(), 16 | 20 | 24) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_ksn(s: &str) -> Result<(), TestCaseError> {
    match Ksn::parse_hex(s) {
        Ok(k) => {
            prop_assert!(is_ksn_hex(s), "accepted {:?}", s);
            let want = if s.len() == 16 {
                format!("FFFF{}", s.to_ascii_uppercase())
            } else {
                s.to_ascii_uppercase()
            };
            prop_assert_eq!(k.to_hex(), want);
        }
        Err(_) => prop_assert!(!is_ksn_hex(s), "refused {:?}", s),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ksn_parse_hex_never_panics_on_arbitrary_strings(s in any::<String>()) {
        check_ksn(&s)?;
    }

    #[test]
    fn ksn_parse_hex_never_panics_on_near_hex_strings(
        // Mostly hex, with multi-byte characters, so the byte length often is 16, 20 or 24.
        s in "[0-9a-fA-F]{0,26}|[0-9A-Fé中 ]{4,24}|[0-9A-F]{14,22}[é中g]",
    ) {
        check_ksn(&s)?;
    }
}
