//! Read-only inspection of the fleet: probes of hosts before anything is shipped, installed
//! versions and their drift (`--probe`, `--status`, the console's Hosts screen), the
//! programs commands call. It sits beside the engine and uses its connection switch; the
//! steps of a dispatch (release layout, health checks, notifications) live in
//! [`crate::engine`] and are re-exported here under their old names. Blocking functions that
//! report through return values and callbacks, never printing.

pub use crate::engine::{health, notify, releases};
pub mod converge;
pub mod pool;
pub mod probe;
pub mod programs;
pub mod target;
pub mod version;
