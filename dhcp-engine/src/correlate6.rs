//! DHCPv6 release correlation: did the server honor each RELEASE (and DECLINE), and if not, why.
//!
//! Unlike DHCPv4, a DHCPv6 server answers every RELEASE it accepts, so the wire settles most:
//! dnsmasq 2.90 (rfc3315.c, `DHCP6RELEASE`) answers a REPLY with status Success at the top and,
//! for each address it had no binding for, an IA carrying that address and NoBinding; it answers
//! a RELEASE sent to a unicast address with UseMulticast and does nothing else. A RELEASE
//! without a server id, or with one that is not its DUID, gets no answer at all (the message is
//! dropped before any reply is built). So:
//!
//! | REPLY (same client DUID and xid)         | lease | outcome                           |
//! |------------------------------------------|-------|-----------------------------------|
//! | status UseMulticast                      |       | dropped, `use_multicast`          |
//! | other failure status at the top          |       | dropped, `refused`                |
//! | the address in an IA with NoBinding      |       | `no_lease`                        |
//! | Success (or no status)                   |       | `honored`                         |
//! | none by the deadline                     | gone  | `honored` (the reply was missed)  |
//! | none by the deadline                     | never | `no_lease`                        |
//! | none by the deadline                     | there | dropped, [`diagnose`]'s cause     |
//!
//! A record is keyed by address, client DUID and IAID (one per address of each IA). Clients
//! retransmit a RELEASE with the same transaction id until answered (RFC 8415 section 18.2.7),
//! and `dhcp_release6` sends its (xid 0) up to 5 times, 1 s apart, reading the answer only right
//! after each send (contrib/lease-tools/dhcp_release6.c): a copy of a release pending or settled
//! within [`RETRANSMISSION_WINDOW_NS`] is counted as a retransmission, never as a release of its
//! own, and the server's answer to a copy (NoBinding, the binding being gone by then) is not a
//! verdict.
use std::{collections::HashMap, net::Ipv6Addr};

use dhcp_wire::{
    Mac, Packet,
    dhcpv6::{code, status},
};

use crate::{
    leases::{Lease, LeaseTable},
    provenance::Origin,
};

/// How long after a RELEASE a copy with the same key and xid is a retransmission. RFC 8415's
/// client gives up after REL_MAX_RC (4) retransmissions from REL_TIMEOUT (1 s), doubling: about
/// 15 s in all; `dhcp_release6`'s five sends span 4 s.
pub const RETRANSMISSION_WINDOW_NS: i128 = 30_000_000_000;

/// Whether the message released the address or declined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Release,
    Decline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Release => "RELEASE",
            Kind::Decline => "DECLINE",
        }
    }
}

/// One address of a DHCPv6 RELEASE or DECLINE, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release6 {
    pub seen_ns: i128,
    pub interface: String,
    pub kind: Kind,
    pub xid: u32,
    pub address: Ipv6Addr,
    pub client_duid: Vec<u8>,
    pub iaid: u32,
    /// IA_TA rather than IA_NA.
    pub temporary: bool,
    pub server_duid: Option<Vec<u8>>,
    /// Sent to a unicast address rather than the servers' multicast group.
    pub unicast: bool,
    pub origin: Origin,
    /// The frame's Ethernet source, when it had one.
    pub sender: Option<Mac>,
}

impl Release6 {
    /// The addresses a RELEASE or DECLINE in `packet` gives up, one record each.
    pub fn from_packet(packet: &Packet) -> Vec<Release6> {
        let Some(m) = packet.dhcpv6() else {
            return Vec::new();
        };
        let kind = match m.code {
            code::RELEASE => Kind::Release,
            code::DECLINE => Kind::Decline,
            _ => return Vec::new(),
        };
        // dnsmasq drops a message without a client id (rfc3315.c): nothing to key it by.
        let Some(duid) = &m.client_duid else {
            return Vec::new();
        };
        let unicast = match packet.dst_ip {
            Some(std::net::IpAddr::V6(dst)) => !dst.is_multicast(),
            _ => false,
        };
        let sender = packet.src_mac.filter(|m| *m != [0; 6]).map(Mac);
        let origin = origin_of(packet, duid);
        m.ias
            .iter()
            .flat_map(|ia| ia.addresses.iter().map(move |a| (ia, *a)))
            .map(|(ia, address)| Release6 {
                seen_ns: packet.meta.unix_ns,
                interface: packet.meta.interface.clone(),
                kind,
                xid: m.xid,
                address,
                client_duid: duid.clone(),
                iaid: ia.iaid,
                temporary: ia.temporary,
                server_duid: m.server_duid.clone(),
                unicast,
                origin,
                sender,
            })
            .collect()
    }

    fn key(&self) -> Key {
        (self.address, self.client_duid.clone(), self.iaid)
    }

    /// Whether `lease` is the binding this released: same address, DUID and IAID.
    pub fn matches(&self, lease: &Lease) -> bool {
        lease.ip == std::net::IpAddr::V6(self.address)
            && lease.client_id.as_deref() == Some(&self.client_duid[..])
            && lease.iaid == Some(self.iaid)
    }
}

/// Who sent a DHCPv6 RELEASE: the router (leaving it, or on `lo`), a guest, or a forger (its
/// DUID names a link-layer address, types 1 and 3, that is not the frame's source).
fn origin_of(packet: &Packet, duid: &[u8]) -> Origin {
    if packet.meta.interface == "lo" || !packet.meta.hook.is_ingress() {
        return Origin::Router;
    }
    match (packet.src_mac, duid_link_layer(duid)) {
        (Some(src), Some(lladdr)) if src != lladdr => Origin::Forged,
        _ => Origin::Guest,
    }
}

/// The Ethernet address a DUID-LLT (type 1) or DUID-LL (type 3) with hardware type 1 carries.
pub fn duid_link_layer(duid: &[u8]) -> Option<[u8; 6]> {
    let at = match duid.get(..4)? {
        [0, 1, 0, 1] => 8, // type, hardware type, time
        [0, 3, 0, 1] => 4, // type, hardware type
        _ => return None,
    };
    duid.get(at..)?.try_into().ok()
}

/// Why the server ignored a DHCPv6 RELEASE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause6 {
    /// Option 2 is not the server's DUID (`dhcp_release6 --server-id` with another's).
    ServerIdMismatch {
        expected: Vec<u8>,
        received: Vec<u8>,
    },
    /// No server id: a RELEASE must carry one (RFC 8415 section 16.6), dnsmasq drops it.
    MissingServerId,
    /// Sent to a unicast address: the server answered UseMulticast.
    UseMulticast,
    /// The server answered with another failure status.
    Refused {
        status: u16,
    },
    /// No server was running (or answering) when it was sent.
    NoServer,
    Unknown,
}

impl Cause6 {
    /// Every cause's [`Cause6::name`].
    pub const NAMES: [&'static str; 6] = [
        "server_id_mismatch",
        "missing_server_id",
        "use_multicast",
        "refused",
        "no_server",
        "unknown",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Cause6::ServerIdMismatch { .. } => "server_id_mismatch",
            Cause6::MissingServerId => "missing_server_id",
            Cause6::UseMulticast => "use_multicast",
            Cause6::Refused { .. } => "refused",
            Cause6::NoServer => "no_server",
            Cause6::Unknown => "unknown",
        }
    }

    /// Whether a RELEASE with the server's own DUID would be honored (a repair can fix it).
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            Cause6::ServerIdMismatch { .. } | Cause6::MissingServerId | Cause6::UseMulticast
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome6 {
    Honored,
    Dropped(Cause6),
    NoLease,
}

impl Outcome6 {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome6::Honored => "honored",
            Outcome6::Dropped(_) => "dropped",
            Outcome6::NoLease => "no_lease",
        }
    }
}

/// A settled DHCPv6 release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict6 {
    pub release: Release6,
    pub outcome: Outcome6,
    /// The server's DUID, when known.
    pub expected_server_duid: Option<Vec<u8>>,
    /// The binding as the lease file showed it while the release was pending.
    pub lease: Option<Lease>,
    /// The server granted the address to the same client again since (a REPLY to its RENEW,
    /// REQUEST or REBIND): a dropped release is then reported but never repaired.
    pub renewed_since: bool,
    /// Copies of the RELEASE seen (retransmissions), not counted as releases.
    pub retransmissions: u32,
    /// Settled by the server's REPLY (rather than by the deadline).
    pub by_reply: bool,
    pub settled_ns: i128,
}

#[derive(Debug, Clone)]
struct Pending6 {
    release: Release6,
    lease: Option<Lease>,
    renewed_since: bool,
    server_down: bool,
    server_went_down: bool,
    retransmissions: u32,
    deadline_ns: i128,
}

type Key = (Ipv6Addr, Vec<u8>, u32);

/// What [`Correlator6::on_release`] made of one address of a RELEASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A new record, waiting for the server's REPLY.
    Opened,
    /// A copy of one pending or settled lately.
    Retransmission,
}

/// Pending DHCPv6 releases; see the module documentation.
#[derive(Debug, Default)]
pub struct Correlator6 {
    grace_ns: i128,
    pending: HashMap<Key, Pending6>,
    /// Releases settled lately: key -> (xid, when), so that copies are known for copies.
    recent: HashMap<Key, (u32, i128)>,
    /// The server's DUID: from the lease file's `duid` line (dnsmasq's own), else from its
    /// ADVERTISE and REPLY messages (option 2).
    server_duid: Option<Vec<u8>>,
    server_duid_from_file: bool,
    server_down: bool,
}

impl Correlator6 {
    pub fn new(grace_ns: i128) -> Correlator6 {
        Correlator6 {
            grace_ns,
            ..Correlator6::default()
        }
    }

    pub fn server_duid(&self) -> Option<&[u8]> {
        self.server_duid.as_deref()
    }

    /// The server's DUID as a REPLY or ADVERTISE from this router's server carried it. Returns
    /// it when it is new or changed (the lease file's `duid` line, when there is one, wins).
    pub fn learn_server_duid(&mut self, duid: &[u8]) -> Option<Vec<u8>> {
        if self.server_duid_from_file || self.server_duid.as_deref() == Some(duid) {
            return None;
        }
        self.server_duid = Some(duid.to_vec());
        self.server_duid.clone()
    }

    pub fn set_server_down(&mut self, down: bool) {
        if down {
            for p in self.pending.values_mut() {
                p.server_went_down = true;
            }
        }
        self.server_down = down;
    }

    /// One address of a RELEASE or DECLINE.
    pub fn on_release(&mut self, release: Release6, table: &LeaseTable) -> Seen {
        let key = release.key();
        if let Some(p) = self.pending.get_mut(&key)
            && p.release.xid == release.xid
        {
            p.retransmissions += 1;
            return Seen::Retransmission;
        }
        if let Some(&(xid, at)) = self.recent.get(&key)
            && xid == release.xid
            && release.seen_ns - at < RETRANSMISSION_WINDOW_NS
        {
            return Seen::Retransmission;
        }
        let lease = table.v6.iter().find(|l| release.matches(l)).cloned();
        let deadline_ns = release.seen_ns + self.grace_ns;
        self.pending.insert(
            key,
            Pending6 {
                release,
                lease,
                renewed_since: false,
                server_down: self.server_down,
                server_went_down: false,
                retransmissions: 0,
                deadline_ns,
            },
        );
        Seen::Opened
    }

    /// A REPLY from the server: settles the releases it answers (same client DUID and xid);
    /// for other pending releases of the same client whose address it grants again, marks
    /// them renewed.
    pub fn on_reply(&mut self, packet: &Packet) -> Vec<Verdict6> {
        let Some(m) = packet.dhcpv6().filter(|m| m.code == code::REPLY) else {
            return Vec::new();
        };
        let Some(duid) = &m.client_duid else {
            return Vec::new();
        };
        let answered: Vec<Key> = self
            .pending
            .iter()
            .filter(|((_, d, _), p)| d == duid && p.release.xid == m.xid)
            .map(|(k, _)| k.clone())
            .collect();
        for p in self.pending.values_mut() {
            let granted = grants(m, p.release.iaid, p.release.address);
            if &p.release.client_duid == duid && p.release.xid != m.xid && granted {
                p.renewed_since = true;
            }
        }
        let mut verdicts = Vec::new();
        for key in answered {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let no_binding = m.ias.iter().any(|ia| {
                ia.status == Some(status::NO_BINDING) && ia.addresses.contains(&p.release.address)
            });
            let outcome = match m.status {
                Some(status::USE_MULTICAST) => Outcome6::Dropped(Cause6::UseMulticast),
                Some(s) if s != status::SUCCESS => Outcome6::Dropped(Cause6::Refused { status: s }),
                _ if no_binding => Outcome6::NoLease,
                _ => Outcome6::Honored,
            };
            verdicts.push(self.verdict(p, outcome, true, packet.meta.unix_ns));
        }
        verdicts
    }

    /// A new lease table: the server's DUID from its `duid` line, and the binding of each
    /// pending release the file did not show yet.
    pub fn on_table(&mut self, table: &LeaseTable) {
        if let Some(duid) = &table.server_duid {
            self.server_duid = Some(duid.clone());
            self.server_duid_from_file = true;
        }
        for p in self.pending.values_mut() {
            if p.lease.is_none() {
                p.lease = table.v6.iter().find(|l| p.release.matches(l)).cloned();
            }
        }
    }

    /// Releases past their deadline, unanswered.
    pub fn on_tick(&mut self, table: &LeaseTable, now_ns: i128) -> Vec<Verdict6> {
        self.recent
            .retain(|_, (_, at)| now_ns - *at < RETRANSMISSION_WINDOW_NS);
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ns <= now_ns)
            .map(|(k, _)| k.clone())
            .collect();
        let mut verdicts = Vec::new();
        for key in due {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let current = table.v6.iter().find(|l| p.release.matches(l));
            let outcome = match (current, &p.lease) {
                (Some(_), _) => Outcome6::Dropped(diagnose(
                    &p.release,
                    self.server_duid.as_deref(),
                    p.server_down,
                    p.server_went_down,
                )),
                (None, Some(_)) => Outcome6::Honored,
                (None, None) => Outcome6::NoLease,
            };
            let lease = current.cloned().or(p.lease.clone());
            let mut p = p;
            p.lease = lease;
            verdicts.push(self.verdict(p, outcome, false, now_ns));
        }
        verdicts
    }

    fn verdict(
        &mut self,
        p: Pending6,
        outcome: Outcome6,
        by_reply: bool,
        now_ns: i128,
    ) -> Verdict6 {
        self.recent
            .insert(p.release.key(), (p.release.xid, p.release.seen_ns));
        Verdict6 {
            outcome,
            expected_server_duid: self.server_duid.clone(),
            lease: p.lease,
            renewed_since: p.renewed_since,
            retransmissions: p.retransmissions,
            by_reply,
            settled_ns: now_ns,
            release: p.release,
        }
    }

    pub fn next_deadline_ns(&self) -> Option<i128> {
        self.pending.values().map(|p| p.deadline_ns).min()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a RELEASE of this client for this address waits for its verdict.
    pub fn is_pending_for(&self, lease: &Lease) -> bool {
        self.pending.values().any(|p| p.release.matches(lease))
    }
}

/// Whether a REPLY grants `address` in IA `iaid`: the address in the IA, with no status (an
/// answer to a RELEASE names an address only with its NoBinding, or Success in Kea's).
pub fn grants(reply: &dhcp_wire::Dhcpv6Info, iaid: u32, address: Ipv6Addr) -> bool {
    reply.code == code::REPLY
        && reply
            .ias
            .iter()
            .any(|ia| ia.iaid == iaid && ia.status.is_none() && ia.addresses.contains(&address))
}

/// Why an unanswered RELEASE whose binding is still in the file was ignored, in dnsmasq's order
/// (rfc3315.c checks the server id before anything else). A server known to be down when it was
/// sent received nothing, whatever the packet says; one that went down while it waited is the
/// cause only if the packet shows nothing the server would refuse.
pub fn diagnose(
    release: &Release6,
    server_duid: Option<&[u8]>,
    server_down: bool,
    server_went_down: bool,
) -> Cause6 {
    if server_down {
        return Cause6::NoServer;
    }
    match (&release.server_duid, server_duid) {
        (None, _) => Cause6::MissingServerId,
        (Some(received), Some(expected)) if received[..] != expected[..] => {
            Cause6::ServerIdMismatch {
                expected: expected.to_vec(),
                received: received.clone(),
            }
        }
        _ if server_went_down => Cause6::NoServer,
        _ => Cause6::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use dhcp_common::Hook;
    use dhcp_wire::test_support::{Dhcpv6Spec, v6_packet};

    use super::*;
    use crate::leases::Expiry;

    const CLIENT: [u8; 10] = [0, 3, 0, 1, 0x52, 0x54, 0, 0xaa, 0, 1];
    const SERVER: [u8; 10] = [0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 1];
    const OTHER_SERVER: [u8; 10] = [0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 2];
    const GRACE: i128 = 1_000_000_000;

    fn address() -> Ipv6Addr {
        "fd00::10".parse().unwrap()
    }

    fn table() -> LeaseTable {
        let mut table = LeaseTable {
            server_duid: Some(SERVER.to_vec()),
            ..LeaseTable::default()
        };
        table.insert(Lease {
            ip: address().into(),
            hwaddr: Vec::new(),
            htype: 0,
            client_id: Some(CLIENT.to_vec()),
            hostname: None,
            expiry: Expiry::At(2_000_000_000),
            iaid: Some(7),
        });
        table
    }

    fn release(xid: u32, server: Option<&[u8]>, at: i128) -> Packet {
        let spec = Dhcpv6Spec {
            code: code::RELEASE,
            xid,
            client_duid: Some(CLIENT.to_vec()),
            server_duid: server.map(<[u8]>::to_vec),
            ias: vec![(7, vec![address()], None)],
            ..Dhcpv6Spec::default()
        };
        v6_packet(&spec, at, Hook::TcEgress)
    }

    fn reply(xid: u32, top: Option<u16>, no_binding: bool, at: i128) -> Packet {
        let spec = Dhcpv6Spec {
            code: code::REPLY,
            xid,
            client_duid: Some(CLIENT.to_vec()),
            server_duid: Some(SERVER.to_vec()),
            status: top,
            ias: if no_binding {
                vec![(7, vec![address()], Some(status::NO_BINDING))]
            } else {
                Vec::new()
            },
        };
        v6_packet(&spec, at, Hook::TcIngress)
    }

    fn open(c: &mut Correlator6, packet: &Packet, table: &LeaseTable) -> Vec<Seen> {
        Release6::from_packet(packet)
            .into_iter()
            .map(|r| c.on_release(r, table))
            .collect()
    }

    fn correlator(table: &LeaseTable) -> Correlator6 {
        let mut c = Correlator6::new(GRACE);
        c.on_table(table);
        c
    }

    #[test]
    fn the_servers_reply_settles_a_release_from_the_wire() {
        let table = table();
        let cases = [
            (Some(status::SUCCESS), false, Outcome6::Honored),
            (None, false, Outcome6::Honored),
            (Some(status::SUCCESS), true, Outcome6::NoLease),
            (
                Some(status::USE_MULTICAST),
                false,
                Outcome6::Dropped(Cause6::UseMulticast),
            ),
            (
                Some(status::UNSPEC_FAIL),
                false,
                Outcome6::Dropped(Cause6::Refused { status: 1 }),
            ),
        ];
        for (top, no_binding, expected) in cases {
            let mut c = correlator(&table);
            assert_eq!(
                open(&mut c, &release(5, Some(&SERVER), 0), &table),
                [Seen::Opened]
            );
            // A reply to another transaction settles nothing.
            assert_eq!(c.on_reply(&reply(6, top, no_binding, 10)), vec![]);
            let verdicts = c.on_reply(&reply(5, top, no_binding, 20));
            assert_eq!(verdicts.len(), 1, "{top:?} {no_binding}");
            assert_eq!(verdicts[0].outcome, expected, "{top:?} {no_binding}");
            assert!(verdicts[0].by_reply);
            assert_eq!(c.pending(), 0);
        }
    }

    #[test]
    fn an_unanswered_release_is_judged_at_its_deadline_by_the_file() {
        let table = table();
        let received = OTHER_SERVER.to_vec();
        let cases: [(Option<&[u8]>, bool, bool, Outcome6); 5] = [
            (
                Some(&OTHER_SERVER),
                false,
                true,
                Outcome6::Dropped(Cause6::ServerIdMismatch {
                    expected: SERVER.to_vec(),
                    received,
                }),
            ),
            (
                None,
                false,
                true,
                Outcome6::Dropped(Cause6::MissingServerId),
            ),
            (
                Some(&SERVER),
                true,
                true,
                Outcome6::Dropped(Cause6::NoServer),
            ),
            (
                Some(&SERVER),
                false,
                true,
                Outcome6::Dropped(Cause6::Unknown),
            ),
            // The binding left the file: the reply was missed, the server honored it.
            (Some(&SERVER), false, false, Outcome6::Honored),
        ];
        for (server, down, still_there, expected) in cases {
            let mut c = correlator(&table);
            c.set_server_down(down);
            open(&mut c, &release(0, server, 0), &table);
            assert_eq!(c.next_deadline_ns(), Some(GRACE));
            assert_eq!(c.on_tick(&table, GRACE - 1), vec![], "not due yet");
            let now = if still_there {
                table.clone()
            } else {
                LeaseTable {
                    v6: Vec::new(),
                    ..table.clone()
                }
            };
            let verdicts = c.on_tick(&now, GRACE);
            assert_eq!(verdicts.len(), 1);
            assert_eq!(verdicts[0].outcome, expected, "{server:?} down {down}");
            assert!(!verdicts[0].by_reply);
        }
        // No binding ever: no_lease.
        let empty = LeaseTable::default();
        let mut c = correlator(&empty);
        open(&mut c, &release(0, Some(&SERVER), 0), &empty);
        assert_eq!(c.on_tick(&empty, GRACE)[0].outcome, Outcome6::NoLease);
    }

    /// dhcp_release6 with a wrong server id: five sends, 1 s apart, xid 0, no answer. One
    /// release, four retransmissions; and the right one again later is a release of its own.
    #[test]
    fn retransmissions_are_counted_once() {
        let table = table();
        let mut c = Correlator6::new(10 * GRACE);
        c.on_table(&table);
        let second = 1_000_000_000;
        let seen: Vec<Seen> = (0..5)
            .flat_map(|i| open(&mut c, &release(0, Some(&OTHER_SERVER), i * second), &table))
            .collect();
        assert_eq!(seen[0], Seen::Opened);
        assert!(
            seen[1..].iter().all(|s| *s == Seen::Retransmission),
            "{seen:?}"
        );
        let verdicts = c.on_tick(&table, 10 * GRACE);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].retransmissions, 4);
        // A copy after the verdict, inside the window, is still a copy.
        assert_eq!(
            open(&mut c, &release(0, Some(&OTHER_SERVER), 11 * GRACE), &table),
            [Seen::Retransmission]
        );
        // With the right server id and the same xid 0 long after: a new release.
        let later = RETRANSMISSION_WINDOW_NS + 2 * second;
        c.on_tick(&table, later);
        assert_eq!(
            open(&mut c, &release(0, Some(&SERVER), later), &table),
            [Seen::Opened]
        );
    }

    /// The right server id: dhcp_release6 reads no answer right after its first send (it
    /// arrives a moment later), so it sends again; the server answers the copy NoBinding. One
    /// release, honored, and the copy's answer is no verdict.
    #[test]
    fn the_answer_to_a_copy_is_not_a_verdict() {
        let table = table();
        let mut c = correlator(&table);
        open(&mut c, &release(0, Some(&SERVER), 0), &table);
        let verdicts = c.on_reply(&reply(0, Some(status::SUCCESS), false, 1_000));
        assert_eq!(verdicts[0].outcome, Outcome6::Honored);
        assert_eq!(
            open(&mut c, &release(0, Some(&SERVER), 1_000_000_000), &table),
            [Seen::Retransmission]
        );
        assert_eq!(
            c.on_reply(&reply(0, Some(status::SUCCESS), true, 1_000_001_000)),
            vec![]
        );
    }

    #[test]
    fn a_reply_granting_the_address_again_marks_the_release_renewed() {
        let table = table();
        let mut c = correlator(&table);
        open(&mut c, &release(9, Some(&OTHER_SERVER), 0), &table);
        // The client's RENEW answered: same DUID, another xid, the address in its IA.
        let renewal = Dhcpv6Spec {
            code: code::REPLY,
            xid: 10,
            client_duid: Some(CLIENT.to_vec()),
            server_duid: Some(SERVER.to_vec()),
            ias: vec![(7, vec![address()], None)],
            ..Dhcpv6Spec::default()
        };
        assert_eq!(c.on_reply(&v6_packet(&renewal, 5, Hook::TcIngress)), vec![]);
        let verdict = c.on_tick(&table, GRACE).remove(0);
        assert!(verdict.renewed_since);
        assert!(matches!(
            verdict.outcome,
            Outcome6::Dropped(Cause6::ServerIdMismatch { .. })
        ));
    }

    #[test]
    fn origin_follows_the_hook_and_the_duids_link_layer_address() {
        let spec = |duid: Vec<u8>| Dhcpv6Spec {
            code: code::RELEASE,
            client_duid: Some(duid),
            server_duid: Some(SERVER.to_vec()),
            ias: vec![(1, vec![address()], None)],
            ..Dhcpv6Spec::default()
        };
        // The test frames come from 52:54:00:aa:00:01.
        let own = [0, 3, 0, 1, 0x52, 0x54, 0, 0xaa, 0, 1].to_vec();
        let anothers = [0, 1, 0, 1, 1, 2, 3, 4, 0x52, 0x54, 0, 0xbb, 0, 9].to_vec();
        let opaque = [0, 2, 0, 0, 0, 9, 1].to_vec();
        let origin = |duid: &Vec<u8>, hook| {
            Release6::from_packet(&v6_packet(&spec(duid.clone()), 0, hook))[0].origin
        };
        assert_eq!(origin(&own, Hook::TcIngress), Origin::Guest);
        assert_eq!(origin(&anothers, Hook::TcIngress), Origin::Forged);
        assert_eq!(origin(&opaque, Hook::TcIngress), Origin::Guest);
        assert_eq!(origin(&anothers, Hook::TcEgress), Origin::Router);
        assert_eq!(
            duid_link_layer(&anothers),
            Some([0x52, 0x54, 0, 0xbb, 0, 9])
        );
    }
}
