//! `token::verify` with a fixed key ring on arbitrary input: it must return (never panic), and
//! nothing but the one token this ring issued for the fixed claims may verify.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use snapgate::token::{self, Claims, KeyRing, SigningKey, TokenId};
use std::sync::OnceLock;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

fn fixed() -> &'static (KeyRing, String) {
    static FIXED: OnceLock<(KeyRing, String)> = OnceLock::new();
    FIXED.get_or_init(|| {
        let ring = KeyRing::new(
            vec![
                SigningKey::new("fuzzkey1", [0x11; 32]).unwrap(),
                SigningKey::new("fuzzkey2", [0x22; 32]).unwrap(),
            ],
            "fuzzkey1",
        )
        .unwrap();
        let claims = Claims {
            token_id: TokenId([0xAB; 16]),
            issuer: "snapgate".into(),
            issued_at: t0(),
            not_on_or_after: t0() + Duration::days(90),
            service_key: "6B2866C8FD500001".into(),
            merchant_profile_id: "MP1".into(),
            device_serial: "B1234567".into(),
            device_id: "TFFFF9876543210E0".into(),
        };
        let tok = token::issue(&ring, &claims);
        (ring, tok)
    })
}

fuzz_target!(|data: &[u8]| {
    let (ring, genuine) = fixed();
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if token::verify(ring, s, t0(), Duration::seconds(60)).is_ok() {
        // Surrounding whitespace is trimmed; anything else must be the genuine token.
        assert_eq!(s.trim(), genuine.as_str(), "a forged token verified: {s:?}");
    }
});
