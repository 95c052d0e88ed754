//! A fake managed-identity endpoint with the App Service contract (reference
//! `functions-host-protocol.md` §7): `GET ?resource=…&api-version=2019-08-01[&client_id=…]` with
//! `X-IDENTITY-HEADER`, answering `{access_token, expires_on (string), resource, token_type}`.
//! As strict as the service: at most one of `client_id`/`object_id`/`principal_id`/`mi_res_id`
//! (`msi_res_id` is the older API's name and refused), and only known resources (storage,
//! Key Vault, management) get a token.
//!
//! Tokens are unsigned JWTs (`alg: none`) with the claims Azurite's `--oauth basic` checks
//! (`iss` https://sts.windows.net/…, `aud` the resource, `iat`/`nbf`/`exp`); the fake Key Vault
//! reads the same claims.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The tenant the fake identity lives in.
pub const TENANT_ID: &str = "72f988bf-0000-4000-8000-00000000fake";
/// The client id of the system-assigned identity (when no `client_id` is asked for).
pub const SYSTEM_ASSIGNED_CLIENT_ID: &str = "5e29463d-0000-4000-8000-0000000syst";
/// The parameters that pick a user-assigned identity; at most one may be sent.
const SELECTORS: &[&str] = &["client_id", "object_id", "principal_id", "mi_res_id"];
/// The resources (audiences) tokens are issued for; any other is unknown to the tenant.
const RESOURCES: &[&str] = &[
    "https://storage.azure.com",
    crate::fakes::keyvault::VAULT_RESOURCE,
    "https://management.azure.com",
];
/// Token lifetime.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

/// One token request as the fake saw it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub resource: Option<String>,
    pub client_id: Option<String>,
    pub api_version: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Shared {
    header: String,
    requests: Vec<TokenRequest>,
    fail_with: Option<u16>,
}

/// A running fake identity endpoint; stops when dropped.
#[derive(Debug)]
pub struct FakeIdentity {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeIdentity {
    /// Starts on a free loopback port with a fresh `IDENTITY_HEADER` value.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            header: uuid::Uuid::new_v4().to_string(),
            ..Shared::default()
        }));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/msi/token", get(token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `IDENTITY_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/msi/token", self.addr)
    }

    /// `IDENTITY_HEADER`.
    pub fn header(&self) -> String {
        self.lock().header.clone()
    }

    /// The two settings the platform sets: `[(IDENTITY_ENDPOINT, …), (IDENTITY_HEADER, …)]`.
    pub fn settings(&self) -> [(String, String); 2] {
        [
            ("IDENTITY_ENDPOINT".into(), self.endpoint()),
            ("IDENTITY_HEADER".into(), self.header()),
        ]
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.lock().requests.clone()
    }

    /// Answer every request with this status (e.g. 500), or `None` to work again.
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().fail_with = status;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One fake for the whole test process, on its own runtime thread, with
    /// `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` exported to the process environment.
    ///
    /// azure_identity's `ManagedIdentityCredential` reads those two variables from the process
    /// environment (not from settings), so in-process tests need them set process-wide; a
    /// per-test fake would race with other tests. Real-binary tests pass [`Self::settings`]
    /// to the child instead.
    pub fn process_wide() -> &'static FakeIdentity {
        static SHARED: std::sync::OnceLock<FakeIdentity> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("fake-identity".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime for the fake identity");
                    rt.block_on(async move {
                        let fake = FakeIdentity::start().await.expect("fake identity starts");
                        let _ = tx.send(fake);
                        std::future::pending::<()>().await;
                    });
                })
                .expect("fake identity thread");
            let fake = rx.recv().expect("fake identity started");
            for (k, v) in fake.settings() {
                // Set once, before any credential reads them.
                std::env::set_var(k, v);
            }
            fake
        })
    }
}

impl Drop for FakeIdentity {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A token handed out is a secret from then on.
fn issued(token: String) -> String {
    crate::canary::register(&token);
    token
}

/// An unsigned JWT with Entra-shaped claims for `audience`.
pub fn mint_token(audience: &str, client_id: &str, now: i64, lifetime: i64) -> String {
    let header = json!({"typ": "JWT", "alg": "none"});
    let claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{TENANT_ID}/"),
        "iat": now,
        "nbf": now - 60,
        "exp": now + lifetime,
        "appid": client_id,
        "oid": client_id,
        "sub": client_id,
        "tid": TENANT_ID,
        "idtyp": "app",
    });
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The claims of a token minted by [`mint_token`] (no signature check: there is none).
pub fn decode_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn token(
    State(shared): State<Arc<Mutex<Shared>>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut record = TokenRequest {
        resource: q.get("resource").cloned(),
        client_id: q.get("client_id").cloned(),
        api_version: q.get("api-version").cloned(),
        status: 200,
    };
    let presented = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    let reply = if let Some(status) = s.fail_with {
        error(status, "injected failure")
    } else if presented != Some(s.header.as_str()) {
        error(401, "missing or wrong X-IDENTITY-HEADER")
    } else if record.api_version.as_deref() != Some("2019-08-01") {
        error(400, "api-version must be 2019-08-01")
    } else if q.contains_key("msi_res_id") {
        // The 2017-09-01 name; the 2019-08-01 contract spells it `mi_res_id`.
        error(
            400,
            "msi_res_id is not a parameter of api-version 2019-08-01; use mi_res_id",
        )
    } else if SELECTORS.iter().filter(|k| q.contains_key(**k)).count() > 1 {
        error(
            400,
            "client_id, object_id, principal_id and mi_res_id are mutually exclusive",
        )
    } else if let Some(resource) = record.resource.clone() {
        if !RESOURCES.contains(&resource.trim_end_matches('/')) {
            let reply = error(
                400,
                "AADSTS500011: The resource principal was not found in the tenant.",
            );
            record.status = reply.status().as_u16();
            s.requests.push(record);
            return reply;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let client_id = record
            .client_id
            .clone()
            .unwrap_or_else(|| SYSTEM_ASSIGNED_CLIENT_ID.to_string());
        let audience = resource.trim_end_matches('/');
        let body = json!({
            "access_token": issued(mint_token(audience, &client_id, now, TOKEN_LIFETIME_SECS)),
            "expires_on": (now + TOKEN_LIFETIME_SECS).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        });
        (StatusCode::OK, Json(body)).into_response()
    } else {
        error(400, "resource is required")
    };
    record.status = reply.status().as_u16();
    s.requests.push(record);
    reply
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"error": {"code": status.as_u16().to_string(), "message": message}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status the fake answers for these query parameters (with the right header).
    async fn status(fake: &FakeIdentity, query: &[(&str, &str)]) -> u16 {
        reqwest::Client::new()
            .get(fake.endpoint())
            .query(query)
            .header("X-IDENTITY-HEADER", fake.header())
            .send()
            .await
            .expect("fake answers")
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn refuses_what_the_app_service_endpoint_refuses() {
        let fake = FakeIdentity::start().await.expect("fake starts");
        let v = ("api-version", "2019-08-01");
        let storage = ("resource", "https://storage.azure.com/");
        assert_eq!(status(&fake, &[v, storage]).await, 200);
        assert_eq!(status(&fake, &[v, ("resource", VAULT)]).await, 200);
        assert_eq!(
            status(&fake, &[v, storage, ("mi_res_id", "/sub/x")]).await,
            200
        );
        assert_eq!(
            status(&fake, &[v, storage, ("principal_id", "p")]).await,
            200
        );
        // The old API's parameter name, two identity selectors, an unknown resource.
        assert_eq!(
            status(&fake, &[v, storage, ("msi_res_id", "/sub/x")]).await,
            400
        );
        assert_eq!(
            status(&fake, &[v, storage, ("client_id", "a"), ("object_id", "b")]).await,
            400
        );
        assert_eq!(
            status(
                &fake,
                &[v, storage, ("client_id", "a"), ("mi_res_id", "/sub/x")]
            )
            .await,
            400
        );
        assert_eq!(
            status(&fake, &[v, ("resource", "https://example.com")]).await,
            400
        );
        assert_eq!(status(&fake, &[v]).await, 400);
        assert_eq!(
            status(&fake, &[("api-version", "2017-09-01"), storage]).await,
            400
        );
    }

    const VAULT: &str = crate::fakes::keyvault::VAULT_RESOURCE;
}
