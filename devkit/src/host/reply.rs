//! Handler → host replies, read as the host reads them (reference §3): status and content-type
//! rules, the empty/`null` hang, `res` conversion and the queue-output conversion table.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

/// Why an invocation failed, as the host would see it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("handler replied {status}: {body}")]
    Status { status: u16, body: String },
    #[error("handler reply has content type {0:?}, not application/json")]
    ContentType(String),
    #[error("handler reply is not JSON: {0}")]
    Json(String),
    /// The real host never completes such an invocation: it hangs until `functionTimeout`,
    /// then restarts the handler. Always a defect.
    #[error("HANG: handler replied 2xx with an empty or null body; the Functions host would hang until functionTimeout and restart the worker")]
    Hang,
    #[error("transport error talking to the handler: {0}")]
    Transport(String),
}

/// A successful reply's parts.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
}

/// Parses a reply (status, `Content-Type`, body).
pub fn parse_reply(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, ReplyError> {
    if !(200..300).contains(&status) {
        return Err(ReplyError::Status {
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() || text.trim() == "null" {
        return Err(ReplyError::Hang);
    }
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media != "application/json" && media != "text/json" {
        return Err(ReplyError::ContentType(
            content_type.unwrap_or("").to_string(),
        ));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| ReplyError::Json(e.to_string()))?;
    let Value::Object(top) = v else {
        return Err(ReplyError::Json("top level is not an object".into()));
    };
    // Top-level names are case-insensitive for the host.
    let field = |name: &str| {
        top.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut outputs = match field("Outputs") {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    let logs = match field("Logs") {
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|l| match l {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    // An object ReturnValue overwrites same-named outputs (WorkerFunctionInvoker).
    if let Some(Value::Object(ret)) = field("ReturnValue") {
        for (k, v) in ret {
            outputs.insert(k, v);
        }
    }
    Ok(Reply { outputs, logs })
}

/// The HTTP response the caller gets from the `res` output (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResult {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Converts `Outputs[binding]` of an HTTP function; `outputs_present` is whether `Outputs`
/// existed at all.
pub fn http_result(
    outputs: &Map<String, Value>,
    binding: &str,
    outputs_present: bool,
) -> HttpResult {
    let Some(res) = outputs.get(binding) else {
        return if outputs_present {
            HttpResult {
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    "application/json; charset=utf-8".into(),
                )],
                body: b"{}".to_vec(),
            }
        } else {
            HttpResult {
                status: 204,
                headers: vec![],
                body: vec![],
            }
        };
    };
    let get = |name: &str| {
        res.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    let status = match get("statusCode") {
        Some(Value::String(s)) => s.trim().parse().unwrap_or(200),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(200),
        _ => 200,
    };
    let body = match get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => indented(other).into_bytes(),
    };
    let mut headers = Vec::new();
    if let Some(Value::Object(h)) = get("headers") {
        for (k, v) in h {
            let value = match v {
                Value::String(s) => s.clone(),
                other => indented(other),
            };
            headers.push((k.clone(), value));
        }
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
    }
    HttpResult {
        status,
        headers,
        body,
    }
}

/// A queue output that the product must never rely on (it works, but by accident).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "queue output {binding:?} is a bare {kind}; send an array of strings for byte-exact messages"
)]
pub struct FragileOutput {
    pub binding: String,
    pub kind: &'static str,
}

/// Converts `Outputs[binding]` of a queue output to message bodies, exactly as the host does
/// (the §3.3 table), plus a warning when the output took a fragile path (a bare string or
/// object), which the local host reports loudly.
pub fn queue_messages(binding: &str, v: Option<&Value>) -> (Vec<Vec<u8>>, Option<FragileOutput>) {
    let fragile = |kind| {
        Some(FragileOutput {
            binding: binding.to_string(),
            kind,
        })
    };
    match v {
        None | Some(Value::Null) => (vec![], None),
        Some(Value::String(s)) => {
            if let Some(bytes) = dotnet_base64(s) {
                return (vec![bytes], fragile("string (decoded as base64)"));
            }
            if is_json(s) {
                return match serde_json::from_str::<Value>(s.trim()) {
                    Ok(Value::Array(items)) => (
                        items.iter().map(element_bytes).collect(),
                        fragile("JSON string"),
                    ),
                    Ok(token) => (
                        vec![indented(&token).into_bytes()],
                        fragile("JSON string (re-indented)"),
                    ),
                    Err(_) => (vec![s.clone().into_bytes()], fragile("string")),
                };
            }
            (vec![s.clone().into_bytes()], fragile("string"))
        }
        Some(Value::Array(items)) => (items.iter().map(element_bytes).collect(), None),
        Some(other) => (
            vec![indented(other).into_bytes()],
            fragile("object (re-indented)"),
        ),
    }
}

fn element_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.clone().into_bytes(),
        Value::Bool(true) => b"True".to_vec(),
        Value::Bool(false) => b"False".to_vec(),
        Value::Number(n) => n.to_string().into_bytes(),
        other => indented(other).into_bytes(),
    }
}

/// `Utility.IsJson`: a text test on the trimmed string.
fn is_json(s: &str) -> bool {
    let t = s.trim();
    (t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']'))
}

/// `Convert.FromBase64String`: whitespace ignored, length a multiple of 4, at most two `=`.
fn dotnet_base64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.len().is_multiple_of(4) {
        return None;
    }
    STANDARD.decode(compact).ok()
}

/// Newtonsoft `Formatting.Indented` on Linux: two spaces, `"key": value`, `\n`.
pub fn indented(v: &Value) -> String {
    fn write(v: &Value, depth: usize, out: &mut String) {
        let pad = |d: usize, out: &mut String| out.extend(std::iter::repeat_n("  ", d));
        match v {
            Value::Object(o) if !o.is_empty() => {
                out.push_str("{\n");
                for (i, (k, val)) in o.iter().enumerate() {
                    pad(depth + 1, out);
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    write(val, depth + 1, out);
                    if i + 1 < o.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                pad(depth, out);
                out.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                out.push_str("[\n");
                for (i, val) in a.iter().enumerate() {
                    pad(depth + 1, out);
                    write(val, depth + 1, out);
                    if i + 1 < a.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                pad(depth, out);
                out.push(']');
            }
            Value::Object(_) => out.push_str("{}"),
            Value::Array(_) => out.push_str("[]"),
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: Value) -> Vec<String> {
        queue_messages("q", Some(&v))
            .0
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    #[test]
    fn queue_output_table() {
        assert_eq!(msgs(json!([r#"{"v":1}"#])), vec![r#"{"v":1}"#]);
        assert_eq!(msgs(json!(["test"])), vec!["test"]);
        assert_eq!(
            queue_messages("q", Some(&json!("test"))).0,
            vec![vec![0xB5, 0xEB, 0x2D]]
        );
        assert_eq!(msgs(json!("")), vec![""]);
        assert_eq!(msgs(json!(r#"{"v":1}"#)), vec!["{\n  \"v\": 1\n}"]);
        assert_eq!(msgs(json!(r#"["a","b"]"#)), vec!["a", "b"]);
        assert_eq!(msgs(json!("hello")), vec!["hello"]);
        assert_eq!(msgs(json!({"v": 1})), vec!["{\n  \"v\": 1\n}"]);
        assert_eq!(msgs(json!([{"v": 1}])), vec!["{\n  \"v\": 1\n}"]);
        assert_eq!(msgs(json!([1, true, null])), vec!["1", "True", ""]);
        assert!(queue_messages("q", Some(&json!(["x"]))).1.is_none());
        assert!(queue_messages("q", Some(&json!("hello"))).1.is_some());
        assert!(queue_messages("q", None).0.is_empty());
    }

    #[test]
    fn empty_and_null_replies_are_hangs() {
        for body in [&b""[..], b"null", b"  "] {
            assert_eq!(
                parse_reply(200, Some("application/json"), body).unwrap_err(),
                ReplyError::Hang
            );
        }
        assert_eq!(parse_reply(204, None, b"").unwrap_err(), ReplyError::Hang);
    }

    #[test]
    fn status_and_content_type_rules() {
        assert!(matches!(
            parse_reply(401, Some("application/json"), b"{}"),
            Err(ReplyError::Status { status: 401, .. })
        ));
        assert!(matches!(
            parse_reply(200, Some("text/plain"), b"{}"),
            Err(ReplyError::ContentType(_))
        ));
        let r = parse_reply(
            200,
            Some("application/json; charset=utf-8"),
            br#"{"outputs":{"a":["x"]},"logs":["l"],"ReturnValue":{"a":["y"]}}"#,
        )
        .unwrap();
        assert_eq!(r.outputs["a"], json!(["y"]));
        assert_eq!(r.logs, vec!["l"]);
    }

    #[test]
    fn res_conversion() {
        let o = json!({"res": {"statusCode": "401", "headers": {"Content-Type": "application/json"}, "body": "{\"e\":1}"}});
        let r = http_result(o.as_object().unwrap(), "res", true);
        assert_eq!((r.status, r.body.as_slice()), (401, &b"{\"e\":1}"[..]));
        let o = json!({"res": {"statusCode": "abc", "status": 500, "body": {"a": 1}}});
        let r = http_result(o.as_object().unwrap(), "res", true);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{\n  \"a\": 1\n}");
        assert!(r
            .headers
            .contains(&("Content-Type".into(), "text/plain; charset=utf-8".into())));
        let r = http_result(&Map::new(), "res", true);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    }
}
