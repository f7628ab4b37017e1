//! The dispatch engine: per-target jobs, rollouts, remote locks, cancellation. It reports
//! only through [`events::Event`]s and never prints.

pub mod connect;
/// The events the engine emits (they live in the shared vocabulary, [`crate::model`]).
pub use crate::model::events;
pub mod fetch;
pub mod health;
pub mod job;
pub mod lock;
pub mod notify;
pub mod releases;
pub mod rollback;
pub mod rollout;
pub mod run;
pub mod store;
