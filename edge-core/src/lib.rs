//! edge-core: what edge decides, independent of how traffic moves.
//!
//! The backend model and its live counters (`backend`), where backends come from (`discovery`),
//! whether they are fit for traffic (`health`: probes, hysteresis and the monitor actor that owns
//! every backend's state), and how one is chosen (`balance`: the strategies, Maglev, the balancer
//! actor and what each data plane can do). Both data planes (the userspace proxy and the eBPF
//! program's agent side) and the binary build on this crate; it knows neither an HTTP stack nor
//! eBPF, so each piece is tested here on its own, mostly on paused time.
//!
//! Dependencies between the modules point one way: `util`, `label`, `histogram`, `service` and `tls`
//! (TLS client settings) are leaves,
//! `backend` uses them, `discovery` and `balance` use `backend`, and `health` uses `discovery`.

pub mod backend;
pub mod balance;
pub mod discovery;
pub mod health;
pub mod histogram;
pub mod label;
pub mod service;
pub mod tls;
pub mod util;
