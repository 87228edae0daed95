//! A fact the agent's liveness check rests on, measured on the real dnsmasq: before it offers
//! an address of a dynamic range to a new client, dnsmasq pings it and waits for an echo
//! (`PING_WAIT`, 3 s, in `delay_dhcp` of its dnsmasq.c), deaf to every other DHCP packet
//! meanwhile; what queued is answered afterwards. A probe of the server is therefore answered
//! seconds late, not lost, whenever a VM boots. (Addresses of `dhcp-host` lines and static
//! ranges, CloudStack's, are offered without a ping.)
use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use dhcp_lab::{
    IGNORED_MAC, Lab, LabConfig, VIP_ADDR, VM_IFACE,
    frames::{self, Dhcpv4Spec, MessageType},
};

/// How long dnsmasq at 127.0.0.1:67 takes to answer a DHCPINFORM about its own address.
fn inform_round_trip(lab: &Lab, xid: u32) -> Option<Duration> {
    lab.router
        .run_inside(move || {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut inform = Dhcpv4Spec::new(MessageType::Inform, xid, [0; 6]);
            inform.ciaddr = VIP_ADDR;
            let start = Instant::now();
            socket
                .send_to(&inform.encode(), (Ipv4Addr::LOCALHOST, 67))
                .expect("send");
            let mut buf = [0u8; 1500];
            while let Ok(n) = socket.recv(&mut buf) {
                // A BOOTREPLY with our transaction id.
                if n > 8 && buf[0] == 2 && buf[4..8] == xid.to_be_bytes() {
                    return Some(start.elapsed());
                }
            }
            None
        })
        .expect("inside the router")
}

#[test]
fn dnsmasq_answers_a_probe_seconds_late_while_it_pings_an_address_for_a_new_client() {
    let lab = Lab::start(LabConfig::default()).unwrap();
    let idle = inform_round_trip(&lab, 0x0de0_0001).expect("dnsmasq answers an INFORM");
    assert!(idle < Duration::from_millis(500), "idle: {idle:?}");

    // A new client's DISCOVER: dnsmasq picks an address of its dynamic range and pings it.
    let mut client = IGNORED_MAC;
    client[5] = 0x42;
    let discover = Dhcpv4Spec::new(MessageType::Discover, 0x0de0_0002, client);
    let frame = frames::client_broadcast(&discover, client).unwrap();
    frames::send_frames_in(lab.vm.ns.name(), VM_IFACE, &[frame]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let busy = inform_round_trip(&lab, 0x0de0_0003)
        .unwrap_or_else(|| panic!("dnsmasq never answered: {}", lab.dnsmasq_log()));
    assert!(
        busy >= Duration::from_secs(2) && busy < Duration::from_secs(5),
        "while pinging: {busy:?}\n{}",
        lab.dnsmasq_log()
    );
    eprintln!("INFORM answered in {idle:?} idle, {busy:?} while dnsmasq pinged for a DISCOVER");
}
