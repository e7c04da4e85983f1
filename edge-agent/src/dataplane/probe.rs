//! The `--mode auto` probe: can this host load the embedded XDP program and attach it?
//!
//! It loads the object, attaches the XDP program to the interface (kernel's choice of native or
//! generic mode), and detaches it again. Each step's failure is reported with the kernel's error,
//! because "no CAP_BPF", "no BTF" and "interface busy" need different fixes.

use aya::Ebpf;
use aya::programs::{Xdp, XdpMode};

use super::ProbeReport;
use super::object::{EBPF_OBJECT, XDP_PROGRAM};

/// Runs the probe on `iface`.
pub fn probe(iface: &str) -> ProbeReport {
    let report = |capable: bool, reason: String| ProbeReport { capable, reason, iface: iface.to_string() };
    let mut ebpf = match Ebpf::load(EBPF_OBJECT) {
        Ok(e) => e,
        Err(e) => {
            return report(
                false,
                format!("loading the eBPF object failed: {e} (needs CAP_BPF and CAP_NET_ADMIN, or root)"),
            );
        }
    };
    let Some(prog) = ebpf.program_mut(XDP_PROGRAM) else {
        return report(false, format!("the embedded object has no program {XDP_PROGRAM}"));
    };
    let xdp: &mut Xdp = match prog.try_into() {
        Ok(x) => x,
        Err(e) => return report(false, format!("{XDP_PROGRAM} is not an XDP program: {e}")),
    };
    if let Err(e) = xdp.load() {
        return report(false, format!("the kernel refused the XDP program: {e}"));
    }
    let link = match xdp.attach(iface, XdpMode::Default) {
        Ok(l) => l,
        Err(e) => return report(false, format!("attaching XDP to {iface} failed: {e}")),
    };
    if let Err(e) = xdp.detach(link) {
        return report(false, format!("detaching XDP from {iface} failed: {e}"));
    }
    report(true, format!("loaded the XDP program and attached it to {iface}, then detached it"))
}
