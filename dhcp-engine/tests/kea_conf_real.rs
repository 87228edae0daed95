//! Our reading of Kea's configuration against Kea 2.2's own (`kea-dhcp4 -t`, `kea-dhcp6 -t`,
//! which parse and check a configuration without serving): the samples the unit tests read
//! are configurations Kea accepts, and what our parser refuses Kea refuses too, so an error
//! from `kea_conf` never stands in front of a configuration Kea would run.
use std::{path::PathBuf, process::Command};

use dhcp_engine::{
    dnsmasq_conf::MemoryFiles,
    kea_conf::{self, Family},
};

const SAMPLE4: &str = include_str!("kea/kea-dhcp4.conf");
const SAMPLE6: &str = include_str!("kea/kea-dhcp6.conf");

/// What `kea-dhcp4 -t FILE` (or `kea-dhcp6`) says of `text`: `Ok` when it accepts it, else
/// its complaint.
fn kea_checks(family: Family, name: &str, text: &str) -> Result<(), String> {
    let binary = match family {
        Family::V4 => "kea-dhcp4",
        Family::V6 => "kea-dhcp6",
    };
    let path =
        std::env::temp_dir().join(format!("dhcp-observer-{}-{name}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary)
        .arg("-t")
        .arg(&path)
        .output()
        .unwrap_or_else(|err| {
            panic!("{binary} not runnable ({err}): `cargo xtask setup` installs kea-dhcp4-server and kea-dhcp6-server")
        });
    let _ = std::fs::remove_file(PathBuf::from(&path));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_samples_are_configurations_kea_accepts() {
    for (family, name, text) in [
        (Family::V4, "sample4", SAMPLE4),
        (Family::V6, "sample6", SAMPLE6),
    ] {
        kea_checks(family, name, text)
            .unwrap_or_else(|err| panic!("{name}: Kea refuses it: {err}"));
        let config = kea_conf::parse(text, &MemoryFiles::default()).unwrap();
        assert_eq!(config.family, family);
        assert!(!config.reservations.is_empty(), "{name}");
    }
}

#[test]
fn what_we_refuse_kea_refuses() {
    for (name, text) in [
        (
            "no-identifier",
            r#"{"Dhcp4": {"reservations": [{"hostname": "x"}]}}"#,
        ),
        (
            "two-identifiers",
            r#"{"Dhcp4": {"reservations": [{"hw-address": "00:01", "client-id": "01", "hostname": "x"}]}}"#,
        ),
        (
            "bad-mac",
            r#"{"Dhcp4": {"reservations": [{"hw-address": "zz", "hostname": "x"}]}}"#,
        ),
        (
            "v6-client-id",
            r#"{"Dhcp6": {"reservations": [{"client-id": "01", "hostname": "x"}]}}"#,
        ),
        (
            "v6-subnet-in-v4",
            r#"{"Dhcp4": {"subnet4": [{"id": 1, "subnet": "fd00::/64"}]}}"#,
        ),
        (
            "reversed-pool",
            r#"{"Dhcp4": {"subnet4": [{"id": 1, "subnet": "10.0.0.0/8", "pools": [{"pool": "10.0.0.9 - 10.0.0.1"}]}]}}"#,
        ),
        (
            "negative-id",
            r#"{"Dhcp4": {"subnet4": [{"id": -1, "subnet": "10.0.0.0/8"}]}}"#,
        ),
        (
            "persist-string",
            r#"{"Dhcp4": {"lease-database": {"type": "memfile", "persist": "yes"}}}"#,
        ),
        (
            "interfaces-string",
            r#"{"Dhcp4": {"interfaces-config": {"interfaces": "eth0"}}}"#,
        ),
        (
            "identifier-mac",
            r#"{"Dhcp4": {"host-reservation-identifiers": ["mac"]}}"#,
        ),
        ("comment-not-closed", "{ /* never closed\n\"Dhcp4\": {} }"),
        (
            "missing-include",
            "{ \"Dhcp4\": <?include \"/nonexistent/dhcp-observer.json\"?> }",
        ),
    ] {
        let family = if text.contains("Dhcp6") {
            Family::V6
        } else {
            Family::V4
        };
        let ours = kea_conf::parse(text, &MemoryFiles::default());
        assert!(ours.is_err(), "{name}: we read it: {ours:?}");
        assert!(
            kea_checks(family, name, text).is_err(),
            "{name}: Kea accepts what we refuse ({:?})",
            ours.err()
        );
    }
}

#[test]
fn comments_kea_takes_we_take() {
    let text = "# hash\n{ // slashes\n\"Dhcp4\": { /* a\nblock */ \"interfaces-config\": \
                { \"interfaces\": [ \"lo\" ] }, \"valid-lifetime\": 600 } }\n# end\n";
    kea_checks(Family::V4, "comments", text).unwrap();
    let config = kea_conf::parse(text, &MemoryFiles::default()).unwrap();
    assert_eq!(config.interfaces, ["lo"]);
}
