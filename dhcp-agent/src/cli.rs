//! The command line: the subcommands, each defined (arguments and all) in its own module.
use clap::{Parser, Subcommand};

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
    Watch(crate::watch::WatchArgs),
    /// The daemon: correlate every RELEASE with the lease table and flag those the server dropped.
    Run(crate::run::RunArgs),
    /// Release a lease so the server really drops it (a drop-in for dnsmasq's dhcp_release).
    Release(crate::release::ReleaseArgs),
    /// Show the lease table with pending and dropped releases (and the server's memory).
    Leases(crate::leases_view::LeasesArgs),
    /// Analyse a capture file (pcap or pcapng, from the agent, tcpdump or tshark) offline.
    Analyze(crate::analyze::AnalyzeArgs),
}
