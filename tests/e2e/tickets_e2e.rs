//! Issue 6 end to end: the real release binary behind devkit's local host, on Azurite, with
//! the fake Qualtrics, ServiceNow and Zendesk. Exactly one ticket per response under
//! duplicates, concurrency, crashes, 429 storms and 5xx; rules, allow-lists, dead letters.

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::servicenow::{self, FakeServiceNow};
use devkit::fakes::ticketing::{Fault, RateLimit, Route};
use devkit::fakes::zendesk::{self, FakeZendesk};
use qualtrics_bridge::tickets::ledger::{Entry, Ledger, State};
use std::collections::HashMap;
use std::time::Duration;

const TICKETS: &str = "ticket-requests";
const POISON: &str = "ticket-requests-poison";
const WAIT: Duration = Duration::from_secs(60);
const QUALTRICS_TOKEN: &str = "q-test-token";
const SV: &str = "SV_tickets1";
const LEASE: Duration = Duration::from_secs(15);

pub struct Env {
    pub stack: Stack,
    pub qualtrics: FakeQualtrics,
    pub servicenow: FakeServiceNow,
    pub zendesk: FakeZendesk,
}

fn toml(system: &str, extra: &str) -> String {
    toml_with("timeout_secs = 2\nbusy_wait_secs = 10\n", system, extra)
}

fn toml_with(ticketing: &str, system: &str, extra: &str) -> String {
    format!(
        "[ticketing]\n{ticketing}\n[[surveys]]\nid = \"{SV}\"\n[surveys.tickets]\nsystem = \"{system}\"\nwhen = 'values.QID1 <= 6 and labels.finished == \"True\"'\nallowed_fields = [\"QID1\"]\nsubject = \"Detractor: NPS {{{{values.QID1}}}} ({{{{responseId}}}})\"\n{extra}"
    )
}

pub async fn env_with(bridge: &str, settings: &[(&str, &str)]) -> Env {
    let qualtrics = FakeQualtrics::start(QUALTRICS_TOKEN).await.unwrap();
    let servicenow = FakeServiceNow::start().await.unwrap();
    let zendesk = FakeZendesk::start().await.unwrap();
    let mut b = StackBuilder::default()
        .bridge_toml(bridge)
        .setting("QUALTRICS_BASE_URL", &qualtrics.base_url)
        .setting("QUALTRICS_API_TOKEN", QUALTRICS_TOKEN)
        .setting("SERVICENOW_INSTANCE_URL", &servicenow.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .setting("ZENDESK_BASE_URL", &zendesk.url())
        .setting("ZENDESK_EMAIL", zendesk::EMAIL)
        .setting("ZENDESK_API_TOKEN", zendesk::API_TOKEN)
        // The shortest lease Blob Storage grants, and short backoffs: retries in seconds.
        .setting("TICKET_LEASE_SECONDS", &LEASE.as_secs().to_string())
        .setting("TICKET_RETRY_MAX_DELAY_SECONDS", "4");
    for (k, v) in settings {
        b = b.setting(k, v);
    }
    Env {
        stack: b.start().await,
        qualtrics,
        servicenow,
        zendesk,
    }
}

pub fn request(response: &str, source: &str) -> String {
    format!(
        r#"{{"v":1,"surveyId":"{SV}","responseId":"{response}","source":"{source}","receivedAt":"2026-12-01T00:00:00Z"}}"#
    )
}

pub async fn put(stack: &Stack, text: &str) {
    stack
        .queues
        .create_queue(TICKETS)
        .await
        .expect("create queue");
    stack
        .queues
        .put_message(TICKETS, &STANDARD.encode(text))
        .await
        .expect("put");
}

/// Response ids from the fake whose QID1 (= seq % 11) is ≤ 6 (`want = true`) or > 6.
fn responses(q: &FakeQualtrics, n: usize, want: bool) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        for id in q.add_responses(SV, 11) {
            let seq: u64 = id.trim_start_matches("R_live").parse().unwrap();
            if ((seq % 11) <= 6) == want && out.len() < n {
                out.push(id);
            }
        }
    }
    out
}

pub async fn ledger(stack: &Stack) -> Ledger {
    let cs = stack.azurite.connection_string();
    let lookup = move |name: &str| (name == "AzureWebJobsStorage").then(|| cs.clone());
    let transport = qualtrics_bridge::identity::transport(&lookup).unwrap();
    let storage =
        qualtrics_bridge::storage::Storage::connect("AzureWebJobsStorage", &lookup, &transport)
            .unwrap();
    Ledger::new(
        storage.blob_container("bridge-state").unwrap(),
        "bridge-state",
    )
}

pub async fn entry(l: &Ledger, response: &str) -> Option<Entry> {
    l.get(&Ledger::blob_name(SV, response))
        .await
        .unwrap()
        .map(|(e, _)| e)
}

fn runs(stack: &Stack) -> Vec<devkit::host::InvocationRecord> {
    stack
        .host
        .records()
        .into_iter()
        .filter(|r| r.function == "TicketCreator")
        .collect()
}

/// Waits until every ticket request is done (see `Stack::settle`).
async fn settle(stack: &Stack) {
    stack.settle(Duration::from_secs(150)).await;
}

fn correlation(response: &str) -> String {
    format!("qualtrics:{SV}:{response}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_copies_make_one_servicenow_ticket() {
    let env = env_with(&toml("servicenow", ""), &[]).await;
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    let copies: Vec<String> = (0..10)
        .map(|i| request(&rid, ["webhook", "export", "replay"][i % 3]))
        .collect();
    futures::future::join_all(copies.iter().map(|t| put(&env.stack, t))).await;
    settle(&env.stack).await;

    let incidents = env.servicenow.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let inc = &incidents[0];
    assert_eq!(inc.fields["correlation_id"], correlation(&rid));
    assert_eq!(inc.fields["correlation_display"], "qualtrics-bridge");
    let e = entry(&ledger(&env.stack).await, &rid)
        .await
        .expect("ledger entry");
    assert_eq!(e.state, State::Created);
    let t = e.ticket.expect("ticket in ledger");
    assert_eq!(
        (t.system.as_str(), t.id.as_str()),
        ("servicenow", inc.sys_id.as_str())
    );
    assert_eq!(t.number.as_deref(), Some(inc.number.as_str()));
    let all = runs(&env.stack);
    assert!(all.len() >= 10);
    assert!(env.stack.queue_texts(POISON).await.is_empty());
    // Exactly one create reached ServiceNow.
    let creates = env
        .servicenow
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(creates, 1);
    env.stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_copies_make_one_zendesk_ticket() {
    let env = env_with(&toml("zendesk", "priority = \"high\"\n"), &[]).await;
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    let copies: Vec<String> = (0..10).map(|_| request(&rid, "webhook")).collect();
    futures::future::join_all(copies.iter().map(|t| put(&env.stack, t))).await;
    settle(&env.stack).await;

    let tickets = env.zendesk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let t = &tickets[0];
    assert_eq!(t.external_id.as_deref(), Some(correlation(&rid).as_str()));
    assert_eq!(
        t.idempotency_key.as_deref(),
        Some(format!("qualtrics-{SV}-{rid}").as_str())
    );
    assert_eq!(t.json["priority"], "high");
    let e = entry(&ledger(&env.stack).await, &rid).await.unwrap();
    assert_eq!(e.state, State::Created);
    assert_eq!(e.ticket.unwrap().id, t.id.to_string());
    assert!(env.stack.queue_texts(POISON).await.is_empty());
    env.stack.assert_no_violations();
}

/// The handler is killed after ServiceNow created the incident but before the ledger says so
/// (the fake holds the create reply while the test kills the handler): the killed worker's
/// lease lapses, a retry takes the claim over within a minute, looks the incident up by
/// correlation_id and records it — still one incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_create_and_ledger_update_still_one_ticket() {
    for system in ["servicenow", "zendesk"] {
        let env = env_with(&toml(system, ""), &[]).await;
        let rid = responses(&env.qualtrics, 1, true).remove(0);
        match system {
            "servicenow" => env.servicenow.hold_creates(),
            _ => env.zendesk.hold_creates(),
        }
        put(&env.stack, &request(&rid, "webhook")).await;
        let held = env
            .stack
            .eventually(WAIT, || async {
                match system {
                    "servicenow" => env.servicenow.held() == 1,
                    _ => env.zendesk.held() == 1,
                }
            })
            .await;
        assert!(held, "{system}: create reached the fake");
        let l = ledger(&env.stack).await;
        assert_eq!(entry(&l, &rid).await.unwrap().state, State::Claimed);
        env.stack.host.restart_handler().await.unwrap();
        let killed = std::time::Instant::now();
        match system {
            "servicenow" => env.servicenow.release(),
            _ => env.zendesk.release(),
        }
        assert!(
            env.stack
                .eventually(Duration::from_secs(60), || async {
                    entry(&l, &rid)
                        .await
                        .is_some_and(|e| e.state == State::Created)
                })
                .await,
            "{system}: a retry records the ticket within a minute of the kill"
        );
        // Not before the dead worker's lease lapsed: until then its claim looked alive. It was
        // renewed every third of its duration, so at least two thirds were left at the kill.
        let recovered = killed.elapsed();
        assert!(
            recovered >= LEASE * 2 / 3 - Duration::from_secs(1),
            "{system}: taken over after {recovered:?}, before the lease lapsed"
        );
        eprintln!("{system}: recovered {recovered:?} after the kill");
        settle(&env.stack).await;
        let count = match system {
            "servicenow" => env.servicenow.incidents().len(),
            _ => env.zendesk.tickets().len(),
        };
        assert_eq!(count, 1, "{system}: one ticket after the crash");
        let e = entry(&l, &rid).await.unwrap();
        let t = e.ticket.unwrap();
        assert!(
            t.found_by_lookup,
            "{system}: the retry found the ticket by lookup"
        );
        assert_eq!(e.attempts, 2);
        let all = runs(&env.stack);
        assert!(
            all.iter().any(|r| r.outcome.is_err()),
            "the killed invocation failed"
        );
        assert!(all.last().unwrap().outcome.is_ok());
        assert!(env.stack.queue_texts(POISON).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_says_no_means_no_ticket_and_ledger_skipped() {
    let env = env_with(&toml("servicenow", ""), &[]).await;
    let rid = responses(&env.qualtrics, 1, false).remove(0);
    put(&env.stack, &request(&rid, "export")).await;
    settle(&env.stack).await;
    assert!(env.servicenow.incidents().is_empty());
    assert!(
        env.servicenow.requests().is_empty(),
        "ServiceNow never called"
    );
    let e = entry(&ledger(&env.stack).await, &rid).await.unwrap();
    assert_eq!(e.state, State::Skipped);
    assert_eq!(e.reason.as_deref(), Some("rule did not match"));
    let all = runs(&env.stack);
    assert_eq!(all.len(), 1);
    assert!(all[0].outcome.is_ok());
    // A duplicate is done at once.
    put(&env.stack, &request(&rid, "replay")).await;
    settle(&env.stack).await;
    let all = runs(&env.stack);
    assert_eq!(all.len(), 2);
    assert!(
        all[1].logs.iter().any(|l| l.contains("already skipped")),
        "{:?}",
        all[1].logs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_fields_reach_the_ticket() {
    let env = env_with(
        &toml("servicenow", "description = \"Response {{responseId}}\"\n"),
        &[],
    )
    .await;
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    put(&env.stack, &request(&rid, "webhook")).await;
    settle(&env.stack).await;
    let inc = env.servicenow.incidents().remove(0);
    let seq: u64 = rid.trim_start_matches("R_live").parse().unwrap();
    let all_text: String = inc.fields.values().cloned().collect::<Vec<_>>().join("\n");
    assert_eq!(
        inc.fields["short_description"],
        format!("Detractor: NPS {} ({rid})", seq % 11)
    );
    assert!(
        all_text.contains(&format!("QID1: {}", seq % 11)),
        "{all_text}"
    );
    // The response carries an IP address, free text and dates: none is on the allow-list.
    for pii in [
        "203.0.113.7",
        "ipAddress",
        "QID2_TEXT",
        "staff were friendly",
        "recordedDate",
    ] {
        assert!(
            !all_text.contains(pii),
            "{pii} leaked into the ticket: {all_text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_messages_and_permanent_failures_are_dead_lettered_at_once_with_a_reason() {
    // A field ServiceNow refuses (strict instance): a 400 that can never succeed.
    let env = env_with(
        &toml(
            "servicenow",
            "[surveys.tickets.extra]\nbogus_field = \"x\"\n",
        ),
        &[],
    )
    .await;
    env.servicenow.set_strict(true);
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    let bad_version = format!(
        r#"{{"v":9,"surveyId":"{SV}","responseId":"R_badversion","source":"webhook","receivedAt":"x"}}"#
    );
    put(&env.stack, &request(&rid, "webhook")).await;
    put(&env.stack, &bad_version).await;
    settle(&env.stack).await;
    let mut poison = env.stack.queue_texts(POISON).await;
    poison.sort();
    let mut want = vec![request(&rid, "webhook"), bad_version];
    want.sort();
    assert_eq!(poison, want, "both dead-lettered byte-exact");
    assert_eq!(runs(&env.stack).len(), 2, "no retries");
    let l = ledger(&env.stack).await;
    let e = entry(&l, &rid).await.unwrap();
    assert_eq!(e.state, State::Failed);
    assert!(!e.retryable);
    assert!(
        e.reason
            .as_deref()
            .unwrap()
            .contains("Invalid field: bogus_field"),
        "{e:?}"
    );
    let e = entry(&l, "R_badversion").await.unwrap();
    assert!(e.reason.unwrap().contains("unsupported message version 9"));
    assert!(env.servicenow.incidents().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_refreshed_once_then_dead_lettered() {
    let env = env_with(
        &toml("zendesk", ""),
        &[("ZENDESK_API_TOKEN", "wrong-token")],
    )
    .await;
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    put(&env.stack, &request(&rid, "webhook")).await;
    settle(&env.stack).await;
    assert_eq!(
        env.stack.queue_texts(POISON).await,
        vec![request(&rid, "webhook")]
    );
    let all = runs(&env.stack);
    assert_eq!(all.len(), 1);
    let e = entry(&ledger(&env.stack).await, &rid).await.unwrap();
    assert_eq!(e.state, State::Failed);
    let reason = e.reason.unwrap();
    assert!(
        reason.contains("401") && reason.contains("secret refresh"),
        "{reason}"
    );
    assert!(!reason.contains("wrong-token"), "no secret in the ledger");
    // Two lookups: the first refused, the second after the refresh.
    assert_eq!(
        env.zendesk.requests().iter().filter(|r| r.2 == 401).count(),
        2
    );
}

/// 429 storms (short Retry-After), 5xx on lookups and creates (some after the ticket exists),
/// a slow reply beyond the timeout: every request ends with exactly one ticket, none in the
/// poison queue — transient failures come back (re-enqueued) until they succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_429_and_5xx_end_with_exactly_one_ticket_each() {
    for system in ["servicenow", "zendesk"] {
        let env = env_with(&toml(system, ""), &[]).await;
        let ids = responses(&env.qualtrics, 20, true);
        let rate = Some(RateLimit {
            limit: 8,
            window: Duration::from_secs(1),
        });
        match system {
            "servicenow" => {
                let sn = &env.servicenow;
                sn.set_rate_limit(rate);
                sn.fail_every(4, 503);
                sn.push_fault(Route::Create, Fault::AfterCreate(500));
                sn.push_fault(Route::Create, Fault::AfterCreate(502));
                sn.push_fault(Route::Lookup, Fault::Delay(Duration::from_secs(3)));
            }
            _ => {
                let zd = &env.zendesk;
                zd.set_rate_limit(rate);
                zd.fail_every(4, 503);
                zd.push_fault(Route::Create, Fault::AfterCreate(500));
                zd.push_fault(Route::Create, Fault::AfterCreate(502));
                zd.push_fault(Route::Create, Fault::Delay(Duration::from_secs(3)));
            }
        }
        for id in &ids {
            put(&env.stack, &request(id, "webhook")).await;
        }
        settle(&env.stack).await;
        let mut per_response: HashMap<String, usize> = HashMap::new();
        match system {
            "servicenow" => {
                for i in env.servicenow.incidents() {
                    *per_response
                        .entry(i.fields["correlation_id"].clone())
                        .or_default() += 1;
                }
                assert!(env.servicenow.rate_counts().1 > 0, "the storm happened");
            }
            _ => {
                for t in env.zendesk.tickets() {
                    *per_response
                        .entry(t.external_id.clone().unwrap())
                        .or_default() += 1;
                }
                assert!(env.zendesk.rate_counts().1 > 0, "the storm happened");
            }
        }
        let l = ledger(&env.stack).await;
        for id in &ids {
            let n = per_response.get(&correlation(id)).copied().unwrap_or(0);
            assert_eq!(n, 1, "{system} {id}: {n} tickets");
            let e = entry(&l, id).await.expect("ledger entry");
            assert_eq!(e.state, State::Created, "{system} {id}: {e:?}");
        }
        assert_eq!(per_response.len(), ids.len(), "{system}: no other tickets");
        assert!(
            env.stack.queue_texts(POISON).await.is_empty(),
            "{system}: transient faults never reach the poison queue"
        );
        let all = runs(&env.stack);
        let retried = all
            .iter()
            .filter(|r| r.logs.iter().any(|l| l.contains("re-enqueued")))
            .count();
        assert!(retried > 0, "{system}: the faults made requests come back");
        assert!(
            all.iter().all(|r| r.outcome.is_ok()),
            "{system}: no invocation failed: transient failures re-enqueue instead"
        );
        eprintln!(
            "{system}: 20/20 created, {retried} re-enqueued, {} runs",
            all.len()
        );
        env.stack.assert_no_violations();
    }
}

/// A `Retry-After` longer than the handler waits in an invocation is followed by the request
/// itself: it is re-enqueued invisible until the rate-limit window resets, so when it comes
/// back it is admitted at once (a single 429 in all), and it never reaches the poison queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_is_followed_by_the_re_enqueued_request() {
    let env = env_with(
        &toml_with(
            "timeout_secs = 5\nmax_retry_after_secs = 1\nbusy_wait_secs = 10\n",
            "servicenow",
            "",
        ),
        &[],
    )
    .await;
    let ids = responses(&env.qualtrics, 2, true);
    // Three calls per 10 s window: two lookups and one create pass, the fourth call is refused
    // with the rest of the window (seconds) as its Retry-After. Start at a window's start.
    let window = Duration::from_secs(10);
    env.servicenow
        .set_rate_limit(Some(RateLimit { limit: 3, window }));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into =
        Duration::from_secs(now.as_secs() % 10) + Duration::from_nanos(now.subsec_nanos().into());
    tokio::time::sleep(window - into + Duration::from_millis(100)).await;
    for id in &ids {
        put(&env.stack, &request(id, "webhook")).await;
    }
    settle(&env.stack).await;
    assert_eq!(env.servicenow.incidents().len(), 2);
    assert_eq!(
        env.servicenow.rate_counts().1,
        1,
        "one 429: the request came back only after the window reset"
    );
    let delays: Vec<u64> = runs(&env.stack)
        .iter()
        .flat_map(|r| r.logs.clone())
        .filter_map(|l| {
            let tail = l.split("re-enqueued, back in ").nth(1)?;
            tail.split('s').next()?.parse().ok()
        })
        .collect();
    assert_eq!(delays.len(), 1, "re-enqueued once");
    assert!(
        delays[0] >= 4,
        "the delay follows Retry-After (the rest of the window), not the 1 s backoff: {delays:?}"
    );
    assert!(env.stack.queue_texts(POISON).await.is_empty());
    env.stack.assert_no_violations();
}

/// A live attempt is never taken over: ServiceNow holds the create for longer than the lease
/// (the worker renews it meanwhile) while a redelivered copy arrives. The copy finds the live
/// claim, completes and comes back later (re-enqueued), never calls ServiceNow, and ends as a
/// duplicate once the first attempt created the one incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_slow_attempt_is_never_taken_over_its_copy_waits() {
    let env = env_with(
        &toml_with("timeout_secs = 60\nbusy_wait_secs = 1\n", "servicenow", ""),
        &[],
    )
    .await;
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    env.servicenow.hold_creates();
    put(&env.stack, &request(&rid, "webhook")).await;
    assert!(
        env.stack
            .eventually(WAIT, || async { env.servicenow.held() == 1 })
            .await,
        "the create reached the fake"
    );
    put(&env.stack, &request(&rid, "export")).await;
    // Hold the first attempt for longer than its lease: only renewal keeps its claim.
    tokio::time::sleep(LEASE + Duration::from_secs(5)).await;
    let waits: Vec<_> = runs(&env.stack)
        .into_iter()
        .filter(|r| {
            r.logs
                .iter()
                .any(|l| l.contains("another worker is still working on it"))
        })
        .collect();
    assert!(
        waits.len() >= 2,
        "the copy came back and found the claim still live: {:?}",
        runs(&env.stack)
    );
    assert!(
        waits.iter().all(|r| r.outcome.is_ok()),
        "the copy never fails"
    );
    // The fake records the held create once it answers: one lookup means the copy never
    // started its own find-then-create.
    let calls = env.servicenow.requests();
    assert!(
        calls.iter().filter(|r| r.method == "GET").count() == 1
            && calls.iter().filter(|r| r.method == "POST").count() <= 1,
        "only the first attempt's lookup and create reached ServiceNow: {calls:?}"
    );
    let l = ledger(&env.stack).await;
    assert_eq!(entry(&l, &rid).await.unwrap().state, State::Claimed);
    env.servicenow.release();
    settle(&env.stack).await;
    assert_eq!(env.servicenow.incidents().len(), 1);
    let posts = env
        .servicenow
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "one create in all");
    let e = entry(&l, &rid).await.unwrap();
    assert_eq!(e.state, State::Created);
    assert_eq!(e.attempts, 1, "never taken over");
    assert!(!e.ticket.unwrap().found_by_lookup);
    assert!(runs(&env.stack)
        .iter()
        .any(|r| r.logs.iter().any(|l| l.contains("ticket already created"))));
    assert!(env.stack.queue_texts(POISON).await.is_empty());
    env.stack.assert_no_violations();
}

/// A claim left by a worker that died long ago (its lease lapsed; the incident it created is in
/// ServiceNow): the first delivery takes it over at once, finds the incident by lookup and
/// records it. No wait, no second incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_is_taken_over_at_once_and_its_ticket_found() {
    let env = env_with(&toml("servicenow", ""), &[]).await;
    let rid = responses(&env.qualtrics, 1, true).remove(0);
    // The dead worker's incident, created before it could record it.
    let created = reqwest::Client::new()
        .post(format!("{}/api/now/table/incident", env.servicenow.url()))
        .basic_auth(servicenow::USERNAME, Some(servicenow::PASSWORD))
        .json(&serde_json::json!({"short_description": "x", "correlation_id": correlation(&rid)}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let l = ledger(&env.stack).await;
    let stale = serde_json::json!({
        "v": 1, "surveyId": SV, "responseId": rid, "state": "claimed", "system": "servicenow",
        "claim": {"messageId": "gone", "dequeueCount": 1, "invocationId": "dead", "at": "2026-12-01T00:00:00Z"},
        "attempts": 3, "updatedAt": "2026-12-01T00:00:00Z"
    });
    let stale: Entry = serde_json::from_value(stale).unwrap();
    l.create(&Ledger::blob_name(SV, &rid), &stale)
        .await
        .unwrap()
        .expect("created");
    put(&env.stack, &request(&rid, "webhook")).await;
    settle(&env.stack).await;
    let e = entry(&l, &rid).await.unwrap();
    assert_eq!(e.state, State::Created);
    assert_eq!(e.attempts, 4, "taken over once");
    assert!(e.ticket.unwrap().found_by_lookup);
    assert_eq!(env.servicenow.incidents().len(), 1);
    let all = runs(&env.stack);
    assert_eq!(all.len(), 1, "taken over by the first delivery: {all:?}");
    assert!(all[0].outcome.is_ok());
}

/// What ends a request that stays transient: the retry window. A response Qualtrics never
/// serves (404, which may be a response not yet readable) comes back until
/// `TICKET_RETRY_WINDOW_SECONDS` have passed since its first failure, then is dead-lettered
/// with its original text and the reason in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_transient_past_the_retry_window_is_dead_lettered_with_the_reason() {
    let env = env_with(
        &toml("servicenow", ""),
        &[
            ("TICKET_RETRY_WINDOW_SECONDS", "3"),
            ("TICKET_RETRY_MAX_DELAY_SECONDS", "1"),
        ],
    )
    .await;
    let text = request("R_neverserved1", "webhook");
    put(&env.stack, &text).await;
    settle(&env.stack).await;
    assert_eq!(env.stack.queue_texts(POISON).await, vec![text]);
    let e = entry(&ledger(&env.stack).await, "R_neverserved1")
        .await
        .unwrap();
    assert_eq!(e.state, State::Failed);
    assert!(!e.retryable);
    let reason = e.reason.unwrap();
    assert!(
        reason.contains("gave up") && reason.contains("404"),
        "{reason}"
    );
    let all = runs(&env.stack);
    assert!(
        all.len() >= 3,
        "it came back before giving up: {}",
        all.len()
    );
    assert!(all.iter().all(|r| r.outcome.is_ok()));
    assert!(env.servicenow.requests().is_empty());
}

/// Zendesk's idempotency store: the same key and body replays the cached ticket (`hit`),
/// another body is refused, and keys expire after two hours on the fake's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_fake_idempotency_store() {
    let zd = FakeZendesk::start().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v2/tickets.json", zd.url());
    let post = |body: &'static str| {
        http.post(&url)
            .basic_auth(
                format!("{}/token", zendesk::EMAIL),
                Some(zendesk::API_TOKEN),
            )
            .header("idempotency-key", "qualtrics-R_1")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let a = r#"{"ticket":{"comment":{"body":"x"},"external_id":"e1"}}"#;
    let r1 = post(a).await.unwrap();
    assert_eq!(r1.status(), 201);
    assert_eq!(r1.headers()["x-idempotency-lookup"], "miss");
    let b1: serde_json::Value = r1.json().await.unwrap();
    let r2 = post(a).await.unwrap();
    assert_eq!(r2.headers()["x-idempotency-lookup"], "hit");
    let b2: serde_json::Value = r2.json().await.unwrap();
    assert_eq!(b1["ticket"]["id"], b2["ticket"]["id"]);
    let r3 = post(r#"{"ticket":{"comment":{"body":"y"}}}"#)
        .await
        .unwrap();
    assert_eq!(r3.status(), 400);
    assert!(r3.text().await.unwrap().contains("IdempotentRequestError"));
    zd.clock().advance(zendesk::IDEMPOTENCY_TTL);
    let r4 = post(a).await.unwrap();
    assert_eq!(r4.headers()["x-idempotency-lookup"], "miss");
    assert_eq!(zd.tickets().len(), 2);
    // external_id lookup may return several tickets.
    let list: serde_json::Value = http
        .get(&url)
        .query(&[("external_id", "e1")])
        .basic_auth(
            format!("{}/token", zendesk::EMAIL),
            Some(zendesk::API_TOKEN),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 2);
    // Missing comment: 422 RecordInvalid; the plain-text 429.
    let r = http
        .post(&url)
        .basic_auth(
            format!("{}/token", zendesk::EMAIL),
            Some(zendesk::API_TOKEN),
        )
        .header("content-type", "application/json")
        .body(r#"{"ticket":{"subject":"s"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    zd.set_rate_limit(Some(RateLimit {
        limit: 0,
        window: Duration::from_secs(60),
    }));
    let r = post(a).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.text().await.unwrap(), zendesk::RATE_LIMITED_BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_fake_follows_the_table_api() {
    let sn = FakeServiceNow::start().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/now/table/incident", sn.url());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#
    );
    let r = http
        .post(format!(
            "{url}?sysparm_fields=sys_id,number,correlation_id,opened_by"
        ))
        .basic_auth(servicenow::USERNAME, Some(servicenow::PASSWORD))
        .json(&serde_json::json!({"short_description": "x", "correlation_id": "c1", "urgency": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/api/now/table/incident/"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["result"]["sys_id"].as_str().unwrap().len(), 32);
    assert!(v["result"]["number"].as_str().unwrap().starts_with("INC"));
    assert!(v["result"]["opened_by"]["link"].is_string());
    assert_eq!(
        sn.incidents()[0].fields["urgency"],
        "2",
        "values are strings"
    );
    // A misspelt query field is ignored: every row comes back (the client must check).
    let get = |q: &str| {
        http.get(&url)
            .query(&[("sysparm_query", q)])
            .basic_auth(servicenow::USERNAME, Some(servicenow::PASSWORD))
            .send()
    };
    let all: serde_json::Value = get("corelation_id=nope")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["result"].as_array().unwrap().len(), 1);
    let none: serde_json::Value = get("correlation_id=nope")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["result"], serde_json::json!([]));
    sn.set_rate_limit(Some(RateLimit {
        limit: 1,
        window: Duration::from_secs(60),
    }));
    let ok = get("correlation_id=c1").await.unwrap();
    assert!(ok.headers().contains_key("x-ratelimit-limit"));
    let limited = get("correlation_id=c1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}
