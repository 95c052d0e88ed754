//! `TicketSync`: Zendesk and ServiceNow deliver their events best-effort, so a timer reads the
//! state of every ticket the open-ticket index (`tickets::open`) still holds, in batches
//! (`show_many`, `sys_idIN…`), and queues a `LoopRequest` (source `sync`) for each state the
//! loop has not been told yet. The cost is one index read and a share of one batch call per
//! open ticket: tickets that reached a terminal state leave the index.
//!
//! Per entry (docs/close-loop.md, `## TicketSync`):
//! * not `open` and not what `lastSynced` records (state, change time, sequence) → queued, then
//!   `lastSynced` is updated (ETag-conditional) or, for `closed`/`canceled`, the entry removed;
//! * `open` after a recorded non-open state (a reopen whose event was lost) → queued;
//! * absent from the system's reply for [`MISSING_RUNS`] runs in a row → removed (logged);
//! * a reply whose correlation is not `qualtrics:{surveyId}:{responseId}` → logged, kept,
//!   nothing queued (tickets are matched through ids the bridge set, never free text).
//!
//! A run stops starting batches when its time budget runs short and keeps its place in the
//! index (`ticket-sync/{system}.json`), so the next run resumes there.
//!
//! The handler sends its `LoopRequest`s on `loop-requests` itself and changes an entry only
//! after its message was accepted: a host output binding is written after the reply, too late
//! to keep the index from recording a transition that was never queued. A failed send leaves
//! the entry as it was and stops the system's pass, so the next run queues it again (a
//! duplicate at worst, which the loop ledger absorbs).

use crate::clock::now_rfc3339;
use crate::deps::Deps;
use crate::env::SettingError;
use crate::host::{Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, Trigger};
use crate::messages::{LoopRequest, LoopSource, TicketState};
use crate::secrets::SecretsProvider;
use crate::storage::blob_state::{self, BlobError, Condition};
use crate::telemetry::{InvocationSummary, Severity};
use crate::tickets::http::CallError;
use crate::tickets::open::{Listed, Observed, OpenIndex, OpenTicket, Synced};
use crate::tickets::servicenow::{self, ServiceNow};
use crate::tickets::zendesk::{self, Zendesk};
use crate::tickets::TicketingLimits;
use azure_core::http::Etag;
use azure_storage_blob::BlobContainerClient;
use azure_storage_queue::QueueClient;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMER: &str = "timer";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "TicketSync",
    trigger: Trigger::Timer,
    input: TIMER,
};
/// Runs in a row a ticket may be missing from its system's reply before its entry is dropped:
/// a deleted ticket stops costing a read, a briefly unreadable one is not forgotten.
pub const MISSING_RUNS: u32 = 5;

/// `TicketSync`'s settings (docs/settings.md).
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// A run starts no batch after this much time.
    pub time_budget: Duration,
    /// Tickets per state read (at most the system's maximum, 100 for both).
    pub batch: usize,
}

impl SyncSettings {
    pub fn build(deps: &Deps) -> Result<Self, SettingError> {
        let lookup = deps.lookup();
        let budget = crate::env::number(lookup, "TICKET_SYNC_TIME_BUDGET_SECONDS", 240u64)?;
        let batch = crate::env::number(lookup, "TICKET_SYNC_BATCH_SIZE", 100usize)?;
        if !(5..=3600).contains(&budget) {
            return Err(SettingError {
                name: "TICKET_SYNC_TIME_BUDGET_SECONDS",
                reason: "not a whole number of seconds from 5 to 3600".into(),
            });
        }
        if !(1..=zendesk::SHOW_MANY_MAX.min(servicenow::STATES_MAX)).contains(&batch) {
            return Err(SettingError {
                name: "TICKET_SYNC_BATCH_SIZE",
                reason: "not a whole number from 1 to 100".into(),
            });
        }
        Ok(Self {
            time_budget: Duration::from_secs(budget),
            batch,
        })
    }
}

/// A ticket system the bridge raises tickets in, with its client.
#[derive(Debug)]
enum System {
    Zendesk(Zendesk),
    ServiceNow(ServiceNow),
}

impl System {
    fn name(&self) -> &'static str {
        match self {
            Self::Zendesk(_) => "zendesk",
            Self::ServiceNow(_) => "servicenow",
        }
    }

    fn id_ok(&self, id: &str) -> bool {
        match self {
            Self::Zendesk(_) => {
                !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
            }
            Self::ServiceNow(_) => servicenow::is_sys_id(id),
        }
    }

    async fn read(
        &self,
        secrets: &SecretsProvider,
        ids: &[&str],
        spent: &mut Duration,
    ) -> Result<Vec<Observed>, CallError> {
        match self {
            Self::Zendesk(z) => z.show_many(secrets, ids, spent).await,
            Self::ServiceNow(s) => s.states(secrets, ids, spent).await,
        }
    }

    async fn refresh(&self, secrets: &SecretsProvider) {
        match self {
            Self::Zendesk(z) => z.refresh(secrets).await,
            Self::ServiceNow(s) => s.refresh(secrets).await,
        }
    }

    /// Whether a ticket in `state` can change again (it stays in the index).
    fn terminal(state: TicketState) -> bool {
        matches!(state, TicketState::Closed | TicketState::Canceled)
    }
}

/// Everything `TicketSync` needs, built at start-up.
pub struct TicketSyncService {
    systems: Vec<System>,
    settings: SyncSettings,
    /// The state container: the open-ticket index and the sync's cursors.
    state: Option<(crate::storage::Storage, String)>,
    /// `loop-requests`, where the handler sends what it found (module doc).
    queue: Option<QueueClient>,
    secrets: Arc<SecretsProvider>,
}

impl std::fmt::Debug for TicketSyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSyncService")
            .field("systems", &self.systems)
            .field("settings", &self.settings)
            .field("state", &self.state)
            .field("queue", &self.queue.as_ref().map(|q| q.url().as_str()))
            .finish()
    }
}

/// A setting of the sync or of a ticket system cannot work; names it, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SyncBuildError {
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("{0}")]
    System(String),
}

impl TicketSyncService {
    /// The systems whose settings are present (`ZENDESK_BASE_URL`, `SERVICENOW_INSTANCE_URL`),
    /// with `[ticketing]`'s call limits.
    pub fn build(limits: &TicketingLimits, deps: &Deps) -> Result<Self, SyncBuildError> {
        let lookup = deps.lookup();
        let mut systems = Vec::new();
        if let Some(z) = Zendesk::from_settings(lookup, limits).map_err(SyncBuildError::System)? {
            systems.push(System::Zendesk(z));
        }
        if let Some(s) =
            ServiceNow::from_settings(lookup, limits).map_err(SyncBuildError::System)?
        {
            systems.push(System::ServiceNow(s));
        }
        let state = deps
            .storage
            .clone()
            .map(|s| (s, deps.state_container.as_str().to_owned()));
        let queue = crate::storage::optional_client(
            deps.storage.as_ref(),
            |s| s.queue(super::closer::TRIGGER_QUEUE),
            "no queue endpoint: TicketSync cannot queue what it finds",
        );
        Ok(Self {
            systems,
            settings: SyncSettings::build(deps)?,
            state,
            queue,
            secrets: deps.secrets.clone(),
        })
    }
}

/// What one run did, for its log line.
#[derive(Debug, Default)]
struct Tally {
    checked: usize,
    queued: usize,
    removed: usize,
    missing: usize,
    conflicts: usize,
    skipped: usize,
    reads: usize,
    deferred: Vec<String>,
    failed: Vec<String>,
}

/// What to do with one entry after its state was read.
#[derive(Debug, PartialEq)]
enum Next {
    Keep,
    Update(OpenTicket),
    Remove,
}

#[derive(Debug, PartialEq)]
struct Decision {
    queue: Option<LoopRequest>,
    next: Next,
    /// Why nothing was queued when something unexpected was seen (logged).
    note: Option<&'static str>,
}

/// The decision for `entry` of `system` given what the system returned for it (`None`: not
/// returned). Pure: the rules of the module doc.
fn decide(
    system: &str,
    ticket_id: &str,
    entry: &OpenTicket,
    seen: Option<&Observed>,
    now: &str,
) -> Decision {
    let keep = |note| Decision {
        queue: None,
        next: Next::Keep,
        note,
    };
    let Some(seen) = seen else {
        let runs = entry.missing_runs.saturating_add(1);
        if runs >= MISSING_RUNS {
            return Decision {
                queue: None,
                next: Next::Remove,
                note: Some("missing from the system's reply too long: dropped from the index"),
            };
        }
        return Decision {
            queue: None,
            next: Next::Update(OpenTicket {
                missing_runs: runs,
                ..entry.clone()
            }),
            note: Some("missing from the system's reply"),
        };
    };
    let correlation = format!("qualtrics:{}:{}", entry.survey_id, entry.response_id);
    if seen.correlation.as_deref() != Some(correlation.as_str()) {
        return keep(Some(
            "the ticket's correlation is not the one the bridge set",
        ));
    }
    let last = entry.last_synced.as_ref();
    let unchanged = last.is_some_and(|l| {
        l.state == seen.state && l.changed_at == seen.changed_at && l.sequence == seen.sequence
    });
    let reopened =
        seen.state == TicketState::Open && last.is_some_and(|l| l.state != TicketState::Open);
    let wanted = !unchanged && (seen.state != TicketState::Open || reopened);
    let after = if System::terminal(seen.state) {
        Next::Remove
    } else if wanted || entry.missing_runs > 0 {
        Next::Update(OpenTicket {
            missing_runs: 0,
            last_synced: if wanted {
                Some(Synced {
                    state: seen.state,
                    changed_at: seen.changed_at.clone(),
                    sequence: seen.sequence,
                    at: now.to_string(),
                })
            } else {
                entry.last_synced.clone()
            },
            ..entry.clone()
        })
    } else {
        Next::Keep
    };
    let queue = wanted.then(|| LoopRequest {
        v: LoopRequest::VERSION,
        system: system.to_string(),
        ticket_id: ticket_id.to_string(),
        ticket_number: seen.number.clone().or_else(|| entry.number.clone()),
        survey_id: entry.survey_id.clone(),
        response_id: entry.response_id.clone(),
        status: seen.status.clone(),
        state: seen.state,
        close_code: seen.close_code.clone(),
        changed_at: seen.changed_at.clone(),
        sequence: seen.sequence,
        source: LoopSource::Sync,
        // The id ServiceNow's own event would carry, so the two de-duplicate alike.
        event_id: seen.sequence.map(|n| format!("{ticket_id}:{n}")),
        received_at: now.to_string(),
        retry: None,
    });
    Decision {
        queue,
        next: after,
        note: None,
    }
}

/// Where a system's pass through the index stands: `ticket-sync/{system}.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    /// The listing marker of the next page; `None`: start at the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
}

impl TicketSyncService {
    pub async fn invoke(
        &self,
        inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let timer = envelope.timer(TIMER)?;
        let started = Instant::now();
        tracing::info!(invocation_id = %inv.id, function = SPEC.name, past_due = timer.is_past_due, systems = self.systems.len(), "ticket sync run");
        let reply = InvocationReply::new();
        if self.systems.is_empty() {
            return Ok(reply.log("no ticket system is configured: nothing to sync"));
        }
        let container = |(s, name): &(crate::storage::Storage, String)| s.blob_container(name).ok();
        let (Some(state), Some(index)) = (
            self.state.as_ref().and_then(container),
            self.state.as_ref().and_then(container).map(OpenIndex::new),
        ) else {
            return Err(InvocationError::retry(
                "the open-ticket index is unavailable (no blob storage connection)",
            ));
        };
        let Some(queue) = self.queue.as_ref() else {
            return Err(InvocationError::retry(
                "loop-requests is unavailable (no queue endpoint)",
            ));
        };
        let deadline = started + self.settings.time_budget;
        let mut tally = Tally::default();
        let mut logs = Vec::new();
        let target = Target {
            index: &index,
            state: &state,
            queue,
        };
        for system in &self.systems {
            if let Err(why) = self
                .sync_system(system, &target, deadline, &mut tally, &mut logs)
                .await
            {
                tracing::warn!(invocation_id = %inv.id, system = system.name(), reason = %why, "ticket sync stopped for this system; it resumes next run");
                tally.failed.push(format!("{}: {why}", system.name()));
            }
        }
        let line = format!(
            "ticket sync: {} checked, {} queued, {} removed, {} missing, {} skipped, {} changed meanwhile, {} state reads{}{}",
            tally.checked,
            tally.queued,
            tally.removed,
            tally.missing,
            tally.skipped,
            tally.conflicts,
            tally.reads,
            if tally.deferred.is_empty() {
                String::new()
            } else {
                format!("; resumes next run: {}", tally.deferred.join(", "))
            },
            if tally.failed.is_empty() {
                String::new()
            } else {
                format!("; stopped: {}", tally.failed.join("; "))
            },
        );
        let failed = !tally.failed.is_empty();
        let mut reply = logs.into_iter().fold(reply, InvocationReply::log);
        reply = reply.log(line.clone());
        Ok(reply.summary(InvocationSummary {
            outcome: Some(if failed { "partial" } else { "synced" }),
            reason: Some(line),
            severity: if failed {
                Severity::Warn
            } else {
                Severity::Info
            },
            ..Default::default()
        }))
    }

    /// One system's pass: pages of the index from its cursor, until the index ends or the
    /// budget runs short. An error stops the pass where it was; the cursor keeps the place.
    async fn sync_system(
        &self,
        system: &System,
        target: &Target<'_>,
        deadline: Instant,
        tally: &mut Tally,
        logs: &mut Vec<String>,
    ) -> Result<(), String> {
        let Target { index, state, .. } = *target;
        let name = system.name();
        let cursor_blob = format!("ticket-sync/{name}.json");
        let cursor_client = state.blob_client(&cursor_blob);
        let (mut cursor, mut etag) = match blob_state::read(&cursor_client, &cursor_blob).await {
            Ok(Some((bytes, etag))) => (
                serde_json::from_slice::<Cursor>(&bytes).unwrap_or_default(),
                Some(etag),
            ),
            Ok(None) => (Cursor::default(), None),
            Err(e) => return Err(e.to_string()),
        };
        let mut spent = Duration::ZERO;
        // Long enough for one more page: a read, its call (with the system's timeout) and writes.
        let reserve = self.settings.time_budget / 6;
        loop {
            if deadline.saturating_duration_since(Instant::now()) < reserve {
                tally.deferred.push(name.to_string());
                return Ok(());
            }
            let page = match index
                .page(name, cursor.marker.as_deref(), self.settings.batch)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // A marker the service no longer accepts would stop every later run here:
                    // start the next run from the beginning instead.
                    if cursor.marker.take().is_some() {
                        let _ =
                            save_cursor(&cursor_client, &cursor_blob, &cursor, etag.as_ref()).await;
                    }
                    return Err(e.to_string());
                }
            };
            for u in &page.unreadable {
                tracing::warn!(system = name, blob = %u, "open-ticket index entry is not readable: left in place");
                tally.skipped += 1;
            }
            let (valid, invalid): (Vec<&Listed>, Vec<&Listed>) = page
                .entries
                .iter()
                .partition(|l| system.id_ok(&l.ticket_id));
            for l in invalid {
                tracing::warn!(
                    system = name,
                    "open-ticket index entry has an id the system cannot have: left in place"
                );
                tally.skipped += usize::from(!l.ticket_id.is_empty());
            }
            if !valid.is_empty() {
                let seen = self.read(system, &valid, &mut spent).await?;
                tally.reads += 1;
                apply(system, target, &valid, &seen, tally, logs).await?;
            }
            cursor.marker = page.next;
            etag = save_cursor(&cursor_client, &cursor_blob, &cursor, etag.as_ref()).await?;
            if cursor.marker.is_none() {
                return Ok(());
            }
        }
    }

    /// The states of `entries`, refreshing the system's secret once after an auth refusal.
    async fn read(
        &self,
        system: &System,
        entries: &[&Listed],
        spent: &mut Duration,
    ) -> Result<Vec<Observed>, String> {
        let ids: Vec<&str> = entries.iter().map(|l| l.ticket_id.as_str()).collect();
        match system.read(&self.secrets, &ids, spent).await {
            Err(CallError::Auth(_)) => {
                system.refresh(&self.secrets).await;
                system.read(&self.secrets, &ids, spent).await
            }
            other => other,
        }
        .map_err(|e| e.to_string())
    }
}

/// Where a run reads and writes: the open-ticket index, the cursors, `loop-requests`.
#[derive(Clone, Copy)]
struct Target<'a> {
    index: &'a OpenIndex,
    state: &'a BlobContainerClient,
    queue: &'a QueueClient,
}

/// Decides every entry of a page, sends each entry's message and then writes its index
/// change. An entry whose send failed is left unchanged, and the pass stops (`Err`).
async fn apply(
    system: &System,
    target: &Target<'_>,
    entries: &[&Listed],
    seen: &[Observed],
    tally: &mut Tally,
    logs: &mut Vec<String>,
) -> Result<(), String> {
    let name = system.name();
    let now = now_rfc3339();
    let mut work = Vec::new();
    for l in entries {
        tally.checked += 1;
        let observed = seen.iter().find(|o| o.id == l.ticket_id);
        let d = decide(name, &l.ticket_id, &l.entry, observed, &now);
        if observed.is_none() {
            tally.missing += 1;
        }
        if let Some(note) = d.note {
            tracing::warn!(system = name, ticket_id = %l.ticket_id, survey_id = %l.entry.survey_id, response_id = %l.entry.response_id, "{note}");
            logs.push(format!(
                "{name} {}: {}/{}: {note}",
                l.ticket_id, l.entry.survey_id, l.entry.response_id
            ));
        }
        work.push(((*l).clone(), d));
    }
    // Entries are independent: a few at a time.
    let results = futures::stream::iter(
        work.into_iter()
            .map(|(l, d)| send_then_write(target, name, l, d)),
    )
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let mut unsent = 0usize;
    for (l, d, r) in results {
        if let (Some(req), false) = (&d.queue, matches!(r, Err(Step::Send(_)))) {
            tally.queued += 1;
            logs.push(format!(
                "{name} {}: {}/{}: {} ({}) queued",
                l.ticket_id,
                req.survey_id,
                req.response_id,
                serde_json::to_value(req.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                req.status
            ));
        }
        match r {
            Ok(true) => tally.removed += usize::from(d.next == Next::Remove),
            // Changed since it was read (an overlapping run): the next run sees it afresh.
            Ok(false) => tally.conflicts += 1,
            Err(Step::Write(e)) => {
                tracing::warn!(system = name, ticket_id = %l.ticket_id, error = %e, "open-ticket index not updated: the next run sees the ticket again");
                tally.conflicts += 1;
            }
            Err(Step::Send(e)) => {
                tracing::warn!(system = name, ticket_id = %l.ticket_id, error = %e, "loop request not sent: the index entry is left as it was");
                unsent += 1;
            }
        }
    }
    if unsent > 0 {
        return Err(format!(
            "{unsent} loop request(s) could not be sent to {}: their entries are unchanged",
            super::closer::TRIGGER_QUEUE
        ));
    }
    Ok(())
}

/// Which step of an entry failed.
#[derive(Debug)]
enum Step {
    Send(azure_core::Error),
    Write(BlobError),
}

/// Sends one entry's message, if any, and only then carries out its [`Next`] (a named
/// function: an `async` closure here would not be `Send` for every lifetime, which the
/// handler's server needs). `Ok(false)`: the entry changed since it was read.
async fn send_then_write(
    target: &Target<'_>,
    system: &'static str,
    l: Listed,
    d: Decision,
) -> (Listed, Decision, Result<bool, Step>) {
    if let Some(req) = &d.queue {
        if let Err(e) = crate::storage::send_now(target.queue, &req.to_text()).await {
            return (l, d, Err(Step::Send(e)));
        }
    }
    let r = match &d.next {
        Next::Keep => Ok(true),
        Next::Update(e) => target.index.update(system, &l, e).await,
        Next::Remove => {
            target
                .index
                .remove(system, &l.ticket_id, Some(&l.etag))
                .await
        }
    };
    (l, d, r.map_err(Step::Write))
}

/// Writes the cursor under its ETag (a new one only if none exists); returns the new ETag.
async fn save_cursor(
    client: &azure_storage_blob::BlobClient,
    name: &str,
    cursor: &Cursor,
    etag: Option<&Etag>,
) -> Result<Option<Etag>, String> {
    let body = bytes::Bytes::from(serde_json::to_vec(cursor).unwrap_or_default());
    let cond = match etag {
        Some(e) => Condition::Matches(e, None),
        None => Condition::Absent,
    };
    match blob_state::write(client, name, body, cond).await {
        Ok(e) => Ok(Some(e)),
        Err(BlobError::Conflict { .. }) => {
            Err("another run moved the cursor: this one stops here".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(last: Option<(TicketState, &str, Option<u64>)>, missing: u32) -> OpenTicket {
        OpenTicket {
            survey_id: "SV_22VlHYNeldrrrkp".into(),
            response_id: "R_1l9mcVuXubb4aGm".into(),
            number: Some("INC0010002".into()),
            created_at: "2026-01-05T10:00:00Z".into(),
            last_synced: last.map(|(state, at, sequence)| Synced {
                state,
                changed_at: at.into(),
                sequence,
                at: "2026-01-05T11:00:00Z".into(),
            }),
            missing_runs: missing,
        }
    }

    fn seen(status: &str, at: &str, seq: Option<u64>) -> Observed {
        Observed {
            id: "c537bae64f411200adf9f8e18110c76e".into(),
            number: Some("INC0010002".into()),
            status: status.into(),
            state: ServiceNow::state_of(status),
            close_code: (status == "6").then(|| "Solved (Permanently)".into()),
            changed_at: at.into(),
            sequence: seq,
            correlation: Some("qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm".into()),
        }
    }

    const ID: &str = "c537bae64f411200adf9f8e18110c76e";
    const NOW: &str = "2026-01-05T12:00:00Z";

    #[test]
    fn a_resolved_incident_is_queued_once_and_stays_indexed() {
        let s = seen("6", "2026-01-05T10:38:50Z", Some(7));
        let d = decide("servicenow", ID, &entry(None, 0), Some(&s), NOW);
        let q = d.queue.expect("queued");
        assert_eq!(
            q.to_text(),
            r#"{"v":1,"system":"servicenow","ticketId":"c537bae64f411200adf9f8e18110c76e","ticketNumber":"INC0010002","surveyId":"SV_22VlHYNeldrrrkp","responseId":"R_1l9mcVuXubb4aGm","status":"6","state":"resolved","closeCode":"Solved (Permanently)","changedAt":"2026-01-05T10:38:50Z","sequence":7,"source":"sync","eventId":"c537bae64f411200adf9f8e18110c76e:7","receivedAt":"2026-01-05T12:00:00Z"}"#
        );
        let Next::Update(next) = d.next else {
            panic!("expected an update, got {:?}", d.next)
        };
        // The same observation again: nothing queued, nothing written.
        let again = decide("servicenow", ID, &next, Some(&s), NOW);
        assert_eq!((again.queue, again.next), (None, Next::Keep));
        // Resolved again later (after a reopen the sync did not see): queued again.
        let later = seen("6", "2026-01-06T09:00:00Z", Some(9));
        assert!(decide("servicenow", ID, &next, Some(&later), NOW)
            .queue
            .is_some());
    }

    #[test]
    fn open_tickets_queue_nothing_unless_they_reopened() {
        let open = seen("2", "2026-01-05T10:00:00Z", Some(1));
        let d = decide("servicenow", ID, &entry(None, 0), Some(&open), NOW);
        assert_eq!((d.queue, d.next), (None, Next::Keep));
        let resolved = entry(
            Some((TicketState::Resolved, "2026-01-05T09:00:00Z", Some(5))),
            0,
        );
        let d = decide("servicenow", ID, &resolved, Some(&open), NOW);
        assert_eq!(d.queue.expect("reopen queued").state, TicketState::Open);
    }

    #[test]
    fn terminal_states_leave_the_index_and_missing_tickets_are_dropped_late() {
        for status in ["7", "8"] {
            let d = decide(
                "servicenow",
                ID,
                &entry(None, 0),
                Some(&seen(status, "2026-01-05T10:00:00Z", Some(3))),
                NOW,
            );
            assert!(d.queue.is_some(), "{status}");
            assert_eq!(d.next, Next::Remove, "{status}");
        }
        let d = decide("servicenow", ID, &entry(None, 0), None, NOW);
        assert!(matches!(d.next, Next::Update(ref e) if e.missing_runs == 1));
        let d = decide("servicenow", ID, &entry(None, MISSING_RUNS - 1), None, NOW);
        assert_eq!((d.queue, d.next), (None, Next::Remove));
    }

    #[test]
    fn a_foreign_correlation_queues_nothing() {
        let mut s = seen("6", "2026-01-05T10:38:50Z", Some(7));
        s.correlation = Some("qualtrics:SV_other:R_other".into());
        let d = decide("servicenow", ID, &entry(None, 0), Some(&s), NOW);
        assert_eq!((d.queue, d.next), (None, Next::Keep));
        assert!(d.note.is_some());
    }
}
