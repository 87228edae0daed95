//! Kea's DHCPv6 memfile CSV: never panics, errors are accurate, and every table it reads writes
//! back (as Kea would) to a file that reads the same. See `check_lease_file`.
#![no_main]

use std::fmt::Write as _;

use dhcp_engine::leases::{Expiry, LeaseTable, kea::KeaV6};
use dhcp_observer_fuzz::{check_lease_file, hex, kea_escape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_lease_file(&KeaV6, text, render);
    }
});

/// Kea 2.2's header and one row per lease (state 0: assigned; IA_NA, or IA_TA for none here),
/// with the lease's hardware type (a row's `hwtype` is read since the set reader came).
fn render(table: &LeaseTable) -> String {
    let mut out = String::from(
        "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source\n",
    );
    for lease in &table.v6 {
        let (lifetime, expire) = match lease.expiry {
            Expiry::Never => (u64::from(u32::MAX), 0),
            Expiry::At(at) => (3600, at),
        };
        let duid = lease.client_id.as_deref().map(hex).unwrap_or_default();
        let hostname = kea_escape(lease.hostname.as_deref().unwrap_or(""));
        let _ = writeln!(
            out,
            "{},{duid},{lifetime},{expire},1,3000,0,{},128,0,0,{hostname},{},0,,{},0",
            lease.ip,
            lease.iaid.unwrap_or(0),
            hex(&lease.hwaddr),
            lease.htype
        );
    }
    out
}
