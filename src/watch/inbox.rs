//! What the drop folder's loop waits for: file events from the backend ([`super::fs`]),
//! and the service's own messages. Its own module so the backend and the loop both speak it
//! without importing each other.

/// Messages the loop waits for. File events may be dropped when the channel is full (see
/// [`super::fs`]); nothing else is ever sent blocking: pause, resume and stop are flags
/// ([`super::WatchHandle`]) and a finished dispatch goes on [`Ctl`], each followed by a
/// `Wake` offered with `try_send`. So neither the console nor a dispatch task can wait on
/// the loop while the loop waits on them.
pub enum Msg {
    Fs(notify::Event),
    /// Something to look at (e.g. events were lost: the flag says so).
    Wake,
}

/// What the loop must never miss, on a channel without a bound (at most one message per
/// dispatch the loop started, so it stays small): a dispatch task ends without waiting on a
/// busy loop, and a `Wake` offered to [`Msg`] (dropped when that channel is full: a full
/// channel wakes the loop anyway) makes the loop look.
pub enum Ctl {
    Finished { bundle: i64, dispatch: i64 },
}
