//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (the frame decoder, the DHCPv4 option
//! reader, the dnsmasq and Kea lease parsers), each for a set time, failing on the first crash
//! with the path of the input that caused it.
//!
//! Seeds are generated here, on every run, from `dhcp_lab` (the frames and lease lines the lab
//! and the benchmarks use) rather than committed: they follow the builders when those change,
//! the repository holds no binary blobs, and they cost a millisecond. They are written into
//! `fuzz/corpus/<target>/` as `seed-*` files, next to what the fuzzer adds there as it runs
//! (the directory is ignored by git), so a later `cargo +nightly fuzz run <target>` by hand
//! starts from them and from everything earlier runs found.
//!
//! Longer runs, before a release or after a change to a parser: `cargo xtask fuzz --seconds
//! 1800` (each target for half an hour; `--target decode_frame` for one), or one target on
//! both cores by hand: `cargo +nightly fuzz run decode_frame -- -fork=2 -max_total_time=3600`.
use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use dhcp_lab::{
    PRIMARY_ADDR, VIP_ADDR,
    frames::{self, Dhcpv4Spec, Framing, MessageType},
    traffic,
};

/// Seconds per target in `cargo xtask test` (and the default): the four targets take a minute
/// and leave room in a two-minute budget for rebuilding them after a change to the agent; a
/// regression in a parser shows within seconds from the seeds.
pub const QUICK_SECONDS: u64 = 15;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target (a longer run: `--seconds 3600`).
    #[arg(long, default_value_t = QUICK_SECONDS)]
    pub seconds: u64,
    /// Fuzz only this target (repeatable). Default: every target.
    #[arg(long = "target", value_enum)]
    pub targets: Vec<Target>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Target {
    /// A whole captured frame through `decode_frame` and both renderings.
    DecodeFrame,
    /// A UDP payload through the DHCPv4 message and option reader.
    Dhcpv4Options,
    /// dnsmasq's lease file.
    DnsmasqLeases,
    /// Kea's DHCPv4 memfile CSV.
    KeaLeases,
    /// Kea's DHCPv6 memfile CSV.
    KeaV6Leases,
    /// Kea's control-channel answers (`lease_cmds`).
    KeaControlAnswer,
}

impl Target {
    const ALL: [Target; 6] = [
        Target::DecodeFrame,
        Target::Dhcpv4Options,
        Target::DnsmasqLeases,
        Target::KeaLeases,
        Target::KeaV6Leases,
        Target::KeaControlAnswer,
    ];

    /// The name of the fuzz target (its file in `fuzz/fuzz_targets/`).
    fn name(self) -> &'static str {
        match self {
            Target::DecodeFrame => "decode_frame",
            Target::Dhcpv4Options => "dhcpv4_options",
            Target::DnsmasqLeases => "dnsmasq_leases",
            Target::KeaLeases => "kea_leases",
            Target::KeaV6Leases => "kea_v6_leases",
            Target::KeaControlAnswer => "kea_control_answer",
        }
    }

    /// The seed inputs, by name.
    fn seeds(self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        Ok(match self {
            Target::DecodeFrame => frame_seeds()?,
            Target::Dhcpv4Options => payload_seeds(),
            Target::DnsmasqLeases => text_seeds(dnsmasq_files()),
            Target::KeaLeases => text_seeds(kea_files()),
            Target::KeaV6Leases => text_seeds(kea_v6_files()),
            Target::KeaControlAnswer => text_seeds(kea_answers()),
        })
    }
}

/// What libFuzzer reported about one run.
#[derive(Debug, Default)]
struct RunStats {
    executions: u64,
    per_second: u64,
    corpus: Option<u64>,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives inside the workspace")?
        .to_owned();
    // Its own target directory: a nightly build with sanitizers shares nothing with the main one.
    let target_dir = crate::target_dir().join("fuzz");
    let targets = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.targets.clone()
    };
    // Build every target first, so that the time given to each is spent fuzzing.
    let build = cargo_fuzz(&root, &target_dir, &["build"]).status()?;
    anyhow::ensure!(
        build.success(),
        "building the fuzz targets failed ({build})"
    );
    let started = Instant::now();
    for target in targets {
        let name = target.name();
        let corpus = root.join("fuzz/corpus").join(name);
        write_seeds(&corpus, &target.seeds()?)?;
        let stats = fuzz_one(&root, &target_dir, name, args.seconds)?;
        eprintln!(
            "xtask: fuzz {name}: {} executions in {} s ({} per second), corpus {} inputs: no crash",
            stats.executions,
            args.seconds,
            stats.per_second,
            stats.corpus.map_or("?".into(), |n| n.to_string()),
        );
    }
    eprintln!(
        "xtask: fuzzing done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo +nightly fuzz SUBCOMMAND --target-dir ...` from the workspace root (cargo-fuzz finds
/// `fuzz/` there).
fn cargo_fuzz(root: &Path, target_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", crate::setup::NIGHTLY, "cargo", "fuzz"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root)
        // `cargo xtask` runs under the stable toolchain; its cargo must not be the one used.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    eprintln!(
        "xtask: cargo +{} fuzz {}",
        crate::setup::NIGHTLY,
        args.join(" ")
    );
    cmd
}

/// Runs one target for `seconds`; on a crash, fails with libFuzzer's last words and the path
/// of the input that crashed it.
fn fuzz_one(root: &Path, target_dir: &Path, name: &str, seconds: u64) -> anyhow::Result<RunStats> {
    let max_time = format!("-max_total_time={seconds}");
    let mut child = cargo_fuzz(
        root,
        target_dir,
        &[
            "run",
            name,
            "--",
            &max_time,
            // An input that takes this long is a hang: a failure like a crash.
            "-timeout=10",
            "-print_final_stats=1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .context("running cargo fuzz (is cargo-fuzz installed? `cargo xtask setup`)")?;
    // libFuzzer talks on stderr: keep it, show it only if something went wrong.
    let mut log = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("piped stderr")).lines() {
        log.push(line?);
    }
    let status = child.wait()?;
    let stats = parse_stats(&log);
    if status.success() {
        return Ok(stats);
    }
    let tail = log.len().saturating_sub(60);
    for line in &log[tail..] {
        eprintln!("{line}");
    }
    let crash = log
        .iter()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()));
    match crash {
        Some(input) => bail!(
            "fuzz target {name} failed ({status}); the input is {input}\n  \
             reproduce: cargo +nightly fuzz run {name} {input}\n  \
             minimise:  cargo +nightly fuzz tmin {name} {input}\n  \
             then add it as a regression test in the parser's module"
        ),
        None => bail!("fuzz target {name} failed ({status}) without saving an input"),
    }
}

/// The totals of libFuzzer's `-print_final_stats` and its last status line.
fn parse_stats(log: &[String]) -> RunStats {
    let stat = |key: &str| {
        log.iter().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
        })
    };
    // `#123456	DONE   cov: 812 ft: 3456 corp: 210/40Kb ...`
    let corpus = log
        .iter()
        .rev()
        .find_map(|l| l.split_once(" corp: ")?.1.split('/').next()?.parse().ok());
    RunStats {
        executions: stat("stat::number_of_executed_units").unwrap_or(0),
        per_second: stat("stat::average_exec_per_sec").unwrap_or(0),
        corpus,
    }
}

fn write_seeds(dir: &Path, seeds: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in seeds {
        let path: PathBuf = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Ethernet + IPv4 + UDP around a DHCPv4 payload: 42 bytes without tags or IP options.
const PLAIN_HEADERS: usize = 14 + 20 + 8;

/// Real frames: one client's whole exchange with a RELEASE (from the lab's traffic generator),
/// the framings the kernel programs match (802.1Q, QinQ, IP options, `lo`'s zero MACs), DHCPv6,
/// and a frame on other ports.
fn frame_seeds() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // Client 3 is one of those that release (see `traffic::exchange`).
    let mut seeds: Vec<(String, Vec<u8>)> = traffic::exchange(3)
        .into_iter()
        .map(|f| (format!("{:?}", f.message_type).to_lowercase(), f.bytes))
        .collect();
    let mut request = Dhcpv4Spec::new(MessageType::Request, 0x5eed_0007, traffic::client_mac(7));
    request.requested_ip = Some(traffic::client_ip(7));
    request.server_id = Some(VIP_ADDR);
    request.hostname = Some("vm-7".into());
    let payload = request.encode();
    let framed = |framing: Framing| {
        frames::ipv4_udp(
            &framing,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            (68, 67),
            &payload,
        )
    };
    seeds.push((
        "request-vlan".into(),
        framed(Framing {
            vlans: vec![100],
            ..Framing::default()
        })?,
    ));
    seeds.push((
        "request-qinq".into(),
        framed(Framing {
            vlans: vec![200, 300],
            ..Framing::default()
        })?,
    ));
    seeds.push((
        "request-ip-options".into(),
        framed(Framing {
            ip_options: vec![1, 1, 1, 0],
            ..Framing::default()
        })?,
    ));
    // What CloudStack's `dhcp_release` sends over `lo`: zero MACs, the primary address as
    // server id.
    let mut release = Dhcpv4Spec::new(MessageType::Release, 0, traffic::client_mac(3));
    release.ciaddr = traffic::client_ip(3);
    release.server_id = Some(PRIMARY_ADDR);
    let lo = Framing {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        ..Framing::default()
    };
    seeds.push((
        "dhcp-release-on-lo".into(),
        frames::ipv4_udp(
            &lo,
            release.ciaddr,
            PRIMARY_ADDR,
            (68, 67),
            &release.encode(),
        )?,
    ));
    seeds.push((
        "dhcpv6-solicit".into(),
        frames::ipv6_udp(
            &Framing::default(),
            "fe80::1".parse()?,
            "ff02::1:2".parse()?,
            (546, 547),
            &frames::dhcpv6_solicit(0x00ab_cdef, &[0, 3, 0, 1, 2, 0x42, 0, 0, 0, 3]),
        )?,
    ));
    seeds.push((
        "dns".into(),
        frames::ipv4_udp(
            &Framing::default(),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1),
            (5353, 53),
            &[0; 40],
        )?,
    ));
    Ok(seeds)
}

/// The DHCPv4 payloads of one client's exchange, and one whose options continue in the `file`
/// and `sname` fields (option 52, overload).
fn payload_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = traffic::exchange(3)
        .into_iter()
        .map(|f| {
            let name = format!("{:?}", f.message_type).to_lowercase();
            (name, f.bytes[PLAIN_HEADERS..].to_vec())
        })
        .collect();
    let mut overloaded = seeds[0].1[..240].to_vec();
    overloaded.extend_from_slice(&[53, 1, 3, 52, 1, 3, 255]);
    overloaded[108..115].copy_from_slice(&[54, 4, 172, 29, 101, 1, 255]); // `file`
    overloaded[44..51].copy_from_slice(&[50, 4, 172, 29, 101, 5, 255]); // `sname`
    seeds.push(("overload".into(), overloaded));
    seeds
}

/// Kea 2.2.0's answers on its control socket, as the lab's Kea gave them
/// (`dhcp-lab/tests/kea_lab.rs`), and a DHCPv6 lease as `Lease6::toElement` writes it.
fn kea_answers() -> Vec<(&'static str, String)> {
    [
        (
            "found4",
            r#"{ "arguments": { "cltt": 1796237707, "fqdn-fwd": false, "fqdn-rev": false, "hostname": "vm", "hw-address": "52:54:00:20:00:01", "ip-address": "172.29.101.100", "state": 0, "subnet-id": 1, "valid-lft": 3600 }, "result": 0, "text": "IPv4 lease found." }"#,
        ),
        (
            "found4-client-id",
            r#"{"arguments":{"cltt":10,"hw-address":"52:54:00:20:00:01","client-id":"01:52:54:00:20:00:01","ip-address":"10.0.0.5","state":0,"subnet-id":1,"valid-lft":4294967295,"hostname":""},"result":0,"text":"IPv4 lease found."}"#,
        ),
        (
            "found6",
            r#"{ "arguments": { "cltt": 100, "duid": "00:03:00:01:52:54:00:20:00:01", "hostname": "", "iaid": 7, "ip-address": "2001:db8::10", "preferred-lft": 3000, "state": 0, "subnet-id": 1, "type": "IA_NA", "valid-lft": 4000 }, "result": 0, "text": "IPv6 lease found." }"#,
        ),
        ("not-found", r#"{ "result": 3, "text": "Lease not found." }"#),
        ("deleted", r#"{ "result": 0, "text": "IPv4 lease deleted." }"#),
        (
            "unsupported",
            r#"{ "result": 2, "text": "'lease4-get' command not supported." }"#,
        ),
        (
            "control-agent",
            r#"[ { "result": 3, "text": "Lease not found." } ]"#,
        ),
    ]
    .map(|(name, text)| (name, text.to_owned()))
    .into()
}

fn text_seeds(files: Vec<(&'static str, String)>) -> Vec<(String, Vec<u8>)> {
    files
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text.into_bytes()))
        .collect()
}

/// A lease file as the lab's dnsmasq writes it, and one with every kind of line dnsmasq writes
/// (infinite lease, a non-Ethernet hardware type, the server DUID, DHCPv6 leases).
fn dnsmasq_files() -> Vec<(&'static str, String)> {
    let lab: String = (0..6)
        .map(|k| traffic::dnsmasq_lease_line(k, 1_732_470_000 + u64::from(k)) + "\n")
        .collect();
    let every_kind = format!(
        "{}\n0 06-00:11:22:33:44:55 172.29.101.9 * *\nduid 00:01:00:01:2c:aa:bb:cc:52:54:00:00:00:01\n\
         1732470002 1234 fd00::10 v6host 00:01:00:01:2c:11:22:33:52:54:00:10:00:01\n\
         1732470003 T99 fd00::11 * 00:01:00:01:2c:11:22:33:52:54:00:10:00:02\n",
        traffic::dnsmasq_lease_line(9, 1_732_470_009)
    );
    vec![
        ("lab", lab),
        ("every-kind", every_kind),
        ("empty", String::new()),
    ]
}

/// Kea's memfile as Kea 2.x appends to it (a lease, its renewal, a release, a reclaimed lease,
/// an infinite one, an escaped comma), and a file with an older, shorter header.
/// Kea 2.2's DHCPv6 memfile: renewals, a delegated prefix, a temporary address, deletions.
fn kea_v6_files() -> Vec<(&'static str, String)> {
    let header = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source\n";
    let rows = "fd00::10,00:03:00:01:52:54:00:10:00:01,3600,1732470000,1,3000,0,1048577,128,0,0,vm1,52:54:00:10:00:01,0,,1,2\n\
                fd00::11,00:03:00:01:52:54:00:10:00:02,3600,1732470000,1,3000,1,5,128,0,0,a&#x2cb,,0,,0,0\n\
                fd00::10,00:03:00:01:52:54:00:10:00:01,3600,1732473600,1,3000,0,1048577,128,0,0,vm1,52:54:00:10:00:01,0,,1,2\n\
                fd00:1::,00:03:00:01:52:54:00:10:00:01,3600,1732470000,1,3000,2,7,56,0,0,,,0,,0,0\n\
                fd00::11,00:03:00:01:52:54:00:10:00:02,0,1732470000,1,3000,1,5,128,0,0,,,0,,0,0\n";
    vec![("current", format!("{header}{rows}"))]
}

fn kea_files() -> Vec<(&'static str, String)> {
    let row = |k: u32, lifetime: u64, expire: u64, hostname: &str, state: u8| {
        let mac = traffic::client_mac(k).map(|b| format!("{b:02x}")).join(":");
        format!(
            "{},{mac},01:{mac},{lifetime},{expire},1,0,0,{hostname},{state},,0\n",
            traffic::client_ip(k)
        )
    };
    let mut current = String::from(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n",
    );
    current += &row(0, 3600, 1_732_470_000, "vm-0", 0);
    current += &row(1, 3600, 1_732_470_001, "a&#x2cb", 0);
    current += &row(0, 3600, 1_732_473_600, "vm-0", 0);
    current += &row(1, 0, 1_732_470_001, "", 0);
    current += &row(2, 3600, 1_732_470_002, "", 2);
    current += &row(3, 4_294_967_295, 0, "", 0);
    let older =
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname\n\
                 10.0.0.10,52:54:00:10:00:01,,3600,1732470000,1,0,0,vm\n"
            .to_owned();
    vec![("current", current), ("older-header", older)]
}
