//! Pulse surveys from operational events. `OpsEvents` (this module, the intake half) receives
//! monitoring and product events over the HTTP trigger, verifies them, maps the known senders'
//! payloads onto the one documented event shape, and queues the events some `[[pulses]]`
//! entry handles on the `pulse` output (queue `pulse-requests`) for `PulseSender`.
//!
//! * [`verify`]: Standard Webhooks signatures (`ops-webhook-secret` + `-previous`) and the
//!   static `X-Bridge-Token` header (`ops-static-token` + `-previous`), pure;
//! * [`event`]: the body, its limits and the SysTrack / CleverTap adapters, pure;
//! * [`config`]: the `[[pulses]]` entries;
//! * [`sender`]: `PulseSender`, the sending half (ledger, cool-down, contacts, distributions);
//! * [`people`]: how a person is keyed and who an event would survey (`pulses --dry-run`).
//!
//! Every refusal is a 4xx in `res` with `{"error": reason}` and nothing queued; an event no
//! entry handles is a 202 with nothing queued. Logs carry counts and ids, never an address.

pub mod config;
pub mod event;
pub mod people;
pub mod sender;
pub mod verify;

use crate::deps::Deps;
use crate::host::{
    Envelope, FunctionSpec, HttpOutput, HttpTrigger, Invocation, InvocationError, InvocationReply,
    Trigger,
};
use crate::messages::{Part, PulseEvent, PulseFormat, PulseRequest};
use crate::secrets::{RotatingKeys, SecretName, SecretsProvider, Verified};
use crate::telemetry::{InvocationSummary, Severity};
use config::PulseRoute;
use event::EventError;
use std::sync::Arc;
use time::OffsetDateTime;
use verify::{SignatureError, SigningKey, StandardHeaders, StaticToken};

const REQUEST: &str = "req";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "OpsEvents",
    trigger: Trigger::Http,
    input: REQUEST,
};
const FUNCTION: &str = SPEC.name;
const RESPONSE: &str = "res";
const PULSE: &str = "pulse";
/// The header a sender that cannot sign puts `ops-static-token` in.
pub const TOKEN_HEADER: &str = "x-bridge-token";
/// Largest queue message text: Azure Queue Storage takes 64 KiB, and the host stores the
/// text base64-encoded (`host.json` `messageEncoding`), so 48 KiB of text.
pub const MAX_MESSAGE_BYTES: usize = 48 * 1024;

/// Why a request was refused. The `Display` text is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("method not allowed")]
    Method,
    #[error("body larger than 1 MiB")]
    TooLarge,
    #[error("unsupported media type (application/json expected)")]
    UnsupportedMedia,
    #[error("empty body")]
    Empty,
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("missing signature or token")]
    Unauthenticated,
    #[error("bad signature")]
    Signature(#[from] SignatureError),
    #[error("bad token")]
    Token,
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("event names more people than its pulse allows")]
    TooManyPeople,
    #[error("secrets temporarily unavailable; retry later")]
    SecretsUnavailable,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::Method => 405,
            Self::TooLarge => 413,
            Self::UnsupportedMedia => 415,
            Self::Unauthenticated | Self::Signature(_) | Self::Token => 401,
            Self::TooManyPeople => 422,
            // A transient Key Vault failure: the sender retries.
            Self::SecretsUnavailable => 503,
            Self::Empty | Self::NotUtf8 | Self::Event(_) => 400,
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

/// How an event proved where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Signature(SecretName),
    Token(SecretName),
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Self::Signature(SecretName::OpsWebhookSecretPrevious) => "signature-previous-key",
            Self::Signature(_) => "signature",
            Self::Token(SecretName::OpsStaticTokenPrevious) => "token-previous",
            Self::Token(_) => "token",
        }
    }

    /// `auth` in the message: how, not which key.
    fn kind(self) -> &'static str {
        match self {
            Self::Signature(_) => "signature",
            Self::Token(_) => "token",
        }
    }
}

/// `OpsEvents`' state: the `[[pulses]]` entries and the ready keys of both auth paths.
#[derive(Debug)]
pub struct OpsEventsService {
    pulses: Vec<PulseRoute>,
    secrets: Arc<SecretsProvider>,
    signing: RotatingKeys<SigningKey>,
    tokens: RotatingKeys<StaticToken>,
}

impl OpsEventsService {
    pub fn build(pulses: Vec<PulseRoute>, deps: &Deps) -> Self {
        Self {
            pulses,
            secrets: deps.secrets.clone(),
            signing: RotatingKeys::new(
                SecretName::OpsWebhookSecret,
                SecretName::OpsWebhookSecretPrevious,
                SigningKey::new,
            ),
            tokens: RotatingKeys::new(
                SecretName::OpsStaticToken,
                SecretName::OpsStaticTokenPrevious,
                StaticToken::new,
            ),
        }
    }

    fn route(&self, event_type: &str) -> Option<&PulseRoute> {
        route_for(&self.pulses, event_type)
    }

    pub async fn invoke(
        &self,
        _inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let req = envelope.http(REQUEST)?;
        let now = OffsetDateTime::now_utc();
        let outcome = if req.method.eq_ignore_ascii_case("POST") {
            self.intake(&req, now).await
        } else {
            Err(Refusal::Method)
        };
        Ok(match outcome {
            Ok(accepted) => self.accept(accepted, now),
            Err(refusal) => refuse(refusal),
        })
    }

    /// Checks one POST: transport, authentication, then the body.
    async fn intake(
        &self,
        req: &HttpTrigger<'_>,
        now: OffsetDateTime,
    ) -> Result<Accepted, Refusal> {
        let body = req.raw_body().unwrap_or("");
        if body.len() > event::MAX_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        if req.media_type().as_deref() != Some("application/json") {
            return Err(Refusal::UnsupportedMedia);
        }
        if body.is_empty() {
            return Err(Refusal::Empty);
        }
        // The host decodes text bodies lossily: U+FFFD is where invalid UTF-8 was.
        if body.contains('\u{FFFD}') {
            return Err(Refusal::NotUtf8);
        }
        let standard = StandardHeaders {
            id: req.header("webhook-id"),
            timestamp: req.header("webhook-timestamp"),
            signature: req.header("webhook-signature"),
        };
        let signed =
            standard.id.is_some() || standard.timestamp.is_some() || standard.signature.is_some();
        let auth = if signed {
            self.check_signature(standard, body, now.unix_timestamp())
                .await?
        } else if let Some(token) = req.header(TOKEN_HEADER) {
            self.check_token(token).await?
        } else {
            return Err(Refusal::Unauthenticated);
        };
        // Only now is the body trusted enough to parse.
        let format_param = req
            .query
            .0
            .iter()
            .find(|(k, _)| &**k == "format")
            .map(|(_, v)| &**v);
        let format = event::format_of(format_param)?;
        let event = event::parse(format, body, now)?;
        Ok(Accepted {
            event,
            format,
            auth,
            webhook_id: signed.then(|| standard.id.map(str::to_string)).flatten(),
        })
    }

    async fn check_signature(
        &self,
        h: StandardHeaders<'_>,
        body: &str,
        now: i64,
    ) -> Result<Auth, Refusal> {
        let check = |keys: &[SigningKey]| verify::verify_standard(h, body.as_bytes(), keys, now);
        // Only a mismatch (or no usable key) could be cured by a rotated secret.
        let worth_rereading =
            |e: &SignatureError| matches!(e, SignatureError::Mismatch | SignatureError::NoKey);
        match self
            .signing
            .verify(&self.secrets, check, worth_rereading)
            .await
        {
            Ok(Verified::Key(name)) => Ok(Auth::Signature(name)),
            Ok(Verified::Refused(e)) => {
                if e == SignatureError::NoKey {
                    tracing::error!(
                        function = FUNCTION,
                        "no usable ops-webhook-secret (whsec_ + base64): every signed event is refused"
                    );
                }
                Err(e.into())
            }
            Err(e) => {
                tracing::error!(function = FUNCTION, error = %e, "ops webhook secret unavailable");
                Err(Refusal::SecretsUnavailable)
            }
        }
    }

    async fn check_token(&self, presented: &str) -> Result<Auth, Refusal> {
        let check = |tokens: &[StaticToken]| {
            verify::token_matches(presented.trim(), tokens).ok_or(Refusal::Token)
        };
        match self.tokens.verify(&self.secrets, check, |_| true).await {
            Ok(Verified::Key(name)) => Ok(Auth::Token(name)),
            Ok(Verified::Refused(e)) => Err(e),
            Err(e) => {
                tracing::error!(function = FUNCTION, error = %e, "ops static token unavailable");
                Err(Refusal::SecretsUnavailable)
            }
        }
    }

    fn accept(&self, a: Accepted, now: OffsetDateTime) -> InvocationReply {
        let label = a.auth.label();
        let (id, kind) = (a.event.event_id.clone(), a.event.event_type.clone());
        let people = a.event.people.len();
        let mut summary = InvocationSummary {
            status: Some(202),
            auth: Some(label),
            severity: Severity::Info,
            ..Default::default()
        };
        let head = format!(
            "POST {FUNCTION} -> 202 {kind} {id} ({label}, {})",
            a.format.name()
        );
        let Some(route) = self.route(&kind) else {
            summary.outcome = Some("ignored");
            summary.reason = Some("no pulse handles this event type".into());
            return InvocationReply::new()
                .http(
                    RESPONSE,
                    HttpOutput::json(
                        202,
                        r#"{"status":"ignored","reason":"no pulse handles this event type"}"#,
                    ),
                )
                .log(format!(
                    "{head}: no pulse handles this event type; nothing queued"
                ))
                .summary(summary);
        };
        if people > route.max_people() {
            return refuse(Refusal::TooManyPeople);
        }
        let messages = split(
            PulseRequest {
                v: PulseRequest::VERSION,
                format: a.format,
                auth: a.auth.kind().into(),
                webhook_id: a.webhook_id,
                part: None,
                received_at: event::rfc3339(now),
                event: a.event,
                retry: None,
            },
            MAX_MESSAGE_BYTES,
        );
        summary.outcome = Some("queued");
        let body = serde_json::json!({
            "status": "queued",
            "eventId": id,
            "eventType": kind,
            "people": people,
            "messages": messages.len(),
        })
        .to_string();
        let count = messages.len();
        InvocationReply::new()
            .http(RESPONSE, HttpOutput::json(202, body))
            .queue(PULSE, messages)
            .log(format!(
                "{head}: {people} people queued in {count} message(s)"
            ))
            .summary(summary)
    }
}

/// The `[[pulses]]` entry that handles `event_type` (each type has at most one).
pub fn route_for<'a>(pulses: &'a [PulseRoute], event_type: &str) -> Option<&'a PulseRoute> {
    pulses.iter().find(|p| p.event_type() == event_type)
}

/// An event that passed every check.
struct Accepted {
    event: PulseEvent,
    format: PulseFormat,
    auth: Auth,
    webhook_id: Option<String>,
}

fn refuse(refusal: Refusal) -> InvocationReply {
    InvocationReply::refused(
        RESPONSE,
        FUNCTION,
        refusal.status(),
        &refusal.to_string(),
        refusal.detail(),
    )
}

/// The request's message texts: one when it fits `limit` bytes, otherwise the people split
/// over as few parts as fit, each carrying the whole event but its share of the people and
/// `part: {index, count}`. Event validation bounds an event without people and any one person
/// well under the limit, so every part fits.
fn split(request: PulseRequest, limit: usize) -> Vec<String> {
    let whole = request.to_text();
    if whole.len() <= limit {
        return vec![whole];
    }
    let mut shell = request;
    let people = std::mem::take(&mut shell.event.people);
    // The widest `part` a message can carry, so the budget holds for every index.
    shell.part = Some(Part {
        index: u32::MAX,
        count: u32::MAX,
    });
    let budget = limit.saturating_sub(shell.to_text().len());
    let mut chunks: Vec<Vec<_>> = vec![Vec::new()];
    let mut used = 0;
    for p in people {
        // Its JSON plus the comma before it.
        let size = serde_json::to_string(&p).map_or(usize::MAX, |s| s.len()) + 1;
        let current = chunks.last().map_or(0, Vec::len);
        if current > 0 && used + size > budget {
            chunks.push(Vec::new());
            used = 0;
        }
        used += size;
        if let Some(last) = chunks.last_mut() {
            last.push(p);
        }
    }
    let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    chunks
        .into_iter()
        .zip(1..)
        .map(|(people, index)| {
            let mut part = shell.clone();
            part.event.people = people;
            part.part = Some(Part { index, count });
            part.to_text()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::PulsePerson;

    fn request(people: usize) -> PulseRequest {
        PulseRequest {
            v: 1,
            format: PulseFormat::Bridge,
            auth: "signature".into(),
            webhook_id: Some("msg_1".into()),
            part: None,
            received_at: "2026-12-01T00:00:00Z".into(),
            event: PulseEvent {
                event_id: "e1".into(),
                event_type: "t".into(),
                occurred_at: "2026-12-01T00:00:00Z".into(),
                people: (0..people)
                    .map(|i| PulsePerson {
                        email: Some(format!("person{i:05}@example.com")),
                        external_ref: None,
                        contact_id: None,
                        name: None,
                        attributes: Default::default(),
                    })
                    .collect(),
                attributes: Default::default(),
            },
            retry: None,
        }
    }

    #[test]
    fn small_events_are_one_message_without_part() {
        let texts = split(request(3), MAX_MESSAGE_BYTES);
        assert_eq!(texts.len(), 1);
        assert!(!texts[0].contains("\"part\""));
        assert_eq!(PulseRequest::parse(&texts[0]).unwrap(), request(3));
    }

    #[test]
    fn large_events_split_into_parts_that_fit_and_keep_every_person_once() {
        let whole = request(1500);
        assert!(whole.to_text().len() > MAX_MESSAGE_BYTES);
        let texts = split(whole.clone(), MAX_MESSAGE_BYTES);
        assert_eq!(texts.len(), 2);
        let mut people = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            assert!(t.len() <= MAX_MESSAGE_BYTES, "{}", t.len());
            let r = PulseRequest::parse(t).unwrap();
            assert_eq!(
                r.part,
                Some(Part {
                    index: i as u32 + 1,
                    count: 2
                })
            );
            assert_eq!(r.event.event_id, "e1");
            people.extend(r.event.people);
        }
        assert_eq!(people, whole.event.people);
        // A tight limit still makes progress, a person per part.
        let tight = split(request(3), request(0).to_text().len() + 60);
        assert_eq!(tight.len(), 3);
    }
}
