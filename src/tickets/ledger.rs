//! The idempotency ledger: `{STATE_CONTAINER}/tickets/{surveyId}/{responseId}.json`.
//!
//! One blob per response. A worker claims it with an atomic create-if-absent
//! (`If-None-Match: *`) before touching a ticket system; every later change is an
//! ETag-conditional replace (`If-Match`), so two workers can never both believe they own it.
//! The worker that owns a response also holds a blob lease on its entry, renewed while it
//! works: the lease, not the entry's age, tells a live owner from a crashed one.
//! States: `claimed` → `created` (system, id, number) / `skipped` (rule) / `failed` (reason;
//! `retryable` failures may be claimed again).

use crate::storage::blob_state::{self, BlobError};
use crate::storage::Cause;
use azure_core::http::{Etag, RequestContent, StatusCode};
use azure_storage_blob::models::{BlobClientDownloadOptions, BlockBlobClientUploadOptions};
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Claimed,
    Created,
    Skipped,
    Failed,
}

/// Who holds (or last held) the claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// The queue message id (stable across the host's retries of one message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub dequeue_count: u32,
    pub invocation_id: String,
    /// RFC 3339.
    pub at: String,
}

impl Claim {
    pub fn age_secs(&self) -> Option<i64> {
        let at = OffsetDateTime::parse(&self.at, &Rfc3339).ok()?;
        Some((OffsetDateTime::now_utc() - at).whole_seconds())
    }
}

/// A ticket in its system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRef {
    pub system: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// True when the ticket was found by lookup (created by an earlier attempt).
    #[serde(default)]
    pub found_by_lookup: bool,
}

/// The ledger blob's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub v: u32,
    pub survey_id: String,
    pub response_id: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub claim: Claim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `failed`: whether a later delivery may try again.
    #[serde(default)]
    pub retryable: bool,
    /// How many times a worker claimed this response.
    pub attempts: u32,
    pub updated_at: String,
}

#[derive(Debug, thiserror::Error)]
#[error("ticket ledger {blob}: {reason}")]
pub struct LedgerError {
    pub blob: String,
    pub reason: String,
}

/// The ledger in one container.
pub struct Ledger {
    container: BlobContainerClient,
    name: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("container", &self.name)
            .finish()
    }
}

fn status(e: &azure_core::Error) -> Option<StatusCode> {
    e.http_status()
}

impl Ledger {
    pub fn new(container: BlobContainerClient, name: &str) -> Self {
        Self {
            container,
            name: name.to_string(),
        }
    }

    /// The ledger in the app's state container; `None` (logged) without a blob endpoint.
    pub fn from_deps(deps: &crate::deps::Deps) -> Option<Self> {
        let container = deps.state_container.as_str();
        crate::storage::optional_client(
            deps.storage.as_ref(),
            |s| s.blob_container(container),
            "no blob endpoint: the ticket ledger is unavailable",
        )
        .map(|c| Self::new(c, container))
    }

    pub fn blob_name(survey_id: &str, response_id: &str) -> String {
        format!("tickets/{survey_id}/{response_id}.json")
    }

    /// Every entry's blob with its ETag and `Last-Modified`, no content: readers that follow
    /// the ledger's changes (AnalyticsBuilder's `ticket_link`) then [`Self::get`] the changed
    /// ones.
    pub async fn list(&self) -> Result<Vec<blob_state::Listed>, LedgerError> {
        blob_state::list(&self.container, "tickets/")
            .await
            .map_err(|e| self.err("tickets/", e))
    }

    fn err(&self, blob: &str, e: impl std::fmt::Display) -> LedgerError {
        LedgerError {
            blob: format!("{}/{blob}", self.name),
            reason: e.to_string(),
        }
    }

    /// The entry and its ETag, or `None` when the response was never claimed.
    pub async fn get(&self, blob: &str) -> Result<Option<(Entry, Etag)>, LedgerError> {
        let client = self.container.blob_client(blob);
        let resp = match client
            .download(Some(BlobClientDownloadOptions::default()))
            .await
        {
            Ok(r) => r,
            Err(e) if status(&e) == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(self.err(blob, Cause(&e))),
        };
        let etag = resp
            .properties
            .etag
            .clone()
            .ok_or_else(|| self.err(blob, "download without an ETag"))?;
        let bytes = resp
            .body
            .collect()
            .await
            .map_err(|e| self.err(blob, Cause(&e)))?;
        let entry: Entry = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(blob, format!("not a ledger entry: {e}")))?;
        Ok(Some((entry, etag)))
    }

    /// Creates the blob only if it does not exist. `Ok(None)`: someone else created it first.
    pub async fn create(&self, blob: &str, entry: &Entry) -> Result<Option<Etag>, LedgerError> {
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            ..Default::default()
        }
        .if_not_exists();
        match self.upload(blob, entry, options.clone()).await {
            Err(e) if status(&e) == Some(StatusCode::NotFound) => {
                // The container does not exist yet (a fresh account): create it, then retry.
                if let Err(ce) = self.container.create(None).await {
                    if status(&ce) != Some(StatusCode::Conflict) {
                        return Err(self.err(blob, Cause(&ce)));
                    }
                }
                self.finish(blob, self.upload(blob, entry, options).await)
            }
            other => self.finish(blob, other),
        }
    }

    /// Replaces the blob if its ETag is still `etag` (and, while leased, under `lease`).
    /// `Ok(None)`: it changed meanwhile, or the lease is no longer ours.
    pub async fn replace(
        &self,
        blob: &str,
        entry: &Entry,
        etag: &Etag,
        lease: Option<&str>,
    ) -> Result<Option<Etag>, LedgerError> {
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            if_match: Some(etag.clone()),
            lease_id: lease.map(str::to_owned),
            ..Default::default()
        };
        let result = self.upload(blob, entry, options).await;
        self.finish(blob, result)
    }

    /// Leases the entry for `seconds` (15–60). `Ok(None)`: another worker holds it.
    pub async fn acquire(&self, blob: &str, seconds: i32) -> Result<Option<String>, LedgerError> {
        let id = uuid::Uuid::new_v4().to_string();
        let client = self.container.blob_client(blob);
        match blob_state::acquire_lease(&client, blob, seconds, &id).await {
            Ok(true) => Ok(Some(id)),
            Ok(false) => Ok(None),
            Err(e) => Err(self.err(blob, e)),
        }
    }

    /// Renews our lease. `Err(BlobError::Conflict)`: it is no longer ours.
    pub async fn renew(&self, blob: &str, lease: &str) -> Result<(), BlobError> {
        blob_state::renew_lease(&self.container.blob_client(blob), blob, lease).await
    }

    /// Releases our lease (it also lapses by itself).
    pub async fn release(&self, blob: &str, lease: &str) -> Result<(), LedgerError> {
        blob_state::release_lease(&self.container.blob_client(blob), blob, lease)
            .await
            .map_err(|e| self.err(blob, e))
    }

    async fn upload(
        &self,
        blob: &str,
        entry: &Entry,
        options: BlockBlobClientUploadOptions<'_>,
    ) -> azure_core::Result<Option<Etag>> {
        let body = Bytes::from(serde_json::to_vec_pretty(entry).unwrap_or_default());
        let client = self.container.blob_client(blob);
        let r = client
            .upload(RequestContent::from(body.to_vec()), Some(options))
            .await?;
        Ok(r.etag)
    }

    fn finish(
        &self,
        blob: &str,
        r: azure_core::Result<Option<Etag>>,
    ) -> Result<Option<Etag>, LedgerError> {
        match r {
            Ok(Some(etag)) => Ok(Some(etag)),
            Ok(None) => Err(self.err(blob, "upload without an ETag")),
            Err(e)
                if matches!(
                    status(&e),
                    Some(StatusCode::Conflict) | Some(StatusCode::PreconditionFailed)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err(blob, Cause(&e))),
        }
    }
}
