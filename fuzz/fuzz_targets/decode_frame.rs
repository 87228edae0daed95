//! A whole captured frame, as the kernel hooks hand it over, through the decoder and both
//! renderings. Never panics; a malformed frame always says why; a frame decoded as DHCP really
//! is on DHCP ports over the right IP version; each rendering stays on one line.
#![no_main]

use std::net::IpAddr;

use dhcp_agent::{
    decode::{Body, FrameMeta, decode_frame},
    output,
};
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
    // Rendering must not panic either (`json_line` expects serialization to succeed), and
    // each rendering is one line: a hostile hostname must not forge log lines.
    let json = output::json_line(&packet);
    assert!(!json.contains('\n'), "JSON record spans lines: {json}");
    let text = output::text_line(&packet);
    assert!(
        !text.contains(['\n', '\r']),
        "text line spans lines: {text:?}"
    );
});
