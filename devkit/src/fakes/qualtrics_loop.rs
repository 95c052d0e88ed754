//! The fake Qualtrics' closing-the-loop routes (reference `close-the-loop.md` §2.1–2.3), behind
//! the same gate as the others (exact `X-API-TOKEN`, JSON bodies, injected 429/500):
//!
//! * `PUT /API/v3/responses/{responseId}`: `surveyId` (the response's survey),
//!   `resetRecordedDate`, `embeddedData` of string values only; unknown keys → 400, unknown
//!   response → 404; the raw body is recorded ([`FakeQualtrics::response_updates`]).
//! * `POST /API/v3/directories/{POOL}/mailinglists/{CG}/contacts`: an upsert by email (as with
//!   directory de-duplication on) → `CID_…` + `contactLookupId` `CGC_…`.
//! * `POST /API/v3/distributions`: `message`, `recipients {mailingListId, contactId}` (a
//!   membership of that list), `header`, `surveyLink`, `sendDate` → `EMD_…`;
//!   [`FakeQualtrics::hang_next_distributions`] creates the distribution and then never answers
//!   (a lost answer: the client cannot know it was sent).
//! * `POST /inbound-event/v1/event/JSON/triggers?contextId&userId&brandId&triggerId` → 202.
//!
//! Every call to these routes is also recorded with its time ([`FakeQualtrics::loop_calls`]),
//! so tests can check pacing under 429s.

use super::{envelope_error, gate, ok, set_last_status, FakeQualtrics, Inner, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Instant;

/// One accepted response update.
#[derive(Debug, Clone)]
pub struct ResponseUpdate {
    pub response_id: String,
    /// The request body exactly as received.
    pub body: String,
    pub at: Instant,
}

/// One created distribution.
#[derive(Debug, Clone)]
pub struct FakeDistribution {
    pub id: String,
    pub body: Value,
    /// The email of the membership it went to (tests compare it; never logged).
    pub email: String,
    pub at: Instant,
}

/// One accepted JSON Event.
#[derive(Debug, Clone)]
pub struct FakeJsonEvent {
    pub query: HashMap<String, String>,
    pub body: Value,
}

/// Any call to these routes, with its answer's status.
#[derive(Debug, Clone)]
pub struct LoopCall {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct LoopState {
    /// `values` added to a response when it is read (e.g. `recipientEmail`).
    recipients: HashMap<String, Map<String, Value>>,
    updates: Vec<ResponseUpdate>,
    /// `(list, email) → (CID, CGC)`.
    contacts: HashMap<(String, String), (String, String)>,
    next_id: u64,
    distributions: Vec<FakeDistribution>,
    json_events: Vec<FakeJsonEvent>,
    calls: Vec<LoopCall>,
    /// Accepted contact upserts: `(mailing list, body exactly as received)`.
    contact_bodies: Vec<(String, String)>,
    hang_distributions: u32,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/API/v3/responses/{rid}", put(update_response))
        .route(
            "/API/v3/directories/{pool}/mailinglists/{cg}/contacts",
            post(create_contact),
        )
        .route("/API/v3/distributions", post(create_distribution))
        .route("/inbound-event/v1/event/JSON/triggers", post(json_event))
}

/// Adds the recipient fields set with [`FakeQualtrics::set_recipient`] to a served response.
pub(super) fn decorate(inner: &Inner, rid: &str, response: &mut Value) {
    if let (Some(extra), Some(values)) = (
        inner.close_loop.recipients.get(rid),
        response.get_mut("values").and_then(Value::as_object_mut),
    ) {
        values.extend(extra.clone());
    }
}

impl FakeQualtrics {
    /// The response's `recipientEmail` / names / `externalDataReference`, as an email
    /// distribution's response carries them. The email is registered as a canary: it must
    /// never reach a log.
    pub fn set_recipient(&self, response_id: &str, email: &str, first: &str, last: &str) {
        crate::canary::register(email);
        let mut m = Map::new();
        m.insert("recipientEmail".into(), email.into());
        m.insert("recipientFirstName".into(), first.into());
        m.insert("recipientLastName".into(), last.into());
        self.with(|i| {
            i.close_loop.recipients.insert(response_id.into(), m);
        })
    }

    pub fn response_updates(&self) -> Vec<ResponseUpdate> {
        self.with(|i| i.close_loop.updates.clone())
    }

    pub fn distributions(&self) -> Vec<FakeDistribution> {
        self.with(|i| i.close_loop.distributions.clone())
    }

    pub fn json_events(&self) -> Vec<FakeJsonEvent> {
        self.with(|i| i.close_loop.json_events.clone())
    }

    /// Accepted mailing-list contact upserts: `(list, body as received)`.
    pub fn contact_upserts(&self) -> Vec<(String, String)> {
        self.with(|i| i.close_loop.contact_bodies.clone())
    }

    pub fn loop_calls(&self) -> Vec<LoopCall> {
        self.with(|i| i.close_loop.calls.clone())
    }

    /// The next `n` distributions are created, and then their answer never comes.
    pub fn hang_next_distributions(&self, n: u32) {
        self.with(|i| i.close_loop.hang_distributions = n);
    }
}

/// The shared gate, plus a timed record; `Some` is the gate's error answer.
fn enter(
    i: &mut Inner,
    method: &'static str,
    path: String,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Option<Response> {
    let refused = gate(i, method, path.clone(), headers, body);
    let status = refused.as_ref().map_or(200, |r| r.status().as_u16());
    i.close_loop.calls.push(LoopCall {
        method,
        path,
        status,
        at: Instant::now(),
    });
    refused
}

fn refuse(i: &mut Inner, status: StatusCode, message: &str) -> Response {
    set_last_status(i, status.as_u16());
    if let Some(c) = i.close_loop.calls.last_mut() {
        c.status = status.as_u16();
    }
    envelope_error(status, message)
}

/// `Err(reason)` when `v` is not an object with only `allowed` keys and all `required` ones.
fn shape(v: &Value, allowed: &[&str], required: &[&str]) -> Result<(), String> {
    let Some(o) = v.as_object() else {
        return Err("expected a JSON object".into());
    };
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown field {k}"));
    }
    if let Some(k) = required.iter().find(|k| !o.contains_key(**k)) {
        return Err(format!("missing field {k}"));
    }
    Ok(())
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn new_id(i: &mut Inner, prefix: &str) -> String {
    i.close_loop.next_id += 1;
    format!("{prefix}{:015}", i.close_loop.next_id)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn update_response(
    State(inner): State<Shared>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/responses/{rid}");
    if let Some(r) = enter(&mut i, "PUT", path, &headers, body.clone()) {
        return r;
    }
    if !is_json(&headers) {
        return refuse(
            &mut i,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Request body must be application/json",
        );
    }
    let Some(body) = body else {
        return refuse(&mut i, StatusCode::BAD_REQUEST, "Body is not JSON");
    };
    if let Err(why) = shape(
        &body,
        &["surveyId", "resetRecordedDate", "embeddedData"],
        &["surveyId", "embeddedData"],
    ) {
        return refuse(&mut i, StatusCode::BAD_REQUEST, &why);
    }
    let strings = body["embeddedData"]
        .as_object()
        .is_some_and(|m| m.values().all(Value::is_string));
    let flag = body.get("resetRecordedDate").is_none_or(Value::is_boolean);
    if !strings || !flag {
        return refuse(
            &mut i,
            StatusCode::BAD_REQUEST,
            "embeddedData values must be strings; resetRecordedDate a boolean",
        );
    }
    let sid = str_of(&body, "surveyId").to_owned();
    let known = i.surveys.get(&sid).is_some_and(|s| {
        s.log.iter().any(|r| r.id == rid)
            || rid
                .strip_prefix("R_syn")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|q| q >= 1 && q <= s.synthetic)
    });
    if !known {
        return refuse(&mut i, StatusCode::NOT_FOUND, "Response not found");
    }
    i.close_loop.updates.push(ResponseUpdate {
        response_id: rid,
        body: String::from_utf8_lossy(&raw).into_owned(),
        at: Instant::now(),
    });
    let meta =
        json!({"meta":{"httpStatus":"200 - OK","requestId": uuid::Uuid::new_v4().to_string()}});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        meta.to_string(),
    )
        .into_response()
}

async fn create_contact(
    State(inner): State<Shared>,
    Path((pool, cg)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/directories/{pool}/mailinglists/{cg}/contacts");
    // The contact is personal data: it is not kept in the generic call record.
    if let Some(r) = enter(&mut i, "POST", path, &headers, None) {
        return r;
    }
    let Some(body) = body else {
        return refuse(&mut i, StatusCode::BAD_REQUEST, "Body is not JSON");
    };
    let allowed = [
        "firstName",
        "lastName",
        "email",
        "phone",
        "extRef",
        "embeddedData",
        "language",
        "unsubscribed",
    ];
    if let Err(why) = shape(&body, &allowed, &["email"]) {
        return refuse(&mut i, StatusCode::BAD_REQUEST, &why);
    }
    let email = str_of(&body, "email").to_ascii_lowercase();
    if !pool.starts_with("POOL_") || !cg.starts_with("CG_") || !email.contains('@') {
        return refuse(
            &mut i,
            StatusCode::BAD_REQUEST,
            "Invalid directory, mailing list or email",
        );
    }
    i.close_loop
        .contact_bodies
        .push((cg.clone(), String::from_utf8_lossy(&raw).into_owned()));
    let key = (cg, email);
    let (cid, cgc) = match i.close_loop.contacts.get(&key) {
        Some(ids) => ids.clone(),
        None => {
            let ids = (new_id(&mut i, "CID_"), new_id(&mut i, "CGC_"));
            i.close_loop.contacts.insert(key, ids.clone());
            ids
        }
    };
    ok(json!({"id": cid, "contactLookupId": cgc}))
}

async fn create_distribution(
    State(inner): State<Shared>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let hang = {
        let mut i = inner.lock().expect("fake lock");
        if let Some(r) = enter(
            &mut i,
            "POST",
            "/API/v3/distributions".into(),
            &headers,
            body.clone(),
        ) {
            return r;
        }
        let Some(body) = body else {
            return refuse(&mut i, StatusCode::BAD_REQUEST, "Body is not JSON");
        };
        let checks = [
            shape(
                &body,
                &[
                    "message",
                    "recipients",
                    "header",
                    "surveyLink",
                    "sendDate",
                    "embeddedData",
                ],
                &["message", "recipients", "header", "surveyLink", "sendDate"],
            ),
            shape(
                &body["message"],
                &["libraryId", "messageId", "messageText"],
                &["libraryId", "messageId"],
            ),
            shape(
                &body["recipients"],
                &["mailingListId", "contactId", "transactionBatchId"],
                &["mailingListId", "contactId"],
            ),
            shape(
                &body["header"],
                &["fromEmail", "fromName", "replyToEmail", "subject"],
                &["fromEmail", "subject"],
            ),
            shape(
                &body["surveyLink"],
                &["surveyId", "expirationDate", "type"],
                &["surveyId"],
            ),
        ];
        if let Some(Err(why)) = checks.into_iter().find(Result::is_err) {
            return refuse(&mut i, StatusCode::BAD_REQUEST, &why);
        }
        let list = str_of(&body["recipients"], "mailingListId").to_owned();
        let member = str_of(&body["recipients"], "contactId").to_owned();
        let email = i
            .close_loop
            .contacts
            .iter()
            .find(|((l, _), (_, cgc))| *l == list && *cgc == member)
            .map(|((_, e), _)| e.clone());
        let Some(email) = email else {
            return refuse(
                &mut i,
                StatusCode::BAD_REQUEST,
                "contactId is not a member of mailingListId",
            );
        };
        let id = new_id(&mut i, "EMD_");
        i.close_loop.distributions.push(FakeDistribution {
            id: id.clone(),
            body,
            email,
            at: Instant::now(),
        });
        if i.close_loop.hang_distributions > 0 {
            i.close_loop.hang_distributions -= 1;
            None
        } else {
            Some(id)
        }
    };
    match hang {
        Some(id) => ok(json!({"id": id})),
        // Created, and the answer never comes.
        None => std::future::pending().await,
    }
}

async fn json_event(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let mut i = inner.lock().expect("fake lock");
    let path = "/inbound-event/v1/event/JSON/triggers".to_string();
    if let Some(r) = enter(&mut i, "POST", path, &headers, body.clone()) {
        return r;
    }
    let params = ["contextId", "userId", "brandId", "triggerId"];
    let Some(body) = body.filter(|_| params.iter().all(|p| query.contains_key(*p))) else {
        return refuse(
            &mut i,
            StatusCode::BAD_REQUEST,
            "JSON body and contextId, userId, brandId, triggerId are required",
        );
    };
    if raw.len() > 100 * 1024 {
        return refuse(&mut i, StatusCode::BAD_REQUEST, "Payload exceeds 100 KB");
    }
    i.close_loop.json_events.push(FakeJsonEvent { query, body });
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        json!({"meta":{"httpStatus":"202 - Accepted","requestId": uuid::Uuid::new_v4().to_string()}}).to_string(),
    )
        .into_response()
}
