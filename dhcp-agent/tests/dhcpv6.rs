//! `dhcp-agent run` against real dnsmasq 2.90 serving DHCPv6, with a real client (`dhclient -6`)
//! and `dhcp_release6`, as Neutron releases the addresses of deleted ports: every RELEASE gets
//! the outcome the server really gave it, counted once however often it was sent, and a
//! dropped one is repaired with the server's own DUID.
mod common;

use std::time::Duration;

use common::{AGENT, Agent, s, sample, scrape_in, start_run, wait_metric, wait_metric_in};
use dhcp_lab::v6::{ROUTER_IFACE, V6Lab};
use dhcp_wire::hex_colon;
use serde_json::Value;

fn is_v6_release(r: &Value) -> bool {
    s(r, "event") == "release" && s(r, "protocol") == "dhcpv6"
}

fn v6_releases(agent: &Agent) -> Vec<Value> {
    agent.records().into_iter().filter(is_v6_release).collect()
}

#[test]
fn the_clients_own_release_is_honored_by_the_servers_reply() {
    let lab = V6Lab::start().expect("lab");
    let agent = start_run(&lab, &[]);
    let lease = lab.lease().expect("lease");
    lab.client_release().expect("dhclient -6 -r");
    let record = agent.wait_record("v6 release", is_v6_release);
    assert_eq!(s(&record, "outcome"), "honored", "{record}");
    assert_eq!(s(&record, "ip"), lease.ip.to_string());
    assert_eq!(s(&record, "client_id"), hex_colon(&lease.duid));
    assert_eq!(record["iaid"], lease.iaid);
    assert_eq!(s(&record, "settled_by"), "reply", "{record}");
    assert_eq!(s(&record, "origin"), "guest");
    wait_metric(
        &lab.router,
        "dhcp_releases_total",
        &[("outcome", "honored"), ("protocol", "dhcpv6")],
        1.0,
    );
    assert!(!lab.lease_file_has(lease.ip));
    agent.stop();
}

/// Neutron's `dhcp_release6` with another router's DUID: dnsmasq answers nothing to its
/// RELEASEs and keeps the binding. One dropped release, repaired with dnsmasq's own DUID,
/// verified in the lease file. dnsmasq answers the repair at the router's link-local address,
/// port 546, where `dhcp_release6` (still retrying, bound to [::]:546) reads that REPLY as
/// its own and exits 0: it sends two to five copies, not always five.
#[test]
fn dhcp_release6_with_a_wrong_server_id_is_flagged_and_repaired() {
    let lab = V6Lab::start().expect("lab");
    let agent = start_run(&lab, &["--remediate"]);
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().expect("server DUID");
    let wrong = [0, 3, 0, 1, 0x52, 0x54, 0, 0x99, 0x99, 0x99];
    lab.dhcp_release6(&lease, &wrong).expect("dhcp_release6");
    let record = agent.wait_record("dropped v6 release", |r| {
        is_v6_release(r) && s(r, "outcome") == "dropped"
    });
    assert_eq!(s(&record, "cause"), "server_id_mismatch", "{record}");
    assert_eq!(s(&record, "expected_server_id"), hex_colon(&server));
    assert_eq!(s(&record, "received_server_id"), hex_colon(&wrong));
    assert_eq!(
        s(&record, "origin"),
        "router",
        "dhcp_release6 on the router"
    );
    let repair = agent.wait_record("v6 remediation", |r| {
        s(r, "event") == "remediation" && s(r, "protocol") == "dhcpv6"
    });
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert_eq!(s(&repair, "server_id"), hex_colon(&server));
    assert!(!lab.lease_file_has(lease.ip), "the binding is gone");
    // dhcp_release6 has finished its sends: one release, the rest copies.
    wait_metric_in(
        &lab.router,
        "dhcp_release_retransmissions_total",
        &[("protocol", "dhcpv6")],
        1.0..=4.0,
    );
    wait_metric(
        &lab.router,
        "dhcp_releases_dropped_total",
        &[("cause", "server_id_mismatch"), ("protocol", "dhcpv6")],
        1.0,
    );
    wait_metric(
        &lab.router,
        "dhcp_remediations_total",
        &[("result", "remediated"), ("protocol", "dhcpv6")],
        1.0,
    );
    assert_eq!(v6_releases(&agent).len(), 1, "{:?}", agent.lines());
    agent.stop();
}

/// The right DUID: dnsmasq answers after about half a second, when dhcp_release6 has already
/// looked for an answer, so it sends twice; the second is answered NoBinding. One release,
/// honored, one retransmission. `analyze` of the agent's own capture says the same.
#[test]
fn dhcp_release6_with_the_right_server_id_is_honored_and_counted_once() {
    let lab = V6Lab::start().expect("lab");
    let pcap = lab.dir.join("capture.pcapng");
    let agent = start_run(&lab, &["--pcap", pcap.to_str().unwrap()]);
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().expect("server DUID");
    let out = lab.dhcp_release6(&lease, &server).expect("dhcp_release6");
    assert!(out.status.success(), "{out:?}");
    let record = agent.wait_record("v6 release", is_v6_release);
    assert_eq!(s(&record, "outcome"), "honored", "{record}");
    assert_eq!(s(&record, "origin"), "router");
    wait_metric(
        &lab.router,
        "dhcp_release_retransmissions_total",
        &[("protocol", "dhcpv6")],
        1.0,
    );
    std::thread::sleep(Duration::from_secs(3)); // past the grace of any second record
    let releases = v6_releases(&agent);
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(
        sample(
            &scrape_in(&lab.router),
            "dhcp_releases_total",
            &[("outcome", "no_lease"), ("protocol", "dhcpv6")]
        ),
        Some(0.0),
        "the NoBinding answer to the copy is no verdict"
    );
    agent.stop();
    let out = std::process::Command::new(AGENT)
        .args(["analyze", "--json", "--pcap"])
        .arg(&pcap)
        .output()
        .expect("dhcp-agent analyze");
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let rows = report["releases"].as_array().expect("releases");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(s(&rows[0], "ip"), lease.ip.to_string());
    assert_eq!(
        (s(&rows[0], "outcome"), s(&rows[0], "evidence")),
        ("honored", "reply"),
        "{rows:?}"
    );
}

/// `dhcp-agent release --v6` takes dhcp_release6's arguments, but the server's DUID from the
/// lease file: a wrong `--server-id` is reported, not used, and the binding leaves the file.
#[test]
fn release_v6_uses_the_servers_own_duid() {
    let lab = V6Lab::start().expect("lab");
    let lease = lab.lease().expect("lease");
    let out = lab
        .router
        .command(AGENT)
        .args(["release", "--v6", "--iface", ROUTER_IFACE, "--ip"])
        .arg(lease.ip.to_string())
        .arg("--client-id")
        .arg(hex_colon(&lease.duid))
        .arg("--iaid")
        .arg(lease.iaid.to_string())
        .args(["--server-id", "00:03:00:01:52:54:00:99:99:99", "--leases"])
        .arg(lab.lease_file())
        .output()
        .expect("dhcp-agent release --v6");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("is not the server's DUID"), "{stderr}");
    assert!(stdout.contains("released"), "{stdout}");
    assert!(!lab.lease_file_has(lease.ip));
}
