//! Tickets benchmark (issue 6): 1,000 distinct requests through the local host against a fake
//! ServiceNow limited to 50 requests/s, then a fake Zendesk at the Team plan's 200 requests
//! per minute with the minute scaled down to 5 s (40/s). Both answer 429 + `Retry-After` over
//! the limit. Expect 1,000 tickets, 0 duplicates, 0 poison, and a total time within 1.2× the
//! minimum the limit allows for the calls each ticket needs (lookup + create = 2).
//!
//! Run: `cargo test --release --test e2e tickets_bench:: -- --ignored --nocapture --test-threads=1`
//! (`TICKETS_BENCH_N` overrides the 1,000.)

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::StackBuilder;
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::servicenow::{self, FakeServiceNow};
use devkit::fakes::ticketing::RateLimit;
use devkit::fakes::zendesk::{self, FakeZendesk};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SV: &str = "SV_bench1";
const TOKEN: &str = "q-bench-token";

async fn run(system: &str, rate: RateLimit) {
    let n: usize = std::env::var("TICKETS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let qualtrics = FakeQualtrics::start(TOKEN).await.unwrap();
    let sn = FakeServiceNow::start().await.unwrap();
    let zd = FakeZendesk::start().await.unwrap();
    let ids = qualtrics.add_responses(SV, n);
    let toml = format!(
        "[[surveys]]\nid = \"{SV}\"\n[surveys.tickets]\nsystem = \"{system}\"\nallowed_fields = [\"QID1\"]\n"
    );
    let stack = StackBuilder::default()
        .bridge_toml(&toml)
        .setting("BRIDGE_LOG", "warn")
        .setting("QUALTRICS_BASE_URL", &qualtrics.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("SERVICENOW_INSTANCE_URL", &sn.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .setting("ZENDESK_BASE_URL", &zd.url())
        .setting("ZENDESK_EMAIL", zendesk::EMAIL)
        .setting("ZENDESK_API_TOKEN", zendesk::API_TOKEN)
        .start()
        .await;
    match system {
        "servicenow" => sn.set_rate_limit(Some(rate)),
        _ => zd.set_rate_limit(Some(rate)),
    }
    let texts: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"v":1,"surveyId":"{SV}","responseId":"{id}","source":"export","receivedAt":"2026-12-01T00:00:00Z"}}"#
            )
        })
        .collect();
    stack.queues.create_queue("ticket-requests").await.unwrap();
    let started = Instant::now();
    let queues = &stack.queues;
    for chunk in texts.chunks(50) {
        let puts = chunk.iter().map(|t| async move {
            queues
                .put_message("ticket-requests", &STANDARD.encode(t))
                .await
                .expect("put")
        });
        futures::future::join_all(puts).await;
    }
    let enqueued = started.elapsed();
    let count = || match system {
        "servicenow" => sn.incidents().len(),
        _ => zd.tickets().len(),
    };
    let done = stack
        .eventually(Duration::from_secs(600), || async { count() >= n })
        .await;
    let elapsed = started.elapsed();
    assert!(
        done,
        "{system}: only {} of {n} tickets after 600 s",
        count()
    );
    // Wait for completion (nothing in flight, no message left or leased), then audit.
    stack.settle(Duration::from_secs(60)).await;
    let correlations: Vec<String> = match system {
        "servicenow" => sn
            .incidents()
            .into_iter()
            .map(|i| i.fields["correlation_id"].clone())
            .collect(),
        _ => zd
            .tickets()
            .into_iter()
            .filter_map(|t| t.external_id)
            .collect(),
    };
    let unique: HashSet<&String> = correlations.iter().collect();
    let duplicates = correlations.len() - unique.len();
    let poison = stack.queue_texts("ticket-requests-poison").await.len();
    let (admitted, denied) = match system {
        "servicenow" => sn.rate_counts(),
        _ => zd.rate_counts(),
    };
    let calls_per_ticket = admitted as f64 / n as f64;
    let per_sec = rate.limit as f64 / rate.window.as_secs_f64();
    // Each ticket needs a lookup and a create.
    let minimum = (2 * n) as f64 / per_sec;
    let ratio = elapsed.as_secs_f64() / minimum;
    let failed_runs = stack.failed_invocations();
    println!(
        "BENCH {system}: n={n} limit={}/{:?} ({per_sec:.0}/s) tickets={} duplicates={duplicates} poison={poison} \
         calls/ticket={calls_per_ticket:.2} admitted={admitted} 429s={denied} failed_invocations={failed_runs} \
         enqueue={:.1}s total={:.1}s minimum={minimum:.1}s ratio={ratio:.3}",
        rate.limit,
        rate.window,
        correlations.len(),
        enqueued.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert_eq!(correlations.len(), n, "{system}: tickets");
    assert_eq!(duplicates, 0, "{system}: duplicates");
    assert_eq!(poison, 0, "{system}: poison");
    assert!(ratio <= 1.2, "{system}: {ratio:.3}× the minimum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test e2e tickets_bench:: -- --ignored --nocapture --test-threads=1"]
async fn tickets_bench_servicenow_50_per_second() {
    run(
        "servicenow",
        RateLimit {
            limit: 50,
            window: Duration::from_secs(1),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test e2e tickets_bench:: -- --ignored --nocapture --test-threads=1"]
async fn tickets_bench_zendesk_team_plan_scaled() {
    run(
        "zendesk",
        RateLimit {
            limit: 200,
            window: Duration::from_secs(5),
        },
    )
    .await;
}
