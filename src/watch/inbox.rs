//! What the drop folder's loop waits for: file events from the backend ([`super::fs`]),
//! and the service's own messages. Its own module so the backend and the loop both speak it
//! without importing each other.

/// Messages the loop waits for. File events may be dropped when the channel is full (see
/// [`super::fs`]); everything else is sent blocking.
pub enum Msg {
    Fs(notify::Event),
    /// Something to look at (e.g. events were lost: the flag says so).
    Wake,
    Finished {
        bundle: i64,
        dispatch: i64,
    },
    Paused(bool),
    Stop,
}
