//! The connector's HTTP side on the main listener: the token endpoint hand-off, the device and
//! POS listeners (register, claim, and which device a claim means), and the connection URLs a
//! device or POS connects to with its single-use JWT, handed to `relay`.

use super::*;

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
pub(super) struct ListenerMessage {
    #[serde(rename = "type")]
    kind: String,
    tsn: String,
    #[serde(default)]
    takeover: bool,
}

/// Who opens the device listener: an OAuth2 device client, or (with `terminal_tokens`) a
/// terminal presenting its TerminalAccessToken.
pub(super) async fn device_client(
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
pub(super) fn listener(
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

pub(super) async fn read_listener_message(
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

pub(super) fn connection_jwt(
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
pub(super) fn register(
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
pub(super) fn resolve(
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
pub(super) fn claim(
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
pub(super) fn connect(
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
