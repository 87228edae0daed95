//! What the observer needs from a dnsmasq configuration: the addresses it listens on and the
//! DHCP ranges it serves, so that served subnets and the likely server id are known before
//! any reply is seen. Follows `conf-file=` and `conf-dir=` like dnsmasq does.
//!
//! The engine does no I/O: the files are read through a [`ConfFiles`], which the agent
//! implements over the file system and the tests over a map.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::subnet::Subnet;

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

/// Where configuration files come from.
pub trait ConfFiles {
    /// The whole text of a file.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The regular files in a directory, in any order.
    fn files_in(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>>;
}

/// Files held in memory, by path (tests, and configurations handed over whole).
#[derive(Debug, Default, Clone)]
pub struct MemoryFiles(pub BTreeMap<PathBuf, String>);

impl MemoryFiles {
    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> MemoryFiles {
        self.0.insert(path.into(), text.into());
        self
    }
}

impl ConfFiles for MemoryFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn files_in(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let files: Vec<PathBuf> = self
            .0
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        if files.is_empty() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok(files)
    }
}

/// One DHCPv4 `dhcp-range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    /// `None` for `static` and `proxy` ranges.
    pub end: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
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
    pub interfaces: Vec<String>,
    pub ranges: Vec<DhcpRange>,
    pub lease_file: Option<PathBuf>,
}

impl DnsmasqConfig {
    pub fn load(path: &Path, files: &dyn ConfFiles) -> Result<DnsmasqConfig, ConfError> {
        let mut config = DnsmasqConfig::default();
        config.read_file(path, 0, files)?;
        Ok(config)
    }

    /// The listen address inside `subnet`: with `listen-address` on a secondary address (a VIP),
    /// that is the server id dnsmasq uses there.
    pub fn listen_address_in(&self, subnet: Subnet) -> Option<Ipv4Addr> {
        self.listen_addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) if subnet.contains(*v4) => Some(*v4),
            _ => None,
        })
    }

    fn read_file(
        &mut self,
        path: &Path,
        depth: usize,
        files: &dyn ConfFiles,
    ) -> Result<(), ConfError> {
        if depth > 16 {
            return Err(ConfError::TooDeep(path.to_owned()));
        }
        let text = files.read(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        for (index, raw) in text.lines().enumerate() {
            let bad = |reason: String| ConfError::Bad {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "listen-address" => {
                    for addr in value.split(',') {
                        let addr = addr
                            .trim()
                            .parse()
                            .map_err(|_| bad(format!("bad listen-address {addr:?}")))?;
                        self.listen_addresses.push(addr);
                    }
                }
                "interface" => self
                    .interfaces
                    .extend(value.split(',').map(|i| i.trim().to_owned())),
                "dhcp-range" => {
                    if let Some(range) = parse_range(value).map_err(bad)? {
                        self.ranges.push(range);
                    }
                }
                "dhcp-leasefile" | "dhcp-lease-file" => {
                    self.lease_file = Some(PathBuf::from(value))
                }
                "conf-file" => self.read_file(Path::new(value), depth + 1, files)?,
                "conf-dir" => self.read_dir(value, depth + 1, files)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// `conf-dir=DIR[,.ext,...][,*.conf,...]`: `*.ext` includes only matching files, `.ext`
    /// excludes; files ending in `~` or starting with `.` are always skipped (as dnsmasq does).
    fn read_dir(
        &mut self,
        spec: &str,
        depth: usize,
        files: &dyn ConfFiles,
    ) -> Result<(), ConfError> {
        let mut parts = spec.split(',').map(str::trim);
        let dir = PathBuf::from(parts.next().unwrap_or(""));
        let (mut include, mut exclude) = (Vec::new(), Vec::new());
        for part in parts {
            match part.strip_prefix('*') {
                Some(suffix) => include.push(suffix.to_owned()),
                None => exclude.push(part.to_owned()),
            }
        }
        let mut listed = files.files_in(&dir).map_err(|source| ConfError::Read {
            path: dir.clone(),
            source,
        })?;
        listed.sort();
        for file in listed {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let skipped = name.starts_with('.')
                || name.ends_with('~')
                || exclude.iter().any(|e| name.ends_with(e.as_str()))
                || (!include.is_empty() && !include.iter().any(|i| name.ends_with(i.as_str())));
            if !skipped {
                self.read_file(&file, depth, files)?;
            }
        }
        Ok(())
    }
}

/// Parses the value of a `dhcp-range`; `Ok(None)` for DHCPv6 ranges.
///
/// Forms: `[tag:T,][set:T,]START[,END|static|proxy][,NETMASK[,BROADCAST]][,LEASE]`, where
/// `interface:` and `constructor:` forms are DHCPv6 or template forms and skipped.
fn parse_range(value: &str) -> Result<Option<DhcpRange>, String> {
    let mut fields = value
        .split(',')
        .map(str::trim)
        .filter(|f| !(f.starts_with("tag:") || f.starts_with("set:") || f.starts_with("net:")))
        .peekable();
    let Some(first) = fields.next() else {
        return Err("empty dhcp-range".into());
    };
    if first.contains(':') || first.starts_with("constructor") {
        return Ok(None); // DHCPv6
    }
    let start: Ipv4Addr = first
        .parse()
        .map_err(|_| format!("bad dhcp-range start {first:?}"))?;
    let end = match fields.next() {
        Some("static" | "proxy") | None => None,
        Some(end) => Some(
            end.parse::<Ipv4Addr>()
                .map_err(|_| format!("bad dhcp-range end {end:?}"))?,
        ),
    };
    // Of the rest, the first address is the netmask (the second, if any, the broadcast).
    let netmask = fields.find_map(|f| f.parse::<Ipv4Addr>().ok());
    Ok(Some(DhcpRange {
        start,
        end,
        netmask,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_range_forms() {
        let r = |s: &str| parse_range(s).unwrap();
        let a = Ipv4Addr::new;
        assert_eq!(
            r("172.29.101.100,172.29.101.200,255.255.255.0,1h"),
            Some(DhcpRange {
                start: a(172, 29, 101, 100),
                end: Some(a(172, 29, 101, 200)),
                netmask: Some(a(255, 255, 255, 0))
            })
        );
        assert_eq!(
            r("set:interface-eth0,172.29.101.1,static,255.255.255.0,infinite"),
            Some(DhcpRange {
                start: a(172, 29, 101, 1),
                end: None,
                netmask: Some(a(255, 255, 255, 0))
            })
        );
        assert_eq!(
            r("10.0.0.10,10.0.0.20"),
            Some(DhcpRange {
                start: a(10, 0, 0, 10),
                end: Some(a(10, 0, 0, 20)),
                netmask: None
            })
        );
        assert_eq!(r("::1,::400,constructor:eth0"), None);
        assert!(parse_range("10.0.0.300,10.0.0.20").is_err());
        assert!(parse_range("10.0.0.1,nonsense").is_err());
    }

    #[test]
    fn ranges_know_their_subnet_and_size() {
        let range = parse_range("10.0.0.10,10.0.0.20").unwrap().unwrap();
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
        assert_eq!(
            config.lease_file,
            Some(PathBuf::from("/var/lib/misc/dnsmasq.leases"))
        );
        let starts: Vec<String> = config.ranges.iter().map(|r| r.start.to_string()).collect();
        assert_eq!(starts, ["172.29.101.1", "10.9.0.10"]);
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
}
