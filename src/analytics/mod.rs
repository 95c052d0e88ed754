//! The analytics layer (`AnalyticsBuilder`): decodes the raw NDJSON export blobs with the
//! survey definition valid when each response was recorded, and appends the rows to
//! append-only Delta tables in `ANALYTICS_CONTAINER` (reference `analytics-layer.md` §5).
//!
//! `rows` is the seam between the decoder (export row + definition → rows) and the table
//! writer: `parquet` (rows → content-addressed Parquet files), `log` (one table's
//! `_delta_log/`, create-if-absent versions) and `commit` (Delta actions, retry, checkpoints);
//! `builder` is the timer that drives them (`docs/analytics.md`).

pub mod builder;
pub mod commit;
pub mod decode;
pub mod definition;
pub mod log;
pub mod parquet;
pub mod privacy;
pub mod rows;
pub mod store;

pub use builder::{AnalyticsService, SPEC};
