//! A real PostgreSQL for tests, from the machine's Debian binaries (no mocks, no downloads).
//!
//! `shared_postgres()` is one server per test binary, started on first use; every test takes
//! its own database from it with `fresh_database()`. A test that stops the server (an outage)
//! starts its own with `Postgres::start()`. Each server lives in a temporary folder owned by
//! the `postgres` user (initdb refuses root), listens on a free loopback port with
//! `fsync=on` and `synchronous_commit=on` (durability is what the tests check), and is
//! stopped and its folder removed when dropped, or, for the shared one, when the test process
//! exits (a small reaper shell waits for EOF on a pipe only this process holds).
//!
//! No binaries: the test fails and says how to install them, never skips silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The bin folder of the newest installed PostgreSQL (`SNAPGATE_PG_BIN` overrides).
pub fn pg_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("SNAPGATE_PG_BIN") {
        return PathBuf::from(b);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb): \
             install them with `apt-get install -y postgresql` (.ci/run does), \
             or point SNAPGATE_PG_BIN at a bin folder"
        ),
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A command as the `postgres` user when we are root (initdb and postgres refuse root).
fn as_pg(bin: &Path, tool: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One PostgreSQL server in a temporary folder.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    running: bool,
    /// More server options (TLS).
    extra: String,
    /// Owned here only for a private server: removed on drop.
    owned: bool,
}

impl Postgres {
    /// initdb and start a new server; panics with the reason (and its log) if it cannot.
    pub fn start() -> Postgres {
        Self::start_with(|_| String::new())
    }

    /// A private server that also accepts TLS with this certificate and key (PEM), and
    /// refuses clear connections over TCP.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        let (cert, key) = (cert.to_owned(), key.to_owned());
        Self::start_with(move |dir| {
            let data = dir.join("data");
            for (from, to) in [(&cert, "server.crt"), (&key, "server.key")] {
                std::fs::copy(from, data.join(to)).unwrap();
                let mut c = Command::new("chmod");
                c.arg("600").arg(data.join(to));
                run(c, "chmod").unwrap();
                if running_as_root() {
                    let mut c = Command::new("chown");
                    c.arg("postgres").arg(data.join(to));
                    run(c, "chown").unwrap();
                }
            }
            // TCP only with TLS; the unix socket (createdb) stays clear.
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n";
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into()
        })
    }

    fn start_with(extra: impl FnOnce(&Path) -> String) -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("snapgate-pg-")
            .tempdir()
            .unwrap()
            .keep();
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres").arg(&dir);
                    c
                },
                "chown postgres",
            )
            .unwrap();
        }
        let mut initdb = as_pg(&bin, "initdb");
        initdb.arg("-D").arg(dir.join("data")).args([
            "-A",
            "trust",
            "--no-sync",
            "-U",
            "postgres",
            "-E",
            "UTF8",
        ]);
        if let Err(e) = run(initdb, "initdb") {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("{e}");
        }
        let extra = extra(&dir);
        let mut pg = Postgres {
            port: 0,
            bin,
            dir,
            running: false,
            extra,
            owned: true,
        };
        // A port is free when picked; another process may take it before postgres binds it.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn try_start(&mut self) -> Result<(), String> {
        let opts = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {} -c fsync=on -c synchronous_commit=on \
             -c max_connections=200 -c shared_buffers=32MB {}",
            self.dir.display(),
            self.port,
            self.extra
        );
        let mut c = as_pg(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &opts, "start"]);
        run(c, "pg_ctl start").map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            format!("{e}\n{log}")
        })?;
        self.running = true;
        Ok(())
    }

    /// Start it again on the same port after `stop` (an outage ending).
    pub fn restart(&mut self) {
        if !self.running {
            self.try_start().unwrap();
        }
    }

    /// Stop it now (`fast`: connections are cut, committed data stays).
    pub fn stop(&mut self) {
        if self.running {
            let mut c = as_pg(&self.bin, "pg_ctl");
            c.arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "-m", "fast", "stop"]);
            run(c, "pg_ctl stop").unwrap();
            self.running = false;
        }
    }

    /// A URL for `db` on this server (user postgres, trust auth on loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database on this server, for one test; returns its URL.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = Command::new(self.bin.join("createdb"));
        // Over the unix socket: a TLS-only server refuses clear TCP.
        c.arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .arg(&name);
        run(c, "createdb").unwrap();
        self.url(&name)
    }

    /// Run one SQL statement with psql and return its unaligned output.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn stop_command(&self) -> String {
        let runuser = if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{runuser}'{}' -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display(),
            self.dir.display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("sh")
                .args(["-c", &self.stop_command()])
                .status();
        }
    }
}

/// The server shared by every test in this binary; a fresh database per test comes from
/// `fresh_database()`.
pub fn shared_postgres() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    static REAPER: Mutex<Option<Child>> = Mutex::new(None);
    SHARED.get_or_init(|| {
        let mut pg = Postgres::start();
        // Statics are never dropped: a shell stops the server and removes its folder once
        // this process exits, however it exits (its stdin pipe then reaches EOF).
        let reaper = Command::new("sh")
            .args(["-c", &format!("read _ ; {}", pg.stop_command())])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        *REAPER.lock().unwrap() = Some(reaper);
        pg.owned = false;
        pg
    })
}

/// A new database on the shared server.
pub fn fresh_database() -> String {
    shared_postgres().fresh_database()
}

/// The engine store-touching tests run on: `SNAPGATE_TEST_STORE=postgres` puts every
/// `TestServer` and `init()` folder on a fresh database of the shared server (scripts/test
/// runs those test binaries a second time so); anything else keeps sled.
pub fn test_backend_is_postgres() -> bool {
    std::env::var("SNAPGATE_TEST_STORE").as_deref() == Ok("postgres")
}

/// Point a freshly written config at a fresh database when the tests run on PostgreSQL.
pub fn use_test_backend(cfg: &Path) {
    if test_backend_is_postgres() {
        let url = fresh_database();
        super::edit_config(cfg, |c| {
            c.store.backend = snapgate::config::StoreBackend::Postgres;
            c.store.url = Some(snapgate::store::postgres::StoreUrl::new(url));
            c.store.migrate = true;
        });
        copy_dev_folder_to_postgres(cfg);
    }
}

/// Bring a dev folder's sled contents (the dev merchant and application profiles `init`
/// seeds) into the PostgreSQL database its config now names, the way an operator does it:
/// `snapgate db copy` (here its library function, which migrates the schema first).
pub fn copy_dev_folder_to_postgres(cfg_path: &Path) {
    let cfg = snapgate::config::Config::load(cfg_path).unwrap();
    let settings = cfg.store.postgres().unwrap();
    let pg = snapgate::store::postgres::PgStore::open(&settings).unwrap();
    {
        let sled = snapgate::store::SledStore::open(&cfg.store.path).unwrap();
        snapgate::store::copy::copy_sled_to_postgres(&sled, &pg).unwrap();
    }
    pg.pool().close();
}
