//! What the harness reads from the operating system: a scratch folder that removes itself,
//! memory from /proc/self/status, CPU time per thread from /proc/self/task and for the whole
//! machine from /proc/stat, and `du`-style sizes of a folder.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A folder under `parent` (or the system temp dir) removed on drop unless `keep` is set.
pub struct ScratchDir {
    path: PathBuf,
    pub keep: bool,
}

impl ScratchDir {
    pub fn new(parent: Option<&Path>, prefix: &str) -> Result<ScratchDir, String> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_owned);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ScratchDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Resident and peak resident memory of this process, in bytes (VmRSS, VmHWM).
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) in a /proc `stat` file: utime and stime, fields 14 and 15 (the
/// 12th and 13th after the parenthesised name).
fn stat_secs(stat: &str) -> Option<f64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some((ticks(11) + ticks(12)) / TICKS_PER_SEC)
}

/// CPU seconds (user + system) used so far by this process, split into its threads whose name
/// starts with `prefix` (they live as long as the run: the client's) and the rest of the
/// process. The rest is the process's total minus those, so threads that ended (sled's I/O
/// threads, a runtime dropped between phases) still count where they ran.
pub fn cpu_split(prefix: &str) -> (f64, f64) {
    let mut mine = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let dir = t.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if name.trim_end().starts_with(prefix) {
                let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
                mine += stat_secs(&stat).unwrap_or(0.0);
            }
        }
    }
    let total = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_secs(&s))
        .unwrap_or(0.0);
    (mine, (total - mine).max(0.0))
}

/// CPU seconds the whole machine has spent busy (every process, all cores) since boot, from
/// /proc/stat: user + nice + system + irq + softirq + steal.
pub fn machine_busy() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) / TICKS_PER_SEC
}

/// Bytes under `path`: (apparent size, allocated size as `du` counts it).
pub fn disk_usage(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0, 0);
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    (apparent, allocated)
}
