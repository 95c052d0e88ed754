//! `ExportPoller` end to end: the real release binary behind devkit's local host, Azurite,
//! and devkit's fake Qualtrics. Every test ends by proving that each response of the fake
//! appears exactly once across all export blobs, each line byte for byte as the fake served it
//! (values, labels, displayedFields, escapes).

use crate::common;

use common::{Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use qualtrics_bridge::storage::Storage;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const SV: &str = "SV_export0001";
const TOKEN: &str = "fake-qualtrics-token-5e1";
const EXPORTS: &str = "qualtrics-exports";
const TICKETS: &str = "ticket-requests";

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
    if tickets {
        // Without TicketCreator, `ticket-requests` keeps exactly what the exports enqueued.
        b = b.without_function("TicketCreator");
    }
    for (k, v) in extra {
        b = b.setting(k, v);
    }
    b.start().await
}

fn storage(stack: &Stack) -> Storage {
    common::storage_of(&stack.azurite)
}

/// Every export blob's name and lines (a blob that cannot be read fails the test).
async fn exported(s: &Storage) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for n in common::blob_names(s, EXPORTS).await {
        let text = common::blob_text(s, EXPORTS, &n)
            .await
            .unwrap_or_else(|| panic!("export blob {n} cannot be read"));
        out.push((n, text.lines().map(str::to_owned).collect()));
    }
    out
}

async fn state(s: &Storage) -> Value {
    let t = common::blob_text(s, "bridge-state", &format!("exports/{SV}.json"))
        .await
        .expect("state blob");
    serde_json::from_str(&t).unwrap()
}

/// Asserts that every exported line is, byte for byte, one response as the fake served it, and
/// that each of the fake's responses is in exactly one line. A mismatch is reported by id and
/// offset only: the lines hold respondent data, which test output must not.
async fn assert_exported_as_served(s: &Storage, fake: &FakeQualtrics) {
    let served: HashMap<String, String> = fake.served(SV).into_iter().collect();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (name, lines) in exported(s).await {
        assert!(
            name.starts_with(&format!("{SV}/")) && name.ends_with(".ndjson"),
            "{name}"
        );
        for line in lines {
            let v: Value = serde_json::from_str(&line).expect("each line is one JSON object");
            let id = v["responseId"].as_str().expect("responseId").to_string();
            let source = served
                .get(&id)
                .unwrap_or_else(|| panic!("{name}: a line for {id}, which the fake never served"));
            if line != *source {
                let at = line
                    .bytes()
                    .zip(source.bytes())
                    .position(|(a, b)| a != b)
                    .unwrap_or(line.len().min(source.len()));
                panic!(
                    "{name}: the line of {id} differs from what the fake served at byte {at} \
                     ({} vs {} bytes)",
                    line.len(),
                    source.len()
                );
            }
            *seen.entry(id).or_default() += 1;
        }
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicated lines: {dupes:?}");
    let missing: Vec<_> = served.keys().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "lost responses: {missing:?}");
}

/// The reconciliation messages on `ticket-requests`: (responseId, message) in queue order.
async fn queued_tickets(stack: &Stack) -> Vec<(String, Value)> {
    stack
        .queue_texts(TICKETS)
        .await
        .into_iter()
        .map(|t| {
            let v: Value = serde_json::from_str(&t).expect("a ticket request is JSON");
            (v["responseId"].as_str().expect("responseId").to_string(), v)
        })
        .collect()
}

/// Asserts the queue holds exactly one export-sourced request for each of `ids`.
async fn assert_queued(stack: &Stack, ids: &[String]) {
    let queued = queued_tickets(stack).await;
    let mut got: Vec<&str> = queued.iter().map(|(id, _)| id.as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want, "reconciliation messages on {TICKETS}");
    for (_, v) in &queued {
        assert_eq!(
            (&v["v"], v["surveyId"].as_str(), v["source"].as_str()),
            (&Value::from(1), Some(SV), Some("export")),
            "{v}"
        );
    }
}

/// Fires the timer until the dead run's lease (15 s) has lapsed; returns that run's logs.
async fn fire_after_lease(stack: &Stack) -> String {
    for _ in 0..40 {
        let logs = joined(&fire(stack).await);
        if !logs.contains("holds the lease") {
            return logs;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the dead run's lease never lapsed");
}

/// Fires the timer, which must abort at `point` (`BRIDGE_TEST_CRASH_AT`), then restarts the
/// handler as the host would.
async fn fire_into_crash(stack: &Stack, point: &str) {
    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(
        r.outcome.is_err(),
        "the handler should have aborted at {point}"
    );
    let marker = stack
        .app_dir
        .path()
        .join(format!(".bridge-test-crash-{point}"));
    assert!(
        marker.exists(),
        "the crash at {point} leaves its marker in the app root"
    );
    stack.host.restart_handler().await.unwrap();
}

/// A stack (without tickets) whose first run aborted at `point`, restarted.
async fn crashed_at(fake: &FakeQualtrics, point: &str) -> (Stack, Storage) {
    let stack = start(fake, false, &[("BRIDGE_TEST_CRASH_AT", point)]).await;
    fire_into_crash(&stack, point).await;
    let s = storage(&stack);
    (stack, s)
}

/// Fires the timer and SIGKILLs the handler from outside once it has asked for the export file
/// (the fake holds the download): the kill lands after `inflight` is written, before a byte is
/// read.
async fn fire_and_kill_at_download(stack: &Stack, fake: &FakeQualtrics) {
    fake.hold_files(true);
    let held = || {
        fake.calls()
            .iter()
            .any(|c| c.path.ends_with("/file") && c.status == 0)
    };
    let (fired, ()) = tokio::join!(stack.host.fire("ExportPoller"), async {
        assert!(
            stack
                .eventually(Duration::from_secs(30), || async { held() })
                .await,
            "the handler never asked for the file"
        );
        stack.host.restart_handler().await.unwrap();
    });
    assert!(fired.expect("fire").outcome.is_err(), "the run was killed");
    fake.hold_files(false);
}

async fn fire(stack: &Stack) -> Vec<String> {
    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(r.outcome.is_ok(), "{:?} {:?}", r.outcome, r.logs);
    r.logs
}

fn joined(logs: &[String]) -> String {
    logs.join(" | ")
}

/// Export jobs started (every POST to the fake is one).
fn export_starts(fake: &FakeQualtrics) -> usize {
    fake.calls().iter().filter(|c| c.method == "POST").count()
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
    assert_queued(&stack, &[]).await;
    let st1 = state(&s).await;
    let token1 = st1["continuationToken"].as_str().unwrap().to_string();

    let mut new = fake.add_responses(SV, 3);
    let l2 = joined(&fire(&stack).await);
    assert!(l2.contains("exported 3 response(s)"), "{l2}");
    assert_queued(&stack, &new).await;
    let st2 = state(&s).await;
    assert_ne!(st2["continuationToken"].as_str().unwrap(), token1);

    new.extend(fake.add_responses(SV, 4));
    let l3 = joined(&fire(&stack).await);
    assert!(l3.contains("exported 4 response(s)"), "{l3}");
    assert_queued(&stack, &new).await;

    // A run with nothing new writes no blob but still advances the token.
    let l4 = joined(&fire(&stack).await);
    assert!(l4.contains("exported 0 response(s)"), "{l4}");
    assert_queued(&stack, &new).await;

    assert_exported_as_served(&s, &fake).await;
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
    let new = fake.add_responses(SV, 10);
    let l = joined(&fire(&stack).await);
    assert!(l.contains("exported 10"), "{l}");
    // Oldest first: the first four now, the rest in the next runs.
    assert_queued(&stack, &new[..4]).await;
    assert_eq!(
        state(&s).await["pendingTickets"].as_array().unwrap().len(),
        6
    );
    fire(&stack).await;
    assert_queued(&stack, &new[..8]).await;
    fire(&stack).await;
    assert_queued(&stack, &new).await;
    assert!(state(&s).await["pendingTickets"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_exported_as_served(&s, &fake).await;
    stack.assert_no_violations();
}

#[tokio::test]
async fn killed_between_blob_commit_and_state_write_is_repaired_without_duplicates() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 4);
    let (stack, s) = crashed_at(&fake, "after-blob-commit").await;
    // The blob is committed, the state still points at the old (absent) token.
    assert_eq!(exported(&s).await.len(), 1);
    let st = state(&s).await;
    assert!(
        st["continuationToken"].is_null() && !st["inflight"].is_null(),
        "{st}"
    );
    fake.add_responses(SV, 2);
    let logs = fire_after_lease(&stack).await;
    // Repair adopts the committed blob (4) without downloading it again, then exports 2.
    assert!(logs.contains("exported 6 response(s)"), "{logs}");
    assert_eq!(
        file_downloads(&fake).len(),
        2,
        "{:?}",
        file_downloads(&fake)
    );
    assert_exported_as_served(&s, &fake).await;
    let st = state(&s).await;
    assert!(st["inflight"].is_null() && st["exportedTotal"] == 6, "{st}");
}

#[tokio::test]
async fn killed_before_blob_commit_is_repaired_into_the_same_blob() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 4);
    let (stack, s) = crashed_at(&fake, "before-blob-commit").await;
    // Every block is staged and the summary saved, but nothing is committed.
    assert!(exported(&s).await.is_empty(), "nothing committed yet");
    let st = state(&s).await;
    let blob = st["inflight"]["blob"]
        .as_str()
        .expect("inflight blob")
        .to_string();
    assert_eq!(st["inflight"]["summary"]["lines"], 4, "{st}");
    let logs = fire_after_lease(&stack).await;
    assert!(logs.contains("exported 4 response(s)"), "{logs}");
    let downloads = file_downloads(&fake);
    assert_eq!(downloads.len(), 3, "{downloads:?}"); // crashed, repaired, empty increment
    assert_eq!(
        downloads[0], downloads[1],
        "the repair re-reads the same file"
    );
    let names: Vec<String> = exported(&s).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [blob], "committed under the dead run's blob name");
    assert_exported_as_served(&s, &fake).await;
}

#[tokio::test]
async fn killed_mid_stream_is_repaired_by_downloading_the_same_file_again() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_synthetic_survey(SV, 3000, 2000);
    let (stack, s) = crashed_at(&fake, "mid-stream").await;
    assert!(
        exported(&s).await.is_empty(),
        "nothing may be committed mid-stream"
    );
    let logs = fire_after_lease(&stack).await;
    assert!(logs.contains("exported 3000 response(s)"), "{logs}");
    let downloads = file_downloads(&fake);
    assert_eq!(downloads.len(), 3, "{downloads:?}"); // crashed, repaired, empty increment
    assert_eq!(
        downloads[0], downloads[1],
        "the repair re-reads the same file"
    );
    assert_exported_as_served(&s, &fake).await;
}

#[tokio::test]
async fn killed_after_inflight_is_repaired_by_downloading_the_recorded_file() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 5);
    let stack = start(&fake, false, &[]).await;
    let s = storage(&stack);
    fire_and_kill_at_download(&stack, &fake).await;
    let st = state(&s).await;
    let file = st["inflight"]["fileId"]
        .as_str()
        .expect("inflight written")
        .to_string();
    assert!(st["continuationToken"].is_null(), "{st}");
    let logs = fire_after_lease(&stack).await;
    assert!(logs.contains("exported 5 response(s)"), "{logs}");
    let downloads = file_downloads(&fake);
    assert_eq!(downloads.len(), 2, "{downloads:?}"); // repaired, empty increment
    assert!(
        downloads[0].contains(&file),
        "the repair reads the recorded file"
    );
    assert_eq!(
        export_starts(&fake),
        2,
        "no new export for the repaired increment"
    );
    assert_exported_as_served(&s, &fake).await;
}

#[tokio::test]
async fn an_unfinished_exports_expired_file_is_exported_again_from_the_stored_token() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 3);
    let stack = start(&fake, false, &[]).await;
    let s = storage(&stack);
    fire(&stack).await;
    let token = state(&s).await["continuationToken"].clone();
    fake.add_responses(SV, 4);
    fire_and_kill_at_download(&stack, &fake).await;
    let dead = state(&s).await["inflight"]["fileId"]
        .as_str()
        .expect("inflight written")
        .to_string();
    // Qualtrics' retention passes before the next run: the recorded file is gone (404).
    fake.expire_files();
    let logs = fire_after_lease(&stack).await;
    assert!(logs.contains("exported 4 response(s)"), "{logs}");
    let gone: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.contains(&dead) && c.status == 404)
        .collect();
    assert_eq!(gone.len(), 1, "the repair tried the recorded file once");
    // The new export continued from the stored token, not from the start.
    let posts: Vec<Value> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .filter_map(|c| c.body)
        .collect();
    assert_eq!(posts.len(), 3, "{posts:?}");
    assert_eq!(posts[1]["continuationToken"], token);
    assert_eq!(posts[2]["continuationToken"], token);
    assert_eq!(exported(&s).await.len(), 2);
    assert_exported_as_served(&s, &fake).await;
    assert!(state(&s).await["inflight"].is_null());
}

/// The one window a kill still costs something (`docs/export.md`, "Crashes"): after the state
/// write that moved the ids into the reply, before the host enqueues that reply. The export
/// itself is intact; the reply's reconciliation messages are lost (their webhooks remain the
/// primary path). This pins the loss to exactly that reply.
#[tokio::test]
async fn a_kill_after_the_reconciliation_state_write_loses_only_that_replys_messages() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 2);
    let stack = start(
        &fake,
        true,
        &[("BRIDGE_TEST_CRASH_AT", "after-reconcile-state")],
    )
    .await;
    let s = storage(&stack);
    fire(&stack).await; // history: nothing to reconcile, so no crash
    let lost = fake.add_responses(SV, 3);
    fire_into_crash(&stack, "after-reconcile-state").await;
    let st = state(&s).await;
    assert!(
        st["inflight"].is_null() && st["pendingTickets"].as_array().unwrap().is_empty(),
        "the final state write happened: {st}"
    );
    assert_queued(&stack, &[]).await;
    // The next run neither re-sends the lost ids nor loses later ones.
    let later = fake.add_responses(SV, 2);
    let logs = fire_after_lease(&stack).await;
    assert!(logs.contains("exported 2 response(s)"), "{logs}");
    assert_queued(&stack, &later).await;
    assert!(!queued_tickets(&stack)
        .await
        .iter()
        .any(|(id, _)| lost.contains(id)));
    assert_exported_as_served(&s, &fake).await;
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
    // Not synchronisation: it only lets the handler's adaptive 429 penalty lapse so the next
    // run is quick; a penalty still in force would slow that run, never make it pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
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

    assert_exported_as_served(&s, &fake).await;
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
    // The offset only makes the two fires overlap (each run polls for over a second); in
    // either order one of them must find the lease held.
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
    assert_eq!(
        export_starts(&fake),
        1,
        "only one export job for the survey"
    );
    assert_exported_as_served(&s, &fake).await;
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
    // A wall-clock bound on a shared machine can fail spuriously, never pass by luck: the run
    // would take 50 polls × 200 ms (10 s) plus backoff if it ignored the budget.
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
    assert_exported_as_served(&s, &fake).await;
}
