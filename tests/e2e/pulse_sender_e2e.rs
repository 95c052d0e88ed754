//! Issue 18's `PulseSender` end to end: the real release binary behind devkit's local host, on
//! Azurite, with the fake Qualtrics. `PulseRequest` texts go straight onto `pulse-requests`;
//! the tests check what reached Qualtrics (contact bodies, transactions, batches, the one
//! distribution per event and whom it went to), the event ledger, and that no address reached
//! a log.

use crate::common;

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

fn person(email: &str) -> Value {
    devkit::canary::register(email);
    json!({"email": email, "name": "Sam Rivera", "attributes": {"site": "Leeds"}})
}

/// A request text; `part` is `(index, count)` for one part of a split event.
fn request_part(
    event_id: &str,
    event_type: &str,
    emails: &[&str],
    part: Option<(u32, u32)>,
) -> String {
    let people: Vec<Value> = emails.iter().map(|e| person(e)).collect();
    let mut r = json!({
        "v": 1, "format": "bridge", "auth": "token", "receivedAt": "2026-12-07T10:00:00Z",
        "event": {"eventId": event_id, "eventType": event_type, "occurredAt": "2026-12-07T09:59:00Z",
                  "people": people, "attributes": {"sensor": "VPN-17", "secret": "not sent"}}
    });
    if let Some((index, count)) = part {
        r["part"] = json!({"index": index, "count": count});
    }
    r.to_string()
}

fn request(event_id: &str, event_type: &str, emails: &[&str]) -> String {
    request_part(event_id, event_type, emails, None)
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

/// Whom each distribution went to, sorted, one entry per email sent.
fn recipients(q: &FakeQualtrics) -> Vec<Vec<String>> {
    q.distributions()
        .iter()
        .map(|d| {
            let mut r: Vec<String> = d.recipients().iter().map(|e| e.to_string()).collect();
            r.sort();
            r
        })
        .collect()
}

fn sorted(emails: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = emails.iter().map(|e| e.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn one_event_is_one_batch_distribution_even_when_duplicated() {
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

    // Contacts: upserted into the list; the event's data travels on the transactions.
    let want = |email: &str| {
        format!(
            r#"{{"email":"{email}","embeddedData":{{}},"firstName":"Sam","lastName":"Rivera","unsubscribed":false}}"#
        )
    };
    let contacts = e.q.contact_upserts();
    assert!(!contacts.is_empty());
    for (list, body) in &contacts {
        assert_eq!(list, "CG_pulse1");
        assert!(body == &want(a) || body == &want(b), "contact body {body}");
    }
    assert_eq!(
        recipients(&e.q),
        [sorted(&[a, b])],
        "one distribution, each person once"
    );
    let batches = e.q.batch_members();
    assert_eq!(batches.len(), 1, "one transaction batch: {batches:?}");
    let d = &e.q.distributions()[0];
    assert_eq!(
        d.body["recipients"],
        json!({"transactionBatchId": batches[0].0})
    );
    assert_eq!(
        d.body["message"],
        json!({"libraryId": "UR_lib1", "messageId": "MS_msg1"})
    );
    assert_eq!(d.body["surveyLink"]["surveyId"], "SV_pulse1");
    assert_eq!(d.body["surveyLink"]["type"], "Individual");
    assert_eq!(d.body["header"]["subject"], "VPN check-in");
    // Each batched transaction: the event and the allow-listed attributes, nothing else.
    let txs = e.q.transactions();
    let mut batched = std::collections::HashSet::new();
    for (id, t) in &txs {
        assert_eq!(t.mailing_list, "CG_pulse1");
        assert_eq!(
            Value::Object(t.data.clone()),
            json!({"eventId": "evt-0001", "eventType": "vpn.drop", "sensor": "VPN-17", "site": "Leeds"}),
            "{id}"
        );
        batched.insert(id.clone());
    }
    let l = ledger(&e.stack, "evt-0001").await;
    assert_eq!(l["v"], 2);
    assert_eq!(l["batch"]["status"], "done");
    assert_eq!(l["batch"]["id"], batches[0].0);
    assert_eq!(l["distribution"]["status"], "done");
    assert_eq!(l["distribution"]["id"], d.id);
    assert_eq!(l["parts"]["1"]["added"], 2);
    let text = l.to_string();
    assert!(
        !text.contains(a) && !text.contains(b),
        "ledger keyed by hash"
    );
    common::assert_no_address_logged(&e.stack, &[a, b]);
}

#[tokio::test]
async fn a_split_event_is_sent_once_every_part_is_in_with_everyone_once() {
    let e = env(&[]).await;
    let people = [
        "part.one1@example.org",
        "part.one2@example.org",
        "part.two1@example.org",
        "part.three1@example.org",
    ];
    let p1 = request_part("evt-0050", "vpn.drop", &people[0..2], Some((1, 3)));
    let p2 = request_part("evt-0050", "vpn.drop", &people[2..3], Some((2, 3)));
    // The last part repeats a person of the first: still one survey for them.
    let p3 = request_part(
        "evt-0050",
        "vpn.drop",
        &[people[3], people[0]],
        Some((3, 3)),
    );
    put(&e.stack, &p1).await;
    put(&e.stack, &p2).await;
    put(&e.stack, &p2).await;
    e.stack.settle(SETTLE).await;
    assert!(
        e.q.distributions().is_empty(),
        "no distribution while a part is missing"
    );
    put(&e.stack, &p3).await;
    put(&e.stack, &p1).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(recipients(&e.q), [sorted(&people)]);
    let batches = e.q.batch_members();
    assert_eq!(batches.len(), 1);
    let mut members = batches[0].1.clone();
    members.sort();
    assert_eq!(members, sorted(&people), "each person in the batch once");
    let l = ledger(&e.stack, "evt-0050").await;
    assert_eq!(l["partCount"], 3);
    assert_eq!(l["distribution"]["status"], "done");
    common::assert_no_address_logged(&e.stack, &people);
}

#[tokio::test]
async fn another_event_type_in_the_same_category_inside_the_cool_down_sends_nothing() {
    let e = env(&[]).await;
    let a = "alex.cooldown@example.org";
    let fresh = "fresh.person@example.org";
    put(&e.stack, &request("evt-0100", "vpn.drop", &[a])).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(recipients(&e.q), [sorted(&[a])]);
    put(&e.stack, &request("evt-0101", "vpn.slow", &[a, fresh])).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(
        recipients(&e.q),
        [sorted(&[a]), sorted(&[fresh])],
        "inside the vpn cool-down: not in the second batch"
    );
    let second = &e.q.distributions()[1];
    assert_eq!(second.body["surveyLink"]["surveyId"], "SV_pulse2");
    let l = ledger(&e.stack, "evt-0101").await;
    assert_eq!(l["parts"]["1"]["cooling"], 1);
    assert_eq!(l["parts"]["1"]["added"], 1);
    // Everyone in cool-down: no batch, no distribution.
    put(&e.stack, &request("evt-0102", "vpn.drop", &[a, fresh])).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(e.q.distributions().len(), 2, "nothing for evt-0102");
    assert_eq!(e.q.batch_members().len(), 2);
    let l = ledger(&e.stack, "evt-0102").await;
    assert_eq!(l["distribution"]["status"], "none");
    assert_eq!(l["parts"]["1"]["cooling"], 2);
    common::assert_no_address_logged(&e.stack, &[a, fresh]);
}

async fn crashed(e: &Env, point: &str) {
    assert!(
        e.stack
            .app_dir
            .path()
            .join(format!(".bridge-test-crash-{point}"))
            .exists(),
        "the handler aborted at {point}"
    );
    assert!(
        e.stack.host.crash_restarts() >= 1,
        "the host restarted the handler"
    );
}

#[tokio::test]
async fn sigkill_between_the_distribution_claim_and_its_send_never_sends() {
    let e = env(&[("BRIDGE_TEST_CRASH_AT", "pulse-after-claim")]).await;
    let a = "kim.crash@example.org";
    let text = request("evt-0200", "vpn.drop", &[a]);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    crashed(&e, "pulse-after-claim").await;
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert!(
        e.q.distributions().is_empty(),
        "a claim without an outcome is never resent"
    );
    assert!(e
        .q
        .loop_calls()
        .iter()
        .all(|c| c.path != "/API/v3/distributions"));
    assert_eq!(e.q.batch_members().len(), 1, "the batch was made once");
    let l = ledger(&e.stack, "evt-0200").await;
    assert_eq!(l["batch"]["status"], "done");
    assert_eq!(l["distribution"]["status"], "ambiguous");
}

#[tokio::test]
async fn sigkill_between_a_person_claim_and_the_batch_never_adds_them() {
    let e = env(&[("BRIDGE_TEST_CRASH_AT", "pulse-after-person-claim")]).await;
    let a = "kim.crash2@example.org";
    let text = request("evt-0250", "vpn.drop", &[a]);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    crashed(&e, "pulse-after-person-claim").await;
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert!(
        e.q.batch_members().is_empty(),
        "never added after the crash"
    );
    assert!(e.q.distributions().is_empty());
    let l = ledger(&e.stack, "evt-0250").await;
    assert_eq!(l["parts"]["1"]["ambiguous"], 1);
    assert_eq!(l["distribution"]["status"], "none");
}

#[tokio::test]
async fn a_lost_batch_answer_is_never_repeated() {
    let e = env(&[]).await;
    let a = "lost.answer@example.org";
    e.q.hang_next_batch_calls(1);
    let text = request("evt-0275", "vpn.drop", &[a]);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(
        e.q.batch_members().len(),
        1,
        "the batch create was not repeated"
    );
    assert!(
        e.q.distributions().is_empty(),
        "nothing sent to an unknown batch"
    );
    let l = ledger(&e.stack, "evt-0275").await;
    assert_eq!(l["batch"]["status"], "ambiguous");
    assert_eq!(l["distribution"]["status"], "none");
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
    assert_eq!(recipients(&e.q), [sorted(&[a])]);
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
