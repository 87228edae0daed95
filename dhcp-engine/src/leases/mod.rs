//! Lease tables: what the DHCP server believes is leased, read from its lease file.
//!
//! Each server's format is a [`LeaseFormat`]; the correlator only sees [`LeaseTable`]. A file
//! caught half-written (dnsmasq rewrites in place: truncate, write, fsync) is reported as
//! [`LeaseFileError::Incomplete`] so the caller waits and reads again instead of acting on it.
pub mod dnsmasq;
pub mod emptied;
pub mod kea;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

pub use dhcp_wire::parse_hex_bytes;
use thiserror::Error;

/// When a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    Never,
    /// Unix time in seconds.
    At(u64),
}

/// One lease as the server stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    /// Hardware address bytes (a MAC for Ethernet) and type (1 = Ethernet).
    pub hwaddr: Vec<u8>,
    pub htype: u8,
    /// DHCPv4 client identifier (option 61) or DHCPv6 DUID.
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub expiry: Expiry,
    /// DHCPv6 identity association id; `None` for DHCPv4.
    pub iaid: Option<u32>,
}

impl Lease {
    /// The lease's MAC, when its hardware address is Ethernet.
    pub fn mac(&self) -> Option<[u8; 6]> {
        (self.htype == 1).then(|| self.hwaddr.as_slice().try_into().ok())?
    }
}

/// A whole lease file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    /// DHCPv4 leases by address (foldhash: a reload of 100,000 leases hashes each address a few
    /// times, and SipHash was a fair part of it).
    pub v4: HashMap<Ipv4Addr, Lease, foldhash::fast::RandomState>,
    /// DHCPv6 leases, in file order.
    pub v6: Vec<Lease>,
    /// The server's own DUID (dnsmasq's `duid` line).
    pub server_duid: Option<Vec<u8>>,
}

impl LeaseTable {
    pub fn get_v4(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.v4.get(&ip)
    }

    pub fn insert(&mut self, lease: Lease) {
        match lease.ip {
            IpAddr::V4(ip) if lease.iaid.is_none() => {
                self.v4.insert(ip, lease);
            }
            _ => self.v6.push(lease),
        }
    }
}

impl FromIterator<Lease> for LeaseTable {
    fn from_iter<I: IntoIterator<Item = Lease>>(leases: I) -> LeaseTable {
        let mut table = LeaseTable::default();
        for lease in leases {
            table.insert(lease);
        }
        table
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LeaseFileError {
    /// The file ends in the middle of a line: a writer is still at work. Read again later.
    #[error("lease file is incomplete (no newline after the last line); it is being written")]
    Incomplete,
    #[error("line {line}: {reason}: {text:?}")]
    BadLine {
        line: usize,
        reason: String,
        text: String,
    },
}

impl LeaseFileError {
    pub fn bad(line: usize, reason: impl Into<String>, text: &str) -> LeaseFileError {
        LeaseFileError::BadLine {
            line,
            reason: reason.into(),
            text: text.chars().take(200).collect(),
        }
    }
}

/// The lease file formats the agent reads, by the name used on the command line and in the
/// config file (`dnsmasq`, `kea-v4`, `kea-v6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseFormatName {
    Dnsmasq,
    KeaV4,
    KeaV6,
}

impl LeaseFormatName {
    pub const ALL: [LeaseFormatName; 3] = [
        LeaseFormatName::Dnsmasq,
        LeaseFormatName::KeaV4,
        LeaseFormatName::KeaV6,
    ];

    /// The name on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            LeaseFormatName::Dnsmasq => "dnsmasq",
            LeaseFormatName::KeaV4 => "kea-v4",
            LeaseFormatName::KeaV6 => "kea-v6",
        }
    }

    /// The parser for this format.
    pub fn format(self) -> Box<dyn LeaseFormat + Send> {
        match self {
            LeaseFormatName::Dnsmasq => Box::new(dnsmasq::Dnsmasq),
            LeaseFormatName::KeaV4 => Box::new(kea::KeaV4),
            LeaseFormatName::KeaV6 => Box::new(kea::KeaV6),
        }
    }
}

impl std::fmt::Display for LeaseFormatName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LeaseFormatName {
    type Err = String;
    fn from_str(text: &str) -> Result<LeaseFormatName, String> {
        LeaseFormatName::ALL
            .into_iter()
            .find(|f| f.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = LeaseFormatName::ALL.iter().map(|f| f.name()).collect();
                format!("{text:?} is not a lease format ({})", names.join(", "))
            })
    }
}

/// A lease file format (dnsmasq, Kea memfile CSV, ...).
pub trait LeaseFormat {
    /// Short name for logs and metrics, e.g. `dnsmasq`.
    fn name(&self) -> &'static str;
    /// Parses a whole file.
    fn parse(&self, text: &str) -> Result<LeaseTable, LeaseFileError>;

    /// The other files that hold the server's leases, to be read before the lease file at
    /// `path`, in this order (those that exist): none for dnsmasq, which rewrites its one file;
    /// Kea's lease file cleanup leaves leases in `.completed`, `.2` and `.1`
    /// ([`kea::kea_files_in_load_order`]).
    fn earlier_files(&self, _path: &Path) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Parses the texts of those files, then the lease file's, as one table. A format whose
    /// file is whole reads the last text alone.
    fn parse_set(&self, texts: &[&str]) -> Result<LeaseTable, FileSetError> {
        let Some((last, _)) = texts.split_last() else {
            return Ok(LeaseTable::default());
        };
        self.parse(last).map_err(|error| FileSetError {
            index: texts.len() - 1,
            error,
        })
    }
}

/// A file of a set (see [`LeaseFormat::earlier_files`]) did not read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("lease file {index} of the set: {error}")]
pub struct FileSetError {
    /// Which of the texts given to `parse_set` (from 0).
    pub index: usize,
    pub error: LeaseFileError,
}

/// A file that does not end with a newline is still being written (an empty file is complete:
/// no leases).
pub(crate) fn require_complete(text: &str) -> Result<(), LeaseFileError> {
    if text.is_empty() || text.ends_with('\n') {
        Ok(())
    } else {
        Err(LeaseFileError::Incomplete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_named_and_the_error_lists_them_all() {
        for format in LeaseFormatName::ALL {
            assert_eq!(format.name().parse::<LeaseFormatName>(), Ok(format));
        }
        assert_eq!(
            "kea".parse::<LeaseFormatName>(),
            Err("\"kea\" is not a lease format (dnsmasq, kea-v4, kea-v6)".to_owned())
        );
        assert_eq!(LeaseFormatName::KeaV6.format().name(), "kea-memfile-v6");
    }
}
