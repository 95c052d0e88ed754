//! The events the fake ticket systems send when a ticket changes state, and the faults of a
//! best-effort sender (reference `close-the-loop.md` §4.5: duplicated, reordered, lost,
//! late). Zendesk signs its events-mode webhook as §4.2 says; the ServiceNow business rule
//! (§3.4) signs with the same construction under `X-Bridge-*` headers. Both are
//! `base64(HMAC-SHA256(secret as UTF-8, timestamp header value + raw body))`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The signature both fakes put on an event.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts a key of any length: this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Where a fake sends its events, and with what.
#[derive(Debug, Clone)]
pub struct EventTarget {
    pub url: String,
    /// The signing secret (Zendesk's webhook signing secret / the business rule's property).
    pub secret: String,
    /// Extra headers on every event (e.g. `x-functions-key`).
    pub headers: Vec<(String, String)>,
}

/// What happens to one event (scripted per event, in order; unscripted events are delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Deliver,
    /// Never sent ("an event may not be delivered at all").
    Drop,
    /// Sent twice, the same bytes and signature.
    Duplicate,
    /// Sent after this delay (later events may overtake it).
    Delay(Duration),
    /// Held back and sent just after the next event that is sent: the two arrive reordered.
    Hold,
}

/// One event as built (headers and the exact body signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// One attempt to deliver an event: the status the receiver answered (`None`: no answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub event: Event,
    pub status: Option<u16>,
}

#[derive(Debug, Default)]
struct State {
    target: Option<EventTarget>,
    script: VecDeque<Delivery>,
    held: Vec<Event>,
    /// Every event built, whatever happened to it.
    built: Vec<Event>,
    sent: Vec<Sent>,
    in_flight: usize,
}

/// A fake's event sender.
#[derive(Debug, Clone, Default)]
pub struct EventSender {
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
}

impl EventSender {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("event sender lock")
    }

    pub fn set_target(&self, target: Option<EventTarget>) {
        self.lock().target = target;
    }

    pub fn target(&self) -> Option<EventTarget> {
        self.lock().target.clone()
    }

    /// Scripts what happens to the next events, one entry each.
    pub fn push(&self, d: Delivery) {
        self.lock().script.push_back(d);
    }

    /// Every event built so far (sent, dropped or held).
    pub fn built(&self) -> Vec<Event> {
        self.lock().built.clone()
    }

    /// Every delivery attempt that has finished.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Sends still under way (delayed or awaiting an answer).
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Sends whatever is held (a held event with no later event would otherwise never go).
    pub fn flush(&self) {
        let held = std::mem::take(&mut self.lock().held);
        if !held.is_empty() {
            self.spawn(Duration::ZERO, held);
        }
    }

    /// Applies the next scripted fault to `event` and sends it (in the background).
    pub fn emit(&self, event: Event) {
        let (delivery, released) = {
            let mut s = self.lock();
            s.built.push(event.clone());
            let d = s.script.pop_front().unwrap_or(Delivery::Deliver);
            let released = if matches!(d, Delivery::Drop | Delivery::Hold) {
                Vec::new()
            } else {
                std::mem::take(&mut s.held)
            };
            if d == Delivery::Hold {
                s.held.push(event.clone());
            }
            (d, released)
        };
        // One task per emit, sending in order: the duplicate after the original, the events
        // this one releases after it, so they arrive out of order.
        let (delay, mut batch) = match delivery {
            Delivery::Drop | Delivery::Hold => return,
            Delivery::Deliver => (Duration::ZERO, vec![event]),
            Delivery::Duplicate => (Duration::ZERO, vec![event.clone(), event]),
            Delivery::Delay(d) => (d, vec![event]),
        };
        batch.extend(released);
        self.spawn(delay, batch);
    }

    fn spawn(&self, delay: Duration, events: Vec<Event>) {
        let Some(target) = self.target() else {
            return;
        };
        self.lock().in_flight += events.len();
        let me = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            for event in events {
                let mut req = me
                    .client
                    .post(&target.url)
                    .timeout(Duration::from_secs(12)) // Zendesk's fixed webhook timeout
                    .body(event.body.clone());
                for (k, v) in event.headers.iter().chain(target.headers.iter()) {
                    req = req.header(k, v);
                }
                let status = req.send().await.ok().map(|r| r.status().as_u16());
                let mut s = me.lock();
                s.in_flight -= 1;
                s.sent.push(Sent { event, status });
            }
        });
    }
}

/// Zendesk's account id on every event (`x-zendesk-account-id`, envelope `account_id`).
pub const ZENDESK_ACCOUNT_ID: u64 = 123456;
/// The fake's webhook id (`x-zendesk-webhook-id`).
pub const ZENDESK_WEBHOOK_ID: &str = "01F1KRFQ6BG29CNWFR60NK5FNY";

/// The events-mode `zen:event-type:ticket.status_changed` webhook for `ticket` (the ticket
/// object as the fake's API returns it, already in its new status), signed at `now`.
pub fn zendesk_status_changed(
    secret: &str,
    ticket: &serde_json::Value,
    previous: &str,
    now: std::time::SystemTime,
) -> Event {
    let upper = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_ascii_uppercase();
    let id = ticket["id"].as_u64().unwrap_or_default().to_string();
    let time = rfc3339(now);
    // Zendesk's event samples write statuses in upper case; ids in `detail` are strings.
    let body = serde_json::json!({
        "account_id": ZENDESK_ACCOUNT_ID,
        "detail": {
            "actor_id": "76872",
            "assignee_id": ticket["assignee_id"].as_u64().map(|n| n.to_string()),
            "brand_id": "1",
            "created_at": ticket["created_at"],
            "custom_status": "1",
            "description": ticket["description"],
            "external_id": ticket["external_id"],
            "form_id": "1",
            "group_id": ticket["group_id"].as_u64().map(|n| n.to_string()),
            "id": id,
            "is_public": false,
            "organization_id": null,
            "priority": ticket["priority"].as_str().map(str::to_ascii_uppercase),
            "requester_id": ticket["requester_id"].as_u64().map(|n| n.to_string()),
            "status": upper(&ticket["status"]),
            "subject": ticket["subject"],
            "submitter_id": ticket["submitter_id"].as_u64().map(|n| n.to_string()),
            "tags": ticket["tags"],
            "type": ticket["type"].as_str().map(str::to_ascii_uppercase),
            "updated_at": ticket["updated_at"],
            "via": {"channel": "web_service"}
        },
        "event": {
            "current": upper(&ticket["status"]),
            "previous": previous.to_ascii_uppercase(),
            "meta": {"sequence": {"id": uuid::Uuid::new_v4().to_string(), "position": 1, "total": 1}}
        },
        "id": uuid::Uuid::new_v4().to_string(),
        "subject": format!("zen:ticket:{id}"),
        "time": time,
        "type": "zen:event-type:ticket.status_changed",
        "zendesk_event_version": "2022-11-06"
    })
    .to_string();
    let invocation = uuid::Uuid::new_v4().as_u128() % 10_000_000_000;
    Event {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("user-agent".into(), "Zendesk Webhook".into()),
            (
                "x-zendesk-account-id".into(),
                ZENDESK_ACCOUNT_ID.to_string(),
            ),
            ("x-zendesk-webhook-id".into(), ZENDESK_WEBHOOK_ID.into()),
            (
                "x-zendesk-webhook-invocation-id".into(),
                invocation.to_string(),
            ),
            (
                "x-zendesk-webhook-signature".into(),
                sign(secret, &time, body.as_bytes()),
            ),
            ("x-zendesk-webhook-signature-timestamp".into(), time),
        ],
        body,
    }
}

/// What the §3.4 business rule sends for an incident whose state changed from `previous`
/// (`fields`: the incident's columns after the change), signed at `now`.
pub fn servicenow_state_changed(
    secret: &str,
    sys_id: &str,
    number: &str,
    fields: &std::collections::BTreeMap<String, String>,
    previous: &str,
    now: std::time::SystemTime,
) -> Event {
    let f = |k: &str| fields.get(k).cloned().unwrap_or_default();
    // Field order as the rule's script writes them (JSON.stringify keeps insertion order).
    let mut body = String::from(r#"{"v":1,"system":"servicenow","sys_id":"#);
    let push = |out: &mut String, key: &str, value: &str| {
        out.push_str(&format!(",\"{key}\":{}", serde_json::Value::from(value)));
    };
    body.push_str(&serde_json::Value::from(sys_id).to_string());
    push(&mut body, "number", number);
    push(&mut body, "state", &f("state"));
    push(&mut body, "previous_state", previous);
    push(&mut body, "close_code", &f("close_code"));
    push(&mut body, "correlation_id", &f("correlation_id"));
    push(&mut body, "sys_updated_on", &f("sys_updated_on"));
    push(&mut body, "sys_mod_count", &f("sys_mod_count"));
    body.push('}');
    let ts = rfc3339(now);
    Event {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("user-agent".into(), "ServiceNow/1.0".into()),
            (
                "x-bridge-signature".into(),
                sign(secret, &ts, body.as_bytes()),
            ),
            ("x-bridge-timestamp".into(), ts),
        ],
        body,
    }
}

/// RFC 3339 UTC, whole seconds (both systems' timestamp header format).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference `close-the-loop.md` §4.2, test vector 2: the construction the handler's
    /// verifier must accept byte for byte.
    #[test]
    fn zendesk_signature_is_reference_vector_2() {
        let body = r#"{"ticket_id":"35436","external_id":"qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm","status":"Solved","updated_at":"2021-03-25T05:09:20Z"}"#;
        assert_eq!(body.len(), 138);
        assert_eq!(
            sign(
                "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==",
                "2021-03-25T05:09:27Z",
                body.as_bytes()
            ),
            "f/5UHBOoRDSK7Xx0fZ00XODkKwbS/o85k91eVfokiEM="
        );
    }

    /// Reference `close-the-loop.md` §3.4, the worked ServiceNow request.
    #[test]
    fn servicenow_signature_is_the_reference_worked_example() {
        let body = r#"{"v":1,"system":"servicenow","sys_id":"c537bae64f411200adf9f8e18110c76e","number":"INC0010002","state":"6","close_code":"Solved (Permanently)","correlation_id":"qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm","sys_updated_on":"2026-01-05 10:38:50","sys_mod_count":"7"}"#;
        assert_eq!(
            sign(
                "bridge-servicenow-test-secret",
                "2026-01-05T10:38:52Z",
                body.as_bytes()
            ),
            "TMUBABScB+UDBH6ltYZn+sAG70vpo6krpMM9QPfr//g="
        );
    }

    /// Drop, duplicate and reorder as scripted, every delivery signed over its exact bytes.
    #[tokio::test]
    async fn faults_shape_what_arrives_and_every_copy_verifies() {
        use axum::http::HeaderMap;
        let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |h: HeaderMap, body: String| async move {
                sink.lock().expect("sink").push((h, body));
                "ok"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = EventSender::default();
        sender.set_target(Some(EventTarget {
            url,
            secret: "s3cret".into(),
            headers: vec![("x-functions-key".into(), "k".into())],
        }));
        for d in [
            Delivery::Drop,
            Delivery::Duplicate,
            Delivery::Hold,
            Delivery::Deliver,
        ] {
            sender.push(d);
        }
        let ticket = |n: u64, status: &str| serde_json::json!({"id": n, "status": status, "external_id": "qualtrics:SV_1:R_1", "updated_at": "2026-12-01T00:00:00Z"});
        let now = std::time::SystemTime::now();
        for n in 1..=4 {
            sender.emit(zendesk_status_changed(
                "s3cret",
                &ticket(n, "solved"),
                "open",
                now,
            ));
        }
        for _ in 0..200 {
            if got.lock().expect("sink").len() == 4 && sender.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = got.lock().expect("sink").clone();
        let ids: Vec<String> = got
            .iter()
            .map(|(_, b)| {
                let v: serde_json::Value = serde_json::from_str(b).expect("json");
                v["detail"]["id"].as_str().expect("id").to_string()
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ["2", "2", "3", "4"], "1 dropped, 2 twice: {ids:?}");
        let at = |id: &str| ids.iter().position(|i| i == id);
        assert!(
            at("3") > at("4"),
            "the held event arrives after the next one: {ids:?}"
        );
        assert_eq!(sender.built().len(), 4);
        for (h, body) in &got {
            let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert_eq!(
                header("x-zendesk-webhook-signature"),
                sign(
                    "s3cret",
                    header("x-zendesk-webhook-signature-timestamp"),
                    body.as_bytes()
                )
            );
            assert_eq!(header("x-functions-key"), "k");
        }
    }
}
