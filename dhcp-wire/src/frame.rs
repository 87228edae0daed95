//! Decoding of captured frames: L2-L4 with etherparse, then DHCPv4 and DHCPv6 (our own strict
//! readers). A frame that does not decode becomes a [`Body::Malformed`] with the reason;
//! nothing here panics on any input.

use std::net::{IpAddr, Ipv4Addr};

use dhcp_common::Hook;
use etherparse::{LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use crate::{
    dhcpv4::{Dhcpv4, MessageType},
    dhcpv6::{self, Dhcpv6Info},
};

/// Where and when a frame was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMeta {
    /// Wall-clock time of capture, nanoseconds since the Unix epoch.
    pub unix_ns: i128,
    pub ifindex: u32,
    pub interface: String,
    pub hook: Hook,
    pub wire_len: u32,
    /// Outer and inner VLAN ids as the kernel reported them (also covers offloaded tags).
    pub vlan: Option<u16>,
    pub vlan_inner: Option<u16>,
    pub truncated: bool,
}

impl FrameMeta {
    pub fn direction(&self) -> &'static str {
        if self.hook.is_ingress() { "in" } else { "out" }
    }
}

/// The DHCPv4 fields the observer reports, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv4Info {
    pub op: u8,
    pub message_type: Option<MessageType>,
    pub xid: u32,
    pub broadcast: bool,
    /// Client hardware address bytes (`hlen` of them).
    pub chaddr: Vec<u8>,
    pub htype: u8,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 12, lossily made UTF-8 (clients send anything).
    pub hostname: Option<String>,
    pub client_id: Option<Vec<u8>>,
    pub message: Option<String>,
}

impl From<&Dhcpv4<'_>> for Dhcpv4Info {
    fn from(m: &Dhcpv4<'_>) -> Self {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Dhcpv4Info {
            op: m.op,
            message_type: m.message_type,
            xid: m.xid,
            broadcast: m.flags & 0x8000 != 0,
            chaddr: m.chaddr.to_vec(),
            htype: m.htype,
            ciaddr: m.ciaddr,
            yiaddr: m.yiaddr,
            siaddr: m.siaddr,
            giaddr: m.giaddr,
            server_id: m.server_id,
            requested_ip: m.requested_ip,
            lease_time: m.lease_time,
            subnet_mask: m.subnet_mask,
            hostname: m.hostname.map(text),
            client_id: m.client_id.map(<[u8]>::to_vec),
            message: m.message.map(text),
        }
    }
}

impl Dhcpv4Info {
    /// Name of the message type, `BOOTP` when option 53 is absent.
    pub fn type_name(&self) -> &'static str {
        self.message_type.map_or("BOOTP", MessageType::name)
    }
}

/// Which layer a malformed frame failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Link,
    Udp,
    Dhcpv4,
    Dhcpv6,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Link => "l2-l4",
            Layer::Udp => "udp",
            Layer::Dhcpv4 => "dhcpv4",
            Layer::Dhcpv6 => "dhcpv6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    V4(Dhcpv4Info),
    V6(Dhcpv6Info),
    Malformed { layer: Layer, reason: String },
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub meta: FrameMeta,
    pub src_mac: Option<[u8; 6]>,
    pub dst_mac: Option<[u8; 6]>,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub body: Body,
}

impl Packet {
    pub fn is_malformed(&self) -> bool {
        matches!(self.body, Body::Malformed { .. })
    }

    /// Why a frame is not DHCP at all (ARP, ICMP, TCP, UDP between other ports), as opposed
    /// to DHCP that does not decode: `None` for DHCP, well-formed or not. The kernel hooks only
    /// pass frames on DHCP's ports; a capture taken anywhere has everything else too.
    pub fn not_dhcp(&self) -> Option<&'static str> {
        let Body::Malformed {
            layer: Layer::Udp, ..
        } = self.body
        else {
            return None;
        };
        match (self.src_ip, self.src_port, self.dst_port) {
            (None, _, _) => Some("not IP"),
            (Some(_), None, _) | (Some(_), _, None) => Some("not UDP"),
            (Some(_), Some(src), Some(dst)) => {
                let dhcp = |p: u16| DHCPV4_PORTS.contains(&p) || DHCPV6_PORTS.contains(&p);
                (!dhcp(src) && !dhcp(dst)).then_some("UDP, not a DHCP port")
            }
        }
    }

    pub fn dhcpv4(&self) -> Option<&Dhcpv4Info> {
        match &self.body {
            Body::V4(info) => Some(info),
            _ => None,
        }
    }

    pub fn dhcpv6(&self) -> Option<&Dhcpv6Info> {
        match &self.body {
            Body::V6(info) => Some(info),
            _ => None,
        }
    }
}

const DHCPV4_PORTS: [u16; 2] = [67, 68];
const DHCPV6_PORTS: [u16; 2] = [546, 547];

/// Decodes one captured frame (Ethernet from its first byte, as the kernel hooks copy it).
pub fn decode_frame(frame: &[u8], meta: FrameMeta) -> Packet {
    let mut packet = Packet {
        meta,
        src_mac: None,
        dst_mac: None,
        src_ip: None,
        dst_ip: None,
        src_port: None,
        dst_port: None,
        body: Body::Malformed {
            layer: Layer::Link,
            reason: String::new(),
        },
    };
    let sliced = match SlicedPacket::from_ethernet(frame) {
        Ok(sliced) => sliced,
        Err(err) => {
            packet.body = Body::Malformed {
                layer: Layer::Link,
                reason: err.to_string(),
            };
            return packet;
        }
    };
    if let Some(LinkSlice::Ethernet2(eth)) = &sliced.link {
        packet.src_mac = Some(eth.source());
        packet.dst_mac = Some(eth.destination());
    }
    // VLAN tags in the frame itself; the kernel's view (which includes offloaded tags) wins.
    let mut tags = sliced.link_exts.iter().filter_map(|ext| match ext {
        LinkExtSlice::Vlan(vlan) => Some(vlan.vlan_identifier().value()),
        _ => None,
    });
    if packet.meta.vlan.is_none() {
        packet.meta.vlan = tags.next();
        packet.meta.vlan_inner = tags.next();
    }
    match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            packet.src_ip = Some(ip.header().source_addr().into());
            packet.dst_ip = Some(ip.header().destination_addr().into());
        }
        Some(NetSlice::Ipv6(ip)) => {
            packet.src_ip = Some(ip.header().source_addr().into());
            packet.dst_ip = Some(ip.header().destination_addr().into());
        }
        _ => {}
    }
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        packet.body = Body::Malformed {
            layer: Layer::Udp,
            reason: "no UDP header".into(),
        };
        return packet;
    };
    let (src_port, dst_port) = (udp.source_port(), udp.destination_port());
    packet.src_port = Some(src_port);
    packet.dst_port = Some(dst_port);
    let is_port = |ports: [u16; 2]| ports.contains(&src_port) || ports.contains(&dst_port);
    // etherparse reads a UDP length of 0 as "up to the end of the IP payload", which only IPv6
    // jumbograms may use; over IPv4 the kernel drops such a datagram (no server ever gets it),
    // so it is malformed, not the DHCP message that happens to follow.
    if udp.length() == 0 && matches!(packet.src_ip, Some(IpAddr::V4(_))) {
        packet.body = Body::Malformed {
            layer: Layer::Udp,
            reason: "UDP length 0 over IPv4 (shorter than its own 8-byte header)".into(),
        };
        return packet;
    }
    packet.body = match packet.src_ip {
        Some(IpAddr::V4(_)) if is_port(DHCPV4_PORTS) => match Dhcpv4::parse(udp.payload()) {
            Ok(msg) => Body::V4(Dhcpv4Info::from(&msg)),
            Err(err) => Body::Malformed {
                layer: Layer::Dhcpv4,
                reason: err.to_string(),
            },
        },
        Some(IpAddr::V6(_)) if is_port(DHCPV6_PORTS) => match dhcpv6::parse(udp.payload()) {
            Ok(info) => Body::V6(info),
            Err(err) => Body::Malformed {
                layer: Layer::Dhcpv6,
                reason: err.to_string(),
            },
        },
        _ => Body::Malformed {
            layer: Layer::Udp,
            reason: format!("UDP {src_port}->{dst_port} is not a DHCP port pair"),
        },
    };
    packet
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
    use dhcproto::v4;

    use super::*;
    use crate::{dhcpv4::Dhcpv4Error, test_support::lo_meta};

    fn request() -> Vec<u8> {
        let mut spec = Dhcpv4Spec::new(v4::MessageType::Request, 7, [2, 0, 0, 0, 0, 1]);
        spec.requested_ip = Some(Ipv4Addr::new(10, 1, 1, 1));
        spec.server_id = Some(Ipv4Addr::new(10, 1, 1, 254));
        spec.encode()
    }

    fn frame(framing: &Framing, payload: &[u8]) -> Vec<u8> {
        frames::ipv4_udp(
            framing,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            (68, 67),
            payload,
        )
        .unwrap()
    }

    #[test]
    fn decodes_plain_vlan_qinq_and_ip_options() {
        for (vlans, ip_options) in [
            (vec![], vec![]),
            (vec![5], vec![]),
            (vec![5, 6], vec![]),
            (vec![], vec![1; 8]),
        ] {
            let framing = Framing {
                vlans: vlans.clone(),
                ip_options,
                ..Framing::default()
            };
            let packet = decode_frame(&frame(&framing, &request()), lo_meta());
            let m = packet.dhcpv4().unwrap_or_else(|| panic!("{packet:?}"));
            assert_eq!(m.message_type, Some(MessageType::Request));
            assert_eq!(m.requested_ip, Some(Ipv4Addr::new(10, 1, 1, 1)));
            assert_eq!(m.server_id, Some(Ipv4Addr::new(10, 1, 1, 254)));
            assert_eq!(packet.meta.vlan, vlans.first().copied());
            assert_eq!(packet.meta.vlan_inner, vlans.get(1).copied());
            assert_eq!((packet.src_port, packet.dst_port), (Some(68), Some(67)));
        }
    }

    #[test]
    fn kernel_reported_vlan_wins_over_frame_tags() {
        // An offloaded outer tag: the kernel says 100, the frame itself carries none.
        let packet = decode_frame(
            &frame(&Framing::default(), &request()),
            FrameMeta {
                vlan: Some(100),
                ..lo_meta()
            },
        );
        assert_eq!(packet.meta.vlan, Some(100));
    }

    #[test]
    fn loopback_frames_with_zero_macs_decode() {
        let lo = Framing {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            ..Framing::default()
        };
        let packet = decode_frame(&frame(&lo, &request()), lo_meta());
        assert!(packet.dhcpv4().is_some());
        assert_eq!(packet.src_mac, Some([0; 6]));
    }

    #[test]
    fn frames_that_are_not_dhcp_say_so() {
        let dns = frames::ipv4_udp(
            &Framing::default(),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            (5353, 53),
            b"dns",
        )
        .unwrap();
        assert_eq!(
            decode_frame(&dns, lo_meta()).not_dhcp(),
            Some("UDP, not a DHCP port")
        );
        let mut arp = vec![0xff; 6];
        arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend([0; 20]);
        assert_eq!(decode_frame(&arp, lo_meta()).not_dhcp(), Some("not IP"));
        // DHCP that fails to decode is malformed DHCP, not "not DHCP".
        let short = frame(&Framing::default(), &request()[..100]);
        let packet = decode_frame(&short, lo_meta());
        assert!(packet.is_malformed());
        assert_eq!(packet.not_dhcp(), None);
        assert_eq!(
            decode_frame(&frame(&Framing::default(), &request()), lo_meta()).not_dhcp(),
            None
        );
    }

    #[test]
    fn truncated_frames_are_malformed_at_the_right_layer() {
        let full = frame(&Framing::default(), &request());
        let at_ip = decode_frame(&full[..30], lo_meta());
        assert!(
            matches!(
                at_ip.body,
                Body::Malformed {
                    layer: Layer::Link,
                    ..
                }
            ),
            "{at_ip:?}"
        );
        // Cut inside the DHCP payload, with the UDP/IP lengths fixed up to match.
        let short = frame(&Framing::default(), &request()[..200]);
        let at_dhcp = decode_frame(&short, lo_meta());
        assert_eq!(
            at_dhcp.body,
            Body::Malformed {
                layer: Layer::Dhcpv4,
                reason: Dhcpv4Error::TooShort(200).to_string()
            }
        );
    }

    #[test]
    fn every_prefix_of_a_frame_decodes_without_panic() {
        let full = frame(
            &Framing {
                vlans: vec![1, 2],
                ..Framing::default()
            },
            &request(),
        );
        for len in 0..full.len() {
            let packet = decode_frame(&full[..len], lo_meta());
            assert!(
                packet.is_malformed(),
                "prefix of {len} bytes decoded as valid"
            );
        }
    }

    /// Found by `tests/malformed.rs`: etherparse takes a UDP length of 0 to mean "the rest of
    /// the IP payload", so this frame decoded as the DISCOVER behind it.
    #[test]
    fn regression_udp_length_zero_over_ipv4_is_malformed() {
        let mut zero = frame(&Framing::default(), &request());
        zero[14 + 20 + 4..14 + 20 + 6].fill(0);
        let packet = decode_frame(&zero, lo_meta());
        assert!(
            matches!(
                packet.body,
                Body::Malformed {
                    layer: Layer::Udp,
                    ..
                }
            ),
            "{packet:?}"
        );
    }

    #[test]
    fn non_dhcp_ports_are_reported_not_guessed() {
        let dns = frames::ipv4_udp(
            &Framing::default(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            (5353, 53),
            &[0; 20],
        )
        .unwrap();
        let packet = decode_frame(&dns, lo_meta());
        assert!(matches!(
            packet.body,
            Body::Malformed {
                layer: Layer::Udp,
                ..
            }
        ));
    }

    #[test]
    fn decodes_dhcpv6() {
        let solicit = frames::dhcpv6_solicit(0x123456, &[0, 1, 2]);
        let v6 = frames::ipv6_udp(
            &Framing::default(),
            "fe80::1".parse().unwrap(),
            "ff02::1:2".parse().unwrap(),
            (546, 547),
            &solicit,
        )
        .unwrap();
        let packet = decode_frame(&v6, lo_meta());
        assert_eq!(
            packet.body,
            Body::V6(Dhcpv6Info {
                message_type: "SOLICIT",
                code: 1,
                xid: 0x123456,
                client_duid: Some(vec![0, 1, 2]),
                ..Dhcpv6Info::default()
            })
        );
    }
}
