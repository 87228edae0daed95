//! Kea's DHCPv4 memfile CSV: never panics, errors are accurate, and every table it reads writes
//! back (as Kea would) to a file that reads the same. See `check_lease_file`.
#![no_main]

use std::fmt::Write as _;

use dhcp_engine::leases::{Expiry, LeaseTable, kea::KeaV4};
use dhcp_observer_fuzz::{check_lease_file, hex, kea_escape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_lease_file(&KeaV4, text, render);
    }
});

/// Kea 2.x's header and one row per lease (state 0, default: assigned).
fn render(table: &LeaseTable) -> String {
    let mut out = String::from(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n",
    );
    for lease in table.v4.values() {
        let (lifetime, expire) = match lease.expiry {
            Expiry::Never => (u64::from(u32::MAX), 0),
            Expiry::At(at) => (3600, at),
        };
        let client_id = lease.client_id.as_deref().map(hex).unwrap_or_default();
        let hostname = kea_escape(lease.hostname.as_deref().unwrap_or(""));
        let _ = writeln!(
            out,
            "{},{},{client_id},{lifetime},{expire},1,0,0,{hostname},0,,0",
            lease.ip,
            hex(&lease.hwaddr)
        );
    }
    out
}
