//! POS pairing: a setup code buys a POS its mTLS client certificate.
//!
//! The operator (`snapgate pairing code`) or a registered terminal makes an 8-symbol code
//! (`code`); the POS sends `{"posId", "setupCode"}` over HTTPS or WSS (`exchange`) and gets the
//! seed's PEM bundle from the pairing CA (`ca`); the mTLS listener then accepts that
//! certificate, unless it was replaced or revoked (`trust`, checked on every handshake). State
//! lives behind `store::pairing::PairingStore`; errors reach the wire only through `error`.
//!
//! This file owns the `[pairing]` config, the `Pairing` service (codes, exchange, renewal,
//! revocation, the per-address limit and the key pool) and the hook into the shared listener.

pub mod admin;
pub mod ca;
pub mod code;
pub mod error;
pub mod exchange;
pub mod listener;
pub mod trust;

use crate::app::App;
use crate::store::pairing::{CodeRecord, IssuedCert, PairingStore};
use crate::store::{from_ms, to_ms};
use ca::{CaFiles, KeySource, PairingCa, Subject};
use chrono::{DateTime, Duration, Utc};
use error::PairingError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use zeroize::Zeroizing;

pub use exchange::route;

/// The `[pairing]` config section. Present: pairing is on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// The pairing listener: HTTPS and WSS with the `[tls]` server certificate, client
    /// certificates optional (a POS has none yet; renewal presents its current one).
    pub listen: Option<SocketAddr>,
    /// The root CA certificate POS systems trust (served at `GET /rootca`).
    pub root_cert_file: PathBuf,
    /// The issuing (intermediate) CA certificate and its key (PKCS#8 PEM, mode 600).
    pub ca_cert_file: PathBuf,
    pub ca_key_file: PathBuf,
    /// How long a setup code is valid.
    pub code_lifetime_seconds: u32,
    /// Wrong tries that kill a live code.
    pub max_code_failures: u32,
    /// Failed exchanges from one address, within `address_window_seconds`, before it gets 429.
    pub max_failures_per_address: u32,
    pub address_window_seconds: u32,
    pub address_lockout_seconds: u32,
    /// Addresses tracked at once (the limiter's memory bound).
    pub max_tracked_addresses: usize,
    /// Client certificate lifetime.
    pub cert_lifetime_days: u32,
    /// Largest exchange request (JSON body or WebSocket message).
    pub max_body_bytes: usize,
    /// RSA keys generated ahead in a background thread, so a burst of pairings does not wait
    /// for key generation (0: generate on demand, off the async workers).
    pub key_pool: usize,
    /// The addresses printed with a new code (the seed's "Details"); defaults to the listener.
    pub public_url: Option<String>,
}

impl Default for PairingConfig {
    fn default() -> Self {
        PairingConfig {
            listen: None,
            root_cert_file: "tls/pairing-root.pem".into(),
            ca_cert_file: "tls/pairing-ca.pem".into(),
            ca_key_file: "tls/pairing-ca-key.pem".into(),
            code_lifetime_seconds: 300,
            max_code_failures: 5,
            max_failures_per_address: 10,
            address_window_seconds: 60,
            address_lockout_seconds: 60,
            max_tracked_addresses: 100_000,
            cert_lifetime_days: 90,
            max_body_bytes: 16 * 1024,
            key_pool: 8,
            public_url: None,
        }
    }
}

impl PairingConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.root_cert_file,
            &mut self.ca_cert_file,
            &mut self.ca_key_file,
        ] {
            *p = base.join(&*p);
        }
    }

    pub fn ca_files(&self) -> CaFiles {
        CaFiles {
            root_cert: self.root_cert_file.clone(),
            ca_cert: self.ca_cert_file.clone(),
            ca_key: self.ca_key_file.clone(),
        }
    }

    pub fn code_lifetime(&self) -> Duration {
        Duration::seconds(self.code_lifetime_seconds.into())
    }

    pub fn cert_lifetime(&self) -> Duration {
        Duration::days(self.cert_lifetime_days.into())
    }
}

/// The `[pairing]` section `snapgate init --tls` appends (the CA files it wrote in tls/).
pub fn dev_config_section(listen: SocketAddr) -> String {
    format!(
        "\n# POS pairing, written by `snapgate init --tls`: a DEV pairing CA in tls/. See \
         docs/PAIRING.md.\n\
         [pairing]\n\
         listen = \"{listen}\"\n\
         root_cert_file = \"tls/pairing-root.pem\"\n\
         ca_cert_file = \"tls/pairing-ca.pem\"\n\
         ca_key_file = \"tls/pairing-ca-key.pem\"\n"
    )
}

/// `snapgate init --tls`: a DEV pairing CA in `<dir>/tls/` and a `[pairing]` section (pairing
/// listener on `listen`) appended to `<dir>/snapgate.toml`.
pub fn init_dev(dir: &Path, listen: SocketAddr) -> Result<ca::DevCa, crate::config::ConfigError> {
    let dev = ca::write_dev_ca(&dir.join("tls"))?;
    let cfg_path = dir.join("snapgate.toml");
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cfg_path)
        .and_then(|mut f| f.write_all(dev_config_section(listen).as_bytes()))
        .map_err(|source| crate::config::ConfigError::Write {
            path: cfg_path,
            source,
        })?;
    Ok(dev)
}

/// A code just made, with what to show.
pub struct NewCode {
    pub code: code::SetupCode,
    pub expires: DateTime<Utc>,
    pub terminal: Option<String>,
}

/// The pairing service of one node.
pub struct Pairing {
    pub cfg: PairingConfig,
    pub ca: PairingCa,
    pub store: Arc<dyn PairingStore>,
    limiter: AddressLimiter,
    pool: Arc<KeyPool>,
}

impl Pairing {
    /// Load the CA and open the store's pairing trees; start the key pool.
    pub fn open(cfg: &PairingConfig, store: Arc<dyn PairingStore>) -> Result<Pairing, String> {
        let ca = PairingCa::load(&cfg.ca_files()).map_err(|e| e.to_string())?;
        tracing::info!(
            root_sha256 = %ca.root_fingerprint(),
            "pairing CA loaded: POS systems should check this root fingerprint"
        );
        Ok(Pairing {
            limiter: AddressLimiter::new(cfg),
            pool: KeyPool::start(cfg.key_pool),
            cfg: cfg.clone(),
            ca,
            store,
        })
    }

    /// Make the live code for `terminal` (or the operator's slot), replacing its previous one.
    pub fn new_code(
        &self,
        terminal: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<NewCode, PairingError> {
        let code = code::generate();
        let expires = now + self.cfg.code_lifetime();
        let rec = CodeRecord {
            hash: code::hash(self.ca.code_key(), &code),
            slot: terminal.unwrap_or("operator").to_owned(),
            terminal: terminal.map(str::to_owned),
            created_ms: to_ms(now),
            expires_ms: to_ms(expires),
            failures: 0,
        };
        crate::store::blocking_io(|| {
            self.store.put_code(&rec)?;
            self.store.flush()
        })?;
        Ok(NewCode {
            code,
            expires,
            terminal: terminal.map(str::to_owned),
        })
    }

    /// The exchange: check the address limit, consume the code, issue. `scope` is the terminal
    /// the request's URL names, if any: wrong tries are charged to its code only.
    pub async fn exchange(
        &self,
        app: &App,
        peer: IpAddr,
        req: exchange::ExchangeRequest,
        scope: Option<&str>,
    ) -> Result<Zeroizing<String>, PairingError> {
        let now = app.clock.now();
        self.limiter.check(peer, now)?;
        // Checked before the code is consumed: a bad CSR must not burn the code.
        let csr = req
            .csr
            .as_deref()
            .map(ca::parse_csr)
            .transpose()
            .map_err(PairingError::BadCsr)?;
        let claimed = match code::normalise(&req.setup_code) {
            Some(c) => {
                let hash = code::hash(self.ca.code_key(), &c);
                crate::store::blocking_io(|| self.store.take_code(&hash))?
                    .filter(|r| code::same(&r.hash, &hash))
            }
            None => None,
        };
        let rec = match claimed {
            Some(r) if now < from_ms(r.expires_ms) => r,
            _ => {
                self.limiter.failed(peer, now);
                let killed = crate::store::blocking_io(|| {
                    self.store
                        .charge_failure(scope, self.cfg.max_code_failures, to_ms(now))
                })?;
                if killed > 0 {
                    tracing::info!(killed, "setup codes removed after wrong tries");
                }
                return Err(PairingError::InvalidCode);
            }
        };
        if let Some(s) = scope.filter(|s| rec.terminal.as_deref() != Some(*s)) {
            // A code used at another terminal's URL: consumed, refused.
            tracing::info!(scope = s, "setup code used at another terminal's address");
            return Err(PairingError::InvalidCode);
        }
        let who = Subject {
            pos_id: req.pos_id,
            terminal: rec.terminal,
        };
        self.issue(app, who, csr, "repaired").await
    }

    /// Issue and record a certificate for `who`; the POS's previous one is denied.
    async fn issue(
        &self,
        app: &App,
        who: Subject,
        csr: Option<rcgen::CertificateSigningRequestParams>,
        reason: &str,
    ) -> Result<Zeroizing<String>, PairingError> {
        let key = match csr {
            Some(c) => KeySource::Csr(Box::new(c)),
            None => KeySource::Generated(self.pool.take().await?),
        };
        let now = app.clock.now();
        let issued = self.ca.issue(&who, &key, now, self.cfg.cert_lifetime())?;
        let record = IssuedCert {
            pos_id: who.pos_id.clone(),
            serial: issued.serial.clone(),
            fingerprint: issued.fingerprint,
            terminal: who.terminal.clone(),
            issued_ms: to_ms(now),
            not_after_ms: to_ms(issued.not_after),
            from_csr: matches!(key, KeySource::Csr(_)),
        };
        // Durable before the POS hears of it (the old certificate is denied in the same write,
        // the code was consumed before). The pairing trees share the node's sled database, so
        // the node's group commit makes them durable: concurrent pairings share one fsync.
        let previous =
            crate::store::blocking_io(|| self.store.record_issue(&record, reason, to_ms(now)))?;
        app.commit
            .durable()
            .await
            .map_err(|e| PairingError::Internal(format!("durable write: {e}")))?;
        if previous.is_some() {
            app.metrics.pairing_cert_revoked(if reason == "renewed" {
                "renewed"
            } else {
                "repaired"
            });
        }
        tracing::info!(
            pos_id = %who.pos_id,
            terminal = who.terminal.as_deref().unwrap_or("-"),
            serial = %issued.serial,
            replaced = previous.is_some(),
            "client certificate issued"
        );
        let bundle = match &key {
            KeySource::Generated(k) => self.ca.bundle(Some(k), &issued.pem),
            KeySource::Csr(_) => self.ca.bundle(None, &issued.pem),
        };
        if let KeySource::Generated(mut k) = key {
            // The key leaves in the bundle only; wipe our PKCS#8 copy of it.
            zeroize::Zeroize::zeroize(&mut k);
        }
        Ok(bundle?)
    }

    /// Renewal over mTLS: `cert_der` is the client certificate the handshake verified (so it
    /// is ours and not denied). It must still be its POS's current one.
    pub async fn renew(
        &self,
        app: &App,
        cert_der: &[u8],
        csr: Option<String>,
    ) -> Result<Zeroizing<String>, PairingError> {
        use sha2::{Digest, Sha256};
        let fingerprint: [u8; 32] = Sha256::digest(cert_der).into();
        let pos_id = trust::pos_id_of(cert_der).ok_or(PairingError::NeedsCertificate)?;
        let current = crate::store::blocking_io(|| self.store.issued(&pos_id))?;
        let Some(current) = current.filter(|c| code::same(&c.fingerprint, &fingerprint)) else {
            return Err(PairingError::Unauthorized(
                "this certificate is not its POS's current certificate",
            ));
        };
        let csr = csr
            .as_deref()
            .map(ca::parse_csr)
            .transpose()
            .map_err(PairingError::BadCsr)?;
        let who = Subject {
            pos_id,
            terminal: current.terminal,
        };
        self.issue(app, who, csr, "renewed").await
    }

    /// Operator revocation: the POS's certificate is denied from the next handshake on.
    pub fn revoke(&self, app: &App, pos_id: &str) -> Result<Option<IssuedCert>, PairingError> {
        let out = crate::store::blocking_io(|| {
            let out = self.store.revoke(pos_id, to_ms(app.clock.now()))?;
            self.store.flush()?;
            Ok::<_, crate::store::StoreError>(out)
        })?;
        if out.is_some() {
            app.metrics.pairing_cert_revoked("revoked");
        }
        Ok(out)
    }

    /// The addresses a POS pairs at, for the operator's "Details".
    pub fn addresses(&self, terminal: Option<&str>) -> Vec<String> {
        let base = match (&self.cfg.public_url, self.cfg.listen) {
            (Some(u), _) => u.trim_end_matches('/').to_owned(),
            (None, Some(a)) => format!("https://{a}"),
            (None, None) => return Vec::new(),
        };
        let path = match terminal {
            Some(t) => format!("/pair/{}", ca::urn_part(t)),
            None => "/".to_owned(),
        };
        let wss = base.replacen("https://", "wss://", 1);
        vec![format!("{base}{path}"), format!("{wss}{path}")]
    }
}

/// An issued certificate as operators see it (no key material, nothing secret).
pub fn cert_json(c: &IssuedCert) -> serde_json::Value {
    serde_json::json!({
        "pos_id": c.pos_id,
        "serial": c.serial,
        "sha256": hex::encode(c.fingerprint),
        "terminal": c.terminal,
        "issued_at": from_ms(c.issued_ms).to_rfc3339(),
        "not_after": from_ms(c.not_after_ms).to_rfc3339(),
        "key_from_csr": c.from_csr,
    })
}

/// A code as the operator sees it once, with where to use it.
pub fn new_code_json(p: &Pairing, c: &NewCode) -> serde_json::Value {
    serde_json::json!({
        "setupCode": c.code.reveal(),
        "expiresAt": c.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "terminal": c.terminal,
        "addresses": p.addresses(c.terminal.as_deref()),
        "rootSha256": p.ca.root_fingerprint(),
    })
}

// ---------------------------------------------------------------------------------------------
// Per-address limit

#[derive(Clone, Copy)]
struct AddressEntry {
    window_start: DateTime<Utc>,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
}

/// Failed exchanges per source address, in memory and bounded, on the injectable clock.
struct AddressLimiter {
    max: u32,
    window: Duration,
    lockout: Duration,
    max_tracked: usize,
    map: Mutex<HashMap<IpAddr, AddressEntry>>,
}

impl AddressLimiter {
    fn new(cfg: &PairingConfig) -> Self {
        AddressLimiter {
            max: cfg.max_failures_per_address.max(1),
            window: Duration::seconds(cfg.address_window_seconds.into()),
            lockout: Duration::seconds(cfg.address_lockout_seconds.into()),
            max_tracked: cfg.max_tracked_addresses.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, ip: IpAddr, now: DateTime<Utc>) -> Result<(), PairingError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip).and_then(|e| e.locked_until) {
            Some(until) if now < until => {
                let secs = (until - now).num_seconds().max(1) as u64;
                Err(PairingError::TooManyAttempts(secs))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, ip: IpAddr, now: DateTime<Utc>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_tracked && !map.contains_key(&ip) {
            let (window, lockout) = (self.window, self.lockout);
            map.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || now - e.window_start < window.max(lockout)
            });
            if map.len() >= self.max_tracked {
                // Still full: forget the oldest window rather than grow without bound.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.window_start)
                    .map(|(k, _)| *k)
                {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(ip).or_insert(AddressEntry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now - e.window_start >= self.window || e.locked_until.is_some_and(|u| now >= u) {
            *e = AddressEntry {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= self.max {
            e.locked_until = Some(now + self.lockout);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Key pool

/// RSA-2048 keys made ahead by one background thread (keygen takes tens of ms of CPU; a burst
/// of pairings takes from the pool, and an empty pool falls back to `spawn_blocking`). The
/// thread ends once the pool is dropped.
pub struct KeyPool {
    keys: Mutex<Vec<rcgen::KeyPair>>,
    want: usize,
    wake: Condvar,
}

impl KeyPool {
    pub fn start(size: usize) -> Arc<KeyPool> {
        let pool = Arc::new(KeyPool {
            keys: Mutex::new(Vec::with_capacity(size)),
            want: size,
            wake: Condvar::new(),
        });
        if size > 0 {
            let weak = Arc::downgrade(&pool);
            let spawned = std::thread::Builder::new()
                .name("pairing-keygen".into())
                .spawn(move || KeyPool::refill(weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no key pool thread; keys are generated on demand");
            }
        }
        pool
    }

    fn refill(weak: Weak<KeyPool>) {
        loop {
            let Some(pool) = weak.upgrade() else { return };
            {
                let keys = pool.keys.lock().unwrap_or_else(|p| p.into_inner());
                if keys.len() >= pool.want {
                    // Wake on a take, or now and then to notice the pool was dropped.
                    let _ = pool
                        .wake
                        .wait_timeout(keys, std::time::Duration::from_millis(500));
                    continue;
                }
            }
            match ca::generate_key() {
                Ok(k) => pool.keys.lock().unwrap_or_else(|p| p.into_inner()).push(k),
                Err(e) => {
                    tracing::error!(error = %e, "key pool: RSA key generation failed");
                    return;
                }
            }
        }
    }

    /// Keys ready now.
    pub fn ready(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A fresh key: from the pool, or generated off the async workers.
    pub async fn take(&self) -> Result<rcgen::KeyPair, PairingError> {
        let pooled = self.keys.lock().unwrap_or_else(|p| p.into_inner()).pop();
        self.wake.notify_one();
        if let Some(k) = pooled {
            return Ok(k);
        }
        tokio::task::spawn_blocking(ca::generate_key)
            .await
            .map_err(|e| PairingError::Internal(format!("keygen task: {e}")))?
            .map_err(PairingError::from)
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        let keys = self.keys.get_mut().unwrap_or_else(|p| p.into_inner());
        for k in keys.iter_mut() {
            zeroize::Zeroize::zeroize(k);
        }
    }
}

impl Pairing {
    /// Keys waiting in the pool (for the benchmark and tests).
    pub fn pooled_keys(&self) -> usize {
        self.pool.ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_limit_locks_then_forgives_on_the_clock() {
        let cfg = PairingConfig {
            max_failures_per_address: 3,
            ..PairingConfig::default()
        };
        let l = AddressLimiter::new(&cfg);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        for _ in 0..2 {
            l.failed(ip, t);
            assert!(l.check(ip, t).is_ok());
        }
        l.failed(ip, t);
        match l.check(ip, t + Duration::seconds(10)) {
            Err(PairingError::TooManyAttempts(s)) => assert_eq!(s, 50),
            other => panic!("{other:?}"),
        }
        assert!(l.check("192.0.2.2".parse().unwrap(), t).is_ok());
        assert!(l.check(ip, t + Duration::seconds(60)).is_ok());
    }

    #[test]
    fn the_limiter_stays_bounded() {
        let cfg = PairingConfig {
            max_tracked_addresses: 4,
            ..PairingConfig::default()
        };
        let l = AddressLimiter::new(&cfg);
        let t = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        for i in 0..100u8 {
            l.failed(IpAddr::from([10, 0, 0, i]), t);
        }
        assert!(l.map.lock().unwrap().len() <= 4);
    }
}
