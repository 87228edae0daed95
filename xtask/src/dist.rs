//! `cargo xtask dist`: the Debian packages of the agent, and proof that each installs and runs.
//!
//! Two packages from one `[package.metadata.deb]` (dhcp-agent/Cargo.toml), built with cargo-deb:
//! `dhcp-agent` from the glibc build (the one the benchmarks measure) and `dhcp-agent-static`
//! from a static musl build, for routers whose C library is older than the build host's. Both
//! carry the binary (the kernel programs are embedded in it), the systemd unit, the default
//! configuration as a conffile and the man pages, rendered here from the clap definitions.
//!
//! Then each package is checked, without changing the host: its contents and control fields
//! (dpkg-deb); `dpkg --install` then `--purge` into the host's own root seen through overlays (a
//! private mount namespace with tmpfs-backed overlays over /etc, /usr and /var, gone when it
//! exits); `systemd-analyze verify` of the installed unit; and the installed binary started
//! with the installed configuration, the way the unit starts it (an unprivileged dynamic uid
//! holding the unit's AmbientCapabilities=, no_new_privs, its StateDirectory=), in a lab router
//! namespace, where it must flag dhcp_release's dropped RELEASE and report the repair as a dry
//! run, as the default configuration says. Last, the unit under systemd itself, which is not
//! PID 1 on the build machines: the host's own system, booted from an overlay in a
//! systemd-nspawn container with the package installed in it, starts dhcp-agent.service, which
//! must run as a dynamic user with CAP_BPF and CAP_NET_ADMIN only, no_new_privs and its
//! seccomp filter, count a DHCPDISCOVER sent over the container's `lo`, and put its events into
//! the container's own journald natively: a `dhcp_release` of a lease that no running dnsmasq
//! drops must be found with `journalctl -o json DHCP_OUTCOME=dropped`, with its MESSAGE_ID,
//! PRIORITY and the name the hosts file gives the client (`DHCP_HOST`), once, not also as a
//! stdout line.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use dhcp_lab::{Lab, LabConfig};

use crate::agent::{AgentUnderTest, Events};

/// The static build's target.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// A uid from systemd's DynamicUser= range (61184-65519), standing in for the service's user.
const DYNAMIC_UID: &str = "61184";

/// The journal's MESSAGE_ID of a dropped release (`release_dropped` in dhcp-agent's
/// `events::MESSAGE_IDS`, whose test checks this copy).
const RELEASE_DROPPED_ID: &str = "52bbfad9092a452ba02945e1c35b3af3";

#[derive(clap::Args, Default)]
pub struct DistArgs {
    /// Only build the packages: skip installing and running them.
    #[arg(long)]
    pub no_check: bool,
}

/// One package of the two.
struct Flavour {
    package: &'static str,
    /// `cargo --target`, when not the host's.
    target: Option<&'static str>,
    /// cargo-deb's `--variant`.
    variant: Option<&'static str>,
    linkage: &'static str,
}

const FLAVOURS: [Flavour; 2] = [
    Flavour {
        package: "dhcp-agent",
        target: None,
        variant: None,
        linkage: "glibc, dynamically linked",
    },
    Flavour {
        package: "dhcp-agent-static",
        target: Some(MUSL_TARGET),
        variant: Some("static"),
        linkage: "musl, statically linked",
    },
];

impl Flavour {
    /// The directory cargo builds this flavour's release artifacts in.
    fn build_dir(&self) -> PathBuf {
        let base = crate::target_dir();
        match self.target {
            Some(target) => base.join(target).join("release"),
            None => base.join("release"),
        }
    }
}

/// Files every package must hold.
const EXPECTED: &[&str] = &[
    "./usr/bin/dhcp-agent",
    "./etc/dhcp-agent/config.toml",
    "./usr/share/man/man8/dhcp-agent.8.gz",
    "./usr/share/man/man8/dhcp-agent-run.8.gz",
    "./usr/share/man/man8/dhcp-agent-watch.8.gz",
];

pub fn run(args: &DistArgs) -> anyhow::Result<()> {
    ensure_musl_target()?;
    let out = crate::target_dir().join("dist");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let pages = render_man_pages(&out.join("man"))?;
    let mut built = Vec::new();
    for flavour in &FLAVOURS {
        let deb = build(flavour, &pages, &out)?;
        let contents = Contents::read(&deb)?;
        println!(
            "dist: {} ({}): package {}, binary {} installed",
            deb.display(),
            flavour.linkage,
            megabytes(fs::metadata(&deb)?.len()),
            megabytes(contents.size_of("./usr/bin/dhcp-agent").unwrap_or(0)),
        );
        built.push((flavour, deb, contents));
    }
    if args.no_check {
        return Ok(());
    }
    for (flavour, deb, contents) in &built {
        check_contents(flavour, deb, contents)?;
        install_and_purge(flavour, deb)?;
        run_installed(flavour, deb)?;
        boot_under_systemd(flavour, deb)?;
        println!(
            "dist: {}: installs and purges cleanly, flags a dropped RELEASE with the unit's \
             capabilities, and runs as dhcp-agent.service under systemd",
            flavour.package
        );
    }
    Ok(())
}

/// The static build's standard library, from rustup as the nightly rust-src is (no Debian
/// package is needed: Rust's musl target links its own C library and start files).
fn ensure_musl_target() -> anyhow::Result<()> {
    let installed = dhcp_lab::run(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        return Ok(());
    }
    succeed(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Renders the man pages (`examples/manpage.rs`) and gzips them as Debian policy asks;
/// returns the compressed pages.
fn render_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let dir_text = dir.to_str().context("non-UTF-8 target directory")?;
    crate::cargo(&[
        "run",
        "--quiet",
        "--package",
        "dhcp-agent",
        "--example",
        "manpage",
        "--",
        dir_text,
    ])?;
    let mut pages = Vec::new();
    for entry in fs::read_dir(dir)? {
        let page = entry?.path();
        // -n: no name or time stamp in the header, so the package is reproducible.
        succeed(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&page))?;
        pages.push(PathBuf::from(format!("{}.gz", page.display())));
    }
    ensure!(
        !pages.is_empty(),
        "no man page rendered in {}",
        dir.display()
    );
    Ok(pages)
}

/// Builds the flavour's binary and its package; returns the .deb.
fn build(flavour: &Flavour, pages: &[PathBuf], out: &Path) -> anyhow::Result<PathBuf> {
    let mut cargo_args = vec!["build", "--release", "--package", "dhcp-agent"];
    if let Some(target) = flavour.target {
        cargo_args.extend(["--target", target]);
    }
    crate::cargo(&cargo_args)?;
    // cargo-deb reads `target/release/man/*.8.gz` from the flavour's build directory.
    let man = flavour.build_dir().join("man");
    fs::create_dir_all(&man)?;
    for page in pages {
        fs::copy(page, man.join(page.file_name().context("page name")?))?;
    }
    let mut deb_args = vec!["deb", "--package", "dhcp-agent", "--no-build", "--output"];
    let out_text = out.to_str().context("non-UTF-8 target directory")?;
    deb_args.push(out_text);
    if let Some(target) = flavour.target {
        deb_args.extend(["--target", target]);
    }
    if let Some(variant) = flavour.variant {
        deb_args.extend(["--variant", variant]);
    }
    eprintln!("xtask: cargo {}", deb_args.join(" "));
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&deb_args)
        .output()
        .context("running cargo deb (cargo xtask setup installs it)")?;
    ensure!(
        output.status.success(),
        "cargo deb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // cargo-deb prints the package's path as its last line.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .context("cargo deb printed no path")?
            .trim(),
    );
    ensure!(deb.is_file(), "cargo deb did not write {}", deb.display());
    Ok(deb)
}

/// `dpkg-deb --contents`: path -> (mode and owner, size).
struct Contents(Vec<(String, String, u64)>);

impl Contents {
    fn read(deb: &Path) -> anyhow::Result<Contents> {
        let listing = dhcp_lab::run(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
        let mut entries = Vec::new();
        for line in listing.lines() {
            // drwxr-xr-x root/root         0 2026-11-24 12:00 ./usr/bin/
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 {
                continue;
            }
            let size = fields[2].parse().unwrap_or(0);
            entries.push((
                fields[5].to_owned(),
                format!("{} {}", fields[0], fields[1]),
                size,
            ));
        }
        Ok(Contents(entries))
    }

    fn get(&self, path: &str) -> Option<&(String, String, u64)> {
        self.0.iter().find(|(p, _, _)| p == path)
    }

    fn size_of(&self, path: &str) -> Option<u64> {
        self.get(path).map(|e| e.2)
    }
}

fn check_contents(flavour: &Flavour, deb: &Path, contents: &Contents) -> anyhow::Result<()> {
    for path in EXPECTED {
        ensure!(
            contents.get(path).is_some(),
            "{} lacks {path}",
            deb.display()
        );
    }
    let unit = contents
        .0
        .iter()
        .find(|(p, _, _)| p.ends_with("/systemd/system/dhcp-agent.service"));
    ensure!(unit.is_some(), "{} lacks the systemd unit", deb.display());
    let binary = &contents.get("./usr/bin/dhcp-agent").expect("checked").1;
    ensure!(
        binary == "-rwxr-xr-x 0/0" || binary == "-rwxr-xr-x root/root",
        "/usr/bin/dhcp-agent is {binary}: root's and executable by all"
    );
    let field =
        |name: &str| dhcp_lab::run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name));
    ensure!(field("Package")?.trim() == flavour.package);
    let depends = field("Depends")?;
    match flavour.target {
        None => ensure!(depends.contains("libc6"), "Depends: {depends}"),
        Some(_) => ensure!(
            depends.trim().is_empty(),
            "a static build depends on {depends}"
        ),
    }
    let conffiles = dhcp_lab::run(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"),
    )?;
    ensure!(
        conffiles
            .lines()
            .any(|l| l.trim() == "/etc/dhcp-agent/config.toml"),
        "the configuration is no conffile: {conffiles}"
    );
    Ok(())
}

/// The shell side of the throwaway install, run as `unshare --mount --propagation private sh
/// -c SCRIPT sh MODE SCRATCH DEB PACKAGE UID [AGENT ARGS...]`: overlays over /etc, /usr and /var
/// (their upper layers on a tmpfs at SCRATCH, all gone with the mount namespace), `dpkg
/// --install`, `systemd-analyze verify` of the installed unit; then MODE `purge` removes the
/// package and checks that nothing is left, and MODE `run` execs the installed agent as the
/// unit would start it.
const THROWAWAY_ROOT: &str = r#"
set -eu
mode=$1 scratch=$2 deb=$3 package=$4 uid=$5
shift 5
[ -d "$scratch" ] && [ -f "$deb" ] || { echo "usage: sh MODE SCRATCH_DIR DEB ..." >&2; exit 2; }
mount -t tmpfs dist-check "$scratch"
for dir in etc usr var; do
    mkdir "$scratch/$dir" "$scratch/$dir.work"
    mount -t overlay overlay \
        -o "lowerdir=/$dir,upperdir=$scratch/$dir,workdir=$scratch/$dir.work" "/$dir"
done
dpkg --install "$deb" >&2
unit=/lib/systemd/system/dhcp-agent.service
systemd-analyze verify "$unit" >&2
if [ "$mode" = purge ]; then
    dpkg --purge "$package" >&2
    for file in /usr/bin/dhcp-agent /etc/dhcp-agent/config.toml "$unit"; do
        if [ -e "$file" ]; then
            echo "$file is still there after dpkg --purge" >&2
            exit 1
        fi
    done
    exit 0
fi
# The unit's capabilities, in setpriv's words: CAP_BPF CAP_NET_ADMIN -> +bpf,+net_admin.
setpriv_caps() {
    sed -n "s/^$1=//p" "$unit" | tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_/+/p' | paste -sd, -
}
ambient=$(setpriv_caps AmbientCapabilities)
bounding=$(setpriv_caps CapabilityBoundingSet)
# What StateDirectory= does for the dynamic user.
mkdir -p /var/lib/dhcp-agent
chown "$uid:$uid" /var/lib/dhcp-agent
chmod 0700 /var/lib/dhcp-agent
# This namespace's /sys (interface flags), as `ip netns exec` mounts it.
mount -t sysfs sysfs /sys
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs \
    --inh-caps="-all,$ambient" --ambient-caps="-all,$ambient" --bounding-set="-all,$bounding" \
    /usr/bin/dhcp-agent "$@"
"#;

/// Arguments of `unshare` for [`THROWAWAY_ROOT`].
fn throwaway_root(mode: &str, scratch: &Path, flavour: &Flavour, deb: &Path) -> Vec<String> {
    [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        THROWAWAY_ROOT,
        "sh",
        mode,
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        scratch.display().to_string(),
        deb.display().to_string(),
        flavour.package.to_owned(),
        DYNAMIC_UID.to_owned(),
    ])
    .collect()
}

/// A directory for the tmpfs the overlays' upper layers live on.
fn scratch_dir(flavour: &Flavour) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "dhcp-agent-dist-{}-{}",
        flavour.package,
        std::process::id()
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn install_and_purge(flavour: &Flavour, deb: &Path) -> anyhow::Result<()> {
    let scratch = scratch_dir(flavour)?;
    let result =
        succeed(Command::new("unshare").args(throwaway_root("purge", &scratch, flavour, deb)));
    let _ = fs::remove_dir(&scratch);
    result.with_context(|| format!("installing and purging {}", deb.display()))
}

/// The installed agent, started as the unit starts it, in a lab: it flags dhcp_release's
/// dropped RELEASE and, as the default configuration says, repairs it as a dry run only.
fn run_installed(flavour: &Flavour, deb: &Path) -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig::default()).context("starting the lab")?;
    let scratch = scratch_dir(flavour)?;
    let mut args = throwaway_root("run", &scratch, flavour, deb);
    // The installed configuration, with the lab's dnsmasq files and interfaces instead of a
    // router's, and JSON events to check.
    args.extend(["run", "--config", "/etc/dhcp-agent/config.toml"].map(str::to_owned));
    args.extend(lab.agent_run_options());
    let log = lab.dir.join("installed-agent.log");
    let agent = AgentUnderTest::start(&lab.router, Path::new("unshare"), &args, &log, Events::Json);
    let _ = fs::remove_dir(&scratch);
    let agent = agent.with_context(|| format!("starting the agent of {}", deb.display()))?;
    let log_text = agent.log();
    ensure!(
        log_text.contains("privileges: kept CAP_BPF, CAP_NET_ADMIN;"),
        "no capability drop reported: {log_text}"
    );
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid()))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    ensure!(
        field("Uid:").starts_with(DYNAMIC_UID),
        "runs as {}",
        field("Uid:")
    );
    ensure!(
        field("CapEff:") == "0000008000001000",
        "effective capabilities {} after attaching (want CAP_BPF and CAP_NET_ADMIN)",
        field("CapEff:")
    );

    let ip = lab.vm.boot().context("a guest boots")?;
    lab.dhcp_release(ip, &lab.vm.mac)?;
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
    let wait = Duration::from_secs(15);
    let (dropped, _) = agent
        .next_event(wait, |e| text(e, "outcome") == "dropped", |_| {})
        .with_context(|| format!("no dropped release: {}", agent.log_tail()))?;
    ensure!(text(&dropped, "cause") == "server_id_mismatch", "{dropped}");
    let (repair, _) = agent
        .next_event(wait, |e| text(e, "event") == "remediation", |_| {})
        .with_context(|| format!("no remediation event: {}", agent.log_tail()))?;
    ensure!(text(&repair, "result") == "dry_run", "{repair}");
    ensure!(
        lab.dnsmasq_holds(ip),
        "the default configuration released {ip}: it must only report"
    );
    agent.stop_cleanly()
}

/// The shell side of [`boot_under_systemd`], run as `unshare --mount --propagation private sh
/// -c SCRIPT sh SCRATCH DEB`: the host's root under an overlay (upper layer on a tmpfs), the
/// package installed into it with dpkg, a router's dnsmasq files, a check unit that reports how
/// systemd started dhcp-agent.service and what it saw, then the overlay booted with
/// systemd-nspawn into that check unit. The container gets CAP_BPF, CAP_PERFMON and bpf() on top
/// of nspawn's defaults; within it the unit's own settings apply. Every path written is under
/// the overlay, `$root`, which the script refuses to run without.
///
/// The router's files give the check a client to release: the hosts file names it
/// (`i-2-50-VM`, as CloudStack names VMs), the lease file holds its lease, and no dnsmasq runs,
/// so `dhcp_release` over `lo` is a RELEASE no server takes: a dropped release
/// (`no_server`), which the agent sends to the journal.
const BOOT_UNDER_SYSTEMD: &str = r#"
set -eu
scratch=$1 deb=$2 message_id=$3
[ -d "$scratch" ] && [ -f "$deb" ] || { echo "usage: sh SCRATCH_DIR DEB MESSAGE_ID" >&2; exit 2; }
mount -t tmpfs dist-boot "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" \
    "$scratch/root"
root=$scratch/root
cp "$deb" "$root/tmp/dhcp-agent.deb"
chroot "$root" dpkg --install /tmp/dhcp-agent.deb >&2
printf 'listen-address=127.0.0.1\ndhcp-hostsfile=/etc/dhcphosts.txt\n' > "$root/etc/dnsmasq.conf"
echo "52:54:00:ab:cd:ef,127.0.0.5,i-2-50-VM,infinite" > "$root/etc/dhcphosts.txt"
mkdir -p "$root/var/lib/misc"
echo "0 52:54:00:ab:cd:ef 127.0.0.5 web-1 *" > "$root/var/lib/misc/dnsmasq.leases"
# The container's network is never configured: nothing waits for it.
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
cat > "$root/usr/local/sbin/dhcp-agent-check" <<'CHECK'
#!/bin/bash
# Once dhcp-agent.service watches: how systemd started it, then one DHCPDISCOVER to
# 127.0.0.1:67 (over lo, where its TC program sees it), its metrics and readiness.
set -u
for _ in $(seq 100); do
    journalctl -u dhcp-agent.service -o cat | grep -q '^watching;' && break
    sleep 0.1
done
pid=$(systemctl show --property MainPID --value dhcp-agent.service)
echo "@@ active $(systemctl is-active dhcp-agent.service)"
echo "@@ enabled $(systemctl is-enabled dhcp-agent.service)"
grep -E '^(Uid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "/proc/$pid/status" |
    sed 's/^/@@ /'
discover=$(mktemp)
{
    printf '\001\001\006\000\022\064\126\170\000\000\200\000'
    head -c 16 /dev/zero
    printf '\122\124\000\253\315\357'
    head -c 202 /dev/zero
    printf '\143\202\123\143\065\001\001\377'
} > "$discover"
cat "$discover" > /dev/udp/127.0.0.1/67
sleep 1
get() {
    exec 3<>/dev/tcp/127.0.0.1/9967
    printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
    cat <&3
    exec 3<&-
}
get /metrics | grep '^dhcp_packets_total' | sed 's/^/@@ /'
get /healthz | head -1 | sed 's/^/@@ healthz /'
# The declared client's lease, released over lo with no server to take it: once its grace
# (2 s) is over, the journal has the dropped release as an entry of its own.
dhcp_release lo 127.0.0.5 52:54:00:ab:cd:ef
for _ in $(seq 100); do
    [ -n "$(journalctl -o json DHCP_OUTCOME=dropped DHCP_IP=127.0.0.5)" ] && break
    sleep 0.2
done
journalctl -o json DHCP_OUTCOME=dropped DHCP_IP=127.0.0.5 | sed 's/^/@@ dropped-json /'
echo "@@ by-message-id $(journalctl -o json MESSAGE_ID=$1 | wc -l)"
echo "@@ release-lines $(journalctl -u dhcp-agent.service -o cat | grep -c '^RELEASE 127.0.0.5 ')"
journalctl -u dhcp-agent.service -o cat | sed 's/^/@@ journal: /'
systemctl poweroff
CHECK
chmod 0755 "$root/usr/local/sbin/dhcp-agent-check"
cat > "$root/etc/systemd/system/dhcp-agent-check.service" <<UNIT
[Unit]
Description=dhcp-agent package check
Wants=dhcp-agent.service
After=dhcp-agent.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/dhcp-agent-check $message_id
StandardOutput=tty
TTYPath=/dev/console
UNIT
# A machine id of its own (systemd makes one at boot), not the host's.
rm -f "$root/etc/machine-id"
exec timeout 120 systemd-nspawn --quiet --register=no --keep-unit --link-journal=no \
    --directory="$root" --private-network --network-veth --machine=dhcp-agent-check \
    --capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN --system-call-filter=bpf \
    --boot -- --unit=dhcp-agent-check.service
"#;

/// The installed package's unit, started by systemd in a container booted from the host's own
/// system ([`BOOT_UNDER_SYSTEMD`]).
fn boot_under_systemd(flavour: &Flavour, deb: &Path) -> anyhow::Result<()> {
    let scratch = scratch_dir(flavour)?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(BOOT_UNDER_SYSTEMD)
        .arg("sh")
        .arg(&scratch)
        .arg(deb)
        .arg(RELEASE_DROPPED_ID)
        .output()
        .context("running systemd-nspawn (systemd-container)");
    let _ = fs::remove_dir(&scratch);
    let out = out?;
    let console =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let facts: Vec<&str> = console
        .lines()
        .filter_map(|l| l.strip_prefix("@@ "))
        .collect();
    let fact = |key: &str| {
        facts
            .iter()
            .find_map(|f| f.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
    };
    let context = || format!("{} under systemd:\n{}", flavour.package, facts.join("\n"));
    ensure!(out.status.success(), "{}\n{console}", context());
    ensure!(fact("active") == "active", "{}", context());
    ensure!(fact("enabled") == "enabled", "{}", context());
    let uid: u32 = fact("Uid:")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .with_context(context)?;
    ensure!(
        (61184..=65519).contains(&uid),
        "uid {uid} is no dynamic user: {}",
        context()
    );
    for (key, want) in [
        ("CapEff:", "0000008000001000"),
        ("CapPrm:", "0000008000001000"),
        ("CapInh:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
        ("Seccomp:", "2"),
    ] {
        ensure!(fact(key) == want, "{key} {}: {}", fact(key), context());
    }
    ensure!(
        facts.iter().any(|f| f.starts_with("dhcp_packets_total")
            && f.contains(r#"interface="lo""#)
            && f.contains(r#"message_type="discover""#)
            && f.ends_with(" 1")),
        "the DISCOVER on lo was not counted: {}",
        context()
    );
    ensure!(fact("healthz").contains(" 200 "), "{}", context());
    ensure!(
        fact("journal: privileges:").starts_with("kept CAP_BPF, CAP_NET_ADMIN;"),
        "{}",
        context()
    );
    check_dropped_entry(fact("dropped-json")).with_context(context)?;
    println!(
        "dist: {}: journalctl -o json DHCP_OUTCOME=dropped found: {}",
        flavour.package,
        fact("dropped-json")
    );
    ensure!(
        fact("journal: events:").starts_with("to the journal"),
        "events were not sent to the journal: {}",
        context()
    );
    ensure!(
        fact("by-message-id") == "1",
        "journalctl MESSAGE_ID={RELEASE_DROPPED_ID} found {} entries, want the one: {}",
        fact("by-message-id"),
        context()
    );
    // The event's own entry only: not also a line on the service's stdout stream.
    ensure!(
        fact("release-lines") == "1",
        "{} entries with the release's text: {}",
        fact("release-lines"),
        context()
    );
    Ok(())
}

/// The fields of a journal entry as `journalctl -o json` writes it, checked for what a dropped
/// release of the declared client must carry.
fn check_dropped_entry(json: &str) -> anyhow::Result<()> {
    let entry: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("no dropped release in the journal ({json:?})"))?;
    let field = |name: &str| entry[name].as_str().unwrap_or("").to_owned();
    for (name, want) in [
        ("MESSAGE_ID", RELEASE_DROPPED_ID),
        ("PRIORITY", "4"),
        ("SYSLOG_IDENTIFIER", "dhcp-agent"),
        ("_SYSTEMD_UNIT", "dhcp-agent.service"),
        ("DHCP_EVENT", "release"),
        ("DHCP_OUTCOME", "dropped"),
        ("DHCP_CAUSE", "no_server"),
        ("DHCP_MAC", "52:54:00:ab:cd:ef"),
        ("DHCP_HOST", "i-2-50-VM"),
        ("DHCP_HOSTNAME", "web-1"),
        ("DHCP_ORIGIN", "router"),
    ] {
        ensure!(
            field(name) == want,
            "{name}={} (want {want}): {json}",
            field(name)
        );
    }
    ensure!(
        field("MESSAGE")
            .starts_with("RELEASE 127.0.0.5 52:54:00:ab:cd:ef (host i-2-50-VM) on lo: DROPPED"),
        "MESSAGE={}",
        field("MESSAGE")
    );
    Ok(())
}

fn succeed(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
