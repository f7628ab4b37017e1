//! Command output cut into lines with a bound on memory, for every transport.
//!
//! A command may print a 10 GiB line (a binary dump, `yes | tr -d '\n'`) or a progress bar
//! that redraws itself with `\r` for an hour and never prints `\n`. Buffering until `\n`
//! would hold all of it, per host. [`LineSplitter`] holds at most [`MAX_LINE`] bytes per
//! stream whatever arrives: a longer line is handed out as its first [`MAX_LINE`] bytes plus
//! a marker saying how many bytes were cut ([`cut_marker`]); the rest of it is counted, never
//! stored.
//!
//! A run of lone `\r` (one not followed by `\n`) ends a line, as a CI log viewer shows it.
//! The other choice, capping such a line like any other, would keep the *first* 64 KiB of
//! a progress bar and cut its final state ("100%", the error it ended with), which is the
//! part worth reading; as separate lines every state is seen live and the journal's
//! per-step line bound ([`crate::journal::JournalOptions`]) still bounds what is stored.
//! `\r\n` (and `\r\r\n`) stays one line break, also when a read ends between the two.
//!
//! A line ended by a lone `\r` is handed out *with* that `\r` at its end ([`is_cr_ended`]),
//! so a front end can show it as a terminal does: the next line of the same stream
//! overwrites it (`copy 10%\rcopy 100%\n` reads as one line, `copy 100%`). The mark is in
//! the text, not a flag on the event, because the journal and `--json` keep raw text anyway
//! and every consumer then gets it without a change of format. Two rules make the mark
//! safe to act on:
//! - it is only set once the byte after the `\r` is known not to be `\n`, so a `\r\n`
//!   split across two reads is never taken for a progress line (the cost: a progress state
//!   is handed out when the next one starts, not when its `\r` arrives);
//! - a stream that ends on a lone `\r` hands out its last line without the mark, since
//!   nothing overwrites it. So a CR-ended line is always followed by another line of the
//!   same stream, and a consumer that keeps only final states (a pipe, the run report)
//!   may drop it.

use std::borrow::Cow;

/// The most bytes of one line that are kept (before the marker).
pub const MAX_LINE: usize = 64 * 1024;

/// What replaces the cut part of a line: `… [N bytes cut]`, N the bytes not kept (the line
/// break not counted). At most 35 bytes.
pub fn cut_marker(cut: u64) -> String {
    format!("… [{cut} bytes cut]")
}

/// Cuts a byte stream into lines; see the module doc. One per stream.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// The start of the current line, at most [`MAX_LINE`] bytes.
    line: Vec<u8>,
    /// Bytes of the current line beyond `line`, counted only.
    cut: u64,
    /// The last byte seen was `\r`.
    cr: bool,
    /// That `\r` ends a line that has text: the line is held until the next byte says
    /// whether it was `\r\n` (a plain line) or a lone `\r` (a CR-ended one).
    cr_ended: bool,
}

/// Lines handed out together: joined by `\n`, with no `\n` after the last. A line as
/// [`LineSplitter`] hands it out holds no `\n` (and a `\r` only as its CR-ended mark), so
/// the joined text splits back into exactly the same lines ([`each_line`]).
#[derive(Debug, Default, Clone)]
pub struct Batch {
    text: String,
    /// At least one line was pushed (an empty text may be one empty line).
    any: bool,
}

impl Batch {
    pub fn with_capacity(bytes: usize) -> Batch {
        Batch {
            text: String::with_capacity(bytes),
            any: false,
        }
    }

    /// Adds a line, or several already joined by `\n`.
    pub fn push(&mut self, lines: &str) {
        if self.any {
            self.text.push('\n');
        }
        self.text.push_str(lines);
        self.any = true;
    }

    pub fn is_empty(&self) -> bool {
        !self.any
    }

    /// The lines, joined by `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The lines of a batch's text (see [`Batch`]). Not [`str::lines`]: that would also take
/// the CR-ended mark of a line for half of a `\r\n`.
pub fn each_line(text: &str) -> std::str::Split<'_, char> {
    text.split('\n')
}

/// Whether `line`, as [`LineSplitter`] hands it out, ended with a lone `\r`: a progress
/// state the next line of the same stream overwrites (see the module doc).
pub fn is_cr_ended(line: &str) -> bool {
    line.ends_with('\r')
}

/// `line` without its CR-ended mark: the text a terminal shows.
pub fn without_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    /// Feeds the next bytes read; every line they complete goes to `emit`, in order.
    pub fn feed(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        self.split(bytes, emit);
    }

    /// Feeds the next bytes read; the lines they complete go to `emit` in one call, joined
    /// by `\n` (see [`Batch`]), or not at all when they complete none. One call per read
    /// instead of one per line: what a command printing a million lines costs is then per
    /// read (an allocation, a timestamp, a trip through each queue), not per line.
    ///
    /// Most reads are whole lines of plain text, and those are joined already: the read up
    /// to its last `\n` is taken as it is, when it holds no `\r`, is valid UTF-8 and
    /// follows a finished line (one check of the whole read, no work per line). Anything
    /// else goes line by line as [`LineSplitter::feed`] does, with the same result.
    pub fn feed_lines(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        let mut batch = Batch::with_capacity(bytes.len() + self.line.len());
        if self.has_text() || self.cr {
            // The end of a line the last read left open.
            let first = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
            self.split(&bytes[..first], &mut |l| batch.push(l));
            bytes = &bytes[first..];
        }
        if !self.has_text()
            && !self.cr
            && let Some(last) = memchr::memrchr(b'\n', bytes)
        {
            let whole = &bytes[..last];
            if whole.len() <= MAX_LINE
                && memchr::memchr(b'\r', whole).is_none()
                && let Ok(text) = std::str::from_utf8(whole)
            {
                batch.push(text);
                bytes = &bytes[last + 1..];
            }
        }
        self.split(bytes, &mut |l| batch.push(l));
        if !batch.is_empty() {
            emit(batch.text());
        }
    }

    /// [`LineSplitter::finish`] for [`LineSplitter::feed_lines`]: the unterminated last
    /// line, if any, as a batch of one.
    pub fn finish_lines(&mut self, emit: &mut dyn FnMut(&str)) {
        self.finish(emit);
    }

    fn split(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        while let Some((&b, rest)) = bytes.split_first() {
            match b {
                b'\r' => {
                    if !self.cr {
                        self.cr = true;
                        self.cr_ended = self.has_text();
                    }
                    bytes = rest;
                }
                b'\n' => {
                    // `\r\n` (or `\r\r\n`): a plain line break.
                    self.emit(emit, false);
                    self.cr = false;
                    self.cr_ended = false;
                    bytes = rest;
                }
                _ => {
                    if self.cr_ended {
                        self.emit(emit, true);
                    }
                    self.cr = false;
                    self.cr_ended = false;
                    let end = memchr::memchr2(b'\n', b'\r', bytes).unwrap_or(bytes.len());
                    if bytes.get(end) == Some(&b'\n') && !self.has_text() && end <= MAX_LINE {
                        // A whole line inside this read (most lines): handed out from the
                        // read itself, not copied into `line` first.
                        emit(&String::from_utf8_lossy(&bytes[..end]));
                        bytes = &bytes[end + 1..];
                        continue;
                    }
                    self.push(&bytes[..end]);
                    bytes = &bytes[end..];
                }
            }
        }
    }

    /// The end of the stream: hands out an unterminated last line, if any.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        if self.has_text() {
            // Unmarked even after a lone `\r`: nothing follows to overwrite it.
            self.emit(emit, false);
        }
        self.cr = false;
        self.cr_ended = false;
    }

    /// Bytes of memory the splitter holds (its buffer's capacity): never above
    /// [`MAX_LINE`], whatever it was fed.
    pub fn held(&self) -> usize {
        self.line.capacity()
    }

    fn has_text(&self) -> bool {
        !self.line.is_empty() || self.cut > 0
    }

    fn push(&mut self, bytes: &[u8]) {
        let keep = bytes.len().min(MAX_LINE - self.line.len());
        if self.line.len() + keep > self.line.capacity() {
            // Grown by hand: `Vec`'s own doubling would overshoot the bound (a 40 KiB line
            // growing to 128 KiB).
            let want = (self.line.capacity() * 2)
                .max(self.line.len() + keep)
                .clamp(256, MAX_LINE);
            self.line.reserve_exact(want - self.line.len());
        }
        self.line.extend_from_slice(&bytes[..keep]);
        self.cut += (bytes.len() - keep) as u64;
    }

    /// Hands out the current line; `cr`: it ended with a lone `\r` (kept as its last byte).
    fn emit(&mut self, emit: &mut dyn FnMut(&str), cr: bool) {
        let mark = if cr { "\r" } else { "" };
        if self.cut == 0 {
            if cr {
                emit(&format!("{}\r", String::from_utf8_lossy(&self.line)));
            } else {
                emit(&String::from_utf8_lossy(&self.line));
            }
        } else {
            // A character the cut split in two is cut whole, not shown as U+FFFD.
            let keep = self.line.len() - incomplete_tail(&self.line);
            let cut = self.cut + (self.line.len() - keep) as u64;
            let (text, used) = decode_capped(&self.line[..keep], MAX_LINE);
            let cut = cut + (keep - used) as u64;
            emit(&format!("{text}{}{mark}", cut_marker(cut)));
        }
        self.line.clear();
        self.cut = 0;
    }
}

/// `raw` as text (invalid UTF-8 as U+FFFD) of at most `max` bytes, and how many bytes of
/// `raw` that text stands for: each invalid byte becomes three, so a line of binary could
/// otherwise triple past the bound.
fn decode_capped(raw: &[u8], max: usize) -> (String, usize) {
    let mut out = String::with_capacity(raw.len().min(max));
    let mut used = 0;
    for chunk in raw.utf8_chunks() {
        let valid = chunk.valid();
        if out.len() + valid.len() > max {
            let mut end = max - out.len();
            while !valid.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&valid[..end]);
            return (out, used + end);
        }
        out.push_str(valid);
        used += valid.len();
        for _ in chunk.invalid() {
            if out.len() + '\u{FFFD}'.len_utf8() > max {
                return (out, used);
            }
            out.push('\u{FFFD}');
            used += 1;
        }
    }
    (out, used)
}

/// How many bytes at the end of `raw` are the start of a UTF-8 character whose rest is
/// missing (0 when it ends on a whole character, or in bytes that are invalid anyway).
fn incomplete_tail(raw: &[u8]) -> usize {
    for back in 1..=raw.len().min(3) {
        let b = raw[raw.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let need = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        let tail = &raw[raw.len() - back..];
        return if back < need && std::str::from_utf8(tail).is_err_and(|e| e.error_len().is_none()) {
            back
        } else {
            0
        };
    }
    0
}

/// `line` as it may be stored: unchanged up to [`MAX_LINE`] bytes (or when it is already a
/// capped line, at most [`MAX_LINE`] bytes and a marker), else its first [`MAX_LINE`] bytes
/// (on a character boundary) and the marker.
/// A CR-ended line keeps its mark.
pub fn cap_line(line: &str) -> Cow<'_, str> {
    let (body, mark) = match line.strip_suffix('\r') {
        Some(b) => (b, "\r"),
        None => (line, ""),
    };
    if body.len() <= MAX_LINE || is_capped(body) {
        return Cow::Borrowed(line);
    }
    let mut end = MAX_LINE;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}{}{mark}",
        &body[..end],
        cut_marker((body.len() - end) as u64)
    ))
}

/// Whether `line` is what [`LineSplitter`] hands out for a cut line: so the journal does
/// not cut the marker off a line the transport already capped.
fn is_capped(line: &str) -> bool {
    let Some(head) = line.strip_suffix(" bytes cut]") else {
        return false;
    };
    let Some(at) = head.rfind("… [") else {
        return false;
    };
    at <= MAX_LINE && head[at + "… [".len()..].parse::<u64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(reads: &[&[u8]]) -> (Vec<String>, usize) {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        let mut held = 0;
        for r in reads {
            s.feed(r, &mut |l| out.push(l.to_owned()));
            held = held.max(s.held());
        }
        s.finish(&mut |l| out.push(l.to_owned()));
        (out, held)
    }

    #[test]
    fn lines_and_crlf() {
        let (out, _) = split(&[b"a\nb\r\n\nc\r\r\nd"]);
        assert_eq!(out, ["a", "b", "", "c", "d"]);
        assert_eq!(split(&[b"\r\n"]).0, [""]);
        assert!(split(&[b""]).0.is_empty());
    }

    #[test]
    fn a_line_split_across_reads() {
        assert_eq!(split(&[b"hel", b"lo\nwor", b"ld\n"]).0, ["hello", "world"]);
        // `\r` at the end of one read, `\n` at the start of the next: one break.
        assert_eq!(
            split(&[b"one\r", b"\ntwo\r", b"\r", b"\n"]).0,
            ["one", "two"]
        );
        assert_eq!(split(&[b"\r", b"\n"]).0, [""]);
    }

    #[test]
    fn lone_carriage_returns_end_lines_marked() {
        let (out, _) = split(&[b"\r 10%\r 20%\r\r 30%\n", b"x\ry"]);
        assert_eq!(out, [" 10%\r", " 20%\r", " 30%", "x\r", "y"]);
        assert!(is_cr_ended(&out[0]) && !is_cr_ended(&out[2]));
        assert_eq!(without_cr(&out[1]), " 20%");
        assert_eq!(without_cr(&out[2]), " 30%");
    }

    #[test]
    fn the_mark_waits_for_the_byte_after_the_carriage_return() {
        // A `\r\n` split across reads is a plain line, never a progress state.
        assert_eq!(split(&[b"one\r", b"\ntwo\r"]).0, ["one", "two"]);
        // A lone `\r` at a read's end is marked once the next read shows it is lone.
        assert_eq!(
            split(&[b"copy 10%\r", b"copy 20%\r", b"copy 100%\n"]).0,
            ["copy 10%\r", "copy 20%\r", "copy 100%"]
        );
        // The stream's last line is never marked: nothing overwrites it.
        assert_eq!(split(&[b"a\rb\r"]).0, ["a\r", "b"]);
        assert_eq!(split(&[b"a\rb\r\r"]).0, ["a\r", "b"]);
        // A cut progress state keeps its marker, then the mark.
        let mut long = vec![b'x'; MAX_LINE + 3];
        long.extend_from_slice(b"\rdone\n");
        let (out, _) = split(&[&long]);
        assert_eq!(
            out,
            [
                format!("{}{}\r", "x".repeat(MAX_LINE), cut_marker(3)),
                "done".into()
            ]
        );
        // The journal's cap leaves such a line alone and keeps the mark on one it cuts.
        assert_eq!(cap_line(&out[0]), out[0]);
        let big = format!("{}\r", "y".repeat(MAX_LINE + 1));
        assert_eq!(
            cap_line(&big),
            format!("{}{}\r", "y".repeat(MAX_LINE), cut_marker(1))
        );
    }

    #[test]
    fn a_million_progress_updates_hold_one_short_line() {
        let bar: Vec<u8> = (0..1_000_000)
            .flat_map(|i| format!("\r{i:>7}%").into_bytes())
            .collect();
        let mut s = LineSplitter::new();
        let (mut n, mut last) = (0, String::new());
        for chunk in bar.chunks(32 * 1024) {
            s.feed(chunk, &mut |l| {
                n += 1;
                last = l.to_owned();
            });
            assert!(s.held() <= 256, "{}", s.held());
        }
        s.finish(&mut |l| {
            n += 1;
            last = l.to_owned();
        });
        assert_eq!((n, last.as_str()), (1_000_000, " 999999%"));
    }

    #[test]
    fn exact_boundaries() {
        let at = vec![b'x'; MAX_LINE];
        let (out, held) = split(&[&at, b"\n"]);
        assert_eq!(out, [String::from_utf8(at.clone()).unwrap()]);
        assert_eq!(held, MAX_LINE);
        let mut over = at.clone();
        over.push(b'y');
        let (out, held) = split(&[&over, b"\nnext\n"]);
        assert_eq!(
            out,
            [
                format!("{}{}", "x".repeat(MAX_LINE), cut_marker(1)),
                "next".into()
            ]
        );
        assert_eq!(held, MAX_LINE);
    }

    #[test]
    fn a_long_line_is_cut_and_counted_in_small_reads() {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for _ in 0..(10 << 20) / 4096 {
            s.feed(&[b'z'; 4096], &mut |l| out.push(l.to_owned()));
            assert!(s.held() <= MAX_LINE);
        }
        s.feed(b"\ndone\n", &mut |l| out.push(l.to_owned()));
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            format!(
                "{}{}",
                "z".repeat(MAX_LINE),
                cut_marker((10 << 20) - MAX_LINE as u64)
            )
        );
        assert_eq!(out[1], "done");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_stays_in_bounds() {
        assert_eq!(split(&[b"a\xffb\n"]).0, ["a\u{FFFD}b"]);
        // 100 KiB of invalid bytes: three bytes each as text, still at most MAX_LINE.
        let junk = vec![0xffu8; 100 * 1024];
        let (out, _) = split(&[&junk]);
        let kept = MAX_LINE / 3;
        assert_eq!(
            out,
            [format!(
                "{}{}",
                "\u{FFFD}".repeat(kept),
                cut_marker((junk.len() - kept) as u64)
            )]
        );
        assert!(out[0].len() <= MAX_LINE + 35);
    }

    #[test]
    fn a_character_cut_in_two_is_cut_whole() {
        // 'é' is two bytes; the line's byte MAX_LINE is its first half.
        let mut line = vec![b'a'; MAX_LINE - 1];
        line.extend_from_slice("é tail".as_bytes());
        let (out, _) = split(&[&line]);
        assert_eq!(
            out,
            [format!("{}{}", "a".repeat(MAX_LINE - 1), cut_marker(7))]
        );
    }

    /// The lines `reads` make, fed a read at a time through [`LineSplitter::feed_lines`]:
    /// one batch per read that completes a line, split back.
    fn split_batched(reads: &[&[u8]]) -> (Vec<String>, usize) {
        let mut s = LineSplitter::new();
        let (mut out, mut batches) = (Vec::new(), 0);
        let mut take = |text: &str| {
            batches += 1;
            out.extend(each_line(text).map(str::to_owned));
        };
        for r in reads {
            s.feed_lines(r, &mut take);
        }
        s.finish_lines(&mut take);
        (out, batches)
    }

    #[test]
    fn batches_split_back_into_the_same_lines() {
        let mut long = vec![b'x'; MAX_LINE + 3];
        long.extend_from_slice(b"\rdone\n");
        let text: Vec<u8> = [
            &b"a\n\nb\r\n\r\nc\r\r\n 10%\r 20%\r\r 30%\n"[..],
            b"\xc3\xa9\xff\n\n",
            &long,
            &[b'y'; 70_000],
            b"\n\rtail\r",
        ]
        .concat();
        // Every read size, including one byte at a time and all of it at once.
        for size in [1, 2, 3, 7, 64, 4096, 32 * 1024, text.len()] {
            let reads: Vec<&[u8]> = text.chunks(size).collect();
            let (lines, batches) = split_batched(&reads);
            assert_eq!(lines, split(&reads).0, "reads of {size}");
            assert!(batches <= reads.len() + 1, "reads of {size}: {batches}");
        }
        // One read of many lines is one batch; empty lines and CR marks survive the join.
        let (lines, batches) = split_batched(&[b"\n\none\r\ntwo\rthree\n\n"]);
        assert_eq!(lines, ["", "", "one", "two\r", "three", ""]);
        assert_eq!(batches, 1);
        // A read that completes no line hands out nothing until one is complete.
        assert_eq!(
            split_batched(&[b"par", b"tial"]),
            (vec!["partial".into()], 1)
        );
        assert_eq!(split_batched(&[b""]), (vec![], 0));
    }

    proptest::proptest! {
        /// Any bytes, read in any pieces: the batches split back into exactly the lines
        /// the line-by-line splitter hands out.
        #[test]
        fn batches_are_the_lines_of_feed(
            text in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'b', b' ', b'\n', b'\n', b'\r', 0xc3, 0xa9, 0xff]),
                0..600,
            ),
            cuts in proptest::collection::vec(1usize..80, 1..20),
        ) {
            let mut reads: Vec<&[u8]> = Vec::new();
            let mut rest = &text[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*c).min(rest.len()));
                reads.push(now);
                rest = later;
            }
            proptest::prop_assert_eq!(split_batched(&reads).0, split(&reads).0);
        }
    }

    #[test]
    fn cap_line_for_the_journal() {
        assert_eq!(cap_line("short"), "short");
        let long = "é".repeat(MAX_LINE); // 2 * MAX_LINE bytes
        let capped = cap_line(&long);
        assert_eq!(
            capped,
            format!(
                "{}{}",
                "é".repeat(MAX_LINE / 2),
                cut_marker(MAX_LINE as u64)
            )
        );
        // Capping is idempotent: a line the transport capped keeps its marker.
        assert_eq!(cap_line(&capped), capped);
        // A fake marker after too much text does not pass.
        let fake = format!("{}{}", "x".repeat(MAX_LINE + 10), cut_marker(1));
        let cut = (fake.len() - MAX_LINE) as u64;
        assert_eq!(
            cap_line(&fake),
            format!("{}{}", "x".repeat(MAX_LINE), cut_marker(cut))
        );
    }
}
