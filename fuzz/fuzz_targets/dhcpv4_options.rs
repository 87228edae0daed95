//! The DHCPv4 message and option reader on a UDP payload. Never panics; an error tells the
//! truth about the bytes it blames; a message it accepts has its fixed fields where RFC 2131
//! puts them, and its option walk consumed the options area exactly (a trailing END or PAD
//! changes nothing, whether or not the options ended with END).
#![no_main]

use dhcp_wire::{
    Dhcpv4, Dhcpv4Error, Dhcpv4Info,
    dhcpv4::{FIXED_HEADER_LEN, MAGIC_COOKIE, option},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    match Dhcpv4::parse(payload) {
        Err(Dhcpv4Error::TooShort(len)) => {
            assert_eq!(len, payload.len());
            assert!(len < FIXED_HEADER_LEN + MAGIC_COOKIE.len());
        }
        Err(Dhcpv4Error::BadOp(op)) => assert_eq!(op, payload[0]),
        Err(Dhcpv4Error::MissingCookie(cookie)) => {
            assert_eq!(cookie, payload[236..240]);
            assert_ne!(cookie, MAGIC_COOKIE);
        }
        Err(Dhcpv4Error::BadMessageType(code)) => assert!(!(1..=18).contains(&code)),
        Err(
            Dhcpv4Error::BadOptionLength { code, len }
            | Dhcpv4Error::OptionPastEnd { code, len, .. },
        ) => {
            assert!(len <= 255);
            assert!(
                code != option::PAD && code != option::END,
                "PAD and END have no length"
            );
        }
        Ok(msg) => {
            assert!(msg.op == 1 || msg.op == 2);
            assert_eq!(payload[236..240], MAGIC_COOKIE);
            assert_eq!(msg.xid.to_be_bytes(), payload[4..8]);
            assert_eq!(msg.hlen, payload[2]);
            assert_eq!(msg.chaddr, &payload[28..28 + usize::from(msg.hlen.min(16))]);
            for trailer in [option::END, option::PAD] {
                let mut longer = payload.to_vec();
                longer.push(trailer);
                assert_eq!(
                    Dhcpv4::parse(&longer).as_ref(),
                    Ok(&msg),
                    "trailing {trailer}"
                );
            }
            let info = Dhcpv4Info::from(&msg);
            assert_eq!(info.chaddr, msg.chaddr);
        }
    }
});
