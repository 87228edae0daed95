//! What ships in `deploy/`: the alerting rules pass promtool's checks and their unit tests, every
//! alert is documented with a runbook and tested both ways, and the dashboard only queries
//! metrics the agent exports. (The end-to-end test in `metrics.rs` loads both into a real
//! Prometheus.)
use std::{collections::BTreeSet, path::PathBuf, process::Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// Metric names in the README's metrics table.
fn documented_metrics() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme
        .split("### Metrics\n")
        .nth(1)
        .expect("Metrics section");
    let section = section.split("\n### ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
}

#[test]
fn every_alert_has_a_runbook_and_tests_that_it_fires_and_that_it_stays_quiet() {
    let rules = read("deploy/prometheus/alerts.yml");
    let tests = read("deploy/prometheus/alerts_test.yml");
    let readme = read("README.md");
    let names = alert_names(&rules);
    assert!(names.len() >= 6, "{names:?}");
    for key in ["summary:", "description:", "runbook_url:"] {
        let count = rules.lines().filter(|l| l.trim().starts_with(key)).count();
        assert_eq!(count, names.len(), "every alert has a {key}");
    }
    for name in &names {
        let anchor = format!("README.md#{}", name.to_lowercase());
        assert!(rules.contains(&anchor), "{name}: runbook_url to {anchor}");
        assert!(
            readme.contains(&format!("\n#### {name}\n")),
            "{name}: a runbook section in the README"
        );
        let quiet = format!("alertname: {name}\n    exp_alerts: []");
        let fires = format!("alertname: {name}\n    exp_alerts:\n");
        assert!(
            tests.contains(&quiet),
            "{name}: a test where it stays quiet"
        );
        assert!(tests.contains(&fires), "{name}: a test where it fires");
    }
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboard.json")).expect("valid JSON");
    let documented = documented_metrics();
    let mut queried = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(panel["title"].is_string() && panel["description"].is_string());
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("dhcp_") {
                    let base = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    queried.insert(base.to_owned());
                }
            }
        }
    }
    let unknown: Vec<&String> = queried.difference(&documented).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    let unused: Vec<&String> = documented.difference(&queried).collect();
    assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
}
