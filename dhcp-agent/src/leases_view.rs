//! `dhcp-agent leases`: the lease table as the server's file has it, joined with what the daemon
//! knows (pending and dropped releases, repairs) and, on request, with the server's memory.
use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddrV4,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;

use dhcp_engine::{
    kea_conf::KeaConfig,
    leases::{Expiry, LeaseFormatName},
    reconcile::{ReconcileConfig, Reconciled, Reconciler},
};
use dhcp_wire::hex_colon;

use crate::{
    args::parse_lease_format,
    intent::{self, ConfSource},
    leases::{DEFAULT_LEASE_FILE, read_table},
    server_query,
    state::{DEFAULT_STATE_FILE, StateFile},
};

#[derive(Debug, clap::Args, Clone)]
pub struct LeasesArgs {
    #[arg(long, default_value = DEFAULT_LEASE_FILE)]
    pub leases: PathBuf,
    #[arg(long, default_value_t = LeaseFormatName::Dnsmasq, value_parser = parse_lease_format)]
    pub lease_format: LeaseFormatName,
    /// The state file of a running `dhcp-agent run`.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
    /// Also ask the server whether it holds each lease in memory (dnsmasq: a DHCPINFORM to
    /// --server; Kea, with --kea-conf: `lease4-get` on its control socket).
    #[arg(long)]
    pub probe_memory: bool,
    /// dnsmasq's configuration: each lease is shown as declared (a host line names its
    /// client), orphan (none does, in a static-only range) or dynamic, and as blocking a
    /// declared host when it holds that host's address.
    #[arg(long)]
    pub dnsmasq_conf: Option<PathBuf>,
    /// The running dnsmasq's pid file, to read its configuration from its command line.
    #[arg(long, conflicts_with = "dnsmasq_conf")]
    pub dnsmasq_pid_file: Option<PathBuf>,
    /// Kea's configuration instead: its host reservations are the declared hosts, addresses
    /// outside its pools reservation-only.
    #[arg(long, conflicts_with_all = ["dnsmasq_conf", "dnsmasq_pid_file"])]
    pub kea_conf: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:67")]
    pub server: SocketAddrV4,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub ip: String,
    pub mac: String,
    pub hostname: Option<String>,
    /// Seconds left, `None` for an infinite lease.
    pub expires_in: Option<i64>,
    /// `leased`, `release_pending` or `release_dropped`.
    pub state: &'static str,
    pub cause: Option<String>,
    /// Whether the server holds it in memory (with --probe-memory).
    pub in_server_memory: Option<bool>,
    /// `declared`, `orphan`, `dynamic` (with a dnsmasq configuration).
    pub declared: Option<&'static str>,
    /// The host lines (`file:line`) whose address this lease holds though it is not theirs.
    pub blocks: Vec<String>,
}

/// Reconciliation of `table` with the declared hosts of the configuration, if one is given.
/// `kea` is `--kea-conf`'s path and configuration, read once by the caller.
fn reconcile(
    args: &LeasesArgs,
    kea: Option<(&Path, &KeaConfig)>,
    table: &dhcp_engine::leases::LeaseTable,
) -> anyhow::Result<Option<(Reconciler, Vec<Reconciled>)>> {
    let source = match (&args.dnsmasq_conf, &args.dnsmasq_pid_file) {
        (Some(path), _) => Some(ConfSource::File(path.clone())),
        (None, Some(pid_file)) => Some(ConfSource::Process {
            pid_file: pid_file.clone(),
        }),
        (None, None) => None,
    };
    let intent = match (&source, kea) {
        (Some(source), _) => {
            let config = intent::load_config(source)?;
            intent::load_intent(source, config).0
        }
        (None, Some((path, config))) => intent::load_kea_intent(path, config).0,
        (None, None) => return Ok(None),
    };
    for problem in &intent.hosts.problems {
        eprintln!("host line ignored: {problem}");
    }
    let mut reconciler = Reconciler::new(ReconcileConfig::default());
    reconciler.set_intent(intent);
    let mut found = Vec::new();
    reconciler.reconcile(table, jiff::Timestamp::now().as_nanosecond(), &mut found);
    Ok(Some((reconciler, found)))
}

pub fn run(args: &LeasesArgs) -> anyhow::Result<()> {
    let table = read_table(&args.leases, args.lease_format.format().as_ref())?;
    let state = StateFile::read(&args.state_file)?;
    let pending: HashMap<&str, ()> = state.pending.iter().map(|p| (p.ip.as_str(), ())).collect();
    let dropped: HashMap<String, String> = state
        .flagged
        .iter()
        .map(|e| {
            (
                e.ip.clone(),
                e.cause.clone().unwrap_or_else(|| "unknown".into()),
            )
        })
        .collect();
    let kea_config = match &args.kea_conf {
        Some(path) => Some(intent::load_kea_config(path)?),
        None => None,
    };
    let kea_conf = args.kea_conf.as_deref().zip(kea_config.as_ref());
    let reconciled = reconcile(args, kea_conf, &table)?;
    let statuses: HashMap<std::net::Ipv4Addr, &'static str> = reconciled
        .iter()
        .flat_map(|(r, _)| r.statuses().map(|(ip, s)| (ip, s.name())))
        .collect();
    let mut blocks: HashMap<String, Vec<String>> = HashMap::new();
    for found in reconciled.iter().flat_map(|(_, found)| found) {
        if let Reconciled::Blocked(b) = found {
            let host = match &b.hostname {
                Some(name) => format!("{name} ({})", b.host_source),
                None => b.host_source.clone(),
            };
            blocks.entry(b.ip.to_string()).or_default().push(host);
        }
    }
    // Kea ignores a DHCPINFORM over `lo`: its memory is asked on its control socket.
    let kea = match (kea_conf, args.probe_memory) {
        (Some((path, config)), true) => {
            let socket = config.control_socket.clone().with_context(|| {
                format!(
                    "{}: no unix control-socket, so Kea's memory cannot be asked",
                    path.display()
                )
            })?;
            Some(crate::kea::KeaControl::new(socket))
        }
        _ => None,
    };
    let now = jiff::Timestamp::now().as_second();
    let mut leases: Vec<_> = table.v4.values().collect();
    leases.sort_by_key(|l| l.ip);
    let mut rows = Vec::new();
    for lease in leases {
        let ip = lease.ip.to_string();
        let row_ip = ip.clone();
        let (state_name, cause) = if pending.contains_key(ip.as_str()) {
            ("release_pending", None)
        } else if let Some(cause) = dropped.get(&ip) {
            ("release_dropped", Some(cause.clone()))
        } else {
            ("leased", None)
        };
        let in_server_memory = match (args.probe_memory, lease.ip, &kea) {
            (true, std::net::IpAddr::V4(v4), Some(kea)) => Some(kea.lease4_get(v4)?.is_some()),
            (true, std::net::IpAddr::V4(v4), None) => Some(
                server_query::probe(
                    args.server,
                    v4,
                    server_query::PROBE_TIMEOUT,
                    server_query::random_xid(),
                )?
                .leased(),
            ),
            _ => None,
        };
        let declared = match lease.ip {
            std::net::IpAddr::V4(v4) if reconciled.is_some() => {
                Some(statuses.get(&v4).copied().unwrap_or("unknown"))
            }
            _ => None,
        };
        rows.push(Row {
            ip,
            mac: hex_colon(&lease.hwaddr),
            hostname: lease.hostname.clone(),
            expires_in: match lease.expiry {
                Expiry::Never => None,
                Expiry::At(at) => Some(i64::try_from(at).unwrap_or(i64::MAX) - now),
            },
            state: state_name,
            cause,
            in_server_memory,
            declared,
            blocks: blocks.remove(&row_ip).unwrap_or_default(),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for row in &rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<15} {:<17} {:<16} {:>9} {:<6} {:<8} STATE",
        "IP", "MAC", "HOSTNAME", "EXPIRES", "MEMORY", "DECLARED"
    )?;
    for row in &rows {
        let expires = row
            .expires_in
            .map_or("never".to_owned(), |s| format!("{s}s"));
        let memory = row
            .in_server_memory
            .map_or("-", |held| if held { "yes" } else { "NO" });
        let mut state = match &row.cause {
            Some(cause) => format!("{} ({cause})", row.state),
            None => row.state.to_owned(),
        };
        if !row.blocks.is_empty() {
            state.push_str(&format!(", BLOCKS {}", row.blocks.join(", ")));
        }
        writeln!(
            out,
            "{:<15} {:<17} {:<16} {:>9} {:<6} {:<8} {state}",
            row.ip,
            row.mac,
            row.hostname.as_deref().unwrap_or("-"),
            expires,
            memory,
            row.declared.unwrap_or("-")
        )?;
    }
    for repair in &state.remediations {
        writeln!(
            out,
            "repair: {} {} {}",
            repair.ip, repair.mac, repair.result
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use dhcp_engine::{
        leases::{Lease, LeaseTable},
        reconcile::LeaseStatus,
    };

    use super::*;

    #[test]
    fn each_lease_is_declared_orphan_or_blocking_from_the_files_on_disk() {
        let dir = std::env::temp_dir().join(format!("leases-view-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dnsmasq.d")).unwrap();
        let hosts = dir.join("dhcphosts.txt");
        // CloudStack's layout: the range and the hosts file named in conf-dir's cloud.conf.
        std::fs::write(
            dir.join("dnsmasq.conf"),
            format!("conf-dir={}\n", dir.join("dnsmasq.d").display()),
        )
        .unwrap();
        std::fs::write(
            dir.join("dnsmasq.d/cloud.conf"),
            format!(
                "dhcp-hostsfile={}\ndhcp-range=set:interface-eth2-0,10.1.1.1,static,255.255.255.0\n",
                hosts.display()
            ),
        )
        .unwrap();
        // vm-1 is declared; vm-3 was given the expunged vm-2's address.
        std::fs::write(
            &hosts,
            "02:00:00:00:00:01,10.1.1.50,vm-1,infinite\n02:00:00:00:00:03,10.1.1.51,vm-3,infinite\n",
        )
        .unwrap();
        let lease = |ip: &str, mac: u8| Lease {
            ip: ip.parse().unwrap(),
            hwaddr: vec![2, 0, 0, 0, 0, mac],
            htype: 1,
            client_id: None,
            hostname: None,
            expiry: Expiry::Never,
            iaid: None,
        };
        let table: LeaseTable = [lease("10.1.1.50", 1), lease("10.1.1.51", 2)]
            .into_iter()
            .collect();
        let args = LeasesArgs {
            leases: dir.join("dnsmasq.leases"),
            lease_format: LeaseFormatName::Dnsmasq,
            state_file: dir.join("state.json"),
            probe_memory: false,
            dnsmasq_conf: Some(dir.join("dnsmasq.conf")),
            dnsmasq_pid_file: None,
            kea_conf: None,
            server: "127.0.0.1:67".parse().unwrap(),
            json: true,
        };
        let (reconciler, found) = reconcile(&args, None, &table).unwrap().unwrap();
        let mut statuses: Vec<_> = reconciler.statuses().collect();
        statuses.sort_by_key(|(ip, _)| *ip);
        assert_eq!(
            statuses,
            [
                ("10.1.1.50".parse().unwrap(), LeaseStatus::Declared),
                ("10.1.1.51".parse().unwrap(), LeaseStatus::Orphan)
            ]
        );
        assert!(
            found.iter().any(|f| matches!(f, Reconciled::Blocked(b)
                if b.hostname.as_deref() == Some("vm-3")
                    && b.host_source == format!("{}:2", hosts.display())
                    && b.holder_is_orphan)),
            "{found:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
