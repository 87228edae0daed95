//! `cargo xtask soak`: the daemon on the redundant-VR lab for a set time while VMs come and go,
//! as on a router that runs for months. Checks what only time shows:
//! - resident memory and open file descriptors stay flat after warm-up;
//! - no kernel event is lost under background DHCP traffic below the storm threshold;
//! - every RELEASE is accounted for: each settled with the right outcome, each dropped one
//!   repaired exactly once, and the lease file ends holding only the VM still running;
//! - the server, which serves throughout, is never judged down.
//!
//! Each cycle is one VM's life on the guest port: a new MAC, dhclient gets a lease, and then in
//! turn: CloudStack expunges it with the real `dhcp_release` (dnsmasq drops it: option 54 is the
//! primary address), the VM releases its own lease (`dhclient -r`, honored), or it renews first
//! and is then expunged.
use std::{
    fs,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use dhcp_lab::{IGNORED_MAC, Lab, LabConfig, VM_IFACE, frames};
use serde::Serialize;
use serde_json::Value;

use crate::{
    agent::{AgentUnderTest, Events},
    bench::{metric_sum, parse_metrics},
};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes (before a release: `--minutes 240`).
    #[arg(long, default_value_t = 5.0)]
    pub minutes: f64,
    /// Seconds between samples of memory and open files.
    #[arg(long, default_value_t = 5)]
    pub sample_secs: u64,
    /// Background DHCP frames per second on the guest port (DISCOVERs dnsmasq ignores), far
    /// below the storm threshold `cargo xtask bench` measures.
    #[arg(long, default_value_t = 200)]
    pub background_pps: u32,
    /// Where the report goes (default: the cargo target directory's `soak/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How a VM's life ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Ending {
    /// `dhcp_release` with the primary address as server id: dropped, then repaired.
    Expunged,
    /// `dhclient -r`: honored.
    OwnRelease,
    /// A renewal, then expunged.
    RenewedThenExpunged,
}

impl Ending {
    fn of_cycle(n: u64) -> Ending {
        match n % 3 {
            0 => Ending::Expunged,
            1 => Ending::OwnRelease,
            _ => Ending::RenewedThenExpunged,
        }
    }

    fn dropped(self) -> bool {
        self != Ending::OwnRelease
    }
}

#[derive(Debug, Default, Serialize)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    open_fds: usize,
    cycles: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    minutes: f64,
    cycles: u64,
    /// Release events: the VMs' RELEASEs and the repairs' own.
    releases: u64,
    dropped: u64,
    repaired: u64,
    honored: u64,
    background_frames: u64,
    kernel_events: f64,
    kernel_events_lost: f64,
    rss_kib_warm: u64,
    rss_kib_end: u64,
    rss_kib_max: u64,
    open_fds_min: usize,
    open_fds_max: usize,
    samples: Vec<Sample>,
}

/// Memory may move by this much after warm-up (allocator arenas settling, the metrics
/// registry's label sets filling) without counting as growth.
const RSS_SLACK_KIB: u64 = 2 * 1024;
const METRICS: &str = "http://127.0.0.1:9967/metrics";

pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--package", "dhcp-agent"])?;
    let agent_bin = crate::target_dir().join("release/dhcp-agent");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::target_dir().join("soak"));
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mut lab = Lab::start(LabConfig::default()).context("starting the lab")?;
    let mut agent_args = vec!["run".to_owned(), "--remediate".to_owned()];
    agent_args.extend(lab.agent_run_options());
    agent_args.push("--state-file".to_owned());
    agent_args.push(lab.dir.join("state.json").to_string_lossy().into_owned());
    let agent = AgentUnderTest::start(
        &lab.router,
        &agent_bin,
        &agent_args,
        &out.join("agent.stderr"),
        Events::Json,
    )?;
    eprintln!(
        "soak: {:.1} min of VM churn on the redundant-VR lab, {} background DHCP frames/s",
        args.minutes, args.background_pps
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.minutes * 60.0);
    let stop_background = AtomicBool::new(false);
    let background_sent = AtomicU64::new(0);
    let mut samples = Vec::new();
    let mut cycles = 0u64;
    let mut tally = Tally::default();
    let vm_ns = lab.vm.ns.name().to_owned();
    // Held while the VM's link is down for a new MAC, when nothing can be sent on it.
    let link = Mutex::new(());
    let churn = std::thread::scope(|scope| -> anyhow::Result<()> {
        let background = scope.spawn(|| {
            background_traffic(
                &vm_ns,
                args.background_pps,
                &link,
                &stop_background,
                &background_sent,
            )
        });
        let result = (|| -> anyhow::Result<()> {
            let mut next_sample = Instant::now();
            while Instant::now() < deadline {
                if Instant::now() >= next_sample {
                    samples.push(sample(&agent, started, cycles)?);
                    next_sample += Duration::from_secs(args.sample_secs);
                }
                one_life(&mut lab, &link, &agent, cycles, &mut tally)
                    .with_context(|| format!("cycle {cycles}"))?;
                cycles += 1;
            }
            samples.push(sample(&agent, started, cycles)?);
            Ok(())
        })();
        stop_background.store(true, Ordering::Relaxed);
        let background = background
            .join()
            .map_err(|_| anyhow::anyhow!("the background sender panicked"))?;
        result.and(background)
    });
    churn.with_context(|| format!("agent stderr:\n{}", agent.log_tail()))?;

    // The daemon refreshes its kernel counters once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, body) = dhcp_lab::prometheus::http_get(lab.router.name(), METRICS, &[])
        .context("scraping the daemon")?;
    let metrics = parse_metrics(&body);
    let report = Report {
        minutes: started.elapsed().as_secs_f64() / 60.0,
        cycles,
        releases: tally.dropped + tally.honored,
        dropped: tally.dropped,
        repaired: tally.repaired,
        honored: tally.honored,
        background_frames: background_sent.load(Ordering::Relaxed),
        kernel_events: metric_sum(&metrics, "dhcp_capture_events_total", &[]),
        kernel_events_lost: metric_sum(&metrics, "dhcp_capture_lost_events_total", &[]),
        rss_kib_warm: 0,
        rss_kib_end: 0,
        rss_kib_max: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        open_fds_min: 0,
        open_fds_max: 0,
        samples,
    };
    let report = judge(report, &metrics, &lab)?;
    agent.stop_cleanly()?;
    let path = out.join("report.json");
    fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "soak: {:.1} min, {} VM lives, {} releases ({} dropped, each repaired once: {}; {} honored), \
         {} background frames; kernel events {} lost {}; RSS {} KiB warm -> {} KiB end (max {}); \
         open fds {}..{}; report {}",
        report.minutes,
        report.cycles,
        report.releases,
        report.dropped,
        report.repaired,
        report.honored,
        report.background_frames,
        report.kernel_events,
        report.kernel_events_lost,
        report.rss_kib_warm,
        report.rss_kib_end,
        report.rss_kib_max,
        report.open_fds_min,
        report.open_fds_max,
        path.display()
    );
    Ok(())
}

/// What the agent reported about the releases of the run.
#[derive(Debug, Default)]
struct Tally {
    dropped: u64,
    honored: u64,
    repaired: u64,
}

/// One VM's life, and the agent's account of its end.
fn one_life(
    lab: &mut Lab,
    link: &Mutex<()>,
    agent: &AgentUnderTest,
    n: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    // 52:54:00 is QEMU's prefix, as CloudStack's KVM guests have; 0x30 marks the soak.
    let mac = format!("52:54:00:30:{:02x}:{:02x}", (n >> 8) as u8, n as u8);
    {
        let _down = link.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        lab.vm.set_mac(&mac)?;
    }
    let ip = lab.vm.boot()?;
    let ending = Ending::of_cycle(n);
    if ending == Ending::RenewedThenExpunged {
        lab.vm.boot()?;
    }
    match ending {
        Ending::OwnRelease => lab.vm.release()?,
        Ending::Expunged | Ending::RenewedThenExpunged => lab.dhcp_release(ip, &mac)?,
    }
    // What the agent must report about this VM, in any order. An expunged VM's lease is
    // flagged and repaired; the repair's own RELEASE is recognised by its xid and not judged
    // (a release event for it would be a stray).
    type Check = fn(&Value) -> bool;
    let mut expected: Vec<(&str, Check)> = match ending {
        Ending::OwnRelease => vec![("its own release, honored", |e| {
            e["event"] == "release" && e["outcome"] == "honored"
        })],
        Ending::Expunged | Ending::RenewedThenExpunged => vec![
            ("the dhcp_release, dropped for server_id_mismatch", |e| {
                e["event"] == "release"
                    && e["outcome"] == "dropped"
                    && e["cause"] == "server_id_mismatch"
            }),
            ("its repair, verified", |e| {
                e["event"] == "remediation" && e["result"] == "remediated"
            }),
        ],
    };
    // Anything else (a second release, a repair of another address) is a finding.
    let mut stray = Vec::new();
    // The server's own events (up, down) are about no address: not strays, but shown when a
    // check fails (a server judged down explains a `no_server` verdict).
    let mut server = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !expected.is_empty() {
        let waiting: Vec<&str> = expected.iter().map(|(what, _)| *what).collect();
        let (event, _) = agent
            .next_event(
                deadline.saturating_duration_since(Instant::now()),
                |e| e["ip"] == ip.to_string(),
                |e| {
                    if e.get("ip").is_some() {
                        stray.push(e.to_string())
                    } else {
                        server.push(e.to_string())
                    }
                },
            )
            .with_context(|| {
                format!(
                    "{ip} ({ending:?}): no {}; other events meanwhile: [{}]; events about no \
                     address: [{}]",
                    waiting.join(", no "),
                    stray.join(", "),
                    server.join(", ")
                )
            })?;
        match expected.iter().position(|(_, check)| check(&event)) {
            Some(found) => {
                expected.remove(found);
                match (event["event"].as_str(), event["outcome"].as_str()) {
                    (Some("release"), Some("dropped")) => tally.dropped += 1,
                    (Some("release"), _) => tally.honored += 1,
                    _ => tally.repaired += 1,
                }
            }
            None => stray.push(event.to_string()),
        }
    }
    ensure!(
        stray.is_empty(),
        "unexpected events during the life of {ip} ({ending:?}): {}",
        stray.join("\n")
    );
    // dnsmasq serves throughout, deaf for seconds only while it pings a new VM's address.
    let down: Vec<&String> = server
        .iter()
        .filter(|e| e.contains("\"up\":false"))
        .collect();
    ensure!(
        down.is_empty(),
        "dnsmasq, serving all along, judged down during the life of {ip} ({ending:?}): {}",
        down.iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        !lab.lease_file_has(ip),
        "{ip} still in the lease file after its {ending:?}"
    );
    Ok(())
}

/// DISCOVERs from the MAC dnsmasq ignores, sent from the VM's side in batches every 100 ms:
/// traffic the agent captures and decodes, that changes no lease.
fn background_traffic(
    vm_ns: &str,
    per_second: u32,
    link: &Mutex<()>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let batch = (per_second / 10) as usize;
    if batch == 0 {
        return Ok(());
    }
    let spec = frames::Dhcpv4Spec::new(frames::MessageType::Discover, 0x50a4, IGNORED_MAC);
    let frame = frames::client_broadcast(&spec, IGNORED_MAC)?;
    let frames = vec![frame; batch];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        {
            let _up = link.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            frames::send_frames_in(vm_ns, VM_IFACE, &frames)?;
        }
        sent.fetch_add(batch as u64, Ordering::Relaxed);
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

fn sample(agent: &AgentUnderTest, started: Instant, cycles: u64) -> anyhow::Result<Sample> {
    Ok(Sample {
        at_s: started.elapsed().as_secs_f64(),
        rss_kib: agent.rss()? / 1024,
        open_fds: agent.open_fds()?,
        cycles,
    })
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Fills in the verdicts and fails on any finding.
fn judge(mut report: Report, metrics: &[(String, f64)], lab: &Lab) -> anyhow::Result<Report> {
    let n = report.samples.len();
    ensure!(n >= 4, "too few samples ({n}) to judge; run longer");
    // Warm-up: the first quarter (rings mapped, lease table and metrics label sets filled).
    let warm: Vec<&Sample> = report.samples[n / 4..n / 2].iter().collect();
    let end: Vec<&Sample> = report.samples[3 * n / 4..].iter().collect();
    report.rss_kib_warm = median(warm.iter().map(|s| s.rss_kib).collect());
    report.rss_kib_end = median(end.iter().map(|s| s.rss_kib).collect());
    let after_warm_up = &report.samples[n / 4..];
    report.open_fds_min = after_warm_up.iter().map(|s| s.open_fds).min().unwrap_or(0);
    report.open_fds_max = after_warm_up.iter().map(|s| s.open_fds).max().unwrap_or(0);

    let mut findings = Vec::new();
    if report.rss_kib_end > report.rss_kib_warm + RSS_SLACK_KIB {
        findings.push(format!(
            "RSS grew from {} KiB (after warm-up) to {} KiB",
            report.rss_kib_warm, report.rss_kib_end
        ));
    }
    if report.open_fds_max != report.open_fds_min {
        findings.push(format!(
            "open file descriptors moved between {} and {} after warm-up",
            report.open_fds_min, report.open_fds_max
        ));
    }
    if report.kernel_events_lost > 0.0 {
        findings.push(format!(
            "{} kernel events lost at {} background frames/s",
            report.kernel_events_lost,
            report.background_frames as f64 / (report.minutes * 60.0)
        ));
    }
    if report.kernel_events < report.background_frames as f64 {
        findings.push(format!(
            "the kernel passed {} events, fewer than the {} background frames sent",
            report.kernel_events, report.background_frames
        ));
    }
    // The agent's own counters agree with the events it printed, and the events with the
    // lives: one flag and one verified repair per expunged VM; honored, every VM's own
    // release. The repairs' own RELEASEs and probes are counted apart, never judged.
    let settled = metric_sum(metrics, "dhcp_releases_total", &[]);
    let dropped = metric_sum(metrics, "dhcp_releases_total", &["outcome=\"dropped\""]);
    let remediated = metric_sum(
        metrics,
        "dhcp_remediations_total",
        &["result=\"remediated\""],
    );
    let repairs = metric_sum(metrics, "dhcp_remediations_total", &[]);
    if settled != report.releases as f64
        || dropped != report.dropped as f64
        || remediated != report.repaired as f64
    {
        findings.push(format!(
            "metrics say {settled} releases settled, {dropped} dropped, {remediated} remediated; \
             the events say {}, {} and {}",
            report.releases, report.dropped, report.repaired
        ));
    }
    let own = metric_sum(metrics, "dhcp_agent_own_packets_total", &[]);
    if own < report.repaired as f64 {
        findings.push(format!(
            "{own} of the agent's own packets recognised for {} repairs (each sends a RELEASE)",
            report.repaired
        ));
    }
    if repairs != remediated {
        findings.push(format!(
            "{repairs} repairs, {remediated} of them remediated"
        ));
    }
    let expunged = (0..report.cycles)
        .filter(|&n| Ending::of_cycle(n).dropped())
        .count() as u64;
    if report.dropped != expunged || report.repaired != expunged {
        findings.push(format!(
            "{expunged} VMs expunged: {} releases flagged, {} repaired",
            report.dropped, report.repaired
        ));
    }
    if report.honored != report.cycles - expunged {
        findings.push(format!(
            "{} releases honored; expected {} own releases (the repairs' own are not judged)",
            report.honored,
            report.cycles - expunged
        ));
    }
    let left = fs::read_to_string(lab.lease_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().count() >= 4 && !l.starts_with("duid"))
        .count();
    if left != 0 {
        findings.push(format!(
            "{left} leases left in the lease file; expected none"
        ));
    }
    if !findings.is_empty() {
        bail!("soak findings:\n  {}", findings.join("\n  "));
    }
    Ok(report)
}
