//! One Delta table's `_delta_log/` in Blob Storage: versions are created only if absent
//! (`If-None-Match: *`), so two writers can never both write version `v`; the loser gets
//! [`LogError::VersionTaken`] and retries at the next version (`commit`). Also the table's data
//! files (uploaded before the commit that names them) and its checkpoints.
//!
//! The latest version is found from `_last_checkpoint` by reading commits forward until one is
//! absent: versions are only ever created as "latest + 1", so the log has no holes.

use crate::storage::blob_state::{self, BlobError, Condition};
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another writer created this version first.
    #[error("version {0} already exists")]
    VersionTaken(u64),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("{blob}: {reason}")]
    Corrupt { blob: String, reason: String },
}

/// `_delta_log/_last_checkpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheckpoint {
    pub version: u64,
    /// Actions in the checkpoint.
    pub size: u64,
}

/// The log of the table at `{container}/{table}/`.
#[derive(Clone)]
pub struct Log {
    container: Arc<BlobContainerClient>,
    table: String,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("container", &self.container.url().as_str())
            .field("table", &self.table)
            .finish()
    }
}

impl Log {
    pub fn new(container: Arc<BlobContainerClient>, table: &str) -> Self {
        Self {
            container,
            table: table.to_owned(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn commit_name(&self, v: u64) -> String {
        format!("{}/_delta_log/{v:020}.json", self.table)
    }

    fn checkpoint_name(&self, v: u64) -> String {
        format!("{}/_delta_log/{v:020}.checkpoint.parquet", self.table)
    }

    fn last_checkpoint_name(&self) -> String {
        format!("{}/_delta_log/_last_checkpoint", self.table)
    }

    async fn read(&self, name: &str) -> Result<Option<Bytes>, LogError> {
        let b = self.container.blob_client(name);
        Ok(blob_state::read(&b, name).await?.map(|(bytes, _)| bytes))
    }

    /// Commit `v`'s JSON lines, `None` if it does not exist.
    pub async fn read_version(&self, v: u64) -> Result<Option<Bytes>, LogError> {
        self.read(&self.commit_name(v)).await
    }

    /// Creates commit `v`; [`LogError::VersionTaken`] if it exists.
    pub async fn write_version(&self, v: u64, actions: Bytes) -> Result<(), LogError> {
        let name = self.commit_name(v);
        let b = self.container.blob_client(&name);
        match blob_state::write(&b, &name, actions, Condition::Absent).await {
            Ok(_) => Ok(()),
            Err(BlobError::Conflict { .. }) => Err(LogError::VersionTaken(v)),
            Err(e) => Err(e.into()),
        }
    }

    /// `_last_checkpoint`, if any (an unreadable one is treated as absent: it is only a hint).
    pub async fn last_checkpoint(&self) -> Result<Option<LastCheckpoint>, LogError> {
        Ok(self
            .read(&self.last_checkpoint_name())
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    pub async fn read_checkpoint(&self, v: u64) -> Result<Bytes, LogError> {
        let name = self.checkpoint_name(v);
        self.read(&name).await?.ok_or(LogError::Corrupt {
            blob: name,
            reason: "_last_checkpoint names a checkpoint that does not exist".into(),
        })
    }

    /// Writes checkpoint `v` (a rewrite carries the same state) and then points
    /// `_last_checkpoint` at it unless it already names a newer one.
    pub async fn write_checkpoint(
        &self,
        v: u64,
        parquet: Bytes,
        size: u64,
    ) -> Result<(), LogError> {
        let name = self.checkpoint_name(v);
        let b = self.container.blob_client(&name);
        match blob_state::write_typed(
            &b,
            &name,
            parquet,
            "application/octet-stream",
            Condition::Absent,
        )
        .await
        {
            Ok(_) | Err(BlobError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let last = self.last_checkpoint_name();
        let lb = self.container.blob_client(&last);
        let body = Bytes::from(
            serde_json::to_vec(&LastCheckpoint { version: v, size }).unwrap_or_default(),
        );
        let current = blob_state::read(&lb, &last).await?;
        let cond = match &current {
            Some((bytes, _))
                if serde_json::from_slice::<LastCheckpoint>(bytes)
                    .is_ok_and(|c| c.version >= v) =>
            {
                return Ok(())
            }
            Some((_, etag)) => Condition::Matches(etag, None),
            None => Condition::Absent,
        };
        match blob_state::write(&lb, &last, body, cond).await {
            // Another writer moved it meanwhile: theirs is at least as new.
            Ok(_) | Err(BlobError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads a data file next to the log. Its name is content-addressed, so an existing blob
    /// of that name already holds these bytes (a retried batch): it is left as it is.
    pub async fn write_data_file(&self, path: &str, bytes: Bytes) -> Result<(), LogError> {
        let name = format!("{}/{path}", self.table);
        let b = self.container.blob_client(&name);
        match blob_state::write_typed(
            &b,
            &name,
            bytes,
            "application/vnd.apache.parquet",
            Condition::Absent,
        )
        .await
        {
            Ok(_) | Err(BlobError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
