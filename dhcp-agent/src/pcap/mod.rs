//! Capture files: what the agent captured, written as pcapng for tshark and Wireshark
//! ([`writer`]), and captures taken anywhere, read back as Ethernet frames for the decoder
//! ([`reader`]). `pcap-file` writes pcapng and reads the pcap file header; pcap records, the
//! pcapng blocks (unknown ones and unknown options skipped and counted, as tshark passes them)
//! and the link-layer conversions are read by our own code.
pub mod reader;
pub mod writer;

use thiserror::Error;

/// Which way a frame went, when the capture says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Error)]
pub enum PcapFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file ({reason})")]
    NotACapture { path: String, reason: String },
    #[error("{path}: corrupt at frame {frame}: {reason}")]
    Corrupt {
        path: String,
        frame: usize,
        reason: String,
    },
    #[error(
        "{path}: link type {link} is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP, BSD loopback are)"
    )]
    UnsupportedLinkType { path: String, link: String },
    #[error("{path}: writing: {reason}")]
    Write { path: String, reason: String },
}
