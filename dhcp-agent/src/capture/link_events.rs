//! Interface changes as the kernel announces them: an rtnetlink socket subscribed to the link
//! group (`RTMGRP_LINK`), which gets a message whenever an interface of the agent's network
//! namespace is created, deleted, renamed or changes state, and to the IPv4 address group
//! (`RTMGRP_IPV4_IFADDR`): the link group says nothing of addresses, and an interface is
//! served by dnsmasq once it holds an address in a served subnet (CloudStack plugs a tier's NIC,
//! then configures its address).
//!
//! The messages are only a wake-up call: which interfaces there are and what each holds is
//! looked up afresh ([`super::Capture::reconcile`]), so nothing here parses their attributes,
//! and a message lost to a full socket buffer (ENOBUFS) is a wake-up too.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use tokio::io::unix::AsyncFd;

/// Large enough for a burst of link messages (each is well under a kilobyte); what does not fit
/// is drained by the next read, and the caller looks at every interface anyway.
const BUFFER_BYTES: usize = 16 * 1024;

/// A subscription to the kernel's link and IPv4 address notifications. Needs no privileges.
pub struct LinkEvents {
    socket: AsyncFd<OwnedFd>,
    buffer: Vec<u8>,
}

impl LinkEvents {
    /// Subscribes; call inside a tokio runtime, before attaching, so that no change between
    /// the attach and the subscription goes unnoticed.
    pub fn open() -> io::Result<LinkEvents> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; zeroes are valid (nl_pid 0: the kernel picks).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR) as u32;
        // SAFETY: a valid sockaddr_nl of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the descriptor, which stays open for as long as it lives.
        let socket = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(LinkEvents {
            socket,
            buffer: vec![0; BUFFER_BYTES],
        })
    }

    /// Waits until some interface or address changed, then drains what else is queued. Cancel-safe: a
    /// message is only taken from the socket within the poll that returns.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.socket.readable().await?;
            let buffer = &mut self.buffer;
            match ready.try_io(|socket| drain(socket.get_ref().as_raw_fd(), buffer)) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Reads every queued message. WouldBlock when there was none (a spurious wake-up); Ok when at
/// least one was read or some were lost (ENOBUFS: the queue overflowed, something changed).
fn drain(fd: i32, buffer: &mut [u8]) -> io::Result<()> {
    let mut got = false;
    loop {
        // SAFETY: `buffer` is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if n >= 0 {
            got = true;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOBUFS) => got = true,
            _ if err.kind() == io::ErrorKind::WouldBlock => {
                return if got { Ok(()) } else { Err(err) };
            }
            _ => return Err(err),
        }
    }
}
