//! What Kea's configuration (`/etc/kea/kea-dhcp4.conf`, `kea-dhcp6.conf`) says: where its
//! control socket and lease file are, whether the `lease_cmds` hook is loaded, its subnets and
//! pools, and the host reservations (what the orchestrator declared, as dnsmasq's host lines
//! are for dnsmasq: see [`DeclaredHosts::from_kea`]).
//!
//! The file is JSON with what Kea's lexer (`src/bin/dhcp4/dhcp4_lexer.ll`, the same in dhcp6)
//! adds: `#` and `//` comments to the end of the line and `/* */` comments, outside strings,
//! and `<?include "file"?>` directives, replaced by the file's text wherever they stand (Kea
//! nests them at most 10 deep). Comments are removed by our own scanner and includes read
//! through [`ConfFiles`]; the rest is serde_json's. Kea resolves a relative include path from
//! its working directory (`fopen` in `Parser4Context::includeFile`); we resolve it from the
//! including file's directory when [`load`] knows it (the Debian unit runs Kea in `/`, where
//! the two agree for the usual absolute paths), else as given.
//!
//! Kea rejects a configuration whose values have the wrong type, or a reservation with two
//! identifiers or none (`HostReservationParser::parseInternal`), and then does not run with it:
//! those are errors here too, rather than a partial answer.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use serde_json::Value;
use thiserror::Error;

use crate::{
    declared::{ClientIdMatch, DeclaredHosts, HostLine, MacPattern},
    dnsmasq_conf::{ConfFiles, DhcpRange, DnsmasqConfig, RangeLine, RangeMode},
};

/// Where Kea 2.2 as Debian builds it (`--localstatedir=/var`, data directory
/// `/var/lib/kea`) keeps its leases when `lease-database` names no file: kea-dhcp4 2.2.0 with
/// a memfile without `name` logs "DHCPSRV_MEMFILE_LEASE_FILE_LOAD loading leases from file
/// /var/lib/kea/kea-leases4.csv" (`Memfile_LeaseMgr::getDefaultLeaseFilePath`).
pub const DEFAULT_LEASE_FILE4: &str = "/var/lib/kea/kea-leases4.csv";
pub const DEFAULT_LEASE_FILE6: &str = "/var/lib/kea/kea-leases6.csv";

/// Kea's `hooks-libraries` entry for the lease commands (`lease4-get`, `lease6-del`, ...).
pub const LEASE_CMDS_LIBRARY: &str = "libdhcp_lease_cmds.so";

/// How deep Kea nests `<?include?>` (`states_.size() > 10` is fatal).
const MAX_INCLUDE_DEPTH: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The top-level object: `Dhcp4` or `Dhcp6`.
    pub fn key(self) -> &'static str {
        match self {
            Family::V4 => "Dhcp4",
            Family::V6 => "Dhcp6",
        }
    }

    pub fn default_lease_file(self) -> &'static Path {
        Path::new(match self {
            Family::V4 => DEFAULT_LEASE_FILE4,
            Family::V6 => DEFAULT_LEASE_FILE6,
        })
    }

    fn subnets_key(self) -> &'static str {
        match self {
            Family::V4 => "subnet4",
            Family::V6 => "subnet6",
        }
    }
}

/// Where Kea keeps its leases (`lease-database`; memfile when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDatabase {
    /// `persist` false: leases in memory only, no file.
    Memfile {
        persist: bool,
        /// Seconds between lease file cleanups (`kea-lfc`); `None` when not given (Kea's
        /// default, 0 in 2.2: never).
        lfc_interval: Option<u64>,
    },
    /// `mysql`, `postgresql`: no file to read.
    Other(String),
}

/// A host reservation identifier type (`host-reservation-identifiers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentifierType {
    HwAddress,
    Duid,
    CircuitId,
    ClientId,
    FlexId,
}

impl IdentifierType {
    pub const ALL: [IdentifierType; 5] = [
        IdentifierType::HwAddress,
        IdentifierType::Duid,
        IdentifierType::CircuitId,
        IdentifierType::ClientId,
        IdentifierType::FlexId,
    ];

    /// The name in Kea's configuration.
    pub fn name(self) -> &'static str {
        match self {
            IdentifierType::HwAddress => "hw-address",
            IdentifierType::Duid => "duid",
            IdentifierType::CircuitId => "circuit-id",
            IdentifierType::ClientId => "client-id",
            IdentifierType::FlexId => "flex-id",
        }
    }

    fn from_name(name: &str) -> Option<IdentifierType> {
        IdentifierType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The order Kea looks reservations up in when `host-reservation-identifiers` is not
    /// given (`CfgHostOperations::createConfig4` / `createConfig6`, Kea 2.2): DHCPv4
    /// hw-address, duid, circuit-id, client-id; DHCPv6 hw-address, duid.
    pub fn default_order(family: Family) -> Vec<IdentifierType> {
        use IdentifierType::*;
        match family {
            Family::V4 => vec![HwAddress, Duid, CircuitId, ClientId],
            Family::V6 => vec![HwAddress, Duid],
        }
    }
}

/// A `subnet4` / `subnet6` entry (also inside `shared-networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeaSubnet {
    /// `id`; Kea 2.2 numbers a subnet without one itself.
    pub id: Option<u32>,
    pub network: IpAddr,
    pub prefix_len: u8,
    /// Address pools (`pools`; not `pd-pools`).
    pub pools: Vec<KeaPool>,
    pub interface: Option<String>,
    /// The shared network it is in.
    pub shared_network: Option<String>,
}

impl KeaSubnet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        prefix_contains(self.network, self.prefix_len, ip)
    }
}

/// An address pool: `"10.0.0.10 - 10.0.0.100"` or `"10.0.0.0/28"`, as first and last address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeaPool {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl KeaPool {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.first, self.last, ip) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x)) => a <= x && x <= b,
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(x)) => a <= x && x <= b,
            _ => false,
        }
    }
}

/// One host reservation. Kea takes exactly one identifier per reservation; the others are
/// `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeaReservation {
    /// The subnet it belongs to; `None` for a global reservation (`Dhcp4.reservations`) or one
    /// in a subnet without an `id`.
    pub subnet_id: Option<u32>,
    /// A global reservation (Kea 2.2 uses them only with `reservations-global` true).
    pub global: bool,
    pub hw_address: Option<Vec<u8>>,
    pub client_id: Option<Vec<u8>>,
    pub duid: Option<Vec<u8>>,
    pub circuit_id: Option<Vec<u8>>,
    pub flex_id: Option<Vec<u8>>,
    /// `ip-address` (DHCPv4) or `ip-addresses` (DHCPv6).
    pub ip_addresses: Vec<IpAddr>,
    /// `prefixes` (DHCPv6), as written.
    pub prefixes: Vec<String>,
    pub hostname: Option<String>,
    /// Where it is, for reports: `Dhcp4/subnet4[id 1]/reservations[0]`.
    pub source: String,
}

impl KeaReservation {
    /// Its identifier: type and bytes.
    pub fn identifier(&self) -> Option<(IdentifierType, &[u8])> {
        use IdentifierType::*;
        [
            (HwAddress, &self.hw_address),
            (Duid, &self.duid),
            (CircuitId, &self.circuit_id),
            (ClientId, &self.client_id),
            (FlexId, &self.flex_id),
        ]
        .into_iter()
        .find_map(|(kind, value)| value.as_deref().map(|v| (kind, v)))
    }
}

/// What the agent needs from one Kea server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeaConfig {
    pub family: Family,
    /// `interfaces-config.interfaces`, as written (`eth0`, `eth0/10.0.0.1`, `*`).
    pub interfaces: Vec<String>,
    /// The unix socket of `control-socket` (`socket-type` unix).
    pub control_socket: Option<PathBuf>,
    /// The memfile's `name` as configured; `None` when not given: Kea then uses
    /// [`Family::default_lease_file`]. [`KeaConfig::lease_file_path`] resolves it.
    pub lease_file: Option<PathBuf>,
    pub lease_database: LeaseDatabase,
    /// `hooks-libraries` has `libdhcp_lease_cmds.so`.
    pub lease_cmds_loaded: bool,
    pub subnets: Vec<KeaSubnet>,
    /// Every reservation: global, per subnet and per subnet of a shared network, in file
    /// order.
    pub reservations: Vec<KeaReservation>,
    /// The order Kea looks reservations up in (configured, or Kea's default).
    pub host_reservation_identifiers: Vec<IdentifierType>,
    /// What was read but is not understood, or not used (a control socket that is not unix).
    pub notes: Vec<String>,
}

impl KeaConfig {
    /// The file Kea writes its leases to: the memfile's `name`, or Kea's default; `None` when
    /// leases are not persisted or not in a memfile.
    pub fn lease_file_path(&self) -> Option<PathBuf> {
        match self.lease_database {
            LeaseDatabase::Memfile { persist: true, .. } => Some(
                self.lease_file
                    .clone()
                    .unwrap_or_else(|| self.family.default_lease_file().to_owned()),
            ),
            _ => None,
        }
    }

    /// Kea listens on `lo` (alone or as `lo/ADDRESS`; Kea's `*` leaves loopback out).
    pub fn listens_on_loopback(&self) -> bool {
        self.interfaces
            .iter()
            .any(|i| i == "lo" || i.starts_with("lo/"))
    }

    /// The subnet with this id.
    pub fn subnet(&self, id: u32) -> Option<&KeaSubnet> {
        self.subnets.iter().find(|s| s.id == Some(id))
    }

    /// The subnet an address is in (the first that contains it).
    pub fn subnet_of(&self, ip: IpAddr) -> Option<&KeaSubnet> {
        self.subnets.iter().find(|s| s.contains(ip))
    }

    /// The reservations Kea looks up (their type is in `host-reservation-identifiers`) whose
    /// client a lease cannot be matched to: `circuit-id` (a relay option the lease does not
    /// keep), `flex-id`, and a DHCPv4 `duid` (inside a client id with an IAID the lease does
    /// not let us rebuild). Their clients are declared all the same, so their addresses are
    /// never orphans ([`KeaConfig::address_plan`]).
    pub fn unmatchable_reservations(&self) -> impl Iterator<Item = &KeaReservation> {
        self.reservations.iter().filter(|r| {
            r.identifier().is_some_and(|(kind, _)| {
                self.host_reservation_identifiers.contains(&kind)
                    && !matches!(
                        (kind, self.family),
                        (IdentifierType::HwAddress, _)
                            | (IdentifierType::ClientId, Family::V4)
                            | (IdentifierType::Duid, Family::V6)
                    )
            })
        })
    }

    /// Kea's DHCPv4 subnets and pools in the terms reconciliation reads
    /// ([`DnsmasqConfig::is_static_only`]): Kea gives an unknown client an address from a
    /// pool only, and one of its subnet outside every pool to a client with a reservation
    /// only. So each subnet is a `static` range over the whole subnet, each pool a dynamic
    /// range: an undeclared lease outside the pools is an orphan, one inside them a dynamic
    /// lease, as it is for dnsmasq. The address of a reservation whose client cannot be
    /// recognised ([`KeaConfig::unmatchable_reservations`]) is a dynamic range of its own: its
    /// lease is never judged an orphan, on the safe side.
    pub fn address_plan(&self) -> DnsmasqConfig {
        let mut plan = DnsmasqConfig::default();
        for subnet in &self.subnets {
            let IpAddr::V4(network) = subnet.network else {
                continue;
            };
            let netmask = Ipv4Addr::from(
                u32::MAX
                    .checked_shl(32 - u32::from(subnet.prefix_len))
                    .unwrap_or(0),
            );
            let tag = format!(
                "subnet {}",
                subnet.id.map_or("?".into(), |id| id.to_string())
            );
            let whole = DhcpRange {
                start: network,
                end: None,
                netmask: Some(netmask),
            };
            plan.ranges.push(whole.clone());
            plan.range_lines.push(RangeLine {
                range: whole,
                mode: RangeMode::Static,
                tags: vec![tag.clone()],
            });
            for pool in &subnet.pools {
                if let (IpAddr::V4(first), IpAddr::V4(last)) = (pool.first, pool.last) {
                    let range = DhcpRange {
                        start: first,
                        end: Some(last),
                        netmask: Some(netmask),
                    };
                    plan.ranges.push(range.clone());
                    plan.range_lines.push(RangeLine {
                        range,
                        mode: RangeMode::Dynamic,
                        tags: vec![tag.clone()],
                    });
                }
            }
        }
        for reservation in self.unmatchable_reservations() {
            for ip in &reservation.ip_addresses {
                if let IpAddr::V4(ip) = *ip {
                    plan.ranges.push(DhcpRange {
                        start: ip,
                        end: Some(ip),
                        netmask: None,
                    });
                }
            }
        }
        plan
    }
}

#[derive(Debug, Error)]
pub enum KeaConfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: comment not closed (/* without */)")]
    CommentNotClosed { line: usize },
    #[error("line {line}: bad directive (want <?include \"file\"?>)")]
    BadDirective { line: usize },
    #[error("{0}: includes nest deeper than {MAX_INCLUDE_DEPTH} (a loop?)")]
    TooDeep(PathBuf),
    /// Not JSON once comments are gone (line and column in the text with includes expanded).
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("neither a Dhcp4 nor a Dhcp6 object at the top level")]
    NoServer,
    #[error("both Dhcp4 and Dhcp6 at the top level: say which server")]
    BothServers,
    #[error("{at}: {reason}")]
    Bad { at: String, reason: String },
}

fn bad(at: &str, reason: impl Into<String>) -> KeaConfError {
    KeaConfError::Bad {
        at: at.to_owned(),
        reason: reason.into(),
    }
}

/// Reads Kea's configuration text: the one server object it has (`Dhcp4` or `Dhcp6`).
pub fn parse(text: &str, files: &dyn ConfFiles) -> Result<KeaConfig, KeaConfError> {
    let value = json(text, None, files)?;
    the_one_server(&value)
}

/// The one server object a configuration has (`Dhcp4` or `Dhcp6`), read.
fn the_one_server(value: &Value) -> Result<KeaConfig, KeaConfError> {
    let family = match (value.get("Dhcp4").is_some(), value.get("Dhcp6").is_some()) {
        (true, false) => Family::V4,
        (false, true) => Family::V6,
        (true, true) => return Err(KeaConfError::BothServers),
        (false, false) => return Err(KeaConfError::NoServer),
    };
    from_value(value, family)
}

/// Reads one server's part of a configuration that may have both.
pub fn parse_family(
    text: &str,
    family: Family,
    files: &dyn ConfFiles,
) -> Result<KeaConfig, KeaConfError> {
    from_value(&json(text, None, files)?, family)
}

/// Reads the configuration file at `path` (relative includes from its directory).
pub fn load(path: &Path, files: &dyn ConfFiles) -> Result<KeaConfig, KeaConfError> {
    let text = files.read(path).map_err(|source| KeaConfError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value = json(&text, Some(path), files)?;
    the_one_server(&value)
}

/// The text as plain JSON: comments blanked (newlines kept, so serde_json's line numbers are
/// the file's where there are no includes), includes expanded.
pub fn strip_comments(text: &str, files: &dyn ConfFiles) -> Result<String, KeaConfError> {
    let mut out = String::with_capacity(text.len());
    expand(text, None, files, 0, &mut out)?;
    Ok(out)
}

fn json(text: &str, path: Option<&Path>, files: &dyn ConfFiles) -> Result<Value, KeaConfError> {
    let mut out = String::with_capacity(text.len());
    expand(text, path, files, 0, &mut out)?;
    Ok(serde_json::from_str(&out)?)
}

/// Kea's lexer's view of the text: strings (with `\` escapes) copied whole; `#` and `//` to
/// the end of the line, `/* */` blanked; `<?include "file"?>` replaced by the file's text,
/// itself scanned the same way.
fn expand(
    text: &str,
    path: Option<&Path>,
    files: &dyn ConfFiles,
    depth: usize,
    out: &mut String,
) -> Result<(), KeaConfError> {
    let bytes = text.as_bytes();
    let line_at = |at: usize| 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
    let mut at = 0;
    // Copies `text[from..to]` with everything but newlines turned to spaces.
    let blank = |out: &mut String, from: usize, to: usize| {
        out.extend(
            text[from..to]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
    };
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let mut end = at + 1;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let end = (end + 1).min(bytes.len());
                out.push_str(&text[at..end]);
                at = end;
            }
            b'#' => {
                let end = text[at..].find('\n').map_or(bytes.len(), |n| at + n);
                blank(out, at, end);
                at = end;
            }
            b'/' if bytes.get(at + 1) == Some(&b'/') => {
                let end = text[at..].find('\n').map_or(bytes.len(), |n| at + n);
                blank(out, at, end);
                at = end;
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                let end = text[at + 2..]
                    .find("*/")
                    .map(|n| at + 2 + n + 2)
                    .ok_or(KeaConfError::CommentNotClosed { line: line_at(at) })?;
                blank(out, at, end);
                at = end;
            }
            b'<' if bytes.get(at + 1) == Some(&b'?') => {
                let (file, end) =
                    directive(text, at).ok_or(KeaConfError::BadDirective { line: line_at(at) })?;
                let target = match path.and_then(Path::parent) {
                    Some(dir) if Path::new(file).is_relative() => dir.join(file),
                    _ => PathBuf::from(file),
                };
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(KeaConfError::TooDeep(target));
                }
                let included = files.read(&target).map_err(|source| KeaConfError::Read {
                    path: target.clone(),
                    source,
                })?;
                expand(&included, Some(&target), files, depth + 1, out)?;
                // Keep the lines after the directive where they were.
                blank(out, at, end);
                at = end;
            }
            _ => {
                let next = text[at..]
                    .find(['"', '#', '/', '<'])
                    .map_or(bytes.len(), |n| at + n);
                let next = if next == at { at + 1 } else { next };
                // `next` is at an ASCII byte or the end, so a char boundary; a lone `/` or `<`
                // is copied by itself.
                let next = (at + 1..=next)
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(bytes.len());
                out.push_str(&text[at..next]);
                at = next;
            }
        }
    }
    Ok(())
}

/// `<?include "file"?>` at `at` (blanks allowed between the parts, as Kea's `<*>{blank}+`):
/// the file name and the end of the directive.
fn directive(text: &str, at: usize) -> Option<(&str, usize)> {
    let rest = text[at + 2..].trim_start();
    let rest = rest.strip_prefix("include")?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let close = rest.find(['"', '\n'])?;
    let (file, after) = rest.split_at(close);
    let after = after.strip_prefix('"')?;
    if file.is_empty() {
        return None;
    }
    let after_blanks = after.trim_start();
    let tail = after_blanks.strip_prefix("?>")?;
    Some((file, text.len() - tail.len()))
}

fn from_value(root: &Value, family: Family) -> Result<KeaConfig, KeaConfError> {
    let key = family.key();
    let server = root.get(key).ok_or(KeaConfError::NoServer)?;
    let server = object(server, key)?;
    let mut notes = Vec::new();
    let at = |name: &str| format!("{key}/{name}");

    let interfaces = match server.get("interfaces-config") {
        Some(config) => {
            let config = object(config, &at("interfaces-config"))?;
            match config.get("interfaces") {
                Some(list) => strings(list, &at("interfaces-config/interfaces"))?,
                None => Vec::new(),
            }
        }
        None => Vec::new(),
    };

    let control_socket = match server.get("control-socket") {
        Some(socket) => {
            let here = at("control-socket");
            let socket = object(socket, &here)?;
            let kind = opt_str(socket.get("socket-type"), &format!("{here}/socket-type"))?;
            let name = opt_str(socket.get("socket-name"), &format!("{here}/socket-name"))?;
            match (kind, name) {
                (Some("unix") | None, Some(name)) => Some(PathBuf::from(name)),
                (Some(other), _) => {
                    notes.push(format!(
                        "{here}: socket-type {other:?} is not a unix socket"
                    ));
                    None
                }
                (_, None) => {
                    notes.push(format!("{here}: no socket-name"));
                    None
                }
            }
        }
        None => None,
    };

    let (lease_database, lease_file) = lease_database(server.get("lease-database"), key)?;

    let lease_cmds_loaded = match server.get("hooks-libraries") {
        Some(hooks) => {
            let here = at("hooks-libraries");
            let mut loaded = false;
            for (i, hook) in array(hooks, &here)?.iter().enumerate() {
                let hook_at = format!("{here}[{i}]");
                let library = opt_str(object(hook, &hook_at)?.get("library"), &hook_at)?
                    .ok_or_else(|| bad(&hook_at, "no library"))?;
                loaded |= Path::new(library)
                    .file_name()
                    .is_some_and(|n| n == LEASE_CMDS_LIBRARY);
            }
            loaded
        }
        None => false,
    };

    let host_reservation_identifiers = match server.get("host-reservation-identifiers") {
        Some(list) => {
            let here = at("host-reservation-identifiers");
            strings(list, &here)?
                .iter()
                .map(|name| {
                    IdentifierType::from_name(name)
                        .ok_or_else(|| bad(&here, format!("unknown identifier {name:?}")))
                })
                .collect::<Result<_, _>>()?
        }
        None => IdentifierType::default_order(family),
    };

    let mut config = KeaConfig {
        family,
        interfaces,
        control_socket,
        lease_file,
        lease_database,
        lease_cmds_loaded,
        subnets: Vec::new(),
        reservations: Vec::new(),
        host_reservation_identifiers,
        notes,
    };
    if let Some(list) = server.get("reservations") {
        reservations(list, &at("reservations"), None, true, family, &mut config)?;
    }
    if let Some(list) = server.get(family.subnets_key()) {
        subnets(list, &at(family.subnets_key()), None, family, &mut config)?;
    }
    if let Some(networks) = server.get("shared-networks") {
        let here = at("shared-networks");
        for (i, network) in array(networks, &here)?.iter().enumerate() {
            let net_at = format!("{here}[{i}]");
            let network = object(network, &net_at)?;
            let name = opt_str(network.get("name"), &format!("{net_at}/name"))?;
            if let Some(list) = network.get(family.subnets_key()) {
                let sub_at = format!("{net_at}/{}", family.subnets_key());
                subnets(list, &sub_at, name, family, &mut config)?;
            }
        }
    }
    Ok(config)
}

fn lease_database(
    value: Option<&Value>,
    key: &str,
) -> Result<(LeaseDatabase, Option<PathBuf>), KeaConfError> {
    let here = format!("{key}/lease-database");
    // Kea's default lease database is a persisted memfile at the default path.
    let Some(value) = value else {
        return Ok((
            LeaseDatabase::Memfile {
                persist: true,
                lfc_interval: None,
            },
            None,
        ));
    };
    let database = object(value, &here)?;
    let kind = opt_str(database.get("type"), &format!("{here}/type"))?.unwrap_or("memfile");
    if kind != "memfile" {
        return Ok((LeaseDatabase::Other(kind.to_owned()), None));
    }
    let persist = match database.get("persist") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad(&format!("{here}/persist"), "not a boolean")),
    };
    let lfc_interval = match database.get("lfc-interval") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| bad(&format!("{here}/lfc-interval"), "not a number"))?,
        ),
    };
    let name = opt_str(database.get("name"), &format!("{here}/name"))?.map(PathBuf::from);
    Ok((
        LeaseDatabase::Memfile {
            persist,
            lfc_interval,
        },
        name,
    ))
}

fn subnets(
    list: &Value,
    here: &str,
    shared_network: Option<&str>,
    family: Family,
    config: &mut KeaConfig,
) -> Result<(), KeaConfError> {
    for (i, subnet) in array(list, here)?.iter().enumerate() {
        let mut sub_at = format!("{here}[{i}]");
        let subnet = object(subnet, &sub_at)?;
        let id = match subnet.get("id") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad(&format!("{sub_at}/id"), "not a subnet id"))?,
            ),
        };
        if let Some(id) = id {
            sub_at = format!("{here}[id {id}]");
        }
        let prefix = opt_str(subnet.get("subnet"), &format!("{sub_at}/subnet"))?
            .ok_or_else(|| bad(&sub_at, "no subnet"))?;
        let (network, prefix_len) = parse_prefix(prefix, family).ok_or_else(|| {
            bad(
                &format!("{sub_at}/subnet"),
                format!("bad prefix {prefix:?}"),
            )
        })?;
        let mut pools = Vec::new();
        if let Some(list) = subnet.get("pools") {
            let pools_at = format!("{sub_at}/pools");
            for (j, pool) in array(list, &pools_at)?.iter().enumerate() {
                let pool_at = format!("{pools_at}[{j}]");
                let text = opt_str(object(pool, &pool_at)?.get("pool"), &pool_at)?
                    .ok_or_else(|| bad(&pool_at, "no pool"))?;
                pools.push(
                    parse_pool(text, family)
                        .ok_or_else(|| bad(&pool_at, format!("bad pool {text:?}")))?,
                );
            }
        }
        let interface =
            opt_str(subnet.get("interface"), &format!("{sub_at}/interface"))?.map(str::to_owned);
        config.subnets.push(KeaSubnet {
            id,
            network,
            prefix_len,
            pools,
            interface,
            shared_network: shared_network.map(str::to_owned),
        });
        if let Some(list) = subnet.get("reservations") {
            reservations(
                list,
                &format!("{sub_at}/reservations"),
                id,
                false,
                family,
                config,
            )?;
        }
    }
    Ok(())
}

fn reservations(
    list: &Value,
    here: &str,
    subnet_id: Option<u32>,
    global: bool,
    family: Family,
    config: &mut KeaConfig,
) -> Result<(), KeaConfError> {
    for (i, entry) in array(list, here)?.iter().enumerate() {
        let res_at = format!("{here}[{i}]");
        let entry = object(entry, &res_at)?;
        let mut reservation = KeaReservation {
            subnet_id,
            global,
            source: res_at.clone(),
            ..KeaReservation::default()
        };
        let mut identifiers = 0;
        for kind in IdentifierType::ALL {
            let Some(value) = entry.get(kind.name()) else {
                continue;
            };
            let field_at = format!("{res_at}/{}", kind.name());
            // The DHCPv6 parser knows no client-id or circuit-id (`getSupportedParameters6`).
            if family == Family::V6
                && matches!(kind, IdentifierType::ClientId | IdentifierType::CircuitId)
            {
                return Err(bad(&field_at, "not a DHCPv6 reservation identifier"));
            }
            let text = value
                .as_str()
                .ok_or_else(|| bad(&field_at, "not a string"))?;
            let bytes = identifier_bytes(text)
                .ok_or_else(|| bad(&field_at, format!("invalid host identifier value {text:?}")))?;
            identifiers += 1;
            let slot = match kind {
                IdentifierType::HwAddress => &mut reservation.hw_address,
                IdentifierType::Duid => &mut reservation.duid,
                IdentifierType::CircuitId => &mut reservation.circuit_id,
                IdentifierType::ClientId => &mut reservation.client_id,
                IdentifierType::FlexId => &mut reservation.flex_id,
            };
            *slot = Some(bytes);
        }
        match identifiers {
            0 => return Err(bad(&res_at, "no host identifier")),
            1 => {}
            _ => return Err(bad(&res_at, "host identifiers are mutually exclusive")),
        }
        reservation.hostname = opt_str(entry.get("hostname"), &format!("{res_at}/hostname"))?
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        match family {
            Family::V4 => {
                if let Some(text) =
                    opt_str(entry.get("ip-address"), &format!("{res_at}/ip-address"))?
                {
                    let ip: Ipv4Addr = text.parse().map_err(|_| {
                        bad(
                            &format!("{res_at}/ip-address"),
                            format!("bad address {text:?}"),
                        )
                    })?;
                    reservation.ip_addresses.push(IpAddr::V4(ip));
                }
            }
            Family::V6 => {
                if let Some(list) = entry.get("ip-addresses") {
                    let list_at = format!("{res_at}/ip-addresses");
                    for text in strings(list, &list_at)? {
                        let ip: std::net::Ipv6Addr = text
                            .parse()
                            .map_err(|_| bad(&list_at, format!("bad address {text:?}")))?;
                        reservation.ip_addresses.push(IpAddr::V6(ip));
                    }
                }
                if let Some(list) = entry.get("prefixes") {
                    reservation.prefixes = strings(list, &format!("{res_at}/prefixes"))?;
                }
            }
        }
        config.reservations.push(reservation);
    }
    Ok(())
}

/// A host identifier as Kea reads it (`Host::setIdentifier`): `'text'` in single quotes (its
/// bytes, trimmed), else hex (`decodeFormattedHexString`): octets of one or two digits
/// separated by `:` (or by spaces), or a run of digits (an odd count gets a leading 0, a `0x`
/// prefix is allowed).
pub fn identifier_bytes(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim();
    if trimmed.len() > 1 && trimmed.starts_with('\'') && trimmed.ends_with('\'') {
        let inner = trimmed[1..trimmed.len() - 1].trim();
        if !inner.is_empty() {
            return Some(inner.as_bytes().to_vec());
        }
    }
    if text.is_empty() {
        return None;
    }
    let separated = |sep: char| -> Option<Vec<u8>> {
        let parts: Vec<&str> = text.split(sep).collect();
        let mut out = Vec::new();
        for part in &parts {
            if part.is_empty() {
                if parts.len() > 1 {
                    return None;
                }
                continue;
            }
            if part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(part, 16).ok()?);
        }
        Some(out)
    };
    let bytes = if text.contains(':') {
        separated(':')?
    } else if text.contains(' ') {
        separated(' ')?
    } else {
        let digits = match text.strip_prefix("0x") {
            Some(rest) if text.len() > 2 => rest,
            _ => text,
        };
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits.to_owned()
        };
        if !padded.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        (0..padded.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    };
    // Kea refuses an empty identifier.
    (!bytes.is_empty()).then_some(bytes)
}

fn parse_prefix(text: &str, family: Family) -> Option<(IpAddr, u8)> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: IpAddr = addr.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok()?;
    let max = match (family, addr) {
        (Family::V4, IpAddr::V4(_)) => 32,
        (Family::V6, IpAddr::V6(_)) => 128,
        _ => return None,
    };
    (len <= max).then_some((addr, len))
}

/// `first - last` or `prefix/len` (Kea's `PoolParser`).
fn parse_pool(text: &str, family: Family) -> Option<KeaPool> {
    if let Some((first, last)) = text.split_once('-') {
        let first: IpAddr = first.trim().parse().ok()?;
        let last: IpAddr = last.trim().parse().ok()?;
        let same = matches!(
            (family, first, last),
            (Family::V4, IpAddr::V4(_), IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_), IpAddr::V6(_))
        );
        return (same && first <= last).then_some(KeaPool { first, last });
    }
    let (network, len) = parse_prefix(text, family)?;
    Some(match network {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let base = u32::from(a) & mask;
            KeaPool {
                first: IpAddr::V4(base.into()),
                last: IpAddr::V4((base | !mask).into()),
            }
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let base = u128::from(a) & mask;
            KeaPool {
                first: IpAddr::V6(base.into()),
                last: IpAddr::V6((base | !mask).into()),
            }
        }
    })
}

fn prefix_contains(network: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(x)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(x) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(x)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(x) & mask
        }
        _ => false,
    }
}

fn object<'v>(
    value: &'v Value,
    at: &str,
) -> Result<&'v serde_json::Map<String, Value>, KeaConfError> {
    value.as_object().ok_or_else(|| bad(at, "not an object"))
}

fn array<'v>(value: &'v Value, at: &str) -> Result<&'v Vec<Value>, KeaConfError> {
    value.as_array().ok_or_else(|| bad(at, "not a list"))
}

fn opt_str<'v>(value: Option<&'v Value>, at: &str) -> Result<Option<&'v str>, KeaConfError> {
    match value {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| bad(at, "not a string")),
    }
}

fn strings(value: &Value, at: &str) -> Result<Vec<String>, KeaConfError> {
    array(value, at)?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(at, "not a list of strings"))
        })
        .collect()
}

impl DeclaredHosts {
    /// Kea's reservations as declared hosts, for reconciliation: a lease is declared when a
    /// reservation's identifier is its client's, as Kea finds a client's reservation.
    ///
    /// Kea looks a client's reservation up by each identifier type in
    /// `host-reservation-identifiers` order, the first found winning (default, Kea 2.2
    /// `CfgHostOperations::createConfig4/6`: DHCPv4 hw-address, duid, circuit-id, client-id;
    /// DHCPv6 hw-address, duid), each reservation having exactly one identifier. Whether a
    /// client has *a* reservation does not depend on that order, only on which types are
    /// listed: a reservation of a type left out of the list is never used, and is not taken
    /// here. The identifiers a lease keeps are matched: `hw-address` against the lease's
    /// hardware address (any hardware type, as Kea compares the bytes only), `client-id` (v4)
    /// against its client identifier, `duid` (v6) against its DUID. A DHCPv4 `duid`
    /// reservation matches the DUID inside an RFC 4361 client identifier (type 255, IAID,
    /// DUID: `Dhcpv4Exchange::setHostIdentifiers`), which a lease does not let us rebuild
    /// without the IAID; those, `circuit-id` (a relay option the lease does not keep) and
    /// `flex-id` reservations are listed in `problems` and match nothing.
    ///
    /// One difference with Kea is on the safe side: a host line's client id also matches an id
    /// with dhcpcd's extra zero byte before it (dnsmasq's rule), which Kea does not do; such a
    /// client counts as declared, never as an orphan.
    pub fn from_kea(config: &KeaConfig) -> DeclaredHosts {
        let mut declared = DeclaredHosts::default();
        let used = |kind: IdentifierType| config.host_reservation_identifiers.contains(&kind);
        for reservation in &config.reservations {
            let Some((kind, bytes)) = reservation.identifier() else {
                continue;
            };
            let mut line = HostLine::empty(reservation.source.clone());
            if !used(kind) {
                declared.problems.push(format!(
                    "{}: a {} reservation, but host-reservation-identifiers does not list {}: \
                     Kea never uses it",
                    reservation.source,
                    kind.name(),
                    kind.name()
                ));
                continue;
            }
            match (kind, config.family) {
                (IdentifierType::HwAddress, _) => line.macs.push(MacPattern {
                    htype: None,
                    bytes: bytes.iter().copied().map(Some).collect(),
                }),
                (IdentifierType::ClientId, Family::V4) | (IdentifierType::Duid, Family::V6) => {
                    line.client_id = Some(ClientIdMatch::Id(bytes.to_vec()));
                }
                // `KeaConfig::unmatchable_reservations`: its address is kept from orphans.
                _ => {
                    declared.problems.push(format!(
                        "{}: a {} reservation is not matched to leases (the lease file does \
                         not keep what Kea matches it on); its address is never an orphan",
                        reservation.source,
                        kind.name()
                    ));
                    continue;
                }
            }
            for ip in &reservation.ip_addresses {
                match ip {
                    IpAddr::V4(ip) => line.ip = Some(*ip),
                    IpAddr::V6(ip) => line.ipv6.push(format!("[{ip}]")),
                }
            }
            if let Some(name) = &reservation.hostname {
                let (label, domain) = match name.split_once('.') {
                    Some((label, domain)) => {
                        (label, (!domain.is_empty()).then(|| domain.to_owned()))
                    }
                    None => (name.as_str(), None),
                };
                line.hostname = Some(label.to_owned());
                line.domain = domain;
            }
            declared.hosts.push(line);
        }
        declared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dnsmasq_conf::MemoryFiles,
        leases::{Expiry, Lease},
    };

    /// Accepted by `kea-dhcp4 -t` (Kea 2.2.0): see `dhcp-engine/tests/kea_conf_real.rs`.
    pub(crate) const SAMPLE4: &str = include_str!("../tests/kea/kea-dhcp4.conf");
    pub(crate) const SAMPLE6: &str = include_str!("../tests/kea/kea-dhcp6.conf");

    fn files() -> MemoryFiles {
        MemoryFiles::default()
    }

    #[test]
    fn the_v4_sample_reads_whole() {
        let config = parse(SAMPLE4, &files()).unwrap();
        assert_eq!(config.family, Family::V4);
        assert_eq!(config.interfaces, ["lo"]);
        assert!(config.listens_on_loopback());
        assert_eq!(
            config.control_socket.as_deref(),
            Some(Path::new("/run/kea/kea4-ctrl-socket"))
        );
        assert_eq!(
            config.lease_file_path().as_deref(),
            Some(Path::new("/var/lib/kea/kea-leases4.csv"))
        );
        assert_eq!(config.lease_file, None, "no name: Kea's default");
        assert_eq!(
            config.lease_database,
            LeaseDatabase::Memfile {
                persist: true,
                lfc_interval: Some(3600)
            }
        );
        assert!(config.lease_cmds_loaded);
        let ids: Vec<Option<u32>> = config.subnets.iter().map(|s| s.id).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
        let first = config.subnet(1).unwrap();
        assert_eq!(first.prefix_len, 24);
        assert_eq!(
            first.pools,
            [KeaPool {
                first: "172.29.101.100".parse().unwrap(),
                last: "172.29.101.200".parse().unwrap()
            }]
        );
        let shared = config.subnet(3).unwrap();
        assert_eq!(shared.shared_network.as_deref(), Some("guests"));
        assert_eq!(
            shared.pools[0],
            KeaPool {
                first: "172.29.103.16".parse().unwrap(),
                last: "172.29.103.31".parse().unwrap()
            }
        );
        assert_eq!(
            config
                .subnet_of("172.29.102.7".parse().unwrap())
                .and_then(|s| s.id),
            Some(2)
        );
        let sources: Vec<(&str, Option<u32>, bool)> = config
            .reservations
            .iter()
            .map(|r| (r.source.as_str(), r.subnet_id, r.global))
            .collect();
        assert_eq!(
            sources,
            [
                ("Dhcp4/reservations[0]", None, true),
                ("Dhcp4/subnet4[id 1]/reservations[0]", Some(1), false),
                ("Dhcp4/subnet4[id 1]/reservations[1]", Some(1), false),
                ("Dhcp4/subnet4[id 1]/reservations[2]", Some(1), false),
                ("Dhcp4/subnet4[id 1]/reservations[3]", Some(1), false),
                (
                    "Dhcp4/shared-networks[0]/subnet4[id 3]/reservations[0]",
                    Some(3),
                    false
                ),
            ]
        );
        let vm = &config.reservations[1];
        assert_eq!(
            vm.hw_address.as_deref(),
            Some(&[0x52, 0x54, 0, 0x10, 0, 1][..])
        );
        assert_eq!(
            vm.ip_addresses,
            ["172.29.101.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(vm.hostname.as_deref(), Some("i-2-50-VM"));
        assert_eq!(
            config.reservations[2].client_id.as_deref(),
            Some(&[1, 0x52, 0x54, 0, 0x10, 0, 2][..])
        );
        assert_eq!(
            config.reservations[3].circuit_id.as_deref(),
            Some(&b"port-7"[..])
        );
        assert_eq!(
            config.reservations[4].duid.as_deref(),
            Some(&[0, 1, 0xab][..])
        );
        assert_eq!(
            config.host_reservation_identifiers,
            IdentifierType::default_order(Family::V4)
        );
    }

    #[test]
    fn the_v6_sample_reads_whole() {
        let config = parse(SAMPLE6, &files()).unwrap();
        assert_eq!(config.family, Family::V6);
        assert_eq!(
            config.lease_file_path().as_deref(),
            Some(Path::new("/var/lib/kea/leases6.csv"))
        );
        assert!(!config.lease_cmds_loaded);
        assert_eq!(config.control_socket, None);
        let subnet = config.subnet(9).unwrap();
        assert!(subnet.contains("fd00:77::1".parse().unwrap()));
        assert_eq!(subnet.interface.as_deref(), Some("lo"));
        let [by_duid, by_mac] = &config.reservations[..] else {
            panic!("{:?}", config.reservations)
        };
        assert_eq!(by_duid.duid.as_deref(), Some(&[0, 1, 0, 1, 0x32, 0xa3][..]));
        assert_eq!(
            by_duid.ip_addresses,
            [
                "fd00:77::10".parse::<IpAddr>().unwrap(),
                "fd00:77::11".parse().unwrap()
            ]
        );
        assert_eq!(by_duid.prefixes, ["fd00:7701::/56"]);
        assert_eq!(
            by_mac.hw_address.as_deref(),
            Some(&[0x52, 0x54, 0, 0x77, 0, 1][..])
        );
        assert_eq!(
            config.host_reservation_identifiers,
            [IdentifierType::Duid, IdentifierType::HwAddress]
        );
    }

    #[test]
    fn comments_are_kea_lexers_and_strings_keep_theirs() {
        let text = "# hash\n{ // slashes\n \"Dhcp4\": { /* a\n block */ \"interfaces-config\": \
                    { \"interfaces\": [ \"a#b\", \"c//d\", \"e/*f*/\", \"g\\\"#h\" ] } } }\n# end";
        let config = parse(text, &files()).unwrap();
        assert_eq!(config.interfaces, ["a#b", "c//d", "e/*f*/", "g\"#h"]);
        // Newlines stay, so serde_json's line numbers are the file's.
        let stripped = strip_comments(text, &files()).unwrap();
        assert_eq!(stripped.lines().count(), text.lines().count());
        assert!(matches!(
            parse("{ /* never closed\n\n", &files()),
            Err(KeaConfError::CommentNotClosed { line: 1 })
        ));
        assert!(matches!(parse("{", &files()), Err(KeaConfError::Json(_))));
        assert!(matches!(parse("{}", &files()), Err(KeaConfError::NoServer)));
        assert!(matches!(
            parse(r#"{"Dhcp4": {}, "Dhcp6": {}}"#, &files()),
            Err(KeaConfError::BothServers)
        ));
        let both = parse_family(r#"{"Dhcp4": {}, "Dhcp6": {}}"#, Family::V6, &files()).unwrap();
        assert_eq!(both.family, Family::V6);
        // Non-ASCII text outside strings does not trip the scanner.
        assert!(matches!(
            parse("{ é }", &files()),
            Err(KeaConfError::Json(_))
        ));
    }

    #[test]
    fn includes_are_expanded_in_place() {
        let files = MemoryFiles::default()
            .with(
                "/etc/kea/subnets.json",
                "[ { \"id\": 4, \"subnet\": \"10.0.0.0/8\" } ] // c",
            )
            .with("/etc/kea/hooks.json", "<?include \"/etc/kea/hook.json\"?>")
            .with(
                "/etc/kea/hook.json",
                "[{ \"library\": \"/usr/lib/x86_64-linux-gnu/kea/hooks/libdhcp_lease_cmds.so\" }]",
            )
            .with(
                "/etc/kea/kea-dhcp4.conf",
                "{ \"Dhcp4\": { \"subnet4\": <?include \"subnets.json\"?>,\n\
                 \"hooks-libraries\": <? include \"hooks.json\" ?> } }",
            )
            .with("/loop.json", "<?include \"/loop.json\"?>");
        let config = load(Path::new("/etc/kea/kea-dhcp4.conf"), &files).unwrap();
        assert_eq!(config.subnets[0].id, Some(4));
        assert!(config.lease_cmds_loaded);
        assert!(matches!(
            parse("<?include \"/missing.json\"?>", &files),
            Err(KeaConfError::Read { .. })
        ));
        assert!(matches!(
            parse("<?include \"/loop.json\"?>", &files),
            Err(KeaConfError::TooDeep(_))
        ));
        for bad_directive in [
            "<?include x?>",
            "<?include \"a\"",
            "<?inc \"a\"?>",
            "<?include \"\"?>",
        ] {
            assert!(
                matches!(
                    parse(bad_directive, &files),
                    Err(KeaConfError::BadDirective { line: 1 })
                ),
                "{bad_directive}"
            );
        }
    }

    #[test]
    fn identifiers_read_as_kea_reads_them() {
        for (text, bytes) in [
            ("52:54:00:10:00:01", &[0x52, 0x54, 0, 0x10, 0, 1][..]),
            ("1:2:a", &[1, 2, 0xa]),
            ("01 02 0a", &[1, 2, 0xa]),
            ("0a0b0c", &[0xa, 0xb, 0xc]),
            ("abc", &[0xa, 0xbc]),
            ("0x0102", &[1, 2]),
            ("'port-7'", b"port-7"),
            (" ' x ' ", b"x"),
        ] {
            assert_eq!(identifier_bytes(text).as_deref(), Some(bytes), "{text}");
        }
        for text in ["", "52::54", "123:45", "zz", "'", "''", "0x"] {
            assert_eq!(identifier_bytes(text), None, "{text}");
        }
    }

    #[test]
    fn what_kea_rejects_is_an_error() {
        for (text, at) in [
            (
                r#"{"Dhcp4": {"reservations": [{"hostname": "x"}]}}"#,
                "Dhcp4/reservations[0]",
            ),
            (
                r#"{"Dhcp4": {"reservations": [{"hw-address": "00:01", "client-id": "01"}]}}"#,
                "Dhcp4/reservations[0]",
            ),
            (
                r#"{"Dhcp4": {"reservations": [{"hw-address": "zz"}]}}"#,
                "Dhcp4/reservations[0]/hw-address",
            ),
            (
                r#"{"Dhcp6": {"reservations": [{"client-id": "01"}]}}"#,
                "Dhcp6/reservations[0]/client-id",
            ),
            (
                r#"{"Dhcp4": {"subnet4": [{"id": 1, "subnet": "fd00::/64"}]}}"#,
                "Dhcp4/subnet4[id 1]/subnet",
            ),
            (
                r#"{"Dhcp4": {"subnet4": [{"subnet": "10.0.0.0/8", "pools": [{"pool": "10.0.0.9 - 10.0.0.1"}]}]}}"#,
                "Dhcp4/subnet4[0]/pools[0]",
            ),
            (
                r#"{"Dhcp4": {"subnet4": [{"id": -1}]}}"#,
                "Dhcp4/subnet4[0]/id",
            ),
            (
                r#"{"Dhcp4": {"lease-database": {"persist": "yes"}}}"#,
                "Dhcp4/lease-database/persist",
            ),
            (
                r#"{"Dhcp4": {"interfaces-config": {"interfaces": "eth0"}}}"#,
                "Dhcp4/interfaces-config/interfaces",
            ),
            (
                r#"{"Dhcp4": {"host-reservation-identifiers": ["mac"]}}"#,
                "Dhcp4/host-reservation-identifiers",
            ),
            (r#"{"Dhcp4": []}"#, "Dhcp4"),
        ] {
            match parse(text, &files()) {
                Err(KeaConfError::Bad { at: got, .. }) => assert_eq!(got, at, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn lease_databases() {
        let db = |text: &str| {
            let config = parse(
                &format!(r#"{{"Dhcp6": {{"lease-database": {text}}}}}"#),
                &files(),
            )
            .unwrap();
            (config.lease_database.clone(), config.lease_file_path())
        };
        assert_eq!(
            db(r#"{"type": "memfile", "persist": false, "name": "/x"}"#),
            (
                LeaseDatabase::Memfile {
                    persist: false,
                    lfc_interval: None
                },
                None
            )
        );
        assert_eq!(
            db(r#"{"type": "mysql", "name": "kea"}"#),
            (LeaseDatabase::Other("mysql".into()), None)
        );
        assert_eq!(
            db(r#"{"type": "memfile"}"#).1.as_deref(),
            Some(Path::new(DEFAULT_LEASE_FILE6))
        );
        let none = parse(r#"{"Dhcp4": {}}"#, &files()).unwrap();
        assert_eq!(
            none.lease_file_path().as_deref(),
            Some(Path::new(DEFAULT_LEASE_FILE4))
        );
        let tcp = parse(
            r#"{"Dhcp4": {"control-socket": {"socket-type": "http", "socket-name": "x"}}}"#,
            &files(),
        )
        .unwrap();
        assert_eq!((tcp.control_socket, tcp.notes.len()), (None, 1));
    }

    fn lease(ip: &str, hwaddr: &[u8], client_id: Option<&[u8]>, iaid: Option<u32>) -> Lease {
        Lease {
            ip: ip.parse().unwrap(),
            hwaddr: hwaddr.to_vec(),
            htype: if hwaddr.is_empty() { 0 } else { 1 },
            client_id: client_id.map(<[u8]>::to_vec),
            hostname: None,
            expiry: Expiry::At(1),
            iaid,
        }
    }

    #[test]
    fn a_reserved_client_is_declared_the_others_are_not() {
        let config = parse(SAMPLE4, &files()).unwrap();
        let declared = DeclaredHosts::from_kea(&config);
        let mac1 = [0x52, 0x54, 0, 0x10, 0, 1];
        // By hw-address, whatever address it holds.
        assert!(declared.declares(&lease("172.29.101.150", &mac1, None, None)));
        // By client-id, whatever its MAC.
        let id2 = [1, 0x52, 0x54, 0, 0x10, 0, 2];
        assert!(declared.declares(&lease("172.29.101.11", &[9; 6], Some(&id2), None)));
        // Someone else, also at a reserved address.
        assert!(!declared.declares(&lease(
            "172.29.101.10",
            &[0x52, 0x54, 0, 0x10, 0, 9],
            None,
            None
        )));
        // The circuit-id and v4 duid reservations match nothing, and say so.
        assert_eq!(declared.problems.len(), 2, "{:?}", declared.problems);
        let line = declared
            .for_ip("172.29.101.10".parse().unwrap())
            .next()
            .unwrap();
        assert_eq!(line.name().as_deref(), Some("i-2-50-VM"));
        assert_eq!(line.source, "Dhcp4/subnet4[id 1]/reservations[0]");
        // The global reservation counts too (declared, even where Kea does not use it).
        assert!(declared.declares(&lease(
            "172.29.101.160",
            &[0x52, 0x54, 0, 0x10, 0, 0x99],
            None,
            None
        )));

        let config = parse(SAMPLE6, &files()).unwrap();
        let declared = DeclaredHosts::from_kea(&config);
        let duid = [0, 1, 0, 1, 0x32, 0xa3];
        assert!(declared.declares(&lease("fd00:77::10", &[], Some(&duid), Some(1))));
        assert!(declared.declares(&lease(
            "fd00:77::99",
            &[0x52, 0x54, 0, 0x77, 0, 1],
            Some(&[0, 3]),
            Some(1)
        )));
        assert!(!declared.declares(&lease(
            "fd00:77::10",
            &[],
            Some(&[0, 1, 0, 1, 0x32, 0xa4]),
            Some(1)
        )));
        assert_eq!(declared.hosts[0].ipv6, ["[fd00:77::10]", "[fd00:77::11]"]);
    }

    #[test]
    fn a_reservation_of_a_type_kea_does_not_look_up_declares_no_one() {
        let text = r#"{"Dhcp4": {"host-reservation-identifiers": ["client-id"],
            "reservations": [{"hw-address": "00:00:00:00:00:01"}, {"client-id": "01:02"}]}}"#;
        let declared = DeclaredHosts::from_kea(&parse(text, &files()).unwrap());
        assert!(!declared.declares(&lease("10.0.0.1", &[0, 0, 0, 0, 0, 1], None, None)));
        assert!(declared.declares(&lease("10.0.0.2", &[7; 6], Some(&[1, 2]), None)));
        assert_eq!(declared.problems.len(), 1);
    }

    #[test]
    fn outside_the_pools_only_reservations_get_addresses() {
        let config = parse(SAMPLE4, &files()).unwrap();
        let plan = config.address_plan();
        let static_only = |ip: &str| plan.is_static_only(ip.parse().unwrap(), &[]);
        // Subnet 1: pool .100-.200; the reservations are outside it.
        assert!(static_only("172.29.101.10"));
        assert!(!static_only("172.29.101.150"));
        // Subnet 2 has no pool: reservations only.
        assert!(static_only("172.29.102.7"));
        // The shared network's subnet: pool .16/28.
        assert!(!static_only("172.29.103.20"));
        assert!(static_only("172.29.103.5"));
        // Outside every subnet: nothing Kea serves.
        assert!(!static_only("10.9.9.9"));
        // The circuit-id and DHCPv4 duid reservations' addresses (.12, .13): their clients
        // cannot be recognised in a lease, so those leases are never orphans.
        let unmatched: Vec<&str> = config
            .unmatchable_reservations()
            .map(|r| r.source.as_str())
            .collect();
        assert_eq!(
            unmatched,
            [
                "Dhcp4/subnet4[id 1]/reservations[2]",
                "Dhcp4/subnet4[id 1]/reservations[3]"
            ]
        );
        assert!(!static_only("172.29.101.12"));
        assert!(!static_only("172.29.101.13"));
        assert!(static_only("172.29.101.14"));
        // DHCPv6 subnets are not v4 ranges.
        assert_eq!(
            parse(SAMPLE6, &files()).unwrap().address_plan(),
            DnsmasqConfig::default()
        );
    }

    /// A client reserved by circuit-id holds its address outside the pools: no reservation
    /// can be matched to its lease, yet Kea serves it as declared. Never an orphan.
    #[test]
    fn a_client_whose_reservation_cannot_be_matched_is_no_orphan() {
        use crate::reconcile::{Intent, LeaseStatus, ReconcileConfig, Reconciler};
        let config = parse(SAMPLE4, &files()).unwrap();
        let mut reconciler = Reconciler::new(ReconcileConfig::default());
        reconciler.set_intent(Intent {
            hosts: DeclaredHosts::from_kea(&config),
            config: config.address_plan(),
            local: Vec::new(),
        });
        let stranger = [0x52, 0x54, 0, 0x10, 0, 0x77];
        let status = |ip: &str| reconciler.status(&lease(ip, &stranger, None, None));
        assert_eq!(status("172.29.101.12"), LeaseStatus::Dynamic, "circuit-id");
        assert_eq!(status("172.29.101.13"), LeaseStatus::Dynamic, "DHCPv4 duid");
        assert_eq!(status("172.29.101.14"), LeaseStatus::Orphan);
    }

    #[test]
    fn keas_server_id_is_the_routers_address_in_each_subnet() {
        use crate::{server_identity::ServerIdentity, subnet::Subnet};
        let config = parse(SAMPLE4, &files()).unwrap();
        let router = [
            "172.29.101.1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ];
        let identity = ServerIdentity::from_kea(
            &config,
            &router,
            &[Subnet::new(Ipv4Addr::new(172, 29, 101, 0), 24).unwrap()],
        );
        let known = identity
            .expected_for("172.29.101.50".parse().unwrap())
            .unwrap();
        assert_eq!(known.server_id, Ipv4Addr::new(172, 29, 101, 1));
        assert_eq!(
            known.subnet,
            Subnet::new(Ipv4Addr::new(172, 29, 101, 0), 24).unwrap()
        );
        // Served, but the router has no address there (yet): no id to expect.
        assert_eq!(identity.serves("172.29.102.7".parse().unwrap()), Some(true));
        assert!(
            identity
                .expected_for("172.29.102.7".parse().unwrap())
                .is_none()
        );
        assert_eq!(identity.serves("10.9.9.9".parse().unwrap()), Some(false));
        // Subnet 1's pool, .100-.200: the reserved addresses outside it are no pool.
        let pool = identity
            .pools()
            .into_iter()
            .find(|p| p.subnet == known.subnet)
            .unwrap();
        assert_eq!(pool.size, Some(101));
    }

    proptest::proptest! {
        /// Any text of the pieces Kea's syntax is made of (comments, strings, escapes,
        /// directives, JSON) reads or fails with an error, never a panic; a reservation read
        /// has exactly one identifier, and comments never take a line away.
        #[test]
        fn any_text_reads_or_is_an_error(pieces in proptest::collection::vec(
            proptest::sample::select(vec![
                "{", "}", "[", "]", ",", ":", "\"", "\\", "\n", " ", "#", "//", "/*", "*/", "é",
                "<?include \"/x\"?>", "<?", "?>", "\"Dhcp4\"", "\"Dhcp6\"", "\"reservations\"",
                "\"hw-address\"", "\"duid\"", "\"client-id\"", "\"subnet4\"", "\"subnet\"",
                "\"10.0.0.0/8\"", "\"pools\"", "\"pool\"", "\"10.0.0.1 - 10.0.0.9\"", "\"01:02\"",
                "\"ip-address\"", "\"10.0.0.5\"", "1", "-1", "true", "null",
            ]),
            0..60,
        )) {
            let text: String = pieces.concat();
            let files = MemoryFiles::default().with("/x", "{}");
            if let Ok(stripped) = strip_comments(&text, &MemoryFiles::default()) {
                proptest::prop_assert_eq!(stripped.matches('\n').count(), text.matches('\n').count());
            }
            if let Ok(config) = parse(&text, &files) {
                for reservation in &config.reservations {
                    proptest::prop_assert!(reservation.identifier().is_some());
                }
                let _ = DeclaredHosts::from_kea(&config);
                let _ = config.address_plan();
            }
        }
    }
}
