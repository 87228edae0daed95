//! Benchmark 3 (issue 6): a DHCP storm. A generator in a namespace of its own floods the
//! router namespace's guest interface with client frames (DISCOVER, REQUEST and RELEASE from
//! many MACs) at increasing rates while the release agent runs there as operators run it. Each
//! step's frames are followed end to end: sent by the generator, seen by the XDP program (or
//! counted lost for a full ring buffer), decoded by the agent.
//!
//! No DHCP server runs: what is measured is the observer, not dnsmasq.
mod flood;

use std::{
    ffi::OsString,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use dhcp_lab::{Netns, netns, prometheus::http_get};

use self::flood::{Pace, RawSender, Sent};
use super::{Ctx, Figure, Target, metric_sum, number, parse_metrics, sane};
use crate::agent::{AgentUnderTest, Events, Limits};

const GROUP: &str = "DHCP storm";
const ROUTER_IFACE: &str = "guest0";
const FLOOD_IFACE: &str = "flood0";
const METRICS_ADDR: &str = "127.0.0.1:9967";
/// The rate the performance issue asked to hold without loss: held by the larger ring, one
/// option away.
const TARGET_PPS: f64 = 200_000.0;
/// What the default ring must hold without loss: five times what a CloudStack router at its
/// 2,100 leases sees when every VM boots at once (four frames each within about a second,
/// some 10,000 frames/s), with the agent's own stalls (a state-file write in a storm of
/// releases) on top.
const ROUTER_TARGET_PPS: f64 = 50_000.0;
/// The check after the storm: this many frames at this rate must all arrive.
const AFTER_FRAMES: u64 = 1_000;
const AFTER_PPS: f64 = 10_000.0;
/// The warm-up before each ramp: every frame once at this rate, then this long for the
/// releases among them to settle (the agent runs with a 1 s grace).
const WARM_UP_PPS: f64 = 50_000.0;
const WARM_UP_SETTLE: Duration = Duration::from_secs(3);
/// A larger ring buffer, one option away: the default before issue 15 sized it for a router.
const BIG_RING_BYTES: u32 = 8 << 20;

/// One agent configuration and the rates it is ramped through.
struct Config {
    /// Appended to figure names ("" for the default configuration).
    suffix: &'static str,
    extra_args: Vec<String>,
    limits: Limits,
    offered: Vec<Option<f64>>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let k = |pps: f64| Some(pps * 1e3);
    let default = Config {
        suffix: "",
        extra_args: Vec::new(),
        limits: Limits::default(),
        offered: ctx.pick(
            vec![
                k(10.0),
                k(25.0),
                k(50.0),
                k(100.0),
                k(150.0),
                k(200.0),
                k(300.0),
                k(400.0),
                None,
            ],
            vec![k(10.0), k(100.0), None],
        ),
    };
    // The larger ring only matters where the default one overflows: the upper steps.
    let big_ring = Config {
        suffix: ", 8 MiB ring buffer",
        extra_args: vec!["--ring-bytes".into(), BIG_RING_BYTES.to_string()],
        limits: Limits::default(),
        offered: ctx.pick(
            vec![k(50.0), k(100.0), k(200.0), k(300.0), k(400.0), None],
            vec![k(100.0), None],
        ),
    };
    // The agent as it was before issue 15: the 8 MiB ring, and the kernel waking it for every
    // frame that finds the ring empty; measured in the same ramps as today's defaults.
    let before = Config {
        suffix: ", as before (8 MiB ring, a wake-up per frame)",
        extra_args: [
            "--ring-bytes",
            &BIG_RING_BYTES.to_string(),
            "--wake-interval",
            "0ms",
        ]
        .map(String::from)
        .to_vec(),
        limits: Limits::default(),
        offered: ctx.pick(
            vec![k(10.0), k(25.0), k(50.0), k(100.0), None],
            vec![k(10.0), None],
        ),
    };
    // A default CloudStack router's vCPU: one CPU, capped at half of it.
    let half_cpu = Config {
        suffix: ", one CPU at half speed",
        extra_args: Vec::new(),
        limits: Limits {
            cpu_share: Some(0.5),
            ..Limits::default()
        },
        offered: ctx.pick(
            vec![k(10.0), k(25.0), k(50.0), k(100.0), None],
            vec![k(10.0), None],
        ),
    };
    let step = ctx.pick(Duration::from_secs(3), Duration::from_millis(300));
    let repeats = ctx.pick(3, 1);
    let frames = dhcp_lab::traffic::client_frames(ctx.pick(100_000, 20_000));
    let lab = Lab::create()?;
    let configs = [default, big_ring, before, half_cpu];
    let mut ramps: Vec<Vec<Ramp>> = configs.iter().map(|_| Vec::new()).collect();
    // Configurations alternate within each repeat, so that both see the same noise.
    for repeat in 0..repeats {
        for (config, done) in configs.iter().zip(&mut ramps) {
            let agent = start_agent(ctx, &lab, &config.extra_args, config.limits)?;
            let ramp = ramp(&lab, &agent, &frames, &config.offered, step).with_context(|| {
                format!(
                    "ramp {}{}; the agent's stderr ends: {}",
                    repeat + 1,
                    config.suffix,
                    agent.log_tail()
                )
            })?;
            eprintln!(
                "bench: storm ramp {}{}:\n{}",
                repeat + 1,
                config.suffix,
                ramp.text()
            );
            ramp.check()?;
            done.push(ramp);
        }
    }
    let setup = format!(
        "`dhcp-agent run --iface {ROUTER_IFACE} --leases <empty file> --grace 1s` ({}) in a \
         router namespace, stdout to /dev/null; a generator in a second namespace (Rust, one \
         thread) sends {} distinct pre-built client frames ({} bytes on average: DISCOVER, \
         REQUEST and, for one client in four, RELEASE, one MAC per client) cycled, over a veth \
         pair, through an \
         AF_PACKET socket (sendmmsg, up to 64 frames a call, token-bucket pacing); no DHCP \
         server runs (the observer is measured, not dnsmasq); steps of {step:?} at increasing \
         rates, counters read from /metrics once every frame is accounted for; {repeats} ramps",
        ramps[0]
            .first()
            .map(|r| r.attached.join(", "))
            .unwrap_or_default(),
        frames.len(),
        frames.iter().map(Vec::len).sum::<usize>() / frames.len().max(1),
    );
    let mut out = figures(&ramps[0], &configs[0], &setup, true);
    out.extend(figures_big_ring(&ramps[1], &configs[1]));
    for n in [2, 3] {
        out.extend(figures(&ramps[n], &configs[n], &setup, false));
    }
    out.push(batching_figure(&ramps[0], &configs[0]));
    let mut figures = out;
    figures.push(Figure::from_samples(
        GROUP,
        "CPU used by other processes during the ramps",
        "% of the machine",
        &ramps
            .iter()
            .flatten()
            .map(Ramp::others_percent)
            .collect::<Vec<_>>(),
        "Busy time of the machine (/proc/stat) minus the CPU time of the agent and of the \
         generator thread (which includes the kernel receive path, veth NAPI, XDP and IP, that \
         runs in its softirq), over all steps of a ramp: how much else ran while it was \
         measured (about 0 on a quiet machine)",
    ));
    Ok(figures)
}

/// The two namespaces and the veth between them; removed on drop.
struct Lab {
    router: Netns,
    flood: Netns,
    /// The next frame the generator sends.
    cursor: AtomicUsize,
}

impl Lab {
    fn create() -> anyhow::Result<Lab> {
        let prefix = format!("dhcpobs-storm-{}", std::process::id());
        let router = Netns::create(&format!("{prefix}-router"))?;
        let flood = Netns::create(&format!("{prefix}-flood"))?;
        dhcp_lab::netns::veth_pair(&router, ROUTER_IFACE, &flood, FLOOD_IFACE)?;
        // The router's guest side looks like the lab's (primary address and the VIP).
        for address in [
            format!("{}/24", dhcp_lab::PRIMARY_ADDR),
            format!("{}/24", dhcp_lab::VIP_ADDR),
        ] {
            router.ip(&["addr", "add", &address, "dev", ROUTER_IFACE])?;
        }
        router.ip(&["link", "set", "lo", "up"])?;
        router.ip(&["link", "set", ROUTER_IFACE, "up"])?;
        flood.ip(&["link", "set", "lo", "up"])?;
        flood.ip(&["link", "set", FLOOD_IFACE, "up"])?;
        Ok(Lab {
            router,
            flood,
            cursor: AtomicUsize::new(0),
        })
    }

    fn metrics(&self) -> anyhow::Result<Counters> {
        let (status, body) = http_get(
            self.router.name(),
            &format!("http://{METRICS_ADDR}/metrics"),
            &[],
        )?;
        anyhow::ensure!(status == 200, "/metrics answered {status}: {body}");
        let m = parse_metrics(&body);
        Ok(Counters {
            events: metric_sum(&m, "dhcp_capture_events_total", &[]),
            lost: metric_sum(&m, "dhcp_capture_lost_events_total", &[]),
            decoded: metric_sum(&m, "dhcp_packets_total", &[]),
            malformed: metric_sum(&m, "dhcp_malformed_packets_total", &[]),
        })
    }

    /// The counters once the agent has taken in the `sent` frames sent since `before`: every
    /// one seen or lost by the kernel, every one seen decoded (the kernel counters reach
    /// /metrics once a second). If that does not happen within 10 s, the counters once they
    /// stop moving (two scrapes more than a second apart agree), for the checks to report.
    fn settled(&self, before: Counters, sent: u64) -> anyhow::Result<Counters> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.metrics()?;
        loop {
            let step = last - before;
            if step.events + step.lost == sent as f64
                && step.decoded + step.malformed == step.events
            {
                return Ok(last);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            last = self.metrics()?;
        }
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(1050));
            let now = self.metrics()?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        anyhow::bail!("the agent's counters did not settle in 40 s: {last:?}")
    }

    /// How long /healthz takes to answer; fails unless it answers 200.
    fn healthz(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (status, body) = http_get(
            self.router.name(),
            &format!("http://{METRICS_ADDR}/healthz"),
            &[],
        )?;
        let took = started.elapsed();
        anyhow::ensure!(status == 200, "/healthz answered {status}: {body}");
        Ok(took)
    }

    /// Floods from the flood namespace, going on through `frames` where the last flood
    /// stopped.
    fn flood(&self, frames: &[Vec<u8>], pace: Pace) -> anyhow::Result<Sent> {
        let (sent, cursor) = netns::inside(self.flood.name(), || {
            let mut sender = RawSender::open(FLOOD_IFACE, self.cursor.load(Ordering::Relaxed))?;
            let sent = sender.flood(frames, pace)?;
            anyhow::Ok((sent, sender.cursor))
        })??;
        self.cursor.store(cursor, Ordering::Relaxed);
        Ok(sent)
    }
}

/// The agent's counters as /metrics shows them (every hook, every direction).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Counters {
    /// Frames the kernel programs passed on.
    events: f64,
    /// Frames they could not pass on (ring buffer full).
    lost: f64,
    /// Packets the agent decoded.
    decoded: f64,
    malformed: f64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            events: self.events - o.events,
            lost: self.lost - o.lost,
            decoded: self.decoded - o.decoded,
            malformed: self.malformed - o.malformed,
        }
    }
}

/// `dhcp-agent run` in the router namespace with an empty lease file; stopped on drop.
fn start_agent(
    ctx: &Ctx,
    lab: &Lab,
    extra_args: &[String],
    limits: Limits,
) -> anyhow::Result<AgentUnderTest> {
    let dir = ctx.scratch.join("storm");
    std::fs::create_dir_all(&dir)?;
    let leases = dir.join("dnsmasq.leases");
    std::fs::write(&leases, "")?;
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let mut args: Vec<OsString> = vec!["run".into(), "--iface".into(), ROUTER_IFACE.into()];
    args.extend(["--leases".into(), leases.into()]);
    args.extend(["--state-file".into(), state.into()]);
    args.extend(["--grace", "1s", "--metrics-addr", METRICS_ADDR].map(OsString::from));
    args.extend(extra_args.iter().map(OsString::from));
    // Events discarded: one line per settled RELEASE, thousands a second here.
    AgentUnderTest::start_limited(
        &lab.router,
        &ctx.agent,
        &args,
        &dir.join("agent.stderr"),
        Events::Discard,
        limits,
    )
}

/// The machine's CPU time, from the first line of /proc/stat (clock ticks, all cores).
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    busy: f64,
    total: f64,
}

impl CpuTimes {
    fn read() -> anyhow::Result<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(v.len() >= 8, "short /proc/stat line: {line}");
        // user nice system idle iowait irq softirq steal (guest time is in user already).
        let total: f64 = v[..8].iter().sum();
        Ok(CpuTimes {
            busy: total - v[3] - v[4],
            total,
        })
    }

    fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            busy: self.busy - before.busy,
            total: self.total - before.total,
        }
    }
}

/// What the machine and the agent did while something ran.
struct Usage {
    agent: Duration,
    /// Share of the machine that was busy, 0..1.
    busy: f64,
    /// Wall time.
    wall: Duration,
}

/// Runs `work` and measures the agent's CPU time and the machine's busy share meanwhile.
fn measured<T>(
    agent: &AgentUnderTest,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Usage)> {
    let (cpu0, machine0, start) = (agent.cpu()?, CpuTimes::read()?, Instant::now());
    let out = work()?;
    let (cpu1, machine1) = (agent.cpu()?, CpuTimes::read()?);
    let machine = machine1.since(machine0);
    Ok((
        out,
        Usage {
            agent: cpu1.saturating_sub(cpu0),
            busy: machine.busy / machine.total.max(1.0),
            wall: start.elapsed(),
        },
    ))
}

/// One step of a ramp.
#[derive(Debug, Clone)]
struct Step {
    /// Offered rate; `None` for as fast as the generator goes.
    offered: Option<f64>,
    sent: Sent,
    seen: Counters,
    /// Agent CPU from the step's start until every frame was accounted for.
    agent_cpu: Duration,
    /// CPU time of processes other than the agent and the generator, over the step.
    others_cpu: f64,
    /// The machine's capacity over the step (wall time × cores).
    capacity: f64,
}

impl Step {
    fn label(&self) -> String {
        label(self.offered)
    }

    /// The step's rate on the loss curve: the offered rate when the generator kept it (within
    /// 0.5%: a paced step ends a few frames short of rate × duration), else what it achieved.
    fn rate(&self) -> f64 {
        let achieved = self.sent.rate();
        match self.offered {
            Some(offered) if achieved >= 0.995 * offered => offered,
            _ => achieved,
        }
    }

    /// Every frame sent was seen and decoded: nothing lost anywhere.
    fn lossless(&self) -> bool {
        let sent = self.sent.sent as f64;
        self.seen.lost == 0.0 && self.seen.events == sent && self.seen.decoded == sent
    }

    fn loss_percent(&self) -> f64 {
        100.0 * self.seen.lost / (self.sent.sent as f64).max(1.0)
    }

    fn decoded_rate(&self) -> f64 {
        self.seen.decoded / self.sent.elapsed.as_secs_f64().max(1e-9)
    }

    /// Agent CPU per decoded packet, µs.
    fn agent_us_per_packet(&self) -> f64 {
        self.agent_cpu.as_secs_f64() * 1e6 / self.seen.decoded.max(1.0)
    }

    /// Agent CPU over the step as a share of one core, %.
    fn agent_core_percent(&self) -> f64 {
        100.0 * self.agent_cpu.as_secs_f64() / self.sent.elapsed.as_secs_f64().max(1e-9)
    }
}

fn label(offered: Option<f64>) -> String {
    match offered {
        Some(rate) => format!("{}k pps offered", number(rate / 1000.0)),
        None => "max (unpaced)".into(),
    }
}

/// One run of every step, and the checks after it.
struct Ramp {
    steps: Vec<Step>,
    /// /healthz answer times while the unpaced step ran.
    healthz_during: Vec<Duration>,
    /// /healthz right after the unpaced step.
    healthz_after: Duration,
    /// The small batch after the storm.
    after: Step,
    attached: Vec<String>,
}

impl Ramp {
    /// The highest achieved rate before the first step with any loss.
    fn highest_lossless(&self) -> f64 {
        self.steps
            .iter()
            .take_while(|s| s.lossless())
            .map(Step::rate)
            .fold(0.0, f64::max)
    }

    fn others_percent(&self) -> f64 {
        let others: f64 = self.steps.iter().map(|s| s.others_cpu).sum();
        let capacity: f64 = self.steps.iter().map(|s| s.capacity).sum();
        100.0 * others / capacity.max(1e-9)
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for s in self.steps.iter().chain([&self.after]) {
            out += &format!(
                "  {:<18} sent {:>8} ({:>7} pps, {} refused), events {:>8}, lost {:>6}, decoded \
                 {:>8} | agent {:>3.0}% of a core, {:>5.2} µs/packet | generator thread {:>3.0}% \
                 of a core | other processes {:>3.0}% of the machine\n",
                s.label(),
                s.sent.sent,
                number(s.sent.rate()),
                s.sent.refused,
                s.seen.events,
                s.seen.lost,
                s.seen.decoded,
                s.agent_core_percent(),
                s.agent_us_per_packet(),
                100.0 * s.sent.cpu.as_secs_f64() / s.sent.elapsed.as_secs_f64().max(1e-9),
                100.0 * s.others_cpu / s.capacity.max(1e-9),
            );
        }
        let during: Vec<String> = self
            .healthz_during
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect();
        out += &format!(
            "  /healthz during max (ms): {}; after: {:.1} ms; attached: {}",
            during.join(" "),
            ms(self.healthz_after),
            self.attached.join(", ")
        );
        out
    }

    /// Correctness, whatever the rate: every frame sent reaches the XDP program (seen or
    /// counted lost), the agent decodes every frame it is given, and the batch after the storm
    /// arrives whole.
    fn check(&self) -> anyhow::Result<()> {
        for s in self.steps.iter().chain([&self.after]) {
            let sent = s.sent.sent as f64;
            sane(s.sent.sent > 0, || format!("{}: nothing sent", s.label()))?;
            sane(s.seen.events + s.seen.lost == sent, || {
                format!(
                    "{}: {sent} frames sent but the kernel counted {} events + {} lost",
                    s.label(),
                    s.seen.events,
                    s.seen.lost
                )
            })?;
            sane(s.seen.decoded == s.seen.events, || {
                format!(
                    "{}: the kernel passed on {} events but the agent decoded {} ({} malformed)",
                    s.label(),
                    s.seen.events,
                    s.seen.decoded,
                    s.seen.malformed
                )
            })?;
            // Decoding costs something: a step that read no CPU measured nothing (per-packet
            // figures and their ratio would be 0).
            sane(
                s.seen.decoded == 0.0 || s.agent_cpu > Duration::ZERO,
                || {
                    format!(
                        "{}: the agent decoded {} packets on no measured CPU time",
                        s.label(),
                        s.seen.decoded
                    )
                },
            )?;
        }
        sane(self.after.lossless(), || {
            format!(
                "the batch after the storm did not arrive whole: {:?}",
                self.after
            )
        })
    }
}

/// Every step at increasing rates, then the checks after the storm.
fn ramp(
    lab: &Lab,
    agent: &AgentUnderTest,
    frames: &[Vec<u8>],
    offered: &[Option<f64>],
    duration: Duration,
) -> anyhow::Result<Ramp> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut steps = Vec::new();
    let mut healthz_during = Vec::new();
    let mut healthz_after = Duration::ZERO;
    let mut before = lab.metrics()?;
    // One step: flood at `pace` (probing /healthz meanwhile if `probe`), then wait until every
    // frame is accounted for.
    let mut step = |pace: Pace, probe: bool| -> anyhow::Result<Step> {
        let ((sent, counters), usage) = measured(agent, || {
            let sent = if probe {
                let (sent, probes) = flood_probing(lab, frames, pace);
                healthz_after = lab.healthz()?;
                healthz_during = probes?;
                sent?
            } else {
                lab.flood(frames, pace)?
            };
            Ok((sent, lab.settled(before, sent.sent)?))
        })?;
        let capacity = usage.wall.as_secs_f64() * cores;
        let step = Step {
            offered: pace.rate,
            sent,
            seen: counters - before,
            agent_cpu: usage.agent,
            others_cpu: (usage.busy * capacity
                - usage.agent.as_secs_f64()
                - sent.cpu.as_secs_f64())
            .max(0.0),
            capacity,
        };
        before = counters;
        Ok(step)
    };
    // Warm-up, not reported: every client once, then the grace for their releases to settle.
    // Without it the first steps measured the agent's tables growing from empty (page faults,
    // rehashing: perf showed clear_page and memmove on top at 10k frames/s) rather than a
    // router's steady state, where its clients are known.
    step(
        Pace {
            rate: Some(WARM_UP_PPS),
            duration: Duration::from_secs(60),
            frames: Some(frames.len() as u64),
        },
        false,
    )?;
    std::thread::sleep(WARM_UP_SETTLE);
    for &rate in offered {
        let pace = Pace {
            rate,
            duration,
            frames: None,
        };
        steps.push(step(pace, rate.is_none())?);
    }
    let after = step(
        Pace {
            rate: Some(AFTER_PPS),
            duration: Duration::from_secs(10),
            frames: Some(AFTER_FRAMES),
        },
        false,
    )?;
    Ok(Ramp {
        steps,
        healthz_during,
        healthz_after,
        after,
        attached: agent.attached(),
    })
}

/// Floods while another thread asks /healthz every 100 ms: is the agent still answering?
fn flood_probing(
    lab: &Lab,
    frames: &[Vec<u8>],
    pace: Pace,
) -> (anyhow::Result<Sent>, anyhow::Result<Vec<Duration>>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut probes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                probes.push(lab.healthz()?);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(probes)
        });
        let sent = lab.flood(frames, pace);
        stop.store(true, Ordering::Relaxed);
        let probes = prober
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the /healthz prober panicked")));
        (sent, probes)
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Per-ramp values of `f`.
fn samples(ramps: &[Ramp], f: impl Fn(&Ramp) -> f64) -> Vec<f64> {
    ramps.iter().map(f).collect()
}

fn figures(ramps: &[Ramp], config: &Config, setup: &str, with_target: bool) -> Vec<Figure> {
    let suffix = config.suffix;
    let mut figures = Vec::new();
    let highest = Figure::from_samples(
        GROUP,
        format!("highest rate with zero lost events{suffix}"),
        "pps",
        &samples(ramps, Ramp::highest_lossless),
        format!(
            "{setup}. The rate of the fastest step before the first step with any loss (its \
             offered rate when the generator achieved it within 0.5%, else the achieved rate); a step is lossless when kernel events = frames sent, lost events = 0 and \
             packets decoded by the agent = frames sent (when every step is, this is the \
             generator's own limit)"
        ),
    );
    figures.push(if with_target {
        highest.target(Target::AtLeast(ROUTER_TARGET_PPS))
    } else {
        highest
    });
    for (i, &rate) in config.offered.iter().enumerate() {
        let name = label(rate);
        figures.push(Figure::from_samples(
            GROUP,
            format!("send rate at {name}{suffix}"),
            "pps",
            &samples(ramps, |r| r.steps[i].sent.rate()),
            format!(
                "Frames the generator's socket accepted per second during the step ({} refused \
                 with ENOBUFS over all ramps, not counted as sent)",
                ramps.iter().map(|r| r.steps[i].sent.refused).sum::<u64>()
            ),
        ));
        figures.push(Figure::from_samples(
            GROUP,
            format!("loss at {name}{suffix}"),
            "%",
            &samples(ramps, |r| r.steps[i].loss_percent()),
            "dhcp_capture_lost_events_total / frames sent, over the step (the ring buffer was \
             full); every other frame reached the agent and was decoded",
        ));
        figures.push(Figure::from_samples(
            GROUP,
            format!("agent CPU at {name}{suffix}"),
            "% of a core",
            &samples(ramps, |r| r.steps[i].agent_core_percent()),
            "utime + stime of the agent (/proc/PID/stat) from the step's start until every \
             frame was counted, over the step's duration",
        ));
    }
    let top = config.offered.len() - 1;
    figures.push(Figure::from_samples(
        GROUP,
        format!("decoded rate at max (unpaced){suffix}"),
        "pps",
        &samples(ramps, |r| r.steps[top].decoded_rate()),
        "Packets the agent decoded (dhcp_packets_total) in the unpaced step / its duration",
    ));
    figures.push(Figure::from_samples(
        GROUP,
        format!("agent CPU per decoded packet at max (unpaced){suffix}"),
        "µs",
        &samples(ramps, |r| r.steps[top].agent_us_per_packet()),
        "The agent's CPU time in the unpaced step / packets it decoded",
    ));
    figures.push(Figure::from_samples(
        GROUP,
        format!(
            "agent CPU per decoded packet at {}{suffix}",
            label(config.offered[0])
        ),
        "µs",
        &samples(ramps, |r| r.steps[0].agent_us_per_packet()),
        "The agent's CPU time in the slowest step / packets it decoded",
    ));
    if !with_target {
        return figures;
    }
    figures.push(Figure::from_samples(
        GROUP,
        "/healthz during max (unpaced), slowest",
        "ms",
        &samples(ramps, |r| {
            r.healthz_during.iter().copied().max().map_or(0.0, ms)
        }),
        "GET /healthz every 100 ms from the router namespace while the unpaced step runs (a \
         new connection each, HTTP client in this process); the slowest answer, all were 200",
    ));
    figures.push(Figure::from_samples(
        GROUP,
        "/healthz after the storm",
        "ms",
        &samples(ramps, |r| ms(r.healthz_after)),
        "GET /healthz right after the unpaced step ended, until its 200 answer",
    ));
    figures.push(Figure::from_samples(
        GROUP,
        "loss in a 1,000-frame batch at 10k pps after the storm",
        "%",
        &samples(ramps, |r| {
            let sent = r.after.sent.sent as f64;
            100.0 * (sent - r.after.seen.decoded) / sent.max(1.0)
        }),
        "Frames sent but not decoded by the agent, in a batch sent once the unpaced step was \
         fully counted",
    ));
    figures
}

/// How much a packet costs at a low steady rate against a saturated agent: the wake-ups'
/// share. Issue 15 asks for at most twice.
fn batching_figure(ramps: &[Ramp], config: &Config) -> Figure {
    let top = config.offered.len() - 1;
    Figure::from_samples(
        GROUP,
        format!(
            "agent CPU per packet at {} / at max (unpaced)",
            label(config.offered[0])
        ),
        "x",
        &samples(ramps, |r| {
            r.steps[0].agent_us_per_packet() / r.steps[top].agent_us_per_packet().max(1e-9)
        }),
        "Per ramp: the agent's CPU per decoded packet in the slowest step over that in the \
         unpaced one (1 when waking up costs nothing; the kernel programs wake the agent at \
         most once per --wake-interval, 20 ms by default)",
    )
    .target(Target::AtMost(2.0))
}

/// The larger ring's figures: where the ramp ends and how much it loses from the target up.
fn figures_big_ring(ramps: &[Ramp], config: &Config) -> Vec<Figure> {
    let first = config
        .offered
        .first()
        .map_or_else(String::new, |r| label(*r));
    let mut out = vec![
        Figure::from_samples(
            GROUP,
            format!("highest rate with zero lost events{}", config.suffix),
            "pps",
            &samples(ramps, Ramp::highest_lossless),
            format!(
                "The same ramps with `--ring-bytes {BIG_RING_BYTES}` (one option: 8 times the \
                 default ring buffer), steps from {first} up, alternating with the default \
                 configuration's ramps; the same lossless rule"
            ),
        )
        .target(Target::AtLeast(TARGET_PPS)),
    ];
    let top = config.offered.len() - 1;
    for (i, &rate) in config.offered.iter().enumerate() {
        if i != top && rate.is_some_and(|r| r < TARGET_PPS) {
            continue;
        }
        out.push(Figure::from_samples(
            GROUP,
            format!("loss at {}{}", label(rate), config.suffix),
            "%",
            &samples(ramps, |r| r.steps[i].loss_percent()),
            "dhcp_capture_lost_events_total / frames sent, over the step",
        ));
    }
    out
}
