//! Lease truth: the lease table against what the orchestrator declared (dnsmasq's host lines).
//! Most leaks are never seen as packets (the agent was installed after them, was down during an
//! expunge, or the router was a BACKUP whose server was stopped), so the table itself is
//! judged, at start-up and after every change of the table or of the host lines:
//! - an **orphan** is a lease in a range that serves only declared hosts (`static`, or
//!   `dhcp-ignore=tag:!known`) whose client no host line declares: the host line was dropped
//!   (the VM expunged) and the lease stayed;
//! - a **blocked host** is a declared host whose fixed address is leased to another client:
//!   dnsmasq logs "not using configured address ... because it is leased to ..." and the new VM
//!   gets no address at all.
//!
//! Each is reported once (again only after it ended and came back). An orphan becomes a
//! repair candidate only after its host line has been gone for the settle time: orchestrators
//! write the host line before the VM boots and drop it before they release, and a hosts file
//! read while it is being rewritten must not cost anyone their lease.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use dhcp_wire::Mac;

use crate::{
    declared::{ClientIdMatch, ClientKeys, DeclaredHosts},
    dnsmasq_conf::DnsmasqConfig,
    leases::{Lease, LeaseTable},
    subnet::Subnet,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// How long a host line must have been gone before its orphan lease may be repaired.
    pub settle: Duration,
    /// How long a lease must have been undeclared before it is reported as an orphan (a hosts
    /// file caught half-rewritten is read again well within this).
    pub report_after: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> ReconcileConfig {
        ReconcileConfig {
            settle: Duration::from_secs(60),
            report_after: Duration::from_secs(1),
        }
    }
}

/// What the orchestrator declared, as the agent read it: the host lines, and the configuration
/// that says which ranges serve only declared hosts.
#[derive(Debug, Clone)]
pub struct Intent {
    pub hosts: DeclaredHosts,
    pub config: DnsmasqConfig,
    /// The router's own subnets (ranges without a netmask take theirs).
    pub local: Vec<Subnet>,
}

impl Intent {
    fn static_only(&self, ip: Ipv4Addr) -> bool {
        self.config.is_static_only(ip, &self.local)
    }
}

/// A lease as reconciliation sees it (a metric label: [`LeaseStatus::NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseStatus {
    /// A host line declares its client.
    Declared,
    /// In a static-only range, and no host line declares its client.
    Orphan,
    /// In a dynamic range, undeclared: normal.
    Dynamic,
    /// Nothing is known of the declared hosts (no configuration given).
    Unknown,
}

impl LeaseStatus {
    pub const ALL: [LeaseStatus; 4] = [
        LeaseStatus::Declared,
        LeaseStatus::Orphan,
        LeaseStatus::Dynamic,
        LeaseStatus::Unknown,
    ];
    pub const NAMES: [&'static str; 4] = ["declared", "orphan", "dynamic", "unknown"];

    pub fn name(self) -> &'static str {
        match self {
            LeaseStatus::Declared => "declared",
            LeaseStatus::Orphan => "orphan",
            LeaseStatus::Dynamic => "dynamic",
            LeaseStatus::Unknown => "unknown",
        }
    }
}

/// An orphan lease, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanLease {
    pub lease: Lease,
    /// Since when no host line declares its client, at the latest (Unix ns): seen by the agent,
    /// or the last change of the host files when that is older (the line was gone by then).
    pub undeclared_since_ns: i128,
}

/// A declared host whose address another client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedHost {
    pub ip: Ipv4Addr,
    /// Where the host line is (`file:line`), and its hostname.
    pub host_source: String,
    pub hostname: Option<String>,
    /// The lease that holds the address.
    pub holder: Lease,
    /// The holder is an orphan: repairing it frees the address.
    pub holder_is_orphan: bool,
}

/// What reconciliation found, once each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    Orphan(OrphanLease),
    /// An orphan is no longer: its lease is gone or someone else's (`released`), its client is
    /// declared again (`declared`), or it renewed (`renewed`: the client is alive).
    OrphanEnded {
        ip: Ipv4Addr,
        mac: Option<Mac>,
        reason: &'static str,
    },
    Blocked(BlockedHost),
    Unblocked {
        ip: Ipv4Addr,
        host_source: String,
    },
}

#[derive(Debug, Clone)]
struct OrphanState {
    lease: Lease,
    since_ns: i128,
    reported: bool,
    /// The server renewed it to its client since: alive, never repaired.
    alive: bool,
}

/// Counts for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileCounts {
    pub declared_hosts: usize,
    pub declared_leased: usize,
    pub orphans: usize,
    pub dynamic: usize,
    pub unknown: usize,
    pub blocked: usize,
}

/// The host lines, indexed by what most of them match on (an exact MAC, a client id), so that a
/// table of 2,100 leases (CloudStack's `dhcp-lease-max`) against as many host lines costs one
/// lookup per lease, not one scan of the host lines each. Lines with wildcards, a hardware
/// type or only a hostname are few and checked one by one.
#[derive(Debug, Default)]
struct HostIndex {
    macs: HashSet<Vec<u8>>,
    client_ids: HashSet<Vec<u8>>,
    /// Indexes into the host lines of those matched one by one.
    others: Vec<usize>,
}

impl HostIndex {
    fn new(hosts: &DeclaredHosts) -> HostIndex {
        let mut index = HostIndex::default();
        for (i, host) in hosts.hosts.iter().enumerate() {
            let mut indexed = true;
            for mac in &host.macs {
                match mac.bytes.iter().copied().collect::<Option<Vec<u8>>>() {
                    Some(exact) if mac.htype.is_none() => {
                        index.macs.insert(exact);
                    }
                    _ => indexed = false,
                }
            }
            if let Some(ClientIdMatch::Id(id)) = &host.client_id {
                index.client_ids.insert(id.clone());
            }
            // A line with neither MAC nor id matches by hostname.
            let by_name =
                host.macs.is_empty() && !matches!(host.client_id, Some(ClientIdMatch::Id(_)));
            if !indexed || by_name {
                index.others.push(i);
            }
        }
        index
    }

    /// What [`DeclaredHosts::declares`] says, by lookup.
    fn declares(&self, hosts: &DeclaredHosts, lease: &Lease) -> bool {
        let by_id = lease.client_id.as_ref().is_some_and(|id| {
            self.client_ids.contains(id)
                // dhcpcd's textual ids with a zero byte before them (see `HostLine::matches`).
                || (lease.ip.is_ipv4() && id.first() == Some(&0) && self.client_ids.contains(&id[1..]))
        });
        by_id
            || self.macs.contains(&lease.hwaddr)
            || self.others.iter().any(|&i| hosts.hosts[i].matches(lease))
    }
}

/// A client as host lines tell clients apart: hardware address and client id.
type ClientKey = (Vec<u8>, Option<Vec<u8>>);

fn client_key(lease: &Lease) -> ClientKey {
    (lease.hwaddr.clone(), lease.client_id.clone())
}

#[derive(Debug, Default)]
pub struct Reconciler {
    config: ReconcileConfig,
    intent: Option<Intent>,
    index: HostIndex,
    /// Since when each client seen lately has been undeclared (at the latest): no lease of a
    /// client is released until it has been undeclared for the settle time, whatever the
    /// reason to release it. A hosts file read while the orchestrator rewrites it (empty, or
    /// half) must not make a declared client's lease releasable.
    undeclared_since: HashMap<ClientKey, i128>,
    /// Orphans the server renewed to their client (address, hardware address): alive, never
    /// released, also after a restart (the daemon keeps them in its state file).
    renewed: HashSet<(Ipv4Addr, Vec<u8>)>,
    /// Clients of owed repairs whose lease the table may not list (kept in `undeclared_since`
    /// while they are owed).
    noted: HashSet<ClientKey>,
    /// The next reconciliation follows a new read of the host files: only then does the host
    /// files' change time bound how long an undeclared client has been so. A lease that shows
    /// up in the table later may be newer than the host files as read (CloudStack writes a new
    /// VM's lease and its host line one after the other, and the agent may read them in either
    /// order): it counts as undeclared from when it was seen.
    intent_fresh: bool,
    orphans: HashMap<Ipv4Addr, OrphanState>,
    blocked: HashSet<(Ipv4Addr, String)>,
    counts: ReconcileCounts,
    /// Each lease's status at the last reconciliation (for per-pool figures and `leases`).
    statuses: HashMap<Ipv4Addr, LeaseStatus>,
}

fn nanos(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX / 4)
}

fn v4(lease: &Lease) -> Option<Ipv4Addr> {
    match lease.ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

impl Reconciler {
    pub fn new(config: ReconcileConfig) -> Reconciler {
        Reconciler {
            config,
            ..Reconciler::default()
        }
    }

    /// Whether declared hosts are known at all.
    pub fn has_intent(&self) -> bool {
        self.intent.is_some()
    }

    pub fn intent(&self) -> Option<&Intent> {
        self.intent.as_ref()
    }

    /// New host lines (read at start or after a change). Host files that could not be read
    /// keep what they declared before: a file being rewritten must not look like every host in
    /// it was dropped.
    pub fn set_intent(&mut self, mut intent: Intent) {
        if let Some(old) = &self.intent
            && !intent.hosts.unreadable.is_empty()
        {
            let kept = old
                .hosts
                .hosts
                .iter()
                .filter(|h| {
                    intent
                        .hosts
                        .unreadable
                        .iter()
                        .any(|p| h.source.starts_with(&format!("{}:", p.display())))
                })
                .cloned();
            intent.hosts.hosts.extend(kept.collect::<Vec<_>>());
        }
        self.index = HostIndex::new(&intent.hosts);
        self.intent = Some(intent);
        self.intent_fresh = true;
    }

    /// Whether a host line declares `lease`'s client (`false` when none are known).
    pub fn declares(&self, lease: &Lease) -> bool {
        self.intent
            .as_ref()
            .is_some_and(|intent| self.index.declares(&intent.hosts, lease))
    }

    /// The name the host lines give a client (CloudStack's `i-2-50-VM`): what events carry as
    /// `host`, so that an operator finds the VM by the orchestrator's name
    /// ([`DeclaredHosts::line_for`] says which line that is). `None` before any host lines are
    /// read.
    pub fn declared_name(&self, client: &ClientKeys) -> Option<String> {
        self.intent.as_ref()?.hosts.name_for(client)
    }

    /// The status of one lease now.
    pub fn status(&self, lease: &Lease) -> LeaseStatus {
        let (Some(intent), Some(ip)) = (&self.intent, v4(lease)) else {
            return LeaseStatus::Unknown;
        };
        if self.index.declares(&intent.hosts, lease) {
            LeaseStatus::Declared
        } else if intent.static_only(ip) {
            LeaseStatus::Orphan
        } else {
            LeaseStatus::Dynamic
        }
    }

    /// Judges the whole table (after it or the host lines changed).
    pub fn reconcile(&mut self, table: &LeaseTable, now_ns: i128, out: &mut Vec<Reconciled>) {
        self.statuses.clear();
        let Some(intent) = &self.intent else {
            self.counts = ReconcileCounts {
                unknown: table.v4.len(),
                ..ReconcileCounts::default()
            };
            return;
        };
        let bound = if std::mem::take(&mut self.intent_fresh) {
            undeclared_bound(intent, now_ns)
        } else {
            now_ns
        };
        let mut counts = ReconcileCounts {
            declared_hosts: intent.hosts.len(),
            ..ReconcileCounts::default()
        };
        let mut orphans_now = HashSet::new();
        let mut seen = HashSet::new();
        for (ip, lease) in &table.v4 {
            let client = client_key(lease);
            if self.index.declares(&intent.hosts, lease) {
                counts.declared_leased += 1;
                self.statuses.insert(*ip, LeaseStatus::Declared);
                self.undeclared_since.remove(&client);
                continue;
            }
            self.undeclared_since.entry(client.clone()).or_insert(bound);
            seen.insert(client);
            if !intent.static_only(*ip) {
                counts.dynamic += 1;
                self.statuses.insert(*ip, LeaseStatus::Dynamic);
                continue;
            }
            counts.orphans += 1;
            self.statuses.insert(*ip, LeaseStatus::Orphan);
            orphans_now.insert(*ip);
            let renewed = self.renewed.contains(&(*ip, lease.hwaddr.clone()));
            let state = self.orphans.entry(*ip).or_insert_with(|| OrphanState {
                lease: lease.clone(),
                since_ns: bound,
                reported: false,
                alive: renewed,
            });
            if !same_client(&state.lease, lease) {
                // Another client on the address: a new orphan (the old one was released).
                out.push(Reconciled::OrphanEnded {
                    ip: *ip,
                    mac: state.lease.mac().map(Mac),
                    reason: "released",
                });
                *state = OrphanState {
                    lease: lease.clone(),
                    since_ns: bound,
                    reported: false,
                    alive: renewed,
                };
            }
            state.lease = lease.clone();
        }
        // Clients with no lease any more are forgotten (a lease only the server's memory
        // holds is noted when a repair asks: [`Reconciler::note_client`]).
        let noted = &self.noted;
        self.undeclared_since
            .retain(|client, _| seen.contains(client) || noted.contains(client));
        self.renewed
            .retain(|(ip, hwaddr)| table.get_v4(*ip).is_some_and(|l| l.hwaddr == *hwaddr));
        let config = self.config;
        self.orphans.retain(|ip, state| {
            if orphans_now.contains(ip) {
                return true;
            }
            if state.reported {
                let declared = table.get_v4(*ip).is_some();
                out.push(Reconciled::OrphanEnded {
                    ip: *ip,
                    mac: state.lease.mac().map(Mac),
                    reason: if declared { "declared" } else { "released" },
                });
            }
            false
        });
        report_due(&mut self.orphans, now_ns, config, out);
        // Blocked hosts: each fixed address of a host line, leased to a client it does not
        // declare.
        let mut blocked_now = HashSet::new();
        for host in intent.hosts.hosts.iter().filter(|h| !h.ignore) {
            let Some(ip) = host.ip else { continue };
            let Some(holder) = table.get_v4(ip) else {
                continue;
            };
            if host.matches(holder) {
                continue;
            }
            let key = (ip, host.source.clone());
            if !self.blocked.contains(&key) {
                out.push(Reconciled::Blocked(BlockedHost {
                    ip,
                    host_source: host.source.clone(),
                    hostname: host.hostname.clone(),
                    holder: holder.clone(),
                    holder_is_orphan: self.orphans.contains_key(&ip),
                }));
            }
            blocked_now.insert(key);
        }
        for (ip, host_source) in self.blocked.difference(&blocked_now) {
            out.push(Reconciled::Unblocked {
                ip: *ip,
                host_source: host_source.clone(),
            });
        }
        counts.blocked = blocked_now.len();
        self.blocked = blocked_now;
        self.counts = counts;
    }

    /// Time passed: orphans undeclared long enough are reported.
    pub fn on_tick(&mut self, now_ns: i128, out: &mut Vec<Reconciled>) {
        report_due(&mut self.orphans, now_ns, self.config, out);
    }

    /// The server ACKed `ip` to `chaddr`: an orphan of that client is alive, never repaired.
    pub fn on_ack(&mut self, ip: Ipv4Addr, chaddr: &[u8], out: &mut Vec<Reconciled>) {
        if let Some(state) = self.orphans.get_mut(&ip)
            && state.lease.hwaddr == chaddr
            && !state.alive
        {
            state.alive = true;
            self.renewed.insert((ip, chaddr.to_vec()));
            if state.reported {
                out.push(Reconciled::OrphanEnded {
                    ip,
                    mac: state.lease.mac().map(Mac),
                    reason: "renewed",
                });
            }
        }
    }

    /// Orphans whose host line has been gone for the settle time, and that did not renew:
    /// the repair candidates.
    pub fn settled_orphans(&self, now_ns: i128) -> impl Iterator<Item = (&Lease, i128)> {
        let settle = nanos(self.config.settle);
        self.orphans
            .values()
            .filter(move |s| !s.alive && s.reported && now_ns - s.since_ns >= settle)
            .map(|s| (&s.lease, s.since_ns))
    }

    /// Whether `lease` is an orphan past its settle time that did not renew (checked again
    /// right before a repair is sent).
    pub fn is_settled_orphan(&self, lease: &Lease, now_ns: i128) -> bool {
        let Some(ip) = v4(lease) else { return false };
        self.orphans.get(&ip).is_some_and(|s| {
            !s.alive
                && same_client(&s.lease, lease)
                && s.lease.expiry == lease.expiry
                && now_ns - s.since_ns >= nanos(self.config.settle)
        }) && !self.declares(lease)
    }

    /// Notes the clients owed repairs are about (their lease may be one only the server's
    /// memory holds): one not known yet counts as undeclared from now.
    pub fn note_clients(&mut self, leases: impl IntoIterator<Item = Lease>, now_ns: i128) {
        let Some(intent) = &self.intent else { return };
        self.noted.clear();
        for lease in leases {
            let client = client_key(&lease);
            if self.index.declares(&intent.hosts, &lease) {
                self.undeclared_since.remove(&client);
            } else {
                self.undeclared_since
                    .entry(client.clone())
                    .or_insert(now_ns);
                self.noted.insert(client);
            }
        }
    }

    /// Whether `lease`'s client has been undeclared for the settle time: only then may any
    /// lease of it be released. `true` when nothing is known of the declared hosts (no
    /// configuration: the rules of dropped releases alone apply); `false` for a client not
    /// noted yet.
    pub fn undeclared_for_settle(&self, lease: &Lease, now_ns: i128) -> bool {
        if self.intent.is_none() {
            return true;
        }
        !self.declares(lease)
            && self
                .undeclared_since
                .get(&client_key(lease))
                .is_some_and(|since| now_ns - since >= nanos(self.config.settle))
    }

    /// Orphans the server renewed (what the state file keeps).
    pub fn renewed_orphans(&self) -> impl Iterator<Item = (Ipv4Addr, Mac)> + '_ {
        self.renewed
            .iter()
            .filter_map(|(ip, hwaddr)| Some((*ip, Mac::from_slice(hwaddr)?)))
    }

    /// Takes up the renewed orphans a previous run kept.
    pub fn resume_renewed(&mut self, renewed: impl IntoIterator<Item = (Ipv4Addr, Mac)>) {
        self.renewed
            .extend(renewed.into_iter().map(|(ip, mac)| (ip, mac.0.to_vec())));
    }

    pub fn counts(&self) -> ReconcileCounts {
        self.counts
    }

    /// Each lease's status at the last reconciliation (none before declared hosts are known).
    pub fn statuses(&self) -> impl Iterator<Item = (Ipv4Addr, LeaseStatus)> + '_ {
        self.statuses.iter().map(|(ip, s)| (*ip, *s))
    }

    /// The addresses of declared hosts that another client holds.
    pub fn blocked_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.blocked.iter().map(|(ip, _)| *ip)
    }

    /// The fixed addresses the host lines declare.
    pub fn declared_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.intent.iter().flat_map(|i| {
            i.hosts
                .hosts
                .iter()
                .filter(|h| !h.ignore)
                .filter_map(|h| h.ip)
        })
    }
}

/// Since when a client undeclared now has been undeclared at the latest: the host lines were
/// all there when the files last changed, so a line absent now has been absent since then (now,
/// when a file could not be read or the change time is unknown).
fn undeclared_bound(intent: &Intent, now_ns: i128) -> i128 {
    intent
        .hosts
        .newest_change_unix_ns
        .filter(|_| intent.hosts.unreadable.is_empty())
        .map_or(now_ns, |at| at.min(now_ns))
}

/// Reports the orphans undeclared for long enough, once each, in address order.
fn report_due(
    orphans: &mut HashMap<Ipv4Addr, OrphanState>,
    now_ns: i128,
    config: ReconcileConfig,
    out: &mut Vec<Reconciled>,
) {
    let mut due: Vec<&mut OrphanState> = orphans
        .values_mut()
        .filter(|s| !s.reported && now_ns - s.since_ns >= nanos(config.report_after))
        .collect();
    due.sort_by_key(|s| s.lease.ip);
    for state in due {
        state.reported = true;
        out.push(Reconciled::Orphan(OrphanLease {
            lease: state.lease.clone(),
            undeclared_since_ns: state.since_ns,
        }));
    }
}

/// Whether two leases are the same client's (hardware address and client id).
fn same_client(a: &Lease, b: &Lease) -> bool {
    a.hwaddr == b.hwaddr && a.client_id == b.client_id
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::{dnsmasq_conf::MemoryFiles, leases::Expiry};

    fn hosts(lines: &str) -> DeclaredHosts {
        let files = MemoryFiles::default()
            .with("/c", "dhcp-hostsfile=/h\n")
            .with("/h", lines);
        DeclaredHosts::load(
            &DnsmasqConfig::load(Path::new("/c"), &files).unwrap(),
            &files,
        )
    }

    fn lease(mac: [u8; 6], client_id: Option<Vec<u8>>, hostname: Option<&str>) -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, 5).into(),
            hwaddr: mac.to_vec(),
            htype: 1,
            client_id,
            hostname: hostname.map(str::to_owned),
            expiry: Expiry::Never,
            iaid: None,
        }
    }

    #[test]
    fn events_name_a_client_as_the_host_lines_do() {
        let mut reconciler = Reconciler::default();
        let client = ClientKeys::ethernet(&[2, 0, 0x4c, 0x1d, 0, 2], None);
        assert_eq!(reconciler.declared_name(&client), None, "no host lines yet");
        reconciler.set_intent(Intent {
            hosts: hosts("02:00:4c:1d:00:02,10.0.0.5,i-2-50-VM,infinite\n"),
            config: DnsmasqConfig::default(),
            local: Vec::new(),
        });
        assert_eq!(
            reconciler.declared_name(&client).as_deref(),
            Some("i-2-50-VM")
        );
        let leased = lease([2, 0, 0x4c, 0x1d, 0, 2], None, Some("its-own-name"));
        assert_eq!(
            reconciler
                .declared_name(&ClientKeys::of_lease(&leased))
                .as_deref(),
            Some("i-2-50-VM"),
            "the host line's name, not the one the client gave"
        );
        let other = lease([2, 0, 0, 0, 0, 9], None, None);
        assert_eq!(
            reconciler.declared_name(&ClientKeys::of_lease(&other)),
            None
        );
    }

    proptest! {
        /// The index says what the host lines say, for every form of line.
        #[test]
        fn the_index_agrees_with_the_host_lines(
            mac in prop::array::uniform6(0u8..3),
            id in prop::option::of(prop::collection::vec(0u8..3, 1..4)),
            name in prop::option::of("[ab]"),
            lines in prop::collection::vec(
                prop_oneof![
                    prop::array::uniform6(0u8..3).prop_map(|m| m.map(|b| format!("{b:02x}")).join(":")),
                    prop::array::uniform6(0u8..3).prop_map(|m| format!("{}:*", m[..5].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))),
                    prop::collection::vec(0u8..3, 1..4).prop_map(|id| format!("id:{}", id.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))),
                    "[ab]".prop_map(|n| n.to_string()),
                    prop::array::uniform6(0u8..3).prop_map(|m| format!("01-{}", m.map(|b| format!("{b:02x}")).join(":"))),
                ],
                0..6,
            ),
        ) {
            let declared = hosts(&lines.iter().map(|l| format!("{l},10.0.0.9\n")).collect::<String>());
            let index = HostIndex::new(&declared);
            let lease = lease(mac, id, name.as_deref());
            prop_assert_eq!(index.declares(&declared, &lease), declared.declares(&lease));
        }
    }
}
