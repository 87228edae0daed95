//! Packets built from real encodings (dhcp-lab's frame builder, dhcproto's encoder), for the
//! tests of this crate and the crates above it (feature `test-support`).

use std::net::Ipv4Addr;

use dhcp_common::Hook;
pub use dhcp_lab::frames::Dhcpv6Spec;
use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
use dhcproto::v4;

use crate::frame::{FrameMeta, Packet, decode_frame};

/// Meta of a frame seen on `lo` by TC ingress at the Unix epoch.
pub fn lo_meta() -> FrameMeta {
    FrameMeta {
        unix_ns: 0,
        ifindex: 1,
        interface: "lo".into(),
        hook: Hook::TcIngress,
        wire_len: 0,
        vlan: None,
        vlan_inner: None,
        truncated: false,
    }
}

/// A DHCPv4 message of `kind` between a client and the server on `guest0`, seen by `hook`
/// at `unix_ns`.
pub fn v4_packet(
    kind: v4::MessageType,
    xid: u32,
    mac: [u8; 6],
    unix_ns: i128,
    hook: Hook,
) -> Packet {
    let payload = Dhcpv4Spec::new(kind, xid, mac).encode();
    let ports = if matches!(
        kind,
        v4::MessageType::Offer | v4::MessageType::Ack | v4::MessageType::Nak
    ) {
        (67, 68)
    } else {
        (68, 67)
    };
    let frame = frames::ipv4_udp(
        &Framing::default(),
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::BROADCAST,
        ports,
        &payload,
    )
    .unwrap();
    let meta = FrameMeta {
        unix_ns,
        ifindex: 2,
        interface: "guest0".into(),
        hook,
        wire_len: frame.len() as u32,
        ..lo_meta()
    };
    decode_frame(&frame, meta)
}

/// What `dhcp_release` sends: a RELEASE on lo with the primary address in option 54.
pub fn release_packet() -> Packet {
    let mut spec = Dhcpv4Spec::new(v4::MessageType::Release, 1, [0x52, 0x54, 0, 1, 2, 3]);
    spec.ciaddr = Ipv4Addr::new(172, 29, 101, 150);
    spec.server_id = Some(Ipv4Addr::new(172, 29, 101, 245));
    let frame = frames::ipv4_udp(
        &Framing::default(),
        spec.ciaddr,
        Ipv4Addr::new(172, 29, 101, 245),
        (68, 67),
        &spec.encode(),
    )
    .unwrap();
    decode_frame(&frame, lo_meta())
}

/// A DHCPv6 message seen on `guest0` by `hook` at `unix_ns`: from the client's link-local
/// address to the servers' multicast group, or (REPLY, ADVERTISE) back.
pub fn v6_packet(spec: &Dhcpv6Spec, unix_ns: i128, hook: Hook) -> Packet {
    let client: std::net::Ipv6Addr = "fe80::5054:ff:fe00:1".parse().unwrap();
    let server: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let servers: std::net::Ipv6Addr = "ff02::1:2".parse().unwrap();
    let from_server = matches!(spec.code, 2 | 7 | 10 | 13);
    let (src, dst, ports) = if from_server {
        (server, client, (547, 546))
    } else {
        (client, servers, (546, 547))
    };
    let frame = frames::ipv6_udp(&Framing::default(), src, dst, ports, &spec.payload()).unwrap();
    let meta = FrameMeta {
        unix_ns,
        ifindex: 2,
        interface: "guest0".into(),
        hook,
        wire_len: frame.len() as u32,
        ..lo_meta()
    };
    decode_frame(&frame, meta)
}
