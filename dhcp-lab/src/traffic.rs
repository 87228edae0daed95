//! Synthetic DHCP traffic for the benchmarks: many clients going through the usual exchange
//! (DISCOVER, OFFER, REQUEST, ACK) and one in four of them releasing its lease afterwards, half
//! of those releases carrying the router's primary address as server id the way CloudStack's
//! `dhcp_release` does on a redundant VR.
//!
//! Frames are deterministic (client `k` always gets the same MAC, xid and address), so a run
//! can be repeated and two tools can be fed the very same bytes.
use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use crate::{
    PRIMARY_ADDR, VIP_ADDR,
    frames::{Dhcpv4Spec, Framing, ipv4_udp},
};

/// The router's MAC in generated frames.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xdc, 0x00, 0x00, 0x00, 0x01];

/// Who sent a generated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// One generated frame and what it is.
#[derive(Debug, Clone)]
pub struct Frame {
    pub sender: Sender,
    pub message_type: MessageType,
    pub bytes: Vec<u8>,
}

/// Client `k`'s MAC: locally administered, unique for k < 2^32.
pub fn client_mac(k: u32) -> [u8; 6] {
    let b = k.to_be_bytes();
    [0x02, 0x42, b[0], b[1], b[2], b[3]]
}

/// Client `k`'s address inside 10.0.0.0/8, unique for k < 16,384,000 (last octet 2..=251).
pub fn client_ip(k: u32) -> Ipv4Addr {
    let above = k / 250;
    Ipv4Addr::new(10, (above >> 8) as u8, above as u8, (k % 250 + 2) as u8)
}

/// Every frame of client `k`'s exchange, in wire order: DISCOVER, OFFER, REQUEST, ACK and, for
/// one client in four, a RELEASE (every other one with the primary address as server id).
pub fn exchange(k: u32) -> Vec<Frame> {
    let mac = client_mac(k);
    let ip = client_ip(k);
    let xid = 0x5eed_0000_u32.wrapping_add(k);
    let mut frames = Vec::with_capacity(5);
    let client = |spec: Dhcpv4Spec, src: Ipv4Addr, dst: Ipv4Addr| Frame {
        sender: Sender::Client,
        message_type: spec.message_type,
        bytes: frame(mac, [0xff; 6], src, dst, (68, 67), &spec.encode()),
    };
    let server = |spec: Dhcpv4Spec| Frame {
        sender: Sender::Server,
        message_type: spec.message_type,
        bytes: frame(ROUTER_MAC, mac, VIP_ADDR, ip, (67, 68), &spec.encode()),
    };
    let mut discover = Dhcpv4Spec::new(MessageType::Discover, xid, mac);
    discover.hostname = Some(format!("vm-{k}"));
    frames.push(client(discover, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
    let mut offer = Dhcpv4Spec::new(MessageType::Offer, xid, mac);
    offer.yiaddr = ip;
    offer.server_id = Some(VIP_ADDR);
    offer.subnet_mask = Some(Ipv4Addr::new(255, 0, 0, 0));
    offer.lease_secs = Some(3600);
    frames.push(server(offer.clone()));
    let mut request = Dhcpv4Spec::new(MessageType::Request, xid, mac);
    request.requested_ip = Some(ip);
    request.server_id = Some(VIP_ADDR);
    request.hostname = Some(format!("vm-{k}"));
    frames.push(client(request, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
    let mut ack = offer;
    ack.message_type = MessageType::Ack;
    frames.push(server(ack));
    if k % 4 == 3 {
        let mut release = Dhcpv4Spec::new(MessageType::Release, xid.wrapping_add(1), mac);
        release.ciaddr = ip;
        release.server_id = Some(if k % 8 == 7 { PRIMARY_ADDR } else { VIP_ADDR });
        frames.push(client(release, ip, VIP_ADDR));
    }
    frames
}

/// What clients send, for `count` frames: the client side of consecutive exchanges
/// (DISCOVER, REQUEST, and a RELEASE for one client in four), as a flood from a guest network
/// looks on the router's guest interface.
pub fn client_frames(count: usize) -> Vec<Vec<u8>> {
    (0u32..)
        .flat_map(exchange)
        .filter(|f| f.sender == Sender::Client)
        .map(|f| f.bytes)
        .take(count)
        .collect()
}

/// Both sides of consecutive exchanges, `count` frames in all: a capture on the router.
pub fn conversation_frames(count: usize) -> Vec<Frame> {
    (0u32..).flat_map(exchange).take(count).collect()
}

/// Client `k`'s line in a dnsmasq lease file (`expiry mac ip hostname client-id`, `*` for
/// none): one client in ten sends no hostname, every other one a client id.
pub fn dnsmasq_lease_line(k: u32, expiry: u64) -> String {
    let mac = client_mac(k).map(|b| format!("{b:02x}")).join(":");
    let hostname = if k % 10 == 9 {
        "*".to_string()
    } else {
        format!("vm-{k}")
    };
    let client_id = if k.is_multiple_of(2) {
        format!("01:{mac}")
    } else {
        "*".to_string()
    };
    format!("{expiry} {mac} {} {hostname} {client_id}", client_ip(k))
}

fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let framing = Framing {
        src_mac,
        dst_mac,
        ..Framing::default()
    };
    ipv4_udp(&framing, src, dst, ports, payload).expect("a plain Ethernet/IPv4/UDP frame builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_have_the_expected_mix() {
        let frames = conversation_frames(18);
        let types: Vec<MessageType> = frames.iter().map(|f| f.message_type).collect();
        use MessageType::*;
        assert_eq!(
            types,
            [
                Discover, Offer, Request, Ack, // client 0
                Discover, Offer, Request, Ack, // client 1
                Discover, Offer, Request, Ack, // client 2
                Discover, Offer, Request, Ack, Release,  // client 3 releases
                Discover, // client 4 starts
            ]
        );
        let clients = client_frames(9);
        assert_eq!(clients.len(), 9);
        assert!(clients.iter().all(|f| f.len() > 42 + 240));
    }

    #[test]
    fn clients_are_distinct() {
        let macs: std::collections::HashSet<_> = (0..100_000).map(client_mac).collect();
        let ips: std::collections::HashSet<_> = (0..100_000).map(client_ip).collect();
        assert_eq!(macs.len(), 100_000);
        assert_eq!(ips.len(), 100_000);
    }
}
