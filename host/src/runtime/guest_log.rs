//! One request's guest output as lines: its stdout and stderr (already bounded per
//! stream by the capture, see `output.rs`) and its log records (bounded per request),
//! each line cut at [`MAX_LINE_BYTES`]. The serving layer files them in the entity's log
//! ring; a request that printed nothing costs no allocation.

use super::state::truncate;

/// Longest line kept; the rest of a longer line is dropped and the line marked.
pub const MAX_LINE_BYTES: usize = 4096;

/// One line a guest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLine {
    /// `stdout`, `stderr`, or the record's level (`info`, `warn`, ...).
    pub source: &'static str,
    /// The text, without its newline.
    pub text: String,
}

/// A request's guest output.
#[derive(Debug, Default, Clone)]
pub struct GuestLog {
    /// The lines, in the order their stream wrote them (records first, then stdout,
    /// then stderr).
    pub lines: Vec<GuestLine>,
    /// Whether anything was dropped for a bound.
    pub truncated: bool,
    record_bytes: usize,
}

impl GuestLog {
    /// Adds one log record of `source`, unless the request's records already hold `cap`
    /// bytes.
    pub(super) fn push(&mut self, source: &'static str, text: &str, cap: usize) {
        if self.record_bytes + text.len() > cap {
            self.truncated = true;
            return;
        }
        self.record_bytes += text.len();
        self.push_line(source, text);
    }

    /// Adds what a stream captured, line by line (`truncated`: the capture dropped some).
    pub(super) fn push_text(&mut self, source: &'static str, text: &str, truncated: bool) {
        self.truncated |= truncated;
        for line in text.lines() {
            self.push_line(source, line);
        }
    }

    fn push_line(&mut self, source: &'static str, text: &str) {
        let kept = truncate(text, MAX_LINE_BYTES);
        let mut line = kept.to_string();
        if kept.len() < text.len() {
            self.truncated = true;
            line.push('…');
        }
        self.lines.push(GuestLine { source, text: line });
    }

    /// Whether the guest wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_and_records_bounded() {
        let mut log = GuestLog::default();
        log.push("info", "one", 5);
        log.push("info", "two", 5);
        assert_eq!(log.lines.len(), 1);
        assert!(log.truncated);
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        log.push_text("stdout", &format!("a\n{long}\nb\n"), false);
        let texts: Vec<usize> = log.lines.iter().map(|l| l.text.len()).collect();
        assert_eq!(texts, vec![3, 1, MAX_LINE_BYTES + '…'.len_utf8(), 1]);
    }
}
