//! The daemon's findings as events: a line on stdout, text for a person or JSON (`--json`), or,
//! under systemd, a journal entry with one field per field of the event ([`journal_entry`]);
//! the state file keeps the flagged ones.
//!
//! Every event that names a client carries `host`, the name the host lines give it (the
//! orchestrator's: CloudStack's `i-2-50-VM`), looked up as dnsmasq would match the client
//! ([`Reconciler::declared_name`]); `hostname` stays what the client or its lease gave.
use std::{
    io::Write,
    net::Ipv4Addr,
    path::Path,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use dhcp_engine::{
    correlate::{Cause, Outcome, Verdict},
    correlate6::{self, Cause6, Outcome6, Verdict6},
    declared::ClientKeys,
    liveness::ServerStatus,
    observer::{Divergence, DivergenceKind},
    outstanding::{Repair, RepairResult},
    outstanding6::Repair6,
    provenance::RogueServer,
    reconcile::{BlockedHost, OrphanLease, Reconciled, Reconciler},
    time::rfc3339,
};
use dhcp_wire::{Mac, hex_colon};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::journal::{self, Entry, Journal, JournalError};

/// Where events go (`run --events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EventsTo {
    /// The journal when systemd connected stdout to it (`$JOURNAL_STREAM`) and its socket
    /// exists, as under the packaged unit; stdout otherwise.
    #[default]
    Auto,
    /// The journal's native socket, whatever stdout is.
    Journal,
    /// Lines on stdout: text, or JSON with --json.
    Stdout,
}

/// Where this process's events go, chosen once at start ([`set_sink`]): like stdout, which it
/// stands for, one for the whole process, so every `emit` follows it.
static SINK: OnceLock<EventSink> = OnceLock::new();

/// Sends every later [`emit`] where `sink` says; once per process.
pub fn set_sink(sink: EventSink) -> anyhow::Result<()> {
    SINK.set(sink)
        .map_err(|_| anyhow::anyhow!("where events go was already chosen"))
}

/// Writes one event where the process's events go ([`set_sink`]; stdout until then).
pub fn emit(json: bool, event: &impl Serialize, text: String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match SINK.get() {
        Some(sink) => sink.emit_to(&mut out, json, event, text),
        None => write_line(&mut out, json, event, text),
    }
}

/// One event line, JSON or text.
fn write_line(
    out: &mut dyn Write,
    json: bool,
    event: &impl Serialize,
    text: String,
) -> anyhow::Result<()> {
    let line = if json {
        serde_json::to_string(event)?
    } else {
        text
    };
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Events to the journal, or to stdout. An event the journal does not take (journald
/// restarting, its queue full past the send timeout) is written to stdout instead, and said so
/// on stderr once per spell: no event is lost without a word.
#[derive(Debug, Default)]
pub struct EventSink {
    journal: Option<Journal>,
    /// Events that went to stdout because the journal did not take them, since start.
    fallbacks: AtomicU64,
    /// Of those, the ones since the journal last took one (0: it takes them).
    missed: AtomicU64,
}

impl EventSink {
    pub fn stdout() -> EventSink {
        EventSink::default()
    }

    pub fn journal(journal: Journal) -> EventSink {
        EventSink {
            journal: Some(journal),
            ..EventSink::default()
        }
    }

    /// Where `to` sends events on this machine now.
    pub fn choose(to: EventsTo) -> anyhow::Result<EventSink> {
        let socket = Path::new(journal::SOCKET);
        let journal = || Journal::new(socket).map(EventSink::journal);
        match to {
            EventsTo::Stdout => Ok(EventSink::stdout()),
            EventsTo::Journal => {
                anyhow::ensure!(
                    journal::socket_exists(socket),
                    "--events journal: no journal listens at {}",
                    socket.display()
                );
                journal().context("--events journal")
            }
            EventsTo::Auto if journal::stdout_is_journal() && journal::socket_exists(socket) => {
                journal().context("events to the journal")
            }
            EventsTo::Auto => Ok(EventSink::stdout()),
        }
    }

    /// Where events go, for the start-up line.
    pub fn describe(&self, json: bool) -> String {
        match &self.journal {
            Some(journal) => format!(
                "to the journal ({}, native protocol: one DHCP_* field per field)",
                journal.path().display()
            ),
            None if json => "JSON lines on stdout".into(),
            None => "text lines on stdout".into(),
        }
    }

    /// Events the journal did not take, written to stdout instead, since start.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Sends one event to the journal, or writes it to `out` (stdout) as a line.
    pub fn emit_to(
        &self,
        out: &mut dyn Write,
        json: bool,
        event: &impl Serialize,
        text: String,
    ) -> anyhow::Result<()> {
        let Some(journal) = &self.journal else {
            return write_line(out, json, event, text);
        };
        let sent = journal_entry(&serde_json::to_value(event)?, &text)
            .and_then(|entry| journal.send(&entry));
        match sent {
            Ok(_) => {
                let missed = self.missed.swap(0, Ordering::Relaxed);
                if missed > 0 {
                    eprintln!(
                        "events: the journal takes them again; {missed} went to stdout meanwhile                          ({} since start)",
                        self.fallbacks()
                    );
                }
                Ok(())
            }
            Err(err) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                if self.missed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!(
                        "events: not sent to the journal ({err}); writing them to stdout until                          it takes them again"
                    );
                }
                write_line(out, json, event, text)
            }
        }
    }
}

/// The journal's syslog priorities (`PRIORITY=`) the events use.
pub mod priority {
    pub const ERR: u8 = 3;
    pub const WARNING: u8 = 4;
    pub const NOTICE: u8 = 5;
    pub const INFO: u8 = 6;
}

/// Each kind of event's `MESSAGE_ID` in the journal, fixed for good (searches, alerts and
/// catalogs match on them): the kind is the event's `event`, except that a release's is split
/// by what operators look for, its outcome (`release_dropped`, ...), and a forged one has its
/// own whatever its outcome. Other kinds keep their outcome in a field (`DHCP_RESULT`,
/// `DHCP_UP`). A kind not listed (added later) gets no MESSAGE_ID, its fields all the same.
pub const MESSAGE_IDS: &[(&str, &str)] = &[
    ("release_dropped", "52bbfad9092a452ba02945e1c35b3af3"),
    ("release_honored", "6a6faabeebc644f28ed637c9c809479d"),
    ("release_no_lease", "d607effc11c0448f9c54c8558aa5d9ec"),
    ("release_forged", "067b71b576f7417dbd748514537bfdf8"),
    ("remediation", "c322784d71dc4a9ebe9e8b77420db0e6"),
    ("divergence", "3da0a36adda941d9aeafc1b22257d966"),
    ("server", "12b67e98c7a54280a450d8fcf2281525"),
    ("orphan", "831f9342e60649a6b1ba97e1af65e1dd"),
    ("orphan_ended", "3e90c32bfc7e4f1ab2e19f6a51f6d539"),
    ("blocked_host", "664ab17e43334257a5f86c6276047f20"),
    ("unblocked_host", "62458c0d33bf47fa84f5c7d86fa63a79"),
    ("rogue_server", "753105782af343df918f87b1ef6298d9"),
    ("interface", "bf027375bd654bbebd64fb995f34abea"),
];

/// The kind [`MESSAGE_IDS`] knows an event by.
fn journal_kind(fields: &Map<String, Value>) -> String {
    let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or_default();
    match text("event") {
        "release" if text("origin") == "forged" => "release_forged".into(),
        "release" => format!("release_{}", text("outcome")),
        event => event.into(),
    }
}

/// How urgent an event is: what needs someone (a repair that failed, a server down where it
/// should serve, a host that gets no address) is `err`; what is wrong but waits or repairs
/// itself (a dropped or forged release, an orphan, a rogue server, a divergence) `warning`; the
/// agent's own actions `notice`; what went as it should `info`.
fn priority(kind: &str, fields: &Map<String, Value>) -> u8 {
    use priority::*;
    let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or_default();
    let flag = |key: &str| fields.get(key).and_then(Value::as_bool);
    match kind {
        "release_dropped" | "release_forged" | "divergence" | "orphan" | "rogue_server" => WARNING,
        "release_honored" | "release_no_lease" | "orphan_ended" | "unblocked_host" => INFO,
        "blocked_host" => ERR,
        "remediation" => match text("result") {
            "failed" => ERR,
            "rate_limited" | "unverified" => WARNING,
            _ => NOTICE,
        },
        "server" => match (flag("up"), flag("should_serve")) {
            (Some(true), _) => INFO,
            (_, Some(true)) => ERR,
            _ => NOTICE,
        },
        // Not attached: blind on that network (DhcpInterfaceDetached is a warning too).
        "interface" => match text("change") {
            "failed" => WARNING,
            "detached" => NOTICE,
            _ => INFO,
        },
        _ => NOTICE,
    }
}

/// The journal field of an event's field: `DHCP_` and its name in capitals (`outcome` is
/// `DHCP_OUTCOME`).
pub fn journal_field_name(key: &str) -> String {
    let name: String = key
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    format!("DHCP_{name}")
}

/// An event as a journal entry: `MESSAGE` its text line, `MESSAGE_ID` and `PRIORITY` by its
/// kind, `SYSLOG_IDENTIFIER=dhcp-agent`, and every field of its JSON as `DHCP_<FIELD>` (strings
/// as they are, numbers and booleans as JSON writes them, arrays and objects as JSON text,
/// null fields left out). Derived from the serialization, so an event kind added later is
/// covered without a word here.
pub fn journal_entry(event: &Value, text: &str) -> Result<Entry, JournalError> {
    let empty = Map::new();
    let fields = event.as_object().unwrap_or(&empty);
    let kind = journal_kind(fields);
    let mut entry = Entry::new();
    entry.field("MESSAGE", text)?;
    if let Some((_, id)) = MESSAGE_IDS.iter().find(|(k, _)| *k == kind) {
        entry.field("MESSAGE_ID", id)?;
    }
    entry.field("PRIORITY", priority(&kind, fields).to_string())?;
    entry.field("SYSLOG_IDENTIFIER", "dhcp-agent")?;
    // daemon(3): where rsyslog's imjournal files it.
    entry.field("SYSLOG_FACILITY", "3")?;
    for (key, value) in fields {
        let value = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            Value::Array(_) | Value::Object(_) => {
                serde_json::to_string(value).expect("a serde_json value always serializes")
            }
        };
        entry.field(&journal_field_name(key), value)?;
    }
    Ok(entry)
}

/// ` (host NAME)` when the host lines name the client, for the text lines.
fn host_text(host: &Option<String>) -> String {
    host.as_deref()
        .map(|h| format!(" (host {h})"))
        .unwrap_or_default()
}

/// What an event knows of a client by MAC (and address).
fn by_mac(mac: &Mac, ip: Ipv4Addr) -> ClientKeys<'_> {
    ClientKeys {
        ip: Some(ip),
        ..ClientKeys::ethernet(&mac.0, None)
    }
}

/// The structured event of one settled RELEASE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEvent {
    pub event: String,
    /// `dhcpv4` or `dhcpv6` (written by versions before DHCPv6 was correlated: absent, v4).
    #[serde(default = "dhcpv4")]
    pub protocol: String,
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
    /// The name the client gave (its lease's).
    pub hostname: Option<String>,
    /// The name the hosts file gives the client (the orchestrator's: CloudStack's
    /// `i-2-50-VM`); absent in state files written before it.
    #[serde(default)]
    pub host: Option<String>,
    pub seen: String,
    pub settled: String,
    /// DHCPv6: the identity association's id (the lease's IAID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iaid: Option<u32>,
    /// DHCPv6: the message (`RELEASE` or `DECLINE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// DHCPv6: copies of the RELEASE seen before it settled (counted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retransmissions: Option<u32>,
    /// DHCPv6: settled by the server's REPLY (`reply`) or by its silence past the grace
    /// (`deadline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_by: Option<String>,
}

fn dhcpv4() -> String {
    "dhcpv4".into()
}

impl ReleaseEvent {
    /// The event of a DHCPv6 verdict: `ip` is the address, `client_id` the client's DUID,
    /// `mac` the link-layer address its DUID names (when it names one), the server ids DUIDs.
    pub fn new6(v: &Verdict6, names: &Reconciler) -> ReleaseEvent {
        let r = &v.release;
        let mac = correlate6::duid_link_layer(&r.client_duid);
        let client = ClientKeys {
            hwaddr: mac.as_ref().map(|m| &m[..]),
            htype: 1,
            client_id: Some(&r.client_duid),
            hostname: v.lease.as_ref().and_then(|l| l.hostname.as_deref()),
            ip: None,
        };
        let cause = match &v.outcome {
            Outcome6::Dropped(cause) => Some(cause),
            _ => None,
        };
        let expected = match cause {
            Some(Cause6::ServerIdMismatch { expected, .. }) => Some(expected.clone()),
            _ => v.expected_server_duid.clone(),
        };
        ReleaseEvent {
            event: "release".into(),
            protocol: "dhcpv6".into(),
            outcome: v.outcome.name().into(),
            flagged: cause.is_some(),
            cause: cause.map(|c| c.name().into()),
            ip: r.address.to_string(),
            mac: mac.map(|m| hex_colon(&m)).unwrap_or_default(),
            client_id: Some(hex_colon(&r.client_duid)),
            interface: r.interface.clone(),
            origin: r.origin.name().into(),
            sender_mac: r.sender.map(|m| m.to_string()),
            xid: format!("0x{:06x}", r.xid),
            received_server_id: r.server_duid.as_deref().map(hex_colon),
            expected_server_id: expected.as_deref().map(hex_colon),
            requested_ip: None,
            hostname: v.lease.as_ref().and_then(|l| l.hostname.clone()),
            host: names.declared_name(&client),
            seen: rfc3339(r.seen_ns),
            settled: rfc3339(v.settled_ns),
            iaid: Some(r.iaid),
            message: Some(r.kind.name().into()),
            retransmissions: Some(v.retransmissions),
            settled_by: Some(if v.by_reply { "reply" } else { "deadline" }.into()),
        }
    }

    /// The event of a verdict; `names` gives the client's name from the host lines.
    pub fn new(v: &Verdict, names: &Reconciler) -> ReleaseEvent {
        let r = &v.release;
        let client = ClientKeys {
            hwaddr: Some(&r.chaddr),
            htype: v.lease.as_ref().map_or(1, |l| l.htype),
            client_id: r.client_id.as_deref(),
            hostname: v.lease.as_ref().and_then(|l| l.hostname.as_deref()),
            ip: Some(r.ciaddr),
        };
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
            protocol: dhcpv4(),
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
            host: names.declared_name(&client),
            seen: rfc3339(r.seen_ns),
            settled: rfc3339(v.settled_ns),
            ..ReleaseEvent::default()
        }
    }

    pub fn text(&self) -> String {
        let who = match (&self.iaid, &self.client_id) {
            (Some(iaid), Some(duid)) => format!("duid {duid} iaid {iaid}"),
            _ => self.mac.clone(),
        };
        let mut line = format!(
            "{} {} {}{} on {}: {}",
            self.message.as_deref().unwrap_or("RELEASE"),
            self.ip,
            who,
            host_text(&self.host),
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
    /// `dhcpv4` or `dhcpv6` (absent before DHCPv6 repairs: v4).
    #[serde(default = "dhcpv4")]
    pub protocol: String,
    pub result: String,
    pub ip: String,
    pub mac: String,
    pub server_id: String,
    /// Why the lease was owed a release: `router_release`, `guest_release` or `orphan`.
    #[serde(default)]
    pub basis: String,
    pub detail: Option<String>,
    /// The name the hosts file gives the client; absent in state files written before it.
    #[serde(default)]
    pub host: Option<String>,
    /// DHCPv6: the client's DUID and the binding's IAID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iaid: Option<u32>,
}

impl RemediationEvent {
    /// A DHCPv6 repair's event: `server_id` is the DUID the RELEASE named.
    pub fn new6(
        repair: &Repair6,
        result: RepairResult,
        detail: Option<String>,
    ) -> RemediationEvent {
        RemediationEvent {
            event: "remediation".into(),
            protocol: "dhcpv6".into(),
            result: result.name().into(),
            ip: repair.address.to_string(),
            mac: correlate6::duid_link_layer(&repair.client_duid)
                .map(|m| hex_colon(&m))
                .unwrap_or_default(),
            server_id: hex_colon(&repair.server_duid),
            basis: repair.basis.name().into(),
            detail,
            host: None,
            client_id: Some(hex_colon(&repair.client_duid)),
            iaid: Some(repair.iaid),
        }
    }

    pub fn new(
        repair: &Repair,
        result: RepairResult,
        detail: Option<String>,
        names: &Reconciler,
    ) -> RemediationEvent {
        let client = ClientKeys {
            ip: Some(repair.ip),
            ..ClientKeys::ethernet(&repair.mac, repair.client_id.as_deref())
        };
        RemediationEvent {
            event: "remediation".into(),
            protocol: dhcpv4(),
            result: result.name().into(),
            ip: repair.ip.to_string(),
            mac: hex_colon(&repair.mac),
            server_id: repair.server_id.to_string(),
            basis: repair.basis.name().into(),
            detail,
            host: names.declared_name(&client),
            client_id: None,
            iaid: None,
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!(
            "REPAIR {} {}{}: {} (server id {}, {})",
            self.ip,
            self.mac,
            host_text(&self.host),
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
    /// The name the hosts file gives the client (by its MAC, or by the address when the server
    /// alone holds the lease).
    #[serde(default)]
    pub host: Option<String>,
}

impl DivergenceEvent {
    pub fn new(divergence: &Divergence, names: &Reconciler) -> DivergenceEvent {
        let client = match &divergence.mac {
            Some(mac) => by_mac(mac, divergence.ip),
            None => ClientKeys::address(divergence.ip),
        };
        DivergenceEvent {
            event: "divergence".into(),
            kind: divergence.kind.name().into(),
            ip: divergence.ip.to_string(),
            mac: divergence.mac.map(|m| m.to_string()),
            host: names.declared_name(&client),
        }
    }

    pub fn text(&self) -> String {
        let what = if self.kind == DivergenceKind::ServerHoldsLeaseMissingFromFile.name() {
            "the server holds a lease the file does not list"
        } else {
            "the file lists a lease the server does not hold"
        };
        format!(
            "DIVERGENCE {} {}{}: {what}",
            self.ip,
            self.mac.as_deref().unwrap_or("-"),
            host_text(&self.host)
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
    pub host_line: Option<String>,
    pub holder_is_orphan: Option<bool>,
    /// The name the hosts file gives the lease's client (the holder, for a blocked host; for an
    /// unblocked one, which names no client, the host of the address).
    pub host: Option<String>,
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
            host_line: None,
            holder_is_orphan: None,
            host: None,
        }
    }

    pub fn new(found: &Reconciled, names: &Reconciler) -> ReconcileEvent {
        let host = names.declared_name(&match found {
            Reconciled::Orphan(OrphanLease { lease, .. }) => ClientKeys::of_lease(lease),
            Reconciled::Blocked(BlockedHost { holder, .. }) => ClientKeys::of_lease(holder),
            Reconciled::OrphanEnded { ip, mac, .. } => match mac {
                Some(mac) => by_mac(mac, *ip),
                None => ClientKeys::address(*ip),
            },
            Reconciled::Unblocked { ip, .. } => ClientKeys::address(*ip),
        });
        ReconcileEvent {
            host,
            ..ReconcileEvent::without_host(found)
        }
    }

    fn without_host(found: &Reconciled) -> ReconcileEvent {
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
                host_line: Some(host_source.clone()),
                holder_is_orphan: Some(*holder_is_orphan),
                ..ReconcileEvent::empty("blocked_host", *ip)
            },
            Reconciled::Unblocked { ip, host_source } => ReconcileEvent {
                host_line: Some(host_source.clone()),
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
                "ORPHAN ENDED {} {mac}{}: {}",
                self.ip,
                host_text(&self.host),
                self.reason.as_deref().unwrap_or("?")
            ),
            "blocked_host" => format!(
                "BLOCKED HOST {}: declared at {}{} but leased to {mac}{}{}; that host gets no \
                 address",
                self.ip,
                self.host_line.as_deref().unwrap_or("?"),
                self.hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default(),
                host_text(&self.host),
                if self.holder_is_orphan == Some(true) {
                    ", an orphan"
                } else {
                    ""
                }
            ),
            _ => format!(
                "UNBLOCKED HOST {} ({}){}",
                self.ip,
                self.host_line.as_deref().unwrap_or("?"),
                host_text(&self.host)
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
    /// The name the hosts file gives the sender: a guest of ours answering as a server.
    pub host: Option<String>,
}

impl RogueEvent {
    pub fn new(rogue: &RogueServer, names: &Reconciler) -> RogueEvent {
        let ip = match rogue.ip {
            Some(std::net::IpAddr::V4(ip)) => Some(ip),
            _ => None,
        };
        let client = match (&rogue.mac, ip) {
            (Some(mac), _) => Some(ClientKeys {
                ip,
                ..ClientKeys::ethernet(&mac.0, None)
            }),
            (None, Some(ip)) => Some(ClientKeys::address(ip)),
            (None, None) => None,
        };
        RogueEvent {
            event: "rogue_server".into(),
            interface: rogue.interface.clone(),
            mac: rogue.mac.map(|m| m.to_string()),
            ip: rogue.ip.map(|a| a.to_string()),
            server_id: rogue.server_id.map(|a| a.to_string()),
            message: rogue.message.into(),
            host: client.and_then(|c| names.declared_name(&c)),
        }
    }

    pub fn text(&self) -> String {
        format!(
            "ROGUE SERVER on {}: {} from {} {}{} (server id {})",
            self.interface,
            self.message,
            self.ip.as_deref().unwrap_or("-"),
            self.mac.as_deref().unwrap_or("-"),
            host_text(&self.host),
            self.server_id.as_deref().unwrap_or("-")
        )
    }
}

/// An interface attached, detached, re-attached or failing to attach while the daemon runs
/// ([`crate::capture::Capture::reconcile`]; the attachments at start are on stderr only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceEvent {
    pub event: String,
    /// `attached`, `detached`, `reattached` or `failed`.
    pub change: String,
    pub interface: String,
    pub ifindex: u32,
    /// The hooks attached (detached, for `detached`), e.g. `tc_ingress (tcx)`.
    pub hooks: Vec<String>,
    /// Why it was attached (`matches --iface eth*`, `served: ...`), what became of a detached
    /// one, or the error of a failed attach.
    pub reason: Option<String>,
}

impl InterfaceEvent {
    pub fn new(change: &crate::capture::InterfaceChange) -> InterfaceEvent {
        use crate::capture::InterfaceChange;
        let (name, reason) = match change {
            InterfaceChange::Attached { why, .. } => ("attached", why.clone()),
            InterfaceChange::Gone { kept: true, .. } => (
                "detached",
                "gone (deleted or renamed); named by --iface: re-attached when it is back".into(),
            ),
            InterfaceChange::Gone { kept: false, .. } => (
                "detached",
                "gone (deleted or renamed); its series are removed".into(),
            ),
            InterfaceChange::Reattached { .. } => {
                ("reattached", "back under a name attached before".into())
            }
            InterfaceChange::Failed { error, .. } => ("failed", error.clone()),
        };
        InterfaceEvent {
            event: "interface".into(),
            change: name.into(),
            interface: change.interface().to_owned(),
            ifindex: change.index(),
            hooks: change.hooks(),
            reason: Some(reason),
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!(
            "INTERFACE {} (ifindex {}) {}",
            self.interface,
            self.ifindex,
            self.change.to_uppercase()
        );
        if !self.hooks.is_empty() {
            line.push_str(&format!(": {}", self.hooks.join(", ")));
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" ({reason})"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use dhcp_engine::{
        correlate::Release,
        declared::{DeclaredHosts, HostLine},
        dnsmasq_conf::DnsmasqConfig,
        leases::{Expiry, Lease},
        provenance::Origin,
        reconcile::Intent,
    };
    use serde_json::json;

    use super::*;
    use crate::journal::tests::{FakeJournald, decode};

    /// The host lines of a CloudStack router's /etc/dhcphosts.txt.
    fn names() -> Reconciler {
        let mut reconciler = Reconciler::default();
        reconciler.set_intent(Intent {
            hosts: DeclaredHosts {
                hosts: vec![
                    HostLine::parse(
                        "02:00:4c:1d:00:02,10.1.1.10,i-2-50-VM,infinite",
                        "/etc/dhcphosts.txt:1".into(),
                    )
                    .unwrap(),
                ],
                ..DeclaredHosts::default()
            },
            config: DnsmasqConfig::default(),
            local: Vec::new(),
        });
        reconciler
    }

    const VM: [u8; 6] = [2, 0, 0x4c, 0x1d, 0, 2];

    fn dropped_release(origin: Origin) -> Verdict {
        Verdict {
            release: Release {
                seen_ns: 1_700_000_000_000_000_000,
                interface: "lo".into(),
                xid: 7,
                ciaddr: Ipv4Addr::new(10, 1, 1, 10),
                chaddr: VM.to_vec(),
                client_id: None,
                server_id: None,
                requested_ip: None,
                origin,
                sender: None,
            },
            outcome: Outcome::Dropped(Cause::NoServer),
            expected_server_id: None,
            lease: Some(Lease {
                ip: Ipv4Addr::new(10, 1, 1, 10).into(),
                hwaddr: VM.to_vec(),
                htype: 1,
                client_id: None,
                hostname: Some("web-1".into()),
                expiry: Expiry::Never,
                iaid: None,
            }),
            renewed_since: false,
            in_memory_only: false,
            settled_ns: 1_700_000_002_000_000_000,
        }
    }

    fn field(entry: &Entry, name: &str) -> Option<String> {
        entry
            .get(name)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn a_release_names_its_client_as_the_hosts_file_does() {
        let event = ReleaseEvent::new(&dropped_release(Origin::Router), &names());
        assert_eq!(event.host.as_deref(), Some("i-2-50-VM"));
        assert_eq!(
            event.hostname.as_deref(),
            Some("web-1"),
            "the lease's own name"
        );
        assert_eq!(
            event.text(),
            "RELEASE 10.1.1.10 02:00:4c:1d:00:02 (host i-2-50-VM) on lo: DROPPED (no_server)"
        );
        let unnamed = ReleaseEvent::new(&dropped_release(Origin::Router), &Reconciler::default());
        assert_eq!(unnamed.host, None);
        assert!(!unnamed.text().contains("(host"), "{}", unnamed.text());
    }

    #[test]
    fn every_field_of_the_json_is_a_journal_field() {
        let event = ReleaseEvent::new(&dropped_release(Origin::Router), &names());
        let entry = journal_entry(&serde_json::to_value(&event).unwrap(), &event.text()).unwrap();
        for (name, value) in [
            ("MESSAGE", event.text().as_str()),
            ("MESSAGE_ID", "52bbfad9092a452ba02945e1c35b3af3"),
            ("PRIORITY", "4"),
            ("SYSLOG_IDENTIFIER", "dhcp-agent"),
            ("DHCP_EVENT", "release"),
            ("DHCP_OUTCOME", "dropped"),
            ("DHCP_FLAGGED", "true"),
            ("DHCP_CAUSE", "no_server"),
            ("DHCP_IP", "10.1.1.10"),
            ("DHCP_MAC", "02:00:4c:1d:00:02"),
            ("DHCP_HOST", "i-2-50-VM"),
            ("DHCP_HOSTNAME", "web-1"),
            ("DHCP_ORIGIN", "router"),
            ("DHCP_XID", "0x00000007"),
        ] {
            assert_eq!(field(&entry, name).as_deref(), Some(value), "{name}");
        }
        // Null fields are left out: `DHCP_CLIENT_ID=` would match nothing anyone searches.
        for absent in ["DHCP_CLIENT_ID", "DHCP_SENDER_MAC", "DHCP_REQUESTED_IP"] {
            assert_eq!(entry.get(absent), None, "{absent}");
        }
        let json_fields = serde_json::to_value(&event).unwrap();
        let non_null = json_fields
            .as_object()
            .unwrap()
            .values()
            .filter(|v| !v.is_null())
            .count();
        assert_eq!(entry.fields().len(), 5 + non_null);
        assert_eq!(decode(&entry.encode()).unwrap(), entry);
    }

    #[test]
    fn a_kind_added_later_is_covered_by_its_serialization() {
        // Shaped like an interface event another module may add: nested values are JSON text.
        let event = json!({
            "event": "interface",
            "interface": "eth2",
            "change": "detached",
            "addresses": ["10.1.1.1/24"],
            "hooks": {"tc_ingress": false},
            "reason": null,
            "ifindex": 4
        });
        let entry = journal_entry(&event, "INTERFACE eth2 detached").unwrap();
        assert_eq!(
            field(&entry, "MESSAGE_ID").as_deref(),
            Some("bf027375bd654bbebd64fb995f34abea")
        );
        assert_eq!(
            field(&entry, "DHCP_ADDRESSES").as_deref(),
            Some(r#"["10.1.1.1/24"]"#)
        );
        assert_eq!(
            field(&entry, "DHCP_HOOKS").as_deref(),
            Some(r#"{"tc_ingress":false}"#)
        );
        assert_eq!(field(&entry, "DHCP_IFINDEX").as_deref(), Some("4"));
        assert_eq!(entry.get("DHCP_REASON"), None);
        // A kind no one listed: every field, no MESSAGE_ID.
        let entry = journal_entry(&json!({"event": "future", "odd-key.x": 1}), "x").unwrap();
        assert_eq!(entry.get("MESSAGE_ID"), None);
        assert_eq!(field(&entry, "PRIORITY").as_deref(), Some("5"));
        assert_eq!(field(&entry, "DHCP_ODD_KEY_X").as_deref(), Some("1"));
    }

    #[test]
    fn priorities_and_ids_follow_what_operators_look_for() {
        let entry = |event: Value| journal_entry(&event, "x").unwrap();
        let of = |event: Value| {
            let e = entry(event);
            (field(&e, "PRIORITY").unwrap(), field(&e, "MESSAGE_ID"))
        };
        let id = |kind: &str| {
            MESSAGE_IDS
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, id)| id.to_string())
        };
        let forged = ReleaseEvent {
            origin: "forged".into(),
            ..ReleaseEvent::new(&dropped_release(Origin::Forged), &names())
        };
        assert_eq!(
            of(serde_json::to_value(&forged).unwrap()),
            ("4".into(), id("release_forged"))
        );
        let honored = json!({"event": "release", "outcome": "honored", "origin": "router"});
        assert_eq!(of(honored), ("6".into(), id("release_honored")));
        for (result, priority) in [
            ("failed", "3"),
            ("unverified", "4"),
            ("rate_limited", "4"),
            ("remediated", "5"),
            ("dry_run", "5"),
        ] {
            let repair = json!({"event": "remediation", "result": result});
            assert_eq!(of(repair), (priority.into(), id("remediation")), "{result}");
        }
        for (up, should_serve, priority) in
            [(false, true, "3"), (false, false, "5"), (true, true, "6")]
        {
            let server = json!({"event": "server", "up": up, "should_serve": should_serve});
            assert_eq!(of(server), (priority.into(), id("server")));
        }
        assert_eq!(of(json!({"event": "blocked_host"})).0, "3");
        assert_eq!(of(json!({"event": "orphan"})).0, "4");
        assert_eq!(of(json!({"event": "rogue_server"})).0, "4");
        assert_eq!(of(json!({"event": "orphan_ended"})).0, "6");
        for (change, priority) in [("failed", "4"), ("detached", "5"), ("attached", "6")] {
            let interface = json!({"event": "interface", "change": change});
            assert_eq!(
                of(interface),
                (priority.into(), id("interface")),
                "{change}"
            );
        }
    }

    #[test]
    fn message_ids_are_distinct_id128s_and_documented() {
        let readme = include_str!("../../README.md");
        let mut seen = std::collections::HashSet::new();
        for (kind, id) in MESSAGE_IDS {
            assert!(
                id.len() == 32
                    && id
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{kind}: {id} is not an id128 as journalctl writes them"
            );
            assert!(seen.insert(id), "{kind}: {id} twice");
            assert!(
                readme.contains(&format!("| `{kind}` | `{id}` |")),
                "README.md's table of MESSAGE_IDs lacks {kind} {id}"
            );
        }
        // The packaging check (`cargo xtask dist`) finds a dropped release in a real journal
        // by its id.
        let (_, dropped) = MESSAGE_IDS
            .iter()
            .find(|(k, _)| *k == "release_dropped")
            .unwrap();
        assert!(
            include_str!("../../xtask/src/dist.rs")
                .contains(&format!("const RELEASE_DROPPED_ID: &str = \"{dropped}\";")),
            "xtask/src/dist.rs's RELEASE_DROPPED_ID is not {dropped}"
        );
    }

    #[test]
    fn every_event_names_its_client_and_serializes_to_valid_fields() {
        let names = names();
        let repair = Repair {
            ip: Ipv4Addr::new(10, 1, 1, 10),
            mac: VM,
            server_id: Ipv4Addr::new(10, 1, 1, 1),
            client_id: None,
            basis: dhcp_engine::outstanding::Basis::RouterRelease,
            xid: 1,
            probe_xid: 2,
        };
        let remediation = RemediationEvent::new(&repair, RepairResult::Failed, None, &names);
        assert_eq!(remediation.host.as_deref(), Some("i-2-50-VM"));
        let divergence = DivergenceEvent::new(
            &Divergence {
                kind: DivergenceKind::ServerHoldsLeaseMissingFromFile,
                ip: Ipv4Addr::new(10, 1, 1, 10),
                mac: None,
            },
            &names,
        );
        assert_eq!(divergence.host.as_deref(), Some("i-2-50-VM"), "by address");
        let ended = ReconcileEvent::new(
            &Reconciled::OrphanEnded {
                ip: Ipv4Addr::new(10, 1, 1, 10),
                mac: Some(Mac(VM)),
                reason: "declared",
            },
            &names,
        );
        assert_eq!(ended.host.as_deref(), Some("i-2-50-VM"));
        let unblocked = ReconcileEvent::new(
            &Reconciled::Unblocked {
                ip: Ipv4Addr::new(10, 1, 1, 10),
                host_source: "/etc/dhcphosts.txt:1".into(),
            },
            &names,
        );
        assert_eq!(unblocked.host_line.as_deref(), Some("/etc/dhcphosts.txt:1"));
        assert_eq!(unblocked.host.as_deref(), Some("i-2-50-VM"));
        let rogue = RogueEvent::new(
            &RogueServer {
                interface: "eth2".into(),
                mac: Some(Mac(VM)),
                ip: Some(Ipv4Addr::new(10, 1, 1, 10).into()),
                server_id: None,
                message: "OFFER",
                first: true,
            },
            &names,
        );
        assert_eq!(
            rogue.host.as_deref(),
            Some("i-2-50-VM"),
            "a guest answering"
        );
        let server = ServerEvent {
            event: "server".into(),
            up: false,
            should_serve: true,
            reason: Some("not listening".into()),
        };
        for (value, text) in [
            (
                serde_json::to_value(&remediation).unwrap(),
                remediation.text(),
            ),
            (
                serde_json::to_value(&divergence).unwrap(),
                divergence.text(),
            ),
            (serde_json::to_value(&ended).unwrap(), ended.text()),
            (serde_json::to_value(&unblocked).unwrap(), unblocked.text()),
            (serde_json::to_value(&rogue).unwrap(), rogue.text()),
            (serde_json::to_value(&server).unwrap(), server.text()),
        ] {
            let entry = journal_entry(&value, &text).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert!(entry.get("MESSAGE_ID").is_some(), "{value}");
            if value.get("host").is_some_and(|h| !h.is_null()) {
                assert_eq!(field(&entry, "DHCP_HOST").as_deref(), Some("i-2-50-VM"));
                assert!(text.contains("(host i-2-50-VM)"), "{text}");
            }
        }
    }

    #[test]
    fn an_event_the_journal_does_not_take_goes_to_stdout_and_is_counted() {
        let journald = FakeJournald::bind("sink");
        let sink = EventSink::journal(Journal::new(&journald.path).unwrap());
        let event = ReleaseEvent::new(&dropped_release(Origin::Router), &names());
        let mut stdout = Vec::new();
        sink.emit_to(&mut stdout, true, &event, event.text())
            .unwrap();
        assert!(stdout.is_empty(), "not duplicated on stdout");
        let (entry, _) = journald.receive();
        assert_eq!(field(&entry, "DHCP_HOST").as_deref(), Some("i-2-50-VM"));
        assert_eq!(field(&entry, "MESSAGE").unwrap(), event.text());

        // journald restarting: its socket is gone for a moment.
        let path = journald.path.clone();
        drop(journald);
        sink.emit_to(&mut stdout, true, &event, event.text())
            .unwrap();
        sink.emit_to(&mut stdout, false, &event, event.text())
            .unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&stdout).unwrap().lines().collect();
        assert_eq!(lines.len(), 2);
        let json: ReleaseEvent = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(json, event);
        assert_eq!(lines[1], event.text());
        assert_eq!(sink.fallbacks(), 2);

        // Back: the next event is the journal's again.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let back = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        back.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        sink.emit_to(&mut stdout, true, &event, event.text())
            .unwrap();
        assert_eq!(stdout.iter().filter(|&&b| b == b'\n').count(), 2);
        let mut buffer = vec![0; 65536];
        let len = back.recv(&mut buffer).unwrap();
        let entry = decode(&buffer[..len]).unwrap();
        assert_eq!(field(&entry, "DHCP_OUTCOME").as_deref(), Some("dropped"));
        assert_eq!(sink.fallbacks(), 2);
        assert_eq!(sink.missed.load(Ordering::Relaxed), 0);
        drop(back);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn stdout_is_where_events_go_unless_asked_otherwise() {
        let sink = EventSink::choose(EventsTo::Stdout).unwrap();
        assert!(sink.journal.is_none());
        assert_eq!(sink.describe(true), "JSON lines on stdout");
        // The test's stdout is no journal stream systemd made.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(EventSink::choose(EventsTo::Auto).unwrap().journal.is_none());
        }
    }
}
