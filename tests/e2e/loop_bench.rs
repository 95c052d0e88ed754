//! Closing-the-loop benchmark (issue 17, "Numbers"): 1,000 resolution events through the local
//! host against the fake Qualtrics enforcing its documented per-endpoint rate limits.
//!
//! Each ticket's ledger entry is written through the real ledger API (creating 1,000 tickets
//! through `TicketCreator` first would only add that function's own benchmark); then one signed
//! Zendesk `ticket.status_changed` → `solved` per ticket is POSTed to the real `TicketEvents`,
//! which queues a `LoopRequest` for the real `LoopCloser`: write-back (`PUT /responses/{id}`),
//! the respondent read (`GET /surveys/{id}/responses/{id}`), contact upsert and one
//! distribution per ticket. Limits (reference `external-apis.md` §1.5, leaky buckets):
//! "single response" 300/min for the read and, separately, the update; distributions
//! 3,000/min; 3,000/min brand-wide for every call; contacts have no per-endpoint figure, so only
//! the brand limit. The bucket size is not documented: one second of each rate.
//!
//! Expect every response written back once as resolved, one distribution per ticket (0
//! duplicates), nothing in poison, and a total time within 1.2× the minimum the limits allow.
//!
//! Run: `scripts/bench-loop.sh` (`LOOP_BENCH_N` overrides the 1,000).

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{storage_of, Stack, StackBuilder};
use devkit::fakes::qualtrics::{Endpoint, FakeQualtrics, Limit, RateLimits};
use devkit::publisher::Publisher;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use qualtrics_bridge::tickets::ledger::{Claim, Entry, Ledger, State, TicketRef};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const SV: &str = "SV_loopBench01";
const TOKEN: &str = "q-loop-bench-token";
const ZENDESK_SECRET: &str = "zd-bench-signing-secret";
/// The calls `LoopCloser` needs per resolved ticket with a follow-up, and their limits.
const CALLS_PER_EVENT: [(Endpoint, &str, f64); 4] = [
    (Endpoint::ResponseUpdate, "response-update", 1.0),
    (Endpoint::ResponseGet, "response-get", 1.0),
    (Endpoint::Contacts, "contacts", 1.0),
    (Endpoint::Distributions, "distributions", 1.0),
];
const SINGLE_RESPONSE_PER_MIN: f64 = 300.0;
const DISTRIBUTIONS_PER_MIN: f64 = 3000.0;
const BRAND_PER_MIN: f64 = 3000.0;

fn limit(per_minute: f64) -> Limit {
    Limit {
        per_minute,
        burst: (per_minute / 60.0).max(1.0),
    }
}

/// Now, in whole seconds, as the `x-zendesk-webhook-signature-timestamp` Zendesk sends.
fn now_ts() -> String {
    let whole = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp());
    let whole = whole.expect("now is in range");
    whole.format(&Rfc3339).expect("RFC 3339 formats")
}

/// Zendesk's webhook signature: base64(HMAC-SHA256(secret, timestamp + body)).
fn sign(timestamp: &str, body: &[u8]) -> String {
    let mac = Hmac::<Sha256>::new_from_slice(ZENDESK_SECRET.as_bytes()).expect("any key length");
    STANDARD.encode(
        mac.chain_update(timestamp)
            .chain_update(body)
            .finalize()
            .into_bytes(),
    )
}

fn solved_event(ticket: &str, rid: &str) -> String {
    json!({
        "type": "zen:event-type:ticket.status_changed",
        "account_id": 12514403,
        "id": format!("ev-{ticket}"),
        "time": "2026-12-07T04:30:01Z",
        "zendesk_event_version": "2022-11-06",
        "subject": format!("zen:ticket:{ticket}"),
        "detail": {
            "actor_id": "1", "assignee_id": "2", "brand_id": "3",
            "created_at": "2026-12-07T04:00:00Z", "description": "Detractor",
            "external_id": format!("qualtrics:{SV}:{rid}"), "id": ticket, "priority": "HIGH",
            "requester_id": "4", "status": "SOLVED", "subject": "Detractor",
            "tags": ["qualtrics"], "type": "INCIDENT",
            "updated_at": "2026-12-07T05:30:00Z", "via": {"channel": "api"}
        },
        "event": {"current": "SOLVED", "previous": "OPEN"}
    })
    .to_string()
}

/// The ticket-creation ledger entry `TicketCreator` would have written, through the real API.
async fn put_entry(ledger: &Ledger, rid: &str, ticket: &str) {
    let entry = Entry {
        v: 1,
        survey_id: SV.into(),
        response_id: rid.into(),
        state: State::Created,
        system: Some("zendesk".into()),
        claim: Claim {
            message_id: None,
            dequeue_count: 1,
            invocation_id: "bench".into(),
            at: now_ts(),
        },
        ticket: Some(TicketRef {
            system: "zendesk".into(),
            id: ticket.into(),
            number: Some(ticket.into()),
            found_by_lookup: false,
        }),
        reason: None,
        retryable: false,
        attempts: 1,
        updated_at: now_ts(),
    };
    let created = ledger
        .create(&Ledger::blob_name(SV, rid), &entry)
        .await
        .expect("ledger write");
    assert!(created.is_some(), "entry for {rid} was new");
}

async fn post_events(stack: &Stack, tickets: &[(String, String)]) {
    let url = stack
        .host
        .function_url("TicketEvents")
        .expect("TicketEvents function")
        .replace("{system}", "zendesk");
    let publisher = Publisher::new(url);
    let p = &publisher;
    futures::stream::iter(tickets)
        .for_each_concurrent(32, |(ticket, rid)| async move {
            let body = solved_event(ticket, rid);
            let ts = now_ts();
            let sig = sign(&ts, body.as_bytes());
            let headers = [
                ("x-zendesk-webhook-signature", sig.as_str()),
                ("x-zendesk-webhook-signature-timestamp", ts.as_str()),
            ];
            let r = p
                .post(Some("application/json"), &headers, body.into_bytes())
                .await
                .expect("the front door answers");
            assert_eq!(r.status, 202, "event for {ticket}: {r:?}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-loop.sh"]
async fn loop_bench_documented_qualtrics_limits() {
    let n: usize = std::env::var("LOOP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let q = FakeQualtrics::start(TOKEN).await.expect("fake qualtrics");
    let rids = q.add_responses(SV, n);
    let mut emails = HashMap::new();
    for (k, rid) in rids.iter().enumerate() {
        let email = format!("bench.respondent{k}@example.org");
        q.set_recipient(rid, &email, "Pat", "Respondent");
        emails.insert(email, rid.clone());
    }
    let toml = format!(
        "[[surveys]]\nid = \"{SV}\"\n[surveys.tickets]\nsystem = \"zendesk\"\nallowed_fields = [\"QID1\"]\n\
         [surveys.loop]\nfollowup = {{ survey = \"SV_followup1\", library = \"UR_lib1\", message = \"MS_msg1\", \
         mailing_list = \"CG_list1\", directory = \"POOL_dir1\" }}\n"
    );
    let stack = StackBuilder::default()
        .bridge_toml(&toml)
        .setting("BRIDGE_LOG", "warn")
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("ZENDESK_WEBHOOK_SECRET", ZENDESK_SECRET)
        .start()
        .await;
    let ledger = Ledger::new(
        storage_of(&stack.azurite)
            .blob_container("bridge-state")
            .expect("container"),
        "bridge-state",
    );
    let tickets: Vec<(String, String)> = rids
        .iter()
        .enumerate()
        .map(|(k, rid)| ((500_000 + k).to_string(), rid.clone()))
        .collect();
    let l = &ledger;
    futures::stream::iter(&tickets)
        .for_each_concurrent(32, |(t, rid)| put_entry(l, rid, t))
        .await;

    q.set_rate_limits(RateLimits {
        brand: Some(limit(BRAND_PER_MIN)),
        endpoints: HashMap::from([
            (Endpoint::ResponseGet, limit(SINGLE_RESPONSE_PER_MIN)),
            (Endpoint::ResponseUpdate, limit(SINGLE_RESPONSE_PER_MIN)),
            (Endpoint::Distributions, limit(DISTRIBUTIONS_PER_MIN)),
        ]),
    });
    let started = Instant::now();
    post_events(&stack, &tickets).await;
    let posted = started.elapsed();
    let done = stack
        .eventually(Duration::from_secs(1800), || async {
            q.distributions().len() >= n
                && q.response_updates()
                    .iter()
                    .map(|u| &u.response_id)
                    .collect::<HashSet<_>>()
                    .len()
                    >= n
        })
        .await;
    let elapsed = started.elapsed();
    // Wait for completion (nothing in flight or queued), then audit against the fake.
    stack.settle(Duration::from_secs(120)).await;

    let mut last_state: HashMap<String, String> = HashMap::new();
    let updates = q.response_updates();
    for u in &updates {
        let v: Value = serde_json::from_str(&u.body).expect("update body is JSON");
        let state = v["embeddedData"]["TicketState"].as_str().unwrap_or("");
        last_state.insert(u.response_id.clone(), state.to_string());
    }
    let lost = rids
        .iter()
        .filter(|r| last_state.get(*r).map(String::as_str) != Some("resolved"))
        .count();
    let dists = q.distributions();
    let per_person: HashMap<&str, usize> = dists.iter().fold(HashMap::new(), |mut m, d| {
        *m.entry(d.email.as_str()).or_default() += 1;
        m
    });
    let duplicates: usize = per_person.values().map(|c| c - 1).sum();
    let unreached = emails
        .keys()
        .filter(|e| !per_person.contains_key(e.as_str()))
        .count();
    let poison = stack.queue_texts("loop-requests-poison").await.len();

    // The minimum: the slowest bucket, each draining its calls at its rate after its burst.
    let per_sec = |per_min: f64| per_min / 60.0;
    let bucket_min =
        |calls: f64, per_min: f64| ((calls - limit(per_min).burst).max(0.0)) / per_sec(per_min);
    let n_f = n as f64;
    let total_calls: f64 = CALLS_PER_EVENT.iter().map(|c| c.2).sum::<f64>() * n_f;
    let minimum = bucket_min(n_f, SINGLE_RESPONSE_PER_MIN)
        .max(bucket_min(n_f, DISTRIBUTIONS_PER_MIN))
        .max(bucket_min(total_calls, BRAND_PER_MIN));
    let ratio = elapsed.as_secs_f64() / minimum;
    let calls: Vec<String> = CALLS_PER_EVENT
        .iter()
        .map(|(e, name, _)| {
            let (ok, denied) = q.rate_counts(Some(*e));
            format!("{name}={ok}/429s={denied}")
        })
        .collect();
    let failed_runs = stack.failed_invocations();
    println!(
        "BENCH loop: n={n} limits=single-response {SINGLE_RESPONSE_PER_MIN}/min, distributions \
         {DISTRIBUTIONS_PER_MIN}/min, brand {BRAND_PER_MIN}/min (burst 1 s) write_backs={} \
         lost_write_backs={lost} distributions={} duplicate_followups={duplicates} unreached={unreached} \
         poison={poison} failed_invocations={failed_runs} calls[{}] posted={:.1}s total={:.1}s \
         minimum={minimum:.1}s ratio={ratio:.3}",
        updates.len(),
        dists.len(),
        calls.join(" "),
        posted.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    assert!(done, "not all write-backs and follow-ups after 1800 s");
    assert_eq!(lost, 0, "lost write-backs");
    assert_eq!(duplicates, 0, "duplicate follow-ups");
    assert_eq!(unreached, 0, "respondents without their follow-up");
    assert_eq!(poison, 0, "poison");
    assert!(ratio <= 1.2, "{ratio:.3}× the minimum");
}
