//! `ExportPoller` end to end: the real release binary behind devkit's local host, Azurite,
//! and devkit's fake Qualtrics. Every test ends by proving that each response of the fake
//! appears exactly once across all export blobs.

mod common;

use common::{Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use qualtrics_bridge::storage::Storage;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const SV: &str = "SV_export0001";
const TOKEN: &str = "fake-qualtrics-token-5e1";
const EXPORTS: &str = "qualtrics-exports";

fn toml(tickets: bool) -> String {
    let mut t = format!("[[surveys]]\nid = \"{SV}\"\nexport = true\n");
    if tickets {
        t.push_str("[surveys.tickets]\nsystem = \"servicenow\"\n");
    }
    t
}

async fn start(fake: &FakeQualtrics, tickets: bool, extra: &[(&str, &str)]) -> Stack {
    let mut b = StackBuilder::default()
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("EXPORT_POLL_INTERVAL_MS", "20")
        .bridge_toml(&toml(tickets));
    for (k, v) in extra {
        b = b.setting(k, v);
    }
    b.start().await
}

fn storage(stack: &Stack) -> Storage {
    common::storage_of(&stack.azurite)
}

/// Every export blob's name and response ids.
async fn exported(s: &Storage) -> Vec<(String, Vec<String>)> {
    let names = common::blob_names(s, EXPORTS).await;
    let mut out = Vec::new();
    for n in names {
        let text = common::blob_text(s, EXPORTS, &n).await.unwrap_or_default();
        let ids = text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("each line is one JSON object");
                v["responseId"].as_str().unwrap().to_string()
            })
            .collect();
        out.push((n, ids));
    }
    out
}

async fn state(s: &Storage) -> Value {
    let t = common::blob_text(s, "bridge-state", &format!("exports/{SV}.json"))
        .await
        .expect("state blob");
    serde_json::from_str(&t).unwrap()
}

/// Asserts each of the fake's responses is in exactly one blob line.
async fn assert_exactly_once(s: &Storage, fake: &FakeQualtrics) {
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (name, ids) in exported(s).await {
        assert!(
            name.starts_with(&format!("{SV}/")) && name.ends_with(".ndjson"),
            "{name}"
        );
        for id in ids {
            *seen.entry(id).or_default() += 1;
        }
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicated lines: {dupes:?}");
    let expected = fake.response_ids(SV);
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "lost responses: {missing:?}");
    assert_eq!(seen.len(), expected.len(), "extra lines");
}

async fn fire(stack: &Stack) -> Vec<String> {
    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(r.outcome.is_ok(), "{:?} {:?}", r.outcome, r.logs);
    r.logs
}

fn joined(logs: &[String]) -> String {
    logs.join(" | ")
}

fn file_downloads(fake: &FakeQualtrics) -> Vec<String> {
    fake.calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/file") && c.status == 200)
        .map(|c| c.path)
        .collect()
}

#[tokio::test]
async fn three_runs_export_every_response_exactly_once_and_reconcile_tickets() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 5);
    let stack = start(&fake, true, &[]).await;
    let s = storage(&stack);

    let l1 = joined(&fire(&stack).await);
    assert!(l1.contains("exported 5 response(s)"), "{l1}");
    // The first (full) export is history: no reconciliation.
    assert!(l1.contains("0 ticket request(s)"), "{l1}");
    let st1 = state(&s).await;
    let token1 = st1["continuationToken"].as_str().unwrap().to_string();

    fake.add_responses(SV, 3);
    let l2 = joined(&fire(&stack).await);
    assert!(
        l2.contains("exported 3 response(s)") && l2.contains("3 ticket request(s)"),
        "{l2}"
    );
    let st2 = state(&s).await;
    assert_ne!(st2["continuationToken"].as_str().unwrap(), token1);

    fake.add_responses(SV, 4);
    let l3 = joined(&fire(&stack).await);
    assert!(
        l3.contains("exported 4 response(s)") && l3.contains("4 ticket request(s)"),
        "{l3}"
    );

    // A run with nothing new writes no blob but still advances the token.
    let l4 = joined(&fire(&stack).await);
    assert!(l4.contains("exported 0 response(s)"), "{l4}");

    assert_exactly_once(&s, &fake).await;
    assert_eq!(exported(&s).await.len(), 3);
    let st = state(&s).await;
    assert!(
        st["inflight"].is_null() && st["pendingTickets"].as_array().unwrap().is_empty(),
        "{st}"
    );
    assert_eq!(st["exportedTotal"], 12);
    // The fake's strict body check accepted every request (no 400) and no token was sent with
    // allowContinuation.
    for c in fake.calls().iter().filter(|c| c.method == "POST") {
        assert_eq!(c.status, 200, "{c:?}");
        let b = c.body.as_ref().unwrap();
        assert!(b.get("continuationToken").is_none() || b.get("allowContinuation").is_none());
    }
    stack.assert_no_violations();
}

#[tokio::test]
async fn reconciliation_reply_is_bounded_and_the_rest_carries_over() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 1);
    let stack = start(&fake, true, &[("EXPORT_MAX_TICKET_MESSAGES", "4")]).await;
    let s = storage(&stack);
    fire(&stack).await;
    fake.add_responses(SV, 10);
    let l = joined(&fire(&stack).await);
    assert!(
        l.contains("exported 10") && l.contains("4 ticket request(s)"),
        "{l}"
    );
    assert_eq!(
        state(&s).await["pendingTickets"].as_array().unwrap().len(),
        6
    );
    let l = joined(&fire(&stack).await);
    assert!(l.contains("4 ticket request(s)"), "{l}");
    let l = joined(&fire(&stack).await);
    assert!(l.contains("2 ticket request(s)"), "{l}");
    assert!(state(&s).await["pendingTickets"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_exactly_once(&s, &fake).await;
}

#[tokio::test]
async fn killed_between_blob_commit_and_state_write_is_repaired_without_duplicates() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 4);
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("after-blob-commit:{}", dir.path().join("crashed").display());
    let stack = start(&fake, false, &[("BRIDGE_TEST_CRASH_AT", &spec)]).await;
    let s = storage(&stack);
    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(r.outcome.is_err(), "the handler should have aborted");
    assert!(dir.path().join("crashed").exists());
    // The blob is committed, the state still points at the old (absent) token.
    assert_eq!(exported(&s).await.len(), 1);
    let st = state(&s).await;
    assert!(
        st["continuationToken"].is_null() && !st["inflight"].is_null(),
        "{st}"
    );
    stack.host.restart_handler().await.unwrap();
    fake.add_responses(SV, 2);
    // The dead run's lease (15 s) must lapse first.
    let mut logs = String::new();
    for _ in 0..40 {
        logs = joined(&fire(&stack).await);
        if !logs.contains("holds the lease") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Repair adopts the committed blob (4) without downloading it again, then exports 2.
    assert!(logs.contains("exported 6 response(s)"), "{logs}");
    assert_eq!(
        file_downloads(&fake).len(),
        2,
        "{:?}",
        file_downloads(&fake)
    );
    assert_exactly_once(&s, &fake).await;
    let st = state(&s).await;
    assert!(st["inflight"].is_null() && st["exportedTotal"] == 6, "{st}");
}

#[tokio::test]
async fn killed_mid_stream_is_repaired_by_downloading_the_same_file_again() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_synthetic_survey(SV, 3000, 2000);
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("mid-stream:{}", dir.path().join("crashed").display());
    let stack = start(&fake, false, &[("BRIDGE_TEST_CRASH_AT", &spec)]).await;
    let s = storage(&stack);
    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(r.outcome.is_err(), "the handler should have aborted");
    assert!(
        exported(&s).await.is_empty(),
        "nothing may be committed mid-stream"
    );
    stack.host.restart_handler().await.unwrap();
    let mut logs = String::new();
    for _ in 0..40 {
        logs = joined(&fire(&stack).await);
        if !logs.contains("holds the lease") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(logs.contains("exported 3000 response(s)"), "{logs}");
    let downloads = file_downloads(&fake);
    assert_eq!(downloads.len(), 3, "{downloads:?}"); // crashed, repaired, empty increment
    assert_eq!(
        downloads[0], downloads[1],
        "the repair re-reads the same file"
    );
    assert_exactly_once(&s, &fake).await;
}

#[tokio::test]
async fn failures_never_advance_the_state_past_unexported_data() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 5);
    let stack = start(&fake, false, &[("EXPORT_THROTTLE_RETRIES", "3")]).await;
    let s = storage(&stack);
    fire(&stack).await;
    let token = |v: &Value| v["continuationToken"].as_str().unwrap_or("").to_string();
    let t1 = token(&state(&s).await);

    // A failed export (status failed, percentComplete 100).
    fake.add_responses(SV, 2);
    fake.fail_next_exports(1);
    let l = joined(&fire(&stack).await);
    assert!(
        l.contains("failed") && l.contains("percentComplete 100"),
        "{l}"
    );
    assert_eq!(token(&state(&s).await), t1);
    assert!(state(&s).await["lastError"].is_string());
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 2"), "{l}");

    // 500s are retried within the run.
    fake.add_responses(SV, 2);
    fake.error_next(2);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 2"), "{l}");

    // 429 with Retry-After, under budget: honoured, then success.
    fake.add_responses(SV, 2);
    fake.throttle_next(2, Some(1));
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 2"), "{l}");

    // A 429 storm without Retry-After spends the run's budget: nothing advances.
    fake.add_responses(SV, 2);
    let before = token(&state(&s).await);
    fake.throttle_next(1000, None);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("failed") && l.contains("429"), "{l}");
    assert_eq!(token(&state(&s).await), before);
    fake.throttle_next(0, None);
    tokio::time::sleep(Duration::from_secs(3)).await; // the adaptive penalty lapses
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 2"), "{l}");

    // A truncated download: the CRC/JSON check refuses it; the next run repairs.
    fake.add_responses(SV, 2);
    fake.truncate_next_files(1);
    let before = token(&state(&s).await);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("failed"), "{l}");
    assert_eq!(token(&state(&s).await), before);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 2"), "{l}");

    // A rejected token: fall back to a date window with overlap; the overlap is de-duplicated.
    fake.add_responses(SV, 2);
    fake.reject_tokens(true);
    let l = joined(&fire(&stack).await);
    assert!(
        l.contains("exported 2") && l.contains("overlap duplicate(s) skipped"),
        "{l}"
    );
    assert!(
        !l.contains("(0 overlap"),
        "the window must have overlapped: {l}"
    );
    fake.reject_tokens(false);
    fake.add_responses(SV, 1);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 1"), "{l}");

    assert_exactly_once(&s, &fake).await;
    stack.assert_no_violations();
}

#[tokio::test]
async fn overlapping_invocations_export_a_survey_once() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 6);
    fake.set_polls(4);
    fake.set_poll_delay(Duration::from_millis(400));
    let stack = start(&fake, false, &[]).await;
    let s = storage(&stack);
    let (a, b) = tokio::join!(stack.host.fire("ExportPoller"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.host.fire("ExportPoller").await
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let logs = format!("{} || {}", joined(&a.logs), joined(&b.logs));
    assert!(
        logs.contains("exported 6") && logs.contains("holds the lease"),
        "{logs}"
    );
    let starts = fake.calls().iter().filter(|c| c.method == "POST").count();
    assert_eq!(starts, 1, "only one export job for the survey");
    assert_exactly_once(&s, &fake).await;
}

#[tokio::test]
async fn a_short_time_budget_defers_and_the_next_run_resumes() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 3);
    fake.set_polls(50);
    fake.set_poll_delay(Duration::from_millis(200));
    let stack = start(&fake, false, &[("EXPORT_TIME_BUDGET_SECONDS", "6")]).await;
    let s = storage(&stack);
    let t0 = std::time::Instant::now();
    let l = joined(&fire(&stack).await);
    assert!(
        t0.elapsed() < Duration::from_secs(9),
        "stopped within the budget"
    );
    assert!(l.contains("deferred"), "{l}");
    assert!(state(&s).await["continuationToken"].is_null());
    fake.set_polls(2);
    fake.set_poll_delay(Duration::ZERO);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 3"), "{l}");
    assert_exactly_once(&s, &fake).await;
}
