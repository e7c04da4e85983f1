//! Terminal output for the demo: a progress bar and a live per-backend table, fitted to the
//! terminal and redrawn in place by `crate::term`, or plain lines when output goes to a file or
//! pipe.

use std::io::Write;

use crossterm::style::Color;

use crate::term::{self, Line, Segment, plain};

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

/// A state's colour: text says the state, the colour only helps (blue-orange safe for the common
/// colour blindnesses: healthy blue, out orange or red).
fn color(state: &str) -> Color {
    match state {
        "healthy" => Color::Blue,
        "unhealthy" | "ejected" => Color::Red,
        "draining" | "removed" | "probation" | "slow_start" => Color::DarkYellow,
        _ => Color::Grey,
    }
}

impl Frame {
    /// The frame's lines for a terminal of `cols` x `rows`: the title wrapped, the bar as wide as
    /// fits, the table, and as many of the latest events as the rows leave room for.
    fn lines(&self, cols: u16, rows: u16) -> Vec<Line> {
        let width = usize::from(cols.saturating_sub(1).max(20));
        let mut out: Vec<Line> = term::wrap(&self.title, width).into_iter().map(plain).collect();
        out.push(plain(""));
        let frac = if self.total > 0.0 { self.elapsed / self.total } else { 1.0 };
        let stats = format!(
            " {:>3.0}%  {:>5.1}s / {:.1}s  {:>6.0} req/s  {:>7} done  {} errors",
            frac * 100.0,
            self.elapsed,
            self.total,
            self.rate,
            self.done,
            self.errors
        );
        let bar_width = width.saturating_sub(stats.len() + 2).clamp(10, 40);
        out.push(plain(format!("{}{stats}", bar(frac, bar_width))));
        out.push(plain(""));
        out.push(plain(format!(
            "  {:<11} {:<21} {:<10} {:>9} {:>7} {:>7}",
            "backend", "address", "state", "requests", "share", "active"
        )));
        let total: u64 = self.rows.iter().map(|r| r.requests).sum::<u64>().max(1);
        for r in &self.rows {
            out.push(vec![
                Segment { text: format!("  {:<11} {:<21} ", r.name, r.addr), color: None },
                Segment { text: format!("{:<10}", r.state), color: Some(color(&r.state)) },
                Segment {
                    text: format!(
                        " {:>9} {:>6.1}% {:>7}",
                        r.requests,
                        r.requests as f64 * 100.0 / total as f64,
                        r.active
                    ),
                    color: None,
                },
            ]);
        }
        out.push(plain(""));
        out.push(plain("  events (latest last):"));
        let room = usize::from(rows.saturating_sub(1)).saturating_sub(out.len()).max(1);
        let skip = self.events.len().saturating_sub(room);
        for e in &self.events[skip..] {
            out.push(plain(format!("    {e}")));
        }
        out.iter().map(|l| term::fit(l, width)).collect()
    }
}

/// Draws frames: in place on a terminal, as appended lines otherwise.
#[derive(Debug)]
pub struct Screen {
    live: bool,
    screen: term::Screen,
    drawn: usize,
    printed_events: usize,
}

impl Screen {
    /// `live` redraws in place (a terminal); otherwise progress is printed as plain lines.
    pub fn new(live: bool) -> Self {
        Self { live, screen: term::Screen::default(), drawn: 0, printed_events: 0 }
    }

    /// Shows a frame.
    pub fn draw(&mut self, f: &Frame) {
        let mut out = std::io::stdout().lock();
        if self.live {
            let (cols, rows) = term::size();
            let _ = self.screen.frame(&mut out, &f.lines(cols, rows), (cols, rows));
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
        let text = |l: &Line| l.iter().map(|s| s.text.as_str()).collect::<String>();
        let lines: Vec<String> = f.lines(100, 40).iter().map(text).collect();
        assert!(lines[2].starts_with("[###################...................]  50%"), "{}", lines[2]);
        assert!(lines.iter().any(|l| l.contains("b1") && l.contains("100.0%")));
        assert!(lines.last().unwrap().contains("killed b1"));
        // A small terminal keeps the latest events and a narrower bar.
        let many = Frame { events: (0..50).map(|i| format!("event {i}")).collect(), ..f };
        let lines: Vec<String> = many.lines(60, 16).iter().map(text).collect();
        assert_eq!(lines.len(), 15, "one row short of the terminal");
        assert!(lines.last().unwrap().contains("event 49") && !lines.iter().any(|l| l.contains("event 30")));
        assert!(lines.iter().all(|l| l.chars().count() < 60), "{lines:#?}");
    }
}
