//! The programs themselves; see the crate docs.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    bindings::{TC_ACT_UNSPEC, xdp_action::XDP_PASS},
    helpers::{
        bpf_ktime_get_boot_ns,
        generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    },
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use dhcp_common::{
    CAPTURE_BYTES, DEFAULT_RING_BYTES, DEFAULT_WAKE_INTERVAL_NS, FLAG_DHCPV6, FLAG_TRUNCATED,
    FLAG_VLAN, FLAG_VLAN_INNER, FLAG_VLAN_OFFLOADED, Hook, PacketEvent, SMALL_CAPTURE_BYTES, stat,
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::ENTRIES, 0);

/// When the agent was last woken (`bpf_ktime_get_boot_ns`), one slot shared by every CPU. A
/// race between CPUs only costs a spare wake-up: the agent drains whatever it finds.
#[map]
static LAST_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Set by the agent at load ([`dhcp_common::names::WAKE_INTERVAL_GLOBAL`]); 0 wakes it for
/// every record, the kernel's default behaviour.
#[unsafe(no_mangle)]
static WAKE_INTERVAL_NS: u64 = DEFAULT_WAKE_INTERVAL_NS;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;

/// What the header walk found in a matching frame.
struct Match {
    flags: u8,
    vlan_id: u16,
    vlan_inner_id: u16,
}

#[inline(always)]
fn be16(ptr: usize) -> u16 {
    // SAFETY: callers bound-check `ptr + 2 <= data_end` first.
    u16::from_be(unsafe { core::ptr::read_unaligned(ptr as *const u16) })
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Reads the 4-byte VLAN tag at `tag`: (VLAN id, the ethertype that follows it).
#[inline(always)]
fn vlan_tag(tag: usize, data_end: usize) -> Option<(u16, u16)> {
    if tag + 4 > data_end {
        return None;
    }
    Some((be16(tag) & 0x0fff, be16(tag + 2)))
}

/// True for a DHCPv4 port pair: either end on 67 (server/relay) or 68 (client).
#[inline(always)]
fn dhcpv4_ports(src: u16, dst: u16) -> bool {
    src.wrapping_sub(67) < 2 || dst.wrapping_sub(67) < 2
}

/// True for a DHCPv6 port pair: either end on 546 (client) or 547 (server/relay).
#[inline(always)]
fn dhcpv6_ports(src: u16, dst: u16) -> bool {
    src.wrapping_sub(546) < 2 || dst.wrapping_sub(546) < 2
}

/// Bytes from the start of a frame that [`classify`] may read: Ethernet, two VLAN tags, the
/// longest IPv4 header (IPv6's is shorter) and UDP.
const CLASSIFY_BYTES: u32 = (ETH_HLEN + 2 * 4 + 60 + 8) as u32;

/// Walks Ethernet, up to two VLAN tags, IPv4 (any IHL, no fragments) or IPv6 (UDP as the first
/// next header) and UDP. Returns `None` for everything that is not DHCP, as early as possible.
///
/// Two tags in all: when the kernel has already moved the outer tag into skb metadata
/// (`tag_offloaded`, TC only), the frame itself may hold one more. So a frame gets the same
/// verdict at XDP, which sees every tag in the data, and at TC; DHCP behind three tags, which
/// no server here can receive, is not matched at either.
#[inline(always)]
fn classify(data: usize, data_end: usize, tag_offloaded: bool) -> Option<Match> {
    if data + ETH_HLEN > data_end {
        return None;
    }
    let mut ethertype = be16(data + 12);
    let mut offset = ETH_HLEN;
    let mut m = Match {
        flags: 0,
        vlan_id: 0,
        vlan_inner_id: 0,
    };
    // Up to two tags (802.1ad QinQ), unrolled for the verifier.
    if is_vlan(ethertype) {
        let (vid, next) = vlan_tag(data + offset, data_end)?;
        m.flags |= FLAG_VLAN;
        m.vlan_id = vid;
        ethertype = next;
        offset += 4;
        if is_vlan(ethertype) {
            if tag_offloaded {
                return None;
            }
            let (vid, next) = vlan_tag(data + offset, data_end)?;
            m.flags |= FLAG_VLAN_INNER;
            m.vlan_inner_id = vid;
            ethertype = next;
            offset += 4;
        }
    }
    if ethertype == ETH_P_IP {
        let ip = data + offset;
        if ip + 20 > data_end {
            return None;
        }
        // SAFETY: bound-checked above.
        let version_ihl = unsafe { *(ip as *const u8) };
        let protocol = unsafe { *((ip + 9) as *const u8) };
        if version_ihl >> 4 != 4 || protocol != IPPROTO_UDP {
            return None;
        }
        // More-fragments flag or a fragment offset: only the first fragment carries the UDP
        // header, and DHCP is never fragmented in practice, so skip them all.
        if be16(ip + 6) & 0x3fff != 0 {
            return None;
        }
        let ihl = ((version_ihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        let udp = ip + ihl;
        if udp + 8 > data_end {
            return None;
        }
        if dhcpv4_ports(be16(udp), be16(udp + 2)) {
            return Some(m);
        }
    } else if ethertype == ETH_P_IPV6 {
        let ip = data + offset;
        if ip + 48 > data_end {
            return None;
        }
        // SAFETY: bound-checked above.
        let next_header = unsafe { *((ip + 6) as *const u8) };
        if next_header != IPPROTO_UDP {
            return None;
        }
        let udp = ip + 40;
        if dhcpv6_ports(be16(udp), be16(udp + 2)) {
            m.flags |= FLAG_DHCPV6;
            return Some(m);
        }
    }
    None
}

#[inline(always)]
fn count(hook: Hook, which: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat::index(hook, which)) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Hands a matched frame to the agent in the smallest record it fits: see
/// [`SMALL_CAPTURE_BYTES`]. `copy(dst, len)` copies the frame's first `len` bytes and returns
/// false when the kernel refused the copy.
#[inline(always)]
fn emit(
    hook: Hook,
    ifindex: u32,
    wire_len: u32,
    m: Match,
    copy: impl FnOnce(*mut u8, u32) -> bool,
) {
    if wire_len <= SMALL_CAPTURE_BYTES as u32 {
        emit_in::<SMALL_CAPTURE_BYTES>(hook, ifindex, wire_len, m, copy);
    } else {
        emit_in::<CAPTURE_BYTES>(hook, ifindex, wire_len, m, copy);
    }
}

/// Reserves a record with `N` data bytes, fills the header and lets `copy` fill the bytes.
#[inline(always)]
fn emit_in<const N: usize>(
    hook: Hook,
    ifindex: u32,
    wire_len: u32,
    m: Match,
    copy: impl FnOnce(*mut u8, u32) -> bool,
) {
    let Some(mut entry) = EVENTS.reserve::<PacketEvent<N>>(0) else {
        count(hook, stat::LOST);
        return;
    };
    let event = entry.as_mut_ptr();
    let mut flags = m.flags;
    let mut cap_len = wire_len;
    if cap_len > N as u32 {
        cap_len = N as u32;
        flags |= FLAG_TRUNCATED;
    }
    // The helpers want a length the verifier can prove is in [1, N]. A plain `> 0` check gets
    // folded away by LLVM (it knows the frame has an Ethernet header), so bound it
    // arithmetically: for cap_len in [1, N] this is the identity. The volatile read hides the
    // caller's size-class test from LLVM, which would otherwise prove the mask redundant for
    // the large class and drop it, leaving the verifier without a bound.
    const { assert!(N.is_power_of_two()) };
    // SAFETY: reading a local.
    let cap_len = unsafe { core::ptr::read_volatile(&cap_len) };
    let cap_len = (cap_len.wrapping_sub(1) & (N as u32 - 1)) + 1;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: `event` points at a reserved record of size_of::<PacketEvent<N>>() bytes.
    let copied = unsafe {
        (*event).timestamp_ns = now;
        (*event).ifindex = ifindex;
        (*event).wire_len = wire_len;
        (*event).cap_len = cap_len as u16;
        (*event).vlan_id = m.vlan_id;
        (*event).vlan_inner_id = m.vlan_inner_id;
        (*event).hook = hook as u8;
        (*event).flags = flags;
        copy((*event).data.as_mut_ptr(), cap_len)
    };
    if copied {
        entry.submit(wake_flags(now));
        count(hook, stat::EVENTS);
        if flags & FLAG_TRUNCATED != 0 {
            count(hook, stat::TRUNCATED);
        }
    } else {
        entry.discard(0);
        count(hook, stat::LOST);
    }
}

/// How a record is submitted: see [`DEFAULT_WAKE_INTERVAL_NS`]. By default the kernel wakes
/// the reader for every record that finds the ring empty, which at a steady 10k frames/s is
/// every record: the agent then spent 12 µs of CPU per frame against 1.6 µs when saturated
/// (`cargo xtask bench --only storm`). Here it is woken at most once per interval, or at once
/// when a quarter of the ring is filled (a burst must not wait for the interval and
/// overflow); what is submitted between wake-ups the agent collects on its own timer, one
/// interval after it was woken (`EventReader`).
#[inline(always)]
fn wake_flags(now: u64) -> u64 {
    // SAFETY: a global the loader may rewrite; read it as memory, not as a constant.
    let interval = unsafe { core::ptr::read_volatile(&WAKE_INTERVAL_NS) };
    if interval == 0 {
        return 0;
    }
    let Some(last) = LAST_WAKE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the single slot of an array map, always there; a stale read (another CPU's
    // write in flight) only moves one wake-up.
    let due = now.wrapping_sub(unsafe { *last }) >= interval
        || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= EVENTS.query(BPF_RB_RING_SIZE as u64) / 4;
    if due {
        // SAFETY: as above.
        unsafe { *last = now };
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[xdp]
pub fn dhcp_xdp_ingress(ctx: XdpContext) -> u32 {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if let Some(m) = classify(data, data_end, false) {
        let wire_len = (data_end - data) as u32;
        // SAFETY: ctx.ctx is the program's context pointer.
        let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
        emit(Hook::XdpIngress, ifindex, wire_len, m, |dst, len| unsafe {
            bpf_xdp_load_bytes(ctx.ctx, 0, dst.cast(), len) == 0
        });
    }
    XDP_PASS
}

#[inline(always)]
fn tc(ctx: &TcContext, hook: Hook) {
    let skb = ctx.skb.skb;
    // SAFETY: reading fields of the program's own __sk_buff context.
    let (vlan_present, vlan_tci, ifindex, wire_len) = unsafe {
        (
            (*skb).vlan_present,
            (*skb).vlan_tci,
            (*skb).ifindex,
            (*skb).len,
        )
    };
    // Direct packet access reaches only the skb's linear part. A frame built in pages (an
    // AF_PACKET send larger than a page, some drivers) may have little more than its Ethernet
    // header there, which would hide a DHCP frame's headers. Only then, pull them in: the
    // kernel moves bytes into the head, the frame itself stays as it was.
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < CLASSIFY_BYTES && wire_len > linear {
        let _ = ctx.pull_data(wire_len.min(CLASSIFY_BYTES));
    }
    let Some(mut m) = classify(ctx.data(), ctx.data_end(), vlan_present != 0) else {
        return;
    };
    if vlan_present != 0 {
        // The NIC (or veth) carries the outer tag out of band: whatever tags are in the data
        // are inner ones.
        if m.flags & FLAG_VLAN != 0 {
            m.vlan_inner_id = m.vlan_id;
            m.flags |= FLAG_VLAN_INNER;
        }
        m.vlan_id = (vlan_tci & 0x0fff) as u16;
        m.flags |= FLAG_VLAN | FLAG_VLAN_OFFLOADED;
    }
    emit(hook, ifindex, wire_len, m, |dst, len| unsafe {
        bpf_skb_load_bytes(skb.cast(), 0, dst.cast(), len) == 0
    });
}

/// TC programs return TC_ACT_UNSPEC, not TC_ACT_OK: in a TCX or clsact chain, TC_ACT_OK ends
/// the chain with "pass" and skips every program after ours (another observer, a firewall),
/// which would change what the router does. UNSPEC hands the packet on unchanged; at the end of
/// the chain it passes, exactly as if we were not there.
#[classifier]
pub fn dhcp_tc_ingress(ctx: TcContext) -> i32 {
    tc(&ctx, Hook::TcIngress);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn dhcp_tc_egress(ctx: TcContext) -> i32 {
    tc(&ctx, Hook::TcEgress);
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
