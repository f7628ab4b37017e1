//! The one duration grammar: every timeout in `dispatch.cfg` and every interval on the
//! command line (`--settle`, `--rescan`) is read here, so `500ms` means the same wherever
//! a user writes it.
//!
//! A whole number followed by `ms`, `s`, `m`, `h` or `d`, or a bare number of seconds;
//! above zero (a zero timeout means "wait forever" to libssh2 and a zero rescan would spin)
//! and at most [`MAX_DURATION_SECS`].

use std::time::Duration;

/// The longest duration a setting may have. Every timeout is added to an `Instant`, which
/// panics on overflow; 30 days is longer than any step a release should take.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;

/// Why a duration was refused. The text names the value and shows what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("bad duration `{0}`: write e.g. `500ms`, `90s`, `5m`, `1h`, `2d`")]
    Bad(String),
    #[error("duration `{0}` is zero: write e.g. `500ms`, `90s`, `5m`, `1h`, `2d`")]
    Zero(String),
    #[error("duration `{0}` is longer than 30 days: write a shorter one")]
    TooLong(String),
}

/// Parses `500ms`, `90s`, `5m`, `1h`, `2d` or a bare number of seconds (`30`).
/// Surrounding whitespace and a space before the unit (`5 m`) are allowed.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || DurationError::Bad(text.to_string());
    let ms_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    // Digits only, so a parse failure is an overflow of u64: certainly too long.
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::TooLong(text.to_string()))?;
    if n == 0 {
        return Err(DurationError::Zero(text.to_string()));
    }
    match n.checked_mul(ms_per_unit) {
        Some(ms) if ms <= MAX_DURATION_SECS * 1_000 => Ok(Duration::from_millis(ms)),
        _ => Err(DurationError::TooLong(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_bare_seconds() {
        for (text, ms) in [
            ("500ms", 500),
            ("1ms", 1),
            ("30", 30_000),
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("30d", 2_592_000_000),
            ("720h", 2_592_000_000),
            (" 5 m ", 300_000),
            ("1500ms", 1_500),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn refusals_name_the_value_and_the_grammar() {
        for text in [
            "", "s", "-1s", "1.5s", "5w", "5 d s", "1h30m", "ms5", "5S", "0x10",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert_eq!(e, DurationError::Bad(text.to_string()), "{text}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("`{text}`"))
                    && msg.contains("`500ms`, `90s`, `5m`, `1h`, `2d`"),
                "{msg}"
            );
        }
        for text in ["0", "0ms", "0d"] {
            assert_eq!(parse_duration(text), Err(DurationError::Zero(text.into())));
        }
        for text in [
            "31d",
            "721h",
            "43201m",
            "2592001",
            "2592000001ms",
            "99999999999999m",
            "18446744073709551615h",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::TooLong(text.into())),
                "{text}"
            );
        }
    }
}
