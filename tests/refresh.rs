//! The 30-day RefreshToken flow, walked day by day on a manual clock over a real socket.

mod common;

use common::*;
use snapgate::store::TerminalRecord;

fn record(srv: &TestServer) -> TerminalRecord {
    srv.record("B1234567")
}

fn claims(srv: &TestServer, tok: &str) -> snapgate::token::Claims {
    srv.verify(tok).expect("token verifies")
}

async fn strict() -> TestServer {
    TestServer::start_with(|c| c.token.clock_skew_seconds = 0).await
}

struct Terminal {
    token: String,
    counter: u32,
}

impl Terminal {
    async fn register(srv: &TestServer) -> Terminal {
        let token = srv
            .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
            .await;
        Terminal { token, counter: 1 }
    }

    fn next_ksn(&mut self) -> String {
        self.counter += 1;
        ksn(TDES_KSN_BASE, self.counter)
    }

    async fn swipe(&mut self, srv: &TestServer) -> HttpReply {
        let k = self.next_ksn();
        srv.swipe("AuthorizeAndCapture", &self.token.clone(), &k, "10.00")
            .await
    }

    /// On day `n`: a successful swipe; the renewed token it carries, if any.
    async fn swipe_on(&mut self, srv: &TestServer, n: i64) -> Option<String> {
        srv.clock.set(day(n));
        self.swipe(srv).await.assert_ok().renewed_token()
    }

    /// A successful keyed Authorize (no track data); the renewed token it carries, if any.
    async fn keyed(&self, srv: &TestServer) -> Option<String> {
        srv.keyed("Authorize", &self.token, "MP1", "1.00")
            .await
            .assert_ok()
            .renewed_token()
    }

    /// A swipe with `token` is refused with this fault.
    async fn refused(&mut self, srv: &TestServer, token: &str, detail: &str, id: u32) {
        let k = self.next_ksn();
        srv.swipe("Authorize", token, &k, "1.00")
            .await
            .assert_fault(detail, id);
    }

    /// Switch to `token`: the next swipe succeeds, carries no renewed token, and clears the
    /// flag.
    async fn switch_to(&mut self, srv: &TestServer, token: String) {
        self.token = token;
        assert_eq!(self.swipe(srv).await.assert_ok().renewed_token(), None);
        assert!(!record(srv).refresh_flag);
    }
}

#[tokio::test]
async fn flag_is_set_at_day_30_and_only_track_data_transactions_get_the_renewed_token() {
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;

    // Day 0 and day 29: no flag, no token.
    assert_eq!(t.swipe_on(&srv, 0).await, None);
    assert_eq!(t.swipe_on(&srv, 29).await, None);
    assert!(!record(&srv).refresh_flag);

    // Day 30: a transaction without track data sets the flag but carries no token.
    srv.clock.set(day(30));
    let r = srv
        .keyed("AuthorizeAndCapture", &t.token, "MP1", "3.00")
        .await;
    assert_eq!(r.assert_ok().renewed_token(), None);
    assert!(record(&srv).refresh_flag, "flag set in the store at day 30");
    assert!(record(&srv).pending.is_none());

    // The next transaction with encrypted track data gets the renewed token.
    let r = t.swipe(&srv).await;
    let renewed = r
        .assert_ok()
        .renewed_token()
        .expect("renewed token appended");
    let c = claims(&srv, &renewed);
    assert_eq!(c.issued_at, day(30));
    assert_eq!(c.not_on_or_after, day(120));
    assert_eq!(c.device_serial, "B1234567");
    assert_ne!(c.token_id, claims(&srv, &t.token).token_id);
    // The flag stays set until the terminal uses it.
    let rec = record(&srv);
    assert!(rec.refresh_flag);
    assert_eq!(rec.pending.unwrap().token_id, c.token_id);
    assert_eq!(
        rec.token_id,
        claims(&srv, &t.token).token_id,
        "old token still current"
    );

    // A retry of that swipe (same KSN, same ciphertext) is answered from the stored sale and
    // carries the same renewed token: the terminal may have lost the first answer.
    let k = ksn(TDES_KSN_BASE, t.counter);
    let retried = srv
        .swipe("AuthorizeAndCapture", &t.token, &k, "10.00")
        .await;
    assert_eq!(retried.text_of("TransactionId"), r.text_of("TransactionId"));
    assert_eq!(retried.assert_ok().renewed_token(), Some(renewed.clone()));

    // Follow-ups never carry a token.
    let id = r.text_of("TransactionId").unwrap();
    assert_eq!(
        srv.follow("Undo", &t.token, &id, "")
            .await
            .assert_ok()
            .renewed_token(),
        None
    );
}

#[tokio::test]
async fn a_lost_renewal_is_sent_again_and_the_switch_happens_only_on_use() {
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;
    let old = t.token.clone();
    let first = t.swipe_on(&srv, 30).await.unwrap();
    // The terminal never saw that response: day 31 it swipes with the old token again.
    let again = t.swipe_on(&srv, 31).await.unwrap();
    assert_eq!(first, again, "the same renewed token, not a new one");
    assert!(record(&srv).refresh_flag);

    // Day 32: the terminal uses the renewed token: proof of receipt.
    srv.clock.set(day(32));
    t.token = again.clone();
    let r = t.swipe(&srv).await;
    assert_eq!(
        r.assert_ok().renewed_token(),
        None,
        "no more tokens once the new one is in use"
    );
    let rec = record(&srv);
    let c = claims(&srv, &again);
    assert!(!rec.refresh_flag);
    assert!(rec.pending.is_none());
    assert_eq!(rec.token_id, c.token_id);
    assert_eq!(rec.expires_at_ms, day(120).timestamp_millis());
    assert_eq!(
        rec.refresh_due_at_ms,
        day(60).timestamp_millis(),
        "next refresh 30 days after its issue"
    );

    // The old token is superseded.
    let k = t.next_ksn();
    srv.swipe("AuthorizeAndCapture", &old, &k, "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);

    // And the cycle repeats: day 59 nothing, day 60 a third token.
    assert_eq!(t.swipe_on(&srv, 59).await, None);
    let third = t.swipe_on(&srv, 60).await.unwrap();
    assert_eq!(claims(&srv, &third).not_on_or_after, day(150));
}

#[tokio::test]
async fn a_terminal_that_never_swipes_its_renewal_expires_at_day_90() {
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;
    // Only keyed transactions: the flag goes up but no token can be delivered.
    srv.clock.set(day(31));
    assert_eq!(t.keyed(&srv).await, None);
    srv.clock.set(day(89));
    assert_eq!(t.keyed(&srv).await, None);
    assert!(record(&srv).refresh_flag);
    srv.clock.set(day(90));
    let tok = t.token.clone();
    t.refused(&srv, &tok, "ExpiredTokenFault", 5000).await;
    srv.clock.set(day(91));
    srv.keyed("Authorize", &t.token, "MP1", "1.00")
        .await
        .assert_fault("ExpiredTokenFault", 5000);
    // Registering again brings it back.
    let k = t.next_ksn();
    t.token = srv.register_ok(&k, "MP1|B1234567").await;
    t.swipe(&srv).await.assert_ok();
}

#[tokio::test]
async fn a_renewal_delivered_at_day_89_outlives_the_old_token() {
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;
    let renewed = t.swipe_on(&srv, 89).await.unwrap();
    assert_eq!(claims(&srv, &renewed).not_on_or_after, day(179));
    srv.clock.set(day(91));
    // Old token expired; the renewed one works and becomes current.
    let tok = t.token.clone();
    t.refused(&srv, &tok, "ExpiredTokenFault", 5000).await;
    t.switch_to(&srv, renewed).await;
}

#[tokio::test]
async fn concurrent_eligible_transactions_all_carry_the_same_renewed_token() {
    // Concurrency from one device interleaves KSN counters; replay protection would refuse
    // the late ones, which is not what this test is about.
    let srv = std::sync::Arc::new(
        TestServer::start_with(|c| {
            c.token.clock_skew_seconds = 0;
            c.security.replay_protection = false;
        })
        .await,
    );
    let t = Terminal::register(&srv).await;
    srv.clock.set(day(45));
    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let srv = srv.clone();
            let tok = t.token.clone();
            tokio::spawn(async move {
                srv.swipe(
                    "AuthorizeAndCapture",
                    &tok,
                    &ksn(TDES_KSN_BASE, 100 + i),
                    "1.00",
                )
                .await
                .assert_ok()
                .renewed_token()
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(
            task.await
                .unwrap()
                .expect("every eligible response carries a token"),
        );
    }
    tokens.dedup();
    assert_eq!(
        tokens.len(),
        1,
        "one renewed token for all concurrent responses"
    );
    assert_eq!(
        record(&srv).pending.unwrap().token_id,
        claims(&srv, &tokens[0]).token_id
    );
}

#[tokio::test]
async fn renewal_survives_a_restart_and_reregistration_drops_it() {
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;
    let renewed = t.swipe_on(&srv, 30).await.unwrap();
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |c| c.token.clock_skew_seconds = 0).await;
    srv.clock.set(day(31));
    assert!(record(&srv).refresh_flag, "flag survived the restart");
    let again = t.swipe(&srv).await.assert_ok().renewed_token();
    assert_eq!(again, Some(renewed.clone()));
    // Registering again resets the terminal: the pending token dies with the old one.
    let k = t.next_ksn();
    let fresh = srv.register_ok(&k, "MP1|B1234567").await;
    t.refused(&srv, &renewed, "InvalidTokenFault", 5005).await;
    t.switch_to(&srv, fresh).await;
}

#[tokio::test]
async fn the_sweep_raises_due_flags_without_any_transaction() {
    let srv = strict().await;
    Terminal::register(&srv).await;
    srv.clock.set(day(29));
    // On sled a sweep that raised flags makes them durable (one fdatasync); one that raised
    // none does not touch the disk. (PostgreSQL commits each update itself: no count.)
    let sled = matches!(srv.app.engine, snapgate::store::engine::Engine::Sled(_));
    let syncs = srv.app.engine.fdatasyncs();
    assert_eq!(snapgate::cws::session::sweep(&srv.app).unwrap(), 0);
    assert!(!record(&srv).refresh_flag);
    assert_eq!(
        srv.app.engine.fdatasyncs(),
        syncs,
        "nothing raised, nothing synced"
    );
    srv.clock.set(day(30));
    assert_eq!(snapgate::cws::session::sweep(&srv.app).unwrap(), 1);
    assert!(record(&srv).refresh_flag);
    assert!(
        !sled || srv.app.engine.fdatasyncs() > syncs,
        "raised flags were not synced"
    );
    assert_eq!(
        snapgate::cws::session::sweep(&srv.app).unwrap(),
        0,
        "raised once"
    );
}

#[tokio::test]
async fn the_sweep_pages_past_1024_terminals_and_flags_only_the_due_ones() {
    use snapgate::store::{to_ms, TerminalId};
    let srv = TestServer::start().await;
    let now = to_ms(srv.now());
    let day = 86_400_000;
    // 1,100 due (a day past, not exactly at, their due date), 30 not yet due, 20 revoked and
    // due, 10 already flagged: more than one 1,024-record page, mixed across pages by their
    // hashed ids.
    let kinds = [
        (1100, "due"),
        (30, "later"),
        (20, "revoked"),
        (10, "flagged"),
    ];
    for (n, kind) in kinds {
        for i in 0..n {
            let serial = format!("{kind}-{i}");
            let r = TerminalRecord {
                merchant_profile_id: "MP1".into(),
                device_serial: serial.clone(),
                service_key: SERVICE_KEY.into(),
                vendor_id: VENDOR_ID.into(),
                service_id: None,
                bdk_id: "TDES".into(),
                device_id: format!("D{i}"),
                registered_at_ms: now - 40 * day,
                token_id: snapgate::token::TokenId::random(),
                issued_at_ms: now - 40 * day,
                expires_at_ms: now + 50 * day,
                refresh_due_at_ms: if kind == "later" {
                    now + day
                } else {
                    now - day
                },
                refresh_flag: kind == "flagged",
                pending: None,
                last_counter: 1,
                revoked: kind == "revoked",
                recent: Vec::new(),
            };
            let id = TerminalId::new(SERVICE_KEY, &serial);
            assert!(srv.app.store.compare_and_swap(&id, None, &r).unwrap());
        }
    }
    assert_eq!(srv.app.store.len(), 1160);
    let raised = snapgate::cws::session::sweep(&srv.app).unwrap();
    assert_eq!(
        raised, 1100,
        "every due terminal on every page, and only those"
    );
    let all = srv.app.store.list(None, 5000).unwrap();
    assert_eq!(all.len(), 1160);
    for (_, r) in &all {
        let kind = r.device_serial.split('-').next().unwrap();
        let flagged = matches!(kind, "due" | "flagged");
        assert_eq!(r.refresh_flag, flagged, "{}", r.device_serial);
    }
    // Nothing left to raise.
    assert_eq!(snapgate::cws::session::sweep(&srv.app).unwrap(), 0);
}

#[tokio::test]
async fn a_renewed_token_first_used_on_sis_is_finished_not_abandoned_by_the_handler_timeout() {
    // Using the pending token promotes it (a write: the old token dies). Its flush waits 100 ms
    // (group commit window) and the handler timeout is 1 ms: the promotion is the commit point,
    // so the request must finish, not answer a timeout for a write that stands.
    let srv = TestServer::start_with(|c| {
        c.token.clock_skew_seconds = 0;
        c.limits.handler_timeout_ms = 1;
        c.store.group_commit_window_us = 100_000;
    })
    .await;
    let mut t = Terminal::register(&srv).await;
    let renewed = t
        .swipe_on(&srv, 30)
        .await
        .expect("a renewed token at day 30");
    let body = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
         <GetServiceInformation xmlns=\"{SIS_NS}\"><sessionToken>{renewed}</sessionToken>\
         </GetServiceInformation></s:Body></s:Envelope>"
    );
    let action = format!("{SIS_NS}/ICWSServiceInformation/GetServiceInformation");
    let r = srv.soap(SIS_PATH, &action, &body).await;
    r.assert_ok();
    assert_eq!(
        record(&srv).token_id,
        claims(&srv, &renewed).token_id,
        "the renewed token is current"
    );
}

/// `settle` checks again, under the store's CAS, what `authenticate` read: a session read
/// before another request changed the record must not record a spent counter, track data from
/// another device, or anything for a token that was superseded since. Called directly (two
/// requests cannot be interleaved this precisely over a socket). Issue 13 point 9: these
/// re-checks had no test.
#[tokio::test]
async fn settle_checks_again_what_changed_since_authenticate() {
    use snapgate::cws::error::{AuthFailure, Error};
    use snapgate::cws::session::{self, TrackKsn};
    use snapgate::dukpt::Ksn;
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;
    let track = |hex: &str| Some(TrackKsn(Ksn::parse_hex(hex).unwrap()));
    let stale = session::authenticate(&srv.app, Some(&t.token)).unwrap();
    assert!(!stale.wrote);
    // Not due and no track data: nothing to record.
    let quiet = session::settle(&srv.app, &stale, None, None).unwrap();
    assert!(!quiet.wrote && quiet.renewed.is_none());
    assert_eq!(record(&srv), stale.record);
    // The first settle records counter 2; the same stale session with 2 again is a replay.
    let k = t.next_ksn();
    let first = session::settle(&srv.app, &stale, track(&k), None).unwrap();
    assert!(first.wrote && first.renewed.is_none());
    assert_eq!(record(&srv).last_counter, 2);
    assert!(matches!(
        session::settle(&srv.app, &stale, track(&k), None),
        Err(Error::Authentication(AuthFailure::Replay))
    ));
    // Another device's KSN never reaches the record.
    assert!(matches!(
        session::settle(
            &srv.app,
            &stale,
            track(&ksn("FFFF9876543211E00000", 9)),
            None
        ),
        Err(Error::InvalidToken("track data from another device"))
    ));
    assert_eq!(record(&srv).last_counter, 2);
    // Re-registered (from another device) since the session was read: superseded, and the
    // old token now fails authentication for exactly that reason.
    srv.register_ok(&ksn("FFFF9876543211E00000", 1), "MP1|B1234567")
        .await;
    let k = t.next_ksn();
    assert!(matches!(
        session::settle(&srv.app, &stale, track(&k), None),
        Err(Error::InvalidToken("superseded"))
    ));
    assert!(matches!(
        session::authenticate(&srv.app, Some(&t.token)),
        Err(Error::InvalidToken("terminal re-registered"))
    ));
}

/// A new sale's idempotency key and id go into the terminal's recent sales in `settle`'s one
/// write: newest last, at most `processor.idempotency_depth`; the same key for another id
/// (a twin racing it) is a replay; the same key and id again (an attempt whose sale was not
/// stored) changes nothing. Issue 9, recent sales.
#[tokio::test]
async fn settle_records_recent_sales_up_to_the_depth_and_refuses_a_racing_twin() {
    use snapgate::cws::error::{AuthFailure, Error};
    use snapgate::cws::session;
    use snapgate::store::RecentSale;
    let srv = TestServer::start_with(|c| {
        c.token.clock_skew_seconds = 0;
        c.processor.idempotency_depth = 3;
    })
    .await;
    let t = Terminal::register(&srv).await;
    let sale = |n: u8| RecentSale {
        key: [n; 16],
        id: [0x80 | n; 16],
    };
    let s = session::authenticate(&srv.app, Some(&t.token)).unwrap();
    assert!(s.record.recent.is_empty());
    let first = session::settle(&srv.app, &s, None, Some(sale(1))).unwrap();
    assert!(first.wrote, "a keyed sale writes its key");
    assert_eq!(record(&srv).recent, [sale(1)]);
    // From the same (stale) session: the twin with another id is refused, nothing changes.
    let twin = RecentSale {
        id: [0xEE; 16],
        ..sale(1)
    };
    assert!(matches!(
        session::settle(&srv.app, &s, None, Some(twin)),
        Err(Error::Authentication(AuthFailure::Replay))
    ));
    let again = session::settle(&srv.app, &s, None, Some(sale(1))).unwrap();
    assert!(!again.wrote);
    assert_eq!(record(&srv).recent, [sale(1)]);
    for n in 2..=4 {
        let s = session::authenticate(&srv.app, Some(&t.token)).unwrap();
        session::settle(&srv.app, &s, None, Some(sale(n))).unwrap();
    }
    assert_eq!(record(&srv).recent, [sale(2), sale(3), sale(4)]);
    // Durable with the rest of the record: it reads back the same from the store.
    let s = session::authenticate(&srv.app, Some(&t.token)).unwrap();
    assert_eq!(s.record.recent, [sale(2), sale(3), sale(4)]);
}

/// Once due, `settle` raises the flag for any transaction, but only one with track data gets
/// (and creates) the pending renewed token. Called directly to see the record between steps.
#[tokio::test]
async fn settle_raises_the_flag_for_any_transaction_and_renews_only_with_track_data() {
    use snapgate::cws::session::{self, TrackKsn};
    use snapgate::dukpt::Ksn;
    let srv = strict().await;
    let mut t = Terminal::register(&srv).await;
    srv.clock.set(day(30));
    let s = session::authenticate(&srv.app, Some(&t.token)).unwrap();
    let keyed = session::settle(&srv.app, &s, None, None).unwrap();
    assert!(keyed.wrote && keyed.renewed.is_none());
    let r = record(&srv);
    assert!(r.refresh_flag && r.pending.is_none(), "{r:?}");
    // Flag up, no track data: the fast path, nothing written.
    let s = session::authenticate(&srv.app, Some(&t.token)).unwrap();
    let again = session::settle(&srv.app, &s, None, None).unwrap();
    assert!(!again.wrote && again.renewed.is_none());
    // Track data: a pending token, valid for the configured lifetime from now.
    let k = t.next_ksn();
    let swiped = session::settle(
        &srv.app,
        &s,
        Some(TrackKsn(Ksn::parse_hex(&k).unwrap())),
        None,
    )
    .unwrap();
    let renewed = swiped.renewed.expect("a renewed token");
    let c = claims(&srv, &renewed);
    assert_eq!(c.issued_at, day(30));
    assert_eq!(c.not_on_or_after, day(30 + 90));
    assert_eq!(record(&srv).pending.map(|p| p.token_id), Some(c.token_id));
}
