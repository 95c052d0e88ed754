//! Which Entra ID credential the handler uses, chosen explicitly (azure_identity 1.x has no
//! default chain) and logged:
//!
//! * `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` set (Azure Functions / App Service) →
//!   `ManagedIdentityCredential`, user-assigned when a client id is given (`AZURE_CLIENT_ID`
//!   for Key Vault, `AzureWebJobsStorage__clientId` for storage), else system-assigned;
//! * neither set (a developer machine) → the developer credential (Azure CLI, then azd);
//! * only one set → a start-up error naming the missing variable. The SDK would otherwise
//!   fall back to IMDS (169.254.169.254) and hang for up to 72 s.
//!
//! Also builds the one HTTP transport every Azure client shares; it trusts extra roots from
//! `SSL_CERT_FILE` (the local test CA) on top of the platform's, and never turns verification
//! off.

use crate::env::Lookup;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_core::time::Duration as AzDuration;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use std::sync::Arc;
use std::time::Duration;

pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
pub const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "managed identity is half-configured: {present} is set but {missing} is not. Set both \
         (the Functions platform does) or neither (a developer machine, using the Azure CLI)"
    )]
    HalfConfigured {
        present: &'static str,
        missing: &'static str,
    },
    #[error(
        "{purpose}: {setting}={value:?} requires a managed identity, but {missing} is not set"
    )]
    ManagedIdentityRequired {
        purpose: &'static str,
        setting: String,
        value: String,
        missing: &'static str,
    },
    #[error("cannot create the {kind} credential for {purpose}: {reason}")]
    Create {
        kind: &'static str,
        purpose: &'static str,
        reason: String,
    },
    #[error("setting SSL_CERT_FILE: cannot use {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// Where tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The App Service / Functions identity endpoint; `None` = system-assigned.
    ManagedIdentity { client_id: Option<String> },
    /// `az account get-access-token` (then `azd`), for local runs.
    DeveloperTools,
}

impl CredentialSource {
    /// Decides from the settings. `client_id` selects a user-assigned identity.
    pub fn select(lookup: Lookup<'_>, client_id: Option<String>) -> Result<Self, IdentityError> {
        match (lookup(IDENTITY_ENDPOINT), lookup(IDENTITY_HEADER)) {
            (Some(_), Some(_)) => Ok(Self::ManagedIdentity { client_id }),
            (None, None) => Ok(Self::DeveloperTools),
            (Some(_), None) => Err(IdentityError::HalfConfigured {
                present: IDENTITY_ENDPOINT,
                missing: IDENTITY_HEADER,
            }),
            (None, Some(_)) => Err(IdentityError::HalfConfigured {
                present: IDENTITY_HEADER,
                missing: IDENTITY_ENDPOINT,
            }),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::ManagedIdentity { client_id: None } => {
                "managed identity (system-assigned, App Service endpoint)".into()
            }
            Self::ManagedIdentity {
                client_id: Some(id),
            } => {
                format!("managed identity (user-assigned, client id {id}, App Service endpoint)")
            }
            Self::DeveloperTools => "developer credential (Azure CLI, then azd)".into(),
        }
    }
}

/// Fails when exactly one of `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` is set.
pub fn check(lookup: Lookup<'_>) -> Result<(), IdentityError> {
    CredentialSource::select(lookup, None).map(|_| ())
}

/// The credential for `purpose` (e.g. "Key Vault"), logged at info.
///
/// The managed-identity credential reads `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` from the
/// process environment itself; `lookup` must agree with it (it is the environment in the
/// handler).
pub fn credential(
    purpose: &'static str,
    source: &CredentialSource,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, IdentityError> {
    let create = |kind: &'static str, e: azure_core::Error| IdentityError::Create {
        kind,
        purpose,
        reason: e.to_string(),
    };
    let cred: Arc<dyn TokenCredential> = match source {
        CredentialSource::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: client_options(transport),
            };
            ManagedIdentityCredential::new(Some(options))
                .map_err(|e| create("managed identity", e))?
        }
        CredentialSource::DeveloperTools => {
            DeveloperToolsCredential::new(None).map_err(|e| create("developer tools", e))?
        }
    };
    tracing::info!(purpose, credential = %source.describe(), "credential selected");
    Ok(cred)
}

/// Client options for every Azure client: the shared transport and a bounded retry (three
/// retries within 10 s), so an unreachable service fails a request in seconds, not minutes.
pub fn client_options(transport: &Transport) -> ClientOptions {
    ClientOptions {
        transport: Some(transport.clone()),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: AzDuration::milliseconds(200),
            max_retries: 3,
            max_total_elapsed: AzDuration::seconds(10),
            max_delay: AzDuration::seconds(2),
        }),
        ..Default::default()
    }
}

/// The HTTP transport shared by the Azure clients: rustls with the platform roots plus, when
/// `SSL_CERT_FILE` is set, the PEM certificates in that file; no redirects; no automatic
/// decompression (partitioned blob downloads need the raw bytes).
pub fn transport(lookup: Lookup<'_>) -> Result<Transport, IdentityError> {
    // `gzip`/`deflate` exist because azure_core's default features enable them on reqwest.
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .gzip(false)
        .deflate(false);
    if let Some(path) = lookup(SSL_CERT_FILE) {
        let ca_err = |reason: String| IdentityError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(&path).map_err(|e| ca_err(e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate in the file".into()));
        }
        tracing::info!(path = %path, certificates = certs.len(), "trusting extra TLS roots from SSL_CERT_FILE");
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder.build().map_err(|e| IdentityError::CaFile {
        path: lookup(SSL_CERT_FILE).unwrap_or_default(),
        reason: format!("cannot build the HTTP client: {e}"),
    })?;
    Ok(Transport::new(Arc::new(client)))
}

/// A settings lookup over fixed pairs, for unit tests.
#[cfg(test)]
pub(crate) fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::lookup_from as lookup;

    #[test]
    fn both_variables_select_the_managed_identity() {
        let l = lookup(&[
            (IDENTITY_ENDPOINT, "http://127.0.0.1:1/msi"),
            (IDENTITY_HEADER, "h"),
        ]);
        let s = CredentialSource::select(&l, Some("cid".into())).unwrap();
        assert_eq!(
            s,
            CredentialSource::ManagedIdentity {
                client_id: Some("cid".into())
            }
        );
        assert!(s.describe().contains("user-assigned"));
    }

    #[test]
    fn neither_variable_selects_the_developer_credential() {
        let l = lookup(&[]);
        assert_eq!(
            CredentialSource::select(&l, None).unwrap(),
            CredentialSource::DeveloperTools
        );
    }

    #[test]
    fn half_configured_identity_names_the_missing_variable() {
        let l = lookup(&[(IDENTITY_ENDPOINT, "http://127.0.0.1:1/msi")]);
        let err = check(&l).unwrap_err().to_string();
        assert!(err.contains("IDENTITY_HEADER is not"), "{err}");
        let l = lookup(&[(IDENTITY_HEADER, "secret-header-value")]);
        let err = check(&l).unwrap_err().to_string();
        assert!(err.contains("IDENTITY_ENDPOINT is not"), "{err}");
        assert!(!err.contains("secret-header-value"), "{err}");
    }

    #[test]
    fn unreadable_ca_file_is_a_clear_error() {
        let l = lookup(&[(SSL_CERT_FILE, "/nonexistent/ca.pem")]);
        let err = transport(&l).unwrap_err().to_string();
        assert!(
            err.contains("SSL_CERT_FILE") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }
}
