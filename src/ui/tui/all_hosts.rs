//! The log pane's views of many hosts at once (bssh's Split and Diff, and an all-hosts
//! stream): with 20 hosts, stepping through Targets one log at a time hides the one host
//! that did something different.
//!
//! - All hosts: every host's lines interleaved in arrival order, each behind a coloured host
//!   tag; `[`/`]` keep one host only, `/` keeps the lines containing a text (as in k9s).
//! - Split: 2–4 hosts side by side, from the selected one on.
//! - Diff: the selected host's output against the output most hosts printed, as a line diff.

use super::app::{App, Focus};
use super::log_text::{log_lines, styled};
use super::logview::LogView;
use super::model::{DispatchView, timestamp};
use super::widgets::{fit, pane};
use crate::transport::Stream;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use std::collections::HashMap;

/// Tag colours, cycled by host. Named ANSI colours: the terminal's own palette keeps them
/// readable on its background.
const TAGS: [Color; 6] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Blue,
    Color::Red,
];

/// The style of host `i`'s tag.
pub fn tag_style(i: usize) -> Style {
    Style::new()
        .fg(TAGS[i % TAGS.len()])
        .add_modifier(Modifier::BOLD)
}

/// The host index `host_filter` names in `d`, if any.
pub fn host_index(d: &DispatchView, view: &LogView) -> Option<usize> {
    let h = view.host_filter.as_deref()?;
    d.targets.iter().position(|t| t.host == h)
}

/// The top row of a list `first..end` shown `height` rows high under `top`.
fn top_row(top: Option<u64>, first: u64, end: u64, height: usize) -> u64 {
    match top {
        Some(t) => t.clamp(first, end.saturating_sub(1).max(first)),
        None => end.saturating_sub(height as u64).max(first),
    }
}

/// Scrolls a list view like the one-host log: up leaves follow, the bottom returns to it.
pub fn scroll(top: &mut Option<u64>, first: u64, end: u64, height: usize, delta: i64) {
    let cur = top_row(*top, first, end, height) as i64;
    let bottom = end.saturating_sub(height as u64).max(first) as i64;
    let new = (cur + delta).clamp(first as i64, bottom.max(first as i64));
    *top = if delta > 0 && new >= bottom {
        None
    } else {
        Some(new as u64)
    };
}

fn no_dispatch(f: &mut Frame, app: &App, area: Rect, title: &str) {
    let block = pane(app, Focus::Log, title.to_owned(), "");
    let inner = block.inner(area);
    f.render_widget(block, area);
    f.render_widget(
        Paragraph::new(Line::styled(" select a dispatch", app.theme.dim)),
        inner,
    );
}

fn follow_flag(top: Option<u64>) -> &'static str {
    if top.is_none() { "follow" } else { "scrolled" }
}

/// All hosts, interleaved.
pub fn all_pane(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = app.selected_dispatch() else {
        return no_dispatch(f, app, area, "Log all hosts");
    };
    let host = host_index(d, &app.log);
    let mut merged = app.log.merged.0.borrow_mut();
    merged.update(d, host, app.log.search.as_deref());
    let mut title = format!("Log all hosts #{} [{}", d.id, follow_flag(app.log.view_top));
    if app.log.timestamps {
        title.push_str(" time");
    }
    title.push(']');
    if let Some(h) = &app.log.host_filter {
        title.push_str(&format!(" host {h}"));
    }
    let mut info = format!(" {} lines", merged.end() - merged.first());
    if let Some(s) = app.log.search.as_deref().filter(|s| !s.is_empty()) {
        info.push_str(&format!(" with /{s}"));
    }
    info.push(' ');
    let block = pane(app, Focus::Log, title, "")
        .title_bottom(Line::styled(info, app.theme.dim).right_aligned());
    let inner = block.inner(area);
    f.render_widget(block, area);
    app.log_height.set(inner.height as usize);
    let height = inner.height as usize;
    let tag_w = d
        .targets
        .iter()
        .map(|t| t.host.chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    let needle = app.log.search.as_ref().map(|s| s.to_lowercase());
    let start = top_row(app.log.view_top, merged.first(), merged.end(), height);
    let mut out = Vec::with_capacity(height);
    let mut row = start;
    while out.len() < height && row < merged.end() {
        let Some((ti, n)) = merged.get(row) else {
            break;
        };
        row += 1;
        let Some(t) = d.targets.get(ti as usize) else {
            continue;
        };
        let Some(l) = t.log.get(n) else { continue };
        let base = if l.marker {
            app.theme.header
        } else if l.stream == Stream::Stderr {
            app.theme.stderr
        } else {
            app.theme.stdout
        };
        let mut spans = Vec::new();
        if app.log.timestamps {
            spans.push(Span::styled(format!("{} ", timestamp(l.at)), app.theme.dim));
        }
        spans.push(Span::styled(fit(&t.host, tag_w), tag_style(ti as usize)));
        spans.push(Span::styled(" │ ", app.theme.dim));
        spans.extend(styled(
            l.text,
            l.runs,
            l.text,
            base,
            needle.as_deref(),
            app.theme.search_match,
            false,
        ));
        out.push(Line::from(spans));
    }
    if out.is_empty() {
        out.push(Line::styled(" no lines yet", app.theme.dim));
    }
    f.render_widget(Paragraph::new(out), inner);
}

/// The targets shown side by side: the selected one and the next ones (earlier ones when
/// the list ends first), `n` at most.
pub fn split_hosts(app: &App, n: usize) -> Vec<usize> {
    let visible = app.visible(3);
    if visible.is_empty() {
        return Vec::new();
    }
    let pos = app.selected[3].min(visible.len() - 1);
    let n = n.min(visible.len());
    let start = pos.min(visible.len() - n);
    visible[start..start + n].to_vec()
}

/// 2–4 hosts side by side.
pub fn split_pane(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = app.selected_dispatch() else {
        return no_dispatch(f, app, area, "Log split");
    };
    let hosts = split_hosts(app, app.log.split_columns());
    let title = format!(
        "Log split #{} · {} hosts [{}]",
        d.id,
        hosts.len(),
        follow_flag(app.log.view_top)
    );
    let block = pane(app, Focus::Log, title, "");
    let inner = block.inner(area);
    f.render_widget(block, area);
    if hosts.is_empty() {
        f.render_widget(
            Paragraph::new(Line::styled(" no hosts", app.theme.dim)),
            inner,
        );
        return;
    }
    let cols = Layout::horizontal(vec![Constraint::Ratio(1, hosts.len() as u32); hosts.len()])
        .split(inner);
    let selected = app.selected_target_index();
    for (k, (&ti, col)) in hosts.iter().zip(cols.iter()).enumerate() {
        let t = &d.targets[ti];
        let mut b = Block::new()
            .borders(if k + 1 < hosts.len() {
                Borders::TOP | Borders::RIGHT
            } else {
                Borders::TOP
            })
            .border_style(app.theme.border)
            .title(Line::from(vec![
                Span::styled(format!(" {}", t.host), tag_style(ti)),
                // The selected host: where [ ] and the Targets list are.
                Span::styled(
                    if Some(ti) == selected { " ◂ " } else { " " },
                    app.theme.title,
                ),
            ]));
        b = b.title_bottom(Line::styled(format!(" {} ", t.status()), app.theme.dim));
        let body = b.inner(*col);
        f.render_widget(b, *col);
        app.log_height.set(body.height as usize);
        // Every column scrolled back by the same number of lines from its newest one.
        let mut view = LogView {
            wrap: app.log.wrap,
            timestamps: app.log.timestamps,
            search: app.log.search.clone(),
            ..LogView::default()
        };
        if let Some(back) = app.log.view_top {
            view.top = Some(
                t.log
                    .end()
                    .saturating_sub(body.height as u64 + back)
                    .max(t.log.first()),
            );
        }
        let lines = log_lines(
            app,
            &view,
            &t.log,
            body.width as usize,
            body.height as usize,
        );
        f.render_widget(Paragraph::new(lines), body);
    }
}

/// One row of the diff view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffRow {
    /// Printed by this host and by the majority.
    Same(String),
    /// Printed by the majority, not by this host.
    Missing(String),
    /// Printed by this host, not by the majority.
    Extra(String),
}

/// The diff of one host's output against the majority's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The hosts whose output is the most common one (the "majority", or the largest group
    /// when no output is shared by more than half).
    pub majority: Vec<String>,
    /// Hosts whose output differs from it.
    pub differing: Vec<String>,
    pub rows: Vec<DiffRow>,
}

/// The remote output of target `ti`: its lines, without the console's own step markers
/// (their durations differ on every host).
fn output_of(d: &DispatchView, ti: usize) -> Vec<&str> {
    d.targets[ti]
        .log
        .iter()
        .filter(|(_, l)| !l.marker)
        .map(|(_, l)| l.text)
        .collect()
}

/// What a diff depends on: the dispatch, the host, and every log's extent.
type DiffKey = (i64, usize, u64);

thread_local! {
    /// The last diff drawn: a finished dispatch's diff is computed once, not per frame or
    /// per scroll key.
    static LAST_DIFF: std::cell::RefCell<Option<(DiffKey, std::rc::Rc<Diff>)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`diff`], cached while nothing it reads changed.
pub fn diff_cached(d: &DispatchView, host: usize) -> std::rc::Rc<Diff> {
    let extent = d.targets.iter().fold(0u64, |h, t| {
        h.wrapping_mul(1_000_003)
            .wrapping_add(t.log.first() ^ t.log.end().rotate_left(32))
    });
    let key = (d.id, host, extent);
    LAST_DIFF.with(|c| {
        if let Some((k, v)) = &*c.borrow()
            && *k == key
        {
            return v.clone();
        }
        let v = std::rc::Rc::new(diff(d, host));
        *c.borrow_mut() = Some((key, v.clone()));
        v
    })
}

/// Groups the hosts by identical output and diffs `host` against the biggest group.
pub fn diff(d: &DispatchView, host: usize) -> Diff {
    let outputs: Vec<Vec<&str>> = (0..d.targets.len()).map(|i| output_of(d, i)).collect();
    let mut groups: HashMap<&[&str], Vec<usize>> = HashMap::new();
    for (i, o) in outputs.iter().enumerate() {
        groups.entry(o.as_slice()).or_default().push(i);
    }
    // The biggest group; ties go to the one with the first host, so the choice is stable.
    let majority = groups
        .values()
        .max_by_key(|g| (g.len(), std::cmp::Reverse(g[0])))
        .cloned()
        .unwrap_or_default();
    let reference: &[&str] = majority.first().map_or(&[], |&i| outputs[i].as_slice());
    let mine: &[&str] = outputs.get(host).map_or(&[], |o| o.as_slice());
    let ops = similar::capture_diff_slices(similar::Algorithm::Myers, reference, mine);
    let mut rows = Vec::new();
    for op in &ops {
        for change in op.iter_changes(reference, mine) {
            let text = change.value().to_owned();
            rows.push(match change.tag() {
                similar::ChangeTag::Equal => DiffRow::Same(text),
                similar::ChangeTag::Delete => DiffRow::Missing(text),
                similar::ChangeTag::Insert => DiffRow::Extra(text),
            });
        }
    }
    let name = |i: &usize| d.targets[*i].host.clone();
    Diff {
        differing: (0..d.targets.len())
            .filter(|i| !majority.contains(i))
            .map(|i| name(&i))
            .collect(),
        majority: majority.iter().map(name).collect(),
        rows,
    }
}

/// The selected host against the majority.
pub fn diff_pane(f: &mut Frame, app: &App, area: Rect) {
    let (Some(d), Some(ti)) = (app.selected_dispatch(), app.selected_target_index()) else {
        return no_dispatch(f, app, area, "Log diff");
    };
    let host = &d.targets[ti].host;
    let diff = diff_cached(d, ti);
    let same = diff.majority.iter().any(|h| h == host);
    let title = format!(
        "Log diff {host} vs majority #{} [{}]",
        d.id,
        follow_flag(app.log.view_top)
    );
    let changed = diff
        .rows
        .iter()
        .filter(|r| !matches!(r, DiffRow::Same(_)))
        .count();
    let info = format!(" {} lines, {changed} differ ", diff.rows.len());
    let block = pane(app, Focus::Log, title, "")
        .title_bottom(Line::styled(info, app.theme.dim).right_aligned());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let n = d.targets.len();
    let head = if same {
        format!(
            " {host} printed what {} of {n} hosts printed; differing: {}",
            diff.majority.len(),
            if diff.differing.is_empty() {
                "none".to_owned()
            } else {
                diff.differing.join(", ")
            }
        )
    } else {
        format!(
            " {host} differs from {} of {n} hosts ({}): - only they printed, + only {host}",
            diff.majority.len(),
            diff.majority.join(", ")
        )
    };
    let height = (inner.height as usize).saturating_sub(1);
    app.log_height.set(height.max(1));
    let mut out = vec![Line::styled(
        fit(&head, inner.width as usize),
        app.theme.header,
    )];
    let total = diff.rows.len() as u64;
    let start = top_row(app.log.view_top, 0, total, height);
    for r in diff.rows.iter().skip(start as usize).take(height) {
        out.push(match r {
            DiffRow::Same(t) => Line::from(vec![
                Span::styled("  ", app.theme.dim),
                Span::styled(t.clone(), app.theme.stdout),
            ]),
            DiffRow::Missing(t) => Line::styled(
                format!("- {t}"),
                app.theme.stderr.add_modifier(Modifier::BOLD),
            ),
            DiffRow::Extra(t) => {
                Line::styled(format!("+ {t}"), Style::new().fg(Color::Green).bold())
            }
        });
    }
    f.render_widget(Paragraph::new(out), inner);
}

/// Rows of the view the log pane shows now, for scrolling: `(first, end)`.
pub fn rows_of(app: &App) -> Option<(u64, u64)> {
    let d = app.selected_dispatch()?;
    match app.log.mode {
        super::logview::LogMode::All => {
            let host = host_index(d, &app.log);
            let mut m = app.log.merged.0.borrow_mut();
            m.update(d, host, app.log.search.as_deref());
            Some((m.first(), m.end()))
        }
        super::logview::LogMode::Diff => {
            let ti = app.selected_target_index()?;
            Some((0, diff_cached(d, ti).rows.len() as u64))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::tui::merged::tests::dispatch;

    #[test]
    fn diff_against_the_majority() {
        let d = dispatch(&[
            ("a", 1, "start"),
            ("a", 2, "ok"),
            ("b", 1, "start"),
            ("b", 2, "error: disk full"),
            ("c", 1, "start"),
            ("c", 2, "ok"),
        ]);
        let x = diff(&d, 1);
        assert_eq!(x.majority, ["a", "c"]);
        assert_eq!(x.differing, ["b"]);
        assert_eq!(
            x.rows,
            [
                DiffRow::Same("start".into()),
                DiffRow::Missing("ok".into()),
                DiffRow::Extra("error: disk full".into())
            ]
        );
        let y = diff(&d, 0);
        assert!(y.rows.iter().all(|r| matches!(r, DiffRow::Same(_))));
    }
}
