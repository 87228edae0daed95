//! Benchmark 5: offline analysis of one capture by `dhcp-agent analyze`, tshark (fields mode)
//! and tcpdump, side by side.
//!
//! The capture is generated: consecutive DHCP exchanges of distinct clients (DISCOVER, OFFER,
//! REQUEST, ACK, one client in four releasing), written as a classic Ethernet pcap with
//! microsecond timestamps, the format `tcpdump -w` writes. Each tool reads the whole file and
//! decodes every DHCP message; runs are interleaved so machine noise hits all three alike.
use std::{
    fs::File,
    io::BufWriter,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use dhcp_lab::traffic::exchange;
use pcap_file::pcap::{PcapPacket, PcapWriter};

use super::{
    Ctx, Figure, Target,
    process::{Cost, measure},
    sane,
};

const GROUP: &str = "offline analysis";

/// What tshark prints per DHCP message: about what `analyze` extracts.
const TSHARK_FIELDS: &[&str] = &[
    "frame.time_epoch",
    "eth.src",
    "ip.src",
    "ip.dst",
    "dhcp.option.dhcp",
    "dhcp.id",
    "dhcp.hw.mac_addr",
    "dhcp.ip.client",
    "dhcp.ip.your",
    "dhcp.option.dhcp_server_id",
    "dhcp.option.requested_ip_address",
    "dhcp.option.hostname",
];

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    dhcp_lab::require_tools(&["tshark", "tcpdump"])?;
    let packets = std::env::var("DHCP_BENCH_PACKETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ctx.pick(1_000_000, 2_000));
    let rounds = ctx.pick(3, 1);
    let capture = ctx.scratch.join("storm.pcap");
    write_capture(&capture, packets)?;
    let size = std::fs::metadata(&capture)?.len();
    eprintln!(
        "bench: analyze: {packets} packets, {:.0} MB in {}",
        size as f64 / 1e6,
        capture.display()
    );
    let path = capture.to_str().context("capture path")?;

    let ours = Tool {
        name: "dhcp-agent analyze",
        command: "dhcp-agent analyze --pcap FILE".into(),
        build: Box::new(|| {
            let mut cmd = Command::new(&ctx.agent);
            cmd.args(["analyze", "--pcap", path]);
            cmd
        }),
    };
    let mut tshark_args = vec!["-n", "-r", path, "-Y", "dhcp", "-T", "fields"];
    for field in TSHARK_FIELDS {
        tshark_args.extend(["-e", field]);
    }
    let tshark = Tool {
        name: "tshark",
        command: format!(
            "tshark -n -r FILE -Y dhcp -T fields -e {}",
            TSHARK_FIELDS.join(" -e ")
        ),
        build: Box::new(|| {
            let mut cmd = Command::new("tshark");
            cmd.args(&tshark_args);
            cmd
        }),
    };
    let tcpdump = Tool {
        name: "tcpdump",
        command: "tcpdump -n -v -r FILE".into(),
        build: Box::new(|| {
            let mut cmd = Command::new("tcpdump");
            cmd.args(["-n", "-v", "-r", path]);
            cmd
        }),
    };
    let tools = [ours, tshark, tcpdump];
    let mut costs: Vec<Vec<Cost>> = vec![Vec::new(); tools.len()];
    for round in 0..rounds {
        for (tool, costs) in tools.iter().zip(&mut costs) {
            let out = ctx.scratch.join("analyze.out");
            let cost = measure(
                (tool.build)()
                    .stdout(File::create(&out)?)
                    .stderr(Stdio::null())
                    .stdin(Stdio::null()),
            )?;
            sane(cost.status.success(), || {
                format!("{} exited with {}", tool.name, cost.status)
            })?;
            if round == 0 {
                check_output(tool.name, &out, packets)?;
            }
            costs.push(cost);
        }
    }

    let seconds = |c: &Cost| c.wall.as_secs_f64();
    let method = |tool: &Tool| {
        format!(
            "`{}` on a generated pcap of {packets} DHCP packets ({:.0} MB), output to a file; wall time, {rounds} interleaved runs",
            tool.command,
            size as f64 / 1e6
        )
    };
    let mut figures = Vec::new();
    for (tool, costs) in tools.iter().zip(&costs) {
        let rates: Vec<f64> = costs.iter().map(|c| packets as f64 / seconds(c)).collect();
        figures.push(Figure::from_samples(
            GROUP,
            format!("{} throughput", tool.name),
            "packets/s",
            &rates,
            method(tool),
        ));
    }
    // Paired per round: each round's tshark (tcpdump) time over the same round's analyze time.
    for (index, target) in [(1, Some(Target::AtLeast(20.0))), (2, None)] {
        let ratios: Vec<f64> = costs[0]
            .iter()
            .zip(&costs[index])
            .map(|(ours, theirs)| seconds(theirs) / seconds(ours))
            .collect();
        let mut figure = Figure::from_samples(
            GROUP,
            format!("analyze faster than {} by", tools[index].name),
            "x",
            &ratios,
            format!(
                "wall time of `{}` over that of `{}` in the same round, median of {rounds} rounds",
                tools[index].command, tools[0].command
            ),
        );
        if let Some(target) = target {
            figure = figure.target(target);
        }
        figures.push(figure);
    }
    for (tool, costs) in tools.iter().zip(&costs) {
        let cpu: Vec<f64> = costs.iter().map(|c| c.cpu.as_secs_f64()).collect();
        let rss: Vec<f64> = costs.iter().map(|c| c.max_rss as f64 / 1e6).collect();
        figures.push(Figure::from_samples(
            GROUP,
            format!("{} CPU time", tool.name),
            "s",
            &cpu,
            "user + system time of the process (wait4 rusage)",
        ));
        figures.push(Figure::from_samples(
            GROUP,
            format!("{} peak RSS", tool.name),
            "MB",
            &rss,
            "VmHWM of the process, sampled every 5 ms while it runs",
        ));
    }
    Ok(figures)
}

/// One tool under comparison: how to build its command line.
struct Tool<'a> {
    name: &'static str,
    /// The command as the README shows it.
    command: String,
    build: Box<dyn Fn() -> Command + 'a>,
}

/// Writes `packets` frames of consecutive exchanges, 50 µs apart, as a classic pcap.
fn write_capture(path: &Path, packets: usize) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = PcapWriter::new(BufWriter::new(file))?;
    let start = Duration::from_secs(1_790_000_000);
    for (n, frame) in (0u32..).flat_map(exchange).take(packets).enumerate() {
        let at = start + Duration::from_micros(50 * n as u64);
        writer.write_packet(&PcapPacket::new(at, frame.bytes.len() as u32, &frame.bytes))?;
    }
    use std::io::Write as _;
    writer.into_writer().flush()?;
    Ok(())
}

/// Each tool read every packet: analyze's report counts them, tshark printed one line each,
/// tcpdump printed something for each.
fn check_output(tool: &str, out: &Path, packets: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(out).with_context(|| format!("reading {tool}'s output"))?;
    match tool {
        "dhcp-agent analyze" => {
            let counted = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("messages:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok());
            sane(counted == Some(packets), || {
                format!(
                    "analyze reported {counted:?} DHCP packets, expected {packets}:\n{}",
                    text.lines().take(12).collect::<Vec<_>>().join("\n")
                )
            })
        }
        "tshark" => {
            let lines = text.lines().count();
            sane(lines == packets, || {
                format!("tshark printed {lines} lines for {packets} packets")
            })
        }
        _ => {
            let requests = text.matches("BOOTP/DHCP").count();
            sane(requests == packets, || {
                format!("tcpdump decoded {requests} BOOTP/DHCP packets of {packets}")
            })
        }
    }
}
