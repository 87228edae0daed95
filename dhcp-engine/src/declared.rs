//! What dnsmasq's configuration *declares*: its `dhcp-host` lines (inline, in every
//! `dhcp-hostsfile`, in every file of every `dhcp-hostsdir`), parsed the way dnsmasq's
//! `option.c` parses them (`case 'G'` / `LOPT_BANK` of `one_opt`), and matched against leases
//! the way `find_config_match` (`dhcp-common.c`) finds a host for a client.
//!
//! The observer needs this to tell a host the orchestrator named, which must never be released
//! behind its back, from a dynamic client. A line that does not parse is reported and skipped,
//! as dnsmasq does for hostsfile lines; it never hides the other lines.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{
    dnsmasq_conf::{ConfFiles, DnsmasqConfig, clean_line, skipped_file_name, unhide},
    leases::Lease,
};

/// One `dhcp-host` line: inline, or a line of a hostsfile or hostsdir file (the same syntax
/// without the `dhcp-host=` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine {
    /// Hardware addresses, possibly with wildcards; several are allowed (one host, two NICs).
    pub macs: Vec<MacPattern>,
    pub client_id: Option<ClientIdMatch>,
    /// The fixed IPv4 address. Given twice, the last one counts (dnsmasq overwrites it).
    pub ip: Option<Ipv4Addr>,
    /// `[fd00::5]`, `[::5]`, `[1234::50/126]` as written: DHCPv6, not used yet, but checked
    /// as dnsmasq checks them.
    pub ipv6: Vec<String>,
    /// The name's first label: dnsmasq keeps the rest as the domain (`strip_hostname`) and
    /// compares clients' names with this label only.
    pub hostname: Option<String>,
    pub domain: Option<String>,
    /// `set:` (and the old `net:`) names this line gives a matching client.
    pub tags: Vec<String>,
    /// `tag:` names a client must carry for this line to apply.
    pub tag_filters: Vec<String>,
    pub lease_time: Option<LeaseTime>,
    /// `ignore`: dnsmasq never answers this client.
    pub ignore: bool,
    /// `path:line` the line came from, for reports.
    pub source: String,
}

/// What an event knows of the client it is about, for [`DeclaredHosts::line_for`]: the keys
/// dnsmasq matches host lines on, each when known, and the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKeys<'a> {
    pub hwaddr: Option<&'a [u8]>,
    /// The ARP hardware type of `hwaddr` (1, Ethernet, where a packet or lease gives none).
    pub htype: u8,
    pub client_id: Option<&'a [u8]>,
    /// The name the client gave (option 12, as its lease keeps it).
    pub hostname: Option<&'a str>,
    pub ip: Option<Ipv4Addr>,
}

impl<'a> ClientKeys<'a> {
    /// An Ethernet client known by its hardware address (and id, when it sent one).
    pub fn ethernet(hwaddr: &'a [u8], client_id: Option<&'a [u8]>) -> ClientKeys<'a> {
        ClientKeys {
            hwaddr: Some(hwaddr),
            htype: 1,
            client_id,
            hostname: None,
            ip: None,
        }
    }

    /// Only an address: the event names no client.
    pub fn address(ip: Ipv4Addr) -> ClientKeys<'static> {
        ClientKeys {
            hwaddr: None,
            htype: 1,
            client_id: None,
            hostname: None,
            ip: Some(ip),
        }
    }

    /// The client of a lease, as the table lists it.
    pub fn of_lease(lease: &'a Lease) -> ClientKeys<'a> {
        ClientKeys {
            hwaddr: Some(&lease.hwaddr),
            htype: lease.htype,
            client_id: lease.client_id.as_deref(),
            hostname: lease.hostname.as_deref(),
            ip: match lease.ip {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            },
        }
    }

    /// The same keys as a lease, for [`HostLine`]'s matching.
    fn as_lease(&self) -> Lease {
        Lease {
            ip: self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED).into(),
            hwaddr: self.hwaddr.unwrap_or_default().to_vec(),
            htype: self.htype,
            client_id: self.client_id.map(<[u8]>::to_vec),
            hostname: self.hostname.map(str::to_owned),
            expiry: crate::leases::Expiry::Never,
            iaid: None,
        }
    }
}

/// A hardware address of a host line: `52:54:00:*:*:*`, `06-00:20:e0:3b:13:af`, any length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacPattern {
    /// The ARP hardware type the address is limited to (`06-` prefix, in hex); `None` matches
    /// any type (dnsmasq stores 0 and treats it so).
    pub htype: Option<u32>,
    /// The bytes; `None` is a `*` wildcard byte.
    pub bytes: Vec<Option<u8>>,
}

/// The `id:` of a host line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdMatch {
    /// `id:01:02:03:04` (hex, because it has a `:`) or `id:laptop` (the text's bytes).
    Id(Vec<u8>),
    /// `id:*`: dnsmasq ignores the client's id for this host and goes by hardware address.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseTime {
    Infinite,
    /// At least 120: dnsmasq raises shorter times, which confuse some clients.
    Seconds(u32),
}

/// Why dnsmasq rejects a host line (its messages, with the field).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostLineError {
    #[error("bad hex constant {0:?}")]
    BadHex(String),
    #[error("bad IPv6 address {0:?}")]
    BadIpv6(String),
    #[error("bad IPv6 prefix {0:?}")]
    BadIpv6Prefix(String),
    #[error("bad DHCP host name {0:?}")]
    BadHostname(String),
    #[error("missing \"")]
    MissingQuote,
}

/// dnsmasq's limit on hardware address length (`DHCP_CHADDR_MAX`).
const CHADDR_MAX: usize = 16;

impl HostLine {
    /// A line that declares nothing yet, from `source` (`file:line`, or where in Kea's
    /// configuration).
    pub fn empty(source: String) -> HostLine {
        HostLine {
            macs: Vec::new(),
            client_id: None,
            ip: None,
            ipv6: Vec::new(),
            hostname: None,
            domain: None,
            tags: Vec::new(),
            tag_filters: Vec::new(),
            lease_time: None,
            ignore: false,
            source,
        }
    }

    /// Parses a host line. Each comma field is classified as dnsmasq does, in any order: with a
    /// `:` it is `id:`, `set:`/`net:`, `tag:`, a bracketed IPv6 address or else a hardware
    /// address; without one, an IPv4 address, a lease time, `infinite`, `ignore` or else the
    /// hostname. Empty fields are ignored.
    pub fn parse(text: &str, source: String) -> Result<HostLine, HostLineError> {
        let line = clean_line(text).map_err(|_| HostLineError::MissingQuote)?;
        let mut host = HostLine::empty(source);
        for field in line.split(',').map(|f| f.trim_matches(' ')) {
            host.field(field)?;
        }
        Ok(host)
    }

    /// Whether this line is the lease's client, as dnsmasq's `find_config_match` decides: by
    /// client id when the line has one (also with the zero byte dhcpcd wrongly puts before
    /// textual ids), by any hardware address (the MAC loop there checks every line, those with
    /// an `id:` too, so a client whose id differs still matches by MAC), and by hostname only a
    /// line with neither id nor hardware address (`rfc2131.c` refuses name matches for the
    /// others, "to avoid impersonation by name"). Tags are not checked: a line that might
    /// apply counts.
    pub fn matches(&self, lease: &Lease) -> bool {
        self.matches_client_id(lease)
            || self
                .macs
                .iter()
                .any(|m| m.matches(lease.htype, &lease.hwaddr))
            || self.matches_hostname(lease)
    }

    /// The name this line gives its client, as written (label and domain): CloudStack's
    /// `i-2-50-VM`, Neutron's `host-10-0-0-5.openstacklocal`.
    pub fn name(&self) -> Option<String> {
        let label = self.hostname.as_deref()?;
        Some(match &self.domain {
            Some(domain) => format!("{label}.{domain}"),
            None => label.to_owned(),
        })
    }

    fn has_client_id(&self) -> bool {
        matches!(self.client_id, Some(ClientIdMatch::Id(_)))
    }

    fn matches_client_id(&self, lease: &Lease) -> bool {
        let (Some(ClientIdMatch::Id(id)), Some(clid)) = (&self.client_id, &lease.client_id) else {
            return false;
        };
        let dhcpcd_zero = lease.ip.is_ipv4() && clid.first() == Some(&0) && clid[1..] == id[..];
        id == clid || dhcpcd_zero
    }

    fn matches_hostname(&self, lease: &Lease) -> bool {
        if self.has_client_id() || !self.macs.is_empty() {
            return false;
        }
        match (&self.hostname, &lease.hostname) {
            (Some(name), Some(client)) => {
                let label = client.split('.').next().unwrap_or_default();
                name.eq_ignore_ascii_case(label)
            }
            _ => false,
        }
    }

    fn field(&mut self, field: &str) -> Result<(), HostLineError> {
        if field.contains(':') {
            if field
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case("id:"))
            {
                self.client_id(&field[3..])?;
            } else if let Some(tag) = field.strip_prefix("set:").or(field.strip_prefix("net:")) {
                // `net:` here is the old spelling of `set:` ("strange backwards-compat needs").
                push_name(&mut self.tags, tag);
            } else if let Some(tag) = field.strip_prefix("tag:") {
                push_name(&mut self.tag_filters, tag);
            } else if let Some(inner) = field.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
                check_ipv6(inner)?;
                self.ipv6.push(unhide(field));
            } else {
                self.macs.push(MacPattern::parse(field)?);
            }
        } else if field.contains('.')
            && let Ok(ip) = field.parse::<Ipv4Addr>()
        {
            self.ip = Some(ip);
        } else if let Some(seconds) = lease_seconds(field) {
            self.lease_time = seconds.map(LeaseTime::Seconds).or(self.lease_time);
        } else if field == "infinite" {
            self.lease_time = Some(LeaseTime::Infinite);
        } else if field == "ignore" {
            self.ignore = true;
        } else {
            // dnsmasq 2.91 rejects a second name; 2.90 and older (what routers run) keep the
            // last one, and so do we: a line dnsmasq may use must not be lost.
            let name = unhide(field);
            let name =
                legal_hostname(&name).ok_or_else(|| HostLineError::BadHostname(name.clone()))?;
            let (label, domain) = match name.split_once('.') {
                Some((label, domain)) => (label, (!domain.is_empty()).then(|| domain.to_owned())),
                None => (name, None),
            };
            self.hostname = Some(label.to_owned());
            self.domain = domain;
        }
        Ok(())
    }

    /// `id:*`, `id:` + hex with `:` or `-` separators, or `id:` + text.
    ///
    /// A hex id with a `*` byte is accepted but kept as no id: dnsmasq accepts it too, but
    /// stores whatever its parser's buffer holds for that byte (the man page allows wildcards
    /// in hardware addresses only). The line still matches by its other fields.
    fn client_id(&mut self, value: &str) -> Result<(), HostLineError> {
        let parsed = if value.starts_with('*') {
            Some(ClientIdMatch::Any)
        } else if value.contains(':') {
            let (_, bytes) = parse_hex(value, usize::MAX, false)
                .ok_or_else(|| HostLineError::BadHex(unhide(value)))?;
            bytes
                .into_iter()
                .collect::<Option<Vec<u8>>>()
                .map(ClientIdMatch::Id)
        } else {
            Some(ClientIdMatch::Id(unhide(value).into_bytes()))
        };
        // dnsmasq keeps both flags when both forms are given: an id still matches then.
        if let Some(parsed) = parsed
            && !(parsed == ClientIdMatch::Any && self.has_client_id())
        {
            self.client_id = Some(parsed);
        }
        Ok(())
    }
}

impl MacPattern {
    /// Parses a hardware address as dnsmasq's `parse_hex` does (see there).
    pub fn parse(text: &str) -> Result<MacPattern, HostLineError> {
        let (htype, bytes) =
            parse_hex(text, CHADDR_MAX, true).ok_or_else(|| HostLineError::BadHex(unhide(text)))?;
        Ok(MacPattern { htype, bytes })
    }

    /// Whether a client's hardware address matches: same length, same type unless the pattern
    /// has none, every non-wildcard byte equal (`config_has_mac` and the wildcard loop of
    /// `find_config_match`).
    pub fn matches(&self, htype: u8, hwaddr: &[u8]) -> bool {
        self.htype.is_none_or(|t| t == u32::from(htype))
            && self.bytes.len() == hwaddr.len()
            && self
                .bytes
                .iter()
                .zip(hwaddr)
                .all(|(want, have)| want.is_none_or(|w| w == *have))
    }

    pub fn is_wildcard(&self) -> bool {
        self.bytes.contains(&None)
    }
}

/// Every host line dnsmasq's configuration declares: inline `dhcp-host`, every
/// `dhcp-hostsfile`, every file in every `dhcp-hostsdir`.
///
/// dnsmasq only *adds* the records of a hostsdir until it is sent SIGHUP (man page,
/// `--dhcp-hostsdir`): a line removed from such a file may still be in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredHosts {
    pub hosts: Vec<HostLine>,
    /// Lines that did not parse (dnsmasq logs and skips them too), each naming file:line, and
    /// lines giving an address an earlier line gives (dnsmasq skips one of them; both are kept
    /// in `hosts`, since either may be the one in force).
    pub problems: Vec<String>,
    /// Files or directories that could not be read (the caller keeps its last good set for
    /// them: a hostsfile being rewritten must not look like every host was dropped).
    pub unreadable: Vec<PathBuf>,
    /// The newest modification time (Unix ns) of the hostsfiles, hostsdirs and their files,
    /// when the reader knows it: a host line absent now has been absent at least since then
    /// (a lower bound used for "how long has this host line been gone" at start-up).
    pub newest_change_unix_ns: Option<i128>,
}

impl DeclaredHosts {
    pub fn load(config: &DnsmasqConfig, files: &dyn ConfFiles) -> DeclaredHosts {
        let mut declared = DeclaredHosts {
            hosts: config.hosts.clone(),
            problems: config.bad_lines.iter().map(ToString::to_string).collect(),
            ..DeclaredHosts::default()
        };
        for path in &config.hostsfiles {
            declared.load_hostsfile(path, files);
        }
        for dir in &config.hostsdirs {
            declared.load_dir(dir, files);
        }
        declared.note_duplicate_addresses();
        declared
    }

    /// Whether some host line declares the lease's client (see [`HostLine::matches`]).
    /// `ignore` lines count too: never release what the orchestrator named.
    pub fn declares(&self, lease: &Lease) -> bool {
        self.hosts.iter().any(|h| h.matches(lease))
    }

    /// The host lines that give `ip` as their fixed address (not `ignore` ones).
    pub fn for_ip(&self, ip: Ipv4Addr) -> impl Iterator<Item = &HostLine> {
        self.hosts
            .iter()
            .filter(move |h| !h.ignore && h.ip == Some(ip))
    }

    /// The host line dnsmasq takes for a client, picked as `find_config_match`
    /// (`dhcp-common.c`) picks it: a line with the client's id (also with dhcpcd's zero byte
    /// before it), else one with its exact hardware address, else a line with neither id nor
    /// hardware address that gives the client's name (see [`HostLine::matches`]), else the
    /// wildcard address with the most fixed bytes that matches. dnsmasq puts each line it
    /// reads in front of those read before (`new->next = daemon->dhcp_conf` in `option.c`), so
    /// of two lines that match alike the one read last is taken. Tags and ranges are not
    /// checked, as in [`HostLine::matches`].
    ///
    /// An event that knows no client (no hardware address, no id), only an address, gets the
    /// line that gives that address as fixed: the first read (dnsmasq skips a later duplicate).
    /// One that knows a client no line matches gets none, even if a line gives its address:
    /// that line names another client.
    ///
    /// A scan of the lines, not an index lookup: it runs once per event, not per lease.
    pub fn line_for(&self, client: &ClientKeys) -> Option<&HostLine> {
        if client.hwaddr.is_none() && client.client_id.is_none() {
            return client.ip.and_then(|ip| self.for_ip(ip).next());
        }
        let probe = client.as_lease();
        let newest_first = || self.hosts.iter().rev();
        if probe.client_id.is_some()
            && let Some(line) = newest_first().find(|h| h.matches_client_id(&probe))
        {
            return Some(line);
        }
        let hwaddr = client.hwaddr.unwrap_or_default();
        if !hwaddr.is_empty()
            && let Some(line) = newest_first().find(|h| {
                h.macs
                    .iter()
                    .any(|m| !m.is_wildcard() && m.matches(client.htype, hwaddr))
            })
        {
            return Some(line);
        }
        if let Some(line) = newest_first().find(|h| h.matches_hostname(&probe)) {
            return Some(line);
        }
        // memcmp_masked: 0 for no match, else 1 + the fixed bytes; only a higher count wins.
        let mut best: Option<(&HostLine, usize)> = None;
        for host in newest_first() {
            for pattern in host.macs.iter().filter(|m| m.is_wildcard()) {
                if !pattern.matches(client.htype, hwaddr) {
                    continue;
                }
                let count = 1 + pattern.bytes.iter().filter(|b| b.is_some()).count();
                if best.is_none_or(|(_, c)| count > c) {
                    best = Some((host, count));
                }
            }
        }
        best.map(|(host, _)| host)
    }

    /// The name the host lines give a client ([`DeclaredHosts::line_for`], [`HostLine::name`]).
    pub fn name_for(&self, client: &ClientKeys) -> Option<String> {
        self.line_for(client).and_then(HostLine::name)
    }

    /// The paths to watch for changes: every hostsfile and hostsdir (and nothing else).
    pub fn watched(config: &DnsmasqConfig) -> Vec<PathBuf> {
        config
            .hostsfiles
            .iter()
            .chain(&config.hostsdirs)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// A hostsfile may also be a directory: dnsmasq then reads its files (`expand_filelist`).
    fn load_hostsfile(&mut self, path: &Path, files: &dyn ConfFiles) {
        match files.read(path) {
            Ok(text) => self.add_file(path, &text, files),
            Err(_) if files.files_in(path).is_ok() => self.load_dir(path, files),
            Err(_) => self.unreadable.push(path.to_owned()),
        }
    }

    /// The files of a directory, sorted, without those dnsmasq skips (`file_filter`).
    fn load_dir(&mut self, dir: &Path, files: &dyn ConfFiles) {
        let Ok(mut listed) = files.files_in(dir) else {
            self.unreadable.push(dir.to_owned());
            return;
        };
        self.note_mtime(dir, files);
        listed.sort();
        for file in listed {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            if skipped_file_name(&name) {
                continue;
            }
            match files.read(&file) {
                Ok(text) => self.add_file(&file, &text, files),
                Err(_) => self.unreadable.push(file),
            }
        }
    }

    fn add_file(&mut self, path: &Path, text: &str, files: &dyn ConfFiles) {
        self.note_mtime(path, files);
        for (index, raw) in text.lines().enumerate() {
            let source = format!("{}:{}", path.display(), index + 1);
            if clean_line(raw).is_ok_and(|line| line.is_empty()) {
                continue;
            }
            match HostLine::parse(raw, source) {
                Ok(host) => self.hosts.push(host),
                Err(err) => self
                    .problems
                    .push(format!("{}:{}: {err}", path.display(), index + 1)),
            }
        }
    }

    fn note_mtime(&mut self, path: &Path, files: &dyn ConfFiles) {
        if let Some(ns) = files.modified_unix_ns(path) {
            self.newest_change_unix_ns = self.newest_change_unix_ns.max(Some(ns));
        }
    }

    /// dnsmasq rejects a host line whose address an earlier line already gives ("duplicate
    /// dhcp-host IP address"), and which one is earlier depends on its reading order.
    fn note_duplicate_addresses(&mut self) {
        let mut first: HashMap<Ipv4Addr, &str> = HashMap::new();
        for host in &self.hosts {
            let Some(ip) = host.ip else { continue };
            if let Some(other) = first.insert(ip, &host.source) {
                self.problems.push(format!(
                    "{}: duplicate dhcp-host IP address {ip} (also {other}): dnsmasq skips one \
                     of these lines",
                    host.source
                ));
            }
        }
    }
}

fn push_name(names: &mut Vec<String>, name: &str) {
    if !name.is_empty() {
        names.push(unhide(name));
    }
}

/// dnsmasq's `parse_hex` (`util.c`): groups separated by `:`, `-` or space, each `*` (a
/// wildcard byte) or hex digits, two to a byte (`abc` is `ab`, `0c`); empty groups are skipped;
/// with `htype`, a first group followed by `-` is the hardware type. At most `max` bytes: the
/// rest is not read. `None` for any other character.
fn parse_hex(text: &str, max: usize, htype: bool) -> Option<(Option<u32>, Vec<Option<u8>>)> {
    let (mut kind, mut want_kind, mut bytes) = (None, htype, Vec::new());
    let mut rest = text;
    while bytes.len() < max {
        let end = rest.find([':', '-', ' ']).unwrap_or(rest.len());
        let group = &rest[..end];
        if !group.chars().all(|c| c == '*' || c.is_ascii_hexdigit()) {
            return None;
        }
        if !group.is_empty() {
            if want_kind && bytes.is_empty() && rest[end..].starts_with('-') {
                // strtol: the leading hex digits, 0 (any type) for none.
                let digits = group.split('*').next().unwrap_or_default();
                let value = u32::from_str_radix(digits, 16).unwrap_or(if digits.is_empty() {
                    0
                } else {
                    u32::MAX
                });
                kind = (value != 0).then_some(value);
                want_kind = false;
            } else if group == "*" {
                bytes.push(None);
            } else if group.contains('*') {
                return None;
            } else {
                for pair in group.as_bytes().chunks(2).take(max - bytes.len()) {
                    let pair = std::str::from_utf8(pair).ok()?;
                    bytes.push(Some(u8::from_str_radix(pair, 16).ok()?));
                }
            }
        }
        if end == rest.len() {
            break;
        }
        rest = &rest[end + 1..];
    }
    Some((kind, bytes))
}

/// A bracketed IPv6 address, with an optional prefix length whose host bits (of the low 64,
/// which is what dnsmasq looks at) must be zero.
fn check_ipv6(inner: &str) -> Result<(), HostLineError> {
    let (addr, prefix) = match inner.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (inner, None),
    };
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| HostLineError::BadIpv6(unhide(inner)))?;
    if let Some(prefix) = prefix {
        let bad = || HostLineError::BadIpv6Prefix(unhide(inner));
        let prefix: u32 = prefix.parse().map_err(|_| bad())?;
        let host_bits = 128u32.checked_sub(prefix).ok_or_else(bad)?;
        let mask = 1u64.checked_shl(host_bits).map_or(u64::MAX, |m| m - 1);
        if (u128::from(addr) as u64) & mask != 0 {
            return Err(bad());
        }
    }
    Ok(())
}

/// A lease time as dnsmasq reads it in a host line: digits (spaces allowed) with an optional
/// `s`/`m`/`h`/`d`/`w` suffix. `Some(None)` for a field with no digits at all (empty: ignored),
/// `None` when the field is not a number.
fn lease_seconds(field: &str) -> Option<Option<u32>> {
    // The suffix is taken off only when something is left (`s` alone is a name).
    let (number, factor) = match field.as_bytes() {
        [.., _, last] => match last.to_ascii_lowercase() {
            b'w' => (&field[..field.len() - 1], 7 * 24 * 3600),
            b'd' => (&field[..field.len() - 1], 24 * 3600),
            b'h' => (&field[..field.len() - 1], 3600),
            b'm' => (&field[..field.len() - 1], 60),
            b's' => (&field[..field.len() - 1], 1),
            _ => (field, 1),
        },
        _ => (field, 1),
    };
    if !number.chars().all(|c| c == ' ' || c.is_ascii_digit()) {
        return None;
    }
    // atoi: the leading digits.
    let digits: String = number
        .trim_start_matches(' ')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.is_empty() {
        return Some(None);
    }
    let value = digits.parse::<u64>().unwrap_or(u64::MAX);
    let seconds = u32::try_from(value.saturating_mul(factor)).unwrap_or(u32::MAX);
    Some(Some(seconds.max(120)))
}

/// dnsmasq's `canonicalise` and `legal_hostname` (`util.c`): one trailing dot dropped; not
/// empty, at most 1025 characters, labels of at most 63, no control characters; the first
/// label letters and digits, with `-` and `_` after its first character. Non-ASCII is allowed
/// (Debian builds with IDN2, which encodes it). Returns the name without the trailing dot.
fn legal_hostname(name: &str) -> Option<&str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let fits = !name.is_empty()
        && name.len() <= 1025
        && name.split('.').all(|label| label.len() <= 63)
        && !name.chars().any(|c| c.is_ascii_control());
    let first = name.split('.').next().unwrap_or_default();
    let legal_first = first.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphanumeric() || !c.is_ascii() || (i > 0 && (c == '-' || c == '_'))
    });
    (fits && legal_first).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dnsmasq_conf::MemoryFiles, leases::Expiry};
    use proptest::prelude::*;

    fn parse(text: &str) -> HostLine {
        HostLine::parse(text, "test:1".into()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn mac(text: &str) -> MacPattern {
        MacPattern::parse(text).unwrap()
    }

    fn lease(hwaddr: &[u8], client_id: Option<&[u8]>, hostname: Option<&str>) -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, 99).into(),
            hwaddr: hwaddr.to_vec(),
            htype: 1,
            client_id: client_id.map(<[u8]>::to_vec),
            hostname: hostname.map(str::to_owned),
            expiry: Expiry::Never,
            iaid: None,
        }
    }

    const A: fn(u8, u8, u8, u8) -> Ipv4Addr = Ipv4Addr::new;

    #[test]
    fn parses_cloudstack_lines() {
        let h = parse("02:00:4c:5e:00:02,10.1.1.50,vm-1,infinite");
        assert_eq!(h.macs, [mac("02:00:4c:5e:00:02")]);
        assert_eq!(h.ip, Some(A(10, 1, 1, 50)));
        assert_eq!(h.hostname.as_deref(), Some("vm-1"));
        assert_eq!(h.lease_time, Some(LeaseTime::Infinite));
        assert!(!h.ignore);

        let h = parse("02:00:4c:5e:00:03,set:vm_3,10.1.1.51,vm-3,infinite");
        assert_eq!(h.tags, ["vm_3"]);
        assert_eq!(h.ip, Some(A(10, 1, 1, 51)));
        assert_eq!(h.hostname.as_deref(), Some("vm-3"));
    }

    #[test]
    fn parses_neutron_lines() {
        let h = parse("fa:16:3e:8d:2c:11,host-10-0-0-5.openstacklocal,10.0.0.5");
        assert_eq!(h.macs, [mac("fa:16:3e:8d:2c:11")]);
        assert_eq!(h.hostname.as_deref(), Some("host-10-0-0-5"));
        assert_eq!(h.domain.as_deref(), Some("openstacklocal"));
        assert_eq!(h.ip, Some(A(10, 0, 0, 5)));

        let h = parse(
            "fa:16:3e:8d:2c:12,host-10-0-1-7.openstacklocal,10.0.1.7,\
             set:port-3e4f1a2b-0c1d-4e5f-8a9b-0c1d2e3f4a5b",
        );
        assert_eq!(h.tags, ["port-3e4f1a2b-0c1d-4e5f-8a9b-0c1d2e3f4a5b"]);
        assert_eq!(h.ip, Some(A(10, 0, 1, 7)));

        let h = parse("fa:16:3e:11:22:33,host-fd00--5.openstacklocal,[fd00::5]");
        assert_eq!(h.ipv6, ["[fd00::5]"]);
        assert_eq!(h.ip, None);
        assert_eq!(h.hostname.as_deref(), Some("host-fd00--5"));
    }

    #[test]
    fn parses_the_other_forms() {
        let h = parse("id:01:02:03:04,10.0.0.9");
        assert_eq!(h.client_id, Some(ClientIdMatch::Id(vec![1, 2, 3, 4])));
        assert!(h.macs.is_empty());

        let h = parse("id:*,02:00:00:00:00:01,10.0.0.10");
        assert_eq!(h.client_id, Some(ClientIdMatch::Any));
        assert_eq!(h.macs, [mac("02:00:00:00:00:01")]);

        let h = parse("52:54:00:*:*:*,ignore");
        assert!(h.ignore && h.macs[0].is_wildcard());
        assert_eq!(
            h.macs[0].bytes,
            [Some(0x52), Some(0x54), Some(0), None, None, None]
        );

        let h = parse("laptop,10.0.0.20");
        assert_eq!(
            (h.hostname.as_deref(), h.ip),
            (Some("laptop"), Some(A(10, 0, 0, 20)))
        );

        let h = parse("11:22:33:44:55:66,12:61:32:43:54:65,10.0.0.21");
        assert_eq!(h.macs, [mac("11:22:33:44:55:66"), mac("12:61:32:43:54:65")]);

        let h = parse("02:dc:00:00:99:99,ignore");
        assert!(h.ignore);

        // Text client ids are the text's bytes (no ':' in them); any case of "id:".
        let h = parse("ID:laptop-eth0,set:a,tag:b,45m");
        assert_eq!(
            h.client_id,
            Some(ClientIdMatch::Id(b"laptop-eth0".to_vec()))
        );
        assert_eq!(
            (h.tags, h.tag_filters),
            (vec!["a".into()], vec!["b".into()])
        );
        assert_eq!(h.lease_time, Some(LeaseTime::Seconds(45 * 60)));
        // `net:` is the old `set:`; lease times have a floor of 120 s; `deleted` is a name.
        let h = parse("net:old,aa:bb:cc:dd:ee:ff,30,deleted");
        assert_eq!(h.tags, ["old"]);
        assert_eq!(h.lease_time, Some(LeaseTime::Seconds(120)));
        assert_eq!(h.hostname.as_deref(), Some("deleted"));
        assert_eq!(parse("1w").lease_time, Some(LeaseTime::Seconds(604_800)));
        // Quotes make `,` `:` `.` text; comments start at a word.
        let h = parse(r#"id:"a,b:c",10.0.0.30 # the printer"#);
        assert_eq!(h.client_id, Some(ClientIdMatch::Id(b"a,b:c".to_vec())));
        assert_eq!(h.ip, Some(A(10, 0, 0, 30)));
        // Empty fields and spaces around commas are nothing.
        let h = parse(" aa:bb:cc:dd:ee:ff , ,10.0.0.31 , vm ");
        assert_eq!(
            (h.ip, h.hostname.as_deref()),
            (Some(A(10, 0, 0, 31)), Some("vm"))
        );
    }

    /// Checked against dnsmasq 2.90 (`dnsmasq --test`): these are accepted.
    #[test]
    fn accepts_what_dnsmasq_accepts() {
        // Two addresses: the last one counts.
        assert_eq!(parse("10.0.0.1,10.0.0.2").ip, Some(A(10, 0, 0, 2)));
        // Not an address, but a legal name (its first label is "10"); then `x` replaces it.
        let h = parse("10.0.0.300,x");
        assert_eq!((h.ip, h.hostname.as_deref()), (None, Some("x")));
        // No ':' means no hardware address: a name.
        assert_eq!(
            parse("52-54-00-11-22-33").hostname.as_deref(),
            Some("52-54-00-11-22-33")
        );
        assert_eq!(parse("[1234::50/126]").ipv6, ["[1234::50/126]"]);
        assert_eq!(parse("id:*x").client_id, Some(ClientIdMatch::Any));
        assert_eq!(parse("1x").hostname.as_deref(), Some("1x"));
        assert_eq!(parse("Infinite").hostname.as_deref(), Some("Infinite"));
        assert_eq!(
            parse("host_name.a b").hostname.as_deref(),
            Some("host_name")
        );
        assert_eq!(parse("").macs, []);
        assert_eq!(parse("10.0.0.5").ip, Some(A(10, 0, 0, 5)));
        // A wildcard in a client id: accepted, the id not kept, the MAC still there.
        let h = parse("id:01:*:02,aa:bb:cc:dd:ee:ff");
        assert_eq!((h.client_id, h.macs.len()), (None, 1));
        assert_eq!(
            parse("id:01:02,id:*").client_id,
            Some(ClientIdMatch::Id(vec![1, 2]))
        );
        // Quoted, an address is text: a name whose first label is "10".
        let h = parse(r#""10.0.0.1""#);
        assert_eq!((h.ip, h.hostname.as_deref()), (None, Some("10")));
    }

    /// Checked against dnsmasq 2.90 (`dnsmasq --test`): these are rejected.
    #[test]
    fn rejects_what_dnsmasq_rejects() {
        let err = |text: &str| HostLine::parse(text, "f:1".into()).unwrap_err();
        assert_eq!(err("zz:11,10.0.0.5"), HostLineError::BadHex("zz:11".into()));
        assert!(matches!(err("foo:bar"), HostLineError::BadHex(_)));
        assert!(matches!(err("ab*:11:22,ignore"), HostLineError::BadHex(_)));
        assert!(matches!(err("id:zz:11"), HostLineError::BadHex(_)));
        assert!(matches!(err("[fd00::5"), HostLineError::BadHex(_)));
        assert!(matches!(err("[::1]/64"), HostLineError::BadHex(_)));
        assert!(matches!(err("[zz::]"), HostLineError::BadIpv6(_)));
        assert!(matches!(
            err("x,[1234::51/126]"),
            HostLineError::BadIpv6Prefix(_)
        ));
        for name in ["-foo", "_host", "a b", "host#x", "[]", "-1"] {
            assert!(matches!(err(name), HostLineError::BadHostname(_)), "{name}");
        }
        assert_eq!(err("\"open"), HostLineError::MissingQuote);
        // Quoted, `id:` is no keyword but a name, and ':' is not legal in one.
        assert_eq!(err(r#""id:x""#), HostLineError::BadHostname("id:x".into()));
    }

    #[test]
    fn hardware_addresses_with_types_wildcards_and_odd_lengths() {
        let m = mac("06-00:20:e0:3b:13:af");
        assert_eq!(m.htype, Some(6));
        assert!(m.matches(6, &[0, 0x20, 0xe0, 0x3b, 0x13, 0xaf]));
        assert!(!m.matches(1, &[0, 0x20, 0xe0, 0x3b, 0x13, 0xaf]));
        // No type: any type. A first group before '-' is the type, later '-' separate.
        let m = mac("00:20:e0:3b:13:af");
        assert!(m.htype.is_none() && m.matches(6, &[0, 0x20, 0xe0, 0x3b, 0x13, 0xaf]));
        assert_eq!(mac("aa-bb-cc:dd").htype, Some(0xaa));
        assert_eq!(
            mac("aa-bb-cc:dd").bytes,
            [Some(0xbb), Some(0xcc), Some(0xdd)]
        );
        assert_eq!(mac("01-52:54:00:11:22:33").htype, Some(1));
        // Wildcards match any byte; lengths must agree.
        let m = mac("52:54:00:*:*:*");
        assert!(m.matches(1, &[0x52, 0x54, 0, 1, 2, 3]));
        assert!(!m.matches(1, &[0x52, 0x55, 0, 1, 2, 3]));
        assert!(!m.matches(1, &[0x52, 0x54, 0, 1, 2]));
        // Two digits a byte, an odd one alone; at most 16 bytes.
        assert_eq!(mac("abc:d").bytes, [Some(0xab), Some(0x0c), Some(0x0d)]);
        let long = mac("11:22:33:44:55:66:77:88:99:00:11:22:33:44:55:66:77:88");
        assert_eq!(long.bytes.len(), 16);
        assert!(mac(":").bytes.is_empty());
    }

    #[test]
    fn matches_by_client_id_or_hardware_address() {
        let by_id = parse("id:01:02:03:04,10.0.0.9");
        assert!(by_id.matches(&lease(&[9; 6], Some(&[1, 2, 3, 4]), None)));
        assert!(!by_id.matches(&lease(&[9; 6], Some(&[1, 2, 3, 5]), None)));
        assert!(!by_id.matches(&lease(&[9; 6], None, None)));
        // dhcpcd puts a zero before textual ids; find_config_match accepts that (IPv4).
        let text = parse("id:pc,10.0.0.8");
        assert!(text.matches(&lease(&[9; 6], Some(b"\0pc"), None)));

        // A client id on the lease does not stop a MAC match: find_config_match's MAC loop
        // runs over every line after the client-id loop found none.
        let by_mac = parse("02:00:4c:5e:00:02,10.1.1.50,vm-1");
        let mac_bytes = [2, 0, 0x4c, 0x5e, 0, 2];
        assert!(by_mac.matches(&lease(&mac_bytes, Some(&[1, 2, 0, 0x4c, 0x5e, 0, 2]), None)));
        // And a line with both matches by MAC when the id differs.
        let both = parse("id:ff:ff,02:00:4c:5e:00:02");
        assert!(both.matches(&lease(&mac_bytes, Some(&[1]), None)));
        // Hardware type must agree unless the line gives none.
        let mut token_ring = lease(&mac_bytes, None, None);
        token_ring.htype = 6;
        assert!(by_mac.matches(&token_ring));
        assert!(!parse("01-02:00:4c:5e:00:02").matches(&token_ring));
    }

    #[test]
    fn hostname_only_lines_match_by_name() {
        let by_name = parse("laptop,10.0.0.20");
        assert!(by_name.matches(&lease(&[1; 6], None, Some("LAPTOP"))));
        assert!(by_name.matches(&lease(&[1; 6], Some(&[1]), Some("laptop.lan"))));
        assert!(!by_name.matches(&lease(&[1; 6], None, Some("desktop"))));
        assert!(!by_name.matches(&lease(&[1; 6], None, None)));
        // With a MAC or an id, the name alone never matches (rfc2131.c: impersonation).
        assert!(!parse("aa:bb:cc:dd:ee:ff,laptop").matches(&lease(&[1; 6], None, Some("laptop"))));
        assert!(!parse("id:x,laptop").matches(&lease(&[1; 6], None, Some("laptop"))));
        // id:* is no id: the name still matches.
        assert!(parse("id:*,laptop").matches(&lease(&[1; 6], None, Some("laptop"))));
    }

    fn config(text: &str, files: &MemoryFiles) -> DnsmasqConfig {
        let files = files.clone().with("/etc/dnsmasq.conf", text);
        DnsmasqConfig::load(Path::new("/etc/dnsmasq.conf"), &files).unwrap()
    }

    #[test]
    fn loads_inline_hostsfile_and_hostsdir_lines() {
        let files = MemoryFiles::default()
            .with(
                "/etc/dhcphosts.txt",
                "02:00:4c:5e:00:02,10.1.1.50,vm-1,infinite\n\n# comment\n\
                 zz:zz,10.1.1.52\n02:00:4c:5e:00:03,set:vm_3,10.1.1.51,vm-3,infinite\n",
            )
            .with_mtime("/etc/dhcphosts.txt", 1_000)
            .with("/etc/hosts.d/a", "aa:aa:aa:aa:aa:01,10.2.0.1\n")
            .with("/etc/hosts.d/b", "aa:aa:aa:aa:aa:02,10.2.0.2\n")
            .with_mtime("/etc/hosts.d/b", 3_000)
            .with("/etc/hosts.d/.hidden", "aa:aa:aa:aa:aa:03,10.2.0.3\n")
            .with("/etc/hosts.d/c~", "aa:aa:aa:aa:aa:04,10.2.0.4\n")
            .with("/etc/hosts.d/#d#", "aa:aa:aa:aa:aa:05,10.2.0.5\n")
            .with_mtime("/etc/hosts.d", 2_000);
        let config = config(
            "dhcp-host=laptop,10.0.0.20\ndhcp-host=-bad\n\
             dhcp-hostsfile=/etc/dhcphosts.txt\ndhcp-hostsfile=/var/missing\n\
             dhcp-hostsdir=/etc/hosts.d\n",
            &files,
        );
        let declared = DeclaredHosts::load(&config, &files);
        let ips: Vec<String> = declared
            .hosts
            .iter()
            .map(|h| h.ip.unwrap().to_string())
            .collect();
        assert_eq!(
            ips,
            [
                "10.0.0.20",
                "10.1.1.50",
                "10.1.1.51",
                "10.2.0.1",
                "10.2.0.2"
            ]
        );
        assert_eq!(declared.hosts[1].source, "/etc/dhcphosts.txt:1");
        assert_eq!(declared.hosts[2].source, "/etc/dhcphosts.txt:5");
        assert_eq!(
            declared.problems,
            [
                "/etc/dnsmasq.conf:2: bad DHCP host name \"-bad\"",
                "/etc/dhcphosts.txt:4: bad hex constant \"zz:zz\"",
            ]
        );
        assert_eq!(declared.unreadable, [PathBuf::from("/var/missing")]);
        assert_eq!(declared.newest_change_unix_ns, Some(3_000));
        assert_eq!(declared.len(), 5);
        assert_eq!(
            DeclaredHosts::watched(&config),
            [
                PathBuf::from("/etc/dhcphosts.txt"),
                "/var/missing".into(),
                "/etc/hosts.d".into()
            ]
        );
    }

    #[test]
    fn an_unreadable_hostsdir_and_a_hostsfile_directory() {
        let files = MemoryFiles::default()
            .with("/hosts/one", "aa:aa:aa:aa:aa:01,10.2.0.1\n")
            .with("/hosts/two", "aa:aa:aa:aa:aa:02,10.2.0.1\n");
        let config = config("dhcp-hostsfile=/hosts\ndhcp-hostsdir=/gone\n", &files);
        let declared = DeclaredHosts::load(&config, &files);
        assert_eq!(declared.len(), 2);
        assert_eq!(declared.unreadable, [PathBuf::from("/gone")]);
        assert_eq!(declared.newest_change_unix_ns, None);
        // The same address twice: dnsmasq skips one; both stay declared.
        assert_eq!(
            declared.problems,
            [
                "/hosts/two:1: duplicate dhcp-host IP address 10.2.0.1 (also /hosts/one:1): \
              dnsmasq skips one of these lines"
            ]
        );
        assert_eq!(declared.for_ip(A(10, 2, 0, 1)).count(), 2);
    }

    fn declared(lines: &[&str]) -> DeclaredHosts {
        DeclaredHosts {
            hosts: lines
                .iter()
                .enumerate()
                .map(|(i, l)| HostLine::parse(l, format!("h:{}", i + 1)).unwrap())
                .collect(),
            ..DeclaredHosts::default()
        }
    }

    #[test]
    fn the_name_of_a_client_is_that_of_the_line_dnsmasq_takes() {
        let hosts = declared(&[
            "id:01:52:54:00:00:00:01,10.0.0.1,by-id",
            "52:54:00:00:00:01,10.0.0.2,by-mac",
            "52:54:00:00:00:*,10.0.0.3,wild-five",
            "52:54:*:*:*:*,10.0.0.4,wild-two",
            "named-only,10.0.0.5",
            "52:54:00:00:00:09,10.0.0.9,read-first",
            "52:54:00:00:00:09,10.0.0.10,read-last",
            "id:laptop,10.0.0.11,textual-id",
            "06-0a:0b:00:00:00:20,10.0.0.12,token-ring",
            "fa:16:3e:00:00:05,host-10-0-0-6.openstacklocal,10.0.0.6",
            "fa:16:3e:00:00:06,10.0.0.7",
        ]);
        let mac = |last: u8| [0x52, 0x54, 0, 0, 0, last];
        let name = |keys: ClientKeys| hosts.name_for(&keys);
        let id = [1, 0x52, 0x54, 0, 0, 0, 1];
        // The id wins over the hardware address, which wins over wildcards.
        assert_eq!(
            name(ClientKeys::ethernet(&mac(1), Some(&id))).as_deref(),
            Some("by-id")
        );
        assert_eq!(
            name(ClientKeys::ethernet(&mac(1), None)).as_deref(),
            Some("by-mac")
        );
        // Another id: the hardware address still matches (dnsmasq's MAC loop checks them all).
        assert_eq!(
            name(ClientKeys::ethernet(&mac(1), Some(&[1, 2, 3]))).as_deref(),
            Some("by-mac")
        );
        // The wildcard with the most fixed bytes, though another was read after it.
        assert_eq!(
            name(ClientKeys::ethernet(&mac(7), None)).as_deref(),
            Some("wild-five")
        );
        assert_eq!(
            name(ClientKeys::ethernet(&[0x52, 0x54, 9, 9, 9, 9], None)).as_deref(),
            Some("wild-two")
        );
        // Two lines for one client: dnsmasq tries the one read last first.
        assert_eq!(
            name(ClientKeys::ethernet(&mac(9), None)).as_deref(),
            Some("read-last")
        );
        // dhcpcd's zero byte before a textual id.
        assert_eq!(
            name(ClientKeys::ethernet(&[2; 6], Some(b"\0laptop"))).as_deref(),
            Some("textual-id")
        );
        // A hostname-only line, by the client's own name's first label, any case.
        let by_name = ClientKeys {
            hostname: Some("NAMED-ONLY.example"),
            ..ClientKeys::ethernet(&[2; 6], None)
        };
        assert_eq!(name(by_name).as_deref(), Some("named-only"));
        // A hardware type in the line: only that type matches.
        let ring_mac = [0x0a, 0x0b, 0, 0, 0, 0x20];
        assert_eq!(name(ClientKeys::ethernet(&ring_mac, None)), None);
        let token_ring = ClientKeys {
            htype: 6,
            ..ClientKeys::ethernet(&ring_mac, None)
        };
        assert_eq!(name(token_ring).as_deref(), Some("token-ring"));
        // The name as written, domain and all; a line without one names nobody.
        let neutron = [0xfa, 0x16, 0x3e, 0, 0, 5];
        assert_eq!(
            name(ClientKeys::ethernet(&neutron, None)).as_deref(),
            Some("host-10-0-0-6.openstacklocal")
        );
        let nameless = [0xfa, 0x16, 0x3e, 0, 0, 6];
        assert!(
            hosts
                .line_for(&ClientKeys::ethernet(&nameless, None))
                .is_some()
        );
        assert_eq!(name(ClientKeys::ethernet(&nameless, None)), None);
    }

    #[test]
    fn an_address_names_a_client_only_when_the_event_knows_no_other() {
        let hosts = declared(&[
            "02:00:4c:1d:00:02,10.1.1.10,i-2-50-VM,infinite",
            "02:00:4c:1d:00:03,10.1.1.11,i-2-51-VM,infinite",
        ]);
        assert_eq!(
            hosts
                .name_for(&ClientKeys::address(A(10, 1, 1, 10)))
                .as_deref(),
            Some("i-2-50-VM")
        );
        assert_eq!(hosts.name_for(&ClientKeys::address(A(10, 1, 1, 99))), None);
        // Another client on a declared address is not the declared host.
        let stranger = ClientKeys {
            ip: Some(A(10, 1, 1, 10)),
            ..ClientKeys::ethernet(&[2, 0, 0, 0, 0, 0x66], None)
        };
        assert_eq!(hosts.name_for(&stranger), None);
        // A lease's client, as the table lists it.
        let leased = lease(&[2, 0, 0x4c, 0x1d, 0, 3], None, Some("guest-given"));
        assert_eq!(
            hosts.name_for(&ClientKeys::of_lease(&leased)).as_deref(),
            Some("i-2-51-VM")
        );
        assert_eq!(
            DeclaredHosts::default().name_for(&ClientKeys::of_lease(&leased)),
            None
        );
    }

    #[test]
    fn declares_and_for_ip() {
        let files = MemoryFiles::default();
        let config = config(
            "dhcp-host=02:00:4c:5e:00:02,10.1.1.50,vm-1\ndhcp-host=52:54:00:*:*:*,ignore\n\
             dhcp-host=02:dc:00:00:99:99,10.1.1.60,ignore\n",
            &files,
        );
        let declared = DeclaredHosts::load(&config, &files);
        assert!(declared.declares(&lease(&[2, 0, 0x4c, 0x5e, 0, 2], None, None)));
        // `ignore` lines declare too.
        assert!(declared.declares(&lease(&[0x52, 0x54, 0, 7, 7, 7], None, None)));
        assert!(!declared.declares(&lease(&[2, 0, 0, 0, 0, 9], None, None)));
        let fixed: Vec<&str> = declared
            .for_ip(A(10, 1, 1, 50))
            .map(|h| h.source.as_str())
            .collect();
        assert_eq!(fixed, ["/etc/dnsmasq.conf:1"]);
        assert_eq!(declared.for_ip(A(10, 1, 1, 60)).count(), 0);
        assert!(!declared.is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics(fields in prop::collection::vec(
            "[0-9a-fA-F:*.\\[\\]/ \"#\\\\-]{0,20}|id:[ -~]{0,10}|[st]e?[ta]g?:[a-z]{0,4}|\\PC{0,8}",
            0..8,
        )) {
            let _ = HostLine::parse(&fields.join(","), "p:1".into());
        }

        #[test]
        fn cloudstack_lines_round_trip(
            mac in prop::array::uniform6(any::<u8>()),
            ip in any::<u32>(),
            name in "[a-z][a-z0-9-]{0,20}",
        ) {
            prop_assume!(name != "infinite" && name != "ignore");
            let text = format!(
                "{},{},{name},infinite",
                mac.map(|b| format!("{b:02x}")).join(":"),
                Ipv4Addr::from(ip),
            );
            let h = HostLine::parse(&text, "p:1".into()).unwrap();
            prop_assert!(h.macs.len() == 1 && h.macs[0].matches(1, &mac));
            prop_assert_eq!(h.ip, Some(Ipv4Addr::from(ip)));
            prop_assert_eq!(h.hostname, Some(name));
        }
    }
}
