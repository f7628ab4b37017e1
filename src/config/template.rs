//! Placeholders in `dest_dir` and commands: `{bundle}`, `{host}`, named captures, ….
//!
//! Commands are shell text, and shell text is full of braces (`${HOME}`, `awk '{print $1}'`,
//! `{a,b}`), so only `{identifier}` is a placeholder; `${…}` is left to the shell, `{{` and
//! `}}` write a literal brace, and any other brace is literal. Placeholders are checked
//! when the config loads (an unknown one is an error naming the nearest known one) and
//! values are shell-quoted when they are put into a command, so a bundle named
//! `x;reboot.tgz` can never inject a command. The quoting fits where the placeholder
//! stands: bare, inside `'…'` or inside `"…"` (where `$(…)` would still run), so
//! `echo "unpacked {bundle}"` is as safe as `echo {bundle}`.

use std::collections::BTreeMap;

/// The shell quoting in force where a placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Bare,
    Single,
    Double,
    /// Inside `` `…` ``, where the shell re-parses backslashes: no escaping is reliable, so
    /// such a placeholder is refused when the config loads.
    Backtick,
}

/// One level of shell text: the top level, or a `$( … )` command substitution, whose
/// inside the shell parses as commands again (even within `"…"`).
struct Frame {
    quoting: Quoting,
    /// Opened by `$(`: closed by the `)` that matches it.
    subst: bool,
    parens: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String, Quoting),
}

/// Puts `value` into shell text at a spot with `quoting`, so it stays one literal word.
fn shell_escape(value: &str, quoting: Quoting) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    Some(match quoting {
        Quoting::Bare => super::shell::quote(value),
        // Close the quote, add an escaped quote, reopen.
        Quoting::Single => value.replace('\'', "'\\''"),
        Quoting::Backtick => return None,
        Quoting::Double => {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                if matches!(c, '\\' | '$' | '`' | '"') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
    })
}

/// A parsed `dest_dir` or command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Values for placeholders, by name.
pub type Vars = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("placeholder `{{{0}}}` has no value here")]
    Missing(String),
    #[error("the value of `{{{0}}}` contains a NUL byte and cannot be put into a shell command")]
    Unquotable(String),
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Template {
    /// Parses `source`. This cannot fail: text that is not a placeholder is literal.
    pub fn parse(source: &str) -> Template {
        let mut parts = Vec::new();
        let mut text = String::new();
        let chars: Vec<char> = source.chars().collect();
        let mut stack = vec![Frame {
            quoting: Quoting::Bare,
            subst: false,
            parens: 0,
        }];
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            let top = stack.len() - 1;
            let quoting = stack[top].quoting;
            match c {
                '{' if next == Some('{') => {
                    text.push('{');
                    i += 2;
                    continue;
                }
                '}' if next == Some('}') => {
                    text.push('}');
                    i += 2;
                    continue;
                }
                '{' if next.is_some_and(is_ident_start) => {
                    let len = chars[i + 1..].iter().take_while(|&&c| is_ident(c)).count();
                    if chars.get(i + 1 + len) == Some(&'}') {
                        if !text.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut text)));
                        }
                        let name = chars[i + 1..i + 1 + len].iter().collect();
                        parts.push(Part::Var(name, quoting));
                        i += len + 2;
                        continue;
                    }
                }
                _ => {}
            }
            let mut step = 1;
            match (quoting, c) {
                (Quoting::Single, '\'') => stack[top].quoting = Quoting::Bare,
                (Quoting::Single, _) => {}
                (_, '\\') => step = 2, // an escaped character opens or closes nothing
                (Quoting::Backtick, '`') => {
                    stack.pop();
                }
                (Quoting::Backtick, _) => {}
                (_, '$') if next == Some('{') => {
                    // `${…}` belongs to the shell: copy through to its closing brace.
                    step = chars[i..]
                        .iter()
                        .position(|&c| c == '}')
                        .map_or(chars.len() - i, |p| p + 1);
                }
                (_, '$') if next == Some('(') => {
                    stack.push(Frame {
                        quoting: Quoting::Bare,
                        subst: true,
                        parens: 0,
                    });
                    step = 2;
                }
                (_, '`') => stack.push(Frame {
                    quoting: Quoting::Backtick,
                    subst: false,
                    parens: 0,
                }),
                (Quoting::Bare, '\'') => stack[top].quoting = Quoting::Single,
                (Quoting::Bare, '"') => stack[top].quoting = Quoting::Double,
                (Quoting::Double, '"') => stack[top].quoting = Quoting::Bare,
                (Quoting::Bare, '(') if stack[top].subst => stack[top].parens += 1,
                (Quoting::Bare, ')') if stack[top].subst => {
                    if stack[top].parens == 0 {
                        stack.pop();
                    } else {
                        stack[top].parens -= 1;
                    }
                }
                _ => {}
            }
            let end = (i + step).min(chars.len());
            text.extend(&chars[i..end]);
            i = end;
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Template {
            source: source.to_owned(),
            parts,
        }
    }

    /// Placeholders standing inside backticks, which the config refuses.
    pub fn placeholders_in_backticks(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, Quoting::Backtick) => Some(v.as_str()),
            _ => None,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholder names used, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, _) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills in the placeholders as they are (for paths).
    pub fn render_plain(&self, vars: &Vars) -> Result<String, RenderError> {
        self.render(vars, false)
    }

    /// Fills in the placeholders shell-quoted (for commands run by `sh -c`).
    pub fn render_shell(&self, vars: &Vars) -> Result<String, RenderError> {
        self.render(vars, true)
    }

    fn render(&self, vars: &Vars, quote: bool) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(name, quoting) => {
                    let value = vars
                        .get(name)
                        .ok_or_else(|| RenderError::Missing(name.clone()))?;
                    if quote {
                        let quoted = shell_escape(value, *quoting)
                            .ok_or_else(|| RenderError::Unquotable(name.clone()))?;
                        out.push_str(&quoted);
                    } else {
                        out.push_str(value);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The nearest of `known` to `word`, when one is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // The distance is at least the difference in length: skip the quadratic distance for
    // a word far longer than any known one (a 60 KiB key is not a typo of `host`).
    let chars = word.chars().count();
    known
        .into_iter()
        .filter(|k| chars.abs_diff(k.chars().count()) <= 2.max(k.len() / 3))
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 3))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_and_shell_braces() {
        let t =
            Template::parse("tar xf {path} -C ${HOME}/{stem} && awk '{print $1}' {{x}} {a,b} {1}");
        assert_eq!(t.placeholders().collect::<Vec<_>>(), ["path", "stem"]);
        let out = t
            .render_shell(&vars(&[("path", "/a b/x.tgz"), ("stem", "x")]))
            .unwrap();
        assert_eq!(
            out,
            "tar xf '/a b/x.tgz' -C ${HOME}/x && awk '{print $1}' {x} {a,b} {1}"
        );
    }

    #[test]
    fn shell_values_cannot_inject() {
        let t = Template::parse("echo {bundle}");
        for evil in ["x;reboot.tgz", "$(reboot)", "a'b", "`id`", "a\nb", ""] {
            let out = t.render_shell(&vars(&[("bundle", evil)])).unwrap();
            let words = shlex::split(&out).unwrap();
            assert_eq!(words, ["echo", evil], "for {evil:?}: {out}");
        }
        let nul = t.render_shell(&vars(&[("bundle", "a\0b")]));
        assert_eq!(nul, Err(RenderError::Unquotable("bundle".into())));
    }

    #[test]
    fn values_inside_quotes_stay_inert() {
        let evil = [
            "x;reboot",
            "$(touch /tmp/pwned)",
            "a'b\"c",
            "`id`",
            "a\\",
            "l1\nl2",
            "$HOME",
        ];
        for (template, words) in [
            ("echo \"got {bundle} ok\"", ["echo", "got EVIL ok"]),
            ("echo 'got {bundle} ok'", ["echo", "got EVIL ok"]),
            ("echo got\\ {bundle}", ["echo", "got EVIL"]),
        ] {
            let t = Template::parse(template);
            for e in evil {
                let out = t.render_shell(&vars(&[("bundle", e)])).unwrap();
                let want: Vec<String> = words.iter().map(|w| w.replace("EVIL", e)).collect();
                let want = if template.contains("\\ ") {
                    vec!["echo".to_owned(), format!("got {e}")]
                } else {
                    want
                };
                assert_eq!(
                    shlex::split(&out).unwrap(),
                    want,
                    "{template} with {e:?}: {out}"
                );
            }
        }
    }

    #[test]
    fn values_inside_command_substitutions_stay_inert() {
        let evil = [
            "app-1;touch PWNED;echo",
            "a'b",
            "x)\"; touch PWNED; (\"",
            "$(id)",
        ];
        for template in [
            "v=\"$(echo {stem} | cut -d- -f2)\"; echo \"$v\"",
            "echo \"$(printf %s '{stem}')\"",
            "echo $( (echo {stem}) )",
        ] {
            let t = Template::parse(template);
            for e in evil {
                let out = t.render_shell(&vars(&[("stem", e)])).unwrap();
                let run = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&out)
                    .current_dir(std::env::temp_dir())
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&run.stdout);
                assert!(
                    !stdout.contains("uid=") && !std::env::temp_dir().join("PWNED").exists(),
                    "{template} with {e:?} ran something: {out}"
                );
            }
        }
        let t = Template::parse("echo `basename {path}`");
        assert_eq!(t.placeholders_in_backticks().collect::<Vec<_>>(), ["path"]);
        assert_eq!(
            t.render_shell(&vars(&[("path", "x")])),
            Err(RenderError::Unquotable("path".into()))
        );
    }

    #[test]
    fn plain_render_and_missing() {
        let t = Template::parse("~/newcx/{timestamp}");
        assert_eq!(
            t.render_plain(&vars(&[("timestamp", "20261121_101500")]))
                .unwrap(),
            "~/newcx/20261121_101500"
        );
        assert_eq!(
            t.render_plain(&Vars::new()),
            Err(RenderError::Missing("timestamp".into()))
        );
    }

    #[test]
    fn nearest_suggests_typos_only() {
        let known = ["host", "login", "password", "dest_dir"];
        assert_eq!(nearest("hots", known), Some("host"));
        assert_eq!(nearest("pasword", known), Some("password"));
        assert_eq!(nearest("destdir", known), Some("dest_dir"));
        assert_eq!(nearest("zzzzzzz", known), None);
    }
}
