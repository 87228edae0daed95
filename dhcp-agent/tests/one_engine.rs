//! The daemon's live path and `analyze` drive the same observer, so they agree by construction:
//! the same recorded frames go through the daemon's per-event pipeline (as `run` reads them off
//! the ring buffer) and, written to a pcapng file by the daemon's own writer, through `analyze`
//! with the same lease table as a file; every release gets the same verdict both ways,
//! including releases carrying a client id (dnsmasq finds a lease by client id first).
//!
//! And `analyze` on an unfiltered capture (DHCP among ARP, ICMP, TCP and DNS) counts the other
//! frames as skipped, by reason, never as malformed DHCP. No root needed: no kernel, no lab.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clap::Parser as _;
use dhcp_agent::{
    analyze::{self, Report},
    capture::RawEvent,
    cli::{Cli, Command},
    metrics::Metrics,
    pcap::writer::PcapWriter,
    pipeline::Pipeline,
    service::InterfaceNames,
    system::BootClock,
};
use dhcp_common::Hook;
use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    correlate::Outcome,
    dnsmasq_conf::{DhcpRange, DnsmasqConfig},
    leases::{LeaseFormat as _, dnsmasq::Dnsmasq},
    observer::{LeaseFileRead, Now},
    server_identity::ServerIdentity,
};
use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
use dhcproto::v4::MessageType;

const VIP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
const PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);
const SECOND: u64 = 1_000_000_000;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("dhcp-one-engine-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0x10, 0, n]
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 29, 101, 100 + n)
}

/// One DHCPv4 frame as a kernel event on `guest0` (replies leaving, requests arriving) or `lo`.
fn event(spec: &Dhcpv4Spec, at_s: u64, on_lo: bool) -> RawEvent {
    let reply = matches!(spec.message_type, MessageType::Offer | MessageType::Ack);
    let (src, dst, ports) = if reply {
        (VIP, Ipv4Addr::BROADCAST, (67, 68))
    } else if on_lo {
        (spec.ciaddr, PRIMARY, (68, 67))
    } else {
        (spec.ciaddr, VIP, (68, 67))
    };
    let frame = frames::ipv4_udp(&Framing::default(), src, dst, ports, &spec.encode()).unwrap();
    RawEvent {
        boot_ns: 100 * SECOND + at_s * SECOND,
        ifindex: if on_lo { 1 } else { 2 },
        wire_len: frame.len() as u32,
        hook: match (reply, on_lo) {
            (true, _) => Hook::TcEgress,
            (false, true) => Hook::TcIngress,
            (false, false) => Hook::XdpIngress,
        },
        vlan: None,
        vlan_inner: None,
        vlan_offloaded: false,
        truncated: false,
        frame,
    }
}

fn ack(n: u8, client_id: Option<Vec<u8>>) -> Dhcpv4Spec {
    let mut spec = Dhcpv4Spec::new(MessageType::Ack, 0x1000 + u32::from(n), mac(n));
    spec.yiaddr = ip(n);
    spec.server_id = Some(VIP);
    spec.lease_secs = Some(3600);
    spec.client_id = client_id;
    spec
}

fn release(n: u8, server_id: Ipv4Addr, client_id: Option<Vec<u8>>) -> Dhcpv4Spec {
    let mut spec = Dhcpv4Spec::new(MessageType::Release, 0x2000 + u32::from(n), mac(n));
    spec.ciaddr = ip(n);
    spec.server_id = Some(server_id);
    spec.client_id = client_id;
    spec
}

fn id(n: u8) -> Vec<u8> {
    [&[1u8][..], &mac(n)].concat()
}

/// What the lease file says once everything was sent: who still holds an address.
fn lease_file() -> String {
    [
        // 1: dhcp_release with the primary address as server id: dropped, still leased.
        format!("0 {} {} vm1 *", hex(&mac(1)), ip(1)),
        // 3: leased with a client id; its RELEASE carries the same MAC but another client id:
        // dnsmasq looks the lease up by client id and finds none (client_mismatch).
        format!("0 {} {} vm3 {}", hex(&mac(3)), ip(3), hex(&id(3))),
        // 4: leased with a client id; its RELEASE has the right one but no server id.
        format!("0 {} {} vm4 {}", hex(&mac(4)), ip(4), hex(&id(4))),
        String::new(),
    ]
    .join("\n")
}

fn hex(bytes: &[u8]) -> String {
    dhcp_wire::hex_colon(bytes)
}

/// The frames: each client's ACK, then the RELEASEs (2: honored, its lease left the file).
fn recorded() -> Vec<RawEvent> {
    let mut no_server_id = release(4, VIP, Some(id(4)));
    no_server_id.server_id = None;
    vec![
        event(&ack(1, None), 0, false),
        event(&ack(2, Some(id(2))), 0, false),
        event(&ack(3, Some(id(3))), 0, false),
        event(&ack(4, Some(id(4))), 0, false),
        event(&release(1, PRIMARY, None), 1, true),
        // Within the grace of its ACK: the file may never have listed it.
        event(&release(2, VIP, Some(id(2))), 2, false),
        event(&release(3, VIP, Some(vec![1, 9, 9, 9, 9, 9, 9])), 3, false),
        event(&no_server_id, 4, false),
    ]
}

fn identity() -> ServerIdentity {
    let config = DnsmasqConfig {
        listen_addresses: vec![Ipv4Addr::LOCALHOST.into(), VIP.into()],
        ranges: vec![DhcpRange {
            start: Ipv4Addr::new(172, 29, 101, 100),
            end: Some(Ipv4Addr::new(172, 29, 101, 200)),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        }],
        ..DnsmasqConfig::default()
    };
    ServerIdentity::from_config(&config, &[])
}

/// (ip, mac, outcome, cause, expected server id) of a verdict, as both sides report it.
type Row = (String, String, String, Option<String>, Option<String>);

fn analyze_json(args: &[&str]) -> Report {
    let argv = [&["dhcp-agent", "analyze"][..], args].concat();
    let Command::Analyze(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    analyze::analyze(&args).unwrap()
}

#[test]
fn the_live_path_and_analyze_give_the_same_verdicts() {
    let dir = Dir::new("verdicts");
    let events = recorded();
    // The live path: the daemon's pipeline and observer, the lease table read first, time
    // passing beyond the grace; every frame also written by the daemon's pcap writer.
    let pcap = dir.0.join("capture.pcapng");
    let mut writer = PcapWriter::create(&pcap, None).unwrap();
    let mut observer = Observer::new(
        ObserverConfig {
            grace: Duration::from_secs(2),
            ..ObserverConfig::default()
        },
        identity(),
    );
    let mut findings = Vec::new();
    let table = Dnsmasq.parse(&lease_file()).unwrap();
    let clock = BootClock::new();
    let start = Now {
        unix_ns: clock.to_unix_ns(0),
        mono: Instant::now(),
    };
    observer.on_lease_file(LeaseFileRead::Table(table), start, &mut findings);
    let metrics = Metrics::new("test", "test");
    let mut names = InterfaceNames::default();
    Pipeline {
        clock,
        names: &mut names,
        pcap: Some(&mut writer),
        metrics: &metrics,
        observer: &mut observer,
    }
    .on_batch(&events, &mut findings)
    .unwrap();
    drop(writer);
    let later = Now {
        unix_ns: clock.to_unix_ns(200 * SECOND),
        mono: Instant::now(),
    };
    observer.settle_due(later, &mut findings);
    let live: Vec<Row> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::Settled(v) => Some((
                v.release.ciaddr.to_string(),
                hex(&v.release.chaddr),
                v.outcome.name().to_owned(),
                match &v.outcome {
                    Outcome::Dropped(cause) => Some(cause.name().to_owned()),
                    _ => None,
                },
                v.expected_server_id.map(|a| a.to_string()),
            )),
            _ => None,
        })
        .collect();
    let outcomes: Vec<(&str, Option<&str>)> = live
        .iter()
        .map(|r| (r.2.as_str(), r.3.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("dropped", Some("server_id_mismatch")),
            ("honored", None),
            ("dropped", Some("client_mismatch")),
            ("dropped", Some("missing_server_id")),
        ],
        "the daemon's verdicts: {live:?}"
    );

    // analyze, on the daemon's own capture, with the lease table as a file.
    let leases = dir.0.join("dnsmasq.leases");
    std::fs::write(&leases, lease_file()).unwrap();
    let report = analyze_json(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--leases",
        leases.to_str().unwrap(),
    ]);
    let offline: Vec<Row> = report
        .releases
        .iter()
        .map(|r| {
            (
                r.ip.clone(),
                r.mac.clone(),
                r.outcome.to_owned(),
                r.cause.map(str::to_owned),
                r.expected_server_id.clone(),
            )
        })
        .collect();
    assert_eq!(offline, live, "analyze and the live daemon agree");
    assert_eq!(report.malformed, 0);
}

/// A frame of another protocol, as a capture on a router's interface has them.
fn other_frames() -> Vec<(&'static str, Vec<u8>)> {
    let eth = |ethertype: [u8; 2], payload: &[u8]| {
        let mut f = vec![0xff; 6];
        f.extend(mac(9));
        f.extend(ethertype);
        f.extend(payload);
        f
    };
    let ipv4 = |protocol: u8, payload: &[u8]| {
        let total = 20 + payload.len() as u16;
        let mut h = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            protocol,
            0,
            0,
        ];
        h.extend(ip(1).octets());
        h.extend(VIP.octets());
        let sum = h
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend(payload);
        eth([0x08, 0x00], &h)
    };
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend(mac(9));
    arp.extend(ip(9).octets());
    arp.extend([0; 6]);
    arp.extend(VIP.octets());
    let icmp_echo = [8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let mut tcp_syn = vec![
        0xc0, 0x00, 0x00, 0x16, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
    ];
    tcp_syn.extend([0, 0, 0, 0]);
    let dns =
        frames::ipv4_udp(&Framing::default(), ip(1), VIP, (40000, 53), b"\0\x01\0\0").unwrap();
    vec![
        ("arp", eth([0x08, 0x06], &arp)),
        ("icmp", ipv4(1, &icmp_echo)),
        ("tcp", ipv4(6, &tcp_syn)),
        ("dns", dns),
    ]
}

fn write_capture(path: &Path, frames: &[Vec<u8>]) {
    let mut writer = PcapWriter::create(path, None).unwrap();
    for (i, frame) in frames.iter().enumerate() {
        let meta = dhcp_wire::FrameMeta {
            unix_ns: 1_700_000_000_000_000_000 + i as i128 * 1_000_000_000,
            ifindex: 2,
            interface: "eth2".into(),
            hook: Hook::XdpIngress,
            wire_len: frame.len() as u32,
            vlan: None,
            vlan_inner: None,
            truncated: false,
        };
        writer.write(&meta, frame).unwrap();
    }
}

#[test]
fn analyze_skips_what_is_not_dhcp_and_calls_none_of_it_malformed() {
    let dir = Dir::new("unfiltered");
    let path = dir.0.join("unfiltered.pcapng");
    let dhcp: Vec<Vec<u8>> = recorded().into_iter().map(|e| e.frame).collect();
    let others = other_frames();
    // Each other frame three times, between the DHCP frames.
    let mut frames = Vec::new();
    for (i, frame) in dhcp.iter().enumerate() {
        frames.push(frame.clone());
        frames.push(others[i % others.len()].1.clone());
    }
    for (_, frame) in &others {
        frames.push(frame.clone());
    }
    write_capture(&path, &frames);
    let report = analyze_json(&["--pcap", path.to_str().unwrap()]);
    assert_eq!(report.frames, frames.len(), "{report:?}");
    assert_eq!(
        report.malformed, 0,
        "nothing here is malformed DHCP: {report:?}"
    );
    assert_eq!(report.packets, dhcp.len(), "every DHCP frame counted");
    let skipped: Vec<(&str, usize)> = report
        .skipped
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    // ARP: 3 (i = 0, 4 and the tail); ICMP and TCP: 3 each, not UDP; DNS: 3.
    assert_eq!(
        skipped,
        [("UDP, not a DHCP port", 3), ("not IP", 3), ("not UDP", 6)],
        "{report:?}"
    );
    let text = analyze::text(&report);
    assert!(text.contains("0 malformed"), "{text}");
    assert!(text.contains("not UDP"), "{text}");
}
