//! `dhcp-agent watch`: capture, decode, filter, print.
use std::io::Write as _;

use anyhow::Context as _;
use dhcp_common::Hook;

use crate::{
    capture::{Capture, Interface, RawEvent, iface},
    cli::{CaptureArgs, WatchArgs},
    decode::{self, FrameMeta},
    filter::Filter,
    output, system,
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

/// Checks privileges, loads the programs and attaches them; reports each step on stderr.
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
    Ok(capture)
}

/// Turns a kernel event into a decoded packet.
pub fn decode_event(
    event: &RawEvent,
    clock: system::BootClock,
    names: &mut InterfaceNames,
) -> decode::Packet {
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
    decode::decode_frame(&event.frame, meta)
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Counts of what `watch` did, printed on exit.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    shown: u64,
    malformed: u64,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut capture = start_capture(&args.capture)?;
    let mut reader = capture.event_reader()?;
    let filter = Filter {
        macs: args.macs.clone(),
        ips: args.ips.clone(),
        types: args.types.clone(),
    };
    let clock = system::BootClock::new();
    let mut names = InterfaceNames::default();
    let mut tally = Tally::default();
    let mut batch = Vec::new();
    let stdout = std::io::stdout();
    eprintln!("watching; Ctrl-C to stop");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    'watch: loop {
        tokio::select! {
            result = &mut shutdown => { result?; break 'watch; }
            result = reader.read_batch(&mut batch) => result.context("reading the event ring buffer")?,
        }
        let mut out = stdout.lock();
        for event in batch.drain(..) {
            tally.events += 1;
            let packet = decode_event(&event, clock, &mut names);
            let show = if packet.is_malformed() {
                tally.malformed += 1;
                args.show_malformed
            } else {
                filter.matches(&packet)
            };
            if !show {
                continue;
            }
            let line = if args.json {
                output::json_line(&packet)
            } else {
                output::text_line(&packet)
            };
            if writeln!(out, "{line}").is_err() {
                break 'watch; // stdout closed (e.g. `| head`): stop quietly
            }
            tally.shown += 1;
            if args.count.is_some_and(|n| tally.shown >= n) {
                let _ = out.flush();
                break 'watch;
            }
        }
        if out.flush().is_err() {
            break;
        }
    }
    let counters = capture.counters()?;
    let kernel: Vec<String> = Hook::ALL
        .iter()
        .map(|h| {
            let c = counters[*h as usize];
            format!(
                "{} events={} lost={} truncated={}",
                h.name(),
                c.events,
                c.lost,
                c.truncated
            )
        })
        .collect();
    eprintln!(
        "stopped: {} events read, {} shown, {} malformed; kernel: {}",
        tally.events,
        tally.shown,
        tally.malformed,
        kernel.join(", ")
    );
    drop(capture); // detaches every hook
    Ok(())
}
