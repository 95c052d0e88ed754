//! The sandbox dataset: one survey definition shaped like a real one (reference
//! `analytics-layer.md` §3.2) and responses over a few months shaped like real export rows
//! (§3.1), with every question type the analytics decoder handles — NPS with its group, single
//! choice with recodes and an "other, specify" text, multi-select with recodes, a Likert matrix
//! whose recodes (-2…2) differ from its column positions (1…5), an essay text, a loop & merge
//! block, embedded data and identity metadata.
//!
//! Deterministic: the same seed gives the same bytes, and each response lists what it
//! [`Intended`] so a test can check that every answer decodes to the value meant.

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Map, Value};

/// The survey the sandbox serves this dataset under (`bridge.toml`'s second survey).
pub const SANDBOX_ANALYTICS_SURVEY: &str = "SV_3kSandboxVisits";
/// The seed `devkit up` uses.
pub const SANDBOX_SEED: u64 = 16;
/// `LastModified` of the definition: before every generated response.
pub const DEFINITION_VERSION: &str = "2026-01-05T09:00:00Z";

/// One answer the generator put into a response, as the decoder should read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Intended {
    pub export_key: String,
    pub loop_id: Option<String>,
    pub question_id: &'static str,
    pub sub_key: Option<String>,
    /// `value`, `text`, `choice_text`, `nps_group`.
    pub field: &'static str,
    pub item_index: Option<i32>,
    pub value_num: Option<f64>,
    pub value_text: Option<String>,
}

/// One generated response.
#[derive(Debug, Clone)]
pub struct SandboxResponse {
    pub id: String,
    pub recorded_ms: i64,
    /// The export row, exactly as the fake serves it.
    pub text: String,
    pub intended: Vec<Intended>,
    /// Embedded data the row carries (key, value).
    pub embedded: Vec<(String, String)>,
}

/// The definition and the responses, oldest first.
#[derive(Debug, Clone)]
pub struct SandboxDataset {
    pub survey_id: String,
    /// The API's `result` for `GET /survey-definitions/{id}`.
    pub definition: Value,
    pub responses: Vec<SandboxResponse>,
}

const SHOPPED: [(&str, &str, &str); 4] = [
    ("1", "In store", "10"),
    ("2", "Online, collected in store", "20"),
    ("3", "By phone", "30"),
    ("4", "Other", "99"),
];
const BOUGHT: [(&str, &str, &str); 5] = [
    ("1", "Groceries", "11"),
    ("2", "Bakery", "12"),
    ("3", "Household", "13"),
    ("4", "Garden", "14"),
    ("5", "Electronics", "15"),
];
/// Matrix rows (statements).
const ASPECTS: [(&str, &str); 3] = [("1", "Speed"), ("2", "Staff"), ("3", "Cleanliness")];
/// Matrix columns: id (position), label, recode.
const AGREE: [(&str, &str, i64); 5] = [
    ("1", "Strongly disagree", -2),
    ("2", "Disagree", -1),
    ("3", "Neither agree nor disagree", 0),
    ("4", "Agree", 1),
    ("5", "Strongly agree", 2),
];
/// Loop & merge over departments: loop id, department.
const DEPARTMENTS: [(&str, &str); 2] = [("1", "Bakery"), ("2", "Deli")];
const OTHER_WAYS: [&str; 4] = [
    "delivery van",
    "market stall",
    "click and mail",
    "pop-up shop",
];
const COMMENTS: [&str; 8] = [
    "Queues at the tills were long at lunchtime",
    "Friendly staff, found everything quickly",
    "The bakery ran out of bread by noon",
    "Parking was hard to find",
    "Clean store and helpful signs",
    "Self checkout kept freezing",
    "Great prices on fresh produce",
    "Could not find the garden section",
];
const STORES: [&str; 6] = ["S01", "S02", "S03", "S04", "S05", "S06"];
const REGIONS: [&str; 2] = ["North", "South"];

/// The definition: every hazard a real one has (NPS `Choices` as an array, int and string
/// ids mixed in the orders, `TextEntry: "true"`, `ChoiceDataExportTags: false`, a Trash
/// block, a looping block).
pub fn definition(survey_id: &str) -> Value {
    let choices = |list: &[(&str, &str, &str)]| -> Value {
        let mut m = Map::new();
        for (id, label, _) in list {
            let mut c = json!({"Display": label});
            if *label == "Other" {
                c["TextEntry"] = json!("true");
            }
            m.insert((*id).into(), c);
        }
        Value::Object(m)
    };
    let recodes = |list: &[(&str, &str, &str)]| -> Value {
        Value::Object(
            list.iter()
                .map(|(id, _, r)| ((*id).to_string(), json!(r)))
                .collect(),
        )
    };
    let nps_choices: Vec<Value> = (0..=10)
        .map(|i| json!({"Display": i.to_string()}))
        .collect();
    let nps_order: Vec<Value> = (0..=10).map(|i| json!(i.to_string())).collect();
    json!({
      "SurveyID": survey_id, "SurveyName": "Store visit (sandbox)", "SurveyStatus": "Active",
      "BrandID": "sandbox", "OwnerID": "UR_sandbox", "LastModified": DEFINITION_VERSION,
      "QuestionCount": "7",
      "Questions": {
        "QID1": {"QuestionID": "QID1", "DataExportTag": "Q1", "QuestionType": "MC", "Selector": "NPS",
                 "QuestionText": "How likely are you to recommend us to a friend?",
                 "QuestionDescription": "How likely are you to recommend us to a friend?",
                 "Choices": nps_choices, "ChoiceOrder": nps_order,
                 "ColumnLabels": [], "ChoiceDataExportTags": false},
        "QID2": {"QuestionID": "QID2", "DataExportTag": "Q2", "QuestionType": "MC", "Selector": "SAVR",
                 "SubSelector": "TX", "QuestionDescription": "How did you shop today?",
                 "Choices": choices(&SHOPPED), "ChoiceOrder": [1, 2, "3", 4],
                 "RecodeValues": recodes(&SHOPPED), "ChoiceDataExportTags": false},
        "QID3": {"QuestionID": "QID3", "DataExportTag": "Q3", "QuestionType": "MC", "Selector": "MAVR",
                 "SubSelector": "TX", "QuestionDescription": "What did you buy?",
                 "Choices": choices(&BOUGHT), "ChoiceOrder": ["1", "2", "3", "4", "5"],
                 "RecodeValues": recodes(&BOUGHT)},
        "QID4": {"QuestionID": "QID4", "DataExportTag": "Q4", "QuestionType": "Matrix", "Selector": "Likert",
                 "SubSelector": "SingleAnswer", "QuestionDescription": "How much do you agree: the store was good on…",
                 "Choices": Value::Object(ASPECTS.iter().map(|(id, l)| ((*id).to_string(), json!({"Display": l}))).collect()),
                 "ChoiceOrder": [1, 2, 3],
                 "Answers": Value::Object(AGREE.iter().map(|(id, l, _)| ((*id).to_string(), json!({"Display": l}))).collect()),
                 "AnswerOrder": [1, 2, 3, 4, 5],
                 "RecodeValues": Value::Object(AGREE.iter().map(|(id, _, r)| ((*id).to_string(), json!(r.to_string()))).collect()),
                 "ChoiceDataExportTags": false},
        "QID5": {"QuestionID": "QID5", "DataExportTag": "Q5", "QuestionType": "TE", "Selector": "ESTB",
                 "QuestionDescription": "Anything else you would like to tell us?"},
        "QID6": {"QuestionID": "QID6", "DataExportTag": "Q6", "QuestionType": "MC", "Selector": "SAHR",
                 "QuestionDescription": "Were you happy with the ${lm://Field/1} counter?",
                 "Choices": {"1": {"Display": "Yes"}, "2": {"Display": "No"}},
                 "ChoiceOrder": ["1", "2"], "RecodeValues": {"1": "1", "2": "0"}},
        "QID9": {"QuestionID": "QID9", "DataExportTag": "Q9_old", "QuestionType": "MC", "Selector": "SAVR",
                 "QuestionDescription": "(deleted) Which store?", "Choices": {}, "ChoiceOrder": []}
      },
      "Blocks": {
        "BL_main": {"Type": "Default", "Description": "Visit", "ID": "BL_main",
                    "BlockElements": [{"Type": "Question", "QuestionID": "QID1"}, {"Type": "PageBreak"},
                                      {"Type": "Question", "QuestionID": "QID2"}, {"Type": "Question", "QuestionID": "QID3"},
                                      {"Type": "Question", "QuestionID": "QID4"}, {"Type": "Question", "QuestionID": "QID5"}]},
        "BL_loop": {"Type": "Standard", "Description": "Departments", "ID": "BL_loop",
                    "Options": {"BlockLocking": "false", "Looping": "Static",
                                "LoopingOptions": {"Static": {"1": {"1": "Bakery"}, "2": {"1": "Deli"}}}},
                    "BlockElements": [{"Type": "Question", "QuestionID": "QID6"}]},
        "BL_trash": {"Type": "Trash", "Description": "Trash / Unused Questions", "ID": "BL_trash",
                     "BlockElements": [{"Type": "Question", "QuestionID": "QID9"}]}
      },
      "SurveyFlow": {"Type": "Root", "Flow": [
        {"Type": "EmbeddedData", "EmbeddedData": [
          {"Field": "Store", "Type": "Recipient"}, {"Field": "Region", "Type": "Recipient"},
          {"Field": "Email", "Type": "Recipient"}]},
        {"Type": "Standard", "ID": "BL_main"}, {"Type": "Block", "ID": "BL_loop"}]}
    })
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `n` in `0..bound`.
fn below(rng: &mut Pcg64Mcg, bound: u64) -> u64 {
    rng.next_u64() % bound.max(1)
}

fn chance(rng: &mut Pcg64Mcg, percent: u64) -> bool {
    below(rng, 100) < percent
}

/// `count` responses recorded between `start_ms` and `start_ms + days`, seeded.
pub fn generate(
    survey_id: &str,
    seed: u64,
    count: usize,
    start_ms: i64,
    days: u32,
) -> SandboxDataset {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let span = i64::from(days.max(1)) * 86_400_000;
    let step = span / i64::try_from(count.max(1)).unwrap_or(1);
    let responses = (0..count)
        .map(|i| {
            let base = start_ms + step * i64::try_from(i).unwrap_or(0);
            let at = base + i64::try_from(below(&mut rng, step.max(1) as u64)).unwrap_or(0);
            response(&mut rng, i, at)
        })
        .collect();
    SandboxDataset {
        survey_id: survey_id.to_string(),
        definition: definition(survey_id),
        responses,
    }
}

fn response(rng: &mut Pcg64Mcg, seq: usize, recorded_ms: i64) -> SandboxResponse {
    let id = format!("R_sbx{seq:011}");
    let mut values = Map::new();
    let mut labels = Map::new();
    let mut displayed: Vec<String> = Vec::new();
    let mut intended = Vec::new();
    let mut want = |key: &str,
                    loop_id: Option<&str>,
                    question_id: &'static str,
                    sub_key: Option<&str>,
                    field: &'static str,
                    item_index: Option<i32>,
                    num: Option<f64>,
                    text: Option<&str>| {
        intended.push(Intended {
            export_key: key.to_string(),
            loop_id: loop_id.map(String::from),
            question_id,
            sub_key: sub_key.map(String::from),
            field,
            item_index,
            value_num: num,
            value_text: text.map(String::from),
        });
    };
    // NPS skews positive, with a slow upward drift so the trend chart has a shape; 0–2 is
    // rare (the sandbox raises tickets for those).
    let drift = u64::try_from(seq / 400).unwrap_or(0).min(3);
    let roll = below(rng, 100);
    let nps: u64 = match roll {
        0..=3 => below(rng, 3),
        4..=24 => 3 + below(rng, 4),
        25..=49 => 7 + below(rng, 2),
        _ => 9 + below(rng, 2),
    };
    let nps = if nps < 9 && below(rng, 10) < drift {
        nps + 1
    } else {
        nps
    };
    let group = match nps {
        0..=6 => (1, "Detractor"),
        7 | 8 => (2, "Passive"),
        _ => (3, "Promoter"),
    };
    values.insert("QID1".into(), json!(nps));
    labels.insert("QID1".into(), json!(nps.to_string()));
    values.insert("QID1_NPS_GROUP".into(), json!(group.0));
    labels.insert("QID1_NPS_GROUP".into(), json!(group.1));
    displayed.extend(["QID1".into(), "QID1_NPS_GROUP".into()]);
    want(
        "QID1",
        None,
        "QID1",
        None,
        "value",
        None,
        Some(nps as f64),
        None,
    );
    want(
        "QID1_NPS_GROUP",
        None,
        "QID1",
        None,
        "nps_group",
        None,
        Some(f64::from(group.0)),
        None,
    );

    // Single choice: the export carries the recode; "Other" has a text.
    let (cid, clabel, crecode) = SHOPPED[usize::try_from(below(rng, 4)).unwrap_or(0)];
    let recode: i64 = crecode.parse().unwrap_or_default();
    values.insert("QID2".into(), json!(recode));
    labels.insert("QID2".into(), json!(clabel));
    displayed.push("QID2".into());
    want(
        "QID2",
        None,
        "QID2",
        None,
        "value",
        None,
        Some(recode as f64),
        None,
    );
    if cid == "4" {
        let other = OTHER_WAYS[usize::try_from(below(rng, 4)).unwrap_or(0)];
        values.insert("QID2_4_TEXT".into(), json!(other));
        displayed.push("QID2_4_TEXT".into());
        want(
            "QID2_4_TEXT",
            None,
            "QID2",
            Some("4"),
            "choice_text",
            None,
            None,
            Some(other),
        );
    }

    // Multi-select: one to three choices, recodes as strings, labels alongside.
    let picks: Vec<_> = BOUGHT.iter().filter(|_| chance(rng, 40)).take(3).collect();
    let picks = if picks.is_empty() {
        vec![&BOUGHT[0]]
    } else {
        picks
    };
    values.insert(
        "QID3".into(),
        json!(picks.iter().map(|p| p.2).collect::<Vec<_>>()),
    );
    labels.insert(
        "QID3".into(),
        json!(picks.iter().map(|p| p.1).collect::<Vec<_>>()),
    );
    displayed.push("QID3".into());
    for (i, p) in picks.iter().enumerate() {
        let n: f64 = p.2.parse().unwrap_or_default();
        want(
            "QID3",
            None,
            "QID3",
            None,
            "value",
            i32::try_from(i).ok(),
            Some(n),
            None,
        );
    }

    // Likert matrix: the value is the column's recode (-2…2), the label its text; a
    // decoder that read the code as a position would be wrong for every row.
    for (row, _) in ASPECTS {
        let key = format!("QID4_{row}");
        displayed.push(key.clone());
        if chance(rng, 8) {
            continue; // shown, skipped
        }
        let lean = if nps >= 9 {
            2
        } else if nps >= 7 {
            1
        } else {
            0
        };
        let col = usize::try_from((below(rng, 3) + lean).min(4)).unwrap_or(0);
        let (_, label, recode) = AGREE[col];
        values.insert(key.clone(), json!(recode));
        labels.insert(key.clone(), json!(label));
        want(
            &key,
            None,
            "QID4",
            Some(row),
            "value",
            None,
            Some(recode as f64),
            None,
        );
    }

    // Essay: shown to everyone, answered by some.
    displayed.push("QID5_TEXT".into());
    if chance(rng, 35) {
        let c = COMMENTS[usize::try_from(below(rng, 8)).unwrap_or(0)];
        values.insert("QID5_TEXT".into(), json!(c));
        want("QID5_TEXT", None, "QID5", None, "text", None, None, Some(c));
    }

    // Loop & merge over the departments visited.
    for (loop_id, _) in DEPARTMENTS {
        if !chance(rng, 70) {
            continue;
        }
        let key = format!("{loop_id}_QID6");
        let (code, label) = if chance(rng, 80) {
            (1, "Yes")
        } else {
            (0, "No")
        };
        values.insert(key.clone(), json!(code));
        labels.insert(key.clone(), json!(label));
        displayed.push(key.clone());
        want(
            &key,
            Some(loop_id),
            "QID6",
            None,
            "value",
            None,
            Some(f64::from(code)),
            None,
        );
    }

    let store = STORES[usize::try_from(below(rng, 6)).unwrap_or(0)];
    let region = REGIONS[usize::from(store > "S03")];
    let embedded = vec![
        ("Store".to_string(), store.to_string()),
        ("Region".to_string(), region.to_string()),
        ("Email".to_string(), format!("visitor{seq}@example.com")),
    ];
    let rec = rfc3339(recorded_ms);
    let started = rfc3339(recorded_ms - 1000 * (60 + i64::try_from(below(rng, 400)).unwrap_or(0)));
    let mut head = json!({
        "startDate": started, "endDate": rec, "status": 0,
        "ipAddress": format!("203.0.113.{}", seq % 250 + 1),
        "progress": 100, "duration": 60 + seq % 400, "finished": 1, "recordedDate": rec,
        "_recordId": id, "locationLatitude": "51.5072", "locationLongitude": "-0.1276",
        "distributionChannel": "anonymous", "userLanguage": "EN"
    });
    if let Some(h) = head.as_object_mut() {
        h.extend(values);
        for (k, v) in &embedded {
            h.insert(k.clone(), json!(v));
        }
    }
    labels.insert("status".into(), json!("IP Address"));
    labels.insert("finished".into(), json!("True"));
    let text = json!({
        "responseId": id, "values": head, "labels": labels,
        "displayedFields": displayed,
        "displayedValues": {"QID1": (0..=10).collect::<Vec<_>>(), "QID4_1": [-2, -1, 0, 1, 2]}
    })
    .to_string();
    SandboxResponse {
        id,
        recorded_ms,
        text,
        intended,
        embedded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_covers_every_type() {
        let a = generate(SANDBOX_ANALYTICS_SURVEY, 7, 400, 1_767_600_000_000, 90);
        let b = generate(SANDBOX_ANALYTICS_SURVEY, 7, 400, 1_767_600_000_000, 90);
        assert!(a
            .responses
            .iter()
            .zip(&b.responses)
            .all(|(x, y)| x.text == y.text));
        let fields: std::collections::BTreeSet<_> = a
            .responses
            .iter()
            .flat_map(|r| {
                r.intended
                    .iter()
                    .map(|i| (i.question_id, i.field, i.loop_id.is_some()))
            })
            .collect();
        for want in [
            ("QID1", "value", false),
            ("QID1", "nps_group", false),
            ("QID2", "value", false),
            ("QID2", "choice_text", false),
            ("QID3", "value", false),
            ("QID4", "value", false),
            ("QID5", "text", false),
            ("QID6", "value", true),
        ] {
            assert!(fields.contains(&want), "{want:?} never generated");
        }
        let first = a
            .responses
            .first()
            .map(|r| r.recorded_ms)
            .unwrap_or_default();
        let last = a
            .responses
            .last()
            .map(|r| r.recorded_ms)
            .unwrap_or_default();
        assert!(last - first > 80 * 86_400_000, "spread over months");
        assert!(a
            .responses
            .iter()
            .all(|r| serde_json::from_str::<Value>(&r.text).is_ok()));
    }
}
