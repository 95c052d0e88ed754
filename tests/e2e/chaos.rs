//! Issue 9: chaos and load. The whole pipeline — signed webhooks through the local host's front
//! door, `ExportPoller` on demand, `TicketCreator` draining `ticket-requests` — runs on Azurite
//! (on disk, so it can be stopped and restarted) with devkit's fake Qualtrics, ServiceNow and
//! Zendesk, while faults are injected. Each scenario ends with an audit against the fakes'
//! records (see [`audit`]): 0 lost, 0 duplicated, 0 unexplained poison messages.
//!
//! CI runs the bounded scenarios (`cargo test --release --test e2e chaos::`); `scripts/chaos.sh` adds
//! the long one and prints the audit table; `scripts/load-profile.sh` runs [`load_profile`].

use crate::common;

use common::{Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::servicenow::{self, FakeServiceNow};
use devkit::fakes::ticketing::{Fault, RateLimit, Route};
use devkit::fakes::zendesk::{self, FakeZendesk};
use devkit::publisher::{Delivery, Publisher};
use futures::StreamExt;
use qualtrics_bridge::storage::Storage;
use qualtrics_bridge::tickets::ledger::{Entry, Ledger, State};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Routed to ServiceNow.
const SN: &str = "SV_chaosSnow0001";
/// Routed to Zendesk.
const ZD: &str = "SV_chaosZdsk0001";
const SURVEYS: [&str; 2] = [SN, ZD];
const WEBHOOK_KEY: &str = "chaos-webhook-key-91c2";
const QUALTRICS_TOKEN: &str = "chaos-qualtrics-token";
const POISON: &str = "ticket-requests-poison";
const EXPORTS: &str = "qualtrics-exports";
const STATE: &str = "bridge-state";
/// How long a scenario may take to converge once its faults are cleared.
const SETTLE: Duration = Duration::from_secs(150);

/// No `when` rule: every completed response must raise a ticket, so the audit needs no rule
/// evaluation. Short ticketing limits keep retries inside the scenario's time.
fn bridge_toml() -> String {
    format!(
        "[ticketing]\ntimeout_secs = 2\nmax_retry_after_secs = 5\nthrottle_budget_secs = 10\nbusy_wait_secs = 5\n\n\
         [[surveys]]\nid = \"{SN}\"\nexport = true\n[surveys.tickets]\nsystem = \"servicenow\"\n\n\
         [[surveys]]\nid = \"{ZD}\"\nexport = true\n[surveys.tickets]\nsystem = \"zendesk\"\n"
    )
}

/// The pipeline under test plus the fakes it talks to.
struct Chaos {
    name: &'static str,
    stack: Stack,
    qualtrics: FakeQualtrics,
    servicenow: FakeServiceNow,
    zendesk: FakeZendesk,
    publisher: Publisher,
    storage: Storage,
    /// Deliveries answered with something other than 202 and sent again, as Qualtrics does.
    redelivered: AtomicU64,
    started: Instant,
    /// How long [`Chaos::settle`] may take once the faults are cleared.
    settle_limit: Duration,
}

impl Chaos {
    /// Starts the fakes and the stack; `history` synthetic responses of about `bytes` each
    /// per survey (`(0, 0)`: none) are recorded before the bridge starts, so the first export
    /// treats them as history and reconciles no tickets for them. `on_disk` keeps Azurite's
    /// data on disk, so that it can be stopped and restarted.
    async fn start(name: &'static str, history: (u64, usize), on_disk: bool) -> Self {
        let qualtrics = FakeQualtrics::start(QUALTRICS_TOKEN).await.unwrap();
        let servicenow = FakeServiceNow::start().await.unwrap();
        let zendesk = FakeZendesk::start().await.unwrap();
        for s in SURVEYS {
            qualtrics.add_responses(s, 0); // the survey exists, with no responses yet
            if history.0 > 0 {
                qualtrics.add_synthetic_survey(s, history.0, history.1);
            }
        }
        qualtrics.set_polls(2);
        let mut builder = StackBuilder::default();
        if on_disk {
            builder = builder.persistent_storage();
        }
        let stack = builder
            // Messages whose release failed while Azurite was down reappear after this.
            .queue_lease(Duration::from_secs(20))
            .bridge_toml(&bridge_toml())
            // Retries 3 s apart (30 s in host.json): five attempts outlast a short burst of
            // faults, and the scenario still settles in seconds.
            .setting(
                "AzureFunctionsJobHost__extensions__queues__visibilityTimeout",
                "00:00:03",
            )
            .setting("QUALTRICS_BASE_URL", &qualtrics.base_url)
            .setting("QUALTRICS_API_TOKEN", QUALTRICS_TOKEN)
            .setting("QUALTRICS_WEBHOOK_KEY", WEBHOOK_KEY)
            .setting("EXPORT_POLL_INTERVAL_MS", "20")
            // Transient ticket failures come back within seconds; a killed worker's claim is
            // taken over after the shortest lease Blob Storage grants.
            .setting("TICKET_RETRY_MAX_DELAY_SECONDS", "5")
            .setting("TICKET_LEASE_SECONDS", "15")
            .setting("SERVICENOW_INSTANCE_URL", &servicenow.url())
            .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
            .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
            .setting("ZENDESK_BASE_URL", &zendesk.url())
            .setting("ZENDESK_EMAIL", zendesk::EMAIL)
            .setting("ZENDESK_API_TOKEN", zendesk::API_TOKEN)
            .start()
            .await;
        let storage = common::storage_of(&stack.azurite);
        let publisher = Publisher::new(stack.webhook_url());
        Self {
            name,
            stack,
            qualtrics,
            servicenow,
            zendesk,
            publisher,
            storage,
            redelivered: AtomicU64::new(0),
            started: Instant::now(),
            settle_limit: SETTLE,
        }
    }

    /// Sends each delivery until it is answered 202, as Qualtrics retries a failed delivery;
    /// `concurrency` at a time. Returns each accepted delivery's latency.
    async fn deliver(&self, plan: Vec<Delivery>, concurrency: usize) -> Vec<Duration> {
        futures::stream::iter(plan)
            .map(|d| async move {
                for _ in 0..300 {
                    let t = Instant::now();
                    match self.publisher.deliver(&d).await {
                        Ok(r) if r.status == 202 => return t.elapsed(),
                        Ok(r) => assert!(
                            r.status >= 500,
                            "a valid signed delivery is never refused: {r:?}"
                        ),
                        Err(_) => {}
                    }
                    self.redelivered.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                panic!("{}: a delivery was never accepted", self.name);
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// Adds `n` responses to each survey; returns their webhooks, minus every `drop_every`th
    /// (a webhook that never came: export reconciliation must cover it), each duplicated
    /// `duplicates` times and the whole batch shuffled.
    fn wave(&self, n: usize, drop_every: usize, duplicates: usize, seed: u64) -> Vec<Delivery> {
        let mut plan = Vec::new();
        for s in SURVEYS {
            for (i, id) in self.qualtrics.add_responses(s, n).into_iter().enumerate() {
                if drop_every > 0 && i % drop_every == drop_every - 1 {
                    continue;
                }
                let d = Delivery::signed(WEBHOOK_KEY, s, &id);
                plan.extend(std::iter::repeat_n(d, duplicates + 1));
            }
        }
        shuffle(&mut plan, seed);
        plan
    }

    /// Fires the export timer; `Ok(logs)` when the invocation succeeded.
    async fn export(&self) -> Result<String, String> {
        let r = self
            .stack
            .host
            .fire("ExportPoller")
            .await
            .map_err(|e| e.to_string())?;
        let logs = r.logs.join(" | ");
        match r.outcome {
            Ok(()) => Ok(logs),
            Err(e) => Err(format!("{e}: {logs}")),
        }
    }

    /// Clears every injected fault.
    fn clear_faults(&self) {
        self.qualtrics.throttle_next(0, None);
        self.qualtrics.error_next(0);
        self.qualtrics.fail_next_exports(0);
        self.qualtrics.reject_tokens(false);
        self.qualtrics.truncate_next_files(0);
        for fake in [&self.servicenow as &dyn Ticketing, &self.zendesk] {
            fake.clear();
        }
    }

    /// Runs the export until both surveys are exported to the end with nothing in flight or
    /// pending, and waits until every ticket request is final.
    async fn settle(&self) {
        let deadline = Instant::now() + self.settle_limit;
        loop {
            let done = match self.export().await {
                Ok(logs) => {
                    !logs.contains("holds the lease")
                        && !logs.contains("deferred")
                        && self.export_states_clean().await
                }
                Err(_) => false,
            };
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the export never completed",
                self.name
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Completion, not a quiet spell: nothing in flight, no request left or leased. Once
        // settled nothing more will happen, so every request must be final now.
        self.stack
            .settle(deadline.saturating_duration_since(Instant::now()))
            .await;
        if !self.all_final().await {
            let a = self.audit().await;
            a.print();
            panic!(
                "{}: the stack settled with ticket requests not final; unfinished: {:?}",
                self.name,
                self.unfinished(5).await
            );
        }
    }

    fn ticket_runs(&self) -> usize {
        self.stack
            .host
            .records()
            .iter()
            .filter(|r| r.function == "TicketCreator")
            .count()
    }

    async fn export_states_clean(&self) -> bool {
        for s in SURVEYS {
            let Some(text) = self.blob_text(STATE, &format!("exports/{s}.json")).await else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                return false;
            };
            let pending = v["pendingTickets"].as_array().map_or(0, Vec::len);
            if !v["inflight"].is_null() || pending > 0 || v["continuationToken"].is_null() {
                return false;
            }
        }
        true
    }

    /// Up to `n` live responses that are not final, with their ledger entries.
    async fn unfinished(&self, n: usize) -> Vec<String> {
        let poison = self.poison_ids().await;
        let ledger = self.ledger();
        let mut out = Vec::new();
        for (s, id) in self.live_responses() {
            let e = entry(&ledger, s, &id).await;
            let done = match &e {
                Some(e) => {
                    e.state == State::Created
                        || (e.state == State::Failed
                            && poison.contains_key(&(s.into(), id.clone())))
                }
                None => false,
            };
            if !done && out.len() < n {
                out.push(format!("{s}/{id}: {e:?}"));
            }
        }
        out
    }

    /// Every live response's ledger entry is final: created, or failed and parked in poison.
    async fn all_final(&self) -> bool {
        let poison = self.poison_ids().await;
        // Cheap first: reading every ledger entry is only worth it once the counts add up.
        let tickets: usize = self.tickets().values().sum();
        if tickets + poison.len() < self.live_responses().len() {
            return false;
        }
        let ledger = self.ledger();
        for (s, id) in self.live_responses() {
            match entry(&ledger, s, &id).await {
                Some(e) if e.state == State::Created => {}
                Some(e) if e.state == State::Failed && poison.contains_key(&(s.into(), id)) => {}
                _ => return false,
            }
        }
        true
    }

    /// Responses recorded while the bridge ran (`R_live…`); synthetic history (`R_syn…`) is
    /// exported by the first, full export and, by design, raises no tickets.
    fn live_responses(&self) -> Vec<(&'static str, String)> {
        SURVEYS
            .iter()
            .flat_map(|s| {
                self.qualtrics
                    .response_ids(s)
                    .into_iter()
                    .filter(|id| id.starts_with("R_live"))
                    .map(move |id| (*s, id))
            })
            .collect()
    }

    fn ledger(&self) -> Ledger {
        Ledger::new(self.storage.blob_container(STATE).unwrap(), STATE)
    }

    async fn blob_text(&self, container: &str, name: &str) -> Option<String> {
        common::blob_text(&self.storage, container, name).await
    }

    /// The texts of up to 32 messages on `queue`; a busy Azurite may time a peek out, so a
    /// failed peek is retried before the scenario gives up.
    async fn peek(&self, queue: &str) -> Vec<String> {
        use base64::Engine;
        let mut last = None;
        for _ in 0..10 {
            match self.stack.queues.peek_messages(queue).await {
                Ok(messages) => {
                    return messages
                        .into_iter()
                        .map(|m| {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(&m.text)
                                .expect("base64 message");
                            String::from_utf8_lossy(&bytes).into_owned()
                        })
                        .collect()
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("{}: cannot peek {queue}: {last:?}", self.name);
    }

    /// Poison messages by (survey, response), with how many copies.
    async fn poison_ids(&self) -> HashMap<(String, String), usize> {
        let mut out = HashMap::new();
        let texts = self.peek(POISON).await;
        // A peek returns at most 32 messages: beyond that the audit could not see them all.
        assert!(
            texts.len() < 32,
            "{}: too many poison messages to audit",
            self.name
        );
        for text in texts {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let key = (
                v["surveyId"].as_str().unwrap_or("?").to_string(),
                v["responseId"].as_str().unwrap_or(&text).to_string(),
            );
            *out.entry(key).or_default() += 1;
        }
        out
    }

    /// Lines per response id across every export blob, keyed by (survey, response). Every line
    /// must be, byte for byte, the response as the fake served it (a repair that kept the id
    /// but not the content fails here); a mismatch names the id, never the respondent data.
    async fn exported(&self) -> HashMap<(String, String), usize> {
        let names = common::blob_names(&self.storage, EXPORTS).await;
        let mut served: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut out = HashMap::new();
        for n in names {
            let survey = n.split('/').next().unwrap_or_default().to_string();
            let source = served
                .entry(survey.clone())
                .or_insert_with(|| self.qualtrics.served(&survey).into_iter().collect());
            let text = self
                .blob_text(EXPORTS, &n)
                .await
                .unwrap_or_else(|| panic!("export blob {n} cannot be read"));
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).expect("each line is one JSON object");
                let id = v["responseId"].as_str().unwrap_or_default().to_string();
                assert!(
                    source.get(&id).is_some_and(|s| s == line),
                    "{n}: the line of {id} is not the response the fake served"
                );
                *out.entry((survey.clone(), id)).or_default() += 1;
            }
        }
        out
    }

    /// Tickets per (survey, response), from the fakes' records.
    fn tickets(&self) -> HashMap<(String, String), usize> {
        let correlations = self
            .servicenow
            .incidents()
            .into_iter()
            .map(|i| i.fields.get("correlation_id").cloned().unwrap_or_default())
            .chain(
                self.zendesk
                    .tickets()
                    .into_iter()
                    .map(|t| t.external_id.unwrap_or_default()),
            );
        let mut out = HashMap::new();
        for c in correlations {
            let mut parts = c.splitn(3, ':').skip(1);
            let key = (
                parts.next().unwrap_or("?").to_string(),
                parts.next().unwrap_or(&c).to_string(),
            );
            *out.entry(key).or_default() += 1;
        }
        out
    }

    /// The audit: compares what the fakes hold with the export blobs, the tickets, the
    /// poison queue and the ledger.
    async fn audit(&self) -> Audit {
        let exported = self.exported().await;
        let tickets = self.tickets();
        let poison = self.poison_ids().await;
        let ledger = self.ledger();
        let mut a = Audit {
            scenario: self.name,
            seconds: self.started.elapsed().as_secs_f64(),
            handler_restarts: self.stack.host.crash_restarts(),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            ..Audit::default()
        };
        let all: HashSet<(String, String)> = SURVEYS
            .iter()
            .flat_map(|s| {
                self.qualtrics
                    .response_ids(s)
                    .into_iter()
                    .map(|id| (s.to_string(), id))
            })
            .collect();
        a.responses = all.len();
        for key in &all {
            match exported.get(key).copied().unwrap_or(0) {
                0 => a.export_lost.push(key.1.clone()),
                1 => a.exported += 1,
                _ => a.export_duplicated.push(key.1.clone()),
            }
        }
        a.export_extra = exported
            .keys()
            .filter(|k| !all.contains(*k))
            .map(|k| k.1.clone())
            .collect();
        let live: HashSet<(String, String)> = self
            .live_responses()
            .into_iter()
            .map(|(s, id)| (s.to_string(), id))
            .collect();
        a.live = live.len();
        let ledger = &ledger;
        let entries: HashMap<(String, String), Option<Entry>> = futures::stream::iter(&live)
            .map(|k| async move { (k.clone(), entry(ledger, &k.0, &k.1).await) })
            .buffer_unordered(32)
            .collect()
            .await;
        for key in &live {
            let n = tickets.get(key).copied().unwrap_or(0);
            let parked = poison.contains_key(key);
            let e = entries.get(key).cloned().flatten();
            match (n, parked) {
                (1, _) => {
                    // A copy that used up its attempts during a fault, while another copy
                    // of the same response created the ticket: the ledger says created.
                    if parked {
                        if e.as_ref().is_some_and(|e| e.state == State::Created) {
                            a.poison_superseded += 1;
                        } else {
                            a.poison_unexplained.push(key.1.clone());
                        }
                    }
                    a.ticketed += 1;
                    if e.as_ref()
                        .and_then(|e| e.ticket.as_ref())
                        .is_some_and(|t| t.found_by_lookup)
                    {
                        a.found_by_lookup += 1;
                    }
                }
                // Parked with the reason in the ledger, and no ticket: explained.
                (0, true)
                    if e.as_ref().is_some_and(|e| {
                        e.state == State::Failed
                            && e.reason.as_deref().is_some_and(|r| !r.is_empty())
                    }) =>
                {
                    a.poisoned_explained += 1
                }
                (0, false) => a.ticket_lost.push(key.1.clone()),
                (n, _) if n > 1 => a.ticket_duplicated.push(key.1.clone()),
                _ => a.poison_unexplained.push(key.1.clone()),
            }
        }
        a.ticket_extra = tickets
            .keys()
            .filter(|k| !live.contains(*k))
            .map(|k| k.1.clone())
            .collect();
        a.poison_unexplained.extend(
            poison
                .keys()
                .filter(|k| !live.contains(*k))
                .map(|k| k.1.clone()),
        );
        a.violations = self.stack.host.violations();
        a
    }

    /// Audits, prints the table row and asserts the invariants.
    async fn settle_and_audit(&self) -> Audit {
        self.clear_faults();
        self.settle().await;
        let a = self.audit().await;
        a.print();
        a.assert_clean();
        a
    }

    /// SIGKILLs the handler from outside (as the OOM killer or a crash would) and waits until
    /// the local host has noticed and started a new one (a worker or a host restart).
    async fn kill_handler(&self) {
        let before = self.stack.host.crash_restarts();
        let pid = self
            .stack
            .host
            .handler_pid()
            .await
            .expect("handler running");
        devkit::process::sigkill(pid).expect("SIGKILL the handler");
        let restarted = self
            .stack
            .eventually(Duration::from_secs(30), || async {
                self.stack.host.crash_restarts() > before
            })
            .await;
        assert!(
            restarted,
            "{}: the local host restarted the handler",
            self.name
        );
    }
}

/// The fault controls the two ticket fakes share.
trait Ticketing {
    fn clear(&self);
}

impl Ticketing for FakeServiceNow {
    fn clear(&self) {
        self.set_rate_limit(None);
        self.fail_every(0, 0);
        self.set_delay(Duration::ZERO);
        self.release();
    }
}

impl Ticketing for FakeZendesk {
    fn clear(&self) {
        self.set_rate_limit(None);
        self.fail_every(0, 0);
        self.set_delay(Duration::ZERO);
        self.release();
    }
}

/// A deterministic Fisher–Yates shuffle of a whole wave (duplicates included).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

async fn entry(l: &Ledger, survey: &str, response: &str) -> Option<Entry> {
    l.get(&Ledger::blob_name(survey, response))
        .await
        .ok()
        .flatten()
        .map(|(e, _)| e)
}

/// One scenario's audit result.
#[derive(Debug, Default)]
struct Audit {
    scenario: &'static str,
    seconds: f64,
    responses: usize,
    exported: usize,
    export_lost: Vec<String>,
    export_duplicated: Vec<String>,
    export_extra: Vec<String>,
    live: usize,
    ticketed: usize,
    found_by_lookup: usize,
    poisoned_explained: usize,
    /// Poison entries of responses whose ticket another copy created (ledger: created).
    poison_superseded: usize,
    ticket_lost: Vec<String>,
    ticket_duplicated: Vec<String>,
    ticket_extra: Vec<String>,
    poison_unexplained: Vec<String>,
    handler_restarts: u32,
    redelivered: u64,
    violations: Vec<String>,
}

impl Audit {
    /// One `CHAOS-AUDIT` line; `scripts/chaos.sh` turns them into a table.
    fn print(&self) {
        let lost = self.export_lost.len() + self.ticket_lost.len();
        let duplicated = self.export_duplicated.len() + self.ticket_duplicated.len();
        let extra = self.export_extra.len() + self.ticket_extra.len();
        println!(
            "CHAOS-AUDIT|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:.0}",
            self.scenario,
            self.responses,
            self.exported,
            self.live,
            self.ticketed,
            self.found_by_lookup,
            self.poisoned_explained,
            self.poison_superseded,
            lost,
            duplicated,
            extra,
            self.poison_unexplained.len(),
            self.handler_restarts,
            self.seconds
        );
    }

    fn assert_clean(&self) {
        let s = self.scenario;
        assert!(
            self.export_lost.is_empty(),
            "{s}: lost from exports: {:?}",
            self.export_lost
        );
        assert!(
            self.export_duplicated.is_empty(),
            "{s}: duplicated in exports: {:?}",
            self.export_duplicated
        );
        assert!(
            self.export_extra.is_empty(),
            "{s}: exported but unknown: {:?}",
            self.export_extra
        );
        assert!(
            self.ticket_lost.is_empty(),
            "{s}: no ticket, not parked: {:?}",
            self.ticket_lost
        );
        assert!(
            self.ticket_duplicated.is_empty(),
            "{s}: duplicated tickets: {:?}",
            self.ticket_duplicated
        );
        assert!(
            self.ticket_extra.is_empty(),
            "{s}: tickets for unknown responses: {:?}",
            self.ticket_extra
        );
        assert!(
            self.poison_unexplained.is_empty(),
            "{s}: unexplained poison messages: {:?}",
            self.poison_unexplained
        );
        assert!(
            self.violations.is_empty(),
            "{s}: protocol violations: {:?}",
            self.violations
        );
        assert_eq!(
            self.exported, self.responses,
            "{s}: every response exported once"
        );
        // The scenarios inject only transient faults: every live response ends with exactly
        // one ticket, and nothing is parked.
        assert_eq!(
            self.ticketed, self.live,
            "{s}: every live response has exactly one ticket"
        );
        assert_eq!(
            (self.poisoned_explained, self.poison_superseded),
            (0, 0),
            "{s}: transient faults parked requests in poison"
        );
    }
}

/// Injects one round's faults into the fake Qualtrics.
type Inject = dyn Fn(&FakeQualtrics);

/// Qualtrics misbehaves: duplicate and reordered webhooks (a quarter never sent), a 429 storm
/// with and without `Retry-After`, 500s, a failed export, a truncated file and a rejected
/// continuation token — while webhooks keep arriving during each export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualtrics_faults() {
    let c = Chaos::start("qualtrics-faults", (0, 0), true).await;
    c.export().await.expect("baseline export");
    let faults: [(&str, &Inject); 4] = [
        ("429 storm with Retry-After", &|q| {
            q.throttle_next(12, Some(1))
        }),
        // Without Retry-After the client's penalty doubles per 429: 8 already cost ~60 s.
        ("429 storm without Retry-After, then 500s", &|q| {
            q.throttle_next(8, None);
            q.error_next(4);
        }),
        ("failed export, then a truncated file", &|q| {
            q.fail_next_exports(1);
            q.truncate_next_files(1);
        }),
        ("rejected token", &|q| q.reject_tokens(true)),
    ];
    let mut failed_runs = 0;
    for (round, (what, inject)) in faults.iter().enumerate() {
        let plan = c.wave(6, 4, 2, round as u64 + 1);
        inject(&c.qualtrics);
        let (_, run) = tokio::join!(c.deliver(plan, 8), c.export());
        if run.as_ref().is_ok_and(|l| l.contains("failed")) || run.is_err() {
            failed_runs += 1;
        }
        eprintln!(
            "qualtrics-faults: round {round} ({what}) done at {:.0} s: export {}",
            c.started.elapsed().as_secs_f64(),
            if run.is_ok() { "ok" } else { "failed" }
        );
        c.qualtrics.reject_tokens(false);
    }
    let a = c.settle_and_audit().await;
    let calls = c.qualtrics.calls();
    for status in [429, 500] {
        assert!(
            calls.iter().any(|x| x.status == status),
            "no {status} was served"
        );
    }
    assert!(failed_runs >= 1, "the export failures happened");
    assert!(a.live > 0);
}

/// ServiceNow and Zendesk misbehave: a rate limit answering 429 with `Retry-After`, 5xx
/// bursts, replies slower than the client timeout (some after the ticket was created), and a
/// slow responder under the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketing_faults() {
    let c = Chaos::start("ticketing-faults", (0, 0), true).await;
    c.export().await.expect("baseline export");
    let rate = Some(RateLimit {
        limit: 6,
        window: Duration::from_secs(1),
    });
    c.servicenow.set_rate_limit(rate);
    c.zendesk.set_rate_limit(rate);
    for _ in 0..4 {
        c.servicenow.push_fault(Route::Any, Fault::Status(503));
        c.zendesk.push_fault(Route::Any, Fault::Status(502));
    }
    c.servicenow
        .push_fault(Route::Create, Fault::Delay(Duration::from_secs(3)));
    c.zendesk
        .push_fault(Route::Create, Fault::Delay(Duration::from_secs(3)));
    c.servicenow
        .push_fault(Route::Create, Fault::AfterCreate(500));
    c.zendesk.push_fault(Route::Create, Fault::AfterCreate(504));
    c.deliver(c.wave(10, 5, 1, 11), 8).await;
    c.export().await.ok();
    // Second wave: a slow responder and a steady trickle of 5xx.
    c.servicenow.set_delay(Duration::from_millis(400));
    c.zendesk.set_delay(Duration::from_millis(400));
    c.servicenow.fail_every(7, 500);
    c.zendesk.fail_every(7, 503);
    let plan = c.wave(10, 5, 1, 12);
    let (_, _) = tokio::join!(c.deliver(plan, 8), c.export());
    // Let the faults bite before settle() clears them.
    let busy = c
        .stack
        .eventually(Duration::from_secs(30), || async {
            c.servicenow.rate_counts().1 > 0 && c.zendesk.rate_counts().1 > 0
        })
        .await;
    assert!(busy, "both rate limits answered 429");
    let ran = c
        .stack
        .eventually(Duration::from_secs(30), || async { c.ticket_runs() > 60 })
        .await;
    assert!(ran, "the faults had 60 ticket invocations to bite");
    let a = c.settle_and_audit().await;
    for (system, statuses) in [
        (
            "servicenow",
            c.servicenow
                .requests()
                .iter()
                .map(|r| r.status)
                .collect::<Vec<_>>(),
        ),
        (
            "zendesk",
            c.zendesk.requests().iter().map(|r| r.2).collect(),
        ),
    ] {
        assert!(statuses.contains(&429), "{system}: no 429");
        assert!(statuses.iter().any(|s| *s >= 500), "{system}: no 5xx");
    }
    assert!(a.live > 0);
}

/// Azurite is stopped while webhooks arrive, tickets drain and an export runs, then started
/// again: deliveries answered 500 are retried by the publisher, failed invocations by the
/// host, and nothing stored before the outage is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage() {
    let c = Chaos::start("storage-outage", (0, 0), true).await;
    c.export().await.expect("baseline export");
    c.servicenow.set_delay(Duration::from_millis(150));
    c.zendesk.set_delay(Duration::from_millis(150));
    c.deliver(c.wave(15, 4, 1, 21), 8).await;
    let second = c.wave(15, 4, 1, 22);
    // Stop storage once tickets are being created, while more webhooks and an export run.
    let creating = c
        .stack
        .eventually(Duration::from_secs(30), || async {
            c.servicenow.incidents().len() + c.zendesk.tickets().len() >= 4
        })
        .await;
    assert!(creating, "tickets were being created before the outage");
    let outage = async {
        c.stack.azurite.stop().await;
        tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself
        c.stack.azurite.restart().await.expect("azurite restarts");
    };
    let traffic = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::join!(c.deliver(second, 8), c.export()).1
    };
    let (_, run) = tokio::join!(outage, traffic);
    eprintln!("storage-outage: the export during the outage: {run:?}");
    let a = c.settle_and_audit().await;
    assert!(
        a.redelivered > 0,
        "deliveries failed during the outage and were sent again"
    );
    assert!(
        run.is_err() || run.is_ok_and(|l| l.contains("failed")),
        "the export saw the outage"
    );
}

/// Waits (polling every 5 ms, so a kill lands close to the event) until `check` holds.
async fn soon(limit: Duration, check: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn served(q: &FakeQualtrics, suffix: &str, method: &str) -> usize {
    q.calls()
        .iter()
        .filter(|c| c.method == method && c.path.ends_with(suffix) && c.status == 200)
        .count()
}

/// The handler is SIGKILLed from outside, timed on what the fakes observe: during the first
/// (full) export once Qualtrics has started serving the file; while ServiceNow, then Zendesk,
/// hold create replies (the ticket exists, the ledger does not know yet); and while an
/// incremental export is polling. The local host replaces it every time: a worker restart, or
/// at the third kill a host restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_killed() {
    let c = Chaos::start("handler-sigkill", (4000, 2000), true).await;
    let (run, ()) = tokio::join!(c.export(), async {
        let serving = soon(Duration::from_secs(30), || {
            served(&c.qualtrics, "/file", "GET") >= 1
        })
        .await;
        assert!(serving, "the export file was requested");
        c.kill_handler().await;
    });
    assert!(run.is_err(), "the export died with the handler: {run:?}");

    for (seed, system) in [(31, "servicenow"), (32, "zendesk")] {
        let held = || match system {
            "servicenow" => c.servicenow.held(),
            _ => c.zendesk.held(),
        };
        match system {
            "servicenow" => c.servicenow.hold_creates(),
            _ => c.zendesk.hold_creates(),
        }
        let before = held();
        c.deliver(c.wave(8, 4, 1, seed), 8).await;
        assert!(
            soon(Duration::from_secs(30), || held() > before).await,
            "{system} received a create"
        );
        c.kill_handler().await;
        match system {
            "servicenow" => c.servicenow.release(),
            _ => c.zendesk.release(),
        }
    }

    // Responses whose webhooks never come; the export that would find them is killed mid-poll.
    assert!(c.wave(6, 1, 0, 33).is_empty());
    c.qualtrics.set_poll_delay(Duration::from_millis(300));
    let starts = served(&c.qualtrics, "/export-responses", "POST");
    let (run, ()) = tokio::join!(c.export(), async {
        let started = soon(Duration::from_secs(60), || {
            served(&c.qualtrics, "/export-responses", "POST") > starts
        })
        .await;
        assert!(started, "an incremental export started");
        c.kill_handler().await;
    });
    assert!(run.is_err(), "the second export died with the handler");
    c.qualtrics.set_poll_delay(Duration::ZERO);

    let a = c.settle_and_audit().await;
    // Four kills within minutes: the host restarts the worker after the first two, shuts down
    // at the third (the platform starts a new host, whose error count starts at zero) and
    // restarts the worker after the fourth, as Azure's host would (reference §1).
    assert_eq!(
        (a.handler_restarts, c.stack.host.host_restarts()),
        (4, 1),
        "(handler restarts, host restarts)"
    );
    assert!(
        a.found_by_lookup >= 1,
        "a ticket created by a killed attempt was found by the retry's lookup"
    );
    assert_eq!(a.responses - a.live, 8000, "the history was exported too");
}

/// Everything at once, for longer: eight rounds of duplicated, reordered webhooks with a
/// Qualtrics fault and a ticketing fault each, handler kills while creates are held and while
/// exports stream, and a storage outage in the middle. `scripts/chaos.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long chaos run: scripts/chaos.sh"]
async fn everything_long() {
    let mut c = Chaos::start("everything-long", (3000, 1500), true).await;
    c.settle_limit = Duration::from_secs(300);
    c.export().await.expect("baseline export");
    let rate = Some(RateLimit {
        limit: 10,
        window: Duration::from_secs(1),
    });
    c.servicenow.set_rate_limit(rate);
    c.zendesk.set_rate_limit(rate);
    for round in 0..8u64 {
        let plan = c.wave(20, 5, 2, 100 + round);
        match round % 4 {
            0 => c.qualtrics.throttle_next(10, Some(1)),
            1 => c.qualtrics.error_next(4),
            2 => c.qualtrics.fail_next_exports(1),
            _ => c.qualtrics.reject_tokens(true),
        }
        match round % 3 {
            0 => {
                for _ in 0..5 {
                    c.servicenow.push_fault(Route::Any, Fault::Status(503));
                    c.zendesk.push_fault(Route::Any, Fault::Status(500));
                }
            }
            1 => {
                c.servicenow
                    .push_fault(Route::Create, Fault::Delay(Duration::from_secs(3)));
                c.zendesk.push_fault(Route::Create, Fault::AfterCreate(502));
            }
            _ => {
                c.servicenow.set_delay(Duration::from_millis(300));
                c.zendesk.set_delay(Duration::from_millis(300));
            }
        }
        if round == 2 || round == 6 {
            c.servicenow.hold_creates();
            c.zendesk.hold_creates();
        }
        let chaos = async {
            match round {
                2 | 6 => {
                    let held = soon(Duration::from_secs(60), || {
                        c.servicenow.held() + c.zendesk.held() > 0
                    })
                    .await;
                    assert!(held, "a create was held");
                    c.kill_handler().await;
                    c.servicenow.release();
                    c.zendesk.release();
                }
                4 => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    c.stack.azurite.stop().await;
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    c.stack.azurite.restart().await.expect("azurite restarts");
                }
                7 => {
                    let files = served(&c.qualtrics, "/file", "GET");
                    if soon(Duration::from_secs(30), || {
                        served(&c.qualtrics, "/file", "GET") > files
                    })
                    .await
                    {
                        c.kill_handler().await;
                    }
                }
                _ => {}
            }
        };
        let (_, run, ()) = tokio::join!(c.deliver(plan, 8), c.export(), chaos);
        eprintln!(
            "everything-long: round {round}: export {}",
            if run.is_ok() { "ok" } else { "failed" }
        );
        c.qualtrics.reject_tokens(false);
        c.servicenow.set_delay(Duration::ZERO);
        c.zendesk.set_delay(Duration::ZERO);
    }
    let a = c.settle_and_audit().await;
    assert!(a.handler_restarts >= 3, "{} restarts", a.handler_restarts);
    // Every third worker error within 30 minutes of the previous one restarts the host.
    assert_eq!(c.stack.host.host_restarts(), a.handler_restarts / 3);
}

/// Reads a `/proc/{pid}/status` field in KiB (`VmHWM` is the peak resident set).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Load profile: 10,000 signed webhooks in bursts of 500 through the front door while a
/// 60,000-response export runs, tickets draining at the fake ServiceNow's limit (100 requests
/// per second: a lookup and a create per ticket). Reports webhook throughput and latency,
/// the ticket drain rate against its floor, the handler's peak RSS, and the audit. Azurite runs
/// on disk, as in the chaos scenarios; in memory it stopped answering under this load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load profile: scripts/load-profile.sh"]
async fn load_profile() {
    const WEBHOOKS: usize = 10_000;
    const BURST: usize = 500;
    const LIMIT: u32 = 100;
    let mut c = Chaos::start("load-profile", (25_000, 2000), true).await;
    c.settle_limit = Duration::from_secs(900);
    c.servicenow.set_rate_limit(Some(RateLimit {
        limit: LIMIT,
        window: Duration::from_secs(1),
    }));
    let ids = c.qualtrics.add_responses(SN, WEBHOOKS);
    let deliveries: Vec<Delivery> = ids
        .iter()
        .map(|id| Delivery::signed(WEBHOOK_KEY, SN, id))
        .collect();
    let t0 = Instant::now();
    let webhooks = async {
        let mut latencies = Vec::with_capacity(WEBHOOKS);
        for burst in deliveries.chunks(BURST) {
            latencies.extend(c.deliver(burst.to_vec(), 64).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (latencies, t0.elapsed())
    };
    let ((mut latencies, webhook_time), export) = tokio::join!(webhooks, c.export());
    let export_time = t0.elapsed();
    let export_logs = export.expect("the export succeeds under load");
    assert!(export_logs.contains("exported 35000"), "{export_logs}");
    c.settle().await;
    let drained = t0.elapsed();
    let pid = c.stack.host.handler_pid().await.expect("handler");
    let peak_kib = proc_kib(pid, "VmHWM").unwrap_or(0);
    let a = c.audit().await;
    latencies.sort();
    let sn_creates = c.servicenow.incidents().len();
    let floor = (2 * sn_creates) as f64 / LIMIT as f64;
    println!(
        "LOAD|webhooks|{WEBHOOKS} in {:.1} s ({:.0}/s, bursts of {BURST}, 64 connections)",
        webhook_time.as_secs_f64(),
        WEBHOOKS as f64 / webhook_time.as_secs_f64()
    );
    println!(
        "LOAD|webhook latency|p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "LOAD|export|60,000 responses in two surveys (about 106 MB of NDJSON) done {:.1} s after the first webhook",
        export_time.as_secs_f64()
    );
    println!(
        "LOAD|tickets|{sn_creates} drained in {:.1} s; floor at {LIMIT} req/s: {floor:.1} s ({:.2}x); 429s: {}",
        drained.as_secs_f64(),
        drained.as_secs_f64() / floor.max(0.001),
        c.servicenow.rate_counts().1
    );
    println!(
        "LOAD|handler peak RSS|{:.1} MiB (VmHWM), restarts {}",
        peak_kib as f64 / 1024.0,
        c.stack.host.crash_restarts()
    );
    a.print();
    a.assert_clean();
    assert_eq!(sn_creates, WEBHOOKS, "one incident per webhook");
    assert_eq!(c.stack.host.crash_restarts(), 0);
}
