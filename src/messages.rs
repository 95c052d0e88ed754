//! Messages the functions exchange through queues: the ticket request of DESIGN's contract.

use serde::{Deserialize, Serialize};

/// Where a ticket request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestSource {
    Webhook,
    Export,
    Replay,
}

impl RequestSource {
    /// The name in the message (`serde`'s lowercase rename).
    pub fn name(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Export => "export",
            Self::Replay => "replay",
        }
    }
}

/// A message on `ticket-requests`. Field names avoid the host's metadata keys (`Id`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    pub v: u32,
    #[serde(rename = "surveyId")]
    pub survey_id: String,
    #[serde(rename = "responseId")]
    pub response_id: String,
    pub source: RequestSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(rename = "receivedAt")]
    pub received_at: String,
    /// Set only by `TicketCreator` when it puts a request back after a transient failure
    /// (docs/tickets.md); a nested object, so no key can collide with the host's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// How often, and since when, a request has been retried by re-enqueueing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts so far (the next delivery is attempt `attempt + 1`).
    pub attempt: u32,
    /// RFC 3339: when the first attempt failed; the retry window counts from here.
    pub since: String,
}

/// Why a message can never become a ticket.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    #[error("not a ticket request: {0}")]
    Shape(String),
    #[error("unsupported message version {0} (expected 1)")]
    Version(u32),
    #[error("{field} {value:?} is not a Qualtrics {kind} id")]
    Id {
        field: &'static str,
        value: String,
        kind: &'static str,
    },
}

impl TicketRequest {
    pub const VERSION: u32 = 1;

    /// Parses and validates a message text.
    pub fn parse(text: &str) -> Result<Self, InvalidRequest> {
        let r: Self =
            serde_json::from_str(text).map_err(|e| InvalidRequest::Shape(e.to_string()))?;
        if r.v != Self::VERSION {
            return Err(InvalidRequest::Version(r.v));
        }
        check_id("surveyId", &r.survey_id, "SV_", "survey")?;
        check_id("responseId", &r.response_id, "R_", "response")?;
        Ok(r)
    }

    /// The exact JSON text put on the queue (what `serde_json` makes of it, written directly:
    /// one is made per webhook).
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(192);
        out.extend_from_slice(b"{\"v\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.v).as_bytes());
        out.extend_from_slice(b",\"surveyId\":");
        crate::json::push_str(&mut out, &self.survey_id);
        out.extend_from_slice(b",\"responseId\":");
        crate::json::push_str(&mut out, &self.response_id);
        out.extend_from_slice(b",\"source\":\"");
        out.extend_from_slice(self.source.name().as_bytes());
        out.push(b'"');
        if let Some(topic) = &self.topic {
            out.extend_from_slice(b",\"topic\":");
            crate::json::push_str(&mut out, topic);
        }
        out.extend_from_slice(b",\"receivedAt\":");
        crate::json::push_str(&mut out, &self.received_at);
        if let Some(retry) = &self.retry {
            // Rare (re-enqueued requests only): serde is fast enough here.
            out.extend_from_slice(b",\"retry\":");
            out.extend_from_slice(serde_json::to_string(retry).unwrap_or_default().as_bytes());
        }
        out.push(b'}');
        // Only whole UTF-8 strings and ASCII went in.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Qualtrics ids are a prefix and an alphanumeric tail (e.g. `SV_22VlHYNeldrrrkp`).
pub fn is_qualtrics_id(value: &str, prefix: &str) -> bool {
    value.len() > prefix.len()
        && value.len() <= 64
        && value.starts_with(prefix)
        && value[prefix.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
}

fn check_id(
    field: &'static str,
    value: &str,
    prefix: &str,
    kind: &'static str,
) -> Result<(), InvalidRequest> {
    if is_qualtrics_id(value, prefix) {
        Ok(())
    } else {
        Err(InvalidRequest::Id {
            field,
            value: value.chars().take(80).collect(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_contract_shape() {
        let text = r#"{"v":1,"surveyId":"SV_1","responseId":"R_2","source":"webhook","topic":"b.surveyengine.completedResponse.SV_1","receivedAt":"2026-12-01T00:00:00Z"}"#;
        let r = TicketRequest::parse(text).unwrap();
        assert_eq!(r.to_text(), text);
    }

    #[test]
    fn the_text_is_what_serde_writes() {
        for source in [
            RequestSource::Webhook,
            RequestSource::Export,
            RequestSource::Replay,
        ] {
            for (topic, retry) in [
                (None, None),
                (
                    Some("a \"topic\" \\ with\tcontrols é".to_string()),
                    Some(Retry {
                        attempt: 3,
                        since: "2026-12-01T00:00:01Z".into(),
                    }),
                ),
            ] {
                let r = TicketRequest {
                    v: TicketRequest::VERSION,
                    survey_id: "SV_1".into(),
                    response_id: "R_2".into(),
                    source,
                    topic,
                    received_at: "2026-12-01T00:00:00Z".into(),
                    retry,
                };
                assert_eq!(r.to_text(), serde_json::to_string(&r).unwrap());
                assert_eq!(TicketRequest::parse(&r.to_text()).unwrap(), r);
            }
        }
    }

    #[test]
    fn refuses_what_can_never_succeed() {
        for bad in [
            "",
            "[]",
            r#"{"v":2,"surveyId":"SV_1","responseId":"R_2","source":"webhook","receivedAt":"x"}"#,
            r#"{"v":1,"surveyId":"1","responseId":"R_2","source":"webhook","receivedAt":"x"}"#,
            r#"{"v":1,"surveyId":"SV_1","responseId":"R_2","source":"mail","receivedAt":"x"}"#,
            r#"{"v":1,"surveyId":"SV_1","responseId":"R_2","source":"webhook"}"#,
        ] {
            assert!(TicketRequest::parse(bad).is_err(), "{bad}");
        }
    }
}
