//! The agent's pipeline: what `dhcp-agent run` does with every event the kernel hands it
//! (decode, metrics, exchange tracking, server identity, release correlation against the lease
//! table), measured on recorded events, on one thread.
//!
//! The work measured is [`dhcp_agent::pipeline::Pipeline::on_batch`], the very function the
//! daemon's event loop calls (without `--pcap`, the daemon's default). The events are
//! [`RawEvent`]s as the ring-buffer reader produces them, built from `dhcp_lab::traffic`'s
//! conversations: many clients going through DISCOVER, OFFER, REQUEST, ACK, one in four then
//! releasing its lease; client frames as seen by XDP on ingress, server frames by TC on egress,
//! 10 µs apart. The lease table holds 100,000 leases, those of every client, so each RELEASE
//! is looked up for real; the dnsmasq configuration serves the clients' subnet.
//!
//! What lives as long as the daemon (interface names, metrics, server identity, lease table)
//! carries over from one iteration to the next; what depends on the events seen (exchanges
//! being tracked, pending releases) starts afresh each iteration, outside the timing, so every
//! iteration replays the same traffic into the same state.
//!
//! Benchmark id (group `pipeline`; `cargo xtask bench` reads it, keep it stable):
//! * `decode_correlate`: one iteration handles all [`EVENTS`] events
//!   (`Throughput::Elements`).
//!
//! With `DHCP_BENCH_REPORT=<file>` the counts of what one iteration handled are written there as
//! JSON for `cargo xtask bench`'s checks.
mod common;

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use dhcp_agent::{
    capture::RawEvent, metrics::Metrics, pipeline::Pipeline, service::InterfaceNames,
    system::BootClock,
};
use dhcp_common::Hook;
use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    leases::{Expiry, Lease, LeaseTable},
    observer::{LeaseFileRead, Now},
};
use dhcp_lab::traffic::{self, Sender};
use dhcproto::v4::MessageType;

/// Events per iteration.
const EVENTS: usize = 100_000;
/// Leases in the table.
const LEASES: u32 = 100_000;
/// The loopback device: an interface index that resolves on every machine.
const IFINDEX: u32 = 1;

/// The recorded events and how many of them are RELEASEs.
fn recorded_events() -> (Vec<RawEvent>, usize) {
    let frames = traffic::conversation_frames(EVENTS);
    let releases = frames
        .iter()
        .filter(|f| f.message_type == MessageType::Release)
        .count();
    let start_ns = 1_000 * 1_000_000_000_u64; // 1,000 s after boot
    let events = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| RawEvent {
            boot_ns: start_ns + i as u64 * 10_000,
            ifindex: IFINDEX,
            wire_len: f.bytes.len() as u32,
            hook: match f.sender {
                Sender::Client => Hook::XdpIngress,
                Sender::Server => Hook::TcEgress,
            },
            vlan: None,
            vlan_inner: None,
            vlan_offloaded: false,
            truncated: false,
            frame: f.bytes,
        })
        .collect();
    (events, releases)
}

/// Every client's lease, as dnsmasq lists them.
fn lease_table() -> LeaseTable {
    let mut table = LeaseTable::default();
    for k in 0..LEASES {
        table.insert(Lease {
            ip: traffic::client_ip(k).into(),
            hwaddr: traffic::client_mac(k).to_vec(),
            htype: 1,
            client_id: None,
            hostname: Some(format!("vm-{k}")),
            expiry: Expiry::At(4_000_000_000),
            iaid: None,
        });
    }
    table
}

/// What one iteration starts from: the daemon's observer with the lease table read, no
/// exchange tracked, no release pending (and a findings buffer with room, as the daemon's).
fn fresh_state(table: &LeaseTable) -> (Observer, Vec<Finding>) {
    let config = ObserverConfig {
        grace: Duration::from_secs(2),
        discover_timeout: Duration::from_secs(5),
        ..ObserverConfig::default()
    };
    let mut observer = Observer::new(config, common::identity());
    let mut findings = Vec::with_capacity(1024);
    let now = Now {
        unix_ns: 0,
        mono: std::time::Instant::now(),
    };
    observer.on_lease_file(LeaseFileRead::Table(table.clone()), now, &mut findings);
    findings.clear();
    (observer, findings)
}

fn pipeline(c: &mut Criterion) {
    let (events, releases) = recorded_events();
    let table = lease_table();
    let mut names = InterfaceNames::default();
    let metrics = Metrics::new("bench", "bench");
    let clock = BootClock::new();

    // One pass first, checked: every RELEASE opened a pending record, none settled (their
    // leases are all still in the table and the grace period has not passed).
    let (mut observer, mut findings) = fresh_state(&table);
    let outcome = Pipeline {
        clock,
        names: &mut names,
        pcap: None,
        metrics: &metrics,
        observer: &mut observer,
    }
    .on_batch(&events, &mut findings)
    .expect("the pipeline handles the events");
    assert_eq!(outcome.releases, releases, "every RELEASE seen");
    assert_eq!(observer.pending(), releases, "one pending record each");
    assert!(
        findings.is_empty(),
        "nothing settles in the grace: {:?}",
        findings.first()
    );
    assert!(observer.exchanges_tracked() > 0, "exchanges tracked");
    if let Some(path) = std::env::var_os("DHCP_BENCH_REPORT") {
        let report = serde_json::json!({
            "events": events.len(),
            "releases": outcome.releases,
            "pending": observer.pending(),
            "leases": table.v4.len(),
        });
        std::fs::write(path, report.to_string()).expect("writing the report");
    }

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(events.len() as u64));
    // One iteration takes tens of milliseconds: equal-sized samples of few iterations.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("decode_correlate", |b| {
        b.iter_batched_ref(
            || fresh_state(&table),
            |(observer, findings)| {
                Pipeline {
                    clock,
                    names: &mut names,
                    pcap: None,
                    metrics: &metrics,
                    observer,
                }
                .on_batch(&events, findings)
                .expect("the pipeline handles the events")
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    pipeline(&mut criterion);
    criterion.final_summary();
}
