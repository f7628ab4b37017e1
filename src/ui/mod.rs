//! Front ends: they render engine events and plans; they never talk to hosts themselves.

pub mod ansi;
pub mod fleet_report;
pub mod headless;
pub mod report;
pub mod run_report;
pub mod step_line;
pub mod term_text;
pub mod tui;
