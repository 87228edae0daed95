//! dnsmasq's lease file (`dhcp-leasefile`, by default /var/lib/misc/dnsmasq.leases):
//!
//! ```text
//! 1732470000 52:54:00:10:00:01 172.29.101.183 vm 01:52:54:00:10:00:01     (DHCPv4)
//! 0 06-00:11:22:33:44:55 10.0.0.9 * *                                      (infinite; htype 6)
//! duid 00:01:00:01:2c:...                                                  (server DUID)
//! 1732470000 1234 fd00::10 host 00:01:00:01:...                            (DHCPv6: IAID, DUID)
//! ```
//!
//! Expiry 0 means infinite. A MAC written as `NN-aa:bb:...` carries a hardware type other than
//! Ethernet (NN in hex). `*` stands for no hostname / no client id. Lines after `duid` are
//! DHCPv6 leases, whose second field is the IAID (prefixed `T` for temporary addresses).
use std::net::IpAddr;

use super::{
    Expiry, Lease, LeaseFileError, LeaseFormat, LeaseTable, parse_hex_bytes, require_complete,
};

pub struct Dnsmasq;

impl LeaseFormat for Dnsmasq {
    fn name(&self) -> &'static str {
        "dnsmasq"
    }

    fn parse(&self, text: &str) -> Result<LeaseTable, LeaseFileError> {
        require_complete(text)?;
        let mut table = LeaseTable::default();
        // One lease a line, nearly all of them DHCPv4: sized once instead of rehashing a large
        // table as it grows.
        let lines = text.bytes().filter(|&b| b == b'\n').count();
        table.v4.reserve(lines);
        let mut in_v6 = false;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let (fields, count) = split_fields(line);
            match &fields[..count] {
                [] => continue,
                ["duid", duid] => {
                    let duid = parse_hex_bytes(duid)
                        .ok_or_else(|| LeaseFileError::bad(number, "bad DUID", line))?;
                    table.server_duid = Some(duid);
                    in_v6 = true;
                }
                [expiry, id, ip, hostname, client_id] => {
                    let bad = |reason: &str| LeaseFileError::bad(number, reason, line);
                    let expiry = match expiry.parse::<u64>().map_err(|_| bad("bad expiry time"))? {
                        0 => Expiry::Never,
                        at => Expiry::At(at),
                    };
                    let ip: IpAddr = ip.parse().map_err(|_| bad("bad address"))?;
                    let hostname = (*hostname != "*").then(|| hostname.to_string());
                    let client_id = match *client_id {
                        "*" => None,
                        hex => Some(parse_hex_bytes(hex).ok_or_else(|| bad("bad client id"))?),
                    };
                    let lease = if in_v6 || ip.is_ipv6() {
                        let iaid = id
                            .trim_start_matches('T')
                            .parse::<u32>()
                            .map_err(|_| bad("bad IAID"))?;
                        Lease {
                            ip,
                            hwaddr: Vec::new(),
                            htype: 0,
                            client_id,
                            hostname,
                            expiry,
                            iaid: Some(iaid),
                        }
                    } else {
                        let (htype, hwaddr) =
                            parse_hwaddr(id).ok_or_else(|| bad("bad hardware address"))?;
                        Lease {
                            ip,
                            hwaddr,
                            htype,
                            client_id,
                            hostname,
                            expiry,
                            iaid: None,
                        }
                    };
                    table.insert(lease);
                }
                _ => {
                    return Err(LeaseFileError::bad(
                        number,
                        "expected 5 fields or a duid line",
                        line,
                    ));
                }
            }
        }
        Ok(table)
    }
}

/// The whitespace-separated fields of a line, without allocating: at most 5 (a lease line);
/// a count of 6 stands for "more than 5".
fn split_fields(line: &str) -> ([&str; 6], usize) {
    let mut fields = [""; 6];
    let mut count = 0;
    for field in line.split_ascii_whitespace() {
        fields[count] = field;
        count += 1;
        if count == fields.len() {
            break;
        }
    }
    (fields, count)
}

/// `aa:bb:cc:dd:ee:ff` (Ethernet) or `NN-aa:bb:...` (hardware type NN, hex).
fn parse_hwaddr(text: &str) -> Option<(u8, Vec<u8>)> {
    match text.split_once('-') {
        Some((htype, rest)) if htype.len() == 2 && !rest.contains('-') => {
            Some((u8::from_str_radix(htype, 16).ok()?, parse_hex_bytes(rest)?))
        }
        _ => Some((1, parse_hex_bytes(text)?)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const FILE: &str = "\
1732470000 52:54:00:10:00:01 172.29.101.183 vm 01:52:54:00:10:00:01
0 06-00:11:22:33:44:55 172.29.101.9 * *
1732470001 52:54:00:10:00:02 172.29.101.184 * ff:00:00:00:01:00:01:2c:aa
duid 00:01:00:01:2c:aa:bb:cc:52:54:00:00:00:01
1732470002 1234 fd00::10 v6host 00:01:00:01:2c:11:22:33:52:54:00:10:00:01
1732470003 T99 fd00::11 * 00:01:00:01:2c:11:22:33:52:54:00:10:00:02
";

    #[test]
    fn parses_every_kind_of_line() {
        let table = Dnsmasq.parse(FILE).unwrap();
        assert_eq!(table.v4.len(), 3);
        let first = table.get_v4(Ipv4Addr::new(172, 29, 101, 183)).unwrap();
        assert_eq!(first.mac(), Some([0x52, 0x54, 0, 0x10, 0, 1]));
        assert_eq!(first.hostname.as_deref(), Some("vm"));
        assert_eq!(
            first.client_id.as_deref(),
            Some(&[1, 0x52, 0x54, 0, 0x10, 0, 1][..])
        );
        assert_eq!(first.expiry, Expiry::At(1_732_470_000));
        let infinite = table.get_v4(Ipv4Addr::new(172, 29, 101, 9)).unwrap();
        assert_eq!(
            (infinite.expiry, infinite.htype, infinite.mac()),
            (Expiry::Never, 6, None)
        );
        assert_eq!(infinite.hwaddr, vec![0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(
            (infinite.hostname.as_deref(), infinite.client_id.as_deref()),
            (None, None)
        );
        assert_eq!(table.server_duid.as_ref().map(Vec::len), Some(14));
        assert_eq!(table.v6.len(), 2);
        assert_eq!(table.v6[0].iaid, Some(1234));
        assert_eq!(table.v6[0].hostname.as_deref(), Some("v6host"));
        assert_eq!(table.v6[1].iaid, Some(99));
    }

    #[test]
    fn an_empty_file_has_no_leases() {
        assert_eq!(Dnsmasq.parse(""), Ok(LeaseTable::default()));
    }

    #[test]
    fn a_file_caught_half_written_is_incomplete_at_every_cut() {
        // dnsmasq truncates and rewrites in place: a reader may see any prefix.
        for cut in 1..FILE.len() {
            let prefix = &FILE[..cut];
            let result = Dnsmasq.parse(prefix);
            if prefix.ends_with('\n') {
                assert!(result.is_ok(), "complete prefix of {cut} bytes: {result:?}");
            } else {
                assert_eq!(result, Err(LeaseFileError::Incomplete), "cut at {cut}");
            }
        }
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            ("x 52:54:00:10:00:01 10.0.0.1 * *\n", "bad expiry time"),
            ("1 52:54:00:10:00:01 10.0.0.300 * *\n", "bad address"),
            ("1 52:54:zz:10:00:01 10.0.0.1 * *\n", "bad hardware address"),
            ("1 52:54:00:10:00:01 10.0.0.1 * 0g\n", "bad client id"),
            ("1 52:54:00:10:00:01 10.0.0.1\n", "expected 5 fields"),
        ];
        for (text, reason) in cases {
            match Dnsmasq.parse(text) {
                Err(LeaseFileError::BadLine {
                    line: 1,
                    reason: got,
                    ..
                }) => assert!(got.starts_with(reason), "{got}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
