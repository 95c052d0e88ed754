//! The Delta checkpoint file: a table's actions (one JSON object each) ⇄ the protocol's
//! checkpoint Parquet schema ("Checkpoint Schema", for the actions a protocol-1/2 append-only
//! table has). `commit` decides when to write one and what it holds.
//!
//! Hand-written over Arrow arrays rather than through `arrow-json`: that crate (and the
//! `arrow-cast` kernels it links) cost 1.7 MB of the stripped binary for these ~150 lines
//! of work (`docs/analytics.md`, "Performance").

use arrow_array::builder::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, ListArray, MapArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Actions per record batch (and row group) of a checkpoint.
const BATCH: usize = 4096;

fn map_of_strings() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn strukt(fields: Vec<Field>) -> DataType {
    DataType::Struct(Fields::from(fields))
}

/// The checkpoint's Parquet schema.
fn schema() -> SchemaRef {
    use DataType::{Boolean, Int32, Int64, Utf8};
    let f = |name: &str, t: DataType| Field::new(name, t, true);
    Arc::new(Schema::new(vec![
        f(
            "txn",
            strukt(vec![
                f("appId", Utf8),
                f("version", Int64),
                f("lastUpdated", Int64),
            ]),
        ),
        f(
            "add",
            strukt(vec![
                f("path", Utf8),
                f("partitionValues", map_of_strings()),
                f("size", Int64),
                f("modificationTime", Int64),
                f("dataChange", Boolean),
                f("stats", Utf8),
                f("tags", map_of_strings()),
            ]),
        ),
        f(
            "remove",
            strukt(vec![
                f("path", Utf8),
                f("deletionTimestamp", Int64),
                f("dataChange", Boolean),
                f("extendedFileMetadata", Boolean),
                f("partitionValues", map_of_strings()),
                f("size", Int64),
            ]),
        ),
        f(
            "metaData",
            strukt(vec![
                f("id", Utf8),
                f("name", Utf8),
                f("description", Utf8),
                f(
                    "format",
                    strukt(vec![f("provider", Utf8), f("options", map_of_strings())]),
                ),
                f("schemaString", Utf8),
                f(
                    "partitionColumns",
                    DataType::List(Arc::new(Field::new("element", Utf8, true))),
                ),
                f("configuration", map_of_strings()),
                f("createdTime", Int64),
            ]),
        ),
        f(
            "protocol",
            strukt(vec![
                f("minReaderVersion", Int32),
                f("minWriterVersion", Int32),
            ]),
        ),
    ]))
}

fn nulls_of(values: &[Option<&Value>], present: impl Fn(&Value) -> bool) -> Option<NullBuffer> {
    let valid: Vec<bool> = values.iter().map(|v| v.is_some_and(&present)).collect();
    Some(NullBuffer::from(valid)).filter(|n| n.null_count() > 0)
}

/// The array of type `t` holding `values` (`None` or a value of another JSON type: null).
fn array(t: &DataType, values: &[Option<&Value>]) -> Result<ArrayRef, String> {
    let e = |e: arrow_schema::ArrowError| e.to_string();
    Ok(match t {
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            values
                .iter()
                .for_each(|v| b.append_option(v.and_then(Value::as_str)));
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            values
                .iter()
                .for_each(|v| b.append_option(v.and_then(Value::as_i64)));
            Arc::new(b.finish())
        }
        DataType::Int32 => {
            let mut b = Int32Builder::new();
            values.iter().for_each(|v| {
                b.append_option(
                    v.and_then(Value::as_i64)
                        .and_then(|i| i32::try_from(i).ok()),
                )
            });
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            values
                .iter()
                .for_each(|v| b.append_option(v.and_then(Value::as_bool)));
            Arc::new(b.finish())
        }
        DataType::Struct(fields) => {
            let children = fields
                .iter()
                .map(|f| {
                    let column: Vec<Option<&Value>> = values
                        .iter()
                        .map(|v| v.and_then(|o| o.as_object()?.get(f.name())))
                        .collect();
                    array(f.data_type(), &column)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = nulls_of(values, Value::is_object);
            Arc::new(StructArray::try_new(fields.clone(), children, nulls).map_err(e)?)
        }
        DataType::List(item) => {
            let lists: Vec<&[Value]> = values
                .iter()
                .map(|v| v.and_then(Value::as_array).map_or(&[][..], Vec::as_slice))
                .collect();
            let items: Vec<Option<&Value>> =
                lists.iter().flat_map(|l| l.iter().map(Some)).collect();
            let offsets = OffsetBuffer::from_lengths(lists.iter().map(|l| l.len()));
            let child = array(item.data_type(), &items)?;
            let nulls = nulls_of(values, Value::is_array);
            Arc::new(ListArray::try_new(item.clone(), offsets, child, nulls).map_err(e)?)
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err("map entries are not a struct".into());
            };
            let maps: Vec<Option<&Map<String, Value>>> = values
                .iter()
                .map(|v| v.and_then(Value::as_object))
                .collect();
            let (mut keys, mut vals) = (StringBuilder::new(), StringBuilder::new());
            for (k, v) in maps.iter().flatten().flat_map(|m| m.iter()) {
                keys.append_value(k);
                vals.append_option(v.as_str());
            }
            let kv_array = StructArray::try_new(
                kv.clone(),
                vec![Arc::new(keys.finish()), Arc::new(vals.finish())],
                None,
            )
            .map_err(e)?;
            let offsets = OffsetBuffer::from_lengths(maps.iter().map(|m| m.map_or(0, Map::len)));
            let nulls = nulls_of(values, Value::is_object);
            Arc::new(
                MapArray::try_new(entries.clone(), offsets, kv_array, nulls, false).map_err(e)?,
            )
        }
        other => return Err(format!("no checkpoint column has type {other}")),
    })
}

/// Actions → checkpoint Parquet.
pub fn to_parquet(actions: &[Value]) -> Result<Bytes, String> {
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(|e| e.to_string())?;
    for chunk in actions.chunks(BATCH) {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let values: Vec<Option<&Value>> = chunk.iter().map(|a| a.get(f.name())).collect();
                array(f.data_type(), &values)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(|e| e.to_string())?))
}

/// Row `i` of `a` as JSON; `None` when null (left out of its object, as in a JSON commit).
fn value(a: &dyn Array, i: usize) -> Result<Option<Value>, String> {
    if a.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match a.data_type() {
        DataType::Utf8 => Value::from(a.as_string::<i32>().value(i)),
        DataType::Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Value::from(a.as_primitive::<Int32Type>().value(i)),
        DataType::Boolean => Value::from(a.as_boolean().value(i)),
        DataType::Struct(_) => {
            let s = a.as_struct();
            let mut o = Map::new();
            for (f, column) in s.fields().iter().zip(s.columns()) {
                if let Some(v) = value(column.as_ref(), i)? {
                    o.insert(f.name().clone(), v);
                }
            }
            Value::Object(o)
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            let mut out = Vec::with_capacity(items.len());
            for j in 0..items.len() {
                out.push(value(items.as_ref(), j)?.unwrap_or(Value::Null));
            }
            Value::Array(out)
        }
        DataType::Map(_, _) => {
            let entries = a.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut o = Map::new();
            for j in 0..entries.len() {
                let Some(Value::String(k)) = value(keys.as_ref(), j)? else {
                    return Err("a map key is not a string".into());
                };
                o.insert(k, value(values.as_ref(), j)?.unwrap_or(Value::Null));
            }
            Value::Object(o)
        }
        other => return Err(format!("unexpected checkpoint column type {other}")),
    }))
}

/// Checkpoint Parquet → its actions (nulls left out, as in a JSON commit).
pub fn actions(parquet: &Bytes) -> Result<Vec<Value>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(parquet.clone())
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        for i in 0..batch.num_rows() {
            let mut action = Map::new();
            for (f, column) in batch.schema().fields().iter().zip(batch.columns()) {
                if let Some(v) = value(column.as_ref(), i)? {
                    action.insert(f.name().clone(), v);
                }
            }
            out.push(Value::Object(action));
        }
    }
    Ok(out)
}
