//! Reading captures taken anywhere: pcap (micro- or nanosecond) and pcapng, with Ethernet, Linux
//! cooked SLL (`tcpdump -i any`) and SLL2, raw IP and BSD loopback link layers. Every frame is
//! turned into an Ethernet frame for the decoder, with its time, interface and, where the
//! capture records it, its direction.
//!
//! A file cut short (a capture still running, a copy interrupted) yields the frames before the
//! cut and says where it was cut; a file that is no capture at all is an error.
//!
//! Like tshark, the reader reads on past what it does not know: a pcapng block of a type it does
//! not know, or an option it does not know, is counted in [`Summary::skipped`] and the frames
//! around it are read; a frame longer than the file's (or interface's) snap length is taken as
//! recorded. Unlike tshark, it does not give up on a damaged pcapng block whose lengths agree
//! (they say where the next block starts): an option of the wrong length, or options running
//! past their block, are counted and the packet is read; a packet block too short for its
//! data, or with a frame longer than tshark's 262144 bytes, is counted and the next block read.
//! What it cannot step over (a pcap record longer than any capture holds, pcapng block lengths
//! that disagree) ends the reading there, as in tshark, with the frames before it and the
//! reason in `cut_short`.
//!
//! pcap-file parses the pcap file header; the records and the pcapng blocks are framed and
//! parsed here, leniently: pcap-file stops at a pcap record longer than the snap length (or
//! merely truncated by it, as `tcpdump -s` writes), at an option list without its (optional)
//! end marker, at an option of the wrong length or a name that is not UTF-8.
use std::{
    collections::HashMap,
    io::{ErrorKind, Read},
    path::Path,
};

use pcap_file::{DataLink, Endianness, TsResolution, pcap::PcapHeader};

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
    /// What was not read, by reason: frames on a link type the decoder has no use for, or too
    /// short for their link header, or in a pcapng block that cannot be read; pcapng blocks and
    /// options the reader does not know.
    pub skipped: HashMap<String, usize>,
    /// Set when the file ends in the middle of a frame or block, or is damaged past reading from
    /// some point (`corrupt after N frames: ...`).
    pub cut_short: Option<String>,
}

/// What reading a capture found besides its frames.
#[derive(Debug, Default)]
pub struct Summary {
    pub format: &'static str,
    /// Frames handed on.
    pub frames: usize,
    /// What was not read, by reason (see [`Capture::skipped`]).
    pub skipped: HashMap<String, usize>,
    /// Set when the file ends in the middle of a frame or block, or is damaged past reading from
    /// some point (see [`Capture::cut_short`]).
    pub cut_short: Option<String>,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

// pcapng block types.
const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const INTERFACE_DESCRIPTION: u32 = 1;
/// The obsolete Packet Block (tshark still reads it).
const PACKET: u32 = 2;
const SIMPLE_PACKET: u32 = 3;
const NAME_RESOLUTION: u32 = 4;
const INTERFACE_STATISTICS: u32 = 5;
const ENHANCED_PACKET: u32 = 6;
const SYSTEMD_JOURNAL_EXPORT: u32 = 9;
const DECRYPTION_SECRETS: u32 = 0x0a;
/// Custom blocks, copyable or not: a vendor's data, shown by tshark as records of their own.
const CUSTOM: [u32; 2] = [0x0000_0bad, 0x4000_0bad];

/// The longest frame tshark reads (wiretap's limit for the link types read here): a pcap
/// record claiming more is damage, tshark stops there.
const MAX_FRAME: u32 = 262_144;
/// The longest pcapng block held in memory; a longer one is passed over and counted.
const MAX_BODY: usize = 16 << 20;

// Reasons counted in `skipped`, besides the link-layer ones.
const UNKNOWN_BLOCK: &str = "pcapng block of unknown type";
const CUSTOM_BLOCK: &str = "pcapng custom block";
const UNKNOWN_OPTION: &str = "pcapng option of unknown code";
const BAD_OPTION: &str = "pcapng option of the wrong length";
const BROKEN_OPTIONS: &str = "pcapng options running past their block";
const SHORT_BLOCK: &str = "pcapng block too short for its contents";
const HUGE_BLOCK: &str = "pcapng block longer than 16 MiB";
const OVERLONG: &str = "record longer than 262144 bytes";
const NO_INTERFACE: &str = "pcapng packet on an interface that could not be read";

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
    let mut magic = Vec::with_capacity(4);
    (&mut input)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|source| PcapFileError::Io {
            path: name.to_owned(),
            source,
        })?;
    if magic.len() < 4 {
        return Err(not_capture(name, format!("only {} bytes", magic.len())));
    }
    let pcapng = magic[..] == PCAPNG_MAGIC;
    let input = std::io::Cursor::new(magic).chain(input);
    if pcapng {
        read_pcapng(input, name, &mut visit)
    } else {
        read_pcap(input, name, &mut visit)
    }
}

fn not_capture(name: &str, reason: String) -> PcapFileError {
    PcapFileError::NotACapture {
        path: name.to_owned(),
        reason,
    }
}

/// Why reading stopped before the end of the file.
enum Stop {
    /// The file ends inside a record or block.
    Cut(&'static str),
    /// Reading failed.
    Io(std::io::Error),
    /// The framing is damaged: where the next record starts is not known.
    Corrupt(String),
}

impl Stop {
    fn reason(&self) -> String {
        match self {
            Stop::Cut(what) => (*what).to_owned(),
            Stop::Io(err) => err.to_string(),
            Stop::Corrupt(what) => what.clone(),
        }
    }

    /// For `cut_short`, after `frames` frames.
    fn describe(&self, frames: usize) -> String {
        let what = self.reason();
        match self {
            Stop::Cut(_) | Stop::Io(_) => format!("cut short after {frames} frames: {what}"),
            Stop::Corrupt(_) => format!("corrupt after {frames} frames: {what}"),
        }
    }
}

/// Fills as much of `buf` as the input holds: the count read, short only at its end.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, Stop> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(Stop::Io(err)),
        }
    }
    Ok(got)
}

/// Reads the next `len` bytes of the input into `buf` (cleared first); `Cut(cut)` when the
/// input ends before.
fn read_into(
    input: &mut impl Read,
    len: usize,
    buf: &mut Vec<u8>,
    cut: &'static str,
) -> Result<(), Stop> {
    buf.clear();
    // The buffer grows with what is read, not with what a (maybe damaged) length claims.
    let got = input.take(len as u64).read_to_end(buf).map_err(Stop::Io)?;
    if got < len {
        return Err(Stop::Cut(cut));
    }
    Ok(())
}

/// Passes over the next `len` bytes of the input.
fn pass_over(input: &mut impl Read, len: usize, cut: &'static str) -> Result<(), Stop> {
    let got = std::io::copy(&mut input.take(len as u64), &mut std::io::sink()).map_err(Stop::Io)?;
    if got < len as u64 {
        return Err(Stop::Cut(cut));
    }
    Ok(())
}

fn u16_at(bytes: &[u8], at: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

fn u32_at(bytes: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

fn count(skipped: &mut HashMap<String, usize>, reason: &str) {
    match skipped.get_mut(reason) {
        Some(n) => *n += 1,
        None => {
            skipped.insert(reason.to_owned(), 1);
        }
    }
}

fn read_pcap(
    mut input: impl Read,
    name: &str,
    visit: &mut dyn FnMut(CapturedFrame),
) -> Result<Summary, PcapFileError> {
    let mut head = [0; 24];
    let got = read_full(&mut input, &mut head).map_err(|stop| not_capture(name, stop.reason()))?;
    // pcap-file knows the magic numbers; the header is zero-filled if short, so only a wrong
    // magic fails here.
    let header = PcapHeader::from_slice(&head)
        .map(|(_, header)| header)
        .map_err(|err| not_capture(name, err.to_string()))?;
    if got < head.len() {
        return Err(not_capture(
            name,
            format!("the pcap file header is cut short ({got} of 24 bytes)"),
        ));
    }
    let big = header.endianness == Endianness::Big;
    let ns_per_fraction = match header.ts_resolution {
        TsResolution::MicroSecond => 1_000,
        TsResolution::NanoSecond => 1,
    };
    let link = header.datalink;
    let link_label = link_name(link);
    let mut summary = Summary {
        format: "pcap",
        ..Summary::default()
    };
    let mut data = Vec::new();
    loop {
        let record = match pcap_record(&mut input, big, &mut data) {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(stop) => {
                summary.cut_short = Some(stop.describe(summary.frames));
                break;
            }
        };
        let unix_ns = i128::from(record.seconds) * 1_000_000_000
            + i128::from(record.fraction) * ns_per_fraction;
        if let Some(frame) = convert(
            &mut summary,
            link,
            None,
            &link_label,
            unix_ns,
            record.original_len,
            &data,
        ) {
            visit(frame);
        }
    }
    Ok(summary)
}

struct PcapRecord {
    seconds: u32,
    fraction: u32,
    original_len: u32,
}

/// The next pcap record, its frame in `data`; `None` at the end of the file.
///
/// Like tshark, a record longer than the file's snap length (or than its original length) is
/// taken as recorded: the header says how many bytes follow. Only a length no capture has
/// (tshark's 262144) means the header is garbage, and so is the rest of the file.
fn pcap_record(
    input: &mut impl Read,
    big: bool,
    data: &mut Vec<u8>,
) -> Result<Option<PcapRecord>, Stop> {
    let mut header = [0; 16];
    match read_full(input, &mut header)? {
        0 => return Ok(None),
        16 => {}
        _ => return Err(Stop::Cut("the file ends inside a record header")),
    }
    let field = |at| u32_at(&header, at, big).unwrap_or_default();
    let captured = field(8);
    if captured > MAX_FRAME {
        return Err(Stop::Corrupt(format!(
            "a record of {captured} bytes, more than the {MAX_FRAME} of any capture"
        )));
    }
    read_into(
        input,
        captured as usize,
        data,
        "the file ends inside a frame",
    )?;
    Ok(Some(PcapRecord {
        seconds: field(0),
        fraction: field(4),
        original_len: field(12),
    }))
}

/// A pcapng interface, as its description block says.
struct Interface {
    link: DataLink,
    name: Option<String>,
    /// Timestamp units per second.
    per_second: u64,
    snaplen: u32,
    link_label: String,
}

fn read_pcapng(
    mut input: impl Read,
    name: &str,
    visit: &mut dyn FnMut(CapturedFrame),
) -> Result<Summary, PcapFileError> {
    let mut summary = Summary {
        format: "pcapng",
        ..Summary::default()
    };
    let mut big = false;
    let mut body = Vec::new();
    // A file that does not start with a whole section header is no pcapng.
    match next_block(&mut input, &mut big, &mut body) {
        Ok(Some((SECTION_HEADER, _))) => {}
        Ok(_) => return Err(not_capture(name, "no section header".into())),
        Err(stop) => return Err(not_capture(name, stop.reason())),
    }
    // The interfaces of the current section, by id; `None` for one whose block could not be
    // read (its packets are counted, the ids of the next ones stay right).
    let mut interfaces: Vec<Option<Interface>> = Vec::new();
    loop {
        let (block_type, held) = match next_block(&mut input, &mut big, &mut body) {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(stop) => {
                summary.cut_short = Some(stop.describe(summary.frames));
                break;
            }
        };
        let frame = match block_type {
            SECTION_HEADER => {
                interfaces.clear();
                None
            }
            INTERFACE_DESCRIPTION | ENHANCED_PACKET | PACKET | SIMPLE_PACKET if !held => {
                count(&mut summary.skipped, HUGE_BLOCK);
                if block_type == INTERFACE_DESCRIPTION {
                    interfaces.push(None);
                }
                None
            }
            INTERFACE_DESCRIPTION => {
                let interface = interface(&body, big, &mut summary.skipped);
                if interface.is_none() {
                    count(&mut summary.skipped, SHORT_BLOCK);
                }
                interfaces.push(interface);
                None
            }
            ENHANCED_PACKET | PACKET => {
                packet_frame(&mut summary, &interfaces, block_type, &body, big, name)?
            }
            SIMPLE_PACKET => simple_packet_frame(&mut summary, &interfaces, &body, big),
            NAME_RESOLUTION
            | INTERFACE_STATISTICS
            | SYSTEMD_JOURNAL_EXPORT
            | DECRYPTION_SECRETS => None,
            block_type if CUSTOM.contains(&block_type) => {
                count(&mut summary.skipped, CUSTOM_BLOCK);
                None
            }
            _ => {
                count(&mut summary.skipped, UNKNOWN_BLOCK);
                None
            }
        };
        if let Some(frame) = frame {
            visit(frame);
        }
    }
    Ok(summary)
}

/// The next pcapng block's type, and whether its body is in `body` (the interface and packet
/// blocks, when not too long) or was passed over; `None` at the end of the file. A section header sets
/// `big`, the byte order of its section.
fn next_block(
    input: &mut impl Read,
    big: &mut bool,
    body: &mut Vec<u8>,
) -> Result<Option<(u32, bool)>, Stop> {
    const CUT: &str = "the file ends inside a block";
    let mut head = [0; 8];
    match read_full(input, &mut head)? {
        0 => return Ok(None),
        8 => {}
        _ => return Err(Stop::Cut(CUT)),
    }
    // A section header's type reads the same in both byte orders; its magic says which.
    let section = head[..4] == PCAPNG_MAGIC;
    if section {
        let mut bytes = [0; 4];
        if read_full(input, &mut bytes)? < 4 {
            return Err(Stop::Cut(CUT));
        }
        *big = match bytes {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => {
                return Err(Stop::Corrupt(
                    "a section header with an unknown byte-order magic".into(),
                ));
            }
        };
    }
    let block_type = u32_at(&head, 0, *big).unwrap_or_default();
    let len = u32_at(&head, 4, *big).unwrap_or_default();
    let read = if section { 12 } else { 8 };
    if !len.is_multiple_of(4) || len < read + 4 {
        return Err(Stop::Corrupt(format!(
            "a block of type {block_type:#010x} with the impossible length {len}"
        )));
    }
    // What is left of the body.
    let left = (len - read - 4) as usize;
    // Nothing of a section header is needed but its byte order.
    let wanted = matches!(
        block_type,
        INTERFACE_DESCRIPTION | PACKET | SIMPLE_PACKET | ENHANCED_PACKET
    );
    let held = wanted && left <= MAX_BODY;
    if held {
        read_into(input, left, body, CUT)?;
    } else {
        body.clear();
        pass_over(input, left, CUT)?;
    }
    let mut trailer = [0; 4];
    if read_full(input, &mut trailer)? < 4 {
        return Err(Stop::Cut(CUT));
    }
    let trailer = u32_at(&trailer, 0, *big).unwrap_or_default();
    if trailer != len {
        return Err(Stop::Corrupt(format!(
            "a block of type {block_type:#010x} with lengths {len} and {trailer}"
        )));
    }
    Ok(Some((block_type, held)))
}

/// What a block's option handler made of one option.
enum Opt {
    Known,
    Unknown,
    BadLength,
}

/// The options every block may carry: a comment, custom options.
fn common_option(code: u16) -> bool {
    matches!(code, 1 | 2988 | 2989 | 19372 | 19373)
}

/// Hands each option of a block (`options`, what follows its fixed fields) to `each`, up to
/// the end-of-options marker or the end of the block (the marker is optional). An option
/// `each` does not know or finds the wrong length is counted and passed over; a list that runs
/// past the block is counted and its rest not read.
fn options(
    mut options: &[u8],
    big: bool,
    skipped: &mut HashMap<String, usize>,
    mut each: impl FnMut(u16, &[u8]) -> Opt,
) {
    while !options.is_empty() {
        let (Some(code), Some(len)) = (u16_at(options, 0, big), u16_at(options, 2, big)) else {
            count(skipped, BROKEN_OPTIONS);
            return;
        };
        if code == 0 {
            return;
        }
        let len = usize::from(len);
        let Some(value) = options.get(4..4 + len) else {
            count(skipped, BROKEN_OPTIONS);
            return;
        };
        match each(code, value) {
            Opt::Known => {}
            Opt::Unknown => count(skipped, UNKNOWN_OPTION),
            Opt::BadLength => count(skipped, BAD_OPTION),
        }
        options = options
            .get(4 + len.next_multiple_of(4)..)
            .unwrap_or_default();
    }
}

/// The interface an Interface Description Block describes; `None` when it is too short.
fn interface(body: &[u8], big: bool, skipped: &mut HashMap<String, usize>) -> Option<Interface> {
    let link = DataLink::from(u32::from(u16_at(body, 0, big)?));
    // Two reserved bytes, which tshark does not check either.
    let snaplen = u32_at(body, 4, big)?;
    let mut name = None;
    let mut per_second = 1_000_000; // pcapng's default: microseconds
    options(
        body.get(8..).unwrap_or_default(),
        big,
        skipped,
        |code, value| match code {
            2 => {
                let value = value.strip_suffix(b"\0").unwrap_or(value);
                name = Some(String::from_utf8_lossy(value).into_owned());
                Opt::Known
            }
            9 => match value {
                [resolution] => {
                    per_second = ts_units(*resolution).unwrap_or(per_second);
                    Opt::Known
                }
                _ => Opt::BadLength,
            },
            // if_description .. if_iana_tzname
            3..=18 => Opt::Known,
            code if common_option(code) => Opt::Known,
            _ => Opt::Unknown,
        },
    );
    Some(Interface {
        link,
        name,
        per_second,
        snaplen,
        link_label: link_name(link),
    })
}

/// The frame of an Enhanced Packet Block (or of an obsolete Packet Block), counted in
/// `summary`; `None` (counted as skipped) when it cannot be read.
fn packet_frame(
    summary: &mut Summary,
    interfaces: &[Option<Interface>],
    block_type: u32,
    body: &[u8],
    big: bool,
    name: &str,
) -> Result<Option<CapturedFrame>, PcapFileError> {
    // interface (a u16 and a drop count in a Packet Block), timestamp high and low, captured
    // and original lengths, the data padded to 32 bits, options.
    let (Some(first), Some(high), Some(low), Some(captured), Some(original_len)) = (
        u32_at(body, 0, big),
        u32_at(body, 4, big),
        u32_at(body, 8, big),
        u32_at(body, 12, big),
        u32_at(body, 16, big),
    ) else {
        count(&mut summary.skipped, SHORT_BLOCK);
        return Ok(None);
    };
    let interface_id = if block_type == PACKET {
        u32::from(u16_at(body, 0, big).unwrap_or_default())
    } else {
        first
    };
    // Longer than the interface's snaplen is fine (tshark takes the frame as recorded); longer
    // than tshark reads at all is damage, but the block's length says where the next starts.
    if captured > MAX_FRAME {
        count(&mut summary.skipped, OVERLONG);
        return Ok(None);
    }
    let end = 20 + captured as usize;
    let Some(data) = body.get(20..end) else {
        count(&mut summary.skipped, SHORT_BLOCK);
        return Ok(None);
    };
    let Some(interface) = interfaces.get(interface_id as usize) else {
        return Err(PcapFileError::Corrupt {
            path: name.to_owned(),
            frame: summary.frames + 1,
            reason: format!("no interface {interface_id}"),
        });
    };
    let Some(interface) = interface else {
        count(&mut summary.skipped, NO_INTERFACE);
        return Ok(None);
    };
    let mut direction = None;
    let rest = body.get(end.next_multiple_of(4)..).unwrap_or_default();
    options(rest, big, &mut summary.skipped, |code, value| match code {
        // flags: the direction in the low two bits, 1 inbound, 2 outbound.
        2 => match u32_at(value, 0, big) {
            Some(flags) if value.len() == 4 => {
                direction = match flags & 3 {
                    1 => Some(Direction::In),
                    2 => Some(Direction::Out),
                    _ => None,
                };
                Opt::Known
            }
            _ => Opt::BadLength,
        },
        // hash; and in an EPB drop count, packet id, queue, verdict, process and thread id.
        3 => Opt::Known,
        4..=8 if block_type == ENHANCED_PACKET => Opt::Known,
        code if common_option(code) => Opt::Known,
        _ => Opt::Unknown,
    });
    let raw = (u64::from(high) << 32) | u64::from(low);
    let unix_ns =
        i128::try_from(u128::from(raw) * 1_000_000_000 / u128::from(interface.per_second.max(1)))
            .unwrap_or(i128::MAX);
    Ok(convert(
        summary,
        interface.link,
        interface.name.as_deref(),
        &interface.link_label,
        unix_ns,
        original_len,
        data,
    )
    .map(|mut frame| {
        frame.direction = frame.direction.or(direction);
        frame
    }))
}

/// The frame of a Simple Packet Block, which is on the section's first interface, has no
/// time, and is as long as its original length or the interface's snaplen allow.
fn simple_packet_frame(
    summary: &mut Summary,
    interfaces: &[Option<Interface>],
    body: &[u8],
    big: bool,
) -> Option<CapturedFrame> {
    let Some(Some(interface)) = interfaces.first() else {
        count(&mut summary.skipped, NO_INTERFACE);
        return None;
    };
    let Some(original_len) = u32_at(body, 0, big) else {
        count(&mut summary.skipped, SHORT_BLOCK);
        return None;
    };
    // The data is padded to 32 bits: only the original length or the snaplen tell its end.
    let data = body.get(4..).unwrap_or_default();
    let mut captured = data.len().min(original_len as usize);
    if interface.snaplen > 0 {
        captured = captured.min(interface.snaplen as usize);
    }
    if captured > MAX_FRAME as usize {
        count(&mut summary.skipped, OVERLONG);
        return None;
    }
    let data = &data[..captured];
    convert(
        summary,
        interface.link,
        interface.name.as_deref(),
        &interface.link_label,
        0,
        original_len,
        data,
    )
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
    use dhcp_wire::{Body, FrameMeta, decode_frame, test_support::lo_meta};

    use crate::pcap::writer::{PcapWriter, Rotation};

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

    /// pcapng built by hand, in either byte order, for what pcap-file will not write.
    struct Ng {
        big: bool,
        bytes: Vec<u8>,
    }

    fn u16_in(big: bool, v: u16) -> [u8; 2] {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32_in(big: bool, v: u32) -> [u8; 4] {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn padded(bytes: &[u8]) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    /// One pcapng option.
    fn option(big: bool, code: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = u16_in(big, code).to_vec();
        bytes.extend_from_slice(&u16_in(big, value.len() as u16));
        bytes.extend_from_slice(&padded(value));
        bytes
    }

    const END_OF_OPTIONS: [u8; 4] = [0; 4];
    /// 2023-11-14T22:13:20.123456Z in microseconds.
    const TS_US: u64 = 1_700_000_000_123_456;

    impl Ng {
        fn new(big: bool) -> Ng {
            let mut ng = Ng {
                big,
                bytes: Vec::new(),
            };
            ng.section(big);
            ng
        }

        /// A new section, in the byte order `big` says.
        fn section(&mut self, big: bool) -> &mut Self {
            self.big = big;
            let mut body = u32_in(big, 0x1a2b_3c4d).to_vec();
            body.extend_from_slice(&u16_in(big, 1));
            body.extend_from_slice(&u16_in(big, 0));
            body.extend_from_slice(&[0xff; 8]); // section length unknown
            self.block(SECTION_HEADER, &body)
        }

        fn block(&mut self, block_type: u32, body: &[u8]) -> &mut Self {
            let body = padded(body);
            let len = u32_in(self.big, body.len() as u32 + 12);
            self.bytes.extend_from_slice(&u32_in(self.big, block_type));
            self.bytes.extend_from_slice(&len);
            self.bytes.extend_from_slice(&body);
            self.bytes.extend_from_slice(&len);
            self
        }

        /// An Ethernet interface.
        fn interface(&mut self, snaplen: u32, options: &[u8]) -> &mut Self {
            let mut body = u16_in(self.big, 1).to_vec();
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&u32_in(self.big, snaplen));
            body.extend_from_slice(options);
            self.block(INTERFACE_DESCRIPTION, &body)
        }

        /// An Enhanced Packet Block on interface 0 at [`TS_US`], its captured length the
        /// frame's.
        fn packet(&mut self, frame: &[u8], options: &[u8]) -> &mut Self {
            let body = self.packet_body(0, frame.len() as u32, frame, options);
            self.block(ENHANCED_PACKET, &body)
        }

        fn packet_body(&self, first: u32, captured: u32, frame: &[u8], options: &[u8]) -> Vec<u8> {
            let mut body = u32_in(self.big, first).to_vec();
            body.extend_from_slice(&u32_in(self.big, (TS_US >> 32) as u32));
            body.extend_from_slice(&u32_in(self.big, TS_US as u32));
            body.extend_from_slice(&u32_in(self.big, captured));
            body.extend_from_slice(&u32_in(self.big, frame.len() as u32));
            body.extend_from_slice(&padded(frame));
            body.extend_from_slice(options);
            body
        }
    }

    /// pcap built by hand: Ethernet, microseconds, each record's frame and original length.
    fn pcap_by_hand(big: bool, snaplen: u32, records: &[(&[u8], u32)]) -> Vec<u8> {
        let mut bytes = u32_in(big, 0xa1b2_c3d4).to_vec();
        bytes.extend_from_slice(&u16_in(big, 2));
        bytes.extend_from_slice(&u16_in(big, 4));
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&u32_in(big, snaplen));
        bytes.extend_from_slice(&u32_in(big, 1));
        for (n, (frame, original_len)) in records.iter().enumerate() {
            bytes.extend_from_slice(&u32_in(big, 1_700_000_000 + n as u32));
            bytes.extend_from_slice(&u32_in(big, 123_456));
            bytes.extend_from_slice(&u32_in(big, frame.len() as u32));
            bytes.extend_from_slice(&u32_in(big, *original_len));
            bytes.extend_from_slice(frame);
        }
        bytes
    }

    fn reasons(counts: &[(&str, usize)]) -> HashMap<String, usize> {
        counts.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()
    }

    #[test]
    fn an_unknown_pcapng_block_between_two_packets_is_skipped_and_counted() {
        for big in [false, true] {
            let mut ng = Ng::new(big);
            ng.interface(0, &[])
                .packet(&release_frame(), &[])
                .block(0x0000_0042, b"a block of a type nobody knows")
                .packet(&release_frame(), &[]);
            let capture = read_bytes(&ng.bytes, "unknown.pcapng").unwrap();
            assert_eq!(capture.frames.len(), 2, "big endian {big}");
            assert!(capture.frames.iter().all(is_release));
            assert_eq!(capture.skipped, reasons(&[(UNKNOWN_BLOCK, 1)]));
            assert!(capture.cut_short.is_none());
        }
    }

    #[test]
    fn blocks_without_frames_are_passed_over_custom_and_local_ones_counted() {
        let mut ng = Ng::new(false);
        ng.interface(0, &[])
            .packet(&release_frame(), &[])
            .block(NAME_RESOLUTION, &END_OF_OPTIONS)
            .block(INTERFACE_STATISTICS, &[0; 12])
            .block(DECRYPTION_SECRETS, &[0; 8])
            .block(0x0000_0bad, b"\0\0\x7e\xd9custom")
            .block(0x4000_0bad, b"\0\0\x7e\xd9custom")
            .block(0x8000_0001, b"local use")
            // Longer than any block held in memory: passed over all the same.
            .block(0x0000_0042, &vec![0x55; MAX_BODY + 4])
            .packet(&release_frame(), &[]);
        let capture = read_bytes(&ng.bytes, "blocks.pcapng").unwrap();
        assert_eq!(capture.frames.len(), 2);
        assert_eq!(
            capture.skipped,
            reasons(&[(CUSTOM_BLOCK, 2), (UNKNOWN_BLOCK, 2)])
        );
        assert!(capture.cut_short.is_none());
    }

    #[test]
    fn an_unknown_option_in_an_enhanced_packet_block_still_reads_the_packet() {
        for big in [false, true] {
            let mut unknown_then_flags = option(big, 0x1234, b"abc");
            unknown_then_flags.extend_from_slice(&option(big, 2, &u32_in(big, 2)));
            unknown_then_flags.extend_from_slice(&END_OF_OPTIONS);
            // The end-of-options marker is optional.
            let unknown_unterminated = option(big, 0x4321, b"no end marker");
            let mut ng = Ng::new(big);
            ng.interface(0, &[])
                .packet(&release_frame(), &unknown_then_flags)
                .packet(&release_frame(), &unknown_unterminated);
            let capture = read_bytes(&ng.bytes, "options.pcapng").unwrap();
            let directions: Vec<_> = capture.frames.iter().map(|f| f.direction).collect();
            assert_eq!(directions, [Some(Direction::Out), None], "big endian {big}");
            assert!(capture.frames.iter().all(is_release));
            assert_eq!(capture.skipped, reasons(&[(UNKNOWN_OPTION, 2)]));
            assert!(capture.cut_short.is_none());
        }
    }

    #[test]
    fn an_unknown_option_in_an_interface_block_keeps_the_interface() {
        let big = false;
        let mut options = option(big, 2, b"eth9");
        options.extend_from_slice(&option(big, 0x4321, b"zz"));
        options.extend_from_slice(&option(big, 9, &[3])); // milliseconds
        options.extend_from_slice(&END_OF_OPTIONS);
        let mut ng = Ng::new(big);
        ng.interface(0, &options).packet(&release_frame(), &[]);
        let capture = read_bytes(&ng.bytes, "idb.pcapng").unwrap();
        assert_eq!(capture.frames[0].interface, "eth9");
        assert_eq!(capture.frames[0].unix_ns, i128::from(TS_US) * 1_000_000);
        assert_eq!(capture.skipped, reasons(&[(UNKNOWN_OPTION, 1)]));
    }

    #[test]
    fn malformed_pcapng_options_and_packet_blocks_are_counted_and_passed_over() {
        let big = false;
        let mut short_flags = option(big, 2, &[1, 0, 0]);
        short_flags.extend_from_slice(&END_OF_OPTIONS);
        let mut past_the_block = u16_in(big, 0x1234).to_vec();
        past_the_block.extend_from_slice(&u16_in(big, 200));
        past_the_block.extend_from_slice(b"abcd");
        let mut ng = Ng::new(big);
        ng.interface(0, &[])
            .packet(&release_frame(), &short_flags)
            .packet(&release_frame(), &past_the_block);
        // Captured length past the end of the block, and a block too short for its fields.
        let body = ng.packet_body(0, 2000, &release_frame(), &[]);
        ng.block(ENHANCED_PACKET, &body)
            .block(ENHANCED_PACKET, &[0; 8])
            .packet(&release_frame(), &[]);
        let capture = read_bytes(&ng.bytes, "malformed.pcapng").unwrap();
        assert_eq!(capture.frames.len(), 3);
        assert!(
            capture
                .frames
                .iter()
                .all(|f| is_release(f) && f.direction.is_none())
        );
        assert_eq!(
            capture.skipped,
            reasons(&[(BAD_OPTION, 1), (BROKEN_OPTIONS, 1), (SHORT_BLOCK, 2)])
        );
        assert!(capture.cut_short.is_none());
    }

    #[test]
    fn a_pcap_record_longer_than_the_snap_length_is_read_as_recorded_like_tshark() {
        let frame = release_frame();
        let wire = frame.len() as u32;
        assert!(frame.len() > 64);
        for big in [false, true] {
            // Snap length 64: a record over it, one truncated to it (as tcpdump -s 64 writes),
            // one over it again.
            let bytes = pcap_by_hand(
                big,
                64,
                &[(&frame, wire), (&frame[..64], wire), (&frame, wire)],
            );
            let capture = read_bytes(&bytes, "snaplen.pcap").unwrap();
            let got: Vec<(usize, u32)> = capture
                .frames
                .iter()
                .map(|f| (f.frame.len(), f.wire_len))
                .collect();
            assert_eq!(got, [(frame.len(), wire), (64, wire), (frame.len(), wire)]);
            assert!(is_release(&capture.frames[0]) && is_release(&capture.frames[2]));
            assert_eq!(capture.frames[1].unix_ns, 1_700_000_001_123_456_000);
            assert!(
                capture.skipped.is_empty() && capture.cut_short.is_none(),
                "{capture:?}"
            );
        }
    }

    #[test]
    fn a_pcapng_record_longer_than_the_interface_snaplen_is_read_as_recorded_like_tshark() {
        let frame = release_frame();
        let mut ng = Ng::new(false);
        ng.interface(64, &[])
            .packet(&frame, &[])
            .packet(&frame[..64], &[])
            .packet(&frame, &[]);
        let capture = read_bytes(&ng.bytes, "snaplen.pcapng").unwrap();
        let lengths: Vec<usize> = capture.frames.iter().map(|f| f.frame.len()).collect();
        assert_eq!(lengths, [frame.len(), 64, frame.len()]);
        assert!(is_release(&capture.frames[0]) && is_release(&capture.frames[2]));
        assert!(capture.skipped.is_empty() && capture.cut_short.is_none());
    }

    #[test]
    fn a_record_longer_than_tshark_reads_ends_a_pcap_and_is_passed_over_in_pcapng() {
        let frame = release_frame();
        let huge = vec![0; MAX_FRAME as usize + 1];
        let wire = frame.len() as u32;
        let bytes = pcap_by_hand(
            false,
            0,
            &[(&frame, wire), (&huge, huge.len() as u32), (&frame, wire)],
        );
        let capture = read_bytes(&bytes, "huge.pcap").unwrap();
        assert_eq!(capture.frames.len(), 1);
        let cut = capture.cut_short.unwrap();
        assert!(
            cut.starts_with("corrupt after 1 frames: a record of 262145 bytes"),
            "{cut}"
        );

        let mut ng = Ng::new(false);
        ng.interface(0, &[])
            .packet(&frame, &[])
            .packet(&huge, &[])
            .packet(&frame, &[]);
        let capture = read_bytes(&ng.bytes, "huge.pcapng").unwrap();
        assert_eq!(capture.frames.len(), 2);
        assert_eq!(capture.skipped, reasons(&[(OVERLONG, 1)]));
        assert!(capture.cut_short.is_none());
    }

    #[test]
    fn damaged_pcapng_framing_ends_the_reading_with_the_frames_before() {
        let mut good = Ng::new(false);
        good.interface(0, &[]).packet(&release_frame(), &[]);
        // Lengths that disagree, and one not a multiple of 4.
        let mismatch = [0x42, 0, 0, 0, 16, 0, 0, 0, 1, 2, 3, 4, 20, 0, 0, 0];
        let odd = [0x42, 0, 0, 0, 17, 0, 0, 0, 1, 2, 3, 4, 5, 17, 0, 0, 0];
        for damage in [&mismatch[..], &odd[..]] {
            let mut bytes = good.bytes.clone();
            bytes.extend_from_slice(damage);
            bytes.extend_from_slice(&good.bytes);
            let capture = read_bytes(&bytes, "damaged.pcapng").unwrap();
            assert_eq!(capture.frames.len(), 1);
            let cut = capture.cut_short.unwrap();
            assert!(
                cut.starts_with("corrupt after 1 frames: a block of type 0x00000042"),
                "{cut}"
            );
        }
    }

    #[test]
    fn sections_in_either_byte_order_and_simple_and_obsolete_packet_blocks_are_read() {
        let frame = release_frame();
        let mut ng = Ng::new(false);
        let mut options = option(false, 2, b"a\0");
        options.extend_from_slice(&option(false, 9, &[6]));
        ng.interface(0, &options).packet(&frame, &[]);
        let mut options = option(true, 2, b"b");
        options.extend_from_slice(&END_OF_OPTIONS);
        ng.section(true).interface(0, &options);
        // An obsolete Packet Block: interface 0 (u16), drop count 0, going out.
        let mut flags = option(true, 2, &u32_in(true, 2));
        flags.extend_from_slice(&END_OF_OPTIONS);
        let body = ng.packet_body(0, frame.len() as u32, &frame, &flags);
        ng.block(PACKET, &body);
        let mut simple = u32_in(true, frame.len() as u32).to_vec();
        simple.extend_from_slice(&frame);
        ng.block(SIMPLE_PACKET, &simple);
        let capture = read_bytes(&ng.bytes, "sections.pcapng").unwrap();
        let got: Vec<(&str, i128, Option<Direction>)> = capture
            .frames
            .iter()
            .map(|f| (f.interface.as_str(), f.unix_ns, f.direction))
            .collect();
        let us = i128::from(TS_US);
        assert_eq!(
            got,
            [
                ("a", us * 1_000, None),
                ("b", us * 1_000, Some(Direction::Out)),
                ("b", 0, None),
            ]
        );
        assert!(
            capture
                .frames
                .iter()
                .all(|f| is_release(f) && f.frame == frame)
        );
        assert!(
            capture.skipped.is_empty() && capture.cut_short.is_none(),
            "{capture:?}"
        );
    }

    #[test]
    fn packets_on_an_interface_that_could_not_be_read_are_counted() {
        let mut ng = Ng::new(false);
        ng.block(INTERFACE_DESCRIPTION, &[1, 0, 0, 0]) // too short: interface 0 unreadable
            .interface(0, &[]);
        let body = ng.packet_body(1, release_frame().len() as u32, &release_frame(), &[]);
        ng.packet(&release_frame(), &[])
            .block(ENHANCED_PACKET, &body);
        let capture = read_bytes(&ng.bytes, "interfaces.pcapng").unwrap();
        assert_eq!(capture.frames.len(), 1);
        assert_eq!(
            capture.skipped,
            reasons(&[(SHORT_BLOCK, 1), (NO_INTERFACE, 1)])
        );
        // A packet on an interface never described is still an error.
        let mut ng = Ng::new(false);
        ng.packet(&release_frame(), &[]);
        let err = read_bytes(&ng.bytes, "none.pcapng").unwrap_err();
        assert!(
            matches!(err, PcapFileError::Corrupt { frame: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let frame = release_frame();
        let mut ng = Ng::new(false);
        let mut options = option(false, 2, b"eth0");
        options.extend_from_slice(&option(false, 9, &[9]));
        options.extend_from_slice(&END_OF_OPTIONS);
        let mut flags = option(false, 2, &u32_in(false, 1));
        flags.extend_from_slice(&END_OF_OPTIONS);
        ng.interface(0, &options)
            .packet(&frame[..60], &flags)
            .block(0x42, b"unknown")
            .section(true)
            .interface(0, &[]);
        let mut simple = u32_in(true, 60).to_vec();
        simple.extend_from_slice(&frame[..60]);
        ng.block(SIMPLE_PACKET, &simple).packet(&frame[..60], &[]);
        let pcap = pcap_by_hand(false, 64, &[(&frame[..60], 60), (&frame[..60], 60)]);
        for file in [ng.bytes, pcap] {
            for at in 0..file.len() {
                for value in [
                    0x00,
                    0xff,
                    0x7f,
                    0x80,
                    file[at] ^ 0x01,
                    file[at].wrapping_add(4),
                ] {
                    let mut bytes = file.clone();
                    bytes[at] = value;
                    if let Ok(capture) = read_bytes(&bytes, "hostile") {
                        assert!(capture.frames.len() <= 3);
                    }
                }
            }
        }
    }
}
