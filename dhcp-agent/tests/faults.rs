//! Faults a router lives through, each against the real lab: dnsmasq restarted or killed, its
//! lease file deleted, truncated, replaced or caught half-written, the guest interface deleted
//! and created again, a flood that overflows the ring buffer, the agent itself killed with a
//! flagged release outstanding, and a metrics port already taken. After each, every RELEASE
//! must still get the outcome the server really gave it, and nothing may be lost, flagged
//! wrongly or repaired twice.
mod common;

use std::{
    fs,
    net::{Ipv4Addr, TcpListener},
    time::{Duration, Instant},
};

use common::{AGENT, Agent, Want, from_vm, s, start_run, start_watch, wait_samples};
use dhcp_lab::{
    IGNORED_MAC, Lab, LabConfig, PRIMARY_ADDR, ROUTER_IFACE, Stop, VIP_ADDR, VM_IFACE,
    frames::{Dhcpv4Spec, MessageType, send_frames},
    wait_for,
};

const SUBNET: &str = "172.29.101.0/24";
const POOL: &[(&str, &str)] = &[("interface", ROUTER_IFACE), ("subnet", SUBNET)];
/// A lease dnsmasq never gave, written into its file by the tests.
const GHOST: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 177);
const GHOST_MAC: &str = "52:54:00:77:77:77";

/// The ghost's lease line, valid for an hour.
fn ghost_line() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("{} {GHOST_MAC} {GHOST} ghost *\n", now + 3600)
}

/// `dhcp_leases` of the lab's pool is `n`.
fn leases(n: f64) -> Want<'static> {
    ("dhcp_leases", POOL, n..=n)
}

/// `dhcp_releases_dropped_unresolved` is `n`.
fn unresolved(n: f64) -> Want<'static> {
    ("dhcp_releases_dropped_unresolved", &[], n..=n)
}

/// The release events so far, in order: (outcome, address).
fn releases(agent: &Agent) -> Vec<(String, Ipv4Addr)> {
    agent
        .records()
        .iter()
        .filter(|r| s(r, "event") == "release")
        .map(|r| (s(r, "outcome").to_owned(), s(r, "ip").parse().unwrap()))
        .collect()
}

/// Waits until the agent has reported exactly `expected`, in that order, and nothing else.
fn assert_releases(agent: &Agent, expected: &[(&str, Ipv4Addr)]) {
    let expected: Vec<(String, Ipv4Addr)> = expected
        .iter()
        .map(|(outcome, ip)| (outcome.to_string(), *ip))
        .collect();
    let _ = wait_for(Duration::from_secs(15), || {
        releases(agent).len() >= expected.len()
    });
    assert_eq!(
        releases(agent),
        expected,
        "release events\nstderr:\n{}",
        agent.stderr_text()
    );
}

/// Waits until the agent's stderr says `text`.
fn wait_stderr(agent: &Agent, text: &str) {
    let said = wait_for(Duration::from_secs(15), || {
        agent.stderr_text().contains(text)
    });
    assert!(
        said.is_ok(),
        "stderr never said {text:?}:\n{}",
        agent.stderr_text()
    );
}

/// The BPF classifiers `tc` lists on `dev`'s `direction` hook in the router (netlink clsact
/// attachments; empty when there is no clsact qdisc at all).
fn tc_filters(lab: &Lab, dev: &str, direction: &str) -> String {
    let out = lab
        .router
        .command("tc")
        .args(["filter", "show", "dev", dev, direction])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dnsmasq_restarted_or_killed_midrun_releases_are_still_judged_right() {
    let mut lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &[]);
    let mut expected = Vec::new();
    for how in [Stop::Term, Stop::Kill] {
        let ip = lab.vm.boot().expect("lease");
        // CloudStack's dhcp_release, which dnsmasq ignores on a redundant VR ...
        lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
        expected.push(("dropped", ip));
        assert_releases(&agent, &expected);
        // ... then dnsmasq goes down and comes back with the leases of its file ...
        lab.stop_dnsmasq(how).expect("stop dnsmasq");
        assert!(lab.lease_file_has(ip), "{how:?}: the lease file kept it");
        lab.resume_dnsmasq().expect("start dnsmasq again");
        assert!(lab.dnsmasq_holds(ip), "{how:?}: dnsmasq reloaded it");
        // ... and the client's own release is honored by the new dnsmasq.
        lab.vm.release().expect("dhclient -r");
        expected.push(("honored", ip));
        assert_releases(&agent, &expected);
    }
    wait_samples(
        &lab,
        &[
            ("dhcp_releases_total", &[("outcome", "dropped")], 2.0..=2.0),
            ("dhcp_releases_total", &[("outcome", "honored")], 2.0..=2.0),
            ("dhcp_releases_total", &[("outcome", "no_lease")], 0.0..=0.0),
            unresolved(0.0),
        ],
    );
    agent.stop();
}

/// The file deleted (by hand, or a clean-up gone wrong): the agent keeps judging against the
/// last table it read, says so, and reads the file again as soon as it is back.
#[test]
fn a_deleted_lease_file_keeps_the_last_table_until_it_is_back() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &[]);
    let ip = lab.vm.boot().expect("lease");
    wait_samples(&lab, &[leases(1.0)]);
    let saved = fs::read_to_string(lab.lease_file()).unwrap();
    fs::remove_file(lab.lease_file()).unwrap();
    wait_stderr(&agent, "does not exist");
    wait_samples(
        &lab,
        &[(
            "dhcp_lease_file_reloads_total",
            &[("result", "missing")],
            1.0..=1.0,
        )],
    );
    // dnsmasq ignores the RELEASE and keeps the lease: the kept table says so too (without it,
    // the release would be `no_lease`).
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    assert_releases(&agent, &[("dropped", ip)]);
    wait_samples(&lab, &[leases(1.0), unresolved(1.0)]);
    // Restored from a backup, with one more lease: read again at once.
    let ok_before = common::sample(
        &common::scrape(&lab),
        "dhcp_lease_file_reloads_total",
        &[("result", "ok")],
    )
    .unwrap();
    fs::write(lab.lease_file(), saved + &ghost_line()).unwrap();
    wait_samples(
        &lab,
        &[
            leases(2.0),
            unresolved(1.0),
            (
                "dhcp_lease_file_reloads_total",
                &[("result", "ok")],
                ok_before + 1.0..=f64::MAX,
            ),
        ],
    );
    assert_releases(&agent, &[("dropped", ip)]);
    agent.stop();
}

/// The file truncated behind dnsmasq's back: an empty file while leases were listed that no
/// RELEASE or expiry explains is not every client releasing its lease. The agent keeps its
/// table (and the dropped release it flagged) until dnsmasq writes the file again, which it
/// does, from memory, at its next lease change.
#[test]
fn a_truncated_lease_file_is_not_every_lease_released() {
    let mut lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &[]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    assert_releases(&agent, &[("dropped", ip)]);
    wait_samples(&lab, &[leases(1.0), unresolved(1.0)]);

    fs::File::create(lab.lease_file()).unwrap(); // truncates to zero
    wait_stderr(&agent, "lists no lease, but 1 of the 1 leases");
    wait_samples(
        &lab,
        &[(
            "dhcp_lease_file_reloads_total",
            &[("result", "empty")],
            1.0..=f64::MAX,
        )],
    );
    // A new guest boots: dnsmasq writes every lease it holds, the flagged one too.
    lab.vm.set_mac("52:54:00:10:00:02").expect("new MAC");
    let second = lab.vm.boot().expect("second lease");
    wait_samples(&lab, &[leases(2.0)]);
    wait_stderr(&agent, "lists leases again (2)");
    assert!(lab.lease_file_has(ip) && lab.lease_file_has(second));
    // The flag was never dropped, nothing was settled on the empty file.
    wait_samples(&lab, &[unresolved(1.0)]);
    assert_releases(&agent, &[("dropped", ip)]);
    agent.stop();
}

/// A new version of the file renamed over the old one (`sed -i`, Kea's lease file cleanup, an
/// orchestrator rewriting it atomically) is followed. dnsmasq itself never renames: it
/// rewrites its file in place, and keeps writing the file it opened (now unlinked) until it is
/// restarted, so the lab restarts it to make it serve the new file.
#[test]
fn a_lease_file_replaced_by_rename_is_followed() {
    let mut lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &[]);
    let ip = lab.vm.boot().expect("lease");
    wait_samples(&lab, &[leases(1.0)]);

    let next = lab.dir.join("dnsmasq.leases.new");
    let text = fs::read_to_string(lab.lease_file()).unwrap() + &ghost_line();
    fs::write(&next, text).unwrap();
    fs::rename(&next, lab.lease_file()).unwrap();
    wait_samples(&lab, &[leases(2.0)]);

    lab.restart_dnsmasq().expect("restart dnsmasq");
    assert!(lab.dnsmasq_holds(GHOST), "dnsmasq serves the new file");
    // The client's own release: dnsmasq rewrites the renamed-in file in place, the agent sees
    // the lease go. The ghost's release with the primary address: ignored, and flagged.
    lab.vm.release().expect("dhclient -r");
    assert_releases(&agent, &[("honored", ip)]);
    lab.dhcp_release(GHOST, GHOST_MAC).expect("dhcp_release");
    assert_releases(&agent, &[("honored", ip), ("dropped", GHOST)]);
    wait_samples(&lab, &[leases(1.0), unresolved(1.0)]);
    agent.stop();
}

/// A file caught half-written (a writer that stopped mid-line) is refused without losing the
/// table, and read as soon as the line is complete.
#[test]
fn a_half_written_lease_file_is_refused_until_complete() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &[]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    assert_releases(&agent, &[("dropped", ip)]);
    wait_samples(&lab, &[leases(1.0), unresolved(1.0)]);

    let line = ghost_line();
    let (head, tail) = line.split_at(line.len() / 2);
    let text = fs::read_to_string(lab.lease_file()).unwrap();
    fs::write(lab.lease_file(), text + head).unwrap();
    wait_stderr(&agent, "lease file is incomplete");
    wait_samples(
        &lab,
        &[
            (
                "dhcp_lease_file_reloads_total",
                &[("result", "invalid")],
                1.0..=1.0,
            ),
            leases(1.0),
            unresolved(1.0),
        ],
    );
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(lab.lease_file())
        .unwrap();
    std::io::Write::write_all(&mut file, tail.as_bytes()).unwrap();
    drop(file);
    wait_samples(&lab, &[leases(2.0), unresolved(1.0)]);
    assert_releases(&agent, &[("dropped", ip)]);
    agent.stop();
}

/// The guest interface deleted and created again (the guest network torn down and rebuilt):
/// its hooks went with it, and both commands attach to the new one by themselves, say so, and
/// see its DHCP. `watch` uses netlink clsact filters, the attach path of the routers' 6.1
/// kernels, where a stale attachment would stay visible to `tc`.
#[test]
fn a_deleted_and_recreated_interface_is_attached_again() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let daemon = start_run(&lab, &[]);
    let watch = start_watch(
        &lab,
        &[
            "--tc-mode",
            "netlink",
            "--type",
            "discover",
            "--type",
            "offer",
        ],
    );
    let guest = [("interface", ROUTER_IFACE)];
    wait_samples(
        &lab,
        &[
            ("dhcp_interface_attached", &guest, 1.0..=1.0),
            ("dhcp_interface_reattachments_total", &guest, 0.0..=0.0),
        ],
    );

    lab.unplug_guest().expect("delete guest0");
    for agent in [&daemon, &watch] {
        wait_stderr(agent, "interface guest0 (ifindex");
        wait_stderr(agent, "is gone, and its hooks with it");
    }
    wait_samples(&lab, &[("dhcp_interface_attached", &guest, 0.0..=0.0)]);

    lab.plug_guest().expect("create guest0 again");
    for agent in [&daemon, &watch] {
        wait_stderr(agent, "interface guest0 is back");
    }
    assert!(
        watch
            .stderr_text()
            .contains("re-attached tc_ingress (netlink clsact), tc_egress (netlink clsact)"),
        "{}",
        watch.stderr_text()
    );
    wait_samples(
        &lab,
        &[
            ("dhcp_interface_attached", &guest, 1.0..=1.0),
            ("dhcp_interface_reattachments_total", &guest, 1.0..=1.0),
        ],
    );

    // A guest boots behind the new interface: both see it, the daemon judges its release.
    let ip = lab.vm.boot().expect("lease");
    for message_type in ["DISCOVER", "OFFER"] {
        let seen = watch.wait_record(message_type, |r| s(r, "message_type") == message_type);
        assert_eq!(s(&seen, "interface"), ROUTER_IFACE, "{seen}");
        assert_eq!(s(&seen, "chaddr"), lab.vm.mac, "{seen}");
    }
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    assert_releases(&daemon, &[("dropped", ip)]);
    wait_samples(
        &lab,
        &[(
            "dhcp_packets_total",
            &[
                ("interface", ROUTER_IFACE),
                ("direction", "out"),
                ("message_type", "ack"),
            ],
            1.0..=1.0,
        )],
    );

    // Both stop cleanly, the dead attachments ignored, and leave nothing attached behind.
    for stderr in [watch.stop(), daemon.stop()] {
        assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    }
    for (dev, direction) in [
        (ROUTER_IFACE, "ingress"),
        (ROUTER_IFACE, "egress"),
        ("lo", "ingress"),
    ] {
        let left = tc_filters(&lab, dev, direction);
        assert!(!left.contains("bpf"), "{dev} {direction}: {left}");
    }
}

/// A burst far larger than a small ring buffer: what does not fit is counted as lost, every
/// frame is either decoded or counted, and the agent keeps up afterwards.
#[test]
fn a_ring_buffer_flood_is_counted_and_the_agent_keeps_up() {
    const FLOOD: usize = 5000;
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &["--ring-bytes", "16384"]);
    // DISCOVERs of a client dnsmasq ignores: the server sends nothing back.
    let discover = Dhcpv4Spec::new(MessageType::Discover, 0x0f10_0d00, IGNORED_MAC);
    let frames = vec![from_vm(&discover, IGNORED_MAC); FLOOD];
    send_frames(&lab.vm.ns, VM_IFACE, &frames).expect("flood");

    let ingress = [("hook", "tc_ingress")];
    let discovers = [
        ("interface", ROUTER_IFACE),
        ("direction", "in"),
        ("message_type", "discover"),
    ];
    let value = |text: &str, name, labels: &[(&str, &str)]| {
        common::sample(text, name, labels).unwrap_or(f64::NAN)
    };
    let mut text = String::new();
    let settled = wait_for(Duration::from_secs(20), || {
        text = common::scrape(&lab);
        value(&text, "dhcp_capture_events_total", &ingress)
            + value(&text, "dhcp_capture_lost_events_total", &ingress)
            == FLOOD as f64
    });
    assert!(settled.is_ok(), "not every frame accounted for:\n{text}");
    let lost = value(&text, "dhcp_capture_lost_events_total", &ingress);
    assert!(lost > 0.0, "a 16 KiB ring overflowed:\n{text}");
    // Every event passed up was decoded and counted.
    assert_eq!(
        value(&text, "dhcp_packets_total", &discovers),
        value(&text, "dhcp_capture_events_total", &ingress),
        "{text}"
    );

    // Afterwards: a whole exchange and a release, none of it lost.
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    assert_releases(&agent, &[("dropped", ip)]);
    wait_samples(
        &lab,
        &[
            ("dhcp_capture_lost_events_total", &ingress, lost..=lost),
            (
                "dhcp_transaction_duration_seconds_count",
                &[("exchange", "discover_ack")],
                1.0..=1.0,
            ),
        ],
    );
    agent.stop();
}

/// The flag of a dropped release outlives the agent: killed (SIGKILL) right after reporting
/// it, stopped, started again with `--remediate`, the agent repairs it exactly once.
#[test]
fn a_flagged_release_survives_agent_restarts_and_is_repaired_exactly_once() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    // Every RELEASE on the wire, the repairs included.
    let wire = start_watch(&lab, &["--type", "release"]);
    let first = start_run(&lab, &[]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    assert_releases(&first, &[("dropped", ip)]);
    first.kill();

    let second = start_run(&lab, &[]);
    let state = lab.dir.join("state.json");
    assert!(
        second.stderr_text().contains(&format!(
            "resuming 1 dropped releases from {}",
            state.display()
        )),
        "{}",
        second.stderr_text()
    );
    wait_samples(&lab, &[unresolved(1.0)]);
    second.stop();

    let third = start_run(&lab, &["--remediate"]);
    assert!(
        third.stderr_text().contains("resuming 1 dropped releases"),
        "{}",
        third.stderr_text()
    );
    let repair = third.wait_record("repair", |r| s(r, "event") == "remediation");
    assert_eq!(
        (s(&repair, "result"), s(&repair, "ip")),
        ("remediated", ip.to_string().as_str()),
        "{repair}"
    );
    // dnsmasq has let the lease go; the repair's own RELEASE was seen and recognised by its
    // xid (counted apart, not judged as a release).
    wait_for(Duration::from_secs(5), || !lab.lease_file_has(ip)).expect("gone from the file");
    wait_samples(
        &lab,
        &[("dhcp_agent_own_packets_total", &[], 1.0..=f64::MAX)],
    );
    assert_releases(&third, &[]);
    assert!(!lab.dnsmasq_holds(ip));
    wait_samples(
        &lab,
        &[
            unresolved(0.0),
            (
                "dhcp_remediations_total",
                &[("result", "remediated")],
                1.0..=1.0,
            ),
        ],
    );
    third.stop();
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["outstanding"], serde_json::json!([]), "{saved}");

    // A fourth run has nothing to resume.
    let fourth = start_run(&lab, &["--remediate"]);
    assert!(
        !fourth.stderr_text().contains("resuming"),
        "{}",
        fourth.stderr_text()
    );
    fourth.stop();
    // On the wire: CloudStack's RELEASE with the primary address, and one repair with the VIP.
    let on_wire: Vec<String> = wire
        .records()
        .iter()
        .filter(|r| s(r, "ciaddr") == ip.to_string())
        .map(|r| format!("{} {}", s(r, "interface"), s(r, "server_id")))
        .collect();
    assert_eq!(
        on_wire,
        [format!("lo {PRIMARY_ADDR}"), format!("lo {VIP_ADDR}")],
        "{:?}",
        wire.lines()
    );
    wire.stop();
}

/// `dhcp_releases_pending` is `n`.
fn pending(n: f64) -> Want<'static> {
    ("dhcp_releases_pending", &[], n..=n)
}

/// [`start_run`] with a grace period of `grace` instead of 1 s.
fn start_run_with_grace(lab: &Lab, grace: &str) -> Agent {
    let mut args = common::run_args(lab, &lab.dir.join("state.json"), &[]);
    let at = args.iter().position(|a| a == "--grace").unwrap();
    args[at + 1] = grace.to_owned();
    Agent::start(
        &lab.router,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// Sends `signal` (`STOP`, `CONT`) to the lab's dnsmasq.
fn signal_dnsmasq(lab: &Lab, signal: &str) {
    let pid = fs::read_to_string(lab.dir.join("dnsmasq.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} dnsmasq");
}

/// A timestamp of a record or of the state file.
fn time(text: &str) -> jiff::Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is no timestamp: {e}"))
}

/// The agent stopped (SIGTERM, as `systemctl restart` does) within the grace of a RELEASE it
/// saw: the next run resumes it with its own seen time and deadline, and settles it exactly
/// once, as dropped with its cause.
#[test]
fn a_release_pending_across_a_restart_is_settled_once_as_dropped() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let state = lab.dir.join("state.json");
    let first = start_run_with_grace(&lab, "5s");
    let ip = lab.vm.boot().expect("lease");
    wait_samples(&lab, &[leases(1.0)]);
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    let released = Instant::now();
    wait_samples(&lab, &[pending(1.0)]);
    let stderr = first.stop();
    assert!(
        released.elapsed() < Duration::from_secs(4),
        "stopped within the grace"
    );
    assert!(
        stderr.contains("stopped; 1 releases still pending"),
        "{stderr}"
    );
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    let entry = &saved["pending"][0];
    assert_eq!(
        saved["pending"].as_array().map(Vec::len),
        Some(1),
        "{saved}"
    );
    assert_eq!(s(entry, "ip"), ip.to_string(), "{saved}");
    assert_eq!(s(&entry["lease"], "mac"), lab.vm.mac, "{saved}");
    let (seen, deadline) = (s(entry, "seen").to_owned(), time(s(entry, "deadline")));

    let second = start_run_with_grace(&lab, "5s");
    assert!(
        second.stderr_text().contains(&format!(
            "resuming 1 pending releases from {}",
            state.display()
        )),
        "{}",
        second.stderr_text()
    );
    assert_releases(&second, &[("dropped", ip)]);
    let event = second.wait_record("release", |r| s(r, "event") == "release");
    assert_eq!(s(&event, "cause"), "server_id_mismatch", "{event}");
    assert_eq!(s(&event, "received_server_id"), PRIMARY_ADDR.to_string());
    assert_eq!(s(&event, "expected_server_id"), VIP_ADDR.to_string());
    // Its own seen time and deadline, not a new grace from the restart.
    assert_eq!(s(&event, "seen"), seen, "{event}");
    assert!(time(s(&event, "settled")) >= deadline, "{event}");
    wait_samples(
        &lab,
        &[
            ("dhcp_releases_total", &[("outcome", "dropped")], 1.0..=1.0),
            (
                "dhcp_releases_dropped_total",
                &[("cause", "server_id_mismatch")],
                1.0..=1.0,
            ),
            pending(0.0),
            unresolved(1.0),
        ],
    );
    second.stop();
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["pending"], serde_json::json!([]), "{saved}");

    // Settled once: a third run resumes the dropped release as outstanding, and nothing more.
    let third = start_run_with_grace(&lab, "5s");
    let stderr = third.stderr_text();
    assert!(stderr.contains("resuming 1 dropped releases"), "{stderr}");
    assert!(!stderr.contains("pending releases"), "{stderr}");
    wait_samples(
        &lab,
        &[
            ("dhcp_releases_total", &[("outcome", "dropped")], 0.0..=0.0),
            unresolved(1.0),
        ],
    );
    assert_releases(&third, &[]);
    third.stop();
}

/// The client's own RELEASE pending across a restart: dnsmasq (paused) honors it only after the
/// agent has stopped, so the next run never sees the lease in its table. The lease saved with
/// the pending release tells it the lease was there: honored, not no_lease.
#[test]
fn a_release_honored_while_the_agent_was_down_is_honored_not_no_lease() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let first = start_run_with_grace(&lab, "5s");
    let ip = lab.vm.boot().expect("lease");
    wait_samples(&lab, &[leases(1.0)]);
    signal_dnsmasq(&lab, "STOP");
    lab.vm.release().expect("dhclient -r");
    wait_samples(&lab, &[pending(1.0)]);
    let stderr = first.stop();
    assert!(
        stderr.contains("stopped; 1 releases still pending"),
        "{stderr}"
    );
    signal_dnsmasq(&lab, "CONT");
    wait_for(Duration::from_secs(5), || !lab.lease_file_has(ip)).expect("dnsmasq honors it");

    let second = start_run_with_grace(&lab, "5s");
    assert!(
        second.stderr_text().contains("resuming 1 pending releases"),
        "{}",
        second.stderr_text()
    );
    assert_releases(&second, &[("honored", ip)]);
    wait_samples(
        &lab,
        &[
            ("dhcp_releases_total", &[("outcome", "honored")], 1.0..=1.0),
            ("dhcp_releases_total", &[("outcome", "no_lease")], 0.0..=0.0),
            pending(0.0),
            unresolved(0.0),
        ],
    );
    second.stop();
}

/// The metrics port taken by another program: `run` stops at once, names the address and
/// why, and has attached nothing.
#[test]
fn a_metrics_port_in_use_stops_the_agent_before_it_attaches() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let taken = lab
        .router
        .run_inside(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .expect("a port to take");
    let addr = taken.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = lab
        .router
        .command(AGENT)
        .args(["run", "--iface", ROUTER_IFACE, "--iface", "lo"])
        .args(["--tc-mode", "netlink", "--metrics-addr", &addr])
        .args(["--leases", lab.lease_file().to_str().unwrap()])
        .args(["--state-file", lab.dir.join("state.json").to_str().unwrap()])
        .output()
        .expect("run dhcp-agent");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("Address already in use"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}: {stderr}");
    assert!(!stderr.contains("attached"), "{stderr}");
    for (dev, direction) in [
        (ROUTER_IFACE, "ingress"),
        (ROUTER_IFACE, "egress"),
        ("lo", "ingress"),
    ] {
        let left = tc_filters(&lab, dev, direction);
        assert!(!left.contains("bpf"), "{dev} {direction}: {left}");
    }
    let qdiscs = lab
        .router
        .command("tc")
        .args(["qdisc", "show", "dev", ROUTER_IFACE])
        .output()
        .unwrap();
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout);
    assert!(!qdiscs.contains("clsact"), "{qdiscs}");
    drop(taken);
}

/// dnsmasq pings each address it is about to offer from a dynamic range and is deaf to DHCP
/// meanwhile, about 3 s each time (dhcp-lab/tests/dnsmasq_deaf.rs): VMs booting together must
/// not make it look down, or their releases would be blamed on `no_server` and repairs held
/// back. A dnsmasq that listens and answers nothing (stopped with SIGSTOP, as a hung one is)
/// is down, `not answering`, once the silence has lasted 30 s, and up at its first answer.
#[test]
fn a_server_deaf_while_it_pings_stays_up_and_a_hung_one_goes_down() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let agent = start_run(&lab, &[]);
    let is_server = |r: &serde_json::Value, up: bool| {
        s(r, "event") == "server" && r["up"].as_bool() == Some(up)
    };
    agent.wait_record("the server up", |r| is_server(r, true));
    // Five new clients at once: five pings in a row.
    let discovers: Vec<Vec<u8>> = (0..5u8)
        .map(|i| {
            let mut mac = IGNORED_MAC;
            mac[4] = 0x5e;
            mac[5] = i;
            from_vm(
                &Dhcpv4Spec::new(MessageType::Discover, 0x5e00 + u32::from(i), mac),
                mac,
            )
        })
        .collect();
    let sent = Instant::now();
    send_frames(&lab.vm.ns, VM_IFACE, &discovers).expect("DISCOVERs");
    let offers = || lab.dnsmasq_log().matches("DHCPOFFER(").count();
    wait_for(Duration::from_secs(30), || offers() >= 5)
        .unwrap_or_else(|_| panic!("5 OFFERs: {}", lab.dnsmasq_log()));
    let deaf = sent.elapsed();
    assert!(
        deaf >= Duration::from_secs(10),
        "dnsmasq offered within {deaf:?}: it did not ping"
    );
    // A probe window more, for the answers to the probes queued meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    let down: Vec<_> = agent
        .records()
        .into_iter()
        .filter(|r| is_server(r, false))
        .collect();
    assert!(
        down.is_empty(),
        "dnsmasq deaf for {deaf:?} while it pinged was judged down: {down:?}"
    );
    // Nor were the late OFFERs' DISCOVERs unanswered (the default --discover-timeout, 30 s).
    let scrape = common::scrape(&lab);
    assert_eq!(
        common::sample(
            &scrape,
            "dhcp_discover_unanswered_total",
            &[("interface", ROUTER_IFACE)]
        )
        .unwrap_or(0.0),
        0.0,
        "{scrape}"
    );

    signal_dnsmasq(&lab, "STOP");
    let hung = Instant::now();
    let mut down = None;
    let found = wait_for(Duration::from_secs(50), || {
        down = agent.records().into_iter().find(|r| is_server(r, false));
        down.is_some()
    });
    let after = hung.elapsed();
    signal_dnsmasq(&lab, "CONT");
    found.unwrap_or_else(|_| {
        panic!(
            "a hung dnsmasq never judged down: {}",
            agent.lines().join("\n")
        )
    });
    let down = down.unwrap();
    assert_eq!(s(&down, "reason"), "not answering", "{down}");
    assert!(
        after >= Duration::from_secs(30) && after <= Duration::from_secs(45),
        "judged down {after:?} after it hung"
    );
    let back = Instant::now();
    wait_for(Duration::from_secs(15), || {
        agent
            .records()
            .iter()
            .filter(|r| is_server(r, true))
            .count()
            >= 2
    })
    .unwrap_or_else(|_| panic!("never up again: {}", agent.lines().join("\n")));
    eprintln!(
        "deaf {deaf:?} while pinging: up; hung: down after {after:?}, up {:?} after SIGCONT",
        back.elapsed()
    );
    agent.stop();
}
