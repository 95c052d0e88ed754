//! Handler → host: the reply the host accepts (always 200 + `application/json` + an object).

use serde::Serialize;
use serde_json::{Map, Value};

/// A completed invocation's reply: outputs by binding name, log lines, no `ReturnValue`.
///
/// `ReturnValue` is always `null`: an object there would overwrite same-named outputs.
#[derive(Debug, Default, Serialize)]
pub struct InvocationReply {
    #[serde(rename = "Outputs")]
    outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    return_value: Option<()>,
}

/// The `http` output binding: the status and body the caller receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOutput {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl HttpOutput {
    /// A JSON reply; `body` must already be JSON text.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }

    /// `{"error": reason}` with the given status.
    pub fn error(status: u16, reason: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": reason }).to_string())
    }
}

impl InvocationReply {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the `http` output `binding`. The status travels as a string, as the host expects.
    pub fn http(mut self, binding: &str, out: HttpOutput) -> Self {
        self.outputs.insert(
            binding.to_string(),
            serde_json::json!({
                "statusCode": out.status.to_string(),
                "headers": { "Content-Type": out.content_type },
                "body": out.body,
            }),
        );
        self
    }

    /// Sets the queue output `binding` to these exact message texts.
    ///
    /// Each text is sent as an element of a JSON array of strings, the one form the host
    /// enqueues byte-exact (a bare string may be base64-decoded or re-indented). An empty
    /// list sets nothing, so nothing is enqueued.
    pub fn queue(mut self, binding: &str, messages: Vec<String>) -> Self {
        if !messages.is_empty() {
            self.outputs.insert(
                binding.to_string(),
                Value::Array(messages.into_iter().map(Value::String).collect()),
            );
        }
        self
    }

    /// Adds a line to the invocation's logs (shown by the host with the invocation id).
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising maps of strings and values cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape_is_what_the_host_parses() {
        let r = InvocationReply::new()
            .http("res", HttpOutput::error(401, "bad signature"))
            .queue("tickets", vec![r#"{"v":1}"#.into()])
            .queue("deadletter", vec![])
            .log("hmac mismatch");
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "Outputs": {
                    "res": {"statusCode": "401", "headers": {"Content-Type": "application/json"},
                            "body": "{\"error\":\"bad signature\"}"},
                    "tickets": ["{\"v\":1}"]
                },
                "Logs": ["hmac mismatch"],
                "ReturnValue": null
            })
        );
    }

    #[test]
    fn empty_reply_is_still_a_non_empty_object() {
        assert_eq!(
            InvocationReply::new().to_json(),
            br#"{"Outputs":{},"Logs":[],"ReturnValue":null}"#
        );
    }
}
