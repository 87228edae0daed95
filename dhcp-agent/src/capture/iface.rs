//! Network interfaces: listing, name <-> index.
//!
//! Everything here asks the kernel through sockets and netlink (if_nameindex, if_nametoindex,
//! SIOCGIFFLAGS), never /sys/class/net: sysfs shows the interfaces of the network namespace it
//! was mounted in, which is not the agent's own when it was moved into one with setns (systemd's
//! NetworkNamespacePath=, the benchmarks) rather than started by `ip netns exec`.
use std::ffi::CString;

use super::select::Link;

const IFF_UP: u32 = libc::IFF_UP as u32;
const IFF_LOOPBACK: u32 = libc::IFF_LOOPBACK as u32;

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
            loopback: flags(name).unwrap_or(0) & IFF_LOOPBACK != 0,
        })
    }
}

/// The interface's flags (SIOCGIFFLAGS); `None` when it is gone.
fn flags(name: &str) -> Option<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return None;
    }
    // SAFETY: ifreq is plain data; zeroes are valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes ifru_flags of `request`.
    let flags = unsafe {
        let ok = libc::ioctl(socket, libc::SIOCGIFFLAGS as _, &mut request) == 0;
        libc::close(socket);
        ok.then_some(request.ifr_ifru.ifru_flags)
    };
    flags.map(|f| u32::from(f as u16))
}

/// The index and name of every interface of this network namespace (if_nameindex).
fn names() -> std::io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let mut names = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push((
                (*entry).if_index,
                std::ffi::CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            ));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        Ok(names)
    }
}

/// Every interface of this network namespace as [`super::select::Selector`] looks at it:
/// name, index, flags and IPv4 addresses (getifaddrs), sorted by index. An interface deleted
/// while it is listed is left out.
pub fn links() -> std::io::Result<Vec<Link>> {
    let addresses = crate::system::link_ipv4();
    let mut found = Vec::new();
    for (index, name) in names()? {
        // One ioctl for both flags; none answers for an interface deleted meanwhile.
        let Some(flags) = flags(&name) else {
            continue;
        };
        found.push(Link {
            up: flags & IFF_UP != 0,
            loopback: flags & IFF_LOOPBACK != 0,
            index,
            ipv4: addresses
                .iter()
                .filter(|(link, _, _)| *link == name)
                .map(|&(_, ip, prefix)| (ip, prefix))
                .collect(),
            name,
        });
    }
    found.sort_by_key(|l| l.index);
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
