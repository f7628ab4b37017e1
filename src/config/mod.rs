//! The configuration contract: `dispatch.cfg` rules, `.netrc` credentials, placeholders.

pub mod netrc;
pub mod secret;

pub use secret::Secret;
