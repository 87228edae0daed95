//! The TOML configuration file of `dhcp-agent run`: its keys are exactly the options of `run`
//! (`dhcp-agent run --help`), each spelled with `_` for `-` (`--dnsmasq-conf` is
//! `dnsmasq_conf`, the repeatable `--iface` is `iface`, an array), except `config` itself. An
//! option given on the command line wins over the file.
//!
//! ```toml
//! iface = ["eth0", "lo"]
//! tc_mode = "auto"
//! xdp_mode = "off"
//! ring_bytes = 1048576
//! leases = "/var/lib/misc/dnsmasq.leases"
//! lease_format = "dnsmasq"
//! dnsmasq_conf = "/etc/dnsmasq.conf"
//! grace = "2s"
//! probe_memory = true
//! divergence_interval = "60s"
//! remediate = true
//! metrics_addr = "127.0.0.1:9967"
//! ```
//!
//! The accepted keys are not listed here but derived from clap's definition of `run`
//! ([`run_options`]): the file is turned into the command-line words it stands for
//! (`grace = "2s"` is `--grace=2s`, `probe_memory = true` is `--probe-memory`, `false` is
//! nothing, an array is the option once per element) and parsed by clap together with the
//! command line, so an option added to `run` is accepted by the file, and its value checked by
//! the same parser, without anything to write here.
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
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{
    Arg, ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _, parser::ValueSource,
};
use serde::Deserialize;

use crate::trusted::check_trusted;
use crate::{cli::Cli, run::RunArgs};

/// A configuration file of `run`: its keys and values as TOML gave them, checked only by
/// [`apply`], against clap's definition of `run`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct RunConfig {
    pub table: toml::Table,
    /// Where it was read ([`load`]), for the errors.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl RunConfig {
    /// How errors name the file.
    fn name(&self) -> String {
        self.path.as_ref().map_or_else(
            || "the configuration file".to_owned(),
            |path| path.display().to_string(),
        )
    }
}

/// Reads a config file, refusing one that anyone but root or this user could change
/// ([`check_trusted`]). Its keys are checked by [`apply`].
pub fn load(path: &Path) -> anyhow::Result<RunConfig> {
    check_trusted(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table = text
        .parse::<toml::Table>()
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(RunConfig {
        table,
        path: Some(path.to_owned()),
    })
}

/// The `run` subcommand as clap defines it.
fn run_command() -> clap::Command {
    Cli::command()
        .find_subcommand("run")
        .expect("the command line has a `run` subcommand")
        .clone()
}

/// The options of `dhcp-agent run` that a file can set, as clap defines them: every argument
/// with a long name but `--config` (and help), with its key (the long name, `_` for `-`).
pub fn run_options() -> Vec<(String, Arg)> {
    run_command()
        .get_arguments()
        .filter(|arg| arg.get_id() != "config")
        .filter(|arg| {
            !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        })
        .filter_map(|arg| Some((arg.get_long()?.replace('-', "_"), arg.clone())))
        .collect()
}

/// Fills every option of `args` not given on the command line from `config`: `matches` is what
/// clap made of the `run` part of the command line, `args` what it made of them.
///
/// The file becomes the command-line words it stands for, less the options the command line
/// gave (it wins), and clap parses them again followed by the command line's own, so the file's
/// values go through the options' own parsers and rules; their errors name the file.
pub fn apply(config: RunConfig, args: &mut RunArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let name = config.name();
    let options = run_options();
    let on_command_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let mut words: Vec<OsString> = Vec::new();
    let mut file_sets: Vec<&str> = Vec::new();
    for (key, value) in &config.table {
        let Some((_, arg)) = options.iter().find(|(k, _)| k == key) else {
            if key == "config" {
                bail!("{name}: key `config`: a configuration file cannot name another one");
            }
            let keys: Vec<&str> = options.iter().map(|(k, _)| k.as_str()).collect();
            bail!(
                "{name}: unknown key `{key}`; the keys are the options of `dhcp-agent run` with `_` for `-`: {}",
                keys.join(", ")
            );
        };
        // Checked even when the command line overrides it: the file is wrong either way.
        let arg_words = words_of(key, value, arg).with_context(|| name.clone())?;
        let id = arg.get_id().as_str();
        if on_command_line(id) || arg_words.is_empty() {
            continue;
        }
        file_sets.push(id);
        words.extend(arg_words);
    }
    // clap would refuse it too (`requires`), but in terms of the command line.
    if file_sets.contains(&"dry_run")
        && !file_sets.contains(&"remediate")
        && !on_command_line("remediate")
    {
        bail!("{name}: dry_run needs remediate");
    }
    let argv = ["dhcp-agent".into(), "run".into()]
        .into_iter()
        .chain(words)
        .chain(command_line_words(matches)?);
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|err| anyhow::anyhow!("{name}: {}", clap_message(&err)))?;
    let Some(("run", run)) = matches.subcommand() else {
        unreachable!("parsed as `dhcp-agent run`")
    };
    *args = RunArgs::from_arg_matches(run)
        .map_err(|err| anyhow::anyhow!("{name}: {}", clap_message(&err)))?;
    Ok(())
}

/// The words of the command line that `matches` (of `run`) were parsed from, as far as they
/// matter: every argument it gave, in the `--long=value` form (positional ones after `--`).
fn command_line_words(matches: &ArgMatches) -> anyhow::Result<Vec<OsString>> {
    let (mut words, mut positional) = (Vec::new(), Vec::new());
    for arg in run_command().get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let raw = || matches.get_raw(id).into_iter().flatten();
        let Some(long) = arg.get_long() else {
            positional.extend(raw().map(OsString::from));
            continue;
        };
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => words.push(format!("--{long}").into()),
            ArgAction::Count => {
                words.extend((0..matches.get_count(id)).map(|_| format!("--{long}").into()));
            }
            ArgAction::Set | ArgAction::Append => words.extend(raw().map(|value| {
                let mut word = OsString::from(format!("--{long}="));
                word.push(value);
                word
            })),
            action => bail!("`dhcp-agent run --{long}` ({action:?}) cannot be used with --config"),
        }
    }
    if !positional.is_empty() {
        words.push("--".into());
        words.extend(positional);
    }
    Ok(words)
}

/// The command-line words of `key = value` for `arg`.
fn words_of(key: &str, value: &toml::Value, arg: &Arg) -> anyhow::Result<Vec<OsString>> {
    use toml::Value;
    let long = arg.get_long().expect("file options have a long name");
    let option = |text: String| OsString::from(format!("--{long}={text}"));
    let scalar = |value: &Value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Float(x) => Some(x.to_string()),
        _ => None,
    };
    let words = match (arg.get_action(), value) {
        (ArgAction::SetTrue, Value::Boolean(b)) => b.then(|| format!("--{long}").into()).into_iter().collect(),
        (ArgAction::SetFalse, Value::Boolean(b)) => (!b).then(|| format!("--{long}").into()).into_iter().collect(),
        (ArgAction::SetTrue | ArgAction::SetFalse, _) => {
            bail!("key `{key}`: expected true or false, found {}", value.type_str())
        }
        (ArgAction::Append, Value::Array(values)) => values
            .iter()
            .map(|v| {
                scalar(v).map(option).with_context(|| {
                    format!(
                        "key `{key}`: expected an array of strings or numbers, found an element of type {}",
                        v.type_str()
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
        (ArgAction::Set | ArgAction::Append, Value::Boolean(b)) => vec![option(b.to_string())],
        (ArgAction::Set | ArgAction::Append, value) => match scalar(value) {
            Some(text) => vec![option(text)],
            None => bail!(
                "key `{key}`: expected a string or a number{}, found {}",
                if matches!(arg.get_action(), ArgAction::Append) {
                    " (or an array of them)"
                } else {
                    ""
                },
                value.type_str()
            ),
        },
        (action, _) => bail!("key `{key}`: `--{long}` ({action:?}) cannot be set in a file"),
    };
    Ok(words)
}

/// A clap error on one line, without `error: ` and the usage that follows (the file is what to
/// fix, not the command line).
fn clap_message(err: &clap::Error) -> String {
    let text = err.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    text.split("\n\n").next().unwrap_or(text).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

    use dhcp_engine::leases::LeaseFormatName;

    use super::*;
    use crate::{
        capture::{TcMode, XdpChoice},
        cli::Command,
    };

    /// `argv` with the file `toml_text`, as `main` does it.
    fn parse(argv: &[&str], toml_text: &str) -> anyhow::Result<RunArgs> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let Command::Run(mut args) = Cli::from_arg_matches(&matches)?.command else {
            unreachable!()
        };
        let (_, sub) = matches.subcommand().unwrap();
        let config = RunConfig {
            path: Some("test.toml".into()),
            ..toml::from_str(toml_text)?
        };
        apply(config, &mut args, sub)?;
        Ok(args)
    }

    fn error(argv: &[&str], toml_text: &str) -> String {
        format!("{:#}", parse(argv, toml_text).unwrap_err())
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
            parse(&["dhcp-agent", "run"], "graze = \"1s\"\n").is_err(),
            "unknown keys are errors"
        );
        let path =
            std::env::temp_dir().join(format!("dhcp-agent-conf-{}.toml", std::process::id()));
        std::fs::write(&path, "grace = \"1s\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(err.contains("writable by group or others"), "{err}");
        assert_eq!(
            load(&path)
                .unwrap()
                .table
                .get("grace")
                .and_then(|v| v.as_str()),
            Some("1s")
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// A value for every option of `run`, by arg id: (id, TOML value, other keys it needs).
    /// An option added to `run` without a line here fails
    /// [`every_run_option_can_be_set_in_the_file`].
    const SAMPLES: &[(&str, &str, &str)] = &[
        ("ifaces", r#"["eth9", "lo"]"#, ""),
        ("tc_mode", r#""netlink""#, ""),
        ("xdp_mode", r#""auto""#, ""),
        ("ring_bytes", "65536", ""),
        ("wake_interval", r#""10ms""#, ""),
        ("pcap", r#""/tmp/x.pcapng""#, ""),
        ("pcap_max_bytes", "1000000", "pcap = \"/tmp/x.pcapng\"\n"),
        (
            "pcap_files",
            "3",
            "pcap = \"/tmp/x.pcapng\"\npcap_max_bytes = 1000000\n",
        ),
        ("leases", r#""/tmp/x.leases""#, ""),
        ("lease_format", r#""kea-v4""#, ""),
        ("dnsmasq_conf", r#""/tmp/dnsmasq.conf""#, ""),
        ("dnsmasq_pid_file", r#""/tmp/dnsmasq.pid""#, ""),
        ("orphan_settle", r#""90s""#, ""),
        ("repair_guest_releases", "true", "remediate = true\n"),
        ("no_orphan_repair", "true", "remediate = true\n"),
        (
            "trusted_servers",
            r#"["fa:16:3e:00:00:01", "10.0.0.3"]"#,
            "",
        ),
        ("grace", r#""7s""#, ""),
        ("json", "true", ""),
        ("events", r#""journal""#, ""),
        ("state_file", r#""/tmp/state.json""#, ""),
        ("remediate", "true", ""),
        ("dry_run", "true", "remediate = true\n"),
        ("remediation_rate", "5", ""),
        ("probe_memory", "true", ""),
        ("divergence_interval", r#""5s""#, ""),
        ("server", r#""10.0.0.1:67""#, ""),
        ("metrics_addr", r#""0.0.0.0:9100""#, ""),
        ("discover_timeout", r#""9s""#, ""),
        ("server_kind", r#""kea""#, ""),
        ("kea_conf", r#""/etc/kea/kea-dhcp4.conf""#, ""),
        ("kea_control_socket", r#""/run/kea/kea4-ctrl-socket""#, ""),
    ];

    #[test]
    fn every_run_option_can_be_set_in_the_file() {
        let options = run_options();
        assert!(!options.is_empty());
        for (key, arg) in &options {
            let id = arg.get_id().as_str();
            let Some(&(_, sample, needs)) = SAMPLES.iter().find(|(s, _, _)| *s == id) else {
                panic!(
                    "`dhcp-agent run --{}` (arg id `{id}`, key `{key}`) has no sample value in \
                     config.rs's SAMPLES: add one so the file is tested for it",
                    arg.get_long().unwrap()
                );
            };
            let without = parse(&["dhcp-agent", "run"], needs)
                .unwrap_or_else(|e| panic!("{key}'s prerequisites {needs:?}: {e:#}"));
            let text = format!("{needs}{key} = {sample}\n");
            let with = parse(&["dhcp-agent", "run"], &text)
                .unwrap_or_else(|e| panic!("{text:?} refused: {e:#}"));
            assert_ne!(
                format!("{without:?}"),
                format!("{with:?}"),
                "{key} = {sample} in the file changed nothing"
            );
        }
        for (id, _, _) in SAMPLES {
            assert!(
                options.iter().any(|(_, arg)| arg.get_id() == *id),
                "SAMPLES has `{id}`, which is no option of `run` (any more)"
            );
        }
    }

    #[test]
    fn capture_options_and_the_divergence_interval_are_accepted() {
        let text = "xdp_mode = \"auto\"\ntc_mode = \"netlink\"\nring_bytes = 65536\ndivergence_interval = \"5s\"\n";
        let args = parse(&["dhcp-agent", "run"], text).unwrap();
        assert_eq!(args.capture.xdp_mode, XdpChoice::Auto);
        assert_eq!(args.capture.tc_mode, TcMode::Netlink);
        assert_eq!(args.capture.ring_bytes, 65536);
        assert_eq!(args.divergence_interval, Duration::from_secs(5));
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let text = "iface = [\"eth0\", \"lo\"]\nxdp_mode = \"auto\"\nring_bytes = 65536\n\
                    grace = \"500ms\"\nremediate = false\nserver = \"10.0.0.1:67\"\n\
                    pcap = \"/tmp/file.pcapng\"\n";
        let argv = [
            "dhcp-agent",
            "run",
            "-i",
            "eth1",
            "--xdp-mode",
            "skb",
            "--ring-bytes=131072",
            "--grace",
            "3s",
            "--remediate",
            "--pcap",
            "/tmp/cli.pcapng",
        ];
        let args = parse(&argv, text).unwrap();
        assert_eq!(args.capture.ifaces, ["eth1"], "not merged with the file's");
        assert_eq!(args.capture.xdp_mode, XdpChoice::Skb);
        assert_eq!(args.capture.ring_bytes, 131072);
        assert_eq!(args.grace, Duration::from_secs(3));
        assert!(args.remediate);
        assert_eq!(args.pcap.pcap, Some(PathBuf::from("/tmp/cli.pcapng")));
        assert_eq!(
            args.server,
            "10.0.0.1:67".parse().unwrap(),
            "what the command line does not say comes from the file"
        );
        // dry_run from the file with --remediate from the command line.
        let args = parse(&["dhcp-agent", "run", "--remediate"], "dry_run = true\n").unwrap();
        assert!(args.remediate && args.dry_run);
    }

    #[test]
    fn unknown_keys_config_and_wrong_types_are_named() {
        let err = error(&["dhcp-agent", "run"], "graze = \"1s\"\n");
        assert!(
            err.contains("test.toml") && err.contains("`graze`"),
            "{err}"
        );
        for key in [
            "iface",
            "tc_mode",
            "ring_bytes",
            "divergence_interval",
            "dry_run",
        ] {
            assert!(err.contains(key), "{key} is not listed as accepted: {err}");
        }
        assert!(!err.contains("config,"), "{err}");
        let err = error(
            &["dhcp-agent", "run"],
            "dnsmasq-conf = \"/etc/dnsmasq.conf\"\n",
        );
        assert!(
            err.contains("`dnsmasq-conf`"),
            "keys are spelled with _: {err}"
        );
        let err = error(&["dhcp-agent", "run"], "config = \"/etc/other.toml\"\n");
        assert!(err.contains("`config`"), "{err}");
        for (text, key) in [
            ("json = \"yes\"\n", "json"),
            ("grace = [\"1s\"]\n", "grace"),
            ("iface = [[\"eth0\"]]\n", "iface"),
            ("server = { a = 1 }\n", "server"),
        ] {
            let err = error(&["dhcp-agent", "run"], text);
            assert!(
                err.contains("test.toml") && err.contains(&format!("`{key}`")),
                "{text:?}: {err}"
            );
        }
        // A bad value for an option the command line gives is still an error in the file.
        let err = error(&["dhcp-agent", "run", "--json"], "json = 1\n");
        assert!(err.contains("`json`"), "{err}");
    }

    #[test]
    fn values_are_checked_by_the_options_own_parsers() {
        for (text, what) in [
            ("ring_bytes = 1000\n", "power of two"),
            ("xdp_mode = \"sometimes\"\n", "sometimes"),
            ("lease_format = \"isc\"\n", "isc"),
            ("server = \"nowhere\"\n", "nowhere"),
            ("remediation_rate = -1\n", "-1"),
            ("pcap_files = 3\n", "--pcap-max-bytes"),
        ] {
            let err = error(&["dhcp-agent", "run"], text);
            assert!(
                err.starts_with("test.toml: ") && err.contains(what) && !err.contains("Usage"),
                "{text:?}: {err}"
            );
        }
        assert!(
            !parse(&["dhcp-agent", "run"], "json = false\n")
                .unwrap()
                .json
        );
    }

    #[test]
    fn the_command_line_is_parsed_again_as_given() {
        let argv = [
            "dhcp-agent",
            "run",
            "--config",
            "/etc/dhcp-agent/config.toml",
            "-i",
            "eth0",
            "--iface=lo",
            "--json",
            "--pcap=-dash-leading.pcapng",
            "--pcap-max-bytes",
            "4096",
        ];
        let args = parse(&argv, "").unwrap();
        assert_eq!(
            args.config,
            Some(PathBuf::from("/etc/dhcp-agent/config.toml"))
        );
        assert_eq!(args.capture.ifaces, ["eth0", "lo"]);
        assert!(args.json);
        assert_eq!(args.pcap.pcap, Some(PathBuf::from("-dash-leading.pcapng")));
        assert_eq!(args.pcap.pcap_max_bytes, Some(4096));
    }

    #[test]
    fn the_packaged_config_parses() {
        let args = parse(
            &["dhcp-agent", "run"],
            include_str!("../../deploy/config.toml"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(args.leases, PathBuf::from("/var/lib/misc/dnsmasq.leases"));
        assert_eq!(args.dnsmasq_conf, Some(PathBuf::from("/etc/dnsmasq.conf")));
        assert!(args.remediate && args.dry_run && !args.probe_memory && !args.json);
        assert_eq!(args.events, crate::events::EventsTo::Auto);
        assert_eq!(
            args.state_file,
            PathBuf::from("/var/lib/dhcp-agent/state.json")
        );
    }
}
