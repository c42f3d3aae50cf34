//! What the Cloud Connector keeps: OAuth2 clients (id, Argon2id hash of the secret, role and
//! scope) and device presence (which devices exist, which node holds each one now). Both sit
//! behind `ConnectorStore`, so a shared engine (PostgreSQL) can serve several nodes; the sled
//! implementation here uses two trees of the main database.
//!
//! Clients are durable when `put_client` / `remove_client` return (they flush). Presence is soft
//! state: written without a flush, corrected on the device's next connection, and a node marks
//! its own devices offline when it starts (`forget_node`).

use super::StoreError;
use serde::{Deserialize, Serialize};

/// What a client may do: register devices, claim them from a POS, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRole {
    Device,
    Pos,
    Both,
}

impl ClientRole {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "device" => Some(ClientRole::Device),
            "pos" => Some(ClientRole::Pos),
            "both" => Some(ClientRole::Both),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Device => "device",
            ClientRole::Pos => "pos",
            ClientRole::Both => "both",
        }
    }
    pub fn device(self) -> bool {
        self != ClientRole::Pos
    }
    pub fn pos(self) -> bool {
        self != ClientRole::Device
    }
}

/// The devices a client reaches: a merchant aggregator's (store None) or one store's, and for a
/// POS optionally a single terminal (a POS paired with that terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub merchant: String,
    pub store: Option<String>,
    pub tsn: Option<String>,
}

impl Scope {
    /// Whether a client with this scope may reach a device registered under `owner`.
    pub fn covers(&self, owner: &Scope, tsn: &str) -> bool {
        self.merchant == owner.merchant
            && (self.store.is_none() || self.store == owner.store)
            && self.tsn.as_deref().is_none_or(|t| t == tsn)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: String,
    /// The `{domain}` of the token endpoint this client authenticates at.
    pub domain: String,
    /// Argon2id PHC string of the secret. Never the secret itself.
    pub secret_hash: String,
    pub role: ClientRole,
    pub scope: Scope,
    pub created_at_ms: i64,
}

/// A device as the connector last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub tsn: String,
    /// The client that registered it, and that client's scope then.
    pub client_id: String,
    pub owner: Scope,
    /// The node holding its connection (its public base URL), while online.
    pub node: Option<String>,
    pub online: bool,
    pub last_seen_ms: i64,
}

pub trait ConnectorStore: Send + Sync {
    /// Create or replace a client; durable on return.
    fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError>;
    fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// False if there was no such client; durable on return.
    fn remove_client(&self, id: &str) -> Result<bool, StoreError>;
    fn put_device(&self, d: &DeviceRecord) -> Result<(), StoreError>;
    fn get_device(&self, tsn: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// Up to `limit` devices in tsn order after `after`.
    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Mark offline every device `node` held (the node restarted or left).
    fn forget_node(&self, node: &str) -> Result<usize, StoreError>;
}

/// The sled engine: trees `connector_clients` and `connector_devices`, postcard values.
#[derive(Clone)]
pub struct SledConnectorStore {
    /// The node's store: its `flush` fdatasyncs sled's log (acknowledged = durable).
    store: super::SledStore,
    clients: sled::Tree,
    devices: sled::Tree,
}

impl SledConnectorStore {
    pub fn open(store: &super::SledStore) -> Result<Self, StoreError> {
        let db = store.db();
        Ok(SledConnectorStore {
            store: store.clone(),
            clients: db.open_tree("connector_clients")?,
            devices: db.open_tree("connector_devices")?,
        })
    }
}

fn dec<T: for<'a> Deserialize<'a>>(v: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(v)?)
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("records always serialize")
}

impl ConnectorStore for SledConnectorStore {
    fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        self.clients.insert(c.id.as_bytes(), enc(c))?;
        super::TerminalStore::flush(&self.store)
    }

    fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        self.clients
            .get(id.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.clients.iter().map(|kv| dec(&kv?.1)).collect()
    }

    fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        let gone = self.clients.remove(id.as_bytes())?.is_some();
        super::TerminalStore::flush(&self.store)?;
        Ok(gone)
    }

    fn put_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        self.devices.insert(d.tsn.as_bytes(), enc(d))?;
        Ok(())
    }

    fn get_device(&self, tsn: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.devices
            .get(tsn.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let iter = match after {
            Some(a) => self.devices.range((
                std::ops::Bound::Excluded(a.as_bytes().to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.devices.iter(),
        };
        iter.take(limit).map(|kv| dec(&kv?.1)).collect()
    }

    fn forget_node(&self, node: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.devices.iter() {
            let (k, v) = kv?;
            let mut d: DeviceRecord = dec(&v)?;
            if d.online && d.node.as_deref() == Some(node) {
                d.online = false;
                d.node = None;
                // Only if unchanged: another node may have taken the device meanwhile.
                let _ = self.devices.compare_and_swap(k, Some(v), Some(enc(&d)))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(m: &str, s: Option<&str>, t: Option<&str>) -> Scope {
        Scope {
            merchant: m.into(),
            store: s.map(Into::into),
            tsn: t.map(Into::into),
        }
    }

    #[test]
    fn a_merchant_scope_covers_its_stores_and_a_store_scope_only_its_own() {
        let dev = scope("M", Some("S1"), None);
        assert!(scope("M", None, None).covers(&dev, "T1"));
        assert!(scope("M", Some("S1"), None).covers(&dev, "T1"));
        assert!(!scope("M", Some("S2"), None).covers(&dev, "T1"));
        assert!(!scope("N", None, None).covers(&dev, "T1"));
        assert!(scope("M", Some("S1"), Some("T1")).covers(&dev, "T1"));
        assert!(!scope("M", Some("S1"), Some("T1")).covers(&dev, "T2"));
        // A device registered merchant-wide is out of a store-scoped POS's reach.
        assert!(!scope("M", Some("S1"), None).covers(&scope("M", None, None), "T1"));
    }

    #[test]
    fn clients_and_devices_survive_a_reopen_and_forget_node_only_touches_that_node() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::store::SledStore::open(&dir.path().join("db")).unwrap();
            let s = SledConnectorStore::open(&db).unwrap();
            let c = ClientRecord {
                id: "c1".into(),
                domain: "test".into(),
                secret_hash: "$argon2id$x".into(),
                role: ClientRole::Pos,
                scope: scope("M", None, None),
                created_at_ms: 1,
            };
            s.put_client(&c).unwrap();
            for (tsn, node) in [("A", "n1"), ("B", "n2")] {
                s.put_device(&DeviceRecord {
                    tsn: tsn.into(),
                    client_id: "c1".into(),
                    owner: scope("M", None, None),
                    node: Some(node.into()),
                    online: true,
                    last_seen_ms: 1,
                })
                .unwrap();
            }
            assert_eq!(s.forget_node("n1").unwrap(), 1);
            crate::store::TerminalStore::flush(&db).unwrap();
        }
        let db = crate::store::tests::reopen(&dir.path().join("db"));
        let s = SledConnectorStore::open(&db).unwrap();
        assert_eq!(s.get_client("c1").unwrap().unwrap().domain, "test");
        assert!(!s.get_device("A").unwrap().unwrap().online);
        assert!(s.get_device("B").unwrap().unwrap().online);
        let after_a: Vec<_> = s
            .list_devices(Some("A"), 10)
            .unwrap()
            .into_iter()
            .map(|d| d.tsn)
            .collect();
        assert_eq!(after_a, ["B"]);
        assert!(s.remove_client("c1").unwrap());
        assert!(!s.remove_client("c1").unwrap());
        assert!(s.list_clients().unwrap().is_empty());
    }
}
