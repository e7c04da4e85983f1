//! The `--mode auto` probe (without `--vip`): can this host load the embedded XDP program and
//! attach it?
//!
//! It loads the object with its maps pinned in a private, temporary bpffs folder (so nothing of a
//! running agent is touched), attaches the XDP program to the interface (kernel's choice of native
//! or generic mode), detaches it and removes the folder. Each step's failure is reported with the
//! kernel's error, because "no CAP_BPF", "no BTF" and "interface busy" need different fixes.

use aya::EbpfLoader;
use aya::programs::{Xdp, XdpMode};
use edge_common::program_names::XDP;
use edge_core::util::error_chain;
use serde::Serialize;

use crate::object::EBPF_OBJECT;
use crate::pins;

/// The eBPF probe's verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeReport {
    /// Whether the program loaded and attached.
    pub capable: bool,
    /// Why, in words (the failing step and the kernel's error, or what succeeded).
    pub reason: String,
    /// The interface probed.
    pub iface: String,
}

/// Runs the probe on `iface`.
pub fn probe(iface: &str) -> ProbeReport {
    let report = |capable: bool, reason: String| ProbeReport { capable, reason, iface: iface.to_string() };
    if let Err(e) = pins::prepare() {
        return report(false, e.to_string());
    }
    // The folder name is unique per probe, not only per process: two probes in one process (tests
    // run in parallel) must not remove each other's pins halfway through a load.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::path::Path::new("/sys/fs/bpf").join(format!("edge-probe-{}-{seq}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return report(false, format!("cannot create {}: {e} (needs root)", dir.display()));
    }
    let result = attach_detach(iface, &dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
    match result {
        Ok(()) => report(true, format!("loaded the XDP program and attached it to {iface}, then detached it")),
        Err(reason) => report(false, reason),
    }
}

fn attach_detach(iface: &str, dir: &std::path::Path) -> Result<(), String> {
    let mut ebpf = EbpfLoader::new().default_map_pin_directory(dir).load(EBPF_OBJECT).map_err(|e| {
        format!("loading the eBPF object failed: {} (needs CAP_BPF and CAP_NET_ADMIN, or root)", error_chain(&e))
    })?;
    let prog = ebpf.program_mut(XDP).ok_or_else(|| format!("the embedded object has no program {XDP}"))?;
    let xdp: &mut Xdp = prog.try_into().map_err(|e| format!("{XDP} is not an XDP program: {e}"))?;
    crate::loader::retry_interrupted(|| xdp.load())
        .map_err(|e| format!("the kernel refused the XDP program: {}", error_chain(&e)))?;
    let link = xdp.attach(iface, XdpMode::Default).map_err(|e| format!("attaching XDP to {iface} failed: {e}"))?;
    xdp.detach(link).map_err(|e| format!("detaching XDP from {iface} failed: {e}"))
}
