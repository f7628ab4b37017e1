//! The `:` command palette: parsing a command line and completing it (command names, file
//! paths for `:dispatch`, theme names for `:theme`).

use std::path::Path;

/// Commands the palette knows, with their one-line help.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "dispatch",
        "dispatch FILE — plan a bundle and ask to ship it",
    ),
    ("cancel", "cancel — cancel the selected running dispatch"),
    (
        "retry",
        "retry — ship again to the failed hosts of the selected dispatch",
    ),
    ("history", "history — past dispatches from the journal"),
    (
        "reload",
        "reload — re-read dispatch.cfg, .netrc, the journal and the packages directory",
    ),
    (
        "probe",
        "probe [RULE] — preflight every host (of RULE): login, dest dir, programs, lock, version",
    ),
    ("reach", "reach — check again which hosts answer (no login)"),
    (
        "status",
        "status — the Versions view: installed versions per host and package, drift marked",
    ),
    (
        "rollback",
        "rollback RULE [HOST] — run RULE's rollback on HOST (all its hosts if none; asks first)",
    ),
    (
        "converge",
        "converge [RULE] — ship the last good bundle again to the hosts that run another version (shows the plan first)",
    ),
    (
        "run",
        "run [TARGETS] COMMAND — run COMMAND on rules' or hosts' hosts (comma-separated), shown in Dispatches",
    ),
    (
        "action",
        "action NAME TARGETS — run a rule's named action (action.NAME) on its hosts",
    ),
    (
        "pause",
        "pause — stop the watched folder's new dispatches (running ones go on; key a)",
    ),
    (
        "resume",
        "resume — dispatch from the watched folder again (key a)",
    ),
    ("theme", "theme NAME — switch theme (remembered)"),
    ("mouse", "mouse — toggle mouse capture"),
    ("help", "help — keys of the focused pane"),
    ("quit", "quit — leave dropship"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Dispatch(String),
    Cancel,
    Retry,
    History,
    Reload,
    Theme(String),
    /// `:probe [RULE]`: every host, or RULE's (section name, package label or bundle name).
    Probe(Option<String>),
    Reach,
    Status,
    Rollback {
        rule: String,
        host: Option<String>,
    },
    /// `:converge [RULE]`: every rule with a `version_cmd` and a good dispatch, or RULE.
    Converge(Option<String>),
    Mouse,
    Help,
    /// `:run TARGETS COMMAND`, `:action NAME TARGETS`: the words after the command name.
    Run(String),
    Action(String),
    /// `:pause`, `:resume`: automatic dispatching of the watched folder.
    Pause,
    Resume,
    Quit,
}

/// Parses a palette line (without the `:`). Unique prefixes of command names work
/// (`:hist`), like vim.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, arg) = match line.split_once(char::is_whitespace) {
        Some((w, a)) => (w, a.trim()),
        None => (line, ""),
    };
    if word.is_empty() {
        return Err("type a command; Tab completes".into());
    }
    let matches: Vec<&str> = COMMANDS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with(word))
        .collect();
    let name = match matches.as_slice() {
        [one] => *one,
        [] => return Err(format!("unknown command `{word}` (Tab lists them)")),
        many if many.contains(&word) => word,
        many => return Err(format!("`{word}` is ambiguous: {}", many.join(", "))),
    };
    let need = |what: &str| Err(format!(":{name} needs {what}"));
    Ok(match name {
        "dispatch" if arg.is_empty() => return need("a bundle FILE"),
        "dispatch" => Command::Dispatch(arg.to_owned()),
        "theme" if arg.is_empty() => return need("a theme NAME"),
        "theme" => Command::Theme(arg.to_owned()),
        "probe" => Command::Probe((!arg.is_empty()).then(|| arg.to_owned())),
        "reach" => Command::Reach,
        "status" => Command::Status,
        "converge" => Command::Converge((!arg.is_empty()).then(|| arg.to_owned())),
        "rollback" if arg.is_empty() => return need("a RULE (and optionally a HOST)"),
        "rollback" => {
            let mut words = arg.split_whitespace();
            let rule = words.next().unwrap_or_default().to_owned();
            let host = words.next().map(str::to_owned);
            if let Some(extra) = words.next() {
                return Err(format!(
                    ":rollback takes a RULE and one HOST; `{extra}` is one word too many"
                ));
            }
            Command::Rollback { rule, host }
        }
        "run" if arg.is_empty() => return need("TARGETS and a COMMAND"),
        "run" => Command::Run(arg.to_owned()),
        "action" if arg.is_empty() => return need("an action NAME and TARGETS"),
        "action" => Command::Action(arg.to_owned()),
        "cancel" => Command::Cancel,
        "retry" => Command::Retry,
        "history" => Command::History,
        "reload" => Command::Reload,
        "mouse" => Command::Mouse,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "help" => Command::Help,
        _ => Command::Quit,
    })
}

/// What the palette completes arguments from.
#[derive(Debug, Clone, Default)]
pub struct Words {
    pub themes: Vec<String>,
    /// Rules by the name `:probe`/`:rollback` take (the package label when it is unique),
    /// each with its hosts.
    pub rules: Vec<(String, Vec<String>)>,
}

/// Completes `word` from `all`: the single match with a space after it, else the common
/// prefix, with the candidates to show.
fn complete_word(head: &str, word: &str, all: &[String], space: bool) -> (String, Vec<String>) {
    let c: Vec<String> = all
        .iter()
        .filter(|t| t.starts_with(word))
        .cloned()
        .collect();
    match c.as_slice() {
        [one] => (
            format!("{head}{one}{}", if space { " " } else { "" }),
            Vec::new(),
        ),
        _ => (format!("{head}{}", common_prefix(word, &c)), c),
    }
}

/// Completes `line` (without the `:`): returns the new line and the candidates shown when
/// there is more than one.
pub fn complete(line: &str, words: &Words) -> (String, Vec<String>) {
    let rule_names: Vec<String> = words.rules.iter().map(|(r, _)| r.clone()).collect();
    match line.split_once(' ') {
        None => {
            let c: Vec<String> = COMMANDS
                .iter()
                .map(|(n, _)| (*n).to_owned())
                .filter(|n| n.starts_with(line))
                .collect();
            match c.as_slice() {
                [one] => (format!("{one} "), Vec::new()),
                _ => (common_prefix(line, &c), c),
            }
        }
        Some((cmd, arg)) if "dispatch".starts_with(cmd) && !cmd.is_empty() => {
            let (arg, c) = complete_path(arg);
            (format!("{cmd} {arg}"), c)
        }
        Some((cmd, arg)) if "theme".starts_with(cmd) && !cmd.is_empty() => {
            complete_word(&format!("{cmd} "), arg, &words.themes, false)
        }
        Some((cmd, arg))
            if cmd.len() >= 2 && ("probe".starts_with(cmd) || "converge".starts_with(cmd)) =>
        {
            complete_word(&format!("{cmd} "), arg, &rule_names, false)
        }
        Some((cmd, arg)) if cmd.len() >= 2 && "rollback".starts_with(cmd) => {
            match arg.split_once(' ') {
                None => complete_word(&format!("{cmd} "), arg, &rule_names, true),
                Some((rule, host)) => {
                    let hosts = words
                        .rules
                        .iter()
                        .find(|(r, _)| r == rule)
                        .map(|(_, h)| h.clone())
                        .unwrap_or_default();
                    complete_word(&format!("{cmd} {rule} "), host, &hosts, false)
                }
            }
        }
        _ => (line.to_owned(), Vec::new()),
    }
}

/// Completes a file path like a shell: the longest common prefix of the entries that
/// start with what was typed; a single directory gets its `/`. `~/` is the home directory.
pub fn complete_path(typed: &str) -> (String, Vec<String>) {
    let expanded = expand_home(typed);
    let (dir, prefix) = match expanded.rfind('/') {
        Some(i) => (expanded[..=i].to_owned(), expanded[i + 1..].to_owned()),
        None => (String::new(), expanded.clone()),
    };
    let read_from = if dir.is_empty() { "." } else { dir.as_str() };
    let Ok(rd) = std::fs::read_dir(read_from) else {
        return (typed.to_owned(), Vec::new());
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if !name.starts_with(&prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir())
                || (e.file_type().is_ok_and(|t| t.is_symlink()) && e.path().is_dir());
            Some(if is_dir { format!("{name}/") } else { name })
        })
        .collect();
    names.sort();
    let done = match names.as_slice() {
        [] => return (typed.to_owned(), Vec::new()),
        [one] => one.clone(),
        many => common_prefix(&prefix, many),
    };
    let shown = if names.len() > 1 { names } else { Vec::new() };
    let completed = format!("{dir}{done}");
    // Keep the user's `~/` rather than the expanded home.
    let out = match (typed.strip_prefix("~/"), home()) {
        (Some(_), Some(h)) => completed
            .strip_prefix(&format!("{}/", h.trim_end_matches('/')))
            .map(|rest| format!("~/{rest}"))
            .unwrap_or(completed),
        _ => completed,
    };
    (out, shown)
}

/// `~/x` -> `$HOME/x`.
pub fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => format!("{}/{rest}", h.trim_end_matches('/')),
        _ => path.to_owned(),
    }
}

fn home() -> Option<String> {
    std::env::var("HOME").ok().filter(|h| !h.is_empty())
}

fn common_prefix(typed: &str, candidates: &[String]) -> String {
    let Some(first) = candidates.first() else {
        return typed.to_owned();
    };
    let mut len = first.len();
    for c in &candidates[1..] {
        len = len.min(
            first
                .char_indices()
                .zip(c.chars())
                .take_while(|((_, a), b)| a == b)
                .map(|((i, a), _)| i + a.len_utf8())
                .last()
                .unwrap_or(0),
        );
    }
    let p = &first[..len];
    if p.len() >= typed.len() {
        p.to_owned()
    } else {
        typed.to_owned()
    }
}

/// True when `path` names a regular file.
pub fn is_file(path: &str) -> bool {
    Path::new(&expand_home(path)).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_prefixes() {
        assert_eq!(parse("hist"), Ok(Command::History));
        assert_eq!(
            parse("dispatch a b.tgz"),
            Ok(Command::Dispatch("a b.tgz".into()))
        );
        assert_eq!(parse("theme light"), Ok(Command::Theme("light".into())));
        assert!(parse("dispatch").unwrap_err().contains("FILE"));
        assert!(parse("zap").unwrap_err().contains("unknown"));
        assert_eq!(parse("q"), Ok(Command::Quit));
        assert_eq!(parse("probe"), Ok(Command::Probe(None)));
        assert_eq!(parse("pro app"), Ok(Command::Probe(Some("app".into()))));
        assert_eq!(parse("stat"), Ok(Command::Status));
        assert_eq!(parse("conv"), Ok(Command::Converge(None)));
        assert_eq!(
            parse("converge app"),
            Ok(Command::Converge(Some("app".into())))
        );
        assert_eq!(
            parse("rollback app web1"),
            Ok(Command::Rollback {
                rule: "app".into(),
                host: Some("web1".into())
            })
        );
        assert!(parse("rollback").unwrap_err().contains("RULE"));
        assert!(parse("rollback a b c").unwrap_err().contains("too many"));
    }

    #[test]
    fn completes_names_themes_and_paths() {
        let themes = Words {
            themes: vec!["default".to_owned(), "light".to_owned(), "mono".to_owned()],
            rules: vec![
                ("app".to_owned(), vec!["web1".to_owned(), "web2".to_owned()]),
                ("db".to_owned(), vec!["db1".to_owned()]),
            ],
        };
        assert_eq!(complete("hi", &themes).0, "history ");
        assert_eq!(complete("theme l", &themes).0, "theme light");
        assert_eq!(complete("roll", &themes).0, "rollback ");
        assert_eq!(complete("rollback a", &themes).0, "rollback app ");
        let (line, c) = complete("rollback app w", &themes);
        assert_eq!((line.as_str(), c.len()), ("rollback app web", 2));
        assert_eq!(
            complete("rollback app web2", &themes).0,
            "rollback app web2"
        );
        assert_eq!(complete("probe d", &themes).0, "probe db");
        assert_eq!(complete("st", &themes).0, "status ");
        let (line, cands) = complete("", &themes);
        assert_eq!(line, "");
        assert_eq!(cands.len(), COMMANDS.len());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app-1.0.tgz"), "x").unwrap();
        std::fs::write(dir.path().join("app-1.1.tgz"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let base = dir.path().display().to_string();
        let (p, c) = complete_path(&format!("{base}/ap"));
        assert_eq!(p, format!("{base}/app-1."));
        assert_eq!(c, vec!["app-1.0.tgz", "app-1.1.tgz"]);
        let (p, c) = complete_path(&format!("{base}/s"));
        assert_eq!(p, format!("{base}/sub/"));
        assert!(c.is_empty());
    }
}
