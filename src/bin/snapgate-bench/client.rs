//! The HTTP/1.1 client: one task per keep-alive connection, each sending its next request when
//! the previous one has been answered in full (closed loop), or, with a rate, at its scheduled
//! time or as soon as the previous answer arrives if that is later (open loop: a late request
//! is timed from its scheduled time, so queueing is not hidden). Every request is timed on its
//! own (send to last body byte) into an HDR histogram per operation, and into a per-second
//! histogram for the timeline. A phase stops by itself: after a request count, a duration, or
//! when every connection has nothing left to send.

use crate::fleet::{self, Fleet, Op, Req, Terminal};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest latency recorded, in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 60_000_000;
/// Error messages kept per operation, as samples for the report.
const ERROR_SAMPLES: usize = 3;

/// What each connection sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Register every terminal of the connection once, then stop.
    RegisterAll,
    /// AuthorizeAndCapture, terminals in turn.
    Sales,
    /// Sales, with this share (0..=100 percent) of re-registrations.
    Mixed(f64),
}

/// When a phase ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Requests(u64),
    Duration(Duration),
    /// Only when every connection is done (RegisterAll).
    Exhausted,
}

/// What a phase sends, until when, and at which pace.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub mode: Mode,
    pub stop: Stop,
    /// Open loop at this many requests/s over all connections; None: closed loop.
    pub rate: Option<f64>,
}

/// One connection's terminals and position. Connections own disjoint terminals, so a
/// terminal's requests never overlap and its KSN counter and token need no locking.
pub struct Conn {
    pub terminals: Vec<Terminal>,
    next: usize,
    rng: rand::rngs::StdRng,
}

impl Conn {
    pub fn new(terminals: Vec<Terminal>, seed: u64) -> Conn {
        Conn {
            terminals,
            next: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// The next request, and which terminal sends it; None when `RegisterAll` is done.
    fn next_request(&mut self, fleet: &Fleet, mode: Mode) -> Option<(usize, Req)> {
        if self.terminals.is_empty() {
            return None;
        }
        if mode == Mode::RegisterAll {
            if self.next >= self.terminals.len() {
                return None;
            }
            let i = self.next;
            self.next += 1;
            return Some((i, fleet.register(&mut self.terminals[i])));
        }
        let i = self.next % self.terminals.len();
        self.next = self.next.wrapping_add(1);
        let register = match mode {
            Mode::Mixed(pct) => self.rng.gen_range(0.0..100.0) < pct,
            _ => false,
        };
        let t = &mut self.terminals[i];
        Some((
            i,
            if register {
                fleet.register(t)
            } else {
                fleet.sale(t)
            },
        ))
    }

    /// Check a 200 answer; a registration hands its terminal the new token.
    fn accept(&mut self, i: usize, op: Op, body: &[u8]) -> Result<(), String> {
        match op {
            Op::Register => {
                let token = fleet::element_text(body, "RegisterTerminalResult")
                    .ok_or("no RegisterTerminalResult in the answer")?;
                self.terminals[i].token = Some(token.to_owned());
                Ok(())
            }
            Op::Sale
                if fleet::contains(body, fleet::APPROVED)
                    || fleet::contains(body, fleet::APPROVED_RELAYED) =>
            {
                Ok(())
            }
            Op::Sale => Err(format!(
                "transaction not approved: {}",
                String::from_utf8_lossy(&body[..body.len().min(600)])
            )),
        }
    }
}

/// Latency and outcome counts for one operation.
pub struct OpStats {
    pub latency_us: Histogram<u64>,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            latency_us: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
            errors: 0,
            error_samples: Vec::new(),
        }
    }

    fn merge(&mut self, other: &OpStats) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.errors += other.errors;
        for s in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(s.clone());
            }
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(message);
        }
    }
}

/// One second of a phase: every answered request (all operations) that completed in it.
pub struct Second {
    pub latency_us: Histogram<u64>,
    pub errors: u64,
}

impl Second {
    fn new() -> Second {
        Second {
            latency_us: Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid bounds"),
            errors: 0,
        }
    }
}

/// What a phase measured.
pub struct PhaseOutcome {
    pub elapsed: Duration,
    /// Indexed by `Op::index`.
    pub ops: Vec<OpStats>,
    pub seconds: Vec<Second>,
    /// Client time spent building requests (encryption, envelope), summed over connections.
    pub build_time: Duration,
    pub conns: Vec<Conn>,
}

/// Where the requests go.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    /// Further nodes of the same cluster: connection j goes to the j-th address of
    /// `addr, more...` (round robin), as a load balancer spreading connections would.
    pub more: Vec<SocketAddr>,
}

impl Target {
    pub fn new(addr: SocketAddr) -> Target {
        Target {
            addr,
            host: addr.to_string(),
            more: Vec::new(),
        }
    }

    /// The node connection `j` talks to.
    pub fn addr_for(&self, j: usize) -> SocketAddr {
        match j % (self.more.len() + 1) {
            0 => self.addr,
            k => self.more[k - 1],
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// Open a keep-alive HTTP/1.1 connection; its driver runs as a task of its own.
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Send one SOAP request and read the whole answer: (status, content type, body).
pub async fn send(
    sender: &mut Sender,
    target: &Target,
    req: &Req,
) -> Result<(u16, String, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let request = Request::post(req.path)
        .header(HOST, &target.host)
        .header(CONTENT_TYPE, "text/xml; charset=utf-8")
        .header("soapaction", req.action)
        .body(Full::new(req.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, ctype, body))
}

/// The shared state of a running phase.
struct Shared {
    fleet: Arc<Fleet>,
    target: Target,
    mode: Mode,
    stop: Stop,
    start: Instant,
    /// Open loop: the time between two requests on one connection.
    interval: Option<Duration>,
    connections: usize,
    /// Requests started (tickets taken) and answered.
    issued: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    seconds: Mutex<Vec<Second>>,
}

impl Shared {
    /// May another request start?
    fn ticket(&self) -> bool {
        match self.stop {
            Stop::Requests(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
            Stop::Duration(d) => self.start.elapsed() < d,
            Stop::Exhausted => true,
        }
    }

    fn merge_second(&self, index: usize, s: &Second) {
        let mut all = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        while all.len() <= index {
            all.push(Second::new());
        }
        all[index]
            .latency_us
            .add(&s.latency_us)
            .expect("same bounds");
        all[index].errors += s.errors;
    }
}

/// Run one phase over `conns` (one connection each) and hand the connections back.
pub async fn run_phase(
    label: &str,
    fleet: Arc<Fleet>,
    target: Target,
    conns: Vec<Conn>,
    plan: Plan,
    show_progress: bool,
) -> PhaseOutcome {
    let Plan { mode, stop, rate } = plan;
    let connections = conns.len();
    let expected = match (stop, mode) {
        (Stop::Requests(n), _) => Some(n),
        (_, Mode::RegisterAll) => Some(conns.iter().map(|c| c.terminals.len() as u64).sum()),
        _ => None,
    };
    let shared = Arc::new(Shared {
        fleet,
        target,
        mode,
        stop,
        start: Instant::now(),
        interval: rate.map(|r| Duration::from_secs_f64(connections as f64 / r)),
        connections,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        seconds: Mutex::new(Vec::new()),
    });
    let bar = progress_bar(label, stop, expected, show_progress);
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let done = shared.done.load(Ordering::Relaxed);
                let now = Instant::now();
                let rps = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, done);
                match shared.stop {
                    Stop::Duration(_) => {
                        bar.set_position(shared.start.elapsed().as_millis() as u64 / 100)
                    }
                    _ => bar.set_position(done),
                }
                bar.set_message(format!(
                    "{rps:>6.0} req/s, {done} done, {} errors",
                    shared.errors.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(j, c)| tokio::spawn(drive(shared.clone(), j, c)))
        .collect();
    let mut ops: Vec<OpStats> = Op::ALL.iter().map(|_| OpStats::new()).collect();
    let mut build_time = Duration::ZERO;
    let mut conns = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (conn, stats, built) = t.await.expect("connection task");
        for (all, one) in ops.iter_mut().zip(&stats) {
            all.merge(one);
        }
        build_time += built;
        conns.push(conn);
    }
    let elapsed = shared.start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let seconds = std::mem::take(&mut *shared.seconds.lock().unwrap_or_else(|p| p.into_inner()));
    PhaseOutcome {
        elapsed,
        ops,
        seconds,
        build_time,
        conns,
    }
}

fn progress_bar(label: &str, stop: Stop, expected: Option<u64>, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (len, template) = match (stop, expected) {
        (Stop::Duration(d), _) => (
            d.as_millis() as u64 / 100,
            "{prefix:>12} [{bar:20}] {elapsed:>3} {msg}",
        ),
        (_, Some(n)) => (n, "{prefix:>12} [{bar:20}] {pos}/{len} {msg}"),
        _ => (0, "{prefix:>12} {msg}"),
    };
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// One connection's loop. Returns its terminals, its stats per operation and its build time.
async fn drive(shared: Arc<Shared>, j: usize, mut conn: Conn) -> (Conn, Vec<OpStats>, Duration) {
    let mut stats: Vec<OpStats> = Op::ALL.iter().map(|_| OpStats::new()).collect();
    // Open loop: connections start staggered over one interval.
    let mut next_at = shared
        .interval
        .map(|i| shared.start + i.mul_f64(j as f64 / shared.connections as f64));
    let mut build_time = Duration::ZERO;
    let mut second = (0usize, Second::new());
    let mut sender: Option<Sender> = None;
    while shared.ticket() {
        let built = Instant::now();
        let Some((i, req)) = conn.next_request(&shared.fleet, shared.mode) else {
            break;
        };
        build_time += built.elapsed();
        if sender.is_none() {
            match connect(shared.target.addr_for(j)).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    stats[req.op.index()].error(e);
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let started = match (next_at, shared.interval) {
            (Some(at), Some(interval)) => {
                next_at = Some(at + interval);
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                    Instant::now()
                } else {
                    at
                }
            }
            _ => Instant::now(),
        };
        let result = send(s, &shared.target, &req).await;
        let took = started.elapsed();
        let outcome = match result {
            Ok((200, _, body)) => conn.accept(i, req.op, &body),
            Ok((status, _, body)) => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(e) => {
                sender = None;
                Err(e)
            }
        };
        let micros = (took.as_micros() as u64).clamp(1, MAX_MICROS);
        let op = &mut stats[req.op.index()];
        let sec = (started + took - shared.start).as_secs() as usize;
        if sec != second.0 {
            shared.merge_second(second.0, &second.1);
            second = (sec, Second::new());
        }
        match outcome {
            Ok(()) => {
                op.latency_us.saturating_record(micros);
                second.1.latency_us.saturating_record(micros);
            }
            Err(e) => {
                op.error(e);
                second.1.errors += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    shared.merge_second(second.0, &second.1);
    (conn, stats, build_time)
}
