//! Prometheus metrics of `dhcp-agent run`, served by [`http`].
//!
//! Conventions: counters end in `_total` and only go up (kernel counters are added as deltas),
//! units are in names (`_seconds`), and every label value comes from a fixed set below or from
//! something the operator configured (interfaces, subnets, server ids): never a MAC, an address
//! of a client or a hostname, so a router with thousands of clients exports the same series as
//! one with ten.
pub mod http;

use std::sync::Mutex;

use dhcp_common::Hook;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{
    capture::HookCounters,
    correlate::{Outcome, Verdict},
    decode::{Body, Packet},
    leases::LeaseTable,
    remediate::RepairResult,
    server_identity::{KnownServer, Pool},
    transactions::{Exchange, TransactionEvent},
};

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
pub const OUTCOMES: &[&str] = &["honored", "dropped", "no_lease"];
pub const CAUSES: &[&str] = &[
    "server_id_mismatch",
    "missing_server_id",
    "requested_ip_present",
    "subnet_not_served",
    "client_mismatch",
    "unknown",
];
pub const REMEDIATION_RESULTS: &[&str] = &["remediated", "failed", "dry_run", "rate_limited"];
pub const RELOAD_RESULTS: &[&str] = &["ok", "missing", "unreadable", "invalid"];
pub const EXCHANGES: &[&str] = &["discover_ack", "request_ack"];
pub const DIVERGENCE_KINDS: &[&str] = &[crate::run::SERVER_HOLDS, crate::run::FILE_LISTS];
/// The `subnet` label of leases outside every known pool.
pub const OTHER_SUBNET: &str = "other";
/// The `interface` label when the interface of a pool is not known yet.
pub const UNKNOWN_INTERFACE: &str = "unknown";

/// `value` if it is in `set`, else `other` (which every open-ended set has): a label value can
/// never come from anywhere but the set.
fn fixed(set: &[&'static str], value: &str) -> &'static str {
    set.iter().copied().find(|v| *v == value).unwrap_or("other")
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
    /// Kernel counters as last added, to add only what is new.
    kernel_seen: Mutex<Vec<HookCounters>>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
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
        let simple_gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
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
                "RELEASEs settled, by outcome: honored, dropped by the server, or for no lease.",
                &["outcome"],
            ),
            releases_dropped: counter(
                r,
                "dhcp_releases_dropped_total",
                "RELEASEs the server dropped, by cause.",
                &["cause"],
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
                "Repairs of dropped releases, by result.",
                &["result"],
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
                let metric = HistogramVec::new(opts, &["exchange"]).expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric");
                metric
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
            lease_file_last_reload: {
                let metric = Gauge::new(
                    "dhcp_lease_file_last_reload_timestamp_seconds",
                    "When the lease file was last read successfully, Unix time.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric");
                metric
            },
            kernel_seen: Mutex::new(vec![HookCounters::default(); HOOKS.len()]),
            registry,
        };
        for (metric, set) in [
            (&metrics.capture_events, HOOKS),
            (&metrics.capture_lost, HOOKS),
            (&metrics.capture_truncated, HOOKS),
            (&metrics.releases, OUTCOMES),
            (&metrics.releases_dropped, CAUSES),
            (&metrics.remediations, REMEDIATION_RESULTS),
            (&metrics.lease_file_reloads, RELOAD_RESULTS),
        ] {
            zero(metric, set);
        }
        for kind in DIVERGENCE_KINDS {
            metrics.divergences.with_label_values(&[kind]).set(0);
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            metrics
                .registry
                .register(Box::new(process))
                .expect("unique metric");
        }
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
                fixed(V4_MESSAGE_TYPES, &m.type_name().to_ascii_lowercase()),
            ),
            Body::V6(m) => (
                "dhcpv6",
                fixed(
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
        self.releases
            .with_label_values(&[fixed(OUTCOMES, verdict.outcome.name())])
            .inc();
        if let Outcome::Dropped(cause) = &verdict.outcome {
            self.releases_dropped
                .with_label_values(&[fixed(CAUSES, cause.name())])
                .inc();
        }
    }

    pub fn remediation(&self, result: RepairResult) {
        self.remediations
            .with_label_values(&[fixed(REMEDIATION_RESULTS, result.name())])
            .inc();
    }

    pub fn set_releases_pending(&self, pending: usize) {
        self.releases_pending.set(pending as i64);
    }

    pub fn set_releases_unresolved(&self, unresolved: usize) {
        self.releases_unresolved.set(unresolved as i64);
    }

    pub fn set_divergences(&self, kind: &str, count: usize) {
        self.divergences
            .with_label_values(&[fixed(DIVERGENCE_KINDS, kind)])
            .set(count as i64);
    }

    /// One read of the lease file: `result` is one of [`RELOAD_RESULTS`].
    pub fn lease_file_reload(&self, result: &str, unix_seconds: f64) {
        let result = fixed(RELOAD_RESULTS, result);
        self.lease_file_reloads.with_label_values(&[result]).inc();
        if result == "ok" {
            self.lease_file_last_reload.set(unix_seconds);
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
            TransactionEvent::Nak { interface } => {
                self.naks.with_label_values(&[interface]).inc();
            }
            TransactionEvent::Unanswered { interface } => {
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
        let interface = |pool: &Pool| {
            pool.interface
                .clone()
                .unwrap_or_else(|| UNKNOWN_INTERFACE.into())
        };
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
            let interface = k.interface.as_deref().unwrap_or(UNKNOWN_INTERFACE);
            self.server_id_info
                .with_label_values(&[
                    interface,
                    &k.subnet.to_string(),
                    &k.server_id.to_string(),
                    k.source.name(),
                ])
                .set(1);
        }
    }
}
