//! Property tests of the repair's safety rules. The repair sends RELEASEs on behalf of clients
//! to the server of a production router, so it must never:
//! - release an address, or a client, other than the one a dropped RELEASE was observed for;
//! - release a lease renewed (or given to another client) after the RELEASE was seen;
//! - send more than the rate limit allows;
//! - repair the same release twice, across restarts included.
//!
//! Random sequences of RELEASEs (right, wrong and missing server ids; right and wrong clients),
//! renewals, re-assignments, expiries, new leases, server answers, restarts from the state file
//! and time go through the daemon's own pieces: the correlator settles the releases against the
//! lease table, `Outstanding` keeps the dropped ones, and `Outstanding::due` picks the repairs
//! under the rate limit. Every repair it asks for is checked against a record of what happened.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use dhcp_engine::{
    correlate::{Correlator, NO_BACKLOG, Release},
    dnsmasq_conf::{DhcpRange, DnsmasqConfig},
    leases::{Expiry, Lease, LeaseTable},
    outstanding::{Outstanding, OutstandingRelease, RateLimit, Repair, RepairStep},
    provenance::Origin,
    server_identity::ServerIdentity,
};
use proptest::prelude::*;

const VIP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
const PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);
const ADDRESSES: u8 = 4;
const CLIENTS: u8 = 3;
const GRACE_MS: u64 = 1_000;

fn ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 29, 101, 100 + index)
}

fn mac(client: u8) -> Vec<u8> {
    vec![0x52, 0x54, 0, 0, 0, client]
}

/// The redundant VR: dnsmasq listens on the VIP, so the VIP is its server id.
fn identity() -> ServerIdentity {
    let config = DnsmasqConfig {
        listen_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(VIP)],
        ranges: vec![DhcpRange {
            start: ip(0),
            end: Some(ip(ADDRESSES)),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        }],
        ..DnsmasqConfig::default()
    };
    ServerIdentity::from_config(&config, &[])
}

#[derive(Debug, Clone)]
enum Step {
    /// A RELEASE for address `ip` from `client`, with option 54 set to the VIP (the server
    /// honors it), the primary address (`dhcp_release` on a redundant VR: dropped) or nothing.
    Release {
        ip: u8,
        client: u8,
        server_id: Option<bool>,
    },
    /// The lease's owner renews it: the server's ACK on the wire, and a new expiry in the file.
    Renew { ip: u8 },
    /// The address is granted (ACK) to a client, the same or another (after an expiry and a
    /// new DISCOVER).
    Reassign { ip: u8, client: u8 },
    /// The lease leaves the table (expired, or released by other means).
    Remove { ip: u8 },
    /// Time passes.
    Wait { ms: u64 },
    /// The agent is stopped and started again with its state file.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..ADDRESSES, 0..CLIENTS, prop::option::of(any::<bool>()))
            .prop_map(|(ip, client, server_id)| Step::Release { ip, client, server_id }),
        2 => (0..ADDRESSES).prop_map(|ip| Step::Renew { ip }),
        1 => (0..ADDRESSES, 0..CLIENTS).prop_map(|(ip, client)| Step::Reassign { ip, client }),
        1 => (0..ADDRESSES).prop_map(|ip| Step::Remove { ip }),
        4 => (0..3 * GRACE_MS).prop_map(|ms| Step::Wait { ms }),
        1 => Just(Step::Restart),
    ]
}

/// A RELEASE as observed, and the lease it was for at that moment.
#[derive(Debug)]
struct Observed {
    ip: Ipv4Addr,
    mac: Vec<u8>,
    at_step: usize,
}

/// The world the daemon's pieces run in, and the record the properties are checked against.
struct World {
    identity: ServerIdentity,
    table: LeaseTable,
    correlator: Correlator,
    outstanding: Outstanding,
    limit: RateLimit,
    per_minute: u32,
    burst: u32,
    start: Instant,
    now_ms: u64,
    /// Expiries only grow, so an (owner, expiry) pair names one lease uniquely.
    next_expiry: u64,
    step: usize,
    observed: Vec<Observed>,
    /// The step at which each address's lease last changed (renewed, re-assigned, removed).
    changed_at: [usize; ADDRESSES as usize],
    /// Repairs sent (or dry-run): when, and which.
    sent: Vec<(u64, Repair)>,
    /// Which addresses' leases the server dropped because of a repair.
    repaired_at: Vec<(Ipv4Addr, usize)>,
}

impl World {
    fn new(per_minute: u32, burst: u32, owners: [Option<u8>; ADDRESSES as usize]) -> World {
        // The limit starts full, so the microseconds between its clock and ours do not matter.
        let limit = RateLimit::new(per_minute, burst);
        let start = Instant::now();
        let mut world = World {
            identity: identity(),
            table: LeaseTable::default(),
            correlator: Correlator::new(i128::from(GRACE_MS) * 1_000_000),
            outstanding: Outstanding::default(),
            limit,
            per_minute,
            burst,
            start,
            now_ms: 1_000_000,
            next_expiry: 2_000_000_000,
            step: 0,
            observed: Vec::new(),
            changed_at: [0; ADDRESSES as usize],
            sent: Vec::new(),
            repaired_at: Vec::new(),
        };
        for (index, owner) in owners.iter().enumerate() {
            if let Some(client) = owner {
                let lease = world.lease(index as u8, *client);
                world.table.insert(lease);
            }
        }
        world
    }

    fn now_ns(&self) -> i128 {
        i128::from(self.now_ms) * 1_000_000
    }

    fn lease(&mut self, index: u8, client: u8) -> Lease {
        self.next_expiry += 1;
        Lease {
            ip: ip(index).into(),
            hwaddr: mac(client),
            htype: 1,
            client_id: Some([&[1u8][..], &mac(client)].concat()),
            hostname: None,
            expiry: Expiry::At(self.next_expiry),
            iaid: None,
        }
    }

    /// Changes the table as the server's rewritten lease file would, and tells the correlator.
    fn change_table(&mut self, index: u8, new: Option<Lease>) {
        let previous = self.table.clone();
        match new {
            Some(lease) => self.table.insert(lease),
            None => {
                self.table.v4.remove(&ip(index));
            }
        }
        self.changed_at[usize::from(index)] = self.step;
        let verdicts = self.correlator.on_table(
            &previous,
            &self.table,
            self.now_ns(),
            &self.identity,
            NO_BACKLOG,
        );
        self.settle(verdicts);
    }

    fn settle(&mut self, verdicts: Vec<dhcp_engine::correlate::Verdict>) {
        for verdict in &verdicts {
            self.outstanding.on_verdict(verdict);
        }
    }

    fn apply(&mut self, step: &Step) {
        self.step += 1;
        // Whatever happens next happens later: the wire has an order.
        self.now_ms += 1;
        match *step {
            Step::Release {
                ip: index,
                client,
                server_id,
            } => {
                let release = Release {
                    seen_ns: self.now_ns(),
                    interface: "lo".into(),
                    xid: self.step as u32,
                    ciaddr: ip(index),
                    chaddr: mac(client),
                    client_id: None,
                    server_id: server_id.map(|vip| if vip { VIP } else { PRIMARY }),
                    requested_ip: None,
                    origin: Origin::Router,
                    sender: None,
                };
                self.observed.push(Observed {
                    ip: ip(index),
                    mac: mac(client),
                    at_step: self.step,
                });
                let honored = server_id == Some(true)
                    && self
                        .table
                        .get_v4(ip(index))
                        .is_some_and(|l| l.hwaddr == mac(client));
                let verdict = self
                    .correlator
                    .on_release(release, &self.table, &self.identity);
                self.settle(verdict.into_iter().collect());
                if honored {
                    // dnsmasq drops the lease and rewrites its file.
                    self.change_table(index, None);
                }
            }
            Step::Renew { ip: index } => {
                if let Some(owner) = self.table.get_v4(ip(index)).map(|l| l.hwaddr[5]) {
                    self.correlator
                        .on_ack(ip(index), &mac(owner), self.now_ns(), None);
                    let renewed = self.lease(index, owner);
                    self.change_table(index, Some(renewed));
                }
            }
            Step::Reassign { ip: index, client } => {
                self.correlator
                    .on_ack(ip(index), &mac(client), self.now_ns(), None);
                let lease = self.lease(index, client);
                self.change_table(index, Some(lease));
            }
            Step::Remove { ip: index } => self.change_table(index, None),
            Step::Wait { ms } => {
                self.now_ms += ms;
                let verdicts =
                    self.correlator
                        .on_tick(&self.table, self.now_ns(), &self.identity, NO_BACKLOG);
                self.settle(verdicts);
            }
            Step::Restart => {
                // What the state file keeps, through its serialisation.
                let saved: Vec<OutstandingRelease> = self.outstanding.iter().cloned().collect();
                let text = serde_json::to_string(&saved).unwrap();
                self.outstanding = Outstanding::from_saved(serde_json::from_str(&text).unwrap());
            }
        }
        self.repair();
    }

    /// The daemon's repair round; the server honors every correct repair.
    fn repair(&mut self) {
        let identity = &self.identity;
        let due = self.outstanding.due(
            &self.table,
            |ip| identity.expected_for(ip).map(|k| k.server_id),
            |_| true,
            &mut self.limit,
            self.start + Duration::from_millis(self.now_ms),
            false,
        );
        for (repair, step) in due {
            if step != RepairStep::Send {
                continue;
            }
            self.check_repair(&repair);
            self.sent.push((self.now_ms, repair.clone()));
            let index = repair.ip.octets()[3] - 100;
            self.repaired_at.push((repair.ip, self.step));
            self.outstanding.remove(repair.ip);
            self.change_table(index, None);
        }
    }

    /// The repair releases the very lease an observed dropped RELEASE was for, unchanged since.
    fn check_repair(&self, repair: &Repair) {
        let index = usize::from(repair.ip.octets()[3] - 100);
        let lease = self.table.get_v4(repair.ip);
        assert!(
            lease.is_some_and(|l| l.hwaddr == repair.mac),
            "repair of {repair:?}, but the table gives the address to {lease:?}"
        );
        assert_eq!(repair.server_id, VIP, "a repair uses the server's own id");
        let observed = self.observed.iter().any(|o| {
            o.ip == repair.ip
                && o.mac == repair.mac
                && o.at_step > self.changed_at[index]
                && self
                    .repaired_at
                    .iter()
                    .all(|(ip, at)| *ip != repair.ip || *at < o.at_step)
        });
        assert!(
            observed,
            "repair of {repair:?} without a RELEASE of that lease seen since it last changed \
             and since its last repair; observed: {:?}, lease changed at step {}",
            self.observed, self.changed_at[index]
        );
    }

    /// Never more repairs in any stretch of time than the burst plus what refills in it.
    fn check_rate(&self) {
        let per_ms = f64::from(self.per_minute) / 60_000.0;
        for (i, (first, _)) in self.sent.iter().enumerate() {
            for (j, (last, _)) in self.sent.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let allowed = f64::from(self.burst) + per_ms * (last - first) as f64;
                assert!(
                    count <= allowed + 1e-9,
                    "{count} repairs within {} ms; the limit allows {allowed}",
                    last - first
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn repairs_only_the_observed_unchanged_lease_within_the_rate_limit(
        per_minute in 0u32..120,
        burst in 1u32..5,
        owners in prop::array::uniform4(prop::option::of(0..CLIENTS)),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut world = World::new(per_minute, burst, owners);
        for step in &steps {
            world.apply(step);
        }
        // Let every pending release settle and every deferred repair run.
        for _ in 0..4 {
            world.apply(&Step::Wait { ms: 60_000 });
        }
        world.check_rate();
    }
}

/// The cases the properties are about, spelled out: each must leave nothing to repair.
#[test]
fn a_release_whose_lease_was_renewed_or_reassigned_during_the_grace_is_never_repaired() {
    for change in [Step::Renew { ip: 0 }, Step::Reassign { ip: 0, client: 2 }] {
        let mut world = World::new(60, 5, [Some(1), None, None, None]);
        world.apply(&Step::Release {
            ip: 0,
            client: 1,
            server_id: Some(false),
        });
        world.apply(&change);
        world.apply(&Step::Wait { ms: 2 * GRACE_MS });
        assert!(world.sent.is_empty(), "{change:?}: {:?}", world.sent);
        assert!(world.outstanding.is_empty(), "{change:?}");
    }
}

#[test]
fn a_release_from_another_client_than_the_leases_owner_is_never_repaired() {
    let mut world = World::new(60, 5, [Some(1), None, None, None]);
    world.apply(&Step::Release {
        ip: 0,
        client: 2,
        server_id: Some(false),
    });
    world.apply(&Step::Wait { ms: 2 * GRACE_MS });
    assert!(world.sent.is_empty(), "{:?}", world.sent);
}

#[test]
fn a_dropped_release_is_repaired_once_across_a_restart() {
    let mut world = World::new(60, 5, [Some(1), None, None, None]);
    world.apply(&Step::Release {
        ip: 0,
        client: 1,
        server_id: Some(false),
    });
    world.apply(&Step::Wait { ms: 2 * GRACE_MS });
    assert_eq!(world.sent.len(), 1, "the dropped release is repaired");
    assert_eq!(world.sent[0].1.ip, ip(0));
    world.apply(&Step::Restart);
    world.apply(&Step::Wait { ms: 60_000 });
    assert_eq!(world.sent.len(), 1, "and not again after a restart");
}
