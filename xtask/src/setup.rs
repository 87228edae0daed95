//! What each task needs on a fresh Debian machine, declared once with why, and the installing of
//! only what is missing. Each task sets up its own needs (`lab` never installs QEMU), prints
//! what it will install before doing it, and never removes a Debian package: every apt run is
//! simulated first, and one that would remove a package is retried from the suite the doomed
//! package came from (a backports build) or refused.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The tasks whose needs can be set up (`cargo xtask setup TASK...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scope {
    /// Building the agent: the pinned nightly and bpf-linker (every task but fuzz needs these).
    Build,
    /// The lab's peers: dnsmasq, dhclient, iproute2.
    Lab,
    /// Everything `cargo xtask test` runs: all of these plus the integration tests' peers.
    Test,
    /// The lab's, plus iperf3, tshark, tcpdump.
    Bench,
    /// The nightly and cargo-fuzz.
    Fuzz,
    /// QEMU, busybox-static, kmod, dnsmasq.
    Kernel,
    /// cargo-deb, dpkg-dev, systemd, man-db, systemd-container.
    Dist,
    /// The lab's.
    Soak,
}

/// One thing a task needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    /// A Debian package, by name.
    Deb(&'static str),
    /// A cargo subcommand: crate and version (pinned to what rustc 1.95 builds).
    Cargo(&'static str, &'static str),
    /// The pinned nightly with rust-src and clippy.
    Nightly,
    /// bpf-linker, built against Debian's LLVM 22 ([`LINKER_BUILD_PACKAGES`]) when missing.
    BpfLinker,
}

/// A need and why it is there.
#[derive(Debug)]
struct Need {
    tool: Tool,
    why: &'static str,
}

const fn need(tool: Tool, why: &'static str) -> Need {
    Need { tool, why }
}

const BUILD: &[Need] = &[
    need(
        Tool::Nightly,
        "the kernel programs build with -Z build-std=core for the BPF target (rust-src); test lints them with its clippy",
    ),
    need(
        Tool::BpfLinker,
        "links the kernel programs the agent embeds",
    ),
];
/// The router's peers the lab runs (dhcp-lab): `dnsmasq-base` is dnsmasq without the system
/// service, since the lab starts its own instances and must never start the host's.
const LAB: &[Need] = &[
    need(Tool::Deb("dnsmasq-base"), "the routers' DHCP server"),
    need(
        Tool::Deb("dnsmasq-utils"),
        "dhcp_release, dhcp_release6 and dhcp_lease_time: VMs expunged (IPv4 and IPv6) and lease times read",
    ),
    need(
        Tool::Deb("isc-dhcp-client"),
        "dhclient: the VMs' DHCP client (-4 and -6)",
    ),
    need(
        Tool::Deb("iproute2"),
        "ip and tc: namespaces, veth pairs, qdiscs",
    ),
];
const BENCH: &[Need] = &[
    need(
        Tool::Deb("iperf3"),
        "the forwarding benchmark's bulk flows (its own server, in a namespace)",
    ),
    need(
        Tool::Deb("tshark"),
        "the offline analysis is compared with tshark's",
    ),
    need(
        Tool::Deb("tcpdump"),
        "the offline analysis and forwarding benchmarks write captures",
    ),
    need(
        Tool::Deb("binutils"),
        "strip: the footprint benchmark measures the stripped agent",
    ),
];
const FUZZ: &[Need] = &[
    need(
        Tool::Nightly,
        "cargo fuzz runs on the nightly (-Z sanitizer)",
    ),
    need(
        Tool::Cargo("cargo-fuzz", "0.13.2"),
        "builds and runs the fuzz targets",
    ),
];
const KERNEL: &[Need] = &[
    need(
        Tool::Deb("qemu-system-x86"),
        "boots Debian 12's 6.1 kernel (the routers' kernel)",
    ),
    need(
        Tool::Deb("busybox-static"),
        "the initramfs's shell, ip, tc and udhcpc",
    ),
    need(
        Tool::Deb("kmod"),
        "depmod writes the modules.dep the kernel package leaves to its postinst",
    ),
    need(
        Tool::Deb("dnsmasq-base"),
        "the DHCP server copied into the initramfs",
    ),
];
const DIST: &[Need] = &[
    need(
        Tool::Cargo("cargo-deb", "3.8.0"),
        "builds the Debian packages",
    ),
    need(
        Tool::Deb("dpkg-dev"),
        "dpkg-shlibdeps: the package's Depends",
    ),
    need(
        Tool::Deb("systemd"),
        "systemd-analyze verify checks the unit",
    ),
    need(
        Tool::Deb("man-db"),
        "systemd-analyze verify runs man for the unit's man page",
    ),
    need(
        Tool::Deb("systemd-container"),
        "systemd-nspawn boots a throwaway root to start the unit",
    ),
];
/// The integration tests' own peers, beyond the lab's (dhcp-agent/tests).
const TESTS: &[Need] = &[
    need(
        Tool::Deb("prometheus"),
        "the metrics test scrapes the agent with a real server; metrics and deploy run promtool (its service is never started)",
    ),
    need(Tool::Deb("tcpdump"), "the pcap test's reference capture"),
    need(
        Tool::Deb("tshark"),
        "the pcap test reads the agent's capture back",
    ),
    need(
        Tool::Deb("systemd"),
        "the deploy test runs systemd-analyze verify",
    ),
    need(
        Tool::Deb("kea-dhcp4-server"),
        "the Kea tests run their own kea-dhcp4 (2.2, with the lease_cmds hook from kea-common); its service is never started",
    ),
    need(
        Tool::Deb("kea-dhcp6-server"),
        "the Kea configuration test checks its DHCPv6 sample with kea-dhcp6 -t; its service is never started",
    ),
];

impl Scope {
    /// The scopes whose needs this one takes in whole, then its own needs.
    fn parts(self) -> (&'static [Scope], &'static [Need]) {
        use Scope::*;
        match self {
            Build => (&[], BUILD),
            Lab => (&[Build], LAB),
            // The soak runs the daemon on the lab and reads its metrics with a Rust client.
            Soak => (&[Lab], &[]),
            Bench => (&[Lab], BENCH),
            Fuzz => (&[], FUZZ),
            Kernel => (&[Build], KERNEL),
            Dist => (&[Build], DIST),
            // `test` runs the workspace's tests (on the lab), then fuzz, kernel, dist, bench
            // and soak.
            Test => (&[Lab, Fuzz, Kernel, Dist, Bench, Soak], TESTS),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Build => "build",
            Scope::Lab => "lab",
            Scope::Test => "test",
            Scope::Bench => "bench",
            Scope::Fuzz => "fuzz",
            Scope::Kernel => "kernel",
            Scope::Dist => "dist",
            Scope::Soak => "soak",
        }
    }
}

/// Every need of `scopes`, each once, with the task that asks for it first and why.
fn union(scopes: &[Scope]) -> Vec<(Scope, &'static Need)> {
    fn add(scope: Scope, out: &mut Vec<(Scope, &'static Need)>) {
        let (parts, own) = scope.parts();
        for &part in parts {
            add(part, out);
        }
        for n in own {
            if !out.iter().any(|(_, seen)| seen.tool == n.tool) {
                out.push((scope, n));
            }
        }
    }
    let mut out = Vec::new();
    for &scope in scopes {
        add(scope, &mut out);
    }
    out
}

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

/// Installs what `scopes` need and is missing, saying first what and why.
pub fn ensure(scopes: &[Scope]) -> anyhow::Result<()> {
    let names: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
    let label = names.join(", ");
    let needs = union(scopes);
    let mut debs: Vec<(String, String)> = Vec::new();
    let mut rest: Vec<(Scope, &Need)> = Vec::new(); // cargo and rustup installs
    for &(scope, n) in &needs {
        match n.tool {
            Tool::Deb(p) if !installed(p) => {
                debs.push((p.into(), format!("{}: {}", scope.name(), n.why)))
            }
            Tool::Deb(_) => {}
            Tool::Cargo(tool, version) if !cargo_tool_installed(tool, version) => {
                rest.push((scope, n))
            }
            Tool::Nightly if !nightly_ok() => rest.push((scope, n)),
            Tool::BpfLinker if !bpf_linker_ok() => {
                for p in LINKER_BUILD_PACKAGES.iter().filter(|p| !installed(p)) {
                    if !debs.iter().any(|(d, _)| d == p) {
                        debs.push((
                            (*p).into(),
                            format!("{}: building bpf-linker", scope.name()),
                        ));
                    }
                }
                rest.push((scope, n));
            }
            _ => {}
        }
    }
    if debs.is_empty() && rest.is_empty() {
        eprintln!("setup ({label}): everything needed is installed");
        return Ok(());
    }
    eprintln!("setup ({label}) will install:");
    for (p, why) in &debs {
        eprintln!("  Debian package {p} ({why})");
    }
    for (scope, n) in &rest {
        let what = match n.tool {
            Tool::Cargo(tool, version) => format!("cargo install {tool} {version} --locked"),
            Tool::Nightly => format!("Rust toolchain {NIGHTLY} with rust-src and clippy"),
            Tool::BpfLinker => {
                format!("bpf-linker {BPF_LINKER_VERSION} (cargo install, against LLVM 22)")
            }
            Tool::Deb(_) => unreachable!("listed above"),
        };
        eprintln!("  {what} ({}: {})", scope.name(), n.why);
    }
    if !debs.is_empty() {
        let packages: Vec<&str> = debs.iter().map(|(p, _)| p.as_str()).collect();
        apt_install(&packages)?;
    }
    // The nightly first (bpf-linker's build and cargo-fuzz's runs need no order, but a
    // failure to reach rustup's server shows first), then bpf-linker, then the cargo tools.
    let rank = |tool: Tool| match tool {
        Tool::Nightly => 0,
        Tool::BpfLinker => 1,
        Tool::Cargo(..) | Tool::Deb(_) => 2,
    };
    rest.sort_by_key(|(_, n)| rank(n.tool));
    for (_, n) in &rest {
        match n.tool {
            Tool::Nightly => install_nightly()?,
            Tool::BpfLinker => install_bpf_linker()?,
            Tool::Cargo(tool, version) => install_cargo_tool(tool, version)?,
            Tool::Deb(_) => {}
        }
    }
    Ok(())
}

fn cargo_tool_installed(tool: &str, version: &str) -> bool {
    Command::new("cargo")
        .args(["install", "--list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{tool} v{version}:")))
}

/// `cargo install TOOL --version VERSION --locked`.
fn install_cargo_tool(tool: &str, version: &str) -> anyhow::Result<()> {
    run(Command::new("cargo").args(["install", tool, "--version", version, "--locked"]))
        .with_context(|| format!("installing {tool} {version}"))
}

fn installed(package: &str) -> bool {
    installed_version(package).is_some()
}

/// The installed version of `package`, if it is installed.
fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once('\t')?;
    (status == "install ok installed").then(|| version.to_owned())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("setup: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn apt(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

/// What an `apt-get -s install` would do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Simulation {
    /// Packages it would install or upgrade: (name, version).
    installs: Vec<(String, String)>,
    /// Packages it would remove: (name, installed version).
    removals: Vec<(String, String)>,
}

/// Reads the `Inst NAME [OLD] (NEW SUITE [ARCH])` and `Remv NAME [VERSION]` lines of a
/// simulation.
fn parse_simulation(output: &str) -> Simulation {
    let mut sim = Simulation::default();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        let (Some(action), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        let bracketed = |open: char, close: char| {
            rest.iter()
                .find_map(|w| w.strip_prefix(open))
                .map(|w| w.trim_end_matches(close).to_owned())
                .unwrap_or_default()
        };
        match action {
            "Inst" => sim.installs.push((name.into(), bracketed('(', ')'))),
            "Remv" | "Purg" => sim.removals.push((name.into(), bracketed('[', ']'))),
            _ => {}
        }
    }
    sim
}

/// The suite a package at `version` was installed from, when the version names one that the
/// machine's mirror also serves: `~bpoNN` is Debian NN's backports.
fn suite_of_version(version: &str) -> Option<String> {
    let (_, after) = version.split_once("~bpo")?;
    let release: String = after.chars().take_while(char::is_ascii_digit).collect();
    let codename = match release.as_str() {
        "10" => "buster",
        "11" => "bullseye",
        "12" => "bookworm",
        "13" => "trixie",
        "14" => "forky",
        _ => return None,
    };
    Some(format!("{codename}-backports"))
}

/// The Debian archive URI of a deb822 sources file's stanza whose Suites hold `codename`.
fn mirror_of(sources: &str, codename: &str) -> Option<String> {
    sources.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let suites = field("Suites")?;
        suites
            .split_whitespace()
            .any(|s| s == codename)
            .then(|| field("URIs"))
            .flatten()
            .and_then(|uris| uris.split_whitespace().next())
            .map(str::to_owned)
    })
}

/// `apt-get` with the machine's sources plus `suite` for this run only: a sources folder
/// holding copies of the machine's files and one for the suite. (A folder with the suite alone
/// would make `apt-get update` delete every other source's lists.)
struct ExtraSuite {
    dir: PathBuf,
    suite: String,
}

impl ExtraSuite {
    fn new(suite: &str) -> anyhow::Result<Self> {
        let parts = Path::new("/etc/apt/sources.list.d");
        let dir = std::env::temp_dir().join(format!("xtask-setup-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let extra = Self {
            dir,
            suite: suite.into(),
        };
        let codename = suite.split('-').next().unwrap_or(suite);
        let mut mirror = None;
        for entry in
            std::fs::read_dir(parts).with_context(|| format!("reading {}", parts.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".sources") || name.ends_with(".list") {
                let text = std::fs::read_to_string(&path)?;
                mirror = mirror.or_else(|| mirror_of(&text, codename));
                std::fs::write(extra.dir.join(name), text)?;
            }
        }
        let mirror = mirror.unwrap_or_else(|| "http://deb.debian.org/debian".into());
        std::fs::write(
            extra.dir.join("xtask-setup-extra-suite.sources"),
            format!(
                "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        )?;
        eprintln!("setup: adding {suite} ({mirror}) for this install only");
        Ok(extra)
    }

    fn apt(&self, args: &[&str]) -> Command {
        let mut cmd = apt(&[
            "-o",
            &format!("Dir::Etc::sourceparts={}", self.dir.display()),
        ]);
        cmd.args(args);
        if args.first() == Some(&"install") {
            cmd.args(["-t", &self.suite]);
        }
        cmd
    }
}

impl Drop for ExtraSuite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn simulate(mut cmd: Command, packages: &[&str]) -> anyhow::Result<Simulation> {
    cmd.args(["-s", "-q", "--no-install-recommends"])
        .args(packages);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_simulation(&String::from_utf8_lossy(&out.stdout)))
}

/// Installs `packages`, never removing one: see the module's comment.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    // Packages such as prometheus and kea-dhcp4-server start their system service on install;
    // the tests run their own instances (a Kea service would also take the host's port 67), so
    // forbid service starts for the duration (as Debian container images do).
    let policy = Path::new("/usr/sbin/policy-rc.d");
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
    let result = apt_install_keeping_all(packages);
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn apt_install_keeping_all(packages: &[&str]) -> anyhow::Result<()> {
    const INSTALL: &[&str] = &[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--no-remove",
    ];
    run(&mut apt(&["update", "-q"]))?;
    let sim = simulate(apt(&["install"]), packages)?;
    if sim.removals.is_empty() {
        return run(apt(INSTALL).args(packages)).context("installing Debian packages (needs root)");
    }
    // Which of the packages would remove something: those go in a run of their own.
    let mut culprits = Vec::new();
    for &p in packages {
        if !simulate(apt(&["install"]), &[p])?.removals.is_empty() {
            culprits.push(p);
        }
    }
    if culprits.is_empty() {
        return Err(refusal(packages, &sim, None));
    }
    let others: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !culprits.contains(p))
        .collect();
    let suites: BTreeSet<String> = sim
        .removals
        .iter()
        .filter_map(|(_, version)| suite_of_version(version))
        .collect();
    let [suite] = Vec::from_iter(suites)
        .try_into()
        .map_err(|_| refusal(&culprits, &sim, None))?;
    eprintln!(
        "setup: installing {} from the machine's suites would remove {}, installed from {suite}; trying {suite}",
        culprits.join(" "),
        names(&sim.removals),
    );
    let extra = ExtraSuite::new(&suite)?;
    run(&mut extra.apt(&["update", "-q"]))?;
    let from_suite = simulate(extra.apt(&["install"]), &culprits)?;
    if !from_suite.removals.is_empty() {
        return Err(refusal(&culprits, &from_suite, Some(&suite)));
    }
    eprintln!(
        "setup: from {suite}, apt installs {} and removes nothing",
        from_suite
            .installs
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !others.is_empty() {
        run(apt(INSTALL).args(&others)).context("installing Debian packages (needs root)")?;
    }
    run(extra.apt(INSTALL).args(&culprits)).with_context(|| {
        format!(
            "installing {} from {suite} (needs root)",
            culprits.join(" ")
        )
    })
}

fn names(packages: &[(String, String)]) -> String {
    packages
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error that refuses an install that would remove packages: which, why (their Breaks and
/// Conflicts lines, and those of the packages to install that name them) and what to do.
fn refusal(packages: &[&str], sim: &Simulation, tried: Option<&str>) -> anyhow::Error {
    let removed: Vec<&str> = sim.removals.iter().map(|(n, _)| n.as_str()).collect();
    let mut why = Vec::new();
    for name in removed
        .iter()
        .copied()
        .chain(sim.installs.iter().map(|(n, _)| n.as_str()))
    {
        let fields = Command::new("apt-cache")
            .args(["show", "--no-all-versions", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let installed = Command::new("dpkg-query")
            .args([
                "-W",
                "-f=Breaks: ${Breaks}\nConflicts: ${Conflicts}\n",
                name,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        why.extend(conflict_lines(
            name,
            &format!("{installed}\n{fields}"),
            &removed,
            &sim.installs,
        ));
    }
    why.sort();
    why.dedup();
    anyhow::anyhow!(
        "refusing to install {}: apt would remove {}{}.\nWhy: {}\nNothing was installed. To \
         proceed by hand, install a build of {} that does not break them (e.g. from the suite \
         the removed packages came from, with `apt-get install -t SUITE`), or remove them \
         yourself if nothing needs them, then run this again.",
        packages.join(" "),
        names(&sim.removals),
        tried
            .map(|s| format!(" (even from {s})"))
            .unwrap_or_default(),
        if why.is_empty() {
            "apt's simulation (apt-get -s install) shows no Breaks or Conflicts line; run it to see"
                .into()
        } else {
            why.join("; ")
        },
        packages.join(" "),
    )
}

/// The Breaks and Conflicts lines of package `owner`'s control `fields` that name one of the
/// other packages involved (to be removed or installed).
fn conflict_lines(
    owner: &str,
    fields: &str,
    removed: &[&str],
    installs: &[(String, String)],
) -> Vec<String> {
    let involved = |dep: &str| {
        let dep_name = dep.split_whitespace().next().unwrap_or_default();
        dep_name != owner
            && (removed.contains(&dep_name) || installs.iter().any(|(n, _)| n == dep_name))
    };
    fields
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Breaks:")
                .map(|v| ("Breaks", v))
                .or_else(|| l.strip_prefix("Conflicts:").map(|v| ("Conflicts", v)))
        })
        .flat_map(|(kind, value)| {
            value
                .split(',')
                .map(str::trim)
                .filter(|dep| involved(dep))
                .map(move |dep| format!("{owner} {kind}: {dep}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn nightly_ok() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", NIGHTLY, "--installed"])
        .output()
        .is_ok_and(|o| {
            let listed = String::from_utf8_lossy(&o.stdout);
            o.status.success() && listed.contains("rust-src") && listed.contains("clippy")
        })
}

/// Installs the nightly toolchain too if it is missing (the kernel programs need
/// `-Z build-std=core` for the BPF target, and `cargo xtask test` lints them with its clippy).
fn install_nightly() -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's `apt-get -s install --no-install-recommends qemu-system-x86` from
    /// bookworm, with qemu-utils 10.0 from bookworm-backports installed (trimmed).
    const BOOKWORM_QEMU: &str = "\
NOTE: This is only a simulation!
Reading package lists...
The following packages will be REMOVED:
  qemu-utils
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst qemu-system-common (1:7.2+dfsg-7+deb12u16 Debian:12.11/stable [amd64])
Inst libfoo1 [1.0-1] (1.0-2 Debian:12.11/stable [amd64])
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u16 Debian:12.11/stable [amd64])
Conf qemu-system-common (1:7.2+dfsg-7+deb12u16 Debian:12.11/stable [amd64])
";

    #[test]
    fn reads_removals_and_installs_of_a_simulation() {
        let sim = parse_simulation(BOOKWORM_QEMU);
        assert_eq!(
            sim.removals,
            [(
                "qemu-utils".to_owned(),
                "1:10.0.2+ds-2+deb13u1~bpo12+1".to_owned()
            )]
        );
        let installs: Vec<(&str, &str)> = sim
            .installs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            installs,
            [
                ("qemu-system-common", "1:7.2+dfsg-7+deb12u16"),
                ("libfoo1", "1.0-2"),
                ("qemu-system-x86", "1:7.2+dfsg-7+deb12u16"),
            ]
        );
    }

    #[test]
    fn a_simulation_without_removals_reads_as_such() {
        let sim = parse_simulation(
            "Inst kmod (30+20221128-1 Debian:12.11/stable [amd64])\nConf kmod (30+20221128-1 Debian:12.11/stable [amd64])\n",
        );
        assert!(sim.removals.is_empty());
        assert_eq!(sim.installs.len(), 1);
    }

    #[test]
    fn backports_versions_name_their_suite() {
        assert_eq!(
            suite_of_version("1:10.0.2+ds-2+deb13u1~bpo12+1").as_deref(),
            Some("bookworm-backports")
        );
        assert_eq!(
            suite_of_version("1.16.3-2~bpo12+1").as_deref(),
            Some("bookworm-backports")
        );
        assert_eq!(
            suite_of_version("6.1.0~bpo11+2").as_deref(),
            Some("bullseye-backports")
        );
        // Stable and its point releases are in the machine's sources already.
        assert_eq!(suite_of_version("1:7.2+dfsg-7+deb12u16"), None);
        assert_eq!(suite_of_version("1.0~bpo99+1"), None);
    }

    #[test]
    fn mirror_is_the_one_serving_the_release() {
        let sources = "\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
";
        assert_eq!(
            mirror_of(sources, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_of(sources, "trixie"), None);
    }

    #[test]
    fn names_the_breaks_line_behind_a_removal() {
        let fields = "Package: qemu-utils\nBreaks: qemu-system-common (<< 1:8.0+dfsg-5~), \
                      qemu-block-extra (<< 1:8.0)\nConflicts: \n";
        let installs = [("qemu-system-common".to_owned(), "1:7.2".to_owned())];
        assert_eq!(
            conflict_lines("qemu-utils", fields, &["qemu-utils"], &installs),
            ["qemu-utils Breaks: qemu-system-common (<< 1:8.0+dfsg-5~)"]
        );
    }

    fn debs(scopes: &[Scope]) -> BTreeSet<&'static str> {
        union(scopes)
            .into_iter()
            .filter_map(|(_, n)| match n.tool {
                Tool::Deb(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lab_needs_no_qemu_systemd_container_or_cargo_tools() {
        let lab = union(&[Scope::Lab]);
        let tools: Vec<Tool> = lab.iter().map(|(_, n)| n.tool).collect();
        assert!(tools.contains(&Tool::Nightly) && tools.contains(&Tool::BpfLinker));
        assert!(!tools.iter().any(|t| matches!(t, Tool::Cargo(..))));
        assert_eq!(
            debs(&[Scope::Lab]),
            BTreeSet::from([
                "dnsmasq-base",
                "dnsmasq-utils",
                "iproute2",
                "isc-dhcp-client"
            ])
        );
    }

    #[test]
    fn test_needs_every_task_once() {
        let all = union(&[Scope::Test]);
        for scope in [
            Scope::Build,
            Scope::Lab,
            Scope::Bench,
            Scope::Fuzz,
            Scope::Kernel,
            Scope::Dist,
            Scope::Soak,
        ] {
            for (_, n) in union(&[scope]) {
                assert!(
                    all.iter().any(|(_, t)| t.tool == n.tool),
                    "test lacks {:?} of {scope:?}",
                    n.tool
                );
            }
        }
        let mut tools: Vec<Tool> = all.iter().map(|(_, n)| n.tool).collect();
        let count = tools.len();
        tools.sort();
        tools.dedup();
        assert_eq!(tools.len(), count, "a need listed twice");
        for p in [
            "prometheus",
            "tshark",
            "qemu-system-x86",
            "systemd-container",
            "kea-dhcp4-server",
            "kea-dhcp6-server",
        ] {
            assert!(debs(&[Scope::Test]).contains(p), "{p}");
        }
    }

    #[test]
    fn a_need_is_credited_to_the_first_task_asking() {
        let union = union(&[Scope::Kernel, Scope::Lab]);
        let dnsmasq = union
            .iter()
            .find(|(_, n)| n.tool == Tool::Deb("dnsmasq-base"))
            .expect("dnsmasq-base");
        assert_eq!(dnsmasq.0, Scope::Kernel);
        assert!(
            !union
                .iter()
                .any(|(_, n)| n.tool == Tool::Cargo("cargo-fuzz", "0.13.2"))
        );
    }
}
