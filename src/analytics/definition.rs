//! Survey definition snapshots (`GET /API/v3/survey-definitions/{id}`), each valid from its
//! `LastModified` until the next one: a response is decoded with the snapshot valid when it was
//! recorded (definitions change; the API returns only the current one).
//!
//! Definition shapes are hostile (reference `analytics-layer.md` §3.2): `Choices` is an object
//! or, for NPS, an array; ids are strings or ints; `ChoiceDataExportTags` is `false` or an
//! object; `TextEntry` is the string `"true"`. [`SurveyModel::parse`] reads the raw JSON through
//! tolerant accessors into the model the decoder uses; it never panics, skips what it cannot
//! read and says which survey and key it skipped.

use super::rows::{
    ChoiceAxis, ChoiceRow, DefinitionRows, Micros, QuestionItemRow, QuestionRow, SurveyRow,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One snapshot. The raw JSON (the API's `result`) is kept as stored; the decoder reads the
/// model [`Definitions::new`] parses from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `LastModified` as Qualtrics wrote it.
    pub version: String,
    pub valid_from: Micros,
    pub raw: Value,
}

impl Definition {
    /// A snapshot from the API's `result` (or the whole envelope): version and validity from
    /// its `LastModified`.
    pub fn from_raw(survey_id: &str, raw: Value) -> Result<Self, DefinitionError> {
        let raw = match raw {
            Value::Object(mut o) if o.contains_key("result") && !o.contains_key("Questions") => {
                o.remove("result").unwrap_or(Value::Null)
            }
            other => other,
        };
        let version = raw
            .get("LastModified")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| DefinitionError::new(survey_id, "LastModified", "missing"))?
            .to_string();
        let valid_from = micros(&version).ok_or_else(|| {
            DefinitionError::new(survey_id, "LastModified", "not an RFC 3339 time")
        })?;
        Ok(Self {
            version,
            valid_from,
            raw,
        })
    }
}

/// A definition cannot be used, or a part of it was skipped. Names the survey and the key,
/// never a value (question texts may quote respondents' data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("survey {survey_id}: definition key {key}: {reason}")]
pub struct DefinitionError {
    pub survey_id: String,
    pub key: String,
    pub reason: &'static str,
}

impl DefinitionError {
    fn new(survey_id: &str, key: impl Into<String>, reason: &'static str) -> Self {
        Self {
            survey_id: survey_id.chars().take(64).collect(),
            key: key.into().chars().take(128).collect(),
            reason,
        }
    }
}

/// How the decoder reads a question's export keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionKind {
    /// `MC`/`NPS`: value 0–10, `_NPS_GROUP` 1/2/3.
    Nps,
    /// `MC` single answer (`SAVR`, `SAHR`, `DL`, …).
    SingleChoice,
    /// `MC` multiple answer (`MAVR`, `MAHR`, …): the value is an array of codes.
    MultiChoice,
    /// `Matrix`: `_k` is a row (statement), the value a column (scale point).
    Matrix,
    /// `TE` single/multi line and essay: `_TEXT` is the text.
    TextEntry,
    /// `TE`/`FORM`: `_k` is a form field, the value its text.
    Form,
    /// `Slider`: `_k` is an item, the value a number.
    Slider,
    /// Anything else (descriptive text, rank order, …): keys kept raw.
    Other,
}

/// One choice (`Choices`) or scale point (`Answers`).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub key: String,
    pub display: Option<String>,
    /// `RecodeValues[key]` (choices of MC, scale points of a matrix).
    pub recode: Option<String>,
    /// `ChoiceDataExportTags[key]` (matrix rows).
    pub export_tag: Option<String>,
    pub position: Option<i32>,
    pub text_entry: bool,
}

impl Choice {
    /// The analysis value: the recode, else the key, as a number when it is one.
    pub fn numeric(&self) -> Option<f64> {
        self.recode
            .as_deref()
            .unwrap_or(&self.key)
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
    }
}

/// One question as the decoder needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub kind: QuestionKind,
    pub data_export_tag: Option<String>,
    pub question_type: Option<String>,
    pub selector: Option<String>,
    pub sub_selector: Option<String>,
    pub text: Option<String>,
    /// `Choices`; for a matrix, its rows.
    pub choices: Vec<Choice>,
    /// `Answers`: a matrix's columns.
    pub answers: Vec<Choice>,
    /// In the `Trash` block (deleted; old responses may still carry it).
    pub in_trash: bool,
    /// In a loop & merge block.
    pub in_loop: bool,
}

impl Question {
    /// The matrix row / form field / slider item an export `_k` names: by export tag, then
    /// by id (reference §8: `_k` is not always the row's id).
    pub fn item(&self, k: &str) -> Option<&Choice> {
        self.choices
            .iter()
            .find(|c| c.export_tag.as_deref() == Some(k))
            .or_else(|| self.choices.iter().find(|c| c.key == k))
    }

    /// The choice an MC code names: the code is the recode when the question has recodes,
    /// else the choice id (reference §3.1).
    pub fn choice(&self, code: &str, label: Option<&str>) -> Option<&Choice> {
        pick(&self.choices, code, label)
    }

    /// The matrix column a code names, like [`Self::choice`].
    pub fn answer(&self, code: &str, label: Option<&str>) -> Option<&Choice> {
        pick(&self.answers, code, label)
    }
}

/// The option a code names. A recoded scale can make a code both one option's recode and
/// another's id (`1` is "5 - Extremely satisfied" recoded `1`, and the id of the option
/// recoded `5`): the export row's label decides when it names exactly one option; then the
/// recode wins over the id, as exports carry recodes.
fn pick<'a>(options: &'a [Choice], code: &str, label: Option<&str>) -> Option<&'a Choice> {
    let code = code.trim();
    if let Some(label) = label.map(str::trim).filter(|l| !l.is_empty()) {
        let mut by_label = options
            .iter()
            .filter(|c| c.display.as_deref().map(str::trim) == Some(label));
        if let (Some(one), None) = (by_label.next(), by_label.next()) {
            return Some(one);
        }
    }
    options
        .iter()
        .find(|c| c.recode.as_deref().map(str::trim) == Some(code))
        .or_else(|| options.iter().find(|c| c.key == code))
}

/// A parsed snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SurveyModel {
    pub survey_id: String,
    pub version: String,
    pub valid_from: Micros,
    pub name: Option<String>,
    pub status: Option<String>,
    pub brand_id: Option<String>,
    pub questions: BTreeMap<String, Question>,
    /// What was skipped, by survey and key.
    pub issues: Vec<DefinitionError>,
}

impl SurveyModel {
    /// Reads a snapshot. Never fails: an unreadable question is skipped (and listed in
    /// `issues`), so its answers decode as `unmapped` rather than failing the response.
    pub fn parse(survey_id: &str, def: &Definition) -> Self {
        let raw = &def.raw;
        let mut model = Self {
            survey_id: survey_id.to_string(),
            version: def.version.clone(),
            valid_from: def.valid_from,
            name: text(raw.get("SurveyName")),
            status: text(raw.get("SurveyStatus")),
            brand_id: text(raw.get("BrandID")),
            ..Self::default()
        };
        let blocks = block_index(raw.get("Blocks"));
        let questions = match raw.get("Questions") {
            Some(q) => entries(q),
            None => {
                model
                    .issues
                    .push(DefinitionError::new(survey_id, "Questions", "missing"));
                Vec::new()
            }
        };
        for (key, q) in questions {
            let Some(q) = q.as_object() else {
                model.issues.push(DefinitionError::new(
                    survey_id,
                    format!("Questions.{key}"),
                    "not an object",
                ));
                continue;
            };
            let id = text(q.get("QuestionID")).unwrap_or_else(|| key.clone());
            if !id.starts_with("QID") {
                model.issues.push(DefinitionError::new(
                    survey_id,
                    format!("Questions.{key}.QuestionID"),
                    "not a QID",
                ));
                continue;
            }
            let (in_trash, in_loop) = blocks.get(&id).copied().unwrap_or((false, false));
            model
                .questions
                .insert(id.clone(), question(id, q, in_trash, in_loop));
        }
        model
    }

    /// The `survey`/`question`/`question_item`/`choice` dimension rows of this version.
    pub fn rows(&self) -> DefinitionRows {
        let mut out = DefinitionRows {
            survey: vec![SurveyRow {
                survey_id: self.survey_id.clone(),
                definition_version: self.version.clone(),
                name: self.name.clone(),
                status: self.status.clone(),
                brand_id: self.brand_id.clone(),
                valid_from: self.valid_from,
            }],
            ..DefinitionRows::default()
        };
        for q in self.questions.values() {
            out.questions.push(QuestionRow {
                survey_id: self.survey_id.clone(),
                question_id: q.id.clone(),
                definition_version: self.version.clone(),
                data_export_tag: q.data_export_tag.clone(),
                question_type: q.question_type.clone(),
                selector: q.selector.clone(),
                sub_selector: q.sub_selector.clone(),
                text: q.text.clone(),
                is_nps: q.kind == QuestionKind::Nps,
                valid_from: self.valid_from,
            });
            let items_are_rows = matches!(
                q.kind,
                QuestionKind::Matrix | QuestionKind::Form | QuestionKind::Slider
            );
            for c in &q.choices {
                if items_are_rows {
                    out.items.push(QuestionItemRow {
                        survey_id: self.survey_id.clone(),
                        question_id: q.id.clone(),
                        definition_version: self.version.clone(),
                        item_key: c.key.clone(),
                        export_tag: c.export_tag.clone(),
                        text: c.display.clone(),
                        position: c.position,
                        valid_from: self.valid_from,
                    });
                } else {
                    out.choices.push(self.choice_row(q, ChoiceAxis::Choice, c));
                }
            }
            for c in &q.answers {
                out.choices.push(self.choice_row(q, ChoiceAxis::Answer, c));
            }
        }
        out
    }

    fn choice_row(&self, q: &Question, axis: ChoiceAxis, c: &Choice) -> ChoiceRow {
        ChoiceRow {
            survey_id: self.survey_id.clone(),
            question_id: q.id.clone(),
            definition_version: self.version.clone(),
            axis,
            choice_key: c.key.clone(),
            recode_value: c.recode.clone(),
            numeric_value: c.numeric(),
            label: c.display.clone(),
            position: c.position,
            text_entry: c.text_entry,
            valid_from: self.valid_from,
        }
    }
}

fn question(id: String, q: &Map<String, Value>, in_trash: bool, in_loop: bool) -> Question {
    let question_type = text(q.get("QuestionType"));
    let selector = text(q.get("Selector"));
    let sub_selector = text(q.get("SubSelector"));
    let kind = kind_of(
        question_type.as_deref(),
        selector.as_deref(),
        sub_selector.as_deref(),
    );
    let recodes = string_map(q.get("RecodeValues"));
    let tags = string_map(q.get("ChoiceDataExportTags"));
    // A matrix's RecodeValues recode its columns (Answers); an MC's, its choices.
    let (choice_recodes, answer_recodes) = match kind {
        QuestionKind::Matrix => (BTreeMap::new(), recodes),
        _ => (recodes, BTreeMap::new()),
    };
    let choices = options(
        q.get("Choices"),
        q.get("ChoiceOrder"),
        &choice_recodes,
        &tags,
    );
    let answers = options(
        q.get("Answers"),
        q.get("AnswerOrder"),
        &answer_recodes,
        &BTreeMap::new(),
    );
    Question {
        id,
        kind,
        data_export_tag: text(q.get("DataExportTag")),
        question_type,
        selector,
        sub_selector,
        text: text(q.get("QuestionDescription")).or_else(|| text(q.get("QuestionText"))),
        choices,
        answers,
        in_trash,
        in_loop,
    }
}

fn kind_of(t: Option<&str>, selector: Option<&str>, sub: Option<&str>) -> QuestionKind {
    match (t.unwrap_or(""), selector.unwrap_or("")) {
        ("MC", "NPS") => QuestionKind::Nps,
        ("MC", s) if s.starts_with("MA") || sub == Some("MultipleAnswer") => {
            QuestionKind::MultiChoice
        }
        ("MC", _) => QuestionKind::SingleChoice,
        ("Matrix", _) => QuestionKind::Matrix,
        ("TE", "FORM") => QuestionKind::Form,
        ("TE", _) => QuestionKind::TextEntry,
        ("Slider", _) => QuestionKind::Slider,
        _ => QuestionKind::Other,
    }
}

/// `Choices`/`Answers` with their order, recodes and export tags.
fn options(
    list: Option<&Value>,
    order: Option<&Value>,
    recodes: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
) -> Vec<Choice> {
    let order: Vec<String> = order
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(id_of).collect())
        .unwrap_or_default();
    let Some(list) = list else {
        return Vec::new();
    };
    let mut out: Vec<Choice> = entries(list)
        .into_iter()
        .filter_map(|(key, c)| {
            let c = c.as_object()?;
            let position = order
                .iter()
                .position(|o| *o == key)
                .and_then(|p| i32::try_from(p).ok());
            Some(Choice {
                display: text(c.get("Display")),
                recode: recodes.get(&key).cloned(),
                export_tag: tags.get(&key).cloned(),
                position,
                text_entry: c.get("TextEntry").is_some_and(truthy),
                key,
            })
        })
        .collect();
    out.sort_by_key(|c| c.position.unwrap_or(i32::MAX));
    out
}

/// Question id → (in the Trash block, in a loop & merge block).
fn block_index(blocks: Option<&Value>) -> BTreeMap<String, (bool, bool)> {
    let mut out = BTreeMap::new();
    for (_, b) in blocks.map(entries).unwrap_or_default() {
        let trash = b.get("Type").and_then(Value::as_str) == Some("Trash");
        let looping = b
            .get("Options")
            .and_then(|o| o.get("Looping"))
            .and_then(Value::as_str)
            .is_some_and(|l| !l.is_empty() && l != "None");
        let elements = b.get("BlockElements").and_then(Value::as_array);
        for e in elements.into_iter().flatten() {
            if let Some(qid) = e.get("QuestionID").and_then(id_of) {
                out.insert(qid, (trash, looping));
            }
        }
    }
    out
}

/// An object's entries, or an array's non-null items keyed by index (NPS `Choices`).
fn entries(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// `{id: "value"}` (`RecodeValues`, `ChoiceDataExportTags`); `false`, arrays of nulls and
/// non-scalar values read as absent.
fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.map(entries)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, id_of(v)?)))
        .collect()
}

/// A string or integer id as text.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

pub(crate) fn micros(s: &str) -> Option<Micros> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// A survey's snapshots, oldest first, each parsed once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    snapshots: Vec<Definition>,
    models: Vec<Arc<SurveyModel>>,
}

impl Definitions {
    pub fn new(mut snapshots: Vec<Definition>) -> Self {
        snapshots.sort_by_key(|d| d.valid_from);
        let models = snapshots
            .iter()
            .map(|d| {
                let id = d.raw.get("SurveyID").and_then(Value::as_str).unwrap_or("?");
                Arc::new(SurveyModel::parse(id, d))
            })
            .collect();
        Self { snapshots, models }
    }

    /// The snapshot valid at `at`; a response recorded before the oldest snapshot is decoded
    /// with the oldest (the first snapshot is taken when the bridge first sees the survey, which
    /// is usually later than its first responses).
    pub fn valid_at(&self, at: Micros) -> Option<&Definition> {
        self.index_at(at).and_then(|i| self.snapshots.get(i))
    }

    /// The parsed model of [`Self::valid_at`].
    pub fn model_at(&self, at: Micros) -> Option<&SurveyModel> {
        self.index_at(at)
            .and_then(|i| self.models.get(i))
            .map(Arc::as_ref)
    }

    fn index_at(&self, at: Micros) -> Option<usize> {
        if self.snapshots.is_empty() {
            return None;
        }
        let after = self.snapshots.partition_point(|d| d.valid_from <= at);
        Some(after.saturating_sub(1))
    }

    /// Every snapshot's parsed model, oldest first (one dimension row set each).
    pub fn models(&self) -> impl Iterator<Item = &SurveyModel> {
        self.models.iter().map(Arc::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn def(v: &str, at: Micros) -> Definition {
        Definition {
            version: v.into(),
            valid_from: at,
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn picks_the_snapshot_valid_at_the_time() {
        let defs = Definitions::new(vec![def("b", 20), def("a", 10)]);
        assert_eq!(defs.valid_at(5).map(|d| d.version.as_str()), Some("a"));
        assert_eq!(defs.valid_at(10).map(|d| d.version.as_str()), Some("a"));
        assert_eq!(defs.valid_at(19).map(|d| d.version.as_str()), Some("a"));
        assert_eq!(defs.valid_at(25).map(|d| d.version.as_str()), Some("b"));
        assert_eq!(defs.model_at(25).map(|m| m.version.as_str()), Some("b"));
        assert!(Definitions::default().valid_at(1).is_none());
    }

    /// The hazards of reference §3.2 in one definition, shaped like the recorded payloads.
    pub(crate) fn hostile() -> Value {
        json!({
          "SurveyID": "SV_hostile", "SurveyName": "Visit", "SurveyStatus": "Active",
          "BrandID": "brand", "LastModified": "2024-07-01T10:00:00Z",
          "Questions": {
            "QID3": {"QuestionID": "QID3", "DataExportTag": "Q3", "QuestionType": "MC",
                     "Selector": "NPS", "QuestionText": "How likely…",
                     "Choices": [{"Display":"0"},{"Display":"1"},{"Display":"2"},{"Display":"3"},
                                 {"Display":"4"},{"Display":"5"},{"Display":"6"},{"Display":"7"},
                                 {"Display":"8"},{"Display":"9"},{"Display":"10"}],
                     "ChoiceOrder": ["0","1","2","3","4","5","6","7","8","9","10"],
                     "ChoiceDataExportTags": false},
            "QID7": {"QuestionID": "QID7", "QuestionType": "MC", "Selector": "MAVR",
                     "Choices": {"1": {"Display": "Covid-19 Health & Safety"},
                                 "2": {"Display": "Staff"},
                                 "4": {"Display": "Other", "TextEntry": "true"}},
                     "ChoiceOrder": [1, "2", 4],
                     "RecodeValues": {"1": "9", "2": "2", "4": "-3"}},
            "QID49": {"QuestionID": "QID49", "QuestionType": "Matrix", "Selector": "Likert",
                      "SubSelector": "SingleAnswer",
                      "Choices": {"1": {"Display": "Speed"}, "2": {"Display": "Courtesy"}},
                      "ChoiceDataExportTags": {"1": "speed", "2": "2"},
                      "Answers": {"1": {"Display": "5- Extremely Satisfied"},
                                  "2": {"Display": "4"}, "5": {"Display": "1- Not at all"}},
                      "AnswerOrder": [1, 2, 5],
                      "RecodeValues": {"1": "5", "2": "4", "5": "1"}},
            "QID30": {"QuestionID": "QID30", "QuestionType": "TE", "Selector": "FORM",
                      "Choices": {"1": {"Display": "Name"}, "2": {"Display": "Team"}}},
            "QID50": {"QuestionID": "QID50", "QuestionType": "TE", "Selector": "ESTB"},
            "QID90": {"QuestionID": 90},
            "QID91": "not a question",
            "QID99": {"QuestionType": "MC", "Selector": "SAVR", "Choices": false,
                      "RecodeValues": [null, "1"]}
          },
          "Blocks": [
            {"Type": "Default", "ID": "BL_1", "BlockElements": [{"Type": "Question", "QuestionID": "QID3"}, {"Type": "PageBreak"}]},
            {"Type": "Trash", "ID": "BL_T", "BlockElements": [{"Type": "Question", "QuestionID": "QID99"}]},
            {"Type": "Standard", "ID": "BL_L", "Options": {"Looping": "Static"},
             "BlockElements": [{"Type": "Question", "QuestionID": "QID7"}]}
          ]
        })
    }

    #[test]
    fn reads_every_hazard_tolerantly() {
        let d = Definition::from_raw("SV_hostile", json!({ "result": hostile() })).unwrap();
        assert_eq!(d.version, "2024-07-01T10:00:00Z");
        let m = SurveyModel::parse("SV_hostile", &d);
        let nps = &m.questions["QID3"];
        assert_eq!(nps.kind, QuestionKind::Nps);
        assert_eq!(nps.choices.len(), 11);
        assert_eq!(nps.choices[10].key, "10");
        let multi = &m.questions["QID7"];
        assert_eq!(multi.kind, QuestionKind::MultiChoice);
        assert!(multi.in_loop);
        let keys: Vec<_> = multi.choices.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["1", "2", "4"], "int and string ids in ChoiceOrder");
        assert!(multi.choices[2].text_entry);
        assert_eq!(multi.choices[2].numeric(), Some(-3.0));
        let matrix = &m.questions["QID49"];
        assert_eq!(matrix.kind, QuestionKind::Matrix);
        assert_eq!(matrix.item("speed").map(|c| c.key.as_str()), Some("1"));
        assert_eq!(matrix.item("2").map(|c| c.key.as_str()), Some("2"));
        assert!(matrix.item("3").is_none());
        assert_eq!(
            matrix
                .answers
                .iter()
                .map(|a| a.numeric())
                .collect::<Vec<_>>(),
            [Some(5.0), Some(4.0), Some(1.0)]
        );
        assert_eq!(m.questions["QID30"].kind, QuestionKind::Form);
        assert_eq!(m.questions["QID50"].kind, QuestionKind::TextEntry);
        let trashed = &m.questions["QID99"];
        assert!(trashed.in_trash && trashed.choices.is_empty());
        // `QuestionID: 90` is read as an id "90", which is not a QID; "QID91" is a string.
        assert_eq!(m.issues.len(), 2, "{:?}", m.issues);
        assert!(m.issues.iter().all(|e| e.survey_id == "SV_hostile"));
        assert!(m.issues.iter().any(|e| e.key == "Questions.QID91"));
    }

    #[test]
    fn dimension_rows_of_a_version() {
        let d = Definition::from_raw("SV_hostile", hostile()).unwrap();
        let r = SurveyModel::parse("SV_hostile", &d).rows();
        assert_eq!(r.survey.len(), 1);
        assert_eq!(r.survey[0].name.as_deref(), Some("Visit"));
        assert_eq!(r.questions.len(), 6);
        assert!(r
            .questions
            .iter()
            .any(|q| q.question_id == "QID3" && q.is_nps));
        // Matrix rows and form fields are items; matrix columns and MC choices are choices.
        assert_eq!(r.items.len(), 4);
        let speed = r
            .items
            .iter()
            .find(|i| i.item_key == "1" && i.question_id == "QID49");
        assert_eq!(speed.and_then(|i| i.export_tag.as_deref()), Some("speed"));
        let col = r
            .choices
            .iter()
            .find(|c| c.question_id == "QID49" && c.choice_key == "5")
            .unwrap();
        assert_eq!(
            (col.axis, col.numeric_value),
            (ChoiceAxis::Answer, Some(1.0))
        );
        assert!(r.choices.iter().all(|c| c.definition_version == d.version));
    }

    #[test]
    fn a_snapshot_needs_a_last_modified_and_says_whose() {
        let e = Definition::from_raw("SV_x", json!({"Questions": {}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "survey SV_x: definition key LastModified: missing"
        );
        let e = Definition::from_raw("SV_x", json!({"LastModified": "yesterday"})).unwrap_err();
        assert!(e.to_string().contains("LastModified"), "{e}");
        assert!(Definition::from_raw("SV_x", json!([1])).is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            prop_oneof![
                Just("QID1".to_string()),
                Just("true".to_string()),
                Just("MC".to_string()),
                Just("Matrix".to_string()),
                Just("NPS".to_string()),
                Just("Trash".to_string()),
                ".{0,6}"
            ]
            .prop_map(Value::String),
        ];
        let keys = prop_oneof![
            Just("Questions".to_string()),
            Just("QID1".to_string()),
            Just("Choices".to_string()),
            Just("Answers".to_string()),
            Just("RecodeValues".to_string()),
            Just("ChoiceDataExportTags".to_string()),
            Just("ChoiceOrder".to_string()),
            Just("QuestionType".to_string()),
            Just("Selector".to_string()),
            Just("Blocks".to_string()),
            Just("BlockElements".to_string()),
            Just("QuestionID".to_string()),
            Just("Display".to_string()),
            Just("TextEntry".to_string()),
            "[A-Za-z0-9]{1,4}"
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a definition holds, parsing, rows and lookups never panic.
        #[test]
        fn arbitrary_json_never_panics(raw in arb_json(), code in ".{0,3}") {
            let d = Definition { version: "v".into(), valid_from: 0, raw };
            let m = SurveyModel::parse("SV_p", &d);
            let _ = m.rows();
            for q in m.questions.values() {
                let _ = (q.item(&code), q.choice(&code, Some(&code)), q.answer(&code, None));
            }
            let _ = Definition::from_raw("SV_p", d.raw);
        }
    }
}
