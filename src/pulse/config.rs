//! `bridge.toml`'s `[[pulses]]` entries, owned by the capability that uses them; `config`
//! parses the file into these types and calls [`PulseRoute::check`] (the dependency points
//! from config to pulse, never back). docs/pulse.md documents every key.

use crate::messages::is_qualtrics_id;
use serde::Deserialize;
use toml::Spanned;

/// Cool-down when an entry names none: 14 days (`close-the-loop.md` §7's example).
pub const DEFAULT_COOLDOWN_HOURS: u32 = 14 * 24;
/// Most people an event may name when an entry says nothing.
pub const DEFAULT_MAX_PEOPLE: u32 = 100;
/// Longest cool-down accepted: a year.
const MAX_COOLDOWN_HOURS: u32 = 365 * 24;

/// One `[[pulses]]` entry: which survey an event type sends, to whom, how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PulseRoute {
    /// The `eventType` this entry handles (each type at most one entry).
    pub event_type: Spanned<String>,
    /// `SV_…`: the survey sent.
    pub survey: Spanned<String>,
    /// `UR_…`/`GR_…`: the library holding `message`.
    pub library: Spanned<String>,
    /// `MS_…`: the invitation message.
    pub message: Spanned<String>,
    /// `POOL_…`: the XM directory the contacts are upserted into.
    pub directory: Spanned<String>,
    /// `CG_…`: the mailing list the contacts are added to and distributed from.
    pub mailing_list: Spanned<String>,
    /// Event or person attribute names attached to the contact as embedded data; nothing
    /// else from the event reaches Qualtrics.
    #[serde(default)]
    pub embedded_data: Vec<Spanned<String>>,
    /// The cool-down category; defaults to `event_type`. Entries sharing a category share
    /// each person's cool-down.
    #[serde(default)]
    pub category: Option<Spanned<String>>,
    /// A person surveyed for this category is not surveyed again for it within this time.
    #[serde(default = "default_cooldown")]
    pub cooldown_hours: Spanned<u32>,
    /// Events naming more people are refused (422).
    #[serde(default = "default_max_people")]
    pub max_people: Spanned<u32>,
    /// The invitation's header and the survey link's lifetime (as `[surveys.loop] followup`).
    #[serde(default = "default_from_email")]
    pub from_email: String,
    #[serde(default = "default_from_name")]
    pub from_name: String,
    /// Defaults to `from_email`.
    #[serde(default)]
    pub reply_to_email: Option<String>,
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default = "default_expiration_days")]
    pub expiration_days: u32,
}

fn default_from_email() -> String {
    "noreply@qemailserver.com".into()
}

fn default_from_name() -> String {
    "IT Experience".into()
}

fn default_subject() -> String {
    "A quick question about your experience".into()
}

fn default_expiration_days() -> u32 {
    7
}

fn default_cooldown() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_COOLDOWN_HOURS)
}

fn default_max_people() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_MAX_PEOPLE)
}

/// A `[[pulses]]` value start-up refuses: the field, where it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulseConfigError {
    /// `event_type`, `survey`, …
    pub field: &'static str,
    /// Byte range in the file (empty for a defaulted field).
    pub span: std::ops::Range<usize>,
    pub message: String,
}

fn err<T>(field: &'static str, value: &Spanned<T>, message: impl Into<String>) -> PulseConfigError {
    PulseConfigError {
        field,
        span: value.span(),
        message: message.into(),
    }
}

impl PulseRoute {
    pub fn event_type(&self) -> &str {
        self.event_type.get_ref()
    }

    /// The cool-down category (the event type unless `category` says otherwise).
    pub fn category(&self) -> &str {
        self.category
            .as_ref()
            .map_or(self.event_type(), |c| c.get_ref().as_str())
    }

    pub fn max_people(&self) -> usize {
        usize::try_from(*self.max_people.get_ref()).unwrap_or(usize::MAX)
    }

    /// Validates one entry; `max_people_limit` is the intake's hard limit.
    pub fn check(&self, max_people_limit: usize) -> Result<(), PulseConfigError> {
        let t = self.event_type();
        let type_ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !type_ok {
            return Err(err(
                "event_type",
                &self.event_type,
                "must be 1-128 letters, digits and . _ : -",
            ));
        }
        let ids: [(&'static str, &Spanned<String>, &[&str]); 5] = [
            ("survey", &self.survey, &["SV_"]),
            ("library", &self.library, &["UR_", "GR_"]),
            ("message", &self.message, &["MS_"]),
            ("directory", &self.directory, &["POOL_"]),
            ("mailing_list", &self.mailing_list, &["CG_"]),
        ];
        for (field, value, prefixes) in ids {
            if !prefixes.iter().any(|p| is_qualtrics_id(value.get_ref(), p)) {
                return Err(err(
                    field,
                    value,
                    format!(
                        "{:?} is not a Qualtrics id ({}…)",
                        value.get_ref(),
                        prefixes.join("…/")
                    ),
                ));
            }
        }
        for name in &self.embedded_data {
            let n = name.get_ref();
            if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
                return Err(err(
                    "embedded_data",
                    name,
                    "names must be 1-200 characters without control characters",
                ));
            }
        }
        if let Some(c) = &self.category {
            if c.get_ref().trim().is_empty() || c.get_ref().len() > 128 {
                return Err(err("category", c, "must be 1-128 characters"));
            }
        }
        if *self.cooldown_hours.get_ref() > MAX_COOLDOWN_HOURS {
            return Err(err(
                "cooldown_hours",
                &self.cooldown_hours,
                format!("must be at most {MAX_COOLDOWN_HOURS} (a year)"),
            ));
        }
        for v in std::iter::once(&self.from_email).chain(self.reply_to_email.as_ref()) {
            if !v.contains('@') || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    "from_email",
                    &self.event_type,
                    "from_email / reply_to_email must be an address",
                ));
            }
        }
        if self.subject.trim().is_empty() || self.from_name.trim().is_empty() {
            return Err(err(
                "subject",
                &self.event_type,
                "subject / from_name must not be empty",
            ));
        }
        if !(1..=365).contains(&self.expiration_days) {
            return Err(err("expiration_days", &self.event_type, "must be 1-365"));
        }
        let max = self.max_people();
        if max == 0 || max > max_people_limit {
            return Err(err(
                "max_people",
                &self.max_people,
                format!("must be 1-{max_people_limit}"),
            ));
        }
        Ok(())
    }
}

/// Validates every entry and that no event type has two; the error carries the entry index.
pub fn check_all(
    routes: &[PulseRoute],
    max_people_limit: usize,
) -> Result<(), (usize, PulseConfigError)> {
    for (i, r) in routes.iter().enumerate() {
        r.check(max_people_limit).map_err(|e| (i, e))?;
        if routes[..i].iter().any(|o| o.event_type() == r.event_type()) {
            return Err((
                i,
                err(
                    "event_type",
                    &r.event_type,
                    format!("{:?} is handled by an earlier entry", r.event_type()),
                ),
            ));
        }
    }
    Ok(())
}
