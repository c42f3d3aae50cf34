//! The test harness, shared by every file in tests/ (`mod common; use common::*;`).
//!
//! Servers (each on a fresh loopback port, with a fresh folder holding the dev config, keys
//! and a real sled database):
//! - `TestServer::start()` / `start_with(|cfg| ...)` / `start_in(dir, |cfg| ...)`: in process,
//!   on a `ManualClock` at `t0()` (`srv.clock.set(day(n))`, `srv.advance_days(n)`); `srv.app`
//!   is the live `App`; `srv.stop().await` hands the folder back for a restart;
//!   `srv.start_admin()`, `srv.record(serial)`, `srv.verify(token)`.
//! - `BinaryServer::start(&init(dir))`: the real `snapgate serve` process (wall clock), with
//!   `edit_config`, `kill9`, `terminate` + `wait_exit`, `wait_for_log`, `open_store`, `keys_of`.
//!
//! Requests (`http.rs`: one hyper HTTP/1.1 client, each exchange bounded by `REQUEST_DEADLINE`):
//! - SOAP: `srv.soap(path, action, xml)`, `srv.register(ksn, "MP1|SERIAL")`, `srv.swipe(..)`,
//!   `srv.keyed(..)`, `srv.follow(..)`; at any address: `try_soap(addr, ..)`, `try_send(..)`.
//! - REST or plain HTTP: `srv.post(path, headers, body)`, `srv.post_json(path, headers, &json)`,
//!   `srv.get(path)`, `send(addr, ..)`; `reply.json()`.
//! - Raw bytes on a plain socket: `post_streaming`, `read_to_close`, `healthz_keep_alive`.
//! - TLS: `send_tls(addr, tls_client_config(ca, client_cert), method, path, headers, body)`.
//! - Replies: `HttpReply { status, content_type, body }` with `text_of`, `fault`,
//!   `assert_fault`, `assert_ok`, `renewed_token`, `successful`.
//!
//! Bodies: `fixture(name, vars)` fills `fixtures/` templates; `register_envelope`,
//! `swipe_envelope`, `keyed_envelope`, `follow_envelope`; `encrypt_as_terminal(keys, ..)`.
//! Also: `Upstream` (a fake forward-mode upstream) with `forward_to(cfg, url)`, and
//! `dev_keys()` (dev keys with token issue/verify, no server).
//! PostgreSQL (`postgres.rs`): `fresh_database()` (a new database on a server shared by the
//! test binary), `Postgres::start()` (a private server a test may stop and restart).
//! Waiting: never sleep to synchronise; wait on a condition with a deadline (`wait_until`,
//! `BinaryServer::wait_for_log`).
#![allow(dead_code, unused_imports)]

mod binary;
pub mod capture;
mod http;
mod postgres;
mod server;
mod upstream;

pub use binary::*;
pub use http::*;
pub use postgres::*;
pub use server::*;
pub use upstream::*;

use chrono::{DateTime, Utc};
use snapgate::config::{self, Config, Keys};
use snapgate::cws::soap::Element;
use snapgate::dukpt::{self, Ksn};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const SERVICE_KEY: &str = config::DEV_SERVICE_KEY;
pub const VENDOR_ID: &str = config::DEV_VENDOR_ID;
pub const SIS_PATH: &str = "/2.1.32/SIS.svc";
pub const TPS_PATH: &str = "/2.1.32/TPS.svc";
pub const SIS_NS: &str = "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation";
pub const SIS_ACTION: &str =
    "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation/ICWSServiceInformation/RegisterTerminal";
/// A TDES KSN under the ANSI test BDK's sample key set (device FFFF9876543210E0).
pub const TDES_KSN_BASE: &str = "FFFF9876543210E00000";
/// An AES KSN under the X9.24-3 sample BDK ID 12345678.
pub const AES_KSN_BASE: &str = "123456789012345600000000";
/// EVO's sample card on track 2.
pub const TRACK2: &str = ";5454545454545454=13121010134988000010?";

/// Where every `TestServer` clock starts.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

/// `t0()` plus `n` days.
pub fn day(n: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::days(n)
}

/// A KSN from a base with a counter.
pub fn ksn(base: &str, counter: u32) -> String {
    Ksn::parse_hex(base).unwrap().with_counter(counter).to_hex()
}

pub fn tps_action(op: &str) -> String {
    format!(
        "http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing/ICwsTransactionProcessing/{op}"
    )
}

/// The first element with this local name, depth first.
pub fn find<'a, 'x>(e: &'a Element<'x>, name: &str) -> Option<&'a Element<'x>> {
    if e.name == name {
        return Some(e);
    }
    e.children.iter().find_map(|c| find(c, name))
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// A free loopback port: bind port 0 and let it go (callers retry if someone takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The dev config and keys `snapgate init` would write, in a fresh folder, without a server
/// (for tests that only need the signing keys or BDKs).
pub struct DevKeys {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub keys: Keys,
}

pub fn dev_keys() -> DevKeys {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let config = Config::load(&cfg).unwrap();
    let keys = Keys::load(&config.security.keys_file).unwrap();
    DevKeys { dir, config, keys }
}

impl DevKeys {
    /// A token as RegisterTerminal issues it at `t0()` for `MP1|serial` on the device of `ksn`.
    pub fn issue(&self, ksn: &str, serial: &str) -> String {
        let t = &self.config.token;
        let claims = snapgate::token::Claims {
            token_id: snapgate::token::TokenId::random(),
            issuer: t.issuer.clone(),
            issued_at: t0(),
            not_on_or_after: t0() + t.lifetime(),
            service_key: SERVICE_KEY.to_owned(),
            merchant_profile_id: "MP1".to_owned(),
            device_serial: serial.to_owned(),
            device_id: Ksn::parse_hex(ksn).unwrap().device_id(),
        };
        snapgate::token::issue(&self.keys.signing, &claims)
    }

    /// Verify a token at `t0()`, no skew.
    pub fn verify(
        &self,
        tok: &str,
    ) -> Result<snapgate::token::Claims, snapgate::token::TokenError> {
        snapgate::token::verify(&self.keys.signing, tok, t0(), chrono::Duration::zero())
            .map(|v| v.claims().clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// Fill a fixture template: `{{NAME}}` placeholders.
pub fn fixture(name: &str, vars: &[(&str, &str)]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut s =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// Which DUKPT key usage a terminal encrypts with.
#[derive(Clone, Copy)]
pub enum Usage {
    /// The registration secret (`MP1|serial`).
    Secret,
    /// Track data.
    Track,
}

/// Hex ciphertext of `text` as a terminal holding `ksn` would send it, under the BDK of `keys`
/// that serves that KSN.
pub fn encrypt_as_terminal(keys: &Keys, ksn: &str, text: &str, usage: Usage) -> String {
    let ksn = Ksn::parse_hex(ksn).unwrap();
    let bdk = keys.bdk_for(&ksn).expect("a BDK serves this KSN");
    let usage = match usage {
        Usage::Secret => &bdk.secret_usage,
        Usage::Track => &bdk.track_usage,
    };
    let key = dukpt::working_key(&bdk.bdk, &ksn, usage).unwrap();
    hex::encode_upper(dukpt::encrypt_cbc(&key, text.as_bytes()))
}

pub fn register_envelope(sk: &str, vendor: &str, es: &str, ksn: &str) -> String {
    fixture(
        "register_terminal.xml",
        &[
            ("SERVICE_KEY", sk),
            ("VENDOR_ID", vendor),
            ("ENCRYPTED_SECRET", es),
            ("KSN", ksn),
        ],
    )
}

/// A new transaction (`op`) with encrypted track data `track` (hex) under `ksn_hex`.
pub fn swipe_envelope(
    op: &str,
    token: &str,
    track: &str,
    ksn_hex: &str,
    amount: &str,
    reference: &str,
) -> String {
    fixture(
        "tps/new_transaction.xml",
        &[
            ("OP", op),
            ("TOKEN", token),
            ("TRACK", track),
            ("KSN", ksn_hex),
            ("AMOUNT", amount),
            ("REFERENCE", reference),
        ],
    )
}

/// A keyed (no track data) transaction with a test PAN.
pub fn keyed_envelope(op: &str, token: &str, merchant: &str, amount: &str) -> String {
    fixture(
        "tps/keyed_transaction.xml",
        &[
            ("OP", op),
            ("TOKEN", token),
            ("PAN", "4012888888881881"),
            ("AMOUNT", amount),
            ("MERCHANT", merchant),
        ],
    )
}

/// Capture / Adjust / Undo / ReturnById on a transaction id; `extra` is inner XML.
pub fn follow_envelope(op: &str, token: &str, txn_id: &str, extra: &str) -> String {
    let ty = match op {
        "Capture" => "b:BankcardCapture",
        "Adjust" => "t:Adjust",
        "Undo" => "b:BankcardUndo",
        _ => "b:BankcardReturn",
    };
    fixture(
        "tps/follow_up.xml",
        &[
            ("OP", op),
            ("TOKEN", token),
            ("TYPE", ty),
            ("TXN_ID", txn_id),
            ("EXTRA", extra),
        ],
    )
}

/// The Python the third-party-client tests run (`SNAPGATE_PYTHON`, or the `.venv` that
/// `scripts/test` creates); `package` names what the test needs from it, for the message.
pub fn python(package: &str) -> PathBuf {
    if let Ok(p) = std::env::var("SNAPGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "Python {package} is needed for this test: run ./scripts/test (it creates .venv), or \
         set SNAPGATE_PYTHON to a python that has {package} installed"
    );
    venv
}

/// A terminal record with every field set plainly and two recent sales, for the store tests.
#[allow(dead_code)]
pub fn sample_record(serial: &str) -> snapgate::store::TerminalRecord {
    use snapgate::store::TerminalRecord;
    use snapgate::token::TokenId;
    TerminalRecord {
        merchant_profile_id: "MP1".into(),
        device_serial: serial.into(),
        service_key: SERVICE_KEY.into(),
        vendor_id: VENDOR_ID.into(),
        service_id: None,
        bdk_id: "ansi".into(),
        device_id: "TFFFF9876543210E0".into(),
        registered_at_ms: 1,
        token_id: TokenId([1; 16]),
        issued_at_ms: 1,
        expires_at_ms: 2,
        refresh_due_at_ms: 3,
        refresh_flag: false,
        pending: None,
        last_counter: 1,
        revoked: false,
        recent: vec![
            snapgate::store::RecentSale {
                key: [7; 16],
                id: [9; 16],
            };
            2
        ],
    }
}
