//! `PulseSender`: turns one verified ops event (`pulse-requests`) into pulse surveys, per its
//! `[[pulses]]` entry (docs/pulse.md, `## PulseSender`). Owns two kinds of state blob in the
//! state container, both written under ETag conditions:
//!
//! * the **event ledger** `pulse/{sha256(eventId)}.json`: one record per person (keyed hash),
//!   `claimed` before the distribution POST and `sent`/`ambiguous`/`cooling`/`skipped` after,
//!   so duplicates and concurrent copies of one event survey each person at most once, and a
//!   claim without an outcome (crash, lost answer) is never resent;
//! * the **cool-down** `pulse/cooldown/{sha256(category)}/{personHash}.json`: the last event
//!   that surveyed the person for the category. It is written *before* the claim, so a crash
//!   errs on the side of silence.
//!
//! A person is keyed by an HMAC of their identity (address, else `externalRef`, else contact
//! id), never by the address. Per person: upsert into the entry's mailing list, then one
//! email distribution to that membership (`close-the-loop.md` §2.3.3, single-contact target).
//! Transient failures re-enqueue with a delay and a nested `retry` (as `TicketCreator`); a
//! permanent one dead-letters the original text. Logs carry counts and hashes, never an address.

use super::config::PulseRoute;
use crate::deps::Deps;
use crate::env::SettingError;
use crate::fault::CrashHook;
use crate::host::{
    Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, QueueTrigger, Trigger,
};
use crate::messages::{PulsePerson, PulseRequest, Retry};
use crate::qualtrics::{
    CallBudget, Contact, ContactRef, EmailDistribution, QualtricsClient, QualtricsError,
};
use crate::secrets::{SecretName, SecretsProvider};
use crate::storage::blob_state::{self, BlobError};
use crate::telemetry::{InvocationSummary, Severity};
use aws_lc_rs::{digest, hmac};
use azure_core::http::Etag;
use azure_storage_blob::BlobContainerClient;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const REQUEST: &str = "request";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "PulseSender",
    trigger: Trigger::Queue,
    input: REQUEST,
};
const DEADLETTER: &str = "deadletter";
pub const TRIGGER_QUEUE: &str = "pulse-requests";
/// Test-only crash point between a person's claim and the distribution POST.
const CRASH_AFTER_CLAIM: &str = "pulse-after-claim";
/// Ledger rounds one person may spend on concurrent changes before trying later.
const MAX_ROUNDS: usize = 8;
/// Domain separation: the person key is an HMAC under a key derived from
/// `analytics-hash-key`, so it never equals an analytics identity hash.
const KEY_LABEL: &[u8] = b"qualtrics-bridge pulse cool-down v1";

/// `PulseSender`'s state, built at start-up.
pub struct PulseSenderService {
    pulses: Vec<PulseRoute>,
    container: Option<BlobContainerClient>,
    qualtrics: Option<Arc<QualtricsClient>>,
    secrets: Arc<SecretsProvider>,
    queue: Option<azure_storage_queue::QueueClient>,
    max_delay: Duration,
    window: Duration,
    call_timeout: Duration,
    crash: CrashHook,
}

impl std::fmt::Debug for PulseSenderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulseSenderService")
            .field("pulses", &self.pulses.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonStatus {
    /// About to send (or sending): never sent again by a later delivery.
    Claimed,
    Sent,
    /// May or may not have been sent; never resent.
    Ambiguous,
    /// Inside the category's cool-down: dropped.
    Cooling,
    /// Nothing to send to (no address and no list membership).
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonRecord {
    pub status: PersonStatus,
    pub at: String,
    /// The membership (`CGC_…`) surveyed; never the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_lookup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The event ledger blob's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PulseEntry {
    pub v: u32,
    pub event_type: String,
    pub category: String,
    /// By person key (hex HMAC).
    pub people: BTreeMap<String, PersonRecord>,
    pub updated_at: String,
}

/// The cool-down blob's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CoolDown {
    /// The event-ledger name of the event that surveyed the person.
    event: String,
    at: String,
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

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn age_secs(at: &str) -> i64 {
    OffsetDateTime::parse(at, &Rfc3339)
        .map(|t| (OffsetDateTime::now_utc() - t).whole_seconds())
        .unwrap_or(i64::MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(digest::digest(&digest::SHA256, s.as_bytes()).as_ref())
}

/// The person's identity as keyed: the trimmed, lower-cased address, else `externalRef`, else
/// the contact id (tagged so the kinds never collide); `None` when the person names none.
fn identity(p: &PulsePerson) -> Option<String> {
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

/// HMAC-SHA256 of the identity under a key derived from `analytics-hash-key`.
fn person_key(root: &[u8], identity: &str) -> String {
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
    version: &Option<Etag>,
) -> Result<Option<Etag>, Failure> {
    let bytes = Bytes::from(
        serde_json::to_vec(value).map_err(|e| Failure::Permanent(format!("{name}: {e}")))?,
    );
    Ok(blob_state::put_versioned(c, name, bytes, version.as_ref()).await?)
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
        let queue = crate::storage::optional_client(
            storage,
            |s| s.queue(TRIGGER_QUEUE),
            "no queue endpoint: failed pulse requests cannot be re-enqueued, the host retries them",
        );
        let secs = |name, default, range| {
            crate::env::number_in(lookup, name, default, range).map(Duration::from_secs)
        };
        Ok(Self {
            pulses,
            container,
            qualtrics: deps.qualtrics.clone(),
            secrets: deps.secrets.clone(),
            queue,
            max_delay: secs(
                "PULSE_RETRY_MAX_DELAY_SECONDS",
                300,
                1..=crate::storage::MAX_QUEUE_DELAY.as_secs(),
            )?,
            window: secs("PULSE_RETRY_WINDOW_SECONDS", 24 * 3600, 1..=7 * 24 * 3600)?,
            call_timeout: secs("PULSE_CALL_TIMEOUT_SECONDS", 30, 1..=120)?,
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
        let Some(route) = self
            .pulses
            .iter()
            .find(|p| p.event_type() == request.event.event_type)
        else {
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
            ledger: format!("pulse/{}.json", sha256_hex(&request.event.event_id)),
            counts: Counts::default(),
        };
        work.run().await
    }
}

/// What happened to the event's people, for the log line.
#[derive(Default, Debug)]
struct Counts {
    sent: u32,
    already: u32,
    cooling: u32,
    ambiguous: u32,
    skipped: u32,
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
    let mut s = summary(request, "deadlettered", Some(why));
    s.severity = Severity::Error;
    let id = request.map_or_else(String::new, |r| {
        format!("event {} ({}): ", r.event.event_id, r.event.event_type)
    });
    InvocationReply::new()
        .queue(DEADLETTER, vec![text.to_owned()])
        .log(format!("dead-lettered: {id}{why}"))
        .summary(s)
}

struct Work<'a> {
    svc: &'a PulseSenderService,
    msg: &'a QueueTrigger,
    request: &'a PulseRequest,
    route: &'a PulseRoute,
    container: &'a BlobContainerClient,
    qualtrics: &'a QualtricsClient,
    ledger: String,
    counts: Counts,
}

impl Work<'_> {
    fn ids(&self) -> String {
        let e = &self.request.event;
        format!("event {} ({})", e.event_id, e.event_type)
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
        let result = self.send_all().await;
        let c = &self.counts;
        tracing::info!(
            sent = c.sent,
            already = c.already,
            cooling = c.cooling,
            ambiguous = c.ambiguous,
            skipped = c.skipped,
            "pulse people"
        );
        let counts = format!(
            "{} sent, {} already done, {} in cool-down, {} ambiguous, {} skipped",
            c.sent, c.already, c.cooling, c.ambiguous, c.skipped
        );
        match result {
            Ok(()) => Ok(InvocationReply::new()
                .log(format!("{}: {counts}", self.ids()))
                .summary(summary(Some(self.request), "sent", None))),
            Err(Failure::Permanent(why)) => Ok(self.poison(&why)),
            Err(Failure::Transient(why)) if self.past_window() => {
                let why = format!(
                    "gave up: still failing after more than {}s (PULSE_RETRY_WINDOW_SECONDS): {why}",
                    self.svc.window.as_secs()
                );
                Ok(self.poison(&why))
            }
            Err(Failure::Transient(why)) => self.later(&format!("{why} ({counts})")).await,
        }
    }

    fn poison(&self, why: &str) -> InvocationReply {
        let text = match self.request.retry {
            None => self.msg.text.clone(),
            Some(_) => PulseRequest {
                retry: None,
                ..self.request.clone()
            }
            .to_text(),
        };
        dead_letter(&text, Some(self.request), why)
    }

    fn past_window(&self) -> bool {
        self.request
            .retry
            .as_ref()
            .is_some_and(|r| age_secs(&r.since) > self.svc.window.as_secs() as i64)
    }

    /// Puts the request back, invisible for a backoff (at least Qualtrics' `Retry-After`).
    async fn later(&self, why: &str) -> Result<InvocationReply, InvocationError> {
        let (retry, delay) = Retry::next(
            self.request.retry.as_ref(),
            now,
            self.svc.max_delay,
            self.qualtrics.throttled_for(),
        );
        let attempt = retry.attempt;
        let text = PulseRequest {
            retry: Some(retry),
            ..self.request.clone()
        }
        .to_text();
        let sent = match &self.svc.queue {
            Some(q) => crate::storage::send_later(q, &text, delay)
                .await
                .map_err(|e| e.to_string()),
            None => Err("the storage connection has no queue endpoint".into()),
        };
        match sent {
            Ok(()) => {
                let mut s = summary(Some(self.request), "retrying", Some(why));
                s.severity = Severity::Warn;
                Ok(InvocationReply::new()
                    .log(format!(
                        "{}: {why}; re-enqueued, back in {}s (attempt {})",
                        self.ids(),
                        delay.as_secs(),
                        attempt + 1
                    ))
                    .summary(s))
            }
            Err(e) => Err(InvocationError::retry_from(
                format!("{}: {why}; cannot re-enqueue", self.ids()),
                e,
            )),
        }
    }

    async fn send_all(&mut self) -> Result<(), Failure> {
        let root =
            match self.svc.secrets.get(SecretName::AnalyticsHashKey).await {
                Ok(Some(k)) => k,
                Ok(None) => return Err(Failure::Permanent(
                    "secret analytics-hash-key is not configured (PulseSender keys people by it)"
                        .into(),
                )),
                Err(e) => return Err(Failure::Transient(e.to_string())),
            };
        let category_dir = sha256_hex(self.route.category());
        let mut first_failure = None;
        for person in &self.request.event.people {
            let Some(id) = identity(person) else {
                self.counts.skipped += 1;
                continue;
            };
            let key = person_key(root.expose().as_bytes(), &id);
            let cooldown = format!("pulse/cooldown/{category_dir}/{key}.json");
            // One person's transient failure does not hold back the others; the retry
            // finds the done ones in the ledger.
            match self.person(person, &key, &cooldown).await {
                Ok(()) => {}
                Err(Failure::Permanent(why)) => return Err(Failure::Permanent(why)),
                Err(f @ Failure::Transient(_)) => {
                    first_failure.get_or_insert(f);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    async fn entry(&self) -> Result<(PulseEntry, Option<Etag>), Failure> {
        Ok(match read_json(self.container, &self.ledger).await? {
            Some((e, etag)) => (e, Some(etag)),
            None => (
                PulseEntry {
                    v: 1,
                    event_type: self.request.event.event_type.clone(),
                    category: self.route.category().to_owned(),
                    people: BTreeMap::new(),
                    updated_at: now(),
                },
                None,
            ),
        })
    }

    /// Stores the person's record; `false` when another worker changed the entry first.
    async fn record(
        &self,
        entry: &mut PulseEntry,
        version: &mut Option<Etag>,
        key: &str,
        rec: PersonRecord,
    ) -> Result<bool, Failure> {
        entry.people.insert(key.to_owned(), rec);
        entry.updated_at = now();
        match write_json(self.container, &self.ledger, entry, version).await? {
            Some(etag) => {
                *version = Some(etag);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn rec(status: PersonStatus, reason: Option<String>) -> PersonRecord {
        PersonRecord {
            status,
            at: now(),
            contact_lookup_id: None,
            distribution_id: None,
            reason,
        }
    }

    /// One person: at most one survey for this event, none inside the cool-down.
    async fn person(&mut self, p: &PulsePerson, key: &str, cooldown: &str) -> Result<(), Failure> {
        let mut membership: Option<ContactRef> = None;
        for _ in 0..MAX_ROUNDS {
            let (mut entry, mut version) = self.entry().await?;
            if let Some(r) = entry.people.get(key) {
                match r.status {
                    PersonStatus::Claimed if age_secs(&r.at) < self.claim_grace_secs() => {
                        return Err(Failure::Transient(
                            "a person is claimed by a delivery that may still be sending".into(),
                        ))
                    }
                    PersonStatus::Claimed => {
                        tracing::warn!(person = %&key[..12], "claim without an outcome: ambiguous, never resent");
                        let mut rec = r.clone();
                        rec.status = PersonStatus::Ambiguous;
                        rec.at = now();
                        rec.reason = Some("claimed by an earlier delivery that recorded no outcome (crash or lost answer): not resent".into());
                        if self.record(&mut entry, &mut version, key, rec).await? {
                            self.counts.ambiguous += 1;
                            return Ok(());
                        }
                        continue;
                    }
                    _ => {
                        self.counts.already += 1;
                        return Ok(());
                    }
                }
            }
            // The cool-down: another event surveyed this person for the category recently.
            let ours = &self.ledger;
            let cd: Option<(CoolDown, Etag)> = read_json(self.container, cooldown).await?;
            let hours = i64::from(*self.route.cooldown_hours.get_ref());
            if let Some((c, _)) = &cd {
                if &c.event != ours && age_secs(&c.at) < hours * 3600 {
                    let rec = Self::rec(
                        PersonStatus::Cooling,
                        Some(format!("surveyed for this category within {hours}h")),
                    );
                    if self.record(&mut entry, &mut version, key, rec).await? {
                        self.counts.cooling += 1;
                        return Ok(());
                    }
                    continue;
                }
            }
            let lookup = match &membership {
                Some(m) => m.clone(),
                None => match self.membership(p).await? {
                    Some(m) => {
                        membership = Some(m.clone());
                        m
                    }
                    None => {
                        let rec = Self::rec(
                            PersonStatus::Skipped,
                            Some("no address and no list membership (CGC_…)".into()),
                        );
                        if self.record(&mut entry, &mut version, key, rec).await? {
                            self.counts.skipped += 1;
                            return Ok(());
                        }
                        continue;
                    }
                },
            };
            // Start the cool-down before the claim: a crash after it errs on silence.
            if cd.as_ref().map(|(c, _)| &c.event) != Some(ours) {
                let mark = CoolDown {
                    event: ours.clone(),
                    at: now(),
                };
                let v = cd.map(|(_, etag)| etag);
                if write_json(self.container, cooldown, &mark, &v)
                    .await?
                    .is_none()
                {
                    continue;
                }
            }
            let mut claim = Self::rec(PersonStatus::Claimed, None);
            claim.contact_lookup_id = Some(lookup.lookup_id.clone());
            if !self
                .record(&mut entry, &mut version, key, claim.clone())
                .await?
            {
                continue;
            }
            self.svc.crash.point(CRASH_AFTER_CLAIM);
            return self.send(&mut entry, &mut version, key, claim).await;
        }
        Err(Failure::Transient(
            "the pulse ledger kept changing under concurrent deliveries".into(),
        ))
    }

    /// The person's list membership: upserted from their address, or the `CGC_…` they came
    /// with; `None` when they have neither.
    async fn membership(&self, p: &PulsePerson) -> Result<Option<ContactRef>, Failure> {
        let email = p
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| e.contains('@'));
        let Some(email) = email else {
            return Ok(p
                .contact_id
                .as_deref()
                .filter(|c| crate::messages::is_qualtrics_id(c, "CGC_"))
                .map(|c| ContactRef {
                    id: String::new(),
                    lookup_id: c.to_owned(),
                }));
        };
        let mut embedded = BTreeMap::new();
        for name in &self.route.embedded_data {
            let n = name.get_ref();
            if let Some(v) = p
                .attributes
                .get(n)
                .or_else(|| self.request.event.attributes.get(n))
            {
                embedded.insert(n.clone(), attr_text(v));
            }
        }
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
            embedded_data: embedded,
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
        Ok(Some(r))
    }

    /// The distribution POST after the claim, and its outcome in the ledger.
    async fn send(
        &mut self,
        entry: &mut PulseEntry,
        version: &mut Option<Etag>,
        key: &str,
        claim: PersonRecord,
    ) -> Result<(), Failure> {
        let r = self.route;
        let sent_at = OffsetDateTime::now_utc();
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let distribution = EmailDistribution {
            library_id: r.library.get_ref().clone(),
            message_id: r.message.get_ref().clone(),
            mailing_list_id: r.mailing_list.get_ref().clone(),
            contact_lookup_id: claim.contact_lookup_id.clone().unwrap_or_default(),
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
        };
        let result = self
            .qualtrics
            .create_distribution(&self.svc.secrets, &self.budget(), &distribution)
            .await;
        let (outcome, failure) = match result {
            Ok(emd) => {
                self.counts.sent += 1;
                let mut rec = claim;
                rec.status = PersonStatus::Sent;
                rec.distribution_id = Some(emd);
                (Some(rec), None)
            }
            // Refused before sending, throttled past the budget, never connected: the claim
            // is released (the cool-down mark stays ours, so a retry of this event passes it).
            Err(
                e @ (QualtricsError::Throttled { .. }
                | QualtricsError::OutOfTime { .. }
                | QualtricsError::Transport { .. }
                | QualtricsError::Token(..)),
            ) => (None, Some(Failure::Transient(e.to_string()))),
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                (None, Some(Failure::Permanent(e.to_string())))
            }
            // A 5xx or a lost answer: it may have been sent.
            Err(e) => {
                self.counts.ambiguous += 1;
                let mut rec = claim;
                rec.status = PersonStatus::Ambiguous;
                rec.reason = Some(format!("{e}: may have been sent, so it is not resent"));
                (Some(rec), None)
            }
        };
        // Record over whatever a concurrent delivery wrote meanwhile (at most our claim
        // marked ambiguous; we know better).
        for _ in 0..MAX_ROUNDS {
            let stored = match &outcome {
                Some(rec) => {
                    let mut rec = rec.clone();
                    rec.at = now();
                    self.record(entry, version, key, rec).await?
                }
                None => {
                    entry.people.remove(key);
                    entry.updated_at = now();
                    match write_json(self.container, &self.ledger, entry, version).await? {
                        Some(etag) => {
                            *version = Some(etag);
                            true
                        }
                        None => false,
                    }
                }
            };
            if stored {
                return failure.map_or(Ok(()), Err);
            }
            let (e, v) = self.entry().await?;
            *entry = e;
            *version = v;
        }
        Err(Failure::Transient(
            "the pulse outcome could not be recorded".into(),
        ))
    }
}

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
