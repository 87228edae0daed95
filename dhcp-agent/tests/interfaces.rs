//! Interfaces that come and go while `dhcp-agent run` runs, on a CloudStack VPC router of
//! `dhcp-lab` (real dnsmasq, configured as CloudStack does; a new tier is a veth plugged into
//! the router namespace, its peer in a namespace of its own). What is proven:
//!
//! - with `--iface 'eth*'`, a new `eth3` is attached within a second of appearing (the
//!   `interface` event, `dhcp_interface_attached{interface="eth3"} 1`), a real dhclient's
//!   exchange on it is counted, and when it is deleted it is detached within a second and no
//!   series names it any more;
//! - with no `--iface` but dnsmasq's configuration, the agent attaches to what dnsmasq serves:
//!   a tier plugged with an address in a configured static range (as soon as the address is
//!   there), a tier whose range is configured after it was plugged (as soon as the
//!   configuration is read again), never a link dnsmasq does not serve, nor one excluded with
//!   `!`.
mod common;

use std::{
    fs,
    time::{Duration, Instant},
};

use common::{Agent, s, sample, scrape_in};
use dhcp_lab::{
    Netns,
    cloudstack::{CloudStackConfig, CloudStackRouter},
    netns::veth_pair,
    run, wait_for,
};
use serde_json::Value;

/// How long a hot-plugged interface may take to be attached or detached.
const AT_ONCE: Duration = Duration::from_secs(1);
/// How long a test waits for what does not have to be at once (a configuration re-read).
const WAIT: Duration = Duration::from_secs(10);

/// `dhcp-agent run --json` on the VR, with its lease file and /etc/dnsmasq.conf, and `iface`.
fn start_agent(vr: &CloudStackRouter, iface: &[&str]) -> Agent {
    let mut args: Vec<String> = ["run", "--json", "--grace", "1s"].map(str::to_owned).into();
    for value in iface {
        args.extend(["--iface".to_owned(), (*value).to_owned()]);
    }
    args.extend(["--leases".into(), vr.lease_file().display().to_string()]);
    args.extend([
        "--dnsmasq-conf".into(),
        vr.conf_file().display().to_string(),
    ]);
    let state = vr.dir.join("state.json");
    args.extend(["--state-file".into(), state.display().to_string()]);
    Agent::start(
        &vr.router,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// A VPC tier as CloudStack's `CsDhcp.configure_server` writes it into the configuration (a
/// file of its own in the conf-dir, beside cloud.conf, which the lab rewrites): a static range
/// on the tier's gateway and a listen-address there, and one VM's host line.
fn write_tier(vr: &CloudStackRouter, iface: &str, net: u8, host: Option<(&str, u8)>) {
    let gateway = format!("172.29.{net}.1");
    let mut text = format!(
        "dhcp-range=set:interface-{iface}-0,{gateway},static\n\
         dhcp-option=tag:interface-{iface}-0,1,255.255.255.0\n\
         listen-address={gateway}\n"
    );
    if let Some((mac, host)) = host {
        text.push_str(&format!("dhcp-host={mac},172.29.{net}.{host},infinite\n"));
    }
    let path = vr.dir.join("dnsmasq.d").join(format!("tier-{iface}.conf"));
    fs::write(&path, text).expect("write the tier's configuration");
}

/// Plugs a NIC `iface` into the router, its peer `peer` in `far`; both down.
fn plug(vr: &CloudStackRouter, iface: &str, far: &Netns, peer: &str) {
    veth_pair(&vr.router, iface, far, peer).expect("plug the NIC");
}

/// Configures the router's end: `address/24`, up.
fn configure(vr: &CloudStackRouter, iface: &str, address: &str) {
    let cidr = format!("{address}/24");
    vr.router
        .ip(&["addr", "add", &cidr, "dev", iface])
        .expect("address");
    vr.router
        .ip(&["link", "set", iface, "up"])
        .expect("link up");
}

/// The `interface` events about `iface` so far, as (change, reason).
fn changes(agent: &Agent, iface: &str) -> Vec<(String, String)> {
    agent
        .records()
        .iter()
        .filter(|r| s(r, "event") == "interface" && s(r, "interface") == iface)
        .map(|r| (s(r, "change").to_owned(), s(r, "reason").to_owned()))
        .collect()
}

/// Waits up to `within` since `since` for the event `change` about `iface`; returns how long it
/// took, or fails with the whole story.
fn wait_change(
    agent: &Agent,
    iface: &str,
    change: &str,
    since: Instant,
    within: Duration,
) -> (Duration, Value) {
    let mut found = None;
    let _ = wait_for(within + Duration::from_secs(2), || {
        found = agent.records().into_iter().find(|r| {
            s(r, "event") == "interface" && s(r, "interface") == iface && s(r, "change") == change
        });
        found.is_some()
    });
    let took = since.elapsed();
    let Some(record) = found else {
        panic!("no {change} event for {iface}{}", story(agent));
    };
    assert!(
        took <= within,
        "{iface} {change} after {took:?}, not within {within:?}{}",
        story(agent)
    );
    (took, record)
}

/// With `INTERFACES_DUMP` set, prints the whole story of a passing test too (`--nocapture`).
fn dump(agent: &Agent) {
    if std::env::var_os("INTERFACES_DUMP").is_some() {
        eprintln!("{}", story(agent));
    }
}

fn story(agent: &Agent) -> String {
    format!(
        "\n--- events:\n{}\n--- stderr:\n{}",
        agent.lines().join("\n"),
        agent.stderr_text()
    )
}

/// Waits until the sample `name{labels}` is at least `min` in a scrape of `ns`.
fn wait_sample(ns: &Netns, agent: &Agent, name: &str, labels: &[(&str, &str)], min: f64) {
    let mut last = String::new();
    let done = wait_for(WAIT, || {
        last = scrape_in(ns);
        sample(&last, name, labels).is_some_and(|v| v >= min)
    });
    assert!(
        done.is_ok(),
        "{name}{labels:?} not >= {min}\n--- scrape:\n{last}{}",
        story(agent)
    );
}

/// The scrape's `dhcp_` lines that mention `text`.
fn series_naming(ns: &Netns, text: &str) -> Vec<String> {
    scrape_in(ns)
        .lines()
        .filter(|l| l.starts_with("dhcp_") && l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// Prints how long the test took (`--nocapture`), to keep the file's runtime in view.
struct Timed(&'static str, Instant);

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!("{}: {:.1}s", self.0, self.1.elapsed().as_secs_f64());
    }
}

#[test]
fn a_nic_matching_a_pattern_is_attached_at_once_and_leaves_no_series_when_it_goes() {
    const VM_MAC: &str = "52:54:00:67:00:0a";
    let _t = Timed("pattern", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: false }).expect("VR");
    let tier = Netns::create(&format!("dhcpobs-if-t-{}", vr.id())).expect("tier namespace");
    // The tier is configured before its NIC appears, as CloudStack does; dnsmasq (no
    // bind-interfaces) serves the new link once it holds the listen-address.
    write_tier(&vr, "eth3", 103, Some((VM_MAC, 10)));
    vr.restart_dnsmasq().expect("dnsmasq with the new tier");
    let agent = start_agent(&vr, &["eth*", "lo"]);
    let started = agent.stderr_text();
    assert!(
        started.contains("attached eth2:") && started.contains("attached lo:"),
        "{started}"
    );

    let plugged = Instant::now();
    plug(&vr, "eth3", &tier, "eth0");
    let (took, attached) = wait_change(&agent, "eth3", "attached", plugged, AT_ONCE);
    eprintln!("eth3 attached {took:?} after it was created");
    assert_eq!(s(&attached, "reason"), "matches --iface eth*", "{attached}");
    assert!(
        attached["hooks"].as_array().is_some_and(|h| h.len() == 2),
        "ingress and egress: {attached}"
    );
    assert!(attached["ifindex"].as_u64().is_some_and(|i| i > 0));
    wait_sample(
        &vr.router,
        &agent,
        "dhcp_interface_attached",
        &[("interface", "eth3")],
        1.0,
    );

    // A VM of the tier boots: a real dhclient, with its own lease and pid files; its address is
    // not configured (the script does nothing), the exchange is what counts.
    configure(&vr, "eth3", "172.29.103.1");
    tier.ip(&["link", "set", "eth0", "address", VM_MAC, "up"])
        .expect("VM NIC");
    let lease_file = vr.dir.join("tier-dhclient.leases");
    let pid_file = vr.dir.join("tier-dhclient.pid");
    run(tier
        .command("dhclient")
        .args(["-1", "-v", "-sf", "/bin/true", "-lf"])
        .arg(&lease_file)
        .arg("-pf")
        .arg(&pid_file)
        .arg("eth0")
        .stdin(std::process::Stdio::null()))
    .unwrap_or_else(|e| panic!("dhclient on the new tier: {e:#}\n{}", vr.dnsmasq_log()));
    assert!(
        fs::read_to_string(&lease_file).is_ok_and(|l| l.contains("172.29.103.10")),
        "dhclient's lease: {:?}",
        fs::read_to_string(&lease_file)
    );
    for (direction, message_type) in [("in", "discover"), ("out", "offer"), ("out", "ack")] {
        wait_sample(
            &vr.router,
            &agent,
            "dhcp_packets_total",
            &[
                ("interface", "eth3"),
                ("direction", direction),
                ("message_type", message_type),
            ],
            1.0,
        );
    }
    // dhclient would renew in the background; the tier goes with its NIC.
    if let Ok(pid) = fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }

    let unplugged = Instant::now();
    vr.router.ip(&["link", "del", "eth3"]).expect("unplug");
    let (took, detached) = wait_change(&agent, "eth3", "detached", unplugged, AT_ONCE);
    eprintln!("eth3 detached {took:?} after it was deleted");
    assert!(
        s(&detached, "reason").contains("its series are removed"),
        "{detached}"
    );
    // Past the next once-a-second refresh of the pools' series (a pool learned on eth3 is
    // labelled `unknown` now): nothing names eth3.
    std::thread::sleep(Duration::from_millis(1500));
    let left = series_naming(&vr.router, "\"eth3\"");
    assert!(left.is_empty(), "series still naming eth3: {left:#?}");
    assert!(
        !series_naming(&vr.router, "interface=\"eth2\"").is_empty(),
        "eth2's series stay"
    );
    assert_eq!(
        changes(&agent, "eth3")
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>(),
        ["attached", "detached"]
    );
    dump(&agent);
    agent.stop();
}

#[test]
fn on_a_router_the_default_follows_what_dnsmasq_serves() {
    let _t = Timed("served", Instant::now());
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: false }).expect("VR");
    let far = Netns::create(&format!("dhcpobs-if-f-{}", vr.id())).expect("far namespace");
    // Two tiers configured before their NICs are plugged: eth3, and eth5, which the agent is
    // told to leave out.
    write_tier(&vr, "eth3", 103, None);
    write_tier(&vr, "eth5", 105, None);
    vr.restart_dnsmasq().expect("dnsmasq with the new tiers");
    let agent = start_agent(&vr, &["!eth5"]);
    let started = agent.stderr_text();
    assert!(
        started.contains("interfaces: every interface dnsmasq serves, and lo, except eth5")
            && started.contains("attached eth2:")
            && started.contains("attached lo:"),
        "{started}"
    );

    // eth3 is plugged: not served until it holds its address, then attached at once.
    plug(&vr, "eth3", &far, "p3");
    vr.router
        .ip(&["link", "set", "eth3", "up"])
        .expect("link up");
    std::thread::sleep(Duration::from_millis(500));
    assert!(changes(&agent, "eth3").is_empty(), "{}", story(&agent));
    let addressed = Instant::now();
    vr.router
        .ip(&["addr", "add", "172.29.103.1/24", "dev", "eth3"])
        .expect("address");
    let (took, attached) = wait_change(&agent, "eth3", "attached", addressed, AT_ONCE);
    eprintln!("eth3 attached {took:?} after its served address was added");
    assert!(
        s(&attached, "reason").starts_with("served: holds dnsmasq's listen-address 172.29.103.1"),
        "{attached}"
    );

    // A link dnsmasq does not serve, and a served one excluded with `!`.
    plug(&vr, "eth4", &far, "p4");
    configure(&vr, "eth4", "10.99.0.1");
    plug(&vr, "eth5", &far, "p5");
    configure(&vr, "eth5", "172.29.105.1");

    // eth7 is plugged and addressed before its tier is configured: attached once dnsmasq's
    // configuration is read again.
    plug(&vr, "eth7", &far, "p7");
    configure(&vr, "eth7", "172.29.107.1");
    std::thread::sleep(Duration::from_millis(500));
    assert!(changes(&agent, "eth7").is_empty(), "{}", story(&agent));
    let configured = Instant::now();
    write_tier(&vr, "eth7", 107, None);
    let (took, attached) = wait_change(&agent, "eth7", "attached", configured, WAIT);
    eprintln!("eth7 attached {took:?} after its tier was configured");
    assert!(s(&attached, "reason").starts_with("served:"), "{attached}");

    wait_sample(
        &vr.router,
        &agent,
        "dhcp_interface_attached",
        &[("interface", "eth7")],
        1.0,
    );
    for ignored in ["eth4", "eth5"] {
        assert!(changes(&agent, ignored).is_empty(), "{}", story(&agent));
        let named = series_naming(&vr.router, &format!("\"{ignored}\""));
        assert!(named.is_empty(), "{ignored} is not watched: {named:#?}");
    }

    // A tier removed: its NIC goes, and the agent lets it go.
    let unplugged = Instant::now();
    vr.router.ip(&["link", "del", "eth3"]).expect("unplug");
    wait_change(&agent, "eth3", "detached", unplugged, AT_ONCE);
    let left = series_naming(&vr.router, "\"eth3\"");
    assert!(left.is_empty(), "series still naming eth3: {left:#?}");
    dump(&agent);
    agent.stop();
}
