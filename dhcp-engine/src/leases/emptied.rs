//! A lease file that suddenly lists no lease at all.
//!
//! dnsmasq rewrites its file in place: seek to the start, `ftruncate` to zero, write every lease,
//! `fsync` (seen with strace on dnsmasq 2.90; it never renames). A file without leases is then
//! one of three things:
//!
//! * the truth: the last lease was released or expired (after the last RELEASE dnsmasq only
//!   truncates, it writes nothing);
//! * a rewrite caught between the truncate and the write (microseconds; the follower's debounce
//!   makes it rare, a stalled server makes it possible);
//! * the file truncated behind the server's back (by hand, a `copytruncate` log rotation, a full
//!   disk): the server still holds every lease in memory and writes them all again at its next
//!   change.
//!
//! Believing either of the last two would settle every pending RELEASE as honored and forget
//! every outstanding dropped release, as if every client had released its lease. So an empty
//! file that replaces a table with leases is believed at once only when every lease it drops is
//! accounted for (it expired, or a RELEASE for it is pending); otherwise the last table is kept
//! until the file lists leases again, the missing leases become accounted for, or the file has
//! stayed empty for [`EMPTY_FILE_HOLD`] (the server really lost them: restarted after its file
//! was deleted, say).
use std::time::{Duration, Instant};

use super::{Lease, LeaseTable};

/// How long an unexplained empty file is held back before it is believed. Long enough for a
/// server to rewrite a truncated file at its next lease change on a router with any traffic; a
/// lease that really went unnoticed (its RELEASE never seen) lingers in the table that long.
pub const EMPTY_FILE_HOLD: Duration = Duration::from_secs(60);

/// What to do with a table just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take it.
    Believe,
    /// Keep the last table: the file is empty and `unexplained` of its leases were neither
    /// released nor expired.
    Hold { unexplained: usize },
    /// Take it: the file has been empty, unexplained, for the whole hold.
    HeldTooLong { unexplained: usize },
}

/// Tracks an empty lease file that is not believed yet.
#[derive(Debug)]
pub struct EmptyFileGuard {
    hold: Duration,
    /// Since when the file is empty and held back.
    since: Option<Instant>,
}

impl EmptyFileGuard {
    pub fn new(hold: Duration) -> EmptyFileGuard {
        EmptyFileGuard { hold, since: None }
    }

    /// Whether an empty file is being held back (then [`EmptyFileGuard::recheck`] it as time
    /// passes and releases arrive).
    pub fn holding(&self) -> bool {
        self.since.is_some()
    }

    /// Since when the file has been held back, if it is.
    pub fn held_since(&self) -> Option<Instant> {
        self.since
    }

    /// Judges `new`, just read, against `current`, the table in use. `accounted` says whether a
    /// lease may leave the table (expired, or released by a RELEASE being settled).
    pub fn check(
        &mut self,
        current: &LeaseTable,
        new: &LeaseTable,
        now: Instant,
        accounted: impl Fn(&Lease) -> bool,
    ) -> Verdict {
        if !(new.v4.is_empty() && new.v6.is_empty()) {
            self.since = None;
            return Verdict::Believe;
        }
        let unexplained = current.v4.values().filter(|l| !accounted(l)).count();
        if unexplained == 0 {
            self.since = None;
            return Verdict::Believe;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= self.hold {
            self.since = None;
            return Verdict::HeldTooLong { unexplained };
        }
        Verdict::Hold { unexplained }
    }

    /// While an empty file is held back: whether it may be believed now (the leases became
    /// accounted for, or the hold is over). `None` when nothing is held back.
    pub fn recheck(
        &mut self,
        current: &LeaseTable,
        now: Instant,
        accounted: impl Fn(&Lease) -> bool,
    ) -> Option<Verdict> {
        self.holding()
            .then(|| self.check(current, &LeaseTable::default(), now, accounted))
    }

    /// The file could not be read at all (missing, unreadable): whatever was held back is moot.
    pub fn forget(&mut self) {
        self.since = None;
    }
}

/// Whether `lease` has expired at Unix time `now_secs` (an infinite lease never does).
pub fn expired(lease: &Lease, now_secs: u64) -> bool {
    matches!(lease.expiry, super::Expiry::At(at) if at <= now_secs)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::leases::Expiry;

    fn lease(last: u8, expiry: Expiry) -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, last).into(),
            hwaddr: vec![2, 0, 0, 0, 0, last],
            htype: 1,
            client_id: None,
            hostname: None,
            expiry,
            iaid: None,
        }
    }

    fn table(leases: &[Lease]) -> LeaseTable {
        leases.iter().cloned().collect()
    }

    const HOLD: Duration = Duration::from_secs(60);

    #[test]
    fn a_file_with_leases_is_believed() {
        let mut guard = EmptyFileGuard::new(HOLD);
        let one = table(&[lease(1, Expiry::Never)]);
        let two = table(&[lease(1, Expiry::Never), lease(2, Expiry::Never)]);
        assert_eq!(
            guard.check(&two, &one, Instant::now(), |_| false),
            Verdict::Believe
        );
        assert!(!guard.holding());
    }

    #[test]
    fn an_empty_file_is_believed_when_every_lease_it_drops_is_accounted_for() {
        let mut guard = EmptyFileGuard::new(HOLD);
        let current = table(&[lease(1, Expiry::At(100)), lease(2, Expiry::Never)]);
        let empty = LeaseTable::default();
        // Lease 1 expired, lease 2 has a RELEASE pending.
        let accounted = |l: &Lease| expired(l, 200) || l.hwaddr[5] == 2;
        assert_eq!(
            guard.check(&current, &empty, Instant::now(), accounted),
            Verdict::Believe
        );
        // Nothing to lose: an empty file after an empty table.
        assert_eq!(
            guard.check(&empty, &empty, Instant::now(), |_| false),
            Verdict::Believe
        );
    }

    #[test]
    fn an_unexplained_empty_file_is_held_until_rewritten() {
        let mut guard = EmptyFileGuard::new(HOLD);
        let current = table(&[lease(1, Expiry::At(100)), lease(2, Expiry::Never)]);
        let start = Instant::now();
        let accounted = |l: &Lease| expired(l, 50);
        assert_eq!(
            guard.check(&current, &LeaseTable::default(), start, accounted),
            Verdict::Hold { unexplained: 2 }
        );
        assert!(guard.holding());
        // Still empty a little later: still held, from the first sighting.
        let later = start + Duration::from_secs(5);
        assert_eq!(
            guard.recheck(&current, later, accounted),
            Some(Verdict::Hold { unexplained: 2 })
        );
        assert_eq!(guard.held_since(), Some(start));
        // The server writes every lease again.
        assert_eq!(
            guard.check(&current, &current, later, accounted),
            Verdict::Believe
        );
        assert!(!guard.holding());
        assert_eq!(guard.recheck(&current, later, accounted), None);
    }

    #[test]
    fn a_held_empty_file_is_believed_once_its_leases_are_accounted_for_or_the_hold_ends() {
        let current = table(&[lease(1, Expiry::Never)]);
        let start = Instant::now();

        // A RELEASE for the last lease arrives while the file is held back.
        let mut guard = EmptyFileGuard::new(HOLD);
        guard.check(&current, &LeaseTable::default(), start, |_| false);
        assert_eq!(
            guard.recheck(&current, start + Duration::from_secs(1), |_| true),
            Some(Verdict::Believe)
        );
        assert!(!guard.holding());

        // Nothing explains it, and the file stays empty for the whole hold.
        let mut guard = EmptyFileGuard::new(HOLD);
        guard.check(&current, &LeaseTable::default(), start, |_| false);
        assert_eq!(
            guard.recheck(&current, start + HOLD - Duration::from_millis(1), |_| false),
            Some(Verdict::Hold { unexplained: 1 })
        );
        assert_eq!(
            guard.recheck(&current, start + HOLD, |_| false),
            Some(Verdict::HeldTooLong { unexplained: 1 })
        );
        assert!(!guard.holding());
    }
}
