//! Command line.
use std::net::IpAddr;

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
}

#[derive(Debug, Args, Clone)]
pub struct CaptureArgs {
    /// Interface to observe (repeatable). Default: every interface that is up, plus `lo`.
    #[arg(long = "iface", short = 'i', value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// How to attach the TC hooks: TCX links (kernel >= 6.6) or netlink clsact filters.
    #[arg(long, value_enum, default_value_t = TcMode::Auto)]
    pub tc_mode: TcMode,
    /// How to attach XDP on non-loopback interfaces.
    #[arg(long, value_enum, default_value_t = XdpChoice::Auto)]
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
    /// Only packets whose client hardware address or Ethernet source/destination is MAC.
    #[arg(long = "mac", value_name = "MAC", value_parser = crate::filter::parse_mac)]
    pub macs: Vec<[u8; 6]>,
    /// Only packets that carry IP in any address field or option 50/54.
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// Only these message types (repeatable): discover, offer, request, ack, nak, release, ...
    #[arg(long = "type", value_name = "TYPE", value_parser = crate::filter::parse_type)]
    pub types: Vec<String>,
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
