//! DHCPv4 exchanges as the client lives them: how long from its first DISCOVER (or REQUEST) to
//! the server's ACK, which DISCOVERs go unanswered, and NAKs.
//!
//! An exchange is keyed by transaction id and client hardware address. A packet can be seen more
//! than once (on several hooks or interfaces); only its first sighting counts, and a finished
//! exchange lingers a while so a late second sighting of its ACK or NAK is not counted again.
//! Memory is bounded: at most [`MAX_OPEN`] exchanges are tracked, the oldest given up first.
use std::collections::{HashMap, VecDeque};

use dhcp_wire::{MessageType, Packet};

/// How many exchanges are tracked at once (a DISCOVER flood with random ids must not grow memory).
pub const MAX_OPEN: usize = 16_384;
/// How long a finished or abandoned exchange is remembered.
const LINGER_NS: i64 = 60_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// First DISCOVER to ACK: what a booting client waits.
    DiscoverAck,
    /// REQUEST to ACK: selecting, renewing or rebinding.
    RequestAck,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransactionEvent {
    Completed {
        exchange: Exchange,
        seconds: f64,
    },
    Nak {
        interface: String,
        client: Vec<u8>,
        xid: u32,
        at_ns: i128,
    },
    /// No OFFER within the timeout after the first DISCOVER.
    Unanswered {
        interface: String,
        client: Vec<u8>,
        xid: u32,
        at_ns: i128,
    },
}

/// xid and client hardware address (up to chaddr's 16 bytes, with its length): no allocation
/// per packet.
type Key = (u32, [u8; 16], u8);

fn key(xid: u32, chaddr: &[u8]) -> Key {
    let mut bytes = [0; 16];
    let len = chaddr.len().min(16);
    bytes[..len].copy_from_slice(&chaddr[..len]);
    (xid, bytes, len as u8)
}

/// Keys come from clients: a hasher seeded per process (foldhash) keeps lookups fast without
/// letting a client pick colliding keys in advance.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One exchange, kept small: every new exchange evicts the oldest of up to [`MAX_OPEN`], whose
/// memory has gone cold, so each cache line of an entry costs a miss per packet at low rates
/// (this map was a quarter of the agent's CPU at 10,000 frames/s with 44,000 clients, perf).
/// Times are Unix nanoseconds in an i64 (good until 2262), [`NONE`] for none; the interface is an
/// index into [`Transactions::interfaces`] rather than a String allocated per exchange.
#[derive(Debug)]
struct Open {
    started_ns: i64,
    discover_ns: i64,
    request_ns: i64,
    interface: u16,
    /// The first OFFER's time ([`NONE`]: none yet).
    offer_ns: i64,
    /// ACK or NAK seen, or reported unanswered: nothing more to count.
    finished: bool,
}

#[derive(Debug)]
pub struct Transactions {
    discover_timeout_ns: i64,
    open: Map<Key, Open>,
    /// Keys in the order their exchanges started, with that start (keys can be reused).
    order: VecDeque<(i64, Key)>,
    /// First DISCOVERs in the order they were seen: a tick looks only at those whose timeout
    /// just passed, not at every exchange it already checked.
    discovers: VecDeque<(i64, Key)>,
    /// The interfaces exchanges were seen on, by [`Open::interface`] (a router has a few).
    interfaces: Vec<String>,
}

impl Transactions {
    pub fn new(discover_timeout: std::time::Duration) -> Transactions {
        Transactions {
            discover_timeout_ns: i64::try_from(discover_timeout.as_nanos()).unwrap_or(i64::MAX),
            open: Map::default(),
            order: VecDeque::new(),
            discovers: VecDeque::new(),
            interfaces: Vec::new(),
        }
    }

    pub fn tracked(&self) -> usize {
        self.open.len()
    }

    /// Follows one packet; returns what it completed.
    pub fn on_packet(&mut self, packet: &Packet) -> Option<TransactionEvent> {
        let m = packet.dhcpv4()?;
        let at = packet.meta.unix_ns;
        let at64 = ns64(at);
        let key = key(m.xid, &m.chaddr);
        match (m.op, m.message_type?) {
            (1, kind @ (MessageType::Discover | MessageType::Request)) => {
                let open = self.open_or_start(key, at64, &packet.meta.interface);
                if open.finished && kind == MessageType::Request && open.request_ns == NONE {
                    // A REQUEST after an unanswered DISCOVER still gets its own timing.
                    open.finished = false;
                }
                let slot = match kind {
                    MessageType::Discover => &mut open.discover_ns,
                    _ => &mut open.request_ns,
                };
                let first_discover = *slot == NONE && kind == MessageType::Discover;
                if *slot == NONE {
                    *slot = at64;
                }
                if first_discover {
                    // Only MAX_OPEN exchanges are kept; older queue entries are stale.
                    if self.discovers.len() >= 2 * MAX_OPEN {
                        self.discovers.pop_front();
                    }
                    self.discovers.push_back((at64, key));
                }
                None
            }
            (2, MessageType::Offer) => {
                if let Some(open) = self.open.get_mut(&key)
                    && open.offer_ns == NONE
                {
                    open.offer_ns = at64;
                }
                None
            }
            (2, MessageType::Ack) => {
                let open = self.open.get_mut(&key).filter(|o| !o.finished)?;
                // DHCPINFORM's ACK answers neither a DISCOVER nor a REQUEST: nothing to time.
                let (exchange, since) = match (open.discover_ns, open.request_ns) {
                    (d, _) if d != NONE && open.offer_ns != NONE => (Exchange::DiscoverAck, d),
                    (_, r) if r != NONE => (Exchange::RequestAck, r),
                    _ => return None,
                };
                open.finished = true;
                Some(TransactionEvent::Completed {
                    exchange,
                    seconds: (at - i128::from(since)).max(0) as f64 / 1e9,
                })
            }
            (2, MessageType::Nak) => {
                match self.open.get_mut(&key) {
                    Some(open) if open.finished => return None,
                    Some(open) => open.finished = true,
                    // A NAK to a request the agent did not see (started before it): count it,
                    // and remember it so a second sighting is not counted.
                    None => {
                        self.open_or_start(key, at64, &packet.meta.interface)
                            .finished = true
                    }
                }
                Some(TransactionEvent::Nak {
                    interface: packet.meta.interface.clone(),
                    client: m.chaddr.clone(),
                    xid: m.xid,
                    at_ns: at,
                })
            }
            _ => None,
        }
    }

    fn open_or_start(&mut self, key: Key, at: i64, interface: &str) -> &mut Open {
        if self.open.len() >= MAX_OPEN && !self.open.contains_key(&key) {
            self.give_up_oldest();
        }
        match self.open.entry(key) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                self.order.push_back((at, key));
                slot.insert(Open {
                    started_ns: at,
                    discover_ns: NONE,
                    request_ns: NONE,
                    interface: interface_index(&mut self.interfaces, interface),
                    offer_ns: NONE,
                    finished: false,
                })
            }
        }
    }

    fn give_up_oldest(&mut self) {
        while let Some((started, key)) = self.order.pop_front() {
            if self.open.get(&key).is_some_and(|o| o.started_ns == started) {
                self.open.remove(&key);
                return;
            }
        }
    }

    /// Whether the server may not have reached a packet seen at `seen_ns` yet, at `now_ns`: a
    /// DISCOVER seen before it still waits for its OFFER (within the timeout), or got it less
    /// than `margin_ns` ago (the server's lease file lags its answer). dnsmasq handles one
    /// packet at a time, in order, and pings an address before offering it to a new client,
    /// deaf for about 3 s (dhcp-lab/tests/dnsmasq_deaf.rs). Looks only at DISCOVERs within
    /// their timeout, oldest first, up to `seen_ns`.
    pub fn backlog_before(&self, seen_ns: i128, now_ns: i128, margin_ns: i128) -> bool {
        let (seen, now, margin) = (ns64(seen_ns), ns64(now_ns), ns64(margin_ns));
        self.discovers
            .iter()
            .take_while(|(at, _)| *at <= seen)
            .filter(|(at, _)| now.saturating_sub(*at) < self.discover_timeout_ns)
            .any(|(at, key)| {
                self.open.get(key).is_some_and(|open| {
                    open.discover_ns == *at
                        && if open.offer_ns == NONE {
                            !open.finished
                        } else {
                            now.saturating_sub(open.offer_ns) < margin
                        }
                })
            })
    }

    /// Reports DISCOVERs unanswered for longer than the timeout and forgets old exchanges.
    pub fn on_tick(&mut self, now_ns: i128) -> Vec<TransactionEvent> {
        let now = ns64(now_ns);
        let mut events = Vec::new();
        while let Some(&(discover_ns, key)) = self.discovers.front() {
            if now.saturating_sub(discover_ns) < self.discover_timeout_ns {
                break; // the rest came later
            }
            self.discovers.pop_front();
            let Some(open) = self.open.get_mut(&key) else {
                continue; // given up or forgotten since
            };
            if open.discover_ns == discover_ns && !open.finished && open.offer_ns == NONE {
                open.finished = true;
                events.push(TransactionEvent::Unanswered {
                    interface: self.interfaces[usize::from(open.interface)].clone(),
                    client: key.1[..usize::from(key.2)].to_vec(),
                    xid: key.0,
                    at_ns: i128::from(discover_ns),
                });
            }
        }
        while let Some((started, key)) = self.order.front() {
            if now.saturating_sub(*started) < LINGER_NS {
                break;
            }
            if self.open.get(key).is_some_and(|o| o.started_ns == *started) {
                self.open.remove(key);
            }
            self.order.pop_front();
        }
        events
    }
}

/// The index of `name` in `interfaces` ([`Transactions::interfaces`]), added if new; looked up
/// only when an exchange starts. Past `u16::MAX` names (never on a router) the last one stands
/// for the rest.
fn interface_index(interfaces: &mut Vec<String>, name: &str) -> u16 {
    if let Some(i) = interfaces.iter().position(|known| known == name) {
        return i as u16;
    }
    if interfaces.len() <= usize::from(u16::MAX) {
        interfaces.push(name.to_owned());
    }
    (interfaces.len() - 1) as u16
}

/// "No time" in [`Open`]'s time fields.
const NONE: i64 = i64::MIN;

/// A Unix time in nanoseconds as [`Open`] keeps it (clamped, never [`NONE`]).
fn ns64(ns: i128) -> i64 {
    i64::try_from(ns.max(i128::from(NONE) + 1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use dhcp_common::Hook;
    use dhcproto::v4::MessageType as Mt;

    use super::*;
    use dhcp_wire::test_support::v4_packet as packet;

    const SECOND: i128 = 1_000_000_000;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const IN: Hook = Hook::XdpIngress;
    const OUT: Hook = Hook::TcEgress;

    #[test]
    fn times_a_boot_and_a_renewal_once_each() {
        let mut t = Transactions::new(std::time::Duration::from_secs(5));
        let t0 = 1_000 * SECOND;
        assert_eq!(t.on_packet(&packet(Mt::Discover, 7, MAC, t0, IN)), None);
        // A retransmitted DISCOVER does not restart the clock.
        t.on_packet(&packet(Mt::Discover, 7, MAC, t0 + SECOND, IN));
        t.on_packet(&packet(Mt::Offer, 7, MAC, t0 + SECOND + 1000, OUT));
        t.on_packet(&packet(Mt::Request, 7, MAC, t0 + 2 * SECOND, IN));
        let done = t.on_packet(&packet(Mt::Ack, 7, MAC, t0 + 2 * SECOND + SECOND / 2, OUT));
        assert_eq!(
            done,
            Some(TransactionEvent::Completed {
                exchange: Exchange::DiscoverAck,
                seconds: 2.5
            })
        );
        // The same ACK seen on a second hook is not a second exchange.
        assert_eq!(
            t.on_packet(&packet(Mt::Ack, 7, MAC, t0 + 3 * SECOND, IN)),
            None
        );
        // A renewal: REQUEST to ACK.
        t.on_packet(&packet(Mt::Request, 8, MAC, t0 + 10 * SECOND, IN));
        let done = t.on_packet(&packet(
            Mt::Ack,
            8,
            MAC,
            t0 + 10 * SECOND + SECOND / 100,
            OUT,
        ));
        assert_eq!(
            done,
            Some(TransactionEvent::Completed {
                exchange: Exchange::RequestAck,
                seconds: 0.01
            })
        );
        // An ACK for nothing the agent saw (an INFORM, or before it started) times nothing.
        assert_eq!(
            t.on_packet(&packet(Mt::Ack, 9, MAC, t0 + 11 * SECOND, OUT)),
            None
        );
        assert!(t.on_tick(t0 + 12 * SECOND).is_empty(), "nothing unanswered");
    }

    #[test]
    fn a_discover_waiting_for_its_offer_is_a_backlog_for_what_came_after_it() {
        let mut t = Transactions::new(std::time::Duration::from_secs(5));
        let t0 = 1_000 * SECOND;
        let margin = SECOND / 2;
        assert!(!t.backlog_before(t0, t0, margin), "nothing seen");
        t.on_packet(&packet(Mt::Discover, 7, MAC, t0, IN));
        let release = t0 + SECOND / 10;
        assert!(
            t.backlog_before(release, t0 + 2 * SECOND, margin),
            "pinging"
        );
        assert!(
            !t.backlog_before(t0 - 1, t0 + 2 * SECOND, margin),
            "what came before the DISCOVER is not behind it"
        );
        t.on_packet(&packet(Mt::Offer, 7, MAC, t0 + 3 * SECOND, OUT));
        assert!(
            t.backlog_before(release, t0 + 3 * SECOND + margin / 2, margin),
            "just offered: the lease file may lag"
        );
        assert!(!t.backlog_before(release, t0 + 3 * SECOND + margin, margin));
        // A client the server ignores: a backlog only until the DISCOVER's timeout.
        let ignored = [2, 0, 0, 0, 0, 9];
        t.on_packet(&packet(Mt::Discover, 8, ignored, t0 + 10 * SECOND, IN));
        assert!(t.backlog_before(t0 + 11 * SECOND, t0 + 14 * SECOND, margin));
        assert!(!t.backlog_before(t0 + 11 * SECOND, t0 + 15 * SECOND, margin));
    }

    /// Exchanges keep their interface as an index: each report names the right one.
    #[test]
    fn each_unanswered_discover_names_its_own_interface() {
        let mut t = Transactions::new(std::time::Duration::from_secs(5));
        let t0 = 50 * SECOND;
        for (xid, iface) in [(1, "eth2"), (2, "eth3"), (3, "eth2")] {
            let mut p = packet(Mt::Discover, xid, MAC, t0 + i128::from(xid), IN);
            p.meta.interface = iface.into();
            t.on_packet(&p);
        }
        let named: Vec<(u32, String)> = t
            .on_tick(t0 + 10 * SECOND)
            .into_iter()
            .map(|e| match e {
                TransactionEvent::Unanswered { xid, interface, .. } => (xid, interface),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            named,
            [(1, "eth2".into()), (2, "eth3".into()), (3, "eth2".into())]
        );
    }

    #[test]
    fn an_unanswered_discover_is_reported_once_after_the_timeout() {
        let mut t = Transactions::new(std::time::Duration::from_secs(5));
        let t0 = 50 * SECOND;
        t.on_packet(&packet(Mt::Discover, 1, MAC, t0, IN));
        t.on_packet(&packet(Mt::Discover, 2, [2, 0, 0, 0, 0, 2], t0, IN));
        t.on_packet(&packet(Mt::Offer, 2, [2, 0, 0, 0, 0, 2], t0 + SECOND, OUT));
        assert!(t.on_tick(t0 + 4 * SECOND).is_empty(), "not yet");
        assert_eq!(
            t.on_tick(t0 + 5 * SECOND),
            vec![TransactionEvent::Unanswered {
                interface: "guest0".into(),
                client: MAC.to_vec(),
                xid: 1,
                at_ns: t0,
            }]
        );
        assert!(t.on_tick(t0 + 6 * SECOND).is_empty(), "reported once");
        // Forgotten after the linger time.
        t.on_tick(t0 + 61 * SECOND);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn naks_are_counted_once_per_exchange() {
        let mut t = Transactions::new(std::time::Duration::from_secs(5));
        t.on_packet(&packet(Mt::Request, 3, MAC, SECOND, IN));
        let nak = |xid, at_ns| {
            Some(TransactionEvent::Nak {
                interface: "guest0".into(),
                client: MAC.to_vec(),
                xid,
                at_ns,
            })
        };
        assert_eq!(
            t.on_packet(&packet(Mt::Nak, 3, MAC, 2 * SECOND, OUT)),
            nak(3, 2 * SECOND)
        );
        assert_eq!(t.on_packet(&packet(Mt::Nak, 3, MAC, 2 * SECOND, IN)), None);
        // A NAK for a request from before the agent started still counts, once.
        assert_eq!(
            t.on_packet(&packet(Mt::Nak, 4, MAC, 3 * SECOND, OUT)),
            nak(4, 3 * SECOND)
        );
        assert_eq!(t.on_packet(&packet(Mt::Nak, 4, MAC, 3 * SECOND, IN)), None);
    }

    #[test]
    fn a_flood_of_discovers_stays_bounded() {
        let mut t = Transactions::new(std::time::Duration::from_secs(5));
        for xid in 0..(MAX_OPEN as u32 + 1000) {
            t.on_packet(&packet(
                Mt::Discover,
                xid,
                MAC,
                SECOND + i128::from(xid),
                IN,
            ));
        }
        assert_eq!(t.tracked(), MAX_OPEN);
        // The newest are kept.
        let last = MAX_OPEN as u32 + 999;
        t.on_packet(&packet(Mt::Offer, last, MAC, 2 * SECOND, OUT));
        t.on_packet(&packet(Mt::Request, last, MAC, 2 * SECOND, IN));
        assert!(matches!(
            t.on_packet(&packet(Mt::Ack, last, MAC, 3 * SECOND, OUT)),
            Some(TransactionEvent::Completed { .. })
        ));
    }
}
