//! Cloud Connector clients and device presence in PostgreSQL (`connector_clients`,
//! `connector_devices`), shared by every node: a device registered on one node is found by a
//! POS on another. Client writes commit before they return; presence is soft state, as in the
//! sled engine.

use super::{dec, enc, prepared, PgStore, Pool};
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

impl ConnectorStore for PgConnector {
    fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        let (id, rec) = (c.id.clone(), enc(c));
        self.pool.call(move |c, s| {
            let st = prepared(c, s, C_PUT)?;
            c.execute(&st, &[&id, &rec]).map(|_| ())
        })
    }

    fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let id = id.to_owned();
        let row = self.pool.call(move |c, s| {
            let st = prepared(c, s, C_GET)?;
            c.query_opt(&st, &[&id])
        })?;
        row.map(|r| dec(r.get::<_, &[u8]>(0))).transpose()
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = self.pool.call(move |c, s| {
            let st = prepared(c, s, C_ALL)?;
            c.query(&st, &[])
        })?;
        rows.iter().map(|r| dec(r.get::<_, &[u8]>(0))).collect()
    }

    fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let n = self.pool.call(move |c, s| {
            let st = prepared(c, s, C_DEL)?;
            c.execute(&st, &[&id])
        })?;
        Ok(n > 0)
    }

    fn put_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        let (tsn, node, online, rec) = (d.tsn.clone(), d.node.clone(), d.online, enc(d));
        self.pool.call(move |c, s| {
            let st = prepared(c, s, D_PUT)?;
            c.execute(&st, &[&tsn, &node, &online, &rec]).map(|_| ())
        })
    }

    fn get_device(&self, tsn: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let tsn = tsn.to_owned();
        let row = self.pool.call(move |c, s| {
            let st = prepared(c, s, D_GET)?;
            c.query_opt(&st, &[&tsn])
        })?;
        row.map(|r| dec(r.get::<_, &[u8]>(0))).transpose()
    }

    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.pool.call(move |c, s| match after {
            None => {
                let st = prepared(c, s, D_FIRST)?;
                c.query(&st, &[&limit])
            }
            Some(a) => {
                let st = prepared(c, s, D_AFTER)?;
                c.query(&st, &[&a, &limit])
            }
        })?;
        rows.iter().map(|r| dec(r.get::<_, &[u8]>(0))).collect()
    }

    fn forget_node(&self, node: &str) -> Result<usize, StoreError> {
        let node = node.to_owned();
        let rows = self.pool.call(move |c, s| {
            let st = prepared(c, s, D_OF_NODE)?;
            c.query(&st, &[&node])
        })?;
        let mut n = 0;
        for r in &rows {
            let old: Vec<u8> = r.get(0);
            let mut d: DeviceRecord = dec(&old)?;
            d.online = false;
            d.node = None;
            let (tsn, new) = (d.tsn.clone(), enc(&d));
            self.pool.call(move |c, s| {
                let st = prepared(c, s, D_OFFLINE)?;
                c.execute(&st, &[&tsn, &new, &old]).map(|_| ())
            })?;
            n += 1;
        }
        Ok(n)
    }
}
