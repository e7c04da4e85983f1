//! Terminal output for the demo: a progress bar and a live per-backend table, redrawn in place on
//! a terminal, or plain lines when output goes to a file or pipe.
//!
//! A dozen lines of ANSI escapes do this; a progress-bar crate would add a dependency tree for a
//! single screen.

use std::io::Write;

/// One row of the backend table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Backend name.
    pub name: String,
    /// Address.
    pub addr: String,
    /// State as the agent sees it.
    pub state: String,
    /// Responses received from it.
    pub requests: u64,
    /// In-flight requests.
    pub active: i64,
}

/// Everything one frame shows.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Header line.
    pub title: String,
    /// Seconds elapsed.
    pub elapsed: f64,
    /// Seconds in total.
    pub total: f64,
    /// Requests per second over the last interval.
    pub rate: f64,
    /// Responses so far.
    pub done: u64,
    /// Failed requests so far.
    pub errors: u64,
    /// Table rows.
    pub rows: Vec<Row>,
    /// Event lines so far.
    pub events: Vec<String>,
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn color(state: &str) -> &'static str {
    match state {
        "healthy" => "\x1b[32m",
        "unhealthy" => "\x1b[31m",
        "draining" => "\x1b[33m",
        _ => "\x1b[90m",
    }
}

impl Frame {
    fn lines(&self, ansi: bool) -> Vec<String> {
        let mut out = vec![self.title.clone(), String::new()];
        let frac = if self.total > 0.0 { self.elapsed / self.total } else { 1.0 };
        out.push(format!(
            "{} {:>3.0}%  {:>5.1}s / {:.1}s  {:>6.0} req/s  {:>7} done  {} errors",
            bar(frac, 32),
            frac * 100.0,
            self.elapsed,
            self.total,
            self.rate,
            self.done,
            self.errors
        ));
        out.push(String::new());
        out.push(format!(
            "  {:<11} {:<21} {:<10} {:>9} {:>7} {:>7}",
            "backend", "address", "state", "requests", "share", "active"
        ));
        let total: u64 = self.rows.iter().map(|r| r.requests).sum::<u64>().max(1);
        for r in &self.rows {
            let state =
                if ansi { format!("{}{:<10}\x1b[0m", color(&r.state), r.state) } else { format!("{:<10}", r.state) };
            out.push(format!(
                "  {:<11} {:<21} {} {:>9} {:>6.1}% {:>7}",
                r.name,
                r.addr,
                state,
                r.requests,
                r.requests as f64 * 100.0 / total as f64,
                r.active
            ));
        }
        out.push(String::new());
        out.push("  events:".into());
        for e in &self.events {
            out.push(format!("    {e}"));
        }
        out
    }
}

/// Draws frames: in place on a terminal, as appended lines otherwise.
#[derive(Debug)]
pub struct Screen {
    live: bool,
    drawn: usize,
    printed_events: usize,
}

impl Screen {
    /// `live` redraws in place (a terminal); otherwise progress is printed as plain lines.
    pub fn new(live: bool) -> Self {
        Self { live, drawn: 0, printed_events: 0 }
    }

    /// Shows a frame.
    pub fn draw(&mut self, f: &Frame) {
        let mut out = std::io::stdout().lock();
        if self.live {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            let lines = f.lines(true);
            for l in &lines {
                let _ = writeln!(out, "\x1b[2K{l}");
            }
            self.drawn = lines.len();
        } else {
            if self.drawn == 0 {
                let _ = writeln!(out, "{}", f.title);
                self.drawn = 1;
            }
            for e in &f.events[self.printed_events..] {
                let _ = writeln!(out, "  event: {e}");
            }
            self.printed_events = f.events.len();
            let states: Vec<String> = f.rows.iter().map(|r| format!("{} {} {}", r.name, r.state, r.requests)).collect();
            let _ = writeln!(
                out,
                "  {:>5.1}s  {:>6.0} req/s  {} done  {} errors  | {}",
                f.elapsed,
                f.rate,
                f.done,
                f.errors,
                states.join(" | ")
            );
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_has_bar_table_and_events() {
        let f = Frame {
            title: "t".into(),
            elapsed: 5.0,
            total: 10.0,
            rate: 100.0,
            done: 500,
            errors: 0,
            rows: vec![Row {
                name: "b1".into(),
                addr: "127.0.0.1:1".into(),
                state: "healthy".into(),
                requests: 500,
                active: 0,
            }],
            events: vec!["killed b1".into()],
        };
        let lines = f.lines(false);
        assert!(lines[2].starts_with("[################................]  50%"), "{}", lines[2]);
        assert!(lines.iter().any(|l| l.contains("b1") && l.contains("100.0%")));
        assert!(lines.last().unwrap().contains("killed b1"));
    }
}
