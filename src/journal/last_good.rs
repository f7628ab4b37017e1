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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::NewDispatch;
    use crate::model::events::{Event, TargetResult};
    use std::path::PathBuf;

    fn begin(j: &Journal, bundle: &str, rule: &str, hosts: &[&str]) -> i64 {
        j.begin_dispatch(&NewDispatch {
            bundle: bundle.into(),
            bundle_path: PathBuf::from(bundle),
            bundle_sha256: "00".into(),
            bundle_size: 1,
            rule: rule.into(),
            config_path: PathBuf::from("dispatch.cfg"),
            timestamp: format!("stamp-{bundle}"),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            started_at: 1,
        })
        .unwrap()
    }

    fn finish(j: &Journal, id: i64, host: &str, result: TargetResult) {
        j.record(&Event::TargetFinished {
            dispatch: id,
            at: 2,
            host: host.into(),
            result,
            failed_step: None,
            error: None,
            duration_ms: 1,
        })
        .unwrap();
    }

    #[test]
    fn skips_failures_rollbacks_other_rules_and_other_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        assert_eq!(j.last_good("app", &[]).unwrap(), None);
        let one = begin(&j, "app-1.tgz", "app", &["a", "b"]);
        finish(&j, one, "a", TargetResult::Succeeded);
        finish(&j, one, "b", TargetResult::Succeeded);
        let two = begin(&j, "app-2.tgz", "app", &["a", "b"]);
        finish(&j, two, "a", TargetResult::Succeeded);
        finish(&j, two, "b", TargetResult::Failed);
        let three = begin(&j, "app-3.tgz", "app", &["a", "b"]);
        finish(&j, three, "a", TargetResult::Failed);
        finish(&j, three, "b", TargetResult::Cancelled);
        let rb = begin(&j, ROLLBACK_BUNDLE, "app", &["a"]);
        finish(&j, rb, "a", TargetResult::Succeeded);
        let other = begin(&j, "web-9.tgz", "web", &["a"]);
        finish(&j, other, "a", TargetResult::Succeeded);

        let got = j.last_good("app", &[]).unwrap().unwrap();
        assert_eq!((got.dispatch, got.bundle.as_str()), (two, "app-2.tgz"));
        assert_eq!(got.stamp, "stamp-app-2.tgz");
        let b = j.last_good("app", &["b".into()]).unwrap().unwrap();
        assert_eq!(b.bundle, "app-1.tgz");
        let ab = j
            .last_good("app", &["b".into(), "a".into()])
            .unwrap()
            .unwrap();
        assert_eq!(ab.bundle, "app-2.tgz");
        assert_eq!(j.last_good("app", &["c".into()]).unwrap(), None);
        assert_eq!(j.last_good("nope", &[]).unwrap(), None);
        // A name with quotes or JSON syntax is a value, not part of the query.
        assert_eq!(j.last_good("app", &["a\"]".into()]).unwrap(), None);
    }
}
