//! Loading the embedded object with its maps pinned (or adopted) under `/sys/fs/bpf/edge`, and
//! attaching its programs: XDP on the client-facing interfaces, TC (TCX ingress) on those and on
//! the interfaces toward backends. Every link is pinned too. A link that is already pinned is
//! adopted and gets the new program in one atomic link update, so an agent restart never leaves an
//! interface without a program, and the conntrack maps (pinned, adopted) keep established flows.

use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::xdp::XdpLink;
use aya::programs::{SchedClassifier, TcAttachType, Xdp};
use aya::{Ebpf, EbpfLoader};
use edge_common::{map_names, program_names};
use serde::Serialize;

use edge_core::util::error_chain;

use crate::clock::{Calibration, ClockError};
use crate::kernel_log::{KernelLog, KernelLogError};
use crate::netinfo;
use crate::object::EBPF_OBJECT;
use crate::pins::{self, PinError};

edge_core::label_enum! {
    /// How the XDP program attaches (`--xdp-mode`).
    #[derive(Default)]
    pub enum XdpMode {
        /// Native (driver) XDP where the driver supports it, except on veth; otherwise only the TC
        /// program steers.
        #[default]
        Auto => "auto",
        /// Native XDP or fail.
        Native => "native",
        /// Generic (skb) XDP: works everywhere, slower than TC.
        Generic => "generic",
        /// No XDP: the TC program steers alone (keeps GSO both ways; the fastest choice on veth).
        Off => "off",
    }
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "native" | "drv" => Ok(Self::Native),
            "generic" | "skb" => Ok(Self::Generic),
            "off" | "none" => Ok(Self::Off),
            _ => Err("use auto, native, generic or off".into()),
        }
    }
}

/// A load or attach step failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Pin folder trouble.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// The kernel refused the object or a map.
    #[error("loading the eBPF object failed: {0}; this needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel with BTF")]
    Load(String),
    /// The data path's clock could not be calibrated.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The program's log records cannot be read.
    #[error(transparent)]
    KernelLog(#[from] KernelLogError),
    /// Adopted maps have another size than this configuration needs.
    #[error(
        "the pinned map {name} has {found} entries but this configuration needs {want} (another --table-size or --conntrack-size?); keep the old setting, or run `edge-agent cleanup` first (established flows are lost)"
    )]
    Size {
        /// Map name.
        name: &'static str,
        /// Pinned size.
        found: u32,
        /// Needed size.
        want: u32,
    },
    /// A program could not be prepared.
    #[error("the eBPF program {name} failed to load: {reason}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Attaching failed.
    #[error("attaching {kind} to {iface} failed: {reason}")]
    Attach {
        /// "xdp" or "tc".
        kind: &'static str,
        /// Interface.
        iface: String,
        /// Why.
        reason: String,
    },
}

/// What to load and where to attach.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Client-facing interfaces: XDP (per `xdp_mode`) and TC.
    pub client_ifaces: Vec<String>,
    /// Interfaces toward backends that are not client-facing: TC only (keeps GSO for replies).
    pub backend_ifaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Entries of the Maglev array.
    pub table_entries: u32,
    /// Entries of conntrack and reverse NAT.
    pub conntrack_size: u32,
}

/// One attached program.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    /// Interface.
    pub iface: String,
    /// "xdp-native", "xdp-generic" or "tc".
    pub hook: String,
    /// Whether an existing pinned link was adopted (program swapped in place).
    pub adopted: bool,
    /// Notes, e.g. why XDP was skipped.
    pub note: Option<String>,
}

/// The loaded object and what it is attached to.
#[derive(Debug)]
pub struct Loaded {
    /// The object (its maps are pinned).
    pub ebpf: Ebpf,
    /// The attachments.
    pub attachments: Vec<Attachment>,
    /// Whether pinned maps from an earlier agent were adopted.
    pub adopted_maps: bool,
    /// The data path's clock, for the settings.
    pub clock: Calibration,
    /// The program's log records, for the agent to read (taken out by whoever runs the reader).
    pub kernel_log: Option<KernelLog>,
}

/// The loaded object as the actor's [`Links`](crate::Links): it keeps the object (programs and
/// map descriptors) alive and attaches the TC program on interfaces found at run time.
#[derive(Debug)]
pub struct LoadedLinks {
    loaded: Loaded,
    tc: std::collections::BTreeSet<String>,
}

impl LoadedLinks {
    /// Takes over the loaded object; the interfaces it already has TC on are known.
    pub fn new(loaded: Loaded) -> Self {
        let tc = loaded.attachments.iter().filter(|a| a.hook == "tc").map(|a| a.iface.clone()).collect();
        Self { loaded, tc }
    }
}

impl crate::Links for LoadedLinks {
    fn ensure_tc(&mut self, iface: &str) -> Result<bool, String> {
        if self.tc.contains(iface) {
            return Ok(false);
        }
        let prog: &mut SchedClassifier =
            program(&mut self.loaded.ebpf, program_names::TC).map_err(|e| e.to_string())?;
        let a = attach_tc(prog, iface).map_err(|e| e.to_string())?;
        self.loaded.attachments.push(a);
        self.tc.insert(iface.to_string());
        Ok(true)
    }
}

/// Loads and attaches.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    pins::prepare()?;
    let adopted_maps = pins::map_dir().join(map_names::CONNTRACK).exists();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins::map_dir())
        .map_max_entries(map_names::MAGLEV, opts.table_entries)
        .map_max_entries(map_names::CONNTRACK, opts.conntrack_size)
        .map_max_entries(map_names::REVNAT, opts.conntrack_size)
        .load(EBPF_OBJECT)
        .map_err(|e| LoadError::Load(error_chain(&e)))?;
    for (name, want) in [
        (map_names::MAGLEV, opts.table_entries),
        (map_names::CONNTRACK, opts.conntrack_size),
        (map_names::REVNAT, opts.conntrack_size),
    ] {
        let found = MapInfo::from_pin(pins::map_dir().join(name))
            .map_err(|e| LoadError::Load(format!("{name}: {}", error_chain(&e))))?
            .max_entries();
        if found != want {
            return Err(LoadError::Size { name, found, want });
        }
    }

    let kernel_log = KernelLog::take(&mut ebpf)?;
    let clock = crate::clock::calibrate(program(&mut ebpf, program_names::CLOCK)?)?;
    tracing::info!(hz = clock.hz, ns_per_tick = clock.ns_per_tick, "calibrated the data path's clock");

    let mut attachments = Vec::new();
    let mut wanted: Vec<PathBuf> = Vec::new();
    {
        let prog: &mut Xdp = program(&mut ebpf, program_names::XDP)?;
        for iface in &opts.client_ifaces {
            let a = attach_xdp(prog, iface, opts.xdp_mode)?;
            if a.hook != "none" {
                wanted.push(pins::link_path(&a.hook, iface));
            }
            attachments.push(a);
        }
    }
    let prog: &mut SchedClassifier = program(&mut ebpf, program_names::TC)?;
    for iface in opts.client_ifaces.iter().chain(&opts.backend_ifaces) {
        attachments.push(attach_tc(prog, iface)?);
        wanted.push(pins::link_path("tc", iface));
    }
    remove_stale_links(&wanted);
    Ok(Loaded { ebpf, attachments, adopted_maps, clock, kernel_log: Some(kernel_log) })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    T: 'a + LoadProgram,
{
    let p = ebpf.program_mut(name).ok_or(LoadError::Program { name, reason: "not in the object".into() })?;
    let p: &mut T = p.try_into().map_err(|e| LoadError::Program { name, reason: error_chain(&e) })?;
    p.load_program().map_err(|e| LoadError::Program { name, reason: error_chain(&e) })?;
    Ok(p)
}

/// Loading, the same for both program kinds (aya has no common trait for it).
pub trait LoadProgram {
    /// Loads the program into the kernel (verifier) unless it already is.
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError>;
}

impl LoadProgram for Xdp {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError> {
        if self.fd().is_ok() { Ok(()) } else { retry_interrupted(|| self.load()) }
    }
}

impl LoadProgram for SchedClassifier {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError> {
        if self.fd().is_ok() { Ok(()) } else { retry_interrupted(|| self.load()) }
    }
}

/// Runs a program load, again (up to 5 times) while it fails with EAGAIN. The verifier gives up
/// with EAGAIN when a signal is pending for the loading thread, which says nothing about the
/// program; libbpf retries the same way.
pub fn retry_interrupted(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < 5 =>
            {
                tracing::debug!(attempt, "the verifier was interrupted by a signal; loading again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The two program kinds this loader attaches, seen through their links: adopting a pinned link
/// (swapping the program behind it in one step) and pinning a new one work the same for both.
trait Linked {
    type Link: TryFrom<FdLink, Error = aya::programs::links::LinkError>;
    type Id;
    fn attach_to_link(&mut self, link: Self::Link) -> Result<Self::Id, aya::programs::ProgramError>;
    fn take_link(&mut self, id: Self::Id) -> Result<Self::Link, aya::programs::ProgramError>;
    fn into_fd(link: Self::Link) -> Result<FdLink, aya::programs::links::LinkError>;
}

macro_rules! linked {
    ($prog:ty, $link:ty, $id:ty) => {
        impl Linked for $prog {
            type Link = $link;
            type Id = $id;
            fn attach_to_link(&mut self, link: $link) -> Result<$id, aya::programs::ProgramError> {
                <$prog>::attach_to_link(self, link)
            }
            fn take_link(&mut self, id: $id) -> Result<$link, aya::programs::ProgramError> {
                <$prog>::take_link(self, id)
            }
            fn into_fd(link: $link) -> Result<FdLink, aya::programs::links::LinkError> {
                FdLink::try_from(link)
            }
        }
    };
}

linked!(Xdp, XdpLink, aya::programs::xdp::XdpLinkId);
linked!(SchedClassifier, SchedClassifierLink, aya::programs::tc::SchedClassifierLinkId);

/// Swaps `prog` into the link an earlier agent pinned at `path`, if there is one: one atomic
/// link update, so the interface is never without a program. Returns whether it adopted.
fn adopt<P: Linked>(prog: &mut P, path: &Path) -> Result<bool, String> {
    let Ok(pinned) = PinnedLink::from_pin(path) else { return Ok(false) };
    let link = P::Link::try_from(FdLink::from(pinned)).map_err(|e| error_chain(&e))?;
    let id = prog.attach_to_link(link).map_err(|e| error_chain(&e))?;
    let link = prog.take_link(id).map_err(|e| error_chain(&e))?;
    // The pin holds the link; this process's descriptor can go.
    drop(P::into_fd(link).map_err(|e| error_chain(&e))?);
    Ok(true)
}

/// Pins the link of a fresh attachment at `path`; `no_link` says what a missing bpf_link means.
fn pin_new<P: Linked>(prog: &mut P, id: P::Id, path: &Path, no_link: &str) -> Result<(), String> {
    let link = prog.take_link(id).map_err(|e| error_chain(&e))?;
    let fd = P::into_fd(link).map_err(|e| format!("{no_link} ({})", error_chain(&e)))?;
    fd.pin(path).map_err(|e| format!("pinning {}: {}", path.display(), error_chain(&e)))?;
    Ok(())
}

fn attach_xdp(prog: &mut Xdp, iface: &str, mode: XdpMode) -> Result<Attachment, LoadError> {
    let tc_alone =
        |note: &str| Attachment { iface: iface.into(), hook: "none".into(), adopted: false, note: Some(note.into()) };
    if mode == XdpMode::Off {
        return Ok(tc_alone("--xdp-mode off: the TC program steers alone"));
    }
    // On veth, frames come from a local stack as socket buffers with partial checksums and GSO:
    // XDP would hand most of them to TC anyway, after the driver converted each one for it, which
    // costs more than it saves (measured: new connections per second ~15 % lower with XDP).
    if mode == XdpMode::Auto && netinfo::driver(iface).as_deref() == Some("veth") {
        return Ok(tc_alone(
            "veth: the TC program steers alone (XDP would only add a conversion); --xdp-mode native forces XDP",
        ));
    }
    let (try_mode, hook) = match mode {
        XdpMode::Auto | XdpMode::Native => (aya::programs::XdpMode::Driver, "xdp-native"),
        XdpMode::Generic => (aya::programs::XdpMode::Skb, "xdp-generic"),
        XdpMode::Off => return Ok(tc_alone("--xdp-mode off: the TC program steers alone")),
    };
    let err = |reason: String| LoadError::Attach { kind: "xdp", iface: iface.to_string(), reason };
    // The pin's name says the mode its link was attached in. A link an earlier agent attached in
    // another mode (or before pins named it) is detached first, since the kernel allows one XDP
    // mode per device; meanwhile the TC program, attached on the same interface, steers alone.
    let mut replaced = false;
    for other in ["xdp", "xdp-native", "xdp-generic"].into_iter().filter(|k| *k != hook) {
        let p = pins::link_path(other, iface);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| err(format!("removing {}: {e}", p.display())))?;
            tracing::info!(
                iface,
                was = other,
                now = hook,
                "replaced the XDP link an earlier agent attached in another mode"
            );
            replaced = true;
        }
    }
    let path = pins::link_path(hook, iface);
    if adopt(prog, &path).map_err(err)? {
        return Ok(Attachment { iface: iface.into(), hook: hook.into(), adopted: true, note: None });
    }
    // The kernel releases an unpinned link a moment later; until then the device still has the
    // old program and refuses another mode with EEXIST.
    let mut attached = prog.attach(iface, try_mode);
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while replaced
        && std::time::Instant::now() < give_up
        && attached.as_ref().is_err_and(|e| error_chain(e).contains("File exists"))
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        attached = prog.attach(iface, try_mode);
    }
    let id = match attached {
        Ok(id) => id,
        Err(e) if mode == XdpMode::Auto => {
            tracing::info!(iface, error = %error_chain(&e), "native XDP unavailable; TC alone steers here");
            return Ok(tc_alone("native XDP is not supported here; the TC program steers alone"));
        }
        Err(e) => return Err(err(error_chain(&e))),
    };
    pin_new(prog, id, &path, "the kernel gave no bpf_link; it is too old to pin XDP links").map_err(err)?;
    Ok(Attachment { iface: iface.into(), hook: hook.into(), adopted: false, note: None })
}

fn attach_tc(prog: &mut SchedClassifier, iface: &str) -> Result<Attachment, LoadError> {
    let path = pins::link_path("tc", iface);
    let err = |reason: String| LoadError::Attach { kind: "tc", iface: iface.to_string(), reason };
    if adopt(prog, &path).map_err(err)? {
        return Ok(Attachment { iface: iface.into(), hook: "tc".into(), adopted: true, note: None });
    }
    let id = prog.attach(iface, TcAttachType::Ingress).map_err(|e| err(error_chain(&e)))?;
    pin_new(prog, id, &path, "no TCX link; a kernel of 6.6 or later is needed").map_err(err)?;
    Ok(Attachment { iface: iface.into(), hook: "tc".into(), adopted: false, note: None })
}

/// Unpins links of an earlier agent on interfaces this one does not use, which detaches them.
fn remove_stale_links(wanted: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(pins::link_dir()) else { return };
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if !wanted.contains(&p) {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(pin = %p.display(), "removed a link this configuration no longer uses"),
                Err(e) => tracing::warn!(pin = %p.display(), error = %e, "cannot remove a stale link"),
            }
        }
    }
}
