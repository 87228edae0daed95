//! What the agent needs from the host: capabilities and clocks.
//!
//! The capabilities of `watch` and `run`, found by running each step with each one dropped in
//! turn, on Linux 6.18 and on Debian 12's 6.1 (the routers' kernel, under QEMU); the README's
//! table says which step needs which:
//!
//! * `CAP_BPF`: creating the maps (ring buffer, per-CPU counters) and loading the programs.
//! * `CAP_PERFMON`: the verifier accepts the programs' packet-pointer arithmetic only with it
//!   ("pointer arithmetic with it prohibited for !root" without).
//! * `CAP_NET_ADMIN`: loading networking programs (XDP, TC) at all, and the netlink clsact
//!   qdisc and filters (the TC path before 6.6): adding them, and removing them at exit (without
//!   it the filter, and the program with it, outlives the agent).
//!
//! Nothing else. The memory probe and the repair use plain UDP sockets on ephemeral ports
//! (dnsmasq answers a DHCPINFORM at its source port): neither `CAP_NET_RAW` nor
//! `CAP_NET_BIND_SERVICE` is needed, with or without `--remediate`. Once loaded, reading the
//! maps and attaching through links (XDP, TCX) need no capability on either kernel.
//!
//! Once attached, [`drop_privileges`] keeps `CAP_NET_ADMIN` (netlink filters: re-attaching to
//! a re-created interface, removing them at exit) and `CAP_BPF` (re-attaching; and kernels whose
//! bpf() refuses every command without it, as upstream did before 6.5 where not backported,
//! read the counters with it), drops the rest and sets no_new_privs.
use std::{fmt, fs};

use caps::{CapSet, Capability, CapsHashSet};
use thiserror::Error;

/// A capability the capturing commands need at start-up, and what for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    pub purpose: &'static str,
}

/// Everything `watch` and `run` need to start, in the order errors name them.
pub const START_UP: [Need; 3] = [
    Need {
        capability: Capability::CAP_BPF,
        purpose: "create the BPF maps and load the programs",
    },
    Need {
        capability: Capability::CAP_PERFMON,
        purpose: "the verifier accepts the programs' packet-pointer arithmetic only with it",
    },
    Need {
        capability: Capability::CAP_NET_ADMIN,
        purpose: "load XDP and TC programs and attach them",
    },
];

/// What stays after the programs are attached (see the module docs for why).
pub const KEPT_AFTER_ATTACH: [Capability; 2] = [Capability::CAP_BPF, Capability::CAP_NET_ADMIN];

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error(
        "missing privileges: {names} ({purposes}); run as root, or grant exactly CAP_BPF, \
         CAP_PERFMON and CAP_NET_ADMIN (as deploy/systemd/dhcp-agent.service does)",
        names = names(.0.iter().map(|n| n.capability)),
        purposes = .0.iter().map(|n| format!("{}: {}", n.capability, n.purpose)).collect::<Vec<_>>().join("; ")
    )]
    Missing(Vec<Need>),
    #[error("dropping capabilities ({step}): {reason}")]
    Drop { step: &'static str, reason: String },
    #[error("thread {tid} still holds {held} after the capability drop (started before it?)")]
    ThreadKeeps { tid: String, held: String },
}

fn names(caps: impl IntoIterator<Item = Capability>) -> String {
    caps.into_iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The capabilities in effect now, or `None` when the kernel will not say.
fn effective() -> Option<CapsHashSet> {
    caps::read(None, CapSet::Effective).ok()
}

/// What is missing for loading and attaching the programs. `CAP_SYS_ADMIN` stands in for
/// `CAP_BPF` and `CAP_PERFMON`, as it does in the kernel.
pub fn missing_capabilities() -> Vec<Need> {
    let Some(held) = effective() else {
        return Vec::new(); // cannot tell; let the kernel say no
    };
    let sys_admin = held.contains(&Capability::CAP_SYS_ADMIN);
    START_UP
        .into_iter()
        .filter(|need| {
            let stood_in = sys_admin && need.capability != Capability::CAP_NET_ADMIN;
            !held.contains(&need.capability) && !stood_in
        })
        .collect()
}

/// Fails with a clear message naming every missing capability and what it is for.
pub fn check_privileges() -> Result<(), PrivilegeError> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing(missing))
    }
}

/// What [`drop_privileges`] left, for the one line the agent logs.
#[derive(Debug)]
pub struct Dropped {
    kept: Vec<Capability>,
    /// The bounding set after the drop when it could not be shrunk (no `CAP_SETPCAP`).
    bounding_left: Option<Vec<Capability>>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "privileges: kept {}", names(self.kept.iter().copied()))?;
        match &self.bounding_left {
            None => write!(
                f,
                "; dropped every other capability (effective, permitted, inheritable, ambient, \
                 bounding); no_new_privs set"
            ),
            Some(left) => write!(
                f,
                "; dropped every other capability (effective, permitted, inheritable, ambient); \
                 bounding set left as given ({}: shrinking it needs CAP_SETPCAP); no_new_privs \
                 set, so no exec can regain any",
                names(left.iter().copied())
            ),
        }
    }
}

/// Keeps [`KEPT_AFTER_ATTACH`] (those of it the process holds) and drops every other
/// capability from all five sets, then sets no_new_privs. Capability sets belong to threads:
/// call it while the process has one thread; it checks every thread afterwards and fails if
/// one kept more.
pub fn drop_privileges() -> Result<Dropped, PrivilegeError> {
    let fail = |step| {
        move |e: caps::errors::CapsError| PrivilegeError::Drop {
            step,
            reason: e.to_string(),
        }
    };
    let permitted = caps::read(None, CapSet::Permitted).map_err(fail("reading permitted"))?;
    let mut kept: Vec<Capability> = KEPT_AFTER_ATTACH
        .into_iter()
        .filter(|c| permitted.contains(c))
        .collect();
    // Started with CAP_SYS_ADMIN standing in for CAP_BPF: it is what reads the maps then.
    if !permitted.contains(&Capability::CAP_BPF) && permitted.contains(&Capability::CAP_SYS_ADMIN) {
        kept.insert(0, Capability::CAP_SYS_ADMIN);
    }
    let kept_set: CapsHashSet = kept.iter().copied().collect();
    // The bounding set first: shrinking it needs CAP_SETPCAP in effect, which goes next.
    let can_shrink = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(fail("reading effective"))?;
    let bounding = caps::read(None, CapSet::Bounding).map_err(fail("reading bounding"))?;
    if can_shrink {
        for cap in bounding.difference(&kept_set) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(fail("bounding"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(fail("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(fail("inheritable"))?;
    // Effective before permitted: effective may never exceed permitted.
    caps::set(None, CapSet::Effective, &kept_set).map_err(fail("effective"))?;
    caps::set(None, CapSet::Permitted, &kept_set).map_err(fail("permitted"))?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::Drop {
            step: "no_new_privs",
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    verify_every_thread(&kept_set)?;
    Ok(Dropped {
        kept,
        bounding_left: (!can_shrink).then(|| {
            let mut left: Vec<Capability> = bounding.into_iter().collect();
            left.sort_by_key(Capability::index);
            left
        }),
    })
}

/// Capability masks of one thread from its `/proc/.../status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCaps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub bounding: u64,
    pub no_new_privs: bool,
}

impl ThreadCaps {
    /// Parses the `Cap*:` and `NoNewPrivs:` lines of a `status` file.
    pub fn parse(status: &str) -> ThreadCaps {
        let mut caps = ThreadCaps::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let mask = || u64::from_str_radix(value, 16).unwrap_or(u64::MAX);
            match key {
                "CapEff" => caps.effective = mask(),
                "CapPrm" => caps.permitted = mask(),
                "CapInh" => caps.inheritable = mask(),
                "CapAmb" => caps.ambient = mask(),
                "CapBnd" => caps.bounding = mask(),
                "NoNewPrivs" => caps.no_new_privs = value == "1",
                _ => {}
            }
        }
        caps
    }
}

/// Fails when a thread of this process holds more than `kept` (one started before the drop
/// keeps what it had). A /proc that cannot be read is not an error: this thread was dropped.
fn verify_every_thread(kept: &CapsHashSet) -> Result<(), PrivilegeError> {
    let mask: u64 = kept.iter().map(Capability::bitmask).fold(0, |a, b| a | b);
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Ok(());
    };
    for task in tasks.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let caps = ThreadCaps::parse(&status);
        let extra = (caps.effective | caps.permitted | caps.inheritable | caps.ambient) & !mask;
        if extra != 0 || !caps.no_new_privs {
            return Err(PrivilegeError::ThreadKeeps {
                tid: task.file_name().to_string_lossy().into_owned(),
                held: format!(
                    "capability mask {:#x}{}",
                    caps.effective | caps.permitted,
                    if caps.no_new_privs {
                        ""
                    } else {
                        ", no_new_privs unset"
                    }
                ),
            });
        }
    }
    Ok(())
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Converts the kernel's CLOCK_BOOTTIME stamps into wall-clock Unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    offset_ns: i128,
}

impl BootClock {
    pub fn new() -> BootClock {
        BootClock {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME),
        }
    }

    pub fn to_unix_ns(self, boot_ns: u64) -> i128 {
        i128::from(boot_ns) + self.offset_ns
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The IPv4 addresses of this network namespace's interfaces, with their prefix lengths
/// (getifaddrs(3)): the router's own subnets, and whether it holds its VIP.
pub fn local_ipv4() -> Vec<(std::net::Ipv4Addr, u8)> {
    link_ipv4()
        .into_iter()
        .map(|(_, ip, prefix)| (ip, prefix))
        .collect()
}

/// Every IPv4 address of this network namespace with the link that holds it and its prefix
/// length (getifaddrs(3)): which links dnsmasq serves. A label (`eth2:1`) is its link's.
pub fn link_ipv4() -> Vec<(String, std::net::Ipv4Addr, u8)> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; each entry's name is a
    // NUL-terminated string, its addr and netmask either null or sockaddrs of the family
    // `sa_family` says.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return found;
        }
        let mut entry = head;
        while !entry.is_null() {
            let ifa = &*entry;
            if !ifa.ifa_addr.is_null()
                && !ifa.ifa_netmask.is_null()
                && !ifa.ifa_name.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let addr = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let mask = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                let prefix = u32::from_be(mask.sin_addr.s_addr).leading_ones() as u8;
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
                let link = name.split(':').next().unwrap_or_default().to_owned();
                found.push((link, ip, prefix));
            }
            entry = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found
}

/// This namespace's own subnets, loopback aside (dnsmasq ranges without a netmask, like
/// CloudStack's `dhcp-range=set:interface-eth2-0,<VIP>,static`, take theirs).
pub fn local_subnets() -> Vec<dhcp_engine::subnet::Subnet> {
    let mut subnets: Vec<_> = local_ipv4()
        .into_iter()
        .filter(|(ip, _)| !ip.is_loopback())
        .filter_map(|(ip, prefix)| dhcp_engine::subnet::Subnet::new(ip, prefix))
        .collect();
    subnets.sort();
    subnets.dedup();
    subnets
}

/// Whether a UDP socket of this network namespace is bound to local port `port`
/// (`/proc/net/udp` and `udp6`: the DHCP server's socket on port 67). `None` when neither
/// file can be read.
pub fn udp_port_bound(port: u16) -> Option<bool> {
    let mut readable = false;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        readable = true;
        if udp_table_has_port(&text, port) {
            return Some(true);
        }
    }
    readable.then_some(false)
}

/// Whether a `/proc/net/udp` table lists a socket bound to local `port` (the local address
/// field is `ADDR:PORT`, the port in hex).
fn udp_table_has_port(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        line.split_whitespace()
            .nth(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            == Some(port)
    })
}

/// The running kernel's release (`uname -r`), or `unknown`.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it and NUL-terminates its fields.
    unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(name.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_message_names_each_capability_and_its_purpose() {
        let err = PrivilegeError::Missing(vec![START_UP[1], START_UP[2]]).to_string();
        assert!(
            err.starts_with("missing privileges: CAP_PERFMON, CAP_NET_ADMIN ("),
            "{err}"
        );
        assert!(
            err.contains("CAP_NET_ADMIN: load XDP and TC programs"),
            "{err}"
        );
        assert!(!err.contains("CAP_BPF: "), "{err}");
    }

    #[test]
    fn a_bound_dhcp_server_port_is_found_in_the_udp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 12: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41720 2 0000000000000000 0\n";
        assert!(udp_table_has_port(table, 67));
        assert!(!udp_table_has_port(table, 68));
        assert!(!udp_table_has_port("header only\n", 67));
    }

    #[test]
    fn status_lines_parse_into_masks() {
        let status = "Name:\tdhcp-agent\nCapInh:\t0000000000000000\nCapPrm:\t0000008000001000\n\
                      CapEff:\t0000008000001000\nCapBnd:\t000000c000001000\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        let caps = ThreadCaps::parse(status);
        assert_eq!(caps.effective, (1 << 39) | (1 << 12));
        assert_eq!(caps.bounding, (1 << 39) | (1 << 38) | (1 << 12));
        assert!(caps.no_new_privs && caps.ambient == 0 && caps.inheritable == 0);
    }
}
