//! The agent under test: `dhcp-agent` started in a namespace the way operators run it, for the
//! benchmarks and the soak. One place knows how to start it, when it is ready (its "watching;"
//! line), what it costs (CPU, RSS, open files) and how to stop it.
use std::{
    ffi::OsStr,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use dhcp_lab::Netns;
use serde_json::Value;

/// What becomes of the agent's stdout (its event lines).
pub enum Events {
    /// Thrown away (a storm prints thousands of lines a second).
    Discard,
    /// Parsed as JSON lines and handed over with the time each was read.
    Json,
}

/// capability.h's number of CAP_SYS_ADMIN (the libc crate does not export it).
const CAP_SYS_ADMIN: libc::c_ulong = 21;

/// How the agent is confined beyond its namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Started without CAP_SYS_ADMIN, as the systemd unit runs it (dropped from the bounding
    /// set before exec, so root's exec does not grant it).
    pub no_sys_admin: bool,
    /// Pinned to CPU 0 (`taskset`) and held to this share of it by a cgroup CPU quota
    /// (`cpu.max` 50000 100000 for one half): a router's vCPU capped at 500 MHz.
    pub cpu_share: Option<f64>,
}

/// A running `dhcp-agent`; stopped with SIGTERM when dropped.
pub struct AgentUnderTest {
    /// Dropped after the agent has been stopped (Drop below), so it is empty by then.
    #[expect(dead_code, reason = "held for its Drop, which removes the cgroup")]
    cgroup: Option<CpuCgroup>,
    child: Child,
    /// A copy of its stderr: readable at any time, and the agent never blocks on a full pipe.
    log: PathBuf,
    events: Option<mpsc::Receiver<(Value, SystemTime)>>,
    /// From spawn to the "watching;" line.
    pub attached_after: Duration,
}

impl AgentUnderTest {
    /// Starts `agent ARGS` in `ns` (entered with setns before exec, so the child is the agent
    /// itself and start-up is timed without `ip netns exec`), its stderr copied to `log` line
    /// by line, and waits up to 60 s for it to report that it is watching.
    pub fn start(
        ns: &Netns,
        agent: &Path,
        args: &[impl AsRef<OsStr>],
        log: &Path,
        events: Events,
    ) -> anyhow::Result<AgentUnderTest> {
        Self::start_limited(ns, agent, args, log, events, Limits::default())
    }

    /// [`AgentUnderTest::start`] under `limits`.
    pub fn start_limited(
        ns: &Netns,
        agent: &Path,
        args: &[impl AsRef<OsStr>],
        log: &Path,
        events: Events,
        limits: Limits,
    ) -> anyhow::Result<AgentUnderTest> {
        let cgroup = limits.cpu_share.map(CpuCgroup::create).transpose()?;
        let procs = cgroup
            .as_ref()
            .map(|c| fs::OpenOptions::new().write(true).open(c.procs()))
            .transpose()
            .context("opening the cgroup's process list")?;
        let netns = fs::File::open(format!("/run/netns/{}", ns.name()))
            .with_context(|| format!("opening namespace {}", ns.name()))?;
        let mut log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(agent);
        cmd.args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(match events {
                Events::Discard => Stdio::null(),
                Events::Json => Stdio::piped(),
            });
        let fd = std::os::fd::AsRawFd::as_raw_fd(&netns);
        let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let no_sys_admin = limits.no_sys_admin;
        // SAFETY: setns, prctl, write and sched_setaffinity are async-signal-safe; they only
        // move the child into the namespace and the cgroup, pin it and narrow its bounding set.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return fail();
                }
                if no_sys_admin && libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0 {
                    return fail();
                }
                if let Some(procs) = procs_fd {
                    // "0" moves the writer: this child, before it runs the agent.
                    if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                        return fail();
                    }
                    let mut one_cpu: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut one_cpu);
                    if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one_cpu) != 0 {
                        return fail();
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?;
        // stderr is read as it comes, so "watching;" is timed to the line, not to a poll.
        let stderr = child.stderr.take().context("piped stderr")?;
        let (watching_tx, watching) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Written before it is signalled: a caller reading the log once the agent
                // is watching finds the line there.
                let at = Instant::now();
                if writeln!(log_file, "{line}").is_err() {
                    break;
                }
                if line.starts_with("watching;") {
                    let _ = watching_tx.send(at);
                }
            }
        });
        let events = child.stdout.take().map(|stdout| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let read_at = SystemTime::now();
                    if let Ok(value) = serde_json::from_str::<Value>(&line)
                        && tx.send((value, read_at)).is_err()
                    {
                        break;
                    }
                }
            });
            rx
        });
        drop(procs);
        let mut agent = AgentUnderTest {
            cgroup,
            child,
            log: log.to_owned(),
            events,
            attached_after: Duration::ZERO,
        };
        match watching.recv_timeout(Duration::from_secs(60)) {
            Ok(at) => agent.attached_after = at - started,
            // stderr closed: the agent exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = agent.child.wait()?;
                bail!(
                    "dhcp-agent exited ({status}) before attaching: {}",
                    agent.log()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("dhcp-agent not watching within 60 s: {}", agent.log())
            }
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its last stderr lines, for error messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The hooks it reported ("guest0: tc_ingress (tcx)", ...).
    pub fn attached(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.strip_prefix("attached "))
            .map(str::to_owned)
            .collect()
    }

    /// CPU time (user + system, every thread) used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        crate::bench::process::cpu_time(self.pid())
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        crate::bench::process::status_bytes(self.pid(), "VmRSS")
    }

    /// Peak resident set size, in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        crate::bench::process::status_bytes(self.pid(), "VmHWM")
    }

    /// Voluntary context switches so far, over every thread: each is the agent going to
    /// sleep, so between two readings they count its wake-ups.
    pub fn voluntary_switches(&self) -> anyhow::Result<u64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut total = 0;
        for task in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let status = fs::read_to_string(task?.path().join("status"))?;
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .context("no voluntary_ctxt_switches line")?
                .trim()
                .parse::<u64>()?;
        }
        Ok(total)
    }

    /// Open file descriptors now.
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        let dir = format!("/proc/{}/fd", self.pid());
        Ok(fs::read_dir(&dir)
            .with_context(|| format!("listing {dir}"))?
            .count())
    }

    /// Resident bytes of its BPF map mappings (the event ring buffer).
    pub fn ring_buffer_rss(&self) -> anyhow::Result<u64> {
        let smaps = fs::read_to_string(format!("/proc/{}/smaps", self.pid()))?;
        let mut in_map = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                in_map = line.ends_with("anon_inode:bpf-map");
            } else if in_map && let Some(rest) = line.strip_prefix("Rss:") {
                kib += rest.trim().trim_end_matches(" kB").parse::<u64>()?;
            }
        }
        Ok(kib * 1024)
    }

    /// The next event line (started with [`Events::Json`]) that `wanted` accepts, and when it
    /// was read; the lines before it are passed to `skipped`.
    pub fn next_event(
        &self,
        timeout: Duration,
        mut wanted: impl FnMut(&Value) -> bool,
        mut skipped: impl FnMut(&Value),
    ) -> anyhow::Result<(Value, SystemTime)> {
        let events = self
            .events
            .as_ref()
            .context("the agent's events are not read (started with Events::Discard)")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (value, at) = events
                .recv_timeout(left)
                .with_context(|| format!("no such event within {timeout:?}"))?;
            if wanted(&value) {
                return Ok((value, at));
            }
            skipped(&value);
        }
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after 10 s).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if self.running() {
            let pid = libc::pid_t::try_from(self.pid()).context("pid")?;
            // SAFETY: kill(2) on our own child, which has not been reaped (still running).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let stopped = dhcp_lab::wait_for(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if stopped.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            bail!("dhcp-agent still running 10 s after SIGTERM: killed");
        }
        Ok(self.child.wait()?)
    }

    /// [`AgentUnderTest::stop`], failing unless it exited cleanly.
    pub fn stop_cleanly(mut self) -> anyhow::Result<()> {
        let status = self.stop()?;
        if !status.success() {
            bail!(
                "dhcp-agent exited with {status} on SIGTERM: {}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for AgentUnderTest {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A cgroup of its own with a CPU quota, under cgroup v2 (`cpu.max`) or the v1 `cpu`
/// controller (`cpu.cfs_quota_us`), whichever the machine has; removed when dropped.
struct CpuCgroup {
    dir: PathBuf,
}

impl CpuCgroup {
    const PERIOD_US: u64 = 100_000;

    fn create(share: f64) -> anyhow::Result<CpuCgroup> {
        let name = format!("dhcpobs-bench-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            Path::new("/sys/fs/cgroup").join(&name)
        } else {
            Path::new("/sys/fs/cgroup/cpu").join(&name)
        };
        fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let cgroup = CpuCgroup { dir };
        let quota = (share * Self::PERIOD_US as f64).round() as u64;
        let write = |file: &str, value: String| {
            let path = cgroup.dir.join(file);
            fs::write(&path, value).with_context(|| format!("writing {}", path.display()))
        };
        if v2 {
            write("cpu.max", format!("{quota} {}", Self::PERIOD_US))?;
        } else {
            write("cpu.cfs_period_us", Self::PERIOD_US.to_string())?;
            write("cpu.cfs_quota_us", quota.to_string())?;
        }
        Ok(cgroup)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}
