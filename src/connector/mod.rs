//! The Cloud Connector: a self-hosted relay between a POS and a payment device that cannot reach
//! each other on a local network. Both authenticate with OAuth2 client credentials (`oauth`) and
//! connect out over WebSockets on the main listener:
//!
//! - a device opens `/cloud-connector/v1/device-listener`, registers its terminal serial number
//!   (`tsn`), gets a connection URL with a single-use JWT (`jwt`), and connects there;
//! - a POS opens `/cloud-connector/v1/pos-listener`, claims a `tsn`, gets a session URL with a
//!   single-use JWT, and connects there;
//! - then `relay` moves opaque frames both ways, with `registry` keeping who holds what.
//!
//! Several nodes share the store (presence: which node holds each device) and the key file;
//! a claim at any node gets a session URL on the node that holds the device (docs/CONNECTOR.md).
//! Errors map to the wire in `error` only.

pub mod admin;
pub mod cli;
pub mod config;
pub mod error;
pub mod jwt;
pub mod oauth;
pub mod registry;
pub mod relay;
pub mod terminal;

use crate::app::App;
use crate::clock::Clock;
use crate::metrics::RelayMetrics;
use crate::store::connector::{
    tsn_matches, tsn_serial, ClientRecord, ConnectorStore, DeviceRecord, Scope,
};
use bytes::Bytes;
use error::{close, ConnectorError};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use jwt::{Claims, Kind};
use registry::{Bounds, Registry};
use relay::Role;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

pub use config::ConnectorConfig;

const TOKEN_PREFIX: &str = "/oauth2/v1/";
const PREFIX: &str = "/cloud-connector/v1/";
const DEVICES: &str = "devices/";
const SESSIONS: &str = "sessions/";

pub struct Connector {
    pub config: ConnectorConfig,
    pub keys: jwt::Keys,
    pub store: Arc<dyn ConnectorStore>,
    pub clock: Arc<dyn Clock>,
    pub registry: Registry,
    pub metrics: Arc<RelayMetrics>,
    pub hash_permits: Arc<Semaphore>,
    dummy: OnceLock<String>,
    pub max_body: usize,
    pub body_timeout: Duration,
    tls: bool,
    /// This node in presence records: its public URL, or "local" when it has none.
    pub node: String,
    /// Connection JWTs issued before this process started are refused: the used-jti memory
    /// below does not survive a restart.
    boot_s: i64,
    used: Mutex<UsedJtis>,
    /// Set at shutdown: connections attached from now on close with 1001 at once.
    stopping: std::sync::atomic::AtomicBool,
    /// Relay connections still running.
    live: std::sync::atomic::AtomicUsize,
    /// The presence heartbeat was started (once per Connector, by the first `server::run`).
    heartbeat: std::sync::atomic::AtomicBool,
    gone: tokio::sync::Notify,
}

#[derive(Default)]
struct UsedJtis {
    exp: HashMap<String, i64>,
    prune_at: usize,
}

impl Connector {
    pub fn new(
        cfg: &crate::config::Settings,
        store: Arc<dyn ConnectorStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<RelayMetrics>,
    ) -> Result<Arc<Connector>, String> {
        let c = &cfg.connector;
        let keys = if c.enabled {
            jwt::Keys::load_or_create(&c.secret_path(&cfg.store.path))?
        } else {
            // Never used: the routes are off. No key file is created for a disabled connector.
            jwt::Keys::from_secret(&rand::random::<[u8; 32]>())
        };
        let node = c
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| "local".into());
        if c.enabled {
            let n = store.forget_node(&node).map_err(|e| e.to_string())?;
            if n > 0 {
                tracing::info!(
                    devices = n,
                    "marked devices of this node's last run offline"
                );
            }
        }
        Ok(Arc::new(Connector {
            registry: Registry::new(
                Bounds {
                    buffer_messages: c.buffer_messages,
                    buffer_bytes: c.buffer_bytes,
                    max_sessions: c.max_sessions,
                    max_devices: c.max_devices,
                },
                metrics.clone(),
            ),
            keys,
            store,
            boot_s: clock.now().timestamp(),
            clock,
            metrics,
            hash_permits: Arc::new(Semaphore::new(c.hash_concurrency.max(1))),
            dummy: OnceLock::new(),
            max_body: cfg.limits.max_body_bytes,
            body_timeout: cfg.limits.body_timeout(),
            tls: cfg.tls.is_some(),
            node,
            used: Mutex::default(),
            stopping: Default::default(),
            live: Default::default(),
            heartbeat: Default::default(),
            gone: tokio::sync::Notify::new(),
            config: c.clone(),
        }))
    }

    /// Close every relay connection with 1001 (going away) and wait for them, at most the send
    /// timeout. The server calls this once it has stopped accepting.
    pub async fn shutdown(&self) {
        // A close order per connection (not a shared signal every relay loop would poll: that
        // was one lock shared by all connections, taken per message).
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.registry
            .close_all(close::GOING_AWAY, "server shutting down");
        let wait = async {
            loop {
                let notified = self.gone.notified();
                if self.live.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(self.config.send_timeout(), wait).await;
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// A hash of the configured cost for unknown client ids to be checked against.
    pub fn dummy_hash(&self) -> String {
        self.dummy
            .get_or_init(|| {
                oauth::hash_secret(
                    "no such client",
                    self.config.hash_memory_kib,
                    self.config.hash_iterations,
                )
                .unwrap_or_default()
            })
            .clone()
    }

    /// Mark `tsn` offline in presence (called under its slot lock, so in order).
    fn presence_offline(&self, tsn: &str) {
        // Under the slot lock: the store I/O runs off the async worker.
        crate::store::blocking(|| self.presence_offline_now(tsn))
    }

    fn presence_offline_now(&self, tsn: &str) {
        match self.store.get_device(tsn) {
            Ok(Some(mut d)) if d.node.as_deref() == Some(&self.node) => {
                d.online = false;
                d.node = None;
                d.last_seen_ms = self.now_ms();
                if let Err(e) = self.store.put_device(&d) {
                    tracing::warn!(error = %e, "could not record a device offline");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read device presence"),
        }
    }

    /// Refresh the presence of every device this node holds (connected or in its grace):
    /// `last_seen_ms` = now, so other nodes keep reading it as live. Under each slot's lock, so
    /// it is ordered with the connection's own presence writes; a record another node has taken
    /// meanwhile is left alone (`touch_device` is conditional on the record naming this node).
    /// Returns how many it refreshed.
    pub fn refresh_presence(&self) -> usize {
        let mut n = 0;
        for slot in self.registry.snapshot() {
            let s = slot.lock();
            if s.device.is_none() && s.grace.is_none() {
                continue;
            }
            match self
                .store
                .touch_device(&slot.tsn, &self.node, self.now_ms())
            {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not refresh device presence"),
            }
        }
        n
    }

    /// Start the presence heartbeat (once; later calls do nothing). It stops at shutdown or
    /// when the Connector is dropped.
    pub fn start_heartbeat(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.config.enabled || self.heartbeat.swap(true, SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = self.config.presence_refresh();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = weak.upgrade() else { return };
                if c.stopping.load(SeqCst) {
                    return;
                }
                // Store I/O (a network round trip on a shared engine): off the async workers.
                if let Err(e) = tokio::task::spawn_blocking(move || c.refresh_presence()).await {
                    tracing::error!(error = %e, "presence heartbeat panicked");
                }
            }
        });
    }

    /// Record a connection JWT's id as used; false if it was already.
    fn consume(&self, jti: &str, exp: i64) -> bool {
        let now = self.clock.now().timestamp();
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if u.exp.len() >= u.prune_at {
            u.exp.retain(|_, e| *e > now);
            u.prune_at = (u.exp.len() * 2).max(1024);
        }
        u.exp.insert(jti.to_owned(), exp).is_none()
    }

    /// Where clients reach this node: `public_url`, else ws(s)://Host.
    fn base_url<B>(&self, req: &Request<B>) -> Result<String, ConnectorError> {
        if let Some(u) = &self.config.public_url {
            return Ok(u.trim_end_matches('/').to_owned());
        }
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .ok_or_else(|| {
                ConnectorError::InvalidRequest("a valid Host header is required".into())
            })?;
        let scheme = if self.tls { "wss" } else { "ws" };
        Ok(format!("{scheme}://{host}"))
    }
}

/// Whether `path` is the connector's (the main listener's one hook).
pub fn handles(app: &App, path: &str) -> bool {
    app.config.connector.enabled && (path.starts_with(TOKEN_PREFIX) || path.starts_with(PREFIX))
}

/// Answer a connector request on the main listener.
pub async fn route(app: &App, _peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let c = app.connector.clone();
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix(TOKEN_PREFIX) {
        return match rest.strip_suffix("/token") {
            Some(domain) if !domain.is_empty() && !domain.contains('/') => {
                oauth::token_endpoint(&c, domain, req).await
            }
            _ => ConnectorError::NotFound.response(),
        };
    }
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let result = if req.method() != hyper::Method::GET {
        Err(ConnectorError::MethodNotAllowed)
    } else if rest == "device-listener" {
        match device_client(app, &c, &req).await {
            Ok(client) => listener(c, req, Role::Device, client),
            Err(e) => Err(e),
        }
    } else if rest == "pos-listener" {
        oauth::authorize(&c, &req, false).and_then(|client| listener(c, req, Role::Pos, client))
    } else if let Some(tsn) = rest.strip_prefix(DEVICES) {
        let tsn = tsn.to_owned();
        connect(app, c, req, Role::Device, &tsn)
    } else if let Some(tsn) = rest.strip_prefix(SESSIONS) {
        let tsn = tsn.to_owned();
        connect(app, c, req, Role::Pos, &tsn)
    } else {
        Err(ConnectorError::NotFound)
    };
    result.unwrap_or_else(|e| e.response())
}

/// A terminal serial number: fully qualified `make/model/serial` or the serial alone; 1 to 128
/// of A-Z a-z 0-9 . _ : - with `/` between non-empty parts.
pub fn valid_tsn(tsn: &str) -> bool {
    !tsn.is_empty()
        && tsn.len() <= 128
        && tsn.split('/').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerMessage {
    #[serde(rename = "type")]
    kind: String,
    tsn: String,
    #[serde(default)]
    takeover: bool,
}

/// Who opens the device listener: an OAuth2 device client, or (with `terminal_tokens`) a
/// terminal presenting its TerminalAccessToken.
async fn device_client(
    app: &App,
    c: &Connector,
    req: &Request<Incoming>,
) -> Result<ClientRecord, ConnectorError> {
    let token = oauth::bearer(req)?;
    if c.config.terminal_tokens && terminal::is_terminal_token(&token) {
        if token.len() > crate::token::MAX_TOKEN_CHARS {
            return Err(ConnectorError::InvalidToken);
        }
        return terminal::authorize(app, &token).await;
    }
    oauth::authorize(c, req, true)
}

/// A listener (its client already authorized): upgrade, read one register or claim message,
/// answer with a URL and a single-use JWT, close.
fn listener(
    c: Arc<Connector>,
    req: Request<Incoming>,
    role: Role,
    client: ClientRecord,
) -> Result<Response<Full<Bytes>>, ConnectorError> {
    if !crate::ws::is_upgrade(&req) {
        return Err(ConnectorError::UpgradeRequired);
    }
    let base = c.base_url(&req)?;
    let wsc = c.config.websocket();
    Ok(crate::ws::accept(req, wsc, move |mut ws| async move {
        let answer = match read_listener_message(&c, &mut ws, role).await {
            Ok(m) => match role {
                Role::Device => register(&c, &client, &base, &m),
                Role::Pos => claim(&c, &client, &base, &m),
            },
            Err(e) => Err(e),
        };
        let (text, code, reason) = match answer {
            Ok(v) => (v.to_string(), close::NORMAL, "done"),
            Err(e) => (e.json(true), e.close_code(), e.code()),
        };
        let send = ws.send(Message::text(text));
        if let Ok(Ok(())) = tokio::time::timeout(c.config.send_timeout(), send).await {
            relay::send_close(&mut ws, &c, code, reason).await;
            // Wait (briefly) for the client's close frame, so it reads our answer first.
            let _ = tokio::time::timeout(c.config.send_timeout(), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
    }))
}

async fn read_listener_message(
    c: &Connector,
    ws: &mut crate::ws::ServerStream,
    role: Role,
) -> Result<ListenerMessage, ConnectorError> {
    let expected = if role == Role::Device {
        "register"
    } else {
        "claim"
    };
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) => {
                    return Err(ConnectorError::InvalidRequest(format!(
                        "expected a text message {{\"type\":\"{expected}\",\"tsn\":...}}"
                    )))
                }
                _ => return Err(ConnectorError::InvalidRequest("connection closed".into())),
            }
        }
    };
    let text = tokio::time::timeout(c.config.listener_timeout(), read)
        .await
        .map_err(|_| ConnectorError::ListenerTimeout)??;
    let m: ListenerMessage = serde_json::from_str(text.as_str()).map_err(|_| {
        ConnectorError::InvalidRequest(format!("expected {{\"type\":\"{expected}\",\"tsn\":...}}"))
    })?;
    if m.kind != expected {
        return Err(ConnectorError::InvalidRequest(format!(
            "expected a message of type {expected}"
        )));
    }
    if !valid_tsn(&m.tsn) {
        return Err(ConnectorError::InvalidRequest(
            "tsn must be 1-128 of A-Z a-z 0-9 . _ : - with / between parts".into(),
        ));
    }
    Ok(m)
}

fn connection_jwt(
    c: &Connector,
    client: &ClientRecord,
    url: &str,
    tsn: &str,
    kind: Kind,
    takeover: bool,
) -> serde_json::Value {
    let now = c.clock.now().timestamp();
    let ttl = i64::from(c.config.connection_token_seconds.max(1));
    let token = c.keys.sign(&Claims {
        iss: jwt::ISSUER.into(),
        aud: url.to_owned(),
        sub: tsn.to_owned(),
        iat: now,
        exp: now + ttl,
        jti: jwt::random_id(),
        kind,
        client: client.id.clone(),
        takeover,
    });
    serde_json::json!({
        "type": if kind == Kind::Device { "connection" } else { "session" },
        "url": url,
        "token": token,
        "expires_in": ttl,
    })
}

/// A device registers its tsn: a device client may register any terminal of its merchant that
/// no other merchant holds (and only its own, if its scope names one: a terminal's token names
/// its serial, so it may register that serial alone or as make/model/serial).
fn register(
    c: &Connector,
    client: &ClientRecord,
    base: &str,
    m: &ListenerMessage,
) -> Result<serde_json::Value, ConnectorError> {
    if client
        .scope
        .tsn
        .as_deref()
        .is_some_and(|t| !tsn_matches(t, &m.tsn))
    {
        return Err(ConnectorError::OutOfScope);
    }
    if let Some(d) = crate::store::blocking(|| c.store.get_device(&m.tsn))? {
        if d.owner.merchant != client.scope.merchant {
            return Err(ConnectorError::OutOfScope);
        }
    }
    let url = format!("{base}{PREFIX}{DEVICES}{}", m.tsn);
    Ok(connection_jwt(c, client, &url, &m.tsn, Kind::Device, false))
}

/// Most devices `resolve` reads for one serial (every merchant's: the scope filter comes after),
/// and most it names in an ambiguity error.
const MAX_SERIAL_MATCHES: usize = 64;
const MAX_NAMED: usize = 8;

/// The device a claim for `tsn` means, among those the client's scope covers: the device
/// registered under exactly `tsn`; else the one device whose tsn matches it (`tsn_matches`: a
/// serial alone finds `make/model/serial`, and `make/model/serial` finds the serial alone);
/// several: `ambiguous_device`; none: `unknown_device`.
fn resolve(
    c: &Connector,
    client: &ClientRecord,
    tsn: &str,
) -> Result<DeviceRecord, ConnectorError> {
    let covered = |d: &DeviceRecord| client.scope.covers(&d.owner, &d.tsn);
    if let Some(d) = c.store.get_device(tsn)?.filter(covered) {
        return Ok(d);
    }
    let mut found: Vec<DeviceRecord> = c
        .store
        .devices_with_serial(tsn_serial(tsn), MAX_SERIAL_MATCHES)?
        .into_iter()
        .filter(|d| d.tsn != tsn && tsn_matches(tsn, &d.tsn) && covered(d))
        .collect();
    match found.len() {
        0 => Err(ConnectorError::UnknownDevice),
        1 => Ok(found.remove(0)),
        n => {
            let mut names: Vec<&str> = found.iter().take(MAX_NAMED).map(|d| &*d.tsn).collect();
            if n > MAX_NAMED {
                names.push("…");
            }
            Err(ConnectorError::AmbiguousDevice(names.join(", ")))
        }
    }
}

/// A POS claims a tsn: unknown or out of its scope is 404, ambiguous 409, offline 409, busy
/// 409; a device on another node gets a session URL on that node, if that node's presence
/// heartbeat is recent (`presence_ttl_ms`). The answer names the tsn the device registered.
fn claim(
    c: &Connector,
    client: &ClientRecord,
    base: &str,
    m: &ListenerMessage,
) -> Result<serde_json::Value, ConnectorError> {
    let d = crate::store::blocking(|| resolve(c, client, &m.tsn))?;
    let tsn = d.tsn.as_str();
    let local = d.node.as_deref() == Some(&c.node) || c.registry.get(tsn).is_some();
    let base = if local {
        if c.registry.get(tsn).is_none() {
            return Err(ConnectorError::DeviceOffline);
        }
        if let Some(e) = c.registry.check_claim(tsn, &client.id, m.takeover) {
            return Err(e);
        }
        if c.registry.sessions() >= c.config.max_sessions {
            return Err(ConnectorError::TooManySessions);
        }
        base.to_owned()
    } else {
        let live = d.live(c.now_ms(), c.config.presence_ttl());
        match d.node.as_deref().filter(|n| live && n.starts_with("ws")) {
            Some(node) => node.to_owned(), // the node that holds the device
            None => return Err(ConnectorError::DeviceOffline),
        }
    };
    let url = format!("{base}{PREFIX}{SESSIONS}{tsn}");
    let mut answer = connection_jwt(c, client, &url, tsn, Kind::Session, m.takeover);
    answer["tsn"] = tsn.into();
    Ok(answer)
}

/// A device's connection URL or a POS's session URL: check the single-use JWT, upgrade, attach,
/// relay.
fn connect(
    app: &App,
    c: Arc<Connector>,
    req: Request<Incoming>,
    role: Role,
    tsn: &str,
) -> Result<Response<Full<Bytes>>, ConnectorError> {
    if !valid_tsn(tsn) {
        return Err(ConnectorError::NotFound);
    }
    let token = oauth::bearer(&req)?;
    let aud = format!("{}{}", c.base_url(&req)?, req.uri().path());
    let kind = if role == Role::Device {
        Kind::Device
    } else {
        Kind::Session
    };
    let claims = c.keys.verify(&token, kind, &aud, &*c.clock)?;
    if claims.sub != tsn {
        return Err(ConnectorError::WrongAudience);
    }
    if claims.iat < c.boot_s {
        return Err(ConnectorError::InvalidToken);
    }
    // A removed client, or a terminal since revoked, may not connect with a JWT issued before.
    let client = crate::store::blocking(|| match terminal::lookup(app, &claims.client)? {
        Some(t) => Ok::<_, ConnectorError>(t),
        None => Ok(c.store.get_client(&claims.client)?),
    })?
    .ok_or(ConnectorError::InvalidToken)?;
    if !crate::ws::is_upgrade(&req) {
        return Err(ConnectorError::UpgradeRequired);
    }
    if role == Role::Pos {
        if c.registry.get(tsn).is_none() {
            return Err(ConnectorError::DeviceOffline);
        }
        if let Some(e) = c.registry.check_claim(tsn, &client.id, claims.takeover) {
            return Err(e);
        }
    }
    if !c.consume(&claims.jti, claims.exp) {
        return Err(ConnectorError::TokenReplayed);
    }
    let tsn = tsn.to_owned();
    let wsc = c.config.websocket();
    Ok(crate::ws::accept(req, wsc, move |mut ws| async move {
        let (out, inbox) = registry::outbox(c.config.max_queued_bytes);
        let now = c.now_ms();
        let attached = match role {
            Role::Device => {
                let record = DeviceRecord {
                    tsn: tsn.clone(),
                    client_id: client.id.clone(),
                    owner: Scope {
                        tsn: None,
                        ..client.scope.clone()
                    },
                    node: Some(c.node.clone()),
                    online: true,
                    last_seen_ms: now,
                };
                let store = c.store.clone();
                c.registry
                    .attach_device(&tsn, &client.id, now, out, move || {
                        if let Err(e) = crate::store::blocking(|| store.put_device(&record)) {
                            tracing::warn!(error = %e, "could not record device presence");
                        }
                    })
            }
            Role::Pos => c
                .registry
                .attach_pos(&tsn, &client.id, claims.takeover, now, out),
        };
        if let Ok((_, slot)) = &attached {
            // Attached while the server shuts down, after `close_all` ran: close it too.
            if c.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                c.registry
                    .close_all_in(slot, close::GOING_AWAY, "server shutting down");
            }
        }
        match attached {
            Ok((gen, slot)) => {
                tracing::debug!(tsn = %tsn, client = %client.id, gen, ?role, "connected");
                relay::run(c, ws, role, slot, gen, inbox).await;
            }
            Err(e) => {
                let _ = ws.send(Message::text(e.json(true))).await;
                relay::send_close(&mut ws, &c, e.close_code(), e.code()).await;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsns_are_serials_or_make_model_serial() {
        for ok in ["1234567", "PAX/A920/1234567", "v:1.2_3-4"] {
            assert!(valid_tsn(ok), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "a b", "a%2Fb", &"x".repeat(129)] {
            assert!(!valid_tsn(bad), "{bad}");
        }
    }
}
