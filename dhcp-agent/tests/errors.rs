//! Start-up errors are clear, and two agents on one interface coexist.
mod common;

use std::process::Command;

use common::{AGENT, DOCUMENTED_CAPS, s, setpriv_with, start_watch};
use dhcp_lab::{Lab, LabConfig};

fn agent_fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run dhcp-agent");
    assert!(!out.status.success(), "dhcp-agent should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_interface_is_named() {
    let stderr = agent_fails(Command::new(AGENT).args(["watch", "--iface", "nosuchif0"]));
    assert!(
        stderr.contains("unknown interface \"nosuchif0\""),
        "{stderr}"
    );
}

#[test]
fn missing_privileges_are_named() {
    // As nobody, with every capability dropped.
    let stderr = agent_fails(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                AGENT,
            ])
            .args(["watch", "--iface", "lo"]),
    );
    assert!(
        stderr.contains("missing privileges: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "{stderr}"
    );
    // Each documented capability is needed: without it (the other two held, as root and as an
    // unprivileged user with ambient capabilities) the agent stops at once, naming it and what
    // it is for, before loading or attaching anything.
    for missing in DOCUMENTED_CAPS {
        let others: Vec<&str> = DOCUMENTED_CAPS
            .into_iter()
            .filter(|c| *c != missing)
            .collect();
        for as_nobody in [false, true] {
            let launcher = setpriv_with(&others, as_nobody);
            let started = std::time::Instant::now();
            let stderr = agent_fails(
                Command::new(&launcher[0])
                    .args(&launcher[1..])
                    .arg(AGENT)
                    .args(["watch", "--iface", "lo"]),
            );
            let name = format!("CAP_{}", missing.to_uppercase());
            assert!(
                stderr.contains(&format!("missing privileges: {name} ({name}: ")),
                "without {name} (as nobody: {as_nobody}): {stderr}"
            );
            assert!(!stderr.contains("attached"), "{stderr}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
    }
}

#[test]
fn bad_filter_values_are_rejected() {
    let stderr = agent_fails(Command::new(AGENT).args(["watch", "--mac", "nope"]));
    assert!(stderr.contains("is not a MAC address"), "{stderr}");
    let stderr = agent_fails(Command::new(AGENT).args(["watch", "--type", "hello"]));
    assert!(stderr.contains("unknown DHCP message type"), "{stderr}");
}

/// A second agent finds XDP taken, falls back to TC ingress, and both see the traffic.
#[test]
fn a_second_agent_coexists_with_the_first() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    let args = [
        "--type",
        "discover",
        "--type",
        "offer",
        "--xdp-mode",
        "auto",
    ];
    let first = start_watch(&lab, &args);
    let second = start_watch(&lab, &args);
    assert!(
        first.stderr_text().contains("guest0: xdp_ingress"),
        "{}",
        first.stderr_text()
    );
    assert!(
        second.stderr_text().contains("guest0: tc_ingress"),
        "{}",
        second.stderr_text()
    );
    lab.vm.boot().expect("lease");
    let from_first = first.wait_record("DISCOVER", |r| s(r, "message_type") == "DISCOVER");
    let from_second = second.wait_record("DISCOVER", |r| s(r, "message_type") == "DISCOVER");
    assert_eq!(s(&from_first, "xid"), s(&from_second, "xid"));
    assert_eq!(s(&from_second, "hook"), "tc_ingress");
    // TC egress is shared by both (TCX or clsact chains): each must see the server's OFFER, so
    // neither program may end the chain for the other.
    let offer_first = first.wait_record("OFFER", |r| s(r, "message_type") == "OFFER");
    let offer_second = second.wait_record("OFFER", |r| s(r, "message_type") == "OFFER");
    assert_eq!(s(&offer_first, "xid"), s(&offer_second, "xid"));
    second.stop();
    first.stop();
}

#[test]
fn a_world_writable_config_file_is_refused() {
    let path = std::env::temp_dir().join(format!("dhcp-agent-ww-{}.toml", std::process::id()));
    std::fs::write(&path, "grace = \"1s\"\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let stderr = agent_fails(Command::new(AGENT).args(["run", "--config", path.to_str().unwrap()]));
    std::fs::remove_file(&path).unwrap();
    assert!(stderr.contains("writable by group or others"), "{stderr}");
    let stderr =
        agent_fails(Command::new(AGENT).args(["run", "--config", "/nonexistent/agent.toml"]));
    assert!(stderr.contains("/nonexistent/agent.toml"), "{stderr}");
}

/// Whoever can change the config file decides what the agent releases and where it writes: a
/// file or directory that anyone but root (or the agent's user) could change is refused.
#[test]
fn config_files_others_could_change_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("dhcp-agent-untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, "grace = \"1s\"\n").unwrap();
    let refusal = || {
        agent_fails(Command::new(AGENT).args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--iface",
            "nosuchif0",
        ]))
    };
    let mode = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&path, 0o620);
    assert!(refusal().contains("writable by group or others (mode 620)"));
    mode(&path, 0o600);
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    assert!(refusal().contains("is owned by uid 65534, not root or this user"));
    std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    // A directory anyone can write (and not sticky, unlike /tmp) lets anyone replace the file.
    mode(&dir, 0o777);
    let stderr = refusal();
    assert!(
        stderr.contains("which is writable by group or others (mode 777)"),
        "{stderr}"
    );
    // Safe again: the file is read and the agent goes on to the next error.
    mode(&dir, 0o755);
    let stderr = refusal();
    assert!(
        stderr.contains("unknown interface \"nosuchif0\""),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
