//! The observer on a CloudStack VPC router, scenario by scenario: expunges on the MASTER and on
//! the BACKUP (server stopped) followed by a failover, leaks from before the agent started,
//! host lines dropped while it runs, renewals, blocked hosts, forged releases, guest releases,
//! rogue servers, and the agent's own repair packets. Each counts what the observer asks for:
//! every repair, every verdict.
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    correlate::{Cause, Outcome},
    declared::DeclaredHosts,
    dnsmasq_conf::{DnsmasqConfig, MemoryFiles},
    leases::{Expiry, Lease, LeaseTable},
    liveness::ServerCheck,
    observer::{LeaseFileRead, Now, RepairPolicy},
    outstanding::{Basis, Repair, RepairResult, RepairStep},
    provenance::Origin,
    reconcile::{Intent, ReconcileConfig, Reconciled},
    server_identity::ServerIdentity,
    subnet::Subnet,
};
use dhcp_wire::{Body, Packet, test_support};

const SECOND: i128 = 1_000_000_000;
const VIP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
/// `release_packet()`'s lease: 172.29.101.150, 52:54:00:01:02:03.
const IP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 150);
const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];
const LIVE_IP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 151);
const LIVE_MAC: [u8; 6] = [0x52, 0x54, 0, 9, 9, 9];

/// CloudStack's VPC router configuration, reduced to what matters here.
fn files(hosts: &str) -> MemoryFiles {
    MemoryFiles::default()
        .with(
            "/etc/dnsmasq.conf",
            "except-interface=lo\nconf-dir=/etc/dnsmasq.d\ndhcp-lease-max=2100\n",
        )
        .with(
            "/etc/dnsmasq.d/cloud.conf",
            format!(
                "dhcp-hostsfile=/etc/dhcphosts.txt\nlisten-address=127.0.0.1,{VIP}\n\
                 dhcp-range=set:interface-eth2-0,{VIP},static\nbind-interfaces\n"
            ),
        )
        .with("/etc/dhcphosts.txt", hosts)
}

fn local() -> Vec<Subnet> {
    vec![Subnet::new(VIP, 24).unwrap()]
}

fn config(hosts: &str) -> DnsmasqConfig {
    DnsmasqConfig::load(Path::new("/etc/dnsmasq.conf"), &files(hosts)).unwrap()
}

/// The declared hosts of `hosts`, the files last changed at `changed_ns`.
fn intent(hosts: &str, changed_ns: i128) -> Intent {
    let config = config(hosts);
    let mut declared = DeclaredHosts::load(&config, &files(hosts));
    declared.newest_change_unix_ns = Some(changed_ns);
    Intent {
        hosts: declared,
        config,
        local: local(),
    }
}

fn host_line(mac: [u8; 6], ip: Ipv4Addr, name: &str) -> String {
    let mac = mac.map(|b| format!("{b:02x}")).join(":");
    format!("{mac},{ip},{name},infinite\n")
}

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

fn table(leases: &[Lease]) -> LeaseFileRead {
    LeaseFileRead::Table(leases.iter().cloned().collect::<LeaseTable>())
}

struct Router {
    observer: Observer,
    start: Instant,
    out: Vec<Finding>,
    repairs: Vec<Repair>,
}

impl Router {
    fn new(policy: Option<RepairPolicy>, settle_secs: u64) -> Router {
        let config = ObserverConfig {
            repair: policy,
            reconcile: ReconcileConfig {
                settle: Duration::from_secs(settle_secs),
                report_after: Duration::from_secs(1),
            },
            own_xid_seed: 0x5eed,
            ..ObserverConfig::default()
        };
        let identity = ServerIdentity::from_config(&config_for_identity(), &local());
        Router {
            observer: Observer::new(config, identity),
            start: Instant::now(),
            out: Vec::new(),
            repairs: Vec::new(),
        }
    }

    fn at(&self, secs: i128) -> Now {
        Now {
            unix_ns: self.ns(secs),
            mono: self.start + Duration::from_secs(u64::try_from(secs).unwrap()),
        }
    }

    fn ns(&self, secs: i128) -> i128 {
        1_000_000 * SECOND + secs * SECOND
    }

    fn server(&mut self, up: bool, secs: i128) {
        let check = ServerCheck {
            listening: up,
            answered: None,
            should_serve: up,
        };
        let now = self.at(secs);
        self.observer.on_server_check(check, now, &mut self.out);
    }

    fn leases(&mut self, leases: &[Lease], secs: i128) {
        let now = self.at(secs);
        self.observer
            .on_lease_file(table(leases), now, &mut self.out);
    }

    fn hosts(&mut self, intent: Intent, secs: i128) {
        let now = self.at(secs);
        self.observer.on_intent(intent, now, &mut self.out);
    }

    fn packet(&mut self, mut packet: Packet, secs: i128) -> bool {
        packet.meta.unix_ns = self.ns(secs);
        self.observer.on_packet(&packet, &mut self.out)
    }

    /// Time passes to `secs`, then the repairs due are planned; returns those to send.
    fn tick(&mut self, secs: i128) -> Vec<Repair> {
        let now = self.at(secs);
        self.observer.on_tick(now, &mut self.out);
        self.observer.plan_repairs(now, true, &mut self.out);
        let sent: Vec<Repair> = self
            .out
            .iter()
            .filter_map(|f| match f {
                Finding::Repair(r, RepairStep::Send) => Some(r.clone()),
                _ => None,
            })
            .collect();
        self.out
            .retain(|f| !matches!(f, Finding::Repair(_, RepairStep::Send)));
        self.repairs.extend(sent.iter().cloned());
        sent
    }

    fn take(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.out)
    }
}

fn config_for_identity() -> DnsmasqConfig {
    config("")
}

fn verdicts(findings: &[Finding]) -> Vec<(String, Option<String>, Origin)> {
    findings
        .iter()
        .filter_map(|f| match f {
            Finding::Settled(v) => Some((
                v.outcome.name().to_owned(),
                match &v.outcome {
                    Outcome::Dropped(cause) => Some(cause.name().to_owned()),
                    _ => None,
                },
                v.release.origin,
            )),
            _ => None,
        })
        .collect()
}

fn reconciled(findings: &[Finding]) -> Vec<&Reconciled> {
    findings
        .iter()
        .filter_map(|f| match f {
            Finding::Reconciled(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The packet the agent's repair sends, as the capture sees it on `lo`.
fn repair_packet(repair: &Repair) -> Packet {
    let mut packet = test_support::release_packet();
    if let Body::V4(m) = &mut packet.body {
        m.xid = repair.xid;
        m.server_id = Some(repair.server_id);
    }
    packet
}

/// `dhcp_release`'s RELEASE on lo (the primary address in option 54).
fn dhcp_release() -> Packet {
    test_support::release_packet()
}

/// The same RELEASE as a guest sends it on eth2, from `src` as Ethernet source.
fn from_guest(src: [u8; 6]) -> Packet {
    let mut packet = test_support::release_packet();
    packet.meta.interface = "eth2".into();
    packet.src_mac = Some(src);
    packet
}

fn remediate() -> Option<RepairPolicy> {
    Some(RepairPolicy::new(30))
}

#[test]
fn an_expunge_on_the_backup_is_repaired_once_after_failover_and_never_loops() {
    let mut router = Router::new(remediate(), 5);
    // A BACKUP: dnsmasq stopped. The expunged VM's host line is gone, its lease in the file.
    router.server(false, 0);
    router.leases(&[lease(IP, MAC), lease(LIVE_IP, LIVE_MAC)], 0);
    router.hosts(
        intent(&host_line(LIVE_MAC, LIVE_IP, "live"), router.ns(0)),
        0,
    );
    assert!(router.packet(dhcp_release(), 1), "a RELEASE opens a record");
    for secs in 2..30 {
        assert!(
            router.tick(secs).is_empty(),
            "nothing is sent while the server is down"
        );
    }
    let findings = router.take();
    assert_eq!(
        verdicts(&findings),
        [("dropped".into(), Some("no_server".into()), Origin::Router)]
    );
    assert!(
        findings
            .iter()
            .all(|f| !matches!(f, Finding::Repair(_, RepairStep::RateLimited))),
        "nothing counted against the rate limit either"
    );
    // Failover: dnsmasq starts and loads the lease again. One repair, for the expunged lease.
    router.server(true, 30);
    let sent = router.tick(30);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].ip, sent[0].mac, sent[0].server_id), (IP, MAC, VIP));
    assert_eq!(sent[0].basis, Basis::RouterRelease);
    // The repair's own RELEASE is seen on lo: recognised, never judged.
    assert!(!router.packet(repair_packet(&sent[0]), 31));
    assert!(router.take().contains(&Finding::OwnPacket));
    router
        .observer
        .on_repair_result(&sent[0], RepairResult::Remediated);
    router.leases(&[lease(LIVE_IP, LIVE_MAC)], 32);
    for secs in 33..120 {
        router.tick(secs);
    }
    let findings = router.take();
    assert!(
        verdicts(&findings).is_empty(),
        "no more verdicts: {findings:?}"
    );
    assert_eq!(router.repairs.len(), 1, "released once");
    assert!(
        router.repairs.iter().all(|r| r.ip != LIVE_IP),
        "the live VM's lease is never touched"
    );
}

#[test]
fn a_repair_the_server_ignores_is_not_judged_as_a_new_release_and_not_tried_again() {
    let mut router = Router::new(remediate(), 5);
    router.server(true, 0);
    router.leases(&[lease(IP, MAC)], 0);
    router.packet(dhcp_release(), 1);
    let sent = router.tick(4);
    assert_eq!(sent.len(), 1);
    // The server ignores the repair too (say, a wrong server id learned): the capture sees it.
    assert!(!router.packet(repair_packet(&sent[0]), 5));
    router
        .observer
        .on_repair_result(&sent[0], RepairResult::Failed);
    for secs in 6..200 {
        router.tick(secs);
    }
    assert_eq!(router.repairs.len(), 1, "a failed repair is not sent again");
    let findings = router.take();
    assert_eq!(
        verdicts(&findings).len(),
        1,
        "one verdict: the dhcp_release's"
    );
}

#[test]
fn leaks_from_before_the_agent_are_orphans_reported_at_once_and_released_after_settle() {
    let mut router = Router::new(remediate(), 60);
    router.server(true, 0);
    // The host file was last written an hour before the agent started: the expunged VM's
    // line was gone by then.
    let hosts = host_line(LIVE_MAC, LIVE_IP, "live");
    router.leases(&[lease(IP, MAC), lease(LIVE_IP, LIVE_MAC)], 0);
    router.hosts(intent(&hosts, router.ns(-3600)), 0);
    let findings = router.take();
    let found = reconciled(&findings);
    assert!(
        matches!(found.as_slice(), [Reconciled::Orphan(o)] if o.lease.ip == IP && o.undeclared_since_ns == router.ns(-3600)),
        "{found:?}"
    );
    let sent = router.tick(1);
    assert_eq!(
        sent.len(),
        1,
        "gone for longer than the settle time: released"
    );
    assert_eq!(
        (sent[0].ip, sent[0].basis, sent[0].server_id),
        (IP, Basis::Orphan, VIP)
    );
    router
        .observer
        .on_repair_result(&sent[0], RepairResult::Remediated);
    router.leases(&[lease(LIVE_IP, LIVE_MAC)], 2);
    for secs in 3..100 {
        router.tick(secs);
    }
    assert_eq!(router.repairs.len(), 1);
    let found = router.take();
    assert!(
        reconciled(&found).iter().any(|r| matches!(
            r,
            Reconciled::OrphanEnded {
                ip: IP,
                reason: "released",
                ..
            }
        )),
        "{found:?}"
    );
}

#[test]
fn a_host_line_dropped_while_the_agent_runs_waits_for_the_settle_time() {
    let mut router = Router::new(remediate(), 30);
    router.server(true, 0);
    let both = host_line(MAC, IP, "vm").to_string() + &host_line(LIVE_MAC, LIVE_IP, "live");
    router.leases(&[lease(IP, MAC), lease(LIVE_IP, LIVE_MAC)], 0);
    router.hosts(intent(&both, router.ns(-100)), 0);
    assert!(reconciled(&router.take()).is_empty(), "both declared");
    // Expunge: the line goes (the file rewritten now); the orchestrator's release is lost.
    router.hosts(
        intent(&host_line(LIVE_MAC, LIVE_IP, "live"), router.ns(10)),
        10,
    );
    assert!(
        reconciled(&router.take()).is_empty(),
        "not reported at once"
    );
    assert!(router.tick(11).is_empty());
    assert!(matches!(
        reconciled(&router.take()).as_slice(),
        [Reconciled::Orphan(_)]
    ));
    for secs in 12..40 {
        assert!(
            router.tick(secs).is_empty(),
            "within the settle time at {secs}s"
        );
    }
    let sent = router.tick(41);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ip, IP);
}

#[test]
fn a_host_line_back_within_the_settle_time_or_a_renewal_keeps_the_lease() {
    let mut router = Router::new(remediate(), 30);
    router.server(true, 0);
    let line = host_line(MAC, IP, "vm");
    router.leases(&[lease(IP, MAC)], 0);
    router.hosts(intent(&line, router.ns(-100)), 0);
    // A hosts file caught mid-rewrite (empty), then whole again.
    router.hosts(intent("", router.ns(5)), 5);
    router.tick(7);
    router.hosts(intent(&line, router.ns(8)), 8);
    for secs in 9..100 {
        assert!(
            router.tick(secs).is_empty(),
            "declared again: never released"
        );
    }
    // Dropped for good, but the VM renews: it is alive.
    router.hosts(intent("", router.ns(100)), 100);
    router.tick(102);
    let mut ack = test_support::v4_packet(
        dhcproto::v4::MessageType::Ack,
        7,
        MAC,
        0,
        dhcp_common::Hook::TcEgress,
    );
    if let Body::V4(m) = &mut ack.body {
        m.yiaddr = IP;
    }
    router.packet(ack, 103);
    for secs in 104..200 {
        assert!(router.tick(secs).is_empty(), "renewed: never released");
    }
    let findings = router.take();
    assert!(
        reconciled(&findings).iter().any(|r| matches!(
            r,
            Reconciled::OrphanEnded {
                reason: "renewed",
                ..
            }
        )),
        "{findings:?}"
    );
}

#[test]
fn a_declared_host_whose_address_an_orphan_holds_is_blocked_until_the_orphan_goes() {
    let mut router = Router::new(remediate(), 10);
    router.server(true, 0);
    // The next VM was given the expunged one's address, with a new MAC.
    let new_mac = [0x52, 0x54, 0, 7, 7, 7];
    router.leases(&[lease(IP, MAC)], 0);
    router.hosts(intent(&host_line(new_mac, IP, "next"), router.ns(-60)), 0);
    let findings = router.take();
    let found = reconciled(&findings);
    assert!(
        found.iter().any(|r| matches!(r, Reconciled::Blocked(b) if b.ip == IP && b.holder_is_orphan && b.hostname.as_deref() == Some("next"))),
        "{found:?}"
    );
    let sent = router.tick(1);
    assert_eq!(
        (sent.len(), sent[0].mac),
        (1, MAC),
        "the orphan is released, not the host"
    );
    router
        .observer
        .on_repair_result(&sent[0], RepairResult::Remediated);
    router.leases(&[], 2);
    let findings = router.take();
    assert!(
        reconciled(&findings)
            .iter()
            .any(|r| matches!(r, Reconciled::Unblocked { ip: IP, .. })),
        "{findings:?}"
    );
}

#[test]
fn a_forged_release_is_reported_and_never_repaired() {
    let mut router = Router::new(remediate(), 5);
    router.server(true, 0);
    router.leases(&[lease(IP, MAC)], 0);
    // Another guest sends a RELEASE for the victim's lease, from its own Ethernet address.
    router.packet(from_guest([2, 0, 0, 0, 0, 0x66]), 1);
    for secs in 2..60 {
        assert!(router.tick(secs).is_empty());
    }
    let findings = router.take();
    assert_eq!(
        verdicts(&findings),
        [(
            "dropped".into(),
            Some(Cause::NAMES[0].into()),
            Origin::Forged
        )]
    );
    assert!(
        router.observer.outstanding().is_empty(),
        "nothing owed to a forger"
    );
}

#[test]
fn a_guests_own_dropped_release_is_repaired_only_when_asked() {
    for (guest_releases, repairs) in [(false, 0), (true, 1)] {
        let mut policy = RepairPolicy::new(30);
        policy.guest_releases = guest_releases;
        let mut router = Router::new(Some(policy), 5);
        router.server(true, 0);
        router.leases(&[lease(IP, MAC)], 0);
        router.packet(from_guest(MAC), 1);
        let mut sent = 0;
        for secs in 2..30 {
            sent += router.tick(secs).len();
        }
        assert_eq!(sent, repairs, "guest_releases {guest_releases}");
        assert_eq!(
            verdicts(&router.take())[0].2,
            Origin::Guest,
            "from its own address"
        );
    }
}

#[test]
fn a_rogue_servers_offers_are_reported_once_and_counted_each() {
    let mut router = Router::new(None, 5);
    let mut offer = test_support::v4_packet(
        dhcproto::v4::MessageType::Offer,
        9,
        MAC,
        0,
        dhcp_common::Hook::TcIngress,
    );
    offer.src_mac = Some([2, 0xba, 0xd0, 0, 0, 1]);
    router.packet(offer.clone(), 1);
    router.packet(offer, 2);
    let rogues: Vec<bool> = router
        .take()
        .iter()
        .filter_map(|f| match f {
            Finding::Rogue(r) => Some(r.first),
            _ => None,
        })
        .collect();
    assert_eq!(rogues, [true, false]);
    // The router's own OFFER (leaving it) is not a rogue's.
    let own = test_support::v4_packet(
        dhcproto::v4::MessageType::Offer,
        10,
        MAC,
        0,
        dhcp_common::Hook::TcEgress,
    );
    router.packet(own, 3);
    assert!(!router.take().iter().any(|f| matches!(f, Finding::Rogue(_))));
}

#[test]
fn the_other_router_of_the_pair_and_a_trusted_server_are_not_rogues() {
    let mut offer = test_support::v4_packet(
        dhcproto::v4::MessageType::Offer,
        9,
        MAC,
        0,
        dhcp_common::Hook::TcIngress,
    );
    offer.src_mac = Some([2, 0xba, 0xd0, 0, 0, 1]);
    // Seen from the BACKUP: the MASTER answers with the VIP, this router's own server id.
    let mut master = offer.clone();
    if let Body::V4(m) = &mut master.body {
        m.server_id = Some(VIP);
    }
    let mut router = Router::new(None, 5);
    router.packet(master, 1);
    assert!(!router.take().iter().any(|f| matches!(f, Finding::Rogue(_))));
    // Another DHCP agent of a Neutron network, named by the operator.
    let mut observer = Observer::new(
        ObserverConfig {
            trusted_servers: vec!["02:ba:d0:00:00:01".parse().unwrap()],
            ..ObserverConfig::default()
        },
        ServerIdentity::default(),
    );
    let mut out = Vec::new();
    observer.on_packet(&offer, &mut out);
    assert!(
        !out.iter().any(|f| matches!(f, Finding::Rogue(_))),
        "{out:?}"
    );
}

#[test]
fn without_remediate_orphans_are_reported_and_nothing_is_planned() {
    let mut router = Router::new(None, 0);
    router.server(true, 0);
    router.leases(&[lease(IP, MAC)], 0);
    router.hosts(intent("", router.ns(-3600)), 0);
    assert!(router.tick(100).is_empty());
    assert!(matches!(
        reconciled(&router.take()).as_slice(),
        [Reconciled::Orphan(_)]
    ));
}

#[test]
fn a_new_vms_lease_read_before_its_host_line_is_not_released() {
    // CloudStack seeds a new VM's lease and writes its host line one after the other; the
    // agent may read the lease file first. The host files last changed an hour ago.
    let mut router = Router::new(remediate(), 30);
    router.server(true, 0);
    let live = host_line(LIVE_MAC, LIVE_IP, "live");
    router.leases(&[lease(LIVE_IP, LIVE_MAC)], 0);
    router.hosts(intent(&live, router.ns(-3600)), 0);
    router.leases(&[lease(LIVE_IP, LIVE_MAC), lease(IP, MAC)], 10);
    for secs in 11..15 {
        assert!(router.tick(secs).is_empty(), "new since 10 s: not settled");
    }
    // Its host line is read.
    let both = live + &host_line(MAC, IP, "new");
    router.hosts(intent(&both, router.ns(14)), 14);
    for secs in 15..120 {
        assert!(router.tick(secs).is_empty(), "declared: never released");
    }
}

#[test]
fn a_release_the_running_server_ignored_keeps_its_cause_when_the_server_restarts_meanwhile() {
    // CloudStack's expunge: dhcp_release, then `systemctl restart dnsmasq` at once; the liveness
    // check lands in the restart.
    let mut router = Router::new(None, 5);
    router.server(true, 0);
    router.leases(&[lease(IP, MAC)], 0);
    router.packet(dhcp_release(), 1);
    router.server(false, 1);
    router.server(true, 2);
    router.tick(3);
    assert_eq!(
        verdicts(&router.take()),
        [(
            "dropped".into(),
            Some("server_id_mismatch".into()),
            Origin::Router
        )]
    );
}
