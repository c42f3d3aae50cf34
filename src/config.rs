//! Configuration: the operator's TOML config file, the secret key file (BDKs and token signing
//! keys), and the dev defaults `snapgate init` writes. Paths in a config file are relative to
//! the file's folder. Flags and environment variables override the file (see `main.rs`).

use crate::dukpt::{AesKeyType, AesUsage, Bdk, KeyUsage, Ksn, Scheme, TdesVariant};
use crate::token::{KeyRing, SigningKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

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

fn keys_err(path: &Path, message: impl fmt::Display) -> ConfigError {
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
    /// HTTPS (and optionally mTLS) on the listener; none serves plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the SOAP endpoint listens.
    pub listen: SocketAddr,
    /// Where /metrics and /healthz listen; none disables the admin listener.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            admin_listen: None,
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
    /// Most open client connections; more wait in the accept queue.
    pub max_connections: usize,
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
            max_connections: 4_096,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The sled database folder.
    pub path: PathBuf,
    /// How long a durable write may wait to share an fsync with others.
    pub group_commit_window_us: u64,
    /// sled's page cache in MiB (the OS page cache comes on top).
    pub cache_mb: u64,
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
            cache_mb: crate::store::DEFAULT_CACHE_BYTES >> 20,
            backend: StoreBackend::Sled,
            url: None,
            pool_size: 16,
            statement_timeout_ms: 2_000,
            tls_ca_file: None,
            migrate: false,
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
    /// Session token sent upstream in place of the terminal's (forward mode); none keeps it.
    pub upstream_session_token: Option<String>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            mode: ProcessorMode::Sandbox,
            upstream_url: None,
            upstream_timeout_ms: 10_000,
            upstream_session_token: None,
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
        if let Some(ca) = cfg.store.tls_ca_file.as_mut() {
            *ca = base.join(&*ca);
        }
        if let Some(tls) = cfg.tls.as_mut() {
            tls.resolve_paths(base);
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

/// What the command line and the environment override in a loaded config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// `name` must lie in `range`; the message names the setting and its bounds.
fn bounded<T: PartialOrd + fmt::Display + Copy>(
    name: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} = {value} is out of range: it must be from {} to {}",
            range.start(),
            range.end()
        ))
    }
}

impl Config {
    /// Check every numeric setting against its bounds, so no value can overflow or panic where
    /// it is used (durations added to instants, MiB shifted to bytes, hyper's buffer minimum).
    pub fn validate(&self) -> Result<(), String> {
        const MINUTE_MS: u64 = 60_000;
        let l = &self.limits;
        bounded("limits.max_body_bytes", l.max_body_bytes, 1024..=64 << 20)?;
        bounded("limits.max_xml_depth", l.max_xml_depth, 4..=256)?;
        bounded(
            "limits.max_xml_elements",
            l.max_xml_elements,
            16..=1_000_000,
        )?;
        bounded("limits.max_xml_attributes", l.max_xml_attributes, 1..=1024)?;
        // hyper refuses a read buffer under 8 KiB.
        bounded(
            "limits.max_header_bytes",
            l.max_header_bytes,
            8192..=1 << 20,
        )?;
        bounded(
            "limits.header_timeout_ms",
            l.header_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded(
            "limits.body_timeout_ms",
            l.body_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded(
            "limits.handler_timeout_ms",
            l.handler_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded("limits.max_connections", l.max_connections, 1..=1_000_000)?;
        let st = &self.store;
        bounded(
            "store.group_commit_window_us",
            st.group_commit_window_us,
            0..=100_000,
        )?;
        bounded("store.cache_mb", st.cache_mb, 1..=1 << 16)?;
        bounded("store.pool_size", st.pool_size, 1..=512)?;
        bounded(
            "store.statement_timeout_ms",
            st.statement_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        let t = &self.token;
        bounded("token.lifetime_days", t.lifetime_days, 1..=3650)?;
        bounded("token.clock_skew_seconds", t.clock_skew_seconds, 0..=3600)?;
        bounded(
            "token.sweep_interval_seconds",
            t.sweep_interval_seconds,
            0..=7 * 86_400,
        )?;
        t.validate()?;
        let lo = &self.security.lockout;
        let lock = "security.lockout";
        bounded(
            &format!("{lock}.max_failures_per_address"),
            lo.max_failures_per_address,
            1..=1_000_000,
        )?;
        bounded(
            &format!("{lock}.max_failures_per_device"),
            lo.max_failures_per_device,
            1..=1_000_000,
        )?;
        bounded(
            &format!("{lock}.window_seconds"),
            lo.window_seconds,
            1..=86_400,
        )?;
        bounded(
            &format!("{lock}.lockout_seconds"),
            lo.lockout_seconds,
            1..=7 * 86_400,
        )?;
        bounded(
            &format!("{lock}.max_tracked"),
            lo.max_tracked,
            16..=10_000_000,
        )?;
        bounded(
            "processor.upstream_timeout_ms",
            self.processor.upstream_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        Ok(())
    }

    /// Merge the command line and environment into a loaded file and validate the result: the
    /// one place the server's settings are decided.
    pub fn resolve(mut self, o: Overrides) -> Result<Config, ConfigError> {
        if let Some(l) = o.listen {
            self.server.listen = l;
        }
        if let Some(f) = o.log_format {
            self.log.format = f;
        }
        if let Some(l) = o.log_level {
            self.log.level = l;
        }
        self.validate().map_err(|m| ConfigError::Parse {
            path: PathBuf::from("(command line)"),
            message: m,
        })?;
        Ok(self)
    }

    /// Split into what needs a restart to change and the live token settings (`App::token`,
    /// swapped by reload), so no stale copy of the token settings stays behind.
    pub fn into_settings(self) -> (Settings, TokenConfig) {
        let Config {
            server,
            limits,
            store,
            token,
            security,
            processor,
            log,
            tls,
        } = self;
        (
            Settings {
                server,
                limits,
                store,
                security,
                processor,
                log,
                tls,
            },
            token,
        )
    }
}

/// The settings a running server uses that only a restart changes: a validated `Config` less
/// its `[token]` section, which is live.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub limits: Limits,
    pub store: StoreConfig,
    pub security: SecurityConfig,
    pub processor: ProcessorConfig,
    pub log: LogConfig,
    pub tls: Option<TlsConfig>,
}

impl StoreConfig {
    /// sled's cache in bytes (`cache_mb` is bounded, so this cannot wrap).
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb << 20
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

// ---------------------------------------------------------------------------------------------
// The key file

/// The key file as written on disk.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    active_signing_key: String,
    #[serde(default, rename = "signing_key")]
    signing_keys: Vec<SigningKeyEntry>,
    #[serde(default, rename = "bdk")]
    bdks: Vec<BdkEntry>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SigningKeyEntry {
    kid: String,
    key: Zeroizing<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BdkEntry {
    id: String,
    scheme: SchemeName,
    key: Zeroizing<String>,
    /// KSN key-set ids this BDK answers for: TDES 10 hex digits, AES 8 (the BDK ID).
    key_set_ids: Vec<String>,
    #[serde(default)]
    variant: VariantName,
    /// Key usage for encrypted track data; defaults to `variant`.
    #[serde(default)]
    track_variant: Option<VariantName>,
    /// AES working key type; defaults to the BDK's own size.
    #[serde(default)]
    working_key: Option<AesKeyName>,
    #[serde(default)]
    secret_format: SecretFormat,
    /// serviceKeys this BDK's terminals may register for; "*" allows any.
    service_keys: Vec<String>,
    /// vendorIds this BDK's terminals may register for; "*" allows any.
    vendor_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum SchemeName {
    Tdes,
    Aes128,
    Aes256,
}

/// Which derived key encrypts the secret. TDES: pin = PIN variant (EVO's samples), data-request =
/// data variant plus the standard one-way step, data-request-legacy = variant only.
/// AES: pin = usage 1000, data-request = 3000, data-both = 3002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariantName {
    #[default]
    Pin,
    DataRequest,
    DataRequestLegacy,
    DataBoth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum AesKeyName {
    Aes128,
    Aes256,
}

/// The decrypted secret's fields, separated by `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum SecretFormat {
    /// `MerchantProfileId|DeviceSerialNumber` (the older documented form).
    #[default]
    #[serde(rename = "MerchantProfileId|DeviceSerialNumber")]
    TwoField,
    /// `MerchantProfileId|DeviceSerialNumber|ServiceId` (the newer documented form).
    #[serde(rename = "MerchantProfileId|DeviceSerialNumber|ServiceId")]
    ThreeField,
}

impl SecretFormat {
    pub fn fields(self) -> usize {
        match self {
            SecretFormat::TwoField => 2,
            SecretFormat::ThreeField => 3,
        }
    }
}

/// One configured BDK, ready to use.
pub struct BdkConfig {
    pub id: String,
    pub bdk: Bdk,
    pub key_set_ids: Vec<String>,
    /// How the terminal's secret was encrypted.
    pub secret_usage: KeyUsage,
    /// How the terminal's track data was encrypted.
    pub track_usage: KeyUsage,
    pub secret_format: SecretFormat,
    pub service_keys: Vec<String>,
    pub vendor_ids: Vec<String>,
}

impl fmt::Debug for BdkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BdkConfig")
            .field("id", &self.id)
            .field("scheme", &self.bdk.scheme())
            .field("key", &"<redacted>")
            .field("key_set_ids", &self.key_set_ids)
            .finish_non_exhaustive()
    }
}

fn allows(list: &[String], value: &str) -> bool {
    list.iter()
        .any(|v| v == "*" || crate::util::ct_eq(v.as_bytes(), value.as_bytes()))
}

impl BdkConfig {
    pub fn allows_service_key(&self, service_key: &str) -> bool {
        allows(&self.service_keys, service_key)
    }
    pub fn allows_vendor(&self, vendor_id: &str) -> bool {
        allows(&self.vendor_ids, vendor_id)
    }
}

/// Everything secret the server holds.
#[derive(Debug)]
pub struct Keys {
    pub signing: KeyRing,
    pub bdks: Vec<BdkConfig>,
}

impl Keys {
    /// The BDK that serves a KSN, chosen by the KSN's key-set id and scheme.
    pub fn bdk_for(&self, ksn: &Ksn) -> Option<&BdkConfig> {
        let ksi = ksn.key_set_id();
        let tdes_ksn = matches!(ksn, Ksn::Tdes(_));
        self.bdks.iter().find(|b| {
            (b.bdk.scheme() == Scheme::Tdes) == tdes_ksn
                && b.key_set_ids.iter().any(|k| k.eq_ignore_ascii_case(&ksi))
        })
    }

    /// Load and check the key file; refuse one that group or others can read.
    pub fn load(path: &Path) -> Result<Keys, ConfigError> {
        Self::from_file(path, read_key_file(path)?)
    }

    fn from_file(path: &Path, file: KeyFile) -> Result<Keys, ConfigError> {
        let mut signing = Vec::new();
        for e in &file.signing_keys {
            let mut key = [0u8; 32];
            hex::decode_to_slice(e.key.as_bytes(), &mut key).map_err(|_| {
                keys_err(
                    path,
                    format!("signing key {:?}: key must be 64 hex digits", e.kid),
                )
            })?;
            let k = SigningKey::new(&e.kid, key).map_err(|err| keys_err(path, err))?;
            zeroize::Zeroize::zeroize(&mut key);
            signing.push(k);
        }
        let signing = KeyRing::new(signing, &file.active_signing_key).ok_or_else(|| {
            keys_err(
                path,
                "active_signing_key must name one [[signing_key]] and kids must be unique",
            )
        })?;

        let mut bdks = Vec::new();
        for e in &file.bdks {
            let scheme = match e.scheme {
                SchemeName::Tdes => Scheme::Tdes,
                SchemeName::Aes128 => Scheme::Aes128,
                SchemeName::Aes256 => Scheme::Aes256,
            };
            let bdk = Bdk::from_hex(scheme, &e.key).map_err(|_| {
                keys_err(
                    path,
                    format!(
                        "bdk {:?}: key is not {} hex digits",
                        e.id,
                        if scheme == Scheme::Aes256 { 64 } else { 32 }
                    ),
                )
            })?;
            let ksi_len = if scheme == Scheme::Tdes { 10 } else { 8 };
            for k in &e.key_set_ids {
                if k.len() != ksi_len || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(keys_err(
                        path,
                        format!(
                            "bdk {:?}: key_set_id {k:?} must be {ksi_len} hex digits",
                            e.id
                        ),
                    ));
                }
            }
            if e.key_set_ids.is_empty() || e.service_keys.is_empty() || e.vendor_ids.is_empty() {
                return Err(keys_err(
                    path,
                    format!(
                        "bdk {:?}: key_set_ids, service_keys and vendor_ids must not be empty \
                         (use \"*\" to allow any service key or vendor)",
                        e.id
                    ),
                ));
            }
            let working = match (e.working_key, scheme) {
                (Some(AesKeyName::Aes256), _) => AesKeyType::Aes256,
                (Some(AesKeyName::Aes128), _) => AesKeyType::Aes128,
                (None, Scheme::Aes256) => AesKeyType::Aes256,
                (None, _) => AesKeyType::Aes128,
            };
            let usage = |v: VariantName| -> Result<KeyUsage, ConfigError> {
                key_usage(v, scheme, working).ok_or_else(|| {
                    keys_err(
                        path,
                        format!("bdk {:?}: variant {v:?} does not apply to {scheme:?}", e.id),
                    )
                })
            };
            let secret_usage = usage(e.variant)?;
            let track_usage = usage(e.track_variant.unwrap_or(e.variant))?;
            if bdks.iter().any(|b: &BdkConfig| b.id == e.id) {
                return Err(keys_err(path, format!("bdk id {:?} appears twice", e.id)));
            }
            bdks.push(BdkConfig {
                id: e.id.clone(),
                bdk,
                key_set_ids: e.key_set_ids.iter().map(|k| k.to_uppercase()).collect(),
                secret_usage,
                track_usage,
                secret_format: e.secret_format,
                service_keys: e.service_keys.clone(),
                vendor_ids: e.vendor_ids.clone(),
            });
        }
        for (i, b) in bdks.iter().enumerate() {
            for o in &bdks[..i] {
                if (o.bdk.scheme() == Scheme::Tdes) == (b.bdk.scheme() == Scheme::Tdes)
                    && b.key_set_ids.iter().any(|k| o.key_set_ids.contains(k))
                {
                    return Err(keys_err(
                        path,
                        format!("bdks {:?} and {:?} share a key_set_id", o.id, b.id),
                    ));
                }
            }
        }
        Ok(Keys { signing, bdks })
    }
}

fn key_usage(v: VariantName, scheme: Scheme, aes_key_type: AesKeyType) -> Option<KeyUsage> {
    let (tdes_variant, tdes_data_owf, aes_usage) = match (v, scheme) {
        (VariantName::Pin, _) => (TdesVariant::Pin, false, AesUsage::Pin),
        (VariantName::DataRequest, _) => (TdesVariant::DataRequest, true, AesUsage::DataEncrypt),
        (VariantName::DataRequestLegacy, Scheme::Tdes) => {
            (TdesVariant::DataRequest, false, AesUsage::DataEncrypt)
        }
        (VariantName::DataBoth, Scheme::Aes128 | Scheme::Aes256) => {
            (TdesVariant::DataRequest, true, AesUsage::DataBoth)
        }
        _ => return None,
    };
    Some(KeyUsage {
        tdes_variant,
        tdes_data_owf,
        aes_usage,
        aes_key_type,
    })
}

/// Read the key file after checking that only its owner can read it.
fn read_key_file(path: &Path) -> Result<KeyFile, ConfigError> {
    check_private(path)?;
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
        );
    // toml's messages quote the offending line, which may hold a key: keep only the position.
    toml::from_str(&text).map_err(|e| {
        keys_err(
            path,
            format!("not a valid key file (near byte {:?})", e.span()),
        )
    })
}

/// Add a fresh signing key to the key file and make it the active one. Older keys stay, so
/// tokens they signed keep verifying; remove one only after `lifetime_days` have passed.
/// The file is replaced atomically and stays mode 600. Returns the new key id.
pub fn rotate_signing_key(path: &Path) -> Result<String, ConfigError> {
    let mut file = read_key_file(path)?;
    let sk = SigningKey::generate();
    file.signing_keys.push(SigningKeyEntry {
        kid: sk.kid().to_owned(),
        key: Zeroizing::new(sk.key_hex().to_string()),
    });
    file.active_signing_key = sk.kid().to_owned();
    let out = Zeroizing::new(toml::to_string_pretty(&file).map_err(|e| keys_err(path, e))?);
    // Check the result loads before it replaces anything.
    let reparsed: KeyFile = toml::from_str(&out).map_err(|e| keys_err(path, e))?;
    Keys::from_file(path, reparsed)?;
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, &out)?;
    std::fs::rename(&tmp, path).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(sk.kid().to_owned())
}

#[cfg(unix)]
pub(crate) fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::KeyFileTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_private(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

/// Write `contents` to a new file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    let werr = |source| ConfigError::Write {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ConfigError::Exists(path.to_owned())
        } else {
            werr(e)
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)
}

// ---------------------------------------------------------------------------------------------
// Dev defaults

/// The ANSI X9.24 test BDK: public, for development only.
pub const ANSI_TEST_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";
/// The AES test BDK from the X9.24-3 supplement: public, for development only.
pub const AES_TEST_BDK: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
pub const DEV_SERVICE_KEY: &str = "6B2866C8FD500001";
pub const DEV_VENDOR_ID: &str = "A96A5D589D";

/// The dev key file: the public test BDKs and a fresh random signing key.
pub fn dev_key_file() -> Zeroizing<String> {
    let sk = SigningKey::generate();
    Zeroizing::new(format!(
        r#"# snapgate DEV key file: public ANSI/X9 test BDKs. Never use these keys in production.
# Keep this file mode 600: snapgate refuses to start on a key file others can read.
active_signing_key = "{kid}"

[[signing_key]]
kid = "{kid}"
key = "{key}"

# TDES DUKPT, ANSI test BDK. Key-set ids: the X9.24 sample KSN, EVO's Magensa sample and
# EVO's RegisterTerminal sample.
[[bdk]]
id = "ansi-test-tdes"
scheme = "tdes"
key = "{tdes}"
key_set_ids = ["FFFF987654", "9010010B0C", "FFFF007900"]
variant = "pin"
secret_format = "MerchantProfileId|DeviceSerialNumber"
service_keys = ["{sk}"]
vendor_ids = ["{vendor}"]

# AES-128 DUKPT, X9.24-3 test BDK, BDK ID 12345678.
[[bdk]]
id = "x9-test-aes128"
scheme = "aes128"
key = "{aes}"
key_set_ids = ["12345678"]
variant = "data-request"
secret_format = "MerchantProfileId|DeviceSerialNumber"
service_keys = ["{sk}"]
vendor_ids = ["{vendor}"]
"#,
        kid = sk.kid(),
        key = sk.key_hex().as_str(),
        tdes = ANSI_TEST_BDK,
        aes = AES_TEST_BDK,
        sk = DEV_SERVICE_KEY,
        vendor = DEV_VENDOR_ID,
    ))
}

/// The dev config file, with every setting written out.
pub fn dev_config_file(listen: SocketAddr, admin: Option<SocketAddr>) -> String {
    let mut cfg = Config::default();
    cfg.server.listen = listen;
    cfg.server.admin_listen = admin;
    format!(
        "# snapgate dev config, written by `snapgate init`. Paths are relative to this file.\n{}",
        toml::to_string_pretty(&cfg).expect("config serializes")
    )
}

/// Write a dev config and key file into `dir` (which is created). Returns the config path.
pub fn init_dev(dir: &Path, listen: SocketAddr) -> Result<PathBuf, ConfigError> {
    init_dev_with_admin(dir, listen, None)
}

/// `init_dev` with an admin listener (metrics, health, operator endpoints) written in.
pub fn init_dev_with_admin(
    dir: &Path,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<PathBuf, ConfigError> {
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let cfg_path = dir.join("snapgate.toml");
    let keys_path = dir.join("keys.toml");
    if cfg_path.exists() {
        return Err(ConfigError::Exists(cfg_path));
    }
    if !keys_path.exists() {
        write_private(&keys_path, &dev_key_file())?;
    }
    std::fs::write(&cfg_path, dev_config_file(listen, admin)).map_err(|source| {
        ConfigError::Write {
            path: cfg_path.clone(),
            source,
        }
    })?;
    Ok(cfg_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_files_load_and_select_bdks_by_key_set_id() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        assert_eq!(cfg.token.lifetime_days, 90);
        assert_eq!(cfg.token.refresh_age_days, 30);
        let keys = Keys::load(&cfg.security.keys_file).unwrap();
        let ksn = Ksn::parse_hex("9010010B0C2472000021").unwrap();
        assert_eq!(keys.bdk_for(&ksn).unwrap().id, "ansi-test-tdes");
        let aes = Ksn::parse_hex("123456789012345600000001").unwrap();
        assert_eq!(keys.bdk_for(&aes).unwrap().id, "x9-test-aes128");
        assert!(keys
            .bdk_for(&Ksn::parse_hex("AAAAAAAAAA2472000021").unwrap())
            .is_none());
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains(ANSI_TEST_BDK) && !dbg.contains(AES_TEST_BDK));
        // init never overwrites.
        assert!(matches!(
            init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()),
            Err(ConfigError::Exists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        std::fs::write(&p, dev_key_file().as_str()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keys::load(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn key_file_errors_never_quote_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        let bad = dev_key_file().replace("scheme = \"tdes\"", "scheme = \"tdes\"\nbogus = 1");
        write_private(&p, &bad).unwrap();
        let err = Keys::load(&p).unwrap_err().to_string();
        assert!(!err.contains(ANSI_TEST_BDK), "{err}");
        let short = dev_key_file().replace(ANSI_TEST_BDK, "0123456789ABCDEFFEDCBA98765432");
        let p2 = dir.path().join("keys2.toml");
        write_private(&p2, &short).unwrap();
        let err = Keys::load(&p2).unwrap_err().to_string();
        assert!(
            err.contains("32 hex digits") && !err.contains("0123456789ABCDEF"),
            "{err}"
        );
    }

    #[test]
    fn rotation_adds_an_active_key_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let keys_path = Config::load(&cfg_path).unwrap().security.keys_file;
        let before = Keys::load(&keys_path).unwrap();
        let old_kid = before.signing.active().kid().to_owned();
        let new_kid = rotate_signing_key(&keys_path).unwrap();
        let after = Keys::load(&keys_path).unwrap();
        assert_eq!(after.signing.active().kid(), new_kid);
        assert_ne!(new_kid, old_kid);
        assert!(after.signing.keys().iter().any(|k| k.kid() == old_kid));
        assert_eq!(after.bdks.len(), before.bdks.len());
    }

    #[test]
    fn refresh_age_must_be_below_lifetime() {
        let t = TokenConfig {
            refresh_age_days: 90,
            ..TokenConfig::default()
        };
        assert!(t.validate().is_err());
        assert!(TokenConfig::default().validate().is_ok());
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    #[test]
    fn the_defaults_are_within_every_bound() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn each_out_of_range_setting_is_refused_by_name() {
        type Edit = fn(&mut Config);
        let cases: &[(&str, Edit)] = &[
            ("token.lifetime_days", |c| c.token.lifetime_days = u32::MAX),
            ("store.cache_mb", |c| c.store.cache_mb = u64::MAX >> 10),
            ("store.cache_mb", |c| c.store.cache_mb = 0),
            ("limits.max_header_bytes", |c| {
                c.limits.max_header_bytes = 100
            }),
            ("limits.max_connections", |c| c.limits.max_connections = 0),
            ("limits.handler_timeout_ms", |c| {
                c.limits.handler_timeout_ms = 0
            }),
            ("limits.max_body_bytes", |c| {
                c.limits.max_body_bytes = usize::MAX
            }),
            ("store.group_commit_window_us", |c| {
                c.store.group_commit_window_us = u64::MAX
            }),
            ("security.lockout.window_seconds", |c| {
                c.security.lockout.window_seconds = 0
            }),
            ("processor.upstream_timeout_ms", |c| {
                c.processor.upstream_timeout_ms = u64::MAX
            }),
        ];
        for (name, edit) in cases {
            let mut c = Config::default();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(name), "{name}: {err}");
        }
    }

    #[test]
    fn a_huge_lifetime_in_a_file_is_a_load_error_not_a_panic_later() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("snapgate.toml");
        std::fs::write(&p, "[token]\nlifetime_days = 4000000000\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("token.lifetime_days"), "{e}");
    }

    #[test]
    fn overrides_are_merged_then_validated() {
        let o = Overrides {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            log_format: Some(LogFormat::Json),
            log_level: Some("debug".into()),
        };
        let c = Config::default().resolve(o).unwrap();
        assert_eq!(c.server.listen.port(), 1);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        let mut bad = Config::default();
        bad.limits.max_connections = 0;
        assert!(bad.resolve(Overrides::default()).is_err());
    }

    #[test]
    fn settings_carry_no_copy_of_the_live_token_section() {
        let mut c = Config::default();
        c.token.lifetime_days = 7;
        c.token.refresh_age_days = 2;
        let (_settings, token) = c.into_settings();
        assert_eq!(token.lifetime_days, 7);
    }
}
