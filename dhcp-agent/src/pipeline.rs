//! The daemon's work on each kernel event, in one place: `run` calls it for every batch the ring
//! buffer gives, and the pipeline benchmark (`benches/pipeline.rs`) measures exactly this.
//!
//! An event is decoded, written to the pcap file (when one is asked for), counted, and handed to
//! the [`Observer`]. What the observer finds that only needs counting or logging (exchanges,
//! server ids learned) is handled here; the rest (settled releases, repairs) is left in
//! `findings` for the daemon.
use dhcp_engine::{Finding, Observer};

use crate::{
    capture::RawEvent,
    metrics::Metrics,
    pcap::writer::PcapWriter,
    service::{InterfaceNames, decode_event},
    system::BootClock,
};

/// What the per-event work reads and updates, borrowed from the daemon for one batch.
pub struct Pipeline<'a> {
    pub clock: BootClock,
    pub names: &'a mut InterfaceNames,
    /// `--pcap`: every captured frame, unfiltered.
    pub pcap: Option<&'a mut PcapWriter>,
    pub metrics: &'a Metrics,
    pub observer: &'a mut Observer,
}

/// What a batch of events led to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// RELEASEs seen: each opened or refreshed a pending record.
    pub releases: usize,
}

impl Pipeline<'_> {
    /// Handles every event of a batch in order, then flushes the pcap file. Findings the daemon
    /// acts on are appended to `findings`.
    pub fn on_batch<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e RawEvent>,
        findings: &mut Vec<Finding>,
    ) -> anyhow::Result<BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        for event in events {
            if self.on_event(event, findings)? {
                outcome.releases += 1;
            }
        }
        if let Some(file) = &mut self.pcap {
            file.flush()?;
        }
        Ok(outcome)
    }

    /// Handles one event. Returns whether it was a RELEASE.
    pub fn on_event(
        &mut self,
        event: &RawEvent,
        findings: &mut Vec<Finding>,
    ) -> anyhow::Result<bool> {
        let packet = decode_event(event, self.clock, self.names);
        if let Some(file) = &mut self.pcap {
            file.write(&packet.meta, &event.frame)?;
        }
        // The agent's own probes and repairs are not clients' traffic.
        if self.observer.is_own(&packet) {
            self.metrics.own_packet();
            return Ok(false);
        }
        self.metrics.packet(&packet);
        let start = findings.len();
        let release = self.observer.on_packet(&packet, findings);
        // Counted and logged here; whatever else the packet led to stays for the daemon.
        let mut kept = start;
        for i in start..findings.len() {
            if !account(self.metrics, &findings[i]) {
                findings.swap(kept, i);
                kept += 1;
            }
        }
        findings.truncate(kept);
        Ok(release)
    }
}

/// Handles a finding that only needs counting or logging (an exchange, a server id learned);
/// returns whether it was one. The daemon leaves the rest to its own fan-out.
pub fn account(metrics: &Metrics, finding: &Finding) -> bool {
    match finding {
        Finding::Exchange(done) => metrics.transaction(done),
        Finding::OwnPacket => metrics.own_packet(),
        Finding::ServerLearned(known) => eprintln!(
            "server id {} for {} learned on {}",
            known.server_id,
            known.subnet,
            known.interface.as_deref().unwrap_or("?")
        ),
        _ => return false,
    }
    true
}
