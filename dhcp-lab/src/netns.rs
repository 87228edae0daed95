//! Network namespaces made with iproute2, deleted on drop.
use std::{
    os::fd::AsRawFd as _,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// A network namespace this process created.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (deleting a stale namespace of the same name left by a killed run).
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(Command::new("ip").args(["netns", "add", name]))?;
        Ok(Netns {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `work` on a thread inside the namespace: see [`inside`].
    pub fn run_inside<T: Send>(&self, work: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        inside(&self.name, work)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside (dhclient, dnsmasq, agents) so the namespace can go.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `work` on a thread that has entered namespace `name` (sockets it opens live there);
/// the caller's own namespace is untouched, as setns() switches only the calling thread.
/// A veth pair: `a_iface` in `a`, its peer `b_iface` in `b` (which may be the same
/// namespace). Both ends start down.
pub fn veth_pair(a: &Netns, a_iface: &str, b: &Netns, b_iface: &str) -> anyhow::Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        a_iface,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_iface,
        "netns",
        b.name(),
    ]))
    .map(drop)
}

pub fn inside<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<T> {
                let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: setns on a valid namespace fd, affecting this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns({path}): {}", std::io::Error::last_os_error());
                }
                Ok(work())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread inside {path} panicked"))?
    })
}

/// Runs a command to completion; fails with its stderr if it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}
