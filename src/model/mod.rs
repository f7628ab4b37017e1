//! The shared vocabulary: events, steps, outcomes, transfer reports. A leaf: it imports
//! nothing of dropship's, so every layer can speak it without depending on another.

pub mod events;
pub mod transfer;

/// The bundle name a rollback is journaled under (it ships nothing).
pub const ROLLBACK_BUNDLE: &str = "(rollback)";

/// The bundle name an ad-hoc run (`--run`) is journaled under (it ships nothing).
pub const RUN_BUNDLE: &str = "(run)";

/// The bundle name a rule's named action (`--action`) is journaled under.
pub const ACTION_BUNDLE: &str = "(action)";

/// Whether a journaled dispatch of `bundle` shipped one: not a rollback, run or action.
pub fn ships(bundle: &str) -> bool {
    ![ROLLBACK_BUNDLE, RUN_BUNDLE, ACTION_BUNDLE].contains(&bundle)
}
