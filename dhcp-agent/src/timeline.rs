//! `--follow MAC`: a client's DHCPv4 exchanges as a timeline, one block per transaction
//! (boot, renewal, release, ...) with the time between steps and the server id at each step.
use std::collections::HashMap;

use dhcp_wire::{MessageType, Packet, hex_colon};

use crate::output::local_time;

/// What a transaction is, from its first message.
fn kind(message_type: Option<MessageType>, renewing: bool) -> &'static str {
    match message_type {
        Some(MessageType::Discover) => "boot",
        Some(MessageType::Request) if renewing => "renewal",
        Some(MessageType::Request) => "request (selecting or reboot)",
        Some(MessageType::Release) => "release",
        Some(MessageType::Inform) => "inform",
        Some(MessageType::Decline) => "decline",
        _ => "exchange",
    }
}

#[derive(Debug, Default)]
pub struct Timeline {
    /// Per client: the transaction being shown, when it started and its last step.
    current: HashMap<Vec<u8>, (u32, i128, i128)>,
    /// The client of the last line printed (a header is repeated when clients interleave).
    last_client: Option<Vec<u8>>,
}

impl Timeline {
    /// The lines `packet` adds to its client's timeline (none for other than DHCPv4).
    pub fn lines(&mut self, packet: &Packet) -> Vec<String> {
        let Some(m) = packet.dhcpv4() else {
            return Vec::new();
        };
        let at = packet.meta.unix_ns;
        let mut lines = Vec::new();
        let (start, previous) = match self.current.get(&m.chaddr) {
            Some(&(xid, start, previous)) if xid == m.xid => {
                if self.last_client.as_ref() != Some(&m.chaddr) {
                    lines.push(format!(
                        "{} 0x{:08x} (continued)",
                        hex_colon(&m.chaddr),
                        m.xid
                    ));
                }
                (start, previous)
            }
            _ => {
                lines.push(format!(
                    "{} 0x{:08x} {} at {}",
                    hex_colon(&m.chaddr),
                    m.xid,
                    kind(m.message_type, !m.ciaddr.is_unspecified()),
                    local_time(at)
                ));
                (at, at)
            }
        };
        self.current.insert(m.chaddr.clone(), (m.xid, start, at));
        self.last_client = Some(m.chaddr.clone());
        let seconds = |ns: i128| ns as f64 / 1e9;
        let mut step = format!(
            "  +{:.3}s ({:.3}s) {:<8} {:<3} {:<9}",
            seconds(at - previous),
            seconds(at - start),
            packet.meta.interface,
            packet.meta.direction(),
            m.type_name()
        );
        for (name, value) in [("ci", m.ciaddr), ("yi", m.yiaddr)] {
            if !value.is_unspecified() {
                step.push_str(&format!(" {name}={value}"));
            }
        }
        if let Some(v) = m.requested_ip {
            step.push_str(&format!(" req={v}"));
        }
        step.push_str(&match m.server_id {
            Some(sid) => format!(" sid={sid}"),
            None => " sid=-".to_owned(),
        });
        if let Some(v) = m.lease_time {
            step.push_str(&format!(" lease={v}s"));
        }
        if let Some(v) = &m.message {
            step.push_str(&format!(" msg={v:?}"));
        }
        lines.push(step);
        lines
    }
}

#[cfg(test)]
mod tests {
    use dhcp_common::Hook;
    use dhcproto::v4::MessageType as Mt;

    use super::*;
    use dhcp_wire::test_support::v4_packet;

    #[test]
    fn groups_a_clients_steps_by_transaction_with_the_time_between_them() {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut timeline = Timeline::default();
        let ms = 1_000_000;
        let mut out = Vec::new();
        for (kind, xid, at, hook) in [
            (Mt::Discover, 7, 0, Hook::XdpIngress),
            (Mt::Offer, 7, 3000 * ms, Hook::TcEgress),
            (Mt::Request, 7, 3001 * ms, Hook::XdpIngress),
            (Mt::Ack, 7, 3002 * ms, Hook::TcEgress),
            (Mt::Release, 9, 9000 * ms, Hook::TcIngress),
        ] {
            out.extend(timeline.lines(&v4_packet(kind, xid, mac, at, hook)));
        }
        let text = out.join("\n");
        assert_eq!(out.len(), 7, "{text}");
        assert!(
            out[0].starts_with("02:00:00:00:00:01 0x00000007 boot at "),
            "{text}"
        );
        assert!(
            out[2].starts_with("  +3.000s (3.000s) guest0   out OFFER"),
            "{text}"
        );
        assert!(
            out[4].starts_with("  +0.001s (3.002s) guest0   out ACK"),
            "{text}"
        );
        assert!(
            out[5].starts_with("02:00:00:00:00:01 0x00000009 release at "),
            "{text}"
        );
        assert!(out[6].contains("sid=-"), "{text}");
    }
}
