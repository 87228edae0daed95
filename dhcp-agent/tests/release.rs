//! `dhcp-agent release` against real dnsmasq in the redundant-VR lab.
mod common;

use std::{net::Ipv4Addr, process::Output};

use common::AGENT;
use dhcp_lab::{Lab, LabConfig};

fn agent_release(lab: &Lab, ip: Ipv4Addr, mac: &str) -> Output {
    lab.router
        .command(AGENT)
        .args(["release", &lab.guest_iface(), &ip.to_string(), mac])
        .output()
        .unwrap()
}

#[test]
fn succeeds_where_dhcp_release_silently_fails() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let ip = lab.vm.boot().expect("lease");
    let mac = lab.vm.mac.clone();

    lab.dhcp_release(ip, &mac)
        .expect("dhcp_release exits 0 whatever happens");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        lab.lease_file_has(ip) && lab.dnsmasq_holds(ip),
        "dnsmasq kept the lease after dhcp_release"
    );

    let out = agent_release(&lab, ip, &mac);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("released (server id 172.29.101.1)"),
        "{stdout}"
    );
    assert!(!lab.dnsmasq_holds(ip), "gone from dnsmasq's memory");
    dhcp_lab::wait_for(std::time::Duration::from_secs(3), || {
        !lab.lease_file_has(ip)
    })
    .expect("gone from the lease file");

    // Nothing left to release: says so and succeeds.
    let again = agent_release(&lab, ip, &mac);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to release"));
}

#[test]
fn fails_loudly_when_the_server_keeps_the_lease() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let ip = lab.vm.boot().expect("lease");
    // Wrong MAC: dnsmasq logs "unknown lease" and keeps it; we must say so and exit non-zero.
    let out = agent_release(&lab, ip, "52:54:00:ee:ee:ee");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the server still holds the lease"),
        "{stderr}"
    );
    assert!(lab.dnsmasq_holds(ip));
}
