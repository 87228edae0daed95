//! Benchmark 7: what the agent costs at rest. Binary size, start-up time to "attached", peak
//! RSS of the `run` daemon idle, on a CloudStack router at its lease limit (issue 15: a 256 MB
//! router) and with a lease file of 100,000 leases, and how often it wakes up at rest.
//!
//! The daemon runs in a namespace of its own on a veth interface and `lo`, as on a router
//! (XDP + TC egress on the guest side, TC ingress on `lo`), with an empty state file.
use std::{ffi::OsString, path::Path, process::Command, time::Duration};

use anyhow::Context as _;
use dhcp_lab::{Netns, traffic::dnsmasq_lease_line};

use super::{Ctx, Figure, Target, sane};
use crate::agent::{AgentUnderTest, Events, Limits};

const GROUP: &str = "footprint";

/// CloudStack's `dhcp-lease-max` on its routers: the most leases (and host lines) one holds.
const ROUTER_LEASES: usize = 2_100;
/// The ring buffer's default before issue 15, measured next to today's in the same run.
const OLD_RING_BYTES: &str = "8388608";

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let mut figures = binary_size(ctx)?;
    let ns = Netns::create(&format!("dhcpobs-fp-{}", std::process::id()))?;
    ns.ip(&["link", "set", "lo", "up"])?;
    dhcp_lab::netns::veth_pair(&ns, "guest0", &ns, "vm0")?;
    ns.ip(&["link", "set", "guest0", "up"])?;
    ns.ip(&["link", "set", "vm0", "up"])?;
    // Idle: after a few of its once-a-second housekeeping ticks.
    let settle = ctx.pick(Duration::from_secs(3), Duration::from_millis(300));

    // Start-up: spawn to the "watching;" line, printed once the programs are verified and
    // attached and the lease table is read.
    let starts = ctx.pick(10, 2);
    let empty = ctx.scratch.join("empty.leases");
    std::fs::write(&empty, "")?;
    let mut startup = Vec::new();
    let mut idle_rss = Vec::new();
    let mut ring_rss = Vec::new();
    let mut idle_now = Vec::new();
    let mut wakeups = Vec::new();
    let rest = ctx.pick(Duration::from_secs(60), Duration::from_secs(3));
    for n in 0..starts {
        let agent = start_daemon(ctx, &ns, &empty, &[], Limits::default())?;
        startup.push(agent.attached_after.as_secs_f64() * 1e3);
        if n == 0 {
            std::thread::sleep(settle);
            idle_rss.push(agent.peak_rss()? as f64 / 1e6);
            ring_rss.push(agent.ring_buffer_rss()? as f64 / 1e6);
            idle_now.push(agent.rss()? as f64 / 1e6);
            // The window starts right after one of its wake-ups, so that it holds whole
            // periods: placed anywhere, 60 s of a once-a-second tick hold 60 or 61 ticks.
            let before = after_a_wake_up(&agent)?;
            std::thread::sleep(rest);
            let after = agent.voluntary_switches()?;
            wakeups.push((after - before) as f64 / rest.as_secs_f64());
        }
        agent.stop_cleanly()?;
    }
    figures.push(
        Figure::from_samples(
            GROUP,
            "start-up to attached",
            "ms",
            &startup,
            format!(
                "spawn of `dhcp-agent run --iface guest0 --iface lo` (veth + lo) to its \"watching;\" line (programs verified and attached, lease file read), {starts} starts"
            ),
        )
        .target(Target::AtMost(200.0)),
    );
    figures.push(
        Figure::from_samples(
            GROUP,
            "peak RSS, idle",
            "MB",
            &idle_rss,
            "VmHWM of the `run` daemon with the default settings (empty lease file) after attaching and 3 s of housekeeping: the start-up's peak included",
        )
        .target(Target::AtMost(12.0)),
    );
    figures.push(Figure::from_samples(
        GROUP,
        "RSS, idle, after start-up",
        "MB",
        &idle_now,
        "VmRSS at the same moment: equal to the peak when start-up leaves no transient above the steady state",
    ));
    figures.push(Figure::from_samples(
        GROUP,
        "of which the event ring buffer's mapping",
        "MB",
        &ring_rss,
        "Rss of the anon_inode:bpf-map mappings in /proc/PID/smaps: the consumer maps the ring's data pages twice (for wrap-around)",
    ));
    let mut figure = Figure::from_samples(
        GROUP,
        "wake-ups per second at rest",
        "/s",
        &wakeups,
        format!(
            "voluntary context switches of every thread of the idle daemon over {} s (/proc/PID/task/*/status), the window starting right after one, per second",
            rest.as_secs()
        ),
    );
    if !ctx.quick {
        figure = figure.target(Target::AtMost(1.0));
    }
    figures.push(figure);

    // Before, in the same run: the ring of before, and the kernel's BTF parsed at load (what
    // happens without CAP_SYS_ADMIN to hide it, as under a unit without InaccessiblePaths=).
    let before = [
        (
            "peak RSS, idle, 8 MiB ring (the default before)",
            vec!["--ring-bytes", OLD_RING_BYTES],
            Limits::default(),
            "VmHWM as above with --ring-bytes 8388608",
        ),
        (
            "peak RSS, idle, kernel BTF read at load",
            vec![],
            Limits {
                no_sys_admin: true,
                ..Limits::default()
            },
            "VmHWM as above, started without CAP_SYS_ADMIN: aya 0.14's EbpfLoader::new() then reads and parses /sys/kernel/btf/vmlinux, as every start did before",
        ),
    ];
    for (name, extra, limits, how) in before {
        let agent = start_daemon(ctx, &ns, &empty, &extra, limits)?;
        std::thread::sleep(settle);
        let peak = agent.peak_rss()? as f64 / 1e6;
        agent.stop_cleanly()?;
        figures.push(Figure::from_samples(GROUP, name, "MB", &[peak], how));
    }

    // A CloudStack router at its limit: 2,100 leases, each client declared in the hosts file.
    let router = RouterFiles::write(&ctx.scratch, ROUTER_LEASES)?;
    let mut router_rss = Vec::new();
    for _ in 0..ctx.pick(3, 1) {
        let conf = router.conf.to_string_lossy().into_owned();
        let agent = start_daemon(
            ctx,
            &ns,
            &router.leases,
            &["--dnsmasq-conf", &conf],
            Limits::default(),
        )?;
        sane(
            agent
                .log()
                .contains(&format!("{ROUTER_LEASES} declared hosts")),
            || {
                format!(
                    "the daemon did not read {ROUTER_LEASES} hosts: {}",
                    agent.log()
                )
            },
        )?;
        std::thread::sleep(settle);
        router_rss.push(agent.peak_rss()? as f64 / 1e6);
        agent.stop_cleanly()?;
    }
    figures.push(
        Figure::from_samples(
            GROUP,
            format!("peak RSS, {ROUTER_LEASES} leases and {ROUTER_LEASES} declared hosts"),
            "MB",
            &router_rss,
            "VmHWM of the `run` daemon with the default settings on a CloudStack-shaped configuration (dhcp-hostsfile of 2,100 `mac,ip,name,infinite` lines, a static dhcp-range) and a lease file of those 2,100 clients, 3 s after attaching",
        )
        .target(Target::AtMost(20.0)),
    );

    let leases = ctx.pick(100_000, 1_000);
    let file = ctx.scratch.join("dnsmasq.leases");
    write_lease_file(&file, leases)?;
    let mut loaded_rss = Vec::new();
    for _ in 0..ctx.pick(3, 1) {
        let agent = start_daemon(ctx, &ns, &file, &[], Limits::default())?;
        sane(
            agent.log().contains(&format!("watching; {leases} leases")),
            || format!("the daemon did not load {leases} leases: {}", agent.log()),
        )?;
        std::thread::sleep(settle);
        loaded_rss.push(agent.peak_rss()? as f64 / 1e6);
        agent.stop_cleanly()?;
    }
    let mut figure = Figure::from_samples(
        GROUP,
        format!("peak RSS, {leases} leases"),
        "MB",
        &loaded_rss,
        format!(
            "VmHWM of the `run` daemon with a dnsmasq lease file of {leases} leases, 3 s after attaching"
        ),
    );
    if !ctx.quick {
        figure = figure.target(Target::AtMost(64.0));
    }
    figures.push(figure);
    Ok(figures)
}

/// Waits (up to 3 s) for the agent's next voluntary context switch and returns the count
/// then; read from outside, every millisecond, which wakes the agent not at all.
fn after_a_wake_up(agent: &AgentUnderTest) -> anyhow::Result<u64> {
    let first = agent.voluntary_switches()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        let now = agent.voluntary_switches()?;
        if now != first {
            return Ok(now);
        }
    }
    Ok(first)
}

/// A CloudStack router's files: cloud.conf-like configuration, hosts file, lease file.
struct RouterFiles {
    conf: std::path::PathBuf,
    leases: std::path::PathBuf,
}

impl RouterFiles {
    fn write(dir: &Path, count: usize) -> anyhow::Result<RouterFiles> {
        use std::io::Write as _;
        let hosts = dir.join("dhcphosts.txt");
        let leases = dir.join("router.leases");
        let conf = dir.join("router-dnsmasq.conf");
        let mut hosts_out = std::io::BufWriter::new(std::fs::File::create(&hosts)?);
        for k in 0..count as u32 {
            let mac = dhcp_lab::traffic::client_mac(k).map(|b| format!("{b:02x}"));
            let ip = dhcp_lab::traffic::client_ip(k);
            writeln!(hosts_out, "{},{ip},i-2-{k}-VM,infinite", mac.join(":"))?;
        }
        hosts_out.flush()?;
        write_lease_file(&leases, count)?;
        std::fs::write(
            &conf,
            format!(
                "except-interface=lo\nbind-interfaces\nlisten-address=127.0.0.1,10.0.0.1\n\
                 dhcp-range=set:interface-guest0-0,10.0.0.1,static\ndhcp-lease-max=2100\n\
                 dhcp-hostsfile={}\ndhcp-leasefile={}\n",
                hosts.display(),
                leases.display()
            ),
        )?;
        Ok(RouterFiles { conf, leases })
    }
}

fn binary_size(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let size = std::fs::metadata(&ctx.agent)
        .with_context(|| format!("reading {}", ctx.agent.display()))?
        .len();
    let stripped = ctx.scratch.join("dhcp-agent.stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&ctx.agent)
        .status()
        .context("running strip")?;
    sane(status.success(), || format!("strip failed: {status}"))?;
    let stripped_size = std::fs::metadata(&stripped)?.len();
    Ok(vec![
        Figure::from_samples(
            GROUP,
            "binary size (release, as built)",
            "MB",
            &[size as f64 / 1e6],
            "size of target/release/dhcp-agent (kernel programs embedded)",
        ),
        Figure::from_samples(
            GROUP,
            "binary size (stripped)",
            "MB",
            &[stripped_size as f64 / 1e6],
            "the same after `strip`",
        ),
    ])
}

/// A dnsmasq lease file of `count` leases of distinct clients.
fn write_lease_file(path: &Path, count: usize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for k in 0..count as u32 {
        writeln!(
            out,
            "{}",
            dnsmasq_lease_line(k, 1_790_000_000 + u64::from(k))
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `dhcp-agent run` on `guest0` and `lo` in `ns` with `leases` and an empty state file.
fn start_daemon(
    ctx: &Ctx,
    ns: &Netns,
    leases: &Path,
    extra: &[&str],
    limits: Limits,
) -> anyhow::Result<AgentUnderTest> {
    let state = ctx.scratch.join("state.json");
    let _ = std::fs::remove_file(&state);
    let mut args: Vec<OsString> = ["run", "--iface", "guest0", "--iface", "lo", "--leases"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.push(leases.into());
    args.push("--state-file".into());
    args.push(state.into());
    args.extend(extra.iter().map(OsString::from));
    AgentUnderTest::start_limited(
        ns,
        &ctx.agent,
        &args,
        &ctx.scratch.join("footprint-agent.log"),
        Events::Discard,
        limits,
    )
}
