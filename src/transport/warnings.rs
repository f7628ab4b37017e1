//! Warnings the user must see, raised where no event sink is in reach.
//!
//! A transport has no event sink (it must not know the engine), yet some of what it does
//! the user must hear about at once, not only in the log file: a host key accepted and
//! recorded under `host_key = accept-new` is a trust decision taken on their behalf. Such a
//! warning is traced (the log file) and, while the engine runs the call that raised it
//! inside [`collect`] on the same thread, handed back to the engine, which emits it as a
//! warning notice with its host (the screen, the journal). A target's connect runs on its
//! job's own thread, so the warning lands with the right host. Outside [`collect`] (a probe,
//! a look at a host) only the trace remains.

use std::cell::RefCell;

/// Warnings kept per [`collect`] at most: a bound, not a limit anything reaches (one
/// connect raises one).
const KEPT: usize = 16;

thread_local! {
    static PARKED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Traces `message` as a warning and, inside [`collect`] on this thread, keeps it for the
/// caller.
pub fn raise(message: String) {
    tracing::warn!("{message}");
    PARKED.with(|p| {
        if let Some(kept) = p.borrow_mut().as_mut()
            && kept.len() < KEPT
        {
            kept.push(message);
        }
    });
}

/// Runs `f` and returns what it returned with the warnings it [`raise`]d.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let outer = PARKED.with(|p| p.replace(Some(Vec::new())));
    let out = f();
    let raised = PARKED.with(|p| p.replace(outer)).unwrap_or_default();
    (out, raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_raised_inside_is_collected() {
        raise("before".into());
        let ((), got) = collect(|| {
            raise("one".into());
            let ((), inner) = collect(|| raise("inner".into()));
            assert_eq!(inner, ["inner"]);
            raise("two".into());
        });
        assert_eq!(got, ["one", "two"]);
        let ((), none) = collect(|| ());
        assert!(none.is_empty());
        let handle = std::thread::spawn(|| collect(|| ()).1);
        assert!(handle.join().unwrap().is_empty());
    }
}
