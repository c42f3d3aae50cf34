//! `snapgate-bench load` still runs every phase end to end (register, baseline, transactions,
//! relay, forward, mixed) against the real server: a short debug run, no figures asserted
//! (speed is measured in benchmarks, not tests). It caught the forward phase refusing to start
//! once forward mode required its own upstream session token.

use std::process::Command;

#[test]
fn a_short_load_run_completes_every_phase_without_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snapgate-bench"))
        .args(["load", "--terminals", "64", "--connections", "2"])
        .args(["--requests", "100", "--warmup", "0.1", "--no-progress"])
        .args(["--server-log", "off", "--scratch"])
        .arg(scratch.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for phase in [
        "register",
        "baseline",
        "transactions",
        "relay",
        "forward",
        "mixed",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{phase}:")))
            .unwrap_or_else(|| panic!("no {phase} phase:\n{text}"));
        assert!(line.contains(" 0 errors"), "{line}\n{text}");
    }
    assert!(
        text.contains("snapgate forward / plain relay: "),
        "no forward against relay line:\n{text}"
    );
}
