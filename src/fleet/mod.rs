//! The fleet: what runs where and whether it is healthy. HTTP health checks, the versioned
//! release layout with rollback, and notifications. Engine-side: no UI, no printing.

pub mod health;
pub mod notify;
pub mod releases;
