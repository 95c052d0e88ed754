//! Pure parsing of a verified ticket event into what `loop-requests` carries.
//!
//! * Zendesk: the events-mode envelope (`type`, `id`, `time`, `detail.{id, external_id,
//!   status, updated_at}`); only `zen:event-type:ticket.status_changed` is an event here, any
//!   other type is ignored (reference `close-the-loop.md` §4.3).
//! * ServiceNow: the body the business rule in `docs/close-loop.md` sends (§3.4).
//!
//! The response is named only by the correlation the bridge set at creation,
//! `qualtrics:{SV_…}:{R_…}`. A ticket without one (empty, or another integration's) is not the
//! bridge's: ignored, not refused, since both systems send every matching ticket's changes and
//! a stream of refusals would trip Zendesk's circuit breaker. A value that claims the
//! `qualtrics:` prefix but is malformed is refused. Errors never carry the input text.

use crate::messages::{is_qualtrics_id, TicketState};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::UtcOffset;

/// The ticket systems of the `{system}` route parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Zendesk,
    Servicenow,
}

impl System {
    /// `zendesk` / `servicenow`, exactly (the route and `LoopRequest.system`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "zendesk" => Some(Self::Zendesk),
            "servicenow" => Some(Self::Servicenow),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Zendesk => "zendesk",
            Self::Servicenow => "servicenow",
        }
    }

    /// The header carrying the signature.
    pub fn signature_header(self) -> &'static str {
        match self {
            Self::Zendesk => "x-zendesk-webhook-signature",
            Self::Servicenow => "x-bridge-signature",
        }
    }

    /// The header carrying the signed timestamp.
    pub fn timestamp_header(self) -> &'static str {
        match self {
            Self::Zendesk => "x-zendesk-webhook-signature-timestamp",
            Self::Servicenow => "x-bridge-timestamp",
        }
    }
}

/// The Zendesk events-mode type this function acts on.
pub const ZENDESK_STATUS_CHANGED: &str = "zen:event-type:ticket.status_changed";
const CORRELATION_PREFIX: &str = "qualtrics:";
/// Longest ServiceNow `close_code` carried (the choice list's values are short).
const MAX_CLOSE_CODE_CHARS: usize = 256;

/// Why a verified body is unusable. The text is what the caller sees: fixed, never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not a JSON object of the expected shape")]
    Shape,
    #[error("field {0} is missing or invalid")]
    Field(&'static str),
    #[error("correlation is not qualtrics:{{surveyId}}:{{responseId}}")]
    Correlation,
    #[error("unknown ticket status")]
    Status,
}

/// One ticket state change, matched to a response by its correlation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketEvent {
    pub system: System,
    /// Zendesk ticket id / ServiceNow `sys_id`.
    pub ticket_id: String,
    pub ticket_number: Option<String>,
    pub survey_id: String,
    pub response_id: String,
    /// The status as reported, lower-cased.
    pub status: String,
    pub state: TicketState,
    pub close_code: Option<String>,
    /// RFC 3339 UTC.
    pub changed_at: String,
    pub sequence: Option<u64>,
    pub event_id: Option<String>,
}

/// What a verified body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Event(TicketEvent),
    /// Valid, but nothing for the bridge: why (fixed text), and the ticket id when known.
    Ignored {
        why: &'static str,
        ticket_id: Option<String>,
    },
}

/// A JSON string or number (Zendesk documents ids "returned as a string"; ServiceNow's
/// `getValue` gives strings; both are accepted, as the same text).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(u64),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct ZendeskEnvelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    time: Option<String>,
    detail: Option<ZendeskDetail>,
}

#[derive(Deserialize)]
struct ZendeskDetail {
    id: Option<Scalar>,
    external_id: Option<String>,
    status: Option<String>,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct ServiceNowBody {
    v: Option<u32>,
    system: Option<String>,
    sys_id: Option<String>,
    number: Option<String>,
    state: Option<Scalar>,
    close_code: Option<String>,
    correlation_id: Option<String>,
    sys_updated_on: Option<String>,
    sys_mod_count: Option<Scalar>,
}

/// Parses a verified body for `system`.
pub fn parse(system: System, body: &str) -> Result<Parsed, EventError> {
    // serde would read a struct from an array too; only an object is an event.
    if !body.trim_start().starts_with('{') {
        return Err(EventError::Shape);
    }
    match system {
        System::Zendesk => zendesk(body),
        System::Servicenow => servicenow(body),
    }
}

fn zendesk(body: &str) -> Result<Parsed, EventError> {
    let env: ZendeskEnvelope = serde_json::from_str(body).map_err(|_| EventError::Shape)?;
    if env.kind != ZENDESK_STATUS_CHANGED {
        return Ok(Parsed::Ignored {
            why: "not a ticket status change",
            ticket_id: None,
        });
    }
    let detail = env.detail.ok_or(EventError::Field("detail"))?;
    let ticket_id = detail
        .id
        .map(Scalar::text)
        .filter(|id| (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(EventError::Field("detail.id"))?;
    let Some((survey_id, response_id)) = correlation(detail.external_id.as_deref())? else {
        return Ok(Parsed::Ignored {
            why: "ticket has no bridge correlation",
            ticket_id: Some(ticket_id),
        });
    };
    let status = detail
        .status
        .ok_or(EventError::Field("detail.status"))?
        .trim()
        .to_ascii_lowercase();
    let state = match status.as_str() {
        "new" | "open" | "pending" | "hold" => TicketState::Open,
        "solved" => TicketState::Resolved,
        "closed" => TicketState::Closed,
        "deleted" => TicketState::Canceled,
        _ => return Err(EventError::Status),
    };
    let changed_at = match (detail.updated_at, env.time) {
        (Some(at), _) => utc(&at).ok_or(EventError::Field("detail.updated_at"))?,
        (None, Some(at)) => utc(&at).ok_or(EventError::Field("time"))?,
        (None, None) => return Err(EventError::Field("detail.updated_at")),
    };
    let event_id = env
        .id
        .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(EventError::Field("id"))?;
    Ok(Parsed::Event(TicketEvent {
        system: System::Zendesk,
        ticket_number: Some(ticket_id.clone()),
        ticket_id,
        survey_id,
        response_id,
        status,
        state,
        close_code: None,
        changed_at,
        sequence: None,
        event_id: Some(event_id),
    }))
}

fn servicenow(body: &str) -> Result<Parsed, EventError> {
    let b: ServiceNowBody = serde_json::from_str(body).map_err(|_| EventError::Shape)?;
    if b.v.is_some_and(|v| v != 1) {
        return Err(EventError::Field("v"));
    }
    if b.system.as_deref().is_some_and(|s| s != "servicenow") {
        return Err(EventError::Field("system"));
    }
    let ticket_id = b
        .sys_id
        .filter(|id| id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or(EventError::Field("sys_id"))?;
    let Some((survey_id, response_id)) = correlation(b.correlation_id.as_deref())? else {
        return Ok(Parsed::Ignored {
            why: "ticket has no bridge correlation",
            ticket_id: Some(ticket_id),
        });
    };
    let number = match b.number {
        None => None,
        Some(n) if n.is_empty() => None,
        Some(n) if n.len() <= 40 && n.bytes().all(|c| c.is_ascii_alphanumeric()) => Some(n),
        Some(_) => return Err(EventError::Field("number")),
    };
    let status = b
        .state
        .map(Scalar::text)
        .ok_or(EventError::Field("state"))?;
    let code: u32 = status.parse().map_err(|_| EventError::Status)?;
    // The Helsinki state model (§3.1): 6 Resolved, 7 Closed, 8 Canceled; every other state
    // (1–3 and instance-specific ones) is a ticket still, or again, being worked on.
    let state = match code {
        6 => TicketState::Resolved,
        7 => TicketState::Closed,
        8 => TicketState::Canceled,
        _ => TicketState::Open,
    };
    let close_code = match b.close_code {
        None => None,
        Some(c) if c.is_empty() => None,
        Some(c)
            if c.chars().count() <= MAX_CLOSE_CODE_CHARS && !c.chars().any(char::is_control) =>
        {
            Some(c)
        }
        Some(_) => return Err(EventError::Field("close_code")),
    };
    let changed_at = b
        .sys_updated_on
        .as_deref()
        .and_then(utc)
        .ok_or(EventError::Field("sys_updated_on"))?;
    let sequence = match b.sys_mod_count.map(Scalar::text) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| EventError::Field("sys_mod_count"))?,
        ),
    };
    let event_id = Some(match sequence {
        Some(n) => format!("{ticket_id}:{n}"),
        None => format!("{ticket_id}:{changed_at}"),
    });
    Ok(Parsed::Event(TicketEvent {
        system: System::Servicenow,
        ticket_id,
        ticket_number: number,
        survey_id,
        response_id,
        status,
        state,
        close_code,
        changed_at,
        sequence,
        event_id,
    }))
}

/// `qualtrics:{SV_…}:{R_…}` → the ids; `Ok(None)` when the ticket carries no bridge
/// correlation (absent, empty, or not starting `qualtrics:`).
pub fn correlation(value: Option<&str>) -> Result<Option<(String, String)>, EventError> {
    let Some(rest) = value.and_then(|v| v.strip_prefix(CORRELATION_PREFIX)) else {
        return Ok(None);
    };
    let (survey, response) = rest.split_once(':').ok_or(EventError::Correlation)?;
    if !is_qualtrics_id(survey, "SV_") || !is_qualtrics_id(response, "R_") {
        return Err(EventError::Correlation);
    }
    Ok(Some((survey.to_owned(), response.to_owned())))
}

/// A time as RFC 3339 UTC to the second or finer (`2026-01-05T10:38:50Z`).
fn utc(text: &str) -> Option<String> {
    let at = super::verify::parse_timestamp(text).ok()?;
    at.to_offset(UtcOffset::UTC).format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SN_BODY: &str = r#"{"v":1,"system":"servicenow","sys_id":"c537bae64f411200adf9f8e18110c76e","number":"INC0010002","state":"6","close_code":"Solved (Permanently)","correlation_id":"qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm","sys_updated_on":"2026-01-05 10:38:50","sys_mod_count":"7"}"#;

    fn zendesk_body(status: &str, external_id: &str) -> String {
        serde_json::json!({
            "type": ZENDESK_STATUS_CHANGED, "account_id": 1, "id": "01HZ9Q1W7M6Y6N7G3K2B1V0C9X",
            "time": "2026-01-05T10:38:51Z", "zendesk_event_version": "2022-11-06",
            "subject": "zen:ticket:35436",
            "detail": {"id": "35436", "external_id": external_id, "status": status,
                       "updated_at": "2026-01-05T11:38:50+01:00", "requester_id": "1"},
            "event": {"current": status, "previous": "OPEN"}
        })
        .to_string()
    }

    #[test]
    fn servicenow_worked_example() {
        let Parsed::Event(e) = parse(System::Servicenow, SN_BODY).unwrap() else {
            panic!("an event")
        };
        assert_eq!(
            e,
            TicketEvent {
                system: System::Servicenow,
                ticket_id: "c537bae64f411200adf9f8e18110c76e".into(),
                ticket_number: Some("INC0010002".into()),
                survey_id: "SV_22VlHYNeldrrrkp".into(),
                response_id: "R_1l9mcVuXubb4aGm".into(),
                status: "6".into(),
                state: TicketState::Resolved,
                close_code: Some("Solved (Permanently)".into()),
                changed_at: "2026-01-05T10:38:50Z".into(),
                sequence: Some(7),
                event_id: Some("c537bae64f411200adf9f8e18110c76e:7".into()),
            }
        );
    }

    #[test]
    fn zendesk_status_is_normalised_and_time_made_utc() {
        for (status, state) in [
            ("SOLVED", TicketState::Resolved),
            ("Solved", TicketState::Resolved),
            ("closed", TicketState::Closed),
            ("Open", TicketState::Open),
            ("pending", TicketState::Open),
            ("hold", TicketState::Open),
            ("new", TicketState::Open),
        ] {
            let body = zendesk_body(status, "qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm");
            let Parsed::Event(e) = parse(System::Zendesk, &body).unwrap() else {
                panic!("{status}: an event")
            };
            assert_eq!(e.state, state, "{status}");
            assert_eq!(e.status, status.to_ascii_lowercase());
            assert_eq!(e.changed_at, "2026-01-05T10:38:50Z");
            assert_eq!(e.ticket_id, "35436");
            assert_eq!(e.event_id.as_deref(), Some("01HZ9Q1W7M6Y6N7G3K2B1V0C9X"));
        }
    }

    #[test]
    fn tickets_without_a_bridge_correlation_are_ignored() {
        for ext in ["", "CRM-1234", "Qualtrics:SV_1:R_1"] {
            let got = parse(System::Zendesk, &zendesk_body("solved", ext)).unwrap();
            assert_eq!(
                got,
                Parsed::Ignored {
                    why: "ticket has no bridge correlation",
                    ticket_id: Some("35436".into())
                },
                "{ext:?}"
            );
        }
        let null =
            zendesk_body("solved", "x").replace(r#""external_id":"x""#, r#""external_id":null"#);
        assert!(matches!(
            parse(System::Zendesk, &null),
            Ok(Parsed::Ignored { .. })
        ));
        let other = SN_BODY.replace("qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm", "");
        assert!(matches!(
            parse(System::Servicenow, &other),
            Ok(Parsed::Ignored { .. })
        ));
        let fixture = include_str!("../../tests/fixtures/zendesk/group_membership_created.json");
        assert!(matches!(
            parse(System::Zendesk, fixture),
            Ok(Parsed::Ignored {
                why: "not a ticket status change",
                ..
            })
        ));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let good = "qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm";
        #[rustfmt::skip]
        let zendesk: Vec<(String, EventError)> = vec![
            (zendesk_body("solved", "qualtrics:SV_22VlHYNeldrrrkp"), EventError::Correlation),
            (zendesk_body("solved", "qualtrics:SV_1:R_2:x"), EventError::Correlation),
            (zendesk_body("solved", "qualtrics:R_2:SV_1"), EventError::Correlation),
            (zendesk_body("solved", "qualtrics:SV_1/../x:R_2"), EventError::Correlation),
            (zendesk_body("archived", good), EventError::Status),
            (zendesk_body("", good), EventError::Status),
            (zendesk_body("solved", good).replace(r#""id":"35436""#, r#""id":"35436x""#), EventError::Field("detail.id")),
            (zendesk_body("solved", good).replace("2026-01-05T11:38:50+01:00", "yesterday"), EventError::Field("detail.updated_at")),
            (zendesk_body("solved", good).replace(r#""status":"solved","#, r#""status":"solved","status":"open","#), EventError::Shape),
            (zendesk_body("solved", good).replace(r#""type""#, r#""kind""#), EventError::Shape),
            ("[1]".into(), EventError::Shape),
            ("{".into(), EventError::Shape),
        ];
        for (body, want) in zendesk {
            assert_eq!(parse(System::Zendesk, &body), Err(want), "{body}");
        }
        #[rustfmt::skip]
        let servicenow: Vec<(String, EventError)> = vec![
            (SN_BODY.replace(r#""v":1"#, r#""v":2"#), EventError::Field("v")),
            (SN_BODY.replace(r#""system":"servicenow""#, r#""system":"zendesk""#), EventError::Field("system")),
            (SN_BODY.replace("c537bae64f411200adf9f8e18110c76e", "INC0010002"), EventError::Field("sys_id")),
            (SN_BODY.replace(r#""state":"6""#, r#""state":"Resolved""#), EventError::Status),
            (SN_BODY.replace("2026-01-05 10:38:50", "05/01/2026"), EventError::Field("sys_updated_on")),
            (SN_BODY.replace(r#""sys_mod_count":"7""#, r#""sys_mod_count":"-1""#), EventError::Field("sys_mod_count")),
            (SN_BODY.replace("INC0010002", "INC 1; drop"), EventError::Field("number")),
            (SN_BODY.replace("R_1l9mcVuXubb4aGm", "R_"), EventError::Correlation),
        ];
        for (body, want) in servicenow {
            assert_eq!(parse(System::Servicenow, &body), Err(want), "{body}");
        }
    }

    #[test]
    fn servicenow_states_and_empty_fields() {
        for (state, want) in [
            ("1", TicketState::Open),
            ("2", TicketState::Open),
            ("3", TicketState::Open),
            ("6", TicketState::Resolved),
            ("7", TicketState::Closed),
            ("8", TicketState::Canceled),
        ] {
            let body = SN_BODY
                .replace(r#""state":"6""#, &format!(r#""state":"{state}""#))
                .replace(
                    r#""close_code":"Solved (Permanently)""#,
                    r#""close_code":null"#,
                )
                .replace(r#""sys_mod_count":"7""#, r#""sys_mod_count":"""#);
            let Parsed::Event(e) = parse(System::Servicenow, &body).unwrap() else {
                panic!("{state}: an event")
            };
            assert_eq!((e.state, e.close_code, e.sequence), (want, None, None));
            assert_eq!(
                e.event_id.as_deref(),
                Some("c537bae64f411200adf9f8e18110c76e:2026-01-05T10:38:50Z")
            );
        }
    }
}
