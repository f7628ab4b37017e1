//! Input size limits: `dispatch.cfg`, `.netrc` and bundle names.
//!
//! Every limit is checked before the work whose cost grows with the input (INI parsing,
//! regex compilation, the shadowed-rule check, rule matching), so an oversized input is
//! refused in time linear in its size, with a message that says which limit and what to
//! change. The README's "Limits" section lists the same numbers.

use super::diagnostic::Diagnostic;
use std::path::Path;

/// The largest `dispatch.cfg`, in bytes (16 MiB): thousands of rules fit many times over.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The longest line of `dispatch.cfg`, in bytes (64 KiB), line ending excluded. Long
/// commands belong in a script on the host that the rule calls.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The longest section name (the rule's regex), in bytes (4 KiB), brackets excluded. A
/// regex is compiled per rule; a pattern (`app-.*\.tgz`) beats a list of names.
pub const MAX_SECTION_NAME_BYTES: usize = 4 * 1024;

/// The most rules (sections other than `[DEFAULT]`) in one `dispatch.cfg`.
pub const MAX_SECTIONS: usize = 10_000;

/// The most errors one `dispatch.cfg` reports. Past it reading stops with a note: a file
/// with thousands of errors is the wrong file, and its report would outgrow the file.
pub const MAX_ERRORS: usize = 100;

/// The largest `.netrc`, in bytes (4 MiB).
pub const MAX_NETRC_BYTES: u64 = 4 * 1024 * 1024;

/// The longest `.netrc` token (a host, login, password or account), in bytes (16 KiB), after
/// unquoting.
pub const MAX_NETRC_TOKEN_BYTES: usize = 16 * 1024;

/// The longest bundle file name, in bytes: `NAME_MAX` of Linux and the BSDs, so no such
/// file can exist on the hosts a bundle is shipped to anyway.
pub const MAX_BUNDLE_NAME_BYTES: usize = 255;

/// `n` bytes the way messages say it: `4 KiB (4096 bytes)`, `16 MiB (16777216 bytes)`.
pub fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match n {
        n if n >= MIB && n % MIB == 0 => format!("{} MiB ({n} bytes)", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB ({n} bytes)", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// The start of a text too long to quote whole: at most 40 characters, then `…`.
pub fn preview(text: &str) -> String {
    const CHARS: usize = 40;
    match text.char_indices().nth(CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The problem with a config file of `len` bytes, if it is too large.
pub fn config_size(len: u64, file: &Path) -> Option<Diagnostic> {
    (len > MAX_CONFIG_BYTES).then(|| {
        Diagnostic::error(
            file,
            None,
            format!(
                "the file is {len} bytes; a dispatch.cfg may be at most {}",
                bytes(MAX_CONFIG_BYTES)
            ),
        )
        .hint(
            "is this the right file? Split a fleet this large into several config files (--config)",
        )
    })
}

/// The size limits of a `dispatch.cfg` text, checked in one pass over its lines before it
/// is parsed: the file, each line, each section name and the number of sections. Every
/// line that breaks a limit is reported (the number of sections once).
pub fn check_config(text: &str, file: &Path) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = config_size(text.len() as u64, file).into_iter().collect();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections = 0usize;
    for (idx, line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let mut name_too_long = false;
        if let Some(header) = line.trim().strip_prefix('[') {
            let name = header
                .rfind(']')
                .map_or(header, |end| &header[..end])
                .trim();
            let rule = name != "DEFAULT";
            sections += usize::from(rule);
            if rule && sections == MAX_SECTIONS + 1 {
                diags.push(
                    Diagnostic::error(
                        file,
                        Some(line_no),
                        format!(
                            "more than {MAX_SECTIONS} rules: a dispatch.cfg may have at most {MAX_SECTIONS} sections besides [DEFAULT] (this is rule {sections})"
                        ),
                    )
                    .hint("merge rules that share hosts and commands into one regex (`app-(a|b)-.*\\.tgz`), or split the fleet into several config files (--config)"),
                );
            }
            name_too_long = name.len() > MAX_SECTION_NAME_BYTES;
            if name_too_long {
                diags.push(
                    Diagnostic::error(
                        file,
                        Some(line_no),
                        format!(
                            "section name is {} bytes long; a section name (a rule's regex) may be at most {} (it starts `[{}`)",
                            name.len(),
                            bytes(MAX_SECTION_NAME_BYTES as u64),
                            preview(name)
                        ),
                    )
                    .hint("write a shorter regex that matches the bundle names, e.g. `app-.*\\.tgz`, instead of listing every name"),
                );
            }
        }
        if line.len() > MAX_LINE_BYTES && !name_too_long {
            diags.push(
                Diagnostic::error(
                    file,
                    Some(line_no),
                    format!(
                        "line is {} bytes long; a line may be at most {} (it starts `{}`)",
                        line.len(),
                        bytes(MAX_LINE_BYTES as u64),
                        preview(line.trim_start())
                    ),
                )
                .hint(
                    "put a long command in a script on the host and call the script from the rule",
                ),
            );
        }
    }
    diags
}

/// The note that ends a report cut at [`MAX_ERRORS`]; `line` is where reading stopped.
pub fn too_many_errors(file: &Path, line: Option<usize>) -> Diagnostic {
    Diagnostic::error(
        file,
        line,
        format!("more than {MAX_ERRORS} errors: stopped reading here"),
    )
    .hint("is this the right file? Fix the errors above and check again")
}

/// Why a bundle file name is too long, if it is.
pub fn bundle_name(name: &str) -> Option<String> {
    (name.len() > MAX_BUNDLE_NAME_BYTES).then(|| {
        format!(
            "it is {} bytes long, and a file name may be at most {MAX_BUNDLE_NAME_BYTES} bytes (NAME_MAX): rename the bundle",
            name.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(4096), "4 KiB (4096 bytes)");
        assert_eq!(bytes(16 * 1024 * 1024), "16 MiB (16777216 bytes)");
        assert_eq!(bytes(255), "255 bytes");
    }

    #[test]
    fn previews_cut_on_a_character_boundary() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(preview(&long), format!("{}…", "é".repeat(40)));
    }

    #[test]
    fn limits_are_inclusive() {
        let f = Path::new("t.cfg");
        let at = |n: usize| format!("[{}]\nhost = h\n", "a".repeat(n));
        assert!(check_config(&at(MAX_SECTION_NAME_BYTES), f).is_empty());
        assert_eq!(check_config(&at(MAX_SECTION_NAME_BYTES + 1), f).len(), 1);
        let line = |n: usize| format!("[a]\nupgrade = {}\n", "x".repeat(n - 10));
        assert!(check_config(&line(MAX_LINE_BYTES), f).is_empty());
        assert_eq!(check_config(&line(MAX_LINE_BYTES + 1), f).len(), 1);
        let sections = |n: usize| "[a]\n".repeat(n);
        assert!(check_config(&sections(MAX_SECTIONS), f).is_empty());
        assert_eq!(check_config(&sections(MAX_SECTIONS + 1), f).len(), 1);
        let with_default = format!("[DEFAULT]\n{}[DEFAULT]\n", sections(MAX_SECTIONS));
        assert!(check_config(&with_default, f).is_empty());
        assert!(bundle_name(&"b".repeat(MAX_BUNDLE_NAME_BYTES)).is_none());
        assert!(bundle_name(&"b".repeat(MAX_BUNDLE_NAME_BYTES + 1)).is_some());
    }
}
