//! `cargo xtask lab`: the agent watching a CloudStack-like redundant VR while guests come and
//! go. What it shows is the problem the product exists for: after the real `dhcp_release`, the
//! lease is still in dnsmasq's lease file.
use std::{
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::Context as _;
use dhcp_lab::{Lab, LabConfig, PRIMARY_ADDR, ROUTER_IFACE, VIP_ADDR};

#[derive(clap::Args)]
pub struct LabArgs {
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// TC attach mode passed to the agent (auto, tcx, netlink).
    #[arg(long, default_value = "auto")]
    tc_mode: String,
    /// Number of guests to boot and expunge one after another.
    #[arg(long, default_value_t = 2)]
    guests: u8,
    /// Let the correlating daemon repair the releases dnsmasq drops.
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

/// Starts `dhcp-agent COMMAND` on the router's guest interface and `lo`, with the lab's options.
fn spawn_agent(
    lab: &Lab,
    agent: &str,
    args: &LabArgs,
    command: &str,
    extra: &[&str],
) -> anyhow::Result<AgentProcess> {
    let mut cmd = lab.router.command(agent);
    cmd.args([
        command,
        "--iface",
        ROUTER_IFACE,
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

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--package", "dhcp-agent"])?;
    let agent_bin = crate::target_dir().join("release/dhcp-agent");

    let mut lab = Lab::start(LabConfig::default()).context("starting the lab")?;
    say(&format!(
        "router namespace {}: {ROUTER_IFACE} has {PRIMARY_ADDR}/24 (primary) and {VIP_ADDR}/24 (VIP); dnsmasq listens on 127.0.0.1,{VIP_ADDR}",
        lab.router.name()
    ));
    let agent_path = agent_bin.to_str().context("agent path")?;
    let agent = spawn_agent(&lab, agent_path, args, "watch", &[])?;
    // Beside it, the daemon that correlates each RELEASE with dnsmasq's lease table and memory.
    let (leases, conf, state) = (
        lab.lease_file(),
        lab.dir.join("dnsmasq.conf"),
        lab.dir.join("state.json"),
    );
    let mut daemon_args = vec!["--grace", "1s", "--probe-memory"];
    daemon_args.extend(["--leases", leases.to_str().context("path")?]);
    daemon_args.extend(["--dnsmasq-conf", conf.to_str().context("path")?]);
    daemon_args.extend(["--state-file", state.to_str().context("path")?]);
    if args.remediate {
        daemon_args.push("--remediate");
    }
    let daemon = spawn_agent(&lab, agent_path, args, "run", &daemon_args)?;
    thread::sleep(Duration::from_millis(500));

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
        lab.dhcp_release(ip, &mac)?;
        thread::sleep(Duration::from_millis(1500)); // the daemon's grace period
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
    say("the last guest releases its own lease: dhclient -r (option 54 = the VIP, honored)");
    lab.vm.release()?;
    thread::sleep(Duration::from_millis(1500)); // grace period, then one metrics refresh
    show_metrics(&lab)?;
    say("done; stopping the agents");
    drop(agent);
    drop(daemon);
    Ok(())
}

/// What Prometheus would scrape from the daemon now: its non-zero DHCP samples.
fn show_metrics(lab: &Lab) -> anyhow::Result<()> {
    let url = "http://127.0.0.1:9967/metrics";
    let (_, body) = dhcp_lab::prometheus::http_get(lab.router.name(), url, &[])
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
