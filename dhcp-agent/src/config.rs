//! The TOML configuration file of `dhcp-agent run`: the same keys as the command-line options
//! (with `_` for `-`); an option given on the command line wins over the file.
//!
//! ```toml
//! iface = ["eth0", "lo"]
//! leases = "/var/lib/misc/dnsmasq.leases"
//! dnsmasq_conf = "/etc/dnsmasq.conf"
//! grace = "2s"
//! probe_memory = true
//! remediate = true
//! metrics_addr = "127.0.0.1:9967"
//! ```
//!
//! The file steers what the agent releases and where it writes (state file, pcap), so it is
//! refused when anyone but root or the agent's own user could change it: the file writable by
//! group or others or owned by another user, or a directory on its path that is (a sticky
//! directory such as /tmp excepted: others cannot replace a file there).
//!
//! `--dnsmasq-conf` is not held to this: it only seeds the server ids and pools the agent
//! expects (a repair with a wrong server id fails, it never releases another lease), and whoever
//! can write it already controls dnsmasq itself, which reads it as root. On routers it is root's,
//! mode 0644, and refusing it would only blind the agent where permissions are sloppy.
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{ArgMatches, ValueEnum as _, parser::ValueSource};
use serde::Deserialize;

use crate::{
    leases::LeaseFormatName,
    run::{RunArgs, parse_duration},
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub iface: Option<Vec<String>>,
    pub leases: Option<std::path::PathBuf>,
    pub lease_format: Option<String>,
    pub dnsmasq_conf: Option<std::path::PathBuf>,
    pub grace: Option<String>,
    pub json: Option<bool>,
    pub probe_memory: Option<bool>,
    pub remediate: Option<bool>,
    pub dry_run: Option<bool>,
    pub remediation_rate: Option<u32>,
    pub server: Option<std::net::SocketAddrV4>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub discover_timeout: Option<String>,
    pub state_file: Option<std::path::PathBuf>,
    pub pcap: Option<std::path::PathBuf>,
    pub pcap_max_bytes: Option<u64>,
    pub pcap_files: Option<u32>,
}

/// Why a configuration file is refused.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFile {
    #[error("{} is writable by group or others (mode {mode:o}): refusing it; chmod go-w it", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is owned by uid {uid}, not root or this user: refusing it; chown root it", path.display())]
    Owner { path: PathBuf, uid: u32 },
    #[error(
        "{} is in {}, which is writable by group or others (mode {mode:o}) so anyone there could replace it: refusing it",
        path.display(), dir.display()
    )]
    WritableDirectory {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "{} is in {}, owned by uid {uid}, not root or this user: refusing it",
        path.display(), dir.display()
    )]
    DirectoryOwner {
        path: PathBuf,
        dir: PathBuf,
        uid: u32,
    },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that only root or this process's user can change `path`: the file itself and every
/// directory above it, both as given and after resolving symbolic links.
pub fn check_trusted(path: &Path) -> Result<(), UntrustedFile> {
    let io = |source| UntrustedFile::Io {
        path: path.to_owned(),
        source,
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let trusted_owner = |uid: u32| uid == 0 || uid == me;
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(UntrustedFile::Writable {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    if !trusted_owner(meta.uid()) {
        return Err(UntrustedFile::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    let given = std::path::absolute(path).map_err(io)?;
    let resolved = std::fs::canonicalize(path).map_err(io)?;
    for dir in given
        .ancestors()
        .skip(1)
        .chain(resolved.ancestors().skip(1))
    {
        let meta = std::fs::metadata(dir).map_err(io)?;
        let mode = meta.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(UntrustedFile::WritableDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
                mode: mode & 0o7777,
            });
        }
        if !trusted_owner(meta.uid()) {
            return Err(UntrustedFile::DirectoryOwner {
                path: path.to_owned(),
                dir: dir.to_owned(),
                uid: meta.uid(),
            });
        }
    }
    Ok(())
}

/// Reads a config file, refusing one that anyone but root or this user could change
/// ([`check_trusted`]).
pub fn load(path: &Path) -> anyhow::Result<RunConfig> {
    check_trusted(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Fills every option of `args` not given on the command line from `config`.
pub fn apply(config: RunConfig, args: &mut RunArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let unset = |id: &str| matches.value_source(id) != Some(ValueSource::CommandLine);
    if let Some(v) = config.iface.filter(|_| unset("ifaces")) {
        args.capture.ifaces = v;
    }
    if let Some(v) = config.leases.filter(|_| unset("leases")) {
        args.leases = v;
    }
    if let Some(v) = config.lease_format.filter(|_| unset("lease_format")) {
        // The same names as on the command line.
        args.lease_format = LeaseFormatName::from_str(&v, false)
            .map_err(|_| anyhow::anyhow!("lease_format {v:?}: expected dnsmasq or kea-v4"))?;
    }
    if let Some(v) = config.dnsmasq_conf.filter(|_| unset("dnsmasq_conf")) {
        args.dnsmasq_conf = Some(v);
    }
    if let Some(v) = config.grace.filter(|_| unset("grace")) {
        args.grace = parse_duration(&v).map_err(anyhow::Error::msg)?;
    }
    if let Some(v) = config
        .remediation_rate
        .filter(|_| unset("remediation_rate"))
    {
        args.remediation_rate = v;
    }
    if let Some(v) = config.server.filter(|_| unset("server")) {
        args.server = v;
    }
    if let Some(v) = config.metrics_addr.filter(|_| unset("metrics_addr")) {
        args.metrics_addr = v;
    }
    if let Some(v) = config
        .discover_timeout
        .filter(|_| unset("discover_timeout"))
    {
        args.discover_timeout = parse_duration(&v).map_err(anyhow::Error::msg)?;
    }
    if let Some(v) = config.state_file.filter(|_| unset("state_file")) {
        args.state_file = v;
    }
    if let Some(v) = config.pcap.filter(|_| unset("pcap")) {
        args.pcap.pcap = Some(v);
    }
    if let Some(v) = config.pcap_max_bytes.filter(|_| unset("pcap_max_bytes")) {
        args.pcap.pcap_max_bytes = Some(v);
    }
    if let Some(v) = config.pcap_files.filter(|_| unset("pcap_files")) {
        args.pcap.pcap_files = v;
    }
    for (flag, value, id) in [
        (&mut args.json, config.json, "json"),
        (&mut args.probe_memory, config.probe_memory, "probe_memory"),
        (&mut args.remediate, config.remediate, "remediate"),
        (&mut args.dry_run, config.dry_run, "dry_run"),
    ] {
        if let Some(v) = value.filter(|_| unset(id)) {
            *flag = v;
        }
    }
    if args.dry_run && !args.remediate {
        bail!("dry_run needs remediate");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(argv: &[&str], toml_text: &str) -> anyhow::Result<RunArgs> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let Command::Run(mut args) = Cli::from_arg_matches(&matches)?.command else {
            unreachable!()
        };
        let (_, sub) = matches.subcommand().unwrap();
        apply(toml::from_str(toml_text)?, &mut args, sub)?;
        Ok(args)
    }

    #[test]
    fn the_file_fills_what_the_command_line_does_not_say() {
        let text = "iface = [\"eth0\", \"lo\"]\nleases = \"/tmp/x.leases\"\ngrace = \"500ms\"\nremediate = true\nlease_format = \"kea-v4\"\n";
        let args = parse(&["dhcp-agent", "run", "--grace", "3s"], text).unwrap();
        assert_eq!(args.capture.ifaces, ["eth0", "lo"]);
        assert_eq!(args.leases, std::path::PathBuf::from("/tmp/x.leases"));
        assert_eq!(
            args.grace,
            std::time::Duration::from_secs(3),
            "the command line wins"
        );
        assert!(args.remediate && !args.dry_run);
        assert_eq!(args.lease_format, LeaseFormatName::KeaV4);
        let text = "metrics_addr = \"0.0.0.0:9100\"\ndiscover_timeout = \"8s\"\nstate_file = \"/tmp/s.json\"\n";
        let args = parse(&["dhcp-agent", "run"], text).unwrap();
        assert_eq!(args.metrics_addr, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(args.discover_timeout, std::time::Duration::from_secs(8));
        assert_eq!(args.state_file, std::path::PathBuf::from("/tmp/s.json"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert!(
            parse(&["dhcp-agent", "run"], "grace = \"soon\"\n")
                .unwrap_err()
                .to_string()
                .contains("duration")
        );
        assert!(
            parse(&["dhcp-agent", "run"], "dry_run = true\n")
                .unwrap_err()
                .to_string()
                .contains("needs remediate")
        );
        assert!(
            toml::from_str::<RunConfig>("graze = \"1s\"\n").is_err(),
            "unknown keys are errors"
        );
        let path =
            std::env::temp_dir().join(format!("dhcp-agent-conf-{}.toml", std::process::id()));
        std::fs::write(&path, "grace = \"1s\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(err.contains("writable by group or others"), "{err}");
        assert_eq!(load(&path).unwrap().grace.as_deref(), Some("1s"));
        std::fs::remove_file(&path).unwrap();
    }
}
