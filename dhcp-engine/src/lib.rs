//! dhcp-engine: the observer itself. Deterministic: every input (a decoded packet, a lease
//! table, a tick) comes with its time, every output is a value; no I/O, no clock, no threads.
//! `dhcp-agent run`, `watch` and `analyze` all drive the same [`Observer`], so what the daemon
//! decides live and what `analyze` decides offline agree by construction.
//!
//! # Layout
//! - [`observer`]: the [`Observer`]: takes packets, lease-file results and ticks; returns
//!   [`Finding`]s (verdicts, repairs to make, divergences, metric updates as values).
//! - [`correlate`]: one RELEASE against the lease table: honored, dropped (with dnsmasq's
//!   cause) or no lease; the decision table of [`correlate::diagnose`].
//! - [`correlate6`]: the same for DHCPv6 RELEASEs and DECLINEs, settled by the server's REPLY
//!   (or its silence), retransmissions counted once.
//! - [`server_identity`]: which server id each served subnet uses, learned from the server's
//!   replies or its configuration.
//! - [`transactions`]: DISCOVER..ACK and REQUEST..ACK exchanges, NAKs, unanswered DISCOVERs.
//! - [`leases`]: lease tables and the file formats' parsers (dnsmasq, Kea memfile); whether
//!   to believe a file that suddenly lists nothing ([`leases::emptied`]).
//! - [`outstanding`]: dropped releases still held and orphans owed a release, and the
//!   rate-limited repair plan; [`outstanding6`], the same for DHCPv6.
//! - [`reconcile`]: the lease table against the declared hosts: orphans, blocked hosts.
//! - [`liveness`]: whether the server runs and answers (a BACKUP's does not).
//! - [`provenance`]: the agent's own packets (by xid), router, guest or forged releases,
//!   rogue servers.
//! - [`dnsmasq_conf`]: what dnsmasq's configuration says (read through [`ConfFiles`]).
//! - [`declared`]: the hosts it declares (`dhcp-host`, hostsfiles, hostsdirs), matched to
//!   leases the way dnsmasq finds a host for a client.
//! - [`kea_conf`]: what Kea's configuration says (comments, includes, subnets, pools, host
//!   reservations, which become declared hosts for reconciliation).
//! - [`kea_control`]: Kea's control channel as text: the `lease_cmds` commands the agent
//!   sends (memory probe, repair) and Kea's answers.
//! - [`subnet`], [`time`]: small value types.
//!
//! Imports go one way: `dhcp-wire` below, nothing above; the agent owns every file, socket
//! and clock.
//!
//! [`ConfFiles`]: dnsmasq_conf::ConfFiles
pub mod correlate;
pub mod correlate6;
pub mod declared;
pub mod dnsmasq_conf;
pub mod kea_conf;
pub mod kea_control;
pub mod leases;
pub mod liveness;
pub mod observer;
pub mod outstanding;
pub mod outstanding6;
pub mod provenance;
pub mod reconcile;
pub mod server_identity;
pub mod subnet;
pub mod time;
pub mod transactions;

pub use observer::{Finding, Observer, ObserverConfig};
