//! The kernel monitor in the agent: switched on for a lease by `POST /admin/monitor` (so a watcher
//! that goes away leaves it on for a few seconds at most), its ring buffer drained every 100 ms
//! while on, and the latest events kept, numbered, for `GET /admin/monitor` (what `edge-agent
//! monitor` and the console read). One task drains; the admin API only switches and reads under a
//! lock that no data path takes.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use edge_common::{Event, MonitorEvent};
use edge_dataplane::KernelMonitor;
use serde::Serialize;
use tokio::sync::watch;

/// Events kept for readers.
pub const KEEP: usize = 1000;
/// The longest lease one call asks for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// How often the ring buffer is drained while the monitor is on.
const TICK: Duration = Duration::from_millis(100);

/// One kernel event, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KernelEvent {
    /// Its number: readers ask for the events after the last one they saw.
    pub seq: u64,
    /// When the agent read it, in seconds since the Unix epoch.
    pub at: f64,
    /// `drop` or `new_flow`.
    pub kind: &'static str,
    /// The event's name (for a drop, its reason: `drop_no_backend`, `drop_nat_ports`, ...).
    pub event: &'static str,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Source `ip:port` (port 0: not read, as in a malformed header).
    pub src: String,
    /// Destination `ip:port`.
    pub dst: String,
    /// The interface it came in on (0: not known).
    pub ifindex: u32,
    /// Events this CPU did not report just before this one (rate limit or a full buffer).
    pub lost: u32,
}

impl KernelEvent {
    fn new(seq: u64, e: &MonitorEvent) -> Self {
        let ev = Event::ALL.get(e.event as usize).copied().unwrap_or(Event::Passed);
        let addr = |a: u32, p: u16| SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a)), u16::from_be(p)).to_string();
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Self {
            seq,
            at: (at * 1e3).round() / 1e3,
            kind: if ev.is_drop() { "drop" } else { "new_flow" },
            event: ev.name(),
            proto: if e.proto == edge_common::PROTO_UDP { "udp" } else { "tcp" },
            src: addr(e.src, e.sport),
            dst: addr(e.dst, e.dport),
            ifindex: e.ifindex,
            lost: e.lost,
        }
    }
}

/// What `POST /admin/monitor` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// Report drops.
    #[serde(default = "yes")]
    pub drops: bool,
    /// Report new flows.
    #[serde(default)]
    pub flows: bool,
    /// Most events a second per CPU.
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// For how long; 0 switches off.
    #[serde(default = "default_seconds")]
    pub seconds: u64,
}

fn yes() -> bool {
    true
}
fn default_rate() -> u32 {
    100
}
fn default_seconds() -> u64 {
    60
}

/// The monitor's state as `GET /admin/monitor` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Whether the kernel reports now.
    pub on: bool,
    /// What it reports.
    pub drops: bool,
    /// ...
    pub flows: bool,
    /// Events a second per CPU.
    pub rate: u32,
    /// Seconds left on the lease.
    pub seconds_left: u64,
    /// The newest event's number (0: none yet).
    pub last_seq: u64,
    /// The events after the `since` asked for, oldest first.
    pub events: Vec<KernelEvent>,
}

/// Why the monitor cannot be switched.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The pinned maps are not there.
    #[error("{0}")]
    Open(#[from] edge_dataplane::OpenError),
    /// The switch write failed.
    #[error("{0}")]
    Switch(#[from] edge_dataplane::SwitchError),
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Default)]
struct State {
    maps: Option<KernelMonitor>,
    switch: Option<Switch>,
    until: Option<Instant>,
    events: VecDeque<KernelEvent>,
    seq: u64,
}

/// The agent's handle on the kernel monitor.
#[derive(Debug, Default)]
pub struct KernelEvents {
    state: Mutex<State>,
}

impl KernelEvents {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Switches the monitor as `s` says, for `s.seconds` (0: off).
    pub fn switch(&self, s: Switch) -> Result<Status, MonitorError> {
        if s.seconds > MAX_LEASE.as_secs() {
            return Err(MonitorError::Invalid(format!("seconds must be at most {}", MAX_LEASE.as_secs())));
        }
        if s.rate == 0 || s.rate > edge_common::MONITOR_MAX_RATE {
            return Err(MonitorError::Invalid(format!("rate must be from 1 to {}", edge_common::MONITOR_MAX_RATE)));
        }
        let mut st = self.lock();
        if st.maps.is_none() {
            st.maps = Some(KernelMonitor::open()?);
        }
        let on = s.seconds > 0 && (s.drops || s.flows);
        if let Some(m) = st.maps.as_mut() {
            m.set(on && s.drops, on && s.flows, s.rate)?;
        }
        st.switch = on.then_some(s);
        st.until = on.then(|| Instant::now() + Duration::from_secs(s.seconds));
        tracing::info!(
            drops = s.drops,
            flows = s.flows,
            rate = s.rate,
            seconds = s.seconds,
            on,
            "kernel monitor switched"
        );
        Ok(status(&st, u64::MAX))
    }

    /// The state and the events after `since`.
    pub fn status(&self, since: u64) -> Status {
        status(&self.lock(), since)
    }

    /// Drains the ring buffer while on and switches off when the lease ends; until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => {}
            }
            let stop = *shutdown.borrow();
            self.tick(stop);
            if stop {
                return;
            }
        }
    }

    fn tick(&self, stop: bool) {
        let mut st = self.lock();
        if st.switch.is_none() {
            return;
        }
        let expired = st.until.is_some_and(|u| Instant::now() >= u);
        let batch = st.maps.as_mut().map(|m| m.drain(KEEP)).unwrap_or_default();
        for e in &batch {
            st.seq += 1;
            let ev = KernelEvent::new(st.seq, e);
            if st.events.len() == KEEP {
                st.events.pop_front();
            }
            st.events.push_back(ev);
        }
        if expired || stop {
            if let Some(m) = st.maps.as_mut()
                && let Err(e) = m.set(false, false, 1)
            {
                tracing::warn!(error = %e, "cannot switch the kernel monitor off");
            }
            st.switch = None;
            st.until = None;
            tracing::info!("kernel monitor off (its lease ended)");
        }
    }
}

fn status(st: &State, since: u64) -> Status {
    let s = st.switch;
    Status {
        on: s.is_some(),
        drops: s.is_some_and(|s| s.drops),
        flows: s.is_some_and(|s| s.flows),
        rate: s.map_or(0, |s| s.rate),
        seconds_left: st.until.map_or(0, |u| u.saturating_duration_since(Instant::now()).as_secs()),
        last_seq: st.seq,
        events: st.events.iter().filter(|e| e.seq > since).cloned().collect(),
    }
}
