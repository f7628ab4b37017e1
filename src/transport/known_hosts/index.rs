//! known_hosts files parsed once per process, and the lines of one that can match a host.
//!
//! libssh2 keeps known_hosts entries in a list and checks a host against every one of them
//! (an HMAC-SHA1 per hashed entry). Loading a whole file into it for every connection, then
//! checking every key on record against the host, cost O(lines²) per connection: at 1,000
//! hosts and a 1,000-line file, 6.5 ms of CPU per connection (BENCHMARKS.md, #14).
//!
//! Here each file is read into libssh2 once per version of its text, so that a bad line is
//! reported exactly as before, and its lines are indexed by the names libssh2 can match them
//! by. A connection then hands a fresh libssh2 list only the lines that can match its host.
//!
//! The rule that keeps this safe: a line libssh2 could match is never left out. libssh2
//! (src/knownhost.c, `knownhost_check`) looks `host` on `port` up as `[host]:port`, then as
//! `host`, and an entry matches a name when:
//! - plain names (a line's comma-separated names, each its own entry): the strings are equal
//!   (`strcmp`), or both are IPv6 addresses (optionally `[addr]:port`, the same suffix) with
//!   the same 16 bytes;
//! - hashed names (`|1|salt|hash`): HMAC-SHA1 keyed by the salt over the name is the hash.
//!
//! Wildcards are no patterns to libssh2 (`*.example` is a name like any other). Plain names
//! are indexed lowercased (a superset of `strcmp`) and, when they are IPv6 addresses, by
//! their bytes too; hashed lines are kept when the HMAC of a name looked up is their hash,
//! computed as libssh2 does. A line this module cannot classify for certain is always kept.

use super::Marked;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use ssh2::{KnownHostFileKind, Session};
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// One known_hosts file as read once: its lines for libssh2, indexed by name.
#[derive(Clone, Default)]
pub(crate) struct Parsed {
    /// The file's text, to tell a changed file from the one parsed.
    text: String,
    /// The lines libssh2 reads (not comments, blank or marked lines): line number, text.
    lines: Vec<(usize, String)>,
    /// Plain names, lowercased (`n:…`) and IPv6 addresses by their bytes (`6:…`) -> lines.
    by_name: HashMap<String, Vec<u32>>,
    /// Hashed lines: what to compute for each name looked up.
    hashed: Vec<Hashed>,
    /// Lines kept for every host: names this module cannot match for certain.
    always: Vec<u32>,
    /// `@cert-authority` and `@revoked` lines.
    pub(crate) marked: Vec<Marked>,
    /// Where each key (its blob) first appears among libssh2's entries for the whole file:
    /// the order `recorded_algorithms` reports key types in, as when it walked every entry.
    key_order: HashMap<Vec<u8>, usize>,
    /// How many lines `text` has, and how many entries libssh2 made of them.
    line_count: usize,
    entries: usize,
}

/// A `|1|salt|hash` line.
#[derive(Clone)]
struct Hashed {
    line: u32,
    /// HMAC-SHA1 already keyed with the salt: per name, only the name is hashed.
    mac: Hmac<Sha1>,
    hash: [u8; 20],
}

/// How a name is indexed and looked up.
struct NameKeys {
    keys: Vec<String>,
    /// An address libssh2 may read as IPv6 that Rust's parser does not: cannot be indexed.
    unsure: bool,
}

fn name_keys(name: &str) -> NameKeys {
    let mut keys = vec![format!("n:{}", name.to_ascii_lowercase())];
    let mut unsure = false;
    if let Some((bracketed, address, suffix)) = ipv6_part(name)
        // Without a `:` libssh2's IPv6 parser never succeeds (it needs 8 groups or `::`).
        && address.contains(':')
    {
        match address.parse::<Ipv6Addr>() {
            Ok(a) => keys.push(format!(
                "6:{}{}{suffix}",
                u8::from(bracketed),
                hex::encode(a.octets())
            )),
            Err(_) => unsure = true,
        }
    }
    NameKeys { keys, unsure }
}

/// libssh2's `knownhost_ipv6_part`: `[address]:port` (port all digits) or a bare address;
/// (bracketed, address, suffix compared verbatim). None when libssh2 would not compare the
/// name as an address at all.
fn ipv6_part(name: &str) -> Option<(bool, &str, &str)> {
    let Some(rest) = name.strip_prefix('[') else {
        return Some((false, name, ""));
    };
    let close = rest.find(']')?;
    let suffix = &rest[close + 1..];
    let port = suffix.strip_prefix(':')?;
    if close == 0 || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((true, &rest[..close], suffix))
}

/// libssh2's `ssh2_base64_decode`: characters outside the alphabet (padding included) are
/// skipped; a dangling sixth of a byte is an error.
fn libssh2_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut n) = (0u32, 0usize);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n % 4 == 0 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
        }
    }
    match n % 4 {
        0 => {}
        1 => return None,
        2 => out.push((acc >> 4) as u8),
        _ => out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes()),
    }
    Some(out)
}

/// The host field of a line as libssh2 reads it: up to the first space or tab.
fn host_field(line: &str) -> &str {
    let line = line.trim_start_matches([' ', '\t']);
    line.split([' ', '\t']).next().unwrap_or_default()
}

/// How a hashed host field is looked up, or None when it cannot be for certain.
fn hashed(field: &str) -> Option<(Hmac<Sha1>, [u8; 20])> {
    let rest = field.strip_prefix("|1|")?;
    let (salt, hash) = rest.split_once('|')?;
    let salt = libssh2_base64(salt).filter(|s| !s.is_empty())?;
    let hash: [u8; 20] = libssh2_base64(hash)?.try_into().ok()?;
    Some((Hmac::<Sha1>::new_from_slice(&salt).ok()?, hash))
}

impl Parsed {
    /// Reads `text` (the contents of `file`) line by line into libssh2, as dropship always
    /// has, so that a line libssh2 refuses is reported the same way; indexes what it read.
    ///
    /// When `text` is `before`'s text with whole lines appended (dropship's own file under
    /// `accept-new`), only the appended lines are read: each line is read on its own, by
    /// libssh2 as here, so the result is the same as reading all of `text`.
    fn parse(
        session: &Session,
        file: &Path,
        text: String,
        before: Option<&Parsed>,
    ) -> Result<Parsed, String> {
        let fail = |at: String, e: String| {
            format!("cannot read known_hosts {at}: {e}\n  help: fix or move the file")
        };
        let at = |n: usize| format!("{}:{}", file.display(), n + 1);
        let mut kh = session.known_hosts().map_err(|e| e.to_string())?;
        let (mut p, from) = match before {
            Some(b)
                if text.starts_with(&b.text) && (b.text.is_empty() || b.text.ends_with('\n')) =>
            {
                (b.clone(), b.text.len())
            }
            _ => (Parsed::default(), 0),
        };
        let first = p.line_count;
        for (n, line) in text[from..].lines().enumerate() {
            let n = first + n;
            p.line_count = n + 1;
            let trimmed = line.trim_start();
            if trimmed.starts_with('@') {
                p.marked
                    .push(super::parse_marked(trimmed, at(n)).map_err(|e| fail(at(n), e))?);
            } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
                kh.read_str(trimmed, KnownHostFileKind::OpenSSH)
                    .map_err(|e| fail(at(n), e.to_string()))?;
                p.index(trimmed);
                p.lines.push((n + 1, trimmed.to_owned()));
            }
        }
        use base64::Engine;
        let entries = kh.hosts().unwrap_or_default();
        for (i, entry) in entries.iter().enumerate() {
            if let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(entry.key()) {
                p.key_order.entry(blob).or_insert(p.entries + i);
            }
        }
        p.entries += entries.len();
        p.text = text;
        Ok(p)
    }

    /// Files the line about to be pushed under the names libssh2 can match it by.
    fn index(&mut self, line: &str) {
        let i = self.lines.len() as u32;
        let field = host_field(line);
        if field.starts_with("|1|") {
            match hashed(field) {
                Some((mac, hash)) => self.hashed.push(Hashed { line: i, mac, hash }),
                // libssh2 may skip or never match it; keeping it costs nothing.
                None => self.always.push(i),
            }
            return;
        }
        let mut unsure = false;
        for name in field.split(',') {
            let k = name_keys(name);
            unsure |= k.unsure;
            for key in k.keys {
                let lines = self.by_name.entry(key).or_default();
                if lines.last() != Some(&i) {
                    lines.push(i);
                }
            }
        }
        if unsure {
            self.always.push(i);
        }
    }

    /// The lines libssh2 could match when checking any of `hosts` on `port`, in file order.
    pub(crate) fn select(&self, hosts: &[&str], port: u16) -> Vec<&(usize, String)> {
        let mut names: Vec<String> = Vec::new();
        for h in hosts {
            for n in [format!("[{h}]:{port}"), (*h).to_owned()] {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let mut picked: Vec<u32> = self.always.clone();
        for name in &names {
            let k = name_keys(name);
            if k.unsure {
                // A name this module cannot compare as libssh2 does: every line.
                return self.lines.iter().collect();
            }
            for key in &k.keys {
                picked.extend(self.by_name.get(key).into_iter().flatten());
            }
        }
        for h in &self.hashed {
            if names.iter().any(|n| {
                h.mac
                    .clone()
                    .chain_update(n.as_bytes())
                    .verify_slice(&h.hash)
                    .is_ok()
            }) {
                picked.push(h.line);
            }
        }
        picked.sort_unstable();
        picked.dedup();
        picked.iter().map(|&i| &self.lines[i as usize]).collect()
    }

    /// Where `blob` first appears among the file's keys (see `key_order`).
    pub(crate) fn key_position(&self, blob: &[u8]) -> usize {
        self.key_order.get(blob).copied().unwrap_or(usize::MAX)
    }
}

/// One file's latest parse: compared by text, so any change is seen, however fast.
type Slot = Arc<Mutex<Option<Arc<Parsed>>>>;

/// Files parsed so far, by path. A handful in practice (the user's, dropship's, ssh_config's
/// and the probe's short-lived copies of dropship's).
static FILES: OnceLock<Mutex<HashMap<PathBuf, Slot>>> = OnceLock::new();

/// Past this many paths, those that no longer exist are forgotten (the probe's copies).
const KEEP_PATHS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `file` parsed: from the cache when its text is what was parsed last, else parsed now (by
/// one thread; others asking for the same file meanwhile wait for it and share it).
///
/// The file is read on every call and compared with the text parsed: that is cheap (no
/// parsing) and, unlike size and modification times (whose clock ticks in milliseconds),
/// never misses a rewrite. A file that grew by whole lines (dropship's own, one line per host
/// under `accept-new`) has only the new lines parsed. A file that cannot be read or parsed
/// is not cached: the error is the same each time.
pub(crate) fn parsed(session: &Session, file: &Path) -> Result<Arc<Parsed>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "cannot read known_hosts {}: {e}\n  help: fix or move the file",
            file.display()
        )
    })?;
    let slot = {
        let mut files = lock(FILES.get_or_init(Default::default));
        if !files.contains_key(file) && files.len() >= KEEP_PATHS {
            files.retain(|p, _| p.exists());
            if files.len() >= KEEP_PATHS {
                files.clear();
            }
        }
        files.entry(file.to_owned()).or_default().clone()
    };
    let mut slot = lock(&slot);
    if let Some(p) = slot.as_ref()
        && p.text == text
    {
        return Ok(p.clone());
    }
    let p = Arc::new(Parsed::parse(session, file, text, slot.as_deref())?);
    *slot = Some(p.clone());
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use ssh2::CheckResult;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    /// An ed25519 key blob (libssh2 compares keys as base64 text; any 32 bytes will do).
    fn blob(n: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&11u32.to_be_bytes());
        b.extend_from_slice(b"ssh-ed25519");
        b.extend_from_slice(&32u32.to_be_bytes());
        b.extend((0..32u32).map(|i| (n.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8));
        b
    }

    fn line(names: &str, n: u32) -> String {
        format!("{names} ssh-ed25519 {}", B64.encode(blob(n)))
    }

    /// The key blob of a known_hosts line (its third field).
    fn blob_of(line: &str) -> Option<Vec<u8>> {
        B64.decode(line.split([' ', '\t']).filter(|f| !f.is_empty()).nth(2)?)
            .ok()
    }

    fn libssh2(session: &Session, lines: &[&str]) -> ssh2::KnownHosts {
        let mut kh = session.known_hosts().unwrap();
        for l in lines {
            kh.read_str(l, KnownHostFileKind::OpenSSH).unwrap();
        }
        kh
    }

    /// The filter against libssh2's own check, for `file` and every (host, port) asked:
    /// each line libssh2 matches on its own is selected, and the selection answers every
    /// key of the file (and one not in it) as the whole file does. Returns how many lines
    /// each query selected.
    fn agrees_with_libssh2(text: &str, queries: &[(&str, u16)]) -> Vec<usize> {
        let session = Session::new().unwrap();
        let p = Parsed::parse(&session, Path::new("kh"), text.to_owned(), None).unwrap();
        let all: Vec<&str> = p.lines.iter().map(|(_, l)| l.as_str()).collect();
        let full = libssh2(&session, &all);
        let mut keys: Vec<Vec<u8>> = all.iter().filter_map(|l| blob_of(l)).collect();
        keys.push(blob(999_999));
        let mut sizes = Vec::new();
        for &(host, port) in queries {
            let picked: Vec<&str> = p
                .select(&[host], port)
                .into_iter()
                .map(|(_, l)| l.as_str())
                .collect();
            for l in &all {
                let Some(key) = blob_of(l) else { continue };
                let alone = libssh2(&session, &[l]);
                if matches!(alone.check_port(host, port, &key), CheckResult::Match) {
                    assert!(
                        picked.contains(l),
                        "{host}:{port}: libssh2 matches `{l}`, the filter dropped it"
                    );
                }
            }
            let sub = libssh2(&session, &picked);
            for key in &keys {
                let (a, b) = (
                    full.check_port(host, port, key),
                    sub.check_port(host, port, key),
                );
                assert_eq!(
                    format!("{a:?}"),
                    format!("{b:?}"),
                    "{host}:{port}, key {}",
                    B64.encode(key)
                );
            }
            sizes.push(picked.len());
        }
        sizes
    }

    /// `ssh-keygen -H` of `text`: the hashed file OpenSSH writes (HashKnownHosts yes).
    fn ssh_keygen_hashed(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&f)
            .output()
            .expect("ssh-keygen (openssh-client) runs");
        assert!(out.status.success(), "{out:?}");
        let hashed = std::fs::read_to_string(&f).unwrap();
        assert!(hashed.contains("|1|"), "{hashed}");
        hashed
    }

    const NAMES: &[&str] = &[
        "127.0.0.1",
        "[127.0.0.1]:2222",
        "web.example,10.0.0.5",
        "WEB.Example",
        "[Web.example]:22",
        "*.example",
        "*,!db.example",
        "[127.0.0.1]:*",
        "::1",
        "[0:0::1]:2200",
        "0:0:0:0:0:0:0:1",
        "[::ffff:127.0.0.1]:22",
        "FE80::A",
        "fe80::1%eth0",
        "[::1]",
        "[]:22",
        "127.0.0.1,,db.example",
        "db.example",
        "Mixed.Case.Example",
    ];

    const QUERIES: &[&str] = &[
        "127.0.0.1",
        "web.example",
        "WEB.EXAMPLE",
        "Web.example",
        "WEB.Example",
        "10.0.0.5",
        "*.example",
        "x.example",
        "*",
        "db.example",
        "::1",
        "0::1",
        "0:0:0:0:0:0:0:1",
        "::FFFF:127.0.0.1",
        "fe80::a",
        "fe80::1%eth0",
        "fe80::1%ETH0",
        "mixed.case.example",
        "Mixed.Case.Example",
        "[::1]",
        "",
        "nowhere",
    ];

    fn queries() -> Vec<(&'static str, u16)> {
        QUERIES
            .iter()
            .flat_map(|h| [22, 2222, 2200, 0, 65535].map(|p| (*h, p)))
            .collect()
    }

    /// The file of every kind of name, then many other hosts' lines.
    fn mixed_file() -> String {
        let mut text = String::from("# comment\n\n");
        for (i, names) in NAMES.iter().enumerate() {
            text += &line(names, i as u32);
            text += "\n";
        }
        // Hosts recorded with two names and the same key as a line above (key order).
        text += &line("other.example", 0);
        text += "\n   \t";
        text += &line("indented.example", 1);
        text += " a comment\n";
        for i in 0..300 {
            text += &line(&format!("10.1.{}.{}", i / 250, i % 250), 1000 + i);
            text += "\n";
        }
        text
    }

    /// The filter filters: a query gets the lines naming it and the unsure ones, except a
    /// scoped IPv6 address (`fe80::1%eth0`), which this module cannot compare: all lines.
    fn filters(sizes: &[usize]) {
        for (&(host, port), &n) in queries().iter().zip(sizes) {
            if host.contains('%') {
                assert!(n > 300, "{host}:{port}: {n} lines");
            } else {
                assert!(n <= 12, "{host}:{port}: {n} lines");
            }
        }
    }

    #[test]
    fn every_line_libssh2_matches_is_kept_plain() {
        let sizes = agrees_with_libssh2(&mixed_file(), &queries());
        filters(&sizes);
    }

    #[test]
    fn every_line_libssh2_matches_is_kept_hashed_by_ssh_keygen() {
        let text = ssh_keygen_hashed(&mixed_file());
        let sizes = agrees_with_libssh2(&text, &queries());
        filters(&sizes);
        // And the hashed lines are found, not all kept: 127.0.0.1 on 22 matches its line.
        let session = Session::new().unwrap();
        let p = Parsed::parse(&session, Path::new("kh"), text, None).unwrap();
        assert!(p.hashed.len() > 300, "{}", p.hashed.len());
        let picked = p.select(&["127.0.0.1"], 22);
        assert!(!picked.is_empty() && picked.len() < 10, "{}", picked.len());
    }

    #[test]
    fn hashed_names_with_unusual_base64_are_kept_or_matched() {
        // libssh2 skips characters outside base64 (padding, stray ones): the same name.
        let salt = [7u8; 20];
        let mac = |name: &str| {
            Hmac::<Sha1>::new_from_slice(&salt)
                .unwrap()
                .chain_update(name.as_bytes())
                .finalize()
                .into_bytes()
        };
        let hashed = |name: &str, strip: bool| {
            let (s, h) = (B64.encode(salt), B64.encode(mac(name)));
            if strip {
                format!("|1|{}|{}", s.trim_end_matches('='), h.trim_end_matches('='))
            } else {
                format!("|1|{s}|{h}")
            }
        };
        let text = [
            line(&hashed("127.0.0.1", true), 1),
            line(&hashed("[127.0.0.1]:2222", false), 2),
            line(&(hashed("web.example", false) + ",db.example"), 3),
            line("|1|AAAA|AAAA", 4),
            line("|1|c2FsdA==", 5),
            line(&hashed("WEB.example", false), 6),
        ]
        .join("\n");
        agrees_with_libssh2(&text, &queries());
    }

    /// What two parses hold, for comparing them.
    fn summary(p: &Parsed) -> String {
        let mut by_name: Vec<_> = p.by_name.iter().collect();
        by_name.sort();
        let mut key_order: Vec<_> = p.key_order.iter().collect();
        key_order.sort();
        let hashed: Vec<_> = p.hashed.iter().map(|h| (h.line, h.hash)).collect();
        let marked: Vec<_> = p.marked.iter().map(|m| (&m.at, &m.patterns)).collect();
        format!(
            "{:?} {by_name:?} {hashed:?} {:?} {marked:?} {key_order:?} {} {}",
            p.lines, p.always, p.line_count, p.entries
        )
    }

    #[test]
    fn appended_lines_parse_as_the_whole_file() {
        let session = Session::new().unwrap();
        let file = Path::new("kh");
        let whole = ssh_keygen_hashed(&mixed_file()) + &mixed_file();
        let ca = "@cert-authority *.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIV2iWYRLNGpmTNzNmMuPS8SC92HpTmNooA+jou9H76d";
        let whole = format!("{whole}{ca}\n\n# end\r\n{}\n", line("last.example", 0));
        let full = Parsed::parse(&session, file, whole.clone(), None).unwrap();
        // Cut after every line: the first part parsed, then the rest appended.
        let cuts: Vec<usize> = whole.match_indices('\n').map(|(i, _)| i + 1).collect();
        for &cut in cuts.iter().step_by(37).chain(cuts.last()) {
            let before = Parsed::parse(&session, file, whole[..cut].to_owned(), None).unwrap();
            let after = Parsed::parse(&session, file, whole.clone(), Some(&before)).unwrap();
            assert_eq!(summary(&after), summary(&full), "cut at {cut}");
        }
        // Not an append (a line changed, or the first part ends mid-line): parsed anew.
        let before = Parsed::parse(&session, file, whole[..cuts[3] - 2].to_owned(), None).unwrap();
        let after = Parsed::parse(&session, file, whole.clone(), Some(&before)).unwrap();
        assert_eq!(summary(&after), summary(&full));
        // A bad line appended is named by its line in the whole file.
        let bad = format!("{whole}broken.example ssh-ed25519\n");
        let e = Parsed::parse(&session, file, bad, Some(&full))
            .err()
            .unwrap();
        let n = whole.lines().count() + 1;
        assert!(
            e.starts_with(&format!("cannot read known_hosts kh:{n}: ")),
            "{e}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Random names from the characters that matter (case, brackets, colons, digits,
        /// wildcards, commas), plain and hashed by the filter's own HMAC, against random
        /// lookups: libssh2 decides what matches.
        #[test]
        fn random_files_agree_with_libssh2(
            names in proptest::collection::vec("[aA1:.\\[\\]*!]{0,6}(,[aA1:.]{1,4})?", 1..12),
            hosts in proptest::collection::vec("[aA1:.\\[\\]*]{1,6}", 1..6),
            ports in proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(22u16), 0u16..3], 1..3),
            hash_mask in proptest::prelude::any::<u16>(),
        ) {
            let mut text = String::new();
            for (i, n) in names.iter().enumerate() {
                let field = if n.is_empty() { "x".to_owned() } else { n.clone() };
                let field = if hash_mask & (1 << i) != 0 {
                    let salt = [i as u8 + 1; 20];
                    let h = Hmac::<Sha1>::new_from_slice(&salt).unwrap()
                        .chain_update(field.split(',').next().unwrap_or_default().as_bytes())
                        .finalize().into_bytes();
                    format!("|1|{}|{}", B64.encode(salt), B64.encode(h))
                } else {
                    field
                };
                text += &line(&field, i as u32);
                text += "\n";
            }
            let mut qs = Vec::new();
            for h in &hosts {
                for p in &ports {
                    qs.push((h.as_str(), *p));
                }
                // A name of the file itself, looked up as written and as the hashed one was.
                if let Some(n) = names.first() {
                    qs.push((n.as_str(), 22));
                }
            }
            agrees_with_libssh2(&text, &qs);
        }
    }

    #[test]
    fn base64_as_libssh2_decodes_it() {
        use base64::Engine;
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let s = base64::engine::general_purpose::STANDARD.encode(&data);
            assert_eq!(libssh2_base64(&s).unwrap(), data, "{s}");
            assert_eq!(libssh2_base64(s.trim_end_matches('=')).unwrap(), data);
        }
        assert_eq!(libssh2_base64("QU*J,D").unwrap(), b"ABC");
        assert!(libssh2_base64("QUJDR").is_none());
    }

    #[test]
    fn ipv6_names_compare_by_their_bytes() {
        let k = |s: &str| name_keys(s).keys;
        assert_eq!(k("::1")[1], k("0:0:0:0:0:0:0:1")[1]);
        assert_eq!(k("[::1]:22")[1], k("[0::0:1]:22")[1]);
        assert_ne!(k("[::1]:22")[1], k("[::1]:022")[1]);
        assert_ne!(k("[::1]:22")[1], k("::1")[1]);
        assert_eq!(k("127.0.0.1").len(), 1);
        assert!(name_keys("fe80::1%eth0").unsure);
        assert!(!name_keys("[bad]:22").unsure);
    }
}
