//! Who started a dispatch and from which machine: on a team's shared journal (PostgreSQL)
//! `--history` mixes everyone's dispatches, and "who shipped this, from where" is the first
//! question about one. Only the OS user name and the hostname are recorded: never an
//! environment dump, a key or a password.

/// The user and machine a dispatch was started by, as recorded in the journal (schema V4).
/// Either may be unknown: a uid without a passwd entry and no `$USER`, a host whose name
/// cannot be read; rows written before V4 have neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    pub user: Option<String>,
    pub host: Option<String>,
}

impl Origin {
    /// This process's user (the passwd entry of the real uid, else `$USER`) and hostname.
    /// Looked up once per process: it is read inside the transaction that records a
    /// dispatch, and a passwd lookup may go to a directory server (NSS).
    pub fn current() -> &'static Origin {
        static CURRENT: std::sync::OnceLock<Origin> = std::sync::OnceLock::new();
        CURRENT.get_or_init(|| Origin {
            user: passwd_name().or_else(|| non_empty(std::env::var("USER").ok()?)),
            host: hostname(),
        })
    }
}

/// `who@where` for a table cell; `-` for an unknown part, `-` alone when neither is known
/// (rows written before schema V4).
pub fn display(user: Option<&str>, host: Option<&str>) -> String {
    match (user, host) {
        (None, None) => "-".to_owned(),
        (u, h) => format!("{}@{}", u.unwrap_or("-"), h.unwrap_or("-")),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The name of the real uid in the passwd database (files, LDAP, ... via NSS): the uid says
/// who is really running, where `$USER` is whatever the environment was given.
fn passwd_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: an all-zero `passwd` is a valid value of the plain C struct; getpwuid_r writes
    // only into the buffers we pass; pw_name is read only on success, while `buf` (which it
    // points into) is alive.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        non_empty(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    non_empty(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_names_a_user_and_a_host() {
        let o = Origin::current();
        assert!(o.user.as_deref().is_some_and(|u| !u.is_empty()), "{o:?}");
        assert!(o.host.as_deref().is_some_and(|h| !h.is_empty()), "{o:?}");
    }

    #[test]
    fn display_marks_unknown_parts() {
        assert_eq!(display(Some("alice"), Some("build-3")), "alice@build-3");
        assert_eq!(display(None, None), "-");
        assert_eq!(display(Some("alice"), None), "alice@-");
    }
}
