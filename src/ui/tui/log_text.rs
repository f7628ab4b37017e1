//! The rows of a log as drawn: remote colours, search matches, wrapping, timestamps. Shared
//! by the one-host log pane and the many-host views ([`super::all_hosts`]).

use super::app::App;
use super::logview::{LogView, contains_ci};
use super::model::timestamp;
use super::ring::LogRing;
use crate::transport::Stream;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// The screen rows of the log pane: from the top line down, or (following) the newest lines
/// walking back until the pane is full, wrapping long lines when asked.
pub fn log_lines<'a>(
    app: &App,
    view: &LogView,
    ring: &'a LogRing,
    width: usize,
    height: usize,
) -> Vec<Line<'a>> {
    if height == 0 || width == 0 || ring.is_empty() {
        return Vec::new();
    }
    let prefix_w = if view.timestamps { 13 } else { 0 };
    let text_w = width.saturating_sub(prefix_w).max(1);
    let rows_of = |n: u64| -> usize {
        if !view.wrap {
            return 1;
        }
        ring.get(n)
            .map_or(1, |l| l.text.chars().count().div_ceil(text_w).max(1))
    };
    let start = if view.following() {
        let mut n = ring.end();
        let mut used = 0;
        while n > ring.first() {
            let r = rows_of(n - 1);
            if used + r > height {
                break;
            }
            used += r;
            n -= 1;
        }
        n.min(ring.end().saturating_sub(1))
    } else {
        view.top_line(ring, height)
    };
    let needle = view.search.as_ref().map(|s| s.to_lowercase());
    let mut out = Vec::with_capacity(height);
    let mut n = start;
    while out.len() < height && n < ring.end() {
        let Some(l) = ring.get(n) else { break };
        let style = if l.marker {
            app.theme.header
        } else if l.stream == Stream::Stderr {
            app.theme.stderr
        } else {
            app.theme.stdout
        };
        let is_current = view.current_match == Some(n);
        let pieces: Vec<&str> = if view.wrap {
            chunks(l.text, text_w)
        } else {
            vec![l.text]
        };
        for (k, piece) in pieces.into_iter().enumerate() {
            if out.len() >= height {
                break;
            }
            let mut spans = Vec::new();
            if prefix_w > 0 {
                spans.push(Span::styled(
                    if k == 0 {
                        format!("{} ", timestamp(l.at))
                    } else {
                        " ".repeat(prefix_w)
                    },
                    app.theme.dim,
                ));
            }
            spans.extend(styled(
                l.text,
                l.runs,
                piece,
                style,
                needle.as_deref(),
                app.theme.search_match,
                is_current,
            ));
            out.push(Line::from(spans));
        }
        n += 1;
    }
    out
}

/// Splits `s` into pieces of `w` chars.
fn chunks(s: &str, w: usize) -> Vec<&str> {
    if s.is_empty() {
        return vec![s];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in s.char_indices() {
        if count == w {
            out.push(&s[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    out.push(&s[start..]);
    out
}

/// The spans of `piece` (a slice of `text`, the whole line or one wrapped row of it): the
/// remote colours of `runs` over `base`, and every case-insensitive match of `needle`
/// highlighted on top.
pub fn styled<'a>(
    text: &'a str,
    runs: &[(u32, anstyle::Style)],
    piece: &'a str,
    base: Style,
    needle: Option<&str>,
    hit: Style,
    current: bool,
) -> Vec<Span<'a>> {
    let hit = if current {
        hit.add_modifier(ratatui::style::Modifier::BOLD | ratatui::style::Modifier::UNDERLINED)
    } else {
        hit
    };
    // Byte range of the piece within the line.
    let p0 = piece.as_ptr() as usize - text.as_ptr() as usize;
    let p1 = p0 + piece.len();
    let matches: Vec<(usize, usize)> = match needle.filter(|n| !n.is_empty()) {
        Some(nd) if text.is_ascii() && nd.is_ascii() => {
            let lower = text.to_ascii_lowercase();
            let mut v = Vec::new();
            let mut pos = 0;
            while let Some(i) = lower[pos..].find(nd) {
                v.push((pos + i, pos + i + nd.len()));
                pos += i + nd.len();
            }
            v
        }
        Some(nd) if contains_ci(text, nd) => vec![(0, text.len())],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    let mut seg_start = 0usize;
    for (seg, st) in crate::ui::ansi::spans(text, runs) {
        let s0 = seg_start;
        let s1 = s0 + seg.len();
        seg_start = s1;
        let (a, b) = (s0.max(p0), s1.min(p1));
        if a >= b {
            continue;
        }
        let style = if st == anstyle::Style::new() {
            base
        } else {
            base.patch(Style::from(st))
        };
        // Cut [a, b) at the matches.
        let mut pos = a;
        for &(m0, m1) in &matches {
            let (m0, m1) = (m0.max(pos), m1.min(b));
            if m0 >= m1 {
                continue;
            }
            if m0 > pos {
                out.push(Span::styled(&text[pos..m0], style));
            }
            out.push(Span::styled(&text[m0..m1], hit));
            pos = m1;
        }
        if pos < b {
            out.push(Span::styled(&text[pos..b], style));
        }
    }
    if out.is_empty() {
        out.push(Span::styled(piece, base));
    }
    out
}
