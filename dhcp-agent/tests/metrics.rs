//! The metrics endpoint of `dhcp-agent run` in the redundant-VR lab: what a scrape shows after
//! real traffic, that it passes `promtool check metrics`, and a real Prometheus server scraping
//! it and evaluating the shipped alerting rules.
mod common;

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use common::{from_vm, s, start_run, wait_samples};
use dhcp_lab::{
    IGNORED_MAC, Lab, LabConfig, VIP_ADDR, VM_IFACE,
    frames::{Dhcpv4Spec, send_frames},
    prometheus::{Prometheus, http_get},
    wait_for,
};
use dhcproto::v4::MessageType;

const HEALTHZ_URL: &str = "http://127.0.0.1:9967/healthz";
const SUBNET: &str = "172.29.101.0/24";

#[test]
fn a_scrape_shows_the_labs_traffic_and_passes_promtool() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    // A 5 s --discover-timeout (the default is 30 s): dnsmasq pings an address before offering
    // it, which here takes about 3 s.
    let agent = start_run(&lab, &["--discover-timeout", "5s"]);
    wait_for(Duration::from_secs(5), || {
        http_get(lab.router.name(), HEALTHZ_URL, &[]).is_ok_and(|(status, _)| status == 200)
    })
    .expect("healthz turns 200 once attached and loaded");

    let ip = lab.vm.boot().expect("lease");
    // A client the server ignores: its DISCOVER goes unanswered.
    let ignored = Dhcpv4Spec::new(MessageType::Discover, 0x5eed_0001, IGNORED_MAC);
    // A REQUEST for an address outside the range, to this server: dnsmasq NAKs it.
    let stranger = [0x02, 0xdc, 0, 0, 0x77, 0x77];
    let mut wrong = Dhcpv4Spec::new(MessageType::Request, 0x5eed_0002, stranger);
    wrong.requested_ip = Some(Ipv4Addr::new(172, 29, 101, 50));
    wrong.server_id = Some(VIP_ADDR);
    send_frames(
        &lab.vm.ns,
        VM_IFACE,
        &[from_vm(&ignored, IGNORED_MAC), from_vm(&wrong, stranger)],
    )
    .expect("send");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    agent.wait_record("dropped release", |r| s(r, "outcome") == "dropped");

    let v4 = |direction, message_type| {
        [
            ("interface", "guest0"),
            ("direction", direction),
            ("protocol", "dhcpv4"),
            ("message_type", message_type),
        ]
    };
    let pool = [("interface", "guest0"), ("subnet", SUBNET)];
    let (discover, offer, ack) = (v4("in", "discover"), v4("out", "offer"), v4("out", "ack"));
    let nak = v4("out", "nak");
    let release_on_lo = [
        ("interface", "lo"),
        ("direction", "in"),
        ("message_type", "release"),
    ];
    let vip = VIP_ADDR.to_string();
    let server_id = [
        ("interface", "guest0"),
        ("subnet", SUBNET),
        ("server_id", vip.as_str()),
        ("source", "observed"),
    ];
    let guest = [("interface", "guest0")];
    let boot = [("exchange", "discover_ack")];
    let boot_10s = [("exchange", "discover_ack"), ("le", "10")];
    let mismatch = [("cause", "server_id_mismatch")];
    let remediated = [("result", "remediated")];
    let (ingress, egress) = ([("hook", "tc_ingress")], [("hook", "tc_egress")]);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    let text = wait_samples(
        &lab,
        &[
            // dhclient may retransmit: at least its own and the ignored client's DISCOVER.
            ("dhcp_packets_total", &discover, 2.0..=f64::MAX),
            ("dhcp_packets_total", &offer, 1.0..=f64::MAX),
            ("dhcp_packets_total", &ack, 1.0..=1.0),
            ("dhcp_packets_total", &nak, 1.0..=1.0),
            ("dhcp_packets_total", &release_on_lo, 1.0..=1.0),
            ("dhcp_naks_total", &[("interface", "guest0")], 1.0..=1.0),
            ("dhcp_discover_unanswered_total", &guest, 1.0..=1.0),
            ("dhcp_transaction_duration_seconds_count", &boot, 1.0..=1.0),
            ("dhcp_releases_total", &[("outcome", "dropped")], 1.0..=1.0),
            ("dhcp_releases_total", &[("outcome", "honored")], 0.0..=0.0),
            ("dhcp_releases_dropped_total", &mismatch, 1.0..=1.0),
            ("dhcp_releases_dropped_unresolved", &[], 1.0..=1.0),
            ("dhcp_releases_pending", &[], 0.0..=0.0),
            ("dhcp_remediations_total", &remediated, 0.0..=0.0),
            ("dhcp_leases", &pool, 1.0..=1.0),
            ("dhcp_pool_size", &pool, 101.0..=101.0),
            ("dhcp_server_id_info", &server_id, 1.0..=1.0),
            ("dhcp_capture_lost_events_total", &ingress, 0.0..=0.0),
            // The guest's frames on XDP, the server's replies on TC egress.
            ("dhcp_capture_events_total", &ingress, 3.0..=f64::MAX),
            ("dhcp_capture_events_total", &egress, 3.0..=f64::MAX),
            (
                "dhcp_lease_file_reloads_total",
                &[("result", "ok")],
                2.0..=f64::MAX,
            ),
            ("dhcp_agent_build_info", &version, 1.0..=1.0),
            // The boot took well under the histogram's last finite bucket.
            (
                "dhcp_transaction_duration_seconds_bucket",
                &boot_10s,
                1.0..=1.0,
            ),
        ],
    );

    // promtool, Prometheus' own linter, on the real scrape.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {complaints}"
    );
    agent.stop();
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Waits until `what` holds of Prometheus' answers; fails with the last answer and its log.
fn wait_prometheus(prometheus: &Prometheus, what: &str, mut ready: impl FnMut() -> bool) {
    if wait_for(Duration::from_secs(30), &mut ready).is_err() {
        panic!(
            "prometheus: {what} did not happen; alerts {:?}\nlog:\n{}",
            prometheus.alerts(),
            prometheus.log()
        );
    }
}

#[test]
fn prometheus_sees_the_dropped_release_alerts_and_sees_the_repair() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let rules = repo_file("deploy/prometheus/alerts.yml");
    let prometheus = Prometheus::start(&lab.router, &lab.dir, 9090, "127.0.0.1:9967", &[&rules])
        .expect("prometheus");
    // Observe only, first.
    let observer = start_run(&lab, &[]);
    wait_prometheus(&prometheus, "agent scraped", || {
        prometheus.value("up{job=\"dhcp-agent\"}").ok().flatten() == Some(1.0)
    });
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    observer.wait_record("dropped release", |r| s(r, "outcome") == "dropped");
    wait_prometheus(&prometheus, "the dropped release in the query API", || {
        prometheus
            .value("dhcp_releases_dropped_total{cause=\"server_id_mismatch\"}")
            .ok()
            .flatten()
            == Some(1.0)
            && prometheus
                .value("dhcp_releases_total{outcome=\"dropped\"}")
                .ok()
                .flatten()
                == Some(1.0)
    });
    let active = |name: &str| {
        prometheus
            .alerts()
            .unwrap_or_default()
            .iter()
            .any(|(alert, state)| alert == name && (state == "pending" || state == "firing"))
    };
    wait_prometheus(&prometheus, "the unresolved-release alert pending", || {
        active("DhcpReleaseDroppedUnresolved")
    });
    // Every shipped rule loaded and evaluates without error against the real series.
    let rules = prometheus.rules().expect("rules");
    let loaded: Vec<&serde_json::Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 15, "{rules}");
    for rule in loaded {
        assert_ne!(rule["health"], "err", "{rule}");
    }
    check_dashboard_queries(&prometheus);
    observer.stop();

    // The same agent with --remediate resumes the dropped release from its state file and
    // repairs it.
    let repairer = start_run(&lab, &["--remediate"]);
    assert!(
        repairer
            .stderr_text()
            .contains("resuming 1 dropped releases"),
        "{}",
        repairer.stderr_text()
    );
    let repair = repairer.wait_record("repair", |r| s(r, "event") == "remediation");
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert!(!lab.dnsmasq_holds(ip));
    wait_prometheus(&prometheus, "the repair in the query API", || {
        prometheus
            .value("dhcp_remediations_total{result=\"remediated\"}")
            .ok()
            .flatten()
            == Some(1.0)
            && prometheus
                .value("dhcp_releases_dropped_unresolved")
                .ok()
                .flatten()
                == Some(0.0)
    });
    wait_prometheus(&prometheus, "the alert resolved", || {
        !active("DhcpReleaseDroppedUnresolved")
    });
    repairer.stop();
}

/// Runs every query of the shipped Grafana dashboard (its variables set to "all") against the
/// real Prometheus: each must be valid PromQL, and each must find series, but for the counters
/// of events that did not happen in this lab (nothing malformed, NAKed or unanswered).
fn check_dashboard_queries(prometheus: &Prometheus) {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let may_be_empty = [
        "dhcp_malformed_packets_total",
        "dhcp_naks_total",
        "dhcp_discover_unanswered_total",
    ];
    let panels = dashboard["panels"].as_array().unwrap();
    let targets = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten());
    let mut checked = 0;
    for target in targets {
        let expr = target["expr"]
            .as_str()
            .unwrap()
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$interface", ".*");
        let result = prometheus
            .query(&expr)
            .unwrap_or_else(|e| panic!("dashboard query {expr}: {e:#}"));
        assert!(
            !result.is_empty() || may_be_empty.iter().any(|m| expr.contains(m)),
            "dashboard query finds nothing: {expr}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} queries");
}
