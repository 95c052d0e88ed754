//! Export benchmark (ignored by default; run `scripts/bench-export.sh`): a ≥ 1 GiB export
//! (≈ 500k synthetic responses) from the fake Qualtrics through the real handler into
//! Azurite, next to the SDK's own block upload (stage_block ×N + commit_block_list, 4 MiB
//! blocks, 2 in flight) of the same NDJSON bytes to the same Azurite.
//!
//! Env: `BENCH_RESPONSES` (default 500000), `BENCH_RESPONSE_BYTES` (default 2200),
//! `BENCH_DEFLATE_LEVEL` (fake's zip level, default 1).

mod common;

use common::StackBuilder;
use devkit::fakes::qualtrics::{synthetic_response, FakeQualtrics};
use futures::stream::{FuturesUnordered, StreamExt};
use qualtrics_bridge::export::blob_state;
use qualtrics_bridge::storage::Storage;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SV: &str = "SV_bench000001";
const TOKEN: &str = "bench-token";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench-export.sh"]
async fn export_one_gib_against_sdk_block_upload() {
    let n = env_num("BENCH_RESPONSES", 500_000);
    let size = env_num("BENCH_RESPONSE_BYTES", 2200) as usize;
    let level = env_num("BENCH_DEFLATE_LEVEL", 1) as u32;
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_synthetic_survey(SV, n, size);
    fake.set_compression(level);
    fake.set_polls(2);
    let stack = StackBuilder::default()
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("EXPORT_POLL_INTERVAL_MS", "100")
        .setting("EXPORT_TIME_BUDGET_SECONDS", "560")
        .setting("BRIDGE_LOG", "warn")
        .bridge_toml(&format!("[[surveys]]\nid = \"{SV}\"\nexport = true\n"))
        .start()
        .await;
    let cs = stack.azurite.connection_string();
    let lookup = move |k: &str| (k == "AzureWebJobsStorage").then(|| cs.clone());
    let t = qualtrics_bridge::identity::transport(&lookup).unwrap();
    let storage = Storage::connect("AzureWebJobsStorage", &lookup, &t).unwrap();

    // The same NDJSON bytes the export will produce, staged in a file (not timed).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.ndjson");
    let base_ms = {
        // The fake's synthetic clock: recordedDate only changes the bytes, not the size.
        0
    };
    let mut total: u64 = 0;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for seq in 1..=n {
            let line = synthetic_response(seq, base_ms + seq as i64 * 10, size);
            f.write_all(line.as_bytes()).unwrap();
            f.write_all(b"\n").unwrap();
            total += line.len() as u64 + 1;
        }
        f.flush().unwrap();
    }
    let container = storage.blob_container("bench-baseline").unwrap();
    blob_state::ensure_container(&container).await.unwrap();
    let blob = container.blob_client("baseline.ndjson");
    let t0 = Instant::now();
    {
        let mut f = std::fs::File::open(&path).unwrap();
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
    }
    let sdk = t0.elapsed();
    drop(dir);
    let _ = blob.delete(None).await; // free Azurite's memory before the export

    let pid = stack.host.handler_pid().await.unwrap();
    let rss_before = vm_hwm_kib(pid).unwrap_or(0);
    let t1 = Instant::now();
    let r = stack.host.fire("ExportPoller").await.unwrap();
    let export = t1.elapsed();
    let hwm = vm_hwm_kib(pid).unwrap_or(0);
    assert!(r.outcome.is_ok(), "{:?} {:?}", r.outcome, r.logs);
    let logs = r.logs.join(" | ");
    assert!(
        logs.contains(&format!("exported {n} response(s)")),
        "{logs}"
    );

    let mib = total as f64 / (1024.0 * 1024.0);
    let ratio = export.as_secs_f64() / sdk.as_secs_f64();
    println!("BENCH export: {n} responses, {total} bytes ({mib:.0} MiB) uncompressed NDJSON, deflate level {level}");
    println!(
        "BENCH sdk block upload : {:>7.2} s  {:>7.1} MB/s",
        sdk.as_secs_f64(),
        total as f64 / 1e6 / sdk.as_secs_f64()
    );
    println!("BENCH handler export   : {:>7.2} s  {:>7.1} MB/s  {:>9.0} responses/s  (ratio {ratio:.2}x, limit 1.5x)", export.as_secs_f64(), total as f64 / 1e6 / export.as_secs_f64(), n as f64 / export.as_secs_f64());
    println!(
        "BENCH handler peak RSS (VmHWM): {:.1} MiB (at start {:.1} MiB; limit 64 MiB)",
        hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    assert!(
        total >= 1 << 30 || n < 500_000,
        "benchmark must move ≥ 1 GiB"
    );
    assert!(hwm <= 64 * 1024, "peak RSS {hwm} KiB > 64 MiB");
    assert!(ratio <= 1.5, "export took {ratio:.2}× the SDK upload");
    let _ = Duration::ZERO;
}
