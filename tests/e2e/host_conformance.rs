//! Conformance of the real release binary behind devkit's local Functions host on Azurite:
//! each trigger's surprising shapes, failures and retries, and byte-exact queue outputs.

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{Stack, StackBuilder, FUNCTION_KEY};
use std::time::Duration;

const TICKETS: &str = "ticket-requests";
const POISON: &str = "ticket-requests-poison";
const WAIT: Duration = Duration::from_secs(20);

fn request(survey: &str, response: &str) -> String {
    format!(
        r#"{{"v":1,"surveyId":"{survey}","responseId":"{response}","source":"export","receivedAt":"2026-12-01T00:00:00Z"}}"#
    )
}

async fn put(stack: &Stack, queue: &str, text: &str) {
    stack
        .queues
        .create_queue(queue)
        .await
        .expect("create queue");
    stack
        .queues
        .put_message(queue, &STANDARD.encode(text))
        .await
        .expect("put");
}

fn invocations(stack: &Stack, function: &str) -> Vec<devkit::host::InvocationRecord> {
    stack
        .host
        .records()
        .into_iter()
        .filter(|r| r.function == function)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_trigger_through_the_front_door() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let url = stack.webhook_url();

    // GET reaches the handler, whose `res` becomes the caller's response.
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), r#"{"status":"ok"}"#);

    // The function key is checked before the handler is called.
    let no_key = url.split('?').next().unwrap().to_string();
    assert_eq!(http.get(&no_key).send().await.unwrap().status(), 401);
    assert_eq!(
        http.get(format!("{no_key}?code=wrong"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let header_key = http
        .get(&no_key)
        .header("x-functions-key", FUNCTION_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(header_key.status(), 200);
    // Methods outside function.json and unknown routes never reach the handler.
    assert_eq!(http.put(&url).send().await.unwrap().status(), 404);
    assert_eq!(
        http.get(url.replace("events", "nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(invocations(&stack, "QualtricsWebhook").len(), 2);

    // A chunked POST (no Content-Length) arrives without a Body and is still answered.
    let body = reqwest::Body::wrap_stream(futures::stream::once(async {
        Ok::<_, std::io::Error>("a=b")
    }));
    let resp = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    // The handler sees no Body and refuses the empty form: 400, as `webhook_e2e` pins.
    assert_eq!(resp.status(), 400);
    assert!(invocations(&stack, "QualtricsWebhook")
        .iter()
        .all(|r| r.outcome.is_ok()));
    assert!(
        stack.queue_texts(TICKETS).await.is_empty(),
        "nothing queued"
    );
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request_is_dead_lettered_byte_exact_at_once() {
    let stack = Stack::start().await;
    // Quotes, backslashes, control characters and non-ASCII survive both encodings exactly.
    let text = "{\"v\":1,\"surveyId\":\"SV_1\",\"responseId\":\"not-a-response\",\"note\":\"é \\\" \\\\ \\u0001 😀\"}";
    put(&stack, TICKETS, text).await;
    assert!(
        stack
            .eventually(WAIT, || async {
                stack.queue_texts(POISON).await.len() == 1
            })
            .await,
        "dead-lettered message reaches the poison queue"
    );
    assert_eq!(stack.queue_texts(POISON).await, vec![text.to_string()]);
    let runs = invocations(&stack, "TicketCreator");
    assert_eq!(
        runs.len(),
        1,
        "permanent failure: one invocation, no retries"
    );
    assert_eq!(runs[0].dequeue_count, Some(1));
    assert!(
        runs[0].logs.iter().any(|l| l.starts_with("dead-lettered")),
        "{:?}",
        runs[0].logs
    );
    assert!(
        stack
            .eventually(WAIT, || async {
                stack.queue_texts(TICKETS).await.is_empty()
            })
            .await
    );
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_overwritten_by_message_fields_does_not_break_decoding() {
    let stack = Stack::start().await;
    // The host copies top-level message properties into Metadata, overwriting DequeueCount
    // with the text of the number, double-encoded (`"\"3\""`, as devkit now sends it); the
    // handler must still decode the message: one invocation, straight to poison, not five.
    let text = r#"{"DequeueCount":3,"Id":"x","v":1}"#;
    put(&stack, TICKETS, text).await;
    assert!(
        stack
            .eventually(WAIT, || async {
                stack.queue_texts(POISON).await.len() == 1
            })
            .await
    );
    assert_eq!(stack.queue_texts(POISON).await, vec![text.to_string()]);
    assert_eq!(invocations(&stack, "TicketCreator").len(), 1);
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_invocation_is_retried_then_poisoned_after_five_tries() {
    // The response exists in (fake) Qualtrics, but ServiceNow is unreachable (a closed
    // loopback port): every attempt fails transiently. The handler would re-enqueue the
    // request itself, but this one fills a queue message to the 64 KiB limit (a long topic),
    // so the re-enqueued copy (with its retry count) is refused: only then does the
    // invocation fail, and the host retries, then poisons.
    let qualtrics = devkit::fakes::qualtrics::FakeQualtrics::start("q-token")
        .await
        .unwrap();
    let response = qualtrics.add_responses("SV_retry", 1).remove(0);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let stack = StackBuilder::default()
        .bridge_toml("[[surveys]]\nid = \"SV_retry\"\n[surveys.tickets]\nsystem = \"servicenow\"\n")
        .setting("QUALTRICS_BASE_URL", &qualtrics.base_url)
        .setting("QUALTRICS_API_TOKEN", "q-token")
        .setting(
            "SERVICENOW_INSTANCE_URL",
            &format!("http://127.0.0.1:{closed}"),
        )
        .setting("SERVICENOW_USERNAME", "bridge")
        .setting("SERVICENOW_PASSWORD", "pw")
        .start()
        .await;
    let short = request("SV_retry", &response);
    // base64 of the message is 65,532 characters: 4 under the limit.
    let topic = "t".repeat(49_149 - short.len() - r#","topic":"""#.len());
    let text = short.replacen(
        r#","receivedAt""#,
        &format!(r#","topic":"{topic}","receivedAt""#),
        1,
    );
    assert_eq!(text.len(), 49_149);
    put(&stack, TICKETS, &text).await;
    assert!(
        stack
            .eventually(WAIT, || async {
                stack.queue_texts(POISON).await.len() == 1
            })
            .await,
        "message reaches the poison queue"
    );
    assert_eq!(stack.queue_texts(POISON).await, vec![text]);
    let runs = invocations(&stack, "TicketCreator");
    let counts: Vec<Option<u32>> = runs.iter().map(|r| r.dequeue_count).collect();
    assert_eq!(counts, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);
    assert!(runs.iter().all(|r| r.outcome.is_err()));
    assert!(
        runs.iter()
            .all(|r| format!("{:?}{:?}", r.outcome, r.logs).contains("cannot re-enqueue")),
        "each attempt failed because the re-enqueue did: {runs:?}"
    );
    assert!(stack.queue_texts(TICKETS).await.is_empty());
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_request_for_a_survey_without_tickets_succeeds_and_is_deleted() {
    let stack = Stack::start().await;
    put(&stack, TICKETS, &request("SV_unknown", "R_1")).await;
    assert!(
        stack
            .eventually(WAIT, || async {
                !invocations(&stack, "TicketCreator").is_empty()
            })
            .await
    );
    assert!(
        stack
            .eventually(WAIT, || async {
                stack.queue_texts(TICKETS).await.is_empty()
            })
            .await
    );
    let runs = invocations(&stack, "TicketCreator");
    assert_eq!(runs.len(), 1);
    assert!(runs[0].outcome.is_ok());
    assert!(
        stack.queue_texts(POISON).await.is_empty(),
        "nothing poisoned"
    );
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_goes_to_poison_without_an_invocation() {
    let stack = Stack::start().await;
    stack.queues.create_queue(TICKETS).await.unwrap();
    stack
        .queues
        .put_message(TICKETS, "this is not base64!")
        .await
        .unwrap();
    assert!(
        stack
            .eventually(WAIT, || async {
                stack
                    .queues
                    .peek_messages(POISON)
                    .await
                    .map(|m| m.len() == 1)
                    .unwrap_or(false)
            })
            .await
    );
    let raw = stack.queues.peek_messages(POISON).await.unwrap();
    assert_eq!(raw[0].text, "this is not base64!");
    assert!(invocations(&stack, "TicketCreator").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_fires_on_demand_and_through_the_admin_endpoint() {
    let stack = Stack::start().await;
    let record = stack.host.fire("ExportPoller").await.unwrap();
    assert!(record.outcome.is_ok(), "{:?}", record.outcome);
    assert!(
        // No QUALTRICS_BASE_URL in this stack: the run says so instead of failing.
        record.logs.iter().any(|l| l.contains("nothing exported")),
        "{:?}",
        record.logs
    );

    let http = reqwest::Client::new();
    let admin = format!("{}/admin/functions/ExportPoller", stack.host.base_url);
    assert_eq!(
        http.post(&admin)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let resp = http
        .post(&admin)
        .header("x-functions-key", common::MASTER_KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(invocations(&stack, "ExportPoller").len(), 2);
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_restarts_after_a_crash_and_stops_cleanly_on_sigterm() {
    let stack = Stack::start().await;
    // Worker errors one and two restart the worker; the third within 30 minutes shuts the host
    // down, and the platform's new host starts the handler with its error count at zero.
    for (kills, host_restarts) in [(1, 0), (2, 0), (3, 1), (4, 1)] {
        let before = stack.host.handler_pid().await;
        stack.host.restart_handler().await.unwrap();
        assert_ne!(stack.host.handler_pid().await, before);
        assert_eq!(
            (stack.host.crash_restarts(), stack.host.host_restarts()),
            (kills, host_restarts),
            "(handler restarts, host restarts) after {kills} kill(s)"
        );
        let resp = reqwest::get(stack.webhook_url()).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let status = stack.host.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        status.map(|s| s.success()),
        Some(true),
        "clean exit on SIGTERM"
    );
}

/// A handler that breaks the protocol on purpose: `ExportPoller` gets an empty 200 reply (the
/// real host would never complete that invocation), `TicketCreator` takes 1.5 s and succeeds.
const MISBEHAVING_HANDLER: &str = r#"
import http.server, os, time

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply("{}")

    def do_POST(self):
        # The host sends the envelope chunked.
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            self.rfile.read(size + 2)
            if size == 0:
                break
        if self.path == "/ExportPoller":
            self.reply("")
        else:
            time.sleep(1.5)
            self.reply("{}")

port = int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

async fn misbehaving_stack() -> Stack {
    let stack = StackBuilder::default()
        .handler_script(MISBEHAVING_HANDLER)
        .start()
        .await;
    let r = stack.host.fire("ExportPoller").await.unwrap();
    assert!(r.outcome.is_err(), "an empty reply fails the invocation");
    stack
}

/// The harness's default: a test that never asks about violations still fails on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "protocol violations")]
async fn a_violation_fails_a_test_that_does_not_opt_out() {
    let _stack = misbehaving_stack().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_provokes_a_violation_opts_out_and_settle_waits_for_completion() {
    let stack = misbehaving_stack().await;
    let violations = stack.expect_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].starts_with("ExportPoller: "),
        "{violations:?}"
    );
    // settle() returns only once the slow invocation is done and its message deleted.
    put(&stack, TICKETS, &request("SV_1", "R_1")).await;
    stack.settle(WAIT).await;
    let runs = invocations(&stack, "TicketCreator");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].outcome.is_ok(), "{runs:?}");
    assert_eq!(stack.queues.approximate_count(TICKETS).await.unwrap(), 0);
    assert_eq!(stack.host.activity().in_flight, 0);
}
