//! What the orchestrator declared, from disk: dnsmasq's configuration (a file, or the command
//! line of the running dnsmasq, which is where OpenStack Neutron puts it), every host file and
//! host directory it names, and the router's own subnets. Followed with inotify: CloudStack
//! rewrites `/etc/dhcphosts.txt` on every VM change, Neutron its `host` file on every port
//! change. What it all means is the engine's ([`dhcp_engine::reconcile`]).
use std::{
    collections::HashMap,
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use inotify::{EventStream, Inotify, WatchDescriptor, WatchMask};

use dhcp_engine::{
    declared::DeclaredHosts, dnsmasq_conf::DnsmasqConfig, kea_conf::KeaConfig, reconcile::Intent,
};

use crate::{
    conf_files::{Fs, modified_unix_ns},
    leases::settled_change,
    system,
};

/// Where dnsmasq's configuration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfSource {
    /// A configuration file (`--dnsmasq-conf`): CloudStack's `/etc/dnsmasq.conf`.
    File(PathBuf),
    /// The command line of the dnsmasq whose pid file this is (`--dnsmasq-pid-file`): Neutron
    /// starts dnsmasq with its whole configuration as options.
    Process { pid_file: PathBuf },
}

impl ConfSource {
    /// The file whose change means the configuration may have changed.
    fn watched(&self) -> &Path {
        match self {
            ConfSource::File(path) => path,
            ConfSource::Process { pid_file } => pid_file,
        }
    }
}

/// Reads the configuration.
pub fn load_config(source: &ConfSource) -> anyhow::Result<DnsmasqConfig> {
    match source {
        ConfSource::File(path) => Ok(DnsmasqConfig::load(path, &Fs)?),
        ConfSource::Process { pid_file } => {
            let text = std::fs::read_to_string(pid_file)
                .with_context(|| format!("reading {}", pid_file.display()))?;
            let pid: u32 = text.trim().parse().with_context(|| {
                format!("{}: {:?} is not a pid", pid_file.display(), text.trim())
            })?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .with_context(|| format!("reading the command line of dnsmasq (pid {pid})"))?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Ok(DnsmasqConfig::from_args(&args, &Fs)
                .with_context(|| format!("the command line of dnsmasq (pid {pid})"))?)
        }
    }
}

/// Whether this router should serve now: see [`serves_with`].
pub fn should_serve(config: &DnsmasqConfig) -> bool {
    let local: Vec<std::net::Ipv4Addr> =
        system::local_ipv4().into_iter().map(|(ip, _)| ip).collect();
    serves_with(config, &local)
}

/// Whether a router holding `local` should serve: it holds one of the non-loopback IPv4
/// addresses dnsmasq is told to listen on, or none is configured. A redundant router's BACKUP
/// holds none of its VIPs; a MASTER that is adding a tier holds every VIP but the new tier's
/// for a moment (CloudStack writes the listen-address before it plumbs the address), and must
/// not pass for a BACKUP then, or a dnsmasq that died meanwhile would not be reported.
pub fn serves_with(config: &DnsmasqConfig, local: &[std::net::Ipv4Addr]) -> bool {
    let vips: Vec<_> = config
        .listen_addresses
        .iter()
        .filter_map(|addr| match addr {
            std::net::IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect();
    vips.is_empty() || vips.iter().any(|vip| local.contains(vip))
}

/// The declared hosts now, and the paths to follow for changes.
pub fn load_intent(source: &ConfSource, config: DnsmasqConfig) -> (Intent, Vec<PathBuf>) {
    let mut hosts = DeclaredHosts::load(&config, &Fs);
    let mut watched = DeclaredHosts::watched(&config);
    watched.extend(config.conf_paths.iter().cloned());
    watched.push(source.watched().to_owned());
    watched.sort();
    watched.dedup();
    // The newest change of anything that declares hosts: a line absent now was absent then.
    hosts.newest_change_unix_ns = watched.iter().filter_map(|p| modified_unix_ns(p)).max();
    let intent = Intent {
        hosts,
        config,
        local: system::local_subnets(),
    };
    (intent, watched)
}

/// Reads Kea's configuration (`--kea-conf`), its includes through the file system.
pub fn load_kea_config(path: &Path) -> anyhow::Result<KeaConfig> {
    dhcp_engine::kea_conf::load(path, &Fs).with_context(|| format!("reading {}", path.display()))
}

/// What Kea's configuration at `path` declares: its host reservations, its subnets and pools
/// (outside the pools only reserved clients get addresses), and the file to follow. Kea reads
/// its configuration at start and on `config-reload`; the file is followed all the same, as
/// an operator's edit is what Kea serves next.
pub fn load_kea_intent(path: &Path, config: &KeaConfig) -> (Intent, Vec<PathBuf>) {
    let mut hosts = DeclaredHosts::from_kea(config);
    hosts.newest_change_unix_ns = modified_unix_ns(path);
    let intent = Intent {
        hosts,
        config: config.address_plan(),
        local: system::local_subnets(),
    };
    (intent, vec![path.to_owned()])
}

/// How long a change must stay quiet before it is read (an orchestrator rewriting a file).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Follows a set of files and directories with inotify: a change of a watched file (written,
/// created, deleted, renamed over) or of anything inside a watched directory.
pub struct FilesFollower {
    events: EventStream<Vec<u8>>,
    /// Per watched directory: the names in it that count (`None`: every name).
    dirs: HashMap<WatchDescriptor, Option<Vec<OsString>>>,
    settle_at: Option<tokio::time::Instant>,
}

impl FilesFollower {
    /// Follows `paths`: a directory is followed whole, a file through its parent directory
    /// (so that a file replaced by rename, or created later, is seen). Paths whose directory
    /// does not exist are skipped with a note.
    pub fn new(paths: &[PathBuf]) -> std::io::Result<FilesFollower> {
        let inotify = Inotify::init()?;
        let mask = WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM;
        let mut by_dir: HashMap<PathBuf, Option<Vec<OsString>>> = HashMap::new();
        for path in paths {
            if path.is_dir() {
                by_dir.insert(path.clone(), None);
                continue;
            }
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            let name = path.file_name().map(OsString::from).unwrap_or_default();
            // (`None`: the whole directory is followed already.)
            if let Some(names) = by_dir.entry(dir).or_insert_with(|| Some(Vec::new())) {
                names.push(name);
            }
        }
        let mut dirs = HashMap::new();
        for (dir, names) in by_dir {
            match inotify.watches().add(&dir, mask) {
                Ok(wd) => {
                    dirs.insert(wd, names);
                }
                Err(err) => eprintln!("not following {}: {err}", dir.display()),
            }
        }
        Ok(FilesFollower {
            events: inotify.into_event_stream(vec![0u8; 4096])?,
            dirs,
            settle_at: None,
        })
    }

    /// Waits until something followed changed and then stayed quiet for the debounce time.
    /// Cancel-safe, like [`crate::leases::LeaseFollower::changed`].
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let dirs = &self.dirs;
        settled_change(
            &mut self.events,
            &mut self.settle_at,
            DEBOUNCE,
            |event| match dirs.get(&event.wd) {
                Some(None) => true,
                Some(Some(names)) => event
                    .name
                    .as_deref()
                    .is_some_and(|n| names.iter().any(|w| w == n)),
                None => false,
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    async fn next_change(follower: &mut FilesFollower) {
        tokio::time::timeout(Duration::from_secs(5), follower.changed())
            .await
            .expect("a change")
            .unwrap();
    }

    #[tokio::test]
    async fn a_rewritten_hosts_file_and_a_new_file_in_a_hosts_dir_are_changes() {
        let dir = std::env::temp_dir().join(format!("intent-follow-{}", std::process::id()));
        let hostsdir = dir.join("hosts.d");
        fs::create_dir_all(&hostsdir).unwrap();
        let hosts = dir.join("dhcphosts.txt");
        fs::write(&hosts, "02:00:00:00:00:01,10.1.1.50,vm-1,infinite\n").unwrap();
        let mut follower = FilesFollower::new(&[hosts.clone(), hostsdir.clone()]).unwrap();
        fs::write(&hosts, "").unwrap();
        next_change(&mut follower).await;
        fs::write(hostsdir.join("vm-2"), "02:00:00:00:00:02,10.1.1.51\n").unwrap();
        next_change(&mut follower).await;
        // Another file beside the hosts file is not a change.
        fs::write(dir.join("other"), "x").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(500), follower.changed()).await;
        assert!(quiet.is_err(), "no change of a followed file");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_router_serves_while_it_holds_any_of_its_vips() {
        use dhcp_engine::dnsmasq_conf::MemoryFiles;
        let files = MemoryFiles::default().with(
            "/etc/dnsmasq.conf",
            "listen-address=127.0.0.1,172.29.102.1\nlisten-address=172.29.103.1\n",
        );
        let config = DnsmasqConfig::load(std::path::Path::new("/etc/dnsmasq.conf"), &files)
            .expect("configuration");
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        // MASTER with both tiers, and while a new tier's VIP is not plumbed yet.
        assert!(serves_with(
            &config,
            &[ip("172.29.102.1"), ip("172.29.103.1")]
        ));
        assert!(serves_with(&config, &[ip("172.29.102.1")]));
        // BACKUP: loopback and its primary addresses only.
        assert!(!serves_with(
            &config,
            &[ip("127.0.0.1"), ip("172.29.102.10")]
        ));
        // Nothing but loopback configured: nothing to tell a BACKUP by.
        let files = MemoryFiles::default().with("/c", "listen-address=127.0.0.1\n");
        let config = DnsmasqConfig::load(std::path::Path::new("/c"), &files).unwrap();
        assert!(serves_with(&config, &[]));
    }
}
