//! The programs a rule's commands call, so `--probe` can ask the host `command -v` for each
//! before anything is shipped.
//!
//! This is not a shell parser. It reads the command text as written in `dispatch.cfg`
//! (placeholders unrendered: probing has no bundle), splits it into simple commands on
//! unquoted `;`, `&`, `|`, `&&`, `||`, newlines, parentheses, `$(`/backticks, skips
//! redirections, `VAR=x` assignments, shell keywords and builtins, and takes the first word
//! of each. Whatever it cannot judge — a word built by an expansion (`$CMD`), a
//! placeholder (`{path}`), a path relative to a directory the command may `cd` into, a
//! `case` statement — is listed as not checked, with the reason, never guessed.

/// Words that start compound commands or are part of them; the word after them is the
/// program (or another keyword).
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "[[", "]]",
    "time", "function",
];

/// Built into every POSIX shell (or bash): they always exist.
const BUILTINS: &[&str] = &[
    ".", ":", "[", "alias", "bg", "break", "cd", "continue", "declare", "echo", "eval", "exit",
    "export", "false", "fg", "getopts", "hash", "jobs", "kill", "let", "local", "printf", "pwd",
    "read", "readonly", "return", "set", "shift", "source", "test", "times", "trap", "true",
    "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
];

/// Run the program named by their first non-option argument.
const WRAPPERS: &[&str] = &["exec", "command", "nohup", "setsid", "env"];

/// A program to look for on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Looked up in `$PATH` with `command -v`.
    Name(String),
    /// An absolute path, or `~/…` (the login's home): must be executable.
    Path(String),
}

impl Program {
    pub fn as_str(&self) -> &str {
        match self {
            Program::Name(s) | Program::Path(s) => s,
        }
    }
}

/// What [`extract`] found in one or more commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// In order of first appearance, without duplicates.
    pub programs: Vec<Program>,
    /// Words that may be programs but cannot be checked, each with the reason.
    pub unchecked: Vec<String>,
}

impl Extracted {
    /// Adds what `command` (the text of the rule's `key`) calls.
    pub fn add(&mut self, key: &str, command: &str) {
        let trimmed = command.trim_start();
        if key == "health"
            && (trimmed.starts_with("http://")
                || trimmed.starts_with("https://")
                || crate::config::health::is_probe(trimmed))
        {
            return;
        }
        let (outer, inner) = substitutions(command);
        for cmd in simple_commands(&outer) {
            self.add_simple(key, &cmd);
        }
        for text in inner {
            self.add(key, &text);
        }
    }

    fn add_simple(&mut self, key: &str, cmd: &SimpleCommand) {
        if cmd.words.first().is_some_and(|w| w.text == "case") || cmd.in_case {
            self.note(format!(
                "`{key}`: a `case` statement is not read; its commands are not checked"
            ));
            return;
        }
        let mut words = cmd.words.iter().peekable();
        // Keywords and assignments before the program.
        while let Some(w) = words.peek() {
            if w.assignment || (!w.quoted && KEYWORDS.contains(&w.text.as_str())) {
                words.next();
            } else {
                break;
            }
        }
        let Some(mut first) = words.next() else {
            return;
        };
        if !first.quoted && matches!(first.text.as_str(), "for" | "select") {
            // `for x in a b`: the words are values, not programs.
            return;
        }
        loop {
            if !first.quoted && WRAPPERS.contains(&first.text.as_str()) {
                if first.text != "exec" && first.text != "command" {
                    self.push(first, key);
                }
                // `command -v x` asks, it does not run x.
                if first.text == "command"
                    && words
                        .peek()
                        .is_some_and(|w| w.text.starts_with("-v") || w.text.starts_with("-V"))
                {
                    return;
                }
                let next = words.find(|w| !w.text.starts_with('-') && !w.assignment);
                match next {
                    Some(n) => first = n,
                    None => return,
                }
            } else {
                self.push(first, key);
                return;
            }
        }
    }

    fn push(&mut self, w: &Word, key: &str) {
        let text = &w.text;
        if w.expansion {
            self.note(format!(
                "`{key}`: `{}` is built by an expansion at run time: not checked",
                w.raw
            ));
            return;
        }
        if w.placeholder {
            self.note(format!(
                "`{key}`: `{}` is a placeholder, known only at dispatch: not checked",
                w.raw
            ));
            return;
        }
        if !w.quoted && BUILTINS.contains(&text.as_str()) {
            return;
        }
        if text.is_empty() || text.starts_with('-') {
            return;
        }
        let program = if text.starts_with('/') || text.starts_with("~/") {
            Program::Path(text.clone())
        } else if text.contains('/') || text.starts_with('~') {
            self.note(format!(
                "`{key}`: `{text}` is a relative path (it depends on the directory the command is in): not checked"
            ));
            return;
        } else {
            Program::Name(text.clone())
        };
        if !self.programs.contains(&program) {
            self.programs.push(program);
        }
    }

    fn note(&mut self, text: String) {
        if !self.unchecked.contains(&text) {
            self.unchecked.push(text);
        }
    }
}

/// The programs of the commands given as `(key, text)` pairs.
pub fn extract<'a>(commands: impl IntoIterator<Item = (&'a str, &'a str)>) -> Extracted {
    let mut out = Extracted::default();
    for (key, text) in commands {
        out.add(key, text);
    }
    out
}

/// One word of a simple command, unquoted.
#[derive(Debug, Default)]
struct Word {
    text: String,
    /// As written (for messages).
    raw: String,
    /// Some part was quoted: then it is never a keyword or an assignment.
    quoted: bool,
    /// Contains an unquoted-or-double-quoted `$…` or a backtick: its value is known only at
    /// run time.
    expansion: bool,
    /// Contains a `{identifier}` placeholder.
    placeholder: bool,
    /// `NAME=value` before the program.
    assignment: bool,
}

#[derive(Debug, Default)]
struct SimpleCommand {
    words: Vec<Word>,
    /// Inside a `case … esac`.
    in_case: bool,
}

struct Splitter {
    commands: Vec<SimpleCommand>,
    cur: SimpleCommand,
    word: Word,
    in_word: bool,
    /// The next word is a redirection target, not an argument.
    redirect: bool,
    in_case: bool,
}

impl Splitter {
    fn start_word(&mut self) {
        self.in_word = true;
    }

    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        self.in_word = false;
        let mut w = std::mem::take(&mut self.word);
        if self.redirect {
            self.redirect = false;
            return;
        }
        // As written: a quote before the `=` makes it an argument, not an assignment.
        if let Some(eq) = w.raw.find('=') {
            let name = &w.raw[..eq];
            w.assignment = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
        }
        w.placeholder = has_placeholder(&w.raw);
        self.cur.words.push(w);
    }

    fn end_command(&mut self) {
        self.end_word();
        let mut cmd = std::mem::take(&mut self.cur);
        if cmd.words.iter().any(|w| !w.quoted && w.text == "case") {
            self.in_case = true;
        }
        cmd.in_case = self.in_case;
        if cmd.words.iter().any(|w| !w.quoted && w.text == "esac") {
            self.in_case = false;
        }
        if !cmd.words.is_empty() {
            self.commands.push(cmd);
        }
    }

    fn push(&mut self, c: char) {
        self.start_word();
        self.word.text.push(c);
    }
}

fn has_placeholder(raw: &str) -> bool {
    let chars: Vec<char> = raw.chars().collect();
    chars.iter().enumerate().any(|(i, &c)| {
        c == '{'
            && (i == 0 || chars[i - 1] != '$' && chars[i - 1] != '{')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_')
            && chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count()
                .checked_add(i + 1)
                .is_some_and(|end| chars.get(end) == Some(&'}'))
    })
}

/// Takes the command substitutions (`$(…)`, `` `…` ``) out of `text`: returns the text with
/// each replaced by `$S` (an expansion) and their insides, which are commands of their own.
fn substitutions(text: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = text.chars().collect();
    let mut outer = String::new();
    let mut inner = Vec::new();
    let mut single = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if single {
            single = c != '\'';
            outer.push(c);
            i += 1;
            continue;
        }
        match c {
            '\'' => {
                // A single quote inside double quotes is literal; only track bare ones.
                single = !inside_double(&outer);
                outer.push(c);
                i += 1;
            }
            '\\' => {
                outer.extend(&chars[i..(i + 2).min(chars.len())]);
                i += 2;
            }
            '$' if next == Some('(') && chars.get(i + 2) != Some(&'(') => {
                let mut depth = 1usize;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                inner.push(chars[i + 2..j.min(chars.len())].iter().collect());
                outer.push_str("$S");
                i = j + 1;
            }
            '`' => {
                let j = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .map_or(chars.len(), |p| i + 1 + p);
                inner.push(chars[i + 1..j].iter().collect());
                outer.push_str("$S");
                i = j + 1;
            }
            _ => {
                outer.push(c);
                i += 1;
            }
        }
    }
    (outer, inner)
}

/// Whether the end of `text` is inside a double-quoted string (quotes counted roughly).
fn inside_double(text: &str) -> bool {
    let mut inside = false;
    let mut single = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !inside => single = !single,
            '"' if !single => inside = !inside,
            _ => {}
        }
    }
    inside
}

/// Splits `text` into simple commands (see the module doc).
fn simple_commands(text: &str) -> Vec<SimpleCommand> {
    let chars: Vec<char> = text.chars().collect();
    let mut s = Splitter {
        commands: Vec::new(),
        cur: SimpleCommand::default(),
        word: Word::default(),
        in_word: false,
        redirect: false,
        in_case: false,
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        match c {
            '\'' => {
                s.start_word();
                s.word.quoted = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    s.word.text.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                s.start_word();
                s.word.quoted = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            s.word.text.push(chars[i + 1]);
                            i += 2;
                            continue;
                        }
                        '$' | '`' => s.word.expansion = true,
                        _ => {}
                    }
                    s.word.text.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '\\' => {
                s.start_word();
                s.word.quoted = true;
                if let Some(n) = next
                    && n != '\n'
                {
                    s.word.text.push(n);
                }
                i += 2;
            }
            '#' if !s.in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' if next == Some('(') && chars.get(i + 2) == Some(&'(') => {
                // Arithmetic `$(( … ))`: part of a word, never a command.
                s.start_word();
                s.word.expansion = true;
                let mut depth = 0usize;
                while i < chars.len() {
                    match chars[i] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    s.word.text.push(chars[i]);
                    i += 1;
                }
            }
            '$' => {
                s.start_word();
                s.word.expansion = true;
                s.word.text.push('$');
                i += 1;
                if next == Some('{') {
                    while i < chars.len() && chars[i] != '}' {
                        s.word.text.push(chars[i]);
                        i += 1;
                    }
                    i += 1;
                }
            }
            ';' | '&' | '|' | '\n' | '(' | ')' => {
                s.end_command();
                i += 1;
            }
            '<' | '>' => {
                // `2>&1`: a word of digits before it is a file descriptor.
                if s.in_word && !s.word.quoted && s.word.text.chars().all(|c| c.is_ascii_digit()) {
                    s.word = Word::default();
                    s.in_word = false;
                } else {
                    s.end_word();
                }
                i += 1;
                while i < chars.len() && matches!(chars[i], '<' | '>' | '&' | '|') {
                    i += 1;
                }
                s.redirect = true;
            }
            c if c.is_whitespace() => {
                s.end_word();
                i += 1;
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
        if s.in_word {
            s.word.raw.extend(&chars[start..i.min(chars.len())]);
        }
    }
    s.end_command();
    s.commands
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        extract([("upgrade", text)])
            .programs
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect()
    }

    #[test]
    fn splits_lists_and_pipes() {
        assert_eq!(
            names("cd {dir} && tar xzf {path} && echo done; systemctl restart app | logger"),
            ["tar", "systemctl", "logger"]
        );
        assert_eq!(names("a || b\nc & d"), ["a", "b", "c", "d"]);
    }

    #[test]
    fn skips_assignments_keywords_builtins_redirections() {
        assert_eq!(names("LANG=C FOO='a b' sort -u < in > out 2>&1"), ["sort"]);
        assert_eq!(
            names("if test -e x; then rsync a b; else curl -f u; fi"),
            ["rsync", "curl"]
        );
        assert_eq!(names("for f in a b c; do gzip $f; done"), ["gzip"]);
        assert_eq!(names("echo hi >> /var/log/x; exit 0"), Vec::<String>::new());
        assert_eq!(names("while read l; do jq . ; done"), ["jq"]);
    }

    #[test]
    fn quoted_separators_are_not_split() {
        assert_eq!(names("sh -c 'a; b' && printf \"x|y\""), ["sh"]);
    }

    #[test]
    fn substitutions_are_commands_too() {
        assert_eq!(
            names("ln -sfn \"$(readlink -f cur)\" prev; x=$(date +%s); echo $((x + 1))"),
            ["ln", "readlink", "date"]
        );
        assert_eq!(names("basename `hostname -s`"), ["basename", "hostname"]);
    }

    #[test]
    fn wrappers_and_paths() {
        assert_eq!(
            names("exec /usr/bin/app --x; nohup ~/bin/run; env A=1 python3 x.py; command -v foo"),
            ["/usr/bin/app", "nohup", "~/bin/run", "env", "python3"]
        );
        let e = extract([("upgrade", "./install.sh && $TOOL x && {path} --self")]);
        assert!(e.programs.is_empty(), "{e:?}");
        assert_eq!(e.unchecked.len(), 3, "{e:?}");
    }

    #[test]
    fn url_health_and_case() {
        assert!(
            extract([("health", "http://127.0.0.1/h")])
                .programs
                .is_empty()
        );
        let e = extract([("upgrade", "case $x in a) foo;; esac; bar")]);
        assert_eq!(e.programs, [Program::Name("bar".into())]);
        assert_eq!(e.unchecked.len(), 1);
    }

    #[test]
    fn never_panics_on_odd_text() {
        for t in [
            "'", "\"", "\\", "$(", "$((", "${", "`", ")(", "2>", "a=", "{x", "$(( (", "'\u{e9}'",
        ] {
            let _ = extract([("pre", t)]);
        }
    }
}
