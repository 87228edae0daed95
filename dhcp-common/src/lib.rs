//! Types shared by the kernel programs (`dhcp-ebpf`) and the agent (`dhcp-agent`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes it into a BPF ring buffer or a
//! per-CPU array and the agent reads the same bytes back. Changing a layout means changing both
//! sides, which is why they live in one place.
#![no_std]

/// Bytes of each matched frame copied into an event. Real DHCP over a 1,500-byte MTU is at most
/// 1,522 bytes with two VLAN tags; 2,048 also covers jumbo-ish frames and keeps the ring-buffer
/// record a round size. Longer frames are truncated and counted.
pub const CAPTURE_BYTES: usize = 2048;

/// Data bytes of a small event record. Nearly every DHCP frame fits (a DHCPv4 message with
/// its options is 300 to 400 bytes on the wire), and a small record takes a quarter of the ring
/// buffer a full one takes: at 200,000 DHCP frames per second the default ring holds 75 ms of
/// frames instead of 20 ms. A power of two, so the kernel program can bound lengths by masking.
pub const SMALL_CAPTURE_BYTES: usize = 512;

/// Default size of the event ring buffer in bytes (a power of two, as the kernel requires).
/// 8 MiB holds about 15,000 small events (4,000 full-size ones): a burst of that many DHCP
/// frames can wait for the agent without loss.
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

/// Default bound on how long a submitted record may wait before the agent reads it, and the
/// shortest time between two wake-ups of the agent by the kernel programs. The kernel wakes
/// the first record after a quiet spell at once, so a lone RELEASE is not delayed; in a stream
/// the agent reads in batches of one interval (at 10k frames/s, 200 frames per batch instead
/// of one). A RELEASE's verdict does not wait for it: its grace counts from the frame's kernel
/// timestamp and is seconds long. Measured at 10k frames/s (`cargo xtask bench --only storm`):
/// 4.0 µs of agent CPU per frame with 5 ms, 2.7 µs with 20 ms, against 0.8 µs saturated.
pub const DEFAULT_WAKE_INTERVAL_NS: u64 = 20_000_000;

/// Which hook saw a frame. The hook also gives the direction.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP on a guest-facing interface: frames arriving from clients.
    XdpIngress = 0,
    /// TC on the ingress of an interface (used on `lo`, where `dhcp_release` traffic travels).
    TcIngress = 1,
    /// TC on the egress of an interface: the server's OFFER/ACK/NAK on their way out.
    TcEgress = 2,
}

/// Number of hooks, for sizing per-hook counters.
pub const HOOK_COUNT: u32 = 3;

impl Hook {
    pub const ALL: [Hook; HOOK_COUNT as usize] =
        [Hook::XdpIngress, Hook::TcIngress, Hook::TcEgress];

    pub const fn from_u8(value: u8) -> Option<Hook> {
        match value {
            0 => Some(Hook::XdpIngress),
            1 => Some(Hook::TcIngress),
            2 => Some(Hook::TcEgress),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Hook::XdpIngress => "xdp_ingress",
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
        }
    }

    pub const fn is_ingress(self) -> bool {
        !matches!(self, Hook::TcEgress)
    }
}

/// `PacketEvent::flags`: an outer VLAN tag was present (in the frame or in skb metadata).
pub const FLAG_VLAN: u8 = 1 << 0;
/// `PacketEvent::flags`: a second (inner, 802.1ad QinQ) VLAN tag was present in the frame.
pub const FLAG_VLAN_INNER: u8 = 1 << 1;
/// `PacketEvent::flags`: the outer tag came from skb metadata (VLAN offload), so it is *not* in
/// `data`; the agent re-inserts it when it needs the frame as it was on the wire.
pub const FLAG_VLAN_OFFLOADED: u8 = 1 << 2;
/// `PacketEvent::flags`: the frame is DHCPv6 (UDP 546/547 over IPv6), otherwise DHCPv4.
pub const FLAG_DHCPV6: u8 = 1 << 3;
/// `PacketEvent::flags`: `wire_len` exceeded [`CAPTURE_BYTES`]; `data` holds the first bytes only.
pub const FLAG_TRUNCATED: u8 = 1 << 4;

/// One matched frame, as the kernel hands it to the agent through the ring buffer. The kernel
/// reserves the smallest record its frame fits (`N` = [`SMALL_CAPTURE_BYTES`] or
/// [`CAPTURE_BYTES`]); the header is the same and `cap_len` says how much of `data` is valid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketEvent<const N: usize = CAPTURE_BYTES> {
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME in nanoseconds.
    pub timestamp_ns: u64,
    /// Index of the interface the hook is attached to.
    pub ifindex: u32,
    /// Length of the frame on the wire (the skb or XDP buffer length).
    pub wire_len: u32,
    /// Number of valid bytes in `data` (`min(wire_len, CAPTURE_BYTES)`).
    pub cap_len: u16,
    /// Outer VLAN id (12 bits) when `FLAG_VLAN` is set.
    pub vlan_id: u16,
    /// Inner VLAN id when `FLAG_VLAN_INNER` is set.
    pub vlan_inner_id: u16,
    /// A [`Hook`] value.
    pub hook: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The frame from its Ethernet header on.
    pub data: [u8; N],
}

/// Size of the fixed header in front of `PacketEvent::data`.
pub const EVENT_HEADER_BYTES: usize = core::mem::size_of::<PacketEvent>() - CAPTURE_BYTES;

/// Per-hook counters in the `STATS` per-CPU array, at index `hook * STATS_PER_HOOK + stat`.
pub mod stat {
    /// Frames that matched and were handed to the ring buffer.
    pub const EVENTS: u32 = 0;
    /// Frames that matched but could not be handed over: ring buffer full (or copy failed).
    pub const LOST: u32 = 1;
    /// Frames that matched and were longer than `CAPTURE_BYTES` (also counted in `EVENTS`).
    pub const TRUNCATED: u32 = 2;
    /// Number of counters per hook.
    pub const PER_HOOK: u32 = 3;
    /// Number of entries in the `STATS` map.
    pub const ENTRIES: u32 = super::HOOK_COUNT * PER_HOOK;

    pub const NAMES: [&str; PER_HOOK as usize] = ["events", "lost", "truncated"];

    /// Index of counter `stat` of `hook` in the `STATS` map.
    pub const fn index(hook: super::Hook, stat: u32) -> u32 {
        hook as u32 * PER_HOOK + stat
    }
}

/// Names of the kernel objects, shared so that a rename cannot split the two sides.
pub mod names {
    pub const XDP_PROGRAM: &str = "dhcp_xdp_ingress";
    pub const TC_INGRESS_PROGRAM: &str = "dhcp_tc_ingress";
    pub const TC_EGRESS_PROGRAM: &str = "dhcp_tc_egress";
    pub const EVENTS_MAP: &str = "EVENTS";
    pub const STATS_MAP: &str = "STATS";
    /// The kernel programs' global holding the wake-up interval in nanoseconds (0: a wake-up
    /// per record).
    pub const WAKE_INTERVAL_GLOBAL: &str = "WAKE_INTERVAL_NS";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: PacketEvent is repr(C) plain data with no padding-sensitive invariants.
    unsafe impl aya::Pod for super::PacketEvent {}
}

// The ring buffer reserves 8-byte aligned records; keep the header a multiple of 8 so `data`
// needs no padding and the layout is the same on both sides.
const _: () = assert!(EVENT_HEADER_BYTES == 24);
const _: () = assert!(core::mem::align_of::<PacketEvent>() == 8);
