//! Counters, gauges and latency histograms, exposed on `/metrics` in the OpenMetrics text format
//! by the Prometheus project's Rust client (`prometheus-client`). Counting never takes a global
//! lock: counters and gauges are atomics, the latency histogram is ours, with atomic buckets
//! (the crate's histogram takes a mutex per observation), each operation's series are resolved
//! once (`Metrics::hot`), and other labelled series are found under their family's read lock.
//! Label values come from fixed sets (operations, fault kinds, reasons), never from requests.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The content type of `render`'s output (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// One label, or two: names and values all static, so counting a request allocates nothing
/// once its series exists.
type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// A latency histogram without a lock: one atomic per bucket (not cumulative; the encoder sums
/// them; their total is the count) and the sum in nanoseconds (exact, and an integer add). A
/// clone is a handle on the same histogram.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Relaxed);
        self.0
            .sum_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BUCKETS.len() + 1];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = (
                BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                self.0.buckets[i].load(Relaxed),
            );
        }
        // The count is the buckets' total, so a scrape during an observation stays consistent.
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A value read when `/metrics` is scraped (the store's counters, its readiness), rendered after
/// the registry's own metrics.
pub struct Scraped {
    /// The exposed name; a counter's without `_total`, which the encoder appends.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: ScrapedKind,
}

pub enum ScrapedKind {
    Counter(u64),
    Gauge(i64),
}

/// The series every answered request touches, for one operation: its latency histogram and,
/// once it is a transaction, its `outcome="ok"` counter; handles on the families' own series.
struct HotOp {
    /// The name's address and length: a `&'static str` is found by identity, without hashing
    /// its text (equal text elsewhere in memory just takes another slot, or the family path).
    key: (usize, usize),
    latency: LatencyHistogram,
    ok: OnceLock<Counter>,
}

/// Slots for `HotOp`s (there are a few dozen operation names), and how many are probed.
const HOT_SLOTS: usize = 128;
const HOT_PROBES: usize = 4;

pub struct Metrics {
    registry: Registry,
    registrations: Family<Labels1, Counter>,
    transactions: Family<Labels2, Counter>,
    tokens_renewed: Counter,
    card_data_failures: Family<Labels1, Counter>,
    faults: Family<Labels1, Counter>,
    namespace_mismatches: Family<Labels2, Counter>,
    pairing_codes: Family<Labels1, Counter>,
    pairings: Family<Labels2, Counter>,
    pairing_certs_revoked: Family<Labels1, Counter>,
    latency: Family<Labels1, LatencyHistogram>,
    /// Every request's series, resolved once per operation name (`hot`).
    hot: Box<[OnceLock<HotOp>]>,
    /// The Cloud Connector's gauges and counters (shared with its connection tasks).
    pub relay: Arc<RelayMetrics>,
}

/// Register `metric` under `name` (a counter's without `_total`: the encoder appends it), with
/// `help` as written here (the encoder ends it with its own full stop).
fn register(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    registry.register(name, help.trim_end_matches('.'), Declared(metric));
}

/// A metric whose HELP and TYPE are written even before its first series (the crate skips an
/// empty family), so every scrape lists every metric snapgate has.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let registrations = Family::default();
        let transactions = Family::default();
        let tokens_renewed = Counter::default();
        let card_data_failures = Family::default();
        let faults = Family::default();
        let namespace_mismatches = Family::default();
        let pairing_codes = Family::default();
        let pairings = Family::default();
        let pairing_certs_revoked = Family::default();
        let latency = Family::default();
        register(
            &mut r,
            "snapgate_registrations",
            "RegisterTerminal outcomes, by result and refusal reason.",
            Family::clone(&registrations),
        );
        register(
            &mut r,
            "snapgate_transactions",
            "TPS operations, by operation and outcome.",
            Family::clone(&transactions),
        );
        register(
            &mut r,
            "snapgate_tokens_renewed",
            "Responses that carried a renewed TerminalAccessToken.",
            tokens_renewed.clone(),
        );
        register(
            &mut r,
            "snapgate_card_data_failures",
            "Transactions refused for their card data, by reason (none reveals the card).",
            Family::clone(&card_data_failures),
        );
        register(
            &mut r,
            "snapgate_faults",
            "SOAP faults sent, by fault kind.",
            Family::clone(&faults),
        );
        register(
            &mut r,
            "snapgate_namespace_mismatches",
            "Request elements in another namespace than the platform's schema declares, by \
             element and what was done (accepted: cws.namespaces = lenient; refused: strict).",
            Family::clone(&namespace_mismatches),
        );
        register(
            &mut r,
            "snapgate_pairing_codes",
            "Pairing setup codes made, by who asked (operator or terminal).",
            Family::clone(&pairing_codes),
        );
        register(
            &mut r,
            "snapgate_pairings",
            "Pairing exchanges and renewals, by operation and result (ok or the error code).",
            Family::clone(&pairings),
        );
        register(
            &mut r,
            "snapgate_pairing_certs_revoked",
            "Client certificates put on the deny list, by reason (repaired, renewed, revoked).",
            Family::clone(&pairing_certs_revoked),
        );
        register(
            &mut r,
            "snapgate_request_duration_seconds",
            "Time to answer a SOAP request, by operation.",
            Family::clone(&latency),
        );
        let relay = Arc::new(RelayMetrics::new(&mut r));
        Metrics {
            registry: r,
            registrations,
            transactions,
            tokens_renewed,
            card_data_failures,
            faults,
            namespace_mismatches,
            pairing_codes,
            pairings,
            pairing_certs_revoked,
            latency,
            hot: (0..HOT_SLOTS).map(|_| OnceLock::new()).collect(),
            relay,
        }
    }
}

impl Metrics {
    pub fn registration(&self, result: &'static str) {
        self.registrations
            .get_or_create(&[("result", result)])
            .inc();
    }

    pub fn transaction(&self, operation: &'static str, outcome: &'static str) {
        if outcome == "ok" {
            if let Some(h) = self.hot(operation) {
                let ok = h.ok.get_or_init(|| {
                    self.transactions
                        .get_or_create_owned(&[("operation", operation), ("outcome", "ok")])
                });
                ok.inc();
                return;
            }
        }
        self.transactions
            .get_or_create(&[("operation", operation), ("outcome", outcome)])
            .inc();
    }

    pub fn token_renewed(&self) {
        self.tokens_renewed.inc();
    }

    pub fn card_data_failure(&self, reason: &'static str) {
        self.card_data_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn fault(&self, kind: &'static str) {
        self.faults.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn namespace_mismatch(&self, element: &'static str, action: &'static str) {
        self.namespace_mismatches
            .get_or_create(&[("element", element), ("action", action)])
            .inc();
    }

    pub fn pairing_code(&self, source: &'static str) {
        self.pairing_codes
            .get_or_create(&[("source", source)])
            .inc();
    }

    pub fn pairing(&self, operation: &'static str, result: &'static str) {
        self.pairings
            .get_or_create(&[("operation", operation), ("result", result)])
            .inc();
    }

    pub fn pairing_cert_revoked(&self, reason: &'static str) {
        self.pairing_certs_revoked
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn observe(&self, operation: &'static str, took: Duration) {
        match self.hot(operation) {
            Some(h) => h.latency.observe(took),
            None => self
                .latency
                .get_or_create(&[("operation", operation)])
                .observe(took),
        }
    }

    /// The resolved series of `operation`: found with one atomic load once resolved (the
    /// family's lookup hashes the label text under its read lock: twice the cost per request).
    /// None when every probed slot holds another name; the caller then uses the family.
    fn hot(&self, operation: &'static str) -> Option<&HotOp> {
        let key = (operation.as_ptr() as usize, operation.len());
        let start = ((key.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as usize;
        (0..HOT_PROBES).find_map(|i| {
            let h = self.hot[(start + i) % HOT_SLOTS].get_or_init(|| HotOp {
                key,
                latency: self
                    .latency
                    .get_or_create_owned(&[("operation", operation)]),
                ok: OnceLock::new(),
            });
            (h.key == key).then_some(h)
        })
    }

    /// The OpenMetrics exposition of this process's metrics (ends with `# EOF`).
    pub fn render(&self) -> String {
        self.render_with(&[])
    }

    /// The exposition with values read at scrape time (`scraped`) before the `# EOF`.
    pub fn render_with(&self, scraped: &[Scraped]) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(16 << 10);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if !scraped.is_empty() {
            let mut extra = Registry::default();
            for s in scraped {
                match s.kind {
                    ScrapedKind::Counter(v) => {
                        register(&mut extra, s.name, s.help, ConstCounter::new(v))
                    }
                    ScrapedKind::Gauge(v) => {
                        register(&mut extra, s.name, s.help, ConstGauge::new(v))
                    }
                }
            }
            let _ = encode_registry(&mut out, &extra);
        }
        let _ = encode_eof(&mut out);
        out
    }
}

/// Why the relay dropped a message or a connection (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A device message while no POS held the session.
    NoSession,
    /// A peer did not read fast enough (closed 1008).
    SlowConsumer,
    /// The grace buffer for an absent device was full.
    BufferFull,
    /// A dropped device did not come back within the grace (POS closed 4002).
    GraceExpired,
    /// A connection replaced by a newer one or a takeover (4001).
    Replaced,
    /// No pong within the deadline.
    NoPong,
    /// A frame or message over the limits (1009).
    TooBig,
    /// Idle or absolute session timeout (4003, 4004).
    Timeout,
}

impl DropReason {
    const ALL: [(DropReason, &'static str); 8] = [
        (DropReason::NoSession, "no_session"),
        (DropReason::SlowConsumer, "slow_consumer"),
        (DropReason::BufferFull, "buffer_full"),
        (DropReason::GraceExpired, "grace_expired"),
        (DropReason::Replaced, "replaced"),
        (DropReason::NoPong, "no_pong"),
        (DropReason::TooBig, "too_big"),
        (DropReason::Timeout, "timeout"),
    ];

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|(d, _)| *d == self)
            .unwrap_or(0)
    }
}

/// The relay's gauges and counters: every labelled series is resolved once, when registered, so
/// the relay counts each message with a plain atomic add.
#[derive(Debug)]
pub struct RelayMetrics {
    devices: Gauge,
    sessions: Gauge,
    /// [POS to device, device to POS]
    messages: [Counter; 2],
    bytes: [Counter; 2],
    drops: [Counter; 8],
    /// Token endpoint answers: [issued, refused].
    tokens: [Counter; 2],
}

/// Register a family with one label and resolve each of `values` into its counter.
fn resolved<const N: usize>(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Labels1, Counter>::default();
    register(r, name, help, family.clone());
    values.map(|v| family.get_or_create_owned(&[(label, v)]))
}

/// Counters registered nowhere (a connector under test without a `/metrics`).
impl Default for RelayMetrics {
    fn default() -> Self {
        RelayMetrics::new(&mut Registry::default())
    }
}

impl RelayMetrics {
    fn new(r: &mut Registry) -> RelayMetrics {
        let devices = Gauge::default();
        let sessions = Gauge::default();
        register(
            r,
            "snapgate_connector_devices_connected",
            "Devices connected to this node.",
            devices.clone(),
        );
        register(
            r,
            "snapgate_connector_sessions",
            "POS sessions held on this node.",
            sessions.clone(),
        );
        let dirs = ["pos_to_device", "device_to_pos"];
        RelayMetrics {
            devices,
            sessions,
            messages: resolved(
                r,
                "snapgate_connector_messages",
                "Messages relayed, by direction.",
                "direction",
                dirs,
            ),
            bytes: resolved(
                r,
                "snapgate_connector_bytes",
                "Payload bytes relayed, by direction.",
                "direction",
                dirs,
            ),
            tokens: resolved(
                r,
                "snapgate_connector_tokens",
                "Token endpoint answers, by result.",
                "result",
                ["issued", "refused"],
            ),
            drops: resolved(
                r,
                "snapgate_connector_drops",
                "Messages or connections the relay dropped, by reason.",
                "reason",
                DropReason::ALL.map(|(_, name)| name),
            ),
        }
    }

    pub fn devices_connected(&self, delta: i64) {
        self.devices.inc_by(delta);
    }
    pub fn sessions_active(&self, delta: i64) {
        self.sessions.inc_by(delta);
    }
    pub fn relayed(&self, to_device: bool, bytes: usize) {
        let i = usize::from(!to_device);
        self.messages[i].inc();
        self.bytes[i].inc_by(bytes as u64);
    }
    pub fn token(&self, issued: bool) {
        self.tokens[usize::from(!issued)].inc();
    }
    pub fn count_drop(&self, why: DropReason) {
        self.drops[why.index()].inc();
    }
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms_in_openmetrics() {
        let m = Metrics::default();
        m.registration("ok");
        m.registration("ok");
        m.registration("bad_ksn");
        m.transaction("Authorize", "ok");
        m.observe("RegisterTerminal", Duration::from_micros(700));
        m.observe("RegisterTerminal", Duration::from_millis(30));
        m.relay.count_drop(DropReason::TooBig);
        m.relay.sessions_active(1);
        let text = m.render_with(&[Scraped {
            name: "snapgate_store_flushes",
            help: "Flushes.",
            kind: ScrapedKind::Counter(7),
        }]);
        for line in [
            "# TYPE snapgate_registrations counter",
            "# HELP snapgate_registrations RegisterTerminal outcomes, by result and refusal reason.",
            "snapgate_registrations_total{result=\"ok\"} 2",
            "snapgate_registrations_total{result=\"bad_ksn\"} 1",
            "snapgate_transactions_total{operation=\"Authorize\",outcome=\"ok\"} 1",
            "snapgate_request_duration_seconds_bucket{le=\"0.001\",operation=\"RegisterTerminal\"} 1",
            "snapgate_request_duration_seconds_bucket{le=\"0.05\",operation=\"RegisterTerminal\"} 2",
            "snapgate_request_duration_seconds_bucket{le=\"+Inf\",operation=\"RegisterTerminal\"} 2",
            "snapgate_request_duration_seconds_count{operation=\"RegisterTerminal\"} 2",
            "snapgate_request_duration_seconds_sum{operation=\"RegisterTerminal\"} 0.0307",
            "snapgate_connector_drops_total{reason=\"too_big\"} 1",
            "snapgate_connector_drops_total{reason=\"no_pong\"} 0",
            "snapgate_connector_sessions 1",
            "snapgate_store_flushes_total 7",
            "# TYPE snapgate_pairings counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn the_per_operation_cache_counts_into_the_families_series() {
        let m = Metrics::default();
        // The same name at another address: another cache slot (or the family), one series.
        let copy: &'static str = Box::leak(String::from("Authorize").into_boxed_str());
        for op in ["Authorize", copy, "Authorize"] {
            m.observe(op, Duration::from_micros(300));
            m.transaction(op, "ok");
        }
        m.transaction("Authorize", "declined");
        m.observe("RegisterTerminal", Duration::from_micros(300));
        let text = m.render();
        for line in [
            "snapgate_transactions_total{operation=\"Authorize\",outcome=\"ok\"} 3",
            "snapgate_transactions_total{operation=\"Authorize\",outcome=\"declined\"} 1",
            "snapgate_request_duration_seconds_count{operation=\"Authorize\"} 3",
            "snapgate_request_duration_seconds_count{operation=\"RegisterTerminal\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Only a transaction gets a transactions series.
        assert!(
            !text.contains("operation=\"RegisterTerminal\",outcome"),
            "{text}"
        );
        // More names than slots: the rest go through the family, counted all the same.
        let names: Vec<&'static str> = (0..HOT_SLOTS * 2)
            .map(|i| &*Box::leak(format!("Op{i}").into_boxed_str()))
            .collect();
        for n in &names {
            m.observe(n, Duration::from_millis(2));
        }
        let text = m.render();
        for n in &names {
            let line = format!("snapgate_request_duration_seconds_count{{operation=\"{n}\"}} 1");
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
    }
}
