//! The details of one host of one dispatch (Enter on Targets): how it ended, the whole
//! error wrapped, each step with its exit code and duration. What the ERROR column can only
//! start to say, at 3 a.m. when it matters.

use super::app::App;
use super::model::{TargetView, elapsed, timestamp};
use super::widgets::{centered, frame, wrap_lines};
use crate::engine::events::{StepOutcome, TargetResult};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

/// The popup's lines for target `t` of the selected dispatch (before wrapping).
pub fn lines(app: &App, t: &TargetView) -> Vec<Line<'static>> {
    let label = |s: &str| Span::styled(format!("{s:<9} "), app.theme.header);
    let mut out = Vec::new();
    let d = app.selected_dispatch();
    out.push(Line::from(vec![
        label("host"),
        Span::styled(t.host.clone(), app.theme.text),
    ]));
    if let Some(d) = d {
        out.push(Line::from(vec![
            label("dispatch"),
            Span::styled(format!("#{} {}", d.id, d.bundle), app.theme.text),
        ]));
    }
    let style = match t.result {
        Some(TargetResult::Succeeded) => app.theme.ok,
        Some(TargetResult::Failed) => app.theme.failed,
        Some(TargetResult::Cancelled) => app.theme.warning,
        Some(TargetResult::Skipped) => app.theme.skipped,
        None => app.theme.running,
    };
    out.push(Line::from(vec![
        label("result"),
        Span::styled(t.status(), style),
    ]));
    if let Some(r) = t
        .failed_run()
        .filter(|r| r.outcome != Some(StepOutcome::Ok))
    {
        out.push(Line::from(vec![
            label("why"),
            Span::styled(r.summary(), app.theme.failed),
        ]));
    }
    match (t.started_at, t.finished_at) {
        (Some(s), Some(e)) => out.push(Line::from(vec![
            label("time"),
            Span::styled(
                format!("{} → {} ({})", timestamp(s), timestamp(e), elapsed(e - s)),
                app.theme.text,
            ),
        ])),
        (Some(s), None) => out.push(Line::from(vec![
            label("started"),
            Span::styled(timestamp(s), app.theme.text),
        ])),
        _ => {}
    }
    if let Some(e) = &t.error {
        out.push(Line::raw(""));
        out.push(Line::from(label("error")));
        for l in e.lines() {
            out.push(Line::styled(format!("  {l}"), app.theme.failed));
        }
    }
    if !t.runs.is_empty() {
        out.push(Line::raw(""));
        out.push(Line::from(label("steps")));
        for r in &t.runs {
            let st: Style = match r.outcome {
                Some(StepOutcome::Ok) => app.theme.ok,
                Some(StepOutcome::Failed) => app.theme.failed,
                _ => app.theme.warning,
            };
            out.push(Line::styled(format!("  {}", r.summary()), st));
            if let Some(e) = r
                .error
                .as_deref()
                .filter(|e| Some(*e) != t.error.as_deref())
            {
                for l in e.lines() {
                    out.push(Line::styled(format!("    {l}"), app.theme.dim));
                }
            }
        }
    }
    out
}

/// Draws the popup, scrolled by `scroll` lines when taller than the screen.
pub fn draw(f: &mut Frame, app: &App, area: Rect, scroll: usize) {
    let Some(t) = app.selected_target() else {
        return;
    };
    let width = area.width.min(100);
    let mut body = wrap_lines(lines(app, t), width.saturating_sub(2) as usize);
    let room = area.height.saturating_sub(3) as usize;
    let max = body.len().saturating_sub(room);
    let scroll = scroll.min(max);
    app.dialog_scroll_max.set(max);
    let mut shown: Vec<Line> = body.drain(..).skip(scroll).take(room).collect();
    shown.push(
        Line::styled(
            if max > 0 {
                "j/k scroll · Enter log · Esc close"
            } else {
                "Enter log · Esc close"
            },
            app.theme.dim,
        )
        .centered(),
    );
    let r = centered(area, width, shown.len() as u16 + 2);
    f.render_widget(Clear, r);
    let title = format!("{} — details", t.host);
    f.render_widget(Paragraph::new(shown).block(frame(app, &title)), r);
}
