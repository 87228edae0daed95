//! dnsmasq's lease file: never panics, errors are accurate, and every table it reads writes
//! back (as dnsmasq would) to a file that reads the same. See `check_lease_file`.
#![no_main]

use std::fmt::Write as _;

use dhcp_engine::leases::{Expiry, Lease, LeaseTable, dnsmasq::Dnsmasq};
use dhcp_observer_fuzz::{check_lease_file, hex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_lease_file(&Dnsmasq, text, render);
    }
});

/// dnsmasq's own layout: DHCPv4 lines, then the `duid` line, then DHCPv6 lines.
fn render(table: &LeaseTable) -> String {
    let mut out = String::new();
    for lease in table.v4.values() {
        // A bare MAC means Ethernet; anything else (or nothing) carries its type.
        let id = if lease.htype == 1 && !lease.hwaddr.is_empty() {
            hex(&lease.hwaddr)
        } else {
            format!("{:02x}-{}", lease.htype, hex(&lease.hwaddr))
        };
        out.push_str(&line(lease, &id));
    }
    if table.server_duid.is_none() && table.v6.is_empty() {
        return out;
    }
    let duid = table.server_duid.as_deref().unwrap_or(&[0]);
    let _ = writeln!(out, "duid {}", hex(duid));
    for lease in &table.v6 {
        let iaid = lease.iaid.expect("DHCPv6 leases have an IAID");
        out.push_str(&line(lease, &iaid.to_string()));
    }
    out
}

/// `expiry id address hostname client-id`, `*` for what is absent.
fn line(lease: &Lease, id: &str) -> String {
    let expiry = match lease.expiry {
        Expiry::Never => 0,
        Expiry::At(at) => at,
    };
    let hostname = lease.hostname.as_deref().unwrap_or("*");
    let client_id = lease.client_id.as_deref().map_or("*".into(), hex);
    format!("{expiry} {id} {} {hostname} {client_id}\n", lease.ip)
}
