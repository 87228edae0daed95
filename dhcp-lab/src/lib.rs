//! A router lab in network namespaces, shaped like an Apache CloudStack redundant virtual router:
//!
//! ```text
//!   vm<N> namespace                      router namespace
//!   eth0 (dhclient) <--- veth ---> guest0: 172.29.101.245/24 (primary)
//!                                          172.29.101.1/24   (secondary, the VIP)
//!                                  lo:     127.0.0.1
//!                                  dnsmasq listen-address=127.0.0.1,172.29.101.1
//! ```
//!
//! Real peers only: dnsmasq serves, dhclient asks, `dhcp_release` releases. Everything lives
//! in namespaces and a scratch directory named after this process, and is removed on drop,
//! also when a test fails. Used by `cargo xtask lab` and by the integration tests.
//!
//! Two more labs model the routers as their projects really build them, from a reading of their
//! code: [`cloudstack::CloudStackRouter`] (a VPC virtual router, single or redundant, configured
//! and driven as `CsDhcp.py` and `CsRedundant.py` do) and [`neutron::NeutronDhcp`] (a `qdhcp-`
//! namespace with dnsmasq started and reloaded as `neutron/agent/linux/dhcp.py` does). In both,
//! the router and the VMs are namespaces plugged into a [`Switch`], and each VM is a [`VmHandle`].
pub mod cloudstack;
pub mod frames;
pub mod kea;
pub mod kea6;
pub mod netns;
pub mod neutron;
pub mod prometheus;
pub mod traffic;
pub mod v6;

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use netns::{Netns, run};

/// Addresses of the guest network, as on a CloudStack redundant VR.
pub const SUBNET_PREFIX: &str = "172.29.101";
pub const PRIMARY_ADDR: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);
pub const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
pub const ROUTER_IFACE: &str = "guest0";
pub const VM_IFACE: &str = "eth0";
/// A client dnsmasq is configured to ignore (`dhcp-host=...,ignore`): its DISCOVERs go
/// unanswered, as a pool-exhausted or misconfigured server's would.
pub const IGNORED_MAC: [u8; 6] = [0x02, 0xdc, 0x00, 0x00, 0x99, 0x99];

/// Shape of a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Tag guest traffic with this 802.1Q VLAN id (guest0.<id> in the router, eth0.<id> in VMs).
    pub vlan: Option<u16>,
    /// Lease time dnsmasq hands out, seconds (dnsmasq's minimum is 120).
    pub lease_secs: u32,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            vlan: None,
            lease_secs: 3600,
        }
    }
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// How [`Lab::stop_dnsmasq`] stops dnsmasq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a clean exit, as `systemctl restart` does.
    Term,
    /// SIGKILL: a crash, the OOM killer.
    Kill,
}

/// A VM: a namespace with one interface and a dhclient of its own.
pub struct Vm {
    pub ns: Netns,
    pub mac: String,
    /// Interface dhclient runs on (eth0, or eth0.<vlan>).
    pub iface: String,
    dir: PathBuf,
}

impl Vm {
    fn dhclient(&self, extra: &[&str]) -> Command {
        let mut cmd = self.ns.command("dhclient");
        cmd.arg("-sf")
            .arg(self.dir.join("dhclient-script"))
            .arg("-lf")
            .arg(self.dir.join("dhclient.leases"))
            .arg("-pf")
            .arg(self.dir.join("dhclient.pid"))
            .args(extra)
            .arg(&self.iface);
        cmd
    }

    /// Boots the VM's network: dhclient gets a lease (DISCOVER, OFFER, REQUEST, ACK), configures
    /// it and stays in the background to renew. Returns the leased address.
    pub fn boot(&self) -> anyhow::Result<Ipv4Addr> {
        run(self.dhclient(&["-1", "-v"]).stdin(Stdio::null()))
            .with_context(|| format!("dhclient in {}", self.ns.name()))?;
        self.address()?
            .context("dhclient exited but no address is configured")
    }

    /// The address configured on the VM's interface, if any.
    pub fn address(&self) -> anyhow::Result<Option<Ipv4Addr>> {
        let out =
            run(self
                .ns
                .command("ip")
                .args(["-4", "-o", "addr", "show", "dev", &self.iface]))?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next()?.parse().ok()))
    }

    /// The client's own release: `dhclient -r` sends DHCPRELEASE and stops the running dhclient.
    pub fn release(&self) -> anyhow::Result<()> {
        run(self.dhclient(&["-r", "-v"]).stdin(Stdio::null())).map(drop)
    }

    /// Gives the guest a new MAC: the next "VM" on the same port. Stops dhclient first.
    pub fn set_mac(&mut self, mac: &str) -> anyhow::Result<()> {
        self.stop();
        let _ = fs::remove_file(self.dir.join("dhclient.leases"));
        self.ns.ip(&["-4", "addr", "flush", "dev", &self.iface])?;
        self.ns.ip(&["link", "set", VM_IFACE, "down"])?;
        self.ns.ip(&["link", "set", VM_IFACE, "address", mac])?;
        self.ns.ip(&["link", "set", VM_IFACE, "up"])?;
        self.mac = mac.to_owned();
        Ok(())
    }

    fn stop(&self) {
        if let Ok(pid) = fs::read_to_string(self.dir.join("dhclient.pid")) {
            let _ = Command::new("kill")
                .arg(pid.trim())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A running lab. Dropping it stops every process and deletes namespaces and files.
pub struct Lab {
    pub router: Netns,
    /// The guest. Several guests in a row are simulated by giving it a new MAC
    /// ([`Vm::set_mac`]), as when an expunged VM's address goes to the next one.
    pub vm: Vm,
    pub config: LabConfig,
    pub dir: PathBuf,
    dnsmasq: Option<Child>,
}

impl Lab {
    pub fn start(config: LabConfig) -> anyhow::Result<Lab> {
        require_tools(&["ip", "dnsmasq", "dhclient", "dhcp_release"])?;
        let id = next_lab_id();
        let dir = std::env::temp_dir().join(format!("dhcp-lab-{id}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let router = Netns::create(&format!("dhcpobs-r-{id}"))?;
        let vm_ns = Netns::create(&format!("dhcpobs-vm-{id}"))?;
        let vm_dir = dir.join("vm");
        fs::create_dir_all(&vm_dir)?;
        write_dhclient_script(&vm_dir.join("dhclient-script"))?;
        let iface = match config.vlan {
            Some(vlan) => format!("{VM_IFACE}.{vlan}"),
            None => VM_IFACE.to_owned(),
        };
        let vm = Vm {
            ns: vm_ns,
            mac: "52:54:00:10:00:01".into(),
            iface,
            dir: vm_dir,
        };
        let mut lab = Lab {
            router,
            vm,
            config,
            dir,
            dnsmasq: None,
        };
        lab.build_network()?;
        lab.start_dnsmasq()?;
        Ok(lab)
    }

    /// The router interface that carries guest traffic at L3 (where dnsmasq serves).
    pub fn guest_iface(&self) -> String {
        match self.config.vlan {
            Some(vlan) => format!("{ROUTER_IFACE}.{vlan}"),
            None => ROUTER_IFACE.to_owned(),
        }
    }

    fn build_network(&mut self) -> anyhow::Result<()> {
        self.router.ip(&["link", "set", "lo", "up"])?;
        self.vm.ns.ip(&["link", "set", "lo", "up"])?;
        self.connect_guest()
    }

    /// The cable between router and VM: the veth pair, the VLAN interfaces on it if any, and
    /// the router's addresses.
    fn connect_guest(&self) -> anyhow::Result<()> {
        let (r, vm) = (&self.router, &self.vm);
        netns::veth_pair(r, ROUTER_IFACE, &vm.ns, VM_IFACE)?;
        vm.ns.ip(&["link", "set", VM_IFACE, "address", &vm.mac])?;
        vm.ns.ip(&["link", "set", VM_IFACE, "up"])?;
        r.ip(&["link", "set", ROUTER_IFACE, "up"])?;
        let guest = self.guest_iface();
        if let Some(vlan) = self.config.vlan {
            let id = vlan.to_string();
            vm.ns.ip(&[
                "link", "add", "link", VM_IFACE, "name", &vm.iface, "type", "vlan", "id", &id,
            ])?;
            vm.ns.ip(&["link", "set", &vm.iface, "up"])?;
            r.ip(&[
                "link",
                "add",
                "link",
                ROUTER_IFACE,
                "name",
                &guest,
                "type",
                "vlan",
                "id",
                &id,
            ])?;
            r.ip(&["link", "set", &guest, "up"])?;
        }
        // Primary first, then the VIP as a secondary: `dhcp_release` takes the first address.
        r.ip(&["addr", "add", &format!("{PRIMARY_ADDR}/24"), "dev", &guest])?;
        r.ip(&["addr", "add", &format!("{VIP_ADDR}/24"), "dev", &guest])?;
        Ok(())
    }

    /// Deletes the router's guest interface, and with it the VM's end of the cable, as when the
    /// guest network is unplugged or its interface torn down and rebuilt.
    pub fn unplug_guest(&self) -> anyhow::Result<()> {
        self.router.ip(&["link", "del", ROUTER_IFACE]).map(drop)
    }

    /// Builds the guest network again after [`Lab::unplug_guest`]: the same names, addresses
    /// and VM MAC, on new interfaces (new ifindexes).
    pub fn plug_guest(&self) -> anyhow::Result<()> {
        self.connect_guest()
    }

    /// Stops dnsmasq and waits until it is gone. Its leases survive in the lease file, which it
    /// writes after every change; with [`Stop::Kill`] it gets no chance to do anything else.
    pub fn stop_dnsmasq(&mut self, how: Stop) -> anyhow::Result<()> {
        let mut child = self.dnsmasq.take().context("dnsmasq is not running")?;
        match how {
            Stop::Term => {
                let pid = libc::pid_t::try_from(child.id()).context("dnsmasq's pid")?;
                // SAFETY: kill(2) on our own child, which has not been reaped yet.
                if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                    bail!("SIGTERM to dnsmasq: {}", std::io::Error::last_os_error());
                }
            }
            Stop::Kill => child.kill().context("SIGKILL to dnsmasq")?,
        }
        child.wait().context("waiting for dnsmasq to exit")?;
        // A killed dnsmasq leaves its pid file behind: starting again waits for a fresh one.
        match fs::remove_file(self.dir.join("dnsmasq.pid")) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).context("removing dnsmasq's pid file")
            }
            _ => Ok(()),
        }
    }

    /// Starts dnsmasq again after [`Lab::stop_dnsmasq`], with the same configuration and lease
    /// file; returns once it serves.
    pub fn resume_dnsmasq(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.dnsmasq.is_none(), "dnsmasq is running");
        self.start_dnsmasq()
    }

    /// Restarts dnsmasq as a service manager does: SIGTERM, wait, start.
    pub fn restart_dnsmasq(&mut self) -> anyhow::Result<()> {
        self.stop_dnsmasq(Stop::Term)?;
        self.resume_dnsmasq()
    }

    fn start_dnsmasq(&mut self) -> anyhow::Result<()> {
        let conf = self.dir.join("dnsmasq.conf");
        fs::write(&conf, self.dnsmasq_conf()).context("writing dnsmasq.conf")?;
        let child = self
            .router
            .command("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(
                self.dir.join("dnsmasq.stderr"),
            )?))
            .spawn()
            .context("starting dnsmasq")?;
        self.dnsmasq = Some(child);
        // dnsmasq writes its pid file once it has bound its sockets.
        wait_for(Duration::from_secs(10), || {
            self.dir.join("dnsmasq.pid").exists()
        })
        .with_context(|| format!("dnsmasq did not start: {}", self.dnsmasq_log()))?;
        Ok(())
    }

    /// The configuration of a CloudStack redundant VR, reduced to DHCP.
    pub fn dnsmasq_conf(&self) -> String {
        let d = self.dir.display();
        format!(
            "# dhcp-lab: dnsmasq as on a CloudStack redundant virtual router\n\
             port=0\n\
             user=root\n\
             listen-address=127.0.0.1,{VIP_ADDR}\n\
             dhcp-range={SUBNET_PREFIX}.100,{SUBNET_PREFIX}.200,255.255.255.0,{lease}\n\
             dhcp-host={ignored},ignore\n\
             dhcp-leasefile={d}/dnsmasq.leases\n\
             pid-file={d}/dnsmasq.pid\n\
             log-facility={d}/dnsmasq.log\n\
             log-dhcp\n",
            lease = self.config.lease_secs,
            ignored = IGNORED_MAC.map(|b| format!("{b:02x}")).join(":"),
        )
    }

    /// Path of dnsmasq's lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    /// The options every `dhcp-agent run` on this lab's router gets, after `run`: JSON events,
    /// the guest interface and `lo`, a 1 s grace, the lab's lease file and dnsmasq
    /// configuration, and a 1 s settle time (the configuration was written just before the
    /// agent starts, and no lease is released until its client has been undeclared that long).
    /// The state file and anything else are the caller's.
    pub fn agent_run_options(&self) -> Vec<String> {
        crate::agent_run_options(
            "1s",
            self.lease_file().to_string_lossy().into_owned(),
            &[(
                "--dnsmasq-conf",
                self.dir.join("dnsmasq.conf").to_string_lossy().into_owned(),
            )],
        )
    }

    /// dnsmasq's log so far (for failure messages).
    pub fn dnsmasq_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("dnsmasq.stderr")).unwrap_or_default();
        format!("{log}{stderr}")
    }

    /// The real `dhcp_release IFACE IP MAC`, run on the router as CloudStack does.
    pub fn dhcp_release(&self, ip: Ipv4Addr, mac: &str) -> anyhow::Result<()> {
        run(self
            .router
            .command("dhcp_release")
            .args([&self.guest_iface(), &ip.to_string(), mac]))
        .map(drop)
    }

    /// Whether dnsmasq holds a lease for `ip` in its memory (asked with its own
    /// `dhcp_lease_time`, which prints nothing when there is none).
    pub fn dnsmasq_holds(&self, ip: Ipv4Addr) -> bool {
        dnsmasq_holds_in(&self.router, ip)
    }

    /// Whether the lease file lists `ip`.
    pub fn lease_file_has(&self, ip: Ipv4Addr) -> bool {
        lease_file_lists(&self.lease_file(), ip)
    }

    /// Edits the lease file behind dnsmasq's back, as some orchestration tools do after
    /// `dhcp_release`: drops the line of `remove` and appends `add` (whole lines).
    pub fn hand_edit_lease_file(&self, remove: Ipv4Addr, add: &[String]) -> anyhow::Result<()> {
        let text = fs::read_to_string(self.lease_file()).context("reading the lease file")?;
        let mut edited: String = text
            .lines()
            .filter(|l| !is_lease_of(l, remove))
            .map(|l| format!("{l}\n"))
            .collect();
        for line in add {
            edited.push_str(line);
            edited.push('\n');
        }
        fs::write(self.lease_file(), edited).context("writing the lease file")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.vm.stop();
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The namespaces are deleted by their own Drop.
        if std::env::var_os("DHCP_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether a dnsmasq lease line is about `ip` (the address is its third field).
fn is_lease_of(line: &str, ip: Ipv4Addr) -> bool {
    line.split_ascii_whitespace().nth(2) == Some(ip.to_string().as_str())
}

/// Whether the lease file at `path` lists `ip`.
fn lease_file_lists(path: &Path, ip: Ipv4Addr) -> bool {
    fs::read_to_string(path).is_ok_and(|s| s.lines().any(|l| is_lease_of(l, ip)))
}

/// Whether the dnsmasq serving namespace `ns` holds a lease for `ip` in memory: its own
/// `dhcp_lease_time` sends a DHCPINFORM to 127.0.0.1 and prints the remaining time, or nothing
/// when there is no lease (or, after its 3 s alarm, when no dnsmasq answers).
fn dnsmasq_holds_in(ns: &Netns, ip: Ipv4Addr) -> bool {
    ns.command("dhcp_lease_time")
        .arg(ip.to_string())
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
}

/// A fresh id for a lab, this process's pid and a sequence number: namespaces and scratch
/// directories are named after it, so parallel tests and concurrent runs never collide.
fn next_lab_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        LAB_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// An Ethernet segment: a namespace holding one Linux bridge, `br0`, so a router and any number
/// of VMs share a broadcast domain, as on a hypervisor's guest bridge. STP is off, so a new port
/// forwards at once.
pub struct Switch {
    pub ns: Netns,
    ports: AtomicU32,
}

impl Switch {
    pub fn create(name: &str) -> anyhow::Result<Switch> {
        let ns = Netns::create(name)?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Switch {
            ns,
            ports: AtomicU32::new(0),
        })
    }

    /// Cables a new interface `iface` of `ns` to a new bridge port (a veth pair). The port is
    /// up; `iface` is left down for its owner to configure.
    pub fn plug(&self, ns: &Netns, iface: &str) -> anyhow::Result<()> {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        netns::veth_pair(&self.ns, &port, ns, iface)?;
        self.ns
            .ip(&["link", "set", &port, "master", "br0", "up"])
            .map(drop)
    }
}

/// A VM an orchestrator deployed on a [`Switch`]: its namespace and dhclient ([`Vm`], whose
/// files live in the lab's scratch directory), and the address and name its host line gives it.
pub struct VmHandle {
    pub vm: Vm,
    pub ip: Ipv4Addr,
    pub hostname: String,
}

impl VmHandle {
    /// Creates VM namespace `name` with `eth0` (MAC `mac`) plugged into `switch`, not booted.
    fn plug(
        switch: &Switch,
        name: &str,
        mac: &str,
        dir: PathBuf,
        ip: Ipv4Addr,
        hostname: &str,
    ) -> anyhow::Result<VmHandle> {
        let ns = Netns::create(name)?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_dhclient_script(&dir.join("dhclient-script"))?;
        ns.ip(&["link", "set", "lo", "up"])?;
        switch.plug(&ns, VM_IFACE)?;
        ns.ip(&["link", "set", VM_IFACE, "address", mac, "up"])?;
        let vm = Vm {
            ns,
            mac: mac.to_owned(),
            iface: VM_IFACE.to_owned(),
            dir,
        };
        Ok(VmHandle {
            vm,
            ip,
            hostname: hostname.to_owned(),
        })
    }

    pub fn mac(&self) -> &str {
        &self.vm.mac
    }

    /// Destroys the VM as a hypervisor does: dhclient is killed (SIGKILL: it sends nothing, no
    /// DHCPRELEASE) and the NIC is unplugged from the switch. The namespace stays until drop.
    fn power_off(&self) -> anyhow::Result<()> {
        if let Ok(pid) = fs::read_to_string(self.vm.dir.join("dhclient.pid")) {
            let _ = Command::new("kill")
                .args(["-9", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
        self.vm.ns.ip(&["link", "del", VM_IFACE]).map(drop)
    }
}

/// A dnsmasq this crate started in a namespace. It runs with `--keep-in-foreground`, as our
/// child, so that it is reaped when it exits (this sandbox's init reaps no orphans: a
/// daemonized dnsmasq would linger as a zombie and look alive).
struct Dnsmasq {
    child: Child,
    pid_file: PathBuf,
}

impl Dnsmasq {
    /// Runs `dnsmasq ARGS` in `ns` (ARGS must include `--keep-in-foreground` and put the pid
    /// file at `pid_file`), stderr to `stderr`; returns once dnsmasq has written its pid file,
    /// which it does after binding its sockets.
    fn spawn(
        ns: &Netns,
        args: &[String],
        pid_file: &Path,
        stderr: &Path,
    ) -> anyhow::Result<Dnsmasq> {
        // A stale pid file would end the wait below at once.
        match fs::remove_file(pid_file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).context("removing a stale dnsmasq pid file");
            }
            _ => {}
        }
        let child = ns
            .command("dnsmasq")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(stderr)
                    .with_context(|| format!("creating {}", stderr.display()))?,
            ))
            .spawn()
            .context("starting dnsmasq")?;
        let mut dnsmasq = Dnsmasq {
            child,
            pid_file: pid_file.to_owned(),
        };
        let mut exited = None;
        wait_for(Duration::from_secs(10), || {
            exited = dnsmasq.child.try_wait().ok().flatten();
            exited.is_some() || pid_file.exists()
        })
        .context("dnsmasq did not write its pid file")?;
        if let Some(status) = exited {
            bail!("dnsmasq exited ({status})");
        }
        Ok(dnsmasq)
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("dnsmasq's pid")?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "signal {signal} to dnsmasq: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Sends SIGHUP and waits until dnsmasq has read `hosts_file` again (it logs `read PATH` to
    /// `log`), so a client that asks next is answered from the new file.
    fn reload(&self, log: &Path, hosts_file: &Path) -> anyhow::Result<()> {
        let marker = format!("read {}", hosts_file.display());
        let reads = || {
            fs::read_to_string(log)
                .map(|text| text.lines().filter(|l| l.ends_with(&marker)).count())
                .unwrap_or(0)
        };
        let before = reads();
        self.signal(libc::SIGHUP)?;
        wait_for(Duration::from_secs(10), || reads() > before)
            .context("dnsmasq did not reload its hosts file after SIGHUP")
    }

    /// SIGTERM, then waits for the exit, as `systemctl stop` does. dnsmasq writes nothing on the
    /// way out: its lease file is what it last wrote after a change.
    fn stop(mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGTERM)?;
        self.child.wait().context("waiting for dnsmasq to exit")?;
        let _ = fs::remove_file(&self.pid_file);
        Ok(())
    }

    /// Whether dnsmasq still runs: its process exists and is not a zombie waiting for us.
    fn running(&self) -> bool {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        // The state follows the parenthesized command name, which may itself hold spaces.
        stat.is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // Once `stop` has reaped the child, `kill` sends nothing and `wait` returns at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dhclient's hook: configure what it was given, nothing else (never touches resolv.conf).
fn write_dhclient_script(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let script = r#"#!/bin/sh
# dhcp-lab dhclient script: set the leased address on the interface and nothing else.
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
      ip -4 addr flush dev "$interface"
    fi
    ip -4 addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  EXPIRE|FAIL|RELEASE|STOP)
    ip -4 addr flush dev "$interface" ;;
esac
exit 0
"#;
    fs::write(path, script)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Fails with the list of missing programs (run `cargo xtask setup`).
pub fn require_tools(tools: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_program(t).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "missing programs: {} (run `cargo xtask setup`)",
            missing.join(", ")
        )
    }
}

/// Looks a program up on PATH and in the sbin directories (root's PATH may lack them).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Polls `ready` until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The options every lab's `dhcp-agent run` gets, after `run`: JSON events, the guest
/// interface and `lo`, the `grace`, a 1 s settle time, the lease file, then the lab's own
/// (flag, value) pairs (its server's configuration, its lease format).
pub(crate) fn agent_run_options(
    grace: &str,
    leases: String,
    extra: &[(&str, String)],
) -> Vec<String> {
    let mut options: Vec<String> = [
        "--json",
        "--iface",
        ROUTER_IFACE,
        "--iface",
        "lo",
        "--grace",
        grace,
        "--orphan-settle",
        "1s",
        "--leases",
    ]
    .map(str::to_owned)
    .into();
    options.push(leases);
    for (flag, value) in extra {
        options.push((*flag).to_owned());
        options.push(value.clone());
    }
    options
}
