//! Drawing pieces every pane and dialog uses: fitted text, the pane's block, a dialog's
//! frame and placement, wrapped lines. Their own module, so panes and dialogs share them
//! without importing one another.

use super::app::App;
use super::model::Focus;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};

/// A bordered block, highlighted when focused, with a filter shown in its title.
pub fn pane<'a>(app: &App, focus: Focus, title: String, filter: &str) -> Block<'a> {
    let focused = app.focus == focus && !app.log.fullscreen;
    let n = Focus::ALL.iter().position(|f| *f == focus).unwrap_or(0) + 1;
    let mut t = format!(" {n} {title} ");
    if !filter.is_empty() {
        t.push_str(&format!("/{filter} "));
    }
    Block::new()
        .borders(Borders::ALL)
        .border_style(if focused {
            app.theme.border_focused
        } else {
            app.theme.border
        })
        .title(Span::styled(
            t,
            if focused {
                app.theme.title
            } else {
                app.theme.text
            },
        ))
}

/// Cuts or pads `s` to exactly `w` columns (counting chars), with `…` when cut.
pub fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        let mut out = s.to_owned();
        out.extend(std::iter::repeat_n(' ', w - n));
        out
    } else if w == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(w - 1).collect();
        out.push('…');
        out
    }
}

/// A centred rectangle of at most `w` x `h` cells.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// A dialog's bordered, titled block.
pub fn frame<'a>(app: &App, title: &str) -> Block<'a> {
    Block::new()
        .borders(Borders::ALL)
        .border_style(app.theme.border_focused)
        .title(Span::styled(format!(" {title} "), app.theme.title))
        .style(app.theme.dialog)
}

/// Breaks lines wider than `w` into several at spaces, so a long command is read in full
/// rather than cut off, and never in the middle of a token unless a token alone is wider
/// than `w`. Each piece keeps the style of the span it came from (a label stays a label);
/// continuation lines are indented like the line they continue.
pub fn wrap_lines(lines: Vec<Line<'_>>, w: usize) -> Vec<Line<'_>> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.width() <= w || w < 8 {
            out.push(line);
            continue;
        }
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        let indent = text.chars().take_while(|c| *c == ' ').count().min(w / 2);
        // Runs of spaces and of non-spaces, each with its span's style.
        let mut pieces: Vec<(String, ratatui::style::Style)> = Vec::new();
        for span in &line.spans {
            let mut cur = String::new();
            let mut space = None;
            for c in span.content.chars() {
                let is = c == ' ';
                if space.is_some_and(|s| s != is) {
                    pieces.push((std::mem::take(&mut cur), span.style));
                }
                space = Some(is);
                cur.push(c);
            }
            if !cur.is_empty() {
                pieces.push((cur, span.style));
            }
        }
        let mut rows: Vec<Vec<Span<'static>>> = vec![Vec::new()];
        let mut used = 0usize;
        let new_row = |rows: &mut Vec<Vec<Span<'static>>>, used: &mut usize| {
            rows.push(vec![Span::raw(" ".repeat(indent))]);
            *used = indent;
        };
        for (piece, style) in pieces {
            let n = piece.chars().count();
            if piece.starts_with(' ') {
                if used + n <= w {
                    rows.last_mut().unwrap().push(Span::styled(piece, style));
                    used += n;
                } else {
                    new_row(&mut rows, &mut used);
                }
                continue;
            }
            if used + n > w && used > indent {
                new_row(&mut rows, &mut used);
            }
            let mut rest: Vec<char> = piece.chars().collect();
            while used + rest.len() > w {
                let take = w.saturating_sub(used).max(1);
                let head: String = rest.drain(..take.min(rest.len())).collect();
                rows.last_mut().unwrap().push(Span::styled(head, style));
                new_row(&mut rows, &mut used);
            }
            used += rest.len();
            rows.last_mut()
                .unwrap()
                .push(Span::styled(rest.into_iter().collect::<String>(), style));
        }
        for r in rows {
            let mut l = Line::from(r).style(line.style);
            l.alignment = line.alignment;
            out.push(l);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::Style;

    fn text(l: &Line) -> String {
        l.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    /// Issue 15 item 12: commands broke mid-token and lost the label's style.
    #[test]
    fn wraps_at_spaces_and_keeps_each_pieces_style() {
        let label = Style::new().bold();
        let line = Line::from(vec![
            Span::styled("upgrade   ", label),
            Span::raw("tar xzf releases/1.4.2/app-1.4.2.tgz && ./upgrade.sh --migrate"),
        ]);
        let out = wrap_lines(vec![line], 30);
        let rows: Vec<String> = out.iter().map(text).collect();
        assert!(rows.iter().all(|r| r.chars().count() <= 30), "{rows:?}");
        assert_eq!(rows[0].trim_end(), "upgrade   tar xzf");
        assert!(
            rows.iter()
                .any(|r| r.trim() == "releases/1.4.2/app-1.4.2.tgz"),
            "{rows:?}"
        );
        assert_eq!(out[0].spans[0].style, label, "the label keeps its style");
        // Every token is whole somewhere.
        let joined = rows.join(" ");
        for tok in ["./upgrade.sh", "--migrate", "&&"] {
            assert!(
                joined.split_whitespace().any(|t| t == tok),
                "{tok} in {rows:?}"
            );
        }
        // A token wider than the line is cut, not lost.
        let long = "x".repeat(70);
        let out = wrap_lines(vec![Line::raw(long.clone())], 30);
        assert_eq!(out.iter().map(text).collect::<String>(), long);
    }
}
