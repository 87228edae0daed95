//! Capture: loads the embedded kernel programs, attaches them to interfaces and hands out the
//! event reader and the kernel-side counters.
//!
//! Hooks per interface:
//! * a guest-facing interface gets XDP for ingress (driver mode where the driver supports it,
//!   else generic/SKB mode) and a TC classifier for egress;
//! * the loopback device gets a TC classifier on ingress only (every frame on `lo` passes egress
//!   and then ingress; one hook sees it once).
//!
//! Which interfaces get them is [`select`]'s business; [`Capture::reconcile`] follows them
//! coming and going (woken by [`LinkEvents`]): a new interface the selection wants is
//! attached, one that goes takes its hooks with it, and one of a name attached before that
//! appears again is re-attached.
pub mod iface;
pub mod link_events;
pub mod reader;
pub mod select;

use std::{
    fmt, io,
    os::fd::{AsFd as _, BorrowedFd},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, MapType, PerCpuArray, RingBuf},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions,
        TestRunResult, Xdp, XdpMode,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError},
        xdp::XdpLink,
    },
};
use dhcp_common::{HOOK_COUNT, Hook, names, stat};
use thiserror::Error;

pub use iface::Interface;
pub use link_events::LinkEvents;
pub use reader::{EventReader, RawEvent};

/// The kernel programs, built by build.rs and embedded so one binary is all a router needs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dhcp-ebpf"));

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(
        "this kernel has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF needs Linux 5.8 or later); dhcp-agent cannot run here"
    )]
    NoRingBuffer,
    #[error("unknown interface {0:?} (see `ip link`)")]
    UnknownInterface(String),
    #[error("loading the kernel programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("preparing program {program} failed: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {hook} to {interface} failed: {source}")]
    Attach {
        interface: String,
        hook: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("reading map {0}: {1}")]
    Map(&'static str, String),
    #[error("setting up the event reader: {0}")]
    Reader(#[source] io::Error),
}

/// How TC programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcMode {
    /// TCX links on kernels >= 6.6, netlink clsact filters before that.
    Auto,
    /// TCX links (kernel >= 6.6): several programs coexist, detached when the agent exits.
    Tcx,
    /// A `bpf` filter on the clsact qdisc, as on the routers' 6.1 kernels.
    Netlink,
}

/// How ingress is hooked on non-loopback interfaces.
///
/// The default is `off` (a TC classifier on ingress): measured on veth, attaching any XDP
/// program in driver mode, even an empty one, switches off TSO/GRO for the path and forwarded
/// TCP falls to 0.28x of its throughput (`cargo xtask bench`, forwarding), and virtio-net turns
/// off its guest offloads for XDP too. TC ingress sees the same frames at a per-packet cost
/// within noise of nothing attached. XDP stays available for interfaces where it costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpChoice {
    /// Driver mode, falling back to generic (SKB) mode, falling back to TC ingress.
    Auto,
    Driver,
    Skb,
    /// No XDP: TC ingress (the default; also what `auto` ends on when XDP is taken).
    Off,
}

/// What one attach step did, for the report the agent prints at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachReport {
    pub interface: String,
    pub hook: Hook,
    /// e.g. "driver mode", "skb mode", "tcx", "netlink clsact".
    pub how: String,
    /// Why a fallback was taken, if one was.
    pub note: Option<String>,
}

impl fmt::Display for AttachReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.interface, self.hook.name(), self.how)?;
        if let Some(note) = &self.note {
            write!(f, " [{note}]")?;
        }
        Ok(())
    }
}

/// Kernel-side counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookCounters {
    pub events: u64,
    pub lost: u64,
    pub truncated: u64,
}

/// One hook's attachment, owned: dropping it detaches the program from the hook. aya ignores a
/// failing detach on drop, which is what an attachment to a deleted interface needs (the kernel
/// removed it with the interface; netlink then answers ENODEV).
#[expect(
    dead_code,
    reason = "the links are held for their Drop, which detaches them"
)]
enum HookLink {
    Xdp(XdpLink),
    Tc(SchedClassifierLink),
}

/// An interface the agent attached to (or tried to), how to hook it, and its attachments.
struct Watched {
    /// The interface as last attached (its index tells a re-created one apart).
    iface: Interface,
    xdp: XdpChoice,
    tc_mode: TcMode,
    /// Empty while the interface is gone (or attaching to it failed).
    links: Vec<HookLink>,
    /// The hooks as attached, for the report when they go.
    hooks: Vec<String>,
    /// Named exactly (`--iface eth2`): kept while gone, as a series at 0 that alerts, and
    /// re-attached when back. Any other goes with its interface.
    by_name: bool,
    /// Why it was selected.
    why: String,
    /// The last attach error reported (a retry failing the same way is not reported again).
    failed: Option<String>,
}

/// An interface the selection wants now ([`select::Selector::wants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub iface: Interface,
    pub why: String,
    /// See [`select::Selection::exact_names`].
    pub by_name: bool,
}

/// What [`Capture::reconcile`] did about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceChange {
    /// A new interface the selection wants has its hooks.
    Attached {
        interface: String,
        index: u32,
        reports: Vec<AttachReport>,
        why: String,
    },
    /// The interface the hooks were on is gone (deleted, renamed, or replaced under the same
    /// name). `kept`: it is named by `--iface`, and re-attached when it is back.
    Gone {
        interface: String,
        index: u32,
        kept: bool,
        hooks: Vec<String>,
    },
    /// An interface of a name attached before is there again and has its hooks.
    Reattached {
        interface: String,
        index: u32,
        reports: Vec<AttachReport>,
    },
    /// Attaching to an interface failed; tried again at the next change of any interface.
    Failed {
        interface: String,
        index: u32,
        error: String,
    },
}

impl InterfaceChange {
    /// Hooks attached to an interface: `again` when its name had hooks before (re-created),
    /// else attached for the first time, and `why` it is wanted.
    fn attached(
        again: bool,
        interface: String,
        index: u32,
        reports: Vec<AttachReport>,
        why: &str,
    ) -> InterfaceChange {
        if again {
            InterfaceChange::Reattached {
                interface,
                index,
                reports,
            }
        } else {
            InterfaceChange::Attached {
                interface,
                index,
                reports,
                why: why.to_owned(),
            }
        }
    }

    pub fn interface(&self) -> &str {
        match self {
            InterfaceChange::Attached { interface, .. }
            | InterfaceChange::Gone { interface, .. }
            | InterfaceChange::Reattached { interface, .. }
            | InterfaceChange::Failed { interface, .. } => interface,
        }
    }

    pub fn index(&self) -> u32 {
        match self {
            InterfaceChange::Attached { index, .. }
            | InterfaceChange::Gone { index, .. }
            | InterfaceChange::Reattached { index, .. }
            | InterfaceChange::Failed { index, .. } => *index,
        }
    }

    /// The hooks attached (or, for [`InterfaceChange::Gone`], detached), e.g.
    /// `tc_ingress (tcx)`.
    pub fn hooks(&self) -> Vec<String> {
        match self {
            InterfaceChange::Attached { reports, .. }
            | InterfaceChange::Reattached { reports, .. } => {
                reports.iter().map(hook_description).collect()
            }
            InterfaceChange::Gone { hooks, .. } => hooks.clone(),
            InterfaceChange::Failed { .. } => Vec::new(),
        }
    }
}

/// `tc_ingress (netlink clsact)`, with the fallback note if there was one.
fn hook_description(report: &AttachReport) -> String {
    let mut text = format!("{} ({})", report.hook.name(), report.how);
    if let Some(note) = &report.note {
        text.push_str(&format!(" [{note}]"));
    }
    text
}

impl fmt::Display for InterfaceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hooks = self.hooks().join(", ");
        match self {
            InterfaceChange::Attached {
                interface,
                index,
                why,
                ..
            } => write!(
                f,
                "interface {interface} (ifindex {index}) is new: attached {hooks} ({why})"
            ),
            InterfaceChange::Gone {
                interface,
                index,
                kept,
                ..
            } => {
                write!(
                    f,
                    "interface {interface} (ifindex {index}) is gone, and its hooks with it; "
                )?;
                if *kept {
                    write!(f, "re-attaching when it is back")
                } else {
                    write!(f, "its series are removed")
                }
            }
            InterfaceChange::Reattached {
                interface, index, ..
            } => write!(
                f,
                "interface {interface} is back (ifindex {index}): re-attached {hooks}"
            ),
            InterfaceChange::Failed {
                interface,
                index,
                error,
            } => write!(
                f,
                "interface {interface} (ifindex {index}) is there but attaching failed: {error}; \
                 trying again at the next interface change"
            ),
        }
    }
}

/// Loaded kernel programs and their attachments. Dropping it detaches everything.
pub struct Capture {
    /// Declared before `ebpf`, so dropped first: a netlink XDP attachment is detached by naming
    /// its program's file descriptor, which must still be open then.
    watched: Vec<Watched>,
    /// Every name the hooks were attached to since start: one that comes back is re-attached.
    attached_names: std::collections::BTreeSet<String>,
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
    reports: Vec<AttachReport>,
    /// What the kernel programs were loaded with, for the reader's own timer.
    wake_interval: Duration,
}

impl Capture {
    /// Loads and verifies the programs, with the default wake-up interval. `ring_bytes` sizes
    /// the event ring buffer (a power of two, multiple of the page size).
    pub fn load(ring_bytes: u32) -> Result<Capture, CaptureError> {
        Capture::load_with(
            ring_bytes,
            Duration::from_nanos(dhcp_common::DEFAULT_WAKE_INTERVAL_NS),
        )
    }

    /// Loads and verifies the programs. `wake_interval` bounds how often the kernel wakes the
    /// event reader (zero: for every record, as the kernel does by default).
    pub fn load_with(ring_bytes: u32, wake_interval: Duration) -> Result<Capture, CaptureError> {
        if !aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false) {
            return Err(CaptureError::NoRingBuffer);
        }
        raise_memlock_limit();
        let wake_ns = u64::try_from(wake_interval.as_nanos()).unwrap_or(u64::MAX);
        let mut ebpf = load_object(ring_bytes, wake_ns).map_err(CaptureError::Load)?;
        xdp_program(&mut ebpf)?
            .load()
            .map_err(|source| CaptureError::Program {
                program: names::XDP_PROGRAM,
                source,
            })?;
        for name in [names::TC_INGRESS_PROGRAM, names::TC_EGRESS_PROGRAM] {
            tc_program(&mut ebpf, name)?
                .load()
                .map_err(|source| CaptureError::Program {
                    program: name,
                    source,
                })?;
        }
        let stats = ebpf
            .take_map(names::STATS_MAP)
            .ok_or(CaptureError::Map(names::STATS_MAP, "missing".into()))?;
        let stats = PerCpuArray::try_from(stats)
            .map_err(|e| CaptureError::Map(names::STATS_MAP, e.to_string()))?;
        Ok(Capture {
            watched: Vec::new(),
            attached_names: std::collections::BTreeSet::new(),
            ebpf,
            stats,
            reports: Vec::new(),
            wake_interval,
        })
    }

    /// Attaches the hooks an interface gets (see the module docs), and follows it: see
    /// [`Capture::reconcile`].
    pub fn attach(
        &mut self,
        wanted: &Wanted,
        xdp: XdpChoice,
        tc_mode: TcMode,
    ) -> Result<(), CaptureError> {
        let first_report = self.reports.len();
        let links = self.attach_hooks(&wanted.iface, xdp, tc_mode)?;
        self.attached_names.insert(wanted.iface.name.clone());
        let hooks = self.reports[first_report..]
            .iter()
            .map(hook_description)
            .collect();
        self.watched.push(Watched {
            iface: wanted.iface.clone(),
            xdp,
            tc_mode,
            links,
            hooks,
            by_name: wanted.by_name,
            why: wanted.why.clone(),
            failed: None,
        });
        Ok(())
    }

    /// Attaches every hook of `iface`; on a failure, what was attached is detached again (the
    /// links are dropped with the error).
    fn attach_hooks(
        &mut self,
        iface: &Interface,
        xdp: XdpChoice,
        tc_mode: TcMode,
    ) -> Result<Vec<HookLink>, CaptureError> {
        if iface.loopback {
            return Ok(vec![self.attach_tc(
                iface,
                Hook::TcIngress,
                tc_mode,
                None,
            )?]);
        }
        let mut links = Vec::with_capacity(2);
        let ingress = match xdp {
            XdpChoice::Off => self.attach_tc(iface, Hook::TcIngress, tc_mode, None)?,
            _ => match self.attach_xdp(iface, xdp) {
                Ok(link) => link,
                Err(note) => self.attach_tc(iface, Hook::TcIngress, tc_mode, Some(note))?,
            },
        };
        links.push(ingress);
        links.push(self.attach_tc(iface, Hook::TcEgress, tc_mode, None)?);
        Ok(links)
    }

    /// Brings the attachments in line with the interfaces as they are now and `wanted`, what
    /// the selection wants of them. An interface the hooks were on that is gone (deleted,
    /// renamed, or replaced by another of the same name) gives up its attachments and, unless
    /// named by `--iface`, is forgotten; an interface of a name attached before that is there
    /// again gets the hooks again, the way it got them first; a wanted interface not attached
    /// yet is attached. Call it whenever [`LinkEvents`] reports a change or the selection
    /// changes; it returns what it did.
    ///
    /// An attached interface stays attached while it exists, wanted or not: a served link that
    /// loses its address for a moment (a redundant router's VIP moving, a configuration read
    /// mid-rewrite) must not leave the agent blind, and hooks on a link no longer served cost
    /// nothing.
    pub fn reconcile(
        &mut self,
        wanted: &[Wanted],
        xdp: XdpChoice,
        tc_mode: TcMode,
    ) -> Vec<InterfaceChange> {
        let mut changes = Vec::new();
        let mut n = 0;
        while n < self.watched.len() {
            let watched = &mut self.watched[n];
            let now = Interface::by_name(&watched.iface.name);
            let same = now.as_ref().is_some_and(|i| i.index == watched.iface.index);
            if !same {
                let had_hooks = !watched.links.is_empty();
                watched.links.clear();
                // One never attached (failing) goes too: its series are removed with it.
                if had_hooks || !watched.by_name {
                    changes.push(InterfaceChange::Gone {
                        interface: watched.iface.name.clone(),
                        index: watched.iface.index,
                        kept: watched.by_name,
                        hooks: std::mem::take(&mut watched.hooks),
                    });
                }
                if !watched.by_name {
                    self.watched.remove(n);
                    continue;
                }
            }
            n += 1;
            let Some(now) = now else {
                continue;
            };
            if self.watched[n - 1].links.is_empty() {
                let change = self.attach_again(n - 1, now);
                changes.extend(change);
            }
        }
        for wanted in wanted {
            if self
                .watched
                .iter()
                .any(|w| w.iface.name == wanted.iface.name)
            {
                continue;
            }
            let again = self.attached_names.contains(&wanted.iface.name);
            let first_report = self.reports.len();
            match self.attach(wanted, xdp, tc_mode) {
                Ok(()) => {
                    // Reported with the change, not kept: the start-up list stays bounded.
                    let reports = self.reports.drain(first_report..).collect();
                    changes.push(InterfaceChange::attached(
                        again,
                        wanted.iface.name.clone(),
                        wanted.iface.index,
                        reports,
                        &wanted.why,
                    ));
                }
                Err(err) => {
                    self.reports.truncate(first_report);
                    let error = error_chain(&err);
                    changes.push(InterfaceChange::Failed {
                        interface: wanted.iface.name.clone(),
                        index: wanted.iface.index,
                        error: error.clone(),
                    });
                    self.watched.push(Watched {
                        iface: wanted.iface.clone(),
                        xdp,
                        tc_mode,
                        links: Vec::new(),
                        hooks: Vec::new(),
                        by_name: wanted.by_name,
                        why: wanted.why.clone(),
                        failed: Some(error),
                    });
                }
            }
        }
        changes
    }

    /// Attaches watched interface `n`, which has no hooks, to `now`, the interface of its name
    /// (re-created, or still there after a failed attach). A failure is reported only when it
    /// differs from the last.
    fn attach_again(&mut self, n: usize, now: Interface) -> Option<InterfaceChange> {
        let (xdp, tc_mode) = (self.watched[n].xdp, self.watched[n].tc_mode);
        let first_report = self.reports.len();
        let attached = self.attach_hooks(&now, xdp, tc_mode);
        let again = self.attached_names.contains(&now.name);
        let reports: Vec<AttachReport> = self.reports.drain(first_report..).collect();
        let watched = &mut self.watched[n];
        let (interface, index) = (now.name.clone(), now.index);
        watched.iface = now;
        match attached {
            Ok(links) => {
                watched.links = links;
                watched.hooks = reports.iter().map(hook_description).collect();
                watched.failed = None;
                self.attached_names.insert(interface.clone());
                Some(InterfaceChange::attached(
                    again,
                    interface,
                    index,
                    reports,
                    &watched.why,
                ))
            }
            Err(err) => {
                let error = error_chain(&err);
                if watched.failed.as_ref() == Some(&error) {
                    return None;
                }
                watched.failed = Some(error.clone());
                Some(InterfaceChange::Failed {
                    interface,
                    index,
                    error,
                })
            }
        }
    }

    /// Every watched interface by name, and whether its hooks are attached now.
    pub fn interfaces(&self) -> impl Iterator<Item = (&str, bool)> {
        self.watched
            .iter()
            .map(|w| (w.iface.name.as_str(), !w.links.is_empty()))
    }

    /// Tries the XDP modes `choice` allows; on failure returns why, so the caller can fall back
    /// to TC ingress (another XDP program on the interface must not make us blind or break it).
    fn attach_xdp(&mut self, iface: &Interface, choice: XdpChoice) -> Result<HookLink, String> {
        let modes: &[(XdpMode, &str)] = match choice {
            XdpChoice::Auto => &[(XdpMode::Driver, "driver mode"), (XdpMode::Skb, "skb mode")],
            XdpChoice::Driver => &[(XdpMode::Driver, "driver mode")],
            XdpChoice::Skb => &[(XdpMode::Skb, "skb mode")],
            XdpChoice::Off => return Err("xdp off: using tc ingress".into()),
        };
        let program = xdp_program(&mut self.ebpf).map_err(|e| e.to_string())?;
        let mut failures = Vec::new();
        for &(mode, how) in modes {
            match program
                .attach_to_if_index(iface.index, mode)
                .and_then(|id| program.take_link(id))
            {
                Ok(link) => {
                    self.reports.push(AttachReport {
                        interface: iface.name.clone(),
                        hook: Hook::XdpIngress,
                        how: how.into(),
                        note: (!failures.is_empty()).then(|| failures.join("; ")),
                    });
                    return Ok(HookLink::Xdp(link));
                }
                Err(err) => failures.push(format!("xdp {how}: {}", error_chain(&err))),
            }
        }
        Err(format!("{}; using tc ingress", failures.join("; ")))
    }

    fn attach_tc(
        &mut self,
        iface: &Interface,
        hook: Hook,
        mode: TcMode,
        note: Option<String>,
    ) -> Result<HookLink, CaptureError> {
        let (name, attach_type) = match hook {
            Hook::TcEgress => (names::TC_EGRESS_PROGRAM, TcAttachType::Egress),
            _ => (names::TC_INGRESS_PROGRAM, TcAttachType::Ingress),
        };
        let use_tcx = match mode {
            TcMode::Auto => aya::util::KernelVersion::current()
                .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0)),
            TcMode::Tcx => true,
            TcMode::Netlink => false,
        };
        let attach_error = |source: ProgramError| CaptureError::Attach {
            interface: iface.name.clone(),
            hook: hook.name(),
            source,
        };
        let (options, how) = if use_tcx {
            (TcAttachOptions::TcxOrder(LinkOrder::default()), "tcx")
        } else {
            // The clsact qdisc may already be there (another tool, or our other hook).
            match tc::qdisc_add_clsact(&iface.name) {
                Ok(()) | Err(TcError::AlreadyAttached) => {}
                Err(err) if is_exists(&err) => {}
                Err(err) => return Err(attach_error(ProgramError::TcError(err))),
            }
            (
                TcAttachOptions::Netlink(NlOptions::default()),
                "netlink clsact",
            )
        };
        let program = tc_program(&mut self.ebpf, name)?;
        let link = program
            .attach_with_options(&iface.name, attach_type, options)
            .and_then(|id| program.take_link(id))
            .map_err(attach_error)?;
        self.reports.push(AttachReport {
            interface: iface.name.clone(),
            hook,
            how: how.into(),
            note,
        });
        Ok(HookLink::Tc(link))
    }

    /// What was attached where at start-up, in order (what [`Capture::reconcile`] attaches
    /// later is in the [`InterfaceChange`]s it returns).
    pub fn reports(&self) -> &[AttachReport] {
        &self.reports
    }

    /// Takes the event ring buffer for synchronous reading (tests, benchmarks); call once.
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS_MAP)
            .ok_or(CaptureError::Map(names::EVENTS_MAP, "already taken".into()))?;
        RingBuf::try_from(map).map_err(|e| CaptureError::Map(names::EVENTS_MAP, e.to_string()))
    }

    /// Takes the event ring buffer as an async reader; call once, inside a tokio runtime.
    pub fn event_reader(&mut self) -> Result<EventReader, CaptureError> {
        let wake_interval = self.wake_interval;
        EventReader::new(self.take_ring_buffer()?, wake_interval).map_err(CaptureError::Reader)
    }

    /// Runs the program behind `hook` `repeat` times on `frame` with BPF_PROG_TEST_RUN,
    /// without attaching it anywhere. For the kernel-level tests and the benchmarks.
    pub fn test_run(
        &mut self,
        hook: Hook,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, CaptureError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        let program = program_name(hook);
        let result = match hook {
            Hook::XdpIngress => xdp_program(&mut self.ebpf)?.test_run(options),
            _ => tc_program(&mut self.ebpf, program)?.test_run(options),
        };
        result.map_err(|source| CaptureError::Program { program, source })
    }

    /// The file descriptor of the loaded program behind `hook`, for callers that drive it with
    /// their own bpf() calls: the hook benchmark test-runs it through the same raw
    /// BPF_PROG_TEST_RUN code as the empty reference program it is compared with.
    pub fn program_fd(&self, hook: Hook) -> Result<BorrowedFd<'_>, CaptureError> {
        let program = program_name(hook);
        let not_loaded = || CaptureError::Program {
            program,
            source: ProgramError::NotLoaded,
        };
        let fd = self
            .ebpf
            .program(program)
            .ok_or_else(not_loaded)?
            .fd()
            .map_err(|source| CaptureError::Program { program, source })?;
        Ok(fd.as_fd())
    }

    /// Kernel counters per hook, summed over CPUs.
    pub fn counters(&self) -> Result<[HookCounters; HOOK_COUNT as usize], CaptureError> {
        let mut out = [HookCounters::default(); HOOK_COUNT as usize];
        for hook in Hook::ALL {
            let read = |which| -> Result<u64, CaptureError> {
                let values = self
                    .stats
                    .get(&stat::index(hook, which), 0)
                    .map_err(|e| CaptureError::Map(names::STATS_MAP, e.to_string()))?;
                Ok(values.iter().sum())
            };
            out[hook as usize] = HookCounters {
                events: read(stat::EVENTS)?,
                lost: read(stat::LOST)?,
                truncated: read(stat::TRUNCATED)?,
            };
        }
        Ok(out)
    }
}

/// Loads the object with its ring size and wake-up interval.
///
/// aya 0.14's `EbpfLoader::new()` reads and parses the kernel's BTF (`/sys/kernel/btf/vmlinux`,
/// 5.5 MB on 6.18) for CO-RE relocations, which these programs have none of (they touch only
/// packet bytes and their own maps). That parse was the agent's peak memory: VmHWM about 25 MB
/// against 10 MB steady (`cargo xtask bench --only footprint`). So the loader is made on a
/// thread of its own, in a mount namespace of its own where that file is hidden; the thread
/// ends with the load and its namespace with it. That needs CAP_SYS_ADMIN (root has it; the
/// systemd unit instead hides the file with `InaccessiblePaths=`); without it the BTF is read
/// as before, costing memory only.
fn load_object(ring_bytes: u32, wake_ns: u64) -> Result<Ebpf, aya::EbpfError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Err(err) = hide_kernel_btf() {
                    log::debug!("kernel BTF not hidden from the loader: {err}");
                }
                EbpfLoader::new()
                    .map_max_entries(names::EVENTS_MAP, ring_bytes)
                    .override_global(names::WAKE_INTERVAL_GLOBAL, &wake_ns, true)
                    .load(EBPF_OBJECT)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Gives the calling thread a mount namespace of its own with an empty `/sys/kernel/btf`.
fn hide_kernel_btf() -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: unshare and mount with valid NUL-terminated strings; they change this thread's
    // mount namespace only (CLONE_NEWNS unshares the thread's filesystem context too).
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Private first: with shared propagation (systemd's default for /) the mount below
        // would appear in the host's namespace as well.
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/sys/kernel/btf".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))
    }
}

/// The program that runs at `hook`.
fn program_name(hook: Hook) -> &'static str {
    match hook {
        Hook::XdpIngress => names::XDP_PROGRAM,
        Hook::TcIngress => names::TC_INGRESS_PROGRAM,
        Hook::TcEgress => names::TC_EGRESS_PROGRAM,
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, CaptureError> {
    ebpf.program_mut(names::XDP_PROGRAM)
        .ok_or(CaptureError::Program {
            program: names::XDP_PROGRAM,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| CaptureError::Program {
            program: names::XDP_PROGRAM,
            source,
        })
}

fn tc_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, CaptureError> {
    ebpf.program_mut(name)
        .ok_or(CaptureError::Program {
            program: name,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| CaptureError::Program {
            program: name,
            source,
        })
}

fn is_exists(err: &TcError) -> bool {
    let text = error_chain(err);
    text.contains("File exists") || text.contains("os error 17")
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so the ring buffer fits.
/// Newer kernels use memory-cgroup accounting and ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit call with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            io::Error::last_os_error()
        );
    }
}
