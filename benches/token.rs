//! TerminalAccessToken: `token::issue` (build the SAML assertion, HMAC-SHA256, base64) and
//! `token::verify` (base64 decode, trailer check, HMAC, read the claims back, validity window)
//! of a realistic token as RegisterTerminal issues it. Target: verify <= 2 us.

use chrono::{DateTime, Duration};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use snapgate::dukpt::Ksn;
use snapgate::token::{issue, verify, Claims, KeyRing, SigningKey, TokenId};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    // Two keys, as during a rotation; the active one signs.
    let ring = KeyRing::new(
        vec![
            SigningKey::new("k2025old", [0x11; 32]).unwrap(),
            SigningKey::new("k2026new", [0x22; 32]).unwrap(),
        ],
        "k2026new",
    )
    .unwrap();
    let t0 = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let claims = Claims {
        token_id: TokenId([0xA5; 16]),
        issuer: "snapgate".into(),
        issued_at: t0,
        not_on_or_after: t0 + Duration::days(90),
        service_key: "6B2866C8FD500001".into(),
        merchant_profile_id: "MP1".into(),
        device_serial: "B1234567".into(),
        device_id: Ksn::parse_hex("FFFF9876543210E00001").unwrap().device_id(),
    };
    let token = issue(&ring, &claims);
    let now = t0 + Duration::days(1);
    let skew = Duration::seconds(300);
    assert!(verify(&ring, &token, now, skew).is_ok());

    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Bytes(token.len() as u64));
    g.bench_function("issue", |b| b.iter(|| issue(&ring, black_box(&claims))));
    g.bench_function("verify", |b| {
        b.iter(|| verify(&ring, black_box(&token), now, skew).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
