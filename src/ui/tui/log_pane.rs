//! Drawing the log pane: only the rows on screen are built, walking back from the newest
//! line when following, so a 100,000-line log costs one screenful per frame.

use super::app::{App, Focus};
use super::log_text::log_lines;
use super::logview::LogMode;
use super::widgets::pane;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

pub use super::model::timestamp;

pub fn log_pane(f: &mut Frame, app: &App, area: Rect) {
    match app.log.mode {
        LogMode::One => {}
        LogMode::All => return super::all_hosts::all_pane(f, app, area),
        LogMode::Split => return super::all_hosts::split_pane(f, app, area),
        LogMode::Diff => return super::all_hosts::diff_pane(f, app, area),
    }
    let target = app.selected_target();
    let mut title = match (app.selected_dispatch(), target) {
        (Some(d), Some(t)) => format!("Log {} #{}", t.host, d.id),
        _ => "Log".into(),
    };
    let mut flags = vec![if app.log.following() {
        "follow"
    } else {
        "scrolled"
    }];
    if app.log.wrap {
        flags.push("wrap");
    }
    if app.log.timestamps {
        flags.push("time");
    }
    title.push_str(&format!(" [{}]", flags.join(" ")));
    let mut block = pane(app, Focus::Log, title, "");
    if let Some(t) = target {
        let mut info = format!(" {} lines", t.log.end());
        if t.log.dropped() > 0 {
            info.push_str(&format!(", {} older in journal", t.log.dropped()));
        }
        if let Some(s) = &app.log.search {
            info.push_str(&format!(" · /{s}"));
            let host = app.selected_target_index().unwrap_or(0);
            match app.log.match_count(&t.log, host) {
                Some((0, _)) => info.push_str(" no match"),
                Some((n, Some(k))) => info.push_str(&format!(" {k}/{n}")),
                Some((n, None)) => {
                    info.push_str(&format!(" {n} match{}", if n == 1 { "" } else { "es" }))
                }
                None => {}
            }
        }
        info.push(' ');
        block = block.title_bottom(Line::styled(info, app.theme.dim).right_aligned());
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    app.log_height.set(inner.height as usize);
    let Some(t) = target else {
        f.render_widget(
            Paragraph::new(Line::styled(" select a host of a dispatch", app.theme.dim)),
            inner,
        );
        return;
    };
    let lines = log_lines(
        app,
        &app.log,
        &t.log,
        inner.width as usize,
        inner.height as usize,
    );
    f.render_widget(Paragraph::new(lines), inner);
}
