//! What every capturing command (`watch`, `run`) does the same way: resolve interfaces, load and
//! attach the kernel programs, turn kernel events into decoded packets, stop on a signal.
use anyhow::Context as _;

use dhcp_wire::{FrameMeta, Packet};

use crate::{
    args::CaptureArgs,
    capture::{Capture, Interface, RawEvent, iface},
    system,
};

/// Resolves `--iface` (or the default set) to interfaces, failing on unknown names.
pub fn resolve_interfaces(names: &[String]) -> anyhow::Result<Vec<Interface>> {
    if names.is_empty() {
        return iface::default_interfaces().context("listing interfaces in /sys/class/net");
    }
    names
        .iter()
        .map(|name| {
            Interface::by_name(name)
                .ok_or_else(|| crate::capture::CaptureError::UnknownInterface(name.clone()).into())
        })
        .collect()
}

/// Checks privileges, loads the programs and attaches them, then drops every capability but
/// CAP_BPF and CAP_NET_ADMIN (re-attaching; removing netlink filters at exit); reports each
/// step on stderr.
pub fn start_capture(args: &CaptureArgs) -> anyhow::Result<Capture> {
    let interfaces = resolve_interfaces(&args.ifaces)?;
    system::check_privileges()?;
    let mut capture = Capture::load(args.ring_bytes)?;
    for iface in &interfaces {
        capture.attach(iface, args.xdp_mode, args.tc_mode)?;
    }
    for report in capture.reports() {
        eprintln!("attached {report}");
    }
    // Loading was the last step that needs CAP_PERFMON (and root's other capabilities never
    // served): nothing the agent parses from the network or from files runs with them.
    eprintln!("{}", system::drop_privileges()?);
    Ok(capture)
}

/// Turns a kernel event into a decoded packet.
pub fn decode_event(
    event: &RawEvent,
    clock: system::BootClock,
    names: &mut InterfaceNames,
) -> Packet {
    let meta = FrameMeta {
        unix_ns: clock.to_unix_ns(event.boot_ns),
        ifindex: event.ifindex,
        interface: names.get(event.ifindex),
        hook: event.hook,
        wire_len: event.wire_len,
        vlan: event.vlan,
        vlan_inner: event.vlan_inner,
        truncated: event.truncated,
    };
    dhcp_wire::decode_frame(&event.frame, meta)
}

/// Caches interface names by index (an interface may vanish; then its index is shown).
#[derive(Default)]
pub struct InterfaceNames(std::collections::HashMap<u32, String>);

impl InterfaceNames {
    pub fn get(&mut self, index: u32) -> String {
        self.0
            .entry(index)
            .or_insert_with(|| iface::name_of(index).unwrap_or_else(|| format!("if{index}")))
            .clone()
    }
}

/// Installs the SIGTERM and SIGINT handlers now and returns what resolves on either. Called
/// first thing, so a signal that arrives while the agent starts up (a service manager
/// stopping it right after start) ends it cleanly instead of killing it.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
