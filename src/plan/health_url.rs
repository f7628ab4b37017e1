//! A rule's `health` that is an `http(s)://` URL (polled by [`crate::engine::health`]):
//! recognised, read back from its rendered form, and shown without its secrets.

/// Whether a `health` value (the template as written) is a URL rather than a command.
pub fn is_url(source: &str) -> bool {
    let s = source.trim_start().to_ascii_lowercase();
    s.starts_with("http://") || s.starts_with("https://")
}

/// The URL from a rendered `health` value: placeholders were shell-quoted for commands,
/// so the value is read back as one shell word.
pub fn url_from_rendered(rendered: &str) -> Result<String, String> {
    match shlex::split(rendered) {
        Some(mut words) if words.len() == 1 => Ok(words.remove(0)),
        _ => Err("a health URL must be one word (no spaces)".into()),
    }
}

/// A URL as it may be shown: without user info, query and fragment, which may hold
/// tokens.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            let mut s = u.to_string();
            if had_query {
                s.push_str("?…");
            }
            s
        }
        Err(_) => url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    }
}
