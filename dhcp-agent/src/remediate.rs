//! Repair of dropped releases, the part that touches the network: send the RELEASE the server
//! would have accepted, then check the server's memory. What to repair and when is the engine's
//! ([`dhcp_engine::outstanding`]); this sends it and reports it.
use std::{net::SocketAddrV4, path::Path, time::Duration};

use dhcp_engine::{
    leases::{Lease, LeaseFormatName},
    outstanding::{Repair, RepairResult},
};

use crate::{kea::KeaControlError, server_query};

/// Sends the repair and waits for the server to drop the lease from its memory (blocking).
pub fn execute(
    repair: &Repair,
    server: SocketAddrV4,
    timeout: Duration,
) -> (RepairResult, Option<String>) {
    let release = server_query::ReleaseSpec {
        ip: repair.ip,
        mac: repair.mac,
        server_id: repair.server_id,
        client_id: repair.client_id.as_deref(),
        xid: repair.xid,
    };
    match server_query::release_and_verify(server, &release, repair.probe_xid, timeout) {
        Ok(true) => (RepairResult::Remediated, None),
        Ok(false) => (
            RepairResult::Failed,
            Some("the server still holds the lease".into()),
        ),
        // Sent, then the server went quiet (stopped or restarting): the lease file tells
        // whether it took; a failure it is not.
        Err(err @ server_query::QueryError::NoAnswer(..)) => (
            RepairResult::Unverified,
            Some(format!("sent; {err} to check it")),
        ),
        Err(err) => (RepairResult::Failed, Some(err.to_string())),
    }
}

/// Repairs through Kea's own API: `lease4-del` of the address, only while Kea's lease there is
/// still the released client's (the same hardware address, and client id when both have one:
/// repair rule 1, only the observed address and client), then verified: `lease4-get` answers
/// not found, and the lease file no longer lists the lease (Kea appends a row with
/// `valid_lifetime` 0 on delete). Blocking.
pub fn execute_kea(
    repair: &Repair,
    kea: &crate::kea::KeaControl,
    lease_file: &Path,
    format: LeaseFormatName,
    timeout: Duration,
) -> (RepairResult, Option<String>) {
    KeaDelete {
        command: "lease4-del",
        get: || kea.lease4_get(repair.ip),
        del: || kea.lease4_del(repair.ip),
        same_client: |held: &Lease| {
            held.mac() == Some(repair.mac)
                && match (&held.client_id, &repair.client_id) {
                    (Some(held), Some(released)) => held == released,
                    _ => true,
                }
        },
        // With the files Kea's lease file cleanup keeps leases in (`read_table`).
        listed: || {
            crate::leases::read_table(lease_file, format.format().as_ref())
                .ok()
                .map(|table| table.get_v4(repair.ip).is_some())
        },
    }
    .run(lease_file, timeout)
}

/// A repair through Kea's control socket, for either family: Kea's lease of the address
/// (`get`) is deleted (`del`) only while it is still the released client's (`same_client`),
/// then `get` must find none and the lease file (`listed`: `None` when it does not read) must
/// stop listing it within the timeout.
pub(crate) struct KeaDelete<G, D, S, L> {
    pub command: &'static str,
    pub get: G,
    pub del: D,
    pub same_client: S,
    pub listed: L,
}

impl<G, D, S, L> KeaDelete<G, D, S, L>
where
    G: Fn() -> Result<Option<Lease>, KeaControlError>,
    D: Fn() -> Result<bool, KeaControlError>,
    S: Fn(&Lease) -> bool,
    L: Fn() -> Option<bool>,
{
    pub fn run(self, lease_file: &Path, timeout: Duration) -> (RepairResult, Option<String>) {
        let held = match (self.get)() {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return (
                    RepairResult::Remediated,
                    Some("Kea no longer held it".into()),
                );
            }
            Err(err) => return (RepairResult::Failed, Some(err.to_string())),
        };
        if !(self.same_client)(&held) {
            return (
                RepairResult::Failed,
                Some("Kea's lease of the address is another client's now: not deleted".into()),
            );
        }
        if let Err(err) = (self.del)() {
            return (RepairResult::Failed, Some(err.to_string()));
        }
        match (self.get)() {
            Ok(None) => {}
            Ok(Some(_)) => {
                return (
                    RepairResult::Failed,
                    Some(format!("Kea still holds the lease after {}", self.command)),
                );
            }
            Err(err) => {
                return (
                    RepairResult::Unverified,
                    Some(format!("deleted; {err} to check it")),
                );
            }
        }
        let start = std::time::Instant::now();
        loop {
            match (self.listed)() {
                Some(false) => return (RepairResult::Remediated, None),
                _ if start.elapsed() >= timeout => {
                    return (
                        RepairResult::Unverified,
                        Some(format!(
                            "deleted from Kea's memory; {} still lists it",
                            lease_file.display()
                        )),
                    );
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
