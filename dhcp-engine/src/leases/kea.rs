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

/// Kea escapes commas in text fields as `&#x2c`.
fn unescape(field: &str) -> String {
    field.replace("&#x2c", ",")
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
