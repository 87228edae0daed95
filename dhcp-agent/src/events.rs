//! The daemon's findings as event lines: text for a person, or JSON (`--json`), one per line on
//! stdout; the state file keeps the flagged ones.
use std::io::Write as _;

use dhcp_engine::{
    correlate::{Cause, Outcome, Verdict},
    liveness::ServerStatus,
    observer::{Divergence, DivergenceKind},
    outstanding::{Repair, RepairResult},
    provenance::RogueServer,
    reconcile::{BlockedHost, OrphanLease, Reconciled},
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
    /// `router`, `guest` or `forged` (written by versions before it: absent).
    #[serde(default)]
    pub origin: String,
    /// The frame's Ethernet source: who sent it (for a forged one, not the client `mac` names).
    #[serde(default)]
    pub sender_mac: Option<String>,
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
            origin: r.origin.name().into(),
            sender_mac: r.sender.map(|m| m.to_string()),
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
        if self.origin == "forged" {
            line.push_str(&format!(
                " FORGED: sent from {}, not the client",
                self.sender_mac.as_deref().unwrap_or("?")
            ));
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
    /// Why the lease was owed a release: `router_release`, `guest_release` or `orphan`.
    #[serde(default)]
    pub basis: String,
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
            basis: repair.basis.name().into(),
            detail,
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!(
            "REPAIR {} {}: {} (server id {}, {})",
            self.ip,
            self.mac,
            self.result.to_uppercase(),
            self.server_id,
            self.basis
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

/// The server came up or went down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEvent {
    pub event: String,
    pub up: bool,
    /// This router should serve (it holds its listen addresses: not a BACKUP).
    pub should_serve: bool,
    pub reason: Option<String>,
}

impl ServerEvent {
    pub fn new(status: &ServerStatus) -> ServerEvent {
        ServerEvent {
            event: "server".into(),
            up: status.up,
            should_serve: status.should_serve,
            reason: status.reason.map(str::to_owned),
        }
    }

    pub fn text(&self) -> String {
        match (self.up, self.should_serve) {
            (true, _) => "SERVER UP".into(),
            (false, true) => format!(
                "SERVER DOWN ({}) on a router that should serve: releases reach no one, repairs wait",
                self.reason.as_deref().unwrap_or("?")
            ),
            (false, false) => format!(
                "SERVER DOWN ({}), as on a BACKUP router: repairs wait for a failover",
                self.reason.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// What reconciliation of the lease table with the declared hosts found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileEvent {
    /// `orphan`, `orphan_ended`, `blocked_host` or `unblocked_host`.
    pub event: String,
    pub ip: String,
    /// The lease's client (the holder, for a blocked host).
    pub mac: Option<String>,
    pub client_id: Option<String>,
    pub hostname: Option<String>,
    /// An orphan: no host line declares its client since then at the latest.
    pub undeclared_since: Option<String>,
    /// An orphan that ended: `released`, `declared` or `renewed`.
    pub reason: Option<String>,
    /// A blocked host: its host line (`file:line`), and whether the holder is an orphan.
    pub host: Option<String>,
    pub holder_is_orphan: Option<bool>,
}

impl ReconcileEvent {
    fn empty(event: &str, ip: std::net::Ipv4Addr) -> ReconcileEvent {
        ReconcileEvent {
            event: event.into(),
            ip: ip.to_string(),
            mac: None,
            client_id: None,
            hostname: None,
            undeclared_since: None,
            reason: None,
            host: None,
            holder_is_orphan: None,
        }
    }

    pub fn new(found: &Reconciled) -> ReconcileEvent {
        match found {
            Reconciled::Orphan(OrphanLease {
                lease,
                undeclared_since_ns,
            }) => {
                let ip = match lease.ip {
                    std::net::IpAddr::V4(ip) => ip,
                    std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
                };
                ReconcileEvent {
                    mac: Some(hex_colon(&lease.hwaddr)),
                    client_id: lease.client_id.as_deref().map(hex_colon),
                    hostname: lease.hostname.clone(),
                    undeclared_since: Some(rfc3339(*undeclared_since_ns)),
                    ..ReconcileEvent::empty("orphan", ip)
                }
            }
            Reconciled::OrphanEnded { ip, mac, reason } => ReconcileEvent {
                mac: mac.map(|m| m.to_string()),
                reason: Some((*reason).into()),
                ..ReconcileEvent::empty("orphan_ended", *ip)
            },
            Reconciled::Blocked(BlockedHost {
                ip,
                host_source,
                hostname,
                holder,
                holder_is_orphan,
            }) => ReconcileEvent {
                mac: Some(hex_colon(&holder.hwaddr)),
                client_id: holder.client_id.as_deref().map(hex_colon),
                hostname: hostname.clone(),
                host: Some(host_source.clone()),
                holder_is_orphan: Some(*holder_is_orphan),
                ..ReconcileEvent::empty("blocked_host", *ip)
            },
            Reconciled::Unblocked { ip, host_source } => ReconcileEvent {
                host: Some(host_source.clone()),
                ..ReconcileEvent::empty("unblocked_host", *ip)
            },
        }
    }

    pub fn text(&self) -> String {
        let mac = self.mac.as_deref().unwrap_or("-");
        match self.event.as_str() {
            "orphan" => format!(
                "ORPHAN {} {mac}{}: no host line declares this client (since {} at the latest)",
                self.ip,
                self.hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default(),
                self.undeclared_since.as_deref().unwrap_or("?")
            ),
            "orphan_ended" => format!(
                "ORPHAN ENDED {} {mac}: {}",
                self.ip,
                self.reason.as_deref().unwrap_or("?")
            ),
            "blocked_host" => format!(
                "BLOCKED HOST {}: declared at {}{} but leased to {mac}{}; that host gets no address",
                self.ip,
                self.host.as_deref().unwrap_or("?"),
                self.hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default(),
                if self.holder_is_orphan == Some(true) {
                    ", an orphan"
                } else {
                    ""
                }
            ),
            _ => format!(
                "UNBLOCKED HOST {} ({})",
                self.ip,
                self.host.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// A server reply from a host on a guest network that is not this router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RogueEvent {
    pub event: String,
    pub interface: String,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub server_id: Option<String>,
    pub message: String,
}

impl RogueEvent {
    pub fn new(rogue: &RogueServer) -> RogueEvent {
        RogueEvent {
            event: "rogue_server".into(),
            interface: rogue.interface.clone(),
            mac: rogue.mac.map(|m| m.to_string()),
            ip: rogue.ip.map(|a| a.to_string()),
            server_id: rogue.server_id.map(|a| a.to_string()),
            message: rogue.message.into(),
        }
    }

    pub fn text(&self) -> String {
        format!(
            "ROGUE SERVER on {}: {} from {} {} (server id {})",
            self.interface,
            self.message,
            self.ip.as_deref().unwrap_or("-"),
            self.mac.as_deref().unwrap_or("-"),
            self.server_id.as_deref().unwrap_or("-")
        )
    }
}
