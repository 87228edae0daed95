//! What the observer owes: the dropped releases whose lease the server still holds, the orphan
//! leases reconciliation found (no host line declares their client), and when to repair each
//! under the rate limit. Planning only: the agent sends the RELEASE and verifies it
//! (`dhcp-agent`'s `remediate`), then tells the observer the result. Only ever for a release
//! the agent saw being dropped or an orphan past its settle time, never more often than the
//! rate limit allows, and never the same lease twice.
use std::{net::Ipv4Addr, time::Instant};

use dhcp_wire::{HexBytes, Mac};
use serde::{Deserialize, Serialize};

use crate::{
    correlate::{Cause, Outcome, Verdict},
    leases::{Expiry, Lease, LeaseTable},
    provenance::Origin,
};

/// Why a lease is owed a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A RELEASE the router sent (over `lo`: `dhcp_release`) was dropped.
    RouterRelease,
    /// A RELEASE a guest sent from its own address was dropped (repaired only when asked).
    GuestRelease,
    /// No host line declares the lease's client, in a range that serves only declared hosts.
    Orphan,
}

impl Basis {
    pub fn name(self) -> &'static str {
        match self {
            Basis::RouterRelease => "router_release",
            Basis::GuestRelease => "guest_release",
            Basis::Orphan => "orphan",
        }
    }
}

/// What state files written before [`Basis`] existed mean: the most careful reading (a guest's
/// release, repaired only when asked), since a forged one cannot be told apart any more.
fn unknown_basis() -> Basis {
    Basis::GuestRelease
}

/// The result of one repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairResult {
    Remediated,
    Failed,
    DryRun,
    RateLimited,
    /// Sent, but the server stopped answering before the lease could be checked (a BACKUP
    /// taking over, `systemctl restart dnsmasq`): not a failure; the lease file tells. Not sent
    /// again.
    Unverified,
}

impl RepairResult {
    pub const ALL: [RepairResult; 5] = [
        RepairResult::Remediated,
        RepairResult::Failed,
        RepairResult::DryRun,
        RepairResult::RateLimited,
        RepairResult::Unverified,
    ];
    /// Every result's [`RepairResult::name`] (the metrics' label set).
    pub const NAMES: [&'static str; 5] = [
        "remediated",
        "failed",
        "dry_run",
        "rate_limited",
        "unverified",
    ];

    pub fn name(self) -> &'static str {
        match self {
            RepairResult::Remediated => "remediated",
            RepairResult::Failed => "failed",
            RepairResult::DryRun => "dry_run",
            RepairResult::RateLimited => "rate_limited",
            RepairResult::Unverified => "unverified",
        }
    }
}

/// What a repair is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub server_id: Ipv4Addr,
    pub client_id: Option<Vec<u8>>,
    pub basis: Basis,
    /// The xid of the RELEASE, and of the probes that verify it: handed out by the observer,
    /// which then knows these packets for its own.
    pub xid: u32,
    pub probe_xid: u32,
}

/// A dropped release whose lease the server still holds exactly as it was when the RELEASE was
/// seen: same client, same expiry. A renewal changes the expiry, a new client the address's
/// owner; either ends it (the lease is then someone's again and must never be released), as
/// does the lease leaving the table (repaired, released again, or expired). A lease only the
/// server's memory holds (the file does not list it: `expiry` is `None`) lasts until it is
/// repaired or the file shows the address with another client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutstandingRelease {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub client_id: Option<HexBytes>,
    /// The lease's expiry as the file listed it; `None` when only the server's memory holds it.
    pub expiry: Option<Expiry>,
    /// The server id the server expects, when it was known at the verdict.
    pub server_id: Option<Ipv4Addr>,
    pub seen: String,
    /// Why it is owed.
    #[serde(default = "unknown_basis")]
    pub basis: Basis,
    /// A repair was started (or reported as a dry run) for it: never sent again, also not by
    /// the next run (a repair the server refused once is the operator's to look at).
    #[serde(default)]
    pub attempted: bool,
    /// A repair was refused by the rate limit (reported once, retried later).
    #[serde(skip)]
    pub deferred: bool,
}

impl OutstandingRelease {
    /// What a dropped verdict leaves outstanding (nothing for other outcomes). Only the lease
    /// the table showed after the RELEASE, only for the RELEASE's own client, and only if the
    /// server has not ACKed it to that client since: a release the server ignored because the
    /// lease is another client's, or whose lease was renewed, leaves nothing to repair.
    pub fn from_verdict(verdict: &Verdict) -> Option<OutstandingRelease> {
        if !matches!(verdict.outcome, Outcome::Dropped(ref cause) if *cause != Cause::ClientMismatch)
        {
            return None;
        }
        let release = &verdict.release;
        let basis = match release.origin {
            Origin::Router => Basis::RouterRelease,
            Origin::Guest => Basis::GuestRelease,
            // Someone released another's lease, and the server rightly ignored it.
            Origin::Forged => return None,
        };
        let lease = verdict.lease.as_ref();
        if verdict.renewed_since || lease.is_some_and(|l| !release.matches(l)) {
            return None;
        }
        let client_id = lease.map_or(release.client_id.as_ref(), |l| l.client_id.as_ref());
        Some(OutstandingRelease {
            ip: release.ciaddr,
            mac: Mac::from_slice(&release.chaddr)?,
            client_id: client_id.map(|id| HexBytes(id.clone())),
            expiry: lease.filter(|_| !verdict.in_memory_only).map(|l| l.expiry),
            server_id: verdict.expected_server_id,
            seen: crate::time::rfc3339(verdict.release.seen_ns),
            basis,
            attempted: false,
            deferred: false,
        })
    }

    /// What an orphan lease leaves owed: that very lease (client, client id, expiry).
    pub fn orphan(lease: &Lease, seen_ns: i128) -> Option<OutstandingRelease> {
        let std::net::IpAddr::V4(ip) = lease.ip else {
            return None;
        };
        Some(OutstandingRelease {
            ip,
            mac: Mac(lease.mac()?),
            client_id: lease.client_id.clone().map(HexBytes),
            expiry: Some(lease.expiry),
            server_id: None,
            seen: crate::time::rfc3339(seen_ns),
            basis: Basis::Orphan,
            attempted: false,
            deferred: false,
        })
    }

    /// The lease this entry is about, as far as it is known (what declared hosts are matched
    /// against).
    pub fn as_lease(&self) -> Lease {
        Lease {
            ip: self.ip.into(),
            hwaddr: self.mac.0.to_vec(),
            htype: 1,
            client_id: self.client_id.as_ref().map(|id| id.0.clone()),
            hostname: None,
            expiry: self.expiry.unwrap_or(Expiry::Never),
            iaid: None,
        }
    }

    fn key(&self) -> (Ipv4Addr, Mac, Option<Expiry>) {
        (self.ip, self.mac, self.expiry)
    }

    /// Whether `table` still shows the very lease the dropped RELEASE was for (for a lease only
    /// the server's memory holds: that the file does not give the address to another client).
    pub fn still_held(&self, table: &LeaseTable) -> bool {
        let listed = table.get_v4(self.ip);
        match self.expiry {
            Some(expiry) => listed.is_some_and(|l| l.hwaddr == self.mac.0 && l.expiry == expiry),
            None => listed.is_none_or(|l| l.hwaddr == self.mac.0),
        }
    }

    /// The repair for it; `server_id` is used when none was known at the verdict.
    pub fn repair(&self, server_id: Option<Ipv4Addr>) -> Option<Repair> {
        Some(Repair {
            ip: self.ip,
            mac: self.mac.0,
            server_id: self.server_id.or(server_id)?,
            client_id: self.client_id.as_ref().map(|id| id.0.clone()),
            basis: self.basis,
            xid: 0,
            probe_xid: 0,
        })
    }
}

/// How many repaired leases [`Outstanding`] remembers (so that none is repaired twice).
const REPAIRED_MEMORY: usize = 4096;

/// The dropped releases the server still holds, by address.
#[derive(Debug, Default)]
pub struct Outstanding {
    by_ip: std::collections::BTreeMap<Ipv4Addr, OutstandingRelease>,
    /// The leases repaired in this run, oldest first: never owed again.
    repaired: std::collections::VecDeque<LeaseKey>,
    /// The leases a repair was tried for in this run and that are owed no more (repaired,
    /// renewed, gone): never tried again, whatever RELEASE comes next for the same lease.
    tried: std::collections::VecDeque<LeaseKey>,
}

/// A lease as far as repairs tell leases apart: address, client, expiry.
type LeaseKey = (Ipv4Addr, Mac, Option<Expiry>);

/// Remembers `key` in a bounded history.
fn remember(history: &mut std::collections::VecDeque<LeaseKey>, key: LeaseKey) {
    if history.len() == REPAIRED_MEMORY {
        history.pop_front();
    }
    history.push_back(key);
}

impl Outstanding {
    /// Resumes from a previous run's list; entries are checked against the table at the next
    /// [`Outstanding::refresh`].
    pub fn from_saved(saved: Vec<OutstandingRelease>) -> Outstanding {
        Outstanding {
            by_ip: saved.into_iter().map(|o| (o.ip, o)).collect(),
            repaired: Default::default(),
            tried: Default::default(),
        }
    }

    /// Whether that very lease was tried (or repaired) in this run.
    fn was_tried(&self, key: &LeaseKey) -> bool {
        self.tried.contains(key)
    }

    /// Forgets the entry for `ip`, remembering its lease if a repair was tried for it.
    fn forget(&mut self, ip: Ipv4Addr) {
        if let Some(entry) = self.by_ip.remove(&ip)
            && entry.attempted
        {
            remember(&mut self.tried, entry.key());
        }
    }

    /// Owes `entry` unless something is owed for its address already or that very lease was
    /// repaired before. Returns whether it was added.
    pub fn add(&mut self, entry: OutstandingRelease) -> bool {
        if self.by_ip.contains_key(&entry.ip) || self.was_tried(&entry.key()) {
            return false;
        }
        self.by_ip.insert(entry.ip, entry);
        true
    }

    /// Whether the agent repaired this very lease (address and client) in this run.
    pub fn was_repaired(&self, lease: &Lease) -> bool {
        self.repaired
            .iter()
            .any(|(ip, mac, _)| lease.ip == std::net::IpAddr::V4(*ip) && lease.hwaddr == mac.0)
    }

    /// Whether something is owed for `ip`.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
    }

    /// Forgets the entry for `ip` if it is of this basis (an orphan declared again).
    pub fn forget_if(&mut self, ip: Ipv4Addr, basis: Basis) {
        if self
            .by_ip
            .get(&ip)
            .is_some_and(|o| o.basis == basis && !o.attempted)
        {
            self.by_ip.remove(&ip);
        }
    }

    /// Follows a settled release: a dropped one becomes outstanding, an honored one ends any.
    pub fn on_verdict(&mut self, verdict: &Verdict) {
        match OutstandingRelease::from_verdict(verdict) {
            // A new dropped release replaces what was owed for the address, unless that was
            // tried already (never sent twice) or that very lease was repaired.
            Some(entry)
                if !self.was_tried(&entry.key())
                    && !self.by_ip.get(&entry.ip).is_some_and(|o| o.attempted) =>
            {
                self.by_ip.insert(entry.ip, entry);
            }
            Some(_) => {}
            None if verdict.outcome == Outcome::Honored => self.forget(verdict.release.ciaddr),
            None => {}
        }
    }

    /// Forgets an entry that was repaired, and remembers its lease as repaired.
    pub fn remove(&mut self, ip: Ipv4Addr) {
        if let Some(entry) = self.by_ip.remove(&ip) {
            remember(&mut self.repaired, entry.key());
            remember(&mut self.tried, entry.key());
        }
    }

    /// The server ACKed `ip` to `chaddr`: the client is alive, whatever was owed for that lease
    /// is not any more (never released on the strength of an older RELEASE).
    pub fn on_renewed(&mut self, ip: Ipv4Addr, chaddr: &[u8]) {
        if self.by_ip.get(&ip).is_some_and(|o| o.mac.0 == chaddr) {
            self.forget(ip);
        }
    }

    /// Forgets every entry whose lease is gone, renewed or someone else's.
    pub fn refresh(&mut self, table: &LeaseTable) {
        let gone: Vec<Ipv4Addr> = self
            .by_ip
            .values()
            .filter(|o| !o.still_held(table))
            .map(|o| o.ip)
            .collect();
        for ip in gone {
            self.forget(ip);
        }
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &OutstandingRelease> {
        self.by_ip.values()
    }

    /// The repairs to make now. Each outstanding release not tried yet is checked against
    /// `table` first (a lease renewed, re-assigned or gone since the RELEASE is forgotten, never
    /// released), then the rate limit decides: a refused one is reported once and stays for a
    /// later call; an allowed one is marked tried, so it is never sent twice in this run.
    /// `server_id_for` gives the server id of an address when the verdict did not know it;
    /// `repairable` says whether an entry may be repaired now (policy, declared hosts): one it
    /// refuses stays owed, untried.
    pub fn due(
        &mut self,
        table: &LeaseTable,
        server_id_for: impl Fn(Ipv4Addr) -> Option<Ipv4Addr>,
        repairable: impl Fn(&OutstandingRelease) -> bool,
        limit: &mut RateLimit,
        now: Instant,
        dry_run: bool,
    ) -> Vec<(Repair, RepairStep)> {
        self.refresh(table);
        let mut due = Vec::new();
        for entry in self
            .by_ip
            .values_mut()
            .filter(|o| !o.attempted && repairable(o))
        {
            let Some(repair) = entry.repair(server_id_for(entry.ip)) else {
                continue; // no server id known yet, or not an Ethernet client
            };
            if !limit.allow(now) {
                if !entry.deferred {
                    entry.deferred = true;
                    due.push((repair, RepairStep::RateLimited));
                }
                continue;
            }
            entry.attempted = true;
            let step = if dry_run {
                RepairStep::DryRun
            } else {
                RepairStep::Send
            };
            due.push((repair, step));
        }
        due
    }
}

/// What [`Outstanding::due`] says to do with a repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairStep {
    /// Send the RELEASE and verify it.
    Send,
    /// Report it only (`--dry-run`).
    DryRun,
    /// Refused by the rate limit: report it, try again later.
    RateLimited,
}

/// At most `burst` repairs at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    /// When tokens were last counted (`None` before the first request: the burst is full).
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = self.last.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dhcp_wire::test_support::release_packet;

    use super::*;
    use crate::{
        correlate::{Cause, Release},
        leases::Lease,
    };

    fn lease(mac: [u8; 6], expiry: u64) -> Lease {
        Lease {
            ip: "172.29.101.150".parse().unwrap(),
            hwaddr: mac.to_vec(),
            htype: 1,
            client_id: Some(vec![1, 0x52, 0x54, 0, 1, 2, 3]),
            hostname: None,
            expiry: Expiry::At(expiry),
            iaid: None,
        }
    }

    fn dropped(lease: Lease) -> Verdict {
        let release = Release::from_packet(&release_packet()).unwrap();
        Verdict {
            release,
            outcome: Outcome::Dropped(Cause::MissingServerId),
            expected_server_id: Some("172.29.101.1".parse().unwrap()),
            lease: Some(lease),
            renewed_since: false,
            in_memory_only: false,
            settled_ns: 0,
        }
    }

    fn table(leases: &[Lease]) -> LeaseTable {
        leases.iter().cloned().collect()
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];

    #[test]
    fn a_renewed_or_reassigned_lease_is_never_repaired() {
        let held = lease(MAC, 1000);
        for (now, still) in [
            (table(std::slice::from_ref(&held)), true),
            // Renewed after the RELEASE: the client is alive again.
            (table(&[lease(MAC, 2000)]), false),
            // The address went to another client.
            (table(&[lease([2, 0, 0, 0, 0, 9], 1000)]), false),
            // Gone: repaired, released again or expired.
            (table(&[]), false),
        ] {
            let mut outstanding = Outstanding::default();
            outstanding.on_verdict(&dropped(held.clone()));
            assert_eq!(outstanding.len(), 1);
            outstanding.refresh(&now);
            assert_eq!(outstanding.len(), usize::from(still), "{now:?}");
        }
    }

    #[test]
    fn a_lease_only_the_servers_memory_holds_stays_outstanding_until_repaired() {
        let mut verdict = dropped(lease(MAC, 1000));
        verdict.lease = None; // the file never listed it; the memory probe found it
        let mut outstanding = Outstanding::default();
        outstanding.on_verdict(&verdict);
        outstanding.refresh(&table(&[]));
        assert_eq!(
            outstanding.len(),
            1,
            "the file not listing it proves nothing"
        );
        let entry = outstanding.iter().next().unwrap();
        assert_eq!(
            entry.repair(None).unwrap().mac,
            MAC,
            "the RELEASE's own client"
        );
        outstanding.refresh(&table(&[lease([2, 0, 0, 0, 0, 9], 1000)]));
        assert!(outstanding.is_empty(), "now someone else's: never released");
        outstanding.on_verdict(&verdict);
        outstanding.remove(verdict.release.ciaddr);
        assert!(outstanding.is_empty());
    }

    #[test]
    fn a_lease_the_file_dropped_but_the_memory_holds_is_repaired() {
        // The file's line was deleted by hand after the RELEASE; the memory probe found the
        // lease: the table not listing it must not end the repair.
        let mut verdict = dropped(lease(MAC, 1000));
        verdict.in_memory_only = true;
        let mut outstanding = Outstanding::default();
        outstanding.on_verdict(&verdict);
        let mut limit = RateLimit::new(60, 1);
        let due = outstanding.due(
            &table(&[]),
            |_| None,
            |_| true,
            &mut limit,
            Instant::now(),
            false,
        );
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!((due[0].0.ip, due[0].0.mac), (verdict.release.ciaddr, MAC));
        assert_eq!(due[0].1, RepairStep::Send);
    }

    #[test]
    fn an_outstanding_release_repairs_with_the_lease_and_survives_a_restart() {
        let mut outstanding = Outstanding::default();
        outstanding.on_verdict(&dropped(lease(MAC, 1000)));
        let saved: Vec<OutstandingRelease> = outstanding.iter().cloned().collect();
        let text = serde_json::to_string(&saved).unwrap();
        let resumed = Outstanding::from_saved(serde_json::from_str(&text).unwrap());
        let entry = resumed.iter().next().unwrap();
        assert!(!entry.attempted, "a resumed release is tried again");
        assert!(entry.still_held(&table(&[lease(MAC, 1000)])));
        let repair = entry.repair(None).unwrap();
        assert_eq!(repair.mac, MAC);
        assert_eq!(
            repair.server_id,
            "172.29.101.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(repair.client_id, Some(vec![1, 0x52, 0x54, 0, 1, 2, 3]));
        // An honored release of the address ends it.
        let mut outstanding = resumed;
        let mut honored = dropped(lease(MAC, 1000));
        honored.outcome = Outcome::Honored;
        outstanding.on_verdict(&honored);
        assert!(outstanding.is_empty());
    }

    #[test]
    fn the_label_set_names_every_result() {
        assert_eq!(
            RepairResult::ALL.map(RepairResult::name),
            RepairResult::NAMES
        );
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut limit = RateLimit::new(60, 2);
        assert!(limit.allow(start));
        assert!(limit.allow(start));
        assert!(!limit.allow(start), "burst spent");
        assert!(!limit.allow(start + Duration::from_millis(500)));
        assert!(
            limit.allow(start + Duration::from_millis(1100)),
            "one per second refilled"
        );
        assert!(!limit.allow(start + Duration::from_millis(1100)));
    }
}
