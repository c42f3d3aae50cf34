//! What the Cloud Connector keeps: OAuth2 clients (id, Argon2id hash of the secret, role and
//! scope) and device presence (which devices exist, which node holds each one now). Both sit
//! behind `ConnectorStore`, so a shared engine (PostgreSQL) can serve several nodes; the sled
//! implementation here uses three trees of the main database (clients, devices, and an index of
//! devices by serial).
//!
//! Clients are durable when `put_client` / `remove_client` return (they flush). Presence is soft
//! state: written without a flush, corrected on the device's next connection, refreshed by its
//! node's heartbeat (`last_seen_ms`), read as offline once that heartbeat is older than the
//! presence lifetime (`DeviceRecord::live`), and a node marks its own devices offline when it
//! starts (`forget_node`).

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

/// The serial part of a tsn: the tsn itself, or the last part of `make/model/serial`.
pub fn tsn_serial(tsn: &str) -> &str {
    tsn.rsplit('/').next().unwrap_or(tsn)
}

/// Whether two tsns name the same terminal: equal, or one is a serial alone and the other a
/// fully qualified tsn ending with that serial. Two fully qualified tsns match only if equal.
pub fn tsn_matches(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let bare = |t: &str| !t.contains('/');
    (bare(a) || bare(b)) && tsn_serial(a) == tsn_serial(b)
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
            && self.tsn.as_deref().is_none_or(|t| tsn_matches(t, tsn))
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
    /// When the device was last seen: its connection or its end, and while it stays connected
    /// the holding node's presence heartbeat (every third of the presence lifetime).
    pub last_seen_ms: i64,
}

impl DeviceRecord {
    /// Online, and its node's heartbeat is at most `ttl_ms` old at `now_ms`: a node that died
    /// without marking its devices offline stops refreshing them, and they read as offline.
    pub fn live(&self, now_ms: i64, ttl_ms: u64) -> bool {
        self.online && now_ms.saturating_sub(self.last_seen_ms) <= ttl_ms as i64
    }
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
    /// The presence heartbeat: if `tsn`'s record still names `node`, set it online with
    /// `last_seen_ms = now_ms` and return true; otherwise change nothing (another node took the
    /// device). This default reads then writes, so another node's write in between can be
    /// overwritten; an engine overrides it with one conditional write (sled: compare-and-swap;
    /// SQL: `UPDATE … SET online = true, last_seen_ms = $3 WHERE tsn = $1 AND node = $2`).
    fn touch_device(&self, tsn: &str, node: &str, now_ms: i64) -> Result<bool, StoreError> {
        match self.get_device(tsn)? {
            Some(mut d) if d.node.as_deref() == Some(node) => {
                d.online = true;
                d.last_seen_ms = now_ms;
                self.put_device(&d)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    /// Up to `limit` devices whose tsn's serial (`tsn_serial`) is `serial`, in tsn order: a
    /// claim by serial alone finds a device registered as make/model/serial. This default pages
    /// through `list_devices`; an engine with an index on the serial overrides it.
    fn devices_with_serial(
        &self,
        serial: &str,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut found = vec![];
        let mut after: Option<String> = None;
        loop {
            let page = self.list_devices(after.as_deref(), 1000)?;
            let Some(last) = page.last() else {
                return Ok(found);
            };
            after = Some(last.tsn.clone());
            for d in page {
                if tsn_serial(&d.tsn) == serial {
                    found.push(d);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
    }
}

/// The sled engine: trees `connector_clients` and `connector_devices`, postcard values, and
/// `connector_serials`, keys `serial 0x00 tsn` (empty values) for `devices_with_serial`.
#[derive(Clone)]
pub struct SledConnectorStore {
    /// The node's store: its `flush` fdatasyncs sled's log (acknowledged = durable).
    store: super::SledStore,
    clients: sled::Tree,
    devices: sled::Tree,
    serials: sled::Tree,
}

/// In `connector_serials`: the index covers every device (written once it was built). An empty
/// key, which no `serial 0x00 tsn` key can be.
const SERIALS_BUILT: &[u8] = b"";

fn serial_key(tsn: &str) -> Vec<u8> {
    let mut k = tsn_serial(tsn).as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(tsn.as_bytes());
    k
}

impl SledConnectorStore {
    pub fn open(store: &super::SledStore) -> Result<Self, StoreError> {
        let db = store.db();
        let s = SledConnectorStore {
            store: store.clone(),
            clients: db.open_tree("connector_clients")?,
            devices: db.open_tree("connector_devices")?,
            serials: db.open_tree("connector_serials")?,
        };
        // Devices stored before the index existed: index them once.
        if s.serials.get(SERIALS_BUILT)?.is_none() {
            for k in s.devices.iter().keys() {
                let k = k?;
                s.serials
                    .insert(serial_key(&String::from_utf8_lossy(&k)), &[][..])?;
            }
            s.serials.insert(SERIALS_BUILT, &[][..])?;
        }
        Ok(s)
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
        // Index first: a device is never stored without its index entry (records are never
        // removed, so neither is an entry).
        self.serials.insert(serial_key(&d.tsn), &[][..])?;
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

    fn touch_device(&self, tsn: &str, node: &str, now_ms: i64) -> Result<bool, StoreError> {
        // Retried while other writers get in between; each retry means someone else wrote, so
        // the bound is only against a pathological storm.
        for _ in 0..16 {
            let Some(v) = self.devices.get(tsn.as_bytes())? else {
                return Ok(false);
            };
            let mut d: DeviceRecord = dec(&v)?;
            if d.node.as_deref() != Some(node) {
                return Ok(false);
            }
            d.online = true;
            d.last_seen_ms = now_ms;
            if self
                .devices
                .compare_and_swap(tsn.as_bytes(), Some(v), Some(enc(&d)))?
                .is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn devices_with_serial(
        &self,
        serial: &str,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut prefix = serial.as_bytes().to_vec();
        prefix.push(0);
        let mut found = vec![];
        for k in self.serials.scan_prefix(&prefix).keys() {
            if found.len() >= limit {
                break;
            }
            let k = k?;
            if let Some(d) = self.devices.get(&k[prefix.len()..])? {
                found.push(dec(&d)?);
            }
        }
        Ok(found)
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

    #[test]
    fn a_serial_alone_matches_its_fully_qualified_tsns_and_two_full_ones_only_if_equal() {
        assert_eq!(tsn_serial("PAX/A920/123"), "123");
        assert_eq!(tsn_serial("123"), "123");
        for (a, b, m) in [
            ("123", "123", true),
            ("123", "PAX/A920/123", true),
            ("PAX/A920/123", "123", true),
            ("PAX/A920/123", "PAX/A920/123", true),
            ("PAX/A920/123", "VRF/P400/123", false),
            ("123", "PAX/A920/1234", false),
            ("23", "PAX/A920/123", false),
            ("A920/123", "PAX/A920/123", false),
        ] {
            assert_eq!(tsn_matches(a, b), m, "{a} ~ {b}");
        }
        // A POS limited to a terminal by its serial reaches it under its full tsn.
        let dev = scope("M", None, None);
        assert!(scope("M", None, Some("123")).covers(&dev, "PAX/A920/123"));
        assert!(!scope("M", None, Some("PAX/A920/123")).covers(&dev, "VRF/P400/123"));
    }

    #[test]
    fn presence_is_live_only_while_online_and_refreshed_within_its_lifetime() {
        let mut d = DeviceRecord {
            tsn: "T".into(),
            client_id: "c".into(),
            owner: scope("M", None, None),
            node: Some("n".into()),
            online: true,
            last_seen_ms: 1_000,
        };
        assert!(d.live(1_000, 90));
        assert!(d.live(1_090, 90));
        assert!(!d.live(1_091, 90));
        // A clock behind the writer's is not "stale".
        assert!(d.live(900, 90));
        d.online = false;
        assert!(!d.live(1_000, 90));
    }

    /// The trait's default `devices_with_serial` (a scan), through a store that does not
    /// override it.
    struct Scanning(SledConnectorStore);

    impl ConnectorStore for Scanning {
        fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
            self.0.put_client(c)
        }
        fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
            self.0.get_client(id)
        }
        fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
            self.0.list_clients()
        }
        fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
            self.0.remove_client(id)
        }
        fn put_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
            self.0.put_device(d)
        }
        fn get_device(&self, tsn: &str) -> Result<Option<DeviceRecord>, StoreError> {
            self.0.get_device(tsn)
        }
        fn list_devices(
            &self,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<DeviceRecord>, StoreError> {
            self.0.list_devices(after, limit)
        }
        fn forget_node(&self, node: &str) -> Result<usize, StoreError> {
            self.0.forget_node(node)
        }
    }

    #[test]
    fn touch_device_refreshes_only_a_record_that_names_the_node_by_cas_and_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::SledStore::open(&dir.path().join("db")).unwrap();
        let sled_store = SledConnectorStore::open(&db).unwrap();
        let by_default = Scanning(sled_store.clone());
        let stores: [&dyn ConnectorStore; 2] = [&sled_store, &by_default];
        for (i, s) in stores.into_iter().enumerate() {
            let tsn = format!("T{i}");
            let d = DeviceRecord {
                tsn: tsn.clone(),
                client_id: "c".into(),
                owner: scope("M", None, None),
                node: Some("n1".into()),
                online: false,
                last_seen_ms: 1,
            };
            s.put_device(&d).unwrap();
            assert!(s.touch_device(&tsn, "n1", 50).unwrap());
            let t = s.get_device(&tsn).unwrap().unwrap();
            assert!(t.online && t.last_seen_ms == 50, "{t:?}");
            assert!(!s.touch_device(&tsn, "n2", 60).unwrap());
            assert_eq!(s.get_device(&tsn).unwrap().unwrap(), t);
            assert!(!s.touch_device("nobody", "n1", 60).unwrap());
            assert!(s.get_device("nobody").unwrap().is_none());
        }
    }

    #[test]
    fn devices_with_serial_finds_every_tsn_of_a_serial_by_index_by_scan_and_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tsns = [
            "PAX/A920/123",
            "123",
            "VRF/P400/123",
            "1234",
            "PAX/A920/1234",
            "12",
        ];
        // 2,500 other devices, so the scan pages through `list_devices` more than twice.
        let others: Vec<String> = (0..2_500).map(|i| format!("X/Y/{i:05}")).collect();
        let dev = |tsn: &str| DeviceRecord {
            tsn: tsn.into(),
            client_id: "c".into(),
            owner: scope("M", None, None),
            node: None,
            online: false,
            last_seen_ms: 0,
        };
        let want = ["123", "PAX/A920/123", "VRF/P400/123"];
        let tsns_of = |v: Vec<DeviceRecord>| v.into_iter().map(|d| d.tsn).collect::<Vec<_>>();
        {
            let db = crate::store::SledStore::open(&dir.path().join("db")).unwrap();
            let s = SledConnectorStore::open(&db).unwrap();
            for t in tsns
                .iter()
                .copied()
                .chain(others.iter().map(String::as_str))
            {
                s.put_device(&dev(t)).unwrap();
            }
            assert_eq!(tsns_of(s.devices_with_serial("123", 10).unwrap()), want);
            assert_eq!(tsns_of(s.devices_with_serial("123", 2).unwrap()), want[..2]);
            assert_eq!(
                tsns_of(s.devices_with_serial("00042", 10).unwrap()),
                ["X/Y/00042"]
            );
            assert!(s.devices_with_serial("999", 10).unwrap().is_empty());
            let scan = Scanning(s.clone());
            assert_eq!(tsns_of(scan.devices_with_serial("123", 10).unwrap()), want);
            assert_eq!(
                tsns_of(scan.devices_with_serial("123", 2).unwrap()),
                want[..2]
            );
            assert_eq!(
                tsns_of(scan.devices_with_serial("02499", 10).unwrap()),
                ["X/Y/02499"]
            );
            // A store from before the index: devices written straight into their tree.
            db.db().drop_tree("connector_serials").unwrap();
            db.db()
                .open_tree("connector_devices")
                .unwrap()
                .insert(b"OLD/ONE/123", enc(&dev("OLD/ONE/123")))
                .unwrap();
            crate::store::TerminalStore::flush(&db).unwrap();
        }
        let db = crate::store::tests::reopen(&dir.path().join("db"));
        let s = SledConnectorStore::open(&db).unwrap();
        assert_eq!(
            tsns_of(s.devices_with_serial("123", 10).unwrap()),
            ["123", "OLD/ONE/123", "PAX/A920/123", "VRF/P400/123"]
        );
    }
}
