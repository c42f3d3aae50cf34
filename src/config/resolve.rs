//! Resolving a configuration: `Config::validate` bounds every setting, `Config::resolve` is the
//! one place file, environment and command-line values are merged and checked, and
//! `into_settings` splits off the live `[token]` section from the `Settings` a server runs with.

use super::*;

/// What the command line and the environment override in a loaded config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// `name` must lie in `range`; the message names the setting and its bounds.
fn bounded<T: PartialOrd + fmt::Display + Copy>(
    name: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} = {value} is out of range: it must be from {} to {}",
            range.start(),
            range.end()
        ))
    }
}

impl Config {
    /// Check every numeric setting against its bounds, so no value can overflow or panic where
    /// it is used (durations added to instants, MiB shifted to bytes, hyper's buffer minimum).
    pub fn validate(&self) -> Result<(), String> {
        const MINUTE_MS: u64 = 60_000;
        let p = &self.processor;
        if p.mode == ProcessorMode::Forward {
            if p.upstream_session_token
                .as_deref()
                .is_none_or(str::is_empty)
            {
                return Err(
                    "processor.mode = \"forward\" needs processor.upstream_session_token: \
                            the terminal's own token is never sent upstream"
                        .into(),
                );
            }
            let url = p.upstream_url.as_deref().unwrap_or_default();
            if url.starts_with("http://") && !p.allow_insecure_upstream {
                return Err(
                    "processor.upstream_url is plain http://: card data would cross the \
                            network in clear (set processor.allow_insecure_upstream = true for \
                            development only)"
                        .into(),
                );
            }
        }
        if let Some(u) = &self.server.public_url {
            crate::cws::wsdl::check_public_url(u).map_err(|m| format!("server.public_url: {m}"))?;
        }
        let l = &self.limits;
        bounded("limits.max_body_bytes", l.max_body_bytes, 1024..=64 << 20)?;
        bounded("limits.max_xml_depth", l.max_xml_depth, 4..=256)?;
        bounded(
            "limits.max_xml_elements",
            l.max_xml_elements,
            16..=1_000_000,
        )?;
        bounded("limits.max_xml_attributes", l.max_xml_attributes, 1..=1024)?;
        // hyper refuses a read buffer under 8 KiB.
        bounded(
            "limits.max_header_bytes",
            l.max_header_bytes,
            8192..=1 << 20,
        )?;
        bounded(
            "limits.header_timeout_ms",
            l.header_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded(
            "limits.body_timeout_ms",
            l.body_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded(
            "limits.handler_timeout_ms",
            l.handler_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded(
            "limits.commit_timeout_ms",
            l.commit_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        bounded("limits.max_connections", l.max_connections, 1..=1_000_000)?;
        bounded(
            "limits.max_blocking_threads",
            l.max_blocking_threads,
            4..=4096,
        )?;
        let st = &self.store;
        bounded(
            "store.group_commit_window_us",
            st.group_commit_window_us,
            0..=100_000,
        )?;
        bounded(
            "store.group_commit_gather_us",
            st.group_commit_gather_us,
            0..=100_000,
        )?;
        bounded("store.cache_mb", st.cache_mb, 1..=1 << 16)?;
        bounded("store.wal_checkpoint_mb", st.wal_checkpoint_mb, 1..=1 << 16)?;
        let pr = &self.processor;
        bounded(
            "processor.sandbox_retention_days",
            pr.sandbox_retention_days,
            0..=36_500,
        )?;
        bounded(
            "processor.sandbox_prune_per_tick",
            pr.sandbox_prune_per_tick,
            1..=1_000_000,
        )?;
        bounded(
            "processor.idempotency_depth",
            pr.idempotency_depth,
            1..=MAX_IDEMPOTENCY_DEPTH,
        )?;
        bounded("store.pool_size", st.pool_size, 1..=512)?;
        bounded(
            "store.threads",
            st.threads,
            0..=self.limits.max_blocking_threads,
        )?;
        bounded(
            "store.statement_timeout_ms",
            st.statement_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        let t = &self.token;
        bounded("token.lifetime_days", t.lifetime_days, 1..=3650)?;
        bounded("token.clock_skew_seconds", t.clock_skew_seconds, 0..=3600)?;
        bounded(
            "token.sweep_interval_seconds",
            t.sweep_interval_seconds,
            0..=7 * 86_400,
        )?;
        t.validate()?;
        let lo = &self.security.lockout;
        let lock = "security.lockout";
        bounded(
            &format!("{lock}.max_failures_per_address"),
            lo.max_failures_per_address,
            1..=1_000_000,
        )?;
        bounded(
            &format!("{lock}.max_failures_per_device"),
            lo.max_failures_per_device,
            1..=1_000_000,
        )?;
        bounded(
            &format!("{lock}.window_seconds"),
            lo.window_seconds,
            1..=86_400,
        )?;
        bounded(
            &format!("{lock}.lockout_seconds"),
            lo.lockout_seconds,
            1..=7 * 86_400,
        )?;
        bounded(
            &format!("{lock}.max_tracked"),
            lo.max_tracked,
            16..=10_000_000,
        )?;
        bounded(
            "security.ipek_cache_entries",
            self.security.ipek_cache_entries,
            0..=crate::dukpt::MAX_IPEK_CACHE_ENTRIES,
        )?;
        bounded(
            "processor.upstream_timeout_ms",
            self.processor.upstream_timeout_ms,
            1..=10 * MINUTE_MS,
        )?;
        Ok(())
    }

    /// Merge the command line and environment into a loaded file and validate the result: the
    /// one place the server's settings are decided.
    pub fn resolve(mut self, o: Overrides) -> Result<Config, ConfigError> {
        if let Some(l) = o.listen {
            self.server.listen = l;
        }
        if let Some(f) = o.log_format {
            self.log.format = f;
        }
        if let Some(l) = o.log_level {
            self.log.level = l;
        }
        self.validate().map_err(|m| ConfigError::Parse {
            path: PathBuf::from("(command line)"),
            message: m,
        })?;
        Ok(self)
    }

    /// Split into what needs a restart to change and the live token settings (`App::token`,
    /// swapped by reload), so no stale copy of the token settings stays behind.
    pub fn into_settings(self) -> (Settings, TokenConfig) {
        let Config {
            server,
            limits,
            store,
            token,
            security,
            processor,
            log,
            cws,
            connector,
            tls,
            pairing,
        } = self;
        (
            Settings {
                server,
                limits,
                store,
                security,
                processor,
                log,
                cws,
                connector,
                tls,
                pairing,
            },
            token,
        )
    }
}

/// The settings a running server uses that only a restart changes: a validated `Config` less
/// its `[token]` section, which is live.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub limits: Limits,
    pub store: StoreConfig,
    pub security: SecurityConfig,
    pub processor: ProcessorConfig,
    pub log: LogConfig,
    pub cws: crate::cws::ops::namespaces::CwsConfig,
    pub connector: crate::connector::ConnectorConfig,
    pub tls: Option<TlsConfig>,
    pub pairing: Option<crate::pairing::PairingConfig>,
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    #[test]
    fn the_defaults_are_within_every_bound() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn each_out_of_range_setting_is_refused_by_name() {
        type Edit = fn(&mut Config);
        let cases: &[(&str, Edit)] = &[
            ("token.lifetime_days", |c| c.token.lifetime_days = u32::MAX),
            ("store.cache_mb", |c| c.store.cache_mb = u64::MAX >> 10),
            ("store.cache_mb", |c| c.store.cache_mb = 0),
            ("store.wal_checkpoint_mb", |c| c.store.wal_checkpoint_mb = 0),
            ("store.wal_checkpoint_mb", |c| {
                c.store.wal_checkpoint_mb = u64::MAX
            }),
            ("limits.max_header_bytes", |c| {
                c.limits.max_header_bytes = 100
            }),
            ("limits.max_connections", |c| c.limits.max_connections = 0),
            ("limits.max_blocking_threads", |c| {
                c.limits.max_blocking_threads = 0
            }),
            ("store.threads", |c| {
                c.store.threads = c.limits.max_blocking_threads + 1
            }),
            ("limits.handler_timeout_ms", |c| {
                c.limits.handler_timeout_ms = 0
            }),
            ("limits.max_body_bytes", |c| {
                c.limits.max_body_bytes = usize::MAX
            }),
            ("store.group_commit_window_us", |c| {
                c.store.group_commit_window_us = u64::MAX
            }),
            ("store.group_commit_gather_us", |c| {
                c.store.group_commit_gather_us = u64::MAX
            }),
            ("security.lockout.window_seconds", |c| {
                c.security.lockout.window_seconds = 0
            }),
            ("security.ipek_cache_entries", |c| {
                c.security.ipek_cache_entries = crate::dukpt::MAX_IPEK_CACHE_ENTRIES + 1
            }),
            ("processor.upstream_timeout_ms", |c| {
                c.processor.upstream_timeout_ms = u64::MAX
            }),
            ("processor.sandbox_retention_days", |c| {
                c.processor.sandbox_retention_days = 100_000
            }),
            ("processor.sandbox_prune_per_tick", |c| {
                c.processor.sandbox_prune_per_tick = 0
            }),
            ("processor.idempotency_depth", |c| {
                c.processor.idempotency_depth = 0
            }),
            ("processor.idempotency_depth", |c| {
                c.processor.idempotency_depth = MAX_IDEMPOTENCY_DEPTH + 1
            }),
        ];
        for (name, edit) in cases {
            let mut c = Config::default();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(name), "{name}: {err}");
        }
    }

    #[test]
    fn a_huge_lifetime_in_a_file_is_a_load_error_not_a_panic_later() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("snapgate.toml");
        std::fs::write(&p, "[token]\nlifetime_days = 4000000000\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("token.lifetime_days"), "{e}");
    }

    #[test]
    fn overrides_are_merged_then_validated() {
        let o = Overrides {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            log_format: Some(LogFormat::Json),
            log_level: Some("debug".into()),
        };
        let c = Config::default().resolve(o).unwrap();
        assert_eq!(c.server.listen.port(), 1);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        let mut bad = Config::default();
        bad.limits.max_connections = 0;
        assert!(bad.resolve(Overrides::default()).is_err());
    }

    #[test]
    fn settings_carry_no_copy_of_the_live_token_section() {
        let mut c = Config::default();
        c.token.lifetime_days = 7;
        c.token.refresh_age_days = 2;
        let (_settings, token) = c.into_settings();
        assert_eq!(token.lifetime_days, 7);
    }
}
