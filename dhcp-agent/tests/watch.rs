//! `dhcp-agent watch` on real kernel hooks, in a router lab with real dnsmasq, dhclient and
//! dhcp_release (see dhcp-lab). Needs root; every test makes its own namespaces.
mod common;

use common::{Agent, s};
use dhcp_lab::{Lab, LabConfig, PRIMARY_ADDR, ROUTER_IFACE, VIP_ADDR};
use serde_json::Value;

/// Boots the VM, releases its lease with the real `dhcp_release`, boots it again and releases
/// with `dhclient -r`; checks every message the agent printed.
fn full_exchange(config: LabConfig, agent_args: &[&str]) {
    let lab = Lab::start(config.clone()).expect("lab");
    let mut args = vec!["watch", "--json", "--iface", ROUTER_IFACE, "--iface", "lo"];
    args.extend_from_slice(agent_args);
    let agent = Agent::start(&lab.router, &args);

    let ip = lab.vm.boot().expect("dhclient gets a lease");
    let ip_s = ip.to_string();
    let mac = lab.vm.mac.clone();
    let vip = VIP_ADDR.to_string();
    let vlan = config
        .vlan
        .map(|v| Value::from(u64::from(v)))
        .unwrap_or(Value::Null);
    let is = |r: &Value, ty: &str| s(r, "message_type") == ty && s(r, "chaddr") == mac;

    let discover = agent.wait_record("DISCOVER", |r| is(r, "DISCOVER"));
    assert_eq!(s(&discover, "hook"), "xdp_ingress", "{discover}");
    assert_eq!(s(&discover, "direction"), "in");
    assert_eq!(s(&discover, "interface"), ROUTER_IFACE);
    assert_eq!(discover["vlan"], vlan, "{discover}");

    let offer = agent.wait_record("OFFER", |r| is(r, "OFFER"));
    assert_eq!(s(&offer, "hook"), "tc_egress", "{offer}");
    assert_eq!(s(&offer, "direction"), "out");
    assert_eq!(
        s(&offer, "server_id"),
        vip,
        "option 54 of the OFFER is dnsmasq's server id: the VIP"
    );
    assert_eq!(s(&offer, "yiaddr"), ip_s);
    assert_eq!(s(&offer, "xid"), s(&discover, "xid"));
    assert_eq!(offer["vlan"], vlan, "{offer}");

    let request = agent.wait_record("REQUEST", |r| is(r, "REQUEST"));
    assert_eq!(s(&request, "server_id"), vip);
    assert_eq!(s(&request, "requested_ip"), ip_s);

    let ack = agent.wait_record("ACK", |r| is(r, "ACK"));
    assert_eq!(s(&ack, "server_id"), vip);
    assert_eq!(s(&ack, "yiaddr"), ip_s);
    assert_eq!(ack["lease_time"], Value::from(u64::from(config.lease_secs)));

    // CloudStack's expunge: the real dhcp_release, sent to the primary address over lo, with
    // the primary address in option 54 (which dnsmasq silently ignores).
    lab.dhcp_release(ip, &mac).expect("dhcp_release");
    let release = agent.wait_record("dhcp_release RELEASE", |r| {
        is(r, "RELEASE") && s(r, "interface") == "lo"
    });
    assert_eq!(s(&release, "hook"), "tc_ingress", "{release}");
    assert_eq!(s(&release, "server_id"), PRIMARY_ADDR.to_string());
    assert_eq!(s(&release, "ciaddr"), ip_s);
    assert_eq!(s(&release, "dst_ip"), PRIMARY_ADDR.to_string());

    // The client's own release, on the guest interface, with the right server id.
    lab.vm.release().expect("dhclient -r");
    let own = agent.wait_record("dhclient RELEASE", |r| {
        is(r, "RELEASE") && s(r, "interface") == ROUTER_IFACE
    });
    assert_eq!(s(&own, "hook"), "xdp_ingress", "{own}");
    assert_eq!(s(&own, "server_id"), vip);
    assert_eq!(s(&own, "ciaddr"), ip_s);
    assert_eq!(own["vlan"], vlan, "{own}");

    let stderr = agent.stop();
    assert!(stderr.contains("stopped:"), "{stderr}");
}

#[test]
fn sees_exchange_and_both_releases() {
    full_exchange(LabConfig::default(), &[]);
}

#[test]
fn sees_exchange_with_tc_through_netlink_clsact() {
    full_exchange(LabConfig::default(), &["--tc-mode", "netlink"]);
}

#[test]
fn sees_exchange_with_tc_through_tcx() {
    full_exchange(LabConfig::default(), &["--tc-mode", "tcx"]);
}

#[test]
fn sees_vlan_tagged_exchange() {
    full_exchange(
        LabConfig {
            vlan: Some(100),
            ..LabConfig::default()
        },
        &[],
    );
}
