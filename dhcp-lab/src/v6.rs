//! A DHCPv6 lab: dnsmasq serving a DHCPv6 range (and a DHCPv4 one) on a router namespace, a
//! VM namespace whose real `dhclient -6` leases from it, and dnsmasq's own `dhcp_release6`, as
//! OpenStack Neutron runs it in a `qdhcp-` namespace to drop an IPv6 lease.
//!
//! ```text
//!   vm namespace                               router namespace
//!   eth0 (dhclient -6 -D LL, dhclient)  <--- veth ---> guest0: 172.29.101.1/24
//!        fe80::5054:ff:fe10:1                                 fd00:29:101::1/64
//!                                                             fe80::<from its MAC>
//!                                              lo:     127.0.0.1, ::1
//!                                              dnsmasq --bind-dynamic, port=0
//! ```
//!
//! Everything here was established on Debian 12's packages (dnsmasq 2.90-4~deb12u2, dhclient
//! 4.4.3-P1, dnsmasq-utils' `dhcp_release6`) and is proven in `dhcp-lab/tests/dhcpv6.rs`:
//!
//! - dnsmasq rewrites its whole lease file after every DHCPv6 packet that changed a binding
//!   (`dhcp6.c` calls `lease_update_file` after each reply), so the file is the truth: 2.90 has
//!   no LEASEQUERY and no other way to read a v6 binding without changing it.
//! - `dhcp_release6` multicasts its RELEASE (xid 0) to ff02::1:2 from the link-local address of
//!   `--iface`; dnsmasq's REPLY comes back to that address, so over `lo`. dnsmasq answers
//!   ~500 ms late (it solicits the router's own address five times, 100 ms apart, looking for a
//!   MAC), which makes `dhcp_release6` send its RELEASE twice even when it is honored.
//! - A RELEASE with another server's DUID gets no REPLY at all; `dhcp_release6` sends it five
//!   times, one second apart, and exits 255.
//!
//! Interfaces and files are named after this process (see [`crate::Lab`]) and removed on drop,
//! also when a test panics.
use std::{
    fs,
    net::Ipv6Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dhcproto::{Decodable as _, Decoder, v6};

use crate::{Dnsmasq, Lab, Netns, Vm, next_lab_id, require_tools, run, wait_for};

/// The router's guest interface and the VM's.
pub const ROUTER_IFACE: &str = "guest0";
pub const VM_IFACE: &str = "eth0";
/// The router's addresses on the guest network.
pub const ROUTER_ADDR4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(172, 29, 101, 1);
pub const ROUTER_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x29, 0x101, 0, 0, 0, 0, 1);
/// dnsmasq's DHCPv6 range (inside fd00:29:101::/64).
pub const RANGE6: (Ipv6Addr, Ipv6Addr) = (
    Ipv6Addr::new(0xfd00, 0x29, 0x101, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0xfd00, 0x29, 0x101, 0, 0, 0, 0, 0x100),
);
/// The VM's MAC. With `-D LL` dhclient's DUID is made from it (DUID-LL, type 3, hardware type
/// 1): 00:03:00:01 and the MAC, the same for every lease, so a test knows it in advance.
pub const VM_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x10, 0x00, 0x01];
/// Lease time of both ranges, seconds.
pub const LEASE_SECS: u32 = 3600;

/// A DHCPv6 binding as dnsmasq's lease file lists it, after its `duid` line:
/// `EXPIRY IAID ADDRESS HOSTNAME CLIENT-DUID` (a temporary address's IAID is prefixed `T`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6Lease {
    pub ip: Ipv6Addr,
    /// The client's DUID (its client-id option).
    pub duid: Vec<u8>,
    /// The identity association's id, which dnsmasq writes in decimal.
    pub iaid: u32,
    /// Absolute expiry, seconds since the epoch (0: never).
    pub expires: u64,
    /// `None` when dnsmasq wrote `*`.
    pub hostname: Option<String>,
    /// An IA_TA (temporary) address rather than an IA_NA one.
    pub temporary: bool,
}

/// What dnsmasq's lease file says about DHCPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V6LeaseFile {
    /// dnsmasq's own DUID, its server id (the `duid` line). dnsmasq writes the line with the
    /// first change of the file, so a file written before any lease may lack it.
    pub server_duid: Option<Vec<u8>>,
    pub leases: Vec<V6Lease>,
}

/// Parses a dnsmasq lease file: the DHCPv4 lines before the `duid` line are skipped, every line
/// after it must be a v6 binding.
pub fn parse_lease_file(text: &str) -> anyhow::Result<V6LeaseFile> {
    let mut file = V6LeaseFile::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(duid) = line.strip_prefix("duid ") {
            file.server_duid =
                Some(parse_hex(duid.trim()).with_context(|| format!("duid line {line:?}"))?);
        } else if file.server_duid.is_some() {
            file.leases
                .push(parse_v6_line(line).with_context(|| format!("v6 lease line {line:?}"))?);
        }
    }
    Ok(file)
}

fn parse_v6_line(line: &str) -> anyhow::Result<V6Lease> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [expires, iaid, ip, hostname, duid] = fields[..] else {
        bail!("{} fields, want 5", fields.len());
    };
    let (temporary, iaid) = match iaid.strip_prefix('T') {
        Some(rest) => (true, rest),
        None => (false, iaid),
    };
    Ok(V6Lease {
        ip: ip.parse().context("address")?,
        duid: if duid == "*" {
            Vec::new()
        } else {
            parse_hex(duid)?
        },
        iaid: iaid.parse().context("IAID")?,
        expires: expires.parse().context("expiry")?,
        hostname: (hostname != "*").then(|| hostname.to_owned()),
        temporary,
    })
}

/// `aa:bb:cc` (dnsmasq's and dhcp_release6's notation) to bytes.
pub fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    text.split(':')
        .map(|b| {
            anyhow::ensure!((1..=2).contains(&b.len()), "bad byte {b:?} in {text:?}");
            u8::from_str_radix(b, 16).with_context(|| format!("bad byte {b:?} in {text:?}"))
        })
        .collect()
}

/// Bytes to `aa:bb:cc`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What `dhcp-agent run` needs from a lab to run on its router: the namespace, a scratch
/// directory for its state file, and its options. Lets the agent tests' `start_run` take any
/// lab (`&impl AgentLab`) instead of only [`Lab`].
pub trait AgentLab {
    /// The router namespace the agent runs in.
    fn router(&self) -> &Netns;
    /// The lab's scratch directory (removed on drop).
    fn dir(&self) -> &Path;
    /// The options after `run`, as [`Lab::agent_run_options`].
    fn agent_run_options(&self) -> Vec<String>;
}

impl AgentLab for Lab {
    fn router(&self) -> &Netns {
        &self.router
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn agent_run_options(&self) -> Vec<String> {
        Lab::agent_run_options(self)
    }
}

impl AgentLab for V6Lab {
    fn router(&self) -> &Netns {
        &self.router
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn agent_run_options(&self) -> Vec<String> {
        V6Lab::agent_run_options(self)
    }
}

/// A running DHCPv6 lab. Dropping it stops every process and deletes namespaces and files.
pub struct V6Lab {
    pub router: Netns,
    /// The VM; `vm.boot()` gets it a DHCPv4 lease from the same dnsmasq (dhclient -4 with its
    /// own files). Its DHCPv6 client is driven by [`V6Lab::lease`] and [`V6Lab::client_release`].
    pub vm: Vm,
    pub dir: PathBuf,
    dnsmasq: Option<Dnsmasq>,
}

impl V6Lab {
    /// Builds the namespaces and the cable, and starts dnsmasq; returns once it serves.
    pub fn start() -> anyhow::Result<V6Lab> {
        require_tools(&["ip", "dnsmasq", "dhclient", "dhcp_release6"])?;
        let id = next_lab_id();
        let dir = std::env::temp_dir().join(format!("dhcp-lab-v6-{id}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let router = Netns::create(&format!("dhcpobs-r6-{id}"))?;
        let vm = new_vm(Netns::create(&format!("dhcpobs-vm6-{id}"))?, dir.join("vm"))?;
        let mut lab = V6Lab {
            router,
            vm,
            dir,
            dnsmasq: None,
        };
        build_network(&lab.router, &lab.vm)?;
        lab.start_dnsmasq()?;
        Ok(lab)
    }

    fn start_dnsmasq(&mut self) -> anyhow::Result<()> {
        let conf = self.dnsmasq_conf_file();
        fs::write(&conf, self.dnsmasq_conf()).context("writing dnsmasq.conf")?;
        let args = [
            "--keep-in-foreground".to_owned(),
            format!("--conf-file={}", conf.display()),
        ];
        let dnsmasq = Dnsmasq::spawn(
            &self.router,
            &args,
            &self.dir.join("dnsmasq.pid"),
            &self.dir.join("dnsmasq.stderr"),
        )
        .with_context(|| format!("dnsmasq: {}", self.dnsmasq_log()))?;
        self.dnsmasq = Some(dnsmasq);
        Ok(())
    }

    /// The configuration: both ranges, bound as Neutron binds (`bind-dynamic`, no
    /// `interface=`: every interface of the namespace), no DNS, files of its own, `log-dhcp`.
    pub fn dnsmasq_conf(&self) -> String {
        let d = self.dir.display();
        let (lo6, hi6) = RANGE6;
        format!(
            "# dhcp-lab: dnsmasq serving DHCPv4 and DHCPv6, bound as Neutron binds it\n\
             port=0\n\
             user=root\n\
             bind-dynamic\n\
             dhcp-range=172.29.101.100,172.29.101.200,255.255.255.0,{LEASE_SECS}\n\
             dhcp-range={lo6},{hi6},64,{LEASE_SECS}\n\
             dhcp-leasefile={d}/dnsmasq.leases\n\
             pid-file={d}/dnsmasq.pid\n\
             log-facility={d}/dnsmasq.log\n\
             log-dhcp\n"
        )
    }

    fn dnsmasq_conf_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }

    /// The router namespace's name.
    pub fn router_ns(&self) -> &str {
        self.router.name()
    }

    /// The router interface dnsmasq serves the guests on (what `dhcp_release6 --iface` names).
    pub fn guest_iface(&self) -> String {
        ROUTER_IFACE.to_owned()
    }

    /// The router's link-local address on the guest interface: the source of its DHCPv6
    /// replies and of `dhcp_release6`'s RELEASEs.
    pub fn router_link_local(&self) -> anyhow::Result<Ipv6Addr> {
        link_local(&self.router, ROUTER_IFACE).context("the router has no link-local address")
    }

    /// The VM's link-local address: the source of its DHCPv6 messages.
    pub fn vm_link_local(&self) -> anyhow::Result<Ipv6Addr> {
        link_local(&self.vm.ns, VM_IFACE).context("the VM has no link-local address")
    }

    /// The DUID the VM's dhclient uses (`-D LL`: 00:03:00:01 and the MAC).
    pub fn client_duid(&self) -> Vec<u8> {
        client_duid()
    }

    /// The VM's real client obtains a lease: `dhclient -6 -1` from scratch (SOLICIT,
    /// ADVERTISE, REQUEST, REPLY, about 2 s), which configures the address on the VM's `eth0`
    /// and stays in the background. Returns the binding as dnsmasq's lease file lists it
    /// (waiting for the file: dnsmasq rewrites it right after sending its REPLY).
    pub fn lease(&self) -> anyhow::Result<V6Lease> {
        let duid = self.client_duid();
        obtain_lease(
            &self.vm,
            || self.dnsmasq_log(),
            "dnsmasq's lease file",
            || {
                self.leases()
                    .ok()
                    .and_then(|f| f.leases.into_iter().find(|l| l.duid == duid))
            },
        )
    }

    /// Reboots the VM's client: the running `dhclient -6` is killed (SIGKILL, it sends nothing)
    /// and a new one starts with the old one's lease file, so it begins with CONFIRM (RFC 8415
    /// 18.2.3), not SOLICIT. Returns once it is bound again (dhclient -1 exits 0).
    pub fn client_reboot(&self) -> anyhow::Result<()> {
        kill_client(&self.vm)?;
        let _ = fs::remove_file(self.vm.dir.join("dhclient6.pid"));
        run(&mut dhclient6(&self.vm, &["-1"])).context("dhclient -6 after a reboot")?;
        Ok(())
    }

    /// The global IPv6 address configured on the VM's interface, if any.
    pub fn vm_address6(&self) -> anyhow::Result<Option<Ipv6Addr>> {
        vm_address6(&self.vm)
    }

    /// The client's own release: `dhclient -6 -r` with the same files stops the running
    /// dhclient (SIGTERM), sends a RELEASE (multicast, from the VM's link-local address) and
    /// waits up to about a second for the REPLY; its script removes the address. Returns once
    /// the old dhclient is gone.
    pub fn client_release(&self) -> anyhow::Result<()> {
        client_release(&self.vm)
    }

    /// dnsmasq's `dhcp_release6`, run in the router namespace as Neutron runs it:
    /// `dhcp_release6 --iface guest0 --ip IP --client-id DUID --server-id SERVER --iaid IAID`.
    /// Returns its output whatever its exit status (0: a REPLY with Success; 255: no REPLY to
    /// five RELEASEs, "Response timed out"; 3: NoBinding; 4: sendto failed).
    pub fn dhcp_release6(&self, lease: &V6Lease, server_id: &[u8]) -> anyhow::Result<Output> {
        self.dhcp_release6_on(&self.guest_iface(), lease, server_id)
    }

    /// [`V6Lab::dhcp_release6`] with another `--iface` (`lo` fails: "sendto failed: Network is
    /// unreachable", exit 4, nothing sent).
    pub fn dhcp_release6_on(
        &self,
        iface: &str,
        lease: &V6Lease,
        server_id: &[u8],
    ) -> anyhow::Result<Output> {
        dhcp_release6(&self.router, iface, lease, server_id)
    }

    /// Path of dnsmasq's lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    /// The DHCPv6 part of the lease file.
    pub fn leases(&self) -> anyhow::Result<V6LeaseFile> {
        let text = fs::read_to_string(self.lease_file()).context("reading the lease file")?;
        parse_lease_file(&text)
    }

    /// Whether the lease file lists a v6 binding of `ip`.
    pub fn lease_file_has(&self, ip: Ipv6Addr) -> bool {
        self.leases()
            .is_ok_and(|f| f.leases.iter().any(|l| l.ip == ip))
    }

    /// dnsmasq's DUID, from its lease file's `duid` line. dnsmasq writes that line with the
    /// first change to the file, so it is there once [`V6Lab::lease`] has returned; before,
    /// this fails.
    pub fn server_duid(&self) -> anyhow::Result<Vec<u8>> {
        self.leases()?
            .server_duid
            .context("the lease file has no duid line yet (no DHCPv6 lease so far)")
    }

    /// The options every `dhcp-agent run` on this lab's router gets, after `run` (as
    /// [`Lab::agent_run_options`]): JSON events, the guest interface and `lo` (a
    /// `dhcp_release6` RELEASE leaves on guest0, dnsmasq's REPLY to it arrives on lo), a 2 s
    /// grace (dnsmasq answers a `dhcp_release6` after ~0.5 s; 1 s is `dhcp_release6`'s own
    /// retry interval, too close under load), the lease file, dnsmasq's configuration, and a
    /// 1 s settle time. The state file and anything else are the caller's.
    pub fn agent_run_options(&self) -> Vec<String> {
        crate::agent_run_options(
            "2s",
            self.lease_file().to_string_lossy().into_owned(),
            &[(
                "--dnsmasq-conf",
                self.dnsmasq_conf_file().to_string_lossy().into_owned(),
            )],
        )
    }

    /// dnsmasq's log so far (and its stderr).
    pub fn dnsmasq_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("dnsmasq.stderr")).unwrap_or_default();
        format!("{log}{stderr}")
    }

    /// Whether dnsmasq still runs.
    pub fn dnsmasq_running(&self) -> bool {
        self.dnsmasq.as_ref().is_some_and(Dnsmasq::running)
    }

    /// Starts capturing DHCPv6 on the router: the guest interface both ways, and what arrives
    /// on `lo` (each frame on `lo` passes twice, out and in; only the arrival is kept, as the
    /// agent's `lo` hook is ingress only).
    pub fn capture(&self) -> anyhow::Result<Capture> {
        Capture::start(&self.router, &[ROUTER_IFACE, "lo"])
    }
}

impl Drop for V6Lab {
    fn drop(&mut self) {
        let _ = kill_client(&self.vm);
        self.vm.stop();
        drop(self.dnsmasq.take());
        // The namespaces are deleted by their own Drop (killing anything left inside).
        if std::env::var_os("DHCP_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// The guest cable and the VM's `dhclient -6`, shared by both DHCPv6 labs: this one (dnsmasq)
// and `kea6` (Kea). Every function takes the lab's router namespace and its VM.

/// The VM of a DHCPv6 lab: its namespace `ns`, MAC [`VM_MAC`], interface [`VM_IFACE`], and a
/// scratch directory `dir` (created) with both dhclient scripts.
pub(crate) fn new_vm(ns: Netns, dir: PathBuf) -> anyhow::Result<Vm> {
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::write_dhclient_script(&dir.join("dhclient-script"))?;
    write_dhclient6_script(&dir.join("dhclient6-script"))?;
    Ok(Vm {
        ns,
        mac: hex(&VM_MAC),
        iface: VM_IFACE.to_owned(),
        dir,
    })
}

/// Builds the guest cable of a DHCPv6 lab: IPv6 on and duplicate address detection off in both
/// namespaces, `lo` up, the veth pair (the VM's end with [`VM_MAC`]), [`ROUTER_ADDR4`]/24 and
/// [`ROUTER_ADDR6`]/64 on the router's end; returns once both link-local addresses are usable.
pub(crate) fn build_network(router: &Netns, vm: &Vm) -> anyhow::Result<()> {
    let (r, vm_ns) = (router, &vm.ns);
    for ns in [r, vm_ns] {
        // Duplicate address detection would keep every new address "tentative" (unusable,
        // not even as a source) for about a second; nothing else is on this cable.
        // /proc/sys/net is the writing thread's namespace's: no sysctl(8) needed.
        ns.run_inside(|| -> anyhow::Result<()> {
            for (key, value) in [
                ("all/disable_ipv6", "0"),
                ("default/disable_ipv6", "0"),
                ("all/accept_dad", "0"),
                ("default/accept_dad", "0"),
            ] {
                let path = format!("/proc/sys/net/ipv6/conf/{key}");
                fs::write(&path, value).with_context(|| format!("writing {path}"))?;
            }
            Ok(())
        })??;
        ns.ip(&["link", "set", "lo", "up"])?;
    }
    crate::netns::veth_pair(r, ROUTER_IFACE, vm_ns, VM_IFACE)?;
    vm_ns.ip(&["link", "set", VM_IFACE, "address", &vm.mac, "up"])?;
    r.ip(&["link", "set", ROUTER_IFACE, "up"])?;
    r.ip(&[
        "addr",
        "add",
        &format!("{ROUTER_ADDR4}/24"),
        "dev",
        ROUTER_IFACE,
    ])?;
    r.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ROUTER_ADDR6}/64"),
        "dev",
        ROUTER_IFACE,
        "nodad",
    ])?;
    // The link-local addresses appear once the link is up; DHCPv6 runs on them (the client
    // sends from its own, the server answers from the router's).
    wait_for(Duration::from_secs(5), || {
        link_local(r, ROUTER_IFACE).is_some() && link_local(vm_ns, VM_IFACE).is_some()
    })
    .context("no usable link-local addresses on the guest cable")
}

/// The DUID the VM's dhclient uses (`-D LL`: 00:03:00:01 and [`VM_MAC`]).
pub(crate) fn client_duid() -> Vec<u8> {
    [0, 3, 0, 1].into_iter().chain(VM_MAC).collect()
}

/// `dhclient -6 -D LL -v` on the VM's interface with the VM's own script, lease and pid files.
pub(crate) fn dhclient6(vm: &Vm, extra: &[&str]) -> Command {
    let d = &vm.dir;
    let mut cmd = vm.ns.command("dhclient");
    cmd.args(["-6", "-D", "LL", "-v", "-sf"])
        .arg(d.join("dhclient6-script"))
        .arg("-lf")
        .arg(d.join("dhclient6.leases"))
        .arg("-pf")
        .arg(d.join("dhclient6.pid"))
        .args(extra)
        .arg(VM_IFACE)
        .stdin(Stdio::null());
    cmd
}

/// The pid of the VM's backgrounded `dhclient -6`, if one runs.
pub(crate) fn client_pid(vm: &Vm) -> Option<libc::pid_t> {
    let text = fs::read_to_string(vm.dir.join("dhclient6.pid")).ok()?;
    let pid = text.trim().parse().ok()?;
    process_alive(pid).then_some(pid)
}

/// Kills a running `dhclient -6` (SIGKILL: it sends nothing) and waits for it to go.
pub(crate) fn kill_client(vm: &Vm) -> anyhow::Result<()> {
    if let Some(pid) = client_pid(vm) {
        // SAFETY: kill(2) on a pid read from dhclient's pid file, checked alive just above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_for(Duration::from_secs(5), || !process_alive(pid))
            .context("the old dhclient -6 did not die")?;
    }
    Ok(())
}

/// Stops a running `dhclient -6` without letting it send anything (SIGKILL) and forgets its
/// lease, so the next one starts from SOLICIT: a client that still has a lease in its file
/// starts with CONFIRM instead, which dnsmasq 2.90 answers Success from its ranges alone,
/// binding or not (`rfc3315.c`, DHCP6CONFIRM uses only `address6_valid`).
pub(crate) fn reset_client(vm: &Vm) -> anyhow::Result<()> {
    kill_client(vm)?;
    for file in ["dhclient6.pid", "dhclient6.leases"] {
        match fs::remove_file(vm.dir.join(file)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {file}"));
            }
            _ => {}
        }
    }
    vm.ns
        .ip(&["-6", "addr", "flush", "dev", VM_IFACE, "scope", "global"])
        .map(drop)
}

/// The VM's real client obtains a lease from scratch ([`reset_client`], then `dhclient -6 -1`:
/// SOLICIT, ADVERTISE, REQUEST, REPLY), which configures the address on the VM's `eth0` and
/// stays in the background. Then waits (5 s) for `find` to return the server's binding (named
/// `listing` in errors; `server_log` is added to them) and for its address on the VM.
pub(crate) fn obtain_lease(
    vm: &Vm,
    server_log: impl Fn() -> String,
    listing: &str,
    mut find: impl FnMut() -> Option<V6Lease>,
) -> anyhow::Result<V6Lease> {
    reset_client(vm)?;
    run(&mut dhclient6(vm, &["-1"]))
        .with_context(|| format!("dhclient -6; the server says: {}", server_log()))?;
    let mut found = None;
    wait_for(Duration::from_secs(5), || {
        found = find();
        found.is_some()
    })
    .with_context(|| format!("dhclient -6 is bound but {listing} lists no binding for it"))?;
    let lease = found.context("no lease")?;
    wait_for(Duration::from_secs(5), || {
        vm_address6(vm).ok().flatten() == Some(lease.ip)
    })
    .with_context(|| format!("{} is not configured on the VM", lease.ip))?;
    Ok(lease)
}

/// The global IPv6 address configured on the VM's interface, if any.
pub(crate) fn vm_address6(vm: &Vm) -> anyhow::Result<Option<Ipv6Addr>> {
    let out = vm.ns.ip(&[
        "-6", "-o", "addr", "show", "dev", VM_IFACE, "scope", "global",
    ])?;
    Ok(first_inet6(&out))
}

/// `dhclient -6 -r` with the VM's files: stops the running dhclient (SIGTERM), sends a RELEASE
/// (multicast, from the VM's link-local address) and waits up to about a second for the
/// REPLY; its script removes the address. Returns once the old dhclient is gone.
pub(crate) fn client_release(vm: &Vm) -> anyhow::Result<()> {
    let pid = client_pid(vm);
    run(&mut dhclient6(vm, &["-r"])).context("dhclient -6 -r")?;
    if let Some(pid) = pid {
        wait_for(Duration::from_secs(5), || !process_alive(pid))
            .context("dhclient -6 -r left the old dhclient running")?;
    }
    Ok(())
}

/// dnsmasq's `dhcp_release6` in `router`: `dhcp_release6 --iface IFACE --ip IP --client-id
/// DUID --server-id SERVER --iaid IAID` from `lease`. Returns its output whatever its exit
/// status.
pub(crate) fn dhcp_release6(
    router: &Netns,
    iface: &str,
    lease: &V6Lease,
    server_id: &[u8],
) -> anyhow::Result<Output> {
    router
        .command("dhcp_release6")
        .args(["--iface", iface, "--ip", &lease.ip.to_string()])
        .args(["--client-id", &hex(&lease.duid)])
        .args(["--server-id", &hex(server_id)])
        .args(["--iaid", &lease.iaid.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running dhcp_release6")
}

/// The first `inet6 ADDR/LEN` of `ip -o addr` output.
fn first_inet6(out: &str) -> Option<Ipv6Addr> {
    out.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
}

/// The usable (not tentative) link-local address of `iface` in `ns`.
pub(crate) fn link_local(ns: &Netns, iface: &str) -> Option<Ipv6Addr> {
    let out = ns
        .ip(&["-6", "-o", "addr", "show", "dev", iface, "scope", "link"])
        .ok()?;
    out.lines()
        .find(|l| !l.contains("tentative"))
        .and_then(first_inet6)
}

/// Whether `pid` exists and is not a zombie (dhclient daemonizes; this sandbox's init may
/// leave it unreaped).
fn process_alive(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// dhclient -6's hook: put the leased address on the interface, take it off on release. Never
/// touches resolv.conf. dhclient passes `new_ip6_address`/`new_ip6_prefixlen` (128 for an
/// IA_NA address) and `old_ip6_*` on RELEASE6/EXPIRE6/STOP6.
fn write_dhclient6_script(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let script = r#"#!/bin/sh
# dhcp-lab dhclient -6 script: set the leased address on the interface and nothing else.
case "$reason" in
  BOUND6|RENEW6|REBIND6|REBOOT6)
    if [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ]; then
      ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface"
    fi
    if [ -n "$new_ip6_address" ]; then
      ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad
    fi ;;
  EXPIRE6|RELEASE6|STOP6)
    if [ -n "$old_ip6_address" ]; then
      ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface"
    fi ;;
esac
exit 0
"#;
    fs::write(path, script)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Which way a captured frame went through its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Arrived on the interface (what a TC ingress hook sees).
    In,
    /// Left through it (what a TC egress hook sees).
    Out,
}

/// The parts of a DHCPv6 message the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv6Message {
    /// Message type code: 1 SOLICIT, 2 ADVERTISE, 3 REQUEST, 7 REPLY, 8 RELEASE, ...
    pub msg_type: u8,
    pub xid: u32,
    pub client_id: Option<Vec<u8>>,
    pub server_id: Option<Vec<u8>>,
    /// The top-level status code, if any.
    pub status: Option<u16>,
    /// Each IA_NA: its IAID, its addresses, its own status code if any.
    pub ia_na: Vec<(u32, Vec<Ipv6Addr>, Option<u16>)>,
}

pub const SOLICIT: u8 = 1;
pub const ADVERTISE: u8 = 2;
pub const REQUEST: u8 = 3;
pub const REPLY: u8 = 7;
pub const RELEASE: u8 = 8;
/// Status codes (RFC 8415 21.13).
pub const STATUS_SUCCESS: u16 = 0;
pub const STATUS_NO_BINDING: u16 = 3;

impl Dhcpv6Message {
    /// Decodes a DHCPv6 client/server message (UDP payload).
    pub fn decode(payload: &[u8]) -> anyhow::Result<Dhcpv6Message> {
        let msg = v6::Message::decode(&mut Decoder::new(payload))
            .map_err(|e| anyhow::anyhow!("not a DHCPv6 message: {e}"))?;
        let status = |opts: &v6::DhcpOptions| match opts.get(v6::OptionCode::StatusCode) {
            Some(v6::DhcpOption::StatusCode(s)) => Some(u16::from(s.status)),
            _ => None,
        };
        let bytes = |code| match msg.opts().get(code) {
            Some(v6::DhcpOption::ClientId(b) | v6::DhcpOption::ServerId(b)) => Some(b.clone()),
            _ => None,
        };
        let ia_na = msg
            .opts()
            .iter()
            .filter_map(|o| match o {
                v6::DhcpOption::IANA(ia) => Some(ia),
                _ => None,
            })
            .map(|ia| {
                let addrs = ia
                    .opts
                    .iter()
                    .filter_map(|o| match o {
                        v6::DhcpOption::IAAddr(a) => Some(a.addr),
                        _ => None,
                    })
                    .collect();
                (ia.id, addrs, status(&ia.opts))
            })
            .collect();
        Ok(Dhcpv6Message {
            msg_type: u8::from(msg.msg_type()),
            xid: msg.xid_num(),
            client_id: bytes(v6::OptionCode::ClientId),
            server_id: bytes(v6::OptionCode::ServerId),
            status: status(msg.opts()),
            ia_na,
        })
    }
}

/// A DHCPv6 packet seen by a [`Capture`].
#[derive(Debug, Clone)]
pub struct Captured {
    pub iface: String,
    pub direction: Direction,
    /// Since the capture started.
    pub at: Duration,
    /// When it was read (to compare with file times).
    pub wall: std::time::SystemTime,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub message: Dhcpv6Message,
}

/// A packet capture (AF_PACKET sockets, as tcpdump's) of DHCPv6 (UDP 546/547 over IPv6) on
/// some interfaces of a namespace, running on a thread of its own until stopped. Packet sockets
/// see frames where the agent's TC hooks do: a frame sent on an interface (egress) and one
/// received on it (ingress). They do not see the copy of its own multicast the kernel loops back
/// to local listeners (PACKET_LOOPBACK), and neither do the TC hooks (seen with the agent's
/// `watch` in tests/dhcpv6.rs).
pub struct Capture {
    packets: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Capture {
    /// Opens one packet socket per interface inside `ns` and starts reading them. On `lo` only
    /// arrivals are kept (every frame on `lo` is both sent and received there).
    pub fn start(ns: &Netns, ifaces: &[&str]) -> anyhow::Result<Capture> {
        let ifaces: Vec<String> = ifaces.iter().map(|s| (*s).to_owned()).collect();
        let sockets = ns.run_inside(|| -> anyhow::Result<Vec<(String, OwnedFd)>> {
            ifaces
                .iter()
                .map(|iface| Ok((iface.clone(), packet_socket(iface)?)))
                .collect()
        })??;
        let packets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (packets, stop) = (Arc::clone(&packets), Arc::clone(&stop));
            thread::spawn(move || read_sockets(&sockets, &packets, &stop))
        };
        Ok(Capture {
            packets,
            stop,
            worker: Some(worker),
        })
    }

    /// The packets so far.
    pub fn packets(&self) -> Vec<Captured> {
        self.packets.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Stops reading; returns every packet seen.
    pub fn stop(mut self) -> Vec<Captured> {
        self.halt();
        self.packets()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
    }
}

/// An AF_PACKET socket receiving every frame of `iface` (in the calling thread's namespace).
fn packet_socket(iface: &str) -> anyhow::Result<OwnedFd> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface}: {}", std::io::Error::last_os_error());
    }
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = i32::try_from(ifindex)?;
    // SAFETY: bind(2) with a sockaddr_ll of the right size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("bind to {iface}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn read_sockets(sockets: &[(String, OwnedFd)], packets: &Mutex<Vec<Captured>>, stop: &AtomicBool) {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|(_, fd)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: poll(2) on our own pollfd array.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if ready <= 0 {
            continue;
        }
        for (i, (iface, fd)) in sockets.iter().enumerate() {
            if fds[i].revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                // SAFETY: sockaddr_ll is plain data.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: recvfrom(2) into our buffer and address, sizes given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast(),
                        &mut len,
                    )
                };
                let Ok(n) = usize::try_from(n) else { break };
                let direction = if from.sll_pkttype == libc::PACKET_OUTGOING {
                    Direction::Out
                } else {
                    Direction::In
                };
                if iface == "lo" && direction == Direction::Out {
                    continue;
                }
                if let Some(packet) = dhcpv6_frame(iface, direction, start.elapsed(), &buf[..n])
                    && let Ok(mut all) = packets.lock()
                {
                    all.push(packet);
                }
            }
        }
    }
}

/// The DHCPv6 packet in an Ethernet frame (UDP to or from 546/547 over IPv6), if it is one.
fn dhcpv6_frame(iface: &str, direction: Direction, at: Duration, frame: &[u8]) -> Option<Captured> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv6(ip)) = sliced.net else {
        return None;
    };
    let Some(TransportSlice::Udp(udp)) = sliced.transport else {
        return None;
    };
    let ports = (udp.source_port(), udp.destination_port());
    if ![546, 547].contains(&ports.0) && ![546, 547].contains(&ports.1) {
        return None;
    }
    Some(Captured {
        iface: iface.to_owned(),
        direction,
        at,
        wall: std::time::SystemTime::now(),
        src: ip.header().source_addr(),
        dst: ip.header().destination_addr(),
        src_port: ports.0,
        dst_port: ports.1,
        message: Dhcpv6Message::decode(udp.payload()).ok()?,
    })
}

/// The captured DHCPv6 messages of type `ty` seen on `iface` in direction `dir`.
pub fn captured<'a>(
    packets: &'a [Captured],
    iface: &str,
    dir: Direction,
    ty: u8,
) -> Vec<&'a Captured> {
    packets
        .iter()
        .filter(|p| p.iface == iface && p.direction == dir && p.message.msg_type == ty)
        .collect()
}

/// The captured messages one per line, for a failing test's message.
pub fn dump(packets: &[Captured]) -> String {
    packets
        .iter()
        .map(|p| {
            format!(
                "{:>8.3}s {} {:?} {} -> {} {}->{} {:?}",
                p.at.as_secs_f64(),
                p.iface,
                p.direction,
                p.src,
                p.dst,
                p.src_port,
                p.dst_port,
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as dnsmasq 2.90 wrote it in the lab: a v4 lease, the duid line, a v6 binding.
    const FILE: &str = "1796241218 52:54:00:10:00:01 172.29.101.150 vm1 01:52:54:00:10:00:01\n\
        duid 00:01:00:01:32:a3:25:27:3a:a5:21:2c:d3:d1\n\
        1796241218 1048577 fd00:29:101::eb * 00:03:00:01:52:54:00:10:00:01\n\
        0 T7 fd00:29:101::77 host7 *\n";

    #[test]
    fn parses_the_v6_part_of_a_lease_file() {
        let file = parse_lease_file(FILE).unwrap();
        assert_eq!(
            file.server_duid.as_deref(),
            Some(
                &[
                    0, 1, 0, 1, 0x32, 0xa3, 0x25, 0x27, 0x3a, 0xa5, 0x21, 0x2c, 0xd3, 0xd1
                ][..]
            )
        );
        assert_eq!(
            file.leases,
            [
                V6Lease {
                    ip: "fd00:29:101::eb".parse().unwrap(),
                    duid: vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x10, 0, 1],
                    iaid: 1_048_577,
                    expires: 1_796_241_218,
                    hostname: None,
                    temporary: false,
                },
                V6Lease {
                    ip: "fd00:29:101::77".parse().unwrap(),
                    duid: vec![],
                    iaid: 7,
                    expires: 0,
                    hostname: Some("host7".into()),
                    temporary: true,
                },
            ]
        );
    }

    #[test]
    fn a_file_without_duid_line_has_no_v6_bindings() {
        let file = parse_lease_file("1796241218 52:54:00:10:00:01 172.29.101.150 * *\n").unwrap();
        assert_eq!(file, V6LeaseFile::default());
        assert_eq!(parse_lease_file("").unwrap(), V6LeaseFile::default());
    }

    #[test]
    fn rejects_broken_v6_lines() {
        for bad in [
            "duid 00:zz",
            "duid 00:01\n1 2 fd00::1 *",
            "duid 00:01\nx 2 fd00::1 * 00:01",
            "duid 00:01\n1 2 not-an-ip * 00:01",
            "duid 00:01\n1 99999999999 fd00::1 * 00:01",
            "duid 00:01\n1 2 fd00::1 * 0001",
        ] {
            assert!(parse_lease_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "00:01:ab:ff");
        assert_eq!(parse_hex("00:01:ab:ff").unwrap(), bytes);
        assert_eq!(
            parse_hex("0:1:ab:ff").unwrap(),
            bytes,
            "dhclient's short form"
        );
        assert!(parse_hex("").is_err());
    }

    #[test]
    fn decodes_dnsmasqs_no_binding_reply() {
        // REPLY xid 0: client-id, server-id, IA_NA{IAADDR, status 3}, status 0, as dnsmasq 2.90
        // answers a RELEASE of an address it has no binding for (rfc3315.c, DHCP6RELEASE).
        let mut msg = v6::Message::new_with_id(v6::MessageType::Reply, [0, 0, 0]);
        let mut ia_opts = v6::DhcpOptions::new();
        ia_opts.insert(v6::DhcpOption::IAAddr(v6::IAAddr {
            addr: "fd00:29:101::eb".parse().unwrap(),
            preferred_life: 0,
            valid_life: 0,
            opts: v6::DhcpOptions::new(),
        }));
        ia_opts.insert(v6::DhcpOption::StatusCode(v6::StatusCode {
            status: v6::Status::NoBinding,
            msg: "no binding found".into(),
        }));
        let opts = msg.opts_mut();
        opts.insert(v6::DhcpOption::ClientId(vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6]));
        opts.insert(v6::DhcpOption::ServerId(vec![0, 1, 0, 1, 9]));
        opts.insert(v6::DhcpOption::IANA(v6::IANA {
            id: 1_048_577,
            t1: 0,
            t2: 0,
            opts: ia_opts,
        }));
        opts.insert(v6::DhcpOption::StatusCode(v6::StatusCode {
            status: v6::Status::Success,
            msg: "release received".into(),
        }));
        let mut bytes = Vec::new();
        dhcproto::Encodable::encode(&msg, &mut dhcproto::Encoder::new(&mut bytes)).unwrap();
        let got = Dhcpv6Message::decode(&bytes).unwrap();
        assert_eq!(got.msg_type, REPLY);
        assert_eq!(got.xid, 0);
        assert_eq!(got.server_id.as_deref(), Some(&[0, 1, 0, 1, 9][..]));
        assert_eq!(got.status, Some(STATUS_SUCCESS));
        assert_eq!(
            got.ia_na,
            [(
                1_048_577,
                vec!["fd00:29:101::eb".parse().unwrap()],
                Some(STATUS_NO_BINDING)
            )]
        );
        assert!(Dhcpv6Message::decode(&[7]).is_err());
    }
}
