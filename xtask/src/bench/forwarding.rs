//! Benchmark 2 (issue 6): forwarding impact. What attaching the observer costs traffic that
//! merely passes through the interface it watches.
//!
//! Two namespaces, A and B, joined by a veth pair; iperf3 pushes bulk flows between them while
//! B's veth is, in turn: left alone; watched by `dhcp-agent run` as operators run it (its
//! default: TC ingress and TC egress); watched by the agent with `--xdp-mode auto` (XDP in
//! driver mode for ingress: XDP on a veth changes its receive path, which is why TC is the
//! default); and
//! watched by `tcpdump 'udp port 67 or 68' -w /dev/null`, the way people look at DHCP today.
//! Conditions are interleaved round by round (and the order rotates), so drift hits them alike;
//! ratios are taken within a round and summarized over rounds. Besides throughput, the whole
//! machine's CPU time (/proc/stat) during each run is reported per Gbit transferred.
use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dhcp_lab::{Netns, prometheus::http_get, require_tools, wait_for};

use super::{Ctx, Figure, Target, sane};
use crate::agent::{AgentUnderTest, Events};

const GROUP: &str = "forwarding";
const IFACE_A: &str = "fwd-a";
const IFACE_B: &str = "fwd-b";
const ADDR_A: &str = "10.213.0.1";
const ADDR_B: &str = "10.213.0.2";
const PORT: &str = "5201";
const METRICS_ADDR: &str = "127.0.0.1:9967";

/// What is attached to B's veth during a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    Nothing,
    /// `dhcp-agent run` with its defaults (`--xdp-mode off`: TC ingress).
    Ours,
    /// `dhcp-agent run --xdp-mode auto`: XDP (driver mode on veth) for ingress.
    OursXdp,
    Tcpdump,
}

const CONDITIONS: [Condition; 4] = [
    Condition::Nothing,
    Condition::Ours,
    Condition::OursXdp,
    Condition::Tcpdump,
];

impl Condition {
    fn index(self) -> usize {
        CONDITIONS.iter().position(|c| *c == self).unwrap_or(0)
    }

    fn label(self) -> &'static str {
        match self {
            Condition::Nothing => "nothing attached",
            Condition::Ours => "ours (agent, default: TC ingress)",
            Condition::OursXdp => "ours (agent, --xdp-mode auto: XDP)",
            Condition::Tcpdump => "tcpdump",
        }
    }
}

/// A bulk flow: iperf3 client arguments besides server, port, duration and -J.
struct Flow {
    label: &'static str,
    args: &'static [&'static str],
    what: &'static str,
}

const FLOWS: [Flow; 3] = [
    Flow {
        label: "TCP A→B",
        args: &[],
        what: "TCP bulk (iperf3 default, one stream) A→B, entering B's veth (ingress hook)",
    },
    Flow {
        label: "UDP A→B",
        args: &["-u", "-b", "0", "-l", "1400"],
        what: "UDP bulk, unlimited rate, 1400-byte datagrams, A→B (ingress hook); \
               the receiver's throughput",
    },
    Flow {
        label: "TCP B→A",
        args: &["-R"],
        what: "TCP bulk B→A (iperf3 -R), leaving through B's veth (egress hook)",
    },
];

/// One iperf3 run.
#[derive(Clone, Copy)]
struct Run {
    /// The receiver's throughput.
    gbit_per_s: f64,
    /// Busy CPU time of the whole machine during the run, per Gbit received.
    cpu_s_per_gbit: f64,
    /// CPU time of the two iperf3 processes (iperf3's own host_total + remote_total, which
    /// includes the softirq work they run), per Gbit received: unlike the machine's, not
    /// inflated by whatever else the machine runs.
    iperf3_cpu_s_per_gbit: f64,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    require_tools(&["iperf3", "tcpdump", "ss"])?;
    let rounds = ctx.pick(5, 1);
    let secs = ctx.pick(4, 1);
    let lab = Lab::create()?;
    let leases = ctx.scratch.join("fwd-leases");
    fs::write(&leases, "").with_context(|| format!("writing {}", leases.display()))?;

    if !ctx.quick {
        // Warm up (CPU frequency, page cache, the veth's queues); not measured.
        lab.iperf(ctx, &FLOWS[0], 1, "warmup")?;
    }
    // samples[condition][flow][round]
    let mut samples = vec![vec![Vec::<Run>::new(); FLOWS.len()]; CONDITIONS.len()];
    // How the agent attached, from its stderr ("xdp_ingress (driver mode), tc_egress (tcx)").
    let mut attached = [String::new(), String::new()];
    for round in 0..rounds {
        for k in 0..CONDITIONS.len() {
            let condition = CONDITIONS[(round + k) % CONDITIONS.len()];
            let tag = format!("r{round}-{}", condition.index());
            let mut observer = match condition {
                Condition::Nothing => None,
                Condition::Ours => {
                    Some(Observer::Agent(lab.start_agent(ctx, &leases, "off", &tag)?))
                }
                Condition::OursXdp => Some(Observer::Agent(
                    lab.start_agent(ctx, &leases, "auto", &tag)?,
                )),
                Condition::Tcpdump => Some(Observer::Tcpdump(lab.start_tcpdump(ctx, &tag)?)),
            };
            if let Some(Observer::Agent(agent)) = &observer {
                let slot = &mut attached[usize::from(condition == Condition::OursXdp)];
                if slot.is_empty() {
                    *slot = hooks(&agent.attached());
                }
            }
            for (f, flow) in FLOWS.iter().enumerate() {
                let run = lab
                    .iperf(ctx, flow, secs, &format!("{tag}-f{f}"))
                    .with_context(|| format!("{}, {}", flow.label, condition.label()))?;
                sane(run.gbit_per_s > 0.0, || {
                    format!("{}, {}: no throughput", flow.label, condition.label())
                })?;
                samples[condition.index()][f].push(run);
            }
            if let Some(observer) = observer.as_mut() {
                observer.check_and_stop()?;
            }
        }
    }
    drop(lab);

    // Method text shared by the figures.
    let agent_cmd = |xdp: &str| {
        format!(
            "`dhcp-agent run --iface {IFACE_B}{xdp} --leases <empty> --metrics-addr \
             {METRICS_ADDR}` running in B"
        )
    };
    let attached_ours = format!("{} (attached: {})", agent_cmd(""), attached[0]);
    let attached_xdp = format!(
        "{} (attached: {})",
        agent_cmd(" --xdp-mode auto"),
        attached[1]
    );
    let tcpdump = format!("`tcpdump -i {IFACE_B} -w /dev/null 'udp port 67 or 68'` running in B");
    let during = |c: Condition| match c {
        Condition::Nothing => "nothing attached to B's veth".to_string(),
        Condition::Ours => attached_ours.clone(),
        Condition::OursXdp => attached_xdp.clone(),
        Condition::Tcpdump => tcpdump.clone(),
    };
    let setup = format!(
        "veth pair {IFACE_A} ({ADDR_A}/30, namespace A) ↔ {IFACE_B} ({ADDR_B}/30, namespace B), \
         iperf3 server in B (`iperf3 -s -1`), client in A"
    );
    let rounds_text = format!(
        "{rounds} rounds, the {} conditions interleaved in each (order rotating per round)",
        CONDITIONS.len()
    );

    let mut figures = Vec::new();
    for (f, flow) in FLOWS.iter().enumerate() {
        let client = format!(
            "`iperf3 -c {ADDR_B} -p {PORT} -t {secs} -J{}{}`",
            if flow.args.is_empty() { "" } else { " " },
            flow.args.join(" ")
        );
        let column = |c: Condition, pick: fn(&Run) -> f64| -> Vec<f64> {
            samples[c.index()][f].iter().map(pick).collect()
        };
        for c in CONDITIONS {
            figures.push(Figure::from_samples(
                GROUP,
                format!("{}: throughput, {}", flow.label, c.label()),
                "Gbit/s",
                &column(c, |r| r.gbit_per_s),
                format!(
                    "{client}: {}; receiver's bits_per_second; {setup}; {}; {rounds_text}",
                    flow.what,
                    during(c)
                ),
            ));
        }
        let ratio = |over: Condition, under: Condition| -> Vec<f64> {
            column(over, |r| r.gbit_per_s)
                .iter()
                .zip(column(under, |r| r.gbit_per_s))
                .map(|(o, u)| o / u)
                .collect()
        };
        for ours in [Condition::Ours, Condition::OursXdp] {
            for (under, target, text) in [
                (
                    Condition::Nothing,
                    0.98,
                    "at least 98% of the unobserved throughput",
                ),
                (Condition::Tcpdump, 1.0, "better than tcpdump's"),
            ] {
                let figure = Figure::from_samples(
                    GROUP,
                    format!("{}: {} / {}", flow.label, ours.label(), under.label()),
                    "x",
                    &ratio(ours, under),
                    format!(
                        "throughput with {} over throughput with {} in the same round \
                             (target: {text}); {client}, {}; {rounds_text}",
                        during(ours),
                        during(under),
                        flow.what
                    ),
                );
                // The targets hold the default; the XDP rows show why it is the default.
                figures.push(if ours == Condition::Ours {
                    figure.target(Target::AtLeast(target))
                } else {
                    figure
                });
            }
        }
        for c in CONDITIONS {
            figures.push(Figure::from_samples(
                GROUP,
                format!("{}: machine CPU per Gbit, {}", flow.label, c.label()),
                "CPU-s/Gbit",
                &column(c, |r| r.cpu_s_per_gbit),
                format!(
                    "busy CPU time of the whole machine (/proc/stat: user+nice+system+irq+\
                     softirq, all CPUs) during {client}, over Gbit received; {}; {}; \
                     {rounds_text}",
                    flow.what,
                    during(c)
                ),
            ));
        }
        for c in CONDITIONS {
            figures.push(Figure::from_samples(
                GROUP,
                format!("{}: iperf3 CPU per Gbit, {}", flow.label, c.label()),
                "CPU-s/Gbit",
                &column(c, |r| r.iperf3_cpu_s_per_gbit),
                format!(
                    "CPU time of the iperf3 client and server (iperf3's cpu_utilization_percent \
                     host_total + remote_total × duration; their system time includes the \
                     softirq work run in their context), over Gbit received; {client}, {}; {}; \
                     {rounds_text}",
                    flow.what,
                    during(c)
                ),
            ));
        }
    }
    Ok(figures)
}

/// Namespaces A and B with the veth pair between them; deleted on drop (also on failure),
/// with whatever still runs inside.
struct Lab {
    // B first: dropped first, so the agent (in B) goes before the pair does.
    b: Netns,
    a: Netns,
}

impl Lab {
    fn create() -> anyhow::Result<Lab> {
        let prefix = format!("dhcpobs-fwd-{}", std::process::id());
        let a = Netns::create(&format!("{prefix}-a"))?;
        let b = Netns::create(&format!("{prefix}-b"))?;
        dhcp_lab::netns::veth_pair(&a, IFACE_A, &b, IFACE_B)?;
        for (ns, iface, addr) in [(&a, IFACE_A, ADDR_A), (&b, IFACE_B, ADDR_B)] {
            ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", iface])?;
            ns.ip(&["link", "set", iface, "up"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        Ok(Lab { b, a })
    }

    /// One iperf3 test of `flow` for `secs` seconds: a one-off server in B, the client in A.
    fn iperf(&self, ctx: &Ctx, flow: &Flow, secs: u32, tag: &str) -> anyhow::Result<Run> {
        let mut server = Proc::spawn(
            self.b.command("iperf3").args(["-s", "-1", "-p", PORT]),
            &ctx.scratch.join(format!("fwd-iperf3-server-{tag}.log")),
            "iperf3 server",
        )?;
        let listening = || {
            self.b
                .command("ss")
                .args(["-Hltn", &format!("sport = :{PORT}")])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        };
        wait_for(Duration::from_secs(10), || listening() || !server.running())
            .context("waiting for the iperf3 server to listen")?;
        sane(server.running(), || {
            format!("iperf3 server exited: {}", server.log())
        })?;

        let out = ctx.scratch.join(format!("fwd-iperf3-client-{tag}.json"));
        let secs_text = secs.to_string();
        let before = CpuTimes::read()?;
        let mut client = Proc::spawn(
            self.a
                .command("iperf3")
                .args(["-c", ADDR_B, "-p", PORT, "-t", &secs_text, "-J"])
                .args(flow.args),
            &out,
            "iperf3 client",
        )?;
        let status = client.wait(Duration::from_secs(u64::from(secs) + 30))?;
        let after = CpuTimes::read()?;
        let json = client.log();
        if !status.success() {
            bail!("iperf3 client failed ({status}): {}", json.trim());
        }
        let _ = server.wait(Duration::from_secs(5));

        let report: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("iperf3 -J output in {}", out.display()))?;
        if let Some(error) = report.get("error") {
            bail!("iperf3: {error}");
        }
        let received = &report["end"]["sum_received"];
        let (Some(bits_per_second), Some(bytes)) = (
            received["bits_per_second"].as_f64(),
            received["bytes"].as_f64(),
        ) else {
            bail!("no end.sum_received in {}", out.display());
        };
        let cpu = &report["end"]["cpu_utilization_percent"];
        let (Some(seconds), Some(host), Some(remote)) = (
            received["seconds"].as_f64(),
            cpu["host_total"].as_f64(),
            cpu["remote_total"].as_f64(),
        ) else {
            bail!("no end.cpu_utilization_percent in {}", out.display());
        };
        let gbit = (bytes * 8.0 / 1e9).max(f64::MIN_POSITIVE);
        Ok(Run {
            gbit_per_s: bits_per_second / 1e9,
            cpu_s_per_gbit: after.busy_secs_since(&before) / gbit,
            iperf3_cpu_s_per_gbit: (host + remote) / 100.0 * seconds / gbit,
        })
    }

    /// `dhcp-agent run` on B's veth, as operators run it; waits until it has attached and
    /// answers `/healthz`.
    fn start_agent(
        &self,
        ctx: &Ctx,
        leases: &Path,
        xdp_mode: &str,
        tag: &str,
    ) -> anyhow::Result<AgentUnderTest> {
        let state = ctx.scratch.join(format!("fwd-state-{tag}.json"));
        let mut args: Vec<OsString> = ["run", "--iface", IFACE_B, "--xdp-mode", xdp_mode]
            .into_iter()
            .map(OsString::from)
            .collect();
        args.extend(["--leases".into(), leases.into()]);
        args.extend(["--state-file".into(), state.into()]);
        args.extend(["--metrics-addr".into(), METRICS_ADDR.into()]);
        let agent = AgentUnderTest::start(
            &self.b,
            &ctx.agent,
            &args,
            &ctx.scratch.join(format!("fwd-agent-{tag}.log")),
            Events::Discard,
        )?;
        let url = format!("http://{METRICS_ADDR}/healthz");
        let healthy = wait_for(Duration::from_secs(60), || {
            http_get(self.b.name(), &url, &[]).is_ok_and(|(status, _)| status == 200)
        });
        sane(healthy.is_ok(), || {
            format!(
                "dhcp-agent /healthz not 200 within 60 s: {}",
                agent.log_tail()
            )
        })?;
        Ok(agent)
    }

    /// tcpdump on B's veth with the DHCP filter, writing nowhere; waits for "listening on".
    fn start_tcpdump(&self, ctx: &Ctx, tag: &str) -> anyhow::Result<Proc> {
        let mut proc = Proc::spawn(
            self.b
                .command("tcpdump")
                .args(["-i", IFACE_B, "-w", "/dev/null", "udp port 67 or 68"]),
            &ctx.scratch.join(format!("fwd-tcpdump-{tag}.log")),
            "tcpdump",
        )?;
        let started = wait_for(Duration::from_secs(30), || {
            proc.log().contains("listening on") || !proc.running()
        });
        sane(started.is_ok() && proc.running(), || {
            format!("tcpdump did not start: {}", proc.log().trim())
        })?;
        Ok(proc)
    }
}

/// What watches B's veth during a run.
enum Observer {
    Agent(AgentUnderTest),
    Tcpdump(Proc),
}

impl Observer {
    /// Fails if it exited during the runs; stops it.
    fn check_and_stop(&mut self) -> anyhow::Result<()> {
        match self {
            Observer::Agent(agent) => {
                sane(agent.running(), || {
                    format!("dhcp-agent exited during its runs: {}", agent.log_tail())
                })?;
                agent.stop()?;
            }
            Observer::Tcpdump(tcpdump) => {
                sane(tcpdump.running(), || {
                    format!("tcpdump exited during its runs: {}", tcpdump.log().trim())
                })?;
                tcpdump.stop()?;
            }
        }
        Ok(())
    }
}

/// "xdp_ingress (driver mode), tc_egress (tcx)", from the agent's "IFACE: HOOK" attach lines.
fn hooks(attached: &[String]) -> String {
    attached
        .iter()
        .map(|l| l.split_once(": ").map_or(l.as_str(), |(_, hook)| hook))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A process started inside a namespace (`ip netns exec` execs it, so the child is the process
/// itself), its stdout and stderr in one file; stopped with SIGTERM on drop.
struct Proc {
    child: Child,
    log: PathBuf,
    what: &'static str,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path, what: &'static str) -> anyhow::Result<Proc> {
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Proc {
            child,
            log: log.to_owned(),
            what,
        })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; kills it after `timeout`.
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} still running after {timeout:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (SIGKILL after 10 s).
    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if self.running() {
            let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
            // SAFETY: kill(2) on our own child, which has not been reaped (still running).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The machine's CPU time so far, from the "cpu" line of /proc/stat (all CPUs).
struct CpuTimes {
    busy: u64,
}

impl CpuTimes {
    fn read() -> anyhow::Result<CpuTimes> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("parsing /proc/stat")?;
        // user nice system idle iowait irq softirq ...
        anyhow::ensure!(fields.len() >= 7, "short cpu line in /proc/stat");
        Ok(CpuTimes {
            busy: fields[0] + fields[1] + fields[2] + fields[5] + fields[6],
        })
    }

    /// Busy CPU seconds (summed over CPUs) since `earlier`.
    fn busy_secs_since(&self, earlier: &CpuTimes) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.busy.saturating_sub(earlier.busy) as f64 / ticks
    }
}
