//! The fleet: what runs where and whether it is healthy. Probes of hosts before anything is
//! shipped, installed versions and their drift (`--probe`, `--status`, the console's Hosts
//! screen), HTTP health checks, the versioned release layout with rollback, and
//! notifications. Engine side: blocking functions that report through return values,
//! callbacks and events, never printing.

pub mod health;
pub mod notify;
pub mod probe;
pub mod programs;
pub mod releases;
pub mod target;
pub mod version;
