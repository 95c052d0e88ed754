//! The fuzz harness: turns fuzzer bytes into what the Functions host would send, runs the
//! handler's real code on it, and checks invariants of the answer. A violated invariant
//! panics, which libFuzzer reports as a crash.
//!
//! Shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/`) and by the stable test that
//! replays the committed corpus (`tests/fuzz_corpus.rs` includes this file by path), so the
//! corpus is checked on every `scripts/test.sh` run, nightly or not.
//!
//! * [`webhook_delivery`]: input = an HTTP request as Qualtrics (or anyone) could send it to
//!   the webhook URL — method line, header lines, a blank line, body bytes. The harness builds
//!   the host's envelope exactly as the host would (header arrays, lossy UTF-8 text body with
//!   the BOM stripped, base64 for octet/multipart, no `Body` when empty) and runs the
//!   `QualtricsWebhook` invocation.
//! * [`envelope`]: input = the envelope bytes themselves, run as an invocation of each of the
//!   three functions.

use hmac::{Hmac, Mac};
use qualtrics_bridge::config::BridgeConfig;
use qualtrics_bridge::deps::Deps;
use qualtrics_bridge::functions::{Function, Functions};
use qualtrics_bridge::messages::{RequestSource, TicketRequest};
use qualtrics_bridge::startup;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The current webhook key: the key of both public HMAC test vectors
/// (`external-apis.md` §1.4.3), so the committed vectors are accepted deliveries.
pub const WEBHOOK_KEY: &str = "kyma4ever";
/// The previous webhook key (rotation grace).
pub const WEBHOOK_KEY_PREVIOUS: &str = "fuzz-previous-key";
/// The workflow web-service token.
pub const WORKFLOW_TOKEN: &str = "fuzz-workflow-token";

/// Surveys of both vectors raise tickets; one survey accepts unsigned forms; one raises none.
const BRIDGE: &str = r#"
[[surveys]]
id = "SV_1AmkKSDmoZ4XlQx"
[surveys.tickets]
system = "servicenow"

[[surveys]]
id = "SV_22VlHYNeldrrrkp"
[surveys.tickets]
system = "zendesk"

[[surveys]]
id = "SV_unsigned1"
allow_unsigned = true
[surveys.tickets]
system = "servicenow"

[[surveys]]
id = "SV_noTickets"
"#;

struct Harness {
    rt: tokio::runtime::Runtime,
    /// The survey table the oracle judges by.
    bridge: BridgeConfig,
    functions: Functions,
}

/// The functions as start-up builds them (environment secrets, no storage, no external
/// systems), with the fuzz survey table. Built once per process.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // Set before the first secret read; nothing else in the process writes them.
        std::env::set_var("QUALTRICS_WEBHOOK_KEY", WEBHOOK_KEY);
        std::env::set_var("QUALTRICS_WEBHOOK_KEY_PREVIOUS", WEBHOOK_KEY_PREVIOUS);
        std::env::set_var("QUALTRICS_WORKFLOW_TOKEN", WORKFLOW_TOKEN);
        let bridge = BridgeConfig::parse(BRIDGE).expect("the fuzz survey table parses");
        let functions =
            Functions::build(&bridge, &Deps::for_tests()).expect("the fuzz functions build");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Harness {
            rt,
            bridge,
            functions,
        }
    })
}

fn run(function: Function, envelope: &[u8]) -> (u16, Vec<u8>) {
    let h = harness();
    let (status, body) = h.rt.block_on(startup::handle_invocation(
        &h.functions,
        function,
        "fuzz".into(),
        envelope,
    ));
    (status.as_u16(), body)
}

/// What the webhook answered, for the corpus replay's coverage check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookOutcome {
    /// `res.statusCode`.
    pub status: u16,
    /// Whether a ticket request was queued.
    pub queued: bool,
}

/// One fuzz input as an HTTP request to the webhook URL; see the module docs for the format.
pub fn webhook_delivery(data: &[u8]) -> WebhookOutcome {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let method = lines.next().unwrap_or("").trim().to_string();
    // The host's header dictionary is case-insensitive: one key per name (first spelling
    // kept), repeated headers as one array.
    let mut headers: Vec<(String, Vec<String>)> = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let value = value.trim().to_string();
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, values)) => values.push(value),
            None => headers.push((name.to_string(), vec![value])),
        }
    }
    let request = Request {
        method: method.clone(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v[0].clone()))
            .collect(),
        body: host_body(&headers, body),
    };
    let mut req = json!({
        "Url": "https://bridge.example.net/api/qualtrics/webhook?code=fuzz",
        "Method": method,
        "Query": {"code": "fuzz"},
        "Headers": headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<Map<_, _>>(),
        "Params": {},
    });
    if let Some(b) = &request.body {
        req["Body"] = json!(b);
    }
    let envelope = json!({"Data": {"req": req}, "Metadata": {}}).to_string();
    let (status, reply) = run(Function::QualtricsWebhook, envelope.as_bytes());
    assert_eq!(
        status, 200,
        "a well-formed HTTP envelope is a completed invocation"
    );
    check_webhook_reply(&reply, Some(&request))
}

/// `Body` as the host puts it in the envelope: absent when empty, base64 of the bytes for
/// octet-stream and multipart, else the bytes decoded as UTF-8 (BOM stripped, invalid
/// sequences as U+FFFD).
fn host_body(headers: &[(String, Vec<String>)], body: &[u8]) -> Option<String> {
    use base64::Engine;
    if body.is_empty() {
        return None;
    }
    let media = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v[0].to_ascii_lowercase())
        .unwrap_or_default();
    if media.starts_with("application/octet-stream") || media.contains("multipart") {
        return Some(base64::engine::general_purpose::STANDARD.encode(body));
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    Some(String::from_utf8_lossy(body).into_owned())
}

/// The request as the handler saw it: header names lower-cased, first value of each.
struct Request {
    method: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn media_type(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        let mt = ct.split(';').next()?.trim().to_ascii_lowercase();
        (!mt.is_empty()).then_some(mt)
    }

    /// The request from an envelope's `Data.req`, when its headers are unambiguous (the
    /// host never sends two spellings of one name; with them, which one the handler reads
    /// is not specified, so only the shape of the answer is checked).
    fn from_envelope(req: &Value) -> Option<Self> {
        let mut headers = Vec::new();
        for (name, value) in req.get("Headers")?.as_object()? {
            let name = name.to_ascii_lowercase();
            if headers.iter().any(|(n, _)| *n == name) {
                return None;
            }
            let first = match value {
                Value::String(s) => s.clone(),
                Value::Array(a) => a.first()?.as_str()?.to_string(),
                _ => return None,
            };
            headers.push((name, first));
        }
        Some(Self {
            method: req.get("Method")?.as_str()?.to_string(),
            headers,
            body: req.get("Body").and_then(Value::as_str).map(str::to_string),
        })
    }
}

fn mac_hex(key: &str, msg: &str) -> String {
    let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(key.as_bytes()).expect("any key");
    m.update(msg.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks one `QualtricsWebhook` reply. With the request known, also checks that whatever was
/// queued is backed by the request: a valid HMAC over `MSG` with ids from `MSG`, the workflow
/// token with ids from the JSON body, or an unsigned form for a survey that allows it.
fn check_webhook_reply(reply: &[u8], request: Option<&Request>) -> WebhookOutcome {
    let v = reply_object(reply);
    let outputs = v["Outputs"].as_object().expect("Outputs is an object");
    assert!(
        outputs.keys().all(|k| k == "res" || k == "tickets"),
        "only the res and tickets bindings are set: {v}"
    );
    let res = outputs.get("res").expect("res is always set");
    let status: u16 = res["statusCode"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("statusCode is a numeric string");
    assert_eq!(res["headers"], json!({"Content-Type": "application/json"}));
    let body: Value = serde_json::from_str(res["body"].as_str().expect("body is a string"))
        .expect("res.body is JSON");
    let tickets = outputs.get("tickets");
    let queued = tickets.is_some();
    match status {
        200 => assert_eq!(body, json!({"status": "ok"})),
        202 => {
            let want = if queued { "queued" } else { "ignored" };
            assert_eq!(body, json!({ "status": want }), "{v}");
        }
        400 | 401 | 405 | 413 | 415 => {
            let reason = body
                .as_object()
                .filter(|o| o.len() == 1)
                .and_then(|o| o.get("error"))
                .and_then(Value::as_str);
            assert!(
                reason.is_some_and(|r| !r.is_empty()),
                "a refusal is {{\"error\": reason}}: {body}"
            );
        }
        // Environment secrets never fail, so 503 (secrets unavailable) cannot happen here.
        other => panic!("unexpected webhook status {other}: {v}"),
    }
    assert!(
        !queued || status == 202,
        "only an accepted delivery queues: {v}"
    );
    let queued_request = tickets.map(|t| {
        let texts = t.as_array().expect("tickets is an array of texts");
        assert_eq!(texts.len(), 1, "one ticket request per delivery: {v}");
        let text = texts[0].as_str().expect("a message text");
        let r = TicketRequest::parse(text).expect("the queued text is a valid ticket request");
        assert_eq!(r.v, TicketRequest::VERSION);
        assert_eq!(r.source, RequestSource::Webhook);
        time::OffsetDateTime::parse(
            &r.received_at,
            &time::format_description::well_known::Rfc3339,
        )
        .expect("receivedAt is RFC 3339");
        let survey = harness().bridge.survey(&r.survey_id);
        assert!(
            survey.is_some_and(|s| s.tickets.is_some()),
            "queued only for a survey that raises tickets: {text}"
        );
        r
    });
    let logs = v["Logs"].to_string();
    if let Some(req) = request {
        check_against_request(req, status, queued_request.as_ref(), &logs);
    }
    WebhookOutcome { status, queued }
}

fn check_against_request(req: &Request, status: u16, queued: Option<&TicketRequest>, logs: &str) {
    if req.method.eq_ignore_ascii_case("GET") {
        assert_eq!(status, 200, "GET is answered 200");
        return;
    }
    if !req.method.eq_ignore_ascii_case("POST") {
        assert_eq!(status, 405, "only GET and POST are allowed");
        return;
    }
    let media = req.media_type();
    let form = media.as_deref() == Some("application/x-www-form-urlencoded");
    let json_body = media.as_deref() == Some("application/json");
    if !form && !json_body {
        assert!(matches!(status, 413 | 415), "not form or JSON: {status}");
    }
    // The secrets never reach the logs. Ids are logged, so a secret may show up there only
    // when the caller sent it.
    let sent = |secret: &str| {
        req.body.as_deref().is_some_and(|b| b.contains(secret))
            || req.headers.iter().any(|(_, v)| v.contains(secret))
    };
    for secret in [WEBHOOK_KEY, WEBHOOK_KEY_PREVIOUS, WORKFLOW_TOKEN] {
        assert!(
            sent(secret) || !logs.contains(secret),
            "a secret was logged: {logs}"
        );
    }
    let Some(q) = queued else { return };
    let body = req.body.as_deref().expect("a queued delivery had a body");
    if json_body {
        let presented = req
            .header("authorization")
            .and_then(|a| {
                let (scheme, token) = a.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .or_else(|| req.header("x-bridge-token").map(str::trim));
        assert_eq!(
            presented,
            Some(WORKFLOW_TOKEN),
            "workflow call queued without the token"
        );
        let b: Value = serde_json::from_str(body).expect("a queued workflow body is JSON");
        assert_eq!(b["surveyId"].as_str(), Some(q.survey_id.as_str()));
        assert_eq!(b["responseId"].as_str(), Some(q.response_id.as_str()));
        assert_eq!(q.topic, None);
        return;
    }
    assert!(form, "queued from a body that is neither form nor JSON");
    // An independent (lenient) form parser: where the handler's strict one accepted, both
    // must see the same fields.
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| {
        let mut it = fields.iter().filter(|(n, _)| n == name);
        let first = it.next().map(|(_, v)| v.as_str());
        assert!(
            it.next().is_none(),
            "{name} appears twice in a queued delivery"
        );
        first
    };
    if let Some(topic) = &q.topic {
        assert_eq!(
            Some(topic.as_str()),
            field("Topic"),
            "topic is the Topic field"
        );
    }
    match (field("MSG"), field("HMAC")) {
        (Some(msg), Some(hmac)) => {
            let hmac = hmac.to_ascii_lowercase();
            assert!(
                hmac == mac_hex(WEBHOOK_KEY, msg) || hmac == mac_hex(WEBHOOK_KEY_PREVIOUS, msg),
                "queued with an HMAC that no key produced"
            );
            let m: Value = serde_json::from_str(msg).expect("a queued MSG is JSON");
            assert_eq!(
                m["SurveyID"].as_str(),
                Some(q.survey_id.as_str()),
                "ids come from MSG"
            );
            assert_eq!(
                m["ResponseID"].as_str(),
                Some(q.response_id.as_str()),
                "ids come from MSG"
            );
            assert!(m.get("Status").is_none_or(|s| s == "Complete"));
        }
        (None, None) => {
            let survey = harness().bridge.survey(&q.survey_id);
            assert!(
                survey.is_some_and(|s| s.allow_unsigned),
                "unsigned form queued"
            );
            assert_eq!(field("SurveyID"), Some(q.survey_id.as_str()));
            assert_eq!(field("ResponseID"), Some(q.response_id.as_str()));
            assert!(field("Status").is_none_or(|s| s == "Complete"));
        }
        _ => panic!("queued a form with MSG or HMAC missing"),
    }
}

/// The host's reply object: `{"Outputs": {…}, "Logs": [text…], "ReturnValue": null}`.
fn reply_object(reply: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(reply).expect("the reply is JSON");
    let o = v
        .as_object()
        .expect("the reply is an object, never empty or null");
    assert_eq!(o.len(), 3, "Outputs, Logs and ReturnValue: {v}");
    assert!(o["Outputs"].is_object(), "{v}");
    assert!(o["ReturnValue"].is_null(), "{v}");
    let logs = o["Logs"].as_array().expect("Logs is an array");
    assert!(logs.iter().all(Value::is_string), "{v}");
    v
}

/// A failed invocation's body: `{"error": reason}`.
fn check_failure(body: &[u8]) {
    let v: Value = serde_json::from_slice(body).expect("a failure body is JSON");
    let reason = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("error"))
        .and_then(Value::as_str);
    assert!(reason.is_some_and(|r| !r.is_empty()), "{v}");
}

/// Which functions could decode an envelope, for the corpus replay's coverage check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvelopeOutcome {
    pub webhook: bool,
    pub tickets: bool,
    pub export: bool,
}

/// One fuzz input as the envelope of an invocation of each function.
pub fn envelope(data: &[u8]) -> EnvelopeOutcome {
    // Oracle for "is it JSON at all": UTF-8 text that follows the JSON grammar.
    let is_json = std::str::from_utf8(data)
        .is_ok_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok());
    // The envelope as a value, to check the answers against. `None` also for JSON that a
    // Rust string cannot hold (a lone surrogate escape such as `\ud800`), which the
    // handler accepts where it ignores the value.
    let parsed: Option<Value> = serde_json::from_slice(data).ok();

    let (status, reply) = run(Function::QualtricsWebhook, data);
    let webhook_ok = status == 200;
    if webhook_ok {
        let req = parsed.as_ref().and_then(|v| v.pointer("/Data/req"));
        let request = req.and_then(Request::from_envelope);
        check_webhook_reply(&reply, request.as_ref());
    } else {
        assert_eq!(
            status, 400,
            "a webhook invocation fails only on its envelope"
        );
        check_failure(&reply);
    }

    let (status, reply) = run(Function::TicketCreator, data);
    let tickets_ok = status != 400;
    let text = queue_text(parsed.as_ref());
    assert!(
        !tickets_ok || text.is_some() || parsed.is_none(),
        "decoded a queue message the oracle cannot find"
    );
    let ticketed = |r: &TicketRequest| {
        let survey = harness().bridge.survey(&r.survey_id);
        survey.is_some_and(|s| s.tickets.is_some())
    };
    match (status, text) {
        (200, Some(text)) => {
            let v = reply_object(&reply);
            match TicketRequest::parse(&text) {
                // An invalid request is dead-lettered byte-exact.
                Err(_) => assert_eq!(v["Outputs"], json!({ "deadletter": [text] })),
                // A valid one for a survey without tickets is skipped.
                Ok(r) => {
                    assert_eq!(v["Outputs"], json!({}));
                    assert!(!ticketed(&r), "a ticketed request was skipped");
                }
            }
        }
        // No ledger in the harness: a valid request for a ticketed survey is retried.
        (503, Some(text)) => {
            check_failure(&reply);
            let r = TicketRequest::parse(&text).expect("only a valid request is retried");
            assert!(ticketed(&r), "retried a request that raises no ticket");
        }
        (200, None) => {
            reply_object(&reply);
        }
        (400 | 503, _) => check_failure(&reply),
        (other, _) => panic!("unexpected TicketCreator status {other}"),
    }

    let (status, reply) = run(Function::ExportPoller, data);
    let export_ok = status == 200;
    if export_ok {
        // No survey is exported in the harness: nothing to do, nothing output.
        assert_eq!(reply_object(&reply)["Outputs"], json!({}));
    } else {
        assert_eq!(
            status, 400,
            "an export invocation fails only on its envelope here"
        );
        check_failure(&reply);
    }

    if !is_json {
        assert!(
            !webhook_ok && !tickets_ok && !export_ok,
            "not JSON, yet decoded"
        );
    }
    EnvelopeOutcome {
        webhook: webhook_ok,
        tickets: tickets_ok,
        export: export_ok,
    }
}

/// The message text of a queue envelope, decoded independently: `Data.request` is a JSON
/// string whose content is a JSON string literal of the text.
fn queue_text(envelope: Option<&Value>) -> Option<String> {
    let literal = envelope?.pointer("/Data/request")?.as_str()?;
    serde_json::from_str(literal).ok()
}
