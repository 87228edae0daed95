//! What the benchmarks share: the server the generated clients talk to.
use std::net::Ipv4Addr;

use dhcp_engine::{
    dnsmasq_conf::{DhcpRange, DnsmasqConfig},
    server_identity::ServerIdentity,
};

/// dnsmasq serving the generated clients' 10.0.0.0/8 (`dhcp_lab::traffic`), listening on
/// loopback and the router's VIP.
pub fn identity() -> ServerIdentity {
    let config = DnsmasqConfig {
        listen_addresses: vec![Ipv4Addr::LOCALHOST.into(), dhcp_lab::VIP_ADDR.into()],
        ranges: vec![DhcpRange {
            start: Ipv4Addr::new(10, 0, 0, 2),
            end: Some(Ipv4Addr::new(10, 255, 255, 251)),
            netmask: Some(Ipv4Addr::new(255, 0, 0, 0)),
        }],
        ..DnsmasqConfig::default()
    };
    ServerIdentity::from_config(&config, &[])
}
