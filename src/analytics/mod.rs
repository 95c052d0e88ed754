//! The analytics layer (`AnalyticsBuilder`): decodes the raw NDJSON export blobs with the
//! survey definition valid when each response was recorded, and appends the rows to
//! append-only Delta tables in `ANALYTICS_CONTAINER` (reference `analytics-layer.md` §5).
//!
//! `rows` is the seam between the decoder (export row + definition → rows) and the table
//! writer: `parquet` (rows → content-addressed Parquet files), `log` (one table's
//! `_delta_log/`, create-if-absent versions), `commit` (Delta actions, retry, checkpoints)
//! and `checkpoint` (a checkpoint's Parquet); `builder` is the timer that drives them
//! (`docs/analytics.md`). `dimensions` gives the definition snapshots' rows and `ticket_link`'s
//! rows their tables; `ticket_link` follows the ticket and loop ledgers.

pub mod builder;
pub mod checkpoint;
pub mod commit;
pub mod decode;
pub mod definition;
pub mod dimensions;
pub mod log;
pub mod parquet;
pub mod privacy;
pub mod rows;
pub mod store;
pub mod ticket_link;

pub use builder::{AnalyticsService, SPEC};
