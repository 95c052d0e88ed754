//! A survey's ticket mapping, compiled from `[surveys.tickets]`: the rule, the templates, the
//! allow-list of response fields that may leave Qualtrics, and system-specific extras.

use super::config::{TicketRoute, TicketSystem};
use super::rules::{text, ResponseView, Rule, Template};
use std::collections::BTreeMap;
use std::ops::Range;

/// A config error inside `[surveys.tickets]`: the field (`when`, `subject`, …), the byte span
/// of its value in the file, and what is wrong (with a column inside the value when known).
#[derive(Debug, Clone)]
pub struct MappingError {
    pub field: String,
    pub span: Option<Range<usize>>,
    pub column: Option<usize>,
    pub message: String,
}

/// The compiled mapping of one survey.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub system: TicketSystem,
    pub rule: Option<Rule>,
    pub subject: Template,
    pub description: Template,
    pub priority: Option<Template>,
    pub urgency: Option<Template>,
    pub extra: BTreeMap<String, Template>,
    pub allowed_fields: Vec<String>,
}

/// The system-neutral ticket content rendered from one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub subject: String,
    pub description: String,
    pub priority: Option<String>,
    pub urgency: Option<String>,
    pub extra: BTreeMap<String, String>,
}

pub const DEFAULT_SUBJECT: &str = "Qualtrics response {{responseId}} (survey {{surveyId}})";
pub const DEFAULT_DESCRIPTION: &str = "Survey {{surveyId}}, response {{responseId}}";

/// ServiceNow fields the bridge sets itself.
const SERVICENOW_RESERVED: &[&str] = &[
    "short_description",
    "description",
    "urgency",
    "impact",
    "correlation_id",
    "correlation_display",
];
/// Zendesk ticket properties `extra` may set (others are set by the bridge or not supported).
const ZENDESK_EXTRA: &[&str] = &["type", "tags", "status", "group_id", "assignee_id"];
const ZENDESK_PRIORITIES: &[&str] = &["urgent", "high", "normal", "low"];
const SERVICENOW_LEVELS: &[&str] = &["1", "2", "3"];

fn literal(t: &Template) -> Option<String> {
    (t.paths().next().is_none()).then(|| t.render(&ResponseView::default()))
}

impl Mapping {
    /// Compiles and checks a route. Response fields read by templates must be on the
    /// allow-list; the rule may read any field (it never leaves the bridge).
    pub fn compile(route: &TicketRoute) -> Result<Self, MappingError> {
        let err =
            |field: &str, span: Option<Range<usize>>, column: Option<usize>, message: String| {
                MappingError {
                    field: field.to_string(),
                    span,
                    column,
                    message,
                }
            };
        let rule = match &route.when {
            None => None,
            Some(w) => Some(
                Rule::parse(w.get_ref())
                    .map_err(|e| err("when", Some(w.span()), Some(e.column), e.message))?,
            ),
        };
        for (i, f) in route.allowed_fields.iter().enumerate() {
            if f.trim().is_empty() || f.contains(['{', '}']) {
                return Err(err(
                    &format!("allowed_fields[{i}]"),
                    None,
                    None,
                    format!("{f:?} is not a response field name"),
                ));
            }
        }
        let template = |field: &str,
                        value: Option<&toml::Spanned<String>>,
                        default: Option<&str>|
         -> Result<Option<Template>, MappingError> {
            let (src, span) = match (value, default) {
                (Some(v), _) => (v.get_ref().as_str(), Some(v.span())),
                (None, Some(d)) => (d, None),
                (None, None) => return Ok(None),
            };
            let t = Template::parse(src)
                .map_err(|e| err(field, span.clone(), Some(e.column), e.message))?;
            for p in t.paths() {
                if let Some(name) = p.field() {
                    if !route.allowed_fields.iter().any(|a| a == name) {
                        return Err(err(
                            field,
                            span,
                            None,
                            format!("{p} reads response field {name:?}, which is not in allowed_fields (only allow-listed fields may leave Qualtrics)"),
                        ));
                    }
                }
            }
            Ok(Some(t))
        };
        let subject = template("subject", route.subject.as_ref(), Some(DEFAULT_SUBJECT))?
            .unwrap_or_else(|| Template::parse("").expect("empty template"));
        let description = template(
            "description",
            route.description.as_ref(),
            Some(DEFAULT_DESCRIPTION),
        )?
        .unwrap_or_else(|| Template::parse("").expect("empty template"));
        let priority = template("priority", route.priority.as_ref(), None)?;
        let urgency = template("urgency", route.urgency.as_ref(), None)?;
        let mut extra = BTreeMap::new();
        for (k, v) in &route.extra {
            let field = format!("extra.{k}");
            let ok = match route.system {
                TicketSystem::Servicenow => {
                    !SERVICENOW_RESERVED.contains(&k.as_str())
                        && !k.starts_with("sys_")
                        && k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                }
                TicketSystem::Zendesk => ZENDESK_EXTRA.contains(&k.as_str()),
            };
            if !ok {
                let allowed = match route.system {
                    TicketSystem::Servicenow => format!(
                        "a writable incident column other than {SERVICENOW_RESERVED:?} and sys_*"
                    ),
                    TicketSystem::Zendesk => format!("one of {ZENDESK_EXTRA:?}"),
                };
                return Err(err(
                    &field,
                    Some(v.span()),
                    None,
                    format!("{k:?} cannot be set here: use {allowed}"),
                ));
            }
            if let Some(t) = template(&field, Some(v), None)? {
                extra.insert(k.clone(), t);
            }
        }
        // Literal values the target system would refuse are caught now, not per ticket.
        let check =
            |field: &str, t: &Option<Template>, span: Option<Range<usize>>, allowed: &[&str]| {
                match t.as_ref().and_then(literal) {
                    Some(v) if !allowed.contains(&v.as_str()) => Err(err(
                        field,
                        span,
                        None,
                        format!("{v:?} is not one of {allowed:?}"),
                    )),
                    _ => Ok(()),
                }
            };
        let span = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|s| s.span());
        match route.system {
            TicketSystem::Servicenow => {
                check(
                    "priority",
                    &priority,
                    span(&route.priority),
                    SERVICENOW_LEVELS,
                )?;
                check("urgency", &urgency, span(&route.urgency), SERVICENOW_LEVELS)?;
            }
            TicketSystem::Zendesk => {
                check(
                    "priority",
                    &priority,
                    span(&route.priority),
                    ZENDESK_PRIORITIES,
                )?;
                if let Some(u) = &route.urgency {
                    return Err(err(
                        "urgency",
                        Some(u.span()),
                        None,
                        "Zendesk tickets have no urgency; use priority".into(),
                    ));
                }
            }
        }
        Ok(Self {
            system: route.system,
            rule,
            subject,
            description,
            priority,
            urgency,
            extra,
            allowed_fields: route.allowed_fields.clone(),
        })
    }

    /// Whether the response should raise a ticket. Without a rule, every completed response
    /// does (`values.finished` absent or not 0).
    pub fn wants_ticket(&self, r: &ResponseView) -> bool {
        match &self.rule {
            Some(rule) => rule.matches(r),
            None => !r
                .values
                .get("finished")
                .is_some_and(|f| matches!(text(f).as_str(), "0" | "false")),
        }
    }

    /// Renders the ticket. The description ends with the allow-listed fields (and nothing
    /// else from the response): `NAME: value (label)`.
    pub fn render(&self, r: &ResponseView) -> Draft {
        let mut description = self.description.render(r);
        let mut lines = Vec::new();
        for name in &self.allowed_fields {
            let value = r.values.get(name).map(text).filter(|v| !v.is_empty());
            let label = r.labels.get(name).map(text).filter(|v| !v.is_empty());
            match (value, label) {
                (Some(v), Some(l)) if v != l => lines.push(format!("{name}: {v} ({l})")),
                (Some(v), _) | (None, Some(v)) => lines.push(format!("{name}: {v}")),
                (None, None) => {}
            }
        }
        if !lines.is_empty() {
            description.push_str("\n\nResponse fields:\n");
            description.push_str(&lines.join("\n"));
        }
        Draft {
            subject: self.subject.render(r),
            description,
            priority: self
                .priority
                .as_ref()
                .map(|t| t.render(r))
                .filter(|s| !s.is_empty()),
            urgency: self
                .urgency
                .as_ref()
                .map(|t| t.render(r))
                .filter(|s| !s.is_empty()),
            extra: self
                .extra
                .iter()
                .map(|(k, t)| (k.clone(), t.render(r)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        }
    }
}
