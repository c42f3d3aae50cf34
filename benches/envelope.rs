//! SOAP request reading: `soap::parse_envelope` of a RegisterTerminal envelope and of an
//! AuthorizeAndCapture envelope carrying a real TerminalAccessToken, under the default limits
//! (`config::Limits::default()`). Throughput is in bytes; the target is <= 10 us per 2 KB.

use chrono::{DateTime, Duration};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use snapgate::config::{Limits, ANSI_TEST_BDK, DEV_SERVICE_KEY, DEV_VENDOR_ID};
use snapgate::cws::soap::{parse_envelope, XmlLimits};
use snapgate::dukpt::{
    encrypt_cbc, working_key, AesKeyType, AesUsage, Bdk, KeyUsage, Ksn, Scheme, TdesVariant,
};
use snapgate::token::{issue, Claims, KeyRing, SigningKey, TokenId};
use std::hint::black_box;

const KSN: &str = "FFFF9876543210E00001";
const TRACK_CT: &str =
    "87936F09AE06386BA4CD81ADFF7DF0FA5AC1B28EF9F7B7075E415545F9B9095C0AC5FA12B9905325";

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut s = template.to_owned();
    for (name, value) in values {
        s = s.replace(&format!("{{{{{name}}}}}"), value);
    }
    assert!(!s.contains("{{"), "unfilled placeholder");
    s
}

fn register_terminal() -> String {
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_TEST_BDK).unwrap();
    let ksn = Ksn::parse_hex(KSN).unwrap();
    let usage = KeyUsage {
        tdes_variant: TdesVariant::Pin,
        tdes_data_owf: false,
        aes_usage: AesUsage::DataEncrypt,
        aes_key_type: AesKeyType::Aes128,
    };
    let secret = hex::encode_upper(encrypt_cbc(
        &working_key(&bdk, &ksn, &usage).unwrap(),
        b"MP1|B1234567",
    ));
    fill(
        include_str!("../fixtures/register_terminal.xml"),
        &[
            ("SERVICE_KEY", DEV_SERVICE_KEY),
            ("VENDOR_ID", DEV_VENDOR_ID),
            ("ENCRYPTED_SECRET", &secret),
            ("KSN", KSN),
        ],
    )
}

fn authorize_and_capture() -> String {
    let ring = KeyRing::new(
        vec![SigningKey::new("k2026new", [0x22; 32]).unwrap()],
        "k2026new",
    )
    .unwrap();
    let t0 = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let token = issue(
        &ring,
        &Claims {
            token_id: TokenId([0xA5; 16]),
            issuer: "snapgate".into(),
            issued_at: t0,
            not_on_or_after: t0 + Duration::days(90),
            service_key: DEV_SERVICE_KEY.into(),
            merchant_profile_id: "MP1".into(),
            device_serial: "B1234567".into(),
            device_id: Ksn::parse_hex(KSN).unwrap().device_id(),
        },
    );
    fill(
        include_str!("../fixtures/authorize_and_capture.xml"),
        &[
            ("TOKEN", &token),
            ("TRACK", TRACK_CT),
            ("KSN", KSN),
            ("AMOUNT", "10.00"),
        ],
    )
}

fn bench(c: &mut Criterion) {
    let l = Limits::default();
    let limits = XmlLimits {
        max_depth: l.max_xml_depth,
        max_elements: l.max_xml_elements,
        max_attributes: l.max_xml_attributes,
    };
    let mut g = c.benchmark_group("envelope");
    for (name, doc) in [
        ("register_terminal", register_terminal()),
        ("authorize_and_capture", authorize_and_capture()),
    ] {
        parse_envelope(doc.as_bytes(), &limits).unwrap();
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_function(format!("{name}/{}B", doc.len()), |b| {
            b.iter(|| parse_envelope(black_box(doc.as_bytes()), &limits).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
