//! `TicketEvents` end to end: signed ticket events POSTed through devkit's front door (function
//! key in `?code=`, `{system}` route value) to the real release binary, on Azurite; tickets
//! created by the real `TicketCreator` against the fake ServiceNow and Zendesk, so the ledger
//! entries the events are matched against are the ones production writes.

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::servicenow::{self, FakeServiceNow};
use devkit::fakes::zendesk::{self, FakeZendesk};
use devkit::publisher::{Publisher, Reply};
use hmac::{Hmac, Mac};
use qualtrics_bridge::messages::{LoopRequest, LoopSource, TicketState};
use qualtrics_bridge::tickets::ledger::{Claim, Entry, Ledger, State, TicketRef};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const LOOP: &str = "loop-requests";
const ZENDESK_SECRET: &str = "zd-signing-secret-5b7e0c1a";
/// The previous Zendesk secret is Zendesk's published test secret, so the reference's vectors
/// are sent byte for byte.
const ZENDESK_TEST_SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
const SERVICENOW_SECRET: &str = "bridge-servicenow-test-secret";
const VECTOR_1_BODY: &[u8] = include_bytes!("../fixtures/zendesk/group_membership_created.json");
const VECTOR_1_SIGNATURE: &str = "10IqYzYTLHRftNsNE+im0DeOM6/JactIRuy0XCHJ9B8=";
const VECTOR_2_BODY: &str = r#"{"ticket_id":"35436","external_id":"qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm","status":"Solved","updated_at":"2021-03-25T05:09:20Z"}"#;
const VECTOR_2_SIGNATURE: &str = "f/5UHBOoRDSK7Xx0fZ00XODkKwbS/o85k91eVfokiEM=";
const JSON: &str = "application/json";
const ZD_SIG: &str = "x-zendesk-webhook-signature";
const ZD_TS: &str = "x-zendesk-webhook-signature-timestamp";
const SN_SIG: &str = "x-bridge-signature";
const SN_TS: &str = "x-bridge-timestamp";
const SV_ZD: &str = "SV_loopZendesk01";
const SV_SN: &str = "SV_loopServNow01";
const QUALTRICS_TOKEN: &str = "q-test-token";

/// base64(HMAC-SHA256(secret, timestamp + body)), computed with the `hmac` crate rather than
/// the handler's own code.
fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn now_ts() -> String {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .expect("format")
}

fn ts_offset(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .replace_nanosecond(0)
        .expect("whole seconds")
        .format(&Rfc3339)
        .expect("format")
}

/// A Zendesk events-mode `ticket.status_changed` envelope.
fn zendesk_event(event_id: &str, ticket: &str, external_id: Value, status: &str) -> String {
    json!({
        "type": "zen:event-type:ticket.status_changed",
        "account_id": 12514403,
        "id": event_id,
        "time": "2026-12-07T04:30:01Z",
        "zendesk_event_version": "2022-11-06",
        "subject": format!("zen:ticket:{ticket}"),
        "detail": {
            "actor_id": "1", "assignee_id": "2", "brand_id": "3",
            "created_at": "2026-12-07T04:00:00Z", "description": "respondent-text-9d1f",
            "external_id": external_id, "id": ticket, "priority": "HIGH",
            "requester_id": "4", "status": status, "subject": "Detractor",
            "tags": ["qualtrics"], "type": "INCIDENT",
            "updated_at": "2026-12-07T05:30:00+01:00", "via": {"channel": "api"}
        },
        "event": {"current": status, "previous": "OPEN"}
    })
    .to_string()
}

/// The body the shipped ServiceNow business rule sends.
fn servicenow_event(sys_id: &str, number: &str, state: &str, correlation: &str) -> String {
    json!({
        "v": 1, "system": "servicenow", "sys_id": sys_id, "number": number, "state": state,
        "previous_state": "2", "close_code": "Solved (Permanently)",
        "correlation_id": correlation, "sys_updated_on": "2026-12-07 04:30:00",
        "sys_mod_count": "7"
    })
    .to_string()
}

fn events_url(stack: &Stack, system: &str) -> String {
    stack
        .host
        .function_url("TicketEvents")
        .expect("TicketEvents function")
        .replace("{system}", system)
}

/// One request of a table: content type (or none), headers, body bytes.
struct Req {
    system: &'static str,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// A Zendesk request signed with `secret` at `ts` over exactly `body`.
fn zd(secret: &str, ts: &str, body: &[u8]) -> Req {
    Req {
        system: "zendesk",
        content_type: Some(JSON),
        headers: vec![(ZD_SIG, sign(secret, ts, body)), (ZD_TS, ts.to_string())],
        body: body.to_vec(),
    }
}

/// A ServiceNow request signed with `secret` at `ts` over exactly `body`.
fn sn(secret: &str, ts: &str, body: &[u8]) -> Req {
    Req {
        system: "servicenow",
        content_type: Some(JSON),
        headers: vec![(SN_SIG, sign(secret, ts, body)), (SN_TS, ts.to_string())],
        body: body.to_vec(),
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.retain(|(k, _)| *k != name);
        self.headers.push((name, value.to_string()));
        self
    }

    fn without(mut self, name: &'static str) -> Self {
        self.headers.retain(|(k, _)| *k != name);
        self
    }

    fn also(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn content_type(mut self, ct: Option<&'static str>) -> Self {
        self.content_type = ct;
        self
    }

    fn system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    async fn send(&self, stack: &Stack) -> Reply {
        let p = Publisher::new(events_url(stack, self.system));
        let h: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.post(self.content_type, &h, self.body.clone())
            .await
            .expect("the front door answers")
    }
}

fn settings(b: StackBuilder) -> StackBuilder {
    b.setting("ZENDESK_WEBHOOK_SECRET", ZENDESK_SECRET)
        .setting("ZENDESK_WEBHOOK_SECRET_PREVIOUS", ZENDESK_TEST_SECRET)
        .setting("SERVICENOW_WEBHOOK_SECRET", SERVICENOW_SECRET)
        // The tests read what TicketEvents left on loop-requests: nothing may consume it.
        .without_function("LoopCloser")
}

fn ledger_of(stack: &Stack) -> Ledger {
    let storage = common::storage_of(&stack.azurite);
    Ledger::new(
        storage.blob_container("bridge-state").expect("container"),
        "bridge-state",
    )
}

/// Writes a ledger entry through the real ledger API.
async fn put_entry(
    stack: &Stack,
    survey: &str,
    response: &str,
    state: State,
    ticket: Option<TicketRef>,
) {
    let entry = Entry {
        v: 1,
        survey_id: survey.into(),
        response_id: response.into(),
        state,
        system: ticket.as_ref().map(|t| t.system.clone()),
        claim: Claim {
            message_id: None,
            dequeue_count: 1,
            invocation_id: "test".into(),
            at: now_ts(),
        },
        ticket,
        reason: None,
        retryable: false,
        attempts: 1,
        updated_at: now_ts(),
    };
    let created = ledger_of(stack)
        .create(&Ledger::blob_name(survey, response), &entry)
        .await
        .expect("ledger write");
    assert!(created.is_some(), "entry {survey}/{response} was new");
}

fn zendesk_ticket(id: &str) -> Option<TicketRef> {
    Some(TicketRef {
        system: "zendesk".into(),
        id: id.into(),
        number: Some(id.into()),
        found_by_lookup: false,
    })
}

fn error_of(r: &Reply) -> Option<String> {
    let v: Value = serde_json::from_str(&r.body).ok()?;
    v.get("error")?.as_str().map(str::to_owned)
}

const BAD_SIGNATURE: &str = "bad signature";
const BAD_SHAPE: &str = "body is not a JSON object of the expected shape";
const BAD_CORRELATION: &str = "correlation is not qualtrics:{surveyId}:{responseId}";
const UNPARSEABLE: &str = "timestamp is neither RFC 3339 nor yyyy-MM-dd HH:mm:ss UTC";
const STALE: &str = "timestamp is older than the freshness window";
const MEDIA: &str = "unsupported media type (application/json expected)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_with_a_reason_and_nothing_is_queued() {
    let stack = settings(StackBuilder::default()).start().await;
    let ts = now_ts();
    let corr = json!("qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm");
    let good = zendesk_event("01HZEVENT0000000000000001", "35436", corr.clone(), "SOLVED");
    let g = good.as_bytes();
    let k = ZENDESK_SECRET;
    let sn_good = servicenow_event(
        "c537bae64f411200adf9f8e18110c76e",
        "INC0010002",
        "6",
        "qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm",
    );
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&good).unwrap()).unwrap();
    let with_newline = format!("{good}\n");
    let hex_sig: String = STANDARD
        .decode(sign(k, &ts, g))
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let decoded_secret = String::from_utf8(STANDARD.decode(ZENDESK_TEST_SECRET).unwrap()).unwrap();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let big = format!(r#"{{"type":"x","pad":"{}"}}"#, "x".repeat(64 * 1024));
    let dup_status = good.replacen(
        r#""status":"SOLVED""#,
        r#""status":"SOLVED","status":"OPEN""#,
        1,
    );
    let with_corr = |c: Value| zendesk_event("01HZEVENT0000000000000002", "35436", c, "SOLVED");

    #[rustfmt::skip]
    let rows: Vec<(&str, Req, u16, &str)> = vec![
        // --- route and transport
        ("unknown system", zd(k, &ts, g).system("jira"), 404, "unknown ticket system (zendesk or servicenow)"),
        ("system in another case", zd(k, &ts, g).system("Zendesk"), 404, "unknown ticket system (zendesk or servicenow)"),
        ("empty body", zd(k, &ts, b""), 400, "empty body"),
        ("missing Content-Type", zd(k, &ts, g).content_type(None), 415, MEDIA),
        ("text/plain", zd(k, &ts, g).content_type(Some("text/plain")), 415, MEDIA),
        ("form body", zd(k, &ts, g).content_type(Some("application/x-www-form-urlencoded")), 415, MEDIA),
        ("octet-stream", zd(k, &ts, g).content_type(Some("application/octet-stream")), 415, MEDIA),
        ("invalid UTF-8 bytes", zd(k, &ts, &[g, b"\xff\xfe"].concat()), 400, "body is not valid UTF-8"),
        ("just over 64 KB, signed", zd(k, &ts, big.as_bytes()), 413, "body larger than 64 KB"),
        ("1 MB, signed", zd(k, &ts, "x".repeat(1 << 20).as_bytes()), 413, "body larger than 64 KB"),
        // --- headers
        ("no signature header", zd(k, &ts, g).without(ZD_SIG), 401, "missing signature header"),
        ("no timestamp header", zd(k, &ts, g).without(ZD_TS), 401, "missing timestamp header"),
        ("signature header twice", zd(k, &ts, g).also(ZD_SIG, &sign(k, &ts, g)), 400, "signature or timestamp header sent more than once"),
        ("timestamp header twice", zd(k, &ts, g).also(ZD_TS, &ts), 400, "signature or timestamp header sent more than once"),
        ("Zendesk headers on the ServiceNow route", zd(SERVICENOW_SECRET, &ts, sn_good.as_bytes()).system("servicenow"), 401, "missing signature header"),
        ("bridge headers on the Zendesk route", sn(k, &ts, g).system("zendesk"), 401, "missing signature header"),
        // --- signature: the reference's wrong constructions and more
        ("empty signature", zd(k, &ts, g).header(ZD_SIG, ""), 401, BAD_SIGNATURE),
        ("hex digest instead of base64", zd(k, &ts, g).header(ZD_SIG, &hex_sig), 401, BAD_SIGNATURE),
        ("'.' between timestamp and body", zd(k, &ts, g).header(ZD_SIG, &sign(k, &format!("{ts}."), g)), 401, BAD_SIGNATURE),
        ("secret base64-decoded first", zd(ZENDESK_TEST_SECRET, &ts, g).header(ZD_SIG, &sign(&decoded_secret, &ts, g)), 401, BAD_SIGNATURE),
        ("re-serialised JSON sent", zd(k, &ts, g).body(pretty.clone()), 401, BAD_SIGNATURE),
        ("signed without the trailing newline", zd(k, &ts, g).body(with_newline.clone()), 401, BAD_SIGNATURE),
        ("wrong secret", zd("not-the-secret", &ts, g), 401, BAD_SIGNATURE),
        ("ServiceNow secret on the Zendesk route", zd(SERVICENOW_SECRET, &ts, g), 401, BAD_SIGNATURE),
        ("Zendesk secret on the ServiceNow route", sn(k, &ts, sn_good.as_bytes()), 401, BAD_SIGNATURE),
        ("timestamp changed after signing", zd(k, &ts, g).header(ZD_TS, &ts.replace('Z', "+00:00")), 401, BAD_SIGNATURE),
        ("sha256= prefixed", zd(k, &ts, g).header(ZD_SIG, &format!("sha256={}", sign(k, &ts, g))), 401, BAD_SIGNATURE),
        ("UTF-8 BOM signed, stripped by the host", zd(k, &ts, &[&b"\xef\xbb\xbf"[..], g].concat()), 401, BAD_SIGNATURE),
        ("ServiceNow signature in hex", sn(SERVICENOW_SECRET, &ts, sn_good.as_bytes()).header(SN_SIG, &"ab".repeat(32)), 401, BAD_SIGNATURE),
        // --- timestamps (each correctly signed: the refusal is the window's)
        ("vector 1 byte for byte (timestamp 1234)", Req { system: "zendesk", content_type: Some(JSON), headers: vec![(ZD_SIG, VECTOR_1_SIGNATURE.into()), (ZD_TS, "1234".into())], body: VECTOR_1_BODY.to_vec() }, 400, UNPARSEABLE),
        ("vector 2 byte for byte (2021)", Req { system: "zendesk", content_type: Some(JSON), headers: vec![(ZD_SIG, VECTOR_2_SIGNATURE.into()), (ZD_TS, "2021-03-25T05:09:27Z".into())], body: VECTOR_2_BODY.as_bytes().to_vec() }, 401, STALE),
        ("two hours old", zd(k, &ts_offset(-7200), g), 401, STALE),
        ("an hour ahead", zd(k, &ts_offset(3600), g), 401, "timestamp is in the future"),
        ("unix seconds", zd(k, &OffsetDateTime::now_utc().unix_timestamp().to_string(), g), 400, UNPARSEABLE),
        ("garbled timestamp", zd(k, "yesterday", g), 400, UNPARSEABLE),
        // --- body (signed and fresh: only the parse can refuse it)
        ("not JSON", zd(k, &ts, b"hello"), 400, BAD_SHAPE),
        ("JSON array", zd(k, &ts, b"[1,2]"), 400, BAD_SHAPE),
        ("no type", zd(k, &ts, good.replace(r#""type":"zen:"#, r#""kind":"zen:"#).as_bytes()), 400, BAD_SHAPE),
        ("duplicate status key", zd(k, &ts, dup_status.as_bytes()), 400, BAD_SHAPE),
        ("nested 5000 deep", zd(k, &ts, deep.as_bytes()), 400, BAD_SHAPE),
        ("status change without detail", zd(k, &ts, br#"{"type":"zen:event-type:ticket.status_changed","id":"e1"}"#), 400, "field detail is missing or invalid"),
        ("ticket id not a number", zd(k, &ts, good.replace(r#""id":"35436""#, r#""id":"35436; x""#).as_bytes()), 400, "field detail.id is missing or invalid"),
        ("unknown status", zd(k, &ts, zendesk_event("e3", "35436", corr.clone(), "ARCHIVED").as_bytes()), 400, "unknown ticket status"),
        ("correlation without a response", zd(k, &ts, with_corr(json!("qualtrics:SV_22VlHYNeldrrrkp")).as_bytes()), 400, BAD_CORRELATION),
        ("correlation with a path", zd(k, &ts, with_corr(json!("qualtrics:SV_1/../x:R_1")).as_bytes()), 400, BAD_CORRELATION),
        ("correlation ids swapped", zd(k, &ts, with_corr(json!("qualtrics:R_1:SV_1")).as_bytes()), 400, BAD_CORRELATION),
        ("ServiceNow v 2", sn(SERVICENOW_SECRET, &ts, sn_good.replace(r#""v":1"#, r#""v":2"#).as_bytes()), 400, "field v is missing or invalid"),
        ("ServiceNow sys_id not hex", sn(SERVICENOW_SECRET, &ts, sn_good.replace("c537bae64f411200adf9f8e18110c76e", "INC0010002").as_bytes()), 400, "field sys_id is missing or invalid"),
        ("ServiceNow state as a label", sn(SERVICENOW_SECRET, &ts, sn_good.replace(r#""state":"6""#, r#""state":"Resolved""#).as_bytes()), 400, "unknown ticket status"),
        ("ServiceNow local date", sn(SERVICENOW_SECRET, &ts, sn_good.replace("2026-12-07 04:30:00", "07/12/2026 04:30").as_bytes()), 400, "field sys_updated_on is missing or invalid"),
    ];
    assert!(rows.len() >= 30, "{} rows", rows.len());

    let mut failures = Vec::new();
    for (name, req, want, reason) in &rows {
        let r = req.send(&stack).await;
        let queued = stack.queue_texts(LOOP).await.len();
        let got = error_of(&r);
        if r.status != *want || queued != 0 || got.as_deref() != Some(*reason) {
            failures.push(format!(
                "{name}: status {} (want {want}), queued {queued}, body {:?}",
                r.status, r.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // Methods outside function.json never reach the handler: the host answers 404.
    let r = reqwest::Client::new()
        .get(events_url(&stack, "zendesk"))
        .send()
        .await
        .expect("front door");
    assert_eq!(r.status(), 404);
    // Chunked, without Content-Length: the host sends no body.
    let r = Publisher::new(events_url(&stack, "zendesk"))
        .post_chunked(JSON, good.clone().into_bytes())
        .await
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).as_deref()),
        (400, Some("empty body"))
    );

    // Verified, but not a bridge ticket: 202, a reason, nothing queued.
    let not_ours: Vec<(&str, Req, &str)> = vec![
        (
            "another event type (fresh)",
            zd(k, &ts, VECTOR_1_BODY),
            "not a ticket status change",
        ),
        (
            "no external_id",
            zd(k, &ts, with_corr(Value::Null).as_bytes()),
            "ticket has no bridge correlation",
        ),
        (
            "another integration's external_id",
            zd(k, &ts, with_corr(json!("CRM-7781")).as_bytes()),
            "ticket has no bridge correlation",
        ),
        (
            "correlated, but no ledger entry",
            zd(k, &ts, g),
            "no ledger entry for the correlated response",
        ),
        (
            "ServiceNow, no correlation",
            sn(
                SERVICENOW_SECRET,
                &ts,
                sn_good
                    .replace("qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm", "")
                    .as_bytes(),
            ),
            "ticket has no bridge correlation",
        ),
    ];
    for (name, req, why) in &not_ours {
        let r = req.send(&stack).await;
        let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
        assert_eq!(r.status, 202, "{name}: {r:?}");
        assert_eq!(v, json!({"status": "ignored", "reason": why}), "{name}");
        assert!(stack.queue_texts(LOOP).await.is_empty(), "{name}");
    }

    // Nothing secret or free-text reached the logs; every refusal was a completed invocation.
    let out = stack.host.handler_output().join("\n");
    let logs = stack
        .host
        .records()
        .iter()
        .flat_map(|r| r.logs.clone())
        .collect::<Vec<_>>()
        .join("\n");
    let sig = sign(k, &ts, g);
    for needle in [
        ZENDESK_SECRET,
        SERVICENOW_SECRET,
        ZENDESK_TEST_SECRET,
        "respondent-text-9d1f",
        &sig[..20],
    ] {
        assert!(
            !out.contains(needle) && !logs.contains(needle),
            "{needle:?} leaked into the logs"
        );
    }
    let runs: Vec<_> = stack
        .host
        .records()
        .into_iter()
        .filter(|r| r.function == "TicketEvents")
        .collect();
    assert!(runs.len() >= rows.len(), "{} invocations", runs.len());
    assert!(runs.iter().all(|r| r.outcome.is_ok()), "{runs:?}");
    stack.assert_no_violations();
}

fn bridge_toml() -> String {
    format!(
        "[[surveys]]\nid = \"{SV_ZD}\"\n[surveys.tickets]\nsystem = \"zendesk\"\nallowed_fields = [\"QID1\"]\nsubject = \"NPS {{{{values.QID1}}}}\"\n\n[[surveys]]\nid = \"{SV_SN}\"\n[surveys.tickets]\nsystem = \"servicenow\"\nallowed_fields = [\"QID1\"]\nsubject = \"NPS {{{{values.QID1}}}}\"\n"
    )
}

async fn put_ticket_request(stack: &Stack, survey: &str, response: &str) {
    let text = format!(
        r#"{{"v":1,"surveyId":"{survey}","responseId":"{response}","source":"webhook","receivedAt":"2026-12-07T04:00:00Z"}}"#
    );
    stack
        .queues
        .create_queue("ticket-requests")
        .await
        .expect("queue");
    stack
        .queues
        .put_message("ticket-requests", &STANDARD.encode(text))
        .await
        .expect("put");
}

fn loop_messages(texts: &[String]) -> Vec<LoopRequest> {
    texts
        .iter()
        .map(|t| {
            let r = LoopRequest::parse(t).expect("a valid loop request");
            assert_eq!(r.to_text(), *t, "the queued text is the canonical form");
            r
        })
        .collect()
}

/// `receivedAt` is now (RFC 3339 UTC); the rest is compared exactly by the caller.
fn assert_received_now(r: &LoopRequest) {
    let at = OffsetDateTime::parse(&r.received_at, &Rfc3339).expect("receivedAt is RFC 3339");
    assert!(r.received_at.ends_with('Z'), "{}", r.received_at);
    assert!((OffsetDateTime::now_utc() - at).whole_seconds().abs() < 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_about_tickets_the_bridge_created_queue_one_exact_loop_request() {
    let qualtrics = FakeQualtrics::start(QUALTRICS_TOKEN).await.unwrap();
    let snow = FakeServiceNow::start().await.unwrap();
    let zdesk = FakeZendesk::start().await.unwrap();
    let stack = settings(StackBuilder::default())
        .bridge_toml(&bridge_toml())
        .setting("QUALTRICS_BASE_URL", &qualtrics.base_url)
        .setting("QUALTRICS_API_TOKEN", QUALTRICS_TOKEN)
        .setting("SERVICENOW_INSTANCE_URL", &snow.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .setting("ZENDESK_BASE_URL", &zdesk.url())
        .setting("ZENDESK_EMAIL", zendesk::EMAIL)
        .setting("ZENDESK_API_TOKEN", zendesk::API_TOKEN)
        .start()
        .await;

    // The real TicketCreator raises one ticket in each system; the ledger records them.
    let rz = qualtrics.add_responses(SV_ZD, 1).remove(0);
    let rs = qualtrics.add_responses(SV_SN, 1).remove(0);
    put_ticket_request(&stack, SV_ZD, &rz).await;
    put_ticket_request(&stack, SV_SN, &rs).await;
    stack.settle(Duration::from_secs(120)).await;
    let zt = zdesk.tickets();
    let incidents = snow.incidents();
    assert_eq!((zt.len(), incidents.len()), (1, 1), "{zt:?} {incidents:?}");
    let zid = zt[0].id.to_string();
    let inc = &incidents[0];
    let zcorr = format!("qualtrics:{SV_ZD}:{rz}");
    let scorr = format!("qualtrics:{SV_SN}:{rs}");
    assert_eq!(zt[0].external_id.as_deref(), Some(zcorr.as_str()));
    assert_eq!(inc.fields["correlation_id"], scorr);

    // Zendesk: solved, signed with the current secret.
    let body = zendesk_event("01HZEVENTZD000000000000001", &zid, json!(zcorr), "SOLVED");
    let r = zd(ZENDESK_SECRET, &now_ts(), body.as_bytes())
        .send(&stack)
        .await;
    assert_eq!((r.status, r.body.as_str()), (202, r#"{"status":"queued"}"#));
    let msgs = loop_messages(&stack.queue_texts(LOOP).await);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_received_now(&msgs[0]);
    assert_eq!(
        msgs[0],
        LoopRequest {
            v: 1,
            system: "zendesk".into(),
            ticket_id: zid.clone(),
            ticket_number: Some(zid.clone()),
            survey_id: SV_ZD.into(),
            response_id: rz.clone(),
            status: "solved".into(),
            state: TicketState::Resolved,
            close_code: None,
            changed_at: "2026-12-07T04:30:00Z".into(),
            sequence: None,
            source: LoopSource::Event,
            event_id: Some("01HZEVENTZD000000000000001".into()),
            received_at: msgs[0].received_at.clone(),
            retry: None,
        }
    );

    // ServiceNow: resolved, as the shipped business rule sends it (timestamp in its form).
    let body = servicenow_event(&inc.sys_id, &inc.number, "6", &scorr);
    let r = sn(SERVICENOW_SECRET, &now_ts(), body.as_bytes())
        .send(&stack)
        .await;
    assert_eq!((r.status, r.body.as_str()), (202, r#"{"status":"queued"}"#));
    let msgs = loop_messages(&stack.queue_texts(LOOP).await);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_received_now(&msgs[1]);
    assert_eq!(
        msgs[1],
        LoopRequest {
            v: 1,
            system: "servicenow".into(),
            ticket_id: inc.sys_id.clone(),
            ticket_number: Some(inc.number.clone()),
            survey_id: SV_SN.into(),
            response_id: rs.clone(),
            status: "6".into(),
            state: TicketState::Resolved,
            close_code: Some("Solved (Permanently)".into()),
            changed_at: "2026-12-07T04:30:00Z".into(),
            sequence: Some(7),
            source: LoopSource::Event,
            event_id: Some(format!("{}:7", inc.sys_id)),
            received_at: msgs[1].received_at.clone(),
            retry: None,
        }
    );

    // Rotation: the previous Zendesk secret still verifies; a reopen is queued as open.
    let body = zendesk_event("01HZEVENTZD000000000000002", &zid, json!(zcorr), "open");
    let r = zd(ZENDESK_TEST_SECRET, &now_ts(), body.as_bytes())
        .send(&stack)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let msgs = loop_messages(&stack.queue_texts(LOOP).await);
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        (msgs[2].state, msgs[2].status.as_str()),
        (TicketState::Open, "open")
    );
    assert!(stack.host.records().iter().any(|r| r
        .logs
        .iter()
        .any(|l| l.contains("hmac-previous-secret") && l.contains(&zid))));

    // Not the bridge's ticket though correlated: nothing queued, logged with the ticket id.
    let not_ours: Vec<(&str, Req, &str)> = vec![
        (
            "another Zendesk ticket claims the response",
            zd(
                ZENDESK_SECRET,
                &now_ts(),
                zendesk_event("e-other", "999999", json!(zcorr), "solved").as_bytes(),
            ),
            "the ledger names another ticket",
        ),
        (
            "a ServiceNow ticket claims the Zendesk response",
            sn(
                SERVICENOW_SECRET,
                &now_ts(),
                servicenow_event(&"a".repeat(32), "INC0099999", "6", &zcorr).as_bytes(),
            ),
            "the ledger names another ticket",
        ),
        (
            "a Zendesk event for the ServiceNow response",
            zd(
                ZENDESK_SECRET,
                &now_ts(),
                zendesk_event("e-sys", &zid, json!(scorr), "solved").as_bytes(),
            ),
            "the ledger names another ticket",
        ),
    ];
    for (name, req, why) in &not_ours {
        let r = req.send(&stack).await;
        let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
        assert_eq!(
            (r.status, v),
            (202, json!({"status": "ignored", "reason": why})),
            "{name}"
        );
        assert_eq!(stack.queue_texts(LOOP).await.len(), 3, "{name}");
    }
    assert!(stack.host.records().iter().any(|r| r
        .logs
        .iter()
        .any(|l| l.contains("ticket 999999") && l.contains("nothing queued"))));

    // A ledger entry that is not `created` (written through the real ledger API).
    put_entry(&stack, SV_ZD, "R_loopSkipped01", State::Skipped, None).await;
    put_entry(
        &stack,
        SV_ZD,
        "R_loopCreated01",
        State::Created,
        zendesk_ticket("424242"),
    )
    .await;
    let skipped = zendesk_event(
        "e-skip",
        "424242",
        json!(format!("qualtrics:{SV_ZD}:R_loopSkipped01")),
        "solved",
    );
    let r = zd(ZENDESK_SECRET, &now_ts(), skipped.as_bytes())
        .send(&stack)
        .await;
    assert_eq!((r.status, error_of(&r)), (202, None), "{r:?}");
    assert!(
        r.body.contains("the bridge raised no ticket for it"),
        "{r:?}"
    );
    let created = zendesk_event(
        "e-created",
        "424242",
        json!(format!("qualtrics:{SV_ZD}:R_loopCreated01")),
        "closed",
    );
    let r = zd(ZENDESK_SECRET, &now_ts(), created.as_bytes())
        .send(&stack)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let msgs = loop_messages(&stack.queue_texts(LOOP).await);
    assert_eq!(msgs.len(), 4);
    assert_eq!(
        (
            msgs[3].ticket_id.as_str(),
            msgs[3].response_id.as_str(),
            msgs[3].state
        ),
        ("424242", "R_loopCreated01", TicketState::Closed)
    );

    // Storage down: the ledger cannot be read, so 503 with a Retry-After Zendesk honours.
    stack.azurite.stop().await;
    let body = zendesk_event("01HZEVENTZD000000000000003", &zid, json!(zcorr), "closed");
    let req = zd(ZENDESK_SECRET, &now_ts(), body.as_bytes());
    let r = reqwest::Client::new()
        .post(events_url(&stack, "zendesk"))
        .header("content-type", JSON)
        .header(ZD_SIG, &req.headers[0].1)
        .header(ZD_TS, &req.headers[1].1)
        .body(body.clone())
        .send()
        .await
        .expect("front door");
    assert_eq!(r.status(), 503);
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(retry_after.as_deref(), Some("10"));
    let text = r.text().await.unwrap();
    assert_eq!(
        text,
        r#"{"error":"ticket ledger temporarily unavailable; retry later"}"#
    );
    stack.assert_no_violations();
}
