//! Running a command and measuring it from outside: wall time, CPU time and peak RSS, as the
//! kernel accounts them to the child (wait4's rusage), not as the child reports itself.
use std::{
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// What one run of a command cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, bytes: the child's VmHWM, sampled every 5 ms while it runs.
    /// (wait4's ru_maxrss is no use here: Linux carries the forked parent's RSS over exec.)
    pub max_rss: u64,
    pub status: ExitStatus,
}

/// Runs `cmd` to completion (its stdio as the caller set it up) and measures it.
pub fn measure(cmd: &mut Command) -> anyhow::Result<Cost> {
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        let pid = child.id();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(hwm) = status_bytes(pid, "VmHWM") {
                    peak = peak.max(hwm);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_rss = sampler.join().unwrap_or(0);
    anyhow::ensure!(
        waited == pid,
        "wait4 for {cmd:?}: {}",
        std::io::Error::last_os_error()
    );
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Cost {
        wall,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        max_rss,
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
    })
}

/// CPU time (user + system) a running process has used so far, all its threads (those gone
/// too), to the nanosecond: its CPU-time clock (clock_getcpuclockid(3)). /proc/PID/stat counts
/// in clock ticks of 10 ms, coarser than the agent's whole cost in a short benchmark step (the
/// quick storm's 10k step read 0 and made a ratio of 0 look met); it remains the fallback.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock is a valid out pointer; the pid is only looked up.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } == 0 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid out pointer.
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            return Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        }
    }
    stat_cpu_time(pid)
}

/// CPU time from /proc/PID/stat, in whole clock ticks.
fn stat_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// A `/proc/PID/status` field in bytes (VmRSS, VmHWM: the kernel prints them in kB).
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_child() {
        let cost = measure(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]),
        )
        .unwrap();
        assert!(cost.status.success());
        assert!(cost.cpu > Duration::ZERO && cost.max_rss > 0);
        // The CPU clock counts to the nanosecond and agrees with the ticks of /proc/PID/stat.
        let me = std::process::id();
        let before = cpu_time(me).unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        let spent = cpu_time(me).unwrap() - before;
        assert!(spent >= Duration::from_millis(25), "{spent:?}");
        assert_ne!(
            spent.subsec_nanos() % 1_000_000,
            0,
            "whole milliseconds: {spent:?}"
        );
        let ticks = stat_cpu_time(me).unwrap();
        let precise = cpu_time(me).unwrap();
        assert!(
            precise.abs_diff(ticks) < Duration::from_millis(50),
            "{precise:?} {ticks:?}"
        );
        assert!(status_bytes(std::process::id(), "VmHWM").unwrap() > 0);
    }
}
