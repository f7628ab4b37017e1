//! The follower: a thread that polls the journal for other processes' dispatches (see
//! [`crate::journal::follow`]) while a front end wants them (the console), and hands each
//! poll that found something to that front end. A poll that found nothing hands over
//! nothing, so an idle front end is never woken by it.

use crate::journal::{Follow, FollowUpdate, Journal};
use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::Duration;

/// How often the journal is polled: the live view's latency is at most this plus the
/// writer's commit delay (output lines are committed at least every
/// [`super::FLUSH_EVERY`]). A poll with nothing new costs one indexed query.
pub const POLL: Duration = Duration::from_millis(250);

/// After a failed poll (the journal's server away), the next waits this long.
const RETRY: Duration = Duration::from_secs(2);

/// A running follower; dropping it stops the thread (at once when it waits; a poll under
/// way ends first, without holding up whoever dropped it).
pub struct Follower {
    _stop: Sender<()>,
}

impl Follower {
    /// Opens a second handle on the journal at `path` (its own connection, so polls never
    /// wait on this process's writer) and polls it every `every`; `deliver` gets each
    /// update that found something and says whether to go on (`false`: its receiver is gone).
    pub fn start(
        path: &Path,
        every: Duration,
        deliver: impl Fn(FollowUpdate) -> bool + Send + 'static,
    ) -> std::io::Result<Follower> {
        let path = path.to_owned();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("dropship-follow".into())
            .spawn(move || {
                // Opened again after a failed poll (the server restarted): the position
                // in `follow` is kept, so nothing is missed or delivered twice.
                let mut journal: Option<Journal> = None;
                let mut follow = Follow::new();
                let mut wait = Duration::ZERO;
                loop {
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    wait = every;
                    if journal.is_none() {
                        match Journal::open(&path) {
                            Ok(j) => journal = Some(j),
                            Err(e) => {
                                tracing::warn!("following other dispatches: {e}");
                                wait = RETRY;
                                continue;
                            }
                        }
                    }
                    let Some(j) = &journal else { continue };
                    match j.follow(&mut follow) {
                        Ok(update) => {
                            if update.more {
                                wait = Duration::ZERO;
                            }
                            if !update.is_empty() && !deliver(update) {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("following other dispatches: {e}");
                            journal = None;
                            wait = RETRY;
                        }
                    }
                }
            })?;
        Ok(Follower { _stop: stop })
    }
}
