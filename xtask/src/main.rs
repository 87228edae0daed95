//! Project tasks: `cargo xtask setup | lab | test | bench | soak | kernel | fuzz | dist`.
mod agent;
mod bench;
mod dist;
mod fuzz;
mod kernel;
mod lab;
mod setup;
mod soak;

use clap::{Parser, Subcommand};
use setup::Scope;

#[derive(Parser)]
#[command(name = "xtask", about = "dhcp-observer project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the named tasks need (default: everything `test` needs, which is every
    /// task's): Debian packages, the pinned nightly, bpf-linker, cargo-deb, cargo-fuzz. Prints
    /// what it will install first, skips what is there, and never removes a Debian package.
    /// Every other task sets up its own needs the same way before it runs.
    Setup(SetupArgs),
    /// Build a redundant-VR router lab in network namespaces and watch it with the agent while
    /// VMs boot, renew and get expunged.
    Lab(lab::LabArgs),
    /// Run every check and test: fmt, clippy, unit, kernel and integration tests, and the
    /// benchmarks in quick mode (needs root).
    Test,
    /// Measure the observer: hook cost, forwarding impact, DHCP storm, pipeline, offline
    /// analysis against tshark, lease table, footprint, detection latency (needs root).
    Bench(bench::BenchArgs),
    /// Fuzz the frame decoder, the DHCPv4 option reader and the lease-file parsers with
    /// cargo-fuzz, each target for `--seconds` (default 15); fails on the first crash.
    Fuzz(fuzz::FuzzArgs),
    /// Run the daemon on the lab while VMs come and go for a set time (default 5 minutes; hours
    /// before a release) and check that memory and open files stay flat, no event is lost and
    /// every release is accounted for (needs root).
    Soak(soak::SoakArgs),
    /// Build the Debian packages (glibc and static musl builds) with the systemd unit, default
    /// configuration and man pages, then install, run and purge each in a throwaway root.
    Dist(dist::DistArgs),
    /// Boot Debian 12's 6.1 kernel (the routers' kernel) under QEMU with a small initramfs and
    /// check that the agent loads, attaches (TC through netlink clsact, then XDP) and sees a real
    /// DHCP exchange on a veth pair; the host's kernel is left alone.
    Kernel(kernel::KernelArgs),
}

#[derive(clap::Args)]
struct SetupArgs {
    /// The tasks to set up for (`build` is what building the agent needs).
    #[arg(value_enum, default_value = "test")]
    tasks: Vec<Scope>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(args) => setup::ensure(&args.tasks),
        Task::Lab(args) => setup::ensure(&[Scope::Lab]).and_then(|()| lab::run(&args)),
        Task::Test => setup::ensure(&[Scope::Test]).and_then(|()| test()),
        Task::Bench(args) => setup::ensure(&[Scope::Bench]).and_then(|()| bench::run(&args)),
        Task::Fuzz(args) => setup::ensure(&[Scope::Fuzz]).and_then(|()| fuzz::run(&args)),
        Task::Kernel(args) => setup::ensure(&[Scope::Kernel]).and_then(|()| kernel::run(&args)),
        Task::Dist(args) => setup::ensure(&[Scope::Dist]).and_then(|()| dist::run(&args)),
        Task::Soak(args) => setup::ensure(&[Scope::Soak]).and_then(|()| soak::run(&args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .status()?;
    anyhow::ensure!(
        status.success(),
        "cargo {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

fn test() -> anyhow::Result<()> {
    anyhow::ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the tests load BPF programs and create network namespaces: run as root"
    );
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    clippy_kernel_programs()?;
    run_tests()?;
    // Every parser of hostile input, fuzzed briefly from the lab's seeds (about a minute).
    fuzz::run(&fuzz::FuzzArgs {
        seconds: fuzz::QUICK_SECONDS,
        targets: Vec::new(),
    })?;
    // The routers' own kernel: Debian 12's 6.1 under QEMU (about 15 s once the agent is built).
    kernel::run(&kernel::KernelArgs::default())?;
    // The Debian packages, installed, run and purged in a throwaway root (about 30 s once the
    // release builds are there).
    dist::run(&dist::DistArgs::default())?;
    // Every benchmark, briefly, so the benchmark code cannot rot; it checks results are sane,
    // never timings.
    bench::run(&bench::BenchArgs {
        quick: true,
        only: Vec::new(),
        out: None,
        keep: false,
    })?;
    // A minute of VM churn: memory and open files flat, nothing lost, every release accounted.
    soak::run(&soak::SoakArgs {
        minutes: 1.0,
        sample_secs: 5,
        background_pps: 200,
        out: None,
    })
}

/// `cargo test --workspace`, echoing its output, then one closing line with the totals over
/// every test binary (cargo's own last line is that of whichever binary ran last).
fn run_tests() -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    let args = ["test", "--workspace", "--no-fail-fast"];
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut child =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    anyhow::ensure!(status.success() && failed == 0, "tests failed ({status})");
    anyhow::ensure!(passed > 0, "no test ran");
    Ok(())
}

/// Host clippy sees an empty `dhcp-ebpf`; lint the kernel programs for the BPF target too.
fn clippy_kernel_programs() -> anyhow::Result<()> {
    let args = [
        "run",
        setup::NIGHTLY,
        "cargo",
        "clippy",
        "--package",
        "dhcp-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ];
    eprintln!("xtask: rustup {}", args.join(" "));
    let status = std::process::Command::new("rustup").args(args).status()?;
    anyhow::ensure!(
        status.success(),
        "clippy on the kernel programs failed ({status})"
    );
    Ok(())
}

/// Where cargo puts build output for this workspace.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
