//! Host → handler envelopes with the host's exact encodings (reference §2): HTTP `req` objects,
//! `TimerInfo`, and double-encoded queue messages with string metadata.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

/// `JsonConvert.SerializeObject(value)` for a scalar, sent as a JSON string (§2.1).
fn host_scalar(v: &Value) -> Value {
    Value::String(v.to_string())
}

/// The `sys` metadata object.
fn sys(function: &str, now: &str) -> Value {
    json!({ "MethodName": function, "UtcNow": now, "RandGuid": uuid::Uuid::new_v4().to_string() })
}

/// Adds each top-level non-array property of a JSON-object text to `metadata`, overwriting
/// (the host's `Utility.ApplyBindingData`): objects as objects, every scalar first turned into
/// text by Newtonsoft's `(string)JToken` and then double-encoded by §2.1, so `3` arrives as
/// `"\"3\""` and `true` as `"\"True\""`; a `null` property is skipped.
fn apply_binding_data(text: &str, metadata: &mut Map<String, Value>) {
    let trimmed = text.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return;
    }
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(trimmed) {
        for (k, v) in obj {
            let text = match v {
                Value::Array(_) | Value::Null => continue,
                Value::Object(_) => {
                    metadata.insert(k, v);
                    continue;
                }
                Value::String(s) => s,
                Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
                Value::Number(n) => dotnet_number(&n),
            };
            metadata.insert(k, host_scalar(&Value::String(text)));
        }
    }
}

/// `Convert.ToString(number, InvariantCulture)`: integers as written; doubles in .NET's
/// shortest round-trip form, which switches to `E+XX` notation from 1e15 and from 1e-5 down.
fn dotnet_number(n: &serde_json::Number) -> String {
    let Some(x) = n.as_f64().filter(|_| n.is_f64()) else {
        return n.to_string();
    };
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..15).contains(&exp) {
        format!("{x}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}E{sign}{:02}", exp.abs())
    }
}

/// An incoming HTTP request as the front door saw it.
#[derive(Debug, Clone)]
pub struct IncomingHttp {
    pub method: String,
    /// `http://host/path?query`, query raw.
    pub url: String,
    /// Query parameters in order, decoded.
    pub query: Vec<(String, String)>,
    /// Headers in order, names as received.
    pub headers: Vec<(String, String)>,
    /// Route values of a templated route (`{system}` of `tickets/{system}/events`).
    pub params: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The authlevel claim value (`Function`, `Admin`, or `Anonymous`).
    pub auth_level: &'static str,
}

impl IncomingHttp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Body` per §2.2: absent without `Content-Length > 0`; base64 for octet-stream and
    /// multipart; otherwise UTF-8 text with any BOM stripped and invalid bytes as U+FFFD.
    pub fn body_value(&self) -> Option<Value> {
        let len: u64 = self.header("content-length")?.trim().parse().ok()?;
        if len == 0 {
            return None;
        }
        let media = self
            .header("content-type")
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if media == "application/octet-stream" || media.contains("multipart") {
            return Some(Value::String(STANDARD.encode(&self.body)));
        }
        Some(Value::String(decode_text(&self.body)))
    }
}

/// .NET `StreamReader(UTF8, detectEncodingFromByteOrderMarks: true)`.
pub fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |b: &[u8], le: bool| {
        let units: Vec<u16> = b
            .chunks(2)
            .map(|c| {
                let pair = [c[0], *c.get(1).unwrap_or(&0)];
                if le {
                    u16::from_le_bytes(pair)
                } else {
                    u16::from_be_bytes(pair)
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    let utf32 = |b: &[u8], le: bool| {
        b.chunks(4)
            .map(|c| {
                let mut q = [0u8; 4];
                q[..c.len()].copy_from_slice(c);
                let n = if le {
                    u32::from_le_bytes(q)
                } else {
                    u32::from_be_bytes(q)
                };
                char::from_u32(n).unwrap_or('\u{FFFD}')
            })
            .collect()
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        [0xFF, 0xFE, 0, 0, rest @ ..] => utf32(rest, true),
        [0, 0, 0xFE, 0xFF, rest @ ..] => utf32(rest, false),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Kestrel presents known header names canonically; others arrive as sent (hyper: lower case).
fn canonical_header(name: &str) -> String {
    const KNOWN: &[&str] = &[
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Authorization",
        "Cache-Control",
        "Connection",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "Cookie",
        "Expect",
        "Host",
        "Origin",
        "Referer",
        "Transfer-Encoding",
        "User-Agent",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| k.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// The HTTP trigger envelope for `function`, its trigger bound as `binding`.
pub fn http_envelope(function: &str, binding: &str, req: &IncomingHttp, now: &str) -> Value {
    let mut query = Map::new();
    for (k, v) in &req.query {
        match query.get_mut(k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(v);
            }
            _ => {
                query.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let mut headers: Map<String, Value> = Map::new();
    let mut header_strings: Map<String, Value> = Map::new();
    for (k, v) in &req.headers {
        let name = canonical_header(k);
        match headers.get_mut(&name) {
            Some(Value::Array(vs)) => vs.push(Value::String(v.clone())),
            _ => {
                headers.insert(name.clone(), json!([v]));
            }
        }
        match header_strings.get_mut(&name) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(v);
            }
            _ => {
                header_strings.insert(name, Value::String(v.clone()));
            }
        }
    }
    let mut data_req = json!({
        "Url": req.url,
        "Method": req.method,
        "Query": Value::Object(query.clone()),
        "Headers": Value::Object(headers),
        "Params": Value::Object(
            req.params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        ),
        "Identities": [{
            "AuthenticationType": "WebJobsAuthLevel",
            "IsAuthenticated": true,
            "Actor": null,
            "BootstrapContext": null,
            "Claims": [{
                "Issuer": "LOCAL AUTHORITY",
                "OriginalIssuer": "LOCAL AUTHORITY",
                "Properties": {},
                "Type": "http://schemas.microsoft.com/2017/07/functions/claims/authlevel",
                "Value": req.auth_level,
                "ValueType": "http://www.w3.org/2001/XMLSchema#string"
            }],
            "Label": null,
            "Name": null,
            "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
        }],
    });
    let body = req.body_value();
    if let (Some(obj), Some(b)) = (data_req.as_object_mut(), body.clone()) {
        obj.insert("Body".into(), b);
    }
    let mut metadata = Map::new();
    if let Some(Value::String(text)) = &body {
        apply_binding_data(text, &mut metadata);
    }
    for (k, v) in &query {
        if !k.eq_ignore_ascii_case("code") {
            metadata.insert(k.clone(), host_scalar(v));
        }
    }
    // Route values are binding data too (encoded like query values).
    for (k, v) in &req.params {
        metadata.insert(k.clone(), host_scalar(&Value::String(v.clone())));
    }
    metadata.insert("Query".into(), Value::Object(query));
    metadata.insert("Headers".into(), Value::Object(header_strings));
    metadata.insert("sys".into(), sys(function, now));
    json!({ "Data": { binding: data_req }, "Metadata": metadata })
}

/// `ScheduleStatus` of a timer invocation.
#[derive(Debug, Clone)]
pub struct TimerStatus {
    pub last: String,
    pub next: String,
    pub last_updated: String,
}

/// The timer trigger envelope (`TimerInfo`; §2.3).
pub fn timer_envelope(
    function: &str,
    binding: &str,
    status: Option<&TimerStatus>,
    past_due: bool,
    now: &str,
) -> Value {
    let schedule_status = match status {
        Some(s) => json!({ "Last": s.last, "Next": s.next, "LastUpdated": s.last_updated }),
        None => Value::Null,
    };
    json!({
        "Data": { binding: {
            "Schedule": { "AdjustForDST": true },
            "ScheduleStatus": schedule_status,
            "IsPastDue": past_due
        }},
        "Metadata": { "sys": sys(function, now) }
    })
}

/// A dequeued message ready to deliver.
#[derive(Debug, Clone)]
pub struct QueueDelivery {
    pub text: String,
    pub id: String,
    pub pop_receipt: String,
    pub dequeue_count: u32,
    pub insertion_time: String,
    pub expiration_time: String,
    pub next_visible_time: String,
}

/// The queue trigger envelope (§2.4): the text double-encoded, `DequeueCount` a string,
/// `Id`/`PopReceipt` quoted, and a JSON object's properties copied into `Metadata`.
pub fn queue_envelope(function: &str, binding: &str, m: &QueueDelivery, now: &str) -> Value {
    let mut metadata = Map::new();
    metadata.insert("DequeueCount".into(), host_scalar(&json!(m.dequeue_count)));
    metadata.insert("ExpirationTime".into(), json!(m.expiration_time));
    metadata.insert("Id".into(), host_scalar(&json!(m.id)));
    metadata.insert("InsertionTime".into(), json!(m.insertion_time));
    metadata.insert("NextVisibleTime".into(), json!(m.next_visible_time));
    metadata.insert("PopReceipt".into(), host_scalar(&json!(m.pop_receipt)));
    metadata.insert("sys".into(), sys(function, now));
    apply_binding_data(&m.text, &mut metadata);
    json!({ "Data": { binding: host_scalar(&json!(m.text)) }, "Metadata": metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], body: &[u8]) -> IncomingHttp {
        IncomingHttp {
            method: "POST".into(),
            url: "http://127.0.0.1/api/x?code=k&a=1&a=2".into(),
            query: vec![
                ("code".into(), "k".into()),
                ("a".into(), "1".into()),
                ("a".into(), "2".into()),
            ],
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            params: vec![],
            body: body.to_vec(),
            auth_level: "Function",
        }
    }

    fn delivery(text: &str) -> QueueDelivery {
        QueueDelivery {
            text: text.into(),
            id: "52d5".into(),
            pop_receipt: "MThG".into(),
            dequeue_count: 1,
            insertion_time: "t".into(),
            expiration_time: "t".into(),
            next_visible_time: "t".into(),
        }
    }

    #[test]
    fn queue_message_is_double_encoded_with_string_metadata() {
        let v = queue_envelope("F", "msg", &delivery(r#"{"a":1}"#), "now");
        let wire = v.to_string();
        assert!(wire.contains(r#""msg":"\"{\\\"a\\\":1}\"""#), "{wire}");
        assert_eq!(v["Metadata"]["DequeueCount"], "1");
        assert_eq!(v["Metadata"]["Id"], "\"52d5\"");
        assert_eq!(v["Metadata"]["PopReceipt"], "\"MThG\"");
        // The host turns a message's scalar properties into text, then double-encodes them
        // (functions-host-protocol-verified.md, claim 3 caveat).
        assert_eq!(v["Metadata"]["a"], "\"1\"");
    }

    #[test]
    fn message_properties_overwrite_metadata_as_the_host_prints_them() {
        let text = r#"{"DequeueCount":3,"ok":true,"no":false,"x":1.5,"big":1e20,"tiny":0.00001,"whole":2.0,"s":"t","o":{"k":1},"l":[1],"n":null,"Id":null}"#;
        let v = queue_envelope("F", "msg", &delivery(text), "now");
        let md = &v["Metadata"];
        assert_eq!(md["DequeueCount"], "\"3\"");
        assert_eq!(md["ok"], "\"True\"");
        assert_eq!(md["no"], "\"False\"");
        assert_eq!(md["x"], "\"1.5\"");
        assert_eq!(md["big"], "\"1E+20\"");
        assert_eq!(md["tiny"], "\"1E-05\"");
        assert_eq!(md["whole"], "\"2\"");
        assert_eq!(md["s"], "\"t\"");
        assert_eq!(md["o"], json!({"k": 1}));
        assert!(md.get("l").is_none() && md.get("n").is_none());
        // A null property does not overwrite the host's own key.
        assert_eq!(md["Id"], "\"52d5\"");
    }

    #[test]
    fn body_rules() {
        let r = req(
            &[
                ("content-type", "application/json"),
                ("content-length", "5"),
            ],
            b"\xEF\xBB\xBFhi\xFF",
        );
        assert_eq!(r.body_value(), Some(json!("hi\u{FFFD}")));
        let r = req(
            &[
                ("content-type", "application/octet-stream"),
                ("content-length", "2"),
            ],
            &[0, 255],
        );
        assert_eq!(r.body_value(), Some(json!("AP8=")));
        let r = req(
            &[
                ("content-type", "text/plain"),
                ("transfer-encoding", "chunked"),
            ],
            b"abc",
        );
        assert_eq!(r.body_value(), None);
        assert_eq!(decode_text(&[0xFF, 0xFE, b'h', 0, b'i', 0]), "hi");
    }

    #[test]
    fn http_envelope_shapes() {
        let r = req(
            &[
                ("content-type", "application/json"),
                ("content-length", "11"),
                ("x-a", "1"),
                ("x-a", "2"),
            ],
            br#"{"Topic":"t"}"#,
        );
        let v = http_envelope("F", "req", &r, "now");
        assert_eq!(
            v["Data"]["req"]["Headers"]["Content-Type"],
            json!(["application/json"])
        );
        assert_eq!(v["Data"]["req"]["Headers"]["x-a"], json!(["1", "2"]));
        assert_eq!(v["Data"]["req"]["Query"]["a"], "1,2");
        assert_eq!(v["Metadata"]["Headers"]["x-a"], "1,2");
        assert_eq!(v["Metadata"]["a"], "\"1,2\"");
        assert!(v["Metadata"].get("code").is_none());
        assert_eq!(v["Metadata"]["Topic"], "\"t\"");
    }
}
