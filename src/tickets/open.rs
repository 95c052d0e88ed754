//! The open-ticket index: `{STATE_CONTAINER}/open-tickets/{system}/{ticketId}.json`, one blob
//! per ticket the bridge created and still believes open, so that `TicketSync` costs what the
//! open tickets cost, not what every ticket ever raised costs.
//!
//! `TicketCreator` writes an entry (create-if-absent) when it has a ticket and before its ledger
//! records `created`; a failed write is a transient failure of that attempt, whose retry finds
//! the ticket by lookup (never a second ticket) and writes the entry again. `TicketSync` pages
//! through a system's entries, keeps its per-ticket `lastSynced` with ETag-conditional
//! replaces, and removes an entry once its ticket is terminal. Tickets created before the index
//! existed have no entry and are not synced (docs/close-loop.md).

use crate::messages::TicketState;
use crate::storage::blob_state::{self, BlobError, Condition};
use azure_core::http::{Etag, StatusCode};
use azure_storage_blob::models::{BlobClientDeleteOptions, BlobContainerClientListBlobsOptions};
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "open-tickets";

/// What `TicketSync` last queued for a ticket: an unchanged observation is not queued again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Synced {
    pub state: TicketState,
    /// The system's change time (RFC 3339) of the state queued.
    pub changed_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// RFC 3339: when it was queued.
    pub at: String,
}

/// One index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenTicket {
    pub survey_id: String,
    pub response_id: String,
    /// Zendesk: the id; ServiceNow: `INC…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced: Option<Synced>,
    /// Consecutive sync runs in which the system did not return the ticket.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_runs: u32,
}

/// A ticket's state as its system reported it on a read (`show_many`, `sys_idIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Zendesk id / ServiceNow `sys_id`.
    pub id: String,
    pub number: Option<String>,
    /// As reported, lower-cased (`solved`, ServiceNow's `6`).
    pub status: String,
    pub state: TicketState,
    pub close_code: Option<String>,
    /// RFC 3339 (UTC).
    pub changed_at: String,
    /// ServiceNow `sys_mod_count`.
    pub sequence: Option<u64>,
    /// Zendesk `external_id` / ServiceNow `correlation_id`.
    pub correlation: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An entry as read, with what a conditional update needs.
#[derive(Debug, Clone)]
pub struct Listed {
    pub ticket_id: String,
    pub entry: OpenTicket,
    pub etag: Etag,
}

/// One page of a system's entries.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Listed>,
    /// Entries whose blob could not be parsed (named, never echoed): left in place.
    pub unreadable: Vec<String>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

/// The index in the state container.
pub struct OpenIndex {
    container: BlobContainerClient,
}

impl std::fmt::Debug for OpenIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenIndex")
            .field("container", &self.container.url().as_str())
            .finish()
    }
}

impl OpenIndex {
    pub fn new(container: BlobContainerClient) -> Self {
        Self { container }
    }

    pub fn blob_name(system: &str, ticket_id: &str) -> String {
        format!("{PREFIX}/{system}/{ticket_id}.json")
    }

    /// Records a ticket unless it already has an entry (a retry keeps the existing one and its
    /// `lastSynced`). Creates the container on a fresh account.
    pub async fn record(
        &self,
        system: &str,
        ticket_id: &str,
        entry: &OpenTicket,
    ) -> Result<(), BlobError> {
        let name = Self::blob_name(system, ticket_id);
        let b = self.container.blob_client(&name);
        let body = Bytes::from(serde_json::to_vec(entry).unwrap_or_default());
        let first = blob_state::write(&b, &name, body.clone(), Condition::Absent).await;
        let r = match first {
            Err(BlobError::Other { .. }) if !self.container_exists().await => {
                blob_state::ensure_container(&self.container).await?;
                blob_state::write(&b, &name, body, Condition::Absent).await
            }
            other => other,
        };
        match r {
            Ok(_) | Err(BlobError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn container_exists(&self) -> bool {
        self.container.exists().await.unwrap_or(true)
    }

    /// One ticket's entry; `None` when the index does not have it (never had, or it was
    /// terminal and left).
    pub async fn get(
        &self,
        system: &str,
        ticket_id: &str,
    ) -> Result<Option<OpenTicket>, BlobError> {
        let name = Self::blob_name(system, ticket_id);
        match blob_state::read(&self.container.blob_client(&name), &name).await? {
            None => Ok(None),
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| BlobError::Other {
                        op: "read",
                        blob: name,
                        reason: format!("not an open-ticket entry: {e}"),
                    })
            }
        }
    }

    /// Up to `max` entries of `system`, from `marker` (a previous page's `next`). A missing
    /// container is an empty index.
    pub async fn page(
        &self,
        system: &str,
        marker: Option<&str>,
        max: usize,
    ) -> Result<Page, BlobError> {
        let prefix = format!("{PREFIX}/{system}/");
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.clone()),
            marker: marker.map(str::to_owned),
            maxresults: Some(max.clamp(1, 5000) as i32),
            ..Default::default()
        };
        let other = |e: &dyn std::fmt::Display| BlobError::Other {
            op: "list",
            blob: prefix.clone(),
            reason: e.to_string(),
        };
        let mut pages = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| other(&crate::storage::Cause(&e)))?
            .into_pages();
        let first = match pages.try_next().await {
            Ok(p) => p,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(Page::default()),
            Err(e) => return Err(other(&crate::storage::Cause(&e))),
        };
        let Some(first) = first else {
            return Ok(Page::default());
        };
        let model = first.into_model().map_err(|e| other(&e))?;
        let mut page = Page {
            next: model.next_marker.filter(|m| !m.is_empty()),
            ..Default::default()
        };
        // Reads are independent: a handful at a time keeps a page's latency near one read.
        let names: Vec<String> = model
            .blob_items
            .into_iter()
            .filter_map(|b| b.name)
            .collect();
        let reads = futures::stream::iter(names.into_iter().map(|name| async move {
            let r = blob_state::read(&self.container.blob_client(&name), &name).await;
            (name, r)
        }))
        .buffered(16)
        .collect::<Vec<_>>()
        .await;
        for (name, r) in reads {
            let Some((bytes, etag)) = r? else {
                continue; // removed since the listing
            };
            let id = name
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".json"))
                .unwrap_or_default()
                .to_string();
            match serde_json::from_slice::<OpenTicket>(&bytes) {
                Ok(entry) if !id.is_empty() => page.entries.push(Listed {
                    ticket_id: id,
                    entry,
                    etag,
                }),
                _ => page.unreadable.push(name),
            }
        }
        Ok(page)
    }

    /// Replaces an entry if it is unchanged since it was read. `Ok(false)`: it changed.
    pub async fn update(
        &self,
        system: &str,
        listed: &Listed,
        entry: &OpenTicket,
    ) -> Result<bool, BlobError> {
        let name = Self::blob_name(system, &listed.ticket_id);
        let body = Bytes::from(serde_json::to_vec(entry).unwrap_or_default());
        match blob_state::write(
            &self.container.blob_client(&name),
            &name,
            body,
            Condition::Matches(&listed.etag, None),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(BlobError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes an entry (if unchanged since it was read, when `etag` is given). An entry
    /// already gone counts as removed; `Ok(false)`: it changed meanwhile.
    pub async fn remove(
        &self,
        system: &str,
        ticket_id: &str,
        etag: Option<&Etag>,
    ) -> Result<bool, BlobError> {
        let name = Self::blob_name(system, ticket_id);
        let options = BlobClientDeleteOptions {
            if_match: etag.cloned(),
            ..Default::default()
        };
        match self
            .container
            .blob_client(&name)
            .delete(Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::PreconditionFailed) => Ok(false),
            Err(e) => Err(BlobError::Other {
                op: "delete",
                blob: name,
                reason: crate::storage::Cause(&e).to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_the_documented_field_names() {
        let e = OpenTicket {
            survey_id: "SV_1".into(),
            response_id: "R_2".into(),
            number: Some("INC0010001".into()),
            created_at: "2026-12-01T00:00:00Z".into(),
            last_synced: None,
            missing_runs: 0,
        };
        assert_eq!(
            serde_json::to_string(&e).expect("serialises"),
            r#"{"surveyId":"SV_1","responseId":"R_2","number":"INC0010001","createdAt":"2026-12-01T00:00:00Z"}"#
        );
        assert_eq!(
            OpenIndex::blob_name("zendesk", "35436"),
            "open-tickets/zendesk/35436.json"
        );
    }
}
