//! Export benchmark (ignored by default; run `scripts/bench-export.sh`, which runs it at
//! 1 GiB and 4 GiB, each with direct and with slowed uploads): a large export from the fake
//! Qualtrics through the real handler into Azurite (on disk), next to the SDK's own block
//! upload (stage_block ×N + commit_block_list, 4 MiB blocks, 2 in flight) of the same NDJSON
//! bytes to the same endpoint, then the same export by `qualtrics-bridge export` (backfill).
//! Asserts the maximum peak RSS of every run against the bound of docs/export.md ("Memory")
//! and the export/SDK time ratio.
//!
//! Env: `BENCH_RESPONSES` (default 500000), `BENCH_RESPONSE_BYTES` (2200),
//! `BENCH_DEFLATE_LEVEL` (fake's zip level, 1), `BENCH_RUNS` (timer runs, 3),
//! `BENCH_CLI_RUNS` (backfill runs, 1), `BENCH_UPLOAD_MBPS` (0: direct; else every upload,
//! the SDK's too, goes through devkit's `ThrottledProxy` at this many MB/s, so the download
//! runs ahead of the upload), `BENCH_RSS_LIMIT_MIB` (48), `BENCH_RATIO_LIMIT` (1.1).

use crate::common;

use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
use common::StackBuilder;
use devkit::azurite::Azurite;
use devkit::bench::{peak_rss_kib, reset_peak_rss, run_measured};
use devkit::fakes::qualtrics::{synthetic_response, FakeQualtrics};
use devkit::throttle::ThrottledProxy;
use futures::stream::{FuturesUnordered, StreamExt};
use qualtrics_bridge::storage::blob_state;
use qualtrics_bridge::storage::Storage;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SV: &str = "SV_bench000001";
const TOKEN: &str = "bench-token";
const EXPORTS: &str = "qualtrics-exports";
const STATE: &str = "bridge-state";
const MIB: f64 = 1024.0 * 1024.0;

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

/// Deletes every blob of `container` and returns the sizes of those it held.
async fn clear(s: &Storage, container: &str) -> Vec<u64> {
    let c = s.blob_container(container).unwrap();
    let mut sizes = Vec::new();
    for name in common::blob_names(s, container).await {
        let b = c.blob_client(&name);
        let props = b.get_properties(None).await.unwrap();
        sizes.push(props.content_length().unwrap().unwrap_or(0));
        b.delete(None).await.unwrap();
    }
    sizes
}

/// The SDK's own block upload of the file at `path`: 4 MiB blocks, 2 in flight.
async fn sdk_upload(storage: &Storage, path: &std::path::Path) -> Duration {
    let container = storage.blob_container("bench-baseline").unwrap();
    blob_state::ensure_container(&container).await.unwrap();
    let blob = container.blob_client("baseline.ndjson");
    let t0 = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut inflight = FuturesUnordered::new();
    let mut idx = 0u32;
    loop {
        let mut buf = vec![0u8; 4 * 1024 * 1024];
        let mut filled = 0;
        while filled < buf.len() {
            let r = f.read(&mut buf[filled..]).unwrap();
            if r == 0 {
                break;
            }
            filled += r;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        if inflight.len() >= 2 {
            let r: Result<(), blob_state::BlobError> = inflight.next().await.unwrap();
            r.unwrap();
        }
        let b = container.blob_client("baseline.ndjson");
        let i = idx;
        idx += 1;
        inflight.push(async move {
            blob_state::stage_block(&b, "baseline", i, bytes::Bytes::from(buf)).await
        });
    }
    while let Some(r) = inflight.next().await {
        r.unwrap();
    }
    blob_state::commit_new(&blob, "baseline", idx, Default::default())
        .await
        .unwrap();
    let took = t0.elapsed();
    blob.delete(None).await.unwrap();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-export.sh"]
async fn export_peak_rss_and_speed_against_sdk_block_upload() {
    let n = env_num("BENCH_RESPONSES", 500_000);
    let size = env_num("BENCH_RESPONSE_BYTES", 2200) as usize;
    let level = env_num("BENCH_DEFLATE_LEVEL", 1) as u32;
    let runs = env_num("BENCH_RUNS", 3).max(1);
    let cli_runs = env_num("BENCH_CLI_RUNS", 1);
    let mbps = env_num("BENCH_UPLOAD_MBPS", 0);
    let rss_limit_kib = env_num("BENCH_RSS_LIMIT_MIB", 48) * 1024;
    let ratio_limit: f64 = std::env::var("BENCH_RATIO_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.1);

    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_synthetic_survey(SV, n, size);
    fake.set_compression(level);
    fake.set_polls(2);
    // On disk: a 4 GiB blob is no load for Azurite's memory.
    let data = tempfile::tempdir().unwrap();
    let azurite = Azurite::start_persistent(data.path()).await.unwrap();
    let proxy = match mbps {
        0 => None,
        r => Some(
            ThrottledProxy::start(([127, 0, 0, 1], azurite.blob_port).into(), r * 1_000_000)
                .await
                .unwrap(),
        ),
    };
    let blob_port = proxy.as_ref().map_or(azurite.blob_port, |p| p.port);
    let cs = storage_auth::ConnectionString::azurite(blob_port, azurite.queue_port);
    let stack = StackBuilder::default()
        .setting("AzureWebJobsStorage", &cs)
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("EXPORT_POLL_INTERVAL_MS", "100")
        .setting("EXPORT_TIME_BUDGET_SECONDS", "560")
        .setting("BRIDGE_LOG", "warn")
        .bridge_toml(&format!("[[surveys]]\nid = \"{SV}\"\nexport = true\n"))
        .start()
        .await;
    let lookup = {
        let cs = cs.clone();
        move |k: &str| (k == "AzureWebJobsStorage").then(|| cs.clone())
    };
    let t = qualtrics_bridge::identity::transport(&lookup).unwrap();
    let storage = Storage::connect("AzureWebJobsStorage", &lookup, &t).unwrap();

    // The NDJSON bytes the export produces, staged in a file for the SDK (not timed).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.ndjson");
    let mut total: u64 = 0;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for seq in 1..=n {
            // recordedDate only changes the bytes, not the size.
            let line = synthetic_response(seq, seq as i64 * 10, size);
            f.write_all(line.as_bytes()).unwrap();
            f.write_all(b"\n").unwrap();
            total += line.len() as u64 + 1;
        }
        f.flush().unwrap();
    }
    let mib = total as f64 / MIB;
    let upload = match mbps {
        0 => "direct".to_string(),
        r => format!("paced to {r} MB/s"),
    };
    println!("BENCH export: {n} responses, {total} bytes ({mib:.0} MiB) NDJSON, deflate level {level}, upload {upload}, {runs} run(s)");

    let pid = stack.host.handler_pid().await.unwrap();
    let (mut sdk_total, mut export_total) = (0.0, 0.0);
    let mut handler_max = 0u64;
    for run in 1..=runs {
        let sdk = sdk_upload(&storage, &path).await.as_secs_f64();
        reset_peak_rss(pid).unwrap();
        let load = load_average();
        let t1 = Instant::now();
        let r = stack.host.fire("ExportPoller").await.unwrap();
        let export = t1.elapsed().as_secs_f64();
        let hwm = peak_rss_kib(pid).unwrap();
        assert!(r.outcome.is_ok(), "{:?} {:?}", r.outcome, r.logs);
        let logs = r.logs.join(" | ");
        assert!(
            logs.contains(&format!("exported {n} response(s)")),
            "{logs}"
        );
        // The whole NDJSON in one blob; then a clean slate, so the next run is a full export.
        assert_eq!(clear(&storage, EXPORTS).await, vec![total]);
        clear(&storage, STATE).await;
        println!(
            "BENCH run {run}: sdk {sdk:>7.2} s {:>6.1} MB/s | export {export:>7.2} s {:>6.1} MB/s {:>7.0} responses/s | ratio {:.2}x | handler peak RSS {:.1} MiB | load {load}",
            total as f64 / 1e6 / sdk,
            total as f64 / 1e6 / export,
            n as f64 / export,
            export / sdk,
            hwm as f64 / 1024.0,
        );
        sdk_total += sdk;
        export_total += export;
        handler_max = handler_max.max(hwm);
    }

    let mut cli_max = 0u64;
    let config = stack.app_dir.path().join("bridge.toml");
    for run in 1..=cli_runs {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qualtrics-bridge"));
        cmd.args(["export", "--survey", SV])
            .env_clear()
            .env("QUALTRICS_BASE_URL", &fake.base_url)
            .env("QUALTRICS_API_TOKEN", TOKEN)
            .env("BRIDGE_CONFIG", &config)
            .env("EXPORT_POLL_INTERVAL_MS", "100")
            .env("AzureWebJobsStorage", &cs)
            // The allocator's own options (e.g. MIMALLOC_SHOW_STATS=1), for experiments.
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")));
        let load = load_average();
        let o = tokio::task::spawn_blocking(move || run_measured(cmd))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stdout
                .contains(&format!("{SV}: exported {n} response(s)")),
            "{}",
            o.stdout
        );
        assert_eq!(clear(&storage, EXPORTS).await, vec![total]);
        clear(&storage, STATE).await;
        println!(
            "BENCH backfill run {run}: {:>7.2} s | `qualtrics-bridge export` peak RSS {:.1} MiB | load {load}",
            o.elapsed.as_secs_f64(),
            o.peak_rss_kib as f64 / 1024.0
        );
        if std::env::var_os("MIMALLOC_SHOW_STATS").is_some() {
            println!("BENCH backfill allocator stats:\n{}", o.stderr);
        }
        cli_max = cli_max.max(o.peak_rss_kib);
    }

    let ratio = export_total / sdk_total;
    println!(
        "BENCH max peak RSS: handler {:.1} MiB, backfill {:.1} MiB (limit {} MiB) | export/sdk over all runs {ratio:.2}x (limit {ratio_limit}x)",
        handler_max as f64 / 1024.0,
        cli_max as f64 / 1024.0,
        rss_limit_kib / 1024
    );
    assert!(
        total >= 1 << 30 || n < 500_000,
        "benchmark must move ≥ 1 GiB"
    );
    assert!(
        handler_max <= rss_limit_kib,
        "handler peak RSS {handler_max} KiB > {rss_limit_kib} KiB"
    );
    assert!(
        cli_max <= rss_limit_kib,
        "backfill peak RSS {cli_max} KiB > {rss_limit_kib} KiB"
    );
    assert!(
        ratio <= ratio_limit,
        "export took {ratio:.2}× the SDK upload"
    );
}
