//! Floor for `scripts/bench-webhook.sh`: trivial axum plus the one piece of work no correct
//! handler can skip — it reads the envelope into memory and computes the HMAC-SHA512 of a
//! `MSG`-sized text (713 bytes, the benchmark delivery's) with a prepared key, then answers
//! the same fixed reply as `trivial_axum.rs`. Nothing is parsed: this is what the bridge
//! would cost if parsing, routing, replying and logging were free.
//!
//! usage: FUNCTIONS_CUSTOMHANDLER_PORT=PORT bench-floor-axum

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use axum::Router;
use std::hint::black_box;
use std::sync::Arc;

const REPLY: &str = r#"{"Outputs":{"res":{"statusCode":"202","headers":{"Content-Type":"application/json"},"body":"{\"status\":\"queued\"}"},"tickets":["{\"v\":1,\"surveyId\":\"SV_22VlHYNeldrrrkp\",\"responseId\":\"R_1l9mcVuXubb4aGm\",\"source\":\"webhook\",\"topic\":\"sapdevelopment.surveyengine.completedResponse.SV_22VlHYNeldrrrkp\",\"receivedAt\":\"2026-01-01T00:00:00Z\"}"]},"Logs":["POST QualtricsWebhook -> 202"],"ReturnValue":null}"#;
const MSG_BYTES: usize = 713;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7073);
    let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA512, b"bench-floor-key"));
    let app = Router::new().route(
        "/{function}",
        post(move |body: Bytes| {
            let key = key.clone();
            async move {
                // The MSG is decoded from the body in the real handler; here the body's first
                // bytes stand in for it, so the hash reads memory that just arrived.
                let msg = body.get(..MSG_BYTES).unwrap_or(&body);
                black_box(hmac::sign(&key, msg));
                ([(header::CONTENT_TYPE, "application/json")], REPLY)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
