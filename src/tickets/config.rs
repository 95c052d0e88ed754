//! `bridge.toml`'s ticket sections, owned by the capability that uses them; `config` parses
//! the file into these types (the dependency points from config to tickets, never back).

use serde::Deserialize;

/// Ticket systems a survey can route to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketSystem {
    Servicenow,
    Zendesk,
}

/// `[surveys.tickets]`: the survey may raise tickets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRoute {
    pub system: TicketSystem,
    /// The rule that decides (docs/tickets.md); absent means every completed response.
    #[serde(default)]
    pub when: Option<toml::Spanned<String>>,
    /// Response fields (values/labels keys) that may be copied into the ticket; templates
    /// may read only these. Empty: nothing from the response leaves Qualtrics but its ids.
    #[serde(default)]
    pub allowed_fields: Vec<String>,
    /// Templates (`{{values.QID1}}`, `{{labels.QID2}}`, `{{responseId}}`, …).
    #[serde(default)]
    pub subject: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub description: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub priority: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub urgency: Option<toml::Spanned<String>>,
    /// System-specific fields (ServiceNow columns; Zendesk `type`, `tags`, …), as templates.
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, toml::Spanned<String>>,
}

impl TicketRoute {
    /// The rule's text, if any.
    pub fn when_text(&self) -> Option<&str> {
        self.when.as_ref().map(|w| w.get_ref().as_str())
    }
}

/// `[ticketing]`: limits of ticket creation (all optional; docs/tickets.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketingLimits {
    /// Timeout of one call to ServiceNow/Zendesk.
    pub timeout_secs: u64,
    /// A 429 whose `Retry-After` is at most this is waited out in the invocation; after a
    /// longer one the request is re-enqueued to come back when it says.
    pub max_retry_after_secs: u64,
    /// Total time one invocation may spend waiting out 429s before the request is re-enqueued.
    pub throttle_budget_secs: u64,
    /// How long an invocation waits for another worker's live claim before it re-enqueues
    /// the request to come back later.
    pub busy_wait_secs: u64,
}

impl Default for TicketingLimits {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            max_retry_after_secs: 5,
            throttle_budget_secs: 120,
            busy_wait_secs: 20,
        }
    }
}
