//! dhcp-agent: everything of dhcp-observer that touches the operating system. The observer
//! itself (what a packet, a lease file or the passing of time means) is `dhcp-engine`; this
//! crate captures, reads files, asks the server, serves metrics and prints, and fans the
//! engine's findings out.
//!
//! # Layout
//! Lower modules first; a module imports only modules above it in this list, never below.
//! - [`system`], [`ticker`], [`trusted`], [`capture`]: privileges and clocks; the daemon's
//!   once-a-second tick; which files may steer the agent; the kernel programs, their attachment and the ring buffer ([`capture::reconcile`]
//!   follows interfaces coming and going).
//! - [`conf_files`], [`leases`], [`intent`]: dnsmasq's configuration, the lease file and the
//!   declared hosts (host files, or a running dnsmasq's command line) from disk, followed with
//!   inotify.
//! - [`server_query`], [`remediate`]: the server over UDP (memory probe, repair).
//! - [`pcap`], [`output`], [`filter`], [`timeline`], [`journal`], [`events`], [`metrics`],
//!   [`state`]: what comes out (capture files, packet lines and JSON, the systemd journal's
//!   native protocol, the daemon's events, the Prometheus registry and HTTP endpoint, the state
//!   file).
//! - [`args`]: arguments several commands share (capture, pcap), and value parsers.
//! - [`service`], [`pipeline`]: what capturing commands share; the daemon's per-event work.
//! - Commands, one module each: [`watch`], [`run`], [`analyze`], [`release`], [`leases_view`]
//!   (`dhcp-agent leases`).
//! - [`cli`]: the command line that names them all (the binary's `main.rs` dispatches), and
//!   [`config`] (`run --config`), which reads a file in terms of that command line.
pub mod analyze;
pub mod args;
pub mod capture;
pub mod cli;
pub mod conf_files;
pub mod config;
pub mod events;
pub mod filter;
pub mod intent;
pub mod journal;
pub mod kea;
pub mod leases;
pub mod leases_view;
pub mod metrics;
pub mod output;
pub mod pcap;
pub mod pipeline;
pub mod release;
pub mod remediate;
pub mod remediate6;
pub mod run;
pub mod server_query;
pub mod service;
pub mod state;
pub mod system;
pub mod ticker;
pub mod timeline;
pub mod trusted;
pub mod watch;
