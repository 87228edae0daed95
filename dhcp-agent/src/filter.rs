//! Packet filters of `watch` and `analyze`: by client MAC, address, transaction id, message
//! type, interface and VLAN.
use std::net::IpAddr;

use dhcp_wire::{Body, Packet};

pub use dhcp_wire::parse_mac;

/// A message type name, DHCPv4 (`release`, `DHCPACK`) or DHCPv6 (`solicit`, `relay-forw`).
pub fn parse_type(text: &str) -> Result<String, String> {
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("DHCP").unwrap_or(&upper).to_owned();
    let v4 = dhcp_wire::MessageType::parse_name(&bare).is_some() || bare == "BOOTP";
    let v6 = (1..=13).any(|code| dhcp_wire::dhcpv6::message_type_name(code) == bare);
    if v4 || v6 {
        Ok(bare)
    } else {
        Err(format!("unknown DHCP message type {text:?}"))
    }
}

/// A transaction id: `0x1a2b3c4d` or decimal.
pub fn parse_xid(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a transaction id (want 0x1a2b3c4d or decimal)"))
}

/// The filter options, shared by `watch` and `analyze`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only packets whose client hardware address or Ethernet source/destination is MAC.
    #[arg(long = "mac", value_name = "MAC", value_parser = parse_mac)]
    pub macs: Vec<[u8; 6]>,
    /// Only packets that carry IP in any address field or option 50/54.
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// Only these transaction ids (0x1a2b3c4d or decimal).
    #[arg(long = "xid", value_name = "XID", value_parser = parse_xid)]
    pub xids: Vec<u32>,
    /// Only these message types (repeatable): discover, offer, request, ack, nak, release, ...
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
    pub types: Vec<String>,
    /// Only packets with this VLAN id (outer or inner tag).
    #[arg(long = "vlan", value_name = "ID")]
    pub vlans: Vec<u16>,
}

/// All filters; a packet passes when it matches every filter that is set (each filter matches
/// when any of its values does).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub macs: Vec<[u8; 6]>,
    pub ips: Vec<IpAddr>,
    pub xids: Vec<u32>,
    pub types: Vec<String>,
    pub vlans: Vec<u16>,
    pub interfaces: Vec<String>,
}

impl Filter {
    pub fn new(args: &FilterArgs) -> Filter {
        Filter {
            macs: args.macs.clone(),
            ips: args.ips.clone(),
            xids: args.xids.clone(),
            types: args.types.clone(),
            vlans: args.vlans.clone(),
            interfaces: Vec::new(),
        }
    }

    pub fn matches(&self, packet: &Packet) -> bool {
        self.matches_mac(packet)
            && self.matches_ip(packet)
            && self.matches_type(packet)
            && self.matches_xid(packet)
            && (self.vlans.is_empty()
                || [packet.meta.vlan, packet.meta.vlan_inner]
                    .into_iter()
                    .flatten()
                    .any(|v| self.vlans.contains(&v)))
            && (self.interfaces.is_empty() || self.interfaces.contains(&packet.meta.interface))
    }

    fn matches_xid(&self, packet: &Packet) -> bool {
        if self.xids.is_empty() {
            return true;
        }
        let xid = match &packet.body {
            Body::V4(m) => m.xid,
            Body::V6(m) => m.xid,
            Body::Malformed { .. } => return false,
        };
        self.xids.contains(&xid)
    }

    fn matches_mac(&self, packet: &Packet) -> bool {
        if self.macs.is_empty() {
            return true;
        }
        let chaddr = packet
            .dhcpv4()
            .and_then(|m| <[u8; 6]>::try_from(m.chaddr.as_slice()).ok());
        [chaddr, packet.src_mac, packet.dst_mac]
            .into_iter()
            .flatten()
            .any(|mac| self.macs.contains(&mac))
    }

    fn matches_ip(&self, packet: &Packet) -> bool {
        if self.ips.is_empty() {
            return true;
        }
        let mut candidates = vec![packet.src_ip, packet.dst_ip];
        if let Some(m) = packet.dhcpv4() {
            candidates
                .extend([m.ciaddr, m.yiaddr, m.siaddr, m.giaddr].map(|a| Some(IpAddr::V4(a))));
            candidates.extend([m.server_id, m.requested_ip].map(|a| a.map(IpAddr::V4)));
        }
        candidates
            .into_iter()
            .flatten()
            .any(|ip| self.ips.contains(&ip))
    }

    fn matches_type(&self, packet: &Packet) -> bool {
        if self.types.is_empty() {
            return true;
        }
        let name = match &packet.body {
            Body::V4(m) => m.type_name(),
            Body::V6(m) => m.message_type,
            Body::Malformed { .. } => return false,
        };
        self.types.iter().any(|t| t == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs_and_types() {
        assert_eq!(parse_mac("52:54:00:01:02:03"), Ok([0x52, 0x54, 0, 1, 2, 3]));
        assert_eq!(parse_mac("52-54-00-01-02-03"), Ok([0x52, 0x54, 0, 1, 2, 3]));
        assert!(parse_mac("52:54:00:01:02").is_err());
        assert!(parse_mac("52:54:00:01:02:zz").is_err());
        assert_eq!(parse_type("dhcprelease"), Ok("RELEASE".into()));
        assert_eq!(parse_type("solicit"), Ok("SOLICIT".into()));
        assert!(parse_type("hello").is_err());
    }

    #[test]
    fn filters_match_on_any_field_and_all_filters() {
        let packet = dhcp_wire::test_support::release_packet();
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let pass = |f: Filter| f.matches(&packet);
        assert!(pass(Filter::default()));
        assert!(pass(Filter {
            macs: vec![mac],
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            macs: vec![[9; 6]],
            ..Filter::default()
        }));
        assert!(
            pass(Filter {
                ips: vec![ip("172.29.101.150")],
                ..Filter::default()
            }),
            "ciaddr"
        );
        assert!(
            pass(Filter {
                ips: vec![ip("172.29.101.245")],
                ..Filter::default()
            }),
            "option 54"
        );
        assert!(!pass(Filter {
            ips: vec![ip("10.0.0.1")],
            ..Filter::default()
        }));
        assert!(pass(Filter {
            types: vec!["DISCOVER".into(), "RELEASE".into()],
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            types: vec!["ACK".into()],
            ..Filter::default()
        }));
        assert!(
            !pass(Filter {
                macs: vec![mac],
                types: vec!["ACK".into()],
                ..Filter::default()
            }),
            "all filters must match"
        );
        assert!(pass(Filter {
            xids: vec![1],
            interfaces: vec!["lo".into()],
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            xids: vec![2],
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            interfaces: vec!["guest0".into()],
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            vlans: vec![100],
            ..Filter::default()
        }));
        let mut tagged = packet.clone();
        tagged.meta.vlan_inner = Some(100);
        assert!(
            Filter {
                vlans: vec![100],
                ..Filter::default()
            }
            .matches(&tagged)
        );
        assert_eq!(parse_xid("0x1A2b3c4d"), Ok(0x1a2b_3c4d));
        assert_eq!(parse_xid("42"), Ok(42));
        assert!(parse_xid("0xzz").is_err());
    }
}
