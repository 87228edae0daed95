//! A whole captured frame, as the kernel hooks hand it over, through the decoder. Never panics;
//! a malformed frame always says why; a frame decoded as DHCP really is on DHCP ports over the
//! right IP version; a frame called not DHCP is on no DHCP port. (That each rendering stays on
//! one line is the agent's property test `output::tests::renderings_stay_on_one_line`: the
//! renderings are the agent's, and the fuzz targets link only dhcp-wire and dhcp-engine.)
#![no_main]

use std::net::IpAddr;

use dhcp_wire::{Body, FrameMeta, decode_frame};
use dhcp_common::Hook;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let meta = FrameMeta {
        unix_ns: 1_700_000_000_000_000_000,
        ifindex: 2,
        interface: "guest0".into(),
        hook: Hook::TcIngress,
        wire_len: frame.len() as u32,
        vlan: None,
        vlan_inner: None,
        truncated: false,
    };
    let packet = decode_frame(frame, meta.clone());
    assert_eq!(
        (
            packet.meta.unix_ns,
            packet.meta.ifindex,
            &packet.meta.interface
        ),
        (meta.unix_ns, meta.ifindex, &meta.interface),
        "the decoder keeps the capture's metadata"
    );
    let on_ports = |ports: [u16; 2]| {
        [packet.src_port, packet.dst_port]
            .iter()
            .any(|p| p.is_some_and(|p| ports.contains(&p)))
    };
    match &packet.body {
        Body::Malformed { reason, .. } => assert!(!reason.trim().is_empty(), "no reason"),
        Body::V4(m) => {
            assert!(matches!(packet.src_ip, Some(IpAddr::V4(_))), "{packet:?}");
            assert!(on_ports([67, 68]), "{packet:?}");
            assert!(m.chaddr.len() <= 16);
        }
        Body::V6(_) => {
            assert!(matches!(packet.src_ip, Some(IpAddr::V6(_))), "{packet:?}");
            assert!(on_ports([546, 547]), "{packet:?}");
        }
    }
    if packet.not_dhcp().is_some() {
        assert!(packet.is_malformed(), "{packet:?}");
        assert!(!(on_ports([67, 68]) || on_ports([546, 547])), "{packet:?}");
    }
});
