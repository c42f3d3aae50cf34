//! The `snapgate` command: run the gateway, write a dev setup, and small operator tools.
//! Flags and environment variables override the config file; the file overrides defaults.

use clap::{Parser, Subcommand};
use snapgate::app::App;
use snapgate::clock::SystemClock;
use snapgate::config::{self, Config, Keys, LogFormat};
use snapgate::dukpt::{self, Ksn};
use snapgate::store::SledStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
        Command::Init { dir, listen } => config::init_dev(&dir, listen)
            .map(|p| {
                println!(
                    "wrote {} and {}",
                    p.display(),
                    dir.join("keys.toml").display()
                )
            })
            .map_err(|e| e.to_string()),
        Command::EncryptSecret {
            config,
            ksn,
            secret,
        } => encrypt_secret(config, &ksn, &secret),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config to use: the one named, or the default one (created on first run).
fn resolve_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = match path {
        Some(p) => p,
        None => {
            let p = Path::new(DEFAULT_DIR).join("snapgate.toml");
            if !p.exists() {
                config::init_dev(
                    Path::new(DEFAULT_DIR),
                    "127.0.0.1:8080".parse().expect("literal"),
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
    Config::load(&path).map_err(|e| e.to_string())
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
    let mut cfg = resolve_config(config)?;
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    if let Some(f) = log_format {
        cfg.log.format = f;
    }
    if let Some(l) = log {
        cfg.log.level = l;
    }
    init_logging(&cfg);
    let keys = Keys::load(&cfg.security.keys_file).map_err(|e| e.to_string())?;
    let store = SledStore::open(&cfg.store.path)
        .map_err(|e| format!("cannot open the store at {}: {e}", cfg.store.path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, store = %cfg.store.path.display(), bdks = keys.bdks.len(), "snapgate listening");
        let app = App::new(cfg, keys, store, Arc::new(SystemClock))?;
        snapgate::server::run(app, listener, shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
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

fn encrypt_secret(config: Option<PathBuf>, ksn: &str, secret: &str) -> Result<(), String> {
    let cfg = resolve_config(config)?;
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
