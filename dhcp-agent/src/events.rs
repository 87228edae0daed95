//! The daemon's findings as event lines: text for a person, or JSON (`--json`), one per line on
//! stdout; the state file keeps the flagged ones.
use std::io::Write as _;

use dhcp_engine::{
    correlate::{Cause, Outcome, Verdict},
    observer::{Divergence, DivergenceKind},
    outstanding::{Repair, RepairResult},
    time::rfc3339,
};
use dhcp_wire::hex_colon;
use serde::{Deserialize, Serialize};

/// Writes one event line to stdout, JSON or text.
pub fn emit(json: bool, event: &impl Serialize, text: String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let line = if json {
        serde_json::to_string(event)?
    } else {
        text
    };
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The structured event of one settled RELEASE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEvent {
    pub event: String,
    pub outcome: String,
    pub flagged: bool,
    pub cause: Option<String>,
    pub ip: String,
    pub mac: String,
    pub client_id: Option<String>,
    pub interface: String,
    pub xid: String,
    pub received_server_id: Option<String>,
    pub expected_server_id: Option<String>,
    pub requested_ip: Option<String>,
    pub hostname: Option<String>,
    pub seen: String,
    pub settled: String,
}

impl ReleaseEvent {
    pub fn new(v: &Verdict) -> ReleaseEvent {
        let r = &v.release;
        let cause = match &v.outcome {
            Outcome::Dropped(cause) => Some(cause),
            _ => None,
        };
        let expected = match cause {
            Some(Cause::ServerIdMismatch { expected, .. }) => Some(*expected),
            _ => v.expected_server_id,
        };
        ReleaseEvent {
            event: "release".into(),
            outcome: v.outcome.name().into(),
            flagged: cause.is_some(),
            cause: cause.map(|c| c.name().into()),
            ip: r.ciaddr.to_string(),
            mac: hex_colon(&r.chaddr),
            client_id: r.client_id.as_deref().map(hex_colon),
            interface: r.interface.clone(),
            xid: format!("0x{:08x}", r.xid),
            received_server_id: r.server_id.map(|a| a.to_string()),
            expected_server_id: expected.map(|a| a.to_string()),
            requested_ip: r.requested_ip.map(|a| a.to_string()),
            hostname: v.lease.as_ref().and_then(|l| l.hostname.clone()),
            seen: rfc3339(r.seen_ns),
            settled: rfc3339(v.settled_ns),
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!(
            "RELEASE {} {} on {}: {}",
            self.ip,
            self.mac,
            self.interface,
            self.outcome.to_uppercase()
        );
        if let Some(cause) = &self.cause {
            line.push_str(&format!(" ({cause}"));
            if cause == "server_id_mismatch" {
                line.push_str(&format!(
                    ": expected {}, got {}",
                    self.expected_server_id.as_deref().unwrap_or("?"),
                    self.received_server_id.as_deref().unwrap_or("-")
                ));
            }
            line.push(')');
        }
        line
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationEvent {
    pub event: String,
    pub result: String,
    pub ip: String,
    pub mac: String,
    pub server_id: String,
    pub detail: Option<String>,
}

impl RemediationEvent {
    pub fn new(repair: &Repair, result: RepairResult, detail: Option<String>) -> RemediationEvent {
        RemediationEvent {
            event: "remediation".into(),
            result: result.name().into(),
            ip: repair.ip.to_string(),
            mac: hex_colon(&repair.mac),
            server_id: repair.server_id.to_string(),
            detail,
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!(
            "REPAIR {} {}: {} (server id {})",
            self.ip,
            self.mac,
            self.result.to_uppercase(),
            self.server_id
        );
        if let Some(detail) = &self.detail {
            line.push_str(&format!(": {detail}"));
        }
        line
    }
}

/// The lease file and the server's memory disagree about a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivergenceEvent {
    pub event: String,
    /// `server_holds_lease_missing_from_file` or `file_lists_lease_server_does_not_hold`.
    pub kind: String,
    pub ip: String,
    pub mac: Option<String>,
}

impl DivergenceEvent {
    pub fn new(divergence: &Divergence) -> DivergenceEvent {
        DivergenceEvent {
            event: "divergence".into(),
            kind: divergence.kind.name().into(),
            ip: divergence.ip.to_string(),
            mac: divergence.mac.map(|m| m.to_string()),
        }
    }

    pub fn text(&self) -> String {
        let what = if self.kind == DivergenceKind::ServerHoldsLeaseMissingFromFile.name() {
            "the server holds a lease the file does not list"
        } else {
            "the file lists a lease the server does not hold"
        };
        format!(
            "DIVERGENCE {} {}: {what}",
            self.ip,
            self.mac.as_deref().unwrap_or("-")
        )
    }
}
