//! A bounded, compact per-host log: the console keeps only the newest lines of each host in
//! memory (older ones stay in the journal), so memory stays flat however much a command
//! prints.
//!
//! Lines are packed into chunks of [`CHUNK`] lines that share one `String`, instead of one
//! heap allocation per line: with 100 hosts × 10,000 lines, a `String` per line would cost
//! more in allocator overhead than the text itself. Whole chunks are dropped from the front,
//! so a line's absolute number never changes while it is held.
//!
//! A progress line redrawn with `\r` (`copy 10%\rcopy 100%\n`) reads as one line, as on a
//! terminal: a line the transport handed out CR-ended ([`crate::transport::lines`]) is
//! replaced, under the same line number, by the next line of the same stream. So the log
//! shows each state live and keeps only the last, and the all-hosts index (which holds line
//! numbers) needs no change. The new state replaces the old one whole rather than being
//! drawn over it column by column: progress meters erase or redraw the full width anyway,
//! and the overlay would need the previous raw text kept. A line of the other stream or a
//! step marker in between ends the progress line where it stood (it is not overwritten).

use crate::engine::events::Millis;
use crate::transport::Stream;
use crate::ui::ansi::{Tabs, cook};
use anstyle::Style;
use std::collections::VecDeque;

/// Where a line's style changes: `(byte offset, style from there on)`.
pub type Runs = [(u32, Style)];

/// Bytes one style run costs.
const RUN_BYTES: usize = std::mem::size_of::<(u32, Style)>();

/// Lines per chunk.
pub const CHUNK: usize = 256;

/// Longest line kept in memory, in bytes; the journal keeps the whole line.
pub const MAX_LINE: usize = 4096;

/// Default capacity per host, in lines.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Default)]
struct Chunk {
    text: String,
    /// End offset in `text` of each line.
    ends: Vec<u32>,
    /// Time of the chunk's first line; `at` holds each line's offset from it, in ms (4 bytes
    /// instead of 8 a line; an offset past u32 — 49 days — is clamped).
    base_at: Millis,
    at: Vec<u32>,
    /// Bit i set: line i came from stderr.
    stderr: [u64; CHUNK / 64],
    /// Bit i set: line i is the console's own marker (a step started), not output.
    marker: [u64; CHUNK / 64],
    /// The style runs of the coloured lines only, by line index (ascending): most output
    /// has no colour and pays nothing for it.
    styled: Vec<(u16, Box<Runs>)>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn line(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn runs(&self, i: usize) -> &Runs {
        match self.styled.binary_search_by_key(&(i as u16), |(k, _)| *k) {
            Ok(k) => &self.styled[k].1,
            Err(_) => &[],
        }
    }

    fn seal(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.at.shrink_to_fit();
    }
}

/// One line as the log pane reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub at: Millis,
    pub stream: Stream,
    pub text: &'a str,
    /// A step boundary the console wrote, not a line the host printed.
    pub marker: bool,
    /// The remote colours of `text` (empty: none).
    pub runs: &'a Runs,
}

/// The newest `capacity` (to within one chunk) lines of one host.
pub struct LogRing {
    chunks: VecDeque<Chunk>,
    capacity: usize,
    /// Absolute number of the first line held.
    base: u64,
    len: usize,
    /// Bytes held: text plus the per-line offset and time (see [`LINE_OVERHEAD`]).
    bytes: usize,
    /// The newest line is a CR-ended progress state of this stream: the next line of the
    /// same stream replaces it.
    cr_ended: Option<Stream>,
}

/// Bytes each line costs besides its text: its end offset and its time.
pub const LINE_OVERHEAD: usize = 4 + 4;

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        LogRing {
            chunks: VecDeque::new(),
            capacity: capacity.max(1),
            base: 0,
            len: 0,
            bytes: 0,
            cr_ended: None,
        }
    }

    pub fn push(&mut self, at: Millis, stream: Stream, text: &str) {
        self.push_line(at, stream, text, false);
    }

    /// Records that a step began (`── upgrade: cmd`), so the log reads as a sequence of
    /// steps rather than one undifferentiated stream.
    pub fn push_marker(&mut self, at: Millis, text: &str) {
        self.push_line(at, Stream::Stdout, text, true);
    }

    fn push_line(&mut self, at: Millis, stream: Stream, text: &str, marker: bool) {
        if !marker && self.cr_ended == Some(stream) {
            self.pop_newest();
        }
        let cr = !marker && crate::transport::lines::is_cr_ended(text);
        self.cr_ended = cr.then_some(stream);
        let text = crate::transport::lines::without_cr(text);
        // Made inert once, here, for every view of the log: ratatui would drop a bare ESC
        // but show the rest of its sequence (`[31m`), and widths are counted on this text.
        // Output is cooked as a terminal would show it (colours kept as runs, tabs
        // expanded, `\r` overwriting); a marker is our own text quoting a command.
        let (safe, runs) = if marker {
            (crate::ui::term_text::field(text), Vec::new())
        } else if crate::ui::ansi::plain(text) {
            (std::borrow::Cow::Borrowed(text), Vec::new())
        } else {
            let c = cook(text, Tabs::Expand);
            (std::borrow::Cow::Owned(c.text), c.runs)
        };
        let text = clip(&safe);
        let runs: Vec<(u32, Style)> = runs
            .into_iter()
            .filter(|(at, _)| (*at as usize) < text.len())
            .collect();
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            if let Some(last) = self.chunks.back_mut() {
                last.seal();
            }
            self.chunks.push_back(Chunk {
                text: String::with_capacity(text.len() * CHUNK / 4),
                ends: Vec::with_capacity(CHUNK),
                base_at: at,
                at: Vec::with_capacity(CHUNK),
                stderr: [0; CHUNK / 64],
                marker: [0; CHUNK / 64],
                styled: Vec::new(),
            });
        }
        let Some(chunk) = self.chunks.back_mut() else {
            return;
        };
        let i = chunk.len();
        chunk.text.push_str(text);
        chunk.ends.push(chunk.text.len() as u32);
        chunk
            .at
            .push(u32::try_from((at - chunk.base_at).max(0)).unwrap_or(u32::MAX));
        if stream == Stream::Stderr {
            chunk.stderr[i / 64] |= 1 << (i % 64);
        }
        if marker {
            chunk.marker[i / 64] |= 1 << (i % 64);
        }
        let run_bytes = if runs.is_empty() {
            0
        } else {
            let n = runs.len() * RUN_BYTES + 2 + 16;
            chunk.styled.push((i as u16, runs.into_boxed_slice()));
            n
        };
        self.len += 1;
        self.bytes += text.len() + LINE_OVERHEAD + run_bytes;
        while self.chunks.len() > 1 && self.len - self.chunks[0].len() >= self.capacity {
            self.trim_front();
        }
    }

    /// Takes back the newest line (a progress state about to be replaced), keeping the
    /// byte count exact.
    fn pop_newest(&mut self) {
        let Some(chunk) = self.chunks.back_mut() else {
            return;
        };
        let Some(i) = chunk.len().checked_sub(1) else {
            return;
        };
        let start = if i == 0 {
            0
        } else {
            chunk.ends[i - 1] as usize
        };
        let mut freed = chunk.text.len() - start + LINE_OVERHEAD;
        chunk.text.truncate(start);
        chunk.ends.pop();
        chunk.at.pop();
        chunk.stderr[i / 64] &= !(1 << (i % 64));
        chunk.marker[i / 64] &= !(1 << (i % 64));
        if chunk
            .styled
            .last()
            .is_some_and(|(k, _)| usize::from(*k) == i)
            && let Some((_, r)) = chunk.styled.pop()
        {
            freed += r.len() * RUN_BYTES + 2 + 16;
        }
        self.len -= 1;
        self.bytes -= freed;
    }

    /// Drops the oldest chunk (never the newest one) and returns the bytes freed. The
    /// console calls it when all logs together pass their memory budget.
    pub fn trim_front(&mut self) -> usize {
        if self.chunks.len() < 2 {
            return 0;
        }
        let Some(front) = self.chunks.pop_front() else {
            return 0;
        };
        let freed = front.text.len()
            + front.len() * LINE_OVERHEAD
            + front
                .styled
                .iter()
                .map(|(_, r)| r.len() * RUN_BYTES + 2 + 16)
                .sum::<usize>();
        self.len -= front.len();
        self.base += front.len() as u64;
        self.bytes -= freed;
        freed
    }

    /// Bytes held (text and per-line bookkeeping), kept up to date on every push.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Absolute number of the oldest line held: lines before it were dropped.
    pub fn first(&self) -> u64 {
        self.base
    }

    /// Absolute number one past the newest line (= lines ever pushed).
    pub fn end(&self) -> u64 {
        self.base + self.len as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lines dropped from memory (still in the journal).
    pub fn dropped(&self) -> u64 {
        self.base
    }

    pub fn get(&self, abs: u64) -> Option<LogLine<'_>> {
        let rel = abs.checked_sub(self.base)? as usize;
        if rel >= self.len {
            return None;
        }
        // Every chunk but the last is full, so the chunk index is a division.
        let chunk = self.chunks.get(rel / CHUNK)?;
        let i = rel % CHUNK;
        Some(LogLine {
            at: chunk.base_at + i64::from(chunk.at[i]),
            stream: if chunk.stderr[i / 64] & (1 << (i % 64)) != 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            },
            text: chunk.line(i),
            marker: chunk.marker[i / 64] & (1 << (i % 64)) != 0,
            runs: chunk.runs(i),
        })
    }

    /// Every line held, oldest first, with its absolute number.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, LogLine<'_>)> + '_ {
        (self.first()..self.end()).filter_map(move |n| self.get(n).map(|l| (n, l)))
    }

    /// Bytes of heap this ring holds (approximate; for the memory benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| {
                c.text.capacity()
                    + c.ends.capacity() * 4
                    + c.at.capacity() * 4
                    + 40
                    + c.styled.capacity() * 24
                    + c.styled
                        .iter()
                        .map(|(_, r)| r.len() * RUN_BYTES)
                        .sum::<usize>()
            })
            .sum()
    }
}

/// Cuts a line to [`MAX_LINE`] bytes on a character boundary.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_LINE {
        return text;
    }
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Case-insensitive substring test; `needle` is already lowercase.
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        hay.as_bytes()
            .windows(needle.len().max(1))
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_made_inert() {
        let mut r = LogRing::new(10);
        r.push(0, Stream::Stdout, "\u{1b}[31mred\u{1b}[0m \u{1b}]0;T\u{7}x");
        r.push_marker(1, "── upgrade: echo 'a\u{1b}b'");
        r.push(2, Stream::Stdout, "a\tb\r\u{1b}[32mA");
        let got: Vec<&str> = r.iter().map(|(_, l)| l.text).collect();
        assert_eq!(got, ["red x", "── upgrade: echo 'a\\u{1b}b'", "A       b"]);
        let red = Style::new().fg_color(Some(anstyle::AnsiColor::Red.into()));
        assert_eq!(r.get(0).unwrap().runs, &[(0, red), (3, Style::new())]);
        assert!(r.get(1).unwrap().runs.is_empty());
        assert_eq!(r.get(2).unwrap().runs.len(), 2);
    }

    #[test]
    fn keeps_the_newest_lines_within_one_chunk_of_capacity() {
        let mut r = LogRing::new(1000);
        for i in 0..10_000u32 {
            let s = if i % 3 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            r.push(i64::from(i), s, &format!("line {i}"));
        }
        assert!(r.len() >= 1000 && r.len() < 1000 + CHUNK, "{}", r.len());
        assert_eq!(r.end(), 10_000);
        let last = r.get(9_999).unwrap();
        assert_eq!(last.text, "line 9999");
        assert_eq!(last.stream, Stream::Stderr);
        assert_eq!(r.get(9_998).unwrap().stream, Stream::Stdout);
        assert!(r.get(r.first() - 1).is_none());
        assert_eq!(
            r.get(r.first()).unwrap().text,
            format!("line {}", r.first())
        );
        assert!(r.get(10_000).is_none());
        let held: usize = r.iter().map(|(_, l)| l.text.len() + LINE_OVERHEAD).sum();
        assert_eq!(r.bytes(), held);
        let before = r.bytes();
        let freed = r.trim_front();
        assert_eq!(r.bytes(), before - freed);
        while r.trim_front() > 0 {}
        assert!(
            !r.is_empty() && r.len() <= CHUNK,
            "the newest chunk is kept"
        );
    }

    #[test]
    fn a_cr_ended_line_is_replaced_by_the_next_of_its_stream() {
        let mut r = LogRing::new(1000);
        r.push(0, Stream::Stdout, "start");
        r.push(1, Stream::Stdout, "copy 10%\r");
        assert_eq!(
            r.get(1).unwrap().text,
            "copy 10%",
            "shown live, without the mark"
        );
        r.push(2, Stream::Stdout, "\u{1b}[32mcopy 20%\u{1b}[0m\r");
        assert!(!r.get(1).unwrap().runs.is_empty());
        r.push(3, Stream::Stdout, "copy 100%");
        let got: Vec<&str> = r.iter().map(|(_, l)| l.text).collect();
        assert_eq!(got, ["start", "copy 100%"]);
        assert_eq!((r.end(), r.get(1).unwrap().at), (2, 3));
        assert!(
            r.get(1).unwrap().runs.is_empty(),
            "the old colours went with it"
        );
        // The other stream or a step marker does not overwrite a progress line.
        r.push(4, Stream::Stdout, "50%\r");
        r.push(5, Stream::Stderr, "warning");
        r.push_marker(6, "── next");
        r.push(7, Stream::Stdout, "after");
        let got: Vec<&str> = r.iter().map(|(_, l)| l.text).collect();
        assert_eq!(
            got,
            ["start", "copy 100%", "50%", "warning", "── next", "after"]
        );
        // A plain line is never replaced, and the byte count stays exact across chunks.
        for i in 0..(3 * CHUNK) {
            r.push(8, Stream::Stderr, &format!("\u{1b}[1m{i}%\u{1b}[0m\r"));
            r.push(8, Stream::Stderr, &format!("line {i}"));
        }
        assert_eq!(r.len(), 6 + 3 * CHUNK);
        let held: usize = r.iter().map(|(_, l)| l.text.len() + LINE_OVERHEAD).sum();
        assert_eq!(r.bytes(), held);
        assert!(r.iter().all(|(_, l)| l.runs.is_empty()));
    }

    #[test]
    fn long_lines_are_clipped_on_a_char_boundary() {
        let mut r = LogRing::new(10);
        let long = "é".repeat(MAX_LINE);
        r.push(0, Stream::Stdout, &long);
        let got = r.get(0).unwrap().text;
        assert!(got.len() <= MAX_LINE && got.chars().all(|c| c == 'é'));
    }
}
