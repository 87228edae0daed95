//! Kea's control channel, as text: the `lease_cmds` hook's commands the agent sends
//! (`lease4-get`, `lease4-del`, `lease6-get`, `lease6-del`) and the answers Kea gives. No I/O:
//! the agent writes a command to Kea's unix socket and hands the answer to [`parse_answer`].
//!
//! What Kea 2.2.0 (Debian 12) answers, seen in the lab (`dhcp-lab/tests/kea_lab.rs`; the
//! fixtures below are those answers, verbatim):
//!
//! ```text
//! lease4-get, found:  { "arguments": { "cltt": 1796237707, ..., "hw-address": "52:54:00:20:00:01",
//!                       "ip-address": "172.29.101.100", "state": 0, "subnet-id": 1,
//!                       "valid-lft": 3600 }, "result": 0, "text": "IPv4 lease found." }
//! lease4-get, none:   { "result": 3, "text": "Lease not found." }
//! lease4-del:         { "result": 0, "text": "IPv4 lease deleted." }
//! lease4-del, none:   { "result": 3, "text": "IPv4 lease not found." }
//! no lease_cmds hook: { "result": 2, "text": "'lease4-get' command not supported." }
//! bad argument:       { "result": 1, "text": "Failed to convert string to address ..." }
//! ```
//!
//! Kea writes one JSON object and closes the connection; through the Control Agent (HTTP) the
//! same object comes wrapped in a list, which is read the same.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};
use thiserror::Error;

use crate::leases::{Expiry, Lease, parse_hex_bytes};

/// Kea's result codes (`CONTROL_RESULT_*` in src/lib/cc/command_interpreter.h).
pub const RESULT_SUCCESS: i64 = 0;
pub const RESULT_ERROR: i64 = 1;
pub const RESULT_COMMAND_UNSUPPORTED: i64 = 2;
pub const RESULT_EMPTY: i64 = 3;

/// `valid-lft` of a lease that never expires.
const INFINITE_LIFETIME: u64 = 0xffff_ffff;
/// Lease state 2, expired-reclaimed: the lease is gone (as in the memfile: see
/// [`crate::leases::kea`]), though Kea may keep it for `hold-reclaimed-time`.
const STATE_EXPIRED_RECLAIMED: i64 = 2;

fn command(name: &str, arguments: Value) -> String {
    json!({ "command": name, "arguments": arguments }).to_string()
}

/// `lease4-get` by address.
pub fn lease4_get(ip: Ipv4Addr) -> String {
    command("lease4-get", json!({ "ip-address": ip.to_string() }))
}

/// `lease4-del` by address: Kea deletes the lease from memory and appends a row with
/// `valid_lifetime` 0 to its memfile.
pub fn lease4_del(ip: Ipv4Addr) -> String {
    command("lease4-del", json!({ "ip-address": ip.to_string() }))
}

/// `lease6-get` of an address lease (IA_NA) by address.
pub fn lease6_get(ip: Ipv6Addr) -> String {
    command(
        "lease6-get",
        json!({ "ip-address": ip.to_string(), "type": "IA_NA" }),
    )
}

/// `lease6-get` of an address lease by the client's DUID and IAID in a subnet (Kea's
/// `identifier-type` `duid`).
pub fn lease6_get_by_duid(duid: &[u8], iaid: u32, subnet_id: u32) -> String {
    command(
        "lease6-get",
        json!({
            "identifier-type": "duid",
            "identifier": hex_colons(duid),
            "iaid": iaid,
            "subnet-id": subnet_id,
            "type": "IA_NA",
        }),
    )
}

/// `lease6-del` of an address lease by address.
pub fn lease6_del(ip: Ipv6Addr) -> String {
    command(
        "lease6-del",
        json!({ "ip-address": ip.to_string(), "type": "IA_NA" }),
    )
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What Kea answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeaAnswer {
    /// `lease4-get`/`lease6-get` found a lease (result 0 with the lease as arguments).
    Lease(Lease),
    /// Result 3: no such lease (to a get or a del). A lease in state expired-reclaimed is
    /// reported so too: it is no lease.
    NotFound,
    /// Result 0 without a lease: `lease4-del`/`lease6-del` deleted it.
    Deleted,
    /// Any other result: 1 (error: a bad argument, the database failed), 2 (the command is not
    /// supported: the `lease_cmds` hook is not loaded).
    Failed { result: i64, text: String },
}

impl KeaAnswer {
    /// Kea does not know the command: the `lease_cmds` hook is not loaded.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, KeaAnswer::Failed { result, .. } if *result == RESULT_COMMAND_UNSUPPORTED)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeaAnswerError {
    #[error("Kea's answer is not JSON: {0}")]
    NotJson(String),
    #[error("Kea's answer is not a JSON object")]
    NotAnObject,
    #[error("Kea's answer has no integer \"result\"")]
    NoResult,
    #[error("Kea's lease in the answer is not understood: {0}")]
    BadLease(String),
}

/// Reads Kea's answer to one command.
pub fn parse_answer(text: &str) -> Result<KeaAnswer, KeaAnswerError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| KeaAnswerError::NotJson(e.to_string()))?;
    // The Control Agent answers with a list: one answer per server the command went to.
    let answer = match &value {
        Value::Array(answers) => answers.first().ok_or(KeaAnswerError::NotAnObject)?,
        other => other,
    };
    let Value::Object(answer) = answer else {
        return Err(KeaAnswerError::NotAnObject);
    };
    let result = answer
        .get("result")
        .and_then(Value::as_i64)
        .ok_or(KeaAnswerError::NoResult)?;
    let text = answer
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match (result, answer.get("arguments")) {
        (RESULT_EMPTY, _) => Ok(KeaAnswer::NotFound),
        (RESULT_SUCCESS, Some(Value::Object(lease))) if lease.contains_key("ip-address") => {
            match parse_lease(lease)? {
                Some(lease) => Ok(KeaAnswer::Lease(lease)),
                None => Ok(KeaAnswer::NotFound),
            }
        }
        (RESULT_SUCCESS, _) => Ok(KeaAnswer::Deleted),
        (result, _) => Ok(KeaAnswer::Failed { result, text }),
    }
}

/// A lease as `Lease4::toElement`/`Lease6::toElement` write it; `None` for an
/// expired-reclaimed one.
fn parse_lease(map: &serde_json::Map<String, Value>) -> Result<Option<Lease>, KeaAnswerError> {
    let bad = |what: &str| KeaAnswerError::BadLease(what.to_owned());
    let str_field = |key: &str| map.get(key).and_then(Value::as_str);
    let ip: IpAddr = str_field("ip-address")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("ip-address"))?;
    if map.get("state").and_then(Value::as_i64) == Some(STATE_EXPIRED_RECLAIMED) {
        return Ok(None);
    }
    let hex = |key: &str| -> Result<Option<Vec<u8>>, KeaAnswerError> {
        match str_field(key) {
            None | Some("") => Ok(None),
            Some(text) => parse_hex_bytes(text).map(Some).ok_or_else(|| bad(key)),
        }
    };
    let hwaddr = hex("hw-address")?.unwrap_or_default();
    let (client_id, iaid) = match ip {
        IpAddr::V4(_) => (hex("client-id")?, None),
        IpAddr::V6(_) => {
            let iaid = map
                .get("iaid")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("iaid"))?;
            (Some(hex("duid")?.ok_or_else(|| bad("duid"))?), Some(iaid))
        }
    };
    let number = |key: &str| map.get(key).and_then(Value::as_u64).ok_or_else(|| bad(key));
    let lifetime = number("valid-lft")?;
    // Kea's answer has no expiry: Kea computes it as cltt + valid-lft (Lease::getExpirationTime).
    let expiry = if lifetime == INFINITE_LIFETIME {
        Expiry::Never
    } else {
        Expiry::At(number("cltt")?.saturating_add(lifetime))
    };
    let hostname = str_field("hostname")
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    Ok(Some(Lease {
        ip,
        htype: if hwaddr.is_empty() { 0 } else { 1 },
        hwaddr,
        client_id,
        hostname,
        expiry,
        iaid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kea 2.2.0's answers in the lab, verbatim.
    const FOUND4: &str = r#"{ "arguments": { "cltt": 1796237707, "fqdn-fwd": false, "fqdn-rev": false, "hostname": "vm", "hw-address": "52:54:00:20:00:01", "ip-address": "172.29.101.100", "state": 0, "subnet-id": 1, "valid-lft": 3600 }, "result": 0, "text": "IPv4 lease found." }"#;
    const NOT_FOUND4: &str = r#"{ "result": 3, "text": "Lease not found." }"#;
    const DELETED4: &str = r#"{ "result": 0, "text": "IPv4 lease deleted." }"#;
    const DEL_NOT_FOUND4: &str = r#"{ "result": 3, "text": "IPv4 lease not found." }"#;
    const UNSUPPORTED: &str = r#"{ "result": 2, "text": "'lease4-get' command not supported." }"#;
    const BAD_ARGUMENT: &str = r#"{ "result": 1, "text": "Failed to convert string to address 'nonsense': Invalid argument" }"#;

    #[test]
    fn a_found_v4_lease_is_read_with_its_expiry() {
        let KeaAnswer::Lease(lease) = parse_answer(FOUND4).unwrap() else {
            panic!()
        };
        assert_eq!(lease.ip, IpAddr::V4(Ipv4Addr::new(172, 29, 101, 100)));
        assert_eq!(lease.mac(), Some([0x52, 0x54, 0, 0x20, 0, 1]));
        assert_eq!(lease.client_id, None);
        assert_eq!(lease.hostname.as_deref(), Some("vm"));
        assert_eq!(lease.expiry, Expiry::At(1796237707 + 3600));
        assert_eq!(lease.iaid, None);
    }

    #[test]
    fn every_other_answer_kea_gave() {
        assert_eq!(parse_answer(NOT_FOUND4), Ok(KeaAnswer::NotFound));
        assert_eq!(parse_answer(DEL_NOT_FOUND4), Ok(KeaAnswer::NotFound));
        assert_eq!(parse_answer(DELETED4), Ok(KeaAnswer::Deleted));
        let unsupported = parse_answer(UNSUPPORTED).unwrap();
        assert!(unsupported.is_unsupported());
        assert_eq!(
            unsupported,
            KeaAnswer::Failed {
                result: 2,
                text: "'lease4-get' command not supported.".into()
            }
        );
        let failed = parse_answer(BAD_ARGUMENT).unwrap();
        assert!(matches!(failed, KeaAnswer::Failed { result: 1, .. }));
        assert!(!failed.is_unsupported());
    }

    #[test]
    fn a_client_id_an_infinite_lease_and_a_reclaimed_one() {
        let with_id = r#"{"arguments":{"cltt":10,"hw-address":"52:54:00:20:00:01","client-id":"01:52:54:00:20:00:01","ip-address":"10.0.0.5","state":0,"subnet-id":1,"valid-lft":4294967295,"hostname":""},"result":0,"text":"IPv4 lease found."}"#;
        let KeaAnswer::Lease(lease) = parse_answer(with_id).unwrap() else {
            panic!()
        };
        assert_eq!(lease.client_id, Some(vec![1, 0x52, 0x54, 0, 0x20, 0, 1]));
        assert_eq!(lease.expiry, Expiry::Never);
        assert_eq!(lease.hostname, None);
        let reclaimed = with_id.replace(r#""state":0"#, r#""state":2"#);
        assert_eq!(parse_answer(&reclaimed), Ok(KeaAnswer::NotFound));
    }

    #[test]
    fn a_v6_lease_carries_its_duid_and_iaid() {
        let found6 = r#"{ "arguments": { "cltt": 100, "duid": "00:03:00:01:52:54:00:20:00:01", "fqdn-fwd": false, "fqdn-rev": false, "hostname": "", "iaid": 7, "ip-address": "2001:db8::10", "preferred-lft": 3000, "state": 0, "subnet-id": 1, "type": "IA_NA", "valid-lft": 4000 }, "result": 0, "text": "IPv6 lease found." }"#;
        let KeaAnswer::Lease(lease) = parse_answer(found6).unwrap() else {
            panic!()
        };
        assert_eq!(lease.ip, "2001:db8::10".parse::<IpAddr>().unwrap());
        assert_eq!(lease.iaid, Some(7));
        assert_eq!(
            lease.client_id,
            Some(vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x20, 0, 1])
        );
        assert_eq!(lease.hwaddr, Vec::<u8>::new());
        assert_eq!(lease.expiry, Expiry::At(4100));
        let no_duid = found6.replace(r#""duid": "00:03:00:01:52:54:00:20:00:01", "#, "");
        assert!(matches!(
            parse_answer(&no_duid),
            Err(KeaAnswerError::BadLease(_))
        ));
    }

    #[test]
    fn the_control_agents_list_and_broken_answers() {
        assert_eq!(
            parse_answer(&format!("[{NOT_FOUND4}]")),
            Ok(KeaAnswer::NotFound)
        );
        assert!(matches!(parse_answer(""), Err(KeaAnswerError::NotJson(_))));
        assert!(matches!(
            parse_answer(r#"{"result": 0"#),
            Err(KeaAnswerError::NotJson(_))
        ));
        assert_eq!(parse_answer("[]"), Err(KeaAnswerError::NotAnObject));
        assert_eq!(parse_answer("42"), Err(KeaAnswerError::NotAnObject));
        assert_eq!(
            parse_answer(r#"{"text": "x"}"#),
            Err(KeaAnswerError::NoResult)
        );
        let bad_ip = FOUND4.replace("172.29.101.100", "nonsense");
        assert!(matches!(
            parse_answer(&bad_ip),
            Err(KeaAnswerError::BadLease(_))
        ));
        let bad_mac = FOUND4.replace("52:54:00:20:00:01", "zz");
        assert!(matches!(
            parse_answer(&bad_mac),
            Err(KeaAnswerError::BadLease(_))
        ));
    }

    #[test]
    fn the_commands_are_what_lease_cmds_reads() {
        let parse = |text: String| serde_json::from_str::<Value>(&text).unwrap();
        let ip = Ipv4Addr::new(172, 29, 101, 100);
        assert_eq!(
            parse(lease4_get(ip)),
            json!({"command": "lease4-get", "arguments": {"ip-address": "172.29.101.100"}})
        );
        assert_eq!(parse(lease4_del(ip))["command"], "lease4-del");
        let ip6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        assert_eq!(
            parse(lease6_get(ip6)),
            json!({"command": "lease6-get", "arguments": {"ip-address": "2001:db8::10", "type": "IA_NA"}})
        );
        assert_eq!(
            parse(lease6_del(ip6))["arguments"],
            json!({"ip-address": "2001:db8::10", "type": "IA_NA"})
        );
        assert_eq!(
            parse(lease6_get_by_duid(&[0, 3, 0, 1, 0xab], 7, 1))["arguments"],
            json!({"identifier-type": "duid", "identifier": "00:03:00:01:ab", "iaid": 7, "subnet-id": 1, "type": "IA_NA"})
        );
    }

    /// Whatever the text, the parser answers (no panic), and a lease it reads has a
    /// hardware type only with a hardware address.
    #[test]
    fn arbitrary_answers_never_panic() {
        use proptest::prelude::*;
        proptest!(|(text in ".{0,200}", result in -5i64..10, ip in any::<u32>(), lft in any::<u64>(), cltt in any::<u64>())| {
            let _ = parse_answer(&text);
            let lease = format!(r#"{{"arguments":{{"ip-address":"{}","hw-address":"","valid-lft":{lft},"cltt":{cltt}}},"result":{result}}}"#, Ipv4Addr::from(ip));
            if let Ok(KeaAnswer::Lease(lease)) = parse_answer(&lease) {
                prop_assert_eq!(lease.htype, 0);
            }
        });
    }
}
