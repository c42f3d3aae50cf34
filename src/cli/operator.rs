//! Operator commands: terminals, merchant profiles, POS pairing, encrypt-secret (keys and
//! reload are a few lines each in `src/main.rs`).

use super::{admin_base, block_on, config_unless_admin, existing_config};
use crate::config::Keys;
use crate::dukpt::{self, Ksn};
use crate::store::engine::Engine;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TerminalAction {
    /// List terminals (JSON, one array), in terminal-id order.
    List {
        /// Start after this terminal id (for paging).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one terminal: by terminal id or `SERVICEKEY/SERIAL`.
    Show { terminal: String },
    /// Revoke a terminal: all its tokens fail until it registers again.
    Revoke { terminal: String },
    /// Raise its RefreshToken flag now: the next swipe gets a renewed token.
    Refresh { terminal: String },
}

#[derive(Subcommand)]
pub enum MerchantAction {
    /// Declare (or replace) a merchant profile for a service key.
    Add {
        /// The service key it belongs to.
        #[arg(long)]
        service_key: String,
        /// The MerchantProfileId terminals put in their secret.
        merchant_profile_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        service_id: Option<String>,
        /// Only these DeviceSerialNumbers may register under it (repeat; none: any).
        #[arg(long = "serial")]
        serials: Vec<String>,
        /// Declare it inactive: registrations under it are refused.
        #[arg(long)]
        inactive: bool,
    },
    /// List merchant profiles (JSON array).
    List {
        #[arg(long)]
        service_key: Option<String>,
    },
    /// Show one: SERVICEKEY/MERCHANTPROFILEID.
    Show { profile: String },
    /// Remove one: SERVICEKEY/MERCHANTPROFILEID.
    Remove { profile: String },
}

#[derive(Subcommand)]
pub enum PairingAction {
    /// Make a POS connection code (valid pairing.code_lifetime_seconds) and print it with
    /// where to use it. A new code replaces the previous one of the same terminal (or of the
    /// operator, without --terminal).
    Code {
        /// Bind the code to this registered terminal: SERVICEKEY/SERIAL. The certificate then
        /// names it.
        #[arg(long)]
        terminal: Option<String>,
    },
    /// List issued POS certificates and live codes (JSON; never a code or a key).
    List,
    /// Revoke a POS's certificate: refused from the next TLS handshake on.
    Revoke {
        #[arg(value_name = "POSID")]
        pos_id: String,
    },
}

#[derive(Subcommand)]
pub enum KeyAction {
    /// Add a new signing key and make it active; old keys keep verifying their tokens.
    Rotate,
    /// Add an operator credential for the SIS merchant-profile operations of one service key.
    /// Prints the token once; the key file keeps only its SHA-256.
    AddOperator {
        id: String,
        #[arg(long)]
        service_key: String,
    },
}

pub fn terminals(
    config: Option<PathBuf>,
    admin: Option<String>,
    action: TerminalAction,
) -> Result<(), String> {
    use crate::admin;
    use crate::store::TerminalStore;
    let cfg = config_unless_admin(config, &admin)?;
    let which = |t: &str| {
        admin::resolve(t).ok_or(format!(
            "{t:?} is neither a terminal id nor SERVICEKEY/SERIAL"
        ))
    };
    // The server holds the database lock while it runs: then go through its admin listener.
    // The server holds a sled folder's lock while it runs: then go through its admin listener.
    // PostgreSQL is shared by every node: no need to go through a server.
    let local = match (&admin, &cfg) {
        (None, Some(cfg)) => Engine::open_local(&cfg.store)?.map(|e| e.terminals()),
        _ => None,
    };
    let Some(store) = local else {
        let base = admin_base(admin, cfg.as_ref())?;
        let one = |t: &String, action: &str| -> Result<String, String> {
            Ok(format!("/admin/terminals/{}{action}", which(t)?.to_hex()))
        };
        let (method, path) = match &action {
            TerminalAction::List { after, limit } => (
                hyper::Method::GET,
                format!(
                    "/admin/terminals?limit={limit}{}",
                    after
                        .as_ref()
                        .map(|a| format!("&after={a}"))
                        .unwrap_or_default()
                ),
            ),
            TerminalAction::Show { terminal } => (hyper::Method::GET, one(terminal, "")?),
            TerminalAction::Revoke { terminal } => (hyper::Method::POST, one(terminal, "/revoke")?),
            TerminalAction::Refresh { terminal } => {
                (hyper::Method::POST, one(terminal, "/refresh")?)
            }
        };
        let (status, body) = block_on(admin::call(&base, method, &path))??;
        print!("{body}");
        return (status == 200)
            .then_some(())
            .ok_or(format!("HTTP {status}"));
    };
    let store: &dyn TerminalStore = &*store;
    let e = |e: crate::cws::error::Error| e.to_string();
    let out = match action {
        TerminalAction::List { after, limit } => {
            let after = after.as_deref().map(which).transpose()?;
            Some(admin::list(store, after.as_ref(), limit).map_err(e)?)
        }
        TerminalAction::Show { terminal } => admin::show(store, &which(&terminal)?).map_err(e)?,
        TerminalAction::Revoke { terminal } => {
            admin::revoke(store, &which(&terminal)?).map_err(e)?
        }
        TerminalAction::Refresh { terminal } => {
            admin::force_refresh(store, &which(&terminal)?, chrono::Utc::now()).map_err(e)?
        }
    };
    match out {
        Some(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        None => Err("no such terminal".into()),
    }
}

/// `snapgate merchants`: on the data folder, or through the admin listener when the server
/// holds it (or `--admin` is given).
pub fn merchants(
    config: Option<PathBuf>,
    admin: Option<String>,
    action: MerchantAction,
) -> Result<(), String> {
    use crate::cws::merchants::{self, Action};
    let split = |p: &str| {
        p.split_once('/')
            .filter(|(s, i)| !s.is_empty() && !i.is_empty())
            .map(|(s, i)| (s.to_owned(), i.to_owned()))
            .ok_or(format!("{p:?} is not SERVICEKEY/MERCHANTPROFILEID"))
    };
    let action = match action {
        MerchantAction::Add {
            service_key,
            merchant_profile_id,
            name,
            service_id,
            serials,
            inactive,
        } => Action::Put(crate::store::profiles::MerchantProfile {
            service_key,
            merchant_profile_id,
            name,
            service_id,
            active: !inactive,
            device_serials: serials,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
        }),
        MerchantAction::List { service_key } => Action::List { service_key },
        MerchantAction::Show { profile } => {
            let (service_key, id) = split(&profile)?;
            Action::Show { service_key, id }
        }
        MerchantAction::Remove { profile } => {
            let (service_key, id) = split(&profile)?;
            Action::Remove { service_key, id }
        }
    };
    let cfg = config_unless_admin(config, &admin)?;
    let local = match (&admin, &cfg) {
        (None, Some(cfg)) => Engine::open_local(&cfg.store)?,
        _ => None,
    };
    let Some(store) = local else {
        let base = admin_base(admin, cfg.as_ref())?;
        let (method, path) = merchants::to_request(&action);
        let (status, body) = block_on(crate::admin::call(&base, method, &path))??;
        print!("{body}");
        return (status == 200)
            .then_some(())
            .ok_or(format!("HTTP {status}"));
    };
    let profiles = store.profiles()?;
    let v = merchants::run(&*profiles, action).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// `snapgate pairing ...`: through the admin listener when the server holds the data folder,
/// else on it directly.
pub fn pairing(
    config: Option<PathBuf>,
    admin: Option<String>,
    action: PairingAction,
) -> Result<(), String> {
    use crate::pairing::admin as padmin;
    // An operator command: never creates a dev setup (issue 10 item 4).
    let cfg = existing_config(config)?;
    let mut pcfg = cfg
        .pairing
        .clone()
        .ok_or("pairing is not configured: add a [pairing] section (docs/PAIRING.md)")?;
    let local = match admin {
        Some(_) => None,
        None => Engine::open_local(&cfg.store)?,
    };
    let Some(store) = local else {
        let base = admin_base(admin, Some(&cfg))?;
        let enc = crate::pairing::ca::urn_part;
        let (method, path) = match &action {
            PairingAction::Code { terminal } => (
                hyper::Method::POST,
                match terminal {
                    Some(t) => format!("/admin/pairing/codes?terminal={}", enc(t)),
                    None => "/admin/pairing/codes".into(),
                },
            ),
            PairingAction::List => (hyper::Method::GET, "/admin/pairing".into()),
            PairingAction::Revoke { pos_id } => (
                hyper::Method::POST,
                format!(
                    "/admin/pairing/certs/{}/revoke",
                    enc(pos_id).replace('/', "%2F")
                ),
            ),
        };
        let (status, body) = block_on(crate::admin::call(&base, method, &path))??;
        if status != 200 {
            return Err(format!("HTTP {status}: {}", body.trim()));
        }
        match action {
            PairingAction::Code { .. } => {
                let v: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                print!("{}", padmin::details(&v));
            }
            _ => print!("{body}"),
        }
        return Ok(());
    };
    // No key pool for a one-shot command.
    pcfg.key_pool = 0;
    let p = crate::pairing::Pairing::open(&pcfg, store.pairing()?)?;
    let now = chrono::Utc::now();
    let e = |e: padmin::AdminError| e.to_string();
    match action {
        PairingAction::Code { terminal } => {
            let v =
                padmin::make_code(&p, &*store.terminals(), terminal.as_deref(), now).map_err(e)?;
            print!("{}", padmin::details(&v));
        }
        PairingAction::List => {
            let v = padmin::list(&p).map_err(e)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
        }
        PairingAction::Revoke { pos_id } => {
            let v = padmin::revoke(None, &p, &pos_id, now).map_err(e)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
        }
    }
    Ok(())
}

pub fn encrypt_secret(config: Option<PathBuf>, ksn: &str, secret: &str) -> Result<(), String> {
    let cfg = existing_config(config)?;
    let keys = Keys::load(&cfg.security.keys_file).map_err(|e| e.to_string())?;
    let ksn = Ksn::parse_hex(ksn).map_err(|e| format!("bad KSN: {e}"))?;
    let bdk = keys.bdk_for(&ksn).ok_or_else(|| {
        format!(
            "no BDK in the key file serves key-set id {}",
            ksn.key_set_id()
        )
    })?;
    let key = dukpt::working_key(&bdk.bdk, &ksn, &bdk.secret_usage).map_err(|e| e.to_string())?;
    println!(
        "{}",
        hex::encode_upper(dukpt::encrypt_cbc(&key, secret.as_bytes()))
    );
    Ok(())
}
