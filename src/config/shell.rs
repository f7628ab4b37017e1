//! The one way a value becomes a word of POSIX shell text (remote commands, lock files,
//! release layouts, probes, the commands dropship suggests to the user).
//!
//! It lives in `config`, the lowest layer that builds shell text (placeholders), so
//! transport, engine, inspection and the watcher can all share it without a cycle.

/// `s` as one POSIX shell word: returned as it is when it needs no quoting, otherwise
/// quoted by `shlex` (single quotes, with `'` written as `"'"`).
///
/// A string holding a NUL byte cannot be a shell word, a path or an argument at all; it
/// becomes `''`, the empty word, so a command built from it fails on the host ("no such
/// file") instead of acting on a shortened or different name. Callers that must refuse
/// such a value outright (placeholders) check for NUL before quoting.
pub fn quote(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| "''".to_owned(), |q| q.into_owned())
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn words_survive_a_posix_shell_unchanged() {
        for word in [
            "plain",
            "",
            "two words",
            "it's",
            "$HOME `id` $(id) \\ \" ; & | > < * ? [a] ~ # !",
            "-rf",
            "line\nbreak\ttab",
            "ünïcode ☃",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .expect("run sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{word:?}");
        }
    }

    #[test]
    fn plain_words_stay_bare_and_nul_becomes_the_empty_word() {
        assert_eq!(quote("app-1.4.2.tgz"), "app-1.4.2.tgz");
        assert_eq!(quote("/srv/app/releases"), "/srv/app/releases");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a\0b"), "''");
    }
}
