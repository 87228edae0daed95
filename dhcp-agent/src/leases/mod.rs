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
    leases::{FileSetError, LeaseFileError, LeaseFormat, LeaseTable},
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

/// Reads and parses a lease file once (a missing file is [`LoadError::Missing`]), with the
/// files the format keeps leases in besides it ([`LeaseFormat::earlier_files`]: Kea's lease
/// file cleanup moves leases to `.1` and `.2`, and a table read from the lease file alone
/// would lose them) read first, those that exist.
pub fn read_table(path: &Path, format: &dyn LeaseFormat) -> Result<LeaseTable, LoadError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for earlier in format.earlier_files(path) {
        match read_text(&earlier) {
            Ok(text) => {
                texts.push(text);
                paths.push(earlier);
            }
            // A cleanup's file comes and goes: absent is normal.
            Err(LoadError::Missing(_)) => {}
            Err(err) => return Err(err),
        }
    }
    texts.push(read_text(path)?);
    paths.push(path.to_owned());
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    format
        .parse_set(&texts)
        .map_err(|FileSetError { index, error }| LoadError::Parse {
            path: paths[index].clone(),
            source: error,
        })
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(LoadError::Missing(path.to_owned()))
        }
        Err(source) => Err(LoadError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

pub struct LeaseFollower {
    path: PathBuf,
    /// The lease file's name and those of its earlier files (all in its directory).
    file_names: Vec<OsString>,
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
        let file_names = format
            .earlier_files(path)
            .iter()
            .chain([&path.to_owned()])
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect();
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
            file_names,
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
        let names = &self.file_names;
        settled_change(&mut self.events, &mut self.settle_at, DEBOUNCE, |event| {
            event.name.as_ref().is_some_and(|name| names.contains(name))
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

    /// Kea's lease file cleanup, step by step as `kea-lfc` does it (`LFCController::
    /// fileRotate`): the leases read the same before, during and after, and every step is a
    /// change the follower sees.
    #[tokio::test]
    async fn keas_lease_file_cleanup_loses_no_lease() {
        use dhcp_engine::leases::kea::KeaV4;
        const HEADER: &str = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n";
        let row =
            |last: u8| format!("10.0.0.{last},52:54:00:10:00:0{last},,600,1796246867,1,0,0,,0,\n");
        let dir = std::env::temp_dir().join(format!("lease-follow-kea-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let base = dir.join("kea-leases4.csv");
        let at = |suffix: &str| dir.join(format!("kea-leases4.csv{suffix}"));
        fs::write(&base, format!("{HEADER}{}{}", row(1), row(2))).unwrap();
        let mut follower = LeaseFollower::new(&base, Box::new(KeaV4)).unwrap();
        let addresses = |table: LeaseTable| {
            let mut ips: Vec<Ipv4Addr> = table.v4.keys().copied().collect();
            ips.sort();
            ips
        };
        let both = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        assert_eq!(addresses(follower.load().await.unwrap()), both);

        // Kea starts a cleanup: the file becomes `.1`, a new one holds the changes since.
        fs::rename(&base, at(".1")).unwrap();
        fs::write(&base, HEADER).unwrap();
        next_change(&mut follower).await;
        assert_eq!(addresses(follower.load().await.unwrap()), both);
        // The cleanup writes `.completed`, renames it `.2` and removes `.1`; then Kea appends.
        fs::write(at(".completed"), format!("{HEADER}{}{}", row(1), row(2))).unwrap();
        fs::rename(at(".completed"), at(".2")).unwrap();
        fs::remove_file(at(".1")).unwrap();
        next_change(&mut follower).await;
        assert_eq!(addresses(follower.load().await.unwrap()), both);
        fs::write(
            &base,
            format!(
                "{HEADER}{}10.0.0.1,52:54:00:10:00:01,,0,0,1,0,0,,0,\n",
                row(3)
            ),
        )
        .unwrap();
        next_change(&mut follower).await;
        assert_eq!(
            addresses(follower.load().await.unwrap()),
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)],
            "the release in the new file removes what `.2` holds"
        );
        // A bad earlier file is named in the error.
        fs::write(at(".2"), format!("{HEADER}not,a,row\n")).unwrap();
        match follower.load_once() {
            Err(LoadError::Parse { path, .. }) => assert_eq!(path, at(".2")),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
