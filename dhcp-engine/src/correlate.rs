//! Release correlation: did the server honor each RELEASE it was sent, and if not, why not.
//!
//! Every RELEASE seen (from a VM on a guest interface, or from `dhcp_release` over `lo`) opens a
//! pending record keyed by address and client. The lease table settles it: the lease is gone
//! before the deadline -> `honored`; still there at the deadline -> `dropped`, with the cause
//! dnsmasq's own checks give (in dnsmasq's order); no lease when the RELEASE was seen ->
//! `no_lease`. A lease that merely expires is never a release: only observed RELEASEs open
//! records.
use std::{cmp::Reverse, collections::BinaryHeap, net::Ipv4Addr};

use dhcp_wire::{Mac, MessageType, Packet};

use crate::{
    leases::{Expiry, Lease, LeaseTable},
    provenance::Origin,
    server_identity::ServerIdentity,
};

/// Why the server ignored a RELEASE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Option 54 is not the server's id (the redundant-VR `dhcp_release` case).
    ServerIdMismatch {
        expected: Ipv4Addr,
        received: Ipv4Addr,
    },
    MissingServerId,
    /// Option 50 present: dnsmasq then zeroes ciaddr and finds no lease.
    RequestedIpPresent,
    /// ciaddr is in no subnet the server serves.
    SubnetNotServed,
    /// The lease belongs to another client (chaddr / client id differ).
    ClientMismatch,
    /// No server was running (or answering) when the RELEASE was sent: a redundant router's
    /// BACKUP, a server stopped or crashed. The lease comes back with the server.
    NoServer,
    /// The server never received it: sent over `lo` (as `dhcp_release` sends, to the server's
    /// own address) while the server listens only on the guest interfaces. Kea 2.2 opens raw
    /// sockets on its configured interfaces only and logs nothing for such a packet
    /// (dhcp-lab/tests/kea_lab.rs).
    NotReceived,
    Unknown,
}

impl Cause {
    /// Every cause's [`Cause::name`] (the metrics' label set).
    pub const NAMES: [&'static str; 8] = [
        "server_id_mismatch",
        "missing_server_id",
        "requested_ip_present",
        "subnet_not_served",
        "client_mismatch",
        "no_server",
        "not_received",
        "unknown",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Cause::ServerIdMismatch { .. } => "server_id_mismatch",
            Cause::MissingServerId => "missing_server_id",
            Cause::RequestedIpPresent => "requested_ip_present",
            Cause::SubnetNotServed => "subnet_not_served",
            Cause::ClientMismatch => "client_mismatch",
            Cause::NoServer => "no_server",
            Cause::NotReceived => "not_received",
            Cause::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Honored,
    Dropped(Cause),
    NoLease,
}

impl Outcome {
    /// Every outcome's [`Outcome::name`] (the metrics' label set).
    pub const NAMES: [&'static str; 3] = ["honored", "dropped", "no_lease"];

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Honored => "honored",
            Outcome::Dropped(_) => "dropped",
            Outcome::NoLease => "no_lease",
        }
    }
}

/// Whose checks tell why a RELEASE the server kept was ignored: each server has its own, in
/// its own order ([`diagnose`] for dnsmasq, [`diagnose_kea`] for Kea).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerChecks {
    #[default]
    Dnsmasq,
    /// Kea; `loopback`: it listens on `lo` too (its `interfaces-config` names `lo`).
    Kea { loopback: bool },
}

impl ServerChecks {
    /// Why the server ignored `release` (see [`diagnose`]).
    pub fn diagnose(
        self,
        release: &Release,
        lease: Option<&Lease>,
        identity: &ServerIdentity,
    ) -> Cause {
        match self {
            ServerChecks::Dnsmasq => diagnose(release, lease, identity),
            ServerChecks::Kea { loopback } => diagnose_kea(release, lease, identity, loopback),
        }
    }
}

/// A RELEASE as observed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub seen_ns: i128,
    pub interface: String,
    pub xid: u32,
    pub ciaddr: Ipv4Addr,
    pub chaddr: Vec<u8>,
    pub client_id: Option<Vec<u8>>,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    /// Who sent it (the router, a guest, or a forger): only the router's are repaired by
    /// default, forged ones never.
    pub origin: Origin,
    /// The frame's Ethernet source (who sent a forged one), when it had one.
    pub sender: Option<Mac>,
}

impl Release {
    /// The RELEASE in a decoded packet, if it is one.
    pub fn from_packet(packet: &Packet) -> Option<Release> {
        let m = packet.dhcpv4()?;
        (m.message_type == Some(MessageType::Release)).then(|| Release {
            seen_ns: packet.meta.unix_ns,
            interface: packet.meta.interface.clone(),
            xid: m.xid,
            ciaddr: m.ciaddr,
            chaddr: m.chaddr.clone(),
            client_id: m.client_id.clone(),
            server_id: m.server_id,
            requested_ip: m.requested_ip,
            origin: Origin::of(packet),
            // `lo` frames carry zero addresses.
            sender: packet.src_mac.filter(|m| *m != [0; 6]).map(Mac),
        })
    }

    /// dnsmasq's lease lookup: by client id when the lease has one, else by hardware address.
    pub fn matches(&self, lease: &Lease) -> bool {
        match (&lease.client_id, &self.client_id) {
            (Some(lease_id), Some(id)) => lease_id == id,
            _ => lease.hwaddr == self.chaddr,
        }
    }
}

/// A settled release: what was seen, what became of it, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub release: Release,
    pub outcome: Outcome,
    /// The server id the server uses for that address, when known.
    pub expected_server_id: Option<Ipv4Addr>,
    /// The lease as the table first showed it after the RELEASE was seen.
    pub lease: Option<Lease>,
    /// The server ACKed the address to the same client after the RELEASE (a renewal, or the
    /// address granted again): whatever the table shows is then a lease the client wants, so a
    /// dropped release is still reported but never repaired.
    pub renewed_since: bool,
    /// The server's memory holds the lease though the file no longer lists it (a memory probe
    /// found it, after the file had said released): a repair then follows the memory, not the
    /// file's expiry.
    pub in_memory_only: bool,
    pub settled_ns: i128,
}

/// A RELEASE waiting for its verdict (what a restart saves and resumes: see
/// [`Correlator::pending_records`] and [`Correlator::resume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub release: Release,
    /// The lease as the table first showed it while this release was pending (`None` until
    /// the table shows one; the file lags the wire). Never updated after: a repair must
    /// release exactly that lease, and a renewal since (a new expiry) or a new owner must never
    /// be released on the strength of this RELEASE. It is also what tells `honored` (the lease
    /// was there, now it is gone) from `no_lease` (it never was).
    pub lease: Option<Lease>,
    /// The server ACKed this address to this client after the RELEASE.
    pub renewed_since: bool,
    /// The server was known to be down when the RELEASE was seen: a lease still there at the
    /// deadline is then `no_server`, whatever the packet said.
    pub server_down: bool,
    /// The server went down while the RELEASE waited: a lease still there at the deadline is
    /// `no_server` only when the packet itself shows nothing the server would refuse (after
    /// every expunge CloudStack restarts dnsmasq right after `dhcp_release`: its RELEASE met a
    /// running server, which ignored it for its server id).
    pub server_went_down: bool,
    pub deadline_ns: i128,
}

/// A pending record's key: the released address and the client's hardware address.
type PendingKey = (Ipv4Addr, Vec<u8>);

/// Keys come from clients: a hasher seeded per process (foldhash) keeps lookups fast (SipHash
/// showed in perf at 10,000 frames/s) without letting a client pick colliding keys in advance.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Pending releases and how to settle them.
///
/// The lease file lags the wire (the server rewrites it after handling a packet, and the agent
/// reads it after a debounce), so nothing is settled from a single look: a RELEASE waits until
/// its lease disappears (`honored`) or until the grace period ends (`dropped` if the lease is
/// still there, `no_lease` if there never was one).
#[derive(Debug)]
pub struct Correlator {
    grace_ns: i128,
    pending: HashMap<PendingKey, Pending>,
    /// The pending records' deadlines, earliest first, so that the deadline's wake-up settles
    /// only what is due. A scan of every pending record at every deadline, and one more per
    /// loop of the daemon for the next deadline, made the agent's CPU per packet grow with
    /// the releases in flight: at 10,000 DHCP frames/s (2,500 releases) 17% of its time went
    /// to deciding releases not due yet (perf, `cargo xtask bench --only storm`). An entry
    /// whose record was settled or refreshed since is skipped when it comes up (a heap cannot
    /// remove from the middle) and dropped at the next full settle.
    deadlines: BinaryHeap<Reverse<(i128, PendingKey)>>,
    /// Records taken up from a previous run that no table or tick has judged yet: their lease
    /// may have gone while the agent was down, so the next tick looks at all of them.
    resumed_unjudged: bool,
    /// Leases removed lately, with when: the server may rewrite its file before the agent has
    /// read the RELEASE out of the ring buffer, and that RELEASE was honored.
    recently_removed: HashMap<Ipv4Addr, (Lease, i128)>,
    /// The last ACK of each address lately: to which client, when. A client that gets a lease
    /// and releases it before the agent has read the file in between never shows in the table;
    /// the ACK on the wire proves the lease existed, so its disappearance is `honored`.
    recent_acks: HashMap<Ipv4Addr, RecentAck>,
    /// The server is down now (see [`crate::liveness`]).
    server_down: bool,
    /// Whose checks explain a drop.
    checks: ServerChecks,
}

impl Correlator {
    /// `grace_ns`: how long the server has to drop the lease from its table.
    pub fn new(grace_ns: i128) -> Correlator {
        Correlator {
            grace_ns,
            pending: HashMap::default(),
            deadlines: BinaryHeap::new(),
            resumed_unjudged: false,
            recently_removed: HashMap::default(),
            recent_acks: HashMap::default(),
            server_down: false,
            checks: ServerChecks::Dnsmasq,
        }
    }

    /// Explains drops with `checks` (dnsmasq's by default).
    pub fn with_checks(mut self, checks: ServerChecks) -> Correlator {
        self.checks = checks;
        self
    }

    /// The server went down (or came back): releases seen while it stays down reached no
    /// server; those pending when it went down may have (see [`Pending::server_went_down`]).
    pub fn set_server_down(&mut self, down: bool) {
        if down && !self.server_down {
            for pending in self.pending.values_mut() {
                pending.server_went_down = true;
            }
        }
        self.server_down = down;
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Addresses whose lease left the table lately (whatever the reason).
    pub fn recently_removed(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.recently_removed.keys().copied()
    }

    /// Releases waiting to be settled, with their deadlines.
    pub fn pending_releases(&self) -> impl Iterator<Item = (&Release, i128)> {
        self.pending.values().map(|p| (&p.release, p.deadline_ns))
    }

    /// Pending releases with what is known about each so far: what a restart must keep.
    pub fn pending_records(&self) -> impl Iterator<Item = &Pending> {
        self.pending.values()
    }

    /// Takes up a release a previous run saw and left pending (the agent was stopped within
    /// its grace), with its own seen time, deadline, saved lease and renewal flag: it is then
    /// judged like any other, at the next table or tick (at once if its deadline passed while
    /// the agent was down). Returns `false`, keeping what is pending, when a RELEASE of the same
    /// client for that address is pending already (seen since: the newer one counts).
    pub fn resume(&mut self, pending: Pending) -> bool {
        let key = (pending.release.ciaddr, pending.release.chaddr.clone());
        match self.pending.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                self.deadlines
                    .push(Reverse((pending.deadline_ns, slot.key().clone())));
                slot.insert(pending);
                self.resumed_unjudged = true;
                true
            }
        }
    }

    /// A RELEASE was seen: opens (or refreshes) a pending record; settles at once only when
    /// this client's lease was already removed since.
    pub fn on_release(
        &mut self,
        release: Release,
        table: &LeaseTable,
        identity: &ServerIdentity,
    ) -> Option<Verdict> {
        let key = (release.ciaddr, release.chaddr.clone());
        let now_ns = release.seen_ns;
        let pending = Pending {
            lease: table.get_v4(release.ciaddr).cloned(),
            renewed_since: false,
            server_down: self.server_down,
            server_went_down: false,
            deadline_ns: release.seen_ns + self.grace_ns,
            release,
        };
        self.deadlines
            .push(Reverse((pending.deadline_ns, key.clone())));
        self.pending.insert(key.clone(), pending);
        // Within its grace: no backlog can hold it yet.
        self.settle(table, now_ns, identity, Some(&key), NO_BACKLOG)
            .pop()
    }

    /// The server ACKed `ip` to the client `chaddr` at `seen_ns`, for `lease_time` seconds
    /// (option 51, if the ACK had it): a pending RELEASE of that lease from before is marked
    /// renewed (one lookup; ACKs are as frequent as RELEASEs).
    pub fn on_ack(&mut self, ip: Ipv4Addr, chaddr: &[u8], seen_ns: i128, lease_time: Option<u32>) {
        if let Some(pending) = self.pending.get_mut(&(ip, chaddr.to_vec()))
            && seen_ns > pending.release.seen_ns
        {
            pending.renewed_since = true;
        }
        self.recent_acks.insert(
            ip,
            RecentAck {
                chaddr: chaddr.to_vec(),
                at_ns: seen_ns,
                lease_time,
            },
        );
    }

    /// The lease table changed from `previous` to `table`: releases whose lease is gone are
    /// honored. The daemon holds both tables anyway, so the correlator keeps no copy of its own:
    /// finding the removals is one lookup per previous lease.
    pub fn on_table(
        &mut self,
        previous: &LeaseTable,
        table: &LeaseTable,
        now_ns: i128,
        identity: &ServerIdentity,
        backlog: Backlog<'_>,
    ) -> Vec<Verdict> {
        for (ip, lease) in &previous.v4 {
            if !table.v4.contains_key(ip) {
                self.recently_removed.insert(*ip, (lease.clone(), now_ns));
            }
        }
        let horizon = now_ns - 2 * self.grace_ns;
        self.recently_removed.retain(|_, (_, at)| *at >= horizon);
        self.recent_acks.retain(|_, ack| ack.at_ns >= horizon);
        self.settle(table, now_ns, identity, None, backlog)
    }

    /// The earliest deadline of a pending release: the daemon wakes up then, so a release is
    /// settled as soon as its grace is over rather than on the next periodic tick.
    /// (It may be that of a record settled since, which costs one early wake-up.)
    pub fn next_deadline_ns(&self) -> Option<i128> {
        self.deadlines
            .peek()
            .map(|Reverse((deadline, _))| *deadline)
    }

    /// The latest deadline of a pending release (the end of a capture settles them all).
    pub fn last_deadline_ns(&self) -> Option<i128> {
        self.pending.values().map(|p| p.deadline_ns).max()
    }

    /// Time passed: releases past their deadline are settled. Only those: one that is not due
    /// yet can change only with the table, which [`Correlator::on_table`] settles.
    /// `backlog` says whether the server may not have reached a packet seen at a time yet
    /// ([`crate::transactions::Transactions::backlog_before`]): an acceptable RELEASE behind
    /// one is not judged until the server is past it.
    pub fn on_tick(
        &mut self,
        table: &LeaseTable,
        now_ns: i128,
        identity: &ServerIdentity,
        backlog: Backlog<'_>,
    ) -> Vec<Verdict> {
        if std::mem::take(&mut self.resumed_unjudged) {
            return self.settle(table, now_ns, identity, None, backlog);
        }
        let lately = Lately {
            removed: &self.recently_removed,
            acked: &self.recent_acks,
            window_ns: self.grace_ns,
            checks: self.checks,
            backlog,
        };
        let mut settled = Vec::new();
        while let Some(Reverse((deadline, _))) = self.deadlines.peek()
            && *deadline <= now_ns
        {
            let Some(Reverse((deadline, key))) = self.deadlines.pop() else {
                break;
            };
            let Some(pending) = self.pending.get_mut(&key) else {
                continue; // settled since
            };
            if pending.deadline_ns != deadline {
                continue; // refreshed: its later entry stands
            }
            match decide(pending, table, now_ns, identity, &lately) {
                Some(verdict) => {
                    self.pending.remove(&key);
                    settled.push(verdict);
                }
                // Held behind the server's backlog: looked at again at its new deadline.
                None => self.deadlines.push(Reverse((pending.deadline_ns, key))),
            }
        }
        settled.sort_by_key(|v| v.release.seen_ns);
        settled
    }

    /// Settles what can be settled (all pending records, or just `only`: one lookup, so a
    /// burst of releases does not cost a scan of every pending one each).
    fn settle(
        &mut self,
        table: &LeaseTable,
        now_ns: i128,
        identity: &ServerIdentity,
        only: Option<&(Ipv4Addr, Vec<u8>)>,
        backlog: Backlog<'_>,
    ) -> Vec<Verdict> {
        if only.is_none() {
            self.resumed_unjudged = false;
        }
        let lately = Lately {
            removed: &self.recently_removed,
            acked: &self.recent_acks,
            window_ns: self.grace_ns,
            checks: self.checks,
            backlog,
        };
        let deadlines = &mut self.deadlines;
        // A record held behind the server's backlog has a new deadline: the heap gets it.
        let mut decide = |key: &PendingKey, pending: &mut Pending| {
            let deadline = pending.deadline_ns;
            let verdict = decide(pending, table, now_ns, identity, &lately);
            if verdict.is_none() && pending.deadline_ns != deadline {
                deadlines.push(Reverse((pending.deadline_ns, key.clone())));
            }
            verdict
        };
        if let Some(key) = only {
            let Some(verdict) = self
                .pending
                .get_mut(key)
                .and_then(|pending| decide(key, pending))
            else {
                return Vec::new();
            };
            self.pending.remove(key);
            return vec![verdict];
        }
        let mut settled = Vec::new();
        self.pending
            .retain(|key, pending| match decide(key, pending) {
                Some(verdict) => {
                    settled.push(verdict);
                    false
                }
                None => true,
            });
        let pending = &self.pending;
        self.deadlines.retain(|Reverse((deadline, key))| {
            pending.get(key).is_some_and(|p| p.deadline_ns == *deadline)
        });
        settled.sort_by_key(|v| v.release.seen_ns);
        settled
    }
}

/// The last ACK of an address the wire showed.
#[derive(Debug)]
struct RecentAck {
    chaddr: Vec<u8>,
    at_ns: i128,
    /// Option 51, seconds (`u32::MAX`: infinite).
    lease_time: Option<u32>,
}

impl RecentAck {
    /// Whether `lease` is the one this ACK made: dnsmasq writes the expiry as the time it
    /// answered plus the lease time, in whole seconds (a second or two of slack for the
    /// clocks of the wire and the server).
    fn made(&self, lease: &Lease) -> bool {
        match (self.lease_time, lease.expiry) {
            (Some(u32::MAX), Expiry::Never) => true,
            (Some(secs), Expiry::At(expiry)) if secs != u32::MAX => {
                let acked = u64::try_from(self.at_ns / 1_000_000_000).unwrap_or(0);
                let made = acked + u64::from(secs);
                (made.saturating_sub(1)..=made + 2).contains(&expiry)
            }
            _ => false,
        }
    }
}

/// Whether the server may not have reached a packet seen at the given time yet (asked only of
/// a RELEASE about to be judged dropped for no reason the packet shows).
pub type Backlog<'a> = &'a dyn Fn(i128) -> bool;

/// No backlog: every packet has been handled (the end of a capture, a release within its grace).
pub const NO_BACKLOG: Backlog<'static> = &|_| false;

/// How soon a RELEASE held behind the server's backlog is looked at again.
pub const BACKLOG_RECHECK_NS: i128 = 250_000_000;

/// How long after the server answered what was ahead of a RELEASE it still counts as behind:
/// its lease file lags its answers (the agent reads the file 30 ms after a change settles).
pub const BACKLOG_FILE_LAG_NS: i128 = 500_000_000;

/// What the wire and the table showed lately, beside the table itself.
struct Lately<'a> {
    removed: &'a HashMap<Ipv4Addr, (Lease, i128)>,
    acked: &'a HashMap<Ipv4Addr, RecentAck>,
    /// How far before a RELEASE a removal or an ACK still counts for it.
    window_ns: i128,
    checks: ServerChecks,
    backlog: Backlog<'a>,
}

fn decide(
    pending: &mut Pending,
    table: &LeaseTable,
    now_ns: i128,
    identity: &ServerIdentity,
    lately: &Lately,
) -> Option<Verdict> {
    let release = &pending.release;
    let current = table.get_v4(release.ciaddr);
    let since = release.seen_ns - lately.window_ns;
    let removed_since = lately
        .removed
        .get(&release.ciaddr)
        .filter(|(lease, at)| *at >= since && release.matches(lease))
        .map(|(lease, _)| lease);
    // The server ACKed the address to this client shortly before: the lease existed even if
    // the table never showed it.
    let acked = lately.acked.get(&release.ciaddr).filter(|ack| {
        ack.chaddr == release.chaddr && ack.at_ns >= since && ack.at_ns <= release.seen_ns
    });
    let acked_before = acked.is_some();
    // The lease the RELEASE was for is the one the table showed then, unless the server ACKed
    // it to this client just before and the table now shows the very lease that ACK made (its
    // expiry is the ACK's time plus its lease time): the table read at the RELEASE predated the
    // file's rewrite for that ACK. A VM that renewed and was expunged at once kept the older
    // expiry, and the repair then took the lease in the file for another one and forgot it
    // (the soak, 2026-12-01). Any other change (a renewal the agent did not see) is not taken.
    if pending.lease.is_none()
        || current.is_some_and(|lease| {
            release.matches(lease)
                && pending.lease.as_ref() != Some(lease)
                && acked.is_some_and(|ack| ack.made(lease))
        })
    {
        pending.lease = current.cloned();
    }
    let outcome = match current {
        None if pending.lease.is_some() || removed_since.is_some() => Outcome::Honored,
        // Never in the table, but ACKed just before: the lease came and went between two reads
        // of the file. Only at the deadline: until then the file may simply not list it yet.
        None if now_ns >= pending.deadline_ns && acked_before => Outcome::Honored,
        None if now_ns >= pending.deadline_ns => Outcome::NoLease,
        Some(_) if now_ns >= pending.deadline_ns && pending.server_down => {
            Outcome::Dropped(Cause::NoServer)
        }
        Some(lease) if now_ns >= pending.deadline_ns => Outcome::Dropped(
            match lately.checks.diagnose(release, Some(lease), identity) {
                Cause::Unknown if pending.server_went_down => Cause::NoServer,
                // Nothing in the packet the server would refuse, and the server may not have
                // reached it: a dnsmasq pinging for a new client handles it seconds late
                // (dhcp-agent/tests/correlate.rs, a_release_queued_behind_a_ping...). Held
                // until the server is past it: at most the DISCOVER timeout.
                Cause::Unknown if (lately.backlog)(release.seen_ns) => {
                    pending.deadline_ns = now_ns + BACKLOG_RECHECK_NS;
                    return None;
                }
                cause => cause,
            },
        ),
        _ => return None,
    };
    Some(Verdict {
        release: release.clone(),
        outcome,
        expected_server_id: identity.expected_for(release.ciaddr).map(|k| k.server_id),
        lease: pending.lease.clone().or_else(|| removed_since.cloned()),
        renewed_since: pending.renewed_since,
        in_memory_only: false,
        settled_ns: now_ns,
    })
}

/// What the wire alone proves about a RELEASE: a reason the server will ignore it, as a person
/// reads it (`None` when the packet itself is acceptable).
pub fn wire_flag(release: &Release, identity: &ServerIdentity) -> Option<String> {
    match diagnose(release, None, identity) {
        Cause::ServerIdMismatch { expected, received } => Some(format!(
            "server id mismatch: option 54 is {received}, the server uses {expected}"
        )),
        Cause::MissingServerId => Some("no server id (option 54): the server ignores it".into()),
        Cause::RequestedIpPresent => Some("option 50 present: the server looks up no lease".into()),
        Cause::SubnetNotServed => Some("address in no subnet the server serves".into()),
        Cause::NotReceived => Some("sent where the server does not listen: never received".into()),
        Cause::ClientMismatch | Cause::NoServer | Cause::Unknown => None,
    }
}

/// Why the server ignored `release`, checking in the order dnsmasq does. `lease` is the lease as
/// the file lists it, when it does (the client check needs it).
pub fn diagnose(release: &Release, lease: Option<&Lease>, identity: &ServerIdentity) -> Cause {
    let Some(received) = release.server_id else {
        return Cause::MissingServerId;
    };
    if let Some(known) = identity.expected_for(release.ciaddr)
        && known.server_id != received
    {
        return Cause::ServerIdMismatch {
            expected: known.server_id,
            received,
        };
    }
    if release.requested_ip.is_some() {
        return Cause::RequestedIpPresent;
    }
    if identity.serves(release.ciaddr) == Some(false) {
        return Cause::SubnetNotServed;
    }
    if lease.is_some_and(|lease| !release.matches(lease)) {
        return Cause::ClientMismatch;
    }
    Cause::Unknown
}

/// Why Kea 2.2 ignored `release`, in Kea's order (src/bin/dhcp4/dhcp4_srv.cc at Kea-2.2.0,
/// each seen in dhcp-lab/tests/kea_lab.rs). `loopback`: Kea listens on `lo`.
///
/// 1. Not received: seen on `lo` while Kea listens only on its configured interfaces (raw
///    sockets there; nothing in its log).
/// 2. `Dhcpv4Srv::acceptServerId`: option 54 present but not an address Kea has a socket on
///    nor a configured server id: `DHCP4_PACKET_DROP_0003 ... foreign server identifier`.
///    Without option 54 Kea accepts a RELEASE (its sanity check makes it optional), so a missing
///    id is no cause; nor is option 50, nor the subnet: `processRelease` looks the lease up by
///    ciaddr alone, in no subnet.
/// 3. `processRelease`: the lease belongs to another client (`Lease4::belongsToClient`: the
///    client ids when both have one, else the hardware address; the same rule as
///    [`Release::matches`]): `DHCP4_RELEASE_FAIL_WRONG_CLIENT`. (No lease at all,
///    `DHCP4_RELEASE_FAIL_NO_LEASE`, is the outcome `no_lease`, not a drop.)
pub fn diagnose_kea(
    release: &Release,
    lease: Option<&Lease>,
    identity: &ServerIdentity,
    loopback: bool,
) -> Cause {
    if release.interface == "lo" && !loopback {
        return Cause::NotReceived;
    }
    if let Some(received) = release.server_id
        && !identity.is_server_id(received)
        && let Some(expected) = identity
            .expected_for(release.ciaddr)
            .or_else(|| identity.known().next())
    {
        return Cause::ServerIdMismatch {
            expected: expected.server_id,
            received,
        };
    }
    if lease.is_some_and(|lease| !release.matches(lease)) {
        return Cause::ClientMismatch;
    }
    Cause::Unknown
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        dnsmasq_conf::{DhcpRange, DnsmasqConfig},
        leases::Expiry,
    };

    const VIP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
    const PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);
    const IP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 150);
    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x10, 0, 1];
    const SECOND: i128 = 1_000_000_000;

    fn identity() -> ServerIdentity {
        let config = DnsmasqConfig {
            listen_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(VIP)],
            ranges: vec![DhcpRange {
                start: Ipv4Addr::new(172, 29, 101, 100),
                end: Some(Ipv4Addr::new(172, 29, 101, 200)),
                netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            }],
            ..DnsmasqConfig::default()
        };
        ServerIdentity::from_config(&config, &[])
    }

    fn lease(ip: Ipv4Addr) -> Lease {
        Lease {
            ip: ip.into(),
            hwaddr: MAC.to_vec(),
            htype: 1,
            client_id: None,
            hostname: None,
            expiry: Expiry::At(9_999_999_999),
            iaid: None,
        }
    }

    fn table_with(ip: Ipv4Addr) -> LeaseTable {
        let mut table = LeaseTable::default();
        table.insert(lease(ip));
        table
    }

    fn release(server_id: Option<Ipv4Addr>) -> Release {
        Release {
            seen_ns: 100 * SECOND,
            interface: "lo".into(),
            xid: 0,
            ciaddr: IP,
            chaddr: MAC.to_vec(),
            client_id: None,
            server_id,
            requested_ip: None,
            origin: Origin::Router,
            sender: None,
        }
    }

    /// Opens a pending record for `r` and lets the grace period pass with the lease still there.
    fn dropped_cause(r: Release, lease: Lease) -> Cause {
        let identity = identity();
        let mut table = LeaseTable::default();
        table.insert(lease);
        let mut correlator = Correlator::new(2 * SECOND);
        assert_eq!(correlator.on_release(r.clone(), &table, &identity), None);
        assert!(
            correlator
                .on_tick(&table, r.seen_ns + SECOND, &identity, NO_BACKLOG)
                .is_empty(),
            "still in grace"
        );
        let verdicts = correlator.on_tick(&table, r.seen_ns + 2 * SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts.len(), 1);
        match &verdicts[0].outcome {
            Outcome::Dropped(cause) => cause.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// An acceptable RELEASE behind the server's backlog (a DISCOVER it is still pinging for)
    /// waits for the server: honored when it gets to it, dropped only once the backlog is gone
    /// and the lease is still there. A RELEASE the server refuses whatever it does is judged at
    /// its deadline, backlog or not.
    #[test]
    fn an_acceptable_release_behind_the_servers_backlog_waits_for_it() {
        let identity = identity();
        let table = table_with(IP);
        let r = Release {
            interface: "guest0".into(),
            ..release(Some(VIP))
        };
        let busy: Backlog = &|seen| seen >= 99 * SECOND;
        let mut correlator = Correlator::new(2 * SECOND);
        correlator.on_release(r.clone(), &table, &identity);
        let deadline = r.seen_ns + 2 * SECOND;
        assert!(
            correlator
                .on_tick(&table, deadline, &identity, busy)
                .is_empty()
        );
        assert_eq!(
            correlator.next_deadline_ns(),
            Some(deadline + BACKLOG_RECHECK_NS),
            "looked at again soon"
        );
        let later = deadline + 2 * SECOND;
        assert!(
            correlator
                .on_tick(&table, later, &identity, busy)
                .is_empty()
        );
        // The server got to it: the lease left the file.
        let verdicts = correlator.on_table(&table, &LeaseTable::default(), later, &identity, busy);
        assert_eq!(verdicts[0].outcome, Outcome::Honored);

        // Past the backlog with the lease still there: dropped, with no reason known.
        correlator.on_release(r.clone(), &table, &identity);
        assert!(
            correlator
                .on_tick(&table, deadline, &identity, busy)
                .is_empty()
        );
        let verdicts = correlator.on_tick(&table, deadline + SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].outcome, Outcome::Dropped(Cause::Unknown));

        // The wrong server id is dropped at its deadline whatever the server is doing.
        correlator.on_release(release(Some(PRIMARY)), &table, &identity);
        let verdicts = correlator.on_tick(&table, deadline, &identity, busy);
        assert!(
            matches!(
                verdicts[0].outcome,
                Outcome::Dropped(Cause::ServerIdMismatch { .. })
            ),
            "{verdicts:?}"
        );
    }

    #[test]
    fn the_redundant_vr_dhcp_release_is_dropped_for_server_id_mismatch() {
        let cause = dropped_cause(release(Some(PRIMARY)), lease(IP));
        assert_eq!(
            cause,
            Cause::ServerIdMismatch {
                expected: VIP,
                received: PRIMARY
            }
        );
        assert_eq!(cause.name(), "server_id_mismatch");
    }

    /// Deadlines come off a heap: a tick settles exactly the releases that are due, in the
    /// order they were seen, and a release seen again is judged at its new deadline only.
    #[test]
    fn a_tick_settles_exactly_the_releases_due_and_a_refreshed_one_at_its_new_deadline() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let mut table = LeaseTable::default();
        let client = |k: u8| Release {
            ciaddr: Ipv4Addr::new(172, 29, 101, 100 + k),
            chaddr: vec![0x52, 0x54, 0, 0, 0, k],
            seen_ns: 100 * SECOND + i128::from(k) * SECOND / 10,
            ..release(Some(VIP))
        };
        for k in 0..10 {
            table.insert(lease(client(k).ciaddr));
        }
        // Opened out of order; client 3 sends its RELEASE again a second later.
        for k in [4, 0, 9, 3, 1, 2, 8, 5, 7, 6] {
            assert!(
                correlator
                    .on_release(client(k), &table, &identity)
                    .is_none()
            );
        }
        let again = Release {
            seen_ns: client(3).seen_ns + SECOND,
            ..client(3)
        };
        assert!(correlator.on_release(again, &table, &identity).is_none());
        assert_eq!(
            correlator.next_deadline_ns(),
            Some(client(0).seen_ns + 2 * SECOND)
        );
        // Up to client 5's deadline: 0..=5 but 3 (refreshed), in the order seen.
        let due = correlator.on_tick(
            &table,
            client(5).seen_ns + 2 * SECOND,
            &identity,
            NO_BACKLOG,
        );
        let settled: Vec<u8> = due.iter().map(|v| v.release.chaddr[5]).collect();
        assert_eq!(settled, vec![0, 1, 2, 4, 5]);
        assert!(due.iter().all(|v| matches!(v.outcome, Outcome::Dropped(_))));
        assert_eq!(correlator.pending(), 5);
        let rest = correlator.on_tick(&table, 200 * SECOND, &identity, NO_BACKLOG);
        let settled: Vec<u8> = rest.iter().map(|v| v.release.chaddr[5]).collect();
        assert_eq!(settled, vec![6, 7, 8, 9, 3]);
        assert_eq!(correlator.pending(), 0);
        assert_eq!(correlator.next_deadline_ns(), None);
    }

    /// The VM renewed, then was expunged, faster than the agent read the file in between: the
    /// RELEASE finds the older lease in the table, the file then shows the renewed one. The
    /// ACK on the wire before the RELEASE made that lease (its time plus option 51 is the
    /// expiry), so it is the one held; a lease no ACK the agent saw made is not.
    #[test]
    fn a_lease_renewed_just_before_its_release_is_the_one_held() {
        let identity = identity();
        let r = release(Some(PRIMARY));
        let acked_ns = r.seen_ns - SECOND / 10;
        let made_by_ack = 99 + 3600; // the ACK's second plus its lease time
        let held = |expiry: u64| {
            let mut correlator = Correlator::new(2 * SECOND);
            let before = table_with(IP);
            let mut after = LeaseTable::default();
            after.insert(Lease {
                expiry: Expiry::At(expiry),
                ..lease(IP)
            });
            correlator.on_ack(IP, &MAC, acked_ns, Some(3600));
            assert_eq!(correlator.on_release(r.clone(), &before, &identity), None);
            assert!(
                correlator
                    .on_table(
                        &before,
                        &after,
                        r.seen_ns + SECOND / 10,
                        &identity,
                        NO_BACKLOG
                    )
                    .is_empty()
            );
            let verdicts =
                correlator.on_tick(&after, r.seen_ns + 2 * SECOND, &identity, NO_BACKLOG);
            assert_eq!(verdicts.len(), 1);
            assert!(matches!(verdicts[0].outcome, Outcome::Dropped(_)));
            assert!(!verdicts[0].renewed_since);
            verdicts[0].lease.as_ref().map(|l| l.expiry)
        };
        assert_eq!(held(made_by_ack), Some(Expiry::At(made_by_ack)));
        assert_eq!(held(made_by_ack + 1), Some(Expiry::At(made_by_ack + 1)));
        // A renewal the agent did not see (a later expiry): the lease seen at the RELEASE stands,
        // and the repair's table check then finds it gone.
        assert_eq!(held(made_by_ack + 600), Some(lease(IP).expiry));
    }

    /// Without an ACK just before, a lease that changed after the RELEASE is not taken for it
    /// (the table seen at the RELEASE stands).
    #[test]
    fn a_lease_changed_without_an_ack_is_not_the_one_released() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let r = release(Some(PRIMARY));
        let before = table_with(IP);
        let mut after = LeaseTable::default();
        after.insert(Lease {
            expiry: Expiry::At(9_999_999_999 + 40),
            ..lease(IP)
        });
        assert_eq!(correlator.on_release(r.clone(), &before, &identity), None);
        correlator.on_table(
            &before,
            &after,
            r.seen_ns + SECOND / 10,
            &identity,
            NO_BACKLOG,
        );
        let verdicts = correlator.on_tick(&after, r.seen_ns + 2 * SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].lease, Some(lease(IP)));
    }

    #[test]
    fn every_other_drop_cause() {
        assert_eq!(
            dropped_cause(release(None), lease(IP)),
            Cause::MissingServerId
        );
        let with_50 = Release {
            requested_ip: Some(IP),
            ..release(Some(VIP))
        };
        assert_eq!(dropped_cause(with_50, lease(IP)), Cause::RequestedIpPresent);
        let elsewhere = Ipv4Addr::new(10, 9, 9, 9);
        let unserved = Release {
            ciaddr: elsewhere,
            ..release(Some(VIP))
        };
        assert_eq!(
            dropped_cause(unserved, lease(elsewhere)),
            Cause::SubnetNotServed
        );
        let other_client = Release {
            chaddr: vec![2; 6],
            ..release(Some(VIP))
        };
        assert_eq!(
            dropped_cause(other_client, lease(IP)),
            Cause::ClientMismatch
        );
        let with_id = Lease {
            client_id: Some(vec![1, 2, 3]),
            ..lease(IP)
        };
        let wrong_id = Release {
            client_id: Some(vec![1, 2, 4]),
            ..release(Some(VIP))
        };
        assert_eq!(dropped_cause(wrong_id, with_id), Cause::ClientMismatch);
        assert_eq!(dropped_cause(release(Some(VIP)), lease(IP)), Cause::Unknown);
    }

    /// [`dropped_cause`] with Kea's checks, for a RELEASE seen on `interface`.
    fn kea_dropped_cause(r: Release, lease: Lease, interface: &str, loopback: bool) -> Cause {
        let identity = identity();
        let mut table = LeaseTable::default();
        table.insert(lease);
        let mut correlator =
            Correlator::new(2 * SECOND).with_checks(ServerChecks::Kea { loopback });
        let r = Release {
            interface: interface.into(),
            ..r
        };
        assert_eq!(correlator.on_release(r.clone(), &table, &identity), None);
        let verdicts = correlator.on_tick(&table, r.seen_ns + 2 * SECOND, &identity, NO_BACKLOG);
        match &verdicts[..] {
            [verdict] => match &verdict.outcome {
                Outcome::Dropped(cause) => cause.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// Kea's decision table, in Kea's order: what it never received, then its server id
    /// check, then the lease's owner; what dnsmasq refuses and Kea does not (no option 54,
    /// option 50, an unserved subnet) is no cause.
    #[test]
    fn kea_drops_for_its_own_reasons_in_its_own_order() {
        let other_client = |server_id| Release {
            chaddr: vec![2; 6],
            ..release(server_id)
        };
        let elsewhere = Ipv4Addr::new(10, 9, 9, 9);
        let table: [(Release, Lease, &str, bool, Cause); 11] = [
            // `dhcp_release` over lo, even with the right server id.
            (
                release(Some(VIP)),
                lease(IP),
                "lo",
                false,
                Cause::NotReceived,
            ),
            (
                release(Some(PRIMARY)),
                lease(IP),
                "lo",
                false,
                Cause::NotReceived,
            ),
            (
                other_client(Some(PRIMARY)),
                lease(IP),
                "lo",
                false,
                Cause::NotReceived,
            ),
            // Kea listening on lo receives it; its other checks apply.
            (release(Some(VIP)), lease(IP), "lo", true, Cause::Unknown),
            (
                release(Some(PRIMARY)),
                lease(IP),
                "lo",
                true,
                Cause::ServerIdMismatch {
                    expected: VIP,
                    received: PRIMARY,
                },
            ),
            // A guest's RELEASE with a foreign server id, even another client's.
            (
                other_client(Some(PRIMARY)),
                lease(IP),
                "guest0",
                false,
                Cause::ServerIdMismatch {
                    expected: VIP,
                    received: PRIMARY,
                },
            ),
            (
                other_client(Some(VIP)),
                lease(IP),
                "guest0",
                false,
                Cause::ClientMismatch,
            ),
            (
                other_client(None),
                lease(IP),
                "guest0",
                false,
                Cause::ClientMismatch,
            ),
            // No option 54: Kea accepts it (dnsmasq would not).
            (release(None), lease(IP), "guest0", false, Cause::Unknown),
            (
                Release {
                    requested_ip: Some(IP),
                    ..release(Some(VIP))
                },
                lease(IP),
                "guest0",
                false,
                Cause::Unknown,
            ),
            (
                Release {
                    ciaddr: elsewhere,
                    ..release(Some(VIP))
                },
                lease(elsewhere),
                "guest0",
                false,
                Cause::Unknown,
            ),
        ];
        for (r, lease, interface, loopback, want) in table {
            let label = format!("{r:?} on {interface}, loopback {loopback}");
            assert_eq!(
                kea_dropped_cause(r, lease, interface, loopback),
                want,
                "{label}"
            );
        }
        // dnsmasq's checks are unchanged by default.
        assert_eq!(
            dropped_cause(release(None), lease(IP)),
            Cause::MissingServerId
        );
    }

    /// A server id Kea uses for another of its subnets is its own: Kea accepts any address
    /// it has a socket on.
    #[test]
    fn kea_accepts_any_of_its_server_ids() {
        let mut identity = identity();
        let other = Ipv4Addr::new(172, 29, 102, 1);
        // Kea's ACK on its second subnet, as it leaves the router.
        let mut ack = dhcp_lab::frames::Dhcpv4Spec::new(
            dhcp_lab::frames::MessageType::Ack,
            9,
            [0x52, 0x54, 0, 0, 0, 9],
        );
        ack.yiaddr = Ipv4Addr::new(172, 29, 102, 100);
        ack.server_id = Some(other);
        ack.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        let frame = dhcp_lab::frames::ipv4_udp(
            &dhcp_lab::frames::Framing::default(),
            other,
            Ipv4Addr::BROADCAST,
            (67, 68),
            &ack.encode(),
        )
        .unwrap();
        let meta = dhcp_wire::FrameMeta {
            interface: "guest1".into(),
            hook: dhcp_common::Hook::TcEgress,
            ..dhcp_wire::test_support::lo_meta()
        };
        identity.observe(&dhcp_wire::decode_frame(&frame, meta));
        let r = Release {
            interface: "guest1".into(),
            ..release(Some(other))
        };
        assert!(identity.is_server_id(other), "learned from the ACK");
        let kea = ServerChecks::Kea { loopback: false };
        assert_eq!(
            kea.diagnose(&r, Some(&lease(IP)), &identity),
            Cause::Unknown
        );
        assert!(matches!(
            ServerChecks::Dnsmasq.diagnose(&r, Some(&lease(IP)), &identity),
            Cause::ServerIdMismatch { .. }
        ));
    }

    #[test]
    fn the_next_deadline_is_the_earliest_grace_end() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        assert_eq!(correlator.next_deadline_ns(), None);
        let first = release(Some(VIP));
        let seen = first.seen_ns;
        correlator.on_release(first, &table_with(IP), &identity);
        assert_eq!(correlator.next_deadline_ns(), Some(seen + 2 * SECOND));
        // Settled at its deadline: nothing left to wake up for.
        let verdicts =
            correlator.on_tick(&table_with(IP), seen + 2 * SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(correlator.next_deadline_ns(), None);
    }

    #[test]
    fn a_release_whose_lease_goes_is_honored() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        assert_eq!(
            correlator.on_release(release(Some(VIP)), &table_with(IP), &identity),
            None
        );
        assert_eq!(correlator.pending(), 1);
        let verdicts = correlator.on_table(
            &table_with(IP),
            &LeaseTable::default(),
            100 * SECOND + 1,
            &identity,
            NO_BACKLOG,
        );
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].outcome, Outcome::Honored);
        assert_eq!(verdicts[0].expected_server_id, Some(VIP));
        assert_eq!(correlator.pending(), 0);
    }

    #[test]
    fn a_release_read_after_the_server_already_dropped_the_lease_is_honored() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let empty = LeaseTable::default();
        correlator.on_table(&empty, &table_with(IP), 99 * SECOND, &identity, NO_BACKLOG);
        correlator.on_table(
            &table_with(IP),
            &empty,
            100 * SECOND + 5,
            &identity,
            NO_BACKLOG,
        );
        let verdict = correlator
            .on_release(release(Some(VIP)), &LeaseTable::default(), &identity)
            .unwrap();
        assert_eq!(verdict.outcome, Outcome::Honored);
        // Another client's RELEASE for that address is not honored by that removal.
        let other = Release {
            chaddr: vec![9; 6],
            ..release(Some(VIP))
        };
        assert_eq!(
            correlator.on_release(other, &LeaseTable::default(), &identity),
            None
        );
    }

    #[test]
    fn a_lease_acked_and_released_between_two_reads_of_the_file_is_honored() {
        // The file never listed it: ACK, RELEASE and the removal all fell between two reads.
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let r = release(Some(VIP));
        correlator.on_ack(IP, &MAC, r.seen_ns - SECOND, None);
        let empty = LeaseTable::default();
        assert_eq!(correlator.on_release(r.clone(), &empty, &identity), None);
        assert!(
            correlator
                .on_tick(&empty, r.seen_ns + SECOND, &identity, NO_BACKLOG)
                .is_empty(),
            "not before the deadline: the file may only lag"
        );
        let verdicts = correlator.on_tick(&empty, r.seen_ns + 2 * SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].outcome, Outcome::Honored);
        // Another client's ACK proves nothing about this client's lease.
        let mut correlator = Correlator::new(2 * SECOND);
        correlator.on_ack(IP, &[2, 0, 0, 0, 0, 9], r.seen_ns - SECOND, None);
        correlator.on_release(r.clone(), &empty, &identity);
        let verdicts = correlator.on_tick(&empty, r.seen_ns + 2 * SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].outcome, Outcome::NoLease);
    }

    #[test]
    fn a_lease_that_shows_up_late_in_the_table_still_counts() {
        // The RELEASE is read before the file lists the lease; the lease then stays: dropped.
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let r = release(Some(PRIMARY));
        assert_eq!(
            correlator.on_release(r.clone(), &LeaseTable::default(), &identity),
            None
        );
        assert!(
            correlator
                .on_table(
                    &LeaseTable::default(),
                    &table_with(IP),
                    r.seen_ns + SECOND,
                    &identity,
                    NO_BACKLOG
                )
                .is_empty()
        );
        let verdicts = correlator.on_tick(
            &table_with(IP),
            r.seen_ns + 2 * SECOND,
            &identity,
            NO_BACKLOG,
        );
        assert_eq!(
            verdicts[0].outcome,
            Outcome::Dropped(Cause::ServerIdMismatch {
                expected: VIP,
                received: PRIMARY
            })
        );
    }

    #[test]
    fn a_release_without_a_lease_is_no_lease_after_the_grace() {
        let identity = identity();
        let mut correlator = Correlator::new(SECOND);
        let empty = LeaseTable::default();
        assert_eq!(
            correlator.on_release(release(Some(VIP)), &empty, &identity),
            None
        );
        assert!(
            correlator
                .on_tick(&empty, 100 * SECOND + SECOND - 1, &identity, NO_BACKLOG)
                .is_empty()
        );
        let verdicts = correlator.on_tick(&empty, 100 * SECOND + SECOND, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].outcome, Outcome::NoLease);
    }

    /// What the last run left pending about `release(server_id)`: its deadline two seconds
    /// after it was seen, and the lease the table showed then, if any.
    fn saved(server_id: Option<Ipv4Addr>, lease_then: Option<Lease>) -> Pending {
        let release = release(server_id);
        Pending {
            deadline_ns: release.seen_ns + 2 * SECOND,
            release,
            lease: lease_then,
            renewed_since: false,
            server_down: false,
            server_went_down: false,
        }
    }

    #[test]
    fn a_resumed_release_keeps_its_own_deadline() {
        // Restarted one second into the grace: the release waits for its original deadline,
        // not a new grace, and is dropped there with its cause.
        let identity = identity();
        let mut correlator = Correlator::new(10 * SECOND);
        let pending = saved(Some(PRIMARY), Some(lease(IP)));
        let (seen, deadline) = (pending.release.seen_ns, pending.deadline_ns);
        assert!(correlator.resume(pending));
        assert_eq!(correlator.pending(), 1);
        assert_eq!(correlator.next_deadline_ns(), Some(deadline));
        assert!(
            correlator
                .on_tick(&table_with(IP), deadline - 1, &identity, NO_BACKLOG)
                .is_empty()
        );
        let verdicts = correlator.on_tick(&table_with(IP), deadline, &identity, NO_BACKLOG);
        assert_eq!(verdicts.len(), 1);
        let verdict = &verdicts[0];
        assert_eq!(
            verdict.outcome,
            Outcome::Dropped(Cause::ServerIdMismatch {
                expected: VIP,
                received: PRIMARY
            })
        );
        assert_eq!(verdict.release.seen_ns, seen);
        assert_eq!(verdict.lease, Some(lease(IP)));
        assert_eq!(correlator.pending(), 0);
    }

    #[test]
    fn a_resumed_release_past_its_deadline_is_settled_on_the_first_tick() {
        let identity = identity();
        let late = 200 * SECOND; // the agent was down for well over the grace
        // The lease is still there: dropped, with its cause, once.
        let mut correlator = Correlator::new(2 * SECOND);
        correlator.resume(saved(Some(PRIMARY), Some(lease(IP))));
        let verdicts = correlator.on_tick(&table_with(IP), late, &identity, NO_BACKLOG);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].outcome.name(), "dropped");
        assert_eq!(verdicts[0].settled_ns, late);
        assert!(
            correlator
                .on_tick(&table_with(IP), late + SECOND, &identity, NO_BACKLOG)
                .is_empty()
        );
        // The lease the table showed is gone: honored, not no_lease.
        let empty = LeaseTable::default();
        let mut correlator = Correlator::new(2 * SECOND);
        correlator.resume(saved(Some(VIP), Some(lease(IP))));
        let verdicts = correlator.on_tick(&empty, late, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].outcome, Outcome::Honored);
        assert_eq!(verdicts[0].lease, Some(lease(IP)));
        // The table never showed it: no_lease.
        let mut correlator = Correlator::new(2 * SECOND);
        correlator.resume(saved(Some(VIP), None));
        let verdicts = correlator.on_tick(&empty, late, &identity, NO_BACKLOG);
        assert_eq!(verdicts[0].outcome, Outcome::NoLease);
        assert_eq!(verdicts[0].lease, None);
    }

    #[test]
    fn a_resumed_release_whose_lease_went_within_the_grace_is_honored_at_once() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let pending = saved(Some(VIP), Some(lease(IP)));
        let within = pending.release.seen_ns + SECOND;
        correlator.resume(pending);
        let verdicts = correlator.on_tick(&LeaseTable::default(), within, &identity, NO_BACKLOG);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].outcome, Outcome::Honored);
    }

    #[test]
    fn a_resumed_release_keeps_its_renewal_and_yields_to_a_newer_release() {
        let identity = identity();
        let mut correlator = Correlator::new(2 * SECOND);
        let renewed = Pending {
            renewed_since: true,
            ..saved(Some(PRIMARY), Some(lease(IP)))
        };
        correlator.resume(renewed);
        let verdicts = correlator.on_tick(&table_with(IP), 200 * SECOND, &identity, NO_BACKLOG);
        assert!(verdicts[0].renewed_since, "{verdicts:?}");

        // A RELEASE of the same client seen since start-up is the one that counts.
        let mut correlator = Correlator::new(2 * SECOND);
        let newer = Release {
            seen_ns: 300 * SECOND,
            xid: 7,
            ..release(Some(PRIMARY))
        };
        correlator.on_release(newer, &table_with(IP), &identity);
        assert!(!correlator.resume(saved(Some(PRIMARY), Some(lease(IP)))));
        assert_eq!(correlator.pending(), 1);
        let kept: Vec<u32> = correlator
            .pending_records()
            .map(|p| p.release.xid)
            .collect();
        assert_eq!(kept, [7]);
    }

    #[test]
    fn the_label_sets_name_every_variant() {
        let causes = [
            Cause::ServerIdMismatch {
                expected: VIP,
                received: PRIMARY,
            },
            Cause::MissingServerId,
            Cause::RequestedIpPresent,
            Cause::SubnetNotServed,
            Cause::ClientMismatch,
            Cause::NoServer,
            Cause::NotReceived,
            Cause::Unknown,
        ];
        assert_eq!(causes.map(|c| c.name()), Cause::NAMES);
        let outcomes = [
            Outcome::Honored,
            Outcome::Dropped(Cause::Unknown),
            Outcome::NoLease,
        ];
        assert_eq!(outcomes.map(|o| o.name()), Outcome::NAMES);
    }

    #[test]
    fn an_expiring_lease_is_not_a_release() {
        let identity = identity();
        let mut correlator = Correlator::new(SECOND);
        assert!(
            correlator
                .on_table(
                    &LeaseTable::default(),
                    &LeaseTable::default(),
                    0,
                    &identity,
                    NO_BACKLOG
                )
                .is_empty()
        );
        assert!(
            correlator
                .on_tick(&table_with(IP), 10 * SECOND, &identity, NO_BACKLOG)
                .is_empty()
        );
    }
}
