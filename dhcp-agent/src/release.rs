//! `dhcp-agent release IFACE IP MAC [CLIENT_ID]`: a drop-in for dnsmasq's `dhcp_release` that
//! asks the server for the server id it really uses, sends a RELEASE it will accept, and checks
//! in the server's memory that the lease is gone. Exit status 0 only when it is.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Context as _, bail};

use dhcp_wire::hex_colon;

use crate::{
    capture::Interface,
    server_query::{self, LeaseState},
};

#[derive(Debug, clap::Args, Clone)]
pub struct ReleaseArgs {
    /// Interface the lease was served on (checked to exist, as `dhcp_release` takes it).
    pub iface: String,
    pub ip: Ipv4Addr,
    #[arg(value_parser = dhcp_wire::parse_mac)]
    pub mac: [u8; 6],
    /// Client identifier as colon-separated hex (`01:52:54:...`), when the lease has one.
    #[arg(value_parser = parse_client_id)]
    pub client_id: Option<Vec<u8>>,
    /// Where the server answers DHCPINFORM queries.
    #[arg(long, default_value = "127.0.0.1:67")]
    pub server: SocketAddrV4,
    /// How long to wait for the server to drop the lease.
    #[arg(long, default_value = "2s", value_parser = crate::args::parse_duration)]
    pub timeout: Duration,
}

fn parse_client_id(text: &str) -> Result<Vec<u8>, String> {
    dhcp_wire::parse_hex_bytes(text)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("{text:?} is not a client id (colon-separated hex)"))
}

fn probe(args: &ReleaseArgs) -> anyhow::Result<LeaseState> {
    server_query::probe(
        args.server,
        args.ip,
        server_query::PROBE_TIMEOUT,
        server_query::random_xid(),
    )
    .with_context(|| format!("asking the server about {}", args.ip))
}

pub fn run(args: &ReleaseArgs) -> anyhow::Result<()> {
    if Interface::by_name(&args.iface).is_none() {
        bail!("unknown interface {:?}", args.iface);
    }
    let mac = hex_colon(&args.mac);
    let before = probe(args)?;
    if !before.leased() {
        println!(
            "{} {mac}: no lease in the server's memory; nothing to release",
            args.ip
        );
        return Ok(());
    }
    let server_id = before
        .server_id
        .context("the server's answer has no server identifier")?;
    let release = server_query::ReleaseSpec {
        ip: args.ip,
        mac: args.mac,
        server_id,
        client_id: args.client_id.as_deref(),
        xid: server_query::random_xid(),
    };
    let gone = server_query::release_and_verify(
        args.server,
        &release,
        server_query::random_xid(),
        args.timeout,
    )
    .with_context(|| format!("checking {} after the RELEASE", args.ip))?;
    if gone {
        println!(
            "{} {mac}: released (server id {server_id}); the server no longer holds it",
            args.ip
        );
        return Ok(());
    }
    bail!(
        "{} {mac}: the server still holds the lease {:?} after a RELEASE with server id {server_id} (wrong MAC or client id?)",
        args.ip,
        args.timeout
    )
}
