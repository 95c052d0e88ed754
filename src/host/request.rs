//! Host → handler: the `{"Data": …, "Metadata": …}` envelope and its trigger payloads.

use crate::json::{Reader, SyntaxError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// Why an envelope could not be understood. The invocation fails with this reason.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("invocation body is not a JSON envelope: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("invocation body is not a JSON envelope: {0}")]
    Syntax(#[source] SyntaxError),
    #[error("invocation body is not a JSON envelope: not UTF-8 text")]
    NotUtf8,
    #[error("invocation body is not a JSON envelope: not an object")]
    NotObject,
    #[error("envelope has no Data.{0}")]
    MissingBinding(&'static str),
    #[error("Data.{binding} is not a valid {kind}: {reason}")]
    BadBinding {
        binding: &'static str,
        kind: &'static str,
        reason: String,
    },
    #[error("Metadata.{key} is not valid: {reason}")]
    BadMetadata { key: &'static str, reason: String },
}

/// The invocation envelope, borrowed from the request body and decoded only when a function
/// asks for its binding, and then only as far as it needs.
///
/// The HTTP trigger (the hot path: every webhook) is decoded in one pass straight out of the
/// body, its strings borrowed where they need no unescaping; the host sends much the handler
/// never reads (`Identities`, HTTP `Metadata`), which is skipped without building anything.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    text: &'a str,
}

/// The whole envelope as maps of raw entries, for the triggers that need `Metadata` too.
#[derive(Debug, Deserialize)]
struct Entries {
    #[serde(rename = "Data", default)]
    data: HashMap<String, Box<RawValue>>,
    #[serde(rename = "Metadata", default)]
    metadata: HashMap<String, Box<RawValue>>,
}

impl Entries {
    fn take(&mut self, binding: &'static str) -> Result<Box<RawValue>, EnvelopeError> {
        self.data
            .remove(binding)
            .ok_or(EnvelopeError::MissingBinding(binding))
    }

    fn metadata(&self, key: &str) -> Option<Value> {
        self.metadata
            .get(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

impl<'a> Envelope<'a> {
    /// Wraps an invocation body after the checks serde would not make: JSON text is UTF-8
    /// (RFC 8259 §8.1; serde skips the strings of ignored keys without validating them) and
    /// an envelope is an object (serde would fill a struct from an array). The rest is decoded
    /// when the function asks for its binding.
    pub fn parse(body: &'a [u8]) -> Result<Self, EnvelopeError> {
        let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err(EnvelopeError::NotObject);
        }
        Ok(Self { text })
    }

    fn entries(&self) -> Result<Entries, EnvelopeError> {
        serde_json::from_str(self.text).map_err(EnvelopeError::NotJson)
    }

    /// The HTTP trigger payload bound as `binding`, in one pass over the envelope (the hot
    /// path: every webhook). The first `Data` and the first `binding` in it count.
    pub fn http(self, binding: &'static str) -> Result<HttpTrigger<'a>, EnvelopeError> {
        let mut r = Reader::new(self.text);
        let mut found = None;
        let mut bad_binding = None;
        let mut seen_data = false;
        let walked = r.object(|r, key| {
            if key != "Data" || seen_data {
                return r.skip();
            }
            seen_data = true;
            r.object(|r, key| {
                if key != binding || found.is_some() {
                    return r.skip();
                }
                match HttpTrigger::read(r) {
                    Ok(req) => {
                        found = Some(req);
                        Ok(())
                    }
                    Err(e) => {
                        bad_binding = Some(e.clone());
                        Err(e)
                    }
                }
            })
        });
        match (walked.and_then(|()| r.end()), bad_binding) {
            (Err(e), Some(_)) => Err(EnvelopeError::BadBinding {
                binding,
                kind: "HTTP request",
                reason: e.to_string(),
            }),
            (Err(e), None) => Err(EnvelopeError::Syntax(e)),
            (Ok(()), _) => found.ok_or(EnvelopeError::MissingBinding(binding)),
        }
    }

    /// The timer trigger payload bound as `binding`.
    pub fn timer(self, binding: &'static str) -> Result<TimerInfo, EnvelopeError> {
        let raw = self.entries()?.take(binding)?;
        serde_json::from_str(raw.get()).map_err(|e| EnvelopeError::BadBinding {
            binding,
            kind: "TimerInfo",
            reason: e.to_string(),
        })
    }

    /// The queue trigger payload bound as `binding`, with its metadata.
    pub fn queue(self, binding: &'static str) -> Result<QueueTrigger, EnvelopeError> {
        let bad = |reason: &str| EnvelopeError::BadBinding {
            binding,
            kind: "queue message",
            reason: reason.to_string(),
        };
        let mut entries = self.entries()?;
        // The host JSON-encodes the message text once more: Data.x is a string whose content
        // is a JSON string literal of the text.
        let literal: String = serde_json::from_str(entries.take(binding)?.get())
            .map_err(|_| bad("expected a JSON string"))?;
        let text: String = serde_json::from_str(&literal)
            .map_err(|_| bad("expected a JSON string literal (the host double-encodes text)"))?;
        let dequeue_count = match entries.metadata("DequeueCount") {
            None => {
                return Err(EnvelopeError::BadMetadata {
                    key: "DequeueCount",
                    reason: "missing".into(),
                })
            }
            Some(v) => parse_count(&v).ok_or_else(|| EnvelopeError::BadMetadata {
                key: "DequeueCount",
                reason: format!("not a count: {v}"),
            })?,
        };
        Ok(QueueTrigger {
            text,
            dequeue_count,
            id: entries.metadata("Id").as_ref().and_then(unquote),
            pop_receipt: entries.metadata("PopReceipt").as_ref().and_then(unquote),
            insertion_time: entries.metadata("InsertionTime").as_ref().and_then(unquote),
        })
    }
}

/// A JSON string, borrowed from the envelope unless it had escapes to undo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A JSON object kept as its entries in order: no hashing for the handful a request has.
#[derive(Debug, Default)]
pub struct Pairs<K, V>(pub Vec<(K, V)>);

/// `"1"` as the host sends it; a number or a once-more-quoted string (`"\"1\""`, what a
/// message field named `DequeueCount` would produce) are tolerated.
fn parse_count(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s
            .trim()
            .parse()
            .ok()
            .or_else(|| serde_json::from_str::<String>(s).ok()?.trim().parse().ok()),
        _ => None,
    }
}

/// Metadata strings arrive JSON-encoded (`"\"abc\""`); strip that layer when present.
fn unquote(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    Some(serde_json::from_str::<String>(s).unwrap_or_else(|_| s.to_string()))
}

/// `Data.req` of an HTTP trigger, borrowing from the envelope.
#[derive(Debug)]
pub struct HttpTrigger<'a> {
    pub url: Text<'a>,
    pub method: Text<'a>,
    pub query: Pairs<Text<'a>, Text<'a>>,
    /// Route parameters (`{system}` of `tickets/{system}/events`).
    pub params: Pairs<Text<'a>, Text<'a>>,
    /// Each header's first value (`None` for an empty array) and how many values it had.
    headers: Pairs<Text<'a>, (Option<Text<'a>>, usize)>,
    /// Present only when the caller sent `Content-Length > 0`.
    body: Option<Text<'a>>,
}

impl<'a> HttpTrigger<'a> {
    /// Reads the trigger object: `Method` required; `Url`, `Query`, `Headers`, `Body`
    /// optional (`Body` may be null); each at most once; anything else skipped.
    fn read(r: &mut Reader<'a>) -> Result<Self, SyntaxError> {
        fn once<T>(r: &Reader<'_>, slot: &mut Option<T>, value: T) -> Result<(), SyntaxError> {
            if slot.replace(value).is_some() {
                return Err(r.error("duplicate field"));
            }
            Ok(())
        }
        let (mut url, mut method, mut query, mut params, mut headers, mut body) =
            (None, None, None, None, None, None);
        r.object(|r, key| match &*key {
            "Url" => {
                let v = Text(r.string()?);
                once(r, &mut url, v)
            }
            "Method" => {
                let v = Text(r.string()?);
                once(r, &mut method, v)
            }
            "Query" => {
                let mut pairs = Vec::new();
                r.object(|r, name| {
                    pairs.push((Text(name), Text(r.string()?)));
                    Ok(())
                })?;
                once(r, &mut query, Pairs(pairs))
            }
            "Params" => {
                let mut pairs = Vec::new();
                r.object(|r, name| {
                    // The host writes route values as strings; anything else is no value.
                    if r.peek_value() == Some(b'"') {
                        pairs.push((Text(name), Text(r.string()?)));
                        Ok(())
                    } else {
                        r.skip()
                    }
                })?;
                once(r, &mut params, Pairs(pairs))
            }
            "Headers" => {
                let mut pairs = Vec::new();
                r.object(|r, name| {
                    pairs.push((Text(name), header_value(r)?));
                    Ok(())
                })?;
                once(r, &mut headers, Pairs(pairs))
            }
            "Body" => {
                let v = if r.null()? {
                    None
                } else {
                    Some(Text(r.string()?))
                };
                once(r, &mut body, v)
            }
            _ => r.skip(),
        })?;
        Ok(Self {
            url: url.unwrap_or_default(),
            method: method.ok_or_else(|| r.error("missing field Method"))?,
            query: query.unwrap_or_default(),
            params: params.unwrap_or_default(),
            headers: headers.unwrap_or_default(),
            body: body.flatten(),
        })
    }
}

/// The first value of a header and the number of values. The host sends values as arrays
/// (ASP.NET `StringValues`: a header sent twice has two); a bare string is accepted too.
fn header_value<'a>(r: &mut Reader<'a>) -> Result<(Option<Text<'a>>, usize), SyntaxError> {
    let mut first = None;
    let mut count = 0;
    match r.peek_value() {
        Some(b'[') => r.array(|r, i| {
            count += 1;
            if i == 0 {
                first = Some(Text(r.string()?));
                Ok(())
            } else {
                r.skip()
            }
        })?,
        _ => {
            first = Some(Text(r.string()?));
            count = 1;
        }
    }
    Ok((first, count))
}

impl HttpTrigger<'_> {
    /// First value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, (v, _))| v.as_deref())
    }

    /// How many values the request carried for a header, over every spelling of its name (a
    /// signature header sent twice is ambiguous: which one would be authentic?).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, (_, n))| n)
            .sum()
    }

    /// A route parameter's value (case-insensitive name, as ASP.NET route data).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| &*v.0)
    }

    /// The media type of `Content-Type`, lower-cased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        let mt = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        (!mt.is_empty()).then_some(mt)
    }

    /// The request body as the caller sent it, or `None` when the host sent no `Body`.
    ///
    /// For `application/octet-stream` and `multipart/*` the host sends base64 of the raw bytes;
    /// otherwise the text it decoded as UTF-8 (BOM stripped, invalid bytes as U+FFFD).
    pub fn body_bytes(&self) -> Result<Option<Cow<'_, [u8]>>, EnvelopeError> {
        let Some(body) = self.body.as_deref() else {
            return Ok(None);
        };
        if self.is_base64_body() {
            STANDARD
                .decode(body)
                .map(|b| Some(Cow::Owned(b)))
                .map_err(|e| EnvelopeError::BadBinding {
                    binding: "req",
                    kind: "base64 body",
                    reason: e.to_string(),
                })
        } else {
            Ok(Some(Cow::Borrowed(body.as_bytes())))
        }
    }

    /// Body text exactly as the host delivered it (base64 for octet/multipart).
    pub fn raw_body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    fn is_base64_body(&self) -> bool {
        self.media_type()
            .is_some_and(|mt| mt == "application/octet-stream" || mt.contains("multipart"))
    }
}

/// `Data.<timer>` of a timer trigger (`TimerInfo`).
#[derive(Debug, Deserialize)]
pub struct TimerInfo {
    #[serde(rename = "ScheduleStatus", default)]
    pub schedule_status: Option<ScheduleStatus>,
    #[serde(rename = "IsPastDue", default)]
    pub is_past_due: bool,
}

/// Schedule monitor state; timestamps are kept as the host wrote them (formats vary).
#[derive(Debug, Deserialize)]
pub struct ScheduleStatus {
    #[serde(rename = "Last", default)]
    pub last: Option<String>,
    #[serde(rename = "Next", default)]
    pub next: Option<String>,
    #[serde(rename = "LastUpdated", default)]
    pub last_updated: Option<String>,
}

/// A queue message as the handler sees it after undoing the host's encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTrigger {
    /// The message text, exactly as enqueued.
    pub text: String,
    pub dequeue_count: u32,
    pub id: Option<String>,
    pub pop_receipt: Option<String>,
    pub insertion_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn env(b: &[u8]) -> Envelope<'_> {
        Envelope::parse(b).unwrap()
    }

    #[test]
    fn route_params_and_header_value_counts() {
        let b = body(json!({
            "Data": {"req": {
                "Method": "POST",
                "Params": {"system": "zendesk", "odd": 5},
                "Headers": {"X-Sig": ["a", "b"], "x-sig": ["c"], "X-Ts": ["1"], "X-Bare": "v", "X-None": []}
            }},
            "Metadata": {}
        }));
        let req = env(&b).http("req").unwrap();
        assert_eq!(req.param("SYSTEM"), Some("zendesk"));
        assert_eq!(req.param("odd"), None);
        assert_eq!(req.header("x-sig"), Some("a"));
        // Every value under every spelling of the name counts.
        assert_eq!(req.header_count("X-SIG"), 3);
        assert_eq!(req.header_count("x-ts"), 1);
        assert_eq!(req.header_count("x-bare"), 1);
        assert_eq!(
            (req.header("x-none"), req.header_count("x-none")),
            (None, 0)
        );
        assert_eq!(req.header_count("x-absent"), 0);
    }

    #[test]
    fn queue_text_is_double_decoded_and_metadata_unquoted() {
        // The captured host shape (reference §2.4).
        let b = body(json!({
            "Data": {"request": "\"{\\\"a\\\":1}\""},
            "Metadata": {"DequeueCount": "3", "Id": "\"52d5\"", "PopReceipt": "\"MThG\"",
                          "InsertionTime": "2025-02-18T03:06:19+00:00", "sys": {}}
        }));
        let e = env(&b);
        let q = e.queue("request").unwrap();
        assert_eq!(q.text, r#"{"a":1}"#);
        assert_eq!(q.dequeue_count, 3);
        assert_eq!(q.id.as_deref(), Some("52d5"));
        assert_eq!(q.pop_receipt.as_deref(), Some("MThG"));
    }

    #[test]
    fn queue_text_that_is_not_double_encoded_is_refused() {
        let b = body(json!({"Data": {"request": "{\"a\":1}"}, "Metadata": {"DequeueCount": "1"}}));
        let e = env(&b);
        assert!(matches!(
            e.queue("request"),
            Err(EnvelopeError::BadBinding { .. })
        ));
    }

    #[test]
    fn dequeue_count_tolerates_number_and_extra_quotes_but_not_garbage() {
        for (v, want) in [
            (json!("1"), Some(1)),
            (json!(2), Some(2)),
            (json!("\"4\""), Some(4)),
            (json!("x"), None),
            (json!(-1), None),
            (json!(null), None),
        ] {
            assert_eq!(parse_count(&v), want, "{v}");
        }
    }

    #[test]
    fn http_body_rules() {
        let b = body(json!({"Data": {"req": {
            "Url": "http://x/api/a?code=k", "Method": "POST", "Query": {"code": "k"},
            "Headers": {"content-type": ["application/octet-stream"], "X-Many": ["a", "b"]},
            "Body": "AAEC/w=="}}, "Metadata": {}}));
        let e = env(&b);
        let req = e.http("req").unwrap();
        assert_eq!(req.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(req.header("x-many"), Some("a"));
        assert_eq!(req.body_bytes().unwrap().unwrap().as_ref(), &[0, 1, 2, 255]);

        let b = body(json!({"Data": {"req": {"Method": "POST", "Headers": {}}}}));
        let e = env(&b);
        assert!(e.http("req").unwrap().body_bytes().unwrap().is_none());

        let b = body(json!({"Data": {"req": {"Method": "POST",
            "Headers": {"Content-Type": ["multipart/form-data; boundary=x"]}, "Body": "not base64!"}}}));
        let e = env(&b);
        assert!(e.http("req").unwrap().body_bytes().is_err());
    }

    /// Invalid UTF-8 inside an ignored key (found by the `envelope` fuzz target) and a
    /// top-level array (found while fixing it) used to decode as an envelope.
    #[test]
    fn only_utf8_json_objects_are_envelopes() {
        let ok = br#"{"Data":{"request":"\"x\""},"Metadata":{"DequeueCount":"1"}}"#;
        assert_eq!(
            Envelope::parse(ok).unwrap().queue("request").unwrap().text,
            "x"
        );
        let ignored_invalid_utf8 = b"{\"Data\":{},\"Other\":\"\x9e\"}";
        assert!(matches!(
            Envelope::parse(ignored_invalid_utf8),
            Err(EnvelopeError::NotUtf8)
        ));
        let array = br#" [{"request":"\"x\""},{"DequeueCount":"1"}]"#;
        assert!(matches!(
            Envelope::parse(array),
            Err(EnvelopeError::NotObject)
        ));
        assert!(Envelope::parse(b" \r\n\t{}").is_ok());
    }

    #[test]
    fn missing_binding_is_named() {
        let b = body(json!({"Data": {}}));
        let e = env(&b);
        assert_eq!(
            e.http("req").unwrap_err().to_string(),
            "envelope has no Data.req"
        );
    }

    /// What an HTTP envelope comes to: the trigger's fields, no such binding, or refused.
    #[derive(Debug, PartialEq)]
    enum Decoded {
        Fields {
            method: String,
            url: String,
            query: Vec<(String, String)>,
            headers: Vec<(String, Option<String>)>,
            body: Option<String>,
        },
        Missing,
        Refused,
    }

    fn decoded(text: &str) -> Decoded {
        let req = match Envelope::parse(text.as_bytes()).and_then(|e| e.http("req")) {
            Ok(req) => req,
            Err(EnvelopeError::MissingBinding(_)) => return Decoded::Missing,
            Err(_) => return Decoded::Refused,
        };
        let mut query: Vec<_> = req
            .query
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut headers: Vec<_> = req
            .headers
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), v.0.as_deref().map(str::to_owned)))
            .collect();
        query.sort();
        headers.sort();
        Decoded::Fields {
            method: req.method.to_string(),
            url: req.url.to_string(),
            query,
            headers,
            body: req.raw_body().map(str::to_owned),
        }
    }

    /// The same rules, applied to what serde_json makes of the text. `None` when serde_json
    /// cannot make a value of JSON it accepts (a number beyond f64: skipped, it was fine).
    fn reference(text: &str) -> Option<Decoded> {
        let value = match serde_json::from_str::<Value>(text) {
            Err(e) if e.to_string().starts_with("number out of range") => return None,
            other => other,
        };
        Some(reference_of(value))
    }

    fn reference_of(value: serde_json::Result<Value>) -> Decoded {
        let Ok(Value::Object(top)) = value else {
            return Decoded::Refused;
        };
        let Some(data) = top.get("Data") else {
            return Decoded::Missing;
        };
        let Some(data) = data.as_object() else {
            return Decoded::Refused;
        };
        let Some(req) = data.get("req") else {
            return Decoded::Missing;
        };
        let fields = || -> Option<Decoded> {
            let req = req.as_object()?;
            let string = |v: &Value| v.as_str().map(str::to_owned);
            let mut query = Vec::new();
            if let Some(q) = req.get("Query") {
                for (k, v) in q.as_object()? {
                    query.push((k.clone(), string(v)?));
                }
            }
            let mut headers = Vec::new();
            if let Some(h) = req.get("Headers") {
                for (k, v) in h.as_object()? {
                    let first = match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Array(a) if a.is_empty() => None,
                        Value::Array(a) => Some(string(&a[0])?),
                        _ => return None,
                    };
                    headers.push((k.clone(), first));
                }
            }
            Some(Decoded::Fields {
                method: string(req.get("Method")?)?,
                url: match req.get("Url") {
                    None => String::new(),
                    Some(v) => string(v)?,
                },
                query,
                headers,
                body: match req.get("Body") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(string(v)?),
                },
            })
        };
        fields().unwrap_or(Decoded::Refused)
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[a-z\\\\\"/\\x00-\\x1f\u{e9}\u{1f600}]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map("[A-Za-z]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_trigger() -> impl Strategy<Value = Value> {
        let header = prop_oneof![
            "[ -~]{0,10}".prop_map(Value::from),
            proptest::collection::vec("[ -~\u{e9}]{0,10}".prop_map(Value::from), 0..3)
                .prop_map(Value::from),
            any_json(),
        ];
        let query = proptest::collection::btree_map("[a-z]{1,5}", "[ -~]{0,5}", 0..3);
        let headers = proptest::collection::btree_map("[A-Za-z-]{1,12}", header, 0..4);
        let body = prop_oneof![
            any::<String>().prop_map(Value::from),
            Just(Value::Null),
            any_json()
        ];
        (
            prop_oneof!["[A-Z]{3,6}".prop_map(Value::from), any_json()],
            proptest::option::of("[ -~]{0,30}".prop_map(Value::from)),
            proptest::option::of(query),
            proptest::option::of(headers),
            proptest::option::of(body),
            proptest::collection::btree_map("[A-Z][a-z]{2,8}", any_json(), 0..3),
        )
            .prop_map(|(method, url, query, headers, body, extra)| {
                let mut o: serde_json::Map<String, Value> = extra.into_iter().collect();
                o.insert("Method".into(), method);
                if let Some(u) = url {
                    o.insert("Url".into(), u);
                }
                if let Some(q) = query {
                    o.insert("Query".into(), json!(q));
                }
                if let Some(h) = headers {
                    o.insert("Headers".into(), Value::Object(h.into_iter().collect()));
                }
                if let Some(b) = body {
                    o.insert("Body".into(), b);
                }
                Value::Object(o)
            })
    }

    /// One character changed, dropped or added somewhere.
    fn mutation() -> impl Strategy<Value = Option<(proptest::sample::Index, u8, char)>> {
        let chars = vec![
            '{', '}', '[', ']', '"', ',', ':', '\\', ' ', 'u', '0', 'e', '-', '.', 'n', '\u{1}',
            '\u{e9}', 'D',
        ];
        proptest::option::of((
            any::<proptest::sample::Index>(),
            0u8..3,
            proptest::sample::select(chars),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The HTTP trigger reader accepts, refuses and extracts exactly what serde_json's
        /// reading of the same text says, on envelopes and on envelopes with one character
        /// changed, dropped or added.
        #[test]
        fn http_reader_agrees_with_serde_json(
            req in prop_oneof![any_trigger(), any_json()],
            metadata in any_json(),
            mutate in mutation(),
        ) {
            let mut text = json!({"Data": {"req": req, "other": 1}, "Metadata": metadata}).to_string();
            if let Some((at, how, c)) = mutate {
                let mut chars: Vec<char> = text.chars().collect();
                let i = at.index(chars.len());
                match how {
                    0 => {
                        chars.remove(i);
                    }
                    1 => chars.insert(i, c),
                    _ => chars[i] = c,
                }
                text = chars.into_iter().collect();
            }
            let want = reference(&text);
            prop_assume!(want.is_some());
            prop_assert_eq!(Some(decoded(&text)), want, "{}", text);
        }
    }

    #[test]
    fn http_reader_edge_cases() {
        for text in [
            r#"{"Data":{"req":{"Method":"GET"}}}"#,
            r#" {"Data":{"req":{"Method":"GET"}}} "#,
            r#"{"Data":{"req":{"Method":"GET"}}}x"#,
            r#"{"Data":{"req":{"Method":"G\u00c9T\ud83d\ude00"}}}"#,
            r#"{"Data":{"req":{"Method":"G\ud83d"}}}"#,
            r#"{"Data":{"req":{"Method":"G\ude00"}}}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":[1,2,]}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":{"a":1,}}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":01}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":-0.5e+3}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":1.}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":.5}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":tru}"#,
            r#"{"Data":{"req":{"Method":"GET","Body":null,"Headers":{"A":[],"B":"x","C":["y",{}]}}}}"#,
            r#"{"Data":{"req":{"Method":"GET","Headers":{"A":[1]}}}}"#,
            r#"{"Data":{"req":{"Method":"GET","Query":{"a":null}}}}"#,
            r#"{"Data":{"req":{"Url":"u"}}}"#,
            r#"{"Data":{"req":{"Method":"GET\u0000"}}}"#,
            "{\"Data\":{\"req\":{\"Method\":\"G\tT\"}}}",
            r#"{"Data":{"req":{"Method":"GET"}},"M":"\x"}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":"\u12"}"#,
            r#"{"Data":{"req":{"Method":"GET"}},"M":"unterminated}}"#,
            r#"{"Data":{"req":[]}}"#,
            r#"{"Data":[]}"#,
            r#"{"Data":{}}"#,
            r#"{}"#,
        ] {
            assert_eq!(Some(decoded(text)), reference(text), "{text}");
        }
        // Like serde_json, a skipped string's escapes are checked for form only.
        let unpaired = r#"{"Data":{"req":{"Method":"GET"}},"M":{"\udc00":"\ud83d x"}}"#;
        assert!(matches!(decoded(unpaired), Decoded::Fields { .. }));
        let nested = |n: usize| {
            format!(
                r#"{{"Data":{{"req":{{"Method":"GET"}}}},"M":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert_eq!(decoded(&nested(130)), Decoded::Refused);
        for n in [120, 126, 127] {
            assert_eq!(Some(decoded(&nested(n))), reference(&nested(n)), "{n}");
        }
        // Skipped, a number is checked for form only, as serde_json skips one.
        let huge = r#"{"Data":{"req":{"Method":"GET"}},"M":1e999999}"#;
        assert!(matches!(decoded(huge), Decoded::Fields { .. }));
    }

    #[test]
    fn http_first_data_and_binding_count_but_a_field_twice_is_refused() {
        let text = r#"{"Data":{"req":{"Method":"GET"},"req":{"Method":"PUT"}},"Data":{"req":{"Method":"POST"}}}"#;
        assert!(matches!(decoded(text), Decoded::Fields { ref method, .. } if method == "GET"));
        let text = r#"{"Data":{"req":{"Method":"GET","Method":"PUT"}}}"#;
        let e = Envelope::parse(text.as_bytes())
            .unwrap()
            .http("req")
            .unwrap_err();
        assert!(e.to_string().contains("duplicate field"), "{e}");
    }
}
