//! DHCPv6 (RFC 8415): enough to count and show it. Decoding is `dhcproto`'s.
use dhcproto::{
    Decodable, Decoder,
    v6::{self, DhcpOption, OptionCode},
};

/// What the observer shows of a DHCPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv6Info {
    pub message_type: &'static str,
    /// 24-bit transaction id (0 for relay messages, which have none).
    pub xid: u32,
    /// DUID of the client (option 1), when present.
    pub client_duid: Option<Vec<u8>>,
}

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

pub fn parse(payload: &[u8]) -> Result<Dhcpv6Info, String> {
    let code = *payload.first().ok_or("empty DHCPv6 payload")?;
    let message_type = message_type_name(code);
    if code == 12 || code == 13 {
        v6::RelayMessage::decode(&mut Decoder::new(payload)).map_err(|e| e.to_string())?;
        return Ok(Dhcpv6Info {
            message_type,
            xid: 0,
            client_duid: None,
        });
    }
    let msg = v6::Message::decode(&mut Decoder::new(payload)).map_err(|e| e.to_string())?;
    let client_duid = match msg.opts().get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(duid)) => Some(duid.clone()),
        _ => None,
    };
    Ok(Dhcpv6Info {
        message_type,
        xid: msg.xid_num(),
        client_duid,
    })
}
