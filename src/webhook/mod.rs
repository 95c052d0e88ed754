//! `QualtricsWebhook`: receives Qualtrics deliveries over the HTTP trigger.
//!
//! Verification and queueing arrive with the webhook issue; until then `GET` answers 200 (as
//! Qualtrics' URL check expects) and `POST` says plainly that intake is not implemented.

use crate::host::{Envelope, HttpOutput, Invocation, InvocationError, InvocationReply};
use crate::startup::App;

pub const FUNCTION: &str = "QualtricsWebhook";
const REQUEST: &str = "req";
const RESPONSE: &str = "res";

pub async fn invoke(
    _app: &App,
    inv: &Invocation,
    envelope: Envelope,
) -> Result<InvocationReply, InvocationError> {
    let req = envelope.http(REQUEST)?;
    let out = match req.method.to_ascii_uppercase().as_str() {
        "GET" => HttpOutput::json(200, r#"{"status":"ok"}"#),
        "POST" => HttpOutput::error(501, "webhook intake is not implemented yet"),
        _ => HttpOutput::error(405, "method not allowed"),
    };
    let status = out.status;
    Ok(InvocationReply::new().http(RESPONSE, out).log(format!(
        "{} {} -> {status} ({})",
        req.method, FUNCTION, inv.id
    )))
}
