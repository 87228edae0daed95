//! DHCPv6 (RFC 8415): enough to count and show it: the message type, the transaction id and the
//! client's DUID (option 1), from a strict walk of the message's option framing.
//!
//! Why not `dhcproto`'s decoder (it builds the messages the tests send): on hostile input it
//! computes option lengths with unchecked subtractions. A vendor-class option (16) shorter than
//! its 4-byte enterprise number makes it evaluate `len - 4`, which panics in any build with
//! overflow checks (the tests', the fuzzer's) and wraps in a release build; status code (13),
//! vendor options (17) and authentication (11) do the same, at any depth. The `decode_frame`
//! fuzz target found it within seconds. Like the DHCPv4 reader, the wire walk is ours and every
//! error says where the message breaks.
use thiserror::Error;

/// What the observer shows of a DHCPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv6Info {
    pub message_type: &'static str,
    /// 24-bit transaction id (0 for relay messages, which have none).
    pub xid: u32,
    /// DUID of the client (option 1), when present.
    pub client_duid: Option<Vec<u8>>,
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
    let client_duid = client_id(options, header)?;
    if header == RELAY_HEADER {
        // The client's own message travels inside option 9; the relay's has no id of its own.
        return Ok(Dhcpv6Info {
            message_type: message_type_name(code),
            xid: 0,
            client_duid: None,
        });
    }
    Ok(Dhcpv6Info {
        message_type: message_type_name(code),
        xid: u32::from_be_bytes([0, payload[1], payload[2], payload[3]]),
        client_duid: client_duid.map(<[u8]>::to_vec),
    })
}

/// Walks the options area (at `base` in the payload, for the error offsets); every option must
/// fit. Returns the first client identifier.
fn client_id(area: &[u8], base: usize) -> Result<Option<&[u8]>, Dhcpv6Error> {
    let mut found = None;
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
        if code == OPTION_CLIENT_ID && found.is_none() {
            found = Some(value);
        }
        at += 4 + len;
    }
    Ok(found)
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
                xid: 0x00ab_cdef,
                client_duid: Some(vec![0, 3, 0, 1, 1, 2, 3, 4]),
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
                xid: 0,
                client_duid: None,
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
