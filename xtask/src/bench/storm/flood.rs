//! The storm's generator: pre-built frames sent through an AF_PACKET socket bound to one
//! interface, in batches of `sendmmsg`, paced by a token bucket (or as fast as it goes).
//!
//! Every frame is counted once: `sent` when the kernel took it (it is then on its way to the
//! peer), `refused` when `sendmmsg` failed on it (ENOBUFS from a full queue and the like). Open
//! and use the socket on a thread inside the sending namespace (`dhcp_lab::netns::inside`).
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// At most this many frames per `sendmmsg` call.
const BATCH: usize = 64;

/// A raw socket that sends frames out of one interface (and receives nothing).
pub struct RawSender {
    fd: OwnedFd,
    /// Where the next frame comes from in the cycled set.
    pub cursor: usize,
}

/// What one flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Frames `sendmmsg` refused (not sent, not retried).
    pub refused: u64,
    /// From the first send to the end of the last one.
    pub elapsed: Duration,
    /// CPU time of the sending thread (user + system, as the kernel accounts it).
    pub cpu: Duration,
}

impl Sent {
    /// Frames per second the kernel accepted.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How much to send, how fast.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Frames per second offered; `None`: as fast as the socket takes them.
    pub rate: Option<f64>,
    /// Stop after this long ...
    pub duration: Duration,
    /// ... or after this many frames, whichever comes first.
    pub frames: Option<u64>,
}

impl RawSender {
    /// A socket bound to `iface` (of the calling thread's namespace) that starts sending at
    /// frame `cursor` of the set it is given.
    pub fn open(iface: &str, cursor: usize) -> anyhow::Result<RawSender> {
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(
            index != 0,
            "no interface {iface}: {}",
            io::Error::last_os_error()
        );
        // Protocol 0: the socket sends only, the kernel delivers nothing to it.
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        anyhow::ensure!(
            raw >= 0,
            "socket(AF_PACKET): {}",
            io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        // SAFETY: a valid sockaddr_ll of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(
            bound == 0,
            "bind(AF_PACKET, {iface}): {}",
            io::Error::last_os_error()
        );
        Ok(RawSender { fd, cursor })
    }

    /// Sends `frames` (cycled from where the last flood stopped) at `pace`. Between batches it
    /// sleeps while ahead of the schedule; it never spins waiting.
    pub fn flood(&mut self, frames: &[Vec<u8>], pace: Pace) -> anyhow::Result<Sent> {
        anyhow::ensure!(!frames.is_empty(), "nothing to send");
        // A batch is at most half a millisecond of the offered rate (at least one frame), so
        // low rates go out as a steady trickle rather than in bursts.
        self.cursor %= frames.len();
        let batch = match pace.rate {
            Some(rate) => ((rate / 2000.0) as usize).clamp(1, BATCH),
            None => BATCH,
        };
        let limit = pace.frames.unwrap_or(u64::MAX);
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain old data; zeroes are valid (no name, no control data).
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut out = Sent::default();
        let cpu_before = thread_cpu();
        let start = Instant::now();
        loop {
            let attempted = out.sent + out.refused;
            let elapsed = start.elapsed();
            if attempted >= limit || elapsed >= pace.duration {
                break;
            }
            let due = match pace.rate {
                Some(rate) => {
                    let due = (elapsed.as_secs_f64() * rate) as u64;
                    let next = (attempted + batch as u64).min(limit);
                    if due < next {
                        // Ahead of the schedule: sleep until the next batch is due.
                        let wake = Duration::from_secs_f64(next as f64 / rate);
                        let wait = wake.saturating_sub(elapsed);
                        std::thread::sleep(wait.min(pace.duration.saturating_sub(elapsed)));
                        continue;
                    }
                    due - attempted
                }
                None => BATCH as u64,
            };
            let n = (due.min(BATCH as u64).min(limit - attempted)) as usize;
            for (i, (iov, header)) in iovecs
                .iter_mut()
                .zip(headers.iter_mut())
                .take(n)
                .enumerate()
            {
                let frame = &frames[(self.cursor + i) % frames.len()];
                iov.iov_base = frame.as_ptr() as *mut libc::c_void;
                iov.iov_len = frame.len();
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
                header.msg_len = 0;
            }
            // SAFETY: `n` headers, each pointing at one iovec over a frame that outlives the
            // call; the socket is bound, so no address is needed.
            let done = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    headers.as_mut_ptr(),
                    n as libc::c_uint,
                    0,
                )
            };
            if done < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The queue is full: the frame is refused, counted, and the next one tried.
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::ENOMEM) => {
                        out.refused += 1;
                        self.cursor = (self.cursor + 1) % frames.len();
                    }
                    _ => return Err(err).context("sendmmsg on the flood socket"),
                }
            } else {
                // sendmmsg stops at the first frame that fails; the next call retries it and
                // reports its error.
                out.sent += done as u64;
                self.cursor = (self.cursor + done as usize) % frames.len();
            }
        }
        out.elapsed = start.elapsed();
        out.cpu = thread_cpu().saturating_sub(cpu_before);
        Ok(out)
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain old data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
