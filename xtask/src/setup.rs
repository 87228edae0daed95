//! Everything building and testing need on a fresh Debian machine, in one place. Each step
//! checks first and only installs what is missing, so `lab` and `test` call it every time.
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Peers and tools the lab and the tests run. `dnsmasq-base` is dnsmasq without the system
/// service: the lab starts its own instances and must never start the host's. `prometheus`
/// gives the server the end-to-end test starts in a namespace and `promtool` (its service is
/// not started: the tests run their own). `tcpdump` and `tshark` make and read the captures the
/// pcap tests compare with. `iperf3` drives the bulk flows of the forwarding benchmark (its
/// daemon is not started: the benchmark runs its own server in a namespace).
const RUNTIME_PACKAGES: &[&str] = &[
    "dnsmasq-base",
    "dnsmasq-utils",
    "iperf3",
    "isc-dhcp-client",
    "iproute2",
    "prometheus",
    "tcpdump",
    "tshark",
];
/// Tools of the hardening work (issue 7), installed like the packages above.
/// `qemu-system-x86` and `busybox-static` boot Debian 12's 6.1 kernel with a small initramfs
/// (`cargo xtask kernel`); `kmod`'s depmod writes the modules.dep that kernel's package leaves
/// to its postinst. `cargo xtask dist` needs `dpkg-dev` (dpkg-shlibdeps: the package's
/// Depends), `systemd` (systemd-analyze verify), `man-db` (which verify runs for the unit's man
/// page) and `systemd-container` (systemd-nspawn boots the host's system to start the unit).
const HARDENING_PACKAGES: &[&str] = &[
    "busybox-static",
    "dpkg-dev",
    "kmod",
    "man-db",
    "qemu-system-x86",
    "systemd",
    "systemd-container",
];
/// Cargo subcommands the tasks use: (crate, version pinned to what rustc 1.95 builds).
const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-deb", "3.8.0"), ("cargo-fuzz", "0.13.2")];
/// What bpf-linker builds against.
const LINKER_BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libclang-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The nightly toolchain of the kernel programs' build, their clippy run and the fuzz targets.
/// Pinned (in `dhcp-ebpf/NIGHTLY`, which the agent's build script reads too) to one whose
/// LLVM is 22, the LLVM bpf-linker is built against: the floating `nightly` moved to LLVM 23,
/// whose bitcode bpf-linker refuses ("Invalid record").
pub const NIGHTLY: &str = include_str!("../../dhcp-ebpf/NIGHTLY").trim_ascii();
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn ensure() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = RUNTIME_PACKAGES
        .iter()
        .copied()
        .chain(HARDENING_PACKAGES.iter().copied())
        .filter(|p| !installed(p))
        .collect();
    let need_linker = !bpf_linker_ok();
    if need_linker {
        missing.extend(
            LINKER_BUILD_PACKAGES
                .iter()
                .copied()
                .filter(|p| !installed(p)),
        );
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    ensure_nightly_rust_src()?;
    if need_linker {
        install_bpf_linker()?;
    }
    for (tool, version) in CARGO_TOOLS {
        ensure_cargo_tool(tool, version)?;
    }
    Ok(())
}

/// `cargo install TOOL --version VERSION --locked` unless that version is installed.
fn ensure_cargo_tool(tool: &str, version: &str) -> anyhow::Result<()> {
    let listed = Command::new("cargo")
        .args(["install", "--list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{tool} v{version}:")));
    if listed {
        return Ok(());
    }
    run(Command::new("cargo").args(["install", tool, "--version", version, "--locked"]))
        .with_context(|| format!("installing {tool} {version}"))
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("setup: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    };
    // Packages such as prometheus start their system service on install; the tests run their
    // own instances, so forbid service starts for the duration (as Debian container images do).
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(
            policy,
            "#!/bin/sh\n# dhcp-observer setup: no service starts\nexit 101\n",
        )
        .and_then(|()| {
            std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        })
        .context("writing /usr/sbin/policy-rc.d (needs root)")?;
    }
    let result = run(&mut apt(&["update", "-q"])).and_then(|()| {
        run(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(packages))
            .context("installing Debian packages (needs root)")
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn ensure_nightly_rust_src() -> anyhow::Result<()> {
    let has_src = Command::new("rustup")
        .args(["component", "list", "--toolchain", NIGHTLY, "--installed"])
        .output()
        .is_ok_and(|o| {
            let listed = String::from_utf8_lossy(&o.stdout);
            o.status.success() && listed.contains("rust-src") && listed.contains("clippy")
        });
    if has_src {
        return Ok(());
    }
    // Installs the nightly toolchain too if it is missing (the kernel programs need
    // `-Z build-std=core` for the BPF target, and `cargo xtask test` lints them with its clippy).
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
    ]))
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("PATH", path)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))
    .context("building bpf-linker against Debian's LLVM 22")
}
