//! The dnsmasq lease parser on files real dnsmasq wrote, in the lab.
use std::{fs, time::Duration};

use dhcp_agent::filter::parse_mac;
use dhcp_engine::leases::{Expiry, LeaseFormat as _, LeaseTable, dnsmasq::Dnsmasq};
use dhcp_lab::{Lab, LabConfig, wait_for};

fn read(lab: &Lab) -> LeaseTable {
    let text = fs::read_to_string(lab.lease_file()).expect("lease file");
    Dnsmasq
        .parse(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn reads_dnsmasq_leases_and_sees_which_releases_it_honored() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let ip = lab.vm.boot().expect("lease");
    let mac = parse_mac(&lab.vm.mac).unwrap();
    let table = read(&lab);
    let lease = table
        .get_v4(ip)
        .unwrap_or_else(|| panic!("{ip} not in {table:?}"));
    assert_eq!(lease.mac(), Some(mac));
    assert_eq!(lease.hostname.as_deref(), Some("vm"));
    assert!(matches!(lease.expiry, Expiry::At(_)));

    // The real dhcp_release with the primary address in option 54: dnsmasq keeps the lease.
    lab.dhcp_release(ip, &lab.vm.mac).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        read(&lab).get_v4(ip).is_some(),
        "dnsmasq honored a RELEASE it should have ignored"
    );

    // The client's own release carries the VIP: dnsmasq drops the lease and rewrites the file.
    lab.vm.release().unwrap();
    wait_for(Duration::from_secs(5), || read(&lab).get_v4(ip).is_none())
        .expect("lease gone after dhclient -r");
}
