//! Kea's memfile lease file for DHCPv4 (`kea-leases4.csv`): a CSV with a header row, to which
//! Kea appends a row on every change. The last row for an address is its state; a row with
//! `valid_lifetime` 0 or state 2 (expired-reclaimed) means the lease is gone.
//!
//! ```text
//! address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id
//! 10.0.0.10,52:54:00:10:00:01,01:52:54:00:10:00:01,3600,1732470000,1,0,0,vm1,0,,0
//! ```
//!
//! Columns are found by name, so files of older Kea versions (fewer columns) read the same.
use std::net::IpAddr;

use super::{
    Expiry, Lease, LeaseFileError, LeaseFormat, LeaseTable, parse_hex_bytes, require_complete,
};

pub struct KeaV4;

const INFINITE_LIFETIME: u64 = 0xffff_ffff;
const STATE_EXPIRED_RECLAIMED: &str = "2";

/// Kea escapes, in text fields, each byte below 0x20 or above 0x7e, the comma and `&` as `&#x`
/// and two hex digits (`CSVRow::escapeCharacters`, src/lib/util/csv_file.cc); a tag without two
/// hex digits stays as it is, as Kea's own reader leaves it.
fn unescape(field: &str) -> String {
    if !field.contains("&#x") {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = bytes[at..]
            .starts_with(b"&#x")
            .then(|| bytes.get(at + 3..at + 5))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                at += 5;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl LeaseFormat for KeaV4 {
    fn name(&self) -> &'static str {
        "kea-memfile-v4"
    }

    fn parse(&self, text: &str) -> Result<LeaseTable, LeaseFileError> {
        require_complete(text)?;
        let mut lines = text.lines().enumerate();
        let mut table = LeaseTable::default();
        let Some((_, header)) = lines.next() else {
            return Ok(table);
        };
        let columns: Vec<&str> = header.split(',').collect();
        let column = |name: &str| {
            columns.iter().position(|c| *c == name).ok_or_else(|| {
                LeaseFileError::bad(1, format!("header has no {name} column"), header)
            })
        };
        let (address, hwaddr, client_id, lifetime, expire, hostname) = (
            column("address")?,
            column("hwaddr")?,
            column("client_id")?,
            column("valid_lifetime")?,
            column("expire")?,
            column("hostname")?,
        );
        let state = columns.iter().position(|c| *c == "state");
        for (index, line) in lines {
            let number = index + 1;
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| LeaseFileError::bad(number, reason, line);
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() < columns.len() {
                return Err(bad("fewer fields than the header"));
            }
            let ip: IpAddr = fields[address].parse().map_err(|_| bad("bad address"))?;
            let IpAddr::V4(ip4) = ip else {
                return Err(bad("not an IPv4 address"));
            };
            let lifetime: u64 = fields[lifetime]
                .parse()
                .map_err(|_| bad("bad valid_lifetime"))?;
            let gone = lifetime == 0 || state.is_some_and(|s| fields[s] == STATE_EXPIRED_RECLAIMED);
            if gone {
                table.v4.remove(&ip4);
                continue;
            }
            let expiry = if lifetime == INFINITE_LIFETIME {
                Expiry::Never
            } else {
                Expiry::At(fields[expire].parse().map_err(|_| bad("bad expire"))?)
            };
            let hw = parse_hex_bytes(fields[hwaddr]).ok_or_else(|| bad("bad hwaddr"))?;
            let client = match fields[client_id] {
                "" => None,
                hex => Some(parse_hex_bytes(hex).ok_or_else(|| bad("bad client_id"))?),
            };
            let host = (!fields[hostname].is_empty()).then(|| unescape(fields[hostname]));
            table.insert(Lease {
                ip,
                htype: 1,
                hwaddr: hw,
                client_id: client,
                hostname: host,
                expiry,
                iaid: None,
            });
        }
        Ok(table)
    }
}

/// Kea's memfile lease file for DHCPv6 (`kea-leases6.csv`), read as [`KeaV4`] is: the last row
/// for an address is its state, `valid_lifetime` 0 or state 2 removes it.
///
/// ```text
/// address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source
/// fd00::10,00:03:00:01:52:54:00:10:00:01,3600,1732470000,1,3000,0,1048577,128,0,0,vm1,52:54:00:10:00:01,0,,1,2
/// ```
///
/// Columns by name (src/lib/dhcpsrv/csv_lease_file6.cc: `hwaddr` came with schema 2.0, `state`
/// 3.0, `user_context` 3.1, `hwtype`/`hwaddr_source` 4.0, `pool_id` 5.0). Delegated prefixes
/// (lease type 2, IA_PD) are not addresses a client releases with an IA_NA or IA_TA, nor what
/// `dhcp_release6` names: they are skipped, and counted in [`LeaseTable`] as nothing.
pub struct KeaV6;

/// `lease_type` of a delegated prefix (Lease::TYPE_PD).
const LEASE_TYPE_PD: &str = "2";

impl LeaseFormat for KeaV6 {
    fn name(&self) -> &'static str {
        "kea-memfile-v6"
    }

    fn parse(&self, text: &str) -> Result<LeaseTable, LeaseFileError> {
        require_complete(text)?;
        let mut lines = text.lines().enumerate();
        let mut table = LeaseTable::default();
        let Some((_, header)) = lines.next() else {
            return Ok(table);
        };
        let columns: Vec<&str> = header.split(',').collect();
        let column = |name: &str| {
            columns.iter().position(|c| *c == name).ok_or_else(|| {
                LeaseFileError::bad(1, format!("header has no {name} column"), header)
            })
        };
        let (address, duid, lifetime, expire, lease_type, iaid, hostname) = (
            column("address")?,
            column("duid")?,
            column("valid_lifetime")?,
            column("expire")?,
            column("lease_type")?,
            column("iaid")?,
            column("hostname")?,
        );
        let optional = |name: &str| columns.iter().position(|c| *c == name);
        let (state, hwaddr) = (optional("state"), optional("hwaddr"));
        // The latest row per address, in the order addresses first appear (an address is
        // either an IA_NA's or an IA_TA's: Kea allocates them from different pools).
        let mut rows: Vec<Option<Lease>> = Vec::new();
        let mut index: std::collections::HashMap<IpAddr, usize> = std::collections::HashMap::new();
        for (line_index, line) in lines {
            let number = line_index + 1;
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| LeaseFileError::bad(number, reason, line);
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() < columns.len() {
                return Err(bad("fewer fields than the header"));
            }
            let ip: IpAddr = fields[address].parse().map_err(|_| bad("bad address"))?;
            if !ip.is_ipv6() {
                return Err(bad("not an IPv6 address"));
            }
            let kind = fields[lease_type];
            if kind == LEASE_TYPE_PD {
                continue;
            }
            if !matches!(kind, "0" | "1") {
                return Err(bad("bad lease_type"));
            }
            let lifetime: u64 = fields[lifetime]
                .parse()
                .map_err(|_| bad("bad valid_lifetime"))?;
            let gone = lifetime == 0 || state.is_some_and(|s| fields[s] == STATE_EXPIRED_RECLAIMED);
            let slot = *index.entry(ip).or_insert_with(|| {
                rows.push(None);
                rows.len() - 1
            });
            if gone {
                rows[slot] = None;
                continue;
            }
            let expiry = if lifetime == INFINITE_LIFETIME {
                Expiry::Never
            } else {
                Expiry::At(fields[expire].parse().map_err(|_| bad("bad expire"))?)
            };
            let client = parse_hex_bytes(fields[duid]).ok_or_else(|| bad("bad duid"))?;
            let iaid = fields[iaid].parse::<u32>().map_err(|_| bad("bad iaid"))?;
            let hw = match hwaddr.map(|h| fields[h]) {
                None | Some("") => Vec::new(),
                Some(hex) => parse_hex_bytes(hex).ok_or_else(|| bad("bad hwaddr"))?,
            };
            let host = (!fields[hostname].is_empty()).then(|| unescape(fields[hostname]));
            rows[slot] = Some(Lease {
                ip,
                htype: if hw.is_empty() { 0 } else { 1 },
                hwaddr: hw,
                client_id: Some(client),
                hostname: host,
                expiry,
                iaid: Some(iaid),
            });
        }
        table.v6 = rows.into_iter().flatten().collect();
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const HEADER: &str = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n";

    #[test]
    fn the_last_row_for_an_address_wins_and_deletions_remove() {
        let text = format!(
            "{HEADER}\
             10.0.0.10,52:54:00:10:00:01,01:52:54:00:10:00:01,3600,1732470000,1,0,0,vm1,0,,0\n\
             10.0.0.11,52:54:00:10:00:02,,3600,1732470000,1,0,0,a&#x2cb,0,,0\n\
             10.0.0.10,52:54:00:10:00:01,01:52:54:00:10:00:01,3600,1732473600,1,0,0,vm1,0,,0\n\
             10.0.0.12,52:54:00:10:00:03,,4294967295,0,1,0,0,,0,,0\n\
             10.0.0.11,52:54:00:10:00:02,,0,1732470000,1,0,0,,0,,0\n\
             10.0.0.13,52:54:00:10:00:04,,3600,1732470000,1,0,0,,2,,0\n"
        );
        let table = KeaV4.parse(&text).unwrap();
        assert_eq!(table.v4.len(), 2, "{table:?}");
        let renewed = table.get_v4(Ipv4Addr::new(10, 0, 0, 10)).unwrap();
        assert_eq!(renewed.expiry, Expiry::At(1_732_473_600));
        assert_eq!(renewed.mac(), Some([0x52, 0x54, 0, 0x10, 0, 1]));
        assert_eq!(renewed.hostname.as_deref(), Some("vm1"));
        assert_eq!(
            table.get_v4(Ipv4Addr::new(10, 0, 0, 12)).unwrap().expiry,
            Expiry::Never
        );
        assert!(
            table.get_v4(Ipv4Addr::new(10, 0, 0, 11)).is_none(),
            "deleted with lifetime 0"
        );
        assert!(
            table.get_v4(Ipv4Addr::new(10, 0, 0, 13)).is_none(),
            "expired-reclaimed"
        );
    }

    const HEADER6: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source\n";

    #[test]
    fn v6_rows_the_last_per_address_wins_deletions_remove_prefixes_are_skipped() {
        let text = format!(
            "{HEADER6}\
             fd00::10,00:03:00:01:52:54:00:10:00:01,3600,1732470000,1,3000,0,1048577,128,0,0,vm1,52:54:00:10:00:01,0,,1,2\n\
             fd00::11,00:03:00:01:52:54:00:10:00:02,3600,1732470000,1,3000,0,5,128,0,0,a&#x2cb&#x26c,,0,,0,0\n\
             fd00::10,00:03:00:01:52:54:00:10:00:01,3600,1732473600,1,3000,0,1048577,128,0,0,vm1,52:54:00:10:00:01,0,,1,2\n\
             fd00:1::,00:03:00:01:52:54:00:10:00:01,3600,1732470000,1,3000,2,7,56,0,0,,,0,,0,0\n\
             fd00::12,00:03:00:01:52:54:00:10:00:03,4294967295,0,1,3000,1,9,128,0,0,,,0,,0,0\n\
             fd00::11,00:03:00:01:52:54:00:10:00:02,0,1732470000,1,3000,0,5,128,0,0,,,0,,0,0\n\
             fd00::13,00:03:00:01:52:54:00:10:00:04,3600,1732470000,1,3000,0,6,128,0,0,,,2,,0,0\n"
        );
        let table = KeaV6.parse(&text).unwrap();
        let addresses: Vec<String> = table.v6.iter().map(|l| l.ip.to_string()).collect();
        assert_eq!(addresses, ["fd00::10", "fd00::12"], "{table:?}");
        let renewed = &table.v6[0];
        assert_eq!(renewed.expiry, Expiry::At(1_732_473_600));
        assert_eq!(
            (renewed.iaid, renewed.mac()),
            (Some(1_048_577), Some([0x52, 0x54, 0, 0x10, 0, 1]))
        );
        assert_eq!(
            renewed.client_id.as_deref(),
            Some(&[0, 3, 0, 1, 0x52, 0x54, 0, 0x10, 0, 1][..])
        );
        assert_eq!(table.v6[1].expiry, Expiry::Never);
        assert!(table.v4.is_empty());
    }

    #[test]
    fn every_escape_kea_writes_is_read_back() {
        assert_eq!(unescape("a&#x2cb&#x26c&#x0ad&#xc3&#xa9"), "a,b&c\nd\u{e9}");
        // A tag without two hex digits is text, as Kea's reader leaves it.
        assert_eq!(unescape("x&#xzz&#x4"), "x&#xzz&#x4");
    }

    #[test]
    fn bad_v6_rows_are_reported() {
        // Found by the kea_v6_leases fuzz target: an address in an IA_NA row, then in an IA_TA
        // row, is one lease (the last), not two.
        let twice = format!(
            "{HEADER6}fd00::1,00:01,3600,1,1,1,0,1,128,0,0,,,0,,0,0\nfd00::1,00:01,3600,2,1,1,1,5,128,0,0,,,0,,0,0\n"
        );
        let table = KeaV6.parse(&twice).unwrap();
        assert_eq!((table.v6.len(), table.v6[0].iaid), (1, Some(5)));
        for (row, reason) in [
            (
                "10.0.0.1,00:01,3600,1,1,1,0,1,128,0,0,,,0,,0,0\n",
                "not an IPv6",
            ),
            ("fd00::1,zz,3600,1,1,1,0,1,128,0,0,,,0,,0,0\n", "bad duid"),
            (
                "fd00::1,00:01,3600,1,1,1,7,1,128,0,0,,,0,,0,0\n",
                "bad lease_type",
            ),
            (
                "fd00::1,00:01,3600,1,1,1,0,x,128,0,0,,,0,,0,0\n",
                "bad iaid",
            ),
            ("fd00::1\n", "fewer fields"),
        ] {
            match KeaV6.parse(&format!("{HEADER6}{row}")) {
                Err(LeaseFileError::BadLine {
                    line: 2,
                    reason: got,
                    ..
                }) => {
                    assert!(got.starts_with(reason), "{got}")
                }
                other => panic!("{row:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn older_files_with_fewer_columns_read_the_same() {
        let text = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname\n\
                    10.0.0.10,52:54:00:10:00:01,,3600,1732470000,1,0,0,a&#x2cb\n";
        let table = KeaV4.parse(text).unwrap();
        assert_eq!(
            table
                .get_v4(Ipv4Addr::new(10, 0, 0, 10))
                .unwrap()
                .hostname
                .as_deref(),
            Some("a,b")
        );
    }

    #[test]
    fn half_written_and_bad_rows_are_reported() {
        let row = "10.0.0.10,52:54:00:10:00:01,,3600,1732470000,1,0,0,,0,,0\n";
        let text = format!("{HEADER}{row}");
        assert_eq!(
            KeaV4.parse(&text[..text.len() - 5]),
            Err(LeaseFileError::Incomplete)
        );
        for (bad_row, reason) in [
            (
                "10.0.0.300,52:54:00:10:00:01,,3600,1,1,0,0,,0,,0\n",
                "bad address",
            ),
            (
                "10.0.0.10,52:54:00:10:00:01,,x,1,1,0,0,,0,,0\n",
                "bad valid_lifetime",
            ),
            ("10.0.0.10,zz,,3600,1,1,0,0,,0,,0\n", "bad hwaddr"),
            ("10.0.0.10\n", "fewer fields"),
        ] {
            match KeaV4.parse(&format!("{HEADER}{bad_row}")) {
                Err(LeaseFileError::BadLine {
                    line: 2,
                    reason: got,
                    ..
                }) => assert!(got.starts_with(reason), "{got}"),
                other => panic!("{bad_row:?}: {other:?}"),
            }
        }
        assert!(matches!(
            KeaV4.parse("address,hwaddr\n"),
            Err(LeaseFileError::BadLine { line: 1, .. })
        ));
    }
}
