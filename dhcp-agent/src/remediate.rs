//! Repair of dropped releases, the part that touches the network: send the RELEASE the server
//! would have accepted, then check the server's memory. What to repair and when is the engine's
//! ([`dhcp_engine::outstanding`]); this sends it and reports it.
use std::{net::SocketAddrV4, time::Duration};

use dhcp_engine::outstanding::{Repair, RepairResult};

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
