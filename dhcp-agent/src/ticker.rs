//! A once-a-second tick from the kernel (timerfd), for the daemon's housekeeping.
//!
//! tokio's timer wheel wakes a sleeping runtime at the boundary of the wheel slot a far timer
//! sits in (64 ms wide one level up) and then again for the rest: an idle daemon ticking once a
//! second on `tokio::time::interval` blocked in epoll_wait two to three times a second
//! (strace, and `cargo xtask bench --only footprint` counting voluntary context switches). A
//! periodic timerfd makes the kernel wake it exactly once per period, and an idle runtime then
//! has no tokio timer at all.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use tokio::io::unix::AsyncFd;

/// A periodic CLOCK_MONOTONIC timer; the first tick comes one period after creation.
pub struct Ticker {
    timer: AsyncFd<OwnedFd>,
}

impl Ticker {
    /// Call inside a tokio runtime.
    pub fn new(period: Duration) -> io::Result<Ticker> {
        // SAFETY: plain timerfd_create call.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let every = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        // SAFETY: a valid itimerspec; no old value asked for.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the descriptor, which stays open for as long as it lives.
        let timer = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Ticker { timer })
    }

    /// Waits for the next tick; ticks missed meanwhile (the loop was busy) count as one.
    /// Cancel-safe: the expiration count is only read within the poll that returns.
    pub async fn tick(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.timer.readable().await?;
            let mut expirations = [0u8; 8];
            let read = ready.try_io(|fd| {
                // SAFETY: reading 8 bytes into an 8-byte buffer.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), expirations.as_mut_ptr().cast(), 8)
                };
                if n == 8 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_once_per_period() {
        let mut ticker = Ticker::new(Duration::from_millis(20)).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..3 {
            ticker.tick().await.unwrap();
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(60), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
