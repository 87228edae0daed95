//! Reading captures taken anywhere: pcap (micro- or nanosecond) and pcapng, with Ethernet, Linux
//! cooked SLL (`tcpdump -i any`) and SLL2, raw IP and BSD loopback link layers. Every frame is
//! turned into an Ethernet frame for the decoder, with its time, interface and, where the
//! capture records it, its direction.
//!
//! A file cut short (a capture still running, a copy interrupted) yields the frames before the
//! cut and says where it was cut; a file that is no capture at all is an error.
use std::{collections::HashMap, io::Read, path::Path};

use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{
        Block, PcapNgReader,
        blocks::{
            enhanced_packet::EnhancedPacketOption,
            interface_description::InterfaceDescriptionOption,
        },
    },
};

use super::{Direction, PcapFileError};

/// One frame of a capture file, as Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    pub unix_ns: i128,
    /// The interface's name where the capture names it (pcapng, SLL2's index as `ifN`), else
    /// the file's link type.
    pub interface: String,
    pub direction: Option<Direction>,
    pub wire_len: u32,
    pub frame: Vec<u8>,
}

/// A whole capture file, read into memory (tests and small files; `analyze` streams).
#[derive(Debug, Default)]
pub struct Capture {
    pub format: &'static str,
    pub frames: Vec<CapturedFrame>,
    /// Frames not read, by reason: a link type the decoder has no use for, or a frame too short
    /// for its link header.
    pub skipped: HashMap<String, usize>,
    /// Set when the file ends in the middle of a frame or block.
    pub cut_short: Option<String>,
}

/// What reading a capture found besides its frames.
#[derive(Debug, Default)]
pub struct Summary {
    pub format: &'static str,
    /// Frames handed on.
    pub frames: usize,
    /// Frames not read, by reason (see [`Capture::skipped`]).
    pub skipped: HashMap<String, usize>,
    /// Set when the file ends in the middle of a frame or block.
    pub cut_short: Option<String>,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

pub fn read_file(path: &Path) -> Result<Capture, PcapFileError> {
    let file = open(path)?;
    collect(file, &path.display().to_string())
}

/// Reads a capture from memory; `name` is used in errors.
pub fn read_bytes(bytes: &[u8], name: &str) -> Result<Capture, PcapFileError> {
    collect(bytes, name)
}

/// Streams the frames of the capture at `path` to `visit`, one at a time, in file order:
/// memory stays flat whatever the size of the file.
pub fn stream_file(
    path: &Path,
    visit: impl FnMut(CapturedFrame),
) -> Result<Summary, PcapFileError> {
    let file = open(path)?;
    stream(file, &path.display().to_string(), visit)
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, PcapFileError> {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|source| PcapFileError::Io {
            path: path.display().to_string(),
            source,
        })
}

fn collect(input: impl Read, name: &str) -> Result<Capture, PcapFileError> {
    let mut frames = Vec::new();
    let summary = stream(input, name, |frame| frames.push(frame))?;
    Ok(Capture {
        format: summary.format,
        frames,
        skipped: summary.skipped,
        cut_short: summary.cut_short,
    })
}

/// Streams the frames of a capture (pcap or pcapng, told apart by the first bytes) to `visit`;
/// `name` is used in errors.
pub fn stream(
    mut input: impl Read,
    name: &str,
    mut visit: impl FnMut(CapturedFrame),
) -> Result<Summary, PcapFileError> {
    let not_capture = |reason: String| PcapFileError::NotACapture {
        path: name.to_owned(),
        reason,
    };
    let mut magic = Vec::with_capacity(4);
    (&mut input)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|source| PcapFileError::Io {
            path: name.to_owned(),
            source,
        })?;
    if magic.len() < 4 {
        return Err(not_capture(format!("only {} bytes", magic.len())));
    }
    let pcapng = magic[..] == PCAPNG_MAGIC;
    let input = std::io::Cursor::new(magic).chain(input);
    if pcapng {
        let reader = PcapNgReader::new(input).map_err(|e| not_capture(e.to_string()))?;
        read_pcapng(reader, name, &mut visit)
    } else {
        let reader = PcapReader::new(input).map_err(|e| not_capture(e.to_string()))?;
        Ok(read_pcap(reader, &mut visit))
    }
}

fn read_pcap(mut reader: PcapReader<impl Read>, visit: &mut dyn FnMut(CapturedFrame)) -> Summary {
    let link = reader.header().datalink;
    let link_label = link_name(link);
    let mut summary = Summary {
        format: "pcap",
        ..Summary::default()
    };
    while let Some(packet) = reader.next_packet() {
        let packet = match packet {
            Ok(packet) => packet,
            Err(err) => {
                summary.cut_short = Some(cut(&summary, &err));
                break;
            }
        };
        let unix_ns = i128::try_from(packet.timestamp.as_nanos()).unwrap_or(i128::MAX);
        let frame = convert(
            &mut summary,
            link,
            None,
            &link_label,
            unix_ns,
            packet.orig_len,
            &packet.data,
        );
        if let Some(frame) = frame {
            visit(frame);
        }
    }
    summary
}

fn read_pcapng(
    mut reader: PcapNgReader<impl Read>,
    name: &str,
    visit: &mut dyn FnMut(CapturedFrame),
) -> Result<Summary, PcapFileError> {
    let mut summary = Summary {
        format: "pcapng",
        ..Summary::default()
    };
    // Per interface of the current section: link type, name, timestamp units per second, the
    // link type's name.
    let mut interfaces: Vec<(DataLink, Option<String>, u64, String)> = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = match block {
            Ok(block) => block,
            Err(err) => {
                summary.cut_short = Some(cut(&summary, &err));
                break;
            }
        };
        let frame = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                None
            }
            Block::InterfaceDescription(idb) => {
                let mut if_name = None;
                let mut per_second = 1_000_000; // pcapng's default: microseconds
                for option in &idb.options {
                    match option {
                        InterfaceDescriptionOption::IfName(n) => if_name = Some(n.to_string()),
                        InterfaceDescriptionOption::IfTsResol(r) => {
                            per_second = ts_units(*r).unwrap_or(per_second);
                        }
                        _ => {}
                    }
                }
                interfaces.push((idb.linktype, if_name, per_second, link_name(idb.linktype)));
                None
            }
            Block::EnhancedPacket(epb) => {
                let Some((link, if_name, per_second, label)) =
                    interfaces.get(epb.interface_id as usize)
                else {
                    return Err(PcapFileError::Corrupt {
                        path: name.to_owned(),
                        frame: summary.frames + 1,
                        reason: format!("no interface {}", epb.interface_id),
                    });
                };
                // pcap-file hands the raw count as nanoseconds; scale by the interface's units.
                let raw = epb.timestamp.as_nanos();
                let unix_ns = i128::try_from(raw * 1_000_000_000 / u128::from(*per_second))
                    .unwrap_or(i128::MAX);
                let direction = epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Flags(flags) => match flags & 3 {
                        1 => Some(Direction::In),
                        2 => Some(Direction::Out),
                        _ => None,
                    },
                    _ => None,
                });
                convert(
                    &mut summary,
                    *link,
                    if_name.as_deref(),
                    label,
                    unix_ns,
                    epb.original_len,
                    &epb.data,
                )
                .map(|mut frame| {
                    frame.direction = frame.direction.or(direction);
                    frame
                })
            }
            Block::SimplePacket(spb) => match interfaces.first() {
                Some((link, if_name, _, label)) => convert(
                    &mut summary,
                    *link,
                    if_name.as_deref(),
                    label,
                    0,
                    spb.original_len,
                    &spb.data,
                ),
                None => None,
            },
            _ => None,
        };
        if let Some(frame) = frame {
            visit(frame);
        }
    }
    Ok(summary)
}

/// Units per second of a pcapng `if_tsresol` (power of 10, or of 2 with the top bit set).
fn ts_units(resolution: u8) -> Option<u64> {
    let exponent = u32::from(resolution & 0x7f);
    if resolution & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else {
        2u64.checked_pow(exponent)
    }
}

fn cut(summary: &Summary, err: &pcap_file::PcapError) -> String {
    format!("cut short after {} frames: {err}", summary.frames)
}

/// The frame as Ethernet, counted in `summary`; `None` (counted as skipped) when it cannot be.
fn convert(
    summary: &mut Summary,
    link: DataLink,
    if_name: Option<&str>,
    link_label: &str,
    unix_ns: i128,
    wire_len: u32,
    data: &[u8],
) -> Option<CapturedFrame> {
    match to_ethernet(link, data) {
        Ok(Some(converted)) => {
            let interface = if_name
                .map(str::to_owned)
                .or_else(|| converted.ifindex.map(|i| format!("if{i}")))
                .unwrap_or_else(|| link_label.to_owned());
            summary.frames += 1;
            Some(CapturedFrame {
                unix_ns,
                interface,
                direction: converted.direction,
                wire_len,
                frame: converted.frame,
            })
        }
        Ok(None) => {
            *summary.skipped.entry(link_label.to_owned()).or_default() += 1;
            None
        }
        // One bad frame does not spoil the file: it is counted, the rest is read.
        Err(reason) => {
            *summary.skipped.entry(reason).or_default() += 1;
            None
        }
    }
}

fn link_name(link: DataLink) -> String {
    format!("{link:?}").to_lowercase()
}

struct Converted {
    frame: Vec<u8>,
    direction: Option<Direction>,
    ifindex: Option<u32>,
}

/// An Ethernet frame carrying `payload` of `ethertype` from `src`.
fn ethernet(src: [u8; 6], ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype);
    frame.extend_from_slice(payload);
    frame
}

/// Linux `PACKET_OUTGOING`; every other packet type was received.
const PACKET_OUTGOING: u16 = 4;

fn sll_direction(packet_type: u16) -> Option<Direction> {
    Some(if packet_type == PACKET_OUTGOING {
        Direction::Out
    } else {
        Direction::In
    })
}

fn address(halen: usize, addr: &[u8]) -> [u8; 6] {
    let mut mac = [0; 6];
    if halen == 6 {
        mac.copy_from_slice(&addr[..6]);
    }
    mac
}

/// The frame as Ethernet; `None` for a link type the decoder has no use for.
fn to_ethernet(link: DataLink, data: &[u8]) -> Result<Option<Converted>, String> {
    let short = |what: &str, need: usize| {
        format!(
            "{what} header needs {need} bytes, the frame has {}",
            data.len()
        )
    };
    let plain = |frame| Converted {
        frame,
        direction: None,
        ifindex: None,
    };
    Ok(Some(match link {
        DataLink::ETHERNET => plain(data.to_vec()),
        // pkttype(2) hatype(2) halen(2) addr(8) protocol(2)
        DataLink::LINUX_SLL => {
            let h = data.get(..16).ok_or_else(|| short("SLL", 16))?;
            let halen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            Converted {
                frame: ethernet(address(halen, &h[6..14]), [h[14], h[15]], &data[16..]),
                direction: sll_direction(u16::from_be_bytes([h[0], h[1]])),
                ifindex: None,
            }
        }
        // protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
        DataLink::LINUX_SLL2 => {
            let h = data.get(..20).ok_or_else(|| short("SLL2", 20))?;
            Converted {
                frame: ethernet(
                    address(usize::from(h[11]), &h[12..20]),
                    [h[0], h[1]],
                    &data[20..],
                ),
                direction: sll_direction(u16::from(h[10])),
                ifindex: Some(u32::from_be_bytes([h[4], h[5], h[6], h[7]])),
            }
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let ethertype = match data.first().map(|b| b >> 4) {
                Some(4) => [0x08, 0x00],
                Some(6) => [0x86, 0xdd],
                _ => return Err("raw IP frame is neither IPv4 nor IPv6".into()),
            };
            plain(ethernet([0; 6], ethertype, data))
        }
        // A 4-byte address family in host order: 2 is IPv4, 24/28/30 IPv6 (BSDs, macOS).
        DataLink::NULL | DataLink::LOOP => {
            let h = data.get(..4).ok_or_else(|| short("loopback", 4))?;
            let family = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let family = if family > 0xffff {
                family.swap_bytes()
            } else {
                family
            };
            let ethertype = match family {
                2 => [0x08, 0x00],
                24 | 28 | 30 => [0x86, 0xdd],
                _ => return Ok(None),
            };
            plain(ethernet([0; 6], ethertype, &data[4..]))
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use dhcp_common::Hook;
    use dhcp_lab::frames::{Dhcpv4Spec, Framing, ipv4_udp};
    use dhcproto::v4::MessageType;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter as LegacyWriter};

    use super::*;
    use crate::{
        decode::{Body, FrameMeta, decode_frame, test_support::lo_meta},
        pcap::writer::{PcapWriter, Rotation},
    };

    fn release_frame() -> Vec<u8> {
        let mut spec = Dhcpv4Spec::new(MessageType::Release, 0xabcd, [0x52, 0x54, 0, 1, 2, 3]);
        spec.ciaddr = Ipv4Addr::new(172, 29, 101, 150);
        spec.server_id = Some(Ipv4Addr::new(172, 29, 101, 245));
        ipv4_udp(
            &Framing::default(),
            spec.ciaddr,
            Ipv4Addr::new(172, 29, 101, 245),
            (68, 67),
            &spec.encode(),
        )
        .unwrap()
    }

    fn is_release(frame: &CapturedFrame) -> bool {
        let packet = decode_frame(&frame.frame, lo_meta());
        matches!(&packet.body, Body::V4(m) if m.xid == 0xabcd && m.server_id == Some(Ipv4Addr::new(172, 29, 101, 245)))
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("dhcp-agent-pcap-{}-{name}", std::process::id()))
    }

    fn legacy(link: DataLink, frames: &[Vec<u8>], nanos: bool) -> Vec<u8> {
        let header = PcapHeader {
            datalink: link,
            ts_resolution: if nanos {
                pcap_file::TsResolution::NanoSecond
            } else {
                pcap_file::TsResolution::MicroSecond
            },
            ..PcapHeader::default()
        };
        let mut writer = LegacyWriter::with_header(Vec::new(), header).unwrap();
        for (n, frame) in frames.iter().enumerate() {
            let at = Duration::new(1_700_000_000 + n as u64, 123_456_000);
            writer
                .write_packet(&PcapPacket::new(at, frame.len() as u32, frame))
                .unwrap();
        }
        writer.into_writer()
    }

    #[test]
    fn what_the_agent_writes_reads_back_with_interface_time_and_direction() {
        let path = temp("round.pcapng");
        let mut writer = PcapWriter::create(&path, None).unwrap();
        let frame = release_frame();
        let metas = [
            FrameMeta {
                unix_ns: 1_700_000_000_123_456_789,
                ..lo_meta()
            },
            FrameMeta {
                unix_ns: 1_700_000_001_000_000_001,
                interface: "guest0".into(),
                hook: Hook::TcEgress,
                wire_len: 4000, // longer than captured
                ..lo_meta()
            },
        ];
        for meta in &metas {
            writer.write(meta, &frame).unwrap();
        }
        writer.flush().unwrap();
        let capture = read_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(capture.format, "pcapng");
        assert!(capture.cut_short.is_none() && capture.skipped.is_empty());
        let got: Vec<(i128, &str, Option<Direction>, u32)> = capture
            .frames
            .iter()
            .map(|f| (f.unix_ns, f.interface.as_str(), f.direction, f.wire_len))
            .collect();
        assert_eq!(
            got,
            [
                (
                    1_700_000_000_123_456_789,
                    "lo",
                    Some(Direction::In),
                    frame.len() as u32
                ),
                (
                    1_700_000_001_000_000_001,
                    "guest0",
                    Some(Direction::Out),
                    4000
                ),
            ]
        );
        assert!(capture.frames.iter().all(is_release));
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let path = temp("rotate.pcapng");
        let rotation = Rotation {
            max_bytes: 2_000,
            files: 3,
        };
        let mut writer = PcapWriter::create(&path, Some(rotation)).unwrap();
        let frame = release_frame();
        for n in 0..40 {
            let meta = FrameMeta {
                unix_ns: 1_700_000_000_000_000_000 + n,
                ..lo_meta()
            };
            writer.write(&meta, &frame).unwrap();
        }
        writer.flush().unwrap();
        let numbered = |n| std::path::PathBuf::from(format!("{}.{n}", path.display()));
        let mut total = 0;
        for file in [path.clone(), numbered(1), numbered(2)] {
            let capture = read_file(&file).unwrap();
            assert!(
                !capture.frames.is_empty() && capture.cut_short.is_none(),
                "{file:?}"
            );
            total += capture.frames.len();
            std::fs::remove_file(&file).unwrap();
        }
        assert!(!numbered(3).exists(), "three files at most");
        assert!(total < 40, "the oldest were rotated away");
    }

    #[test]
    fn reads_pcap_in_micro_and_nanoseconds() {
        for nanos in [false, true] {
            let bytes = legacy(DataLink::ETHERNET, &[release_frame()], nanos);
            let capture = read_bytes(&bytes, "test.pcap").unwrap();
            assert_eq!(capture.format, "pcap");
            assert_eq!(capture.frames[0].unix_ns, 1_700_000_000_123_456_000);
            assert_eq!(capture.frames[0].interface, "ethernet");
            assert!(is_release(&capture.frames[0]));
        }
    }

    #[test]
    fn reads_linux_cooked_captures_with_direction() {
        let ip_packet = release_frame()[14..].to_vec();
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        // SLL: outgoing (4) from the MAC.
        let mut sll = vec![0, 4, 0, 1, 0, 6];
        sll.extend_from_slice(&mac);
        sll.extend_from_slice(&[0, 0, 0x08, 0x00]);
        sll.extend_from_slice(&ip_packet);
        // SLL2: ifindex 7, incoming to us (0).
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 7, 0, 1, 0, 6];
        sll2.extend_from_slice(&mac);
        sll2.extend_from_slice(&[0, 0]);
        sll2.extend_from_slice(&ip_packet);
        for (link, frame, direction, interface) in [
            (DataLink::LINUX_SLL, sll, Direction::Out, "linux_sll"),
            (DataLink::LINUX_SLL2, sll2, Direction::In, "if7"),
        ] {
            let capture = read_bytes(&legacy(link, &[frame], false), "any.pcap").unwrap();
            let got = &capture.frames[0];
            assert_eq!(got.direction, Some(direction), "{link:?}");
            assert_eq!(got.interface, interface);
            assert_eq!(&got.frame[6..12], &mac, "{link:?}: source address kept");
            assert!(is_release(got), "{link:?}");
        }
    }

    #[test]
    fn reads_raw_ip_and_bsd_loopback() {
        let ip_packet = release_frame()[14..].to_vec();
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip_packet);
        for (link, frame) in [(DataLink::RAW, ip_packet.clone()), (DataLink::NULL, null)] {
            let capture = read_bytes(&legacy(link, &[frame], false), "x.pcap").unwrap();
            assert!(is_release(&capture.frames[0]), "{link:?}");
        }
    }

    #[test]
    fn unsupported_links_and_short_frames_are_counted_not_fatal() {
        let frames = [release_frame()[..10].to_vec()];
        let capture = read_bytes(&legacy(DataLink::LINUX_SLL, &frames, false), "x").unwrap();
        assert!(capture.frames.is_empty());
        assert_eq!(
            capture.skipped.values().sum::<usize>(),
            1,
            "{:?}",
            capture.skipped
        );
        let capture = read_bytes(&legacy(DataLink::IEEE802_11, &frames, false), "x").unwrap();
        assert_eq!(
            capture.skipped.get("ieee802_11"),
            Some(&1),
            "{:?}",
            capture.skipped
        );
    }

    #[test]
    fn a_file_cut_anywhere_gives_the_frames_before_the_cut_or_a_clear_error() {
        let path = temp("cut.pcapng");
        let mut writer = PcapWriter::create(&path, None).unwrap();
        for n in 0..3 {
            let meta = FrameMeta {
                unix_ns: n,
                ..lo_meta()
            };
            writer.write(&meta, &release_frame()).unwrap();
        }
        writer.flush().unwrap();
        let whole = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let pcap = legacy(
            DataLink::ETHERNET,
            &[release_frame(), release_frame()],
            false,
        );
        for file in [whole, pcap] {
            for len in 0..file.len() {
                match read_bytes(&file[..len], "cut") {
                    Ok(capture) => {
                        assert!(capture.frames.len() < 3 || len == file.len());
                        assert!(capture.frames.iter().all(is_release));
                    }
                    Err(err) => assert!(
                        matches!(err, PcapFileError::NotACapture { .. }),
                        "{len}: {err}"
                    ),
                }
            }
        }
    }

    #[test]
    fn a_file_that_is_no_capture_is_refused_with_the_reason() {
        let err = read_bytes(b"hello, this is text\n", "notes.txt").unwrap_err();
        assert!(
            err.to_string()
                .contains("notes.txt: not a pcap or pcapng file"),
            "{err}"
        );
    }
}
