//! What the lease-file targets check in common. Lease files are read with
//! `std::fs::read_to_string`, so the targets feed the parsers valid UTF-8 only.
use dhcp_engine::leases::{LeaseFileError, LeaseFormat, LeaseTable};

/// Parses `text` with `format` and checks what holds for every lease format:
///
/// * only a file that is non-empty and does not end in a newline is `Incomplete`;
/// * a bad line names a line of the file and a reason;
/// * a table holds at most one lease per line, each in the right half (DHCPv4 by address,
///   the rest in file order);
/// * `render` (the format's writer, in the target) turns the table into a file that parses
///   back to the same table: what the parser understood, it understood completely.
pub fn check_lease_file(format: &dyn LeaseFormat, text: &str, render: fn(&LeaseTable) -> String) {
    let incomplete = !text.is_empty() && !text.ends_with('\n');
    match format.parse(text) {
        Err(LeaseFileError::Incomplete) => assert!(incomplete, "complete file called incomplete"),
        Err(LeaseFileError::BadLine { line, reason, .. }) => {
            assert!(
                !incomplete,
                "an incomplete file must be reported as such first"
            );
            assert!(
                (1..=text.lines().count()).contains(&line),
                "line {line} of a file of {} lines",
                text.lines().count()
            );
            assert!(!reason.is_empty());
        }
        Ok(table) => {
            assert!(!incomplete, "an incomplete file parsed");
            assert!(table.v4.len() + table.v6.len() <= text.lines().count());
            for (ip, lease) in &table.v4 {
                assert_eq!(lease.ip, *ip);
                assert_eq!(lease.iaid, None, "a DHCPv4 lease with an IAID");
            }
            let rendered = render(&table);
            let again = format
                .parse(&rendered)
                .unwrap_or_else(|err| panic!("rendered table does not parse: {err}\n{rendered}"));
            assert_eq!(again.v4, table.v4, "DHCPv4 leases after a round trip");
            assert_eq!(again.v6, table.v6, "DHCPv6 leases after a round trip");
            if table.server_duid.is_some() {
                assert_eq!(again.server_duid, table.server_duid);
            }
        }
    }
}

/// `aa:bb:cc`, the hex form both formats write.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A text field as Kea's CSV writer escapes it: each byte below 0x20 or above 0x7e, the comma
/// and `&` as `&#x` and two hex digits (src/lib/util/csv_file.cc).
pub fn kea_escape(text: &str) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        if b < 0x20 || b > 0x7e || b == b',' || b == b'&' {
            out.push_str(&format!("&#x{b:02x}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}
