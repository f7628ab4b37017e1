//! Every key the console answers to, per pane: the `?` overlay is generated from these
//! tables, so help cannot drift from what the keys do (app.rs matches on the same keys).

use super::model::{Focus, Topic};

pub type Keys = &'static [(&'static str, &'static str)];

pub const GLOBAL: Keys = &[
    ("Tab / Shift-Tab", "next / previous pane"),
    ("1-5", "Hosts, Packages, Dispatches, Targets, Log"),
    ("d", "dispatch a bundle (path entry, Tab completes)"),
    ("a", "pause / resume the watched folder (--watch)"),
    ("v", "Versions: installed versions per host, drift marked"),
    (":", "command palette (Tab completes)"),
    ("f", "log full screen on/off"),
    (
        "F",
        "follow the newest dispatch on/off (off: nothing moves your selection)",
    ),
    ("m", "mouse capture on/off (off lets you select text)"),
    ("?", "this help"),
    ("Esc", "close / back / clear filter"),
    (
        "q, Ctrl-C",
        "quit (asks first while a dispatch runs; cancels like c, q again stops now)",
    ),
];

pub const LIST: Keys = &[
    ("j/k, Down/Up", "move"),
    ("g/G, Home/End", "first / last"),
    ("PgUp/PgDn", "page"),
    (
        "/",
        "filter this list (Esc clears, the cursor stays on its item)",
    ),
    (
        "o / O",
        "sort Hosts or Targets by the next column / reverse",
    ),
];

pub const HOSTS: Keys = &[
    ("Enter", "show the host's last dispatch"),
    (
        "p",
        "probe the host: login, dest dir, programs, lock, version",
    ),
    ("P", "check again which hosts answer (no login)"),
    ("b", "roll the host back (asks first, says what changes)"),
    ("!", "run a command on the host (:run HOST …)"),
    (
        "A",
        "the host's actions (action.NAME of its rules), on digits",
    ),
];
pub const PACKAGES: Keys = &[
    ("Enter", "dispatch this bundle (asks first)"),
    ("Enter on a watched one", "its dispatch, or where it stands"),
    ("!", "run a command on the package's hosts (:run RULE …)"),
    ("A", "the package's actions (action.NAME), on digits"),
];
pub const DISPATCHES: Keys = &[
    ("Enter", "the dispatch's hosts"),
    ("c", "cancel the running dispatch (asks first)"),
    ("c again", "stop it now: kill running commands (asks first)"),
    ("r", "retry its failed hosts (asks first)"),
];
pub const TARGETS: Keys = &[
    (
        "Enter",
        "details: why it failed, each step's exit code and time (Enter again: log)",
    ),
    ("c", "cancel the running dispatch (asks first)"),
    ("c again", "stop it now: kill running commands (asks first)"),
    ("r", "retry the failed hosts (asks first)"),
    (
        "b",
        "roll this host back in the dispatch's rule (asks first)",
    ),
];
pub const LOG: Keys = &[
    ("j/k, Up/Down", "scroll a line (up leaves follow mode)"),
    ("PgUp/PgDn", "scroll a page"),
    ("g", "oldest line held"),
    ("G, End", "newest line, follow on"),
    ("w", "wrap long lines on/off"),
    ("t", "timestamps on/off"),
    ("/", "search; n / N next / previous match"),
    (
        "Esc",
        "clear the search, then the host filter, then back to one host",
    ),
    ("s", "save the log to a file"),
    (
        "A",
        "all hosts: every host's lines in arrival order, tagged",
    ),
    ("S", "split: 2-4 hosts side by side (+ / - columns)"),
    ("D", "diff: this host's output against the majority's"),
    (
        "[ / ]",
        "previous / next host (all hosts: keep one host's lines)",
    ),
    ("/ in all hosts", "keep only the lines containing a text"),
];

pub const PROBE: Keys = &[
    ("j/k, Down/Up", "scroll a line"),
    ("PgUp/PgDn", "scroll a page"),
    ("g, Home", "top"),
    ("p", "probe the same hosts again"),
    ("?", "this help"),
    ("Esc, Enter, q", "close"),
];

pub const VERSIONS: Keys = &[
    ("j/k, Down/Up", "scroll a line"),
    ("PgUp/PgDn", "scroll a page"),
    ("g, Home", "top"),
    ("r", "read the versions again"),
    (
        "c",
        "converge: ship the last good bundle to the hosts that differ (plan first, Cancel default)",
    ),
    ("?", "this help"),
    ("Esc, v, q", "close"),
];

/// The keys of a view opened over the panes.
pub fn for_topic(topic: Topic) -> Vec<(&'static str, Keys)> {
    match topic {
        Topic::Probe => vec![("Probe results", PROBE)],
        Topic::Versions => vec![("Versions", VERSIONS)],
    }
}

pub fn topic_title(topic: Topic) -> &'static str {
    match topic {
        Topic::Probe => "Probe",
        Topic::Versions => "Versions",
    }
}

/// The keys of the focused pane, then the global ones.
pub fn for_focus(focus: Focus) -> Vec<(&'static str, Keys)> {
    let pane: Vec<(&'static str, Keys)> = match focus {
        Focus::Hosts => vec![("Hosts", HOSTS), ("Lists", LIST)],
        Focus::Packages => vec![("Packages", PACKAGES), ("Lists", LIST)],
        Focus::Dispatches => vec![("Dispatches", DISPATCHES), ("Lists", LIST)],
        Focus::Targets => vec![("Targets", TARGETS), ("Lists", LIST)],
        Focus::Log => vec![("Log", LOG)],
    };
    pane.into_iter().chain([("Everywhere", GLOBAL)]).collect()
}

/// The status bar's short list of the focused pane's keys (the `?` overlay has them all).
pub fn hints(focus: Focus) -> &'static str {
    match focus {
        Focus::Hosts => {
            "Enter last dispatch · p probe · P reach · b roll back · ! run · A actions · / filter"
        }
        Focus::Packages => "Enter dispatch · d dispatch a file · ! run · A actions · / filter",
        Focus::Dispatches => "Enter hosts · c cancel · r retry · F follow · / filter",
        Focus::Targets => "Enter details · c cancel · r retry · b roll back · / filter",
        Focus::Log => {
            "/ search · n/N next · A all hosts · S split · D diff · w wrap · f full screen"
        }
    }
}
