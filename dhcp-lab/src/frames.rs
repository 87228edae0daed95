//! Crafted frames for the tests: DHCP messages encoded with dhcproto, wrapped in Ethernet,
//! VLAN, IPv4/IPv6 and UDP with etherparse, and sent from inside a namespace with a packet
//! socket (for what real peers cannot produce here, such as VLAN tags on a kernel without
//! 802.1Q support, or malformed packets).
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::bail;
use dhcproto::{Encodable as _, Encoder, v4, v6};
use etherparse::{IpHeaders, Ipv4Header, Ipv4Options, PacketBuilder, VlanId};

use crate::Netns;

/// The message types [`Dhcpv4Spec::new`] takes, for users without a `dhcproto` dependency.
pub use dhcproto::v4::MessageType;

/// A DHCPv4 message to encode.
#[derive(Debug, Clone)]
pub struct Dhcpv4Spec {
    pub message_type: v4::MessageType,
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// Option 1, as servers send in OFFER/ACK.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 51, seconds.
    pub lease_secs: Option<u32>,
    /// Option 61 (type byte included, as clients send it).
    pub client_id: Option<Vec<u8>>,
}

impl Dhcpv4Spec {
    pub fn new(message_type: v4::MessageType, xid: u32, chaddr: [u8; 6]) -> Dhcpv4Spec {
        Dhcpv4Spec {
            message_type,
            xid,
            chaddr,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            server_id: None,
            requested_ip: None,
            hostname: None,
            subnet_mask: None,
            lease_secs: None,
            client_id: None,
        }
    }

    /// The UDP payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = v4::Message::new(
            self.ciaddr,
            self.yiaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.chaddr,
        );
        msg.set_xid(self.xid);
        if matches!(
            self.message_type,
            v4::MessageType::Offer | v4::MessageType::Ack | v4::MessageType::Nak
        ) {
            msg.set_opcode(v4::Opcode::BootReply);
        }
        let opts = msg.opts_mut();
        opts.insert(v4::DhcpOption::MessageType(self.message_type));
        if let Some(sid) = self.server_id {
            opts.insert(v4::DhcpOption::ServerIdentifier(sid));
        }
        if let Some(req) = self.requested_ip {
            opts.insert(v4::DhcpOption::RequestedIpAddress(req));
        }
        if let Some(mask) = self.subnet_mask {
            opts.insert(v4::DhcpOption::SubnetMask(mask));
        }
        if let Some(secs) = self.lease_secs {
            opts.insert(v4::DhcpOption::AddressLeaseTime(secs));
        }
        if let Some(host) = &self.hostname {
            opts.insert(v4::DhcpOption::Hostname(host.clone()));
        }
        if let Some(id) = &self.client_id {
            opts.insert(v4::DhcpOption::ClientIdentifier(id.clone()));
        }
        let mut out = Vec::new();
        msg.encode(&mut Encoder::new(&mut out))
            .expect("encoding to a Vec cannot fail");
        out
    }
}

/// A DHCPv6 SOLICIT payload with a client DUID.
pub fn dhcpv6_solicit(xid: u32, duid: &[u8]) -> Vec<u8> {
    let mut msg = v6::Message::new(v6::MessageType::Solicit);
    msg.set_xid_num(xid);
    msg.opts_mut()
        .insert(v6::DhcpOption::ClientId(duid.to_vec()));
    let mut out = Vec::new();
    msg.encode(&mut Encoder::new(&mut out))
        .expect("encoding to a Vec cannot fail");
    out
}

/// A DHCPv6 client/server message, encoded by dhcproto: what the correlation tests send and
/// expect (RELEASE, REPLY, ADVERTISE with identity associations and status codes).
#[derive(Debug, Clone, Default)]
pub struct Dhcpv6Spec {
    /// Message type code (8 RELEASE, 7 REPLY, ...).
    pub code: u8,
    pub xid: u32,
    pub client_duid: Option<Vec<u8>>,
    pub server_duid: Option<Vec<u8>>,
    /// The message's own status (option 13 at the top level).
    pub status: Option<u16>,
    /// IA_NAs: IAID, addresses, the IA's own status.
    pub ias: Vec<(u32, Vec<Ipv6Addr>, Option<u16>)>,
}

impl Dhcpv6Spec {
    pub fn payload(&self) -> Vec<u8> {
        let status = |code: u16, msg: &str| {
            v6::DhcpOption::StatusCode(v6::StatusCode {
                status: code.into(),
                msg: msg.into(),
            })
        };
        let mut msg = v6::Message::new(v6::MessageType::from(self.code));
        msg.set_xid_num(self.xid);
        let opts = msg.opts_mut();
        if let Some(duid) = &self.client_duid {
            opts.insert(v6::DhcpOption::ClientId(duid.clone()));
        }
        if let Some(duid) = &self.server_duid {
            opts.insert(v6::DhcpOption::ServerId(duid.clone()));
        }
        for (iaid, addresses, ia_status) in &self.ias {
            let mut ia_opts = v6::DhcpOptions::new();
            for addr in addresses {
                ia_opts.insert(v6::DhcpOption::IAAddr(v6::IAAddr {
                    addr: *addr,
                    preferred_life: 0,
                    valid_life: 0,
                    opts: v6::DhcpOptions::new(),
                }));
            }
            if let Some(code) = ia_status {
                ia_opts.insert(status(*code, "ia status"));
            }
            opts.insert(v6::DhcpOption::IANA(v6::IANA {
                id: *iaid,
                t1: 0,
                t2: 0,
                opts: ia_opts,
            }));
        }
        if let Some(code) = self.status {
            opts.insert(status(code, "status"));
        }
        let mut out = Vec::new();
        msg.encode(&mut Encoder::new(&mut out))
            .expect("encoding to a Vec cannot fail");
        out
    }
}

/// Link and network framing of a crafted packet.
#[derive(Debug, Clone)]
pub struct Framing {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// VLAN ids, outermost first: none, one (802.1Q) or two (802.1ad QinQ).
    pub vlans: Vec<u16>,
    /// Bytes of IPv4 options (a multiple of 4) to make IHL > 5.
    pub ip_options: Vec<u8>,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            src_mac: [0x52, 0x54, 0, 0xaa, 0, 1],
            dst_mac: [0xff; 6],
            vlans: Vec::new(),
            ip_options: Vec::new(),
        }
    }
}

fn link(
    framing: &Framing,
) -> anyhow::Result<etherparse::PacketBuilderStep<etherparse::Ethernet2Header>> {
    Ok(PacketBuilder::ethernet2(framing.src_mac, framing.dst_mac))
}

fn vlan_id(id: u16) -> anyhow::Result<VlanId> {
    VlanId::try_new(id).map_err(|e| anyhow::anyhow!("vlan id {id}: {e}"))
}

/// A client's message as a client without an address sends it, from `src_mac`:
/// 0.0.0.0:68 to 255.255.255.255:67.
pub fn client_broadcast(spec: &Dhcpv4Spec, src_mac: [u8; 6]) -> anyhow::Result<Vec<u8>> {
    let framing = Framing {
        src_mac,
        ..Framing::default()
    };
    ipv4_udp(
        &framing,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        (68, 67),
        &spec.encode(),
    )
}

/// An Ethernet/IPv4/UDP frame around `payload`.
pub fn ipv4_udp(
    framing: &Framing,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut header = Ipv4Header::new(0, 64, etherparse::IpNumber::UDP, src.octets(), dst.octets())?;
    header.options = Ipv4Options::try_from(framing.ip_options.as_slice())
        .map_err(|e| anyhow::anyhow!("ip options: {e}"))?;
    let ip = IpHeaders::Ipv4(header, Default::default());
    let builder = match framing.vlans.as_slice() {
        [] => link(framing)?.ip(ip),
        [one] => link(framing)?.single_vlan(vlan_id(*one)?).ip(ip),
        [outer, inner] => link(framing)?
            .double_vlan(vlan_id(*outer)?, vlan_id(*inner)?)
            .ip(ip),
        more => bail!("{} VLAN tags: at most two", more.len()),
    };
    let builder = builder.udp(ports.0, ports.1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload)?;
    Ok(frame)
}

/// An Ethernet/IPv6/UDP frame around `payload`.
pub fn ipv6_udp(
    framing: &Framing,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let builder = link(framing)?
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(ports.0, ports.1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload)?;
    Ok(frame)
}

/// Sends `frames` out of `iface` inside `ns` through an AF_PACKET socket, as they are.
pub fn send_frames(ns: &Netns, iface: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    send_frames_in(ns.name(), iface, frames)
}

/// [`send_frames`] in the namespace called `ns`, for a thread that does not own the [`Netns`].
pub fn send_frames_in(ns: &str, iface: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    crate::netns::inside(ns, || -> anyhow::Result<()> {
        let c_iface = std::ffi::CString::new(iface)?;
        // SAFETY: plain libc calls with valid arguments; the fd is closed below.
        unsafe {
            let index = libc::if_nametoindex(c_iface.as_ptr());
            if index == 0 {
                bail!("no interface {iface} in namespace {ns}");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            let mut result = Ok(());
            for frame in frames {
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if sent < 0 {
                    result = Err(anyhow::anyhow!(
                        "sendto on {iface}: {}",
                        std::io::Error::last_os_error()
                    ));
                    break;
                }
            }
            libc::close(fd);
            result
        }
    })?
}
