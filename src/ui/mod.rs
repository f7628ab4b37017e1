//! Front ends: they render engine events and plans; they never talk to hosts themselves.

pub mod headless;
pub mod report;
pub mod run;
pub mod tui;
