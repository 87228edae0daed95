//! A router running ISC Kea's DHCPv4 server (Debian 12's `kea-dhcp4-server` 2.2) instead of
//! dnsmasq, as VyOS, OPNsense and pfSense routers now do:
//!
//! ```text
//!   vm namespace                         router namespace
//!   eth0 (dhclient) <--- veth ---> guest0: 172.29.101.1/24
//!                                  lo:     127.0.0.1
//!                                  kea-dhcp4 -c <lab>/kea-dhcp4.conf
//!                                    interfaces: guest0 only
//!                                    memfile <lab>/kea-leases4.csv (persist, no LFC)
//!                                    lease_cmds hook, control socket <lab>/kea4.sock
//! ```
//!
//! Kea runs as our child in the foreground, with its own configuration, lease file, log, pid
//! and lock directories (`KEA_PIDFILE_DIR`, `KEA_LOCKFILE_DIR`): the host's Kea service (which
//! the package installs, and `cargo xtask setup` never lets start) is never touched. Dropping
//! the lab stops Kea and dhclient and deletes the namespaces and the scratch directory, also
//! when a test fails.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{Netns, ROUTER_IFACE, VM_IFACE, Vm, netns, next_lab_id, run, wait_for};

/// The router's only address on the guest network: Kea's server id there (Kea answers with
/// the address of the interface it received on).
pub const KEA_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
/// An address of no server in the lab: the other router of a redundant pair, say.
pub const OTHER_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);
/// The pool Kea hands addresses from.
pub const KEA_POOL: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(172, 29, 101, 100),
    Ipv4Addr::new(172, 29, 101, 200),
);
/// Kea's id of the lab's one subnet.
pub const KEA_SUBNET_ID: u32 = 1;
/// Where Debian 12's kea-common puts the `lease_cmds` hook (`dpkg -L kea-common`).
pub const LEASE_CMDS_HOOK: &str = "/usr/lib/x86_64-linux-gnu/kea/hooks/libdhcp_lease_cmds.so";

/// Shape of a Kea lab.
#[derive(Debug, Clone)]
pub struct KeaLabConfig {
    /// Load `libdhcp_lease_cmds.so` (without it Kea answers lease commands with result 2).
    pub lease_cmds: bool,
    /// Open the control socket.
    pub control_socket: bool,
    /// Lease time, seconds.
    pub lease_secs: u32,
    /// Host reservations in the subnet: MAC and address (outside the pool, as an
    /// orchestrator's fixed addresses are).
    pub reservations: Vec<(String, Ipv4Addr)>,
}

impl Default for KeaLabConfig {
    fn default() -> Self {
        KeaLabConfig {
            lease_cmds: true,
            control_socket: true,
            lease_secs: 3600,
            reservations: Vec::new(),
        }
    }
}

/// A running Kea lab; see the module documentation.
pub struct KeaLab {
    pub router: Netns,
    pub vm: Vm,
    pub config: KeaLabConfig,
    pub dir: PathBuf,
    kea: Option<Child>,
}

impl KeaLab {
    pub fn start(config: KeaLabConfig) -> anyhow::Result<KeaLab> {
        crate::require_tools(&["ip", "kea-dhcp4", "dhclient"])?;
        if config.lease_cmds && !Path::new(LEASE_CMDS_HOOK).exists() {
            bail!("{LEASE_CMDS_HOOK} is missing (run `cargo xtask setup`)");
        }
        let id = next_lab_id();
        let dir = std::env::temp_dir().join(format!("dhcp-kea-lab-{id}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let router = Netns::create(&format!("dhcpobs-kr-{id}"))?;
        let vm_ns = Netns::create(&format!("dhcpobs-kvm-{id}"))?;
        let vm_dir = dir.join("vm");
        fs::create_dir_all(&vm_dir)?;
        crate::write_dhclient_script(&vm_dir.join("dhclient-script"))?;
        let vm = Vm {
            ns: vm_ns,
            mac: "52:54:00:20:00:01".into(),
            iface: VM_IFACE.to_owned(),
            dir: vm_dir,
        };
        let mut lab = KeaLab {
            router,
            vm,
            config,
            dir,
            kea: None,
        };
        lab.build_network()?;
        lab.start_kea()?;
        Ok(lab)
    }

    fn build_network(&self) -> anyhow::Result<()> {
        let (r, vm) = (&self.router, &self.vm);
        r.ip(&["link", "set", "lo", "up"])?;
        vm.ns.ip(&["link", "set", "lo", "up"])?;
        netns::veth_pair(r, ROUTER_IFACE, &vm.ns, VM_IFACE)?;
        vm.ns.ip(&["link", "set", VM_IFACE, "address", &vm.mac])?;
        vm.ns.ip(&["link", "set", VM_IFACE, "up"])?;
        r.ip(&["link", "set", ROUTER_IFACE, "up"])?;
        r.ip(&[
            "addr",
            "add",
            &format!("{KEA_SERVER_ADDR}/24"),
            "dev",
            ROUTER_IFACE,
        ])?;
        Ok(())
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("kea-dhcp4.conf")
    }

    /// Kea's memfile lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("kea-leases4.csv")
    }

    /// Kea's control socket (a unix stream socket).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("kea4.sock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("kea-dhcp4.log")
    }

    /// Kea's configuration: the guest interface only, a memfile of its own written on every
    /// change (`persist`) and never rewritten by the LFC (`lfc-interval` 0), the `lease_cmds`
    /// hook and the control socket, and a debug log where every drop is named.
    pub fn kea_conf(&self) -> String {
        let mut dhcp4 = serde_json::json!({
            "interfaces-config": { "interfaces": [ROUTER_IFACE] },
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": self.lease_file(),
                "lfc-interval": 0,
            },
            "valid-lifetime": self.config.lease_secs,
            "renew-timer": self.config.lease_secs / 2,
            "rebind-timer": self.config.lease_secs * 7 / 8,
            "subnet4": [{
                "id": KEA_SUBNET_ID,
                "subnet": "172.29.101.0/24",
                "pools": [{ "pool": format!("{} - {}", KEA_POOL.0, KEA_POOL.1) }],
                "reservations": self.config.reservations.iter().map(|(mac, ip)| {
                    serde_json::json!({ "hw-address": mac, "ip-address": ip.to_string() })
                }).collect::<Vec<_>>(),
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{ "output": self.log_file() }],
                "severity": "DEBUG",
                // 55: DHCP4_PACKET_DROP_*, DHCP4_RELEASE_FAIL_* and the packets received
                // (DBG_DHCP4_DETAIL is 50, DBGLVL_PKT_HANDLING 15).
                "debuglevel": 55,
            }],
        });
        if self.config.control_socket {
            dhcp4["control-socket"] = serde_json::json!({
                "socket-type": "unix",
                "socket-name": self.control_socket(),
            });
        }
        if self.config.lease_cmds {
            dhcp4["hooks-libraries"] = serde_json::json!([{ "library": LEASE_CMDS_HOOK }]);
        }
        serde_json::to_string_pretty(&serde_json::json!({ "Dhcp4": dhcp4 }))
            .expect("JSON values serialize")
    }

    /// Writes Kea's configuration again with these reservations (an orchestrator dropping a
    /// deleted VM's) and has Kea read it (`config-reload`).
    pub fn set_reservations(
        &mut self,
        reservations: Vec<(String, Ipv4Addr)>,
    ) -> anyhow::Result<()> {
        self.config.reservations = reservations;
        fs::write(self.conf_path(), self.kea_conf()).context("writing kea-dhcp4.conf")?;
        if self.config.control_socket {
            let answer = self.command(r#"{ "command": "config-reload" }"#)?;
            let value: serde_json::Value = serde_json::from_str(&answer)
                .with_context(|| format!("Kea's answer {answer:?}"))?;
            if value["result"].as_i64() != Some(0) {
                bail!("config-reload: {answer}");
            }
        }
        Ok(())
    }

    fn start_kea(&mut self) -> anyhow::Result<()> {
        fs::write(self.conf_path(), self.kea_conf()).context("writing kea-dhcp4.conf")?;
        let mut child = spawn_kea(&self.router, "kea-dhcp4", &self.conf_path(), &self.dir)?;
        let socket = self.config.control_socket.then(|| self.control_socket());
        let started = wait_kea_started(
            &mut child,
            "kea-dhcp4",
            "DHCP4_STARTED",
            socket.as_deref(),
            || self.log(),
            || self.kea_output(),
        );
        // Kept also when it failed: dropping the lab kills it.
        self.kea = Some(child);
        started
    }

    /// Stops Kea (SIGTERM) and waits for it.
    pub fn stop_kea(&mut self) -> anyhow::Result<()> {
        let mut child = self.kea.take().context("kea-dhcp4 is not running")?;
        let pid = libc::pid_t::try_from(child.id()).context("kea's pid")?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("SIGTERM to kea: {}", std::io::Error::last_os_error());
        }
        child.wait().context("waiting for kea-dhcp4 to exit")?;
        Ok(())
    }

    /// Kea's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Kea's log, stdout and stderr (for failure messages).
    pub fn kea_output(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}{}", self.log(), read("kea.stdout"), read("kea.stderr"))
    }

    /// Waits until Kea's log has a line containing every one of `parts`; returns it.
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> anyhow::Result<String> {
        wait_log_line(|| self.log(), parts, timeout)
    }

    /// One command on Kea's control socket, from the router namespace's view of the file
    /// system (a unix socket needs no namespace); returns Kea's answer as it sent it.
    pub fn command(&self, json: &str) -> anyhow::Result<String> {
        control_command(&self.control_socket(), json)
    }

    /// Whether Kea holds a lease for `ip` in memory, asked with `lease4-get`.
    pub fn kea_holds(&self, ip: Ipv4Addr) -> anyhow::Result<bool> {
        let answer = self.command(&format!(
            r#"{{"command":"lease4-get","arguments":{{"ip-address":"{ip}"}}}}"#
        ))?;
        let value: serde_json::Value =
            serde_json::from_str(&answer).with_context(|| format!("Kea's answer {answer:?}"))?;
        match value["result"].as_i64() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => bail!("lease4-get: {answer}"),
        }
    }

    /// The last row the lease file has for `ip`, if any (Kea appends one per change).
    pub fn last_lease_row(&self, ip: Ipv4Addr) -> Option<String> {
        let text = fs::read_to_string(self.lease_file()).ok()?;
        let prefix = format!("{ip},");
        text.lines()
            .rfind(|l| l.starts_with(&prefix))
            .map(str::to_owned)
    }

    /// Whether the lease file's last row for `ip` is a live lease (`valid_lifetime`, the
    /// fourth column, not 0: Kea appends a row with 0 when a lease is deleted or released).
    pub fn lease_file_has(&self, ip: Ipv4Addr) -> bool {
        self.last_lease_row(ip)
            .is_some_and(|row| row.split(',').nth(3).is_some_and(|l| l != "0"))
    }

    /// The real `dhcp_release IFACE IP MAC` on the router, as CloudStack and Neutron run it:
    /// to the interface's address, which travels over `lo`.
    pub fn dhcp_release(&self, ip: Ipv4Addr, mac: &str) -> anyhow::Result<()> {
        run(self
            .router
            .command("dhcp_release")
            .args([ROUTER_IFACE, &ip.to_string(), mac]))
        .map(drop)
    }

    /// Sends a DHCP message (`payload`, a UDP payload) from the VM, from its address `from`
    /// to Kea's address port 67, over the guest network, as a client's unicast
    /// RELEASE travels (from an ephemeral port: dhclient holds 68).
    pub fn send_from_vm(&self, from: Ipv4Addr, payload: &[u8]) -> anyhow::Result<()> {
        self.vm
            .ns
            .run_inside(|| -> std::io::Result<()> {
                // Port 68 is dhclient's; Kea does not look at the source port.
                let socket = std::net::UdpSocket::bind((from, 0))?;
                socket.send_to(payload, (KEA_SERVER_ADDR, 67)).map(drop)
            })?
            .context("sending from the VM")
    }

    /// Sends a DHCP message from the router itself to `to` port 67: over `lo`, as
    /// `dhcp_release` and the dnsmasq repair do.
    pub fn send_on_router(&self, to: Ipv4Addr, payload: &[u8]) -> anyhow::Result<()> {
        self.router
            .run_inside(|| -> std::io::Result<()> {
                let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                socket.send_to(payload, (to, 67)).map(drop)
            })?
            .context("sending on the router")
    }

    /// The options every `dhcp-agent run` on this lab's router gets, after `run`: JSON events,
    /// the guest interface and `lo`, a 1 s grace and settle time, the Kea lease file, format
    /// and configuration. The state file and anything else are the caller's.
    pub fn agent_run_options(&self) -> Vec<String> {
        crate::agent_run_options(
            "1s",
            self.lease_file().to_string_lossy().into_owned(),
            &[
                ("--lease-format", "kea-v4".to_owned()),
                (
                    "--kea-conf",
                    self.conf_path().to_string_lossy().into_owned(),
                ),
            ],
        )
    }
}

impl crate::v6::AgentLab for KeaLab {
    fn router(&self) -> &Netns {
        &self.router
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn agent_run_options(&self) -> Vec<String> {
        KeaLab::agent_run_options(self)
    }
}

impl Drop for KeaLab {
    fn drop(&mut self) {
        self.vm.stop();
        if let Some(mut child) = self.kea.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The namespaces are deleted by their own Drop.
        if std::env::var_os("DHCP_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends one command to the Kea control socket at `socket` and reads the answer: Kea 2.2
/// writes one JSON object and closes the connection.
pub fn control_command(socket: &Path, json: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(json.as_bytes())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading Kea's answer on {}", socket.display()))?;
    Ok(answer)
}

/// Starts `program` (`kea-dhcp4`, `kea-dhcp6`) in `router` in the foreground with `-c conf`,
/// its pid and lock files in `dir`/run (`KEA_PIDFILE_DIR`, `KEA_LOCKFILE_DIR`) and its stdout
/// and stderr in `dir`/kea.stdout and kea.stderr.
pub(crate) fn spawn_kea(
    router: &Netns,
    program: &str,
    conf: &Path,
    dir: &Path,
) -> anyhow::Result<Child> {
    let run_dir = dir.join("run");
    fs::create_dir_all(&run_dir)?;
    router
        .command(program)
        .arg("-c")
        .arg(conf)
        .env("KEA_PIDFILE_DIR", &run_dir)
        .env("KEA_LOCKFILE_DIR", &run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(fs::File::create(dir.join("kea.stdout"))?))
        .stderr(Stdio::from(fs::File::create(dir.join("kea.stderr"))?))
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Waits (15 s) until Kea's `log` has `started` (DHCP4_STARTED, DHCP6_STARTED: its sockets
/// are open and it serves), then (5 s) for its control `socket`, if any; fails at once if the
/// child exits. `output` (its log, stdout, stderr) goes into the errors.
pub(crate) fn wait_kea_started(
    child: &mut Child,
    program: &str,
    started: &str,
    socket: Option<&Path>,
    log: impl Fn() -> String,
    output: impl Fn() -> String,
) -> anyhow::Result<()> {
    let mut exited = None;
    let up = wait_for(Duration::from_secs(15), || {
        exited = child.try_wait().ok().flatten();
        exited.is_some() || log().contains(started)
    });
    if let Some(status) = exited {
        bail!("{program} exited ({status}): {}", output());
    }
    up.with_context(|| format!("{program} did not start: {}", output()))?;
    if let Some(socket) = socket {
        wait_for(Duration::from_secs(5), || socket.exists())
            .with_context(|| format!("{program} opened no control socket"))?;
    }
    Ok(())
}

/// Waits until `log` has a line containing every one of `parts`; returns it.
pub(crate) fn wait_log_line(
    log: impl Fn() -> String,
    parts: &[&str],
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut found = None;
    wait_for(timeout, || {
        found = log()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned);
        found.is_some()
    })
    .with_context(|| format!("no log line with {parts:?} in:\n{}", log()))?;
    Ok(found.unwrap_or_default())
}
