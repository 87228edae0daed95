//! Prometheus metrics of `dhcp-agent run`, served by [`http`].
//!
//! Conventions: counters end in `_total` and only go up (kernel counters are added as deltas),
//! units are in names (`_seconds`), and every label value comes from a fixed set below or from
//! something the operator configured (interfaces, subnets, server ids): never a MAC, an address
//! of a client or a hostname, so a router with thousands of clients exports the same series as
//! one with ten.
pub mod http;

use std::{collections::BTreeSet, sync::Mutex};

use dhcp_common::Hook;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
    core::{Collector as _, MetricVec, MetricVecBuilder},
};

use dhcp_engine::{
    correlate::{Cause, Outcome, Verdict},
    correlate6::{Cause6, Outcome6, Verdict6},
    leases::LeaseTable,
    liveness::ServerStatus,
    observer::{DivergenceKind, ReloadResult},
    outstanding::RepairResult,
    provenance::{Origin, RogueServer},
    reconcile::{LeaseStatus, Reconciled, Reconciler},
    server_identity::{KnownServer, Pool},
    transactions::{Exchange, TransactionEvent},
};
use dhcp_wire::{Body, Packet};

use crate::capture::{HookCounters, InterfaceChange};

pub const DIRECTIONS: &[&str] = &["in", "out"];
pub const PROTOCOLS: &[&str] = &["dhcpv4", "dhcpv6"];
/// DHCPv4 message types (RFC 2132, 4388), `bootp` for messages without option 53.
pub const V4_MESSAGE_TYPES: &[&str] = &[
    "discover",
    "offer",
    "request",
    "decline",
    "ack",
    "nak",
    "release",
    "inform",
    "forcerenew",
    "leasequery",
    "leaseunassigned",
    "leaseunknown",
    "leaseactive",
    "bootp",
    "other",
];
/// DHCPv6 message types (RFC 8415).
pub const V6_MESSAGE_TYPES: &[&str] = &[
    "solicit",
    "advertise",
    "request",
    "confirm",
    "renew",
    "rebind",
    "reply",
    "release",
    "decline",
    "reconfigure",
    "information_request",
    "relay_forw",
    "relay_repl",
    "other",
];
pub const HOOKS: &[&str] = &[
    Hook::XdpIngress.name(),
    Hook::TcIngress.name(),
    Hook::TcEgress.name(),
];
pub const OUTCOMES: &[&str] = &Outcome::NAMES;
pub const CAUSES: &[&str] = &Cause::NAMES;
/// DHCPv6's causes (the `cause` label of `protocol="dhcpv6"` series).
pub const CAUSES6: &[&str] = &Cause6::NAMES;
pub const REMEDIATION_RESULTS: &[&str] = &RepairResult::NAMES;
/// `empty`: an empty file that replaced a table with leases none of which was released or
/// expired, not believed yet (see [`dhcp_engine::leases::emptied`]).
pub const RELOAD_RESULTS: &[&str] = &ReloadResult::NAMES;
pub const EXCHANGES: &[&str] = &["discover_ack", "request_ack"];
pub const DIVERGENCE_KINDS: &[&str] = &DivergenceKind::NAMES;
pub const ORIGINS: &[&str] = &Origin::NAMES;
pub const LEASE_STATUSES: &[&str] = &LeaseStatus::NAMES;
pub const RECONCILE_FINDINGS: &[&str] = &["orphan", "blocked_host"];
/// The `subnet` label of leases outside every known pool.
pub const OTHER_SUBNET: &str = "other";
/// The `interface` label when the interface of a pool is not known yet.
pub const UNKNOWN_INTERFACE: &str = "unknown";

/// `value` as the member of `set` it equals: a label value can never come from anywhere but the
/// set. `None` for anything else (a closed set's caller then records nothing).
fn fixed(set: &[&'static str], value: &str) -> Option<&'static str> {
    set.iter().copied().find(|v| *v == value)
}

/// For the open-ended message type sets: anything unknown is `other`.
fn message_type(set: &[&'static str], value: &str) -> &'static str {
    fixed(set, value).unwrap_or("other")
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    packets: IntCounterVec,
    malformed: IntCounterVec,
    capture_events: IntCounterVec,
    capture_lost: IntCounterVec,
    capture_truncated: IntCounterVec,
    releases: IntCounterVec,
    releases_dropped: IntCounterVec,
    releases_pending: IntGauge,
    releases_unresolved: IntGauge,
    remediations: IntCounterVec,
    leases: IntGaugeVec,
    pool_size: IntGaugeVec,
    divergences: IntGaugeVec,
    server_id_info: IntGaugeVec,
    transaction_duration: HistogramVec,
    naks: IntCounterVec,
    discover_unanswered: IntCounterVec,
    lease_file_reloads: IntCounterVec,
    lease_file_last_reload: Gauge,
    interface_attached: IntGaugeVec,
    interface_reattachments: IntCounterVec,
    server_up: IntGauge,
    server_should_serve: IntGauge,
    release_origins: IntCounterVec,
    release_retransmissions: IntCounterVec,
    rogue_packets: IntCounterVec,
    rogue_servers: IntGauge,
    own_packets: prometheus::IntCounter,
    leases_by_status: IntGaugeVec,
    reconcile_found: IntCounterVec,
    pool_declared_hosts: IntGaugeVec,
    pool_orphans: IntGaugeVec,
    pool_blocked_hosts: IntGaugeVec,
    /// Kernel counters as last added, to add only what is new.
    kernel_seen: Mutex<Vec<HookCounters>>,
    /// Interfaces that went (and were not named by `--iface`): their series are removed, and
    /// a pool learned on one is labelled `unknown` until the interface is back.
    gone_interfaces: Mutex<BTreeSet<String>>,
}

/// Registers `metric` and hands it back. Names and labels are constants of this module, so a
/// failure here is a programming error that every test run would show.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Removes every series of `vec` whose label `label` is `value` (prometheus removes a series by
/// all its label values only: they are read from what the vector holds).
fn remove_series<T: MetricVecBuilder>(vec: &MetricVec<T>, label: &str, value: &str) {
    let Some(names) = vec.desc().first().map(|d| d.variable_labels.clone()) else {
        return;
    };
    for family in vec.collect() {
        for metric in family.get_metric() {
            let pairs = metric.get_label();
            let of = |name: &str| {
                pairs
                    .iter()
                    .find(|p| p.name() == name)
                    .map(|p| p.value().to_owned())
            };
            if of(label).as_deref() != Some(value) {
                continue;
            }
            let values: Vec<String> = names.iter().map(|n| of(n).unwrap_or_default()).collect();
            let _ = vec.remove_label_values(&values.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}

/// Creates every series of a fixed label set at zero, so that `rate()` and `increase()` see the
/// first event instead of a series appearing from nowhere.
fn zero(metric: &IntCounterVec, values: &[&str]) {
    for value in values {
        metric.with_label_values(&[value]);
    }
}

impl Metrics {
    pub fn new(version: &str, kernel: &str) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let build_info = gauge(
            r,
            "dhcp_agent_build_info",
            "Always 1; the agent's version and the kernel it runs on.",
            &["version", "kernel"],
        );
        build_info.with_label_values(&[version, kernel]).set(1);
        let simple_gauge = |name: &str, help: &str| register(r, IntGauge::new(name, help));
        let metrics = Metrics {
            packets: counter(
                r,
                "dhcp_packets_total",
                "DHCP packets seen, by interface, direction, protocol and message type.",
                &["interface", "direction", "protocol", "message_type"],
            ),
            malformed: counter(
                r,
                "dhcp_malformed_packets_total",
                "Packets on DHCP ports that did not decode as DHCP.",
                &["interface"],
            ),
            capture_events: counter(
                r,
                "dhcp_capture_events_total",
                "Packets the kernel programs passed to the agent, by hook.",
                &["hook"],
            ),
            capture_lost: counter(
                r,
                "dhcp_capture_lost_events_total",
                "DHCP packets the kernel could not pass on because the ring buffer was full.",
                &["hook"],
            ),
            capture_truncated: counter(
                r,
                "dhcp_capture_truncated_events_total",
                "DHCP packets longer than the capture length, passed on cut.",
                &["hook"],
            ),
            releases: counter(
                r,
                "dhcp_releases_total",
                "RELEASEs settled, by outcome: honored, dropped by the server, or for no lease; by protocol (a DHCPv6 RELEASE counts once per address, its retransmissions not at all).",
                &["outcome", "protocol"],
            ),
            releases_dropped: counter(
                r,
                "dhcp_releases_dropped_total",
                "RELEASEs the server dropped, by cause and protocol.",
                &["cause", "protocol"],
            ),
            releases_pending: simple_gauge(
                "dhcp_releases_pending",
                "RELEASEs seen and waiting for the lease table to settle them.",
            ),
            releases_unresolved: simple_gauge(
                "dhcp_releases_dropped_unresolved",
                "Leases whose RELEASE the server dropped and that it still holds, unrenewed.",
            ),
            remediations: counter(
                r,
                "dhcp_remediations_total",
                "Repairs of dropped releases, by result and protocol.",
                &["result", "protocol"],
            ),
            leases: gauge(
                r,
                "dhcp_leases",
                "Leases in the server's lease file, by pool.",
                &["interface", "subnet"],
            ),
            pool_size: gauge(
                r,
                "dhcp_pool_size",
                "Addresses in the pool's dynamic ranges (from the server's configuration).",
                &["interface", "subnet"],
            ),
            divergences: gauge(
                r,
                "dhcp_lease_divergences",
                "Leases on which the lease file and the server's memory disagree, by kind.",
                &["kind"],
            ),
            server_id_info: gauge(
                r,
                "dhcp_server_id_info",
                "Always 1; the server identifier the server uses per subnet, and where it was learned.",
                &["interface", "subnet", "server_id", "source"],
            ),
            transaction_duration: {
                let opts = HistogramOpts::new(
                    "dhcp_transaction_duration_seconds",
                    "Time from a client's first DISCOVER (or REQUEST) to the server's ACK.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]);
                register(r, HistogramVec::new(opts, &["exchange"]))
            },
            naks: counter(
                r,
                "dhcp_naks_total",
                "NAKs the server sent, by interface.",
                &["interface"],
            ),
            discover_unanswered: counter(
                r,
                "dhcp_discover_unanswered_total",
                "DISCOVERs that got no OFFER within the timeout, by interface.",
                &["interface"],
            ),
            lease_file_reloads: counter(
                r,
                "dhcp_lease_file_reloads_total",
                "Reads of the lease file, by result.",
                &["result"],
            ),
            lease_file_last_reload: register(
                r,
                Gauge::new(
                    "dhcp_lease_file_last_reload_timestamp_seconds",
                    "When the lease file was last read successfully, Unix time.",
                ),
            ),
            interface_attached: gauge(
                r,
                "dhcp_interface_attached",
                "1 while the hooks are attached to the interface; 0 while one named by --iface is gone, or attaching failed. One selected by a pattern or by default loses its series when it goes.",
                &["interface"],
            ),
            interface_reattachments: counter(
                r,
                "dhcp_interface_reattachments_total",
                "Times the hooks were attached again to an interface of a name attached before that was deleted and came back.",
                &["interface"],
            ),
            server_up: simple_gauge(
                "dhcp_server_up",
                "1 while the DHCP server listens on port 67 and answers probes, 0 while not.",
            ),
            server_should_serve: simple_gauge(
                "dhcp_server_should_serve",
                "1 when this router should serve (it holds its listen addresses; 0 on a redundant router's BACKUP).",
            ),
            release_origins: counter(
                r,
                "dhcp_release_origins_total",
                "RELEASEs settled, by who sent them: the router itself, a guest, or forged (another Ethernet address than the client's).",
                &["origin", "protocol"],
            ),
            release_retransmissions: counter(
                r,
                "dhcp_release_retransmissions_total",
                "Copies of a DHCPv6 RELEASE already counted (clients and dhcp_release6 send again until answered), by protocol.",
                &["protocol"],
            ),
            rogue_packets: counter(
                r,
                "dhcp_rogue_server_packets_total",
                "OFFER/ACK/NAK that arrived on an interface from a server that is not this router's.",
                &["interface"],
            ),
            rogue_servers: simple_gauge(
                "dhcp_rogue_servers",
                "Distinct rogue servers (interface and MAC) seen since the agent started.",
            ),
            own_packets: register(
                r,
                prometheus::IntCounter::new(
                    "dhcp_agent_own_packets_total",
                    "The agent's own probes and repairs (and the answers), recognised by xid and not counted as clients' traffic.",
                ),
            ),
            leases_by_status: gauge(
                r,
                "dhcp_leases_by_status",
                "Leases by what the declared hosts say of them: declared, orphan (no host line, static-only range), dynamic, unknown (no configuration).",
                &["status"],
            ),
            reconcile_found: counter(
                r,
                "dhcp_reconcile_findings_total",
                "Orphan leases and blocked hosts found (each counted once).",
                &["kind"],
            ),
            pool_declared_hosts: gauge(
                r,
                "dhcp_pool_declared_hosts",
                "Host lines with a fixed address in the pool (a static-only pool's capacity).",
                &["interface", "subnet"],
            ),
            pool_orphans: gauge(
                r,
                "dhcp_pool_orphan_leases",
                "Leases in the pool whose client no host line declares (static-only pools).",
                &["interface", "subnet"],
            ),
            pool_blocked_hosts: gauge(
                r,
                "dhcp_pool_blocked_hosts",
                "Declared hosts of the pool whose address another client holds: they get no address.",
                &["interface", "subnet"],
            ),
            kernel_seen: Mutex::new(vec![HookCounters::default(); HOOKS.len()]),
            gone_interfaces: Mutex::new(BTreeSet::new()),
            registry,
        };
        for (metric, set) in [
            (&metrics.capture_events, HOOKS),
            (&metrics.capture_lost, HOOKS),
            (&metrics.capture_truncated, HOOKS),
            (&metrics.lease_file_reloads, RELOAD_RESULTS),
            (&metrics.reconcile_found, RECONCILE_FINDINGS),
            (&metrics.release_retransmissions, PROTOCOLS),
        ] {
            zero(metric, set);
        }
        for (protocol, causes) in [("dhcpv4", CAUSES), ("dhcpv6", CAUSES6)] {
            for (metric, set) in [
                (&metrics.releases, OUTCOMES),
                (&metrics.releases_dropped, causes),
                (&metrics.remediations, REMEDIATION_RESULTS),
                (&metrics.release_origins, ORIGINS),
            ] {
                for value in set {
                    metric.with_label_values(&[value, protocol]);
                }
            }
        }
        for status in LEASE_STATUSES {
            metrics.leases_by_status.with_label_values(&[status]).set(0);
        }
        // Until the first check (a second after start): a router serves unless it knows it
        // is a BACKUP, so no alert is silenced meanwhile.
        metrics.server_should_serve.set(1);
        for kind in DIVERGENCE_KINDS {
            metrics.divergences.with_label_values(&[kind]).set(0);
        }
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        metrics
    }

    /// The whole registry in the Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|err| format!("# encoding failed: {err}\n"))
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one decoded packet.
    pub fn packet(&self, packet: &Packet) {
        let interface = packet.meta.interface.as_str();
        let (protocol, message_type) = match &packet.body {
            Body::V4(m) => (
                "dhcpv4",
                message_type(V4_MESSAGE_TYPES, &m.type_name().to_ascii_lowercase()),
            ),
            Body::V6(m) => (
                "dhcpv6",
                message_type(
                    V6_MESSAGE_TYPES,
                    &m.message_type.to_ascii_lowercase().replace('-', "_"),
                ),
            ),
            Body::Malformed { .. } => {
                self.malformed.with_label_values(&[interface]).inc();
                return;
            }
        };
        self.packets
            .with_label_values(&[interface, packet.meta.direction(), protocol, message_type])
            .inc();
    }

    pub fn release_settled(&self, verdict: &Verdict) {
        if let Some(outcome) = fixed(OUTCOMES, verdict.outcome.name()) {
            self.releases.with_label_values(&[outcome, "dhcpv4"]).inc();
        }
        if let Outcome::Dropped(cause) = &verdict.outcome
            && let Some(cause) = fixed(CAUSES, cause.name())
        {
            self.releases_dropped
                .with_label_values(&[cause, "dhcpv4"])
                .inc();
        }
    }

    /// A DHCPv6 release settled (one per address), with its sender.
    pub fn release6_settled(&self, verdict: &Verdict6) {
        if let Some(outcome) = fixed(OUTCOMES, verdict.outcome.name()) {
            self.releases.with_label_values(&[outcome, "dhcpv6"]).inc();
        }
        if let Outcome6::Dropped(cause) = &verdict.outcome
            && let Some(cause) = fixed(CAUSES6, cause.name())
        {
            self.releases_dropped
                .with_label_values(&[cause, "dhcpv6"])
                .inc();
        }
        if let Some(origin) = fixed(ORIGINS, verdict.release.origin.name()) {
            self.release_origins
                .with_label_values(&[origin, "dhcpv6"])
                .inc();
        }
    }

    /// A copy of a DHCPv6 RELEASE already counted.
    pub fn release_retransmission(&self) {
        self.release_retransmissions
            .with_label_values(&["dhcpv6"])
            .inc();
    }

    pub fn release_origin(&self, origin: Origin) {
        if let Some(origin) = fixed(ORIGINS, origin.name()) {
            self.release_origins
                .with_label_values(&[origin, "dhcpv4"])
                .inc();
        }
    }

    pub fn server_status(&self, status: &ServerStatus) {
        self.server_up.set(i64::from(status.up));
        self.server_should_serve.set(i64::from(status.should_serve));
    }

    /// A rogue server's reply (`first`: a new sender).
    pub fn rogue(&self, rogue: &RogueServer) {
        self.rogue_packets
            .with_label_values(&[rogue.interface.as_str()])
            .inc();
        if rogue.first {
            self.rogue_servers.inc();
        }
    }

    pub fn own_packet(&self) {
        self.own_packets.inc();
    }

    pub fn reconciled(&self, found: &Reconciled) {
        let kind = match found {
            Reconciled::Orphan(_) => "orphan",
            Reconciled::Blocked(_) => "blocked_host",
            _ => return,
        };
        self.reconcile_found.with_label_values(&[kind]).inc();
    }

    /// Leases by status, and per pool: declared hosts, orphans, blocked hosts.
    pub fn set_reconciliation(&self, reconciler: &Reconciler, pools: &[Pool]) {
        let counts = reconciler.counts();
        for (status, n) in [
            ("declared", counts.declared_leased),
            ("orphan", counts.orphans),
            ("dynamic", counts.dynamic),
            ("unknown", counts.unknown),
        ] {
            self.leases_by_status
                .with_label_values(&[status])
                .set(n as i64);
        }
        if !reconciler.has_intent() {
            return;
        }
        let pool_of = |ip: std::net::Ipv4Addr| {
            pools
                .iter()
                .enumerate()
                .filter(|(_, p)| p.subnet.contains(ip))
                .max_by_key(|(_, p)| p.subnet.prefix())
                .map(|(i, _)| i)
        };
        let mut per_pool = vec![[0i64; 3]; pools.len()];
        for ip in reconciler.declared_ips() {
            if let Some(i) = pool_of(ip) {
                per_pool[i][0] += 1;
            }
        }
        for (ip, status) in reconciler.statuses() {
            if status == LeaseStatus::Orphan
                && let Some(i) = pool_of(ip)
            {
                per_pool[i][1] += 1;
            }
        }
        for ip in reconciler.blocked_ips() {
            if let Some(i) = pool_of(ip) {
                per_pool[i][2] += 1;
            }
        }
        for metric in [
            &self.pool_declared_hosts,
            &self.pool_orphans,
            &self.pool_blocked_hosts,
        ] {
            metric.reset();
        }
        for (pool, [declared, orphans, blocked]) in pools.iter().zip(per_pool) {
            let interface = self.pool_interface(pool.interface.as_deref());
            let labels = [interface.as_str(), &pool.subnet.to_string()];
            self.pool_declared_hosts
                .with_label_values(&labels)
                .set(declared);
            self.pool_orphans.with_label_values(&labels).set(orphans);
            self.pool_blocked_hosts
                .with_label_values(&labels)
                .set(blocked);
        }
    }

    pub fn remediation(&self, result: RepairResult) {
        self.remediation_of("dhcpv4", result);
    }

    /// A repair's result, by protocol (`dhcpv4`, `dhcpv6`).
    pub fn remediation_of(&self, protocol: &'static str, result: RepairResult) {
        if let Some(result) = fixed(REMEDIATION_RESULTS, result.name()) {
            self.remediations
                .with_label_values(&[result, protocol])
                .inc();
        }
    }

    pub fn set_releases_pending(&self, pending: usize) {
        self.releases_pending.set(pending as i64);
    }

    pub fn set_releases_unresolved(&self, unresolved: usize) {
        self.releases_unresolved.set(unresolved as i64);
    }

    pub fn set_divergences(&self, kind: DivergenceKind, count: usize) {
        if let Some(kind) = fixed(DIVERGENCE_KINDS, kind.name()) {
            self.divergences
                .with_label_values(&[kind])
                .set(count as i64);
        }
    }

    /// One read of the lease file.
    pub fn lease_file_reload(&self, result: ReloadResult, unix_seconds: f64) {
        let Some(result) = fixed(RELOAD_RESULTS, result.name()) else {
            return;
        };
        self.lease_file_reloads.with_label_values(&[result]).inc();
        if result == "ok" {
            self.lease_file_last_reload.set(unix_seconds);
        }
    }

    /// Whether `interface` has its hooks now (at start-up: every interface attached).
    pub fn set_interface_attached(&self, interface: &str, attached: bool) {
        self.interface_attached
            .with_label_values(&[interface])
            .set(i64::from(attached));
        self.interface_reattachments.with_label_values(&[interface]);
        // Rogue servers show up on guest interfaces; the series exists from the start so that
        // the first rogue packet is an increase.
        if interface != "lo" {
            self.rogue_packets.with_label_values(&[interface]);
        }
    }

    /// What [`crate::capture::Capture::reconcile`] did about an interface.
    pub fn interface_change(&self, change: &InterfaceChange) {
        let interface = change.interface();
        match change {
            InterfaceChange::Attached { .. } => {
                self.gone().remove(interface);
                self.set_interface_attached(interface, true);
            }
            InterfaceChange::Gone { kept: true, .. } => {
                self.set_interface_attached(interface, false)
            }
            InterfaceChange::Gone { kept: false, .. } => self.interface_removed(interface),
            InterfaceChange::Reattached { .. } => {
                self.gone().remove(interface);
                self.set_interface_attached(interface, true);
                self.interface_reattachments
                    .with_label_values(&[interface])
                    .inc();
            }
            InterfaceChange::Failed { .. } => self.set_interface_attached(interface, false),
        }
    }

    /// Removes every series that names `interface`: its own (attachment, packets, NAKs,
    /// unanswered DISCOVERs, rogue replies) and the pools' labelled with it, which name it no
    /// more until it is back ([`Metrics::pool_interface`]). Series of other interfaces, and
    /// the pools' of others, stay.
    fn interface_removed(&self, interface: &str) {
        self.gone().insert(interface.to_owned());
        for vec in [
            &self.packets,
            &self.malformed,
            &self.naks,
            &self.discover_unanswered,
            &self.rogue_packets,
            &self.interface_reattachments,
        ] {
            remove_series(vec, "interface", interface);
        }
        for vec in [
            &self.interface_attached,
            &self.leases,
            &self.pool_size,
            &self.server_id_info,
            &self.pool_declared_hosts,
            &self.pool_orphans,
            &self.pool_blocked_hosts,
        ] {
            remove_series(vec, "interface", interface);
        }
    }

    fn gone(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.gone_interfaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The `interface` label of a pool: where its server id was learned, unless that interface
    /// is gone.
    fn pool_interface(&self, interface: Option<&str>) -> String {
        match interface {
            Some(name) if !self.gone().contains(name) => name.to_owned(),
            _ => UNKNOWN_INTERFACE.to_owned(),
        }
    }

    pub fn transaction(&self, event: &TransactionEvent) {
        match event {
            TransactionEvent::Completed { exchange, seconds } => {
                let exchange = match exchange {
                    Exchange::DiscoverAck => "discover_ack",
                    Exchange::RequestAck => "request_ack",
                };
                self.transaction_duration
                    .with_label_values(&[exchange])
                    .observe(*seconds);
            }
            TransactionEvent::Nak { interface, .. } => {
                self.naks.with_label_values(&[interface]).inc();
            }
            TransactionEvent::Unanswered { interface, .. } => {
                self.discover_unanswered
                    .with_label_values(&[interface])
                    .inc();
            }
        }
    }

    /// Adds what the kernel counted since the last call (the kernel's counters only grow while
    /// the programs are loaded).
    pub fn kernel_counters(&self, now: &[HookCounters]) {
        let mut seen = self.kernel_seen.lock().unwrap_or_else(|e| e.into_inner());
        for ((hook, new), old) in HOOKS.iter().zip(now).zip(seen.iter_mut()) {
            for (metric, n, o) in [
                (&self.capture_events, new.events, old.events),
                (&self.capture_lost, new.lost, old.lost),
                (&self.capture_truncated, new.truncated, old.truncated),
            ] {
                metric
                    .with_label_values(&[hook])
                    .inc_by(n.saturating_sub(o));
            }
            *old = *new;
        }
    }

    /// Leases per pool and pool sizes; leases outside every pool count under `subnet="other"`.
    pub fn set_leases(&self, table: &LeaseTable, pools: &[Pool]) {
        self.leases.reset();
        self.pool_size.reset();
        let interface = |pool: &Pool| self.pool_interface(pool.interface.as_deref());
        let mut counts = vec![0i64; pools.len()];
        let mut outside = 0;
        for ip in table.v4.keys() {
            // The most specific pool holding the address.
            match pools
                .iter()
                .enumerate()
                .filter(|(_, p)| p.subnet.contains(*ip))
                .max_by_key(|(_, p)| p.subnet.prefix())
            {
                Some((i, _)) => counts[i] += 1,
                None => outside += 1,
            }
        }
        for (pool, count) in pools.iter().zip(counts) {
            let labels = [interface(pool), pool.subnet.to_string()];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            self.leases.with_label_values(&labels).set(count);
            if let Some(size) = pool.size {
                self.pool_size.with_label_values(&labels).set(size.into());
            }
        }
        if outside > 0 {
            self.leases
                .with_label_values(&[UNKNOWN_INTERFACE, OTHER_SUBNET])
                .set(outside);
        }
    }

    pub fn set_server_ids<'a>(&self, known: impl Iterator<Item = &'a KnownServer>) {
        self.server_id_info.reset();
        for k in known {
            let interface = self.pool_interface(k.interface.as_deref());
            self.server_id_info
                .with_label_values(&[
                    interface.as_str(),
                    &k.subnet.to_string(),
                    &k.server_id.to_string(),
                    k.source.name(),
                ])
                .set(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use dhcp_common::Hook;
    use dhcp_lab::frames::{self, Framing};
    use dhcproto::{Encodable as _, v4};

    use super::*;
    use dhcp_engine::{
        correlate::Release,
        dnsmasq_conf::{DhcpRange, DnsmasqConfig},
        server_identity::ServerIdentity,
    };
    use dhcp_wire::{FrameMeta, decode_frame, test_support};

    use crate::capture::HookCounters;

    /// Drives every metric with every kind of input there is, including hostile ones.
    fn driven() -> Metrics {
        let metrics = Metrics::new("1.2.3", "6.1.0-test");
        let meta = |hook| FrameMeta {
            interface: "guest0".into(),
            hook,
            ..test_support::lo_meta()
        };
        for hook in Hook::ALL {
            // Every option 53 value, and messages without one.
            for code in 0..=255u8 {
                let mut spec =
                    frames::Dhcpv4Spec::new(v4::MessageType::from(code), 1, [2, 0, 0, 0, 0, 1]);
                spec.hostname = Some("host-with-a-name".into());
                let frame = frames::ipv4_udp(
                    &Framing::default(),
                    std::net::Ipv4Addr::new(10, 0, 0, 9),
                    std::net::Ipv4Addr::BROADCAST,
                    (68, 67),
                    &spec.encode(),
                )
                .unwrap();
                metrics.packet(&decode_frame(&frame, meta(hook)));
                // Every DHCPv6 message type code.
                let mut v6 = frames::dhcpv6_solicit(7, &[0, 1, 2, 3]);
                v6[0] = code;
                let frame = frames::ipv6_udp(
                    &Framing::default(),
                    "fe80::1".parse().unwrap(),
                    "ff02::1:2".parse().unwrap(),
                    (546, 547),
                    &v6,
                )
                .unwrap();
                metrics.packet(&decode_frame(&frame, meta(hook)));
            }
            // Plain BOOTP (no option 53), and garbage on port 67.
            let mut bootp = Vec::new();
            let zero = std::net::Ipv4Addr::UNSPECIFIED;
            v4::Message::new(zero, zero, zero, zero, &[2, 0, 0, 0, 0, 1])
                .encode(&mut dhcproto::Encoder::new(&mut bootp))
                .unwrap();
            for payload in [bootp, vec![0xff; 30]] {
                let frame = frames::ipv4_udp(
                    &Framing::default(),
                    std::net::Ipv4Addr::new(10, 0, 0, 9),
                    std::net::Ipv4Addr::BROADCAST,
                    (68, 67),
                    &payload,
                )
                .unwrap();
                metrics.packet(&decode_frame(&frame, meta(hook)));
            }
        }
        let release = Release::from_packet(&test_support::release_packet()).unwrap();
        let causes = [
            Cause::ServerIdMismatch {
                expected: std::net::Ipv4Addr::new(172, 29, 101, 1),
                received: std::net::Ipv4Addr::new(172, 29, 101, 245),
            },
            Cause::MissingServerId,
            Cause::RequestedIpPresent,
            Cause::SubnetNotServed,
            Cause::ClientMismatch,
            Cause::Unknown,
        ];
        let outcomes = causes
            .into_iter()
            .map(Outcome::Dropped)
            .chain([Outcome::Honored, Outcome::NoLease]);
        for outcome in outcomes {
            metrics.release_settled(&Verdict {
                release: release.clone(),
                outcome,
                expected_server_id: None,
                lease: None,
                renewed_since: false,
                in_memory_only: false,
                settled_ns: 0,
            });
        }
        for result in RepairResult::ALL {
            metrics.remediation(result);
        }
        for result in ReloadResult::ALL {
            metrics.lease_file_reload(result, 1e9);
        }
        for event in [
            TransactionEvent::Completed {
                exchange: Exchange::DiscoverAck,
                seconds: 0.5,
            },
            TransactionEvent::Completed {
                exchange: Exchange::RequestAck,
                seconds: 0.01,
            },
            TransactionEvent::Nak {
                interface: "guest0".into(),
                client: vec![2, 0, 0, 0, 0, 1],
                xid: 1,
                at_ns: 0,
            },
            TransactionEvent::Unanswered {
                interface: "guest0".into(),
                client: vec![2, 0, 0, 0, 0, 1],
                xid: 2,
                at_ns: 0,
            },
        ] {
            metrics.transaction(&event);
        }
        metrics.kernel_counters(
            &[HookCounters {
                events: 5,
                lost: 1,
                truncated: 2,
            }; 3],
        );
        for kind in DivergenceKind::ALL {
            metrics.set_divergences(kind, 1);
        }
        metrics.set_releases_pending(2);
        metrics.set_releases_unresolved(1);
        metrics.set_interface_attached("guest0", true);
        for change in [
            InterfaceChange::Gone {
                interface: "guest0".into(),
                index: 3,
                kept: true,
                hooks: Vec::new(),
            },
            InterfaceChange::Failed {
                interface: "guest0".into(),
                index: 4,
                error: "attaching failed".into(),
            },
            InterfaceChange::Reattached {
                interface: "guest0".into(),
                index: 4,
                reports: Vec::new(),
            },
        ] {
            metrics.interface_change(&change);
        }
        let conf = DnsmasqConfig {
            listen_addresses: vec![
                "127.0.0.1".parse().unwrap(),
                "172.29.101.1".parse().unwrap(),
            ],
            ranges: vec![DhcpRange {
                start: "172.29.101.100".parse().unwrap(),
                end: Some("172.29.101.200".parse().unwrap()),
                netmask: Some("255.255.255.0".parse().unwrap()),
            }],
            ..DnsmasqConfig::default()
        };
        let mut identity = ServerIdentity::from_config(&conf, &[]);
        let mut offer = test_support::v4_packet(
            v4::MessageType::Offer,
            1,
            [2, 0, 0, 0, 0, 1],
            0,
            Hook::TcEgress,
        );
        if let Body::V4(m) = &mut offer.body {
            m.server_id = Some(std::net::Ipv4Addr::new(172, 29, 101, 1));
            m.yiaddr = std::net::Ipv4Addr::new(172, 29, 101, 150);
            m.subnet_mask = Some(std::net::Ipv4Addr::new(255, 255, 255, 0));
        }
        identity.observe(&offer);
        let mut table = LeaseTable::default();
        for ip in ["172.29.101.150", "172.29.101.151", "10.9.9.9"] {
            table.insert(dhcp_engine::leases::Lease {
                ip: ip.parse().unwrap(),
                hwaddr: vec![2, 0, 0, 0, 0, 1],
                htype: 1,
                client_id: None,
                hostname: Some("vm".into()),
                expiry: dhcp_engine::leases::Expiry::Never,
                iaid: None,
            });
        }
        metrics.set_leases(&table, &identity.pools());
        metrics.set_server_ids(identity.known());
        // A static pool whose host file declares one of the leases.
        let files = dhcp_engine::dnsmasq_conf::MemoryFiles::default()
            .with(
                "/dnsmasq.conf",
                "dhcp-range=172.29.101.0,static,255.255.255.0\ndhcp-hostsfile=/hosts\n",
            )
            .with("/hosts", "02:00:00:00:00:09,172.29.101.151,vm\n");
        let config = DnsmasqConfig::load(std::path::Path::new("/dnsmasq.conf"), &files).unwrap();
        let mut reconciler = Reconciler::new(Default::default());
        reconciler.set_intent(dhcp_engine::reconcile::Intent {
            hosts: dhcp_engine::declared::DeclaredHosts::load(&config, &files),
            config,
            local: Vec::new(),
        });
        let mut found = Vec::new();
        reconciler.reconcile(&table, 0, &mut found);
        for finding in &found {
            metrics.reconciled(finding);
        }
        metrics.set_reconciliation(&reconciler, &identity.pools());
        metrics.release_origin(Origin::Forged);
        metrics.server_status(&ServerStatus {
            up: true,
            should_serve: true,
            reason: None,
        });
        metrics.rogue(&RogueServer {
            interface: "guest0".into(),
            mac: None,
            ip: None,
            server_id: None,
            message: "OFFER",
            first: true,
        });
        metrics.own_packet();
        metrics
    }

    /// Exported families (name -> label names), `dhcp_` ones only.
    fn exported(metrics: &Metrics) -> BTreeMap<String, BTreeSet<String>> {
        metrics
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name().starts_with("dhcp_"))
            .map(|f| {
                let labels = f
                    .get_metric()
                    .iter()
                    .flat_map(|m| m.get_label().iter().map(|l| l.name().to_owned()))
                    .collect();
                (f.name().to_owned(), labels)
            })
            .collect()
    }

    /// The README's metrics table (name -> label names).
    fn documented() -> BTreeMap<String, BTreeSet<String>> {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("### Metrics\n")
            .nth(1)
            .expect("README has a Metrics section");
        let section = section.split("\n### ").next().unwrap();
        section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix("`dhcp_")?.strip_suffix('`')?;
                let labels = cells
                    .get(3)?
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                Some((format!("dhcp_{name}"), labels))
            })
            .collect()
    }

    #[test]
    fn every_documented_metric_is_exported_with_its_labels_and_no_other() {
        let documented = documented();
        assert!(documented.len() >= 20, "{documented:?}");
        assert_eq!(exported(&driven()), documented);
    }

    #[test]
    fn label_values_come_only_from_fixed_sets() {
        let metrics = driven();
        let families = metrics.registry().gather();
        let message_types: BTreeSet<&str> = V4_MESSAGE_TYPES
            .iter()
            .chain(V6_MESSAGE_TYPES)
            .copied()
            .collect();
        let mut seen_types = BTreeSet::new();
        for family in families.iter().filter(|f| f.name().starts_with("dhcp_")) {
            for metric in family.get_metric() {
                for label in metric.get_label() {
                    let value = label.value();
                    let allowed: Vec<&str> = match (family.name(), label.name()) {
                        (_, "message_type") => {
                            seen_types.insert(value.to_owned());
                            message_types.iter().copied().collect()
                        }
                        (_, "direction") => DIRECTIONS.to_vec(),
                        (_, "protocol") => PROTOCOLS.to_vec(),
                        (_, "hook") => HOOKS.to_vec(),
                        (_, "outcome") => OUTCOMES.to_vec(),
                        (_, "cause") => [CAUSES, CAUSES6].concat(),
                        ("dhcp_remediations_total", "result") => REMEDIATION_RESULTS.to_vec(),
                        ("dhcp_lease_file_reloads_total", "result") => RELOAD_RESULTS.to_vec(),
                        (_, "exchange") => EXCHANGES.to_vec(),
                        ("dhcp_reconcile_findings_total", "kind") => RECONCILE_FINDINGS.to_vec(),
                        (_, "kind") => DIVERGENCE_KINDS.to_vec(),
                        (_, "status") => LEASE_STATUSES.to_vec(),
                        (_, "origin") => ORIGINS.to_vec(),
                        (_, "source") => vec!["observed", "configured"],
                        // What the operator configured or the machine is.
                        (_, "interface") => vec!["guest0", UNKNOWN_INTERFACE],
                        (_, "subnet") => vec!["172.29.101.0/24", OTHER_SUBNET],
                        (_, "server_id") => vec!["172.29.101.1"],
                        (_, "version") => vec!["1.2.3"],
                        (_, "kernel") => vec!["6.1.0-test"],
                        (_, "le") => continue,
                        (family, label) => panic!("{family}: unexpected label {label}"),
                    };
                    assert!(
                        allowed.contains(&value),
                        "{}{{{}={value:?}}} is not in {allowed:?}",
                        family.name(),
                        label.name()
                    );
                }
            }
        }
        // 512 codes of two protocols on three hooks collapse to the fixed sets.
        assert!(
            seen_types.contains("other") && seen_types.contains("bootp"),
            "{seen_types:?}"
        );
        assert!(seen_types.contains("information_request"));
    }

    #[test]
    fn an_interface_that_goes_and_comes_back_is_counted_once_per_return() {
        let metrics = Metrics::new("v", "k");
        metrics.set_interface_attached("guest0", true);
        let gone = InterfaceChange::Gone {
            interface: "guest0".into(),
            index: 3,
            kept: true,
            hooks: Vec::new(),
        };
        metrics.interface_change(&gone);
        let text = metrics.render();
        assert!(
            text.contains("dhcp_interface_attached{interface=\"guest0\"} 0")
                && text.contains("dhcp_interface_reattachments_total{interface=\"guest0\"} 0"),
            "{text}"
        );
        metrics.interface_change(&InterfaceChange::Reattached {
            interface: "guest0".into(),
            index: 4,
            reports: Vec::new(),
        });
        let text = metrics.render();
        assert!(
            text.contains("dhcp_interface_attached{interface=\"guest0\"} 1")
                && text.contains("dhcp_interface_reattachments_total{interface=\"guest0\"} 1"),
            "{text}"
        );
    }

    /// eth3 came with a new tier and goes with it: every series naming it goes, the pool it
    /// served is labelled `unknown`, guest0's series stay; back, it is named again.
    #[test]
    fn an_interface_that_goes_takes_every_series_naming_it_and_no_other() {
        let metrics = Metrics::new("v", "k");
        let mut identity = ServerIdentity::default();
        let mut table = LeaseTable::default();
        for (interface, index, net) in [("guest0", 3, 101), ("eth3", 7, 103)] {
            metrics.interface_change(&InterfaceChange::Attached {
                interface: interface.into(),
                index,
                reports: Vec::new(),
                why: "matches --iface *".into(),
            });
            let mut offer = test_support::v4_packet(
                v4::MessageType::Offer,
                1,
                [2, 0, 0, 0, 0, 1],
                0,
                Hook::TcEgress,
            );
            offer.meta.interface = interface.into();
            if let Body::V4(m) = &mut offer.body {
                m.server_id = Some(std::net::Ipv4Addr::new(172, 29, net, 1));
                m.yiaddr = std::net::Ipv4Addr::new(172, 29, net, 10);
                m.subnet_mask = Some(std::net::Ipv4Addr::new(255, 255, 255, 0));
            }
            metrics.packet(&offer);
            identity.observe(&offer);
            metrics.transaction(&TransactionEvent::Nak {
                interface: interface.into(),
                client: vec![2, 0, 0, 0, 0, 1],
                xid: 1,
                at_ns: 0,
            });
            table.insert(dhcp_engine::leases::Lease {
                ip: std::net::Ipv4Addr::new(172, 29, net, 10).into(),
                hwaddr: vec![2, 0, 0, 0, 0, 1],
                htype: 1,
                client_id: None,
                hostname: None,
                expiry: dhcp_engine::leases::Expiry::Never,
                iaid: None,
            });
        }
        let refresh = || {
            metrics.set_leases(&table, &identity.pools());
            metrics.set_server_ids(identity.known());
            metrics.render()
        };
        let text = refresh();
        assert!(text.contains("interface=\"eth3\""), "{text}");
        let guest0 = text.matches("interface=\"guest0\"").count();
        metrics.interface_change(&InterfaceChange::Gone {
            interface: "eth3".into(),
            index: 7,
            kept: false,
            hooks: Vec::new(),
        });
        for text in [metrics.render(), refresh()] {
            assert!(!text.contains("eth3"), "{text}");
            assert_eq!(
                text.matches("interface=\"guest0\"").count(),
                guest0,
                "{text}"
            );
        }
        let text = refresh();
        assert!(
            text.contains("dhcp_leases{interface=\"unknown\",subnet=\"172.29.103.0/24\"} 1"),
            "{text}"
        );
        metrics.interface_change(&InterfaceChange::Reattached {
            interface: "eth3".into(),
            index: 9,
            reports: Vec::new(),
        });
        let text = refresh();
        assert!(
            text.contains("dhcp_leases{interface=\"eth3\",subnet=\"172.29.103.0/24\"} 1")
                && text.contains("dhcp_interface_attached{interface=\"eth3\"} 1")
                && text.contains("dhcp_interface_reattachments_total{interface=\"eth3\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn kernel_counters_are_added_as_deltas() {
        let metrics = Metrics::new("v", "k");
        let at = |events| {
            [HookCounters {
                events,
                lost: 0,
                truncated: 0,
            }; 3]
        };
        metrics.kernel_counters(&at(5));
        metrics.kernel_counters(&at(5));
        metrics.kernel_counters(&at(12));
        let text = metrics.render();
        assert!(
            text.contains("dhcp_capture_events_total{hook=\"xdp_ingress\"} 12"),
            "{text}"
        );
    }
}
