//! The `snapgate` command: run the gateway, write a dev setup, and small operator tools.
//! Flags and environment variables override the config file; the file overrides defaults.

use clap::{Parser, Subcommand};
use snapgate::cli::db::{db, DbAction};
use snapgate::cli::operator::{
    encrypt_secret, merchants, pairing, terminals, KeyAction, MerchantAction, PairingAction,
    TerminalAction,
};
use snapgate::cli::serve::{init, serve};
use snapgate::cli::{admin_url, block_on, config_unless_admin, existing_config, DEFAULT_DIR};
use snapgate::config::{self, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// glibc malloc cost ~27% of server CPU under load; mimalloc cut it (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
