//! The actions menu (`A` on Hosts or Packages): a rule's named actions, each on a digit,
//! k9s-style. What a digit does is in `app::adhoc`.

use super::app::App;
use super::app::adhoc::MenuItem;
use super::widgets::{centered, fit, frame};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

pub fn actions_menu(f: &mut Frame, app: &App, area: Rect, target: &str, items: &[MenuItem]) {
    let h = items.len() as u16 + 5;
    let r = centered(area, 100, h);
    f.render_widget(Clear, r);
    let block = frame(app, &format!("Actions on {target}"));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let w = inner.width as usize;
    let mut lines: Vec<Line> = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let mark = if it.confirm { "  (asks first)" } else { "" };
            Line::from(vec![
                Span::styled(format!(" {} ", i + 1), app.theme.button_focused),
                Span::raw(" "),
                Span::styled(fit(&it.name, 12), app.theme.header),
                Span::raw(fit(&format!("{}{mark}", it.command), w.saturating_sub(17))),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "1-9 runs it (shown in Dispatches) · Esc closes",
        app.theme.dim,
    ));
    f.render_widget(Paragraph::new(lines), inner);
}
