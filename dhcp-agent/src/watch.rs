//! `dhcp-agent watch`: capture, decode, filter, print.
use std::io::Write as _;

use anyhow::Context as _;
use dhcp_common::Hook;

use crate::{
    cli::WatchArgs,
    filter::Filter,
    output,
    service::{InterfaceNames, decode_event, shutdown_signal, start_capture},
    system,
};

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
