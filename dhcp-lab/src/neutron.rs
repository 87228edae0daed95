//! An OpenStack Neutron DHCP namespace, built and driven as the DHCP agent does it (read in
//! openstack/neutron, `neutron/agent/linux/dhcp.py`, class `Dnsmasq` and `DeviceManager`):
//!
//! ```text
//!   switch namespace: br0 ── p0 ─── tapXXXXXXXX-XX (qdhcp- namespace): 10.77.0.2/24
//!                        │                                             10.77.1.2/24
//!                        ├─ p1 ─── eth0 (VM namespace, dhclient)
//!                        └─ p2 ─── eth0 (VM namespace, dhclient)
//! ```
//!
//! What the code says, and what this lab does the same way:
//!
//! - The DHCP port's device is `tap` + the port id, cut to 14 characters
//!   (`interface.LinuxInterfaceDriver.get_device_name`); `DeviceManager.setup` puts one address
//!   per fixed IP on it, `<ip>/<subnet prefix>`, in the port's order (`init_l3`). Both are
//!   primaries: they are in different subnets.
//! - `_build_cmdline_callback` builds the command line: `--no-hosts --no-resolv --pid-file
//!   --dhcp-hostsfile --addn-hosts --dhcp-optsfile --dhcp-leasefile --dhcp-match=set:ipxe,175
//!   --dhcp-userclass=set:ipxe6,iPXE --local-service --bind-dynamic`, one
//!   `--dhcp-range=set:subnet-<id>,<network>,static,<netmask>,<lease>s` per subnet,
//!   `--dhcp-option-force=option:mtu,<mtu>`, `--dhcp-lease-max=min(sum of subnet sizes,
//!   dnsmasq_lease_max)`, `--conf-file=/dev/null` (no `dnsmasq_config_file`),
//!   `--domain=openstacklocal`, and with `dnsmasq_base_log_dir` set, `--log-queries --log-dhcp
//!   --log-facility=<dir>/<network id>/dhcp_dns_log`. There is no `--interface`: dnsmasq serves
//!   every interface of the namespace. It runs as dnsmasq's default user (no `--user`).
//! - `_output_hosts_file`: `mac,host-10-77-0-5.openstacklocal,10.77.0.5` per fixed IP of every
//!   port but the DHCP port (`port_requires_dhcp_configuration`); `set:`/`id:` parts only with
//!   extra DHCP options, which this lab does not use. `_output_addn_hosts_file`:
//!   `ip<TAB>fqdn hostname`. `_generate_opts_per_subnet`: per subnet, the other subnet as an
//!   on-link classless route plus the default route, as options 121 and 249, and the router.
//!   Files are written with `file_utils.replace_file` (a new file renamed over the old one).
//! - `spawn_process` writes the initial lease file (`_output_init_lease_file`, `0 mac ip * *`
//!   per port) only when dnsmasq is first started; `reload_allocations`, run on every port
//!   create and delete, calls `_release_unused_leases` *first* (while the hosts file still lists
//!   the deleted port), then rewrites the hosts, addn_hosts and opts files and sends SIGHUP
//!   (`ProcessManager.enable(reload_cfg=True)`). `_release_unused_leases` runs `dhcp_release
//!   <tap> IP MAC` for each lease in the lease file or the old hosts file that no port owns
//!   any more, and retries: up to `DHCP_RELEASE_TRIES` (3) times, `DHCP_RELEASE_TRIES_SLEEP`
//!   (0.3 s) apart, re-reading the lease file to see whether dnsmasq dropped it.
//!
//! Verified on the real binaries (dnsmasq 2.90, captured with `tcpdump -i lo` in the
//! namespace): `dhcp_release tap 10.77.1.5 MAC` sends option 54 = 10.77.1.2, the tap's address
//! *in the lease's subnet*, not its first address (`contrib/lease-tools/dhcp_release.c`,
//! `find_interface`, matches the subnet), which is dnsmasq's server identifier for that subnet:
//! the release is honored (`DHCPRELEASE(tap...)` logged, lease gone from memory and file), unlike
//! a CloudStack redundant VR's, where the primary and the VIP share one subnet.
//!
//! Lab adaptations only: `--port=0` (no DNS) and `--keep-in-foreground` (dnsmasq stays our child,
//! so it is reaped), and the configuration directory and log directory in the lab's scratch
//! directory instead of `/var/lib/neutron/dhcp/<network id>` and `dnsmasq_base_log_dir`.
use std::{
    collections::{HashMap, HashSet},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, ensure};

use crate::{
    Dnsmasq, Netns, Switch, VmHandle, dnsmasq_holds_in, lease_file_lists, next_lab_id,
    require_tools, run,
};

/// `dns_domain`'s default.
pub const DOMAIN: &str = "openstacklocal";
/// `dhcp_lease_duration`'s default, seconds.
pub const LEASE_SECS: u32 = 86400;
/// The network's MTU (a flat or VLAN network; VXLAN would be 1450).
pub const MTU: u32 = 1500;
/// `dnsmasq_lease_max`'s default.
const LEASE_MAX: u32 = 1 << 24;
const DHCP_RELEASE_TRIES: u32 = 3;
const DHCP_RELEASE_TRIES_SLEEP: Duration = Duration::from_millis(300);

/// An IPv4 subnet of the network, DHCP enabled.
struct Subnet {
    id: String,
    network: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    /// The DHCP port's fixed IP in this subnet.
    dhcp_addr: Ipv4Addr,
}

impl Subnet {
    fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }
}

/// A VM port: one fixed IP.
struct Port {
    mac: String,
    ip: Ipv4Addr,
}

impl Port {
    /// `_get_dns_assignment` without a `dns_assignment`: `host-<ip with dashes>`.
    fn hostname(&self) -> String {
        format!("host-{}", self.ip.to_string().replace('.', "-"))
    }

    fn fqdn(&self) -> String {
        format!("{}.{DOMAIN}", self.hostname())
    }
}

/// A network's DHCP service on one agent: the `qdhcp-` namespace and its dnsmasq. Dropping it
/// stops dnsmasq and deletes its namespaces and files; VMs are dropped by their owners.
pub struct NeutronDhcp {
    pub ns: Netns,
    pub switch: Switch,
    /// Scratch directory; `conf/` is the network's configuration directory.
    pub dir: PathBuf,
    id: String,
    network_id: String,
    tap: String,
    subnets: [Subnet; 2],
    ports: Vec<Port>,
    cmdline: Vec<String>,
    dnsmasq: Option<Dnsmasq>,
    vms: u32,
}

impl NeutronDhcp {
    /// Sets up the DHCP port and starts dnsmasq, as `DhcpLocalProcess._enable` does for a
    /// network with two IPv4 subnets and no VM ports yet.
    pub fn start() -> anyhow::Result<NeutronDhcp> {
        require_tools(&[
            "ip",
            "dnsmasq",
            "dhclient",
            "dhcp_release",
            "dhcp_lease_time",
        ])?;
        let id = next_lab_id();
        let dir = std::env::temp_dir().join(format!("dhcp-lab-q-{id}"));
        // Neutron's ids are UUIDs; these are UUID-shaped (decimal digits are hex digits) and
        // unique per lab: `<pid>-<kind>-4000-8000-<sequence>`.
        let (pid, seq) = id.split_once('-').context("lab id")?;
        let uuid = |kind: u16| format!("{pid:0>8}-{kind:04x}-4000-8000-{seq:0>12}");
        let network_id = uuid(0);
        let tap: String = format!("tap{}", uuid(0xd)).chars().take(14).collect();
        let subnet = |n: u8| Subnet {
            id: uuid(u16::from(n) + 1),
            network: Ipv4Addr::new(10, 77, n, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 77, n, 1),
            dhcp_addr: Ipv4Addr::new(10, 77, n, 2),
        };
        let subnets = [subnet(0), subnet(1)];
        // Namespaces first: on any failure from here on, what exists is dropped and removed.
        let ns = Netns::create(&format!("qdhcp-dhcpobs-{id}"))?;
        let switch = Switch::create(&format!("dhcpobs-q-sw-{id}"))?;
        let conf = dir.join("conf");
        fs::create_dir_all(&conf).with_context(|| format!("creating {}", conf.display()))?;
        let mut dhcp = NeutronDhcp {
            ns,
            switch,
            dir,
            id,
            network_id,
            tap,
            subnets,
            ports: Vec::new(),
            cmdline: Vec::new(),
            dnsmasq: None,
            vms: 0,
        };
        dhcp.setup_device()?;
        dhcp.spawn_process()?;
        Ok(dhcp)
    }

    /// `DeviceManager.setup`: the tap plugged, one address per subnet.
    fn setup_device(&self) -> anyhow::Result<()> {
        self.ns.ip(&["link", "set", "lo", "up"])?;
        self.switch.plug(&self.ns, &self.tap)?;
        for subnet in &self.subnets {
            let cidr = format!("{}/{}", subnet.dhcp_addr, subnet.prefix);
            self.ns.ip(&["addr", "add", &cidr, "dev", &self.tap])?;
        }
        self.ns.ip(&["link", "set", &self.tap, "up"])?;
        // `interface_name` is kept in the configuration directory.
        replace_file(&self.conf_file("interface"), &self.tap)
    }

    /// `Dnsmasq.spawn_process`: the initial lease file, the configuration files, dnsmasq.
    fn spawn_process(&mut self) -> anyhow::Result<()> {
        let leases: String = self
            .ports
            .iter()
            .map(|p| format!("0 {} {} * *\n", p.mac, p.ip))
            .collect();
        replace_file(&self.lease_file(), &leases)?;
        self.output_config_files()?;
        let log_dir = self
            .log_file()
            .parent()
            .map(Path::to_owned)
            .context("log dir")?;
        fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        self.cmdline = self.build_cmdline();
        let dnsmasq = Dnsmasq::spawn(
            &self.ns,
            &self.cmdline[1..],
            &self.pid_file(),
            &self.dir.join("dnsmasq.stderr"),
        )
        .with_context(|| format!("dnsmasq: {}", self.dnsmasq_log()))?;
        self.dnsmasq = Some(dnsmasq);
        Ok(())
    }

    /// `_build_cmdline_callback` with the agent's defaults, then the lab's two additions.
    fn build_cmdline(&self) -> Vec<String> {
        let file = |kind: &str| self.conf_file(kind).display().to_string();
        let mut cmd: Vec<String> = vec![
            "dnsmasq".into(),
            "--no-hosts".into(),
            "--no-resolv".into(),
            format!("--pid-file={}", file("pid")),
            format!("--dhcp-hostsfile={}", file("host")),
            format!("--addn-hosts={}", file("addn_hosts")),
            format!("--dhcp-optsfile={}", file("opts")),
            format!("--dhcp-leasefile={}", file("leases")),
            "--dhcp-match=set:ipxe,175".into(),
            "--dhcp-userclass=set:ipxe6,iPXE".into(),
            "--local-service".into(),
            "--bind-dynamic".into(),
        ];
        let mut possible_leases: u32 = 0;
        for s in &self.subnets {
            cmd.push(format!(
                "--dhcp-range=set:subnet-{},{},static,{},{LEASE_SECS}s",
                s.id,
                s.network,
                s.netmask()
            ));
            possible_leases += 1 << (32 - s.prefix);
        }
        cmd.push(format!("--dhcp-option-force=option:mtu,{MTU}"));
        cmd.push(format!(
            "--dhcp-lease-max={}",
            possible_leases.min(LEASE_MAX)
        ));
        cmd.push("--conf-file=/dev/null".into());
        cmd.push(format!("--domain={DOMAIN}"));
        cmd.push("--log-queries".into());
        cmd.push("--log-dhcp".into());
        cmd.push(format!("--log-facility={}", self.log_file().display()));
        cmd.push("--port=0".into());
        cmd.push("--keep-in-foreground".into());
        cmd
    }

    /// `_output_config_files`: hosts, addn_hosts and opts files.
    fn output_config_files(&self) -> anyhow::Result<()> {
        let hosts: String = self
            .ports
            .iter()
            .map(|p| format!("{},{},{}\n", p.mac, p.fqdn(), p.ip))
            .collect();
        replace_file(&self.hosts_file(), &hosts)?;
        let addn: String = self
            .ports
            .iter()
            .map(|p| format!("{}\t{} {}\n", p.ip, p.fqdn(), p.hostname()))
            .collect();
        replace_file(&self.conf_file("addn_hosts"), &addn)?;
        replace_file(&self.conf_file("opts"), &self.opts().join("\n"))
    }

    /// `_generate_opts_per_subnet` for isolated subnets (no router port) on one segment, without
    /// DNS servers or isolated metadata: the other subnet on-link, the default route, the router.
    fn opts(&self) -> Vec<String> {
        let mut options = Vec::new();
        for s in &self.subnets {
            let tag = format!("tag:subnet-{}", s.id);
            let mut routes: Vec<String> = self
                .subnets
                .iter()
                .filter(|other| other.network != s.network)
                .map(|other| format!("{},0.0.0.0", other.cidr()))
                .collect();
            routes.push(format!("0.0.0.0/0,{}", s.gateway));
            let routes = routes.join(",");
            options.push(format!("{tag},option:classless-static-route,{routes}"));
            options.push(format!("{tag},249,{routes}"));
            options.push(format!("{tag},option:router,{}", s.gateway));
        }
        options
    }

    /// `Dnsmasq.reload_allocations`: stale leases released, files rewritten, SIGHUP.
    fn reload_allocations(&self) -> anyhow::Result<()> {
        self.release_unused_leases()?;
        self.output_config_files()?;
        let dnsmasq = self.dnsmasq.as_ref().context("dnsmasq is not running")?;
        dnsmasq.reload(&self.log_file(), &self.hosts_file())
    }

    /// `Dnsmasq._release_unused_leases` for IPv4 leases without client ids.
    fn release_unused_leases(&self) -> anyhow::Result<()> {
        let mut current = read_leases(&self.lease_file());
        if current.is_empty() {
            return Ok(());
        }
        let old_hosts = read_hosts(&self.hosts_file());
        let owned: HashSet<(Ipv4Addr, String)> =
            self.ports.iter().map(|p| (p.ip, p.mac.clone())).collect();
        let mut stale: HashSet<(Ipv4Addr, String)> = current
            .iter()
            .map(|(ip, mac)| (*ip, mac.clone()))
            .chain(old_hosts)
            .filter(|entry| !owned.contains(entry))
            .collect();
        // The last round only re-reads the lease file; a release is never checked otherwise.
        for round in 0..=DHCP_RELEASE_TRIES {
            stale.retain(|(ip, _)| current.contains_key(ip));
            if stale.is_empty() {
                break;
            }
            if round < DHCP_RELEASE_TRIES {
                for (ip, mac) in &stale {
                    self.dhcp_release(*ip, mac)?;
                }
                thread::sleep(DHCP_RELEASE_TRIES_SLEEP);
                current = read_leases(&self.lease_file());
            }
        }
        Ok(())
    }

    /// The real `dhcp_release <tap> IP MAC`, as `priv_dhcp.dhcp_release` runs it.
    pub fn dhcp_release(&self, ip: Ipv4Addr, mac: &str) -> anyhow::Result<()> {
        run(self
            .ns
            .command("dhcp_release")
            .args([&self.tap, &ip.to_string(), mac]))
        .map(drop)
    }

    /// Creates a port with fixed IP `ip` in subnet `subnet` (0 or 1) for a new VM: the agent's
    /// `reload_allocations` writes its host line and HUPs dnsmasq, then the VM's namespace is
    /// plugged into the network. Not booted yet: see [`NeutronDhcp::boot`].
    pub fn create_port(
        &mut self,
        subnet: usize,
        mac: &str,
        ip: Ipv4Addr,
    ) -> anyhow::Result<VmHandle> {
        let s = self
            .subnets
            .get(subnet)
            .context("there are two subnets, 0 and 1")?;
        ensure!(s.contains(ip), "{ip} is not in subnet {}", s.cidr());
        ensure!(
            !self.ports.iter().any(|p| p.mac == mac || p.ip == ip),
            "{mac} or {ip} already has a port"
        );
        let port = Port {
            mac: mac.to_owned(),
            ip,
        };
        let hostname = port.hostname();
        self.ports.push(port);
        self.reload_allocations()?;
        self.vms += 1;
        let name = format!("dhcpobs-q-vm{}-{}", self.vms, self.id);
        let dir = self.dir.join(format!("vm{}", self.vms));
        VmHandle::plug(&self.switch, &name, mac, dir, ip, &hostname)
    }

    /// Boots the VM's network: dhclient gets its lease. Returns the address.
    pub fn boot(&self, vm: &VmHandle) -> anyhow::Result<Ipv4Addr> {
        vm.vm.boot()
    }

    /// Deletes a VM's port in Neutron's order: the VM is destroyed first (dhclient killed
    /// without a RELEASE, NIC unplugged), then `reload_allocations`: `dhcp_release` for its
    /// lease (with the agent's retries, here honored at the first try), the hosts file
    /// rewritten without it, SIGHUP.
    pub fn delete_port(&mut self, vm: &VmHandle) -> anyhow::Result<()> {
        vm.power_off()?;
        let before = self.ports.len();
        self.ports.retain(|p| p.mac != vm.mac());
        ensure!(self.ports.len() < before, "{} has no port", vm.mac());
        self.reload_allocations()
    }

    /// dnsmasq's argv as started, program name first (an agent reads the configuration from it).
    pub fn cmdline(&self) -> Vec<String> {
        self.cmdline.clone()
    }

    pub fn tap(&self) -> &str {
        &self.tap
    }

    /// The DHCP port's address and prefix in each subnet, in the order they are on the tap.
    pub fn subnets(&self) -> [(Ipv4Addr, u8); 2] {
        self.subnets.each_ref().map(|s| (s.dhcp_addr, s.prefix))
    }

    /// The network's id: the configuration directory's name in a real agent.
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    /// This lab's id: every namespace it creates ends with `-<id>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn conf_file(&self, kind: &str) -> PathBuf {
        self.dir.join("conf").join(kind)
    }

    fn log_file(&self) -> PathBuf {
        self.dir
            .join("log")
            .join(&self.network_id)
            .join("dhcp_dns_log")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.conf_file("pid")
    }

    pub fn lease_file(&self) -> PathBuf {
        self.conf_file("leases")
    }

    pub fn hosts_file(&self) -> PathBuf {
        self.conf_file("host")
    }

    pub fn dnsmasq_holds(&self, ip: Ipv4Addr) -> bool {
        dnsmasq_holds_in(&self.ns, ip)
    }

    pub fn lease_file_has(&self, ip: Ipv4Addr) -> bool {
        lease_file_lists(&self.lease_file(), ip)
    }

    /// dnsmasq's log and stderr so far.
    pub fn dnsmasq_log(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("dnsmasq.stderr")).unwrap_or_default();
        format!("{log}{stderr}")
    }
}

impl Drop for NeutronDhcp {
    fn drop(&mut self) {
        drop(self.dnsmasq.take());
        // The namespaces are deleted by their own Drop.
        if std::env::var_os("DHCP_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `_read_leases_file_leases` for IPv4: address to MAC (the second field), for well-formed
/// five-field lines.
fn read_leases(path: &Path) -> HashMap<Ipv4Addr, String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with("duid"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mac, ip, _, _] = fields[..] else {
                return None;
            };
            Some((ip.parse().ok()?, mac.to_owned()))
        })
        .collect()
}

/// `_read_hosts_file_leases` for lines `mac,name,ip`: (ip, mac) pairs.
fn read_hosts(path: &Path) -> Vec<(Ipv4Addr, String)> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(',');
            let mac = fields.next()?;
            let ips = fields.skip(1).filter_map(|f| f.parse().ok());
            Some(ips.map(|ip| (ip, mac.to_owned())).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// `file_utils.replace_file`: writes a temporary file beside `path` and renames it over `path`,
/// so a reader sees the old or the new file, never a partial one (and a watcher sees a rename).
fn replace_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming over {}", path.display()))
}
