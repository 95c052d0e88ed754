//! The fake Qualtrics' closing-the-loop routes (reference `close-the-loop.md` §2.1–2.3), behind
//! the same gate as the others (exact `X-API-TOKEN`, JSON bodies, injected 429/500):
//!
//! * `PUT /API/v3/responses/{responseId}`: `surveyId` (the response's survey),
//!   `resetRecordedDate`, `embeddedData` of string values only; unknown keys → 400, unknown
//!   response → 404; the raw body is recorded ([`FakeQualtrics::response_updates`]).
//! * `POST /API/v3/directories/{POOL}/mailinglists/{CG}/contacts`: an upsert by email (as with
//!   directory de-duplication on) → `CID_…` + `contactLookupId` `CGC_…`.
//! * `POST /API/v3/directories/{POOL}/transactions` (§2.3.4): an object of client-chosen
//!   labels → `{contactId: CID_ (a member of mailingListId), mailingListId, transactionDate
//!   "yyyy-mm-dd hh:mm:ss", data: {string: string}}` (1–[`MAX_TRANSACTIONS_PER_CALL`] of
//!   them) → `createdTransactions.{label}.id` `CTR_…`;
//! * `POST /API/v3/directories/{POOL}/transactionbatches`: `{transactionIds: [CTR_ of this
//!   directory], creationDate: RFC 3339}` → `id` `BT_…`;
//! * `POST /API/v3/directories/{POOL}/transactionbatches/{BT}/transactions`:
//!   `{transactionIds: [CTR_ of this directory]}` → `meta` only. A transaction added twice is
//!   kept twice ([`FakeQualtrics::batch_members`]), so a test sees a double add;
//! * `POST /API/v3/distributions`: `message`, `recipients` either `{mailingListId, contactId}`
//!   (a membership of that list) or `{transactionBatchId}` (a batch with at least one
//!   transaction), `header`, `surveyLink`, `sendDate` → `EMD_…`;
//!   [`FakeQualtrics::hang_next_distributions`] creates the distribution and then never answers
//!   (a lost answer: the client cannot know it was sent), and
//!   [`FakeQualtrics::hang_next_batch_calls`] does the same to batch creates and adds.
//! * `POST /inbound-event/v1/event/JSON/triggers?contextId&userId&brandId&triggerId` → 202.
//!
//! Every call to these routes is also recorded with its time ([`FakeQualtrics::loop_calls`]),
//! so tests can check pacing under 429s.
//!
//! `GET /_fake/received` (not a Qualtrics route, no token: the sandbox's window on the fake)
//! lists what these routes accepted — write-backs, contacts as `(list, CGC_…)`, distributions,
//! JSON Events — with no address in it.

use super::{envelope_error, gate, ok, set_last_status, FakeQualtrics, Inner, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
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

/// Most transactions one create call takes. Qualtrics documents no figure **[UNCONFIRMED]**:
/// the fake needs a bound, and the sender's chunk stays well under it.
pub const MAX_TRANSACTIONS_PER_CALL: usize = 1000;

/// One created distribution.
#[derive(Debug, Clone)]
pub struct FakeDistribution {
    pub id: String,
    pub body: Value,
    /// The email of the membership it went to (tests compare it; never logged); empty for a
    /// transaction-batch distribution.
    pub email: String,
    /// A transaction-batch distribution: the email of every transaction in the batch when it
    /// was sent, a person twice if their transaction was added twice.
    pub batch_emails: Vec<String>,
    pub at: Instant,
}

impl FakeDistribution {
    /// Everyone it went to, once per email sent.
    pub fn recipients(&self) -> Vec<&str> {
        if self.batch_emails.is_empty() {
            vec![self.email.as_str()]
        } else {
            self.batch_emails.iter().map(String::as_str).collect()
        }
    }
}

/// One transaction: its directory, list, contact (`CID_…`) and `data`.
#[derive(Debug, Clone)]
pub struct FakeTransaction {
    pub directory: String,
    pub mailing_list: String,
    pub contact: String,
    pub data: Map<String, Value>,
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
    transactions: HashMap<String, FakeTransaction>,
    /// `BT_… → (directory, transactions in the order added)`.
    batches: HashMap<String, (String, Vec<String>)>,
    batch_order: Vec<String>,
    hang_batch_calls: u32,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/API/v3/responses/{rid}", put(update_response))
        .route(
            "/API/v3/directories/{pool}/mailinglists/{cg}/contacts",
            post(create_contact),
        )
        .route("/API/v3/distributions", post(create_distribution))
        .route(
            "/API/v3/directories/{pool}/transactions",
            post(create_transactions),
        )
        .route(
            "/API/v3/directories/{pool}/transactionbatches",
            post(create_batch),
        )
        .route(
            "/API/v3/directories/{pool}/transactionbatches/{bt}/transactions",
            post(add_to_batch),
        )
        .route("/inbound-event/v1/event/JSON/triggers", post(json_event))
        .route("/_fake/received", get(received))
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

    /// The next `n` transaction-batch creates or adds take effect, and then their answer
    /// never comes.
    pub fn hang_next_batch_calls(&self, n: u32) {
        self.with(|i| i.close_loop.hang_batch_calls = n);
    }

    /// Transaction batches in creation order: `(BT_…, the email of each transaction added,
    /// duplicates kept)`.
    pub fn batch_members(&self) -> Vec<(String, Vec<String>)> {
        self.with(|i| {
            let l = &i.close_loop;
            l.batch_order
                .iter()
                .map(|b| {
                    let txs = l.batches.get(b).map(|(_, t)| t.as_slice()).unwrap_or(&[]);
                    (b.clone(), txs.iter().map(|t| email_of_tx(l, t)).collect())
                })
                .collect()
        })
    }

    /// Every transaction created, by `CTR_…`.
    pub fn transactions(&self) -> HashMap<String, FakeTransaction> {
        self.with(|i| i.close_loop.transactions.clone())
    }
}

/// The email of a transaction's contact ("" when unknown).
fn email_of_tx(l: &LoopState, tx: &str) -> String {
    l.transactions
        .get(tx)
        .and_then(|t| {
            l.contacts
                .iter()
                .find(|((list, _), (cid, _))| *list == t.mailing_list && *cid == t.contact)
                .map(|((_, e), _)| e.clone())
        })
        .unwrap_or_default()
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
            match body["recipients"].get("transactionBatchId") {
                Some(_) => shape(&body["recipients"], &["transactionBatchId"], &[]),
                None => shape(
                    &body["recipients"],
                    &["mailingListId", "contactId"],
                    &["mailingListId", "contactId"],
                ),
            },
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
        let batch = str_of(&body["recipients"], "transactionBatchId").to_owned();
        let mut batch_emails = Vec::new();
        if !batch.is_empty() {
            let l = &i.close_loop;
            match l.batches.get(&batch) {
                Some((_, txs)) if !txs.is_empty() => {
                    batch_emails = txs.iter().map(|t| email_of_tx(l, t)).collect();
                }
                Some(_) => {
                    return refuse(
                        &mut i,
                        StatusCode::BAD_REQUEST,
                        "transaction batch is empty",
                    )
                }
                None => {
                    return refuse(&mut i, StatusCode::NOT_FOUND, "Transaction batch not found")
                }
            }
        }
        let list = str_of(&body["recipients"], "mailingListId").to_owned();
        let member = str_of(&body["recipients"], "contactId").to_owned();
        let email = if !batch.is_empty() {
            Some(String::new())
        } else {
            i.close_loop
                .contacts
                .iter()
                .find(|((l, _), (_, cgc))| *l == list && *cgc == member)
                .map(|((_, e), _)| e.clone())
        };
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
            batch_emails,
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

/// `yyyy-mm-dd hh:mm:ss`, Qualtrics' transaction date format.
fn is_transaction_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(k, c)| match k {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// `transactionIds`: 1–[`MAX_TRANSACTIONS_PER_CALL`] known transactions of `pool`.
fn transaction_ids(l: &LoopState, pool: &str, body: &Value) -> Result<Vec<String>, String> {
    let ids = body
        .get("transactionIds")
        .and_then(Value::as_array)
        .ok_or("transactionIds must be an array")?;
    if ids.is_empty() || ids.len() > MAX_TRANSACTIONS_PER_CALL {
        return Err(format!(
            "transactionIds must hold 1-{MAX_TRANSACTIONS_PER_CALL} ids"
        ));
    }
    ids.iter()
        .map(|v| {
            v.as_str()
                .filter(|t| l.transactions.get(*t).is_some_and(|x| x.directory == pool))
                .map(str::to_owned)
                .ok_or_else(|| "unknown transaction id".to_string())
        })
        .collect()
}

/// Counts down a hang fault; `true` when this call's answer is to be lost.
fn take_hang(n: &mut u32) -> bool {
    let hang = *n > 0;
    *n = n.saturating_sub(1);
    hang
}

async fn create_transactions(
    State(inner): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/directories/{pool}/transactions");
    // Transaction data may be personal: not kept in the generic call record.
    if let Some(r) = enter(&mut i, "POST", path, &headers, None) {
        return r;
    }
    let Some(Value::Object(txs)) = body else {
        return refuse(
            &mut i,
            StatusCode::BAD_REQUEST,
            "Body must be a JSON object",
        );
    };
    if !pool.starts_with("POOL_") || txs.is_empty() || txs.len() > MAX_TRANSACTIONS_PER_CALL {
        return refuse(
            &mut i,
            StatusCode::BAD_REQUEST,
            "Invalid directory or number of transactions",
        );
    }
    let mut checked = Vec::new();
    for (label, t) in &txs {
        let allowed = ["contactId", "mailingListId", "transactionDate", "data"];
        if let Err(why) = shape(t, &allowed, &allowed) {
            return refuse(&mut i, StatusCode::BAD_REQUEST, &format!("{label}: {why}"));
        }
        let (cid, list) = (str_of(t, "contactId"), str_of(t, "mailingListId"));
        let member = i
            .close_loop
            .contacts
            .iter()
            .any(|((l, _), (c, _))| l == list && c == cid);
        let data = t["data"]
            .as_object()
            .filter(|d| d.values().all(Value::is_string));
        let Some(data) =
            data.filter(|_| member && is_transaction_date(str_of(t, "transactionDate")))
        else {
            return refuse(
                &mut i,
                StatusCode::BAD_REQUEST,
                &format!("{label}: contactId must be a member of mailingListId, transactionDate yyyy-mm-dd hh:mm:ss, data strings"),
            );
        };
        checked.push((
            label.clone(),
            FakeTransaction {
                directory: pool.clone(),
                mailing_list: list.to_owned(),
                contact: cid.to_owned(),
                data: data.clone(),
            },
        ));
    }
    let mut created = Map::new();
    for (label, t) in checked {
        let id = new_id(&mut i, "CTR_");
        i.close_loop.transactions.insert(id.clone(), t);
        created.insert(label, json!({"id": id}));
    }
    ok(json!({"createdTransactions": created}))
}

async fn create_batch(
    State(inner): State<Shared>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let hang = {
        let mut i = inner.lock().expect("fake lock");
        let path = format!("/API/v3/directories/{pool}/transactionbatches");
        if let Some(r) = enter(&mut i, "POST", path, &headers, body.clone()) {
            return r;
        }
        let Some(body) = body else {
            return refuse(&mut i, StatusCode::BAD_REQUEST, "Body is not JSON");
        };
        let fields = ["transactionIds", "creationDate"];
        let ids = shape(&body, &fields, &fields)
            .and_then(|()| transaction_ids(&i.close_loop, &pool, &body));
        let date_ok = time::OffsetDateTime::parse(
            str_of(&body, "creationDate"),
            &time::format_description::well_known::Rfc3339,
        )
        .is_ok();
        let ids = match ids {
            Ok(ids) if date_ok => ids,
            Ok(_) => {
                return refuse(
                    &mut i,
                    StatusCode::BAD_REQUEST,
                    "creationDate must be RFC 3339",
                )
            }
            Err(why) => return refuse(&mut i, StatusCode::BAD_REQUEST, &why),
        };
        let id = new_id(&mut i, "BT_");
        i.close_loop.batches.insert(id.clone(), (pool, ids));
        i.close_loop.batch_order.push(id.clone());
        (!take_hang(&mut i.close_loop.hang_batch_calls)).then_some(id)
    };
    match hang {
        Some(id) => ok(json!({"id": id})),
        None => std::future::pending().await,
    }
}

async fn add_to_batch(
    State(inner): State<Shared>,
    Path((pool, bt)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let answer = {
        let mut i = inner.lock().expect("fake lock");
        let path = format!("/API/v3/directories/{pool}/transactionbatches/{bt}/transactions");
        if let Some(r) = enter(&mut i, "POST", path, &headers, body.clone()) {
            return r;
        }
        let Some(body) = body else {
            return refuse(&mut i, StatusCode::BAD_REQUEST, "Body is not JSON");
        };
        let ids = shape(&body, &["transactionIds"], &["transactionIds"])
            .and_then(|()| transaction_ids(&i.close_loop, &pool, &body));
        let ids = match ids {
            Ok(ids) => ids,
            Err(why) => return refuse(&mut i, StatusCode::BAD_REQUEST, &why),
        };
        match i.close_loop.batches.get_mut(&bt) {
            Some((dir, txs)) if *dir == pool => txs.extend(ids),
            _ => return refuse(&mut i, StatusCode::NOT_FOUND, "Transaction batch not found"),
        }
        !take_hang(&mut i.close_loop.hang_batch_calls)
    };
    if !answer {
        return std::future::pending().await;
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"meta":{"httpStatus":"200 - OK","requestId": uuid::Uuid::new_v4().to_string()}})
            .to_string(),
    )
        .into_response()
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

/// `GET /_fake/received`: what the loop routes accepted, addresses left out (a contact is its
/// list and ids; a distribution its survey, recipients and, for a transaction batch, the
/// contact ids of its transactions).
async fn received(State(inner): State<Shared>) -> Response {
    let i = inner.lock().expect("fake lock");
    let l = &i.close_loop;
    let updates: Vec<Value> = l
        .updates
        .iter()
        .map(|u| {
            let body: Value = serde_json::from_str(&u.body).unwrap_or(Value::Null);
            json!({"responseId": u.response_id, "surveyId": body["surveyId"],
                   "embeddedData": body["embeddedData"]})
        })
        .collect();
    let contacts: Vec<Value> = l
        .contact_bodies
        .iter()
        .map(|(list, raw)| {
            let body: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            let email = str_of(&body, "email").to_ascii_lowercase();
            let ids = l.contacts.get(&(list.clone(), email));
            json!({"mailingListId": list, "contactId": ids.map(|(cid, _)| cid),
                   "contactLookupId": ids.map(|(_, cgc)| cgc)})
        })
        .collect();
    let distributions: Vec<Value> = l
        .distributions
        .iter()
        .map(|d| {
            // A transaction-batch distribution reaches the contacts of the batch's transactions.
            let batch_contacts: Vec<&str> = d.body["recipients"]["transactionBatchId"]
                .as_str()
                .and_then(|bt| l.batches.get(bt))
                .map(|(_, txs)| {
                    txs.iter()
                        .filter_map(|t| l.transactions.get(t))
                        .map(|t| t.contact.as_str())
                        .collect()
                })
                .unwrap_or_default();
            json!({"id": d.id, "surveyId": d.body["surveyLink"]["surveyId"],
                   "recipients": d.body["recipients"], "batchContacts": batch_contacts})
        })
        .collect();
    let events: Vec<Value> = l.json_events.iter().map(|e| e.body.clone()).collect();
    ok(json!({"responseUpdates": updates, "contacts": contacts,
              "distributions": distributions, "jsonEvents": events}))
}
