//! The PostgreSQL engine against a real PostgreSQL: the same `TerminalStore` semantics as sled,
//! exactly-once across two stores (two nodes) on one database, migrations, and an outage.

mod common;
use common::*;

use snapgate::store::postgres::{self as pg, PgSettings, PgStore};
use snapgate::store::{self, StoreError, TerminalId, TerminalStore};
use snapgate::token::TokenId;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn settings(url: &str) -> PgSettings {
    PgSettings {
        url: url.to_owned(),
        pool_size: 4,
        statement_timeout: Duration::from_secs(5),
        tls_ca_file: None,
    }
}

fn open(url: &str) -> PgStore {
    let s = PgStore::open(&settings(url)).unwrap();
    pg::migrate(s.pool()).unwrap();
    s
}

#[test]
fn compare_and_swap_get_and_list_behave_as_on_sled() {
    let s = open(&fresh_database());
    let id = TerminalId::new(SERVICE_KEY, "B1");
    let a = sample_record("B1");
    let mut b = a.clone();
    b.last_counter = 9;
    assert_eq!(s.get(&id).unwrap(), None);
    assert!(s.compare_and_swap(&id, None, &a).unwrap());
    assert!(
        !s.compare_and_swap(&id, None, &b).unwrap(),
        "already present"
    );
    assert!(s.compare_and_swap(&id, Some(&a), &b).unwrap());
    assert!(
        !s.compare_and_swap(&id, Some(&a), &a).unwrap(),
        "stale expectation"
    );
    assert_eq!(s.get(&id).unwrap(), Some(b.clone()));
    // Absent but expected present: refused, nothing written.
    let other = TerminalId::new(SERVICE_KEY, "B2");
    assert!(!s.compare_and_swap(&other, Some(&a), &a).unwrap());
    assert_eq!(s.get(&other).unwrap(), None);
    // list pages in key order, like sled's byte order.
    let mut ids = vec![id];
    for i in 0..5 {
        let serial = format!("L{i}");
        let tid = TerminalId::new(SERVICE_KEY, &serial);
        assert!(s
            .compare_and_swap(&tid, None, &sample_record(&serial))
            .unwrap());
        ids.push(tid);
    }
    ids.sort();
    let first = s.list(None, 4).unwrap();
    let rest = s.list(Some(&first[3].0), 10).unwrap();
    let listed: Vec<_> = first.iter().chain(&rest).map(|e| e.0).collect();
    assert_eq!(listed, ids);
    assert_eq!(s.len(), 6);
    s.flush().unwrap();
}

/// Two stores on one database are two nodes: racing read-modify-writes lose nothing.
#[test]
fn updates_from_two_nodes_never_lose_each_other() {
    let url = fresh_database();
    let nodes = [Arc::new(open(&url)), Arc::new(open(&url))];
    let id = TerminalId::new(SERVICE_KEY, "RACE");
    assert!(nodes[0]
        .compare_and_swap(&id, None, &sample_record("RACE"))
        .unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = nodes[t % 2].clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store::update(&*s, &id, |cur| {
                        let mut r = cur.unwrap().clone();
                        r.last_counter += 1;
                        Ok::<_, StoreError>((Some(r), ()))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(nodes[1].get(&id).unwrap().unwrap().last_counter, 1 + 8 * 25);
}

/// The KSN guard and a token promotion across nodes: of N racers offering the same counter (or
/// promoting the same pending token), exactly one wins.
#[test]
fn one_counter_and_one_promotion_win_across_nodes() {
    let url = fresh_database();
    let nodes = [Arc::new(open(&url)), Arc::new(open(&url))];
    let id = TerminalId::new(SERVICE_KEY, "ONCE");
    let mut r = sample_record("ONCE");
    r.pending = Some(store::PendingToken {
        token_id: TokenId([7; 16]),
        issued_at_ms: 10,
        expires_at_ms: 20,
    });
    r.refresh_flag = true;
    assert!(nodes[0].compare_and_swap(&id, None, &r).unwrap());
    for counter in 2..12u32 {
        let barrier = Arc::new(Barrier::new(6));
        let racers: Vec<_> = (0..6)
            .map(|t| {
                let s = nodes[t % 2].clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store::update(&*s, &id, |cur| {
                        let cur = cur.unwrap();
                        if cur.last_counter >= counter {
                            return Ok::<_, StoreError>((None, false)); // replay: refused
                        }
                        let mut n = cur.clone();
                        n.last_counter = counter;
                        // The first use of the renewed token promotes it, once.
                        if let Some(p) = n.pending.take() {
                            n.token_id = p.token_id;
                            n.refresh_flag = false;
                        }
                        Ok((Some(n), true))
                    })
                    .unwrap()
                })
            })
            .collect();
        let wins = racers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1, "counter {counter}");
    }
    let end = nodes[1].get(&id).unwrap().unwrap();
    assert_eq!(end.last_counter, 11);
    assert_eq!(end.token_id, TokenId([7; 16]));
    assert!(end.pending.is_none() && !end.refresh_flag);
}

#[test]
fn migrate_is_idempotent_and_refuses_a_newer_schema() {
    let url = fresh_database();
    let s = PgStore::open(&settings(&url)).unwrap();
    assert_eq!(pg::schema_version(s.pool()).unwrap(), 0);
    assert!(matches!(
        pg::check_schema(s.pool()),
        Err(StoreError::Schema(_))
    ));
    let latest = pg::latest_version();
    assert_eq!(pg::migrate(s.pool()).unwrap(), (0, latest));
    assert_eq!(pg::migrate(s.pool()).unwrap(), (latest, latest));
    pg::check_schema(s.pool()).unwrap();
    shared_postgres().psql(
        &url,
        &format!(
            "INSERT INTO snapgate_schema (version, name) VALUES ({}, 'from the future')",
            latest + 1
        ),
    );
    let e = pg::migrate(s.pool()).unwrap_err().to_string();
    assert!(e.contains("newer than this binary"), "{e}");
    assert!(pg::check_schema(s.pool()).is_err());
}

/// Called inline from a current-thread runtime (as handlers do under #[tokio::test]): no panic,
/// no deadlock.
#[tokio::test]
async fn works_from_a_current_thread_runtime() {
    let s = open(&fresh_database());
    let id = TerminalId::new(SERVICE_KEY, "RT");
    assert!(s.compare_and_swap(&id, None, &sample_record("RT")).unwrap());
    assert_eq!(s.get(&id).unwrap(), Some(sample_record("RT")));
    s.ping().unwrap();
}

/// PostgreSQL stopped: calls fail with `Unavailable` or `Database` within the bound, never hang;
/// started again: the same store works again by itself, and what was committed is there.
#[test]
fn an_outage_fails_within_the_timeout_and_the_store_recovers() {
    let mut server = Postgres::start();
    let url = server.fresh_database();
    let mut st = settings(&url);
    st.statement_timeout = Duration::from_millis(1500);
    let s = PgStore::open(&st).unwrap();
    pg::migrate(s.pool()).unwrap();
    let id = TerminalId::new(SERVICE_KEY, "OUT");
    assert!(s
        .compare_and_swap(&id, None, &sample_record("OUT"))
        .unwrap());
    server.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let e = s.get(&id).unwrap_err();
        assert!(
            matches!(e, StoreError::Unavailable(_) | StoreError::Database(_)),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_millis(1500 + 500), "bounded");
        assert!(s.ping().is_err());
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.ping().is_err() {
        assert!(Instant::now() < deadline, "did not reconnect");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every connection of the pool works again: none answers with a stale socket.
    for _ in 0..16 {
        assert_eq!(s.get(&id).unwrap(), Some(sample_record("OUT")));
    }
}

#[test]
fn the_password_never_appears_in_debug_or_redacted_urls() {
    let url = "postgresql://snap:s3cr3t-pw@db.example:5432/snapgate?sslmode=disable&password=x";
    let mut st = settings(url);
    st.url = url.into();
    let dbg = format!("{st:?}");
    assert!(
        !dbg.contains("s3cr3t-pw") && dbg.contains("snap:***@db.example"),
        "{dbg}"
    );
    assert!(!dbg.contains("password=x"));
    let kv = pg::redact_url("host=db user=snap password=s3cr3t-pw dbname=x");
    assert_eq!(kv, "host=db user=snap password=*** dbname=x");
}

/// The refresh sweep's lease: one holder at a time, renewable by it, taken over once lapsed.
#[test]
fn a_lease_has_one_holder_until_it_lapses() {
    let url = fresh_database();
    let (a, b) = (open(&url), open(&url));
    let long = Duration::from_secs(60);
    assert!(a.try_lease("refresh-sweep", "node-a", long).unwrap());
    assert!(!b.try_lease("refresh-sweep", "node-b", long).unwrap());
    assert!(
        a.try_lease("refresh-sweep", "node-a", long).unwrap(),
        "renewed"
    );
    assert!(b.try_lease("other-job", "node-b", long).unwrap());
    // A short lease lapses (database time) and the other node takes it.
    assert!(a
        .try_lease("short", "node-a", Duration::from_millis(100))
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.try_lease("short", "node-b", long).unwrap() {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!a.try_lease("short", "node-a", long).unwrap());
}

/// TLS to PostgreSQL (rustls): verified against the configured CA, refused against another.
#[test]
fn tls_to_postgres_verifies_the_server() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = snapgate::tls::write_dev_pki(&pki_dir.path().join("tls")).unwrap();
    let server = Postgres::start_tls(&pki.server_cert, &pki.server_key);
    let url = server.fresh_database();
    let mut st = settings(&url);
    st.tls_ca_file = Some(pki.ca_cert.clone());
    let s = PgStore::open(&st).unwrap();
    pg::migrate(s.pool()).unwrap();
    let id = TerminalId::new(SERVICE_KEY, "TLS");
    assert!(s
        .compare_and_swap(&id, None, &sample_record("TLS"))
        .unwrap());
    let ssl: bool = s
        .pool()
        .call(|c, _| {
            c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .map(|r| r.get(0))
        })
        .unwrap();
    assert!(ssl, "the session is not encrypted");
    // Another CA: the server is not trusted, nothing is sent in clear instead.
    let other = tempfile::tempdir().unwrap();
    let other = snapgate::tls::write_dev_pki(&other.path().join("tls")).unwrap();
    st.tls_ca_file = Some(other.ca_cert);
    st.statement_timeout = Duration::from_millis(1500);
    let s = PgStore::open(&st).unwrap();
    assert!(matches!(s.ping(), Err(StoreError::Unavailable(_))));
    // And without TLS the server refuses the clear connection (hostssl only).
    st.tls_ca_file = None;
    let s = PgStore::open(&st).unwrap();
    assert!(s.ping().is_err());
}

/// The shared lockout counts across stores (nodes), locks at the threshold, and clears.
#[test]
fn lockout_counts_add_up_across_nodes() {
    use snapgate::store::lockout::LockoutStore;
    let url = fresh_database();
    let (a, b) = (open(&url), open(&url));
    let key = vec!["d:T1".to_owned()];
    let (win, lock, now) = (60_000, 300_000, 1_000_000_000);
    a.failed("d:T1", 3, win, lock, now).unwrap();
    b.failed("d:T1", 3, win, lock, now + 1).unwrap();
    assert!(!a.locked(&key, now + 2).unwrap());
    a.failed("d:T1", 3, win, lock, now + 2).unwrap();
    assert!(b.locked(&key, now + 3).unwrap());
    assert!(!b.locked(&key, now + 2 + lock).unwrap(), "the lock ends");
    // Failures outside the window start a new count.
    a.failed("d:T2", 2, win, lock, now).unwrap();
    b.failed("d:T2", 2, win, lock, now + win).unwrap();
    assert!(!a.locked(&["d:T2".into()], now + win).unwrap());
    b.clear(&key).unwrap();
    assert!(!a.locked(&key, now + 3).unwrap());
}
