//! Whether the DHCP server is running and answering. On a redundant router the BACKUP has its
//! server stopped on purpose; a RELEASE sent then reaches no one, and a repair sent then would
//! fail (and, before provenance, be judged a dropped release and repaired again). So while the
//! server is down the observer settles releases as dropped with cause `no_server`, plans no
//! repair and counts none as failed; outstanding ones run when the server is back (failover).
//!
//! The agent checks (a socket bound to port 67, an answer to a DHCPINFORM) and reports each
//! [`ServerCheck`]; this module turns them into a state with hysteresis on answers (one probe
//! lost to a busy server must not look like a stopped one).
use std::time::Instant;

/// One look at the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCheck {
    /// A socket is bound to the DHCP server port.
    pub listening: bool,
    /// A DHCPINFORM probe was answered (`None`: none was sent).
    pub answered: Option<bool>,
    /// This router should serve now: its configured listen addresses are its own (on a
    /// redundant router, it holds the VIP: it is the MASTER), or none is configured.
    pub should_serve: bool,
}

/// What the observer believes about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Nothing checked yet (a daemon that is not told assumes up: the behaviour before checks).
    Unknown,
    Up,
    Down,
}

/// A change of the server's state (or of whether it should serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStatus {
    pub up: bool,
    pub should_serve: bool,
    /// Why it is down: `not listening` or `not answering`.
    pub reason: Option<&'static str>,
}

/// Probes lost in a row before a listening server counts as not answering.
const UNANSWERED_LIMIT: u32 = 2;

#[derive(Debug)]
pub struct Liveness {
    state: ServerState,
    should_serve: bool,
    unanswered: u32,
    since: Option<Instant>,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            state: ServerState::Unknown,
            should_serve: true,
            unanswered: 0,
            since: None,
        }
    }
}

impl Liveness {
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Down for sure (checked and found down); `Unknown` is not down.
    pub fn is_down(&self) -> bool {
        self.state == ServerState::Down
    }

    pub fn should_serve(&self) -> bool {
        self.should_serve
    }

    /// Since when the current state holds.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Takes a check; returns the new status when the state (or `should_serve`) changed.
    pub fn on_check(&mut self, check: ServerCheck, now: Instant) -> Option<ServerStatus> {
        match check.answered {
            Some(false) => self.unanswered = self.unanswered.saturating_add(1),
            Some(true) => self.unanswered = 0,
            None => {}
        }
        let reason = if !check.listening {
            Some("not listening")
        } else if self.unanswered >= UNANSWERED_LIMIT {
            Some("not answering")
        } else {
            None
        };
        let state = if reason.is_some() {
            ServerState::Down
        } else {
            ServerState::Up
        };
        let changed = state != self.state || check.should_serve != self.should_serve;
        if state != self.state {
            self.since = Some(now);
        }
        self.state = state;
        self.should_serve = check.should_serve;
        changed.then_some(ServerStatus {
            up: state == ServerState::Up,
            should_serve: check.should_serve,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listening: bool, answered: Option<bool>) -> ServerCheck {
        ServerCheck {
            listening,
            answered,
            should_serve: true,
        }
    }

    #[test]
    fn a_stopped_server_is_down_at_once_a_silent_one_after_two_lost_probes() {
        let now = Instant::now();
        let mut live = Liveness::default();
        assert_eq!(live.state(), ServerState::Unknown);
        assert!(!live.is_down(), "unknown is not down");
        let up = live.on_check(check(true, Some(true)), now).unwrap();
        assert!(up.up);
        assert_eq!(live.on_check(check(true, None), now), None, "no change");
        let down = live.on_check(check(false, None), now).unwrap();
        assert_eq!((down.up, down.reason), (false, Some("not listening")));
        assert!(live.on_check(check(true, Some(true)), now).unwrap().up);
        assert_eq!(
            live.on_check(check(true, Some(false)), now),
            None,
            "one lost probe"
        );
        let silent = live.on_check(check(true, Some(false)), now).unwrap();
        assert_eq!(silent.reason, Some("not answering"));
        assert!(live.on_check(check(true, Some(true)), now).unwrap().up);
    }

    #[test]
    fn a_change_of_role_is_reported() {
        let now = Instant::now();
        let mut live = Liveness::default();
        live.on_check(check(true, None), now);
        let backup = ServerCheck {
            listening: false,
            answered: None,
            should_serve: false,
        };
        let status = live.on_check(backup, now).unwrap();
        assert!(!status.up && !status.should_serve);
    }
}
