//! The PostgreSQL engine of `TerminalStore`, for several snapgate nodes on one database:
//! the connection pool (dedicated OS threads, each owning one `postgres::Client`), the
//! embedded versioned migrations, and the terminal table.
//!
//! Why threads and not async: `TerminalStore` is synchronous and is called from tokio workers
//! of multi-thread and current-thread runtimes. The synchronous `postgres` client runs its own
//! small runtime and panics if driven from inside another, so each connection lives on a
//! thread of its own; a caller sends a job over a channel and blocks on a reply channel for at
//! most the statement timeout. Nothing here ever waits on the caller's runtime, so it cannot
//! deadlock a current-thread runtime, and a caller is never blocked longer than the bound.
//! A thread whose connection broke drops it and connects again on its next job (failing fast
//! for a short back-off while the database stays down), so a node recovers by itself.
//!
//! Semantics match the sled engine: `compare_and_swap` is one conditional statement
//! (`INSERT … ON CONFLICT DO NOTHING`, or `UPDATE … WHERE rec = $expected`). Under Read
//! Committed a second writer waits for the first and re-checks the predicate on the new row,
//! so of two nodes racing on one terminal exactly one wins and the other re-reads: the KSN
//! guard and the single token promotion hold across nodes without locks of our own. Every
//! statement commits with `synchronous_commit = on` before it returns, so `flush` is a no-op.

use super::StoreError;
use postgres::{Client, NoTls, Row, Statement};
use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connection thread fails fast after a failed connect, so a down database costs
/// callers one connect timeout per back-off period, not one each.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// How to reach the database. `url` may hold a password: `Debug` redacts it.
#[derive(Clone)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: usize,
    /// Bound on one store call (queueing, connecting and the statement) and PostgreSQL's own
    /// `statement_timeout`.
    pub statement_timeout: Duration,
    /// PEM CA file: connect with TLS (rustls), verifying the server against it.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// A PostgreSQL URL from the config file: `Debug` and `Display` show it redacted.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn new(url: impl Into<String>) -> Self {
        StoreUrl(url.into())
    }
    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `url` with any password replaced by `***` (URL or key=value form), for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if let Some(at) = authority.rfind('@') {
            let (userinfo, host) = authority.split_at(at);
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{scheme}{}:***{host}{}",
                    &userinfo[..colon],
                    redact_query(path)
                );
            }
        }
        return format!("{scheme}{authority}{}", redact_query(path));
    }
    // key=value form: drop the value of `password`.
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_query(path: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_owned();
    };
    let q: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{p}?{}", q.join("&"))
}

fn db_error(e: postgres::Error) -> StoreError {
    // The server's message and SQLSTATE (never the connection config, so never a password).
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Database(e.to_string()),
    }
}

/// One connection thread's state: its client (None while disconnected) and its prepared
/// statements (prepared once per connection: one round trip per call after that).
pub struct Conn {
    client: Option<Client>,
    stmts: HashMap<&'static str, Statement>,
    failed_at: Option<Instant>,
    config: Arc<postgres::Config>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Bumped by any thread that saw a connection break; a client made before the latest
    /// bump, or idle for `IDLE_CHECK`, is checked with one round trip before it is used, so a
    /// database restart costs no request a stale connection (writes are never retried).
    breaks: Arc<std::sync::atomic::AtomicU64>,
    made_at_break: u64,
    last_used: Instant,
    /// Bumped by every successful connect: a thread backing off after a failed connect stops
    /// backing off as soon as another thread got through (the database is back).
    connects: Arc<std::sync::atomic::AtomicU64>,
    connects_at_failure: u64,
}

/// A connection idle this long is checked before use (the server may have restarted).
const IDLE_CHECK: Duration = Duration::from_secs(2);

impl Conn {
    fn client(&mut self, deadline: Instant) -> Result<&mut Client, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        let suspect = self.made_at_break < self.breaks.load(Relaxed)
            || self.last_used.elapsed() >= IDLE_CHECK;
        if let (true, Some(c)) = (suspect, self.client.as_mut()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if c.is_valid(left.max(Duration::from_millis(1))).is_err() {
                self.client = None;
                self.breaks.fetch_add(1, Relaxed);
            } else {
                self.made_at_break = self.breaks.load(Relaxed);
            }
        }
        self.last_used = Instant::now();
        if self.client.is_none() {
            if let Some(t) = self.failed_at {
                let back = self.connects.load(std::sync::atomic::Ordering::Relaxed)
                    != self.connects_at_failure;
                if t.elapsed() < RECONNECT_BACKOFF && !back {
                    return Err(StoreError::Unavailable("database unreachable".into()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable("timed out".into()));
            }
            let mut config = (*self.config).clone();
            config.connect_timeout(left.max(Duration::from_millis(1)));
            let connected = match &self.tls {
                None => config.connect(NoTls),
                Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (**tls).clone(),
                )),
            };
            match connected {
                Ok(c) => {
                    self.client = Some(c);
                    self.stmts.clear();
                    self.failed_at = None;
                    self.connects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.made_at_break = self.breaks.load(std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    self.failed_at = Some(Instant::now());
                    self.connects_at_failure =
                        self.connects.load(std::sync::atomic::Ordering::Relaxed);
                    // The server is away: every other open connection is suspect too.
                    self.breaks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(StoreError::Unavailable(format!("cannot connect: {e}")));
                }
            }
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Run `f` on this thread's connection; a broken connection is dropped for the next job.
    pub fn with<T>(
        &mut self,
        deadline: Instant,
        f: impl FnOnce(&mut Client, &mut HashMap<&'static str, Statement>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.client(deadline)?;
        let client = self.client.as_mut().expect("connected above");
        let out = f(client, &mut self.stmts);
        // Anything but an error the server reported (closed, I/O, protocol, timeout) may have
        // left the connection unusable: drop it, and have the others checked.
        let broken = out.as_ref().err().is_some_and(|e| {
            let fatal = e.as_db_error().is_none_or(|db| {
                let code = db.code().code();
                // FATAL/PANIC end the session; classes 08 (connection) and 57 (operator
                // intervention: a shutdown or restart) mean the server is gone.
                matches!(db.severity(), "FATAL" | "PANIC")
                    || code.starts_with("08")
                    || code.starts_with("57")
            });
            fatal || e.is_closed() || client.is_closed()
        });
        if broken {
            self.client = None;
            self.stmts.clear();
            self.breaks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        out.map_err(db_error)
    }
}

/// A statement parameter, owned, so it can travel to a connection thread.
pub type Param = Box<dyn postgres::types::ToSql + Send + Sync>;

/// Box one parameter: `vec![p(id), p(rec)]`.
pub fn p<T: postgres::types::ToSql + Send + Sync + 'static>(v: T) -> Param {
    Box::new(v)
}

fn refs(params: &[Param]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|b| &**b as _).collect()
}

/// A statement prepared once per connection.
pub fn prepared(
    client: &mut Client,
    stmts: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = stmts.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql)?;
    stmts.insert(sql, s.clone());
    Ok(s)
}

struct Job {
    deadline: Instant,
    run: Box<dyn FnOnce(&mut Conn) + Send>,
}

/// The connection threads and the queue that feeds them.
pub struct Pool {
    tx: Mutex<Option<Sender<Job>>>,
    timeout: Duration,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pool {
    /// Start `size` connection threads. They connect lazily, so this succeeds while the
    /// database is down; `ping` says whether it is reachable.
    pub fn start(settings: &PgSettings) -> Result<Arc<Pool>, StoreError> {
        let mut config: postgres::Config = settings
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("store.url is not a PostgreSQL URL: {e}")))?;
        let ms = settings.statement_timeout.as_millis().max(1);
        // Acknowledged means committed: never inherit an asynchronous-commit default.
        config.options(&format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} -c synchronous_commit=on \
             -c idle_in_transaction_session_timeout={}",
            ms * 4
        ));
        config.application_name("snapgate");
        let tls = match &settings.tls_ca_file {
            None => None,
            Some(ca) => {
                // With a CA configured, never fall back to a clear connection.
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(Arc::new(tls_config(ca)?))
            }
        };
        let config = Arc::new(config);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        let breaks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let connects = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for i in 0..settings.pool_size.max(1) {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let mut conn = Conn {
                client: None,
                stmts: HashMap::new(),
                failed_at: None,
                config: config.clone(),
                tls: tls.clone(),
                breaks: breaks.clone(),
                made_at_break: 0,
                last_used: Instant::now(),
                connects: connects.clone(),
                connects_at_failure: 0,
            };
            let t = std::thread::Builder::new()
                .name(format!("snapgate-pg-{i}"))
                .spawn(move || loop {
                    let job = {
                        let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                        match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    // Its caller has given up: running it now could only surprise them.
                    if Instant::now() >= job.deadline {
                        continue;
                    }
                    (job.run)(&mut conn);
                })
                .map_err(|e| StoreError::Unavailable(format!("cannot start a thread: {e}")))?;
            threads.push(t);
        }
        Ok(Arc::new(Pool {
            tx: Mutex::new(Some(tx)),
            timeout: settings.statement_timeout,
            threads: Mutex::new(threads),
        }))
    }

    /// Run `f` on a pooled connection and wait for its answer, at most the statement timeout.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &mut HashMap<&'static str, Statement>) -> Result<T, postgres::Error>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let (reply_tx, reply_rx): (SyncSender<Result<T, StoreError>>, _) = mpsc::sync_channel(1);
        let job = Job {
            deadline,
            run: Box::new(move |conn: &mut Conn| {
                let _ = reply_tx.send(conn.with(deadline, f));
            }),
        };
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let tx = tx.as_ref().ok_or(StoreError::Closed)?;
            tx.send(job).map_err(|_| StoreError::Closed)?;
        }
        match reply_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(StoreError::Unavailable("the job was dropped".into()))
            }
        }
    }

    /// One prepared statement on a pooled connection: its rows.
    pub fn query(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<Row>, StoreError> {
        self.call(move |c, s| {
            let st = prepared(c, s, sql)?;
            c.query(&st, &refs(&params))
        })
    }

    /// One prepared statement: its row, if any.
    pub fn query_opt(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<Row>, StoreError> {
        self.call(move |c, s| {
            let st = prepared(c, s, sql)?;
            c.query_opt(&st, &refs(&params))
        })
    }

    /// One prepared statement: how many rows it changed.
    pub fn execute(&self, sql: &'static str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.call(move |c, s| {
            let st = prepared(c, s, sql)?;
            c.execute(&st, &refs(&params))
        })
    }

    /// Stop the threads once their current jobs end.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, StoreError> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| StoreError::Config(format!("store.tls_ca_file {}: {e}", ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls_pemfile_certs(&pem) {
        roots
            .add(cert)
            .map_err(|e| StoreError::Config(format!("store.tls_ca_file: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(StoreError::Config(format!(
            "store.tls_ca_file {} holds no certificate",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// The PostgreSQL engine: one pool, shared by the store of every record kind (terminals here
/// and in `terminals.rs`; `transactions.rs`, `lockout.rs`, `profiles.rs`, `pairing.rs`,
/// `connector.rs` for the others).
#[derive(Clone)]
pub struct PgStore {
    pool: Arc<Pool>,
}

impl PgStore {
    /// Start the pool (connections are made on first use).
    pub fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        Ok(PgStore {
            pool: Pool::start(settings)?,
        })
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

mod connector;
mod lockout;
mod migrate;
mod pairing;
mod profiles;
mod terminals;
mod transactions;

pub use self::migrate::{check_schema, latest_version, migrate, schema_version, MIGRATIONS};
pub(crate) use self::terminals::encode as encode_terminal;
pub use self::transactions::PgTransactions;

/// A record in the sled engine's postcard encoding (deterministic: compare-and-swap compares it).
fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("records always serialize")
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(b)?)
}
