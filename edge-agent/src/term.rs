//! Live terminal views (the demo's table, the replay's progress line): frames that fit the
//! terminal and are redrawn in place, with crossterm for the size, the cursor and the colours.
//!
//! A frame is a list of lines, each a list of segments with an optional colour. Every line is cut
//! to the terminal's width before it is written, and a frame never has more lines than the
//! terminal has rows, so the cursor always goes back up exactly as many rows as were drawn: a
//! line that wrapped would take more rows than that and leave the frame scrolling instead.

use std::io::Write;

use crossterm::cursor::{MoveToColumn, MoveUp};
use crossterm::style::{Color, Print, ResetColor, SetForegroundColor};
use crossterm::terminal::{Clear, ClearType};
use crossterm::{QueueableCommand, terminal};

/// A piece of a line, optionally coloured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The text (one column per char).
    pub text: String,
    /// Its colour.
    pub color: Option<Color>,
}

/// One line of a frame.
pub type Line = Vec<Segment>;

/// A plain line.
pub fn plain(text: impl Into<String>) -> Line {
    vec![Segment { text: text.into(), color: None }]
}

/// Cuts a line to `width` columns; control characters (a newline would start another row) become
/// spaces.
pub fn fit(line: &Line, width: usize) -> Line {
    let mut left = width;
    let mut out = Vec::new();
    for s in line {
        if left == 0 {
            break;
        }
        let text: String = s.text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(left).collect();
        left -= text.chars().count();
        out.push(Segment { text, color: s.color });
    }
    out
}

/// Breaks `text` into lines of at most `width` columns at its newlines and spaces (a word longer
/// than that is cut).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for paragraph in text.lines() {
        let mut cur = String::new();
        for word in paragraph.split(' ') {
            let n = cur.chars().count();
            if n > 0 && n + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        out.push(cur);
    }
    out.into_iter().map(|l| l.chars().take(width).collect()).collect()
}

/// The terminal's size (columns, rows), or 80 x 24 when it cannot be read.
pub fn size() -> (u16, u16) {
    terminal::size().unwrap_or((80, 24))
}

/// Redraws frames in place.
#[derive(Debug, Default)]
pub struct Screen {
    drawn: u16,
}

impl Screen {
    /// Draws `lines` over the previous frame, fitting a terminal of `cols` x `rows`.
    pub fn frame(&mut self, out: &mut impl Write, lines: &[Line], (cols, rows): (u16, u16)) -> std::io::Result<()> {
        // One column short of the width: a line that fills it exactly wraps on some terminals.
        let width = usize::from(cols.saturating_sub(1).max(1));
        let height = usize::from(rows.saturating_sub(1).max(1));
        if self.drawn > 0 {
            out.queue(MoveUp(self.drawn))?;
        }
        out.queue(MoveToColumn(0))?.queue(Clear(ClearType::FromCursorDown))?;
        let shown = &lines[..lines.len().min(height)];
        for line in shown {
            for s in fit(line, width) {
                match s.color {
                    Some(c) => out.queue(SetForegroundColor(c))?.queue(Print(s.text))?.queue(ResetColor)?,
                    None => out.queue(Print(s.text))?,
                };
            }
            out.queue(Print("\n"))?;
        }
        self.drawn = u16::try_from(shown.len()).unwrap_or(u16::MAX);
        out.flush()
    }

    /// Draws one status line over the previous one (the cursor stays on it).
    pub fn status(&mut self, out: &mut impl Write, text: &str, cols: u16) -> std::io::Result<()> {
        let width = usize::from(cols.saturating_sub(1).max(1));
        let text: String = text.chars().take(width).collect();
        out.queue(MoveToColumn(0))?.queue(Clear(ClearType::CurrentLine))?.queue(Print(text))?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_and_wrapping() {
        let line =
            vec![Segment { text: "abc".into(), color: None }, Segment { text: "defg".into(), color: Some(Color::Red) }];
        assert_eq!(fit(&line, 5).iter().map(|s| s.text.as_str()).collect::<String>(), "abcde");
        assert_eq!(fit(&line, 2).len(), 1);
        assert_eq!(wrap("one two three four", 9), ["one two", "three", "four"]);
        assert_eq!(wrap("abcdefghijk", 4), ["abcd"]);
        assert_eq!(wrap("one\ntwo three", 20), ["one", "two three"], "newlines start lines");
        assert_eq!(fit(&plain("a\nb"), 10)[0].text, "a b", "no newline reaches the terminal");
    }

    /// Draws the same tall, wide frame three times into a terminal emulator of `cols` x `rows`
    /// and returns its screen.
    fn emulate(cols: u16, rows: u16, lines: &[Line]) -> vt100::Parser {
        let mut parser = vt100::Parser::new(rows, cols, 0);
        let mut screen = Screen::default();
        // Something printed before, as a shell prompt would be.
        parser.process(b"$ edge-agent demo\r\n");
        for _ in 0..3 {
            let mut bytes = Vec::new();
            screen.frame(&mut bytes, lines, (cols, rows)).unwrap();
            // A terminal in cooked mode turns "\n" into "\r\n".
            let cooked: Vec<u8> =
                bytes.iter().flat_map(|b| if *b == b'\n' { vec![b'\r', b'\n'] } else { vec![*b] }).collect();
            parser.process(&cooked);
        }
        parser
    }

    #[test]
    fn frames_redraw_in_place_at_every_width() {
        let title = "edge demo: 3 backends behind http://127.0.0.1:41113  strategy round-robin  health every 250ms, rise 2, fall 3\ndata plane: userspace (a long reason that goes on and on past any terminal's width)";
        for cols in [80u16, 160, 250] {
            let mut lines: Vec<Line> = wrap(title, usize::from(cols) - 1).into_iter().map(plain).collect();
            lines.push(plain(format!("[{}] 50%", "#".repeat(300))));
            for b in ["backend-1", "backend-2", "backend-3"] {
                lines.push(vec![
                    Segment { text: format!("  {b:<11} "), color: None },
                    Segment { text: "healthy".into(), color: Some(Color::Green) },
                ]);
            }
            let p = emulate(cols, 24, &lines);
            let text = p.screen().contents();
            assert!(
                text.starts_with("$ edge-agent demo\nedge demo: 3 backends"),
                "{cols} columns: the prompt stays, the frame follows it:\n{text}"
            );
            assert_eq!(text.matches("edge demo:").count(), 1, "{cols} columns: drawn once, not scrolled:\n{text}");
            for b in ["backend-1", "backend-2", "backend-3"] {
                assert_eq!(text.matches(b).count(), 1, "{cols} columns: {b} once:\n{text}");
            }
            assert!(text.lines().all(|l| l.chars().count() < usize::from(cols)), "{cols}: a line fills the width");
        }
    }

    #[test]
    fn a_frame_taller_than_the_terminal_keeps_its_top() {
        let lines: Vec<Line> = (0..60).map(|i| plain(format!("line {i}"))).collect();
        let p = emulate(80, 24, &lines);
        let text = p.screen().contents();
        assert_eq!(text.matches("line 0\n").count(), 1, "{text}");
        assert!(!text.contains("line 40"), "cut to the terminal's height");
    }

    #[test]
    fn the_status_line_stays_one_line() {
        let mut parser = vt100::Parser::new(5, 40, 0);
        let mut s = Screen::default();
        for i in 0..5 {
            let mut bytes = Vec::new();
            s.status(&mut bytes, &format!("crash/round-robin: {i}00/4500 requests, 0 failed, and more text"), 40)
                .unwrap();
            parser.process(&bytes);
        }
        let text = parser.screen().contents();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("crash/round-robin: 400/4500"), "{text}");
    }
}
