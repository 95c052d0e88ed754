//! `TicketCreator`: turns a ticket request from the queue into exactly one ticket.
//!
//! 1. Decode and validate the message; one that can never succeed goes to the `deadletter`
//!    output at once with its original text (and, when its ids are usable, the ledger says why).
//! 2. Claim the response in the ledger (`ledger.rs`) with an atomic create-if-absent before
//!    touching a ticket system. A created/skipped response is done; a fresh claim held by
//!    another worker is waited for briefly, then the invocation fails so the host retries;
//!    a stale claim (this message's own earlier attempt, or older than `claim_ttl_secs`) or a
//!    retryable failure is taken over with an ETag-conditional replace.
//! 3. Fetch the response from Qualtrics, evaluate the survey's rule (`rules.rs`); no → `skipped`.
//! 4. Look the ticket up in the target system (ServiceNow `correlation_id`, Zendesk
//!    `external_id`) so a crash between create and the ledger update never doubles a ticket;
//!    create it only if absent (Zendesk also with an `Idempotency-Key`); record `created`.
//!
//! Failure classes: 429 with a short `Retry-After` is waited out (one gate per system, shared
//! by all invocations); 5xx, timeouts, long 429s fail the invocation (host retry, poison after
//! `maxDequeueCount`); a 4xx that cannot succeed (bad field, auth after one secret refresh,
//! missing target configuration) records `failed` and dead-letters the message.

pub mod config;
pub mod http;
pub mod ledger;
pub mod mapping;
pub mod rules;
pub mod servicenow;
pub mod zendesk;

use crate::deps::Deps;
use crate::host::{
    Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply, QueueTrigger, Trigger,
};
use crate::messages::{RequestSource, TicketRequest};
use crate::qualtrics::QualtricsClient;
use crate::secrets::SecretsProvider;
use crate::telemetry::{InvocationSummary, Severity};
pub use config::{TicketRoute, TicketSystem, TicketingLimits};
use http::CallError;
use ledger::{now_rfc3339, Claim, Entry, Ledger, State, TicketRef};
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
const DEADLETTER: &str = "deadletter";

/// Everything ticket creation needs, built at start-up.
#[derive(Debug)]
pub struct TicketService {
    mappings: HashMap<String, Mapping>,
    servicenow: Option<ServiceNow>,
    zendesk: Option<Zendesk>,
    ledger: Option<Ledger>,
    limits: TicketingLimits,
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
        let container = deps.state_container.as_str();
        let ledger = match deps.storage.as_ref().map(|s| s.blob_container(container)) {
            Some(Ok(c)) => Some(Ledger::new(c, container)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no blob endpoint: the ticket ledger is unavailable");
                None
            }
            None => None,
        };
        Ok(Self {
            mappings,
            servicenow,
            zendesk,
            ledger,
            limits,
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
                return Ok(InvocationReply::new()
                    .queue(DEADLETTER, vec![msg.text])
                    .log(format!("dead-lettered: {why}"))
                    .summary(InvocationSummary {
                        outcome: Some("deadlettered"),
                        reason: Some(format!("invalid ticket request: {why}")),
                        severity: Severity::Error,
                        ..Default::default()
                    }));
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

/// What a ledger entry found while claiming means for this attempt.
enum Seen {
    Done(String),
    TakeOver,
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

    fn ledger_err(e: ledger::LedgerError) -> InvocationError {
        InvocationError::retry_from("ticket ledger", e)
    }

    fn judge(&self, e: &Entry) -> Seen {
        match e.state {
            State::Created => Seen::Done(match &e.ticket {
                Some(t) => format!(
                    "ticket already created: {} {}",
                    t.system,
                    t.number.as_deref().unwrap_or(&t.id)
                ),
                None => "ticket already created".into(),
            }),
            State::Skipped => Seen::Done(format!(
                "already skipped: {}",
                e.reason.as_deref().unwrap_or("rule did not match")
            )),
            State::Failed if e.retryable || self.request.source == RequestSource::Replay => {
                Seen::TakeOver
            }
            State::Failed => Seen::Done(format!(
                "failed permanently earlier ({}); replay the request to try again",
                e.reason.as_deref().unwrap_or("no reason")
            )),
            State::Claimed => {
                let c = &e.claim;
                let own_earlier = c.invocation_id == self.inv.id
                    || (c.message_id.is_some()
                        && c.message_id == self.msg.id
                        && c.dequeue_count < self.msg.dequeue_count);
                let stale = c
                    .age_secs()
                    .is_none_or(|age| age > self.svc.limits.claim_ttl_secs as i64);
                if own_earlier || stale {
                    Seen::TakeOver
                } else {
                    Seen::Busy(format!(
                        "claimed by another worker (invocation {}, {}s ago)",
                        c.invocation_id,
                        c.age_secs().unwrap_or(0)
                    ))
                }
            }
        }
    }

    /// Claims the response. `Ok(Err(reply))`: nothing to do.
    async fn claim(
        &self,
    ) -> Result<Result<(azure_core::http::Etag, u32), InvocationReply>, InvocationError> {
        let started = Instant::now();
        let busy_limit = Duration::from_secs(self.svc.limits.busy_wait_secs);
        let mut conflicts = 0;
        loop {
            match self
                .ledger
                .get(&self.blob)
                .await
                .map_err(Self::ledger_err)?
            {
                None => {
                    let entry = self.entry(State::Claimed, 1);
                    if let Some(etag) = self
                        .ledger
                        .create(&self.blob, &entry)
                        .await
                        .map_err(Self::ledger_err)?
                    {
                        return Ok(Ok((etag, 1)));
                    }
                }
                Some((found, etag)) => match self.judge(&found) {
                    Seen::Done(why) => {
                        return Ok(Err(InvocationReply::new()
                            .log(format!("{}: {why}; nothing to do", self.ids()))
                            .summary(summary_of(self.request, "duplicate", Some(&why)))));
                    }
                    Seen::TakeOver => {
                        let attempts = found.attempts + 1;
                        let entry = self.entry(State::Claimed, attempts);
                        if let Some(new) = self
                            .ledger
                            .replace(&self.blob, &entry, &etag)
                            .await
                            .map_err(Self::ledger_err)?
                        {
                            return Ok(Ok((new, attempts)));
                        }
                    }
                    Seen::Busy(why) => {
                        if started.elapsed() >= busy_limit {
                            return Err(InvocationError::retry(format!("{}: {why}", self.ids())));
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
            }
            conflicts += 1;
            if conflicts >= 10 {
                return Err(InvocationError::retry(format!(
                    "{}: the ledger keeps changing under this worker",
                    self.ids()
                )));
            }
        }
    }

    async fn run(self) -> Result<InvocationReply, InvocationError> {
        let (etag, attempts) = match self.claim().await? {
            Ok(c) => c,
            Err(done) => return Ok(done),
        };
        let result = self.work().await;
        let mut entry = self.entry(State::Claimed, attempts);
        let ids = self.ids();
        let (reply, error) = match result {
            Ok(Outcome::Created(ticket)) => {
                let line = format!(
                    "{ids}: {} {} {}",
                    if ticket.found_by_lookup {
                        "found existing"
                    } else {
                        "created"
                    },
                    ticket.system,
                    ticket.number.as_deref().unwrap_or(&ticket.id)
                );
                let mut summary = summary_of(self.request, "created", None);
                summary.ticket_id = Some(format!(
                    "{} {}",
                    ticket.system,
                    ticket.number.as_deref().unwrap_or(&ticket.id)
                ));
                entry.state = State::Created;
                entry.ticket = Some(ticket);
                (
                    Some(InvocationReply::new().log(line).summary(summary)),
                    None,
                )
            }
            Ok(Outcome::Skipped(why)) => {
                entry.state = State::Skipped;
                entry.reason = Some(why.clone());
                (
                    Some(
                        InvocationReply::new()
                            .log(format!("{ids}: skipped: {why}"))
                            .summary(summary_of(self.request, "skipped", Some(&why))),
                    ),
                    None,
                )
            }
            Err(CallError::Transient(why)) => {
                let last = self.msg.dequeue_count >= self.svc.limits.max_attempts;
                tracing::warn!(survey_id = %self.request.survey_id, response_id = %self.request.response_id, dequeue_count = self.msg.dequeue_count, outcome = if last { "poisoned" } else { "retry" }, reason = %why, "transient failure");
                entry.state = State::Failed;
                entry.retryable = true;
                entry.reason = Some(if last {
                    format!("gave up after attempt {} (the host moves the message to the poison queue): {why}", self.msg.dequeue_count)
                } else {
                    format!("transient (attempt {}): {why}", self.msg.dequeue_count)
                });
                (None, Some(InvocationError::retry(format!("{ids}: {why}"))))
            }
            Err(CallError::Permanent(why) | CallError::Auth(why)) => {
                let mut summary = summary_of(self.request, "deadlettered", Some(&why));
                summary.severity = Severity::Error;
                entry.state = State::Failed;
                entry.reason = Some(why.clone());
                (
                    Some(
                        InvocationReply::new()
                            .queue(DEADLETTER, vec![self.msg.text.clone()])
                            .log(format!("dead-lettered: {ids}: {why}"))
                            .summary(summary),
                    ),
                    None,
                )
            }
        };
        match self.ledger.replace(&self.blob, &entry, &etag).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Our claim was taken over (we exceeded claim_ttl_secs). The other worker looks
                // the ticket up before creating one, so this is logged, not fatal.
                tracing::warn!(survey_id = %self.request.survey_id, response_id = %self.request.response_id, "the claim was taken over before the outcome was recorded");
            }
            Err(e) => {
                if error.is_none() && entry.state != State::Failed {
                    // The next attempt finds the ticket by lookup and records it.
                    return Err(InvocationError::retry(format!(
                        "{ids}: outcome not recorded: {e}"
                    )));
                }
                tracing::warn!(error = %e, "cannot record the outcome in the ledger");
            }
        }
        match (reply, error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => Ok(InvocationReply::new()),
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
                Ok(t) => return Ok(Outcome::Created(t)),
                Err(e) => return Err(e),
            }
        }
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
