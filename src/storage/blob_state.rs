//! Blob operations beyond handing out clients, shared by every capability that keeps state
//! in Blob Storage (export state, ticket ledger): conditional reads/writes by ETag with one
//! 409/412 classification, leases, and block staging/commit of export blobs. Built only on
//! `azure_storage_blob` 1.1.0 clients obtained from [`crate::storage::Storage`].

use azure_core::http::{Etag, RequestContent, StatusCode};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders, BlobClientDownloadOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::{BlobClient, BlobContainerClient};
use bytes::Bytes;
use std::collections::HashMap;
use std::num::NonZero;

/// A blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The ETag/lease condition failed or the blob exists: someone else changed it.
    #[error("blob {blob}: {op}: condition not met ({status})")]
    Conflict {
        op: &'static str,
        blob: String,
        status: u16,
    },
    #[error("blob {blob}: {op}: {reason}")]
    Other {
        op: &'static str,
        blob: String,
        reason: String,
    },
}

fn classify(op: &'static str, blob: &str, e: azure_core::Error) -> BlobError {
    match e.http_status() {
        Some(s @ (StatusCode::Conflict | StatusCode::PreconditionFailed)) => BlobError::Conflict {
            op,
            blob: blob.to_string(),
            status: u16::from(s),
        },
        _ => BlobError::Other {
            op,
            blob: blob.to_string(),
            reason: crate::storage::Cause(&e).to_string(),
        },
    }
}

fn is_not_found(e: &azure_core::Error) -> bool {
    e.http_status() == Some(StatusCode::NotFound)
}

/// Creates the container if it does not exist.
pub async fn ensure_container(c: &BlobContainerClient) -> Result<(), BlobError> {
    match c.create(None).await {
        Ok(_) => Ok(()),
        Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
        Err(e) => Err(classify("create container", c.url().as_str(), e)),
    }
}

/// A small blob's content and ETag; `None` when it does not exist.
pub async fn read(b: &BlobClient, name: &str) -> Result<Option<(Bytes, Etag)>, BlobError> {
    let opts = BlobClientDownloadOptions {
        parallel: NonZero::new(1),
        ..Default::default()
    };
    let r = match b.download(Some(opts)).await {
        Ok(r) => r,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(classify("read", name, e)),
    };
    let etag = r.properties.etag.clone().ok_or_else(|| BlobError::Other {
        op: "read",
        blob: name.into(),
        reason: "no ETag".into(),
    })?;
    let body = r
        .body
        .collect()
        .await
        .map_err(|e| classify("read body", name, e))?;
    Ok(Some((body, etag)))
}

/// Every blob name under `prefix`, all pages; a missing container has none.
pub async fn names(c: &BlobContainerClient, prefix: &str) -> Result<Vec<String>, BlobError> {
    Ok(list(c, prefix).await?.into_iter().map(|l| l.name).collect())
}

/// Which write condition applies.
pub enum Condition<'a> {
    /// Only if the blob does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the blob still has this ETag (and, when given, under this lease).
    Matches(&'a Etag, Option<&'a str>),
}

/// Writes a small JSON blob under a condition; returns the new ETag.
pub async fn write(
    b: &BlobClient,
    name: &str,
    content: Bytes,
    cond: Condition<'_>,
) -> Result<Etag, BlobError> {
    write_typed(b, name, content, "application/json", cond).await
}

/// [`write`] with another content type (one upload: up to the service's single-put limit).
pub async fn write_typed(
    b: &BlobClient,
    name: &str,
    content: Bytes,
    content_type: &str,
    cond: Condition<'_>,
) -> Result<Etag, BlobError> {
    let mut opts = BlockBlobClientUploadOptions {
        blob_content_type: Some(content_type.into()),
        ..Default::default()
    };
    match cond {
        Condition::Absent => opts.if_none_match = Some(Etag::from("*")),
        Condition::Matches(etag, lease) => {
            opts.if_match = Some(etag.clone());
            opts.lease_id = lease.map(str::to_owned);
        }
    }
    let r = b
        .block_blob_client()
        .upload(content.into(), Some(opts))
        .await
        .map_err(|e| classify("write", name, e))?;
    r.etag.ok_or_else(|| BlobError::Other {
        op: "write",
        blob: name.into(),
        reason: "no ETag".into(),
    })
}

/// Writes a state blob only if it is still at `version` (`None`: only if absent), creating the
/// container on a fresh account's first write; `Ok(None)` when another writer was first (read
/// again and decide again).
pub async fn put_versioned(
    container: &BlobContainerClient,
    name: &str,
    content: Bytes,
    version: Option<&Etag>,
) -> Result<Option<Etag>, BlobError> {
    let client = container.blob_client(name);
    let cond = || match version {
        None => Condition::Absent,
        Some(etag) => Condition::Matches(etag, None),
    };
    let mut r = write(&client, name, content.clone(), cond()).await;
    if version.is_none() && matches!(r, Err(BlobError::Other { .. })) {
        ensure_container(container).await?;
        r = write(&client, name, content, cond()).await;
    }
    match r {
        Ok(etag) => Ok(Some(etag)),
        Err(BlobError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Acquires a lease of `seconds` (15–60) with our proposed id; `Ok(false)` when another
/// holder has it.
pub async fn acquire_lease(
    b: &BlobClient,
    name: &str,
    seconds: i32,
    lease_id: &str,
) -> Result<bool, BlobError> {
    let opts = BlobClientAcquireLeaseOptions {
        proposed_lease_id: Some(lease_id.to_string()),
        ..Default::default()
    };
    match b.acquire_lease(seconds, Some(opts)).await {
        Ok(r) => {
            let got = r.lease_id().ok().flatten();
            Ok(got.as_deref().is_none_or(|g| g == lease_id))
        }
        Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
        Err(e) => Err(classify("acquire lease", name, e)),
    }
}

pub async fn renew_lease(b: &BlobClient, name: &str, lease_id: &str) -> Result<(), BlobError> {
    b.renew_lease(lease_id.to_string(), None)
        .await
        .map(|_| ())
        .map_err(|e| classify("renew lease", name, e))
}

pub async fn release_lease(b: &BlobClient, name: &str, lease_id: &str) -> Result<(), BlobError> {
    b.release_lease(lease_id.to_string(), None)
        .await
        .map(|_| ())
        .map_err(|e| classify("release lease", name, e))
}

pub async fn exists(b: &BlobClient, name: &str) -> Result<bool, BlobError> {
    b.exists().await.map_err(|e| classify("exists", name, e))
}

/// Block ids are fixed-width so every id of a blob has the same length.
pub fn block_id(index: u32) -> Vec<u8> {
    format!("blk-{index:08}").into_bytes()
}

pub async fn stage_block(
    b: &BlobClient,
    name: &str,
    index: u32,
    data: Bytes,
) -> Result<(), BlobError> {
    let len = data.len() as u64;
    b.block_blob_client()
        .stage_block(&block_id(index), len, data.into(), None)
        .await
        .map(|_| ())
        .map_err(|e| classify("stage block", name, e))
}

/// Commits blocks `0..count` as the blob's content, only if the blob does not exist yet.
pub async fn commit_new(
    b: &BlobClient,
    name: &str,
    count: u32,
    metadata: HashMap<String, String>,
) -> Result<(), BlobError> {
    let list = BlockLookupList {
        latest: Some((0..count).map(block_id).collect()),
        ..Default::default()
    };
    let content = RequestContent::try_from(list).map_err(|e| classify("commit", name, e))?;
    let opts = BlockBlobClientCommitBlockListOptions {
        if_none_match: Some(Etag::from("*")),
        blob_content_type: Some("application/x-ndjson".into()),
        metadata: Some(metadata),
        ..Default::default()
    };
    b.block_blob_client()
        .commit_block_list(content, Some(opts))
        .await
        .map(|_| ())
        .map_err(|e| classify("commit", name, e))
}

/// A blob as a listing describes it: what a change cursor compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub etag: String,
    /// `Last-Modified` in whole seconds since the epoch (the service's resolution).
    pub modified: i64,
}

/// Every blob under `prefix` with its ETag and `Last-Modified`: names and properties only, one
/// request per 5,000 blobs, no content. A missing container lists nothing.
pub async fn list(c: &BlobContainerClient, prefix: &str) -> Result<Vec<Listed>, BlobError> {
    use futures::TryStreamExt;
    let opts = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        prefix: Some(prefix.to_owned()),
        ..Default::default()
    };
    let mut pages = c
        .list_blobs(Some(opts))
        .map_err(|e| classify("list", prefix, e))?
        .into_pages();
    let mut out = Vec::new();
    loop {
        let page = match pages.try_next().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) if is_not_found(&e) => break,
            Err(e) => return Err(classify("list", prefix, e)),
        };
        let items = page
            .into_model()
            .map_err(|e| classify("list", prefix, e))?
            .blob_items;
        for item in items {
            let (Some(name), Some(props)) = (item.name, item.properties) else {
                continue;
            };
            out.push(Listed {
                name,
                etag: props.etag.map(|e| e.to_string()).unwrap_or_default(),
                modified: props.last_modified.map_or(0, |t| t.unix_timestamp()),
            });
        }
    }
    Ok(out)
}
