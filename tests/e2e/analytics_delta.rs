//! `AnalyticsBuilder` end to end: NDJSON export blobs on Azurite, the real release binary behind
//! devkit's host builds the Delta tables, and readers nobody here wrote check them: delta-rs
//! (Python `deltalake`) opens each table on Azurite and DuckDB reads the Parquet files the log
//! names; both must return, cell for cell, the rows the source NDJSON holds. Crashes at named
//! points and concurrent committers must neither lose nor duplicate a file in the log.
//!
//! The oracles come from `scripts/install-oracles.sh` (pinned PyPI packages in tools/).

use crate::common;

use common::{Stack, StackBuilder};
use devkit::azurite::{repo_root, Azurite};
use qualtrics_bridge::analytics::commit::{Committed, Committer, Snapshot};
use qualtrics_bridge::analytics::log::Log;
use qualtrics_bridge::analytics::parquet::{AddFile, Column, Kind, Stats};
use qualtrics_bridge::storage::blob_state::{self, Condition};
use qualtrics_bridge::storage::Storage;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SV: &str = "SV_analytics01";
const EXPORTS: &str = "qualtrics-exports";
const TABLES: &str = "qualtrics-analytics";
const FACTS: [&str; 3] = [
    "survey_response",
    "question_response",
    "response_embedded_data",
];

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
    let python = common::oracle_python();
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

const DIMENSIONS: [&str; 4] = ["survey", "question", "question_item", "choice"];

/// `(key, row)` of a definition's entries: an object's, or an array's keyed by index (NPS).
fn entries(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The dimension rows a definition snapshot holds, read from its JSON here (not by the
/// bridge's parser), as one comparable string per row, per table.
fn expected_dimensions(sid: &str, def: &Value) -> BTreeMap<&'static str, BTreeSet<String>> {
    let version = def["LastModified"].as_str().unwrap();
    let from = micros(version);
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let mut out: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    out.entry("survey").or_default().insert(
        json!([
            sid,
            version,
            from,
            s(&def["SurveyName"]),
            s(&def["SurveyStatus"]),
            s(&def["BrandID"])
        ])
        .to_string(),
    );
    for (qid, q) in entries(&def["Questions"]) {
        let (t, sel) = (s(&q["QuestionType"]), s(&q["Selector"]));
        let text = s(&q["QuestionDescription"]).or_else(|| s(&q["QuestionText"]));
        let nps = t.as_deref() == Some("MC") && sel.as_deref() == Some("NPS");
        out.entry("question").or_default().insert(
            json!([
                sid,
                qid,
                version,
                from,
                s(&q["DataExportTag"]),
                t,
                sel,
                s(&q["SubSelector"]),
                text,
                nps
            ])
            .to_string(),
        );
        // Matrix rows (and form fields, slider items) are items; the rest are choices.
        let items = t.as_deref() == Some("Matrix")
            || (t.as_deref() == Some("TE") && sel.as_deref() == Some("FORM"))
            || t.as_deref() == Some("Slider");
        let recodes = &q["RecodeValues"];
        let number = |recode: &Option<String>, key: &str| {
            recode.as_deref().unwrap_or(key).trim().parse::<f64>().ok()
        };
        for (key, c) in entries(&q["Choices"]) {
            if items {
                let tag = q["ChoiceDataExportTags"].get(&key).and_then(Value::as_str);
                out.entry("question_item").or_default().insert(
                    json!([sid, qid, version, from, key, tag, s(&c["Display"])]).to_string(),
                );
            } else {
                let recode = s(&recodes[&key]);
                out.entry("choice").or_default().insert(
                    json!([
                        sid,
                        qid,
                        version,
                        from,
                        "choice",
                        key,
                        recode,
                        number(&recode, &key),
                        s(&c["Display"])
                    ])
                    .to_string(),
                );
            }
        }
        for (key, c) in entries(&q["Answers"]) {
            let recode = if items { s(&recodes[&key]) } else { None };
            out.entry("choice").or_default().insert(
                json!([
                    sid,
                    qid,
                    version,
                    from,
                    "answer",
                    key,
                    recode,
                    number(&recode, &key),
                    s(&c["Display"])
                ])
                .to_string(),
            );
        }
    }
    out
}

/// A dimension row as read, in the shape of [`expected_dimensions`].
fn dimension_key(table: &str, r: &Value) -> String {
    let num = |v: &Value| v.as_f64();
    match table {
        "survey" => json!([
            r["survey_id"],
            r["definition_version"],
            r["valid_from"],
            r["name"],
            r["status"],
            r["brand_id"]
        ]),
        "question" => json!([
            r["survey_id"],
            r["question_id"],
            r["definition_version"],
            r["valid_from"],
            r["data_export_tag"],
            r["question_type"],
            r["selector"],
            r["sub_selector"],
            r["text"],
            r["is_nps"]
        ]),
        "question_item" => json!([
            r["survey_id"],
            r["question_id"],
            r["definition_version"],
            r["valid_from"],
            r["item_key"],
            r["export_tag"],
            r["text"]
        ]),
        _ => json!([
            r["survey_id"],
            r["question_id"],
            r["definition_version"],
            r["valid_from"],
            r["axis"],
            r["choice_key"],
            r["recode_value"],
            num(&r["numeric_value"]),
            r["label"]
        ]),
    }
    .to_string()
}

/// Both readers return exactly `want`'s rows, once each, and every dimension table's log is
/// protocol 1/2, append-only, with no add twice.
async fn assert_dimensions(stack: &Stack, want: &BTreeMap<&'static str, BTreeSet<String>>) {
    let s = common::storage_of(&stack.azurite);
    let report = oracle(&stack.azurite, &s, TABLES, &DIMENSIONS, true).await;
    for t in DIMENSIONS {
        let e = &report[t];
        assert_eq!(e["protocol"], json!([1, 2, null, null]), "{t}");
        assert_eq!(e["configuration"]["delta.appendOnly"], "true", "{t}");
        let adds = logged_adds(&s, t).await;
        assert_eq!(
            adds.iter().collect::<BTreeSet<_>>().len(),
            adds.len(),
            "{t}: an add is logged twice: {adds:?}"
        );
        for reader in ["delta_rows", "duckdb_rows"] {
            let rows: Vec<String> = e[reader]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| dimension_key(t, r))
                .collect();
            let set: BTreeSet<String> = rows.iter().cloned().collect();
            assert_eq!(set.len(), rows.len(), "{t}: a row twice via {reader}");
            assert_eq!(&set, &want[t], "{t} via {reader}");
        }
    }
}

async fn dimension_stack(
    fake: &devkit::fakes::qualtrics::FakeQualtrics,
    sid: &str,
    extra: &[(&str, &str)],
) -> Stack {
    let mut b = StackBuilder::default()
        .bridge_toml(&format!("[[surveys]]\nid = \"{sid}\"\nexport = true\n"))
        .setting("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0")
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", "token-dimensions")
        .without_function("ExportPoller");
    for (k, v) in extra {
        b = b.setting(k, v);
    }
    b.start().await
}

/// Each definition version the timer stores becomes one row set of `survey`, `question`,
/// `question_item` and `choice`, equal to the snapshot's JSON; a run with no new version adds
/// nothing, and a new `LastModified` appends the new version beside the old one.
#[tokio::test]
async fn definition_versions_become_dimension_rows_once_each() {
    use devkit::fakes::qualtrics::FakeQualtrics;
    use devkit::fakes::sandbox_data::{self, SANDBOX_ANALYTICS_SURVEY};

    let data = sandbox_data::generate(SANDBOX_ANALYTICS_SURVEY, 5, 40, 1_767_657_600_000, 5);
    let fake = FakeQualtrics::start("token-dimensions")
        .await
        .expect("fake");
    fake.add_dataset(&data);
    let sid = data.survey_id.as_str();
    let stack = dimension_stack(&fake, sid, &[]).await;
    let s = common::storage_of(&stack.azurite);
    let text: String = data
        .responses
        .iter()
        .map(|r| format!("{}\n", r.text))
        .collect();
    put(
        &s,
        EXPORTS,
        &format!("{sid}/2026/01/06/20260106T001500Z-ES_0001.ndjson"),
        &text,
    )
    .await;
    fire(&stack).await;
    let mut want = expected_dimensions(sid, &data.definition);
    assert_eq!(want["question"].len(), 7);
    assert_eq!(want["question_item"].len(), 3, "the matrix's rows");
    assert_dimensions(&stack, &want).await;

    // Nothing new: no version, no add.
    fire(&stack).await;
    for t in DIMENSIONS {
        assert_eq!(logged_adds(&s, t).await.len(), 1, "{t}");
    }

    // The survey is edited: a renamed survey, a new question, a relabelled choice.
    let mut v2 = data.definition.clone();
    v2["LastModified"] = json!("2026-01-20T08:30:00Z");
    v2["SurveyName"] = json!("Store visit (sandbox, v2)");
    v2["Questions"]["QID10"] = json!({"QuestionID": "QID10", "DataExportTag": "Q10",
        "QuestionType": "MC", "Selector": "SAVR", "QuestionDescription": "Did you find everything?",
        "Choices": {"1": {"Display": "Yes"}, "2": {"Display": "No"}}, "ChoiceOrder": ["1", "2"],
        "RecodeValues": {"1": "1", "2": "0"}});
    v2["Questions"]["QID6"]["Choices"]["2"]["Display"] = json!("Not really");
    fake.set_definition(sid, v2.clone());
    fire(&stack).await;
    fire(&stack).await;
    for (t, rows) in expected_dimensions(sid, &v2) {
        want.entry(t).or_default().extend(rows);
    }
    assert_eq!(want["survey"].len(), 2);
    assert_eq!(want["question"].len(), 7 + 8);
    assert_dimensions(&stack, &want).await;
    for t in DIMENSIONS {
        assert_eq!(
            logged_adds(&s, t).await.len(),
            2,
            "{t}: one file per version"
        );
    }
    let snapshots = common::blob_names(&s, "bridge-state")
        .await
        .into_iter()
        .filter(|n| n.starts_with("definitions/"))
        .count();
    assert_eq!(snapshots, 2);
    stack.settle(Duration::from_secs(10)).await;
}

/// A crash after the dimension files are committed but before the cursor records the
/// version: the rerun adds no file twice and the tables hold the version once.
#[tokio::test]
async fn a_crash_before_the_dimension_cursor_moves_adds_no_file_twice() {
    use devkit::fakes::qualtrics::FakeQualtrics;
    use devkit::fakes::sandbox_data::{self, SANDBOX_ANALYTICS_SURVEY};

    let point = "analytics-dims-before-cursor";
    let data = sandbox_data::generate(SANDBOX_ANALYTICS_SURVEY, 6, 10, 1_767_657_600_000, 2);
    let fake = FakeQualtrics::start("token-dimensions")
        .await
        .expect("fake");
    fake.add_dataset(&data);
    let sid = data.survey_id.as_str();
    let stack = dimension_stack(&fake, sid, &[("BRIDGE_TEST_CRASH_AT", point)]).await;
    let s = common::storage_of(&stack.azurite);
    let text: String = data
        .responses
        .iter()
        .map(|r| format!("{}\n", r.text))
        .collect();
    put(
        &s,
        EXPORTS,
        &format!("{sid}/2026/01/06/20260106T001500Z-ES_0001.ndjson"),
        &text,
    )
    .await;
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
    for t in DIMENSIONS {
        assert_eq!(
            logged_adds(&s, t).await.len(),
            1,
            "{t}: committed before the crash"
        );
    }
    stack.host.restart_handler().await.unwrap();
    let logs = fire(&stack).await;
    assert!(logs.contains("10 response(s)"), "{logs}");
    assert_dimensions(&stack, &expected_dimensions(sid, &data.definition)).await;
    for t in DIMENSIONS {
        assert_eq!(logged_adds(&s, t).await.len(), 1, "{t}");
    }
}

/// `ticket_link`'s rows as read (both readers), one comparable string each.
fn link_rows(report: &Value, reader: &str) -> Vec<String> {
    report["ticket_link"][reader]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            json!([
                r["survey_id"],
                r["response_id"],
                r["system"],
                r["ticket_id"],
                r["ticket_number"],
                r["state"],
                r["updated_at"],
                r["source"]
            ])
            .to_string()
        })
        .collect()
}

/// The rows the ledgers hold, read from their blobs here: a `created` ticket ledger entry is
/// the ticket `open` since its `updatedAt`; a loop ledger entry is its applied state since the
/// ticket system's `changedAt`.
async fn ledger_states(s: &Storage) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in common::blob_names(s, "bridge-state").await {
        let text = || async { common::blob_text(s, "bridge-state", &n).await.unwrap() };
        if n.starts_with("tickets/") {
            let e: Value = serde_json::from_str(&text().await).unwrap();
            if e["state"] == "created" {
                out.insert(
                    json!([
                        e["surveyId"],
                        e["responseId"],
                        e["ticket"]["system"],
                        e["ticket"]["id"],
                        e["ticket"]["number"],
                        "open",
                        micros(e["updatedAt"].as_str().unwrap()),
                        "ticket_ledger"
                    ])
                    .to_string(),
                );
            }
        } else if n.starts_with("loop/") {
            let e: Value = serde_json::from_str(&text().await).unwrap();
            out.insert(
                json!([
                    e["surveyId"],
                    e["responseId"],
                    e["system"],
                    e["ticketId"],
                    e["ticketNumber"],
                    e["applied"]["state"],
                    micros(e["applied"]["changedAt"].as_str().unwrap()),
                    "loop_ledger"
                ])
                .to_string(),
            );
        }
    }
    out
}

/// `ticket_link` follows the real ledgers: TicketCreator raises tickets in the fake ServiceNow
/// (ticket ledger), LoopCloser applies their later states (loop ledger), and AnalyticsBuilder
/// appends one row per new state — read back by delta-rs and DuckDB equal to the ledgers'
/// contents, never twice for a rerun or for an entry rewritten without a new state.
#[tokio::test]
async fn ticket_link_follows_the_ticket_and_loop_ledgers() {
    use base64::Engine;
    use devkit::fakes::qualtrics::FakeQualtrics;
    use devkit::fakes::servicenow::{self, FakeServiceNow};

    const SVT: &str = "SV_ticketlink1";
    let q = FakeQualtrics::start("token-links")
        .await
        .expect("fake qualtrics");
    let sn = FakeServiceNow::start().await.expect("fake servicenow");
    let stack = StackBuilder::default()
        .bridge_toml(&format!(
            "[[surveys]]\nid = \"{SVT}\"\nexport = true\n[surveys.tickets]\nsystem = \"servicenow\"\n[surveys.loop]\n"
        ))
        .setting("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0")
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", "token-links")
        .setting("SERVICENOW_INSTANCE_URL", &sn.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .without_function("ExportPoller")
        .start()
        .await;
    let s = common::storage_of(&stack.azurite);
    let responses = q.add_responses(SVT, 3);
    stack.request_tickets(SVT, &responses).await;
    let created = |n: usize| {
        let (s, responses) = (&s, &responses);
        async move {
            let mut done = 0;
            for r in responses {
                if let Some(t) =
                    common::blob_text(s, "bridge-state", &format!("tickets/{SVT}/{r}.json")).await
                {
                    let e: Value = serde_json::from_str(&t).unwrap();
                    done += usize::from(e["state"] == "created");
                }
            }
            done == n
        }
    };
    assert!(
        stack
            .eventually(Duration::from_secs(60), || created(3))
            .await,
        "three tickets"
    );
    let entry: Value = serde_json::from_str(
        &common::blob_text(
            &s,
            "bridge-state",
            &format!("tickets/{SVT}/{}.json", responses[0]),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let (ticket, number) = (
        entry["ticket"]["id"].as_str().unwrap().to_owned(),
        entry["ticket"]["number"].as_str().unwrap().to_owned(),
    );
    let change = |state: &str, status: &str, at: &str, seq: u64| {
        json!({"v": 1, "system": "servicenow", "ticketId": ticket, "ticketNumber": number,
               "surveyId": SVT, "responseId": responses[0], "status": status, "state": state,
               "changedAt": at, "sequence": seq, "source": "event", "eventId": format!("{ticket}:{seq}"),
               "receivedAt": "2026-12-07T00:00:00Z"})
        .to_string()
    };
    let send = |text: String| {
        let stack = &stack;
        async move {
            stack
                .queues
                .create_queue("loop-requests")
                .await
                .expect("queue");
            stack
                .queues
                .put_message(
                    "loop-requests",
                    &base64::engine::general_purpose::STANDARD.encode(text),
                )
                .await
                .expect("put");
        }
    };
    let loop_state = |want: &'static str| {
        let s = &s;
        let name = format!("loop/servicenow/{ticket}.json");
        async move {
            common::blob_text(s, "bridge-state", &name)
                .await
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|e| e["applied"]["state"] == want)
        }
    };
    send(change("resolved", "6", "2026-12-05T10:00:00Z", 3)).await;
    assert!(
        stack
            .eventually(Duration::from_secs(60), || loop_state("resolved"))
            .await
    );

    let logs = fire(&stack).await;
    assert!(logs.contains("ticket_link: 4 ticket state(s)"), "{logs}");
    let check = |want: BTreeSet<String>| {
        let (stack, s) = (&stack, &s);
        async move {
            let report = oracle(&stack.azurite, s, TABLES, &["ticket_link"], true).await;
            assert_eq!(report["ticket_link"]["protocol"], json!([1, 2, null, null]));
            for reader in ["delta_rows", "duckdb_rows"] {
                let rows = link_rows(&report, reader);
                let set: BTreeSet<String> = rows.iter().cloned().collect();
                assert_eq!(
                    set.len(),
                    rows.len(),
                    "a ticket_link row twice via {reader}"
                );
                assert_eq!(set, want, "ticket_link via {reader}");
            }
            let adds = logged_adds(s, "ticket_link").await;
            assert_eq!(adds.iter().collect::<BTreeSet<_>>().len(), adds.len());
        }
    };
    let mut want = ledger_states(&s).await;
    assert_eq!(want.len(), 4);
    check(want.clone()).await;

    // A rerun with nothing new adds nothing.
    let logs = fire(&stack).await;
    assert!(logs.contains("ticket_link: 0 ticket state(s)"), "{logs}");
    // LoopCloser records its write-back in the entry after applying the state, and an entry
    // may be rewritten for other reasons: a new version of the blob without a new state adds
    // no row.
    let name = format!("loop/servicenow/{ticket}.json");
    let written = || {
        let (s, name) = (&s, &name);
        async move {
            common::blob_text(s, "bridge-state", name)
                .await
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|e| e["writeBack"]["state"].is_string())
        }
    };
    assert!(
        stack.eventually(Duration::from_secs(60), written).await,
        "write-back recorded"
    );
    let c = s.blob_container("bridge-state").unwrap();
    let (bytes, etag) = blob_state::read(&c.blob_client(&name), &name)
        .await
        .unwrap()
        .unwrap();
    let mut e: Value = serde_json::from_slice(&bytes).unwrap();
    e["ignored"] = json!(e["ignored"].as_u64().unwrap_or(0) + 1);
    blob_state::write(
        &c.blob_client(&name),
        &name,
        bytes::Bytes::from(e.to_string()),
        Condition::Matches(&etag, None),
    )
    .await
    .unwrap();
    let logs = fire(&stack).await;
    assert!(logs.contains("ticket_link: 0 ticket state(s)"), "{logs}");
    let cursor: Value = serde_json::from_str(
        &common::blob_text(&s, "bridge-state", "analytics/ticket-link.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cursor["recent"][&name]["state"], "resolved", "{cursor}");
    assert_eq!(cursor["inflight"], Value::Null);
    // Closed later: one more row, the ticket's newest.
    send(change("closed", "7", "2026-12-06T09:00:00Z", 4)).await;
    assert!(
        stack
            .eventually(Duration::from_secs(60), || loop_state("closed"))
            .await
    );
    let logs = fire(&stack).await;
    assert!(logs.contains("ticket_link: 1 ticket state(s)"), "{logs}");
    want.extend(ledger_states(&s).await);
    assert_eq!(want.len(), 5, "open ×3, resolved, closed");
    check(want).await;
    stack.settle(Duration::from_secs(10)).await;
}

/// A PNG's (width, height) from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!(&bytes[12..16], b"IHDR");
    (be(16), be(20))
}

/// The Monday (UTC) of the week holding `ms`, as `YYYY-MM-DD`.
fn week_of(ms: i64) -> String {
    let day = ms.div_euclid(86_400_000);
    // 1970-01-01 was a Thursday.
    let monday = day - (day + 3).rem_euclid(7);
    time::OffsetDateTime::from_unix_timestamp(monday * 86_400)
        .unwrap()
        .date()
        .to_string()
}

/// The demo's chart step (scripts/analytics-charts.py) over tables the real binary wrote:
/// sandbox responses exported, tickets raised by TicketCreator for the responses its rule
/// selects, AnalyticsBuilder's tables on Azurite. The PNGs are real images of the size drawn,
/// and the page's figures equal what the export rows and the rule say, week by week.
#[tokio::test]
async fn the_chart_step_draws_what_the_tables_hold() {
    use devkit::fakes::qualtrics::FakeQualtrics;
    use devkit::fakes::sandbox_data::{self, SANDBOX_ANALYTICS_SURVEY};
    use devkit::fakes::servicenow::{self, FakeServiceNow};

    let data = sandbox_data::generate(SANDBOX_ANALYTICS_SURVEY, 9, 240, 1_767_657_600_000, 35);
    let q = FakeQualtrics::start("token-charts")
        .await
        .expect("fake qualtrics");
    q.add_dataset(&data);
    let sn = FakeServiceNow::start().await.expect("fake servicenow");
    let sid = data.survey_id.as_str();
    let stack = StackBuilder::default()
        .bridge_toml(&format!(
            "[[surveys]]\nid = \"{sid}\"\nexport = true\n[surveys.tickets]\nsystem = \"servicenow\"\nwhen = \"values.QID1 <= 2\"\n"
        ))
        .setting("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0")
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", "token-charts")
        .setting("SERVICENOW_INSTANCE_URL", &sn.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .without_function("ExportPoller")
        .start()
        .await;
    let s = common::storage_of(&stack.azurite);
    let text: String = data
        .responses
        .iter()
        .map(|r| format!("{}\n", r.text))
        .collect();
    put(
        &s,
        EXPORTS,
        &format!("{sid}/2026/02/11/20260211T001500Z-ES_0001.ndjson"),
        &text,
    )
    .await;

    // What the rows say: per week, responses and NPS groups; per detractor, a ticket or none.
    let mut weeks: BTreeMap<String, (i64, [i64; 3])> = BTreeMap::new();
    let mut detractors: BTreeMap<(String, &str), i64> = BTreeMap::new();
    let mut nps_detractors = Vec::new();
    for r in &data.responses {
        let row: Value = serde_json::from_str(&r.text).unwrap();
        let w = week_of(r.recorded_ms);
        let e = weeks.entry(w.clone()).or_default();
        e.0 += 1;
        if let Some(g) = row["values"]["QID1_NPS_GROUP"].as_i64() {
            e.1[usize::try_from(g - 1).unwrap()] += 1;
            if g == 1 {
                let ticketed = row["values"]["QID1"].as_i64().is_some_and(|v| v <= 2);
                *detractors
                    .entry((w, if ticketed { "open" } else { "no ticket" }))
                    .or_default() += 1;
                nps_detractors.push(r.id.clone());
            }
        }
    }
    assert!(
        detractors.keys().any(|(_, s)| *s == "open"),
        "some tickets: {detractors:?}"
    );
    // The poll below lists the state container: make it exist before TicketCreator's first
    // invocation would (a listing of a missing container is a storage error, not "none yet").
    let state = s.blob_container("bridge-state").expect("container client");
    qualtrics_bridge::storage::blob_state::ensure_container(&state)
        .await
        .expect("create bridge-state");
    // The export would queue these; TicketCreator's rule picks the ones it raises.
    stack.request_tickets(sid, &nps_detractors).await;
    let settled = || {
        let (s, n) = (&s, nps_detractors.len());
        async move {
            let mut done = 0;
            for name in common::blob_names(s, "bridge-state").await {
                if name.starts_with(&format!("tickets/{sid}/")) {
                    let e: Value = serde_json::from_str(
                        &common::blob_text(s, "bridge-state", &name).await.unwrap(),
                    )
                    .unwrap();
                    done += usize::from(e["state"] == "created" || e["state"] == "skipped");
                }
            }
            done == n
        }
    };
    assert!(
        stack.eventually(Duration::from_secs(120), settled).await,
        "every request decided"
    );
    let logs = fire(&stack).await;
    assert!(logs.contains("240 response(s)"), "{logs}");

    let out = tempfile::tempdir().unwrap();
    let blob_url = stack.azurite.blob_endpoint();
    let run = tokio::process::Command::new(common::oracle_python())
        .arg(repo_root().join("scripts/analytics-charts.py"))
        .arg("--out")
        .arg(out.path())
        .arg("--azurite")
        .arg(blob_url.trim_end_matches("/devstoreaccount1"))
        .output()
        .await
        .expect("chart step runs");
    assert!(
        run.status.success(),
        "charts: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page = out.path().join("analytics.html");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        page.to_str().unwrap()
    );
    for png in [
        "nps_trend.png",
        "response_volume.png",
        "detractor_tickets.png",
    ] {
        let bytes = std::fs::read(out.path().join(png)).expect(png);
        assert_eq!(png_size(&bytes), (1000, 400), "{png}");
        assert!(bytes.len() > 10_000, "{png}: {} bytes", bytes.len());
    }
    let html = std::fs::read_to_string(&page).unwrap();
    for img in [
        "nps_trend.png",
        "response_volume.png",
        "detractor_tickets.png",
    ] {
        assert!(html.contains(&format!("<img src=\"{img}\"")), "{img}");
    }
    let json = html
        .split("<script type=\"application/json\" id=\"figures\">")
        .nth(1)
        .and_then(|r| r.split("</script>").next())
        .expect("figures");
    let figures: Value = serde_json::from_str(json).unwrap();
    // (responses, promoters, detractors) per week, and the NPS the page prints (2 decimals).
    let got_nps: BTreeMap<String, [i64; 3]> = figures["nps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap();
            let exact = 100.0 * (n("promoters") - n("detractors")) as f64 / n("responses") as f64;
            assert!(
                (r["nps"].as_f64().unwrap() - exact).abs() <= 0.005 + 1e-9,
                "{r}"
            );
            (
                r["week"].as_str().unwrap().to_owned(),
                [n("responses"), n("promoters"), n("detractors")],
            )
        })
        .collect();
    let want_nps: BTreeMap<String, [i64; 3]> = weeks
        .iter()
        .filter(|(_, (_, g))| g.iter().sum::<i64>() > 0)
        .map(|(w, (_, [d, p, pr]))| (w.clone(), [d + p + pr, *pr, *d]))
        .collect();
    assert!(want_nps.len() >= 5, "{want_nps:?}");
    assert_eq!(got_nps, want_nps);
    let got_volume: BTreeMap<String, i64> = figures["volume"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["week"].as_str().unwrap().to_owned(),
                r["responses"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got_volume,
        weeks.iter().map(|(w, (n, _))| (w.clone(), *n)).collect()
    );
    let got_tickets: BTreeMap<(String, String), i64> = figures["detractor_tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["week"].as_str().unwrap().to_owned(),
                    r["state"].as_str().unwrap().to_owned(),
                ),
                r["detractors"].as_i64().unwrap(),
            )
        })
        .collect();
    let want_tickets: BTreeMap<(String, String), i64> = detractors
        .into_iter()
        .map(|((w, s), n)| ((w, s.to_owned()), n))
        .collect();
    assert_eq!(got_tickets, want_tickets);
    stack.settle(Duration::from_secs(10)).await;
}
