//! Builds the app from typed configuration and serves the custom-handler endpoints:
//! `GET /` for readiness and `POST /{FunctionName}` per invocation.

use crate::config::{BridgeConfig, HandlerSettings};
use crate::env::setting;
use crate::host::{error_body, Envelope, Invocation, InvocationError, INVOCATION_ID_HEADER};
use crate::secrets::{SecretName, SecretsProvider};
use crate::storage::{Storage, StorageError, DEFAULT_CONNECTION};
use crate::{export, telemetry, tickets, webhook};
use anyhow::Context;

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::ServiceExt;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// Largest invocation envelope accepted; webhook bodies are limited far below this.
const MAX_ENVELOPE_BYTES: usize = 16 * 1024 * 1024;

/// Everything the functions share, built once at start-up.
#[derive(Debug)]
pub struct App {
    pub bridge: BridgeConfig,
    pub secrets: SecretsProvider,
    /// `AzureWebJobsStorage` clients; `None` when no storage connection is configured.
    pub storage: Option<Storage>,
    /// `TicketCreator`'s mappings, ServiceNow/Zendesk clients and ledger.
    pub tickets: tickets::TicketService,
    /// The Qualtrics API client; `None` when `QUALTRICS_BASE_URL` is unset.
    pub qualtrics: Option<crate::qualtrics::QualtricsClient>,
    /// The webhook keys, ready for HMAC.
    pub webhook_keys: webhook::KeyCache,
}

impl App {
    pub fn load(settings: &HandlerSettings) -> anyhow::Result<Self> {
        let bridge = if settings.bridge_config.exists() || setting("BRIDGE_CONFIG").is_some() {
            BridgeConfig::load(&settings.bridge_config)?
        } else {
            tracing::warn!(
                path = %settings.bridge_config.display(),
                "no bridge config: no survey is exported and no ticket is raised"
            );
            BridgeConfig::default()
        };
        // Identity, secrets and storage: a half-configured identity or an unusable setting
        // stops start-up with a message naming it; nothing here calls the network.
        let lookup = crate::env::env_lookup;
        crate::identity::check(&lookup)?;
        let transport = crate::identity::transport(&lookup)?;
        let secrets = SecretsProvider::from_settings(&lookup, &transport)?;
        let storage = match Storage::connect(DEFAULT_CONNECTION, &lookup, &transport) {
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
        let tickets = tickets::TicketService::new(&bridge, storage.as_ref(), &lookup)?;
        Ok(Self {
            bridge,
            secrets,
            storage,
            tickets,
            qualtrics: crate::qualtrics::QualtricsClient::from_env()?,
            webhook_keys: webhook::KeyCache::default(),
        })
    }
}

/// Reads the settings, binds `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` and serves until SIGTERM.
pub async fn run_from_env() -> anyhow::Result<()> {
    let settings = HandlerSettings::from_env()?;
    // Take over SIGTERM before anything else: the host may stop the handler at any time, and
    // the default action would kill it mid-write.
    let shutdown = shutdown_signal();
    telemetry::init();
    // Bind first so the host's readiness poll succeeds as early as possible.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, settings.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", settings.port))?;
    let app = Arc::new(App::load(&settings)?);
    // Read the webhook key once in the background: warms the cache and logs (without the
    // value) whether the secrets source works, while the handler already serves.
    let warm = app.clone();
    tokio::spawn(async move {
        warm.secrets
            .warm_up(&[SecretName::QualtricsWebhookKey])
            .await;
    });
    tracing::info!(
        port = settings.port,
        surveys = app.bridge.surveys.len(),
        "handler ready"
    );
    serve(listener, app, shutdown).await
}

/// Serves the handler on `listener` until SIGTERM or Ctrl-C.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = tower::service_fn(move |request: Request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(&app, request).await) }
    });
    axum::serve(listener, ServiceExt::<Request>::into_make_service(service))
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")?;
    tracing::info!("handler stopped");
    Ok(())
}

/// `GET /` answers the host's readiness poll, `POST /{FunctionName}` runs an invocation;
/// another method on either is 405, any other path 404. Routed by hand: two routes did not
/// need axum's router, which cost ~4k instructions per request (4 % of a webhook's).
async fn route(app: &App, request: Request) -> Response {
    let segment = request.uri().path().strip_prefix('/');
    let is_root = segment == Some("");
    let is_function = segment.is_some_and(|s| !s.is_empty() && !s.contains('/'));
    match (request.method(), is_root, is_function) {
        (&Method::GET, true, _) => ready(),
        (&Method::POST, _, true) => invoke(app, request).await,
        (_, true, _) | (_, _, true) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        _ => not_found(),
    }
}

fn ready() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ready"}"#.to_vec())
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        br#"{"error":"no such function"}"#.to_vec(),
    )
}

async fn invoke(app: &App, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let name = parts.uri.path().trim_start_matches('/');
    let Some(function) = [webhook::FUNCTION, export::FUNCTION, tickets::FUNCTION]
        .into_iter()
        .find(|f| *f == name)
    else {
        return not_found();
    };
    let Some(id) = parts
        .headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        tracing::warn!(function, "request without an invocation id refused");
        return failure(
            StatusCode::BAD_REQUEST,
            "not an invocation from the Functions host",
        );
    };
    let body = match axum::body::to_bytes(body, MAX_ENVELOPE_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invocation body unreadable or larger than 16 MiB",
            )
        }
    };
    let inv = Invocation {
        id: id.to_owned(),
        function,
    };
    let (status, body) = handle_invocation(app, &inv, &body).await;
    json_response(status, body)
}

/// Runs one invocation on the host's envelope `body` and builds the reply the host gets:
/// 200 with the invocation's outputs, or a non-2xx `{"error": …}` that fails it (400 for an
/// envelope that cannot be decoded, 503 for a transient condition). Everything after routing
/// and the invocation-id check happens here, so the fuzz harness drives exactly this. Every
/// line logged meanwhile carries the invocation id; the last one sums the invocation up.
pub async fn handle_invocation(app: &App, inv: &Invocation, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let started = Instant::now();
    let function = inv.function;
    telemetry::in_invocation(&inv.id, function, async move {
        let result = match Envelope::parse(body) {
            Err(e) => Err(InvocationError::from(e)),
            Ok(envelope) => match function {
                webhook::FUNCTION => webhook::invoke(app, envelope).await,
                // Boxed: their futures are large, and would make every webhook's future
                // (moved on each call) as large.
                export::FUNCTION => Box::pin(export::invoke(app, inv, envelope)).await,
                _ => Box::pin(tickets::invoke(app, inv, envelope)).await,
            },
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(reply) => {
                telemetry::log_invocation(duration_ms, false, &reply.summary);
                (StatusCode::OK, reply.to_json())
            }
            Err(e) => {
                let status = match e {
                    InvocationError::Envelope(_) => StatusCode::BAD_REQUEST,
                    InvocationError::Retry(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                let reason = e.to_string();
                let summary = telemetry::InvocationSummary {
                    reason: Some(reason.clone()),
                    ..Default::default()
                };
                telemetry::log_invocation(duration_ms, true, &summary);
                (status, error_body(&reason).into_bytes())
            }
        }
    })
    .await
}

/// A non-2xx reply: the host marks the invocation failed (and ignores the body).
fn failure(status: StatusCode, reason: &str) -> Response {
    json_response(status, error_body(reason).into_bytes())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called, not
/// when the future is first polled.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
}
