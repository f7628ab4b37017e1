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

/// Breaks lines wider than `w` into several, so a long command is read in full rather than
/// cut off. A broken line keeps the style of its last span.
pub fn wrap_lines(lines: Vec<Line<'_>>, w: usize) -> Vec<Line<'_>> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.width() <= w || w < 8 {
            out.push(line);
            continue;
        }
        let style = line.spans.last().map(|s| s.style).unwrap_or_default();
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(w) {
            let piece: String = piece.iter().collect();
            out.push(Line::styled(piece, style));
        }
    }
    out
}
