//! The `host` key: one or more hosts separated by commas and/or whitespace, each `name`,
//! `name:port`, `[v6addr]` or `[v6addr]:port`.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSpec {
    /// As written, without brackets or port: this is also the netrc `machine` name.
    pub name: String,
    /// A per-host `:port`, which beats the rule's `port` key.
    pub port: Option<u16>,
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = self.name.contains(':');
        match (bracket, self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.name),
            (true, None) => write!(f, "[{}]", self.name),
            (false, Some(p)) => write!(f, "{}:{p}", self.name),
            (false, None) => f.write_str(&self.name),
        }
    }
}

/// Parses a port number, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("`{text}` is not a port number (1 to 65535)")),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// One `name`, `name:port` or `[v6addr]:port`.
pub fn parse_host(item: &str) -> Result<HostSpec, String> {
    if let Some(rest) = item.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("`{item}`: `[` without a closing `]`"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{item}`: `{addr}` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p).map_err(|e| format!("`{item}`: {e}"))?),
                None => return Err(format!("`{item}`: expected `:PORT` after `]`")),
            },
        };
        return Ok(HostSpec {
            name: addr.to_owned(),
            port,
        });
    }
    let (name, port) = match item.split_once(':') {
        Some((_, rest)) if rest.contains(':') => {
            return Err(format!(
                "`{item}` looks like an IPv6 address: write it in brackets, `[{item}]` or `[ADDR]:PORT`"
            ));
        }
        Some((name, p)) => (
            name,
            Some(parse_port(p).map_err(|e| format!("`{item}`: {e}"))?),
        ),
        None => (item, None),
    };
    if !valid_name(name) {
        return Err(format!(
            "`{name}` is not a valid host name (letters, digits, `.`, `-` and `_` only)"
        ));
    }
    Ok(HostSpec {
        name: name.to_owned(),
        port,
    })
}

/// Parses a `host` value. Every bad item is reported, not just the first.
pub fn parse_hosts(value: &str) -> Result<Vec<HostSpec>, Vec<String>> {
    let mut hosts = Vec::new();
    let mut errors = Vec::new();
    for item in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        match parse_host(item) {
            Ok(h) if hosts.contains(&h) => errors.push(format!("`{h}` is listed twice")),
            // Hosts are told apart by name everywhere a dispatch reports them (events, the
            // journal, the console), so one name on two ports would mix their results.
            Ok(h) if hosts.iter().any(|o: &HostSpec| o.name == h.name) => errors.push(format!(
                "`{}` is listed with two ports; give each instance its own name (a `Host` alias \
                 with `HostName` and `Port` in ~/.ssh/config) so results are not mixed",
                h.name
            )),
            Ok(h) => hosts.push(h),
            Err(e) => errors.push(e),
        }
    }
    if hosts.is_empty() && errors.is_empty() {
        errors.push("no host given".to_owned());
    }
    if errors.is_empty() {
        Ok(hosts)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, port: Option<u16>) -> HostSpec {
        HostSpec {
            name: name.into(),
            port,
        }
    }

    #[test]
    fn separators_and_forms() {
        let got = parse_hosts("web1, web2:2222\n db-3.example.com,,[::1]:2200 [fe80::1]").unwrap();
        assert_eq!(
            got,
            [
                h("web1", None),
                h("web2", Some(2222)),
                h("db-3.example.com", None),
                h("::1", Some(2200)),
                h("fe80::1", None),
            ]
        );
        assert_eq!(got[3].to_string(), "[::1]:2200");
    }

    #[test]
    fn bad_hosts_all_reported() {
        let errs = parse_hosts("a:0 b:70000 ::1 [::1 [zz]:1 bad/name a:x web web").unwrap_err();
        assert_eq!(errs.len(), 8, "{errs:?}");
        assert!(errs[2].contains("brackets"));
        assert!(errs[7].contains("twice"));
        assert_eq!(parse_hosts(" , ").unwrap_err(), ["no host given"]);
    }

    #[test]
    fn one_name_on_two_ports_is_refused() {
        let errs = parse_hosts("web:2201 web:2202").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("two ports") && errs[0].contains("Host` alias"));
    }
}
