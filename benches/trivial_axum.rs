//! Baseline for `scripts/bench-webhook.sh`: the cheapest possible custom handler — axum on
//! the same runtime, answering every `POST /{function}` with a fixed invocation reply (an
//! HTTP 202 output and one queue message), without reading the envelope.
//!
//! usage: FUNCTIONS_CUSTOMHANDLER_PORT=PORT bench-trivial-axum

use axum::http::header;
use axum::routing::post;
use axum::Router;

const REPLY: &str = r#"{"Outputs":{"res":{"statusCode":"202","headers":{"Content-Type":"application/json"},"body":"{\"status\":\"queued\"}"},"tickets":["{\"v\":1,\"surveyId\":\"SV_22VlHYNeldrrrkp\",\"responseId\":\"R_1l9mcVuXubb4aGm\",\"source\":\"webhook\",\"topic\":\"sapdevelopment.surveyengine.completedResponse.SV_22VlHYNeldrrrkp\",\"receivedAt\":\"2026-01-01T00:00:00Z\"}"]},"Logs":["POST QualtricsWebhook -> 202"],"ReturnValue":null}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7072);
    let app = Router::new().route(
        "/{function}",
        post(|| async { ([(header::CONTENT_TYPE, "application/json")], REPLY) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
