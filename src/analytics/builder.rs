//! `AnalyticsBuilder`: the timer that turns new export blobs into rows of the Delta tables
//! (`docs/analytics.md` has the protocol, the batching rule and the crash analysis).
//!
//! Per survey with `export = true`, with the cursor `{STATE_CONTAINER}/analytics/{surveyId}.json`:
//! 1. pick a batch: the export blobs after the cursor's `lastBlob`, once they are big or old
//!    enough ([`AnalyticsSettings`]), and record it in the cursor as `inflight` (ETag-checked);
//! 2. stream its blobs line by line through `decode` into one Parquet file per table;
//! 3. upload the files and commit each table (an `add` already in the log is skipped);
//! 4. move `lastBlob` to the batch's last blob and clear `inflight` (ETag-checked).
//!
//! A crash before 4 reruns the same batch: same blobs, same file names, no add twice.
//!
//! Before its batches, each survey's definition snapshots not yet in the dimension tables
//! (`dimensionVersions` in the cursor) are appended, one file per table and version, under
//! the same rule. After the surveys, `ticket_link` follows the ledgers with its own cursor
//! (`analytics/ticket-link.json`; [`super::ticket_link`]), in batches recorded as `inflight`
//! first, likewise.

use super::commit::{CommitError, Committed, Committer};
use super::decode::{decode, Policy, RowContext};
use super::definition::{Definitions, SurveyModel};
use super::log::{Log, LogError};
use super::parquet::{file_name, FileWriter, ParquetError, TableRow};
use super::privacy::AnalyticsConfig;
use super::rows::{EmbeddedDataRow, Micros, QuestionResponseRow, SurveyResponseRow, TicketLinkRow};
use super::store::{DefinitionStore, StoreError};
use super::ticket_link::{self, LinkCursor, Version};
use crate::close_loop::ledger::LoopLedger;
use crate::deps::Deps;
use crate::env::{number, SettingError};
use crate::fault::CrashHook;
use crate::host::{Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, Trigger};
use crate::qualtrics::{CallBudget, QualtricsClient};
use crate::secrets::{SecretName, SecretsProvider};
use crate::storage::blob_state::{self, BlobError, Condition};
use crate::storage::Storage;
use crate::tickets::ledger::Ledger;
use azure_core::http::Etag;
use azure_storage_blob::models::{BlobClientDownloadOptions, BlobContainerClientListBlobsOptions};
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::num::NonZero;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const TIMER: &str = "timer";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "AnalyticsBuilder",
    trigger: Trigger::Timer,
    input: TIMER,
};
const FUNCTION: &str = SPEC.name;

/// Download partition: the most of a blob held at once.
const PARTITION: usize = 4 * 1024 * 1024;

/// Settings of the analytics layer (all optional; `docs/settings.md`).
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    pub export_container: String,
    pub analytics_container: String,
    pub state_container: String,
    /// The run starts no new batch with less than `min_remaining` of this left, and abandons
    /// (to redo next run) a batch it cannot finish within it.
    pub time_budget: Duration,
    pub min_remaining: Duration,
    /// A batch is written once the pending blobs hold this many bytes …
    pub batch_min_bytes: u64,
    /// … or the oldest pending blob is this old;
    pub batch_max_age: Duration,
    /// and holds blobs up to this many bytes (at least one blob).
    pub batch_max_bytes: u64,
    /// A checkpoint every this many versions of a table.
    pub checkpoint_interval: u64,
    pub crash: CrashHook,
}

impl AnalyticsSettings {
    pub fn build(deps: &Deps) -> Result<Self, SettingError> {
        let lookup = deps.lookup();
        let budget =
            Duration::from_secs(number(lookup, "ANALYTICS_TIME_BUDGET_SECONDS", 420u64)?.max(5));
        let mib = 1024 * 1024;
        Ok(Self {
            export_container: lookup("EXPORT_CONTAINER")
                .unwrap_or_else(|| "qualtrics-exports".into()),
            analytics_container: lookup("ANALYTICS_CONTAINER")
                .unwrap_or_else(|| "qualtrics-analytics".into()),
            state_container: deps.state_container.as_str().to_owned(),
            time_budget: budget,
            min_remaining: (budget / 6).clamp(Duration::from_secs(2), Duration::from_secs(90)),
            batch_min_bytes: number(lookup, "ANALYTICS_BATCH_MIN_MB", 64u64)? * mib,
            batch_max_age: Duration::from_secs(number(
                lookup,
                "ANALYTICS_BATCH_MAX_AGE_SECONDS",
                3600u64,
            )?),
            batch_max_bytes: number(lookup, "ANALYTICS_BATCH_MAX_MB", 256u64)?.max(1) * mib,
            checkpoint_interval: number(lookup, "ANALYTICS_CHECKPOINT_INTERVAL", 10u64)?.max(1),
            crash: CrashHook::from_settings(lookup),
        })
    }
}

/// One survey to build, and how.
#[derive(Debug, Clone)]
pub struct Job {
    pub survey_id: String,
    pub kind: JobKind,
    /// The survey's `[surveys.analytics]` (the default when absent).
    pub analytics: AnalyticsConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// The timer's: `analytics/{surveyId}.json`, batches by the size/age rule.
    Incremental,
    /// `qualtrics-bridge analytics rebuild`: its own cursor (per container), every blob whose
    /// export started at or after `since` (`YYYYMMDD…` prefix of the blob's file name), no
    /// waiting for a batch to fill.
    Rebuild { since: Option<String> },
}

impl Job {
    fn cursor_blob(&self, container: &str) -> String {
        match self.kind {
            JobKind::Incremental => format!("analytics/{}.json", self.survey_id),
            JobKind::Rebuild { .. } => {
                format!("analytics-rebuild/{container}/{}.json", self.survey_id)
            }
        }
    }

    /// `ticket_link`'s cursor beside this job's (a rebuild into another container follows
    /// the ledgers into that container from the start).
    fn link_cursor_blob(&self, container: &str) -> String {
        match self.kind {
            JobKind::Incremental => "analytics/ticket-link.json".into(),
            JobKind::Rebuild { .. } => format!("analytics-rebuild/{container}/ticket-link.json"),
        }
    }
}

/// `analytics/{surveyId}.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub v: u32,
    pub survey_id: String,
    /// The last export blob whose rows are committed.
    pub last_blob: Option<String>,
    /// The batch being written: its blobs, in order.
    pub inflight: Option<Vec<String>>,
    #[serde(default)]
    pub batches: u64,
    #[serde(default)]
    pub responses: u64,
    /// Lines that were not an exported response (named in the log by blob and line).
    #[serde(default)]
    pub skipped_lines: u64,
    pub last_run_at: Option<String>,
    /// Definition versions whose dimension rows are committed.
    #[serde(default)]
    pub dimension_versions: Vec<String>,
}

/// What happened to one survey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Batches committed this run (0: nothing new).
    Built {
        batches: u64,
        responses: u64,
    },
    /// New blobs wait for the batch to fill (size or age).
    Waiting {
        pending: usize,
        bytes: u64,
    },
    /// `ticket_link`: ticket states appended this run.
    Linked {
        rows: u64,
    },
    /// Another run moved the cursor first.
    Busy,
    Deferred(String),
    Failed(String),
}

#[derive(Debug)]
pub struct SurveyReport {
    pub survey_id: String,
    pub outcome: Outcome,
}

impl SurveyReport {
    pub fn line(&self) -> String {
        let sid = &self.survey_id;
        match &self.outcome {
            Outcome::Built { batches, responses } => {
                format!("{sid}: {batches} batch(es), {responses} response(s) added to the tables")
            }
            Outcome::Linked { rows } => {
                format!("{sid}: {rows} ticket state(s) added from the ticket and loop ledgers")
            }
            Outcome::Waiting { pending, bytes } => format!(
                "{sid}: {pending} new export blob(s), {bytes} bytes: waiting for the batch to fill"
            ),
            Outcome::Busy => format!("{sid}: skipped: another run moved the cursor"),
            Outcome::Deferred(why) => format!("{sid}: deferred: {why}"),
            Outcome::Failed(why) => format!("{sid}: failed: {why}"),
        }
    }
}

/// Progress of a rebuild, for a display.
#[derive(Debug, Clone)]
pub enum Step {
    Batch { blobs: usize, bytes: u64 },
    Blob { name: String, responses: u64 },
    Committed { responses: u64 },
}

pub type ProgressFn = Arc<dyn Fn(Step) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no storage connection (AzureWebJobsStorage)")]
    NoStorage,
    #[error("{0}")]
    Storage(String),
}

/// A batch did not complete.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error("{blob}: download: {reason}")]
    Download { blob: String, reason: String },
    #[error("time budget spent; the batch is redone next run")]
    OutOfTime,
    #[error("the cursor was moved by another run")]
    Busy,
    #[error("{0}")]
    Ledger(String),
}

/// `AnalyticsBuilder`'s state.
#[derive(Debug)]
pub struct AnalyticsService {
    jobs: Vec<Job>,
    settings: AnalyticsSettings,
    storage: Option<Storage>,
    secrets: Arc<SecretsProvider>,
    qualtrics: Option<Arc<QualtricsClient>>,
}

impl AnalyticsService {
    /// `surveys`: each exported survey and its `[surveys.analytics]`.
    pub fn build(
        surveys: Vec<(String, AnalyticsConfig)>,
        deps: &Deps,
    ) -> Result<Self, SettingError> {
        let jobs = surveys
            .into_iter()
            .map(|(survey_id, analytics)| Job {
                survey_id,
                kind: JobKind::Incremental,
                analytics,
            })
            .collect();
        Ok(Self::new(jobs, AnalyticsSettings::build(deps)?, deps))
    }

    pub fn new(jobs: Vec<Job>, settings: AnalyticsSettings, deps: &Deps) -> Self {
        Self {
            jobs,
            settings,
            storage: deps.storage.clone(),
            secrets: deps.secrets.clone(),
            qualtrics: deps.qualtrics.clone(),
        }
    }

    pub async fn invoke(
        &self,
        inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let timer = envelope.timer(TIMER)?;
        tracing::info!(invocation_id = %inv.id, function = FUNCTION, past_due = timer.is_past_due, surveys = self.jobs.len(), "analytics run");
        let mut reply = InvocationReply::new();
        if self.jobs.is_empty() {
            return Ok(reply.log("no survey is configured for export"));
        }
        let reports = self
            .run(&self.jobs, &inv.id, None)
            .await
            .map_err(|e| InvocationError::retry_from("analytics run could not start", e))?;
        for r in reports {
            reply = reply.log(r.line());
        }
        Ok(reply)
    }

    /// Builds `jobs` one after the other within the time budget: the timer and
    /// `qualtrics-bridge analytics rebuild` both call it.
    pub async fn run(
        &self,
        jobs: &[Job],
        invocation_id: &str,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<SurveyReport>, RunError> {
        let s = &self.settings;
        let storage = self.storage.as_ref().ok_or(RunError::NoStorage)?;
        let container = |name: &str| {
            storage
                .blob_container(name)
                .map_err(|e| RunError::Storage(e.to_string()))
        };
        let run = Run {
            settings: s,
            deadline: Instant::now() + s.time_budget,
            exports: container(&s.export_container)?,
            tables: Arc::new(container(&s.analytics_container)?),
            states: container(&s.state_container)?,
            progress,
            secrets: &self.secrets,
            qualtrics: self.qualtrics.as_deref(),
            definitions: DefinitionStore::new(container(&s.state_container)?),
            tickets: Ledger::new(container(&s.state_container)?, &s.state_container),
            loops: LoopLedger::new(container(&s.state_container)?),
        };
        for c in [&run.exports, &*run.tables, &run.states] {
            blob_state::ensure_container(c)
                .await
                .map_err(|e| RunError::Storage(e.to_string()))?;
        }
        let mut reports = Vec::new();
        for job in jobs {
            let sid = &job.survey_id;
            let t0 = Instant::now();
            let outcome = run.survey(job).await;
            let ms = t0.elapsed().as_millis() as u64;
            match &outcome {
                Outcome::Failed(why) => {
                    tracing::error!(invocation_id, function = FUNCTION, survey_id = %sid, reason = %why, duration_ms = ms, outcome = "failed", "analytics failed")
                }
                other => {
                    tracing::info!(invocation_id, function = FUNCTION, survey_id = %sid, duration_ms = ms, outcome = ?other, "analytics survey done")
                }
            }
            reports.push(SurveyReport {
                survey_id: sid.clone(),
                outcome,
            });
        }
        if let Some(job) = jobs.first() {
            let outcome = run
                .ticket_links(&job.link_cursor_blob(&s.analytics_container))
                .await;
            if let Outcome::Failed(why) = &outcome {
                tracing::error!(invocation_id, function = FUNCTION, reason = %why, outcome = "failed", "ticket_link failed");
            }
            reports.push(SurveyReport {
                survey_id: TicketLinkRow::TABLE.into(),
                outcome,
            });
        }
        Ok(reports)
    }
}

struct Run<'a> {
    settings: &'a AnalyticsSettings,
    deadline: Instant,
    exports: BlobContainerClient,
    tables: Arc<BlobContainerClient>,
    states: BlobContainerClient,
    progress: Option<ProgressFn>,
    secrets: &'a SecretsProvider,
    qualtrics: Option<&'a QualtricsClient>,
    definitions: DefinitionStore,
    tickets: Ledger,
    loops: LoopLedger,
}

/// An export blob not yet in the tables.
struct Pending {
    name: String,
    size: u64,
    modified: Option<OffsetDateTime>,
}

/// The rows of one batch, one file per table.
struct Files {
    responses: FileWriter<SurveyResponseRow>,
    cells: FileWriter<QuestionResponseRow>,
    embedded: FileWriter<EmbeddedDataRow>,
    responses_seen: u64,
    skipped: u64,
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// When the export of `blob` started: its file name begins `YYYYMMDDTHHMMSSZ`.
fn exported_at_of(blob: &str) -> Option<Micros> {
    let file = blob.rsplit('/').next()?;
    let stamp = file.get(..16)?;
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(stamp, &f).ok()?.assume_utc();
    Some((t.unix_timestamp_nanos() / 1000) as i64)
}

impl Run<'_> {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn report(&self, step: Step) {
        if let Some(p) = &self.progress {
            p(step);
        }
    }

    /// The definition snapshots and the privacy policy `job`'s rows are decoded with. The
    /// current definition is fetched first (stored only when its `LastModified` is new); if
    /// that fails the stored snapshots serve, and with none stored the run fails rather than
    /// commit rows it could not decode (it is retried next run). Without `QUALTRICS_BASE_URL`
    /// rows are kept undecoded (`definition_missing`), to be decoded by a rebuild.
    async fn decoding(&self, job: &Job) -> Result<(Definitions, Policy), String> {
        let sid = &job.survey_id;
        let store = &self.definitions;
        let mut fetch_failed = None;
        if let Some(client) = self.qualtrics {
            let budget = CallBudget::new(Some(self.deadline), 2);
            match store.refresh(client, self.secrets, &budget, sid).await {
                Ok(r) => {
                    tracing::info!(survey_id = %sid, definition = ?r, "survey definition checked")
                }
                // A survey Qualtrics no longer has: its exports are still built, undecoded
                // unless a snapshot was stored while it existed.
                Err(StoreError::Qualtrics(e)) if e.is_not_found() => {
                    tracing::warn!(survey_id = %sid, error = %e, "survey definition not found; stored snapshots serve");
                }
                Err(e) => {
                    tracing::warn!(survey_id = %sid, error = %e, "survey definition not fetched; stored snapshots serve");
                    fetch_failed = Some(e.to_string());
                }
            }
        }
        let definitions = store
            .load(sid)
            .await
            .map_err(|e| format!("survey definitions: {e}"))?;
        if let (true, Some(why)) = (definitions.is_empty(), fetch_failed) {
            return Err(format!(
                "no survey definition stored and none fetched: {why}"
            ));
        }
        let hash_key = if job.analytics.identity.is_empty() {
            None
        } else {
            self.secrets
                .get(SecretName::AnalyticsHashKey)
                .await
                .map_err(|e| format!("secret analytics-hash-key: {e}"))?
        };
        Ok((definitions, job.analytics.policy(hash_key)))
    }

    async fn survey(&self, job: &Job) -> Outcome {
        let (definitions, policy) = match self.decoding(job).await {
            Ok(d) => d,
            Err(why) => return Outcome::Failed(why),
        };
        // The facts do not wait for the dimensions: a failure here is retried next run.
        if let Err(e) = self.dimensions(job, &definitions).await {
            tracing::warn!(function = FUNCTION, survey_id = %job.survey_id, error = %e, "dimension tables not updated; retried next run");
        }
        let (mut batches, mut responses) = (0, 0);
        loop {
            if self.remaining() < self.settings.min_remaining {
                return Outcome::Deferred("time budget short; resumes next run".into());
            }
            match self.next_batch(job, &definitions, &policy).await {
                Ok(Some(n)) => {
                    batches += 1;
                    responses += n;
                }
                Ok(None) => return Outcome::Built { batches, responses },
                Err(NoBatch::Waiting { pending, bytes }) if batches == 0 => {
                    return Outcome::Waiting { pending, bytes }
                }
                Err(NoBatch::Waiting { .. }) => return Outcome::Built { batches, responses },
                Err(NoBatch::Failed(BatchError::Busy)) => return Outcome::Busy,
                Err(NoBatch::Failed(e @ BatchError::OutOfTime)) => {
                    return Outcome::Deferred(e.to_string())
                }
                Err(NoBatch::Failed(e)) => return Outcome::Failed(e.to_string()),
            }
        }
    }

    /// Reads (or creates) the cursor.
    async fn cursor(&self, job: &Job) -> Result<(Cursor, Etag, String), BatchError> {
        let name = job.cursor_blob(&self.settings.analytics_container);
        let init = Cursor {
            v: 1,
            survey_id: job.survey_id.clone(),
            ..Default::default()
        };
        let (cursor, etag) = self.state(&name, &init).await?;
        Ok((cursor, etag, name))
    }

    /// Reads the state blob `name`, creating it as `init` first if absent.
    async fn state<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        init: &T,
    ) -> Result<(T, Etag), BatchError> {
        let b = self.states.blob_client(name);
        loop {
            if let Some((bytes, etag)) = blob_state::read(&b, name).await? {
                let cursor = serde_json::from_slice(&bytes).map_err(|e| BlobError::Other {
                    op: "parse cursor",
                    blob: name.to_owned(),
                    reason: e.to_string(),
                })?;
                return Ok((cursor, etag));
            }
            match blob_state::write(&b, name, to_bytes(init), Condition::Absent).await {
                Ok(_) | Err(BlobError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Appends the dimension rows of every snapshot version not yet in the tables.
    async fn dimensions(&self, job: &Job, definitions: &Definitions) -> Result<(), BatchError> {
        let (mut cursor, etag, name) = self.cursor(job).await?;
        let new: Vec<&SurveyModel> = definitions
            .models()
            .filter(|m| !cursor.dimension_versions.contains(&m.version))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let sid = &job.survey_id;
        let now = now_ms();
        for m in &new {
            let rows = m.rows();
            // Named by the snapshot's blob: the same version always lands under one name.
            let inputs = [DefinitionStore::blob_name(sid, &m.version)];
            self.land(filled(&rows.survey)?, sid, &inputs, now).await?;
            self.land(filled(&rows.questions)?, sid, &inputs, now)
                .await?;
            self.land(filled(&rows.items)?, sid, &inputs, now).await?;
            self.land(filled(&rows.choices)?, sid, &inputs, now).await?;
        }
        self.settings.crash.point("analytics-dims-before-cursor");
        cursor
            .dimension_versions
            .extend(new.iter().map(|m| m.version.clone()));
        self.save(&name, &cursor, &etag).await?;
        tracing::info!(function = FUNCTION, survey_id = %sid, versions = new.len(), "dimension tables updated");
        Ok(())
    }

    /// `ticket_link`: appends the ledgers' new states, a batch at a time, within the budget.
    async fn ticket_links(&self, name: &str) -> Outcome {
        let mut rows = 0;
        loop {
            if self.remaining() < self.settings.min_remaining {
                return Outcome::Deferred("time budget short; resumes next run".into());
            }
            match self.link_batch(name).await {
                Ok(Some(n)) => rows += n,
                Ok(None) => return Outcome::Linked { rows },
                Err(BatchError::Busy) => return Outcome::Busy,
                Err(e) => return Outcome::Failed(e.to_string()),
            }
        }
    }

    /// One batch of ledger changes; `Ok(None)` when there is none.
    async fn link_batch(&self, name: &str) -> Result<Option<u64>, BatchError> {
        let init = LinkCursor {
            v: 1,
            ..Default::default()
        };
        let (mut cursor, mut etag) = self.state(name, &init).await?;
        let batch = match cursor.inflight.clone() {
            Some(batch) => batch,
            None => {
                let mut listed = self.tickets.list().await.map_err(ledger_err)?;
                listed.extend(self.loops.list().await.map_err(ledger_err)?);
                let batch = cursor.changed(listed);
                if batch.is_empty() {
                    return Ok(None);
                }
                cursor.inflight = Some(batch.clone());
                etag = self.save(name, &cursor, &etag).await?;
                batch
            }
        };
        let mut w = FileWriter::<TicketLinkRow>::new()?;
        let mut added = 0;
        for v in &batch {
            if let Some(row) = self.link_row(v).await? {
                if cursor.observe(&v.name, &row, v.modified) {
                    w.push(&row)?;
                    added += 1;
                }
            }
        }
        let keys: Vec<String> = batch.iter().map(Version::key).collect();
        self.land(w, "ledgers", &keys, now_ms()).await?;
        self.settings.crash.point("analytics-links-before-cursor");
        cursor.advance(&batch);
        cursor.inflight = None;
        cursor.rows += added;
        self.save(name, &cursor, &etag).await?;
        Ok(Some(added))
    }

    /// The row one ledger blob version gives; `None` when it gives none, or when the blob
    /// changed (or went) since it was listed: the newer version is read from the next listing.
    async fn link_row(&self, v: &Version) -> Result<Option<TicketLinkRow>, BatchError> {
        // A listing gives the ETag bare, a download's header quoted.
        let same = |e: &Etag| e.to_string().trim_matches('"') == v.etag.trim_matches('"');
        if v.name.starts_with("loop/") {
            let got = self.loops.get(&v.name).await.map_err(ledger_err)?;
            Ok(got
                .filter(|(_, e)| same(e))
                .and_then(|(entry, _)| ticket_link::from_loop_entry(&entry)))
        } else {
            let got = self.tickets.get(&v.name).await.map_err(ledger_err)?;
            Ok(got
                .filter(|(_, e)| same(e))
                .and_then(|(entry, _)| ticket_link::from_ticket_entry(&entry)))
        }
    }

    async fn save<T: Serialize>(
        &self,
        name: &str,
        cursor: &T,
        etag: &Etag,
    ) -> Result<Etag, BatchError> {
        let b = self.states.blob_client(name);
        match blob_state::write(&b, name, to_bytes(cursor), Condition::Matches(etag, None)).await {
            Ok(e) => Ok(e),
            Err(BlobError::Conflict { .. }) => Err(BatchError::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// Export blobs of the survey after `after`, in name (= start time) order.
    async fn pending(&self, job: &Job, after: Option<&str>) -> Result<Vec<Pending>, BatchError> {
        let prefix = format!("{}/", job.survey_id);
        let opts = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.clone()),
            ..Default::default()
        };
        let list_err = |e: azure_core::Error| {
            BatchError::Blob(BlobError::Other {
                op: "list",
                blob: prefix.clone(),
                reason: crate::storage::Cause(&e).to_string(),
            })
        };
        let mut pages = self
            .exports
            .list_blobs(Some(opts))
            .map_err(list_err)?
            .into_pages();
        let since = match &job.kind {
            JobKind::Rebuild { since } => since.as_deref(),
            JobKind::Incremental => None,
        };
        let mut out = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(list_err)? {
            let items = page.into_model().map_err(list_err)?.blob_items;
            for item in items {
                let Some(name) = item.name else { continue };
                if !name.ends_with(".ndjson") || after.is_some_and(|a| name.as_str() <= a) {
                    continue;
                }
                let file = name.rsplit('/').next().unwrap_or_default();
                if since.is_some_and(|s| file < s) {
                    continue;
                }
                let props = item.properties;
                out.push(Pending {
                    size: props.as_ref().and_then(|p| p.content_length).unwrap_or(0),
                    modified: props.and_then(|p| p.last_modified),
                    name,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Commits one batch; `Ok(None)` when there is nothing new.
    async fn next_batch(
        &self,
        job: &Job,
        definitions: &Definitions,
        policy: &Policy,
    ) -> Result<Option<u64>, NoBatch> {
        let s = self.settings;
        let (mut cursor, mut etag, name) = self.cursor(job).await?;
        let batch = match cursor.inflight.clone() {
            Some(batch) => batch,
            None => {
                let pending = self.pending(job, cursor.last_blob.as_deref()).await?;
                if pending.is_empty() {
                    return Ok(None);
                }
                let bytes: u64 = pending.iter().map(|p| p.size).sum();
                let oldest = pending.iter().filter_map(|p| p.modified).min();
                let old_enough = oldest.is_none_or(|t| {
                    (OffsetDateTime::now_utc() - t).whole_seconds()
                        >= s.batch_max_age.as_secs() as i64
                });
                if job.kind == JobKind::Incremental && bytes < s.batch_min_bytes && !old_enough {
                    return Err(NoBatch::Waiting {
                        pending: pending.len(),
                        bytes,
                    });
                }
                let mut total = 0;
                let batch: Vec<String> = pending
                    .into_iter()
                    .take_while(|p| {
                        let take = total == 0 || total + p.size <= s.batch_max_bytes;
                        total += p.size;
                        take
                    })
                    .map(|p| p.name)
                    .collect();
                self.report(Step::Batch {
                    blobs: batch.len(),
                    bytes: total,
                });
                cursor.inflight = Some(batch.clone());
                etag = self.save(&name, &cursor, &etag).await?;
                s.crash.point("analytics-after-inflight");
                batch
            }
        };
        let files = self
            .read_batch(&job.survey_id, &batch, definitions, policy)
            .await?;
        let (responses, skipped) = (files.responses_seen, files.skipped);
        let now = now_ms();
        let sid = &job.survey_id;
        self.land(files.responses, sid, &batch, now).await?;
        s.crash.point("analytics-after-first-commit");
        self.land(files.cells, sid, &batch, now).await?;
        self.land(files.embedded, sid, &batch, now).await?;
        s.crash.point("analytics-before-cursor");
        cursor.last_blob = batch.last().cloned().or(cursor.last_blob);
        cursor.inflight = None;
        cursor.batches += 1;
        cursor.responses += responses;
        cursor.skipped_lines += skipped;
        cursor.last_run_at = Some(
            OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        );
        self.save(&name, &cursor, &etag).await?;
        self.report(Step::Committed { responses });
        Ok(Some(responses))
    }

    /// Uploads a table's file (if it has rows) and commits it (creating the table if needed).
    async fn land<R: TableRow>(
        &self,
        w: FileWriter<R>,
        survey_id: &str,
        batch: &[String],
        now: i64,
    ) -> Result<Committed, BatchError> {
        let committer = Committer::new(
            Log::new(self.tables.clone(), R::TABLE),
            R::COLUMNS,
            self.settings.checkpoint_interval,
        );
        let mut adds = Vec::new();
        if w.rows() > 0 {
            let f = w.finish(file_name(R::TABLE, survey_id, batch))?;
            committer
                .log()
                .write_data_file(&f.add.path, f.bytes)
                .await?;
            adds.push(f.add);
        }
        self.settings.crash.point("analytics-after-data-file");
        Ok(committer.commit(&adds, now).await?)
    }

    async fn read_batch(
        &self,
        survey_id: &str,
        batch: &[String],
        definitions: &Definitions,
        policy: &Policy,
    ) -> Result<Files, BatchError> {
        let mut files = Files {
            responses: FileWriter::new()?,
            cells: FileWriter::new()?,
            embedded: FileWriter::new()?,
            responses_seen: 0,
            skipped: 0,
        };
        for blob in batch {
            let b = self.exports.blob_client(blob);
            let opts = BlobClientDownloadOptions {
                parallel: NonZero::new(1),
                partition_size: NonZero::new(PARTITION),
                ..Default::default()
            };
            let download_err = |e: azure_core::Error| BatchError::Download {
                blob: blob.clone(),
                reason: crate::storage::Cause(&e).to_string(),
            };
            let r = b.download(Some(opts)).await.map_err(download_err)?;
            let exported_at = exported_at_of(blob)
                .or_else(|| {
                    r.properties
                        .last_modified
                        .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
                })
                .unwrap_or(0);
            let ctx = RowContext {
                survey_id,
                exported_at,
                source_blob: blob,
            };
            let mut body = r.body;
            let mut carry: Vec<u8> = Vec::new();
            let mut line_no = 0u64;
            let mut on_line = |line: &[u8], files: &mut Files| -> Result<(), BatchError> {
                line_no += 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(());
                }
                match decode(line, &ctx, definitions, policy) {
                    Ok(d) => {
                        files.responses.push(&d.response)?;
                        for c in &d.cells {
                            files.cells.push(c)?;
                        }
                        for e in &d.embedded {
                            files.embedded.push(e)?;
                        }
                        files.responses_seen += 1;
                    }
                    Err(e) => {
                        files.skipped += 1;
                        tracing::warn!(function = FUNCTION, survey_id, blob = %blob, line = line_no, error = %e, "line skipped: not an exported response");
                    }
                }
                Ok(())
            };
            loop {
                let next = tokio::time::timeout(self.remaining(), body.next()).await;
                let chunk = match next {
                    Err(_) => return Err(BatchError::OutOfTime),
                    Ok(None) => break,
                    Ok(Some(c)) => c.map_err(download_err)?,
                };
                let mut rest: &[u8] = &chunk;
                while let Some(i) = memchr::memchr(b'\n', rest) {
                    if carry.is_empty() {
                        on_line(&rest[..i], &mut files)?;
                    } else {
                        carry.extend_from_slice(&rest[..i]);
                        let line = std::mem::take(&mut carry);
                        on_line(&line, &mut files)?;
                    }
                    rest = &rest[i + 1..];
                }
                carry.extend_from_slice(rest);
            }
            if !carry.is_empty() {
                on_line(&carry, &mut files)?;
            }
            if self.remaining().is_zero() {
                return Err(BatchError::OutOfTime);
            }
            self.report(Step::Blob {
                name: blob.clone(),
                responses: files.responses_seen,
            });
        }
        Ok(files)
    }
}

/// Why [`Run::next_batch`] wrote nothing.
enum NoBatch {
    Waiting { pending: usize, bytes: u64 },
    Failed(BatchError),
}

impl From<BatchError> for NoBatch {
    fn from(e: BatchError) -> Self {
        Self::Failed(e)
    }
}

/// A file of `rows` (the dimension rows of one version).
fn filled<R: TableRow>(rows: &[R]) -> Result<FileWriter<R>, ParquetError> {
    let mut w = FileWriter::new()?;
    for r in rows {
        w.push(r)?;
    }
    Ok(w)
}

fn ledger_err(e: impl std::fmt::Display) -> BatchError {
    BatchError::Ledger(e.to_string())
}

fn to_bytes<T: Serialize>(c: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(c).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_start_comes_from_the_blob_name() {
        assert_eq!(
            exported_at_of("SV_1/2024/05/01/20240501T120000Z-ES_abc.ndjson"),
            Some(1_714_564_800_000_000)
        );
        assert_eq!(exported_at_of("SV_1/x.ndjson"), None);
        assert_eq!(exported_at_of("é"), None);
    }

    #[test]
    fn cursors_are_per_survey_and_rebuilds_keep_their_own() {
        let job = |kind| Job {
            survey_id: "SV_1".into(),
            kind,
            analytics: AnalyticsConfig::default(),
        };
        assert_eq!(
            job(JobKind::Incremental).cursor_blob("c"),
            "analytics/SV_1.json"
        );
        assert_eq!(
            job(JobKind::Rebuild { since: None }).cursor_blob("c"),
            "analytics-rebuild/c/SV_1.json"
        );
    }
}
