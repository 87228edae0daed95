//! The Kea lab against the real Kea 2.2: it serves, its control socket answers, and the
//! DHCPRELEASEs it drops are dropped for the reasons its source and log give
//! (src/bin/dhcp4/dhcp4_srv.cc, `Dhcpv4Srv::accept` / `acceptServerId` / `processRelease`).
use std::{net::Ipv4Addr, time::Duration};

use dhcp_lab::{
    frames::{Dhcpv4Spec, MessageType},
    kea::{KEA_SERVER_ADDR, KeaLab, KeaLabConfig, OTHER_SERVER_ADDR},
};

const WAIT: Duration = Duration::from_secs(5);

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0; 6];
    for (b, part) in out.iter_mut().zip(mac.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

fn release(xid: u32, ip: Ipv4Addr, chaddr: [u8; 6], server_id: Option<Ipv4Addr>) -> Vec<u8> {
    Dhcpv4Spec {
        ciaddr: ip,
        server_id,
        ..Dhcpv4Spec::new(MessageType::Release, xid, chaddr)
    }
    .encode()
}

/// How Kea's log names a transaction: `tid=0xa1` (then `:` or `,`).
fn xid_label(xid: u32) -> String {
    format!("tid=0x{xid:x}")
}

/// Whether Kea's log mentions the transaction `xid` at all: `tid=0xd4` followed by `:` or
/// `,`, so that a dhclient transaction `0xd486e525` does not count.
fn mentions_xid(log: &str, xid: u32) -> bool {
    let label = xid_label(xid);
    [':', ',']
        .iter()
        .any(|end| log.contains(&format!("{label}{end}")))
}

#[test]
fn a_transaction_is_named_whole() {
    assert!(!mentions_xid(
        "cid=[no info], tid=0xd486e525: DHCPDISCOVER",
        0xd4
    ));
    assert!(mentions_xid("tid=0xd4, from interface lo: ...", 0xd4));
    assert!(mentions_xid("tid=0xd4: DHCPRELEASE received", 0xd4));
}

#[test]
fn kea_serves_and_its_control_socket_answers() {
    let lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    let ip = lab.vm.boot().expect("lease");
    assert!(lab.kea_holds(ip).unwrap(), "{}", lab.log());
    assert!(lab.lease_file_has(ip));
    let answer = lab
        .command(&format!(
            r#"{{"command":"lease4-get","arguments":{{"ip-address":"{ip}"}}}}"#
        ))
        .unwrap();
    println!("lease4-get: {answer}");
    let none = lab
        .command(r#"{"command":"lease4-get","arguments":{"ip-address":"172.29.101.99"}}"#)
        .unwrap();
    println!("lease4-get none: {none}");
    let del = lab
        .command(&format!(
            r#"{{"command":"lease4-del","arguments":{{"ip-address":"{ip}"}}}}"#
        ))
        .unwrap();
    println!("lease4-del: {del}");
    let del_again = lab
        .command(&format!(
            r#"{{"command":"lease4-del","arguments":{{"ip-address":"{ip}"}}}}"#
        ))
        .unwrap();
    println!("lease4-del again: {del_again}");
    let bad = lab
        .command(r#"{"command":"lease4-get","arguments":{"ip-address":"nonsense"}}"#)
        .unwrap();
    println!("lease4-get bad: {bad}");
    let v6 = lab
        .command(
            r#"{"command":"lease6-get","arguments":{"ip-address":"2001:db8::1","type":"IA_NA"}}"#,
        )
        .unwrap();
    println!("lease6-get on dhcp4: {v6}");
    let unknown = lab.command(r#"{"command":"no-such-command"}"#).unwrap();
    println!("unknown: {unknown}");
    assert!(!lab.kea_holds(ip).unwrap());
    assert!(!lab.lease_file_has(ip), "{:?}", lab.last_lease_row(ip));
    println!("row after del: {:?}", lab.last_lease_row(ip));
}

#[test]
fn without_lease_cmds_kea_does_not_support_lease_commands() {
    let lab = KeaLab::start(KeaLabConfig {
        lease_cmds: false,
        ..KeaLabConfig::default()
    })
    .expect("kea lab");
    let answer = lab
        .command(r#"{"command":"lease4-get","arguments":{"ip-address":"172.29.101.100"}}"#)
        .unwrap();
    println!("without lease_cmds: {answer}");
    assert!(answer.contains("\"result\": 2"), "{answer}");
}

#[test]
fn kea_drops_releases_for_its_own_reasons() {
    let lab = KeaLab::start(KeaLabConfig::default()).expect("kea lab");
    let ip = lab.vm.boot().expect("lease");
    let mac = mac_bytes(&lab.vm.mac);

    // (a) option 54 is not one of Kea's addresses: dropped before any lease lookup.
    lab.send_from_vm(ip, &release(0xa1, ip, mac, Some(OTHER_SERVER_ADDR)))
        .unwrap();
    let line = lab
        .wait_log(&["DHCP4_PACKET_DROP_0003", &xid_label(0xa1)], WAIT)
        .unwrap();
    println!("(a) {line}");
    assert!(lab.kea_holds(ip).unwrap());

    // (b) another client's chaddr: DHCP4_RELEASE_FAIL_WRONG_CLIENT.
    lab.send_from_vm(
        ip,
        &release(0xb2, ip, [2, 0, 0, 0, 0, 9], Some(KEA_SERVER_ADDR)),
    )
    .unwrap();
    let line = lab
        .wait_log(&["DHCP4_RELEASE_FAIL_WRONG_CLIENT", &xid_label(0xb2)], WAIT)
        .unwrap();
    println!("(b) {line}");
    assert!(lab.kea_holds(ip).unwrap());

    // (c) no lease for the address.
    let free = Ipv4Addr::new(172, 29, 101, 199);
    lab.send_from_vm(ip, &release(0xc3, free, mac, Some(KEA_SERVER_ADDR)))
        .unwrap();
    let line = lab
        .wait_log(&["DHCP4_RELEASE_FAIL_NO_LEASE", &xid_label(0xc3)], WAIT)
        .unwrap();
    println!("(c) {line}");

    // (d) over `lo` (to 127.0.0.1, and to Kea's own address as `dhcp_release` sends it):
    // Kea listens on the guest interface only, and never sees it.
    lab.send_on_router(
        Ipv4Addr::LOCALHOST,
        &release(0xd4, ip, mac, Some(KEA_SERVER_ADDR)),
    )
    .unwrap();
    lab.send_on_router(
        KEA_SERVER_ADDR,
        &release(0xd5, ip, mac, Some(KEA_SERVER_ADDR)),
    )
    .unwrap();
    lab.dhcp_release(ip, &lab.vm.mac).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let log = lab.log();
    assert!(!mentions_xid(&log, 0xd4), "{log}");
    assert!(!mentions_xid(&log, 0xd5), "{log}");
    assert!(
        lab.kea_holds(ip).unwrap(),
        "dhcp_release over lo reached Kea:\n{log}"
    );

    // (e) no option 54 at all: Kea accepts it (server id is optional in its sanity check).
    lab.send_from_vm(ip, &release(0xe5, ip, mac, None)).unwrap();
    let line = lab
        .wait_log(&["DHCP4_RELEASE ", &xid_label(0xe5)], WAIT)
        .unwrap();
    println!("(e) {line}");
    assert!(!lab.kea_holds(ip).unwrap());
    println!("row: {:?}", lab.last_lease_row(ip));
}
