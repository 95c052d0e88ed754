//! `AnalyticsBuilder` end to end: NDJSON export blobs on Azurite, the real release binary behind
//! devkit's host builds the Delta tables, and readers nobody here wrote check them: delta-rs
//! (Python `deltalake`) opens each table on Azurite and DuckDB reads the Parquet files the log
//! names; both must return, cell for cell, the rows the source NDJSON holds. Crashes at named
//! points and concurrent committers must neither lose nor duplicate a file in the log.
//!
//! The oracles come from `scripts/install-oracles.sh` (pinned PyPI packages in tools/).

mod common;

use common::{Stack, StackBuilder};
use devkit::azurite::{repo_root, Azurite};
use qualtrics_bridge::analytics::commit::{Committed, Committer, Snapshot};
use qualtrics_bridge::analytics::log::Log;
use qualtrics_bridge::analytics::parquet::{AddFile, Column, Kind, Stats};
use qualtrics_bridge::storage::blob_state::{self, Condition};
use qualtrics_bridge::storage::Storage;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const SV: &str = "SV_analytics01";
const EXPORTS: &str = "qualtrics-exports";
const TABLES: &str = "qualtrics-analytics";
const FACTS: [&str; 3] = [
    "survey_response",
    "question_response",
    "response_embedded_data",
];

fn oracle_python() -> PathBuf {
    if let Some(p) = std::env::var_os("ANALYTICS_ORACLE_PYTHON") {
        return p.into();
    }
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/install-oracles.sh"))
        .output()
        .expect("run scripts/install-oracles.sh");
    assert!(
        out.status.success(),
        "install-oracles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

/// One synthetic response: metadata, a scale answer, a matrix, a multi-select with labels,
/// and a displayed question left unanswered.
fn response(i: usize) -> Value {
    let rid = format!("R_{i:015}");
    let recorded = format!(
        "2026-12-01T{:02}:{:02}:{:02}.{:03}Z",
        i / 3600 % 24,
        i / 60 % 60,
        i % 60,
        i % 1000
    );
    json!({
        "responseId": rid,
        "values": {
            "startDate": "2026-12-01T00:00:00Z",
            "endDate": recorded,
            "status": 0,
            "ipAddress": "192.0.2.1",
            "progress": 100,
            "duration": 30 + i,
            "finished": i64::from(!i.is_multiple_of(5)),
            "recordedDate": recorded,
            "_recordId": rid,
            "distributionChannel": "anonymous",
            "userLanguage": "EN",
            "QID1": (i % 11) as i64,
            "QID2_1": 1 + (i % 5) as i64,
            "QID2_2": 1 + ((i + 2) % 5) as i64,
            "QID3": [((i % 3) + 1).to_string(), "4"],
            "Team": format!("team-{}", i % 4),
        },
        "labels": {
            "QID1": format!("{}", i % 11),
            "QID2_1": "Agree",
            "QID3": [format!("Choice {}", (i % 3) + 1), "Choice 4"],
        },
        "displayedFields": ["QID1", "QID2_1", "QID2_2", "QID3", "QID4_TEXT"],
        "displayedValues": {},
    })
}

fn ndjson(range: std::ops::Range<usize>) -> String {
    range.map(|i| response(i).to_string() + "\n").collect()
}

fn micros(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("timestamp");
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// `survey_response` rows the source holds, keyed by response id.
fn expected_responses(blobs: &[(String, String)]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, text) in blobs {
        let exported = exported_at(name);
        for line in text.lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let v = &r["values"];
            let rid = r["responseId"].as_str().unwrap().to_string();
            out.insert(
                rid.clone(),
                json!({
                    "survey_id": SV,
                    "response_id": rid,
                    "exported_at": exported,
                    "source_blob": name,
                    "recorded_at": micros(v["recordedDate"].as_str().unwrap()),
                    "started_at": micros(v["startDate"].as_str().unwrap()),
                    "ended_at": micros(v["endDate"].as_str().unwrap()),
                    "status": v["status"],
                    "progress": v["progress"],
                    "duration_s": v["duration"],
                    "finished": v["finished"] == json!(1),
                    "distribution_channel": v["distributionChannel"],
                    "user_language": v["userLanguage"],
                }),
            );
        }
    }
    out
}

/// `question_response` rows the source holds: one per scalar answer, one per selected choice,
/// one per displayed-but-unanswered key. Compared on the columns the source determines.
fn expected_cells(blobs: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, text) in blobs {
        let exported = exported_at(name);
        for line in text.lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let v = r["values"].as_object().unwrap();
            let rid = r["responseId"].as_str().unwrap();
            let recorded = micros(v["recordedDate"].as_str().unwrap());
            let shown: Vec<&str> = r["displayedFields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            for (key, value) in v.iter().filter(|(k, _)| k.starts_with("QID")) {
                let (qid, sub) = match key.split_once('_') {
                    Some((q, s)) => (q, Some(s)),
                    None => (key.as_str(), None),
                };
                let base = |item: Option<usize>, code: Value, num: Value, label: Value| {
                    cell_key(&json!({
                        "response_id": rid, "recorded_at": recorded, "exported_at": exported,
                        "export_key": key, "question_id": qid, "sub_key": sub,
                        "item_index": item, "code": code, "value_num": num, "label": label,
                        "displayed": shown.contains(&key.as_str()), "answered": true,
                    }))
                };
                match value {
                    Value::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            // Without a definition the code, read as a number, is the value.
                            let num = item
                                .as_f64()
                                .or_else(|| item.as_str()?.trim().parse::<f64>().ok());
                            out.insert(base(
                                Some(i),
                                item.clone(),
                                json!(num),
                                r["labels"][key][i].clone(),
                            ));
                        }
                    }
                    n => {
                        out.insert(base(
                            None,
                            json!(n.to_string()),
                            json!(n.as_f64()),
                            r["labels"][key].clone(),
                        ));
                    }
                }
            }
            for key in shown.iter().copied().filter(|k| !v.contains_key(*k)) {
                let (qid, sub) = key.split_once('_').unwrap_or((key, ""));
                out.insert(cell_key(&json!({
                    "response_id": rid, "recorded_at": recorded, "exported_at": exported,
                    "export_key": key, "question_id": qid,
                    "sub_key": if sub == "TEXT" || sub.is_empty() { Value::Null } else { json!(sub) },
                    "item_index": null, "code": null, "value_num": null, "label": null,
                    "displayed": true, "answered": false,
                })));
            }
        }
    }
    out
}

const CELL_COLUMNS: [&str; 12] = [
    "response_id",
    "recorded_at",
    "exported_at",
    "export_key",
    "question_id",
    "sub_key",
    "item_index",
    "code",
    "value_num",
    "label",
    "displayed",
    "answered",
];

/// A row's comparable columns as one string (numbers normalised to f64 where they may differ
/// in representation).
fn cell_key(row: &Value) -> String {
    let cols: Vec<Value> = CELL_COLUMNS
        .iter()
        .map(|c| match (c, &row[c]) {
            (&"value_num", Value::Number(n)) => json!(n.as_f64()),
            (&"item_index", Value::Number(n)) => json!(n.as_i64()),
            (_, v) => v.clone(),
        })
        .collect();
    Value::Array(cols).to_string()
}

fn exported_at(blob: &str) -> i64 {
    let file = blob.rsplit('/').next().unwrap();
    let s = &file[..16];
    micros(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    ))
}

fn blob_name(n: usize) -> String {
    format!("{SV}/2026/12/0{n}/2026120{n}T0{n}1500Z-ES_{n:04}.ndjson")
}

async fn put(s: &Storage, container: &str, name: &str, text: &str) {
    let c = s.blob_container(container).unwrap();
    blob_state::ensure_container(&c).await.unwrap();
    blob_state::write(
        &c.blob_client(name),
        name,
        bytes::Bytes::from(text.to_owned()),
        Condition::Absent,
    )
    .await
    .unwrap();
}

async fn start(extra: &[(&str, &str)]) -> Stack {
    let mut b = StackBuilder::default()
        .bridge_toml(&format!("[[surveys]]\nid = \"{SV}\"\nexport = true\n"))
        // Every pending blob is old enough: a batch per run.
        .setting("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0");
    for (k, v) in extra {
        b = b.setting(k, v);
    }
    b.start().await
}

async fn fire(stack: &Stack) -> String {
    let r = stack.host.fire("AnalyticsBuilder").await.expect("fire");
    assert!(r.outcome.is_ok(), "{:?} {:?}", r.outcome, r.logs);
    r.logs.join(" | ")
}

/// Every `add` path of every JSON commit of `table`, in version order, with repeats.
async fn logged_adds(s: &Storage, table: &str) -> Vec<String> {
    let mut names: Vec<String> = common::blob_names(s, TABLES)
        .await
        .into_iter()
        .filter(|n| n.starts_with(&format!("{table}/_delta_log/")) && n.ends_with(".json"))
        .collect();
    names.sort();
    let mut adds = Vec::new();
    for n in names {
        let text = common::blob_text(s, TABLES, &n).await.expect("commit");
        for line in text.lines() {
            let a: Value = serde_json::from_str(line).expect("action");
            if let Some(p) = a["add"]["path"].as_str() {
                adds.push(p.to_owned());
            }
        }
    }
    adds
}

/// Runs the oracles over the tables; returns their JSON report. Without `rows`, only the
/// logs are read (their files need not exist).
async fn oracle(
    azurite: &Azurite,
    s: &Storage,
    container: &str,
    tables: &[&str],
    rows: bool,
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut local = serde_json::Map::new();
    for t in tables {
        for n in common::blob_names(s, container).await {
            if let Some(rel) = n.strip_prefix(&format!("{t}/")) {
                let path = dir.path().join(t).join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, common::blob_bytes(s, container, &n).await.unwrap()).unwrap();
            }
        }
        local.insert(t.to_string(), json!(dir.path().join(t)));
    }
    let blob_url = azurite.blob_endpoint();
    let base = blob_url.trim_end_matches("/devstoreaccount1");
    let spec = json!({"azurite": base, "container": container, "tables": tables, "local": local, "rows": rows});
    let python = oracle_python();
    let out = tokio::process::Command::new(python)
        .arg(repo_root().join("tests/oracles/delta_read.py"))
        .arg(spec.to_string())
        .env("AZURITE_BLOB_STORAGE_URL", base)
        .output()
        .await
        .expect("oracle runs");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oracle JSON")
}

/// Asserts both readers return exactly the rows of `blobs`, and the log is protocol 1/2,
/// append-only, with no add twice.
async fn assert_tables_match(stack: &Stack, blobs: &[(String, String)]) {
    let s = common::storage_of(&stack.azurite);
    let report = oracle(&stack.azurite, &s, TABLES, &FACTS, true).await;
    for t in FACTS {
        let e = &report[t];
        assert_eq!(e["protocol"], json!([1, 2, null, null]), "{t}");
        assert_eq!(e["configuration"]["delta.appendOnly"], "true", "{t}");
        let adds = logged_adds(&s, t).await;
        let unique: BTreeSet<_> = adds.iter().collect();
        assert_eq!(
            unique.len(),
            adds.len(),
            "{t}: an add is logged twice: {adds:?}"
        );
        let files: BTreeSet<String> = e["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(files, adds.into_iter().collect(), "{t}: deltalake's files");
    }

    let want = expected_responses(blobs);
    for reader in ["delta_rows", "duckdb_rows"] {
        let rows = report["survey_response"][reader].as_array().unwrap();
        assert_eq!(rows.len(), want.len(), "survey_response via {reader}");
        for row in rows {
            let rid = row["response_id"].as_str().unwrap();
            let w = &want[rid];
            for (col, v) in w.as_object().unwrap() {
                assert_eq!(&row[col], v, "survey_response {rid}.{col} via {reader}");
            }
        }
        let cells: Vec<String> = report["question_response"][reader]
            .as_array()
            .unwrap()
            .iter()
            .map(cell_key)
            .collect();
        let set: BTreeSet<String> = cells.iter().cloned().collect();
        assert_eq!(
            set.len(),
            cells.len(),
            "a question_response row twice via {reader}"
        );
        let want_cells = expected_cells(blobs);
        assert_eq!(
            set.difference(&want_cells).count() + want_cells.difference(&set).count(),
            0,
            "question_response via {reader}: {} extra, {} missing (first extra {:?}, first missing {:?})",
            set.difference(&want_cells).count(),
            want_cells.difference(&set).count(),
            set.difference(&want_cells).next(),
            want_cells.difference(&set).next(),
        );
        // No allow-list: embedded data stays out.
        assert_eq!(report["response_embedded_data"][reader], json!([]));
    }
}

#[tokio::test]
async fn export_blobs_become_delta_tables_both_readers_agree_with_the_source() {
    let stack = start(&[]).await;
    let s = common::storage_of(&stack.azurite);
    let blobs = vec![
        (blob_name(1), ndjson(0..120)),
        (blob_name(2), ndjson(120..200)),
    ];
    for (n, t) in &blobs {
        put(&s, EXPORTS, n, t).await;
    }
    let logs = fire(&stack).await;
    assert!(logs.contains("200 response(s)"), "{logs}");
    // Nothing new: no commit, no version.
    let logs = fire(&stack).await;
    assert!(logs.contains("0 batch(es)"), "{logs}");
    assert_tables_match(&stack, &blobs).await;

    // A later blob is one more batch: one more file per table.
    let more = (blob_name(3), ndjson(200..230));
    put(&s, EXPORTS, &more.0, &more.1).await;
    fire(&stack).await;
    let mut all = blobs.clone();
    all.push(more);
    assert_tables_match(&stack, &all).await;
    assert_eq!(logged_adds(&s, "survey_response").await.len(), 2);
    let cursor: Value = serde_json::from_str(
        &common::blob_text(&s, "bridge-state", &format!("analytics/{SV}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cursor["lastBlob"], blob_name(3));
    assert_eq!(cursor["inflight"], Value::Null);
    stack.settle(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn small_new_blobs_wait_for_the_batch_to_fill() {
    let stack = StackBuilder::default()
        .bridge_toml(&format!("[[surveys]]\nid = \"{SV}\"\nexport = true\n"))
        .start()
        .await;
    let s = common::storage_of(&stack.azurite);
    put(&s, EXPORTS, &blob_name(1), &ndjson(0..5)).await;
    let logs = fire(&stack).await;
    assert!(logs.contains("waiting for the batch to fill"), "{logs}");
    assert!(logged_adds(&s, "survey_response").await.is_empty());
}

async fn crash_then_rerun(point: &str) {
    let stack = start(&[("BRIDGE_TEST_CRASH_AT", point)]).await;
    let s = common::storage_of(&stack.azurite);
    let blobs = vec![
        (blob_name(1), ndjson(0..50)),
        (blob_name(2), ndjson(50..90)),
    ];
    for (n, t) in &blobs {
        put(&s, EXPORTS, n, t).await;
    }
    let r = stack.host.fire("AnalyticsBuilder").await.expect("fire");
    assert!(
        r.outcome.is_err(),
        "the handler should have aborted at {point}"
    );
    assert!(stack
        .app_dir
        .path()
        .join(format!(".bridge-test-crash-{point}"))
        .exists());
    stack.host.restart_handler().await.unwrap();
    // A blob that arrives meanwhile must not change the interrupted batch.
    let late = (blob_name(3), ndjson(90..95));
    put(&s, EXPORTS, &late.0, &late.1).await;
    fire(&stack).await;
    let mut all = blobs.clone();
    all.push(late);
    assert_tables_match(&stack, &all).await;
}

#[tokio::test]
async fn a_crash_after_the_first_commit_reruns_into_the_same_rows() {
    crash_then_rerun("analytics-after-first-commit").await;
}

#[tokio::test]
async fn a_crash_before_the_cursor_moves_adds_no_file_twice() {
    crash_then_rerun("analytics-before-cursor").await;
}

#[tokio::test]
async fn a_crash_after_a_data_file_upload_reruns_into_the_same_rows() {
    crash_then_rerun("analytics-after-data-file").await;
}

const COLS: &[Column] = &[Column {
    name: "n",
    kind: Kind::Int64,
    nullable: false,
}];

fn add(path: String) -> AddFile {
    AddFile {
        path,
        size: 1,
        rows: 1,
        stats: Stats {
            num_records: 1,
            ..Default::default()
        },
    }
}

/// Two writers append to one table at once: every commit lands exactly once, versions have no
/// hole, and delta-rs reads the state through the checkpoints.
#[tokio::test]
async fn concurrent_committers_lose_and_duplicate_nothing_and_checkpoints_are_read() {
    let azurite = Azurite::start().await.expect("azurite");
    let s = common::storage_of(&azurite);
    let c = std::sync::Arc::new(s.blob_container(TABLES).unwrap());
    blob_state::ensure_container(&c).await.unwrap();
    let per_writer = 12;
    let writer = |w: usize| {
        let committer = Committer::new(Log::new(c.clone(), "t"), COLS, 5);
        async move {
            let mut versions = Vec::new();
            for i in 0..per_writer {
                let path = format!("part-w{w}-{i:03}.parquet");
                match committer.commit(&[add(path)], 1).await.expect("commit") {
                    Committed::Version(v) => versions.push(v),
                    Committed::AlreadyLogged => panic!("a new path is never logged already"),
                }
            }
            versions
        }
    };
    let (a, b) = tokio::join!(writer(0), writer(1));
    let mut versions: Vec<u64> = a.into_iter().chain(b).collect();
    versions.sort();
    assert_eq!(versions, (0..2 * per_writer as u64).collect::<Vec<_>>());
    // A retried commit of an already logged path is a no-op.
    let again = Committer::new(Log::new(c.clone(), "t"), COLS, 5)
        .commit(&[add("part-w0-000.parquet".into())], 1)
        .await
        .unwrap();
    assert_eq!(again, Committed::AlreadyLogged);

    let adds = logged_adds(&s, "t").await;
    assert_eq!(adds.len(), 2 * per_writer);
    assert_eq!(adds.iter().collect::<BTreeSet<_>>().len(), adds.len());
    let names = common::blob_names(&s, TABLES).await;
    for v in [5, 10, 15, 20] {
        assert!(
            names.contains(&format!("t/_delta_log/{v:020}.checkpoint.parquet")),
            "checkpoint {v}: {names:?}"
        );
    }
    let last: Value = serde_json::from_str(
        &common::blob_text(&s, TABLES, "t/_delta_log/_last_checkpoint")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["version"], 20);
    // Our own reader goes through the checkpoint too.
    let snap = Snapshot::load(&Log::new(c.clone(), "t")).await.unwrap();
    assert_eq!(snap.version, Some(2 * per_writer as u64 - 1));
    assert_eq!(snap.paths().count(), 2 * per_writer);

    let report = oracle(&azurite, &s, TABLES, &["t"], false).await;
    assert_eq!(report["t"]["version"], json!(2 * per_writer - 1));
    let files: BTreeSet<&str> = report["t"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files, adds.iter().map(String::as_str).collect());
}

/// The timer decodes with the survey's definition: it fetches it from Qualtrics, stores the
/// snapshot, and every cell of devkit's sandbox survey (every question type the decoder
/// handles) reaches `question_response` as the library's decoder makes it from the same
/// definition and `[surveys.analytics]` — values, statuses and definition version included —
/// read back by delta-rs. Embedded data is only the allow-listed key.
#[tokio::test]
async fn the_timer_decodes_with_the_surveys_definition() {
    use devkit::fakes::qualtrics::FakeQualtrics;
    use devkit::fakes::sandbox_data::{self, DEFINITION_VERSION, SANDBOX_ANALYTICS_SURVEY};
    use qualtrics_bridge::analytics::decode::{decode, Policy, RowContext};
    use qualtrics_bridge::analytics::definition::{Definition, Definitions};

    let data = sandbox_data::generate(
        SANDBOX_ANALYTICS_SURVEY,
        sandbox_data::SANDBOX_SEED,
        300,
        1_767_657_600_000,
        30,
    );
    let fake = FakeQualtrics::start("token-analytics").await.expect("fake");
    fake.add_dataset(&data);
    let sid = data.survey_id.as_str();
    let stack = StackBuilder::default()
        .bridge_toml(&format!(
            "[[surveys]]\nid = \"{sid}\"\nexport = true\n[surveys.analytics]\nembedded = [\"Store\"]\n"
        ))
        .setting("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0")
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", "token-analytics")
        // Exports are written below by hand; the poller stays out of the way.
        .without_function("ExportPoller")
        .start()
        .await;
    let s = common::storage_of(&stack.azurite);
    let name = format!("{sid}/2026/01/06/20260106T001500Z-ES_0001.ndjson");
    let text: String = data
        .responses
        .iter()
        .map(|r| format!("{}\n", r.text))
        .collect();
    put(&s, EXPORTS, &name, &text).await;
    let logs = fire(&stack).await;
    assert!(logs.contains("300 response(s)"), "{logs}");
    let snapshots: Vec<String> = common::blob_names(&s, "bridge-state")
        .await
        .into_iter()
        .filter(|n| n.starts_with("definitions/"))
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");

    let definitions = Definitions::new(vec![
        Definition::from_raw(sid, data.definition.clone()).expect("definition")
    ]);
    let policy = Policy {
        embedded_allow: vec!["Store".into()],
        free_text: true,
        ..Policy::default()
    };
    let ctx = RowContext {
        survey_id: sid,
        exported_at: exported_at(&name),
        source_blob: &name,
    };
    let mut want_cells = BTreeSet::new();
    let mut want_embedded = BTreeSet::new();
    for r in &data.responses {
        let d = decode(r.text.as_bytes(), &ctx, &definitions, &policy).expect("decodes");
        for c in d.cells {
            want_cells.insert(
                json!([
                    c.response_id,
                    c.export_key,
                    c.item_index,
                    c.value_num,
                    c.value_text,
                    c.decode_status.as_str(),
                    c.definition_version
                ])
                .to_string(),
            );
        }
        for e in d.embedded {
            want_embedded.insert(json!([e.response_id, e.key, e.value]).to_string());
        }
    }
    assert!(want_cells.iter().all(|c| !c.contains("definition_missing")));

    let report = oracle(
        &stack.azurite,
        &s,
        TABLES,
        &["question_response", "response_embedded_data"],
        true,
    )
    .await;
    let got_cells: BTreeSet<String> = report["question_response"]["delta_rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            json!([
                r["response_id"],
                r["export_key"],
                r["item_index"],
                r["value_num"].as_f64(),
                r["value_text"],
                r["decode_status"],
                r["definition_version"]
            ])
            .to_string()
        })
        .collect();
    assert_eq!(got_cells.len(), want_cells.len());
    assert_eq!(got_cells, want_cells);
    assert!(got_cells.iter().all(|c| c.contains(DEFINITION_VERSION)));
    let got_embedded: BTreeSet<String> = report["response_embedded_data"]["delta_rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| json!([r["response_id"], r["key"], r["value"]]).to_string())
        .collect();
    assert!(!got_embedded.is_empty());
    assert_eq!(got_embedded, want_embedded);
    stack.settle(Duration::from_secs(10)).await;
}
