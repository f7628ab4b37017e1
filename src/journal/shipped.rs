//! What was last shipped to each host *per rule*: `--status` compares it with the version a
//! host reports. (`last_results` keys by host alone, and one host may serve several rules.)

use super::db::params;
use super::error::Context;
use super::{Journal, JournalError};
use crate::model::ROLLBACK_BUNDLE;
use crate::model::events::Millis;
use serde::{Deserialize, Serialize};

/// The last dispatch of `rule` that succeeded on `host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleShipped {
    pub rule: String,
    pub host: String,
    pub dispatch: i64,
    pub bundle: String,
    pub finished_at: Option<Millis>,
}

impl Journal {
    /// Per (rule, host), the latest target that succeeded, sorted by rule and host. Read only.
    pub fn last_shipped_per_rule(&self) -> Result<Vec<RuleShipped>, JournalError> {
        self.read(|conn, path| {
            let op = "reading the last shipped bundle per rule and host";
            let rows = conn
                .query(
                    "SELECT rule, host, dispatch, bundle, finished_at FROM (
                         SELECT d.rule, t.host, t.dispatch, d.bundle, t.finished_at,
                                row_number() OVER (PARTITION BY d.rule, t.host
                                                   ORDER BY t.finished_at DESC NULLS LAST, t.dispatch DESC) AS n
                         FROM target t JOIN dispatch d ON d.id = t.dispatch
                         WHERE t.result = 'succeeded' AND d.bundle <> ?1 AND d.kind = 'dispatch') AS latest
                     WHERE n = 1
                     ORDER BY rule, host",
                    // A rollback ships nothing: a host rolled back shows as behind what was
                    // shipped.
                    params![ROLLBACK_BUNDLE],
                )
                .ctx(path, op)?;
            rows.iter()
                .map(|r| {
                    Ok(RuleShipped {
                        rule: r.get(0)?,
                        host: r.get(1)?,
                        dispatch: r.get(2)?,
                        bundle: r.get(3)?,
                        finished_at: r.get(4)?,
                    })
                })
                .collect::<super::db::DbResult<Vec<_>>>()
                .ctx(path, op)
        })
    }
}
