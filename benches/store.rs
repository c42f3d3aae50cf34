//! Terminal store (sled, in a tempdir, opened as `SledStore::open` does in production):
//! registration of a new terminal through `store::update` (get miss + compare-and-swap),
//! the same followed by `flush()` (durable: one fsync per registration, i.e. no group commit),
//! and `get` of an existing record out of 10,000.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use snapgate::store::{update, SledStore, StoreError, TerminalId, TerminalRecord, TerminalStore};
use snapgate::token::TokenId;
use std::hint::black_box;

const SERVICE_KEY: &str = "6B2866C8FD500001";
const PRELOAD: u64 = 10_000;

fn record(n: u64) -> (TerminalId, TerminalRecord) {
    let serial = format!("B{n:09}");
    let rec = TerminalRecord {
        merchant_profile_id: "MP1".into(),
        device_serial: serial.clone(),
        service_key: SERVICE_KEY.into(),
        vendor_id: "A96A5D589D".into(),
        service_id: None,
        bdk_id: "ansi-test-tdes".into(),
        device_id: "TFFFF9876543210E0".into(),
        registered_at_ms: 1_790_000_000_000,
        token_id: TokenId([0xA5; 16]),
        issued_at_ms: 1_790_000_000_000,
        expires_at_ms: 1_797_776_000_000,
        refresh_due_at_ms: 1_792_592_000_000,
        refresh_flag: false,
        pending: None,
        last_counter: 1,
        revoked: false,
        recent: Vec::new(),
    };
    (TerminalId::new(SERVICE_KEY, &serial), rec)
}

fn register(store: &SledStore, (id, rec): (TerminalId, TerminalRecord)) {
    update(store, &id, |cur| {
        assert!(cur.is_none());
        Ok::<_, StoreError>((Some(rec.clone()), ()))
    })
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    for n in 0..PRELOAD {
        register(&store, record(n));
    }
    store.flush().unwrap();

    let mut g = c.benchmark_group("store");
    let mut next = PRELOAD;
    let mut fresh = || {
        next += 1;
        record(next)
    };
    g.bench_function("register", |b| {
        b.iter_batched(&mut fresh, |r| register(&store, r), BatchSize::SmallInput)
    });
    g.bench_function("register_durable", |b| {
        b.iter_batched(
            &mut fresh,
            |r| {
                register(&store, r);
                store.flush().unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    let ids: Vec<TerminalId> = (0..PRELOAD).map(|n| record(n).0).collect();
    let mut i = 0;
    g.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            store.get(black_box(&ids[i])).unwrap().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
