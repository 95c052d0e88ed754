//! Rows → Snappy Parquet data files in memory, each with what a Delta `add` action says about
//! it (path, size, row count, per-column min/max/null counts). Knows nothing of `_delta_log`:
//! `commit` turns an [`AddFile`] into an action.
//!
//! One file per table per batch; its name is content-addressed ([`file_name`]) so that a retried
//! batch writes the same path and the committer can tell it is already in the log.

use super::rows::{EmbeddedDataRow, Micros, QuestionResponseRow, SurveyResponseRow};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Part of every file name's hash: a release whose rows differ for the same input must not
/// reuse an older release's names.
pub const CODE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "/rows-1");

/// Rows buffered in Arrow builders before they are encoded into the file.
const BUILDER_ROWS: usize = 8 * 1024;
/// Rows per Parquet row group: large enough for good compression and few footers to read,
/// small enough that the writer's in-progress group stays a few MiB.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// String statistics longer than this are left out (a bound must be exact, and free text can
/// be long); numbers and timestamps always have theirs.
const MAX_STAT_STRING: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("{table}: cannot encode Parquet: {reason}")]
    Encode { table: &'static str, reason: String },
    #[error("{table}: row writer does not match the table's columns")]
    Columns { table: &'static str },
}

/// A column's type, as Arrow and as the Delta schema names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Utf8,
    Int32,
    Int64,
    Float64,
    Bool,
    /// `timestamp(us, "UTC")`.
    Timestamp,
}

impl Kind {
    fn arrow(self) -> DataType {
        match self {
            Kind::Utf8 => DataType::Utf8,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The Delta protocol's primitive type name.
    pub fn delta(self) -> &'static str {
        match self {
            Kind::Utf8 => "string",
            Kind::Int32 => "integer",
            Kind::Int64 => "long",
            Kind::Float64 => "double",
            Kind::Bool => "boolean",
            Kind::Timestamp => "timestamp",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column {
        name,
        kind,
        nullable,
    }
}

/// A row type with its table's name and columns, and how it fills them (in column order).
pub trait TableRow {
    const TABLE: &'static str;
    const COLUMNS: &'static [Column];
    fn append(&self, row: &mut RowWriter<'_>);
}

/// The Arrow schema of a table.
pub fn schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c.name, c.kind.arrow(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

use Kind::{Bool, Float64, Int32, Int64, Timestamp, Utf8};

impl TableRow for SurveyResponseRow {
    const TABLE: &'static str = "survey_response";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("response_id", Utf8, false),
        col("exported_at", Timestamp, false),
        col("source_blob", Utf8, false),
        col("recorded_at", Timestamp, false),
        col("started_at", Timestamp, true),
        col("ended_at", Timestamp, true),
        col("status", Int64, true),
        col("progress", Int64, true),
        col("duration_s", Int64, true),
        col("finished", Bool, false),
        col("distribution_channel", Utf8, true),
        col("user_language", Utf8, true),
        col("ip_address_hash", Utf8, true),
        col("recipient_email_hash", Utf8, true),
        col("external_reference_hash", Utf8, true),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.response_id));
        w.ts(Some(self.exported_at));
        w.str(Some(&self.source_blob));
        w.ts(Some(self.recorded_at));
        w.ts(self.started_at);
        w.ts(self.ended_at);
        w.i64(self.status);
        w.i64(self.progress);
        w.i64(self.duration_s);
        w.bool(self.finished);
        w.str(self.distribution_channel.as_deref());
        w.str(self.user_language.as_deref());
        w.str(self.ip_address_hash.as_deref());
        w.str(self.recipient_email_hash.as_deref());
        w.str(self.external_reference_hash.as_deref());
    }
}

impl TableRow for QuestionResponseRow {
    const TABLE: &'static str = "question_response";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("response_id", Utf8, false),
        col("recorded_at", Timestamp, false),
        col("exported_at", Timestamp, false),
        col("definition_version", Utf8, true),
        col("export_key", Utf8, false),
        col("loop_id", Utf8, true),
        col("question_id", Utf8, false),
        col("sub_key", Utf8, true),
        col("field", Utf8, false),
        col("item_index", Int32, true),
        col("code", Utf8, true),
        col("value_num", Float64, true),
        col("value_text", Utf8, true),
        col("label", Utf8, true),
        col("displayed", Bool, false),
        col("answered", Bool, false),
        col("decode_status", Utf8, false),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.response_id));
        w.ts(Some(self.recorded_at));
        w.ts(Some(self.exported_at));
        w.str(self.definition_version.as_deref());
        w.str(Some(&self.export_key));
        w.str(self.loop_id.as_deref());
        w.str(Some(&self.question_id));
        w.str(self.sub_key.as_deref());
        w.str(Some(&self.field));
        w.i32(self.item_index);
        w.str(self.code.as_deref());
        w.f64(self.value_num);
        w.str(self.value_text.as_deref());
        w.str(self.label.as_deref());
        w.bool(self.displayed);
        w.bool(self.answered);
        w.str(Some(self.decode_status.as_str()));
    }
}

impl TableRow for EmbeddedDataRow {
    const TABLE: &'static str = "response_embedded_data";
    const COLUMNS: &'static [Column] = &[
        col("survey_id", Utf8, false),
        col("response_id", Utf8, false),
        col("exported_at", Timestamp, false),
        col("key", Utf8, false),
        col("value", Utf8, false),
    ];

    fn append(&self, w: &mut RowWriter<'_>) {
        w.str(Some(&self.survey_id));
        w.str(Some(&self.response_id));
        w.ts(Some(self.exported_at));
        w.str(Some(&self.key));
        w.str(Some(&self.value));
    }
}

/// `part-{survey}-{hash}.snappy.parquet`: the hash covers the code version, the table and the
/// batch's input blobs in order, so the same batch always gets the same name.
pub fn file_name(table: &str, survey_id: &str, inputs: &[String]) -> String {
    let mut h = Sha256::new();
    for part in [CODE_VERSION, table, survey_id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for blob in inputs {
        h.update(blob.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("part-{survey_id}-{hex}.snappy.parquet")
}

/// Column statistics as a Delta `add` carries them (`stats` JSON).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    pub num_records: u64,
    pub min_values: Map<String, Value>,
    pub max_values: Map<String, Value>,
    pub null_count: Map<String, Value>,
}

impl Stats {
    /// The `stats` JSON object.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "numRecords": self.num_records,
            "minValues": self.min_values,
            "maxValues": self.max_values,
            "nullCount": self.null_count,
        })
    }
}

/// A data file ready to upload and commit.
#[derive(Debug, Clone, PartialEq)]
pub struct AddFile {
    /// Relative to the table's folder.
    pub path: String,
    pub size: u64,
    pub rows: u64,
    pub stats: Stats,
}

/// An encoded file and its description.
#[derive(Debug)]
pub struct DataFile {
    pub add: AddFile,
    pub bytes: Bytes,
}

/// Running min/max of one column.
#[derive(Debug, Default)]
enum Bounds {
    #[default]
    None,
    Int(i64, i64),
    Float(f64, f64),
    Text(String, String),
    /// A string too long to bound exactly was seen: no min/max for this column.
    Unbounded,
}

enum Builder {
    Utf8(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Self {
        match kind {
            Utf8 => Self::Utf8(StringBuilder::new()),
            Int32 => Self::Int32(Int32Builder::new()),
            Int64 => Self::Int64(Int64Builder::new()),
            Float64 => Self::Float64(Float64Builder::new()),
            Bool => Self::Bool(BooleanBuilder::new()),
            Timestamp => Self::Timestamp(
                TimestampMicrosecondBuilder::new().with_data_type(Timestamp.arrow()),
            ),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

struct ColumnState {
    builder: Builder,
    nulls: u64,
    bounds: Bounds,
}

/// Fills one row, column by column, in the table's column order.
pub struct RowWriter<'a> {
    columns: &'a mut [ColumnState],
    next: usize,
    mismatch: bool,
}

impl RowWriter<'_> {
    fn slot(&mut self) -> Option<&mut ColumnState> {
        let i = self.next;
        self.next += 1;
        let c = self.columns.get_mut(i);
        if c.is_none() {
            self.mismatch = true;
        }
        c
    }

    pub fn str(&mut self, v: Option<&str>) {
        let Some(c) = self.slot() else { return };
        let Builder::Utf8(b) = &mut c.builder else {
            self.mismatch = true;
            return;
        };
        b.append_option(v);
        match v {
            None => c.nulls += 1,
            Some(s) if s.len() > MAX_STAT_STRING => c.bounds = Bounds::Unbounded,
            Some(s) => match &mut c.bounds {
                Bounds::None => c.bounds = Bounds::Text(s.to_owned(), s.to_owned()),
                Bounds::Text(lo, hi) => {
                    if s < lo.as_str() {
                        *lo = s.to_owned();
                    }
                    if s > hi.as_str() {
                        *hi = s.to_owned();
                    }
                }
                _ => {}
            },
        }
    }

    fn int(c: &mut ColumnState, v: Option<i64>) {
        match v {
            None => c.nulls += 1,
            Some(v) => match &mut c.bounds {
                Bounds::None => c.bounds = Bounds::Int(v, v),
                Bounds::Int(lo, hi) => {
                    *lo = (*lo).min(v);
                    *hi = (*hi).max(v);
                }
                _ => {}
            },
        }
    }

    pub fn i32(&mut self, v: Option<i32>) {
        let Some(c) = self.slot() else { return };
        let Builder::Int32(b) = &mut c.builder else {
            self.mismatch = true;
            return;
        };
        b.append_option(v);
        Self::int(c, v.map(i64::from));
    }

    pub fn i64(&mut self, v: Option<i64>) {
        let Some(c) = self.slot() else { return };
        let Builder::Int64(b) = &mut c.builder else {
            self.mismatch = true;
            return;
        };
        b.append_option(v);
        Self::int(c, v);
    }

    pub fn ts(&mut self, v: Option<Micros>) {
        let Some(c) = self.slot() else { return };
        let Builder::Timestamp(b) = &mut c.builder else {
            self.mismatch = true;
            return;
        };
        b.append_option(v);
        Self::int(c, v);
    }

    pub fn f64(&mut self, v: Option<f64>) {
        let Some(c) = self.slot() else { return };
        let Builder::Float64(b) = &mut c.builder else {
            self.mismatch = true;
            return;
        };
        b.append_option(v);
        match v {
            None => c.nulls += 1,
            // NaN has no place in an order; it leaves the bounds alone.
            Some(v) if v.is_nan() => {}
            Some(v) => match &mut c.bounds {
                Bounds::None => c.bounds = Bounds::Float(v, v),
                Bounds::Float(lo, hi) => {
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                }
                _ => {}
            },
        }
    }

    pub fn bool(&mut self, v: bool) {
        let Some(c) = self.slot() else { return };
        let Builder::Bool(b) = &mut c.builder else {
            self.mismatch = true;
            return;
        };
        b.append_value(v);
    }
}

/// The Parquet encoder of one file, on its own thread: encoding (dictionaries, levels,
/// Snappy) costs about as much as decoding the NDJSON, so with it beside the decoder a batch
/// uses both cores. At most [`QUEUED_BATCHES`] record batches wait for it, which bounds the
/// memory the two stages add.
struct Encoder {
    batches: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    done: Option<std::thread::JoinHandle<Result<Vec<u8>, String>>>,
}

/// Record batches queued between the row builders and the encoder thread.
const QUEUED_BATCHES: usize = 2;

impl Encoder {
    fn start(table: &'static str, schema: SchemaRef) -> Result<Self, ParquetError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| {
            ParquetError::Encode {
                table,
                reason: e.to_string(),
            }
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(QUEUED_BATCHES);
        let done = std::thread::Builder::new()
            .name(format!("parquet-{table}"))
            .spawn(move || {
                for batch in rx {
                    writer.write(&batch).map_err(|e| e.to_string())?;
                }
                writer.into_inner().map_err(|e| e.to_string())
            })
            .map_err(|e| ParquetError::Encode {
                table,
                reason: format!("encoder thread: {e}"),
            })?;
        Ok(Self {
            batches: Some(tx),
            done: Some(done),
        })
    }

    /// The file's bytes, or why encoding failed.
    fn finish(&mut self) -> Result<Vec<u8>, String> {
        self.batches = None; // ends the thread's loop
        match self.done.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("encoder thread panicked".into()),
            None => Err("encoder already finished".into()),
        }
    }

    fn write(&mut self, batch: RecordBatch) -> Result<(), String> {
        let sent = self.batches.as_ref().map(|tx| tx.send(batch).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: its error says why.
        self.finish().and(Err("encoder stopped".into()))
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // An abandoned file (a failed batch): let the thread end, without waiting for it.
        self.batches = None;
    }
}

/// Encodes rows of one table into one Parquet file in memory.
pub struct FileWriter<R: TableRow> {
    schema: SchemaRef,
    encoder: Encoder,
    columns: Vec<ColumnState>,
    buffered: usize,
    rows: u64,
    mismatch: bool,
    _row: std::marker::PhantomData<fn(&R)>,
}

fn encode_err<R: TableRow>(e: impl std::fmt::Display) -> ParquetError {
    ParquetError::Encode {
        table: R::TABLE,
        reason: e.to_string(),
    }
}

impl<R: TableRow> FileWriter<R> {
    pub fn new() -> Result<Self, ParquetError> {
        let schema = schema(R::COLUMNS);
        Ok(Self {
            encoder: Encoder::start(R::TABLE, schema.clone())?,
            schema,
            columns: Self::fresh_columns(),
            buffered: 0,
            rows: 0,
            mismatch: false,
            _row: std::marker::PhantomData,
        })
    }

    fn fresh_columns() -> Vec<ColumnState> {
        R::COLUMNS
            .iter()
            .map(|c| ColumnState {
                builder: Builder::new(c.kind),
                nulls: 0,
                bounds: Bounds::None,
            })
            .collect()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn push(&mut self, row: &R) -> Result<(), ParquetError> {
        let mut w = RowWriter {
            columns: &mut self.columns,
            next: 0,
            mismatch: false,
        };
        row.append(&mut w);
        if w.mismatch || w.next != R::COLUMNS.len() {
            self.mismatch = true;
            return Err(ParquetError::Columns { table: R::TABLE });
        }
        self.rows += 1;
        self.buffered += 1;
        if self.buffered >= BUILDER_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| c.builder.finish())
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(encode_err::<R>)?;
        self.encoder.write(batch).map_err(encode_err::<R>)?;
        self.buffered = 0;
        Ok(())
    }

    /// The finished file, named `name`.
    pub fn finish(mut self, name: String) -> Result<DataFile, ParquetError> {
        if self.mismatch {
            return Err(ParquetError::Columns { table: R::TABLE });
        }
        self.flush()?;
        let bytes = self.encoder.finish().map_err(encode_err::<R>)?;
        let mut stats = Stats {
            num_records: self.rows,
            ..Default::default()
        };
        for (def, c) in R::COLUMNS.iter().zip(&self.columns) {
            stats
                .null_count
                .insert(def.name.into(), Value::from(c.nulls));
            let bounds = match &c.bounds {
                Bounds::Int(lo, hi) if def.kind == Timestamp => {
                    // Delta writes timestamps in stats at millisecond precision: round the
                    // bounds outwards so they still bound every microsecond value.
                    rfc3339_ms(lo.div_euclid(1000)).zip(rfc3339_ms(
                        hi.div_euclid(1000) + i64::from(hi.rem_euclid(1000) != 0),
                    ))
                }
                Bounds::Int(lo, hi) => Some((Value::from(*lo), Value::from(*hi))),
                Bounds::Float(lo, hi) => Some((Value::from(*lo), Value::from(*hi))),
                Bounds::Text(lo, hi) => Some((Value::from(lo.as_str()), Value::from(hi.as_str()))),
                Bounds::None | Bounds::Unbounded => None,
            };
            if let Some((lo, hi)) = bounds {
                stats.min_values.insert(def.name.into(), lo);
                stats.max_values.insert(def.name.into(), hi);
            }
        }
        Ok(DataFile {
            add: AddFile {
                path: name,
                size: bytes.len() as u64,
                rows: self.rows,
                stats,
            },
            bytes: Bytes::from(bytes),
        })
    }
}

/// Milliseconds since the epoch as `2024-05-01T12:00:00.123Z`.
fn rfc3339_ms(ms: i64) -> Option<Value> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).ok().map(Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::rows::DecodeStatus;
    use arrow_array::{Array, StringArray, TimestampMicrosecondArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn cell(i: usize, text: Option<&str>) -> QuestionResponseRow {
        QuestionResponseRow {
            survey_id: "SV_1".into(),
            response_id: format!("R_{i:05}"),
            recorded_at: 1_700_000_000_000_123 + i as i64,
            exported_at: 1_700_000_100_000_000,
            definition_version: None,
            export_key: format!("QID{i}"),
            loop_id: None,
            question_id: format!("QID{i}"),
            sub_key: None,
            field: "value".into(),
            item_index: None,
            code: Some(i.to_string()),
            value_num: Some(i as f64 / 2.0),
            value_text: text.map(str::to_owned),
            label: None,
            displayed: true,
            answered: i.is_multiple_of(2),
            decode_status: DecodeStatus::DefinitionMissing,
        }
    }

    #[test]
    fn rows_round_trip_through_parquet_with_exact_stats() {
        let long = "x".repeat(MAX_STAT_STRING + 1);
        let mut w = FileWriter::<QuestionResponseRow>::new().unwrap();
        let n = BUILDER_ROWS + 3; // spans a builder flush
        for i in 0..n {
            let text = match i {
                0 => Some(long.as_str()),
                1 => Some("é"),
                _ => None,
            };
            w.push(&cell(i, text)).unwrap();
        }
        let f = w.finish("part-x.snappy.parquet".into()).unwrap();
        assert_eq!(f.add.rows, n as u64);
        assert_eq!(f.add.size, f.bytes.len() as u64);
        let s = &f.add.stats;
        assert_eq!(s.num_records, n as u64);
        assert_eq!(s.null_count["value_text"], Value::from(n as u64 - 2));
        assert_eq!(s.null_count["survey_id"], Value::from(0));
        assert!(
            !s.min_values.contains_key("value_text"),
            "long text: no bound"
        );
        assert_eq!(s.min_values["response_id"], "R_00000");
        assert_eq!(s.max_values["response_id"], format!("R_{:05}", n - 1));
        assert_eq!(s.min_values["value_num"], 0.0);
        // 1_700_000_000_000_123 µs: floor and ceiling at ms.
        assert_eq!(s.min_values["recorded_at"], "2023-11-14T22:13:20.000Z");
        assert!(!s.min_values.contains_key("displayed"));

        let reader = ParquetRecordBatchReaderBuilder::try_new(f.bytes.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut seen = 0;
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.schema(), schema(QuestionResponseRow::COLUMNS));
            let ids = batch
                .column_by_name("response_id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let rec = batch
                .column_by_name("recorded_at")
                .unwrap()
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            for r in 0..batch.num_rows() {
                assert_eq!(ids.value(r), format!("R_{:05}", seen + r));
                assert_eq!(rec.value(r), 1_700_000_000_000_123 + (seen + r) as i64);
            }
            assert_eq!(rec.null_count(), 0);
            seen += batch.num_rows();
        }
        assert_eq!(seen, n);
    }

    #[test]
    fn names_depend_on_table_survey_and_inputs_only() {
        let a = file_name("t", "SV_1", &["a".into(), "b".into()]);
        assert_eq!(a, file_name("t", "SV_1", &["a".into(), "b".into()]));
        assert!(a.starts_with("part-SV_1-") && a.ends_with(".snappy.parquet"));
        assert_ne!(a, file_name("t", "SV_1", &["ab".into()]));
        assert_ne!(a, file_name("u", "SV_1", &["a".into(), "b".into()]));
        assert_ne!(a, file_name("t", "SV_2", &["a".into(), "b".into()]));
    }

    #[test]
    fn an_empty_file_is_valid() {
        let f = FileWriter::<EmbeddedDataRow>::new()
            .unwrap()
            .finish("e".into())
            .unwrap();
        assert_eq!(f.add.rows, 0);
        assert!(f.bytes.starts_with(b"PAR1"));
    }
}
