//! dropship ships release bundles to servers.
//!
//! Data flow: a bundle name is matched against the regex rules of `dispatch.cfg`
//! ([`config`]), credentials are resolved from the rule or `~/.netrc`, and the result is a
//! [`plan::Plan`] of targets. Later layers upload and run commands; front ends only render
//! events and never talk to hosts themselves.

pub mod config;
pub mod engine;
pub mod fleet;
pub mod journal;
pub mod logfile;
pub mod plan;
pub mod transport;
pub mod ui;
pub mod watch;
