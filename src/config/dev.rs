//! The dev setup: the public ANSI/X9 test BDKs, a random signing key, and a config file with
//! every setting written out, as `snapgate init` (and `serve` without a config) creates them.

use super::{write_private, Config, ConfigError};
use crate::token::SigningKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The ANSI X9.24 test BDK: public, for development only.
pub const ANSI_TEST_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";
/// The AES test BDK from the X9.24-3 supplement: public, for development only.
pub const AES_TEST_BDK: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
pub const DEV_SERVICE_KEY: &str = "6B2866C8FD500001";
pub const DEV_VENDOR_ID: &str = "A96A5D589D";

/// The dev key file: the public test BDKs and a fresh random signing key.
pub fn dev_key_file() -> Zeroizing<String> {
    let sk = SigningKey::generate();
    Zeroizing::new(format!(
        r#"# snapgate DEV key file: public ANSI/X9 test BDKs. Never use these keys in production.
# Keep this file mode 600: snapgate refuses to start on a key file others can read.
active_signing_key = "{kid}"

[[signing_key]]
kid = "{kid}"
key = "{key}"

# TDES DUKPT, ANSI test BDK. Key-set ids: the X9.24 sample KSN, EVO's Magensa sample and
# EVO's RegisterTerminal sample.
[[bdk]]
id = "ansi-test-tdes"
scheme = "tdes"
key = "{tdes}"
key_set_ids = ["FFFF987654", "9010010B0C", "FFFF007900"]
variant = "pin"
secret_format = "MerchantProfileId|DeviceSerialNumber"
service_keys = ["{sk}"]
vendor_ids = ["{vendor}"]

# AES-128 DUKPT, X9.24-3 test BDK, BDK ID 12345678.
[[bdk]]
id = "x9-test-aes128"
scheme = "aes128"
key = "{aes}"
key_set_ids = ["12345678"]
variant = "data-request"
secret_format = "MerchantProfileId|DeviceSerialNumber"
service_keys = ["{sk}"]
vendor_ids = ["{vendor}"]
"#,
        kid = sk.kid(),
        key = sk.key_hex().as_str(),
        tdes = ANSI_TEST_BDK,
        aes = AES_TEST_BDK,
        sk = DEV_SERVICE_KEY,
        vendor = DEV_VENDOR_ID,
    ))
}

/// The dev config file, with every setting written out.
pub fn dev_config_file(listen: SocketAddr, admin: Option<SocketAddr>) -> String {
    let mut cfg = Config::default();
    cfg.server.listen = listen;
    cfg.server.admin_listen = admin;
    format!(
        "# snapgate dev config, written by `snapgate init`. Paths are relative to this file.\n{}",
        toml::to_string_pretty(&cfg).expect("config serializes")
    )
}

/// Write a dev config and key file into `dir` (which is created). Returns the config path.
pub fn init_dev(dir: &Path, listen: SocketAddr) -> Result<PathBuf, ConfigError> {
    init_dev_with_admin(dir, listen, None)
}

/// `init_dev` with an admin listener (metrics, health, operator endpoints) written in.
pub fn init_dev_with_admin(
    dir: &Path,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<PathBuf, ConfigError> {
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let cfg_path = dir.join("snapgate.toml");
    let keys_path = dir.join("keys.toml");
    if cfg_path.exists() {
        return Err(ConfigError::Exists(cfg_path));
    }
    if !keys_path.exists() {
        write_private(&keys_path, &dev_key_file())?;
    }
    std::fs::write(&cfg_path, dev_config_file(listen, admin)).map_err(|source| {
        ConfigError::Write {
            path: cfg_path.clone(),
            source,
        }
    })?;
    Ok(cfg_path)
}
