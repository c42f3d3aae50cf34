//! The profile, pairing and Cloud Connector stores behave the same on both engines: each test
//! runs its body against a sled folder and against a fresh PostgreSQL database (a real server
//! the harness starts), through `Engine`, the way the server opens them. The PostgreSQL runs
//! also check what only a shared engine can show: two nodes (two pools) racing for one setup
//! code get it once, and a `db copy` brings these records over from sled.

mod common;
use common::*;

use snapgate::config::{StoreBackend, StoreConfig};
use snapgate::store::connector::{ClientRecord, ClientRole, DeviceRecord, Scope};
use snapgate::store::engine::Engine;
use snapgate::store::pairing::{CodeRecord, IssuedCert};
use snapgate::store::postgres::StoreUrl;
use snapgate::store::profiles::{seed_dev, MerchantProfile};
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

/// Both engines, each on a fresh place; the folder lives as long as the engine is used.
fn engines() -> Vec<(&'static str, Engine, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sled = StoreConfig {
        path: dir.path().join("db"),
        ..StoreConfig::default()
    };
    let pg = pg_config(&fresh_database());
    vec![
        ("sled", Engine::open(&sled).unwrap(), dir),
        (
            "postgres",
            Engine::open(&pg).unwrap(),
            tempfile::tempdir().unwrap(),
        ),
    ]
}

fn pg_config(url: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(StoreUrl::new(url)),
        migrate: true,
        ..StoreConfig::default()
    }
}

fn merchant(sk: &str, id: &str) -> MerchantProfile {
    MerchantProfile {
        service_key: sk.into(),
        merchant_profile_id: id.into(),
        name: format!("m {id}"),
        service_id: None,
        active: true,
        device_serials: vec!["S1".into()],
        created_at_ms: 1,
    }
}

#[test]
fn profiles_are_scoped_ordered_and_application_ids_are_fresh() {
    for (name, e, _dir) in engines() {
        let p = e.profiles().unwrap();
        seed_dev(&*p, "SK1", 1).unwrap();
        p.put_merchant(&merchant("SK2", "B")).unwrap();
        p.put_merchant(&merchant("SK2", "A")).unwrap();
        let ids = |sk: Option<&str>| -> Vec<String> {
            p.merchants(sk)
                .unwrap()
                .into_iter()
                .map(|m| format!("{}/{}", m.service_key, m.merchant_profile_id))
                .collect()
        };
        assert_eq!(ids(Some("SK2")), ["SK2/A", "SK2/B"], "{name}");
        assert_eq!(
            ids(None),
            ["SK1/MP1", "SK1/MP2", "SK2/A", "SK2/B"],
            "{name}"
        );
        let mut changed = merchant("SK2", "A");
        changed.active = false;
        p.put_merchant(&changed).unwrap();
        assert!(!p.merchant("SK2", "A").unwrap().unwrap().active, "{name}");
        assert!(p.delete_merchant("SK2", "A").unwrap(), "{name}");
        assert!(!p.delete_merchant("SK2", "A").unwrap(), "{name}");
        assert_eq!(p.merchant("SK2", "A").unwrap(), None, "{name}");
        let data = BTreeMap::from([("ApplicationName".to_owned(), "x".to_owned())]);
        let a1 = p.add_application(data.clone(), 2).unwrap();
        let a2 = p.add_application(data.clone(), 3).unwrap();
        assert_ne!(a1, a2, "{name}");
        assert!(a1.parse::<u64>().unwrap() >= 100_000, "{name}: {a1}");
        assert_eq!(p.application(&a2).unwrap().unwrap().data, data, "{name}");
        assert!(
            p.application("14560").unwrap().is_some(),
            "{name}: dev sample"
        );
        assert!(p.delete_application(&a1).unwrap(), "{name}");
        assert_eq!(p.application(&a1).unwrap(), None, "{name}");
    }
}

fn code(n: u8, slot: &str, expires_ms: i64) -> CodeRecord {
    CodeRecord {
        hash: [n; 32],
        slot: slot.into(),
        terminal: Some("T1".into()),
        created_ms: 0,
        expires_ms,
        failures: 0,
    }
}

fn cert(pos: &str, n: u8) -> IssuedCert {
    IssuedCert {
        pos_id: pos.into(),
        serial: format!("{n:02x}"),
        fingerprint: [n; 32],
        terminal: None,
        issued_ms: 0,
        not_after_ms: 10,
        from_csr: false,
    }
}

#[test]
fn pairing_codes_are_single_use_per_slot_and_wrong_tries_spend_them() {
    for (name, e, _dir) in engines() {
        let s = e.pairing().unwrap();
        assert_eq!(s.put_code(&code(1, "operator", 1_000)).unwrap(), None);
        assert_eq!(s.put_code(&code(2, "t/1", 1_000)).unwrap(), None);
        // A new code for a slot replaces (and returns) the old one.
        assert_eq!(
            s.put_code(&code(3, "operator", 1_000)).unwrap(),
            Some(code(1, "operator", 1_000)),
            "{name}"
        );
        assert_eq!(s.take_code(&[1; 32]).unwrap(), None, "{name}");
        // Wrong tries: charged to one slot, spent at the limit.
        assert_eq!(s.charge_failure(Some("t/1"), 3, 0).unwrap(), 0, "{name}");
        assert_eq!(s.charge_failure(Some("t/1"), 3, 0).unwrap(), 0, "{name}");
        let t1 = s.codes().unwrap();
        let t1 = t1.iter().find(|c| c.slot == "t/1").unwrap();
        assert_eq!(t1.failures, 2, "{name}");
        assert_eq!(s.charge_failure(Some("t/1"), 3, 0).unwrap(), 1, "{name}");
        assert_eq!(s.take_code(&[2; 32]).unwrap(), None, "{name}: spent");
        // All slots, and an expired code goes on the next charge.
        assert_eq!(s.charge_failure(None, 10, 1_000).unwrap(), 1, "{name}");
        assert!(s.codes().unwrap().is_empty(), "{name}");
        // Single use.
        s.put_code(&code(4, "operator", 1_000)).unwrap();
        assert_eq!(
            s.take_code(&[4; 32]).unwrap(),
            Some(code(4, "operator", 1_000))
        );
        assert_eq!(s.take_code(&[4; 32]).unwrap(), None, "{name}");
        s.flush().unwrap();
    }
}

#[test]
fn a_replaced_or_revoked_certificate_is_denied() {
    for (name, e, _dir) in engines() {
        let s = e.pairing().unwrap();
        assert_eq!(s.record_issue(&cert("P1", 1), "repaired", 5).unwrap(), None);
        assert_eq!(
            s.record_issue(&cert("P1", 2), "repaired", 6).unwrap(),
            Some(cert("P1", 1)),
            "{name}"
        );
        assert!(s.is_denied(&[1; 32]).unwrap(), "{name}");
        assert!(!s.is_denied(&[2; 32]).unwrap(), "{name}");
        assert_eq!(s.issued("P1").unwrap(), Some(cert("P1", 2)), "{name}");
        s.record_issue(&cert("P0", 3), "repaired", 6).unwrap();
        let pos: Vec<String> = s
            .list_issued()
            .unwrap()
            .into_iter()
            .map(|c| c.pos_id)
            .collect();
        assert_eq!(pos, ["P0", "P1"], "{name}");
        assert_eq!(s.revoke("P1", 7).unwrap(), Some(cert("P1", 2)), "{name}");
        assert_eq!(s.revoke("P1", 7).unwrap(), None, "{name}");
        assert!(s.is_denied(&[2; 32]).unwrap(), "{name}");
        let reasons: Vec<(String, String)> = s
            .denied()
            .unwrap()
            .into_iter()
            .map(|d| (d.serial, d.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("01".to_owned(), "repaired".to_owned()),
                ("02".to_owned(), "revoked".to_owned())
            ],
            "{name}"
        );
    }
}

fn scope() -> Scope {
    Scope {
        merchant: "M".into(),
        store: Some("S1".into()),
        tsn: None,
    }
}

fn device(tsn: &str, node: &str) -> DeviceRecord {
    DeviceRecord {
        tsn: tsn.into(),
        client_id: "c1".into(),
        owner: scope(),
        node: Some(node.into()),
        online: true,
        last_seen_ms: 1,
    }
}

#[test]
fn connector_clients_and_presence_page_and_forget_only_that_node() {
    for (name, e, _dir) in engines() {
        let s = e.connector().unwrap();
        let c = ClientRecord {
            id: "c1".into(),
            domain: "test".into(),
            secret_hash: "$argon2id$x".into(),
            role: ClientRole::Both,
            scope: scope(),
            created_at_ms: 1,
        };
        s.put_client(&c).unwrap();
        assert_eq!(s.get_client("c1").unwrap(), Some(c.clone()), "{name}");
        assert_eq!(s.list_clients().unwrap(), vec![c], "{name}");
        for (tsn, node) in [("C", "n1"), ("A", "n1"), ("B", "n2")] {
            s.put_device(&device(tsn, node)).unwrap();
        }
        let page = |after: Option<&str>| -> Vec<String> {
            s.list_devices(after, 2)
                .unwrap()
                .into_iter()
                .map(|d| d.tsn)
                .collect()
        };
        assert_eq!(page(None), ["A", "B"], "{name}");
        assert_eq!(page(Some("B")), ["C"], "{name}");
        assert_eq!(s.forget_node("n1").unwrap(), 2, "{name}");
        assert!(!s.get_device("A").unwrap().unwrap().online, "{name}");
        assert_eq!(s.get_device("A").unwrap().unwrap().node, None, "{name}");
        assert!(s.get_device("B").unwrap().unwrap().online, "{name}");
        assert!(s.remove_client("c1").unwrap(), "{name}");
        assert!(!s.remove_client("c1").unwrap(), "{name}");
    }
}

/// Two nodes (two pools on one database) try the same code at once, many times: it is
/// handed out exactly once each time.
#[test]
fn of_two_nodes_racing_for_a_setup_code_exactly_one_gets_it() {
    let url = fresh_database();
    let nodes: Vec<_> = (0..2)
        .map(|_| Engine::open(&pg_config(&url)).unwrap().pairing().unwrap())
        .collect();
    for round in 0..20u8 {
        nodes[0].put_code(&code(round, "operator", 1_000)).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let got: Vec<bool> = std::thread::scope(|sc| {
            let hs: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let b = barrier.clone();
                    sc.spawn(move || {
                        b.wait();
                        n.take_code(&[round; 32]).unwrap().is_some()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().filter(|g| **g).count(), 1, "round {round}");
    }
}

/// `db copy` brings profiles, issued certificates, the deny list and connector clients from a
/// sled folder, keeps what PostgreSQL already has, and new application ids continue past the
/// copied ones.
#[test]
fn db_copy_brings_the_other_services_records_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let sled = snapgate::store::SledStore::open(&dir.path().join("db")).unwrap();
    let src = Engine::Sled(sled.clone());
    let p = src.profiles().unwrap();
    seed_dev(&*p, "SK1", 1).unwrap();
    let copied_app = p
        .add_application(BTreeMap::from([("A".into(), "1".into())]), 1)
        .unwrap();
    let pairing = src.pairing().unwrap();
    pairing.record_issue(&cert("P1", 1), "repaired", 1).unwrap();
    pairing.record_issue(&cert("P1", 2), "repaired", 2).unwrap();
    src.connector()
        .unwrap()
        .put_client(&ClientRecord {
            id: "c1".into(),
            domain: "d".into(),
            secret_hash: "$argon2id$x".into(),
            role: ClientRole::Pos,
            scope: scope(),
            created_at_ms: 1,
        })
        .unwrap();
    // A terminal with recent sales: they come along with its record.
    let tid = snapgate::store::TerminalId::new(SERVICE_KEY, "T1");
    let rec = sample_record("T1");
    use snapgate::store::TerminalStore;
    assert!(sled.compare_and_swap(&tid, None, &rec).unwrap());
    let url = fresh_database();
    let Engine::Postgres(pg) = Engine::open(&pg_config(&url)).unwrap() else {
        unreachable!()
    };
    let first = snapgate::store::copy::copy_sled_to_postgres(&sled, &pg).unwrap();
    assert_eq!(pg.get(&tid).unwrap(), Some(rec));
    // 2 merchants + 2 applications + 1 certificate + 1 denied + 1 client.
    assert_eq!((first.others_read, first.others_inserted), (7, 7));
    let again = snapgate::store::copy::copy_sled_to_postgres(&sled, &pg).unwrap();
    assert_eq!((again.others_read, again.others_inserted), (7, 0));
    let dst = Engine::Postgres(pg);
    let dp = dst.profiles().unwrap();
    assert_eq!(dp.merchants(Some("SK1")).unwrap().len(), 2);
    assert!(dp.application(&copied_app).unwrap().is_some());
    let fresh = dp.add_application(BTreeMap::new(), 2).unwrap();
    assert!(
        fresh.parse::<u64>().unwrap() > copied_app.parse::<u64>().unwrap(),
        "{fresh} after {copied_app}"
    );
    let dpair = dst.pairing().unwrap();
    assert_eq!(dpair.issued("P1").unwrap(), Some(cert("P1", 2)));
    assert!(dpair.is_denied(&[1; 32]).unwrap());
    assert!(dst.connector().unwrap().get_client("c1").unwrap().is_some());
}

/// The presence heartbeat's write and the serial lookup a claim by serial alone uses.
#[test]
fn touch_device_is_conditional_and_devices_with_serial_finds_every_tsn_of_a_serial() {
    for (name, e, _dir) in engines() {
        let s = e.connector().unwrap();
        for (tsn, node) in [
            ("PAX/A920/123", "n1"),
            ("123", "n2"),
            ("VRF/P400/123", "n1"),
            ("PAX/A920/1234", "n1"),
        ] {
            let mut d = device(tsn, node);
            d.online = false;
            s.put_device(&d).unwrap();
        }
        assert!(s.touch_device("PAX/A920/123", "n1", 50).unwrap(), "{name}");
        let d = s.get_device("PAX/A920/123").unwrap().unwrap();
        assert!(d.online && d.last_seen_ms == 50, "{name}: {d:?}");
        // Another node's device, or none: nothing changes.
        assert!(!s.touch_device("123", "n1", 60).unwrap(), "{name}");
        assert!(!s.get_device("123").unwrap().unwrap().online, "{name}");
        assert!(!s.touch_device("nobody", "n1", 60).unwrap(), "{name}");
        let tsns = |serial: &str, limit| -> Vec<String> {
            s.devices_with_serial(serial, limit)
                .unwrap()
                .into_iter()
                .map(|d| d.tsn)
                .collect()
        };
        assert_eq!(
            tsns("123", 10),
            ["123", "PAX/A920/123", "VRF/P400/123"],
            "{name}"
        );
        assert_eq!(tsns("123", 2), ["123", "PAX/A920/123"], "{name}");
        assert_eq!(tsns("1234", 10), ["PAX/A920/1234"], "{name}");
        assert!(tsns("12", 10).is_empty(), "{name}");
    }
}
