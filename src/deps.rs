//! The cross-cutting clients every capability may use, built once from the app settings:
//! the settings themselves, the secrets provider, the storage connection, the Qualtrics
//! client and the state container's name. Never a capability's own state (that is built by
//! the capability, from its slice of the configuration and these).

use crate::env::{Lookup, SharedLookup};
use crate::identity::{self, IdentityError};
use crate::qualtrics::{QualtricsClient, QualtricsError};
use crate::secrets::{SecretsConfigError, SecretsProvider};
use crate::storage::{Storage, StorageError, DEFAULT_CONNECTION};
use std::sync::Arc;

/// `STATE_CONTAINER`: the blob container of the export state and the ticket ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateContainer(String);

impl StateContainer {
    pub const DEFAULT: &'static str = "bridge-state";

    pub fn from_settings(lookup: Lookup<'_>) -> Self {
        Self(lookup("STATE_CONTAINER").unwrap_or_else(|| Self::DEFAULT.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client could not be built from the settings; names the setting, never a value.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Secrets(#[from] SecretsConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("setting QUALTRICS_BASE_URL: {0}")]
    Qualtrics(#[from] QualtricsError),
}

/// The shared clients. Cheap to clone.
#[derive(Clone)]
pub struct Deps {
    lookup: SharedLookup,
    pub secrets: Arc<SecretsProvider>,
    /// `AzureWebJobsStorage` clients; `None` when no storage connection is configured.
    pub storage: Option<Storage>,
    /// `None` when `QUALTRICS_BASE_URL` is unset.
    pub qualtrics: Option<Arc<QualtricsClient>>,
    pub state_container: StateContainer,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("secrets", &self.secrets)
            .field("storage", &self.storage)
            .field("qualtrics", &self.qualtrics)
            .field("state_container", &self.state_container)
            .finish_non_exhaustive()
    }
}

impl Deps {
    /// Builds every client from `lookup`. A half-configured identity or an unusable setting
    /// is an error naming it; nothing here calls the network.
    pub fn build(lookup: SharedLookup) -> Result<Self, DepsError> {
        let get: Lookup<'_> = &*lookup;
        identity::check(get)?;
        let transport = identity::transport(get)?;
        let secrets = SecretsProvider::from_settings(get, &transport)?;
        let storage = match Storage::connect(DEFAULT_CONNECTION, get, &transport) {
            Ok(s) => Some(s),
            Err(StorageError::NotConfigured(name)) => {
                tracing::warn!(
                    connection = %name,
                    "no storage connection: exports and the ticket ledger are unavailable"
                );
                None
            }
            Err(e) => return Err(e.into()),
        };
        let qualtrics = QualtricsClient::from_settings(get)?.map(Arc::new);
        let state_container = StateContainer::from_settings(get);
        Ok(Self {
            lookup,
            secrets: Arc::new(secrets),
            storage,
            qualtrics,
            state_container,
        })
    }

    /// No setting at all: secrets from environment variables, no storage, no Qualtrics. For
    /// unit tests and the fuzz harness, which then build capabilities from a TOML string.
    pub fn for_tests() -> Self {
        Self {
            lookup: Arc::new(|_: &str| None),
            secrets: Arc::new(SecretsProvider::from_env()),
            storage: None,
            qualtrics: None,
            state_container: StateContainer(StateContainer::DEFAULT.into()),
        }
    }

    /// The app settings the clients were built from, for capabilities' own settings.
    pub fn lookup(&self) -> Lookup<'_> {
        &*self.lookup
    }
}
