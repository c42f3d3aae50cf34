//! The sled engine for `ProfileStore`: merchant profiles in the `merchant_profiles` tree (key
//! serviceKey 0x1F id), application profiles in `application_profiles` (key: the id), both
//! as JSON (small, rare, read by operators). Every write is flushed before it returns:
//! profiles are operator actions, and an acknowledged one must survive a crash.

use super::profiles::{ApplicationProfile, MerchantProfile, ProfileStore};
use super::StoreError;
use std::collections::BTreeMap;

#[derive(Clone)]
pub struct SledProfiles {
    /// The node's store: its `flush` fdatasyncs sled's log (acknowledged = durable).
    store: super::SledStore,
    merchants: sled::Tree,
    applications: sled::Tree,
}

fn merchant_key(service_key: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(service_key.len() + 1 + id.len());
    k.extend_from_slice(service_key.as_bytes());
    k.push(0x1F);
    k.extend_from_slice(id.as_bytes());
    k
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::CorruptProfile(e.to_string())
}

impl SledProfiles {
    pub fn open(store: &super::SledStore) -> Result<Self, StoreError> {
        let db = store.db();
        Ok(SledProfiles {
            store: store.clone(),
            merchants: db.open_tree("merchant_profiles")?,
            applications: db.open_tree("application_profiles")?,
        })
    }

    fn durable(&self) -> Result<(), StoreError> {
        super::TerminalStore::flush(&self.store)
    }
}

impl ProfileStore for SledProfiles {
    fn merchant(&self, service_key: &str, id: &str) -> Result<Option<MerchantProfile>, StoreError> {
        match self.merchants.get(merchant_key(service_key, id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    fn put_merchant(&self, p: &MerchantProfile) -> Result<(), StoreError> {
        let v = serde_json::to_vec(p).map_err(corrupt)?;
        self.merchants
            .insert(merchant_key(&p.service_key, &p.merchant_profile_id), v)?;
        self.durable()
    }

    fn delete_merchant(&self, service_key: &str, id: &str) -> Result<bool, StoreError> {
        let gone = self
            .merchants
            .remove(merchant_key(service_key, id))?
            .is_some();
        self.durable()?;
        Ok(gone)
    }

    fn merchants(&self, service_key: Option<&str>) -> Result<Vec<MerchantProfile>, StoreError> {
        let prefix = service_key.map(|s| merchant_key(s, "")).unwrap_or_default();
        self.merchants
            .scan_prefix(prefix)
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v).map_err(corrupt)
            })
            .collect()
    }

    fn application(&self, id: &str) -> Result<Option<ApplicationProfile>, StoreError> {
        match self.applications.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    fn has_application(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.applications.contains_key(id.as_bytes())?)
    }

    fn add_application(
        &self,
        data: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        // sled's id generator is monotonic across restarts; offset past the dev sample's id.
        let id = (100_000 + self.store.db().generate_id()?).to_string();
        self.put_application(&ApplicationProfile {
            application_profile_id: id.clone(),
            data,
            created_at_ms: now_ms,
        })?;
        Ok(id)
    }

    fn put_application(&self, p: &ApplicationProfile) -> Result<(), StoreError> {
        let v = serde_json::to_vec(p).map_err(corrupt)?;
        self.applications
            .insert(p.application_profile_id.as_bytes(), v)?;
        self.durable()
    }

    fn delete_application(&self, id: &str) -> Result<bool, StoreError> {
        let gone = self.applications.remove(id.as_bytes())?.is_some();
        self.durable()?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_survive_a_reopen_and_are_scoped_by_service_key() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::store::SledStore::open(&dir.path().join("db")).unwrap();
            let s = SledProfiles::open(&db).unwrap();
            super::super::profiles::seed_dev(&s, "SK1", 1).unwrap();
            let mut other = s.merchant("SK1", "MP1").unwrap().unwrap();
            other.service_key = "SK2".into();
            other.device_serials = vec!["B1".into()];
            s.put_merchant(&other).unwrap();
            let id = s
                .add_application(BTreeMap::from([("ApplicationName".into(), "x".into())]), 2)
                .unwrap();
            assert_ne!(id, "14560");
            assert!(s.delete_merchant("SK1", "MP2").unwrap());
            assert!(!s.delete_merchant("SK1", "MP2").unwrap());
        }
        let db = crate::store::tests::reopen(&dir.path().join("db"));
        let s = SledProfiles::open(&db).unwrap();
        let ids = |sk| {
            s.merchants(Some(sk))
                .unwrap()
                .into_iter()
                .map(|p| p.merchant_profile_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("SK1"), ["MP1"]);
        assert_eq!(ids("SK2"), ["MP1"]);
        assert_eq!(s.merchants(None).unwrap().len(), 2);
        assert!(
            s.merchant("SK", "1").unwrap().is_none(),
            "keys do not run together"
        );
        let p = s.merchant("SK2", "MP1").unwrap().unwrap();
        assert!(p.admits("B1") && !p.admits("B2"));
        assert!(s.application("14560").unwrap().is_some());
        assert!(s.has_application("14560").unwrap());
        assert!(!s.has_application("14561").unwrap());
        assert!(!s.has_application("1456").unwrap(), "whole ids only");
    }
}
