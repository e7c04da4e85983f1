//! `--mode auto` probes the embedded eBPF program on the interface and reports what it found.
//! As root (CI) the probe must succeed on loopback; without root it must fail with a reason.

use edge_core::balance::Plane;

use crate::root::is_root;
use crate::support::*;

#[tokio::test]
async fn auto_mode_probes_ebpf_and_reports_the_result() {
    let b = TestBackend::start("a").await;
    let spec = b.spec();
    let agent = Args::http().backends(&[&spec]).with(&["--mode", "auto", "--iface", "lo"]).start().await;
    let probe = agent.dataplane.ebpf_probe.clone().expect("auto mode runs the probe");
    assert_eq!(agent.dataplane.mode, Plane::Userspace);
    if is_root() {
        assert!(probe.capable, "root can load and attach XDP on lo: {}", probe.reason);
        assert!(probe.reason.contains("attached it to lo"), "{}", probe.reason);
    } else {
        eprintln!(
            "not root: expecting the eBPF probe to fail with a reason (privileged success path runs in CI as root)"
        );
        assert!(!probe.capable);
        assert!(probe.reason.contains("failed") || probe.reason.contains("refused"), "{}", probe.reason);
    }
    let (_, body) = admin(agent.admin_addr.unwrap(), "GET", "/admin/state", None, None).await;
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["dataplane"]["requested"], "auto");
    assert_eq!(state["dataplane"]["ebpf_probe"]["capable"], probe.capable);
    let capable = if probe.capable { 1 } else { 0 };
    assert!(agent.metrics.render().contains(&format!("edge_ebpf_capable {capable}")));
    agent.shutdown().await;
}

#[tokio::test]
async fn auto_mode_reports_a_missing_interface() {
    let b = TestBackend::start("a").await;
    let spec = b.spec();
    let agent = Args::http().backends(&[&spec]).with(&["--mode", "auto", "--iface", "edge-nosuch0"]).start().await;
    let probe = agent.dataplane.ebpf_probe.clone().unwrap();
    assert!(!probe.capable);
    assert!(agent.dataplane.reason.contains("not available"), "{}", agent.dataplane.reason);
    agent.shutdown().await;
}
