//! The `snapgate` command's actions, as library functions the thin binary (`src/main.rs`)
//! dispatches to: `serve` (run the gateway, write a dev setup), `operator` (terminals,
//! merchants, pairing, keys, reload, encrypt-secret), `db` (PostgreSQL schema and copy). The
//! Cloud Connector's commands live with it (`connector::cli`).
//!
//! An operator command goes to the store directly when it can (PostgreSQL, or a sled folder no
//! server holds) and otherwise through the running server's admin listener.

use crate::config::{self, Config};
use std::path::{Path, PathBuf};

pub mod db;
pub mod operator;
pub mod serve;

/// Where `serve` and `init` keep things when no config is named.
pub const DEFAULT_DIR: &str = "snapgate-data";

/// The config an operator command uses: the one named, or ./snapgate-data's if it exists.
/// Never creates one: only `serve` and `init` write a dev setup (issue 10 item 4).
pub fn existing_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = match path {
        Some(p) => p,
        None => {
            let p = Path::new(DEFAULT_DIR).join("snapgate.toml");
            if !p.exists() {
                return Err(format!(
                    "no config: give --config FILE (or SNAPGATE_CONFIG){}; ./{DEFAULT_DIR} has none. \
                     `snapgate init` or `snapgate serve` writes a dev setup",
                    " or, for a running server, --admin URL (or SNAPGATE_ADMIN)"
                ));
            }
            p
        }
    };
    let cfg = Config::load(&path).map_err(|e| e.to_string())?;
    let _ = CONFIG_PATH.set(path);
    Ok(cfg)
}

/// The config for a command that can also work through the admin listener alone: none is
/// needed when `--admin` is given and no config is named or present.
pub fn config_unless_admin(
    path: Option<PathBuf>,
    admin: &Option<String>,
) -> Result<Option<Config>, String> {
    let default_exists = Path::new(DEFAULT_DIR).join("snapgate.toml").exists();
    if path.is_none() && admin.is_some() && !default_exists {
        return Ok(None);
    }
    existing_config(path).map(Some)
}

/// `serve`'s config: the one named, or the default one (created on first run).
pub fn resolve_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = match path {
        Some(p) => p,
        None => {
            let p = Path::new(DEFAULT_DIR).join("snapgate.toml");
            if !p.exists() {
                config::init_dev_with_admin(
                    Path::new(DEFAULT_DIR),
                    "127.0.0.1:8080".parse().expect("literal"),
                    Some("127.0.0.1:9090".parse().expect("literal")),
                )
                .map_err(|e| e.to_string())?;
                eprintln!(
                    "snapgate: no config given; created a DEV setup in ./{DEFAULT_DIR} \
                     (public test BDKs, random signing key). Do not use it in production."
                );
            }
            p
        }
    };
    let cfg = Config::load(&path).map_err(|e| e.to_string())?;
    let _ = CONFIG_PATH.set(path);
    Ok(cfg)
}

/// The config file this process loaded, for `reload`.
pub static CONFIG_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f))
}

pub fn admin_url(flag: Option<String>, cfg: Option<&Config>) -> Option<String> {
    flag.or_else(|| cfg?.server.admin_listen.map(|a| format!("http://{a}")))
}

/// The admin listener's base URL when a running server holds the data folder: `--admin`, else
/// the config's `server.admin_listen`, else an error saying so.
pub fn admin_base(flag: Option<String>, cfg: Option<&Config>) -> Result<String, String> {
    admin_url(flag, cfg).ok_or_else(|| NO_ADMIN.to_owned())
}

/// Why an operator command cannot reach the store: say what to do instead.
pub const NO_ADMIN: &str = "the data folder is in use (is the server running?) and no admin \
                            listener is configured: give --admin URL or set server.admin_listen";
