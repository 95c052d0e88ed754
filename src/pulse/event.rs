//! The ops event body: the one documented shape ([`PulseEvent`], docs/pulse.md) and adapters
//! that map the two known senders' payloads onto it (reference `ops-events.md` §2, §3):
//!
//! * `bridge` (default): `{"eventId","eventType","occurredAt","people":[…],"attributes":{…}}`;
//! * `systrack`: SysTrack's sensor-notification template (`eventId`, `eventTime`, `eventType`,
//!   `data`); `data` becomes the attributes; the template may add a `people` array;
//! * `clevertap`: CleverTap's webhook-campaign body (a Qualtrics distribution request, one
//!   per user); the person is `recipients.contactId` with `embeddedData` as attributes.
//!
//! Everything is validated strictly against the limits below; errors name the field, never
//! its value (the body holds people's addresses).

use crate::messages::{is_qualtrics_id, PulseEvent, PulseFormat, PulsePerson};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Largest body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most people one event may name (a `[[pulses]]` entry may allow fewer).
pub const MAX_PEOPLE: usize = 10_000;
const MAX_EVENT_ID: usize = 128;
const MAX_EVENT_TYPE: usize = 128;
const MAX_EMAIL: usize = 254;
const MAX_EXTERNAL_REF: usize = 128;
const MAX_NAME: usize = 200;
/// Attributes per object; names and texts within Qualtrics' embedded-data limits (200 and
/// 1024 characters, `close-the-loop.md` §2.3.2).
const MAX_ATTRIBUTES: usize = 50;
const MAX_ATTRIBUTE_NAME: usize = 200;
const MAX_ATTRIBUTE_TEXT: usize = 1024;
const MAX_LIST_ITEMS: usize = 50;
/// Serialised size caps, so that an event without people and any one person each fit well
/// inside one queue message (48 KiB before the host's base64).
const MAX_EVENT_ATTRIBUTES_BYTES: usize = 16 * 1024;
const MAX_PERSON_ATTRIBUTES_BYTES: usize = 4 * 1024;
/// CleverTap bodies carry no event type unless the template adds one.
pub const CLEVERTAP_DEFAULT_TYPE: &str = "clevertap.campaign";

/// Why a body is not an acceptable event. Never carries a value from the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("unknown format (expected bridge, systrack or clevertap)")]
    Format,
    #[error("body is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("body does not match the {format} event shape{detail} (line {line}, column {column})")]
    Shape {
        format: &'static str,
        /// `: missing field `x`` or `: duplicate field `x``: names from the schema only.
        detail: String,
        line: usize,
        column: usize,
    },
    #[error("{field}: {problem}")]
    Invalid {
        field: String,
        problem: &'static str,
    },
    #[error("more than {MAX_PEOPLE} people")]
    TooManyPeople,
}

fn invalid(field: impl Into<String>, problem: &'static str) -> EventError {
    EventError::Invalid {
        field: field.into(),
        problem,
    }
}

/// The format the `format` query parameter names; absent means `bridge`.
pub fn format_of(query: Option<&str>) -> Result<PulseFormat, EventError> {
    match query {
        None | Some("bridge") => Ok(PulseFormat::Bridge),
        Some("systrack") => Ok(PulseFormat::Systrack),
        Some("clevertap") => Ok(PulseFormat::Clevertap),
        Some(_) => Err(EventError::Format),
    }
}

fn from_json<'a, T: Deserialize<'a>>(format: PulseFormat, body: &'a str) -> Result<T, EventError> {
    serde_json::from_str(body).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        if e.is_syntax() || e.is_eof() {
            return EventError::Syntax { line, column };
        }
        // serde names only schema fields in these two; other messages may quote a value.
        let text = e.to_string();
        let detail = ["missing field `", "duplicate field `"]
            .iter()
            .find(|p| text.starts_with(*p))
            .and_then(|_| text.split(" at line ").next())
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        EventError::Shape {
            format: format.name(),
            detail,
            line,
            column,
        }
    })
}

/// Parses and validates `body` in `format`; `now` stands in where a sender gives no time.
pub fn parse(
    format: PulseFormat,
    body: &str,
    now: OffsetDateTime,
) -> Result<PulseEvent, EventError> {
    let event = match format {
        PulseFormat::Bridge => from_json::<PulseEvent>(format, body)?,
        PulseFormat::Systrack => from_json::<SysTrack>(format, body)?.into_event(),
        PulseFormat::Clevertap => from_json::<CleverTap>(format, body)?.into_event(now),
    };
    validate(event)
}

/// SysTrack's sensor-notification body (reference `ops-events.md` §2).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SysTrack {
    event_id: String,
    event_time: String,
    event_type: String,
    #[serde(default)]
    data: Map<String, Value>,
    /// Not in SysTrack's template: an admin may add it (the people are otherwise behind
    /// `systemsAtActivationURL`).
    #[serde(default)]
    people: Vec<PulsePerson>,
}

impl SysTrack {
    fn into_event(self) -> PulseEvent {
        PulseEvent {
            event_id: self.event_id,
            event_type: self.event_type,
            occurred_at: self.event_time,
            people: self.people,
            attributes: self.data,
        }
    }
}

/// CleverTap's webhook-campaign body: a Qualtrics `POST /distributions` request for one user
/// (reference `ops-events.md` §3). `message` and `header` are read and dropped: the
/// `[[pulses]]` entry decides what is sent, and the sender's addresses go nowhere.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CleverTap {
    recipients: CleverTapRecipients,
    #[serde(default)]
    survey_link: Option<CleverTapSurveyLink>,
    #[serde(default)]
    embedded_data: Map<String, Value>,
    #[serde(default)]
    send_date: Option<String>,
    /// Not in CleverTap's sample: a template may add them (Liquid).
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default, rename = "message")]
    _message: Option<IgnoredAny>,
    #[serde(default, rename = "header")]
    _header: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CleverTapRecipients {
    contact_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CleverTapSurveyLink {
    #[serde(default)]
    survey_id: Option<String>,
}

impl CleverTap {
    fn into_event(self, now: OffsetDateTime) -> PulseEvent {
        let survey = self.survey_link.and_then(|l| l.survey_id);
        // No event id in CleverTap's body: one per (contact, survey, hour), so a campaign that
        // fires twice within the hour is one event for PulseSender's de-duplication.
        let event_id = self.event_id.unwrap_or_else(|| {
            let hour = now.unix_timestamp().div_euclid(3600);
            let digest = Sha256::digest(
                format!(
                    "clevertap\n{}\n{}\n{hour}",
                    self.recipients.contact_id,
                    survey.as_deref().unwrap_or("")
                )
                .as_bytes(),
            );
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("ct-{hex}")
        });
        let mut attributes = Map::new();
        if let Some(s) = survey {
            attributes.insert("surveyId".into(), Value::String(s));
        }
        if let Some(d) = self.send_date {
            attributes.insert("sendDate".into(), Value::String(d));
        }
        PulseEvent {
            event_id,
            event_type: self
                .event_type
                .unwrap_or_else(|| CLEVERTAP_DEFAULT_TYPE.into()),
            occurred_at: rfc3339(now),
            people: vec![PulsePerson {
                email: None,
                external_ref: None,
                contact_id: Some(self.recipients.contact_id),
                name: None,
                attributes: self.embedded_data,
            }],
            attributes,
        }
    }
}

/// RFC 3339 UTC to the second.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Non-empty, at most `max` characters, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, "is too long"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

/// A plain `local@domain.tld`: one `@`, no spaces or characters that would make it a list or
/// a display name. Deliverability is Qualtrics' to judge.
fn email(field: &str, value: &str) -> Result<(), EventError> {
    text(field, value, MAX_EMAIL)?;
    let ok = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !value.chars().any(|c| {
                    c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')')
                })
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "is not an email address"))
    }
}

fn scalar(field: &str, v: &Value) -> Result<(), EventError> {
    match v {
        Value::String(s) if s.is_empty() => Ok(()),
        Value::String(s) => text(field, s, MAX_ATTRIBUTE_TEXT),
        Value::Number(_) | Value::Bool(_) => Ok(()),
        _ => Err(invalid(
            field,
            "values must be strings, numbers, booleans or lists of them",
        )),
    }
}

fn attributes(field: &str, map: &Map<String, Value>, max_bytes: usize) -> Result<(), EventError> {
    if map.len() > MAX_ATTRIBUTES {
        return Err(invalid(field, "has too many entries"));
    }
    for (name, value) in map {
        // The name is the sender's text: the error names the object, not the entry.
        text(field, name, MAX_ATTRIBUTE_NAME)?;
        match value {
            Value::Array(items) if items.len() > MAX_LIST_ITEMS => {
                return Err(invalid(field, "has a list that is too long"))
            }
            Value::Array(items) => items.iter().try_for_each(|i| scalar(field, i))?,
            other => scalar(field, other)?,
        }
    }
    let size = serde_json::to_string(map)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(invalid(field, "is too large"));
    }
    Ok(())
}

fn person(i: usize, p: &PulsePerson, seen: &mut HashSet<String>) -> Result<(), EventError> {
    let f = |name: &str| format!("people[{i}].{name}");
    if p.email.is_none() && p.external_ref.is_none() && p.contact_id.is_none() {
        return Err(invalid(
            format!("people[{i}]"),
            "needs an email, externalRef or contactId",
        ));
    }
    if let Some(e) = &p.email {
        email(&f("email"), e)?;
    }
    if let Some(r) = &p.external_ref {
        text(&f("externalRef"), r, MAX_EXTERNAL_REF)?;
    }
    if let Some(c) = &p.contact_id {
        if !(is_qualtrics_id(c, "CID_") || is_qualtrics_id(c, "CGC_")) {
            return Err(invalid(
                f("contactId"),
                "is not a Qualtrics contact id (CID_/CGC_)",
            ));
        }
    }
    if let Some(n) = &p.name {
        text(&f("name"), n, MAX_NAME)?;
    }
    attributes(&f("attributes"), &p.attributes, MAX_PERSON_ATTRIBUTES_BYTES)?;
    // The same person twice would be surveyed twice; identities compare case-insensitively
    // for addresses.
    let keys = [
        p.email.as_ref().map(|e| format!("e:{}", e.to_lowercase())),
        p.external_ref.as_ref().map(|r| format!("r:{r}")),
        p.contact_id.as_ref().map(|c| format!("c:{c}")),
    ];
    for key in keys.into_iter().flatten() {
        if !seen.insert(key) {
            return Err(invalid(format!("people[{i}]"), "repeats an earlier person"));
        }
    }
    Ok(())
}

/// Checks every limit and normalises `occurredAt` to UTC.
pub fn validate(mut e: PulseEvent) -> Result<PulseEvent, EventError> {
    text("eventId", &e.event_id, MAX_EVENT_ID)?;
    if !e.event_id.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err(invalid("eventId", "must be printable ASCII without spaces"));
    }
    text("eventType", &e.event_type, MAX_EVENT_TYPE)?;
    if !e
        .event_type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(invalid("eventType", "must be letters, digits and . _ : -"));
    }
    let at = OffsetDateTime::parse(&e.occurred_at, &Rfc3339)
        .map_err(|_| invalid("occurredAt", "is not an RFC 3339 time"))?;
    e.occurred_at = rfc3339(at);
    if e.people.len() > MAX_PEOPLE {
        return Err(EventError::TooManyPeople);
    }
    let mut seen = HashSet::with_capacity(e.people.len() * 2);
    for (i, p) in e.people.iter().enumerate() {
        person(i, p, &mut seen)?;
    }
    attributes("attributes", &e.attributes, MAX_EVENT_ATTRIBUTES_BYTES)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap()
    }

    /// The reference's SysTrack template with its variables filled in.
    const SYSTRACK: &str = include_str!("../../tests/fixtures/pulse/systrack.json");

    /// The reference's CleverTap body with the Liquid tag rendered.
    const CLEVERTAP: &str = include_str!("../../tests/fixtures/pulse/clevertap.json");

    #[test]
    fn bridge_shape_round_trips_and_normalises_time() {
        let body = r#"{"eventId":"inc-1","eventType":"incident.resolved","occurredAt":"2026-12-01T10:30:00+01:00","people":[{"email":"a@example.com","name":"A"},{"externalRef":"E-2","attributes":{"team":"x"}}],"attributes":{"sev":2}}"#;
        let e = parse(PulseFormat::Bridge, body, now()).unwrap();
        assert_eq!(e.occurred_at, "2026-12-01T09:30:00Z");
        assert_eq!(e.people.len(), 2);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"eventId":"inc-1","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z",
                   "people":[{"email":"a@example.com","name":"A"},{"externalRef":"E-2","attributes":{"team":"x"}}],
                   "attributes":{"sev":2}})
        );
    }

    #[test]
    fn systrack_example_maps_data_to_attributes() {
        let e = parse(PulseFormat::Systrack, SYSTRACK, now()).unwrap();
        assert_eq!(e.event_id, "7f3c9a52-0d1e-4b7a-9c11-2a5e8f0b6d43");
        assert_eq!(e.event_type, "SensorNotification.Activated");
        assert_eq!(e.occurred_at, "2026-12-01T09:30:00Z");
        assert!(e.people.is_empty());
        assert_eq!(
            e.attributes["sensorNames"],
            json!(["High CPU", "VPN Disconnects"])
        );
    }

    #[test]
    fn clevertap_example_maps_the_contact_and_drops_the_message() {
        let e = parse(PulseFormat::Clevertap, CLEVERTAP, now()).unwrap();
        assert_eq!(e.event_type, CLEVERTAP_DEFAULT_TYPE);
        assert_eq!(e.people.len(), 1);
        assert_eq!(
            e.people[0].contact_id.as_deref(),
            Some("CGC_2b8YpLqWz0xRt4N")
        );
        assert_eq!(e.people[0].attributes["property1"], "string");
        assert_eq!(e.attributes["surveyId"], "SV_cHbKMOdeT8NetF3");
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            !text.contains("qualtrics.com") && !text.contains("Example Message"),
            "{text}"
        );
        // The same campaign within the hour is one event; the next hour another.
        let again = parse(
            PulseFormat::Clevertap,
            CLEVERTAP,
            now() + time::Duration::seconds(60),
        )
        .unwrap();
        let later = parse(
            PulseFormat::Clevertap,
            CLEVERTAP,
            now() + time::Duration::hours(2),
        )
        .unwrap();
        assert!(
            e.event_id.starts_with("ct-") && e.event_id.len() == 35,
            "{}",
            e.event_id
        );
        assert_eq!(e.event_id, again.event_id);
        assert_ne!(e.event_id, later.event_id);
        // CleverTap's sample default (`'test'`) is not a contact.
        let bad = CLEVERTAP.replace("CGC_2b8YpLqWz0xRt4N", "test");
        assert_eq!(
            parse(PulseFormat::Clevertap, &bad, now())
                .unwrap_err()
                .to_string(),
            "people[0].contactId: is not a Qualtrics contact id (CID_/CGC_)"
        );
    }

    #[test]
    fn refusals_name_the_field_never_the_value() {
        let base = json!({"eventId":"e1","eventType":"t","occurredAt":"2026-12-01T00:00:00Z","people":[{"email":"secret.person@example.com"}],"attributes":{}});
        let with = |path: &[&str], v: Value| {
            let mut b = base.clone();
            let (last, parent) = path.split_last().unwrap();
            let at = b
                .pointer_mut(&parent.iter().map(|p| format!("/{p}")).collect::<String>())
                .unwrap();
            match at {
                Value::Array(items) => items[last.parse::<usize>().unwrap()] = v,
                other => other[*last] = v,
            }
            b.to_string()
        };
        let many: Vec<Value> = (0..10_001)
            .map(|i| json!({"externalRef": format!("r{i}")}))
            .collect();
        let rows: Vec<(String, &str)> = vec![
            (with(&["people", "0", "email"], json!("secret.person@@example.com")), "people[0].email: is not an email address"),
            (with(&["people", "0", "email"], json!("Secret Person <secret.person@example.com>")), "people[0].email: is not an email address"),
            (with(&["people", "0", "email"], json!("secret.person@localhost")), "people[0].email: is not an email address"),
            (with(&["people", "0", "email"], json!(5)), "body does not match the bridge event shape (line 1, column 104)"),
            (with(&["eventId"], json!("has space")), "eventId: must be printable ASCII without spaces"),
            (with(&["eventId"], json!("")), "eventId: is empty"),
            (with(&["eventType"], json!("a/b")), "eventType: must be letters, digits and . _ : -"),
            (with(&["occurredAt"], json!("yesterday")), "occurredAt: is not an RFC 3339 time"),
            (with(&["people"], Value::Array(many)), "more than 10000 people"),
            (with(&["people", "0"], json!({"name":"only a name"})), "people[0]: needs an email, externalRef or contactId"),
            (with(&["people"], json!([{"email":"a@example.com"},{"email":"A@Example.com"}])), "people[1]: repeats an earlier person"),
            (with(&["attributes"], json!({"k": {"nested": 1}})), "attributes: values must be strings, numbers, booleans or lists of them"),
            (with(&["attributes"], json!({"k": "x".repeat(1025)})), "attributes: is too long"),
            (with(&["people", "0", "name"], json!("a\u{7}b")), "people[0].name: contains control characters"),
            (r#"{"eventId":"e1","eventType":"t","occurredAt":"2026-12-01T00:00:00Z"}"#.into(), "body does not match the bridge event shape: missing field `people` (line 1, column 68)"),
            (r#"{"eventId":"e1","eventId":"e2"}"#.into(), "body does not match the bridge event shape: duplicate field `eventId` (line 1, column 25)"),
            (r#"{"eventId":"e1","#.into(), "body is not valid JSON (line 1, column 16)"),
        ];
        for (body, want) in rows {
            let got = match parse(PulseFormat::Bridge, &body, now()) {
                Ok(_) => panic!("accepted: {body}"),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, want, "{body}");
            assert!(!got.contains("secret.person"), "{got}");
        }
        assert_eq!(format_of(Some("zendesk")), Err(EventError::Format));
        assert_eq!(format_of(None), Ok(PulseFormat::Bridge));
    }
}
