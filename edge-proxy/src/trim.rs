//! Gives memory back to the system after many client connections closed.
//!
//! glibc's malloc keeps freed chunks in its per-thread arenas: after 5,000 idle connections closed,
//! the agent stayed at its peak (118 MB) and crept higher with every such round. `malloc_trim(0)`
//! returns the free pages of every arena (with `madvise`), so once the open connections fell well
//! below their high-water mark the agent calls it. It runs on the control-plane thread, once a
//! second at most, and only after a drop of [`TRIM_AFTER`] connections, so a steady load never
//! pays for it. (mimalloc was measured as the alternative: it started at 17.5 MB instead of 7 MB
//! and took 33 KiB per idle connection instead of 23; see docs/benchmarks.md.)

use std::sync::Arc;
use std::time::Duration;

use edge_core::util::stopped;
use tokio::sync::watch;

use crate::accept::Loads;

/// Connections that must have closed since the high-water mark before memory is trimmed.
pub const TRIM_AFTER: usize = 512;

/// Decides when to trim: after the open count fell [`TRIM_AFTER`] below its high-water mark.
#[derive(Debug, Default)]
pub struct Trimmer {
    high: usize,
}

impl Trimmer {
    /// Looks at the open count; true when memory should be trimmed now.
    pub fn due(&mut self, open: usize) -> bool {
        if open >= self.high {
            self.high = open;
            return false;
        }
        if self.high - open < TRIM_AFTER {
            return false;
        }
        self.high = open;
        true
    }
}

/// Returns free heap pages to the system (glibc only; other C libraries do it themselves or not
/// at all).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Checks `loads` once a second and trims when due, until `shutdown` turns true.
pub async fn trim_after_closes(loads: Arc<Loads>, mut shutdown: watch::Receiver<bool>) {
    let mut t = Trimmer::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if t.due(loads.total()) {
            trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_large_drop_not_under_steady_load() {
        let mut t = Trimmer::default();
        assert!(!t.due(5000));
        assert!(!t.due(4800), "a small drop is churn");
        assert!(t.due(10), "a drop of thousands trims");
        assert!(!t.due(10), "once");
        assert!(!t.due(400));
        assert!(!t.due(0), "a drop smaller than TRIM_AFTER from the new mark");
    }
}
