//! Definition snapshots in Blob Storage: `{STATE_CONTAINER}/definitions/{surveyId}/{LastModified}.json`,
//! each the API's `result` exactly as fetched, written once (create-if-absent) and never
//! changed, so any past response can be decoded again with the definition valid when it was
//! recorded.

use super::definition::{Definition, DefinitionError, Definitions};
use crate::qualtrics::{CallBudget, QualtricsClient, QualtricsError};
use crate::secrets::SecretsProvider;
use crate::storage::blob_state::{self, BlobError, Condition};
use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use futures::TryStreamExt;

/// Reading or storing snapshots failed. Names the survey and blob, never the content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("definitions of {survey_id}: listing failed: {reason}")]
    List { survey_id: String, reason: String },
    #[error("definition blob {blob}: not JSON: {reason}")]
    NotJson { blob: String, reason: String },
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Qualtrics(#[from] QualtricsError),
}

/// What [`DefinitionStore::refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// A new `LastModified`: stored under this version.
    Stored(String),
    /// This version is already stored (by us or a concurrent run).
    Unchanged(String),
}

/// The snapshots of every survey, in the state container.
pub struct DefinitionStore {
    container: BlobContainerClient,
}

impl std::fmt::Debug for DefinitionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefinitionStore")
            .field("container", &self.container.url().as_str())
            .finish()
    }
}

impl DefinitionStore {
    pub fn new(state_container: BlobContainerClient) -> Self {
        Self {
            container: state_container,
        }
    }

    fn prefix(survey_id: &str) -> String {
        format!("definitions/{survey_id}/")
    }

    /// The blob of one snapshot.
    pub fn blob_name(survey_id: &str, version: &str) -> String {
        format!("{}{version}.json", Self::prefix(survey_id))
    }

    /// Every stored snapshot of `survey_id` (none: an empty set, and the decoder keeps keys
    /// raw as `definition_missing`).
    pub async fn load(&self, survey_id: &str) -> Result<Definitions, StoreError> {
        let list_err = |reason: String| StoreError::List {
            survey_id: survey_id.to_string(),
            reason,
        };
        let opts = BlobContainerClientListBlobsOptions {
            prefix: Some(Self::prefix(survey_id)),
            ..Default::default()
        };
        let mut pages = match self.container.list_blobs(Some(opts)) {
            Ok(p) => p.into_pages(),
            Err(e) => return Err(list_err(crate::storage::Cause(&e).to_string())),
        };
        let mut names = Vec::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| list_err(crate::storage::Cause(&e).to_string()))?
        {
            let m = page
                .into_model()
                .map_err(|e| list_err(crate::storage::Cause(&e).to_string()))?;
            names.extend(m.blob_items.into_iter().filter_map(|b| b.name));
        }
        let mut snapshots = Vec::with_capacity(names.len());
        for name in names {
            let b = self.container.blob_client(&name);
            let Some((body, _)) = blob_state::read(&b, &name).await? else {
                continue; // deleted between listing and reading
            };
            let raw = serde_json::from_slice(&body).map_err(|e| StoreError::NotJson {
                blob: name.clone(),
                reason: e.to_string(),
            })?;
            snapshots.push(Definition::from_raw(survey_id, raw)?);
        }
        Ok(Definitions::new(snapshots))
    }

    /// Fetches the current definition and stores it when its `LastModified` is new.
    pub async fn refresh(
        &self,
        client: &QualtricsClient,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        survey_id: &str,
    ) -> Result<Refreshed, StoreError> {
        let raw = client
            .get_survey_definition(secrets, budget, survey_id)
            .await?;
        let def = Definition::from_raw(survey_id, raw)?;
        let name = Self::blob_name(survey_id, &def.version);
        let b = self.container.blob_client(&name);
        if blob_state::exists(&b, &name).await? {
            return Ok(Refreshed::Unchanged(def.version));
        }
        let body = serde_json::to_vec(&def.raw).map_err(|e| StoreError::NotJson {
            blob: name.clone(),
            reason: e.to_string(),
        })?;
        match blob_state::write(&b, &name, Bytes::from(body), Condition::Absent).await {
            Ok(_) => Ok(Refreshed::Stored(def.version)),
            // Another run stored the same version first: snapshots are immutable, so equal.
            Err(BlobError::Conflict { .. }) => Ok(Refreshed::Unchanged(def.version)),
            Err(e) => Err(e.into()),
        }
    }
}
