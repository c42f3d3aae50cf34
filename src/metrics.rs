//! Counters and latency histograms, written in the Prometheus text format for `/metrics`.
//! Label values come from fixed sets (operations, fault kinds, reasons), never from requests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A counter series: metric name and up to two label values, all static, so counting a request
/// allocates nothing.
type Series = (&'static str, &'static str, &'static str);

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Series, u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// The Cloud Connector's gauges and counters (shared with its connection tasks).
    pub relay: std::sync::Arc<RelayMetrics>,
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
}

/// Lock-free relay counters: the relay counts every message.
#[derive(Default)]
pub struct RelayMetrics {
    devices: std::sync::atomic::AtomicI64,
    sessions: std::sync::atomic::AtomicI64,
    /// [POS to device, device to POS]
    messages: [std::sync::atomic::AtomicU64; 2],
    bytes: [std::sync::atomic::AtomicU64; 2],
    drops: [std::sync::atomic::AtomicU64; 8],
    /// Token endpoint answers: [issued, refused].
    tokens: [std::sync::atomic::AtomicU64; 2],
}

impl RelayMetrics {
    pub fn devices_connected(&self, delta: i64) {
        self.devices
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn sessions_active(&self, delta: i64) {
        self.sessions
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn relayed(&self, to_device: bool, bytes: usize) {
        let i = usize::from(!to_device);
        self.messages[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn token(&self, issued: bool) {
        self.tokens[usize::from(!issued)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn count_drop(&self, why: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|(d, _)| *d == why)
            .unwrap_or(0);
        self.drops[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn dropped(&self, why: DropReason) -> u64 {
        let i = DropReason::ALL
            .iter()
            .position(|(d, _)| *d == why)
            .unwrap_or(0);
        self.drops[i].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let gauges = [
            (
                "snapgate_connector_devices_connected",
                "Devices connected to this node.",
                &self.devices,
            ),
            (
                "snapgate_connector_sessions",
                "POS sessions held on this node.",
                &self.sessions,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        }
        let dirs = ["pos_to_device", "device_to_pos"];
        for (name, help, v) in [
            (
                "snapgate_connector_messages_total",
                "Messages relayed, by direction.",
                &self.messages,
            ),
            (
                "snapgate_connector_bytes_total",
                "Payload bytes relayed, by direction.",
                &self.bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (d, c) in dirs.iter().zip(v.iter()) {
                let _ = writeln!(out, "{name}{{direction=\"{d}\"}} {}", c.load(Relaxed));
            }
        }
        let name = "snapgate_connector_tokens_total";
        let _ = writeln!(
            out,
            "# HELP {name} Token endpoint answers, by result.\n# TYPE {name} counter"
        );
        for (r, c) in ["issued", "refused"].iter().zip(self.tokens.iter()) {
            let _ = writeln!(out, "{name}{{result=\"{r}\"}} {}", c.load(Relaxed));
        }
        let name = "snapgate_connector_drops_total";
        let _ = writeln!(out, "# HELP {name} Messages or connections the relay dropped, by reason.\n# TYPE {name} counter");
        for ((_, reason), c) in DropReason::ALL.iter().zip(self.drops.iter()) {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", c.load(Relaxed));
        }
    }
}

/// Each counter: name, help, label names (as many as the series uses).
const COUNTERS: &[(&str, &str, &[&str])] = &[
    (
        "snapgate_registrations_total",
        "RegisterTerminal outcomes, by result and refusal reason.",
        &["result"],
    ),
    (
        "snapgate_transactions_total",
        "TPS operations, by operation and outcome.",
        &["operation", "outcome"],
    ),
    (
        "snapgate_tokens_renewed_total",
        "Responses that carried a renewed TerminalAccessToken.",
        &[],
    ),
    (
        "snapgate_faults_total",
        "SOAP faults sent, by fault kind.",
        &["kind"],
    ),
    (
        "snapgate_pairing_codes_total",
        "Pairing setup codes made, by who asked (operator or terminal).",
        &["source"],
    ),
    (
        "snapgate_pairings_total",
        "Pairing exchanges and renewals, by operation and result (ok or the error code).",
        &["operation", "result"],
    ),
    (
        "snapgate_pairing_certs_revoked_total",
        "Client certificates put on the deny list, by reason (repaired, renewed, revoked).",
        &["reason"],
    ),
];

impl Metrics {
    fn add(&self, series: Series) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry(series).or_insert(0) += 1;
    }

    pub fn registration(&self, result: &'static str) {
        self.add(("snapgate_registrations_total", result, ""));
    }

    pub fn transaction(&self, operation: &'static str, outcome: &'static str) {
        self.add(("snapgate_transactions_total", operation, outcome));
    }

    pub fn token_renewed(&self) {
        self.add(("snapgate_tokens_renewed_total", "", ""));
    }

    pub fn fault(&self, kind: &'static str) {
        self.add(("snapgate_faults_total", kind, ""));
    }

    pub fn pairing_code(&self, source: &'static str) {
        self.add(("snapgate_pairing_codes_total", source, ""));
    }

    pub fn pairing(&self, operation: &'static str, result: &'static str) {
        self.add(("snapgate_pairings_total", operation, result));
    }

    pub fn pairing_cert_revoked(&self, reason: &'static str) {
        self.add(("snapgate_pairing_certs_revoked_total", reason, ""));
    }

    pub fn observe(&self, operation: &'static str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = l.entry(operation).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help, label_names) in COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, a, b), v) in counters.iter().filter(|((n, _, _), _)| n == name) {
                let labels: Vec<String> = label_names
                    .iter()
                    .zip([a, b])
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                if labels.is_empty() {
                    let _ = writeln!(out, "{n} {v}");
                } else {
                    let _ = writeln!(out, "{n}{{{}}} {v}", labels.join(","));
                }
            }
        }
        let name = "snapgate_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a SOAP request, by operation.\n# TYPE {name} histogram"
        );
        let latency = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (op, h) in &latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{operation=\"{op}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{operation=\"{op}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{operation=\"{op}\"}} {}", h.count);
        }
        self.relay.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.registration("ok");
        m.registration("ok");
        m.registration("bad_ksn");
        m.observe("RegisterTerminal", Duration::from_micros(700));
        m.observe("RegisterTerminal", Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains("snapgate_registrations_total{result=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("snapgate_registrations_total{result=\"bad_ksn\"} 1"));
        assert!(text.contains(
            "snapgate_request_duration_seconds_bucket{operation=\"RegisterTerminal\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "snapgate_request_duration_seconds_bucket{operation=\"RegisterTerminal\",le=\"0.05\"} 2"
        ));
        assert!(text
            .contains("snapgate_request_duration_seconds_count{operation=\"RegisterTerminal\"} 2"));
    }
}
