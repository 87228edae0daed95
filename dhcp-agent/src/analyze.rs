//! `dhcp-agent analyze --pcap FILE`: the live daemon, offline. The same decoder and the same
//! [`Observer`] (server identity, exchange tracker, release correlation) run over a capture
//! taken anywhere (the agent's pcapng, `tcpdump -i any`, `tcpdump -i eth0`, tshark), and a
//! report says what a person debugging a router wants to know: message counts, the server ids
//! in use, exchange times, NAKs, unanswered DISCOVERs and every RELEASE the server will have
//! ignored, with the reason. Releases are settled at the end of the capture, against the lease
//! file given (as it is now) and the server ids used anywhere in the capture.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::BuildHasher as _,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use dhcp_common::Hook;
use serde::Serialize;

use dhcp_engine::{
    Finding, Observer, ObserverConfig,
    correlate::{Cause, Outcome, Verdict, diagnose},
    correlate6::{Outcome6, Verdict6},
    leases::LeaseFormatName,
    observer::{LeaseFileRead, Now},
    time::rfc3339,
    transactions::{Exchange, TransactionEvent},
};
use dhcp_wire::{Body, FrameMeta, Packet, decode_frame, hex_colon};

use crate::{
    args::{parse_duration, parse_lease_format},
    conf_files,
    filter::{Filter, FilterArgs},
    leases::read_table,
    pcap::{
        Direction,
        reader::{CapturedFrame, stream_file},
    },
    timeline::Timeline,
};

#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// The capture: pcap or pcapng; Ethernet, Linux cooked (tcpdump -i any), raw IP.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// The server's lease file now: releases whose address is still leased are dropped.
    #[arg(long, value_name = "FILE")]
    pub leases: Option<PathBuf>,
    #[arg(long, default_value_t = LeaseFormatName::Dnsmasq, value_parser = parse_lease_format)]
    pub lease_format: LeaseFormatName,
    /// dnsmasq's configuration: the server ids and subnets, when the capture has no replies.
    #[arg(long, value_name = "FILE")]
    pub dnsmasq_conf: Option<PathBuf>,
    /// The report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only frames on these interfaces (as the capture names them).
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// One client's exchanges as a timeline.
    #[arg(long, value_name = "MAC", value_parser = dhcp_wire::parse_mac)]
    pub follow: Option<[u8; 6]>,
    /// Every client's timeline.
    #[arg(long)]
    pub timeline: bool,
    /// A DISCOVER with no OFFER after this long counts as unanswered. dnsmasq pings each
    /// address before offering it, deaf meanwhile, about 3 s each, up to 6 times in 30 s: a
    /// burst of new clients gets its OFFERs up to about 24 s late.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub discover_timeout: Duration,
    /// How long the server had to drop a released lease (as `run --grace`): the lease file of
    /// a lease ACKed within it before the RELEASE may never have listed it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct Durations {
    pub count: usize,
    pub min_seconds: Option<f64>,
    pub median_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

impl Durations {
    fn of(mut seconds: Vec<f64>) -> Durations {
        seconds.sort_by(f64::total_cmp);
        Durations {
            count: seconds.len(),
            min_seconds: seconds.first().copied(),
            median_seconds: seconds.get(seconds.len() / 2).copied(),
            max_seconds: seconds.last().copied(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClientEvent {
    pub time: String,
    pub interface: String,
    pub mac: String,
    pub xid: String,
}

#[derive(Debug, Serialize)]
pub struct ServerIdRow {
    pub subnet: String,
    pub server_id: String,
    pub interface: Option<String>,
    pub source: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ReleaseRow {
    pub time: String,
    pub interface: String,
    pub ip: String,
    pub mac: String,
    pub xid: String,
    /// `router` (captured on `lo`), `guest`, or `forged` (from another Ethernet address than
    /// the client's, no relay).
    pub origin: &'static str,
    pub received_server_id: Option<String>,
    pub expected_server_id: Option<String>,
    /// With a lease file, the daemon's outcome: `dropped` (the server ignored it: the file
    /// still lists the lease for that client), `honored` (the capture shows the lease granted
    /// and the file no longer lists it) or `no_lease` (the file does not list it). Without one:
    /// `dropped` when the packet fails the server's own checks, else `unknown`.
    pub outcome: &'static str,
    pub cause: Option<&'static str>,
    /// What the outcome rests on: `wire` (the packet fails the server's own checks) or
    /// `lease_file`.
    pub evidence: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub file: String,
    pub format: &'static str,
    pub frames: usize,
    /// Frames not counted as DHCP, by reason: not read (link type, short header, unknown
    /// pcapng block) or not DHCP at all (ARP, ICMP, TCP, other UDP).
    pub skipped: BTreeMap<String, usize>,
    pub cut_short: Option<String>,
    /// The same frame seen twice on one interface within 10 ms (loopback in `tcpdump -i any`).
    pub duplicates: usize,
    pub first: Option<String>,
    pub last: Option<String>,
    pub packets: usize,
    pub malformed: usize,
    pub messages: BTreeMap<String, usize>,
    pub server_ids: Vec<ServerIdRow>,
    pub discover_to_ack: Durations,
    pub request_to_ack: Durations,
    pub naks: Vec<ClientEvent>,
    pub unanswered_discovers: Vec<ClientEvent>,
    pub releases: Vec<ReleaseRow>,
    pub timeline: Vec<String>,
}

/// How far apart two sightings of the same frame on one interface may be to count as one.
const DUPLICATE_NS: i128 = 10_000_000;

fn meta_of(frame: &CapturedFrame, index: usize) -> FrameMeta {
    FrameMeta {
        unix_ns: frame.unix_ns,
        ifindex: index as u32,
        interface: frame.interface.clone(),
        hook: match frame.direction {
            Some(Direction::Out) => Hook::TcEgress,
            _ => Hook::XdpIngress,
        },
        wire_len: frame.wire_len,
        vlan: None,
        vlan_inner: None,
        truncated: (frame.frame.len() as u32) < frame.wire_len,
    }
}

/// Drops the second sighting of a frame on the same interface within [`DUPLICATE_NS`]
/// (`tcpdump -i any` sees a frame on `lo` leave and arrive). Sightings are compared by a 64-bit
/// hash of interface and bytes from the IP header on, so the cost per frame does not grow with
/// the traffic in the window; two different frames would have to collide in 64 bits within
/// 10 ms on one interface to be mistaken for each other.
#[derive(Default)]
struct Duplicates {
    /// Sightings in the window, oldest first: (time, hash).
    window: VecDeque<(i128, u64)>,
    /// How many sightings in the window have each hash.
    counts: HashMap<u64, u32>,
    /// Seeded per process; much faster than SipHash over a few hundred bytes per frame.
    hasher: foldhash::quality::RandomState,
}

impl Duplicates {
    fn is_repeat(&mut self, frame: &CapturedFrame) -> bool {
        while let Some(&(at, hash)) = self.window.front() {
            if frame.unix_ns - at <= DUPLICATE_NS {
                break;
            }
            self.window.pop_front();
            if let Some(count) = self.counts.get_mut(&hash) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&hash);
                }
            }
        }
        // From the IP header on: a cooked capture gives each sighting its own link header.
        let ip = frame.frame.get(14..).unwrap_or(&[]);
        let hash = self.hasher.hash_one((&frame.interface, ip));
        if self.counts.contains_key(&hash) {
            return true;
        }
        self.window.push_back((frame.unix_ns, hash));
        self.counts.insert(hash, 1);
        false
    }
}

/// Turns captured frames into packets: duplicates dropped, interfaces numbered in order of
/// appearance, server replies of a capture without directions taken as leaving the server.
#[derive(Default)]
struct Decoder {
    duplicates: Duplicates,
    interfaces: HashMap<String, usize>,
}

impl Decoder {
    fn decode(&mut self, frame: &CapturedFrame, report: &mut Report) -> Option<Packet> {
        if self.duplicates.is_repeat(frame) {
            report.duplicates += 1;
            return None;
        }
        let next = self.interfaces.len() + 1;
        let index = match self.interfaces.get(&frame.interface) {
            Some(index) => *index,
            None => *self
                .interfaces
                .entry(frame.interface.clone())
                .or_insert(next),
        };
        let mut packet = decode_frame(&frame.frame, meta_of(frame, index));
        // Without a recorded direction, a reply from the server's port left the server.
        if frame.direction.is_none() && packet.dhcpv4().is_some_and(|m| m.op == 2) {
            packet.meta.hook = Hook::TcEgress;
        }
        Some(packet)
    }
}

fn client_event(interface: &str, client: &[u8], xid: u32, at_ns: i128) -> ClientEvent {
    ClientEvent {
        time: rfc3339(at_ns),
        interface: interface.to_owned(),
        mac: hex_colon(client),
        xid: format!("0x{xid:08x}"),
    }
}

/// The row of one settled RELEASE. With a lease file the observer's verdict stands (what the
/// daemon would have said with that table); without one only the wire can speak.
/// A DHCPv6 release's row: `mac` is the client's DUID, the server ids are DUIDs; the evidence
/// is the server's `reply`, or with no reply by the end of the grace the `lease_file` (or, with
/// none, its silence: `no_reply`).
fn release6_row(verdict: &Verdict6, with_file: bool) -> ReleaseRow {
    let r = &verdict.release;
    let cause = match &verdict.outcome {
        Outcome6::Dropped(cause) => Some(cause.name()),
        _ => None,
    };
    let evidence = match (verdict.by_reply, with_file) {
        (true, _) => "reply",
        (false, true) => "lease_file",
        (false, false) => "no_reply",
    };
    ReleaseRow {
        time: rfc3339(r.seen_ns),
        interface: r.interface.clone(),
        ip: r.address.to_string(),
        mac: hex_colon(&r.client_duid),
        xid: format!("0x{:06x}", r.xid),
        origin: r.origin.name(),
        received_server_id: r.server_duid.as_deref().map(hex_colon),
        expected_server_id: verdict.expected_server_duid.as_deref().map(hex_colon),
        outcome: verdict.outcome.name(),
        cause,
        evidence: Some(evidence),
    }
}

fn release_row(verdict: &Verdict, observer: &Observer, with_file: bool) -> ReleaseRow {
    let release = &verdict.release;
    let identity = observer.identity();
    let (outcome, cause, evidence) = if with_file {
        let cause = match &verdict.outcome {
            Outcome::Dropped(cause) => Some(cause.name()),
            _ => None,
        };
        (verdict.outcome.name(), cause, Some("lease_file"))
    } else {
        match diagnose(release, None, identity) {
            Cause::ClientMismatch | Cause::Unknown => ("unknown", None, None),
            cause => ("dropped", Some(cause.name()), Some("wire")),
        }
    };
    ReleaseRow {
        time: rfc3339(release.seen_ns),
        interface: release.interface.clone(),
        ip: release.ciaddr.to_string(),
        mac: hex_colon(&release.chaddr),
        xid: format!("0x{:08x}", release.xid),
        origin: release.origin.name(),
        received_server_id: release.server_id.map(|a| a.to_string()),
        expected_server_id: verdict.expected_server_id.map(|a| a.to_string()),
        outcome,
        cause,
        evidence,
    }
}

pub fn analyze(args: &AnalyzeArgs) -> anyhow::Result<Report> {
    let identity = conf_files::server_identity(args.dnsmasq_conf.as_deref(), &[])?;
    let config = ObserverConfig {
        grace: args.grace,
        discover_timeout: args.discover_timeout,
        ..ObserverConfig::default()
    };
    let mut observer = Observer::new(config, identity);
    let mut findings = Vec::new();
    // The capture's own time drives the observer; the monotonic clock only paces what the
    // offline run never does (repairs, an emptied lease file's hold).
    let start = Instant::now();
    let at = |unix_ns: i128| Now {
        unix_ns,
        mono: start,
    };
    if let Some(path) = &args.leases {
        let table = read_table(path, args.lease_format.format().as_ref())?;
        observer.on_lease_file(LeaseFileRead::Table(table), at(0), &mut findings);
    }
    let mut report = Report {
        file: args.pcap.display().to_string(),
        ..Report::default()
    };
    let mut filter = Filter::new(&args.filter);
    filter.interfaces = args.ifaces.clone();
    filter.macs.extend(args.follow);
    let (mut discover_ack, mut request_ack) = (Vec::new(), Vec::new());
    let mut timeline = Timeline::default();
    let mut verdicts = Vec::new();
    let mut verdicts6 = Vec::new();
    // What the observer found in the frames the filter shows.
    let mut record = |findings: &mut Vec<Finding>, report: &mut Report| {
        for finding in findings.drain(..) {
            match finding {
                Finding::Exchange(event) => match event {
                    TransactionEvent::Completed { exchange, seconds } => match exchange {
                        Exchange::DiscoverAck => discover_ack.push(seconds),
                        Exchange::RequestAck => request_ack.push(seconds),
                    },
                    TransactionEvent::Nak {
                        interface,
                        client,
                        xid,
                        at_ns,
                    } => report
                        .naks
                        .push(client_event(&interface, &client, xid, at_ns)),
                    TransactionEvent::Unanswered {
                        interface,
                        client,
                        xid,
                        at_ns,
                    } => report
                        .unanswered_discovers
                        .push(client_event(&interface, &client, xid, at_ns)),
                },
                Finding::Settled(verdict) => verdicts.push(verdict),
                Finding::Settled6(verdict) => verdicts6.push(verdict),
                _ => {}
            }
        }
    };
    // One pass over the file, frame by frame. Releases are judged at the end: a RELEASE early
    // in the file is judged against the server ids the server used anywhere in it.
    let mut decoder = Decoder::default();
    let (mut first_ns, mut last_ns) = (None, 0);
    let mut not_dhcp: BTreeMap<String, usize> = BTreeMap::new();
    let summary = stream_file(&args.pcap, |frame| {
        first_ns.get_or_insert(frame.unix_ns);
        last_ns = frame.unix_ns;
        let Some(packet) = decoder.decode(&frame, &mut report) else {
            return;
        };
        if let Some(reason) = packet.not_dhcp() {
            *not_dhcp.entry(reason.to_owned()).or_default() += 1;
            return;
        }
        let shown = filter.matches(&packet) || packet.is_malformed();
        // The observer follows what is shown, and learns the server ids (and leases granted)
        // from every reply: a RELEASE shown is judged against the server's id even when the
        // filter hides the server's answers.
        let from_server = packet.dhcpv4().is_some_and(|m| m.op == 2)
            || packet.dhcpv6().is_some_and(|m| {
                matches!(
                    m.code,
                    dhcp_wire::dhcpv6::code::REPLY | dhcp_wire::dhcpv6::code::ADVERTISE
                )
            });
        if shown || from_server {
            observer.expire_exchanges(packet.meta.unix_ns, &mut findings);
            observer.on_packet(&packet, &mut findings);
            record(&mut findings, &mut report);
        }
        if !shown {
            return;
        }
        let name = match &packet.body {
            Body::V4(m) => m.type_name().to_owned(),
            Body::V6(m) => format!("v6 {}", m.message_type),
            Body::Malformed { .. } => {
                report.malformed += 1;
                return;
            }
        };
        report.packets += 1;
        *report.messages.entry(name).or_default() += 1;
        if args.timeline || args.follow.is_some() {
            report.timeline.extend(timeline.lines(&packet));
        }
    })?;
    // The end of the capture: every DISCOVER still waiting has waited long enough, every
    // release still pending is settled.
    observer.finish(last_ns, &mut findings);
    record(&mut findings, &mut report);
    report.format = summary.format;
    report.frames = summary.frames;
    report.skipped = summary.skipped.into_iter().collect();
    for (reason, count) in not_dhcp {
        *report.skipped.entry(reason).or_default() += count;
    }
    report.cut_short = summary.cut_short;
    report.first = first_ns.map(rfc3339);
    report.last = (summary.frames > 0).then(|| rfc3339(last_ns));
    verdicts.sort_by_key(|v| v.release.seen_ns);
    report.releases = verdicts
        .iter()
        .map(|verdict| release_row(verdict, &observer, args.leases.is_some()))
        .chain(
            verdicts6
                .iter()
                .map(|verdict| release6_row(verdict, args.leases.is_some())),
        )
        .collect();
    report.releases.sort_by(|a, b| a.time.cmp(&b.time));
    report.discover_to_ack = Durations::of(discover_ack);
    report.request_to_ack = Durations::of(request_ack);
    report.server_ids = observer
        .identity()
        .known()
        .map(|k| ServerIdRow {
            subnet: k.subnet.to_string(),
            server_id: k.server_id.to_string(),
            interface: k.interface.clone(),
            source: k.source.name(),
        })
        .collect();
    report.server_ids.sort_by(|a, b| a.subnet.cmp(&b.subnet));
    Ok(report)
}

fn seconds(value: Option<f64>) -> String {
    match value {
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1000.0),
        Some(s) => format!("{s:.3}s"),
        None => "-".into(),
    }
}

/// The report for a person.
pub fn text(report: &Report) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "capture: {} ({}, {} frames{}{}), {} .. {}",
        report.file,
        report.format,
        report.frames,
        if report.duplicates > 0 {
            format!(", {} duplicate sightings merged", report.duplicates)
        } else {
            String::new()
        },
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {:?}", report.skipped)
        },
        report.first.as_deref().unwrap_or("-"),
        report.last.as_deref().unwrap_or("-"),
    ));
    if let Some(cut) = &report.cut_short {
        out.push(format!("warning: the file is {cut}"));
    }
    let counts: Vec<String> = report
        .messages
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out.push(format!(
        "messages: {} DHCP packets ({}), {} malformed",
        report.packets,
        counts.join(", "),
        report.malformed
    ));
    if report.server_ids.is_empty() {
        out.push("server ids: none seen (no OFFER/ACK in the capture; try --dnsmasq-conf)".into());
    }
    for row in &report.server_ids {
        out.push(format!(
            "server id: {} uses {} ({}{})",
            row.subnet,
            row.server_id,
            row.source,
            row.interface
                .as_deref()
                .map(|i| format!(" on {i}"))
                .unwrap_or_default()
        ));
    }
    for (name, d) in [
        ("DISCOVER..ACK", &report.discover_to_ack),
        ("REQUEST..ACK", &report.request_to_ack),
    ] {
        out.push(format!(
            "{name}: {} exchanges, min {}, median {}, max {}",
            d.count,
            seconds(d.min_seconds),
            seconds(d.median_seconds),
            seconds(d.max_seconds)
        ));
    }
    for (name, list) in [
        ("NAK", &report.naks),
        ("unanswered DISCOVER", &report.unanswered_discovers),
    ] {
        out.push(format!("{name}s: {}", list.len()));
        for e in list {
            out.push(format!("  {} {} {} {}", e.time, e.interface, e.mac, e.xid));
        }
    }
    let dropped = report
        .releases
        .iter()
        .filter(|r| r.outcome == "dropped")
        .count();
    out.push(format!(
        "releases: {} ({dropped} dropped by the server)",
        report.releases.len()
    ));
    for r in &report.releases {
        let mut line = format!(
            "  {} {} {} {} sid={}: {}",
            r.time,
            r.interface,
            r.ip,
            r.mac,
            r.received_server_id.as_deref().unwrap_or("-"),
            r.outcome.to_uppercase()
        );
        if let Some(cause) = r.cause {
            line.push_str(&format!(" ({cause}"));
            if let Some(expected) = &r.expected_server_id {
                line.push_str(&format!(", the server uses {expected}"));
            }
            line.push(')');
        }
        if let Some(evidence) = r.evidence {
            line.push_str(&format!(" [{evidence}]"));
        }
        if r.origin == "forged" {
            line.push_str(" FORGED");
        }
        out.push(line);
    }
    if !report.timeline.is_empty() {
        out.push("timeline:".into());
        out.extend(report.timeline.iter().cloned());
    }
    out.join("\n")
}

pub fn run(args: &AnalyzeArgs) -> anyhow::Result<()> {
    let report = analyze(args)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "{}", text(&report))?;
    }
    Ok(())
}
