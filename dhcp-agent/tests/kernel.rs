//! The kernel programs on crafted frames through BPF_PROG_TEST_RUN (no attachment): every DHCP
//! frame produces exactly one event carrying the frame's bytes, every other frame none, and
//! every program always returns pass. Needs root (loads BPF programs).
use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};
use dhcp_agent::capture::{Capture, RawEvent};
use dhcp_common::{CAPTURE_BYTES, Hook};
use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
use dhcproto::v4::MessageType;

const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1) as the test runner reports it: pass, and let later programs run.
const TC_ACT_UNSPEC: u32 = u32::MAX;

fn drain(ring: &mut RingBuf<MapData>) -> Vec<RawEvent> {
    let mut events = Vec::new();
    while let Some(record) = ring.next() {
        events.push(RawEvent::from_record(&record).expect("a PacketEvent record"));
    }
    events
}

fn discover() -> Vec<u8> {
    Dhcpv4Spec::new(MessageType::Discover, 0xdead_beef, [0x52, 0x54, 0, 1, 2, 3]).encode()
}

fn udp4(framing: &Framing, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    frames::ipv4_udp(
        framing,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        ports,
        payload,
    )
    .unwrap()
}

/// A frame that must produce one event, with the VLAN ids the kernel must report.
type DhcpCase = (&'static str, Vec<u8>, Option<u16>, Option<u16>);

fn dhcp_frames() -> Vec<DhcpCase> {
    let plain = Framing::default();
    let lo = Framing {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        ..Framing::default()
    };
    let vlan = Framing {
        vlans: vec![42],
        ..Framing::default()
    };
    let qinq = Framing {
        vlans: vec![7, 8],
        ..Framing::default()
    };
    let ip_opts = Framing {
        ip_options: vec![1; 40],
        ..Framing::default()
    }; // IHL 15
    let release = {
        let mut r = Dhcpv4Spec::new(MessageType::Release, 1, [2; 6]);
        r.ciaddr = Ipv4Addr::new(172, 29, 101, 150);
        r.server_id = Some(Ipv4Addr::new(172, 29, 101, 245));
        r.encode()
    };
    let v6 = frames::ipv6_udp(
        &plain,
        "fe80::1".parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        (546, 547),
        &frames::dhcpv6_solicit(5, &[0, 3, 0, 1, 9, 9, 9, 9, 9, 9]),
    )
    .unwrap();
    vec![
        (
            "client to server",
            udp4(&plain, (68, 67), &discover()),
            None,
            None,
        ),
        (
            "server to client",
            udp4(&plain, (67, 68), &discover()),
            None,
            None,
        ),
        (
            "relay to server",
            udp4(&plain, (67, 67), &discover()),
            None,
            None,
        ),
        (
            "dhcp_release on lo",
            udp4(&lo, (68, 67), &release),
            None,
            None,
        ),
        ("802.1Q", udp4(&vlan, (68, 67), &discover()), Some(42), None),
        (
            "802.1ad QinQ",
            udp4(&qinq, (68, 67), &discover()),
            Some(7),
            Some(8),
        ),
        (
            "IPv4 options",
            udp4(&ip_opts, (68, 67), &discover()),
            None,
            None,
        ),
        ("DHCPv6", v6, None, None),
        (
            "malformed DHCP still goes up",
            udp4(&plain, (68, 67), &[0xff; 10]),
            None,
            None,
        ),
    ]
}

fn other_frames() -> Vec<(&'static str, Vec<u8>)> {
    let plain = Framing::default();
    let mut fragment = udp4(&plain, (68, 67), &discover());
    fragment[14 + 6] |= 0x20; // more-fragments flag
    let mut later_fragment = udp4(&plain, (68, 67), &discover());
    later_fragment[14 + 7] = 0x10; // fragment offset 16
    let mut tcp = udp4(&plain, (68, 67), &discover());
    tcp[14 + 9] = 6; // protocol TCP
    let mut bad_ihl = udp4(&plain, (68, 67), &discover());
    bad_ihl[14] = 0x43; // IHL 3 (< 20 bytes)
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let v6_other = frames::ipv6_udp(
        &plain,
        "fe80::1".parse().unwrap(),
        "ff02::1".parse().unwrap(),
        (5000, 5001),
        &[0; 20],
    )
    .unwrap();
    vec![
        ("DNS", udp4(&plain, (5353, 53), &[0; 40])),
        ("NTP", udp4(&plain, (123, 123), &[0; 48])),
        ("first fragment", fragment),
        ("later fragment", later_fragment),
        ("TCP to 67", tcp),
        ("IHL below 5", bad_ihl),
        ("ARP", arp),
        ("other IPv6 UDP", v6_other),
        // (A bare Ethernet header is refused by the kernel's skb test runner itself.)
        (
            "IPv4 header only",
            udp4(&plain, (68, 67), &discover())[..14 + 20].to_vec(),
        ),
        (
            "truncated UDP header",
            udp4(&plain, (68, 67), &discover())[..14 + 20 + 4].to_vec(),
        ),
    ]
}

#[test]
fn every_program_emits_one_event_per_dhcp_frame_and_none_otherwise() {
    let mut capture = Capture::load(1 << 20).expect("load programs (needs root)");
    let mut ring = capture.take_ring_buffer().unwrap();
    for hook in Hook::ALL {
        let pass = if hook == Hook::XdpIngress {
            XDP_PASS
        } else {
            TC_ACT_UNSPEC
        };
        for (name, frame, vlan, vlan_inner) in dhcp_frames() {
            let result = capture.test_run(hook, &frame, 1).unwrap();
            assert_eq!(result.return_value, pass, "{hook:?} {name}: must pass");
            let events = drain(&mut ring);
            assert_eq!(events.len(), 1, "{hook:?} {name}: one event");
            let event = &events[0];
            assert_eq!(event.frame, frame, "{hook:?} {name}: the frame's bytes");
            assert_eq!(event.wire_len as usize, frame.len());
            assert_eq!(event.hook, hook);
            assert_eq!(
                (event.vlan, event.vlan_inner),
                (vlan, vlan_inner),
                "{hook:?} {name}"
            );
            assert!(!event.truncated);
        }
        for (name, frame) in other_frames() {
            let result = capture
                .test_run(hook, &frame, 1)
                .unwrap_or_else(|e| panic!("{hook:?} {name}: {e}"));
            assert_eq!(result.return_value, pass, "{hook:?} {name}: must pass");
            assert!(drain(&mut ring).is_empty(), "{hook:?} {name}: no event");
        }
    }
    let counters = capture.counters().unwrap();
    for hook in Hook::ALL {
        assert_eq!(
            counters[hook as usize].events,
            dhcp_frames().len() as u64,
            "{hook:?}"
        );
        assert_eq!(counters[hook as usize].lost, 0);
    }
}

#[test]
fn oversized_frames_are_truncated_and_counted() {
    let mut capture = Capture::load(1 << 20).unwrap();
    let mut ring = capture.take_ring_buffer().unwrap();
    // A 3,000-byte DHCP frame (a huge option area; jumbo frames exist): the first CAPTURE_BYTES
    // are delivered. (Above a page, XDP test runs split the frame into fragments.)
    let mut payload = discover();
    payload.pop(); // END option
    while payload.len() < 2900 {
        payload.extend_from_slice(&[224, 200]);
        payload.extend_from_slice(&[0x41; 200]);
    }
    payload.push(255);
    let frame = udp4(&Framing::default(), (68, 67), &payload);
    for hook in [Hook::XdpIngress, Hook::TcEgress] {
        capture.test_run(hook, &frame, 1).unwrap();
        let events = drain(&mut ring);
        assert_eq!(events.len(), 1);
        assert!(events[0].truncated);
        assert_eq!(events[0].wire_len as usize, frame.len());
        assert_eq!(events[0].frame, frame[..CAPTURE_BYTES]);
        assert_eq!(capture.counters().unwrap()[hook as usize].truncated, 1);
    }
}

#[test]
fn a_full_ring_buffer_counts_lost_events_and_still_passes() {
    // A DISCOVER fits a small record (24 + 512 bytes, 544 with the ring's own header): 16 KiB
    // holds 30 of them; the rest are lost, never dropped from the wire.
    let mut capture = Capture::load(16 << 10).unwrap();
    let _ring = capture.take_ring_buffer().unwrap();
    let frame = udp4(&Framing::default(), (68, 67), &discover());
    assert!(frame.len() <= dhcp_common::SMALL_CAPTURE_BYTES);
    let result = capture.test_run(Hook::XdpIngress, &frame, 100).unwrap();
    assert_eq!(result.return_value, XDP_PASS);
    let c = capture.counters().unwrap()[Hook::XdpIngress as usize];
    assert_eq!(c.events + c.lost, 100);
    assert_eq!(c.events, (16 << 10) / 544, "{c:?}");

    // A frame over 512 bytes takes a full record (24 + 2048 + 8): 7 fit.
    let mut capture = Capture::load(16 << 10).unwrap();
    let _ring = capture.take_ring_buffer().unwrap();
    let mut big = discover();
    big.resize(600, 0);
    let frame = udp4(&Framing::default(), (68, 67), &big);
    capture.test_run(Hook::XdpIngress, &frame, 100).unwrap();
    let c = capture.counters().unwrap()[Hook::XdpIngress as usize];
    assert_eq!(c.events + c.lost, 100);
    assert_eq!(c.events, (16 << 10) / 2080, "{c:?}");
}

/// The kernel programs wake the reader at most once per wake-up interval: the first record
/// after a quiet spell wakes it at once, one submitted within the interval comes with no
/// wake-up and the reader's own timer collects it about an interval later, and with an
/// interval of zero every record wakes it (the kernel's default behaviour).
#[test]
fn records_are_read_in_batches_of_one_wake_up_interval_and_none_is_left_behind() {
    use std::time::{Duration, Instant};
    let frame = udp4(&Framing::default(), (68, 67), &discover());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The readers register with the runtime's reactor.
    let _entered = runtime.enter();
    // Long enough that the second frame surely falls inside it.
    let interval = Duration::from_millis(300);
    let mut capture = Capture::load_with(1 << 20, interval).unwrap();
    let mut reader = capture.event_reader().unwrap();
    runtime.block_on(async {
        let mut batch = Vec::new();
        let mut read_one = async |capture: &mut Capture, batch: &mut Vec<RawEvent>| {
            batch.clear();
            let sent = Instant::now();
            capture.test_run(Hook::TcEgress, &frame, 1).unwrap();
            tokio::time::timeout(Duration::from_secs(3), reader.read_batch(batch))
                .await
                .expect("the record is read")
                .unwrap();
            assert_eq!(batch.len(), 1);
            sent.elapsed()
        };
        let first = read_one(&mut capture, &mut batch).await;
        assert!(
            first < interval / 3,
            "a lone record wakes the reader: {first:?}"
        );
        let second = read_one(&mut capture, &mut batch).await;
        assert!(
            second > interval / 3 && second < interval * 3,
            "a record within the interval waits for the reader's timer: {second:?}"
        );
        // Past the interval, and the reader's timer found nothing more: quiet again.
        tokio::time::sleep(interval * 2).await;
        let third = read_one(&mut capture, &mut batch).await;
        assert!(third < interval / 3, "after a quiet spell: {third:?}");
    });

    let mut capture = Capture::load_with(1 << 20, Duration::ZERO).unwrap();
    let mut reader = capture.event_reader().unwrap();
    runtime.block_on(async {
        let mut batch = Vec::new();
        for n in 0..3 {
            batch.clear();
            let sent = Instant::now();
            capture.test_run(Hook::TcEgress, &frame, 1).unwrap();
            tokio::time::timeout(Duration::from_secs(3), reader.read_batch(&mut batch))
                .await
                .expect("the record is read")
                .unwrap();
            assert_eq!(batch.len(), 1);
            assert!(
                sent.elapsed() < Duration::from_millis(100),
                "record {n}: every record wakes the reader with --wake-interval 0"
            );
        }
    });
}
