//! The observer: one type that takes what the agent sees (decoded packets, reads of the lease
//! file, the server's answers to probes and repairs, the passing of time) and returns what it
//! makes of it as [`Finding`]s. `run` fans findings out to events, the state file and the
//! metrics; `analyze` turns them into a report; `watch` uses the server identity it learns.
//!
//! Every method takes its time as an argument ([`Now`]), and nothing here reads a clock, a file
//! or a socket, so the same inputs give the same findings, live or offline.
use std::{collections::HashSet, net::Ipv4Addr, time::Duration, time::Instant};

use dhcp_wire::{Mac, MessageType, Packet};

use crate::{
    correlate::{self, Correlator, Outcome, Pending, Release, ServerChecks, Verdict},
    correlate6::{self, Correlator6, Outcome6, Release6, Seen, Verdict6},
    leases::{
        Lease, LeaseTable,
        emptied::{self, EmptyFileGuard, expired},
    },
    liveness::{Liveness, ServerCheck, ServerStatus},
    outstanding::{
        Basis, Outstanding, OutstandingRelease, RateLimit, Repair, RepairResult, RepairStep,
    },
    outstanding6::{Outstanding6, Repair6},
    provenance::{OwnXids, RogueServer, TrustedServer, rogue_reply},
    reconcile::{Intent, ReconcileConfig, Reconciled, Reconciler},
    server_identity::{KnownServer, ServerIdentity},
    transactions::{TransactionEvent, Transactions},
};

/// The time of an input: wall clock (what events and deadlines use, in step with the capture's
/// timestamps) and monotonic (what the rate limit and the empty-file hold measure with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub unix_ns: i128,
    pub mono: Instant,
}

/// What the observer is told to do.
#[derive(Debug, Clone)]
pub struct ObserverConfig {
    /// How long the server has to drop a released lease.
    pub grace: Duration,
    /// A DISCOVER with no OFFER after this long counts as unanswered.
    pub discover_timeout: Duration,
    /// Confirm in the server's memory that a lease the file dropped is gone
    /// ([`Finding::CheckMemory`]).
    pub probe_memory: bool,
    /// Repair dropped releases; `None`: report only.
    pub repair: Option<RepairPolicy>,
    /// How long a lease file that suddenly lists nothing is held back.
    pub empty_file_hold: Duration,
    /// Orphans: when reported, when repairable.
    pub reconcile: ReconcileConfig,
    /// Seeds the xids of the agent's own packets (random per run).
    pub own_xid_seed: u32,
    /// Servers besides this router's that may answer on its networks (not rogue).
    pub trusted_servers: Vec<TrustedServer>,
    /// Which server this is (dnsmasq or Kea): whose checks explain a dropped release.
    pub server_checks: ServerChecks,
}

impl Default for ObserverConfig {
    fn default() -> ObserverConfig {
        ObserverConfig {
            grace: Duration::from_secs(2),
            discover_timeout: Duration::from_secs(30),
            probe_memory: false,
            repair: None,
            empty_file_hold: emptied::EMPTY_FILE_HOLD,
            reconcile: ReconcileConfig::default(),
            own_xid_seed: 0,
            trusted_servers: Vec::new(),
            server_checks: ServerChecks::Dnsmasq,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairPolicy {
    /// Repairs per minute, in bursts of up to 10.
    pub per_minute: u32,
    /// Report what would be repaired, send nothing.
    pub dry_run: bool,
    /// Also repair releases guests sent from their own address (by default only the router's
    /// own, `dhcp_release` over `lo`, are: a guest's could be a test, a mistake or hostile).
    pub guest_releases: bool,
    /// Release orphan leases past their settle time.
    pub orphans: bool,
}

impl RepairPolicy {
    /// Only the router's dropped releases and orphans, `per_minute`.
    pub fn new(per_minute: u32) -> RepairPolicy {
        RepairPolicy {
            per_minute,
            dry_run: false,
            guest_releases: false,
            orphans: true,
        }
    }

    fn allows(&self, basis: Basis) -> bool {
        match basis {
            Basis::RouterRelease => true,
            Basis::GuestRelease => self.guest_releases,
            Basis::Orphan => self.orphans,
        }
    }
}

/// One read of the lease file, as the agent got it.
#[derive(Debug)]
pub enum LeaseFileRead {
    Table(LeaseTable),
    Missing,
    Unreadable,
    Invalid,
}

/// What became of a read of the lease file (a metric label: [`ReloadResult::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Missing,
    Unreadable,
    Invalid,
    /// The file lists nothing, and leases it listed were neither released nor expired: not
    /// believed yet.
    Empty,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 5] = [
        ReloadResult::Ok,
        ReloadResult::Missing,
        ReloadResult::Unreadable,
        ReloadResult::Invalid,
        ReloadResult::Empty,
    ];
    /// Every result's [`ReloadResult::name`] (the metrics' label set).
    pub const NAMES: [&'static str; 5] = ["ok", "missing", "unreadable", "invalid", "empty"];

    pub fn name(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Missing => "missing",
            ReloadResult::Unreadable => "unreadable",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Empty => "empty",
        }
    }
}

/// How the lease file and the server's memory disagree about a lease (a metric label:
/// [`DivergenceKind::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DivergenceKind {
    ServerHoldsLeaseMissingFromFile,
    FileListsLeaseServerDoesNotHold,
}

impl DivergenceKind {
    pub const ALL: [DivergenceKind; 2] = [
        DivergenceKind::ServerHoldsLeaseMissingFromFile,
        DivergenceKind::FileListsLeaseServerDoesNotHold,
    ];
    /// Every kind's [`DivergenceKind::name`] (the metrics' label set).
    pub const NAMES: [&'static str; 2] = [
        "server_holds_lease_missing_from_file",
        "file_lists_lease_server_does_not_hold",
    ];

    pub fn name(self) -> &'static str {
        match self {
            DivergenceKind::ServerHoldsLeaseMissingFromFile => {
                "server_holds_lease_missing_from_file"
            }
            DivergenceKind::FileListsLeaseServerDoesNotHold => {
                "file_lists_lease_server_does_not_hold"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub kind: DivergenceKind,
    pub ip: Ipv4Addr,
    pub mac: Option<Mac>,
}

/// What the observer made of its inputs, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The server's id for a subnet, learned or changed.
    ServerLearned(KnownServer),
    /// An exchange completed, a NAK, an unanswered DISCOVER.
    Exchange(TransactionEvent),
    /// A RELEASE settled.
    Settled(Verdict),
    /// A DHCPv6 RELEASE (or DECLINE) settled: one verdict per address.
    Settled6(Verdict6),
    /// A copy of a DHCPv6 RELEASE pending or settled lately: counted, not judged again.
    Retransmission6(Release6),
    /// The DHCPv6 server's DUID, learned or changed (from its REPLY or ADVERTISE, or the lease
    /// file's `duid` line).
    ServerDuidLearned(Vec<u8>),
    /// The file says this released lease is gone (or never was): ask the server's memory and
    /// answer with [`Observer::on_memory_answer`]; the verdict is settled then.
    CheckMemory(Verdict),
    /// A repair to make (or to report, for a dry run or the rate limit); answer a sent one with
    /// [`Observer::on_repair_result`].
    Repair(Repair, RepairStep),
    /// A DHCPv6 repair (a RELEASE naming the server's DUID); answer a sent one with
    /// [`Observer::on_repair6_result`].
    Repair6(Repair6, RepairStep),
    /// The file and the server's memory disagree (each reported once, again only after it was
    /// resolved).
    Divergence(Divergence),
    /// A read of the lease file and what was done with it.
    LeaseFile(ReloadResult),
    /// The server came up or went down (or its role changed).
    Server(ServerStatus),
    /// Reconciliation of the table with the declared hosts found an orphan or a blocked host
    /// (or one ended).
    Reconciled(Reconciled),
    /// A server reply arrived on a guest network from a host that is not this router.
    Rogue(RogueServer),
    /// One of the agent's own probes or repairs (or the server's answer to it), recognised by
    /// its xid: neither judged nor counted as clients' traffic.
    OwnPacket,
    /// The first lease table was taken: the observer can judge releases.
    Ready,
    /// What the observer decided and why, for the operator's log.
    Note(String),
}

/// The observer; see the module documentation.
#[derive(Debug)]
pub struct Observer {
    config: ObserverConfig,
    identity: ServerIdentity,
    transactions: Transactions,
    correlator: Correlator,
    correlator6: Correlator6,
    outstanding6: Outstanding6,
    table: LeaseTable,
    /// A lease table has been taken (before that, releases wait in `unresumed`).
    table_loaded: bool,
    empty_file: EmptyFileGuard,
    outstanding: Outstanding,
    limit: RateLimit,
    /// Something may be due for repair (a new dropped release, time for a retry).
    repairs_due: bool,
    /// Releases a previous run left pending, until there is a lease table to judge them by.
    unresumed: Vec<Pending>,
    /// Divergences reported by the last scan.
    divergent: HashSet<(DivergenceKind, Ipv4Addr)>,
    /// Where the resumed releases come from (the state file), for the note.
    resumed_from: String,
    reconciler: Reconciler,
    liveness: Liveness,
    own_xids: OwnXids,
    /// Rogue servers seen, by interface and MAC.
    rogues: HashSet<(String, Option<Mac>)>,
}

fn nanos(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX / 4)
}

impl Observer {
    pub fn new(config: ObserverConfig, identity: ServerIdentity) -> Observer {
        let per_minute = config.repair.map_or(0, |r| r.per_minute);
        let (config_reconcile, own_xid_seed) = (config.reconcile, config.own_xid_seed);
        Observer {
            transactions: Transactions::new(config.discover_timeout),
            correlator: Correlator::new(nanos(config.grace)).with_checks(config.server_checks),
            correlator6: Correlator6::new(nanos(config.grace)),
            outstanding6: Outstanding6::default(),
            empty_file: EmptyFileGuard::new(config.empty_file_hold),
            limit: RateLimit::new(per_minute, per_minute.clamp(1, 10)),
            config,
            identity,
            table: LeaseTable::default(),
            table_loaded: false,
            outstanding: Outstanding::default(),
            repairs_due: false,
            unresumed: Vec::new(),
            divergent: HashSet::new(),
            resumed_from: String::new(),
            reconciler: Reconciler::new(config_reconcile),
            liveness: Liveness::default(),
            own_xids: OwnXids::new(own_xid_seed),
            rogues: HashSet::new(),
        }
    }

    /// Takes up what a previous run left: releases pending (judged once a lease table is
    /// taken: a missing file is no proof that their leases are gone), dropped releases still
    /// outstanding (checked against the next table) and orphans that renewed (alive: never
    /// released). `source` names where they come from in
    /// the note said when they are taken up.
    pub fn resume(
        &mut self,
        pending: Vec<Pending>,
        outstanding: Vec<OutstandingRelease>,
        renewed_orphans: Vec<(Ipv4Addr, Mac)>,
        source: &str,
        out: &mut Vec<Finding>,
    ) {
        self.reconciler.resume_renewed(renewed_orphans);
        self.outstanding = Outstanding::from_saved(outstanding);
        self.repairs_due = !self.outstanding.is_empty();
        self.unresumed = pending;
        self.resumed_from = source.to_owned();
        if self.table_loaded {
            self.take_unresumed(out);
        }
    }

    fn take_unresumed(&mut self, out: &mut Vec<Finding>) {
        if self.unresumed.is_empty() {
            return;
        }
        let saved = std::mem::take(&mut self.unresumed);
        let resumed = saved
            .into_iter()
            .filter(|p| self.correlator.resume(p.clone()))
            .count();
        out.push(Finding::Note(format!(
            "resuming {resumed} pending releases from {}",
            self.resumed_from
        )));
    }

    /// Whether `packet` is one of the agent's own (or the server's answer to one).
    pub fn is_own(&self, packet: &Packet) -> bool {
        packet.dhcpv4().is_some_and(|m| self.own_xids.is_own(m.xid))
            || packet
                .dhcpv6()
                .is_some_and(|m| m.xid != 0 && self.own_xids.is_own(m.xid))
    }

    /// One decoded packet. Returns whether it was a RELEASE (it opened a pending record).
    pub fn on_packet(&mut self, packet: &Packet, out: &mut Vec<Finding>) -> bool {
        if self.is_own(packet) {
            out.push(Finding::OwnPacket);
            return false;
        }
        if let Some(done) = self.transactions.on_packet(packet) {
            out.push(Finding::Exchange(done));
        }
        if let Some(known) = self.identity.observe(packet) {
            out.push(Finding::ServerLearned(known.clone()));
        }
        // A reply carrying this router's own server id comes from the other router of a
        // redundant pair (the MASTER, seen from the BACKUP): not a rogue's.
        let rogue = rogue_reply(packet).filter(|(_, _, r)| {
            !r.server_id.is_some_and(|id| self.identity.is_server_id(id))
                && !self.config.trusted_servers.iter().any(|t| t.is(r))
        });
        let from_rogue = rogue.is_some();
        if let Some((interface, mac, mut rogue)) = rogue {
            rogue.first = self.rogues.insert((interface, mac));
            out.push(Finding::Rogue(rogue));
        }
        if packet.dhcpv6().is_some() {
            return self.on_dhcpv6(packet, out);
        }
        let Some(m) = packet.dhcpv4() else {
            return false;
        };
        // An ACK from this router's server: the client renewed (or got the address again).
        if m.op == 2
            && m.message_type == Some(MessageType::Ack)
            && !m.yiaddr.is_unspecified()
            && !from_rogue
        {
            self.correlator
                .on_ack(m.yiaddr, &m.chaddr, packet.meta.unix_ns, m.lease_time);
            self.outstanding.on_renewed(m.yiaddr, &m.chaddr);
            let mut found = Vec::new();
            self.reconciler.on_ack(m.yiaddr, &m.chaddr, &mut found);
            out.extend(found.into_iter().map(Finding::Reconciled));
        }
        let Some(release) = Release::from_packet(packet) else {
            return false;
        };
        if let Some(verdict) = self
            .correlator
            .on_release(release, &self.table, &self.identity)
        {
            self.settle(verdict, out);
        }
        true
    }

    /// A DHCPv6 message: the server's DUID from its replies, a REPLY settling releases (or
    /// granting an address again), a RELEASE or DECLINE opening records.
    fn on_dhcpv6(&mut self, packet: &Packet, out: &mut Vec<Finding>) -> bool {
        let Some(m) = packet.dhcpv6() else {
            return false;
        };
        if matches!(
            m.code,
            dhcp_wire::dhcpv6::code::ADVERTISE | dhcp_wire::dhcpv6::code::REPLY
        ) && let Some(duid) = &m.server_duid
            && let Some(learned) = self.correlator6.learn_server_duid(duid)
        {
            out.push(Finding::ServerDuidLearned(learned));
        }
        if m.code == dhcp_wire::dhcpv6::code::REPLY {
            if let Some(duid) = &m.client_duid {
                for ia in &m.ias {
                    for address in &ia.addresses {
                        if correlate6::grants(m, ia.iaid, *address) {
                            self.outstanding6.on_renewed(*address, duid);
                        }
                    }
                }
            }
            for verdict in self.correlator6.on_reply(packet) {
                self.settled6(verdict, out);
            }
            return false;
        }
        let releases = Release6::from_packet(packet);
        let opened = !releases.is_empty();
        for release in releases {
            if self.correlator6.on_release(release.clone(), &self.table) == Seen::Retransmission {
                out.push(Finding::Retransmission6(release));
            }
        }
        opened
    }

    fn settled6(&mut self, verdict: Verdict6, out: &mut Vec<Finding>) {
        self.outstanding6.on_verdict(&verdict);
        self.repairs_due |= matches!(verdict.outcome, Outcome6::Dropped(_));
        out.push(Finding::Settled6(verdict));
    }

    /// A read of the lease file. A missing, unreadable or broken file, or an empty one that
    /// nothing explains, keeps the last good table: it must not look like every lease was
    /// released.
    pub fn on_lease_file(&mut self, read: LeaseFileRead, now: Now, out: &mut Vec<Finding>) {
        let new = match read {
            LeaseFileRead::Table(table) => table,
            failed => {
                self.empty_file.forget();
                out.push(Finding::LeaseFile(match failed {
                    LeaseFileRead::Missing => ReloadResult::Missing,
                    LeaseFileRead::Unreadable => ReloadResult::Unreadable,
                    _ => ReloadResult::Invalid,
                }));
                self.settle_due(now, out);
                return;
            }
        };
        let held_since = self.empty_file.held_since();
        let verdict = self.empty_file.check(
            &self.table,
            &new,
            now.mono,
            accounted_for(&self.correlator, &self.outstanding, now.unix_ns),
        );
        let held = matches!(verdict, emptied::Verdict::Hold { .. });
        out.push(Finding::LeaseFile(if held {
            ReloadResult::Empty
        } else {
            ReloadResult::Ok
        }));
        self.take_judged(verdict, held_since, new, now, out);
    }

    /// Acts on the empty-file guard's verdict on `new`, with a note when an empty file is held
    /// back and when that ends.
    fn take_judged(
        &mut self,
        verdict: emptied::Verdict,
        held_since: Option<Instant>,
        new: LeaseTable,
        now: Now,
        out: &mut Vec<Finding>,
    ) {
        let held_for = |since: Instant| now.mono.saturating_duration_since(since).as_secs_f64();
        match (verdict, held_since) {
            (emptied::Verdict::Hold { unexplained }, None) => {
                out.push(Finding::Note(format!(
                    "the lease file lists no lease, but {unexplained} of the {} leases it listed \
                     were neither released nor expired: keeping them until the server writes \
                     the file again (a rewrite in progress, or the file was truncated behind \
                     its back)",
                    self.table.v4.len()
                )));
                return self.settle_due(now, out);
            }
            (emptied::Verdict::Hold { .. }, Some(_)) => return self.settle_due(now, out),
            (emptied::Verdict::HeldTooLong { unexplained }, _) => {
                out.push(Finding::Note(format!(
                    "the lease file has listed no lease for {}s: believing it ({unexplained} \
                     leases gone without a RELEASE)",
                    self.config.empty_file_hold.as_secs()
                )));
            }
            (emptied::Verdict::Believe, Some(since)) if new.v4.is_empty() => {
                out.push(Finding::Note(format!(
                    "the lease file: believing it empty after {:.1}s, every lease it dropped \
                     being released or expired by now",
                    held_for(since)
                )));
            }
            (emptied::Verdict::Believe, Some(since)) => out.push(Finding::Note(format!(
                "the lease file lists leases again ({}) after {:.1}s empty",
                new.v4.len(),
                held_for(since)
            ))),
            (emptied::Verdict::Believe, None) => {}
        }
        let known_duid = self.correlator6.server_duid().map(<[u8]>::to_vec);
        self.correlator6.on_table(&new);
        if let Some(duid) = self.correlator6.server_duid()
            && known_duid.as_deref() != Some(duid)
        {
            out.push(Finding::ServerDuidLearned(duid.to_vec()));
        }
        self.outstanding6.refresh(&new);
        let previous = std::mem::replace(&mut self.table, new);
        if !self.table_loaded {
            self.table_loaded = true;
            out.push(Finding::Ready);
            self.take_unresumed(out);
        }
        self.outstanding.refresh(&self.table);
        let verdicts = self.correlator.on_table(
            &previous,
            &self.table,
            now.unix_ns,
            &self.identity,
            &backlog(&self.transactions, now.unix_ns),
        );
        self.settle_all(verdicts, out);
        self.reconcile(now, out);
    }

    /// The declared hosts (read at start-up and after every change of the host files or the
    /// configuration): the table is reconciled with them at once.
    pub fn on_intent(&mut self, intent: Intent, now: Now, out: &mut Vec<Finding>) {
        self.reconciler.set_intent(intent);
        self.reconcile(now, out);
    }

    fn reconcile(&mut self, now: Now, out: &mut Vec<Finding>) {
        if !self.table_loaded {
            return; // no table to judge yet
        }
        let mut found = Vec::new();
        self.reconciler
            .reconcile(&self.table, now.unix_ns, &mut found);
        for finding in &found {
            if let Reconciled::OrphanEnded { ip, reason, .. } = finding
                && *reason != "released"
            {
                // Declared again or renewed: not owed any more (unless tried already).
                self.outstanding.forget_if(*ip, Basis::Orphan);
            }
        }
        self.repairs_due |= !found.is_empty();
        out.extend(found.into_iter().map(Finding::Reconciled));
    }

    /// A look at the server (socket on port 67, probe answered). While it is down, releases
    /// settle as `no_server` and no repair is planned; when it comes back, the repairs owed
    /// run.
    pub fn on_server_check(&mut self, check: ServerCheck, now: Now, out: &mut Vec<Finding>) {
        if let Some(status) = self.liveness.on_check(check, now.mono) {
            self.repairs_due |= status.up;
            out.push(Finding::Server(status));
        }
        self.correlator.set_server_down(self.liveness.is_down());
        self.correlator6.set_server_down(self.liveness.is_down());
    }

    /// An xid for a packet the agent sends now (a probe): recognised when it is captured.
    pub fn own_xid(&mut self, now: Now) -> u32 {
        self.own_xids.issue(now.unix_ns)
    }

    /// Releases past their grace are settled (the agent wakes up at
    /// [`Observer::next_deadline_ns`]).
    pub fn settle_due(&mut self, now: Now, out: &mut Vec<Finding>) {
        let verdicts = self.correlator.on_tick(
            &self.table,
            now.unix_ns,
            &self.identity,
            &backlog(&self.transactions, now.unix_ns),
        );
        self.settle_all(verdicts, out);
        for verdict in self.correlator6.on_tick(&self.table, now.unix_ns) {
            self.settled6(verdict, out);
        }
    }

    /// Time passed: unanswered DISCOVERs, an empty lease file held long enough, releases past
    /// their grace.
    pub fn on_tick(&mut self, now: Now, out: &mut Vec<Finding>) {
        self.expire_exchanges(now.unix_ns, out);
        let mut found = Vec::new();
        self.reconciler.on_tick(now.unix_ns, &mut found);
        self.repairs_due |= !found.is_empty();
        out.extend(found.into_iter().map(Finding::Reconciled));
        if let Some(held_since) = self.empty_file.held_since()
            && let Some(verdict) = self.empty_file.recheck(
                &self.table,
                now.mono,
                accounted_for(&self.correlator, &self.outstanding, now.unix_ns),
            )
        {
            return self.take_judged(verdict, Some(held_since), LeaseTable::default(), now, out);
        }
        self.settle_due(now, out);
    }

    /// DISCOVERs unanswered by `now_ns`.
    pub fn expire_exchanges(&mut self, now_ns: i128, out: &mut Vec<Finding>) {
        out.extend(
            self.transactions
                .on_tick(now_ns)
                .into_iter()
                .map(Finding::Exchange),
        );
    }

    /// The end of a capture (`analyze`): every release still pending is settled now, against
    /// the lease table and the server ids learned anywhere in it.
    pub fn finish(&mut self, end_ns: i128, out: &mut Vec<Finding>) {
        let grace = nanos(self.config.grace);
        self.expire_exchanges(end_ns + nanos(self.config.discover_timeout), out);
        let last = self.correlator.last_deadline_ns().unwrap_or(end_ns);
        // Nothing more will come: every release is judged now.
        let verdicts = self.correlator.on_tick(
            &self.table,
            last.max(end_ns + grace),
            &self.identity,
            correlate::NO_BACKLOG,
        );
        self.settle_all(verdicts, out);
        let last6 = self.correlator6.next_deadline_ns().unwrap_or(end_ns);
        for verdict in self.correlator6.on_tick(
            &self.table,
            last6.max(end_ns + grace) + correlate6::RETRANSMISSION_WINDOW_NS,
        ) {
            self.settled6(verdict, out);
        }
    }

    fn settle_all(&mut self, verdicts: Vec<Verdict>, out: &mut Vec<Finding>) {
        for verdict in verdicts {
            self.settle(verdict, out);
        }
    }

    /// A verdict from the file: settled, or first checked in the server's memory (a
    /// hand-edited file drops the line while the server still holds the lease).
    fn settle(&mut self, verdict: Verdict, out: &mut Vec<Finding>) {
        if self.config.probe_memory
            && matches!(verdict.outcome, Outcome::Honored | Outcome::NoLease)
        {
            out.push(Finding::CheckMemory(verdict));
            return;
        }
        self.settled(verdict, out);
    }

    fn settled(&mut self, verdict: Verdict, out: &mut Vec<Finding>) {
        self.outstanding.on_verdict(&verdict);
        // A dropped release may leave a new entry to repair.
        self.repairs_due |= matches!(verdict.outcome, Outcome::Dropped(_));
        out.push(Finding::Settled(verdict));
    }

    /// The server's memory on a [`Finding::CheckMemory`]: `Some(true)` holds the lease (the
    /// release was dropped after all, and the file diverges), `Some(false)` does not, `None`
    /// the probe failed (the file's word stands).
    pub fn on_memory_answer(
        &mut self,
        mut verdict: Verdict,
        held: Option<bool>,
        out: &mut Vec<Finding>,
    ) {
        if held == Some(true) {
            let r = &verdict.release;
            out.push(Finding::Divergence(Divergence {
                kind: DivergenceKind::ServerHoldsLeaseMissingFromFile,
                ip: r.ciaddr,
                mac: Mac::from_slice(&r.chaddr),
            }));
            verdict.outcome = Outcome::Dropped(self.config.server_checks.diagnose(
                r,
                verdict.lease.as_ref(),
                &self.identity,
            ));
            verdict.in_memory_only = true;
        }
        self.settled(verdict, out);
    }

    /// The repairs due now (with `--remediate`): each outstanding release not tried yet whose
    /// lease the table still shows as at the RELEASE, and each orphan past its settle time, as
    /// far as the rate limit allows; the rest wait for a later call. `retry`: time for those
    /// the rate limit held back. Never a lease whose client a host line declares, never one
    /// the policy leaves alone, nothing while the server is down (they wait for it).
    pub fn plan_repairs(&mut self, now: Now, retry: bool, out: &mut Vec<Finding>) {
        let Some(policy) = self.config.repair else {
            return;
        };
        if !(self.repairs_due || retry) || self.liveness.is_down() {
            return;
        }
        self.repairs_due = false;
        if policy.orphans {
            let settled: Vec<OutstandingRelease> = self
                .reconciler
                .settled_orphans(now.unix_ns)
                .filter_map(|(lease, since)| OutstandingRelease::orphan(lease, since))
                .collect();
            for entry in settled {
                self.outstanding.add(entry);
            }
        }
        self.reconciler.note_clients(
            self.outstanding.iter().map(OutstandingRelease::as_lease),
            now.unix_ns,
        );
        let (identity, reconciler) = (&self.identity, &self.reconciler);
        // Whatever the reason to release a lease, its client must have been undeclared for the
        // settle time (a hosts file read mid-rewrite declares no one for a moment).
        let repairable = |entry: &OutstandingRelease| {
            let lease = entry.as_lease();
            policy.allows(entry.basis)
                && reconciler.undeclared_for_settle(&lease, now.unix_ns)
                && (entry.basis != Basis::Orphan
                    || reconciler.is_settled_orphan(&lease, now.unix_ns))
        };
        let due = self.outstanding.due(
            &self.table,
            |ip| identity.expected_for(ip).map(|k| k.server_id),
            repairable,
            &mut self.limit,
            now.mono,
            policy.dry_run,
        );
        for (mut repair, step) in due {
            repair.xid = self.own_xids.issue(now.unix_ns);
            repair.probe_xid = self.own_xids.issue(now.unix_ns);
            out.push(Finding::Repair(repair, step));
        }
        let own_xids = &mut self.own_xids;
        let due6 = self.outstanding6.due(
            &self.table,
            self.correlator6.server_duid(),
            |basis| policy.allows(basis),
            &mut self.limit,
            now.mono,
            policy.dry_run,
            || own_xids.issue_v6(now.unix_ns),
        );
        out.extend(due6.into_iter().map(|(r, step)| Finding::Repair6(r, step)));
    }

    /// What became of a DHCPv6 repair.
    pub fn on_repair6_result(&mut self, repair: &Repair6, result: RepairResult) {
        if result == RepairResult::Remediated {
            self.outstanding6.remove(repair);
        }
    }

    /// What became of a repair.
    pub fn on_repair_result(&mut self, repair: &Repair, result: RepairResult) {
        if result == RepairResult::Remediated {
            self.outstanding.remove(repair.ip);
        }
    }

    /// Forgets the outstanding releases whose lease is gone, renewed or someone else's.
    /// Returns whether any was.
    pub fn refresh_outstanding(&mut self) -> bool {
        let before = self.outstanding.len();
        self.outstanding.refresh(&self.table);
        self.outstanding.len() != before
    }

    /// What a divergence scan asks the server about: every lease the file lists, and every
    /// address that left the file lately.
    pub fn divergence_questions(&self) -> (Vec<(Ipv4Addr, Vec<u8>)>, Vec<Ipv4Addr>) {
        let in_file = self
            .table
            .v4
            .iter()
            .map(|(ip, l)| (*ip, l.hwaddr.clone()))
            .collect();
        (in_file, self.correlator.recently_removed().collect())
    }

    /// The server's answers to a scan: a finding for each divergence not reported by the last
    /// scan. Returns how many of each kind there are now.
    pub fn on_divergence_scan(
        &mut self,
        found: Vec<Divergence>,
        out: &mut Vec<Finding>,
    ) -> [(DivergenceKind, usize); 2] {
        let counts =
            DivergenceKind::ALL.map(|kind| (kind, found.iter().filter(|d| d.kind == kind).count()));
        let now: HashSet<_> = found.iter().map(|d| (d.kind, d.ip)).collect();
        for divergence in found {
            if !self.divergent.contains(&(divergence.kind, divergence.ip)) {
                out.push(Finding::Divergence(divergence));
            }
        }
        self.divergent = now;
        counts
    }

    pub fn next_deadline_ns(&self) -> Option<i128> {
        match (
            self.correlator.next_deadline_ns(),
            self.correlator6.next_deadline_ns(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The DHCPv6 server's DUID, when known.
    pub fn server_duid(&self) -> Option<&[u8]> {
        self.correlator6.server_duid()
    }

    /// DHCPv6 releases waiting for the server's REPLY.
    pub fn pending6(&self) -> usize {
        self.correlator6.pending()
    }

    /// Dropped DHCPv6 releases owed a repair.
    pub fn outstanding6(&self) -> &Outstanding6 {
        &self.outstanding6
    }

    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    pub fn identity(&self) -> &ServerIdentity {
        &self.identity
    }

    /// Releases waiting for their verdict, with what is known of each (what a restart must
    /// keep), including those a previous run left that wait for a lease table.
    pub fn pending_records(&self) -> impl Iterator<Item = &Pending> {
        self.correlator.pending_records().chain(&self.unresumed)
    }

    /// How many releases wait for their verdict.
    pub fn pending(&self) -> usize {
        self.correlator.pending()
    }

    pub fn outstanding(&self) -> &Outstanding {
        &self.outstanding
    }

    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Exchanges followed now.
    pub fn exchanges_tracked(&self) -> usize {
        self.transactions.tracked()
    }
}

/// The server's backlog at `now_ns` as the correlator asks it: whether the server may not have
/// reached a packet seen at a given time yet (see [`Transactions::backlog_before`]).
fn backlog(transactions: &Transactions, now_ns: i128) -> impl Fn(i128) -> bool + '_ {
    move |seen_ns| transactions.backlog_before(seen_ns, now_ns, correlate::BACKLOG_FILE_LAG_NS)
}

/// Which leases may leave the table now: expired ones, those a pending RELEASE of their own
/// client is about, and those the agent repaired (see [`crate::leases::emptied`]).
fn accounted_for<'a>(
    correlator: &'a Correlator,
    outstanding: &'a Outstanding,
    now_ns: i128,
) -> impl Fn(&Lease) -> bool + 'a {
    let now_secs = u64::try_from(now_ns / 1_000_000_000).unwrap_or(0);
    let mut released: std::collections::HashMap<Ipv4Addr, Vec<&Release>> =
        std::collections::HashMap::new();
    for (release, _) in correlator.pending_releases() {
        released.entry(release.ciaddr).or_default().push(release);
    }
    move |lease| {
        outstanding.was_repaired(lease)
            || expired(lease, now_secs)
            || matches!(lease.ip, std::net::IpAddr::V4(ip) if released
                .get(&ip)
                .is_some_and(|rs| rs.iter().any(|r| r.matches(lease))))
    }
}

#[cfg(test)]
mod tests {
    use dhcp_wire::test_support::release_packet;

    use super::*;
    use crate::leases::Expiry;

    const SECOND: i128 = 1_000_000_000;

    fn lease(ip: Ipv4Addr, mac: [u8; 6]) -> Lease {
        Lease {
            ip: ip.into(),
            hwaddr: mac.to_vec(),
            htype: 1,
            client_id: None,
            hostname: None,
            expiry: Expiry::Never,
            iaid: None,
        }
    }

    fn table(leases: &[Lease]) -> LeaseTable {
        leases.iter().cloned().collect()
    }

    fn at(start: Instant, unix_ns: i128) -> Now {
        Now {
            unix_ns,
            mono: start + Duration::from_nanos(u64::try_from(unix_ns.max(0)).unwrap()),
        }
    }

    fn settled(findings: &[Finding]) -> Vec<&Verdict> {
        findings
            .iter()
            .filter_map(|f| match f {
                Finding::Settled(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// dnsmasq listening on the VIP of 172.29.101.0/24 (a redundant VR).
    fn identity() -> ServerIdentity {
        let config = crate::dnsmasq_conf::DnsmasqConfig {
            listen_addresses: vec![Ipv4Addr::new(172, 29, 101, 1).into()],
            ranges: vec![crate::dnsmasq_conf::DhcpRange {
                start: Ipv4Addr::new(172, 29, 101, 100),
                end: Some(Ipv4Addr::new(172, 29, 101, 200)),
                netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            }],
            ..Default::default()
        };
        ServerIdentity::from_config(&config, &[])
    }

    /// `dhcp_release`'s RELEASE (primary address as server id) for a lease the table holds.
    fn dropped_release(config: ObserverConfig) -> (Observer, Vec<Finding>, Instant) {
        let packet = release_packet();
        let m = packet.dhcpv4().unwrap().clone();
        let start = Instant::now();
        let mut observer = Observer::new(config, identity());
        let mut out = Vec::new();
        let held = table(&[lease(m.ciaddr, m.chaddr.clone().try_into().unwrap())]);
        observer.on_lease_file(LeaseFileRead::Table(held), at(start, 0), &mut out);
        assert_eq!(out, [Finding::LeaseFile(ReloadResult::Ok), Finding::Ready]);
        out.clear();
        assert!(observer.on_packet(&packet, &mut out));
        assert!(out.is_empty(), "nothing settles within the grace: {out:?}");
        observer.on_tick(at(start, 3 * SECOND), &mut out);
        (observer, out, start)
    }

    #[test]
    fn a_dropped_release_is_settled_then_planned_for_repair_under_the_rate_limit() {
        let config = ObserverConfig {
            repair: Some(RepairPolicy::new(1)),
            ..ObserverConfig::default()
        };
        let (mut observer, mut out, start) = dropped_release(config);
        let verdicts = settled(&out);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].outcome.name(), "dropped");
        assert_eq!(
            verdicts[0].expected_server_id,
            Some(Ipv4Addr::new(172, 29, 101, 1))
        );
        out.clear();
        observer.plan_repairs(at(start, 3 * SECOND), false, &mut out);
        assert!(
            matches!(out.as_slice(), [Finding::Repair(_, RepairStep::Send)]),
            "{out:?}"
        );
        let Finding::Repair(repair, _) = out.remove(0) else {
            unreachable!()
        };
        // Tried once: never planned again, even on the retry tick.
        observer.plan_repairs(at(start, 4 * SECOND), true, &mut out);
        assert!(out.is_empty(), "{out:?}");
        observer.on_repair_result(&repair, RepairResult::Remediated);
        assert!(observer.outstanding().is_empty());
    }

    #[test]
    fn without_remediate_nothing_is_planned() {
        let (mut observer, mut out, start) = dropped_release(ObserverConfig::default());
        out.clear();
        observer.plan_repairs(at(start, 3 * SECOND), true, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(observer.outstanding().len(), 1, "still reported as owed");
    }

    #[test]
    fn a_release_the_file_honors_is_checked_in_memory_first() {
        let config = ObserverConfig {
            probe_memory: true,
            ..ObserverConfig::default()
        };
        let packet = release_packet();
        let m = packet.dhcpv4().unwrap().clone();
        let start = Instant::now();
        let mut observer = Observer::new(config, ServerIdentity::default());
        let mut out = Vec::new();
        let held = table(&[lease(m.ciaddr, m.chaddr.clone().try_into().unwrap())]);
        observer.on_lease_file(LeaseFileRead::Table(held), at(start, 0), &mut out);
        observer.on_packet(&packet, &mut out);
        out.clear();
        // The file drops the lease: honored by the file, to be confirmed in memory.
        observer.on_lease_file(
            LeaseFileRead::Table(LeaseTable::default()),
            at(start, SECOND),
            &mut out,
        );
        let Some(Finding::CheckMemory(verdict)) = out.pop() else {
            panic!("{out:?}")
        };
        assert_eq!(verdict.outcome, Outcome::Honored);
        // The server still holds it: dropped after all, and the file diverges.
        observer.on_memory_answer(verdict, Some(true), &mut out);
        assert!(
            matches!(
                &out[..],
                [
                    Finding::LeaseFile(ReloadResult::Ok),
                    Finding::Divergence(Divergence {
                        kind: DivergenceKind::ServerHoldsLeaseMissingFromFile,
                        ..
                    }),
                    Finding::Settled(v)
                ] if v.in_memory_only && v.outcome.name() == "dropped"
            ),
            "{out:?}"
        );
    }

    #[test]
    fn an_emptied_file_is_held_back_then_believed() {
        let start = Instant::now();
        let config = ObserverConfig {
            empty_file_hold: Duration::from_secs(60),
            ..ObserverConfig::default()
        };
        let mut observer = Observer::new(config, ServerIdentity::default());
        let mut out = Vec::new();
        let ip = Ipv4Addr::new(172, 29, 101, 150);
        let full = table(&[lease(ip, [2, 0, 0, 0, 0, 1])]);
        observer.on_lease_file(LeaseFileRead::Table(full), at(start, 0), &mut out);
        out.clear();
        observer.on_lease_file(
            LeaseFileRead::Table(LeaseTable::default()),
            at(start, SECOND),
            &mut out,
        );
        assert_eq!(out[0], Finding::LeaseFile(ReloadResult::Empty));
        assert_eq!(observer.table().v4.len(), 1, "not believed yet");
        out.clear();
        observer.on_tick(at(start, 30 * SECOND), &mut out);
        assert_eq!(observer.table().v4.len(), 1, "still within the hold");
        observer.on_tick(at(start, 62 * SECOND), &mut out);
        assert!(observer.table().v4.is_empty(), "believed after the hold");
        assert!(
            out.iter()
                .any(|f| matches!(f, Finding::Note(n) if n.contains("believing it"))),
            "{out:?}"
        );
    }

    #[test]
    fn each_divergence_is_reported_once_until_resolved() {
        let mut observer = Observer::new(ObserverConfig::default(), ServerIdentity::default());
        let divergence = Divergence {
            kind: DivergenceKind::FileListsLeaseServerDoesNotHold,
            ip: Ipv4Addr::new(172, 29, 101, 150),
            mac: None,
        };
        let mut out = Vec::new();
        let counts = observer.on_divergence_scan(vec![divergence.clone()], &mut out);
        assert_eq!(
            counts[1],
            (DivergenceKind::FileListsLeaseServerDoesNotHold, 1)
        );
        assert_eq!(out.len(), 1);
        observer.on_divergence_scan(vec![divergence.clone()], &mut out);
        assert_eq!(out.len(), 1, "not again while it lasts");
        observer.on_divergence_scan(Vec::new(), &mut out);
        observer.on_divergence_scan(vec![divergence], &mut out);
        assert_eq!(out.len(), 2, "again once it came back");
    }

    #[test]
    fn the_label_sets_name_every_value() {
        assert_eq!(
            ReloadResult::ALL.map(ReloadResult::name),
            ReloadResult::NAMES
        );
        assert_eq!(
            DivergenceKind::ALL.map(DivergenceKind::name),
            DivergenceKind::NAMES
        );
    }
}
