//! Secrets: named values from Key Vault (when `KEY_VAULT_URL` is set) or environment variables
//! (`qualtrics-webhook-key` ↔ `QUALTRICS_WEBHOOK_KEY`), cached, refreshable on demand when a
//! consumer finds that a secret stopped working. Values never appear in `Debug`/`Display`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
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

/// How long a read value is trusted before it is read again.
const TTL: Duration = Duration::from_secs(300);
/// Forced refreshes of one secret are at most this frequent.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Cached {
    value: Option<Secret>,
    read_at: Instant,
}

/// Reads and caches secrets.
#[derive(Debug, Default)]
pub struct SecretsProvider {
    cache: Mutex<HashMap<SecretName, Cached>>,
    last_forced: Mutex<HashMap<SecretName, Instant>>,
}

impl SecretsProvider {
    /// Secrets from environment variables.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// The secret's value; `Ok(None)` when it does not exist (an optional secret).
    pub async fn get(&self, name: SecretName) -> Result<Option<Secret>, SecretsError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.get(&name).filter(|c| c.read_at.elapsed() < TTL) {
                return Ok(c.value.clone());
            }
        }
        self.read(name).await
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
        self.read(name).await.map(|_| true)
    }

    async fn read(&self, name: SecretName) -> Result<Option<Secret>, SecretsError> {
        let value = std::env::var(name.env_name())
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                name,
                Cached {
                    value: value.clone(),
                    read_at: Instant::now(),
                },
            );
        }
        Ok(value)
    }
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
