//! `TicketEvents` receives a ticket system's state change
//! (`POST /api/tickets/{system}/events`, `zendesk` or `servicenow`), verifies it, matches it
//! to the response the bridge raised the ticket for, and puts one `LoopRequest` on the `loop`
//! output (queue `loop-requests`). `docs/close-loop.md` says how to set each side up.
//!
//! 1. `POST` only, `{system}` known, JSON body of at most [`MAX_BODY_BYTES`], valid UTF-8.
//! 2. Exactly one signature and one timestamp header; the signature ([`verify`]) against the
//!    system's current and previous webhook secret, then the timestamp's freshness.
//! 3. The body ([`events`]); a ticket without the bridge's correlation is ignored (202).
//! 4. The ticket ledger (`tickets/{SV}/{R}.json`, read only): only a `created` entry naming this
//!    system and ticket id is the bridge's ticket. Anything else: 202, nothing queued, logged
//!    with the ticket id. A ledger that cannot be read: 503 with `Retry-After`, which Zendesk
//!    retries.
//!
//! Every refusal is a 4xx in `res` with `{"error": reason}`; the host always gets a completed
//! invocation.

use super::events::{self, EventError, Parsed, System, TicketEvent};
use super::verify::{self, SignatureError, SigningKey, TimestampError};
use crate::deps::Deps;
use crate::host::{
    Envelope, FunctionSpec, HttpOutput, HttpTrigger, Invocation, InvocationError, InvocationReply,
    Trigger,
};
use crate::messages::{LoopRequest, LoopSource};
use crate::secrets::{RotatingKeys, SecretName, SecretsProvider, Verified};
use crate::telemetry::{InvocationSummary, Severity};
use crate::tickets::ledger::{Ledger, State};
use std::sync::Arc;

const REQUEST: &str = "req";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "TicketEvents",
    trigger: Trigger::Http,
    input: REQUEST,
};
const FUNCTION: &str = SPEC.name;
const RESPONSE: &str = "res";
const LOOP: &str = "loop";
/// Largest event accepted. Zendesk's events-mode envelope is a few KB (its trigger payloads
/// are capped at 16 000 characters) and the ServiceNow rule's body is under 1 KB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// What a 503 asks the sender to wait: under Zendesk's 60 s, so it retries.
const RETRY_AFTER_SECS: u16 = 10;

/// Why an event was refused. The `Display` text is what the caller sees: short, and never
/// derived from the input or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("method not allowed")]
    Method,
    #[error("unknown ticket system (zendesk or servicenow)")]
    UnknownSystem,
    #[error("body larger than 64 KB")]
    TooLarge,
    #[error("unsupported media type (application/json expected)")]
    UnsupportedMedia,
    #[error("empty body")]
    Empty,
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("missing signature header")]
    MissingSignature,
    #[error("missing timestamp header")]
    MissingTimestamp,
    #[error("signature or timestamp header sent more than once")]
    DuplicateHeader,
    #[error("bad signature")]
    Signature(SignatureError),
    #[error(transparent)]
    Timestamp(TimestampError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("secrets temporarily unavailable; retry later")]
    SecretsUnavailable,
    #[error("ticket ledger temporarily unavailable; retry later")]
    LedgerUnavailable,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::Method => 405,
            Self::UnknownSystem => 404,
            Self::TooLarge => 413,
            Self::UnsupportedMedia => 415,
            Self::MissingSignature
            | Self::MissingTimestamp
            | Self::Signature(_)
            | Self::Timestamp(TimestampError::Stale | TimestampError::Future) => 401,
            // Not the caller's fault, and transient: the sender retries.
            Self::SecretsUnavailable | Self::LedgerUnavailable => 503,
            Self::Empty
            | Self::NotUtf8
            | Self::DuplicateHeader
            | Self::Timestamp(TimestampError::Unparseable)
            | Self::Event(_) => 400,
        }
    }

    /// Detail for the logs (may say more than the caller is told, never a value).
    fn detail(&self) -> String {
        match self {
            Self::Signature(e) => e.to_string(),
            other => other.to_string(),
        }
    }
}

/// `TicketEvents`' state: the ledger it reads, the secrets and each system's signing keys.
#[derive(Debug)]
pub struct TicketEventsService {
    ledger: Option<Ledger>,
    secrets: Arc<SecretsProvider>,
    zendesk: RotatingKeys<SigningKey>,
    servicenow: RotatingKeys<SigningKey>,
}

impl TicketEventsService {
    pub fn build(deps: &Deps) -> Self {
        Self {
            ledger: Ledger::from_deps(deps),
            secrets: deps.secrets.clone(),
            zendesk: RotatingKeys::new(
                SecretName::ZendeskWebhookSecret,
                SecretName::ZendeskWebhookSecretPrevious,
                SigningKey::new,
            ),
            servicenow: RotatingKeys::new(
                SecretName::ServicenowWebhookSecret,
                SecretName::ServicenowWebhookSecretPrevious,
                SigningKey::new,
            ),
        }
    }

    fn keys(&self, system: System) -> &RotatingKeys<SigningKey> {
        match system {
            System::Zendesk => &self.zendesk,
            System::Servicenow => &self.servicenow,
        }
    }

    pub async fn invoke(
        &self,
        _inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let req = envelope.http(REQUEST)?;
        let now = time::OffsetDateTime::now_utc();
        Ok(match self.intake(&req, now).await {
            Ok((system, key, parsed)) => self.decide(system, key, parsed, now).await,
            Err((system, refusal)) => refuse(system, refusal),
        })
    }

    /// Checks one request up to a verified, parsed body.
    async fn intake(
        &self,
        req: &HttpTrigger<'_>,
        now: time::OffsetDateTime,
    ) -> Result<(System, SecretName, Parsed), (Option<System>, Refusal)> {
        let system = req
            .param("system")
            .and_then(System::parse)
            .ok_or((None, Refusal::UnknownSystem))?;
        let fail = |r: Refusal| (Some(system), r);
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(fail(Refusal::Method));
        }
        let body = req.raw_body().unwrap_or("");
        if body.len() > MAX_BODY_BYTES {
            return Err(fail(Refusal::TooLarge));
        }
        if req.media_type().as_deref() != Some("application/json") {
            return Err(fail(Refusal::UnsupportedMedia));
        }
        if body.is_empty() {
            return Err(fail(Refusal::Empty));
        }
        // The host decodes text bodies lossily: U+FFFD is where invalid UTF-8 was.
        if body.contains('\u{FFFD}') {
            return Err(fail(Refusal::NotUtf8));
        }
        let (sig_name, ts_name) = (system.signature_header(), system.timestamp_header());
        if req.header_count(sig_name) > 1 || req.header_count(ts_name) > 1 {
            return Err(fail(Refusal::DuplicateHeader));
        }
        let signature = req
            .header(sig_name)
            .ok_or(fail(Refusal::MissingSignature))?;
        let timestamp = req.header(ts_name).ok_or(fail(Refusal::MissingTimestamp))?;
        let key = self
            .verify_signature(system, timestamp, body, signature)
            .await
            .map_err(fail)?;
        // Only a signed timestamp is worth judging; the signature covers it as sent.
        verify::check_freshness(timestamp, now).map_err(|e| fail(Refusal::Timestamp(e)))?;
        let parsed = events::parse(system, body).map_err(|e| fail(e.into()))?;
        Ok((system, key, parsed))
    }

    /// Verifies against the current and previous secret; on a mismatch with every cached
    /// key, the secrets are re-read once (rate-limited by the provider) in case they rotated.
    async fn verify_signature(
        &self,
        system: System,
        timestamp: &str,
        body: &str,
        signature: &str,
    ) -> Result<SecretName, Refusal> {
        let check = |keys: &[SigningKey]| {
            verify::verify_signature(timestamp, body.as_bytes(), signature, keys)
        };
        let worth_rereading = |e: &SignatureError| *e != SignatureError::Malformed;
        match self
            .keys(system)
            .verify(&self.secrets, check, worth_rereading)
            .await
        {
            Ok(Verified::Key(name)) => Ok(name),
            Ok(Verified::Refused(e)) => {
                if e == SignatureError::NoKey {
                    tracing::error!(
                        function = FUNCTION,
                        system = system.name(),
                        "no webhook secret configured: every event is refused"
                    );
                }
                Err(Refusal::Signature(e))
            }
            Err(e) => {
                tracing::error!(function = FUNCTION, error = %e, "webhook secret unavailable");
                Err(Refusal::SecretsUnavailable)
            }
        }
    }

    /// A verified event: matched against the ledger, queued or ignored.
    async fn decide(
        &self,
        system: System,
        key: SecretName,
        parsed: Parsed,
        now: time::OffsetDateTime,
    ) -> InvocationReply {
        let auth = if matches!(
            key,
            SecretName::ZendeskWebhookSecretPrevious | SecretName::ServicenowWebhookSecretPrevious
        ) {
            "hmac-previous-secret"
        } else {
            "hmac"
        };
        let event = match parsed {
            Parsed::Event(e) => e,
            Parsed::Ignored { why, ticket_id } => {
                return ignored(system, auth, why, ticket_id, None);
            }
        };
        let Some(ledger) = self.ledger.as_ref() else {
            tracing::error!(
                function = FUNCTION,
                "no storage connection: the ticket ledger cannot be read"
            );
            return refuse(Some(system), Refusal::LedgerUnavailable);
        };
        let blob = Ledger::blob_name(&event.survey_id, &event.response_id);
        let entry = match ledger.get(&blob).await {
            Ok(found) => found.map(|(entry, _)| entry),
            Err(e) => {
                tracing::warn!(function = FUNCTION, error = %e, "ticket ledger read failed");
                return refuse(Some(system), Refusal::LedgerUnavailable);
            }
        };
        let ours = entry.as_ref().is_some_and(|e| {
            e.state == State::Created
                && e.ticket
                    .as_ref()
                    .is_some_and(|t| t.system == system.name() && t.id == event.ticket_id)
        });
        if !ours {
            let why = match entry {
                None => "no ledger entry for the correlated response",
                Some(e) if e.state != State::Created => "the bridge raised no ticket for it",
                Some(_) => "the ledger names another ticket",
            };
            let ticket = Some(event.ticket_id.clone());
            return ignored(system, auth, why, ticket, Some(&event));
        }
        queued(system, auth, event, now)
    }
}

fn refuse(system: Option<System>, refusal: Refusal) -> InvocationReply {
    let status = refusal.status();
    let detail = refusal.detail();
    let mut out = HttpOutput::error(status, &refusal.to_string());
    if status == 503 {
        out = out.retry_after(RETRY_AFTER_SECS);
    }
    let system = system.map_or("-", System::name);
    InvocationReply::new()
        .http(RESPONSE, out)
        .log(format!(
            "POST {FUNCTION} {system} -> {status} refused: {detail}"
        ))
        .summary(InvocationSummary {
            outcome: Some("refused"),
            status: Some(status),
            reason: Some(detail),
            severity: if status == 503 {
                Severity::Error
            } else {
                Severity::Warn
            },
            ..Default::default()
        })
}

fn ignored(
    system: System,
    auth: &'static str,
    why: &'static str,
    ticket_id: Option<String>,
    event: Option<&TicketEvent>,
) -> InvocationReply {
    let body = serde_json::json!({"status": "ignored", "reason": why}).to_string();
    let ticket = ticket_id.as_deref().unwrap_or("-");
    let ids = event.map_or(String::new(), |e| {
        format!(" {}/{}", e.survey_id, e.response_id)
    });
    InvocationReply::new()
        .http(RESPONSE, HttpOutput::json(202, body))
        .log(format!(
            "POST {FUNCTION} {} -> 202 ticket {ticket}{ids} ({auth}): {why}; nothing queued",
            system.name()
        ))
        .summary(InvocationSummary {
            outcome: Some("ignored"),
            status: Some(202),
            auth: Some(auth),
            reason: Some(why.to_string()),
            ticket_id,
            survey_id: event.map(|e| e.survey_id.clone()),
            response_id: event.map(|e| e.response_id.clone()),
            ..Default::default()
        })
}

fn queued(
    system: System,
    auth: &'static str,
    e: TicketEvent,
    now: time::OffsetDateTime,
) -> InvocationReply {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let received_at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let line = format!(
        "POST {FUNCTION} {} -> 202 ticket {} {}/{} ({auth}): {} ({:?}) loop request queued",
        system.name(),
        e.ticket_id,
        e.survey_id,
        e.response_id,
        e.status,
        e.state
    );
    let summary = InvocationSummary {
        outcome: Some("queued"),
        status: Some(202),
        auth: Some(auth),
        ticket_id: Some(e.ticket_id.clone()),
        survey_id: Some(e.survey_id.clone()),
        response_id: Some(e.response_id.clone()),
        ..Default::default()
    };
    let message = LoopRequest {
        v: LoopRequest::VERSION,
        system: system.name().to_string(),
        ticket_id: e.ticket_id,
        ticket_number: e.ticket_number,
        survey_id: e.survey_id,
        response_id: e.response_id,
        status: e.status,
        state: e.state,
        close_code: e.close_code,
        changed_at: e.changed_at,
        sequence: e.sequence,
        source: LoopSource::Event,
        event_id: e.event_id,
        received_at,
        retry: None,
    }
    .to_text();
    InvocationReply::new()
        .http(RESPONSE, HttpOutput::json(202, r#"{"status":"queued"}"#))
        .queue(LOOP, vec![message])
        .log(line)
        .summary(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons() {
        assert_eq!(Refusal::UnknownSystem.status(), 404);
        assert_eq!(Refusal::Signature(SignatureError::Mismatch).status(), 401);
        assert_eq!(
            Refusal::Signature(SignatureError::Mismatch).to_string(),
            "bad signature"
        );
        assert_eq!(Refusal::Timestamp(TimestampError::Stale).status(), 401);
        assert_eq!(
            Refusal::Timestamp(TimestampError::Unparseable).status(),
            400
        );
        assert_eq!(Refusal::Event(EventError::Correlation).status(), 400);
        assert_eq!(Refusal::LedgerUnavailable.status(), 503);
        let reply = refuse(Some(System::Zendesk), Refusal::LedgerUnavailable);
        let v: serde_json::Value = serde_json::from_slice(&reply.to_json()).unwrap();
        assert_eq!(v["Outputs"]["res"]["headers"]["Retry-After"], "10");
    }
}
