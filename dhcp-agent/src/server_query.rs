//! Talking to the local DHCP server: ask what it holds in memory (a DHCPINFORM, as dnsmasq's
//! `dhcp_lease_time` does) and send it a correct DHCPRELEASE.
//!
//! dnsmasq answers a DHCPINFORM sent to 127.0.0.1:67 with ciaddr set: option 54 is the server id
//! it uses for that address's subnet, and option 51 (lease time) is present only while it holds
//! a lease for the address. That is the server's memory, not its lease file.
use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use dhcproto::{Encodable as _, Encoder, v4};
use thiserror::Error;

use dhcp_wire::{Dhcpv4, MessageType};

pub const SERVER_PORT: u16 = 67;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("no answer from the DHCP server at {0} within {1:?}")]
    NoAnswer(SocketAddrV4, Duration),
    #[error("talking to the DHCP server: {0}")]
    Io(#[from] std::io::Error),
}

/// What the server said about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// Option 54 of the answer.
    pub server_id: Option<Ipv4Addr>,
    /// Remaining lease time (option 51) when the server holds a lease.
    pub lease_time: Option<u32>,
}

impl LeaseState {
    pub fn leased(&self) -> bool {
        self.lease_time.is_some()
    }
}

fn encode(msg: &v4::Message) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut Encoder::new(&mut out))
        .expect("encoding to a Vec cannot fail");
    out
}

/// A transaction id nobody can guess, for packets of a process the daemon does not know (the
/// `release` command).
pub fn random_xid() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom(2) writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 4 {
        // No entropy at all is no reason not to release: the time's nanoseconds will do.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ (t.as_secs() as u32);
    }
    u32::from_ne_bytes(bytes)
}

/// Asks the server at `server` (normally 127.0.0.1:67) what it holds for `ip`, in a DHCPINFORM
/// carrying `xid` (one the daemon's observer handed out, so it knows the packet for its own).
pub fn probe(
    server: SocketAddrV4,
    ip: Ipv4Addr,
    timeout: Duration,
    xid: u32,
) -> Result<LeaseState, QueryError> {
    let socket = UdpSocket::bind((*server.ip(), 0))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(&inform(ip, xid), server)?;
    let mut buf = [0u8; 1500];
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(QueryError::NoAnswer(server, timeout));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(state) = answer_to(&buf[..n], xid) {
            return Ok(state);
        }
        if std::time::Instant::now() >= deadline {
            return Err(QueryError::NoAnswer(server, timeout));
        }
    }
}

/// A DHCPINFORM about `ip`.
fn inform(ip: Ipv4Addr, xid: u32) -> Vec<u8> {
    let mut msg = v4::Message::new(
        ip,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[0; 6],
    );
    msg.set_htype(v4::HType::Eth);
    msg.set_xid(xid);
    msg.opts_mut()
        .insert(v4::DhcpOption::MessageType(v4::MessageType::Inform));
    encode(&msg)
}

/// The server's ACK to our INFORM `xid`, if `datagram` is one.
fn answer_to(datagram: &[u8], xid: u32) -> Option<LeaseState> {
    let answer = Dhcpv4::parse(datagram).ok()?;
    (answer.xid == xid && answer.message_type == Some(MessageType::Ack)).then_some(LeaseState {
        server_id: answer.server_id,
        lease_time: answer.lease_time,
    })
}

/// DHCPINFORMs sent without waiting: their answers are looked for later with
/// [`Prober::answered`]. The daemon's liveness check sends one at a housekeeping tick and looks
/// for its answer at the ticks after, so asking the server costs no wake-up of its own (a
/// blocking probe on a helper thread cost three context switches each time). The socket is
/// kept between probes: one opened per probe made the agent's open files move between two
/// counts (the soak's check that nothing leaks saw 27 and 28).
pub struct Prober {
    server: SocketAddrV4,
    socket: Option<UdpSocket>,
    /// The probes sent since the last answer, oldest first. An answer to any of them is an
    /// answer: a dnsmasq busy pinging an address for a new client answers what queued seconds
    /// late, in order (dhcp-lab/tests/dnsmasq_deaf.rs).
    waiting: VecDeque<u32>,
}

/// Probes remembered while none is answered (at one every 5 s, the last 40 s: beyond
/// [`dhcp_engine::liveness::SILENCE_LIMIT`]).
const WAITING_MAX: usize = 8;

impl Prober {
    pub fn new(server: SocketAddrV4) -> Prober {
        Prober {
            server,
            socket: None,
            waiting: VecDeque::new(),
        }
    }

    /// Sends an INFORM about `ip`. A socket that fails is dropped, with the probes that wait on
    /// it, and the next probe opens another (the server's address may have moved to the other
    /// router of a pair).
    pub fn send(&mut self, ip: Ipv4Addr, xid: u32) -> Result<(), QueryError> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => {
                self.waiting.clear();
                let socket = UdpSocket::bind((*self.server.ip(), 0))?;
                socket.set_nonblocking(true)?;
                socket
            }
        };
        socket.send_to(&inform(ip, xid), self.server)?;
        self.socket = Some(socket);
        if self.waiting.len() == WAITING_MAX {
            self.waiting.pop_front();
        }
        self.waiting.push_back(xid);
        Ok(())
    }

    /// `Some(true)` when the server has answered one of the probes waiting since the last
    /// look, `Some(false)` while they still wait, `None` when none waits.
    pub fn answered(&mut self) -> Option<bool> {
        let socket = self.socket.as_ref()?;
        if self.waiting.is_empty() {
            return None;
        }
        let mut buf = [0u8; 1500];
        let mut heard = false;
        // Everything queued is read (answers to older probes, a stray datagram); an error
        // means nothing more.
        while let Ok(n) = socket.recv(&mut buf) {
            heard |= self
                .waiting
                .iter()
                .any(|&xid| answer_to(&buf[..n], xid).is_some());
        }
        if heard {
            self.waiting.clear();
        }
        Some(heard)
    }
}

/// A DHCPRELEASE as the server will accept it: ciaddr, chaddr, the server's own id in option 54,
/// the client id when the lease has one, and no option 50.
pub fn release_message(release: &ReleaseSpec<'_>) -> Vec<u8> {
    let ReleaseSpec {
        ip,
        mac,
        server_id,
        client_id,
        xid,
    } = *release;
    let mut msg = v4::Message::new(
        ip,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    msg.set_xid(xid);
    let opts = msg.opts_mut();
    opts.insert(v4::DhcpOption::MessageType(v4::MessageType::Release));
    opts.insert(v4::DhcpOption::ServerIdentifier(server_id));
    if let Some(id) = client_id {
        opts.insert(v4::DhcpOption::ClientIdentifier(id.to_vec()));
    }
    encode(&msg)
}

/// A RELEASE to send: the lease, the server id the server uses, and the xid.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseSpec<'a> {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub server_id: Ipv4Addr,
    pub client_id: Option<&'a [u8]>,
    pub xid: u32,
}

/// Sends a RELEASE to the server at its own id (a local address: it travels over `lo`, as
/// `dhcp_release`'s does).
pub fn send_release(release: &ReleaseSpec<'_>) -> Result<(), QueryError> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.send_to(&release_message(release), (release.server_id, SERVER_PORT))?;
    Ok(())
}

/// Sends a RELEASE and polls the server's memory (probes with `probe_xid`) until the lease is
/// gone (`Ok(true)`) or `timeout` passes with the server still holding it (`Ok(false)`).
/// Blocking.
pub fn release_and_verify(
    server: SocketAddrV4,
    release: &ReleaseSpec<'_>,
    probe_xid: u32,
    timeout: Duration,
) -> Result<bool, QueryError> {
    send_release(release)?;
    let ip = release.ip;
    let start = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if !probe(server, ip, PROBE_TIMEOUT, probe_xid)?.leased() {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
    }
}

/// How long one probe waits for the local server's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How the agent asks the server's memory and makes repairs: dnsmasq answers DHCPINFORMs at
/// its address; Kea answers `lease4-get` on its control socket (it ignores a DHCPINFORM sent
/// over `lo`: it listens on its configured interfaces only); a Kea without a control socket
/// cannot be asked at all (observe only).
#[derive(Debug, Clone)]
pub enum ServerAccess {
    Dhcp(SocketAddrV4),
    Kea(crate::kea::KeaControl),
    ObserveOnly,
}

impl ServerAccess {
    /// Whether the server holds a lease for `ip` in its memory (`xid`: the DHCPINFORM's).
    pub fn holds(&self, ip: Ipv4Addr, xid: u32, timeout: Duration) -> Result<bool, String> {
        match self {
            ServerAccess::Dhcp(server) => probe(*server, ip, timeout, xid)
                .map(|s| s.leased())
                .map_err(|e| e.to_string()),
            ServerAccess::Kea(kea) => kea
                .lease4_get(ip)
                .map(|lease| lease.is_some())
                .map_err(|e| e.to_string()),
            ServerAccess::ObserveOnly => Err("the server cannot be asked (observing only)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_carries_what_dnsmasq_checks_and_nothing_else() {
        let ip = Ipv4Addr::new(172, 29, 101, 150);
        let vip = Ipv4Addr::new(172, 29, 101, 1);
        let payload = release_message(&ReleaseSpec {
            ip,
            mac: [0x52, 0x54, 0, 1, 2, 3],
            server_id: vip,
            client_id: Some(&[1, 0x52, 0x54, 0, 1, 2, 3]),
            xid: 0x1234_5678,
        });
        let msg = Dhcpv4::parse(&payload).unwrap();
        assert_eq!(msg.xid, 0x1234_5678, "the xid the observer handed out");
        assert_eq!(msg.message_type, Some(MessageType::Release));
        assert_eq!(
            (msg.ciaddr, msg.server_id, msg.requested_ip),
            (ip, Some(vip), None)
        );
        assert_eq!(msg.mac(), Some([0x52, 0x54, 0, 1, 2, 3]));
        assert_eq!(msg.client_id, Some(&[1, 0x52, 0x54, 0, 1, 2, 3][..]));
    }
}
