//! The real-binary fixture: `snapgate init` a folder, then `snapgate serve` it as a child
//! process with a clean environment, JSON logs to a file, and a bounded readiness wait (the
//! "listening" log line from this process, then /healthz). Dropping it SIGKILLs the process.

use super::*;
use snapgate::config::{Config, Keys};
use snapgate::store::SledStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a server may take to come up (debug build, busy 2-core machine).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(10);

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `snapgate init --dir DIR --listen 127.0.0.1:PORT`; returns the config path. An admin
/// listener the config names gets a free port too: a fixed default would collide between
/// tests running in parallel.
pub fn init(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_snapgate"))
        .args(["init", "--dir"])
        .arg(dir)
        .arg("--listen")
        .arg(loopback(free_port()).to_string())
        .env_remove("SNAPGATE_CONFIG")
        .output()
        .expect("run snapgate init");
    assert!(
        out.status.success(),
        "snapgate init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("snapgate.toml");
    assert!(cfg.exists(), "snapgate init wrote no {}", cfg.display());
    edit_config(&cfg, |c| {
        if c.server.admin_listen.is_some() {
            c.server.admin_listen = Some(loopback(free_port()));
        }
    });
    use_test_backend(&cfg);
    cfg
}

/// Change a config file (the rest of it as `snapgate init` wrote it).
pub fn edit_config(cfg: &Path, f: impl FnOnce(&mut Config)) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let mut c: Config = toml::from_str(&text).unwrap();
    f(&mut c);
    std::fs::write(cfg, toml::to_string_pretty(&c).unwrap()).unwrap();
}

/// The BDKs and signing keys of a folder, read from the key file its config names.
pub fn keys_of(cfg: &Path) -> Arc<Keys> {
    let c = Config::load(cfg).unwrap();
    Arc::new(Keys::load(&c.security.keys_file).unwrap())
}

/// Open the store of a stopped server (bounded wait for sled's lock to be free), on the
/// engine its config names.
pub fn open_store(cfg: &Path) -> Arc<dyn snapgate::store::TerminalStore> {
    let c = Config::load(cfg).unwrap();
    if c.store.backend == snapgate::config::StoreBackend::Postgres {
        return snapgate::store::engine::Engine::open(&c.store)
            .unwrap()
            .terminals();
    }
    let path = c.store.path;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match SledStore::open(&path) {
            Ok(s) => return Arc::new(s),
            Err(e) if Instant::now() > deadline => {
                panic!("cannot open the store {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A running `snapgate serve`.
pub struct BinaryServer {
    child: Child,
    pub addr: SocketAddr,
    stderr_path: PathBuf,
}

/// Numbers the stderr files, one per server start.
static STARTS: AtomicUsize = AtomicUsize::new(0);

impl BinaryServer {
    /// `snapgate serve --config CFG`, waiting (bounded) until it listens and /healthz answers.
    /// If a port of the config was taken meanwhile, the next attempt writes fresh ones into it.
    pub async fn start(cfg: &Path) -> BinaryServer {
        let dir = cfg.parent().unwrap();
        let mut last_stderr = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                edit_config(cfg, |c| {
                    c.server.listen = loopback(free_port());
                    if c.server.admin_listen.is_some() {
                        c.server.admin_listen = Some(loopback(free_port()));
                    }
                });
            }
            let addr = Config::load(cfg).unwrap().server.listen;
            let n = STARTS.fetch_add(1, Ordering::Relaxed);
            let stderr_path = dir.join(format!("serve-{n}.stderr"));
            let stderr = std::fs::File::create(&stderr_path).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_snapgate"))
                .arg("serve")
                .arg("--config")
                .arg(cfg)
                .args(["--log-format", "json", "--log", "info"])
                .env_remove("SNAPGATE_CONFIG")
                .env_remove("SNAPGATE_LISTEN")
                .env_remove("SNAPGATE_LOG")
                .env_remove("SNAPGATE_LOG_FORMAT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .spawn()
                .expect("spawn snapgate serve");
            let mut server = BinaryServer {
                child,
                addr,
                stderr_path,
            };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(text) => {
                    // Only a lost port race or a store lock still held is worth another try.
                    let retry = text.contains("cannot listen") || text.contains("cannot open");
                    assert!(retry, "snapgate serve did not start:\n{text}");
                    last_stderr = text;
                }
            }
        }
        panic!("snapgate serve did not start after 5 attempts; last stderr:\n{last_stderr}");
    }

    /// Until the process has logged that it listens and /healthz answers 200. Err(stderr) if
    /// it exited; panics with its stderr at the deadline.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}; stderr:\n{}", self.stderr()));
            }
            // The log line proves that this process holds the port, not someone else.
            if self.log().contains("snapgate listening") {
                if let Ok(r) = try_send(self.addr, "GET", "/healthz", &[], Default::default()).await
                {
                    if r.status == 200 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "snapgate serve on {} not ready after {STARTUP_DEADLINE:?}; stderr:\n{}",
                    self.addr,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far (JSON log lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Wait (bounded by `limit`, panicking with the log) until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log after {limit:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The end of what the server wrote to stderr, for failure messages (it logs every request).
    pub fn stderr(&self) -> String {
        const LINES: usize = 40;
        let all = self.log();
        let lines: Vec<&str> = all.lines().collect();
        let skip = lines.len().saturating_sub(LINES);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("[{skip} earlier lines not shown]\n"));
        }
        for l in &lines[skip..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap; returns the end of its stderr.
    pub fn kill9(mut self) -> String {
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("reap the server");
        assert!(
            !status.success(),
            "the server exited by itself ({status}) instead of being killed:\n{}",
            self.stderr()
        );
        self.stderr()
    }

    /// Send SIGTERM (a graceful shutdown) with `kill -TERM`.
    pub fn terminate(&self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(term.success(), "kill -TERM failed");
    }

    /// Wait (bounded by `EXIT_DEADLINE`) for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {EXIT_DEADLINE:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        // No-ops once the process was reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
