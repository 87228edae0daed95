//! Reads `PacketEvent`s out of the BPF ring buffer without busy polling: the ring buffer's fd
//! becomes readable when the kernel has submitted records, and tokio's `AsyncFd` waits on it.
use std::io;

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
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that did not parse as `PacketEvent`s.
    pub undecodable: u64,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<EventReader> {
        // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
        // the RingBuf lives, and the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(io::Error::from)?;
        Ok(EventReader {
            ring,
            undecodable: 0,
        })
    }

    /// Waits until at least one event is available, then drains what is there into `out`.
    pub async fn read_batch(&mut self, out: &mut Vec<RawEvent>) -> io::Result<()> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            // Clear readiness *before* draining: the kernel only signals when the consumer has
            // caught up, so a record submitted after our last read re-arms the fd. Clearing
            // after the drain could swallow that signal and stall the reader.
            guard.clear_ready();
            let ring = guard.get_inner_mut();
            let before = out.len();
            while let Some(record) = ring.next() {
                match RawEvent::from_record(&record) {
                    Some(event) => out.push(event),
                    None => self.undecodable += 1,
                }
            }
            if out.len() > before {
                return Ok(());
            }
        }
    }
}
