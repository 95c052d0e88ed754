//! A fake Azure Key Vault (secrets only) over HTTPS with the test PKI.
//!
//! It behaves like the service where the SDK can tell: the first unauthenticated request gets
//! `401` + `WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"`;
//! a bearer token must carry `aud` https://vault.azure.net, the fake identity's issuer and tenant
//! (`iss`, `tid`), and be unexpired; `GET /secrets/{name}/[{version}]?api-version=…` (a version
//! the service recognises) returns the latest (or given) version. Tests can
//! rotate secrets (new versions), delete them (404 `SecretNotFound`), deny access (403
//! `Forbidden`), make it fail (503) or stop it (unreachable), and count requests.

use crate::fakes::identity::decode_claims;
use crate::fakes::tls::TestPki;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The resource Key Vault tokens are issued for.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

/// The data-plane `api-version`s the service recognises (others: 400 `BadParameter`).
const API_VERSIONS: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];

/// A failure the fake vault injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultFault {
    /// 403: the identity has no permission to read secrets.
    Forbidden,
    /// 503 on every request.
    Unavailable,
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: String,
    created: i64,
}

#[derive(Debug, Default)]
struct Shared {
    base: String,
    secrets: HashMap<String, Vec<Version>>,
    fault: Option<VaultFault>,
    requests: usize,
    challenges: usize,
    served: usize,
}

/// A running fake vault; stops when dropped.
#[derive(Debug)]
pub struct FakeKeyVault {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeKeyVault {
    /// Starts on a free loopback port, serving HTTPS with `pki`'s leaf.
    pub async fn start(pki: &TestPki) -> std::io::Result<Self> {
        let listener = pki.listener().await?;
        let addr = axum::serve::Listener::local_addr(&listener)?;
        let shared = Arc::new(Mutex::new(Shared {
            base: format!("https://{addr}"),
            ..Shared::default()
        }));
        let app = Router::new()
            .route("/secrets/{name}", get(get_latest))
            .route("/secrets/{name}/", get(get_latest))
            .route("/secrets/{name}/{version}", get(get_version))
            .fallback(unknown)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// `KEY_VAULT_URL` (addressed as 127.0.0.1, with a trailing slash as the portal shows it).
    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    /// Adds a new version of `name` (creating it if needed) and returns the version id.
    pub fn set_secret(&self, name: &str, value: &str) -> String {
        crate::canary::register(value);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let created = time::OffsetDateTime::now_utc().unix_timestamp();
        self.lock()
            .secrets
            .entry(name.to_string())
            .or_default()
            .push(Version {
                id: id.clone(),
                value: value.to_string(),
                created,
            });
        id
    }

    /// Deletes `name` and all its versions (later reads get 404).
    pub fn delete_secret(&self, name: &str) {
        self.lock().secrets.remove(name);
    }

    /// Injects a fault, or clears it with `None`.
    pub fn set_fault(&self, fault: Option<VaultFault>) {
        self.lock().fault = fault;
    }

    /// Every HTTP request received (challenges included).
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Requests answered with the 401 challenge.
    pub fn challenges(&self) -> usize {
        self.lock().challenges
    }

    /// Secret values served (200s).
    pub fn served(&self) -> usize {
        self.lock().served
    }

    /// Stops serving: the port refuses connections from now on (an unreachable vault).
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeKeyVault {
    fn drop(&mut self) {
        self.stop();
    }
}

type St = State<Arc<Mutex<Shared>>>;

async fn get_latest(
    state: St,
    Path(name): Path<String>,
    q: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve(state, name, None, q, headers)
}

async fn get_version(
    state: St,
    Path((name, version)): Path<(String, String)>,
    q: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let version = Some(version).filter(|v| !v.is_empty());
    serve(state, name, version, q, headers)
}

async fn unknown(State(shared): St) -> Response {
    shared.lock().unwrap_or_else(|p| p.into_inner()).requests += 1;
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such operation in the fake vault",
    )
}

fn serve(
    State(shared): St,
    name: String,
    version: Option<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.requests += 1;
    if s.fault == Some(VaultFault::Unavailable) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "injected",
        );
    }
    if let Some(why) = api_version_problem(q.get("api-version").map(String::as_str)) {
        return error(StatusCode::BAD_REQUEST, "BadParameter", &why);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        s.challenges += 1;
        return challenge(
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    };
    if let Err(why) = check_token(token) {
        s.challenges += 1;
        return challenge("Unauthorized", why);
    }
    if s.fault == Some(VaultFault::Forbidden) {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Caller is not authorized to perform action on resource. Action: \
             'Microsoft.KeyVault/vaults/secrets/getSecret/action' (ForbiddenByRbac)",
        );
    }
    let base = s.base.clone();
    let found = s.secrets.get(&name).and_then(|versions| match &version {
        None => versions.last().cloned(),
        Some(v) => versions.iter().find(|x| &x.id == v).cloned(),
    });
    let Some(v) = found else {
        return error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {name}{} was not found in this key vault.",
                version.map(|v| format!("/{v}")).unwrap_or_default()
            ),
        );
    };
    s.served += 1;
    let body = json!({
        "value": v.value,
        "id": format!("{base}/secrets/{name}/{}", v.id),
        "attributes": {
            "enabled": true,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90
        },
        "tags": {}
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// Why the service would refuse this `api-version` (400 `BadParameter`), if it would.
fn api_version_problem(v: Option<&str>) -> Option<String> {
    match v {
        None => Some("The 'api-version' query parameter is missing.".into()),
        Some(v) if !API_VERSIONS.contains(&v) => Some(format!(
            "The specified version ({v}) is not recognized. Consider using the latest \
             supported version (2025-07-01)."
        )),
        Some(_) => None,
    }
}

fn check_token(token: &str) -> Result<(), &'static str> {
    let claims = decode_claims(token).ok_or("AKV10000: the token is malformed.")?;
    let aud = claims["aud"].as_str().unwrap_or_default();
    if aud.trim_end_matches('/') != VAULT_RESOURCE {
        return Err("AKV10022: Invalid audience.");
    }
    // The vault belongs to one tenant: a token from another issuer or tenant is refused.
    let issuer = format!(
        "https://sts.windows.net/{}/",
        crate::fakes::identity::TENANT_ID
    );
    if claims["iss"].as_str() != Some(issuer.as_str()) {
        return Err("AKV10032: Invalid issuer.");
    }
    if claims["tid"].as_str() != Some(crate::fakes::identity::TENANT_ID) {
        return Err("AKV10032: Invalid tenant.");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match claims["exp"].as_i64() {
        Some(exp) if exp > now => Ok(()),
        _ => Err("AKV10032: the token has expired."),
    }
}

fn challenge(code: &str, message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, code, message);
    let value = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{VAULT_RESOURCE}\"",
        crate::fakes::identity::TENANT_ID
    );
    if let Ok(v) = value.parse() {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::identity::{mint_token, TENANT_ID};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// A token like the fake identity's, with one claim replaced.
    fn with_claim(claim: &str, value: &str) -> String {
        let t = mint_token(VAULT_RESOURCE, "c", now(), 600);
        let mut claims = decode_claims(&t).expect("claims");
        claims[claim] = serde_json::Value::String(value.into());
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    }

    #[test]
    fn tokens_must_come_from_the_vaults_tenant_for_the_vault() {
        assert!(check_token(&mint_token(VAULT_RESOURCE, "c", now(), 600)).is_ok());
        assert!(check_token(&mint_token("https://storage.azure.com", "c", now(), 600)).is_err());
        assert!(check_token(&mint_token(VAULT_RESOURCE, "c", now() - 700, 600)).is_err());
        let other = "https://sts.windows.net/00000000-0000-0000-0000-000000000000/";
        assert!(check_token(&with_claim("iss", other)).is_err());
        assert!(check_token(&with_claim("tid", "00000000-0000-0000-0000-000000000000")).is_err());
        assert!(check_token(&with_claim("tid", TENANT_ID)).is_ok());
    }

    #[test]
    fn only_known_api_versions_are_served() {
        assert_eq!(api_version_problem(Some("2025-07-01")), None);
        assert_eq!(api_version_problem(Some("7.4")), None);
        for bad in [None, Some("1.0"), Some("2099-01-01"), Some("")] {
            assert!(api_version_problem(bad).is_some(), "{bad:?}");
        }
    }
}
