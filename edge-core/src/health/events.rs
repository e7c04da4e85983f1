//! The event log: a bounded ring of the latest state changes and decisions, newest first, that
//! the monitor keeps and publishes with every snapshot (`GET /admin/events`). The same words go
//! to the logs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use crate::backend::{BackendId, State};

/// How many events each service keeps.
pub const EVENTS_KEPT: usize = 256;

/// One transition or decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: SystemTime,
    /// The backend, or `None` for a decision about the whole service (panic mode).
    pub backend: Option<BackendId>,
    /// The state before (`None` for a new backend or a service decision).
    pub from: Option<State>,
    /// The state after (`None` for a refused decision or a service decision).
    pub to: Option<State>,
    /// Why, with the evidence.
    pub reason: String,
}

/// The ring; cloning the published log is one reference count.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: VecDeque<Event>,
    published: Arc<Vec<Event>>,
    dirty: bool,
}

impl EventLog {
    /// Records an event and logs it with the same words.
    pub fn push(&mut self, backend: Option<&BackendId>, from: Option<State>, to: Option<State>, reason: String) {
        let name = |s: Option<State>| s.map_or("-", State::as_str);
        match backend {
            Some(b) => {
                tracing::info!(backend = %b, from = name(from), to = name(to), reason = %reason, "backend state")
            }
            None => tracing::warn!(reason = %reason, "service decision"),
        }
        if self.ring.len() == EVENTS_KEPT {
            self.ring.pop_back();
        }
        self.ring.push_front(Event { at: SystemTime::now(), backend: backend.cloned(), from, to, reason });
        self.dirty = true;
    }

    /// The events, newest first, as of the last change.
    pub fn snapshot(&mut self) -> Arc<Vec<Event>> {
        if self.dirty {
            self.published = Arc::new(self.ring.iter().cloned().collect());
            self.dirty = false;
        }
        self.published.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_newest_first() {
        let mut log = EventLog::default();
        let id: BackendId = "10.0.0.1:80".into();
        for i in 0..EVENTS_KEPT + 10 {
            log.push(Some(&id), Some(State::Healthy), Some(State::Ejected), format!("e{i}"));
        }
        let s = log.snapshot();
        assert_eq!(s.len(), EVENTS_KEPT);
        assert_eq!(s[0].reason, format!("e{}", EVENTS_KEPT + 9));
        assert_eq!(s.last().unwrap().reason, "e10");
        assert!(Arc::ptr_eq(&s, &log.snapshot()), "unchanged logs are not copied again");
    }
}
