//! The loop ledger: `{STATE_CONTAINER}/loop/{system}/{ticketId}.json`, one blob per ticket,
//! created with `If-None-Match: *` and replaced with `If-Match`, so two workers never both
//! apply a change or claim a follow-up.

use crate::messages::{order_key, TicketState};
use crate::storage::blob_state::{self, BlobError};
use azure_core::http::Etag;
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The newest state applied to the ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub state: TicketState,
    /// As the system reported it (`solved`, `6`).
    pub status: String,
    pub changed_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// An `open` that followed a `resolved`/`closed`.
    #[serde(default)]
    pub reopened: bool,
}

impl Applied {
    pub fn key(&self) -> (i128, u64) {
        order_key(&self.changed_at, self.sequence)
    }
}

/// The last write-back that Qualtrics acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteBack {
    /// The `changedAt` / `sequence` of the state written.
    pub changed_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The `TicketState` value written.
    pub state: String,
    /// When it was written (RFC 3339).
    pub at: String,
}

impl WriteBack {
    pub fn key(&self) -> (i128, u64) {
        order_key(&self.changed_at, self.sequence)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowUpStatus {
    #[default]
    None,
    /// About to send (or sending): a delivery that finds this never sends again.
    Claimed,
    Sent,
    /// Not sent, by rule; a newer resolution decides again.
    Skipped,
    /// The send may or may not have happened; never retried (docs/loop-closer.md).
    Ambiguous,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpRecord {
    pub status: FollowUpStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_id: Option<String>,
    /// The mailing-list membership (`CGC_…`) it went to; never the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_lookup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `changedAt` of the state the decision was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_changed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_sequence: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    Claimed,
    Sent,
    Ambiguous,
}

/// One JSON Event, at most one per ticket and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonEventRecord {
    pub state: TicketState,
    pub status: EventStatus,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The ledger blob's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoopEntry {
    pub v: u32,
    pub system: String,
    pub ticket_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    pub survey_id: String,
    pub response_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// The `changedAt` of the latest `resolved`/`closed` applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// The `changedAt` of the latest reopening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBack>,
    #[serde(default)]
    pub follow_up: FollowUpRecord,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_events: Vec<JsonEventRecord>,
    /// Changes ignored because a newer (or the same) one was already applied.
    #[serde(default)]
    pub ignored: u32,
    pub updated_at: String,
}

#[derive(Debug, thiserror::Error)]
#[error("loop ledger: {0}")]
pub struct LedgerError(String);

impl From<BlobError> for LedgerError {
    fn from(e: BlobError) -> Self {
        Self(e.to_string())
    }
}

/// Where an entry came from: its ETag, or `None` for one not stored yet.
pub type Version = Option<Etag>;

/// The ledger in the state container.
pub struct LoopLedger {
    container: BlobContainerClient,
}

impl std::fmt::Debug for LoopLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopLedger")
    }
}

impl LoopLedger {
    pub fn new(container: BlobContainerClient) -> Self {
        Self { container }
    }

    pub fn blob_name(system: &str, ticket_id: &str) -> String {
        format!("loop/{system}/{ticket_id}.json")
    }

    /// Every entry's blob with its ETag and `Last-Modified`, no content: readers that follow
    /// the ledger's changes (AnalyticsBuilder's `ticket_link`) then [`Self::get`] the changed
    /// ones.
    pub async fn list(&self) -> Result<Vec<blob_state::Listed>, LedgerError> {
        Ok(blob_state::list(&self.container, "loop/").await?)
    }

    /// The entry and its ETag; `None` when the ticket has none yet.
    pub async fn get(&self, blob: &str) -> Result<Option<(LoopEntry, Etag)>, LedgerError> {
        let client = self.container.blob_client(blob);
        match blob_state::read(&client, blob).await? {
            None => Ok(None),
            Some((bytes, etag)) => {
                let e = serde_json::from_slice(&bytes)
                    .map_err(|e| LedgerError(format!("{blob}: not a loop entry: {e}")))?;
                Ok(Some((e, etag)))
            }
        }
    }

    /// Stores `entry` if the blob is still at `version`; `Ok(None)` when another worker
    /// changed it first (read again and decide again).
    pub async fn put(
        &self,
        blob: &str,
        entry: &LoopEntry,
        version: &Version,
    ) -> Result<Option<Etag>, LedgerError> {
        let bytes = Bytes::from(serde_json::to_vec(entry).map_err(|e| LedgerError(e.to_string()))?);
        Ok(blob_state::put_versioned(&self.container, blob, bytes, version.as_ref()).await?)
    }
}
