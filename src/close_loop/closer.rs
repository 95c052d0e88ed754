//! `LoopCloser`: applies a ticket's reported state (`loop-requests`) to Qualtrics, per the
//! survey's `[surveys.loop]` (docs/loop-closer.md). Owns the loop ledger (`ledger.rs`,
//! `loop/{system}/{ticketId}.json`) and decides, from it alone, what is still to do:
//!
//! 1. **Apply** the change monotonically: an older or equal `(changedAt, sequence)` than the
//!    applied one is ignored (logged); a newer `open` after `resolved`/`closed` is a reopening.
//! 2. **Write back** the applied state onto the response (`PUT /responses/{id}`, embedded
//!    data) until the ledger records it for that state.
//! 3. **Follow-up survey**, at most one per ticket: the person is the response's own
//!    `recipientEmail` (never the ticket's requester, whom the bridge does not know); upsert
//!    them into the mailing list, **claim** in the ledger, send, record `EMD_…`. A claim found by
//!    a later delivery is never resent: it becomes `ambiguous`. Skipped (close code outside the
//!    allow-list, reopened within N hours, no address); a newer resolution decides again.
//! 4. **JSON Event**, claimed the same way, at most once per ticket and state.
//!
//! Transient failures (5xx, 429 beyond the call budget, timeouts, storage) re-enqueue the
//! request with a delay and a nested `retry` (as `TicketCreator` does) until
//! `LOOP_RETRY_WINDOW_SECONDS`, then dead-letter it ("gave up"); permanent ones (a bad message,
//! a survey without `[surveys.loop]`, a 4xx other than 429) go to `loop-requests-poison` at
//! once with the original text and the reason in the log. Log lines carry the ticket and
//! response ids, never an address.

use super::config::{FollowUp, FollowUpOn, JsonEvent, LoopConfig};
use super::ledger::{
    self, Applied, EventStatus, FollowUpStatus, JsonEventRecord, LoopEntry, LoopLedger, Version,
    WriteBack,
};
use crate::clock::{age_secs, now_rfc3339};
use crate::deps::Deps;
use crate::env::SettingError;
use crate::fault::CrashHook;
use crate::host::{
    Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, QueueTrigger, Trigger,
};
use crate::messages::{LoopRequest, TicketState};
use crate::qualtrics::{CallBudget, Contact, EmailDistribution, QualtricsClient, QualtricsError};
use crate::redelivery::{self, Redelivery, RetrySettings};
use crate::secrets::SecretsProvider;
use crate::telemetry::InvocationSummary;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::Instrument;

const REQUEST: &str = "request";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "LoopCloser",
    trigger: Trigger::Queue,
    input: REQUEST,
};
/// The trigger queue and its poison twin (DESIGN's contract).
pub const TRIGGER_QUEUE: &str = "loop-requests";
pub const POISON_QUEUE: &str = "loop-requests-poison";
/// Test-only crash point between the follow-up claim and the distribution POST.
const CRASH_AFTER_CLAIM: &str = "loop-after-followup-claim";
/// Ledger rounds one delivery may spend on concurrent changes before trying later.
const MAX_ROUNDS: usize = 8;

/// `LoopCloser`'s state, built at start-up.
pub struct LoopService {
    surveys: HashMap<String, LoopConfig>,
    ledger: Option<LoopLedger>,
    qualtrics: Option<Arc<QualtricsClient>>,
    secrets: Arc<SecretsProvider>,
    redelivery: Redelivery,
    call_timeout: Duration,
    crash: CrashHook,
}

impl std::fmt::Debug for LoopService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopService")
            .field("surveys", &self.surveys.keys().collect::<Vec<_>>())
            .field("redelivery", &self.redelivery)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoopBuildError {
    #[error(transparent)]
    Settings(#[from] SettingError),
}

impl LoopService {
    /// `surveys`: each survey id with its `[surveys.loop]` (already checked at parse).
    pub fn build<'a>(
        surveys: impl IntoIterator<Item = (&'a str, &'a LoopConfig)>,
        deps: &Deps,
    ) -> Result<Self, LoopBuildError> {
        let lookup = deps.lookup();
        let storage = deps.storage.as_ref();
        let ledger = crate::storage::optional_client(
            storage,
            |s| s.blob_container(deps.state_container.as_str()),
            "no blob endpoint: the loop ledger is unavailable",
        )
        .map(LoopLedger::new);
        let secs = |name, default, range| {
            crate::env::number_in(lookup, name, default, range).map(Duration::from_secs)
        };
        Ok(Self {
            surveys: surveys
                .into_iter()
                .map(|(id, c)| (id.to_owned(), c.clone()))
                .collect(),
            ledger,
            qualtrics: deps.qualtrics.clone(),
            secrets: deps.secrets.clone(),
            redelivery: Redelivery::build(
                storage,
                lookup,
                &RetrySettings {
                    queue: TRIGGER_QUEUE,
                    max_delay: "LOOP_RETRY_MAX_DELAY_SECONDS",
                    window: "LOOP_RETRY_WINDOW_SECONDS",
                    window_default: Duration::from_secs(72 * 3600),
                    window_max: Duration::from_secs(365 * 24 * 3600),
                },
            )?,
            call_timeout: secs("LOOP_CALL_TIMEOUT_SECONDS", 30, 1..=120)?,
            crash: CrashHook::from_settings(lookup),
        })
    }

    pub async fn invoke(
        &self,
        _inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let msg = envelope.queue(REQUEST)?;
        let request = match LoopRequest::parse(&msg.text) {
            Ok(r) => r,
            Err(why) => {
                return Ok(dead_letter(
                    &msg.text,
                    None,
                    &format!("invalid loop request: {why}"),
                ))
            }
        };
        if !request
            .ticket_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Ok(dead_letter(
                &msg.text,
                Some(&request),
                "invalid loop request: ticketId has characters other than letters, digits, '-', '_', '.'",
            ));
        }
        let Some(config) = self.surveys.get(&request.survey_id) else {
            return Ok(dead_letter(
                &msg.text,
                Some(&request),
                "the survey has no [surveys.loop] in bridge.toml",
            ));
        };
        let (Some(ledger), Some(qualtrics)) = (self.ledger.as_ref(), self.qualtrics.as_deref())
        else {
            return Err(InvocationError::retry(
                "LoopCloser needs a storage connection and QUALTRICS_BASE_URL",
            ));
        };
        let span = tracing::info_span!(
            "loop",
            ticket_system = %request.system,
            ticket_id = %request.ticket_id,
            survey_id = %request.survey_id,
            response_id = %request.response_id,
        );
        Work {
            svc: self,
            msg: &msg,
            request: &request,
            config,
            ledger,
            qualtrics,
            blob: LoopLedger::blob_name(&request.system, &request.ticket_id),
            notes: Vec::new(),
            last_put: None,
        }
        .run()
        .instrument(span)
        .await
    }
}

fn state_name(s: TicketState) -> &'static str {
    match s {
        TicketState::Open => "open",
        TicketState::Resolved => "resolved",
        TicketState::Closed => "closed",
        TicketState::Canceled => "canceled",
    }
}

/// The `TicketState` written back: `reopened` for an `open` that followed a resolution.
fn written_state(a: &Applied) -> &'static str {
    if a.reopened {
        "reopened"
    } else {
        state_name(a.state)
    }
}

fn summary(
    request: Option<&LoopRequest>,
    outcome: &'static str,
    reason: Option<&str>,
) -> InvocationSummary {
    InvocationSummary {
        outcome: Some(outcome),
        survey_id: request.map(|r| r.survey_id.clone()),
        response_id: request.map(|r| r.response_id.clone()),
        ticket_id: request.map(|r| format!("{} {}", r.system, r.ticket_id)),
        reason: reason.map(str::to_owned),
        ..Default::default()
    }
}

/// The message goes to `loop-requests-poison` as `text`, with the reason in the log.
fn dead_letter(text: &str, request: Option<&LoopRequest>, why: &str) -> InvocationReply {
    let ids = request.map_or_else(String::new, ids_of);
    redelivery::dead_letter(
        text.to_owned(),
        &ids,
        why,
        summary(request, "deadlettered", Some(why)),
    )
}

fn ids_of(r: &LoopRequest) -> String {
    format!(
        "{} {} ({}/{})",
        r.system, r.ticket_id, r.survey_id, r.response_id
    )
}

/// Why a delivery could not finish.
enum Failure {
    /// Try again later (re-enqueue).
    Transient(String),
    /// Can never succeed as it is: poison.
    Permanent(String),
}

impl From<ledger::LedgerError> for Failure {
    fn from(e: ledger::LedgerError) -> Self {
        Failure::Transient(e.to_string())
    }
}

impl From<QualtricsError> for Failure {
    fn from(e: QualtricsError) -> Self {
        if e.is_transient() {
            Failure::Transient(e.to_string())
        } else {
            Failure::Permanent(e.to_string())
        }
    }
}

/// What a step did to the ledger.
enum Step {
    /// Nothing (more) to do; the entry is current at `version`.
    Done,
    /// Another worker changed the entry: read it again and decide again.
    Stale,
}

struct Work<'a> {
    svc: &'a LoopService,
    msg: &'a QueueTrigger,
    request: &'a LoopRequest,
    config: &'a LoopConfig,
    ledger: &'a LoopLedger,
    qualtrics: &'a QualtricsClient,
    blob: String,
    /// What this delivery did, for the reply's log line.
    notes: Vec<String>,
    /// The state this delivery last wrote back: if a newer one was applied meanwhile, it is
    /// written again (our PUT may have landed after the other worker's).
    last_put: Option<(i128, u64)>,
}

impl Work<'_> {
    fn ids(&self) -> String {
        ids_of(self.request)
    }

    fn budget(&self) -> CallBudget {
        let t = self.svc.call_timeout;
        CallBudget::new(Some(std::time::Instant::now() + t * 3), 4).with_request_timeout(t)
    }

    /// A claim younger than this may belong to a worker still sending.
    fn claim_grace_secs(&self) -> i64 {
        (self.svc.call_timeout.as_secs() * 2 + 5) as i64
    }

    async fn run(mut self) -> Result<InvocationReply, InvocationError> {
        match self.apply().await {
            Ok(()) => {
                let line = format!("{}: {}", self.ids(), self.notes.join("; "));
                Ok(InvocationReply::new().log(line).summary(summary(
                    Some(self.request),
                    "applied",
                    None,
                )))
            }
            Err(Failure::Permanent(why)) => Ok(self.poison(&why)),
            Err(Failure::Transient(why)) => match self.svc.redelivery.gave_up(self.request, &why) {
                Some(reason) => Ok(self.poison(&reason)),
                None => self.later(&why).await,
            },
        }
    }

    /// Dead-letters the message as it first came (without our retry bookkeeping, so a poison
    /// replay starts a fresh window).
    fn poison(&self, why: &str) -> InvocationReply {
        dead_letter(
            &redelivery::as_first_came(&self.msg.text, self.request),
            Some(self.request),
            why,
        )
    }

    /// Puts the request back, invisible for a backoff (at least Qualtrics' `Retry-After`).
    async fn later(&self, why: &str) -> Result<InvocationReply, InvocationError> {
        let redelivery = &self.svc.redelivery;
        let next = redelivery.next_try(self.request, self.qualtrics.throttled_for());
        redelivery
            .later(
                self.request,
                next,
                &self.ids(),
                why,
                summary(Some(self.request), "retrying", Some(why)),
            )
            .await
    }

    fn fresh_entry(&self) -> LoopEntry {
        let r = self.request;
        LoopEntry {
            v: 1,
            system: r.system.clone(),
            ticket_id: r.ticket_id.clone(),
            ticket_number: r.ticket_number.clone(),
            survey_id: r.survey_id.clone(),
            response_id: r.response_id.clone(),
            applied: None,
            resolved_at: None,
            reopened_at: None,
            write_back: None,
            follow_up: Default::default(),
            json_events: Vec::new(),
            ignored: 0,
            updated_at: now_rfc3339(),
        }
    }

    /// Stores `entry` at `version`; `Stale` when another worker was first.
    async fn store(&self, entry: &mut LoopEntry, version: &mut Version) -> Result<Step, Failure> {
        entry.updated_at = now_rfc3339();
        match self.ledger.put(&self.blob, entry, version).await? {
            Some(etag) => {
                *version = Some(etag);
                Ok(Step::Done)
            }
            None => Ok(Step::Stale),
        }
    }

    async fn apply(&mut self) -> Result<(), Failure> {
        let mut noted_ignore = false;
        for _ in 0..MAX_ROUNDS {
            let (mut entry, mut version) = match self.ledger.get(&self.blob).await? {
                Some((e, etag)) => (e, Some(etag)),
                None => (self.fresh_entry(), None),
            };
            if entry.survey_id != self.request.survey_id
                || entry.response_id != self.request.response_id
            {
                return Err(Failure::Permanent(format!(
                    "the loop ledger links this ticket to {}/{}, not to the request's response",
                    entry.survey_id, entry.response_id
                )));
            }
            if let Step::Stale = self
                .apply_change(&mut entry, &mut version, &mut noted_ignore)
                .await?
            {
                continue;
            }
            let Some(applied) = entry.applied.clone() else {
                return Ok(());
            };
            if self.config.write_back {
                if let Step::Stale = self.write_back(&mut entry, &mut version, &applied).await? {
                    continue;
                }
            }
            if let Some(fu) = &self.config.followup {
                if let Step::Stale = self
                    .follow_up(fu, &mut entry, &mut version, &applied)
                    .await?
                {
                    continue;
                }
            }
            if let Some(je) = &self.config.json_event {
                if let Step::Stale = self
                    .json_event(je, &mut entry, &mut version, &applied)
                    .await?
                {
                    continue;
                }
            }
            return Ok(());
        }
        Err(Failure::Transient(
            "the loop ledger kept changing under concurrent deliveries".into(),
        ))
    }

    /// Step 1: the request's state becomes the applied one if it is newer.
    async fn apply_change(
        &mut self,
        entry: &mut LoopEntry,
        version: &mut Version,
        noted_ignore: &mut bool,
    ) -> Result<Step, Failure> {
        let r = self.request;
        let key = r.order_key();
        if let Some(a) = &entry.applied {
            if key <= a.key() {
                if !*noted_ignore {
                    *noted_ignore = true;
                    tracing::info!(
                        state = state_name(r.state),
                        changed_at = %r.changed_at,
                        applied_state = written_state(a),
                        applied_changed_at = %a.changed_at,
                        "older or equal change: ignored (monotonic)"
                    );
                    self.notes.push(format!(
                        "{} at {} ignored: {} at {} already applied",
                        state_name(r.state),
                        r.changed_at,
                        written_state(a),
                        a.changed_at
                    ));
                }
                return Ok(Step::Done);
            }
        }
        let was_resolved = entry
            .applied
            .as_ref()
            .is_some_and(|a| matches!(a.state, TicketState::Resolved | TicketState::Closed));
        let reopened = r.state == TicketState::Open && was_resolved;
        entry.applied = Some(Applied {
            state: r.state,
            status: r.status.clone(),
            changed_at: r.changed_at.clone(),
            sequence: r.sequence,
            close_code: r.close_code.clone(),
            event_id: r.event_id.clone(),
            reopened,
        });
        if reopened {
            entry.reopened_at = Some(r.changed_at.clone());
        }
        if matches!(r.state, TicketState::Resolved | TicketState::Closed) {
            entry.resolved_at = Some(r.changed_at.clone());
        }
        if r.ticket_number.is_some() {
            entry.ticket_number = r.ticket_number.clone();
        }
        let step = self.store(entry, version).await?;
        if let Step::Done = step {
            let what = if reopened {
                "reopened"
            } else {
                state_name(r.state)
            };
            tracing::info!(state = what, changed_at = %r.changed_at, "change applied");
            self.notes
                .push(format!("applied {what} at {}", r.changed_at));
        }
        Ok(step)
    }

    /// Step 2: the applied state onto the response, unless the ledger says it is there.
    async fn write_back(
        &mut self,
        entry: &mut LoopEntry,
        version: &mut Version,
        applied: &Applied,
    ) -> Result<Step, Failure> {
        let key = applied.key();
        let recorded = entry.write_back.as_ref().is_some_and(|w| w.key() == key);
        let overtaken = self.last_put.is_some_and(|k| k != key);
        if recorded && !overtaken {
            return Ok(Step::Done);
        }
        let f = &self.config.fields;
        let mut data = BTreeMap::new();
        let state = written_state(applied);
        for (name, value) in [
            (&f.system, entry.system.as_str()),
            (&f.ticket_id, entry.ticket_id.as_str()),
            (
                &f.ticket_number,
                entry.ticket_number.as_deref().unwrap_or(&entry.ticket_id),
            ),
            (&f.state, state),
            (&f.state_at, applied.changed_at.as_str()),
            (&f.close_code, applied.close_code.as_deref().unwrap_or("")),
            (&f.marker, "1"),
        ] {
            // Qualtrics keeps embedded-data values to 1000 characters.
            data.insert(name.as_str().to_owned(), value.chars().take(1000).collect());
        }
        self.qualtrics
            .update_response(
                &self.svc.secrets,
                &self.budget(),
                &entry.survey_id,
                &entry.response_id,
                &data,
            )
            .await?;
        self.last_put = Some(key);
        tracing::info!(state, "written back onto the response");
        self.notes.push(format!("wrote back {state}"));
        entry.write_back = Some(WriteBack {
            changed_at: applied.changed_at.clone(),
            sequence: applied.sequence,
            state: state.into(),
            at: now_rfc3339(),
        });
        self.store(entry, version).await
    }

    /// Why no survey goes out for this resolution, if a rule says so.
    fn skip_reason(&self, fu: &FollowUp, entry: &LoopEntry, applied: &Applied) -> Option<String> {
        if let Some(codes) = &fu.close_codes {
            let code = applied.close_code.as_deref().unwrap_or("");
            if !codes.iter().any(|c| c == code) {
                return Some(format!(
                    "close code {:?} is not in followup.close_codes",
                    code.chars().take(80).collect::<String>()
                ));
            }
        }
        if let (Some(hours), Some(reopened)) =
            (fu.skip_if_reopened_within_hours, &entry.reopened_at)
        {
            let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok();
            if let (Some(r), Some(done)) = (at(reopened), at(&applied.changed_at)) {
                if r <= done && (done - r).whole_seconds() <= i64::from(hours) * 3600 {
                    return Some(format!(
                        "reopened within {hours}h before this resolution (followup.skip_if_reopened_within_hours)"
                    ));
                }
            }
        }
        None
    }

    /// Step 3: at most one follow-up survey per ticket.
    async fn follow_up(
        &mut self,
        fu: &FollowUp,
        entry: &mut LoopEntry,
        version: &mut Version,
        applied: &Applied,
    ) -> Result<Step, Failure> {
        let record = &entry.follow_up;
        let decided_for_this = record.for_changed_at.as_deref()
            == Some(applied.changed_at.as_str())
            && record.for_sequence == applied.sequence;
        match record.status {
            FollowUpStatus::Sent | FollowUpStatus::Ambiguous => return Ok(Step::Done),
            FollowUpStatus::Skipped if decided_for_this => return Ok(Step::Done),
            FollowUpStatus::Claimed => {
                let age = record.at.as_deref().map_or(i64::MAX, age_secs);
                if age < self.claim_grace_secs() {
                    return Err(Failure::Transient(
                        "the follow-up is claimed by a delivery that may still be sending it"
                            .into(),
                    ));
                }
                tracing::warn!(
                    "found a follow-up claim without an outcome (a crash or a lost answer after the claim): recorded as ambiguous, never resent"
                );
                self.notes
                    .push("follow-up ambiguous (claimed, no outcome): not resent".into());
                entry.follow_up.status = FollowUpStatus::Ambiguous;
                entry.follow_up.reason = Some(
                    "claimed by an earlier delivery that recorded no outcome (crash or lost answer): whether the survey went out is unknown, so it is not resent; check the distribution history".into(),
                );
                entry.follow_up.at = Some(now_rfc3339());
                return self.store(entry, version).await;
            }
            FollowUpStatus::None | FollowUpStatus::Skipped => {}
        }
        let due = match fu.on {
            FollowUpOn::Resolved => {
                matches!(applied.state, TicketState::Resolved | TicketState::Closed)
            }
            FollowUpOn::Closed => applied.state == TicketState::Closed,
        };
        if !due {
            return Ok(Step::Done);
        }
        let decide = |entry: &mut LoopEntry, status, reason: Option<String>| {
            entry.follow_up.status = status;
            entry.follow_up.reason = reason;
            entry.follow_up.at = Some(now_rfc3339());
            entry.follow_up.for_changed_at = Some(applied.changed_at.clone());
            entry.follow_up.for_sequence = applied.sequence;
        };
        let contact = match self.skip_reason(fu, entry, applied) {
            Some(why) => Err(why),
            None => self.contact(entry).await?,
        };
        let contact = match contact {
            Ok(c) => c,
            Err(why) => {
                tracing::info!(reason = %why, "follow-up skipped");
                self.notes.push(format!("follow-up skipped: {why}"));
                decide(entry, FollowUpStatus::Skipped, Some(why));
                return self.store(entry, version).await;
            }
        };
        let lookup = self
            .qualtrics
            .upsert_list_contact(
                &self.svc.secrets,
                &self.budget(),
                fu.directory.as_str(),
                fu.mailing_list.as_str(),
                &contact,
            )
            .await?;
        // The claim: from here on, this ticket never gets a second survey.
        decide(entry, FollowUpStatus::Claimed, None);
        entry.follow_up.contact_lookup_id = Some(lookup.lookup_id.clone());
        if let Step::Stale = self.store(entry, version).await? {
            return Ok(Step::Stale);
        }
        self.svc.crash.point(CRASH_AFTER_CLAIM);
        let sent_at = OffsetDateTime::now_utc();
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let distribution = EmailDistribution {
            library_id: fu.library.as_str().into(),
            message_id: fu.message.as_str().into(),
            mailing_list_id: fu.mailing_list.as_str().into(),
            contact_lookup_id: lookup.lookup_id.clone(),
            from_email: fu.from_email.clone(),
            from_name: fu.from_name.clone(),
            reply_to_email: fu
                .reply_to_email
                .clone()
                .unwrap_or_else(|| fu.from_email.clone()),
            subject: fu.subject.clone(),
            survey_id: fu.survey.as_str().into(),
            expiration_date: fmt(sent_at + time::Duration::days(i64::from(fu.expiration_days))),
            send_date: fmt(sent_at.replace_nanosecond(0).unwrap_or(sent_at)),
        };
        let result = self
            .qualtrics
            .create_distribution(&self.svc.secrets, &self.budget(), &distribution)
            .await;
        let (status, emd, reason, failure) = match result {
            Ok(emd) => (FollowUpStatus::Sent, Some(emd), None, None),
            // Refused before sending (4xx), throttled past the budget, never connected: the
            // claim is released and the request fails as usual.
            Err(
                e @ (QualtricsError::Throttled { .. }
                | QualtricsError::OutOfTime { .. }
                | QualtricsError::Transport { .. }
                | QualtricsError::Token(..)),
            ) => (
                FollowUpStatus::None,
                None,
                Some(e.to_string()),
                Some(Failure::Transient(e.to_string())),
            ),
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => (
                FollowUpStatus::None,
                None,
                Some(e.to_string()),
                Some(Failure::Permanent(e.to_string())),
            ),
            // A 5xx or a lost answer: it may have been sent.
            Err(e) => (
                FollowUpStatus::Ambiguous,
                None,
                Some(format!(
                    "{e}: whether the survey went out is unknown, so it is not resent"
                )),
                None,
            ),
        };
        match status {
            FollowUpStatus::Sent => {
                tracing::info!(
                    distribution_id = emd.as_deref().unwrap_or("-"),
                    "follow-up survey sent"
                );
                self.notes
                    .push(format!("follow-up sent {}", emd.as_deref().unwrap_or("-")));
            }
            FollowUpStatus::Ambiguous => {
                tracing::warn!(
                    reason = reason.as_deref().unwrap_or("-"),
                    "follow-up ambiguous: not resent"
                );
                self.notes.push("follow-up ambiguous: not resent".into());
            }
            _ => {}
        }
        self.record_follow_up(entry, version, status, emd, reason)
            .await?;
        match failure {
            Some(f) => Err(f),
            None => Ok(Step::Done),
        }
    }

    /// Records the outcome of our own send over whatever a concurrent delivery wrote meanwhile
    /// (it can only have marked our claim `ambiguous`; we know better).
    async fn record_follow_up(
        &self,
        entry: &mut LoopEntry,
        version: &mut Version,
        status: FollowUpStatus,
        emd: Option<String>,
        reason: Option<String>,
    ) -> Result<(), Failure> {
        for _ in 0..MAX_ROUNDS {
            entry.follow_up.status = status;
            entry.follow_up.distribution_id = emd.clone();
            entry.follow_up.reason = reason.clone();
            entry.follow_up.at = Some(now_rfc3339());
            if let Step::Done = self.store(entry, version).await? {
                return Ok(());
            }
            match self.ledger.get(&self.blob).await? {
                Some((e, etag)) => {
                    *entry = e;
                    *version = Some(etag);
                }
                None => return Err(Failure::Transient("the loop ledger entry vanished".into())),
            }
        }
        Err(Failure::Transient(
            "the follow-up outcome could not be recorded".into(),
        ))
    }

    /// The respondent as a contact, from the response as exported; `Err(reason)` when it has
    /// no address. The address is never logged.
    async fn contact(&self, entry: &LoopEntry) -> Result<Result<Contact, String>, Failure> {
        let response = match self
            .qualtrics
            .get_response(&self.svc.secrets, &entry.survey_id, &entry.response_id)
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                return Err(Failure::Permanent(format!(
                    "the response cannot be read: {e}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let text = |k: &str| {
            response
                .values
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let Some(email) = text("recipientEmail").filter(|e| e.contains('@')) else {
            return Ok(Err(
                "the response has no recipientEmail (e.g. an anonymous link): nobody to survey"
                    .into(),
            ));
        };
        let mut embedded = BTreeMap::new();
        embedded.insert("TicketSystem".to_string(), entry.system.clone());
        embedded.insert(
            "TicketNumber".to_string(),
            entry
                .ticket_number
                .clone()
                .unwrap_or_else(|| entry.ticket_id.clone()),
        );
        embedded.insert("OriginalResponseId".to_string(), entry.response_id.clone());
        Ok(Ok(Contact {
            first_name: text("recipientFirstName"),
            last_name: text("recipientLastName"),
            email,
            ext_ref: text("externalDataReference"),
            embedded_data: embedded,
            unsubscribed: false,
        }))
    }

    /// Step 4: the JSON Event, at most once per ticket and state.
    async fn json_event(
        &mut self,
        je: &JsonEvent,
        entry: &mut LoopEntry,
        version: &mut Version,
        applied: &Applied,
    ) -> Result<Step, Failure> {
        if !je.on.contains(&applied.state) {
            return Ok(Step::Done);
        }
        let pos = entry
            .json_events
            .iter()
            .position(|e| e.state == applied.state);
        if let Some(i) = pos {
            let rec = &entry.json_events[i];
            if rec.status != EventStatus::Claimed {
                return Ok(Step::Done);
            }
            if age_secs(&rec.at) < self.claim_grace_secs() {
                return Err(Failure::Transient(
                    "the JSON event is claimed by a delivery that may still be firing it".into(),
                ));
            }
            entry.json_events[i].status = EventStatus::Ambiguous;
            entry.json_events[i].reason = Some(
                "claimed by an earlier delivery that recorded no outcome: not fired again".into(),
            );
            tracing::warn!(
                "JSON event claim without an outcome: recorded as ambiguous, not fired again"
            );
            return self.store(entry, version).await;
        }
        let target = je.target().map_err(Failure::Permanent)?;
        entry.json_events.push(JsonEventRecord {
            state: applied.state,
            status: EventStatus::Claimed,
            at: now_rfc3339(),
            reason: None,
        });
        if let Step::Stale = self.store(entry, version).await? {
            return Ok(Step::Stale);
        }
        let state = written_state(applied);
        let mut event_type = String::from("Ticket.");
        event_type.extend(state.chars().take(1).flat_map(char::to_uppercase));
        event_type.push_str(&state[1..]);
        let event = json!({
            "eventId": format!("{}:{}:{}", entry.system, entry.ticket_id, state_name(applied.state)),
            "eventTime": applied.changed_at,
            "eventType": event_type,
            "data": {
                "surveyId": entry.survey_id,
                "responseId": entry.response_id,
                "ticketSystem": entry.system,
                "ticketId": entry.ticket_id,
                "ticketNumber": entry.ticket_number.as_deref().unwrap_or(&entry.ticket_id),
                "ticketState": state,
                "closeCode": applied.close_code.as_deref().unwrap_or(""),
            }
        });
        let result = self
            .qualtrics
            .fire_json_event(&self.svc.secrets, &self.budget(), &target, &event)
            .await;
        let (status, failure) = match result {
            Ok(()) => (Some(EventStatus::Sent), None),
            Err(
                e @ (QualtricsError::Throttled { .. }
                | QualtricsError::OutOfTime { .. }
                | QualtricsError::Transport { .. }
                | QualtricsError::Token(..)),
            ) => (None, Some(Failure::Transient(e.to_string()))),
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                (None, Some(Failure::Permanent(e.to_string())))
            }
            Err(_) => (Some(EventStatus::Ambiguous), None),
        };
        self.notes.push(match status {
            Some(EventStatus::Sent) => format!("JSON event {event_type} fired"),
            Some(_) => format!("JSON event {event_type} ambiguous: not fired again"),
            None => format!("JSON event {event_type} not fired"),
        });
        // Record the outcome (or release the claim) over any concurrent change.
        for _ in 0..MAX_ROUNDS {
            entry.json_events.retain(|e| e.state != applied.state);
            if let Some(s) = status {
                entry.json_events.push(JsonEventRecord {
                    state: applied.state,
                    status: s,
                    at: now_rfc3339(),
                    reason: None,
                });
            }
            if let Step::Done = self.store(entry, version).await? {
                return match failure {
                    Some(f) => Err(f),
                    None => Ok(Step::Done),
                };
            }
            if let Some((e, etag)) = self.ledger.get(&self.blob).await? {
                *entry = e;
                *version = Some(etag);
            }
        }
        Err(Failure::Transient(
            "the JSON event outcome could not be recorded".into(),
        ))
    }
}
