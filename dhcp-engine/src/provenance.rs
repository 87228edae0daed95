//! Where a packet comes from, as far as the observer must know: the agent's own probes and
//! repairs (recognised by the transaction ids the observer handed out, so they are never judged
//! as releases or counted as clients' traffic: without this, a repair the server ignored was
//! judged a new dropped release and repaired again, in a loop), a RELEASE sent by the router
//! itself or by a guest, a RELEASE whose Ethernet source is not its client (`forged`), and a
//! server on a guest network that is not this router's (`rogue`).
use std::collections::{HashSet, VecDeque};

use dhcp_wire::{Mac, MessageType, Packet};
use serde::{Deserialize, Serialize};

/// Who sent a RELEASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The router itself: over `lo` (`dhcp_release`, an orchestrator's script), or leaving the
    /// router on an interface.
    Router,
    /// A client on a guest network, from its own Ethernet address (or through a relay). The
    /// default: the reading that repairs least.
    #[default]
    Guest,
    /// Arrived on a guest network from an Ethernet address that is not the client's, and no
    /// relay forwarded it: someone releasing another's lease. Never repaired.
    Forged,
}

impl Origin {
    pub const ALL: [Origin; 3] = [Origin::Router, Origin::Guest, Origin::Forged];
    /// Every origin's [`Origin::name`] (a metric's label set).
    pub const NAMES: [&'static str; 3] = ["router", "guest", "forged"];

    pub fn name(self) -> &'static str {
        match self {
            Origin::Router => "router",
            Origin::Guest => "guest",
            Origin::Forged => "forged",
        }
    }

    /// The origin of a DHCPv4 packet as captured (`Guest` for what no rule places elsewhere).
    pub fn of(packet: &Packet) -> Origin {
        let Some(m) = packet.dhcpv4() else {
            return Origin::Guest;
        };
        if packet.meta.interface == "lo" || !packet.meta.hook.is_ingress() {
            return Origin::Router;
        }
        let relayed = !m.giaddr.is_unspecified();
        let own_frame = match (packet.src_mac, Mac::from_slice(&m.chaddr)) {
            (Some(src), Some(chaddr)) => src == chaddr.0,
            // Not Ethernet (or no link header): nothing to compare.
            _ => true,
        };
        if own_frame || relayed {
            Origin::Guest
        } else {
            Origin::Forged
        }
    }
}

/// A server reply that arrived on a guest network: sent by a host there, not by this router
/// (whose replies leave it). Reported with what identifies the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RogueServer {
    pub interface: String,
    pub mac: Option<Mac>,
    pub ip: Option<std::net::IpAddr>,
    pub server_id: Option<std::net::Ipv4Addr>,
    pub message: &'static str,
    /// The first reply seen from this sender on this interface (report it; later ones are
    /// only counted).
    pub first: bool,
}

/// The rogue server a packet reveals, if it does: an OFFER, ACK or NAK arriving (ingress) on
/// an interface other than `lo`.
pub fn rogue_reply(packet: &Packet) -> Option<(String, Option<Mac>, RogueServer)> {
    let m = packet.dhcpv4()?;
    let reply = m.op == 2
        && matches!(
            m.message_type,
            Some(MessageType::Offer | MessageType::Ack | MessageType::Nak)
        );
    if !reply || !packet.meta.hook.is_ingress() || packet.meta.interface == "lo" {
        return None;
    }
    let mac = packet.src_mac.map(Mac);
    Some((
        packet.meta.interface.clone(),
        mac,
        RogueServer {
            interface: packet.meta.interface.clone(),
            mac,
            ip: packet.src_ip,
            server_id: m.server_id,
            message: m.type_name(),
            first: false,
        },
    ))
}

/// A server that may answer on the guest networks besides this router's: another DHCP agent
/// of the same Neutron network, a relay's server. By MAC, or by address (its server id or the
/// IP source of its replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedServer {
    Mac(Mac),
    Address(std::net::Ipv4Addr),
}

impl std::str::FromStr for TrustedServer {
    type Err = String;

    fn from_str(text: &str) -> Result<TrustedServer, String> {
        if let Ok(ip) = text.parse() {
            return Ok(TrustedServer::Address(ip));
        }
        dhcp_wire::parse_mac(text)
            .map(|m| TrustedServer::Mac(Mac(m)))
            .map_err(|_| format!("{text:?} is neither a MAC nor an IPv4 address"))
    }
}

impl TrustedServer {
    /// Whether `rogue` is this server.
    pub fn is(&self, rogue: &RogueServer) -> bool {
        match self {
            TrustedServer::Mac(mac) => rogue.mac == Some(*mac),
            TrustedServer::Address(ip) => {
                rogue.server_id == Some(*ip) || rogue.ip == Some(std::net::IpAddr::V4(*ip))
            }
        }
    }
}

/// How long an xid handed out stays recognised (a repair's verification polls for 2 s; a
/// divergence scan of a full table takes longer, but each probe's xid is issued just before).
const XID_LIFETIME_NS: i128 = 300 * 1_000_000_000;
/// At most this many xids remembered (a scan of 2,100 leases issues 2,100).
const XID_CAPACITY: usize = 16_384;

/// The transaction ids the agent's own packets carry. Each is drawn from a counter mixed by a
/// bijection of 32-bit integers (so ids look random to the server and never repeat within
/// 2^32 issues), seeded by the agent (random per run, so two runs do not collide).
#[derive(Debug)]
pub struct OwnXids {
    seed: u32,
    counter: u32,
    issued: VecDeque<(u32, i128)>,
    known: HashSet<u32>,
}

impl OwnXids {
    pub fn new(seed: u32) -> OwnXids {
        OwnXids {
            seed,
            counter: 0,
            issued: VecDeque::new(),
            known: HashSet::new(),
        }
    }

    /// A new xid for a packet the agent is about to send at `now_ns`.
    pub fn issue(&mut self, now_ns: i128) -> u32 {
        self.forget_old(now_ns);
        self.counter = self.counter.wrapping_add(1);
        let xid = mix(self.counter ^ self.seed);
        self.issued.push_back((xid, now_ns));
        self.known.insert(xid);
        xid
    }

    /// A new DHCPv6 transaction id (24 bits) for a packet the agent is about to send.
    pub fn issue_v6(&mut self, now_ns: i128) -> u32 {
        let xid = self.issue(now_ns) & 0x00ff_ffff;
        self.issued.push_back((xid, now_ns));
        self.known.insert(xid);
        xid
    }

    /// Whether `xid` is one the agent handed out lately.
    pub fn is_own(&self, xid: u32) -> bool {
        self.known.contains(&xid)
    }

    fn forget_old(&mut self, now_ns: i128) {
        while let Some(&(xid, at)) = self.issued.front() {
            if self.issued.len() < XID_CAPACITY && now_ns - at < XID_LIFETIME_NS {
                break;
            }
            self.issued.pop_front();
            self.known.remove(&xid);
        }
    }
}

/// A bijection of u32 (an xorshift-multiply finalizer: each step is invertible).
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

#[cfg(test)]
mod tests {
    use dhcp_wire::test_support::release_packet;

    use super::*;

    #[test]
    fn issued_xids_are_recognised_distinct_and_forgotten_late() {
        let mut xids = OwnXids::new(0xdead_beef);
        let a = xids.issue(0);
        let b = xids.issue(0);
        assert_ne!(a, b);
        assert!(xids.is_own(a) && xids.is_own(b));
        assert!(!xids.is_own(a ^ 1));
        let many: HashSet<u32> = (0..10_000).map(|_| xids.issue(1)).collect();
        assert_eq!(many.len(), 10_000, "no repeats");
        xids.issue(XID_LIFETIME_NS + 2);
        assert!(!xids.is_own(a), "forgotten after its lifetime");
    }

    #[test]
    fn a_release_is_placed_by_where_it_was_captured_and_who_framed_it() {
        let packet = release_packet();
        // The test packet's link source is its chaddr; captured on lo.
        assert_eq!(Origin::of(&packet), Origin::Router);
        let mut guest = packet.clone();
        guest.meta.interface = "eth2".into();
        assert!(guest.meta.hook.is_ingress());
        guest.src_mac = Mac::from_slice(&guest.dhcpv4().unwrap().chaddr).map(|m| m.0);
        assert_eq!(Origin::of(&guest), Origin::Guest);
        guest.src_mac = Some([2, 0, 0, 0, 0, 0x66]);
        assert_eq!(Origin::of(&guest), Origin::Forged);
        assert_eq!(Origin::ALL.map(Origin::name), Origin::NAMES);
    }
}
