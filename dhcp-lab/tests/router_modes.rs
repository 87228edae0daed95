//! The CloudStack and Neutron labs against the real dnsmasq, dhclient and `dhcp_release` (run as
//! root): what each project's way of removing a VM does to dnsmasq's leases.
use std::{fs, net::Ipv4Addr, process::Command};

use dhcp_lab::{
    cloudstack::{CloudStackConfig, CloudStackRouter},
    neutron::NeutronDhcp,
};

/// Namespaces left over from the lab with id `id` (all its names end with `-<id>`).
fn leftover_namespaces(id: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let suffix = format!("-{id}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.ends_with(&suffix))
        .map(str::to_owned)
        .collect()
}

const VM_A: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0a", Ipv4Addr::new(172, 29, 102, 10), "vm-a");
const VM_B: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0b", Ipv4Addr::new(172, 29, 102, 11), "vm-b");
const VM_C: (&str, Ipv4Addr, &str) = ("52:54:00:66:00:0c", Ipv4Addr::new(172, 29, 102, 12), "vm-c");

#[test]
fn cloudstack_redundant_expunge_leaks_and_failover_resurrects() {
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: true }).unwrap();
    let id = vr.id().to_owned();
    assert_eq!(vr.vip(), Some(Ipv4Addr::new(172, 29, 102, 1)));
    assert_eq!(vr.server_id(), vr.vip().unwrap());
    assert_ne!(vr.primary(), vr.server_id());
    let cloud_conf = fs::read_to_string(vr.cloud_conf()).unwrap();
    assert!(
        cloud_conf.contains("dhcp-range=set:interface-eth2-0,172.29.102.1,static")
            && cloud_conf.contains("listen-address=127.0.0.1,172.29.102.1"),
        "{cloud_conf}"
    );

    let a = vr.deploy_vm(VM_A.0, VM_A.1, VM_A.2).unwrap();
    let b = vr.deploy_vm(VM_B.0, VM_B.1, VM_B.2).unwrap();
    let hosts = fs::read_to_string(vr.hosts_file()).unwrap();
    assert_eq!(
        hosts,
        "52:54:00:66:00:0a,172.29.102.10,vm-a,infinite\n52:54:00:66:00:0b,172.29.102.11,vm-b,infinite\n"
    );
    // CsDhcp seeds the lease file and restarts dnsmasq: it holds both leases before any boot.
    assert!(
        vr.dnsmasq_holds(a.ip) && vr.dnsmasq_holds(b.ip),
        "{}",
        vr.dnsmasq_log()
    );

    assert_eq!(vr.boot(&a).unwrap(), a.ip);
    assert_eq!(vr.boot(&b).unwrap(), b.ip);
    let log = vr.dnsmasq_log();
    assert!(
        log.contains("server-identifier  172.29.102.1"),
        "dnsmasq answers as the VIP: {log}"
    );
    assert!(vr.lease_file_has(a.ip) && vr.lease_file_has(b.ip));

    // MASTER expunges A: dhcp_release goes out as the primary, dnsmasq (the VIP) ignores it.
    vr.expunge(&a).unwrap();
    assert!(vr.dnsmasq_running());
    assert!(
        !fs::read_to_string(vr.hosts_file())
            .unwrap()
            .contains(a.mac())
    );
    assert!(
        vr.dnsmasq_holds(a.ip),
        "the known leak: {}",
        vr.dnsmasq_log()
    );
    assert!(vr.lease_file_has(a.ip));
    assert!(
        !vr.dnsmasq_log().contains("DHCPRELEASE"),
        "no release was honored"
    );
    assert!(
        vr.dnsmasq_holds(b.ip) && vr.lease_file_has(b.ip),
        "B untouched"
    );

    // BACKUP expunges B: dnsmasq is stopped, dhcp_release reaches no server.
    vr.become_backup().unwrap();
    assert!(!vr.dnsmasq_running() && !vr.is_master());
    vr.expunge(&b).unwrap();
    assert!(!vr.dnsmasq_running(), "a BACKUP never starts dnsmasq");
    assert!(vr.lease_file_has(b.ip));

    // Failover: dnsmasq starts from the lease file, B's lease comes back (and A's is still there).
    vr.become_master().unwrap();
    assert!(vr.dnsmasq_running());
    assert!(vr.dnsmasq_holds(b.ip), "resurrected: {}", vr.dnsmasq_log());
    assert!(vr.dnsmasq_holds(a.ip));

    // A VM's own release goes to the server id it was given, the VIP: honored.
    let c = vr.deploy_vm(VM_C.0, VM_C.1, VM_C.2).unwrap();
    assert_eq!(vr.boot(&c).unwrap(), c.ip);
    vr.release_from_vm(&c).unwrap();
    assert!(!vr.dnsmasq_holds(c.ip), "{}", vr.dnsmasq_log());
    assert!(vr.dnsmasq_log().contains("DHCPRELEASE(eth2) 172.29.102.12"));

    drop((a, b, c, vr));
    assert_eq!(leftover_namespaces(&id), Vec::<String>::new());
}

#[test]
fn cloudstack_single_expunge_is_honored() {
    let mut vr = CloudStackRouter::start(CloudStackConfig { redundant: false }).unwrap();
    let id = vr.id().to_owned();
    assert_eq!(vr.vip(), None);
    assert_eq!(vr.server_id(), vr.primary());
    assert!(
        vr.become_backup().is_err(),
        "CsRedundant refuses on a single VR"
    );
    let a = vr.deploy_vm(VM_A.0, VM_A.1, VM_A.2).unwrap();
    assert_eq!(vr.boot(&a).unwrap(), a.ip);
    vr.expunge(&a).unwrap();
    assert!(vr.dnsmasq_running());
    assert!(!vr.dnsmasq_holds(a.ip), "{}", vr.dnsmasq_log());
    assert!(!vr.lease_file_has(a.ip));
    assert!(vr.dnsmasq_log().contains("DHCPRELEASE(eth2) 172.29.102.10"));
    drop((a, vr));
    assert_eq!(leftover_namespaces(&id), Vec::<String>::new());
}

#[test]
fn neutron_delete_port_is_honored_per_subnet() {
    let mut q = NeutronDhcp::start().unwrap();
    let id = q.id().to_owned();
    let [(s0, p0), (s1, p1)] = q.subnets();
    assert_eq!((s0, p0), (Ipv4Addr::new(10, 77, 0, 2), 24));
    assert_eq!((s1, p1), (Ipv4Addr::new(10, 77, 1, 2), 24));
    let cmdline = q.cmdline();
    for arg in [
        "--bind-dynamic",
        "--domain=openstacklocal",
        "--dhcp-lease-max=512",
        "--port=0",
    ] {
        assert!(cmdline.iter().any(|a| a == arg), "{arg} in {cmdline:?}");
    }
    assert!(q.tap().starts_with("tap") && q.tap().len() == 14);

    let vm0 = q
        .create_port(0, "fa:16:3e:00:00:05", Ipv4Addr::new(10, 77, 0, 5))
        .unwrap();
    let vm1 = q
        .create_port(1, "fa:16:3e:00:01:05", Ipv4Addr::new(10, 77, 1, 5))
        .unwrap();
    assert_eq!(
        fs::read_to_string(q.hosts_file()).unwrap(),
        "fa:16:3e:00:00:05,host-10-77-0-5.openstacklocal,10.77.0.5\n\
         fa:16:3e:00:01:05,host-10-77-1-5.openstacklocal,10.77.1.5\n"
    );
    assert_eq!(q.boot(&vm0).unwrap(), vm0.ip);
    assert_eq!(q.boot(&vm1).unwrap(), vm1.ip);
    assert!(
        q.dnsmasq_holds(vm0.ip) && q.dnsmasq_holds(vm1.ip),
        "{}",
        q.dnsmasq_log()
    );
    assert!(q.lease_file_has(vm0.ip) && q.lease_file_has(vm1.ip));

    // The port in the second subnet: dhcp_release's server id is 10.77.1.2, dnsmasq's for it.
    q.delete_port(&vm1).unwrap();
    assert!(!q.dnsmasq_holds(vm1.ip), "honored: {}", q.dnsmasq_log());
    assert!(!q.lease_file_has(vm1.ip));
    assert!(
        q.dnsmasq_holds(vm0.ip) && q.lease_file_has(vm0.ip),
        "the other port untouched"
    );
    let log = q.dnsmasq_log();
    let releases: Vec<&str> = log.lines().filter(|l| l.contains("DHCPRELEASE")).collect();
    assert_eq!(
        releases.len(),
        1,
        "one release, dhcp_release's (the VM sent none): {log}"
    );
    assert!(releases[0].contains(&format!(
        "DHCPRELEASE({}) 10.77.1.5 fa:16:3e:00:01:05",
        q.tap()
    )));
    assert!(
        !fs::read_to_string(q.hosts_file())
            .unwrap()
            .contains(vm1.mac())
    );

    drop((vm0, vm1, q));
    assert_eq!(leftover_namespaces(&id), Vec::<String>::new());
}
