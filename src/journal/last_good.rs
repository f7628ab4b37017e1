//! The last dispatch of a rule that went well: where a rollback takes its placeholders from.
//!
//! A rollback renders the rule's commands from a bundle name, and the right one is the last
//! bundle that actually reached a host of the rule. Not a failed one (it was put back
//! already), not a cancelled one that never got anywhere, not a `(rollback)` record (it
//! ships nothing). One indexed query for the one row, and no commit of this handle's
//! buffered output first (unlike `Journal::read`): the console asks this on its UI thread
//! when the rollback dialog opens, and dispatch records are committed when they happen.

use super::db::ToValue;
use super::error::Context;
use super::{Journal, JournalError};
use crate::model::ROLLBACK_BUNDLE;
use serde::{Deserialize, Serialize};

/// A dispatch that succeeded on at least one host asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGood {
    pub dispatch: i64,
    pub bundle: String,
    /// The `{timestamp}` it was shipped with (`Stamp::parse` reads it).
    pub stamp: String,
}

impl Journal {
    /// The newest dispatch of `rule` (rollbacks left out) that succeeded on one of `hosts`
    /// at least, or on any host when `hosts` is empty. Read only.
    pub fn last_good(
        &self,
        rule: &str,
        hosts: &[String],
    ) -> Result<Option<LastGood>, JournalError> {
        let op = "reading the last good dispatch of a rule";
        // `?3 = 1` (any host) or the hosts as `?4, ?5, …`: the same text on both backends,
        // each name a bound value.
        let placeholders: Vec<String> = (0..hosts.len()).map(|i| format!("?{}", i + 4)).collect();
        let in_hosts = if hosts.is_empty() {
            String::new()
        } else {
            format!(" OR t.host IN ({})", placeholders.join(", "))
        };
        let sql = format!(
            "SELECT d.id, d.bundle, d.stamp FROM dispatch d
             WHERE d.rule = ?1 AND d.bundle <> ?2 AND d.kind = 'dispatch'
               AND EXISTS (SELECT 1 FROM target t
                           WHERE t.dispatch = d.id AND t.result = 'succeeded'
                             AND (?3 = 1{in_hosts}))
             ORDER BY d.id DESC LIMIT 1"
        );
        let any = hosts.is_empty();
        let mut values: Vec<&dyn ToValue> = vec![&rule, &ROLLBACK_BUNDLE, &any];
        values.extend(hosts.iter().map(|h| h as &dyn ToValue));
        let mut store = self.lock();
        let tx = store.read_tx()?;
        tx.query_row(&sql, &values, |r| {
            Ok(LastGood {
                dispatch: r.get(0)?,
                bundle: r.get(1)?,
                stamp: r.get(2)?,
            })
        })
        .ctx(&self.path, op)
    }
}
