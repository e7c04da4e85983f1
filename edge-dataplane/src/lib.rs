//! edge-dataplane: the agent side of the eBPF data plane.
//!
//! `start` checks the host and loads the embedded object (`object`, built from `edge-ebpf` by
//! `build.rs`) with its maps pinned or adopted (`pins`, `loader`), calibrates the data path's clock
//! (`clock`) and attaches the programs; `probe` is the `--mode auto` check without a VIP. `actor`
//! is the only writer of the maps: it follows each service's backends and strategy (`weights`) and
//! sweeps conntrack (`sweep`), through the [`KernelMaps`] trait (`kmaps`), whose only product
//! implementation is [`PinnedMaps`] (`pinned`, aya); tests use an in-memory one. `stats` holds what
//! the actor counts for the metrics exporter; `PinnedMaps` also gives read-only rows for
//! `edge-agent maps` and the kernel counters.
//!
//! Module dependencies point one way: `pins`, `object`, `netinfo`, `clock`, `weights`, `stats`
//! and `kmaps` are leaves; `pinned` and `sweep` use `kmaps`; `monitor` (the kernel monitor's
//! maps) uses `pinned`; `kernel_log` (the program's aya-log records) is a leaf too; `loader` uses the leaves; `probe` and `start` use `loader`; `actor` uses
//! `kmaps`, `sweep`, `weights` and `stats`.

mod actor;
mod clock;
mod kernel_log;
mod kmaps;
mod links;
mod loader;
#[cfg(test)]
mod mem;
mod monitor;
mod netinfo;
pub mod object;
mod pinned;
pub mod pins;
mod probe;
mod start;
mod stats;
mod sweep;
mod synwatch;
mod weights;

pub use actor::{Actor, ActorConfig, SWEEP_INTERVAL, ServiceInput};
pub use clock::{Calibration, ClockError, calibrate, monotonic_ns};
pub use kernel_log::{KernelLog, KernelLogError};
pub use kmaps::{KernelMaps, MapError};
pub use links::Links;
pub use loader::{Attachment, LoadError, Loaded, LoadedLinks, XdpMode, retry_interrupted};
pub use monitor::{KernelMonitor, SwitchError};
pub use netinfo::{NetError, local_addrs};
pub use pinned::{BackendRow, FlowRow, OpenError, PinnedMaps, ServiceRow};
pub use probe::{ProbeReport, probe};
pub use start::{StartError, StartOptions, start};
pub use stats::{DataplaneStats, Expiry, FlowCount, Unreachable};
pub use sweep::SweepConfig;
pub use weights::LC_LEVELS;
