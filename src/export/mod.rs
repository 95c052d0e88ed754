//! `ExportPoller`: the timer-driven incremental export of Qualtrics responses into Blob
//! Storage (issue 5; `docs/export.md` has the full protocol and its crash analysis).
//!
//! Per survey with `export = true`, under a lease on `bridge-state/exports/{surveyId}.json`:
//! 1. repair an unfinished run recorded in the state (`inflight`), if any;
//! 2. start an export with the stored `continuationToken` (first run: `allowContinuation`;
//!    rejected token: a date window from the last successful run, with overlap), poll with
//!    backoff until `status` is `complete` or `failed`;
//! 3. record `inflight` (progress id, file id, new token, blob name) in the state;
//! 4. stream the file zip → JSON → NDJSON into staged blocks, record the summary in the
//!    state, commit the block list (only if the blob does not exist);
//! 5. write the new token, clear `inflight`: every state write carries the ETag and the lease.
//!
//! [`run`] is the whole pipeline; the timer ([`invoke`]) and `qualtrics-bridge export` (a
//! [`JobKind::Backfill`] under its own state blob, the timer's cursor untouched) both call it.
//!
//! Reconciliation: exported response ids of surveys with tickets go to the `tickets` output
//! (`source: "export"`), at most [`ExportSettings::max_ticket_messages`] per reply; the
//! rest wait in the state blob for the next run.

pub mod stream;

use crate::deps::Deps;
use crate::env::{number, SettingError};
use crate::fault::CrashHook;
use crate::host::{Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, Trigger};
use crate::messages::{RequestSource, TicketRequest};
use crate::qualtrics::{CallBudget, ExportRequest, ExportStatus, QualtricsClient, QualtricsError};
use crate::secrets::SecretsProvider;
use crate::storage::blob_state::{self, BlobError, Condition};
use crate::storage::Storage;
use azure_core::http::Etag;
use azure_storage_blob::{BlobClient, BlobContainerClient};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{Summary, TransformOptions};
use time::OffsetDateTime;

const TIMER: &str = "timer";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "ExportPoller",
    trigger: Trigger::Timer,
    input: TIMER,
};
const FUNCTION: &str = SPEC.name;
const TICKETS: &str = "tickets";

/// Settings of the export (all optional; see `KNOWN_SETTINGS`).
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub export_container: String,
    pub state_container: String,
    /// The run stops starting new work when less than `min_remaining` of this is left.
    pub time_budget: Duration,
    pub min_remaining: Duration,
    pub poll_interval: Duration,
    pub poll_max: Duration,
    pub block_size: usize,
    pub max_ticket_messages: usize,
    /// Overlap of a fallback date window (rejected/expired token).
    pub overlap: Duration,
    pub lease_seconds: i32,
    /// 429 retries one run may spend, shared by all its surveys.
    pub throttle_retries: u32,
    /// Test-only fault hook: `BRIDGE_TEST_CRASH_AT` aborts the process once at a named point.
    pub crash: CrashHook,
}

impl ExportSettings {
    /// The settings from the app settings in `deps`; a number that does not parse is an
    /// error naming the setting.
    pub fn build(deps: &Deps) -> Result<Self, SettingError> {
        let lookup = deps.lookup();
        let budget =
            Duration::from_secs(number(lookup, "EXPORT_TIME_BUDGET_SECONDS", 420u64)?.max(5));
        Ok(Self {
            export_container: lookup("EXPORT_CONTAINER")
                .unwrap_or_else(|| "qualtrics-exports".into()),
            state_container: deps.state_container.as_str().to_owned(),
            time_budget: budget,
            min_remaining: (budget / 6).clamp(Duration::from_secs(2), Duration::from_secs(90)),
            poll_interval: Duration::from_millis(
                number(lookup, "EXPORT_POLL_INTERVAL_MS", 2000u64)?.max(10),
            ),
            poll_max: Duration::from_secs(10),
            block_size: 4 * 1024 * 1024,
            max_ticket_messages: number(lookup, "EXPORT_MAX_TICKET_MESSAGES", 1000usize)?,
            overlap: Duration::from_secs(3600),
            lease_seconds: 15,
            throttle_retries: number(lookup, "EXPORT_THROTTLE_RETRIES", 30u32)?,
            crash: CrashHook::from_settings(lookup),
        })
    }
}

/// `ExportPoller`'s state: its jobs (the surveys with `export = true`), its settings and the
/// clients it calls, built at start-up.
#[derive(Debug)]
pub struct ExportService {
    jobs: Vec<Job>,
    settings: ExportSettings,
    secrets: Arc<SecretsProvider>,
    storage: Option<Storage>,
    qualtrics: Option<Arc<QualtricsClient>>,
}

impl ExportService {
    /// The timer's service: `jobs` with the settings from `deps`' app settings.
    pub fn build(jobs: Vec<Job>, deps: &Deps) -> Result<Self, SettingError> {
        Ok(Self::new(jobs, ExportSettings::build(deps)?, deps))
    }

    /// A service with these `settings` (`qualtrics-bridge export` lengthens the budget).
    pub fn new(jobs: Vec<Job>, settings: ExportSettings, deps: &Deps) -> Self {
        Self {
            jobs,
            settings,
            secrets: deps.secrets.clone(),
            storage: deps.storage.clone(),
            qualtrics: deps.qualtrics.clone(),
        }
    }
}

/// Blocks being staged at once.
const BLOCKS_IN_FLIGHT: usize = 2;
/// Block buffers of one download: those in flight and the one the transform fills.
const BLOCK_BUFFERS: usize = BLOCKS_IN_FLIGHT + 1;
/// Filled input buffers queued for the inflater.
const READ_AHEAD_BUFFERS: usize = 2;
/// Input buffers of one download: those queued, the one the transform reads, the one the
/// download fills.
const INPUT_BUFFERS: usize = READ_AHEAD_BUFFERS + 2;
/// Size of each input buffer.
const INPUT_BUFFER_SIZE: usize = 256 * 1024;

/// `Inflight::mode` of a backfill.
const BACKFILL: &str = "backfill";

/// Pending ticket ids kept in the state at most (older ones beyond are dropped, logged).
const MAX_PENDING_TICKETS: usize = 50_000;
/// Boundary ids kept for de-duplicating a fallback window.
const MAX_BOUNDARY_IDS: usize = 20_000;

/// `bridge-state/exports/{surveyId}.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportState {
    pub v: u32,
    pub survey_id: String,
    /// When the bridge first ran for this survey (unix ms): responses recorded since are not
    /// history, so the first (full) export reconciles them too.
    #[serde(default)]
    pub created_ms: Option<i64>,
    pub continuation_token: Option<String>,
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    /// Start (unix ms) of the last export whose file was committed.
    pub last_export_started_ms: Option<i64>,
    /// Newest `recordedDate` (unix ms) exported so far.
    pub last_recorded_ms: Option<i64>,
    /// `(recordedDate ms, responseId)` within the overlap of the newest: de-duplicates a
    /// fallback window.
    #[serde(default)]
    pub boundary: BTreeSet<(i64, String)>,
    #[serde(default)]
    pub boundary_truncated: bool,
    #[serde(default)]
    pub exported_total: u64,
    #[serde(default)]
    pub runs: u64,
    pub last_blob: Option<String>,
    #[serde(default)]
    pub last_lines: u64,
    pub inflight: Option<Inflight>,
    #[serde(default)]
    pub pending_tickets: Vec<String>,
    pub last_error: Option<String>,
}

/// A run between "export complete" and "state advanced".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inflight {
    pub export_id: String,
    pub file_id: String,
    pub new_token: String,
    pub blob: String,
    pub started_ms: i64,
    /// `initial` (first export), `token`, `window` (fallback) or `backfill`.
    pub mode: String,
    /// Set after every block is staged, before the commit.
    pub summary: Option<Summary>,
}

/// What happened to one survey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exported {
        lines: u64,
        blob: Option<String>,
        duplicates: u64,
    },
    Busy,
    Deferred(String),
    Failed(String),
}

/// One survey to export, and how.
#[derive(Debug, Clone)]
pub struct Job {
    pub survey_id: String,
    /// Reconciliation: exported ids become ticket requests (incremental runs only).
    pub tickets: bool,
    pub kind: JobKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// The timer's: continues from `exports/{surveyId}.json`'s token.
    Incremental,
    /// `qualtrics-bridge export`: everything recorded after `since` (RFC 3339 UTC; `None`:
    /// everything), under its own state blob `backfills/{surveyId}.json`, so the timer's
    /// token is never read or moved.
    Backfill { since: Option<String> },
}

impl Job {
    fn state_blob(&self) -> String {
        match self.kind {
            JobKind::Incremental => format!("exports/{}.json", self.survey_id),
            JobKind::Backfill { .. } => format!("backfills/{}.json", self.survey_id),
        }
    }
}

/// One survey's result.
#[derive(Debug)]
pub struct SurveyReport {
    pub survey_id: String,
    pub outcome: Outcome,
    /// Response ids to queue as reconciliation ticket requests.
    pub tickets: Vec<String>,
}

impl SurveyReport {
    /// The one-line summary (the timer's `Logs[]` line; the command line's result).
    pub fn line(&self) -> String {
        let sid = &self.survey_id;
        match &self.outcome {
            Outcome::Exported { lines, blob, duplicates } => format!(
                "{sid}: exported {lines} response(s) to {} ({duplicates} overlap duplicate(s) skipped); {} ticket request(s) queued",
                blob.as_deref().unwrap_or("no blob"),
                self.tickets.len()
            ),
            Outcome::Busy => format!("{sid}: skipped: another run holds the lease"),
            Outcome::Deferred(why) => format!("{sid}: deferred: {why}"),
            Outcome::Failed(why) => format!("{sid}: failed: {why}"),
        }
    }
}

/// A run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("QUALTRICS_BASE_URL is not set; nothing exported")]
    NoQualtrics,
    #[error("no storage connection (AzureWebJobsStorage)")]
    NoStorage,
    #[error("{0}")]
    Storage(String),
}

/// Where a survey's export is, for a progress display.
#[derive(Debug, Clone)]
pub enum Step {
    /// The export job was started.
    Started {
        survey_id: String,
        export_id: String,
    },
    /// A progress poll (`percentComplete` is informational).
    Polled { percent: f64 },
    /// Bytes of the file received so far.
    Downloaded { bytes: u64 },
    /// The blob is committed (or the increment was empty).
    Committed { lines: u64 },
}

/// Receives [`Step`]s; the timer passes none.
pub type ProgressFn = Arc<dyn Fn(Step) + Send + Sync>;

struct Run<'a> {
    secrets: &'a SecretsProvider,
    client: &'a QualtricsClient,
    settings: &'a ExportSettings,
    budget: CallBudget,
    deadline: Instant,
    started: OffsetDateTime,
    exports: BlobContainerClient,
    states: BlobContainerClient,
    progress: Option<ProgressFn>,
}

impl ExportService {
    pub async fn invoke(
        &self,
        inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let timer = envelope.timer(TIMER)?;
        let jobs = &self.jobs;
        tracing::info!(invocation_id = %inv.id, function = FUNCTION, past_due = timer.is_past_due, surveys = jobs.len(), "export run");
        let mut reply = InvocationReply::new();
        if jobs.is_empty() {
            return Ok(reply.log("no survey is configured for export"));
        }
        let reports = match self.run(jobs, &inv.id, None).await {
            Ok(r) => r,
            Err(e @ RunError::NoQualtrics) => {
                tracing::error!(invocation_id = %inv.id, function = FUNCTION, "{e}");
                return Ok(reply.log(e.to_string()));
            }
            Err(e) => return Err(InvocationError::retry_from("export run could not start", e)),
        };
        let received_at = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut tickets = Vec::new();
        for r in reports {
            reply = reply.log(r.line());
            tickets.extend(r.tickets.into_iter().map(|rid| {
                TicketRequest {
                    v: TicketRequest::VERSION,
                    survey_id: r.survey_id.clone(),
                    response_id: rid,
                    source: RequestSource::Export,
                    topic: None,
                    received_at: received_at.clone(),
                    retry: None,
                }
                .to_text()
            }));
        }
        Ok(reply.queue(TICKETS, tickets))
    }

    /// Exports `jobs` one after the other within `settings.time_budget`: the one pipeline behind
    /// both the timer and `qualtrics-bridge export`. `invocation_id` tags the log lines.
    pub async fn run(
        &self,
        jobs: &[Job],
        invocation_id: &str,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<SurveyReport>, RunError> {
        let settings = &self.settings;
        let client = self.qualtrics.as_deref().ok_or(RunError::NoQualtrics)?;
        let storage = self.storage.as_ref().ok_or(RunError::NoStorage)?;
        let blob_err = |e: crate::storage::StorageError| RunError::Storage(e.to_string());
        let started_at = Instant::now();
        let run = Run {
            secrets: &self.secrets,
            client,
            settings,
            budget: CallBudget::new(
                Some(started_at + settings.time_budget),
                settings.throttle_retries,
            ),
            deadline: started_at + settings.time_budget,
            started: OffsetDateTime::now_utc(),
            exports: storage
                .blob_container(&settings.export_container)
                .map_err(blob_err)?,
            states: storage
                .blob_container(&settings.state_container)
                .map_err(blob_err)?,
            progress,
        };
        for c in [&run.exports, &run.states] {
            blob_state::ensure_container(c)
                .await
                .map_err(|e| RunError::Storage(e.to_string()))?;
        }
        // Every survey's start time is fixed before any survey is exported, so a run that dies
        // (or runs out of time) on the first survey does not move the others' start forward.
        for job in jobs {
            run.create_state(job).await.map_err(RunError::Storage)?;
        }
        let mut capacity = settings.max_ticket_messages;
        let mut reports = Vec::new();
        for job in jobs {
            let sid = &job.survey_id;
            let remaining = run.deadline.saturating_duration_since(Instant::now());
            if remaining < settings.min_remaining {
                tracing::warn!(invocation_id, survey_id = %sid, remaining_ms = remaining.as_millis() as u64, outcome = "deferred", "time budget short; survey resumes next run");
                reports.push(SurveyReport {
                    survey_id: sid.clone(),
                    outcome: Outcome::Deferred("time budget short; resumes next run".into()),
                    tickets: Vec::new(),
                });
                continue;
            }
            let t0 = Instant::now();
            let mut emitted = Vec::new();
            let outcome = run.survey(job, &mut capacity, &mut emitted).await;
            let ms = t0.elapsed().as_millis() as u64;
            match &outcome {
                Outcome::Exported {
                    lines,
                    blob,
                    duplicates,
                } => {
                    tracing::info!(invocation_id, function = FUNCTION, survey_id = %sid, lines, duplicates, blob = blob.as_deref().unwrap_or("-"), tickets = emitted.len(), duration_ms = ms, outcome = "exported", "survey exported");
                }
                Outcome::Busy => {
                    tracing::info!(invocation_id, survey_id = %sid, outcome = "busy", "another run holds the survey's lease; skipped");
                }
                Outcome::Deferred(why) => {
                    tracing::warn!(invocation_id, survey_id = %sid, reason = %why, outcome = "deferred", "survey deferred");
                }
                Outcome::Failed(why) => {
                    tracing::error!(invocation_id, survey_id = %sid, reason = %why, outcome = "failed", "survey export failed");
                }
            }
            reports.push(SurveyReport {
                survey_id: sid.clone(),
                outcome,
                tickets: emitted,
            });
        }
        Ok(reports)
    }
}

fn ms_of(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339_of_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn now_rfc3339() -> String {
    rfc3339_of_ms(ms_of(OffsetDateTime::now_utc()))
}

/// The lease on a state blob, renewed in the background until dropped.
struct Lease {
    id: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// A state blob read under the lease.
struct StateHandle {
    blob: BlobClient,
    name: String,
    etag: Etag,
    state: ExportState,
    lease: String,
}

impl StateHandle {
    async fn save(&mut self) -> Result<(), BlobError> {
        let bytes = Bytes::from(serde_json::to_vec(&self.state).unwrap_or_default());
        self.etag = blob_state::write(
            &self.blob,
            &self.name,
            bytes,
            Condition::Matches(&self.etag, Some(&self.lease)),
        )
        .await?;
        Ok(())
    }
}

impl Run<'_> {
    /// `BRIDGE_TEST_CRASH_AT` (`docs/export.md`, "Crashes").
    fn crash_point(&self, point: &'static str) {
        self.settings.crash.point(point);
    }

    fn report(&self, step: Step) {
        if let Some(p) = &self.progress {
            p(step);
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Creates the job's state blob if it does not exist yet, stamped with this run's start
    /// (the first export reconciles what was recorded since then).
    async fn create_state(&self, job: &Job) -> Result<(), String> {
        let name = job.state_blob();
        let init = ExportState {
            v: 1,
            survey_id: job.survey_id.clone(),
            created_ms: Some((self.started.unix_timestamp_nanos() / 1_000_000) as i64),
            ..Default::default()
        };
        match blob_state::write(
            &self.states.blob_client(&name),
            &name,
            Bytes::from(serde_json::to_vec(&init).unwrap_or_default()),
            Condition::Absent,
        )
        .await
        {
            Ok(_) | Err(BlobError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn survey(&self, job: &Job, capacity: &mut usize, emitted: &mut Vec<String>) -> Outcome {
        let name = job.state_blob();
        let blob = self.states.blob_client(&name);
        // The blob must exist to be leased.
        if let Err(e) = self.create_state(job).await {
            return Outcome::Failed(e);
        }
        let lease_id = uuid::Uuid::new_v4().to_string();
        match blob_state::acquire_lease(&blob, &name, self.settings.lease_seconds, &lease_id).await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Busy,
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        let lease = Lease {
            id: lease_id.clone(),
            renewer: {
                let (b, n, l) = (
                    self.states.blob_client(&name),
                    name.clone(),
                    lease_id.clone(),
                );
                let every = Duration::from_secs((self.settings.lease_seconds as u64 / 3).max(1));
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        if let Err(e) = blob_state::renew_lease(&b, &n, &l).await {
                            tracing::warn!(blob = %n, error = %e, "lease renewal failed");
                        }
                    }
                })
            },
        };
        let outcome = self
            .survey_leased(job, capacity, emitted, &blob, &name, &lease.id)
            .await;
        drop(lease);
        if let Err(e) = blob_state::release_lease(&blob, &name, &lease_id).await {
            tracing::warn!(blob = %name, error = %e, "lease release failed (it expires by itself)");
        }
        outcome
    }

    async fn survey_leased(
        &self,
        job: &Job,
        capacity: &mut usize,
        emitted: &mut Vec<String>,
        blob: &BlobClient,
        name: &str,
        lease: &str,
    ) -> Outcome {
        let (sid, tickets) = (job.survey_id.as_str(), job.tickets);
        let mut h = match blob_state::read(blob, name).await {
            Ok(Some((bytes, etag))) => match serde_json::from_slice::<ExportState>(&bytes) {
                Ok(state) => StateHandle {
                    blob: self.states.blob_client(name),
                    name: name.to_string(),
                    etag,
                    state,
                    lease: lease.to_string(),
                },
                Err(e) => return Outcome::Failed(format!("state blob {name} is not valid: {e}")),
            },
            Ok(None) => return Outcome::Failed(format!("state blob {name} vanished")),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        h.state.survey_id = sid.to_string();
        h.state.v = 1;
        h.state.last_run_at = Some(now_rfc3339());
        let mut lines = 0;
        let mut duplicates = 0;
        let mut last_blob = None;
        // 1. Repair.
        if let Some(inflight) = h.state.inflight.clone() {
            tracing::warn!(survey_id = sid, export_id = %inflight.export_id, blob = %inflight.blob, "repairing an unfinished run");
            match self.repair(&mut h, inflight, tickets).await {
                Ok(Some(s)) => {
                    lines += s.lines;
                    duplicates += s.duplicates_skipped;
                    last_blob = h.state.last_blob.clone();
                }
                Ok(None) => {}
                Err(why) => return self.fail(&mut h, why).await,
            }
        }
        // 2-5. A new export.
        if self.remaining() < self.settings.min_remaining {
            self.emit(&mut h, tickets, capacity, emitted).await;
            return Outcome::Deferred("time budget short after repair".into());
        }
        match self.export(&mut h, job).await {
            Ok(Some(s)) => {
                lines += s.lines;
                duplicates += s.duplicates_skipped;
                if s.lines > 0 {
                    last_blob = h.state.last_blob.clone();
                }
            }
            Ok(None) => {
                self.emit(&mut h, tickets, capacity, emitted).await;
                return Outcome::Deferred(
                    "the export did not finish within the time budget; resumes next run".into(),
                );
            }
            Err(why) => {
                let out = self.fail(&mut h, why).await;
                self.emit(&mut h, tickets, capacity, emitted).await;
                return out;
            }
        }
        self.emit(&mut h, tickets, capacity, emitted).await;
        Outcome::Exported {
            lines,
            blob: last_blob,
            duplicates,
        }
    }

    /// Moves pending ticket ids into the reply (bounded), saving the state first.
    async fn emit(
        &self,
        h: &mut StateHandle,
        tickets: bool,
        capacity: &mut usize,
        emitted: &mut Vec<String>,
    ) {
        if !tickets || h.state.pending_tickets.is_empty() || *capacity == 0 {
            return;
        }
        let n = h.state.pending_tickets.len().min(*capacity);
        let taken: Vec<String> = h.state.pending_tickets.drain(..n).collect();
        match h.save().await {
            Ok(()) => {
                // A kill from here until the host has the reply loses these messages
                // (`docs/export.md`, "Crashes").
                self.crash_point("after-reconcile-state");
                *capacity -= n;
                emitted.extend(taken);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record emitted ticket requests; they stay pending");
            }
        }
    }

    async fn fail(&self, h: &mut StateHandle, why: String) -> Outcome {
        h.state.last_error = Some(format!("{}: {why}", now_rfc3339()));
        if let Err(e) = h.save().await {
            tracing::warn!(error = %e, "could not record the error in the state");
        }
        Outcome::Failed(why)
    }

    /// Finishes a run recorded in `inflight`.
    async fn repair(
        &self,
        h: &mut StateHandle,
        inflight: Inflight,
        tickets: bool,
    ) -> Result<Option<Summary>, String> {
        let target = self.exports.blob_client(&inflight.blob);
        let committed = blob_state::exists(&target, &inflight.blob)
            .await
            .map_err(|e| e.to_string())?;
        if committed {
            if let Some(summary) = inflight.summary.clone() {
                tracing::info!(blob = %inflight.blob, lines = summary.lines, "the export blob was committed before the crash: adopting its token");
                self.finalize(h, &inflight, &summary, tickets).await?;
                return Ok(Some(summary));
            }
            return Err(format!(
                "blob {} exists but the state has no summary for it",
                inflight.blob
            ));
        }
        match self.download_and_commit(h, &inflight).await {
            Ok(summary) => {
                self.finalize(h, &inflight, &summary, tickets).await?;
                Ok(Some(summary))
            }
            Err(DownloadError::Gone(why)) => {
                tracing::warn!(export_id = %inflight.export_id, reason = %why, "the unfinished export's file is gone; exporting again from the stored token");
                h.state.inflight = None;
                h.save().await.map_err(|e| e.to_string())?;
                Ok(None)
            }
            Err(DownloadError::OutOfTime) => {
                Err("download did not finish in the time budget; resumes next run".into())
            }
            Err(DownloadError::Failed(why)) => Err(why),
        }
    }

    /// Starts, polls, downloads and commits one export. `Ok(None)`: out of time.
    async fn export(&self, h: &mut StateHandle, job: &Job) -> Result<Option<Summary>, String> {
        let (sid, tickets) = (job.survey_id.as_str(), job.tickets);
        let secrets = &self.secrets;
        let (mut mode, mut request) = match (
            &job.kind,
            &h.state.continuation_token,
            self.window_start(&h.state),
        ) {
            // A backfill never continues: its window is the whole point.
            (JobKind::Backfill { since }, _, _) => (
                BACKFILL,
                ExportRequest {
                    continuation_token: None,
                    start_date: since.clone(),
                },
            ),
            (JobKind::Incremental, Some(t), _) => (
                "token",
                ExportRequest {
                    continuation_token: Some(t.clone()),
                    start_date: None,
                },
            ),
            (JobKind::Incremental, None, Some(start)) => (
                "window",
                ExportRequest {
                    continuation_token: None,
                    start_date: Some(start),
                },
            ),
            (JobKind::Incremental, None, None) => ("initial", ExportRequest::default()),
        };
        let started_ms = ms_of(OffsetDateTime::now_utc());
        let started = match self
            .client
            .start_export(secrets, &self.budget, sid, &request)
            .await
        {
            Ok(p) => p,
            Err(e) if mode == "token" && matches!(e.status(), Some(400 | 404 | 410)) => {
                let start = self.window_start(&h.state);
                tracing::warn!(survey_id = sid, error = %e, window_start = start.as_deref().unwrap_or("-"), "continuation token rejected; falling back to a date window with overlap");
                mode = if start.is_some() { "window" } else { "initial" };
                request = ExportRequest {
                    continuation_token: None,
                    start_date: start,
                };
                self.client
                    .start_export(secrets, &self.budget, sid, &request)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        let progress_id = started.progress_id.clone().unwrap_or_default();
        self.report(Step::Started {
            survey_id: sid.to_string(),
            export_id: progress_id.clone(),
        });
        // Poll until complete or failed; percentComplete is informational only.
        let mut interval = self.settings.poll_interval;
        let mut p = started;
        loop {
            match p.status {
                ExportStatus::Complete => break,
                ExportStatus::Failed => {
                    return Err(format!(
                        "export {progress_id} failed (percentComplete {})",
                        p.percent_complete
                    ))
                }
                _ => {}
            }
            if self.remaining() < interval + self.settings.min_remaining / 2 {
                tracing::warn!(survey_id = sid, export_id = %progress_id, "export still running at the end of the time budget");
                return Ok(None);
            }
            tokio::time::sleep(crate::qualtrics::jitter(interval, 0.2)).await;
            interval = (interval.mul_f64(1.5)).min(self.settings.poll_max);
            p = match self
                .client
                .export_progress(secrets, &self.budget, sid, &progress_id)
                .await
            {
                Ok(p) => p,
                Err(QualtricsError::OutOfTime { .. }) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            self.report(Step::Polled {
                percent: p.percent_complete,
            });
        }
        let file_id = p
            .file_id
            .clone()
            .ok_or("export complete without a fileId")?;
        let new_token = p
            .continuation_token
            .clone()
            .ok_or("export complete without a continuationToken; state not advanced")?;
        let started_name = self
            .started
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let d = self.started.date();
        let blob = format!(
            "{sid}/{:04}/{:02}/{:02}/{started_name}-{progress_id}.ndjson",
            d.year(),
            u8::from(d.month()),
            d.day()
        );
        let inflight = Inflight {
            export_id: progress_id,
            file_id,
            new_token,
            blob,
            started_ms,
            mode: mode.to_string(),
            summary: None,
        };
        h.state.inflight = Some(inflight.clone());
        h.save().await.map_err(|e| e.to_string())?;
        match self.download_and_commit(h, &inflight).await {
            Ok(summary) => {
                self.finalize(h, &inflight, &summary, tickets).await?;
                Ok(Some(summary))
            }
            Err(DownloadError::OutOfTime) => Ok(None),
            Err(DownloadError::Gone(why) | DownloadError::Failed(why)) => Err(why),
        }
    }

    /// `min(newest recordedDate, last export start) - overlap`, if there was a success.
    fn window_start(&self, s: &ExportState) -> Option<String> {
        let base = match (s.last_recorded_ms, s.last_export_started_ms) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(rfc3339_of_ms(
            base - self.settings.overlap.as_millis() as i64,
        ))
    }

    /// Streams the file into staged blocks, records the summary, commits the blob.
    async fn download_and_commit(
        &self,
        h: &mut StateHandle,
        inf: &Inflight,
    ) -> Result<Summary, DownloadError> {
        let sid = h.state.survey_id.clone();
        let resp = match self
            .client
            .download_export(self.secrets, &self.budget, &sid, &inf.file_id)
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Err(DownloadError::Gone(e.to_string())),
            Err(QualtricsError::OutOfTime { .. }) => return Err(DownloadError::OutOfTime),
            Err(e) => return Err(DownloadError::Failed(e.to_string())),
        };
        // Memory is bounded by construction (docs/export.md, "Memory"): the download is
        // copied into INPUT_BUFFERS fixed buffers recycled between the reader and the
        // transform, and BLOCK_BUFFERS block buffers are recycled between the transform and
        // the upload. A full pool stops the transform, which stops taking input buffers,
        // which stops the reader, which stops reading the socket.
        let (input_tx, input_rx) =
            tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(READ_AHEAD_BUFFERS);
        let (empty_tx, empty_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(INPUT_BUFFERS);
        let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let (free_tx, mut free_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(BLOCK_BUFFERS);
        let block_size = self.settings.block_size;
        let deadline = self.deadline;
        let progress = self.progress.clone();
        let reader_task = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut pool = InputPool {
                tx: input_tx,
                empty: empty_rx,
                unallocated: INPUT_BUFFERS,
                cur: Vec::new(),
            };
            let mut received = 0u64;
            loop {
                let next = tokio::time::timeout_at(deadline.into(), body.next()).await;
                let chunk = match next {
                    Err(_) => {
                        let e = io::Error::new(
                            io::ErrorKind::TimedOut,
                            "time budget spent during download",
                        );
                        let _ = pool.tx.send(Err(e)).await;
                        break;
                    }
                    Ok(None) => {
                        pool.finish().await;
                        break;
                    }
                    Ok(Some(Err(e))) => {
                        let _ = pool.tx.send(Err(io::Error::other(e.to_string()))).await;
                        break;
                    }
                    Ok(Some(Ok(b))) => b,
                };
                received += chunk.len() as u64;
                if let Some(p) = &progress {
                    p(Step::Downloaded { bytes: received });
                }
                if pool.copy(&chunk).await.is_none() {
                    break;
                }
                // `chunk` is dropped here, before the next read: hyper's read buffer is
                // freed (or reused in place) by the task that reads, never queued.
            }
        });
        let opts = TransformOptions {
            block_size: self.settings.block_size,
            // A backfill exports its whole window; the boundary only de-duplicates the
            // timer's fallback windows.
            skip_ids: if inf.mode == BACKFILL {
                HashSet::new()
            } else {
                h.state
                    .boundary
                    .iter()
                    .map(|(_, id)| id.clone())
                    .collect::<HashSet<_>>()
            },
            overlap_ms: self.settings.overlap.as_millis() as i64,
            recent_cap: MAX_BOUNDARY_IDS,
            // A backfill queues no tickets: no ids to keep.
            ticket_cap: (inf.mode != BACKFILL).then_some(MAX_PENDING_TICKETS),
            // The first export is history, except what was recorded since the bridge started
            // (a state written before `createdMs` existed: all history).
            ticket_since_ms: (inf.mode == "initial")
                .then(|| h.state.created_ms.unwrap_or(i64::MAX)),
        };
        let transform = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx: input_rx,
                empty: empty_tx,
                cur: Vec::new(),
                pos: 0,
            };
            // The transform allocated its first buffer; the pool's others on first need.
            let mut unallocated = BLOCK_BUFFERS - 1;
            stream::transform(reader, &opts, &mut |block| {
                let stopped = || io::Error::other("upload stopped");
                full_tx.blocking_send(block).map_err(|_| stopped())?;
                if unallocated > 0 {
                    unallocated -= 1;
                    return Ok(Vec::with_capacity(block_size));
                }
                free_rx.blocking_recv().ok_or_else(stopped)
            })
        });
        // Stage blocks, BLOCKS_IN_FLIGHT at a time; each buffer goes back to the pool.
        let target = self.exports.blob_client(&inf.blob);
        let mut in_flight = FuturesUnordered::new();
        let mut count: u32 = 0;
        let mut staged: u32 = 0;
        let mut upload_err: Option<String> = None;
        loop {
            tokio::select! {
                b = full_rx.recv(), if in_flight.len() < BLOCKS_IN_FLIGHT && upload_err.is_none() => {
                    let Some(b) = b else { break };
                    let (t, n, i) = (self.exports.blob_client(&inf.blob), inf.blob.clone(), count);
                    count += 1;
                    in_flight.push(async move {
                        let data = Bytes::from(b);
                        let r = blob_state::stage_block(&t, &n, i, data.clone()).await;
                        (r, data)
                    });
                }
                Some((r, data)) = in_flight.next(), if !in_flight.is_empty() => {
                    // The pool holds BLOCK_BUFFERS, so this never finds it full.
                    let _ = free_tx.try_send(reclaim(data));
                    match r {
                        Ok(()) => {
                            staged += 1;
                            if staged == 1 { self.crash_point("mid-stream"); }
                        }
                        Err(e) => { upload_err.get_or_insert(e.to_string()); }
                    }
                }
                else => break,
            }
            if upload_err.is_some() {
                break;
            }
        }
        while let Some((r, _)) = in_flight.next().await {
            if let Err(e) = r {
                upload_err.get_or_insert(e.to_string());
            }
        }
        // Wakes a transform waiting to hand over a block or for a free buffer.
        drop(full_rx);
        drop(free_tx);
        let result = transform.await;
        reader_task.abort();
        let summary = match result {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(DownloadError::OutOfTime)
            }
            Ok(Err(e)) => {
                return Err(DownloadError::Failed(
                    upload_err.unwrap_or_else(|| format!("export file: {e}")),
                ))
            }
            Err(e) => return Err(DownloadError::Failed(format!("transform task: {e}"))),
        };
        if let Some(e) = upload_err {
            return Err(DownloadError::Failed(e));
        }
        if summary.lines == 0 {
            self.report(Step::Committed { lines: 0 });
            return Ok(summary);
        }
        if let Some(i) = h.state.inflight.as_mut() {
            i.summary = Some(summary.clone());
        }
        h.save()
            .await
            .map_err(|e| DownloadError::Failed(e.to_string()))?;
        self.crash_point("before-blob-commit");
        let metadata = HashMap::from([
            ("surveyid".to_string(), sid.clone()),
            ("exportid".to_string(), inf.export_id.clone()),
            ("lines".to_string(), summary.lines.to_string()),
        ]);
        match blob_state::commit_new(&target, &inf.blob, count, metadata).await {
            Ok(()) | Err(BlobError::Conflict { .. }) => {}
            Err(e) => return Err(DownloadError::Failed(e.to_string())),
        }
        self.crash_point("after-blob-commit");
        self.report(Step::Committed {
            lines: summary.lines,
        });
        Ok(summary)
    }

    /// Advances the state past a committed (or empty) export.
    async fn finalize(
        &self,
        h: &mut StateHandle,
        inf: &Inflight,
        s: &Summary,
        tickets: bool,
    ) -> Result<(), String> {
        let st = &mut h.state;
        st.continuation_token = Some(inf.new_token.clone());
        st.last_success_at = Some(now_rfc3339());
        st.last_export_started_ms = Some(inf.started_ms);
        let max = match (st.last_recorded_ms, s.max_recorded_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        st.last_recorded_ms = max;
        st.boundary.extend(s.recent.iter().cloned());
        if let Some(max) = max {
            let floor = max - self.settings.overlap.as_millis() as i64;
            st.boundary.retain(|(ms, _)| *ms >= floor);
        }
        while st.boundary.len() > MAX_BOUNDARY_IDS {
            st.boundary.pop_first();
            st.boundary_truncated = true;
        }
        st.boundary_truncated |= s.recent_truncated;
        st.exported_total += s.lines;
        st.runs += 1;
        st.last_lines = s.lines;
        if s.lines > 0 {
            st.last_blob = Some(inf.blob.clone());
        }
        // The first (full) export's summary holds only responses recorded since the bridge
        // started (`ticket_since_ms`); one staged before `createdMs` existed holds history.
        if tickets && (inf.mode != "initial" || st.created_ms.is_some()) {
            st.pending_tickets.extend(s.ticket_ids.iter().cloned());
            if s.ticket_ids_dropped > 0 || st.pending_tickets.len() > MAX_PENDING_TICKETS {
                let excess = st.pending_tickets.len().saturating_sub(MAX_PENDING_TICKETS);
                st.pending_tickets.drain(..excess);
                tracing::warn!(survey_id = %st.survey_id, dropped = excess as u64 + s.ticket_ids_dropped, "too many pending ticket reconciliations; oldest dropped");
            }
        }
        st.inflight = None;
        st.last_error = None;
        h.save()
            .await
            .map_err(|e| format!("state not advanced: {e}"))
    }
}

enum DownloadError {
    /// The file no longer exists (404): export again.
    Gone(String),
    OutOfTime,
    Failed(String),
}

/// The buffer of a staged block, for reuse: the same allocation once the HTTP client has
/// dropped its references (it has when the stage call returned), else an empty one.
fn reclaim(data: Bytes) -> Vec<u8> {
    data.try_into_mut().map(Vec::from).unwrap_or_default()
}

/// The download side of the input buffers (runs on the reading task): copies each body
/// chunk into the buffer being filled and hands full buffers to the transform.
struct InputPool {
    tx: tokio::sync::mpsc::Sender<io::Result<Vec<u8>>>,
    /// Buffers the transform has read, for reuse.
    empty: tokio::sync::mpsc::Receiver<Vec<u8>>,
    /// Buffers not allocated yet (allocated on first need, then recycled).
    unallocated: usize,
    cur: Vec<u8>,
}

impl InputPool {
    /// Copies `chunk`; `None` once the transform has stopped.
    async fn copy(&mut self, mut chunk: &[u8]) -> Option<()> {
        while !chunk.is_empty() {
            if self.cur.capacity() == 0 {
                self.cur = self.next_empty().await?;
            }
            let take = (INPUT_BUFFER_SIZE - self.cur.len()).min(chunk.len());
            self.cur.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.cur.len() == INPUT_BUFFER_SIZE {
                self.tx.send(Ok(std::mem::take(&mut self.cur))).await.ok()?;
            }
        }
        Some(())
    }

    async fn next_empty(&mut self) -> Option<Vec<u8>> {
        if self.unallocated > 0 {
            self.unallocated -= 1;
            return Some(Vec::with_capacity(INPUT_BUFFER_SIZE));
        }
        let mut b = self.empty.recv().await?;
        b.clear();
        Some(b)
    }

    /// Hands over the last, partly filled buffer.
    async fn finish(self) {
        if !self.cur.is_empty() {
            let _ = self.tx.send(Ok(self.cur)).await;
        }
    }
}

/// `Read` over the input buffers (runs on the blocking thread); each buffer read to its end
/// goes back to the reader.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    empty: tokio::sync::mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            let done = std::mem::take(&mut self.cur);
            self.pos = 0;
            if done.capacity() > 0 {
                // Room for every buffer, so this fails only once the reader has stopped.
                let _ = self.empty.try_send(done);
            }
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_block_buffer_is_reused_not_reallocated() {
        let data = Bytes::from(vec![b'x'; 4096]);
        let at = data.as_ptr();
        let held = data.clone();
        assert_eq!(reclaim(data).capacity(), 0, "still referenced: not reused");
        let back = reclaim(held);
        assert_eq!((back.as_ptr(), back.capacity()), (at, 4096));
    }

    /// The download side and the transform side of the input buffers, as
    /// `download_and_commit` wires them: every byte arrives in order, and only
    /// `INPUT_BUFFERS` buffers ever exist, whatever the chunk sizes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn input_buffers_carry_every_byte_and_are_recycled() {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_BUFFERS);
        let (empty_tx, empty_rx) = tokio::sync::mpsc::channel(INPUT_BUFFERS);
        let data: Vec<u8> = (0..5 * INPUT_BUFFER_SIZE + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let sent = data.clone();
        let reader = tokio::spawn(async move {
            let mut pool = InputPool {
                tx,
                empty: empty_rx,
                unallocated: INPUT_BUFFERS,
                cur: Vec::new(),
            };
            // Chunks smaller and larger than a buffer, like hyper's adaptive reads.
            let mut rest = &sent[..];
            for size in [1, 8192, INPUT_BUFFER_SIZE + 7, 417_792].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                pool.copy(chunk).await.unwrap();
                rest = tail;
            }
            pool.finish().await;
        });
        let (got, buffers) = tokio::task::spawn_blocking(move || {
            let mut r = ChannelReader {
                rx,
                empty: empty_tx,
                cur: Vec::new(),
                pos: 0,
            };
            let (mut got, mut buffers) = (Vec::new(), HashSet::new());
            let mut buf = [0u8; 10_000];
            loop {
                let n = io::Read::read(&mut r, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                buffers.insert(r.cur.as_ptr() as usize);
                got.extend_from_slice(&buf[..n]);
            }
            (got, buffers)
        })
        .await
        .unwrap();
        reader.await.unwrap();
        assert!(got == data, "the bytes differ");
        assert!(buffers.len() <= INPUT_BUFFERS, "{} buffers", buffers.len());
    }
}
