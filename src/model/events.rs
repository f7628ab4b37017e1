//! The one stream a dispatch reports through. Every front end (console, headless printer,
//! `--json`), the journal and notifications consume these same values, so they are plain
//! serialisable data and carry no secrets.

use super::transfer::{Stream, TransferEvent};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: compact, sortable, the same in JSON and SQLite.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// The steps of one target's job, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Connect,
    Lock,
    Pre,
    Upload,
    /// `layout = releases`: the bundle is unpacked into `releases/NAME`.
    Unpack,
    Upgrade,
    /// `layout = releases`: `current` is pointed at the new release (or, after a failure or
    /// on `--rollback`, back at the previous one).
    Switch,
    Post,
    Health,
    /// `layout = releases`: old releases beyond `keep` are removed.
    Prune,
    Rollback,
    /// An ad-hoc command (`--run`) or a rule's named action (`--action`).
    Run,
    Unlock,
}

impl Step {
    /// Whether the step may simply run again after an interruption left its outcome
    /// unknown: connecting, locking and uploading are, and so are the release layout's own
    /// steps (an unpack starts over in a temporary directory, a switch or prune sets the
    /// same state again); a user's command may not be (`--resume --force` decides).
    pub fn is_repeatable(self) -> bool {
        matches!(
            self,
            Step::Connect
                | Step::Lock
                | Step::Upload
                | Step::Unpack
                | Step::Switch
                | Step::Prune
                | Step::Unlock
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Lock => "lock",
            Step::Pre => "pre",
            Step::Upload => "upload",
            Step::Unpack => "unpack",
            Step::Upgrade => "upgrade",
            Step::Switch => "switch",
            Step::Post => "post",
            Step::Health => "health",
            Step::Prune => "prune",
            Step::Rollback => "rollback",
            Step::Run => "run",
            Step::Unlock => "unlock",
        }
    }

    pub fn parse(text: &str) -> Option<Step> {
        [
            Step::Connect,
            Step::Lock,
            Step::Pre,
            Step::Upload,
            Step::Unpack,
            Step::Upgrade,
            Step::Switch,
            Step::Post,
            Step::Health,
            Step::Prune,
            Step::Rollback,
            Step::Run,
            Step::Unlock,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Ok,
    Failed,
    /// The process died while it ran (found by `--resume`): it may or may not have run.
    Unknown,
    Cancelled,
}

/// How a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetResult {
    Succeeded,
    Failed,
    /// Never started: a canary or `max_fail` stopped the rollout first.
    Skipped,
    Cancelled,
}

impl TargetResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetResult::Succeeded => "succeeded",
            TargetResult::Failed => "failed",
            TargetResult::Skipped => "skipped",
            TargetResult::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
}

/// Something that happened in a dispatch. `dispatch` is the journal's id of the dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    DispatchStarted {
        dispatch: i64,
        at: Millis,
        bundle: String,
        rule: String,
        hosts: Vec<String>,
    },
    /// The bundle's SHA-256, when it was not known as the dispatch started: it is computed
    /// while the hosts connect and upload, and no host's upload is verified before it.
    BundleHashed {
        dispatch: i64,
        at: Millis,
        sha256: String,
    },
    StepStarted {
        dispatch: i64,
        at: Millis,
        host: String,
        step: Step,
        /// The command run, for command steps (placeholders already filled in).
        command: Option<String>,
    },
    /// Output of a command: the lines one read completed (or one line of dropship's own,
    /// such as a health check's try), all of one stream, stamped when they were read.
    Output {
        dispatch: i64,
        at: Millis,
        host: String,
        step: Step,
        stream: Stream,
        /// `line` in events written before output came a read at a time (a journal spool
        /// file left by an older dropship still reads back).
        #[serde(alias = "line")]
        lines: Lines,
    },
    Transfer {
        dispatch: i64,
        at: Millis,
        host: String,
        transfer: TransferEvent,
    },
    StepFinished {
        dispatch: i64,
        at: Millis,
        host: String,
        step: Step,
        outcome: StepOutcome,
        exit_code: Option<i32>,
        error: Option<String>,
        duration_ms: i64,
    },
    TargetFinished {
        dispatch: i64,
        at: Millis,
        host: String,
        result: TargetResult,
        failed_step: Option<Step>,
        error: Option<String>,
        duration_ms: i64,
    },
    Notice {
        dispatch: i64,
        at: Millis,
        host: Option<String>,
        level: Level,
        message: String,
    },
    DispatchFinished {
        dispatch: i64,
        at: Millis,
        succeeded: usize,
        failed: usize,
        skipped: usize,
        cancelled: usize,
        duration_ms: i64,
    },
}

impl Event {
    pub fn dispatch(&self) -> i64 {
        match self {
            Event::DispatchStarted { dispatch, .. }
            | Event::BundleHashed { dispatch, .. }
            | Event::StepStarted { dispatch, .. }
            | Event::Output { dispatch, .. }
            | Event::Transfer { dispatch, .. }
            | Event::StepFinished { dispatch, .. }
            | Event::TargetFinished { dispatch, .. }
            | Event::Notice { dispatch, .. }
            | Event::DispatchFinished { dispatch, .. } => *dispatch,
        }
    }

    /// This event as events of one output line each (any other event as it is): for a
    /// consumer whose queue is bounded in events, not bytes.
    pub fn line_by_line(self) -> Box<dyn Iterator<Item = Event>> {
        match self {
            Event::Output {
                dispatch,
                at,
                host,
                step,
                stream,
                lines,
            } if lines.0.contains('\n') => {
                let mut from = Some(0);
                Box::new(std::iter::from_fn(move || {
                    let start = from?;
                    let rest = &lines.0[start..];
                    let end = rest.find('\n');
                    from = end.map(|i| start + i + 1);
                    Some(Event::Output {
                        dispatch,
                        at,
                        host: host.clone(),
                        step,
                        stream,
                        lines: rest[..end.unwrap_or(rest.len())].into(),
                    })
                }))
            }
            other => Box::new(std::iter::once(other)),
        }
    }

    /// Control events change state and are never dropped; output lines and progress may be
    /// coalesced by a slow front end.
    pub fn is_control(&self) -> bool {
        !matches!(self, Event::Output { .. } | Event::Transfer { .. })
    }
}

/// One or more whole lines of output, joined by `\n` (no `\n` after the last).
///
/// Why several lines per event: a command printing a million lines cost a `String`, a
/// timestamp and a trip through every queue (journal writer, printer) per line, three
/// threads over; the lines of one read cost that once. The text is kept joined, as it was
/// read, and split only where lines are used one by one ([`Lines::iter`]): the printer, the
/// journal's stored rows, the console's log. A line holds no `\n`; a `\r` only as its last
/// byte, the mark of a progress state (`transport::lines`), which the split keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lines(String);

impl Lines {
    /// The lines, one by one. Not [`str::lines`], which would take a progress state's
    /// `\r` mark for half of a `\r\n`.
    pub fn iter(&self) -> std::str::Split<'_, char> {
        self.0.split('\n')
    }

    /// How many lines (at least one: an empty text is one empty line).
    pub fn count(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'\n').count() + 1
    }

    /// The lines joined by `\n`, as they are carried.
    pub fn as_joined(&self) -> &str {
        &self.0
    }
}

/// Text whose `\n`s separate lines: one line, or a batch as `transport::lines` joins it.
impl From<String> for Lines {
    fn from(text: String) -> Lines {
        Lines(text)
    }
}

impl From<&str> for Lines {
    fn from(text: &str) -> Lines {
        Lines(text.to_owned())
    }
}

/// Sends an event to every listener (journal, front end, notifier).
pub type Emit = std::sync::Arc<dyn Fn(Event) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_back_as_they_were_joined() {
        let l = Lines::from("a\n\nprogress 10%\r\nend".to_owned());
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            ["a", "", "progress 10%\r", "end"]
        );
        assert_eq!(l.count(), 4);
        let one = Lines::from("");
        assert_eq!((one.iter().collect::<Vec<_>>(), one.count()), (vec![""], 1));
        // JSON and the spool carry the joined text.
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#""a\n\nprogress 10%\r\nend""#
        );
    }

    #[test]
    fn an_output_event_of_the_old_shape_reads_back() {
        let old = r#"{"event":"output","dispatch":3,"at":9,"host":"h","step":"upgrade","stream":"stdout","line":"done"}"#;
        let e: Event = serde_json::from_str(old).unwrap();
        assert_eq!(
            e,
            Event::Output {
                dispatch: 3,
                at: 9,
                host: "h".into(),
                step: Step::Upgrade,
                stream: Stream::Stdout,
                lines: "done".into(),
            }
        );
    }

    #[test]
    fn an_output_event_line_by_line() {
        let e = Event::Output {
            dispatch: 7,
            at: 5,
            host: "h".into(),
            step: Step::Upgrade,
            stream: Stream::Stderr,
            lines: "one\n\nthree\r".into(),
        };
        let each: Vec<Event> = e.line_by_line().collect();
        let one = |text: &str| Event::Output {
            dispatch: 7,
            at: 5,
            host: "h".into(),
            step: Step::Upgrade,
            stream: Stream::Stderr,
            lines: text.into(),
        };
        assert_eq!(each, [one("one"), one(""), one("three\r")]);
        assert_eq!(one("x").line_by_line().collect::<Vec<_>>(), [one("x")]);
        let notice = Event::Notice {
            dispatch: 7,
            at: 5,
            host: None,
            level: Level::Info,
            message: "a\nb".into(),
        };
        assert_eq!(notice.clone().line_by_line().collect::<Vec<_>>(), [notice]);
    }
}
