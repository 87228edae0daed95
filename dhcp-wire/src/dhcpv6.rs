//! DHCPv6 (RFC 8415): enough to count, show and correlate it: the message type, the transaction
//! id, the client's and the server's DUIDs (options 1 and 2), the status code (13) and the
//! identity associations (IA_NA 3, IA_TA 4) with their addresses (IAADDR 5) and statuses, from a
//! strict walk of the message's option framing.
//!
//! Why not `dhcproto`'s decoder (it builds the messages the tests send): on hostile input it
//! computes option lengths with unchecked subtractions. A vendor-class option (16) shorter than
//! its 4-byte enterprise number makes it evaluate `len - 4`, which panics in any build with
//! overflow checks (the tests', the fuzzer's) and wraps in a release build; status code (13),
//! vendor options (17) and authentication (11) do the same, at any depth. The `decode_frame`
//! fuzz target found it within seconds. Like the DHCPv4 reader, the wire walk is ours and every
//! error says where the message breaks.
use std::net::Ipv6Addr;

use thiserror::Error;

/// What the observer shows and correlates of a DHCPv6 message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dhcpv6Info {
    pub message_type: &'static str,
    /// The message type's code (1 SOLICIT .. 13 RELAY-REPL).
    pub code: u8,
    /// 24-bit transaction id (0 for relay messages, which have none).
    pub xid: u32,
    /// DUID of the client (option 1), when present.
    pub client_duid: Option<Vec<u8>>,
    /// DUID of the server (option 2), when present.
    pub server_duid: Option<Vec<u8>>,
    /// The message's own status code (option 13 at the top level), when present.
    pub status: Option<u16>,
    /// The identity associations (IA_NA, IA_TA), in message order.
    pub ias: Vec<Ia>,
}

/// One identity association of a message: its id, its addresses and its own status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ia {
    /// IA_TA (temporary addresses) rather than IA_NA.
    pub temporary: bool,
    pub iaid: u32,
    pub addresses: Vec<Ipv6Addr>,
    /// The status code inside the IA (or inside one of its addresses), e.g. NoBinding.
    pub status: Option<u16>,
}

/// Message type codes the correlation needs.
pub mod code {
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
}

/// Status codes (RFC 8415 section 21.13).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const UNSPEC_FAIL: u16 = 1;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
    pub const NOT_ON_LINK: u16 = 4;
    pub const USE_MULTICAST: u16 = 5;

    /// The status's name as RFC 8415 spells it.
    pub fn name(code: u16) -> &'static str {
        match code {
            SUCCESS => "Success",
            UNSPEC_FAIL => "UnspecFail",
            NO_ADDRS_AVAIL => "NoAddrsAvail",
            NO_BINDING => "NoBinding",
            NOT_ON_LINK => "NotOnLink",
            USE_MULTICAST => "UseMulticast",
            6 => "NoPrefixAvail",
            _ => "other",
        }
    }
}

/// Why a UDP payload is not a well-formed DHCPv6 message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Dhcpv6Error {
    #[error("payload of {len} bytes is shorter than the {header}-byte {kind} header")]
    TooShort {
        len: usize,
        header: usize,
        kind: &'static str,
    },
    #[error("option header at offset {offset} cut short: {left} bytes left of 4")]
    OptionHeaderCut { offset: usize, left: usize },
    #[error("option {code} at offset {offset}: length {len} runs past the end of the message")]
    OptionPastEnd {
        code: u16,
        offset: usize,
        len: usize,
    },
}

/// Client/server messages: type and a 3-byte transaction id.
const CLIENT_SERVER_HEADER: usize = 4;
/// Relay messages: type, hop count, link address and peer address.
const RELAY_HEADER: usize = 34;
const RELAY_FORW: u8 = 12;
const RELAY_REPL: u8 = 13;
const OPTION_CLIENT_ID: u16 = 1;
const OPTION_SERVER_ID: u16 = 2;
const OPTION_IA_NA: u16 = 3;
const OPTION_IA_TA: u16 = 4;
const OPTION_IAADDR: u16 = 5;
const OPTION_STATUS_CODE: u16 = 13;

/// Name of a DHCPv6 message type by its code.
pub fn message_type_name(code: u8) -> &'static str {
    match code {
        1 => "SOLICIT",
        2 => "ADVERTISE",
        3 => "REQUEST",
        4 => "CONFIRM",
        5 => "RENEW",
        6 => "REBIND",
        7 => "REPLY",
        8 => "RELEASE",
        9 => "DECLINE",
        10 => "RECONFIGURE",
        11 => "INFORMATION-REQUEST",
        12 => "RELAY-FORW",
        13 => "RELAY-REPL",
        _ => "OTHER",
    }
}

/// Reads a DHCPv6 message from a UDP payload.
pub fn parse(payload: &[u8]) -> Result<Dhcpv6Info, Dhcpv6Error> {
    let code = payload.first().copied();
    let (header, kind) = match code {
        Some(RELAY_FORW | RELAY_REPL) => (RELAY_HEADER, "relay"),
        _ => (CLIENT_SERVER_HEADER, "message"),
    };
    let (Some(code), Some(options)) = (code, payload.get(header..)) else {
        return Err(Dhcpv6Error::TooShort {
            len: payload.len(),
            header,
            kind,
        });
    };
    let top = walk(options, header)?;
    if header == RELAY_HEADER {
        // The client's own message travels inside option 9; the relay's has no id of its own.
        return Ok(Dhcpv6Info {
            message_type: message_type_name(code),
            code,
            ..Dhcpv6Info::default()
        });
    }
    let mut info = Dhcpv6Info {
        message_type: message_type_name(code),
        code,
        xid: u32::from_be_bytes([0, payload[1], payload[2], payload[3]]),
        ..Dhcpv6Info::default()
    };
    for (code, at, value) in top {
        let base = header + at + 4;
        match code {
            OPTION_CLIENT_ID if info.client_duid.is_none() => {
                info.client_duid = Some(value.to_vec())
            }
            OPTION_SERVER_ID if info.server_duid.is_none() => {
                info.server_duid = Some(value.to_vec())
            }
            OPTION_STATUS_CODE if info.status.is_none() => info.status = status_code(value),
            OPTION_IA_NA | OPTION_IA_TA => {
                if let Some(ia) = identity_association(code, value, base)? {
                    info.ias.push(ia);
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// An IA_NA (iaid, T1, T2, options) or IA_TA (iaid, options); one too short for its fixed part
/// is skipped (RFC 8415 section 16: such an option is ignored, not the message).
fn identity_association(code: u16, value: &[u8], base: usize) -> Result<Option<Ia>, Dhcpv6Error> {
    let temporary = code == OPTION_IA_TA;
    let fixed = if temporary { 4 } else { 12 };
    let (Some(iaid), Some(options)) = (value.get(..4), value.get(fixed..)) else {
        return Ok(None);
    };
    let mut ia = Ia {
        temporary,
        iaid: u32::from_be_bytes([iaid[0], iaid[1], iaid[2], iaid[3]]),
        addresses: Vec::new(),
        status: None,
    };
    for (code, at, value) in walk(options, base + fixed)? {
        match code {
            OPTION_IAADDR => {
                let Some(address) = value.get(..16) else {
                    continue;
                };
                let octets: [u8; 16] = address.try_into().unwrap_or([0; 16]);
                ia.addresses.push(Ipv6Addr::from(octets));
                // An address may carry its own status (after its two lifetimes).
                if let Some(inner) = value.get(24..) {
                    for (code, _, value) in walk(inner, base + fixed + at + 4 + 24)? {
                        if code == OPTION_STATUS_CODE && ia.status.is_none() {
                            ia.status = status_code(value);
                        }
                    }
                }
            }
            OPTION_STATUS_CODE if ia.status.is_none() => ia.status = status_code(value),
            _ => {}
        }
    }
    Ok(Some(ia))
}

/// A status code option's code (its message text is not kept).
fn status_code(value: &[u8]) -> Option<u16> {
    value.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// One option of an area: its code, its offset in the area and its value.
type RawOption<'a> = (u16, usize, &'a [u8]);

/// Walks an options area (at `base` in the payload, for the error offsets); every option must
/// fit.
fn walk(area: &[u8], base: usize) -> Result<Vec<RawOption<'_>>, Dhcpv6Error> {
    let mut options = Vec::new();
    let mut at = 0;
    while at < area.len() {
        let Some(&[c0, c1, l0, l1]) = area.get(at..at + 4) else {
            return Err(Dhcpv6Error::OptionHeaderCut {
                offset: base + at,
                left: area.len() - at,
            });
        };
        let (code, len) = (
            u16::from_be_bytes([c0, c1]),
            usize::from(u16::from_be_bytes([l0, l1])),
        );
        let Some(value) = area.get(at + 4..at + 4 + len) else {
            return Err(Dhcpv6Error::OptionPastEnd {
                code,
                offset: base + at,
                len,
            });
        };
        options.push((code, at, value));
        at += 4 + len;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_dhcproto_wrote() {
        let solicit = dhcp_lab::frames::dhcpv6_solicit(0x00ab_cdef, &[0, 3, 0, 1, 1, 2, 3, 4]);
        assert_eq!(
            parse(&solicit),
            Ok(Dhcpv6Info {
                message_type: "SOLICIT",
                code: 1,
                xid: 0x00ab_cdef,
                client_duid: Some(vec![0, 3, 0, 1, 1, 2, 3, 4]),
                ..Dhcpv6Info::default()
            })
        );
        // RELAY-FORW: hop count, link and peer addresses, then option 9 carrying a SOLICIT.
        let mut relay = vec![12, 1];
        relay.extend_from_slice(&[0x20; 16]);
        relay.extend_from_slice(&[0xfe; 16]);
        relay.extend_from_slice(&[0, 9, 0, 4, 1, 0, 0, 7]);
        assert_eq!(
            parse(&relay),
            Ok(Dhcpv6Info {
                message_type: "RELAY-FORW",
                code: 12,
                ..Dhcpv6Info::default()
            })
        );
    }

    /// The input the `decode_frame` fuzz target found: a vendor-class option (16) of length 0,
    /// on which dhcproto evaluates `0 - 4`. Its framing is sound; what follows it is cut short.
    #[test]
    fn regression_vendor_class_shorter_than_its_enterprise_number() {
        let payload = [
            0, 0, 0, 0, // type 0, xid 0
            0, 16, 0, 0, // option 16, length 0
            0, 0, 0, 0, 0, 0, 0, 0, // two empty options 0
            1, 0, // half an option header
        ];
        assert_eq!(
            parse(&payload),
            Err(Dhcpv6Error::OptionHeaderCut {
                offset: 16,
                left: 2
            })
        );
        assert_eq!(parse(&payload[..8]).map(|i| i.message_type), Ok("OTHER"));
        // Its twin from the same run: vendor options (17) of length 0 in a SOLICIT.
        let vendor_opts = [
            1, 0xab, 0, 0, // SOLICIT, xid 0xab0000
            0, 0, 0, 0, // an empty option 0
            0, 17, 0, 0, // option 17, length 0
            0, 0xff, 0, 0, // an empty option 255
            0, 0, // half an option header
        ];
        assert_eq!(
            parse(&vendor_opts),
            Err(Dhcpv6Error::OptionHeaderCut {
                offset: 16,
                left: 2
            })
        );
    }

    #[test]
    fn malformed_messages_say_why() {
        let cases: [(&[u8], Dhcpv6Error); 4] = [
            (
                &[],
                Dhcpv6Error::TooShort {
                    len: 0,
                    header: 4,
                    kind: "message",
                },
            ),
            (
                &[12, 0, 0],
                Dhcpv6Error::TooShort {
                    len: 3,
                    header: 34,
                    kind: "relay",
                },
            ),
            (
                &[1, 0, 0, 1, 0, 1, 0, 9, 1, 2],
                Dhcpv6Error::OptionPastEnd {
                    code: 1,
                    offset: 4,
                    len: 9,
                },
            ),
            (
                &[1, 0, 0, 1, 0, 8],
                Dhcpv6Error::OptionHeaderCut { offset: 4, left: 2 },
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(parse(payload), Err(expected), "{payload:?}");
        }
    }

    #[test]
    fn reads_identity_associations_server_ids_and_statuses() {
        let address: Ipv6Addr = "fd00::10".parse().unwrap();
        let other: Ipv6Addr = "fd00::11".parse().unwrap();
        // What dnsmasq answers a RELEASE of two addresses, one it had no binding for: an IA
        // with the unknown address and NoBinding, and Success at the top (rfc3315.c).
        let reply = dhcp_lab::frames::Dhcpv6Spec {
            code: code::REPLY,
            xid: 0x00_0102,
            client_duid: Some(vec![0, 1, 0, 1, 9]),
            server_duid: Some(vec![0, 3, 0, 1, 2, 2, 2, 2, 2, 2]),
            status: Some(status::SUCCESS),
            ias: vec![(77, vec![other], Some(status::NO_BINDING))],
        }
        .payload();
        let info = parse(&reply).unwrap();
        assert_eq!((info.code, info.xid), (code::REPLY, 0x102));
        assert_eq!(
            info.server_duid.as_deref(),
            Some(&[0, 3, 0, 1, 2, 2, 2, 2, 2, 2][..])
        );
        assert_eq!(info.status, Some(status::SUCCESS));
        assert_eq!(
            info.ias,
            vec![Ia {
                temporary: false,
                iaid: 77,
                addresses: vec![other],
                status: Some(status::NO_BINDING),
            }]
        );
        // What dhcp_release6 sends: xid 0, client and server ids, one IA_NA with one address.
        let release = dhcp_lab::frames::Dhcpv6Spec {
            code: code::RELEASE,
            client_duid: Some(vec![0, 1, 0, 1, 9]),
            server_duid: Some(vec![0, 3, 0, 1, 2]),
            ias: vec![(1234, vec![address], None)],
            ..Default::default()
        }
        .payload();
        let info = parse(&release).unwrap();
        assert_eq!(
            (info.message_type, info.xid, info.status),
            ("RELEASE", 0, None)
        );
        assert_eq!(info.ias[0].addresses, vec![address]);
        assert_eq!(info.ias[0].iaid, 1234);
    }

    #[test]
    fn an_ia_too_short_for_its_fixed_part_is_skipped_and_a_cut_one_is_an_error() {
        // IA_NA of 4 bytes (no T1/T2): ignored, the message still reads.
        let short = [8, 0, 0, 1, 0, 3, 0, 4, 0, 0, 0, 9];
        assert_eq!(parse(&short).unwrap().ias, vec![]);
        // IA_NA whose inner IAADDR runs past the IA's end: the framing is broken.
        let cut = [
            8, 0, 0, 1, // RELEASE
            0, 3, 0, 16, // IA_NA, 16 bytes
            0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, // iaid, T1, T2
            0, 5, 0, 24, // IAADDR claiming 24 bytes, none there
        ];
        assert_eq!(
            parse(&cut),
            Err(Dhcpv6Error::OptionPastEnd {
                code: 5,
                offset: 20,
                len: 24
            })
        );
    }

    #[test]
    fn first_client_id_wins_and_other_options_are_skipped() {
        let payload = [
            3, 0, 0, 7, // REQUEST, xid 7
            0, 8, 0, 2, 0, 0, // elapsed time
            0, 1, 0, 2, 0xaa, 0xbb, // client id
            0, 1, 0, 1, 0xcc, // another client id
        ];
        let info = parse(&payload).unwrap();
        assert_eq!((info.message_type, info.xid), ("REQUEST", 7));
        assert_eq!(info.client_duid, Some(vec![0xaa, 0xbb]));
    }
}
