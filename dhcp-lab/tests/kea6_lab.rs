//! What the real Kea 2.2 DHCPv6 server does with a lease and its releases, proven on the wire
//! and in Kea's memfile, log and control socket: `dhclient -6` leasing, its own release,
//! dnsmasq's `dhcp_release6` with the right server id, a wrong one and another client's DUID,
//! and `lease6-del`. Each packet is captured on the router where the agent's hooks sit (guest0
//! both ways, lo ingress). Facts and Kea's log message ids: the `kea6` module's documentation.
use std::{thread, time::Duration};

use dhcp_lab::{
    kea6::{KEA6_POOL, KEA6_SUBNET_ID, Kea6Lab, LEASE_TYPE_NA, SERVER_DUID},
    v6::{
        ADVERTISE, AgentLab, Direction, RELEASE, REPLY, ROUTER_IFACE, SOLICIT, STATUS_NO_BINDING,
        STATUS_SUCCESS, V6Lease, captured, dump, hex, parse_hex,
    },
};

const ALL_SERVERS: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// dhcp_release6's exit statuses (dnsmasq's contrib/lease-tools/dhcp_release6.c): `return -1`
/// after five unanswered RELEASEs; `-2` from `parse_iana_suboption` when it cannot read the
/// IA_NA of a REPLY. It skips 24 bytes into the IA_NA's data, assuming an IAADDR comes first,
/// and Kea's IA_NA in a RELEASE's REPLY holds only a status code, so it lands in that status's
/// text, reads a length past the end and returns -2: every Kea REPLY, Success or not.
const EXIT_TIMED_OUT: i32 = 255;
const EXIT_UNPARSABLE_IA: i32 = 254;
const WAIT: Duration = Duration::from_secs(5);

fn lab() -> Kea6Lab {
    Kea6Lab::start().expect("kea6 lab")
}

/// Lines of Kea's log containing every one of `parts`.
fn log_lines(lab: &Kea6Lab, parts: &[&str]) -> usize {
    lab.log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

fn json(answer: &str) -> serde_json::Value {
    serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn lease6_get(lab: &Kea6Lab, lease: &V6Lease) -> serde_json::Value {
    json(
        &lab.command(&format!(
            r#"{{"command":"lease6-get","arguments":{{"ip-address":"{}"}}}}"#,
            lease.ip
        ))
        .unwrap(),
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lease is live in Kea's memory and its file.
fn assert_held(lab: &Kea6Lab, lease: &V6Lease) {
    assert!(lab.kea_holds(lease.ip).unwrap(), "{}", lab.log());
    assert!(lab.lease_file_has(lease.ip), "{:?}", lab.lease_rows());
}

/// The lease is gone: `lease6-get` result 3, and the memfile's last row for it has
/// valid_lifetime 0 (the row Kea appends when it deletes a lease).
fn assert_gone(lab: &Kea6Lab, lease: &V6Lease) {
    let got = lease6_get(lab, lease);
    assert_eq!(got["result"], 3, "{got}");
    assert_eq!(got["text"], "Lease not found.", "{got}");
    assert!(!lab.kea_holds(lease.ip).unwrap());
    let last = lab.last_lease_row(lease.ip).expect("a row");
    assert_eq!(last.valid_lifetime, 0, "{last:?}");
    assert_eq!(
        (last.duid.clone(), last.iaid),
        (lease.duid.clone(), lease.iaid)
    );
    assert!(!lab.lease_file_has(lease.ip));
}

/// `DHCP6_LEASE_ALLOC` on the REQUEST; the memfile and `lease6-get` agree on the binding; the
/// server id of Kea's ADVERTISE and REPLY, and the one dhclient stored, is the configured DUID.
#[test]
fn dhclient_leases_and_kea_memfile_lease6_get_and_the_server_id_agree() {
    let serverid_file = std::path::Path::new("/var/lib/kea/kea-dhcp6-serverid");
    let host_serverid_before = serverid_file.exists();
    let lab = lab();
    let cap = lab.capture().expect("capture");
    let lease = lab.lease().expect("lease");
    let packets = cap.stop();
    println!("lease: {lease:?}");

    assert_eq!(lease.duid, lab.client_duid(), "dhclient -D LL");
    // dhclient's IAID is the last four bytes of the MAC (52:54:00:10:00:01).
    assert_eq!(lease.iaid, 0x0010_0001);
    assert!(
        KEA6_POOL.0 <= lease.ip && lease.ip <= KEA6_POOL.1,
        "{lease:?}"
    );
    assert_eq!((lease.hostname.as_deref(), lease.temporary), (None, false));
    assert_eq!(lab.vm_address6().unwrap(), Some(lease.ip));
    assert_held(&lab, &lease);

    let row = lab.last_lease_row(lease.ip).unwrap();
    assert_eq!(
        (row.valid_lifetime, row.subnet_id, row.lease_type),
        (3600, KEA6_SUBNET_ID, LEASE_TYPE_NA)
    );
    let got = lease6_get(&lab, &lease);
    println!("lease6-get: {got}");
    assert_eq!(got["result"], 0, "{got}");
    assert_eq!(got["text"], "IPv6 lease found.");
    let args = &got["arguments"];
    assert_eq!(args["ip-address"], lease.ip.to_string());
    assert_eq!(args["duid"], hex(&lease.duid));
    assert_eq!(args["iaid"], lease.iaid);
    assert_eq!(args["type"], "IA_NA");
    assert_eq!(args["subnet-id"], KEA6_SUBNET_ID);
    assert_eq!(args["valid-lft"], 3600);
    assert_eq!(
        args["cltt"].as_u64().unwrap() + 3600,
        lease.expires,
        "the memfile's expire is cltt + valid-lft"
    );

    // The server id: configured, on the wire, and in dhclient's lease file.
    assert_eq!(lab.server_duid(), SERVER_DUID);
    let advertise = captured(&packets, ROUTER_IFACE, Direction::Out, ADVERTISE);
    assert_eq!(
        captured(&packets, ROUTER_IFACE, Direction::In, SOLICIT).len(),
        1
    );
    assert_eq!(advertise.len(), 1, "{}", dump(&packets));
    assert_eq!(advertise[0].message.server_id, Some(lab.server_duid()));
    assert_eq!(advertise[0].src, lab.router_link_local().unwrap());
    let reply = captured(&packets, ROUTER_IFACE, Direction::Out, REPLY);
    assert_eq!(reply.len(), 1, "{}", dump(&packets));
    assert_eq!(reply[0].message.server_id, Some(lab.server_duid()));
    assert_eq!(reply[0].message.ia_na[0].1, [lease.ip]);
    assert_eq!(reply[0].dst, lab.vm_link_local().unwrap());
    let leases6 = std::fs::read_to_string(lab.dir.join("vm/dhclient6.leases")).unwrap();
    let stored = leases6
        .lines()
        .find_map(|l| l.trim().strip_prefix("option dhcp6.server-id "))
        .expect("option dhcp6.server-id in dhclient6.leases");
    assert_eq!(
        parse_hex(stored.trim_end_matches(';')).unwrap(),
        SERVER_DUID
    );

    assert_eq!(
        log_lines(&lab, &["DHCP6_LEASE_ALLOC", &lease.ip.to_string()]),
        1
    );
    // persist false: no server id file, neither in the lab nor on the host.
    assert!(!lab.dir.join("kea-dhcp6-serverid").exists());
    assert_eq!(serverid_file.exists(), host_serverid_before);
    assert_eq!(
        AgentLab::agent_run_options(&lab),
        [
            "--json",
            "--iface",
            "guest0",
            "--iface",
            "lo",
            "--grace",
            "2s",
            "--orphan-settle",
            "1s",
            "--leases",
            &lab.lease_file().to_string_lossy(),
            "--lease-format",
            "kea-v6",
            "--kea-conf",
            &lab.conf_path().to_string_lossy(),
        ]
    );
}

/// `dhclient -6 -r`: REPLY with status Success to the VM, `DHCP6_RELEASE_NA`, the lease gone
/// from memory and the file.
#[test]
fn the_clients_own_release_is_answered_success_and_deletes_the_lease() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let cap = lab.capture().expect("capture");
    lab.client_release().expect("dhclient -6 -r");
    thread::sleep(Duration::from_millis(200));
    let packets = cap.stop();
    let vm = lab.vm_link_local().unwrap();

    let release = captured(&packets, ROUTER_IFACE, Direction::In, RELEASE);
    assert_eq!(release.len(), 1, "{}", dump(&packets));
    let release = release[0];
    assert_eq!((release.src, release.dst), (vm, ALL_SERVERS));
    assert_eq!(release.message.server_id, Some(lab.server_duid()));
    assert_eq!(release.message.client_id.as_ref(), Some(&lease.duid));

    let reply = captured(&packets, ROUTER_IFACE, Direction::Out, REPLY);
    assert_eq!(reply.len(), 1, "{}", dump(&packets));
    let reply = reply[0];
    assert_eq!((reply.dst, reply.dst_port), (vm, 546));
    assert_eq!(reply.message.xid, release.message.xid);
    assert_eq!(reply.message.server_id, Some(lab.server_duid()));
    // Top level "Summary status for all processed IA_NAs", and the IA's own ("Lease released.
    // Thank you, please come again."), without the address.
    assert_eq!(reply.message.status, Some(STATUS_SUCCESS));
    assert_eq!(
        reply.message.ia_na,
        [(lease.iaid, vec![], Some(STATUS_SUCCESS))]
    );
    assert!(
        reply.at - release.at < Duration::from_millis(300),
        "{}",
        dump(&packets)
    );

    assert_gone(&lab, &lease);
    assert_eq!(lab.vm_address6().unwrap(), None, "the script took it off");
    assert_eq!(
        log_lines(&lab, &["DHCP6_RELEASE_NA ", &lease.ip.to_string()]),
        1
    );
}

/// `dhcp_release6` with Kea's server id: Kea answers the first RELEASE at once, Success, over
/// lo; dhcp_release6 mostly misses that answer (it reads with MSG_DONTWAIT right after
/// sending) and sends again a second later (answered NoBinding); whichever REPLY it reads, it
/// cannot parse its IA_NA: exit 254. The lease is released all the same.
#[test]
fn dhcp_release6_with_the_right_server_id_releases_but_exits_254() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let cap = lab.capture().expect("capture");
    let out = lab
        .dhcp_release6(&lease, &lab.server_duid())
        .expect("dhcp_release6");
    thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    println!("dhcp_release6: {:?} {:?}", out.status, stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(EXIT_UNPARSABLE_IA),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out), "", "nothing said");

    let router = lab.router_link_local().unwrap();
    // One RELEASE when Kea's REPLY is there before dhcp_release6's MSG_DONTWAIT read (a race
    // Kea sometimes wins), mostly two.
    let releases = captured(&packets, ROUTER_IFACE, Direction::Out, RELEASE);
    assert!((1..=2).contains(&releases.len()), "{}", dump(&packets));
    for r in &releases {
        assert_eq!((r.src, r.dst), (router, ALL_SERVERS));
        assert_eq!(r.message.xid, 0);
        assert_eq!(r.message.server_id, Some(lab.server_duid()));
    }
    // Kea answers to the router's own link-local port 546: over lo, never on guest0.
    let replies = captured(&packets, "lo", Direction::In, REPLY);
    assert_eq!(replies.len(), releases.len(), "{}", dump(&packets));
    assert!(captured(&packets, ROUTER_IFACE, Direction::Out, REPLY).is_empty());
    for r in &replies {
        assert_eq!((r.src, r.dst), (router, router));
        assert_eq!((r.src_port, r.dst_port), (547, 546));
        assert_eq!(r.message.xid, 0);
        assert_eq!(r.message.server_id, Some(lab.server_duid()));
    }
    // Unlike dnsmasq (~500 ms), Kea answers within milliseconds.
    assert!(
        replies[0].at - releases[0].at < Duration::from_millis(300),
        "{}",
        dump(&packets)
    );
    assert_eq!(replies[0].message.status, Some(STATUS_SUCCESS));
    assert_eq!(
        replies[0].message.ia_na,
        [(lease.iaid, vec![], Some(STATUS_SUCCESS))]
    );
    // A second finds no binding ("Sorry, no known leases for this duid/iaid, can't
    // release."); Kea's top-level status says NoBinding too, unlike dnsmasq's.
    for r in &replies[1..] {
        assert_eq!(r.message.status, Some(STATUS_NO_BINDING));
        assert_eq!(
            r.message.ia_na,
            [(lease.iaid, vec![], Some(STATUS_NO_BINDING))]
        );
    }

    assert_gone(&lab, &lease);
    assert_eq!(
        log_lines(&lab, &["DHCP6_RELEASE_NA ", &lease.ip.to_string()]),
        1
    );
    assert_eq!(
        log_lines(&lab, &["DHCP6_PACKET_RECEIVED", "RELEASE"]),
        releases.len()
    );
}

/// `dhcp_release6` with another server's DUID: no REPLY, `DHCP6_PACKET_DROP_SERVERID_MISMATCH`
/// per RELEASE, exit 255 after five; the lease stays.
#[test]
fn dhcp_release6_with_a_wrong_server_id_is_dropped_and_the_lease_stays() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let mut wrong = lab.server_duid();
    *wrong.last_mut().unwrap() ^= 0xff;
    let cap = lab.capture().expect("capture");
    let out = lab.dhcp_release6(&lease, &wrong).expect("dhcp_release6");
    thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    println!("dhcp_release6: {:?} {:?}", out.status, stderr(&out));

    assert_eq!(out.status.code(), Some(EXIT_TIMED_OUT));
    assert!(
        stderr(&out).contains("Response timed out"),
        "{}",
        stderr(&out)
    );
    let releases = captured(&packets, ROUTER_IFACE, Direction::Out, RELEASE);
    assert_eq!(releases.len(), 5, "{}", dump(&packets));
    assert!(
        releases
            .iter()
            .all(|r| r.message.server_id.as_ref() == Some(&wrong))
    );
    assert!(
        packets.iter().all(|p| p.message.msg_type != REPLY),
        "{}",
        dump(&packets)
    );
    let line = lab
        .wait_log(&["DHCP6_PACKET_DROP_SERVERID_MISMATCH"], WAIT)
        .unwrap();
    println!("{line}");
    // "duid=[...], tid=0x0: dropping packet with server identifier: <wrong>, server is using:
    // <ours>", from the kea-dhcp6.bad-packets logger at debug level 15.
    assert!(line.contains("kea-dhcp6.bad-packets"), "{line}");
    assert!(line.contains(&hex(&wrong)), "{line}");
    assert!(line.contains(&hex(&lab.server_duid())), "{line}");
    assert_eq!(log_lines(&lab, &["DHCP6_PACKET_DROP_SERVERID_MISMATCH"]), 5);
    assert_eq!(log_lines(&lab, &["DHCP6_PROCESS_IA_NA_RELEASE"]), 0);
    assert_held(&lab, &lease);
}

/// A RELEASE of the right address, with Kea's server id, but another client's DUID: REPLY
/// NoBinding (top level and IA), `DHCP6_RELEASE_NA_FAIL_WRONG_DUID`, the lease stays.
#[test]
fn a_release_with_another_clients_duid_is_answered_no_binding_and_the_lease_stays() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let other = V6Lease {
        duid: vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x10, 0, 0x99],
        ..lease.clone()
    };
    let cap = lab.capture().expect("capture");
    let out = lab
        .dhcp_release6(&other, &lab.server_duid())
        .expect("dhcp_release6");
    thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    println!("dhcp_release6: {:?} {:?}", out.status, stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(EXIT_UNPARSABLE_IA),
        "{}",
        stderr(&out)
    );

    // As with the right DUID: mostly the first answer is missed, so two RELEASEs and two
    // REPLYs; sometimes one of each.
    let releases = captured(&packets, ROUTER_IFACE, Direction::Out, RELEASE);
    assert!((1..=2).contains(&releases.len()), "{}", dump(&packets));
    let replies = captured(&packets, "lo", Direction::In, REPLY);
    assert_eq!(replies.len(), releases.len(), "{}", dump(&packets));
    for r in &replies {
        assert_eq!(r.message.client_id.as_ref(), Some(&other.duid));
        assert_eq!(r.message.status, Some(STATUS_NO_BINDING));
        assert_eq!(
            r.message.ia_na,
            [(lease.iaid, vec![], Some(STATUS_NO_BINDING))]
        );
    }
    let line = lab
        .wait_log(&["DHCP6_RELEASE_NA_FAIL_WRONG_DUID"], WAIT)
        .unwrap();
    println!("{line}");
    // INFO: "client tried to release address IP, but it belongs to another client using
    // duid=<the lease's>".
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&lease.ip.to_string()), "{line}");
    assert!(line.contains(&hex(&lease.duid)), "{line}");
    assert_eq!(
        log_lines(&lab, &["DHCP6_RELEASE_NA_FAIL_WRONG_DUID"]),
        releases.len()
    );
    assert_eq!(log_lines(&lab, &["DHCP6_RELEASE_NA "]), 0);
    assert_held(&lab, &lease);
}

/// `lease6-del` by address: result 0 "IPv6 lease deleted.", then not found, last row 0; a
/// second `lease6-del` answers result 3.
#[test]
fn lease6_del_deletes_from_memory_and_file() {
    let lab = lab();
    let lease = lab.lease().expect("lease");
    let del = |lab: &Kea6Lab| {
        json(
            &lab.command(&format!(
                r#"{{"command":"lease6-del","arguments":{{"ip-address":"{}"}}}}"#,
                lease.ip
            ))
            .unwrap(),
        )
    };
    let answer = del(&lab);
    println!("lease6-del: {answer}");
    assert_eq!(answer["result"], 0, "{answer}");
    assert_eq!(answer["text"], "IPv6 lease deleted.", "{answer}");
    assert_gone(&lab, &lease);
    let again = del(&lab);
    println!("lease6-del again: {again}");
    assert_eq!(again["result"], 3, "{again}");
    assert_eq!(again["text"], "IPv6 lease not found.", "{again}");
}
