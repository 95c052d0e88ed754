//! `QualtricsWebhook`: receives Qualtrics deliveries over the HTTP trigger, verifies them and
//! puts one ticket request on the `tickets` output (queue `ticket-requests`).
//!
//! Three shapes are understood (`docs/webhook.md`):
//! * **event subscription** — `application/x-www-form-urlencoded` with `Topic`, `MSG`, `HMAC`;
//!   `HMAC` is checked over the exact decoded `MSG` against `qualtrics-webhook-key` and
//!   `qualtrics-webhook-key-previous` (after one forced secret refresh on a mismatch);
//! * **workflow web-service task** — `application/json` `{"surveyId","responseId",…}` with the
//!   static `qualtrics-workflow-token` in `Authorization: Bearer …` or `X-Bridge-Token`;
//! * **flat unsigned form** — `SurveyID`/`ResponseID` fields, only for a survey configured with
//!   `allow_unsigned = true`.
//!
//! Every refusal is a 4xx in `res` with `{"error": reason}` and nothing queued; the host always
//! gets a completed invocation. The pure checks live in [`verify`].

pub mod verify;

use crate::deps::Deps;
use crate::host::{
    Envelope, FunctionSpec, HttpOutput, HttpTrigger, Invocation, InvocationError, InvocationReply,
    Trigger,
};
use crate::messages::{RequestSource, TicketRequest};
use crate::secrets::{RotatingKeys, Secret, SecretName, SecretsProvider, Verified};
use crate::telemetry::{InvocationSummary, Severity};
use std::sync::Arc;
use verify::{FormError, HmacKey, PayloadError, SignatureError, Subject};

const REQUEST: &str = "req";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "QualtricsWebhook",
    trigger: Trigger::Http,
    input: REQUEST,
};
const FUNCTION: &str = SPEC.name;
const RESPONSE: &str = "res";
const TICKETS: &str = "tickets";
/// Largest delivery accepted (Qualtrics deliveries are well under 10 KB).
pub const MAX_BODY_BYTES: usize = 100 * 1024;
/// A longer (or control-character) `Topic` is dropped from the message, not refused.
const MAX_TOPIC_CHARS: usize = 256;

/// Why a delivery was refused. The `Display` text is what the caller sees: short, and never
/// derived from the input or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("method not allowed")]
    Method,
    #[error("body larger than 100 KB")]
    TooLarge,
    #[error("unsupported media type (form or JSON expected)")]
    UnsupportedMedia,
    #[error("empty body")]
    Empty,
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Form(#[from] FormError),
    #[error("HMAC without MSG")]
    HmacWithoutMsg,
    #[error("missing HMAC")]
    MissingHmac,
    #[error("bad signature")]
    Signature(#[from] SignatureError),
    #[error("unsigned deliveries are not accepted for this survey")]
    Unsigned,
    #[error("bad or missing token")]
    Token,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("not a Qualtrics delivery")]
    NotADelivery,
    #[error("secrets temporarily unavailable; retry later")]
    SecretsUnavailable,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::Method => 405,
            Self::TooLarge => 413,
            Self::UnsupportedMedia => 415,
            Self::MissingHmac | Self::Signature(_) | Self::Unsigned | Self::Token => 401,
            // Not the caller's fault: a transient Key Vault failure. Qualtrics retries.
            Self::SecretsUnavailable => 503,
            Self::Empty
            | Self::NotUtf8
            | Self::Form(_)
            | Self::HmacWithoutMsg
            | Self::Payload(_)
            | Self::NotADelivery => 400,
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

/// What the webhook knows of one `[[surveys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSurvey {
    pub id: String,
    /// The survey raises tickets (`[surveys.tickets]`).
    pub tickets: bool,
    /// Unsigned flat-form deliveries are accepted (`allow_unsigned`).
    pub allow_unsigned: bool,
}

/// `QualtricsWebhook`'s state: the surveys it accepts, the secrets and the ready webhook keys.
#[derive(Debug)]
pub struct WebhookService {
    surveys: Vec<WebhookSurvey>,
    secrets: Arc<SecretsProvider>,
    keys: RotatingKeys<HmacKey>,
}

impl WebhookService {
    pub fn build(surveys: Vec<WebhookSurvey>, deps: &Deps) -> Self {
        Self {
            surveys,
            secrets: deps.secrets.clone(),
            keys: RotatingKeys::new(
                SecretName::QualtricsWebhookKey,
                SecretName::QualtricsWebhookKeyPrevious,
                HmacKey::new,
            ),
        }
    }

    fn survey(&self, id: &str) -> Option<&WebhookSurvey> {
        self.surveys.iter().find(|s| s.id == id)
    }
}

/// How a delivery proved where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `HMAC` matched this key.
    Hmac(SecretName),
    /// The workflow token matched.
    Token,
    /// Flat form accepted under `allow_unsigned`.
    Unsigned,
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Self::Hmac(SecretName::QualtricsWebhookKeyPrevious) => "hmac-previous-key",
            Self::Hmac(_) => "hmac",
            Self::Token => "workflow-token",
            Self::Unsigned => "unauthenticated",
        }
    }
}

/// A delivery that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub subject: Subject,
    /// `Topic` as sent (unauthenticated; informational only).
    pub topic: Option<String>,
    pub auth: Auth,
}

impl WebhookService {
    pub async fn invoke(
        &self,
        _inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let req = envelope.http(REQUEST)?;
        if req.method.eq_ignore_ascii_case("GET") {
            return Ok(InvocationReply::new()
                .http(RESPONSE, HttpOutput::json(200, r#"{"status":"ok"}"#))
                .log(format!("GET {FUNCTION} -> 200")));
        }
        let intake = if req.method.eq_ignore_ascii_case("POST") {
            intake(self, &req).await
        } else {
            Err(Refusal::Method)
        };
        Ok(match intake {
            Ok(delivery) => accept(self, delivery),
            Err(refusal) => refuse(refusal),
        })
    }
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

fn accept(svc: &WebhookService, d: Delivery) -> InvocationReply {
    let Delivery {
        subject,
        topic,
        auth,
    } = d;
    let survey = svc.survey(&subject.survey_id);
    let skip = match survey {
        None => Some("unknown survey"),
        Some(s) if !s.tickets => Some("survey raises no tickets"),
        Some(_) if !subject.is_complete() => Some("response is not Complete"),
        Some(_) => None,
    };
    let label = auth.label();
    let (survey_id, response_id) = (&subject.survey_id, &subject.response_id);
    let mut summary = InvocationSummary {
        status: Some(202),
        auth: Some(label),
        // An unauthenticated delivery is accepted (allow_unsigned) but always stands out.
        severity: if auth == Auth::Unsigned {
            Severity::Warn
        } else {
            Severity::Info
        },
        ..Default::default()
    };
    let reply = if let Some(why) = skip {
        summary.outcome = Some("ignored");
        summary.reason = Some(why.to_string());
        InvocationReply::new()
            .http(RESPONSE, HttpOutput::json(202, r#"{"status":"ignored"}"#))
            .log(accepted_line(
                survey_id,
                response_id,
                label,
                &[why, "; nothing queued"],
            ))
    } else {
        summary.outcome = Some("queued");
        let message = TicketRequest {
            v: TicketRequest::VERSION,
            survey_id: survey_id.clone(),
            response_id: response_id.clone(),
            source: RequestSource::Webhook,
            topic,
            received_at: received_at(),
            retry: None,
        }
        .to_text();
        InvocationReply::new()
            .http(RESPONSE, HttpOutput::json(202, r#"{"status":"queued"}"#))
            .queue(TICKETS, vec![message])
            .log(accepted_line(
                survey_id,
                response_id,
                label,
                &["ticket request queued"],
            ))
    };
    summary.survey_id = Some(subject.survey_id);
    summary.response_id = Some(subject.response_id);
    reply.summary(summary)
}

/// `POST QualtricsWebhook -> 202 {survey}/{response} ({auth}): {what}` for the host's log.
/// Built by hand rather than by `format!`: one exact allocation, no formatting machinery.
fn accepted_line(survey_id: &str, response_id: &str, auth: &str, what: &[&str]) -> String {
    let head = [
        "POST ",
        FUNCTION,
        " -> 202 ",
        survey_id,
        "/",
        response_id,
        " (",
        auth,
        "): ",
    ];
    let parts = || head.iter().chain(what);
    let mut line = String::with_capacity(parts().map(|p| p.len()).sum());
    parts().for_each(|p| line.push_str(p));
    line
}

/// Now, RFC 3339 UTC to the second (`2026-01-31T12:00:00Z`).
fn received_at() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Checks one POST and says what it is about, or why it is refused.
pub async fn intake(svc: &WebhookService, req: &HttpTrigger<'_>) -> Result<Delivery, Refusal> {
    let body = req.raw_body().unwrap_or("");
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::TooLarge);
    }
    let media = req.media_type();
    let is_form = match media.as_deref() {
        Some("application/x-www-form-urlencoded") => true,
        Some("application/json") => false,
        _ => return Err(Refusal::UnsupportedMedia),
    };
    if body.is_empty() {
        return Err(Refusal::Empty);
    }
    // The host decodes text bodies lossily: U+FFFD is where invalid UTF-8 was.
    if body.contains('\u{FFFD}') {
        return Err(Refusal::NotUtf8);
    }
    if is_form {
        form_delivery(svc, body).await
    } else {
        workflow_delivery(svc, req, body).await
    }
}

async fn form_delivery(svc: &WebhookService, body: &str) -> Result<Delivery, Refusal> {
    let form = verify::parse_form(body)?;
    let topic = form.topic.as_deref().and_then(clean_topic);
    if form.is_signed_shape() {
        let msg = form.msg.as_deref().ok_or(Refusal::HmacWithoutMsg)?;
        let hmac = form.hmac.as_deref().ok_or(Refusal::MissingHmac)?;
        let key = verify_signature(svc, msg, hmac).await?;
        // Only now is MSG trusted; the ids come from it, never from Topic.
        let subject = verify::parse_msg(msg)?;
        return Ok(Delivery {
            subject,
            topic,
            auth: Auth::Hmac(key),
        });
    }
    if form.survey_id.is_none() && form.response_id.is_none() {
        return Err(Refusal::NotADelivery);
    }
    let subject = verify::flat_subject(&form)?;
    let allowed = svc
        .survey(&subject.survey_id)
        .is_some_and(|s| s.allow_unsigned);
    if !allowed {
        return Err(Refusal::Unsigned);
    }
    Ok(Delivery {
        subject,
        topic,
        auth: Auth::Unsigned,
    })
}

async fn workflow_delivery(
    svc: &WebhookService,
    req: &HttpTrigger<'_>,
    body: &str,
) -> Result<Delivery, Refusal> {
    let presented = req
        .header("authorization")
        .and_then(verify::bearer)
        .or_else(|| req.header("x-bridge-token").map(str::trim))
        .ok_or(Refusal::Token)?;
    let name = SecretName::QualtricsWorkflowToken;
    let matches = |token: &Option<Secret>| {
        token
            .as_ref()
            .is_some_and(|t| verify::token_matches(t.expose().as_bytes(), presented.as_bytes()))
    };
    let token = svc
        .secrets
        .get(name)
        .await
        .map_err(|_| Refusal::SecretsUnavailable)?;
    if !matches(&token) {
        // The token may have been rotated since it was cached.
        if !matches!(svc.secrets.refresh(name).await, Ok(true)) {
            return Err(Refusal::Token);
        }
        let token = svc.secrets.get(name).await.map_err(|_| Refusal::Token)?;
        if !matches(&token) {
            return Err(Refusal::Token);
        }
    }
    Ok(Delivery {
        subject: verify::parse_workflow(body)?,
        topic: None,
        auth: Auth::Token,
    })
}

/// Verifies `HMAC` against the current and previous webhook keys; on a mismatch with every
/// cached key, the keys are re-read once (rate-limited by the provider) in case they were
/// rotated, then it decides.
async fn verify_signature(
    svc: &WebhookService,
    msg: &str,
    hmac: &str,
) -> Result<SecretName, Refusal> {
    let check = |keys: &[HmacKey]| verify::verify_hmac(msg.as_bytes(), hmac, keys);
    // A malformed HMAC cannot match any key, rotated or not.
    let worth_rereading = |e: &SignatureError| *e != SignatureError::Malformed;
    match svc.keys.verify(&svc.secrets, check, worth_rereading).await {
        Ok(Verified::Key(name)) => Ok(name),
        Ok(Verified::Refused(e)) => {
            if e == SignatureError::NoKey {
                tracing::error!(
                    function = FUNCTION,
                    "no webhook key configured: every signed delivery is refused"
                );
            }
            Err(e.into())
        }
        Err(e) => {
            tracing::error!(function = FUNCTION, error = %e, "webhook key unavailable");
            Err(Refusal::SecretsUnavailable)
        }
    }
}

/// `Topic` is unauthenticated: carried into the message only when short and printable.
fn clean_topic(topic: &str) -> Option<String> {
    // Printable ASCII (every topic Qualtrics sends) is decided a byte at a time, vectorised.
    let printable_ascii = topic.len() <= MAX_TOPIC_CHARS
        && topic
            .bytes()
            .fold(true, |ok, b| ok & (b' '..=b'~').contains(&b));
    let ok = !topic.is_empty()
        && (printable_ascii
            || (topic.chars().count() <= MAX_TOPIC_CHARS && !topic.chars().any(char::is_control)));
    ok.then(|| topic.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The service as start-up builds it from `toml`'s survey table, without settings.
    fn app(toml: &str) -> WebhookService {
        let bridge = crate::config::BridgeConfig::parse(toml).unwrap();
        let surveys = bridge
            .surveys
            .iter()
            .map(|s| WebhookSurvey {
                id: s.id.clone(),
                tickets: s.tickets.is_some(),
                allow_unsigned: s.allow_unsigned,
            })
            .collect();
        WebhookService::build(surveys, &Deps::for_tests())
    }

    /// The host's envelope of an HTTP request, as bytes.
    fn envelope(method: &str, headers: Value, body: Option<&str>) -> Vec<u8> {
        let mut req =
            json!({"Url": "http://x/api/qualtrics/events", "Method": method, "Headers": headers});
        if let Some(b) = body {
            req["Body"] = json!(b);
        }
        json!({"Data": {"req": req}, "Metadata": {}})
            .to_string()
            .into_bytes()
    }

    async fn run(app: &WebhookService, headers: Value, body: Option<&str>) -> Value {
        let bytes = envelope("POST", headers, body);
        let inv = Invocation {
            id: "unit".into(),
            function: &SPEC,
        };
        let reply = app
            .invoke(&inv, Envelope::parse(&bytes).unwrap())
            .await
            .unwrap();
        serde_json::from_slice(&reply.to_json()).unwrap()
    }

    fn form_body(key: &str, survey: &str, response: &str) -> String {
        let msg =
            format!(r#"{{"Status":"Complete","SurveyID":"{survey}","ResponseID":"{response}"}}"#);
        let sig = verify::sign(key.as_bytes(), msg.as_bytes());
        let enc: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "Topic",
                &format!("b.surveyengine.completedResponse.{survey}"),
            )
            .append_pair("MSG", &msg)
            .append_pair("HMAC", &sig)
            .finish();
        enc
    }

    /// One test touches the process environment (secrets come from env here), so the steps
    /// run in order: rotation by refresh, its rate limit, workflow token, outcomes.
    #[tokio::test]
    async fn glue_end_to_end_in_process() {
        let form = json!({"Content-Type": ["application/x-www-form-urlencoded"]});
        std::env::set_var("QUALTRICS_WEBHOOK_KEY", "k1");
        std::env::remove_var("QUALTRICS_WEBHOOK_KEY_PREVIOUS");
        std::env::set_var("QUALTRICS_WORKFLOW_TOKEN", "tok");
        let app = app("[[surveys]]\nid = \"SV_1\"\n[surveys.tickets]\nsystem = \"zendesk\"\n[[surveys]]\nid = \"SV_2\"\n");

        let v = run(&app, form.clone(), Some(&form_body("k1", "SV_1", "R_1"))).await;
        assert_eq!(v["Outputs"]["res"]["statusCode"], "202", "{v}");
        let text = v["Outputs"]["tickets"][0].as_str().unwrap();
        let msg = TicketRequest::parse(text).unwrap();
        assert_eq!(
            (msg.survey_id.as_str(), msg.response_id.as_str()),
            ("SV_1", "R_1")
        );
        assert_eq!(msg.source, RequestSource::Webhook);
        assert!(
            msg.received_at.ends_with('Z') && msg.received_at.len() == 20,
            "{}",
            msg.received_at
        );
        assert_eq!(
            v["Logs"],
            json!(["POST QualtricsWebhook -> 202 SV_1/R_1 (hmac): ticket request queued"])
        );

        // The key is rotated behind the cache: the first mismatch forces one re-read.
        std::env::set_var("QUALTRICS_WEBHOOK_KEY", "k2");
        let v = run(&app, form.clone(), Some(&form_body("k2", "SV_1", "R_2"))).await;
        assert_eq!(v["Outputs"]["res"]["statusCode"], "202", "{v}");
        // Forced re-reads are rate-limited: the old key now fails without another read.
        let v = run(&app, form.clone(), Some(&form_body("k1", "SV_1", "R_3"))).await;
        assert_eq!(v["Outputs"]["res"]["statusCode"], "401", "{v}");
        assert!(v["Outputs"].get("tickets").is_none());
        assert_eq!(v["Outputs"]["res"]["body"], r#"{"error":"bad signature"}"#);
        assert_eq!(
            v["Logs"],
            json!(["POST QualtricsWebhook -> 401 refused: HMAC does not match"])
        );

        // Known survey without tickets, unknown survey: 202, nothing queued.
        for (survey, why) in [
            ("SV_2", "survey raises no tickets"),
            ("SV_9", "unknown survey"),
        ] {
            let v = run(&app, form.clone(), Some(&form_body("k2", survey, "R_4"))).await;
            assert_eq!(v["Outputs"]["res"]["statusCode"], "202", "{v}");
            assert!(v["Outputs"].get("tickets").is_none(), "{v}");
            let line =
                format!("POST QualtricsWebhook -> 202 {survey}/R_4 (hmac): {why}; nothing queued");
            assert_eq!(v["Logs"], json!([line]));
        }

        // Workflow JSON with either header; wrong token and wrong header refused.
        let body = r#"{"surveyId":"SV_1","responseId":"R_5","nps":3}"#;
        for (headers, want) in [
            (
                json!({"Content-Type": ["application/json"], "Authorization": ["Bearer tok"]}),
                "202",
            ),
            (
                json!({"Content-Type": ["application/json; charset=utf-8"], "x-bridge-token": ["tok"]}),
                "202",
            ),
            (
                json!({"Content-Type": ["application/json"], "Authorization": ["Bearer tok2"]}),
                "401",
            ),
            (
                json!({"Content-Type": ["application/json"], "X-Api-Key": ["tok"]}),
                "401",
            ),
        ] {
            let v = run(&app, headers, Some(body)).await;
            assert_eq!(v["Outputs"]["res"]["statusCode"], want, "{v}");
            assert_eq!(v["Outputs"].get("tickets").is_some(), want == "202", "{v}");
        }

        // Nothing logged carries the key or the MAC.
        let b = form_body("k2", "SV_1", "R_6");
        let v = run(&app, form.clone(), Some(&b)).await;
        let all = v.to_string();
        assert!(!all.contains("k2\"") && !all.contains(&verify::sign(b"k2", b"x")[..10]));
    }

    #[test]
    fn topic_is_kept_only_when_tame() {
        assert_eq!(
            clean_topic("b.surveyengine.completedResponse.SV_1").as_deref(),
            Some("b.surveyengine.completedResponse.SV_1")
        );
        assert_eq!(clean_topic(""), None);
        assert_eq!(clean_topic("a\nb"), None);
        assert_eq!(clean_topic(&"x".repeat(300)), None);
        // The limit counts characters, not bytes; control characters outside ASCII count too.
        assert!(clean_topic(&"x".repeat(256)).is_some());
        assert!(clean_topic(&"x".repeat(257)).is_none());
        assert!(clean_topic(&"é".repeat(256)).is_some());
        assert!(clean_topic(&"é".repeat(257)).is_none());
        assert_eq!(clean_topic("a\u{7f}b"), None);
        assert_eq!(clean_topic("a\u{85}b"), None);
        assert_eq!(
            clean_topic("Ünïcode topic").as_deref(),
            Some("Ünïcode topic")
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(Refusal::TooLarge.status(), 413);
        assert_eq!(Refusal::UnsupportedMedia.status(), 415);
        assert_eq!(Refusal::Signature(SignatureError::Mismatch).status(), 401);
        assert_eq!(
            Refusal::Signature(SignatureError::Mismatch).to_string(),
            "bad signature"
        );
        assert_eq!(Refusal::Form(FormError::BadEscape).status(), 400);
    }
}
