//! Kernel programs of dhcp-observer.
//!
//! * `dhcp_xdp_ingress`: XDP, on guest-facing interfaces, sees what clients send.
//! * `dhcp_tc_egress`: TC classifier on the egress of the same interfaces, sees the server's
//!   OFFER/ACK/NAK leaving.
//! * `dhcp_tc_ingress`: TC classifier on the ingress of `lo`, where `dhcp_release` (which sends
//!   to the router's own address) travels.
//!
//! Each program matches DHCPv4 (UDP 67/68) and DHCPv6 (UDP 546/547), behind up to two VLAN tags,
//! copies the frame into the `EVENTS` ring buffer and counts in `STATS`. Every path returns
//! XDP_PASS / TC_ACT_UNSPEC ("carry on as if we were not here"): the observer never drops or
//! alters traffic, nor cuts short the programs attached after it.
//!
//! Header checks use direct packet access (cheapest for the non-DHCP majority); only a matched
//! frame pays for a helper call to copy it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

/// Host builds (e.g. `cargo clippy --workspace`) see an empty binary: the programs only exist
/// for the BPF target, which the agent's build script builds.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
