//! Arguments more than one command takes (capture, pcap output) and the parsers of values
//! they share. Below every command: the commands import it, it imports none of them.
use std::time::Duration;

use clap::Args;

use crate::capture::{TcMode, XdpChoice};

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
    /// Interfaces to observe (repeatable): a name, a glob pattern (`eth*`, `tap?`), or
    /// `!PATTERN` to leave interfaces out, in any order. Default (no value that includes):
    /// every interface up, plus `lo`; for `run` with --dnsmasq-conf or --dnsmasq-pid-file,
    /// every interface dnsmasq serves (its interface=, listen-address and dhcp-range lines and
    /// the addresses on each link), plus `lo`. Interfaces that come later are attached, ones
    /// that go are detached; a name given exactly must exist at start.
    #[arg(long = "iface", short = 'i', value_name = "IFACE", value_parser = crate::capture::select::parse_iface_arg)]
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
    /// How long a captured frame may wait before the agent is woken to read it, when frames
    /// come in a stream (the first after a quiet spell wakes it at once); `0ms` wakes it for
    /// every frame. Longer batches cost less CPU per frame.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub wake_interval: Duration,
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let value: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if value < 4096 || !value.is_power_of_two() {
        return Err(format!("{value} is not a power of two of at least 4096"));
    }
    Ok(value)
}

/// `500ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

/// A lease file format by name (`dnsmasq`, `kea-v4`), as the config file names it too.
pub fn parse_lease_format(text: &str) -> Result<dhcp_engine::leases::LeaseFormatName, String> {
    text.parse()
}
