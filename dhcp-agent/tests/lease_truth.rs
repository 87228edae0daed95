//! Lease truth on the routers as their projects really build them (the CloudStack VPC router
//! and the Neutron DHCP namespace of `dhcp-lab`, real dnsmasq, dhclient and `dhcp_release`),
//! with the agent running in the router namespace. What is proven:
//!
//! - a CloudStack expunge on a redundant MASTER (its `dhcp_release` carries the primary address,
//!   dnsmasq ignores it) is reported as a dropped router release and repaired exactly once,
//!   whatever found it first (the dropped release or the orphan lease), and the next VM deployed
//!   on the address gets it; the live VM beside it is never touched;
//! - an expunge on the BACKUP (dnsmasq stopped, the release reaches no server) is one dropped
//!   release with cause `no_server`, nothing is repaired while the server is down (the old
//!   repair loop sent dozens), and the lease is released once, after the failover;
//! - expunges while the agent was down leave orphans, found at start and released, each once,
//!   and the declared VM is never flagged;
//! - Neutron's port deletes are honored and nothing is flagged, repaired or called an orphan;
//! - a RELEASE forged from another guest's Ethernet address never costs the victim its lease;
//! - a rogue server's OFFER on the guest network is reported once per sender, and counted.
//!
//! Every event is counted exactly, after waiting long enough for a duplicate to show.
mod common;

use std::{
    net::Ipv4Addr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use common::{Agent, Want, s, sample, scrape_in};
use dhcp_lab::{
    Netns, VM_IFACE, VmHandle,
    cloudstack::{CloudStackConfig, CloudStackRouter},
    frames::{Dhcpv4Spec, Framing, MessageType, ipv4_udp, send_frames},
    neutron::NeutronDhcp,
    wait_for,
};
use serde_json::Value;

const VM_A: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0a", Ipv4Addr::new(172, 29, 102, 10), "vm-a");
const VM_B: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0b", Ipv4Addr::new(172, 29, 102, 11), "vm-b");
const VM_C: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0c", Ipv4Addr::new(172, 29, 102, 12), "vm-c");
const VM_D: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0d", Ipv4Addr::new(172, 29, 102, 13), "vm-d");
/// The next VM on an expunged VM's address: a new MAC.
const NEXT_MAC: &str = "52:54:00:66:00:1a";

/// How long a test waits for something the agent should report.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The agent in a router namespace.

/// `dhcp-agent run --json` over `iface` and `lo`, a 1 s grace, metrics at the default address
/// (inside `ns`: each lab's router namespace has its own loopback, so agents never collide),
/// dnsmasq's configuration given by `conf` (`--dnsmasq-conf FILE` or `--dnsmasq-pid-file FILE`).
fn start_agent(
    ns: &Netns,
    iface: &str,
    leases: &Path,
    conf: (&str, &Path),
    state: &Path,
    extra: &[&str],
) -> Agent {
    let mut args: Vec<String> = ["run", "--json", "--iface", iface, "--iface", "lo"]
        .map(str::to_owned)
        .into();
    args.extend(["--grace".into(), "1s".into()]);
    args.extend(["--leases".into(), leases.display().to_string()]);
    args.extend([conf.0.to_owned(), conf.1.display().to_string()]);
    args.extend(["--state-file".into(), state.display().to_string()]);
    args.extend(["--metrics-addr".into(), "127.0.0.1:9967".into()]);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Agent::start(ns, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The agent on a CloudStack VR: eth2, the lease file, /etc/dnsmasq.conf.
fn cloudstack_agent(vr: &CloudStackRouter, extra: &[&str]) -> Agent {
    start_agent(
        &vr.router,
        vr.guest_iface(),
        &vr.lease_file(),
        ("--dnsmasq-conf", &vr.conf_file()),
        &vr.dir.join("state.json"),
        extra,
    )
}

/// The agent in a Neutron qdhcp namespace: the tap, the lease file, dnsmasq's command line.
fn neutron_agent(q: &NeutronDhcp, extra: &[&str]) -> Agent {
    start_agent(
        &q.ns,
        q.tap(),
        &q.lease_file(),
        ("--dnsmasq-pid-file", &q.pid_file()),
        &q.dir.join("state.json"),
        extra,
    )
}

/// What a failure message shows: every event, the agent's stderr, the server's log.
fn report(agent: &Agent, server_log: &str) -> String {
    format!(
        "\n--- agent events:\n{}\n--- agent stderr:\n{}\n--- dnsmasq log:\n{server_log}",
        agent.lines().join("\n"),
        agent.stderr_text()
    )
}

/// With `LEASE_TRUTH_DUMP` set, prints the whole story of a passing test too (`--nocapture`).
fn dump(agent: &Agent, server_log: &str) {
    if std::env::var_os("LEASE_TRUTH_DUMP").is_some() {
        eprintln!("{}", report(agent, server_log));
    }
}

/// The records of event `kind` so far.
fn events(agent: &Agent, kind: &str) -> Vec<Value> {
    agent
        .records()
        .into_iter()
        .filter(|r| s(r, "event") == kind)
        .collect()
}

/// The records of event `kind` about address `ip`.
fn events_for(agent: &Agent, kind: &str, ip: Ipv4Addr) -> Vec<Value> {
    let ip = ip.to_string();
    events(agent, kind)
        .into_iter()
        .filter(|r| s(r, "ip") == ip)
        .collect()
}

/// Waits until there are `n` records of event `kind` about `ip`; fails with the whole story.
fn wait_events(
    agent: &Agent,
    kind: &str,
    ip: Ipv4Addr,
    n: usize,
    server_log: &dyn Fn() -> String,
) -> Vec<Value> {
    let _ = wait_for(WAIT, || events_for(agent, kind, ip).len() >= n);
    let found = events_for(agent, kind, ip);
    assert!(
        found.len() >= n,
        "want {n} {kind} events for {ip} within {WAIT:?}, got {}{}",
        found.len(),
        report(agent, &server_log())
    );
    found
}

/// Waits until every expected sample of the agent's metrics (in `ns`) is in its range.
fn wait_metrics(ns: &Netns, agent: &Agent, expected: &[Want], server_log: &dyn Fn() -> String) {
    let good = |text: &str, (name, labels, range): &Want| {
        sample(text, name, labels).is_some_and(|v| range.contains(&v))
    };
    let mut last = String::new();
    let done = wait_for(WAIT, || {
        last = scrape_in(ns);
        expected.iter().all(|want| good(&last, want))
    });
    if done.is_err() {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|want| !good(&last, want))
            .map(|(name, labels, range)| {
                format!(
                    "{name}{labels:?}: want {range:?}, got {:?}",
                    sample(&last, name, labels)
                )
            })
            .collect();
        let dhcp: Vec<&str> = last.lines().filter(|l| l.starts_with("dhcp_")).collect();
        panic!(
            "{}\n--- scrape (dhcp_):\n{}{}",
            wrong.join("\n"),
            dhcp.join("\n"),
            report(agent, &server_log())
        );
    }
}

/// (outcome, cause, origin) of a release event.
fn judged(record: &Value) -> (&str, &str, &str) {
    (
        s(record, "outcome"),
        s(record, "cause"),
        s(record, "origin"),
    )
}

/// Waits until `cond` holds (dnsmasq lets a lease go, a file is rewritten).
fn eventually(
    what: &str,
    cond: impl FnMut() -> bool,
    agent: &Agent,
    server_log: &dyn Fn() -> String,
) {
    assert!(
        wait_for(WAIT, cond).is_ok(),
        "{what} did not happen within {WAIT:?}{}",
        report(agent, &server_log())
    );
}

/// Deploys and boots a CloudStack VM; returns it once dhclient has its address.
fn deploy_and_boot(vr: &mut CloudStackRouter, (mac, ip, name): (&str, Ipv4Addr, &str)) -> VmHandle {
    let vm = vr.deploy_vm(mac, ip, name).expect("deploy");
    let got = vr
        .boot(&vm)
        .unwrap_or_else(|e| panic!("{name} did not boot: {e:#}\n{}", vr.dnsmasq_log()));
    assert_eq!(got, ip, "{name}'s address\n{}", vr.dnsmasq_log());
    vm
}

/// A MAC in the `aa:bb:...` form as bytes.
fn mac_bytes(mac: &str) -> [u8; 6] {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("six bytes")
}

/// Prints how long the test took (`--nocapture`), to keep the file's runtime in view.
struct Timed(&'static str, Instant);

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!("{}: {:.1}s", self.0, self.1.elapsed().as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// CloudStack.

#[test]
fn cloudstack_expunge_on_the_master_is_repaired_and_the_next_vm_gets_the_address() {
    let _t = Timed("expunge on the master", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: true }).expect("VR");
    let agent = cloudstack_agent(&vr, &["--remediate", "--orphan-settle", "2s"]);
    let a = deploy_and_boot(&mut vr, VM_A);
    let b = deploy_and_boot(&mut vr, VM_B);
    let log = || vr.dnsmasq_log();
    wait_metrics(
        &vr.router,
        &agent,
        &[(
            "dhcp_leases_by_status",
            &[("status", "declared")],
            2.0..=2.0,
        )],
        &log,
    );

    vr.expunge(&a).expect("expunge A");
    let log = || vr.dnsmasq_log();
    let release = wait_events(&agent, "release", a.ip, 1, &log).remove(0);
    assert_eq!(
        judged(&release),
        ("dropped", "server_id_mismatch", "router"),
        "{release}{}",
        report(&agent, &log())
    );
    assert_eq!(s(&release, "received_server_id"), vr.primary().to_string());
    assert_eq!(
        s(&release, "expected_server_id"),
        vr.server_id().to_string()
    );

    let repair = wait_events(&agent, "remediation", a.ip, 1, &log).remove(0);
    assert_eq!(
        s(&repair, "result"),
        "remediated",
        "{repair}{}",
        report(&agent, &log())
    );
    assert!(
        ["router_release", "orphan"].contains(&s(&repair, "basis")),
        "{repair}"
    );
    assert_eq!(s(&repair, "mac"), a.mac(), "{repair}");
    assert_eq!(
        s(&repair, "server_id"),
        vr.server_id().to_string(),
        "{repair}"
    );
    assert!(
        !vr.dnsmasq_holds(a.ip),
        "repaired: dnsmasq let it go{}",
        report(&agent, &log())
    );
    eventually(
        "A's lease leaving the file",
        || !vr.lease_file_has(a.ip),
        &agent,
        &log,
    );

    // The next VM on A's address, deployed later than the orphan settle time after the last
    // change of the host files (as addresses are reused in production: hours later): a new
    // MAC, the same fixed address; it gets it. CloudStack writes its host line first, then
    // seeds its lease: it is declared from the start and must never look like an orphan.
    thread::sleep(Duration::from_secs(3));
    let c = vr
        .deploy_vm(NEXT_MAC, a.ip, "vm-next")
        .expect("deploy the next VM");
    let got = vr.boot(&c);
    let log = || vr.dnsmasq_log();
    assert_eq!(
        got.as_ref().ok(),
        Some(&a.ip),
        "the next VM's address: {got:?}{}",
        report(&agent, &log())
    );

    // Past another settle time and a liveness probe: nothing more is repaired or flagged.
    thread::sleep(Duration::from_secs(4));
    let all = |kind| events(&agent, kind);
    assert!(
        events_for(&agent, "remediation", c.ip)
            .iter()
            .all(|r| s(r, "mac") != NEXT_MAC),
        "the agent released the next VM's lease: its host line is there{}",
        report(&agent, &log())
    );
    let next_orphan: Vec<Value> = all("orphan")
        .into_iter()
        .filter(|r| s(r, "mac") == NEXT_MAC)
        .collect();
    assert!(
        next_orphan.is_empty(),
        "the next VM is declared (its host line is written before its lease is seeded), never \
         an orphan: {next_orphan:?}{}",
        report(&agent, &log())
    );
    assert!(
        vr.dnsmasq_holds(c.ip) && vr.lease_file_has(c.ip),
        "the next VM keeps its lease{}",
        report(&agent, &log())
    );
    assert_eq!(
        all("remediation").len(),
        1,
        "one repair in all{}",
        report(&agent, &log())
    );
    assert_eq!(
        all("release").len(),
        1,
        "the expunge's release only{}",
        report(&agent, &log())
    );
    assert!(all("blocked_host").is_empty(), "{}", report(&agent, &log()));
    for kind in ["release", "remediation", "orphan"] {
        assert!(
            events_for(&agent, kind, b.ip).is_empty(),
            "B is live and declared: no {kind}{}",
            report(&agent, &log())
        );
    }
    assert!(
        vr.dnsmasq_holds(b.ip) && vr.lease_file_has(b.ip),
        "B untouched"
    );
    wait_metrics(
        &vr.router,
        &agent,
        &[
            (
                "dhcp_remediations_total",
                &[("result", "remediated")],
                1.0..=1.0,
            ),
            (
                "dhcp_remediations_total",
                &[("result", "failed")],
                0.0..=0.0,
            ),
            (
                "dhcp_releases_dropped_total",
                &[("cause", "server_id_mismatch")],
                1.0..=1.0,
            ),
            (
                "dhcp_release_origins_total",
                &[("origin", "router")],
                1.0..=1.0,
            ),
            (
                "dhcp_leases_by_status",
                &[("status", "declared")],
                2.0..=2.0,
            ),
            ("dhcp_leases_by_status", &[("status", "orphan")], 0.0..=0.0),
        ],
        &log,
    );
    dump(&agent, &log());
    agent.stop();
    drop((a, b, c));
}

#[test]
fn cloudstack_expunge_on_the_backup_then_failover_releases_the_lease_once() {
    let _t = Timed("expunge on the backup", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: true }).expect("VR");
    let a = deploy_and_boot(&mut vr, VM_A);
    let b = deploy_and_boot(&mut vr, VM_B);
    vr.become_backup().expect("BACKUP");
    let agent = cloudstack_agent(&vr, &["--remediate", "--orphan-settle", "2s"]);
    let log = || vr.dnsmasq_log();
    let down = agent.wait_record("the server down", |r| s(r, "event") == "server");
    assert_eq!(
        (down["up"].as_bool(), down["should_serve"].as_bool()),
        (Some(false), Some(false)),
        "a BACKUP: dnsmasq stopped, no VIP{}",
        report(&agent, &log())
    );
    wait_metrics(
        &vr.router,
        &agent,
        &[
            ("dhcp_server_up", &[], 0.0..=0.0),
            ("dhcp_server_should_serve", &[], 0.0..=0.0),
            (
                "dhcp_leases_by_status",
                &[("status", "declared")],
                2.0..=2.0,
            ),
        ],
        &log,
    );

    // The BACKUP expunges A: dhcp_release reaches no server.
    vr.expunge(&a).expect("expunge A on the BACKUP");
    let log = || vr.dnsmasq_log();
    let release = wait_events(&agent, "release", a.ip, 1, &log).remove(0);
    assert_eq!(
        judged(&release),
        ("dropped", "no_server", "router"),
        "{release}{}",
        report(&agent, &log())
    );
    // Ten seconds of BACKUP: the old repair loop sent a repair, saw it go unanswered, judged it
    // a new dropped release and repaired again, dozens of times.
    thread::sleep(Duration::from_secs(10));
    assert_eq!(
        events(&agent, "release").len(),
        1,
        "one release{}",
        report(&agent, &log())
    );
    assert!(
        events(&agent, "remediation").is_empty(),
        "nothing repaired while the server is down{}",
        report(&agent, &log())
    );
    assert!(vr.lease_file_has(a.ip), "the leak is in the file");

    // Failover: dnsmasq starts from the file, A's lease with it; the agent releases it once.
    vr.become_master().expect("MASTER");
    let log = || vr.dnsmasq_log();
    let _ = wait_for(WAIT, || {
        events(&agent, "server")
            .iter()
            .any(|r| r["up"].as_bool() == Some(true))
    });
    let up: Vec<Value> = events(&agent, "server")
        .into_iter()
        .filter(|r| r["up"].as_bool() == Some(true))
        .collect();
    assert_eq!(
        up.len(),
        1,
        "the server came up once{}",
        report(&agent, &log())
    );
    assert_eq!(up[0]["should_serve"].as_bool(), Some(true), "{}", up[0]);
    let repair = wait_events(&agent, "remediation", a.ip, 1, &log).remove(0);
    assert_eq!(
        s(&repair, "result"),
        "remediated",
        "{repair}{}",
        report(&agent, &log())
    );
    assert!(
        ["router_release", "orphan"].contains(&s(&repair, "basis")),
        "{repair}"
    );
    assert_eq!(
        s(&repair, "server_id"),
        vr.server_id().to_string(),
        "{repair}"
    );
    assert!(
        !vr.dnsmasq_holds(a.ip),
        "released after the failover{}",
        report(&agent, &log())
    );

    thread::sleep(Duration::from_secs(4));
    assert_eq!(
        events(&agent, "remediation").len(),
        1,
        "one repair{}",
        report(&agent, &log())
    );
    assert_eq!(
        events(&agent, "release").len(),
        1,
        "one release{}",
        report(&agent, &log())
    );
    for kind in ["release", "remediation", "orphan"] {
        assert!(
            events_for(&agent, kind, b.ip).is_empty(),
            "B is live and declared: no {kind}{}",
            report(&agent, &log())
        );
    }
    assert!(vr.dnsmasq_holds(b.ip), "B untouched");
    wait_metrics(
        &vr.router,
        &agent,
        &[
            ("dhcp_server_up", &[], 1.0..=1.0),
            ("dhcp_server_should_serve", &[], 1.0..=1.0),
            (
                "dhcp_remediations_total",
                &[("result", "remediated")],
                1.0..=1.0,
            ),
            (
                "dhcp_remediations_total",
                &[("result", "failed")],
                0.0..=0.0,
            ),
            (
                "dhcp_releases_dropped_total",
                &[("cause", "no_server")],
                1.0..=1.0,
            ),
            ("dhcp_agent_own_packets_total", &[], 1.0..=f64::MAX),
        ],
        &log,
    );
    dump(&agent, &log());
    agent.stop();
    drop((a, b));
}

#[test]
fn expunges_while_the_agent_was_down_are_found_as_orphans_at_start_and_released() {
    let _t = Timed("expunges while the agent was down", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: true }).expect("VR");
    let a = deploy_and_boot(&mut vr, VM_A);
    let b = deploy_and_boot(&mut vr, VM_B);
    let c = deploy_and_boot(&mut vr, VM_C);
    // No agent: both expunges leak (dnsmasq ignores dhcp_release's primary address).
    vr.expunge(&a).expect("expunge A");
    vr.expunge(&b).expect("expunge B");
    assert!(vr.dnsmasq_holds(a.ip) && vr.dnsmasq_holds(b.ip), "leaked");

    let agent = cloudstack_agent(&vr, &["--remediate", "--orphan-settle", "2s"]);
    let log = || vr.dnsmasq_log();
    for vm in [&a, &b] {
        let orphan = wait_events(&agent, "orphan", vm.ip, 1, &log).remove(0);
        assert_eq!(s(&orphan, "mac"), vm.mac(), "{orphan}");
        assert!(!s(&orphan, "undeclared_since").is_empty(), "{orphan}");
    }
    for vm in [&a, &b] {
        let repair = wait_events(&agent, "remediation", vm.ip, 1, &log).remove(0);
        assert_eq!(
            (s(&repair, "result"), s(&repair, "basis")),
            ("remediated", "orphan"),
            "{repair}{}",
            report(&agent, &log())
        );
        assert_eq!(s(&repair, "mac"), vm.mac(), "{repair}");
        assert!(
            !vr.dnsmasq_holds(vm.ip),
            "{} released{}",
            vm.ip,
            report(&agent, &log())
        );
    }
    wait_metrics(
        &vr.router,
        &agent,
        &[
            ("dhcp_leases_by_status", &[("status", "orphan")], 0.0..=0.0),
            (
                "dhcp_leases_by_status",
                &[("status", "declared")],
                1.0..=1.0,
            ),
            (
                "dhcp_remediations_total",
                &[("result", "remediated")],
                2.0..=2.0,
            ),
            (
                "dhcp_reconcile_findings_total",
                &[("kind", "orphan")],
                2.0..=2.0,
            ),
        ],
        &log,
    );
    thread::sleep(Duration::from_secs(3));
    let count = |kind| events(&agent, kind).len();
    assert_eq!(count("orphan"), 2, "two orphans{}", report(&agent, &log()));
    assert_eq!(
        count("remediation"),
        2,
        "two repairs{}",
        report(&agent, &log())
    );
    assert_eq!(
        count("release"),
        0,
        "the repairs are the agent's own{}",
        report(&agent, &log())
    );
    for kind in ["orphan", "remediation", "release"] {
        assert!(
            events_for(&agent, kind, c.ip).is_empty(),
            "C is declared: no {kind}{}",
            report(&agent, &log())
        );
    }
    assert!(
        vr.dnsmasq_holds(c.ip) && vr.lease_file_has(c.ip),
        "C untouched"
    );

    // A new VM on a new address, deployed now that the host files last changed more than the
    // settle time ago: CloudStack writes its host line, then seeds its lease. Declared from
    // the start: never an orphan, never released.
    let d = deploy_and_boot(&mut vr, VM_D);
    let log = || vr.dnsmasq_log();
    thread::sleep(Duration::from_secs(3));
    assert!(
        events_for(&agent, "remediation", d.ip).is_empty(),
        "the agent released the new VM's lease: its host line is there{}",
        report(&agent, &log())
    );
    assert!(
        events_for(&agent, "orphan", d.ip).is_empty(),
        "the new VM is declared, never an orphan{}",
        report(&agent, &log())
    );
    assert!(
        vr.dnsmasq_holds(d.ip),
        "D keeps its lease{}",
        report(&agent, &log())
    );
    assert_eq!(
        events(&agent, "remediation").len(),
        2,
        "{}",
        report(&agent, &log())
    );
    dump(&agent, &log());
    agent.stop();
    drop((a, b, c, d));
}

// ---------------------------------------------------------------------------------------------
// Neutron.

#[test]
fn neutron_port_deletes_are_honored_and_nothing_is_flagged() {
    let _t = Timed("neutron port delete", Instant::now());
    let mut q = NeutronDhcp::start().expect("qdhcp");
    let agent = neutron_agent(&q, &["--remediate", "--orphan-settle", "2s"]);
    let vm0 = q
        .create_port(0, "fa:16:3e:00:00:05", Ipv4Addr::new(10, 77, 0, 5))
        .expect("port 0");
    let vm1 = q
        .create_port(1, "fa:16:3e:00:01:05", Ipv4Addr::new(10, 77, 1, 5))
        .expect("port 1");
    for vm in [&vm0, &vm1] {
        let got = q.boot(vm);
        assert_eq!(
            got.as_ref().ok(),
            Some(&vm.ip),
            "{got:?}\n{}",
            q.dnsmasq_log()
        );
    }
    let log = || q.dnsmasq_log();
    wait_metrics(
        &q.ns,
        &agent,
        &[(
            "dhcp_leases_by_status",
            &[("status", "declared")],
            2.0..=2.0,
        )],
        &log,
    );

    q.delete_port(&vm1).expect("delete port 1");
    let log = || q.dnsmasq_log();
    wait_events(&agent, "release", vm1.ip, 1, &log);
    // Let Neutron's retries, an orphan report and a settle time pass.
    thread::sleep(Duration::from_secs(4));
    let released = events_for(&agent, "release", vm1.ip);
    let outcomes: Vec<&str> = released.iter().map(|r| s(r, "outcome")).collect();
    assert!(
        outcomes.iter().all(|o| ["honored", "no_lease"].contains(o))
            && outcomes.iter().filter(|o| **o == "honored").count() == 1,
        "dhcp_release with the subnet's own server id is honored once (a retry finds no \
         lease): {outcomes:?}{}",
        report(&agent, &log())
    );
    assert!(
        released.iter().all(|r| s(r, "origin") == "router"),
        "{released:?}"
    );
    assert!(!q.dnsmasq_holds(vm1.ip), "released");
    assert_eq!(
        events(&agent, "release").len(),
        released.len(),
        "no other release{}",
        report(&agent, &log())
    );
    for kind in ["remediation", "orphan", "blocked_host"] {
        assert!(
            events(&agent, kind).is_empty(),
            "nothing to flag or repair: {kind}{}",
            report(&agent, &log())
        );
    }
    assert!(
        q.dnsmasq_holds(vm0.ip) && q.lease_file_has(vm0.ip),
        "port 0 untouched"
    );
    wait_metrics(
        &q.ns,
        &agent,
        &[
            (
                "dhcp_leases_by_status",
                &[("status", "declared")],
                1.0..=1.0,
            ),
            ("dhcp_leases_by_status", &[("status", "orphan")], 0.0..=0.0),
            ("dhcp_releases_total", &[("outcome", "dropped")], 0.0..=0.0),
            ("dhcp_releases_total", &[("outcome", "honored")], 1.0..=1.0),
            (
                "dhcp_remediations_total",
                &[("result", "remediated")],
                0.0..=0.0,
            ),
        ],
        &log,
    );
    dump(&agent, &log());
    agent.stop();
    drop((vm0, vm1));
}

// ---------------------------------------------------------------------------------------------
// Forged releases and rogue servers.

/// A frame from a guest's namespace: Ethernet source `src_mac`, to the broadcast address.
fn guest_frame(src_mac: [u8; 6], src: Ipv4Addr, ports: (u16, u16), spec: &Dhcpv4Spec) -> Vec<u8> {
    let framing = Framing {
        src_mac,
        ..Framing::default()
    };
    ipv4_udp(&framing, src, Ipv4Addr::BROADCAST, ports, &spec.encode()).expect("frame")
}

#[test]
fn a_forged_release_never_releases_the_victims_lease() {
    let _t = Timed("forged release", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: true }).expect("VR");
    let agent = cloudstack_agent(&vr, &["--remediate", "--orphan-settle", "2s"]);
    let victim = deploy_and_boot(&mut vr, VM_A);
    let attacker = deploy_and_boot(&mut vr, VM_B);
    let log = || vr.dnsmasq_log();
    wait_metrics(
        &vr.router,
        &agent,
        &[(
            "dhcp_leases_by_status",
            &[("status", "declared")],
            2.0..=2.0,
        )],
        &log,
    );

    // From the attacker's NIC: the victim's address and MAC, a server id that is not dnsmasq's.
    let mut forged = Dhcpv4Spec::new(MessageType::Release, 0x0bad_f00d, mac_bytes(victim.mac()));
    forged.ciaddr = victim.ip;
    forged.server_id = Some(Ipv4Addr::new(172, 29, 102, 99));
    let frame = guest_frame(mac_bytes(attacker.mac()), attacker.ip, (68, 67), &forged);
    send_frames(&attacker.vm.ns, VM_IFACE, &[frame]).expect("send the forged RELEASE");

    let release = wait_events(&agent, "release", victim.ip, 1, &log).remove(0);
    assert_eq!(
        s(&release, "origin"),
        "forged",
        "{release}{}",
        report(&agent, &log())
    );
    assert_eq!(s(&release, "outcome"), "dropped", "{release}");
    assert_eq!(s(&release, "mac"), victim.mac(), "{release}");
    assert_eq!(s(&release, "interface"), vr.guest_iface(), "{release}");
    // Past a settle time and the rate limit's next turn: nothing repaired.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        events(&agent, "release").len(),
        1,
        "{}",
        report(&agent, &log())
    );
    assert!(
        events(&agent, "remediation").is_empty(),
        "a forged release is never repaired{}",
        report(&agent, &log())
    );
    assert!(
        vr.dnsmasq_holds(victim.ip) && vr.lease_file_has(victim.ip),
        "the victim keeps its lease{}",
        report(&agent, &log())
    );
    wait_metrics(
        &vr.router,
        &agent,
        &[
            (
                "dhcp_release_origins_total",
                &[("origin", "forged")],
                1.0..=1.0,
            ),
            (
                "dhcp_release_origins_total",
                &[("origin", "guest")],
                0.0..=0.0,
            ),
            (
                "dhcp_release_origins_total",
                &[("origin", "router")],
                0.0..=0.0,
            ),
            (
                "dhcp_remediations_total",
                &[("result", "remediated")],
                0.0..=0.0,
            ),
        ],
        &log,
    );
    dump(&agent, &log());
    agent.stop();
    drop((victim, attacker));
}

#[test]
fn a_rogue_servers_offer_is_reported() {
    const ROGUE_MAC: &str = "02:00:5e:77:00:01";
    const ROGUE_IP: Ipv4Addr = Ipv4Addr::new(172, 29, 102, 77);
    let _t = Timed("rogue server", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: false }).expect("VR");
    let agent = cloudstack_agent(&vr, &[]);
    let vm = deploy_and_boot(&mut vr, VM_A);
    let log = || vr.dnsmasq_log();

    // A host on the guest network answers a client as a DHCP server would.
    let mut offer = Dhcpv4Spec::new(
        MessageType::Offer,
        0x0f0f_0001,
        [0x52, 0x54, 0, 0x66, 0, 0x99],
    );
    offer.yiaddr = Ipv4Addr::new(172, 29, 102, 150);
    offer.server_id = Some(ROGUE_IP);
    offer.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
    offer.lease_secs = Some(600);
    let frame = guest_frame(mac_bytes(ROGUE_MAC), ROGUE_IP, (67, 68), &offer);
    send_frames(&vm.vm.ns, VM_IFACE, std::slice::from_ref(&frame)).expect("send the OFFER");
    let _ = wait_for(WAIT, || !events(&agent, "rogue_server").is_empty());
    let rogue = events(&agent, "rogue_server");
    assert_eq!(rogue.len(), 1, "{}", report(&agent, &log()));
    let r = &rogue[0];
    assert_eq!(
        (
            s(r, "interface"),
            s(r, "mac"),
            s(r, "server_id"),
            s(r, "ip")
        ),
        (
            vr.guest_iface(),
            ROGUE_MAC,
            "172.29.102.77",
            "172.29.102.77"
        ),
        "{r}"
    );
    assert_eq!(s(r, "message").to_lowercase(), "offer", "{r}");

    // The same server again: counted, not reported again.
    send_frames(&vm.vm.ns, VM_IFACE, &[frame]).expect("send the OFFER again");
    wait_metrics(
        &vr.router,
        &agent,
        &[
            (
                "dhcp_rogue_server_packets_total",
                &[("interface", vr.guest_iface())],
                2.0..=2.0,
            ),
            ("dhcp_rogue_servers", &[], 1.0..=1.0),
        ],
        &log,
    );
    assert_eq!(
        events(&agent, "rogue_server").len(),
        1,
        "{}",
        report(&agent, &log())
    );
    // The router's own server is still the one the agent expects.
    let scrape = scrape_in(&vr.router);
    let ids: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("dhcp_server_id_info"))
        .collect();
    assert!(
        ids.iter().all(|l| !l.contains("172.29.102.77")),
        "a rogue reply never teaches the server id: {ids:?}"
    );
    dump(&agent, &log());
    agent.stop();
    drop(vm);
}
