//! Hostile frames through the real kernel hooks. A sender namespace writes crafted frames (lies
//! in every header length, DHCP options past the end, no magic cookie, garbage behind option
//! overload, huge hostnames, jumbo frames, VLAN stacks, empty payloads) onto a veth pair; the
//! agent watches the receiving end. For every frame the test checks that
//!
//! * it passes untouched: the receiving side gets exactly the bytes sent, after the ingress
//!   hook (see [`Sniffer`] for where each socket sits);
//! * the agent accounts for it as expected: DHCP, malformed (with the layer that failed), or
//!   not captured at all when the kernel program cannot find DHCP ports in it;
//!
//! and, at the end, that the agent is still running, stops cleanly on SIGTERM and never
//! panicked. `watch --json --show-malformed` gives one record per frame to check; the daemon
//! (`run`) is checked too, through the counters it exports (`dhcp_malformed_packets_total`,
//! `dhcp_packets_total`). Needs root (namespaces, BPF).
mod common;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use common::{Agent, METRICS_URL, s, sample};
use dhcp_lab::{
    Netns,
    frames::{self, Dhcpv4Spec, Framing, MessageType},
    netns::veth_pair,
    prometheus::http_get,
    traffic, wait_for,
};
use serde_json::{Value, json};

const TX_IFACE: &str = "hostile-tx";
const RX_IFACE: &str = "hostile-rx";
/// Source MAC of the crafted frames.
const CRAFTED_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xbd, 0x00, 0x01];
/// Transaction ids of the sentinel DISCOVERs, one after each crafted frame.
const SENTINEL_XID: u32 = 0x5e47_0000;
/// A frame longer than the kernel programs copy (`CAPTURE_BYTES`, 2048): they pass on its start.
const JUMBO: usize = 4096;

/// What the agent must make of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The kernel program finds no DHCP ports in it: no event.
    NotCaptured,
    /// One record of this protocol (`dhcpv4`, `dhcpv6`).
    Dhcp(&'static str),
    /// One malformed record, failing at this layer (`l2-l4`, `udp`, `dhcpv4`, `dhcpv6`).
    Malformed(&'static str),
}

/// One crafted frame and what must become of it.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Expect,
    /// Fields the agent's record must carry, beyond the protocol.
    fields: Vec<(&'static str, Value)>,
    /// The receiving kernel drops the frame itself, before any hook but XDP sees it.
    dropped_by_kernel: bool,
}

impl Case {
    fn new(name: &'static str, frame: Vec<u8>, expect: Expect) -> Case {
        Case {
            name,
            frame,
            expect,
            fields: Vec::new(),
            dropped_by_kernel: false,
        }
    }

    fn with(mut self, field: &'static str, value: Value) -> Case {
        self.fields.push((field, value));
        self
    }
}

/// Offset of the IPv4 header in an untagged frame, and of the UDP header behind a 20-byte one.
const IP: usize = 14;
const UDP: usize = IP + 20;
/// The DHCP message behind untagged Ethernet, a 20-byte IPv4 header and UDP.
const DHCP: usize = UDP + 8;

fn framing(vlans: &[u16]) -> Framing {
    Framing {
        src_mac: CRAFTED_MAC,
        vlans: vlans.to_vec(),
        ..Framing::default()
    }
}

/// A client's broadcast from 0.0.0.0:68 to port 67, with correct lengths and checksums.
fn to_server(vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    udp4(vlans, (68, 67), payload)
}

fn udp4(vlans: &[u16], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    frames::ipv4_udp(
        &framing(vlans),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        ports,
        payload,
    )
    .expect("frame")
}

fn udp6(ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    frames::ipv6_udp(
        &framing(&[]),
        "fe80::1".parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        ports,
        payload,
    )
    .expect("frame")
}

fn discover(xid: u32) -> Vec<u8> {
    Dhcpv4Spec::new(MessageType::Discover, xid, CRAFTED_MAC).encode()
}

/// A DISCOVER's fixed header and cookie with `options` as its whole options area.
fn with_options(options: &[u8]) -> Vec<u8> {
    let mut payload = discover(0x0bad_0001)[..240].to_vec();
    payload.extend_from_slice(options);
    payload
}

fn set_u16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// `frame` with `change` applied.
fn patched(mut frame: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    change(&mut frame);
    frame
}

/// Option 12 (hostname) of 255 bytes of `fill`.
fn hostname_option(fill: u8) -> Vec<u8> {
    let mut option = vec![12, 255];
    option.extend(std::iter::repeat_n(fill, 255));
    option
}

/// Every crafted frame. Names say what is wrong; `Expect` says what the agent must make of it.
fn cases() -> Vec<Case> {
    use Expect::{Dhcp, Malformed, NotCaptured};
    let plain = to_server(&[], &discover(0x0bad_0000));
    let mut cases = Vec::new();

    // Well-formed controls: one client's whole exchange, tagged frames, DHCPv6.
    for frame in traffic::exchange(3) {
        let name = match frame.message_type {
            MessageType::Discover => "control: DISCOVER",
            MessageType::Offer => "control: OFFER",
            MessageType::Request => "control: REQUEST",
            MessageType::Ack => "control: ACK",
            MessageType::Release => "control: RELEASE",
            _ => "control: other",
        };
        let kind = format!("{:?}", frame.message_type).to_uppercase();
        cases.push(Case::new(name, frame.bytes, Dhcp("dhcpv4")).with("message_type", json!(kind)));
    }
    cases.push(
        Case::new(
            "control: 802.1Q DISCOVER",
            to_server(&[100], &discover(0x0bad_0002)),
            Dhcp("dhcpv4"),
        )
        .with("vlan", json!(100)),
    );
    cases.push(
        Case::new(
            "control: QinQ DISCOVER",
            to_server(&[200, 300], &discover(0x0bad_0003)),
            Dhcp("dhcpv4"),
        )
        .with("vlan", json!(200))
        .with("vlan_inner", json!(300)),
    );
    cases.push(
        Case::new(
            "control: DHCPv6 SOLICIT",
            udp6(
                (546, 547),
                &frames::dhcpv6_solicit(0x0b_ad06, &[0, 3, 0, 1, 1, 2]),
            ),
            Dhcp("dhcpv6"),
        )
        .with("message_type", json!("SOLICIT")),
    );
    // Option 52 done right: option 54 continues in `file`.
    let mut overloaded = with_options(&[53, 1, 1, 52, 1, 1, 255]);
    overloaded[108..115].copy_from_slice(&[54, 4, 10, 0, 0, 9, 255]);
    cases.push(
        Case::new(
            "control: option overload, option 54 in file",
            to_server(&[], &overloaded),
            Dhcp("dhcpv4"),
        )
        .with("server_id", json!("10.0.0.9")),
    );
    // Legal, however large: three 255-byte hostnames (the first one counts).
    let mut hostnames = vec![53, 1, 1];
    for fill in [b'a', b'b', b'c'] {
        hostnames.extend(hostname_option(fill));
    }
    hostnames.push(255);
    cases.push(
        Case::new(
            "huge hostname: option 12 of 255 bytes, three times",
            to_server(&[], &with_options(&hostnames)),
            Dhcp("dhcpv4"),
        )
        .with("hostname", json!("a".repeat(255))),
    );
    cases.push(
        Case::new(
            "hostname with a newline and bytes that are not UTF-8",
            to_server(
                &[],
                &with_options(&[53, 1, 1, 12, 5, b'x', b'\n', 0xff, 0xfe, b'y', 255]),
            ),
            Dhcp("dhcpv4"),
        )
        .with("hostname", json!("x\n\u{fffd}\u{fffd}y")),
    );

    // Cut short before the kernel program finds UDP ports: nothing to capture.
    cases.push(Case::new(
        "truncated Ethernet: header only",
        plain[..IP].to_vec(),
        NotCaptured,
    ));
    cases.push(Case {
        dropped_by_kernel: true, // skb_vlan_untag frees a tag it cannot read whole
        ..Case::new(
            "truncated Ethernet: 802.1Q tag cut short",
            to_server(&[100], &discover(1))[..IP + 2].to_vec(),
            NotCaptured,
        )
    });
    cases.push(Case::new(
        "truncated IPv4 header (10 of 20 bytes)",
        plain[..IP + 10].to_vec(),
        NotCaptured,
    ));
    cases.push(Case::new(
        "IPv4 header without UDP",
        plain[..UDP].to_vec(),
        NotCaptured,
    ));
    cases.push(Case::new(
        "truncated UDP header (4 of 8 bytes)",
        plain[..UDP + 4].to_vec(),
        NotCaptured,
    ));
    for (name, version_ihl) in [("IHL 0", 0x40), ("IHL 3", 0x43), ("IHL 4", 0x44)] {
        cases.push(Case::new(
            name,
            patched(plain.clone(), |f| f[IP] = version_ihl),
            NotCaptured,
        ));
    }
    cases.push(Case::new(
        "IHL 15 beyond the end of a 42-byte packet",
        patched(to_server(&[], &[]), |f| f[IP] = 0x4f),
        NotCaptured,
    ));
    // IHL 6 puts the "UDP header" 4 bytes late: on the length and checksum (zeroed, which
    // UDP over IPv4 allows), so the ports read as (308, 0).
    cases.push(Case::new(
        "IHL 6 over a 20-byte header",
        patched(plain.clone(), |f| {
            f[IP] = 0x46;
            set_u16(f, UDP + 6, 0);
        }),
        NotCaptured,
    ));
    cases.push(Case::new(
        "first fragment (more-fragments set)",
        patched(plain.clone(), |f| f[IP + 6] |= 0x20),
        NotCaptured,
    ));
    cases.push(Case::new(
        "later fragment (offset 8)",
        patched(plain.clone(), |f| f[IP + 7] = 1),
        NotCaptured,
    ));
    // A third tag: DHCP behind more than two is not matched, whichever hook sees it.
    cases.push(Case::new(
        "three VLAN tags",
        patched(to_server(&[200, 300], &discover(0x0bad_0004)), |f| {
            f.splice(IP + 2..IP + 2, [0x81, 0x00, 0x01, 0x90]);
        }),
        NotCaptured,
    ));
    cases.push(Case::new(
        "4096-byte frame to another port",
        udp4(&[], (5000, 5001), &vec![0x41; JUMBO - DHCP]),
        NotCaptured,
    ));

    // On DHCP ports and malformed: each one counted, with the layer it failed at.
    cases.push(Case::new(
        "zero-length UDP payload to port 67",
        to_server(&[], &[]),
        Malformed("dhcpv4"),
    ));
    cases.push(Case::new(
        "zero-length UDP payload to port 547",
        udp6((546, 547), &[]),
        Malformed("dhcpv6"),
    ));
    // IHL 15 makes the first 40 bytes of the UDP datagram IP options and puts the "UDP
    // header" inside the DHCP message's chaddr, where this one holds 68 -> 67, length 8.
    cases.push(Case::new(
        "IHL 15 pointing into the DHCP message",
        patched(plain.clone(), |f| {
            f[IP] = 0x4f;
            f[IP + 60..IP + 68].copy_from_slice(&[0, 68, 0, 67, 0, 8, 0, 0]);
        }),
        Malformed("dhcpv4"),
    ));
    let ip_total_length = |len: u16| patched(plain.clone(), |f| set_u16(f, IP + 2, len));
    cases.push(Case::new(
        "IP total length past the end of the frame",
        ip_total_length(1500),
        Malformed("l2-l4"),
    ));
    cases.push(Case::new(
        "IP total length 0",
        ip_total_length(0),
        Malformed("l2-l4"),
    ));
    cases.push(Case::new(
        "IP total length shorter than the UDP header",
        ip_total_length(24),
        Malformed("l2-l4"),
    ));
    cases.push(Case::new(
        "IP total length cutting the DHCP message",
        ip_total_length(20 + 8 + 100),
        Malformed("l2-l4"),
    ));
    let udp_length = |len: u16| patched(plain.clone(), |f| set_u16(f, UDP + 4, len));
    cases.push(Case::new(
        "UDP length past the IP payload",
        udp_length(0xffff),
        Malformed("l2-l4"),
    ));
    cases.push(Case::new("UDP length 0", udp_length(0), Malformed("udp")));
    cases.push(Case::new(
        "UDP length 4 (shorter than its header)",
        udp_length(4),
        Malformed("l2-l4"),
    ));
    cases.push(Case::new(
        "UDP length cutting the DHCP message",
        udp_length(8 + 100),
        Malformed("dhcpv4"),
    ));
    cases.push(Case::new(
        "option length past the end",
        to_server(&[], &with_options(&[53, 1, 1, 12, 200, b'a', b'b'])),
        Malformed("dhcpv4"),
    ));
    cases.push(Case::new(
        "255-byte hostname cut by the end of the message",
        to_server(&[], &with_options(&hostname_option(b'h')[..100])),
        Malformed("dhcpv4"),
    ));
    cases.push(Case::new(
        "missing magic cookie",
        to_server(
            &[],
            &patched(discover(0x0bad_0005), |p| p[236..240].fill(0)),
        ),
        Malformed("dhcpv4"),
    ));
    cases.push(
        Case::new(
            "missing magic cookie behind QinQ",
            to_server(
                &[200, 300],
                &patched(discover(0x0bad_0006), |p| p[236..240].fill(0)),
            ),
            Malformed("dhcpv4"),
        )
        .with("vlan", json!(200))
        .with("vlan_inner", json!(300)),
    );
    let mut garbage_overload = with_options(&[53, 1, 1, 52, 1, 3, 255]);
    garbage_overload[44..236].fill(0x41); // sname and file: options 0x41 of length 0x41
    cases.push(Case::new(
        "option overload with garbage in file and sname",
        to_server(&[], &garbage_overload),
        Malformed("dhcpv4"),
    ));
    cases.push(Case::new(
        "message type 0",
        to_server(&[], &with_options(&[53, 1, 0, 255])),
        Malformed("dhcpv4"),
    ));
    // What made dhcproto's DHCPv6 decoder (the agent's until the fuzzer found this) panic on
    // `0 - 4`: a vendor-class option (16) of length 0 with 4 more bytes behind it to read as
    // its enterprise number. Here the message then ends in half an option header.
    cases.push(Case::new(
        "DHCPv6 vendor class shorter than its enterprise number",
        udp6(
            (546, 547),
            &[1, 0, 0, 1, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        ),
        Malformed("dhcpv6"),
    ));
    // Longer than the kernel copies: the agent gets the first 2048 bytes, flagged truncated.
    let mut padded = discover(0x0bad_0007);
    padded.pop(); // END
    while padded.len() < JUMBO - DHCP - 300 {
        padded.extend_from_slice(&[224, 250]);
        padded.extend_from_slice(&[0x41; 250]);
    }
    padded.push(255);
    padded.resize(JUMBO - DHCP, 0);
    cases.push(
        Case::new(
            "4096-byte DHCP message (well-formed, longer than the capture)",
            to_server(&[], &padded),
            Malformed("l2-l4"),
        )
        .with("truncated", json!(true))
        .with("wire_len", json!(JUMBO)),
    );
    cases.push(
        Case::new(
            "4096-byte garbage to port 67",
            to_server(&[], &vec![0xa5; JUMBO - DHCP]),
            Malformed("l2-l4"),
        )
        .with("truncated", json!(true)),
    );
    cases
}

/// The well-formed DISCOVER sent after crafted frame `index`: once the agent shows it, it has
/// shown whatever it made of that frame.
fn sentinel(index: usize) -> Vec<u8> {
    to_server(&[], &discover(sentinel_xid(index)))
}

fn sentinel_xid(index: usize) -> u32 {
    SENTINEL_XID + index as u32
}

/// A packet socket on the receiving interface, opened in its namespace. Where the kernel serves
/// it depends on its protocol: an `ETH_P_ALL` socket is a tap, served after XDP but before TC
/// ingress; a socket bound to one ethertype is served after TC ingress, with the outer VLAN tag
/// already removed by the kernel. Reading both proves the frames passed both kinds of hook.
struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    fn open(ns: &Netns, iface: &str, protocol: u16) -> Sniffer {
        let fd = ns
            .run_inside(|| Sniffer::open_here(iface, protocol))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("packet socket on {iface}: {e}"));
        Sniffer { fd }
    }

    fn open_here(iface: &str, protocol: u16) -> std::io::Result<OwnedFd> {
        let last_error = || Err(std::io::Error::last_os_error());
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: plain libc calls on valid arguments; the fd is owned from the start.
        unsafe {
            let index = libc::if_nametoindex(name.as_ptr());
            if index == 0 {
                return last_error();
            }
            // Protocol 0 until bound: no frame of another interface slips in before bind().
            let raw = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            if raw < 0 {
                return last_error();
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let on: libc::c_int = 1;
            let buffer: libc::c_int = 16 << 20;
            for (level, option, value) in [
                (libc::SOL_PACKET, libc::PACKET_AUXDATA, &on),
                (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buffer),
            ] {
                let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                if libc::setsockopt(
                    raw,
                    level,
                    option,
                    (value as *const libc::c_int).cast(),
                    size,
                ) != 0
                {
                    return last_error();
                }
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = protocol.to_be();
            addr.sll_ifindex = index as i32;
            let size = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            if libc::bind(raw, (&raw const addr).cast(), size) != 0 {
                return last_error();
            }
            Ok(fd)
        }
    }

    /// Every frame received so far (not those the receiving side sent), as it was on the wire:
    /// an outer VLAN tag the kernel moved into metadata goes back in.
    fn drain(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut data = vec![0u8; 65536];
        // Room for one tpacket_auxdata control message (u64 for alignment).
        let mut control = [0u64; 8];
        loop {
            // SAFETY: recvmsg into buffers that outlive the call, sized as declared.
            let (len, msg_flags, tag, addr) = unsafe {
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                let mut iov = libc::iovec {
                    iov_base: data.as_mut_ptr().cast(),
                    iov_len: data.len(),
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = (&raw mut addr).cast();
                msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_iov = &raw mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&control);
                let len = libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT);
                if len < 0 {
                    let err = std::io::Error::last_os_error();
                    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "recvmsg: {err}");
                    break;
                }
                (len as usize, msg.msg_flags, vlan_tag(&msg), addr)
            };
            assert_eq!(
                msg_flags & libc::MSG_TRUNC,
                0,
                "frame larger than the buffer"
            );
            if addr.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut frame = data[..len].to_vec();
            if let Some(tag) = tag {
                frame.splice(12..12, tag);
            }
            frames.push(frame);
        }
        frames
    }
}

/// The VLAN tag (TPID and TCI) the kernel reports in the PACKET_AUXDATA control message.
///
/// # Safety
/// `msg` must be a msghdr just filled by recvmsg.
unsafe fn vlan_tag(msg: &libc::msghdr) -> Option<[u8; 4]> {
    // SAFETY: walking the control messages recvmsg wrote, per cmsg(3).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    0x8100
                };
                let [t0, t1] = tpid.to_be_bytes();
                let [c0, c1] = aux.tp_vlan_tci.to_be_bytes();
                return Some([t0, t1, c0, c1]);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        None
    }
}

/// The ethertype the kernel delivers `frame` under after TC ingress (what follows an outer
/// VLAN tag, which it has moved aside), and the bytes it delivers.
fn after_untag(frame: &[u8]) -> (u16, Vec<u8>) {
    let ethertype = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    if matches!(ethertype(12), 0x8100 | 0x88a8) {
        let mut inner = frame.to_vec();
        inner.drain(12..16);
        (ethertype(16), inner)
    } else {
        (ethertype(12), frame.to_vec())
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair, both ends up, with `mtu`.
struct Link {
    tx: Netns,
    rx: Netns,
}

impl Link {
    fn new(mtu: u32) -> Link {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = |end: &str| format!("malformed-{}-{seq}-{end}", std::process::id());
        let tx = Netns::create(&name("tx")).expect("sender namespace");
        let rx = Netns::create(&name("rx")).expect("receiver namespace");
        veth_pair(&tx, TX_IFACE, &rx, RX_IFACE).expect("veth pair");
        let mtu = mtu.to_string();
        for (ns, iface) in [(&tx, TX_IFACE), (&rx, RX_IFACE)] {
            ns.ip(&["link", "set", iface, "mtu", &mtu]).unwrap();
            // No IPv6 of their own (router solicitations, MLD): only the crafted frames cross.
            dhcp_lab::run(
                ns.command("sysctl")
                    .args(["-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")]),
            )
            .unwrap();
            ns.ip(&["link", "set", iface, "up"]).unwrap();
        }
        Link { tx, rx }
    }
}

/// Sends every case (each followed by its sentinel) from the sender namespace to an agent
/// started with `agent_args` on the receiving end, and checks all of the above.
/// `ingress` is how the agent must report its ingress hook, e.g. `xdp_ingress (driver mode)`.
fn hostile_frames(mtu: u32, agent_args: &[&str], ingress: &str) {
    let link = Link::new(mtu);
    // A frame longer than the MTU never leaves the sender: those cases need a bigger one.
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.frame.len() <= mtu as usize + 14)
        .collect();
    let mut sent = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        sent.push(case.frame.clone());
        sent.push(sentinel(index));
    }
    // What the receiving side must get: everything but what its kernel drops itself.
    let delivered: Vec<Vec<u8>> = sent
        .iter()
        .filter(|f| !cases.iter().any(|c| c.dropped_by_kernel && c.frame == **f))
        .cloned()
        .collect();
    let tap = Sniffer::open(&link.rx, RX_IFACE, libc::ETH_P_ALL as u16);
    let protocols: BTreeSet<u16> = delivered.iter().map(|f| after_untag(f).0).collect();
    let after_tc: Vec<Sniffer> = protocols
        .iter()
        .map(|&p| Sniffer::open(&link.rx, RX_IFACE, p))
        .collect();

    let mut args = vec!["watch", "--json", "--show-malformed", "--iface", RX_IFACE];
    args.extend_from_slice(agent_args);
    let agent = Agent::start(&link.rx, &args);
    assert!(
        agent
            .stderr_text()
            .contains(&format!("attached {RX_IFACE}: {ingress}")),
        "{}",
        agent.stderr_text()
    );
    let hook = ingress.split(' ').next().unwrap();

    // One sendto() after the other from one thread: each frame has gone through the receiving
    // hooks before the next is sent, so the agent's records come in the same order.
    frames::send_frames(&link.tx, TX_IFACE, &sent).expect("send");
    let last = cases.len() - 1;
    agent.wait_record("the last sentinel", |r| is_sentinel(r, last));

    // Attribute the agent's records to the frames: those before sentinel i are frame i's.
    let records = agent.records();
    let mut per_case: Vec<Vec<Value>> = vec![Vec::new(); cases.len()];
    let mut next = 0;
    for record in records {
        if next <= last && is_sentinel(&record, next) {
            next += 1;
        } else {
            assert!(next <= last, "record after the last sentinel: {record}");
            per_case[next].push(record);
        }
    }
    let mut failures = Vec::new();
    for (case, records) in cases.iter().zip(&per_case) {
        if let Err(why) = check(case, records, hook) {
            failures.push(format!("{}: {why}\n  records: {records:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // (a) The frames passed untouched: all of them, in order, at the tap; the same bytes (less
    // the outer tag) after TC ingress.
    let tapped = tap.drain();
    compare_in_order(&cases, &delivered, &tapped);
    let mut want: Vec<Vec<u8>> = delivered.iter().map(|f| after_untag(f).1).collect();
    let mut got: Vec<Vec<u8>> = after_tc.iter().flat_map(Sniffer::drain).collect();
    want.sort();
    got.sort();
    assert!(
        want == got,
        "after TC ingress: {} frames expected, {} received",
        want.len(),
        got.len()
    );

    // (b) Still running, stops cleanly on SIGTERM, never panicked; its totals agree.
    let captured = cases
        .iter()
        .filter(|c| c.expect != Expect::NotCaptured)
        .count()
        + cases.len();
    let malformed = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Malformed(_)))
        .count();
    let stderr = agent.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "stopped: {captured} events read, {captured} shown, {malformed} malformed"
        )),
        "{stderr}"
    );
}

fn is_sentinel(record: &Value, index: usize) -> bool {
    s(record, "message_type") == "DISCOVER"
        && s(record, "xid") == format!("0x{:08x}", sentinel_xid(index))
}

/// What the agent printed for one frame against what it must.
fn check(case: &Case, records: &[Value], hook: &str) -> Result<(), String> {
    let (record, protocol) = match (case.expect, records) {
        (Expect::NotCaptured, []) => return Ok(()),
        (Expect::NotCaptured, _) => return Err("captured, but has no DHCP ports".into()),
        (_, [record]) => match case.expect {
            Expect::Dhcp(protocol) => (record, protocol),
            _ => (record, "malformed"),
        },
        (_, _) => return Err(format!("{} records instead of one", records.len())),
    };
    if s(record, "protocol") != protocol {
        return Err(format!(
            "protocol {}, expected {protocol}",
            s(record, "protocol")
        ));
    }
    if let Expect::Malformed(layer) = case.expect {
        let reason = s(record, "malformed");
        if !reason.starts_with(&format!("{layer}: ")) {
            return Err(format!("reason {reason:?}, expected the {layer} layer"));
        }
    }
    if (s(record, "hook"), s(record, "interface")) != (hook, RX_IFACE) {
        return Err(format!(
            "seen by {} on {}",
            s(record, "hook"),
            s(record, "interface")
        ));
    }
    for (field, want) in &case.fields {
        if &record[*field] != want {
            return Err(format!("{field} is {}, expected {want}", record[*field]));
        }
    }
    Ok(())
}

/// `got` must be `want`, frame by frame; a mismatch names the case it belongs to.
fn compare_in_order(cases: &[Case], want: &[Vec<u8>], got: &[Vec<u8>]) {
    let name = |frame: &[u8]| {
        cases
            .iter()
            .find(|c| c.frame == frame)
            .map_or("a sentinel", |c| c.name)
    };
    for (index, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            w == g,
            "frame {index} ({}) arrived changed: {} bytes sent, {} received",
            name(w),
            w.len(),
            g.len()
        );
    }
    assert_eq!(
        want.len(),
        got.len(),
        "frames sent and received at the tap (first missing: {:?})",
        want.get(got.len()).map(|f| name(f))
    );
}

/// The default: TC ingress (TCX, or clsact on older kernels), with jumbo frames.
#[test]
fn hostile_frames_through_tc_ingress() {
    hostile_frames(9000, &[], "tc_ingress");
}

/// XDP in driver mode, which veth allows only up to a peer MTU of about 3.5 KB (without
/// multi-buffer support): the frames that fit a 1500-byte MTU.
#[test]
fn hostile_frames_through_xdp_driver_mode() {
    hostile_frames(1500, &["--xdp-mode", "auto"], "xdp_ingress (driver mode)");
}

/// The daemon on the same frames (TC ingress, jumbo link): its counters say exactly how many
/// were malformed and how many DHCP, and it stops cleanly.
#[test]
fn hostile_frames_in_the_daemons_metrics() {
    let link = Link::new(9000);
    link.rx.ip(&["link", "set", "lo", "up"]).unwrap(); // the metrics endpoint listens there
    let dir = std::env::temp_dir().join(format!(
        "dhcp-agent-malformed-{}-{}",
        std::process::id(),
        link.rx.name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // No server and no lease file: the daemon waits for one and counts what it captures.
    let (leases, state) = (dir.join("leases"), dir.join("state.json"));
    let agent = Agent::start(
        &link.rx,
        &[
            "run",
            "--iface",
            RX_IFACE,
            "--leases",
            leases.to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
        ],
    );
    let cases = cases();
    let count = |want: fn(Expect) -> bool| cases.iter().filter(|c| want(c.expect)).count() as f64;
    let malformed = count(|e| matches!(e, Expect::Malformed(_)));
    let dhcp = count(|e| matches!(e, Expect::Dhcp(_)));
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    frames::send_frames(&link.tx, TX_IFACE, &frames).expect("send");

    let interface = [("interface", RX_IFACE)];
    let mut scrape = String::new();
    let counted = |scrape: &str| {
        (
            sample(scrape, "dhcp_malformed_packets_total", &interface),
            total(scrape, "dhcp_packets_total", &interface),
        )
    };
    let settled = wait_for(Duration::from_secs(20), || {
        scrape = http_get(link.rx.name(), METRICS_URL, &[])
            .expect("scrape")
            .1;
        counted(&scrape) == (Some(malformed), dhcp)
    });
    assert!(
        settled.is_ok(),
        "want {malformed} malformed and {dhcp} DHCP, got {:?}\n{scrape}",
        counted(&scrape)
    );
    // Every event was in the ring buffer before the first scrape (the hooks ran inside the
    // sender's sendto calls): counts that still hold a moment later are final.
    std::thread::sleep(Duration::from_millis(500));
    scrape = http_get(link.rx.name(), METRICS_URL, &[])
        .expect("scrape")
        .1;
    assert_eq!(counted(&scrape), (Some(malformed), dhcp), "{scrape}");
    let stderr = agent.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sum of every sample of `name` with `labels` (over the labels not given).
fn total(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?.strip_prefix('{')?;
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `--xdp-mode auto` on a jumbo link: driver mode is refused there, generic XDP sees every
/// frame, the 4096-byte ones included.
#[test]
fn hostile_frames_through_generic_xdp_on_a_jumbo_link() {
    hostile_frames(9000, &["--xdp-mode", "auto"], "xdp_ingress (skb mode)");
}
