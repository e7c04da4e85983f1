//! The kernel monitor's two pinned maps, opened with aya: the switches the data path reads on a
//! drop or a new flow, and the ring buffer it reports to. One reader (the agent) drains the ring.

use aya::maps::{Array, MapData, RingBuf};
use edge_common::{MONITOR_MAX_RATE, MonitorEvent, MonitorSettings, map_names};

use crate::pinned::{OpenError, open};

/// The monitor's maps.
pub struct KernelMonitor {
    settings: Array<MapData, MonitorSettings>,
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for KernelMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMonitor").finish_non_exhaustive()
    }
}

/// The switches could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot switch the kernel monitor: {0}")]
pub struct SwitchError(String);

impl KernelMonitor {
    /// Opens the pinned maps (an agent in eBPF mode created them).
    pub fn open() -> Result<Self, OpenError> {
        Ok(Self { settings: open(map_names::MONITOR)?, ring: open(map_names::MONITOR_RING)? })
    }

    /// Reports drops and, with `flows`, new flows, at most `rate` a second per CPU; both false is
    /// off.
    pub fn set(&mut self, drops: bool, flows: bool, rate: u32) -> Result<(), SwitchError> {
        let flags =
            if drops { edge_common::MONITOR_DROPS } else { 0 } | if flows { edge_common::MONITOR_FLOWS } else { 0 };
        let value = MonitorSettings { flags, rate: rate.min(MONITOR_MAX_RATE) };
        self.settings.set(0, value, 0).map_err(|e| SwitchError(e.to_string()))
    }

    /// Takes every event waiting in the ring buffer, oldest first, up to `max`.
    pub fn drain(&mut self, max: usize) -> Vec<MonitorEvent> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.ring.next() else { break };
            if item.len() == std::mem::size_of::<MonitorEvent>() {
                // SAFETY: the length matches and the type is plain data.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<MonitorEvent>()) });
            }
        }
        out
    }
}
