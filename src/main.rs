//! The `snapgate` command: run the gateway, write a dev setup, and small operator tools.
//! Flags and environment variables override the config file; the file overrides defaults.

use clap::{Parser, Subcommand};
use snapgate::app::App;
use snapgate::clock::SystemClock;
use snapgate::config::{self, Config, Keys, LogFormat};
use snapgate::dukpt::{self, Ksn};
use snapgate::store::engine::Engine;
use snapgate::store::SledStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

// glibc malloc cost ~27% of server CPU under load; mimalloc cut it (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where `serve` and `init` keep things when no config is named.
const DEFAULT_DIR: &str = "snapgate-data";

#[derive(Parser)]
#[command(
    name = "snapgate",
    version,
    about = "EVO Snap* / CWS v2.0 Terminal Authentication gateway",
    long_about = "snapgate answers RegisterTerminal and transaction SOAP requests from payment \
                  terminals, authenticates them with DUKPT and issues signed TerminalAccessTokens.\n\n\
                  Quick start: `snapgate serve` (creates a dev setup in ./snapgate-data on first run)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file. Without it, ./snapgate-data/snapgate.toml is used and created if missing.
        #[arg(long, short, env = "SNAPGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's server.listen.
        #[arg(long, env = "SNAPGATE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Log format, overriding the config's log.format.
        #[arg(long, env = "SNAPGATE_LOG_FORMAT", value_enum)]
        log_format: Option<LogFormat>,
        /// Log filter (e.g. `info`, `snapgate=debug`), overriding the config's log.level.
        #[arg(long, env = "SNAPGATE_LOG")]
        log: Option<String>,
    },
    /// Write a dev config and a dev key file (ANSI test BDKs, a random signing key).
    Init {
        /// Folder to write into.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Listen address written into the config.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener (/metrics, /healthz, operator endpoints) written into the config.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Also write a DEV CA, server and client certificates into <dir>/tls/ and turn TLS on.
        #[arg(long)]
        tls: bool,
    },
    /// Operate on registered terminals: through the admin listener when the server runs
    /// (`--admin`, or the config's server.admin_listen), else on the data folder directly.
    Terminals {
        #[arg(long, short, env = "SNAPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Admin listener base URL, e.g. http://127.0.0.1:9090.
        #[arg(long, env = "SNAPGATE_ADMIN", global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: TerminalAction,
    },
    /// Declare merchant profiles: RegisterTerminal accepts only a secret naming a declared,
    /// active one. On the data folder, or through the admin listener while the server runs.
    Merchants {
        #[arg(long, short, env = "SNAPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Admin listener base URL, e.g. http://127.0.0.1:9090.
        #[arg(long, env = "SNAPGATE_ADMIN", global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: MerchantAction,
    },
    /// Manage the token signing keys in the key file.
    Keys {
        #[arg(long, short, env = "SNAPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Ask a running server to reload keys and token settings (same as SIGHUP).
    Reload {
        #[arg(long, short, env = "SNAPGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "SNAPGATE_ADMIN")]
        admin: Option<String>,
    },
    /// POS pairing: make setup codes, list and revoke POS certificates (docs/PAIRING.md).
    /// Through the admin listener when the server runs, else on the data folder directly.
    Pairing {
        #[arg(long, short, env = "SNAPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Admin listener base URL, e.g. http://127.0.0.1:9090.
        #[arg(long, env = "SNAPGATE_ADMIN", global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: PairingAction,
    },
    /// Cloud Connector: OAuth2 clients and device status (docs/CONNECTOR.md).
    Connector {
        #[arg(long, short, env = "SNAPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Admin listener base URL; given, the command goes through the running server.
        #[arg(long, env = "SNAPGATE_ADMIN", global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: snapgate::connector::cli::ConnectorAction,
    },
    /// Encrypt a RegisterTerminal secret the way a terminal would (for tests and integration).
    EncryptSecret {
        #[arg(long, short, env = "SNAPGATE_CONFIG")]
        config: Option<PathBuf>,
        /// The terminal's KSN (20 hex digits TDES, 24 AES).
        #[arg(long)]
        ksn: String,
        /// The clear secret, e.g. `MP1|B1234567`.
        #[arg(long)]
        secret: String,
    },
    /// PostgreSQL store (`store.backend = "postgres"`): schema migrations and moving from sled.
    Db {
        #[arg(long, short, env = "SNAPGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: DbAction,
    },
}

#[derive(Subcommand)]
enum DbAction {
    /// Apply the schema migrations this binary embeds (idempotent; refuses a newer schema).
    Migrate,
    /// Print the database's schema version and this binary's.
    Status,
    /// Copy a sled folder's terminals and sandbox transactions into PostgreSQL, then check
    /// that every one is there. Safe to re-run: rows already present are kept.
    Copy {
        /// The sled folder (the config's store.path when omitted).
        #[arg(long)]
        from: Option<PathBuf>,
        /// PostgreSQL URL (the config's store.url or SNAPGATE_STORE_URL when omitted).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum TerminalAction {
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
enum MerchantAction {
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
enum PairingAction {
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
enum KeyAction {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            log_format,
            log,
        } => serve(config, listen, log_format, log),
        Command::Init {
            dir,
            listen,
            admin_listen,
            tls,
        } => init(&dir, listen, admin_listen, tls),
        Command::Terminals {
            config,
            admin,
            action,
        } => terminals(config, admin, action),
        Command::Merchants {
            config,
            admin,
            action,
        } => merchants(config, admin, action),
        Command::Keys {
            config,
            action: KeyAction::AddOperator { id, service_key },
        } => existing_config(config).and_then(|cfg| {
            let token = config::add_operator(&cfg.security.keys_file, &id, &service_key)
                .map_err(|e| e.to_string())?;
            println!("{token}");
            eprintln!(
                "operator {id} added for {service_key}: pass the token above as sessionToken to \
                 the SIS merchant-profile operations; it is not stored and cannot be shown again. \
                 Reload a running server: `snapgate reload` or kill -HUP <pid>"
            );
            Ok(())
        }),
        Command::Keys {
            config,
            action: KeyAction::Rotate,
        } => existing_config(config).and_then(|cfg| {
            let kid =
                config::rotate_signing_key(&cfg.security.keys_file).map_err(|e| e.to_string())?;
            println!(
                "new active signing key {kid}; older keys stay for verification. \
                 Reload a running server: `snapgate reload` or kill -HUP <pid>"
            );
            Ok(())
        }),
        Command::Reload { config, admin } => config_unless_admin(config, &admin).and_then(|cfg| {
            let base = admin_url(admin, cfg.as_ref())
                .ok_or("no admin listener: give --admin or set server.admin_listen")?;
            let (status, body) = block_on(snapgate::admin::call(
                &base,
                hyper::Method::POST,
                "/admin/reload",
            ))??;
            print!("{body}");
            (status == 200)
                .then_some(())
                .ok_or(format!("reload failed (HTTP {status})"))
        }),
        Command::EncryptSecret {
            config,
            ksn,
            secret,
        } => encrypt_secret(config, &ksn, &secret),
        Command::Pairing {
            config,
            admin,
            action,
        } => pairing(config, admin, action),
        Command::Connector {
            config,
            admin,
            action,
        } => existing_config(config).and_then(|cfg| {
            // An operator command: never creates a dev setup (issue 10 item 4).
            let force = admin.is_some();
            let base = admin_url(admin, Some(&cfg));
            let out = snapgate::connector::cli::run(&cfg, base, force, action, |f| block_on(f)?)?;
            print!("{out}");
            Ok(())
        }),
        Command::Db { config, action } => db(config, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `snapgate init`: the dev config and key file, and with `tls` the dev PKI.
fn init(dir: &Path, listen: SocketAddr, admin: SocketAddr, tls: bool) -> Result<(), String> {
    let p = config::init_dev_with_admin(dir, listen, Some(admin)).map_err(|e| e.to_string())?;
    println!(
        "wrote {} and {}",
        p.display(),
        dir.join("keys.toml").display()
    );
    if tls {
        let pki = snapgate::tls::init_dev_tls(dir).map_err(|e| e.to_string())?;
        let pairing_listen: SocketAddr = "127.0.0.1:8443".parse().expect("literal");
        let ca = snapgate::pairing::init_dev(dir, pairing_listen).map_err(|e| e.to_string())?;
        println!(
            "wrote a DEV pairing CA ({}) and a [pairing] section: POS systems pair at \
             https://{pairing_listen}/ (see docs/PAIRING.md)",
            ca.root_cert.display()
        );
        println!(
            "wrote a DEV CA ({}), a server certificate for localhost and a client certificate \
             in {}; TLS is on (see docs/TLS.md)",
            pki.ca_cert.display(),
            dir.join("tls").display()
        );
    }
    Ok(())
}

/// The config an operator command uses: the one named, or ./snapgate-data's if it exists.
/// Never creates one: only `serve` and `init` write a dev setup (issue 10 item 4).
fn existing_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = match path {
        Some(p) => p,
        None => {
            let p = Path::new(DEFAULT_DIR).join("snapgate.toml");
            if !p.exists() {
                return Err(format!(
                    "no config: give --config FILE (or SNAPGATE_CONFIG){}; ./{DEFAULT_DIR} has                      none. `snapgate init` or `snapgate serve` writes a dev setup",
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
fn config_unless_admin(
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
fn resolve_config(path: Option<PathBuf>) -> Result<Config, String> {
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
static CONFIG_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f))
}

fn admin_url(flag: Option<String>, cfg: Option<&Config>) -> Option<String> {
    flag.or_else(|| cfg?.server.admin_listen.map(|a| format!("http://{a}")))
}

fn terminals(
    config: Option<PathBuf>,
    admin: Option<String>,
    action: TerminalAction,
) -> Result<(), String> {
    use snapgate::admin;
    use snapgate::store::TerminalStore;
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
        let base = admin_url(admin, cfg.as_ref()).ok_or(
            "the data folder is in use (is the server running?) and no admin listener is \
             configured: give --admin URL or set server.admin_listen",
        )?;
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
    let e = |e: snapgate::cws::error::Error| e.to_string();
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
fn merchants(
    config: Option<PathBuf>,
    admin: Option<String>,
    action: MerchantAction,
) -> Result<(), String> {
    use snapgate::cws::merchants::{self, Action};
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
        } => Action::Put(snapgate::store::profiles::MerchantProfile {
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
        let base = admin_url(admin, cfg.as_ref()).ok_or(
            "the data folder is in use (is the server running?) and no admin listener is \
             configured: give --admin URL or set server.admin_listen",
        )?;
        let (method, path) = merchants::to_request(&action);
        let (status, body) = block_on(snapgate::admin::call(&base, method, &path))??;
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

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    log: Option<String>,
) -> Result<(), String> {
    let cfg = resolve_config(config)?
        .resolve(config::Overrides {
            listen,
            log_format,
            log_level: log,
        })
        .map_err(|e| e.to_string())?;
    init_logging(&cfg);
    let keys = Keys::load(&cfg.security.keys_file).map_err(|e| e.to_string())?;
    let store = snapgate::store::engine::Engine::open(&cfg.store)?;
    let store_at = store.describe(&cfg.store);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, store = %store_at, bdks = keys.bdks.len(), "snapgate listening");
        let admin = match cfg.server.admin_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("cannot listen on {a} (server.admin_listen): {e}"))?,
            ),
            None => None,
        };
        let pairing_listener = match cfg.pairing.as_ref().and_then(|p| p.listen) {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("cannot listen on {a} (pairing.listen): {e}"))?,
            ),
            None => None,
        };
        let mut app = App::with_engine(cfg, keys, store, Arc::new(SystemClock))?;
        if let Some(p) = CONFIG_PATH.get() {
            app = app.with_config_path(p.clone());
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(l) = admin {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%addr, "admin listener (metrics, health, operator endpoints)");
            let mut rx = stop_rx.clone();
            tokio::spawn(snapgate::admin::run(app.clone(), l, async move {
                let _ = rx.changed().await;
            }));
        }
        if let Some(l) = pairing_listener {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%addr, "pairing listener (HTTPS and WSS)");
            let mut rx = stop_rx.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.changed().await;
                };
                if let Err(e) = snapgate::pairing::listener::run(app, l, stop).await {
                    tracing::error!(error = %e, "pairing listener stopped");
                }
            });
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let app = app.clone();
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if let Err(e) = app.reload() {
                            tracing::error!(error = %e, "reload failed; keeping the current keys");
                        }
                    }
                });
            }
        }
        {
            let app = app.clone();
            let node = hex::encode(rand::random::<[u8; 8]>());
            tokio::spawn(async move {
                loop {
                    // Re-read each round, so a reload that changes the interval takes effect;
                    // 0 disables the sweep until a reload sets one (looked at every minute).
                    let every = app.token().sweep_interval_seconds;
                    if every > 0 {
                        let a = app.clone();
                        let node = node.clone();
                        // One node at a time sweeps (a lease in a shared store); two would
                        // only repeat each other's compare-and-swaps.
                        let ttl = std::time::Duration::from_secs(u64::from(every) * 3 / 2 + 1);
                        let sweep = move || match a.store.try_lease("refresh-sweep", &node, ttl) {
                            Ok(true) => snapgate::cws::session::sweep(&a),
                            Ok(false) => Ok(0),
                            Err(e) => Err(e.into()),
                        };
                        match tokio::task::spawn_blocking(sweep).await {
                            Ok(Err(e)) => tracing::error!(error = %e, "refresh sweep failed"),
                            Err(e) => tracing::error!(error = %e, "refresh sweep panicked"),
                            Ok(Ok(_)) => {}
                        }
                    }
                    let pause = if every > 0 { every.into() } else { 60 };
                    tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
                }
            });
        }
        // Sandbox retention: deletes old sandbox transactions, bounded work per step.
        tokio::spawn(snapgate::cws::processor::retention::run(Arc::downgrade(
            &app,
        )));
        snapgate::server::run(app, listener, async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(|e| e.to_string())?;
        drop(stop_rx);
        tracing::info!("snapgate stopped; store flushed");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// `snapgate db ...`: on the PostgreSQL database the config (or `--to`) names.
fn db(config: Option<PathBuf>, action: DbAction) -> Result<(), String> {
    use snapgate::store::postgres::{self as pg, PgStore};
    let cfg = resolve_config(config)?;
    let settings = match &action {
        DbAction::Copy { to: Some(url), .. } => cfg.store.postgres_with_url(url.clone()),
        _ => cfg.store.postgres()?,
    };
    let where_ = pg::redact_url(&settings.url);
    let store = PgStore::open(&settings).map_err(|e| e.to_string())?;
    let pool = store.pool();
    match action {
        DbAction::Migrate => {
            let (before, after) = pg::migrate(pool).map_err(|e| format!("{where_}: {e}"))?;
            if before == after {
                println!("{where_}: schema already at version {after}");
            } else {
                println!("{where_}: schema migrated from version {before} to {after}");
            }
        }
        DbAction::Status => {
            let v = pg::schema_version(pool).map_err(|e| format!("{where_}: {e}"))?;
            println!(
                "{where_}: schema version {v}; this binary's is {}",
                pg::latest_version()
            );
        }
        DbAction::Copy { from, .. } => {
            let from = from.unwrap_or(cfg.store.path.clone());
            let sled = SledStore::open(&from)
                .map_err(|e| format!("cannot open the sled store {}: {e}", from.display()))?;
            let r = snapgate::store::copy::copy_sled_to_postgres(&sled, &store)
                .map_err(|e| format!("{where_}: {e}"))?;
            println!(
                "copied {} -> {where_}: terminals {} read, {} inserted, {} already present; \
                 transactions {} read, {} inserted, {} already present; profiles, pairing \
                 certificates and connector clients {} read, {} inserted; all verified present",
                from.display(),
                r.terminals_read,
                r.terminals_inserted,
                r.terminals_present,
                r.transactions_read,
                r.transactions_inserted,
                r.transactions_present,
                r.others_read,
                r.others_inserted
            );
        }
    }
    store.pool().close();
    Ok(())
}

fn encrypt_secret(config: Option<PathBuf>, ksn: &str, secret: &str) -> Result<(), String> {
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

/// `snapgate pairing ...`: through the admin listener when the server holds the data folder,
/// else on it directly.
fn pairing(
    config: Option<PathBuf>,
    admin: Option<String>,
    action: PairingAction,
) -> Result<(), String> {
    use snapgate::pairing::admin as padmin;
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
        let base = admin_url(admin, Some(&cfg)).ok_or(
            "the data folder is in use (is the server running?) and no admin listener is \
             configured: give --admin URL or set server.admin_listen",
        )?;
        let enc = snapgate::pairing::ca::urn_part;
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
        let (status, body) = block_on(snapgate::admin::call(&base, method, &path))??;
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
    let p = snapgate::pairing::Pairing::open(&pcfg, store.pairing()?)?;
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
