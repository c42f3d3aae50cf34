//! Cloud Connector clients and device presence in PostgreSQL (`connector_clients`,
//! `connector_devices`), shared by every node: a device registered on one node is found by a
//! POS on another. Client writes commit before they return; presence is soft state, as in the
//! sled engine.

use super::{dec, enc, p, PgStore, Pool};
use crate::store::connector::{ClientRecord, ConnectorStore, DeviceRecord};
use crate::store::StoreError;
use std::sync::Arc;

#[derive(Clone)]
pub struct PgConnector {
    pool: Arc<Pool>,
}

impl PgStore {
    pub fn connector(&self) -> PgConnector {
        PgConnector {
            pool: self.pool.clone(),
        }
    }
}

const C_PUT: &str = "INSERT INTO connector_clients (id, rec) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET rec = excluded.rec";
const C_GET: &str = "SELECT rec FROM connector_clients WHERE id = $1";
const C_ALL: &str = "SELECT rec FROM connector_clients ORDER BY id";
const C_DEL: &str = "DELETE FROM connector_clients WHERE id = $1";
const D_PUT: &str = "INSERT INTO connector_devices (tsn, node, online, rec) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tsn) DO UPDATE SET node = excluded.node, online = excluded.online, rec = excluded.rec";
const D_GET: &str = "SELECT rec FROM connector_devices WHERE tsn = $1";
const D_FIRST: &str = "SELECT rec FROM connector_devices ORDER BY tsn LIMIT $1";
const D_AFTER: &str = "SELECT rec FROM connector_devices WHERE tsn > $1 ORDER BY tsn LIMIT $2";
const D_OF_NODE: &str = "SELECT rec FROM connector_devices WHERE online AND node = $1";
/// Only if unchanged: another node may have taken the device meanwhile.
const D_OFFLINE: &str = "UPDATE connector_devices SET node = NULL, online = false, rec = $2 \
                         WHERE tsn = $1 AND rec = $3";

fn rec<T: serde::de::DeserializeOwned>(r: &postgres::Row) -> Result<T, StoreError> {
    dec(r.get::<_, &[u8]>(0))
}

const D_OF_SERIAL: &str = "SELECT rec FROM connector_devices \
                           WHERE regexp_replace(tsn, '^.*/', '') = $1 ORDER BY tsn LIMIT $2";
const D_NODE_ROW: &str = "SELECT rec FROM connector_devices WHERE tsn = $1 AND node = $2";
/// The heartbeat's write: only if the row is still the one read (so still this node's).
const D_TOUCH: &str = "UPDATE connector_devices SET online = true, rec = $2 \
                       WHERE tsn = $1 AND rec = $3";

impl ConnectorStore for PgConnector {
    fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        let params = vec![p(c.id.clone()), p(enc(c))];
        self.pool.execute(C_PUT, params).map(|_| ())
    }

    fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row = self.pool.query_opt(C_GET, vec![p(id.to_owned())])?;
        row.as_ref().map(rec).transpose()
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.pool.query(C_ALL, vec![])?.iter().map(rec).collect()
    }

    fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.pool.execute(C_DEL, vec![p(id.to_owned())])? > 0)
    }

    fn put_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        let params = vec![p(d.tsn.clone()), p(d.node.clone()), p(d.online), p(enc(d))];
        self.pool.execute(D_PUT, params).map(|_| ())
    }

    fn get_device(&self, tsn: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row = self.pool.query_opt(D_GET, vec![p(tsn.to_owned())])?;
        row.as_ref().map(rec).transpose()
    }

    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => self.pool.query(D_FIRST, vec![p(limit)])?,
            Some(a) => self.pool.query(D_AFTER, vec![p(a.to_owned()), p(limit)])?,
        };
        rows.iter().map(rec).collect()
    }

    fn forget_node(&self, node: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.pool.query(D_OF_NODE, vec![p(node.to_owned())])? {
            let old: Vec<u8> = r.get(0);
            let mut d: DeviceRecord = dec(&old)?;
            d.online = false;
            d.node = None;
            let params = vec![p(d.tsn.clone()), p(enc(&d)), p(old)];
            self.pool.execute(D_OFFLINE, params)?;
            n += 1;
        }
        Ok(n)
    }

    fn touch_device(&self, tsn: &str, node: &str, now_ms: i64) -> Result<bool, StoreError> {
        // Retried only while other writers get in between (each retry means someone wrote).
        for _ in 0..16 {
            let params = vec![p(tsn.to_owned()), p(node.to_owned())];
            let Some(row) = self.pool.query_opt(D_NODE_ROW, params)? else {
                return Ok(false); // gone, or another node holds it now
            };
            let old: Vec<u8> = row.get(0);
            let mut d: DeviceRecord = dec(&old)?;
            d.online = true;
            d.last_seen_ms = now_ms;
            let params = vec![p(tsn.to_owned()), p(enc(&d)), p(old)];
            if self.pool.execute(D_TOUCH, params)? == 1 {
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params = vec![p(serial.to_owned()), p(limit)];
        self.pool
            .query(D_OF_SERIAL, params)?
            .iter()
            .map(rec)
            .collect()
    }
}
