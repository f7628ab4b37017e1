//! Console themes: the built-in default plus a patch (the way gitui's `style.rs` does it).
//! A theme file may set any subset of the keys; a key it sets replaces that whole style, a
//! key it leaves out keeps the default's. Unknown keys and bad colours are refused with the
//! file and key, so a typo never silently falls back to something else.
//!
//! The four shipped themes are compiled in (`include_str!`) so the binary works anywhere;
//! `$XDG_CONFIG_HOME/dropship/themes/NAME.yaml` (else `~/.config/...`) wins over them.

use ratatui::style::{Color, Modifier, Style};
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The built-in themes, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../../themes/default.yaml")),
    ("light", include_str!("../../../themes/light.yaml")),
    (
        "high-contrast",
        include_str!("../../../themes/high-contrast.yaml"),
    ),
    ("mono", include_str!("../../../themes/mono.yaml")),
];

/// Every style a theme sets. The order is the one of the YAML files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Theme {
    pub name: String,
    pub text: Style,
    pub dim: Style,
    pub title: Style,
    pub border: Style,
    pub border_focused: Style,
    pub selected: Style,
    pub header: Style,
    pub ok: Style,
    pub failed: Style,
    pub running: Style,
    pub skipped: Style,
    pub warning: Style,
    pub stdout: Style,
    pub stderr: Style,
    pub search_match: Style,
    pub gauge: Style,
    pub dialog: Style,
    pub button: Style,
    pub button_focused: Style,
    pub status_bar: Style,
    /// An error in the status bar (drawn over `status_bar`'s background).
    pub status_error: Style,
}

/// Theme keys, for messages and completion.
pub const KEYS: &[&str] = &[
    "text",
    "dim",
    "title",
    "border",
    "border_focused",
    "selected",
    "header",
    "ok",
    "failed",
    "running",
    "skipped",
    "warning",
    "stdout",
    "stderr",
    "search_match",
    "gauge",
    "dialog",
    "button",
    "button_focused",
    "status_bar",
    "status_error",
];

impl Theme {
    fn slot(&mut self, key: &str) -> Option<&mut Style> {
        Some(match key {
            "text" => &mut self.text,
            "dim" => &mut self.dim,
            "title" => &mut self.title,
            "border" => &mut self.border,
            "border_focused" => &mut self.border_focused,
            "selected" => &mut self.selected,
            "header" => &mut self.header,
            "ok" => &mut self.ok,
            "failed" => &mut self.failed,
            "running" => &mut self.running,
            "skipped" => &mut self.skipped,
            "warning" => &mut self.warning,
            "stdout" => &mut self.stdout,
            "stderr" => &mut self.stderr,
            "search_match" => &mut self.search_match,
            "gauge" => &mut self.gauge,
            "dialog" => &mut self.dialog,
            "button" => &mut self.button,
            "button_focused" => &mut self.button_focused,
            "status_bar" => &mut self.status_bar,
            "status_error" => &mut self.status_error,
            _ => return None,
        })
    }

    /// The built-in default. Its file sets every key (a unit test checks it), so nothing here
    /// can fail at run time.
    pub fn builtin_default() -> Theme {
        let mut t = Theme {
            name: "default".into(),
            ..Theme::default()
        };
        // A broken built-in is caught by the tests; at run time fall back to plain styles.
        let _ = t.patch(BUILTIN[0].1, "<built-in default.yaml>");
        t
    }

    /// Applies a theme file's keys over `self`.
    pub fn patch(&mut self, yaml: &str, file: &str) -> Result<(), ThemeError> {
        let problem = |key: &str, what: String| ThemeError {
            file: file.to_owned(),
            problems: vec![(key.to_owned(), what)],
        };
        let value: Value = serde_yaml_ng::from_str(yaml)
            .map_err(|e| problem("-", format!("not valid YAML: {e}")))?;
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => return Ok(()),
            _ => {
                return Err(problem(
                    "-",
                    "the file must be a mapping of key: style".into(),
                ));
            }
        };
        let mut problems = Vec::new();
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                problems.push(("?".into(), format!("key {k:?} is not a string")));
                continue;
            };
            let Some(slot) = self.slot(key) else {
                let hint = strsim_nearest(key)
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                problems.push((key.to_owned(), format!("unknown key{hint}")));
                continue;
            };
            match parse_style(&v, key) {
                Ok(s) => *slot = s,
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ThemeError {
                file: file.to_owned(),
                problems,
            })
        }
    }

    /// Loads theme `name`: a user file if there is one, else a built-in. `name` may also be
    /// a path to a `.yaml` file.
    pub fn load(name: &str) -> Result<Theme, ThemeError> {
        let not_found = |why: String| ThemeError {
            file: name.to_owned(),
            problems: vec![("-".into(), why)],
        };
        let (text, file) = if name.ends_with(".yaml") || name.contains('/') {
            let text = std::fs::read_to_string(name)
                .map_err(|e| not_found(format!("cannot read the theme file: {e}")))?;
            (text, name.to_owned())
        } else {
            if !valid_name(name) {
                return Err(not_found(
                    "a theme name is letters, digits, `-` and `_`".into(),
                ));
            }
            match user_dir().map(|d| d.join(format!("{name}.yaml"))) {
                Some(p) if p.is_file() => {
                    let text = std::fs::read_to_string(&p).map_err(|e| ThemeError {
                        file: p.display().to_string(),
                        problems: vec![("-".into(), format!("cannot read: {e}"))],
                    })?;
                    (text, p.display().to_string())
                }
                _ => match BUILTIN.iter().find(|(n, _)| *n == name) {
                    Some((_, text)) => ((*text).to_owned(), format!("<built-in {name}.yaml>")),
                    None => {
                        return Err(not_found(format!(
                            "no such theme (built-in: {}; user themes go in {})",
                            BUILTIN
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", "),
                            user_dir()
                                .map(|d| d.display().to_string())
                                .unwrap_or_else(|| "$XDG_CONFIG_HOME/dropship/themes".into())
                        )));
                    }
                },
            }
        };
        let mut theme = Theme::builtin_default();
        theme.patch(&text, &file)?;
        theme.name = name.to_owned();
        Ok(theme)
    }

    /// Every theme name on offer: built-ins and user files, sorted, for completion.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| (*n).to_owned()).collect();
        if let Some(Ok(rd)) = user_dir().map(std::fs::read_dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "yaml")
                    && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                    && !names.iter().any(|n| n == stem)
                {
                    names.push(stem.to_owned());
                }
            }
        }
        names.sort();
        names
    }
}

/// Which theme to start with: `--theme`, then `$DROPSHIP_THEME`, then `NO_COLOR` (mono),
/// then the one last chosen with `:theme`, then `default`.
pub fn startup_choice(flag: Option<&str>) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(f) = flag {
        return f.to_owned();
    }
    if let Some(t) = env("DROPSHIP_THEME") {
        return t;
    }
    if env("NO_COLOR").is_some() {
        return "mono".into();
    }
    remembered().unwrap_or_else(|| "default".into())
}

/// Where `:theme` remembers its choice.
pub fn state_file() -> PathBuf {
    crate::config::state_dir().join("theme")
}

fn remembered() -> Option<String> {
    let text = std::fs::read_to_string(state_file()).ok()?;
    let name = text.trim();
    valid_name(name).then(|| name.to_owned())
}

/// Saves the `:theme` choice for the next start.
pub fn remember(name: &str) -> std::io::Result<()> {
    let path = state_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{name}\n"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn user_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .map(|d| d.join("dropship").join("themes"))
}

fn strsim_nearest(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| (strsim::levenshtein(k, key), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

const FLAGS: &[(&str, Modifier)] = &[
    ("bold", Modifier::BOLD),
    ("dim", Modifier::DIM),
    ("italic", Modifier::ITALIC),
    ("underline", Modifier::UNDERLINED),
    ("reverse", Modifier::REVERSED),
];

fn parse_color(v: &Value, key: &str) -> Result<Color, (String, String)> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err((
                key.to_owned(),
                format!("colour must be a string, not {other:?}"),
            ));
        }
    };
    Color::from_str(&text).map_err(|_| {
        (
            key.to_owned(),
            format!("bad colour `{text}` (a name such as `green`, `darkgray`, `reset`, 0-255, or #rrggbb)"),
        )
    })
}

fn parse_style(v: &Value, key: &str) -> Result<Style, Vec<(String, String)>> {
    match v {
        Value::String(_) => parse_color(v, key)
            .map(|c| Style::new().fg(c))
            .map_err(|e| vec![e]),
        Value::Null => Ok(Style::new()),
        Value::Mapping(m) => {
            let mut style = Style::new();
            let mut problems = Vec::new();
            for (a, val) in m {
                let attr = a.as_str().unwrap_or("?");
                let path = format!("{key}.{attr}");
                match attr {
                    "fg" | "bg" => match parse_color(val, &path) {
                        Ok(c) if attr == "fg" => style = style.fg(c),
                        Ok(c) => style = style.bg(c),
                        Err(e) => problems.push(e),
                    },
                    _ => match (FLAGS.iter().find(|(n, _)| *n == attr), val) {
                        (Some((_, m)), Value::Bool(true)) => style = style.add_modifier(*m),
                        (Some(_), Value::Bool(false)) => {}
                        (Some(_), _) => problems.push((path, "must be true or false".into())),
                        (None, _) => problems.push((
                            path,
                            "unknown attribute (fg, bg, bold, dim, italic, underline, reverse)"
                                .into(),
                        )),
                    },
                }
            }
            if problems.is_empty() {
                Ok(style)
            } else {
                Err(problems)
            }
        }
        other => Err(vec![(
            key.to_owned(),
            format!("a style is a colour or a mapping, not {other:?}"),
        )]),
    }
}

/// Everything wrong with one theme file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("theme {file}: {}", problems.iter().map(|(k, p)| format!("`{k}`: {p}")).collect::<Vec<_>>().join("; "))]
pub struct ThemeError {
    pub file: String,
    /// (key, what is wrong with it).
    pub problems: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_default_sets_every_key() {
        for (name, text) in BUILTIN {
            let mut t = Theme::builtin_default();
            t.patch(text, name).unwrap();
        }
        let v: Value = serde_yaml_ng::from_str(BUILTIN[0].1).unwrap();
        let m = v.as_mapping().unwrap();
        for k in KEYS {
            assert!(m.contains_key(*k), "default.yaml lacks `{k}`");
        }
        assert_eq!(m.len(), KEYS.len());
    }

    #[test]
    fn a_partial_file_keeps_the_default_for_other_keys() {
        let mut t = Theme::builtin_default();
        t.patch("ok: { fg: magenta }\n", "x.yaml").unwrap();
        assert_eq!(t.ok, Style::new().fg(Color::Magenta));
        assert_eq!(t.failed, Theme::builtin_default().failed);
    }

    #[test]
    fn unknown_keys_and_bad_colours_name_file_and_key() {
        let mut t = Theme::builtin_default();
        let e = t
            .patch(
                "okk: green\nfailed: { fg: grene, blink: true }\n",
                "my.yaml",
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("my.yaml"), "{msg}");
        assert!(
            msg.contains("`okk`: unknown key (did you mean `ok`?)"),
            "{msg}"
        );
        assert!(msg.contains("`failed.fg`: bad colour `grene`"), "{msg}");
        assert!(msg.contains("`failed.blink`: unknown attribute"), "{msg}");
    }

    #[test]
    fn mono_uses_no_colour() {
        let t = Theme::load("mono").unwrap();
        let mut copy = t.clone();
        for k in KEYS {
            let s = copy.slot(k).unwrap();
            assert!(s.fg.is_none() && s.bg.is_none(), "mono `{k}` has a colour");
        }
        assert!(t.selected.add_modifier.contains(Modifier::REVERSED));
    }
}
