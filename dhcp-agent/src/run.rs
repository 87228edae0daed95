//! `dhcp-agent run`: the daemon. Capture -> decode -> server identity + correlation against the
//! lease table -> one structured event per settled RELEASE (dropped ones flagged with a cause).
use std::{io::Write as _, net::SocketAddrV4, path::PathBuf, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::CaptureArgs,
    correlate::{Cause, Correlator, Outcome, Release, Verdict, diagnose},
    decode::hex_colon,
    dnsmasq_conf::DnsmasqConfig,
    leases::{
        DEFAULT_LEASE_FILE, LeaseFormatName, LeaseTable,
        follow::{LeaseFollower, LoadError},
    },
    output::rfc3339,
    remediate::{self, RateLimit, RemediationEvent, Repair, RepairResult},
    server_identity::ServerIdentity,
    server_query,
    service::{InterfaceNames, decode_event, shutdown_signal, start_capture},
    state::{PendingRelease, StateFile},
    system,
};

#[derive(Debug, clap::Args, Clone)]
pub struct RunArgs {
    /// TOML file with any of these options (keys with `_`); the command line wins.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// The server's lease file.
    #[arg(long, default_value = DEFAULT_LEASE_FILE)]
    pub leases: PathBuf,
    /// Format of the lease file.
    #[arg(long, value_enum, default_value_t = LeaseFormatName::Dnsmasq)]
    pub lease_format: LeaseFormatName,
    /// dnsmasq's configuration: served subnets and listen addresses before any reply is seen.
    #[arg(long)]
    pub dnsmasq_conf: Option<PathBuf>,
    /// How long the server has to drop a released lease before the release counts as dropped
    /// (e.g. 500ms, 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Where the daemon keeps its state (pending and flagged releases) for `dhcp-agent leases`.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
    /// Repair dropped releases: send the RELEASE the server accepts, then verify.
    #[arg(long)]
    pub remediate: bool,
    /// With --remediate: report what would be repaired, send nothing.
    #[arg(long, requires = "remediate")]
    pub dry_run: bool,
    /// With --remediate: at most this many repairs per minute (bursts of up to 10).
    #[arg(long, default_value_t = 30)]
    pub remediation_rate: u32,
    /// Confirm in the server's memory (DHCPINFORM probe) that a lease the file dropped is really
    /// gone, and report divergences between the file and the server.
    #[arg(long)]
    pub probe_memory: bool,
    /// With --probe-memory: how often to compare every lease of the file with the server's
    /// memory (both directions).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub divergence_interval: Duration,
    /// Where the server answers DHCPINFORM queries (memory probe, repair verification).
    #[arg(long, default_value = "127.0.0.1:67")]
    pub server: std::net::SocketAddrV4,
}

type RepairDone = (Repair, RepairResult, Option<String>);

/// Reports a settled release and, when asked to, repairs a dropped one.
fn settle(
    args: &RunArgs,
    verdict: Verdict,
    limit: &mut RateLimit,
    repairs: &tokio::sync::mpsc::Sender<RepairDone>,
    state: &mut StateFile,
) -> anyhow::Result<()> {
    let event = ReleaseEvent::new(&verdict);
    emit(args.json, &event, event.text())?;
    if event.flagged {
        StateFile::remember(&mut state.flagged, serde_json::to_value(&event)?);
    }
    let Some(repair) = Repair::for_verdict(&verdict).filter(|_| args.remediate) else {
        return Ok(());
    };
    let result = if !limit.allow(std::time::Instant::now()) {
        Some(RepairResult::RateLimited)
    } else if args.dry_run {
        Some(RepairResult::DryRun)
    } else {
        None
    };
    if let Some(result) = result {
        let event = RemediationEvent::new(&repair, result, None);
        StateFile::remember(&mut state.remediations, serde_json::to_value(&event)?);
        return emit(args.json, &event, event.text());
    }
    // Sending and verifying blocks on the server's answers: off the event loop.
    let (done, server) = (repairs.clone(), args.server);
    tokio::task::spawn_blocking(move || {
        let (result, detail) = remediate::execute(&repair, server, Duration::from_secs(2));
        let _ = done.blocking_send((repair, result, detail));
    });
    Ok(())
}

/// The lease file and the server's memory disagree about a lease.
#[derive(Debug, Serialize)]
pub struct DivergenceEvent {
    pub event: &'static str,
    /// `server_holds_lease_missing_from_file` or `file_lists_lease_server_does_not_hold`.
    pub kind: &'static str,
    pub ip: String,
    pub mac: Option<String>,
}

const SERVER_HOLDS: &str = "server_holds_lease_missing_from_file";
const FILE_LISTS: &str = "file_lists_lease_server_does_not_hold";

impl DivergenceEvent {
    fn new(kind: &'static str, ip: std::net::Ipv4Addr, mac: Option<&[u8]>) -> DivergenceEvent {
        DivergenceEvent {
            event: "divergence",
            kind,
            ip: ip.to_string(),
            mac: mac.map(hex_colon),
        }
    }

    fn text(&self) -> String {
        let what = if self.kind == SERVER_HOLDS {
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

/// Probes the server about every lease the file lists and every address that left the file
/// lately; returns the divergences found.
fn scan_divergences(
    server: SocketAddrV4,
    in_file: Vec<(std::net::Ipv4Addr, Vec<u8>)>,
    removed: Vec<std::net::Ipv4Addr>,
) -> Vec<DivergenceEvent> {
    let held = |ip| server_query::probe(server, ip, Duration::from_millis(300)).map(|s| s.leased());
    let mut found = Vec::new();
    for (ip, mac) in in_file {
        if let Ok(false) = held(ip) {
            found.push(DivergenceEvent::new(FILE_LISTS, ip, Some(&mac)));
        }
    }
    for ip in removed {
        if let Ok(true) = held(ip) {
            found.push(DivergenceEvent::new(SERVER_HOLDS, ip, None));
        }
    }
    found
}

/// Writes one event line to stdout, JSON or text.
fn emit(json: bool, event: &impl Serialize, text: String) -> anyhow::Result<()> {
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

pub const DEFAULT_STATE_FILE: &str = "/run/dhcp-agent/state.json";

/// `500ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

/// The structured event of one settled RELEASE.
#[derive(Debug, Serialize)]
pub struct ReleaseEvent {
    pub event: &'static str,
    pub outcome: &'static str,
    pub flagged: bool,
    pub cause: Option<&'static str>,
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
            event: "release",
            outcome: v.outcome.name(),
            flagged: cause.is_some(),
            cause: cause.map(Cause::name),
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
        if let Some(cause) = self.cause {
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

fn now_ns() -> i128 {
    jiff::Timestamp::now().as_nanosecond()
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut identity = match &args.dnsmasq_conf {
        Some(path) => ServerIdentity::from_config(&DnsmasqConfig::load(path)?, &[]),
        None => ServerIdentity::default(),
    };
    let mut follower = LeaseFollower::new(&args.leases, args.lease_format.format())
        .with_context(|| format!("watching {}", args.leases.display()))?;
    let grace_ns = i128::try_from(args.grace.as_nanos()).unwrap_or(i128::MAX / 4);
    let mut correlator = Correlator::new(grace_ns);
    let mut table = match follower.load().await {
        Ok(table) => table,
        Err(LoadError::Missing(path)) => {
            eprintln!(
                "lease file {} does not exist yet; waiting for it",
                path.display()
            );
            LeaseTable::default()
        }
        Err(err) => return Err(err.into()),
    };
    correlator.on_table(&table, now_ns(), &identity);
    let mut capture = start_capture(&args.capture)?;
    let mut reader = capture.event_reader()?;
    let clock = system::BootClock::new();
    let mut names = InterfaceNames::default();
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut limit = RateLimit::new(args.remediation_rate, args.remediation_rate.clamp(1, 10));
    let (repairs_tx, mut repairs_done) = tokio::sync::mpsc::channel(64);
    let (checks_tx, mut checks_done) =
        tokio::sync::mpsc::channel::<(Verdict, Result<bool, server_query::QueryError>)>(64);
    let mut state = StateFile::default();
    let mut divergence_scan = tokio::time::interval(args.divergence_interval);
    let (scans_tx, mut scans_done) = tokio::sync::mpsc::channel(1);
    let mut scanning = false;
    let mut reported_divergences = std::collections::HashSet::new();
    eprintln!(
        "watching; {} leases from {} ({}), grace {:?}",
        table.v4.len(),
        follower.path().display(),
        follower.format_name(),
        args.grace
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let mut dirty = false;
        let verdicts = tokio::select! {
            result = &mut shutdown => { result?; break; }
            result = reader.read_batch(&mut batch) => {
                result.context("reading the event ring buffer")?;
                let mut verdicts = Vec::new();
                for event in batch.drain(..) {
                    let packet = decode_event(&event, clock, &mut names);
                    if let Some(known) = identity.observe(&packet) {
                        eprintln!("server id {} for {} learned on {}", known.server_id, known.subnet, known.interface.as_deref().unwrap_or("?"));
                    }
                    if let Some(release) = Release::from_packet(&packet) {
                        verdicts.extend(correlator.on_release(release, &table, &identity));
                        dirty = true;
                    }
                }
                verdicts
            }
            result = follower.changed() => {
                result.context("following the lease file")?;
                match follower.load().await {
                    Ok(new) => table = new,
                    // Keep the last good table: a missing or broken file must not look like
                    // every lease was released.
                    Err(err) => eprintln!("lease file not reloaded: {err}"),
                }
                correlator.on_table(&table, now_ns(), &identity)
            }
            _ = tick.tick() => correlator.on_tick(&table, now_ns(), &identity),
            _ = divergence_scan.tick(), if args.probe_memory && !scanning => {
                scanning = true;
                let in_file = table.v4.values().filter_map(|l| match l.ip {
                    std::net::IpAddr::V4(ip) => Some((ip, l.hwaddr.clone())),
                    std::net::IpAddr::V6(_) => None,
                }).collect();
                let removed = correlator.recently_removed().collect();
                let (done, server) = (scans_tx.clone(), args.server);
                tokio::task::spawn_blocking(move || {
                    let _ = done.blocking_send(scan_divergences(server, in_file, removed));
                });
                Vec::new()
            }
            Some(found) = scans_done.recv() => {
                scanning = false;
                let now_divergent: std::collections::HashSet<String> = found.iter().map(|d| format!("{} {}", d.kind, d.ip)).collect();
                for event in found {
                    // Report each divergence once, again only after it was resolved.
                    if !reported_divergences.contains(&format!("{} {}", event.kind, event.ip)) {
                        emit(args.json, &event, event.text())?;
                    }
                }
                reported_divergences = now_divergent;
                Vec::new()
            }
            Some((mut verdict, held)) = checks_done.recv() => {
                match held {
                    Ok(true) => {
                        let r = &verdict.release;
                        let event = DivergenceEvent::new(SERVER_HOLDS, r.ciaddr, Some(&r.chaddr));
                        emit(args.json, &event, event.text())?;
                        let cause = diagnose(&verdict.release, verdict.lease.as_ref(), &identity);
                        verdict.outcome = Outcome::Dropped(cause);
                    }
                    Ok(false) => {}
                    Err(err) => eprintln!("memory probe for {} failed: {err}", verdict.release.ciaddr),
                }
                // Settled here: it has been checked already.
                settle(&args, verdict, &mut limit, &repairs_tx, &mut state)?;
                dirty = true;
                Vec::new()
            }
            Some((repair, result, detail)) = repairs_done.recv() => {
                let event = RemediationEvent::new(&repair, result, detail);
                emit(args.json, &event, event.text())?;
                StateFile::remember(&mut state.remediations, serde_json::to_value(&event)?);
                dirty = true;
                Vec::new()
            }
        };
        dirty |= !verdicts.is_empty();
        for verdict in verdicts {
            if matches!(verdict.outcome, Outcome::Honored | Outcome::NoLease) && args.probe_memory {
                // The file says the lease is gone (or never was); confirm in the server's
                // memory first: a hand-edited file drops the line while the server still
                // holds the lease.
                let (done, server) = (checks_tx.clone(), args.server);
                tokio::task::spawn_blocking(move || {
                    let held = server_query::probe(
                        server,
                        verdict.release.ciaddr,
                        server_query::PROBE_TIMEOUT,
                    )
                    .map(|state| state.leased());
                    let _ = done.blocking_send((verdict, held));
                });
                continue;
            }
            settle(&args, verdict, &mut limit, &repairs_tx, &mut state)?;
        }
        if dirty {
            state.updated = rfc3339(now_ns());
            state.pending = correlator
                .pending_releases()
                .map(|(r, deadline)| PendingRelease {
                    ip: r.ciaddr.to_string(),
                    mac: hex_colon(&r.chaddr),
                    interface: r.interface.clone(),
                    received_server_id: r.server_id.map(|a| a.to_string()),
                    seen: rfc3339(r.seen_ns),
                    deadline: rfc3339(deadline),
                })
                .collect();
            if let Err(err) = state.write(&args.state_file) {
                eprintln!("state file not written: {err:#}");
            }
        }
    }
    eprintln!("stopped; {} releases still pending", correlator.pending());
    drop(capture);
    Ok(())
}
