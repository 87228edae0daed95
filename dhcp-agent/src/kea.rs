//! Kea's control socket: the agent's way to ask Kea's memory (`lease4-get`, `lease6-get`) and
//! to repair (`lease4-del`, `lease6-del`: the server's own API, no forged packet), through the
//! `lease_cmds` hook.
//! The commands and answers are [`dhcp_engine::kea_control`]'s; this is the I/O.
//!
//! Kea 2.2 reads one JSON command per connection on its unix stream socket, writes one JSON
//! object and closes the connection (seen in `dhcp-lab/tests/kea_lab.rs`), so each call is one
//! connection, read to the end.
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use dhcp_engine::{
    kea_conf::Family,
    kea_control::{self, KeaAnswer, KeaAnswerError},
    leases::Lease,
};
use thiserror::Error;

/// How long one command may take: Kea answers a lease command from memory within a
/// millisecond; a Kea that takes longer is busy or stuck, and the agent must not wait on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read: a `lease4-get` answer is a few hundred bytes.
const MAX_ANSWER: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum KeaControlError {
    #[error("Kea's control socket {0} does not exist (is Kea running, with a control-socket?)")]
    SocketMissing(PathBuf),
    #[error("no permission to use Kea's control socket {0}")]
    Permission(PathBuf),
    #[error("Kea is not listening on its control socket {0} (stopped?)")]
    Refused(PathBuf),
    #[error("Kea did not answer on {path} within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("talking to Kea on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kea's answer on {path} is not understood: {source}")]
    BadAnswer {
        path: PathBuf,
        #[source]
        source: KeaAnswerError,
    },
    /// Kea answered result 2 ("'lease4-get' command not supported."): the `lease_cmds` hook
    /// is not in its `hooks-libraries`.
    #[error(
        "Kea does not know {command}: the lease_cmds hook (libdhcp_lease_cmds.so) is not loaded ({text})"
    )]
    LeaseCmdsNotLoaded { command: &'static str, text: String },
    #[error("Kea refused {command}: result {result}: {text}")]
    Failed {
        command: &'static str,
        result: i64,
        text: String,
    },
}

/// A client of one Kea control socket.
#[derive(Debug, Clone)]
pub struct KeaControl {
    socket: PathBuf,
    timeout: Duration,
    /// Whose socket: kea-dhcp4 answers `lease4-*` commands only, kea-dhcp6 `lease6-*` only.
    family: Family,
}

impl KeaControl {
    pub fn new(socket: impl Into<PathBuf>) -> KeaControl {
        KeaControl {
            socket: socket.into(),
            timeout: COMMAND_TIMEOUT,
            family: Family::V4,
        }
    }

    /// The socket of a kea-dhcp6 (`Family::V6`) or a kea-dhcp4.
    pub fn for_family(mut self, family: Family) -> KeaControl {
        self.family = family;
        self
    }

    /// Whether Kea answers a lease command (a get of an address no one holds: "not found"
    /// proves the socket open and `lease_cmds` loaded), in its family.
    pub fn answers_lease_commands(&self) -> Result<(), KeaControlError> {
        match self.family {
            Family::V4 => self.lease4_get(Ipv4Addr::UNSPECIFIED).map(drop),
            Family::V6 => self.lease6_get(Ipv6Addr::UNSPECIFIED).map(drop),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> KeaControl {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `command` (JSON text) and returns Kea's answer as sent.
    pub fn send_raw(&self, command: &str) -> Result<String, KeaControlError> {
        let path = &self.socket;
        let io = |source: std::io::Error| match source.kind() {
            ErrorKind::NotFound => KeaControlError::SocketMissing(path.clone()),
            ErrorKind::PermissionDenied => KeaControlError::Permission(path.clone()),
            ErrorKind::ConnectionRefused => KeaControlError::Refused(path.clone()),
            ErrorKind::WouldBlock | ErrorKind::TimedOut => KeaControlError::Timeout {
                path: path.clone(),
                timeout: self.timeout,
            },
            _ => KeaControlError::Io {
                path: path.clone(),
                source,
            },
        };
        let mut stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        stream.write_all(command.as_bytes()).map_err(io)?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .map_err(io)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Sends `command` and reads Kea's answer; `name` is the command's name for errors. Result
    /// 2 is [`KeaControlError::LeaseCmdsNotLoaded`].
    fn send(&self, name: &'static str, command: &str) -> Result<KeaAnswer, KeaControlError> {
        let text = self.send_raw(command)?;
        let answer =
            kea_control::parse_answer(&text).map_err(|source| KeaControlError::BadAnswer {
                path: self.socket.clone(),
                source,
            })?;
        let unsupported = answer.is_unsupported();
        match answer {
            KeaAnswer::Failed { text, .. } if unsupported => {
                Err(KeaControlError::LeaseCmdsNotLoaded {
                    command: name,
                    text,
                })
            }
            KeaAnswer::Failed { result, text } => Err(KeaControlError::Failed {
                command: name,
                result,
                text,
            }),
            answer => Ok(answer),
        }
    }

    /// The lease Kea holds in memory for `ip`, if any.
    pub fn lease4_get(&self, ip: Ipv4Addr) -> Result<Option<Lease>, KeaControlError> {
        match self.send("lease4-get", &kea_control::lease4_get(ip))? {
            KeaAnswer::Lease(lease) => Ok(Some(lease)),
            KeaAnswer::NotFound => Ok(None),
            KeaAnswer::Deleted | KeaAnswer::Failed { .. } => Err(self.unexpected("lease4-get")),
        }
    }

    /// Deletes Kea's lease of `ip`; `false`: Kea had none.
    pub fn lease4_del(&self, ip: Ipv4Addr) -> Result<bool, KeaControlError> {
        match self.send("lease4-del", &kea_control::lease4_del(ip))? {
            KeaAnswer::Deleted => Ok(true),
            KeaAnswer::NotFound => Ok(false),
            KeaAnswer::Lease(_) | KeaAnswer::Failed { .. } => Err(self.unexpected("lease4-del")),
        }
    }

    /// The address lease (IA_NA) Kea's DHCPv6 server holds in memory for `ip`, if any.
    pub fn lease6_get(&self, ip: Ipv6Addr) -> Result<Option<Lease>, KeaControlError> {
        match self.send("lease6-get", &kea_control::lease6_get(ip))? {
            KeaAnswer::Lease(lease) => Ok(Some(lease)),
            KeaAnswer::NotFound => Ok(None),
            KeaAnswer::Deleted | KeaAnswer::Failed { .. } => Err(self.unexpected("lease6-get")),
        }
    }

    /// Deletes Kea's DHCPv6 address lease of `ip`; `false`: Kea had none.
    pub fn lease6_del(&self, ip: Ipv6Addr) -> Result<bool, KeaControlError> {
        match self.send("lease6-del", &kea_control::lease6_del(ip))? {
            KeaAnswer::Deleted => Ok(true),
            KeaAnswer::NotFound => Ok(false),
            KeaAnswer::Lease(_) | KeaAnswer::Failed { .. } => Err(self.unexpected("lease6-del")),
        }
    }

    fn unexpected(&self, command: &'static str) -> KeaControlError {
        KeaControlError::Failed {
            command,
            result: 0,
            text: "an answer of another command".into(),
        }
    }
}

/// Which DHCP server the router runs (`--server-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    Dnsmasq,
    Kea,
}

impl ServerKind {
    /// The name on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Dnsmasq => "dnsmasq",
            ServerKind::Kea => "kea",
        }
    }

    /// What the operator did not say, guessed: a Kea configuration means Kea, a dnsmasq one
    /// dnsmasq; else the lease file's text (Kea's memfile starts with its CSV header), else
    /// dnsmasq.
    pub fn detect(kea_conf: bool, dnsmasq_conf: bool, lease_file_text: Option<&str>) -> ServerKind {
        if kea_conf {
            ServerKind::Kea
        } else if dnsmasq_conf {
            ServerKind::Dnsmasq
        } else if lease_file_text
            .is_some_and(|t| t.starts_with("address,hwaddr,") || t.starts_with("address,duid,"))
        {
            ServerKind::Kea
        } else {
            ServerKind::Dnsmasq
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A socket that answers each connection with the next of `answers` (what Kea 2.2 said in
    /// the lab), after reading the command.
    fn kea_like(answers: &'static [&'static str]) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("kea4.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).unwrap();
                conn.write_all(answer.as_bytes()).unwrap();
            }
        });
        (dir, path)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir =
                    std::env::temp_dir().join(format!("dhcp-agent-kea-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                Dir(dir)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const IP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 100);

    #[test]
    fn answers_become_leases_deletions_and_typed_errors() {
        let (_dir, path) = kea_like(&[
            r#"{ "arguments": { "cltt": 1796237707, "fqdn-fwd": false, "fqdn-rev": false, "hostname": "vm", "hw-address": "52:54:00:20:00:01", "ip-address": "172.29.101.100", "state": 0, "subnet-id": 1, "valid-lft": 3600 }, "result": 0, "text": "IPv4 lease found." }"#,
            r#"{ "result": 0, "text": "IPv4 lease deleted." }"#,
            r#"{ "result": 3, "text": "Lease not found." }"#,
            r#"{ "result": 3, "text": "IPv4 lease not found." }"#,
            r#"{ "result": 2, "text": "'lease4-get' command not supported." }"#,
            r#"{ "result": 1, "text": "Failed to convert string to address 'x': Invalid argument" }"#,
            "not json",
        ]);
        let kea = KeaControl::new(&path);
        let lease = kea.lease4_get(IP).unwrap().unwrap();
        assert_eq!(lease.mac(), Some([0x52, 0x54, 0, 0x20, 0, 1]));
        assert!(kea.lease4_del(IP).unwrap());
        assert_eq!(kea.lease4_get(IP).unwrap(), None);
        assert!(!kea.lease4_del(IP).unwrap());
        assert!(matches!(
            kea.lease4_get(IP),
            Err(KeaControlError::LeaseCmdsNotLoaded {
                command: "lease4-get",
                ..
            })
        ));
        assert!(matches!(
            kea.lease4_get(IP),
            Err(KeaControlError::Failed { result: 1, .. })
        ));
        assert!(matches!(
            kea.lease4_get(IP),
            Err(KeaControlError::BadAnswer { .. })
        ));
    }

    #[test]
    fn a_dhcpv6_socket_is_asked_with_lease6_commands() {
        let (_dir, path) = kea_like(&[
            r#"{ "result": 3, "text": "Lease not found." }"#,
            r#"{ "arguments": { "cltt": 100, "duid": "00:03:00:01:52:54:00:20:00:01", "hostname": "", "iaid": 7, "ip-address": "fd00:29:101::10", "preferred-lft": 3000, "state": 0, "subnet-id": 1, "type": "IA_NA", "valid-lft": 4000 }, "result": 0, "text": "IPv6 lease found." }"#,
            r#"{ "result": 0, "text": "IPv6 lease deleted." }"#,
            r#"{ "result": 3, "text": "IPv6 lease not found." }"#,
            r#"{ "result": 2, "text": "'lease6-get' command not supported." }"#,
        ]);
        let kea = KeaControl::new(&path).for_family(Family::V6);
        kea.answers_lease_commands().unwrap();
        let ip: Ipv6Addr = "fd00:29:101::10".parse().unwrap();
        let lease = kea.lease6_get(ip).unwrap().unwrap();
        assert_eq!(
            (lease.ip, lease.iaid, lease.client_id.as_deref()),
            (
                std::net::IpAddr::V6(ip),
                Some(7),
                Some(&[0, 3, 0, 1, 0x52, 0x54, 0, 0x20, 0, 1][..])
            )
        );
        assert!(kea.lease6_del(ip).unwrap());
        assert!(!kea.lease6_del(ip).unwrap());
        assert!(matches!(
            kea.answers_lease_commands(),
            Err(KeaControlError::LeaseCmdsNotLoaded { .. })
        ));
    }

    #[test]
    fn a_missing_socket_and_nobody_listening_are_told_apart() {
        let dir = tempdir::Dir::new();
        let missing = KeaControl::new(dir.0.join("none.sock"));
        assert!(matches!(
            missing.lease4_get(IP),
            Err(KeaControlError::SocketMissing(_))
        ));
        // A socket file left by a Kea that stopped.
        let stale = dir.0.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(matches!(
            KeaControl::new(&stale).lease4_get(IP),
            Err(KeaControlError::Refused(_))
        ));
    }

    #[test]
    fn the_kind_is_what_was_said_else_what_the_lease_file_shows() {
        let kea_file = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id\n";
        assert_eq!(ServerKind::detect(true, false, None), ServerKind::Kea);
        assert_eq!(
            ServerKind::detect(false, true, Some(kea_file)),
            ServerKind::Dnsmasq
        );
        assert_eq!(
            ServerKind::detect(false, false, Some(kea_file)),
            ServerKind::Kea
        );
        assert_eq!(
            ServerKind::detect(
                false,
                false,
                Some("1732470000 52:54:00:10:00:01 10.0.0.5 * *\n")
            ),
            ServerKind::Dnsmasq
        );
        assert_eq!(ServerKind::detect(false, false, None), ServerKind::Dnsmasq);
        // Kea's DHCPv6 memfile.
        assert_eq!(
            ServerKind::detect(false, false, Some("address,duid,valid_lifetime,expire\n")),
            ServerKind::Kea
        );
    }

    #[test]
    fn a_kea_that_does_not_answer_times_out() {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("slow.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let held = std::thread::spawn(move || listener.accept().map(|(conn, _)| conn));
        let kea = KeaControl::new(&path).with_timeout(Duration::from_millis(100));
        let err = kea.lease4_get(IP).unwrap_err();
        assert!(matches!(err, KeaControlError::Timeout { .. }), "{err}");
        drop(held.join());
    }
}
