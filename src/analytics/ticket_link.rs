//! `ticket_link` from the ticket ledger (`tickets/{surveyId}/{responseId}.json`: the ticket
//! the bridge raised, state `open`) and the loop ledger (`loop/{system}/{ticketId}.json`: each
//! state LoopCloser applied). Both are read only through their modules' listing and `get`.
//!
//! Cost follows the changes, not the ledgers: ledger blobs are named by response or ticket,
//! not by time, so no name cursor can find an entry that changed; instead each run lists the
//! two prefixes (names and properties only, one request per 5,000 entries) and reads only the
//! blob versions it has not read, by `Last-Modified` against a watermark. Versions read within
//! [`MARGIN_SECS`] of the watermark are remembered by ETag, so a change in the same second (or
//! stamped a little late by another storage node) is read once, and only once.
//!
//! A row is appended when an entry shows a state (and its start time) other than the last one
//! this table recorded for that entry; an entry rewritten for another reason (a write-back, a
//! follow-up) adds nothing while its last state is remembered ([`MEMORY_SECS`]).

use super::definition::micros;
use super::rows::TicketLinkRow;
use crate::close_loop::ledger::LoopEntry;
use crate::storage::blob_state::Listed;
use crate::tickets::ledger::{Entry, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versions changed this long before the watermark are still looked for (clock skew between
/// storage nodes stamping `Last-Modified`).
pub const MARGIN_SECS: i64 = 300;
/// How long an entry's last recorded state is remembered after its blob last changed.
pub const MEMORY_SECS: i64 = 7 * 86_400;
/// Ledger blob versions per batch (one Parquet file, one commit).
pub const MAX_BATCH: usize = 5_000;

/// One blob version to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub name: String,
    pub etag: String,
    pub modified: i64,
}

impl Version {
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.etag)
    }
}

/// The last state recorded for a ledger blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub state: String,
    pub updated_at: i64,
    /// The blob's `Last-Modified` when seen (seconds).
    pub modified: i64,
}

/// `{STATE_CONTAINER}/analytics/ticket-link.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkCursor {
    pub v: u32,
    /// The newest `Last-Modified` (seconds) read.
    pub watermark: Option<i64>,
    /// `name@etag` → `Last-Modified` of the versions read within the margin of the watermark.
    #[serde(default)]
    pub read: BTreeMap<String, i64>,
    /// The batch being written: exactly these versions are read (one whose ETag moved on is
    /// left to the next listing).
    pub inflight: Option<Vec<Version>>,
    /// Ledger blob → the last state recorded for it.
    #[serde(default)]
    pub recent: BTreeMap<String, Seen>,
    #[serde(default)]
    pub rows: u64,
}

impl LinkCursor {
    /// The listed versions not read yet, oldest change first, at most [`MAX_BATCH`].
    pub fn changed(&self, listed: Vec<Listed>) -> Vec<Version> {
        let floor = self.watermark.map(|w| w - MARGIN_SECS);
        let mut out: Vec<Version> = listed
            .into_iter()
            .map(|l| Version {
                name: l.name,
                etag: l.etag,
                modified: l.modified,
            })
            .filter(|v| floor.is_none_or(|f| v.modified >= f) && !self.read.contains_key(&v.key()))
            .collect();
        out.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
        out.truncate(MAX_BATCH);
        out
    }

    /// Whether `row`, read from `blob` (last modified at `modified`), is a state not recorded
    /// yet for it; records it if so.
    pub fn observe(&mut self, blob: &str, row: &TicketLinkRow, modified: i64) -> bool {
        let seen = Seen {
            state: row.state.clone(),
            updated_at: row.updated_at,
            modified,
        };
        match self.recent.get(blob) {
            Some(s) if s.state == seen.state && s.updated_at == seen.updated_at => {
                self.recent.insert(blob.to_owned(), seen);
                false
            }
            _ => {
                self.recent.insert(blob.to_owned(), seen);
                true
            }
        }
    }

    /// Records `batch` as read and moves the watermark; forgets what fell out of the margin
    /// and the memory.
    pub fn advance(&mut self, batch: &[Version]) {
        for v in batch {
            self.read.insert(v.key(), v.modified);
            self.watermark = Some(self.watermark.map_or(v.modified, |w| w.max(v.modified)));
        }
        if let Some(w) = self.watermark {
            self.read.retain(|_, m| *m >= w - MARGIN_SECS);
            self.recent.retain(|_, s| s.modified >= w - MEMORY_SECS);
        }
    }
}

/// The row a ticket ledger entry gives: its ticket, `open` since the entry recorded it.
pub fn from_ticket_entry(e: &Entry) -> Option<TicketLinkRow> {
    let t = e.ticket.as_ref().filter(|_| e.state == State::Created)?;
    Some(TicketLinkRow {
        survey_id: e.survey_id.clone(),
        response_id: e.response_id.clone(),
        system: t.system.clone(),
        ticket_id: t.id.clone(),
        ticket_number: t.number.clone(),
        state: "open".into(),
        updated_at: micros(&e.updated_at)?,
        source: "ticket_ledger",
    })
}

/// The row a loop ledger entry gives: the newest state applied, since the system changed it.
pub fn from_loop_entry(e: &LoopEntry) -> Option<TicketLinkRow> {
    let a = e.applied.as_ref()?;
    let state = serde_json::to_value(a.state).ok()?.as_str()?.to_owned();
    Some(TicketLinkRow {
        survey_id: e.survey_id.clone(),
        response_id: e.response_id.clone(),
        system: e.system.clone(),
        ticket_id: e.ticket_id.clone(),
        ticket_number: e.ticket_number.clone(),
        state,
        updated_at: micros(&a.changed_at)?,
        source: "loop_ledger",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, etag: &str, modified: i64) -> Listed {
        Listed {
            name: name.into(),
            etag: etag.into(),
            modified,
        }
    }

    fn row(state: &str, at: i64) -> TicketLinkRow {
        TicketLinkRow {
            survey_id: "SV_1".into(),
            response_id: "R_1".into(),
            system: "zendesk".into(),
            ticket_id: "7".into(),
            ticket_number: Some("7".into()),
            state: state.into(),
            updated_at: at,
            source: "loop_ledger",
        }
    }

    #[test]
    fn each_version_is_read_once_even_within_one_second_or_a_little_late() {
        let mut c = LinkCursor::default();
        let first = c.changed(vec![listed("b", "1", 100), listed("a", "1", 100)]);
        assert_eq!(
            first.iter().map(Version::key).collect::<Vec<_>>(),
            ["a@1", "b@1"]
        );
        c.advance(&first);
        assert_eq!(c.watermark, Some(100));
        // Same second, new ETag: read; the old versions: not again.
        let next = c.changed(vec![
            listed("a", "1", 100),
            listed("b", "2", 100),
            listed("c", "1", 100 - MARGIN_SECS + 1),
            listed("d", "1", 100 - MARGIN_SECS - 1),
        ]);
        assert_eq!(
            next.iter().map(Version::key).collect::<Vec<_>>(),
            ["c@1", "b@2"]
        );
        c.advance(&next);
        assert!(c.changed(vec![listed("b", "2", 100)]).is_empty());
        // Far later: the margin's keys are forgotten, the watermark holds.
        c.advance(&[Version {
            name: "e".into(),
            etag: "1".into(),
            modified: 100 + 2 * MARGIN_SECS,
        }]);
        assert_eq!(c.read.len(), 1);
        assert!(c.changed(vec![listed("b", "2", 100)]).is_empty());
    }

    #[test]
    fn a_batch_is_capped_oldest_first() {
        let c = LinkCursor::default();
        let many = (0..MAX_BATCH + 3)
            .map(|i| listed(&format!("x{i:05}"), "1", 1000 - i as i64))
            .collect();
        let b = c.changed(many);
        assert_eq!(b.len(), MAX_BATCH);
        assert_eq!(b[0].modified, 1000 - (MAX_BATCH as i64 + 2));
    }

    #[test]
    fn only_a_new_state_is_a_row() {
        let mut c = LinkCursor::default();
        assert!(c.observe("loop/z/7.json", &row("open", 1), 10));
        assert!(!c.observe("loop/z/7.json", &row("open", 1), 11), "rewrite");
        assert!(c.observe("loop/z/7.json", &row("resolved", 2), 12));
        assert!(c.observe("loop/z/7.json", &row("open", 3), 13), "reopened");
        c.advance(&[Version {
            name: "y".into(),
            etag: "1".into(),
            modified: 13 + MEMORY_SECS + 1,
        }]);
        assert!(c.recent.is_empty(), "forgotten after the memory");
    }
}
