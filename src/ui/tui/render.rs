//! Drawing the panes from [`App`] state. Only what is visible is built: a list of 1,000
//! hosts or a log of 100,000 lines costs one screenful per frame.

use super::app::{App, Focus, Overlay, PackageItem};
use super::dialogs;
use super::log_pane::log_pane as draw_log_pane;
pub use super::log_pane::timestamp;
use super::model::elapsed;
use super::watch_view::{Stage, WatchedBundle};
use crate::engine::events::TargetResult;
use crate::journal::DispatchState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use std::cell::Cell;

/// The log pane (drawn by `log_pane`), noting where for the mouse.
fn log_pane(f: &mut Frame, app: &App, area: Rect) {
    app.areas.borrow_mut().push((Focus::Log, area));
    draw_log_pane(f, app, area);
}

/// Below this width the panes stack in one column.
pub const NARROW: u16 = 100;

/// Below this many body rows (a terminal under 20 rows) one pane shows at a time.
pub const COMPACT: u16 = 18;

pub fn draw(f: &mut Frame, app: &App) {
    app.begin_frame();
    app.areas.borrow_mut().clear();
    let area = f.area();
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Block::new().style(app.theme.text), area);
    let compact = body.height < COMPACT;
    if compact {
        pane_tabs(f, app, top);
    } else {
        title_bar(f, app, top);
    }
    status_bar(f, app, bottom);
    if app.log.fullscreen {
        log_pane(f, app, body);
    } else if compact {
        // Too short to stack panes usefully (Targets showed only its header): the focused
        // pane takes the whole body; Tab and 1-5 switch, the tabs above say which is where.
        match app.focus {
            Focus::Hosts => hosts_pane(f, app, body),
            Focus::Packages => packages_pane(f, app, body),
            Focus::Dispatches => dispatches_pane(f, app, body),
            Focus::Targets => targets_pane(f, app, body),
            Focus::Log => log_pane(f, app, body),
        }
    } else if area.width < NARROW {
        narrow(f, app, body);
    } else {
        wide(f, app, body);
    }
    dialogs::draw(f, app, area);
}

fn wide(f: &mut Frame, app: &App, body: Rect) {
    // The Hosts list has many columns (reachability, lock, versions): focused, it gets room.
    let share = if app.focus == Focus::Hosts { 70 } else { 48 };
    let [left, right] = Layout::horizontal([
        Constraint::Percentage(share),
        Constraint::Percentage(100 - share),
    ])
    .areas(body);
    let [hosts, packages, dispatches] = Layout::vertical([
        Constraint::Percentage(40),
        Constraint::Percentage(25),
        Constraint::Percentage(35),
    ])
    .areas(left);
    hosts_pane(f, app, hosts);
    packages_pane(f, app, packages);
    dispatches_pane(f, app, dispatches);
    let [targets, log] = right_split(app, right);
    targets_pane(f, app, targets);
    log_pane(f, app, log);
}

fn right_split(app: &App, area: Rect) -> [Rect; 2] {
    let n = app.selected_dispatch().map_or(0, |d| d.targets.len()) as u16;
    let want = (n + 4).max(6).min((area.height * 2 / 5).max(3));
    Layout::vertical([Constraint::Length(want), Constraint::Min(3)]).areas(area)
}

/// One list at a time (the focused one, else Dispatches), then Targets, then the log.
fn narrow(f: &mut Frame, app: &App, body: Rect) {
    let [list, rest] =
        Layout::vertical([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(body);
    match app.focus {
        Focus::Hosts => hosts_pane(f, app, list),
        Focus::Packages => packages_pane(f, app, list),
        _ => dispatches_pane(f, app, list),
    }
    let [targets, log] = right_split(app, rest);
    targets_pane(f, app, targets);
    log_pane(f, app, log);
}

fn title_bar(f: &mut Frame, app: &App, area: Rect) {
    let running = app.running();
    let mut spans = vec![
        Span::styled(" dropship ", app.theme.title),
        Span::styled(format!("{} ", app.env.config.path.display()), app.theme.dim),
    ];
    if running > 0 {
        spans.push(Span::styled(
            format!(" {running} running "),
            app.theme.running,
        ));
    }
    let elsewhere = app.elsewhere();
    if elsewhere > 0 {
        spans.push(Span::styled(
            format!(" {elsewhere} running elsewhere "),
            app.theme.running,
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The compact layout's top line: every pane by number, the shown one highlighted.
fn pane_tabs(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (i, p) in Focus::ALL.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" "));
        }
        let text = format!("{} {}", i + 1, p.title());
        spans.push(if *p == app.focus {
            Span::styled(text, app.theme.selected)
        } else {
            Span::styled(text, app.theme.dim)
        });
    }
    let running = app.running();
    if running > 0 {
        spans.push(Span::styled(
            format!(" {running} running"),
            app.theme.running,
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn status_bar(f: &mut Frame, app: &App, area: Rect) {
    let mut right = Vec::new();
    if app.shed > 0 {
        right.push(Span::styled(
            format!(" {} lines shed ", app.shed),
            app.theme.warning,
        ));
    }
    if app.mouse {
        right.push(Span::raw(" mouse "));
    }
    if let Some(w) = &app.watch {
        right.push(if w.paused {
            Span::styled(
                " watch PAUSED (a resumes) ",
                app.theme.warning.add_modifier(
                    ratatui::style::Modifier::BOLD | ratatui::style::Modifier::REVERSED,
                ),
            )
        } else if w.active {
            Span::styled(format!(" watch on · {} queued ", w.queued()), app.theme.ok)
        } else {
            Span::styled(" watch stopped ", app.theme.warning)
        });
    }
    right.push(Span::raw(format!(" {} ", app.theme.name)));
    let rw: u16 = right.iter().map(|s| s.content.chars().count() as u16).sum();
    let [l, r] = Layout::horizontal([Constraint::Min(1), Constraint::Length(rw)]).areas(area);
    // A long message is cut with `…` a column short of the right side, so it never runs
    // into the watch and theme indicators.
    let room = (l.width as usize).saturating_sub(1);
    let cut = |t: String| {
        if t.chars().count() > room {
            fit(&t, room)
        } else {
            t
        }
    };
    let left = match &app.status {
        Some(s) => Line::from(Span::styled(
            cut(format!(" {}", s.text)),
            if s.error {
                app.theme.status_error
            } else {
                app.theme.status_bar
            },
        )),
        None => match down_reason(app) {
            // The whole DOWN reason of the selected host: the REACH column cuts it.
            Some(text) => Line::from(Span::styled(cut(text), app.theme.warning)),
            None => Line::from(cut(format!(
                " {} · {}{} · ? help · q quit",
                app.focus.title(),
                super::keys::hints(app.focus),
                if app.watch.is_some() {
                    " · a pause"
                } else {
                    ""
                }
            ))),
        },
    };
    f.render_widget(Paragraph::new(left).style(app.theme.status_bar), l);
    f.render_widget(
        Paragraph::new(Line::from(right)).style(app.theme.status_bar),
        r,
    );
}

pub use super::widgets::{fit, pane};

/// ` web3 DOWN: connect 10.0.0.3:22: connection refused` for the selected host of the
/// focused Hosts pane, when it is down.
fn down_reason(app: &App) -> Option<String> {
    if app.focus != Focus::Hosts {
        return None;
    }
    let h = &app.hosts[*app.visible(0).get(app.selected[0])?];
    match h.reach_shown() {
        super::model::ReachShown::Down { error } => {
            Some(format!(" {} DOWN: {}", h.name, error.replace('\n', " ")))
        }
        _ => None,
    }
}

/// The width of a name column: the longest name, at least the header and its sort mark
/// (`HOST▲`), at most `max`.
fn name_width<'a>(names: impl Iterator<Item = &'a str>, max: u16) -> i16 {
    let longest = names.map(|n| n.chars().count()).max().unwrap_or(0);
    longest.clamp(5, max.max(5) as usize).min(i16::MAX as usize) as i16
}

/// A list's header with `▲`/`▼` after the column it is sorted by (`o`, `O`).
fn sorted_header(app: &App, l: usize, header: &[&str]) -> Vec<String> {
    let sorted =
        app.sort[l].map(|(c, desc)| (super::app::sort_columns(l)[c], if desc { "▼" } else { "▲" }));
    header
        .iter()
        .map(|h| match sorted {
            Some((name, arrow)) if name == *h => format!("{h}{arrow}"),
            _ => (*h).to_owned(),
        })
        .collect()
}

/// A list's count for its title: `12`, or `3/12` while a filter hides some.
fn count(app: &App, l: usize, shown: usize, total: usize) -> String {
    if app.filters[l].is_empty() {
        total.to_string()
    } else {
        format!("{shown}/{total}")
    }
}

/// Column widths: a positive entry is a fixed width, a negative one a share of what is
/// left (`-2` gets twice what `-1` gets).
fn widths(total: u16, cols: &[i16]) -> Vec<usize> {
    let fixed: usize = cols
        .iter()
        .filter(|c| **c > 0)
        .map(|c| *c as usize)
        .sum::<usize>()
        + cols.len().saturating_sub(1);
    let shares: usize = cols
        .iter()
        .filter(|c| **c < 0)
        .map(|c| c.unsigned_abs() as usize)
        .sum();
    let left = (total as usize).saturating_sub(fixed);
    cols.iter()
        .map(|c| {
            if *c > 0 {
                *c as usize
            } else {
                (left * c.unsigned_abs() as usize / shares.max(1)).max(3)
            }
        })
        .collect()
}

fn row<'a>(cells: Vec<(String, Style)>, widths: &[usize]) -> Line<'a> {
    let mut spans = Vec::with_capacity(cells.len() * 2);
    for (i, ((text, style), w)) in cells.into_iter().zip(widths).enumerate() {
        if i > 0 {
            spans.push(Span::raw(" "));
        }
        spans.push(Span::styled(fit(&text, *w), style));
    }
    Line::from(spans)
}

/// The first row to show so that `selected` stays in view.
fn window(offset: &Cell<usize>, selected: usize, height: usize, len: usize) -> usize {
    let mut off = offset.get();
    if selected < off {
        off = selected;
    } else if height > 0 && selected >= off + height {
        off = selected + 1 - height;
    }
    off = off.min(len.saturating_sub(height));
    offset.set(off);
    off
}

/// Renders a list: header, then the visible rows built by `make`.
#[allow(clippy::too_many_arguments)]
fn draw_list(
    f: &mut Frame,
    app: &App,
    area: Rect,
    block: Block,
    l: usize,
    header: &[&str],
    cols: &[i16],
    rows: &[usize],
    make: &dyn Fn(usize) -> Vec<(String, Style)>,
    empty: &str,
) {
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let w = widths(inner.width, cols);
    let height = inner.height.saturating_sub(1) as usize;
    if app.focus.list() == Some(l) {
        app.list_height.set(height);
    }
    let mut lines = vec![row(
        header
            .iter()
            .map(|h| ((*h).to_owned(), app.theme.header))
            .collect(),
        &w,
    )];
    if rows.is_empty() {
        // A filter that matches nothing says so (not "no hosts in dispatch.cfg").
        let text = if app.filters[l].is_empty() {
            format!(" {empty}")
        } else {
            format!(" nothing matches /{} · Esc clears", app.filters[l])
        };
        lines.push(Line::styled(text, app.theme.dim));
    }
    let sel = app.selected[l].min(rows.len().saturating_sub(1));
    let off = window(&app.offsets[l], sel, height, rows.len());
    let focused = app.focus.list() == Some(l);
    // The selected row takes the selection style whole (cell colours would fight it). Only
    // the focused pane has the bar; an unfocused pane marks its row without one (in the
    // bar's colour, or underlined where the theme has none), so where keys go is plain.
    let sel_style = if focused {
        app.theme.selected
    } else {
        unfocused_selection(app)
    };
    for (i, &r) in rows.iter().enumerate().skip(off).take(height) {
        let mut cells = make(r);
        if i == sel {
            for c in &mut cells {
                c.1 = sel_style;
            }
        }
        let line = row(cells, &w);
        lines.push(if i == sel {
            line.style(sel_style)
        } else {
            line
        });
    }
    if rows.len() > height && height > 0 {
        let pos = format!(" {}/{} ", sel + 1, rows.len());
        let r = Rect {
            x: area.x + area.width.saturating_sub(pos.len() as u16 + 1),
            y: area.y + area.height - 1,
            width: pos.len() as u16,
            height: 1,
        };
        f.render_widget(Paragraph::new(Line::styled(pos, app.theme.dim)), r);
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// The selected row of a pane without the focus: the selection bar's colour as text, bold;
/// underlined and bold when the theme's bar has no colour (mono).
pub fn unfocused_selection(app: &App) -> Style {
    unfocused_selection_of(&app.theme)
}

pub fn unfocused_selection_of(theme: &super::theme::Theme) -> Style {
    use ratatui::style::Modifier;
    let sel = theme.selected;
    match sel.bg {
        Some(c) if c != ratatui::style::Color::Reset => {
            Style::new().fg(c).add_modifier(Modifier::BOLD)
        }
        _ => Style::new().add_modifier(Modifier::UNDERLINED | Modifier::BOLD),
    }
}

fn result_style(app: &App, r: Option<TargetResult>) -> Style {
    match r {
        Some(TargetResult::Succeeded) => app.theme.ok,
        Some(TargetResult::Failed) => app.theme.failed,
        Some(TargetResult::Skipped) => app.theme.skipped,
        Some(TargetResult::Cancelled) => app.theme.warning,
        None => app.theme.running,
    }
}

/// The reachability cell: `up 3ms`, `down: why`, `probing…`, or nothing yet.
fn reach_cell(app: &App, h: &super::model::HostRow) -> (String, Style) {
    use super::model::ReachShown;
    match h.reach_shown() {
        ReachShown::Unknown => (String::new(), app.theme.dim),
        ReachShown::Probing => ("probing…".into(), app.theme.running),
        ReachShown::Up { millis: Some(ms) } => (format!("up {ms}ms"), app.theme.ok),
        ReachShown::Up { millis: None } => ("up".into(), app.theme.ok),
        // Words and bold, so `mono` shows it too.
        ReachShown::Down { error } => (
            format!("DOWN {error}"),
            app.theme
                .failed
                .add_modifier(ratatui::style::Modifier::BOLD),
        ),
    }
}

/// From this inner width the Hosts list shows the rules and protocols too.
const HOSTS_FULL: u16 = 110;
/// Below this inner width it shows only host, reachability and the last dispatch (the lock
/// and the installed version show when it is focused, in `p` and in `v`).
const HOSTS_LEAN: u16 = 70;

fn hosts_pane(f: &mut Frame, app: &App, area: Rect) {
    app.areas.borrow_mut().push((Focus::Hosts, area));
    let rows = app.visible(0);
    let block = pane(
        app,
        Focus::Hosts,
        format!("Hosts {}", count(app, 0, rows.len(), app.hosts.len())),
        &app.filters[0],
    );
    let width = block.inner(area).width;
    let full = width >= HOSTS_FULL;
    let lean = width < HOSTS_LEAN;
    let make = |i: usize| {
        let h = &app.hosts[i];
        let (last, style, at, version) = match &h.last {
            Some(l) => (
                l.result.as_str().to_owned(),
                result_style(app, Some(l.result)),
                l.finished_at.map(|t| app.ago(t)).unwrap_or_default(),
                l.last_succeeded
                    .as_ref()
                    .map(|s| s.bundle.clone())
                    .unwrap_or_else(|| "-".into()),
            ),
            None => ("never".into(), app.theme.dim, String::new(), "-".into()),
        };
        let lock = (
            super::model::lock_text(&h.lock),
            match &h.lock {
                Some(Some(_)) => app
                    .theme
                    .warning
                    .add_modifier(ratatui::style::Modifier::BOLD),
                _ => app.theme.dim,
            },
        );
        let mut cells = vec![(h.name.clone(), app.theme.text)];
        if full {
            cells.push((h.labels.join(", "), app.theme.dim));
            cells.push((h.protocols.join(","), app.theme.text));
        }
        cells.push(reach_cell(app, h));
        if !lean {
            cells.push(lock);
            cells.push((h.installed_text(), app.theme.text));
        }
        cells.extend([
            (last, style),
            (at, app.theme.dim),
            (version, app.theme.text),
        ]);
        cells
    };
    // The host column is as wide as the longest name (up to a third of the pane): names
    // are what the user looks for, the shares split what is left.
    let host_w = name_width(app.hosts.iter().map(|h| h.name.as_str()), width / 3);
    let (header, cols): (&[&str], Vec<i16>) = if full {
        (
            &[
                "HOST", "RULE", "PROTO", "REACH", "LOCK", "VERSION", "LAST", "WHEN", "SHIPPED",
            ],
            vec![host_w, -2, 5, -4, -4, -2, 9, 8, -3],
        )
    } else if !lean {
        (
            &[
                "HOST", "REACH", "LOCK", "VERSION", "LAST", "WHEN", "SHIPPED",
            ],
            vec![host_w, -3, -3, -2, 9, 8, -3],
        )
    } else {
        (
            &["HOST", "REACH", "LAST", "WHEN", "SHIPPED"],
            vec![host_w, -3, 9, 8, -3],
        )
    };
    let cols = &cols[..];
    draw_list(
        f,
        app,
        area,
        block,
        0,
        &sorted_header(app, 0, header)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        cols,
        &rows,
        &make,
        "no hosts in dispatch.cfg",
    );
}

fn packages_pane(f: &mut Frame, app: &App, area: Rect) {
    app.areas.borrow_mut().push((Focus::Packages, area));
    let rows = app.visible(1);
    let mut title = format!(
        "Packages {}",
        count(app, 1, rows.len(), app.package_count())
    );
    if let Some(w) = &app.watch {
        title.push_str(" · ");
        title.push_str(&w.header());
    }
    let block = pane(app, Focus::Packages, title, &app.filters[1]);
    let make = |i: usize| match app.package_item(i) {
        Some(PackageItem::Watched(b)) => watched_row(app, b),
        Some(PackageItem::Listed(p)) => listed_row(app, p),
        None => Vec::new(),
    };
    let (header, cols, empty): (&[&str], &[i16], &str) = if app.watch.is_some() {
        (
            &["BUNDLE", "RULE", "STATE / LAST", "WHEN"],
            &[-3, -2, -4, 8],
            "nothing in the watched folder yet",
        )
    } else {
        (
            &["BUNDLE", "RULE", "LAST", "WHEN"],
            &[-3, -2, 11, 8],
            "no bundles (--packages DIR, or dispatch one with d)",
        )
    };
    draw_list(f, app, area, block, 1, header, cols, &rows, &make, empty);
}

/// A rule as the screen names it: its package label (`app`), as in Hosts, unless another
/// rule shares the label (then its section name).
fn rule_label(app: &App, rule: &str) -> String {
    match app.env.config.rules.iter().find(|r| r.name == rule) {
        Some(r) => app.rule_word(r),
        None => rule.to_owned(),
    }
}

fn rule_cell(app: &App, rule: Option<&str>) -> (String, Style) {
    match rule {
        Some(r) => (format!("[{}]", rule_label(app, r)), app.theme.dim),
        None => ("no rule".into(), app.theme.warning),
    }
}

/// A bundle of the watched folder: where it stands, in words.
fn watched_row(app: &App, b: &WatchedBundle) -> Vec<(String, Style)> {
    use crate::journal::BundleState;
    let style = match &b.stage {
        Stage::Seen | Stage::Staging | Stage::Queued => app.theme.text,
        Stage::Writing | Stage::AwaitingMarker { .. } => app.theme.dim,
        Stage::Dispatching { .. } => app.theme.running,
        Stage::Suspended { .. } => app.theme.warning,
        Stage::Finished { state, .. } => match state {
            BundleState::Done => app.theme.ok,
            BundleState::Duplicate | BundleState::Vanished => app.theme.dim,
            BundleState::Failed | BundleState::Unmatched => app.theme.failed,
            _ => app.theme.text,
        },
    };
    let rule = match (&b.rule, &b.stage) {
        (None, Stage::Finished { .. } | Stage::Queued) if b.bundle.is_some() => {
            rule_cell(app, None)
        }
        (None, _) => (String::new(), app.theme.dim),
        (Some(r), _) => rule_cell(app, Some(r)),
    };
    vec![
        (b.name.clone(), app.theme.text),
        rule,
        (b.text(), style),
        (app.ago(b.at), app.theme.dim),
    ]
}

fn listed_row(app: &App, p: &super::model::PackageRow) -> Vec<(String, Style)> {
    let (last, style, at) = match &p.last {
        Some(s) => {
            let style = if s.failed > 0 {
                app.theme.failed
            } else if s.state == DispatchState::Finished {
                app.theme.ok
            } else {
                app.theme.warning
            };
            let text = if s.state == DispatchState::Finished {
                format!("{}/{} ok", s.succeeded, s.hosts)
            } else {
                s.state.to_string()
            };
            (text, style, app.ago(s.started_at))
        }
        None => ("never".into(), app.theme.dim, String::new()),
    };
    vec![
        (p.name.clone(), app.theme.text),
        rule_cell(app, p.rule.as_deref()),
        (last, style),
        (at, app.theme.dim),
    ]
}

fn state_style(app: &App, s: DispatchState) -> Style {
    match s {
        DispatchState::Running => app.theme.running,
        DispatchState::Finished => app.theme.ok,
        DispatchState::Interrupted | DispatchState::Cancelled => app.theme.warning,
    }
}

fn dispatches_pane(f: &mut Frame, app: &App, area: Rect) {
    app.areas.borrow_mut().push((Focus::Dispatches, area));
    let rows = app.visible(2);
    let mut title = format!(
        "Dispatches {}",
        count(app, 2, rows.len(), app.dispatches.len())
    );
    if app.follow {
        title.push_str(" · following (F)");
    }
    let block = pane(app, Focus::Dispatches, title, &app.filters[2]);
    // Who started each dispatch from where, once someone else (or another machine) did:
    // alone on one machine the column would only repeat the same name.
    let me = crate::journal::follow::this_origin();
    let by_column = app
        .dispatches
        .iter()
        .any(|d| d.foreign || d.by.as_deref().is_some_and(|b| b != me));
    let make = |i: usize| {
        let d = &app.dispatches[i];
        let style = if d.state == DispatchState::Finished
            && (d.count(TargetResult::Failed) > 0 || (d.targets.is_empty() && d.counts.1 > 0))
        {
            app.theme.failed
        } else {
            state_style(app, d.state)
        };
        let time = if d.is_running() {
            elapsed(app.now - d.started_at)
        } else {
            d.finished_at
                .map(|f| elapsed(f - d.started_at))
                .unwrap_or_default()
        };
        let mut cells = vec![
            (format!("#{}", d.id), app.theme.dim),
            (d.bundle.clone(), app.theme.text),
            (
                if d.cancelling && d.is_running() {
                    "cancelling".into()
                } else {
                    d.state.to_string()
                },
                style,
            ),
            (d.result_text(), style),
            (time, app.theme.dim),
        ];
        if by_column {
            let by = d.by.clone().unwrap_or_default();
            let style = if d.foreign {
                app.theme.text
            } else {
                app.theme.dim
            };
            cells.insert(2, (by, style));
        }
        cells
    };
    let (header, cols): (&[&str], &[i16]) = if by_column {
        (
            &["ID", "BUNDLE", "BY", "STATE", "RESULT", "TIME"],
            &[5, -1, -1, 10, 16, 7],
        )
    } else {
        (
            &["ID", "BUNDLE", "STATE", "RESULT", "TIME"],
            &[5, -1, 10, 16, 7],
        )
    };
    draw_list(
        f,
        app,
        area,
        block,
        2,
        header,
        cols,
        &rows,
        &make,
        "no dispatches yet: d or :dispatch FILE",
    );
}

/// `█████░░░░░ 45%`
pub fn gauge(ratio: f64, w: usize) -> String {
    let bar = w.saturating_sub(5);
    let full = ((ratio * bar as f64).round() as usize).min(bar);
    format!(
        "{}{} {:>3}%",
        "█".repeat(full),
        "░".repeat(bar - full),
        (ratio * 100.0).round() as u32
    )
}

fn targets_pane(f: &mut Frame, app: &App, area: Rect) {
    app.areas.borrow_mut().push((Focus::Targets, area));
    let d = app.selected_dispatch();
    let title = match d {
        Some(d) => format!(
            "Targets {}#{} {} [{}]{}",
            if app.filters[3].is_empty() {
                String::new()
            } else {
                format!("{}/{} ", app.visible(3).len(), d.targets.len())
            },
            d.id,
            d.bundle,
            rule_label(app, &d.rule),
            match (&d.by, d.foreign) {
                (Some(by), true) => format!(" · by {by} (another process)"),
                (None, true) => " · another process".to_owned(),
                _ => String::new(),
            }
        ),
        None => "Targets".into(),
    };
    let mut block = pane(app, Focus::Targets, title, &app.filters[3]);
    if let Some(d) = d {
        let summary = format!(" {} ", d.summary_line(app.now));
        let room = (area.width as usize).saturating_sub(2);
        let used = summary.chars().count();
        block = block.title_bottom(Span::styled(fit(&summary, used.min(room)), app.theme.dim));
        // The last notice takes what the summary leaves, cut at its end (a long one drawn
        // right-aligned lost its start: `└e; if they are stopped…`).
        if let Some((level, msg)) = d.notices.last() {
            let style = if *level == crate::engine::events::Level::Warning {
                app.theme.warning
            } else {
                app.theme.dim
            };
            let left = room.saturating_sub(used + 1);
            let text = format!(" {msg} ");
            if left >= 12 {
                let w = text.chars().count().min(left);
                block = block.title_bottom(Line::styled(fit(&text, w), style).right_aligned());
            }
        }
    }
    let rows = app.visible(3);
    let Some(d) = d else {
        let inner = block.inner(area);
        f.render_widget(block, area);
        f.render_widget(
            Paragraph::new(Line::styled(" select a dispatch", app.theme.dim)),
            inner,
        );
        return;
    };
    let now = app.now;
    let make = |i: usize| {
        let t = &d.targets[i];
        let style = result_style(app, t.result);
        let time = match (t.started_at, t.finished_at) {
            (Some(s), Some(e)) => elapsed(e - s),
            (Some(s), None) if d.is_running() => elapsed(now - s),
            _ => String::new(),
        };
        let progress = if t.progress.total > 0 || t.progress.verified {
            gauge(t.progress.ratio(), 16)
        } else {
            String::new()
        };
        vec![
            (t.host.clone(), app.theme.text),
            (t.status(), style),
            (progress, app.theme.gauge),
            (time, app.theme.dim),
            (t.why(), app.theme.failed),
        ]
    };
    let host_w = name_width(
        d.targets.iter().map(|t| t.host.as_str()),
        block.inner(area).width / 3,
    );
    // Without an upload in progress the gauge column only needs its header.
    let upload_w = if d
        .targets
        .iter()
        .any(|t| t.progress.total > 0 || t.progress.verified)
    {
        16
    } else {
        6
    };
    draw_list(
        f,
        app,
        area,
        block,
        3,
        &sorted_header(app, 3, &["HOST", "STEP", "UPLOAD", "TIME", "ERROR"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[host_w, 17, upload_w, 7, -1],
        &rows,
        &make,
        "no hosts",
    );
}

/// True while any overlay that takes typed text is open (the cursor is shown then).
pub fn wants_cursor(app: &App) -> bool {
    matches!(
        app.overlay,
        Some(
            Overlay::Palette { .. }
                | Overlay::PathEntry { .. }
                | Overlay::Filter { .. }
                | Overlay::Search { .. }
        )
    )
}
