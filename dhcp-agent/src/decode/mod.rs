//! Decoding of captured frames: L2-L4 with etherparse, then DHCPv4 (our strict reader) or
//! DHCPv6 (dhcproto). A frame that does not decode becomes a [`Body::Malformed`] with the reason;
//! nothing here panics on any input.
pub mod dhcpv4;
pub mod dhcpv6;

use std::net::{IpAddr, Ipv4Addr};

use dhcp_common::Hook;
use etherparse::{LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

pub use dhcpv4::{Dhcpv4, Dhcpv4Error, MessageType};
pub use dhcpv6::Dhcpv6Info;

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

    pub fn dhcpv4(&self) -> Option<&Dhcpv4Info> {
        match &self.body {
            Body::V4(info) => Some(info),
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
            Err(reason) => Body::Malformed {
                layer: Layer::Dhcpv6,
                reason,
            },
        },
        _ => Body::Malformed {
            layer: Layer::Udp,
            reason: format!("UDP {src_port}->{dst_port} is not a DHCP port pair"),
        },
    };
    packet
}

/// Formats bytes as colon-separated hex (MACs, client ids, DUIDs).
pub fn hex_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}
