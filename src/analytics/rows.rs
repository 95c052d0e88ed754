//! One struct per Delta table row (DESIGN's table names; columns per `analytics-layer.md`
//! §5.3). The decoder produces them; the table writer turns a batch into Arrow arrays.
//! Timestamps are microseconds since the Unix epoch, UTC (`timestamp(us, UTC)` in Parquet).

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// How a cell was decoded: the table keeps every key, decoded or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeStatus {
    Ok,
    /// The definition has no such question or sub-key: kept raw.
    Unmapped,
    /// No definition snapshot valid at `recorded_at`.
    DefinitionMissing,
}

impl DecodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unmapped => "unmapped",
            Self::DefinitionMissing => "definition_missing",
        }
    }
}

/// `question_response`: one row per answered (or displayed) cell, one per selected choice of
/// a multi-select.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionResponseRow {
    pub survey_id: String,
    pub response_id: String,
    pub recorded_at: Micros,
    pub exported_at: Micros,
    /// `LastModified` of the definition used, if any.
    pub definition_version: Option<String>,
    /// The key as exported (`2_QID49_3_TEXT`).
    pub export_key: String,
    pub loop_id: Option<String>,
    /// `QIDn`.
    pub question_id: String,
    /// Matrix row / form field / slider item / the choice an "other" text belongs to.
    pub sub_key: Option<String>,
    /// `value`, `text`, `choice_text`, `nps_group`, …
    pub field: String,
    /// Position within a multi-select array.
    pub item_index: Option<i32>,
    /// The value as exported, as text.
    pub code: Option<String>,
    /// The analysis value (recode → number; NPS 0–10).
    pub value_num: Option<f64>,
    /// Free text (dropped when the survey's config says so).
    pub value_text: Option<String>,
    /// The label the export row carries.
    pub label: Option<String>,
    pub displayed: bool,
    pub answered: bool,
    pub decode_status: DecodeStatus,
}

/// `survey_response`: one row per response version (`response_id`, `exported_at`).
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyResponseRow {
    pub survey_id: String,
    pub response_id: String,
    pub exported_at: Micros,
    /// The export blob the row came from (lineage; rebuilds are keyed on it).
    pub source_blob: String,
    pub recorded_at: Micros,
    pub started_at: Option<Micros>,
    pub ended_at: Option<Micros>,
    pub status: Option<i64>,
    pub progress: Option<i64>,
    pub duration_s: Option<i64>,
    pub finished: bool,
    pub distribution_channel: Option<String>,
    pub user_language: Option<String>,
    /// Opt-in identity fields, hashed (`[surveys.analytics]`); `None` unless asked for.
    pub ip_address_hash: Option<String>,
    pub recipient_email_hash: Option<String>,
    pub external_reference_hash: Option<String>,
    pub recipient_first_name_hash: Option<String>,
    pub recipient_last_name_hash: Option<String>,
    pub location_latitude_hash: Option<String>,
    pub location_longitude_hash: Option<String>,
}

/// `response_embedded_data`: allow-listed embedded data only.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedDataRow {
    pub survey_id: String,
    pub response_id: String,
    pub exported_at: Micros,
    pub key: String,
    pub value: String,
}

/// Everything one export row decodes to.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedResponse {
    pub response: SurveyResponseRow,
    pub cells: Vec<QuestionResponseRow>,
    pub embedded: Vec<EmbeddedDataRow>,
}

/// `survey`: one row per definition version.
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyRow {
    pub survey_id: String,
    pub definition_version: String,
    pub name: Option<String>,
    pub status: Option<String>,
    pub brand_id: Option<String>,
    pub valid_from: Micros,
}

/// `question`: one row per question per definition version.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionRow {
    pub survey_id: String,
    pub question_id: String,
    pub definition_version: String,
    pub data_export_tag: Option<String>,
    pub question_type: Option<String>,
    pub selector: Option<String>,
    pub sub_selector: Option<String>,
    pub text: Option<String>,
    pub is_nps: bool,
    pub valid_from: Micros,
}

/// `question_item`: matrix rows and form fields.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionItemRow {
    pub survey_id: String,
    pub question_id: String,
    pub definition_version: String,
    pub item_key: String,
    pub export_tag: Option<String>,
    pub text: Option<String>,
    pub position: Option<i32>,
    pub valid_from: Micros,
}

/// Which list of a question a choice belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceAxis {
    /// `Choices` (the options of a multiple choice question).
    Choice,
    /// `Answers` (a matrix's scale columns).
    Answer,
}

impl ChoiceAxis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Choice => "choice",
            Self::Answer => "answer",
        }
    }
}

/// `choice`: choices and matrix scale points, with their recodes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceRow {
    pub survey_id: String,
    pub question_id: String,
    pub definition_version: String,
    pub axis: ChoiceAxis,
    pub choice_key: String,
    pub recode_value: Option<String>,
    pub numeric_value: Option<f64>,
    pub label: Option<String>,
    pub position: Option<i32>,
    pub text_entry: bool,
    pub valid_from: Micros,
}

/// Everything one definition snapshot decodes to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DefinitionRows {
    pub survey: Vec<SurveyRow>,
    pub questions: Vec<QuestionRow>,
    pub items: Vec<QuestionItemRow>,
    pub choices: Vec<ChoiceRow>,
}

/// `ticket_link`: one row per observed state of a ticket the bridge raised (append-only; the
/// latest `updated_at` per ticket is its current state).
#[derive(Debug, Clone, PartialEq)]
pub struct TicketLinkRow {
    pub survey_id: String,
    pub response_id: String,
    /// `servicenow` / `zendesk`.
    pub system: String,
    /// Zendesk id / ServiceNow `sys_id`.
    pub ticket_id: String,
    /// Zendesk id / ServiceNow `INC…`.
    pub ticket_number: Option<String>,
    /// `open` (the ticket ledger's `created`), then each state the loop ledger applied
    /// (`open`, `resolved`, `closed`, `canceled`).
    pub state: String,
    /// When the state began: the ledger's `updatedAt` for `created`, the ticket system's
    /// `changedAt` for an applied state.
    pub updated_at: Micros,
    /// `ticket_ledger` or `loop_ledger`.
    pub source: &'static str,
}
