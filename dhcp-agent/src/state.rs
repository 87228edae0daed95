//! The daemon's state as a file: pending releases and the latest flagged releases and repairs,
//! rewritten atomically after each change, so that `dhcp-agent leases` (and an operator) can
//! see them without talking to the daemon, and so that the next run resumes the releases still
//! pending and the dropped ones still outstanding.
use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use dhcp_engine::{
    correlate::{Pending, Release},
    leases::{Expiry, Lease},
    provenance::Origin,
    time::rfc3339,
};
use dhcp_wire::{hex_colon, parse_hex_bytes};

use crate::events::{ReleaseEvent, RemediationEvent};

/// Where the packaged unit's StateDirectory= puts it, so `dhcp-agent leases` finds it too.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/dhcp-agent/state.json";

/// How many flagged releases and repairs the file keeps.
pub const KEEP: usize = 256;

/// A RELEASE seen within its grace period when the file was written: the next run resumes it
/// (with its own seen time, deadline and the lease the table showed), so a RELEASE seen just
/// before a restart is still settled.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRelease {
    pub ip: String,
    pub mac: String,
    pub interface: String,
    pub received_server_id: Option<String>,
    pub seen: String,
    pub deadline: String,
    // The fields below were added to resume pending releases; files written before lack them.
    #[serde(default)]
    pub xid: u32,
    /// Option 61 of the RELEASE (hex bytes, `:`-separated).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Option 50 of the RELEASE.
    #[serde(default)]
    pub requested_ip: Option<String>,
    /// The lease as the table showed it while the release was pending; `None` when the table
    /// had not listed the address yet (what tells `honored` from `no_lease` after a restart).
    #[serde(default)]
    pub lease: Option<PendingLease>,
    /// The server ACKed the address to the same client after the RELEASE.
    #[serde(default)]
    pub renewed_since: bool,
    /// Who sent it; files written before lack it and mean the careful reading: a guest (its
    /// release is repaired only when asked).
    #[serde(default = "guest")]
    pub origin: Origin,
    /// The server was down when it was seen.
    #[serde(default)]
    pub server_down: bool,
    /// The server went down while it was pending.
    #[serde(default)]
    pub server_went_down: bool,
    /// The frame's Ethernet source.
    #[serde(default)]
    pub sender: Option<dhcp_wire::Mac>,
}

fn guest() -> Origin {
    Origin::Guest
}

/// A DHCPv4 lease as the table listed it (its address is the release's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingLease {
    /// Hardware address (hex bytes, `:`-separated).
    pub mac: String,
    #[serde(default = "ethernet")]
    pub htype: u8,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    pub expiry: Expiry,
}

fn ethernet() -> u8 {
    1
}

impl PendingRelease {
    /// What the state file keeps of a pending release.
    pub fn new(pending: &Pending) -> PendingRelease {
        let r = &pending.release;
        PendingRelease {
            ip: r.ciaddr.to_string(),
            mac: hex_colon(&r.chaddr),
            interface: r.interface.clone(),
            received_server_id: r.server_id.map(|a| a.to_string()),
            seen: rfc3339(r.seen_ns),
            deadline: rfc3339(pending.deadline_ns),
            xid: r.xid,
            client_id: r.client_id.as_deref().map(hex_colon),
            requested_ip: r.requested_ip.map(|a| a.to_string()),
            lease: pending.lease.as_ref().map(|l| PendingLease {
                mac: hex_colon(&l.hwaddr),
                htype: l.htype,
                client_id: l.client_id.as_deref().map(hex_colon),
                hostname: l.hostname.clone(),
                expiry: l.expiry,
            }),
            renewed_since: pending.renewed_since,
            origin: r.origin,
            server_down: pending.server_down,
            server_went_down: pending.server_went_down,
            sender: r.sender,
        }
    }

    /// The pending release to resume (times to the microsecond, as the file keeps them).
    pub fn to_pending(&self) -> anyhow::Result<Pending> {
        let ip: Ipv4Addr = self.ip.parse().context("ip")?;
        let v4 = |text: &Option<String>, what: &str| {
            text.as_deref()
                .map(|t| t.parse::<Ipv4Addr>().with_context(|| what.to_owned()))
                .transpose()
        };
        let hex = |text: &str, what: &str| {
            parse_hex_bytes(text).with_context(|| format!("{what}: {text:?} is not hex bytes"))
        };
        let hex_opt =
            |text: &Option<String>, what: &str| text.as_deref().map(|t| hex(t, what)).transpose();
        let time = |text: &str, what: &str| {
            text.parse::<jiff::Timestamp>()
                .map(|t| t.as_nanosecond())
                .with_context(|| format!("{what}: {text:?}"))
        };
        let lease = match &self.lease {
            Some(l) => Some(Lease {
                ip: ip.into(),
                hwaddr: hex(&l.mac, "lease mac")?,
                htype: l.htype,
                client_id: hex_opt(&l.client_id, "lease client_id")?,
                hostname: l.hostname.clone(),
                expiry: l.expiry,
                iaid: None,
            }),
            None => None,
        };
        Ok(Pending {
            release: Release {
                seen_ns: time(&self.seen, "seen")?,
                interface: self.interface.clone(),
                xid: self.xid,
                ciaddr: ip,
                chaddr: hex(&self.mac, "mac")?,
                client_id: hex_opt(&self.client_id, "client_id")?,
                server_id: v4(&self.received_server_id, "received_server_id")?,
                requested_ip: v4(&self.requested_ip, "requested_ip")?,
                origin: self.origin,
                sender: self.sender,
            },
            lease,
            renewed_since: self.renewed_since,
            server_down: self.server_down,
            server_went_down: self.server_went_down,
            deadline_ns: time(&self.deadline, "deadline")?,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateFile {
    pub updated: String,
    pub pending: Vec<PendingRelease>,
    /// Release events with `flagged: true`, oldest first (as printed by `run --json`).
    pub flagged: VecDeque<ReleaseEvent>,
    /// Remediation events, oldest first.
    pub remediations: VecDeque<RemediationEvent>,
    /// Dropped releases whose lease the server still holds, unrenewed: resumed (and repaired,
    /// with `--remediate`) by the next run.
    #[serde(default)]
    pub outstanding: Vec<dhcp_engine::outstanding::OutstandingRelease>,
    /// Orphan leases the server renewed to their client: alive, never released, also by the
    /// next run.
    #[serde(default)]
    pub renewed_orphans: Vec<RenewedOrphan>,
}

/// An orphan lease the server renewed (see [`StateFile::renewed_orphans`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RenewedOrphan {
    pub ip: Ipv4Addr,
    pub mac: dhcp_wire::Mac,
}

impl StateFile {
    /// Appends to one of the lists, keeping the latest [`KEEP`].
    pub fn remember<T>(list: &mut VecDeque<T>, event: T) {
        if list.len() == KEEP {
            list.pop_front();
        }
        list.push_back(event);
    }

    /// Writes to a temporary file beside `path` and renames it over: readers never see half.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }

    /// Reads the file; a missing file is an empty state (the daemon is not running).
    pub fn read(path: &Path) -> anyhow::Result<StateFile> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically_and_keeps_the_latest() {
        let path = std::env::temp_dir().join(format!(
            "dhcp-agent-state-{}/state.json",
            std::process::id()
        ));
        assert_eq!(StateFile::read(&path).unwrap(), StateFile::default());
        let mut state = StateFile::default();
        for n in 0..KEEP + 5 {
            let event = ReleaseEvent {
                xid: format!("0x{n:08x}"),
                ..ReleaseEvent::default()
            };
            StateFile::remember(&mut state.flagged, event);
        }
        assert_eq!(state.flagged.len(), KEEP);
        assert_eq!(state.flagged[0].xid, "0x00000005");
        state.write(&path).unwrap();
        assert_eq!(StateFile::read(&path).unwrap(), state);
        assert!(!PathBuf::from(format!("{}.tmp", path.display())).exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    const SECOND: i128 = 1_000_000_000;

    /// A pending release with every field set (times to the microsecond, as saved).
    fn pending(lease: Option<Lease>) -> Pending {
        let seen_ns = 1_700_000_000 * SECOND + 123_456_000;
        Pending {
            release: Release {
                seen_ns,
                interface: "guest0".into(),
                xid: 0xdead_beef,
                ciaddr: Ipv4Addr::new(172, 29, 101, 150),
                chaddr: vec![0x52, 0x54, 0, 0x10, 0, 1],
                client_id: Some(vec![1, 0x52, 0x54, 0, 0x10, 0, 1]),
                server_id: Some(Ipv4Addr::new(172, 29, 101, 245)),
                requested_ip: Some(Ipv4Addr::new(172, 29, 101, 150)),
                origin: Origin::Forged,
                sender: Some(dhcp_wire::Mac([2, 0, 0, 0, 0, 0x66])),
            },
            lease,
            renewed_since: true,
            server_down: true,
            server_went_down: true,
            deadline_ns: seen_ns + 5 * SECOND,
        }
    }

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(172, 29, 101, 150).into(),
            hwaddr: vec![0x52, 0x54, 0, 0x10, 0, 1],
            htype: 1,
            client_id: Some(vec![1, 0x52, 0x54, 0, 0x10, 0, 1]),
            hostname: Some("vm".into()),
            expiry: Expiry::At(1_700_003_600),
            iaid: None,
        }
    }

    #[test]
    fn a_pending_release_round_trips_through_the_file() {
        for original in [pending(Some(lease())), pending(None)] {
            let state = StateFile {
                pending: vec![PendingRelease::new(&original)],
                ..StateFile::default()
            };
            let text = serde_json::to_string_pretty(&state).unwrap();
            let read: StateFile = serde_json::from_str(&text).unwrap();
            assert_eq!(read, state, "{text}");
            assert_eq!(read.pending[0].to_pending().unwrap(), original, "{text}");
        }
    }

    #[test]
    fn a_state_file_from_before_resumption_still_loads() {
        // As written by versions that did not resume pending releases (nor had `outstanding`).
        let old = r#"{
          "updated": "2024-05-01T10:00:01.000000Z",
          "pending": [{
            "ip": "172.29.101.150",
            "mac": "52:54:00:10:00:01",
            "interface": "lo",
            "received_server_id": "172.29.101.245",
            "seen": "2024-05-01T10:00:00.250000Z",
            "deadline": "2024-05-01T10:00:02.250000Z"
          }],
          "flagged": [],
          "remediations": []
        }"#;
        let state: StateFile = serde_json::from_str(old).unwrap();
        assert!(state.outstanding.is_empty());
        let saved = &state.pending[0];
        assert_eq!((saved.xid, saved.lease.as_ref()), (0, None));
        assert!(!saved.renewed_since);
        let resumed = saved.to_pending().unwrap();
        let seen: jiff::Timestamp = "2024-05-01T10:00:00.25Z".parse().unwrap();
        assert_eq!(resumed.release.seen_ns, seen.as_nanosecond());
        assert_eq!(resumed.deadline_ns, seen.as_nanosecond() + 2 * SECOND);
        assert_eq!(
            resumed.release.server_id,
            Some(Ipv4Addr::new(172, 29, 101, 245))
        );
        assert_eq!(resumed.release.chaddr, [0x52, 0x54, 0, 0x10, 0, 1]);
        assert_eq!(
            (resumed.release.client_id, resumed.release.requested_ip),
            (None, None)
        );
        assert_eq!(resumed.lease, None);
    }

    #[test]
    fn flagged_releases_and_repairs_from_before_host_names_still_load() {
        // As written before events carried `host` (and repairs `basis`).
        let old = r#"{
          "updated": "2024-05-01T10:00:01.000000Z",
          "pending": [],
          "flagged": [{
            "event": "release", "outcome": "dropped", "flagged": true,
            "cause": "server_id_mismatch", "ip": "172.29.101.150", "mac": "52:54:00:10:00:01",
            "client_id": null, "interface": "lo", "xid": "0x00000000",
            "received_server_id": "172.29.101.245", "expected_server_id": "172.29.101.1",
            "requested_ip": null, "hostname": "vm", "seen": "x", "settled": "y"
          }],
          "remediations": [{
            "event": "remediation", "result": "dry_run", "ip": "172.29.101.150",
            "mac": "52:54:00:10:00:01", "server_id": "172.29.101.1", "detail": null
          }]
        }"#;
        let state: StateFile = serde_json::from_str(old).unwrap();
        assert_eq!(state.flagged[0].host, None);
        assert_eq!(state.flagged[0].hostname.as_deref(), Some("vm"));
        assert_eq!(state.remediations[0].host, None);
        // And what is written now keeps the name.
        let mut state = state;
        state.flagged[0].host = Some("i-2-50-VM".into());
        let text = serde_json::to_string(&state).unwrap();
        let read: StateFile = serde_json::from_str(&text).unwrap();
        assert_eq!(read.flagged[0].host.as_deref(), Some("i-2-50-VM"));
    }

    #[test]
    fn a_damaged_pending_release_is_not_resumed() {
        let mut saved = PendingRelease::new(&pending(None));
        saved.seen = "yesterday".into();
        assert!(saved.to_pending().is_err());
        let mut saved = PendingRelease::new(&pending(None));
        saved.mac = "52:54:zz".into();
        assert!(saved.to_pending().is_err());
    }
}
