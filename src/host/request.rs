//! Host → handler: the `{"Data": …, "Metadata": …}` envelope and its trigger payloads.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::IgnoredAny;
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

    /// The HTTP trigger payload bound as `binding`.
    pub fn http(self, binding: &'static str) -> Result<HttpTrigger<'a>, EnvelopeError> {
        let in_binding = std::cell::Cell::new(false);
        let mut de = serde_json::Deserializer::from_str(self.text);
        let found = serde::de::DeserializeSeed::deserialize(
            OneBinding::<HttpTrigger<'a>> {
                binding,
                in_binding: &in_binding,
                _value: std::marker::PhantomData,
            },
            &mut de,
        )
        .and_then(|found| de.end().map(|()| found));
        match found {
            Ok(Some(req)) => Ok(req),
            Ok(None) => Err(EnvelopeError::MissingBinding(binding)),
            Err(e) if in_binding.get() => Err(EnvelopeError::BadBinding {
                binding,
                kind: "HTTP request",
                reason: e.to_string(),
            }),
            Err(e) => Err(EnvelopeError::NotJson(e)),
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

/// Decodes `Data.<binding>` as `T` in one pass over the envelope, skipping everything else.
/// `in_binding` tells afterwards whether an error came from inside the binding.
struct OneBinding<'b, T> {
    binding: &'static str,
    in_binding: &'b std::cell::Cell<bool>,
    _value: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for OneBinding<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OneBinding<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an invocation envelope object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if &*key == "Data" && found.is_none() {
                found = map.next_value_seed(DataMap {
                    binding: self.binding,
                    in_binding: self.in_binding,
                    _value: std::marker::PhantomData::<T>,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The `Data` object: the one entry wanted, the rest skipped.
struct DataMap<'b, T> {
    binding: &'static str,
    in_binding: &'b std::cell::Cell<bool>,
    _value: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for DataMap<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for DataMap<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the envelope's Data object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if &*key == self.binding && found.is_none() {
                self.in_binding.set(true);
                found = Some(map.next_value::<T>()?);
                self.in_binding.set(false);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
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

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A JSON object kept as its entries in order: no hashing for the handful a request has.
#[derive(Debug, Default)]
pub struct Pairs<K, V>(pub Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Pairs<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<K, V> {
            type Value = Pairs<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs<K, V>, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
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

/// `Data.req` of an HTTP trigger, borrowing from the envelope.
#[derive(Debug, Deserialize)]
pub struct HttpTrigger<'a> {
    #[serde(rename = "Url", default, borrow)]
    pub url: Text<'a>,
    #[serde(rename = "Method", borrow)]
    pub method: Text<'a>,
    #[serde(rename = "Query", default, borrow)]
    pub query: Pairs<Text<'a>, Text<'a>>,
    #[serde(rename = "Headers", default, borrow)]
    headers: Pairs<Text<'a>, HeaderValues<'a>>,
    /// Present only when the caller sent `Content-Length > 0`.
    #[serde(rename = "Body", default, borrow)]
    body: Option<Text<'a>>,
}

/// The first value of a header. The host sends values as arrays (ASP.NET `StringValues`); a
/// bare string is accepted too. Hand-written rather than `#[serde(untagged)]`, which would
/// buffer every header value before trying each shape.
#[derive(Debug, Default)]
struct HeaderValues<'a>(Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for HeaderValues<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HeaderValues<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a header value or an array of them")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<HeaderValues<'de>, E> {
                Ok(HeaderValues(Some(Text(Cow::Borrowed(v)))))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HeaderValues<'de>, E> {
                Ok(HeaderValues(Some(Text(Cow::Owned(v.to_owned())))))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HeaderValues<'de>, A::Error> {
                let first: Option<Text<'de>> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(HeaderValues(first))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl HttpTrigger<'_> {
    /// First value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .0
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

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn env(b: &[u8]) -> Envelope<'_> {
        Envelope::parse(b).unwrap()
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
}
