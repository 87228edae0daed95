//! IPv4 subnets: the key under which server identities and pools are known.
use std::{fmt, net::Ipv4Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The subnet of `addr` with `prefix` bits (host bits cleared). `None` for prefix > 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        (prefix <= 32).then(|| Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The subnet of `addr` under a dotted netmask; `None` for a non-contiguous mask.
    pub fn from_mask(addr: Ipv4Addr, netmask: Ipv4Addr) -> Option<Subnet> {
        let bits = u32::from(netmask);
        let prefix = bits.leading_ones() as u8;
        (bits == mask(prefix)).then(|| Subnet::new(addr, prefix))?
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn network(self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_from_prefixes_and_masks() {
        let ip = Ipv4Addr::new(172, 29, 101, 245);
        let s = Subnet::new(ip, 24).unwrap();
        assert_eq!(s.to_string(), "172.29.101.0/24");
        assert_eq!(
            Subnet::from_mask(ip, Ipv4Addr::new(255, 255, 255, 0)),
            Some(s)
        );
        assert!(s.contains(Ipv4Addr::new(172, 29, 101, 1)));
        assert!(!s.contains(Ipv4Addr::new(172, 29, 102, 1)));
        assert_eq!(Subnet::from_mask(ip, Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(Subnet::new(ip, 33), None);
        assert!(
            Subnet::new(ip, 0)
                .unwrap()
                .contains(Ipv4Addr::new(8, 8, 8, 8))
        );
        assert_eq!(
            Subnet::new(ip, 32).unwrap().to_string(),
            "172.29.101.245/32"
        );
    }
}
