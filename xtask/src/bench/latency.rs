//! Benchmark 8: how soon a dropped release is flagged, and how long a repair takes, in the lab
//! with the real dnsmasq and the real `dhcp_release`.
//!
//! Each round a new guest boots (dhclient), gets expunged (`dhcp_release` with the primary
//! address as server id, which dnsmasq ignores) and the `run --remediate` daemon flags and
//! repairs it. Times come from two clocks that agree: the kernel's timestamp of the RELEASE
//! (the event's `seen`, converted to wall time by the agent) and the wall time at which the
//! benchmark reads each JSON line from the daemon's stdout.
use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use dhcp_lab::{Lab, LabConfig, ROUTER_IFACE};
use serde_json::Value;

use super::{Ctx, Figure, Target, sane};

const GROUP: &str = "detection latency";
const GRACE: Duration = Duration::from_secs(1);

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let rounds = ctx.pick(6, 1);
    let mut lab = Lab::start(LabConfig::default()).context("starting the lab")?;
    let agent = Agent::start(ctx, &lab)?;
    let (mut detection, mut decision, mut repair) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mac = format!("52:54:00:20:00:{:02x}", round + 1);
        lab.vm.set_mac(&mac)?;
        let ip = lab.vm.boot()?;
        lab.dhcp_release(ip, &mac)?;
        let (release, read_at) = agent.wait_event("release", ip)?;
        sane(release["flagged"] == true, || {
            format!("the release of {ip} was not flagged: {release}")
        })?;
        let seen = timestamp(&release, "seen")?;
        let settled = timestamp(&release, "settled")?;
        let grace = GRACE.as_secs_f64();
        detection.push((seconds_between(seen, read_at) - grace) * 1e3);
        decision.push((seconds_between(seen, settled) - grace) * 1e3);
        let (remediation, repaired_at) = agent.wait_event("remediation", ip)?;
        sane(remediation["result"] == "remediated", || {
            format!("the repair of {ip} did not succeed: {remediation}")
        })?;
        repair.push(seconds_between(read_at, repaired_at) * 1e3);
        sane(
            dhcp_lab::wait_for(Duration::from_secs(5), || !lab.lease_file_has(ip)).is_ok(),
            || format!("{ip} is still in dnsmasq's lease file after the repair"),
        )?;
    }
    agent.stop();
    Ok(vec![
        Figure::from_samples(
            GROUP,
            "RELEASE on the wire to the flag, beyond the grace",
            "ms",
            &detection,
            format!(
                "lab (dnsmasq, real dhcp_release with the primary address as server id), `run --json --grace 1s --remediate`: wall time the flagged release line is read from the daemon's stdout, minus the kernel timestamp of the RELEASE, minus the 1 s grace; {rounds} guests"
            ),
        )
        .target(Target::AtMost(10.0)),
        Figure::from_samples(
            GROUP,
            "of which the daemon's decision (settled − seen − grace)",
            "ms",
            &decision,
            "the event's own `settled` minus `seen` minus the grace: how late after the deadline the daemon settles",
        ),
        Figure::from_samples(
            GROUP,
            "remediation round trip",
            "ms",
            &repair,
            "from the flagged release line to the `remediated` line: the corrected RELEASE sent to dnsmasq and its lease confirmed gone from dnsmasq's memory (DHCPINFORM probe)",
        )
        .target(Target::AtMost(100.0)),
    ])
}

fn timestamp(event: &Value, key: &str) -> anyhow::Result<SystemTime> {
    let text = event[key]
        .as_str()
        .with_context(|| format!("no {key} in {event}"))?;
    let at: jiff::Timestamp = text.parse().with_context(|| format!("{key} = {text:?}"))?;
    Ok(SystemTime::from(at))
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The `run --remediate` daemon on the lab's router, its JSON lines read as they come.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<(Value, SystemTime)>,
}

impl Agent {
    fn start(ctx: &Ctx, lab: &Lab) -> anyhow::Result<Agent> {
        let leases = lab.lease_file();
        let conf = lab.dir.join("dnsmasq.conf");
        let state = lab.dir.join("bench-state.json");
        let mut child = lab
            .router
            .command(ctx.agent.to_str().context("agent path")?)
            .args(["run", "--json", "--remediate", "--grace", "1s"])
            .args(["--iface", ROUTER_IFACE, "--iface", "lo"])
            .arg("--leases")
            .arg(&leases)
            .arg("--dnsmasq-conf")
            .arg(&conf)
            .arg("--state-file")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dhcp-agent run")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let (attached_tx, attached) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("watching;") {
                    let _ = attached_tx.send(());
                }
            }
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let read_at = SystemTime::now();
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send((value, read_at)).is_err()
                {
                    break;
                }
            }
        });
        attached
            .recv_timeout(Duration::from_secs(10))
            .context("dhcp-agent run did not attach within 10 s")?;
        Ok(Agent { child, lines })
    }

    /// The next `event` line about `ip`, and when it was read.
    fn wait_event(&self, event: &str, ip: Ipv4Addr) -> anyhow::Result<(Value, SystemTime)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (value, at) = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no {event} event for {ip} within 15 s"))?;
            if value["event"] == event && value["ip"] == ip.to_string() {
                return Ok((value, at));
            }
        }
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
