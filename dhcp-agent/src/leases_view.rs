//! `dhcp-agent leases`: the lease table as the server's file has it, joined with what the daemon
//! knows (pending and dropped releases, repairs) and, on request, with the server's memory.
use std::{collections::HashMap, io::Write as _, net::SocketAddrV4, path::PathBuf};

use serde::Serialize;

use dhcp_engine::leases::{Expiry, LeaseFormatName};
use dhcp_wire::hex_colon;

use crate::{
    args::parse_lease_format,
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
    /// Also ask the server whether it holds each lease in memory.
    #[arg(long)]
    pub probe_memory: bool,
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
    let now = jiff::Timestamp::now().as_second();
    let mut leases: Vec<_> = table.v4.values().collect();
    leases.sort_by_key(|l| l.ip);
    let mut rows = Vec::new();
    for lease in leases {
        let ip = lease.ip.to_string();
        let (state_name, cause) = if pending.contains_key(ip.as_str()) {
            ("release_pending", None)
        } else if let Some(cause) = dropped.get(&ip) {
            ("release_dropped", Some(cause.clone()))
        } else {
            ("leased", None)
        };
        let in_server_memory = match (args.probe_memory, lease.ip) {
            (true, std::net::IpAddr::V4(v4)) => {
                Some(server_query::probe(args.server, v4, server_query::PROBE_TIMEOUT)?.leased())
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
        "{:<15} {:<17} {:<16} {:>9} {:<6} STATE",
        "IP", "MAC", "HOSTNAME", "EXPIRES", "MEMORY"
    )?;
    for row in &rows {
        let expires = row
            .expires_in
            .map_or("never".to_owned(), |s| format!("{s}s"));
        let memory = row
            .in_server_memory
            .map_or("-", |held| if held { "yes" } else { "NO" });
        let state = match &row.cause {
            Some(cause) => format!("{} ({cause})", row.state),
            None => row.state.to_owned(),
        };
        writeln!(
            out,
            "{:<15} {:<17} {:<16} {:>9} {:<6} {state}",
            row.ip,
            row.mac,
            row.hostname.as_deref().unwrap_or("-"),
            expires,
            memory
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
