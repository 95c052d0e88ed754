//! Secrets: named values from Key Vault (when `KEY_VAULT_URL` is set) or environment variables
//! (`qualtrics-webhook-key` ↔ `QUALTRICS_WEBHOOK_KEY`), cached, refreshable on demand when a
//! consumer finds that a secret stopped working. Values never appear in `Debug`/`Display`.

mod rotating;

pub use rotating::{Keys, RotatingKeys, Verified};

use crate::env::Lookup;
use crate::identity::{self, CredentialSource, IdentityError};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{StatusCode, Transport, Url};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secrets of DESIGN's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretName {
    QualtricsApiToken,
    QualtricsWebhookKey,
    QualtricsWebhookKeyPrevious,
    QualtricsWorkflowToken,
    ServicenowPassword,
    ServicenowClientSecret,
    ZendeskApiToken,
    ZendeskWebhookSecret,
    ZendeskWebhookSecretPrevious,
    ServicenowWebhookSecret,
    ServicenowWebhookSecretPrevious,
    /// The key of the analytics layer's identity hashes (`analytics::privacy::identity_hash`).
    AnalyticsHashKey,
    OpsWebhookSecret,
    OpsWebhookSecretPrevious,
    OpsStaticToken,
    OpsStaticTokenPrevious,
}

impl SecretName {
    /// The Key Vault secret name.
    pub fn vault_name(self) -> &'static str {
        match self {
            Self::QualtricsApiToken => "qualtrics-api-token",
            Self::QualtricsWebhookKey => "qualtrics-webhook-key",
            Self::QualtricsWebhookKeyPrevious => "qualtrics-webhook-key-previous",
            Self::QualtricsWorkflowToken => "qualtrics-workflow-token",
            Self::ServicenowPassword => "servicenow-password",
            Self::ServicenowClientSecret => "servicenow-client-secret",
            Self::ZendeskApiToken => "zendesk-api-token",
            Self::ZendeskWebhookSecret => "zendesk-webhook-secret",
            Self::ZendeskWebhookSecretPrevious => "zendesk-webhook-secret-previous",
            Self::ServicenowWebhookSecret => "servicenow-webhook-secret",
            Self::ServicenowWebhookSecretPrevious => "servicenow-webhook-secret-previous",
            Self::AnalyticsHashKey => "analytics-hash-key",
            Self::OpsWebhookSecret => "ops-webhook-secret",
            Self::OpsWebhookSecretPrevious => "ops-webhook-secret-previous",
            Self::OpsStaticToken => "ops-static-token",
            Self::OpsStaticTokenPrevious => "ops-static-token-previous",
        }
    }

    /// The environment-variable fallback: `-` → `_`, upper case.
    pub fn env_name(self) -> String {
        self.vault_name().replace('-', "_").to_ascii_uppercase()
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.vault_name())
    }
}

/// A secret value. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must use it (a MAC key, an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret could not be read. Names the source and the secret, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {name} from {source_name}: {reason}")]
    Unavailable {
        name: SecretName,
        source_name: String,
        reason: String,
    },
}

/// The secrets source cannot be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum SecretsConfigError {
    #[error("setting KEY_VAULT_URL: {0}")]
    VaultUrl(String),
    #[error("Key Vault {url}: {source}")]
    Identity {
        url: String,
        #[source]
        source: IdentityError,
    },
    #[error("Key Vault {url}: cannot create the client: {reason}")]
    Client { url: String, reason: String },
}

/// How long a read value is trusted before it is read again.
const TTL: Duration = Duration::from_secs(300);
/// Forced refreshes of one secret are at most this frequent.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// When a re-read fails and an older value is kept, how soon to try again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Cached {
    value: Option<Secret>,
    /// When the value stops being fresh.
    fresh_until: Instant,
}

/// Where values come from.
enum Backend {
    Env,
    Vault { client: SecretClient, url: String },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str("Env"),
            Self::Vault { url, .. } => f.debug_struct("Vault").field("url", url).finish(),
        }
    }
}

/// Reads and caches secrets.
#[derive(Debug)]
pub struct SecretsProvider {
    backend: Backend,
    ttl: Duration,
    cache: Mutex<HashMap<SecretName, Cached>>,
    last_forced: Mutex<HashMap<SecretName, Instant>>,
    /// One remote read at a time, so a burst of cold requests makes one vault call.
    fetch: tokio::sync::Mutex<()>,
}

impl Default for SecretsProvider {
    fn default() -> Self {
        Self::with_backend(Backend::Env)
    }
}

impl SecretsProvider {
    fn with_backend(backend: Backend) -> Self {
        Self {
            backend,
            ttl: TTL,
            cache: Mutex::default(),
            last_forced: Mutex::default(),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// Secrets from environment variables.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// `KEY_VAULT_URL` set → Key Vault through the selected credential (`AZURE_CLIENT_ID` for
    /// a user-assigned identity); unset → environment variables. Logs the choice.
    pub fn from_settings(
        lookup: Lookup<'_>,
        transport: &Transport,
    ) -> Result<Self, SecretsConfigError> {
        let Some(url) = lookup("KEY_VAULT_URL") else {
            tracing::info!(source = "environment variables", "secrets source selected");
            return Ok(Self::from_env());
        };
        let url = url.trim().to_string();
        let source = CredentialSource::select(lookup, lookup(identity::AZURE_CLIENT_ID)).map_err(
            |source| SecretsConfigError::Identity {
                url: url.clone(),
                source,
            },
        )?;
        let credential =
            identity::credential("Key Vault", &source, transport).map_err(|source| {
                SecretsConfigError::Identity {
                    url: url.clone(),
                    source,
                }
            })?;
        let provider = Self::key_vault(&url, credential, transport)?;
        tracing::info!(source = "Key Vault", vault = %url, credential = %source.describe(), "secrets source selected");
        Ok(provider)
    }

    /// Secrets from the vault at `url` (https) with `credential`, over `transport`.
    pub fn key_vault(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        transport: &Transport,
    ) -> Result<Self, SecretsConfigError> {
        let parsed = Url::parse(url)
            .map_err(|e| SecretsConfigError::VaultUrl(format!("{url:?} is not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(SecretsConfigError::VaultUrl(format!(
                "{url} must use https (Key Vault tokens are never sent in clear text)"
            )));
        }
        // The SDK checks that the challenge's resource (vault.azure.net) is a suffix of the
        // vault's host name; a vault addressed by a loopback address (the local fake) can't
        // pass that, so the check is relaxed for loopback only.
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        let options = SecretClientOptions {
            client_options: identity::client_options(transport),
            verify_challenge_resource: Some(!loopback),
            ..Default::default()
        };
        let client = SecretClient::new(url, credential, Some(options)).map_err(|e| {
            SecretsConfigError::Client {
                url: url.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self::with_backend(Backend::Vault {
            client,
            url: url.to_string(),
        }))
    }

    /// Overrides how long read values are trusted (default 5 minutes).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Where secrets come from, for logs and errors: `Key Vault https://…` or
    /// `environment variables`.
    pub fn source_name(&self) -> String {
        match &self.backend {
            Backend::Env => "environment variables".into(),
            Backend::Vault { url, .. } => format!("Key Vault {url}"),
        }
    }

    /// The secret's value; `Ok(None)` when it does not exist (an optional secret).
    ///
    /// Served from the cache while fresh. When a re-read fails and an older value is cached,
    /// the older value is served (and the failure logged) rather than failing the caller.
    pub async fn get(&self, name: SecretName) -> Result<Option<Secret>, SecretsError> {
        if let Some(value) = self.fresh(name) {
            return Ok(value);
        }
        let _one_at_a_time = self.fetch.lock().await;
        // Another caller may have read it while this one waited.
        if let Some(value) = self.fresh(name) {
            return Ok(value);
        }
        match self.read(name).await {
            Ok(value) => Ok(value),
            Err(e) => {
                let stale = self.lock_cache().get_mut(&name).map(|c| {
                    c.fresh_until = Instant::now() + RETRY_AFTER_ERROR;
                    c.value.clone()
                });
                match stale {
                    Some(value) => {
                        tracing::warn!(secret = %name, error = %e, "re-reading a secret failed; using the value read before");
                        Ok(value)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Like [`Self::get`], but a secret that does not exist is an error naming the source and
    /// the secret.
    pub async fn require(&self, name: SecretName) -> Result<Secret, SecretsError> {
        self.get(name)
            .await?
            .ok_or_else(|| SecretsError::Unavailable {
                name,
                source_name: self.source_name(),
                reason: match self.backend {
                    Backend::Env => format!("not set (environment variable {})", name.env_name()),
                    Backend::Vault { .. } => "no such secret in the vault (404)".into(),
                },
            })
    }

    /// Reads the secret again, bypassing the cache, unless it was force-read in the last
    /// 30 s. Returns whether a fresh read happened. Call when a secret stopped working.
    pub async fn refresh(&self, name: SecretName) -> Result<bool, SecretsError> {
        {
            let Ok(mut last) = self.last_forced.lock() else {
                return Ok(false);
            };
            if last
                .get(&name)
                .is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL)
            {
                return Ok(false);
            }
            last.insert(name, Instant::now());
        }
        let _one_at_a_time = self.fetch.lock().await;
        self.read(name).await.map(|_| true)
    }

    /// Reads `names` once (filling the cache) and logs, per secret, whether it is available —
    /// never its value. Meant to run in the background at start-up.
    pub async fn warm_up(&self, names: &[SecretName]) {
        let source = self.source_name();
        for &name in names {
            match self.get(name).await {
                Ok(Some(_)) => {
                    tracing::info!(secret = %name, source = %source, "secret available")
                }
                Ok(None) => tracing::warn!(secret = %name, source = %source, "secret not found"),
                Err(e) => {
                    tracing::error!(secret = %name, source = %source, error = %e, "secret unavailable")
                }
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<SecretName, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, name: SecretName) -> Option<Option<Secret>> {
        self.lock_cache()
            .get(&name)
            .filter(|c| Instant::now() < c.fresh_until)
            .map(|c| c.value.clone())
    }

    async fn read(&self, name: SecretName) -> Result<Option<Secret>, SecretsError> {
        let value = match &self.backend {
            Backend::Env => std::env::var(name.env_name())
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new),
            Backend::Vault { client, url } => read_vault(client, url, name).await?,
        };
        self.lock_cache().insert(
            name,
            Cached {
                value: value.clone(),
                fresh_until: Instant::now() + self.ttl,
            },
        );
        Ok(value)
    }
}

async fn read_vault(
    client: &SecretClient,
    url: &str,
    name: SecretName,
) -> Result<Option<Secret>, SecretsError> {
    let fail = |reason: String| SecretsError::Unavailable {
        name,
        source_name: format!("Key Vault {url}"),
        reason,
    };
    let response = match client.get_secret(name.vault_name(), None).await {
        Ok(r) => r,
        Err(e) => {
            return match e.http_status() {
                Some(StatusCode::NotFound) => Ok(None),
                Some(StatusCode::Forbidden) => Err(fail(
                    "access denied (403): the identity may not read this secret; grant it the \
                     Key Vault Secrets User role on the vault"
                        .into(),
                )),
                Some(StatusCode::Unauthorized) => Err(fail(
                    "authentication failed (401): the vault refused the identity's token".into(),
                )),
                Some(status) => Err(fail(format!(
                    "the vault answered {} {}",
                    u16::from(status),
                    status.canonical_reason()
                ))),
                None => Err(fail(describe_error(&e))),
            };
        }
    };
    // The model's Debug/Display are never logged: they contain the value.
    let model = response
        .into_model()
        .map_err(|e| fail(format!("unexpected response from the vault: {}", e.kind())))?;
    Ok(model.value.filter(|v| !v.is_empty()).map(Secret::new))
}

/// Whether the failure is a connection that could not be made or timed out (the retry
/// policy wraps the transport error, so look through the chain).
fn is_unreachable(e: &azure_core::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(az) = err.downcast_ref::<azure_core::Error>() {
            if matches!(az.kind(), ErrorKind::Io) {
                return true;
            }
        }
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return true;
            }
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        current = err.source();
    }
    false
}

/// A transport or credential failure, with its causes (none of which carries a secret value:
/// only successful secret reads have one).
fn describe_error(e: &azure_core::Error) -> String {
    let what = if matches!(e.kind(), ErrorKind::Credential) {
        "cannot get a token for the vault"
    } else if is_unreachable(e) {
        "vault unreachable"
    } else {
        "request failed"
    };
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    let mut depth = 0;
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
        depth += 1;
        if depth > 6 {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_env_vars() {
        assert_eq!(
            SecretName::QualtricsWebhookKeyPrevious.env_name(),
            "QUALTRICS_WEBHOOK_KEY_PREVIOUS"
        );
    }

    #[test]
    fn values_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }
}
