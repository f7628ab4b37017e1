//! The dispatch engine: per-target jobs, rollouts, remote locks, cancellation. It reports
//! only through [`events::Event`]s and never prints.

pub mod connect;
pub mod events;
pub mod fetch;
pub mod job;
pub mod lock;
pub mod rollback;
pub mod rollout;
