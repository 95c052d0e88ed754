//! `[surveys.loop]`: what `LoopCloser` does for a survey's tickets. Ids are checked while the
//! file is parsed (so an error names its line and field); the rest by [`LoopConfig::check`].

use serde::{Deserialize, Serialize};

/// A Qualtrics id of one kind, checked on parse.
macro_rules! qualtrics_id {
    ($name:ident, $what:literal, $($prefix:literal),+) => {
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(v: String) -> Result<Self, String> {
                if [$($prefix),+].iter().any(|p| crate::messages::is_qualtrics_id(&v, p)) {
                    Ok(Self(v))
                } else {
                    Err(format!(
                        "{:?} is not a Qualtrics {} id ({})",
                        v.chars().take(40).collect::<String>(),
                        $what,
                        [$($prefix),+].map(|p: &str| format!("{p}…")).join(" or ")
                    ))
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

qualtrics_id!(SurveyId, "survey", "SV_");
qualtrics_id!(LibraryId, "library", "UR_", "GR_");
qualtrics_id!(MessageId, "message", "MS_");
qualtrics_id!(MailingListId, "mailing list", "CG_");
qualtrics_id!(DirectoryId, "directory", "POOL_");
qualtrics_id!(UserId, "user", "UR_");
qualtrics_id!(TriggerId, "JSON event trigger", "OC_");

/// An embedded-data field name: 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldName(String);

impl TryFrom<String> for FieldName {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        if v.trim().is_empty() || v.chars().count() > 200 || v.chars().any(char::is_control) {
            return Err(
                "an embedded-data field name is 1 to 200 characters, no control characters".into(),
            );
        }
        Ok(Self(v))
    }
}

impl From<FieldName> for String {
    fn from(v: FieldName) -> String {
        v.0
    }
}

impl FieldName {
    fn of(s: &str) -> Self {
        Self(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[surveys.loop]`. Present with no keys: write-back on, default field names, nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Write the ticket's state back onto the response as embedded data.
    #[serde(default = "yes")]
    pub write_back: bool,
    #[serde(default)]
    pub fields: Fields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followup: Option<FollowUp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_event: Option<JsonEvent>,
}

fn yes() -> bool {
    true
}

/// The embedded-data field names written back (reference `close-the-loop.md` §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    #[serde(default = "d_system")]
    pub system: FieldName,
    #[serde(default = "d_ticket_id")]
    pub ticket_id: FieldName,
    #[serde(default = "d_ticket_number")]
    pub ticket_number: FieldName,
    #[serde(default = "d_state")]
    pub state: FieldName,
    #[serde(default = "d_state_at")]
    pub state_at: FieldName,
    #[serde(default = "d_close_code")]
    pub close_code: FieldName,
    /// Always `"1"`: marks the update as the bridge's (a workflow on "response updated" can
    /// tell it apart).
    #[serde(default = "d_marker")]
    pub marker: FieldName,
}

fn d_system() -> FieldName {
    FieldName::of("TicketSystem")
}
fn d_ticket_id() -> FieldName {
    FieldName::of("TicketId")
}
fn d_ticket_number() -> FieldName {
    FieldName::of("TicketNumber")
}
fn d_state() -> FieldName {
    FieldName::of("TicketState")
}
fn d_state_at() -> FieldName {
    FieldName::of("TicketStateAt")
}
fn d_close_code() -> FieldName {
    FieldName::of("TicketCloseCode")
}
fn d_marker() -> FieldName {
    FieldName::of("BridgeWriteBack")
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            system: d_system(),
            ticket_id: d_ticket_id(),
            ticket_number: d_ticket_number(),
            state: d_state(),
            state_at: d_state_at(),
            close_code: d_close_code(),
            marker: d_marker(),
        }
    }
}

impl Fields {
    fn all(&self) -> [&FieldName; 7] {
        [
            &self.system,
            &self.ticket_id,
            &self.ticket_number,
            &self.state,
            &self.state_at,
            &self.close_code,
            &self.marker,
        ]
    }
}

/// The state a follow-up survey is sent at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowUpOn {
    /// At `resolved`, or at `closed` when no resolution was seen (a lost event).
    #[default]
    Resolved,
    /// At `closed` only.
    Closed,
}

/// `followup = { … }`: one survey per ticket to the respondent of the original response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    pub survey: SurveyId,
    pub library: LibraryId,
    pub message: MessageId,
    pub mailing_list: MailingListId,
    pub directory: DirectoryId,
    #[serde(default)]
    pub on: FollowUpOn,
    /// Only tickets closed with one of these codes get a survey; absent: any (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_codes: Option<Vec<String>>,
    /// No survey when the ticket was reopened within this many hours before it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_if_reopened_within_hours: Option<u32>,
    /// The survey link's lifetime.
    #[serde(default = "d_expiration_days")]
    pub expiration_days: u32,
    #[serde(default = "d_from_email")]
    pub from_email: String,
    #[serde(default = "d_from_name")]
    pub from_name: String,
    /// Defaults to `from_email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_email: Option<String>,
    #[serde(default = "d_subject")]
    pub subject: String,
}

fn d_expiration_days() -> u32 {
    14
}
fn d_from_email() -> String {
    "noreply@qemailserver.com".into()
}
fn d_from_name() -> String {
    "Customer Feedback".into()
}
fn d_subject() -> String {
    "How did we do?".into()
}

/// `json_event = { url = "…" }` or `{ context_id, user_id, brand_id, trigger_id }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonEvent {
    /// The URL the workflow editor shows ("Call the event with a JSON payload"): on the
    /// Qualtrics datacenter of `QUALTRICS_BASE_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<SurveyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
    /// The states that fire it, each at most once per ticket.
    #[serde(default = "d_event_on")]
    pub on: Vec<crate::messages::TicketState>,
}

fn d_event_on() -> Vec<crate::messages::TicketState> {
    vec![
        crate::messages::TicketState::Resolved,
        crate::messages::TicketState::Closed,
    ]
}

impl JsonEvent {
    /// The request target: the configured URL, or the documented path with the parameters.
    pub fn target(&self) -> Result<String, String> {
        match (
            &self.url,
            &self.context_id,
            &self.user_id,
            &self.brand_id,
            &self.trigger_id,
        ) {
            (Some(url), None, None, None, None) => {
                let u = url::Url::parse(url).map_err(|e| format!("url: not a URL: {e}"))?;
                if !u.path().starts_with(crate::qualtrics::JSON_EVENT_PATH) {
                    return Err(format!(
                        "url: the path is not {}",
                        crate::qualtrics::JSON_EVENT_PATH
                    ));
                }
                Ok(url.clone())
            }
            (None, Some(c), Some(u), Some(b), Some(t)) => {
                if b.is_empty()
                    || !b
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err("brand_id: letters, digits, '_' or '-' only".into());
                }
                Ok(format!(
                    "{}?contextId={}&userId={}&brandId={b}&triggerId={}",
                    crate::qualtrics::JSON_EVENT_PATH,
                    c.as_str(),
                    u.as_str(),
                    t.as_str()
                ))
            }
            _ => {
                Err("set either url, or all of context_id, user_id, brand_id and trigger_id".into())
            }
        }
    }
}

impl LoopConfig {
    /// One line for `config check`: what `LoopCloser` will do.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.write_back {
            let names: Vec<&str> = self.fields.all().iter().map(|n| n.as_str()).collect();
            parts.push(format!("write-back {}", names.join(",")));
        } else {
            parts.push("no write-back".into());
        }
        match &self.followup {
            Some(f) => {
                let on = match f.on {
                    FollowUpOn::Resolved => "resolved",
                    FollowUpOn::Closed => "closed",
                };
                let mut s = format!(
                    "follow-up {} via {}/{} on {on}",
                    f.survey.as_str(),
                    f.directory.as_str(),
                    f.mailing_list.as_str()
                );
                if let Some(codes) = &f.close_codes {
                    s.push_str(&format!(" if close code in {codes:?}"));
                }
                if let Some(h) = f.skip_if_reopened_within_hours {
                    s.push_str(&format!(", not if reopened within {h}h"));
                }
                parts.push(s);
            }
            None => parts.push("no follow-up".into()),
        }
        if let Some(j) = &self.json_event {
            let on: Vec<String> =
                j.on.iter()
                    .map(|s| format!("{s:?}").to_lowercase())
                    .collect();
            parts.push(format!("JSON event on {}", on.join(",")));
        }
        parts.join("; ")
    }

    /// Checks what parsing cannot; the error is `field: message`.
    pub fn check(&self) -> Result<(), String> {
        let names = self.fields.all();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("fields: {:?} is used twice", n.as_str()));
            }
        }
        if let Some(f) = &self.followup {
            if !(1..=365).contains(&f.expiration_days) {
                return Err("followup.expiration_days: from 1 to 365".into());
            }
            if f.close_codes.as_ref().is_some_and(Vec::is_empty) {
                return Err("followup.close_codes: empty (no ticket would get a survey); leave it out to allow any".into());
            }
            for (k, v) in [
                ("from_email", Some(&f.from_email)),
                ("reply_to_email", f.reply_to_email.as_ref()),
            ] {
                if let Some(v) = v {
                    if !v.contains('@') || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(format!("followup.{k}: not an email address"));
                    }
                }
            }
            if f.subject.trim().is_empty() || f.from_name.trim().is_empty() {
                return Err("followup.subject / from_name: empty".into());
            }
        }
        if let Some(j) = &self.json_event {
            j.target().map_err(|e| format!("json_event.{e}"))?;
            if j.on.is_empty() {
                return Err("json_event.on: empty (the event would never fire)".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<LoopConfig, String> {
        toml::from_str::<LoopConfig>(t).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_section_is_write_back_with_default_names() {
        let c = parse("").unwrap();
        assert!(c.write_back);
        assert_eq!(c.fields, Fields::default());
        assert_eq!(c.fields.state.as_str(), "TicketState");
        assert!(c.followup.is_none() && c.json_event.is_none());
        c.check().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let fu = "followup = { survey = \"SV_2\", library = \"UR_1\", message = \"MS_1\", mailing_list = \"CG_1\", directory = \"POOL_1\" }\n";
        parse(fu).unwrap().check().unwrap();
        for (text, want) in [
            ("followup = { survey = \"R_2\", library = \"UR_1\", message = \"MS_1\", mailing_list = \"CG_1\", directory = \"POOL_1\" }\n", "survey id"),
            ("followup = { survey = \"SV_2\", library = \"UR_1\", message = \"MS_1\", mailing_list = \"CG_1\", directory = \"POOL_1\", on = \"open\" }\n", "open"),
            ("fields = { state = \"\" }\n", "field name"),
            ("colour = 1\n", "colour"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        for (text, want) in [
            ("fields = { state = \"X\", system = \"X\" }\n", "used twice"),
            ("json_event = { context_id = \"SV_1\" }\n", "json_event"),
            (
                "json_event = { url = \"https://iad1.qualtrics.com/API/v3/x\" }\n",
                "json_event.url",
            ),
            (
                &fu.replace("}", ", expiration_days = 0 }"),
                "expiration_days",
            ),
            (&fu.replace("}", ", close_codes = [] }"), "close_codes"),
            (
                &fu.replace("}", ", from_email = \"nobody\" }"),
                "from_email",
            ),
        ] {
            let e = parse(text).unwrap().check().unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let j = parse("json_event = { context_id = \"SV_1\", user_id = \"UR_2\", brand_id = \"acme\", trigger_id = \"OC_3\" }\n").unwrap();
        assert_eq!(
            j.json_event.unwrap().target().unwrap(),
            "/inbound-event/v1/event/JSON/triggers?contextId=SV_1&userId=UR_2&brandId=acme&triggerId=OC_3"
        );
    }
}
