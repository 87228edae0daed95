//! What the agent needs from the host: capabilities and clocks.
use std::fs;

/// Linux capability numbers the agent cares about.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Names of the capabilities missing for loading and attaching the programs. CAP_SYS_ADMIN
/// stands in for CAP_BPF and CAP_PERFMON (kernels before 5.8 only know it).
pub fn missing_capabilities() -> Vec<&'static str> {
    let Some(caps) = effective_capabilities() else {
        return Vec::new(); // cannot tell; let the kernel say no
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Fails with a clear message naming what is missing.
pub fn check_privileges() -> anyhow::Result<()> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "missing privileges: {} (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)",
        missing.join(", ")
    )
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
