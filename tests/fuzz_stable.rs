//! The fuzz targets' properties on stable Rust, for CI (issue 13 point 8). cargo-fuzz needs a
//! nightly toolchain, which CI does not have; these tests feed the same functions a bounded,
//! seeded stream of inputs (mutations of valid inputs plus random bytes) and check the same
//! properties as `fuzz/fuzz_targets/*.rs`. They are not coverage-guided: they keep the
//! properties exercised on every run; real fuzzing stays `cargo +nightly fuzz run` (fuzz/README).

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snapgate::cws::soap::{self, Element, XmlLimits, MAX_NAMESPACE_BYTES};
use snapgate::dukpt::Ksn;
use snapgate::token::{self, Claims, KeyRing, SigningKey, TokenId};

const ROUNDS: usize = 3_000;

/// One random edit of `seed`: flip, insert, delete or truncate; sometimes plain random bytes.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.gen_range(0..6) {
        0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
        1 if !b.is_empty() => {
            b.truncate(rng.gen_range(0..b.len()));
            b
        }
        _ => {
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=b.len());
                match rng.gen_range(0..3) {
                    0 if at < b.len() => b[at] ^= 1 << rng.gen_range(0..8),
                    1 => b.insert(at, *b"<>/=\"':& ?!x".get(rng.gen_range(0..12)).unwrap()),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            b
        }
    }
}

const LIMITS: XmlLimits = XmlLimits {
    max_depth: 32,
    max_elements: 2_000,
    max_attributes: 32,
};

fn walk(e: &Element, depth: usize, count: &mut usize) {
    assert!(depth <= LIMITS.max_depth);
    assert!(e.ns.as_deref().map_or(0, str::len) <= MAX_NAMESPACE_BYTES);
    *count += 1;
    for c in &e.children {
        walk(c, depth + 1, count);
    }
}

#[test]
fn envelope_target_on_seeded_mutations() {
    let seed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/authorize_and_capture.xml"
    ))
    .unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let mut accepted = 0;
    for _ in 0..ROUNDS {
        let input = mutate(&mut rng, &seed);
        if let Ok(env) = soap::parse_envelope(&input, &LIMITS) {
            accepted += 1;
            let mut count = 2;
            if let Some(h) = &env.header {
                walk(h, 2, &mut count);
            }
            walk(&env.operation, 3, &mut count);
            assert!(count <= LIMITS.max_elements);
        }
    }
    // The seed is a valid envelope: some mutations (in text) must still parse.
    assert!(accepted > 0 && accepted < ROUNDS, "{accepted}");
}

#[test]
fn token_verify_target_on_seeded_mutations() {
    let t0 = DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap();
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
        issued_at: t0,
        not_on_or_after: t0 + Duration::days(90),
        service_key: "6B2866C8FD500001".into(),
        merchant_profile_id: "MP1".into(),
        device_serial: "B1234567".into(),
        device_id: "TFFFF9876543210E0".into(),
    };
    let genuine = token::issue(&ring, &claims);
    assert!(token::verify(&ring, &genuine, t0, Duration::seconds(60)).is_ok());
    let mut rng = StdRng::seed_from_u64(13);
    for _ in 0..ROUNDS {
        let input = mutate(&mut rng, genuine.as_bytes());
        let Ok(s) = std::str::from_utf8(&input) else {
            continue;
        };
        if token::verify(&ring, s, t0, Duration::seconds(60)).is_ok() {
            assert_eq!(s.trim(), genuine, "a forged token verified: {s:?}");
        }
    }
}

#[test]
fn ksn_hex_target_on_seeded_inputs() {
    let mut rng = StdRng::seed_from_u64(13);
    let seeds: [&[u8]; 2] = [b"FFFF9876543210E00001", b"123456789012345600000001"];
    for i in 0..ROUNDS {
        let input = mutate(&mut rng, seeds[i % 2]);
        let Ok(s) = std::str::from_utf8(&input) else {
            continue;
        };
        if let Ok(ksn) = Ksn::parse_hex(s) {
            assert_eq!(Ksn::parse_hex(&ksn.to_hex()), Ok(ksn));
            let _ = (ksn.key_set_id(), ksn.device_id(), ksn.counter_is_standard());
        }
    }
}
