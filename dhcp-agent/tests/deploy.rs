//! What ships in `deploy/`: the alerting rules pass promtool's checks and their unit tests, every
//! alert is documented with a runbook and tested both ways, and the dashboard only queries
//! metrics the agent exports. (The end-to-end test in `metrics.rs` loads both into a real
//! Prometheus.) The systemd unit passes `systemd-analyze verify` and its security review, grants
//! exactly the capabilities the agent checks for, and the default configuration is the safe one
//! the README describes. (`cargo xtask dist` installs both from the Debian package and runs the
//! installed agent as the unit would.)
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

const UNIT: &str = "deploy/systemd/dhcp-agent.service";

/// The values of `key=` lines in the unit (each line's words).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

/// `systemd-analyze verify` checks that ExecStart= is there and executable: the unit is
/// verified in a private mount namespace whose /usr (an overlay, gone with it) holds the agent
/// under test at /usr/bin/dhcp-agent. Then its exposure must stay in systemd's "OK" band.
#[test]
fn the_unit_passes_systemd_analyze_verify_and_its_security_review() {
    let unit = repo().join(UNIT);
    let scratch = std::env::temp_dir().join(format!("dhcp-agent-unit-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let script = r#"
        set -eu
        mount -t tmpfs unit-check "$1"
        mkdir "$1/usr" "$1/work"
        mount -t overlay overlay -o "lowerdir=/usr,upperdir=$1/usr,workdir=$1/work" /usr
        cp "$2" /usr/bin/dhcp-agent
        systemd-analyze verify --man=no "$3"
    "#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&scratch)
        .arg(env!("CARGO_BIN_EXE_dhcp-agent"))
        .arg(&unit)
        .output()
        .expect("unshare (util-linux) and systemd-analyze (systemd)");
    std::fs::remove_dir(&scratch).unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Exposure 2.0 of 10 or less ("OK"); --threshold counts tenths.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        report.lines().last().unwrap_or("")
    );
}

/// The unit grants what `check_privileges` asks for, nothing else, and starts the agent as the
/// package installs it.
#[test]
fn the_unit_grants_exactly_the_capabilities_the_agent_needs() {
    let unit = read(UNIT);
    let mut needed: Vec<String> = dhcp_agent::system::START_UP
        .iter()
        .map(|n| n.capability.to_string())
        .collect();
    needed.sort();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let mut granted = unit_values(&unit, key);
        granted.sort();
        assert_eq!(granted, needed, "{key}");
    }
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(
        unit_values(&unit, "ExecStart"),
        [
            "/usr/bin/dhcp-agent",
            "run",
            "--config",
            "/etc/dhcp-agent/config.toml"
        ]
    );
    // The state file of the default configuration is where StateDirectory= lets it write.
    assert_eq!(unit_values(&unit, "StateDirectory"), ["dhcp-agent"]);
    // bpf() is outside @system-service and must be named; raw sockets are never needed.
    assert!(unit_values(&unit, "SystemCallFilter").contains(&"bpf".to_owned()));
    let families = unit_values(&unit, "RestrictAddressFamilies");
    assert!(!families.iter().any(|f| f == "AF_PACKET"), "{families:?}");
}

/// The default configuration of the package: the paths of a CloudStack router, metrics on
/// loopback, repairs reported as a dry run only, the state where the unit lets it write.
#[test]
fn the_default_configuration_observes_and_only_reports() {
    use clap::{CommandFactory as _, FromArgMatches as _};
    use dhcp_agent::cli::{Cli, Command as Sub};
    let config: dhcp_agent::config::RunConfig =
        toml::from_str(&read("deploy/config.toml")).expect("valid, known keys only");
    let matches = Cli::command()
        .try_get_matches_from(["dhcp-agent", "run"])
        .unwrap();
    let Sub::Run(mut args) = Cli::from_arg_matches(&matches).unwrap().command else {
        unreachable!()
    };
    dhcp_agent::config::apply(config, &mut args, matches.subcommand().unwrap().1).unwrap();
    assert!(
        args.metrics_addr.ip().is_loopback(),
        "{}",
        args.metrics_addr
    );
    assert!(args.remediate && args.dry_run, "repairs only reported");
    assert_eq!(args.leases, PathBuf::from("/var/lib/misc/dnsmasq.leases"));
    assert_eq!(args.dnsmasq_conf, Some(PathBuf::from("/etc/dnsmasq.conf")));
    assert!(
        args.state_file.starts_with("/var/lib/dhcp-agent"),
        "{}",
        args.state_file.display()
    );
    assert!(args.pcap.pcap.is_none(), "no capture files by default");
}
