//! What the observer needs from a dnsmasq configuration: the addresses it listens on, the
//! DHCP ranges it serves (and which are `static`), and the hosts it declares, so that served
//! subnets, the likely server id and the orchestrator's hosts are known before any reply is
//! seen. Follows `conf-file=` and `conf-dir=` like dnsmasq does, and reads a dnsmasq command
//! line the same way ([`DnsmasqConfig::from_args`]).
//!
//! The engine does no I/O: the files are read through a [`ConfFiles`], which the agent
//! implements over the file system and the tests over a map.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{declared::HostLine, subnet::Subnet};

#[derive(Debug, Error)]
pub enum ConfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}: conf-file/conf-dir nest deeper than 16 levels (a loop?)")]
    TooDeep(PathBuf),
}

/// A configuration line that did not parse but does not stop the rest (a `dhcp-host`: its
/// host is reported as a problem rather than losing every other host).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}:{line}: {reason}")]
pub struct BadLine {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// Where configuration files come from.
pub trait ConfFiles {
    /// The whole text of a file.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The regular files in a directory, in any order.
    fn files_in(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>>;
    /// When a file or directory last changed (Unix ns), if the reader knows.
    fn modified_unix_ns(&self, _path: &Path) -> Option<i128> {
        None
    }
}

/// Files held in memory, by path (tests, and configurations handed over whole).
#[derive(Debug, Default, Clone)]
pub struct MemoryFiles {
    pub files: BTreeMap<PathBuf, String>,
    pub modified_unix_ns: BTreeMap<PathBuf, i128>,
}

impl MemoryFiles {
    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> MemoryFiles {
        self.files.insert(path.into(), text.into());
        self
    }

    /// Gives a file or directory a modification time.
    pub fn with_mtime(mut self, path: impl Into<PathBuf>, unix_ns: i128) -> MemoryFiles {
        self.modified_unix_ns.insert(path.into(), unix_ns);
        self
    }
}

impl ConfFiles for MemoryFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn files_in(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let files: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        if files.is_empty() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok(files)
    }

    fn modified_unix_ns(&self, path: &Path) -> Option<i128> {
        self.modified_unix_ns.get(path).copied()
    }
}

/// How a `dhcp-range` gives out addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMode {
    /// `START,END`: a pool for any client.
    Dynamic,
    /// `START,static`: only hosts with a `dhcp-host` address get one.
    Static,
    /// `START,proxy`: proxy DHCP, no addresses.
    Proxy,
}

/// One DHCPv4 `dhcp-range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    /// `None` for `static` and `proxy` ranges.
    pub end: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
}

/// A `dhcp-range` with what [`DhcpRange`] leaves out: its mode and tags. (They are not fields
/// of `DhcpRange` so that `DhcpRange { start, end, netmask }` built elsewhere still compiles.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeLine {
    pub range: DhcpRange,
    pub mode: RangeMode,
    /// The tag fields before the address, as written (`set:subnet-1`, `tag:red`, or the old
    /// bare `red`), for reports.
    pub tags: Vec<String>,
}

impl DhcpRange {
    /// The range's subnet, from its netmask or else from the local address it falls in.
    pub fn subnet(&self, local: &[Subnet]) -> Option<Subnet> {
        match self.netmask {
            Some(mask) => Subnet::from_mask(self.start, mask),
            None => local.iter().copied().find(|s| s.contains(self.start)),
        }
    }

    /// Number of addresses in a dynamic range.
    pub fn size(&self) -> Option<u32> {
        let end = self.end?;
        u32::from(end)
            .checked_sub(u32::from(self.start))
            .map(|n| n + 1)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsmasqConfig {
    pub listen_addresses: Vec<IpAddr>,
    /// `interface=` names, as written (dnsmasq allows a `*` in them: [`dnsmasq_name_match`]).
    pub interfaces: Vec<String>,
    /// `except-interface=` names, as written.
    pub except_interfaces: Vec<String>,
    /// `no-dhcp-interface=` names, as written: DNS there, but no DHCP.
    pub no_dhcp_interfaces: Vec<String>,
    pub ranges: Vec<DhcpRange>,
    /// The same ranges with their mode and tags, in the same order (the parser fills both).
    pub range_lines: Vec<RangeLine>,
    pub lease_file: Option<PathBuf>,
    /// Inline `dhcp-host=` lines.
    pub hosts: Vec<HostLine>,
    /// `dhcp-hostsfile=` paths, as given (dnsmasq does not resolve relative ones either).
    pub hostsfiles: Vec<PathBuf>,
    /// `dhcp-hostsdir=` paths, as given.
    pub hostsdirs: Vec<PathBuf>,
    /// `dhcp-ignore=tag:!known`: dnsmasq serves only declared hosts, on every range.
    pub ignore_unknown: bool,
    /// `dhcp-host` lines that did not parse.
    pub bad_lines: Vec<BadLine>,
    /// Every configuration file read and every `conf-dir` listed (what to follow for changes:
    /// CloudStack writes its ranges and host-file names into `/etc/dnsmasq.d/cloud.conf`).
    pub conf_paths: Vec<PathBuf>,
}

/// The "file" of options given on a command line; their "line" is their index in `args`.
const COMMAND_LINE: &str = "command line";

impl DnsmasqConfig {
    pub fn load(path: &Path, files: &dyn ConfFiles) -> Result<DnsmasqConfig, ConfError> {
        let mut loader = Loader::new(files);
        loader.read_file(path, 0)?;
        Ok(loader.finish())
    }

    /// A dnsmasq command line, as OpenStack Neutron starts it (`dnsmasq --no-hosts
    /// --dhcp-hostsfile=... --dhcp-range=set:subnet-...,10.0.0.0,static,...
    /// --conf-file=...`). Each `--key=value` is read exactly like the line `key=value` of a
    /// conf file; bare `--flag`s are skipped (none matters here), and so is anything not
    /// starting with `--` (the program, short options, `--key value` forms).
    ///
    /// As in dnsmasq's `read_opts`, the first non-empty `--conf-file` is read after the whole
    /// command line, so that its options override the command line's. Without any, dnsmasq
    /// reads `/etc/dnsmasq.conf`; this does not: a caller who wants that adds
    /// `--conf-file=/etc/dnsmasq.conf`.
    pub fn from_args(args: &[String], files: &dyn ConfFiles) -> Result<DnsmasqConfig, ConfError> {
        let mut loader = Loader::new(files);
        let mut first_conf_file = None;
        for (index, arg) in args.iter().enumerate() {
            let Some(option) = arg.strip_prefix("--") else {
                continue;
            };
            let (key, value) = match option.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (option, None),
            };
            if key == "conf-file"
                && first_conf_file.is_none()
                && let Some(file) = value.filter(|v| !v.is_empty())
            {
                first_conf_file = Some(file);
                continue;
            }
            let at = Origin {
                path: Path::new(COMMAND_LINE),
                line: index,
            };
            loader.option(key, value, &at, 0)?;
        }
        if let Some(file) = first_conf_file {
            loader.read_file(Path::new(file), 1)?;
        }
        Ok(loader.finish())
    }

    /// The listen address inside `subnet`: with `listen-address` on a secondary address (a VIP),
    /// that is the server id dnsmasq uses there.
    pub fn listen_address_in(&self, subnet: Subnet) -> Option<Ipv4Addr> {
        self.listen_addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) if subnet.contains(*v4) => Some(*v4),
            _ => None,
        })
    }

    /// What the configuration says about the links dnsmasq serves: [`ServedLinks`].
    pub fn served_links(&self) -> ServedLinks {
        ServedLinks {
            interfaces: self.interfaces.clone(),
            except_interfaces: self.except_interfaces.clone(),
            no_dhcp_interfaces: self.no_dhcp_interfaces.clone(),
            listen_addresses: self
                .listen_addresses
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            ranges: self.ranges.clone(),
        }
    }

    /// Whether dnsmasq would give `ip` only to a declared host: it ignores unknown clients
    /// everywhere, or `ip`'s subnet is served by a `static` range and `ip` is in no dynamic
    /// range. `local` are the router's own subnets (for ranges without a netmask).
    pub fn is_static_only(&self, ip: Ipv4Addr, local: &[Subnet]) -> bool {
        if self.ignore_unknown {
            return true;
        }
        let dynamic = self
            .ranges
            .iter()
            .any(|r| r.end.is_some_and(|end| (r.start..=end).contains(&ip)));
        let static_subnet = self.range_lines.iter().any(|l| {
            l.mode == RangeMode::Static && l.range.subnet(local).is_some_and(|s| s.contains(ip))
        });
        static_subnet && !dynamic
    }
}

/// On which links dnsmasq serves DHCP, as far as its configuration says: what the agent
/// attaches to on a router by default ([`DnsmasqConfig::served_links`]).
///
/// dnsmasq (`network.c` `iface_check`, `dhcp.c` `dhcp_packet`) answers on a link that is
/// named by `interface=` or holds a `listen-address` (every address given when neither is),
/// is not excepted (`except-interface=`, overridden by a listen-address there, which is how
/// CloudStack's `except-interface=lo` still answers `dhcp_lease_time` on 127.0.0.1), not
/// `no-dhcp-interface=`, and has an address inside a `dhcp-range`. This is a superset: a link
/// is served when any of those says so (named, holding a listen-address, or holding an address
/// in a range, static ranges included), unless excepted. A link attached in vain costs nothing;
/// one left out is DHCP not seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedLinks {
    interfaces: Vec<String>,
    except_interfaces: Vec<String>,
    no_dhcp_interfaces: Vec<String>,
    listen_addresses: Vec<Ipv4Addr>,
    ranges: Vec<DhcpRange>,
}

/// Why [`ServedLinks::serves`] says a link is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBy {
    /// Named by `interface=` (the name as written, maybe with a `*`).
    Interface(String),
    /// The link holds this `listen-address`.
    ListenAddress(Ipv4Addr),
    /// The link holds `address/prefix`, inside the `dhcp-range` that starts at `start`.
    Range {
        address: Ipv4Addr,
        prefix: u8,
        start: Ipv4Addr,
    },
}

impl std::fmt::Display for ServedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedBy::Interface(name) => write!(f, "dnsmasq interface={name}"),
            ServedBy::ListenAddress(ip) => write!(f, "holds dnsmasq's listen-address {ip}"),
            ServedBy::Range {
                address,
                prefix,
                start,
            } => write!(
                f,
                "holds {address}/{prefix}, in dnsmasq's dhcp-range starting at {start}"
            ),
        }
    }
}

impl ServedLinks {
    /// Whether dnsmasq serves the link `name` holding `addresses` (IPv4, with prefix lengths),
    /// and why.
    pub fn serves(&self, name: &str, addresses: &[(Ipv4Addr, u8)]) -> Option<ServedBy> {
        let named = |list: &[String]| list.iter().find(|p| dnsmasq_name_match(p, name)).cloned();
        if named(&self.no_dhcp_interfaces).is_some() {
            return None;
        }
        let listen = addresses
            .iter()
            .map(|(ip, _)| *ip)
            .find(|ip| self.listen_addresses.contains(ip));
        if listen.is_none() && named(&self.except_interfaces).is_some() {
            return None;
        }
        if let Some(pattern) = named(&self.interfaces) {
            return Some(ServedBy::Interface(pattern));
        }
        if let Some(ip) = listen {
            return Some(ServedBy::ListenAddress(ip));
        }
        addresses.iter().find_map(|&(address, prefix)| {
            let start = self
                .ranges
                .iter()
                .find(|range| range_holds(range, address, prefix))?
                .start;
            Some(ServedBy::Range {
                address,
                prefix,
                start,
            })
        })
    }
}

/// Whether the link address `address/prefix` is inside `range`'s subnet: the range's netmask
/// when it has one, else the link's own (dnsmasq's `complete_context` takes the interface's
/// netmask for a range without one, like CloudStack's `dhcp-range=...,<gateway>,static`).
fn range_holds(range: &DhcpRange, address: Ipv4Addr, prefix: u8) -> bool {
    let subnet = match range.netmask {
        Some(mask) => Subnet::from_mask(range.start, mask),
        None => Subnet::new(address, prefix),
    };
    subnet.is_some_and(|s| s.contains(address) && s.contains(range.start))
}

/// dnsmasq's `wildcard_match` (`util.c`) of an interface name: equal, or equal up to a `*`,
/// which matches whatever follows (at least one character: `eth*` does not match `eth`).
pub fn dnsmasq_name_match(pattern: &str, name: &str) -> bool {
    let (mut p, mut n) = (pattern.bytes(), name.bytes());
    loop {
        match (p.next(), n.next()) {
            (Some(b'*'), Some(_)) => return true,
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A comma-separated list of interface names.
fn names(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty())
}

/// Where an option was given, for errors and host line sources.
struct Origin<'a> {
    path: &'a Path,
    line: usize,
}

/// One reading of a configuration: the files it has read (dnsmasq reads a file once, however
/// often it is named) and what they said.
struct Loader<'a> {
    files: &'a dyn ConfFiles,
    read: BTreeSet<PathBuf>,
    config: DnsmasqConfig,
}

impl<'a> Loader<'a> {
    fn new(files: &'a dyn ConfFiles) -> Loader<'a> {
        Loader {
            files,
            read: BTreeSet::new(),
            config: DnsmasqConfig::default(),
        }
    }

    /// The configuration, with the files read among its [`DnsmasqConfig::conf_paths`].
    fn finish(mut self) -> DnsmasqConfig {
        self.config.conf_paths.extend(self.read);
        self.config.conf_paths.sort();
        self.config.conf_paths.dedup();
        self.config
    }

    fn read_file(&mut self, path: &Path, depth: usize) -> Result<(), ConfError> {
        if depth > 16 {
            return Err(ConfError::TooDeep(path.to_owned()));
        }
        if !self.read.insert(path.to_owned()) {
            return Ok(());
        }
        let text = self.files.read(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        for (index, raw) in text.lines().enumerate() {
            let at = Origin {
                path,
                line: index + 1,
            };
            let line = clean_line(raw).map_err(|reason| at.bad(reason))?;
            if line.is_empty() {
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((key, value)) => (
                    key.trim_end_matches(' '),
                    Some(value.trim_start_matches(' ')),
                ),
                None => (line.as_str(), None),
            };
            self.option(key, value, &at, depth)?;
        }
        Ok(())
    }

    /// One option, from a conf file line or a command line argument. Values keep the hidden
    /// quoted characters of [`clean_line`] for `dhcp-host` (which classifies fields by them)
    /// and lose them for everything else.
    fn option(
        &mut self,
        key: &str,
        value: Option<&str>,
        at: &Origin,
        depth: usize,
    ) -> Result<(), ConfError> {
        let Some(value) = value else {
            return Ok(());
        };
        let config = &mut self.config;
        if key == "dhcp-host" {
            let source = format!("{}:{}", at.path.display(), at.line);
            match HostLine::parse(value, source) {
                Ok(host) => config.hosts.push(host),
                Err(err) => config.bad_lines.push(BadLine {
                    path: at.path.to_owned(),
                    line: at.line,
                    reason: err.to_string(),
                }),
            }
            return Ok(());
        }
        let value = unhide(value);
        match key {
            "listen-address" => {
                for addr in value.split(',') {
                    let addr = addr
                        .trim()
                        .parse()
                        .map_err(|_| at.bad(format!("bad listen-address {addr:?}")))?;
                    config.listen_addresses.push(addr);
                }
            }
            "interface" => config.interfaces.extend(names(&value)),
            "except-interface" => config.except_interfaces.extend(names(&value)),
            "no-dhcp-interface" => config.no_dhcp_interfaces.extend(names(&value)),
            "dhcp-range" => {
                if let Some(line) = parse_range(&value).map_err(|r| at.bad(r))? {
                    config.ranges.push(line.range.clone());
                    config.range_lines.push(line);
                }
            }
            "dhcp-leasefile" | "dhcp-lease" => config.lease_file = Some(PathBuf::from(value)),
            "dhcp-hostsfile" if !value.is_empty() => config.hostsfiles.push(value.into()),
            "dhcp-hostsdir" if !value.is_empty() => config.hostsdirs.push(value.into()),
            "dhcp-ignore" => config.ignore_unknown |= ignores_every_unknown(&value),
            // An empty value names no file (dnsmasq's opt_string_alloc gives NULL).
            "conf-file" if !value.is_empty() => self.read_file(Path::new(&value), depth + 1)?,
            "conf-dir" => self.read_dir(&value, depth + 1)?,
            _ => {}
        }
        Ok(())
    }

    /// `conf-dir=DIR[,.ext,...][,*.conf,...]`: `*.ext` includes only matching files, `.ext`
    /// excludes; the files dnsmasq always skips ([`skipped_file_name`]) are skipped.
    fn read_dir(&mut self, spec: &str, depth: usize) -> Result<(), ConfError> {
        let mut parts = spec.split(',').map(str::trim);
        let dir = PathBuf::from(parts.next().unwrap_or(""));
        if dir.as_os_str().is_empty() {
            return Ok(());
        }
        self.config.conf_paths.push(dir.clone());
        let (mut include, mut exclude) = (Vec::new(), Vec::new());
        for part in parts.filter(|p| !p.is_empty() && *p != "*") {
            match part.strip_prefix('*') {
                Some(suffix) => include.push(suffix.to_owned()),
                None => exclude.push(part.to_owned()),
            }
        }
        let mut listed = self
            .files
            .files_in(&dir)
            .map_err(|source| ConfError::Read {
                path: dir.clone(),
                source,
            })?;
        listed.sort();
        for file in listed {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let skipped = skipped_file_name(&name)
                || exclude.iter().any(|e| name.ends_with(e.as_str()))
                || (!include.is_empty() && !include.iter().any(|i| name.ends_with(i.as_str())));
            if !skipped {
                self.read_file(&file, depth)?;
            }
        }
        Ok(())
    }
}

impl Origin<'_> {
    fn bad(&self, reason: String) -> ConfError {
        ConfError::Bad {
            path: self.path.to_owned(),
            line: self.line,
            reason,
        }
    }
}

/// The directory entries dnsmasq never reads (`conf-dir`, and `file_filter` for hostsfile
/// directories and hostsdirs): editor backups (`name~`, `#name#`) and dot files.
pub(crate) fn skipped_file_name(name: &str) -> bool {
    name.is_empty()
        || name.ends_with('~')
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
        || name.starts_with('.')
}

/// One line of a dnsmasq file as its `read_file` (`option.c`) prepares it: `"` quotes removed,
/// with the escapes `\\ \" \t \n \e \b \r` inside, and the quoted characters hidden (see
/// [`hide`]) so that a quoted `,` `:` `.` or digit is plain text; whitespace made spaces; a `#`
/// starting a word starts a comment; trimmed. The error is dnsmasq's "missing \"".
pub(crate) fn clean_line(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    // After a quoted part, `white` is what it was before it, as in dnsmasq.
    let mut white = true;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            loop {
                match chars.next() {
                    None => return Err("missing \"".into()),
                    Some('"') => break,
                    Some('\\') => match chars.peek().copied() {
                        Some(e @ ('"' | '\\' | 't' | 'n' | 'e' | 'b' | 'r')) => {
                            chars.next();
                            out.push(hide(match e {
                                't' => '\t',
                                'n' => '\n',
                                'e' => '\x1b',
                                'b' => '\x08',
                                'r' => '\r',
                                other => other,
                            }));
                        }
                        None => return Err("missing \"".into()),
                        Some(_) => out.push(hide('\\')),
                    },
                    Some(c) => out.push(hide(c)),
                }
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r') {
            out.push(' ');
            white = true;
        } else if white && c == '#' {
            break;
        } else {
            out.push(c);
            white = false;
        }
    }
    Ok(out.trim_matches(' ').to_owned())
}

/// Where [`hide`] puts quoted characters: Unicode plane 15 (private use), so that no hidden
/// character is a separator, a digit or a keyword's letter. (dnsmasq maps them to control
/// characters instead; the effect is the same.)
const HIDDEN: u32 = 0xF0000;

fn hide(c: char) -> char {
    match u32::from(c) {
        code @ 0..=0xFFFF => char::from_u32(HIDDEN + code).unwrap_or(c),
        _ => c,
    }
}

/// The text with the characters [`hide`] hid given back.
pub(crate) fn unhide(text: &str) -> String {
    text.chars()
        .map(|c| match u32::from(c) {
            code @ HIDDEN..=0xFFFFF => char::from_u32(code - HIDDEN).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// `dhcp-ignore=tag:!known` (or the old `#known`): dnsmasq ignores a client when every tag
/// condition of the line holds, so the line ignores every unknown client only when `!known`
/// is its only condition (`tag:!known,tag:guest` ignores unknown guests only).
fn ignores_every_unknown(value: &str) -> bool {
    let mut conditions = value.split(',').map(str::trim).map(|c| {
        c.strip_prefix("tag:")
            .or_else(|| c.strip_prefix("net:"))
            .unwrap_or(c)
    });
    let mut any = false;
    let all = conditions.all(|c| {
        any = true;
        matches!(c, "!known" | "#known")
    });
    any && all
}

/// Parses the value of a `dhcp-range` as dnsmasq's `option.c` does (`case 'F'`); `Ok(None)`
/// for DHCPv6 ranges.
///
/// `[TAG,...]START,END|static|proxy[,NETMASK[,BROADCAST]][,LEASE]`. The leading fields with a
/// character an address cannot have (anything but hex digits, `.`, `:` and space) are tags:
/// `tag:`/`net:` ones filter, any other (`set:T`, or the old bare `T`) names the range, at most
/// one. A reversed dynamic range is swapped; the netmask must hold both ends; the lease time
/// (`infinite`, `deprecated`, or digits with an optional `s`/`m`/`h`/`d`/`w`) must be last.
fn parse_range(value: &str) -> Result<Option<RangeLine>, String> {
    let bad = || "bad dhcp-range".to_owned();
    let fields: Vec<&str> = value.split(',').map(|f| f.trim_matches(' ')).collect();
    let address_like = |f: &str| {
        f.chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | ' '))
    };
    let tag_count = fields
        .iter()
        .take(fields.len().saturating_sub(1))
        .take_while(|f| !address_like(f))
        .count();
    let (tag_fields, a) = fields.split_at(tag_count);
    let is_filter = |t: &&&str| t.starts_with("tag:") || t.starts_with("net:");
    if tag_fields.iter().filter(|t| !is_filter(t)).count() > 1 {
        return Err("only one tag allowed".into());
    }
    let tags = tag_fields
        .iter()
        .filter(|t| !matches!(**t, "tag:" | "net:"))
        .map(|t| (*t).to_owned())
        .collect();
    if a.len() < 2 {
        return Err(bad());
    }
    let Ok(mut start) = a[0].parse::<Ipv4Addr>() else {
        return match a[0].parse::<Ipv6Addr>() {
            Ok(_) => Ok(None),
            Err(_) => Err(format!("bad dhcp-range start {:?}", a[0])),
        };
    };
    let (mode, mut end) = match a[1] {
        "static" => (RangeMode::Static, start),
        "proxy" => (RangeMode::Proxy, start),
        end => (
            RangeMode::Dynamic,
            end.parse()
                .map_err(|_| format!("bad dhcp-range end {end:?}"))?,
        ),
    };
    if start > end {
        (start, end) = (end, start);
    }
    let dotted = |i: usize| {
        a.get(i)
            .filter(|f| f.contains('.'))
            .and_then(|f| f.parse::<Ipv4Addr>().ok())
    };
    let mut lease_at = 2;
    let netmask = dotted(2);
    if let Some(mask) = netmask {
        let mask = u32::from(mask);
        if u32::from(start) & mask != u32::from(end) & mask {
            return Err("inconsistent DHCP range".into());
        }
        lease_at = if dotted(3).is_some() { 4 } else { 3 };
    }
    if let Some(lease) = a.get(lease_at) {
        let number = lease
            .strip_suffix(|c: char| "sSmMhHdDwW".contains(c))
            .unwrap_or(lease);
        let valid = matches!(*lease, "infinite" | "deprecated")
            || number.chars().all(|c| c.is_ascii_digit());
        if lease_at + 1 != a.len() || !valid {
            return Err(bad());
        }
    }
    Ok(Some(RangeLine {
        range: DhcpRange {
            start,
            end: (mode == RangeMode::Dynamic).then_some(end),
            netmask,
        },
        mode,
        tags,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::DeclaredHosts;

    fn range(s: &str) -> Option<DhcpRange> {
        parse_range(s).unwrap().map(|l| l.range)
    }

    /// `text` as /etc/dnsmasq.conf.
    fn conf(text: &str) -> DnsmasqConfig {
        let files = MemoryFiles::default().with("/etc/dnsmasq.conf", text);
        DnsmasqConfig::load(Path::new("/etc/dnsmasq.conf"), &files).unwrap()
    }

    /// The links of `links` (name, addresses as `a.b.c.d/prefix`) the configuration serves.
    fn served<'a>(text: &str, links: &[(&'a str, &[&str])]) -> Vec<&'a str> {
        let served = conf(text).served_links();
        links
            .iter()
            .filter(|(name, addresses)| {
                let addresses: Vec<(Ipv4Addr, u8)> = addresses
                    .iter()
                    .map(|a| {
                        let (ip, prefix) = a.split_once('/').unwrap();
                        (ip.parse().unwrap(), prefix.parse().unwrap())
                    })
                    .collect();
                served.serves(name, &addresses).is_some()
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// A CloudStack VPC router: vpcdnsmasq.conf's `except-interface=lo`, cloud.conf's static
    /// range and listen-address per tier (on the tier's address, no netmask).
    #[test]
    fn a_cloudstack_router_serves_its_tiers_and_lo_by_its_listen_address() {
        let text = "except-interface=lo\n\
                    dhcp-range=set:interface-eth2-0,172.29.102.1,static\n\
                    listen-address=127.0.0.1,172.29.102.1\n\
                    dhcp-range=set:interface-eth3-0,172.29.103.1,static\n";
        let links: &[(&str, &[&str])] = &[
            ("lo", &["127.0.0.1/8"]),
            ("eth0", &["169.254.0.10/16"]),
            ("eth1", &["192.0.2.10/24"]),
            ("eth2", &["172.29.102.1/24"]),
            // A new tier: its range is in, its listen-address not yet.
            ("eth3", &["172.29.103.1/24"]),
            ("eth4", &[]),
        ];
        assert_eq!(served(text, links), ["lo", "eth2", "eth3"]);
        // The redundant router's BACKUP: the VIP gone, the primary still in the tier's subnet.
        let backup: &[(&str, &[&str])] = &[("eth2", &["172.29.102.245/24"])];
        assert_eq!(served(text, backup), ["eth2"]);
        let why = conf(text)
            .served_links()
            .serves("eth2", &[(Ipv4Addr::new(172, 29, 102, 1), 24)]);
        assert_eq!(
            why.map(|w| w.to_string()).as_deref(),
            Some("holds dnsmasq's listen-address 172.29.102.1")
        );
    }

    #[test]
    fn interface_names_take_dnsmasq_wildcards_and_exceptions() {
        let links: &[(&str, &[&str])] = &[
            ("lo", &["127.0.0.1/8"]),
            ("eth", &[]),
            ("eth2", &[]),
            ("eth3", &["10.0.3.1/24"]),
            ("tap1", &["10.0.9.1/24"]),
        ];
        assert_eq!(
            served("interface=eth*\nexcept-interface=eth3\n", links),
            ["eth2"]
        );
        // A listen-address on an excepted link wins, as in dnsmasq.
        assert_eq!(
            served(
                "interface=eth*\nexcept-interface=eth3,lo\nlisten-address=10.0.3.1\n",
                links
            ),
            ["eth2", "eth3"]
        );
        assert_eq!(
            served("no-dhcp-interface=eth*\ninterface=eth*\n", links),
            Vec::<&str>::new()
        );
        // A range with a netmask serves the links inside it.
        assert_eq!(
            served("dhcp-range=10.0.9.100,10.0.9.200,255.255.255.0\n", links),
            ["tap1"]
        );
        // Nothing configured: nothing is known to be served.
        assert_eq!(served("", links), Vec::<&str>::new());
    }

    #[test]
    fn dnsmasq_wildcards_match_a_prefix_and_at_least_one_more_character() {
        for (pattern, name, matches) in [
            ("eth*", "eth3", true),
            ("eth*", "eth", false),
            ("eth*", "veth3", false),
            ("e*0", "eth5", true),
            ("eth0", "eth0", true),
            ("eth0", "eth01", false),
            ("*", "lo", true),
        ] {
            assert_eq!(
                dnsmasq_name_match(pattern, name),
                matches,
                "{pattern} {name}"
            );
        }
    }

    #[test]
    fn parses_range_forms() {
        let a = Ipv4Addr::new;
        assert_eq!(
            range("172.29.101.100,172.29.101.200,255.255.255.0,1h"),
            Some(DhcpRange {
                start: a(172, 29, 101, 100),
                end: Some(a(172, 29, 101, 200)),
                netmask: Some(a(255, 255, 255, 0))
            })
        );
        assert_eq!(
            range("set:interface-eth0,172.29.101.1,static,255.255.255.0,infinite"),
            Some(DhcpRange {
                start: a(172, 29, 101, 1),
                end: None,
                netmask: Some(a(255, 255, 255, 0))
            })
        );
        assert_eq!(
            range("10.0.0.10,10.0.0.20"),
            Some(DhcpRange {
                start: a(10, 0, 0, 10),
                end: Some(a(10, 0, 0, 20)),
                netmask: None
            })
        );
        assert_eq!(range("::1,::400,constructor:eth0"), None);
        assert_eq!(range("set:subnet-6,fd00::,static,64,86400s"), None);
        assert!(parse_range("10.0.0.300,10.0.0.20").is_err());
        assert!(parse_range("10.0.0.1,nonsense").is_err());
    }

    /// Checked against dnsmasq 2.90 (`dnsmasq --test`).
    #[test]
    fn ranges_have_modes_and_tags_as_dnsmasq_reads_them() {
        let line = |s: &str| parse_range(s).unwrap().unwrap();
        let l = line("set:subnet-1,10.0.0.0,static,255.255.255.0,86400s");
        assert_eq!(
            (l.mode, l.tags),
            (RangeMode::Static, vec!["set:subnet-1".into()])
        );
        let l = line("tag:a,set:b,10.0.0.1,proxy");
        assert_eq!(l.mode, RangeMode::Proxy);
        assert_eq!(l.tags, ["tag:a", "set:b"]);
        assert_eq!(line("red,10.0.0.1,10.0.0.5").tags, ["red"]);
        // Reversed ends are swapped.
        let l = line("10.0.0.9,10.0.0.5,255.255.255.0");
        assert_eq!(
            (l.mode, l.range.start, l.range.end),
            (
                RangeMode::Dynamic,
                Ipv4Addr::new(10, 0, 0, 5),
                Some(Ipv4Addr::new(10, 0, 0, 9))
            )
        );
        assert_eq!(line("10.0.0.1,10.0.0.9,s").mode, RangeMode::Dynamic);
        assert_eq!(line("10.0.0.1,10.0.0.9,").mode, RangeMode::Dynamic);
        for rejected in [
            "10.0.0.5",
            "cafe,10.0.0.1,10.0.0.5",
            "set:a,set:b,10.0.0.1,10.0.0.5",
            "10.0.0.1,10.1.0.5,255.255.255.0",
            "10.0.0.1,static,foo",
            "10.0.0.1,static,1h,2h",
        ] {
            assert!(parse_range(rejected).is_err(), "{rejected}");
        }
    }

    #[test]
    fn ranges_know_their_subnet_and_size() {
        let range = range("10.0.0.10,10.0.0.20").unwrap();
        let local = [Subnet::new(Ipv4Addr::new(10, 0, 0, 1), 24).unwrap()];
        assert_eq!(range.subnet(&local), Some(local[0]));
        assert_eq!(range.subnet(&[]), None);
        assert_eq!(range.size(), Some(11));
    }

    #[test]
    fn loads_files_and_follows_conf_file_and_conf_dir() {
        let files = MemoryFiles::default()
            .with(
                "/etc/dnsmasq.conf",
                "# CloudStack-like\nlisten-address=127.0.0.1,172.29.101.1\ninterface=eth0\n\
                 dhcp-range=set:interface-eth0,172.29.101.1,static,255.255.255.0\n\
                 conf-file=/etc/extra\nconf-dir=/etc/dnsmasq.d,.bak,*.conf\n",
            )
            .with(
                "/etc/extra",
                "dhcp-leasefile=/var/lib/misc/dnsmasq.leases\n",
            )
            .with(
                "/etc/dnsmasq.d/a.conf",
                "dhcp-range=10.9.0.10,10.9.0.20,255.255.255.0\n",
            )
            .with(
                "/etc/dnsmasq.d/b.conf.bak",
                "dhcp-range=10.8.0.10,10.8.0.20,255.255.255.0\n",
            )
            .with(
                "/etc/dnsmasq.d/c.txt",
                "dhcp-range=10.7.0.10,10.7.0.20,255.255.255.0\n",
            )
            .with(
                "/etc/dnsmasq.d/#d.conf#",
                "dhcp-range=10.6.0.10,10.6.0.20,255.255.255.0\n",
            );
        let config = DnsmasqConfig::load(Path::new("/etc/dnsmasq.conf"), &files).unwrap();
        assert_eq!(
            config.listen_addresses,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "172.29.101.1".parse().unwrap()
            ]
        );
        assert_eq!(config.interfaces, vec!["eth0".to_owned()]);
        // What to follow for changes: every file read and the conf-dir itself.
        assert_eq!(
            config.conf_paths,
            [
                "/etc/dnsmasq.conf",
                "/etc/dnsmasq.d",
                "/etc/dnsmasq.d/a.conf",
                "/etc/extra"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            config.lease_file,
            Some(PathBuf::from("/var/lib/misc/dnsmasq.leases"))
        );
        let starts: Vec<String> = config.ranges.iter().map(|r| r.start.to_string()).collect();
        assert_eq!(starts, ["172.29.101.1", "10.9.0.10"]);
        let modes: Vec<RangeMode> = config.range_lines.iter().map(|l| l.mode).collect();
        assert_eq!(modes, [RangeMode::Static, RangeMode::Dynamic]);
        let guest = Subnet::new(Ipv4Addr::new(172, 29, 101, 0), 24).unwrap();
        assert_eq!(
            config.listen_address_in(guest),
            Some(Ipv4Addr::new(172, 29, 101, 1))
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let files = MemoryFiles::default().with("/bad.conf", "port=0\nlisten-address=1.2.3\n");
        let err = DnsmasqConfig::load(Path::new("/bad.conf"), &files)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/bad.conf:2: bad listen-address \"1.2.3\"");
        assert!(DnsmasqConfig::load(Path::new("/nonexistent/dnsmasq.conf"), &files).is_err());
    }

    #[test]
    fn host_lines_files_and_ignore() {
        let files = MemoryFiles::default().with(
            "/etc/dnsmasq.conf",
            "dhcp-host=02:00:4c:5e:00:02,10.1.1.50,vm-1,infinite # VM\n\
             dhcp-host = zz:zz\n\
             dhcp-hostsfile=/etc/dhcphosts.txt\ndhcp-hostsfile=hosts.rel\n\
             dhcp-hostsdir=/etc/hosts.d\ndhcp-hostsfile=\n\
             dhcp-ignore=tag:!known,tag:guest\n\
             conf-file=\nconf-file=/etc/dnsmasq.conf\n",
        );
        let config = DnsmasqConfig::load(Path::new("/etc/dnsmasq.conf"), &files).unwrap();
        assert_eq!(config.hosts.len(), 1);
        assert_eq!(config.hosts[0].source, "/etc/dnsmasq.conf:1");
        assert_eq!(config.hosts[0].hostname.as_deref(), Some("vm-1"));
        assert_eq!(
            config
                .bad_lines
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["/etc/dnsmasq.conf:2: bad hex constant \"zz:zz\""]
        );
        assert_eq!(
            config.hostsfiles,
            [PathBuf::from("/etc/dhcphosts.txt"), "hosts.rel".into()]
        );
        assert_eq!(config.hostsdirs, [PathBuf::from("/etc/hosts.d")]);
        // Only `tag:!known` alone ignores every unknown client.
        assert!(!config.ignore_unknown);
        assert!(ignores_every_unknown("tag:!known"));
        assert!(ignores_every_unknown("#known"));
        assert!(!ignores_every_unknown("tag:!known,tag:guest"));
        assert!(!ignores_every_unknown("tag:known"));
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn reads_a_neutron_command_line() {
        let net = "/var/lib/neutron/dhcp/5b2c4f4e-1b1a-4c5d-9e8f-0a1b2c3d4e5f";
        let files = MemoryFiles::default()
            .with(
                "/etc/neutron/dnsmasq.conf",
                "dhcp-leasefile=/tmp/overridden\nlog-dhcp\n",
            )
            .with(
                format!("{net}/host"),
                "fa:16:3e:8d:2c:11,host-10-0-0-5.openstacklocal,10.0.0.5\n\
                 fa:16:3e:8d:2c:12,host-10-0-1-7.openstacklocal,10.0.1.7,set:port-3e4f\n",
            );
        let line = args(&format!(
            "/usr/sbin/dnsmasq --no-hosts --no-resolv --pid-file={net}/pid \
             --dhcp-hostsfile={net}/host --addn-hosts={net}/addn_hosts \
             --dhcp-optsfile={net}/opts --dhcp-leasefile={net}/leases \
             --dhcp-match=set:ipxe,175 --local-service --bind-dynamic \
             --dhcp-range=set:subnet-11111111-2222,10.0.0.0,static,255.255.255.0,86400s \
             --dhcp-range=set:subnet-33333333-4444,10.0.1.0,static,255.255.255.0,86400s \
             --dhcp-range=set:subnet-55555555-6666,fd00::,static,64,86400s \
             --dhcp-option-force=option:mtu,1450 --dhcp-lease-max=512 \
             --conf-file=/etc/neutron/dnsmasq.conf --domain=openstacklocal \
             --interface=tap5b2c4f4e-1b"
        ));
        let config = DnsmasqConfig::from_args(&line, &files).unwrap();
        assert_eq!(config.range_lines.len(), 2);
        assert!(
            config
                .range_lines
                .iter()
                .all(|l| l.mode == RangeMode::Static)
        );
        assert_eq!(config.range_lines[1].tags, ["set:subnet-33333333-4444"]);
        assert_eq!(config.hostsfiles, [PathBuf::from(format!("{net}/host"))]);
        assert_eq!(config.interfaces, ["tap5b2c4f4e-1b"]);
        // The conf file is read after the command line, and overrides it.
        assert_eq!(config.lease_file, Some(PathBuf::from("/tmp/overridden")));
        assert!(config.is_static_only(Ipv4Addr::new(10, 0, 1, 7), &[]));
        assert!(!config.is_static_only(Ipv4Addr::new(10, 0, 2, 7), &[]));

        let declared = DeclaredHosts::load(&config, &files);
        assert_eq!(declared.len(), 2);
        assert_eq!(DeclaredHosts::watched(&config), config.hostsfiles);

        // An empty --conf-file= is no file; --dhcp-host on the command line is a host line.
        let line = args("dnsmasq --conf-file= --dhcp-host=aa:bb:cc:dd:ee:ff,10.0.0.9 --bad=x");
        let config = DnsmasqConfig::from_args(&line, &files).unwrap();
        assert_eq!(config.hosts[0].source, "command line:2");
        let err = DnsmasqConfig::from_args(&args("dnsmasq --dhcp-range=10.0.0.1"), &files)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "command line:1: bad dhcp-range");
    }

    #[test]
    fn static_only_addresses() {
        let files = MemoryFiles::default();
        let local = [Subnet::new(Ipv4Addr::new(172, 29, 101, 0), 24).unwrap()];
        let a = |d| Ipv4Addr::new(172, 29, 101, d);
        // CloudStack: a static range without a netmask; its subnet is the router's.
        let config = DnsmasqConfig::from_args(
            &args("dnsmasq --dhcp-range=set:interface-eth2-0,172.29.101.1,static"),
            &files,
        )
        .unwrap();
        assert!(config.is_static_only(a(50), &local));
        assert!(!config.is_static_only(a(50), &[]));
        assert!(!config.is_static_only(Ipv4Addr::new(10, 0, 0, 5), &local));
        // A dynamic range in the same subnet: its addresses are for anyone.
        let config = DnsmasqConfig::from_args(
            &args(
                "dnsmasq --dhcp-range=set:interface-eth2-0,172.29.101.1,static \
                 --dhcp-range=172.29.101.100,172.29.101.200,255.255.255.0",
            ),
            &files,
        )
        .unwrap();
        assert!(!config.is_static_only(a(150), &local));
        assert!(config.is_static_only(a(50), &local));
        // Only dynamic: nothing is static-only, until unknown clients are ignored.
        let only_dynamic = "dnsmasq --dhcp-range=172.29.101.100,172.29.101.200,255.255.255.0";
        let config = DnsmasqConfig::from_args(&args(only_dynamic), &files).unwrap();
        assert!(!config.is_static_only(a(150), &local));
        let ignoring = format!("{only_dynamic} --dhcp-ignore=tag:!known");
        let config = DnsmasqConfig::from_args(&args(&ignoring), &files).unwrap();
        assert!(config.is_static_only(a(150), &local));
        let guests_only = format!("{only_dynamic} --dhcp-ignore=tag:!known,tag:guest");
        let config = DnsmasqConfig::from_args(&args(&guests_only), &files).unwrap();
        assert!(!config.is_static_only(a(150), &local));
    }

    #[test]
    fn cleans_lines_like_dnsmasq() {
        assert_eq!(clean_line("  a=b  # comment").unwrap(), "a=b");
        assert_eq!(clean_line("a=b#c").unwrap(), "a=b#c");
        assert_eq!(clean_line("a=\tb").unwrap(), "a= b");
        assert_eq!(unhide(&clean_line(r#"x="a,b\"c""#).unwrap()), "x=a,b\"c");
        assert!(!clean_line(r#"x="a,b""#).unwrap().contains(','));
        assert!(clean_line("x=\"a").is_err());
        // After a quoted part, '#' is a comment when the part began a word.
        assert_eq!(unhide(&clean_line(r##"a "x"#c"##).unwrap()), "a x");
        assert!(skipped_file_name(".x") && skipped_file_name("x~") && skipped_file_name("#x#"));
        assert!(!skipped_file_name("x#") && !skipped_file_name("hosts"));
    }
}
