//! Handler → host: the reply the host accepts (always 200 + `application/json` + an object).

use crate::json;
use crate::telemetry::{InvocationSummary, Severity};

/// A completed invocation's reply: outputs by binding name, log lines, no `ReturnValue`.
///
/// `ReturnValue` is always `null`: an object there would overwrite same-named outputs.
/// Written straight from these fields (no JSON value tree): it is built on every webhook.
#[derive(Debug, Default)]
pub struct InvocationReply {
    outputs: Vec<(&'static str, Output)>,
    logs: Vec<String>,
    /// What the invocation did, for the dispatcher's one log line; not sent to the host.
    pub summary: InvocationSummary,
}

/// One output binding's value.
#[derive(Debug)]
enum Output {
    Http(HttpOutput),
    /// Message texts, each sent as an element of a JSON array of strings.
    Queue(Vec<String>),
}

/// The `http` output binding: the status and body the caller receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOutput {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `Retry-After` in seconds, for a 503 the caller should retry (Zendesk retries a 503
    /// only when this header says under 60 s).
    pub retry_after: Option<u16>,
}

impl HttpOutput {
    /// A JSON reply; `body` must already be JSON text.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
            retry_after: None,
        }
    }

    /// The same reply with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u16) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// `{"error": reason}` with the given status.
    pub fn error(status: u16, reason: &str) -> Self {
        Self::json(status, error_body(reason))
    }
}

/// `{"error":"…"}`: the body of every refusal and failed invocation.
pub fn error_body(reason: &str) -> String {
    let mut out = Vec::with_capacity(reason.len() + 12);
    out.extend_from_slice(b"{\"error\":");
    json::push_str(&mut out, reason);
    out.push(b'}');
    // Only a whole string and ASCII went in.
    String::from_utf8(out).unwrap_or_default()
}

impl InvocationReply {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&mut self, binding: &'static str, out: Output) {
        self.outputs.retain(|(b, _)| *b != binding);
        self.outputs.push((binding, out));
    }

    /// Sets the `http` output `binding`. The status travels as a string, as the host expects.
    pub fn http(mut self, binding: &'static str, out: HttpOutput) -> Self {
        self.set(binding, Output::Http(out));
        self
    }

    /// Sets the queue output `binding` to these exact message texts.
    ///
    /// Each text is sent as an element of a JSON array of strings, the one form the host
    /// enqueues byte-exact (a bare string may be base64-decoded or re-indented). An empty
    /// list sets nothing, so nothing is enqueued.
    pub fn queue(mut self, binding: &'static str, messages: Vec<String>) -> Self {
        if !messages.is_empty() {
            self.set(binding, Output::Queue(messages));
        }
        self
    }

    /// Adds a line to the invocation's logs (shown by the host with the invocation id).
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    /// An HTTP request refused: `status` and `{"error": reason}` on the `http` output
    /// `binding`, the log line `POST {function} -> {status} refused: {detail}` and a warning
    /// summary. `reason` is what the caller sees; `detail` may say more, never a value.
    pub fn refused(
        binding: &'static str,
        function: &str,
        status: u16,
        reason: &str,
        detail: String,
    ) -> Self {
        let log = [
            "POST ",
            function,
            " -> ",
            itoa::Buffer::new().format(status),
            " refused: ",
            &detail,
        ]
        .concat();
        Self::new()
            .http(binding, HttpOutput::error(status, reason))
            .log(log)
            .summary(InvocationSummary {
                outcome: Some("refused"),
                status: Some(status),
                reason: Some(detail),
                severity: Severity::Warn,
                ..Default::default()
            })
    }

    /// Sets what the invocation's log line says it did.
    pub fn summary(mut self, summary: InvocationSummary) -> Self {
        self.summary = summary;
        self
    }

    /// The reply's JSON text: `{"Outputs":{…},"Logs":[…],"ReturnValue":null}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"Outputs\":{");
        for (i, (binding, output)) in self.outputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::push_str(&mut out, binding);
            out.push(b':');
            match output {
                Output::Http(h) => {
                    // The status travels as a string, as the host expects.
                    out.extend_from_slice(b"{\"statusCode\":\"");
                    out.extend_from_slice(itoa::Buffer::new().format(h.status).as_bytes());
                    out.extend_from_slice(b"\",\"headers\":{\"Content-Type\":");
                    json::push_str(&mut out, h.content_type);
                    if let Some(secs) = h.retry_after {
                        out.extend_from_slice(b",\"Retry-After\":\"");
                        out.extend_from_slice(itoa::Buffer::new().format(secs).as_bytes());
                        out.push(b'"');
                    }
                    out.extend_from_slice(b"},\"body\":");
                    json::push_str(&mut out, &h.body);
                    out.push(b'}');
                }
                Output::Queue(texts) => push_str_array(&mut out, texts),
            }
        }
        out.extend_from_slice(b"},\"Logs\":");
        push_str_array(&mut out, &self.logs);
        out.extend_from_slice(b",\"ReturnValue\":null}");
        out
    }
}

/// `["…","…"]`.
fn push_str_array(out: &mut Vec<u8>, texts: &[String]) {
    out.push(b'[');
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::push_str(out, text);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
    fn retry_after_travels_as_a_header() {
        let r = InvocationReply::new().http("res", HttpOutput::error(503, "busy").retry_after(10));
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v["Outputs"]["res"]["headers"],
            serde_json::json!({"Content-Type": "application/json", "Retry-After": "10"})
        );
    }

    #[test]
    fn error_body_is_what_serde_writes() {
        for reason in ["bad signature", "a \"quoted\" \\ reason\n", "é"] {
            assert_eq!(
                error_body(reason),
                serde_json::json!({ "error": reason }).to_string()
            );
        }
    }

    #[test]
    fn empty_reply_is_still_a_non_empty_object() {
        assert_eq!(
            InvocationReply::new().to_json(),
            br#"{"Outputs":{},"Logs":[],"ReturnValue":null}"#
        );
    }
}
