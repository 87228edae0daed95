//! Benchmark 8: how soon a dropped release is flagged, and how long a repair takes, in the lab
//! with the real dnsmasq and the real `dhcp_release`.
//!
//! Each round a new guest boots (dhclient), gets expunged (`dhcp_release` with the primary
//! address as server id, which dnsmasq ignores) and the `run --remediate` daemon flags and
//! repairs it. Times come from two clocks that agree: the kernel's timestamp of the RELEASE
//! (the event's `seen`, converted to wall time by the agent) and the wall time at which the
//! benchmark reads each JSON line from the daemon's stdout.
use std::{
    net::Ipv4Addr,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use dhcp_lab::{Lab, LabConfig};
use serde_json::Value;

use super::{Ctx, Figure, Target, sane};
use crate::agent::{AgentUnderTest, Events};

const GROUP: &str = "detection latency";
const GRACE: Duration = Duration::from_secs(1);

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let rounds = ctx.pick(6, 1);
    let mut lab = Lab::start(LabConfig::default()).context("starting the lab")?;
    let agent = start_agent(ctx, &lab)?;
    let (mut detection, mut decision, mut repair) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mac = format!("52:54:00:20:00:{:02x}", round + 1);
        lab.vm.set_mac(&mac)?;
        let ip = lab.vm.boot()?;
        lab.dhcp_release(ip, &mac)?;
        let (release, read_at) = wait_event(&agent, "release", ip)?;
        sane(release["flagged"] == true, || {
            format!("the release of {ip} was not flagged: {release}")
        })?;
        let seen = timestamp(&release, "seen")?;
        let settled = timestamp(&release, "settled")?;
        let grace = GRACE.as_secs_f64();
        detection.push((seconds_between(seen, read_at) - grace) * 1e3);
        decision.push((seconds_between(seen, settled) - grace) * 1e3);
        let (remediation, repaired_at) = wait_event(&agent, "remediation", ip)?;
        sane(remediation["result"] == "remediated", || {
            format!("the repair of {ip} did not succeed: {remediation}")
        })?;
        repair.push(seconds_between(read_at, repaired_at) * 1e3);
        sane(
            dhcp_lab::wait_for(Duration::from_secs(5), || !lab.lease_file_has(ip)).is_ok(),
            || format!("{ip} is still in dnsmasq's lease file after the repair"),
        )?;
    }
    agent.stop_cleanly()?;
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
            "from the flagged release line to the `remediated` line: the wait the repair's safety rule imposes (the client undeclared for --orphan-settle, 1 s in the lab, checked at the once-a-second tick), then the corrected RELEASE sent to dnsmasq and its lease confirmed gone from dnsmasq's memory (DHCPINFORM probe); target: the settle time plus 100 ms",
        )
        .target(Target::AtMost(1_100.0)),
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
fn start_agent(ctx: &Ctx, lab: &Lab) -> anyhow::Result<AgentUnderTest> {
    let mut args = vec!["run".to_owned(), "--remediate".to_owned()];
    args.extend(lab.agent_run_options());
    args.push("--state-file".to_owned());
    args.push(
        lab.dir
            .join("bench-state.json")
            .to_string_lossy()
            .into_owned(),
    );
    AgentUnderTest::start(
        &lab.router,
        &ctx.agent,
        &args,
        &ctx.scratch.join("latency-agent.log"),
        Events::Json,
    )
}

/// The next `event` line about `ip`, and when it was read.
fn wait_event(
    agent: &AgentUnderTest,
    event: &str,
    ip: Ipv4Addr,
) -> anyhow::Result<(Value, SystemTime)> {
    agent
        .next_event(
            Duration::from_secs(15),
            |v| v["event"] == event && v["ip"] == ip.to_string(),
            |_| {},
        )
        .with_context(|| format!("no {event} event for {ip}"))
}
