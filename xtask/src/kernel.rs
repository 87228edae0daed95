//! `cargo xtask kernel`: proves the kernel programs pass the verifier and see a real DHCP
//! exchange on Debian 12's 6.1 kernel, the kernel of the CloudStack routers, whatever kernel the
//! host runs. It boots Debian's own `linux-image-6.1.0-*-amd64` under QEMU (never installing it
//! on the host) with a small initramfs: busybox, the agent, dnsmasq and busybox `udhcpc`. The
//! guest's /init attaches the agent to a veth pair, runs DISCOVER/OFFER/REQUEST/ACK/RELEASE
//! across it, once with the default hooks (TC, attached through netlink clsact since TCX only
//! exists from 6.6) and once with `--xdp-mode auto` (XDP in veth driver mode), prints the
//! agent's JSON records on the serial console and powers off. This task reads the console and
//! checks every record itself.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Debian's metapackage for its current kernel; its dependency names the versioned image.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// Modules the guest loads before the test (their dependencies are added from modules.dep):
/// veth for the link, and what the netlink TC path needs, built as modules by Debian (the guest
/// has no modprobe to load them on demand).
const GUEST_MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];
/// The host's DHCP server, copied into the guest with its libraries.
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// busybox-static (setup.rs installs it): the guest's shell, `ip`, `udhcpc`, `insmod`...
const BUSYBOX: &str = "/bin/busybox";
/// Under a working KVM the kernel prints its banner within a second or two (TCG takes about
/// one); a KVM that cannot run it hangs silently. Past this, KVM is given up for TCG.
const KVM_SIGN_OF_LIFE: Duration = Duration::from_secs(15);
/// Marks the lines the guest's /init writes for this task (kernel messages are silenced once it
/// runs, but the boot log precedes them).
const MARK: &str = "@@ ";

#[derive(clap::Args)]
pub struct KernelArgs {
    /// Accelerator: `auto` uses KVM when /dev/kvm opens, is not PVM, and the kernel comes up
    /// under it; otherwise TCG emulation.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// Put the debug build of the agent in the guest (quicker to build) instead of release.
    #[arg(long)]
    debug: bool,
    /// Give up on a boot after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the whole serial console as it comes instead of the guest's progress lines.
    #[arg(long)]
    verbose: bool,
}

impl Default for KernelArgs {
    /// What `cargo xtask test` runs: the defaults of the command line.
    fn default() -> KernelArgs {
        KernelArgs {
            accel: Accel::Auto,
            debug: false,
            timeout: 300,
            verbose: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// One capture configuration the guest runs: the agent options, and the hooks that must report
/// each message (client messages arrive on ingress, the server's replies leave on egress).
struct Case {
    name: &'static str,
    agent_options: &'static str,
    attached: &'static [&'static str],
    ingress_hook: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "tc",
        agent_options: "",
        attached: &[
            "attached router0: tc_ingress (netlink clsact)",
            "attached router0: tc_egress (netlink clsact)",
        ],
        ingress_hook: "tc_ingress",
    },
    Case {
        name: "xdp",
        agent_options: "--xdp-mode auto",
        attached: &[
            "attached router0: xdp_ingress (driver mode)",
            "attached router0: tc_egress (netlink clsact)",
        ],
        ingress_hook: "xdp_ingress",
    },
];

/// Every message of the exchange, with whether the client sends it (seen on ingress).
const EXCHANGE: &[(&str, bool)] = &[
    ("DISCOVER", true),
    ("OFFER", false),
    ("REQUEST", true),
    ("ACK", false),
    ("RELEASE", true),
];

pub fn run(args: &KernelArgs) -> anyhow::Result<()> {
    let cache = crate::target_dir().join("kernel-6.1");
    let kernel = fetch_kernel(&cache)?;
    eprintln!(
        "kernel: {} {} (cached in {})",
        kernel.package,
        kernel.version,
        cache.display()
    );
    let profile = if args.debug { "debug" } else { "release" };
    let mut build = vec!["build", "--package", "dhcp-agent"];
    if !args.debug {
        build.push("--release");
    }
    crate::cargo(&build)?;
    let agent = crate::target_dir().join(profile).join("dhcp-agent");
    let initramfs = cache.join("initramfs.cpio");
    let archive = build_initramfs(&kernel, &agent)?;
    std::fs::write(&initramfs, &archive)
        .with_context(|| format!("writing {}", initramfs.display()))?;
    eprintln!(
        "initramfs: {} ({} KiB, agent: {profile} build)",
        initramfs.display(),
        archive.len() / 1024
    );

    let timeout = Duration::from_secs(args.timeout);
    let boot_with = |accel| -> anyhow::Result<Boot> {
        let boot = run_qemu(&kernel, &initramfs, accel, timeout, args.verbose)?;
        let log = cache.join(format!("console-{}.log", accel.name()));
        std::fs::write(&log, boot.lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", log.display()))?;
        Ok(boot)
    };
    let (boot, kvm_note) = match args.accel {
        Accel::Auto => match kvm_usable() {
            Err(why) => (boot_with(Accel::Tcg)?, Some(why)),
            Ok(()) => {
                let kvm = boot_with(Accel::Kvm)?;
                if kvm.came_up {
                    (kvm, None)
                } else {
                    let why = format!(
                        "/dev/kvm opens but the kernel printed nothing under KVM in {} s",
                        KVM_SIGN_OF_LIFE.as_secs()
                    );
                    eprintln!("kernel: {why}; falling back to TCG");
                    (boot_with(Accel::Tcg)?, Some(why))
                }
            }
        },
        accel => (boot_with(accel)?, None),
    };
    let log = cache.join(format!("console-{}.log", boot.accel.name()));

    let verdict = check(&boot);
    print_summary(&kernel, &boot, kvm_note.as_deref(), &verdict, &log);
    if verdict.failures.is_empty() {
        println!("kernel: PASS");
        return Ok(());
    }
    // A verifier rejection is in the agent's output of its case (the log ends with the
    // reason), which the console tail may have scrolled past.
    for case in CASES {
        let prefix = format!("{} agent: ", case.name);
        let own = format!("case {}: ", case.name);
        if !verdict.failures.iter().any(|f| f.starts_with(&own)) {
            continue;
        }
        let agent_lines: Vec<&String> = boot
            .lines
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        eprintln!("--- the agent's output in case {} ---", case.name);
        for line in &agent_lines[agent_lines.len().saturating_sub(150)..] {
            eprintln!("{line}");
        }
    }
    eprintln!("--- last lines of the serial console ---");
    for line in &boot.lines[boot.lines.len().saturating_sub(40)..] {
        eprintln!("{line}");
    }
    bail!(
        "the 6.1 kernel test failed: {}",
        verdict.failures.join("; ")
    )
}

/// Debian's kernel, unpacked in the cache.
struct Kernel {
    package: String,
    version: String,
    /// Where the .deb is unpacked (has boot/ and lib/modules/).
    root: PathBuf,
    /// `uname -r` of that kernel, the directory name under lib/modules.
    release: String,
}

impl Kernel {
    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// Downloads and unpacks the kernel Debian 12 currently ships, unless the cache has it.
fn fetch_kernel(cache: &Path) -> anyhow::Result<Kernel> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let package = kernel_package()?;
    let deb = match find_deb(cache, &package)? {
        Some(deb) => deb,
        None => {
            eprintln!("kernel: apt-get download {package}");
            // Downloads into the current directory; as root apt warns that it cannot drop to
            // the _apt user for a directory it cannot read, which is harmless here.
            let status = Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(cache)
                .status()
                .context("running apt-get download")?;
            anyhow::ensure!(
                status.success(),
                "apt-get download {package} failed ({status})"
            );
            find_deb(cache, &package)?
                .with_context(|| format!("apt-get download left no {package} .deb"))?
        }
    };
    let version = dhcp_lab::run(Command::new("dpkg-deb").args([
        "--field".as_ref(),
        deb.as_os_str(),
        "Version".as_ref(),
    ]))?
    .trim()
    .to_string();
    let root = cache.join(&package);
    if !root.join("lib/modules").is_dir() {
        // Unpack next to the final place and rename, so an interrupted run leaves no half tree.
        let partial = cache.join(format!("{package}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .args([&deb, &partial])
            .status()
            .context("running dpkg-deb -x")?;
        anyhow::ensure!(
            status.success(),
            "dpkg-deb -x {} failed ({status})",
            deb.display()
        );
        std::fs::rename(&partial, &root).context("moving the unpacked kernel in place")?;
    }
    let release = std::fs::read_dir(root.join("lib/modules"))
        .context("listing the kernel's lib/modules")?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .next()
        .context("the kernel package has no lib/modules/<release>")?;
    let kernel = Kernel {
        package,
        version,
        root,
        release,
    };
    // The package ships no modules.dep (the postinst runs depmod); make one inside the cache
    // with the host's depmod pointed at the unpacked tree.
    if !kernel.modules().join("modules.dep").is_file() {
        let status = Command::new("depmod")
            .arg("-b")
            .arg(&kernel.root)
            .arg(&kernel.release)
            .status()
            .context("running depmod -b")?;
        anyhow::ensure!(status.success(), "depmod -b failed ({status})");
    }
    Ok(kernel)
}

/// `linux-image-6.1.0-NN-amd64`: what the metapackage depends on in the apt lists.
fn kernel_package() -> anyhow::Result<String> {
    let depends = dhcp_lab::run(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]))?;
    depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|name| name.starts_with("linux-image-6.1.") && name.ends_with("-amd64"))
        .map(str::to_string)
        .with_context(|| {
            format!("apt-cache depends {KERNEL_METAPACKAGE} names no linux-image-6.1.*-amd64 (is this Debian 12 with its apt lists?)")
        })
}

fn find_deb(cache: &Path, package: &str) -> anyhow::Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(cache)
        .with_context(|| format!("listing {}", cache.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    Ok(debs.pop())
}

/// The guest's root filesystem: a newc cpio archive (uncompressed: TCG would spend longer
/// decompressing it than QEMU spends loading it).
fn build_initramfs(kernel: &Kernel, agent: &Path) -> anyhow::Result<Vec<u8>> {
    let mut cpio = Cpio::default();
    for dir in [
        "proc", "sys", "dev", "tmp", "run", "etc", "usr/bin", "usr/sbin",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for /init's output before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &read(Path::new(BUSYBOX))?);
    // Every applet /init and the client use, linked before /init runs (no `--install` step).
    for applet in GUEST_APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox");
    }
    cpio.file("usr/bin/dhcp-agent", 0o755, &read(agent)?);
    cpio.file("usr/sbin/dnsmasq", 0o755, &read(Path::new(DNSMASQ))?);
    for library in shared_libraries(&[Path::new(BUSYBOX), agent, Path::new(DNSMASQ)])? {
        let name = library.to_str().context("non-UTF-8 library path")?;
        cpio.file(name.trim_start_matches('/'), 0o755, &read(&library)?);
    }
    let modules = module_closure(kernel)?;
    for module in &modules {
        let path = format!("lib/modules/{}/{module}", kernel.release);
        cpio.file(&path, 0o644, &read(&kernel.root.join(&path))?);
    }
    // dnsmasq looks its user up even when told to stay root; glibc reads these files.
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/:/bin/sh\n");
    cpio.file("etc/group", 0o644, b"root:x:0:\n");
    cpio.file("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\n");
    cpio.file("udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    let init = INIT_SCRIPT.replace("@MODULES@", &modules.join(" "));
    let cases: Vec<String> = CASES
        .iter()
        .map(|case| format!("run_case {} {}", case.name, case.agent_options))
        .collect();
    let init = init.replace("@CASES@", &cases.join("\n"));
    cpio.file("init", 0o755, init.as_bytes());
    Ok(cpio.finish())
}

const GUEST_APPLETS: &[&str] = &[
    "sh", "mount", "dmesg", "echo", "cat", "cut", "uname", "insmod", "ip", "sed", "grep", "kill",
    "sleep", "usleep", "readlink", "unshare", "nsenter", "udhcpc", "poweroff", "sync",
];

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The shared libraries (and the dynamic loader) the binaries need, from ldd. A static binary
/// needs none: ldd says so and fails, which is fine.
fn shared_libraries(binaries: &[&Path]) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .context("running ldd")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::ensure!(
                text.contains("not a dynamic executable")
                    || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable"),
                "ldd {} failed ({})",
                binary.display(),
                out.status
            );
            continue;
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or, for the loader,
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        for line in text.lines() {
            let resolved = line.split_once("=>").map_or(line, |(_, path)| path);
            if let Some(path) = resolved.split_whitespace().next()
                && path.starts_with('/')
            {
                libraries.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libraries)
}

/// GUEST_MODULES and everything they depend on, as paths relative to lib/modules/<release>,
/// dependencies first (the order insmod needs).
fn module_closure(kernel: &Kernel) -> anyhow::Result<Vec<String>> {
    let dep_file = kernel.modules().join("modules.dep");
    let text = std::fs::read_to_string(&dep_file)
        .with_context(|| format!("reading {}", dep_file.display()))?;
    // "kernel/drivers/net/veth.ko: kernel/...dep.ko ..."
    let deps: Vec<(&str, Vec<&str>)> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| (module, deps.split_whitespace().collect()))
        .collect();
    let mut ordered = Vec::new();
    for name in GUEST_MODULES {
        let file = format!("{name}.ko");
        let (module, _) = deps
            .iter()
            .find(|(module, _)| {
                let base = module.rsplit('/').next().unwrap_or(module);
                base == file || base.starts_with(&format!("{file}."))
            })
            .with_context(|| format!("{file} is not in {}", dep_file.display()))?;
        // Debian 12 ships them uncompressed; a compressed one would need decompressing first.
        anyhow::ensure!(
            module.ends_with(".ko"),
            "{module} is compressed; busybox insmod in the guest cannot load it"
        );
        add_with_deps(module, &deps, &mut ordered);
    }
    Ok(ordered)
}

fn add_with_deps(module: &str, deps: &[(&str, Vec<&str>)], ordered: &mut Vec<String>) {
    if ordered.iter().any(|m| m == module) {
        return;
    }
    if let Some((_, needs)) = deps.iter().find(|(m, _)| *m == module) {
        for need in needs {
            add_with_deps(need, deps, ordered);
        }
    }
    ordered.push(module.to_string());
}

/// A newc ("070701") cpio archive, the format the kernel unpacks into its initial root
/// filesystem. Every entry is owned by root with mtime 0, so the same inputs give the same bytes.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    const DIR: u32 = 0o040_000;
    const FILE: u32 = 0o100_000;
    const SYMLINK: u32 = 0o120_000;
    const CHAR_DEVICE: u32 = 0o020_000;

    /// A directory and its parents, each once (the kernel needs a parent before its entries).
    fn dir(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        if self.dirs.insert(path.to_string()) {
            self.entry(path, Self::DIR | 0o755, (0, 0), b"");
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parent(path);
        self.entry(path, Self::FILE | mode, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entry(path, Self::SYMLINK | 0o777, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, Self::CHAR_DEVICE | mode, (major, minor), b"");
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let nlink = if mode & 0o170_000 == Self::DIR { 2 } else { 1 };
        // magic, then ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize (with its NUL), check: 8 hex digits each.
        let fields = [
            self.inode,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).expect("initramfs member over 4 GiB"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad(4);
        self.out.extend_from_slice(data);
        self.pad(4);
    }

    fn pad(&mut self, to: usize) {
        while !self.out.len().is_multiple_of(to) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.pad(512);
        self.out
    }
}

/// PID 1 of the guest. Its `@@ ` lines are what this task follows and checks; each case's
/// agent output, client output and JSON records are printed after the case, prefixed with the
/// case name, so no kernel message can split them.
const INIT_SCRIPT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Only emergencies on the console from here: the lines below are parsed.
dmesg -n 1
say() { echo "@@ $*"; }
result=PASS
fail() { say "FAIL $*"; result=FAIL; }
finish() {
    say "uptime $(cut -d' ' -f1 /proc/uptime)"
    say "RESULT $result"
    sync
    poweroff -f
}
say "init uptime $(cut -d' ' -f1 /proc/uptime)"
say "uname $(uname -r)"
for module in @MODULES@; do
    insmod "/lib/modules/$(uname -r)/$module" || { fail "insmod $module"; finish; }
done

# The router side stays in this namespace; the client gets its own, held by a sleeping process.
ip link set lo up
ip link add router0 type veth || { fail "creating the veth pair"; finish; }
# busybox ip cannot name the peer: the kernel called it vethN.
peer=$(ip -o link show | sed -n 's/^[0-9]*: \([^@]*\)@router0.*/\1/p')
ip link set router0 address 52:54:00:77:00:01
ip addr add 10.77.0.1/24 dev router0
ip link set router0 up
unshare -n sleep 1000000 &
client_ns=$!
while [ "$(readlink /proc/$client_ns/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do usleep 10000; done
in_client() { nsenter -t "$client_ns" -n "$@"; }
ip link set "$peer" netns "$client_ns" || { fail "moving $peer to the client namespace"; finish; }
in_client ip link set "$peer" name client0
in_client ip link set client0 address 52:54:00:77:00:02
in_client ip link set lo up
in_client ip link set client0 up

dnsmasq --conf-file=/dev/null --port=0 --interface=router0 --bind-interfaces \
    --dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h --dhcp-leasefile=/tmp/dnsmasq.leases \
    --pid-file=/run/dnsmasq.pid --user=root --group=root --no-resolv --no-hosts \
    --no-ping --log-dhcp --log-facility=/tmp/dnsmasq.log || { fail "dnsmasq did not start"; finish; }

# wait_line FILE PATTERN PID: waits up to 120 s for PATTERN in FILE while process PID lives;
# leaves the tenths of a second waited in $waited.
wait_line() {
    waited=0
    until grep -q "$2" "$1"; do
        kill -0 "$3" 2>/dev/null && [ "$waited" -lt 1200 ] || return 1
        usleep 100000
        waited=$((waited + 1))
    done
}

run_case() {
    name=$1
    shift
    say "case $name begin: dhcp-agent watch --json --iface router0 $*"
    dhcp-agent watch --json --color never --iface router0 "$@" >"/tmp/$name.json" 2>"/tmp/$name.err" &
    agent=$!
    # Loading and verifying take a while under emulation.
    if wait_line "/tmp/$name.err" '^watching' "$agent"; then
        say "case $name watching after $((waited / 10)).$((waited % 10)) s"
        # -R: release the lease on SIGTERM (a unicast RELEASE). busybox 1.35 sends none when
        # -q makes it quit, so the client is stopped once bound instead.
        # nsenter itself, not the in_client function: $! must be udhcpc (nsenter execs it), not
        # a subshell that would take the signal.
        nsenter -t "$client_ns" -n udhcpc -i client0 -f -R -t 4 -T 3 -s /udhcpc.script \
            -x "hostname:case-$name" >"/tmp/$name.client" 2>&1 &
        client=$!
        wait_line "/tmp/$name.client" 'script: bound' "$client" || fail "case $name: udhcpc got no lease"
        kill -TERM "$client" 2>/dev/null
        wait "$client"
        # Give the RELEASE time to reach the agent.
        sleep 1
    else
        fail "case $name: the agent did not start watching"
    fi
    kill -TERM "$agent" 2>/dev/null
    wait "$agent"
    say "case $name agent exit status $?"
    sed "s/^/$name agent: /" "/tmp/$name.err"
    [ -f "/tmp/$name.client" ] && sed "s/^/$name client: /" "/tmp/$name.client"
    sed "s/^/$name json: /" "/tmp/$name.json"
    for type in DISCOVER OFFER REQUEST ACK RELEASE; do
        grep -q "\"message_type\":\"$type\"" "/tmp/$name.json" || fail "case $name: no $type record"
    done
    say "case $name end"
}

@CASES@

sed "s/^/dnsmasq: /" /tmp/dnsmasq.log
finish
"#;

/// udhcpc calls this on each state change; it configures the lease so the RELEASE (a unicast
/// from the leased address) can leave.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
    deconfig) ip addr flush dev "$interface" ;;
    bound|renew) ip addr add "$ip/$mask" dev "$interface" ;;
esac
echo "udhcpc script: $1 ${ip:-}"
"#;

/// Why KVM cannot be used, when that shows without booting: /dev/kvm does not open, or it is
/// PVM (`kvm_pvm`, the KVM some cloud VMs offer without nested virtualisation), which runs only
/// guest kernels built for PVM and hangs silently with Debian's.
fn kvm_usable() -> Result<(), String> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(
            "/dev/kvm is PVM (kvm_pvm): it boots only PVM guest kernels, not Debian's".into(),
        );
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|err| format!("/dev/kvm: {err}"))
}

/// One boot: the console lines and how long it took.
struct Boot {
    accel: Accel,
    lines: Vec<String>,
    wall: Duration,
    /// The kernel printed its banner (false: the accelerator never got it running).
    came_up: bool,
    /// Why the boot ended other than by the guest powering off, if it did.
    aborted: Option<String>,
}

/// Boots the kernel with the initramfs and collects the serial console until the guest powers
/// off or `timeout` passes. Under KVM, gives up early if the kernel has not printed its banner
/// within KVM_SIGN_OF_LIFE.
fn run_qemu(
    kernel: &Kernel,
    initramfs: &Path,
    accel: Accel,
    timeout: Duration,
    verbose: bool,
) -> anyhow::Result<Boot> {
    let sign_of_life = (accel == Accel::Kvm).then_some(KVM_SIGN_OF_LIFE);
    eprintln!(
        "kernel: booting {} under {} (timeout {} s)",
        kernel.release,
        accel.name(),
        timeout.as_secs()
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel.name(), "-smp", "2", "-m", "512M"])
        // Serial console on stdout only: no display, no monitor, no NIC (the test makes its own
        // veth pair), and power-off or panic ends QEMU instead of rebooting.
        .args([
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-nic",
            "none",
        ])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=6"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    // Lines from QEMU's stdout (the console) and stderr (its own errors) through one channel,
    // so the wait below can time out.
    let (sender, lines) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf);
                if sender.send(line.trim_end().to_string()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(sender);
    let mut boot = Boot {
        accel,
        lines: Vec::new(),
        wall: Duration::ZERO,
        came_up: false,
        aborted: None,
    };
    loop {
        let deadline = match sign_of_life {
            Some(limit) if !boot.came_up => limit,
            _ => timeout,
        };
        let Some(left) = deadline.checked_sub(start.elapsed()) else {
            boot.aborted = Some(if boot.came_up {
                format!("no power-off within {} s", timeout.as_secs())
            } else {
                format!("no kernel output within {} s", deadline.as_secs())
            });
            // Only our own child, by its handle.
            let _ = child.kill();
            break;
        };
        match lines.recv_timeout(left) {
            Ok(line) => {
                boot.came_up |= line.contains("Linux version");
                if verbose {
                    eprintln!("{line}");
                } else if let Some(progress) = line.strip_prefix(MARK) {
                    eprintln!("guest: {progress}");
                }
                boot.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            // Both streams closed: QEMU exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    boot.wall = start.elapsed();
    if boot.aborted.is_none() && !status.success() {
        boot.aborted = Some(format!("qemu exited with {status}"));
    }
    Ok(boot)
}

/// What the console shows, checked against what the test must have done.
struct Verdict {
    failures: Vec<String>,
    /// Per case: one line describing the attachments and records seen.
    cases: Vec<String>,
    uname: Option<String>,
    init_uptime: Option<f64>,
    end_uptime: Option<f64>,
}

fn check(boot: &Boot) -> Verdict {
    let marks: Vec<&str> = boot
        .lines
        .iter()
        .filter_map(|line| line.strip_prefix(MARK))
        .collect();
    let mark_value = |key: &str| {
        marks
            .iter()
            .find_map(|m| m.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    let mut verdict = Verdict {
        failures: Vec::new(),
        cases: Vec::new(),
        uname: mark_value("uname "),
        init_uptime: mark_value("init uptime ").and_then(|v| v.parse().ok()),
        end_uptime: mark_value("uptime ").and_then(|v| v.parse().ok()),
    };
    if let Some(why) = &boot.aborted {
        verdict.failures.push(why.clone());
    }
    match verdict.uname.as_deref() {
        Some(release) if release.starts_with("6.1.") => {}
        Some(other) => verdict
            .failures
            .push(format!("the guest runs {other}, not a 6.1 kernel")),
        None => {
            // Nothing else can be there.
            verdict.failures.push("the guest's /init never ran".into());
            return verdict;
        }
    }
    for failure in marks.iter().filter_map(|m| m.strip_prefix("FAIL ")) {
        verdict.failures.push(format!("guest: {failure}"));
    }
    match mark_value("RESULT ").as_deref() {
        Some("PASS") => {}
        Some(other) => verdict.failures.push(format!("guest result {other}")),
        None => verdict.failures.push("the guest did not finish".into()),
    }
    for case in CASES {
        let began = format!("case {} begin", case.name);
        if marks.iter().any(|m| m.starts_with(&began)) {
            check_case(boot, case, &mut verdict);
        } else {
            verdict
                .failures
                .push(format!("case {} never ran", case.name));
        }
    }
    verdict
}

/// One case: the agent attached the expected hooks with no error, and its JSON records show the
/// whole exchange, client messages on the ingress hook and the server's on TC egress, in one
/// transaction (the ACK's xid is the DISCOVER's).
fn check_case(boot: &Boot, case: &Case, verdict: &mut Verdict) {
    let name = case.name;
    let agent_prefix = format!("{name} agent: ");
    let agent_lines: Vec<&str> = boot
        .lines
        .iter()
        .filter_map(|line| line.strip_prefix(&agent_prefix))
        .collect();
    let mut problems = Vec::new();
    for expected in case.attached {
        if !agent_lines.contains(expected) {
            problems.push(format!("no \"{expected}\""));
        }
    }
    if let Some(error) = agent_lines.iter().find(|l| l.starts_with("dhcp-agent:")) {
        // The load error carries the verifier log; the console tail shows it in full.
        problems.push(format!("agent error: {}", truncate(error, 300)));
    }
    if !agent_lines.iter().any(|l| l.starts_with("watching")) {
        problems.push("the agent never said \"watching\"".into());
    }
    let json_prefix = format!("{name} json: ");
    let mut records = Vec::new();
    for line in boot
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix(&json_prefix))
    {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(record) => records.push(record),
            Err(err) => problems.push(format!(
                "unparsable record ({err}): {}",
                truncate(line, 120)
            )),
        }
    }
    let field = |record: &serde_json::Value, key: &str| {
        record[key].as_str().unwrap_or_default().to_string()
    };
    let mut seen = Vec::new();
    let mut xids = Vec::new();
    for &(message, from_client) in EXCHANGE {
        let hook = if from_client {
            case.ingress_hook
        } else {
            "tc_egress"
        };
        let found = records.iter().find(|r| {
            field(r, "message_type") == message
                && field(r, "hook") == hook
                && field(r, "interface") == "router0"
        });
        match found {
            Some(record) => {
                seen.push(format!("{message}@{hook}"));
                xids.push((message, record["xid"].clone()));
            }
            None => problems.push(format!("no {message} record from {hook} on router0")),
        }
    }
    let xid_of = |message: &str| xids.iter().find(|(m, _)| *m == message).map(|(_, x)| x);
    if let (Some(discover), Some(ack)) = (xid_of("DISCOVER"), xid_of("ACK"))
        && discover != ack
    {
        problems.push(format!("ACK xid {ack} is not the DISCOVER's {discover}"));
    }
    verdict.cases.push(format!(
        "{name:<3}: {} records; attached {}; saw {}",
        records.len(),
        agent_lines
            .iter()
            .filter_map(|line| line.strip_prefix("attached router0: "))
            .collect::<Vec<_>>()
            .join(", "),
        if seen.is_empty() {
            "nothing".into()
        } else {
            seen.join(" ")
        }
    ));
    verdict
        .failures
        .extend(problems.into_iter().map(|p| format!("case {name}: {p}")));
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn print_summary(
    kernel: &Kernel,
    boot: &Boot,
    kvm_note: Option<&str>,
    verdict: &Verdict,
    log: &Path,
) {
    println!(
        "kernel: Debian {} {}; guest uname -r: {}",
        kernel.package,
        kernel.version,
        verdict.uname.as_deref().unwrap_or("(never reported)")
    );
    match kvm_note {
        Some(note) => println!("kernel: accelerator {} ({note})", boot.accel.name()),
        None => println!("kernel: accelerator {}", boot.accel.name()),
    }
    for case in &verdict.cases {
        println!("kernel: {case}");
    }
    let secs = |v: Option<f64>| v.map_or("?".to_string(), |s| format!("{s:.1} s"));
    println!(
        "kernel: boot to /init {}, /init to power-off {}, wall time {:.1} s (qemu start to exit)",
        secs(verdict.init_uptime),
        secs(
            verdict
                .end_uptime
                .zip(verdict.init_uptime)
                .map(|(end, init)| end - init)
        ),
        boot.wall.as_secs_f64()
    );
    println!("kernel: serial console saved in {}", log.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console of a guest where everything worked, as /init prints it.
    fn passing_console() -> Vec<String> {
        let mut lines = vec![
            "[    0.000000] Linux version 6.1.0-56-amd64".to_string(),
            "@@ init uptime 1.50".into(),
            "@@ uname 6.1.0-56-amd64".into(),
        ];
        for case in CASES {
            let name = case.name;
            lines.push(format!("@@ case {name} begin: dhcp-agent watch"));
            for attached in case.attached {
                lines.push(format!("{name} agent: {attached}"));
            }
            lines.push(format!("{name} agent: watching; Ctrl-C to stop"));
            for &(message, from_client) in EXCHANGE {
                let hook = if from_client {
                    case.ingress_hook
                } else {
                    "tc_egress"
                };
                let xid = if message == "RELEASE" { "0x2" } else { "0x1" };
                lines.push(format!(
                    r#"{name} json: {{"interface":"router0","hook":"{hook}","message_type":"{message}","xid":"{xid}"}}"#
                ));
            }
            lines.push(format!("@@ case {name} end"));
        }
        lines.extend(["@@ uptime 9.00".into(), "@@ RESULT PASS".into()]);
        lines
    }

    fn boot_of(lines: Vec<String>) -> Boot {
        Boot {
            accel: Accel::Tcg,
            lines,
            wall: Duration::from_secs(10),
            came_up: true,
            aborted: None,
        }
    }

    #[test]
    fn a_complete_exchange_on_every_hook_passes() {
        let verdict = check(&boot_of(passing_console()));
        assert_eq!(verdict.failures, Vec::<String>::new());
        assert_eq!(verdict.uname.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(verdict.init_uptime, Some(1.5));
        assert_eq!(verdict.end_uptime, Some(9.0));
    }

    #[test]
    fn a_verifier_rejection_and_a_missing_record_fail_their_case() {
        let lines = passing_console()
            .into_iter()
            .filter(|l| !(l.starts_with("xdp ") && l.contains("RELEASE")))
            .map(|l| {
                if l == "tc agent: watching; Ctrl-C to stop" {
                    "tc agent: dhcp-agent: preparing program tc_ingress failed: Verifier output: R1 invalid mem access".into()
                } else {
                    l
                }
            })
            .collect();
        let failures = check(&boot_of(lines)).failures;
        assert!(failures.iter().any(|f| f.starts_with("case tc: agent error:") && f.contains("invalid mem access")), "{failures:?}");
        assert!(
            failures
                .iter()
                .any(|f| f == "case tc: the agent never said \"watching\""),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|f| f == "case xdp: no RELEASE record from xdp_ingress on router0"),
            "{failures:?}"
        );
    }

    #[test]
    fn a_guest_that_never_ran_init_is_one_failure() {
        let mut boot = boot_of(vec!["Booting from ROM...".into()]);
        boot.aborted = Some("no kernel output within 15 s".into());
        assert_eq!(
            check(&boot).failures,
            [
                "no kernel output within 15 s",
                "the guest's /init never ran"
            ]
        );
    }

    /// The archive lists as expected with busybox's own cpio (an independent reader).
    #[test]
    fn the_initramfs_is_a_newc_archive_busybox_reads() {
        let mut cpio = Cpio::default();
        cpio.char_device("dev/console", 0o600, 5, 1);
        cpio.file("usr/bin/tool", 0o755, b"#!/bin/sh\n");
        cpio.symlink("bin/sh", "busybox");
        let archive = cpio.finish();
        assert_eq!(archive.len() % 512, 0);
        let mut child = Command::new(BUSYBOX)
            .args(["cpio", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("busybox (busybox-static)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            listed,
            [
                "dev",
                "dev/console",
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "bin",
                "bin/sh"
            ]
        );
    }
}
