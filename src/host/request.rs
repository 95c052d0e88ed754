//! Host → handler: the `{"Data": …, "Metadata": …}` envelope and its trigger payloads.

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
    #[error("invocation body is not UTF-8 text")]
    NotUtf8,
    #[error("invocation body is not a JSON object")]
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

/// The invocation envelope. Top-level names are matched as the host writes them.
///
/// Entries are kept as raw JSON text and parsed only when a function asks for its binding:
/// the host sends much the handler never reads (`Identities`, HTTP `Metadata`), and building
/// value trees for it would cost more than the function's own work.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "Data", default)]
    data: HashMap<String, Box<RawValue>>,
    #[serde(rename = "Metadata", default)]
    metadata: HashMap<String, Box<RawValue>>,
}

impl Envelope {
    /// Decodes the envelope strictly: JSON text is UTF-8 (RFC 8259 §8.1) and the envelope an
    /// object. Both are checked up front because serde alone checks neither: it skips the
    /// string values of keys it ignores without validating their UTF-8, and it would fill
    /// the struct from a JSON array too.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err(EnvelopeError::NotObject);
        }
        serde_json::from_str(text).map_err(EnvelopeError::NotJson)
    }

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

    /// The HTTP trigger payload bound as `binding`.
    pub fn http(mut self, binding: &'static str) -> Result<HttpTrigger, EnvelopeError> {
        serde_json::from_str(self.take(binding)?.get()).map_err(|e| EnvelopeError::BadBinding {
            binding,
            kind: "HTTP request",
            reason: e.to_string(),
        })
    }

    /// The timer trigger payload bound as `binding`.
    pub fn timer(mut self, binding: &'static str) -> Result<TimerInfo, EnvelopeError> {
        serde_json::from_str(self.take(binding)?.get()).map_err(|e| EnvelopeError::BadBinding {
            binding,
            kind: "TimerInfo",
            reason: e.to_string(),
        })
    }

    /// The queue trigger payload bound as `binding`, with its metadata.
    pub fn queue(mut self, binding: &'static str) -> Result<QueueTrigger, EnvelopeError> {
        let bad = |reason: &str| EnvelopeError::BadBinding {
            binding,
            kind: "queue message",
            reason: reason.to_string(),
        };
        // The host JSON-encodes the message text once more: Data.x is a string whose content
        // is a JSON string literal of the text.
        let literal: String = serde_json::from_str(self.take(binding)?.get())
            .map_err(|_| bad("expected a JSON string"))?;
        let text: String = serde_json::from_str(&literal)
            .map_err(|_| bad("expected a JSON string literal (the host double-encodes text)"))?;
        let dequeue_count = match self.metadata("DequeueCount") {
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
            id: self.metadata("Id").as_ref().and_then(unquote),
            pop_receipt: self.metadata("PopReceipt").as_ref().and_then(unquote),
            insertion_time: self.metadata("InsertionTime").as_ref().and_then(unquote),
        })
    }
}

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

/// `Data.req` of an HTTP trigger.
#[derive(Debug, Deserialize)]
pub struct HttpTrigger {
    #[serde(rename = "Url", default)]
    pub url: String,
    #[serde(rename = "Method")]
    pub method: String,
    #[serde(rename = "Query", default)]
    pub query: HashMap<String, String>,
    #[serde(rename = "Headers", default)]
    headers: HashMap<String, HeaderValues>,
    /// Present only when the caller sent `Content-Length > 0`.
    #[serde(rename = "Body", default)]
    body: Option<String>,
}

/// The first value of a header. The host sends values as arrays (ASP.NET `StringValues`); a
/// bare string is accepted too. Hand-written rather than `#[serde(untagged)]`, which would
/// buffer every header value before trying each shape.
#[derive(Debug, Default)]
struct HeaderValues(Option<String>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HeaderValues;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a header value or an array of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HeaderValues, E> {
                Ok(HeaderValues(Some(v.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HeaderValues, A::Error> {
                let first: Option<String> = seq.next_element()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(HeaderValues(first))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl HttpTrigger {
    /// First value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.0.as_deref())
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
    use serde_json::json;

    fn env(v: Value) -> Envelope {
        Envelope::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn queue_text_is_double_decoded_and_metadata_unquoted() {
        // The captured host shape (reference §2.4).
        let e = env(json!({
            "Data": {"request": "\"{\\\"a\\\":1}\""},
            "Metadata": {"DequeueCount": "3", "Id": "\"52d5\"", "PopReceipt": "\"MThG\"",
                          "InsertionTime": "2025-02-18T03:06:19+00:00", "sys": {}}
        }));
        let q = e.queue("request").unwrap();
        assert_eq!(q.text, r#"{"a":1}"#);
        assert_eq!(q.dequeue_count, 3);
        assert_eq!(q.id.as_deref(), Some("52d5"));
        assert_eq!(q.pop_receipt.as_deref(), Some("MThG"));
    }

    #[test]
    fn queue_text_that_is_not_double_encoded_is_refused() {
        let e = env(json!({"Data": {"request": "{\"a\":1}"}, "Metadata": {"DequeueCount": "1"}}));
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
        let e = env(json!({"Data": {"req": {
            "Url": "http://x/api/a?code=k", "Method": "POST", "Query": {"code": "k"},
            "Headers": {"content-type": ["application/octet-stream"], "X-Many": ["a", "b"]},
            "Body": "AAEC/w=="}}, "Metadata": {}}));
        let req = e.http("req").unwrap();
        assert_eq!(req.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(req.header("x-many"), Some("a"));
        assert_eq!(req.body_bytes().unwrap().unwrap().as_ref(), &[0, 1, 2, 255]);

        let e = env(json!({"Data": {"req": {"Method": "POST", "Headers": {}}}}));
        assert!(e.http("req").unwrap().body_bytes().unwrap().is_none());

        let e = env(json!({"Data": {"req": {"Method": "POST",
            "Headers": {"Content-Type": ["multipart/form-data; boundary=x"]}, "Body": "not base64!"}}}));
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
        let e = env(json!({"Data": {}}));
        assert_eq!(
            e.http("req").unwrap_err().to_string(),
            "envelope has no Data.req"
        );
    }
}
