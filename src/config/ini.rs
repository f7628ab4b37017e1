//! The INI layer of `dispatch.cfg`: one walk over the lines that yields each section and
//! key with the line it is on, so every diagnostic can say `file:line`.
//!
//! The contract, point by point: section names are case-sensitive (they are regexes: `\D`
//! is not `\d`) and kept in file order (rules are tried in that order); keys are
//! case-insensitive (folded here); only whole-line comments, `#` or `;` (passwords contain
//! both, so there are no inline comments); no multi-line values and no interpolation; `=`
//! and `:` both delimit, the first one on the line wins; values are trimmed and one pair of
//! matching quotes removed. A repeated section or key is an error, never a silent merge.
//!
//! A general INI crate (`configparser` was used alongside this walk) keeps no line numbers
//! and merges duplicates silently, so it could only repeat what the walk already knows.

use super::diagnostic::Diagnostic;
use super::limits::{MAX_ERRORS, too_many_errors};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Lower-cased: keys are case-insensitive.
    pub key: String,
    /// Trimmed and unquoted; `None` when empty ("not set").
    pub value: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection {
    /// Exactly as written between the brackets (trimmed).
    pub name: String,
    pub line: usize,
    pub entries: Vec<RawEntry>,
}

/// Removes one pair of matching surrounding quotes: `"ibpsusr"` and `'ibpsusr'` mean
/// `ibpsusr`; anything else is kept as written.
pub fn unquote(value: &str) -> &str {
    let b = value.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

fn delimiter_at(line: &str) -> Option<usize> {
    line.find(['=', ':'])
}

/// Reads the sections of a `dispatch.cfg` text in file order. Problems are pushed to
/// `diags` (all of them, so `--check` can list every one); what could be read is returned.
pub fn read(text: &str, file: &Path, diags: &mut Vec<Diagnostic>) -> Vec<RawSection> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let before = diags.len();

    let mut sections: Vec<RawSection> = Vec::new();
    // Section name -> index in `sections` of its first occurrence.
    let mut first_section: HashMap<String, usize> = HashMap::new();
    // Key -> index in the current section's entries.
    let mut section_keys: HashMap<String, usize> = HashMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        if diags.len() - before >= MAX_ERRORS {
            diags.push(too_many_errors(file, Some(line_no)));
            break;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') {
            let Some(end) = line.rfind(']') else {
                diags.push(
                    Diagnostic::error(file, Some(line_no), "section header has no closing `]`")
                        .hint("write the rule as `[REGEX]` on a line of its own"),
                );
                continue;
            };
            let name = line[1..end].trim().to_owned();
            if end + 1 != line.len() {
                diags.push(
                    Diagnostic::error(
                        file,
                        Some(line_no),
                        format!("text after the section header `[{name}]`"),
                    )
                    .hint("a section header stands alone on its line; comments need a line of their own"),
                );
            }
            if name.is_empty() {
                diags.push(
                    Diagnostic::error(file, Some(line_no), "empty section name `[]`")
                        .hint("a section name is the regex a bundle name must match"),
                );
            }
            if let Some(first) = first_section.get(&name).map(|&i| &sections[i]) {
                diags.push(
                    Diagnostic::error(
                        file,
                        Some(line_no),
                        format!(
                            "duplicate section `[{name}]` (first at line {})",
                            first.line
                        ),
                    )
                    .hint("merge the two sections, or delete one"),
                );
            }
            first_section.entry(name.clone()).or_insert(sections.len());
            section_keys.clear();
            sections.push(RawSection {
                name,
                line: line_no,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(at) = delimiter_at(line) else {
            diags.push(
                Diagnostic::error(file, Some(line_no), format!("expected `key = value`, found `{line}`"))
                    .hint("every line is a `[section]`, a `key = value`, a comment starting with `#` or `;`, or blank"),
            );
            continue;
        };
        let written_key = line[..at].trim();
        if written_key.is_empty() {
            diags.push(
                Diagnostic::error(file, Some(line_no), "a value with no key")
                    .hint("write `key = value`"),
            );
            continue;
        }
        let Some(section) = sections.last_mut() else {
            diags.push(
                Diagnostic::error(
                    file,
                    Some(line_no),
                    format!("key `{written_key}` is outside any section"),
                )
                .hint(
                    "put it under `[DEFAULT]` to apply it to every rule, or under a `[REGEX]` rule",
                ),
            );
            continue;
        };
        let key = written_key.to_lowercase();
        if let Some(first) = section_keys.get(&key).map(|&i| &section.entries[i]) {
            diags.push(
                Diagnostic::error(
                    file,
                    Some(line_no),
                    format!(
                        "duplicate key `{key}` in `[{}]` (first at line {})",
                        section.name, first.line
                    ),
                )
                .hint("keep one of them; a rule cannot set a key twice"),
            );
            continue;
        }
        let value = unquote(line[at + 1..].trim());
        section_keys.insert(key.clone(), section.entries.len());
        section.entries.push(RawEntry {
            key,
            value: (!value.is_empty()).then(|| value.to_owned()),
            line: line_no,
        });
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<RawSection>, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let s = read(text, Path::new("t.cfg"), &mut d);
        (s, d)
    }

    fn value<'a>(s: &'a [RawSection], sec: &str, key: &str) -> Option<&'a str> {
        s.iter()
            .find(|x| x.name == sec)?
            .entries
            .iter()
            .find(|e| e.key == key)?
            .value
            .as_deref()
    }

    #[test]
    fn full_line_comments_only() {
        let (s, d) = parse(
            "# top\n; also\n[a]\n  # indented comment\nhost = h1 # not a comment\npassword = p;w#d\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(value(&s, "a", "host"), Some("h1 # not a comment"));
        assert_eq!(value(&s, "a", "password"), Some("p;w#d"));
    }

    #[test]
    fn both_delimiters_and_case_insensitive_keys() {
        let (s, d) = parse("[a]\nHOST: h1\nLogin = u\nurl = http://x:80/y\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(value(&s, "a", "host"), Some("h1"));
        assert_eq!(value(&s, "a", "login"), Some("u"));
        assert_eq!(value(&s, "a", "url"), Some("http://x:80/y"));
    }

    #[test]
    fn section_names_keep_case_and_order() {
        let (s, d) = parse("[b\\D]\nhost=x\n[A\\d]\nhost=y\n[DEFAULT]\nport=1\n");
        assert!(d.is_empty(), "{d:?}");
        let names: Vec<_> = s.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["b\\D", "A\\d", "DEFAULT"]);
    }

    #[test]
    fn section_name_may_contain_brackets() {
        let (s, d) = parse("[app-[0-9]+\\.tgz]\nhost=x\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s[0].name, "app-[0-9]+\\.tgz");
    }

    #[test]
    fn values_trimmed_and_unquoted_once() {
        let (s, _) = parse("[a]\nlogin = \"ibpsusr\"\nb = '\"x\"'\nc = \"x'\nd = \"\"\ne =   \n");
        assert_eq!(value(&s, "a", "login"), Some("ibpsusr"));
        assert_eq!(value(&s, "a", "b"), Some("\"x\""));
        assert_eq!(value(&s, "a", "c"), Some("\"x'"));
        assert_eq!(value(&s, "a", "d"), None);
        assert_eq!(value(&s, "a", "e"), None);
    }

    #[test]
    fn no_multiline_and_no_interpolation() {
        let (s, d) = parse("[a]\nupgrade = echo 100%\n    continued = 1\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(value(&s, "a", "upgrade"), Some("echo 100%"));
        assert_eq!(value(&s, "a", "continued"), Some("1"));
    }

    #[test]
    fn duplicates_are_reported_with_lines() {
        let (_, d) = parse("[a]\nhost=1\nHost=2\n[a]\nhost=3\n");
        let msgs: Vec<String> = d.iter().map(|x| x.to_string()).collect();
        assert!(msgs[0].contains("t.cfg:3") && msgs[0].contains("duplicate key `host`"));
        assert!(msgs[1].contains("t.cfg:4") && msgs[1].contains("duplicate section"));
    }

    /// The entry kept for a repeated key is the first one, with its own value: a later
    /// line's value never shows up under the earlier line's number.
    #[test]
    fn a_repeated_key_keeps_the_first_value_and_line() {
        let (s, d) = parse("[a]\nhost = 1\nhost = 2\n");
        assert_eq!(d.len(), 1, "{d:?}");
        let e = &s[0].entries;
        assert_eq!(
            (e.len(), e[0].line, e[0].value.as_deref()),
            (1, 2, Some("1"))
        );
    }

    #[test]
    fn stray_lines_are_reported() {
        let (_, d) = parse("host = x\n[a\n[b]\njunk\n= v\n[c] # x\n");
        let lines: Vec<_> = d.iter().map(|x| x.line).collect();
        assert_eq!(lines, [Some(1), Some(2), Some(4), Some(5), Some(6)]);
    }

    #[test]
    fn crlf_and_bom() {
        let (s, d) = parse("\u{feff}[a]\r\nhost = h\r\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(value(&s, "a", "host"), Some("h"));
    }
}
