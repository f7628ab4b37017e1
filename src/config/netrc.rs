//! `.netrc` credentials: the parser, the lookup and the permission check.
//!
//! Written by hand rather than taken from the `netrc` crates because the contract needs
//! things they lack: quoted tokens with escapes, line numbers in every error and entry,
//! errors that never echo a secret, and the curl/ftp refusal of a password file that
//! other users can read.
//!
//! Syntax decisions (each one is tested below):
//! - Tokens are separated by any ASCII whitespace, newlines included, so an entry may span
//!   lines or share one with the next entry.
//! - `#` starts a comment only where a token would start. Inside a quoted token, or in the
//!   middle of an unquoted one (`pa#ss`), it is an ordinary character: passwords contain `#`
//!   far more often than people put comments right after a token. A value that *starts*
//!   with `#` must be quoted.
//! - `"..."` quotes a token; inside it `\n`, `\r` and `\t` are the control characters and a
//!   backslash before anything else yields that character (`\"`, `\\`), as in curl.
//!   Backslashes in unquoted tokens are literal, so Windows-ish passwords survive unquoted.
//! - A quoted token is never a keyword, and a value may not be an unquoted keyword
//!   (`login password ...` is an error, not a user called "password"): that catches a
//!   missing value instead of silently shifting every later token by one.
//! - `macdef NAME` ignores the rest of its line and then every line up to and including
//!   the next blank (empty or whitespace-only) line, or to end of file.
//! - A later `login`/`password`/`account` in the same entry replaces the earlier one.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::Secret;
use super::limits::{self, MAX_NETRC_BYTES, MAX_NETRC_TOKEN_BYTES};

/// One `machine` or `default` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `None` for the `default` entry.
    pub machine: Option<String>,
    pub login: Option<String>,
    pub password: Option<Secret>,
    pub account: Option<Secret>,
    /// 1-based line of the `machine`/`default` keyword, so callers can point at the entry.
    pub line: usize,
}

impl Entry {
    /// The credentials another user must not be able to read: a password or account for
    /// any login but `anonymous` (by convention an e-mail address, not a secret). Account
    /// counts too, as in BSD ftp, since it is also a credential.
    fn holds_secret(&self) -> bool {
        (self.password.is_some() || self.account.is_some())
            && self.login.as_deref() != Some("anonymous")
    }

    /// A missing login matches every wanted login: the entry then only supplies a password.
    fn accepts_login(&self, login: Option<&str>) -> bool {
        match (login, self.login.as_deref()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
    }
}

/// A parsed `.netrc` file; entries keep file order because lookup is first-match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Netrc {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// Everything that can go wrong with a netrc file. Each message reads
/// `PATH:LINE: what happened — what to do` and never contains a password or account value.
#[derive(Debug, thiserror::Error)]
pub enum NetrcError {
    /// The file exists but cannot be read. There is no line to point at, so the message
    /// uses `PATH:` alone; the io error is part of the message (not a `source`) so that
    /// chained printing does not repeat it.
    #[error("{}: cannot read the netrc file: {error} — make it readable, or remove it", .path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("{}:{line}: the netrc file is not valid UTF-8 — re-save it as UTF-8", .path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    /// `what` is built only from keywords and non-secret tokens; see [`Netrc::parse`].
    #[error("{}:{line}: {what} — {hint}", .path.display())]
    UnexpectedToken {
        path: PathBuf,
        line: usize,
        what: String,
        hint: &'static str,
    },
    #[error("{}:{line}: quoted token opened here is never closed — add the closing `\"` (write `\\\"` for a quote inside it)", .path.display())]
    UnterminatedQuote { path: PathBuf, line: usize },
    /// The file is over [`MAX_NETRC_BYTES`]; checked before it is read whole.
    #[error("{}: the netrc file is {len} bytes; a netrc may be at most {} — is this the right file? Remove the entries dropship does not need", .path.display(), limits::bytes(MAX_NETRC_BYTES))]
    TooLarge { path: PathBuf, len: u64 },
    /// A token over [`MAX_NETRC_TOKEN_BYTES`]; the token is not shown (it may be a secret).
    #[error("{}:{line}: a token is longer than {} (not shown) — shorten it; a quote that is never closed also makes one long token", .path.display(), limits::bytes(MAX_NETRC_TOKEN_BYTES as u64))]
    TokenTooLong { path: PathBuf, line: usize },
    #[error("{}:{line}: the file holds a password but group or others may access it (mode {mode:03o}) — run `chmod 600 {}`", .path.display(), shell_path(.path))]
    InsecurePermissions {
        path: PathBuf,
        line: usize,
        mode: u32,
    },
    #[error("{}:{line}: the file holds a password but is owned by uid {owner}, not by you (uid {euid}) — run `chown {euid} {}` and `chmod 600 {}`", .path.display(), shell_path(.path), shell_path(.path))]
    WrongOwner {
        path: PathBuf,
        line: usize,
        owner: u32,
        euid: u32,
    },
}

/// The path as it must be typed into a shell, so the suggested command works as pasted.
fn shell_path(path: &Path) -> String {
    path.to_str()
        .map_or_else(|| path.display().to_string(), super::shell::quote)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Machine,
    Default,
    Login,
    Password,
    Account,
    Macdef,
}

impl Keyword {
    fn from_token(token: &Token<'_>) -> Option<Keyword> {
        if token.quoted {
            return None;
        }
        Some(match token.text.as_ref() {
            "machine" => Keyword::Machine,
            "default" => Keyword::Default,
            "login" => Keyword::Login,
            "password" => Keyword::Password,
            "account" => Keyword::Account,
            "macdef" => Keyword::Macdef,
            _ => return None,
        })
    }

    fn is_secret(self) -> bool {
        matches!(self, Keyword::Password | Keyword::Account)
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Keyword::Machine => "machine",
            Keyword::Default => "default",
            Keyword::Login => "login",
            Keyword::Password => "password",
            Keyword::Account => "account",
            Keyword::Macdef => "macdef",
        })
    }
}

struct Token<'a> {
    text: Cow<'a, str>,
    line: usize,
    quoted: bool,
}

/// Whitespace as C's `isspace` sees it in the C locale, which is what ftp and curl use.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Why the lexer stopped, with the line of the token.
#[derive(Debug, Clone, Copy)]
enum LexError {
    UnterminatedQuote(usize),
    TokenTooLong(usize),
}

/// Splits the text into tokens; no token is longer than [`MAX_NETRC_TOKEN_BYTES`].
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_rest_of_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn next_token(&mut self) -> Result<Option<Token<'a>>, LexError> {
        loop {
            while self.peek().is_some_and(is_space) {
                self.bump();
            }
            match self.peek() {
                None => return Ok(None),
                Some('#') => self.skip_rest_of_line(),
                Some('"') => return self.quoted().map(Some),
                Some(_) => {
                    let (start, line) = (self.pos, self.line);
                    while self.peek().is_some_and(|c| !is_space(c)) {
                        self.bump();
                        if self.pos - start > MAX_NETRC_TOKEN_BYTES {
                            return Err(LexError::TokenTooLong(line));
                        }
                    }
                    let text = Cow::Borrowed(&self.src[start..self.pos]);
                    return Ok(Some(Token {
                        text,
                        line,
                        quoted: false,
                    }));
                }
            }
        }
    }

    fn quoted(&mut self) -> Result<Token<'a>, LexError> {
        let line = self.line;
        self.bump();
        let mut text = String::new();
        let unterminated = LexError::UnterminatedQuote(line);
        loop {
            if text.len() > MAX_NETRC_TOKEN_BYTES {
                return Err(LexError::TokenTooLong(line));
            }
            match self.bump().ok_or(unterminated)? {
                '"' => {
                    return Ok(Token {
                        text: Cow::Owned(text),
                        line,
                        quoted: true,
                    });
                }
                '\\' => text.push(match self.bump().ok_or(unterminated)? {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    c => c,
                }),
                c => text.push(c),
            }
        }
    }

    /// Skips the rest of the `macdef` line and the macro body through the next blank line.
    fn skip_macdef_body(&mut self) {
        self.skip_rest_of_line();
        self.bump();
        while self.pos < self.src.len() {
            let rest = &self.src[self.pos..];
            let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
            let blank = rest[..end].chars().all(is_space);
            self.pos += end;
            self.line += usize::from(rest[..end].ends_with('\n'));
            if blank {
                return;
            }
        }
    }
}

impl Netrc {
    pub fn empty() -> Netrc {
        Netrc::default()
    }

    /// Reads and parses `path`, then refuses it if it holds a secret another user could
    /// read or replace (see [`NetrcError::InsecurePermissions`], [`NetrcError::WrongOwner`]).
    /// A missing file is an empty `Netrc`: having no netrc is normal, not a mistake.
    pub fn load(path: &Path) -> Result<Netrc, NetrcError> {
        let unreadable = |error| NetrcError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Netrc {
                    path: path.to_path_buf(),
                    entries: Vec::new(),
                });
            }
            Err(e) => return Err(unreadable(e)),
        };
        let too_large = |len| NetrcError::TooLarge {
            path: path.to_path_buf(),
            len,
        };
        let len = file.metadata().map_err(unreadable)?.len();
        if len > MAX_NETRC_BYTES {
            return Err(too_large(len));
        }
        // The size may change, or be unknown (a pipe): read one byte past the limit.
        let mut bytes = Vec::new();
        (&file)
            .take(MAX_NETRC_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_NETRC_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            NetrcError::NotUtf8 {
                path: path.to_path_buf(),
                line,
            }
        })?;
        let netrc = Netrc::parse(&text, path)?;
        if let Some(entry) = netrc.entries.iter().find(|e| e.holds_secret()) {
            // fstat on the open file, so the checked file is the one that was read.
            let meta = file.metadata().map_err(unreadable)?;
            check_private(path, entry.line, &meta)?;
        }
        Ok(netrc)
    }

    /// Parses netrc text; `path` only labels error messages.
    ///
    /// No error echoes a secret: a keyword that lacks its value is reported without the
    /// token found instead; a stray token right after a password or account value (usually
    /// the second half of an unquoted password with a space) is not shown; nor is a quoted
    /// token out of place, since a misplaced quote can wrap a whole `password X` pair.
    pub fn parse(text: &str, path: &Path) -> Result<Netrc, NetrcError> {
        let mut lexer = Lexer {
            src: text,
            pos: 0,
            line: 1,
        };
        let mut entries = Vec::new();
        let mut current: Option<Entry> = None;
        let mut after_secret = false;
        while let Some(token) = next(&mut lexer, path)? {
            let unexpected = |what: String, hint| NetrcError::UnexpectedToken {
                path: path.to_path_buf(),
                line: token.line,
                what,
                hint,
            };
            let keyword = Keyword::from_token(&token);
            match keyword {
                Some(kw @ (Keyword::Machine | Keyword::Default)) => {
                    let machine = match kw {
                        Keyword::Machine => Some(value(&mut lexer, path, kw, token.line)?),
                        _ => None,
                    };
                    entries.extend(current.take());
                    current = Some(Entry {
                        machine,
                        login: None,
                        password: None,
                        account: None,
                        line: token.line,
                    });
                }
                Some(kw @ (Keyword::Login | Keyword::Password | Keyword::Account)) => {
                    let Some(entry) = current.as_mut() else {
                        return Err(unexpected(
                            format!("`{kw}` before any `machine` or `default`"),
                            "start the entry with `machine HOST` (or `default`)",
                        ));
                    };
                    let v = value(&mut lexer, path, kw, token.line)?;
                    match kw {
                        Keyword::Login => entry.login = Some(v),
                        Keyword::Password => entry.password = Some(Secret::new(v)),
                        _ => entry.account = Some(Secret::new(v)),
                    }
                }
                Some(Keyword::Macdef) => {
                    value(&mut lexer, path, Keyword::Macdef, token.line)?;
                    lexer.skip_macdef_body();
                }
                None if after_secret => {
                    return Err(unexpected(
                        "unexpected token after a password or account value (not shown)".into(),
                        "quote a value that contains spaces: password \"my secret\"",
                    ));
                }
                None if token.quoted => {
                    return Err(unexpected(
                        "unexpected quoted token where a keyword belongs (not shown)".into(),
                        "check the quotes before it: an unclosed `\"` swallows the following tokens",
                    ));
                }
                None => {
                    return Err(unexpected(
                        format!("unknown keyword {:?}", token.text),
                        "expected machine, default, login, password, account or macdef; quote values that contain spaces",
                    ));
                }
            }
            after_secret = keyword.is_some_and(Keyword::is_secret);
        }
        entries.extend(current);
        Ok(Netrc {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Credentials for `host`: the first `machine` entry for it whose login is `login` or
    /// unset, else the first `default` entry under the same condition. With `login` None
    /// any login is accepted. Host names compare ASCII case-insensitively, as DNS does.
    pub fn lookup(&self, host: &str, login: Option<&str>) -> Option<&Entry> {
        let for_host = |e: &&Entry| {
            e.machine
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(host))
        };
        let usable = |e: &&Entry| e.accepts_login(login);
        (self.entries.iter().filter(for_host).find(usable)).or_else(|| {
            self.entries
                .iter()
                .filter(|e| e.machine.is_none())
                .find(usable)
        })
    }
}

fn next<'a>(lexer: &mut Lexer<'a>, path: &Path) -> Result<Option<Token<'a>>, NetrcError> {
    lexer.next_token().map_err(|e| match e {
        LexError::UnterminatedQuote(line) => NetrcError::UnterminatedQuote {
            path: path.to_path_buf(),
            line,
        },
        LexError::TokenTooLong(line) => NetrcError::TokenTooLong {
            path: path.to_path_buf(),
            line,
        },
    })
}

/// Reads the value after `kw`; errors about a secret keyword do not name the token found,
/// because it may be the password itself (`password default` with `default` meant as it).
fn value(
    lexer: &mut Lexer<'_>,
    path: &Path,
    kw: Keyword,
    kw_line: usize,
) -> Result<String, NetrcError> {
    let hint = "write the value after it; quote a value that is a keyword or starts with `#`";
    let (line, what) = match next(lexer, path)? {
        None => (kw_line, format!("`{kw}` at end of file without its value")),
        Some(t) => match Keyword::from_token(&t) {
            None => return Ok(t.text.into_owned()),
            Some(_) if kw.is_secret() => (
                t.line,
                format!("`{kw}` is followed by a keyword instead of its value"),
            ),
            Some(found) => (
                t.line,
                format!("`{kw}` is followed by keyword `{found}` instead of its value"),
            ),
        },
    };
    Err(NetrcError::UnexpectedToken {
        path: path.to_path_buf(),
        line,
        what,
        hint,
    })
}

/// Like curl and ftp: a secret readable by group/others (any of 0o077) or in a file another
/// user owns (and so may rewrite) is refused, so a leak is fixed rather than ignored.
#[cfg(unix)]
fn check_private(path: &Path, line: usize, meta: &std::fs::Metadata) -> Result<(), NetrcError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let path = path.to_path_buf();
    if meta.uid() != euid {
        return Err(NetrcError::WrongOwner {
            path,
            line,
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NetrcError::InsecurePermissions { path, line, mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: usize, _: &std::fs::Metadata) -> Result<(), NetrcError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> Netrc {
        match Netrc::parse(text, Path::new("/home/u/.netrc")) {
            Ok(netrc) => netrc,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match Netrc::parse(text, Path::new("/home/u/.netrc")) {
            Ok(netrc) => panic!("expected an error, got {netrc:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn pw(entry: &Entry) -> Option<&str> {
        entry.password.as_ref().map(Secret::expose)
    }

    /// Writes `text` to a fresh `.netrc` with `mode`; the tempdir must outlive the path.
    fn write(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".netrc");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn comments_run_to_end_of_line_only_at_token_start() {
        let n = parse("# top\nmachine a # login ignored\n  login u#x password pa#ss # trailing\n");
        let e = &n.entries[0];
        assert_eq!(e.login.as_deref(), Some("u#x"));
        assert_eq!(pw(e), Some("pa#ss"));
        assert_eq!(
            parse("machine a password \"#not a comment\"").entries[0].password,
            Some(Secret::new("#not a comment"))
        );
    }

    #[test]
    fn quoting_and_escapes() {
        let n = parse(r#"machine "h" login "a b" password "my pass \"x\" \\ y\t\q""#);
        let e = &n.entries[0];
        assert_eq!(e.machine.as_deref(), Some("h"));
        assert_eq!(e.login.as_deref(), Some("a b"));
        assert_eq!(pw(e), Some("my pass \"x\" \\ y\tq"));
        // Unquoted backslashes and quotes are literal; a quoted keyword is a value.
        let e = &parse(r#"machine h login "login" password a\b"c"#).entries[0];
        assert_eq!(e.login.as_deref(), Some("login"));
        assert_eq!(pw(e), Some(r#"a\b"c"#));
    }

    #[test]
    fn unterminated_quote_points_at_its_line() {
        let msg = parse_err("machine h\nlogin u\npassword \"abc\n\n");
        assert!(msg.starts_with("/home/u/.netrc:3: quoted token"), "{msg}");
        assert!(!msg.contains("abc"), "{msg}");
        assert!(parse_err("machine h password \"ab\\").contains(":1: quoted"));
    }

    #[test]
    fn macdef_body_is_skipped_through_blank_line() {
        let text = "machine a login u\nmacdef init\ncd /x\nmachine evil password p\n \t\nmachine b login v\n";
        let n = parse(text);
        let hosts: Vec<_> = n.entries.iter().map(|e| e.machine.as_deref()).collect();
        assert_eq!(hosts, [Some("a"), Some("b")]);
        assert_eq!(n.entries[1].line, 6);
        // At end of file without a blank line, and as the very last token.
        assert_eq!(parse("machine a\nmacdef m\nput x\nquit").entries.len(), 1);
        assert_eq!(parse("machine a macdef m").entries.len(), 1);
    }

    #[test]
    fn multiple_machines_and_entries_across_lines() {
        let n = parse("machine a login u1 password p1 machine b\nlogin\nu2\ndefault login d");
        assert_eq!(n.entries.len(), 3);
        assert_eq!(n.entries[1].machine.as_deref(), Some("b"));
        assert_eq!(n.entries[1].login.as_deref(), Some("u2"));
        assert_eq!(n.entries[2].machine, None);
        assert_eq!(n.entries[2].login.as_deref(), Some("d"));
    }

    #[test]
    fn lookup_takes_first_match_in_file_order() {
        let n = parse(
            "machine h login a password 1\nmachine h login b password 2\nmachine h password 3",
        );
        assert_eq!(n.lookup("h", None).and_then(pw), Some("1"));
        assert_eq!(
            n.lookup("H", None).and_then(pw),
            Some("1"),
            "hosts compare case-insensitively"
        );
        assert!(n.lookup("other", None).is_none());
    }

    #[test]
    fn lookup_filters_by_login() {
        let n = parse(
            "machine h login a password 1\nmachine h login b password 2\nmachine h password 3",
        );
        assert_eq!(n.lookup("h", Some("b")).and_then(pw), Some("2"));
        // An entry without login matches any wanted login.
        assert_eq!(n.lookup("h", Some("c")).and_then(pw), Some("3"));
    }

    #[test]
    fn default_only_when_no_machine_matches() {
        let n = parse("default login d password 0\nmachine h login a password 1");
        assert_eq!(
            n.lookup("h", None).and_then(pw),
            Some("1"),
            "machine wins over an earlier default"
        );
        assert_eq!(n.lookup("x", None).and_then(pw), Some("0"));
    }

    #[test]
    fn default_obeys_login_condition() {
        let n = parse("machine h login a password 1\ndefault login d password 0");
        assert_eq!(n.lookup("h", Some("d")).and_then(pw), Some("0"));
        assert!(n.lookup("h", Some("z")).is_none());
        let open = parse("default password 9");
        assert_eq!(open.lookup("any", Some("z")).and_then(pw), Some("9"));
    }

    #[test]
    fn password_and_account_are_secrets() {
        let e = parse("machine h login u password s3 account acct")
            .entries
            .remove(0);
        assert_eq!(pw(&e), Some("s3"));
        assert_eq!(e.account.as_ref().map(Secret::expose), Some("acct"));
        let debug = format!("{e:?}");
        assert!(!debug.contains("s3") && !debug.contains("acct"), "{debug}");
    }

    #[test]
    fn line_numbers_of_entries() {
        let n = parse("# c\n\nmachine a\n  login u\n\ndefault\n");
        assert_eq!(n.entries.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 6]);
    }

    #[test]
    fn unexpected_tokens_say_where_and_what_to_do() {
        let msg = parse_err("\npassword hunter2\nmachine h");
        assert!(
            msg.starts_with("/home/u/.netrc:2: `password` before any `machine`"),
            "{msg}"
        );
        assert!(msg.contains(" — start the entry with"), "{msg}");
        let msg = parse_err("machine h\n  passwrod x");
        assert!(
            msg.starts_with("/home/u/.netrc:2: unknown keyword \"passwrod\" — "),
            "{msg}"
        );
        let msg = parse_err("machine a\nmachine");
        assert!(
            msg.starts_with("/home/u/.netrc:2: `machine` at end of file without its value"),
            "{msg}"
        );
        let msg = parse_err("machine\nlogin u");
        assert!(
            msg.contains(":2: `machine` is followed by keyword `login`"),
            "{msg}"
        );
    }

    #[test]
    fn errors_never_contain_the_secret() {
        let cases = [
            "machine h password hunter2 more",
            "machine h password hunter 2",
            "machine h account hunter2 x",
            "password hunter2",
            "machine h password \"hunter2",
            "machine h password default login x",
            "machine h password\n#hunter2\nmachine x",
        ];
        for text in cases {
            let msg = parse_err(text);
            assert!(!msg.contains("hunter"), "{text:?} -> {msg}");
        }
        let msg = parse_err("machine h password default");
        assert!(
            !msg.contains("default"),
            "the keyword may be the password: {msg}"
        );
        let msg = parse_err("machine h login \"u\" \" password hunter2 \"");
        assert!(
            msg.contains(":1: unexpected quoted token") && !msg.contains("hunter"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = Netrc::load(&dir.path().join("absent")).expect("missing file is fine");
        assert!(n.entries.is_empty());
        assert!(Netrc::empty().lookup("h", None).is_none());
    }

    #[test]
    fn world_readable_password_is_refused() {
        let (_dir, path) = write("machine h\nlogin u password hunter2\n", 0o644);
        let msg = Netrc::load(&path)
            .expect_err("0644 must be refused")
            .to_string();
        assert!(msg.starts_with(&format!("{}:1: ", path.display())), "{msg}");
        assert!(msg.contains("mode 644"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn private_file_is_accepted() {
        let (_dir, path) = write("machine h login u password p\n", 0o600);
        let n = Netrc::load(&path).expect("0600 is fine");
        assert_eq!(n.lookup("h", Some("u")).and_then(pw), Some("p"));
        assert_eq!(n.path, path);
    }

    #[test]
    fn readable_file_without_real_secret_is_accepted() {
        let (_dir, path) = write("machine h login anonymous password me@example.com\n", 0o644);
        assert!(
            Netrc::load(&path).is_ok(),
            "anonymous password is not a secret"
        );
        let (_dir, path) = write("machine h login u\ndefault login v\n", 0o644);
        assert!(
            Netrc::load(&path).is_ok(),
            "no password, nothing to protect"
        );
    }

    #[test]
    fn unreadable_and_non_utf8_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = Netrc::load(dir.path())
            .expect_err("a directory")
            .to_string();
        assert!(msg.contains("cannot read the netrc file"), "{msg}");
        let path = dir.path().join("bin");
        std::fs::write(&path, b"machine a\nlogin \xff\n").expect("write");
        let msg = Netrc::load(&path).expect_err("not utf-8").to_string();
        assert!(msg.starts_with(&format!("{}:2: ", path.display())), "{msg}");
    }

    fn netrc_token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "machine",
                "default",
                "login",
                "password",
                "account",
                "macdef",
                "anonymous",
                "#",
                "\"",
                "\\",
                "\"\\\"",
                "\n",
                "\n\n",
                " \t\n",
                "\r\n",
            ])
            .prop_map(String::from),
            "[a-z#\"\\\\ \n]{0,8}",
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_any_string(text in any::<String>()) {
            let _ = Netrc::parse(&text, Path::new("p"));
        }

        #[test]
        fn parse_never_panics_on_netrc_tokens(tokens in prop::collection::vec(netrc_token(), 0..40)) {
            let text = tokens.join(" ");
            if let Ok(n) = Netrc::parse(&text, Path::new("p")) {
                let _ = n.lookup("machine", Some("login"));
            }
        }

        #[test]
        fn errors_never_echo_a_password(
            before in prop::collection::vec(netrc_token(), 0..20),
            after in prop::collection::vec(netrc_token(), 0..20),
        ) {
            let text = format!("{} password Zq9-SECRET {}", before.join(" "), after.join(" "));
            if let Err(e) = Netrc::parse(&text, Path::new("p")) {
                prop_assert!(!e.to_string().contains("Zq9"), "{}", e);
                prop_assert!(!format!("{e:?}").contains("Zq9"), "{:?}", e);
            }
        }
    }
}
