//! `dhcp-agent run` against a real Kea 2.2 DHCPv6 server (memfile, `lease_cmds`), with a real
//! client (`dhclient -6`) and dnsmasq's `dhcp_release6`: releases are settled by Kea's REPLY
//! (or its silence), counted once however often they were sent, and a dropped one is repaired
//! through Kea's control socket (`lease6-del`), verified with `lease6-get` and the memfile.
mod common;

use std::time::Duration;

use common::{s, start_run, wait_metric};
use dhcp_lab::kea6::Kea6Lab;
use dhcp_wire::hex_colon;
use serde_json::Value;

fn is_v6_release(r: &Value) -> bool {
    s(r, "event") == "release" && s(r, "protocol") == "dhcpv6"
}

#[test]
fn the_clients_own_release_is_honored_by_keas_reply() {
    let lab = Kea6Lab::start().expect("kea6 lab");
    let agent = start_run(&lab, &[]);
    agent.wait_stderr("server: kea");
    let lease = lab.lease().expect("lease");
    assert!(lab.kea_holds(lease.ip).unwrap());
    lab.client_release().expect("dhclient -6 -r");
    let record = agent.wait_record("v6 release", is_v6_release);
    assert_eq!(s(&record, "outcome"), "honored", "{record}");
    assert_eq!(s(&record, "ip"), lease.ip.to_string());
    assert_eq!(s(&record, "client_id"), hex_colon(&lease.duid));
    assert_eq!(s(&record, "settled_by"), "reply", "{record}");
    assert!(!lab.kea_holds(lease.ip).unwrap(), "lease6-get agrees");
    agent.stop();
}

/// `dhcp_release6` with another server's DUID: Kea drops it, answers none of its five sends
/// and keeps the lease. One release, dropped `server_id_mismatch` (Kea's DUID learned from its
/// own replies), repaired with `lease6-del`: no packet, so `dhcp_release6` still gets no
/// answer and sends all five.
#[test]
fn dhcp_release6_with_a_wrong_server_id_is_flagged_and_repaired_with_lease6_del() {
    let lab = Kea6Lab::start().expect("kea6 lab");
    let agent = start_run(&lab, &["--remediate"]);
    let lease = lab.lease().expect("lease");
    let wrong = [0, 3, 0, 1, 0x52, 0x54, 0, 0x99, 0x99, 0x99];
    let out = lab.dhcp_release6(&lease, &wrong).expect("dhcp_release6");
    assert!(!out.status.success(), "Kea answered a foreign server id");
    let record = agent.wait_record("dropped v6 release", |r| {
        is_v6_release(r) && s(r, "outcome") == "dropped"
    });
    assert_eq!(s(&record, "cause"), "server_id_mismatch", "{record}");
    assert_eq!(
        s(&record, "expected_server_id"),
        hex_colon(&lab.server_duid())
    );
    assert_eq!(s(&record, "received_server_id"), hex_colon(&wrong));
    let repair = agent.wait_record("v6 remediation", |r| {
        s(r, "event") == "remediation" && s(r, "protocol") == "dhcpv6"
    });
    assert_eq!(s(&repair, "result"), "remediated", "{repair}");
    assert!(
        !lab.kea_holds(lease.ip).unwrap(),
        "lease6-del: gone from Kea"
    );
    assert!(
        !lab.lease_file_has(lease.ip),
        "the memfile's last row deletes it"
    );
    wait_metric(
        &lab.router,
        "dhcp_releases_dropped_total",
        &[("cause", "server_id_mismatch"), ("protocol", "dhcpv6")],
        1.0,
    );
    let releases = agent.records().into_iter().filter(is_v6_release).count();
    assert_eq!(releases, 1, "five sends, one release: {:?}", agent.lines());
    agent.stop();
}

/// `dhcp_release6` with Kea's own DUID: Kea answers the first RELEASE Success and its
/// retransmission NoBinding (the lease is gone by then); `dhcp_release6` cannot parse Kea's
/// IA_NA and exits 254 (see `dhcp-lab/tests/kea6_lab.rs`). Honored, counted once, nothing
/// repaired.
#[test]
fn dhcp_release6_with_the_right_server_id_is_honored_once() {
    let lab = Kea6Lab::start().expect("kea6 lab");
    let agent = start_run(&lab, &["--remediate"]);
    let lease = lab.lease().expect("lease");
    let out = lab
        .dhcp_release6(&lease, &lab.server_duid())
        .expect("dhcp_release6");
    assert_eq!(out.status.code(), Some(254), "{out:?}");
    let record = agent.wait_record("v6 release", is_v6_release);
    assert_eq!(s(&record, "outcome"), "honored", "{record}");
    assert!(!lab.kea_holds(lease.ip).unwrap());
    wait_metric(
        &lab.router,
        "dhcp_releases_total",
        &[("outcome", "honored"), ("protocol", "dhcpv6")],
        1.0,
    );
    assert!(
        agent
            .records()
            .iter()
            .all(|r| s(r, "event") != "remediation"),
        "nothing to repair: {:?}",
        agent.lines()
    );
    let releases = agent.records().into_iter().filter(is_v6_release).count();
    assert_eq!(releases, 1, "a RELEASE and its copy: {:?}", agent.lines());
    agent.stop();
}

/// A RELEASE of a VM's address in another client's name (another DUID, Kea's own server id):
/// Kea answers NoBinding (`DHCP6_RELEASE_NA_FAIL_WRONG_DUID`) and keeps the lease. The agent
/// says so from Kea's answer, and repairs nothing: the binding named is not the lease's.
#[test]
fn a_release_in_another_clients_name_is_refused_by_kea_and_never_repaired() {
    let lab = Kea6Lab::start().expect("kea6 lab");
    let agent = start_run(&lab, &["--remediate"]);
    let lease = lab.lease().expect("lease");
    let other = dhcp_lab::v6::V6Lease {
        duid: vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x10, 0x66, 0x66],
        ..lease.clone()
    };
    let _ = lab
        .dhcp_release6(&other, &lab.server_duid())
        .expect("dhcp_release6");
    let record = agent.wait_record("v6 release", is_v6_release);
    assert_eq!(
        (
            s(&record, "outcome"),
            s(&record, "cause"),
            s(&record, "settled_by")
        ),
        ("dropped", "refused", "reply"),
        "{record}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        agent
            .records()
            .iter()
            .all(|r| s(r, "event") != "remediation"),
        "another client's binding is never repaired: {:?}",
        agent.lines()
    );
    assert!(lab.kea_holds(lease.ip).unwrap(), "Kea kept the lease");
    agent.stop();
}
