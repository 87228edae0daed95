//! Repair of dropped releases, the part that touches the network: send the RELEASE the server
//! would have accepted, then check the server's memory. What to repair and when is the engine's
//! ([`dhcp_engine::outstanding`]); this sends it and reports it.
use std::{net::SocketAddrV4, path::Path, time::Duration};

use dhcp_engine::{
    leases::LeaseFormatName,
    outstanding::{Repair, RepairResult},
};

use crate::server_query;

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
    let held = match kea.lease4_get(repair.ip) {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return (
                RepairResult::Remediated,
                Some("Kea no longer held it".into()),
            );
        }
        Err(err) => return (RepairResult::Failed, Some(err.to_string())),
    };
    let same_client = held.mac() == Some(repair.mac)
        && match (&held.client_id, &repair.client_id) {
            (Some(held), Some(released)) => held == released,
            _ => true,
        };
    if !same_client {
        return (
            RepairResult::Failed,
            Some("Kea's lease of the address is another client's now: not deleted".into()),
        );
    }
    if let Err(err) = kea.lease4_del(repair.ip) {
        return (RepairResult::Failed, Some(err.to_string()));
    }
    match kea.lease4_get(repair.ip) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return (
                RepairResult::Failed,
                Some("Kea still holds the lease after lease4-del".into()),
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
        let listed = std::fs::read_to_string(lease_file)
            .ok()
            .and_then(|text| format.format().parse(&text).ok())
            .map(|table| table.get_v4(repair.ip).is_some());
        match listed {
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
