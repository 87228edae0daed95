//! Rendering decoded packets: one dense line per packet for people, JSON lines for machines.
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use dhcp_wire::{Body, Packet, hex_colon};

/// The JSON record of one packet. Field names are part of the interface: keep them stable.
#[derive(Debug, Serialize)]
pub struct PacketRecord<'a> {
    /// RFC 3339 UTC time of capture.
    pub time: String,
    pub interface: &'a str,
    pub ifindex: u32,
    pub hook: &'static str,
    pub direction: &'static str,
    /// `dhcpv4`, `dhcpv6` or `malformed`.
    pub protocol: &'static str,
    pub message_type: Option<&'a str>,
    /// Transaction id as `0x` + 8 hex digits.
    pub xid: Option<String>,
    pub chaddr: Option<String>,
    pub ciaddr: Option<Ipv4Addr>,
    pub yiaddr: Option<Ipv4Addr>,
    pub siaddr: Option<Ipv4Addr>,
    pub giaddr: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 51, seconds.
    pub lease_time: Option<u32>,
    /// Option 12.
    pub hostname: Option<&'a str>,
    /// Option 61 (DHCPv4) or the client DUID (DHCPv6), hex.
    pub client_id: Option<String>,
    /// Option 56 (NAK reason).
    pub message: Option<&'a str>,
    pub broadcast: Option<bool>,
    pub vlan: Option<u16>,
    pub vlan_inner: Option<u16>,
    pub src_mac: Option<String>,
    pub dst_mac: Option<String>,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub wire_len: u32,
    pub truncated: bool,
    /// Why the packet did not decode, for malformed packets.
    pub malformed: Option<String>,
}

impl<'a> PacketRecord<'a> {
    pub fn new(packet: &'a Packet) -> PacketRecord<'a> {
        let meta = &packet.meta;
        let mut record = PacketRecord {
            time: rfc3339(meta.unix_ns),
            interface: &meta.interface,
            ifindex: meta.ifindex,
            hook: meta.hook.name(),
            direction: meta.direction(),
            protocol: "malformed",
            message_type: None,
            xid: None,
            chaddr: None,
            ciaddr: None,
            yiaddr: None,
            siaddr: None,
            giaddr: None,
            server_id: None,
            requested_ip: None,
            lease_time: None,
            hostname: None,
            client_id: None,
            message: None,
            broadcast: None,
            vlan: meta.vlan,
            vlan_inner: meta.vlan_inner,
            src_mac: packet.src_mac.map(|m| hex_colon(&m)),
            dst_mac: packet.dst_mac.map(|m| hex_colon(&m)),
            src_ip: packet.src_ip,
            dst_ip: packet.dst_ip,
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            wire_len: meta.wire_len,
            truncated: meta.truncated,
            malformed: None,
        };
        match &packet.body {
            Body::V4(m) => {
                record.protocol = "dhcpv4";
                record.message_type = Some(m.type_name());
                record.xid = Some(format!("0x{:08x}", m.xid));
                record.chaddr = Some(hex_colon(&m.chaddr));
                record.ciaddr = Some(m.ciaddr);
                record.yiaddr = Some(m.yiaddr);
                record.siaddr = Some(m.siaddr);
                record.giaddr = Some(m.giaddr);
                record.server_id = m.server_id;
                record.requested_ip = m.requested_ip;
                record.lease_time = m.lease_time;
                record.hostname = m.hostname.as_deref();
                record.client_id = m.client_id.as_deref().map(hex_colon);
                record.message = m.message.as_deref();
                record.broadcast = Some(m.broadcast);
            }
            Body::V6(m) => {
                record.protocol = "dhcpv6";
                record.message_type = Some(m.message_type);
                record.xid = Some(format!("0x{:06x}", m.xid));
                record.client_id = m.client_duid.as_deref().map(hex_colon);
            }
            Body::Malformed { layer, reason } => {
                record.malformed = Some(format!("{}: {reason}", layer.name()));
            }
        }
        record
    }
}

/// RFC 3339 UTC with microseconds, the time format of every JSON record and event.
pub fn rfc3339(unix_ns: i128) -> String {
    jiff::Timestamp::from_nanosecond(unix_ns)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_default()
}

/// One JSON line.
pub fn json_line(packet: &Packet) -> String {
    serde_json::to_string(&PacketRecord::new(packet)).expect("a PacketRecord always serializes")
}

pub fn local_time(unix_ns: i128) -> String {
    let Ok(ts) = jiff::Timestamp::from_nanosecond(unix_ns) else {
        return "??:??:??.??????".into();
    };
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%H:%M:%S%.6f")
        .to_string()
}

/// One dense line, dhcpdump's content on a single row:
/// `time iface dir TYPE xid chaddr ciaddr yiaddr sid= req= lease= host= cid= vlan=`.
/// Fixed columns first, then only the options that are present.
pub fn text_line(packet: &Packet) -> String {
    use std::fmt::Write as _;
    let meta = &packet.meta;
    let mut line = format!(
        "{} {:<10} {:<3}",
        local_time(meta.unix_ns),
        meta.interface,
        meta.direction()
    );
    // `write!` into a String cannot fail.
    match &packet.body {
        Body::V4(m) => {
            let _ = write!(
                line,
                " {:<9} 0x{:08x} {:<17} ci={:<15} yi={:<15}",
                m.type_name(),
                m.xid,
                hex_colon(&m.chaddr),
                m.ciaddr,
                m.yiaddr
            );
            if let Some(v) = m.server_id {
                let _ = write!(line, " sid={v}");
            }
            if let Some(v) = m.requested_ip {
                let _ = write!(line, " req={v}");
            }
            match m.lease_time {
                Some(u32::MAX) => line.push_str(" lease=infinite"),
                Some(v) => {
                    let _ = write!(line, " lease={v}s");
                }
                None => {}
            }
            if let Some(v) = &m.hostname {
                let _ = write!(line, " host={v:?}");
            }
            if let Some(v) = &m.client_id {
                let _ = write!(line, " cid={}", hex_colon(v));
            }
            if let Some(v) = &m.message {
                let _ = write!(line, " msg={v:?}");
            }
        }
        Body::V6(m) => {
            let _ = write!(line, " {:<9} 0x{:06x}", m.message_type, m.xid);
            if let Some(duid) = &m.client_duid {
                let _ = write!(line, " duid={}", hex_colon(duid));
            }
        }
        Body::Malformed { layer, reason } => {
            let _ = write!(line, " MALFORMED ({}) {reason}", layer.name());
        }
    }
    if let Some(vlan) = meta.vlan {
        let _ = write!(line, " vlan={vlan}");
        if let Some(inner) = meta.vlan_inner {
            let _ = write!(line, ".{inner}");
        }
    }
    if meta.truncated {
        let _ = write!(line, " truncated(wire={})", meta.wire_len);
    }
    line
}

/// `--color`: colour when stdout is a terminal (and `NO_COLOR` is not set), always, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        }
    }
}

const RESET: &str = "\x1b[0m";

/// The colour of a packet's line: requests cyan, grants green, refusals red, releases yellow,
/// anything flagged bold red.
fn colour_of(packet: &Packet, flagged: bool) -> &'static str {
    if flagged {
        return "\x1b[1;31m";
    }
    let name = match &packet.body {
        Body::V4(m) => m.type_name(),
        Body::V6(m) => m.message_type,
        Body::Malformed { .. } => return "\x1b[2;31m",
    };
    match name {
        "DISCOVER"
        | "REQUEST"
        | "SOLICIT"
        | "RENEW"
        | "REBIND"
        | "CONFIRM"
        | "INFORM"
        | "INFORMATION-REQUEST" => "\x1b[36m",
        "OFFER" | "ACK" | "ADVERTISE" | "REPLY" => "\x1b[32m",
        "NAK" | "DECLINE" => "\x1b[31m",
        "RELEASE" => "\x1b[33m",
        _ => "",
    }
}

/// A packet's text line, marked when flagged (`flag` says why), coloured when asked to.
pub fn styled_line(packet: &Packet, flag: Option<&str>, color: bool) -> String {
    let mut line = text_line(packet);
    if let Some(flag) = flag {
        line.push_str("  <<< ");
        line.push_str(flag);
    }
    let colour = colour_of(packet, flag.is_some());
    if color && !colour.is_empty() {
        format!("{colour}{line}{RESET}")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
    use dhcp_wire::{decode_frame, test_support::lo_meta};
    use dhcproto::v4;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Neither rendering panics, and each is one line whatever the frame carries: a hostile
        /// hostname (option 12 with a newline) must not forge log lines. Random frames, and
        /// DHCP frames with random hostnames and random bytes after the options.
        #[test]
        fn renderings_stay_on_one_line(
            raw in proptest::collection::vec(any::<u8>(), 0..600),
            host in "[\\PC\n\r\u{1b}]{0,40}",
            tail in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut spec = Dhcpv4Spec::new(v4::MessageType::Request, 7, [2, 0, 0, 0, 0, 1]);
            spec.hostname = Some(host);
            let mut payload = spec.encode();
            payload.extend(tail);
            let dhcp = frames::ipv4_udp(
                &Framing::default(),
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                (68, 67),
                &payload,
            )
            .unwrap();
            for frame in [raw, dhcp] {
                let packet = decode_frame(&frame, lo_meta());
                let json = json_line(&packet);
                prop_assert!(!json.contains('\n'), "JSON record spans lines: {}", json);
                let text = text_line(&packet);
                prop_assert!(!text.contains(['\n', '\r']), "text line spans lines: {:?}", text);
            }
        }
    }

    #[test]
    fn flagged_lines_are_marked_and_colour_is_optional() {
        let packet = dhcp_wire::test_support::release_packet();
        let plain = styled_line(&packet, Some("server id mismatch"), false);
        assert!(plain.ends_with("  <<< server id mismatch") && !plain.contains('\x1b'));
        let coloured = styled_line(&packet, Some("server id mismatch"), true);
        assert!(coloured.starts_with("\x1b[1;31m") && coloured.ends_with(RESET));
        assert!(
            styled_line(&packet, None, true).starts_with("\x1b[33m"),
            "a RELEASE is yellow"
        );
        assert_eq!(styled_line(&packet, None, false), text_line(&packet));
    }

    #[test]
    fn output_carries_every_field() {
        let packet = dhcp_wire::test_support::release_packet();
        let json: serde_json::Value = serde_json::from_str(&json_line(&packet)).unwrap();
        assert_eq!(json["message_type"], "RELEASE");
        assert_eq!(json["server_id"], "172.29.101.245");
        assert_eq!(json["ciaddr"], "172.29.101.150");
        assert_eq!(json["chaddr"], "52:54:00:01:02:03");
        assert_eq!(json["xid"], "0x00000001");
        assert_eq!(json["time"], "1970-01-01T00:00:00.000000Z");
        for key in [
            "requested_ip",
            "lease_time",
            "hostname",
            "client_id",
            "vlan",
            "yiaddr",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        let line = text_line(&packet);
        for part in [
            "lo",
            "in",
            "RELEASE",
            "0x00000001",
            "52:54:00:01:02:03",
            "ci=172.29.101.150",
            "sid=172.29.101.245",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }
}
