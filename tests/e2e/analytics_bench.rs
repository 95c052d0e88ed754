//! Analytics benchmark (ignored by default; run `scripts/bench-analytics.sh`).
//!
//! 1. `rebuild_against_duckdb`: ~1 GiB of wide export rows (devkit's `wide_data`, ~45 answer
//!    cells each) as 64 MiB export blobs in Azurite (on disk). The real release binary's
//!    `qualtrics-bridge analytics rebuild` (the definition fetched from the fake Qualtrics)
//!    builds the three fact tables; then DuckDB (`tests/oracles/bench_unpivot.py`) unpivots
//!    the same bytes, read from local disk, to Parquet with the same columns. Both are child
//!    processes timed from spawn to exit, peak RSS from `wait4`. Asserts that both produced
//!    the same row counts, the bridge's peak RSS and the bridge/DuckDB time ratio.
//! 2. `incremental_cost_does_not_grow_with_the_table`: the `AnalyticsBuilder` timer through
//!    devkit's host builds a table from 15-minute exports of 1,000 responses, then one more
//!    such export arrives and one timer run adds it; its time and the storage requests it made
//!    (counted by devkit's `CountingProxy` in front of Azurite) at two table sizes.
//!
//! Env: `BENCH_ANALYTICS_MIB` (1024), `BENCH_BLOB_MIB` (64), `BENCH_RSS_LIMIT_MIB` (256),
//! `BENCH_RATIO_LIMIT` (1.0), `BENCH_TABLE_SIZES` ("10000 200000" responses).

use crate::common;

use common::StackBuilder;
use devkit::azurite::{repo_root, Azurite};
use devkit::bench::{peak_rss_kib, reset_peak_rss, run_measured};
use devkit::counting::{CountingProxy, Counts};
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::wide_data::{wide_definition, wide_response, WIDE_DEFINITION_VERSION};
use qualtrics_bridge::storage::blob_state;
use qualtrics_bridge::storage::Storage;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SV: &str = "SV_benchWide0001";
const TOKEN: &str = "bench-token";
const EXPORTS: &str = "qualtrics-exports";
const MIB: f64 = 1024.0 * 1024.0;
/// 2025-02-01T00:00:00Z: after the definition's `LastModified`.
const FIRST_RECORDED_MS: i64 = 1_738_368_000_000;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The name of the `n`th 15-minute export blob (from 2025-03-01T00:00:00Z).
fn blob_name(n: u64) -> String {
    let t =
        time::macros::datetime!(2025-03-01 00:00:00 UTC) + time::Duration::minutes(15 * n as i64);
    let f = time::macros::format_description!(
        "[year]/[month]/[day]/[year][month][day]T[hour][minute][second]Z"
    );
    format!("{SV}/{}-ES_{n:06}.ndjson", t.format(&f).expect("format"))
}

/// Export blobs written to local files: their names, paths, responses and expected cells.
struct Generated {
    blobs: Vec<(String, PathBuf)>,
    responses: u64,
    cells: u64,
    bytes: u64,
}

/// Writes `count` responses from `first` on, `per_blob` to a file, the files named as the
/// export blobs numbered from `first_blob`.
fn generate(dir: &Path, first: u64, count: u64, per_blob: u64, first_blob: u64) -> Generated {
    let mut g = Generated {
        blobs: Vec::new(),
        responses: 0,
        cells: 0,
        bytes: 0,
    };
    let mut seq = first;
    let mut n = first_blob;
    while g.responses < count {
        let name = blob_name(n);
        let path = dir.join(name.rsplit('/').next().expect("file name"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        for _ in 0..per_blob.min(count - g.responses) {
            let (line, cells) = wide_response(seq, FIRST_RECORDED_MS + seq as i64 * 3_000);
            f.write_all(line.as_bytes()).expect("write");
            f.write_all(b"\n").expect("write");
            g.bytes += line.len() as u64 + 1;
            g.cells += cells as u64;
            g.responses += 1;
            seq += 1;
        }
        f.flush().expect("flush");
        g.blobs.push((name, path));
        n += 1;
    }
    g
}

/// Uploads a local file as a block blob (4 MiB blocks), as the export writes them.
async fn upload(storage: &Storage, name: &str, path: &Path) {
    let c = storage.blob_container(EXPORTS).expect("container");
    blob_state::ensure_container(&c).await.expect("container");
    let b = c.blob_client(name);
    let bytes = std::fs::read(path).expect("read");
    let mut count = 0u32;
    for block in bytes.chunks(4 << 20) {
        blob_state::stage_block(&b, name, count, bytes::Bytes::copy_from_slice(block))
            .await
            .expect("stage");
        count += 1;
    }
    blob_state::commit_new(&b, name, count, Default::default())
        .await
        .expect("commit");
}

fn storage_for(cs: &str) -> Storage {
    let cs = cs.to_owned();
    let lookup = move |k: &str| (k == "AzureWebJobsStorage").then(|| cs.clone());
    let t = qualtrics_bridge::identity::transport(&lookup).expect("transport");
    Storage::connect("AzureWebJobsStorage", &lookup, &t).expect("storage")
}

/// Rows committed to `table` (the sum of the log's `numRecords`), and its files.
async fn committed(s: &Storage, container: &str, table: &str) -> (u64, usize) {
    let (mut rows, mut files) = (0, 0);
    for n in common::blob_names(s, container).await {
        if !(n.starts_with(&format!("{table}/_delta_log/")) && n.ends_with(".json")) {
            continue;
        }
        let text = common::blob_text(s, container, &n).await.expect("commit");
        for line in text.lines() {
            let a: Value = serde_json::from_str(line).expect("action");
            if let Some(stats) = a["add"]["stats"].as_str() {
                let stats: Value = serde_json::from_str(stats).expect("stats");
                rows += stats["numRecords"].as_u64().expect("numRecords");
                files += 1;
            }
        }
    }
    (rows, files)
}

const CONFIG: &str = "[surveys.analytics]\nembedded = [\"Store\", \"Region\"]\n";

fn bridge_toml() -> String {
    format!("[[surveys]]\nid = \"{SV}\"\nexport = true\n{CONFIG}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-analytics.sh"]
async fn rebuild_against_duckdb() {
    let target = env_num("BENCH_ANALYTICS_MIB", 1024) << 20;
    let blob_bytes = env_num("BENCH_BLOB_MIB", 64) << 20;
    let rss_limit_kib = env_num("BENCH_RSS_LIMIT_MIB", 256) * 1024;
    let ratio_limit: f64 = std::env::var("BENCH_RATIO_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);

    // Row size is about constant: the responses per blob that give `blob_bytes`.
    let per_blob = (blob_bytes / wide_response(0, FIRST_RECORDED_MS).0.len() as u64).max(1);
    let count = per_blob * target.div_ceil(blob_bytes);
    let files = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let g = generate(files.path(), 0, count, per_blob, 0);
    let generated = t0.elapsed().as_secs_f64();

    let data = tempfile::tempdir().expect("azurite dir");
    let azurite = Azurite::start_persistent(data.path())
        .await
        .expect("azurite");
    let cs = azurite.connection_string();
    let storage = storage_for(&cs);
    let t0 = Instant::now();
    for (name, path) in &g.blobs {
        upload(&storage, name, path).await;
    }
    let uploaded = t0.elapsed().as_secs_f64();
    let fake = FakeQualtrics::start(TOKEN).await.expect("fake qualtrics");
    fake.set_definition(SV, wide_definition(SV));
    println!(
        "BENCH analytics: {} responses, {} expected question_response rows, {} bytes ({:.0} MiB) NDJSON in {} blobs (generated in {generated:.1} s, uploaded in {uploaded:.1} s)",
        g.responses,
        g.cells,
        g.bytes,
        g.bytes as f64 / MIB,
        g.blobs.len()
    );

    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("bridge.toml");
    std::fs::write(&config, bridge_toml()).expect("config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qualtrics-bridge"));
    cmd.args([
        "analytics",
        "rebuild",
        "--survey",
        SV,
        "--container",
        "bench-bridge",
    ])
    .env_clear()
    .env("QUALTRICS_BASE_URL", &fake.base_url)
    .env("QUALTRICS_API_TOKEN", TOKEN)
    .env("BRIDGE_CONFIG", &config)
    .env("AzureWebJobsStorage", &cs)
    .envs(std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_") || k == "BRIDGE_LOG"));
    let load_bridge = load_average();
    let bridge = tokio::task::spawn_blocking(move || run_measured(cmd))
        .await
        .expect("join")
        .expect("bridge runs");
    assert_eq!(bridge.code, 0, "{}\n{}", bridge.stdout, bridge.stderr);
    let bridge_s = bridge.elapsed.as_secs_f64();

    let out = tempfile::tempdir().expect("duckdb out");
    let spec = json!({
        "files": g.blobs.iter().map(|(_, p)| p.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "out": out.path(),
        "survey_id": SV,
        "definition_version": WIDE_DEFINITION_VERSION,
        "embedded": ["Store", "Region"],
    });
    let mut cmd = std::process::Command::new(common::oracle_python());
    cmd.arg(repo_root().join("tests/oracles/bench_unpivot.py"))
        .arg(spec.to_string());
    let load_duckdb = load_average();
    let duck = tokio::task::spawn_blocking(move || run_measured(cmd))
        .await
        .expect("join")
        .expect("duckdb runs");
    assert_eq!(duck.code, 0, "{}\n{}", duck.stdout, duck.stderr);
    let duck_s = duck.elapsed.as_secs_f64();
    let duck_rows: Value = serde_json::from_str(duck.stdout.trim()).expect("duckdb JSON");

    let mut files_out = Vec::new();
    for (table, want) in [
        ("survey_response", g.responses),
        ("question_response", g.cells),
        ("response_embedded_data", g.responses * 2),
    ] {
        let (rows, files) = committed(&storage, "bench-bridge", table).await;
        assert_eq!(rows, want, "{table}: rows the bridge committed");
        assert_eq!(duck_rows["rows"][table], want, "{table}: rows DuckDB wrote");
        files_out.push(format!("{table} {rows} rows in {files} file(s)"));
    }
    let mb = g.bytes as f64 / 1e6;
    println!("BENCH tables (both): {}", files_out.join(", "));
    println!(
        "BENCH bridge `analytics rebuild` (NDJSON from Azurite): {bridge_s:>7.2} s {:>6.1} MB/s | peak RSS {:>6.1} MiB | load {load_bridge}",
        mb / bridge_s,
        bridge.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "BENCH duckdb unpivot (NDJSON from local disk):          {duck_s:>7.2} s {:>6.1} MB/s | peak RSS {:>6.1} MiB | load {load_duckdb}",
        mb / duck_s,
        duck.peak_rss_kib as f64 / 1024.0
    );
    let ratio = bridge_s / duck_s;
    println!(
        "BENCH ratio bridge/duckdb {ratio:.2}x (limit {ratio_limit}x) | bridge peak RSS {:.1} MiB (limit {} MiB)",
        bridge.peak_rss_kib as f64 / 1024.0,
        rss_limit_kib / 1024
    );
    assert!(
        bridge.peak_rss_kib <= rss_limit_kib,
        "bridge peak RSS {} KiB > {rss_limit_kib} KiB",
        bridge.peak_rss_kib
    );
    assert!(
        ratio <= ratio_limit,
        "bridge took {ratio:.2}× DuckDB's time"
    );
}

/// One table size: build the history, then time one run that adds one export of 1,000.
async fn incremental_at(table_responses: u64) -> (f64, Counts, String) {
    const PER_EXPORT: u64 = 1000;
    let files = tempfile::tempdir().expect("temp dir");
    let data = tempfile::tempdir().expect("azurite dir");
    let azurite = Azurite::start_persistent(data.path())
        .await
        .expect("azurite");
    let proxy = CountingProxy::start(([127, 0, 0, 1], azurite.blob_port).into())
        .await
        .expect("proxy");
    let cs = storage_auth::ConnectionString::azurite(proxy.port, azurite.queue_port);
    let storage = storage_for(&azurite.connection_string());
    let fake = FakeQualtrics::start(TOKEN).await.expect("fake qualtrics");
    fake.set_definition(SV, wide_definition(SV));
    let stack = StackBuilder::default()
        .setting("AzureWebJobsStorage", &cs)
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0")
        .setting("ANALYTICS_TIME_BUDGET_SECONDS", "560")
        .setting("BRIDGE_LOG", "warn")
        .bridge_toml(&bridge_toml())
        .start()
        .await;

    // The history: 15-minute exports of 1,000 responses, built by timer runs.
    let history = generate(files.path(), 0, table_responses, PER_EXPORT, 0);
    for (name, path) in &history.blobs {
        upload(&storage, name, path).await;
    }
    let t0 = Instant::now();
    let mut built = 0u64;
    while built < table_responses {
        let r = stack.host.fire("AnalyticsBuilder").await.expect("fire");
        assert!(r.outcome.is_ok(), "{:?} {:?}", r.outcome, r.logs);
        let cursor: Value = serde_json::from_str(
            &common::blob_text(&storage, "bridge-state", &format!("analytics/{SV}.json"))
                .await
                .expect("cursor"),
        )
        .expect("cursor JSON");
        built = cursor["responses"].as_u64().unwrap_or(0);
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "history not built: {:?}",
            r.logs
        );
    }
    let build_s = t0.elapsed().as_secs_f64();
    let (rows, table_files) = committed(&storage, "qualtrics-analytics", "question_response").await;

    // One more export, one timer run.
    let next = generate(
        files.path(),
        table_responses,
        PER_EXPORT,
        PER_EXPORT,
        history.blobs.len() as u64,
    );
    upload(&storage, &next.blobs[0].0, &next.blobs[0].1).await;
    let pid = stack.host.handler_pid().await.expect("handler pid");
    reset_peak_rss(pid).expect("reset peak RSS");
    proxy.take();
    let t1 = Instant::now();
    let r = stack.host.fire("AnalyticsBuilder").await.expect("fire");
    let run_s = t1.elapsed().as_secs_f64();
    let counts = proxy.take();
    let hwm = peak_rss_kib(pid).unwrap_or(0);
    let logs = r.logs.join(" | ");
    assert!(r.outcome.is_ok(), "{:?} {logs}", r.outcome);
    assert!(
        logs.contains(&format!("{PER_EXPORT} response(s) added")),
        "{logs}"
    );
    let (after, _) = committed(&storage, "qualtrics-analytics", "question_response").await;
    assert_eq!(
        after,
        rows + next.cells,
        "the run added exactly the new cells"
    );
    let summary = format!(
        "table {table_responses} responses ({rows} question_response rows, {table_files} file(s), built in {build_s:.1} s) | +{PER_EXPORT} responses: {run_s:.2} s, {} storage requests {:?}, {} KB sent, {} KB received, peak RSS {:.1} MiB",
        counts.total(),
        counts.requests,
        counts.request_bytes / 1000,
        counts.reply_bytes / 1000,
        hwm as f64 / 1024.0
    );
    stack.settle(Duration::from_secs(30)).await;
    (run_s, counts, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-analytics.sh"]
async fn incremental_cost_does_not_grow_with_the_table() {
    let sizes: Vec<u64> = std::env::var("BENCH_TABLE_SIZES")
        .unwrap_or_else(|_| "10000 200000".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(sizes.len() >= 2, "two table sizes");
    let mut results = Vec::new();
    for &n in &sizes {
        let (s, counts, summary) = incremental_at(n).await;
        println!("BENCH incremental: {summary}");
        results.push((n, s, counts));
    }
    let (small, large) = (&results[0], &results[results.len() - 1]);
    println!(
        "BENCH incremental: table ×{:.0}: run time ×{:.2}, storage requests {} → {}, bytes received ×{:.2}",
        large.0 as f64 / small.0 as f64,
        large.1 / small.1,
        small.2.total(),
        large.2.total(),
        large.2.reply_bytes as f64 / small.2.reply_bytes.max(1) as f64
    );
    // Proportional to the new data: the same requests (give or take a checkpoint's read or
    // a listing page), and not 20× the time.
    assert!(
        large.2.total() <= small.2.total() + 6,
        "requests grew with the table: {:?} → {:?}",
        small.2.requests,
        large.2.requests
    );
    assert!(
        large.1 <= small.1 * 2.0 + 1.0,
        "run time grew with the table: {:.2} s → {:.2} s",
        small.1,
        large.1
    );
}
