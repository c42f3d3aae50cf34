//! The connector's operator endpoints on the admin listener: device status (presence, session
//! holder, grace, buffer) and client management for `snapgate connector clients` while the
//! server runs (it holds the store's lock then).

use super::oauth;
use super::Connector;
use crate::store::connector::{ClientRole, ConnectorStore, DeviceRecord, Scope};
use serde_json::{json, Value};

/// One device as operators see it: presence from the store, live state from this node.
pub fn device_json(c: &Connector, d: &DeviceRecord) -> Value {
    let mut v = json!({
        "tsn": d.tsn,
        "client_id": d.client_id,
        "merchant": d.owner.merchant,
        "store": d.owner.store,
        // Online and its node's heartbeat recent; `presence_expired`: the store still says
        // online but the node stopped refreshing it (it died without marking it offline).
        "online": d.live(c.now_ms(), c.config.presence_ttl()),
        "presence_expired": d.online && !d.live(c.now_ms(), c.config.presence_ttl()),
        "node": d.node,
        "last_seen": crate::store::from_ms(d.last_seen_ms).to_rfc3339(),
        "connected_here": false,
        "in_grace": false,
        "session": null,
    });
    if let Some(slot) = c.registry.get(&d.tsn) {
        let s = slot.lock();
        v["connected_here"] = s.device.is_some().into();
        v["in_grace"] = s.grace.is_some().into();
        if let Some(dev) = &s.device {
            v["device_generation"] = dev.gen.into();
            v["connected_since"] = crate::store::from_ms(dev.since_ms).to_rfc3339().into();
        }
        if let Some(p) = &s.pos {
            let (n, bytes) = s.buffered();
            v["session"] = json!({
                "client_id": p.client,
                "generation": p.gen,
                "since": crate::store::from_ms(p.since_ms).to_rfc3339(),
                "buffered_messages": n,
                "buffered_bytes": bytes,
            });
        }
    }
    v
}

/// `GET /admin/connector/devices?after=TSN&limit=N`
pub fn devices(c: &Connector, after: Option<&str>, limit: usize) -> Result<Value, String> {
    let list = c
        .store
        .list_devices(after, limit)
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "node": c.node,
        "devices_connected_here": c.registry.devices(),
        "sessions_here": c.registry.sessions(),
        "devices": list.iter().map(|d| device_json(c, d)).collect::<Vec<_>>(),
    }))
}

/// The query of `POST /admin/connector/clients`: role, domain, merchant, store, tsn, id.
pub struct ClientSpec {
    pub id: Option<String>,
    pub domain: String,
    pub role: ClientRole,
    pub scope: Scope,
}

impl ClientSpec {
    pub fn from_query(q: &str) -> Result<ClientSpec, String> {
        let mut m = std::collections::HashMap::new();
        for kv in q.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = oauth::form_decode(v).ok_or("bad query encoding")?;
            m.insert(k.to_owned(), v);
        }
        let role = m.get("role").map(String::as_str).unwrap_or("");
        Ok(ClientSpec {
            id: m.get("id").cloned(),
            domain: m.get("domain").cloned().unwrap_or_else(|| "default".into()),
            role: ClientRole::parse(role).ok_or("role must be device, pos or both")?,
            scope: Scope {
                merchant: m.get("merchant").cloned().ok_or("merchant is required")?,
                store: m.get("store").cloned(),
                tsn: m.get("tsn").cloned(),
            },
        })
    }
}

/// Create a client; the answer holds its secret, the only time it is shown.
pub fn add(
    store: &dyn ConnectorStore,
    spec: ClientSpec,
    memory_kib: u32,
    iterations: u32,
    now_ms: i64,
) -> Result<Value, String> {
    let n = oauth::add_client(
        store,
        spec.id,
        &spec.domain,
        spec.role,
        spec.scope,
        memory_kib,
        iterations,
        now_ms,
    )?;
    let mut v = oauth::client_json(&n.record);
    v["client_secret"] = n.secret.as_str().into();
    Ok(v)
}

pub fn list(store: &dyn ConnectorStore) -> Result<Value, String> {
    let clients = store.list_clients().map_err(|e| e.to_string())?;
    Ok(Value::Array(
        clients.iter().map(oauth::client_json).collect(),
    ))
}

/// Remove a client: its access tokens stop working at once; live connections stay until they
/// end.
pub fn remove(store: &dyn ConnectorStore, id: &str) -> Result<bool, String> {
    store.remove_client(id).map_err(|e| e.to_string())
}

/// The admin listener's connector routes; None when the path is not ours.
pub fn route(
    c: &Connector,
    method: &hyper::Method,
    path: &str,
    query: &str,
) -> Option<(u16, Value)> {
    use hyper::Method;
    let store = &*c.store;
    let err = |status: u16, m: String| Some((status, json!({ "error": m })));
    match (method, path) {
        (&Method::GET, "/admin/connector/devices") => {
            let (mut after, mut limit) = (None, 100);
            for kv in query.split('&') {
                match kv.split_once('=') {
                    Some(("after", v)) => after = oauth::form_decode(v),
                    Some(("limit", v)) => limit = v.parse().unwrap_or(100).min(10_000),
                    _ => {}
                }
            }
            match devices(c, after.as_deref(), limit) {
                Ok(v) => Some((200, v)),
                Err(e) => err(500, e),
            }
        }
        (&Method::GET, "/admin/connector/clients") => match list(store) {
            Ok(v) => Some((200, v)),
            Err(e) => err(500, e),
        },
        (&Method::POST, "/admin/connector/clients") => {
            let spec = match ClientSpec::from_query(query) {
                Ok(s) => s,
                Err(e) => return err(400, e),
            };
            let cfg = &c.config;
            match add(
                store,
                spec,
                cfg.hash_memory_kib,
                cfg.hash_iterations,
                c.now_ms(),
            ) {
                Ok(v) => Some((200, v)),
                Err(e) => err(400, e),
            }
        }
        (&Method::DELETE, p) if p.starts_with("/admin/connector/clients/") => {
            let id = &p["/admin/connector/clients/".len()..];
            match remove(store, id) {
                Ok(true) => Some((200, json!({ "removed": id }))),
                Ok(false) => err(404, "no such client".into()),
                Err(e) => err(500, e),
            }
        }
        (_, p) if p.starts_with("/admin/connector/") => err(404, "not found".into()),
        _ => None,
    }
}
