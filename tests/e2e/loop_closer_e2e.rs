//! Issue 17's `LoopCloser` end to end: the real release binary behind devkit's local host, on
//! Azurite, with the fake Qualtrics. `LoopRequest` texts go straight onto `loop-requests`;
//! the tests check what reached Qualtrics (write-back bytes, distributions, JSON Events), the
//! loop ledger, and the poison queue.

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{blob_text, storage_of, Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use serde_json::{json, Value};
use std::time::Duration;

const QUEUE: &str = "loop-requests";
const POISON: &str = "loop-requests-poison";
const TOKEN: &str = "q-loop-token";
const SV: &str = "SV_loop1";
const SETTLE: Duration = Duration::from_secs(120);

fn bridge(followup_extra: &str) -> String {
    format!(
        r#"[[surveys]]
id = "{SV}"
[surveys.loop]
followup = {{ survey = "SV_followup1", library = "UR_lib1", message = "MS_msg1", mailing_list = "CG_list1", directory = "POOL_dir1"{followup_extra} }}
json_event = {{ context_id = "{SV}", user_id = "UR_user1", brand_id = "acme", trigger_id = "OC_trig1" }}
"#
    )
}

struct Env {
    stack: Stack,
    q: FakeQualtrics,
}

async fn env(bridge: &str, settings: &[(&str, &str)]) -> Env {
    let q = FakeQualtrics::start(TOKEN).await.expect("fake qualtrics");
    let mut b = StackBuilder::default()
        .bridge_toml(bridge)
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("LOOP_RETRY_MAX_DELAY_SECONDS", "2")
        .setting("LOOP_CALL_TIMEOUT_SECONDS", "2");
    for (k, v) in settings {
        b = b.setting(k, v);
    }
    Env {
        stack: b.start().await,
        q,
    }
}

/// A response of the survey whose respondent has an address; returns its id and the address.
fn respondent(q: &FakeQualtrics, n: usize) -> (String, String) {
    let rid = q.add_responses(SV, 1).remove(0);
    let email = format!("pat.respondent{n}@example.org");
    q.set_recipient(&rid, &email, "Pat", "Respondent");
    (rid, email)
}

/// A ServiceNow loop request.
fn request(
    ticket: &str,
    rid: &str,
    state: &str,
    at: &str,
    seq: u64,
    close: Option<&str>,
) -> String {
    let status = match state {
        "open" => "2",
        "resolved" => "6",
        "closed" => "7",
        _ => "8",
    };
    json!({
        "v": 1, "system": "servicenow", "ticketId": ticket, "ticketNumber": format!("INC{}", &ticket[..7]),
        "surveyId": SV, "responseId": rid, "status": status, "state": state, "closeCode": close,
        "changedAt": at, "sequence": seq, "source": "event", "eventId": format!("{ticket}:{seq}"),
        "receivedAt": "2026-12-07T00:00:00Z"
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

async fn ledger(stack: &Stack, ticket: &str) -> Value {
    let s = storage_of(&stack.azurite);
    let text = blob_text(
        &s,
        "bridge-state",
        &format!("loop/servicenow/{ticket}.json"),
    )
    .await
    .expect("loop ledger entry");
    serde_json::from_str(&text).expect("ledger JSON")
}

/// The `TicketState` of every write-back to `rid`, in order.
fn written_states(q: &FakeQualtrics, rid: &str) -> Vec<String> {
    q.response_updates()
        .iter()
        .filter(|u| u.response_id == rid)
        .map(|u| {
            let v: Value = serde_json::from_str(&u.body).expect("JSON body");
            v["embeddedData"]["TicketState"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn surveys_to(q: &FakeQualtrics, email: &str) -> usize {
    q.distributions()
        .iter()
        .filter(|d| d.email == email)
        .count()
}

#[tokio::test]
async fn write_back_is_byte_exact_and_duplicates_send_one_survey() {
    let e = env(&bridge(""), &[]).await;
    let (rid, email) = respondent(&e.q, 1);
    let ticket = "c537bae64f411200adf9f8e18110c76e";
    let resolved = request(
        ticket,
        &rid,
        "resolved",
        "2026-12-07T10:00:00Z",
        5,
        Some("Solved (Permanently)"),
    );
    // Three copies of the resolution and an older state, all at once (concurrent workers).
    for text in [
        &resolved,
        &resolved,
        &request(ticket, &rid, "open", "2026-12-07T09:00:00Z", 2, None),
        &resolved,
    ] {
        put(&e.stack, text).await;
    }
    e.stack.settle(SETTLE).await;

    let want = format!(
        r#"{{"surveyId":"{SV}","resetRecordedDate":false,"embeddedData":{{"BridgeWriteBack":"1","TicketCloseCode":"Solved (Permanently)","TicketId":"{ticket}","TicketNumber":"INCc537bae","TicketState":"resolved","TicketStateAt":"2026-12-07T10:00:00Z","TicketSystem":"servicenow"}}}}"#
    );
    // The older state may be written first if a worker takes it before any resolution (it
    // was then the newest seen); whatever the order, the last write-back is the resolution.
    let updates = e.q.response_updates();
    let last = updates.last().expect("no write-back");
    assert_eq!(last.body, want, "write-back bytes");
    for u in &updates {
        assert_eq!(u.response_id, rid);
        assert!(
            u.body == want || u.body.contains(r#""TicketState":"open""#),
            "unexpected write-back {}",
            u.body
        );
    }
    let sent = e.q.distributions();
    assert_eq!(sent.len(), 1, "one follow-up survey per ticket");
    let d = &sent[0];
    assert_eq!(d.email, email);
    assert_eq!(d.body["recipients"]["mailingListId"], "CG_list1");
    assert!(d.body["recipients"]["contactId"]
        .as_str()
        .unwrap()
        .starts_with("CGC_"));
    assert_eq!(d.body["surveyLink"]["surveyId"], "SV_followup1");
    assert_eq!(d.body["surveyLink"]["type"], "Individual");
    assert_eq!(
        d.body["message"],
        json!({"libraryId": "UR_lib1", "messageId": "MS_msg1"})
    );
    let events = e.q.json_events();
    assert_eq!(events.len(), 1, "one JSON event per ticket and state");
    assert_eq!(events[0].body["eventType"], "Ticket.Resolved");
    assert_eq!(events[0].body["data"]["responseId"], rid.as_str());
    assert_eq!(events[0].query["triggerId"], "OC_trig1");

    let l = ledger(&e.stack, ticket).await;
    assert_eq!(l["applied"]["state"], "resolved");
    assert_eq!(l["writeBack"]["state"], "resolved");
    assert_eq!(l["followUp"]["status"], "sent");
    assert_eq!(l["followUp"]["distributionId"], d.id.as_str());
    assert_eq!(l["jsonEvents"][0]["status"], "sent");
    common::assert_no_address_logged(&e.stack, &[&email]);
}

#[tokio::test]
async fn reordered_changes_converge_to_the_newest_state() {
    let e = env(&bridge(""), &[]).await;
    let (rid, email) = respondent(&e.q, 2);
    let ticket = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    // Newest first, then the older ones: each must be a no-op.
    for text in [
        request(
            ticket,
            &rid,
            "closed",
            "2026-12-07T12:00:00Z",
            9,
            Some("Solved (Permanently)"),
        ),
        request(ticket, &rid, "open", "2026-12-07T09:00:00Z", 2, None),
        request(
            ticket,
            &rid,
            "resolved",
            "2026-12-07T10:00:00Z",
            5,
            Some("Solved (Permanently)"),
        ),
        // Same second, lower sequence: older too.
        request(ticket, &rid, "open", "2026-12-07T12:00:00Z", 8, None),
    ] {
        put(&e.stack, &text).await;
        e.stack.settle(SETTLE).await;
    }
    assert_eq!(
        written_states(&e.q, &rid),
        ["closed"],
        "older states never overwrite"
    );
    assert_eq!(surveys_to(&e.q, &email), 1);
    let l = ledger(&e.stack, ticket).await;
    assert_eq!(l["applied"]["state"], "closed");
    assert_eq!(l["applied"]["sequence"], 9);
    assert_eq!(l["followUp"]["status"], "sent");
    let ignored = e
        .stack
        .host
        .records()
        .iter()
        .flat_map(|r| r.logs.clone())
        .filter(|l| l.contains("ignored"))
        .count();
    assert_eq!(ignored, 3, "each older change is logged as ignored");
}

#[tokio::test]
async fn reopened_then_resolved_follows_the_config() {
    let e = env(
        &bridge(r#", close_codes = ["Solved (Permanently)"], skip_if_reopened_within_hours = 24"#),
        &[],
    )
    .await;
    // A: surveyed at the first resolution; reopened and resolved again, never a second survey.
    let (ra, ea) = respondent(&e.q, 3);
    let ta = "aaaa0000aaaa0000aaaa0000aaaa0000";
    // B: first resolution's close code is not allowed; reopened 2 h later and resolved within
    // 24 h of the reopening: skipped by `skip_if_reopened_within_hours`.
    let (rb, eb) = respondent(&e.q, 4);
    let tb = "bbbb0000bbbb0000bbbb0000bbbb0000";
    let steps = [
        (
            "resolved",
            "2026-12-07T10:00:00Z",
            5,
            Some("Solved (Permanently)"),
            Some("Workaround"),
        ),
        ("open", "2026-12-07T12:00:00Z", 6, None, None),
        (
            "resolved",
            "2026-12-07T14:00:00Z",
            7,
            Some("Solved (Permanently)"),
            Some("Solved (Permanently)"),
        ),
    ];
    for (state, at, seq, code_a, code_b) in steps {
        put(&e.stack, &request(ta, &ra, state, at, seq, code_a)).await;
        put(&e.stack, &request(tb, &rb, state, at, seq, code_b)).await;
        e.stack.settle(SETTLE).await;
    }
    assert_eq!(
        written_states(&e.q, &ra),
        ["resolved", "reopened", "resolved"]
    );
    assert_eq!(
        written_states(&e.q, &rb),
        ["resolved", "reopened", "resolved"]
    );
    assert_eq!(surveys_to(&e.q, &ea), 1, "at most one survey per ticket");
    assert_eq!(surveys_to(&e.q, &eb), 0, "skipped by the reopen rule");
    let a = ledger(&e.stack, ta).await;
    assert_eq!(a["followUp"]["status"], "sent");
    assert_eq!(a["reopenedAt"], "2026-12-07T12:00:00Z");
    let b = ledger(&e.stack, tb).await;
    assert_eq!(b["followUp"]["status"], "skipped");
    let why = b["followUp"]["reason"].as_str().unwrap();
    assert!(why.contains("reopened within 24h"), "{why}");
    common::assert_no_address_logged(&e.stack, &[&ea, &eb]);
}

#[tokio::test]
async fn a_close_code_outside_the_allow_list_gets_no_survey() {
    let e = env(&bridge(r#", close_codes = ["Solved (Permanently)"]"#), &[]).await;
    let (rid, email) = respondent(&e.q, 5);
    let ticket = "cccc0000cccc0000cccc0000cccc0000";
    put(
        &e.stack,
        &request(
            ticket,
            &rid,
            "resolved",
            "2026-12-07T10:00:00Z",
            5,
            Some("Workaround"),
        ),
    )
    .await;
    e.stack.settle(SETTLE).await;
    assert_eq!(
        written_states(&e.q, &rid),
        ["resolved"],
        "the write-back still happens"
    );
    assert_eq!(surveys_to(&e.q, &email), 0);
    let l = ledger(&e.stack, ticket).await;
    assert_eq!(l["followUp"]["status"], "skipped");
    assert!(l["followUp"]["reason"]
        .as_str()
        .unwrap()
        .contains("close_codes"));
    // Closing it with the same code decides again, and skips again.
    put(
        &e.stack,
        &request(
            ticket,
            &rid,
            "closed",
            "2026-12-07T11:00:00Z",
            6,
            Some("Workaround"),
        ),
    )
    .await;
    e.stack.settle(SETTLE).await;
    assert_eq!(surveys_to(&e.q, &email), 0);
}

#[tokio::test]
async fn sigkill_between_claim_and_send_never_sends_a_survey() {
    let e = env(
        &bridge(""),
        &[
            ("BRIDGE_TEST_CRASH_AT", "loop-after-followup-claim"),
            ("LOOP_CALL_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let (rid, email) = respondent(&e.q, 6);
    let ticket = "dddd0000dddd0000dddd0000dddd0000";
    let text = request(ticket, &rid, "resolved", "2026-12-07T10:00:00Z", 5, None);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert!(
        e.stack
            .app_dir
            .path()
            .join(".bridge-test-crash-loop-after-followup-claim")
            .exists(),
        "the handler aborted after the claim"
    );
    assert!(
        e.stack.host.crash_restarts() >= 1,
        "the host restarted the killed handler"
    );
    // A duplicate later finds the ledger settled.
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(
        surveys_to(&e.q, &email),
        0,
        "a claim without an outcome is never resent"
    );
    assert!(e
        .q
        .loop_calls()
        .iter()
        .all(|c| c.path != "/API/v3/distributions"));
    let l = ledger(&e.stack, ticket).await;
    assert_eq!(l["followUp"]["status"], "ambiguous");
    assert!(l["followUp"]["reason"]
        .as_str()
        .unwrap()
        .contains("not resent"));
    assert_eq!(written_states(&e.q, &rid), ["resolved"]);
}

#[tokio::test]
async fn a_lost_distribution_answer_is_ambiguous_and_never_resent() {
    let e = env(&bridge(""), &[]).await;
    e.q.hang_next_distributions(1);
    let (rid, email) = respondent(&e.q, 7);
    let ticket = "eeee0000eeee0000eeee0000eeee0000";
    let text = request(ticket, &rid, "resolved", "2026-12-07T10:00:00Z", 5, None);
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    put(&e.stack, &text).await;
    e.stack.settle(SETTLE).await;
    assert_eq!(
        surveys_to(&e.q, &email),
        1,
        "created once (its answer was lost), never again"
    );
    let l = ledger(&e.stack, ticket).await;
    assert_eq!(l["followUp"]["status"], "ambiguous");
    assert!(l["followUp"]["distributionId"].is_null());
}

#[tokio::test]
async fn a_429_storm_is_paced_by_retry_after() {
    let e = env(&bridge(""), &[]).await;
    let (rid, email) = respondent(&e.q, 8);
    let ticket = "ffff0000ffff0000ffff0000ffff0000";
    e.q.throttle_next(6, Some(1));
    put(
        &e.stack,
        &request(ticket, &rid, "resolved", "2026-12-07T10:00:00Z", 5, None),
    )
    .await;
    e.stack.settle(SETTLE).await;
    let calls = e.q.loop_calls();
    let throttled: Vec<_> = calls.iter().filter(|c| c.status == 429).collect();
    assert_eq!(throttled.len(), 6, "{calls:?}");
    // Each call after a 429 waited for its Retry-After (1 s, jittered by at most 20 %).
    for w in calls.windows(2).filter(|w| w[0].status == 429) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(750),
            "a call only {gap:?} after a 429"
        );
    }
    assert_eq!(written_states(&e.q, &rid), ["resolved"]);
    assert_eq!(surveys_to(&e.q, &email), 1);
}

#[tokio::test]
async fn permanent_failures_go_to_poison_with_the_original_text_and_a_reason() {
    let e = env(&bridge(""), &[]).await;
    let (rid, _) = respondent(&e.q, 9);
    let unknown_survey = request(
        "1111000011110000",
        &rid,
        "resolved",
        "2026-12-07T10:00:00Z",
        5,
        None,
    )
    .replace(SV, "SV_notconfigured");
    // The response does not exist in Qualtrics: the write-back's 404 cannot succeed later.
    let unknown_response = request(
        "2222000022220000",
        "R_doesnotexist1",
        "resolved",
        "2026-12-07T10:00:00Z",
        5,
        None,
    );
    let garbage = r#"{"v":1,"system":"jira"}"#.to_string();
    for t in [&unknown_survey, &unknown_response, &garbage] {
        put(&e.stack, t).await;
    }
    e.stack.settle(SETTLE).await;
    let mut parked = e.stack.queue_texts(POISON).await;
    parked.sort();
    let mut want = vec![
        unknown_survey.clone(),
        unknown_response.clone(),
        garbage.clone(),
    ];
    want.sort();
    assert_eq!(parked, want, "the original texts, byte for byte");
    let logs: Vec<String> = e
        .stack
        .host
        .records()
        .iter()
        .flat_map(|r| r.logs.clone())
        .collect();
    let reason = |needle: &str| {
        logs.iter()
            .any(|l| l.contains("dead-lettered") && l.contains(needle))
    };
    assert!(reason("no [surveys.loop]"), "{logs:?}");
    assert!(reason("404"), "{logs:?}");
    assert!(reason("invalid loop request"), "{logs:?}");
    assert!(e.q.distributions().is_empty());
}
