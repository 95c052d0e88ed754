//! The Qualtrics API v3 client (reference `external-apis.md` §1): base URL from
//! `QUALTRICS_BASE_URL` (https, or http on loopback only), `X-API-TOKEN` from the secrets
//! provider, the `meta.error` envelope as a typed error, the `requestId` of every call in the
//! log, bounded retries with exponential backoff and jitter for 5xx and transport errors, and
//! 429 handling (`Retry-After` when present, adaptive otherwise) through one [`Throttle`]
//! shared by every call of the process and one [`CallBudget`] shared by a run.

mod definitions;
mod distributions;
mod json_event;
mod responses;

pub use distributions::{
    BatchDistribution, Contact, ContactRef, EmailDistribution, Invitation, Transaction,
};
pub use json_event::JSON_EVENT_PATH;

use crate::env::Lookup;
use crate::secrets::{SecretName, SecretsProvider};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use url::Url;

/// Setting holding the Qualtrics base URL.
pub const BASE_URL_SETTING: &str = "QUALTRICS_BASE_URL";

/// A call failed. Never carries the token; messages are Qualtrics' own `errorMessage`.
#[derive(Debug, thiserror::Error)]
pub enum QualtricsError {
    /// Qualtrics answered with an error envelope (or a non-2xx status).
    #[error("qualtrics {op}: {http_status} ({error_code}): {message} [requestId {request_id}]")]
    Api {
        op: &'static str,
        status: u16,
        http_status: String,
        error_code: String,
        message: String,
        request_id: String,
    },
    #[error("qualtrics {op}: transport error: {reason}")]
    Transport { op: &'static str, reason: String },
    /// A call that must not be resent ([`Resend::Never`]) failed after its request may have
    /// reached Qualtrics (a timeout, a dropped connection): whether it took effect is unknown.
    #[error("qualtrics {op}: no answer, the request may have been processed: {reason}")]
    Unconfirmed { op: &'static str, reason: String },
    /// 429s used up the run's throttle budget or its time.
    #[error("qualtrics {op}: throttled (429) and the run's retry budget is spent")]
    Throttled { op: &'static str },
    /// The run's deadline would pass before the next attempt.
    #[error("qualtrics {op}: out of time")]
    OutOfTime { op: &'static str },
    #[error("qualtrics {op}: unexpected reply: {reason}")]
    Decode { op: &'static str, reason: String },
    #[error("qualtrics: secret {0} is not available: {1}")]
    Token(SecretName, String),
    #[error("setting {BASE_URL_SETTING}: {0}")]
    Config(String),
}

impl QualtricsError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 404: no such survey/response/export (a response may not be readable yet).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Worth trying again later (5xx, 429, transport, time).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status >= 500 || *status == 429,
            Self::Transport { .. } | Self::Throttled { .. } | Self::OutOfTime { .. } => true,
            _ => false,
        }
    }
}

/// Retries of one call (5xx and transport errors).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads and idempotent writes: 5xx and transport errors are retried (bounded).
    Safe,
    /// A call whose repetition has an effect (a distribution sends email): only a 429 or a
    /// connection that was never made is retried; any other failure is returned as is, a
    /// lost answer as [`QualtricsError::Unconfirmed`].
    Never,
}

/// One request as [`QualtricsClient::send`] sends it.
struct Outgoing<'a> {
    method: reqwest::Method,
    /// Relative to the API root, or an absolute path / URL on its origin.
    path: &'a str,
    /// JSON, already serialised.
    body: Option<Vec<u8>>,
    resend: Resend,
}

/// Process-wide 429 state: every call waits until `not_before`; the penalty doubles on each
/// 429 without `Retry-After` (adaptive), and decays on success.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<(Option<Instant>, Duration)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            state: Mutex::new((None, Duration::ZERO)),
        }
    }
}

impl Throttle {
    const FLOOR: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(60);

    fn wait_time(&self) -> Duration {
        let s = self.state.lock().map(|s| s.0).unwrap_or(None);
        s.map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    fn on_429(&self, retry_after: Option<Duration>) -> Duration {
        let Ok(mut s) = self.state.lock() else {
            return Self::FLOOR;
        };
        let wait = match retry_after {
            Some(d) => d.min(Self::CAP),
            None => (s.1 * 2).clamp(Self::FLOOR, Self::CAP),
        };
        s.1 = wait.max(Self::FLOOR);
        let until = Instant::now() + jitter(wait, 0.2);
        s.0 = Some(s.0.map_or(until, |t| t.max(until)));
        wait
    }

    fn on_success(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.1 /= 2;
        }
    }
}

/// Spaces calls to a steady rate so a caller stays under Qualtrics' leaky buckets instead of
/// learning them from 429s: each call takes the next slot `60 s / per_minute` after the
/// previous one, with `burst` calls of slack (a GCRA). Hand-written rather than `governor`:
/// it is a dozen lines, and it has to hand its wait to [`QualtricsClient::send`], which
/// already sleeps for the shared 429 throttle and checks the wait against the budget.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    slack: Duration,
    /// The theoretical arrival time of the next call.
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `per_minute` calls a minute (at least one), up to `burst` of them at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        Self {
            interval,
            slack: interval * burst.max(1).saturating_sub(1),
            next: Mutex::new(None),
        }
    }

    /// Takes the next slot; returns how long the caller must wait for it.
    fn reserve(&self) -> Duration {
        let now = Instant::now();
        let earliest = now.checked_sub(self.slack).unwrap_or(now);
        let Ok(mut next) = self.next.lock() else {
            return self.interval;
        };
        let slot = next.map_or(earliest, |t| t.max(earliest));
        *next = Some(slot + self.interval);
        slot.saturating_duration_since(now)
    }
}

/// What a run may spend: a deadline and a number of 429 retries, shared by all its surveys.
#[derive(Debug)]
pub struct CallBudget {
    pub deadline: Option<Instant>,
    throttle_retries: AtomicU32,
    /// Each request's own time limit (connect to last byte), when set.
    request_timeout: Option<Duration>,
    /// Spaces every call of the budget, when set.
    pacer: Option<std::sync::Arc<Pacer>>,
}

impl CallBudget {
    pub fn new(deadline: Option<Instant>, throttle_retries: u32) -> Self {
        Self {
            deadline,
            throttle_retries: AtomicU32::new(throttle_retries),
            request_timeout: None,
            pacer: None,
        }
    }

    /// Spaces each call of the budget (every attempt, 429 retries included) by `pacer`.
    pub fn with_pacer(mut self, pacer: std::sync::Arc<Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Limits each request of the budget to `timeout` (a hung call ends as a timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// A budget for a single interactive call (e.g. enriching one webhook).
    pub fn single_call() -> Self {
        Self::new(Some(Instant::now() + Duration::from_secs(60)), 4)
    }

    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn fits(&self, wait: Duration) -> bool {
        self.deadline.is_none_or(|d| Instant::now() + wait < d)
    }

    fn take_throttle_retry(&self) -> bool {
        self.throttle_retries
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn throttle_retries_left(&self) -> u32 {
        self.throttle_retries.load(Ordering::SeqCst)
    }
}

/// One survey response (§1.6; the same object as an export entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyResponse {
    #[serde(rename = "responseId")]
    pub response_id: String,
    #[serde(default)]
    pub values: Map<String, Value>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    /// `displayedFields`, `displayedValues` and anything else, as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `status` of an export job. Only `Complete` has a file; `percentComplete` is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportStatus {
    InProgress,
    Complete,
    Failed,
    Other(String),
}

/// The progress of an export job (§1.3.2).
#[derive(Debug, Clone)]
pub struct ExportProgress {
    pub progress_id: Option<String>,
    pub status: ExportStatus,
    pub percent_complete: f64,
    pub file_id: Option<String>,
    pub continuation_token: Option<String>,
}

/// How to start an export (§1.3.1, §1.3.5). JSON format, zipped.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// Export only what was recorded since the export that issued this token.
    pub continuation_token: Option<String>,
    /// RFC 3339 UTC; only responses recorded after it (the fallback window).
    pub start_date: Option<String>,
}

impl ExportRequest {
    fn body(&self) -> Value {
        let mut b = serde_json::json!({ "format": "json", "compress": true });
        match &self.continuation_token {
            Some(t) => b["continuationToken"] = Value::String(t.clone()),
            None => b["allowContinuation"] = Value::Bool(true),
        }
        if let Some(d) = &self.start_date {
            b["startDate"] = Value::String(d.clone());
        }
        b
    }
}

/// One event subscription as listed (§1.4.1). Qualtrics never returns the `sharedKey`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventSubscription {
    pub id: String,
    /// One topic (a string, not an array), e.g. `surveyengine.completedResponse.SV_…`.
    #[serde(default)]
    pub topics: String,
    /// May carry the Functions key in `?code=`: never print it as it is.
    #[serde(default, rename = "publicationUrl")]
    pub publication_url: String,
}

/// The create body (§1.4.1). The request field is `encrypt` (the list answers `encrypted`).
#[derive(Serialize)]
struct NewSubscription<'a> {
    topics: &'a str,
    #[serde(rename = "publicationUrl")]
    publication_url: &'a str,
    encrypt: bool,
    #[serde(rename = "sharedKey")]
    shared_key: &'a str,
}

/// Pages followed at most by one listing: a guard against a `nextPage` that never ends.
const MAX_PAGES: usize = 1000;

/// The Qualtrics client. Cheap to share (`&self` everywhere).
#[derive(Debug)]
pub struct QualtricsClient {
    api: Url,
    http: reqwest::Client,
    retry: RetryPolicy,
    throttle: Throttle,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default, rename = "httpStatus")]
    http_status: Option<String>,
    #[serde(default, rename = "requestId")]
    request_id: Option<String>,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    error: Option<MetaError>,
}

#[derive(Deserialize, Default)]
struct MetaError {
    #[serde(default, rename = "errorMessage")]
    error_message: Option<String>,
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

impl QualtricsClient {
    /// The client for `QUALTRICS_BASE_URL`; `Ok(None)` when the setting is absent.
    pub fn from_settings(lookup: Lookup<'_>) -> Result<Option<Self>, QualtricsError> {
        match lookup(BASE_URL_SETTING) {
            None => Ok(None),
            Some(v) => Self::new(&v, RetryPolicy::default()).map(Some),
        }
    }

    /// `base` is `https://{dc}.qualtrics.com` (optionally ending in `/API/v3`); http is
    /// accepted for loopback hosts only.
    pub fn new(base: &str, retry: RetryPolicy) -> Result<Self, QualtricsError> {
        let url = Url::parse(base.trim())
            .map_err(|e| QualtricsError::Config(format!("not a URL: {e}")))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            s => {
                return Err(QualtricsError::Config(format!(
                    "{s}:// is not allowed; use https (http only for loopback fakes)"
                )))
            }
        }
        let mut path = url.path().trim_end_matches('/').to_string();
        if !path.ends_with("/API/v3") {
            path.push_str("/API/v3");
        }
        let mut api = url.clone();
        api.set_path(&format!("{path}/"));
        api.set_query(None);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| QualtricsError::Config(e.to_string()))?;
        Ok(Self {
            api,
            http,
            retry,
            throttle: Throttle::default(),
        })
    }

    /// How long every call still waits before it may go (the shared 429 throttle).
    pub fn throttled_for(&self) -> Duration {
        self.throttle.wait_time()
    }

    /// The API root, ending in `/API/v3/`.
    pub fn api_url(&self) -> &Url {
        &self.api
    }

    /// `GET /surveys/{surveyId}/responses/{responseId}` (§1.6).
    ///
    /// **Stable signature** (the tickets function calls it): returns the response, or
    /// `Err(e)` with `e.is_not_found()` for an unknown id (which may also mean "not readable
    /// yet" right after a webhook: retry later) and `e.is_transient()` for 5xx/429/transport.
    /// 5xx and transport errors are retried here (bounded); 429 waits per the shared throttle.
    pub async fn get_response(
        &self,
        secrets: &SecretsProvider,
        survey_id: &str,
        response_id: &str,
    ) -> Result<SurveyResponse, QualtricsError> {
        const OP: &str = "get response";
        let path = format!("surveys/{survey_id}/responses/{response_id}");
        let budget = CallBudget::single_call();
        let result = self
            .call_json(OP, secrets, &budget, reqwest::Method::GET, &path, None)
            .await?;
        serde_json::from_value(result).map_err(|e| QualtricsError::Decode {
            op: OP,
            reason: e.to_string(),
        })
    }

    /// `POST /surveys/{surveyId}/export-responses` (§1.3.1).
    pub async fn start_export(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        survey_id: &str,
        request: &ExportRequest,
    ) -> Result<ExportProgress, QualtricsError> {
        const OP: &str = "start export";
        let path = format!("surveys/{survey_id}/export-responses");
        let body = request.body();
        let r = self
            .call_json(
                OP,
                secrets,
                budget,
                reqwest::Method::POST,
                &path,
                Some(&body),
            )
            .await?;
        let p = progress(OP, &r)?;
        if p.progress_id.is_none() {
            return Err(QualtricsError::Decode {
                op: OP,
                reason: "no progressId".into(),
            });
        }
        Ok(p)
    }

    /// `GET /surveys/{surveyId}/export-responses/{progressId}` (§1.3.2).
    pub async fn export_progress(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        survey_id: &str,
        progress_id: &str,
    ) -> Result<ExportProgress, QualtricsError> {
        const OP: &str = "export progress";
        let path = format!("surveys/{survey_id}/export-responses/{progress_id}");
        let r = self
            .call_json(OP, secrets, budget, reqwest::Method::GET, &path, None)
            .await?;
        progress(OP, &r)
    }

    /// `GET /surveys/{surveyId}/export-responses/{fileId}/file` (§1.3.3): the streaming
    /// response once its status is 2xx (errors before the body are retried).
    pub async fn download_export(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        survey_id: &str,
        file_id: &str,
    ) -> Result<reqwest::Response, QualtricsError> {
        const OP: &str = "download export";
        let path = format!("surveys/{survey_id}/export-responses/{file_id}/file");
        let out = Outgoing {
            method: reqwest::Method::GET,
            path: &path,
            body: None,
            resend: Resend::Safe,
        };
        self.send(OP, secrets, budget, out).await
    }

    /// `GET /eventsubscriptions`, following `result.nextPage` to the end (§1.4.1). A
    /// `nextPage` on another origin is refused: the API token must not leave for it.
    pub async fn list_event_subscriptions(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
    ) -> Result<Vec<EventSubscription>, QualtricsError> {
        const OP: &str = "list event subscriptions";
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            elements: Vec<EventSubscription>,
            #[serde(default, rename = "nextPage")]
            next_page: Option<String>,
        }
        let mut all: Vec<EventSubscription> = Vec::new();
        let mut target = "eventsubscriptions".to_string();
        let mut visited = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            if !visited.insert(target.clone()) {
                return Err(QualtricsError::Decode {
                    op: OP,
                    reason: "nextPage repeats a page already read".into(),
                });
            }
            let r = self
                .call_json(OP, secrets, budget, reqwest::Method::GET, &target, None)
                .await?;
            let page: Page = serde_json::from_value(r).map_err(|e| QualtricsError::Decode {
                op: OP,
                reason: e.to_string(),
            })?;
            // A subscription created or deleted meanwhile can shift offsets: list each once.
            for e in page.elements {
                if !all.iter().any(|a| a.id == e.id) {
                    all.push(e);
                }
            }
            match page.next_page.filter(|n| !n.trim().is_empty()) {
                None => return Ok(all),
                Some(next) => target = self.same_origin(OP, &next)?,
            }
        }
        Err(QualtricsError::Decode {
            op: OP,
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// `POST /eventsubscriptions` (§1.4.1); returns the new id (`SUB_…`).
    pub async fn create_event_subscription(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        topic: &str,
        publication_url: &str,
        shared_key: &crate::secrets::Secret,
    ) -> Result<String, QualtricsError> {
        const OP: &str = "create event subscription";
        let body = serde_json::to_value(NewSubscription {
            topics: topic,
            publication_url,
            encrypt: false,
            shared_key: shared_key.expose(),
        })
        .map_err(|e| QualtricsError::Decode {
            op: OP,
            reason: e.to_string(),
        })?;
        let r = self
            .call_json(
                OP,
                secrets,
                budget,
                reqwest::Method::POST,
                "eventsubscriptions",
                Some(&body),
            )
            .await?;
        r.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QualtricsError::Decode {
                op: OP,
                reason: "no id".into(),
            })
    }

    /// `DELETE /eventsubscriptions/{id}` (§1.4.1): the reply is `meta` only.
    pub async fn delete_event_subscription(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        id: &str,
    ) -> Result<(), QualtricsError> {
        const OP: &str = "delete event subscription";
        // The id goes into the path: only the characters Qualtrics ids are made of.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(QualtricsError::Decode {
                op: OP,
                reason: format!("{id:?} is not a subscription id"),
            });
        }
        let path = format!("eventsubscriptions/{id}");
        self.call_envelope(OP, secrets, budget, reqwest::Method::DELETE, &path, None)
            .await
            .map(|_| ())
    }

    /// `next` as a request target, if it is on the API's own origin.
    fn same_origin(&self, op: &'static str, next: &str) -> Result<String, QualtricsError> {
        let url = self.api.join(next).map_err(|e| QualtricsError::Decode {
            op,
            reason: format!("nextPage is not a URL: {e}"),
        })?;
        if url.origin() != self.api.origin() {
            return Err(QualtricsError::Decode {
                op,
                reason: "nextPage points to another host; not followed".into(),
            });
        }
        Ok(url.to_string())
    }

    async fn call_json(
        &self,
        op: &'static str,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, QualtricsError> {
        self.call_envelope(op, secrets, budget, method, path, body)
            .await?
            .ok_or_else(|| QualtricsError::Decode {
                op,
                reason: "no result".into(),
            })
    }

    /// The call's `result`, which some calls (DELETE) do not have.
    async fn call_envelope(
        &self,
        op: &'static str,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, QualtricsError> {
        let body = body.map(|b| encode(op, b)).transpose()?;
        let out = Outgoing {
            method,
            path,
            body,
            resend: Resend::Safe,
        };
        let resp = self.send(op, secrets, budget, out).await?;
        self.read_envelope(op, path, resp).await
    }

    /// The `result` of a 2xx reply, logging its `requestId` and any `notice`.
    async fn read_envelope(
        &self,
        op: &'static str,
        path: &str,
        resp: reqwest::Response,
    ) -> Result<Option<Value>, QualtricsError> {
        let bytes = resp.bytes().await.map_err(|e| QualtricsError::Transport {
            op,
            reason: e.to_string(),
        })?;
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| QualtricsError::Decode {
            op,
            reason: format!("not a Qualtrics envelope: {e}"),
        })?;
        let request_id = env
            .meta
            .as_ref()
            .and_then(|m| m.request_id.as_deref())
            .unwrap_or("-");
        tracing::info!(
            op,
            path,
            qualtrics_request_id = request_id,
            "qualtrics result"
        );
        if let Some(notice) = env.meta.as_ref().and_then(|m| m.notice.as_deref()) {
            tracing::warn!(
                op,
                notice,
                qualtrics_request_id = request_id,
                "qualtrics notice"
            );
        }
        Ok(env.result)
    }

    /// Sends with retries; returns the 2xx response (body unread) or the typed error.
    async fn send(
        &self,
        op: &'static str,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        out: Outgoing<'_>,
    ) -> Result<reqwest::Response, QualtricsError> {
        let Outgoing {
            method,
            path,
            body,
            resend,
        } = out;
        let url = self.api.join(path).map_err(|e| QualtricsError::Decode {
            op,
            reason: format!("bad path: {e}"),
        })?;
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let wait = self.throttle.wait_time();
            if !wait.is_zero() {
                if !budget.fits(wait) {
                    return Err(QualtricsError::OutOfTime { op });
                }
                tokio::time::sleep(wait).await;
            }
            if let Some(pace) = budget.pacer.as_ref().map(|p| p.reserve()) {
                if !budget.fits(pace) {
                    return Err(QualtricsError::OutOfTime { op });
                }
                tokio::time::sleep(pace).await;
            }
            let token = secrets
                .get(SecretName::QualtricsApiToken)
                .await
                .map_err(|e| QualtricsError::Token(SecretName::QualtricsApiToken, e.to_string()))?
                .ok_or_else(|| {
                    QualtricsError::Token(SecretName::QualtricsApiToken, "not set".into())
                })?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header("X-API-TOKEN", token.expose())
                .header("Accept", "application/json");
            if let Some(b) = &body {
                // Sent as serialised by the caller: a write-back's bytes are its contract.
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.clone());
            }
            if let Some(t) = budget.request_timeout {
                req = req.timeout(t);
            }
            let started = Instant::now();
            let result = req.send().await;
            let retry_in = match result {
                Err(e) => {
                    tracing::warn!(op, path, attempt, error = %e, "qualtrics transport error");
                    if resend == Resend::Never && !e.is_connect() {
                        return Err(QualtricsError::Unconfirmed {
                            op,
                            reason: e.to_string(),
                        });
                    }
                    if attempt >= self.retry.max_attempts {
                        return Err(QualtricsError::Transport {
                            op,
                            reason: e.to_string(),
                        });
                    }
                    self.backoff(attempt)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let header_request_id = resp
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if resp.status().is_success() {
                        self.throttle.on_success();
                        tracing::info!(
                            op,
                            path,
                            status,
                            attempt,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            qualtrics_request_id = header_request_id.as_deref().unwrap_or("-"),
                            "qualtrics call"
                        );
                        return Ok(resp);
                    }
                    let retry_after = crate::retry_after::from_headers(resp.headers());
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let err = api_error(op, status, &bytes, header_request_id);
                    let request_id = match &err {
                        QualtricsError::Api { request_id, .. } => request_id.clone(),
                        _ => String::new(),
                    };
                    tracing::warn!(op, path, status, attempt, qualtrics_request_id = %request_id, reason = %err, "qualtrics call failed");
                    match status {
                        429 => {
                            let wait = self.throttle.on_429(retry_after);
                            if !budget.take_throttle_retry() {
                                return Err(QualtricsError::Throttled { op });
                            }
                            if !budget.fits(wait) {
                                return Err(QualtricsError::OutOfTime { op });
                            }
                            // The wait happens at the top of the loop (shared throttle).
                            attempt -= 1;
                            Duration::ZERO
                        }
                        401 if !refreshed => {
                            refreshed = true;
                            if secrets
                                .refresh(SecretName::QualtricsApiToken)
                                .await
                                .unwrap_or(false)
                            {
                                Duration::ZERO
                            } else {
                                return Err(err);
                            }
                        }
                        s if s >= 500
                            && resend == Resend::Safe
                            && attempt < self.retry.max_attempts =>
                        {
                            self.backoff(attempt)
                        }
                        _ => return Err(err),
                    }
                }
            };
            if !budget.fits(retry_in) {
                return Err(QualtricsError::OutOfTime { op });
            }
            tokio::time::sleep(retry_in).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        jitter(exp.min(self.retry.max_delay), 0.5)
    }
}

fn progress(op: &'static str, r: &Value) -> Result<ExportProgress, QualtricsError> {
    let status = match r.get("status").and_then(Value::as_str) {
        Some("inProgress") => ExportStatus::InProgress,
        Some("complete") => ExportStatus::Complete,
        Some("failed") => ExportStatus::Failed,
        Some(other) => ExportStatus::Other(other.to_string()),
        None => {
            return Err(QualtricsError::Decode {
                op,
                reason: "no status".into(),
            })
        }
    };
    let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(ExportProgress {
        progress_id: s("progressId"),
        status,
        percent_complete: r
            .get("percentComplete")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        file_id: s("fileId"),
        continuation_token: s("continuationToken"),
    })
}

fn api_error(
    op: &'static str,
    status: u16,
    body: &[u8],
    header_request_id: Option<String>,
) -> QualtricsError {
    let meta = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.meta)
        .unwrap_or_default();
    let err = meta.error.unwrap_or_default();
    QualtricsError::Api {
        op,
        status,
        http_status: meta.http_status.unwrap_or_else(|| status.to_string()),
        error_code: err.error_code.unwrap_or_else(|| "-".into()),
        message: err
            .error_message
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_else(|| "no error message".into()),
        request_id: meta
            .request_id
            .or(header_request_id)
            .unwrap_or_else(|| "-".into()),
    }
}

/// `value` as the JSON bytes of a request body.
fn encode(op: &'static str, value: &impl Serialize) -> Result<Vec<u8>, QualtricsError> {
    serde_json::to_vec(value).map_err(|e| QualtricsError::Decode {
        op,
        reason: e.to_string(),
    })
}

/// `d` ± `frac`·`d`, uniformly.
pub fn jitter(d: Duration, frac: f64) -> Duration {
    let r = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0; // [0,1)
    d.mul_f64((1.0 - frac + 2.0 * frac * r).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules() {
        let c = QualtricsClient::new("https://iad1.qualtrics.com", RetryPolicy::default()).unwrap();
        assert_eq!(c.api_url().as_str(), "https://iad1.qualtrics.com/API/v3/");
        let c = QualtricsClient::new("http://127.0.0.1:9/API/v3/", RetryPolicy::default()).unwrap();
        assert_eq!(c.api_url().as_str(), "http://127.0.0.1:9/API/v3/");
        assert!(QualtricsClient::new("http://iad1.qualtrics.com", RetryPolicy::default()).is_err());
    }

    #[test]
    fn export_body_sends_token_or_allow_continuation() {
        let b = ExportRequest::default().body();
        assert_eq!(b["allowContinuation"], true);
        assert!(b.get("continuationToken").is_none());
        let b = ExportRequest {
            continuation_token: Some("t".into()),
            start_date: None,
        }
        .body();
        assert_eq!(b["continuationToken"], "t");
        assert!(b.get("allowContinuation").is_none());
    }

    #[test]
    fn next_page_must_stay_on_the_api_origin() {
        let c = QualtricsClient::new("https://iad1.qualtrics.com", RetryPolicy::default()).unwrap();
        let next = c
            .same_origin(
                "x",
                "https://iad1.qualtrics.com/API/v3/eventsubscriptions?offset=100",
            )
            .unwrap();
        assert_eq!(
            c.api_url().join(&next).unwrap().as_str(),
            "https://iad1.qualtrics.com/API/v3/eventsubscriptions?offset=100"
        );
        for foreign in [
            "https://evil.example/API/v3/eventsubscriptions?offset=100",
            "http://iad1.qualtrics.com/API/v3/eventsubscriptions",
            "https://iad1.qualtrics.com:8443/API/v3/eventsubscriptions",
        ] {
            assert!(c.same_origin("x", foreign).is_err(), "{foreign}");
        }
    }

    #[test]
    fn subscription_shapes() {
        let body = serde_json::to_value(NewSubscription {
            topics: "surveyengine.completedResponse.SV_1",
            publication_url: "https://a.example/api/qualtrics/events?code=k",
            encrypt: false,
            shared_key: "s",
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"topics":"surveyengine.completedResponse.SV_1",
                "publicationUrl":"https://a.example/api/qualtrics/events?code=k",
                "encrypt":false,"sharedKey":"s"})
        );
        // A list element as Kyma captured it (§1.4.1): `encrypted`, `successfulCalls`, `scope`.
        let e: EventSubscription = serde_json::from_str(
            r#"{"id":"SUB_8BXPypz7dWUm8e1","scope":"<string>","topics":"surveyengine.completedResponse.*",
                "publicationUrl":"https://kyma-project.io/qualtrics","encrypted":false,"successfulCalls":10}"#,
        )
        .unwrap();
        assert_eq!(e.id, "SUB_8BXPypz7dWUm8e1");
        assert_eq!(e.topics, "surveyengine.completedResponse.*");
    }

    #[test]
    fn the_pacer_lets_a_burst_through_then_spaces_calls() {
        let p = Pacer::per_minute(600, 3);
        let waits: Vec<Duration> = (0..5).map(|_| p.reserve()).collect();
        assert!(waits[..3].iter().all(Duration::is_zero), "{waits:?}");
        // The 4th waits one interval (100 ms), the 5th two; allow for the clock moving.
        assert!(waits[3] > Duration::from_millis(90) && waits[3] <= Duration::from_millis(100));
        assert!(waits[4] > Duration::from_millis(190) && waits[4] <= Duration::from_millis(200));
    }

    #[test]
    fn error_envelope_is_typed() {
        let body = br#"{"meta":{"httpStatus":"400 - Bad Request","requestId":"rq1","error":{"errorMessage":"bad token","errorCode":"RP_0.1"}}}"#;
        let e = api_error("x", 400, body, None);
        assert!(e.to_string().contains("rq1") && e.to_string().contains("RP_0.1"));
        assert!(!e.is_transient());
    }
}
