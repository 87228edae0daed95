//! Network interfaces: listing, name <-> index, and which hooks each one gets.
use std::{ffi::CString, fs, path::Path};

const SYS_CLASS_NET: &str = "/sys/class/net";
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// An interface the agent attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub loopback: bool,
}

impl Interface {
    /// Looks an interface up by name; `None` if the kernel does not know it.
    pub fn by_name(name: &str) -> Option<Interface> {
        let c_name = CString::new(name).ok()?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        (index != 0).then(|| Interface {
            name: name.to_owned(),
            index,
            loopback: flags(name) & IFF_LOOPBACK != 0,
        })
    }
}

fn flags(name: &str) -> u32 {
    let path = Path::new(SYS_CLASS_NET).join(name).join("flags");
    fs::read_to_string(path)
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

/// Every interface that is administratively up, plus the loopback device (where
/// `dhcp_release` traffic travels), sorted by index.
pub fn default_interfaces() -> std::io::Result<Vec<Interface>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(SYS_CLASS_NET)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let flags = flags(&name);
        if flags & IFF_UP == 0 && flags & IFF_LOOPBACK == 0 {
            continue;
        }
        if let Some(iface) = Interface::by_name(&name) {
            found.push(iface);
        }
    }
    found.sort_by_key(|i| i.index);
    Ok(found)
}

/// Name of an interface by index, if it still exists.
pub fn name_of(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
