//! The analytics layer (`AnalyticsBuilder`): decodes the raw NDJSON export blobs with the
//! survey definition valid when each response was recorded, and appends the rows to
//! append-only Delta tables in `ANALYTICS_CONTAINER` (reference `analytics-layer.md` §5).
//!
//! `rows` is the seam between the decoder (export row + definition → rows) and the table
//! writer (rows → Parquet files → Delta log commits).

pub mod decode;
pub mod definition;
pub mod privacy;
pub mod rows;
pub mod store;
