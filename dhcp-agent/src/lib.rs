//! dhcp-agent: the userspace side of dhcp-observer.
//!
//! Data flows one way: [`capture`] (kernel programs, ring buffer) -> [`decode`] (frames to DHCP
//! messages) -> [`filter`] -> [`output`]. Commands live in their own modules ([`watch`]).
pub mod analyze;
pub mod capture;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod dnsmasq_conf;
pub mod filter;
pub mod leases;
pub mod leases_view;
pub mod metrics;
pub mod output;
pub mod pcap;
pub mod pipeline;
pub mod release;
pub mod remediate;
pub mod run;
pub mod server_identity;
pub mod server_query;
pub mod service;
pub mod state;
pub mod subnet;
pub mod system;
pub mod timeline;
pub mod transactions;
pub mod watch;
