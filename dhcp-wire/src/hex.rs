//! Hardware addresses and other byte strings as people and files write them: `aa:bb:cc:dd:ee:ff`
//! (or with `-`). [`Mac`] and [`HexBytes`] keep the bytes typed in memory and write the same
//! text when serialized, so a file written before they existed reads back unchanged.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Formats bytes as colon-separated hex (MACs, client ids, DUIDs).
pub fn hex_colon(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses `aa:bb:cc` (or `aa-bb-cc`) hex bytes; the empty string is no bytes.
pub fn parse_hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split([':', '-'])
        .map(|b| {
            if b.len() <= 2 && !b.is_empty() {
                u8::from_str_radix(b, 16).ok()
            } else {
                None
            }
        })
        .collect()
}

/// A MAC address given on the command line (`aa:bb:cc:dd:ee:ff` or with `-`).
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(format!(
            "{text:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
        ));
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{text:?} is not a MAC address (bad byte {part:?})"))?;
    }
    Ok(mac)
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The address in a DHCP `chaddr` (or a lease's hardware address) when it is 6 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        bytes.try_into().ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_colon(&self.0))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(text: &str) -> Result<Mac, String> {
        parse_mac(text).map(Mac)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Bytes of any length written as hex (a client id, a DUID, a hardware address of any type).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_colon(&self.0))
    }
}

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexBytes({self})")
    }
}

impl FromStr for HexBytes {
    type Err = String;
    fn from_str(text: &str) -> Result<HexBytes, String> {
        parse_hex_bytes(text)
            .map(HexBytes)
            .ok_or_else(|| format!("{text:?} is not hex bytes like 01:52:54:00"))
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HexBytes, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_bytes_read_back_what_they_write() {
        let mac: Mac = "52:54:00:10:00:01".parse().unwrap();
        assert_eq!(mac.0, [0x52, 0x54, 0, 0x10, 0, 1]);
        assert_eq!(mac.to_string(), "52:54:00:10:00:01");
        assert_eq!("52-54-00-10-00-01".parse::<Mac>().unwrap(), mac);
        assert!("52:54:00:10:00".parse::<Mac>().is_err());
        assert!("52:54:00:10:00:zz".parse::<Mac>().is_err());
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"52:54:00:10:00:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&json).unwrap(), mac);
        assert!(serde_json::from_str::<Mac>("\"nonsense\"").is_err());
        let id = HexBytes(vec![1, 0x52, 0x54]);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"01:52:54\"");
        assert_eq!("".parse::<HexBytes>().unwrap(), HexBytes(Vec::new()));
        assert!("123".parse::<HexBytes>().is_err());
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }
}
