//! `TicketCreator`: turns a ticket request from the queue into exactly one ticket.
//!
//! 1. Decode and validate the message; one that can never succeed goes to the `deadletter`
//!    output at once with its original text (and, when its ids are usable, the ledger says why).
//! 2. Claim the response in the ledger (`ledger.rs`): create its entry if absent, then take a
//!    blob lease on it, renewed while the invocation works. A created/skipped response is done;
//!    a lease held by another worker is live (it renews it), so after `busy_wait_secs` this
//!    request comes back later; a claim found under our lease was left by a crashed worker
//!    (its lease lapsed) and is taken over with an ETag-conditional replace.
//! 3. Fetch the response from Qualtrics, evaluate the survey's rule (`rules.rs`); no → `skipped`.
//! 4. Look the ticket up in the target system (ServiceNow `correlation_id`, Zendesk
//!    `external_id`) so a crash between create and the ledger update never doubles a ticket;
//!    create it only if absent (Zendesk also with an `Idempotency-Key`); put it in the
//!    open-ticket index `TicketSync` reads (`open.rs`); record `created`.
//!
//! Failure classes: 429 with a short `Retry-After` is waited out (one gate per system, shared
//! by all invocations). Anything transient (5xx, timeouts, long 429s, a busy claim, a storage
//! error) re-enqueues the request itself on `ticket-requests`, invisible for the system's
//! `Retry-After` or an exponential backoff with jitter, and completes the invocation; only a
//! failed re-enqueue fails the invocation (host retry). A request still failing after
//! `TICKET_RETRY_WINDOW_SECONDS`, and a 4xx that cannot succeed (bad field, auth after one
//! secret refresh, missing target configuration), records `failed` and dead-letters the message.

pub mod config;
pub mod http;
pub mod ledger;
pub mod mapping;
pub mod open;
pub mod rules;
pub mod servicenow;
pub mod zendesk;

use crate::clock::now_rfc3339;
use crate::deps::Deps;
use crate::host::{
    Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, QueueTrigger, Trigger,
};
use crate::messages::{RequestSource, TicketRequest};
use crate::qualtrics::QualtricsClient;
use crate::redelivery::{self, NextTry, Redelivery, RetrySettings};
use crate::secrets::SecretsProvider;
use crate::storage::blob_state::BlobError;
use crate::telemetry::InvocationSummary;
pub use config::{TicketRoute, TicketSystem, TicketingLimits};
use http::CallError;
use ledger::{Claim, Entry, Ledger, State, TicketRef};
use mapping::Mapping;
use rules::ResponseView;
use servicenow::ServiceNow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zendesk::Zendesk;

const REQUEST: &str = "request";
pub const SPEC: FunctionSpec = FunctionSpec {
    name: "TicketCreator",
    trigger: Trigger::Queue,
    input: REQUEST,
};

/// Everything ticket creation needs, built at start-up.
#[derive(Debug)]
pub struct TicketService {
    mappings: HashMap<String, Mapping>,
    servicenow: Option<ServiceNow>,
    zendesk: Option<Zendesk>,
    ledger: Option<Ledger>,
    /// The open-ticket index `TicketSync` reads (same container as the ledger).
    open: Option<open::OpenIndex>,
    limits: TicketingLimits,
    redelivery: Redelivery,
    /// The ledger lease: a crashed worker's claim is taken over within this time.
    lease_secs: u64,
    secrets: Arc<SecretsProvider>,
    qualtrics: Option<Arc<QualtricsClient>>,
}

/// The ticket configuration cannot work; names the survey or setting, never a value.
#[derive(Debug, thiserror::Error)]
pub enum TicketBuildError {
    #[error("surveys {survey} tickets.{field}: {message}")]
    Mapping {
        survey: String,
        field: String,
        message: String,
    },
    #[error("{0}")]
    Settings(String),
}

/// The retry settings of `ticket-requests` (docs/tickets.md, docs/settings.md).
const RETRIES: RetrySettings = RetrySettings {
    queue: crate::poison::TRIGGER_QUEUE,
    max_delay: "TICKET_RETRY_MAX_DELAY_SECONDS",
    window: "TICKET_RETRY_WINDOW_SECONDS",
    window_default: Duration::from_secs(72 * 3600),
    window_max: Duration::from_secs(365 * 24 * 3600),
};

/// A whole number of seconds from setting `name`, within `range` ([`crate::env::number_in`]).
fn secs_setting(
    lookup: crate::env::Lookup<'_>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, TicketBuildError> {
    crate::env::number_in(lookup, name, default, range)
        .map_err(|e| TicketBuildError::Settings(e.to_string()))
}

impl TicketService {
    /// Compiles every survey's mapping (`routes`: survey id and `[surveys.tickets]`) and
    /// builds the clients the config routes to. A survey routed to a system whose settings
    /// are absent is logged here and dead-letters its requests (with the reason in the
    /// ledger); a malformed setting is an error.
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a TicketRoute)>,
        limits: &TicketingLimits,
        deps: &Deps,
    ) -> Result<Self, TicketBuildError> {
        let limits = limits.clone();
        let lookup = deps.lookup();
        let mut mappings = HashMap::new();
        for (survey, route) in routes {
            // Already checked (with file and line) when the config was parsed.
            let m = Mapping::compile(route).map_err(|e| TicketBuildError::Mapping {
                survey: survey.to_owned(),
                field: e.field,
                message: e.message,
            })?;
            mappings.insert(survey.to_owned(), m);
        }
        let servicenow =
            ServiceNow::from_settings(lookup, &limits).map_err(TicketBuildError::Settings)?;
        let zendesk =
            Zendesk::from_settings(lookup, &limits).map_err(TicketBuildError::Settings)?;
        for (id, m) in &mappings {
            let missing = match m.system {
                TicketSystem::Servicenow if servicenow.is_none() => Some("SERVICENOW_INSTANCE_URL"),
                TicketSystem::Zendesk if zendesk.is_none() => Some("ZENDESK_BASE_URL"),
                _ => None,
            };
            if let Some(setting) = missing {
                tracing::warn!(survey_id = %id, setting, "survey raises tickets but the target system is not configured: its requests will be dead-lettered");
            }
        }
        let ledger = Ledger::from_deps(deps);
        let open = crate::storage::optional_client(
            deps.storage.as_ref(),
            |s| s.blob_container(deps.state_container.as_str()),
            "no blob endpoint: the open-ticket index is unavailable",
        )
        .map(open::OpenIndex::new);
        Ok(Self {
            mappings,
            servicenow,
            zendesk,
            ledger,
            open,
            limits,
            redelivery: Redelivery::build(deps.storage.as_ref(), deps.lookup(), &RETRIES)
                .map_err(|e| TicketBuildError::Settings(e.to_string()))?,
            lease_secs: secs_setting(deps.lookup(), "TICKET_LEASE_SECONDS", 30, 15..=60)?,
            secrets: deps.secrets.clone(),
            qualtrics: deps.qualtrics.clone(),
        })
    }
}

/// How an attempt ended (before the ledger records it).
enum Outcome {
    Created(TicketRef),
    Skipped(String),
}

fn system_name(s: TicketSystem) -> &'static str {
    match s {
        TicketSystem::Servicenow => "servicenow",
        TicketSystem::Zendesk => "zendesk",
    }
}

impl TicketService {
    pub async fn invoke(
        &self,
        inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        let msg = envelope.queue(REQUEST)?;
        let request = match TicketRequest::parse(&msg.text) {
            Ok(r) => r,
            Err(why) => {
                let why = why.to_string();
                self.record_invalid(inv, &msg, &why).await;
                let why = format!("invalid ticket request: {why}");
                let summary = InvocationSummary {
                    outcome: Some("deadlettered"),
                    reason: Some(why.clone()),
                    ..Default::default()
                };
                return Ok(redelivery::dead_letter(msg.text, "", &why, summary));
            }
        };
        let svc = self;
        let Some(mapping) = svc.mappings.get(&request.survey_id) else {
            return Ok(InvocationReply::new()
                .log(format!(
                    "{}/{}: survey raises no tickets; skipped",
                    request.survey_id, request.response_id
                ))
                .summary(summary_of(
                    &request,
                    "skipped",
                    Some("survey raises no tickets"),
                )));
        };
        let Some(ledger) = svc.ledger.as_ref() else {
            return Err(InvocationError::retry(
                "the ticket ledger is unavailable (no storage connection)",
            ));
        };
        Attempt {
            svc,
            inv,
            msg: &msg,
            request: &request,
            mapping,
            ledger,
            blob: Ledger::blob_name(&request.survey_id, &request.response_id),
        }
        .run()
        .await
    }

    /// A message whose ids are usable but which can never succeed (bad version or source): the
    /// ledger says why. Messages without usable ids are only logged (they have no ledger path).
    async fn record_invalid(&self, inv: &Invocation, msg: &QueueTrigger, why: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&msg.text) else {
            return;
        };
        let (Some(s), Some(r)) = (v["surveyId"].as_str(), v["responseId"].as_str()) else {
            return;
        };
        let ok =
            crate::messages::is_qualtrics_id(s, "SV_") && crate::messages::is_qualtrics_id(r, "R_");
        let Some(ledger) = self.ledger.as_ref().filter(|_| ok) else {
            return;
        };
        let blob = Ledger::blob_name(s, r);
        let entry = Entry {
            v: 1,
            survey_id: s.into(),
            response_id: r.into(),
            state: State::Failed,
            system: None,
            claim: claim_of(inv, msg),
            ticket: None,
            reason: Some(format!("invalid request (dead-lettered): {why}")),
            retryable: true,
            attempts: 0,
            updated_at: now_rfc3339(),
        };
        // Never overwrite a real outcome: create only.
        if let Err(e) = ledger.create(&blob, &entry).await {
            tracing::warn!(error = %e, "cannot record the invalid request in the ledger");
        }
    }
}

/// The invocation's log line for a request about one response.
fn summary_of(
    request: &TicketRequest,
    outcome: &'static str,
    reason: Option<&str>,
) -> InvocationSummary {
    InvocationSummary {
        outcome: Some(outcome),
        survey_id: Some(request.survey_id.clone()),
        response_id: Some(request.response_id.clone()),
        reason: reason.map(str::to_owned),
        ..Default::default()
    }
}

fn claim_of(inv: &Invocation, msg: &QueueTrigger) -> Claim {
    Claim {
        message_id: msg.id.clone(),
        dequeue_count: msg.dequeue_count,
        invocation_id: inv.id.clone(),
        at: now_rfc3339(),
    }
}

struct Attempt<'a> {
    svc: &'a TicketService,
    inv: &'a Invocation,
    msg: &'a QueueTrigger,
    request: &'a TicketRequest,
    mapping: &'a Mapping,
    ledger: &'a Ledger,
    blob: String,
}

/// What claiming the response found.
enum Claimed {
    /// Ours, under `lease`, until we record the outcome.
    Ours {
        etag: azure_core::http::Etag,
        attempts: u32,
        lease: String,
    },
    /// A final outcome is already recorded: nothing to do.
    Done(InvocationReply),
    /// A live worker holds the lease (it renews it while it works): come back later.
    Busy(String),
}

impl Attempt<'_> {
    fn ids(&self) -> String {
        format!("{}/{}", self.request.survey_id, self.request.response_id)
    }

    fn entry(&self, state: State, attempts: u32) -> Entry {
        Entry {
            v: 1,
            survey_id: self.request.survey_id.clone(),
            response_id: self.request.response_id.clone(),
            state,
            system: Some(system_name(self.mapping.system).into()),
            claim: claim_of(self.inv, self.msg),
            ticket: None,
            reason: None,
            retryable: false,
            attempts,
            updated_at: now_rfc3339(),
        }
    }

    /// Why an entry needs no further work, or `None` when this attempt should take it.
    fn done(&self, e: &Entry) -> Option<String> {
        match e.state {
            State::Created => Some(match &e.ticket {
                Some(t) => format!(
                    "ticket already created: {} {}",
                    t.system,
                    t.number.as_deref().unwrap_or(&t.id)
                ),
                None => "ticket already created".into(),
            }),
            State::Skipped => Some(format!(
                "already skipped: {}",
                e.reason.as_deref().unwrap_or("rule did not match")
            )),
            State::Failed if !e.retryable && self.request.source != RequestSource::Replay => {
                Some(format!(
                    "failed permanently earlier ({}); replay the request to try again",
                    e.reason.as_deref().unwrap_or("no reason")
                ))
            }
            // A claim found while we hold the lease was left by a worker whose lease lapsed
            // (it crashed): taken over; its ticket, if any, is found by lookup.
            State::Failed | State::Claimed => None,
        }
    }

    fn done_reply(&self, why: &str) -> InvocationReply {
        InvocationReply::new()
            .log(format!("{}: {why}; nothing to do", self.ids()))
            .summary(summary_of(self.request, "duplicate", Some(why)))
    }

    /// Claims the response: the entry is created if absent, then leased; under the lease it
    /// is read again and, unless final, taken over with an ETag-conditional replace.
    async fn claim(&self) -> Result<Claimed, ledger::LedgerError> {
        let started = Instant::now();
        let busy_limit = Duration::from_secs(self.svc.limits.busy_wait_secs);
        let lease_secs = self.svc.lease_secs as i32;
        loop {
            let found = self.ledger.get(&self.blob).await?;
            // A final entry needs no lease to be read: final states never change.
            if let Some(why) = found.as_ref().and_then(|(e, _)| self.done(e)) {
                return Ok(Claimed::Done(self.done_reply(&why)));
            }
            if found.is_none() {
                // A blob must exist to be leased; whoever creates it, the lease decides.
                self.ledger
                    .create(&self.blob, &self.entry(State::Claimed, 0))
                    .await?;
            }
            if let Some(lease) = self.ledger.acquire(&self.blob, lease_secs).await? {
                let taken = self.take(&lease).await;
                if !matches!(taken, Ok(Some(Claimed::Ours { .. }))) {
                    self.release(&lease).await;
                }
                if let Some(c) = taken? {
                    return Ok(c);
                }
                // The entry changed between our read and replace: read it again, within the
                // same time limit as a busy claim.
            }
            if started.elapsed() >= busy_limit {
                let holder = match found {
                    Some((e, _)) => format!(
                        " (invocation {}, claimed {}s ago)",
                        e.claim.invocation_id,
                        e.claim.age_secs().unwrap_or(0)
                    ),
                    None => String::new(),
                };
                return Ok(Claimed::Busy(format!(
                    "another worker is still working on it{holder}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Under our lease: `Ok(None)` when the entry changed between read and replace (try again).
    async fn take(&self, lease: &str) -> Result<Option<Claimed>, ledger::LedgerError> {
        let Some((found, etag)) = self.ledger.get(&self.blob).await? else {
            return Ok(None);
        };
        if let Some(why) = self.done(&found) {
            return Ok(Some(Claimed::Done(self.done_reply(&why))));
        }
        let attempts = found.attempts + 1;
        let entry = self.entry(State::Claimed, attempts);
        Ok(self
            .ledger
            .replace(&self.blob, &entry, &etag, Some(lease))
            .await?
            .map(|etag| Claimed::Ours {
                etag,
                attempts,
                lease: lease.to_string(),
            }))
    }

    async fn release(&self, lease: &str) {
        if let Err(e) = self.ledger.release(&self.blob, lease).await {
            tracing::warn!(error = %e, "cannot release the ledger lease (it lapses by itself)");
        }
    }

    /// Renews the lease every third of its duration while the work runs; returns (so the
    /// work is dropped) only when the lease is lost or cannot be confirmed before it lapses,
    /// so a worker never goes on calling the ticket system without a live claim.
    async fn keep(&self, lease: &str) -> String {
        let duration = Duration::from_secs(self.svc.lease_secs);
        let every = duration / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.ledger.renew(&self.blob, lease).await {
                Ok(()) => renewed = Instant::now(),
                Err(BlobError::Conflict { .. }) => return "the ledger lease was lost".into(),
                Err(e) if renewed.elapsed() + every >= duration => {
                    return format!("cannot renew the ledger lease: {e}")
                }
                Err(e) => tracing::warn!(error = %e, "ledger lease renewal failed; trying again"),
            }
        }
    }

    /// The request's next attempt, and how long it stays invisible: the target system's
    /// `Retry-After` when it gave one, else exponential backoff with jitter.
    fn next_try(&self) -> NextTry {
        let throttled = match self.mapping.system {
            TicketSystem::Servicenow => self.svc.servicenow.as_ref().map(|s| &s.http),
            TicketSystem::Zendesk => self.svc.zendesk.as_ref().map(|z| &z.http),
        }
        .map_or(Duration::ZERO, |h| h.throttled_for());
        self.svc.redelivery.next_try(self.request, throttled)
    }

    /// Puts the request back on the trigger queue as `next` says ([`Redelivery::later`]).
    async fn later(&self, why: &str, next: NextTry) -> Result<InvocationReply, InvocationError> {
        self.svc
            .redelivery
            .later(
                self.request,
                next,
                &self.ids(),
                why,
                summary_of(self.request, "retrying", Some(why)),
            )
            .await
    }

    /// Dead-letters the message as it first came (a poison replay starts a fresh window).
    fn dead_letter(&self, why: &str) -> InvocationReply {
        redelivery::dead_letter(
            redelivery::as_first_came(&self.msg.text, self.request),
            &self.ids(),
            why,
            summary_of(self.request, "deadlettered", Some(why)),
        )
    }

    async fn run(self) -> Result<InvocationReply, InvocationError> {
        let (etag, attempts, lease) = match self.claim().await {
            Ok(Claimed::Ours {
                etag,
                attempts,
                lease,
            }) => (etag, attempts, lease),
            Ok(Claimed::Done(reply)) => return Ok(reply),
            Ok(Claimed::Busy(why)) => {
                return self.later(&why, self.next_try()).await;
            }
            Err(e) => {
                return self.later(&e.to_string(), self.next_try()).await;
            }
        };
        let result = tokio::select! {
            r = self.work() => r,
            why = self.keep(&lease) => Err(CallError::Transient(why)),
        };
        // Failing for longer than the retry window: given up on, as a permanent failure.
        let result = result.map_err(|e| match e {
            CallError::Transient(why) => match self.svc.redelivery.gave_up(self.request, &why) {
                Some(reason) => CallError::Permanent(reason),
                None => CallError::Transient(why),
            },
            e => e,
        });
        let mut entry = self.entry(State::Claimed, attempts);
        let ids = self.ids();
        let mut retry = None;
        let reply = match result {
            Ok(Outcome::Created(ticket)) => {
                let shown = format!(
                    "{} {}",
                    ticket.system,
                    ticket.number.as_deref().unwrap_or(&ticket.id)
                );
                let verb = if ticket.found_by_lookup {
                    "found existing"
                } else {
                    "created"
                };
                let mut summary = summary_of(self.request, "created", None);
                summary.ticket_id = Some(shown.clone());
                entry.state = State::Created;
                entry.ticket = Some(ticket);
                InvocationReply::new()
                    .log(format!("{ids}: {verb} {shown}"))
                    .summary(summary)
            }
            Ok(Outcome::Skipped(why)) => {
                entry.state = State::Skipped;
                entry.reason = Some(why.clone());
                InvocationReply::new()
                    .log(format!("{ids}: skipped: {why}"))
                    .summary(summary_of(self.request, "skipped", Some(&why)))
            }
            Err(CallError::Transient(why)) => {
                let next = self.next_try();
                entry.state = State::Failed;
                entry.retryable = true;
                entry.reason = Some(format!(
                    "transient (attempt {}): {why}; next try in {}s",
                    next.retry.attempt,
                    next.delay.as_secs()
                ));
                retry = Some((why, next));
                InvocationReply::new()
            }
            Err(CallError::Permanent(why) | CallError::Auth(why)) => {
                entry.state = State::Failed;
                entry.reason = Some(why.clone());
                self.dead_letter(&why)
            }
        };
        let recorded = self
            .ledger
            .replace(&self.blob, &entry, &etag, Some(&lease))
            .await;
        self.release(&lease).await;
        match recorded {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Our lease lapsed and another worker took over. It looks the ticket up before
                // creating one, so this is logged, not fatal.
                tracing::warn!(survey_id = %self.request.survey_id, response_id = %self.request.response_id, "the claim was taken over before the outcome was recorded");
            }
            Err(e) if retry.is_none() && entry.state != State::Failed => {
                // The next attempt finds the ticket by lookup and records it.
                return self
                    .later(&format!("outcome not recorded: {e}"), self.next_try())
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the outcome in the ledger"),
        }
        match retry {
            Some((why, next)) => self.later(&why, next).await,
            None => Ok(reply),
        }
    }

    async fn fetch(&self) -> Result<ResponseView, CallError> {
        let Some(q) = self.svc.qualtrics.as_deref() else {
            return Err(CallError::Permanent(
                "setting QUALTRICS_BASE_URL is not set: cannot fetch the response".into(),
            ));
        };
        match q
            .get_response(
                &self.svc.secrets,
                &self.request.survey_id,
                &self.request.response_id,
            )
            .await
        {
            Ok(r) => Ok(ResponseView {
                survey_id: self.request.survey_id.clone(),
                response_id: self.request.response_id.clone(),
                values: r.values,
                labels: r.labels,
            }),
            // A response may not be readable right after its webhook: retry later.
            Err(e) if e.is_not_found() => Err(CallError::Transient(e.to_string())),
            Err(e) if e.is_transient() => Err(CallError::Transient(e.to_string())),
            Err(e) => Err(CallError::Permanent(e.to_string())),
        }
    }

    async fn work(&self) -> Result<Outcome, CallError> {
        let response = self.fetch().await?;
        if !self.mapping.wants_ticket(&response) {
            return Ok(Outcome::Skipped(match self.mapping.rule {
                Some(_) => "rule did not match".into(),
                None => "response not completed".into(),
            }));
        }
        let draft = self.mapping.render(&response);
        let correlation = format!(
            "qualtrics:{}:{}",
            self.request.survey_id, self.request.response_id
        );
        let secrets = &self.svc.secrets;
        let mut spent = Duration::ZERO;
        let mut refreshed = false;
        loop {
            let r = match self.mapping.system {
                TicketSystem::Servicenow => {
                    let Some(sn) = self.svc.servicenow.as_ref() else {
                        return Err(CallError::Permanent(
                            "survey routes to ServiceNow but SERVICENOW_INSTANCE_URL is not set"
                                .into(),
                        ));
                    };
                    match sn.find(secrets, &correlation, &mut spent).await {
                        Ok(Some(t)) => Ok(t),
                        Ok(None) => sn.create(secrets, &draft, &correlation, &mut spent).await,
                        Err(e) => Err(e),
                    }
                }
                TicketSystem::Zendesk => {
                    let Some(zd) = self.svc.zendesk.as_ref() else {
                        return Err(CallError::Permanent(
                            "survey routes to Zendesk but ZENDESK_BASE_URL is not set".into(),
                        ));
                    };
                    let key = format!(
                        "qualtrics-{}-{}",
                        self.request.survey_id, self.request.response_id
                    );
                    match zd.find(secrets, &correlation, &mut spent).await {
                        Ok(Some(t)) => Ok(t),
                        Ok(None) => {
                            zd.create(secrets, &draft, &correlation, &key, &mut spent)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match r {
                Err(CallError::Auth(why)) if !refreshed => {
                    tracing::warn!(reason = %why, "authentication refused: refreshing the secret once");
                    refreshed = true;
                    match self.mapping.system {
                        TicketSystem::Servicenow => {
                            if let Some(sn) = &self.svc.servicenow {
                                sn.refresh(secrets).await
                            }
                        }
                        TicketSystem::Zendesk => {
                            if let Some(zd) = &self.svc.zendesk {
                                zd.refresh(secrets).await
                            }
                        }
                    }
                }
                Err(CallError::Auth(why)) => {
                    return Err(CallError::Permanent(format!(
                        "{why} (still refused after a secret refresh)"
                    )))
                }
                Ok(t) => {
                    self.index(&t).await?;
                    return Ok(Outcome::Created(t));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts the ticket in the open-ticket index before the ledger says `created`: a failure is
    /// transient, and the retry finds the ticket by lookup and indexes it (never a second one).
    async fn index(&self, t: &TicketRef) -> Result<(), CallError> {
        let Some(index) = self.svc.open.as_ref() else {
            return Ok(());
        };
        let entry = open::OpenTicket {
            survey_id: self.request.survey_id.clone(),
            response_id: self.request.response_id.clone(),
            number: t.number.clone(),
            created_at: now_rfc3339(),
            last_synced: None,
            missing_runs: 0,
        };
        index
            .record(&t.system, &t.id, &entry)
            .await
            .map_err(|e| CallError::Transient(format!("open-ticket index: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::BridgeConfig;

    #[test]
    fn broken_rules_and_templates_name_line_and_field() {
        let base = "[[surveys]]\nid = \"SV_1\"\n[surveys.tickets]\nsystem = \"servicenow\"\nallowed_fields = [\"QID1\"]\n";
        let cases = [
            ("when = \"values.QID1 <== 6\"\n", "line 6, surveys[0].tickets.when: column 15"),
            ("subject = \"NPS {{values.QID1\"\n", "line 6, surveys[0].tickets.subject: column 5"),
            ("description = \"{{values.email}}\"\n", "line 6, surveys[0].tickets.description: values.email reads response field \"email\", which is not in allowed_fields"),
            ("urgency = \"4\"\n", "line 6, surveys[0].tickets.urgency: \"4\" is not one of"),
            ("\n[surveys.tickets.extra]\nsys_id = \"x\"\n", "line 8, surveys[0].tickets.extra.sys_id"),
            ("colour = \"red\"\n", "line 6"),
        ];
        for (extra, want) in cases {
            let err = BridgeConfig::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
        let ok = format!("{base}when = 'values.QID1 <= 6 and labels.QID2 == \"Billing\"'\nsubject = \"NPS {{{{values.QID1}}}}\"\npriority = \"2\"\n");
        BridgeConfig::parse(&ok).unwrap();
        let zd = "[[surveys]]\nid = \"SV_1\"\n[surveys.tickets]\nsystem = \"zendesk\"\npriority = \"2\"\n";
        assert!(BridgeConfig::parse(zd).unwrap_err().contains("priority"));
    }
}
