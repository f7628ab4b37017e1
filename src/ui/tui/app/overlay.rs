//! Keys while an overlay is open: it gets every key (but Ctrl-C) until it closes.

use super::{App, Confirm, Effect, Focus, Overlay, Topic};
use crate::ui::tui::model::DispatchView;
use crate::ui::tui::palette;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler;

impl App {
    pub(super) fn on_overlay_key(&mut self, k: KeyEvent, ev: &TermEvent) -> Vec<Effect> {
        let fx = self.overlay_key(k, ev);
        if !matches!(self.overlay, Some(Overlay::Confirm { .. })) {
            self.dialog_scroll = 0;
        }
        fx
    }

    fn overlay_key(&mut self, k: KeyEvent, ev: &TermEvent) -> Vec<Effect> {
        let Some(overlay) = self.overlay.take() else {
            return Vec::new();
        };
        match overlay {
            Overlay::Help { scroll, topic } => match k.code {
                KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter => {
                    self.overlay = match topic {
                        Some(Topic::Probe) => Some(Overlay::Probe { scroll: 0 }),
                        Some(Topic::Versions) => Some(Overlay::Versions { scroll: 0 }),
                        None => None,
                    }
                }
                KeyCode::Char('j') | KeyCode::Down | KeyCode::PageDown | KeyCode::Char(' ') => {
                    let by = if matches!(k.code, KeyCode::PageDown | KeyCode::Char(' ')) {
                        10
                    } else {
                        1
                    };
                    self.overlay = Some(Overlay::Help {
                        scroll: scroll + by,
                        topic,
                    })
                }
                KeyCode::Char('k') | KeyCode::Up | KeyCode::PageUp => {
                    let by = if k.code == KeyCode::PageUp { 10 } else { 1 };
                    self.overlay = Some(Overlay::Help {
                        scroll: scroll.saturating_sub(by),
                        topic,
                    })
                }
                _ => self.overlay = Some(Overlay::Help { scroll, topic }),
            },
            Overlay::Probe { scroll } => return self.on_probe_key(k, scroll),
            Overlay::Actions { target, items } => return self.on_actions_key(k, target, items),
            Overlay::Versions { scroll } => return self.on_versions_key(k, scroll),
            Overlay::Confirm { what, ok } => match k.code {
                KeyCode::Left
                | KeyCode::Right
                | KeyCode::Tab
                | KeyCode::BackTab
                | KeyCode::Char('h' | 'l') => {
                    self.overlay = Some(Overlay::Confirm { what, ok: !ok })
                }
                KeyCode::Char('j') | KeyCode::Down | KeyCode::PageDown | KeyCode::Char(' ') => {
                    let by = if matches!(k.code, KeyCode::Char('j') | KeyCode::Down) {
                        1
                    } else {
                        10
                    };
                    self.dialog_scroll =
                        (self.dialog_scroll + by).min(self.dialog_scroll_max.get());
                    self.overlay = Some(Overlay::Confirm { what, ok })
                }
                KeyCode::Char('k') | KeyCode::Up | KeyCode::PageUp => {
                    let by = if k.code == KeyCode::PageUp { 10 } else { 1 };
                    self.dialog_scroll = self.dialog_scroll.saturating_sub(by);
                    self.overlay = Some(Overlay::Confirm { what, ok })
                }
                KeyCode::Enter if ok => return self.confirmed(what),
                KeyCode::Enter | KeyCode::Esc | KeyCode::Char('n' | 'q') => {}
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    // Ctrl-C on the quit question means "yes, really".
                    return self.confirmed(what);
                }
                _ => self.overlay = Some(Overlay::Confirm { what, ok }),
            },
            Overlay::Palette {
                mut input,
                mut candidates,
                mut error,
            } => match k.code {
                KeyCode::Esc => {}
                KeyCode::Enter => match palette::parse(input.value()) {
                    Ok(c) => return self.run_command(c),
                    Err(e) => {
                        self.overlay = Some(Overlay::Palette {
                            input,
                            candidates: Vec::new(),
                            error: Some(e),
                        })
                    }
                },
                KeyCode::Tab => {
                    let (line, c) = palette::complete(input.value(), &self.words());
                    input = Input::new(line);
                    self.overlay = Some(Overlay::Palette {
                        input,
                        candidates: c,
                        error: None,
                    });
                }
                _ => {
                    if k.code == KeyCode::Backspace && input.value().is_empty() {
                        return Vec::new();
                    }
                    if input.handle_event(ev).is_some() {
                        candidates.clear();
                        error = None;
                    }
                    self.overlay = Some(Overlay::Palette {
                        input,
                        candidates,
                        error,
                    });
                }
            },
            Overlay::PathEntry {
                mut input,
                mut candidates,
                mut error,
            } => match k.code {
                KeyCode::Esc => {}
                KeyCode::Enter => match self.plan_for(input.value()) {
                    Ok((plan, file)) => {
                        self.overlay = Some(Overlay::Confirm {
                            what: Confirm::Dispatch {
                                plan,
                                file,
                                only: None,
                            },
                            ok: false,
                        })
                    }
                    Err(e) => {
                        self.overlay = Some(Overlay::PathEntry {
                            input,
                            candidates: Vec::new(),
                            error: Some(e),
                        })
                    }
                },
                KeyCode::Tab => {
                    let (line, c) = palette::complete_path(input.value());
                    self.overlay = Some(Overlay::PathEntry {
                        input: Input::new(line),
                        candidates: c,
                        error: None,
                    });
                }
                _ => {
                    if input.handle_event(ev).is_some() {
                        candidates.clear();
                        error = None;
                    }
                    self.overlay = Some(Overlay::PathEntry {
                        input,
                        candidates,
                        error,
                    });
                }
            },
            Overlay::History { rows, mut selected } => match k.code {
                KeyCode::Esc | KeyCode::Char('q') => {}
                KeyCode::Char('j') | KeyCode::Down => {
                    selected = (selected + 1).min(rows.len().saturating_sub(1));
                    self.overlay = Some(Overlay::History { rows, selected });
                }
                KeyCode::Char('k') | KeyCode::Up => {
                    selected = selected.saturating_sub(1);
                    self.overlay = Some(Overlay::History { rows, selected });
                }
                KeyCode::Enter => {
                    if let Some(r) = rows.get(selected) {
                        let id = r.id;
                        if !self.dispatches.iter().any(|d| d.id == id) {
                            self.dispatches.push(DispatchView::from_summary(r));
                            self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
                        }
                        self.filters[2].clear();
                        if let Some(i) = self.dispatches.iter().position(|d| d.id == id) {
                            self.selected[2] = usize::MAX;
                            self.select(2, i);
                        }
                        self.focus = Focus::Targets;
                    }
                }
                _ => self.overlay = Some(Overlay::History { rows, selected }),
            },
            Overlay::Filter { mut input, origin } => {
                let Some(l) = self.focus.list() else {
                    return Vec::new();
                };
                match k.code {
                    KeyCode::Esc => self.set_filter_at(l, String::new(), origin.as_deref()),
                    KeyCode::Enter => {}
                    _ => {
                        input.handle_event(ev);
                        self.set_filter_at(l, input.value().to_owned(), origin.as_deref());
                        self.overlay = Some(Overlay::Filter { input, origin });
                    }
                }
            }
            Overlay::Details { scroll } => match k.code {
                KeyCode::Esc | KeyCode::Char('q') => {}
                KeyCode::Enter | KeyCode::Char('l') => self.focus = Focus::Log,
                KeyCode::Char('j') | KeyCode::Down | KeyCode::PageDown | KeyCode::Char(' ') => {
                    let by = if matches!(k.code, KeyCode::Char('j') | KeyCode::Down) {
                        1
                    } else {
                        10
                    };
                    let max = self.dialog_scroll_max.get();
                    self.overlay = Some(Overlay::Details {
                        scroll: (scroll + by).min(max),
                    })
                }
                KeyCode::Char('k') | KeyCode::Up | KeyCode::PageUp => {
                    let by = if k.code == KeyCode::PageUp { 10 } else { 1 };
                    self.overlay = Some(Overlay::Details {
                        scroll: scroll.saturating_sub(by),
                    })
                }
                _ => self.overlay = Some(Overlay::Details { scroll }),
            },
            Overlay::Search { mut input } => match k.code {
                KeyCode::Esc => {}
                KeyCode::Enter => {
                    let s = input.value().to_owned();
                    self.log.search = (!s.is_empty()).then_some(s);
                    self.log.current_match = None;
                    self.find(true);
                }
                _ => {
                    input.handle_event(ev);
                    self.overlay = Some(Overlay::Search { input });
                }
            },
        }
        Vec::new()
    }
}
