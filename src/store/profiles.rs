//! Merchant profiles and application profiles (issue 10): what the platform knows about the
//! merchants behind a service key and the applications that call it, and the `ProfileStore`
//! trait every engine implements (sled: `sled_profiles.rs`; PostgreSQL later).
//!
//! A merchant profile is keyed by (serviceKey, MerchantProfileId): RegisterTerminal accepts a
//! decrypted secret only if it names a profile that is declared and active for that service
//! key (and, when the profile lists device serials, one of them). An application profile is
//! the `ApplicationData` a client saved with SaveApplicationData, keyed by the
//! `applicationProfileId` the gateway handed out.

use super::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest id or name in a profile, and most allow-listed serials: every field is bounded.
pub const MAX_PROFILE_FIELD: usize = 64;
pub const MAX_ALLOWED_SERIALS: usize = 10_000;
/// Most ApplicationData fields kept, and the longest value.
pub const MAX_APPLICATION_FIELDS: usize = 32;
pub const MAX_APPLICATION_VALUE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantProfile {
    pub service_key: String,
    pub merchant_profile_id: String,
    /// A label for operators (the platform's MerchantData name).
    #[serde(default)]
    pub name: String,
    /// The ServiceId it transacts under, if pinned.
    #[serde(default)]
    pub service_id: Option<String>,
    /// Inactive profiles refuse registrations (terminals already registered keep their token).
    pub active: bool,
    /// When not empty, only these DeviceSerialNumbers may register under the profile.
    #[serde(default)]
    pub device_serials: Vec<String>,
    pub created_at_ms: i64,
}

impl MerchantProfile {
    /// Check every field's bounds and characters (printable ASCII, no `|`).
    pub fn validate(&self) -> Result<(), String> {
        let field = |what: &str, v: &str, required: bool| -> Result<(), String> {
            if required && v.is_empty() {
                return Err(format!("{what} is required"));
            }
            if v.len() > MAX_PROFILE_FIELD {
                return Err(format!(
                    "{what} is longer than {MAX_PROFILE_FIELD} characters"
                ));
            }
            if !v.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'|') || v.trim() != v {
                return Err(format!(
                    "{what} must be printable ASCII without '|' or edge spaces"
                ));
            }
            Ok(())
        };
        field("serviceKey", &self.service_key, true)?;
        field("merchantProfileId", &self.merchant_profile_id, true)?;
        field("name", &self.name, false)?;
        if let Some(s) = &self.service_id {
            field("serviceId", s, true)?;
        }
        if self.device_serials.len() > MAX_ALLOWED_SERIALS {
            return Err(format!("at most {MAX_ALLOWED_SERIALS} device serials"));
        }
        for s in &self.device_serials {
            field("deviceSerial", s, true)?;
        }
        Ok(())
    }

    /// May the device `serial` register under this profile?
    pub fn admits(&self, serial: &str) -> bool {
        self.active
            && (self.device_serials.is_empty() || self.device_serials.iter().any(|s| s == serial))
    }
}

/// An application profile: the ApplicationData fields a client saved, by their schema names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationProfile {
    pub application_profile_id: String,
    pub data: BTreeMap<String, String>,
    pub created_at_ms: i64,
}

pub trait ProfileStore: Send + Sync {
    fn merchant(&self, service_key: &str, id: &str) -> Result<Option<MerchantProfile>, StoreError>;
    /// Insert or replace, durably.
    fn put_merchant(&self, p: &MerchantProfile) -> Result<(), StoreError>;
    /// Remove, durably. False if there was none.
    fn delete_merchant(&self, service_key: &str, id: &str) -> Result<bool, StoreError>;
    /// Every profile (of one service key, if given), in (serviceKey, id) order.
    fn merchants(&self, service_key: Option<&str>) -> Result<Vec<MerchantProfile>, StoreError>;

    fn application(&self, id: &str) -> Result<Option<ApplicationProfile>, StoreError>;
    /// Whether an application profile is stored under `id`: what a transaction checks, without
    /// decoding the profile.
    fn has_application(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.application(id)?.is_some())
    }
    /// Store new application data durably under a fresh id, and return the id.
    fn add_application(
        &self,
        data: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<String, StoreError>;
    /// Store under a given id (the dev setup's sample profile), durably.
    fn put_application(&self, p: &ApplicationProfile) -> Result<(), StoreError>;
    fn delete_application(&self, id: &str) -> Result<bool, StoreError>;
}

/// The merchant profiles the README and the tests use, for the dev service key.
pub fn dev_merchant_profiles(service_key: &str, now_ms: i64) -> Vec<MerchantProfile> {
    ["MP1", "MP2"]
        .into_iter()
        .map(|id| MerchantProfile {
            service_key: service_key.to_owned(),
            merchant_profile_id: id.to_owned(),
            name: format!("Dev merchant {id}"),
            service_id: None,
            active: true,
            device_serials: Vec::new(),
            created_at_ms: now_ms,
        })
        .collect()
}

/// EVO's sample applicationProfileId, which the README's and the samples' requests send.
pub const DEV_APPLICATION_PROFILE_ID: &str = "14560";

/// Write the dev setup's sample profiles into `store`.
pub fn seed_dev(
    store: &dyn ProfileStore,
    service_key: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    for p in dev_merchant_profiles(service_key, now_ms) {
        store.put_merchant(&p)?;
    }
    let mut data = BTreeMap::new();
    data.insert(
        "ApplicationName".to_owned(),
        "snapgate dev sample".to_owned(),
    );
    store.put_application(&ApplicationProfile {
        application_profile_id: DEV_APPLICATION_PROFILE_ID.to_owned(),
        data,
        created_at_ms: now_ms,
    })
}
