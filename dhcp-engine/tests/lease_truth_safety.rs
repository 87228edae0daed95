//! Property test of the whole observer's repair safety on a CloudStack VPC router (a static-only
//! range, `dhcp-range=set:interface-eth2-0,172.29.101.1,static`; dnsmasq listening on 127.0.0.1
//! and the VIP; host lines in a hostsfile).
//!
//! Random sequences of what happens on such a router, over 4 addresses and 4 clients, go
//! through one `Observer` exactly as the daemon (`dhcp-agent run`) drives it:
//! - host-file edits (a host line `mac,ip,name,infinite` added or removed; the intent read again
//!   with `newest_change_unix_ns` = now; at start-up sometimes an older time), CloudStack's
//!   expunge (the line removed, then `dhcp_release`), and a hosts file caught empty mid-rewrite
//!   then read again whole under a second later (the daemon's loop and one once-a-second round
//!   run in between);
//! - lease-table changes (the server gives a declared client its address, with its ACK; a lease
//!   appears for an undeclared client, a leak left from before; a lease leaves the table), each
//!   followed by `on_lease_file`;
//! - RELEASEs: `dhcp_release` over `lo` (the primary address as server id: dropped; or the VIP:
//!   honored, the lease leaves the table), a guest's from its own MAC on eth2, forged ones (the
//!   Ethernet source another MAC); the server honors one only when it is up, the server id is
//!   the VIP and the lease is the client's (as dnsmasq does);
//! - renewals (the server's ACK of the address to its client, TC egress; the file's expiry
//!   changes or, for an `infinite` lease, does not);
//! - the server stopped and started (`on_server_check`);
//! - agent restarts: a new observer resumed from what the daemon saves (pending records as they
//!   are, outstanding releases through serde_json as the state file keeps them), then the lease
//!   table, the intent and a server check, in the daemon's start-up order (`dhcp-agent`'s
//!   `run.rs`);
//! - time passing (0.5-30 s). After every step `on_tick` and `plan_repairs(now, true)` run (the
//!   daemon's once-a-second round), and after every event `plan_repairs(now, false)` (the top of
//!   its loop);
//! - the agent's repairs: each `Repair(_, Send)` is sent; the server honors it (the lease leaves
//!   the table, `Remediated`) or ignores it (`Failed`), and its RELEASE, with the repair's xid,
//!   is fed back to `on_packet` as the capture sees it on `lo`.
//!
//! Every repair asked for (`Send` or `DryRun`) is checked against a model of what really
//! happened:
//! 1. never for a lease whose client the host lines in force declare (the model's host file; a
//!    file caught empty mid-rewrite does not change what is in force), nor for one renewed (ACKed
//!    to its client) after the event that made it owed (the RELEASE; for an orphan, its client
//!    becoming undeclared or the lease appearing);
//! 2. only on the strength of a router RELEASE, a guest's own RELEASE when `guest_releases` is
//!    set, or an orphan undeclared for at least the settle time: never a forged RELEASE's lease;
//! 3. never while the server is down;
//! 4. within one agent lifetime, never more than the token bucket allows: burst (min(per_minute,
//!    10)) plus what refills between the first and the last of any run of repairs (so never more
//!    than burst + per_minute in any 60 s; dry runs count, they take a token too). The rate
//!    limit is not saved: it starts full again after a restart, so this is checked per lifetime
//!    only;
//! 5. the same lease (address, MAC, expiry) never twice within one agent lifetime, and a lease
//!    the server released after a successful repair never again, restarts included;
//! 6. the server id is the VIP, and the MAC is the table's current owner of the address;
//! 7. the agent's own RELEASE (its xid) never yields a `Finding::Settled`.
//!
//! The empty-file guard's hold is zero here: with it, the observer rightly keeps a table the
//! model no longer has (a lease removed without a RELEASE, leaving the file empty), and its own
//! tests cover it (`leases::emptied`, `observer`).
//!
//! On the engine as it is, the property fails (invariant 1, then 5): the cases it found are
//! spelled out as the tests at the end, each with what goes wrong.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use dhcp_common::Hook;
use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    correlate::Pending,
    declared::DeclaredHosts,
    dnsmasq_conf::{DnsmasqConfig, MemoryFiles},
    leases::{Expiry, Lease, LeaseTable},
    liveness::ServerCheck,
    observer::{LeaseFileRead, Now, RepairPolicy},
    outstanding::{OutstandingRelease, Repair, RepairResult, RepairStep},
    provenance::Origin,
    reconcile::{Intent, ReconcileConfig},
    server_identity::ServerIdentity,
    subnet::Subnet,
};
use dhcp_lab::frames::{Dhcpv4Spec, Framing, ipv4_udp};
use dhcp_wire::{FrameMeta, Packet, decode_frame, test_support};
use dhcproto::v4::MessageType;
use proptest::prelude::*;

const SECOND: i128 = 1_000_000_000;
const MS: i128 = 1_000_000;
/// The router's VIP: dnsmasq's server id.
const VIP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
/// The router's own address on eth2: what `dhcp_release` puts in option 54.
const PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);
/// The router's MAC on eth2 (the source of its ACKs).
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// A host on eth2 that is none of the clients (a forger).
const STRANGER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
const ADDRESSES: u8 = 4;
const CLIENTS: u8 = 4;
const SETTLE_SECS: u64 = 10;
/// Wall clock at the start of every case.
const START_NS: i128 = 1_700_000_000 * SECOND;

fn ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 29, 101, 10 + index)
}

fn ip_index(ip: Ipv4Addr) -> Option<u8> {
    let [a, b, c, d] = ip.octets();
    ((a, b, c) == (172, 29, 101) && (10..10 + ADDRESSES).contains(&d)).then(|| d - 10)
}

fn mac(client: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0x10, client + 1]
}

fn client_of(mac: &[u8]) -> Option<u8> {
    (0..CLIENTS).find(|c| self::mac(*c) == mac)
}

// ---------------------------------------------------------------------------------------------
// The router's configuration and host lines.

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

fn identity() -> ServerIdentity {
    ServerIdentity::from_config(&config(""), &local())
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

fn host_line(client: u8, ip_index: u8) -> String {
    let mac = mac(client).map(|b| format!("{b:02x}")).join(":");
    format!("{mac},{},vm-{client},infinite\n", ip(ip_index))
}

/// The hostsfile of `hosts` (each client's declared address, if it has a line).
fn hosts_file(hosts: &[Option<u8>; CLIENTS as usize]) -> String {
    (0..CLIENTS)
        .filter_map(|c| hosts[usize::from(c)].map(|a| host_line(c, a)))
        .collect()
}

fn lease(index: u8, client: u8, expiry: u64) -> Lease {
    Lease {
        ip: ip(index).into(),
        hwaddr: mac(client).to_vec(),
        htype: 1,
        client_id: None,
        hostname: None,
        expiry: Expiry::At(expiry),
        iaid: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Packets, built from real encodings.

fn meta(interface: &str, hook: Hook, unix_ns: i128) -> FrameMeta {
    FrameMeta {
        unix_ns,
        ifindex: if interface == "lo" { 1 } else { 4 },
        interface: interface.into(),
        hook,
        ..test_support::lo_meta()
    }
}

fn packet(
    spec: &Dhcpv4Spec,
    src_mac: [u8; 6],
    route: (Ipv4Addr, Ipv4Addr),
    meta: FrameMeta,
) -> Packet {
    let ports = if matches!(spec.message_type, MessageType::Ack) {
        (67, 68)
    } else {
        (68, 67)
    };
    let framing = Framing {
        src_mac,
        ..Framing::default()
    };
    let frame = ipv4_udp(&framing, route.0, route.1, ports, &spec.encode()).unwrap();
    decode_frame(&frame, meta)
}

/// The server's ACK of `ip` to `client`, leaving the router on eth2 (TC egress).
fn ack(index: u8, client: u8, xid: u32, unix_ns: i128) -> Packet {
    let mut spec = Dhcpv4Spec::new(MessageType::Ack, xid, mac(client));
    spec.yiaddr = ip(index);
    spec.server_id = Some(VIP);
    spec.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
    spec.lease_secs = Some(u32::MAX);
    packet(
        &spec,
        ROUTER_MAC,
        (VIP, ip(index)),
        meta("eth2", Hook::TcEgress, unix_ns),
    )
}

/// Who sends a RELEASE, and how the capture sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// `dhcp_release` (or the agent's repair) over `lo`.
    Router,
    /// The client itself, from its own MAC, on eth2.
    Guest,
    /// Another host on eth2 (`src`: one of the clients, or a stranger).
    Forger { src: Option<u8> },
}

fn release(
    sender: Sender,
    index: u8,
    client: u8,
    server_id: Ipv4Addr,
    xid: u32,
    unix_ns: i128,
) -> Packet {
    let mut spec = Dhcpv4Spec::new(MessageType::Release, xid, mac(client));
    spec.ciaddr = ip(index);
    spec.server_id = Some(server_id);
    match sender {
        Sender::Router => packet(
            &spec,
            [0; 6],
            (ip(index), server_id),
            meta("lo", Hook::TcIngress, unix_ns),
        ),
        Sender::Guest => packet(
            &spec,
            mac(client),
            (ip(index), server_id),
            meta("eth2", Hook::TcIngress, unix_ns),
        ),
        Sender::Forger { src } => packet(
            &spec,
            src.filter(|s| *s != client).map_or(STRANGER, mac),
            (ip(index), server_id),
            meta("eth2", Hook::TcIngress, unix_ns),
        ),
    }
}

/// The RELEASE a repair sends, as the capture sees it on `lo`.
fn repair_packet(repair: &Repair, unix_ns: i128) -> Packet {
    let mut spec = Dhcpv4Spec::new(MessageType::Release, repair.xid, repair.mac);
    spec.ciaddr = repair.ip;
    spec.server_id = Some(repair.server_id);
    spec.client_id = repair.client_id.clone();
    packet(
        &spec,
        [0; 6],
        (repair.ip, repair.server_id),
        meta("lo", Hook::TcIngress, unix_ns),
    )
}

// ---------------------------------------------------------------------------------------------
// Steps.

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A host line for `client` (replacing its line, if it has one).
    AddHost {
        client: u8,
        ip: u8,
    },
    /// `client`'s host line removed.
    RemoveHost {
        client: u8,
    },
    /// CloudStack expunges `client`'s VM: its host line removed, then `dhcp_release` of its
    /// lease over `lo` with the primary address (dropped) or the VIP (honored) as server id.
    Expunge {
        client: u8,
        vip: bool,
    },
    /// The hosts file read while being rewritten (empty), then again whole `gap_ms` later; the
    /// daemon's loop runs in between.
    RewriteCaught {
        gap_ms: u16,
    },
    /// The server gives a declared client its address (free, and the client has no lease).
    Grant {
        client: u8,
    },
    /// A lease for an undeclared client appears (left from before the agent looked).
    Leak {
        ip: u8,
        client: u8,
    },
    /// A lease leaves the table (expired, or taken away by other means).
    Drop {
        ip: u8,
    },
    /// A RELEASE for `ip`, of its owner (`owner`) or else of `client`, with the VIP or the
    /// primary address as server id.
    Release {
        sender: Sender,
        ip: u8,
        owner: bool,
        client: u8,
        vip: bool,
    },
    /// The owner of `ip` renews (the server's ACK); `bump`: the file's expiry changes.
    Renew {
        ip: u8,
        bump: bool,
    },
    /// dnsmasq stopped or started.
    Server {
        up: bool,
    },
    /// The agent restarts from its state file.
    Restart,
    Wait {
        ms: u32,
    },
}

fn sender() -> impl Strategy<Value = Sender> {
    prop_oneof![
        3 => Just(Sender::Router),
        3 => Just(Sender::Guest),
        2 => prop::option::of(0..CLIENTS).prop_map(|src| Sender::Forger { src }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..CLIENTS, 0..ADDRESSES).prop_map(|(client, ip)| Step::AddHost { client, ip }),
        1 => (0..CLIENTS).prop_map(|client| Step::RemoveHost { client }),
        2 => (0..CLIENTS, prop::bool::weighted(0.2))
            .prop_map(|(client, vip)| Step::Expunge { client, vip }),
        1 => (1u16..1000).prop_map(|gap_ms| Step::RewriteCaught { gap_ms }),
        3 => (0..CLIENTS).prop_map(|client| Step::Grant { client }),
        2 => (0..ADDRESSES, 0..CLIENTS).prop_map(|(ip, client)| Step::Leak { ip, client }),
        1 => (0..ADDRESSES).prop_map(|ip| Step::Drop { ip }),
        6 => (sender(), 0..ADDRESSES, prop::bool::weighted(0.75), 0..CLIENTS, any::<bool>())
            .prop_map(|(sender, ip, owner, client, vip)| Step::Release {
                sender,
                ip,
                owner,
                client,
                vip,
            }),
        2 => (0..ADDRESSES, any::<bool>()).prop_map(|(ip, bump)| Step::Renew { ip, bump }),
        1 => any::<bool>().prop_map(|up| Step::Server { up }),
        1 => Just(Step::Restart),
        5 => (500u32..=30_000).prop_map(|ms| Step::Wait { ms }),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    per_minute: u32,
    guest_releases: bool,
    dry_run: bool,
    /// Each client's declared address at start-up.
    hosts: [Option<u8>; CLIENTS as usize],
    /// Each address's lease at start-up (its client).
    leases: [Option<u8>; ADDRESSES as usize],
    /// How long before start-up the hosts file was last written (seconds).
    hosts_age_secs: u32,
    /// Whether the server honors each repair sent, in turn (cycled).
    honors: Vec<bool>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![1u32..=3, 1u32..=60],
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::array::uniform4(prop::option::weighted(0.7, 0..ADDRESSES)),
        prop::array::uniform4(prop::option::of(0..CLIENTS)),
        prop_oneof![Just(0u32), 1u32..7200],
        prop::collection::vec(prop::bool::weighted(0.7), 1..8),
    )
        .prop_map(
            |(per_minute, guest_releases, dry_run, hosts, leases, hosts_age_secs, honors)| Setup {
                per_minute,
                guest_releases,
                dry_run,
                hosts,
                leases,
                hosts_age_secs,
                honors,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// The world: the observer, and the model of what really happened.

/// A RELEASE that was sent, as the model knows it.
#[derive(Debug, Clone)]
struct Sent {
    at_ns: i128,
    ip: u8,
    client: u8,
    origin: Origin,
}

type LeaseKey = (u8, u8, u64);

struct World {
    setup: Setup,
    policy: RepairPolicy,
    observer: Observer,
    out: Vec<Finding>,
    start: Instant,
    now_ns: i128,
    /// Agent lifetimes so far (a restart starts a new one).
    lifetime: u32,
    xid: u32,
    next_expiry: u64,
    honors_used: usize,
    // The model.
    /// The lease table: each address's client and expiry.
    table: BTreeMap<u8, (u8, u64)>,
    /// The hosts file in force: each client's declared address.
    hosts: [Option<u8>; CLIENTS as usize],
    /// When the hosts file was last written.
    hosts_changed_ns: i128,
    /// Since when each client has no host line (`None`: it has one).
    undeclared_since: [Option<i128>; CLIENTS as usize],
    server_up: bool,
    /// When each address last became free.
    vacated_ns: [Option<i128>; ADDRESSES as usize],
    /// When each address's current owner got it.
    owner_since_ns: [i128; ADDRESSES as usize],
    /// The last ACK of each address to each client.
    acked_ns: HashMap<(u8, u8), i128>,
    releases: Vec<Sent>,
    // What the agent did.
    /// This lifetime's repairs (Send and DryRun: both take a token), by monotonic time.
    lifetime_repairs: Vec<Duration>,
    lifetime_leases: HashSet<LeaseKey>,
    /// Leases the server released on a repair.
    released_by_repair: HashSet<LeaseKey>,
    repair_xids: HashSet<u32>,
    /// Every repair asked for, for the failure messages.
    log: Vec<String>,
}

impl World {
    fn new(setup: Setup) -> World {
        let mut policy = RepairPolicy::new(setup.per_minute);
        policy.guest_releases = setup.guest_releases;
        policy.dry_run = setup.dry_run;
        let start = Instant::now();
        let hosts_changed_ns = START_NS - i128::from(setup.hosts_age_secs) * SECOND;
        let mut world = World {
            observer: Observer::new(observer_config(policy, 0), identity()),
            setup: setup.clone(),
            policy,
            out: Vec::new(),
            start,
            now_ns: START_NS,
            lifetime: 0,
            xid: 0x100,
            next_expiry: 4_000_000_000,
            honors_used: 0,
            table: BTreeMap::new(),
            hosts: setup.hosts,
            hosts_changed_ns,
            undeclared_since: setup.hosts.map(|h| h.is_none().then_some(hosts_changed_ns)),
            server_up: true,
            vacated_ns: [None; ADDRESSES as usize],
            owner_since_ns: [START_NS; ADDRESSES as usize],
            acked_ns: HashMap::new(),
            releases: Vec::new(),
            lifetime_repairs: Vec::new(),
            lifetime_leases: HashSet::new(),
            released_by_repair: HashSet::new(),
            repair_xids: HashSet::new(),
            log: Vec::new(),
        };
        for (index, owner) in setup.leases.iter().enumerate() {
            if let Some(client) = *owner
                && !world.table.values().any(|(c, _)| *c == client)
            {
                let expiry = world.expiry();
                world.table.insert(index as u8, (client, expiry));
            }
        }
        world.start_agent(Vec::new(), Vec::new(), Vec::new());
        world
    }

    fn now(&self) -> Now {
        let elapsed = u64::try_from(self.now_ns - START_NS).unwrap();
        Now {
            unix_ns: self.now_ns,
            mono: self.start + Duration::from_nanos(elapsed),
        }
    }

    fn expiry(&mut self) -> u64 {
        self.next_expiry += 1;
        self.next_expiry
    }

    fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    fn lease_table(&self) -> LeaseFileRead {
        LeaseFileRead::Table(
            self.table
                .iter()
                .map(|(index, (client, expiry))| lease(*index, *client, *expiry))
                .collect::<LeaseTable>(),
        )
    }

    fn current_intent(&self) -> Intent {
        intent(&hosts_file(&self.hosts), self.hosts_changed_ns)
    }

    fn owner(&self, index: u8) -> Option<u8> {
        self.table.get(&index).map(|(c, _)| *c)
    }

    fn holds_a_lease(&self, client: u8) -> bool {
        self.table.values().any(|(c, _)| *c == client)
    }

    fn vacate(&mut self, index: u8) {
        if self.table.remove(&index).is_some() {
            self.vacated_ns[usize::from(index)] = Some(self.now_ns);
        }
    }

    fn give(&mut self, index: u8, client: u8) {
        let expiry = self.expiry();
        self.table.insert(index, (client, expiry));
        self.owner_since_ns[usize::from(index)] = self.now_ns;
    }

    // The agent's side.

    /// A new agent: resumed from `pending` and `outstanding`, then the lease table, the intent
    /// and a look at the server, as `dhcp-agent run` starts.
    fn start_agent(
        &mut self,
        pending: Vec<Pending>,
        outstanding: Vec<OutstandingRelease>,
        renewed: Vec<(Ipv4Addr, dhcp_wire::Mac)>,
    ) {
        let now = self.now();
        self.observer.resume(
            pending,
            outstanding,
            renewed,
            "/var/lib/dhcp-observer/state.json",
            &mut self.out,
        );
        self.observer
            .on_lease_file(self.lease_table(), now, &mut self.out);
        self.observer
            .on_intent(self.current_intent(), now, &mut self.out);
        self.server_check();
        self.loop_top();
    }

    fn restart(&mut self) {
        let pending: Vec<Pending> = self.observer.pending_records().cloned().collect();
        let saved: Vec<OutstandingRelease> = self.observer.outstanding().iter().cloned().collect();
        let text = serde_json::to_string(&saved).unwrap();
        let outstanding: Vec<OutstandingRelease> = serde_json::from_str(&text).unwrap();
        // The renewed orphans, as the state file keeps them.
        let renewed = self.observer.reconciler().renewed_orphans().collect();
        self.lifetime += 1;
        self.lifetime_repairs.clear();
        self.lifetime_leases.clear();
        self.log.push(format!("-- restart {}", self.lifetime));
        self.observer = Observer::new(observer_config(self.policy, self.lifetime), identity());
        self.start_agent(pending, outstanding, renewed);
    }

    fn server_check(&mut self) {
        let check = ServerCheck {
            listening: self.server_up,
            answered: None,
            should_serve: true,
        };
        let now = self.now();
        self.observer.on_server_check(check, now, &mut self.out);
    }

    fn feed(&mut self, packet: &Packet) -> bool {
        let opened = self.observer.on_packet(packet, &mut self.out);
        self.drain();
        opened
    }

    fn lease_file(&mut self) {
        let now = self.now();
        self.observer
            .on_lease_file(self.lease_table(), now, &mut self.out);
        self.drain();
    }

    /// The top of the daemon's loop, after every event.
    fn loop_top(&mut self) {
        let now = self.now();
        self.observer.plan_repairs(now, false, &mut self.out);
        self.drain();
    }

    /// The daemon's once-a-second round.
    fn tick(&mut self) {
        let now = self.now();
        self.observer.on_tick(now, &mut self.out);
        self.observer.plan_repairs(now, true, &mut self.out);
        self.drain();
    }

    fn drain(&mut self) {
        while !self.out.is_empty() {
            for finding in std::mem::take(&mut self.out) {
                match finding {
                    Finding::Repair(repair, step @ (RepairStep::Send | RepairStep::DryRun)) => {
                        self.check_repair(&repair, step);
                        if step == RepairStep::Send {
                            self.send(&repair);
                        } else {
                            self.observer
                                .on_repair_result(&repair, RepairResult::DryRun);
                        }
                    }
                    Finding::Settled(verdict) => assert!(
                        !self.repair_xids.contains(&verdict.release.xid),
                        "invariant 7: the agent's own repair (xid {:#x}) was settled as a \
                         client's RELEASE: {verdict:?}\n{}",
                        verdict.release.xid,
                        self.log.join("\n")
                    ),
                    _ => {}
                }
            }
        }
    }

    /// The agent sends a repair; the server honors it or not; the capture sees it on lo.
    fn send(&mut self, repair: &Repair) {
        let honored = self.setup.honors[self.honors_used % self.setup.honors.len()];
        self.honors_used += 1;
        let index = ip_index(repair.ip).unwrap();
        let packet = repair_packet(repair, self.now_ns);
        let mut seen = Vec::new();
        let opened = self.observer.on_packet(&packet, &mut seen);
        assert!(
            !opened && seen.contains(&Finding::OwnPacket),
            "invariant 7: the repair's own RELEASE was not recognised: {seen:?}"
        );
        assert!(
            !seen.iter().any(|f| matches!(f, Finding::Settled(_))),
            "invariant 7: the repair's own RELEASE settled: {seen:?}"
        );
        self.out.extend(seen);
        if honored {
            let (client, expiry) = self.table[&index];
            self.released_by_repair.insert((index, client, expiry));
            self.log
                .push(format!("   server honored the repair of {}", repair.ip));
            self.vacate(index);
            let now = self.now();
            self.observer
                .on_lease_file(self.lease_table(), now, &mut self.out);
            self.observer
                .on_repair_result(repair, RepairResult::Remediated);
        } else {
            self.log
                .push(format!("   server ignored the repair of {}", repair.ip));
            self.observer.on_repair_result(repair, RepairResult::Failed);
        }
    }

    // The invariants.

    fn fail(&self, what: String) -> ! {
        panic!(
            "{what}\nat {:.3}s (lifetime {}); table {:?}; hosts {:?}; server up {}\n\
             repairs so far:\n{}",
            (self.now_ns - START_NS) as f64 / 1e9,
            self.lifetime,
            self.table,
            self.hosts,
            self.server_up,
            self.log.join("\n")
        )
    }

    fn check_repair(&mut self, repair: &Repair, step: RepairStep) {
        self.log.push(format!(
            "{:>9.3}s {step:?} {} {} basis {:?}",
            (self.now_ns - START_NS) as f64 / 1e9,
            repair.ip,
            dhcp_wire::Mac(repair.mac),
            repair.basis
        ));
        if !self.server_up {
            self.fail(format!(
                "invariant 3: a repair while the server is down: {repair:?}"
            ));
        }
        if repair.server_id != VIP {
            self.fail(format!("invariant 6: a repair not to the VIP: {repair:?}"));
        }
        let index = ip_index(repair.ip)
            .unwrap_or_else(|| self.fail(format!("a repair of an unknown address: {repair:?}")));
        let owner = self.owner(index);
        let client = client_of(&repair.mac)
            .filter(|c| owner == Some(*c))
            .unwrap_or_else(|| {
                self.fail(format!(
                    "invariant 6: a repair for a MAC that does not hold the address (owner: \
                     {:?}): {repair:?}",
                    owner.map(|c| dhcp_wire::Mac(mac(c)))
                ))
            });
        let expiry = self.table[&index].1;
        let key = (index, client, expiry);
        if let Some(why) = self.unjustified(index, client) {
            self.fail(format!("{why}: {repair:?}"));
        }
        if !self.lifetime_leases.insert(key) {
            self.fail(format!(
                "invariant 5: the same lease repaired twice in one lifetime: {repair:?}"
            ));
        }
        if self.released_by_repair.contains(&key) {
            self.fail(format!(
                "invariant 5: a lease the server released on a repair is repaired again: \
                 {repair:?}"
            ));
        }
        self.repair_xids.insert(repair.xid);
        self.lifetime_repairs.push(self.now().mono - self.start);
        self.check_rate();
    }

    /// Why the model says this repair must not be made, if it must not.
    fn unjustified(&self, index: u8, client: u8) -> Option<String> {
        if self.hosts[usize::from(client)].is_some() {
            return Some(format!(
                "invariant 1: a repair for a declared client (vm-{client}'s host line is in \
                 force)"
            ));
        }
        let vacated = self.vacated_ns[usize::from(index)].unwrap_or(i128::MIN);
        let acked = self
            .acked_ns
            .get(&(index, client))
            .copied()
            .unwrap_or(i128::MIN);
        let released_by = |origin: Origin| {
            self.releases.iter().any(|r| {
                r.ip == index
                    && r.client == client
                    && r.origin == origin
                    && r.at_ns > vacated
                    && r.at_ns > acked
            })
        };
        if released_by(Origin::Router) || (self.policy.guest_releases && released_by(Origin::Guest))
        {
            return None;
        }
        let settle = i128::from(SETTLE_SECS) * SECOND;
        if let Some(since) = self.undeclared_since[usize::from(client)] {
            let owed_since = since.max(self.owner_since_ns[usize::from(index)]);
            if self.now_ns - since >= settle && acked <= owed_since {
                return None;
            }
        }
        let about: Vec<&Sent> = self
            .releases
            .iter()
            .filter(|r| r.ip == index && r.client == client && r.at_ns > vacated)
            .collect();
        let renewed = about.iter().any(|r| r.at_ns <= acked)
            || self.undeclared_since[usize::from(client)]
                .is_some_and(|since| acked > since.max(self.owner_since_ns[usize::from(index)]));
        Some(format!(
            "invariant {}: a repair no RELEASE or settled orphan justifies (undeclared since \
             {:?}, last ACK {:?}, owner since {:?}, releases of it {about:?}, guest_releases \
             {})",
            if renewed { "1 (renewed since)" } else { "2" },
            self.undeclared_since[usize::from(client)].map(|t| (t - START_NS) as f64 / 1e9),
            (acked != i128::MIN).then(|| (acked - START_NS) as f64 / 1e9),
            (self.owner_since_ns[usize::from(index)] - START_NS) as f64 / 1e9,
            self.policy.guest_releases,
        ))
    }

    /// Invariant 4: a token bucket that starts full allows, between any two of this lifetime's
    /// repairs, at most its burst plus what refilled in between.
    fn check_rate(&self) {
        let burst = f64::from(self.setup.per_minute.min(10));
        let per_sec = f64::from(self.setup.per_minute) / 60.0;
        let times = &self.lifetime_repairs;
        let last = *times.last().unwrap();
        for (i, first) in times.iter().enumerate() {
            let count = (times.len() - i) as f64;
            let allowed = burst + per_sec * (last - *first).as_secs_f64();
            if count > allowed + 1e-6 {
                self.fail(format!(
                    "invariant 4: {count} repairs within {:?}, the rate limit allows {allowed}",
                    last - *first
                ));
            }
        }
        let window = times
            .iter()
            .filter(|t| last - **t < Duration::from_secs(60))
            .count();
        assert!(window as u32 <= self.setup.per_minute.min(10) + self.setup.per_minute);
    }

    // The steps.

    fn apply(&mut self, step: &Step) {
        // Whatever happens next happens later: the wire has an order.
        self.now_ns += MS;
        match *step {
            Step::AddHost { client, ip } => {
                if self.hosts[usize::from(client)] != Some(ip) {
                    self.hosts[usize::from(client)] = Some(ip);
                    self.undeclared_since[usize::from(client)] = None;
                    self.hosts_edited();
                }
            }
            Step::RemoveHost { client } => self.remove_host(client),
            Step::Expunge { client, vip } => {
                self.remove_host(client);
                let held = self.table.iter().find(|(_, (c, _))| *c == client);
                if let Some((&ip, _)) = held {
                    self.now_ns += MS;
                    self.release(Sender::Router, ip, client, vip);
                }
            }
            Step::RewriteCaught { gap_ms } => {
                // Read between the truncate and the write: empty, then whole again. The
                // hosts in force do not change.
                let now = self.now();
                self.observer
                    .on_intent(intent("", self.now_ns), now, &mut self.out);
                self.loop_top();
                let gap = i128::from(gap_ms) * MS;
                self.now_ns += gap / 2;
                self.tick();
                self.now_ns += gap - gap / 2;
                self.hosts_changed_ns = self.now_ns;
                let now = self.now();
                self.observer
                    .on_intent(self.current_intent(), now, &mut self.out);
                self.loop_top();
            }
            Step::Grant { client } => {
                if let Some(index) = self.hosts[usize::from(client)]
                    && self.server_up
                    && self.owner(index).is_none()
                    && !self.holds_a_lease(client)
                {
                    self.acked_ns.insert((index, client), self.now_ns);
                    let xid = self.next_xid();
                    self.feed(&ack(index, client, xid, self.now_ns));
                    self.loop_top();
                    self.give(index, client);
                    self.lease_file();
                    self.loop_top();
                }
            }
            Step::Leak { ip, client } => {
                if self.server_up
                    && self.owner(ip).is_none()
                    && self.hosts[usize::from(client)].is_none()
                    && !self.holds_a_lease(client)
                {
                    self.give(ip, client);
                    self.lease_file();
                    self.loop_top();
                }
            }
            Step::Drop { ip } => {
                if self.server_up && self.owner(ip).is_some() {
                    self.vacate(ip);
                    self.lease_file();
                    self.loop_top();
                }
            }
            Step::Release {
                sender,
                ip,
                owner,
                client,
                vip,
            } => {
                let client = if owner {
                    self.owner(ip).unwrap_or(client)
                } else {
                    client
                };
                self.release(sender, ip, client, vip);
            }
            Step::Renew { ip, bump } => {
                if let Some(client) = self.owner(ip)
                    && self.server_up
                {
                    self.acked_ns.insert((ip, client), self.now_ns);
                    let xid = self.next_xid();
                    self.feed(&ack(ip, client, xid, self.now_ns));
                    self.loop_top();
                    if bump {
                        let expiry = self.expiry();
                        self.table.insert(ip, (client, expiry));
                    }
                    self.lease_file();
                    self.loop_top();
                }
            }
            Step::Server { up } => {
                self.server_up = up;
                self.server_check();
                self.loop_top();
            }
            Step::Restart => self.restart(),
            Step::Wait { ms } => self.now_ns += i128::from(ms) * MS,
        }
        self.tick();
    }

    fn remove_host(&mut self, client: u8) {
        if self.hosts[usize::from(client)].is_some() {
            self.hosts[usize::from(client)] = None;
            self.undeclared_since[usize::from(client)] = Some(self.now_ns);
            self.hosts_edited();
        }
    }

    /// A RELEASE of `ip` for `client`; the server honors it when it is up, the server id is
    /// the VIP and the lease is the client's (as dnsmasq does).
    fn release(&mut self, sender: Sender, ip: u8, client: u8, vip: bool) {
        let origin = match sender {
            Sender::Router => Origin::Router,
            Sender::Guest => Origin::Guest,
            // Framed by another MAC (a stranger's when `src` is the client itself).
            Sender::Forger { .. } => Origin::Forged,
        };
        self.releases.push(Sent {
            at_ns: self.now_ns,
            ip,
            client,
            origin,
        });
        let server_id = if vip { VIP } else { PRIMARY };
        let xid = self.next_xid();
        self.feed(&release(sender, ip, client, server_id, xid, self.now_ns));
        self.loop_top();
        if self.server_up && vip && self.owner(ip) == Some(client) {
            self.vacate(ip);
            self.lease_file();
            self.loop_top();
        }
    }

    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            self.log.push(format!("          {step:?}"));
            self.apply(step);
        }
    }

    fn hosts_edited(&mut self) {
        self.hosts_changed_ns = self.now_ns;
        let now = self.now();
        self.observer
            .on_intent(self.current_intent(), now, &mut self.out);
        self.loop_top();
    }
}

fn observer_config(policy: RepairPolicy, lifetime: u32) -> ObserverConfig {
    ObserverConfig {
        repair: Some(policy),
        reconcile: ReconcileConfig {
            settle: Duration::from_secs(SETTLE_SECS),
            report_after: Duration::from_secs(1),
        },
        empty_file_hold: Duration::ZERO,
        // Random per run in the daemon: a new seed per lifetime.
        own_xid_seed: 0x5eed_0000 ^ lifetime.wrapping_mul(0x9e37_79b9),
        ..ObserverConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_observer_repairs_only_what_the_model_says_is_owed(
        setup in setup(),
        steps in prop::collection::vec(step(), 1..50),
    ) {
        let mut world = World::new(setup);
        world.run(&steps);
        // Time for whatever is still owed (and held back by the rate limit) to be repaired.
        world.run(&[Step::Wait { ms: 30_000 }; 3]);
    }
}

// ---------------------------------------------------------------------------------------------
// The cases the property found, spelled out. Each runs through the same model, so a repair the
// model does not allow fails with the invariant it breaks.

/// A router with these host lines (each client's address) and leases (each address's client),
/// the hosts file written `hosts_age_secs` before start-up, the server honoring the repairs as
/// `honors` says.
fn router(
    hosts: [Option<u8>; CLIENTS as usize],
    leases: [Option<u8>; ADDRESSES as usize],
    hosts_age_secs: u32,
    honors: Vec<bool>,
) -> World {
    World::new(Setup {
        per_minute: 30,
        guest_releases: false,
        dry_run: false,
        hosts,
        leases,
        hosts_age_secs,
        honors,
    })
}

/// The control case: the flow the repair exists for works through the whole harness (so the
/// property is not vacuous). CloudStack expunges a VM on the BACKUP (its server stopped): the
/// host line goes, `dhcp_release` reaches no server. Nothing is repaired while the server is
/// down, across an agent restart too; after the failover the lease is released once, the live
/// VM's never.
#[test]
fn an_expunge_on_the_backup_is_repaired_once_after_failover_across_a_restart() {
    let mut world = router(
        [Some(0), Some(1), None, None],
        [Some(0), Some(1), None, None],
        3600,
        vec![true],
    );
    world.run(&[
        Step::Server { up: false },
        Step::Expunge {
            client: 0,
            vip: true,
        },
        Step::Wait { ms: 5_000 },
        Step::Restart,
        Step::Wait { ms: 20_000 },
    ]);
    assert!(world.repair_xids.is_empty(), "{}", world.log.join("\n"));
    assert_eq!(
        world.observer.outstanding().len(),
        1,
        "owed, kept across the restart"
    );
    world.run(&[
        Step::Server { up: true },
        Step::Wait { ms: 30_000 },
        Step::Wait { ms: 30_000 },
    ]);
    assert_eq!(world.repair_xids.len(), 1, "{}", world.log.join("\n"));
    assert_eq!(
        world.table.keys().collect::<Vec<_>>(),
        [&1],
        "only the expunged lease went"
    );
}

/// An orphan (no host line declares its client) whose client renews is alive and never
/// released: `Reconciler::on_ack` marks it so, and the mark is kept across a restart (the
/// daemon's state file keeps `renewed_orphans`). Found by the property: the mark lived only in
/// memory, and a restarted agent released the live lease.
#[test]
fn a_renewed_orphan_is_not_released_after_a_restart() {
    let mut world = router([None; 4], [Some(0), None, None, None], 0, vec![true]);
    world.run(&[
        Step::Wait { ms: 2_000 },
        Step::Renew { ip: 0, bump: false },
        Step::Wait { ms: 30_000 },
    ]);
    assert!(
        world.repair_xids.is_empty(),
        "alive: {}",
        world.log.join("\n")
    );
    // The restarted agent does not release the live lease.
    world.run(&[Step::Restart, Step::Wait { ms: 30_000 }]);
}

/// A declared host's lease for which `dhcp_release` was dropped stays owed, untried, because a
/// host line declares its client. The hosts file, caught empty while being rewritten, declares
/// no one for well under a second: nothing is sent, because any release needs the client to
/// have been undeclared for the settle time. Found by the property: the settle time guarded
/// only orphans, and the owed release went to a declared host.
#[test]
fn a_hosts_file_caught_empty_mid_rewrite_does_not_release_a_declared_host() {
    let mut world = router(
        [Some(0), None, None, None],
        [Some(0), None, None, None],
        3600,
        vec![true],
    );
    world.run(&[
        Step::Release {
            sender: Sender::Router,
            ip: 0,
            owner: true,
            client: 0,
            vip: false,
        },
        Step::Wait { ms: 3_000 },
    ]);
    assert!(
        world.repair_xids.is_empty(),
        "declared: {}",
        world.log.join("\n")
    );
    assert_eq!(world.observer.outstanding().len(), 1, "owed, waiting");
    // Not repaired during the 600 ms the file read empty.
    world.run(&[Step::RewriteCaught { gap_ms: 600 }]);
}

/// A repair the server ignored is never sent again (`OutstandingRelease::attempted`: "the
/// operator's to look at"), also not after a renewal forgot the entry and a new dropped
/// `dhcp_release` of that very lease (same address, MAC and expiry: an `infinite` lease's
/// expiry never changes) came: `Outstanding` remembers the leases it tried. Found by the
/// property: the renewal forgot the try, and the lease was repaired again.
#[test]
fn a_repair_the_server_ignored_is_not_sent_again_for_the_same_lease() {
    let mut world = router(
        [Some(0), None, None, None],
        [Some(0), None, None, None],
        3600,
        vec![false],
    );
    // The repair waits for the host line to have been gone for the settle time.
    world.run(&[
        Step::Expunge {
            client: 0,
            vip: false,
        },
        Step::Wait { ms: 11_000 },
    ]);
    assert_eq!(world.repair_xids.len(), 1, "{}", world.log.join("\n"));
    // Renewed, then dropped again: not the same lease repaired a second time.
    world.run(&[
        Step::Renew { ip: 0, bump: false },
        Step::Release {
            sender: Sender::Router,
            ip: 0,
            owner: true,
            client: 0,
            vip: false,
        },
        Step::Wait { ms: 3_000 },
    ]);
}
