//! Command line.
use clap::{Args, Parser, Subcommand};

use crate::capture::{TcMode, XdpChoice};

#[derive(Debug, Parser)]
#[command(
    name = "dhcp-agent",
    version,
    about = "eBPF DHCP traffic observer for routers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces and print every DHCP packet, decoded, as it passes.
    Watch(WatchArgs),
    /// The daemon: correlate every RELEASE with the lease table and flag those the server dropped.
    Run(crate::run::RunArgs),
    /// Release a lease so the server really drops it (a drop-in for dnsmasq's dhcp_release).
    Release(crate::release::ReleaseArgs),
    /// Show the lease table with pending and dropped releases (and the server's memory).
    Leases(crate::leases_view::LeasesArgs),
    /// Analyse a capture file (pcap or pcapng, from the agent, tcpdump or tshark) offline.
    Analyze(crate::analyze::AnalyzeArgs),
}

/// `--pcap`: write every captured DHCP frame to a pcapng file.
#[derive(Debug, Args, Clone, Default)]
pub struct PcapArgs {
    /// Write every captured DHCP frame (unfiltered) to this pcapng file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// With --pcap: start a new file when the current one reaches this many bytes.
    #[arg(long, value_name = "BYTES", requires = "pcap")]
    pub pcap_max_bytes: Option<u64>,
    /// With --pcap-max-bytes: how many files to keep (FILE, FILE.1, ...).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        requires = "pcap_max_bytes"
    )]
    pub pcap_files: u32,
}

impl PcapArgs {
    /// The writer asked for, if any.
    pub fn open(&self) -> anyhow::Result<Option<crate::pcap::writer::PcapWriter>> {
        let Some(path) = &self.pcap else {
            return Ok(None);
        };
        let rotation = self
            .pcap_max_bytes
            .map(|max_bytes| crate::pcap::writer::Rotation {
                max_bytes,
                files: self.pcap_files,
            });
        Ok(Some(crate::pcap::writer::PcapWriter::create(
            path, rotation,
        )?))
    }
}

#[derive(Debug, Args, Clone)]
pub struct CaptureArgs {
    /// Interface to observe (repeatable). Default: every interface that is up, plus `lo`.
    #[arg(long = "iface", short = 'i', value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// How to attach the TC hooks: TCX links (kernel >= 6.6) or netlink clsact filters.
    #[arg(long, value_enum, default_value_t = TcMode::Auto)]
    pub tc_mode: TcMode,
    /// Ingress hook on non-loopback interfaces: `off` is a TC classifier (the default: XDP in
    /// driver mode switches off TSO/GRO on veth and virtio-net); `auto` tries XDP driver mode,
    /// then generic mode, then TC.
    #[arg(long, value_enum, default_value_t = XdpChoice::Off)]
    pub xdp_mode: XdpChoice,
    /// Size of the kernel event ring buffer in bytes (power of two, at least a page).
    #[arg(long, default_value_t = dhcp_common::DEFAULT_RING_BYTES, value_parser = parse_ring_bytes)]
    pub ring_bytes: u32,
}

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Print JSON lines (one object per packet) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: crate::filter::FilterArgs,
    /// Follow one client: its exchanges as a timeline (time between steps, server id at each).
    #[arg(long, value_name = "MAC", value_parser = crate::filter::parse_mac, conflicts_with = "json")]
    pub follow: Option<[u8; 6]>,
    /// Colour the output: auto (when a terminal and NO_COLOR is unset), always, never.
    #[arg(long, value_enum, default_value_t = crate::output::ColorChoice::Auto)]
    pub color: crate::output::ColorChoice,
    #[command(flatten)]
    pub pcap: PcapArgs,
    /// Also print packets that do not decode (they are always counted).
    #[arg(long)]
    pub show_malformed: bool,
    /// Exit after printing this many packets.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let value: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if value < 4096 || !value.is_power_of_two() {
        return Err(format!("{value} is not a power of two of at least 4096"));
    }
    Ok(value)
}
