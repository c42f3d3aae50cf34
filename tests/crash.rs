//! Crash safety against the real `snapgate` binary: SIGKILL mid-load, restart on the same folder,
//! and check that everything the server acknowledged is still there.
//!
//! - Registrations: concurrent clients register distinct terminals; the server is killed with
//!   SIGKILL while requests are in flight; after a restart every registration that got an HTTP
//!   200 must authenticate a real transaction (AuthorizeAndCapture with encrypted track data).
//! - Refresh flag state: with refresh dates moved into the past in the store (the binary runs on
//!   the wall clock), transactions raise the RefreshToken flag and mint renewed tokens; the
//!   server is killed right after those responses, and the flag and the pending token must
//!   survive (read from the store, and observed: the same renewed token is handed out again,
//!   and using it succeeds and clears the flag).
//! - The same renewal in forward mode (transactions relayed to an upstream).
//!
//! Everything runs on 127.0.0.1, every loop and wait is bounded, and every failed wait shows the
//! server's stderr.

mod common;

use chrono::Utc;
use common::*;
use snapgate::config::{Keys, DEV_SERVICE_KEY};
use snapgate::dukpt::Ksn;
use snapgate::store::{self, StoreError, TerminalId, TerminalRecord, TerminalStore};
use snapgate::token::TokenId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Server = BinaryServer;
type Reply = HttpReply;

// ---------------------------------------------------------------------------------------------
// Terminals

/// A simulated terminal: its own KSN device under the ANSI test key set `FFFF987654`, so each
/// has its own counter, starting at 1 for its registration.
#[derive(Clone)]
struct Terminal {
    serial: String,
    /// The initial KSN (counter 0).
    ksn: Ksn,
}

impl Terminal {
    fn new(device: u16, serial: String) -> Terminal {
        let ksn = Ksn::parse_hex(&format!("FFFF987654{device:04X}E00000")).unwrap();
        Terminal { serial, ksn }
    }

    fn id(&self) -> TerminalId {
        TerminalId::new(DEV_SERVICE_KEY, &self.serial)
    }

    fn register_body(&self, keys: &Keys, counter: u32) -> String {
        let ksn = self.ksn.with_counter(counter).to_hex();
        let secret = format!("MP1|{}", self.serial);
        let es = encrypt_as_terminal(keys, &ksn, &secret, Usage::Secret);
        register_envelope(SERVICE_KEY, VENDOR_ID, &es, &ksn)
    }

    async fn register(&self, addr: SocketAddr, keys: &Keys, counter: u32) -> Result<Reply, String> {
        try_soap(
            addr,
            SIS_PATH,
            SIS_ACTION,
            &self.register_body(keys, counter),
        )
        .await
    }

    /// AuthorizeAndCapture with EVO's card as track 2 encrypted under the BDK's track key usage.
    async fn swipe(
        &self,
        addr: SocketAddr,
        keys: &Keys,
        token: &str,
        counter: u32,
    ) -> Result<Reply, String> {
        let ksn = self.ksn.with_counter(counter).to_hex();
        let track = encrypt_as_terminal(keys, &ksn, TRACK2, Usage::Track);
        let op = "AuthorizeAndCapture";
        let body = swipe_envelope(op, token, &track, &ksn, "10.00", &self.serial);
        try_soap(addr, TPS_PATH, &tps_action(op), &body).await
    }

    /// AuthorizeAndCapture with a keyed PAN: no track data, so no renewed token can be handed out.
    async fn keyed(&self, addr: SocketAddr, token: &str) -> Result<Reply, String> {
        let op = "AuthorizeAndCapture";
        let body = keyed_envelope(op, token, "MP1", "3.00");
        try_soap(addr, TPS_PATH, &tps_action(op), &body).await
    }
}

fn token_id(keys: &Keys, token: &str) -> TokenId {
    snapgate::token::verify(
        &keys.signing,
        token,
        Utc::now(),
        chrono::Duration::minutes(5),
    )
    .unwrap_or_else(|e| panic!("token does not verify: {e:?}"))
    .claims()
    .token_id
}

fn record(s: &dyn TerminalStore, t: &Terminal) -> TerminalRecord {
    s.get(&t.id())
        .unwrap()
        .unwrap_or_else(|| panic!("terminal {} is not in the store", t.serial))
}

// ---------------------------------------------------------------------------------------------
// Registrations under SIGKILL

/// Concurrent registering clients.
const CLIENTS: usize = 8;
/// Acknowledged registrations after which the server is killed.
const KILL_AFTER: usize = 500;
/// The load may take this long to reach KILL_AFTER.
const LOAD_DEADLINE: Duration = Duration::from_secs(15);
/// Registrations per client at most (device numbers are 12 bits per client).
const PER_CLIENT_MAX: usize = 4000;

#[derive(Default)]
struct Load {
    /// (terminal, token) of every registration that got HTTP 200.
    acked: Mutex<Vec<(Terminal, String)>>,
    acked_count: AtomicUsize,
    in_flight: AtomicUsize,
    /// Requests that got no answer (the kill).
    unanswered: AtomicUsize,
    /// Anything unexpected before the kill: a refusal, or a broken connection.
    problems: Mutex<Vec<String>>,
    killed: AtomicBool,
    stop: AtomicBool,
    /// Woken on every acknowledgement and every problem: the test waits on it, not on a timer.
    progress: tokio::sync::Notify,
}

async fn register_client(client: usize, addr: SocketAddr, keys: Arc<Keys>, load: Arc<Load>) {
    for n in 0..PER_CLIENT_MAX {
        if load.stop.load(Ordering::SeqCst) {
            return;
        }
        let device = u16::try_from(client * 4096 + n).unwrap();
        let t = Terminal::new(device, format!("CRASH{client:02}-{n:05}"));
        load.in_flight.fetch_add(1, Ordering::SeqCst);
        let r = t.register(addr, &keys, 1).await;
        load.in_flight.fetch_sub(1, Ordering::SeqCst);
        match r {
            Ok(r) if r.status == 200 => {
                let token = r
                    .text_of("RegisterTerminalResult")
                    .unwrap_or_else(|| panic!("a 200 without a token: {}", r.body));
                load.acked.lock().unwrap().push((t, token));
                load.acked_count.fetch_add(1, Ordering::SeqCst);
                load.progress.notify_one();
            }
            // A fault after the kill cannot happen (nothing answers); before it, it is a bug.
            Ok(r) => {
                load.problems
                    .lock()
                    .unwrap()
                    .push(format!("{}: HTTP {}: {}", t.serial, r.status, r.body));
                load.progress.notify_one();
                return;
            }
            Err(e) => {
                load.unanswered.fetch_add(1, Ordering::SeqCst);
                if !load.killed.load(Ordering::SeqCst) {
                    load.problems
                        .lock()
                        .unwrap()
                        .push(format!("{}: before the kill: {e}", t.serial));
                    load.progress.notify_one();
                }
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_registrations_survive_sigkill_and_their_tokens_work() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let keys = keys_of(&cfg);
    let server = Server::start(&cfg).await;
    let addr = server.addr;

    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(register_client(c, addr, keys.clone(), load.clone())))
        .collect();

    // Kill as soon as KILL_AFTER registrations are acknowledged: the other clients are mid-request.
    let deadline = Instant::now() + LOAD_DEADLINE;
    while load.acked_count.load(Ordering::SeqCst) < KILL_AFTER {
        let problems = load.problems.lock().unwrap().clone();
        if !problems.is_empty() || Instant::now() > deadline {
            load.stop.store(true, Ordering::SeqCst);
            panic!(
                "load failed: {} acknowledged after {:?}; problems: {:#?}\nstderr:\n{}",
                load.acked_count.load(Ordering::SeqCst),
                started.elapsed(),
                &problems[..problems.len().min(5)],
                server.stderr()
            );
        }
        let until = tokio::time::Instant::from_std(deadline);
        let _ = tokio::time::timeout_at(until, load.progress.notified()).await;
    }
    let in_flight_at_kill = load.in_flight.load(Ordering::SeqCst);
    load.killed.store(true, Ordering::SeqCst);
    let stderr = server.kill9();
    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        // Each request is bounded by REQUEST_DEADLINE, so this ends.
        c.await.unwrap();
    }
    let problems = load.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "unexpected failures during the load: {:#?}\nstderr:\n{stderr}",
        &problems[..problems.len().min(5)]
    );
    let acked = std::mem::take(&mut *load.acked.lock().unwrap());
    let unanswered = load.unanswered.load(Ordering::SeqCst);
    assert!(acked.len() >= KILL_AFTER);
    assert!(
        in_flight_at_kill > 0,
        "the kill should land while requests are in flight"
    );
    let load_time = started.elapsed();

    // Restart on the same folder; every acknowledged token must authenticate a transaction.
    let server = Server::start(&cfg).await;
    let addr = server.addr;
    let acked = Arc::new(acked);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let verifiers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (acked, next, failures, keys) =
                (acked.clone(), next.clone(), failures.clone(), keys.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((t, token)) = acked.get(i) else {
                        return;
                    };
                    // Counter 2: above the registration's 1.
                    let outcome = match t.swipe(addr, &keys, token, 2).await {
                        Ok(r) if r.successful() && r.renewed_token().is_none() => continue,
                        Ok(r) => format!("{}: HTTP {}: {}", t.serial, r.status, r.body),
                        Err(e) => format!("{}: {e}", t.serial),
                    };
                    failures.lock().unwrap().push(outcome);
                }
            })
        })
        .collect();
    for v in verifiers {
        v.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} acknowledged registrations do not work after the restart, e.g. {:#?}\n\
         stderr before the kill:\n{stderr}\nstderr after the restart:\n{}",
        failures.len(),
        acked.len(),
        &failures[..failures.len().min(5)],
        server.stderr()
    );
    drop(server);
    println!(
        "crash: {} registrations acknowledged before SIGKILL ({in_flight_at_kill} in flight, \
         {unanswered} unanswered), all {} verified by a transaction after the restart; \
         load {load_time:?}, total {:?}",
        acked.len(),
        acked.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh flag state under SIGKILL

/// Move a terminal's refresh date into the past, as if its token were `refresh_age` old.
fn make_due(s: &dyn TerminalStore, t: &Terminal) {
    let past = Utc::now().timestamp_millis() - 60_000;
    store::update(s, &t.id(), |cur| {
        let mut r = cur.expect("registered").clone();
        r.refresh_due_at_ms = past;
        Ok::<_, StoreError>((Some(r), ()))
    })
    .unwrap();
}

/// `snapgate init` a folder, adjust its config with `tweak`, register `terminals` (counter 1),
/// SIGKILL the server, and move the refresh date of those marked due into the past. Returns
/// the config path, the keys and the tokens.
async fn registered_folder(
    dir: &Path,
    tweak: impl FnOnce(&Path),
    terminals: &[(Terminal, bool)],
) -> (PathBuf, Arc<Keys>, Vec<String>) {
    let cfg = init(dir);
    tweak(&cfg);
    let keys = keys_of(&cfg);
    let server = Server::start(&cfg).await;
    let mut tokens = Vec::new();
    for (t, _) in terminals {
        let r = t.register(server.addr, &keys, 1).await.unwrap();
        assert_eq!(r.status, 200, "{}\nstderr:\n{}", r.body, server.stderr());
        tokens.push(r.text_of("RegisterTerminalResult").unwrap());
    }
    server.kill9();
    let s = open_store(&cfg);
    for (t, due) in terminals {
        assert!(!record(&*s, t).refresh_flag);
        if *due {
            make_due(&*s, t);
        }
    }
    s.flush().unwrap();
    drop(s);
    (cfg, keys, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_flag_and_pending_token_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // A: due, swiped (flag + pending token). B: due, only a keyed transaction (flag, no pending
    // token: nothing to deliver it with). C: not due.
    let group = |g: &str, k: u16| {
        (0..3u16)
            .map(move |i| Terminal::new(0xF000 + k * 16 + i, format!("REFRESH-{g}{i}")))
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (group("A", 0), group("B", 1), group("C", 2));
    let all: Vec<(Terminal, bool)> = a
        .iter()
        .map(|t| (t.clone(), true))
        .chain(b.iter().map(|t| (t.clone(), true)))
        .chain(c.iter().map(|t| (t.clone(), false)))
        .collect();
    let (cfg, keys, tokens) = registered_folder(dir.path(), |_| {}, &all).await;
    let (tok_a, rest) = tokens.split_at(3);
    let (tok_b, tok_c) = rest.split_at(3);

    // The eligible transactions, all at once; SIGKILL as soon as the last response is in.
    let server = Server::start(&cfg).await;
    let addr = server.addr;
    let swipes_a = a
        .iter()
        .zip(tok_a)
        .map(|(t, tok)| t.swipe(addr, &keys, tok, 2));
    let keyed_b = b.iter().zip(tok_b).map(|(t, tok)| t.keyed(addr, tok));
    let swipes_c = c
        .iter()
        .zip(tok_c)
        .map(|(t, tok)| t.swipe(addr, &keys, tok, 2));
    let (ra, rb, rc) = tokio::join!(join_all(swipes_a), join_all(keyed_b), join_all(swipes_c));
    let stderr = server.kill9();
    let ok = |r: Result<Reply, String>| {
        let r = r.unwrap_or_else(|e| panic!("{e}\nstderr:\n{stderr}"));
        assert!(r.successful(), "{}\nstderr:\n{stderr}", r.body);
        r
    };
    let renewed_a: Vec<String> = ra
        .into_iter()
        .map(|r| {
            ok(r)
                .renewed_token()
                .expect("a due swipe carries a renewed token")
        })
        .collect();
    for r in rb.into_iter().chain(rc) {
        assert_eq!(ok(r).renewed_token(), None);
    }

    // On disk after the kill: exactly what the responses said.
    {
        let s = open_store(&cfg);
        for ((t, old), renewed) in a.iter().zip(tok_a).zip(&renewed_a) {
            let r = record(&*s, t);
            assert!(r.refresh_flag, "{}: flag lost", t.serial);
            assert_eq!(
                r.pending.map(|p| p.token_id),
                Some(token_id(&keys, renewed)),
                "{}: the renewed token handed out is not recorded as pending",
                t.serial
            );
            assert_eq!(r.token_id, token_id(&keys, old), "{}", t.serial);
            assert_eq!(r.last_counter, 2, "{}", t.serial);
        }
        for t in &b {
            let r = record(&*s, t);
            assert!(r.refresh_flag, "{}: flag lost", t.serial);
            assert!(r.pending.is_none(), "{}", t.serial);
        }
        for t in &c {
            let r = record(&*s, t);
            assert!(!r.refresh_flag && r.pending.is_none(), "{}", t.serial);
            assert_eq!(r.last_counter, 2, "{}", t.serial);
        }
    }

    // Observed through the restarted server.
    let server = Server::start(&cfg).await;
    let addr = server.addr;
    let fail = |what: &str, t: &Terminal, r: &Result<Reply, String>| -> ! {
        fail(what, t, r, &server.stderr())
    };
    let mut renewed_b = Vec::new();
    for (i, t) in a.iter().enumerate() {
        // The old token again: the same renewed token, not a new one.
        let r = t.swipe(addr, &keys, &tok_a[i], 3).await;
        match &r {
            Ok(x) if x.successful() && x.renewed_token().as_ref() == Some(&renewed_a[i]) => {}
            _ => fail("old token after the restart", t, &r),
        }
        // The renewed token works, and switches the terminal over.
        let r = t.swipe(addr, &keys, &renewed_a[i], 4).await;
        match &r {
            Ok(x) if x.successful() && x.renewed_token().is_none() => {}
            _ => fail("renewed token after the restart", t, &r),
        }
        let r = t.swipe(addr, &keys, &tok_a[i], 5).await;
        match &r {
            Ok(x) if x.status == 500 && x.fault_id().as_deref() == Some("5005") => {}
            _ => fail("old token once the renewed one is in use", t, &r),
        }
    }
    for (i, t) in b.iter().enumerate() {
        // The flag survived: the first swipe hands out a renewed token.
        let r = t.swipe(addr, &keys, &tok_b[i], 2).await;
        let renewed = match &r {
            Ok(x) if x.successful() => x.renewed_token(),
            _ => None,
        };
        let Some(renewed) = renewed else {
            fail("swipe after a keyed transaction raised the flag", t, &r)
        };
        let r = t.swipe(addr, &keys, &renewed, 3).await;
        match &r {
            Ok(x) if x.successful() && x.renewed_token().is_none() => {}
            _ => fail("renewed token", t, &r),
        }
        renewed_b.push(renewed);
    }
    for (i, t) in c.iter().enumerate() {
        let r = t.swipe(addr, &keys, &tok_c[i], 3).await;
        match &r {
            Ok(x) if x.successful() && x.renewed_token().is_none() => {}
            _ => fail("a terminal that is not due", t, &r),
        }
    }
    // The switch to the renewed token is durable too.
    server.kill9();
    let s = open_store(&cfg);
    for (t, renewed) in a.iter().zip(&renewed_a).chain(b.iter().zip(&renewed_b)) {
        let r = record(&*s, t);
        assert_eq!(r.token_id, token_id(&keys, renewed), "{}", t.serial);
        assert!(!r.refresh_flag && r.pending.is_none(), "{}", t.serial);
    }
    for t in &c {
        assert!(!record(&*s, t).refresh_flag, "{}", t.serial);
    }
}

fn fail(what: &str, t: &Terminal, r: &Result<Reply, String>, stderr: &str) -> ! {
    let body = match r {
        Ok(r) => format!("HTTP {}: {}", r.status, r.body),
        Err(e) => e.clone(),
    };
    panic!("{}: {what}: {body}\nstderr:\n{stderr}", t.serial)
}

/// Await borrowed futures concurrently on this task; outputs in order (no `futures` crate).
async fn join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// The same renewal in forward mode

/// Switch a folder's config to forward mode.
fn forward_cfg(cfg: &Path, upstream: &Upstream) {
    edit_config(cfg, |c| forward_to(c, upstream.url(TPS_PATH)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_renewed_token_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(200, UPSTREAM_OK).await;
    let terminals: Vec<(Terminal, bool)> = (0..3u16)
        .map(|i| (Terminal::new(0xF100 + i, format!("FORWARD-{i}")), true))
        .collect();
    let (cfg, keys, tokens) =
        registered_folder(dir.path(), |cfg| forward_cfg(cfg, &up), &terminals).await;

    let server = Server::start(&cfg).await;
    let addr = server.addr;
    let replies = join_all(
        terminals
            .iter()
            .zip(&tokens)
            .map(|((t, _), tok)| t.swipe(addr, &keys, tok, 2)),
    )
    .await;
    // SIGKILL right after the responses that carry the renewed tokens.
    let stderr = server.kill9();
    let renewed: Vec<String> = replies
        .into_iter()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{e}\nstderr:\n{stderr}"));
            assert!(r.successful(), "{}\nstderr:\n{stderr}", r.body);
            r.renewed_token()
                .expect("a due swipe carries a renewed token")
        })
        .collect();

    let lost: Vec<String> = {
        let s = open_store(&cfg);
        terminals
            .iter()
            .zip(&renewed)
            .filter_map(|((t, _), tok)| {
                let r = record(&*s, t);
                let kept =
                    r.refresh_flag && r.pending.map(|p| p.token_id) == Some(token_id(&keys, tok));
                (!kept).then(|| {
                    format!(
                        "{}: flag {}, pending {:?}, last counter {}",
                        t.serial,
                        r.refresh_flag,
                        r.pending.map(|p| p.token_id),
                        r.last_counter
                    )
                })
            })
            .collect()
    };
    // What a terminal that received the renewed token sees: it must work.
    let server = Server::start(&cfg).await;
    let mut stranded = Vec::new();
    for ((t, _), tok) in terminals.iter().zip(&renewed) {
        match t.swipe(server.addr, &keys, tok, 3).await {
            Ok(r) if r.successful() => {}
            Ok(r) => stranded.push(format!(
                "{}: HTTP {} fault {:?}",
                t.serial,
                r.status,
                r.fault_id()
            )),
            Err(e) => stranded.push(format!("{}: {e}", t.serial)),
        }
    }
    assert!(
        lost.is_empty() && stranded.is_empty(),
        "forward mode: the renewed tokens handed out before SIGKILL were not durable.\n\
         lost from the store: {lost:#?}\nrenewed token refused after the restart: {stranded:#?}\n\
         stderr:\n{}",
        server.stderr()
    );
}
