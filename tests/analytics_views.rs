//! The DuckDB views (`analytics/sql/duckdb/views.sql`) run by Python `duckdb` over Parquet
//! files made from the decoder's rows of devkit's sandbox dataset, and checked against what
//! the generator meant — computed here from the export rows, not from the decoder's output.

use devkit::fakes::sandbox_data::{self, SandboxDataset, SANDBOX_ANALYTICS_SURVEY};
use qualtrics_bridge::analytics::decode::{decode, Policy, RowContext};
use qualtrics_bridge::analytics::definition::{Definition, Definitions};
use qualtrics_bridge::analytics::rows::DecodedResponse;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// 2026-01-06T00:00:00Z.
const START_MS: i64 = 1_767_657_600_000;
const E1: i64 = 1_780_000_000_000_000;
const E2: i64 = E1 + 3_600_000_000;
const DAY_MS: i64 = 86_400_000;

/// A detractor's (score, ticket number, minutes from response to ticket, ticket's state now).
type DetractorRow = (Option<f64>, Option<String>, Option<i64>, Option<String>);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The oracles venv's python (pinned duckdb, deltalake, pyarrow from PyPI, installed by the
/// script on first use).
fn duckdb_python() -> String {
    let out = Command::new(root().join("scripts/install-oracles.sh"))
        .output()
        .expect("run scripts/install-oracles.sh");
    assert!(
        out.status.success(),
        "install-oracles.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Re-exported versions: every 7th response is exported again with NPS 10 (an edit).
fn edited(text: &str) -> String {
    let mut v: Value = serde_json::from_str(text).expect("row");
    v["values"]["QID1"] = json!(10);
    v["values"]["QID1_NPS_GROUP"] = json!(3);
    v["labels"]["QID1_NPS_GROUP"] = json!("Promoter");
    v.to_string()
}

fn ndjson(dir: &Path, table: &str, rows: &[Value]) {
    let mut f = std::fs::File::create(dir.join(format!("{table}.ndjson"))).expect("create");
    for r in rows {
        writeln!(f, "{r}").expect("write");
    }
}

fn dump(dir: &Path, decoded: &[DecodedResponse], tickets: &[Value]) {
    let responses: Vec<Value> = decoded
        .iter()
        .map(|d| {
            let r = &d.response;
            json!({"survey_id": r.survey_id, "response_id": r.response_id, "exported_at": r.exported_at,
                   "source_blob": r.source_blob, "recorded_at": r.recorded_at, "finished": r.finished,
                   "duration_s": r.duration_s, "status": r.status})
        })
        .collect();
    let cells: Vec<Value> = decoded
        .iter()
        .flat_map(|d| d.cells.iter())
        .map(|c| {
            json!({"survey_id": c.survey_id, "response_id": c.response_id, "recorded_at": c.recorded_at,
                   "exported_at": c.exported_at, "definition_version": c.definition_version,
                   "export_key": c.export_key, "loop_id": c.loop_id, "question_id": c.question_id,
                   "sub_key": c.sub_key, "field": c.field, "item_index": c.item_index, "code": c.code,
                   "value_num": c.value_num, "value_text": c.value_text, "label": c.label,
                   "displayed": c.displayed, "answered": c.answered,
                   "decode_status": c.decode_status.as_str()})
        })
        .collect();
    ndjson(dir, "survey_response", &responses);
    ndjson(dir, "question_response", &cells);
    ndjson(dir, "ticket_link", tickets);
}

/// `[loop_]QIDn…` → (loop, QIDn, rest), as the export grammar reads (independent of the
/// decoder's parser).
fn question_of(key: &str) -> Option<(String, String, String)> {
    let (lp, rest) = match key.split_once("_QID") {
        Some((l, r)) if l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty() => {
            (l.to_string(), format!("QID{r}"))
        }
        _ => (String::new(), key.to_string()),
    };
    let tail = rest.strip_prefix("QID")?;
    let n: String = tail.chars().take_while(char::is_ascii_digit).collect();
    if n.is_empty() {
        return None;
    }
    Some((lp, format!("QID{n}"), tail[n.len()..].to_string()))
}

#[test]
fn duckdb_views_agree_with_the_generated_answers() {
    let python = duckdb_python();
    let data: SandboxDataset =
        sandbox_data::generate(SANDBOX_ANALYTICS_SURVEY, 3, 900, START_MS, 30);
    let defs = Definitions::new(vec![Definition::from_raw(
        &data.survey_id,
        data.definition.clone(),
    )
    .expect("definition")]);
    let policy = Policy {
        free_text: true,
        ..Policy::default()
    };
    let mut decoded = Vec::new();
    // The latest text of each response, for the expectations.
    let mut latest: BTreeMap<String, (i64, Value)> = BTreeMap::new();
    for (i, r) in data.responses.iter().enumerate() {
        let mut versions = vec![(E1, "blob-1", r.text.clone())];
        if i % 7 == 0 {
            versions.push((E2, "blob-2", edited(&r.text)));
        }
        for (exported_at, blob, text) in versions {
            let ctx = RowContext {
                survey_id: &data.survey_id,
                exported_at,
                source_blob: blob,
            };
            decoded.push(decode(text.as_bytes(), &ctx, &defs, &policy).expect("decode"));
            latest.insert(
                r.id.clone(),
                (r.recorded_ms, serde_json::from_str(&text).expect("row")),
            );
        }
    }
    // Tickets for every other latest detractor, raised (open) 30 minutes after the response;
    // some resolved a day later, some canceled at the very instant they were raised (a tie the
    // loop ledger's row wins) — ticket_link appends each state.
    let mut tickets = Vec::new();
    let mut want_detractors = BTreeMap::new();
    let mut want_latest = BTreeSet::new();
    for (n, (id, (at, row))) in latest
        .iter()
        .filter(|(_, (_, row))| row["values"]["QID1_NPS_GROUP"] == json!(1))
        .enumerate()
    {
        let score = row["values"]["QID1"].as_f64();
        let ticket = (n % 2 == 0).then(|| format!("INC{n:07}"));
        let mut state = None;
        if let Some(number) = &ticket {
            let created = (at + 30 * 60_000) * 1000;
            let link = |state: &str, updated: i64, source: &str| {
                json!({"survey_id": data.survey_id, "response_id": id, "system": "servicenow",
                       "ticket_id": format!("sys-{n}"), "ticket_number": number, "state": state,
                       "updated_at": updated, "source": source})
            };
            tickets.push(link("open", created, "ticket_ledger"));
            let mut now = ("open", created);
            if n % 3 == 0 {
                let resolved = created + DAY_MS * 1000;
                tickets.push(link("resolved", resolved, "loop_ledger"));
                now = ("resolved", resolved);
            } else if n % 3 == 1 {
                // A tie with the ticket ledger's row: the loop ledger's state wins.
                tickets.push(link("canceled", created, "loop_ledger"));
                now = ("canceled", created);
            }
            state = Some(now.0.to_string());
            want_latest.insert(json!([format!("sys-{n}"), now.0, created, now.1]).to_string());
        }
        want_detractors.insert(id.clone(), (score, ticket, state));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    dump(dir.path(), &decoded, &tickets);
    let out = Command::new(&python)
        .arg(root().join("tests/analytics_views.py"))
        .arg(dir.path())
        .arg(root().join("analytics/sql/duckdb/views.sql"))
        .output()
        .expect("run duckdb");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views: Value = serde_json::from_slice(&out.stdout).expect("views JSON");

    // v_response_latest: one row per response, the edited ones at their second export.
    let got: Vec<(String, i64)> = views["v_response_latest"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["response_id"].as_str().unwrap_or("").to_string(),
                r["exported_at"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = data
        .responses
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), if i % 7 == 0 { E2 } else { E1 }))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, want);

    // v_nps_daily: per UTC day, counts of the latest NPS groups.
    let mut days: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    for (at, row) in latest.values() {
        let day = time::OffsetDateTime::from_unix_timestamp(at.div_euclid(DAY_MS) * 86_400)
            .expect("day")
            .date()
            .to_string();
        let g = row["values"]["QID1_NPS_GROUP"].as_i64().expect("group");
        days.entry(day).or_default()[usize::try_from(g - 1).expect("1-3")] += 1;
    }
    let got: BTreeMap<String, [i64; 3]> = views["v_nps_daily"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap_or(-1);
            let total = n("responses");
            let nps = r["nps"].as_f64().unwrap_or(f64::NAN);
            let expected = 100.0 * (n("promoters") - n("detractors")) as f64 / total as f64;
            assert!((nps - expected).abs() < 1e-9, "{r}");
            assert_eq!(
                total,
                n("promoters") + n("passives") + n("detractors"),
                "{r}"
            );
            (
                r["day"].as_str().unwrap_or("").to_string(),
                [n("detractors"), n("passives"), n("promoters")],
            )
        })
        .collect();
    assert_eq!(got, days);
    assert_eq!(days.len(), 30, "a month of UTC days");

    // v_question_response_rate: shown / answered per question (× loop iteration).
    let mut shown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut answered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, (_, row)) in &latest {
        let values = row["values"].as_object().expect("values");
        let displayed: Vec<&str> = row["displayedFields"]
            .as_array()
            .expect("shown")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for key in values
            .keys()
            .map(String::as_str)
            .chain(displayed.iter().copied())
        {
            let Some((lp, q, rest)) = question_of(key) else {
                continue;
            };
            if rest == "_NPS_GROUP" || (rest.ends_with("_TEXT") && rest != "_TEXT") {
                continue;
            }
            let unit = format!("{id}|{lp}");
            shown.entry(q.clone()).or_default().insert(unit.clone());
            if values.contains_key(key) {
                answered.entry(q).or_default().insert(unit);
            }
        }
    }
    let got: BTreeMap<String, (usize, usize)> = views["v_question_response_rate"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let (d, a) = (
                r["displayed"].as_u64().unwrap_or(0),
                r["answered"].as_u64().unwrap_or(0),
            );
            let rate = r["response_rate"].as_f64().unwrap_or(f64::NAN);
            assert!((rate - a as f64 / d as f64).abs() < 1e-9, "{r}");
            (
                r["question_id"].as_str().unwrap_or("").to_string(),
                (d as usize, a as usize),
            )
        })
        .collect();
    let want: BTreeMap<String, (usize, usize)> = shown
        .iter()
        .map(|(q, s)| {
            (
                q.clone(),
                (s.len(), answered.get(q).map_or(0, BTreeSet::len)),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(
        want["QID5"].1 < want["QID5"].0,
        "the essay is skipped by some"
    );

    // v_detractor_ticket: every latest detractor once, with its score and ticket.
    let got: BTreeMap<String, DetractorRow> = views["v_detractor_ticket"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["response_id"].as_str().unwrap_or("").to_string(),
                (
                    r["score"].as_f64(),
                    r["ticket_number"].as_str().map(String::from),
                    r["minutes_to_ticket"].as_i64(),
                    r["ticket_state"].as_str().map(String::from),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, DetractorRow> = want_detractors
        .into_iter()
        .map(|(id, (score, t, state))| {
            let minutes = t.as_ref().map(|_| 30);
            (id, (score, t, minutes, state))
        })
        .collect();
    assert!(want.len() > 50, "{} detractors", want.len());
    assert_eq!(got, want);

    // v_ticket_latest: one row per ticket, in its newest state, created when first raised.
    let got: BTreeSet<String> = views["v_ticket_latest"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| json!([r["ticket_id"], r["state"], r["created_at"], r["updated_at"]]).to_string())
        .collect();
    assert!(want_latest.iter().any(|r| r.contains("resolved")));
    assert!(want_latest.iter().any(|r| r.contains("canceled")));
    assert_eq!(got, want_latest);
}

/// Names following `marker` in `text` (`CREATE OR REPLACE VIEW x`, `…/qualtrics-analytics/x"`).
fn names_after(text: &str, marker: &str) -> BTreeSet<String> {
    text.match_indices(marker)
        .map(|(i, _)| {
            text[i + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The texts CI cannot run say what the DuckDB text (which it runs) says: Synapse/Fabric
/// define the same views over the same eight tables, and Power BI loads every table.
#[test]
fn synapse_and_power_bi_texts_cover_the_same_views_and_tables() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).expect(p);
    let duck_views = names_after(
        &read("analytics/sql/duckdb/views.sql"),
        "CREATE OR REPLACE VIEW ",
    );
    let syn_views = names_after(
        &read("analytics/sql/synapse/views.sql"),
        "CREATE OR ALTER VIEW dbo.",
    );
    assert!(duck_views.contains("v_ticket_latest"), "{duck_views:?}");
    assert_eq!(duck_views, syn_views);
    let tables: BTreeSet<String> = [
        "survey_response",
        "question_response",
        "response_embedded_data",
        "survey",
        "question",
        "question_item",
        "choice",
        "ticket_link",
    ]
    .map(String::from)
    .into();
    let duck = names_after(
        &read("analytics/sql/duckdb/tables.sql"),
        "CREATE OR REPLACE VIEW ",
    );
    let syn = names_after(
        &read("analytics/sql/synapse/tables.sql"),
        "CREATE OR ALTER VIEW dbo.",
    );
    let pbi = names_after(
        &read("analytics/powerbi/tables.pq"),
        "/qualtrics-analytics/",
    );
    assert_eq!(duck, tables, "duckdb/tables.sql");
    assert_eq!(syn, tables, "synapse/tables.sql");
    assert_eq!(pbi, tables, "powerbi/tables.pq");
}
