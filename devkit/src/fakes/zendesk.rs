//! A fake Zendesk Support Tickets API per reference `external-apis.md` §3 and the §5 checklist:
//! `POST /api/v2/tickets[.json]`, `GET /api/v2/tickets[.json]?external_id=` (may return several),
//! `GET /api/v2/tickets/{id}[.json]`; Basic `email/token:apitoken` or Bearer auth with the
//! documented 401; `ticket.comment` required (422 `RecordInvalid` otherwise, and for bad
//! `priority`/`type`/`status` values); `201 {"ticket","audit"}`; the `Idempotency-Key` store
//! (2 h TTL on an injectable clock, `x-idempotency-lookup: miss|hit`, 400
//! `IdempotentRequestError` for another body, 409 while the first request is in flight);
//! a per-window account limit answering `429 text/plain` with `Retry-After` and
//! `X-Rate-Limit*` (every reply carries `X-Rate-Limit`); scripted faults, slow and held replies;
//! a record of created tickets; `GET /api/v2/tickets/show_many[.json]?ids=` (at most 100 ids,
//! unknown ids left out); status changes (`set_status`, or `POST /_fake/tickets/{id}/status`
//! for sandbox use) that send the signed events-mode webhook (`ticket_events.rs`) with
//! delivery faults on demand. Plain HTTP on 127.0.0.1.

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
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

pub const EMAIL: &str = "bridge@example.com";
pub const API_TOKEN: &str = "zd-test-api-token";
pub const OAUTH_TOKEN: &str = "zd-test-oauth-access-token";
/// The body of Zendesk's 429 (50 bytes, plain text).
pub const RATE_LIMITED_BODY: &str = "Number of allowed API requests per minute exceeded";
/// Idempotency keys expire after two hours.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(2 * 3600);

/// One created ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub id: u64,
    pub external_id: Option<String>,
    /// The ticket object as returned by the API.
    pub json: Value,
    /// The `ticket` object the client sent.
    pub request: Value,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
enum Idem {
    InFlight,
    Done {
        body_hash: [u8; 32],
        status: u16,
        body: String,
        at: SystemTime,
    },
}

#[derive(Debug, Default)]
struct Inner {
    tickets: Vec<Ticket>,
    next_id: u64,
    token: String,
    rate: Option<RateLimit>,
    window: Window,
    faults: Faults,
    idem: HashMap<String, Idem>,
    /// (method, path, status, idempotency lookup)
    requests: Vec<(String, String, u16, Option<String>)>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    clock: FakeClock,
    events: EventSender,
}

/// A running fake Zendesk account; stops when dropped.
#[derive(Debug)]
pub struct FakeZendesk {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeZendesk {
    fn drop(&mut self) {
        if let Ok(mut i) = self.shared.inner.lock() {
            i.faults.release();
        }
        self.task.abort();
    }
}

fn json_resp(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn record_invalid(field: &str, description: &str) -> Response {
    json_resp(
        422,
        json!({"error": "RecordInvalid", "description": "Record validation errors",
               "details": {field: [{"description": description, "error": "InvalidValue"}]}})
        .to_string(),
    )
}

impl FakeZendesk {
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        crate::canary::register(API_TOKEN);
        {
            let mut i = shared.inner.lock().expect("fresh lock");
            i.token = API_TOKEN.into();
            i.next_id = 35436;
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/api/v2/tickets", get(list).post(create))
            .route("/api/v2/tickets.json", get(list).post(create))
            .route("/api/v2/tickets/show_many", get(show_many))
            .route("/api/v2/tickets/show_many.json", get(show_many))
            .route("/api/v2/tickets/{id}", get(show))
            .route("/_fake/tickets/{id}/status", post(admin_status))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `ZENDESK_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("fake Zendesk lock")
    }

    pub fn tickets(&self) -> Vec<Ticket> {
        self.lock().tickets.clone()
    }

    /// (method, path, status, `x-idempotency-lookup`) of every request.
    pub fn requests(&self) -> Vec<(String, String, u16, Option<String>)> {
        self.lock().requests.clone()
    }

    /// The account limit: `limit` requests per `window` (a minute on a real account).
    pub fn set_rate_limit(&self, rate: Option<RateLimit>) {
        self.lock().rate = rate;
    }

    pub fn rate_counts(&self) -> (u64, u64) {
        let i = self.lock();
        (i.window.admitted, i.window.denied)
    }

    pub fn set_api_token(&self, t: &str) {
        self.lock().token = t.into();
    }

    pub fn push_fault(&self, route: Route, fault: Fault) {
        self.lock().faults.push(route, fault);
    }

    pub fn fail_every(&self, n: u64, status: u16) {
        self.lock().faults.every(n, status);
    }

    pub fn set_delay(&self, d: Duration) {
        self.lock().faults.delay = d;
    }

    pub fn hold_creates(&self) {
        self.lock().faults.hold();
    }

    pub fn release(&self) {
        self.lock().faults.release();
    }

    pub fn held(&self) -> u64 {
        self.lock().faults.held
    }

    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// Where status changes send their events (`None`: nowhere, the default).
    pub fn set_events(&self, target: Option<EventTarget>) {
        self.shared.events.set_target(target);
    }

    /// The event sender: script delivery faults, read what was sent.
    pub fn events(&self) -> &EventSender {
        &self.shared.events
    }

    /// An agent (or an automation) changes a ticket's status: `open`, `pending`, `hold`,
    /// `solved`, `closed`. A closed ticket cannot change (reference §4.4). Sends the event.
    pub fn set_status(&self, id: u64, status: &str) -> Result<(), String> {
        set_status(&self.shared, id, status)
    }

    /// Removes a ticket (as a deletion would): `show_many` leaves it out from then on.
    pub fn delete_ticket(&self, id: u64) {
        self.lock().tickets.retain(|t| t.id != id);
    }

    /// Adds a ticket directly (e.g. a duplicate `external_id` made by someone else).
    pub fn insert_ticket(&self, external_id: &str, subject: &str) -> u64 {
        let mut i = self.lock();
        let id = i.next_id;
        i.next_id += 1;
        let json =
            json!({"id": id, "external_id": external_id, "subject": subject, "status": "new"});
        i.tickets.push(Ticket {
            id,
            external_id: Some(external_id.into()),
            json,
            request: Value::Null,
            idempotency_key: None,
        });
        id
    }
}

fn authenticate(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(b64) = auth.strip_prefix("Basic ") {
        let Ok(raw) = STANDARD.decode(b64.trim()) else {
            return false;
        };
        let raw = String::from_utf8_lossy(&raw).into_owned();
        return raw == format!("{EMAIL}/token:{}", inner.token);
    }
    auth.strip_prefix("Bearer ").map(str::trim) == Some(OAUTH_TOKEN)
}

/// Auth, account limit, faults. `Ok((fault, delay, headers))` lets the request proceed.
fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    route: Route,
    method: &str,
    path: &str,
) -> Result<(Option<Fault>, Duration, HeaderMap), Response> {
    let now = shared.clock.unix_secs_f64();
    let mut inner = shared.inner.lock().expect("lock");
    let mut rl = HeaderMap::new();
    let hv = |s: String| HeaderValue::from_str(&s).expect("header");
    let limit = inner.rate.map(|r| r.limit).unwrap_or(700);
    rl.insert("x-rate-limit", hv(limit.to_string()));
    if !authenticate(&inner, headers) {
        inner.requests.push((method.into(), path.into(), 401, None));
        let mut r = json_resp(401, r#"{"error":"Couldn't authenticate you"}"#.into());
        r.headers_mut().extend(rl);
        return Err(r);
    }
    if let Some(rate) = inner.rate {
        match inner.window.admit(rate, now) {
            Admission::Admitted { remaining, .. } => {
                rl.insert("x-rate-limit-remaining", hv(remaining.to_string()));
            }
            Admission::Denied {
                retry_after_secs, ..
            } => {
                inner.requests.push((method.into(), path.into(), 429, None));
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("content-type", "text/plain")],
                    RATE_LIMITED_BODY,
                )
                    .into_response();
                rl.insert("x-rate-limit-remaining", hv("0".into()));
                rl.insert("retry-after", hv(retry_after_secs.to_string()));
                r.headers_mut().extend(rl);
                return Err(r);
            }
        }
    }
    let fault = inner.faults.take(route);
    if let Some(Fault::Status(s)) = fault {
        inner.requests.push((method.into(), path.into(), s, None));
        let body = if s >= 500 {
            r#"{"error":"InternalError","description":"Injected failure"}"#
        } else {
            r#"{"error":"InjectedError","description":"Injected failure"}"#
        };
        let mut r = json_resp(s, body.into());
        r.headers_mut().extend(rl);
        return Err(r);
    }
    let delay = match fault {
        Some(Fault::Delay(d)) => d,
        _ => inner.faults.delay,
    };
    Ok((fault, delay, rl))
}

fn done(
    shared: &Shared,
    method: &str,
    path: &str,
    mut r: Response,
    extra: HeaderMap,
    lookup: Option<&str>,
) -> Response {
    if let Ok(mut inner) = shared.inner.lock() {
        inner.requests.push((
            method.into(),
            path.into(),
            r.status().as_u16(),
            lookup.map(str::to_owned),
        ));
    }
    r.headers_mut().extend(extra);
    if let Some(l) = lookup {
        if let Ok(v) = HeaderValue::from_str(l) {
            r.headers_mut().insert("x-idempotency-lookup", v);
        }
    }
    r
}

async fn create(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/api/v2/tickets";
    let (fault, delay, extra) = match gate(&shared, &headers, Route::Create, "POST", path) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_hash: [u8; 32] = Sha256::digest(&body).into();
    let now = shared.clock.now();
    if let Some(k) = &key {
        let mut inner = shared.inner.lock().expect("lock");
        match inner.idem.get(k).cloned() {
            Some(Idem::Done { at, .. })
                if now.duration_since(at).unwrap_or_default() >= IDEMPOTENCY_TTL =>
            {
                inner.idem.remove(k);
            }
            Some(Idem::Done {
                body_hash: h,
                status,
                body: cached,
                ..
            }) => {
                drop(inner);
                if h != body_hash {
                    let r = json_resp(400, r#"{"error":"IdempotentRequestError","description":"Request parameters don't match the given idempotency key"}"#.into());
                    return done(&shared, "POST", path, r, extra, None);
                }
                return done(
                    &shared,
                    "POST",
                    path,
                    json_resp(status, cached),
                    extra,
                    Some("hit"),
                );
            }
            Some(Idem::InFlight) => {
                drop(inner);
                let r = json_resp(409, r#"{"error":"IdempotentRequestInProgress","description":"A request with this idempotency key is in progress"}"#.into());
                return done(&shared, "POST", path, r, extra, None);
            }
            None => {}
        }
        inner.idem.insert(k.clone(), Idem::InFlight);
    }
    let forget = |shared: &Shared| {
        if let Some(k) = &key {
            if let Ok(mut i) = shared.inner.lock() {
                i.idem.remove(k);
            }
        }
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            forget(&shared);
            let r = json_resp(400, r#"{"error":"Unprocessable Entity","description":"The request body is not valid JSON"}"#.into());
            return done(&shared, "POST", path, r, extra, None);
        }
    };
    let t = &parsed["ticket"];
    let invalid = if !t.is_object() {
        Some(("base", "Ticket is required".to_string()))
    } else if !(t["comment"]["body"].is_string() || t["comment"]["html_body"].is_string()) {
        Some(("base", "Description: cannot be blank".to_string()))
    } else if !t["priority"].is_null()
        && !["urgent", "high", "normal", "low"].contains(&t["priority"].as_str().unwrap_or("?"))
    {
        Some((
            "priority",
            format!("Priority: {} is not valid", t["priority"]),
        ))
    } else if !t["type"].is_null()
        && !["problem", "incident", "question", "task"].contains(&t["type"].as_str().unwrap_or("?"))
    {
        Some(("type", format!("Type: {} is not valid", t["type"])))
    } else if !t["status"].is_null()
        && !["new", "open", "pending", "hold", "solved", "closed"]
            .contains(&t["status"].as_str().unwrap_or("?"))
    {
        Some(("status", format!("Status: {} is not valid", t["status"])))
    } else {
        None
    };
    if let Some((field, why)) = invalid {
        forget(&shared);
        return done(
            &shared,
            "POST",
            path,
            record_invalid(field, &why),
            extra,
            None,
        );
    }
    let (text, hold, id) = {
        let mut inner = shared.inner.lock().expect("lock");
        let id = inner.next_id;
        inner.next_id += 1;
        let created = ticket_events::rfc3339(now);
        let mut tags: Vec<String> = t["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        tags.sort();
        tags.dedup();
        let description = t["comment"]["body"]
            .as_str()
            .or(t["comment"]["html_body"].as_str())
            .unwrap_or("");
        let ticket = json!({
            "url": format!("https://fake.zendesk.com/api/v2/tickets/{id}.json"),
            "id": id,
            "external_id": t["external_id"],
            "subject": t["subject"],
            "raw_subject": t["subject"],
            "description": description,
            "priority": t["priority"],
            "status": t["status"].as_str().unwrap_or("new"),
            "type": t["type"],
            "requester_id": 20978392,
            "submitter_id": 76872,
            "assignee_id": t["assignee_id"],
            "group_id": t["group_id"],
            "tags": tags,
            "custom_fields": t["custom_fields"].as_array().cloned().unwrap_or_default(),
            "created_at": created,
            "updated_at": created,
            "via": {"channel": "api"},
        });
        inner.tickets.push(Ticket {
            id,
            external_id: t["external_id"].as_str().map(str::to_owned),
            json: ticket.clone(),
            request: t.clone(),
            idempotency_key: key.clone(),
        });
        let text = json!({"ticket": ticket, "audit": {"id": 2127301143u64 + id, "ticket_id": id,
            "created_at": created, "author_id": 76872, "events": []}})
        .to_string();
        if let Some(k) = &key {
            inner.idem.insert(
                k.clone(),
                Idem::Done {
                    body_hash,
                    status: 201,
                    body: text.clone(),
                    at: now,
                },
            );
        }
        let hold = inner.faults.hold_handle();
        if hold.is_some() {
            inner.faults.held += 1;
        }
        (text, hold, id)
    };
    if let Some(n) = hold {
        n.notified().await;
    }
    if let Some(Fault::AfterCreate(s)) = fault {
        let r = json_resp(
            s,
            r#"{"error":"InternalError","description":"Injected failure after create"}"#.into(),
        );
        return done(&shared, "POST", path, r, extra, None);
    }
    let mut r = json_resp(201, text);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "https://fake.zendesk.com/api/v2/tickets/{id}.json"
    )) {
        r.headers_mut().insert("location", v);
    }
    done(
        &shared,
        "POST",
        path,
        r,
        extra,
        key.as_ref().map(|_| "miss"),
    )
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = "/api/v2/tickets";
    let extra = match read_gate(&shared, &headers, path).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let tickets: Vec<Value> = {
        let inner = shared.inner.lock().expect("lock");
        inner
            .tickets
            .iter()
            .filter(|t| match q.get("external_id") {
                Some(e) => t.external_id.as_deref() == Some(e.as_str()),
                None => true,
            })
            .take(100)
            .map(|t| t.json.clone())
            .collect()
    };
    tickets_reply(&shared, path, tickets, extra)
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v2/tickets/{id}");
    let (_f, _d, extra) = match gate(&shared, &headers, Route::Lookup, "GET", &path) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id: u64 = id.trim_end_matches(".json").parse().unwrap_or(0);
    let found = shared
        .inner
        .lock()
        .expect("lock")
        .tickets
        .iter()
        .find(|t| t.id == id)
        .map(|t| t.json.clone());
    let r = match found {
        Some(t) => json_resp(200, json!({"ticket": t}).to_string()),
        None => json_resp(
            404,
            r#"{"error":"RecordNotFound","description":"Not found"}"#.into(),
        ),
    };
    done(&shared, "GET", &path, r, extra, None)
}

fn set_status(shared: &Shared, id: u64, status: &str) -> Result<(), String> {
    if !["new", "open", "pending", "hold", "solved", "closed"].contains(&status) {
        return Err(format!("Status: {status} is not valid"));
    }
    let now = shared.clock.now();
    let (ticket, previous) = {
        let mut inner = shared.inner.lock().map_err(|e| e.to_string())?;
        let t = inner
            .tickets
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| format!("ticket {id} not found"))?;
        let previous = t.json["status"].as_str().unwrap_or("new").to_string();
        if previous == "closed" {
            return Err("Status: closed prevents ticket update".into());
        }
        t.json["status"] = json!(status);
        t.json["updated_at"] = json!(ticket_events::rfc3339(now));
        (t.json.clone(), previous)
    };
    if previous != status {
        if let Some(target) = shared.events.target() {
            let event =
                ticket_events::zendesk_status_changed(&target.secret, &ticket, &previous, now);
            shared.events.emit(event);
        }
    }
    Ok(())
}

/// `POST /_fake/tickets/{id}/status` with `{"status":"solved"}`: the sandbox's way to act as
/// an agent. Not a Zendesk route.
async fn admin_status(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Response {
    let status = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_owned))
        .unwrap_or_default();
    match set_status(&shared, id, &status) {
        Ok(()) => json_resp(200, json!({"id": id, "status": status}).to_string()),
        Err(e) => record_invalid("status", &e),
    }
}

/// `GET /api/v2/tickets/show_many.json?ids=1,2,3`: the tickets that exist, in the order asked;
/// more than 100 ids is refused.
async fn show_many(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = "/api/v2/tickets/show_many";
    let extra = match read_gate(&shared, &headers, path).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ids: Vec<u64> = q
        .get("ids")
        .map(|s| s.split(',').filter_map(|i| i.trim().parse().ok()).collect())
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > 100 {
        let r = json_resp(
            400,
            json!({"error": "InvalidPaginationParameter", "description": "ids must list 1 to 100 ticket ids"}).to_string(),
        );
        return done(&shared, "GET", path, r, extra, None);
    }
    let tickets: Vec<Value> = {
        let inner = shared.inner.lock().expect("lock");
        ids.iter()
            .filter_map(|id| inner.tickets.iter().find(|t| t.id == *id))
            .map(|t| t.json.clone())
            .collect()
    };
    tickets_reply(&shared, path, tickets, extra)
}

/// A read's gate (auth, limit, faults) and its scripted delay; `Ok`: the headers to add.
async fn read_gate(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
) -> Result<HeaderMap, Response> {
    let (_f, delay, extra) = gate(shared, headers, Route::Lookup, "GET", path)?;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(extra)
}

/// A list of tickets in the offset-pagination shape (one page).
fn tickets_reply(shared: &Shared, path: &str, tickets: Vec<Value>, extra: HeaderMap) -> Response {
    let count = tickets.len();
    let r = json_resp(
        200,
        json!({"tickets": tickets, "next_page": null, "previous_page": null, "count": count})
            .to_string(),
    );
    done(shared, "GET", path, r, extra, None)
}
