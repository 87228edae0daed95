//! `dhcp-agent watch` on real kernel hooks, in a router lab with real dnsmasq, dhclient and
//! dhcp_release (see dhcp-lab). Needs root; every test makes its own namespaces.
mod common;

use common::{Agent, s, start_watch};
use std::net::Ipv4Addr;

use dhcp_lab::{
    Lab, LabConfig, PRIMARY_ADDR, ROUTER_IFACE, VIP_ADDR, VM_IFACE,
    frames::{self, Dhcpv4Spec, Framing},
};
use dhcproto::v4::MessageType;
use serde_json::Value;

/// Boots the VM, releases its lease with the real `dhcp_release`, boots it again and releases
/// with `dhclient -r`; checks every message the agent printed.
fn full_exchange(config: LabConfig, agent_args: &[&str]) {
    let lab = Lab::start(config.clone()).expect("lab");
    let agent = start_watch(&lab, agent_args);
    let ingress = ingress_hook(agent_args);

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
    assert_eq!(s(&discover, "hook"), ingress, "{discover}");
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
    assert_eq!(s(&own, "hook"), ingress, "{own}");
    assert_eq!(s(&own, "server_id"), vip);
    assert_eq!(s(&own, "ciaddr"), ip_s);
    assert_eq!(own["vlan"], vlan, "{own}");

    let stderr = agent.stop();
    assert!(stderr.contains("stopped:"), "{stderr}");
    assert_detached(&lab);
}

/// After a clean stop nothing of ours is left on the interfaces: no XDP program and no clsact
/// filter. (TCX links, like XDP links, are owned by the agent's file descriptors.)
fn assert_detached(lab: &Lab) {
    for iface in [ROUTER_IFACE, "lo"] {
        let link = lab.router.ip(&["-d", "link", "show", iface]).unwrap();
        assert!(!link.contains("prog/xdp"), "XDP left on {iface}: {link}");
        for dir in ["ingress", "egress"] {
            let filters = dhcp_lab::run(
                lab.router
                    .command("tc")
                    .args(["filter", "show", "dev", iface, dir]),
            )
            .unwrap_or_default();
            assert!(
                !filters.contains("dhcp_tc"),
                "TC filter left on {iface} {dir}: {filters}"
            );
        }
    }
}

/// The hook that sees guest ingress: XDP when asked for, TC ingress by default.
fn ingress_hook(agent_args: &[&str]) -> &'static str {
    match agent_args.windows(2).find(|w| w[0] == "--xdp-mode") {
        Some([_, "auto" | "driver" | "skb"]) => "xdp_ingress",
        _ => "tc_ingress",
    }
}

#[test]
fn sees_exchange_and_both_releases() {
    full_exchange(LabConfig::default(), &[]);
}

#[test]
fn sees_exchange_with_xdp_ingress() {
    full_exchange(LabConfig::default(), &["--xdp-mode", "auto"]);
}

#[test]
fn sees_exchange_with_tc_through_netlink_clsact() {
    full_exchange(LabConfig::default(), &["--tc-mode", "netlink"]);
}

#[test]
fn sees_exchange_with_tc_through_tcx() {
    full_exchange(LabConfig::default(), &["--tc-mode", "tcx"]);
}

/// VLAN-tagged traffic through the real hooks. With 802.1Q in the kernel the whole exchange
/// runs over a VLAN device; without it (this project's CI kernel has none) tagged frames are
/// injected from both ends with a packet socket, which exercises the same kernel paths.
#[test]
fn sees_vlan_tagged_traffic() {
    if std::path::Path::new("/proc/net/vlan").exists() {
        full_exchange(
            LabConfig {
                vlan: Some(100),
                ..LabConfig::default()
            },
            &[],
        );
        return;
    }
    eprintln!("kernel without 802.1Q: injecting tagged frames");
    for agent_args in [&[][..], &["--xdp-mode", "auto"][..]] {
        injected_vlan_frames(agent_args);
    }
}

/// Tagged frames (802.1Q and QinQ) injected at both ends of the guest link, seen by the
/// ingress hook `agent_args` choose and by TC egress.
fn injected_vlan_frames(agent_args: &[&str]) {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_watch(&lab, agent_args);
    let ingress = ingress_hook(agent_args);
    let mac = [0x52, 0x54, 0, 0x77, 0, 1];
    let bcast = Ipv4Addr::BROADCAST;
    let discover = Dhcpv4Spec::new(MessageType::Discover, 0x0100_0001, mac).encode();
    let mut request = Dhcpv4Spec::new(MessageType::Request, 0x0100_0002, mac);
    request.requested_ip = Some(Ipv4Addr::new(172, 29, 101, 150));
    request.server_id = Some(VIP_ADDR);
    let tagged = |vlans: Vec<u16>, ip_options: Vec<u8>| Framing {
        src_mac: mac,
        vlans,
        ip_options,
        ..Framing::default()
    };
    let from_vm = [
        frames::ipv4_udp(
            &tagged(vec![100], vec![]),
            Ipv4Addr::UNSPECIFIED,
            bcast,
            (68, 67),
            &discover,
        )
        .unwrap(),
        // QinQ, and an IPv4 header with options (IHL 6).
        frames::ipv4_udp(
            &tagged(vec![200, 300], vec![1, 1, 1, 0]),
            Ipv4Addr::UNSPECIFIED,
            bcast,
            (68, 67),
            &request.encode(),
        )
        .unwrap(),
    ];
    frames::send_frames(&lab.vm.ns, VM_IFACE, &from_vm).expect("send from VM");
    let mut offer = Dhcpv4Spec::new(MessageType::Offer, 0x0100_0001, mac);
    offer.yiaddr = Ipv4Addr::new(172, 29, 101, 150);
    offer.server_id = Some(VIP_ADDR);
    let router_framing = Framing {
        src_mac: [0x52, 0x54, 0, 0x99, 0, 1],
        dst_mac: mac,
        vlans: vec![100],
        ..Framing::default()
    };
    let to_vm = frames::ipv4_udp(
        &router_framing,
        VIP_ADDR,
        offer.yiaddr,
        (67, 68),
        &offer.encode(),
    )
    .unwrap();
    frames::send_frames(&lab.router, ROUTER_IFACE, &[to_vm]).expect("send from router");

    let d = agent.wait_record("tagged DISCOVER", |r| s(r, "message_type") == "DISCOVER");
    assert_eq!(
        (s(&d, "hook"), d["vlan"].as_u64(), d["vlan_inner"].as_u64()),
        (ingress, Some(100), None),
        "{d}"
    );
    let r = agent.wait_record("QinQ REQUEST", |r| s(r, "message_type") == "REQUEST");
    assert_eq!(
        (s(&r, "hook"), r["vlan"].as_u64(), r["vlan_inner"].as_u64()),
        (ingress, Some(200), Some(300)),
        "{r}"
    );
    assert_eq!(s(&r, "requested_ip"), "172.29.101.150");
    let o = agent.wait_record("tagged OFFER", |r| s(r, "message_type") == "OFFER");
    assert_eq!(
        (s(&o, "hook"), o["vlan"].as_u64()),
        ("tc_egress", Some(100)),
        "{o}"
    );
    assert_eq!(s(&o, "server_id"), VIP_ADDR.to_string());
    agent.stop();
}

/// DHCPv6 is shown, malformed DHCP is counted and shown on request, other UDP is not captured.
#[test]
fn shows_dhcpv6_and_malformed_and_ignores_other_udp() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = Agent::start(
        &lab.router,
        &[
            "watch",
            "--json",
            "--show-malformed",
            "--iface",
            ROUTER_IFACE,
        ],
    );
    let framing = Framing::default();
    let any = Ipv4Addr::UNSPECIFIED;
    let solicit = frames::dhcpv6_solicit(0x00ab_cdef, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
    let v6 = frames::ipv6_udp(
        &framing,
        "fe80::1".parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        (546, 547),
        &solicit,
    )
    .unwrap();
    let truncated_dhcp = frames::ipv4_udp(
        &framing,
        any,
        Ipv4Addr::BROADCAST,
        (68, 67),
        &[1, 1, 6, 0, 9, 9],
    )
    .unwrap();
    let dns = frames::ipv4_udp(&framing, any, Ipv4Addr::BROADCAST, (5353, 53), &[0; 40]).unwrap();
    frames::send_frames(&lab.vm.ns, VM_IFACE, &[dns, v6, truncated_dhcp]).unwrap();

    let v6 = agent.wait_record("SOLICIT", |r| s(r, "message_type") == "SOLICIT");
    assert_eq!(
        (s(&v6, "protocol"), s(&v6, "xid"), s(&v6, "client_id")),
        ("dhcpv6", "0xabcdef", "00:03:00:01:01:02:03:04:05:06")
    );
    let bad = agent.wait_record("malformed", |r| s(r, "protocol") == "malformed");
    assert!(
        s(&bad, "malformed").starts_with("dhcpv4: payload of 6 bytes"),
        "{bad}"
    );
    let stderr = agent.stop();
    // Exactly the two DHCP frames were captured: the DNS frame never left the kernel.
    assert!(
        stderr.contains("2 events read, 2 shown, 1 malformed"),
        "{stderr}"
    );
}
