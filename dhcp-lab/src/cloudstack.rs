//! An Apache CloudStack VPC virtual router, configured and driven as CloudStack's own scripts do
//! it (read in apache/cloudstack, `systemvm/debian/...`):
//!
//! ```text
//!   switch namespace: br0 ── p0 ─── eth2 (router namespace): 172.29.102.245/24 primary
//!                        │                                   172.29.102.1/24   VIP (MASTER only)
//!                        ├─ p1 ─── eth0 (VM namespace, dhclient)
//!                        └─ p2 ─── eth0 (VM namespace, dhclient)
//! ```
//!
//! A single (non-redundant) VR has the tier's gateway, 172.29.102.1, as eth2's only address.
//!
//! What the code says, and what this lab does the same way:
//!
//! - dnsmasq's main configuration is `etc/vpcdnsmasq.conf`, copied to `/etc/dnsmasq.conf` by
//!   `setup/vpcrouter.sh` (`setup_vpcrouter`), which also sets `domain=` and `local=`, deletes
//!   `leasefile-ro` when `dhcp_release` is installed, and starts `/etc/dnsmasq.d/cloud.conf` with
//!   `dhcp-hostsfile=/etc/dhcphosts.txt`. Its DHCP-relevant lines: `except-interface=lo`,
//!   `dhcp-lease-max=2100`, `conf-dir=/etc/dnsmasq.d`, `dhcp-optsfile=/etc/dhcpopts.txt`. There is
//!   no `bind-interfaces` anywhere (it is commented out in the template and CsDhcp never adds it).
//! - `cs/CsDhcp.py` `configure_server` adds to cloud.conf `dhcp-range=set:interface-eth2-0,
//!   <gateway>,static` on a redundant VR (the gateway is the VIP) or `<eth2's address>` on a
//!   single one, options 15, 6, 3, 1 tagged `interface-eth2-0`, and
//!   `listen-address=127.0.0.1,<VIP or eth2's address>`. The device address comes from
//!   `CsHelper.get_device_info`, which skips `secondary` addresses, so it is the primary.
//! - `CsDhcp.add` writes `mac,ip,hostname,infinite` to dhcphosts.txt and also seeds the lease
//!   file with `0 mac ip hostname *` (CsFile.search on `dnsmasq.leases`: expiry 0 is infinite),
//!   so dnsmasq holds a VM's lease from its next start on, before the VM ever asks.
//! - `CsDhcp.process`: the hosts file is rebuilt from the `dhcpentry` data bag (an expunged VM is
//!   dropped from it, `cs_dhcp.merge`), cloud.conf, dhcphosts.txt and the lease file are
//!   committed (`CsFile.commit` writes in place, and reports a change when the set of lines
//!   differs); if any changed, `delete_leases` runs `dhcp_release $(ip route get IP | ... $3) IP
//!   MAC` for every lease line whose MAC is not in dhcphosts.txt. Then, only when the VR is not
//!   redundant or is MASTER: `systemctl restart dnsmasq` if something changed, else start it if
//!   stopped and `systemctl reload dnsmasq` (SIGHUP). A BACKUP writes the files and runs
//!   `dhcp_release` (which then reaches no server) but leaves dnsmasq stopped.
//! - keepalived (`templates/keepalived.conf.templ`, `CsRedundant._collect_ips`) owns the VIP
//!   (`<gateway>/<prefix> brd ... dev eth2`, so a secondary of the same prefix) and on a state
//!   change runs `configure_router.py` (formerly `master.py`): `CsRedundant.set_backup` ends
//!   with `service dnsmasq stop`, `set_primary`/`set_master` with `service dnsmasq restart`, and
//!   both refuse on a non-redundant VR.
//!
//! Verified on the real binaries (dnsmasq 2.90): `dhcp_release` takes as server identifier the
//! first address of eth2 in the subnet of the lease (dnsmasq's
//! `contrib/lease-tools/dhcp_release.c`, `find_interface`), the primary, while dnsmasq's is the
//! VIP (it serves through `listen-address`, and `rfc2131.c` drops a DHCPRELEASE whose option 54
//! is not `server_id(context)`): on a redundant VR the release is silently ignored and the
//! expunged VM's lease stays, in memory and in the lease file, across every restart. On a single
//! VR the two addresses are one and the release is honored. `dhcp_lease_time` (a DHCPINFORM to
//! 127.0.0.1) is answered despite `except-interface=lo`, because 127.0.0.1 is a listen-address.
//!
//! Lab adaptations only: `port=0` (no DNS), `user=root`, and the lease, pid and log files, the
//! conf-dir, hosts and options files in the lab's scratch directory.
use std::{
    collections::HashSet,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    Dnsmasq, Netns, Switch, VmHandle, dnsmasq_holds_in, lease_file_lists, next_lab_id,
    require_tools, run,
};

/// The guest NIC of the VPC tier (eth0 is control, eth1 public, eth2+ guest tiers).
pub const GUEST_IFACE: &str = "eth2";
/// The tier's gateway: the VIP on a redundant VR, eth2's own address on a single one.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 29, 102, 1);
/// eth2's own address on a redundant VR (each of the pair has one).
pub const REDUNDANT_PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 29, 102, 245);
pub const PREFIX: u8 = 24;
/// `vpcrouter.sh`'s default when the network has no domain.
pub const DOMAIN: &str = "cloudnine.internal";

/// Shape of the VR.
#[derive(Debug, Clone, Copy)]
pub struct CloudStackConfig {
    /// A redundant pair member (keepalived, VIP) instead of a single VR.
    pub redundant: bool,
}

/// One `dhcpentry` of the VR's data bag: a VM it serves.
struct HostEntry {
    mac: String,
    ip: Ipv4Addr,
    hostname: String,
}

/// A running VPC VR (started as MASTER when redundant). Dropping it stops dnsmasq and deletes
/// its namespaces and files; VMs are dropped by their owners.
pub struct CloudStackRouter {
    pub router: Netns,
    pub switch: Switch,
    pub config: CloudStackConfig,
    /// Scratch directory: every file CloudStack keeps in /etc, /var/lib/misc and /var/log.
    pub dir: PathBuf,
    id: String,
    master: bool,
    entries: Vec<HostEntry>,
    dnsmasq: Option<Dnsmasq>,
    vms: u32,
}

impl CloudStackRouter {
    /// Builds the VR and brings it to service: the configuration written as `vpcrouter.sh` and
    /// `CsDhcp.process` write it, then, on a redundant VR, keepalived's MASTER transition (VIP
    /// added, dnsmasq restarted); a single VR's dnsmasq is started by `CsDhcp.process` itself.
    pub fn start(config: CloudStackConfig) -> anyhow::Result<CloudStackRouter> {
        require_tools(&[
            "ip",
            "dnsmasq",
            "dhclient",
            "dhcp_release",
            "dhcp_lease_time",
        ])?;
        let id = next_lab_id();
        // Namespaces first: on any failure from here on, what exists is dropped and removed.
        let router = Netns::create(&format!("dhcpobs-cs-r-{id}"))?;
        let switch = Switch::create(&format!("dhcpobs-cs-sw-{id}"))?;
        let dir = std::env::temp_dir().join(format!("dhcp-lab-cs-{id}"));
        fs::create_dir_all(dir.join("dnsmasq.d"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut vr = CloudStackRouter {
            router,
            switch,
            config,
            dir,
            id,
            master: false,
            entries: Vec::new(),
            dnsmasq: None,
            vms: 0,
        };
        vr.build_network()?;
        vr.write_setup_files()?;
        vr.apply()?;
        if config.redundant {
            vr.become_master()?;
        }
        Ok(vr)
    }

    fn build_network(&self) -> anyhow::Result<()> {
        self.router.ip(&["link", "set", "lo", "up"])?;
        self.switch.plug(&self.router, GUEST_IFACE)?;
        self.router.ip(&["link", "set", GUEST_IFACE, "up"])?;
        let primary = format!("{}/{PREFIX}", self.primary());
        self.router
            .ip(&["addr", "add", &primary, "dev", GUEST_IFACE])
            .map(drop)
    }

    /// What `setup_vpcrouter` leaves behind: /etc/dnsmasq.conf (vpcdnsmasq.conf with its `sed`
    /// edits applied, reduced to its effective lines), cloud.conf's first line, and the empty
    /// resolv and options files.
    fn write_setup_files(&self) -> anyhow::Result<()> {
        let d = self.dir.display();
        let conf = format!(
            "# /etc/dnsmasq.conf of a CloudStack VPC router: systemvm/debian/etc/vpcdnsmasq.conf\n\
             # as setup/vpcrouter.sh edits it (domain, local, leasefile-ro removed).\n\
             domain-needed\n\
             bogus-priv\n\
             resolv-file={d}/dnsmasq-resolv.conf\n\
             local=/{DOMAIN}/\n\
             except-interface=lo\n\
             expand-hosts\n\
             domain={DOMAIN}\n\
             dhcp-option=15,\"2.vmops-test.vmops.com\"\n\
             dhcp-option=vendor:MSFT,2,1i\n\
             dhcp-lease-max=2100\n\
             log-facility={d}/dnsmasq.log\n\
             conf-dir={d}/dnsmasq.d\n\
             dhcp-optsfile={d}/dhcpopts.txt\n\
             localise-queries\n\
             # dhcp-lab: no DNS, and the lab's own files instead of /var/lib/misc and /run.\n\
             port=0\n\
             user=root\n\
             dhcp-leasefile={d}/dnsmasq.leases\n\
             pid-file={d}/dnsmasq.pid\n\
             log-dhcp\n"
        );
        fs::write(self.conf_file(), conf).context("writing dnsmasq.conf")?;
        fs::write(
            self.cloud_conf(),
            format!("dhcp-hostsfile={d}/dhcphosts.txt\n"),
        )
        .context("writing cloud.conf")?;
        fs::write(self.dir.join("dnsmasq-resolv.conf"), "").context("writing the resolv file")?;
        // Empty until the first VM: dnsmasq and `delete_leases` read it (CsDhcp would only
        // log a missing one).
        fs::write(self.hosts_file(), "").context("writing dhcphosts.txt")?;
        fs::write(self.dir.join("dhcpopts.txt"), "").context("writing dhcpopts.txt")
    }

    /// `CsDhcp.process` after a change to the data bag.
    fn apply(&mut self) -> anyhow::Result<()> {
        let cloud_conf = self.cloud_conf_lines()?;
        let mut changed = commit(&self.cloud_conf(), &cloud_conf)?;
        let hosts: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{},{},{},infinite", e.mac, e.ip, e.hostname))
            .collect();
        changed |= commit(&self.hosts_file(), &hosts)?;
        let leases = fs::read_to_string(self.lease_file()).unwrap_or_default();
        changed |= commit(&self.lease_file(), &seed_leases(&leases, &self.entries))?;
        if changed {
            self.delete_leases()?;
        }
        if self.config.redundant && !self.master {
            return Ok(());
        }
        if changed {
            self.restart_dnsmasq()
        } else {
            if self.dnsmasq.is_none() {
                self.start_dnsmasq()?;
            }
            self.reload_dnsmasq()
        }
    }

    /// cloud.conf as `configure_server` leaves it: `vpcrouter.sh`'s first line, then its own.
    fn cloud_conf_lines(&self) -> anyhow::Result<Vec<String>> {
        let tag = format!("tag:interface-{GUEST_IFACE}-0");
        // Redundant: the gateway (the VIP); single: eth2's (primary) address, here the same.
        let served = if self.config.redundant {
            GATEWAY
        } else {
            self.primary()
        };
        let first = fs::read_to_string(self.cloud_conf()).context("reading cloud.conf")?;
        let first = first.lines().next().unwrap_or_default().to_owned();
        Ok(vec![
            first,
            format!("dhcp-range=set:interface-{GUEST_IFACE}-0,{served},static"),
            format!("dhcp-option={tag},15,{DOMAIN}"),
            format!("dhcp-option={tag},6,{GATEWAY}"),
            format!("dhcp-option={tag},3,{GATEWAY}"),
            format!("dhcp-option={tag},1,255.255.255.0"),
            format!("listen-address=127.0.0.1,{served}"),
        ])
    }

    /// `CsDhcp.delete_leases`: releases every lease whose MAC is not in dhcphosts.txt.
    fn delete_leases(&self) -> anyhow::Result<()> {
        let hosts = fs::read_to_string(self.hosts_file()).context("reading dhcphosts.txt")?;
        let macs: HashSet<&str> = hosts.lines().filter_map(|l| l.split(',').next()).collect();
        let leases = fs::read_to_string(self.lease_file()).unwrap_or_default();
        for lease in leases.lines() {
            let fields: Vec<&str> = lease.split(' ').collect();
            let (Some(mac), Some(ip)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !macs.contains(mac) {
                let ip = ip
                    .parse()
                    .with_context(|| format!("lease line {lease:?}"))?;
                self.dhcp_release(ip, mac)?;
            }
        }
        Ok(())
    }

    /// Deploys a VM: its `dhcpentry` is added and `CsDhcp.process` runs (host line, seeded
    /// lease, `systemctl restart dnsmasq` on a MASTER or single VR), then the VM's namespace is
    /// plugged into the tier. Not booted yet: see [`CloudStackRouter::boot`].
    pub fn deploy_vm(
        &mut self,
        mac: &str,
        ip: Ipv4Addr,
        hostname: &str,
    ) -> anyhow::Result<VmHandle> {
        ensure!(
            !self.entries.iter().any(|e| e.mac == mac || e.ip == ip),
            "{mac} or {ip} is already deployed"
        );
        self.entries.push(HostEntry {
            mac: mac.to_owned(),
            ip,
            hostname: hostname.to_owned(),
        });
        self.apply()?;
        self.vms += 1;
        let name = format!("dhcpobs-cs-vm{}-{}", self.vms, self.id);
        let dir = self.dir.join(format!("vm{}", self.vms));
        VmHandle::plug(&self.switch, &name, mac, dir, ip, hostname)
    }

    /// Boots the VM's network: dhclient gets its lease. Returns the address.
    pub fn boot(&self, vm: &VmHandle) -> anyhow::Result<Ipv4Addr> {
        vm.vm.boot()
    }

    /// The VM's own release: `dhclient -r` unicasts a DHCPRELEASE to the server identifier it
    /// was given (the VIP on a redundant VR), which dnsmasq honors.
    pub fn release_from_vm(&self, vm: &VmHandle) -> anyhow::Result<()> {
        vm.vm.release()
    }

    /// Expunges a VM in CloudStack's order: the hypervisor destroys it first (dhclient killed
    /// without a RELEASE, NIC unplugged), then the VR gets the entry's removal and
    /// `CsDhcp.process` runs: dhcphosts.txt rewritten without it, `dhcp_release eth2 IP MAC` for
    /// its lease, `systemctl restart dnsmasq` only on a MASTER or single VR.
    pub fn expunge(&mut self, vm: &VmHandle) -> anyhow::Result<()> {
        vm.power_off()?;
        let before = self.entries.len();
        self.entries.retain(|e| e.mac != vm.mac());
        ensure!(self.entries.len() < before, "{} is not deployed", vm.mac());
        self.apply()
    }

    /// keepalived leaves MASTER: it removes the VIP, then `CsRedundant.set_backup` stops
    /// dnsmasq.
    pub fn become_backup(&mut self) -> anyhow::Result<()> {
        ensure!(self.config.redundant, "set_backup on a non-redundant VR");
        ensure!(self.master, "already BACKUP");
        let vip = format!("{GATEWAY}/{PREFIX}");
        self.router.ip(&["addr", "del", &vip, "dev", GUEST_IFACE])?;
        self.master = false;
        match self.dnsmasq.take() {
            Some(dnsmasq) => dnsmasq.stop(),
            None => Ok(()),
        }
    }

    /// keepalived becomes MASTER (failover): it adds the VIP as a secondary of eth2, then
    /// `CsRedundant.set_master` restarts dnsmasq, which loads the lease file as it finds it.
    pub fn become_master(&mut self) -> anyhow::Result<()> {
        ensure!(self.config.redundant, "set_master on a non-redundant VR");
        ensure!(!self.master, "already MASTER");
        let vip = format!("{GATEWAY}/{PREFIX}");
        self.router
            .ip(&["addr", "add", &vip, "brd", "+", "dev", GUEST_IFACE])?;
        self.master = true;
        self.restart_dnsmasq()
    }

    /// `systemctl restart dnsmasq`: SIGTERM, wait, start; returns once it serves.
    pub fn restart_dnsmasq(&mut self) -> anyhow::Result<()> {
        if let Some(dnsmasq) = self.dnsmasq.take() {
            dnsmasq.stop()?;
        }
        self.start_dnsmasq()
    }

    fn start_dnsmasq(&mut self) -> anyhow::Result<()> {
        let args = [
            "--keep-in-foreground".to_owned(),
            format!("--conf-file={}", self.conf_file().display()),
        ];
        let pid_file = self.dir.join("dnsmasq.pid");
        let dnsmasq = Dnsmasq::spawn(
            &self.router,
            &args,
            &pid_file,
            &self.dir.join("dnsmasq.stderr"),
        )
        .with_context(|| format!("dnsmasq: {}", self.dnsmasq_log()))?;
        self.dnsmasq = Some(dnsmasq);
        Ok(())
    }

    /// `systemctl reload dnsmasq`: SIGHUP.
    fn reload_dnsmasq(&self) -> anyhow::Result<()> {
        let dnsmasq = self.dnsmasq.as_ref().context("dnsmasq is not running")?;
        dnsmasq.reload(&self.dir.join("dnsmasq.log"), &self.hosts_file())
    }

    pub fn dnsmasq_running(&self) -> bool {
        self.dnsmasq.as_ref().is_some_and(Dnsmasq::running)
    }

    /// The real `dhcp_release`, run as `CsDhcp.delete_leases` runs it: on the interface that
    /// `ip route get IP` names (its third word), which is eth2 for a guest address.
    pub fn dhcp_release(&self, ip: Ipv4Addr, mac: &str) -> anyhow::Result<()> {
        let route = run(self
            .router
            .command("ip")
            .args(["route", "get", &ip.to_string()]))?;
        let Some(dev) = route.split_whitespace().nth(2) else {
            bail!("no interface in `ip route get {ip}`: {route:?}");
        };
        run(self
            .router
            .command("dhcp_release")
            .args([dev, &ip.to_string(), mac]))
        .map(drop)
    }

    /// eth2's own address: the first one, which `dhcp_release` picks.
    pub fn primary(&self) -> Ipv4Addr {
        if self.config.redundant {
            REDUNDANT_PRIMARY
        } else {
            GATEWAY
        }
    }

    /// The VIP keepalived moves between the pair (the tier's gateway), if redundant.
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.config.redundant.then_some(GATEWAY)
    }

    /// The server identifier (option 54) dnsmasq puts in its replies: the address it serves
    /// through (`listen-address`, `dhcp-range`), the VIP when redundant.
    pub fn server_id(&self) -> Ipv4Addr {
        self.vip().unwrap_or_else(|| self.primary())
    }

    pub fn guest_iface(&self) -> &str {
        GUEST_IFACE
    }

    /// Whether keepalived has this VR as MASTER (always false on a single VR).
    pub fn is_master(&self) -> bool {
        self.master
    }

    /// This lab's id: every namespace it creates is named `dhcpobs-cs-...-<id>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    /// dhcphosts.txt.
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.join("dhcphosts.txt")
    }

    /// The main configuration (/etc/dnsmasq.conf), what an agent gets as `--dnsmasq-conf`.
    pub fn conf_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }

    /// /etc/dnsmasq.d/cloud.conf.
    pub fn cloud_conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.d").join("cloud.conf")
    }

    pub fn dnsmasq_holds(&self, ip: Ipv4Addr) -> bool {
        dnsmasq_holds_in(&self.router, ip)
    }

    pub fn lease_file_has(&self, ip: Ipv4Addr) -> bool {
        lease_file_lists(&self.lease_file(), ip)
    }

    /// dnsmasq's log and stderr so far.
    pub fn dnsmasq_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("dnsmasq.stderr")).unwrap_or_default();
        format!("{log}{stderr}")
    }
}

impl Drop for CloudStackRouter {
    fn drop(&mut self) {
        drop(self.dnsmasq.take());
        // The namespaces are deleted by their own Drop.
        if std::env::var_os("DHCP_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The lease file after `CsDhcp.add`'s `dhcp_leases.search(mac, "0 mac ip hostname *")` for
/// every entry: a line mentioning the MAC is replaced by the seed unless it already contains
/// it; a MAC with no line gets the seed appended. Other lines (expunged VMs) stay.
fn seed_leases(current: &str, entries: &[HostEntry]) -> Vec<String> {
    let mut lines: Vec<String> = current.lines().map(str::to_owned).collect();
    for entry in entries {
        let seed = format!("0 {} {} {} *", entry.mac, entry.ip, entry.hostname);
        let mut found = false;
        for line in lines
            .iter_mut()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains(&entry.mac))
        {
            found = true;
            if !line.contains(&seed) {
                line.clone_from(&seed);
            }
        }
        if !found {
            lines.push(seed);
        }
    }
    lines
}

/// `CsFile.commit`: writes `lines` over `path` in place when their set differs from the file's;
/// returns whether it wrote.
fn commit(path: &Path, lines: &[String]) -> anyhow::Result<bool> {
    let current = fs::read_to_string(path).unwrap_or_default();
    let old: HashSet<&str> = current.lines().collect();
    let new: HashSet<&str> = lines.iter().map(String::as_str).collect();
    if old == new {
        return Ok(false);
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}
