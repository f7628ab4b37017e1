//! dropship ships release bundles to servers.
//!
//! Data flow: a bundle name is matched against the regex rules of `dispatch.cfg`
//! ([`config`]), credentials are resolved from the rule, `~/.netrc` and `~/.ssh/config`, and
//! the result is a [`plan::Plan`] of targets. The [`engine`] runs a job per target (connect,
//! lock, upload over a [`transport`], commands, health) and reports only through events
//! ([`model`]); the [`session`] records them in the [`journal`] and hands them to a front end
//! ([`ui`]), which renders them and never talks to hosts itself. [`fleet`] inspects hosts
//! read-only beside the engine; [`watch`] ships what lands in a folder.
//!
//! Modules in data-flow order; each imports only those before it (`tests/layers.rs`,
//! ARCHITECTURE.md): model, config, logfile, transport, plan, journal, engine, fleet, watch,
//! session, ui.

pub mod config;
pub mod engine;
pub mod fleet;
pub mod journal;
pub mod logfile;
pub mod model;
pub mod plan;
pub mod session;
pub mod transport;
pub mod ui;
pub mod watch;
