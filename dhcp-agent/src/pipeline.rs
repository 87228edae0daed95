//! The daemon's work on each kernel event, in one place: `run` calls it for every batch the ring
//! buffer gives, and the pipeline benchmark (`benches/pipeline.rs`) measures exactly this.
//!
//! An event is decoded, written to the pcap file (when one is asked for), counted, followed by
//! the DHCP exchange tracker, taught to the server identity (a server's reply); an ACK marks a
//! pending RELEASE of that lease renewed, and a RELEASE opens a pending record in the correlator.
use crate::{
    capture::RawEvent,
    correlate::{Correlator, Release, Verdict},
    decode::MessageType,
    leases::LeaseTable,
    metrics::Metrics,
    pcap::writer::PcapWriter,
    server_identity::ServerIdentity,
    service::{InterfaceNames, decode_event},
    system::BootClock,
    transactions::Transactions,
};

/// What the per-event work reads and updates, borrowed from the daemon for one batch.
pub struct Pipeline<'a> {
    pub clock: BootClock,
    pub names: &'a mut InterfaceNames,
    /// `--pcap`: every captured frame, unfiltered.
    pub pcap: Option<&'a mut PcapWriter>,
    pub metrics: &'a Metrics,
    pub transactions: &'a mut Transactions,
    pub identity: &'a mut ServerIdentity,
    pub correlator: &'a mut Correlator,
    /// The lease table as last read.
    pub table: &'a LeaseTable,
}

/// What a batch of events led to.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Releases settled at once (their lease was already gone from the table).
    pub verdicts: Vec<Verdict>,
    /// RELEASEs seen: each opened or refreshed a pending record.
    pub releases: usize,
}

impl Pipeline<'_> {
    /// Handles every event of a batch in order, then flushes the pcap file.
    pub fn on_batch<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e RawEvent>,
    ) -> anyhow::Result<BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        for event in events {
            if self.on_event(event, &mut outcome.verdicts)? {
                outcome.releases += 1;
            }
        }
        if let Some(file) = &mut self.pcap {
            file.flush()?;
        }
        Ok(outcome)
    }

    /// Handles one event; a verdict it settles goes to `verdicts`. Returns whether the event was
    /// a RELEASE.
    pub fn on_event(
        &mut self,
        event: &RawEvent,
        verdicts: &mut Vec<Verdict>,
    ) -> anyhow::Result<bool> {
        let packet = decode_event(event, self.clock, self.names);
        if let Some(file) = &mut self.pcap {
            file.write(&packet.meta, &event.frame)?;
        }
        self.metrics.packet(&packet);
        if let Some(done) = self.transactions.on_packet(&packet) {
            self.metrics.transaction(&done);
        }
        if let Some(known) = self.identity.observe(&packet) {
            eprintln!(
                "server id {} for {} learned on {}",
                known.server_id,
                known.subnet,
                known.interface.as_deref().unwrap_or("?")
            );
        }
        if let Some(m) = packet.dhcpv4()
            && m.op == 2
            && m.message_type == Some(MessageType::Ack)
            && !m.yiaddr.is_unspecified()
        {
            self.correlator
                .on_ack(m.yiaddr, &m.chaddr, packet.meta.unix_ns);
        }
        let Some(release) = Release::from_packet(&packet) else {
            return Ok(false);
        };
        verdicts.extend(
            self.correlator
                .on_release(release, self.table, self.identity),
        );
        Ok(true)
    }
}
