//! Text from outside (bundle names, remote output, server replies, config values, paths)
//! made inert before it reaches a terminal.
//!
//! A bundle named `app\e]0;TITLE\a.tgz` printed raw sets the terminal's title; a remote
//! command can clear the screen, move the cursor over earlier lines or, on some terminals,
//! write to the clipboard. Every front end that writes to a terminal passes such text
//! through this one module: headless output at its sinks (so nothing is missed) and in its
//! fields (so tables stay aligned and a name cannot forge a line of its own).
//!
//! What counts: C0 controls (`\n` and `\t` only where the [`Policy`] keeps them), DEL, C1
//! controls (U+0080..U+009F, incl. U+009B, the one-character CSI) and the Unicode bidi
//! overrides/isolates (they reorder what follows them on screen). They are shown as
//! `\n`, `\r`, `\t` or `\u{1b}` (the form `--history` always used), except that with
//! [`Sequences::Drop`] a whole escape sequence (CSI, OSC, DCS, ...) is removed instead.
//!
//! JSON output keeps its own escapes: serde_json writes C0 controls as `\u001b`, and
//! [`json`] does the same for what it leaves raw (DEL, C1, bidi), so the value is unchanged.

use std::borrow::Cow;
use std::fmt::Write;

/// What becomes of an escape sequence (`ESC [ 31 m`, `ESC ] 0 ; title BEL`, ...).
///
/// Remote command output does not come here: [`super::ansi`] renders it as a terminal
/// would, its colours as styles we draw ourselves, the rest dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequences {
    /// Its ESC (or C1 introducer) is shown like any control; the rest is plain text.
    /// For names: the user sees that the name is odd.
    Show,
    /// Removed whole (an unterminated string sequence up to the end of the text). For
    /// command output, where colours and titles would otherwise read as noise.
    Drop,
}

/// How one kind of text is made inert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `\n` passes (a message or report of several lines).
    pub newline: bool,
    /// `\t` passes (harmless on a terminal; command output uses it for columns).
    pub tab: bool,
    pub sequences: Sequences,
}

/// One line of a table or message: a name, a host, a path, a command. Nothing passes.
pub const FIELD: Policy = Policy {
    newline: false,
    tab: false,
    sequences: Sequences::Show,
};

/// Whole messages and reports, at the point they are written: `\n` and `\t` pass.
pub const TEXT: Policy = Policy {
    newline: true,
    tab: true,
    sequences: Sequences::Show,
};

/// One line of text whose escape sequences are noise: `\t` passes, sequences are dropped.
/// (Remote command output is cooked by [`super::ansi`] instead.)
pub const OUTPUT: Policy = Policy {
    newline: false,
    tab: true,
    sequences: Sequences::Drop,
};

/// A name, host, path or command for one line. See [`FIELD`].
pub fn field(s: &str) -> Cow<'_, str> {
    sanitize(s, FIELD)
}

/// A whole message or report. See [`TEXT`].
pub fn text(s: &str) -> Cow<'_, str> {
    sanitize(s, TEXT)
}

/// Serialized JSON (one value, or several lines of them): the characters serde_json leaves
/// raw that a terminal would obey (DEL, C1, bidi controls) become JSON `\uXXXX` escapes,
/// which decode to the same string. They can only stand inside JSON strings.
pub fn json(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(|c| unsafe_char(c, TEXT)) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if unsafe_char(c, TEXT) {
            // All of them are in the BMP: one `\uXXXX` each.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` must not reach a terminal as it is, under `p`.
fn unsafe_char(c: char, p: Policy) -> bool {
    match c {
        '\n' => !p.newline,
        '\t' => !p.tab,
        // C0, DEL, C1.
        c if c.is_control() => true,
        // Bidi embeddings/overrides and isolates.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `s` with every character [`unsafe_char`] made visible (or, in sequences under
/// [`Sequences::Drop`], removed). Borrowed when there is nothing to do, the common case.
pub fn sanitize(s: &str, p: Policy) -> Cow<'_, str> {
    let Some(first) = s.find(|c| unsafe_char(c, p)) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    let mut chars = s[first..].chars().peekable();
    while let Some(c) = chars.next() {
        if !unsafe_char(c, p) {
            out.push(c);
            continue;
        }
        if p.sequences == Sequences::Drop && skip_sequence(c, &mut chars) {
            continue;
        }
        show(&mut out, c);
    }
    Cow::Owned(out)
}

/// The visible form of a control character.
fn show(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// If `c` introduces an escape sequence, consumes the rest of it from `rest` and returns
/// true. ECMA-48: CSI is `ESC [` or U+009B, then parameter bytes 0x30-0x3F, intermediate
/// bytes 0x20-0x2F and one final byte 0x40-0x7E; OSC (`ESC ]`, U+009D), DCS (`ESC P`,
/// U+0090), SOS (`ESC X`, U+0098), PM (`ESC ^`, U+009E) and APC (`ESC _`, U+009F) are
/// strings ended by ST (`ESC \`, U+009C) or, as xterm accepts, BEL; any other `ESC` is
/// followed by intermediates 0x20-0x2F and one final byte 0x30-0x7E.
fn skip_sequence(c: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let kind = match c {
        '\u{1b}' => match rest.peek() {
            Some('[') => Some('['),
            Some(&k @ (']' | 'P' | 'X' | '^' | '_')) => Some(k),
            Some(' '..='~') => None,
            // A lone ESC, or one before a control or non-ASCII: shown.
            _ => return false,
        },
        '\u{9b}' => return skip_csi(rest),
        '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => return skip_string(rest),
        _ => return false,
    };
    match kind {
        Some('[') => {
            rest.next();
            skip_csi(rest)
        }
        Some(_) => {
            rest.next();
            skip_string(rest)
        }
        None => {
            while rest.next_if(|c| (' '..='/').contains(c)).is_some() {}
            rest.next_if(|c| ('0'..='~').contains(c));
            true
        }
    }
}

/// The parameters, intermediates and final byte of a CSI. A malformed one ends at the
/// first character that cannot belong to it, which is then treated on its own.
fn skip_csi(rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    while rest.next_if(|c| ('0'..='?').contains(c)).is_some() {}
    while rest.next_if(|c| (' '..='/').contains(c)).is_some() {}
    rest.next_if(|c| ('@'..='~').contains(c));
    true
}

/// A control string, up to and including its terminator (or to the end of the text).
fn skip_string(rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    while let Some(c) = rest.next() {
        match c {
            '\u{7}' | '\u{9c}' => break,
            '\u{1b}' if rest.peek() == Some(&'\\') => {
                rest.next();
                break;
            }
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for p in [FIELD, TEXT, OUTPUT] {
            let s = "app-1.4.2.tgz  é 日本 \\d+ 'q' \"q\"";
            assert!(matches!(sanitize(s, p), Cow::Borrowed(x) if x == s));
        }
        assert!(matches!(text("a\n\tb"), Cow::Borrowed("a\n\tb")));
        assert!(matches!(sanitize("a\tb", OUTPUT), Cow::Borrowed("a\tb")));
    }

    #[test]
    fn names_show_their_controls() {
        assert_eq!(
            field("app\u{1b}]0;PWNED\u{7}.tgz"),
            "app\\u{1b}]0;PWNED\\u{7}.tgz"
        );
        assert_eq!(field("a\nb\tc\rd\u{0}"), "a\\nb\\tc\\rd\\u{0}");
        assert_eq!(
            field("\u{7f}\u{9b}31m\u{85}\u{202e}x"),
            "\\u{7f}\\u{9b}31m\\u{85}\\u{202e}x"
        );
        assert_eq!(text("one\n\u{1b}[2Jtwo\t3"), "one\n\\u{1b}[2Jtwo\t3");
    }

    #[test]
    fn output_drops_whole_sequences() {
        let output = |s| sanitize(s, OUTPUT);
        assert_eq!(output("\u{1b}[01;34mdir\u{1b}[0m\tfile"), "dir\tfile");
        assert_eq!(output("a\u{1b}]0;PWNED\u{7}b"), "ab");
        assert_eq!(output("a\u{1b}]52;c;Zm9v\u{1b}\\b"), "ab");
        assert_eq!(output("a\u{9b}2Jb\u{9d}0;t\u{9c}c"), "abc");
        assert_eq!(output("a\u{1b}Pq#0;2\u{1b}\\b"), "ab");
        assert_eq!(output("a\u{1b}(Bb\u{1b}7c\u{1b}cd"), "abcd");
        // Unterminated: to the end.
        assert_eq!(output("a\u{1b}]0;never ends"), "a");
        // Not sequences: shown.
        assert_eq!(output("a\u{1b}"), "a\\u{1b}");
        assert_eq!(output("a\u{1b}\u{7}b\rc\n"), "a\\u{1b}\\u{7}b\\rc\\n");
        // A CSI cut short by a control: the control is shown on its own.
        assert_eq!(output("a\u{1b}[3\u{7}b"), "a\\u{7}b");
    }

    #[test]
    fn json_stays_json_with_the_same_value() {
        let name = "a\u{1b}]0;T\u{7}\u{9b}\u{7f}\u{202e}\u{85}b";
        let raw = serde_json::to_string(&serde_json::json!({ "bundle": name })).unwrap();
        let safe = json(&raw);
        assert!(safe.chars().all(|c| allowed(c, TEXT)), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["bundle"], name);
        assert!(matches!(json("{\"a\": \"b\"}\n"), Cow::Borrowed(_)));
    }

    fn allowed(c: char, p: Policy) -> bool {
        !unsafe_char(c, p)
    }

    proptest! {
        #[test]
        fn never_a_control_out(s in any::<String>(), sgr in "(\u{1b}\\[[0-9;]{0,6}[a-zA-Z]|\u{1b}\\][^\u{7}]{0,8}\u{7}|\u{9b}[0-9]m|[a-z\u{0}-\u{1f}\u{7f}-\u{9f}])*") {
            for input in [s.as_str(), sgr.as_str()] {
                for p in [FIELD, TEXT, OUTPUT] {
                    let out = sanitize(input, p);
                    prop_assert!(out.chars().all(|c| allowed(c, p)), "{:?} -> {:?}", input, out);
                    prop_assert!(!out.contains('\x1b') && !out.contains('\x07'), "{:?}", out);
                    // Safe text is left alone, so sanitizing twice changes nothing.
                    prop_assert_eq!(sanitize(&out, p), out.clone());
                    if p.sequences == Sequences::Show {
                        // Nothing is lost: every safe character is still there, in order.
                        let kept: String = input.chars().filter(|c| allowed(*c, p)).collect();
                        let mut it = out.chars();
                        prop_assert!(kept.chars().all(|k| it.any(|o| o == k)));
                    }
                }
            }
        }
    }
}
