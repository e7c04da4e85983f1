//! The CPU time a peer spends, from `/proc`: user plus system time of a process and its children
//! (NGINX's workers are children of its master), so that a run can report each peer's cost per
//! request beside its rate. On these 2-core hosts the load generator and the backends share the
//! CPUs with the peer, so a rate can be capped by the client (a TLS handshake costs wrk more than
//! it costs the server); the CPU a peer spent per request is the figure the client cannot cap.

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`, 100 on every Linux architecture edge runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time used so far by `pid` and its direct children, in microseconds; `None`
/// when the process is gone.
pub(crate) fn used_us(pid: u32) -> Option<f64> {
    let own = ticks(pid)?;
    let children: u64 = children(pid).into_iter().filter_map(ticks).sum();
    Some((own + children) as f64 * 1e6 / TICKS_PER_SECOND)
}

/// utime + stime of one process (all its threads), in ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ticks(&stat)
}

/// The command name is in parentheses and may hold spaces and parentheses itself, so the fields
/// are counted from the last `)`: state is field 3, utime 14, stime 15.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The direct children of `pid`, from every thread's `children` list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_lines_with_awkward_names() {
        let line = "4242 (nginx: worker (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 1 0 1234 0 0";
        assert_eq!(parse_ticks(line), Some(325));
        assert_eq!(parse_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let used = used_us(std::process::id()).expect("this process is running");
        assert!(used >= 10_000.0, "50 ms of spinning shows as at least 10 ms: {used}");
        assert_eq!(used_us(u32::MAX), None);
    }
}
