//! `OpsEvents` end to end: events POSTed through the local host's front door (function key in
//! `?code=`) to the real release binary; the `pulse-requests` queue output lands in Azurite.
//! Nothing consumes that queue yet (PulseSender comes later), so it holds exactly what the
//! intake queued.

use crate::common;

use common::Stack;
use devkit::publisher::{Publisher, Reply};
use qualtrics_bridge::messages::PulseRequest;
use qualtrics_bridge::pulse::verify::sign_standard;
use serde_json::{json, Value};

/// `whsec_` + base64 of "ops-events-e2e-current-secret-01".
const SECRET: &str = "whsec_b3BzLWV2ZW50cy1lMmUtY3VycmVudC1zZWNyZXQtMDE=";
/// The previous secret is the published vector's.
const PREVIOUS: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "ops-static-token-5d1f0a93";
const QUEUE: &str = "pulse-requests";
const JSON: &str = "application/json";

const BRIDGE_TOML: &str = r#"
[[pulses]]
event_type = "incident.resolved"
survey = "SV_incidentPulse01"
library = "UR_1M4aHozEkSxUfCl"
message = "MS_0Vdgn7nLGSQBlYN"
directory = "POOL_012345678901234"
mailing_list = "CG_6F1gRt186CZOVoh"
embedded_data = ["severity"]
category = "it"
max_people = 1000

[[pulses]]
event_type = "SensorNotification.Activated"
survey = "SV_sensorPulse0001"
library = "UR_1M4aHozEkSxUfCl"
message = "MS_0Vdgn7nLGSQBlYN"
directory = "POOL_012345678901234"
mailing_list = "CG_6F1gRt186CZOVoh"
category = "it"

[[pulses]]
event_type = "clevertap.campaign"
survey = "SV_cHbKMOdeT8NetF3"
library = "UR_1M4aHozEkSxUfCl"
message = "MS_0Vdgn7nLGSQBlYN"
directory = "POOL_012345678901234"
mailing_list = "CG_6F1gRt186CZOVoh"
max_people = 1

[[pulses]]
event_type = "small.event"
survey = "SV_smallPulse00001"
library = "UR_1M4aHozEkSxUfCl"
message = "MS_0Vdgn7nLGSQBlYN"
directory = "POOL_012345678901234"
mailing_list = "CG_6F1gRt186CZOVoh"
max_people = 2
"#;

async fn stack() -> Stack {
    // Without PulseSender: these tests read what OpsEvents queued, and PulseSender would
    // consume it (a race the assertions on the queue would sometimes lose).
    common::StackBuilder::default()
        .without_function("PulseSender")
        .bridge_toml(BRIDGE_TOML)
        .setting("OPS_WEBHOOK_SECRET", SECRET)
        .setting("OPS_WEBHOOK_SECRET_PREVIOUS", PREVIOUS)
        .setting("OPS_STATIC_TOKEN", TOKEN)
        .start()
        .await
}

fn url(stack: &Stack, format: Option<&str>) -> String {
    let base = stack.host.function_url("OpsEvents").expect("OpsEvents");
    match format {
        Some(f) => format!("{base}&format={f}"),
        None => base,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The three Standard Webhooks headers for `body`, signed with `secret` at `ts`.
fn signed(secret: &str, id: &str, ts: i64, body: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        (
            "webhook-signature".into(),
            sign_standard(secret, id, ts, body.as_bytes()).expect("signable"),
        ),
    ]
}

fn token(t: &str) -> Vec<(String, String)> {
    vec![("x-bridge-token".into(), t.into())]
}

async fn post(
    url: &str,
    content_type: Option<&str>,
    headers: &[(String, String)],
    body: impl Into<Vec<u8>>,
) -> Reply {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Publisher::new(url)
        .post(content_type, &h, body)
        .await
        .expect("the front door answers")
}

/// A bridge-shape event naming `people` (one object each).
fn event(id: &str, kind: &str, people: Value) -> String {
    json!({
        "eventId": id,
        "eventType": kind,
        "occurredAt": "2026-12-01T09:30:00Z",
        "people": people,
        "attributes": {"severity": 2, "service": "vpn"},
    })
    .to_string()
}

/// The `n`th message on the queue (nothing consumes it, so it grows by one per queued
/// event), checked to be received just now; returns it with its `receivedAt`, so the caller
/// can compare the whole text.
async fn nth_message(stack: &Stack, n: usize) -> (String, String) {
    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(texts.len(), n, "{texts:?}");
    let text = texts[n - 1].clone();
    let r = PulseRequest::parse(&text).expect("a pulse request");
    let at = time::OffsetDateTime::parse(
        &r.received_at,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("receivedAt is RFC 3339");
    assert!((time::OffsetDateTime::now_utc() - at).whole_seconds().abs() < 120);
    (text, r.received_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sender_shape_queues_its_exact_message() {
    let stack = stack().await;

    // 1. Bridge shape, Standard Webhooks signature with the current secret.
    let body = event(
        "inc-4711",
        "incident.resolved",
        json!([
            {"email": "ada@example.com", "name": "Ada", "externalRef": "E-1"},
            {"externalRef": "E-2", "attributes": {"team": "net"}}
        ]),
    );
    let headers = signed(SECRET, "msg_2Lx8bQe0", now(), &body);
    let r = post(&url(&stack, None), Some(JSON), &headers, body.clone()).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"status":"queued","eventId":"inc-4711","eventType":"incident.resolved","people":2,"messages":1})
    );
    assert!(!r.body.contains("ada@"), "the reply names no address");
    let (text, at) = nth_message(&stack, 1).await;
    assert_eq!(
        text,
        format!(
            r#"{{"v":1,"format":"bridge","auth":"signature","webhookId":"msg_2Lx8bQe0","receivedAt":"{at}","event":{{"eventId":"inc-4711","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z","people":[{{"email":"ada@example.com","externalRef":"E-1","name":"Ada"}},{{"externalRef":"E-2","attributes":{{"team":"net"}}}}],"attributes":{{"service":"vpn","severity":2}}}}}}"#
        )
    );

    // 2. The previous secret (the published vector's), two signatures of which one is good.
    let body = event(
        "inc-4712",
        "incident.resolved",
        json!([{"email": "bob@example.com"}]),
    );
    let ts = now();
    let mut headers = signed(PREVIOUS, "msg_prev", ts, &body);
    headers[2].1 = format!(
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}",
        headers[2].1
    );
    let r = post(&url(&stack, Some("bridge")), Some(JSON), &headers, body).await;
    assert_eq!(r.status, 202, "{r:?}");
    let (text, _) = nth_message(&stack, 2).await;
    assert!(
        text.contains(r#""auth":"signature","webhookId":"msg_prev""#),
        "{text}"
    );

    // 3. SysTrack's template through the static header; data becomes the attributes.
    let body = include_str!("../fixtures/pulse/systrack.json");
    let r = post(
        &url(&stack, Some("systrack")),
        Some(JSON),
        &token(TOKEN),
        body,
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let (text, at) = nth_message(&stack, 3).await;
    assert_eq!(
        text,
        format!(
            r#"{{"v":1,"format":"systrack","auth":"token","receivedAt":"{at}","event":{{"eventId":"7f3c9a52-0d1e-4b7a-9c11-2a5e8f0b6d43","eventType":"SensorNotification.Activated","occurredAt":"2026-12-01T09:30:00Z","people":[],"attributes":{{"sensorNames":["High CPU","VPN Disconnects"],"systemsAtActivationURL":"https://cloud.systrack.example/activations/7f3c9a52"}}}}}}"#
        )
    );

    // 4. CleverTap's campaign body: the contact and its embedded data, never the message or
    // the sender's addresses; the event id is derived (contact, survey, hour).
    let body = include_str!("../fixtures/pulse/clevertap.json");
    let r = post(
        &url(&stack, Some("clevertap")),
        Some(JSON),
        &token(TOKEN),
        body,
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let (text, at) = nth_message(&stack, 4).await;
    let id = PulseRequest::parse(&text).unwrap().event.event_id;
    assert!(id.starts_with("ct-") && id.len() == 35, "{id}");
    assert_eq!(
        text,
        format!(
            r#"{{"v":1,"format":"clevertap","auth":"token","receivedAt":"{at}","event":{{"eventId":"{id}","eventType":"clevertap.campaign","occurredAt":"{at}","people":[{{"contactId":"CGC_2b8YpLqWz0xRt4N","attributes":{{"property1":"string","property2":"string"}}}}],"attributes":{{"sendDate":"2025-02-24T14:15:22Z","surveyId":"SV_cHbKMOdeT8NetF3"}}}}}}"#
        )
    );

    // 5. A valid event no [[pulses]] entry handles: 202, nothing queued.
    let body = event(
        "deploy-1",
        "deploy.finished",
        json!([{"email": "c@example.com"}]),
    );
    let r = post(
        &url(&stack, None),
        Some(JSON),
        &signed(SECRET, "msg_u", now(), &body),
        body,
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"status":"ignored","reason":"no pulse handles this event type"})
    );
    assert_eq!(
        stack.queue_texts(QUEUE).await.len(),
        4,
        "nothing more queued"
    );

    // No address reached the handler's output or the invocations' Logs[].
    let mut logs = stack.host.handler_output();
    logs.extend(stack.host.records().into_iter().flat_map(|r| r.logs));
    let logs = logs.join("\n");
    for address in ["ada@example.com", "bob@example.com", "c@example.com"] {
        assert!(!logs.contains(address), "{address} in the logs");
    }
    assert!(
        logs.contains("POST OpsEvents -> 202 incident.resolved inc-4711 (signature, bridge): 2 people queued in 1 message(s)"),
        "{logs}"
    );
    stack.settle(std::time::Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_one_queue_message_is_split_into_parts() {
    let stack = stack().await;
    let people: Vec<Value> = (0..1000)
        .map(|i| json!({"email": format!("person.number.{i:05}@department.example.com")}))
        .collect();
    let body = event("inc-big", "incident.resolved", Value::Array(people.clone()));
    let r = post(
        &url(&stack, None),
        Some(JSON),
        &signed(SECRET, "msg_big", now(), &body),
        body,
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let reply: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(reply["people"], 1000);
    assert_eq!(reply["messages"], 2);
    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(texts.len(), 2);
    let mut seen = Vec::new();
    let mut parts = Vec::new();
    for t in &texts {
        assert!(t.len() <= 48 * 1024, "{} bytes", t.len());
        let r = PulseRequest::parse(t).unwrap();
        assert_eq!(r.event.event_id, "inc-big");
        let part = r.part.expect("a part");
        assert_eq!(part.count, 2);
        parts.push(part.index);
        seen.extend(r.event.people.into_iter().map(|p| p.email.unwrap()));
    }
    parts.sort();
    assert_eq!(parts, [1, 2]);
    seen.sort();
    let want: Vec<String> = people
        .iter()
        .map(|p| p["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, want, "every person exactly once");
}

/// devkit's fake sender (RustCrypto's HMAC, not the handler's) posts a signed sensor event for
/// a few users: one message with those people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devkit_fake_sender_posts_a_signed_sensor_event() {
    let stack = stack().await;
    let sender = devkit::ops_sender::OpsSender::new(url(&stack, None), SECRET).expect("secret");
    let people = ["u1@example.com", "u2@example.com", "u3@example.com"];
    let r = sender.sensor("act-1", "High CPU", &people).await.unwrap();
    assert_eq!(r.status, 202, "{r:?}");
    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    let m = PulseRequest::parse(&texts[0]).unwrap();
    assert_eq!(m.event.event_type, "SensorNotification.Activated");
    let emails: Vec<_> = m
        .event
        .people
        .iter()
        .filter_map(|p| p.email.as_deref())
        .collect();
    assert_eq!(emails, people);
    assert!(m.webhook_id.is_some_and(|id| id.starts_with("msg_")));
    // A wrong secret is refused.
    let other =
        devkit::ops_sender::OpsSender::new(url(&stack, None), PREVIOUS.replace('M', "N").as_str())
            .expect("secret");
    let r = other.sensor("act-2", "High CPU", &people).await.unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(stack.queue_texts(QUEUE).await.len(), 1);
}

/// One row: what is sent and the status it must get.
struct Row {
    name: &'static str,
    format: Option<&'static str>,
    content_type: Option<&'static str>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    want: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_nothing_is_queued() {
    let stack = stack().await;
    let good = event(
        "inc-h1",
        "incident.resolved",
        json!([{"email": "victim@example.com"}]),
    );
    let ts = now();
    let sig = |s: &str| signed(s, "msg_h1", ts, &good);
    let with_sig = |v: String| {
        let mut h = sig(SECRET);
        h[2].1 = v;
        h
    };
    let key = base64_decode(SECRET.trim_start_matches("whsec_"));
    let mac_b64 = |msg: String| format!("v1,{}", b64(&hmac256(&key, msg.as_bytes())));
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&good).unwrap()).unwrap();
    let tok = || token(TOKEN);
    let bridge = |v: Value| v.to_string().into_bytes();
    let ev = |people: Value| json!({"eventId":"inc-h2","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z","people":people});
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"externalRef": format!("r{i}")}))
        .collect();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let row = |name, format, ct, headers, body: Vec<u8>, want| Row {
        name,
        format,
        content_type: ct,
        headers,
        body,
        want,
    };
    let g = || good.clone().into_bytes();

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // --- authentication
        row("no signature and no token", None, Some(JSON), vec![], g(), 401),
        row("signed with another secret", None, Some(JSON), sig("whsec_b3RoZXItc2VjcmV0LW9mLTMyLWJ5dGVzLWxvbmchIQ=="), g(), 401),
        row("signature as hex", None, Some(JSON), with_sig(format!("v1,{}", hex(&hmac256(&key, format!("msg_h1.{ts}.{good}").as_bytes())))), g(), 401),
        row("secret text used as key", None, Some(JSON), with_sig(format!("v1,{}", b64(&hmac256(SECRET.as_bytes(), format!("msg_h1.{ts}.{good}").as_bytes())))), g(), 401),
        row("id and timestamp swapped", None, Some(JSON), with_sig(mac_b64(format!("{ts}.msg_h1.{good}"))), g(), 401),
        row("no separators", None, Some(JSON), with_sig(mac_b64(format!("msg_h1{ts}{good}"))), g(), 401),
        row("missing v1,", None, Some(JSON), with_sig(sig(SECRET)[2].1[3..].to_string()), g(), 401),
        row("body re-serialised after signing", None, Some(JSON), sig(SECRET), pretty.into_bytes(), 401),
        row("body changed after signing", None, Some(JSON), sig(SECRET), good.replace("victim", "victin").into_bytes(), 401),
        row("stale: ten minutes old", None, Some(JSON), signed(SECRET, "msg_h1", ts - 600, &good), g(), 401),
        row("ten minutes in the future", None, Some(JSON), signed(SECRET, "msg_h1", ts + 600, &good), g(), 401),
        row("timestamp in milliseconds", None, Some(JSON), { let mut h = sig(SECRET); h[1].1 = format!("{}000", ts); h }, g(), 401),
        row("signature without webhook-id", None, Some(JSON), sig(SECRET)[1..].to_vec(), g(), 401),
        row("signature without webhook-timestamp", None, Some(JSON), vec![sig(SECRET)[0].clone(), sig(SECRET)[2].clone()], g(), 401),
        row("signature replayed under another webhook-id", None, Some(JSON), { let mut h = sig(SECRET); h[0].1 = "msg_h2".into(); h }, g(), 401),
        row("wrong static token", None, Some(JSON), token("ops-static-token-5d1f0a94"), g(), 401),
        row("static token prefix", None, Some(JSON), token(&TOKEN[..12]), g(), 401),
        row("token as a Bearer header", None, Some(JSON), vec![("authorization".into(), format!("Bearer {TOKEN}"))], g(), 401),
        row("webhook secret as static token", None, Some(JSON), token(SECRET), g(), 401),
        row("bad signature beside a good token", None, Some(JSON), [with_sig("v1,AAAA".into()), tok()].concat(), g(), 401),
        // --- transport
        row("text/plain", None, Some("text/plain"), tok(), g(), 415),
        row("form content type", None, Some("application/x-www-form-urlencoded"), tok(), g(), 415),
        row("no content type", None, None, tok(), g(), 415),
        row("empty body", None, Some(JSON), tok(), vec![], 400),
        row("over 1 MiB", None, Some(JSON), tok(), format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024)).into_bytes(), 413),
        row("invalid UTF-8", None, Some(JSON), tok(), [good.as_bytes(), b"\xff\xfe"].concat(), 400),
        // --- body (authenticated with the token, so only the body can refuse it)
        row("not JSON", None, Some(JSON), tok(), b"hello".to_vec(), 400),
        row("a JSON array", None, Some(JSON), tok(), b"[1,2]".to_vec(), 400),
        row("JSON nested 5000 deep", None, Some(JSON), tok(), deep.into_bytes(), 400),
        row("missing people", None, Some(JSON), tok(), bridge(json!({"eventId":"e","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z"})), 400),
        row("unknown top-level field", None, Some(JSON), tok(), bridge(json!({"eventId":"e","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z","people":[],"surveyId":"SV_x"})), 400),
        row("duplicate eventId key", None, Some(JSON), tok(), br#"{"eventId":"a","eventId":"b","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z","people":[]}"#.to_vec(), 400),
        row("eventId with a space", None, Some(JSON), tok(), bridge(json!({"eventId":"a b","eventType":"incident.resolved","occurredAt":"2026-12-01T09:30:00Z","people":[]})), 400),
        row("eventType with a slash", None, Some(JSON), tok(), bridge(json!({"eventId":"a","eventType":"incident/resolved","occurredAt":"2026-12-01T09:30:00Z","people":[]})), 400),
        row("occurredAt not RFC 3339", None, Some(JSON), tok(), bridge(json!({"eventId":"a","eventType":"incident.resolved","occurredAt":"01/12/2026","people":[]})), 400),
        row("email that is a display name", None, Some(JSON), tok(), bridge(ev(json!([{"email":"Victim <victim@example.com>"}]))), 400),
        row("email list", None, Some(JSON), tok(), bridge(ev(json!([{"email":"a@example.com,b@example.com"}]))), 400),
        row("person without identity", None, Some(JSON), tok(), bridge(ev(json!([{"name":"Nobody"}]))), 400),
        row("the same person twice", None, Some(JSON), tok(), bridge(ev(json!([{"email":"v@example.com"},{"email":"V@EXAMPLE.com"}]))), 400),
        row("10,001 people", None, Some(JSON), tok(), bridge(ev(Value::Array(many))), 400),
        row("nested attribute", None, Some(JSON), tok(), bridge(ev(json!([{"externalRef":"r","attributes":{"a":{"b":1}}}]))), 400),
        row("attribute text over 1024 characters", None, Some(JSON), tok(), bridge(ev(json!([{"externalRef":"r","attributes":{"a":"x".repeat(1025)}}]))), 400),
        row("control character in a name", None, Some(JSON), tok(), bridge(ev(json!([{"externalRef":"r","name":"a\u{0}b"}]))), 400),
        row("unknown format", Some("pagerduty"), Some(JSON), tok(), g(), 400),
        row("bridge body labelled systrack", Some("systrack"), Some(JSON), tok(), g(), 400),
        row("clevertap with its sample default contact", Some("clevertap"), Some(JSON), tok(), include_str!("../fixtures/pulse/clevertap.json").replace("CGC_2b8YpLqWz0xRt4N", "test").into_bytes(), 400),
        row("clevertap without recipients", Some("clevertap"), Some(JSON), tok(), br#"{"surveyLink":{"surveyId":"SV_1"}}"#.to_vec(), 400),
        row("more people than the pulse allows", None, Some(JSON), tok(), bridge(json!({"eventId":"s1","eventType":"small.event","occurredAt":"2026-12-01T09:30:00Z","people":[{"externalRef":"1"},{"externalRef":"2"},{"externalRef":"3"}]})), 422),
    ];
    assert!(rows.len() >= 30, "{} rows", rows.len());

    let mut failures = Vec::new();
    for r in &rows {
        let reply = post(
            &url(&stack, r.format),
            r.content_type,
            &r.headers,
            r.body.clone(),
        )
        .await;
        let queued = stack.queue_texts(QUEUE).await.len();
        let reason = serde_json::from_str::<Value>(&reply.body)
            .ok()
            .and_then(|b| b.get("error").and_then(Value::as_str).map(str::to_string));
        let leaks = reply.body.contains("victim") || reply.body.contains(TOKEN);
        if reply.status != r.want || queued != 0 || reason.is_none() || leaks {
            failures.push(format!(
                "{}: status {} (want {}), queued {queued}, body {:?}",
                r.name, reply.status, r.want, reply.body
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
    // The good request itself is accepted (the table's refusals are not an outage).
    let r = post(&url(&stack, None), Some(JSON), &sig(SECRET), good.clone()).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(stack.queue_texts(QUEUE).await.len(), 1);
    let mut logs = stack.host.handler_output();
    logs.extend(stack.host.records().into_iter().flat_map(|r| r.logs));
    let logs = logs.join("\n");
    assert!(logs.contains("refused: bad token"), "{logs}");
    assert!(!logs.contains("victim@"), "an address reached the logs");
    assert!(!logs.contains(TOKEN), "the token reached the logs");
}

/// HMAC-SHA256 by an implementation independent of the handler's (RustCrypto, not aws-lc).
fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
