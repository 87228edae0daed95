//! Which server identifier (option 54) the DHCP server really uses, per subnet.
//!
//! Learned from the server's own OFFER/ACK/NAK as they leave the router (TC egress): option 54
//! there is the id the server will compare a RELEASE against, whatever address the reply's IP
//! header carries. A dnsmasq configuration, when given, seeds the table before any reply
//! (`listen-address` inside a served subnet) and tells which subnets are served at all.
use std::{collections::HashMap, net::Ipv4Addr};

use dhcp_wire::{MessageType, Packet};

use crate::{dnsmasq_conf::DnsmasqConfig, subnet::Subnet};

/// Where an expected server id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Option 54 of a reply the server sent.
    Observed,
    /// dnsmasq's `listen-address` in the served subnet.
    Configured,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Observed => "observed",
            Source::Configured => "configured",
        }
    }
}

/// A pool of addresses the server hands out: a served subnet, with the size of its dynamic
/// ranges when the configuration gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Subnet,
    pub interface: Option<String>,
    pub size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServer {
    pub server_id: Ipv4Addr,
    pub subnet: Subnet,
    pub interface: Option<String>,
    pub source: Source,
}

#[derive(Debug, Default)]
pub struct ServerIdentity {
    by_subnet: HashMap<Subnet, KnownServer>,
    /// Subnets the configuration says are served (empty when no configuration was given).
    served: Vec<Subnet>,
    /// Addresses in the configured dynamic ranges, per subnet.
    pool_sizes: HashMap<Subnet, u32>,
}

impl ServerIdentity {
    /// Seeds from a dnsmasq configuration; `local` are the router's own subnets (used for ranges
    /// without a netmask).
    pub fn from_config(config: &DnsmasqConfig, local: &[Subnet]) -> ServerIdentity {
        let mut identity = ServerIdentity::default();
        for range in &config.ranges {
            let Some(subnet) = range.subnet(local) else {
                continue;
            };
            identity.served.push(subnet);
            if let Some(size) = range.size() {
                *identity.pool_sizes.entry(subnet).or_default() += size;
            }
            if let Some(server_id) = config.listen_address_in(subnet) {
                identity.by_subnet.entry(subnet).or_insert(KnownServer {
                    server_id,
                    subnet,
                    interface: None,
                    source: Source::Configured,
                });
            }
        }
        identity
    }

    /// Seeds from Kea's configuration: its DHCPv4 subnets are served, and in each Kea's
    /// server id is the router's own address there (Kea answers with the address of the
    /// interface a query came in on, `Dhcpv4Srv::appendServerID`, when no
    /// `dhcp-server-identifier` option is configured). `local_addresses` are the router's.
    pub fn from_kea(
        config: &crate::kea_conf::KeaConfig,
        local_addresses: &[Ipv4Addr],
        local: &[Subnet],
    ) -> ServerIdentity {
        let mut plan = config.address_plan();
        // The one-address ranges that keep unmatchable reservations from orphans (the only
        // ranges without a netmask) are no pools.
        plan.ranges.retain(|r| r.netmask.is_some());
        plan.listen_addresses = local_addresses
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| std::net::IpAddr::V4(*ip))
            .collect();
        ServerIdentity::from_config(&plan, local)
    }

    /// Learns from a server reply. Returns the entry when it is new or changed.
    pub fn observe(&mut self, packet: &Packet) -> Option<&KnownServer> {
        let m = packet.dhcpv4()?;
        if packet.meta.hook.is_ingress() || m.op != 2 {
            return None; // only what the server sends out
        }
        if !matches!(
            m.message_type,
            Some(MessageType::Offer | MessageType::Ack | MessageType::Nak)
        ) {
            return None;
        }
        // dnsmasq answers a DHCPINFORM that came over `lo` (its `dhcp_lease_time`, the
        // agent's probes) with option 54 = 127.0.0.1, the address it came in on: no client of
        // the subnet ever uses that id (analyze of a capture with the agent's probe learned
        // 127.0.0.1 for the guest subnet).
        let server_id = m.server_id.filter(|id| !id.is_loopback())?;
        let client = [m.yiaddr, m.ciaddr]
            .into_iter()
            .find(|a| !a.is_unspecified())?;
        let subnet = match m
            .subnet_mask
            .and_then(|mask| Subnet::from_mask(client, mask))
        {
            Some(subnet) => subnet,
            None => self.subnet_of(client).unwrap_or(Subnet::new(client, 32)?),
        };
        let learned = KnownServer {
            server_id,
            subnet,
            interface: Some(packet.meta.interface.clone()),
            source: Source::Observed,
        };
        if self.by_subnet.get(&subnet) == Some(&learned) {
            return None;
        }
        self.by_subnet.insert(subnet, learned);
        self.by_subnet.get(&subnet)
    }

    /// The known subnet containing `ip` (most specific first).
    fn subnet_of(&self, ip: Ipv4Addr) -> Option<Subnet> {
        let observed = self.learned_for(ip).map(|k| k.subnet);
        let served = self
            .served
            .iter()
            .copied()
            .filter(|s| s.contains(ip))
            .max_by_key(|s| s.prefix());
        observed
            .into_iter()
            .chain(served)
            .max_by_key(|s| s.prefix())
    }

    /// The most specific learned subnet containing `ip`: one hash lookup per prefix length, so
    /// the cost does not grow with the number of subnets (a server that sends no subnet mask
    /// gets one /32 entry per client, and this runs for every packet).
    fn learned_for(&self, ip: Ipv4Addr) -> Option<&KnownServer> {
        (0..=32u8)
            .rev()
            .find_map(|prefix| self.by_subnet.get(&Subnet::new(ip, prefix)?))
    }

    /// The server id the server will expect in a RELEASE for `ip`.
    pub fn expected_for(&self, ip: Ipv4Addr) -> Option<&KnownServer> {
        self.learned_for(ip)
    }

    /// Whether `ip` is in a served subnet: `None` when nothing is known either way.
    pub fn serves(&self, ip: Ipv4Addr) -> Option<bool> {
        if self.served.is_empty() && self.by_subnet.is_empty() {
            return None;
        }
        Some(self.served.iter().any(|s| s.contains(ip)) || self.expected_for(ip).is_some())
    }

    /// Whether `id` is a server id this router's server uses (learned or configured).
    pub fn is_server_id(&self, id: Ipv4Addr) -> bool {
        self.by_subnet.values().any(|k| k.server_id == id)
    }

    pub fn known(&self) -> impl Iterator<Item = &KnownServer> {
        self.by_subnet.values()
    }

    /// Every served subnet, configured or learned, in order.
    pub fn pools(&self) -> Vec<Pool> {
        let subnets: std::collections::BTreeSet<Subnet> = self
            .served
            .iter()
            .chain(self.by_subnet.keys())
            .copied()
            .collect();
        subnets
            .into_iter()
            .map(|subnet| Pool {
                subnet,
                interface: self
                    .by_subnet
                    .get(&subnet)
                    .and_then(|k| k.interface.clone()),
                size: self.pool_sizes.get(&subnet).copied(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use dhcp_common::Hook;
    use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
    use dhcproto::v4;

    use super::*;
    use dhcp_wire::{FrameMeta, decode_frame};

    const VIP: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 1);
    const PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 29, 101, 245);

    fn reply(ty: v4::MessageType, hook: Hook, server_id: Ipv4Addr, with_mask: bool) -> Packet {
        let mut spec = Dhcpv4Spec::new(ty, 1, [2, 0, 0, 0, 0, 1]);
        spec.yiaddr = Ipv4Addr::new(172, 29, 101, 150);
        spec.server_id = Some(server_id);
        let mut payload = spec.encode();
        if with_mask {
            // Option 1 right after the cookie.
            payload.splice(240..240, [1, 4, 255, 255, 255, 0]);
        }
        // The reply's IP source is the primary address: option 54 must win over it.
        let frame = frames::ipv4_udp(
            &Framing::default(),
            PRIMARY,
            spec.yiaddr,
            (67, 68),
            &payload,
        )
        .unwrap();
        let meta = FrameMeta {
            unix_ns: 0,
            ifindex: 2,
            interface: "guest0".into(),
            hook,
            wire_len: 0,
            vlan: None,
            vlan_inner: None,
            truncated: false,
        };
        decode_frame(&frame, meta)
    }

    #[test]
    fn learns_option_54_of_replies_leaving_the_router() {
        let mut identity = ServerIdentity::default();
        assert_eq!(identity.serves(Ipv4Addr::new(172, 29, 101, 150)), None);
        let offer = reply(v4::MessageType::Offer, Hook::TcEgress, VIP, true);
        let learned = identity.observe(&offer).cloned().unwrap();
        assert_eq!(learned.server_id, VIP);
        assert_eq!(learned.subnet.to_string(), "172.29.101.0/24");
        assert_eq!(learned.interface.as_deref(), Some("guest0"));
        assert!(identity.observe(&offer).is_none(), "unchanged: nothing new");
        let expected = identity
            .expected_for(Ipv4Addr::new(172, 29, 101, 99))
            .unwrap();
        assert_eq!(
            (expected.server_id, expected.source),
            (VIP, Source::Observed)
        );
        assert_eq!(identity.serves(Ipv4Addr::new(10, 0, 0, 1)), Some(false));
    }

    #[test]
    fn ignores_requests_ingress_and_non_replies() {
        let mut identity = ServerIdentity::default();
        assert!(
            identity
                .observe(&reply(v4::MessageType::Offer, Hook::XdpIngress, VIP, true))
                .is_none()
        );
        assert!(
            identity
                .observe(&reply(v4::MessageType::Release, Hook::TcEgress, VIP, true))
                .is_none()
        );
        assert!(identity.known().next().is_none());
    }

    #[test]
    fn an_answer_over_loopback_teaches_no_server_id() {
        let mut identity = ServerIdentity::default();
        let inform_ack = reply(
            v4::MessageType::Ack,
            Hook::TcEgress,
            Ipv4Addr::LOCALHOST,
            true,
        );
        assert!(identity.observe(&inform_ack).is_none());
        assert_eq!(
            identity.expected_for(Ipv4Addr::new(172, 29, 101, 150)),
            None
        );
    }

    #[test]
    fn without_a_mask_uses_the_configured_subnet() {
        let config = DnsmasqConfig {
            listen_addresses: vec!["127.0.0.1".parse().unwrap(), VIP.into()],
            ranges: vec![crate::dnsmasq_conf::DhcpRange {
                start: Ipv4Addr::new(172, 29, 101, 100),
                end: Some(Ipv4Addr::new(172, 29, 101, 200)),
                netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            }],
            ..DnsmasqConfig::default()
        };
        let mut identity = ServerIdentity::from_config(&config, &[]);
        let seeded = identity
            .expected_for(Ipv4Addr::new(172, 29, 101, 150))
            .unwrap();
        assert_eq!((seeded.server_id, seeded.source), (VIP, Source::Configured));
        let learned = identity
            .observe(&reply(v4::MessageType::Ack, Hook::TcEgress, VIP, false))
            .cloned()
            .unwrap();
        assert_eq!(
            (learned.subnet.to_string(), learned.source),
            ("172.29.101.0/24".to_owned(), Source::Observed)
        );
    }
}
