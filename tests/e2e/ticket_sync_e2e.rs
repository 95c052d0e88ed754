//! Issue 17's `TicketSync` end to end: tickets raised by the real `TicketCreator` (release
//! binary, devkit's host, Azurite, fake Qualtrics/Zendesk/ServiceNow) change state in the fake
//! ticket systems with their events lost; `TicketSync` finds each transition exactly once,
//! drops terminal tickets from the open-ticket index, and reads the systems in proportion to
//! the open tickets only. The handler sends its requests itself and changes the index only
//! after a send succeeded: a run that cannot queue loses nothing.

use crate::common;

use common::{blob_names, blob_text, storage_of, Stack, StackBuilder};
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::servicenow::{self, FakeServiceNow};
use devkit::fakes::ticket_events::{Delivery, EventTarget};
use devkit::fakes::zendesk::FakeZendesk;
use qualtrics_bridge::messages::{LoopRequest, LoopSource, TicketState};
use std::time::Duration;

const SV: &str = "SV_sync1";
const TOKEN: &str = "q-test-token";
const WAIT: Duration = Duration::from_secs(60);
const LOOP: &str = "loop-requests";

struct Env {
    stack: Stack,
    qualtrics: FakeQualtrics,
    servicenow: FakeServiceNow,
    zendesk: FakeZendesk,
}

/// The stack with `loop-requests` in place, as infra declares it.
async fn env(system: &str, batch: usize) -> Env {
    let env = env_without_loop_queue(system, batch).await;
    env.stack
        .queues
        .create_queue(LOOP)
        .await
        .expect("loop-requests");
    env
}

/// The stack without `loop-requests` (nothing here creates it): every send of TicketSync fails.
async fn env_without_loop_queue(system: &str, batch: usize) -> Env {
    let qualtrics = FakeQualtrics::start(TOKEN).await.expect("fake Qualtrics");
    let servicenow = FakeServiceNow::start().await.expect("fake ServiceNow");
    let zendesk = FakeZendesk::start().await.expect("fake Zendesk");
    // QID1 is seq % 11, so every response matches: one ticket per response.
    let toml = format!(
        "[ticketing]\ntimeout_secs = 2\n[[surveys]]\nid = \"{SV}\"\n[surveys.tickets]\nsystem = \"{system}\"\nwhen = 'values.QID1 <= 10'\nallowed_fields = [\"QID1\"]\n"
    );
    let stack = StackBuilder::default()
        .bridge_toml(&toml)
        .setting("QUALTRICS_BASE_URL", &qualtrics.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("SERVICENOW_INSTANCE_URL", &servicenow.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .zendesk(&zendesk.url())
        .setting("TICKET_SYNC_BATCH_SIZE", &batch.to_string())
        // The tests read what TicketSync left on loop-requests: nothing may consume it.
        .without_function("LoopCloser")
        .start()
        .await;
    // Events go nowhere reachable: each test drops them on purpose, and one that escaped would
    // be recorded by the sender as unanswered, not lost silently.
    let target = Some(EventTarget {
        url: "http://127.0.0.1:9/api/tickets/events".into(),
        secret: "sync-test-secret".into(),
        headers: Vec::new(),
    });
    zendesk.set_events(target.clone());
    servicenow.set_events(target);
    Env {
        stack,
        qualtrics,
        servicenow,
        zendesk,
    }
}

impl Env {
    /// Raises `n` tickets through the real TicketCreator and waits until each is indexed.
    async fn raise(&self, system: &str, n: usize) -> Vec<String> {
        let responses = self.qualtrics.add_responses(SV, n);
        self.stack.request_tickets(SV, &responses).await;
        self.stack.settle(WAIT).await;
        let want = self.indexed(system).await.len();
        assert!(want >= n, "{want} tickets indexed, at least {n} expected");
        responses
    }

    async fn indexed(&self, system: &str) -> Vec<String> {
        let prefix = format!("open-tickets/{system}/");
        blob_names(&storage_of(&self.stack.azurite), "bridge-state")
            .await
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// Fires TicketSync and returns its log lines.
    async fn sync(&self) -> Vec<String> {
        let r = self.stack.host.fire("TicketSync").await.expect("fire");
        assert!(r.outcome.is_ok(), "TicketSync failed: {:?}", r.outcome);
        r.logs
    }

    /// The open-ticket index entry of `ticket` as JSON, `None` when it is not indexed.
    async fn entry(&self, system: &str, ticket: &str) -> Option<serde_json::Value> {
        let name = format!("open-tickets/{system}/{ticket}.json");
        let text = blob_text(&storage_of(&self.stack.azurite), "bridge-state", &name).await?;
        Some(serde_json::from_str(&text).expect("index entry is JSON"))
    }

    async fn loop_requests(&self) -> Vec<LoopRequest> {
        self.stack
            .queue_texts(LOOP)
            .await
            .iter()
            .map(|t| {
                let r = LoopRequest::parse(t).expect("a valid LoopRequest");
                assert_eq!(&r.to_text(), t, "the message is exactly what serde writes");
                r
            })
            .collect()
    }

    fn zendesk_reads(&self) -> usize {
        self.zendesk
            .requests()
            .iter()
            .filter(|(m, p, _, _)| m == "GET" && p.contains("show_many"))
            .count()
    }

    fn servicenow_reads(&self) -> usize {
        self.servicenow
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.query.contains("sys_idIN"))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_solved_zendesk_ticket_whose_event_was_lost_is_queued_once_then_leaves_when_closed() {
    let env = env("zendesk", 100).await;
    let responses = env.raise("zendesk", 3).await;
    let tickets = env.zendesk.tickets();
    assert_eq!(tickets.len(), 3);
    let solved = &tickets[1];
    let response = solved
        .external_id
        .as_deref()
        .and_then(|e| e.rsplit(':').next())
        .expect("external id");
    assert!(responses.iter().any(|r| r == response));

    // Nothing changed yet: a run queues nothing and reads the system once.
    env.sync().await;
    assert!(env.loop_requests().await.is_empty());
    assert_eq!(env.zendesk_reads(), 1);

    env.zendesk.events().push(Delivery::Drop);
    env.zendesk.set_status(solved.id, "solved").expect("solve");
    assert_eq!(
        env.zendesk.events().built().len(),
        1,
        "the fake built the event"
    );
    assert!(env.zendesk.events().sent().is_empty(), "and dropped it");

    env.sync().await;
    let got = env.loop_requests().await;
    assert_eq!(got.len(), 1, "exactly one request: {got:?}");
    let t = env
        .zendesk
        .tickets()
        .into_iter()
        .find(|t| t.id == solved.id)
        .expect("ticket");
    let want = LoopRequest {
        v: 1,
        system: "zendesk".into(),
        ticket_id: solved.id.to_string(),
        ticket_number: Some(solved.id.to_string()),
        survey_id: SV.into(),
        response_id: response.into(),
        status: "solved".into(),
        state: TicketState::Resolved,
        close_code: None,
        changed_at: t.json["updated_at"].as_str().expect("updated_at").into(),
        sequence: None,
        source: LoopSource::Sync,
        event_id: None,
        received_at: got[0].received_at.clone(),
        retry: None,
    };
    assert_eq!(got[0].to_text(), want.to_text());
    assert_eq!(env.indexed("zendesk").await.len(), 3, "solved is not final");

    // Unchanged since: the next run queues nothing more; the open tickets never queue anything.
    env.sync().await;
    assert_eq!(env.loop_requests().await.len(), 1);

    env.zendesk.events().push(Delivery::Drop);
    env.zendesk.set_status(solved.id, "closed").expect("close");
    env.sync().await;
    let got = env.loop_requests().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (
            got[1].state,
            got[1].status.as_str(),
            got[1].ticket_id.as_str()
        ),
        (
            TicketState::Closed,
            "closed",
            solved.id.to_string().as_str()
        )
    );
    let left = env.indexed("zendesk").await;
    assert_eq!(left.len(), 2, "the closed ticket left the index: {left:?}");
    assert!(!left.contains(&format!("open-tickets/zendesk/{}.json", solved.id)));
    assert!(env
        .loop_requests()
        .await
        .iter()
        .all(|r| r.ticket_id == solved.id.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolved_incident_is_queued_with_its_close_code_and_sequence() {
    let env = env("servicenow", 100).await;
    env.raise("servicenow", 2).await;
    let incidents = env.servicenow.incidents();
    assert_eq!(incidents.len(), 2);
    let inc = &incidents[0];
    let response = inc.fields["correlation_id"]
        .rsplit(':')
        .next()
        .expect("correlation")
        .to_string();

    env.servicenow.events().push(Delivery::Drop);
    env.servicenow
        .set_state(&inc.sys_id, "6", Some("Solved (Permanently)"))
        .expect("resolve");
    assert_eq!(env.servicenow.events().built().len(), 1);
    env.sync().await;
    let got = env.loop_requests().await;
    assert_eq!(got.len(), 1, "{got:?}");
    let now = env
        .servicenow
        .incidents()
        .into_iter()
        .find(|i| i.sys_id == inc.sys_id)
        .expect("incident");
    let want = LoopRequest {
        v: 1,
        system: "servicenow".into(),
        ticket_id: inc.sys_id.clone(),
        ticket_number: Some(inc.number.clone()),
        survey_id: SV.into(),
        response_id: response,
        status: "6".into(),
        state: TicketState::Resolved,
        close_code: Some("Solved (Permanently)".into()),
        changed_at: format!("{}Z", now.fields["sys_updated_on"].replacen(' ', "T", 1)),
        sequence: Some(1),
        source: LoopSource::Sync,
        event_id: Some(format!("{}:1", inc.sys_id)),
        received_at: got[0].received_at.clone(),
        retry: None,
    };
    assert_eq!(got[0].to_text(), want.to_text());
    assert_eq!(env.servicenow_reads(), 1);

    env.servicenow.events().push(Delivery::Drop);
    env.servicenow
        .set_state(&inc.sys_id, "7", None)
        .expect("close");
    env.sync().await;
    let got = env.loop_requests().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[1].state, got[1].sequence),
        (TicketState::Closed, Some(2))
    );
    assert_eq!(env.indexed("servicenow").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_grow_with_open_tickets_not_with_tickets_ever_raised() {
    // Two tickets per read, so that the number of reads shows the number of open tickets.
    let env = env("zendesk", 2).await;
    env.raise("zendesk", 2).await;
    let before = env.zendesk_reads();
    env.sync().await;
    let small = env.zendesk_reads() - before;

    env.raise("zendesk", 4).await;
    let before = env.zendesk_reads();
    env.sync().await;
    let large = env.zendesk_reads() - before;
    assert_eq!((small, large), (1, 3), "reads for 2 and 6 open tickets");

    // Four tickets close (events lost); once the sync has seen it, they cost nothing more.
    for t in env.zendesk.tickets().iter().take(4) {
        env.zendesk.events().push(Delivery::Drop);
        env.zendesk.set_status(t.id, "closed").expect("close");
    }
    env.sync().await;
    assert_eq!(env.loop_requests().await.len(), 4);
    assert_eq!(env.indexed("zendesk").await.len(), 2);
    let before = env.zendesk_reads();
    env.sync().await;
    assert_eq!(
        env.zendesk_reads() - before,
        1,
        "6 tickets raised, 2 open: one read of two"
    );
    assert_eq!(env.loop_requests().await.len(), 4, "nothing new to queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_cannot_queue_changes_no_entry_and_the_next_run_queues_it() {
    let env = env_without_loop_queue("zendesk", 100).await;
    env.raise("zendesk", 3).await;
    let tickets = env.zendesk.tickets();
    let (solved, closed) = (tickets[0].id.to_string(), tickets[1].id.to_string());
    for (id, status) in [(tickets[0].id, "solved"), (tickets[1].id, "closed")] {
        env.zendesk.events().push(Delivery::Drop);
        env.zendesk.set_status(id, status).expect("status");
    }
    let before = (
        env.entry("zendesk", &solved).await.expect("indexed"),
        env.entry("zendesk", &closed).await.expect("indexed"),
    );
    assert!(before.0.get("lastSynced").is_none(), "{}", before.0);

    // loop-requests does not exist: the sends fail, so neither entry may record the
    // transitions (with the host's output binding, the index was written first and both
    // transitions were lost once the output write failed).
    let logs = env.sync().await;
    assert!(
        logs.iter().any(|l| l.contains("stopped: zendesk")),
        "the run says it stopped: {logs:?}"
    );
    assert_eq!(
        (
            env.entry("zendesk", &solved).await,
            env.entry("zendesk", &closed).await
        ),
        (Some(before.0.clone()), Some(before.1.clone())),
        "entries unchanged"
    );
    assert!(env.loop_requests().await.is_empty());

    // The queue is back: the next run queues both transitions once, then updates the index.
    env.stack
        .queues
        .create_queue(LOOP)
        .await
        .expect("loop-requests");
    env.sync().await;
    let mut got: Vec<(String, TicketState)> = env
        .loop_requests()
        .await
        .into_iter()
        .map(|r| (r.ticket_id, r.state))
        .collect();
    got.sort();
    let mut want = vec![
        (solved.clone(), TicketState::Resolved),
        (closed.clone(), TicketState::Closed),
    ];
    want.sort();
    assert_eq!(got, want);
    let synced = env.entry("zendesk", &solved).await.expect("still indexed");
    assert_eq!(synced["lastSynced"]["state"], "resolved", "{synced}");
    assert_eq!(env.entry("zendesk", &closed).await, None, "closed: removed");
    env.sync().await;
    assert_eq!(env.loop_requests().await.len(), 2, "nothing queued twice");
}
