//! Issue 18's `PulseSender` end to end: the real release binary behind devkit's local host, on
//! Azurite, with the fake Qualtrics. `PulseRequest` texts go straight onto `pulse-requests`;
//! the tests check what reached Qualtrics (contact bodies, distributions), the event ledger,
//! and that no address reached a log.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{blob_text, storage_of, Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use serde_json::{json, Value};
use std::time::Duration;

const QUEUE: &str = "pulse-requests";
const TOKEN: &str = "q-pulse-token";
const SETTLE: Duration = Duration::from_secs(120);

/// Two event types sharing the `vpn` cool-down category.
const BRIDGE: &str = r#"
[[pulses]]
event_type = "vpn.drop"
category = "vpn"
survey = "SV_pulse1"
library = "UR_lib1"
message = "MS_msg1"
directory = "POOL_dir1"
mailing_list = "CG_pulse1"
embedded_data = ["sensor", "site"]
cooldown_hours = 24
subject = "VPN check-in"

[[pulses]]
event_type = "vpn.slow"
category = "vpn"
survey = "SV_pulse2"
library = "UR_lib1"
message = "MS_msg2"
directory = "POOL_dir1"
mailing_list = "CG_pulse1"
"#;

struct Env {
    stack: Stack,
    q: FakeQualtrics,
}

async fn env(settings: &[(&str, &str)]) -> Env {
    let q = FakeQualtrics::start(TOKEN).await.expect("fake qualtrics");
    let mut b = StackBuilder::default()
        .bridge_toml(BRIDGE)
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("ANALYTICS_HASH_KEY", "pulse-test-hash-key-0123456789")
        .setting("PULSE_RETRY_MAX_DELAY_SECONDS", "2")
        .setting("PULSE_CALL_TIMEOUT_SECONDS", "2");
    for (k, v) in settings {
        b = b.setting(k, v);
    }
    Env {
        stack: b.start().await,
        q,
    }
}

fn request(event_id: &str, event_type: &str, emails: &[&str]) -> String {
    for e in emails {
        devkit::canary::register(e);
    }
    let people: Vec<Value> = emails
        .iter()
        .map(|e| json!({"email": e, "name": "Sam Rivera", "attributes": {"site": "Leeds"}}))
        .collect();
    json!({
        "v": 1, "format": "bridge", "auth": "token", "receivedAt": "2026-12-07T10:00:00Z",
        "event": {"eventId": event_id, "eventType": event_type, "occurredAt": "2026-12-07T09:59:00Z",
                  "people": people, "attributes": {"sensor": "VPN-17", "secret": "not sent"}}
    })
    .to_string()
}

async fn put(stack: &Stack, text: &str) {
    stack
        .queues
        .create_queue(QUEUE)
        .await
        .expect("create queue");
    stack
        .queues
        .put_message(QUEUE, &STANDARD.encode(text))
        .await
        .expect("put");
}

async fn ledger(stack: &Stack, event_id: &str) -> Value {
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, event_id.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = blob_text(
        &storage_of(&stack.azurite),
        "bridge-state",
        &format!("pulse/{hash}.json"),
    )
    .await
    .expect("pulse ledger entry");
    serde_json::from_str(&text).expect("ledger JSON")
}

fn statuses(l: &Value) -> Vec<String> {
    let mut v: Vec<String> = l["people"]
        .as_object()
        .expect("people")
        .values()
        .map(|r| r["status"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn sent_to(q: &FakeQualtrics, email: &str) -> usize {
    q.distributions()
        .iter()
        .filter(|d| d.email == email)
        .count()
}

#[tokio::test]
async fn one_event_upserts_contacts_and_sends_once_even_when_duplicated() {
    let e = env(&[]).await;
    let a = "sam.rivera1@example.org";
    let b = "sam.rivera2@example.org";
    let text = request("evt-0001", "vpn.drop", &[a, b]);
    // Two concurrent copies, then a late duplicate.
    put(&e.stack, &text).await;
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;

    let contacts = e.q.contact_upserts();
    assert!(!contacts.is_empty());
    let want = |email: &str| {
        format!(
            r#"{{"email":"{email}","embeddedData":{{"sensor":"VPN-17","site":"Leeds"}},"firstName":"Sam","lastName":"Rivera","unsubscribed":false}}"#
        )
    };
    for (list, body) in &contacts {
        assert_eq!(list, "CG_pulse1");
        assert!(body == &want(a) || body == &want(b), "contact body {body}");
    }
    assert_eq!(sent_to(&e.q, a), 1, "one survey per person per event");
    assert_eq!(sent_to(&e.q, b), 1, "one survey per person per event");
    for d in e.q.distributions() {
        assert_eq!(d.body["recipients"]["mailingListId"], "CG_pulse1");
        assert!(d.body["recipients"]["contactId"]
            .as_str()
            .unwrap()
            .starts_with("CGC_"));
        assert_eq!(
            d.body["message"],
            json!({"libraryId": "UR_lib1", "messageId": "MS_msg1"})
        );
        assert_eq!(d.body["surveyLink"]["surveyId"], "SV_pulse1");
        assert_eq!(d.body["surveyLink"]["type"], "Individual");
        assert_eq!(d.body["header"]["subject"], "VPN check-in");
    }
    let l = ledger(&e.stack, "evt-0001").await;
    assert_eq!(statuses(&l), ["sent", "sent"]);
    let text = l.to_string();
    assert!(
        !text.contains(a) && !text.contains(b),
        "ledger keyed by hash"
    );
    common::assert_no_address_logged(&e.stack, &[a, b]);
}

#[tokio::test]
async fn another_event_type_in_the_same_category_inside_the_cool_down_sends_nothing() {
    let e = env(&[]).await;
    let a = "alex.cooldown@example.org";
    let fresh = "fresh.person@example.org";
    put(&e.stack, &request("evt-0100", "vpn.drop", &[a])).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(sent_to(&e.q, a), 1);
    put(&e.stack, &request("evt-0101", "vpn.slow", &[a, fresh])).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(sent_to(&e.q, a), 1, "inside the vpn cool-down: dropped");
    assert_eq!(sent_to(&e.q, fresh), 1, "others still surveyed");
    let l = ledger(&e.stack, "evt-0101").await;
    assert_eq!(statuses(&l), ["cooling", "sent"]);
    common::assert_no_address_logged(&e.stack, &[a, fresh]);
}

#[tokio::test]
async fn sigkill_between_claim_and_send_never_sends() {
    let e = env(&[("BRIDGE_TEST_CRASH_AT", "pulse-after-claim")]).await;
    let a = "kim.crash@example.org";
    let text = request("evt-0200", "vpn.drop", &[a]);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert!(
        e.stack
            .app_dir
            .path()
            .join(".bridge-test-crash-pulse-after-claim")
            .exists(),
        "the handler aborted after the claim"
    );
    assert!(
        e.stack.host.crash_restarts() >= 1,
        "the host restarted the handler"
    );
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(
        sent_to(&e.q, a),
        0,
        "a claim without an outcome is never resent"
    );
    assert!(e
        .q
        .loop_calls()
        .iter()
        .all(|c| c.path != "/API/v3/distributions"));
    let l = ledger(&e.stack, "evt-0200").await;
    assert_eq!(statuses(&l), ["ambiguous"]);
}

#[tokio::test]
async fn a_429_storm_is_paced_by_retry_after() {
    let e = env(&[]).await;
    let a = "lee.throttle@example.org";
    e.q.throttle_next(6, Some(1));
    put(&e.stack, &request("evt-0300", "vpn.drop", &[a])).await;
    e.stack.settle(SETTLE).await;
    let calls = e.q.loop_calls();
    assert_eq!(
        calls.iter().filter(|c| c.status == 429).count(),
        6,
        "{calls:?}"
    );
    for w in calls.windows(2).filter(|w| w[0].status == 429) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(750),
            "a call only {gap:?} after a 429"
        );
    }
    assert_eq!(sent_to(&e.q, a), 1);
}

#[tokio::test]
async fn an_unhandled_event_type_goes_to_poison_with_the_original_text() {
    let e = env(&[]).await;
    let text = request("evt-0400", "disk.full", &["pat.poison@example.org"]);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    let poisoned = e.stack.queue_texts("pulse-requests-poison").await;
    assert_eq!(poisoned, [text]);
    assert!(e.q.distributions().is_empty());
}
