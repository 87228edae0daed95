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
