//! Following a lease file as the server rewrites it.
//!
//! inotify watches the file's *directory*, so the watch survives the file being deleted,
//! recreated or replaced by rename. After a change, events are drained for a short debounce
//! (dnsmasq's in-place rewrite is a truncate plus writes: several IN_MODIFY, no
//! IN_CLOSE_WRITE); a file still caught half-written is read again a little later.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};
use thiserror::Error;

use dhcp_engine::{
    leases::{LeaseFileError, LeaseFormat, LeaseTable},
    observer::LeaseFileRead,
};

/// Where dnsmasq keeps its leases unless `dhcp-leasefile` says otherwise.
pub const DEFAULT_LEASE_FILE: &str = "/var/lib/misc/dnsmasq.leases";

const DEBOUNCE: Duration = Duration::from_millis(30);
const INCOMPLETE_RETRIES: u32 = 20;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("lease file {0} does not exist")]
    Missing(PathBuf),
    #[error("reading lease file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lease file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: LeaseFileError,
    },
}

impl LoadError {
    /// What the observer is told of a read that failed.
    pub fn read_result(result: Result<LeaseTable, LoadError>) -> LeaseFileRead {
        match result {
            Ok(table) => LeaseFileRead::Table(table),
            Err(LoadError::Missing(_)) => LeaseFileRead::Missing,
            Err(LoadError::Read { .. }) => LeaseFileRead::Unreadable,
            Err(LoadError::Parse { .. }) => LeaseFileRead::Invalid,
        }
    }
}

/// Reads and parses a lease file once (a missing file is [`LoadError::Missing`]).
pub fn read_table(path: &Path, format: &dyn LeaseFormat) -> Result<LeaseTable, LoadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::Missing(path.to_owned()));
        }
        Err(source) => {
            return Err(LoadError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    format.parse(&text).map_err(|source| LoadError::Parse {
        path: path.to_owned(),
        source,
    })
}

pub struct LeaseFollower {
    path: PathBuf,
    file_name: OsString,
    format: Box<dyn LeaseFormat + Send>,
    events: EventStream<Vec<u8>>,
    /// When a seen change counts as settled (debounce), if one is pending.
    settle_at: Option<tokio::time::Instant>,
}

impl LeaseFollower {
    pub fn new(path: &Path, format: Box<dyn LeaseFormat + Send>) -> std::io::Result<LeaseFollower> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(OsString::from).unwrap_or_default();
        let inotify = Inotify::init()?;
        inotify.watches().add(
            &dir,
            WatchMask::MODIFY
                | WatchMask::CLOSE_WRITE
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM,
        )?;
        let events = inotify.into_event_stream(vec![0u8; 4096])?;
        Ok(LeaseFollower {
            path: path.to_owned(),
            file_name,
            format,
            events,
            settle_at: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format_name(&self) -> &'static str {
        self.format.name()
    }

    /// Reads and parses the file once.
    pub fn load_once(&self) -> Result<LeaseTable, LoadError> {
        read_table(&self.path, self.format.as_ref())
    }

    /// Reads the file, waiting out a writer that is still at work.
    pub async fn load(&self) -> Result<LeaseTable, LoadError> {
        let mut tries = 0;
        loop {
            match self.load_once() {
                Err(LoadError::Parse {
                    source: LeaseFileError::Incomplete,
                    ..
                }) if tries < INCOMPLETE_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(DEBOUNCE).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until the file changed (written, created, deleted, renamed over) and then stayed
    /// quiet for the debounce time. Cancel-safe: the pending change is kept in `self`, so it can
    /// sit in a `select!` beside other branches.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let file_name = self.file_name.as_os_str();
        settled_change(&mut self.events, &mut self.settle_at, DEBOUNCE, |event| {
            event.name.as_deref() == Some(file_name)
        })
        .await
    }
}

/// Waits for an inotify event that `counts`, then until the stream stayed quiet for
/// `debounce`. Cancel-safe: the pending deadline lives in `settle_at`, owned by the caller.
pub(crate) async fn settled_change(
    events: &mut EventStream<Vec<u8>>,
    settle_at: &mut Option<tokio::time::Instant>,
    debounce: Duration,
    counts: impl Fn(&inotify::Event<OsString>) -> bool,
) -> std::io::Result<()> {
    loop {
        let event = match *settle_at {
            Some(at) => tokio::select! {
                event = events.next() => event,
                () = tokio::time::sleep_until(at) => {
                    *settle_at = None;
                    return Ok(());
                }
            },
            None => events.next().await,
        };
        let event = event.ok_or_else(|| std::io::Error::other("inotify stream ended"))??;
        if counts(&event) {
            *settle_at = Some(tokio::time::Instant::now() + debounce);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, net::Ipv4Addr};

    use super::*;
    use dhcp_engine::leases::dnsmasq::Dnsmasq;

    const ONE: &str = "0 52:54:00:10:00:01 10.0.0.1 * *\n";
    const TWO: &str = "0 52:54:00:10:00:01 10.0.0.1 * *\n0 52:54:00:10:00:02 10.0.0.2 * *\n";

    async fn next_change(follower: &mut LeaseFollower) {
        tokio::time::timeout(Duration::from_secs(5), follower.changed())
            .await
            .expect("a change")
            .unwrap();
    }

    #[tokio::test]
    async fn survives_in_place_rewrites_renames_deletes_and_recreation() {
        let dir = std::env::temp_dir().join(format!("lease-follow-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dnsmasq.leases");
        fs::write(&path, ONE).unwrap();
        let mut follower = LeaseFollower::new(&path, Box::new(Dnsmasq)).unwrap();
        assert_eq!(follower.load().await.unwrap().v4.len(), 1);

        // In place, as dnsmasq does: truncate, then write.
        fs::write(&path, TWO).unwrap();
        next_change(&mut follower).await;
        assert_eq!(follower.load().await.unwrap().v4.len(), 2);

        // Replaced by rename.
        fs::write(dir.join("new"), ONE).unwrap();
        fs::rename(dir.join("new"), &path).unwrap();
        next_change(&mut follower).await;
        assert_eq!(follower.load().await.unwrap().v4.len(), 1);

        // Deleted: reported as missing (the caller keeps its last table), then recreated.
        fs::remove_file(&path).unwrap();
        next_change(&mut follower).await;
        assert!(matches!(follower.load().await, Err(LoadError::Missing(_))));
        fs::write(&path, TWO).unwrap();
        next_change(&mut follower).await;
        let table = follower.load().await.unwrap();
        assert!(table.get_v4(Ipv4Addr::new(10, 0, 0, 2)).is_some());

        // Caught half-written: the load waits for the writer to finish the line.
        fs::write(&path, &TWO[..TWO.len() - 3]).unwrap();
        let finish = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                fs::write(&path, TWO).unwrap();
            })
        };
        assert_eq!(follower.load().await.unwrap().v4.len(), 2);
        finish.await.unwrap();

        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn other_files_in_the_directory_are_not_changes() {
        let dir = std::env::temp_dir().join(format!("lease-follow-other-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut follower =
            LeaseFollower::new(&dir.join("dnsmasq.leases"), Box::new(Dnsmasq)).unwrap();
        fs::write(dir.join("dnsmasq.leases.tmp"), ONE).unwrap();
        fs::write(dir.join("other"), ONE).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), follower.changed()).await;
        assert!(waited.is_err(), "no change of the lease file");
        fs::remove_dir_all(&dir).unwrap();
    }
}
