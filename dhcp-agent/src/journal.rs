//! The systemd journal's native protocol, as <https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>
//! documents it: one datagram per entry on journald's `AF_UNIX`/`SOCK_DGRAM` socket, each field
//! `NAME=value\n`, or, for a value with a newline, `NAME\n`, its length as a little-endian
//! `u64`, the value and `\n`. An entry too big for a datagram (`EMSGSIZE`) goes as an empty
//! datagram carrying one sealed memfd that holds the same bytes (`SCM_RIGHTS`), as
//! `sd_journal_sendv` does; nothing is truncated.
//!
//! Our own client rather than libsystemd (a C library the static build could not link) or a
//! crate: the protocol is this page, and std plus libc (already a dependency) speak it.
//!
//! Whether to use it is [`stdout_is_journal`]: systemd sets `$JOURNAL_STREAM` to the device and
//! inode of the stream it connected the service's output to (`systemd.exec(5)`), so a match
//! with our own stdout means the lines we print end in the journal anyway, and may as well
//! arrive there with their fields.
use std::{
    ffi::CString,
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{fs::MetadataExt as _, net::UnixDatagram},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// How long a send may wait for room in journald's queue before the entry goes elsewhere: the
/// daemon's loop must not stall behind a journald that is busy or restarting.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// The send buffer asked for (the kernel caps it at `net.core.wmem_max`): the protocol page
/// recommends a large one, to block as late as possible; `sd_journal_sendv` asks for 8 MiB.
const SEND_BUFFER: libc::c_int = 8 << 20;

#[derive(Debug, Error)]
pub enum JournalError {
    /// journald drops such fields without a word (`journal_field_valid`).
    #[error(
        "{0:?} is no journal field name (A-Z, 0-9 and _, at most 64, not starting with a digit \
         or _)"
    )]
    FieldName(String),
    #[error("opening a socket for the journal: {0}")]
    Socket(#[source] io::Error),
    #[error("sending to {path}: {source}")]
    Send {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("passing an entry of {bytes} bytes in a memfd to {path}: {source}")]
    Memfd {
        bytes: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether journald keeps a field of this name: A-Z, 0-9 and `_`, 1 to 64 characters, not
/// starting with a digit, nor with `_` (those are the fields journald adds itself, trusted:
/// `_PID`, `_SYSTEMD_UNIT`).
pub fn valid_field_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && !bytes[0].is_ascii_digit()
        && bytes[0] != b'_'
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

/// One journal entry: its fields in the order given (a name may repeat, as the protocol
/// allows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn new() -> Entry {
        Entry::default()
    }

    /// Adds a field; a name journald would drop is refused here, where it can be reported.
    pub fn field(
        &mut self,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Entry, JournalError> {
        if !valid_field_name(name) {
            return Err(JournalError::FieldName(name.to_owned()));
        }
        self.fields.push((name.to_owned(), value.as_ref().to_vec()));
        Ok(self)
    }

    pub fn fields(&self) -> &[(String, Vec<u8>)] {
        &self.fields
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The entry in the protocol's format: `NAME=value\n`, and the binary-safe form for a
    /// value with a newline (it must be used there; elsewhere the readable form is
    /// recommended, for `strace` and the eye).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.fields {
            out.extend_from_slice(name.as_bytes());
            if value.contains(&b'\n') {
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            } else {
                out.push(b'=');
            }
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out
    }
}

/// How an entry reached journald.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Datagram,
    /// Too big for a datagram: in a sealed memfd.
    Memfd,
}

/// A client of journald's socket. The socket is not connected: each entry is sent to the path,
/// so a journald that restarted (a new socket at the same path) gets the next one.
#[derive(Debug)]
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    /// A client of the journal at `path` ([`SOCKET`], or a test's). Nothing is sent: whether
    /// journald listens shows with the first entry.
    pub fn new(path: &Path) -> Result<Journal, JournalError> {
        let socket = UnixDatagram::unbound().map_err(JournalError::Socket)?;
        socket
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(JournalError::Socket)?;
        // Best effort: a smaller buffer only blocks (then times out) sooner.
        // SAFETY: setsockopt reads an int we own, of the size given, on a socket we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&SEND_BUFFER as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Journal {
            socket,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one entry: as a datagram, or, when the kernel says it is too big for one, in a
    /// memfd.
    pub fn send(&self, entry: &Entry) -> Result<Sent, JournalError> {
        let payload = entry.encode();
        match self.socket.send_to(&payload, &self.path) {
            Ok(_) => Ok(Sent::Datagram),
            Err(err) if err.raw_os_error() == Some(libc::EMSGSIZE) => self
                .send_memfd(&payload)
                .map(|()| Sent::Memfd)
                .map_err(|source| JournalError::Memfd {
                    bytes: payload.len(),
                    path: self.path.clone(),
                    source,
                }),
            Err(source) => Err(JournalError::Send {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The payload in a memfd sealed against every change (journald refuses one that is not:
    /// it maps the memory and must not see it change), passed as the only content of an empty
    /// datagram.
    fn send_memfd(&self, payload: &[u8]) -> io::Result<()> {
        let name = CString::new("dhcp-agent-journal").expect("no NUL in the name");
        // SAFETY: memfd_create reads the NUL-terminated name we own; the fd it returns is ours.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let mut memfd = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        memfd.write_all(payload)?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl(F_ADD_SEALS) takes an int, on an fd we own.
        if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // A socket of its own, connected: sendmsg then needs no address of ours to build.
        let socket = UnixDatagram::unbound()?;
        socket.connect(&self.path)?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        send_fd(&socket, memfd.as_fd().as_raw_fd())
    }
}

/// An empty datagram carrying `fd` (`SCM_RIGHTS`) on a connected socket.
fn send_fd(socket: &UnixDatagram, fd: libc::c_int) -> io::Result<()> {
    // Room for one cmsghdr with one int, aligned as cmsghdr must be.
    #[repr(C)]
    union Control {
        header: libc::cmsghdr,
        bytes: [u8; 64],
    }
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
    assert!(space <= 64, "one fd fits the control buffer");
    let mut control = Control { bytes: [0; 64] };
    // SAFETY: msghdr is plain data; every pointer set below points to memory that outlives
    // the sendmsg call, and CMSG_FIRSTHDR/CMSG_DATA stay within `control` (checked size).
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_control = (&raw mut control).cast();
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>(), fd);
        if libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether our stdout is the journal stream systemd connected the service to: `$JOURNAL_STREAM`
/// (`DEVICE:INODE`, decimal) names it. Only stdout counts, because that is where events go:
/// a service whose stdout was sent elsewhere (`StandardOutput=file:...`) keeps its events there,
/// whatever its stderr is, and a program the service started with its output redirected (the
/// variable is inherited) is not fooled.
pub fn stdout_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stdout) = io::stdout().as_fd().try_clone_to_owned() else {
        return false;
    };
    File::from(stdout)
        .metadata()
        .is_ok_and(|m| names_stream(&stream.to_string_lossy(), m.dev(), m.ino()))
}

/// Whether a `$JOURNAL_STREAM` value names the file of this device and inode.
fn names_stream(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Whether something listens where the journal's socket should be (it exists, and is a socket).
pub fn socket_exists(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reads entries back as journald's `server_process_native_message` does: `NAME=value\n`,
    /// or `NAME\n` + u64 LE length + value + `\n`.
    pub(crate) fn decode(mut bytes: &[u8]) -> Result<Entry, String> {
        let mut entry = Entry::new();
        while !bytes.is_empty() {
            let end = bytes
                .iter()
                .position(|&b| b == b'\n' || b == b'=')
                .ok_or("a field name without = or newline")?;
            let name = std::str::from_utf8(&bytes[..end]).map_err(|e| e.to_string())?;
            let value;
            if bytes[end] == b'=' {
                let rest = &bytes[end + 1..];
                let stop = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or("a value without its newline")?;
                value = rest[..stop].to_vec();
                bytes = &rest[stop + 1..];
            } else {
                let rest = &bytes[end + 1..];
                let len: [u8; 8] = rest
                    .get(..8)
                    .ok_or("a length cut short")?
                    .try_into()
                    .unwrap();
                let len = u64::from_le_bytes(len) as usize;
                let data = rest.get(8..8 + len).ok_or("a value cut short")?;
                if rest.get(8 + len) != Some(&b'\n') {
                    return Err("a binary value without its newline".into());
                }
                value = data.to_vec();
                bytes = &rest[8 + len + 1..];
            }
            entry.field(name, value).map_err(|e| e.to_string())?;
        }
        Ok(entry)
    }

    /// A stand-in for journald: a datagram socket bound in a directory of the test's own.
    pub(crate) struct FakeJournald {
        pub socket: UnixDatagram,
        pub path: PathBuf,
    }

    impl FakeJournald {
        pub(crate) fn bind(name: &str) -> FakeJournald {
            let dir = std::env::temp_dir()
                .join(format!("dhcp-agent-journal-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("socket");
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            FakeJournald { socket, path }
        }

        /// The next entry: a datagram's payload, or the memfd it carries (with its seals).
        pub(crate) fn receive(&self) -> (Entry, Option<libc::c_int>) {
            let mut buffer = vec![0u8; 1 << 20];
            let (len, fd) = receive_with_fd(&self.socket, &mut buffer);
            match fd {
                None => (decode(&buffer[..len]).unwrap(), None),
                Some(fd) => {
                    assert_eq!(len, 0, "a datagram with an fd has no payload");
                    // SAFETY: the fd arrived with the message and is ours now.
                    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                    // SAFETY: fcntl(F_GET_SEALS) on an fd we own.
                    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
                    let mut data = Vec::new();
                    std::io::Seek::rewind(&mut file).unwrap();
                    std::io::Read::read_to_end(&mut file, &mut data).unwrap();
                    (decode(&data).unwrap(), Some(seals))
                }
            }
        }
    }

    impl Drop for FakeJournald {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
        }
    }

    /// recvmsg with room for one SCM_RIGHTS fd.
    fn receive_with_fd(socket: &UnixDatagram, buffer: &mut [u8]) -> (usize, Option<libc::c_int>) {
        #[repr(C)]
        union Control {
            header: libc::cmsghdr,
            bytes: [u8; 64],
        }
        let mut control = Control { bytes: [0; 64] };
        // SAFETY: the iovec and control buffer outlive the call; the control header is read
        // only within the length the kernel reports.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = &mut iov;
            message.msg_iovlen = 1;
            message.msg_control = (&raw mut control).cast();
            message.msg_controllen = 64;
            let len = libc::recvmsg(socket.as_raw_fd(), &mut message, 0);
            assert!(len >= 0, "recvmsg: {}", io::Error::last_os_error());
            let header = libc::CMSG_FIRSTHDR(&message);
            let fd = (!header.is_null() && (*header).cmsg_type == libc::SCM_RIGHTS)
                .then(|| std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>()));
            (len as usize, fd)
        }
    }

    fn entry(fields: &[(&str, &[u8])]) -> Entry {
        let mut entry = Entry::new();
        for (name, value) in fields {
            entry.field(name, value).unwrap();
        }
        entry
    }

    #[test]
    fn encodes_as_the_protocol_page_shows() {
        // The page's example, field for field.
        let e = entry(&[
            ("PRIORITY", b"3"),
            ("BINARY_BLOB", b"xx\nx"),
            ("MESSAGE", b"Something happened."),
        ]);
        assert_eq!(
            e.encode(),
            b"PRIORITY=3\nBINARY_BLOB\n\x04\0\0\0\0\0\0\0xx\nx\nMESSAGE=Something happened.\n"
        );
        // Its second method for FOO=BAR, which we use only where a newline forces it.
        assert_eq!(entry(&[("FOO", b"BAR")]).encode(), b"FOO=BAR\n");
        assert_eq!(
            entry(&[("FOO", b"BAR\n")]).encode(),
            b"FOO\n\x04\0\0\0\0\0\0\0BAR\n\n"
        );
    }

    #[test]
    fn every_value_round_trips_binary_ones_too() {
        let values: [&[u8]; 7] = [
            b"",
            b"plain",
            b"two\nlines",
            b"\n",
            b"nul\0inside=and equals",
            &[0xff, 0xfe, b'\n', 0],
            b"ends with a newline\n",
        ];
        let mut original = Entry::new();
        for (i, value) in values.iter().enumerate() {
            original.field(&format!("F{i}"), value).unwrap();
        }
        original.field("F0", b"repeated").unwrap();
        assert_eq!(decode(&original.encode()).unwrap(), original);
    }

    #[test]
    fn field_names_are_those_journald_keeps() {
        for good in ["MESSAGE", "DHCP_IP", "A", "X9_", &"N".repeat(64)] {
            assert!(valid_field_name(good), "{good}");
        }
        for bad in [
            "",
            "_PID",
            "9LIVES",
            "lower",
            "DHCP-IP",
            "DHCP IP",
            "É",
            "A=B",
            "A\nB",
            &"N".repeat(65),
        ] {
            assert!(!valid_field_name(bad), "{bad:?}");
            assert!(Entry::new().field(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_entry_reaches_the_socket_and_a_huge_one_goes_in_a_sealed_memfd() {
        let journald = FakeJournald::bind("send");
        let journal = Journal::new(&journald.path).unwrap();
        let small = entry(&[("MESSAGE", b"hello"), ("DHCP_IP", b"10.0.0.5")]);
        assert_eq!(journal.send(&small).unwrap(), Sent::Datagram);
        assert_eq!(journald.receive(), (small, None));
        // Bigger than any datagram the kernel takes (wmem_max is well below 16 MiB).
        let big_value = vec![b'x'; 16 << 20];
        let big = entry(&[("MESSAGE", b"big\nand binary"), ("BLOB", &big_value)]);
        assert_eq!(journal.send(&big).unwrap(), Sent::Memfd);
        let (received, seals) = journald.receive();
        assert_eq!(received, big);
        let all = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        assert_eq!(seals, Some(all), "fully sealed, as journald wants it");
    }

    #[test]
    fn a_journal_that_is_gone_is_an_error_not_a_silence() {
        let journald = FakeJournald::bind("gone");
        let journal = Journal::new(&journald.path).unwrap();
        let path = journald.path.clone();
        drop(journald);
        let err = journal.send(&entry(&[("MESSAGE", b"x")])).unwrap_err();
        assert!(
            matches!(&err, JournalError::Send { path: p, .. } if *p == path),
            "{err}"
        );
        assert!(!socket_exists(&path));
    }

    #[test]
    fn journal_stream_names_a_device_and_inode() {
        assert!(names_stream("64768:1234567", 64768, 1_234_567));
        assert!(!names_stream("64768:1234567", 64768, 1_234_568));
        assert!(!names_stream("64768:1234567", 1, 1_234_567));
        for bad in ["", "64768", "64768:", ":5", "a:b", "1:2:3"] {
            assert!(!names_stream(bad, 1, 2), "{bad:?}");
        }
    }
}
