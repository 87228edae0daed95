//! Repair of dropped DHCPv6 releases, the part that touches the network and the lease file:
//! send the RELEASE the server accepts (its own DUID in option 2, to the servers' multicast
//! group on the lease's interface), then check that the binding left the lease file. What to
//! repair and when is the engine's ([`dhcp_engine::outstanding6`]).
//!
//! The file is the check because dnsmasq 2.90 has no way to be asked about its DHCPv6 bindings
//! without changing them: it implements no LEASEQUERY (RFC 5007) and answers an
//! INFORMATION-REQUEST with configuration only (rfc3315.c); it rewrites the lease file after
//! every change of a binding (lease_update_file after lease_prune), so the file follows its
//! memory. Kea's DHCPv6 server is repaired through its control socket instead
//! ([`execute6_kea`]: `lease6-del`, checked with `lease6-get` and the file), as its DHCPv4
//! server is. The server answers at port 546 (dhcp6.c sends every reply to the client port),
//! which the agent, without CAP_NET_BIND_SERVICE after attach, does not hold: its REPLY is seen
//! by the kernel hooks (and counted as the agent's own), not read here.
use std::{
    net::{Ipv6Addr, SocketAddrV6, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use dhcp_engine::{leases::LeaseFormatName, outstanding::RepairResult, outstanding6::Repair6};
use dhcproto::{Encodable as _, Encoder, v6};
use thiserror::Error;

use crate::{capture::Interface, leases::read_table};

/// The servers' multicast group (All_DHCP_Relay_Agents_and_Servers, RFC 8415 section 7.1).
pub const SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
const SERVER_PORT: u16 = 547;
/// Between sends of the same RELEASE (RFC 8415's REL_TIMEOUT).
const RESEND_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum Release6Error {
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    #[error("sending the RELEASE on {iface}: {source}")]
    Send {
        iface: String,
        source: std::io::Error,
    },
    #[error("reading the lease file: {0}")]
    LeaseFile(String),
}

/// A DHCPv6 RELEASE to send.
#[derive(Debug, Clone, Copy)]
pub struct Release6Spec<'a> {
    pub address: Ipv6Addr,
    pub client_duid: &'a [u8],
    pub iaid: u32,
    pub server_duid: &'a [u8],
    /// 24-bit transaction id.
    pub xid: u32,
}

/// The RELEASE as dnsmasq accepts it: client id, server id, one IA_NA with the address.
pub fn release6_message(spec: &Release6Spec<'_>) -> Vec<u8> {
    let mut msg = v6::Message::new(v6::MessageType::Release);
    msg.set_xid_num(spec.xid & 0x00ff_ffff);
    let opts = msg.opts_mut();
    opts.insert(v6::DhcpOption::ClientId(spec.client_duid.to_vec()));
    opts.insert(v6::DhcpOption::ServerId(spec.server_duid.to_vec()));
    let mut ia = v6::DhcpOptions::new();
    ia.insert(v6::DhcpOption::IAAddr(v6::IAAddr {
        addr: spec.address,
        preferred_life: 0,
        valid_life: 0,
        opts: v6::DhcpOptions::new(),
    }));
    opts.insert(v6::DhcpOption::IANA(v6::IANA {
        id: spec.iaid,
        t1: 0,
        t2: 0,
        opts: ia,
    }));
    let mut out = Vec::new();
    msg.encode(&mut Encoder::new(&mut out))
        .expect("encoding to a Vec cannot fail");
    out
}

/// Sends the RELEASE to the servers' group on `iface` (from an ephemeral port: the server does
/// not check it).
pub fn send_release6(iface: &str, spec: &Release6Spec<'_>) -> Result<(), Release6Error> {
    let index = Interface::by_name(iface)
        .ok_or_else(|| Release6Error::UnknownInterface(iface.to_owned()))?
        .index;
    let send = || -> std::io::Result<()> {
        let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        socket.send_to(
            &release6_message(spec),
            SocketAddrV6::new(SERVERS, SERVER_PORT, 0, index),
        )?;
        Ok(())
    };
    send().map_err(|source| Release6Error::Send {
        iface: iface.to_owned(),
        source,
    })
}

/// Whether the lease file lists the binding (address, client DUID, IAID).
pub fn binding_listed(
    leases: &Path,
    format: LeaseFormatName,
    spec: &Release6Spec<'_>,
) -> Result<bool, Release6Error> {
    let table = read_table(leases, format.format().as_ref())
        .map_err(|e| Release6Error::LeaseFile(e.to_string()))?;
    Ok(table.v6.iter().any(|l| {
        l.ip == std::net::IpAddr::V6(spec.address)
            && l.client_id.as_deref() == Some(spec.client_duid)
            && l.iaid == Some(spec.iaid)
    }))
}

/// Sends the RELEASE (again each second, same xid, as a client retransmits) until the lease
/// file no longer lists the binding (`Ok(true)`) or `timeout` passes (`Ok(false)`). Blocking.
pub fn release6_and_verify(
    iface: &str,
    spec: &Release6Spec<'_>,
    leases: &Path,
    format: LeaseFormatName,
    timeout: Duration,
) -> Result<bool, Release6Error> {
    let start = Instant::now();
    let mut sent_at: Option<Instant> = None;
    loop {
        if sent_at.is_none_or(|at| at.elapsed() >= RESEND_AFTER) {
            send_release6(iface, spec)?;
            sent_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
        // A file caught mid-rewrite reads as incomplete: try again at the next poll.
        match binding_listed(leases, format, spec) {
            Ok(false) => return Ok(true),
            Ok(true) | Err(Release6Error::LeaseFile(_)) if start.elapsed() < timeout => {}
            Ok(true) => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}

impl<'a> Release6Spec<'a> {
    /// The RELEASE a repair sends: the binding's, with the server's own DUID.
    pub fn of(repair: &'a Repair6) -> Release6Spec<'a> {
        Release6Spec {
            address: repair.address,
            client_duid: &repair.client_duid,
            iaid: repair.iaid,
            server_duid: &repair.server_duid,
            xid: repair.xid,
        }
    }
}

/// Sends the repair and waits for the binding to leave the lease file.
pub fn execute6(
    repair: &Repair6,
    leases: &Path,
    format: LeaseFormatName,
    timeout: Duration,
) -> (RepairResult, Option<String>) {
    let spec = Release6Spec::of(repair);
    match release6_and_verify(&repair.interface, &spec, leases, format, timeout) {
        Ok(true) => (RepairResult::Remediated, None),
        Ok(false) => (
            RepairResult::Failed,
            Some(format!(
                "the lease file still lists the binding {}s after the RELEASE",
                timeout.as_secs_f32()
            )),
        ),
        Err(err) => (RepairResult::Failed, Some(err.to_string())),
    }
}

/// Repairs through Kea's control socket: deletes Kea's lease of the address (`lease6-del`)
/// only while it is still the released binding's (the client's DUID and IAID), then checks
/// that `lease6-get` finds none and that the lease file no longer lists the binding.
pub fn execute6_kea(
    repair: &Repair6,
    kea: &crate::kea::KeaControl,
    leases: &Path,
    format: LeaseFormatName,
    timeout: Duration,
) -> (RepairResult, Option<String>) {
    let spec = Release6Spec::of(repair);
    crate::remediate::KeaDelete {
        command: "lease6-del",
        get: || kea.lease6_get(repair.address),
        del: || kea.lease6_del(repair.address),
        same_client: |held: &dhcp_engine::leases::Lease| {
            held.client_id.as_deref() == Some(&repair.client_duid[..])
                && held.iaid == Some(repair.iaid)
        },
        listed: || binding_listed(leases, format, &spec).ok(),
    }
    .run(leases, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_reads_back_as_what_dnsmasq_checks() {
        let address: Ipv6Addr = "fd00::10".parse().unwrap();
        let spec = Release6Spec {
            address,
            client_duid: &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6],
            iaid: 1234,
            server_duid: &[0, 1, 0, 1, 9, 9],
            xid: 0x1234_5678,
        };
        let info = dhcp_wire::dhcpv6::parse(&release6_message(&spec)).unwrap();
        assert_eq!((info.message_type, info.xid), ("RELEASE", 0x34_5678));
        assert_eq!(info.client_duid.as_deref(), Some(spec.client_duid));
        assert_eq!(info.server_duid.as_deref(), Some(spec.server_duid));
        assert_eq!(info.ias.len(), 1);
        assert_eq!(
            (info.ias[0].iaid, &info.ias[0].addresses[..]),
            (1234, &[address][..])
        );
    }
}
