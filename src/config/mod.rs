//! Configuration: the operator's TOML config file (this file: every section and its defaults;
//! `resolve.rs`: the bounds and `Config::resolve`, the one place file, environment and flags are
//! merged and validated into the `Settings` the server runs with), the secret key file (`keys.rs`: BDKs and
//! token signing keys) and the dev setup `snapgate init` writes (`dev.rs`). Paths in a config
//! file are relative to the file's folder.

mod dev;
mod keys;
mod resolve;

pub use dev::*;
pub use keys::*;
pub use resolve::{Overrides, Settings};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); \
         it holds BDKs and signing keys. Fix it with: chmod 600 {path}"
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path}: {message}")]
    Keys { path: PathBuf, message: String },
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
}

fn parse_err(path: &Path, message: impl fmt::Display) -> ConfigError {
    ConfigError::Parse {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

pub(crate) fn keys_err(path: &Path, message: impl fmt::Display) -> ConfigError {
    ConfigError::Keys {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The whole operator config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub store: StoreConfig,
    pub token: TokenConfig,
    pub security: SecurityConfig,
    pub processor: ProcessorConfig,
    pub log: LogConfig,
    /// How closely CWS requests must follow the platform's schema (issue 10).
    pub cws: crate::cws::ops::namespaces::CwsConfig,
    /// The Cloud Connector relay (docs/CONNECTOR.md).
    pub connector: crate::connector::ConnectorConfig,
    /// HTTPS (and optionally mTLS) on the listener; none serves plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// POS pairing (docs/PAIRING.md); none: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairing: Option<crate::pairing::PairingConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the SOAP endpoint listens.
    pub listen: SocketAddr,
    /// Where /metrics and /healthz listen; none disables the admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// The URL clients reach this server at (`https://gw.example.com`, optionally with a path
    /// prefix), written into the served WSDLs' `soap:address`. None: the request's scheme and
    /// Host header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            admin_listen: None,
            public_url: None,
        }
    }
}

/// Every bound the server puts on a client. All are explicit so an operator can see and tune them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// Deepest element nesting accepted in an envelope.
    pub max_xml_depth: usize,
    /// Most elements accepted in one envelope.
    pub max_xml_elements: usize,
    /// Most attributes (namespace declarations included) on one element.
    pub max_xml_attributes: usize,
    /// Largest request head (request line + headers).
    pub max_header_bytes: usize,
    /// Time allowed to send the request head.
    pub header_timeout_ms: u64,
    /// Time allowed to send the request body.
    pub body_timeout_ms: u64,
    /// Time allowed to handle one request once read.
    pub handler_timeout_ms: u64,
    /// Once a request has written (its commit point), how long it may take to finish (the
    /// flush) before the answer is "outcome unknown" instead. The handler timeout no longer
    /// applies then: abandoning a written sale would invite a second one.
    pub commit_timeout_ms: u64,
    /// Most open client connections; more wait in the accept queue.
    pub max_connections: usize,
    /// Most threads the runtime keeps for blocking work (store I/O through `store::blocking`,
    /// key generation, slow hashes), and the bound on `store.threads`. Unbounded, a connection
    /// storm left hundreds of threads (and their memory) behind.
    pub max_blocking_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_xml_depth: 32,
            max_xml_elements: 2_000,
            max_xml_attributes: 32,
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            handler_timeout_ms: 15_000,
            commit_timeout_ms: 30_000,
            max_connections: 4_096,
            max_blocking_threads: 64,
        }
    }
}

impl Limits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
    pub fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms)
    }

    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The sled database folder.
    pub path: PathBuf,
    /// How long a durable write may wait to share an fsync with others.
    pub group_commit_window_us: u64,
    /// The longest a flush waits for store trips already running to join it (0: never).
    pub group_commit_gather_us: u64,
    /// sled's page cache in MiB (the OS page cache comes on top).
    pub cache_mb: u64,
    /// sled: log writes to terminal records and sandbox transactions in a write-ahead log of
    /// our own, so a sale's durable flush is one fdatasync of that log (docs/DECISIONS.md).
    pub wal: bool,
    /// sled: checkpoint the write-ahead log (flush sled, start a new segment) once its segment
    /// holds this many MiB; also the most a start replays.
    pub wal_checkpoint_mb: u64,
    /// Where terminals and transactions live: the embedded sled folder (`path`), or a
    /// PostgreSQL database shared by several nodes (`url`).
    pub backend: StoreBackend,
    /// PostgreSQL URL (`SNAPGATE_STORE_URL` overrides it); its password is never logged.
    pub url: Option<crate::store::postgres::StoreUrl>,
    /// PostgreSQL connections (one thread each) per node.
    pub pool_size: usize,
    /// Bound on one store call to PostgreSQL (queueing, connecting, the statement).
    pub statement_timeout_ms: u64,
    /// PEM CA file: connect to PostgreSQL over TLS, verifying the server against it.
    pub tls_ca_file: Option<PathBuf>,
    /// `serve` applies pending schema migrations at start (else `snapgate db migrate` must).
    pub migrate: bool,
    /// `always` (default): every store call of the request path runs off the async worker (a
    /// sale's trip on one of `threads`, the rest through `block_in_place`), so a slow store
    /// stalls only the request that waits for it.
    /// `network`: only when the store is across a network (PostgreSQL) or the call waits on the
    /// disk (a flush, an fsync); sled's in-memory calls run on the worker, which saves the
    /// hand-off (about a third of sled's sale throughput, docs/BENCHMARKS.md).
    pub offload: StoreOffload,
    /// Most store threads for the sale path's trips (`store::offload`); 0 (default) picks: on
    /// sled one per core, at least 2 (a trip is CPU work: more threads than cores only add
    /// switching, 20 % of sales/s at 64 threads, docs/BENCHMARKS.md), on PostgreSQL
    /// `pool_size` (a trip holds a connection). At most `limits.max_blocking_threads`.
    pub threads: usize,
}

/// Which store calls run off the async worker (`StoreConfig::offload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreOffload {
    #[default]
    Always,
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("db"),
            group_commit_window_us: 0,
            group_commit_gather_us: 500,
            cache_mb: crate::store::DEFAULT_CACHE_BYTES >> 20,
            wal: true,
            wal_checkpoint_mb: crate::store::DEFAULT_WAL_CHECKPOINT_BYTES >> 20,
            backend: StoreBackend::Sled,
            url: None,
            pool_size: 16,
            statement_timeout_ms: 2_000,
            tls_ca_file: None,
            migrate: false,
            offload: StoreOffload::Always,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The `Issuer` written into every token.
    pub issuer: String,
    /// How long a TerminalAccessToken is valid.
    pub lifetime_days: u32,
    /// Age at which a token's terminal is flagged for a renewed token.
    pub refresh_age_days: u32,
    /// Clock difference tolerated on NotBefore / NotOnOrAfter.
    pub clock_skew_seconds: u32,
    /// How often the server raises RefreshToken flags that have come due (0: never; the first
    /// transaction after the due date still raises it).
    pub sweep_interval_seconds: u32,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            issuer: "snapgate".into(),
            lifetime_days: 90,
            refresh_age_days: 30,
            clock_skew_seconds: 300,
            sweep_interval_seconds: 3600,
        }
    }
}

impl TokenConfig {
    pub fn lifetime(&self) -> chrono::Duration {
        chrono::Duration::days(self.lifetime_days.into())
    }
    pub fn refresh_age(&self) -> chrono::Duration {
        chrono::Duration::days(self.refresh_age_days.into())
    }
    pub fn skew(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.clock_skew_seconds.into())
    }
    pub fn validate(&self) -> Result<(), String> {
        if self.lifetime_days == 0 {
            return Err("token.lifetime_days must be at least 1".into());
        }
        if self.refresh_age_days == 0 || self.refresh_age_days >= self.lifetime_days {
            return Err(format!(
                "token.refresh_age_days ({}) must be between 1 and lifetime_days - 1 ({})",
                self.refresh_age_days,
                self.lifetime_days.saturating_sub(1)
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The key file with BDKs and signing keys (mode 600).
    pub keys_file: PathBuf,
    /// A token only works with track data from the KSN device it registered with.
    pub device_binding: bool,
    /// A KSN counter not above the last one seen for the device is refused.
    pub replay_protection: bool,
    /// Lockout after repeated failed registrations.
    pub lockout: LockoutConfig,
    /// Devices per TDES BDK whose IPEK is cached (0: off), so a sale skips deriving it.
    pub ipek_cache_entries: usize,
}

/// Brute-force protection for RegisterTerminal. A locked-out source gets the same
/// AuthenticationFault as any other failure, without its secret being tried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failures from one source address within `window_seconds` that lock it out.
    pub max_failures_per_address: u32,
    /// Failures for one KSN device id or device serial within `window_seconds` that lock it.
    pub max_failures_per_device: u32,
    pub window_seconds: u32,
    pub lockout_seconds: u32,
    /// Most sources tracked at once (bounds memory under a flood of addresses).
    pub max_tracked: usize,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures_per_address: 20,
            max_failures_per_device: 5,
            window_seconds: 60,
            lockout_seconds: 300,
            max_tracked: 100_000,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            keys_file: PathBuf::from("keys.toml"),
            device_binding: true,
            replay_protection: true,
            lockout: LockoutConfig::default(),
            ipek_cache_entries: crate::dukpt::DEFAULT_IPEK_CACHE_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// `sandbox` (embedded, deterministic) or `forward` (relay to `upstream_url`).
    pub mode: ProcessorMode,
    pub upstream_url: Option<String>,
    pub upstream_timeout_ms: u64,
    /// Session token sent upstream in place of the terminal's. Required in forward mode: the
    /// terminal's own token never leaves snapgate.
    pub upstream_session_token: Option<String>,
    /// Allow a plain `http://` upstream (development only): card data and the upstream token
    /// would cross the network in clear.
    pub allow_insecure_upstream: bool,
    /// PEM file of the CA(s) the upstream's certificate must chain to, instead of Mozilla's
    /// root set (a private upstream, or a test).
    pub upstream_ca_file: Option<PathBuf>,
    /// Sandbox transactions older than this are deleted in the background (0: kept forever).
    pub sandbox_retention_days: u32,
    /// At most this many old sandbox transactions looked at per retention step.
    pub sandbox_prune_per_tick: usize,
    /// How many of a terminal's latest new sandbox transactions a retry can find by its
    /// idempotency key (kept in the terminal's record).
    pub idempotency_depth: usize,
}

/// The largest `processor.idempotency_depth`: each entry is 32 bytes of every terminal record.
pub const MAX_IDEMPOTENCY_DEPTH: usize = 16;

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            mode: ProcessorMode::Sandbox,
            upstream_url: None,
            upstream_timeout_ms: 10_000,
            upstream_session_token: None,
            allow_insecure_upstream: false,
            upstream_ca_file: None,
            sandbox_retention_days: 30,
            sandbox_prune_per_tick: 2_000,
            idempotency_depth: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessorMode {
    Sandbox,
    Forward,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `snapgate=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Read a config file; relative paths inside it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| parse_err(path, e))?;
        cfg.validate().map_err(|m| parse_err(path, m))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.store.path = base.join(&cfg.store.path);
        cfg.security.keys_file = base.join(&cfg.security.keys_file);
        cfg.connector.resolve_paths(base);
        if let Some(ca) = cfg.store.tls_ca_file.as_mut() {
            *ca = base.join(&*ca);
        }
        if let Some(ca) = cfg.processor.upstream_ca_file.as_mut() {
            *ca = base.join(&*ca);
        }
        if let Some(tls) = cfg.tls.as_mut() {
            tls.resolve_paths(base);
        }
        if let Some(p) = cfg.pairing.as_mut() {
            p.resolve_paths(base);
        }
        Ok(cfg)
    }
}

/// The `[tls]` config section. When present, the listener speaks HTTPS only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1). Must be mode 600.
    pub key_file: PathBuf,
    /// When set, every client must present a certificate signed by a CA in this PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Resolve relative paths against `base`, the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.cert_file = base.join(&self.cert_file);
        self.key_file = base.join(&self.key_file);
        if let Some(ca) = self.client_ca_file.as_mut() {
            *ca = base.join(&*ca);
        }
    }
}

impl StoreConfig {
    /// sled's cache in bytes (`cache_mb` is bounded, so this cannot wrap).
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb << 20
    }

    /// How to open the sled folder (`cache_mb`, `wal`, `wal_checkpoint_mb`, all bounded).
    pub fn sled_options(&self) -> crate::store::SledOptions {
        crate::store::SledOptions {
            cache_bytes: self.cache_bytes(),
            wal_checkpoint_bytes: self.wal.then_some(self.wal_checkpoint_mb << 20),
        }
    }

    /// The PostgreSQL settings: `SNAPGATE_STORE_URL` wins over `url`.
    pub fn postgres(&self) -> Result<crate::store::postgres::PgSettings, String> {
        let url = match std::env::var("SNAPGATE_STORE_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => self
                .url
                .as_ref()
                .map(|u| u.expose().to_owned())
                .ok_or("store.backend = \"postgres\" needs store.url or SNAPGATE_STORE_URL")?,
        };
        Ok(self.postgres_with_url(url))
    }

    /// The PostgreSQL settings with this URL.
    pub fn postgres_with_url(&self, url: String) -> crate::store::postgres::PgSettings {
        crate::store::postgres::PgSettings {
            url,
            pool_size: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            tls_ca_file: self.tls_ca_file.clone(),
        }
    }
}
