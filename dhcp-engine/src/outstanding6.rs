//! Dropped DHCPv6 releases owed a repair, and the repairs due (the v6 side of
//! [`crate::outstanding`], under the same rules and the same rate limit).
//!
//! A repair sends the RELEASE again with the server's own DUID; it is owed only while the
//! binding the file showed at the RELEASE is still there, unchanged (same expiry: a renewal
//! changes it), and the client did not get the address again since. Never for a forged
//! release, never twice for the same binding, never while the server is down (the observer
//! holds them back).
use std::{net::Ipv6Addr, time::Instant};

use crate::{
    correlate6::{Cause6, Outcome6, Verdict6},
    leases::{Expiry, LeaseTable},
    outstanding::{Basis, RateLimit, RepairStep},
    provenance::Origin,
};

/// A repair to make: release this binding, naming this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair6 {
    pub address: Ipv6Addr,
    pub client_duid: Vec<u8>,
    pub iaid: u32,
    pub server_duid: Vec<u8>,
    /// Where the RELEASE goes (the servers' multicast group on this interface).
    pub interface: String,
    pub basis: Basis,
    /// The RELEASE's transaction id (24 bits), handed out by the observer.
    pub xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owed {
    address: Ipv6Addr,
    client_duid: Vec<u8>,
    iaid: u32,
    expiry: Expiry,
    interface: String,
    basis: Basis,
    attempted: bool,
    deferred: bool,
}

impl Owed {
    fn from_verdict(verdict: &Verdict6) -> Option<Owed> {
        let Outcome6::Dropped(cause) = &verdict.outcome else {
            return None;
        };
        let release = &verdict.release;
        let basis = match release.origin {
            Origin::Router => Basis::RouterRelease,
            Origin::Guest => Basis::GuestRelease,
            Origin::Forged => return None,
        };
        // A server that was down had the binding back when it came up: owed, like v4's.
        let repairable = cause.repairable() || matches!(cause, Cause6::NoServer);
        if !repairable || verdict.renewed_since {
            return None;
        }
        let lease = verdict.lease.as_ref()?;
        Some(Owed {
            address: release.address,
            client_duid: release.client_duid.clone(),
            iaid: release.iaid,
            expiry: lease.expiry,
            interface: release.interface.clone(),
            basis,
            attempted: false,
            deferred: false,
        })
    }

    fn same_binding(&self, address: Ipv6Addr, duid: &[u8], iaid: u32) -> bool {
        self.address == address && self.client_duid == duid && self.iaid == iaid
    }

    /// The binding is still in the file exactly as it was at the RELEASE.
    fn still_held(&self, table: &LeaseTable) -> bool {
        table.v6.iter().any(|l| {
            l.ip == std::net::IpAddr::V6(self.address)
                && l.client_id.as_deref() == Some(&self.client_duid[..])
                && l.iaid == Some(self.iaid)
                && l.expiry == self.expiry
        })
    }
}

/// Dropped DHCPv6 releases still owed a repair.
#[derive(Debug, Default)]
pub struct Outstanding6 {
    owed: Vec<Owed>,
    /// Bindings a repair was sent for (never sent twice).
    tried: Vec<(Ipv6Addr, Vec<u8>, u32, Expiry)>,
}

impl Outstanding6 {
    pub fn on_verdict(&mut self, verdict: &Verdict6) {
        let r = &verdict.release;
        match Owed::from_verdict(verdict) {
            Some(entry) => {
                let key = (
                    entry.address,
                    entry.client_duid.clone(),
                    entry.iaid,
                    entry.expiry,
                );
                if !self.tried.contains(&key) {
                    self.owed
                        .retain(|o| !o.same_binding(r.address, &r.client_duid, r.iaid));
                    self.owed.push(entry);
                }
            }
            // Honored since, or the client took it back: nothing owed any more.
            None if verdict.outcome == Outcome6::Honored || verdict.renewed_since => self
                .owed
                .retain(|o| !o.same_binding(r.address, &r.client_duid, r.iaid)),
            None => {}
        }
    }

    /// The server granted `address` to `duid` again: nothing is owed for it any more.
    pub fn on_renewed(&mut self, address: Ipv6Addr, duid: &[u8]) {
        self.owed
            .retain(|o| !(o.address == address && o.client_duid == duid));
    }

    /// Forgets entries whose binding is gone or changed.
    pub fn refresh(&mut self, table: &LeaseTable) {
        self.owed.retain(|o| o.still_held(table));
    }

    /// A repair that was verified.
    pub fn remove(&mut self, repair: &Repair6) {
        self.owed
            .retain(|o| !o.same_binding(repair.address, &repair.client_duid, repair.iaid));
    }

    pub fn len(&self) -> usize {
        self.owed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// The repairs due now, as far as `allows` and the rate limit let. `xid` hands out the
    /// agent's own transaction ids.
    #[allow(clippy::too_many_arguments)]
    pub fn due(
        &mut self,
        table: &LeaseTable,
        server_duid: Option<&[u8]>,
        allows: impl Fn(Basis) -> bool,
        limit: &mut RateLimit,
        now: Instant,
        dry_run: bool,
        mut xid: impl FnMut() -> u32,
    ) -> Vec<(Repair6, RepairStep)> {
        self.refresh(table);
        let Some(server_duid) = server_duid else {
            return Vec::new(); // the server's DUID is not known yet
        };
        let mut due = Vec::new();
        for entry in self
            .owed
            .iter_mut()
            .filter(|o| !o.attempted && allows(o.basis))
        {
            let repair = Repair6 {
                address: entry.address,
                client_duid: entry.client_duid.clone(),
                iaid: entry.iaid,
                server_duid: server_duid.to_vec(),
                interface: entry.interface.clone(),
                basis: entry.basis,
                xid: 0,
            };
            if !limit.allow(now) {
                if !entry.deferred {
                    entry.deferred = true;
                    due.push((repair, RepairStep::RateLimited));
                }
                continue;
            }
            entry.attempted = true;
            self.tried.push((
                entry.address,
                entry.client_duid.clone(),
                entry.iaid,
                entry.expiry,
            ));
            let step = if dry_run {
                RepairStep::DryRun
            } else {
                RepairStep::Send
            };
            due.push((
                Repair6 {
                    xid: xid(),
                    ..repair
                },
                step,
            ));
        }
        if self.tried.len() > 4096 {
            self.tried.drain(..2048);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use dhcp_common::Hook;
    use dhcp_wire::test_support::{Dhcpv6Spec, v6_packet};

    use super::*;
    use crate::{correlate6::Release6, leases::Lease};

    const CLIENT: [u8; 10] = [0, 3, 0, 1, 0x52, 0x54, 0, 0xaa, 0, 1];
    const SERVER: [u8; 4] = [0, 2, 0, 9];

    fn address() -> Ipv6Addr {
        "fd00::10".parse().unwrap()
    }

    fn lease(expiry: u64) -> Lease {
        Lease {
            ip: address().into(),
            hwaddr: Vec::new(),
            htype: 0,
            client_id: Some(CLIENT.to_vec()),
            hostname: None,
            expiry: Expiry::At(expiry),
            iaid: Some(7),
        }
    }

    fn verdict(hook: Hook, duid: &[u8], outcome: Outcome6, renewed: bool) -> Verdict6 {
        let spec = Dhcpv6Spec {
            code: 8,
            client_duid: Some(duid.to_vec()),
            server_duid: Some(vec![1]),
            ias: vec![(7, vec![address()], None)],
            ..Dhcpv6Spec::default()
        };
        Verdict6 {
            release: Release6::from_packet(&v6_packet(&spec, 0, hook)).remove(0),
            outcome,
            expected_server_duid: Some(SERVER.to_vec()),
            lease: Some(lease(100)),
            renewed_since: renewed,
            retransmissions: 0,
            by_reply: false,
            settled_ns: 0,
        }
    }

    fn mismatch() -> Outcome6 {
        Outcome6::Dropped(Cause6::ServerIdMismatch {
            expected: SERVER.to_vec(),
            received: vec![1],
        })
    }

    fn table(expiry: u64) -> LeaseTable {
        [lease(expiry)].into_iter().collect()
    }

    fn due(o: &mut Outstanding6, table: &LeaseTable, limit: &mut RateLimit) -> Vec<RepairStep> {
        o.due(
            table,
            Some(&SERVER),
            |_| true,
            limit,
            Instant::now(),
            false,
            || 42,
        )
        .into_iter()
        .map(|(repair, step)| {
            assert_eq!(repair.server_duid, SERVER);
            // Only a repair to send is given one of the agent's xids.
            let sent = step != RepairStep::RateLimited;
            assert_eq!(repair.xid == 42, sent, "{step:?}");
            step
        })
        .collect()
    }

    #[test]
    fn a_dropped_router_release_is_repaired_once_and_only_while_its_binding_is_unchanged() {
        let mut limit = RateLimit::new(60, 10);
        let mut o = Outstanding6::default();
        o.on_verdict(&verdict(Hook::TcEgress, &CLIENT, mismatch(), false));
        assert_eq!(due(&mut o, &table(100), &mut limit), [RepairStep::Send]);
        assert_eq!(due(&mut o, &table(100), &mut limit), [], "never twice");
        // The same dropped release again (the same binding): tried already.
        o.on_verdict(&verdict(Hook::TcEgress, &CLIENT, mismatch(), false));
        assert_eq!(due(&mut o, &table(100), &mut limit), []);
        // A renewal (new expiry) ends what was owed.
        let mut o = Outstanding6::default();
        o.on_verdict(&verdict(Hook::TcEgress, &CLIENT, mismatch(), false));
        assert_eq!(due(&mut o, &table(200), &mut limit), []);
        assert!(o.is_empty());
    }

    #[test]
    fn forged_renewed_unknown_and_unrepairable_releases_are_never_owed() {
        let forger = [0, 3, 0, 1, 1, 1, 1, 1, 1, 1];
        let cases = [
            verdict(Hook::TcIngress, &forger, mismatch(), false),
            verdict(Hook::TcEgress, &CLIENT, mismatch(), true),
            verdict(
                Hook::TcEgress,
                &CLIENT,
                Outcome6::Dropped(Cause6::Unknown),
                false,
            ),
            verdict(
                Hook::TcEgress,
                &CLIENT,
                Outcome6::Dropped(Cause6::Refused { status: 1 }),
                false,
            ),
            verdict(Hook::TcEgress, &CLIENT, Outcome6::Honored, false),
        ];
        for v in cases {
            let mut o = Outstanding6::default();
            o.on_verdict(&v);
            assert!(o.is_empty(), "{v:?}");
        }
    }

    #[test]
    fn the_rate_limit_and_the_policy_hold_repairs_back() {
        let mut o = Outstanding6::default();
        // A guest's own release (its DUID names its MAC): only when the policy allows.
        o.on_verdict(&verdict(Hook::TcIngress, &CLIENT, mismatch(), false));
        let mut limit = RateLimit::new(60, 10);
        let none = o.due(
            &table(100),
            Some(&SERVER),
            |b| b != Basis::GuestRelease,
            &mut limit,
            Instant::now(),
            false,
            || 1,
        );
        assert!(none.is_empty());
        let mut empty = RateLimit::new(0, 0);
        assert_eq!(
            due(&mut o, &table(100), &mut empty),
            [RepairStep::RateLimited]
        );
        assert_eq!(due(&mut o, &table(100), &mut empty), [], "reported once");
        // No server DUID known: nothing yet.
        let waits = o.due(
            &table(100),
            None,
            |_| true,
            &mut limit,
            Instant::now(),
            false,
            || 1,
        );
        assert!(waits.is_empty());
        assert_eq!(due(&mut o, &table(100), &mut limit), [RepairStep::Send]);
    }
}
