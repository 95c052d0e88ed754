//! The dimension tables `survey`, `question`, `question_item` and `choice`: one row set per
//! definition snapshot (`definition_version` = its `LastModified`, `valid_from` the same
//! instant), appended once per version through the fact tables' writer and committer
//! (content-addressed file names, an add already logged is skipped). Readers pick the version
//! valid at a response's `recorded_at` (the latest `valid_from` at or before it; the oldest
//! for earlier responses, as the decoder does).

use super::parquet::{Column, Kind, RowWriter, TableRow};
use super::rows::{ChoiceRow, QuestionItemRow, QuestionRow, SurveyRow, TicketLinkRow};

const fn col(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column {
        name,
        kind,
        nullable,
    }
}

use Kind::{Bool, Float64, Int32, Timestamp, Utf8};

impl TableRow for SurveyRow {
    const TABLE: &'static str = "survey";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("definition_version", Utf8, false),
        col("valid_from", Timestamp, false),
        col("name", Utf8, true),
        col("status", Utf8, true),
        col("brand_id", Utf8, true),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.definition_version));
        w.ts(Some(self.valid_from));
        w.str(self.name.as_deref());
        w.str(self.status.as_deref());
        w.str(self.brand_id.as_deref());
    }
}

impl TableRow for QuestionRow {
    const TABLE: &'static str = "question";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("question_id", Utf8, false),
        col("definition_version", Utf8, false),
        col("valid_from", Timestamp, false),
        col("data_export_tag", Utf8, true),
        col("question_type", Utf8, true),
        col("selector", Utf8, true),
        col("sub_selector", Utf8, true),
        col("text", Utf8, true),
        col("is_nps", Bool, false),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.question_id));
        w.str(Some(&self.definition_version));
        w.ts(Some(self.valid_from));
        w.str(self.data_export_tag.as_deref());
        w.str(self.question_type.as_deref());
        w.str(self.selector.as_deref());
        w.str(self.sub_selector.as_deref());
        w.str(self.text.as_deref());
        w.bool(self.is_nps);
    }
}

impl TableRow for QuestionItemRow {
    const TABLE: &'static str = "question_item";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("question_id", Utf8, false),
        col("definition_version", Utf8, false),
        col("valid_from", Timestamp, false),
        col("item_key", Utf8, false),
        col("export_tag", Utf8, true),
        col("text", Utf8, true),
        col("position", Int32, true),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.question_id));
        w.str(Some(&self.definition_version));
        w.ts(Some(self.valid_from));
        w.str(Some(&self.item_key));
        w.str(self.export_tag.as_deref());
        w.str(self.text.as_deref());
        w.i32(self.position);
    }
}

impl TableRow for ChoiceRow {
    const TABLE: &'static str = "choice";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("question_id", Utf8, false),
        col("definition_version", Utf8, false),
        col("valid_from", Timestamp, false),
        col("axis", Utf8, false),
        col("choice_key", Utf8, false),
        col("recode_value", Utf8, true),
        col("numeric_value", Float64, true),
        col("label", Utf8, true),
        col("position", Int32, true),
        col("text_entry", Bool, false),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.question_id));
        w.str(Some(&self.definition_version));
        w.ts(Some(self.valid_from));
        w.str(Some(self.axis.as_str()));
        w.str(Some(&self.choice_key));
        w.str(self.recode_value.as_deref());
        w.f64(self.numeric_value);
        w.str(self.label.as_deref());
        w.i32(self.position);
        w.bool(self.text_entry);
    }
}

impl TableRow for TicketLinkRow {
    const TABLE: &'static str = "ticket_link";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("response_id", Utf8, false),
        col("system", Utf8, false),
        col("ticket_id", Utf8, false),
        col("ticket_number", Utf8, true),
        col("state", Utf8, false),
        col("updated_at", Timestamp, false),
        col("source", Utf8, false),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.response_id));
        w.str(Some(&self.system));
        w.str(Some(&self.ticket_id));
        w.str(self.ticket_number.as_deref());
        w.str(Some(&self.state));
        w.ts(Some(self.updated_at));
        w.str(Some(self.source));
    }
}
