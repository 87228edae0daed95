//! Repair of dropped releases: send the RELEASE the server would have accepted, then check the
//! server's memory. Only ever for a release the agent saw being dropped, never more often than
//! the rate limit allows, and every action is reported.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    correlate::{Outcome, Verdict},
    decode::hex_colon,
    server_query,
};

/// The result of one repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairResult {
    Remediated,
    Failed,
    DryRun,
    RateLimited,
}

impl RepairResult {
    pub fn name(self) -> &'static str {
        match self {
            RepairResult::Remediated => "remediated",
            RepairResult::Failed => "remediation_failed",
            RepairResult::DryRun => "dry_run",
            RepairResult::RateLimited => "rate_limited",
        }
    }
}

/// What a repair is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub server_id: Ipv4Addr,
    pub client_id: Option<Vec<u8>>,
}

impl Repair {
    /// The repair a verdict calls for: only a dropped release of an Ethernet client whose
    /// server id is known.
    pub fn for_verdict(verdict: &Verdict) -> Option<Repair> {
        if !matches!(verdict.outcome, Outcome::Dropped(_)) {
            return None;
        }
        let mac: [u8; 6] = verdict.release.chaddr.as_slice().try_into().ok()?;
        Some(Repair {
            ip: verdict.release.ciaddr,
            mac,
            server_id: verdict.expected_server_id?,
            client_id: verdict.lease.as_ref().and_then(|l| l.client_id.clone()),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct RemediationEvent {
    pub event: &'static str,
    pub result: &'static str,
    pub ip: String,
    pub mac: String,
    pub server_id: String,
    pub detail: Option<String>,
}

impl RemediationEvent {
    pub fn new(repair: &Repair, result: RepairResult, detail: Option<String>) -> RemediationEvent {
        RemediationEvent {
            event: "remediation",
            result: result.name(),
            ip: repair.ip.to_string(),
            mac: hex_colon(&repair.mac),
            server_id: repair.server_id.to_string(),
            detail,
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!(
            "REPAIR {} {}: {} (server id {})",
            self.ip,
            self.mac,
            self.result.to_uppercase(),
            self.server_id
        );
        if let Some(detail) = &self.detail {
            line.push_str(&format!(": {detail}"));
        }
        line
    }
}

/// At most `burst` repairs at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sends the repair and waits for the server to drop the lease from its memory (blocking).
pub fn execute(
    repair: &Repair,
    server: SocketAddrV4,
    timeout: Duration,
) -> (RepairResult, Option<String>) {
    let Repair {
        ip,
        mac,
        server_id,
        client_id,
    } = repair;
    match server_query::release_and_verify(
        server,
        *ip,
        *mac,
        *server_id,
        client_id.as_deref(),
        timeout,
    ) {
        Ok(true) => (RepairResult::Remediated, None),
        Ok(false) => (
            RepairResult::Failed,
            Some("the server still holds the lease".into()),
        ),
        Err(err) => (RepairResult::Failed, Some(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut limit = RateLimit::new(60, 2);
        assert!(limit.allow(start));
        assert!(limit.allow(start));
        assert!(!limit.allow(start), "burst spent");
        assert!(!limit.allow(start + Duration::from_millis(500)));
        assert!(
            limit.allow(start + Duration::from_millis(1100)),
            "one per second refilled"
        );
        assert!(!limit.allow(start + Duration::from_millis(1100)));
    }
}
