//! The fleet: what runs where. Probes of hosts before anything is shipped, the installed
//! versions and their drift, for `--probe`, `--status` and the console's Hosts screen.
//! Engine side: blocking functions that report through return values and callbacks, never
//! printing.

pub mod probe;
pub mod programs;
pub mod target;
pub mod version;
