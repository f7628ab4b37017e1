//! Overlays: help, command palette, bundle path entry, confirmations (whose default button
//! is always the harmless one), history, and the filter/search prompts.

use super::app::{App, Confirm, Overlay, Topic};
use super::keys;
use super::model::{elapsed, when};
use super::widgets::fit;
pub use super::widgets::{centered, frame, wrap_lines};
use crate::plan::{Plan, Source};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use tui_input::Input;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let Some(o) = &app.overlay else { return };
    match o {
        Overlay::Help { scroll, topic } => help(f, app, area, *scroll, *topic),
        Overlay::Probe { scroll } => super::fleet_dialogs::probe(f, app, area, *scroll),
        Overlay::Versions { scroll } => super::fleet_dialogs::versions(f, app, area, *scroll),
        Overlay::Palette {
            input,
            candidates,
            error,
        } => prompt(
            f,
            app,
            area,
            "Command",
            ":",
            input,
            candidates,
            error.as_deref(),
        ),
        Overlay::PathEntry {
            input,
            candidates,
            error,
        } => path_entry(f, app, area, input, candidates, error.as_deref()),
        Overlay::Confirm { what, ok } => confirm(f, app, area, what, *ok),
        Overlay::Actions { target, items } => {
            super::run_dialog::actions_menu(f, app, area, target, items)
        }
        Overlay::History { rows, selected } => history(f, app, area, rows, *selected),
        Overlay::Filter { input, .. } => prompt(
            f,
            app,
            area,
            &format!("Filter {}", app.focus.title()),
            "/",
            input,
            &[],
            None,
        ),
        Overlay::Search { input } => prompt(f, app, area, "Search log", "/", input, &[], None),
        Overlay::Details { scroll } => super::details::draw(f, app, area, *scroll),
    }
}

fn help(f: &mut Frame, app: &App, area: Rect, scroll: usize, topic: Option<Topic>) {
    let (title, sections) = match topic {
        Some(t) => (keys::topic_title(t), keys::for_topic(t)),
        None => (app.focus.title(), app.help()),
    };
    let mut lines = Vec::new();
    for (name, keys) in &sections {
        lines.push(Line::styled(name.to_string(), app.theme.header));
        for (k, what) in keys.iter() {
            lines.push(Line::from(vec![
                Span::styled(format!("  {}", fit(k, 16)), app.theme.title),
                Span::styled(*what, app.theme.text),
            ]));
        }
        lines.push(Line::raw(""));
    }
    lines.pop();
    // Too many keys for the terminal: scroll, and the last line says so.
    let room = area.height.saturating_sub(3) as usize;
    let footer = if lines.len() > room {
        let max = lines.len() - room;
        let from = scroll.min(max);
        lines = lines.into_iter().skip(from).take(room).collect();
        format!(
            "j/k scroll ({}-{} of {}) · Esc or ? closes",
            from + 1,
            from + room,
            max + room
        )
    } else {
        "Esc or ? closes".to_owned()
    };
    lines.push(Line::styled(footer, app.theme.dim));
    let r = centered(area, 76, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(frame(app, &format!("Help: {title}"))),
        r,
    );
}

/// The bottom prompt for the palette, filters and search.
#[allow(clippy::too_many_arguments)]
fn prompt(
    f: &mut Frame,
    app: &App,
    area: Rect,
    title: &str,
    sigil: &str,
    input: &Input,
    candidates: &[String],
    error: Option<&str>,
) {
    let extra = if error.is_some() || !candidates.is_empty() {
        1
    } else {
        0
    };
    let h = 3 + extra;
    let r = Rect {
        x: area.x,
        y: area.y + area.height.saturating_sub(h + 1),
        width: area.width,
        height: h.min(area.height),
    };
    f.render_widget(Clear, r);
    let block = frame(app, title);
    let inner = block.inner(r);
    f.render_widget(block, r);
    input_line(f, app, inner, sigil, input);
    if inner.height > 1 {
        let line = match error {
            Some(e) => Line::styled(e.to_owned(), app.theme.failed),
            None => Line::styled(candidates.join("  "), app.theme.dim),
        };
        f.render_widget(
            Paragraph::new(line),
            Rect {
                y: inner.y + 1,
                height: 1,
                ..inner
            },
        );
    }
}

/// One line of text entry with the cursor placed in it.
fn input_line(f: &mut Frame, app: &App, r: Rect, sigil: &str, input: &Input) {
    let w = r.width.saturating_sub(sigil.len() as u16 + 1).max(1) as usize;
    let scroll = input.visual_scroll(w);
    let shown: String = input.value().chars().skip(scroll).collect();
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(sigil.to_owned(), app.theme.title),
            Span::styled(shown, app.theme.text),
        ])),
        Rect { height: 1, ..r },
    );
    let x = r.x + sigil.len() as u16 + (input.visual_cursor().saturating_sub(scroll)) as u16;
    f.set_cursor_position(Position::new(x.min(r.right().saturating_sub(1)), r.y));
}

fn path_entry(
    f: &mut Frame,
    app: &App,
    area: Rect,
    input: &Input,
    candidates: &[String],
    error: Option<&str>,
) {
    let shown = candidates.len().min(8) as u16;
    let r = centered(area, 90, 6 + shown);
    f.render_widget(Clear, r);
    let block = frame(app, "Dispatch a bundle");
    let inner = block.inner(r);
    f.render_widget(block, r);
    f.render_widget(
        Paragraph::new(Line::styled(
            "Path of the bundle (Tab completes, Enter shows the plan, Esc closes):",
            app.theme.dim,
        )),
        Rect { height: 1, ..inner },
    );
    input_line(
        f,
        app,
        Rect {
            y: inner.y + 2,
            height: 1,
            ..inner
        },
        "> ",
        input,
    );
    let mut lines = Vec::new();
    if let Some(e) = error {
        lines.push(Line::styled(e.to_owned(), app.theme.failed));
    }
    for c in candidates.iter().take(8) {
        lines.push(Line::styled(format!("  {c}"), app.theme.text));
    }
    if candidates.len() > 8 {
        lines.push(Line::styled(
            format!("  … {} more", candidates.len() - 8),
            app.theme.dim,
        ));
    }
    if inner.height > 4 {
        f.render_widget(
            Paragraph::new(lines),
            Rect {
                y: inner.y + 4,
                height: inner.height - 4,
                ..inner
            },
        );
    }
}

/// The plan, as the confirmation dialog shows it: never a secret, only where it comes from.
pub fn plan_lines<'a>(app: &App, plan: &Plan, only: Option<&[String]>) -> Vec<Line<'a>> {
    let t = &app.theme;
    let kv = |k: &str, v: String, style: Style| {
        Line::from(vec![
            Span::styled(format!("{:<10}", k), t.header),
            Span::styled(v, style),
        ])
    };
    let mut lines = vec![
        kv("bundle", plan.bundle.clone(), t.text),
        kv(
            "rule",
            format!(
                "[{}]  ({}:{})",
                plan.rule.name,
                app.env.config.path.display(),
                plan.rule.line
            ),
            t.text,
        ),
    ];
    if !plan.captures.is_empty() {
        let caps: Vec<String> = plan
            .captures
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("(none)")))
            .collect();
        lines.push(kv("captures", caps.join("  "), t.text));
    }
    let targets: Vec<&crate::plan::Target> = plan
        .targets
        .iter()
        .filter(|x| only.is_none_or(|o| o.contains(&x.host.name)))
        .collect();
    let mut rollout = format!("{} host(s), {} at once", targets.len(), plan.rule.parallel);
    if plan.rule.canary > 0 {
        rollout.push_str(&format!(", canary {}", plan.rule.canary));
    }
    if let Some(m) = plan.rule.max_fail {
        rollout.push_str(&format!(", stop after {m} failure(s)"));
    }
    lines.push(kv("rollout", rollout, t.text));
    if let Some(o) = only {
        lines.push(kv("retry", format!("only {}", o.join(", ")), t.warning));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(
            "{} {} {} {}",
            fit("HOST", 24),
            fit("PROTOCOL", 8),
            fit("LOGIN (FROM)", 28),
            "PASSWORD FROM"
        ),
        t.header,
    ));
    for x in targets.iter().take(12) {
        let host = match x.port {
            Some(p) => format!("{}:{p}", x.host.name),
            None => x.host.name.clone(),
        };
        lines.push(Line::styled(
            format!(
                "{} {} {} {}",
                fit(&host, 24),
                fit(x.protocol.as_str(), 8),
                fit(
                    &format!("{} ({})", x.creds.login, x.creds.login_source.as_str()),
                    28
                ),
                x.creds
                    .password_source
                    .map(Source::as_str)
                    .unwrap_or("none"),
            ),
            t.text,
        ));
    }
    if targets.len() > 12 {
        lines.push(Line::styled(
            format!("… and {} more host(s)", targets.len() - 12),
            t.dim,
        ));
    }
    if let Some(first) = targets.first() {
        lines.push(Line::raw(""));
        lines.push(kv("path", first.remote_path.clone(), t.text));
        let mut any = false;
        for (name, cmd) in first.shown_commands().iter() {
            if let Some(c) = cmd {
                lines.push(kv(name, c.clone(), t.text));
                any = true;
            }
        }
        if !any {
            lines.push(Line::styled("no commands: upload only", t.dim));
        } else if targets.len() > 1 {
            lines.push(Line::styled(
                format!(
                    "(path and commands as on {}; each host gets its own {{host}})",
                    first.host.name
                ),
                t.dim,
            ));
        }
    }
    lines
}

fn buttons<'a>(app: &App, no: &str, yes: &str, ok: bool) -> Line<'a> {
    let style = |focused: bool| {
        if focused {
            app.theme.button_focused
        } else {
            app.theme.button
        }
    };
    Line::from(vec![
        Span::styled(format!("[ {no} ]"), style(!ok)),
        Span::raw("   "),
        Span::styled(format!("[ {yes} ]"), style(ok)),
    ])
    .centered()
}

fn confirm(f: &mut Frame, app: &App, area: Rect, what: &Confirm, ok: bool) {
    let (title, mut lines, no, yes) = match what {
        Confirm::Dispatch { plan, only, .. } => (
            if only.is_some() {
                "Retry failed hosts?"
            } else {
                "Dispatch?"
            },
            plan_lines(app, plan, only.as_deref()),
            "Cancel",
            "Dispatch",
        ),
        Confirm::Cancel { id, bundle } => (
            "Cancel dispatch?",
            vec![
                Line::raw(format!("Cancel dispatch #{id} ({bundle})?")),
                Line::raw(""),
                Line::styled(
                    format!(
                        "No new step starts; running steps are stopped after {}s.",
                        crate::session::GRACE.as_secs()
                    ),
                    app.theme.dim,
                ),
            ],
            "Keep running",
            "Cancel dispatch",
        ),
        Confirm::Action { name, plans } => (
            "Run destructive action?",
            crate::ui::tui::app::action_lines(app, name, plans),
            "Cancel",
            "Run",
        ),
        Confirm::StopNow { id, bundle } => (
            "Stop now?",
            vec![
                Line::raw(format!("Stop dispatch #{id} ({bundle}) now?")),
                Line::raw(""),
                Line::styled(
                    "It is being cancelled already: running commands get the rest of the grace period.",
                    app.theme.dim,
                ),
                Line::styled(
                    "Stop now kills them at once (an upgrade may be left half done; its rollback runs where configured).",
                    app.theme.dim,
                ),
            ],
            "Keep waiting",
            "Stop now",
        ),
        Confirm::Converge(ask) => (
            "Converge?",
            super::fleet_dialogs::converge_lines(app, ask),
            "Cancel",
            "Converge",
        ),
        Confirm::Rollback(ask) => (
            "Roll back?",
            super::fleet_dialogs::rollback_lines(app, ask),
            "Cancel",
            "Roll back",
        ),
        Confirm::Quit { running, ids } => (
            "Quit?",
            {
                let named: Vec<String> = ids.iter().map(|i| format!("#{i}")).collect();
                let mut l = vec![
                    Line::raw(format!("{running} dispatch(es) still running.")),
                    Line::raw(""),
                ];
                if !ids.is_empty() {
                    l.push(Line::styled(
                        format!(
                            "Quitting cancels {} like c: no new step starts, running steps get {}s (q again stops them at once).",
                            named.join(", "),
                            crate::session::GRACE.as_secs()
                        ),
                        app.theme.dim,
                    ));
                    l.push(Line::styled(
                        ids.iter()
                            .map(|i| format!("`dropship --resume {i}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                            + " continues later.",
                        app.theme.dim,
                    ));
                }
                if let Some(w) = &app.watch {
                    l.push(Line::styled(
                        format!(
                            "The watcher of {} stops: its running dispatches get {}s to finish, then go on at its next start.",
                            w.dir.display(),
                            crate::session::GRACE.as_secs()
                        ),
                        app.theme.dim,
                    ));
                }
                l
            },
            "Stay",
            "Quit",
        ),
    };
    lines.push(Line::raw(""));
    lines.push(buttons(app, no, yes, ok));
    lines.push(
        Line::styled(
            "←/→ or Tab choose · Enter presses · Esc cancels",
            app.theme.dim,
        )
        .centered(),
    );
    let width = (lines.iter().map(Line::width).max().unwrap_or(40) as u16 + 2)
        .max(40)
        .min(area.width);
    let mut lines = wrap_lines(lines, width.saturating_sub(2) as usize);
    // The buttons must stay on screen however long the plan: the plan scrolls (j/k,
    // PgUp/PgDn) above them, so every host and command can be read before saying yes.
    let room = area.height.saturating_sub(2) as usize;
    app.dialog_scroll_max.set(0);
    if lines.len() > room && room > 4 {
        let tail = lines.split_off(lines.len() - 3);
        let shown = room - 4;
        let max = lines.len().saturating_sub(shown);
        app.dialog_scroll_max.set(max);
        let from = app.dialog_scroll.min(max);
        let below = lines.len() - (from + shown).min(lines.len());
        let mut body: Vec<Line> = lines.drain(..).skip(from).take(shown).collect();
        body.push(Line::styled(
            if below > 0 {
                format!("↓ {below} more line(s) · j/k, PgUp/PgDn scroll")
            } else {
                "↑ end of the plan · k scrolls back".into()
            },
            app.theme.dim,
        ));
        lines = body;
        lines.extend(tail);
    }
    let r = centered(area, width, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(frame(app, title)), r);
}

fn history(
    f: &mut Frame,
    app: &App,
    area: Rect,
    rows: &[crate::journal::DispatchSummary],
    selected: usize,
) {
    let r = centered(area, 110, area.height.saturating_sub(4));
    f.render_widget(Clear, r);
    let block = frame(app, "History (Enter opens, Esc closes)");
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "{} {} {} {} {} {}",
                fit("ID", 6),
                fit("STARTED", 11),
                fit("STATE", 11),
                fit("RESULT", 16),
                fit("TIME", 8),
                "BUNDLE [RULE]"
            ),
            app.theme.header,
        )),
        head,
    );
    if rows.is_empty() {
        f.render_widget(
            Paragraph::new(Line::styled("no dispatches in the journal", app.theme.dim)),
            body,
        );
        return;
    }
    let h = body.height as usize;
    let off = selected.saturating_sub(h.saturating_sub(1));
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(off)
        .take(h)
        .map(|(i, r)| {
            let line = Line::raw(format!(
                "{} {} {} {} {} {} [{}]",
                fit(&format!("#{}", r.id), 6),
                fit(&when(r.started_at), 11),
                fit(r.state.as_str(), 11),
                fit(
                    &format!("{}/{} ok, {} failed", r.succeeded, r.hosts, r.failed),
                    16
                ),
                fit(&r.duration_ms.map(elapsed).unwrap_or_default(), 8),
                r.bundle,
                r.rule
            ));
            if i == selected {
                line.style(app.theme.selected)
            } else {
                line
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), body);
}
