//! Fake Qualtrics API v3 (reference `external-apis.md` §1.2–1.3, §1.5–1.6, §5) on
//! `http://127.0.0.1:{port}` — plain HTTP is allowed for loopback.
//!
//! * A per-survey append-only response log `(seq, response)`; `add_responses` appends,
//!   `add_synthetic_survey(n, bytes)` declares `n` large responses generated on the fly
//!   (never held in memory).
//! * Export jobs progress over several polls (`set_polls`), then `complete` with a `fileId`
//!   and a `continuationToken` that encodes the survey's max `seq` at job start; a token
//!   export returns `seq > token`. `startDate` filters on `recordedDate`.
//! * The file is a ZIP streamed as it is generated: one deflated `<survey>.json` entry with a
//!   data descriptor, then a central directory.
//! * Faults: `fail_next_exports` (`failed` at 100 %), `throttle_next` (429 with or without
//!   `Retry-After`), `error_next` (500), `set_poll_delay` (slow polls), `reject_tokens`
//!   (400 on any continuation token), `truncate_next_file` (a download cut short),
//!   `expire_files` (a completed job's file is gone: 404, as after Qualtrics' retention),
//!   `hold_files` (downloads wait until released, so a test can kill the client mid-request).
//! * Rate limits (`set_rate_limits`, off by default): leaky buckets per endpoint and brand-wide,
//!   excess → 429 + `Retry-After` (`qualtrics_limits.rs`).
//! * Event subscriptions (§1.4.1): list (`offset` pages of `set_subscription_page_size`
//!   elements, `nextPage` a full URL or `null`), create (`topics` must be a string), get and
//!   delete by id (meta-only reply; unknown id → 404). `seed_subscription` adds one as if
//!   another tool had created it; `subscriptions` shows the stored ones with their key.
//!   The faults above (429, 500, auth) apply to these routes too;
//!   `reject_next_subscription_creates` makes creates fail with 400.
//! * Strict: unknown or case-wrong body keys give 400; the exact `X-API-TOKEN` is required on
//!   every route (the fake issues no OAuth tokens, so no `Authorization: Bearer` can be valid);
//!   a POST body must be sent as `Content-Type: application/json` (415 otherwise). Every call
//!   is recorded (`calls`); `served` gives the exact text of every response, so tests can
//!   compare exported lines with what the fake served.
//! * Closing the loop (`qualtrics_loop.rs`): response update, mailing-list contacts,
//!   distributions and JSON Events, with the same gate.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "qualtrics_definitions.rs"]
mod definitions;
#[path = "qualtrics_loop.rs"]
mod loop_routes;
pub use loop_routes::{
    FakeDistribution, FakeJsonEvent, FakeTransaction, LoopCall, ResponseUpdate,
    MAX_TRANSACTIONS_PER_CALL,
};
#[path = "qualtrics_limits.rs"]
mod limits;
pub use limits::{Endpoint, Limit, RateLimits};

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Option<Value>,
}

#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    recorded_ms: i64,
    id: String,
    /// The exact row text, for responses added from a dataset (`add_dataset`).
    text: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Survey {
    /// Synthetic responses occupy seq 1..=synthetic.
    synthetic: u64,
    synthetic_bytes: usize,
    synthetic_base_ms: i64,
    log: Vec<Stored>,
}

impl Survey {
    fn max_seq(&self) -> u64 {
        self.log.last().map_or(self.synthetic, |s| s.seq)
    }
}

#[derive(Debug, Clone)]
struct Job {
    survey: String,
    after_seq: u64,
    upto_seq: u64,
    start_ms: Option<i64>,
    polls_needed: u32,
    polls: u32,
    fail: bool,
    /// The file is gone (404), as after Qualtrics' file retention.
    expired: bool,
    token: Option<String>,
}

#[derive(Debug, Default)]
struct Faults {
    fail_exports: u32,
    throttle: u32,
    throttle_retry_after: Option<u64>,
    errors: u32,
    reject_tokens: bool,
    poll_delay: Duration,
    truncate_files: u32,
    reject_creates: u32,
    hold_files: bool,
}

/// An event subscription as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSubscription {
    pub id: String,
    pub topics: String,
    pub publication_url: String,
    pub encrypt: bool,
    /// Qualtrics never returns it; tests read it here.
    pub shared_key: Option<String>,
}

struct Inner {
    base_url: String,
    api_token: String,
    subscriptions: Vec<FakeSubscription>,
    next_subscription: u64,
    subscription_page_size: usize,
    surveys: HashMap<String, Survey>,
    /// `GET /survey-definitions/{id}` results (`set_definition`).
    definitions: HashMap<String, Value>,
    jobs: HashMap<String, Job>,
    next_job: u64,
    polls_needed: u32,
    faults: Faults,
    calls: Vec<Call>,
    compression: u32,
    /// Closing-the-loop routes' state.
    close_loop: loop_routes::LoopState,
    limiter: limits::Limiter,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake; dropping it stops the server.
pub struct FakeQualtrics {
    pub base_url: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeQualtrics {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The free-text answer synthetic responses are padded with (respondent data).
const FILLER: &str = "The service was fine but the wait was long; staff were friendly. ";
/// A sentence of [`FILLER`], as the redaction audit looks for it.
const FREE_TEXT: &str = "The service was fine but the wait was long";
/// Every synthetic respondent's IP address (personal data).
const RESPONDENT_IP: &str = "203.0.113.7";

/// The JSON object of synthetic response `seq`, padded to about `bytes`.
pub fn synthetic_response(seq: u64, recorded_ms: i64, bytes: usize) -> String {
    let id = format!("R_syn{seq:012}");
    let rec = rfc3339(recorded_ms);
    let nps = seq % 11;
    let (group, group_label) = match nps {
        0..=6 => (1, "Detractor"),
        7 | 8 => (2, "Passive"),
        _ => (3, "Promoter"),
    };
    let choice = seq % 3 + 1;
    let duration = seq % 600;
    let outlet = seq % 7;
    // Values, labels, displayed fields and escapes differ per response, so a line that carried
    // another response's content, or re-encoded it, cannot match what the fake served.
    let head = format!(
        r#"{{"responseId":"{id}","values":{{"startDate":"{rec}","endDate":"{rec}","status":0,"ipAddress":"{RESPONDENT_IP}","progress":100,"duration":{duration},"finished":1,"recordedDate":"{rec}","_recordId":"{id}","distributionChannel":"anonymous","userLanguage":"EN","QID1":{nps},"QID1_NPS_GROUP":{group},"QID3":[{choice},4],"outlet":"Caf\u00e9 \"{outlet}\" №{seq}","QID2_TEXT":""#
    );
    let displayed = if seq.is_multiple_of(2) {
        r#"["QID1","QID1_NPS_GROUP","QID2_TEXT","QID3"]"#
    } else {
        r#"["QID1","QID2_TEXT"]"#
    };
    let tail = format!(
        r#""}},"labels":{{"status":"IP Address","finished":"True","QID1":"{nps}","QID1_NPS_GROUP":"{group_label}","QID3":["Choice {choice}","Choice 4"]}},"displayedFields":{displayed},"displayedValues":{{"QID1":[0,1,2,3,4,5,6,7,8,9,10]}}}}"#
    );
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(head.len() + pad + tail.len());
    s.push_str(&head);
    while s.len() < head.len() + pad {
        let n = (head.len() + pad - s.len()).min(FILLER.len());
        s.push_str(&FILLER[..n]);
    }
    s.push_str(&tail);
    s
}

/// The JSON object of a response added with `add_responses` or `add_dataset`.
fn live_response(r: &Stored) -> String {
    match &r.text {
        Some(t) => t.to_string(),
        None => synthetic_response(r.seq, r.recorded_ms, 600)
            .replace(&format!("R_syn{:012}", r.seq), &r.id),
    }
}

fn envelope_error(status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let reason = match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let body = json!({"meta":{"httpStatus": format!("{code} - {reason}"),"requestId": uuid::Uuid::new_v4().to_string(),
        "error":{"errorMessage": message, "errorCode": format!("FAKE_{code}")}}});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(result: Value) -> Response {
    let body = json!({"result": result, "meta":{"httpStatus":"200 - OK","requestId": uuid::Uuid::new_v4().to_string()}});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl FakeQualtrics {
    /// Starts the fake; clients must send `api_token`.
    pub async fn start(api_token: &str) -> std::io::Result<Self> {
        crate::canary::register(api_token);
        // Respondent data: exported to blobs, never to be logged.
        crate::canary::register(FREE_TEXT);
        crate::canary::register(RESPONDENT_IP);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let inner = Arc::new(Mutex::new(Inner {
            base_url: base_url.clone(),
            api_token: api_token.into(),
            subscriptions: Vec::new(),
            next_subscription: 1,
            subscription_page_size: 100,
            surveys: HashMap::new(),
            definitions: HashMap::new(),
            jobs: HashMap::new(),
            next_job: 1,
            polls_needed: 3,
            faults: Faults::default(),
            calls: Vec::new(),
            compression: 1,
            close_loop: Default::default(),
            limiter: Default::default(),
        }));
        let app = Router::new()
            .route("/API/v3/surveys/{sid}/export-responses", post(start_export))
            .route(
                "/API/v3/surveys/{sid}/export-responses/{pid}",
                get(progress),
            )
            .route(
                "/API/v3/surveys/{sid}/export-responses/{fid}/file",
                get(file),
            )
            .route("/API/v3/surveys/{sid}/responses/{rid}", get(one_response))
            .route(
                "/API/v3/survey-definitions/{sid}",
                get(definitions::get_definition),
            )
            .route(
                "/API/v3/eventsubscriptions",
                get(list_subscriptions).post(create_subscription),
            )
            .route(
                "/API/v3/eventsubscriptions/{id}",
                get(one_subscription).delete(delete_subscription),
            )
            .merge(loop_routes::routes())
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url,
            inner,
            task,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("fake lock"))
    }

    /// Appends `n` responses recorded now; returns their ids.
    pub fn add_responses(&self, survey: &str, n: usize) -> Vec<String> {
        self.with(|i| {
            let s = i.surveys.entry(survey.into()).or_default();
            (0..n)
                .map(|_| {
                    let seq = s.max_seq() + 1;
                    let id = format!("R_live{seq:010}");
                    s.log.push(Stored {
                        seq,
                        recorded_ms: now_ms(),
                        id: id.clone(),
                        text: None,
                    });
                    id
                })
                .collect()
        })
    }

    /// Declares a survey of `count` synthetic responses of about `bytes` each.
    pub fn add_synthetic_survey(&self, survey: &str, count: u64, bytes: usize) {
        self.with(|i| {
            let s = i.surveys.entry(survey.into()).or_default();
            s.synthetic = count;
            s.synthetic_bytes = bytes;
            s.synthetic_base_ms = now_ms() - count as i64 * 10;
        })
    }

    /// Every response id of a survey, in log order.
    pub fn response_ids(&self, survey: &str) -> Vec<String> {
        self.with(|i| {
            let Some(s) = i.surveys.get(survey) else {
                return vec![];
            };
            (1..=s.synthetic)
                .map(|q| format!("R_syn{q:012}"))
                .chain(s.log.iter().map(|r| r.id.clone()))
                .collect()
        })
    }

    /// Every response of a survey as `(responseId, exact JSON text served)`, in log order:
    /// what an export file holds, one element of its `responses` array each.
    pub fn served(&self, survey: &str) -> Vec<(String, String)> {
        self.with(|i| {
            let Some(s) = i.surveys.get(survey) else {
                return vec![];
            };
            (1..=s.synthetic)
                .map(|q| {
                    let text = synthetic_response(
                        q,
                        s.synthetic_base_ms + q as i64 * 10,
                        s.synthetic_bytes,
                    );
                    (format!("R_syn{q:012}"), text)
                })
                .chain(s.log.iter().map(|r| (r.id.clone(), live_response(r))))
                .collect()
        })
    }

    pub fn set_polls(&self, n: u32) {
        self.with(|i| i.polls_needed = n.max(1));
    }
    pub fn set_poll_delay(&self, d: Duration) {
        self.with(|i| i.faults.poll_delay = d);
    }
    pub fn fail_next_exports(&self, n: u32) {
        self.with(|i| i.faults.fail_exports = n);
    }
    /// The next `n` calls answer 429, with `Retry-After: secs` when given.
    pub fn throttle_next(&self, n: u32, retry_after: Option<u64>) {
        self.with(|i| {
            i.faults.throttle = n;
            i.faults.throttle_retry_after = retry_after;
        });
    }
    pub fn error_next(&self, n: u32) {
        self.with(|i| i.faults.errors = n);
    }
    pub fn reject_tokens(&self, on: bool) {
        self.with(|i| i.faults.reject_tokens = on);
    }
    pub fn truncate_next_files(&self, n: u32) {
        self.with(|i| i.faults.truncate_files = n);
    }
    /// Every export job completed so far loses its file: downloads answer 404, as once
    /// Qualtrics' file retention has passed. Jobs started later are not affected.
    pub fn expire_files(&self) {
        self.with(|i| {
            for j in i.jobs.values_mut() {
                j.expired |= j.polls >= j.polls_needed && !j.fail;
            }
        })
    }
    /// While on, file downloads are recorded and then wait (no byte is sent) until it is
    /// turned off: a test can kill the client at exactly "download requested".
    pub fn hold_files(&self, on: bool) {
        self.with(|i| i.faults.hold_files = on);
    }
    /// Deflate level of export files (0 = stored blocks, 1 = fastest … 9).
    pub fn set_compression(&self, level: u32) {
        self.with(|i| i.compression = level.min(9));
    }
    pub fn calls(&self) -> Vec<Call> {
        self.with(|i| i.calls.clone())
    }

    /// Adds a subscription as if another tool had created it; returns its id.
    pub fn seed_subscription(&self, topics: &str, publication_url: &str) -> String {
        self.with(|i| {
            let id = new_subscription_id(i);
            i.subscriptions.push(FakeSubscription {
                id: id.clone(),
                topics: topics.into(),
                publication_url: publication_url.into(),
                encrypt: false,
                shared_key: None,
            });
            id
        })
    }

    /// The stored subscriptions, in creation order.
    pub fn subscriptions(&self) -> Vec<FakeSubscription> {
        self.with(|i| i.subscriptions.clone())
    }

    /// The next `n` subscription creates answer 400 (as for a `publicationUrl` Qualtrics
    /// refuses): a permanent failure, not retried.
    pub fn reject_next_subscription_creates(&self, n: u32) {
        self.with(|i| i.faults.reject_creates = n);
    }

    /// Elements per list page (default 100), so tests can cross pages with a few.
    pub fn set_subscription_page_size(&self, n: usize) {
        self.with(|i| i.subscription_page_size = n.max(1));
    }
}

/// Auth, recording and the injected 429/500 faults common to every route: `Some` is the
/// error answer to send instead of the route's own.
fn gate(
    inner: &mut Inner,
    method: &str,
    path: String,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Option<Response> {
    // Only the API token: the fake has no OAuth token endpoint, so no bearer token it could
    // have issued exists (a client that switched to `Authorization: Bearer` must fail here).
    let token_ok = headers
        .get("x-api-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == inner.api_token);
    let json_body = method != "POST"
        || headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let (status, mut resp) = if !token_ok {
        (
            401,
            Some(envelope_error(
                StatusCode::UNAUTHORIZED,
                "Invalid API token",
            )),
        )
    } else if !json_body {
        (
            415,
            Some(envelope_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Request body must be application/json",
            )),
        )
    } else if let Some(secs) = inner.limiter.admit(method, &path) {
        let mut r = envelope_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        r.headers_mut().insert("retry-after", secs.into());
        (429, Some(r))
    } else if inner.faults.throttle > 0 {
        inner.faults.throttle -= 1;
        let mut r = envelope_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        if let Some(s) = inner.faults.throttle_retry_after {
            r.headers_mut()
                .insert("retry-after", s.to_string().parse().expect("header"));
        }
        (429, Some(r))
    } else if inner.faults.errors > 0 {
        inner.faults.errors -= 1;
        (
            500,
            Some(envelope_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            )),
        )
    } else {
        (200, None)
    };
    inner.calls.push(Call {
        method: method.into(),
        path,
        status,
        body,
    });
    resp.take()
}

fn set_last_status(inner: &mut Inner, status: u16) {
    if let Some(c) = inner.calls.last_mut() {
        c.status = status;
    }
}

const ALLOWED_KEYS: &[&str] = &[
    "format",
    "compress",
    "startDate",
    "endDate",
    "limit",
    "useLabels",
    "includeLabelColumns",
    "seenUnansweredRecode",
    "multiselectSeenUnansweredRecode",
    "includeDisplayOrder",
    "formatDecimalAsComma",
    "timeZone",
    "newlineReplacement",
    "questionIds",
    "embeddedDataIds",
    "surveyMetadataIds",
    "exportResponsesInProgress",
    "breakoutSets",
    "filterId",
    "allowContinuation",
    "continuationToken",
    "sortByLastModifiedDate",
    "includeWaveWeights",
];

fn encode_token(survey: &str, seq: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("ct:{survey}:{seq}"))
}

fn decode_token(survey: &str, t: &str) -> Option<u64> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let rest = s
        .strip_prefix("ct:")?
        .strip_prefix(survey)?
        .strip_prefix(':')?;
    rest.parse().ok()
}

async fn start_export(
    State(inner): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/surveys/{sid}/export-responses");
    if let Some(r) = gate(&mut i, "POST", path, &headers, body.clone()) {
        return r;
    }
    let fail = |i: &mut Inner, status: StatusCode, msg: &str| {
        set_last_status(i, status.as_u16());
        envelope_error(status, msg)
    };
    let Some(Value::Object(b)) = body else {
        return fail(
            &mut i,
            StatusCode::BAD_REQUEST,
            "Invalid request. Missing or invalid parameter Request.",
        );
    };
    if let Some(k) = b.keys().find(|k| !ALLOWED_KEYS.contains(&k.as_str())) {
        let msg = format!("Invalid request. Unknown parameter {k}.");
        return fail(&mut i, StatusCode::BAD_REQUEST, &msg);
    }
    if !matches!(
        b.get("format").and_then(Value::as_str),
        Some("json" | "ndjson")
    ) {
        return fail(
            &mut i,
            StatusCode::BAD_REQUEST,
            "format must be json or ndjson in this fake",
        );
    }
    if b.contains_key("allowContinuation") && b.contains_key("filterId") {
        return fail(
            &mut i,
            StatusCode::BAD_REQUEST,
            "allowContinuation cannot be combined with filterId",
        );
    }
    let Some(survey) = i.surveys.get(&sid) else {
        return fail(&mut i, StatusCode::NOT_FOUND, "Survey not found");
    };
    let max = survey.max_seq();
    let after_seq = match b.get("continuationToken").and_then(Value::as_str) {
        Some(t) => {
            let reject = i.faults.reject_tokens;
            match decode_token(&sid, t) {
                Some(seq) if !reject => seq,
                _ => {
                    return fail(
                        &mut i,
                        StatusCode::BAD_REQUEST,
                        "Invalid continuation token",
                    )
                }
            }
        }
        None => 0,
    };
    let start_ms = match b.get("startDate").and_then(Value::as_str) {
        None => None,
        Some(d) => {
            match time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339) {
                Ok(t) => Some((t.unix_timestamp_nanos() / 1_000_000) as i64),
                Err(_) => return fail(&mut i, StatusCode::BAD_REQUEST, "Invalid startDate"),
            }
        }
    };
    let continuation = b.get("allowContinuation").and_then(Value::as_bool) == Some(true)
        || b.contains_key("continuationToken");
    let pid = format!("ES_fake{:08}", i.next_job);
    i.next_job += 1;
    let fail_job = i.faults.fail_exports > 0;
    if fail_job {
        i.faults.fail_exports -= 1;
    }
    let job = Job {
        survey: sid.clone(),
        after_seq,
        upto_seq: max,
        start_ms,
        polls_needed: i.polls_needed,
        polls: 0,
        fail: fail_job,
        expired: false,
        token: continuation.then(|| encode_token(&sid, max)),
    };
    i.jobs.insert(pid.clone(), job);
    ok(json!({"progressId": pid, "percentComplete": 0.0, "status": "inProgress"}))
}

async fn progress(
    State(inner): State<Shared>,
    Path((sid, pid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let delay = {
        let mut i = inner.lock().expect("fake lock");
        let path = format!("/API/v3/surveys/{sid}/export-responses/{pid}");
        if let Some(r) = gate(&mut i, "GET", path, &headers, None) {
            return r;
        }
        i.faults.poll_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut i = inner.lock().expect("fake lock");
    let Some(job) = i.jobs.get_mut(&pid).filter(|j| j.survey == sid) else {
        set_last_status(&mut i, 404);
        return envelope_error(StatusCode::NOT_FOUND, "Export not found");
    };
    job.polls += 1;
    if job.polls < job.polls_needed {
        let pct = 100.0 * job.polls as f64 / job.polls_needed as f64;
        return ok(json!({"percentComplete": pct, "status": "inProgress"}));
    }
    if job.fail {
        return ok(json!({"fileId": null, "percentComplete": 100, "status": "failed"}));
    }
    let mut r =
        json!({"fileId": format!("{pid}-file"), "percentComplete": 100.0, "status": "complete"});
    if let Some(t) = &job.token {
        r["continuationToken"] = Value::String(t.clone());
    }
    ok(r)
}

async fn one_response(
    State(inner): State<Shared>,
    Path((sid, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/surveys/{sid}/responses/{rid}");
    if let Some(r) = gate(&mut i, "GET", path, &headers, None) {
        return r;
    }
    let found = i.surveys.get(&sid).and_then(|s| {
        if let Some(seq) = rid
            .strip_prefix("R_syn")
            .and_then(|n| n.parse::<u64>().ok())
        {
            (seq >= 1 && seq <= s.synthetic).then(|| {
                synthetic_response(
                    seq,
                    s.synthetic_base_ms + seq as i64 * 10,
                    s.synthetic_bytes,
                )
            })
        } else {
            s.log.iter().find(|r| r.id == rid).map(live_response)
        }
    });
    match found {
        Some(text) => {
            let mut v = serde_json::from_str(&text).unwrap_or(Value::Null);
            loop_routes::decorate(&i, &rid, &mut v);
            ok(v)
        }
        None => {
            set_last_status(&mut i, 404);
            envelope_error(StatusCode::NOT_FOUND, "Response not found")
        }
    }
}

/// `Write` into the response body channel (blocking side).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    written: u64,
    limit: Option<u64>,
}

impl ChannelWriter {
    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(64 * 1024));
        if let Some(limit) = self.limit {
            if self.written + chunk.len() as u64 > limit {
                chunk.truncate(limit.saturating_sub(self.written) as usize);
                let _ = self.tx.blocking_send(Ok(Bytes::from(chunk)));
                return Err(std::io::Error::other("truncated on purpose"));
            }
        }
        self.written += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::other("client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()
    }
}

async fn file(
    State(inner): State<Shared>,
    Path((sid, fid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (index, held) = {
        let mut i = inner.lock().expect("fake lock");
        let path = format!("/API/v3/surveys/{sid}/export-responses/{fid}/file");
        if let Some(r) = gate(&mut i, "GET", path, &headers, None) {
            return r;
        }
        // A held download stays recorded with status 0: its client is usually killed while it
        // waits, and the fake cannot tell whether a late answer reached anyone.
        let index = i.calls.len() - 1;
        let held = i.faults.hold_files;
        if held {
            i.calls[index].status = 0;
        }
        (index, held)
    };
    if held {
        while inner.lock().expect("fake lock").faults.hold_files {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (job, synthetic, synthetic_bytes, base_ms, log, level, truncate) = {
        let mut i = inner.lock().expect("fake lock");
        let pid = fid.strip_suffix("-file").unwrap_or("");
        let job = i
            .jobs
            .get(pid)
            .filter(|j| j.survey == sid && j.polls >= j.polls_needed && !j.fail && !j.expired)
            .cloned();
        let Some(job) = job else {
            i.calls[index].status = 404;
            return envelope_error(StatusCode::NOT_FOUND, "File not found");
        };
        let truncate = i.faults.truncate_files > 0;
        if truncate {
            i.faults.truncate_files -= 1;
        }
        let s = &i.surveys[&sid];
        let log: Vec<Stored> = s
            .log
            .iter()
            .filter(|r| r.seq > job.after_seq && r.seq <= job.upto_seq)
            .cloned()
            .collect();
        (
            job,
            s.synthetic,
            s.synthetic_bytes,
            s.synthetic_base_ms,
            log,
            i.compression,
            truncate,
        )
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let name = format!("{sid}.json");
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx,
            buf: Vec::with_capacity(64 * 1024),
            written: 0,
            limit: None,
        };
        let _ = write_zip(&mut w, &name, level, truncate, |out| {
            out.write_all(b"{\"responses\":[")?;
            let mut first = true;
            let keep = |ms: i64| job.start_ms.is_none_or(|s| ms > s);
            for seq in (job.after_seq + 1)..=job.upto_seq.min(synthetic) {
                let ms = base_ms + seq as i64 * 10;
                if !keep(ms) {
                    continue;
                }
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                out.write_all(synthetic_response(seq, ms, synthetic_bytes).as_bytes())?;
            }
            for r in &log {
                if !keep(r.recorded_ms) {
                    continue;
                }
                if !first {
                    out.write_all(b",\n")?;
                }
                first = false;
                out.write_all(live_response(r).as_bytes())?;
            }
            out.write_all(b"]}")
        });
        let _ = w.flush_buf();
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// Writes a one-entry ZIP with a data descriptor (streamed: sizes unknown up front).
fn write_zip(
    w: &mut ChannelWriter,
    name: &str,
    level: u32,
    truncate: bool,
    content: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut header = Vec::new();
    header.extend_from_slice(b"PK\x03\x04");
    header.extend_from_slice(&20u16.to_le_bytes());
    header.extend_from_slice(&8u16.to_le_bytes()); // data descriptor follows
    header.extend_from_slice(&8u16.to_le_bytes()); // deflate
    header.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
    header.extend_from_slice(&[0; 12]); // crc, sizes: in the descriptor
    header.extend_from_slice(&(name.len() as u16).to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(name.as_bytes());
    w.write_all(&header)?;
    struct Counting<'a> {
        inner: &'a mut ChannelWriter,
        n: u64,
    }
    impl Write for Counting<'_> {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            self.inner.write_all(d)?;
            self.n += d.len() as u64;
            Ok(d.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct Crc<W> {
        inner: W,
        crc: crc32fast::Hasher,
        n: u64,
    }
    impl<W: Write> Write for Crc<W> {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(d)?;
            self.crc.update(&d[..n]);
            self.n += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    if truncate {
        w.limit = Some(w.written + w.buf.len() as u64 + 64);
    }
    let counting = Counting { inner: w, n: 0 };
    let enc = flate2::write::DeflateEncoder::new(counting, flate2::Compression::new(level));
    let mut crc = Crc {
        inner: std::io::BufWriter::with_capacity(64 * 1024, enc),
        crc: crc32fast::Hasher::new(),
        n: 0,
    };
    content(&mut crc)?;
    let (crc_sum, raw) = (crc.crc.clone().finalize(), crc.n);
    let enc = crc.inner.into_inner().map_err(|e| e.into_error())?;
    let counting = enc.finish()?;
    let compressed = counting.n;
    let w = counting.inner;
    let mut tail = Vec::new();
    tail.extend_from_slice(b"PK\x07\x08");
    tail.extend_from_slice(&crc_sum.to_le_bytes());
    tail.extend_from_slice(&(compressed.min(u32::MAX as u64) as u32).to_le_bytes());
    tail.extend_from_slice(&(raw.min(u32::MAX as u64) as u32).to_le_bytes());
    let cd_offset = (header.len() as u64 + compressed + 16).min(u32::MAX as u64) as u32;
    let mut cd = Vec::new();
    cd.extend_from_slice(b"PK\x01\x02");
    cd.extend_from_slice(&20u16.to_le_bytes());
    cd.extend_from_slice(&20u16.to_le_bytes());
    cd.extend_from_slice(&8u16.to_le_bytes());
    cd.extend_from_slice(&8u16.to_le_bytes());
    cd.extend_from_slice(&[0, 0, 0x21, 0]);
    cd.extend_from_slice(&crc_sum.to_le_bytes());
    cd.extend_from_slice(&(compressed.min(u32::MAX as u64) as u32).to_le_bytes());
    cd.extend_from_slice(&(raw.min(u32::MAX as u64) as u32).to_le_bytes());
    cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
    cd.extend_from_slice(&[0; 12]); // extra, comment, disk, attrs
    cd.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    cd.extend_from_slice(name.as_bytes());
    tail.extend_from_slice(&cd);
    tail.extend_from_slice(b"PK\x05\x06");
    tail.extend_from_slice(&[0; 4]);
    tail.extend_from_slice(&1u16.to_le_bytes());
    tail.extend_from_slice(&1u16.to_le_bytes());
    tail.extend_from_slice(&(cd.len() as u32).to_le_bytes());
    tail.extend_from_slice(&cd_offset.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    w.write_all(&tail)
}

fn new_subscription_id(i: &mut Inner) -> String {
    let id = format!("SUB_fake{:08}", i.next_subscription);
    i.next_subscription += 1;
    id
}

fn subscription_json(s: &FakeSubscription) -> Value {
    json!({"id": s.id, "scope": "brand", "topics": s.topics, "publicationUrl": s.publication_url,
        "encrypted": s.encrypt, "successfulCalls": 0})
}

async fn list_subscriptions(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut i = inner.lock().expect("fake lock");
    let offset = query.get("offset");
    let path = match offset {
        Some(o) => format!("/API/v3/eventsubscriptions?offset={o}"),
        None => "/API/v3/eventsubscriptions".to_string(),
    };
    if let Some(r) = gate(&mut i, "GET", path, &headers, None) {
        return r;
    }
    let Some(offset) = offset.map_or(Some(0), |o| o.parse::<usize>().ok()) else {
        set_last_status(&mut i, 400);
        return envelope_error(StatusCode::BAD_REQUEST, "Invalid offset");
    };
    let size = i.subscription_page_size;
    let elements: Vec<Value> = i
        .subscriptions
        .iter()
        .skip(offset)
        .take(size)
        .map(subscription_json)
        .collect();
    let next = (offset + size < i.subscriptions.len()).then(|| {
        Value::String(format!(
            "{}/API/v3/eventsubscriptions?offset={}",
            i.base_url,
            offset + size
        ))
    });
    ok(json!({"elements": elements, "nextPage": next.unwrap_or(Value::Null)}))
}

async fn create_subscription(
    State(inner): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    // The recorded body never holds the key: tests print recorded calls.
    let recorded = body.clone().map(|mut b| {
        if let Some(k) = b.get_mut("sharedKey") {
            *k = Value::String("***".into());
        }
        b
    });
    let mut i = inner.lock().expect("fake lock");
    if let Some(r) = gate(
        &mut i,
        "POST",
        "/API/v3/eventsubscriptions".into(),
        &headers,
        recorded,
    ) {
        return r;
    }
    let fail = |i: &mut Inner, msg: &str| {
        set_last_status(i, 400);
        envelope_error(StatusCode::BAD_REQUEST, msg)
    };
    let Some(Value::Object(b)) = body else {
        return fail(
            &mut i,
            "Invalid request. Missing or invalid parameter Request.",
        );
    };
    const KEYS: &[&str] = &["topics", "publicationUrl", "encrypt", "sharedKey"];
    if let Some(k) = b.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return fail(&mut i, &format!("Invalid request. Unknown parameter {k}."));
    }
    let (Some(topics), Some(url)) = (
        b.get("topics").and_then(Value::as_str),
        b.get("publicationUrl").and_then(Value::as_str),
    ) else {
        return fail(&mut i, "topics and publicationUrl must be strings");
    };
    if !matches!(b.get("encrypt"), None | Some(Value::Bool(_)))
        || !matches!(b.get("sharedKey"), None | Some(Value::String(_)))
    {
        return fail(&mut i, "encrypt must be a bool and sharedKey a string");
    }
    if i.faults.reject_creates > 0 {
        i.faults.reject_creates -= 1;
        return fail(&mut i, "Invalid publicationUrl");
    }
    let id = new_subscription_id(&mut i);
    let sub = FakeSubscription {
        id: id.clone(),
        topics: topics.into(),
        publication_url: url.into(),
        encrypt: b.get("encrypt").and_then(Value::as_bool).unwrap_or(false),
        shared_key: b
            .get("sharedKey")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    i.subscriptions.push(sub);
    ok(json!({"id": id}))
}

async fn one_subscription(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/eventsubscriptions/{id}");
    if let Some(r) = gate(&mut i, "GET", path, &headers, None) {
        return r;
    }
    match i.subscriptions.iter().find(|s| s.id == id) {
        Some(s) => ok(subscription_json(s)),
        None => {
            set_last_status(&mut i, 404);
            envelope_error(StatusCode::NOT_FOUND, "Subscription not found")
        }
    }
}

async fn delete_subscription(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/eventsubscriptions/{id}");
    if let Some(r) = gate(&mut i, "DELETE", path, &headers, None) {
        return r;
    }
    let before = i.subscriptions.len();
    i.subscriptions.retain(|s| s.id != id);
    if i.subscriptions.len() == before {
        set_last_status(&mut i, 404);
        return envelope_error(StatusCode::NOT_FOUND, "Subscription not found");
    }
    let body =
        json!({"meta":{"httpStatus":"200 - OK","requestId": uuid::Uuid::new_v4().to_string()}});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "unit-test-qualtrics-token";

    async fn send(req: reqwest::RequestBuilder) -> u16 {
        req.send().await.expect("fake answers").status().as_u16()
    }

    #[tokio::test]
    async fn every_route_requires_the_api_token_and_json_bodies() {
        let fake = FakeQualtrics::start(TOKEN).await.expect("fake starts");
        fake.add_responses("SV_1", 1);
        let c = reqwest::Client::new();
        let b = &fake.base_url;
        let routes = [
            format!("{b}/API/v3/surveys/SV_1/export-responses/ES_x"),
            format!("{b}/API/v3/surveys/SV_1/export-responses/ES_x-file/file"),
            format!("{b}/API/v3/surveys/SV_1/responses/R_x"),
            format!("{b}/API/v3/eventsubscriptions"),
            format!("{b}/API/v3/eventsubscriptions/SUB_x"),
        ];
        for url in &routes {
            assert_eq!(send(c.get(url)).await, 401, "{url}");
            let bearer = c.get(url).bearer_auth(TOKEN);
            assert_eq!(send(bearer).await, 401, "any Bearer is refused: {url}");
            let wrong = c.get(url).header("X-API-TOKEN", "wrong");
            assert_eq!(send(wrong).await, 401, "{url}");
            // The right token: the route answers (404 for the unknown ids, 200 for the list).
            let right = send(c.get(url).header("x-api-token", TOKEN)).await;
            assert!(right == 200 || right == 404, "{url}: {right}");
        }
        let start = format!("{b}/API/v3/surveys/SV_1/export-responses");
        let body = r#"{"format":"json","allowContinuation":true}"#;
        let post = |ct: Option<&str>| {
            let r = c.post(&start).header("X-API-TOKEN", TOKEN).body(body);
            match ct {
                Some(ct) => r.header("content-type", ct),
                None => r,
            }
        };
        assert_eq!(send(post(None)).await, 415);
        assert_eq!(send(post(Some("text/plain"))).await, 415);
        assert_eq!(
            send(post(Some("application/json; charset=utf-8"))).await,
            200
        );
        let bearer = c
            .post(&start)
            .bearer_auth(TOKEN)
            .json(&json!({"format": "json"}));
        assert_eq!(send(bearer).await, 401);
    }

    #[tokio::test]
    async fn an_expired_file_is_gone_and_later_jobs_are_not() {
        let fake = FakeQualtrics::start(TOKEN).await.expect("fake starts");
        fake.set_polls(1);
        fake.add_responses("SV_1", 2);
        let c = reqwest::Client::new();
        let b = fake.base_url.clone();
        let job = |c: reqwest::Client| {
            let b = b.clone();
            async move {
                let started: Value = c
                    .post(format!("{b}/API/v3/surveys/SV_1/export-responses"))
                    .header("X-API-TOKEN", TOKEN)
                    .json(&json!({"format": "json"}))
                    .send()
                    .await
                    .expect("start")
                    .json()
                    .await
                    .expect("json");
                let pid = started["result"]["progressId"]
                    .as_str()
                    .expect("id")
                    .to_owned();
                let done: Value = c
                    .get(format!("{b}/API/v3/surveys/SV_1/export-responses/{pid}"))
                    .header("X-API-TOKEN", TOKEN)
                    .send()
                    .await
                    .expect("poll")
                    .json()
                    .await
                    .expect("json");
                let fid = done["result"]["fileId"].as_str().expect("file").to_owned();
                format!("{b}/API/v3/surveys/SV_1/export-responses/{fid}/file")
            }
        };
        let first = job(c.clone()).await;
        let get = |u: &str| c.get(u).header("X-API-TOKEN", TOKEN);
        assert_eq!(send(get(&first)).await, 200);
        fake.expire_files();
        assert_eq!(send(get(&first)).await, 404);
        let second = job(c.clone()).await;
        assert_eq!(send(get(&second)).await, 200);
        // What `served` reports is what the file holds, in order.
        let served = fake.served("SV_1");
        assert_eq!(served.len(), 2);
        assert!(served
            .iter()
            .all(|(id, text)| text.contains(&format!("\"responseId\":\"{id}\""))));
    }
}
