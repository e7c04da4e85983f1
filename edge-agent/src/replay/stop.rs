//! Stopping a process the replay started: SIGTERM, a bounded wait, then SIGKILL.
//!
//! SIGTERM first, because the process may have children of its own: NGINX's master stops its
//! workers when terminated, but a master killed outright leaves them running, reparented to init
//! and still listening (a replay peer's workers outlived the test suite that started them).

use std::process::Child;
use std::time::{Duration, Instant};

/// Asks `child` to stop, waits up to `limit` for it to exit, then kills it.
pub(crate) fn stop(child: &mut Child, limit: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's, not yet
        // reaped, so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_process_that_honours_sigterm_exits_by_it_and_one_that_does_not_is_killed() {
        let mut polite = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let t0 = Instant::now();
        stop(&mut polite, Duration::from_secs(5));
        assert!(t0.elapsed() < Duration::from_secs(2), "sleep exits on SIGTERM at once");
        // Short sleeps, so that nothing of it outlives the test once the shell is killed.
        let script = "trap '' TERM; while :; do sleep 0.05; done";
        let mut stubborn = Command::new("sh").args(["-c", script]).spawn().expect("sh runs");
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        stop(&mut stubborn, Duration::from_millis(300));
        assert!(t0.elapsed() >= Duration::from_millis(300), "it waited the limit before the kill");
        assert!(stubborn.try_wait().expect("reaped").is_some());
    }
}
