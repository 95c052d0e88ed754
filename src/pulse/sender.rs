//! `PulseSender`: turns one verified ops event (`pulse-requests`) into **one** email
//! distribution to a transaction batch, per its `[[pulses]]` entry (docs/pulse.md,
//! `## PulseSender`; reference `close-the-loop.md` §2.3.4, §7). An event too large for one queue
//! message arrives as parts (`part: {index, count}`); each part is worked in chunks of
//! [`CHUNK`] people, so a message never holds more than one part of the event in memory.
//!
//! Per chunk: drop people inside their cool-down, upsert the rest into the entry's mailing list
//! (`CID_…`), create one transaction (`CTR_…`, the event's data) per person in one call,
//! **claim** each person, then add the chunk's transactions to the event's one batch (the first
//! chunk creates it). When every part is done, one distribution goes to
//! `recipients.transactionBatchId`. State, all in the state container under ETag conditions:
//!
//! * the **event ledger** `pulse/{sha256(eventId)}.json` ([`PulseEntry`], `v: 2`): the batch
//!   (claimed before its create, its id recorded before anything is distributed, never
//!   re-created), the parts done with their counts, and the distribution (claimed before the
//!   POST, then `sent`/`ambiguous`). A `v: 1` entry (the per-person sender) is finished as it is;
//! * the **person mark** `pulse/cooldown/{sha256(category)}/{personKey}.json` ([`CoolDown`]):
//!   the last event that claimed the person for the category and how far it got
//!   (`claimed`, `added`, `ambiguous`, `released`). It is both the per-(event, person) claim
//!   (concurrent copies of an event race on its ETag; one wins) and the cool-down.
//!
//! A person is keyed by an HMAC of their identity ([`person_key`]), never by the address. A claim
//! without an outcome (crash, lost answer) is never retried: the person or the event is
//! `ambiguous`, since a missing survey is cheaper than a duplicate. Transient failures
//! re-enqueue with a delay and a nested `retry`; a permanent one dead-letters the original text.
//! Every Qualtrics call is paced ([`crate::qualtrics::Pacer`], `PULSE_CALLS_PER_MINUTE`).

use super::config::PulseRoute;
use crate::clock::{age_secs, now_rfc3339};
use crate::deps::Deps;
use crate::env::SettingError;
use crate::fault::CrashHook;
use crate::host::{
    Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, QueueTrigger, Trigger,
};
use crate::messages::{PulsePerson, PulseRequest};
use crate::qualtrics::{
    BatchDistribution, CallBudget, Contact, Invitation, Pacer, QualtricsClient, QualtricsError,
    Transaction,
};
use crate::redelivery::{self, Redelivery, RetrySettings};
use crate::secrets::{SecretName, SecretsProvider};
use crate::storage::blob_state::{self, BlobError};
use crate::telemetry::{InvocationSummary, Severity};
use aws_lc_rs::{digest, hmac};
use azure_core::http::Etag;
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use futures::{stream, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const REQUEST: &str = "request";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "PulseSender",
    trigger: Trigger::Queue,
    input: REQUEST,
};
pub const TRIGGER_QUEUE: &str = "pulse-requests";
/// Test-only crash point between the distribution's claim and its POST.
const CRASH_AFTER_CLAIM: &str = "pulse-after-claim";
/// Test-only crash point between a chunk's person claims and its batch call.
const CRASH_AFTER_PERSON_CLAIM: &str = "pulse-after-person-claim";
/// People per chunk: one transactions call and one batch call each. Qualtrics documents no
/// per-call maximum for either **[UNCONFIRMED]**; 100 keeps both bodies small.
pub const CHUNK: usize = 100;
/// Contact upserts of one chunk in flight at once (the pacer decides the rate).
const CONTACT_CONCURRENCY: usize = 8;
/// State blob reads and writes of one chunk in flight at once.
const BLOB_CONCURRENCY: usize = 16;
/// Ledger rounds spent on concurrent changes before trying later.
const MAX_ROUNDS: usize = 8;
/// A part still working after this long saves its progress (in the person marks) and puts
/// itself back, well inside the host's 10-minute function timeout.
const PART_TIME: Duration = Duration::from_secs(300);
/// Domain separation: the person key is an HMAC under a key derived from
/// `analytics-hash-key`, so it never equals an analytics identity hash.
const KEY_LABEL: &[u8] = b"qualtrics-bridge pulse cool-down v1";
/// The event ledger's format: per-person records (`v: 1`) became batch + parts (`v: 2`).
pub const LEDGER_VERSION: u32 = 2;

/// `PulseSender`'s state, built at start-up.
pub struct PulseSenderService {
    pulses: Vec<PulseRoute>,
    container: Option<BlobContainerClient>,
    qualtrics: Option<Arc<QualtricsClient>>,
    secrets: Arc<SecretsProvider>,
    redelivery: Redelivery,
    call_timeout: Duration,
    pacer: Arc<Pacer>,
    crash: CrashHook,
}

impl std::fmt::Debug for PulseSenderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulseSenderService")
            .field("pulses", &self.pulses.len())
            .field("redelivery", &self.redelivery)
            .finish_non_exhaustive()
    }
}

/// How far a step (the batch, the distribution) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// About to call (or calling): never called again by a later delivery.
    Claimed,
    /// Done: `id` is the batch (`BT_…`) or the distribution (`EMD_…`).
    Done,
    /// May or may not have happened; never repeated.
    Ambiguous,
    /// Not needed: nobody to survey (everyone in cool-down or skipped), or no batch to send to.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub status: StepStatus,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Step {
    fn new(status: StepStatus, id: Option<String>, reason: Option<String>) -> Self {
        Self {
            status,
            at: now_rfc3339(),
            id,
            reason,
        }
    }
}

/// What happened to one part's people.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartCounts {
    /// In the batch.
    pub added: u32,
    /// Inside the category's cool-down: dropped.
    pub cooling: u32,
    /// Claimed without a known outcome: may be in the batch, never added again.
    pub ambiguous: u32,
    /// Nothing to survey (no address or `CID_…`; refused by Qualtrics; no batch to join).
    pub skipped: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRecord {
    pub at: String,
    #[serde(flatten)]
    pub counts: PartCounts,
}

/// The `v: 1` sender's per-person record, kept readable so its entries still parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonRecord {
    pub status: String,
    pub at: String,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// The event ledger blob's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PulseEntry {
    pub v: u32,
    pub event_type: String,
    pub category: String,
    /// `v: 1` only: by person key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub people: BTreeMap<String, PersonRecord>,
    /// How many parts the event came in.
    #[serde(default)]
    pub part_count: u32,
    /// Parts done, by index (1-based).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<u32, PartRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Step>,
    pub updated_at: String,
}

/// How far an event got with a person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkState {
    /// Claimed: the person's transaction is about to join the batch.
    Claimed,
    /// In the batch. (A `v: 1` mark has no state: it meant "surveyed".)
    #[default]
    Added,
    /// The batch call's outcome is unknown: never added again.
    Ambiguous,
    /// Not in the batch after all (the call was refused, or the event has no batch): free.
    Released,
}

/// The person mark's content: per category, the last event that claimed the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoolDown {
    /// The event-ledger name of the event.
    pub event: String,
    pub at: String,
    #[serde(default)]
    pub state: MarkState,
    /// The person's transaction (`CTR_…`) in that event's batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
}

impl CoolDown {
    /// Whether this mark keeps a person out of event `ours` (an event-ledger name) for a
    /// category with a cool-down of `hours`, at `now`: another event claimed them (and did
    /// not release them) less than `hours` ago. Pure, for `pulses --dry-run` too.
    pub fn holds(&self, ours: &str, hours: u32, now: OffsetDateTime) -> bool {
        if self.event == ours || self.state == MarkState::Released {
            return false;
        }
        OffsetDateTime::parse(&self.at, &Rfc3339).map_or(true, |at| {
            (now - at).whole_seconds() < i64::from(hours) * 3600
        })
    }
}

/// The event ledger's blob name for `event_id`.
pub fn ledger_blob(event_id: &str) -> String {
    format!("pulse/{}.json", sha256_hex(event_id))
}

/// The person mark's blob name for a category and a [`person_key`].
pub fn cooldown_blob(category: &str, person_key: &str) -> String {
    format!("pulse/cooldown/{}/{person_key}.json", sha256_hex(category))
}

enum Failure {
    Transient(String),
    Permanent(String),
}

impl From<BlobError> for Failure {
    fn from(e: BlobError) -> Self {
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

/// A call that must not be repeated either took effect, surely did not, or may have.
enum Sent<T> {
    Done(T),
    /// Refused before anything happened (429 past the budget, never connected, 4xx).
    NotDone(Failure),
    /// A 5xx or a lost answer.
    Unknown(String),
}

fn classify<T>(r: Result<T, QualtricsError>) -> Sent<T> {
    match r {
        Ok(v) => Sent::Done(v),
        Err(
            e @ (QualtricsError::Throttled { .. }
            | QualtricsError::OutOfTime { .. }
            | QualtricsError::Transport { .. }
            | QualtricsError::Token(..)),
        ) => Sent::NotDone(Failure::Transient(e.to_string())),
        Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
            Sent::NotDone(Failure::Permanent(e.to_string()))
        }
        Err(e) => Sent::Unknown(e.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(digest::digest(&digest::SHA256, s.as_bytes()).as_ref())
}

/// The person's identity as keyed: the trimmed, lower-cased address, else `externalRef`, else
/// the contact id (tagged so the kinds never collide); `None` when the person names none.
pub fn identity(p: &PulsePerson) -> Option<String> {
    let t = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    t(&p.email)
        .map(|e| format!("email:{}", e.to_lowercase()))
        .or_else(|| t(&p.external_ref).map(|r| format!("ext:{r}")))
        .or_else(|| t(&p.contact_id).map(|c| format!("cid:{c}")))
}

/// HMAC-SHA256 of the identity under a key derived from `analytics-hash-key` (`root`).
pub fn person_key(root: &[u8], identity: &str) -> String {
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, root), KEY_LABEL);
    let k = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
    hex(hmac::sign(&k, identity.as_bytes()).as_ref())
}

fn attr_text(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // Qualtrics keeps embedded-data values to 1000 characters.
    s.chars().take(1000).collect()
}

/// Reads a JSON state blob and its ETag.
async fn read_json<T: DeserializeOwned>(
    c: &BlobContainerClient,
    name: &str,
) -> Result<Option<(T, Etag)>, Failure> {
    match blob_state::read(&c.blob_client(name), name).await? {
        None => Ok(None),
        Some((bytes, etag)) => serde_json::from_slice(&bytes)
            .map(|v| Some((v, etag)))
            .map_err(|e| Failure::Permanent(format!("{name}: unreadable state blob: {e}"))),
    }
}

/// Writes a JSON state blob if it is still at `version`; `Ok(None)` when another worker was first.
async fn write_json<T: Serialize>(
    c: &BlobContainerClient,
    name: &str,
    value: &T,
    version: Option<&Etag>,
) -> Result<Option<Etag>, Failure> {
    let bytes = Bytes::from(
        serde_json::to_vec(value).map_err(|e| Failure::Permanent(format!("{name}: {e}")))?,
    );
    Ok(blob_state::put_versioned(c, name, bytes, version).await?)
}

impl PulseSenderService {
    pub fn build(pulses: Vec<PulseRoute>, deps: &Deps) -> Result<Self, SettingError> {
        let lookup = deps.lookup();
        let storage = deps.storage.as_ref();
        let container = crate::storage::optional_client(
            storage,
            |s| s.blob_container(deps.state_container.as_str()),
            "no blob endpoint: the pulse ledger is unavailable",
        );
        let secs = |name, default, range| {
            crate::env::number_in(lookup, name, default, range).map(Duration::from_secs)
        };
        let per_minute =
            crate::env::number_in(lookup, "PULSE_CALLS_PER_MINUTE", 2900, 1..=100_000)?;
        let per_minute = u32::try_from(per_minute).unwrap_or(u32::MAX);
        Ok(Self {
            pulses,
            container,
            qualtrics: deps.qualtrics.clone(),
            secrets: deps.secrets.clone(),
            redelivery: Redelivery::build(
                storage,
                lookup,
                &RetrySettings {
                    queue: TRIGGER_QUEUE,
                    max_delay: "PULSE_RETRY_MAX_DELAY_SECONDS",
                    window: "PULSE_RETRY_WINDOW_SECONDS",
                    window_default: Duration::from_secs(24 * 3600),
                    window_max: Duration::from_secs(7 * 24 * 3600),
                },
            )?,
            call_timeout: secs("PULSE_CALL_TIMEOUT_SECONDS", 30, 1..=120)?,
            // A burst of a tenth of a second's calls: a full second's worth, on top of a
            // steady rate at the limit, would keep Qualtrics' bucket full.
            pacer: Arc::new(Pacer::per_minute(per_minute, (per_minute / 600).max(1))),
            crash: CrashHook::from_settings(lookup),
        })
    }

    pub async fn invoke(
        &self,
        _inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let msg = envelope.queue(REQUEST)?;
        let request = match PulseRequest::parse(&msg.text) {
            Ok(r) => r,
            Err(why) => {
                return Ok(dead_letter(
                    &msg.text,
                    None,
                    &format!("invalid pulse request: {why}"),
                ))
            }
        };
        let Some(route) = super::route_for(&self.pulses, &request.event.event_type) else {
            return Ok(dead_letter(
                &msg.text,
                Some(&request),
                "no [[pulses]] entry handles the event type",
            ));
        };
        let (Some(container), Some(qualtrics)) =
            (self.container.as_ref(), self.qualtrics.as_deref())
        else {
            return Err(InvocationError::retry(
                "PulseSender needs a storage connection and QUALTRICS_BASE_URL",
            ));
        };
        let work = Work {
            svc: self,
            msg: &msg,
            request: &request,
            route,
            container,
            qualtrics,
            ledger: ledger_blob(&request.event.event_id),
            part: request.part.map_or(1, |p| p.index),
            part_count: request.part.map_or(1, |p| p.count.max(1)),
            counts: PartCounts::default(),
            started: Instant::now(),
        };
        work.run().await
    }
}

fn summary(
    request: Option<&PulseRequest>,
    outcome: &'static str,
    reason: Option<&str>,
) -> InvocationSummary {
    InvocationSummary {
        outcome: Some(outcome),
        reason: reason.map(str::to_owned),
        ticket_id: request.map(|r| format!("pulse {}", r.event.event_id)),
        ..Default::default()
    }
}

/// The message goes to `pulse-requests-poison` as `text`, with the reason in the log.
fn dead_letter(text: &str, request: Option<&PulseRequest>, why: &str) -> InvocationReply {
    let ids = request.map_or_else(String::new, |r| {
        format!("event {} ({})", r.event.event_id, r.event.event_type)
    });
    redelivery::dead_letter(
        text.to_owned(),
        &ids,
        why,
        summary(request, "deadlettered", Some(why)),
    )
}

/// How a part's run ended without a failure.
enum Outcome {
    /// Every person has an outcome; `Some(step)` is what happened to the distribution when
    /// this run decided it.
    Done(Option<Step>),
    /// Out of time for this run: the part puts itself back and continues.
    Paused,
}

/// One person of a chunk on their way into the batch.
struct Candidate<'p> {
    person: &'p PulsePerson,
    mark: String,
    version: Option<Etag>,
    contact: Option<String>,
    transaction: Option<String>,
}

struct Work<'a> {
    svc: &'a PulseSenderService,
    msg: &'a QueueTrigger,
    request: &'a PulseRequest,
    route: &'a PulseRoute,
    container: &'a BlobContainerClient,
    qualtrics: &'a QualtricsClient,
    ledger: String,
    part: u32,
    part_count: u32,
    counts: PartCounts,
    started: Instant,
}

impl Work<'_> {
    fn ids(&self) -> String {
        let e = &self.request.event;
        format!(
            "event {} ({}) part {}/{}",
            e.event_id, e.event_type, self.part, self.part_count
        )
    }

    fn budget(&self) -> CallBudget {
        let t = self.svc.call_timeout;
        CallBudget::new(Some(Instant::now() + t * 3), 4)
            .with_request_timeout(t)
            .with_pacer(self.svc.pacer.clone())
    }

    /// A claim younger than this may belong to a worker still calling.
    fn claim_grace_secs(&self) -> i64 {
        (self.svc.call_timeout.as_secs() * 2 + 5) as i64
    }

    async fn run(mut self) -> Result<InvocationReply, InvocationError> {
        let result = self.work().await;
        let c = &self.counts;
        tracing::info!(
            part = self.part,
            parts = self.part_count,
            added = c.added,
            cooling = c.cooling,
            ambiguous = c.ambiguous,
            skipped = c.skipped,
            "pulse people"
        );
        let counts = format!(
            "{} added to the batch, {} in cool-down, {} ambiguous, {} skipped",
            c.added, c.cooling, c.ambiguous, c.skipped
        );
        match result {
            Ok(Outcome::Done(step)) => {
                let ambiguous = step
                    .as_ref()
                    .is_some_and(|d| d.status == StepStatus::Ambiguous);
                let dist = match step {
                    Some(Step {
                        status: StepStatus::Done,
                        id,
                        ..
                    }) => format!("; distribution {} sent", id.unwrap_or_default()),
                    Some(Step { status, reason, .. }) => {
                        format!("; distribution {status:?}: {}", reason.unwrap_or_default())
                    }
                    None => String::new(),
                };
                let mut s = summary(Some(self.request), "sent", None);
                if ambiguous {
                    s.severity = Severity::Warn;
                }
                Ok(InvocationReply::new()
                    .log(format!("{}: {counts}{dist}", self.ids()))
                    .summary(s))
            }
            Ok(Outcome::Paused) => self.resume_soon(&counts).await,
            Err(Failure::Permanent(why)) => Ok(self.poison(&why)),
            Err(Failure::Transient(why)) => match self.svc.redelivery.gave_up(self.request, &why) {
                Some(reason) => Ok(self.poison(&reason)),
                None => self.later(&format!("{why} ({counts})")).await,
            },
        }
    }

    /// Dead-letters the message as it first came (a poison replay starts a fresh window).
    fn poison(&self, why: &str) -> InvocationReply {
        dead_letter(
            &redelivery::as_first_came(&self.msg.text, self.request),
            Some(self.request),
            why,
        )
    }

    /// Out of time, not failing: the same request back at once; the person marks hold the
    /// progress.
    async fn resume_soon(&self, counts: &str) -> Result<InvocationReply, InvocationError> {
        match self
            .svc
            .redelivery
            .send(&self.msg.text, Duration::ZERO)
            .await
        {
            Ok(()) => Ok(InvocationReply::new()
                .log(format!(
                    "{}: {counts} so far; continues in a new run",
                    self.ids()
                ))
                .summary(summary(Some(self.request), "continuing", None))),
            Err(e) => Err(InvocationError::retry_from(
                format!("{}: cannot re-enqueue the rest", self.ids()),
                e,
            )),
        }
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

    async fn entry(&self) -> Result<(PulseEntry, Option<Etag>), Failure> {
        Ok(match read_json(self.container, &self.ledger).await? {
            Some((e, etag)) => (e, Some(etag)),
            None => (
                PulseEntry {
                    v: LEDGER_VERSION,
                    event_type: self.request.event.event_type.clone(),
                    category: self.route.category().to_owned(),
                    people: BTreeMap::new(),
                    part_count: self.part_count,
                    parts: BTreeMap::new(),
                    batch: None,
                    distribution: None,
                    updated_at: now_rfc3339(),
                },
                None,
            ),
        })
    }

    /// Applies `change` to the event ledger under its ETag, re-reading on a concurrent
    /// change; `change` returns what the caller needs from the entry it applied to.
    async fn update<T>(
        &self,
        mut change: impl FnMut(&mut PulseEntry) -> T,
    ) -> Result<(T, PulseEntry), Failure> {
        for _ in 0..MAX_ROUNDS * 4 {
            let (mut entry, version) = self.entry().await?;
            let before = entry.clone();
            let out = change(&mut entry);
            if entry == before && version.is_some() {
                return Ok((out, entry));
            }
            entry.updated_at = now_rfc3339();
            if write_json(self.container, &self.ledger, &entry, version.as_ref())
                .await?
                .is_some()
            {
                return Ok((out, entry));
            }
        }
        Err(Failure::Transient(
            "the pulse ledger kept changing under concurrent deliveries".into(),
        ))
    }

    async fn work(&mut self) -> Result<Outcome, Failure> {
        let (entry, _) = self.entry().await?;
        let decided = entry
            .distribution
            .as_ref()
            .is_some_and(|d| d.status != StepStatus::Claimed);
        if entry.v < LEDGER_VERSION || decided {
            // Finished (or, `v: 1`, handled person by person by the previous version).
            self.counts = entry
                .parts
                .get(&self.part)
                .map(|p| p.counts.clone())
                .unwrap_or_default();
            return Ok(Outcome::Done(None));
        }
        if let Some(p) = entry.parts.get(&self.part) {
            self.counts = p.counts.clone();
        } else {
            let root = match self.svc.secrets.get(SecretName::AnalyticsHashKey).await {
                Ok(Some(k)) => k,
                Ok(None) => return Err(Failure::Permanent(
                    "secret analytics-hash-key is not configured (PulseSender keys people by it)"
                        .into(),
                )),
                Err(e) => return Err(Failure::Transient(e.to_string())),
            };
            let request = self.request;
            let people = &request.event.people;
            let mut waiting = false;
            for chunk in people.chunks(CHUNK) {
                if self.started.elapsed() > PART_TIME {
                    return Ok(Outcome::Paused);
                }
                waiting |= self.chunk(root.expose().as_bytes(), chunk).await?;
            }
            if waiting {
                return Err(Failure::Transient(
                    "people are claimed by a delivery that may still be adding them".into(),
                ));
            }
            let record = PartRecord {
                at: now_rfc3339(),
                counts: self.counts.clone(),
            };
            let part = self.part;
            self.update(|e| {
                e.parts.entry(part).or_insert_with(|| record.clone());
            })
            .await?;
        }
        self.distribute().await
    }

    /// One chunk of people, all the way into the batch. `Ok(true)`: some were claimed by
    /// another delivery still working on them (the part cannot finish yet).
    async fn chunk(&mut self, root: &[u8], people: &[PulsePerson]) -> Result<bool, Failure> {
        let ours = self.ledger.clone();
        let hours = *self.route.cooldown_hours.get_ref();
        let category = self.route.category().to_owned();
        let mut waiting = false;
        // Keyed people, a person named twice in the chunk once.
        let mut keyed: Vec<(&PulsePerson, String)> = Vec::new();
        for p in people {
            match identity(p).map(|id| cooldown_blob(&category, &person_key(root, &id))) {
                Some(mark) if !keyed.iter().any(|(_, m)| *m == mark) => keyed.push((p, mark)),
                Some(_) => {}
                None => self.counts.skipped += 1,
            }
        }
        let c = self.container;
        let reads: Vec<_> = keyed
            .iter()
            .map(|(_, mark)| read_json::<CoolDown>(c, mark))
            .collect();
        let marks = bounded(reads, BLOB_CONCURRENCY).await;
        let mut candidates = Vec::new();
        let now_t = OffsetDateTime::now_utc();
        for ((person, mark), read) in keyed.into_iter().zip(marks) {
            let found = read?;
            if let Some((m, etag)) = &found {
                if m.event == ours {
                    match m.state {
                        MarkState::Added => {
                            self.counts.added += 1;
                            continue;
                        }
                        MarkState::Ambiguous => {
                            self.counts.ambiguous += 1;
                            continue;
                        }
                        MarkState::Claimed if age_secs(&m.at) < self.claim_grace_secs() => {
                            waiting = true;
                            continue;
                        }
                        MarkState::Claimed => {
                            // A claim without an outcome: never added again.
                            let mut m = m.clone();
                            m.state = MarkState::Ambiguous;
                            if write_json(c, &mark, &m, Some(etag)).await?.is_some() {
                                self.counts.ambiguous += 1;
                            } else {
                                waiting = true;
                            }
                            continue;
                        }
                        MarkState::Released => {}
                    }
                } else if m.holds(&ours, hours, now_t) {
                    self.counts.cooling += 1;
                    continue;
                }
            }
            candidates.push(Candidate {
                person,
                mark,
                version: found.map(|(_, e)| e),
                contact: None,
                transaction: None,
            });
        }
        if candidates.is_empty() {
            return Ok(waiting);
        }
        self.contacts(&mut candidates).await?;
        candidates.retain(|c| c.contact.is_some());
        if candidates.is_empty() {
            return Ok(waiting);
        }
        self.transactions(&mut candidates).await?;
        // Claim: each person's mark names this event, under its ETag (a concurrent copy of
        // the event wins some, we win the others).
        let writes: Vec<_> = candidates
            .iter()
            .map(|cand| {
                let m = CoolDown {
                    event: ours.clone(),
                    at: now_rfc3339(),
                    state: MarkState::Claimed,
                    transaction: cand.transaction.clone(),
                };
                async move { write_json(c, &cand.mark, &m, cand.version.as_ref()).await }
            })
            .collect();
        let claims = bounded(writes, BLOB_CONCURRENCY).await;
        let mut won = Vec::new();
        for (mut cand, claim) in candidates.into_iter().zip(claims) {
            match claim? {
                Some(etag) => {
                    cand.version = Some(etag);
                    won.push(cand);
                }
                // Another delivery changed the mark first: the next run reads it again.
                None => waiting = true,
            }
        }
        if won.is_empty() {
            return Ok(waiting);
        }
        self.svc.crash.point(CRASH_AFTER_PERSON_CLAIM);
        let ids: Vec<String> = won.iter().filter_map(|c| c.transaction.clone()).collect();
        let (state, failure) = match self.join_batch(&ids).await? {
            Sent::Done(()) => (MarkState::Added, None),
            Sent::NotDone(f) => (MarkState::Released, Some(f)),
            Sent::Unknown(why) => {
                tracing::warn!(people = won.len(), reason = %why, "batch call outcome unknown: these people are ambiguous, never added again");
                (MarkState::Ambiguous, None)
            }
        };
        // The event has no batch to join (its create was lost): nobody is added.
        let (state, failure) = match failure {
            Some(Failure::Permanent(why)) if why == NO_BATCH => (MarkState::Released, None),
            other => (state, other),
        };
        let settles: Vec<_> = won.iter().map(|c| self.settle_mark(c, state)).collect();
        let outcomes = bounded(settles, BLOB_CONCURRENCY).await;
        for o in outcomes {
            o?;
        }
        let n = won.len() as u32;
        match (state, failure) {
            (_, Some(f)) => return Err(f),
            (MarkState::Added, None) => self.counts.added += n,
            (MarkState::Ambiguous, None) => self.counts.ambiguous += n,
            _ => self.counts.skipped += n,
        }
        Ok(waiting)
    }

    /// Records a claimed person's outcome on their mark (over a concurrent "ambiguous" from
    /// a delivery that thought us dead: we know better).
    async fn settle_mark(&self, cand: &Candidate<'_>, state: MarkState) -> Result<(), Failure> {
        let mut version = cand.version.clone();
        for _ in 0..MAX_ROUNDS {
            let m = CoolDown {
                event: self.ledger.clone(),
                at: now_rfc3339(),
                state,
                transaction: cand.transaction.clone(),
            };
            if write_json(self.container, &cand.mark, &m, version.as_ref())
                .await?
                .is_some()
            {
                return Ok(());
            }
            match read_json::<CoolDown>(self.container, &cand.mark).await? {
                Some((cur, etag)) if cur.event == self.ledger => version = Some(etag),
                // Another event took the mark since: ours is no longer the last word.
                _ => return Ok(()),
            }
        }
        Err(Failure::Transient("a person's mark kept changing".into()))
    }

    /// Upserts the candidates' contacts (a `CID_…` brought by the event is used as is).
    /// People Qualtrics refuses (4xx) or who have neither an address nor a `CID_…` are skipped.
    async fn contacts(&mut self, candidates: &mut [Candidate<'_>]) -> Result<(), Failure> {
        let upserts: Vec<_> = candidates.iter().map(|c| self.contact(c.person)).collect();
        let results = bounded(upserts, CONTACT_CONCURRENCY).await;
        let mut transient = None;
        for (c, r) in candidates.iter_mut().zip(results) {
            match r {
                Ok(Some(cid)) => c.contact = Some(cid),
                Ok(None) => self.counts.skipped += 1,
                Err(e) if e.is_transient() => {
                    transient.get_or_insert(Failure::Transient(e.to_string()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "contact refused: person skipped");
                    self.counts.skipped += 1;
                }
            }
        }
        transient.map_or(Ok(()), Err)
    }

    async fn contact(&self, p: &PulsePerson) -> Result<Option<String>, QualtricsError> {
        let email = p
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| e.contains('@'));
        let Some(email) = email else {
            return Ok(p
                .contact_id
                .as_deref()
                .filter(|c| crate::messages::is_qualtrics_id(c, "CID_"))
                .map(str::to_owned));
        };
        let (first, last) = match p.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => match n.split_once(' ') {
                Some((f, l)) => (Some(f.to_owned()), Some(l.trim().to_owned())),
                None => (Some(n.to_owned()), None),
            },
            _ => (None, None),
        };
        let contact = Contact {
            first_name: first,
            last_name: last,
            email: email.to_owned(),
            ext_ref: p.external_ref.clone(),
            embedded_data: BTreeMap::new(),
            unsubscribed: false,
        };
        let r = self
            .qualtrics
            .upsert_list_contact(
                &self.svc.secrets,
                &self.budget(),
                self.route.directory.get_ref(),
                self.route.mailing_list.get_ref(),
                &contact,
            )
            .await?;
        Ok(Some(r.id))
    }

    /// One transaction per candidate, in one call: the event's id and type plus the entry's
    /// `embedded_data` names (person attribute first, then event attribute).
    async fn transactions(&self, candidates: &mut [Candidate<'_>]) -> Result<(), Failure> {
        let e = &self.request.event;
        let date = OffsetDateTime::now_utc();
        let date = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            date.hour(),
            date.minute(),
            date.second()
        );
        let txs: Vec<Transaction> = candidates
            .iter()
            .map(|c| {
                let mut data = BTreeMap::from([
                    ("eventId".to_owned(), e.event_id.clone()),
                    ("eventType".to_owned(), e.event_type.clone()),
                ]);
                for name in &self.route.embedded_data {
                    let n = name.get_ref();
                    if let Some(v) = c.person.attributes.get(n).or_else(|| e.attributes.get(n)) {
                        data.insert(n.clone(), attr_text(v));
                    }
                }
                Transaction {
                    contact_id: c.contact.clone().unwrap_or_default(),
                    mailing_list_id: self.route.mailing_list.get_ref().clone(),
                    transaction_date: date.clone(),
                    data,
                }
            })
            .collect();
        let ids = self
            .qualtrics
            .create_transactions(
                &self.svc.secrets,
                &self.budget(),
                self.route.directory.get_ref(),
                &txs,
            )
            .await?;
        for (c, id) in candidates.iter_mut().zip(ids) {
            c.transaction = Some(id);
        }
        Ok(())
    }

    /// Puts `ids` into the event's batch: creates it (claimed first, id recorded before
    /// anything is distributed) when there is none yet, else adds to it.
    async fn join_batch(&self, ids: &[String]) -> Result<Sent<()>, Failure> {
        let deadline = Instant::now() + Duration::from_secs(self.claim_grace_secs() as u64);
        loop {
            let grace = self.claim_grace_secs();
            // Claim the creation if nobody has; a stale claim becomes ambiguous.
            let (claimed, entry) = self
                .update(|e| match &e.batch {
                    None => {
                        e.batch = Some(Step::new(StepStatus::Claimed, None, None));
                        true
                    }
                    Some(b) if b.status == StepStatus::Claimed && age_secs(&b.at) >= grace => {
                        e.batch = Some(Step::new(
                            StepStatus::Ambiguous,
                            None,
                            Some("claimed by a delivery that recorded no outcome".into()),
                        ));
                        false
                    }
                    Some(_) => false,
                })
                .await?;
            let directory = self.route.directory.get_ref();
            if claimed {
                let r = self
                    .qualtrics
                    .create_transaction_batch(
                        &self.svc.secrets,
                        &self.budget(),
                        directory,
                        ids,
                        &now_rfc3339(),
                    )
                    .await;
                let (step, out) = match classify(r) {
                    Sent::Done(id) => (
                        Some(Step::new(StepStatus::Done, Some(id), None)),
                        Sent::Done(()),
                    ),
                    Sent::NotDone(f) => (None, Sent::NotDone(f)),
                    Sent::Unknown(why) => (
                        Some(Step::new(StepStatus::Ambiguous, None, Some(why.clone()))),
                        Sent::Unknown(why),
                    ),
                };
                self.update(|e| e.batch = step.clone()).await?;
                return Ok(out);
            }
            match entry.batch.as_ref().map(|b| (b.status, b.id.clone())) {
                Some((StepStatus::Done, Some(batch))) => {
                    let r = self
                        .qualtrics
                        .add_to_transaction_batch(
                            &self.svc.secrets,
                            &self.budget(),
                            directory,
                            &batch,
                            ids,
                        )
                        .await;
                    return Ok(classify(r));
                }
                Some((StepStatus::Claimed, _)) if Instant::now() < deadline => {
                    // Another part is creating it: its id comes within the call timeout.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some((StepStatus::Claimed, _)) => {
                    return Ok(Sent::NotDone(Failure::Transient(
                        "another delivery is still creating the transaction batch".into(),
                    )))
                }
                _ => return Ok(Sent::NotDone(Failure::Permanent(NO_BATCH.into()))),
            }
        }
    }

    /// Once every part is done: claims the distribution (in the same ledger write as the last
    /// part's record, so exactly one delivery claims it) and sends it to the batch.
    async fn distribute(&mut self) -> Result<Outcome, Failure> {
        let grace = self.claim_grace_secs();
        let (decision, entry) = self
            .update(|e| {
                if e.distribution.is_some() {
                    let d = e.distribution.clone();
                    match d {
                        Some(d) if d.status == StepStatus::Claimed && age_secs(&d.at) >= grace => {
                            e.distribution = Some(Step::new(
                                StepStatus::Ambiguous,
                                None,
                                Some("claimed by a delivery that recorded no outcome (crash or lost answer): not resent".into()),
                            ));
                            return Decision::Decided;
                        }
                        Some(d) if d.status == StepStatus::Claimed => return Decision::Busy,
                        _ => return Decision::Waiting,
                    }
                }
                if (e.parts.len() as u32) < e.part_count.max(1) {
                    return Decision::Waiting;
                }
                match e.batch.as_ref().map(|b| (b.status, b.id.clone())) {
                    Some((StepStatus::Done, Some(id))) => {
                        e.distribution = Some(Step::new(StepStatus::Claimed, None, None));
                        Decision::Send(id)
                    }
                    None => {
                        e.distribution = Some(Step::new(
                            StepStatus::None,
                            None,
                            Some("nobody to survey".into()),
                        ));
                        Decision::Decided
                    }
                    Some(_) => {
                        e.distribution = Some(Step::new(
                            StepStatus::None,
                            None,
                            Some("the transaction batch's creation is ambiguous: nothing is sent to it".into()),
                        ));
                        Decision::Decided
                    }
                }
            })
            .await?;
        let batch = match decision {
            Decision::Send(batch) => batch,
            Decision::Busy => {
                return Err(Failure::Transient(
                    "the distribution is claimed by a delivery that may still be sending".into(),
                ))
            }
            Decision::Decided => return Ok(Outcome::Done(entry.distribution)),
            Decision::Waiting => return Ok(Outcome::Done(None)),
        };
        self.svc.crash.point(CRASH_AFTER_CLAIM);
        let r = self.route;
        let sent_at = OffsetDateTime::now_utc();
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let distribution = BatchDistribution {
            transaction_batch_id: batch,
            invitation: Invitation {
                library_id: r.library.get_ref().clone(),
                message_id: r.message.get_ref().clone(),
                from_email: r.from_email.clone(),
                from_name: r.from_name.clone(),
                reply_to_email: r
                    .reply_to_email
                    .clone()
                    .unwrap_or_else(|| r.from_email.clone()),
                subject: r.subject.clone(),
                survey_id: r.survey.get_ref().clone(),
                expiration_date: fmt(sent_at + time::Duration::days(i64::from(r.expiration_days))),
                send_date: fmt(sent_at.replace_nanosecond(0).unwrap_or(sent_at)),
            },
        };
        let result = self
            .qualtrics
            .create_batch_distribution(&self.svc.secrets, &self.budget(), &distribution)
            .await;
        let (step, failure) = match classify(result) {
            Sent::Done(emd) => (Some(Step::new(StepStatus::Done, Some(emd), None)), None),
            // Refused before sending: the claim is released for a later delivery.
            Sent::NotDone(f) => (None, Some(f)),
            Sent::Unknown(why) => (
                Some(Step::new(
                    StepStatus::Ambiguous,
                    None,
                    Some(format!("{why}: may have been sent, so it is not resent")),
                )),
                None,
            ),
        };
        self.update(|e| e.distribution = step.clone()).await?;
        match failure {
            Some(f) => Err(f),
            None => Ok(Outcome::Done(step)),
        }
    }
}

/// What [`Work::distribute`] found in the ledger.
enum Decision {
    /// Claimed by this delivery: send to this batch.
    Send(String),
    /// Another delivery holds a fresh claim.
    Busy,
    /// Recorded here without a send (nobody to survey, a stale claim made ambiguous).
    Decided,
    /// Nothing for this delivery to do: parts are still missing, or it was decided before.
    Waiting,
}

/// Runs `futures` at most `n` at a time; the results in order. (The futures are made before
/// they are streamed: a stream of closures borrowing locals trips the compiler's `Send`
/// inference for the handler's future.)
async fn bounded<F: std::future::Future>(futures: Vec<F>, n: usize) -> Vec<F::Output> {
    stream::iter(futures).buffered(n).collect().await
}

/// Why a chunk has no batch to join.
const NO_BATCH: &str = "the event has no transaction batch to join (its creation is ambiguous)";

#[cfg(test)]
mod tests {
    use super::*;

    fn person(email: Option<&str>, ext: Option<&str>) -> PulsePerson {
        PulsePerson {
            email: email.map(Into::into),
            external_ref: ext.map(Into::into),
            contact_id: None,
            name: None,
            attributes: Default::default(),
        }
    }

    #[test]
    fn people_are_keyed_by_a_keyed_hash_never_the_address() {
        let a = identity(&person(Some(" Pat@Example.org "), Some("E1"))).unwrap();
        let b = identity(&person(Some("pat@example.org"), None)).unwrap();
        assert_eq!(a, b, "address trimmed and lower-cased, preferred to extRef");
        let k = person_key(b"root", &a);
        assert_eq!(k.len(), 64);
        assert!(!k.contains("pat"));
        assert_ne!(k, person_key(b"other", &a), "the key matters");
        assert_ne!(
            identity(&person(None, Some("pat@example.org"))).unwrap(),
            a,
            "an extRef never collides with an address"
        );
        assert_eq!(identity(&person(Some("  "), None)), None);
    }
}
