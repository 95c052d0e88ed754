//! Issue 17's chaos audit of the whole loop, once per ticket system: the real `TicketCreator`
//! raises one Zendesk ticket (ServiceNow incident) per response in the fake; the fake solves,
//! reopens and closes them and sends its signed events (Zendesk's webhook, the ServiceNow
//! business rule's) to the real `TicketEvents` URL with drops, duplicates and reordering;
//! `LoopCloser` applies what arrives; then `TicketSync` queues what the events lost (Zendesk
//! `show_many`, ServiceNow `sys_idIN` batches). The audit reads the fakes: each response's last
//! write-back is its ticket's final state, no ticket got more than one follow-up, and the poison
//! queues are empty.

use crate::common;

use common::StackBuilder;
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::servicenow::{self, FakeServiceNow};
use devkit::fakes::ticket_events::{Delivery, EventTarget};
use devkit::fakes::zendesk::FakeZendesk;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SV: &str = "SV_chaosLoop01";
const TOKEN: &str = "q-chaos-token";
const SECRET: &str = "zd-chaos-signing-secret";
const TICKETS: usize = 12;
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn lost_duplicated_and_reordered_events_still_close_every_loop_once() {
    let started = Instant::now();
    let q = FakeQualtrics::start(TOKEN).await.expect("fake Qualtrics");
    let zd = FakeZendesk::start().await.expect("fake Zendesk");
    // QID1 is seq % 11, so every response matches: one ticket per response.
    let toml = format!(
        r#"[ticketing]
timeout_secs = 2
[[surveys]]
id = "{SV}"
[surveys.tickets]
system = "zendesk"
when = 'values.QID1 <= 10'
allowed_fields = ["QID1"]
[surveys.loop]
followup = {{ survey = "SV_followup1", library = "UR_lib1", message = "MS_msg1", mailing_list = "CG_list1", directory = "POOL_dir1" }}
"#
    );
    let stack = StackBuilder::default()
        .bridge_toml(&toml)
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .zendesk(&zd.url())
        .setting("ZENDESK_WEBHOOK_SECRET", SECRET)
        .setting("LOOP_RETRY_MAX_DELAY_SECONDS", "2")
        .setting("LOOP_CALL_TIMEOUT_SECONDS", "2")
        .start()
        .await;

    let responses = q.add_responses(SV, TICKETS);
    let mut email = HashMap::new();
    for (n, r) in responses.iter().enumerate() {
        let address = format!("pat.chaos{n}@example.org");
        q.set_recipient(r, &address, "Pat", "Respondent");
        email.insert(r.clone(), address);
    }
    stack.request_tickets(SV, &responses).await;
    stack.settle(SETTLE).await;
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), TICKETS, "one ticket per response");

    let url = stack
        .host
        .function_url("TicketEvents")
        .expect("TicketEvents")
        .replace("{system}", "zendesk");
    zd.set_events(Some(EventTarget {
        url,
        secret: SECRET.into(),
        headers: Vec::new(),
    }));
    // Three rounds, a second apart (Zendesk's `updated_at` has whole seconds, and it is the
    // only order a Zendesk change carries): solve all; reopen every third; solve those again
    // and close every other ticket. Faults rotate so each kind hits every round.
    let faults = [
        Delivery::Deliver,
        Delivery::Duplicate,
        Delivery::Hold,
        Delivery::Drop,
        Delivery::Deliver,
    ];
    let mut k = 0usize;
    let mut change = |id: u64, status: &str| {
        zd.events().push(faults[k % faults.len()].clone());
        k += 1;
        zd.set_status(id, status).expect("status change");
    };
    for t in &tickets {
        change(t.id, "solved");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for t in tickets.iter().step_by(3) {
        change(t.id, "open");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (i, t) in tickets.iter().enumerate() {
        if i % 2 == 0 {
            change(t.id, "closed");
        } else if i % 3 == 0 {
            change(t.id, "solved");
        }
    }
    // The last change above is dropped and the one before it held: one more, delivered,
    // releases the held event.
    change_delivered(&zd, tickets[5].id, "closed");
    assert!(
        stack
            .eventually(SETTLE, || async { zd.events().in_flight() == 0 })
            .await,
        "the fake's deliveries finished"
    );
    stack.settle(SETTLE).await;
    let before = audit(&q, &zd, &email);
    assert!(
        !before.is_empty(),
        "the dropped events lost transitions before the sync"
    );
    let r = stack.host.fire("TicketSync").await.expect("fire");
    assert!(r.outcome.is_ok(), "TicketSync failed: {:?}", r.outcome);
    stack.settle(SETTLE).await;
    let lost = audit(&q, &zd, &email);
    assert!(lost.is_empty(), "lost transitions after the sync: {lost:?}");
    for poison in ["ticket-requests-poison", "loop-requests-poison"] {
        assert!(stack.queue_texts(poison).await.is_empty(), "{poison}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}

/// The same audit for ServiceNow. Its business rule fires on a change to resolved (6) or
/// closed (7) and on any change away from resolved (a reopening); each event carries
/// `sys_mod_count`, so the rounds need no pause between them (Zendesk's do).
#[tokio::test(flavor = "multi_thread")]
async fn servicenow_events_lost_duplicated_and_reordered_still_close_every_loop_once() {
    const SN_SECRET: &str = "sn-chaos-signing-secret";
    const SN_TICKETS: usize = 9;
    // Three incidents per sys_idIN read: the sync needs several batches.
    const BATCH: usize = 3;
    let started = Instant::now();
    let q = FakeQualtrics::start(TOKEN).await.expect("fake Qualtrics");
    let sn = FakeServiceNow::start().await.expect("fake ServiceNow");
    let toml = format!(
        r#"[ticketing]
timeout_secs = 2
[[surveys]]
id = "{SV}"
[surveys.tickets]
system = "servicenow"
when = 'values.QID1 <= 10'
allowed_fields = ["QID1"]
[surveys.loop]
followup = {{ survey = "SV_followup1", library = "UR_lib1", message = "MS_msg1", mailing_list = "CG_list1", directory = "POOL_dir1" }}
"#
    );
    let stack = StackBuilder::default()
        .bridge_toml(&toml)
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("SERVICENOW_INSTANCE_URL", &sn.url())
        .setting("SERVICENOW_USERNAME", servicenow::USERNAME)
        .setting("SERVICENOW_PASSWORD", servicenow::PASSWORD)
        .setting("SERVICENOW_WEBHOOK_SECRET", SN_SECRET)
        .setting("TICKET_SYNC_BATCH_SIZE", &BATCH.to_string())
        .setting("LOOP_RETRY_MAX_DELAY_SECONDS", "2")
        .setting("LOOP_CALL_TIMEOUT_SECONDS", "2")
        .start()
        .await;

    let responses = q.add_responses(SV, SN_TICKETS);
    let mut email = HashMap::new();
    for (n, r) in responses.iter().enumerate() {
        let address = format!("sam.chaos{n}@example.org");
        q.set_recipient(r, &address, "Sam", "Respondent");
        email.insert(r.clone(), address);
    }
    stack.request_tickets(SV, &responses).await;
    stack.settle(SETTLE).await;
    let incidents = sn.incidents();
    assert_eq!(incidents.len(), SN_TICKETS, "one incident per response");

    let url = stack
        .host
        .function_url("TicketEvents")
        .expect("TicketEvents")
        .replace("{system}", "servicenow");
    sn.set_events(Some(EventTarget {
        url,
        secret: SN_SECRET.into(),
        headers: Vec::new(),
    }));
    let faults = [
        Delivery::Deliver,
        Delivery::Duplicate,
        Delivery::Hold,
        Delivery::Drop,
        Delivery::Deliver,
    ];
    let mut k = 0usize;
    let mut change = |sys_id: &str, state: &str, close_code: Option<&str>| {
        sn.events().push(faults[k % faults.len()].clone());
        k += 1;
        sn.set_state(sys_id, state, close_code)
            .expect("state change");
    };
    // Resolve all; reopen every third (2, in progress); then close every other incident and
    // resolve the reopened ones that are not closed.
    for i in &incidents {
        change(&i.sys_id, "6", Some("Solved (Permanently)"));
    }
    for i in incidents.iter().step_by(3) {
        change(&i.sys_id, "2", None);
    }
    for (n, i) in incidents.iter().enumerate() {
        if n % 2 == 0 {
            change(&i.sys_id, "7", None);
        } else if n % 3 == 0 {
            change(&i.sys_id, "6", Some("Solved (Workaround)"));
        }
    }
    // Every event the rule fired is one scripted delivery: the script ran out exactly, so each
    // fault kind hit (a held event is released by the next delivered one).
    assert_eq!(
        sn.events().built().len(),
        k,
        "the rule fired on every change"
    );
    sn.events().push(Delivery::Deliver);
    sn.set_state(&incidents[5].sys_id, "7", None)
        .expect("close");
    assert!(
        stack
            .eventually(SETTLE, || async { sn.events().in_flight() == 0 })
            .await,
        "the fake's deliveries finished"
    );
    stack.settle(SETTLE).await;
    let before = audit_servicenow(&q, &sn, &email);
    assert!(
        !before.is_empty(),
        "the dropped events lost transitions before the sync"
    );
    let reads_before = sync_reads(&sn);
    let r = stack.host.fire("TicketSync").await.expect("fire");
    assert!(r.outcome.is_ok(), "TicketSync failed: {:?}", r.outcome);
    stack.settle(SETTLE).await;
    let lost = audit_servicenow(&q, &sn, &email);
    assert!(lost.is_empty(), "lost transitions after the sync: {lost:?}");
    // The open-ticket index held every incident (none was terminal when raised): read in
    // batches of BATCH, never one request per incident.
    let reads = sync_reads(&sn) - reads_before;
    assert_eq!(reads, SN_TICKETS.div_ceil(BATCH), "sys_idIN reads");
    for poison in ["ticket-requests-poison", "loop-requests-poison"] {
        assert!(stack.queue_texts(poison).await.is_empty(), "{poison}");
    }
    let emails: Vec<&str> = email.values().map(String::as_str).collect();
    common::assert_no_address_logged(&stack, &emails);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// `GET /api/now/table/incident?sysparm_query=sys_idIN…` reads the fake answered.
fn sync_reads(sn: &FakeServiceNow) -> usize {
    sn.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains("sys_idIN"))
        .count()
}

/// As [`audit`], for ServiceNow incidents (6 resolved, 7 closed, else open).
fn audit_servicenow(
    q: &FakeQualtrics,
    sn: &FakeServiceNow,
    email: &HashMap<String, String>,
) -> Vec<String> {
    let mut lost = Vec::new();
    for i in sn.incidents() {
        let rid = i.fields["correlation_id"]
            .rsplit(':')
            .next()
            .expect("correlation id")
            .to_string();
        let state = i.fields["state"].as_str();
        let want = match state {
            "6" => "resolved",
            "7" => "closed",
            _ => "open",
        };
        let last = last_write_back(q, &rid);
        if last.as_deref() != Some(want) {
            lost.push(format!(
                "incident {} state {state}: last write-back {last:?}",
                i.number
            ));
        }
        let followups = q
            .distributions()
            .iter()
            .filter(|d| Some(&d.email) == email.get(&rid))
            .count();
        assert!(
            followups <= 1,
            "incident {}: {followups} follow-ups",
            i.number
        );
    }
    lost
}

/// The `TicketState` of the last write-back onto `response_id`.
fn last_write_back(q: &FakeQualtrics, response_id: &str) -> Option<String> {
    q.response_updates()
        .iter()
        .filter(|u| u.response_id == response_id)
        .filter_map(|u| {
            let v: Value = serde_json::from_str(&u.body).ok()?;
            v["embeddedData"]["TicketState"].as_str().map(str::to_owned)
        })
        .next_back()
}

/// A change whose event is delivered as is.
fn change_delivered(zd: &FakeZendesk, id: u64, status: &str) {
    zd.events().push(Delivery::Deliver);
    zd.set_status(id, status).expect("status change");
}

/// Every ticket whose response's last write-back is not the ticket's state now; fails the
/// test on a second follow-up to one respondent.
fn audit(q: &FakeQualtrics, zd: &FakeZendesk, email: &HashMap<String, String>) -> Vec<String> {
    let state_of = |status: &str| match status {
        "solved" => "resolved",
        "closed" => "closed",
        _ => "open",
    };
    let mut lost = Vec::new();
    for t in zd.tickets() {
        let rid = t
            .external_id
            .as_deref()
            .and_then(|e| e.rsplit(':').next())
            .expect("external id")
            .to_string();
        let status = t.json["status"].as_str().expect("status").to_string();
        let last = last_write_back(q, &rid);
        if last.as_deref() != Some(state_of(&status)) {
            lost.push(format!(
                "ticket {} {status}: last write-back {last:?}",
                t.id
            ));
        }
        let followups = q
            .distributions()
            .iter()
            .filter(|d| Some(&d.email) == email.get(&rid))
            .count();
        assert!(followups <= 1, "ticket {}: {followups} follow-ups", t.id);
    }
    lost
}
