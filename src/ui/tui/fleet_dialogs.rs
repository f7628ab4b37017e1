//! The fleet views over the panes: the probe results (`p`, `:probe`), the Versions matrix
//! (`v`, `:status`) and the text of the rollback confirmation. State that matters is
//! written as words (`FAIL`, `!behind`), with bold or reverse on top, never colour alone,
//! so the `mono` theme reads the same.

use super::app::{App, ConvergeAsk, Preview, RollbackAsk};
use super::widgets::fit;
use super::widgets::{centered, frame};
use crate::fleet::converge::Action;
use crate::fleet::probe::{HostProbe, Status};
use crate::fleet::version::{Cell, Installed};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

fn status_style(app: &App, s: Status) -> Style {
    match s {
        Status::Pass => app.theme.ok,
        Status::Warn => app.theme.warning.add_modifier(Modifier::BOLD),
        Status::Fail => app.theme.failed.add_modifier(Modifier::BOLD),
        Status::Skip => app.theme.dim,
    }
}

/// A view over most of the screen: the block and its inner area.
fn big(f: &mut Frame, app: &App, area: Rect, title: &str) -> Rect {
    let r = centered(area, 110, area.height.saturating_sub(2));
    f.render_widget(Clear, r);
    let block = frame(app, title);
    let inner = block.inner(r);
    f.render_widget(block, r);
    inner
}

/// Shows `lines` from `scroll`, keeping the last line (the keys) in place.
fn scrolled(f: &mut Frame, app: &App, inner: Rect, mut lines: Vec<Line<'static>>, scroll: usize) {
    let keys = lines.pop().unwrap_or_default();
    let lines = super::widgets::wrap_lines(lines, inner.width as usize);
    let room = inner.height.saturating_sub(1) as usize;
    let from = scroll.min(lines.len().saturating_sub(room));
    let mut shown: Vec<Line> = lines.into_iter().skip(from).take(room).collect();
    while shown.len() < room {
        shown.push(Line::raw(""));
    }
    shown.push(keys.style(app.theme.dim));
    f.render_widget(Paragraph::new(shown), inner);
}

/// One host's checks.
fn probe_lines(app: &App, p: &HostProbe, out: &mut Vec<Line<'static>>) {
    let t = &app.theme;
    let verdict = if p.passed() {
        Span::styled("ok", t.ok)
    } else {
        Span::styled(
            "FAILED",
            t.failed.add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )
    };
    out.push(Line::from(vec![
        Span::styled(format!("{} [{}] ", p.host, p.package), t.header),
        Span::styled(format!("{} as {} ", p.protocol, p.login), t.dim),
        verdict,
        Span::styled(format!(" in {} ms", p.duration_ms), t.dim),
    ]));
    for c in &p.checks {
        out.push(Line::from(vec![
            Span::raw("  "),
            Span::styled(fit(c.status.as_str(), 5), status_style(app, c.status)),
            Span::styled(fit(c.kind.as_str(), 10), t.text),
            Span::raw(" "),
            Span::styled(c.detail.clone(), t.text),
        ]));
        if let Some(h) = &c.hint {
            out.push(Line::styled(format!("{:18}help: {h}", ""), t.dim));
        }
        for n in &c.notes {
            out.push(Line::styled(format!("{:18}note: {n}", ""), t.dim));
        }
    }
}

/// The probe results, host by host, filled in as they arrive.
pub fn probe(f: &mut Frame, app: &App, area: Rect, scroll: usize) {
    let Some(run) = &app.probe_run else { return };
    let title = if run.done {
        format!("Probe: {} ({} host(s))", run.what, run.rows.len())
    } else {
        format!(
            "Probe: {} — {} of {} done…",
            run.what,
            run.finished(),
            run.rows.len()
        )
    };
    let inner = big(f, app, area, &title);
    let mut lines = Vec::new();
    for row in &run.rows {
        match &row.result {
            Some(p) => probe_lines(app, p, &mut lines),
            None => lines.push(Line::from(vec![
                Span::styled(format!("{} [{}] ", row.host, row.package), app.theme.header),
                Span::styled("probing…", app.theme.running),
            ])),
        }
        lines.push(Line::raw(""));
    }
    lines.push(Line::raw(
        "j/k scroll · p probe again · ? keys · Esc closes",
    ));
    scrolled(f, app, inner, lines, scroll);
}

/// A matrix cell: the version and its drift marks, as words.
fn cell_text(c: &Cell) -> String {
    crate::ui::fleet_report::status_cell(c)
}

fn cell_style(app: &App, c: &Cell) -> Style {
    match &c.installed {
        Installed::Unreachable { .. } | Installed::Unreadable { .. } => app.theme.failed,
        Installed::Version { .. } if !c.drift.is_empty() => app
            .theme
            .warning
            .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        Installed::Version { .. } => app.theme.ok,
    }
}

/// The Versions view: hosts down, packages across, drift marked; then what drifted from
/// what, and why cells could not be read.
pub fn versions(f: &mut Frame, app: &App, area: Rect, scroll: usize) {
    let v = &app.versions;
    let mut title = "Versions".to_owned();
    if v.loading {
        title.push_str(" — reading…");
    } else if let Some(at) = v.at {
        title.push_str(&format!(" (read {})", app.ago(at)));
    }
    let inner = big(f, app, area, &title);
    let t = &app.theme;
    let mut lines: Vec<Line<'static>> = Vec::new();
    if let Some(e) = &v.error {
        lines.push(Line::styled(e.clone(), t.failed));
        lines.push(Line::raw(""));
    }
    match &v.report {
        None if v.loading => lines.push(Line::styled(
            "running every rule's version_cmd on its hosts…",
            t.dim,
        )),
        None => {}
        Some(report) => {
            let (packages, hosts) = report.axes();
            let hw = hosts
                .iter()
                .map(|h| h.chars().count())
                .max()
                .unwrap_or(4)
                .clamp(4, 28);
            let cw = packages
                .iter()
                .map(|(_, l)| l.chars().count())
                .chain(report.cells.iter().map(|c| cell_text(c).chars().count()))
                .max()
                .unwrap_or(8)
                .clamp(8, 30);
            let mut head = vec![Span::styled(fit("HOST", hw), t.header)];
            for (_, l) in &packages {
                head.push(Span::raw(" "));
                head.push(Span::styled(fit(l, cw), t.header));
            }
            lines.push(Line::from(head));
            for h in &hosts {
                let mut row = vec![Span::styled(fit(h, hw), t.text)];
                for (rule, _) in &packages {
                    row.push(Span::raw(" "));
                    match report
                        .cells
                        .iter()
                        .find(|c| c.rule == *rule && c.host == *h)
                    {
                        Some(c) => {
                            row.push(Span::styled(fit(&cell_text(c), cw), cell_style(app, c)))
                        }
                        None => row.push(Span::styled(fit("-", cw), t.dim)),
                    }
                }
                lines.push(Line::from(row));
            }
            let mut notes: Vec<Line<'static>> = Vec::new();
            for c in &report.cells {
                match &c.installed {
                    Installed::Unreadable { error } | Installed::Unreachable { error } => {
                        notes.push(Line::styled(
                            format!("{} [{}]: {error}", c.host, c.package),
                            t.failed,
                        ));
                    }
                    Installed::Version { version } if !c.drift.is_empty() => {
                        let marks: Vec<&str> = c.drift.iter().map(|d| d.as_str()).collect();
                        let why = match &c.shipped {
                            Some(s) if c.drift != [crate::fleet::version::Drift::Mixed] => {
                                format!(
                                    "last shipped there: {} (dispatch #{})",
                                    s.version, s.dispatch
                                )
                            }
                            _ => "the rule's hosts run different versions".into(),
                        };
                        notes.push(Line::styled(
                            format!(
                                "{} [{}]: runs {version}; {why} [{}]",
                                c.host,
                                c.package,
                                marks.join(", ")
                            ),
                            t.warning.add_modifier(Modifier::BOLD),
                        ));
                    }
                    Installed::Version { .. } => {}
                }
            }
            if report.cells.is_empty() {
                lines.push(Line::styled("no host has a version to read", t.dim));
            }
            if !notes.is_empty() {
                lines.push(Line::raw(""));
                lines.extend(notes);
            }
            if packages.iter().any(|(r, l)| r != l) {
                lines.push(Line::raw(""));
                for (rule, label) in &packages {
                    lines.push(Line::styled(format!("{label:<12} rule [{rule}]"), t.dim));
                }
            }
            if !report.without_version_cmd.is_empty() {
                let names: Vec<String> = report
                    .without_version_cmd
                    .iter()
                    .map(|r| format!("[{r}]"))
                    .collect();
                lines.push(Line::raw(""));
                lines.push(Line::styled(
                    format!("not shown (no `version_cmd`): {}", names.join(", ")),
                    t.dim,
                ));
            }
        }
    }
    if v.report.is_some() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            "!behind, !ahead, !differs: not the version last shipped there · !mixed: the rule's hosts differ",
            t.dim,
        ));
    }
    lines.push(Line::raw(
        "r reads again · c converge · j/k scroll · ? keys · Esc closes",
    ));
    scrolled(f, app, inner, lines, scroll);
}

/// What the rollback confirmation says: rule, hosts, what `current` does (from the
/// hosts, as read just now), the command that runs, and where its placeholders come from.
pub fn rollback_lines(app: &App, ask: &RollbackAsk) -> Vec<Line<'static>> {
    let t = &app.theme;
    let plan = &ask.plan;
    let kv = |k: &str, v: String, style: Style| {
        Line::from(vec![
            Span::styled(format!("{k:<10}"), t.header),
            Span::styled(v, style),
        ])
    };
    let mut lines = vec![
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
        kv(
            "hosts",
            if ask.only.is_none() {
                format!("{} (every host of the rule)", ask.hosts.join(", "))
            } else {
                ask.hosts.join(", ")
            },
            t.text,
        ),
    ];
    if ask.releases() {
        lines.push(kv(
            "layout",
            "releases: `current` goes back one release, by deploy order".into(),
            t.text,
        ));
        for (host, p) in &ask.preview {
            let (text, style) = match p {
                Preview::Reading => ("reading `current` on the host…".to_owned(), t.dim),
                Preview::Known {
                    current,
                    previous: Some(prev),
                } => (
                    format!(
                        "current: {} -> {prev}",
                        current.as_deref().unwrap_or("(none)")
                    ),
                    t.warning.add_modifier(Modifier::BOLD),
                ),
                Preview::Known {
                    current,
                    previous: None,
                } => (
                    format!(
                        "nothing to go back to (current: {}): this host will fail, unchanged",
                        current.as_deref().unwrap_or("(none)")
                    ),
                    t.failed.add_modifier(Modifier::BOLD),
                ),
                Preview::Unknown(e) => (format!("current unknown: {e}"), t.failed),
            };
            lines.push(Line::from(vec![
                Span::styled(format!("  {}", fit(host, 22)), t.text),
                Span::raw(" "),
                Span::styled(text, style),
            ]));
        }
    }
    // With `layout = releases` the command's `{release}` is the release gone back to: once
    // the host said which, show the command as it will run there.
    let shown = plan
        .targets
        .iter()
        .find(|x| ask.hosts.contains(&x.host.name))
        .map(|x| {
            let to = ask.preview.iter().find_map(|(h, p)| match p {
                Preview::Known {
                    previous: Some(p), ..
                } if *h == x.host.name => Some(p),
                _ => None,
            });
            match to {
                Some(to) => plan.rollback_for_release(x, to).ok().flatten(),
                None => x.shown_commands().rollback,
            }
        });
    match shown.flatten() {
        Some(cmd) => {
            let when = if ask.releases() { "then runs" } else { "runs" };
            lines.push(kv(when, cmd, t.text));
        }
        None => lines.push(kv(
            "command",
            "none (the rule has no `rollback`)".into(),
            t.dim,
        )),
    }
    let from = if ask.releases() {
        format!("{} ({{release}}: the release gone back to)", plan.bundle)
    } else {
        format!(
            "{} (what the command's placeholders are filled from)",
            plan.bundle
        )
    };
    lines.push(kv("from", from, t.dim));
    lines.push(Line::styled(
        "Each host is locked like a dispatch; it shows in Dispatches as (rollback).",
        t.dim,
    ));
    lines
}

/// What the converge confirmation says, per rule: the version to reach and the bundle it
/// comes from, then each host: gets it (and what it runs now) or is left out (and why).
pub fn converge_lines(app: &App, ask: &ConvergeAsk) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut lines = Vec::new();
    for r in &ask.rules {
        let p = &r.plan;
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.push(Line::from(vec![
            Span::styled(format!("[{}] ", p.package), t.header),
            Span::styled(format!("reach {}", p.goal.version), t.text),
            Span::styled(
                format!(
                    " ({}, last good dispatch #{})",
                    p.goal.bundle, p.goal.dispatch
                ),
                t.dim,
            ),
        ]));
        let hw = p
            .hosts
            .iter()
            .map(|h| h.label.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 24);
        for h in &p.hosts {
            let (verdict, style, why) = match (&h.action, &h.installed) {
                (Action::Ship, Installed::Version { version }) => (
                    "gets it",
                    t.warning.add_modifier(Modifier::BOLD),
                    format!("runs {version}"),
                ),
                (Action::Ship, Installed::Unreadable { error }) => (
                    "gets it",
                    t.warning.add_modifier(Modifier::BOLD),
                    format!("no version read: {error}"),
                ),
                (Action::Ship, Installed::Unreachable { error }) => (
                    "gets it",
                    t.warning.add_modifier(Modifier::BOLD),
                    error.clone(),
                ),
                (Action::UpToDate, _) => ("left out", t.dim, "runs it already".to_owned()),
                (Action::Unreachable, Installed::Unreachable { error }) => {
                    ("left out", t.failed, format!("did not answer: {error}"))
                }
                (Action::Unreachable, _) => ("left out", t.failed, "did not answer".to_owned()),
            };
            lines.push(Line::from(vec![
                Span::styled(format!("  {} ", fit(&h.label, hw)), t.text),
                Span::styled(fit(verdict, 9), style),
                Span::styled(why, t.dim),
            ]));
        }
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(
            "{} host(s) get a bundle, one dispatch per rule with its rollout (canary, max_fail); they show in Dispatches.",
            ask.shipping()
        ),
        t.dim,
    ));
    lines
}
