//! `cargo xtask lab`: the agent watching a router while guests come and go. What it shows is the
//! problem the product exists for: after the real `dhcp_release`, the lease is still in
//! dnsmasq's lease file. Three routers (`--mode`): the simple redundant-VR lab, a CloudStack VPC
//! router and a Neutron DHCP namespace as their projects build them (`dhcp_lab::cloudstack`,
//! `dhcp_lab::neutron`).
use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::Context as _;
use dhcp_lab::{
    Lab, LabConfig, Netns, PRIMARY_ADDR, ROUTER_IFACE, VIP_ADDR, VmHandle,
    cloudstack::{CloudStackConfig, CloudStackRouter},
    neutron::NeutronDhcp,
    wait_for,
};

/// Which router the lab builds.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A router namespace shaped like a CloudStack redundant VR; guests expunged one by one.
    Simple,
    /// A CloudStack VPC router of a redundant pair: expunges on the MASTER and on the BACKUP,
    /// failover, the next VM on an expunged VM's address.
    Cloudstack,
    /// An OpenStack Neutron DHCP namespace with two subnets: port create, boot, delete.
    Neutron,
}

#[derive(clap::Args)]
pub struct LabArgs {
    /// The router to build and watch.
    #[arg(long, value_enum, default_value_t = Mode::Simple)]
    mode: Mode,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// TC attach mode passed to the agent (auto, tcx, netlink).
    #[arg(long, default_value = "auto")]
    tc_mode: String,
    /// Number of guests: booted and expunged one after another (simple), deployed and booted
    /// before the first two are expunged (cloudstack, at least 2). Neutron uses two ports.
    #[arg(long, default_value_t = 2)]
    guests: u8,
    /// Let the correlating daemon repair the releases dnsmasq drops and release orphan leases,
    /// with a 5 s settle time.
    #[arg(long)]
    remediate: bool,
}

fn say(text: &str) {
    eprintln!("\x1b[1mlab:\x1b[0m {text}");
}

struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Where the agents run: a router's namespace and the interface guests reach it on.
struct Router<'a> {
    ns: &'a Netns,
    iface: &'a str,
}

/// Starts `dhcp-agent COMMAND` in the router's namespace on its guest interface and `lo`, with
/// the lab's options.
fn spawn_agent(
    router: &Router,
    agent: &str,
    args: &LabArgs,
    command: &str,
    extra: &[&str],
) -> anyhow::Result<AgentProcess> {
    let mut cmd = router.ns.command(agent);
    cmd.args([
        command,
        "--iface",
        router.iface,
        "--iface",
        "lo",
        "--tc-mode",
        &args.tc_mode,
    ]);
    if args.json {
        cmd.arg("--json");
    }
    let child = cmd
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting dhcp-agent {command}"))?;
    Ok(AgentProcess(child))
}

/// Starts both agents: `watch` (every packet, decoded) and beside it the daemon `run`, which
/// correlates each RELEASE with dnsmasq's lease table and memory. `conf` tells it where
/// dnsmasq's configuration is (`--dnsmasq-conf FILE` or `--dnsmasq-pid-file FILE`).
fn start_agents(
    router: &Router,
    agent: &str,
    args: &LabArgs,
    leases: &Path,
    conf: (&str, &Path),
    state: &Path,
    extra: &[&str],
) -> anyhow::Result<(AgentProcess, AgentProcess)> {
    let watch = spawn_agent(router, agent, args, "watch", &[])?;
    let mut daemon_args = vec!["--grace", "1s", "--probe-memory"];
    daemon_args.extend(["--leases", leases.to_str().context("path")?]);
    daemon_args.extend([conf.0, conf.1.to_str().context("path")?]);
    daemon_args.extend(["--state-file", state.to_str().context("path")?]);
    daemon_args.extend(extra);
    let daemon = spawn_agent(router, agent, args, "run", &daemon_args)?;
    thread::sleep(Duration::from_millis(500));
    Ok((watch, daemon))
}

/// The daemon's repair options. The settle time guards every repair (no lease is released
/// before its client has been undeclared that long): 5 s, not the default minute, so that the
/// repairs happen while the lab runs.
fn remediation(args: &LabArgs) -> &'static [&'static str] {
    if args.remediate {
        &["--remediate", "--orphan-settle", "5s"]
    } else {
        &[]
    }
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--package", "dhcp-agent"])?;
    let agent_bin = crate::target_dir().join("release/dhcp-agent");
    let agent = agent_bin.to_str().context("agent path")?;
    match args.mode {
        Mode::Simple => simple(agent, args),
        Mode::Cloudstack => cloudstack(agent, args),
        Mode::Neutron => neutron(agent, args),
    }
}

fn simple(agent: &str, args: &LabArgs) -> anyhow::Result<()> {
    let mut lab = Lab::start(LabConfig::default()).context("starting the lab")?;
    say(&format!(
        "router namespace {}: {ROUTER_IFACE} has {PRIMARY_ADDR}/24 (primary) and {VIP_ADDR}/24 (VIP); dnsmasq listens on 127.0.0.1,{VIP_ADDR}",
        lab.router.name()
    ));
    let router = Router {
        ns: &lab.router,
        iface: ROUTER_IFACE,
    };
    let (leases, conf) = (lab.lease_file(), lab.dir.join("dnsmasq.conf"));
    let agents = start_agents(
        &router,
        agent,
        args,
        &leases,
        ("--dnsmasq-conf", &conf),
        &lab.dir.join("state.json"),
        remediation(args),
    )?;

    for n in 1..=args.guests {
        let mac = format!("52:54:00:10:00:{n:02x}");
        if n > 1 {
            lab.vm.set_mac(&mac)?;
        }
        say(&format!("guest {n} ({mac}) boots: dhclient"));
        let ip = lab.vm.boot()?;
        say(&format!(
            "guest {n} got {ip}; it renews (INIT-REBOOT REQUEST)"
        ));
        lab.vm.boot()?;
        say(&format!(
            "guest {n} is expunged: dhcp_release {} {ip} {mac}",
            lab.guest_iface()
        ));
        let before = repairs_reported(&lab.router);
        lab.dhcp_release(ip, &mac)?;
        settle(&lab.router, args, before);
        if lab.lease_file_has(ip) {
            say(&format!(
                "dnsmasq ignored it: {ip} is still in {} (option 54 was {PRIMARY_ADDR}, dnsmasq's server id is {VIP_ADDR})",
                lab.lease_file().display()
            ));
        } else {
            say(&format!(
                "{ip} is gone from the lease file (repaired or honored)"
            ));
        }
    }
    // Option 54 = the VIP: honored, unless a repair released the lease already (no_lease).
    say("the last guest releases its own lease: dhclient -r (option 54 = the VIP)");
    lab.vm.release()?;
    show_metrics(&lab.router)?;
    say("done; stopping the agents");
    drop(agents);
    Ok(())
}

/// The `n`th VM of the CloudStack tier: MAC, fixed address, hostname.
fn cloudstack_vm(n: u8) -> (String, Ipv4Addr, String) {
    (
        format!("52:54:00:66:00:{n:02x}"),
        Ipv4Addr::new(172, 29, 102, 9 + n),
        format!("vm-{n}"),
    )
}

/// The sum of the daemon's samples that start with `sample` (a metric name, with `{` and its
/// first labels when labelled), as its metrics show them now; 0 while they cannot be read.
fn metric(ns: &Netns, sample: &str) -> f64 {
    let url = "http://127.0.0.1:9967/metrics";
    let Ok((_, body)) = dhcp_lab::prometheus::http_get(ns.name(), url, &[]) else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(sample))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The repairs the daemon has reported so far, whatever their result.
fn repairs_reported(ns: &Netns) -> f64 {
    metric(ns, "dhcp_remediations_total{")
}

/// Waits (at most 10 s) until the daemon counts `n` leases as declared: it has read the host
/// lines the orchestrator wrote, as it would have long before anything is removed on a real
/// router (it reads them 200 ms after the last change, and its metrics refresh every second).
fn wait_declared(ns: &Netns, n: usize) {
    let declared = || metric(ns, "dhcp_leases_by_status{status=\"declared\"}");
    let _ = wait_for(Duration::from_secs(10), || declared() >= n as f64);
}

/// Lets the daemon finish with the release the lab just caused before the next step. With
/// --remediate: until it has reported one more repair than `before` (sent, and checked in the
/// server's memory: the next step may stop or restart dnsmasq under that check), at most 15 s
/// (an orphan waits out its 5 s settle time). Without: one grace period, after which the
/// release is judged and nothing will remove the lease.
fn settle(ns: &Netns, args: &LabArgs, before: f64) {
    if args.remediate {
        let _ = wait_for(Duration::from_secs(15), || repairs_reported(ns) > before);
    } else {
        thread::sleep(Duration::from_millis(1500));
    }
}

fn cloudstack(agent: &str, args: &LabArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.guests >= 2,
        "--mode cloudstack needs --guests 2 or more: one is expunged on the MASTER, one on the BACKUP"
    );
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: true })
        .context("starting the CloudStack router")?;
    let (primary, vip) = (vr.primary(), vr.server_id());
    say(&format!(
        "VPC router namespace {}, keepalived MASTER: eth2 has {primary}/24 (primary) and {vip}/24 (VIP); dnsmasq as CloudStack configures it ({}, static leases from dhcphosts.txt)",
        vr.router.name(),
        vr.conf_file().display()
    ));
    let router = Router {
        ns: &vr.router,
        iface: vr.guest_iface(),
    };
    let agents = start_agents(
        &router,
        agent,
        args,
        &vr.lease_file(),
        ("--dnsmasq-conf", &vr.conf_file()),
        &vr.dir.join("state.json"),
        remediation(args),
    )?;

    let mut vms = Vec::new();
    for n in 1..=args.guests {
        let (mac, ip, name) = cloudstack_vm(n);
        say(&format!(
            "deploy {name} ({mac}, {ip}): host line, seeded lease, dnsmasq restarted"
        ));
        vms.push(vr.deploy_vm(&mac, ip, &name)?);
    }
    for vm in &vms {
        say(&format!("{} boots: dhclient", vm.hostname));
        let ip = vr.boot(vm)?;
        say(&format!("{} got {ip}", vm.hostname));
    }
    wait_declared(&vr.router, vms.len());

    let (first, second) = (&vms[0], &vms[1]);
    say(&format!(
        "the MASTER expunges {}: VM destroyed, host line dropped, dhcp_release eth2 {} {} (option 54 = {primary}, the first address)",
        first.hostname,
        first.ip,
        first.mac()
    ));
    let before = repairs_reported(&vr.router);
    vr.expunge(first)?;
    settle(&vr.router, args, before);
    if vr.lease_file_has(first.ip) {
        say(&format!(
            "dnsmasq ignored it (its server id is {vip}): {} is still in the lease file",
            first.ip
        ));
    } else {
        say(&format!(
            "{} is gone from the lease file (repaired)",
            first.ip
        ));
    }

    say("keepalived: this VR becomes BACKUP (VIP removed, dnsmasq stopped)");
    vr.become_backup()?;
    thread::sleep(Duration::from_millis(1500)); // the daemon's liveness check runs every second
    say(&format!(
        "the BACKUP expunges {}: dhcp_release eth2 {} {} reaches no server",
        second.hostname,
        second.ip,
        second.mac()
    ));
    vr.expunge(second)?;
    thread::sleep(Duration::from_millis(1500)); // the daemon's grace period
    say(
        "failover: this VR becomes MASTER again (VIP added, dnsmasq restarted from the lease file)",
    );
    let before = repairs_reported(&vr.router);
    vr.become_master()?;
    if vr.lease_file_has(second.ip) {
        say(&format!(
            "{} is back: dnsmasq loaded it from the lease file",
            second.ip
        ));
    }
    settle(&vr.router, args, before);
    if args.remediate && !vr.lease_file_has(second.ip) {
        say(&format!(
            "{} is gone from the lease file (released after the failover)",
            second.ip
        ));
    }

    // The address CloudStack hands out next: an expunged VM's, to a new VM with a new MAC.
    let (mac, name) = ("52:54:00:66:00:fe", "vm-next");
    say(&format!(
        "deploy {name} ({mac}) on {}, {}'s address",
        first.ip, first.hostname
    ));
    let next = vr.deploy_vm(mac, first.ip, name)?;
    // CsDhcp seeds the new VM's lease beside whatever still holds the address.
    let holders = fs::read_to_string(vr.lease_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(first.ip.to_string().as_str()))
        .count();
    if holders > 1 {
        say(&format!(
            "the lease file now lists {} {holders} times: the leaked lease and {name}'s seeded one",
            first.ip
        ));
    }
    if args.remediate {
        say(&format!("{name} boots: dhclient"));
        let ip = vr.boot(&next)?;
        say(&format!("{name} got {ip}"));
    } else {
        let secs = 8;
        say(&format!("{name} boots: dhclient, giving up after {secs} s"));
        match try_boot(&next, &vr.dir, secs)? {
            Some(ip) => say(&format!("{name} got {ip}")),
            None => say(&format!("{name} got no address within {secs} s")),
        }
    }
    show_metrics(&vr.router)?;
    say("done; stopping the agents");
    drop(agents);
    Ok(())
}

/// One bounded DHCP attempt: the lab's `boot` would wait out dhclient's default 60 s when no
/// server answers; this gives up after `secs` (dhclient's `timeout` statement). It configures
/// nothing (`-sf /bin/true`) and keeps its files in `scratch`; returns the address leased, if
/// any (from dhclient's lease file).
fn try_boot(vm: &VmHandle, scratch: &Path, secs: u32) -> anyhow::Result<Option<Ipv4Addr>> {
    let (conf, leases) = (
        scratch.join("dhclient-try.conf"),
        scratch.join("dhclient-try.leases"),
    );
    fs::write(&conf, format!("timeout {secs};\n")).context("writing dhclient-try.conf")?;
    let status = vm
        .vm
        .ns
        .command("dhclient")
        .args(["-1", "-sf", "/bin/true", "-cf"])
        .arg(&conf)
        .arg("-lf")
        .arg(&leases)
        .arg("-pf")
        .arg(scratch.join("dhclient-try.pid"))
        .arg(&vm.vm.iface)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("dhclient")?;
    if !status.success() {
        return Ok(None);
    }
    // `  fixed-address 172.29.102.10;` in the lease dhclient wrote.
    let text = fs::read_to_string(&leases).unwrap_or_default();
    Ok(text.lines().find_map(|line| {
        let addr = line.trim().strip_prefix("fixed-address ")?;
        addr.trim_end_matches(';').parse().ok()
    }))
}

fn neutron(agent: &str, args: &LabArgs) -> anyhow::Result<()> {
    let mut q = NeutronDhcp::start().context("starting the Neutron DHCP namespace")?;
    let [(s0, p0), (s1, p1)] = q.subnets();
    say(&format!(
        "Neutron DHCP namespace {}: {} has {s0}/{p0} and {s1}/{p1} (one subnet each); dnsmasq started as Neutron's agent starts it, its configuration on its command line",
        q.ns.name(),
        q.tap()
    ));
    let router = Router {
        ns: &q.ns,
        iface: q.tap(),
    };
    let state = q.dir.join("state.json");
    let agents = start_agents(
        &router,
        agent,
        args,
        &q.lease_file(),
        ("--dnsmasq-pid-file", &q.pid_file()),
        &state,
        remediation(args),
    )?;

    let mut vms = Vec::new();
    for (subnet, mac, ip) in [
        (0, "fa:16:3e:00:00:05", Ipv4Addr::new(10, 77, 0, 5)),
        (1, "fa:16:3e:00:01:05", Ipv4Addr::new(10, 77, 1, 5)),
    ] {
        say(&format!(
            "create port {mac} {ip} in subnet {subnet}: host line written, dnsmasq HUPed; the VM boots"
        ));
        let vm = q.create_port(subnet, mac, ip)?;
        let got = q.boot(&vm)?;
        say(&format!("the VM got {got}"));
        vms.push(vm);
    }
    wait_declared(&q.ns, vms.len());
    show_leases(&q, agent, &state)?;

    let gone = &vms[1];
    say(&format!(
        "delete the port in subnet 1: VM destroyed, dhcp_release {} {} {} (option 54 = {s1}, the tap's address in that subnet), host line dropped, HUP",
        q.tap(),
        gone.ip,
        gone.mac()
    ));
    q.delete_port(gone)?;
    thread::sleep(Duration::from_millis(1500)); // the daemon's grace period
    if q.lease_file_has(gone.ip) {
        say(&format!("{} is still in the lease file", gone.ip));
    } else {
        say(&format!(
            "{} is gone from the lease file (honored)",
            gone.ip
        ));
    }
    show_leases(&q, agent, &state)?;
    show_metrics(&q.ns)?;
    say("done; stopping the agents");
    drop(agents);
    Ok(())
}

/// `dhcp-agent leases` on the Neutron namespace: the lease table joined with the daemon's state
/// and with the configuration read from dnsmasq's command line (the DECLARED column).
fn show_leases(q: &NeutronDhcp, agent: &str, state: &Path) -> anyhow::Result<()> {
    let (pid_file, leases) = (q.pid_file(), q.lease_file());
    say(&format!(
        "dhcp-agent leases --dnsmasq-pid-file {} --leases {}",
        pid_file.display(),
        leases.display()
    ));
    let status =
        q.ns.command(agent)
            .arg("leases")
            .arg("--dnsmasq-pid-file")
            .arg(&pid_file)
            .arg("--leases")
            .arg(&leases)
            .arg("--state-file")
            .arg(state)
            .status()
            .context("dhcp-agent leases")?;
    anyhow::ensure!(status.success(), "dhcp-agent leases failed ({status})");
    Ok(())
}

/// What Prometheus would scrape from the daemon once the last release has settled: its
/// non-zero DHCP samples.
fn show_metrics(ns: &Netns) -> anyhow::Result<()> {
    // The grace period, a memory probe, then one metrics refresh (every second).
    thread::sleep(Duration::from_millis(2500));
    let url = "http://127.0.0.1:9967/metrics";
    let (_, body) = dhcp_lab::prometheus::http_get(ns.name(), url, &[])
        .context("scraping the daemon's metrics")?;
    say(&format!(
        "the daemon's metrics ({url} in the router namespace), non-zero samples:"
    ));
    for line in body.lines() {
        let interesting =
            line.starts_with("dhcp_") && !line.contains("_bucket{") && !line.ends_with(" 0");
        if interesting {
            eprintln!("    {line}");
        }
    }
    Ok(())
}
