//! `dhcp-agent run`: the daemon. Capture -> decode -> server identity + correlation against the
//! lease table -> one structured event per settled RELEASE (dropped ones flagged with a cause).
use std::{
    collections::HashMap,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    capture::LinkEvents,
    cli::CaptureArgs,
    correlate::{Cause, Correlator, Outcome, Release, Verdict, diagnose},
    decode::hex_colon,
    leases::{
        DEFAULT_LEASE_FILE, Lease, LeaseFormatName, LeaseTable,
        emptied::{self, EMPTY_FILE_HOLD, EmptyFileGuard, expired},
        follow::{LeaseFollower, LoadError},
    },
    metrics::{self, Metrics, http::Readiness},
    output::rfc3339,
    pipeline::Pipeline,
    remediate::{self, Outstanding, RateLimit, RemediationEvent, Repair, RepairResult, RepairStep},
    server_identity::ServerIdentity,
    server_query,
    service::{InterfaceNames, shutdown_signal, start_capture},
    state::{PendingRelease, StateFile},
    system,
    transactions::Transactions,
};

#[derive(Debug, clap::Args, Clone)]
pub struct RunArgs {
    /// TOML file with any of these options (keys with `_`); the command line wins.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub pcap: crate::cli::PcapArgs,
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
    /// Where to serve Prometheus metrics (`/metrics`) and readiness (`/healthz`).
    #[arg(long, default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: std::net::SocketAddr,
    /// A DISCOVER with no OFFER after this long counts as unanswered.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub discover_timeout: Duration,
}

/// 9967: next to the DHCP exporters' ports in Prometheus' port allocation list; loopback only
/// unless told otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9967";

type RepairDone = (Repair, RepairResult, Option<String>);

/// Where the daemon's findings go: event lines, the state file, the metrics; and the repairs it
/// owes.
struct Daemon {
    args: RunArgs,
    metrics: Arc<Metrics>,
    state: StateFile,
    outstanding: Outstanding,
    limit: RateLimit,
    repairs: tokio::sync::mpsc::Sender<RepairDone>,
    /// Events of settled releases not printed yet.
    unreported: Vec<ReleaseEvent>,
    /// Releases the last run left pending, until there is a lease table to judge them against
    /// (kept in the state file meanwhile).
    unresumed: Vec<PendingRelease>,
}

impl Daemon {
    /// Records a settled release; a dropped one becomes outstanding. Its event is printed by
    /// [`Daemon::report_settled`], and its repair started by [`Daemon::repair_outstanding`].
    fn settle(&mut self, verdict: Verdict) -> anyhow::Result<()> {
        self.metrics.release_settled(&verdict);
        self.outstanding.on_verdict(&verdict);
        let event = ReleaseEvent::new(&verdict);
        if event.flagged {
            StateFile::remember(&mut self.state.flagged, serde_json::to_value(&event)?);
        }
        self.unreported.push(event);
        Ok(())
    }

    /// Prints the events of the releases settled since the last call, after writing the state
    /// file when one of them is flagged: a flag anyone has seen survives the agent being killed
    /// right after (SIGKILL, OOM, power loss). Returns whether the state file was written.
    fn report_settled(&mut self, correlator: &Correlator) -> anyhow::Result<bool> {
        let save = self.unreported.iter().any(|e| e.flagged);
        if save {
            self.save_state(correlator);
        }
        for event in std::mem::take(&mut self.unreported) {
            emit(self.args.json, &event, event.text())?;
        }
        Ok(save)
    }

    /// Starts the repair of every outstanding release not tried yet whose lease `table` still
    /// shows as at the RELEASE, as far as the rate limit allows; the rest wait for the next call.
    fn repair_outstanding(
        &mut self,
        table: &LeaseTable,
        identity: &ServerIdentity,
    ) -> anyhow::Result<()> {
        if !self.args.remediate {
            return Ok(());
        }
        let due = self.outstanding.due(
            table,
            |ip| identity.expected_for(ip).map(|k| k.server_id),
            &mut self.limit,
            std::time::Instant::now(),
            self.args.dry_run,
        );
        for (repair, step) in due {
            match step {
                RepairStep::Send => {
                    // Sending and verifying blocks on the server's answers: off the event loop.
                    let (done, server) = (self.repairs.clone(), self.args.server);
                    tokio::task::spawn_blocking(move || {
                        let (result, detail) =
                            remediate::execute(&repair, server, Duration::from_secs(2));
                        let _ = done.blocking_send((repair, result, detail));
                    });
                }
                RepairStep::DryRun => self.repair_done(&repair, RepairResult::DryRun, None)?,
                RepairStep::RateLimited => {
                    self.repair_done(&repair, RepairResult::RateLimited, None)?;
                }
            }
        }
        Ok(())
    }

    fn repair_done(
        &mut self,
        repair: &Repair,
        result: RepairResult,
        detail: Option<String>,
    ) -> anyhow::Result<()> {
        self.metrics.remediation(result);
        if result == RepairResult::Remediated {
            self.outstanding.remove(repair.ip);
        }
        let event = RemediationEvent::new(repair, result, detail);
        StateFile::remember(&mut self.state.remediations, serde_json::to_value(&event)?);
        emit(self.args.json, &event, event.text())
    }

    /// Rewrites the state file from the correlator's pending releases and what is outstanding.
    fn save_state(&mut self, correlator: &Correlator) {
        self.state.updated = rfc3339(now_ns());
        self.state.pending = correlator
            .pending_records()
            .map(PendingRelease::new)
            .chain(self.unresumed.iter().cloned())
            .collect();
        self.state.outstanding = self.outstanding.iter().cloned().collect();
        if let Err(err) = self.state.write(&self.args.state_file) {
            eprintln!("state file not written: {err:#}");
        }
    }
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

pub const SERVER_HOLDS: &str = "server_holds_lease_missing_from_file";
pub const FILE_LISTS: &str = "file_lists_lease_server_does_not_hold";

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

/// Where the packaged unit's StateDirectory= puts it, so `dhcp-agent leases` finds it too.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/dhcp-agent/state.json";

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

/// The previous run's state: its history is kept and its outstanding releases resumed. A file
/// that does not parse is kept aside (never overwritten) and the daemon starts afresh.
fn resume_state(path: &std::path::Path) -> StateFile {
    // Its outstanding releases drive repairs: a file that others can change must not.
    if path.exists()
        && let Err(err) = crate::config::check_trusted(path)
    {
        eprintln!("state file not resumed: {err}");
        return StateFile::default();
    }
    match StateFile::read(path) {
        Ok(state) => state,
        Err(err) => {
            let aside = PathBuf::from(format!("{}.bad", path.display()));
            let moved = std::fs::rename(path, &aside);
            eprintln!(
                "state file not resumed ({err:#}); {}",
                match moved {
                    Ok(()) => format!("kept as {}", aside.display()),
                    Err(e) => format!("could not keep it aside: {e}"),
                }
            );
            StateFile::default()
        }
    }
}

/// Hands the releases the last run left pending to the correlator, each with its own seen time,
/// deadline and the lease the table showed then: one whose deadline passed while the agent was
/// down is settled on the first tick against the current table.
fn resume_pending(correlator: &mut Correlator, saved: Vec<PendingRelease>, path: &std::path::Path) {
    if saved.is_empty() {
        return;
    }
    let mut resumed = 0;
    for entry in saved {
        match entry.to_pending() {
            Ok(pending) => resumed += usize::from(correlator.resume(pending)),
            Err(err) => eprintln!(
                "pending release of {} {} not resumed: {err:#}",
                entry.ip, entry.mac
            ),
        }
    }
    eprintln!(
        "resuming {resumed} pending releases from {}",
        path.display()
    );
}

/// The name of a lease-file read's result, for the metrics.
fn reload_result(result: &Result<LeaseTable, LoadError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(LoadError::Missing(_)) => "missing",
        Err(LoadError::Read { .. }) => "unreadable",
        Err(LoadError::Parse { .. }) => "invalid",
    }
}

/// Which leases may leave the table now: expired ones, and those a pending RELEASE of their own
/// client is about (see [`crate::leases::emptied`]).
fn accounted_for(correlator: &Correlator) -> impl Fn(&Lease) -> bool + '_ {
    let now_secs = u64::try_from(now_ns() / 1_000_000_000).unwrap_or(0);
    let mut released: HashMap<Ipv4Addr, Vec<&Release>> = HashMap::new();
    for (release, _) in correlator.pending_releases() {
        released.entry(release.ciaddr).or_default().push(release);
    }
    move |lease| {
        expired(lease, now_secs)
            || matches!(lease.ip, IpAddr::V4(ip) if released
                .get(&ip)
                .is_some_and(|rs| rs.iter().any(|r| r.matches(lease))))
    }
}

/// Takes a read of the lease file into `table`, unless it must not be believed: a missing,
/// unreadable or broken file, or an empty one that nothing explains, keeps the last good table
/// (it must not look like every lease was released). Returns the replaced table.
fn take_reload(
    loaded: Result<LeaseTable, LoadError>,
    table: &mut LeaseTable,
    guard: &mut EmptyFileGuard,
    correlator: &Correlator,
    metrics: &Metrics,
    path: &std::path::Path,
) -> Option<LeaseTable> {
    let result = reload_result(&loaded);
    let new = match loaded {
        Ok(new) => new,
        Err(err) => {
            metrics.lease_file_reload(result, now_seconds());
            guard.forget();
            eprintln!("lease file not reloaded: {err}");
            return None;
        }
    };
    let held_since = guard.held_since();
    let verdict = guard.check(table, &new, Instant::now(), accounted_for(correlator));
    let held = matches!(verdict, emptied::Verdict::Hold { .. });
    metrics.lease_file_reload(if held { "empty" } else { result }, now_seconds());
    take_judged(verdict, held_since, table, new, path)
}

/// While an empty lease file is held back: takes it once what it drops is accounted for or the
/// hold is over. Returns the replaced table.
fn recheck_held_empty(
    table: &mut LeaseTable,
    guard: &mut EmptyFileGuard,
    correlator: &Correlator,
    path: &std::path::Path,
) -> Option<LeaseTable> {
    let held_since = guard.held_since();
    held_since?; // the common case, before the pending releases are looked at
    let verdict = guard.recheck(table, Instant::now(), accounted_for(correlator))?;
    take_judged(verdict, held_since, table, LeaseTable::default(), path)
}

/// Acts on the guard's verdict on `new`, and says on stderr when an empty file is held back
/// and when that ends. Returns the replaced table.
fn take_judged(
    verdict: emptied::Verdict,
    held_since: Option<Instant>,
    table: &mut LeaseTable,
    new: LeaseTable,
    path: &std::path::Path,
) -> Option<LeaseTable> {
    let path = path.display();
    match (verdict, held_since) {
        (emptied::Verdict::Hold { unexplained }, None) => {
            eprintln!(
                "lease file {path} lists no lease, but {unexplained} of the {} leases it listed \
                 were neither released nor expired: keeping them until the server writes the \
                 file again (a rewrite in progress, or the file was truncated behind its back)",
                table.v4.len()
            );
            return None;
        }
        (emptied::Verdict::Hold { .. }, Some(_)) => return None,
        (emptied::Verdict::HeldTooLong { unexplained }, _) => eprintln!(
            "lease file {path} has listed no lease for {}s: believing it ({unexplained} leases \
             gone without a RELEASE)",
            EMPTY_FILE_HOLD.as_secs()
        ),
        (emptied::Verdict::Believe, Some(since)) if new.v4.is_empty() => eprintln!(
            "lease file {path}: believing it empty after {:.1}s, every lease it dropped being \
             released or expired by now",
            since.elapsed().as_secs_f64()
        ),
        (emptied::Verdict::Believe, Some(since)) => eprintln!(
            "lease file {path} lists leases again ({}) after {:.1}s empty",
            new.v4.len(),
            since.elapsed().as_secs_f64()
        ),
        (emptied::Verdict::Believe, None) => {}
    }
    Some(std::mem::replace(table, new))
}

fn now_seconds() -> f64 {
    now_ns() as f64 / 1e9
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        &system::kernel_release(),
    ));
    let readiness = Arc::new(Readiness::default());
    let listener = metrics::http::bind(args.metrics_addr).await?;
    let server = tokio::spawn(metrics::http::serve(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&readiness),
    ));
    let mut identity = ServerIdentity::from_config_file(args.dnsmasq_conf.as_deref())?;
    let mut follower = LeaseFollower::new(&args.leases, args.lease_format.format())
        .with_context(|| format!("watching {}", args.leases.display()))?;
    let grace_ns = i128::try_from(args.grace.as_nanos()).unwrap_or(i128::MAX / 4);
    let mut correlator = Correlator::new(grace_ns);
    let first = follower.load().await;
    metrics.lease_file_reload(reload_result(&first), now_seconds());
    let mut table_loaded = first.is_ok();
    let mut table = match first {
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
    correlator.on_table(&LeaseTable::default(), &table, now_ns(), &identity);
    let mut empty_file = EmptyFileGuard::new(EMPTY_FILE_HOLD);
    let mut pcap = args.pcap.open()?;
    let mut link_events = LinkEvents::open().context("subscribing to interface changes")?;
    let mut capture = start_capture(&args.capture)?;
    for (interface, attached) in capture.interfaces() {
        metrics.set_interface_attached(interface, attached);
    }
    let mut reader = capture.event_reader()?;
    let clock = system::BootClock::new();
    let mut names = InterfaceNames::default();
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut stats = tokio::time::interval(Duration::from_secs(1));
    let mut transactions = Transactions::new(args.discover_timeout);
    let (repairs_tx, mut repairs_done) = tokio::sync::mpsc::channel(64);
    let (checks_tx, mut checks_done) =
        tokio::sync::mpsc::channel::<(Verdict, Result<bool, server_query::QueryError>)>(64);
    let mut state = resume_state(&args.state_file);
    let outstanding = Outstanding::from_saved(std::mem::take(&mut state.outstanding));
    if !outstanding.is_empty() {
        eprintln!(
            "resuming {} dropped releases from {}",
            outstanding.len(),
            args.state_file.display()
        );
    }
    // Releases seen within their grace before the last run stopped: judged against a lease
    // table only (a missing file is no proof that their leases are gone).
    let mut unresumed = std::mem::take(&mut state.pending);
    if table_loaded {
        resume_pending(
            &mut correlator,
            std::mem::take(&mut unresumed),
            &args.state_file,
        );
    } else if !unresumed.is_empty() {
        eprintln!(
            "{} pending releases from {} wait for the lease file",
            unresumed.len(),
            args.state_file.display()
        );
    }
    let mut daemon = Daemon {
        limit: RateLimit::new(args.remediation_rate, args.remediation_rate.clamp(1, 10)),
        args,
        metrics: Arc::clone(&metrics),
        state,
        outstanding,
        repairs: repairs_tx,
        unreported: Vec::new(),
        unresumed,
    };
    let args = daemon.args.clone();
    let mut divergence_scan = tokio::time::interval(args.divergence_interval);
    let (scans_tx, mut scans_done) = tokio::sync::mpsc::channel(1);
    let mut scanning = false;
    let mut reported_divergences = std::collections::HashSet::new();
    if table_loaded {
        readiness.set_ready();
    }
    eprintln!(
        "watching; {} leases from {} ({}), grace {:?}, metrics on http://{}/metrics",
        table.v4.len(),
        follower.path().display(),
        follower.format_name(),
        args.grace,
        args.metrics_addr
    );
    tokio::pin!(shutdown);
    // New pending releases and unflagged verdicts are written to the state file on the next
    // once-a-second tick, not after every batch: rewriting the file per batch took 64% of the
    // agent's CPU in a DHCP storm (`cargo xtask bench`, storm). Flagged releases and repairs
    // are written at once.
    let mut pending_unsaved = false;
    loop {
        let mut dirty = false;
        // When the next pending release's grace ends.
        let settle_at = correlator.next_deadline_ns().map(|deadline| {
            let wait = u64::try_from(deadline - now_ns()).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_nanos(wait)
        });
        let verdicts = tokio::select! {
            () = &mut shutdown => break,
            result = reader.read_batch(&mut batch) => {
                result.context("reading the event ring buffer")?;
                let done = Pipeline {
                    clock,
                    names: &mut names,
                    pcap: pcap.as_mut(),
                    metrics: &metrics,
                    transactions: &mut transactions,
                    identity: &mut identity,
                    correlator: &mut correlator,
                    table: &table,
                }
                .on_batch(&batch)?;
                batch.clear();
                pending_unsaved |= done.releases > 0;
                done.verdicts
            }
            result = follower.changed() => {
                result.context("following the lease file")?;
                let loaded = follower.load().await;
                let previous = take_reload(
                    loaded,
                    &mut table,
                    &mut empty_file,
                    &correlator,
                    &metrics,
                    follower.path(),
                );
                if previous.is_some() && !table_loaded {
                    table_loaded = true;
                    readiness.set_ready();
                    let saved = std::mem::take(&mut daemon.unresumed);
                    resume_pending(&mut correlator, saved, &args.state_file);
                }
                daemon.outstanding.refresh(&table);
                match previous {
                    Some(previous) => correlator.on_table(&previous, &table, now_ns(), &identity),
                    None => correlator.on_tick(&table, now_ns(), &identity),
                }
            }
            result = link_events.changed() => {
                result.context("following interface changes")?;
                for change in capture.reconcile() {
                    eprintln!("{change}");
                    metrics.interface_change(&change);
                }
                Vec::new()
            }
            _ = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)), if settle_at.is_some() => {
                correlator.on_tick(&table, now_ns(), &identity)
            }
            _ = tick.tick() => {
                for unanswered in transactions.on_tick(now_ns()) {
                    metrics.transaction(&unanswered);
                }
                let mut verdicts = Vec::new();
                if let Some(previous) =
                    recheck_held_empty(&mut table, &mut empty_file, &correlator, follower.path())
                {
                    daemon.outstanding.refresh(&table);
                    verdicts = correlator.on_table(&previous, &table, now_ns(), &identity);
                }
                verdicts.extend(correlator.on_tick(&table, now_ns(), &identity));
                verdicts
            }
            _ = stats.tick() => {
                match capture.counters() {
                    Ok(counters) => metrics.kernel_counters(&counters),
                    Err(err) => eprintln!("kernel counters not read: {err}"),
                }
                let before = daemon.outstanding.len();
                daemon.outstanding.refresh(&table);
                dirty |= daemon.outstanding.len() != before || pending_unsaved;
                // Releases the rate limit held back, or resumed from the last run.
                daemon.repair_outstanding(&table, &identity)?;
                metrics.set_releases_pending(correlator.pending());
                metrics.set_releases_unresolved(daemon.outstanding.len());
                metrics.set_leases(&table, &identity.pools());
                metrics.set_server_ids(identity.known());
                Vec::new()
            }
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
                for kind in metrics::DIVERGENCE_KINDS {
                    metrics.set_divergences(kind, found.iter().filter(|d| d.kind == *kind).count());
                }
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
                        verdict.in_memory_only = true;
                    }
                    Ok(false) => {}
                    Err(err) => eprintln!("memory probe for {} failed: {err}", verdict.release.ciaddr),
                }
                // Settled here: it has been checked already.
                daemon.settle(verdict)?;
                dirty = true;
                Vec::new()
            }
            Some((repair, result, detail)) = repairs_done.recv() => {
                daemon.repair_done(&repair, result, detail)?;
                dirty = true;
                Vec::new()
            }
        };
        // A flagged release is written at once, before it is printed (a restart must not lose
        // it); the others with the next tick.
        pending_unsaved |= !verdicts.is_empty();
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
            daemon.settle(verdict)?;
        }
        if !daemon.unreported.is_empty() {
            if daemon.report_settled(&correlator)? {
                dirty = false;
                pending_unsaved = false;
            }
            // Dropped releases just settled are repaired when asked.
            daemon.repair_outstanding(&table, &identity)?;
        }
        if dirty {
            daemon.save_state(&correlator);
            pending_unsaved = false;
        }
    }
    if pending_unsaved {
        daemon.save_state(&correlator);
    }
    eprintln!("stopped; {} releases still pending", correlator.pending());
    server.abort();
    drop(capture);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::remediate::OutstandingRelease;

    #[test]
    fn a_state_file_others_can_change_is_not_resumed() {
        let dir = std::env::temp_dir().join(format!("dhcp-agent-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.join("state.json");
        let state = StateFile {
            outstanding: vec![OutstandingRelease {
                ip: "172.29.101.150".parse().unwrap(),
                mac: "52:54:00:10:00:01".into(),
                client_id: None,
                expiry: None,
                server_id: None,
                seen: "2026-11-25T00:00:00Z".into(),
                attempted: false,
                deferred: false,
            }],
            ..StateFile::default()
        };
        state.write(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resume_state(&path).outstanding.len(), 1);
        // World-writable: anyone could make the agent release an address.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(resume_state(&path).outstanding.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
