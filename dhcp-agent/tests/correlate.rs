//! `dhcp-agent run` against real dnsmasq in the redundant-VR lab: every RELEASE gets the
//! outcome the server really gave it.
mod common;

use std::net::Ipv4Addr;

use common::{Agent, s};
use dhcp_lab::{Lab, LabConfig, PRIMARY_ADDR, ROUTER_IFACE, VIP_ADDR};

fn start(lab: &Lab) -> Agent {
    let leases = lab.lease_file();
    let conf = lab.dir.join("dnsmasq.conf");
    let args = [
        "run",
        "--json",
        "--iface",
        ROUTER_IFACE,
        "--iface",
        "lo",
        "--grace",
        "1s",
        "--leases",
        leases.to_str().unwrap(),
        "--dnsmasq-conf",
        conf.to_str().unwrap(),
    ];
    Agent::start(&lab.router, &args)
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
        agent.records().iter().all(|r| r["flagged"] == false),
        "{:?}",
        agent.lines()
    );
    agent.stop();
}
