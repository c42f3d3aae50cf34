//! `snapgate-bench load`: the load run.
//!
//! 1. Start snapgate in this process (dev config and a real sled database in a scratch folder,
//!    on 127.0.0.1:0, its own tokio runtime) or use `--target` (loopback only).
//! 2. `register`: every terminal registers once (durable registrations/s).
//! 3. Probe: one AuthorizeAndCapture; its answer's bytes become the baseline's answer.
//! 4. `baseline`: the plain hyper server (in this process, runtime like snapgate's), driven by
//!    the same client code, connections and request bodies as the next phase.
//! 5. `transactions`: AuthorizeAndCapture against snapgate.
//! 6. `relay` and `forward` (in-process only): AuthorizeAndCapture against a plain relay
//!    (`baseline::serve_relay`: snapgate's upstream client, none of the gateway's work), then
//!    against a second snapgate on the same store in forward mode; both relay to an in-process
//!    upstream that answers the probe's bytes. forward / relay is the gateway's own cost.
//! 7. `transactions @N` (with `--prefill N`, in-process only): N more sandbox transactions are
//!    written straight into the store, then AuthorizeAndCapture again: the cost per sale at N
//!    stored transactions, against phase 5's.
//! 8. `mixed`: transactions with `--register-mix` percent re-registrations.
//!
//! Phases 4-8 each run for `--requests` or `--duration`, after an unrecorded warm-up.

use crate::client::{self, Conn, Mode, PhaseOutcome, Plan, Stop, Target};
use crate::fleet::{self, Fleet, Op, Terminal};
use crate::plot;
use crate::report::{self, Cpu, Goal, PhaseReport};
use crate::sys::{self};
use hyper::header::HeaderValue;
use serde::Serialize;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

mod servers;

use servers::*;

/// Name prefix of the client's threads, to split CPU time between client and server.
const CLIENT_THREADS: &str = "bench-client";

#[derive(clap::Args, Serialize, Clone)]
pub struct LoadArgs {
    /// An already running snapgate, e.g. http://127.0.0.1:8080 (loopback addresses only), or
    /// several nodes of one cluster separated by commas (connections spread round robin).
    /// Without it, snapgate runs in this process with a dev config in a scratch folder.
    #[arg(long)]
    pub target: Option<String>,
    /// Key file with the BDK the target uses for key-set id FFFF987654 (default: the dev BDKs).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Terminals to register (each a device of its own).
    #[arg(long, default_value_t = 10_000)]
    pub terminals: u32,
    /// First device number: use a fresh range for a second run against the same --target.
    #[arg(long, default_value_t = 0)]
    pub device_offset: u32,
    /// Keep-alive connections (closed loop: one request in flight on each).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// Requests per measured phase (baseline, transactions, mixed).
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Open loop: offered requests/s over all connections in the measured phases (default:
    /// closed loop, each connection sends as soon as its previous answer arrives).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Unrecorded warm-up before each measured phase, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Percent of re-registrations in the mixed phase (0 skips the phase).
    #[arg(long, default_value_t = 10.0)]
    pub register_mix: f64,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the throughput / p99 plot as SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Worker threads of the in-process server runtime (and the baseline's).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the client runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Log filter of the in-process server, written to server.log in the scratch folder
    /// (`info` is what `snapgate serve` logs by default; `off` for none).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// Folder for the scratch folder (default: the system temp dir).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Seed for the registration mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// In-process snapgate's `store.offload`: `always` (the default) or `network`.
    #[arg(long, default_value = "always")]
    pub offload: String,
    /// After the transactions phase, write this many sandbox transactions into the store and
    /// measure sales again (in-process only; 0 skips it).
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Skip the relay and forward-mode phases.
    #[arg(long)]
    pub no_forward: bool,
    /// In-process snapgate's `store.threads` (0: its default).
    #[arg(long, default_value_t = 0)]
    pub store_threads: usize,
    /// In-process snapgate's sled cache, `store.cache_mb` (0: its default).
    #[arg(long, default_value_t = 0)]
    pub cache_mb: u64,
    /// In-process snapgate's `store.group_commit_window_us` (its default: 0).
    #[arg(long, default_value_t = 0)]
    pub commit_window_us: u64,
    /// In-process snapgate's `store.group_commit_gather_us` (unset: its default).
    #[arg(long)]
    pub gather_us: Option<u64>,
    /// In-process snapgate's `store.wal` (unset: its default, on).
    #[arg(long)]
    pub wal: Option<bool>,
    /// In-process snapgate's `security.ipek_cache_entries` (unset: its default; 0: off).
    #[arg(long)]
    pub ipek_cache_entries: Option<u32>,
}

#[derive(Serialize)]
struct LoadResult {
    tool: &'static str,
    date: String,
    machine: Machine,
    settings: LoadArgs,
    /// The baseline's answer: the bytes of snapgate's AuthorizeAndCapture answer.
    response_bytes: usize,
    phases: Vec<PhaseReport>,
    /// snapgate transactions req/s / baseline req/s.
    ratio: f64,
    /// With the relay and forward phases: what forward mode costs against a plain relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_vs_relay: Option<VsRelay>,
    /// This process's peak resident memory (client, baseline and in-process server together).
    peak_rss_bytes: u64,
    goals: Vec<Goal>,
}

/// Forward mode against the plain relay, from the same run: the gateway's own cost.
#[derive(Serialize)]
struct VsRelay {
    /// forward req/s / relay req/s.
    ratio: f64,
    /// The CPU this process spent outside the client threads, per successful sale.
    forward_server_us_per_sale: f64,
    relay_server_us_per_sale: f64,
}

impl VsRelay {
    fn of(phases: &[PhaseReport]) -> Option<VsRelay> {
        let find = |name: &str| phases.iter().find(|p| p.phase == name);
        let (relay, fwd) = (find("relay")?, find("forward")?);
        Some(VsRelay {
            ratio: fwd.rps / relay.rps,
            forward_server_us_per_sale: server_us_per_sale(fwd),
            relay_server_us_per_sale: server_us_per_sale(relay),
        })
    }
}

/// The CPU this process spent outside the client threads (server, baseline, relay, sled),
/// per successful sale of the phase.
fn server_us_per_sale(p: &PhaseReport) -> f64 {
    let ok = p.op(Op::Sale).map_or(0, |o| o.ok);
    p.cpu.this_process_other_s * 1e6 / ok.max(1) as f64
}

#[derive(Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub note: &'static str,
}

pub fn machine() -> Machine {
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        note: "client, server and baseline share these cores",
    }
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    check(&args)?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .max_blocking_threads(snapgate::config::Limits::default().max_blocking_threads)
        .thread_name("snapgate-server")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let server = match &args.target {
        Some(url) => external(url, args.keys.clone(), args.scratch.as_deref())?,
        None => in_process(&server_rt, &args)?,
    };
    eprintln!(
        "snapgate-bench: snapgate at {} ({}), {} terminals, {} connections",
        server.addr,
        if args.target.is_none() {
            "in this process"
        } else {
            "--target"
        },
        args.terminals,
        args.connections
    );
    let Server {
        addr,
        more,
        keys,
        stop,
        local,
        _scratch,
    } = server;
    let fleet = Arc::new(Fleet::new(keys)?);
    let result = client_rt.block_on(measure(
        &args,
        &server_rt,
        fleet,
        addr,
        more,
        local.as_ref(),
    ));
    if let Some((tx, task)) = stop {
        let _ = tx.send(());
        server_rt
            .block_on(task)
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("snapgate stopped with an error: {e}"))?;
    }
    let result = result?;
    write_outputs(&args, &result)
}

fn check(args: &LoadArgs) -> Result<(), String> {
    if args.connections == 0 || args.terminals == 0 {
        return Err("--connections and --terminals must be at least 1".into());
    }
    if (args.terminals as usize) < args.connections {
        return Err(
            "--terminals must be at least --connections (each connection owns its terminals)"
                .into(),
        );
    }
    if u64::from(args.device_offset) + u64::from(args.terminals) > u64::from(fleet::MAX_DEVICES) {
        return Err(format!(
            "--device-offset + --terminals must be at most {} (19 device-id bits)",
            fleet::MAX_DEVICES
        ));
    }
    if !(0.0..=100.0).contains(&args.register_mix) {
        return Err("--register-mix is a percentage, 0 to 100".into());
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    if args.requests == Some(0) || (args.requests.is_none() && args.duration <= 0.0) {
        return Err("--requests / --duration must be positive".into());
    }
    Ok(())
}

/// Split the terminals over the connections: terminal i goes to connection i mod C.
fn connections(args: &LoadArgs) -> Vec<Conn> {
    let c = args.connections;
    let mut groups: Vec<Vec<Terminal>> = (0..c).map(|_| Vec::new()).collect();
    for i in 0..args.terminals {
        groups[i as usize % c].push(Terminal::new(args.device_offset + i));
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(j, g)| Conn::new(g, args.seed.wrapping_mul(1_000_003).wrapping_add(j as u64)))
        .collect()
}

async fn measure(
    args: &LoadArgs,
    server_rt: &Runtime,
    fleet: Arc<Fleet>,
    addr: SocketAddr,
    more: Vec<SocketAddr>,
    local: Option<&Local>,
) -> Result<LoadResult, String> {
    let snapgate = Target {
        more,
        ..Target::new(addr)
    };
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let measured = match args.requests {
        Some(n) => Stop::Requests(n),
        None => Stop::Duration(Duration::from_secs_f64(args.duration)),
    };
    let warmup = Stop::Duration(Duration::from_secs_f64(args.warmup));
    let c = args.connections;
    let mut phases = Vec::new();

    let mut conns = connections(args);
    let register = Plan {
        mode: Mode::RegisterAll,
        stop: Stop::Exhausted,
        rate: None,
    };
    let (out, cpu) = phase("register", &fleet, &snapgate, conns, register, progress).await;
    phases.push(PhaseReport::new("register", "snapgate", c, &out, cpu));
    conns = out.conns;
    let unregistered = conns
        .iter()
        .flat_map(|c| &c.terminals)
        .filter(|t| t.token.is_none())
        .count();
    if unregistered > 0 {
        report::print_phases(&phases);
        return Err(format!(
            "{unregistered} terminals did not register; see the errors above (a --target that \
             has seen these devices refuses their KSN counters again: pass --device-offset)"
        ));
    }

    // The probe: one real answer, whose bytes the baseline sends back.
    let (body, ctype) = probe(&fleet, &snapgate, &mut conns[0]).await?;
    let (base_stop, base_task, base_addr) =
        start_baseline(server_rt, body.clone(), ctype.clone()).await?;
    let baseline = Target::new(base_addr);

    let run = |name: &'static str,
               target: Target,
               server_name: &'static str,
               mode: Mode,
               conns: Vec<Conn>| {
        let fleet = fleet.clone();
        async move {
            let warm = if args.warmup > 0.0 {
                let plan = Plan {
                    mode,
                    stop: warmup,
                    rate: args.rate,
                };
                phase(
                    &format!("{name} warm-up"),
                    &fleet,
                    &target,
                    conns,
                    plan,
                    progress,
                )
                .await
                .0
                .conns
            } else {
                conns
            };
            let plan = Plan {
                mode,
                stop: measured,
                rate: args.rate,
            };
            let (out, cpu) = phase(name, &fleet, &target, warm, plan, progress).await;
            (PhaseReport::new(name, server_name, c, &out, cpu), out.conns)
        }
    };
    let (report, conns) = run("baseline", baseline, "baseline", Mode::Sales, conns).await;
    phases.push(report);
    let _ = base_stop.send(());
    let _ = base_task.await;
    let (report, conns) = run(
        "transactions",
        snapgate.clone(),
        "snapgate",
        Mode::Sales,
        conns,
    )
    .await;
    phases.push(report);
    let mut conns = conns;
    if let (Some(l), false) = (local, args.no_forward) {
        // The upstream answers the probe's bytes, as the baseline did.
        let (up_stop, up_task, up_addr) =
            start_baseline(server_rt, body.clone(), ctype.clone()).await?;
        // First a plain relay to the same upstream (the gateway's work left out), then
        // snapgate in forward mode: their difference is the gateway's own cost.
        let (relay_stop, relay_task, relay_addr) =
            start_relay(server_rt, l, up_addr, ctype.clone()).await?;
        let (report, c2) = run(
            "relay",
            Target::new(relay_addr),
            "relay",
            Mode::Sales,
            conns,
        )
        .await;
        phases.push(report);
        conns = c2;
        let _ = relay_stop.send(());
        let _ = relay_task.await;
        let (fwd_stop, fwd_task, fwd_addr) = start_forward(server_rt, l, up_addr).await?;
        let (report, c2) = run(
            "forward",
            Target::new(fwd_addr),
            "snapgate",
            Mode::Sales,
            conns,
        )
        .await;
        phases.push(report);
        conns = c2;
        let _ = fwd_stop.send(());
        let _ = fwd_task.await;
        let _ = up_stop.send(());
        let _ = up_task.await;
    }
    if let (Some(l), n) = (local, args.prefill) {
        if n > 0 {
            let store = l.store.clone();
            eprintln!("prefill: writing {n} sandbox transactions into the store");
            let t = std::time::Instant::now();
            tokio::task::spawn_blocking(move || prefill(&store, n))
                .await
                .map_err(|e| e.to_string())??;
            eprintln!("prefill: done in {:.1} s", t.elapsed().as_secs_f64());
            let name: &'static str = Box::leak(format!("transactions @{n}").into_boxed_str());
            let (report, c2) = run(name, snapgate.clone(), "snapgate", Mode::Sales, conns).await;
            phases.push(report);
            conns = c2;
        }
    }
    if args.register_mix > 0.0 {
        let (report, _) = run(
            "mixed",
            snapgate.clone(),
            "snapgate",
            Mode::Mixed(args.register_mix),
            conns,
        )
        .await;
        phases.push(report);
    }

    let base_rps = phases[1].rps;
    let txn = &phases[2];
    let ratio = txn.rps / base_rps;
    let sale = txn.op(Op::Sale).map(|o| o.latency.clone());
    let p99 = sale.map_or(f64::NAN, |l| l.p99_ms);
    let reg = phases[0]
        .op(Op::Register)
        .map_or(0.0, |o| o.ok as f64 / phases[0].elapsed_s);
    let goals = vec![
        match args.rate {
            None => Goal::new(
                "transactions >= 50% of baseline req/s",
                format!(
                    "{:.0} / {:.0} req/s = {:.1}%",
                    txn.rps,
                    base_rps,
                    ratio * 100.0
                ),
                ratio >= 0.5,
            ),
            Some(r) => Goal::not_applicable(
                "transactions >= 50% of baseline req/s",
                format!(
                    "open loop at {r:.0} req/s: both serve the offered rate; run without --rate"
                ),
            ),
        },
        Goal::new(
            "transaction p99 < 2 ms at 64 connections",
            format!(
                "p99 {p99:.3} ms at {c} connections, {}",
                args.rate.map_or("closed loop".into(), |r| format!(
                    "open loop at {r:.0} req/s"
                ))
            ),
            p99 < 2.0 && c >= 64,
        ),
        Goal::new(
            "durable registrations >= 5,000/s",
            format!("{reg:.0}/s ({} terminals, {c} connections)", args.terminals),
            reg >= 5000.0,
        ),
        {
            match phases
                .iter()
                .find(|p| p.phase.starts_with("transactions @"))
            {
                Some(full) => {
                    let (a, b) = (server_us_per_sale(txn), server_us_per_sale(full));
                    Goal::new(
                        "server CPU per sale flat (within 10%) from empty to prefilled store",
                        format!(
                            "{a:.1} µs -> {b:.1} µs per sale ({}): {:+.1}%",
                            full.phase,
                            (b / a - 1.0) * 100.0
                        ),
                        b <= a * 1.1,
                    )
                }
                None => Goal::not_applicable(
                    "server CPU per sale flat (within 10%) from empty to prefilled store",
                    "run with --prefill 1000000 (in-process)".into(),
                ),
            }
        },
        Goal::new(
            "no errors",
            format!("{} errors", phases.iter().map(|p| p.errors).sum::<u64>()),
            phases.iter().all(|p| p.errors == 0),
        ),
    ];
    Ok(LoadResult {
        tool: "snapgate-bench load",
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: machine(),
        settings: args.clone(),
        response_bytes: body.len(),
        peak_rss_bytes: sys::memory().1,
        forward_vs_relay: VsRelay::of(&phases),
        phases,
        ratio,
        goals,
    })
}

/// Run one phase and measure the CPU the client and everything else used meanwhile.
async fn phase(
    name: &str,
    fleet: &Arc<Fleet>,
    target: &Target,
    conns: Vec<Conn>,
    plan: Plan,
    progress: bool,
) -> (PhaseOutcome, Cpu) {
    let before = sys::cpu_split(CLIENT_THREADS);
    let machine_before = sys::machine_busy();
    let out = client::run_phase(name, fleet.clone(), target.clone(), conns, plan, progress).await;
    let after = sys::cpu_split(CLIENT_THREADS);
    let busy = sys::machine_busy() - machine_before;
    let ours = (after.0 - before.0) + (after.1 - before.1);
    let done: u64 = out.ops.iter().map(|o| o.latency_us.len() + o.errors).sum();
    let errors: u64 = out.ops.iter().map(|o| o.errors).sum();
    eprintln!(
        "{name:>22}: {done} requests in {:.1} s = {:.0} req/s, {errors} errors, \
         other processes used {:.1} CPU-s",
        out.elapsed.as_secs_f64(),
        done as f64 / out.elapsed.as_secs_f64(),
        (busy - ours).max(0.0)
    );
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let cpu = Cpu {
        client_s: round(after.0 - before.0),
        this_process_other_s: round(after.1 - before.1),
        other_processes_s: round((busy - ours).max(0.0)),
    };
    (out, cpu)
}

async fn probe(
    fleet: &Fleet,
    target: &Target,
    conn: &mut Conn,
) -> Result<(bytes::Bytes, HeaderValue), String> {
    let req = fleet.sale(&mut conn.terminals[0]);
    let mut sender = client::connect(target.addr).await?;
    let (status, ctype, body) = client::send(&mut sender, target, &req).await?;
    if status != 200 || !fleet::contains(&body, fleet::APPROVED) {
        return Err(format!(
            "the probe AuthorizeAndCapture failed: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let ctype = HeaderValue::from_str(&ctype).map_err(|e| e.to_string())?;
    Ok((body, ctype))
}

fn write_outputs(args: &LoadArgs, r: &LoadResult) -> Result<(), String> {
    println!();
    report::print_phases(&r.phases);
    println!(
        "\nsnapgate transactions / baseline: {:.0} / {:.0} req/s = {:.1}% (answer {} bytes)",
        r.phases[2].rps,
        r.phases[1].rps,
        r.ratio * 100.0,
        r.response_bytes
    );
    if let Some(v) = &r.forward_vs_relay {
        println!(
            "snapgate forward / plain relay: {:.1}%; server CPU per sale {:.1} µs against the \
             relay's {:.1} µs: the gateway's own work {:.1} µs",
            v.ratio * 100.0,
            v.forward_server_us_per_sale,
            v.relay_server_us_per_sale,
            v.forward_server_us_per_sale - v.relay_server_us_per_sale
        );
    }
    println!(
        "peak RSS of this process (client + servers): {} MiB",
        r.peak_rss_bytes >> 20
    );
    println!("goals:");
    report::print_goals(&r.goals);
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &args.svg {
        let shown: Vec<&PhaseReport> = r.phases.iter().skip(1).collect();
        let title = format!(
            "snapgate-bench load: {} connections, {} terminals ({} CPUs shared)",
            args.connections, args.terminals, r.machine.cpus
        );
        plot::write_svg(p, &title, &shown)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
