//! Strict, allocation-free DHCPv4 (RFC 2131/2132) message reader.
//!
//! Why not `dhcproto`'s decoder here: it stops reading options silently at the first one it
//! cannot parse (a hostname that is not UTF-8, a length past the end) and does not check the
//! magic cookie, so a hostile or sloppy client could hide option 54 and we would never know. The
//! observer must say *why* a packet is malformed, so the wire walk is ours; `dhcproto` builds the
//! messages we send and cross-checks this reader in the tests.
use std::net::Ipv4Addr;

use thiserror::Error;

/// Length of the fixed BOOTP header, up to and including `file`.
pub const FIXED_HEADER_LEN: usize = 236;
/// RFC 2131 magic cookie in front of the options.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

pub mod option {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const HOSTNAME: u8 = 12;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const MESSAGE: u8 = 56;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// Why a DHCPv4 payload is not a well-formed message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Dhcpv4Error {
    #[error("payload of {0} bytes is shorter than the 240-byte BOOTP header and cookie")]
    TooShort(usize),
    #[error("bad op code {0} (expected 1 BOOTREQUEST or 2 BOOTREPLY)")]
    BadOp(u8),
    #[error("missing magic cookie (found {0:02x?})")]
    MissingCookie([u8; 4]),
    #[error("option {code} at offset {offset}: length {len} runs past the end of its area")]
    OptionPastEnd { code: u8, offset: usize, len: usize },
    #[error("option {code}: length {len} is invalid for it")]
    BadOptionLength { code: u8, len: usize },
    #[error("message type {0} is not a DHCP message type")]
    BadMessageType(u8),
}

/// DHCPv4 message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    /// Types 9 and up (FORCERENEW, lease query, ...): kept by number.
    Other(u8),
}

impl MessageType {
    pub fn from_code(code: u8) -> Option<MessageType> {
        Some(match code {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            9..=18 => MessageType::Other(code),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DISCOVER",
            MessageType::Offer => "OFFER",
            MessageType::Request => "REQUEST",
            MessageType::Decline => "DECLINE",
            MessageType::Ack => "ACK",
            MessageType::Nak => "NAK",
            MessageType::Release => "RELEASE",
            MessageType::Inform => "INFORM",
            MessageType::Other(9) => "FORCERENEW",
            MessageType::Other(10) => "LEASEQUERY",
            MessageType::Other(11) => "LEASEUNASSIGNED",
            MessageType::Other(12) => "LEASEUNKNOWN",
            MessageType::Other(13) => "LEASEACTIVE",
            MessageType::Other(_) => "OTHER",
        }
    }

    /// Parses a user-supplied name: `release`, `DHCPRELEASE`, `Release` all work.
    pub fn parse_name(name: &str) -> Option<MessageType> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("DHCP").unwrap_or(&upper);
        (1..=13)
            .filter_map(MessageType::from_code)
            .find(|t| t.name() == bare)
    }
}

/// The fields of a DHCPv4 message the observer reports, borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv4<'a> {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// `chaddr` limited to `hlen` (at most 16) bytes.
    pub chaddr: &'a [u8],
    /// `None` for plain BOOTP (no option 53).
    pub message_type: Option<MessageType>,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    /// Option 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Raw option 12 bytes; may be any bytes on the wire.
    pub hostname: Option<&'a [u8]>,
    /// Raw option 61 bytes (type byte first).
    pub client_id: Option<&'a [u8]>,
    /// Raw option 56 bytes (NAK reason text, usually).
    pub message: Option<&'a [u8]>,
}

impl<'a> Dhcpv4<'a> {
    /// The client's hardware address when it is an Ethernet MAC.
    pub fn mac(&self) -> Option<[u8; 6]> {
        (self.htype == 1 && self.hlen == 6).then(|| self.chaddr.try_into().ok())?
    }

    /// Reads a DHCPv4 message from a UDP payload.
    pub fn parse(payload: &'a [u8]) -> Result<Dhcpv4<'a>, Dhcpv4Error> {
        if payload.len() < FIXED_HEADER_LEN + 4 {
            return Err(Dhcpv4Error::TooShort(payload.len()));
        }
        let ip = |at: usize| {
            Ipv4Addr::new(
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            )
        };
        let op = payload[0];
        if op != 1 && op != 2 {
            return Err(Dhcpv4Error::BadOp(op));
        }
        let cookie: [u8; 4] = payload[236..240].try_into().expect("4 bytes");
        if cookie != MAGIC_COOKIE {
            return Err(Dhcpv4Error::MissingCookie(cookie));
        }
        let hlen = payload[2];
        let mut msg = Dhcpv4 {
            op,
            htype: payload[1],
            hlen,
            xid: u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes")),
            flags: u16::from_be_bytes([payload[10], payload[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr: &payload[28..28 + usize::from(hlen.min(16))],
            message_type: None,
            server_id: None,
            requested_ip: None,
            lease_time: None,
            subnet_mask: None,
            hostname: None,
            client_id: None,
            message: None,
        };
        let overload = msg.read_options(&payload[240..])?;
        // RFC 2132 option 52: options continue in `file` (bit 0) and then `sname` (bit 1).
        if overload & 1 != 0 {
            msg.read_options(&payload[108..236])?;
        }
        if overload & 2 != 0 {
            msg.read_options(&payload[44..108])?;
        }
        Ok(msg)
    }

    /// Walks one option area; returns the option-overload value found in it (0 if none).
    /// The first occurrence of an option wins, as in dnsmasq.
    fn read_options(&mut self, area: &'a [u8]) -> Result<u8, Dhcpv4Error> {
        let mut overload = 0;
        let mut at = 0;
        while at < area.len() {
            let code = area[at];
            match code {
                option::PAD => {
                    at += 1;
                    continue;
                }
                option::END => break,
                _ => {}
            }
            let Some(&len) = area.get(at + 1) else {
                return Err(Dhcpv4Error::OptionPastEnd {
                    code,
                    offset: at,
                    len: 0,
                });
            };
            let len = usize::from(len);
            let Some(value) = area.get(at + 2..at + 2 + len) else {
                return Err(Dhcpv4Error::OptionPastEnd {
                    code,
                    offset: at,
                    len,
                });
            };
            let exact = |want: usize| {
                if len == want {
                    Ok(())
                } else {
                    Err(Dhcpv4Error::BadOptionLength { code, len })
                }
            };
            let addr = || Ipv4Addr::new(value[0], value[1], value[2], value[3]);
            match code {
                option::MESSAGE_TYPE if self.message_type.is_none() => {
                    exact(1)?;
                    self.message_type = Some(
                        MessageType::from_code(value[0])
                            .ok_or(Dhcpv4Error::BadMessageType(value[0]))?,
                    );
                }
                option::SERVER_ID if self.server_id.is_none() => {
                    exact(4)?;
                    self.server_id = Some(addr());
                }
                option::REQUESTED_IP if self.requested_ip.is_none() => {
                    exact(4)?;
                    self.requested_ip = Some(addr());
                }
                option::LEASE_TIME if self.lease_time.is_none() => {
                    exact(4)?;
                    self.lease_time =
                        Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
                }
                option::SUBNET_MASK if self.subnet_mask.is_none() => {
                    exact(4)?;
                    self.subnet_mask = Some(addr());
                }
                option::OVERLOAD => {
                    exact(1)?;
                    overload = value[0];
                }
                option::HOSTNAME if self.hostname.is_none() => self.hostname = Some(value),
                option::CLIENT_ID if self.client_id.is_none() => self.client_id = Some(value),
                option::MESSAGE if self.message.is_none() => self.message = Some(value),
                _ => {}
            }
            at += 2 + len;
        }
        Ok(overload)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use dhcp_lab::frames::Dhcpv4Spec;
    use dhcproto::{Decodable as _, Decoder, v4};

    use super::*;

    fn release() -> Vec<u8> {
        let mut spec = Dhcpv4Spec::new(
            v4::MessageType::Release,
            0x1234_5678,
            [0x52, 0x54, 0, 1, 2, 3],
        );
        spec.ciaddr = Ipv4Addr::new(172, 29, 101, 150);
        spec.server_id = Some(Ipv4Addr::new(172, 29, 101, 245));
        spec.hostname = Some("vm-1".into());
        spec.encode()
    }

    /// Replaces the options area (after the cookie) with `options`.
    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut payload = release()[..240].to_vec();
        payload.extend_from_slice(options);
        payload
    }

    #[test]
    fn reads_what_dhcproto_wrote() {
        let payload = release();
        let msg = Dhcpv4::parse(&payload).unwrap();
        let reference = v4::Message::decode(&mut Decoder::new(&payload)).unwrap();
        assert_eq!(msg.xid, reference.xid());
        assert_eq!(msg.ciaddr, reference.ciaddr());
        assert_eq!(msg.chaddr, &reference.chaddr()[..6]);
        assert_eq!(msg.mac(), Some([0x52, 0x54, 0, 1, 2, 3]));
        assert_eq!(msg.message_type, Some(MessageType::Release));
        assert_eq!(msg.server_id, Some(Ipv4Addr::new(172, 29, 101, 245)));
        assert_eq!(msg.hostname, Some(&b"vm-1"[..]));
        assert_eq!(msg.requested_ip, None);
    }

    #[test]
    fn keeps_option_54_after_a_hostname_that_is_not_utf8() {
        // dhcproto stops at the bad hostname and loses option 54; we must not.
        let payload = with_options(&[53, 1, 7, 12, 2, 0xff, 0xfe, 54, 4, 10, 0, 0, 1, 255]);
        let msg = Dhcpv4::parse(&payload).unwrap();
        assert_eq!(msg.server_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(msg.hostname, Some(&[0xff, 0xfe][..]));
        let reference = v4::Message::decode(&mut Decoder::new(&payload)).unwrap();
        assert!(
            reference
                .opts()
                .get(v4::OptionCode::ServerIdentifier)
                .is_none()
        );
    }

    #[test]
    fn reads_overloaded_file_and_sname_areas() {
        let mut payload = with_options(&[53, 1, 7, 52, 1, 3, 255]);
        payload[108..114].copy_from_slice(&[54, 4, 10, 0, 0, 9]); // option 54 in `file`
        payload[114] = 255;
        payload[44..51].copy_from_slice(&[50, 4, 10, 0, 0, 7, 255]); // option 50 in `sname`
        let msg = Dhcpv4::parse(&payload).unwrap();
        assert_eq!(msg.server_id, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(msg.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 7)));
    }

    #[test]
    fn first_occurrence_of_an_option_wins() {
        let payload = with_options(&[53, 1, 7, 54, 4, 1, 1, 1, 1, 54, 4, 2, 2, 2, 2, 255]);
        assert_eq!(
            Dhcpv4::parse(&payload).unwrap().server_id,
            Some(Ipv4Addr::new(1, 1, 1, 1))
        );
    }

    #[test]
    fn options_end_at_the_end_of_the_payload_without_an_end_option() {
        let payload = with_options(&[53, 1, 1]);
        assert_eq!(
            Dhcpv4::parse(&payload).unwrap().message_type,
            Some(MessageType::Discover)
        );
    }

    #[test]
    fn bootp_without_message_type_is_not_an_error() {
        let payload = with_options(&[255]);
        assert_eq!(Dhcpv4::parse(&payload).unwrap().message_type, None);
    }

    #[test]
    fn malformed_messages_say_why() {
        let cases: Vec<(Vec<u8>, Dhcpv4Error)> = vec![
            (vec![1; 100], Dhcpv4Error::TooShort(100)),
            (
                {
                    let mut p = release();
                    p[0] = 3;
                    p
                },
                Dhcpv4Error::BadOp(3),
            ),
            (
                {
                    let mut p = release();
                    p[236..240].copy_from_slice(&[1, 2, 3, 4]);
                    p
                },
                Dhcpv4Error::MissingCookie([1, 2, 3, 4]),
            ),
            (
                with_options(&[53, 1, 7, 54, 40, 1, 2]),
                Dhcpv4Error::OptionPastEnd {
                    code: 54,
                    offset: 3,
                    len: 40,
                },
            ),
            (
                with_options(&[53]),
                Dhcpv4Error::OptionPastEnd {
                    code: 53,
                    offset: 0,
                    len: 0,
                },
            ),
            (
                with_options(&[53, 1, 7, 54, 3, 1, 2, 3, 255]),
                Dhcpv4Error::BadOptionLength { code: 54, len: 3 },
            ),
            (
                with_options(&[53, 2, 7, 7, 255]),
                Dhcpv4Error::BadOptionLength { code: 53, len: 2 },
            ),
            (
                with_options(&[53, 1, 0, 255]),
                Dhcpv4Error::BadMessageType(0),
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(Dhcpv4::parse(&payload), Err(expected));
        }
    }

    #[test]
    fn garbage_in_an_overloaded_area_is_malformed() {
        let mut payload = with_options(&[53, 1, 7, 52, 1, 1, 255]);
        // `file` holds options 0x41 of length 0x41: the second one runs past the area's end.
        payload[108..236].fill(0x41);
        let expected = Dhcpv4Error::OptionPastEnd {
            code: 0x41,
            offset: 67,
            len: 0x41,
        };
        assert_eq!(Dhcpv4::parse(&payload), Err(expected));
    }

    #[test]
    fn parses_type_names_like_people_write_them() {
        for (text, ty) in [
            ("release", MessageType::Release),
            ("DHCPACK", MessageType::Ack),
            ("Nak", MessageType::Nak),
        ] {
            assert_eq!(MessageType::parse_name(text), Some(ty));
        }
        assert_eq!(MessageType::parse_name("bogus"), None);
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let payload = release();
        for len in 0..payload.len() {
            let _ = Dhcpv4::parse(&payload[..len]);
        }
        for at in 0..payload.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut bad = payload.clone();
                bad[at] = value;
                let _ = Dhcpv4::parse(&bad);
            }
        }
    }
}
