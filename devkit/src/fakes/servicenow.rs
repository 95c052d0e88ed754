//! A fake ServiceNow Table API (`incident`) per reference `external-apis.md` §2 and the §5
//! checklist: Basic and Bearer auth (OAuth `POST /oauth_token.do`, client credentials), the
//! byte-exact 401 envelope, `201` + `Location`, string values, `{link,value}` references unless
//! `sysparm_exclude_reference_link=true`, `sysparm_fields`, the `sysparm_query` subset
//! (`field=value`, `^`, `ORDERBY…`; unknown fields are silently ignored, as on a real instance),
//! `sysparm_limit`, `X-Total-Count`, unknown body fields refused (strict, by default), rate-limit rules (`X-RateLimit-*`, `429` + `Retry-After`),
//! scripted faults, slow and held replies, an injectable clock, and a record of every incident.
//! The query subset also has `fieldINa,b,…` (the reconciliation read, reference
//! `close-the-loop.md` §3.5). State changes (`set_state`, or `POST /_fake/incidents/{sys_id}/state`
//! for sandbox use) bump `sys_mod_count` and `sys_updated_on` and, when the §3.4 business rule's
//! condition holds, send its signed event (`ticket_events.rs`) with delivery faults on demand.
//! Plain HTTP on 127.0.0.1.

// Handlers return ready-made error replies; boxing them would only add noise in a test fake.
#![allow(clippy::result_large_err)]

use super::ticket_events::{self, EventSender, EventTarget};
use super::ticketing::{Admission, FakeClock, Fault, Faults, RateLimit, Route, Window};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const USERNAME: &str = "bridge.integration";
pub const PASSWORD: &str = "sn-test-password";
pub const CLIENT_ID: &str = "bridge-oauth-client";
pub const CLIENT_SECRET: &str = "sn-test-client-secret";

const UNAUTHENTICATED: &str = r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#;
const RULE_SYS_ID: &str = "5f0e1d2c3b4a59687766554433221100";

/// Columns of `incident` the fake knows (strict mode rejects others).
const COLUMNS: &[&str] = &[
    "short_description",
    "description",
    "urgency",
    "impact",
    "priority",
    "category",
    "subcategory",
    "caller_id",
    "correlation_id",
    "correlation_display",
    "assignment_group",
    "assigned_to",
    "contact_type",
    "state",
    "comments",
    "work_notes",
    "company",
    "location",
];

/// One incident as stored (every value a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub sys_id: String,
    pub number: String,
    pub fields: BTreeMap<String, String>,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub at_unix: f64,
}

#[derive(Debug, Default)]
struct Inner {
    incidents: Vec<Incident>,
    next_number: u64,
    password: String,
    client_secret: String,
    tokens: HashMap<String, f64>,
    rate: Option<RateLimit>,
    windows: HashMap<String, Window>,
    faults: Faults,
    strict: bool,
    requests: Vec<SeenRequest>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    clock: FakeClock,
    events: EventSender,
}

/// A running fake ServiceNow instance; stops when dropped.
#[derive(Debug)]
pub struct FakeServiceNow {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServiceNow {
    fn drop(&mut self) {
        if let Ok(mut i) = self.shared.inner.lock() {
            i.faults.release();
        }
        self.task.abort();
    }
}

type Resp = Response;

fn json_resp(status: StatusCode, body: String) -> Resp {
    (
        status,
        [("content-type", "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn error_resp(status: u16, message: &str, detail: Option<&str>) -> Resp {
    let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
    json_resp(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
}

impl FakeServiceNow {
    /// Starts on a free loopback port with the default credentials and no rate limit.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        crate::canary::register(PASSWORD);
        crate::canary::register(CLIENT_SECRET);
        {
            let mut i = shared.inner.lock().expect("fresh lock");
            i.password = PASSWORD.into();
            i.client_secret = CLIENT_SECRET.into();
            i.next_number = 10001;
            i.strict = true;
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/oauth_token.do", post(token))
            .route("/api/now/table/incident", get(list).post(create))
            .route(
                "/api/now/table/incident/{sys_id}",
                get(get_one).patch(patch_one).delete(delete_one),
            )
            .route("/_fake/incidents/{sys_id}/state", post(admin_state))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `SERVICENOW_INSTANCE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("fake ServiceNow lock")
    }

    /// Every incident, in creation order.
    pub fn incidents(&self) -> Vec<Incident> {
        self.lock().incidents.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    /// A rate-limit rule for every user; `None` removes it (no headers at all).
    pub fn set_rate_limit(&self, rate: Option<RateLimit>) {
        self.lock().rate = rate;
    }

    /// (admitted, denied) request counts under the rate limit.
    pub fn rate_counts(&self) -> (u64, u64) {
        let i = self.lock();
        i.windows
            .values()
            .fold((0, 0), |(a, d), w| (a + w.admitted, d + w.denied))
    }

    /// Rotates the Basic-auth password (the handler's copy becomes stale).
    pub fn set_password(&self, p: &str) {
        crate::canary::register(p);
        self.lock().password = p.into();
    }

    /// Strict mode (the default): a body field that is not an `incident` column is refused
    /// with 400. A default instance silently drops such a field instead; the fake refuses it so
    /// that a misspelt field (`urgancy`) fails a test. `set_strict(false)` models the default
    /// instance, for a test that needs that leniency (it should say why).
    pub fn set_strict(&self, strict: bool) {
        self.lock().strict = strict;
    }

    pub fn push_fault(&self, route: Route, fault: Fault) {
        self.lock().faults.push(route, fault);
    }

    /// Every `n`th request answers `status` (0 turns it off).
    pub fn fail_every(&self, n: u64, status: u16) {
        self.lock().faults.every(n, status);
    }

    pub fn set_delay(&self, d: Duration) {
        self.lock().faults.delay = d;
    }

    /// Holds the reply to every create (after the incident exists) until [`Self::release`].
    pub fn hold_creates(&self) {
        self.lock().faults.hold();
    }

    pub fn release(&self) {
        self.lock().faults.release();
    }

    /// Create replies currently held.
    pub fn held(&self) -> u64 {
        self.lock().faults.held
    }

    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// Where the business rule sends its events (`None`: no rule installed, the default).
    pub fn set_events(&self, target: Option<EventTarget>) {
        self.shared.events.set_target(target);
    }

    /// The event sender: script delivery faults, read what was sent.
    pub fn events(&self) -> &EventSender {
        &self.shared.events
    }

    /// An agent changes an incident's `state` (`6` resolved, `7` closed, `2` reopened, …),
    /// with an optional `close_code`. Sends the business rule's event when its condition holds.
    pub fn set_state(
        &self,
        sys_id: &str,
        state: &str,
        close_code: Option<&str>,
    ) -> Result<(), String> {
        set_state(&self.shared, sys_id, state, close_code)
    }
}

/// The user a request authenticates as, or the 401.
fn authenticate(inner: &Inner, headers: &HeaderMap, now: f64) -> Result<String, Resp> {
    let denied = || json_resp(StatusCode::UNAUTHORIZED, UNAUTHENTICATED.into());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    if let Some(b64) = auth.strip_prefix("Basic ") {
        let raw = STANDARD.decode(b64.trim()).map_err(|_| denied())?;
        let raw = String::from_utf8(raw).map_err(|_| denied())?;
        let (user, pass) = raw.split_once(':').ok_or_else(denied)?;
        if user == USERNAME && pass == inner.password {
            return Ok(user.to_string());
        }
    } else if let Some(tok) = auth.strip_prefix("Bearer ") {
        if inner.tokens.get(tok.trim()).is_some_and(|exp| *exp > now) {
            return Ok(CLIENT_ID.to_string());
        }
    }
    Err(denied())
}

/// Auth, rate limit and faults, in the order a real instance applies them.
fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    route: Route,
    method: &str,
    path: &str,
    query: &str,
) -> Result<(Option<Fault>, Duration, HeaderMap), Resp> {
    let now = shared.clock.unix_secs_f64();
    let mut inner = shared.inner.lock().expect("fake ServiceNow lock");
    let record = |inner: &mut Inner, status: u16| {
        inner.requests.push(SeenRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            status,
            at_unix: now,
        })
    };
    let user = match authenticate(&inner, headers, now) {
        Ok(u) => u,
        Err(r) => {
            record(&mut inner, 401);
            return Err(r);
        }
    };
    let mut extra = HeaderMap::new();
    if let Some(rate) = inner.rate {
        let decision = inner.windows.entry(user).or_default().admit(rate, now);
        // The rule is per hour on a real instance; the fake's window is configurable.
        let hv = |s: String| HeaderValue::from_str(&s).expect("header value");
        extra.insert("x-ratelimit-limit", hv(rate.limit.to_string()));
        extra.insert("x-ratelimit-rule", hv(RULE_SYS_ID.into()));
        match decision {
            Admission::Admitted { reset_unix, .. } => {
                extra.insert("x-ratelimit-reset", hv(reset_unix.to_string()));
            }
            Admission::Denied {
                retry_after_secs,
                reset_unix,
            } => {
                extra.insert("x-ratelimit-reset", hv(reset_unix.to_string()));
                extra.insert("retry-after", hv(retry_after_secs.to_string()));
                record(&mut inner, 429);
                let mut r = error_resp(
                    429,
                    "Rate limit exceeded",
                    Some(&format!(
                        "Rate limit of {} requests per {} seconds for Table API exceeded",
                        rate.limit,
                        rate.window.as_secs()
                    )),
                );
                r.headers_mut().extend(extra);
                return Err(r);
            }
        }
    }
    let fault = inner.faults.take(route);
    if let Some(Fault::Status(s)) = fault {
        record(&mut inner, s);
        let mut r = error_resp(s, "Injected failure", Some("fake ServiceNow fault"));
        r.headers_mut().extend(extra);
        return Err(r);
    }
    let delay = match fault {
        Some(Fault::Delay(d)) => d,
        _ => inner.faults.delay,
    };
    Ok((fault, delay, extra))
}

fn finish(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &str,
    mut r: Resp,
    extra: HeaderMap,
) -> Resp {
    if let Ok(mut inner) = shared.inner.lock() {
        let status = r.status().as_u16();
        let at_unix = shared.clock.unix_secs_f64();
        inner.requests.push(SeenRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            status,
            at_unix,
        });
    }
    r.headers_mut().extend(extra);
    r
}

async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Resp {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let now = shared.clock.unix_secs_f64();
    let mut inner = shared.inner.lock().expect("lock");
    let ok = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && form.get("client_secret") == Some(&inner.client_secret)
        }
        Some("password") => {
            form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && form.get("client_secret") == Some(&inner.client_secret)
                && form.get("username").map(String::as_str) == Some(USERNAME)
                && form.get("password") == Some(&inner.password)
        }
        _ => false,
    };
    if !ok {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            r#"{"error_description":"access_denied","error":"server_error"}"#.into(),
        );
    }
    let tok = uuid::Uuid::new_v4().simple().to_string();
    inner.tokens.insert(tok.clone(), now + 1799.0);
    json_resp(
        StatusCode::OK,
        json!({"scope": "useraccount", "token_type": "Bearer", "expires_in": 1799,
               "refresh_token": uuid::Uuid::new_v4().simple().to_string(), "access_token": tok})
        .to_string(),
    )
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The JSON object of an incident as the Table API returns it.
fn render(inc: &Incident, q: &HashMap<String, String>, base: &str) -> Value {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true");
    let exclude_links = flag("sysparm_exclude_reference_link");
    let mut all = Map::new();
    for (k, v) in &inc.fields {
        all.insert(k.clone(), json!(v));
    }
    all.insert("sys_id".into(), json!(inc.sys_id));
    all.insert("number".into(), json!(inc.number));
    all.insert("sys_class_name".into(), json!("incident"));
    for k in ["state", "incident_state"] {
        all.entry(k).or_insert(json!("1"));
    }
    all.entry("active").or_insert(json!("true"));
    let opener = "6816f79cc0a8016401c5a33be04be441";
    all.insert(
        "opened_by".into(),
        if exclude_links {
            json!(opener)
        } else {
            json!({"link": format!("{base}/api/now/table/sys_user/{opener}"), "value": opener})
        },
    );
    match q.get("sysparm_fields").filter(|f| !f.is_empty()) {
        Some(fields) => {
            let mut out = Map::new();
            for f in fields.split(',').map(str::trim) {
                out.insert(f.into(), all.get(f).cloned().unwrap_or(json!("")));
            }
            Value::Object(out)
        }
        None => Value::Object(all),
    }
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Resp {
    let path = "/api/now/table/incident";
    let qs = serde_urlencoded_like(&q);
    let (fault, delay, extra) = match gate(&shared, &headers, Route::Create, "POST", path, &qs) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fields: Map<String, Value> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => {
            let r = error_resp(
                400,
                "Exception while reading request",
                Some("The payload is not valid JSON."),
            );
            return finish(&shared, "POST", path, &qs, r, extra);
        }
    };
    let (inc, hold) = {
        let mut inner = shared.inner.lock().expect("lock");
        let mut stored = BTreeMap::new();
        for (k, v) in fields {
            if k.starts_with("sys_") || k == "number" {
                continue; // generated; silently not settable
            }
            if inner.strict && !COLUMNS.contains(&k.as_str()) && !k.starts_with("u_") {
                drop(inner);
                let r = error_resp(
                    400,
                    &format!("Invalid field: {k}"),
                    Some(&format!("Field {k} does not exist in table incident")),
                );
                return finish(&shared, "POST", path, &qs, r, extra);
            }
            let s = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            stored.insert(k, s);
        }
        let urgency = stored.get("urgency").cloned().unwrap_or_else(|| "3".into());
        let impact = stored.get("impact").cloned().unwrap_or_else(|| "3".into());
        let p = urgency.parse::<u32>().unwrap_or(3) + impact.parse::<u32>().unwrap_or(3) - 1;
        stored.insert("urgency".into(), urgency);
        stored.insert("impact".into(), impact);
        stored.insert("priority".into(), p.clamp(1, 5).to_string());
        let now = glide_time(shared.clock.now());
        stored.insert("sys_created_on".into(), now.clone());
        stored.insert("sys_updated_on".into(), now);
        stored.insert("sys_mod_count".into(), "0".into());
        let inc = Incident {
            sys_id: uuid::Uuid::new_v4().simple().to_string(),
            number: format!("INC{:07}", inner.next_number),
            fields: stored,
        };
        inner.next_number += 1;
        inner.incidents.push(inc.clone());
        let hold = inner.faults.hold_handle();
        if hold.is_some() {
            inner.faults.held += 1;
        }
        (inc, hold)
    };
    if let Some(n) = hold {
        n.notified().await;
    }
    if let Some(Fault::AfterCreate(s)) = fault {
        let r = error_resp(s, "Injected failure after create", None);
        return finish(&shared, "POST", path, &qs, r, extra);
    }
    let base = base_url(&headers);
    let mut r = json_resp(
        StatusCode::CREATED,
        json!({"result": render(&inc, &q, &base)}).to_string(),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{base}/api/now/table/incident/{}", inc.sys_id)) {
        r.headers_mut().insert("location", v);
    }
    finish(&shared, "POST", path, &qs, r, extra)
}

fn serde_urlencoded_like(q: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = q.iter().collect();
    pairs.sort();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Evaluates the encoded-query subset: `a=b^c=d^ORDERBYx`; unknown fields are ignored.
fn matches(inc: &Incident, query: &str) -> bool {
    query.split('^').all(|term| {
        if term.is_empty() || term.starts_with("ORDERBY") {
            return true;
        }
        let Some((field, value)) = term.split_once('=') else {
            // `fieldINa,b,c`: the field is lower case, so the first `IN` ends it.
            return match term.split_once("IN") {
                Some((field, list)) => {
                    let value = match field {
                        "sys_id" => inc.sys_id.as_str(),
                        "number" => inc.number.as_str(),
                        f if COLUMNS.contains(&f) || inc.fields.contains_key(f) => {
                            inc.fields.get(f).map(String::as_str).unwrap_or("")
                        }
                        // Unknown fields are ignored, as with `=`.
                        _ => return true,
                    };
                    list.split(',').any(|x| x == value)
                }
                None => true,
            };
        };
        match field {
            "sys_id" => inc.sys_id == value,
            "number" => inc.number == value,
            f if COLUMNS.contains(&f) || inc.fields.contains_key(f) => {
                inc.fields.get(f).map(String::as_str).unwrap_or("") == value
            }
            // An invalid field name is silently ignored (glide.invalid_query.returns_no_rows=false).
            _ => true,
        }
    })
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Resp {
    let path = "/api/now/table/incident";
    let qs = serde_urlencoded_like(&q);
    let (_fault, delay, extra) = match gate(&shared, &headers, Route::Lookup, "GET", path, &qs) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let query = q.get("sysparm_query").cloned().unwrap_or_default();
    let limit: usize = q
        .get("sysparm_limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10000);
    let base = base_url(&headers);
    let (rows, total) = {
        let inner = shared.inner.lock().expect("lock");
        let mut hits: Vec<&Incident> = inner
            .incidents
            .iter()
            .filter(|i| matches(i, &query))
            .collect();
        if let Some(field) = query.split('^').find_map(|t| t.strip_prefix("ORDERBYDESC")) {
            hits.sort_by(|a, b| b.fields.get(field).cmp(&a.fields.get(field)));
        } else if let Some(field) = query.split('^').find_map(|t| t.strip_prefix("ORDERBY")) {
            hits.sort_by(|a, b| a.fields.get(field).cmp(&b.fields.get(field)));
        }
        let total = hits.len();
        let rows: Vec<Value> = hits
            .into_iter()
            .take(limit)
            .map(|i| render(i, &q, &base))
            .collect();
        (rows, total)
    };
    let mut r = json_resp(StatusCode::OK, json!({"result": rows}).to_string());
    if q.get("sysparm_no_count").map(String::as_str) != Some("true") {
        if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
            r.headers_mut().insert("x-total-count", v);
        }
    }
    finish(&shared, "GET", path, &qs, r, extra)
}

async fn get_one(
    State(shared): State<Arc<Shared>>,
    Path(sys_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Resp {
    let path = format!("/api/now/table/incident/{sys_id}");
    let (_f, _d, extra) = match gate(&shared, &headers, Route::Lookup, "GET", &path, "") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let base = base_url(&headers);
    let found = shared
        .inner
        .lock()
        .expect("lock")
        .incidents
        .iter()
        .find(|i| i.sys_id == sys_id)
        .map(|i| render(i, &q, &base));
    let r = match found {
        Some(v) => json_resp(StatusCode::OK, json!({"result": v}).to_string()),
        None => error_resp(
            404,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval"),
        ),
    };
    finish(&shared, "GET", &path, "", r, extra)
}

async fn patch_one(
    State(shared): State<Arc<Shared>>,
    Path(sys_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Resp {
    let path = format!("/api/now/table/incident/{sys_id}");
    let (_f, _d, extra) = match gate(&shared, &headers, Route::Any, "PATCH", &path, "") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let base = base_url(&headers);
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return finish(
            &shared,
            "PATCH",
            &path,
            "",
            error_resp(400, "Exception while reading request", None),
            extra,
        );
    };
    let updated = {
        let mut inner = shared.inner.lock().expect("lock");
        inner
            .incidents
            .iter_mut()
            .find(|i| i.sys_id == sys_id)
            .map(|i| {
                for (k, v) in fields {
                    if !k.starts_with("sys_") {
                        i.fields.insert(
                            k,
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string()),
                        );
                    }
                }
                render(i, &q, &base)
            })
    };
    let r = match updated {
        Some(v) => json_resp(StatusCode::OK, json!({"result": v}).to_string()),
        None => error_resp(
            404,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval"),
        ),
    };
    finish(&shared, "PATCH", &path, "", r, extra)
}

async fn delete_one(
    State(shared): State<Arc<Shared>>,
    Path(sys_id): Path<String>,
    headers: HeaderMap,
) -> Resp {
    let path = format!("/api/now/table/incident/{sys_id}");
    let (_f, _d, extra) = match gate(&shared, &headers, Route::Any, "DELETE", &path, "") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let removed = {
        let mut inner = shared.inner.lock().expect("lock");
        let before = inner.incidents.len();
        inner.incidents.retain(|i| i.sys_id != sys_id);
        before != inner.incidents.len()
    };
    let r = if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error_resp(
            404,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval"),
        )
    };
    finish(&shared, "DELETE", &path, "", r, extra)
}

/// `sys_updated_on`'s format: `YYYY-MM-DD HH:MM:SS`, UTC.
fn glide_time(t: std::time::SystemTime) -> String {
    ticket_events::rfc3339(t)
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

fn set_state(
    shared: &Shared,
    sys_id: &str,
    state: &str,
    close_code: Option<&str>,
) -> Result<(), String> {
    let now = shared.clock.now();
    let (inc, previous) = {
        let mut inner = shared.inner.lock().map_err(|e| e.to_string())?;
        let inc = inner
            .incidents
            .iter_mut()
            .find(|i| i.sys_id == sys_id)
            .ok_or_else(|| format!("incident {sys_id} not found"))?;
        let previous = inc
            .fields
            .get("state")
            .cloned()
            .unwrap_or_else(|| "1".into());
        let count = inc
            .fields
            .get("sys_mod_count")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        for k in ["state", "incident_state"] {
            inc.fields.insert(k.into(), state.into());
        }
        if let Some(c) = close_code {
            inc.fields.insert("close_code".into(), c.into());
        }
        inc.fields.insert("sys_updated_on".into(), glide_time(now));
        inc.fields
            .insert("sys_mod_count".into(), (count + 1).to_string());
        (inc.clone(), previous)
    };
    // The rule's condition (§3.4): our correlation, and the state changes to 6 or 7 or from 6.
    let ours = inc
        .fields
        .get("correlation_id")
        .is_some_and(|c| c.starts_with("qualtrics:"));
    let fires = previous != state && (state == "6" || state == "7" || previous == "6");
    if let (true, true, Some(target)) = (ours, fires, shared.events.target()) {
        let event = ticket_events::servicenow_state_changed(
            &target.secret,
            &inc.sys_id,
            &inc.number,
            &inc.fields,
            &previous,
            now,
        );
        shared.events.emit(event);
    }
    Ok(())
}

/// `POST /_fake/incidents/{sys_id}/state` with `{"state":"6","close_code":"…"}`: the sandbox's
/// way to act as an agent. Not a ServiceNow route.
async fn admin_state(
    State(shared): State<Arc<Shared>>,
    Path(sys_id): Path<String>,
    body: Bytes,
) -> Resp {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(state) = v["state"].as_str() else {
        return error_resp(400, "state is required", None);
    };
    match set_state(&shared, &sys_id, state, v["close_code"].as_str()) {
        Ok(()) => json_resp(
            StatusCode::OK,
            json!({"sys_id": sys_id, "state": state}).to_string(),
        ),
        Err(e) => error_resp(404, "No Record found", Some(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_fields_are_refused_unless_leniency_is_asked_for() {
        let fake = FakeServiceNow::start().await.expect("fake starts");
        let create = |body: Value| {
            reqwest::Client::new()
                .post(format!("{}/api/now/table/incident", fake.url()))
                .basic_auth(USERNAME, Some(PASSWORD))
                .json(&body)
                .send()
        };
        let misspelt = json!({"short_description": "s", "urgancy": "1"});
        let r = create(misspelt.clone()).await.expect("answer");
        assert_eq!(r.status().as_u16(), 400);
        assert!(fake.incidents().is_empty());
        let r = create(json!({"short_description": "s", "urgency": "1", "u_custom": "x"}))
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), 201);
        // A default instance drops the unknown field silently.
        fake.set_strict(false);
        let r = create(misspelt).await.expect("answer");
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(fake.incidents().len(), 2);
    }
}
