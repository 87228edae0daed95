//! `dhcp-agent run` against real dnsmasq in the redundant-VR lab: every RELEASE gets the
//! outcome the server really gave it.
mod common;

use std::net::Ipv4Addr;

use common::{Agent, s, start_run, wait_samples};
use dhcp_lab::{Lab, LabConfig, PRIMARY_ADDR, ROUTER_IFACE, VIP_ADDR};

fn start(lab: &Lab) -> Agent {
    start_run(lab, &[])
}

#[test]
fn remediates_the_dropped_release_and_verifies_it() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &["--remediate"]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    agent.wait_record("dropped release", |r| s(r, "outcome") == "dropped");
    let repair = agent.wait_record("remediation", |r| s(r, "event") == "remediation");
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert_eq!(s(&repair, "server_id"), VIP_ADDR.to_string());
    assert_eq!(s(&repair, "ip"), ip.to_string());
    assert!(!lab.dnsmasq_holds(ip), "dnsmasq no longer holds it");
    dhcp_lab::wait_for(std::time::Duration::from_secs(3), || {
        !lab.lease_file_has(ip)
    })
    .expect("gone from the file");
    // The repair's own RELEASE is seen too, recognised by its xid: neither judged nor counted
    // as a client's (before, a repair the server ignored was judged dropped and repaired
    // again, in a loop).
    wait_samples(
        &lab,
        &[("dhcp_agent_own_packets_total", &[], 1.0..=f64::MAX)],
    );
    let count = |event: &str| {
        agent
            .records()
            .iter()
            .filter(|r| s(r, "event") == event)
            .count()
    };
    assert_eq!((count("remediation"), count("release")), (1, 1));
    agent.stop();
}

#[test]
fn dry_run_reports_and_sends_nothing() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &["--remediate", "--dry-run"]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    let repair = agent.wait_record("remediation", |r| s(r, "event") == "remediation");
    assert_eq!(s(&repair, "result"), "dry_run", "{repair}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        lab.dnsmasq_holds(ip) && lab.lease_file_has(ip),
        "a dry run changes nothing"
    );
    agent.stop();
}

#[test]
fn flags_the_redundant_vr_dhcp_release_as_dropped_for_server_id_mismatch() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start(&lab);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    let event = agent.wait_record("dropped release", |r| s(r, "outcome") == "dropped");
    assert_eq!(s(&event, "cause"), "server_id_mismatch", "{event}");
    assert_eq!(s(&event, "expected_server_id"), VIP_ADDR.to_string());
    assert_eq!(s(&event, "received_server_id"), PRIMARY_ADDR.to_string());
    assert_eq!(s(&event, "ip"), ip.to_string());
    assert_eq!(s(&event, "mac"), lab.vm.mac);
    assert_eq!(s(&event, "interface"), "lo");
    assert_eq!(event["flagged"], true);
    assert!(lab.lease_file_has(ip), "dnsmasq really kept the lease");

    // `dhcp-agent leases` shows it from the file, the daemon's state and the server's memory.
    let out = lab
        .router
        .command(common::AGENT)
        .args([
            "leases",
            "--json",
            "--probe-memory",
            "--leases",
            lab.lease_file().to_str().unwrap(),
        ])
        .args(["--state-file", lab.dir.join("state.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s(&row, "ip"), s(&row, "state"), s(&row, "cause")),
        (
            ip.to_string().as_str(),
            "release_dropped",
            "server_id_mismatch"
        ),
        "{row}"
    );
    assert_eq!(row["in_server_memory"], true);
    agent.stop();
}

#[test]
fn a_clients_own_release_is_honored_and_a_release_without_lease_is_no_lease() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start(&lab);
    let ip = lab.vm.boot().expect("lease");
    lab.vm.release().expect("dhclient -r");
    let honored = agent.wait_record("honored release", |r| s(r, "ip") == ip.to_string());
    assert_eq!(s(&honored, "outcome"), "honored", "{honored}");
    assert_eq!(honored["flagged"], false);
    assert_eq!(s(&honored, "interface"), ROUTER_IFACE);

    let unleased = Ipv4Addr::new(172, 29, 101, 199);
    lab.dhcp_release(unleased, "52:54:00:99:99:99")
        .expect("dhcp_release");
    let none = agent.wait_record("no_lease release", |r| s(r, "ip") == unleased.to_string());
    assert_eq!(s(&none, "outcome"), "no_lease", "{none}");
    // Nothing was flagged in this whole run.
    assert!(
        agent
            .records()
            .iter()
            .filter(|r| s(r, "event") == "release")
            .all(|r| r["flagged"] == false),
        "{:?}",
        agent.lines()
    );
    agent.stop();
}

/// Orchestration that "cleans up" after dhcp_release by deleting the line from the lease file:
/// the file says released, dnsmasq's memory still holds the lease.
#[test]
fn a_hand_edited_lease_file_is_a_divergence_and_is_repaired() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &["--probe-memory", "--remediate"]);
    let ip = lab.vm.boot().expect("lease");
    // Let the agent read the lease into its table first, so that the edit below makes the file
    // say "released" (the case a file-only observer gets wrong).
    std::thread::sleep(std::time::Duration::from_millis(500));
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    lab.hand_edit_lease_file(ip, &[]).unwrap();
    assert!(lab.dnsmasq_holds(ip), "dnsmasq still holds it in memory");

    let divergence = agent.wait_record("divergence", |r| s(r, "event") == "divergence");
    assert_eq!(s(&divergence, "ip"), ip.to_string());
    let dropped = agent.wait_record("dropped release", |r| s(r, "outcome") == "dropped");
    assert_eq!(s(&dropped, "cause"), "server_id_mismatch", "{dropped}");
    let repair = agent.wait_record("remediation", |r| s(r, "event") == "remediation");
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert!(!lab.dnsmasq_holds(ip));
    agent.stop();
}

/// The periodic scan compares the whole file with the server's memory, both ways, without any
/// RELEASE involved; an expiring or removed lease is never taken for a release.
#[test]
fn the_divergence_scan_finds_both_directions() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let ip = lab.vm.boot().expect("lease");
    let agent = start_run(&lab, &["--probe-memory", "--divergence-interval", "1s"]);
    // Orchestration deletes the real lease's line and invents one dnsmasq never gave.
    let ghost = Ipv4Addr::new(172, 29, 101, 177);
    let ghost_line = format!("0 52:54:00:77:77:77 {ghost} ghost *");
    lab.hand_edit_lease_file(ip, &[ghost_line]).unwrap();

    let held = agent.wait_record("server-holds divergence", |r| {
        s(r, "kind") == "server_holds_lease_missing_from_file"
    });
    assert_eq!(s(&held, "ip"), ip.to_string());
    let listed = agent.wait_record("file-lists divergence", |r| {
        s(r, "kind") == "file_lists_lease_server_does_not_hold"
    });
    assert_eq!(
        (s(&listed, "ip"), s(&listed, "mac")),
        (ghost.to_string().as_str(), "52:54:00:77:77:77")
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let records = agent.records();
    assert!(
        records
            .iter()
            .all(|r| ["divergence", "server"].contains(&s(r, "event"))),
        "no release events: {records:?}"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| s(r, "event") == "divergence")
            .count(),
        2,
        "each divergence reported once: {records:?}"
    );
    agent.stop();
}

/// dnsmasq is deaf while it pings an address for a new client (dhcp-lab/tests/dnsmasq_deaf.rs):
/// a VM's own RELEASE that arrives meanwhile is processed seconds late, after the grace. It is
/// honored, not dropped for no reason.
#[test]
fn a_release_queued_behind_a_ping_is_honored_not_dropped() {
    use dhcp_lab::{
        IGNORED_MAC, VM_IFACE,
        frames::{Dhcpv4Spec, MessageType, send_frames},
    };
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start(&lab);
    let ip = lab.vm.boot().expect("lease");
    let mut newcomer = IGNORED_MAC;
    newcomer[5] = 0x42;
    let discover = Dhcpv4Spec::new(MessageType::Discover, 0x5e1e_0001, newcomer);
    send_frames(
        &lab.vm.ns,
        VM_IFACE,
        &[common::from_vm(&discover, newcomer)],
    )
    .expect("DISCOVER");
    std::thread::sleep(std::time::Duration::from_millis(100));
    lab.vm.release().expect("dhclient -r");
    let verdict = agent.wait_record("the release", |r| s(r, "event") == "release");
    assert_eq!(
        (s(&verdict, "ip"), s(&verdict, "outcome")),
        (ip.to_string().as_str(), "honored"),
        "{verdict}\n{}",
        lab.dnsmasq_log()
    );
    // Judged once dnsmasq got to it, past the 1 s grace: it was held, not lucky.
    let time = |key| s(&verdict, key).parse::<jiff::Timestamp>().unwrap();
    let waited = time("settled").duration_since(time("seen"));
    assert!(
        waited >= jiff::SignedDuration::from_millis(1500),
        "settled {waited:?} after it was seen"
    );
    agent.stop();
}
