//! Messages the functions exchange through queues: the ticket request of DESIGN's contract, the
//! loop request (`loop-requests`: one observed state of a ticket the bridge created) and the
//! pulse request (`pulse-requests`: one verified ops event).

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

impl Retry {
    /// The bookkeeping of the re-enqueue after `prev` (the window starts at the first failure,
    /// `now`), and how long the message stays invisible: backoff jittered over the upper half,
    /// so copies that failed together spread out, never shorter than `throttled` (the target's
    /// `Retry-After`), at most `max` otherwise.
    pub fn next(
        prev: Option<&Retry>,
        now: impl FnOnce() -> String,
        max: std::time::Duration,
        throttled: std::time::Duration,
    ) -> (Retry, std::time::Duration) {
        let attempt = prev.map_or(0, |r| r.attempt) + 1;
        let since = prev.map_or_else(now, |r| r.since.clone());
        let jitter = 0.5 + (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 2000.0;
        let delay = crate::storage::retry_delay(attempt, max, jitter, throttled);
        (Retry { attempt, since }, delay)
    }
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

/// The canonical ticket state both systems map onto (reference `close-the-loop.md` §8).
/// "Reopened" is not a state a system reports: `LoopCloser` derives it from an `open` state
/// that is newer than an applied `resolved`/`closed` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketState {
    Open,
    Resolved,
    Closed,
    Canceled,
}

/// Where a loop request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopSource {
    /// A verified webhook (`TicketEvents`).
    Event,
    /// `TicketSync` found a transition whose event never arrived.
    Sync,
    /// `poison replay`.
    Replay,
}

/// A message on `loop-requests`: the state a ticket system reported for a ticket the bridge
/// created, already matched to its response through the ticket ledger. Producers:
/// `TicketEvents`, `TicketSync`; consumer: `LoopCloser`, which applies it monotonically by
/// [`LoopRequest::order_key`] (an older state never overwrites a newer one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoopRequest {
    pub v: u32,
    /// `zendesk` or `servicenow` (the `{system}` of the `TicketEvents` route).
    pub system: String,
    /// Zendesk ticket id / ServiceNow `sys_id`: the ledger's `ticket.id`.
    pub ticket_id: String,
    /// Zendesk: the id again; ServiceNow: `INC…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    pub survey_id: String,
    pub response_id: String,
    /// The status as the system reported it, lower-cased (`solved`, ServiceNow's `6`).
    pub status: String,
    pub state: TicketState,
    /// ServiceNow `close_code`; none for Zendesk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<String>,
    /// RFC 3339 (UTC): when the system says the change happened (Zendesk `detail.updated_at`,
    /// ServiceNow `sys_updated_on`).
    pub changed_at: String,
    /// ServiceNow `sys_mod_count`: orders changes within one second; none for Zendesk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    pub source: LoopSource,
    /// The system's event id (Zendesk envelope `id`; ServiceNow `sys_id:sys_mod_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// RFC 3339: when the bridge received it.
    pub received_at: String,
    /// Set only when `LoopCloser` puts a request back after a transient failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl LoopRequest {
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
        if !matches!(r.system.as_str(), "zendesk" | "servicenow") {
            return Err(InvalidRequest::Shape(format!(
                "system {:?} is not zendesk or servicenow",
                r.system.chars().take(40).collect::<String>()
            )));
        }
        if r.ticket_id.is_empty() || r.ticket_id.len() > 64 {
            return Err(InvalidRequest::Shape(
                "ticketId is empty or too long".into(),
            ));
        }
        Ok(r)
    }

    /// The exact JSON text put on the queue.
    pub fn to_text(&self) -> String {
        // Every field is a string, number or enum: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The order in which states apply: later `changedAt` wins, then higher `sequence`
    /// (`None` sorts first). An unparseable `changedAt` sorts before every real time.
    pub fn order_key(&self) -> (i128, u64) {
        order_key(&self.changed_at, self.sequence)
    }
}

/// [`LoopRequest::order_key`] of a stored `changedAt` and `sequence`.
pub fn order_key(changed_at: &str, sequence: Option<u64>) -> (i128, u64) {
    let at =
        time::OffsetDateTime::parse(changed_at, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp_nanos())
            .unwrap_or(i128::MIN);
    (at, sequence.unwrap_or(0))
}

/// An ops event in the one documented shape (docs/pulse.md): what `OpsEvents` validated and
/// queued, whichever sender's payload it was mapped from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PulseEvent {
    /// The sender's id of the event: `PulseSender` de-duplicates on it.
    pub event_id: String,
    /// Selects the `[[pulses]]` entry.
    pub event_type: String,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    pub people: Vec<PulsePerson>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// One affected person: at least one of `email`, `externalRef`, `contactId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PulsePerson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// A Qualtrics contact (lookup) id, `CID_…`/`CGC_…` (CleverTap's profile attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Which payload shape an ops event arrived in (the `format` query parameter of `OpsEvents`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PulseFormat {
    Bridge,
    Systrack,
    Clevertap,
}

impl PulseFormat {
    /// The name in the message and in `OpsEvents`' `format` query parameter.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Systrack => "systrack",
            Self::Clevertap => "clevertap",
        }
    }
}

/// Which part of a split event a message carries (1-based `index` of `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub index: u32,
    pub count: u32,
}

/// A message on `pulse-requests`: one verified ops event (or one part of it, when its people
/// do not fit one queue message), for `PulseSender`. It carries the people's addresses: the
/// queue is inside the trust boundary (same storage account, same identity as the ledger).
/// Field names avoid the host's metadata keys (`Id`, `DequeueCount`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PulseRequest {
    pub v: u32,
    pub format: PulseFormat,
    /// `signature` (Standard Webhooks) or `token` (static header).
    pub auth: String,
    /// The Standard Webhooks `webhook-id`, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// Present only when the event was split over several messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// RFC 3339: when the bridge received it.
    pub received_at: String,
    pub event: PulseEvent,
    /// Set only when `PulseSender` puts a request back after a transient failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl PulseRequest {
    pub const VERSION: u32 = 1;

    /// Parses a message text (shape and version; the event was validated at intake). The
    /// error says where, never what: the text holds people's addresses.
    pub fn parse(text: &str) -> Result<Self, InvalidRequest> {
        let r: Self = serde_json::from_str(text).map_err(|e| {
            InvalidRequest::Shape(format!(
                "{:?} error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if r.v != Self::VERSION {
            return Err(InvalidRequest::Version(r.v));
        }
        Ok(r)
    }

    /// The exact JSON text put on the queue.
    pub fn to_text(&self) -> String {
        // Strings, numbers and JSON values only: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
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

    #[test]
    fn loop_request_round_trips_and_orders_by_time_then_sequence() {
        let text = r#"{"v":1,"system":"servicenow","ticketId":"c537bae64f411200adf9f8e18110c76e","ticketNumber":"INC0010002","surveyId":"SV_22VlHYNeldrrrkp","responseId":"R_1l9mcVuXubb4aGm","status":"6","state":"resolved","closeCode":"Solved (Permanently)","changedAt":"2026-01-05T10:38:50Z","sequence":7,"source":"event","eventId":"c537bae64f411200adf9f8e18110c76e:7","receivedAt":"2026-01-05T10:38:52Z"}"#;
        let r = LoopRequest::parse(text).expect("valid");
        assert_eq!(r.state, TicketState::Resolved);
        assert_eq!(LoopRequest::parse(&r.to_text()).expect("round trip"), r);
        let mut later = r.clone();
        later.sequence = Some(8);
        assert!(later.order_key() > r.order_key());
        let mut bad = r.clone();
        bad.system = "jira".into();
        assert!(LoopRequest::parse(&bad.to_text()).is_err());
        bad = r;
        bad.response_id = "nope".into();
        assert!(LoopRequest::parse(&bad.to_text()).is_err());
    }
}
