//! What every capturing command (`watch`, `run`) does the same way: select interfaces, load and
//! attach the kernel programs and follow interfaces coming and going, turn kernel events into
//! decoded packets, stop on a signal.
use anyhow::Context as _;

use dhcp_engine::dnsmasq_conf::ServedLinks;
use dhcp_wire::{FrameMeta, Packet};

use crate::{
    args::CaptureArgs,
    capture::{
        Capture, CaptureError, InterfaceChange, RawEvent, TcMode, Wanted, XdpChoice, iface,
        select::{DefaultSet, Selection, Selector},
    },
    system,
};

/// The interfaces a capturing command attaches to: `--iface` over a default set, and how
/// their hooks are attached.
pub struct Interfaces {
    selector: Selector,
    xdp: XdpChoice,
    tc_mode: TcMode,
}

impl Interfaces {
    /// The selection of `--iface`, with `default` where no value includes.
    pub fn new(args: &CaptureArgs, default: DefaultSet) -> anyhow::Result<Interfaces> {
        let selection = Selection::parse(&args.ifaces).context("--iface")?;
        Ok(Interfaces {
            selector: Selector::new(selection, default),
            xdp: args.xdp_mode,
            tc_mode: args.tc_mode,
        })
    }

    /// What is wanted now, of the interfaces there are.
    fn wanted(&self) -> std::io::Result<Vec<Wanted>> {
        Ok(iface::links()?
            .into_iter()
            .filter_map(|link| {
                let why = self.selector.wants(&link)?;
                Some(Wanted {
                    by_name: self.selector.by_name(&link.name),
                    iface: iface::Interface {
                        name: link.name,
                        index: link.index,
                        loopback: link.loopback,
                    },
                    why: why.to_string(),
                })
            })
            .collect())
    }

    /// dnsmasq's configuration was read (again): the served default follows it. Call
    /// [`Interfaces::reconcile`] next.
    pub fn set_served(&mut self, served: Option<ServedLinks>) {
        self.selector.set_served(served);
    }

    /// Attaches what is wanted and not attached, detaches what is gone: see
    /// [`Capture::reconcile`].
    pub fn reconcile(&self, capture: &mut Capture) -> Vec<InterfaceChange> {
        match self.wanted() {
            Ok(wanted) => capture.reconcile(&wanted, self.xdp, self.tc_mode),
            Err(err) => {
                eprintln!("interfaces not listed: {err}");
                Vec::new()
            }
        }
    }
}

/// Checks privileges, loads the programs and attaches them to the interfaces `interfaces`
/// wants (an exact `--iface` name that does not exist is an error), then drops every
/// capability but CAP_BPF and CAP_NET_ADMIN (attaching later; removing netlink filters at
/// exit); reports each step on stderr.
pub fn start_capture(args: &CaptureArgs, interfaces: &Interfaces) -> anyhow::Result<Capture> {
    let wanted = interfaces.wanted().context("listing the interfaces")?;
    for name in interfaces.selector.selection().exact_names() {
        if iface::Interface::by_name(name).is_none() {
            return Err(CaptureError::UnknownInterface(name.to_owned()).into());
        }
    }
    system::check_privileges()?;
    let mut capture = Capture::load_with(args.ring_bytes, args.wake_interval)?;
    eprintln!("interfaces: {}", interfaces.selector);
    for wanted in &wanted {
        capture.attach(wanted, interfaces.xdp, interfaces.tc_mode)?;
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
    /// Forgets the name of `index` (its interface went, or was renamed).
    pub fn forget(&mut self, index: u32) {
        self.0.remove(&index);
    }

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
