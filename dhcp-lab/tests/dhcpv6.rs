//! What real dnsmasq 2.90 does with DHCPv6 releases, proven on the wire: the client's own
//! RELEASE (`dhclient -6 -r`), dnsmasq's `dhcp_release6` with the right and a wrong server id,
//! a RELEASE without binding, `--iface lo`, and the (missing) ways to ask dnsmasq about a
//! binding without changing it. Each packet is captured on the router where the agent's hooks
//! sit (guest0 both ways, lo ingress). Facts and evidence: the `v6` module's documentation.
use std::{
    net::{Ipv6Addr, SocketAddrV6, UdpSocket},
    thread,
    time::Duration,
};

use dhcp_lab::{
    v6::{
        ADVERTISE, Dhcpv6Message, Direction, RELEASE, REPLY, ROUTER_IFACE, SOLICIT,
        STATUS_NO_BINDING, STATUS_SUCCESS, V6Lab, captured, dump,
    },
    wait_for,
};

const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// dhcp_release6's exit statuses (contrib/lease-tools/dhcp_release6.c): `return -1` after five
/// unanswered RELEASEs, the status code of a non-Success answer, `fail_fatal(.., 4)` when
/// sendto fails.
const EXIT_TIMED_OUT: i32 = 255;
const EXIT_SENDTO_FAILED: i32 = 4;

fn lab() -> V6Lab {
    V6Lab::start().expect("lab")
}

/// Lines of dnsmasq's log containing `needle`.
fn log_lines(lab: &V6Lab, needle: &str) -> usize {
    lab.dnsmasq_log()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn the_lease_is_listed_with_iaid_client_duid_and_the_servers_duid() {
    let lab = lab();
    let cap = lab.capture().expect("capture");
    let lease = lab.lease().expect("lease");
    assert_eq!(lease.duid, lab.client_duid(), "dhclient -D LL");
    // dhclient's IAID is the last four bytes of the MAC (52:54:00:10:00:01).
    assert_eq!(lease.iaid, 0x0010_0001);
    let (lo, hi) = dhcp_lab::v6::RANGE6;
    assert!(lo <= lease.ip && lease.ip <= hi, "{lease:?}");
    assert_eq!(lab.vm_address6().unwrap(), Some(lease.ip));
    // The server id in the lease file is the one dnsmasq sends in its ADVERTISE and REPLY.
    let server = lab.server_duid().expect("duid line");
    let packets = cap.stop();
    let advertise = captured(&packets, ROUTER_IFACE, Direction::Out, ADVERTISE);
    assert_eq!(
        captured(&packets, ROUTER_IFACE, Direction::In, SOLICIT).len(),
        1
    );
    assert_eq!(advertise.len(), 1, "{}", dump(&packets));
    assert_eq!(advertise[0].message.server_id.as_ref(), Some(&server));
    assert_eq!(advertise[0].src, lab.router_link_local().unwrap());
    let reply = captured(&packets, ROUTER_IFACE, Direction::Out, REPLY);
    assert_eq!(reply.len(), 1, "{}", dump(&packets));
    assert_eq!(reply[0].message.server_id.as_ref(), Some(&server));
    assert_eq!(reply[0].message.ia_na[0].1, [lease.ip]);
}

#[test]
fn the_clients_own_release_is_answered_success_and_leaves_the_file_at_once() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().unwrap();
    let cap = lab.capture().expect("capture");
    lab.client_release().expect("dhclient -6 -r");
    let packets = cap.stop();
    let vm = lab.vm_link_local().unwrap();

    let release = captured(&packets, ROUTER_IFACE, Direction::In, RELEASE);
    assert_eq!(release.len(), 1, "{}", dump(&packets));
    let release = release[0];
    assert_eq!((release.src, release.dst), (vm, ALL_SERVERS));
    assert_eq!((release.src_port, release.dst_port), (546, 547));
    assert_eq!(release.message.client_id.as_ref(), Some(&lease.duid));
    assert_eq!(release.message.server_id.as_ref(), Some(&server));
    assert_eq!(release.message.ia_na[0].0, lease.iaid);

    let reply = captured(&packets, ROUTER_IFACE, Direction::Out, REPLY);
    assert_eq!(reply.len(), 1, "{}", dump(&packets));
    let reply = reply[0];
    assert_eq!((reply.dst, reply.dst_port), (vm, 546));
    assert_eq!(reply.message.xid, release.message.xid);
    assert_eq!(reply.message.status, Some(STATUS_SUCCESS));
    assert!(reply.message.ia_na.is_empty(), "{:?}", reply.message);
    // dnsmasq knows the client's MAC (it is in the neighbour cache): it answers at once.
    assert!(
        reply.at - release.at < Duration::from_millis(300),
        "{}",
        dump(&packets)
    );
    assert!(captured(&packets, "lo", Direction::In, REPLY).is_empty());

    // The lease file is rewritten right after the REPLY (dhcp6.c: lease_update_file after
    // each packet): its modification time is within a few ms of the RELEASE.
    assert!(!lab.lease_file_has(lease.ip), "released");
    let written = std::fs::metadata(lab.lease_file())
        .unwrap()
        .modified()
        .unwrap();
    let delay = written.duration_since(release.wall).unwrap_or_default();
    assert!(
        delay < Duration::from_millis(300),
        "file written {delay:?} after the RELEASE"
    );
    assert_eq!(lab.vm_address6().unwrap(), None, "the script took it off");
    assert_eq!(log_lines(&lab, "DHCPRELEASE(guest0)"), 1);
}

#[test]
fn dhcp_release6_with_the_right_server_id_is_honored_and_sends_two_releases() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().unwrap();
    let cap = lab.capture().expect("capture");
    let out = lab.dhcp_release6(&lease, &server).expect("dhcp_release6");
    // The REPLY to its second RELEASE comes ~0.5 s after it exits.
    thread::sleep(Duration::from_millis(1500));
    let packets = cap.stop();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lab.lease_file_has(lease.ip), "released");

    let router = lab.router_link_local().unwrap();
    let releases = captured(&packets, ROUTER_IFACE, Direction::Out, RELEASE);
    assert_eq!(releases.len(), 2, "{}", dump(&packets));
    for r in &releases {
        assert_eq!((r.src, r.dst), (router, ALL_SERVERS), "{}", dump(&packets));
        assert_eq!((r.src_port, r.dst_port), (546, 547));
        assert_eq!(r.message.xid, 0, "dhcp_release6's xid is always 0");
        assert_eq!(r.message.client_id.as_ref(), Some(&lease.duid));
        assert_eq!(r.message.server_id.as_ref(), Some(&server));
        assert_eq!(r.message.ia_na, [(lease.iaid, vec![lease.ip], None)]);
    }
    let gap = releases[1].at - releases[0].at;
    assert!(
        (900..1300).contains(&gap.as_millis()),
        "sleep(1) between RELEASEs: {gap:?}"
    );
    // The kernel loops its multicast back to dnsmasq, but packet sockets (and TC) on guest0
    // never see that copy: each RELEASE is seen once, outgoing.
    assert!(captured(&packets, ROUTER_IFACE, Direction::In, RELEASE).is_empty());

    // Both RELEASEs are answered, to the router's own link-local port 546: over lo.
    let replies = captured(&packets, "lo", Direction::In, REPLY);
    assert_eq!(replies.len(), 2, "{}", dump(&packets));
    assert!(captured(&packets, ROUTER_IFACE, Direction::Out, REPLY).is_empty());
    for r in &replies {
        assert_eq!((r.src, r.dst), (router, router));
        assert_eq!((r.src_port, r.dst_port), (547, 546));
        assert_eq!(r.message.xid, 0);
        assert_eq!(r.message.server_id.as_ref(), Some(&server));
        assert_eq!(r.message.status, Some(STATUS_SUCCESS));
    }
    // The first frees the binding; the second finds none.
    assert!(replies[0].message.ia_na.is_empty(), "{:?}", replies[0]);
    assert_eq!(
        replies[1].message.ia_na,
        [(lease.iaid, vec![lease.ip], Some(STATUS_NO_BINDING))]
    );
    // dnsmasq answers ~0.5 s late: it looks for the sender's MAC with five neighbour
    // solicitations 100 ms apart (dhcp6.c get_client_mac), and finds none for the router's own
    // address. That is why dhcp_release6's recv(MSG_DONTWAIT) right after its first send misses
    // the answer and it sends again.
    let late = replies[0].at - releases[0].at;
    assert!(late >= Duration::from_millis(400), "{late:?}");
    assert!(
        late < releases[1].at - releases[0].at,
        "answered before the retry"
    );
    assert_eq!(log_lines(&lab, "0 cannot determine client MAC address"), 2);
    assert_eq!(log_lines(&lab, "DHCPRELEASE(guest0)"), 2);
}

#[test]
fn dhcp_release6_with_a_wrong_server_id_gets_no_reply_and_the_lease_stays() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().unwrap();
    let mut wrong = server.clone();
    *wrong.last_mut().unwrap() ^= 0xff;
    let ranges_before = log_lines(&lab, "0 available DHCP range");
    let log_before = lab.dnsmasq_log().lines().count();
    let cap = lab.capture().expect("capture");
    let out = lab.dhcp_release6(&lease, &wrong).expect("dhcp_release6");
    thread::sleep(Duration::from_millis(700));
    let packets = cap.stop();

    assert_eq!(out.status.code(), Some(EXIT_TIMED_OUT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Response timed out"));
    let releases = captured(&packets, ROUTER_IFACE, Direction::Out, RELEASE);
    assert_eq!(releases.len(), 5, "{}", dump(&packets));
    assert!(
        releases
            .iter()
            .all(|r| r.message.server_id.as_ref() == Some(&wrong))
    );
    let span = releases[4].at - releases[0].at;
    assert!((3900..4800).contains(&span.as_millis()), "{span:?}");
    // rfc3315.c: a RELEASE whose server id is not ours is dropped without an answer.
    assert!(
        packets.iter().all(|p| p.message.msg_type != REPLY),
        "{}",
        dump(&packets)
    );
    assert!(lab.lease_file_has(lease.ip), "dnsmasq kept the binding");
    // With log-dhcp, all dnsmasq says is the range line it logs before the server id check,
    // once per RELEASE, with xid 0; no DHCPRELEASE line.
    assert_eq!(log_lines(&lab, "0 available DHCP range") - ranges_before, 5);
    let new: Vec<String> = lab
        .dnsmasq_log()
        .lines()
        .skip(log_before)
        .map(str::to_owned)
        .collect();
    assert_eq!(new.len(), 5, "{new:#?}");
    assert!(
        new.iter().all(|l| l.contains("available DHCP range")),
        "{new:#?}"
    );
    // The binding still works: the client's own release frees it.
    lab.client_release().expect("client release");
    assert!(!lab.lease_file_has(lease.ip));
}

#[test]
fn a_release_without_binding_is_answered_no_binding() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().unwrap();
    let first = lab.dhcp_release6(&lease, &server).expect("dhcp_release6");
    assert_eq!(first.status.code(), Some(0));
    // Let the answer to the first run's second RELEASE arrive while no socket listens: xid 0 and
    // port 546 for all, so a run started earlier could take it for its own.
    thread::sleep(Duration::from_millis(1500));
    assert!(!lab.lease_file_has(lease.ip));

    let cap = lab.capture().expect("capture");
    let again = lab.dhcp_release6(&lease, &server).expect("dhcp_release6");
    thread::sleep(Duration::from_millis(1500));
    let packets = cap.stop();
    assert_eq!(
        again.status.code(),
        Some(i32::from(STATUS_NO_BINDING)),
        "dhcp_release6 exits with the IA's status"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("no binding found"));
    let replies = captured(&packets, "lo", Direction::In, REPLY);
    assert_eq!(replies.len(), 2, "{}", dump(&packets));
    for r in replies {
        // The message's own status stays Success ("release received"); the IA says NoBinding.
        assert_eq!(r.message.status, Some(STATUS_SUCCESS));
        assert_eq!(
            r.message.ia_na,
            [(lease.iaid, vec![lease.ip], Some(STATUS_NO_BINDING))]
        );
    }
}

#[test]
fn dhcp_release6_needs_the_guest_interface_and_fails_on_lo() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().unwrap();
    let cap = lab.capture().expect("capture");
    let out = lab
        .dhcp_release6_on("lo", &lease, &server)
        .expect("dhcp_release6");
    thread::sleep(Duration::from_millis(700));
    let packets = cap.stop();
    assert_eq!(out.status.code(), Some(EXIT_SENDTO_FAILED));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Network is unreachable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(packets.is_empty(), "{}", dump(&packets));
    assert!(lab.lease_file_has(lease.ip), "nothing was released");
}

/// A DHCPv6 message: type, xid, then options (code, length, value).
fn message(msg_type: u8, xid: u32, options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![msg_type];
    out.extend_from_slice(&xid.to_be_bytes()[1..]);
    for (code, value) in options {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Sends `payload` from the router to ff02::1:2 on guest0 (as dhcp_release6 does, from port
/// 546) and returns the answers that came back within 2 s.
fn ask_dnsmasq(lab: &V6Lab, payload: &[u8]) -> Vec<Dhcpv6Message> {
    lab.router
        .run_inside(|| {
            let name = std::ffi::CString::new(ROUTER_IFACE).unwrap();
            // SAFETY: if_nametoindex reads a NUL-terminated string (this thread's namespace).
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "no {ROUTER_IFACE}");
            let sock = UdpSocket::bind("[::]:546").expect("bind 546");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            sock.send_to(payload, SocketAddrV6::new(ALL_SERVERS, 547, 0, ifindex))
                .expect("send");
            let mut answers = Vec::new();
            let mut buf = [0u8; 1500];
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if let Ok(n) = sock.recv(&mut buf) {
                    answers.push(Dhcpv6Message::decode(&buf[..n]).expect("decode"));
                }
            }
            answers
        })
        .expect("inside the router")
}

#[test]
fn dnsmasq_has_no_leasequery_and_confirm_is_no_binding_probe() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let server = lab.server_duid().unwrap();
    let client = vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0x77];
    // Control: an INFORMATION-REQUEST (11) sent this way is answered.
    let ireq = message(11, 0x1111, &[(1, client.clone()), (8, vec![0, 0])]);
    let answers = ask_dnsmasq(&lab, &ireq);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!((answers[0].msg_type, answers[0].xid), (REPLY, 0x1111));

    // LEASEQUERY (14, RFC 5007) by address for the live binding, with dnsmasq's own server id
    // (so it passes the server id check): no answer at all (rfc3315.c's switch has no case for
    // it: `default: return 0`).
    let link = [0u8; 16];
    let mut iaaddr = lease.ip.octets().to_vec();
    iaaddr.extend_from_slice(&[0; 8]);
    let mut query = vec![1]; // QUERY_BY_ADDRESS
    query.extend_from_slice(&link);
    query.extend_from_slice(&5u16.to_be_bytes());
    query.extend_from_slice(&u16::try_from(iaaddr.len()).unwrap().to_be_bytes());
    query.extend_from_slice(&iaaddr);
    let leasequery = message(
        14,
        0x2222,
        &[(1, client.clone()), (2, server.clone()), (44, query)],
    );
    assert!(ask_dnsmasq(&lab, &leasequery).is_empty());

    // CONFIRM is answered from the ranges only: after dhcp_release6 dropped the binding, the
    // rebooting client's CONFIRM gets Success ("all addresses still on link") and the client
    // keeps an address dnsmasq no longer has.
    let out = lab.dhcp_release6(&lease, &server).expect("dhcp_release6");
    assert_eq!(out.status.code(), Some(0));
    thread::sleep(Duration::from_millis(1500));
    assert!(!lab.lease_file_has(lease.ip));
    let cap = lab.capture().expect("capture");
    lab.client_reboot().expect("reboot");
    let packets = cap.stop();
    let confirm = captured(&packets, ROUTER_IFACE, Direction::In, 4);
    assert_eq!(confirm.len(), 1, "{}", dump(&packets));
    let reply = captured(&packets, ROUTER_IFACE, Direction::Out, REPLY);
    assert_eq!(reply.len(), 1, "{}", dump(&packets));
    assert_eq!(reply[0].message.xid, confirm[0].message.xid);
    assert_eq!(reply[0].message.status, Some(STATUS_SUCCESS));
    assert!(log_lines(&lab, "all addresses still on link") >= 1);
    wait_for(Duration::from_secs(3), || {
        lab.vm_address6().ok().flatten() == Some(lease.ip)
    })
    .expect("the client uses the address again");
    assert!(
        !lab.lease_file_has(lease.ip),
        "but dnsmasq holds no binding"
    );
}

#[test]
fn the_same_dnsmasq_serves_dhcpv4_and_both_share_the_lease_file() {
    let lab = lab();
    let v4 = lab.vm.boot().expect("dhclient -4");
    assert!(
        (100..=200).contains(&v4.octets()[3]) && v4.octets()[..3] == [172, 29, 101],
        "{v4}"
    );
    let v6 = lab.lease().expect("dhclient -6");
    let text = std::fs::read_to_string(lab.lease_file()).unwrap();
    // v4 lines first, then the duid line, then the v6 bindings (lease.c lease_update_file).
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains(&v4.to_string()), "{text}");
    assert!(lines[1].starts_with("duid "), "{text}");
    assert!(lines[2].contains(&v6.ip.to_string()), "{text}");
    assert!(lab.lease_file_has(v6.ip));
}
