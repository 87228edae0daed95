//! Whether the DHCP server is running and answering. On a redundant router the BACKUP has its
//! server stopped on purpose; a RELEASE sent then reaches no one, and a repair sent then would
//! fail (and, before provenance, be judged a dropped release and repaired again). So while the
//! server is down the observer settles releases as dropped with cause `no_server`, plans no
//! repair and counts none as failed; outstanding ones run when the server is back (failover).
//!
//! The agent checks (a socket bound to port 67, an answer to a DHCPINFORM) and reports each
//! [`ServerCheck`]; this module turns them into a state with hysteresis on answers: a server
//! that serves can be deaf for seconds (see [`SILENCE_LIMIT`]), and that must not look like a
//! stopped one.
use std::time::{Duration, Instant};

/// One look at the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCheck {
    /// A socket is bound to the DHCP server port.
    pub listening: bool,
    /// `Some(true)`: the server answered a probe since the last check; `Some(false)`: a probe
    /// went unanswered for the whole of its window; `None`: nothing new (none was sent, or
    /// one is still within its window).
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

/// How long a listening server may leave every probe unanswered, from the first check that
/// found one unanswered, before it counts as not answering. A dnsmasq that serves is deaf to
/// DHCP while it pings an address it is about to offer from a dynamic range: up to 3 s counted
/// in whole seconds (`PING_WAIT` in `delay_dhcp`; measured 2.9 s in
/// dhcp-lab/tests/dnsmasq_deaf.rs), at most 6 times in 30 s (60 % of `PING_CACHE_TIME` /
/// `PING_WAIT`), so at most 24 s of any 30 s. Two probes lost 5 s apart, the limit before,
/// judged it down while VMs booted (the soak's `no_server` verdicts).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Liveness {
    state: ServerState,
    should_serve: bool,
    /// Since when the probes have gone unanswered (the first check that found one so).
    silent_since: Option<Instant>,
    since: Option<Instant>,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            state: ServerState::Unknown,
            should_serve: true,
            silent_since: None,
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
            // A server that stopped listening starts afresh when it listens again.
            _ if !check.listening => self.silent_since = None,
            Some(false) => {
                self.silent_since.get_or_insert(now);
            }
            Some(true) => self.silent_since = None,
            None => {}
        }
        let silent = self
            .silent_since
            .is_some_and(|since| now.saturating_duration_since(since) >= SILENCE_LIMIT);
        let reason = if !check.listening {
            Some("not listening")
        } else if silent {
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

    fn secs(start: Instant, s: u64) -> Instant {
        start + Duration::from_secs(s)
    }

    #[test]
    fn a_stopped_server_is_down_at_once_a_silent_one_after_the_silence_limit() {
        let t0 = Instant::now();
        let mut live = Liveness::default();
        assert_eq!(live.state(), ServerState::Unknown);
        assert!(!live.is_down(), "unknown is not down");
        let up = live.on_check(check(true, Some(true)), t0).unwrap();
        assert!(up.up);
        assert_eq!(live.on_check(check(true, None), t0), None, "no change");
        let down = live.on_check(check(false, None), t0).unwrap();
        assert_eq!((down.up, down.reason), (false, Some("not listening")));
        assert!(live.on_check(check(true, Some(true)), t0).unwrap().up);
        // Probes lost every 5 s: up until 30 s have passed since the first was found lost.
        for s in (5..35).step_by(5) {
            assert_eq!(
                live.on_check(check(true, Some(false)), secs(t0, s)),
                None,
                "{s} s"
            );
        }
        let silent = live
            .on_check(check(true, Some(false)), secs(t0, 35))
            .unwrap();
        assert_eq!(silent.reason, Some("not answering"));
        assert_eq!(live.since(), Some(secs(t0, 35)));
        assert!(
            live.on_check(check(true, Some(true)), secs(t0, 36))
                .unwrap()
                .up
        );
    }

    #[test]
    fn a_server_deaf_while_it_pings_is_not_down() {
        // dnsmasq's worst: 6 pings of 4 s back to back, then the queued probes answered.
        let t0 = Instant::now();
        let mut live = Liveness::default();
        live.on_check(check(true, Some(true)), t0);
        for s in 1..=24 {
            let answered = (s % 5 == 0).then_some(false);
            assert_eq!(live.on_check(check(true, answered), secs(t0, s)), None);
        }
        assert_eq!(live.on_check(check(true, Some(true)), secs(t0, 25)), None);
        // The silence counts afresh after an answer.
        for s in (30..60).step_by(5) {
            assert_eq!(
                live.on_check(check(true, Some(false)), secs(t0, s)),
                None,
                "{s} s"
            );
        }
        assert!(!live.is_down());
    }

    #[test]
    fn a_restarted_server_is_not_blamed_for_the_silence_before_it_stopped() {
        let t0 = Instant::now();
        let mut live = Liveness::default();
        live.on_check(check(true, Some(false)), t0);
        live.on_check(check(false, Some(false)), secs(t0, 20));
        let back = live.on_check(check(true, None), secs(t0, 31)).unwrap();
        assert!(back.up, "listening again, no probe lost since");
        assert_eq!(live.on_check(check(true, Some(false)), secs(t0, 36)), None);
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
