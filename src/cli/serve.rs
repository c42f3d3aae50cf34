//! `snapgate serve` and `snapgate init`: logging, the listeners, graceful shutdown.

use super::{resolve_config, CONFIG_PATH};
use crate::app::App;
use crate::clock::SystemClock;
use crate::config::{self, Config, Keys, LogFormat};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `snapgate init`: the dev config and key file, and with `tls` the dev PKI.
pub fn init(dir: &Path, listen: SocketAddr, admin: SocketAddr, tls: bool) -> Result<(), String> {
    let p = config::init_dev_with_admin(dir, listen, Some(admin)).map_err(|e| e.to_string())?;
    println!(
        "wrote {} and {}",
        p.display(),
        dir.join("keys.toml").display()
    );
    if tls {
        let pki = crate::tls::init_dev_tls(dir).map_err(|e| e.to_string())?;
        let pairing_listen: SocketAddr = "127.0.0.1:8443".parse().expect("literal");
        let ca = crate::pairing::init_dev(dir, pairing_listen).map_err(|e| e.to_string())?;
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

pub fn init_logging(cfg: &Config) {
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

pub fn serve(
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
    let keys = Keys::load_for(&cfg.security).map_err(|e| e.to_string())?;
    let store = crate::store::engine::Engine::open(&cfg.store)?;
    let store_at = store.describe(&cfg.store);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(cfg.limits.max_blocking_threads)
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
            tokio::spawn(crate::admin::run(app.clone(), l, async move {
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
                if let Err(e) = crate::pairing::listener::run(app, l, stop).await {
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
                            Ok(true) => crate::cws::session::sweep(&a),
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
        tokio::spawn(crate::cws::processor::retention::run(Arc::downgrade(&app)));
        crate::server::run(app, listener, async move {
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

pub async fn shutdown_signal() {
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
