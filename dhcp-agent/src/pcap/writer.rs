//! pcapng output of `watch --pcap` and `run --pcap`: one interface description per interface
//! (its name, nanosecond timestamps), one enhanced packet block per frame with the wire length
//! and the direction flag, so `tshark -r` shows interface, time and direction as captured.
//! Optional rotation by size keeps `FILE`, `FILE.1` ... `FILE.<n-1>`.
use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

use super::PcapFileError;
use dhcp_wire::FrameMeta;

/// The most the kernel programs capture of a frame.
const SNAPLEN: u32 = dhcp_common::CAPTURE_BYTES as u32;

/// Rotate when the current file reaches `max_bytes`, keeping `files` files in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub files: u32,
}

pub struct PcapWriter {
    path: PathBuf,
    rotation: Option<Rotation>,
    writer: PcapNgWriter<BufWriter<File>>,
    /// Interface name -> interface id in the current file.
    interfaces: HashMap<String, u32>,
    bytes: u64,
}

impl PcapWriter {
    pub fn create(path: &Path, rotation: Option<Rotation>) -> Result<PcapWriter, PcapFileError> {
        let writer = open(path)?;
        Ok(PcapWriter {
            path: path.to_owned(),
            rotation,
            writer,
            interfaces: HashMap::new(),
            bytes: 0,
        })
    }

    fn error(&self, reason: impl ToString) -> PcapFileError {
        PcapFileError::Write {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Appends one captured frame.
    pub fn write(&mut self, meta: &FrameMeta, frame: &[u8]) -> Result<(), PcapFileError> {
        if let Some(rotation) = self.rotation
            && self.bytes >= rotation.max_bytes
        {
            self.rotate(rotation)?;
        }
        let interface_id = match self.interfaces.get(&meta.interface) {
            Some(id) => *id,
            None => {
                let block = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: SNAPLEN,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(meta.interface.clone())),
                        // Timestamps in nanoseconds (the kernel's resolution).
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                let written = self
                    .writer
                    .write_pcapng_block(block)
                    .map_err(|e| self.error(e))?;
                self.bytes += written as u64;
                let id = self.interfaces.len() as u32;
                self.interfaces.insert(meta.interface.clone(), id);
                id
            }
        };
        // pcapng direction flag: 1 inbound, 2 outbound.
        let direction = if meta.hook.is_ingress() { 1 } else { 2 };
        let block = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(u64::try_from(meta.unix_ns).unwrap_or(0)),
            original_len: meta.wire_len.max(frame.len() as u32),
            data: Cow::Borrowed(frame),
            options: vec![EnhancedPacketOption::Flags(direction)],
        };
        let written = self
            .writer
            .write_pcapng_block(block)
            .map_err(|e| self.error(e))?;
        self.bytes += written as u64;
        Ok(())
    }

    /// Pushes what is buffered to the file (after each batch, so readers see whole frames).
    pub fn flush(&mut self) -> Result<(), PcapFileError> {
        self.writer.get_mut().flush().map_err(|e| self.error(e))
    }

    fn rotate(&mut self, rotation: Rotation) -> Result<(), PcapFileError> {
        self.flush()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let keep = rotation.files.max(1);
        if keep == 1 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1)).map_err(|e| self.error(e))?;
        }
        self.writer = open(&self.path)?;
        self.interfaces.clear();
        self.bytes = 0;
        Ok(())
    }
}

fn open(path: &Path) -> Result<PcapNgWriter<BufWriter<File>>, PcapFileError> {
    let file = File::create(path).map_err(|source| PcapFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    PcapNgWriter::new(BufWriter::new(file)).map_err(|e| PcapFileError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
