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
