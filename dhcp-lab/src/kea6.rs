//! A router running ISC Kea's DHCPv6 server (Debian 12's `kea-dhcp6-server` 2.2) on the same
//! guest cable as dnsmasq's DHCPv6 lab ([`crate::v6::V6Lab`]), with the same real
//! `dhclient -6` in the VM and dnsmasq's `dhcp_release6` on the router:
//!
//! ```text
//!   vm namespace                               router namespace
//!   eth0 (dhclient -6 -D LL)  <--- veth ---> guest0: fd00:29:101::1/64 (and 172.29.101.1/24)
//!        fe80::5054:ff:fe10:1                         fe80::<from its MAC>
//!                                            lo:     127.0.0.1, ::1
//!                                            kea-dhcp6 -c <lab>/kea-dhcp6.conf
//!                                              interfaces: guest0 only
//!                                              server-id EN 2495 "dhcp-lab", not persisted
//!                                              memfile <lab>/kea-leases6.csv (persist, no LFC)
//!                                              lease_cmds hook, control socket <lab>/kea6.sock
//! ```
//!
//! Kea runs as our child in the foreground with its own configuration, lease file, log, pid and
//! lock directories (`KEA_PIDFILE_DIR`, `KEA_LOCKFILE_DIR`, as [`crate::kea::KeaLab`]); its
//! server id is configured (`"persist": false`, so no `kea-dhcp6-serverid` file is written,
//! and `data-directory` is the lab's too), so nothing is written outside the lab directory and
//! the host's Kea service is never touched. Dropping the lab stops Kea and dhclient and deletes
//! the namespaces and the directory (kept with `DHCP_LAB_KEEP`), also when a test fails.
//!
//! Everything below was established on Debian 12's packages (kea-dhcp6-server 2.2.0, dhclient
//! 4.4.3-P1, dnsmasq-utils' `dhcp_release6` 2.90) and is proven in `dhcp-lab/tests/kea6_lab.rs`
//! (Kea's source: `src/bin/dhcp6/dhcp6_srv.cc`, tag Kea-2.2.0):
//!
//! - Kea's server id is exactly the configured DUID-EN, `00:02` + enterprise 2495
//!   (`00:00:09:bf`) + the identifier "dhcp-lab" ([`SERVER_DUID`]): option 2 of its ADVERTISE
//!   and REPLY, and what dhclient stores as `option dhcp6.server-id` in its lease file. With
//!   `"persist": false` no `kea-dhcp6-serverid` file is written (neither in the lab nor in
//!   /var/lib/kea).
//! - `dhclient -6 -1` leases fd00:29:101::10 (IAID 0x00100001, the MAC's last four bytes) in
//!   about 2 s. Kea appends the lease to the memfile when it sends the REPLY (`lease_type` 0,
//!   `valid_lifetime` 3600, `expire` = cltt + 3600, hostname empty, hwaddr filled) and
//!   `lease6-get` by address answers result 0 "IPv6 lease found." with the same DUID, IAID,
//!   `type` "IA_NA" and `cltt`. Log: `DHCP6_LEASE_ALLOC`. The 2.2 header is
//!   `address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,
//!   fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source`.
//! - Every reply to a client on the cable leaves guest0 from the router's link-local address to
//!   the client's; Kea answers within a few milliseconds (dnsmasq: ~500 ms for a
//!   `dhcp_release6`, as it looks for the sender's MAC first).
//! - `dhclient -6 -r`: one RELEASE (multicast from the VM's link-local, Kea's server id),
//!   answered by a REPLY to the VM with top-level status Success ("Summary status for all
//!   processed IA_NAs") and an IA_NA holding only its own status Success ("Lease released.
//!   Thank you, please come again.", no IAADDR). The lease is deleted: `lease6-get` result 3
//!   "Lease not found.", and the memfile gets a last row for the address with `valid_lifetime`
//!   0. Log: `DHCP6_RELEASE_NA` (INFO, "binding for address IP and iaid=N was released
//!   properly").
//! - `dhcp_release6` with Kea's server id releases the lease (`DHCP6_RELEASE_NA`, same rows as
//!   above) but exits **254**, saying nothing. Kea answers its first RELEASE (xid 0) at once,
//!   to the router's own link-local port 546, so over `lo` (never seen leaving guest0); but
//!   `dhcp_release6` reads with MSG_DONTWAIT right after sending and mostly misses it (Kea
//!   sometimes wins that race: then one RELEASE only), sleeps a second and sends a second
//!   RELEASE (answered NoBinding, top level and IA: "Sorry, no known leases for this
//!   duid/iaid, can't release."). It then reads a REPLY and cannot parse Kea's IA_NA:
//!   `parse_iana_suboption` skips 24 bytes into the IA_NA's data, expecting an IAADDR first,
//!   lands inside Kea's status text and returns -2, whatever the status. So with Kea the exit
//!   status of `dhcp_release6` tells nothing; Kea's memory (`lease6-get`) and the memfile do.
//! - `dhcp_release6` with another server id: no REPLY at all. Kea logs
//!   `DHCP6_PACKET_DROP_SERVERID_MISMATCH` (DEBUG level 15, logger `kea-dhcp6.bad-packets`:
//!   "dropping packet with server identifier: WRONG, server is using: OURS") once per RELEASE,
//!   five times. `dhcp_release6` exits **255** ("Response timed out") and the lease stays, in
//!   memory and in the file.
//! - A RELEASE of the right address with Kea's server id but another client's DUID
//!   (`dhcp_release6 --client-id OTHER`): Kea answers REPLY with top-level status NoBinding (3)
//!   and IA_NA status NoBinding ("This address does not belong to you, you can't release it"),
//!   logs `DHCP6_RELEASE_NA_FAIL_WRONG_DUID` (INFO, "client tried to release address IP, but it
//!   belongs to another client using duid=THE LEASE'S") and keeps the lease. Again mostly two
//!   RELEASEs and two REPLYs (one of each when Kea wins the race), and `dhcp_release6` exits
//!   254.
//! - `lease6-del` `{"ip-address": IP}` answers `{"result": 0, "text": "IPv6 lease deleted."}`;
//!   then `lease6-get` answers result 3 ("Lease not found.") and the memfile's last row for the
//!   address has `valid_lifetime` 0. A second `lease6-del` answers
//!   `{"result": 3, "text": "IPv6 lease not found."}`.
//!
//! Interfaces and files are named after this process (see [`crate::Lab`]) and removed on drop,
//! also when a test panics.
use std::{
    fs,
    net::Ipv6Addr,
    path::{Path, PathBuf},
    process::{Child, Output},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    Netns, Vm,
    kea::{LEASE_CMDS_HOOK, control_command, spawn_kea, wait_kea_started, wait_log_line},
    next_lab_id,
    v6::{
        self, AgentLab, Capture, LEASE_SECS, RANGE6, ROUTER_IFACE, V6Lease, VM_IFACE, link_local,
    },
};

/// Kea's id of the lab's one subnet, fd00:29:101::/64.
pub const KEA6_SUBNET_ID: u32 = 1;
/// The subnet Kea serves on guest0.
pub const KEA6_SUBNET: &str = "fd00:29:101::/64";
/// The pool Kea hands addresses from (dnsmasq's range in the other lab).
pub const KEA6_POOL: (Ipv6Addr, Ipv6Addr) = RANGE6;
/// The enterprise number of Kea's configured DUID-EN (ISC's).
pub const SERVER_ENTERPRISE_ID: u32 = 2495;
/// The identifier part of Kea's configured DUID-EN: "dhcp-lab".
pub const SERVER_IDENTIFIER: &[u8] = b"dhcp-lab";
/// Kea's server DUID: type 2 (EN), enterprise 2495, "dhcp-lab".
pub const SERVER_DUID: [u8; 14] = [
    0x00, 0x02, 0x00, 0x00, 0x09, 0xbf, b'd', b'h', b'c', b'p', b'-', b'l', b'a', b'b',
];

/// A running Kea DHCPv6 lab; see the module documentation.
pub struct Kea6Lab {
    pub router: Netns,
    /// The VM; its DHCPv6 client is driven by [`Kea6Lab::lease`] and
    /// [`Kea6Lab::client_release`].
    pub vm: Vm,
    pub dir: PathBuf,
    kea: Option<Child>,
}

impl Kea6Lab {
    /// Builds the namespaces and the cable (as [`crate::v6::V6Lab`]) and starts Kea; returns
    /// once it serves (`DHCP6_STARTED`) and its control socket exists.
    pub fn start() -> anyhow::Result<Kea6Lab> {
        crate::require_tools(&["ip", "kea-dhcp6", "dhclient", "dhcp_release6"])?;
        if !Path::new(LEASE_CMDS_HOOK).exists() {
            bail!("{LEASE_CMDS_HOOK} is missing (run `cargo xtask setup`)");
        }
        let id = next_lab_id();
        let dir = std::env::temp_dir().join(format!("dhcp-kea6-lab-{id}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let router = Netns::create(&format!("dhcpobs-k6r-{id}"))?;
        let vm = v6::new_vm(
            Netns::create(&format!("dhcpobs-k6vm-{id}"))?,
            dir.join("vm"),
        )?;
        let mut lab = Kea6Lab {
            router,
            vm,
            dir,
            kea: None,
        };
        v6::build_network(&lab.router, &lab.vm)?;
        lab.start_kea()?;
        Ok(lab)
    }

    fn start_kea(&mut self) -> anyhow::Result<()> {
        fs::write(self.conf_path(), self.kea_conf()).context("writing kea-dhcp6.conf")?;
        let mut child = spawn_kea(&self.router, "kea-dhcp6", &self.conf_path(), &self.dir)?;
        let started = wait_kea_started(
            &mut child,
            "kea-dhcp6",
            "DHCP6_STARTED",
            Some(&self.control_socket()),
            || self.log(),
            || self.kea_output(),
        );
        // Kept also when it failed: dropping the lab kills it.
        self.kea = Some(child);
        started
    }

    /// Kea's configuration: the guest interface only, the configured server id (not
    /// persisted), a memfile of its own written on every change (`persist`) and never rewritten
    /// by the LFC (`lfc-interval` 0), one subnet bound to guest0 with one pool, the `lease_cmds`
    /// hook, the control socket, and a debug log where every drop is named.
    pub fn kea_conf(&self) -> String {
        let dhcp6 = serde_json::json!({
            "interfaces-config": { "interfaces": [ROUTER_IFACE] },
            "server-id": {
                "type": "EN",
                "enterprise-id": SERVER_ENTERPRISE_ID,
                "identifier": SERVER_IDENTIFIER.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "persist": false,
            },
            // Where Kea 2.2 would put a server id file (none with persist false).
            "data-directory": self.dir,
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": self.lease_file(),
                "lfc-interval": 0,
            },
            "preferred-lifetime": LEASE_SECS * 3 / 4,
            "valid-lifetime": LEASE_SECS,
            "renew-timer": LEASE_SECS / 2,
            "rebind-timer": LEASE_SECS * 7 / 8,
            "subnet6": [{
                "id": KEA6_SUBNET_ID,
                "subnet": KEA6_SUBNET,
                "interface": ROUTER_IFACE,
                "pools": [{ "pool": format!("{} - {}", KEA6_POOL.0, KEA6_POOL.1) }],
            }],
            "control-socket": {
                "socket-type": "unix",
                "socket-name": self.control_socket(),
            },
            "hooks-libraries": [{ "library": LEASE_CMDS_HOOK }],
            "loggers": [{
                "name": "kea-dhcp6",
                "output_options": [{ "output": self.log_file() }],
                "severity": "DEBUG",
                // 55: DHCP6_PACKET_DROP_* (DBGLVL_PKT_HANDLING, 15), the packets received and
                // sent (DBG_DHCP6_BASIC 40, DBG_DHCP6_DETAIL 50) and their contents (55).
                "debuglevel": 55,
            }],
        });
        serde_json::to_string_pretty(&serde_json::json!({ "Dhcp6": dhcp6 }))
            .expect("JSON values serialize")
    }

    /// `<dir>/kea-dhcp6.conf`.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("kea-dhcp6.conf")
    }

    /// Kea's memfile lease file, `<dir>/kea-leases6.csv`.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("kea-leases6.csv")
    }

    /// Kea's control socket (a unix stream socket), `<dir>/kea6.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("kea6.sock")
    }

    /// Kea's log file, `<dir>/kea-dhcp6.log`.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("kea-dhcp6.log")
    }

    /// Kea's DUID as configured ([`SERVER_DUID`]), the server id option of its replies.
    pub fn server_duid(&self) -> Vec<u8> {
        SERVER_DUID.to_vec()
    }

    /// The DUID the VM's dhclient uses (`-D LL`: 00:03:00:01 and the MAC).
    pub fn client_duid(&self) -> Vec<u8> {
        v6::client_duid()
    }

    /// The router interface Kea serves the guests on (what `dhcp_release6 --iface` names).
    pub fn guest_iface(&self) -> String {
        ROUTER_IFACE.to_owned()
    }

    /// The router's link-local address on the guest interface: the source of Kea's replies
    /// and of `dhcp_release6`'s RELEASEs.
    pub fn router_link_local(&self) -> anyhow::Result<Ipv6Addr> {
        link_local(&self.router, ROUTER_IFACE).context("the router has no link-local address")
    }

    /// The VM's link-local address: the source of its DHCPv6 messages.
    pub fn vm_link_local(&self) -> anyhow::Result<Ipv6Addr> {
        link_local(&self.vm.ns, VM_IFACE).context("the VM has no link-local address")
    }

    /// The global IPv6 address configured on the VM's interface, if any.
    pub fn vm_address6(&self) -> anyhow::Result<Option<Ipv6Addr>> {
        v6::vm_address6(&self.vm)
    }

    /// The VM's real client obtains a lease: `dhclient -6 -1` from scratch (SOLICIT,
    /// ADVERTISE, REQUEST, REPLY), which configures the address on the VM's `eth0` and stays in
    /// the background. Returns the binding as Kea's memfile lists it (the live last row for the
    /// client's DUID): ip, DUID, IAID, expiry; `hostname` `None` (dhclient sends no FQDN),
    /// `temporary` false.
    pub fn lease(&self) -> anyhow::Result<V6Lease> {
        let duid = self.client_duid();
        v6::obtain_lease(
            &self.vm,
            || self.log(),
            "Kea's memfile",
            || {
                self.live_rows()
                    .ok()?
                    .into_iter()
                    .rev()
                    .find(|r| r.duid == duid && r.lease_type == LEASE_TYPE_NA)
                    .map(|r| r.to_lease())
            },
        )
    }

    /// The client's own release: `dhclient -6 -r` (see [`crate::v6::V6Lab::client_release`]).
    pub fn client_release(&self) -> anyhow::Result<()> {
        v6::client_release(&self.vm)
    }

    /// dnsmasq's `dhcp_release6` in the router namespace on guest0, as
    /// [`crate::v6::V6Lab::dhcp_release6`]: `--ip`, `--client-id` and `--iaid` from `lease`.
    /// Returns its output whatever its exit status. Against Kea: 255 when no REPLY came to five
    /// RELEASEs (a wrong server id), 254 for any REPLY, Success or not (dhcp_release6 cannot
    /// parse Kea's IA_NA; see the module documentation), so only Kea's state tells.
    pub fn dhcp_release6(&self, lease: &V6Lease, server_id: &[u8]) -> anyhow::Result<Output> {
        v6::dhcp_release6(&self.router, ROUTER_IFACE, lease, server_id)
    }

    /// One command on Kea's control socket; returns Kea's answer as it sent it.
    pub fn command(&self, json: &str) -> anyhow::Result<String> {
        control_command(&self.control_socket(), json)
    }

    /// Whether Kea holds a lease for `ip` in memory, asked with `lease6-get` by address
    /// (result 0: yes, 3: no; anything else fails).
    pub fn kea_holds(&self, ip: Ipv6Addr) -> anyhow::Result<bool> {
        let answer = self.command(&format!(
            r#"{{"command":"lease6-get","arguments":{{"ip-address":"{ip}"}}}}"#
        ))?;
        let value: serde_json::Value =
            serde_json::from_str(&answer).with_context(|| format!("Kea's answer {answer:?}"))?;
        match value["result"].as_i64() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => bail!("lease6-get: {answer}"),
        }
    }

    /// Every row of the memfile, in file order (Kea appends one per change).
    pub fn lease_rows(&self) -> anyhow::Result<Vec<Kea6Row>> {
        let text = fs::read_to_string(self.lease_file()).context("reading Kea's memfile")?;
        parse_memfile6(&text)
    }

    /// The last row of each address whose lease is live (`valid_lifetime` not 0), in the
    /// order of those last rows.
    pub fn live_rows(&self) -> anyhow::Result<Vec<Kea6Row>> {
        Ok(current_rows(self.lease_rows()?)
            .into_iter()
            .filter(|r| r.valid_lifetime != 0)
            .collect())
    }

    /// The memfile's last row for the address `ip`, if any.
    pub fn last_lease_row(&self, ip: Ipv6Addr) -> Option<Kea6Row> {
        self.lease_rows()
            .ok()?
            .into_iter()
            .rfind(|r| r.address == ip && r.lease_type == LEASE_TYPE_NA)
    }

    /// Whether the memfile's last row for the address `ip` is a live lease (`valid_lifetime`
    /// not 0: Kea appends a row with 0 when a lease is released or deleted).
    pub fn lease_file_has(&self, ip: Ipv6Addr) -> bool {
        self.last_lease_row(ip)
            .is_some_and(|r| r.valid_lifetime != 0)
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

    /// Starts capturing DHCPv6 on the router: guest0 both ways and arrivals on `lo` (as
    /// [`crate::v6::V6Lab::capture`]).
    pub fn capture(&self) -> anyhow::Result<Capture> {
        Capture::start(&self.router, &[ROUTER_IFACE, "lo"])
    }

    /// The options every `dhcp-agent run` on this lab's router gets, after `run`: JSON events,
    /// the guest interface and `lo` (a `dhcp_release6` RELEASE leaves on guest0, Kea's REPLY to
    /// it arrives on lo), a 2 s grace and a 1 s settle time (as [`crate::v6::V6Lab`]), Kea's
    /// memfile, its format and Kea's configuration. The state file and anything else are the
    /// caller's.
    pub fn agent_run_options(&self) -> Vec<String> {
        crate::agent_run_options(
            "2s",
            self.lease_file().to_string_lossy().into_owned(),
            &[
                ("--lease-format", "kea-v6".to_owned()),
                (
                    "--kea-conf",
                    self.conf_path().to_string_lossy().into_owned(),
                ),
            ],
        )
    }
}

impl AgentLab for Kea6Lab {
    fn router(&self) -> &Netns {
        &self.router
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn agent_run_options(&self) -> Vec<String> {
        Kea6Lab::agent_run_options(self)
    }
}

impl Drop for Kea6Lab {
    fn drop(&mut self) {
        let _ = v6::kill_client(&self.vm);
        self.vm.stop();
        if let Some(mut child) = self.kea.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The namespaces are deleted by their own Drop (killing anything left inside).
        if std::env::var_os("DHCP_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `lease_type` of an address (IA_NA) lease; 1 is IA_TA, 2 a prefix (IA_PD).
pub const LEASE_TYPE_NA: u8 = 0;
/// `lease_type` of a temporary address (IA_TA).
pub const LEASE_TYPE_TA: u8 = 1;

/// One row of Kea's DHCPv6 memfile (`address,duid,valid_lifetime,expire,subnet_id,
/// pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,...` in
/// 2.2, `src/lib/dhcpsrv/csv_lease_file6.cc`); only the columns the lab uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kea6Row {
    pub address: Ipv6Addr,
    pub duid: Vec<u8>,
    /// Seconds; 0 in the row Kea appends when a lease is released or deleted.
    pub valid_lifetime: u32,
    /// Absolute expiry, seconds since the epoch.
    pub expire: u64,
    pub subnet_id: u32,
    pub lease_type: u8,
    pub iaid: u32,
    /// Empty when the client sent no FQDN.
    pub hostname: String,
    /// 0 default, 1 declined, 2 expired-reclaimed.
    pub state: u32,
}

impl Kea6Row {
    /// The binding as the lab's [`V6Lease`].
    pub fn to_lease(&self) -> V6Lease {
        V6Lease {
            ip: self.address,
            duid: self.duid.clone(),
            iaid: self.iaid,
            expires: self.expire,
            hostname: (!self.hostname.is_empty()).then(|| self.hostname.clone()),
            temporary: self.lease_type == LEASE_TYPE_TA,
        }
    }
}

/// Parses Kea's DHCPv6 memfile: a header line naming the columns, then one row per change.
/// Columns are found by name; `state` may be missing (files of older Kea: 0).
pub fn parse_memfile6(text: &str) -> anyhow::Result<Vec<Kea6Row>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("the memfile has no header")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no column {name:?} in the header {header:?}"))
    };
    let (address, duid, valid, expire, subnet, ltype, iaid, hostname) = (
        col("address")?,
        col("duid")?,
        col("valid_lifetime")?,
        col("expire")?,
        col("subnet_id")?,
        col("lease_type")?,
        col("iaid")?,
        col("hostname")?,
    );
    let state = col("state").ok();
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let get = |i: usize| {
                fields
                    .get(i)
                    .copied()
                    .with_context(|| format!("row {line:?} has no column {}", header[i]))
            };
            Ok::<_, anyhow::Error>(Kea6Row {
                address: get(address)?.parse().context("address")?,
                duid: v6::parse_hex(get(duid)?).context("duid")?,
                valid_lifetime: get(valid)?.parse().context("valid_lifetime")?,
                expire: get(expire)?.parse().context("expire")?,
                subnet_id: get(subnet)?.parse().context("subnet_id")?,
                lease_type: get(ltype)?.parse().context("lease_type")?,
                iaid: get(iaid)?.parse().context("iaid")?,
                // Kea escapes commas in text columns (CSVRow::escapeCharacters).
                hostname: get(hostname)?.replace("&#x2c", ","),
                state: match state {
                    Some(i) => get(i)?.parse().context("state")?,
                    None => 0,
                },
            })
            .with_context(|| format!("memfile row {line:?}"))
        })
        .collect()
}

/// The last row of each (address, lease type), in the order of those last rows: what Kea
/// loads from the file.
pub fn current_rows(rows: Vec<Kea6Row>) -> Vec<Kea6Row> {
    let mut out: Vec<Kea6Row> = Vec::new();
    for row in rows {
        out.retain(|r| (r.address, r.lease_type) != (row.address, row.lease_type));
        out.push(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memfile as Kea 2.2 wrote it in the lab (the lease, then its release), and a row with
    /// an escaped comma in its hostname.
    const FILE: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source\n\
        fd00:29:101::10,00:03:00:01:52:54:00:10:00:01,3600,1796241218,1,2700,0,1048577,128,0,0,,52:54:00:10:00:01,0,,1,2\n\
        fd00:29:101::11,00:03:00:01:52:54:00:10:00:02,3600,1796241219,1,2700,0,7,128,0,0,a&#x2cb,,0,,,\n\
        fd00:29:101::10,00:03:00:01:52:54:00:10:00:01,0,1796237618,1,0,0,1048577,128,0,0,,52:54:00:10:00:01,0,,1,2\n";

    #[test]
    fn parses_rows_by_column_name() {
        let rows = parse_memfile6(FILE).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].address,
            "fd00:29:101::10".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(rows[0].duid, [0, 3, 0, 1, 0x52, 0x54, 0, 0x10, 0, 1]);
        assert_eq!(
            (rows[0].valid_lifetime, rows[0].expire, rows[0].iaid),
            (3600, 1_796_241_218, 1_048_577)
        );
        assert_eq!(rows[1].hostname, "a,b");
        assert_eq!(rows[2].valid_lifetime, 0);
        let current = current_rows(rows);
        assert_eq!(current.len(), 2);
        assert_eq!(current[1].valid_lifetime, 0, "the release is the last row");
        assert_eq!(
            current[0].to_lease(),
            V6Lease {
                ip: "fd00:29:101::11".parse().unwrap(),
                duid: vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x10, 0, 2],
                iaid: 7,
                expires: 1_796_241_219,
                hostname: Some("a,b".into()),
                temporary: false,
            }
        );
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let text = "duid,address,iaid,lease_type,subnet_id,expire,valid_lifetime,hostname\n\
            00:01,fd00::1,5,0,1,100,60,h\n";
        let rows = parse_memfile6(text).unwrap();
        assert_eq!(rows[0].address, "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((rows[0].iaid, rows[0].state), (5, 0));
        assert!(parse_memfile6("").is_err());
        assert!(parse_memfile6("address,duid\nfd00::1,00:01\n").is_err());
        assert!(
            parse_memfile6(&format!(
                "{}\nfd00::1,00:01\n",
                FILE.lines().next().unwrap()
            ))
            .is_err()
        );
    }

    #[test]
    fn the_server_duid_is_the_configured_duid_en() {
        assert_eq!(&SERVER_DUID[..2], &[0, 2], "DUID-EN");
        assert_eq!(SERVER_DUID[2..6], SERVER_ENTERPRISE_ID.to_be_bytes());
        assert_eq!(&SERVER_DUID[6..], SERVER_IDENTIFIER);
    }
}
