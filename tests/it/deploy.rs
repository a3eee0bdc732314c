//! What ships beside the binary stays true to it: the Grafana dashboard and the alert rules
//! under `deploy/` name only metrics cratedock exports.

use std::path::Path;

fn exported() -> Vec<String> {
    let metrics = cratedock::metrics::Metrics::new();
    let mut names = Vec::new();
    for n in metrics.names() {
        for suffix in ["", "_bucket", "_sum", "_count"] {
            names.push(format!("{n}{suffix}"));
        }
    }
    names
}

/// Every `cratedock_...` identifier in `text`.
fn named_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("cratedock_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn deploy(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(path),
    )
    .unwrap()
}

#[test]
fn the_dashboard_queries_only_metrics_cratedock_exports() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/cratedock.json")).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    for e in &exprs {
        for name in named_in(e) {
            assert!(
                exported.contains(&name),
                "{name} (in `{e}`) is not exported"
            );
        }
    }
}

#[test]
fn the_alert_rules_name_only_metrics_cratedock_exports() {
    let exported = exported();
    let rules = deploy("prometheus/alerts.yml");
    let named = named_in(&rules);
    assert!(named.len() >= 6);
    for name in named {
        assert!(exported.contains(&name), "{name} is not exported");
    }
    for alert in ["checksum", "certificate", "disk", "upstream", "auth"] {
        assert!(
            rules.to_lowercase().contains(alert),
            "an alert about {alert}"
        );
    }
}
