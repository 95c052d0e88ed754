//! One exported response row (a line of an export blob) → the rows of `survey_response`,
//! `question_response` and `response_embedded_data` (reference `analytics-layer.md` §3.1, §3.4).
//!
//! Without a definition every answer key is kept raw (`definition_missing`): nothing is dropped,
//! and a rebuild decodes it once a snapshot exists.

use super::definition::Definitions;
use super::rows::{
    DecodeStatus, DecodedResponse, EmbeddedDataRow, Micros, QuestionResponseRow, SurveyResponseRow,
};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What a survey lets into the tables (`[surveys.analytics]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Embedded-data keys allowed into `response_embedded_data` (exact names).
    pub embedded_allow: Vec<String>,
    /// Keep free text (`_TEXT` answers, string values); off drops `value_text`.
    pub free_text: bool,
}

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

pub fn decode(
    line: &[u8],
    ctx: &RowContext<'_>,
    _definitions: &Definitions,
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
        ip_address_hash: None,
        recipient_email_hash: None,
        external_reference_hash: None,
    };

    let mut cells = Vec::new();
    let mut embedded = Vec::new();
    for (key, value) in values {
        if METADATA.contains(&key.as_str()) {
            continue;
        }
        let Some((loop_id, question_id, rest)) = split_key(key) else {
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
        };
        let is_text = rest.ends_with("TEXT");
        let sub_key = rest
            .split('_')
            .next()
            .filter(|k| !k.is_empty() && *k != "TEXT")
            .map(String::from);
        let base = QuestionResponseRow {
            survey_id: ctx.survey_id.to_string(),
            response_id: response_id.clone(),
            recorded_at,
            exported_at: ctx.exported_at,
            definition_version: None,
            export_key: key.clone(),
            loop_id: loop_id.map(String::from),
            question_id: question_id.to_string(),
            sub_key,
            field: if is_text { "text" } else { "value" }.to_string(),
            item_index: None,
            code: None,
            value_num: None,
            value_text: None,
            label: None,
            displayed: displayed.contains(&key.as_str()),
            answered: true,
            decode_status: DecodeStatus::DefinitionMissing,
        };
        let label = labels.get(key);
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut cell = base.clone();
                    cell.item_index = i32::try_from(i).ok();
                    cell.code = Some(text_of(item));
                    cell.label = label
                        .and_then(|l| l.get(i))
                        .and_then(Value::as_str)
                        .map(String::from);
                    cells.push(cell);
                }
            }
            v => {
                let mut cell = base;
                cell.code = Some(text_of(v));
                cell.value_num = v.as_f64();
                if is_text && policy.free_text {
                    cell.value_text = v.as_str().map(String::from);
                }
                cell.label = label.and_then(Value::as_str).map(String::from);
                cells.push(cell);
            }
        }
    }
    // Shown but not answered: the denominator of response rates.
    for key in displayed {
        if values.contains_key(key) {
            continue;
        }
        if let Some((loop_id, question_id, rest)) = split_key(key) {
            cells.push(QuestionResponseRow {
                survey_id: ctx.survey_id.to_string(),
                response_id: response_id.clone(),
                recorded_at,
                exported_at: ctx.exported_at,
                definition_version: None,
                export_key: key.to_string(),
                loop_id: loop_id.map(String::from),
                question_id: question_id.to_string(),
                sub_key: rest
                    .split('_')
                    .next()
                    .filter(|k| !k.is_empty() && *k != "TEXT")
                    .map(String::from),
                field: if rest.ends_with("TEXT") {
                    "text"
                } else {
                    "value"
                }
                .to_string(),
                item_index: None,
                code: None,
                value_num: None,
                value_text: None,
                label: None,
                displayed: true,
                answered: false,
                decode_status: DecodeStatus::DefinitionMissing,
            });
        }
    }
    Ok(DecodedResponse {
        response,
        cells,
        embedded,
    })
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

fn micros(s: &str) -> Option<Micros> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str()?.trim().parse().ok())
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
    }

    #[test]
    fn keeps_every_answer_without_a_definition() {
        let line = br#"{"responseId":"R_1","values":{"recordedDate":"2024-07-08T16:00:23.994Z","finished":1,"QID3":10,"QID7":["9","2"],"QID50_TEXT":"hello","Email":"x@example.com","Team":"A"},"labels":{"QID7":["Staff","Other"]},"displayedFields":["QID3","QID7","QID50_TEXT","QID74_TEXT"]}"#;
        let ctx = RowContext {
            survey_id: "SV_1",
            exported_at: 1,
            source_blob: "b",
        };
        let policy = Policy {
            embedded_allow: vec!["Team".into()],
            free_text: true,
        };
        let d = decode(line, &ctx, &Definitions::default(), &policy).expect("decodes");
        assert!(d.response.finished);
        assert_eq!(d.response.recorded_at, 1_720_454_423_994_000);
        // QID3, two QID7 choices, QID50_TEXT, and QID74_TEXT shown but unanswered.
        assert_eq!(d.cells.len(), 5);
        let multi: Vec<_> = d.cells.iter().filter(|c| c.question_id == "QID7").collect();
        assert_eq!(multi[1].label.as_deref(), Some("Other"));
        assert_eq!(multi[1].code.as_deref(), Some("2"));
        assert!(d
            .cells
            .iter()
            .all(|c| c.decode_status == DecodeStatus::DefinitionMissing));
        assert_eq!(
            d.embedded.len(),
            1,
            "only the allow-listed key: {:?}",
            d.embedded
        );
        assert!(decode(b"[1]", &ctx, &Definitions::default(), &policy).is_err());
        assert!(decode(br#"{"values":{}}"#, &ctx, &Definitions::default(), &policy).is_err());
    }
}
