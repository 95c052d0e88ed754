//! Blob and queue access through `AzureWebJobsStorage`, resolved exactly as the Functions host
//! resolves a storage connection (reference `functions-host-protocol.md` §6):
//!
//! * the setting `X` (or `AzureWebJobsX`) with a plain value is a **connection string**
//!   (`UseDevelopmentStorage=true`, an explicit Azurite string, a real account key): requests
//!   are signed with SharedKey ([`SharedKeyPolicy`]);
//! * otherwise the section `X__*`: `X__accountName` (takes precedence) gives
//!   `https://{account}.blob|queue.core.windows.net`, else `X__blobServiceUri` /
//!   `X__queueServiceUri`; requests carry a bearer token from the managed identity
//!   (`X__credential=managedidentity`, `X__clientId` for a user-assigned one) or, on a
//!   developer machine, the Azure CLI. Token access is HTTPS only.
//!
//! Callers get SDK clients from [`Storage::blob_container`] / [`Storage::queue`] and never see
//! which of the two is in use.

pub mod blob_state;
mod cause;
mod shared_key;

pub use cause::Cause;
pub use shared_key::SharedKeyPolicy;

use crate::env::Lookup;
use crate::identity::{self, CredentialSource, IdentityError};
use azure_core::credentials::TokenCredential;
use azure_core::http::{Transport, Url};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};
use azure_storage_queue::models::{QueueClientSendMessageOptions, QueueMessage};
use azure_storage_queue::{QueueClient, QueueServiceClient, QueueServiceClientOptions};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use storage_auth::ConnectionString;

/// The connection every binding of this app uses.
pub const DEFAULT_CONNECTION: &str = "AzureWebJobsStorage";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage connection {0} is not configured: set {0} (a connection string) or {0}__accountName / {0}__blobServiceUri")]
    NotConfigured(String),
    #[error("setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
    #[error("storage connection {connection} has no queue endpoint: set {connection}__accountName or {connection}__queueServiceUri")]
    NoQueueEndpoint { connection: String },
    #[error("storage connection {connection}: {source}")]
    Identity {
        connection: String,
        #[source]
        source: IdentityError,
    },
    #[error(
        "storage connection {connection}: cannot create the {service} client for {url}: {reason}"
    )]
    Client {
        connection: String,
        service: &'static str,
        url: String,
        reason: String,
    },
}

/// How requests are authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageAuth {
    /// A connection string's account key.
    SharedKey { account: String },
    /// Bearer tokens from this credential.
    Token(CredentialSource),
}

impl fmt::Display for StorageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKey { account } => write!(f, "shared key (account {account})"),
            Self::Token(source) => write!(f, "token: {}", source.describe()),
        }
    }
}

/// Where a connection points and how it authenticates, before any client exists.
#[derive(Debug, Clone)]
pub struct ResolvedConnection {
    pub name: String,
    pub blob_endpoint: Option<Url>,
    pub queue_endpoint: Option<Url>,
    auth: ResolvedAuth,
}

#[derive(Debug, Clone)]
enum ResolvedAuth {
    SharedKey(ConnectionString),
    Token(CredentialSource),
}

impl ResolvedConnection {
    /// Resolves connection `name` from the settings, as the host does.
    pub fn resolve(name: &str, lookup: Lookup<'_>) -> Result<Self, StorageError> {
        let invalid = |setting: String, reason: String| StorageError::Invalid { setting, reason };
        let plain = lookup(name).map(|v| (name.to_string(), v)).or_else(|| {
            // The host also accepts `AzureWebJobs{name}` for a connection named `name`.
            let alt = format!("AzureWebJobs{name}");
            (!name.starts_with("AzureWebJobs"))
                .then(|| lookup(&alt).map(|v| (alt, v)))
                .flatten()
        });
        if let Some((setting, value)) = plain {
            // The error never echoes the value: it may hold an account key.
            let cs = ConnectionString::parse(&value).map_err(|e| {
                invalid(
                    setting.clone(),
                    format!("not a usable connection string: {e}"),
                )
            })?;
            return Ok(Self {
                name: name.to_string(),
                blob_endpoint: Some(cs.blob_endpoint.clone()),
                queue_endpoint: Some(cs.queue_endpoint.clone()),
                auth: ResolvedAuth::SharedKey(cs),
            });
        }
        let key = |suffix: &str| format!("{name}__{suffix}");
        let url_setting = |suffix: &str| -> Result<Option<Url>, StorageError> {
            let setting = key(suffix);
            match lookup(&setting) {
                None => Ok(None),
                Some(v) => Url::parse(v.trim().trim_end_matches('/'))
                    .map(Some)
                    .map_err(|e| invalid(setting, format!("not a URL: {e}"))),
            }
        };
        let (blob, queue) = match lookup(&key("accountName")) {
            Some(account) => {
                let account = account.trim().to_string();
                if account.is_empty()
                    || !account
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    return Err(invalid(
                        key("accountName"),
                        format!("{account:?} is not a storage account name (lower-case letters and digits)"),
                    ));
                }
                let url = |svc: &str| {
                    Url::parse(&format!("https://{account}.{svc}.core.windows.net"))
                        .map_err(|e| invalid(key("accountName"), e.to_string()))
                };
                (Some(url("blob")?), Some(url("queue")?))
            }
            None => (
                url_setting("blobServiceUri")?,
                url_setting("queueServiceUri")?,
            ),
        };
        if blob.is_none() && queue.is_none() {
            return Err(StorageError::NotConfigured(name.to_string()));
        }
        let credential_setting = key("credential");
        let wants_mi = match lookup(&credential_setting) {
            None => false,
            Some(v) if v.trim().eq_ignore_ascii_case("managedidentity") => true,
            Some(v) => {
                return Err(invalid(
                    credential_setting,
                    format!("{v:?} is not supported; use \"managedidentity\" or leave it unset"),
                ))
            }
        };
        let client_id = lookup(&key("clientId"));
        let source = CredentialSource::select(lookup, client_id).map_err(|source| {
            StorageError::Identity {
                connection: name.to_string(),
                source,
            }
        })?;
        if wants_mi && source == CredentialSource::DeveloperTools {
            return Err(StorageError::Identity {
                connection: name.to_string(),
                source: IdentityError::ManagedIdentityRequired {
                    purpose: "storage",
                    setting: credential_setting,
                    value: "managedidentity".into(),
                    missing: identity::IDENTITY_ENDPOINT,
                },
            });
        }
        for (svc, url) in [("blobServiceUri", &blob), ("queueServiceUri", &queue)] {
            if let Some(url) = url.as_ref().filter(|u| u.scheme() != "https") {
                return Err(invalid(
                    key(svc),
                    format!("{url} must use https for identity-based access"),
                ));
            }
        }
        Ok(Self {
            name: name.to_string(),
            blob_endpoint: blob,
            queue_endpoint: queue,
            auth: ResolvedAuth::Token(source),
        })
    }

    pub fn auth(&self) -> StorageAuth {
        match &self.auth {
            ResolvedAuth::SharedKey(cs) => StorageAuth::SharedKey {
                account: cs.account.clone(),
            },
            ResolvedAuth::Token(source) => StorageAuth::Token(source.clone()),
        }
    }
}

/// Blob and queue clients for one storage connection.
#[derive(Clone)]
pub struct Storage {
    connection: String,
    auth: StorageAuth,
    blob: Option<Arc<BlobServiceClient>>,
    queue: Option<Arc<QueueServiceClient>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("connection", &self.connection)
            .field("auth", &self.auth.to_string())
            .field("blob", &self.blob.as_ref().map(|c| c.url().as_str()))
            .field("queue", &self.queue.as_ref().map(|c| c.url().as_str()))
            .finish()
    }
}

impl Storage {
    /// `AzureWebJobsStorage` from the process environment.
    pub fn from_env() -> Result<Self, StorageError> {
        let lookup = crate::env::env_lookup;
        let transport = identity::transport(&lookup).map_err(|source| StorageError::Identity {
            connection: DEFAULT_CONNECTION.into(),
            source,
        })?;
        Self::connect(DEFAULT_CONNECTION, &lookup, &transport)
    }

    /// Connection `name` from `lookup`, over `transport` (see [`identity::transport`]).
    pub fn connect(
        name: &str,
        lookup: Lookup<'_>,
        transport: &Transport,
    ) -> Result<Self, StorageError> {
        let resolved = ResolvedConnection::resolve(name, lookup)?;
        let mut options = identity::client_options(transport);
        let credential: Option<Arc<dyn TokenCredential>> = match &resolved.auth {
            ResolvedAuth::SharedKey(cs) => {
                options
                    .per_try_policies
                    .push(SharedKeyPolicy::new(cs.signer()));
                None
            }
            ResolvedAuth::Token(source) => Some(
                identity::credential("storage", source, transport).map_err(|source| {
                    StorageError::Identity {
                        connection: name.to_string(),
                        source,
                    }
                })?,
            ),
        };
        let client_err =
            |service: &'static str, url: &Url, e: azure_core::Error| StorageError::Client {
                connection: name.to_string(),
                service,
                url: url.to_string(),
                reason: e.to_string(),
            };
        let blob = match &resolved.blob_endpoint {
            None => None,
            Some(url) => Some(Arc::new(
                BlobServiceClient::new(
                    url.clone(),
                    credential.clone(),
                    Some(BlobServiceClientOptions {
                        client_options: options.clone(),
                        ..Default::default()
                    }),
                )
                .map_err(|e| client_err("blob", url, e))?,
            )),
        };
        let queue = match &resolved.queue_endpoint {
            None => None,
            Some(url) => Some(Arc::new(
                QueueServiceClient::new(
                    url.clone(),
                    credential,
                    Some(QueueServiceClientOptions {
                        client_options: options,
                        ..Default::default()
                    }),
                )
                .map_err(|e| client_err("queue", url, e))?,
            )),
        };
        let auth = resolved.auth();
        tracing::info!(
            connection = name,
            auth = %auth,
            blob = resolved.blob_endpoint.as_ref().map(Url::as_str).unwrap_or("-"),
            queue = resolved.queue_endpoint.as_ref().map(Url::as_str).unwrap_or("-"),
            "storage connection resolved"
        );
        Ok(Self {
            connection: name.to_string(),
            auth,
            blob,
            queue,
        })
    }

    /// How this connection authenticates.
    pub fn auth(&self) -> &StorageAuth {
        &self.auth
    }

    /// The blob service client.
    pub fn blob_service(&self) -> Result<&BlobServiceClient, StorageError> {
        self.blob
            .as_deref()
            .ok_or_else(|| StorageError::NotConfigured(format!("{} (blob)", self.connection)))
    }

    /// A container client (the container may not exist yet).
    pub fn blob_container(&self, name: &str) -> Result<BlobContainerClient, StorageError> {
        Ok(self.blob_service()?.blob_container_client(name))
    }

    /// A queue client (the queue may not exist yet).
    pub fn queue(&self, name: &str) -> Result<QueueClient, StorageError> {
        let service = self
            .queue
            .as_deref()
            .ok_or_else(|| StorageError::NoQueueEndpoint {
                connection: self.connection.clone(),
            })?;
        service
            .queue_client(name)
            .map_err(|e| StorageError::Client {
                connection: self.connection.clone(),
                service: "queue",
                url: service.url().to_string(),
                reason: e.to_string(),
            })
    }
}

/// A client `make` builds from `storage`, or `None` when there is no storage connection or
/// the client cannot be built (logged: `unavailable` says what then does not work).
pub fn optional_client<T>(
    storage: Option<&Storage>,
    make: impl FnOnce(&Storage) -> Result<T, StorageError>,
    unavailable: &str,
) -> Option<T> {
    match make(storage?) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "{unavailable}");
            None
        }
    }
}

/// The longest visibility delay Queue Storage accepts (7 days).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Puts `text` on `queue`, invisible for `delay` (rounded up to whole seconds, 1 s to 7 days),
/// encoded as the host's queue trigger reads it (`messageEncoding: base64` in host.json).
pub async fn send_later(
    queue: &QueueClient,
    text: &str,
    delay: Duration,
) -> azure_core::Result<()> {
    let secs = delay
        .clamp(Duration::from_secs(1), MAX_QUEUE_DELAY)
        .as_secs_f64()
        .ceil() as i32;
    send(queue, text, Some(secs)).await
}

/// Puts `text` on `queue`, visible at once, encoded as [`send_later`] does: for a handler that
/// must know its message is queued before it records that (an output binding is written only
/// after the handler replied).
pub async fn send_now(queue: &QueueClient, text: &str) -> azure_core::Result<()> {
    send(queue, text, None).await
}

async fn send(
    queue: &QueueClient,
    text: &str,
    visibility_timeout: Option<i32>,
) -> azure_core::Result<()> {
    use base64::Engine;
    let message = QueueMessage {
        message_text: Some(base64::engine::general_purpose::STANDARD.encode(text)),
    };
    let options = QueueClientSendMessageOptions {
        visibility_timeout,
        ..Default::default()
    };
    queue
        .send_message(message.try_into()?, Some(options))
        .await?;
    Ok(())
}

/// How long a re-enqueued request's attempt `attempt` (1-based) stays invisible
/// (docs/tickets.md, docs/loop-closer.md): backoff 1 s, 2 s, 4 s, … capped at
/// `max` and scaled by `jitter` (0.5–1), but never shorter than the system's `Retry-After`
/// (`throttled`), and within what a queue accepts (1 s to 7 days).
pub fn retry_delay(attempt: u32, max: Duration, jitter: f64, throttled: Duration) -> Duration {
    let backoff = Duration::from_secs(1u64 << attempt.clamp(1, 20).saturating_sub(1)).min(max);
    backoff
        .mul_f64(jitter.clamp(0.0, 1.0))
        .max(throttled)
        .clamp(Duration::from_secs(1), MAX_QUEUE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::lookup_from as lookup;

    #[test]
    fn retry_delays_back_off_with_jitter_and_follow_retry_after() {
        let s = Duration::from_secs;
        let max = s(300);
        let cases = [
            (1, 1.0, s(0), s(1)),
            (4, 1.0, s(0), s(8)),
            (4, 0.5, s(0), s(4)),
            (1, 0.5, s(0), s(1)),
            (40, 1.0, s(0), max),
            (1, 1.0, s(42), s(42)),
            (9, 1.0, s(42), s(256)),
            (1, 1.0, s(30 * 24 * 3600), s(7 * 24 * 3600)),
        ];
        for (attempt, jitter, throttled, want) in cases {
            assert_eq!(
                retry_delay(attempt, max, jitter, throttled),
                want,
                "attempt {attempt}, jitter {jitter}, Retry-After {throttled:?}"
            );
        }
    }

    #[test]
    fn development_storage_is_shared_key_on_azurite() {
        let l = lookup(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]);
        let r = ResolvedConnection::resolve("AzureWebJobsStorage", &l).unwrap();
        assert_eq!(
            r.auth(),
            StorageAuth::SharedKey {
                account: "devstoreaccount1".into()
            }
        );
        assert_eq!(
            r.blob_endpoint.unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
    }

    #[test]
    fn account_name_takes_precedence_and_uses_the_identity() {
        let l = lookup(&[
            ("AzureWebJobsStorage__accountName", "acme"),
            (
                "AzureWebJobsStorage__blobServiceUri",
                "https://other.example/",
            ),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            ("AzureWebJobsStorage__clientId", "11111111-2222"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
            ("IDENTITY_HEADER", "h"),
        ]);
        let r = ResolvedConnection::resolve("AzureWebJobsStorage", &l).unwrap();
        assert_eq!(
            r.blob_endpoint.as_ref().unwrap().as_str(),
            "https://acme.blob.core.windows.net/"
        );
        assert_eq!(
            r.queue_endpoint.as_ref().unwrap().as_str(),
            "https://acme.queue.core.windows.net/"
        );
        assert_eq!(
            r.auth(),
            StorageAuth::Token(CredentialSource::ManagedIdentity {
                client_id: Some("11111111-2222".into())
            })
        );
    }

    #[test]
    fn service_uris_without_identity_use_the_developer_credential() {
        let l = lookup(&[
            (
                "AzureWebJobsStorage__blobServiceUri",
                "https://acme.blob.core.windows.net",
            ),
            (
                "AzureWebJobsStorage__queueServiceUri",
                "https://acme.queue.core.windows.net",
            ),
        ]);
        let r = ResolvedConnection::resolve("AzureWebJobsStorage", &l).unwrap();
        assert_eq!(
            r.auth(),
            StorageAuth::Token(CredentialSource::DeveloperTools)
        );
    }

    #[test]
    fn misconfigurations_are_named() {
        let err = ResolvedConnection::resolve("AzureWebJobsStorage", &lookup(&[])).unwrap_err();
        assert!(matches!(err, StorageError::NotConfigured(_)), "{err}");

        let l = lookup(&[
            ("AzureWebJobsStorage__accountName", "acme"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
        ]);
        let err = ResolvedConnection::resolve("AzureWebJobsStorage", &l)
            .unwrap_err()
            .to_string();
        assert!(err.contains("IDENTITY_ENDPOINT"), "{err}");

        let l = lookup(&[(
            "AzureWebJobsStorage__blobServiceUri",
            "http://127.0.0.1:10000/devstoreaccount1",
        )]);
        let err = ResolvedConnection::resolve("AzureWebJobsStorage", &l)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must use https"), "{err}");

        let l = lookup(&[(
            "AzureWebJobsStorage",
            "AccountName=acme;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==;Bogus",
        )]);
        let err = ResolvedConnection::resolve("AzureWebJobsStorage", &l)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AzureWebJobsStorage") && !err.contains("c2VjcmV0"),
            "{err}"
        );
    }
}
