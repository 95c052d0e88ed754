//! A wide survey for the analytics benchmark (`tests/analytics_bench.rs`): the sandbox
//! dataset's question types (NPS with its group, single choice with recodes and an "other"
//! text, multi-select with recodes, Likert matrices whose recodes differ from positions — one
//! of them exported by row export tags —, a form, sliders, an essay, a loop & merge block,
//! embedded data, identity metadata), sized like a long customer survey: about 45 answer
//! cells per response and about 2.7 KB per export row.
//!
//! Rows are written with `write!` into strings, not through `serde_json::Value`, so that a GiB
//! of them is generated in seconds; [`wide_response`] of the same `seq` is always the same
//! bytes.

use serde_json::{json, Map, Value};
use std::fmt::Write;

/// `LastModified` of [`wide_definition`]: before every generated response.
pub const WIDE_DEFINITION_VERSION: &str = "2025-01-02T03:04:05Z";

const SHOPPED: [(&str, &str, i64); 4] = [
    ("1", "In store", 10),
    ("2", "Online, collected in store", 20),
    ("3", "By phone", 30),
    ("4", "Other", 99),
];
const BOUGHT: [(&str, &str, &str); 8] = [
    ("1", "Groceries", "11"),
    ("2", "Bakery", "12"),
    ("3", "Household", "13"),
    ("4", "Garden", "14"),
    ("5", "Electronics", "15"),
    ("6", "Clothing", "16"),
    ("7", "Pharmacy", "17"),
    ("8", "Toys", "18"),
];
/// Agreement matrix (QID4): 12 statements, columns recoded -2…2.
const STATEMENTS: usize = 12;
const AGREE: [(&str, &str, i64); 5] = [
    ("1", "Strongly disagree", -2),
    ("2", "Disagree", -1),
    ("3", "Neither agree nor disagree", 0),
    ("4", "Agree", 1),
    ("5", "Strongly agree", 2),
];
/// Satisfaction matrix (QID7): 10 aspects exported by tag (`QID7_speed`), columns recoded
/// 5…1 (the first column is the best).
const ASPECTS: [&str; 10] = [
    "speed",
    "courtesy",
    "knowledge",
    "cleanliness",
    "prices",
    "choice",
    "queues",
    "parking",
    "signage",
    "checkout",
];
const SATISFIED: [(&str, &str, i64); 5] = [
    ("1", "5- Extremely Satisfied", 5),
    ("2", "4- Satisfied", 4),
    ("3", "3- Neutral", 3),
    ("4", "2- Dissatisfied", 2),
    ("5", "1- Not at all Satisfied", 1),
];
/// Single-choice yes/no questions QID11…QID16.
const YES_NO: [(&str, &str, i64); 2] = [("1", "Yes", 1), ("2", "No", 0)];
const DEPARTMENTS: [&str; 3] = ["Bakery", "Deli", "Pharmacy"];
const COMMENTS: [&str; 8] = [
    "Queues at the tills were long at lunchtime",
    "Friendly staff, found everything quickly",
    "The bakery ran out of bread by noon",
    "Parking was hard to find",
    "Clean store and helpful signs \u{2014} \"great\" visit",
    "Self checkout kept freezing",
    "Great prices on fresh produce",
    "Could not find the garden section",
];
const STORES: [&str; 6] = ["S01", "S02", "S03", "S04", "S05", "S06"];

/// The definition of the wide survey (the API's `result`).
pub fn wide_definition(survey_id: &str) -> Value {
    let object = |items: Vec<(String, Value)>| Value::Object(items.into_iter().collect());
    let options = |list: &[(&str, &str, i64)]| {
        object(
            list.iter()
                .map(|(id, l, _)| ((*id).to_string(), json!({"Display": l})))
                .collect(),
        )
    };
    let recodes = |list: &[(&str, &str, i64)]| {
        object(
            list.iter()
                .map(|(id, _, r)| ((*id).to_string(), json!(r.to_string())))
                .collect(),
        )
    };
    let mut questions = Map::new();
    let nps: Vec<Value> = (0..=10)
        .map(|i| json!({"Display": i.to_string()}))
        .collect();
    questions.insert(
        "QID1".into(),
        json!({"QuestionID": "QID1", "DataExportTag": "Q1", "QuestionType": "MC",
        "Selector": "NPS", "Choices": nps, "ChoiceDataExportTags": false}),
    );
    let mut shopped = options(&SHOPPED);
    shopped["4"]["TextEntry"] = json!("true");
    questions.insert(
        "QID2".into(),
        json!({"QuestionID": "QID2", "QuestionType": "MC", "Selector": "SAVR",
        "Choices": shopped, "RecodeValues": recodes(&SHOPPED), "ChoiceDataExportTags": false}),
    );
    questions.insert("QID3".into(), json!({"QuestionID": "QID3", "QuestionType": "MC", "Selector": "MAVR",
        "Choices": object(BOUGHT.iter().map(|(id, l, _)| ((*id).to_string(), json!({"Display": l}))).collect()),
        "RecodeValues": object(BOUGHT.iter().map(|(id, _, r)| ((*id).to_string(), json!(r))).collect())}));
    questions.insert("QID4".into(), json!({"QuestionID": "QID4", "QuestionType": "Matrix", "Selector": "Likert",
        "SubSelector": "SingleAnswer",
        "Choices": object((1..=STATEMENTS).map(|i| (i.to_string(), json!({"Display": format!("Statement {i}")}))).collect()),
        "Answers": options(&AGREE), "RecodeValues": recodes(&AGREE), "ChoiceDataExportTags": false}));
    questions.insert("QID7".into(), json!({"QuestionID": "QID7", "QuestionType": "Matrix", "Selector": "Likert",
        "SubSelector": "SingleAnswer",
        "Choices": object(ASPECTS.iter().enumerate().map(|(i, a)| ((i + 1).to_string(), json!({"Display": a}))).collect()),
        "ChoiceDataExportTags": object(ASPECTS.iter().enumerate().map(|(i, a)| ((i + 1).to_string(), json!(a))).collect()),
        "Answers": options(&SATISFIED), "RecodeValues": recodes(&SATISFIED)}));
    questions.insert(
        "QID8".into(),
        json!({"QuestionID": "QID8", "QuestionType": "TE", "Selector": "FORM",
        "Choices": {"1": {"Display": "Name"}, "2": {"Display": "Team"}, "3": {"Display": "Town"}}}),
    );
    questions.insert("QID10".into(), json!({"QuestionID": "QID10", "QuestionType": "Slider", "Selector": "HSLIDER",
        "Choices": {"1": {"Display": "Temperature"}, "2": {"Display": "Noise"}, "3": {"Display": "Light"}, "4": {"Display": "Music"}}}));
    for q in 11..=16 {
        questions.insert(
            format!("QID{q}"),
            json!({"QuestionID": format!("QID{q}"), "QuestionType": "MC",
            "Selector": "SAHR", "Choices": options(&YES_NO), "RecodeValues": recodes(&YES_NO)}),
        );
    }
    questions.insert(
        "QID5".into(),
        json!({"QuestionID": "QID5", "QuestionType": "TE", "Selector": "ESTB"}),
    );
    questions.insert(
        "QID6".into(),
        json!({"QuestionID": "QID6", "QuestionType": "MC", "Selector": "SAHR",
        "Choices": options(&YES_NO), "RecodeValues": recodes(&YES_NO)}),
    );
    json!({
      "SurveyID": survey_id, "SurveyName": "Store visit, long form (benchmark)", "SurveyStatus": "Active",
      "LastModified": WIDE_DEFINITION_VERSION, "Questions": questions,
      "Blocks": {
        "BL_main": {"Type": "Default", "ID": "BL_main", "BlockElements": []},
        "BL_loop": {"Type": "Standard", "ID": "BL_loop",
                    "Options": {"Looping": "Static"},
                    "BlockElements": [{"Type": "Question", "QuestionID": "QID6"}]}
      }
    })
}

/// SplitMix64: a cheap, well-mixed hash, so every response's answers are deterministic.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as exports write `recordedDate`.
fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// One export row of the wide survey, and how many `question_response` rows the decoder
/// makes of it (answered cells, one per selected choice, plus displayed-but-unanswered ones).
pub fn wide_response(seq: u64, recorded_ms: i64) -> (String, usize) {
    let mut r = mix(seq);
    let mut next = |bound: u64| {
        r = mix(r);
        r % bound
    };
    let id = format!("R_wide{seq:011}");
    let (mut values, mut labels, mut displayed) = (String::new(), String::new(), String::new());
    let mut cells = 0usize;
    // Writes into a String cannot fail.
    let shown = |key: &str, displayed: &mut String| {
        let _ = write!(displayed, "\"{key}\",");
    };

    let nps = match next(100) {
        0..=9 => next(7),
        10..=34 => 7 + next(2),
        _ => 9 + next(2),
    };
    let group = match nps {
        0..=6 => (1, "Detractor"),
        7 | 8 => (2, "Passive"),
        _ => (3, "Promoter"),
    };
    let _ = write!(values, "\"QID1\":{nps},\"QID1_NPS_GROUP\":{},", group.0);
    let _ = write!(
        labels,
        "\"QID1\":\"{nps}\",\"QID1_NPS_GROUP\":\"{}\",",
        group.1
    );
    shown("QID1", &mut displayed);
    shown("QID1_NPS_GROUP", &mut displayed);
    cells += 2;

    let (cid, clabel, crecode) = SHOPPED[next(4) as usize];
    let _ = write!(values, "\"QID2\":{crecode},");
    let _ = write!(labels, "\"QID2\":\"{clabel}\",");
    shown("QID2", &mut displayed);
    cells += 1;
    if cid == "4" {
        let _ = write!(values, "\"QID2_4_TEXT\":\"delivery van #{}\",", next(50));
        shown("QID2_4_TEXT", &mut displayed);
        cells += 1;
    }

    let picks: Vec<_> = BOUGHT.iter().filter(|_| next(100) < 30).take(4).collect();
    let picks = if picks.is_empty() {
        vec![&BOUGHT[0]]
    } else {
        picks
    };
    let codes: Vec<String> = picks.iter().map(|p| format!("\"{}\"", p.2)).collect();
    let names: Vec<String> = picks.iter().map(|p| format!("\"{}\"", p.1)).collect();
    let _ = write!(values, "\"QID3\":[{}],", codes.join(","));
    let _ = write!(labels, "\"QID3\":[{}],", names.join(","));
    shown("QID3", &mut displayed);
    cells += picks.len();

    let lean = (nps / 4).min(2);
    for row in 1..=STATEMENTS {
        let key = format!("QID4_{row}");
        shown(&key, &mut displayed);
        cells += 1;
        if next(100) < 5 {
            continue; // shown, skipped
        }
        let (_, label, recode) = AGREE[((next(3) + lean).min(4)) as usize];
        let _ = write!(values, "\"{key}\":{recode},");
        let _ = write!(labels, "\"{key}\":\"{label}\",");
    }
    for aspect in ASPECTS {
        let key = format!("QID7_{aspect}");
        shown(&key, &mut displayed);
        cells += 1;
        if next(100) < 5 {
            continue;
        }
        let (_, label, recode) = SATISFIED[((next(3) + 2 - lean).min(4)) as usize];
        let _ = write!(values, "\"{key}\":{recode},");
        let _ = write!(labels, "\"{key}\":\"{label}\",");
    }
    for (field, text) in [
        (1, format!("Person {}", next(1000))),
        (2, format!("Team {}", next(20))),
        (3, "Leeds".to_string()),
    ] {
        let _ = write!(values, "\"QID8_{field}\":\"{text}\",");
        shown(&format!("QID8_{field}"), &mut displayed);
        cells += 1;
    }
    for item in 1..=4 {
        let _ = write!(values, "\"QID10_{item}\":{}.5,", next(100));
        shown(&format!("QID10_{item}"), &mut displayed);
        cells += 1;
    }
    for q in 11..=16 {
        let (_, label, recode) = YES_NO[next(2) as usize];
        let _ = write!(values, "\"QID{q}\":{recode},");
        let _ = write!(labels, "\"QID{q}\":\"{label}\",");
        shown(&format!("QID{q}"), &mut displayed);
        cells += 1;
    }
    shown("QID5_TEXT", &mut displayed);
    cells += 1;
    if next(100) < 50 {
        let c = COMMENTS[next(8) as usize];
        let _ = write!(values, "\"QID5_TEXT\":{},", json!(c));
    }
    for (i, _) in DEPARTMENTS.iter().enumerate() {
        let key = format!("{}_QID6", i + 1);
        let (_, label, recode) = YES_NO[next(2) as usize];
        let _ = write!(values, "\"{key}\":{recode},");
        let _ = write!(labels, "\"{key}\":\"{label}\",");
        shown(&key, &mut displayed);
        cells += 1;
    }

    let rec = rfc3339_ms(recorded_ms);
    let started = rfc3339_ms(recorded_ms - 1000 * (60 + next(900) as i64));
    let store = STORES[next(6) as usize];
    displayed.pop();
    let line = format!(
        concat!(
            r#"{{"responseId":"{id}","values":{{"startDate":"{started}","endDate":"{rec}","status":0,"#,
            r#""ipAddress":"203.0.113.{ip}","progress":100,"duration":{duration},"finished":1,"#,
            r#""recordedDate":"{rec}","_recordId":"{id}","locationLatitude":"51.5072","#,
            r#""locationLongitude":"-0.1276","distributionChannel":"email","userLanguage":"EN","#,
            r#""recipientEmail":"visitor{seq}@example.com","recipientFirstName":"Visitor","#,
            r#""recipientLastName":"Number{seq}","externalDataReference":"EXT-{seq}","#,
            r#"{values}"Store":"{store}","Region":"{region}","Tier":"gold","Campaign":"spring-{camp}"}},"#,
            r#""labels":{{"status":"IP Address","finished":"True",{labels}"distributionChannel":"Email"}},"#,
            r#""displayedFields":[{displayed}],"displayedValues":{{"QID1":[0,1,2,3,4,5,6,7,8,9,10],"#,
            r#""QID4_1":[-2,-1,0,1,2]}}}}"#
        ),
        id = id,
        started = started,
        rec = rec,
        ip = seq % 250 + 1,
        duration = 60 + seq % 900,
        seq = seq,
        values = values,
        store = store,
        region = if store > "S03" { "South" } else { "North" },
        camp = seq % 4,
        labels = labels,
        displayed = displayed,
    );
    (line, cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_json_deterministic_and_wide() {
        for seq in 0..200 {
            let (line, cells) = wide_response(seq, 1_767_600_000_000 + seq as i64 * 1000);
            assert_eq!(
                line,
                wide_response(seq, 1_767_600_000_000 + seq as i64 * 1000).0
            );
            let v: Value = serde_json::from_str(&line).expect("JSON");
            assert!(v["values"]["QID3"].is_array());
            assert!(cells >= 40, "{cells} cells");
            assert!((2000..3500).contains(&line.len()), "{} bytes", line.len());
        }
        assert!(wide_definition("SV_x")["Questions"]["QID7"]["ChoiceDataExportTags"].is_object());
    }
}
