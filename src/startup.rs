//! Builds the app from typed configuration and serves the custom-handler endpoints:
//! `GET /` for readiness and `POST /{FunctionName}` per invocation.

use crate::config::HandlerSettings;
use crate::deps::Deps;
use crate::functions::{Function, Functions};
use crate::host::{error_body, Envelope, Invocation, InvocationError, INVOCATION_ID_HEADER};
use crate::secrets::SecretName;
use crate::telemetry;
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
    let bridge = settings.load_bridge()?;
    // Identity, secrets, storage and every capability: a half-configured identity or an
    // unusable setting stops start-up with a message naming it; nothing here calls the network.
    let deps = Deps::build(Arc::new(crate::env::env_lookup))?;
    let functions = Arc::new(Functions::build(&bridge, &deps)?);
    // Read the webhook key once in the background: warms the cache and logs (without the
    // value) whether the secrets source works, while the handler already serves.
    let secrets = deps.secrets.clone();
    tokio::spawn(async move {
        secrets.warm_up(&[SecretName::QualtricsWebhookKey]).await;
    });
    tracing::info!(
        port = settings.port,
        surveys = bridge.surveys.len(),
        "handler ready"
    );
    serve(listener, functions, shutdown).await
}

/// Serves the handler on `listener` until SIGTERM or Ctrl-C.
pub async fn serve(
    listener: TcpListener,
    functions: Arc<Functions>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = tower::service_fn(move |request: Request| {
        let functions = functions.clone();
        async move { Ok::<_, Infallible>(route(&functions, request).await) }
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
async fn route(functions: &Functions, request: Request) -> Response {
    let segment = request.uri().path().strip_prefix('/');
    let is_root = segment == Some("");
    let is_function = segment.is_some_and(|s| !s.is_empty() && !s.contains('/'));
    match (request.method(), is_root, is_function) {
        (&Method::GET, true, _) => ready(),
        (&Method::POST, _, true) => invoke(functions, request).await,
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

async fn invoke(functions: &Functions, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let name = parts.uri.path().trim_start_matches('/');
    let Some(function) = Function::named(name) else {
        return not_found();
    };
    let Some(id) = parts
        .headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        tracing::warn!(
            function = function.spec().name,
            "request without an invocation id refused"
        );
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
    let (status, body) = handle_invocation(functions, function, id.to_owned(), &body).await;
    json_response(status, body)
}

/// Runs one invocation on the host's envelope `body` and builds the reply the host gets:
/// 200 with the invocation's outputs, or a non-2xx `{"error": …}` that fails it (400 for an
/// envelope that cannot be decoded, 503 for a transient condition). Everything after routing
/// and the invocation-id check happens here, so the fuzz harness drives exactly this. Every
/// line logged meanwhile carries the invocation id; the last one sums the invocation up.
pub async fn handle_invocation(
    functions: &Functions,
    function: Function,
    id: String,
    body: &[u8],
) -> (StatusCode, Vec<u8>) {
    let started = Instant::now();
    let inv = Invocation {
        id,
        function: function.spec(),
    };
    let inv = &inv;
    telemetry::in_invocation(&inv.id, inv.function.name, async move {
        let result = match Envelope::parse(body) {
            Err(e) => Err(InvocationError::from(e)),
            Ok(envelope) => functions.invoke(function, inv, envelope).await,
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
                    InvocationError::Retry { .. } => StatusCode::SERVICE_UNAVAILABLE,
                };
                let reason = e.chain();
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
