//! `dhcp-agent watch`: capture, decode, filter, print (lines, JSON or a client's timeline), and
//! optionally write every captured frame to a pcapng file.
use std::io::Write as _;

use anyhow::Context as _;
use dhcp_common::Hook;

use dhcp_engine::{
    Observer, ObserverConfig,
    correlate::{Release, wire_flag},
    observer::Now,
    server_identity::ServerIdentity,
};

use crate::{
    args::{CaptureArgs, PcapArgs},
    capture::{LinkEvents, select::DefaultSet},
    filter::Filter,
    output,
    service::{InterfaceNames, Interfaces, decode_event, shutdown_signal, start_capture},
    system,
    timeline::Timeline,
};

#[derive(Debug, clap::Args, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Print JSON lines (one object per packet) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: crate::filter::FilterArgs,
    /// Follow one client: its exchanges as a timeline (time between steps, server id at each).
    #[arg(long, value_name = "MAC", value_parser = dhcp_wire::parse_mac, conflicts_with = "json")]
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

/// Counts of what `watch` did, printed on exit.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    shown: u64,
    malformed: u64,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let mut pcap = args.pcap.open()?;
    let mut link_events = LinkEvents::open().context("subscribing to interface changes")?;
    let interfaces = Interfaces::new(&args.capture, DefaultSet::Up)?;
    let mut capture = start_capture(&args.capture, &interfaces)?;
    let mut reader = capture.event_reader()?;
    let mut filter = Filter::new(&args.filter);
    filter.macs.extend(args.follow);
    let color = args.color.enabled();
    let mut timeline = Timeline::default();
    // The server ids it learns from the server's replies flag RELEASEs the server will ignore.
    // No lease file: what it finds beyond that is not shown, and cleared each batch.
    let mut observer = Observer::new(ObserverConfig::default(), ServerIdentity::default());
    let mut findings = Vec::new();
    let clock = system::BootClock::new();
    let mut names = InterfaceNames::default();
    let mut tally = Tally::default();
    let mut batch = Vec::new();
    let stdout = std::io::stdout();
    eprintln!("watching; Ctrl-C to stop");
    tokio::pin!(shutdown);
    'watch: loop {
        tokio::select! {
            () = &mut shutdown => break 'watch,
            result = reader.read_batch(&mut batch) => result.context("reading the event ring buffer")?,
            result = link_events.changed() => {
                result.context("following interface changes")?;
                // A new interface the selection wants gets the hooks, a deleted one that comes
                // back gets them again.
                for change in interfaces.reconcile(&mut capture) {
                    if !matches!(change, crate::capture::InterfaceChange::Gone { .. }) {
                        names.forget(change.index());
                    }
                    eprintln!("{change}");
                }
                continue;
            }
        }
        let mut out = stdout.lock();
        for event in batch.drain(..) {
            tally.events += 1;
            let packet = decode_event(&event, clock, &mut names);
            if let Some(file) = &mut pcap {
                file.write(&packet.meta, &event.frame)?;
            }
            observer.on_packet(&packet, &mut findings);
            let show = if packet.is_malformed() {
                tally.malformed += 1;
                args.show_malformed
            } else {
                filter.matches(&packet)
            };
            if !show {
                continue;
            }
            let lines = if args.json {
                vec![output::json_line(&packet)]
            } else if args.follow.is_some() {
                timeline.lines(&packet)
            } else {
                let flag =
                    Release::from_packet(&packet).and_then(|r| wire_flag(&r, observer.identity()));
                vec![output::styled_line(&packet, flag.as_deref(), color)]
            };
            for line in lines {
                if writeln!(out, "{line}").is_err() {
                    break 'watch; // stdout closed (e.g. `| head`): stop quietly
                }
            }
            tally.shown += 1;
            if args.count.is_some_and(|n| tally.shown >= n) {
                let _ = out.flush();
                break 'watch;
            }
        }
        // Releases past their grace leave the observer (watch reads no lease file).
        let now = Now {
            unix_ns: jiff::Timestamp::now().as_nanosecond(),
            mono: std::time::Instant::now(),
        };
        observer.on_tick(now, &mut findings);
        findings.clear();
        if let Some(file) = &mut pcap {
            file.flush()?;
        }
        if out.flush().is_err() {
            break;
        }
    }
    if let Some(file) = &mut pcap {
        file.flush()?;
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
