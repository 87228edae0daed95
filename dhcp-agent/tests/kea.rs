//! `dhcp-agent run` against a real Kea 2.2 (DHCPv4, memfile, lease_cmds): every RELEASE gets
//! the outcome Kea really gave it, with Kea's own causes, and a dropped one is repaired through
//! Kea's control socket (`lease4-del`), verified with `lease4-get` and the lease file.
mod common;

use std::net::Ipv4Addr;

use common::{s, start_run};
use dhcp_lab::{
    frames::{Dhcpv4Spec, MessageType},
    kea::{KEA_SERVER_ADDR, KeaLab, KeaLabConfig, OTHER_SERVER_ADDR},
};
use serde_json::Value;

fn mac(lab: &KeaLab) -> [u8; 6] {
    dhcp_wire::parse_mac(&lab.vm.mac).expect("the VM's MAC")
}

fn release(xid: u32, ip: Ipv4Addr, chaddr: [u8; 6], server_id: Option<Ipv4Addr>) -> Vec<u8> {
    Dhcpv4Spec {
        ciaddr: ip,
        server_id,
        ..Dhcpv4Spec::new(MessageType::Release, xid, chaddr)
    }
    .encode()
}

fn is_release(r: &Value) -> bool {
    s(r, "event") == "release"
}

#[test]
fn a_clients_own_release_is_honored_and_the_memory_probe_agrees_with_lease4_get() {
    let lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    let agent = start_run(&lab, &["--probe-memory"]);
    assert!(
        agent.stderr_text().contains("server: kea"),
        "{}",
        agent.stderr_text()
    );
    let ip = lab.vm.boot().expect("lease");
    assert!(lab.kea_holds(ip).unwrap());
    lab.vm.release().expect("dhclient -r");
    let record = agent.wait_record("release", is_release);
    assert_eq!(s(&record, "outcome"), "honored", "{record}");
    assert_eq!(s(&record, "ip"), ip.to_string());
    // The verdict came after the agent asked Kea's memory (lease4-get): Kea agrees.
    assert!(!lab.kea_holds(ip).unwrap());
    agent.stop();
}

/// Kea 2.2 drops a RELEASE whose option 54 is not one of its addresses
/// (DHCP4_PACKET_DROP_0003): flagged with that cause, repaired with `lease4-del`.
#[test]
fn a_release_with_a_foreign_server_id_is_flagged_and_repaired_through_the_control_socket() {
    let lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    let agent = start_run(&lab, &["--remediate", "--repair-guest-releases"]);
    let ip = lab.vm.boot().expect("lease");
    lab.send_from_vm(ip, &release(0xa1, ip, mac(&lab), Some(OTHER_SERVER_ADDR)))
        .unwrap();
    let record = agent.wait_record("dropped release", |r| {
        is_release(r) && s(r, "outcome") == "dropped"
    });
    assert_eq!(s(&record, "cause"), "server_id_mismatch", "{record}");
    assert_eq!(
        s(&record, "expected_server_id"),
        KEA_SERVER_ADDR.to_string()
    );
    let repair = agent.wait_record("remediation", |r| s(r, "event") == "remediation");
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert!(
        !lab.kea_holds(ip).unwrap(),
        "lease4-get: gone from Kea's memory"
    );
    assert!(!lab.lease_file_has(ip), "the file's last row deletes it");
    agent.stop();
}

/// `dhcp_release` over `lo`, as CloudStack and Neutron run it: Kea listens on the guest
/// interface only and never receives it. `not_received`, not `unknown`; the router's own
/// release is repaired through the control socket.
#[test]
fn dhcp_release_over_lo_is_not_received_and_repaired() {
    let lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    let agent = start_run(&lab, &["--remediate"]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    let record = agent.wait_record("dropped release", |r| {
        is_release(r) && s(r, "outcome") == "dropped"
    });
    assert_eq!(s(&record, "cause"), "not_received", "{record}");
    assert_eq!(s(&record, "origin"), "router");
    let repair = agent.wait_record("remediation", |r| s(r, "event") == "remediation");
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert!(!lab.kea_holds(ip).unwrap());
    agent.stop();
}

/// Another client's chaddr (DHCP4_RELEASE_FAIL_WRONG_CLIENT): flagged `client_mismatch`; sent
/// from the VM's own Ethernet address for another chaddr, it is forged and never repaired.
#[test]
fn a_release_for_another_client_is_flagged_and_never_repaired() {
    let lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    let agent = start_run(&lab, &["--remediate", "--repair-guest-releases"]);
    let ip = lab.vm.boot().expect("lease");
    lab.send_from_vm(
        ip,
        &release(0xb2, ip, [2, 0, 0, 0, 0, 9], Some(KEA_SERVER_ADDR)),
    )
    .unwrap();
    let record = agent.wait_record("dropped release", |r| {
        is_release(r) && s(r, "outcome") == "dropped"
    });
    assert_eq!(s(&record, "cause"), "client_mismatch", "{record}");
    assert_eq!(s(&record, "origin"), "forged");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !agent
            .records()
            .iter()
            .any(|r| s(r, "event") == "remediation"),
        "a forged release is never repaired"
    );
    assert!(lab.kea_holds(ip).unwrap());
    agent.stop();
}

/// No control socket: the agent says so and observes only.
#[test]
fn without_a_control_socket_the_agent_observes_only() {
    let lab = KeaLab::start(KeaLabConfig {
        control_socket: false,
        ..KeaLabConfig::default()
    })
    .expect("kea lab");
    let agent = start_run(&lab, &["--remediate"]);
    assert!(
        agent
            .stderr_text()
            .contains("kea control socket not configured"),
        "{}",
        agent.stderr_text()
    );
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    let record = agent.wait_record("dropped release", |r| {
        is_release(r) && s(r, "outcome") == "dropped"
    });
    assert_eq!(s(&record, "cause"), "not_received", "{record}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !agent
            .records()
            .iter()
            .any(|r| s(r, "event") == "remediation")
    );
    agent.stop();
}

/// Reconciliation with Kea's own host reservations: the VM with a reservation outside the
/// pool is declared and left alone; once the orchestrator drops the reservation (the VM
/// expunged, Kea told with `config-reload`), its lease is an orphan, released through the
/// control socket after the settle time, once.
#[test]
fn a_lease_whose_reservation_was_dropped_is_an_orphan_released_through_the_control_socket() {
    let reserved = Ipv4Addr::new(172, 29, 101, 10);
    let mut lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    lab.set_reservations(vec![(lab.vm.mac.clone(), reserved)])
        .expect("reservation");
    let ip = lab.vm.boot().expect("lease");
    assert_eq!(ip, reserved, "Kea gave the reserved address");
    let agent = start_run(&lab, &["--remediate"]);
    agent.wait_stderr("1 declared hosts from Kea's reservations");
    // Declared: past the settle time, no orphan.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        agent.records().iter().all(|r| s(r, "event") != "orphan"),
        "a reserved client is no orphan: {}",
        agent.stderr_text()
    );
    assert!(lab.kea_holds(ip).unwrap());
    // `dhcp-agent leases` joins the memfile with the same reservations.
    let leases = |lab: &KeaLab| -> Value {
        let out = lab
            .router
            .command(common::AGENT)
            .args(["leases", "--json", "--probe-memory"])
            .args(["--lease-format", "kea-v4", "--leases"])
            .arg(lab.lease_file())
            .arg("--kea-conf")
            .arg(lab.conf_path())
            .arg("--state-file")
            .arg(lab.dir.join("state.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let row = leases(&lab);
    assert_eq!(s(&row, "declared"), "declared");
    assert_eq!(row["in_server_memory"], true, "lease4-get: {row}");

    lab.set_reservations(Vec::new())
        .expect("reservation dropped");
    assert_eq!(s(&leases(&lab), "declared"), "orphan");
    agent.wait_stderr("0 declared hosts from Kea's reservations");
    let orphan = agent.wait_record("orphan", |r| s(r, "event") == "orphan");
    assert_eq!(s(&orphan, "ip"), ip.to_string(), "{orphan}");
    let repair = agent.wait_record("remediation", |r| s(r, "event") == "remediation");
    assert_eq!(
        (s(&repair, "result"), s(&repair, "basis")),
        ("remediated", "orphan"),
        "{repair}"
    );
    assert!(!lab.kea_holds(ip).unwrap(), "lease4-del: gone from Kea");
    let repairs = agent
        .records()
        .iter()
        .filter(|r| s(r, "event") == "remediation")
        .count();
    assert_eq!(repairs, 1, "released once");
    agent.stop();
}
