//! Merchant and application profiles in PostgreSQL (`merchant_profiles`,
//! `application_profiles`), as JSON like the sled engine. Every write commits before it returns.

use super::{p, PgStore, Pool};
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

fn profile<T: serde::de::DeserializeOwned>(r: &postgres::Row) -> Result<T, StoreError> {
    serde_json::from_slice(r.get::<_, &[u8]>(0)).map_err(corrupt)
}

impl ProfileStore for PgProfiles {
    fn merchant(&self, service_key: &str, id: &str) -> Result<Option<MerchantProfile>, StoreError> {
        let params = vec![p(service_key.to_owned()), p(id.to_owned())];
        self.pool
            .query_opt(M_GET, params)?
            .as_ref()
            .map(profile)
            .transpose()
    }

    fn put_merchant(&self, m: &MerchantProfile) -> Result<(), StoreError> {
        let params = vec![
            p(m.service_key.clone()),
            p(m.merchant_profile_id.clone()),
            p(json(m)?),
        ];
        self.pool.execute(M_PUT, params).map(|_| ())
    }

    fn delete_merchant(&self, service_key: &str, id: &str) -> Result<bool, StoreError> {
        let params = vec![p(service_key.to_owned()), p(id.to_owned())];
        Ok(self.pool.execute(M_DEL, params)? > 0)
    }

    fn merchants(&self, service_key: Option<&str>) -> Result<Vec<MerchantProfile>, StoreError> {
        let rows = match service_key {
            None => self.pool.query(M_ALL, vec![])?,
            Some(sk) => self.pool.query(M_OF, vec![p(sk.to_owned())])?,
        };
        rows.iter().map(profile).collect()
    }

    fn application(&self, id: &str) -> Result<Option<ApplicationProfile>, StoreError> {
        let row = self.pool.query_opt(A_GET, vec![p(id.to_owned())])?;
        row.as_ref().map(profile).transpose()
    }

    fn add_application(
        &self,
        data: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        // A sequence is unique across nodes; a value lost to a failed insert is only a gap.
        let rows = self.pool.query(A_NEXT, vec![])?;
        let n: i64 = rows
            .first()
            .ok_or_else(|| StoreError::Database("nextval returned no row".into()))?
            .get(0);
        let id = n.to_string();
        self.put_application(&ApplicationProfile {
            application_profile_id: id.clone(),
            data,
            created_at_ms: now_ms,
        })?;
        Ok(id)
    }

    fn put_application(&self, a: &ApplicationProfile) -> Result<(), StoreError> {
        let params = vec![p(a.application_profile_id.clone()), p(json(a)?)];
        self.pool.execute(A_PUT, params).map(|_| ())
    }

    fn delete_application(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.pool.execute(A_DEL, vec![p(id.to_owned())])? > 0)
    }
}
