//! What a transfer and a command report: plain data, shared by the transports that make it
//! and the events, journal and front ends that carry it.

use serde::Serialize;

/// What an upload reports while it runs. Plain data, so front ends and the journal can
/// consume it; transports never print.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransferEvent {
    /// An attempt begins; `resume_from` > 0 when a verified `.part` prefix is reused.
    Started {
        attempt: u32,
        size: u64,
        resume_from: u64,
        /// Set when a `.part` already on the host is started over instead of continued,
        /// saying why (longer than the bundle, not proven to be ours, the server refuses to
        /// append).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restart: Option<String>,
    },
    Progress {
        sent: u64,
        total: u64,
        /// Bytes per second over this attempt.
        rate: f64,
        /// Seconds left at that rate.
        eta_secs: Option<f64>,
    },
    /// The attempt failed and another follows after `delay_ms`.
    Retrying {
        attempt: u32,
        of: u32,
        delay_ms: u64,
        error: String,
    },
    /// What arrived is proven: by SHA-256 computed on the host (`sha256` set), or, where
    /// the host can say nothing about content (plain FTP, no SSH), by size only.
    Verified {
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        by: VerifiedBy,
    },
}

/// How an upload was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifiedBy {
    /// The host hashed the file and it matched the bundle.
    Sha256,
    /// Only its size could be checked: the rule has no SSH shell and the server offers no
    /// hash command.
    SizeOnly,
}

impl VerifiedBy {
    /// How it reads in output and history.
    pub fn describe(self) -> &'static str {
        match self {
            VerifiedBy::Sha256 => "verified by sha256",
            VerifiedBy::SizeOnly => "verified by size only",
        }
    }
}

/// Output of a command, one line at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}
