//! Reads `PacketEvent`s out of the BPF ring buffer without busy polling: the ring buffer's fd
//! becomes readable when the kernel has submitted records, and tokio's `AsyncFd` waits on it.
use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use dhcp_common::{
    CAPTURE_BYTES, EVENT_HEADER_BYTES, FLAG_TRUNCATED, FLAG_VLAN, FLAG_VLAN_INNER,
    FLAG_VLAN_OFFLOADED, Hook, PacketEvent,
};
use tokio::io::unix::AsyncFd;

/// One event copied out of the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub boot_ns: u64,
    pub ifindex: u32,
    pub wire_len: u32,
    pub hook: Hook,
    pub vlan: Option<u16>,
    pub vlan_inner: Option<u16>,
    /// The outer VLAN tag was offloaded (not in `frame`).
    pub vlan_offloaded: bool,
    pub truncated: bool,
    pub frame: Vec<u8>,
}

impl RawEvent {
    /// Parses one ring-buffer record. Returns `None` for a record that is not a `PacketEvent`
    /// (a version mismatch between agent and kernel object would show up here).
    pub fn from_record(record: &[u8]) -> Option<RawEvent> {
        if record.len() < EVENT_HEADER_BYTES {
            return None;
        }
        // The fields of the repr(C) PacketEvent where dhcp-common's definition puts them.
        use std::mem::offset_of;
        let u16_at = |at: usize| u16::from_ne_bytes([record[at], record[at + 1]]);
        let u32_at =
            |at: usize| u32::from_ne_bytes(record[at..at + 4].try_into().expect("4 bytes"));
        let at = offset_of!(PacketEvent, timestamp_ns);
        let boot_ns = u64::from_ne_bytes(record[at..at + 8].try_into().expect("8 bytes"));
        let ifindex = u32_at(offset_of!(PacketEvent, ifindex));
        let wire_len = u32_at(offset_of!(PacketEvent, wire_len));
        let cap_len = usize::from(u16_at(offset_of!(PacketEvent, cap_len)));
        let vlan_id = u16_at(offset_of!(PacketEvent, vlan_id));
        let vlan_inner_id = u16_at(offset_of!(PacketEvent, vlan_inner_id));
        let hook = record[offset_of!(PacketEvent, hook)];
        let flags = record[offset_of!(PacketEvent, flags)];
        let hook = Hook::from_u8(hook)?;
        let cap_len = cap_len.min(CAPTURE_BYTES);
        let frame = record
            .get(EVENT_HEADER_BYTES..EVENT_HEADER_BYTES + cap_len)?
            .to_vec();
        Some(RawEvent {
            boot_ns,
            ifindex,
            wire_len,
            hook,
            vlan: (flags & FLAG_VLAN != 0).then_some(vlan_id),
            vlan_inner: (flags & FLAG_VLAN_INNER != 0).then_some(vlan_inner_id),
            vlan_offloaded: flags & FLAG_VLAN_OFFLOADED != 0,
            truncated: flags & FLAG_TRUNCATED != 0,
            frame,
        })
    }
}

// Every field read above lies within the header the length check covers.
const _: () = assert!(std::mem::offset_of!(PacketEvent, flags) < EVENT_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(PacketEvent, data) == EVENT_HEADER_BYTES);

/// Async reader over the `EVENTS` ring buffer.
///
/// The kernel programs wake the reader at most once per wake-up interval (see
/// `dhcp_common::DEFAULT_WAKE_INTERVAL_NS`): records submitted after a wake-up, within the
/// interval, come with no wake-up of their own. So after every drain that a wake-up started,
/// the reader drains again one interval later on its own timer; that drain arms the timer
/// again only if it found records. Anything submitted later than one interval after the last
/// wake-up wakes the reader itself, so nothing waits longer than about one interval, and at
/// rest the reader sleeps with no timer at all.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// How long after a drain the next unannounced records are collected; zero when the
    /// kernel wakes the reader for every record.
    follow_up: Duration,
    /// When the next drain is due without a wake-up, if one is.
    due: Option<tokio::time::Instant>,
    /// Records that did not parse as `PacketEvent`s.
    pub undecodable: u64,
}

impl EventReader {
    /// `wake_interval` is the interval the kernel programs were loaded with.
    pub fn new(ring: RingBuf<MapData>, wake_interval: Duration) -> io::Result<EventReader> {
        // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
        // the RingBuf lives, and the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(io::Error::from)?;
        Ok(EventReader {
            ring,
            // A millisecond more: tokio's timer has millisecond ticks.
            follow_up: if wake_interval.is_zero() {
                Duration::ZERO
            } else {
                wake_interval + Duration::from_millis(1)
            },
            due: None,
            undecodable: 0,
        })
    }

    /// Waits until at least one event is available, then drains what is there into `out`.
    /// Cancel-safe: records are only taken after the last await.
    pub async fn read_batch(&mut self, out: &mut Vec<RawEvent>) -> io::Result<()> {
        loop {
            let before = out.len();
            let woken = match self.due {
                Some(due) => tokio::time::timeout_at(due, self.ring.readable_mut())
                    .await
                    .ok(),
                None => Some(self.ring.readable_mut().await),
            };
            match woken {
                Some(guard) => {
                    let mut guard = guard?;
                    // Clear readiness *before* draining: the kernel signals again only for a
                    // record submitted after the clear, and a record submitted after our last
                    // read re-arms the fd. Clearing after the drain could swallow that signal.
                    guard.clear_ready();
                    self.undecodable += drain(guard.get_inner_mut(), out);
                    if !self.follow_up.is_zero() {
                        self.due = Some(tokio::time::Instant::now() + self.follow_up);
                    }
                }
                None => {
                    self.undecodable += drain(self.ring.get_mut(), out);
                    self.due =
                        (out.len() > before).then(|| tokio::time::Instant::now() + self.follow_up);
                }
            }
            if out.len() > before {
                return Ok(());
            }
        }
    }
}

/// Takes every record there is; returns how many did not parse.
fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<RawEvent>) -> u64 {
    let mut undecodable = 0;
    while let Some(record) = ring.next() {
        match RawEvent::from_record(&record) {
            Some(event) => out.push(event),
            None => undecodable += 1,
        }
    }
    undecodable
}
