//! Pulse benchmark (issue 18, "Numbers"): one ops event naming 10,000 people, POSTed to the real
//! `OpsEvents` (static-token path) through the local host, sent by the real `PulseSender` to
//! the fake Qualtrics enforcing the limits the reference gives (leaky buckets, burst one
//! second of each rate): brand-wide 3,000/min for every call, distributions 3,000/min,
//! transaction batches 500/min (**[UNCONFIRMED]**, AlexQ's template); contacts and
//! transactions have no published figure, so only the brand limit.
//!
//! The bridge's calls for n people: n contact upserts, about ⌈n/100⌉ transaction creates and
//! as many batch calls (one create, then adds; a part's last chunk is partial) and one
//! distribution. The minimum is the slowest bucket draining the calls made after its burst. Expect one distribution whose batch holds every person
//! exactly once, nothing in poison, a total time within 1.2× the minimum and the handler's
//! peak RSS (VmHWM) within 64 MiB.
//!
//! Run: `scripts/bench-pulse.sh` (`PULSE_BENCH_N` overrides the 10,000).

use crate::common;

use common::StackBuilder;
use devkit::bench::{peak_rss_kib, reset_peak_rss};
use devkit::fakes::qualtrics::{Endpoint, FakeQualtrics, Limit, RateLimits};
use devkit::publisher::Publisher;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const TOKEN: &str = "q-pulse-bench-token";
const OPS_TOKEN: &str = "ops-bench-static-token-0123456789abcdef";
const BRAND_PER_MIN: f64 = 3000.0;
const DISTRIBUTIONS_PER_MIN: f64 = 3000.0;
const BATCHES_PER_MIN: f64 = 500.0;
const RSS_LIMIT_MIB: f64 = 64.0;

const BRIDGE: &str = r#"
[[pulses]]
event_type = "sensor.activated"
survey = "SV_pulseBench1"
library = "UR_lib1"
message = "MS_msg1"
directory = "POOL_dir1"
mailing_list = "CG_bench1"
embedded_data = ["sensor"]
max_people = 10000
"#;

fn limit(per_minute: f64) -> Limit {
    Limit {
        per_minute,
        burst: (per_minute / 60.0).max(1.0),
    }
}

fn email(k: usize) -> String {
    format!("bench.person{k:05}@bench.example.org")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-pulse.sh"]
async fn pulse_bench_one_event_ten_thousand_people() {
    let n: usize = std::env::var("PULSE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let q = FakeQualtrics::start(TOKEN).await.expect("fake qualtrics");
    let stack = StackBuilder::default()
        .bridge_toml(BRIDGE)
        .setting("BRIDGE_LOG", "warn")
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("ANALYTICS_HASH_KEY", "pulse-bench-hash-key-0123456789")
        .setting("OPS_STATIC_TOKEN", OPS_TOKEN)
        .start()
        .await;
    q.set_rate_limits(RateLimits {
        brand: Some(limit(BRAND_PER_MIN)),
        endpoints: HashMap::from([
            (Endpoint::Distributions, limit(DISTRIBUTIONS_PER_MIN)),
            (Endpoint::TransactionBatches, limit(BATCHES_PER_MIN)),
        ]),
    });
    let people: Vec<Value> = (0..n).map(|k| json!({"email": email(k)})).collect();
    let body = json!({
        "eventId": "bench-evt-1", "eventType": "sensor.activated",
        "occurredAt": "2026-12-07T10:00:00Z", "people": people,
        "attributes": {"sensor": "CPU-Saturation"}
    })
    .to_string();
    let pid = stack.host.handler_pid().await.expect("handler pid");
    reset_peak_rss(pid).expect("clear_refs");
    let url = stack.host.function_url("OpsEvents").expect("OpsEvents");
    let started = Instant::now();
    let reply = Publisher::new(url)
        .post(
            Some("application/json"),
            &[("x-bridge-token", OPS_TOKEN)],
            body.into_bytes(),
        )
        .await
        .expect("OpsEvents answers");
    assert_eq!(reply.status, 202, "{reply:?}");
    let posted = started.elapsed();
    let done = stack
        .eventually(Duration::from_secs(1800), || async {
            !q.distributions().is_empty()
        })
        .await;
    let elapsed = q
        .distributions()
        .first()
        .map_or(started.elapsed(), |d| d.at - started);
    // Wait for completion (nothing in flight or queued), then audit against the fake.
    stack.settle(Duration::from_secs(300)).await;
    let hwm_mib = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;

    let dists = q.distributions();
    let sent: Vec<&str> = dists.iter().flat_map(|d| d.recipients()).collect();
    let unique: HashSet<&str> = sent.iter().copied().collect();
    let duplicates = sent.len() - unique.len();
    let unreached = (0..n)
        .filter(|k| !unique.contains(email(*k).as_str()))
        .count();
    let poison = stack.queue_texts("pulse-requests-poison").await.len();
    let batches = q.batch_members().len();

    // The calls the bridge made (parts rarely end on a whole chunk, so a few more than
    // ⌈n/100⌉ transactions and batch calls), as the fake admitted them.
    let admitted = |e: Endpoint| q.rate_counts(Some(e)).0 as f64;
    let chunks = admitted(Endpoint::TransactionBatches);
    let total_calls = admitted(Endpoint::Contacts)
        + admitted(Endpoint::Transactions)
        + chunks
        + admitted(Endpoint::Distributions);
    let bucket_min =
        |calls: f64, per_min: f64| (calls - limit(per_min).burst).max(0.0) / (per_min / 60.0);
    let minimum = bucket_min(total_calls, BRAND_PER_MIN)
        .max(bucket_min(chunks, BATCHES_PER_MIN))
        .max(bucket_min(1.0, DISTRIBUTIONS_PER_MIN));
    let ratio = elapsed.as_secs_f64() / minimum;
    let calls: Vec<String> = [
        (Endpoint::Contacts, "contacts"),
        (Endpoint::Transactions, "transactions"),
        (Endpoint::TransactionBatches, "batches"),
        (Endpoint::Distributions, "distributions"),
    ]
    .iter()
    .map(|(e, name)| {
        let (ok, denied) = q.rate_counts(Some(*e));
        format!("{name}={ok}/429s={denied}")
    })
    .collect();
    let out = stack.host.handler_output().join("\n");
    let leaked = out.contains("@bench.example.org");
    println!(
        "BENCH pulse: n={n} limits=brand {BRAND_PER_MIN}/min, distributions {DISTRIBUTIONS_PER_MIN}/min, \
         transaction batches {BATCHES_PER_MIN}/min (burst 1 s) distributions={} batches={batches} \
         recipients={} duplicate_sends={duplicates} unreached={unreached} poison={poison} \
         failed_invocations={} calls[{}] posted={:.2}s total={:.1}s minimum={minimum:.1}s \
         ratio={ratio:.3} handler_peak_rss={hwm_mib:.1}MiB",
        dists.len(),
        sent.len(),
        stack.failed_invocations(),
        calls.join(" "),
        posted.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    assert!(done, "no distribution after 1800 s");
    assert!(!leaked, "an address reached the handler's output");
    assert_eq!(dists.len(), 1, "one distribution for the event");
    assert_eq!(batches, 1, "one transaction batch for the event");
    assert_eq!(duplicates, 0, "duplicate sends");
    assert_eq!(unreached, 0, "people without their survey");
    assert_eq!(poison, 0, "poison");
    assert!(ratio <= 1.2, "{ratio:.3}× the minimum");
    assert!(
        hwm_mib <= RSS_LIMIT_MIB,
        "handler peak RSS {hwm_mib:.1} MiB"
    );
}
