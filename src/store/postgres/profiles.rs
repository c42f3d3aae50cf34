//! Merchant and application profiles in PostgreSQL (`merchant_profiles`,
//! `application_profiles`), as JSON like the sled engine. Every write commits before it returns.

use super::{prepared, PgStore, Pool};
use crate::store::profiles::{ApplicationProfile, MerchantProfile, ProfileStore};
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct PgProfiles {
    pool: Arc<Pool>,
}

impl PgStore {
    pub fn profiles(&self) -> PgProfiles {
        PgProfiles {
            pool: self.pool.clone(),
        }
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::CorruptProfile(e.to_string())
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(corrupt)
}

const M_GET: &str = "SELECT rec FROM merchant_profiles WHERE service_key = $1 AND id = $2";
const M_PUT: &str = "INSERT INTO merchant_profiles (service_key, id, rec) VALUES ($1, $2, $3) \
                     ON CONFLICT (service_key, id) DO UPDATE SET rec = excluded.rec";
const M_DEL: &str = "DELETE FROM merchant_profiles WHERE service_key = $1 AND id = $2";
const M_ALL: &str = "SELECT rec FROM merchant_profiles ORDER BY service_key, id";
const M_OF: &str = "SELECT rec FROM merchant_profiles WHERE service_key = $1 ORDER BY id";
const A_GET: &str = "SELECT rec FROM application_profiles WHERE id = $1";
const A_PUT: &str = "INSERT INTO application_profiles (id, rec) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET rec = excluded.rec";
const A_DEL: &str = "DELETE FROM application_profiles WHERE id = $1";
const A_NEXT: &str = "SELECT nextval('application_profile_ids')";

impl ProfileStore for PgProfiles {
    fn merchant(&self, service_key: &str, id: &str) -> Result<Option<MerchantProfile>, StoreError> {
        let (sk, id) = (service_key.to_owned(), id.to_owned());
        let row = self.pool.call(move |c, s| {
            let st = prepared(c, s, M_GET)?;
            c.query_opt(&st, &[&sk, &id])
        })?;
        row.map(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).map_err(corrupt))
            .transpose()
    }

    fn put_merchant(&self, p: &MerchantProfile) -> Result<(), StoreError> {
        let (sk, id, rec) = (
            p.service_key.clone(),
            p.merchant_profile_id.clone(),
            json(p)?,
        );
        self.pool.call(move |c, s| {
            let st = prepared(c, s, M_PUT)?;
            c.execute(&st, &[&sk, &id, &rec]).map(|_| ())
        })
    }

    fn delete_merchant(&self, service_key: &str, id: &str) -> Result<bool, StoreError> {
        let (sk, id) = (service_key.to_owned(), id.to_owned());
        let n = self.pool.call(move |c, s| {
            let st = prepared(c, s, M_DEL)?;
            c.execute(&st, &[&sk, &id])
        })?;
        Ok(n > 0)
    }

    fn merchants(&self, service_key: Option<&str>) -> Result<Vec<MerchantProfile>, StoreError> {
        let sk = service_key.map(str::to_owned);
        let rows = self.pool.call(move |c, s| match sk {
            None => {
                let st = prepared(c, s, M_ALL)?;
                c.query(&st, &[])
            }
            Some(sk) => {
                let st = prepared(c, s, M_OF)?;
                c.query(&st, &[&sk])
            }
        })?;
        rows.iter()
            .map(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).map_err(corrupt))
            .collect()
    }

    fn application(&self, id: &str) -> Result<Option<ApplicationProfile>, StoreError> {
        let id = id.to_owned();
        let row = self.pool.call(move |c, s| {
            let st = prepared(c, s, A_GET)?;
            c.query_opt(&st, &[&id])
        })?;
        row.map(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).map_err(corrupt))
            .transpose()
    }

    fn add_application(
        &self,
        data: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        // A sequence is unique across nodes; a value lost to a failed insert is only a gap.
        let n: i64 = self.pool.call(move |c, s| {
            let st = prepared(c, s, A_NEXT)?;
            Ok(c.query_one(&st, &[])?.get(0))
        })?;
        let id = n.to_string();
        self.put_application(&ApplicationProfile {
            application_profile_id: id.clone(),
            data,
            created_at_ms: now_ms,
        })?;
        Ok(id)
    }

    fn put_application(&self, p: &ApplicationProfile) -> Result<(), StoreError> {
        let (id, rec) = (p.application_profile_id.clone(), json(p)?);
        self.pool.call(move |c, s| {
            let st = prepared(c, s, A_PUT)?;
            c.execute(&st, &[&id, &rec]).map(|_| ())
        })
    }

    fn delete_application(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let n = self.pool.call(move |c, s| {
            let st = prepared(c, s, A_DEL)?;
            c.execute(&st, &[&id])
        })?;
        Ok(n > 0)
    }
}
