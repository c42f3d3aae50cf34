//! `snapgate connector ...`: manage connector clients on the data folder directly (server
//! stopped), or through the admin listener while the server runs and holds the store.

use super::admin::{self, ClientSpec};
use crate::config::Config;
use crate::store::connector::ClientRole;
use crate::store::engine::Engine;

#[derive(clap::Subcommand)]
pub enum ConnectorAction {
    /// OAuth2 clients of the Cloud Connector.
    #[command(subcommand)]
    Clients(ClientAction),
    /// Devices: presence, session holder, grace (needs the running server's admin listener).
    Devices,
}

#[derive(clap::Subcommand)]
pub enum ClientAction {
    /// Create a client and print its id and secret (the secret is shown this once only).
    Add {
        /// What it may do: `device` (register terminals), `pos` (claim them) or `both`.
        #[arg(long)]
        role: String,
        /// The merchant (aggregator) whose devices it reaches.
        #[arg(long)]
        merchant: String,
        /// Limit it to one store of the merchant.
        #[arg(long)]
        store: Option<String>,
        /// Limit it to one terminal (a POS paired with that terminal).
        #[arg(long)]
        tsn: Option<String>,
        /// The `{domain}` of the token endpoint it authenticates at.
        #[arg(long, default_value = "default")]
        domain: String,
        /// Choose the client id (default: random).
        #[arg(long)]
        id: Option<String>,
    },
    /// List clients (JSON; no secrets).
    List,
    /// Remove a client: its access tokens stop working at once.
    Remove { client_id: String },
}

fn q(k: &str, v: &str) -> String {
    let enc: String = v
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{k}={enc}")
}

/// Run a `connector` command. `admin_base`: the admin listener, used when the store is locked.
pub fn run(
    cfg: &Config,
    admin_base: Option<String>,
    force_admin: bool,
    action: ConnectorAction,
    block_on: impl FnOnce(
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u16, String), String>>>>,
    ) -> Result<(u16, String), String>,
) -> Result<String, String> {
    let local = match (&action, force_admin) {
        (ConnectorAction::Devices, _) | (_, true) => None,
        _ => Engine::open_local(&cfg.store)?,
    };
    let Some(engine) = local else {
        let base = admin_base.ok_or(crate::cli::NO_ADMIN)?;
        let (method, path) = match &action {
            ConnectorAction::Devices => (hyper::Method::GET, "/admin/connector/devices".into()),
            ConnectorAction::Clients(ClientAction::List) => {
                (hyper::Method::GET, "/admin/connector/clients".into())
            }
            ConnectorAction::Clients(ClientAction::Remove { client_id }) => (
                hyper::Method::DELETE,
                format!("/admin/connector/clients/{client_id}"),
            ),
            ConnectorAction::Clients(ClientAction::Add {
                role,
                merchant,
                store,
                tsn,
                domain,
                id,
            }) => {
                let mut parts = vec![
                    q("role", role),
                    q("merchant", merchant),
                    q("domain", domain),
                ];
                for (k, v) in [("store", store), ("tsn", tsn), ("id", id)] {
                    if let Some(v) = v {
                        parts.push(q(k, v));
                    }
                }
                (
                    hyper::Method::POST,
                    format!("/admin/connector/clients?{}", parts.join("&")),
                )
            }
        };
        let (status, body) = block_on(Box::pin(async move {
            crate::admin::call(&base, method, &path).await
        }))?;
        return if status == 200 {
            Ok(body)
        } else {
            Err(format!("HTTP {status}: {}", body.trim()))
        };
    };
    let store = engine.connector()?;
    let out = match action {
        ConnectorAction::Devices => unreachable!("devices always go through the admin listener"),
        ConnectorAction::Clients(ClientAction::List) => admin::list(&*store)?,
        ConnectorAction::Clients(ClientAction::Remove { client_id }) => {
            if !admin::remove(&*store, &client_id)? {
                return Err(format!("no client {client_id}"));
            }
            serde_json::json!({ "removed": client_id })
        }
        ConnectorAction::Clients(ClientAction::Add {
            role,
            merchant,
            store: shop,
            tsn,
            domain,
            id,
        }) => {
            let spec = ClientSpec {
                id,
                domain,
                role: ClientRole::parse(&role).ok_or("role must be device, pos or both")?,
                scope: crate::store::connector::Scope {
                    merchant,
                    store: shop,
                    tsn,
                },
            };
            let c = &cfg.connector;
            let now = chrono::Utc::now().timestamp_millis();
            admin::add(&*store, spec, c.hash_memory_kib, c.hash_iterations, now)?
        }
    };
    serde_json::to_string_pretty(&out)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}
