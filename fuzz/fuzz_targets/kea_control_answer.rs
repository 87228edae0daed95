//! Kea's control-channel answers (`lease4-get`, `lease4-del`, ... through the `lease_cmds`
//! hook): never panics, and a lease it reads is one the agent can act on (an address, a
//! hardware type only with a hardware address, an IAID exactly for a DHCPv6 lease).
#![no_main]

use dhcp_engine::kea_control::{KeaAnswer, parse_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(KeaAnswer::Lease(lease)) = parse_answer(text) {
        assert_eq!(lease.htype != 0, !lease.hwaddr.is_empty(), "{text:?}");
        assert_eq!(lease.iaid.is_some(), lease.ip.is_ipv6(), "{text:?}");
        assert!(lease.client_id.is_some() || lease.ip.is_ipv4(), "{text:?}");
    }
});
