//! `dhcp-agent release IFACE IP MAC [CLIENT_ID]`: a drop-in for dnsmasq's `dhcp_release` that
//! asks the server for the server id it really uses, sends a RELEASE it will accept, and checks
//! in the server's memory that the lease is gone. Exit status 0 only when it is.
//!
//! `dhcp-agent release --v6 --iface IFACE --ip IP --client-id DUID --iaid IAID [--server-id
//! DUID] [--dry-run]`: the same for dnsmasq's `dhcp_release6`, with its arguments. The server's
//! DUID is taken from the lease file's `duid` line (dnsmasq's own), so a `--server-id` copied
//! from the wrong router cannot make the RELEASE one the server ignores; the binding must then
//! leave the lease file (dnsmasq offers no way to ask its DHCPv6 memory: see
//! [`crate::remediate6`]).
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use dhcp_engine::leases::LeaseFormatName;

use anyhow::{Context as _, bail};

use dhcp_wire::hex_colon;

use crate::{
    capture::Interface,
    remediate6,
    server_query::{self, LeaseState},
};

#[derive(Debug, clap::Args, Clone)]
pub struct ReleaseArgs {
    /// Release a DHCPv6 binding, with dhcp_release6's options (--iface, --ip, --client-id,
    /// --iaid, --server-id, --dry-run).
    #[arg(long)]
    pub v6: bool,
    /// Interface the lease was served on (checked to exist, as `dhcp_release` takes it).
    #[arg(required_unless_present = "v6")]
    pub iface: Option<String>,
    #[arg(required_unless_present = "v6")]
    pub ip: Option<Ipv4Addr>,
    #[arg(value_parser = dhcp_wire::parse_mac, required_unless_present = "v6")]
    pub mac: Option<[u8; 6]>,
    /// Client identifier as colon-separated hex (`01:52:54:...`), when the lease has one.
    #[arg(value_parser = parse_client_id)]
    pub client_id: Option<::std::vec::Vec<u8>>,
    /// Where the server answers DHCPINFORM queries.
    #[arg(long, default_value = "127.0.0.1:67")]
    pub server: SocketAddrV4,
    /// How long to wait for the server to drop the lease.
    #[arg(long, default_value = "2s", value_parser = crate::args::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub v6_args: Release6Args,
}

/// `dhcp_release6`'s arguments (with `--v6`).
#[derive(Debug, clap::Args, Clone)]
pub struct Release6Args {
    /// DHCPv6: the interface the binding was served on.
    #[arg(
        long = "iface",
        id = "v6_iface",
        value_name = "IFACE",
        requires = "v6",
        required_if_eq("v6", "true")
    )]
    pub iface: Option<String>,
    /// DHCPv6: the bound address.
    #[arg(
        long = "ip",
        id = "v6_ip",
        value_name = "IP",
        requires = "v6",
        required_if_eq("v6", "true")
    )]
    pub ip: Option<Ipv6Addr>,
    /// DHCPv6: the client's DUID, colon-separated hex.
    #[arg(long = "client-id", id = "v6_client_id", value_name = "DUID", requires = "v6", required_if_eq("v6", "true"), value_parser = parse_client_id)]
    pub client_id: Option<::std::vec::Vec<u8>>,
    /// DHCPv6: the identity association's id (decimal, as the lease file writes it).
    #[arg(long, requires = "v6", required_if_eq("v6", "true"))]
    pub iaid: Option<u32>,
    /// DHCPv6: the server's DUID; by default the lease file's `duid` line. One that differs
    /// from the file's is reported and not used (the server would ignore the RELEASE).
    #[arg(long, requires = "v6", value_parser = parse_client_id)]
    pub server_id: Option<::std::vec::Vec<u8>>,
    /// DHCPv6: print the RELEASE (hex) and send nothing.
    #[arg(long, requires = "v6")]
    pub dry_run: bool,
    /// DHCPv6: the server's lease file (its `duid` line, and where the binding must leave).
    #[arg(long, requires = "v6", default_value = crate::leases::DEFAULT_LEASE_FILE)]
    pub leases: PathBuf,
}

fn parse_client_id(text: &str) -> Result<Vec<u8>, String> {
    dhcp_wire::parse_hex_bytes(text)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("{text:?} is not a client id (colon-separated hex)"))
}

fn probe(args: &ReleaseArgs, ip: Ipv4Addr) -> anyhow::Result<LeaseState> {
    server_query::probe(
        args.server,
        ip,
        server_query::PROBE_TIMEOUT,
        server_query::random_xid(),
    )
    .with_context(|| format!("asking the server about {ip}"))
}

pub fn run(args: &ReleaseArgs) -> anyhow::Result<()> {
    if args.v6 {
        return run6(&args.v6_args, args.timeout);
    }
    let (Some(iface), Some(ip), Some(mac_bytes)) = (&args.iface, args.ip, args.mac) else {
        bail!("IFACE, IP and MAC are required (or --v6 with dhcp_release6's options)");
    };
    if Interface::by_name(iface).is_none() {
        bail!("unknown interface {iface:?}");
    }
    let mac = hex_colon(&mac_bytes);
    let before = probe(args, ip)?;
    if !before.leased() {
        println!("{ip} {mac}: no lease in the server's memory; nothing to release");
        return Ok(());
    }
    let server_id = before
        .server_id
        .context("the server's answer has no server identifier")?;
    let release = server_query::ReleaseSpec {
        ip,
        mac: mac_bytes,
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
    .with_context(|| format!("checking {ip} after the RELEASE"))?;
    if gone {
        println!("{ip} {mac}: released (server id {server_id}); the server no longer holds it");
        return Ok(());
    }
    bail!(
        "{ip} {mac}: the server still holds the lease {:?} after a RELEASE with server id {server_id} (wrong MAC or client id?)",
        args.timeout
    )
}

/// `--v6`: the server's DUID from the lease file, a RELEASE it accepts, the binding gone from
/// the file.
fn run6(args: &Release6Args, timeout: Duration) -> anyhow::Result<()> {
    let (Some(iface), Some(ip), Some(duid), Some(iaid)) =
        (&args.iface, args.ip, &args.client_id, args.iaid)
    else {
        bail!("--v6 needs --iface, --ip, --client-id and --iaid");
    };
    if Interface::by_name(iface).is_none() {
        bail!("unknown interface {iface:?}");
    }
    let format = LeaseFormatName::Dnsmasq;
    // A dry run with the server's id given needs no lease file (as dhcp_release6's).
    let own_duid = match (&args.server_id, args.dry_run) {
        (Some(_), true) => None,
        _ => {
            crate::leases::read_table(&args.leases, format.format().as_ref())
                .with_context(|| format!("reading {}", args.leases.display()))?
                .server_duid
        }
    };
    let server_duid = match (&own_duid, &args.server_id) {
        (Some(own), Some(given)) if own != given => {
            eprintln!(
                "--server-id {} is not the server's DUID {} (the lease file's): using the server's,                  which it accepts",
                hex_colon(given),
                hex_colon(own)
            );
            own.clone()
        }
        (Some(own), _) => own.clone(),
        (None, Some(given)) => given.clone(),
        (None, None) => bail!(
            "{} has no duid line (no DHCPv6 lease yet?) and no --server-id was given",
            args.leases.display()
        ),
    };
    let spec = remediate6::Release6Spec {
        address: ip,
        client_duid: duid,
        iaid,
        server_duid: &server_duid,
        xid: server_query::random_xid() & 0x00ff_ffff,
    };
    let who = format!("{ip} duid {} iaid {iaid}", hex_colon(duid));
    if args.dry_run {
        println!("{}", hex_colon(&remediate6::release6_message(&spec)));
        return Ok(());
    }
    if !remediate6::binding_listed(&args.leases, format, &spec)? {
        println!("{who}: not in the lease file; nothing to release");
        return Ok(());
    }
    if remediate6::release6_and_verify(iface, &spec, &args.leases, format, timeout)? {
        println!(
            "{who}: released (server id {}); the lease file no longer lists it",
            hex_colon(&server_duid)
        );
        return Ok(());
    }
    bail!(
        "{who}: the lease file still lists the binding {timeout:?} after a RELEASE with server id {}",
        hex_colon(&server_duid)
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> super::ReleaseArgs {
        let argv = [&["dhcp-agent", "release"][..], args].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Release(args) => args,
            _ => unreachable!(),
        }
    }

    /// A client id once made clap panic: it read `Option<Vec<u8>>` as several u8 values.
    #[test]
    fn the_v4_and_v6_forms_parse_with_their_ids() {
        let v4 = parse(&[
            "eth2",
            "10.0.0.5",
            "52:54:00:00:00:01",
            "01:52:54:00:00:00:01",
        ]);
        assert_eq!(
            v4.client_id.as_deref(),
            Some(&[1, 0x52, 0x54, 0, 0, 0, 1][..])
        );
        let v6 = parse(&[
            "--v6",
            "--iface",
            "eth2",
            "--ip",
            "fd00::5",
            "--client-id",
            "00:03:00:01:aa",
            "--iaid",
            "7",
            "--server-id",
            "00:01",
        ]);
        assert!(v6.v6 && v6.iface.is_none());
        assert_eq!(
            v6.v6_args.client_id.as_deref(),
            Some(&[0, 3, 0, 1, 0xaa][..])
        );
        assert_eq!(
            (v6.v6_args.iaid, v6.v6_args.server_id.as_deref()),
            (Some(7), Some(&[0, 1][..]))
        );
        let missing = ["dhcp-agent", "release", "--v6", "--iface", "eth2"];
        assert!(
            Cli::try_parse_from(missing).is_err(),
            "--ip, --client-id, --iaid required"
        );
    }
}
