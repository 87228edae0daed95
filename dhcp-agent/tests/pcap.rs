//! Captures in the redundant-VR lab: what `watch --pcap` writes is what tshark reads, and
//! `analyze` finds in tcpdump's captures (`-i any` and single interfaces) the dropped release the
//! live agent reported, with the same outcome.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{AGENT, s, start_run, start_watch};
use dhcp_lab::{Lab, LabConfig, ROUTER_IFACE, VIP_ADDR, wait_for};
use serde_json::Value;

/// tcpdump writing DHCP frames of `iface` in the router namespace to `file`.
struct Tcpdump {
    child: Child,
    log: PathBuf,
}

impl Tcpdump {
    fn start(lab: &Lab, iface: &str, file: &Path, extra: &[&str]) -> Tcpdump {
        let log = file.with_extension("log");
        let child = lab
            .router
            .command("tcpdump")
            .args(["-i", iface, "-U", "-w"])
            .arg(file)
            .args(extra)
            .args(["udp", "and", "(port", "67", "or", "port", "68)"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tcpdump (Debian package tcpdump)");
        let dump = Tcpdump { child, log };
        wait_for(Duration::from_secs(10), || {
            dump.log().contains("listening on")
        })
        .unwrap_or_else(|_| panic!("tcpdump did not start: {}", dump.log()));
        dump
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT: tcpdump writes what it has and exits.
    fn stop(mut self) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
    }
}

fn analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new(AGENT)
        .arg("analyze")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn analyze_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, text) = analyze(&all);
    assert!(ok, "analyze {args:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn releases(report: &Value) -> Vec<Value> {
    report["releases"].as_array().cloned().unwrap_or_default()
}

#[test]
fn what_watch_writes_tshark_reads_the_same() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let file = lab.dir.join("watch.pcapng");
    let agent = start_watch(&lab, &["--pcap", file.to_str().unwrap()]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    agent.wait_record("release on lo", |r| {
        s(r, "message_type") == "RELEASE" && s(r, "interface") == "lo"
    });
    std::thread::sleep(Duration::from_millis(500)); // nothing else is in flight
    // (interface, type, xid, server id) of each packet the agent printed.
    let printed: Vec<(String, String, String, String)> = agent
        .records()
        .iter()
        .map(|r| {
            let field = |k| s(r, k).to_owned();
            (
                field("interface"),
                field("message_type"),
                field("xid"),
                field("server_id"),
            )
        })
        .collect();
    agent.stop();
    let out = Command::new("tshark")
        .args([
            "-r",
            file.to_str().unwrap(),
            "-T",
            "fields",
            "-E",
            "separator=,",
        ])
        .args(["-e", "frame.interface_name", "-e", "dhcp.option.dhcp"])
        .args(["-e", "dhcp.id", "-e", "dhcp.option.dhcp_server_id"])
        .output()
        .expect("tshark (Debian package tshark)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let types = [
        "", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM",
    ];
    let read: Vec<(String, String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let kind = f[1]
                .parse::<usize>()
                .ok()
                .and_then(|n| types.get(n))
                .unwrap();
            (
                f[0].to_owned(),
                kind.to_string(),
                f[2].to_owned(),
                f[3].to_owned(),
            )
        })
        .collect();
    assert!(read.len() >= 5, "{read:?}");
    assert_eq!(
        read, printed,
        "tshark's reading of the file = what the agent printed"
    );
    assert!(
        read.iter()
            .any(|r| r.0 == "lo" && r.1 == "RELEASE" && r.3 == dhcp_lab::PRIMARY_ADDR.to_string()),
        "the dhcp_release RELEASE, with the primary address in option 54, on lo"
    );
}

#[test]
fn analyze_finds_in_tcpdump_captures_the_dropped_release_the_live_agent_saw() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let any = lab.dir.join("any.pcap");
    let any_sll = lab.dir.join("any-sll.pcap");
    let lo = lab.dir.join("lo.pcap");
    let guest = lab.dir.join("guest0.pcap");
    let dumps = [
        Tcpdump::start(&lab, "any", &any, &[]),
        Tcpdump::start(&lab, "any", &any_sll, &["-y", "LINUX_SLL"]),
        Tcpdump::start(&lab, "lo", &lo, &[]),
        Tcpdump::start(&lab, ROUTER_IFACE, &guest, &[]),
    ];
    let agent = start_run(&lab, &[]);
    let ip = lab.vm.boot().expect("lease");
    lab.dhcp_release(ip, &lab.vm.mac).expect("dhcp_release");
    let live = agent.wait_record("dropped release", |r| s(r, "outcome") == "dropped");
    agent.stop();
    std::thread::sleep(Duration::from_millis(300));
    for dump in dumps {
        dump.stop();
    }
    let (leases, conf) = (lab.lease_file(), lab.dir.join("dnsmasq.conf"));
    let (leases, conf) = (leases.to_str().unwrap(), conf.to_str().unwrap());
    let ip = ip.to_string();
    let vip = VIP_ADDR.to_string();
    let dropped = |report: &Value, evidence: &str| {
        let found = releases(report);
        assert_eq!(found.len(), 1, "{report}");
        let r = &found[0];
        assert_eq!(s(r, "ip"), ip, "{r}");
        assert_eq!(s(r, "outcome"), s(&live, "outcome"), "{r}");
        assert_eq!(s(r, "cause"), s(&live, "cause"), "{r}");
        assert_eq!(s(r, "expected_server_id"), vip, "{r}");
        assert_eq!(s(r, "evidence"), evidence, "{r}");
    };
    // tcpdump's default for `-i any` (SLL2 here) and the older SLL.
    for file in [&any, &any_sll] {
        let file = file.to_str().unwrap();
        // The wire alone: the server's id comes from its own OFFER/ACK in the capture.
        let report = analyze_json(&["--pcap", file]);
        dropped(&report, "wire");
        assert_eq!(
            report["server_ids"][0]["server_id"],
            vip.as_str(),
            "{report}"
        );
        assert_eq!(report["discover_to_ack"]["count"], 1, "{report}");
        // With the lease file: the address is still leased.
        dropped(
            &analyze_json(&["--pcap", file, "--leases", leases]),
            "lease_file",
        );
    }
    // Only lo: no reply to learn from, the configuration says which id the server uses.
    let lo = lo.to_str().unwrap();
    dropped(
        &analyze_json(&["--pcap", lo, "--dnsmasq-conf", conf]),
        "wire",
    );
    // Only the guest interface: the boot, and no RELEASE (it never crossed it).
    let report = analyze_json(&["--pcap", guest.to_str().unwrap()]);
    assert!(releases(&report).is_empty(), "{report}");
    assert_eq!(report["discover_to_ack"]["count"], 1, "{report}");
    assert_eq!(report["server_ids"][0]["server_id"], vip.as_str());
    // The text report and a client's timeline.
    let mac = lab.vm.mac.clone();
    let (ok, text) = analyze(&["--pcap", any.to_str().unwrap(), "--follow", &mac]);
    assert!(ok, "{text}");
    assert!(text.contains("1 dropped by the server"), "{text}");
    assert!(
        text.contains("DROPPED (server_id_mismatch, the server uses 172.29.101.1)"),
        "{text}"
    );
    assert!(
        text.contains(" boot at ") && text.contains(" release at "),
        "{text}"
    );
}

#[test]
fn analyze_refuses_what_is_no_capture_with_a_clear_error() {
    let path =
        std::env::temp_dir().join(format!("dhcp-agent-not-a-capture-{}", std::process::id()));
    std::fs::write(&path, "not a capture\n").unwrap();
    let (ok, text) = analyze(&["--pcap", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(!ok);
    assert!(text.contains("not a pcap or pcapng file"), "{text}");
    let (ok, text) = analyze(&["--pcap", "/nonexistent/file.pcap"]);
    assert!(!ok && text.contains("/nonexistent/file.pcap"), "{text}");
}
