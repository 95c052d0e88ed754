//! One exported response row (a line of an export blob) → the rows of `survey_response`,
//! `question_response` and `response_embedded_data` (reference `analytics-layer.md` §3.1, §3.4),
//! decoded with the definition snapshot valid when the response was recorded.
//!
//! Rules: a multi-select array explodes to one row per choice; `QIDn_k` of a matrix is row `k`
//! (by export tag, then id) with the column code mapped to its recode; `_TEXT` is free text,
//! `QIDn_k_TEXT` the "other" text of choice `k`; NPS 0–10 and `_NPS_GROUP`; a `{loop}_` prefix
//! is the loop id; Text iQ keys become `textiq_*` fields. Nothing is dropped: a key the
//! definition does not know is kept raw as `unmapped`, and without a definition every key is
//! kept as `definition_missing`, so a rebuild decodes it once a snapshot exists.
//!
//! Privacy ([`Policy`]): identity fields never reach a row unless the survey asks, and then
//! only as a keyed hash; embedded data by allow-list; free text droppable.

use super::definition::{micros, Choice, Definitions, Question, QuestionKind, SurveyModel};
pub use super::privacy::{identity_hash, IdentityField, Policy};
use super::rows::{
    DecodeStatus, DecodedResponse, EmbeddedDataRow, Micros, QuestionResponseRow, SurveyResponseRow,
};
use serde_json::{Map, Value};

/// Where the row came from.
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    pub survey_id: &'a str,
    pub exported_at: Micros,
    pub source_blob: &'a str,
}

/// A line that is not an exported response. Names the blob and the field, never a value.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{blob}: not a JSON object: {reason}")]
    NotJson { blob: String, reason: String },
    #[error("{blob}: response {response_id:?} has no valid {field}")]
    Missing {
        blob: String,
        response_id: String,
        field: &'static str,
    },
}

/// Response metadata keys in `values` (not answers, not embedded data).
const METADATA: &[&str] = &[
    "startDate",
    "endDate",
    "status",
    "ipAddress",
    "progress",
    "duration",
    "finished",
    "recordedDate",
    "_recordId",
    "locationLatitude",
    "locationLongitude",
    "distributionChannel",
    "userLanguage",
    "recipientLastName",
    "recipientFirstName",
    "recipientEmail",
    "externalDataReference",
];

/// Text iQ enrichment suffixes (`QIDn_TEXT_<hash><Metric>`) → `field`; longest first.
const TEXT_IQ: &[(&str, &str)] = &[
    ("TopicSenScore", "textiq_topic_score"),
    ("TopicSenLabel", "textiq_topic_sentiment"),
    ("ParTopics", "textiq_parent_topic"),
    ("Sentiment", "textiq_sentiment"),
    ("SenScore", "textiq_score"),
    ("Topics", "textiq_topic"),
];

pub fn decode(
    line: &[u8],
    ctx: &RowContext<'_>,
    definitions: &Definitions,
    policy: &Policy,
) -> Result<DecodedResponse, DecodeError> {
    let row: Map<String, Value> =
        serde_json::from_slice(line).map_err(|e| DecodeError::NotJson {
            blob: ctx.source_blob.to_string(),
            reason: e.to_string(),
        })?;
    let missing = |response_id: &str, field| DecodeError::Missing {
        blob: ctx.source_blob.to_string(),
        response_id: response_id.chars().take(64).collect(),
        field,
    };
    let response_id = row
        .get("responseId")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("", "responseId"))?
        .to_string();
    let empty = Map::new();
    let values = row
        .get("values")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let labels = row
        .get("labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let displayed: Vec<&str> = row
        .get("displayedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let recorded_at = values
        .get("recordedDate")
        .and_then(Value::as_str)
        .and_then(micros)
        .ok_or_else(|| missing(&response_id, "recordedDate"))?;

    let hashed = |field: IdentityField| -> Option<String> {
        let key = policy.hash_key.as_ref()?;
        if !policy.identity.contains(&field) {
            return None;
        }
        let v = values.get(field.export_key())?;
        let v = match v {
            Value::String(s) if !s.trim().is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(identity_hash(key, field, &v))
    };
    let response = SurveyResponseRow {
        survey_id: ctx.survey_id.to_string(),
        response_id: response_id.clone(),
        exported_at: ctx.exported_at,
        source_blob: ctx.source_blob.to_string(),
        recorded_at,
        started_at: values
            .get("startDate")
            .and_then(Value::as_str)
            .and_then(micros),
        ended_at: values
            .get("endDate")
            .and_then(Value::as_str)
            .and_then(micros),
        status: values.get("status").and_then(int),
        progress: values.get("progress").and_then(int),
        duration_s: values.get("duration").and_then(int),
        finished: values.get("finished").and_then(int) == Some(1),
        distribution_channel: values
            .get("distributionChannel")
            .and_then(Value::as_str)
            .map(String::from),
        user_language: values
            .get("userLanguage")
            .and_then(Value::as_str)
            .map(String::from),
        ip_address_hash: hashed(IdentityField::IpAddress),
        recipient_email_hash: hashed(IdentityField::RecipientEmail),
        external_reference_hash: hashed(IdentityField::ExternalDataReference),
        recipient_first_name_hash: hashed(IdentityField::RecipientFirstName),
        recipient_last_name_hash: hashed(IdentityField::RecipientLastName),
        location_latitude_hash: hashed(IdentityField::LocationLatitude),
        location_longitude_hash: hashed(IdentityField::LocationLongitude),
    };

    let cells = Cells {
        survey_id: ctx.survey_id,
        response_id: &response_id,
        recorded_at,
        exported_at: ctx.exported_at,
        model: definitions.model_at(recorded_at),
        policy,
    };
    // A set: a wide survey shows dozens of keys, and a scan per key made decoding quadratic.
    let shown_set: std::collections::HashSet<&str> = displayed.iter().copied().collect();
    let mut out = Vec::with_capacity(values.len() + displayed.len());
    let mut embedded = Vec::new();
    for (key, value) in values {
        if METADATA.contains(&key.as_str()) {
            continue;
        }
        if split_key(key).is_none() {
            if policy.embedded_allow.iter().any(|k| k == key) {
                embedded.push(EmbeddedDataRow {
                    survey_id: ctx.survey_id.to_string(),
                    response_id: response_id.clone(),
                    exported_at: ctx.exported_at,
                    key: key.clone(),
                    value: text_of(value),
                });
            }
            continue;
        }
        let shown = shown_set.contains(key.as_str());
        cells.push(&mut out, key, Some(value), labels.get(key), shown);
    }
    // Shown but not answered: the denominator of response rates.
    for key in displayed {
        if !values.contains_key(key) && split_key(key).is_some() {
            cells.push(&mut out, key, None, None, true);
        }
    }
    Ok(DecodedResponse {
        response,
        cells: out,
        embedded,
    })
}

/// What follows `QIDn_` in a key.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Form<'a> {
    /// `QIDn`: the answer.
    Value,
    /// `QIDn_k`: matrix row, form field or slider item `k`.
    Item(&'a str),
    /// `QIDn_TEXT`.
    Text,
    /// `QIDn_k_TEXT`: text typed into choice `k`.
    ChoiceText(&'a str),
    /// `QIDn_NPS_GROUP`.
    NpsGroup,
    /// `QIDn_TEXT_<hash><Metric>`.
    TextIq(&'static str),
    /// Anything else (`_DO`, `_RANK`, side by side, …): kept raw.
    Other,
}

fn form_of(rest: &str) -> Form<'_> {
    match rest {
        "" => return Form::Value,
        "TEXT" => return Form::Text,
        "NPS_GROUP" => return Form::NpsGroup,
        _ => {}
    }
    if let Some(tail) = rest.strip_prefix("TEXT_") {
        return TEXT_IQ
            .iter()
            .find(|(suffix, _)| tail.ends_with(suffix))
            .map_or(Form::Other, |(_, field)| Form::TextIq(field));
    }
    match rest.split_once('_') {
        None => Form::Item(rest),
        Some((k, "TEXT")) if !k.is_empty() => Form::ChoiceText(k),
        Some(_) => Form::Other,
    }
}

/// The response-level context every cell of one response shares.
struct Cells<'a> {
    survey_id: &'a str,
    response_id: &'a str,
    recorded_at: Micros,
    exported_at: Micros,
    model: Option<&'a SurveyModel>,
    policy: &'a Policy,
}

/// One decoded value: what a rule sets on top of the key's row.
#[derive(Default)]
struct Decoded {
    sub_key: Option<String>,
    code: Option<String>,
    value_num: Option<f64>,
    value_text: Option<String>,
    mapped: bool,
}

impl Cells<'_> {
    /// The rows of one key: one, or one per element of an array value.
    fn push(
        &self,
        out: &mut Vec<QuestionResponseRow>,
        key: &str,
        value: Option<&Value>,
        label: Option<&Value>,
        displayed: bool,
    ) {
        let Some((loop_id, question_id, rest)) = split_key(key) else {
            return;
        };
        let form = form_of(rest);
        let question = self.model.and_then(|m| m.questions.get(question_id));
        let field = match form {
            Form::Text | Form::ChoiceText(_) => "text",
            Form::NpsGroup => "nps_group",
            Form::TextIq(f) => f,
            _ => match question.map(|q| q.kind) {
                Some(QuestionKind::Form | QuestionKind::TextEntry) => "text",
                _ => "value",
            },
        };
        let field = match form {
            Form::ChoiceText(_) => "choice_text",
            _ => field,
        };
        let value = value.filter(|v| !crate::json::is_blank(v));
        let pieces: Vec<(Option<i32>, Option<&Value>, Option<&str>)> = match value {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let l = label.and_then(|l| l.get(i)).and_then(Value::as_str);
                    (i32::try_from(i).ok(), Some(v), l)
                })
                .collect(),
            v => vec![(None, v, label.and_then(Value::as_str))],
        };
        for (item_index, v, label) in pieces {
            let d = self.rule(question, form, v, label);
            let decode_status = match (self.model, question) {
                (None, _) => DecodeStatus::DefinitionMissing,
                (Some(_), Some(_)) if d.mapped => DecodeStatus::Ok,
                _ => DecodeStatus::Unmapped,
            };
            out.push(QuestionResponseRow {
                survey_id: self.survey_id.to_string(),
                response_id: self.response_id.to_string(),
                recorded_at: self.recorded_at,
                exported_at: self.exported_at,
                definition_version: self.model.map(|m| m.version.clone()),
                export_key: key.to_string(),
                loop_id: loop_id.map(String::from),
                question_id: question_id.to_string(),
                sub_key: d.sub_key,
                field: field.to_string(),
                item_index,
                code: d.code,
                value_num: d.value_num,
                value_text: d.value_text,
                label: label.map(String::from),
                displayed,
                answered: v.is_some(),
                decode_status,
            });
        }
    }

    /// §3.4 for one value (`None`: displayed, not answered).
    fn rule(
        &self,
        question: Option<&Question>,
        form: Form<'_>,
        v: Option<&Value>,
        label: Option<&str>,
    ) -> Decoded {
        let code = v.map(text_of);
        let raw = || Decoded {
            sub_key: match form {
                Form::Item(k) | Form::ChoiceText(k) => Some(k.to_string()),
                _ => None,
            },
            code: code.clone(),
            value_num: v.and_then(number),
            ..Decoded::default()
        };
        let Some(q) = question else {
            // No definition (or an unknown question): kept as exported; text stays text.
            let mut d = raw();
            if matches!(form, Form::Text | Form::ChoiceText(_)) {
                d.code = None;
                d.value_num = None;
                d.value_text = self.text(v);
            }
            return d;
        };
        match (form, q.kind) {
            (Form::Value, QuestionKind::Nps) => Decoded {
                value_num: v.and_then(number).filter(|n| (0.0..=10.0).contains(n)),
                mapped: v.is_none()
                    || v.and_then(number)
                        .is_some_and(|n| (0.0..=10.0).contains(&n)),
                code,
                ..Decoded::default()
            },
            (Form::NpsGroup, QuestionKind::Nps) => Decoded {
                value_num: v.and_then(number).filter(|n| [1.0, 2.0, 3.0].contains(n)),
                mapped: v.is_none()
                    || v.and_then(number)
                        .is_some_and(|n| [1.0, 2.0, 3.0].contains(&n)),
                code,
                ..Decoded::default()
            },
            (Form::Value, QuestionKind::SingleChoice | QuestionKind::MultiChoice) => {
                let choice = code.as_deref().and_then(|c| q.choice(c, label));
                coded(code.clone(), choice, v.is_none())
            }
            (Form::Item(k), QuestionKind::Matrix) => {
                let row = q.item(k);
                let column = code.as_deref().and_then(|c| q.answer(c, label));
                let mut d = coded(code.clone(), column, v.is_none());
                d.mapped &= row.is_some();
                d.sub_key = Some(row.map_or(k, |r| r.key.as_str()).to_string());
                d
            }
            (Form::Item(k), QuestionKind::Form) => Decoded {
                sub_key: Some(q.item(k).map_or(k, |r| r.key.as_str()).to_string()),
                value_text: self.text(v),
                mapped: q.item(k).is_some(),
                ..Decoded::default()
            },
            (Form::Item(k), QuestionKind::Slider) => Decoded {
                sub_key: Some(q.item(k).map_or(k, |r| r.key.as_str()).to_string()),
                value_num: v.and_then(number),
                mapped: q.item(k).is_some(),
                code,
                ..Decoded::default()
            },
            (Form::Value, QuestionKind::Slider | QuestionKind::Other) => Decoded {
                mapped: true,
                ..raw()
            },
            (Form::Text, _) | (Form::Value, QuestionKind::TextEntry | QuestionKind::Form) => {
                Decoded {
                    value_text: self.text(v),
                    mapped: true,
                    ..Decoded::default()
                }
            }
            (Form::ChoiceText(k), _) => {
                let choice = q.item(k);
                Decoded {
                    sub_key: Some(choice.map_or(k, |c| c.key.as_str()).to_string()),
                    value_text: self.text(v),
                    mapped: choice.is_some(),
                    ..Decoded::default()
                }
            }
            (Form::TextIq(_), _) => Decoded {
                value_text: v.and_then(Value::as_str).map(String::from),
                value_num: v.and_then(number),
                mapped: true,
                code,
                ..Decoded::default()
            },
            _ => raw(),
        }
    }

    /// Free text, when the survey keeps it.
    fn text(&self, v: Option<&Value>) -> Option<String> {
        self.policy.free_text.then(|| v.map(text_of)).flatten()
    }
}

/// A coded answer: the option it names gives the analysis value.
fn coded(code: Option<String>, option: Option<&Choice>, unanswered: bool) -> Decoded {
    Decoded {
        value_num: option.and_then(Choice::numeric),
        mapped: unanswered || option.is_some(),
        code,
        ..Decoded::default()
    }
}

/// `[loop_]QIDn[_rest]` → (loop, `QIDn`, rest); `None` for a key that is not a question's.
fn split_key(key: &str) -> Option<(Option<&str>, &str, &str)> {
    let at = key.find("QID")?;
    let loop_id = match at {
        0 => None,
        _ => Some(key[..at].strip_suffix('_')?).filter(|l| !l.is_empty()),
    };
    if at > 0 && loop_id.is_none() {
        return None;
    }
    let tail = &key[at + 3..];
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (question_id, rest) = key[at..].split_at(3 + digits);
    let rest = match rest.strip_prefix('_') {
        Some(r) => r,
        None if rest.is_empty() => "",
        // `QID1#2_1` (side by side) keeps its column in the question id.
        None => return Some((loop_id, &key[at..], "")),
    };
    Some((loop_id, question_id, rest))
}

/// A response metadata or identity key of `values`.
pub(crate) fn is_metadata(key: &str) -> bool {
    METADATA.contains(&key)
}

/// A key the decoder reads as a question's (`[loop_]QIDn…`).
pub(crate) fn is_question_key(key: &str) -> bool {
    split_key(key).is_some()
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str()?.trim().parse().ok())
}

/// A number, or a string holding one (multi-select codes are strings).
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str()?.trim().parse().ok())
        .filter(|f: &f64| f.is_finite())
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::definition::Definition;
    use crate::secrets::Secret;
    use aws_lc_rs::hmac;
    use serde_json::json;

    const CTX: RowContext<'static> = RowContext {
        survey_id: "SV_1",
        exported_at: 1,
        source_blob: "b",
    };

    /// A definition with every question type of the reference's real rows (§3.1, §3.2).
    fn definitions() -> Definitions {
        let raw = json!({
          "SurveyID": "SV_1", "LastModified": "2024-07-01T00:00:00Z",
          "Questions": {
            "QID3": {"QuestionType": "MC", "Selector": "NPS",
                     "Choices": [{"Display":"0"},{"Display":"1"},{"Display":"2"},{"Display":"3"},
                                 {"Display":"4"},{"Display":"5"},{"Display":"6"},{"Display":"7"},
                                 {"Display":"8"},{"Display":"9"},{"Display":"10"}]},
            "QID7": {"QuestionType": "MC", "Selector": "MAVR",
                     "Choices": {"1": {"Display": "Covid-19 Health & Safety"}, "2": {"Display": "Staff"},
                                 "3": {"Display": "Price"}},
                     "RecodeValues": {"1": "9", "2": "2", "3": "30"}},
            "QID18": {"QuestionType": "MC", "Selector": "SAVR",
                      "Choices": {"1": {"Display": "Web"}, "4": {"Display": "Other", "TextEntry": "true"}}},
            "QID49": {"QuestionType": "Matrix", "Selector": "Likert", "SubSelector": "SingleAnswer",
                      "Choices": {"1": {"Display": "Speed"}, "2": {"Display": "Courtesy"}},
                      "ChoiceDataExportTags": {"1": "1", "2": "courtesy"},
                      "Answers": {"1": {"Display": "5- Extremely Satisfied"}, "2": {"Display": "4"},
                                  "3": {"Display": "3"}, "4": {"Display": "2"},
                                  "5": {"Display": "1- Not at all Satisfied"}},
                      "RecodeValues": {"1": "5", "2": "4", "3": "3", "4": "2", "5": "1"}},
            "QID30": {"QuestionType": "TE", "Selector": "FORM",
                      "Choices": {"1": {"Display": "Name"}, "2": {"Display": "Team"}}},
            "QID50": {"QuestionType": "TE", "Selector": "ESTB"},
            "QID69": {"QuestionType": "TE", "Selector": "ESTB"},
            "QID80": {"QuestionType": "Slider", "Selector": "HSLIDER",
                      "Choices": {"1": {"Display": "Temperature"}}}
          },
          "Blocks": {"BL_1": {"Type": "Default", "BlockElements": []}}
        });
        Definitions::new(vec![Definition::from_raw("SV_1", raw).expect("definition")])
    }

    fn policy() -> Policy {
        Policy {
            embedded_allow: vec!["Team".into()],
            free_text: true,
            ..Policy::default()
        }
    }

    /// A row of the reference's shape around `values`/`labels`.
    fn line(values: Value, labels: Value, displayed: &[&str]) -> Vec<u8> {
        let mut v = json!({"recordedDate": "2024-07-08T16:00:23.994Z", "finished": 1,
                           "ipAddress": "203.0.113.9", "recipientEmail": "A.Person@Example.com",
                           "locationLatitude": "47.6", "locationLongitude": "-122.3",
                           "recipientFirstName": "Ann", "recipientLastName": "Person",
                           "externalDataReference": "EXT-1"});
        if let (Some(o), Some(add)) = (v.as_object_mut(), values.as_object()) {
            o.extend(add.clone());
        }
        json!({"responseId": "R_1", "values": v, "labels": labels, "displayedFields": displayed})
            .to_string()
            .into_bytes()
    }

    /// (export_key, sub_key, field, item_index, code, value_num, value_text, status) of a cell.
    type Cell<S> = (
        S,
        Option<S>,
        S,
        Option<i32>,
        Option<S>,
        Option<f64>,
        Option<S>,
        DecodeStatus,
    );
    type Want = Cell<&'static str>;

    fn got(c: &QuestionResponseRow) -> Cell<String> {
        (
            c.export_key.clone(),
            c.sub_key.clone(),
            c.field.clone(),
            c.item_index,
            c.code.clone(),
            c.value_num,
            c.value_text.clone(),
            c.decode_status,
        )
    }

    #[test]
    fn every_rule_of_section_3_4() {
        use DecodeStatus::{Ok as K, Unmapped as U};
        #[rustfmt::skip]
        let cases: Vec<(&str, Value, Value, Vec<Want>)> = vec![
            ("NPS 0-10", json!({"QID3": 10}), json!({}),
             vec![("QID3", None, "value", None, Some("10"), Some(10.0), None, K)]),
            ("NPS out of range is unmapped", json!({"QID3": 11}), json!({}),
             vec![("QID3", None, "value", None, Some("11"), None, None, U)]),
            ("NPS group", json!({"QID3_NPS_GROUP": 3}), json!({"QID3_NPS_GROUP": "Promoter"}),
             vec![("QID3_NPS_GROUP", None, "nps_group", None, Some("3"), Some(3.0), None, K)]),
            ("multi-select explodes, codes are recodes", json!({"QID7": ["9", "2"]}),
             json!({"QID7": ["Covid-19 Health & Safety", "Staff"]}),
             vec![("QID7", None, "value", Some(0), Some("9"), Some(9.0), None, K),
                  ("QID7", None, "value", Some(1), Some("2"), Some(2.0), None, K)]),
            ("a code no choice has is unmapped, kept", json!({"QID7": ["77"]}), json!({}),
             vec![("QID7", None, "value", Some(0), Some("77"), None, None, U)]),
            ("single choice without recodes: the id", json!({"QID18": 4}), json!({"QID18": "Other"}),
             vec![("QID18", None, "value", None, Some("4"), Some(4.0), None, K)]),
            ("other, specify text of choice k", json!({"QID18_4_TEXT": "by phone"}), json!({}),
             vec![("QID18_4_TEXT", Some("4"), "choice_text", None, None, None, Some("by phone"), K)]),
            ("matrix row by id, column code is its recode", json!({"QID49_1": 1}),
             json!({"QID49_1": "1- Not at all Satisfied"}),
             vec![("QID49_1", Some("1"), "value", None, Some("1"), Some(1.0), None, K)]),
            ("matrix row by export tag; the label picks the column", json!({"QID49_courtesy": 5}),
             json!({"QID49_courtesy": "5- Extremely Satisfied"}),
             vec![("QID49_courtesy", Some("2"), "value", None, Some("5"), Some(5.0), None, K)]),
            ("matrix: without a label the recode wins over the id", json!({"QID49_1": 2}), json!({}),
             vec![("QID49_1", Some("1"), "value", None, Some("2"), Some(2.0), None, K)]),
            ("matrix: unknown row k is unmapped", json!({"QID49_9": 3}), json!({}),
             vec![("QID49_9", Some("9"), "value", None, Some("3"), Some(3.0), None, U)]),
            ("form field k", json!({"QID30_2": "Blue"}), json!({}),
             vec![("QID30_2", Some("2"), "text", None, None, None, Some("Blue"), K)]),
            ("text entry", json!({"QID50_TEXT": "hello"}), json!({}),
             vec![("QID50_TEXT", None, "text", None, None, None, Some("hello"), K)]),
            ("slider item", json!({"QID80_1": 21.5}), json!({}),
             vec![("QID80_1", Some("1"), "value", None, Some("21.5"), Some(21.5), None, K)]),
            ("Text iQ sentiment", json!({"QID69_TEXT_a1b2Sentiment": "Mixed"}), json!({}),
             vec![("QID69_TEXT_a1b2Sentiment", None, "textiq_sentiment", None, Some("Mixed"), None, Some("Mixed"), K)]),
            ("Text iQ topics explode", json!({"QID69_TEXT_a1b2Topics": ["Wait", "Staff"]}), json!({}),
             vec![("QID69_TEXT_a1b2Topics", None, "textiq_topic", Some(0), Some("Wait"), None, Some("Wait"), K),
                  ("QID69_TEXT_a1b2Topics", None, "textiq_topic", Some(1), Some("Staff"), None, Some("Staff"), K)]),
            ("Text iQ score", json!({"QID69_TEXT_a1b2SenScore": -2}), json!({}),
             vec![("QID69_TEXT_a1b2SenScore", None, "textiq_score", None, Some("-2"), Some(-2.0), None, K)]),
            ("unknown question is unmapped, kept raw", json!({"QID404_2": 7}), json!({}),
             vec![("QID404_2", Some("2"), "value", None, Some("7"), Some(7.0), None, U)]),
            ("display order keys are kept raw", json!({"QID7_DO": ["1", "2"]}), json!({}),
             vec![("QID7_DO", Some("DO"), "value", Some(0), Some("1"), Some(1.0), None, U),
                  ("QID7_DO", Some("DO"), "value", Some(1), Some("2"), Some(2.0), None, U)]),
            ("empty multi-select is one unanswered cell", json!({"QID7": []}), json!({}),
             vec![("QID7", None, "value", None, None, None, None, K)]),
        ];
        let defs = definitions();
        for (name, values, labels, want) in cases {
            let d = decode(&line(values, labels, &[]), &CTX, &defs, &policy()).expect(name);
            let got: Vec<_> = d.cells.iter().map(got).collect();
            let want: Vec<_> = want
                .iter()
                .map(|w| {
                    (
                        w.0.to_string(),
                        w.1.map(String::from),
                        w.2.to_string(),
                        w.3,
                        w.4.map(String::from),
                        w.5,
                        w.6.map(String::from),
                        w.7,
                    )
                })
                .collect();
            assert_eq!(got, want, "{name}");
            assert!(
                d.cells
                    .iter()
                    .all(|c| c.definition_version.as_deref() == Some("2024-07-01T00:00:00Z")),
                "{name}"
            );
        }
    }

    #[test]
    fn loop_prefixes_become_loop_ids() {
        let values = json!({"2_QID49_courtesy": 4, "2_QID18_4_TEXT": "x", "1_QID3": 7});
        let d = decode(
            &line(values, json!({}), &["2_QID49_courtesy", "1_QID50_TEXT"]),
            &CTX,
            &definitions(),
            &policy(),
        )
        .unwrap();
        let by_key = |k: &str| d.cells.iter().find(|c| c.export_key == k).unwrap();
        let m = by_key("2_QID49_courtesy");
        assert_eq!(
            (
                m.loop_id.as_deref(),
                m.question_id.as_str(),
                m.sub_key.as_deref(),
                m.value_num
            ),
            (Some("2"), "QID49", Some("2"), Some(4.0))
        );
        assert!(m.displayed && m.answered);
        assert_eq!(by_key("2_QID18_4_TEXT").field, "choice_text");
        assert_eq!(by_key("1_QID3").value_num, Some(7.0));
        // Displayed but not answered: a row for the response-rate denominator.
        let shown = by_key("1_QID50_TEXT");
        assert!(shown.displayed && !shown.answered && shown.value_text.is_none());
        assert_eq!(shown.decode_status, DecodeStatus::Ok);
    }

    #[test]
    fn privacy_identity_embedded_and_free_text() {
        let values = json!({"QID50_TEXT": "my phone is 555", "QID30_1": "Ann Person", "QID18_4_TEXT": "t",
                            "Team": "A", "Email": "a@example.com"});
        let raw = line(values, json!({}), &[]);
        // Default: no identity, only allow-listed embedded data, text kept when asked.
        let d = decode(&raw, &CTX, &definitions(), &policy()).unwrap();
        let text = String::from_utf8_lossy(&raw).to_string();
        let dump = format!("{d:?}");
        for secret in [
            "203.0.113.9",
            "A.Person@Example.com",
            "47.6",
            "-122.3",
            "EXT-1",
            "a@example.com",
        ] {
            assert!(text.contains(secret));
            assert!(!dump.contains(secret), "{secret} reached the rows");
        }
        assert_eq!(d.embedded.len(), 1);
        assert_eq!(
            (d.embedded[0].key.as_str(), d.embedded[0].value.as_str()),
            ("Team", "A")
        );
        assert!(d.response.ip_address_hash.is_none() && d.response.recipient_email_hash.is_none());
        // Free text dropped: no text anywhere in the cells, the cells still there.
        let no_text = Policy {
            free_text: false,
            ..policy()
        };
        let d = decode(&raw, &CTX, &definitions(), &no_text).unwrap();
        assert_eq!(d.cells.len(), 3);
        let dump = format!("{:?}", d.cells);
        for t in ["my phone is 555", "Ann Person"] {
            assert!(!dump.contains(t), "{t} kept although free text is off");
        }
        // Asked for, but no key: nothing. With a key: a keyed hash, never the value.
        let asked = Policy {
            identity: IdentityField::ALL.to_vec(),
            ..policy()
        };
        let d = decode(&raw, &CTX, &definitions(), &asked).unwrap();
        assert!(d.response.recipient_email_hash.is_none());
        let key = Secret::new("k1");
        let keyed = Policy {
            hash_key: Some(key.clone()),
            ..asked
        };
        let d = decode(&raw, &CTX, &definitions(), &keyed).unwrap();
        let r = &d.response;
        assert_eq!(
            r.recipient_email_hash.as_deref(),
            Some(
                identity_hash(&key, IdentityField::RecipientEmail, "a.person@example.com").as_str()
            )
        );
        for h in [
            &r.ip_address_hash,
            &r.external_reference_hash,
            &r.recipient_first_name_hash,
            &r.recipient_last_name_hash,
            &r.location_latitude_hash,
            &r.location_longitude_hash,
        ] {
            assert_eq!(h.as_ref().map(String::len), Some(64));
        }
        let dump = format!("{d:?}");
        for secret in [
            "203.0.113.9",
            "A.Person@Example.com",
            "EXT-1",
            "Ann\"",
            "47.6",
        ] {
            assert!(!dump.contains(secret), "{secret} reached the rows");
        }
    }

    #[test]
    fn identity_hash_is_keyed_and_normalised() {
        let (a, b) = (Secret::new("key-a"), Secret::new("key-b"));
        let f = IdentityField::RecipientEmail;
        // RFC 4231-style check against an independent HMAC: the bytes are HMAC-SHA256.
        let h = identity_hash(&a, f, " X@Example.COM ");
        assert_eq!(h, identity_hash(&a, f, "x@example.com"));
        assert_ne!(h, identity_hash(&b, f, "x@example.com"), "the key matters");
        assert_ne!(
            h,
            identity_hash(&a, IdentityField::ExternalDataReference, "x@example.com")
        );
        // External references are case-sensitive ids: not lower-cased.
        let e = IdentityField::ExternalDataReference;
        assert_ne!(identity_hash(&a, e, "Ab"), identity_hash(&a, e, "ab"));
        // Known answer: HMAC-SHA256("key-a", "recipientEmail\0x@example.com").
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"key-a"),
            b"recipientEmail\0x@example.com",
        );
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(h, hex);
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    proptest::proptest! {
        /// Whatever keys and values a row holds, decoding never panics, and every key of
        /// the row that looks like a question's is in the cells (nothing dropped).
        #[test]
        fn arbitrary_rows_never_panic_and_keep_every_question_key(
            values in proptest::collection::btree_map(
                "([0-9]_)?QID(3|7|18|30|49|50|69|80|404)(_[0-9a-zA-Z]{1,3})?(_TEXT|_NPS_GROUP|_TEXT_x(Sentiment|Topics))?|[A-Za-z]{1,6}",
                arb_value(),
                0..12,
            ),
            labels in proptest::collection::btree_map("QID(3|7|49)(_[0-9])?", arb_value(), 0..4),
        ) {
            let values: Map<String, Value> = values.into_iter().collect();
            let labels: Map<String, Value> = labels.into_iter().collect();
            let raw = line(Value::Object(values.clone()), Value::Object(labels), &["QID5", "QID49_1"]);
            let d = decode(&raw, &CTX, &definitions(), &policy()).expect("a row with the required fields");
            for key in values.keys().filter(|k| split_key(k).is_some()) {
                proptest::prop_assert!(d.cells.iter().any(|c| &c.export_key == key), "{} dropped", key);
            }
        }
    }

    #[test]
    fn splits_keys_by_the_export_grammar() {
        assert_eq!(split_key("QID3"), Some((None, "QID3", "")));
        assert_eq!(split_key("QID49_1"), Some((None, "QID49", "1")));
        assert_eq!(split_key("QID18_4_TEXT"), Some((None, "QID18", "4_TEXT")));
        assert_eq!(
            split_key("2_QID7_5_TEXT"),
            Some((Some("2"), "QID7", "5_TEXT"))
        );
        assert_eq!(split_key("Email"), None);
        assert_eq!(split_key("QIDx"), None);
        assert_eq!(split_key("abcQID1"), None);
        assert_eq!(
            form_of("TEXT_9fSentiment"),
            Form::TextIq("textiq_sentiment")
        );
        assert_eq!(
            form_of("TEXT_9fTopicSenScore"),
            Form::TextIq("textiq_topic_score")
        );
        assert_eq!(form_of("4_TEXT"), Form::ChoiceText("4"));
        assert_eq!(form_of("DO"), Form::Item("DO"));
        assert_eq!(form_of("G1_1_RANK"), Form::Other);
    }

    #[test]
    fn keeps_every_answer_without_a_definition() {
        let line = br#"{"responseId":"R_1","values":{"recordedDate":"2024-07-08T16:00:23.994Z","finished":1,"QID3":10,"QID7":["9","2"],"QID50_TEXT":"hello","Email":"x@example.com","Team":"A"},"labels":{"QID7":["Staff","Other"]},"displayedFields":["QID3","QID7","QID50_TEXT","QID74_TEXT"]}"#;
        let d = decode(line, &CTX, &Definitions::default(), &policy()).expect("decodes");
        assert!(d.response.finished);
        assert_eq!(d.response.recorded_at, 1_720_454_423_994_000);
        // QID3, two QID7 choices, QID50_TEXT, and QID74_TEXT shown but unanswered.
        assert_eq!(d.cells.len(), 5);
        let multi: Vec<_> = d.cells.iter().filter(|c| c.question_id == "QID7").collect();
        assert_eq!(multi[1].label.as_deref(), Some("Other"));
        assert_eq!(multi[1].code.as_deref(), Some("2"));
        let text = d
            .cells
            .iter()
            .find(|c| c.export_key == "QID50_TEXT")
            .unwrap();
        assert_eq!(
            (text.code.as_deref(), text.value_text.as_deref()),
            (None, Some("hello"))
        );
        assert!(d
            .cells
            .iter()
            .all(|c| c.decode_status == DecodeStatus::DefinitionMissing
                && c.definition_version.is_none()));
        assert_eq!(
            d.embedded.len(),
            1,
            "only the allow-listed key: {:?}",
            d.embedded
        );
        assert!(decode(b"[1]", &CTX, &Definitions::default(), &policy()).is_err());
        assert!(decode(
            br#"{"values":{}}"#,
            &CTX,
            &Definitions::default(),
            &policy()
        )
        .is_err());
    }
}
