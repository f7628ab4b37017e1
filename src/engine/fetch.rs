//! Bundles given as http(s) URLs: downloaded once into the state directory before a
//! dispatch, checked against `URL.sha256` when the server has one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot download {url}: {detail}\n  help: check the URL and that the server is reachable"
    )]
    Http { url: String, detail: String },
    #[error(
        "{url}: SHA-256 is {got} but {url}.sha256 says {want}\n  help: the download is corrupt or the checksum file is stale; nothing was shipped"
    )]
    Checksum {
        url: String,
        got: String,
        want: String,
    },
    #[error("cannot store the download in {path}: {detail}")]
    Store { path: PathBuf, detail: String },
}

/// Whether a bundle argument is a URL rather than a file.
pub fn is_url(arg: &str) -> bool {
    arg.starts_with("http://") || arg.starts_with("https://")
}

/// The file name a URL's bundle has: its last path segment, without query or fragment.
pub fn url_file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && !path.ends_with("://")).then_some(name)
}

/// Downloads `url` into `dir/NAME`, reporting `(bytes, total)` as it goes, and verifies
/// it against `URL.sha256` when that exists (a 404 means there is none).
pub fn fetch(
    url: &str,
    dir: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf, FetchError> {
    let http = |detail: String| FetchError::Http {
        url: url.to_owned(),
        detail,
    };
    let name = url_file_name(url).ok_or_else(|| http("the URL names no file".into()))?;
    let store = |path: &Path, e: std::io::Error| FetchError::Store {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| store(dir, e))?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| http(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| http(e.to_string()))?;
    let total = resp.content_length();
    let dest = dir.join(name);
    let part = dir.join(format!(".{name}.part"));
    let mut file = std::fs::File::create(&part).map_err(|e| store(&part, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = resp.read(&mut buf).map_err(|e| http(e.to_string()))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| store(&part, e))?;
        got += n as u64;
        progress(got, total);
    }
    file.sync_all().map_err(|e| store(&part, e))?;
    let sum_url = format!("{url}.sha256");
    match client.get(&sum_url).send() {
        Ok(r) if r.status().is_success() => {
            let text = r.text().map_err(|e| http(e.to_string()))?;
            let want = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let have = crate::transport::local_sha256(&part, None).map_err(|e| store(&part, e))?;
            if want != have {
                let _ = std::fs::remove_file(&part);
                return Err(FetchError::Checksum {
                    url: url.to_owned(),
                    got: have,
                    want,
                });
            }
        }
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
        Ok(r) => return Err(http(format!("{sum_url}: HTTP {}", r.status()))),
        Err(e) => return Err(http(format!("{sum_url}: {e}"))),
    }
    std::fs::rename(&part, &dest).map_err(|e| store(&dest, e))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names() {
        assert_eq!(url_file_name("https://x/a/app-1.tgz"), Some("app-1.tgz"));
        assert_eq!(
            url_file_name("https://x/a/app-1.tgz?sig=1#f"),
            Some("app-1.tgz")
        );
        assert_eq!(url_file_name("https://x/a/"), None);
        assert!(is_url("http://x/y") && !is_url("./http"));
    }
}
