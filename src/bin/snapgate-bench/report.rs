//! Turning measurements into the report: per-phase and per-operation figures (req/s,
//! p50/p90/p99/p99.9 latency, errors), the per-second timeline, the goals with pass/miss, and
//! the text table printed at the end. Everything here serializes to the JSON result.

use crate::client::{OpStats, PhaseOutcome};
use crate::fleet::Op;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Serialize, Clone)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Serialize, Clone)]
pub struct OpReport {
    pub op: &'static str,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub latency: Latency,
    pub error_samples: Vec<String>,
}

#[derive(Serialize, Clone)]
pub struct SecondReport {
    pub second: usize,
    pub rps: f64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// CPU seconds used during a phase.
#[derive(Serialize, Clone, Copy)]
pub struct Cpu {
    /// By the client's threads.
    pub client_s: f64,
    /// By this process's other threads: the in-process server's runtime, sled's threads, the
    /// baseline.
    pub this_process_other_s: f64,
    /// By other processes on the machine (they compete for the same cores).
    pub other_processes_s: f64,
}

#[derive(Serialize, Clone)]
pub struct PhaseReport {
    pub phase: String,
    /// "snapgate" or "baseline".
    pub server: String,
    pub connections: usize,
    pub elapsed_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub ops: Vec<OpReport>,
    /// Client time to build one request (DUKPT encryption and envelope), mean.
    pub client_build_us_per_request: f64,
    pub cpu: Cpu,
    pub timeline: Vec<SecondReport>,
}

impl PhaseReport {
    pub fn new(
        phase: &str,
        server: &str,
        connections: usize,
        out: &PhaseOutcome,
        cpu: Cpu,
    ) -> PhaseReport {
        let secs = out.elapsed.as_secs_f64();
        let ops: Vec<OpReport> = Op::ALL
            .iter()
            .map(|op| (op, &out.ops[op.index()]))
            .filter(|(_, s)| s.latency_us.len() + s.errors > 0)
            .map(|(op, s)| op_report(*op, s, secs))
            .collect();
        let requests: u64 = ops.iter().map(|o| o.ok + o.errors).sum();
        let errors: u64 = ops.iter().map(|o| o.errors).sum();
        let timeline = out
            .seconds
            .iter()
            .enumerate()
            // The last second is usually partial: leave it out of the timeline.
            .filter(|(i, _)| (*i as f64) + 1.0 <= secs)
            .map(|(i, s)| SecondReport {
                second: i,
                rps: (s.latency_us.len() + s.errors) as f64,
                errors: s.errors,
                p50_ms: s.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: s.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            })
            .collect();
        PhaseReport {
            phase: phase.to_owned(),
            server: server.to_owned(),
            connections,
            elapsed_s: secs,
            requests,
            errors,
            rps: requests as f64 / secs,
            ops,
            client_build_us_per_request: out.build_time.as_secs_f64() * 1e6
                / requests.max(1) as f64,
            cpu,
            timeline,
        }
    }

    pub fn op(&self, op: Op) -> Option<&OpReport> {
        self.ops.iter().find(|o| o.op == op.name())
    }
}

fn op_report(op: Op, s: &OpStats, secs: f64) -> OpReport {
    let ok = s.latency_us.len();
    OpReport {
        op: op.name(),
        ok,
        errors: s.errors,
        rps: (ok + s.errors) as f64 / secs,
        latency: Latency::of(&s.latency_us),
        error_samples: s.error_samples.clone(),
    }
}

#[derive(Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub pass: bool,
    /// False when this run cannot judge the goal (then `pass` is false too).
    pub applies: bool,
}

impl Goal {
    pub fn new(goal: &str, measured: String, pass: bool) -> Goal {
        Goal {
            goal: goal.to_owned(),
            measured,
            pass,
            applies: true,
        }
    }

    /// A goal this run does not measure, and why.
    pub fn not_applicable(goal: &str, why: String) -> Goal {
        Goal {
            goal: goal.to_owned(),
            measured: why,
            pass: false,
            applies: false,
        }
    }
}

/// The text table printed at the end of a run.
pub fn print_phases(phases: &[PhaseReport]) {
    println!(
        "{:<13} {:<9} {:<20} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "server",
        "operation",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for p in phases {
        for o in &p.ops {
            let l = &o.latency;
            println!(
                "{:<13} {:<9} {:<20} {:>9} {:>7} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                p.phase,
                p.server,
                o.op,
                o.ok,
                o.errors,
                o.rps,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
            for e in &o.error_samples {
                println!("{:<13} {:<9}   error: {}", "", "", e.replace('\n', " "));
            }
        }
        println!(
            "{:<13} {:<9} {:<20} {:>9} {:>7} {:>10.0}   over {:.1} s; client builds {:.1} us/req; \
             CPU-s: client {:.1}, server {:.1}, other processes {:.1}",
            "",
            "",
            "(all)",
            p.requests - p.errors,
            p.errors,
            p.rps,
            p.elapsed_s,
            p.client_build_us_per_request,
            p.cpu.client_s,
            p.cpu.this_process_other_s,
            p.cpu.other_processes_s
        );
    }
}

pub fn print_goals(goals: &[Goal]) {
    for g in goals {
        println!(
            "  [{}] {}: {}",
            match (g.applies, g.pass) {
                (false, _) => "n/a ",
                (true, true) => "pass",
                (true, false) => "MISS",
            },
            g.goal,
            g.measured
        );
    }
}
