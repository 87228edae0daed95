//! `dhcp-agent run`: the daemon. Capture -> decode -> the [`Observer`] (server identity,
//! exchanges, correlation of every RELEASE with the lease table and the server's memory) ->
//! its findings fanned out: one event per settled RELEASE (dropped ones flagged with a cause),
//! repairs sent and verified, the state file, the metrics.
//!
//! The loop below only waits for inputs (ring buffer, lease file, interface changes, timers,
//! answers from the server) and hands each to the observer; what an input means is the
//! observer's business ([`dhcp_engine::observer`]).
use std::{
    net::SocketAddrV4,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    correlate::{Outcome, ServerChecks, Verdict},
    correlate6::Outcome6,
    dnsmasq_conf::DnsmasqConfig,
    kea_conf::{Family, KeaConfig},
    leases::LeaseFormatName,
    liveness::ServerCheck,
    observer::{Divergence, DivergenceKind, Now, RepairPolicy},
    outstanding::{Repair, RepairResult, RepairStep},
    outstanding6::Repair6,
    provenance::TrustedServer,
    reconcile::{ReconcileConfig, Reconciler},
    server_identity::ServerIdentity,
    time::rfc3339,
};
use dhcp_wire::{Mac, hex_colon};

use crate::{
    args::{CaptureArgs, parse_duration, parse_lease_format},
    capture::{InterfaceChange, LinkEvents, select::DefaultSet},
    events::{
        DivergenceEvent, EventSink, EventsTo, InterfaceEvent, ReconcileEvent, ReleaseEvent,
        RemediationEvent, RogueEvent, ServerEvent, emit,
    },
    intent::{self, ConfSource, FilesFollower},
    kea::ServerKind,
    leases::{DEFAULT_LEASE_FILE, LeaseFollower, LoadError},
    metrics::{Metrics, http::Readiness},
    pipeline::{Pipeline, account},
    remediate, remediate6, server_query,
    service::{InterfaceNames, Interfaces, shutdown_signal, start_capture},
    state::{DEFAULT_STATE_FILE, PendingRelease, StateFile},
    system,
};

#[derive(Debug, clap::Args, Clone)]
pub struct RunArgs {
    /// TOML file with any of these options (keys with `_`); the command line wins.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub pcap: crate::args::PcapArgs,
    /// The server's lease file.
    #[arg(long, default_value = DEFAULT_LEASE_FILE)]
    pub leases: PathBuf,
    /// Format of the lease file.
    #[arg(long, default_value_t = LeaseFormatName::Dnsmasq, value_parser = parse_lease_format)]
    pub lease_format: LeaseFormatName,
    /// dnsmasq's configuration: served subnets and listen addresses before any reply is seen,
    /// and the declared hosts (dhcp-host, dhcp-hostsfile, dhcp-hostsdir) leases are reconciled
    /// with.
    #[arg(long)]
    pub dnsmasq_conf: Option<PathBuf>,
    /// The running dnsmasq's pid file: its configuration is read from its command line (as
    /// OpenStack Neutron starts it), again whenever the pid file changes.
    #[arg(long, conflicts_with = "dnsmasq_conf")]
    pub dnsmasq_pid_file: Option<PathBuf>,
    /// How long the server has to drop a released lease before the release counts as dropped
    /// (e.g. 500ms, 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Event lines as JSON (on stdout; also where events go when the journal does not take
    /// them).
    #[arg(long)]
    pub json: bool,
    /// Where events go: `journal` (systemd's native protocol: one DHCP_* field per event
    /// field, MESSAGE_ID and PRIORITY by kind), `stdout` (lines, JSON with --json), or `auto`:
    /// the journal when systemd connected stdout to it ($JOURNAL_STREAM), as the packaged unit
    /// does, else stdout.
    #[arg(long, value_enum, default_value_t = EventsTo::Auto)]
    pub events: EventsTo,
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
    /// How long a client must have been undeclared (its host line gone, counted from the host
    /// files' last change at the latest) before any lease of it is released, an orphan's or a
    /// dropped release's (with --remediate): orchestrators drop the line before they release,
    /// and rewrite host files in place, so a file read mid-rewrite declares no one for a moment.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub orphan_settle: Duration,
    /// With --remediate: also repair RELEASEs a guest sent from its own address (by default
    /// only the router's own, `dhcp_release` over `lo`, are; forged ones never).
    #[arg(long, requires = "remediate")]
    pub repair_guest_releases: bool,
    /// With --remediate: report orphan leases, never release them.
    #[arg(long, requires = "remediate")]
    pub no_orphan_repair: bool,
    /// A DHCP server besides this router's that may answer on its networks (another DHCP
    /// agent of a Neutron network), by MAC or address: its replies are not reported as a
    /// rogue server's. Repeat for several.
    #[arg(long = "trusted-server", value_name = "MAC_OR_IP")]
    pub trusted_servers: Vec<TrustedServer>,
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
    /// A DISCOVER with no OFFER after this long counts as unanswered. dnsmasq pings each
    /// address before offering it, deaf meanwhile, about 3 s each, up to 6 times in 30 s: a
    /// burst of new clients gets its OFFERs up to about 24 s late.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub discover_timeout: Duration,
    /// Which DHCP server this router runs. By default: Kea with --kea-conf, dnsmasq with a
    /// dnsmasq configuration, else what the lease file's text says (Kea's CSV header), else
    /// dnsmasq.
    #[arg(long, value_enum)]
    pub server_kind: Option<ServerKind>,
    /// Kea's DHCPv4 configuration (kea-dhcp4.conf): its control socket (lease_cmds: the memory
    /// probe and repairs through `lease4-get`/`lease4-del`), its interfaces, and its subnets,
    /// pools and host reservations (the declared hosts of reconciliation). Followed.
    #[arg(long, conflicts_with_all = ["dnsmasq_conf", "dnsmasq_pid_file"])]
    pub kea_conf: Option<PathBuf>,
    /// Kea's control socket, when --kea-conf does not say (or to override it).
    #[arg(long)]
    pub kea_control_socket: Option<PathBuf>,
}

/// How the agent reaches the server's memory, and whose checks explain a dropped release.
#[derive(Debug, Clone)]
pub struct ServerSide {
    pub kind: ServerKind,
    pub access: server_query::ServerAccess,
    pub checks: ServerChecks,
    /// Kea's configuration (`--kea-conf`): its reservations declare hosts for reconciliation.
    pub kea_config: Option<KeaConfig>,
    /// Which protocol the server speaks: a Kea server is kea-dhcp4 or kea-dhcp6; dnsmasq is
    /// `V4` here (it serves both, on port 67 and 547, and is checked on 67).
    pub family: Family,
}

impl ServerSide {
    /// The UDP port whose socket shows the server runs: 547 for kea-dhcp6, else 67.
    pub fn server_port(&self) -> u16 {
        match self.family {
            Family::V4 => server_query::SERVER_PORT,
            Family::V6 => 547,
        }
    }

    /// The server kind (given or detected), and for Kea its settings: the control socket must
    /// answer with lease_cmds loaded, else the agent observes only (and says so).
    pub fn from_args(args: &RunArgs) -> anyhow::Result<ServerSide> {
        let lease_text = std::fs::read_to_string(&args.leases).ok();
        let kind = args.server_kind.unwrap_or_else(|| {
            crate::kea::ServerKind::detect(
                args.kea_conf.is_some(),
                args.conf_source().is_some(),
                lease_text.as_deref(),
            )
        });
        if kind == ServerKind::Dnsmasq {
            return Ok(ServerSide {
                kind,
                access: server_query::ServerAccess::Dhcp(args.server),
                checks: ServerChecks::Dnsmasq,
                kea_config: None,
                family: Family::V4,
            });
        }
        let kea_config = match &args.kea_conf {
            Some(path) => Some(intent::load_kea_config(path)?),
            None => None,
        };
        if args.lease_format == LeaseFormatName::Dnsmasq {
            anyhow::bail!(
                "a Kea server with --lease-format dnsmasq: give --lease-format kea-v4 (or kea-v6) \
                 and --leases with Kea's memfile{}",
                kea_config
                    .as_ref()
                    .and_then(KeaConfig::lease_file_path)
                    .map(|p| format!(" ({} by its configuration)", p.display()))
                    .unwrap_or_default()
            );
        }
        if let (Some(path), Some(config)) = (&args.kea_conf, &kea_config) {
            for note in &config.notes {
                eprintln!("{}: {note}", path.display());
            }
            if !config.lease_cmds_loaded {
                eprintln!(
                    "{}: no libdhcp_lease_cmds.so in hooks-libraries: Kea will answer \
                         neither the memory probe nor a repair",
                    path.display()
                );
            }
        }
        // kea-dhcp4 or kea-dhcp6: its configuration says, else the lease file's format.
        let family = match (&kea_config, args.lease_format) {
            (Some(config), _) => config.family,
            (None, LeaseFormatName::KeaV6) => Family::V6,
            (None, _) => Family::V4,
        };
        let checks = ServerChecks::Kea {
            loopback: kea_config.as_ref().is_some_and(|c| c.listens_on_loopback()),
        };
        let socket = args
            .kea_control_socket
            .clone()
            .or_else(|| kea_config.as_ref()?.control_socket.clone());
        let access = match socket {
            None => {
                eprintln!(
                    "kea control socket not configured (no control-socket in --kea-conf, no \
                     --kea-control-socket): observing only, no memory probe, no repair"
                );
                server_query::ServerAccess::ObserveOnly
            }
            Some(socket) => {
                // kea-dhcp6's socket answers lease6 commands only.
                let control = crate::kea::KeaControl::new(&socket).for_family(family);
                match control.answers_lease_commands() {
                    Ok(_) => server_query::ServerAccess::Kea(control),
                    Err(err) => {
                        eprintln!(
                            "kea control socket {}: {err}: observing only, no memory probe, \
                             no repair",
                            socket.display()
                        );
                        server_query::ServerAccess::ObserveOnly
                    }
                }
            }
        };
        Ok(ServerSide {
            kind,
            access,
            checks,
            kea_config,
            family,
        })
    }

    /// The observer's configuration for this server: Kea's checks; without a way to ask the
    /// server, neither memory probe nor repair.
    pub fn adjust(&self, mut config: ObserverConfig) -> ObserverConfig {
        config.server_checks = self.checks;
        if matches!(self.access, server_query::ServerAccess::ObserveOnly) {
            config.probe_memory = false;
            config.repair = None;
        }
        config
    }
}

/// 9967: next to the DHCP exporters' ports in Prometheus' port allocation list; loopback only
/// unless told otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9967";

impl RunArgs {
    /// What the observer is told to do.
    pub fn observer_config(&self) -> ObserverConfig {
        ObserverConfig {
            grace: self.grace,
            discover_timeout: self.discover_timeout,
            probe_memory: self.probe_memory,
            repair: self.remediate.then_some(RepairPolicy {
                per_minute: self.remediation_rate,
                dry_run: self.dry_run,
                guest_releases: self.repair_guest_releases,
                orphans: !self.no_orphan_repair,
            }),
            reconcile: ReconcileConfig {
                settle: self.orphan_settle,
                ..ReconcileConfig::default()
            },
            own_xid_seed: server_query::random_xid(),
            trusted_servers: self.trusted_servers.clone(),
            ..ObserverConfig::default()
        }
    }

    /// Where dnsmasq's configuration comes from, if anywhere.
    pub fn conf_source(&self) -> Option<ConfSource> {
        match (&self.dnsmasq_conf, &self.dnsmasq_pid_file) {
            (Some(path), _) => Some(ConfSource::File(path.clone())),
            (None, Some(pid_file)) => Some(ConfSource::Process {
                pid_file: pid_file.clone(),
            }),
            (None, None) => None,
        }
    }
}

type RepairDone = (Repair, RepairResult, Option<String>);
type Repair6Done = (Repair6, RepairResult, Option<String>);

/// Where the daemon's findings go: event lines, the state file, the metrics, and the tasks that
/// ask the server (memory probes, repairs) off the event loop.
struct Daemon {
    args: RunArgs,
    metrics: Arc<Metrics>,
    /// `/healthz`: ready once the first lease table is taken.
    readiness: Arc<Readiness>,
    state: StateFile,
    repairs: tokio::sync::mpsc::Sender<RepairDone>,
    repairs6: tokio::sync::mpsc::Sender<Repair6Done>,
    /// How the server's memory is asked and repairs are made (dnsmasq: DHCP; Kea: lease_cmds).
    access: server_query::ServerAccess,
    checks: tokio::sync::mpsc::Sender<(Verdict, Option<bool>)>,
    /// Something changed that the state file should show (written with the next tick).
    unsaved: bool,
}

impl Daemon {
    /// Acts on the observer's findings, in order. A flagged release is written to the state
    /// file before it is printed: a flag anyone has seen survives the agent being killed right
    /// after (SIGKILL, OOM, power loss).
    fn fan_out(
        &mut self,
        observer: &mut Observer,
        findings: &mut Vec<Finding>,
    ) -> anyhow::Result<()> {
        // Every flagged release of the lot is kept first, and the file written once.
        let mut flagged = false;
        for finding in findings.iter() {
            if let Finding::Settled(verdict) = finding
                && matches!(verdict.outcome, Outcome::Dropped(_))
            {
                StateFile::remember(
                    &mut self.state.flagged,
                    ReleaseEvent::new(verdict, observer.reconciler()),
                );
                flagged = true;
            }
            if let Finding::Settled6(verdict) = finding
                && matches!(verdict.outcome, Outcome6::Dropped(_))
            {
                StateFile::remember(
                    &mut self.state.flagged,
                    ReleaseEvent::new6(verdict, observer.reconciler()),
                );
                flagged = true;
            }
        }
        if flagged {
            self.save_state(observer);
        }
        for finding in findings.drain(..) {
            if account(&self.metrics, &finding) {
                continue;
            }
            match finding {
                Finding::Settled(verdict) => {
                    self.metrics.release_settled(&verdict);
                    self.metrics.release_origin(verdict.release.origin);
                    self.unsaved = true;
                    let event = ReleaseEvent::new(&verdict, observer.reconciler());
                    emit(self.args.json, &event, event.text())?;
                }
                Finding::Settled6(verdict) => {
                    self.metrics.release6_settled(&verdict);
                    self.unsaved = true;
                    let event = ReleaseEvent::new6(&verdict, observer.reconciler());
                    emit(self.args.json, &event, event.text())?;
                }
                Finding::Retransmission6(_) => self.metrics.release_retransmission(),
                Finding::ServerDuidLearned(duid) => {
                    eprintln!("DHCPv6 server DUID {} learned", hex_colon(&duid));
                }
                Finding::Repair6(repair, step) => match step {
                    RepairStep::Send => {
                        let done = self.repairs6.clone();
                        let (leases, format) = (self.args.leases.clone(), self.args.lease_format);
                        let access = self.access.clone();
                        tokio::task::spawn_blocking(move || {
                            let timeout = Duration::from_secs(3);
                            let (result, detail) = match &access {
                                server_query::ServerAccess::Kea(kea) => {
                                    remediate6::execute6_kea(&repair, kea, &leases, format, timeout)
                                }
                                _ => remediate6::execute6(&repair, &leases, format, timeout),
                            };
                            let _ = done.blocking_send((repair, result, detail));
                        });
                    }
                    RepairStep::DryRun => {
                        self.repair6_reported(&repair, RepairResult::DryRun, None)?
                    }
                    RepairStep::RateLimited => {
                        self.repair6_reported(&repair, RepairResult::RateLimited, None)?
                    }
                },
                Finding::CheckMemory(verdict) => {
                    let (done, access) = (self.checks.clone(), self.access.clone());
                    let xid = observer.own_xid(now());
                    tokio::task::spawn_blocking(move || {
                        let held =
                            access.holds(verdict.release.ciaddr, xid, server_query::PROBE_TIMEOUT);
                        if let Err(err) = &held {
                            eprintln!("memory probe for {} failed: {err}", verdict.release.ciaddr);
                        }
                        let _ = done.blocking_send((verdict, held.ok()));
                    });
                }
                Finding::Repair(repair, step) => match step {
                    RepairStep::Send => {
                        // Sending and verifying blocks on the server's answers: off the loop.
                        let (done, server) = (self.repairs.clone(), self.args.server);
                        let access = self.access.clone();
                        let (leases, format) = (self.args.leases.clone(), self.args.lease_format);
                        tokio::task::spawn_blocking(move || {
                            let (result, detail) = match &access {
                                // Kea's own API, no packet.
                                server_query::ServerAccess::Kea(kea) => remediate::execute_kea(
                                    &repair,
                                    kea,
                                    &leases,
                                    format,
                                    Duration::from_secs(2),
                                ),
                                _ => remediate::execute(&repair, server, Duration::from_secs(2)),
                            };
                            let _ = done.blocking_send((repair, result, detail));
                        });
                    }
                    RepairStep::DryRun => self.repair_reported(
                        &repair,
                        RepairResult::DryRun,
                        None,
                        observer.reconciler(),
                    )?,
                    RepairStep::RateLimited => self.repair_reported(
                        &repair,
                        RepairResult::RateLimited,
                        None,
                        observer.reconciler(),
                    )?,
                },
                Finding::Divergence(divergence) => {
                    let event = DivergenceEvent::new(&divergence, observer.reconciler());
                    emit(self.args.json, &event, event.text())?;
                }
                Finding::LeaseFile(result) => {
                    self.metrics.lease_file_reload(result, now_seconds());
                }
                Finding::Ready => self.readiness.set_ready(),
                Finding::Note(note) => eprintln!("{note}"),
                Finding::Server(status) => {
                    self.metrics.server_status(&status);
                    let event = ServerEvent::new(&status);
                    emit(self.args.json, &event, event.text())?;
                }
                Finding::Reconciled(found) => {
                    self.metrics.reconciled(&found);
                    // A renewed orphan is kept in the state file (never released later).
                    self.unsaved = true;
                    let event = ReconcileEvent::new(&found, observer.reconciler());
                    emit(self.args.json, &event, event.text())?;
                }
                Finding::Rogue(rogue) => {
                    self.metrics.rogue(&rogue);
                    if rogue.first {
                        let event = RogueEvent::new(&rogue, observer.reconciler());
                        emit(self.args.json, &event, event.text())?;
                    }
                }
                // Accounted for above.
                Finding::Exchange(_) | Finding::ServerLearned(_) | Finding::OwnPacket => {}
            }
        }
        Ok(())
    }

    /// A repair's result: counted, kept in the state file, printed (`names`: the host lines'
    /// names of clients).
    fn repair_reported(
        &mut self,
        repair: &Repair,
        result: RepairResult,
        detail: Option<String>,
        names: &Reconciler,
    ) -> anyhow::Result<()> {
        self.metrics.remediation(result);
        let event = RemediationEvent::new(repair, result, detail, names);
        StateFile::remember(&mut self.state.remediations, event.clone());
        self.unsaved = true;
        emit(self.args.json, &event, event.text())
    }

    /// A DHCPv6 repair's result: counted, kept in the state file, printed.
    fn repair6_reported(
        &mut self,
        repair: &Repair6,
        result: RepairResult,
        detail: Option<String>,
    ) -> anyhow::Result<()> {
        self.metrics.remediation_of("dhcpv6", result);
        let event = RemediationEvent::new6(repair, result, detail);
        StateFile::remember(&mut self.state.remediations, event.clone());
        self.unsaved = true;
        emit(self.args.json, &event, event.text())
    }

    /// Rewrites the state file from the observer's pending and outstanding releases.
    fn save_state(&mut self, observer: &Observer) {
        self.state.updated = rfc3339(now_ns());
        self.state.pending = observer
            .pending_records()
            .map(PendingRelease::new)
            .collect();
        self.state.outstanding = observer.outstanding().iter().cloned().collect();
        self.state.renewed_orphans = observer
            .reconciler()
            .renewed_orphans()
            .map(|(ip, mac)| crate::state::RenewedOrphan { ip, mac })
            .collect();
        if let Err(err) = self.state.write(&self.args.state_file) {
            eprintln!("state file not written: {err:#}");
        }
        self.unsaved = false;
    }
}

/// Probes the server about every lease the file lists and every address that left the file
/// lately; returns the divergences found.
fn scan_divergences(
    server: SocketAddrV4,
    in_file: Vec<(std::net::Ipv4Addr, Vec<u8>)>,
    removed: Vec<std::net::Ipv4Addr>,
    xids: Vec<u32>,
) -> Vec<Divergence> {
    let mut xids = xids.into_iter();
    let mut held = |ip| {
        let xid = xids.next().unwrap_or_else(server_query::random_xid);
        server_query::probe(server, ip, Duration::from_millis(300), xid).map(|s| s.leased())
    };
    let mut found = Vec::new();
    for (ip, mac) in in_file {
        if let Ok(false) = held(ip) {
            found.push(Divergence {
                kind: DivergenceKind::FileListsLeaseServerDoesNotHold,
                ip,
                mac: Mac::from_slice(&mac),
            });
        }
    }
    for ip in removed {
        if let Ok(true) = held(ip) {
            found.push(Divergence {
                kind: DivergenceKind::ServerHoldsLeaseMissingFromFile,
                ip,
                mac: None,
            });
        }
    }
    found
}

/// Interfaces attached and detached while running: a stderr line, the metrics, an event.
fn report_interface_changes(
    changes: Vec<InterfaceChange>,
    metrics: &Metrics,
    names: &mut InterfaceNames,
    json: bool,
) -> anyhow::Result<()> {
    for change in changes {
        eprintln!("{change}");
        metrics.interface_change(&change);
        // An index attached anew may have been renamed (a gone one keeps its name for
        // packets still in the ring buffer).
        if !matches!(change, InterfaceChange::Gone { .. }) {
            names.forget(change.index());
        }
        let event = InterfaceEvent::new(&change);
        emit(json, &event, event.text())?;
    }
    Ok(())
}

/// How late past its grace a release may be settled, so that releases falling due together
/// share a wake-up: well inside the 10 ms past the grace that detection may take.
const SETTLE_EVERY: Duration = Duration::from_millis(5);

/// `ns` rounded up to a multiple of `every` (unchanged for zero).
fn round_up(ns: i128, every: Duration) -> i128 {
    let every = i128::try_from(every.as_nanos()).unwrap_or(i128::MAX);
    if every == 0 {
        return ns;
    }
    ns + (every - ns.rem_euclid(every)) % every
}

fn now_ns() -> i128 {
    jiff::Timestamp::now().as_nanosecond()
}

fn now_seconds() -> f64 {
    now_ns() as f64 / 1e9
}

fn now() -> Now {
    Now {
        unix_ns: now_ns(),
        mono: Instant::now(),
    }
}

/// The previous run's state: its history is kept and its outstanding releases resumed. A file
/// that does not parse is kept aside (never overwritten) and the daemon starts afresh.
fn resume_state(path: &std::path::Path) -> StateFile {
    // Its outstanding releases drive repairs: a file that others can change must not.
    if path.exists()
        && let Err(err) = crate::trusted::check_trusted(path)
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

/// The releases the last run left pending, as the observer takes them up (each with its own
/// seen time, deadline and the lease the table showed then).
fn saved_pending(saved: &[PendingRelease]) -> Vec<dhcp_engine::correlate::Pending> {
    saved
        .iter()
        .filter_map(|entry| match entry.to_pending() {
            Ok(pending) => Some(pending),
            Err(err) => {
                eprintln!(
                    "pending release of {} {} not resumed: {err:#}",
                    entry.ip, entry.mac
                );
                None
            }
        })
        .collect()
}

/// The configuration at start-up. A configuration file that cannot be read is an error (the
/// operator named it); a dnsmasq that is not running (a BACKUP router) is not: its
/// configuration is read when it starts.
fn load_config_at_start(source: Option<&ConfSource>) -> anyhow::Result<Option<DnsmasqConfig>> {
    match source {
        None => Ok(None),
        Some(source @ ConfSource::File(_)) => intent::load_config(source).map(Some),
        Some(source @ ConfSource::Process { pid_file }) => match intent::load_config(source) {
            Ok(config) => Ok(Some(config)),
            Err(err) => {
                eprintln!(
                    "dnsmasq's configuration not read yet ({err:#}); waiting for {}",
                    pid_file.display()
                );
                Ok(None)
            }
        },
    }
}

/// The declared hosts, followed: read again whenever a host file, host directory or the
/// configuration changes, and handed to the observer.
struct Declared {
    source: Option<ConfSource>,
    config: Option<DnsmasqConfig>,
    /// Kea's configuration file and what it said last: its reservations are the declared
    /// hosts (then there is no dnsmasq `source`).
    kea: Option<(PathBuf, KeaConfig)>,
    watched: Vec<PathBuf>,
    follower: Option<FilesFollower>,
}

impl Declared {
    fn start(
        source: Option<ConfSource>,
        config: Option<DnsmasqConfig>,
        kea: Option<(PathBuf, KeaConfig)>,
        observer: &mut Observer,
        findings: &mut Vec<Finding>,
    ) -> anyhow::Result<Declared> {
        let mut declared = Declared {
            source,
            config,
            kea,
            watched: Vec::new(),
            follower: None,
        };
        if let Some(ConfSource::Process { pid_file }) = &declared.source {
            // Until dnsmasq runs, at least its pid file is followed.
            declared.watched = vec![pid_file.clone()];
            declared.follower = Some(FilesFollower::new(&declared.watched)?);
        }
        declared.take(observer, findings);
        Ok(declared)
    }

    /// Reads the host lines of the configuration held and hands them over.
    fn take(&mut self, observer: &mut Observer, findings: &mut Vec<Finding>) {
        if let Some((path, config)) = &self.kea {
            let (intent, watched) = intent::load_kea_intent(path, config);
            for problem in &intent.hosts.problems {
                eprintln!("reservation not matched: {problem}");
            }
            eprintln!(
                "{} declared hosts from Kea's reservations in {}",
                intent.hosts.len(),
                path.display()
            );
            self.follow(watched);
            observer.on_intent(intent, now(), findings);
            return;
        }
        let (Some(source), Some(config)) = (&self.source, &self.config) else {
            return;
        };
        let (intent, watched) = intent::load_intent(source, config.clone());
        for problem in &intent.hosts.problems {
            eprintln!("host line ignored: {problem}");
        }
        for path in &intent.hosts.unreadable {
            eprintln!(
                "host file {} not read: keeping what it declared before",
                path.display()
            );
        }
        eprintln!(
            "{} declared hosts from {}",
            intent.hosts.len(),
            match source {
                ConfSource::File(path) => path.display().to_string(),
                ConfSource::Process { pid_file } =>
                    format!("the command line of the dnsmasq of {}", pid_file.display()),
            }
        );
        self.follow(watched);
        observer.on_intent(intent, now(), findings);
    }

    /// Follows these files from now on (if they are not those followed already).
    fn follow(&mut self, watched: Vec<PathBuf>) {
        if watched != self.watched {
            match FilesFollower::new(&watched) {
                Ok(follower) => self.follower = Some(follower),
                Err(err) => eprintln!("host files not followed: {err}"),
            }
            self.watched = watched;
        }
    }

    /// Something followed changed: the configuration and its host lines are read again.
    fn reload(&mut self, observer: &mut Observer, findings: &mut Vec<Finding>) {
        if let Some((path, config)) = &mut self.kea {
            match intent::load_kea_config(path) {
                Ok(new) => *config = new,
                // Kea keeps running with what it read: so do the declared hosts.
                Err(err) => eprintln!("Kea's configuration not read again: {err:#}"),
            }
            return self.take(observer, findings);
        }
        let Some(source) = &self.source else { return };
        match intent::load_config(source) {
            Ok(config) => self.config = Some(config),
            // A dnsmasq that stopped (its pid file gone) keeps the configuration it had.
            Err(err) => eprintln!("dnsmasq's configuration not read again: {err:#}"),
        }
        self.take(observer, findings);
    }

    async fn changed(&mut self) -> std::io::Result<()> {
        match &mut self.follower {
            Some(follower) => follower.changed().await,
            None => std::future::pending().await,
        }
    }
}

/// How often the server is asked whether it answers, in seconds (its socket is looked at
/// every second).
const PROBE_EVERY: u32 = 5;

/// Whether the server runs (a socket on port 67) and answers (a DHCPINFORM about its own
/// address), checked at every housekeeping tick: a probe is sent every [`PROBE_EVERY`] ticks
/// and its answer looked for at the ticks until the next, so the check adds no wake-up to the
/// agent's once a second.
struct LivenessChecks {
    prober: server_query::Prober,
    ticks: u32,
    /// Kea ignores a DHCPINFORM over `lo`: it is asked on its control socket instead (or, when
    /// it has none, judged by its port alone).
    access: server_query::ServerAccess,
    /// The server's UDP port (kea-dhcp6: 547).
    port: u16,
}

impl LivenessChecks {
    fn new(server: SocketAddrV4, access: server_query::ServerAccess, port: u16) -> LivenessChecks {
        LivenessChecks {
            prober: server_query::Prober::new(server),
            ticks: 0,
            access,
            port,
        }
    }

    /// Kea's liveness: its UDP port, and its control socket answering.
    fn check_kea(&mut self, observer: &mut Observer, findings: &mut Vec<Finding>) {
        let Some(listening) = system::udp_port_bound(self.port) else {
            return;
        };
        let answered = match &self.access {
            server_query::ServerAccess::Kea(kea) => Some(kea.answers_lease_commands().is_ok()),
            _ => None,
        };
        let check = ServerCheck {
            listening,
            answered,
            should_serve: true,
        };
        observer.on_server_check(check, now(), findings);
    }

    fn check(
        &mut self,
        observer: &mut Observer,
        config: Option<&DnsmasqConfig>,
        findings: &mut Vec<Finding>,
    ) {
        if !matches!(self.access, server_query::ServerAccess::Dhcp(_)) {
            return self.check_kea(observer, findings);
        }
        let Some(listening) = system::udp_port_bound(server_query::SERVER_PORT) else {
            return; // no /proc/net/udp: nothing known
        };
        // A probe's window ends when the next is sent: only then is it lost. A late answer
        // to an older probe still counts (dnsmasq answers seconds late while it pings).
        let window_over = self.ticks.is_multiple_of(PROBE_EVERY);
        let answered = match self.prober.answered() {
            Some(false) if !window_over => None,
            heard => heard,
        };
        let check = ServerCheck {
            listening,
            answered,
            should_serve: config.is_none_or(intent::should_serve),
        };
        observer.on_server_check(check, now(), findings);
        self.ticks = self.ticks.wrapping_add(1);
        // The probe asks about an address of a served subnet (dnsmasq answers a DHCPINFORM only
        // there): the server's own id.
        let about = observer.identity().known().next().map(|k| k.server_id);
        if listening
            && window_over
            && let Some(ip) = about
            && let Err(err) = self.prober.send(ip, observer.own_xid(now()))
        {
            log::debug!("liveness probe not sent: {err}");
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let sink = EventSink::choose(args.events)?;
    eprintln!("events: {}", sink.describe(args.json));
    crate::events::set_sink(sink)?;
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        &system::kernel_release(),
    ));
    let readiness = Arc::new(Readiness::default());
    let listener = crate::metrics::http::bind(args.metrics_addr).await?;
    let server = tokio::spawn(crate::metrics::http::serve(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&readiness),
    ));
    let source = args.conf_source();
    let config = load_config_at_start(source.as_ref())?;
    let server_side = ServerSide::from_args(&args)?;
    eprintln!("server: {}", server_side.kind.name());
    let identity = match (&server_side.kea_config, &config) {
        (Some(kea), _) => {
            let local: Vec<_> = system::local_ipv4().into_iter().map(|(ip, _)| ip).collect();
            ServerIdentity::from_kea(kea, &local, &system::local_subnets())
        }
        (None, Some(config)) => ServerIdentity::from_config(config, &system::local_subnets()),
        (None, None) => ServerIdentity::default(),
    };
    let mut observer = Observer::new(server_side.adjust(args.observer_config()), identity);
    let mut follower = LeaseFollower::new(&args.leases, args.lease_format.format())
        .with_context(|| format!("watching {}", args.leases.display()))?;
    let mut findings = Vec::new();
    let first = match follower.load().await {
        Err(err @ (LoadError::Read { .. } | LoadError::Parse { .. })) => return Err(err.into()),
        first => first,
    };
    if let Err(LoadError::Missing(path)) = &first {
        eprintln!(
            "lease file {} does not exist yet; waiting for it",
            path.display()
        );
    }
    let mut state = resume_state(&args.state_file);
    let outstanding = std::mem::take(&mut state.outstanding);
    if !outstanding.is_empty() {
        eprintln!(
            "resuming {} dropped releases from {}",
            outstanding.len(),
            args.state_file.display()
        );
    }
    // Releases seen within their grace before the last run stopped: judged once there is a
    // lease table (a missing file is no proof that their leases are gone).
    let pending = saved_pending(&std::mem::take(&mut state.pending));
    if !pending.is_empty() && first.is_err() {
        eprintln!(
            "{} pending releases from {} wait for the lease file",
            pending.len(),
            args.state_file.display()
        );
    }
    let state_source = args.state_file.display().to_string();
    let renewed = std::mem::take(&mut state.renewed_orphans)
        .into_iter()
        .map(|r| (r.ip, r.mac))
        .collect();
    observer.resume(pending, outstanding, renewed, &state_source, &mut findings);
    observer.on_lease_file(LoadError::read_result(first), now(), &mut findings);
    let kea = args.kea_conf.clone().zip(server_side.kea_config.clone());
    let mut declared = Declared::start(source, config, kea, &mut observer, &mut findings)?;
    let mut liveness = LivenessChecks::new(
        args.server,
        server_side.access.clone(),
        server_side.server_port(),
    );
    liveness.check(&mut observer, declared.config.as_ref(), &mut findings);
    let mut pcap = args.pcap.open()?;
    let mut link_events = LinkEvents::open().context("subscribing to interface changes")?;
    let default = match args.conf_source() {
        Some(_) => DefaultSet::Served(declared.config.as_ref().map(DnsmasqConfig::served_links)),
        None => DefaultSet::Up,
    };
    let mut interfaces = Interfaces::new(&args.capture, default)?;
    let mut capture = start_capture(&args.capture, &interfaces)?;
    for (interface, attached) in capture.interfaces() {
        metrics.set_interface_attached(interface, attached);
    }
    let mut reader = capture.event_reader()?;
    let clock = system::BootClock::new();
    let mut names = InterfaceNames::default();
    let mut batch = Vec::new();
    // One housekeeping tick a second does every periodic job (timeouts, orphans' settle, the
    // server check, counters, the state file): at rest the agent wakes once a second and for
    // nothing else (the benchmark counts: `cargo xtask bench --only footprint`). Nothing it
    // does needs a finer clock: release deadlines have their own timer (`settle_at`) and the
    // other periods are seconds.
    let mut housekeeping = crate::ticker::Ticker::new(Duration::from_secs(1))
        .context("creating the housekeeping timer")?;
    let (repairs_tx, mut repairs_done) = tokio::sync::mpsc::channel(64);
    let (checks_tx, mut checks_done) = tokio::sync::mpsc::channel(64);
    let (repairs6_tx, mut repairs6_done) = tokio::sync::mpsc::channel(64);
    let mut daemon = Daemon {
        args,
        metrics: Arc::clone(&metrics),
        readiness,
        state,
        repairs: repairs_tx,
        repairs6: repairs6_tx,
        access: server_side.access.clone(),
        checks: checks_tx,
        unsaved: false,
    };
    let args = daemon.args.clone();
    let mut divergence_scan = tokio::time::interval(args.divergence_interval);
    let (scans_tx, mut scans_done) = tokio::sync::mpsc::channel(1);
    let mut scanning = false;
    eprintln!(
        "watching; {} leases from {} ({}), grace {:?}, metrics on http://{}/metrics",
        observer.table().v4.len(),
        follower.path().display(),
        follower.format_name(),
        args.grace,
        args.metrics_addr
    );
    tokio::pin!(shutdown);
    loop {
        // Dropped releases just settled are repaired when asked.
        observer.plan_repairs(now(), false, &mut findings);
        daemon.fan_out(&mut observer, &mut findings)?;
        // When the next pending release's grace ends, rounded up to SETTLE_EVERY: in a stream
        // of releases a deadline falls due every fraction of a millisecond, and one wake-up
        // settles all that fall due within it.
        let settle_at = observer.next_deadline_ns().map(|deadline| {
            let deadline = round_up(deadline, SETTLE_EVERY);
            let wait = u64::try_from(deadline - now_ns()).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_nanos(wait)
        });
        tokio::select! {
            () = &mut shutdown => break,
            result = reader.read_batch(&mut batch) => {
                result.context("reading the event ring buffer")?;
                let done = Pipeline {
                    clock,
                    names: &mut names,
                    pcap: pcap.as_mut(),
                    metrics: &metrics,
                    observer: &mut observer,
                }
                .on_batch(&batch, &mut findings)?;
                batch.clear();
                // New pending releases are written to the state file on the next
                // once-a-second tick, not after every batch: rewriting the file per batch took
                // 64% of the agent's CPU in a DHCP storm (`cargo xtask bench`, storm).
                daemon.unsaved |= done.releases > 0;
            }
            result = follower.changed() => {
                result.context("following the lease file")?;
                let loaded = follower.load().await;
                if let Err(err) = &loaded {
                    eprintln!("lease file not reloaded: {err}");
                }
                observer.on_lease_file(LoadError::read_result(loaded), now(), &mut findings);
            }
            result = declared.changed() => {
                result.context("following the host files")?;
                declared.reload(&mut observer, &mut findings);
                // What dnsmasq serves may have changed with it (a new tier's range).
                interfaces.set_served(declared.config.as_ref().map(DnsmasqConfig::served_links));
                let changes = interfaces.reconcile(&mut capture);
                report_interface_changes(changes, &metrics, &mut names, args.json)?;
            }
            result = link_events.changed() => {
                result.context("following interface changes")?;
                let changes = interfaces.reconcile(&mut capture);
                report_interface_changes(changes, &metrics, &mut names, args.json)?;
            }
            _ = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)), if settle_at.is_some() => {
                observer.settle_due(now(), &mut findings);
            }
            result = housekeeping.tick() => {
                result.context("waiting for the housekeeping timer")?;
                observer.on_tick(now(), &mut findings);
                match capture.counters() {
                    Ok(counters) => metrics.kernel_counters(&counters),
                    Err(err) => eprintln!("kernel counters not read: {err}"),
                }
                daemon.unsaved |= observer.refresh_outstanding();
                liveness.check(&mut observer, declared.config.as_ref(), &mut findings);
                // Releases the rate limit held back, or resumed from the last run.
                observer.plan_repairs(now(), true, &mut findings);
                metrics.set_releases_pending(observer.pending() + observer.pending6());
                metrics.set_releases_unresolved(
                    observer.outstanding().len() + observer.outstanding6().len(),
                );
                let pools = observer.identity().pools();
                metrics.set_leases(observer.table(), &pools);
                metrics.set_reconciliation(observer.reconciler(), &pools);
                metrics.set_server_ids(observer.identity().known());
                if daemon.unsaved {
                    daemon.save_state(&observer);
                }
            }
            // The scan asks with DHCPINFORMs, which only dnsmasq answers.
            _ = divergence_scan.tick(), if args.probe_memory && !scanning
                && server_side.kind == ServerKind::Dnsmasq => {
                scanning = true;
                let (in_file, removed) = observer.divergence_questions();
                let xids = (0..in_file.len() + removed.len())
                    .map(|_| observer.own_xid(now()))
                    .collect();
                let (done, server) = (scans_tx.clone(), args.server);
                tokio::task::spawn_blocking(move || {
                    let _ = done.blocking_send(scan_divergences(server, in_file, removed, xids));
                });
            }
            Some(found) = scans_done.recv() => {
                scanning = false;
                for (kind, count) in observer.on_divergence_scan(found, &mut findings) {
                    metrics.set_divergences(kind, count);
                }
            }
            Some((verdict, held)) = checks_done.recv() => {
                observer.on_memory_answer(verdict, held, &mut findings);
            }
            Some((repair, result, detail)) = repairs_done.recv() => {
                observer.on_repair_result(&repair, result);
                daemon.repair_reported(&repair, result, detail, observer.reconciler())?;
                daemon.save_state(&observer);
            }
            Some((repair, result, detail)) = repairs6_done.recv() => {
                observer.on_repair6_result(&repair, result);
                daemon.repair6_reported(&repair, result, detail)?;
                daemon.save_state(&observer);
            }
        }
    }
    daemon.fan_out(&mut observer, &mut findings)?;
    if daemon.unsaved {
        daemon.save_state(&observer);
    }
    eprintln!("stopped; {} releases still pending", observer.pending());
    server.abort();
    drop(capture);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use dhcp_engine::outstanding::OutstandingRelease;

    fn run_args(args: &[&str]) -> RunArgs {
        use clap::Parser as _;
        let argv = [&["dhcp-agent", "run"][..], args].concat();
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Run(args) => args,
            _ => unreachable!(),
        }
    }

    /// A Kea server read with dnsmasq's lease format would read nothing: a clear error, with
    /// the memfile Kea's configuration names.
    #[test]
    fn kea_wants_keas_lease_format() {
        let dir = std::env::temp_dir().join(format!("dhcp-agent-kea-fmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("kea-dhcp6.conf");
        std::fs::write(
            &conf,
            r#"{ "Dhcp6": { "lease-database": { "type": "memfile", "name": "/x/l6.csv" } } }"#,
        )
        .unwrap();
        let err = ServerSide::from_args(&run_args(&["--kea-conf", conf.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--lease-format kea-v4 (or kea-v6)") && err.contains("/x/l6.csv"),
            "{err}"
        );
        let side = ServerSide::from_args(&run_args(&[
            "--kea-conf",
            conf.to_str().unwrap(),
            "--lease-format",
            "kea-v6",
        ]))
        .unwrap();
        assert_eq!(side.kind, ServerKind::Kea);
        assert!(matches!(
            side.access,
            server_query::ServerAccess::ObserveOnly
        ));
        assert_eq!(side.kea_config.map(|c| c.family), Some(Family::V6));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deadlines_round_up_to_the_wake_up_interval() {
        let ms = Duration::from_millis;
        assert_eq!(round_up(12_000_000, ms(5)), 15_000_000);
        assert_eq!(round_up(15_000_000, ms(5)), 15_000_000);
        assert_eq!(round_up(15_000_001, ms(5)), 20_000_000);
        assert_eq!(round_up(12_345, Duration::ZERO), 12_345);
    }

    #[test]
    fn a_state_file_others_can_change_is_not_resumed() {
        let dir = std::env::temp_dir().join(format!("dhcp-agent-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.join("state.json");
        let state = StateFile {
            outstanding: vec![OutstandingRelease {
                ip: "172.29.101.150".parse().unwrap(),
                mac: "52:54:00:10:00:01".parse().unwrap(),
                client_id: None,
                expiry: None,
                server_id: None,
                seen: "2026-11-25T00:00:00Z".into(),
                basis: dhcp_engine::outstanding::Basis::RouterRelease,
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
