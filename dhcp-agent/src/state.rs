//! The daemon's state as a file: pending releases and the latest flagged releases and repairs,
//! rewritten atomically after each change, so that `dhcp-agent leases` (and an operator) can
//! see them without talking to the daemon.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// How many flagged releases and repairs the file keeps.
pub const KEEP: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRelease {
    pub ip: String,
    pub mac: String,
    pub interface: String,
    pub received_server_id: Option<String>,
    pub seen: String,
    pub deadline: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateFile {
    pub updated: String,
    pub pending: Vec<PendingRelease>,
    /// Release events with `flagged: true`, oldest first (as printed by `run --json`).
    pub flagged: VecDeque<serde_json::Value>,
    /// Remediation events, oldest first.
    pub remediations: VecDeque<serde_json::Value>,
    /// Dropped releases whose lease the server still holds, unrenewed: resumed (and repaired,
    /// with `--remediate`) by the next run.
    #[serde(default)]
    pub outstanding: Vec<crate::remediate::OutstandingRelease>,
}

impl StateFile {
    pub fn remember(list: &mut VecDeque<serde_json::Value>, event: serde_json::Value) {
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
            StateFile::remember(&mut state.flagged, serde_json::json!({ "n": n }));
        }
        assert_eq!(state.flagged.len(), KEEP);
        assert_eq!(state.flagged[0]["n"], 5);
        state.write(&path).unwrap();
        assert_eq!(StateFile::read(&path).unwrap(), state);
        assert!(!PathBuf::from(format!("{}.tmp", path.display())).exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
