//! Start-up errors are clear, and two agents on one interface coexist.
mod common;

use std::process::Command;

use common::{AGENT, s, start_watch};
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
