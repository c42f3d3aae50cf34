//! `/metrics` read by real parsers: the Prometheus project's Python client parses a scrape as
//! OpenMetrics (tests/metrics/scrape.py), and every metric name the operators' dashboard
//! (docs/grafana/snapgate.json) and alert rules (docs/alerts.yml) use must be one that scrape
//! declares. `promtool check rules` validates the alert rules and every dashboard query when
//! promtool is installed (Debian's `prometheus` package; the check skips, saying so, without it).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Scrape `url` with the Python client's OpenMetrics parser: (content type, families).
async fn scrape(url: String) -> (String, Vec<Value>) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python("prometheus_client"))
            .arg(repo("tests/metrics/scrape.py"))
            .arg(url)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ct = v["content_type"].as_str().unwrap().to_owned();
    (ct, v["families"].as_array().unwrap().clone())
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in the scrape"))
}

/// The value of the sample `name` whose labels include every pair of `labels`.
fn sample(families: &[Value], family_name: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    family(families, family_name)["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {family_name}"))["value"]
        .as_f64()
        .unwrap()
}

/// Every series name a scrape may carry: a counter family's `_total` (and `_created`), a
/// histogram's `_bucket`, `_sum` and `_count`, a gauge's own name.
fn exposed_names(families: &[Value]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for f in families {
        let n = f["name"].as_str().unwrap();
        let suffixes: &[&str] = match f["type"].as_str().unwrap() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{n}{s}")));
    }
    names
}

/// Every `snapgate_...` identifier in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("snapgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Every query string in a Grafana dashboard: the targets' `expr` and the variables' queries.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_scrape_parses_as_openmetrics_and_the_dashboard_and_alerts_use_only_its_names() {
    let srv = TestServer::start().await;
    let base = srv.start_admin().await;
    let tok = srv.register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1").await;
    srv.swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_ok();
    srv.swipe("Authorize", "bogus-token", &ksn(TDES_KSN_BASE, 3), "1.00")
        .await
        .assert_fault("InvalidTokenFault", 5005);

    let (content_type, families) = scrape(format!("{base}/metrics")).await;
    assert_eq!(content_type, snapgate::metrics::CONTENT_TYPE);

    // The counts this traffic made, read back through the parser.
    let total = "snapgate_registrations_total";
    assert_eq!(
        sample(
            &families,
            "snapgate_registrations",
            total,
            &[("result", "ok")]
        ),
        1.0
    );
    let tx = "snapgate_transactions_total";
    let ok = [("operation", "AuthorizeAndCapture"), ("outcome", "ok")];
    assert_eq!(sample(&families, "snapgate_transactions", tx, &ok), 1.0);
    let refused = [("operation", "Authorize"), ("outcome", "invalid_token")];
    assert_eq!(
        sample(&families, "snapgate_transactions", tx, &refused),
        1.0
    );
    let faults = [("kind", "invalid_token")];
    assert_eq!(
        sample(
            &families,
            "snapgate_faults",
            "snapgate_faults_total",
            &faults
        ),
        1.0
    );
    let h = "snapgate_request_duration_seconds";
    let reg = [("operation", "RegisterTerminal")];
    assert_eq!(sample(&families, h, &format!("{h}_count"), &reg), 1.0);
    let inf = [("operation", "RegisterTerminal"), ("le", "+Inf")];
    assert_eq!(sample(&families, h, &format!("{h}_bucket"), &inf), 1.0);
    assert!(sample(&families, h, &format!("{h}_sum"), &reg) > 0.0);
    assert_eq!(family(&families, h)["type"], "histogram");
    assert_eq!(
        sample(&families, "snapgate_store_up", "snapgate_store_up", &[]),
        1.0
    );
    // The registration and the sale each waited for a group-commit flush.
    let waiters = "snapgate_store_flush_waiters";
    assert!(sample(&families, waiters, &format!("{waiters}_total"), &[]) >= 2.0);
    let devices = "snapgate_connector_devices_connected";
    assert_eq!(family(&families, devices)["type"], "gauge");
    assert_eq!(sample(&families, devices, devices, &[]), 0.0);
    // Families not counted yet are declared all the same, so dashboards find them.
    assert_eq!(family(&families, "snapgate_pairings")["type"], "counter");

    let exposed = exposed_names(&families);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("docs/grafana/snapgate.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() > 20, "{queries:?}");
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metric_names_in(q)).collect();
    let unknown: Vec<_> = used.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses {unknown:?}, which snapgate does not expose"
    );
    // ... and it shows every family snapgate has.
    for f in &families {
        let n = f["name"].as_str().unwrap();
        assert!(
            used.iter().any(|u| u.starts_with(n)),
            "the dashboard shows nothing of {n}"
        );
    }
    let alerts = std::fs::read_to_string(repo("docs/alerts.yml")).unwrap();
    let in_alerts = metric_names_in(&alerts);
    assert!(in_alerts.len() > 5, "{in_alerts:?}");
    let unknown: Vec<_> = in_alerts.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "docs/alerts.yml uses {unknown:?}, which snapgate does not expose"
    );

    promtool_checks(&queries);
}

/// `promtool check rules` on docs/alerts.yml, and on a rule file made of every dashboard query
/// (Grafana's variables replaced by values), so each is valid PromQL.
fn promtool_checks(queries: &[String]) {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!(
            "SKIP promtool checks: promtool is not installed (Debian: apt-get install prometheus)"
        );
        return;
    }
    let check = |path: &Path| {
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check rules {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&repo("docs/alerts.yml"));
    let rules: Vec<Value> = queries
        .iter()
        .filter(|q| !q.starts_with("label_values("))
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            serde_json::json!({ "record": format!("snapgate_dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempfile::tempdir().unwrap();
    // YAML is a superset of JSON: promtool reads this as a rule file.
    let path = dir.path().join("dashboard.yml");
    std::fs::write(&path, file.to_string()).unwrap();
    check(&path);
}
