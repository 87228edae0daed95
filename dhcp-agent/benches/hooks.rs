//! Per-packet cost of the kernel hooks, measured by the kernel itself with BPF_PROG_TEST_RUN.
//!
//! Our XDP program (the one guest interfaces get on ingress) and our TC classifier (the one on
//! egress; TC ingress runs the same code) run on four frames, and beside them, in the same run,
//! an empty pass-through program of the same type (`r0 = XDP_PASS; exit` and
//! `r0 = TC_ACT_UNSPEC; exit`) loaded here with a raw bpf(BPF_PROG_LOAD). Both ours and the
//! empty ones are test-run by the same raw bpf(BPF_PROG_TEST_RUN) call below (ours through
//! `Capture::program_fd`), with `repeat` = Criterion's iteration count; each sample's time is
//! the kernel-reported average per run (whole nanoseconds, which is what the kernel reports)
//! times the iterations. What the kernel times is the program run and its test-run loop, not
//! the syscall nor building the packet, so "ours minus empty" is the cost our program adds.
//!
//! Benchmark ids (group `hooks`; `cargo xtask bench` reads them, keep them stable):
//! * `xdp/empty`, `tc/empty`: the empty program (on the TCP frame; it never reads the packet);
//! * `xdp/tcp`, `tc/tcp`: ours on a non-DHCP TCP segment (HTTPS, 100 bytes of payload);
//! * `xdp/udp`, `tc/udp`: ours on a non-DHCP UDP datagram (a DNS query to port 53);
//! * `xdp/vlan`, `tc/vlan`: ours on the DNS query in an 802.1Q-tagged frame (VLAN 42);
//! * `xdp/dhcp`, `tc/dhcp`: ours on a DHCPv4 DISCOVER, which emits a ring-buffer event.
//!
//! A test run of an XDP program with `repeat` > 1 puts the program into the kernel's XDP
//! dispatcher (a direct call, as in driver mode) and takes it out again afterwards: two
//! synchronize_rcu() costing ~25 ms of wall-clock time per call, outside the kernel's timing but
//! ruinous for the batched DHCP runs. So for the whole run both XDP programs, ours and the empty
//! one, are also attached (BPF links, driver mode) to a veth pair in a namespace of their own,
//! where nothing flows: the dispatcher keeps them and a test run only takes a reference. What
//! is timed is unchanged.
//!
//! Every DHCP run writes an event into the 8 MiB ring buffer (about 4,000 events fit). A full
//! ring would send the program down its cheaper "lost" path, so DHCP frames run in batches of
//! [`DHCP_BATCH`] and the ring is drained between batches, outside what the kernel times; the
//! kernel's counters must then show one event per run and no loss, or the benchmark fails.
//!
//! Needs root (loads BPF programs). With `DHCP_BENCH_REPORT=<file>` the kernel counters are
//! written there as JSON for `cargo xtask bench`'s checks.
use std::{
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use criterion::Criterion;
use dhcp_agent::capture::{Capture, HookCounters};
use dhcp_common::{DEFAULT_RING_BYTES, Hook};
use dhcp_lab::frames::{self, Dhcpv4Spec, Framing};
use dhcproto::v4::MessageType;

/// DHCP frames run at most this many times between two drains of the ring buffer: well below
/// the ~4,000 events the 8 MiB ring holds.
const DHCP_BATCH: u64 = 1_000;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const XDP_PASS: i32 = 2;
const TC_ACT_UNSPEC: i32 = -1;

/// `union bpf_attr` as BPF_PROG_LOAD reads it, up to `expected_attach_type` (the kernel zeroes
/// the fields past the size passed).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads and writes it.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 80);

/// `union bpf_attr` as BPF_LINK_CREATE reads it for an XDP link.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size passed; the kernel
    // reads at most that many bytes and writes back only into the test-run output fields.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads `r0 = ret; exit` as a program of `prog_type`.
fn load_empty(prog_type: u32, ret: i32) -> std::io::Result<OwnedFd> {
    // struct bpf_insn: code, dst_reg:4 | src_reg:4, off (i16), imm (i32), little endian.
    let insn = |code: u8, imm: i32| -> u64 {
        u64::from(code) | (u64::from(imm as u32) << 32) // dst = src = r0, off = 0
    };
    let insns = [insn(0xb7, ret), insn(0x95, 0)]; // BPF_ALU64|BPF_MOV|BPF_K r0 = imm; BPF_EXIT
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        // As aya loads our XDP program (for attaching to an interface).
        expected_attach_type: if prog_type == BPF_PROG_TYPE_XDP {
            BPF_XDP
        } else {
            0
        },
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..5].copy_from_slice(b"empty");
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// XDP programs held in the kernel's XDP dispatcher (see the module docs) until dropped.
struct XdpDispatcherPin {
    // Dropped in this order: the links (detaching the programs), then the namespace.
    _links: Vec<OwnedFd>,
    _ns: dhcp_lab::Netns,
}

impl XdpDispatcherPin {
    fn new(programs: &[BorrowedFd<'_>]) -> anyhow::Result<XdpDispatcherPin> {
        let ns = dhcp_lab::Netns::create(&format!("dhcp-bench-xdp-{}", std::process::id()))?;
        let mut links = Vec::new();
        for (i, &program) in programs.iter().enumerate() {
            let (a, b) = (format!("pin{i}a"), format!("pin{i}b"));
            ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            let link = ns.run_inside(|| -> std::io::Result<OwnedFd> {
                let name = std::ffi::CString::new(a.as_str()).expect("no NUL");
                // SAFETY: if_nametoindex reads a NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut attr = LinkCreateAttr {
                    prog_fd: program.as_raw_fd() as u32,
                    target_ifindex: ifindex,
                    attach_type: BPF_XDP,
                    flags: XDP_FLAGS_DRV_MODE,
                };
                let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
                // SAFETY: BPF_LINK_CREATE returned a new file descriptor that nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
            })?;
            links.push(link.map_err(|e| anyhow::anyhow!("attaching XDP to veth {a}: {e}"))?);
        }
        Ok(XdpDispatcherPin {
            _links: links,
            _ns: ns,
        })
    }
}

/// Runs `program` `repeat` times on `frame`: the kernel's average time per run and the
/// program's return value.
fn test_run(program: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> (Duration, u32) {
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    if let Err(err) = bpf(BPF_PROG_TEST_RUN, &mut attr) {
        panic!("BPF_PROG_TEST_RUN: {err}");
    }
    (Duration::from_nanos(attr.duration.into()), attr.retval)
}

struct Frames {
    tcp: Vec<u8>,
    udp: Vec<u8>,
    vlan: Vec<u8>,
    dhcp: Vec<u8>,
}

impl Frames {
    fn new() -> Frames {
        let plain = Framing::default();
        let (client, server) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        let tcp = {
            let builder = etherparse::PacketBuilder::ethernet2(plain.src_mac, [2, 0, 0, 0, 0, 1])
                .ipv4(client.octets(), [192, 0, 2, 80], 64)
                .tcp(51_000, 443, 0x1000_0000, 64_240)
                .ack(0x2000_0000)
                .psh();
            let payload = [0x17; 100];
            let mut frame = Vec::with_capacity(builder.size(payload.len()));
            builder.write(&mut frame, &payload).expect("a TCP frame");
            frame
        };
        // A DNS query for "example.com", type A.
        let mut dns = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        dns.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        let udp_in = |framing: &Framing| {
            frames::ipv4_udp(framing, client, server, (53_000, 53), &dns).expect("a UDP frame")
        };
        let vlan = Framing {
            vlans: vec![42],
            ..Framing::default()
        };
        let discover = Dhcpv4Spec::new(MessageType::Discover, 0x5eed, [2, 0x42, 0, 0, 0, 1]);
        let dhcp = frames::ipv4_udp(
            &plain,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            (68, 67),
            &discover.encode(),
        )
        .expect("a DHCP frame");
        Frames {
            tcp,
            udp: udp_in(&plain),
            vlan: udp_in(&vlan),
            dhcp,
        }
    }
}

/// Our programs, the empty ones, and the ring buffer our programs write into.
struct Programs {
    capture: Capture,
    ring: RingBuf<MapData>,
    empty_xdp: OwnedFd,
    empty_tc: OwnedFd,
    /// DHCP runs done, per hook.
    dhcp_runs: [u64; 3],
    _pin: XdpDispatcherPin,
}

impl Programs {
    fn load() -> Programs {
        let mut capture = Capture::load(DEFAULT_RING_BYTES).expect("loading our programs");
        let ring = capture.take_ring_buffer().expect("the event ring buffer");
        let empty_xdp =
            load_empty(BPF_PROG_TYPE_XDP, XDP_PASS).expect("loading an empty XDP program");
        let ours = capture
            .program_fd(Hook::XdpIngress)
            .expect("our XDP program");
        let pin = XdpDispatcherPin::new(&[ours, empty_xdp.as_fd()])
            .expect("attaching the XDP programs to a veth pair in a namespace");
        Programs {
            capture,
            ring,
            empty_xdp,
            empty_tc: load_empty(BPF_PROG_TYPE_SCHED_CLS, TC_ACT_UNSPEC)
                .expect("loading an empty TC program"),
            dhcp_runs: [0; 3],
            _pin: pin,
        }
    }

    fn counters(&self, hook: Hook) -> HookCounters {
        self.capture
            .counters()
            .expect("reading the kernel counters")[hook as usize]
    }

    fn drain(&mut self) -> u64 {
        let mut drained = 0;
        while self.ring.next().is_some() {
            drained += 1;
        }
        drained
    }
}

/// `repeat` runs of `program` on `frame`, as Criterion's measured time; every run must pass.
fn timed(program: BorrowedFd<'_>, frame: &[u8], iters: u64, pass: u32) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let repeat = left.min(u64::from(u32::MAX)) as u32;
        let (per_run, retval) = test_run(program, frame, repeat);
        assert_eq!(retval, pass, "the program must pass every frame");
        total += per_run * repeat;
        left -= u64::from(repeat);
    }
    total
}

fn hooks(c: &mut Criterion) {
    let frames = Frames::new();
    let mut programs = Programs::load();
    let mut group = c.benchmark_group("hooks");
    for (prefix, hook, pass) in [
        ("xdp", Hook::XdpIngress, XDP_PASS as u32),
        ("tc", Hook::TcEgress, TC_ACT_UNSPEC as u32),
    ] {
        let empty = if hook == Hook::XdpIngress {
            programs.empty_xdp.as_fd()
        } else {
            programs.empty_tc.as_fd()
        };
        group.bench_function(format!("{prefix}/empty"), |b| {
            b.iter_custom(|iters| timed(empty, &frames.tcp, iters, pass));
        });
        for (name, frame) in [
            ("tcp", &frames.tcp),
            ("udp", &frames.udp),
            ("vlan", &frames.vlan),
        ] {
            let ours = programs.capture.program_fd(hook).expect("our program");
            group.bench_function(format!("{prefix}/{name}"), |b| {
                b.iter_custom(|iters| timed(ours, frame, iters, pass));
            });
        }
        let before = programs.counters(hook);
        let drained_before = programs.drain();
        assert_eq!(drained_before, 0, "non-DHCP frames must produce no event");
        group.bench_function(format!("{prefix}/dhcp"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(DHCP_BATCH);
                    let ours = programs.capture.program_fd(hook).expect("our program");
                    total += timed(ours, &frames.dhcp, batch, pass);
                    let drained = programs.drain();
                    assert_eq!(drained, batch, "one event per DHCP run");
                    programs.dhcp_runs[hook as usize] += batch;
                    left -= batch;
                }
                total
            });
        });
        let after = programs.counters(hook);
        let runs = programs.dhcp_runs[hook as usize];
        assert_eq!(
            after.lost, before.lost,
            "{prefix}/dhcp: the kernel lost events (ring buffer full): the measurement is void"
        );
        assert_eq!(
            after.events - before.events,
            runs,
            "{prefix}/dhcp: one event per run"
        );
        assert!(runs > 0, "{prefix}/dhcp: no run");
    }
    group.finish();
    if let Some(path) = std::env::var_os("DHCP_BENCH_REPORT") {
        let counters = programs
            .capture
            .counters()
            .expect("reading the kernel counters");
        let per_hook: serde_json::Map<String, serde_json::Value> = Hook::ALL
            .iter()
            .map(|&hook| {
                let c = counters[hook as usize];
                (
                    hook.name().to_string(),
                    serde_json::json!({
                        "dhcp_runs": programs.dhcp_runs[hook as usize],
                        "events": c.events,
                        "lost": c.lost,
                    }),
                )
            })
            .collect();
        std::fs::write(&path, serde_json::Value::Object(per_hook).to_string())
            .expect("writing the report");
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "benches/hooks: loading and test-running BPF programs needs root; run as root (cargo xtask bench does)"
        );
        std::process::exit(1);
    }
    let mut criterion = Criterion::default().configure_from_args();
    hooks(&mut criterion);
    criterion.final_summary();
}
