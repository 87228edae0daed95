//! The lease table: reading a dnsmasq lease file of 100,000 leases, and what the daemon does on
//! every reload of it.
//!
//! The files are written in a temporary directory the way dnsmasq writes them
//! (`expiry mac ip hostname client-id`, `*` for none; half the clients send a client id, one in
//! ten no hostname). The second file is the first with 1% of the leases changed: 0.5% gone
//! (released) and 0.5% renewed (new expiry).
//!
//! Benchmark ids (group `leases`; `cargo xtask bench` reads them, keep them stable):
//! * `parse`: `follow::read_table` (read + parse) of the 100,000-lease file, as every reload
//!   does;
//! * `parse_diff`: a whole reload as `dhcp-agent run` does it: `read_table` of the changed file,
//!   then `Outstanding::refresh` (100 dropped releases outstanding, on renewed leases) and
//!   `Correlator::on_table` against the previous table (which finds the removed leases and
//!   settles the 500 releases pending on them as honored).
//!
//! * `reconcile`: `Reconciler::reconcile` of a CloudStack VPC router at its `dhcp-lease-max`
//!   (2,100 leases in a static-only range) against its 2,100 host lines, 2,000 of which declare
//!   a leased client (the other 100 leases are orphans, the other 100 host lines blocked by
//!   them), as every reload of the lease or host files does.
//!
//! The tables returned are dropped outside the timing; the state a reload starts from (the
//! correlator having seen the previous table and the pending releases, the outstanding list)
//! is rebuilt before each iteration, outside the timing.
//!
//! With `DHCP_BENCH_REPORT=<file>` the counts of a checked reload are written there as JSON for
//! `cargo xtask bench`'s checks.
mod common;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use criterion::{BatchSize, Criterion, SamplingMode};
use dhcp_agent::leases::{LoadError, read_table};
use dhcp_engine::{
    correlate::{Correlator, NO_BACKLOG, Outcome, Release, Verdict},
    declared::DeclaredHosts,
    dnsmasq_conf::{DnsmasqConfig, MemoryFiles},
    leases::{Expiry, Lease, LeaseTable, dnsmasq::Dnsmasq},
    outstanding::{Outstanding, OutstandingRelease},
    reconcile::{Intent, ReconcileConfig, Reconciler},
    server_identity::ServerIdentity,
};
use dhcp_lab::traffic::{client_ip, dnsmasq_lease_line};

const LEASES: u32 = 100_000;
const SECOND: i128 = 1_000_000_000;
/// When the previous table was read (Unix ns); the reload comes a second later.
const T0: i128 = 1_750_000_000 * SECOND;

/// What became of lease `k` in the second file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    /// Released: gone from the file.
    Gone,
    /// Renewed: a new expiry.
    Renewed,
}

fn change(k: u32) -> Change {
    match k % 200 {
        0 => Change::Gone,
        100 => Change::Renewed,
        _ => Change::Same,
    }
}

/// A dnsmasq lease file; `changed` applies [`change`].
fn lease_file(changed: bool) -> String {
    let mut text = String::with_capacity(LEASES as usize * 72);
    for k in 0..LEASES {
        let mut expiry = 1_750_000_000 + u64::from(k % 3_600);
        if changed {
            match change(k) {
                Change::Gone => continue,
                Change::Renewed => expiry += 3_600,
                Change::Same => {}
            }
        }
        let _ = writeln!(text, "{}", dnsmasq_lease_line(k, expiry));
    }
    text
}

/// The daemon's state just before the reload: the correlator has seen the previous table and
/// the RELEASEs of the leases about to go; 100 dropped releases are outstanding.
fn before_reload(previous: &LeaseTable, identity: &ServerIdentity) -> (Correlator, Outstanding) {
    let mut correlator = Correlator::new(2 * SECOND);
    correlator.on_table(&LeaseTable::default(), previous, T0, identity, NO_BACKLOG);
    let mut outstanding = Vec::new();
    for k in 0..LEASES {
        let lease = previous.get_v4(client_ip(k)).expect("every lease listed");
        // The client's RELEASE of its lease, with `server_id` in option 54.
        let release = |server_id| Release {
            seen_ns: T0,
            interface: "guest0".into(),
            xid: k,
            ciaddr: client_ip(k),
            chaddr: lease.hwaddr.clone(),
            client_id: lease.client_id.clone(),
            server_id: Some(server_id),
            requested_ip: None,
            origin: dhcp_engine::provenance::Origin::Guest,
            sender: None,
        };
        match change(k) {
            Change::Gone => {
                let settled =
                    correlator.on_release(release(dhcp_lab::VIP_ADDR), previous, identity);
                assert!(settled.is_none(), "pending until the lease goes");
            }
            Change::Renewed if outstanding.len() < 100 => {
                let verdict = Verdict {
                    release: release(dhcp_lab::PRIMARY_ADDR),
                    outcome: Outcome::Dropped(dhcp_engine::correlate::Cause::Unknown),
                    expected_server_id: Some(dhcp_lab::VIP_ADDR),
                    lease: Some(lease.clone()),
                    renewed_since: false,
                    in_memory_only: false,
                    settled_ns: T0,
                };
                outstanding.extend(OutstandingRelease::from_verdict(&verdict));
            }
            _ => {}
        }
    }
    (correlator, Outstanding::from_saved(outstanding))
}

/// A reload as the daemon's lease-file arm does it.
fn reload(
    path: &Path,
    previous: &LeaseTable,
    correlator: &mut Correlator,
    outstanding: &mut Outstanding,
    identity: &ServerIdentity,
) -> (LeaseTable, Vec<Verdict>) {
    let table = read_table(path, &Dnsmasq).expect("the lease file parses");
    outstanding.refresh(&table);
    let verdicts = correlator.on_table(previous, &table, T0 + SECOND, identity, NO_BACKLOG);
    (table, verdicts)
}

struct Files {
    dir: PathBuf,
    previous: PathBuf,
    current: PathBuf,
}

impl Files {
    fn write() -> Files {
        let dir = std::env::temp_dir().join(format!("dhcp-bench-leases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the temporary directory");
        let (previous, current) = (dir.join("previous.leases"), dir.join("dnsmasq.leases"));
        std::fs::write(&previous, lease_file(false)).expect("writing the lease file");
        std::fs::write(&current, lease_file(true)).expect("writing the lease file");
        Files {
            dir,
            previous,
            current,
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn leases(c: &mut Criterion) {
    let files = Files::write();
    let identity = common::identity();
    let previous = read_table(&files.previous, &Dnsmasq).expect("the lease file parses");
    assert_eq!(previous.v4.len(), LEASES as usize);

    // One reload first, checked.
    let gone = (0..LEASES).filter(|&k| change(k) == Change::Gone).count();
    let (mut correlator, mut outstanding) = before_reload(&previous, &identity);
    assert_eq!(correlator.pending(), gone);
    assert_eq!(outstanding.len(), 100);
    let (table, verdicts) = reload(
        &files.current,
        &previous,
        &mut correlator,
        &mut outstanding,
        &identity,
    );
    assert_eq!(
        table.v4.len(),
        LEASES as usize - gone,
        "the changed file's leases"
    );
    assert_eq!(verdicts.len(), gone, "every pending release settled");
    assert!(
        verdicts.iter().all(|v| v.outcome == Outcome::Honored),
        "honored: the lease went"
    );
    assert_eq!(
        outstanding.len(),
        0,
        "renewed leases end outstanding releases"
    );
    assert_eq!(correlator.recently_removed().count(), gone);
    if let Some(path) = std::env::var_os("DHCP_BENCH_REPORT") {
        let bytes = std::fs::metadata(&files.current).map_or(0, |m| m.len());
        let report = serde_json::json!({
            "leases": previous.v4.len(),
            "file_bytes": bytes,
            "changed": (0..LEASES).filter(|&k| change(k) != Change::Same).count(),
            "after_reload": table.v4.len(),
            "honored": verdicts.len(),
        });
        std::fs::write(path, report.to_string()).expect("writing the report");
    }
    drop((table, verdicts));

    let mut group = c.benchmark_group("leases");
    // One iteration takes milliseconds: equal-sized samples of few iterations.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("parse", |b| {
        b.iter_with_large_drop(|| -> Result<LeaseTable, LoadError> {
            read_table(&files.current, &Dnsmasq)
        });
    });
    group.bench_function("parse_diff", |b| {
        b.iter_batched_ref(
            || before_reload(&previous, &identity),
            |(correlator, outstanding)| {
                reload(
                    &files.current,
                    &previous,
                    correlator,
                    outstanding,
                    &identity,
                )
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// CloudStack's `dhcp-lease-max`.
const ROUTER_LEASES: u32 = 2_100;

/// A VPC router at its lease limit: the table, and the declared hosts where the last 100
/// leases' clients have been replaced by new VMs' (orphans blocking them).
fn router_at_lease_max() -> (LeaseTable, Intent) {
    let ip = |k: u32| std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 1, 0, 0)) + k);
    let mac = |k: u32, new: bool| {
        let [_, _, a, b] = k.to_be_bytes();
        [0x02, u8::from(new), 0, 0, a, b]
    };
    let hex = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    let mut hosts = String::new();
    let mut table = LeaseTable::default();
    for k in 0..ROUTER_LEASES {
        let expunged = k >= ROUTER_LEASES - 100;
        let _ = writeln!(hosts, "{},{},vm-{k},infinite", hex(mac(k, expunged)), ip(k));
        table.insert(Lease {
            ip: ip(k).into(),
            hwaddr: mac(k, false).to_vec(),
            htype: 1,
            client_id: None,
            hostname: Some(format!("vm-{k}")),
            expiry: Expiry::Never,
            iaid: None,
        });
    }
    let files = MemoryFiles::default()
        .with(
            "/etc/dnsmasq.conf",
            "dhcp-hostsfile=/etc/dhcphosts.txt\nlisten-address=127.0.0.1,10.1.0.1\n\
             dhcp-range=set:interface-eth2-0,10.1.0.1,static,255.255.0.0\n",
        )
        .with("/etc/dhcphosts.txt", hosts);
    let config = DnsmasqConfig::load(Path::new("/etc/dnsmasq.conf"), &files).expect("config");
    let intent = Intent {
        hosts: DeclaredHosts::load(&config, &files),
        config,
        local: Vec::new(),
    };
    (table, intent)
}

fn reconcile(c: &mut Criterion) {
    let (table, intent) = router_at_lease_max();
    let mut reconciler = Reconciler::new(ReconcileConfig::default());
    reconciler.set_intent(intent);
    let mut found = Vec::new();
    reconciler.reconcile(&table, T0, &mut found);
    let counts = reconciler.counts();
    assert_eq!((counts.orphans, counts.blocked), (100, 100), "{counts:?}");
    assert_eq!(counts.declared_leased, ROUTER_LEASES as usize - 100);
    let mut group = c.benchmark_group("leases");
    group.bench_function("reconcile", |b| {
        b.iter(|| {
            found.clear();
            reconciler.reconcile(&table, T0, &mut found);
            found.len()
        });
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    leases(&mut criterion);
    reconcile(&mut criterion);
    criterion.final_summary();
}
