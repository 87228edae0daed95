//! dhcp-wire: the bytes the observer reads, turned into typed packets. No I/O, no build script,
//! no async: it runs wherever Rust runs (the fuzz targets link only this crate and the engine).
//!
//! # Layout
//! - [`frame`]: a captured frame (Ethernet, as the kernel hooks copy it) to a [`Packet`]:
//!   L2-L4 with etherparse, then the DHCP readers; anything else is [`Body::Malformed`] or, for
//!   frames that are not DHCP at all, says so ([`Packet::is_dhcp`]).
//! - [`dhcpv4`], [`dhcpv6`]: strict readers of the two protocols' messages.
//! - [`hex`]: MACs and other byte strings as text ([`Mac`], [`HexBytes`]).
//! - `test_support` (feature `test-support`): packets from real encodings for tests above.
//!
//! Imports go one way: this crate knows only `dhcp-common` (the kernel/user ABI's [`Hook`]).
//!
//! [`Hook`]: dhcp_common::Hook
pub mod dhcpv4;
pub mod dhcpv6;
pub mod frame;
pub mod hex;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use dhcpv4::{Dhcpv4, Dhcpv4Error, MessageType};
pub use dhcpv6::Dhcpv6Info;
pub use frame::{Body, Dhcpv4Info, FrameMeta, Layer, Packet, decode_frame};
pub use hex::{HexBytes, Mac, hex_colon, parse_hex_bytes, parse_mac};
