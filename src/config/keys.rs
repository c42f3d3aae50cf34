//! The secret key file (mode 600): BDKs with their key-set ids, key usages and allow-lists, and
//! the token signing keys with the active one; loading, checking permissions, rotating and
//! writing it. Key material is zeroized and never printed.

use super::{keys_err, ConfigError};
use crate::dukpt::{
    AesKeyType, AesUsage, Bdk, CachedBdk, KeyUsage, Ksn, Scheme, TdesVariant,
    DEFAULT_IPEK_CACHE_ENTRIES,
};
use crate::token::{KeyRing, SigningKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

/// The key file as written on disk.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    active_signing_key: String,
    #[serde(default, rename = "signing_key")]
    signing_keys: Vec<SigningKeyEntry>,
    #[serde(default, rename = "bdk")]
    bdks: Vec<BdkEntry>,
    /// Operator credentials for the SIS merchant-profile operations (issue 10).
    #[serde(default, rename = "operator", skip_serializing_if = "Vec::is_empty")]
    operators: Vec<OperatorEntry>,
}

/// An operator allowed to manage one service key's merchant profiles over SIS. Only the
/// SHA-256 of its token is kept: the token itself is printed once, when it is created.
#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
struct OperatorEntry {
    id: String,
    service_key: String,
    token_sha256: String,
}

/// A loaded operator credential.
#[derive(Clone)]
pub struct Operator {
    pub id: String,
    pub service_key: String,
    token_sha256: [u8; 32],
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Operator({}, {})", self.id, self.service_key)
    }
}

fn sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SigningKeyEntry {
    kid: String,
    key: Zeroizing<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BdkEntry {
    id: String,
    scheme: SchemeName,
    key: Zeroizing<String>,
    /// KSN key-set ids this BDK answers for: TDES 10 hex digits, AES 8 (the BDK ID).
    key_set_ids: Vec<String>,
    #[serde(default)]
    variant: VariantName,
    /// Key usage for encrypted track data; defaults to `variant`.
    #[serde(default)]
    track_variant: Option<VariantName>,
    /// AES working key type; defaults to the BDK's own size.
    #[serde(default)]
    working_key: Option<AesKeyName>,
    #[serde(default)]
    secret_format: SecretFormat,
    /// serviceKeys this BDK's terminals may register for; "*" allows any.
    service_keys: Vec<String>,
    /// vendorIds this BDK's terminals may register for; "*" allows any.
    vendor_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum SchemeName {
    Tdes,
    Aes128,
    Aes256,
}

/// Which derived key encrypts the secret. TDES: pin = PIN variant (EVO's samples), data-request =
/// data variant plus the standard one-way step, data-request-legacy = variant only,
/// data-response / data-response-legacy the same for the response data variant (issue 10: some
/// terminals encrypt with it). AES: pin = usage 1000, data-request = 3000, data-response = 3001,
/// data-both = 3002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariantName {
    #[default]
    Pin,
    DataRequest,
    DataRequestLegacy,
    DataResponse,
    DataResponseLegacy,
    DataBoth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum AesKeyName {
    Aes128,
    Aes256,
}

/// The decrypted secret's fields, separated by `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum SecretFormat {
    /// `MerchantProfileId|DeviceSerialNumber` (the older documented form).
    #[default]
    #[serde(rename = "MerchantProfileId|DeviceSerialNumber")]
    TwoField,
    /// `MerchantProfileId|DeviceSerialNumber|ServiceId` (the newer documented form).
    #[serde(rename = "MerchantProfileId|DeviceSerialNumber|ServiceId")]
    ThreeField,
}

impl SecretFormat {
    pub fn fields(self) -> usize {
        match self {
            SecretFormat::TwoField => 2,
            SecretFormat::ThreeField => 3,
        }
    }
}

/// One configured BDK, ready to use.
pub struct BdkConfig {
    pub id: String,
    /// The BDK with its own IPEK cache (`security.ipek_cache_entries`): derive working keys with
    /// `bdk.working_key(ksn, usage)`.
    pub bdk: CachedBdk,
    pub key_set_ids: Vec<String>,
    /// How the terminal's secret was encrypted.
    pub secret_usage: KeyUsage,
    /// How the terminal's track data was encrypted.
    pub track_usage: KeyUsage,
    pub secret_format: SecretFormat,
    pub service_keys: Vec<String>,
    pub vendor_ids: Vec<String>,
}

impl fmt::Debug for BdkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BdkConfig")
            .field("id", &self.id)
            .field("scheme", &self.bdk.scheme())
            .field("key", &"<redacted>")
            .field("key_set_ids", &self.key_set_ids)
            .finish_non_exhaustive()
    }
}

fn allows(list: &[String], value: &str) -> bool {
    list.iter()
        .any(|v| v == "*" || crate::util::ct_eq(v.as_bytes(), value.as_bytes()))
}

impl BdkConfig {
    pub fn allows_service_key(&self, service_key: &str) -> bool {
        allows(&self.service_keys, service_key)
    }
    pub fn allows_vendor(&self, vendor_id: &str) -> bool {
        allows(&self.vendor_ids, vendor_id)
    }
}

/// Everything secret the server holds.
#[derive(Debug)]
pub struct Keys {
    pub signing: KeyRing,
    pub bdks: Vec<BdkConfig>,
    pub operators: Vec<Operator>,
}

impl Keys {
    /// The operator whose token this is (constant-time over every entry), if any.
    pub fn operator_for(&self, token: &str) -> Option<&Operator> {
        let h = sha256(token);
        let mut found = None;
        for o in &self.operators {
            if crate::util::ct_eq(&o.token_sha256, &h) {
                found = Some(o);
            }
        }
        found
    }

    /// The BDK that serves a KSN, chosen by the KSN's key-set id and scheme.
    pub fn bdk_for(&self, ksn: &Ksn) -> Option<&BdkConfig> {
        let ksi = ksn.key_set_id();
        let tdes_ksn = matches!(ksn, Ksn::Tdes(_));
        self.bdks.iter().find(|b| {
            (b.bdk.scheme() == Scheme::Tdes) == tdes_ksn
                && b.key_set_ids.iter().any(|k| k.eq_ignore_ascii_case(&ksi))
        })
    }

    /// Load and check the key file; refuse one that group or others can read. TDES BDKs get
    /// an IPEK cache of the default size (`Keys::load_for` takes the configured one).
    pub fn load(path: &Path) -> Result<Keys, ConfigError> {
        Self::from_file(path, read_key_file(path)?, DEFAULT_IPEK_CACHE_ENTRIES)
    }

    /// `security.keys_file`, each TDES BDK with an IPEK cache of `security.ipek_cache_entries`.
    pub fn load_for(security: &super::SecurityConfig) -> Result<Keys, ConfigError> {
        let path = &security.keys_file;
        Self::from_file(path, read_key_file(path)?, security.ipek_cache_entries)
    }

    fn from_file(
        path: &Path,
        file: KeyFile,
        ipek_cache_entries: usize,
    ) -> Result<Keys, ConfigError> {
        let mut signing = Vec::new();
        for e in &file.signing_keys {
            let mut key = [0u8; 32];
            hex::decode_to_slice(e.key.as_bytes(), &mut key).map_err(|_| {
                keys_err(
                    path,
                    format!("signing key {:?}: key must be 64 hex digits", e.kid),
                )
            })?;
            let k = SigningKey::new(&e.kid, key).map_err(|err| keys_err(path, err))?;
            zeroize::Zeroize::zeroize(&mut key);
            signing.push(k);
        }
        let signing = KeyRing::new(signing, &file.active_signing_key).ok_or_else(|| {
            keys_err(
                path,
                "active_signing_key must name one [[signing_key]] and kids must be unique",
            )
        })?;

        let mut bdks = Vec::new();
        for e in &file.bdks {
            let scheme = match e.scheme {
                SchemeName::Tdes => Scheme::Tdes,
                SchemeName::Aes128 => Scheme::Aes128,
                SchemeName::Aes256 => Scheme::Aes256,
            };
            let bdk = Bdk::from_hex(scheme, &e.key).map_err(|_| {
                keys_err(
                    path,
                    format!(
                        "bdk {:?}: key is not {} hex digits",
                        e.id,
                        if scheme == Scheme::Aes256 { 64 } else { 32 }
                    ),
                )
            })?;
            let ksi_len = if scheme == Scheme::Tdes { 10 } else { 8 };
            for k in &e.key_set_ids {
                if k.len() != ksi_len || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(keys_err(
                        path,
                        format!(
                            "bdk {:?}: key_set_id {k:?} must be {ksi_len} hex digits",
                            e.id
                        ),
                    ));
                }
            }
            if e.key_set_ids.is_empty() || e.service_keys.is_empty() || e.vendor_ids.is_empty() {
                return Err(keys_err(
                    path,
                    format!(
                        "bdk {:?}: key_set_ids, service_keys and vendor_ids must not be empty \
                         (use \"*\" to allow any service key or vendor)",
                        e.id
                    ),
                ));
            }
            let working = match (e.working_key, scheme) {
                (Some(AesKeyName::Aes256), _) => AesKeyType::Aes256,
                (Some(AesKeyName::Aes128), _) => AesKeyType::Aes128,
                (None, Scheme::Aes256) => AesKeyType::Aes256,
                (None, _) => AesKeyType::Aes128,
            };
            let usage = |v: VariantName| -> Result<KeyUsage, ConfigError> {
                key_usage(v, scheme, working).ok_or_else(|| {
                    keys_err(
                        path,
                        format!("bdk {:?}: variant {v:?} does not apply to {scheme:?}", e.id),
                    )
                })
            };
            let secret_usage = usage(e.variant)?;
            let track_usage = usage(e.track_variant.unwrap_or(e.variant))?;
            if bdks.iter().any(|b: &BdkConfig| b.id == e.id) {
                return Err(keys_err(path, format!("bdk id {:?} appears twice", e.id)));
            }
            bdks.push(BdkConfig {
                id: e.id.clone(),
                bdk: CachedBdk::new(bdk, ipek_cache_entries),
                key_set_ids: e.key_set_ids.iter().map(|k| k.to_uppercase()).collect(),
                secret_usage,
                track_usage,
                secret_format: e.secret_format,
                service_keys: e.service_keys.clone(),
                vendor_ids: e.vendor_ids.clone(),
            });
        }
        for (i, b) in bdks.iter().enumerate() {
            for o in &bdks[..i] {
                if (o.bdk.scheme() == Scheme::Tdes) == (b.bdk.scheme() == Scheme::Tdes)
                    && b.key_set_ids.iter().any(|k| o.key_set_ids.contains(k))
                {
                    return Err(keys_err(
                        path,
                        format!("bdks {:?} and {:?} share a key_set_id", o.id, b.id),
                    ));
                }
            }
        }
        let mut operators = Vec::new();
        for o in &file.operators {
            let mut h = [0u8; 32];
            hex::decode_to_slice(&o.token_sha256, &mut h).map_err(|_| {
                keys_err(
                    path,
                    format!("operator {:?}: token_sha256 must be 64 hex digits", o.id),
                )
            })?;
            operators.push(Operator {
                id: o.id.clone(),
                service_key: o.service_key.clone(),
                token_sha256: h,
            });
        }
        Ok(Keys {
            signing,
            bdks,
            operators,
        })
    }
}

fn key_usage(v: VariantName, scheme: Scheme, aes_key_type: AesKeyType) -> Option<KeyUsage> {
    let (tdes_variant, tdes_data_owf, aes_usage) = match (v, scheme) {
        (VariantName::Pin, _) => (TdesVariant::Pin, false, AesUsage::Pin),
        (VariantName::DataRequest, _) => (TdesVariant::DataRequest, true, AesUsage::DataEncrypt),
        (VariantName::DataRequestLegacy, Scheme::Tdes) => {
            (TdesVariant::DataRequest, false, AesUsage::DataEncrypt)
        }
        (VariantName::DataResponse, _) => (TdesVariant::DataResponse, true, AesUsage::DataDecrypt),
        (VariantName::DataResponseLegacy, Scheme::Tdes) => {
            (TdesVariant::DataResponse, false, AesUsage::DataDecrypt)
        }
        (VariantName::DataBoth, Scheme::Aes128 | Scheme::Aes256) => {
            (TdesVariant::DataRequest, true, AesUsage::DataBoth)
        }
        _ => return None,
    };
    Some(KeyUsage {
        tdes_variant,
        tdes_data_owf,
        aes_usage,
        aes_key_type,
    })
}

/// Read the key file after checking that only its owner can read it.
fn read_key_file(path: &Path) -> Result<KeyFile, ConfigError> {
    check_private(path)?;
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
        );
    // toml's messages quote the offending line, which may hold a key: keep only the position.
    toml::from_str(&text).map_err(|e| {
        keys_err(
            path,
            format!("not a valid key file (near byte {:?})", e.span()),
        )
    })
}

/// Add a fresh signing key to the key file and make it the active one. Older keys stay, so
/// tokens they signed keep verifying; remove one only after `lifetime_days` have passed.
/// The file is replaced atomically and stays mode 600. Returns the new key id.
pub fn rotate_signing_key(path: &Path) -> Result<String, ConfigError> {
    let mut file = read_key_file(path)?;
    let sk = SigningKey::generate();
    file.signing_keys.push(SigningKeyEntry {
        kid: sk.kid().to_owned(),
        key: Zeroizing::new(sk.key_hex().to_string()),
    });
    file.active_signing_key = sk.kid().to_owned();
    replace_key_file(path, &file)?;
    Ok(sk.kid().to_owned())
}

/// Write `file` over the key file at `path`: checked to load first, then replaced atomically
/// (mode 600 from the start), so a failure leaves the old file as it was.
fn replace_key_file(path: &Path, file: &KeyFile) -> Result<(), ConfigError> {
    let out = Zeroizing::new(toml::to_string_pretty(file).map_err(|e| keys_err(path, e))?);
    // Check the result loads before it replaces anything.
    let reparsed: KeyFile = toml::from_str(&out).map_err(|e| keys_err(path, e))?;
    Keys::from_file(path, reparsed, 0)?;
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, &out)?;
    std::fs::rename(&tmp, path).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

/// Add an operator for `service_key`'s merchant profiles; returns its token (printed once,
/// only its SHA-256 is written).
pub fn add_operator(path: &Path, id: &str, service_key: &str) -> Result<String, ConfigError> {
    use rand::RngCore;
    let mut file = read_key_file(path)?;
    if file.operators.iter().any(|o| o.id == id) {
        return Err(keys_err(path, format!("operator {id:?} exists")));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("op.{}", hex::encode(raw));
    file.operators.push(OperatorEntry {
        id: id.to_owned(),
        service_key: service_key.to_owned(),
        token_sha256: hex::encode(sha256(&token)),
    });
    replace_key_file(path, &file)?;
    Ok(token)
}

#[cfg(unix)]
pub(crate) fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::KeyFileTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_private(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

/// Write `contents` to a new file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    let werr = |source| ConfigError::Write {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ConfigError::Exists(path.to_owned())
        } else {
            werr(e)
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{dev_key_file, init_dev, Config, TokenConfig, AES_TEST_BDK, ANSI_TEST_BDK};

    /// Issue 10 item 3: `variant = "data-response"` selects the TDES response data variant with
    /// the one-way step, and AES usage 3001. Vectors: moov-io/dukpt's InitialSequence response
    /// ciphertexts of "4012345678909D987" (as in dukpt/tests), decrypted through the key file.
    #[test]
    fn data_response_variant_decrypts_the_published_response_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        let text = dev_key_file()
            .replace("variant = \"pin\"", "variant = \"data-response\"")
            .replace("variant = \"data-request\"", "variant = \"data-response\"");
        write_private(&p, &text).unwrap();
        let keys = Keys::load(&p).unwrap();
        for (ksn, ct) in [
            (
                "FFFF9876543210E00001",
                "1FCC89AF66222F27B903898BB2BC8589CDBFDE5EC6AFCC25",
            ),
            (
                "FFFF9876543210E00005",
                "7D4C109E49E83355A556AE949EED359F4404E7A2F0167C00",
            ),
            (
                "123456789012345600000001",
                "84904DFC6B5201A4F1FE2EAA49E70B8C01838EF53030790FF785D630AB3916B4",
            ),
            (
                "123456789012345600000008",
                "8CD1A54538B9DC79A5DF4544ADE8D1F1A085AC1F89AA59BFF49351A68957DE1B",
            ),
        ] {
            let ksn = Ksn::parse_hex(ksn).unwrap();
            let bdk = keys.bdk_for(&ksn).unwrap();
            let key = crate::dukpt::working_key(&bdk.bdk, &ksn, &bdk.secret_usage).unwrap();
            let plain = crate::dukpt::decrypt_cbc(&key, &hex::decode(ct).unwrap()).unwrap();
            assert_eq!(
                crate::dukpt::strip_zero_padding(&plain),
                b"4012345678909D987",
                "{ksn:?}"
            );
        }
        // The variant-only form exists for TDES only.
        let aes_legacy = dev_key_file().replace(
            "variant = \"data-request\"",
            "variant = \"data-response-legacy\"",
        );
        let p2 = dir.path().join("keys2.toml");
        write_private(&p2, &aes_legacy).unwrap();
        assert!(Keys::load(&p2).is_err());
    }

    /// The IPEK cache belongs to the loaded BDK: the configured size applies to TDES BDKs only,
    /// and a key file that swaps the BDK behind a key-set id gives keys from the new BDK, never
    /// the IPEKs cached for the old one.
    #[test]
    fn each_loaded_bdk_has_its_own_ipek_cache_and_a_reload_starts_empty() {
        use crate::dukpt::{working_key, Bdk, Scheme};
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut cfg = Config::load(&cfg_path).unwrap();
        assert_eq!(cfg.security.ipek_cache_entries, DEFAULT_IPEK_CACHE_ENTRIES);
        cfg.security.ipek_cache_entries = 100;
        let ksn = Ksn::parse_hex("9010010B0C2472000021").unwrap();
        let old = Keys::load_for(&cfg.security).unwrap();
        let b = old.bdk_for(&ksn).unwrap();
        assert_eq!(b.bdk.ipek_cache_capacity(), 100);
        let old_key = b.bdk.working_key(&ksn, &b.track_usage).unwrap();
        assert_eq!(b.bdk.cached_ipeks(), 1);
        let aes = old
            .bdk_for(&Ksn::parse_hex("123456789012345600000001").unwrap())
            .unwrap();
        assert_eq!(aes.bdk.ipek_cache_capacity(), 0, "AES BDKs are not cached");
        assert_eq!(
            Keys::load(&cfg.security.keys_file).unwrap().bdks[0]
                .bdk
                .ipek_cache_capacity(),
            DEFAULT_IPEK_CACHE_ENTRIES
        );

        // Same key-set id, another BDK: the reloaded keys derive from it.
        const NEW_BDK: &str = "FEDCBA98765432100123456789ABCDEF";
        let text = std::fs::read_to_string(&cfg.security.keys_file)
            .unwrap()
            .replace(ANSI_TEST_BDK, NEW_BDK);
        std::fs::remove_file(&cfg.security.keys_file).unwrap();
        write_private(&cfg.security.keys_file, &text).unwrap();
        let new = Keys::load_for(&cfg.security).unwrap();
        let nb = new.bdk_for(&ksn).unwrap();
        assert_eq!(
            nb.bdk.cached_ipeks(),
            0,
            "a reload starts with an empty cache"
        );
        let new_key = nb.bdk.working_key(&ksn, &nb.track_usage).unwrap();
        let want = working_key(
            &Bdk::from_hex(Scheme::Tdes, NEW_BDK).unwrap(),
            &ksn,
            &nb.track_usage,
        )
        .unwrap();
        assert_eq!(new_key.as_bytes(), want.as_bytes());
        assert_ne!(new_key.as_bytes(), old_key.as_bytes());
        // The old keys, still held by requests in flight, keep answering from the old BDK.
        let again = b.bdk.working_key(&ksn, &b.track_usage).unwrap();
        assert_eq!(again.as_bytes(), old_key.as_bytes());

        cfg.security.ipek_cache_entries = 0;
        let off = Keys::load_for(&cfg.security).unwrap();
        let ob = off.bdk_for(&ksn).unwrap();
        let k = ob.bdk.working_key(&ksn, &ob.track_usage).unwrap();
        assert_eq!(k.as_bytes(), want.as_bytes());
        assert_eq!(
            (ob.bdk.ipek_cache_capacity(), ob.bdk.cached_ipeks()),
            (0, 0)
        );
        let dbg = format!("{new:?}");
        assert!(!dbg.contains(NEW_BDK) && !dbg.contains(&hex::encode_upper(new_key.as_bytes())));
    }

    #[test]
    fn dev_files_load_and_select_bdks_by_key_set_id() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        assert_eq!(cfg.token.lifetime_days, 90);
        assert_eq!(cfg.token.refresh_age_days, 30);
        let keys = Keys::load(&cfg.security.keys_file).unwrap();
        let ksn = Ksn::parse_hex("9010010B0C2472000021").unwrap();
        assert_eq!(keys.bdk_for(&ksn).unwrap().id, "ansi-test-tdes");
        let aes = Ksn::parse_hex("123456789012345600000001").unwrap();
        assert_eq!(keys.bdk_for(&aes).unwrap().id, "x9-test-aes128");
        assert!(keys
            .bdk_for(&Ksn::parse_hex("AAAAAAAAAA2472000021").unwrap())
            .is_none());
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains(ANSI_TEST_BDK) && !dbg.contains(AES_TEST_BDK));
        // init never overwrites.
        assert!(matches!(
            init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()),
            Err(ConfigError::Exists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        std::fs::write(&p, dev_key_file().as_str()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keys::load(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn key_file_errors_never_quote_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        let bad = dev_key_file().replace("scheme = \"tdes\"", "scheme = \"tdes\"\nbogus = 1");
        write_private(&p, &bad).unwrap();
        let err = Keys::load(&p).unwrap_err().to_string();
        assert!(!err.contains(ANSI_TEST_BDK), "{err}");
        let short = dev_key_file().replace(ANSI_TEST_BDK, "0123456789ABCDEFFEDCBA98765432");
        let p2 = dir.path().join("keys2.toml");
        write_private(&p2, &short).unwrap();
        let err = Keys::load(&p2).unwrap_err().to_string();
        assert!(
            err.contains("32 hex digits") && !err.contains("0123456789ABCDEF"),
            "{err}"
        );
    }

    #[test]
    fn rotation_adds_an_active_key_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let keys_path = Config::load(&cfg_path).unwrap().security.keys_file;
        let before = Keys::load(&keys_path).unwrap();
        let old_kid = before.signing.active().kid().to_owned();
        let new_kid = rotate_signing_key(&keys_path).unwrap();
        let after = Keys::load(&keys_path).unwrap();
        assert_eq!(after.signing.active().kid(), new_kid);
        assert_ne!(new_kid, old_kid);
        assert!(after.signing.keys().iter().any(|k| k.kid() == old_kid));
        assert_eq!(after.bdks.len(), before.bdks.len());
    }

    #[test]
    fn refresh_age_must_be_below_lifetime() {
        let t = TokenConfig {
            refresh_age_days: 90,
            ..TokenConfig::default()
        };
        assert!(t.validate().is_err());
        assert!(TokenConfig::default().validate().is_ok());
    }
}
