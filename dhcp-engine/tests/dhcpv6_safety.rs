//! The DHCPv6 repair's safety rules, through the whole observer: random sequences of
//! RELEASEs (the server's DUID, another's, none; from the router, a guest, a forger; sent once
//! or again with the same xid), the server's REPLYs (to a release, granting the address again),
//! the server going down and up, lease-file reads and time. Every repair the observer asks for
//! must be for a binding whose RELEASE the server was seen to ignore (no REPLY), sent by the
//! router, never renewed since, still in the file; it names the server's own DUID, carries one
//! of the agent's own xids, is never asked twice for the same binding, never while the server
//! is down, and each RELEASE counts once however often it was sent.
use std::time::{Duration, Instant};

use dhcp_common::Hook;
use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    correlate6::Outcome6,
    leases::{Expiry, Lease, LeaseTable},
    liveness::ServerCheck,
    observer::{LeaseFileRead, Now, RepairPolicy},
    outstanding::RepairStep,
    server_identity::ServerIdentity,
};
use dhcp_wire::{
    Packet,
    dhcpv6::{code, status},
    test_support::{Dhcpv6Spec, v6_packet},
};
use proptest::prelude::*;

const SERVER: [u8; 10] = [0, 1, 0, 1, 0x2c, 0, 0, 1, 0xaa, 0xbb];
const OTHER: [u8; 10] = [0, 1, 0, 1, 0x2c, 0, 0, 2, 0xcc, 0xdd];
const GRACE_NS: i128 = 1_000_000_000;
const IAID: u32 = 7;

fn address() -> std::net::Ipv6Addr {
    "fd00::10".parse().unwrap()
}

/// The test frames come from 52:54:00:aa:00:01: this DUID names it (a guest's own), the other
/// names another machine (a forger's, seen arriving).
fn duid(forged: bool) -> Vec<u8> {
    let last = if forged { 0x77 } else { 1 };
    vec![0, 3, 0, 1, 0x52, 0x54, 0, 0xaa, 0, last]
}

fn table(expiry: Option<u64>, client: &[u8]) -> LeaseTable {
    let mut table = LeaseTable {
        server_duid: Some(SERVER.to_vec()),
        ..LeaseTable::default()
    };
    if let Some(expiry) = expiry {
        table.insert(Lease {
            ip: address().into(),
            hwaddr: Vec::new(),
            htype: 0,
            client_id: Some(client.to_vec()),
            hostname: None,
            expiry: Expiry::At(expiry),
            iaid: Some(IAID),
        });
    }
    table
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ServerId {
    Own,
    Other,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sender {
    Router,
    Guest,
    Forger,
}

#[derive(Debug, Clone)]
enum Step {
    Release {
        xid: u32,
        server: ServerId,
        sender: Sender,
    },
    /// The server's REPLY to the last RELEASE (it honored it: the binding leaves the file).
    ReplyToRelease,
    /// The server grants the address again (a REPLY to the client's RENEW): a new expiry.
    Renewed,
    ServerDown,
    ServerUp,
    Wait {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u32..3, prop_oneof![Just(ServerId::Own), Just(ServerId::Other), Just(ServerId::Missing)],
              prop_oneof![Just(Sender::Router), Just(Sender::Guest), Just(Sender::Forger)])
            .prop_map(|(xid, server, sender)| Step::Release { xid, server, sender }),
        1 => Just(Step::ReplyToRelease),
        1 => Just(Step::Renewed),
        1 => Just(Step::ServerDown),
        1 => Just(Step::ServerUp),
        3 => (100u64..2_500).prop_map(|ms| Step::Wait { ms }),
    ]
}

struct World {
    observer: Observer,
    now_ns: i128,
    mono: Instant,
    /// The binding's expiry in the file (`None`: not in the file) and whose it is.
    expiry: Option<u64>,
    client: Vec<u8>,
    server_up: bool,
    last_release: Option<(u32, Vec<u8>)>,
    repairs: Vec<u64>,
    opened: usize,
    settled: usize,
    /// Why the binding may be repaired: a router's RELEASE the server ignored, nothing since.
    owed: bool,
}

impl World {
    fn now(&self) -> Now {
        Now {
            unix_ns: self.now_ns,
            mono: self.mono,
        }
    }

    fn file(&mut self, out: &mut Vec<Finding>) {
        let now = self.now();
        let read = LeaseFileRead::Table(table(self.expiry, &self.client));
        self.observer.on_lease_file(read, now, out);
    }

    fn packet(&mut self, packet: &Packet, out: &mut Vec<Finding>) {
        if self.observer.is_own(packet) {
            return;
        }
        self.observer.on_packet(packet, out);
    }

    fn check(&mut self, out: Vec<Finding>) {
        for finding in out {
            match finding {
                Finding::Settled6(verdict) => {
                    self.settled += 1;
                    if let Outcome6::Dropped(_) = verdict.outcome {
                        self.owed |= verdict.release.origin.name() == "router"
                            && !verdict.renewed_since
                            && verdict.lease.is_some();
                    }
                }
                Finding::Repair6(repair, step) => {
                    assert!(self.server_up, "no repair while the server is down");
                    assert_eq!(repair.server_duid, SERVER, "the server's own DUID");
                    assert_eq!((repair.address, repair.iaid), (address(), IAID));
                    assert_eq!(repair.client_duid, self.client, "the binding's own client");
                    let expiry = self
                        .expiry
                        .expect("a repair only for a binding in the file");
                    assert!(
                        self.owed,
                        "only for an ignored router RELEASE, not renewed since"
                    );
                    if step != RepairStep::RateLimited {
                        assert!(
                            !self.repairs.contains(&expiry),
                            "the same binding repaired twice"
                        );
                        self.repairs.push(expiry);
                        assert!(repair.xid <= 0x00ff_ffff);
                        // Its own RELEASE, when captured, is the agent's: not judged.
                        let own = release_packet(repair.xid, &SERVER, &repair.client_duid, true, 0);
                        assert!(self.observer.is_own(&own));
                    }
                }
                _ => {}
            }
        }
    }

    fn run(&mut self, step: &Step) {
        let mut out = Vec::new();
        match step {
            Step::Release {
                xid,
                server,
                sender,
            } => {
                let forged = *sender == Sender::Forger;
                let server = match server {
                    ServerId::Own => Some(&SERVER[..]),
                    ServerId::Other => Some(&OTHER[..]),
                    ServerId::Missing => None,
                };
                let client = duid(forged);
                let packet = release_packet(
                    *xid,
                    server.unwrap_or(&[]),
                    &client,
                    *sender == Sender::Router,
                    self.now_ns,
                );
                let packet = if server.is_none() {
                    release_without_server_id(*xid, &client, self.now_ns)
                } else {
                    packet
                };
                if self.observer.on_packet(&packet, &mut out) {
                    self.opened += 1;
                }
                self.last_release = Some((*xid, client));
            }
            Step::ReplyToRelease => {
                if let Some((xid, client)) = self.last_release.clone() {
                    let reply = Dhcpv6Spec {
                        code: code::REPLY,
                        xid,
                        client_duid: Some(client.clone()),
                        server_duid: Some(SERVER.to_vec()),
                        status: Some(status::SUCCESS),
                        ias: Vec::new(),
                    };
                    let packet = v6_packet(&reply, self.now_ns, Hook::TcEgress);
                    self.packet(&packet, &mut out);
                    if client == self.client {
                        self.expiry = None;
                        self.owed = false;
                        self.file(&mut out);
                    }
                }
            }
            Step::Renewed => {
                let expiry = self.expiry.map_or(1_000, |e| e + 60);
                let reply = Dhcpv6Spec {
                    code: code::REPLY,
                    xid: 0x00ab_cdef,
                    client_duid: Some(self.client.clone()),
                    server_duid: Some(SERVER.to_vec()),
                    ias: vec![(IAID, vec![address()], None)],
                    ..Dhcpv6Spec::default()
                };
                let packet = v6_packet(&reply, self.now_ns, Hook::TcEgress);
                self.packet(&packet, &mut out);
                self.expiry = Some(expiry);
                self.owed = false;
                self.file(&mut out);
            }
            Step::ServerDown | Step::ServerUp => {
                self.server_up = matches!(step, Step::ServerUp);
                for _ in 0..3 {
                    let check = ServerCheck {
                        listening: self.server_up,
                        answered: Some(self.server_up),
                        should_serve: true,
                    };
                    let now = self.now();
                    self.observer.on_server_check(check, now, &mut out);
                }
            }
            Step::Wait { ms } => {
                self.now_ns += i128::from(*ms) * 1_000_000;
                self.mono += Duration::from_millis(*ms);
                let now = self.now();
                self.observer.settle_due(now, &mut out);
                self.file(&mut out);
            }
        }
        let now = self.now();
        self.observer.plan_repairs(now, true, &mut out);
        self.check(out);
    }
}

fn release_packet(xid: u32, server: &[u8], client: &[u8], router: bool, at: i128) -> Packet {
    let spec = Dhcpv6Spec {
        code: code::RELEASE,
        xid,
        client_duid: Some(client.to_vec()),
        server_duid: Some(server.to_vec()),
        ias: vec![(IAID, vec![address()], None)],
        ..Dhcpv6Spec::default()
    };
    v6_packet(
        &spec,
        at,
        if router {
            Hook::TcEgress
        } else {
            Hook::TcIngress
        },
    )
}

fn release_without_server_id(xid: u32, client: &[u8], at: i128) -> Packet {
    let spec = Dhcpv6Spec {
        code: code::RELEASE,
        xid,
        client_duid: Some(client.to_vec()),
        ias: vec![(IAID, vec![address()], None)],
        ..Dhcpv6Spec::default()
    };
    v6_packet(&spec, at, Hook::TcEgress)
}

fn world() -> World {
    let config = ObserverConfig {
        grace: Duration::from_nanos(GRACE_NS as u64),
        repair: Some(RepairPolicy::new(600)),
        own_xid_seed: 0x5eed,
        ..ObserverConfig::default()
    };
    let mut world = World {
        observer: Observer::new(config, ServerIdentity::default()),
        now_ns: 1_700_000_000_000_000_000,
        mono: Instant::now(),
        expiry: Some(1_000),
        client: duid(false),
        server_up: true,
        last_release: None,
        repairs: Vec::new(),
        opened: 0,
        settled: 0,
        owed: false,
    };
    let mut out = Vec::new();
    world.file(&mut out);
    world
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn repairs_keep_every_safety_rule(steps in proptest::collection::vec(step(), 1..40)) {
        let mut world = world();
        for step in &steps {
            world.run(step);
        }
        // Every record opened is settled once (the rest are copies), given time.
        world.run(&Step::Wait { ms: 3_000 });
        assert_eq!(world.observer.pending6(), 0);
        assert!(world.settled <= world.opened.max(1) * 3, "{} settled, {} opened", world.settled, world.opened);
    }
}

/// The case the lab shows on real dnsmasq: dhcp_release6 with another router's DUID from the
/// router, five copies, no REPLY: one verdict, one repair naming the server's DUID.
#[test]
fn dhcp_release6_with_a_wrong_duid_is_repaired_once() {
    let mut world = world();
    let mut verdicts = 0;
    let mut repairs = 0;
    for _ in 0..5 {
        let mut out = Vec::new();
        let packet = release_packet(0, &OTHER, &duid(false), true, world.now_ns);
        world.observer.on_packet(&packet, &mut out);
        world.now_ns += 1_000_000_000;
        world.mono += Duration::from_secs(1);
        let now = world.now();
        world.observer.settle_due(now, &mut out);
        world.observer.plan_repairs(now, false, &mut out);
        for finding in &out {
            match finding {
                Finding::Settled6(v) => {
                    verdicts += 1;
                    assert_eq!(v.outcome.name(), "dropped");
                }
                Finding::Repair6(r, RepairStep::Send) => {
                    repairs += 1;
                    assert_eq!(r.server_duid, SERVER);
                }
                _ => {}
            }
        }
    }
    assert_eq!((verdicts, repairs), (1, 1));
}
