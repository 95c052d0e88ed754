//! `QualtricsWebhook` end to end: devkit's publisher POSTs through the local host's front door
//! (function key in `?code=`) to the real release binary; queue outputs land in Azurite.

use crate::common;

use common::Stack;
use devkit::publisher::{
    completed_msg, encode_form, sign, topic, workflow_body, Delivery, Order, Publisher, Reply,
    DEFAULT_BRAND,
};
use qualtrics_bridge::messages::{RequestSource, TicketRequest};

const KEY: &str = "whk-current-3f9a1c0e7d";
/// The previous key is the published vectors' key, so vector 2 is sent byte for byte.
const PREVIOUS_KEY: &str = "kyma4ever";
const TOKEN: &str = "wf-token-b81d2e44";
const SURVEY: &str = "SV_22VlHYNeldrrrkp";
const NO_TICKETS: &str = "SV_noTickets0001";
const UNSIGNED_OK: &str = "SV_unsignedOk001";
const QUEUE: &str = "ticket-requests";
const FREE_TEXT: &str = "respondent-free-text-7c1e";

const BRIDGE_TOML: &str = r#"
[[surveys]]
id = "SV_22VlHYNeldrrrkp"
[surveys.tickets]
system = "servicenow"

[[surveys]]
id = "SV_noTickets0001"

[[surveys]]
id = "SV_unsignedOk001"
allow_unsigned = true
[surveys.tickets]
system = "zendesk"
"#;

/// Kyma README vector 2: the full raw body, signed with `kyma4ever`.
const VECTOR_2_BODY: &str = "HMAC=5db5cd1e0200e9ce6831ea0f1924beb97f136939e367c53f5af8f7d79c6727af495cb90d6c744fe72ab45efd9f9f2ba7c15b13fdf6565af3d5a4f50ed2c0c7d4&MSG=%7B%22Status%22%3A%22Complete%22%2C%22SurveyID%22%3A%22SV_22VlHYNeldrrrkp%22%2C%22ResponseID%22%3A%22R_1l9mcVuXubb4aGm%22%2C%22CompletedDate%22%3A%222019-06-26%2013%3A28%3A11%22%2C%22BrandID%22%3A%22sapdevelopment%22%7D&Topic=sapdevelopment.surveyengine.completedResponse.SV_22VlHYNeldrrrkp";

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// The test stack (Azurite, the release binary behind the local host) with the webhook's
/// keys and surveys — and without `TicketCreator`, so the `ticket-requests` queue holds
/// exactly what the webhook put there (a consumer would race every "nothing queued" check).
async fn stack() -> Stack {
    common::StackBuilder::default()
        .bridge_toml(BRIDGE_TOML)
        .without_function("TicketCreator")
        .setting("QUALTRICS_WEBHOOK_KEY", KEY)
        .setting("QUALTRICS_WEBHOOK_KEY_PREVIOUS", PREVIOUS_KEY)
        .setting("QUALTRICS_WORKFLOW_TOKEN", TOKEN)
        .start()
        .await
}

fn assert_contract_message(text: &str, survey: &str, response: &str, topic: Option<&str>) {
    let v: serde_json::Value = serde_json::from_str(text).expect("message is JSON");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec!["v", "surveyId", "responseId", "source", "receivedAt"];
    if topic.is_some() {
        want.push("topic");
    }
    let (mut k, mut w) = (keys.clone(), want.clone());
    k.sort();
    w.sort();
    assert_eq!(k, w, "{text}");
    let r = TicketRequest::parse(text).expect("DESIGN's ticket request");
    assert_eq!(r.to_text(), text, "the queued text is the canonical form");
    assert_eq!(r.v, 1);
    assert_eq!(r.source, RequestSource::Webhook);
    assert_eq!(
        (r.survey_id.as_str(), r.response_id.as_str()),
        (survey, response)
    );
    assert_eq!(r.topic.as_deref(), topic);
    let at = time::OffsetDateTime::parse(
        &r.received_at,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("receivedAt is RFC 3339");
    assert!(
        r.received_at.ends_with('Z') && at.offset().is_utc(),
        "{}",
        r.received_at
    );
    let age = time::OffsetDateTime::now_utc() - at;
    assert!(
        age.whole_seconds().abs() < 120,
        "receivedAt is now: {}",
        r.received_at
    );
}

fn response_ids(texts: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = texts
        .iter()
        .map(|t| TicketRequest::parse(t).expect("valid").response_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_delivery_queues_one_contract_message_and_rotation_keys_work() {
    let stack = stack().await;
    let publisher = Publisher::new(stack.webhook_url());

    // Qualtrics' URL check.
    let r = publisher.get().await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // One signed delivery → 202 and exactly one contract message.
    let d = Delivery::signed(KEY, SURVEY, "R_e2eSigned0001");
    let r = publisher.deliver(&d).await.unwrap();
    assert_eq!(r.status, 202, "{r:?}");
    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    let t = topic(DEFAULT_BRAND, SURVEY);
    assert_contract_message(&texts[0], SURVEY, "R_e2eSigned0001", Some(&t));

    // Rotation: vector 2, byte for byte, signed with the previous key.
    let r = publisher
        .post(Some(FORM), &[], VECTOR_2_BODY)
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{r:?}");
    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(texts.len(), 2);
    assert_contract_message(
        &texts[1],
        SURVEY,
        "R_1l9mcVuXubb4aGm",
        Some("sapdevelopment.surveyengine.completedResponse.SV_22VlHYNeldrrrkp"),
    );

    // Workflow web-service calls, both header forms.
    assert_eq!(
        publisher
            .workflow_bearer(TOKEN, SURVEY, "R_e2eWorkflow001")
            .await
            .unwrap()
            .status,
        202
    );
    assert_eq!(
        publisher
            .workflow_header(TOKEN, SURVEY, "R_e2eWorkflow002")
            .await
            .unwrap()
            .status,
        202
    );
    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(texts.len(), 4);
    assert_contract_message(&texts[2], SURVEY, "R_e2eWorkflow001", None);

    // Unsigned flat form for the one survey that allows it: accepted, logged unauthenticated.
    let r = publisher
        .post(
            Some(FORM),
            &[],
            devkit::publisher::flat_form(UNSIGNED_OK, "R_e2eUnsigned01"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{r:?}");
    assert!(stack.host.records().iter().any(|rec| rec
        .logs
        .iter()
        .any(|l| l.contains("R_e2eUnsigned01") && l.contains("unauthenticated"))));

    // Duplicates and reordering: every delivery is accepted and queued (dedupe is the ledger's job).
    let batch = [
        Delivery::signed(KEY, SURVEY, "R_e2eBatch00001"),
        Delivery::signed(PREVIOUS_KEY, SURVEY, "R_e2eBatch00002"),
    ];
    let replies = publisher
        .deliver_all(&batch, 1, Order::Shuffled(42))
        .await
        .unwrap();
    assert_eq!(replies.len(), 4);
    assert!(replies.iter().all(|(_, r)| r.status == 202), "{replies:?}");

    // Known survey without tickets, unknown survey: 202 and nothing queued.
    for survey in [NO_TICKETS, "SV_unknownSurvey1"] {
        let r = publisher
            .deliver(&Delivery::signed(KEY, survey, "R_e2eIgnored001"))
            .await
            .unwrap();
        assert_eq!(r.status, 202, "{r:?}");
    }

    let texts = stack.queue_texts(QUEUE).await;
    assert_eq!(
        response_ids(&texts),
        vec![
            "R_1l9mcVuXubb4aGm",
            "R_e2eBatch00001",
            "R_e2eBatch00001",
            "R_e2eBatch00002",
            "R_e2eBatch00002",
            "R_e2eSigned0001",
            "R_e2eUnsigned01",
            "R_e2eWorkflow001",
            "R_e2eWorkflow002",
        ]
    );
    // Every webhook invocation completed (the host never saw a failure) and logged a summary.
    let recs: Vec<_> = stack
        .host
        .records()
        .into_iter()
        .filter(|r| r.function == "QualtricsWebhook")
        .collect();
    assert!(
        recs.iter().all(|r| r.outcome.is_ok() && r.logs.len() == 1),
        "{recs:?}"
    );
    stack.assert_no_violations();
}

/// One row of the hostile table.
enum Send {
    /// A form body with `Content-Type: application/x-www-form-urlencoded`.
    Form(String),
    /// Any content type (or none), extra headers, raw bytes, with `Content-Length`.
    Raw(Option<&'static str>, Vec<(&'static str, String)>, Vec<u8>),
    /// Chunked, without `Content-Length`.
    Chunked(&'static str, Vec<u8>),
}

async fn send(p: &Publisher, s: &Send) -> Reply {
    match s {
        Send::Form(body) => p.post(Some(FORM), &[], body.clone()).await,
        Send::Raw(ct, headers, body) => {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            p.post(*ct, &h, body.clone()).await
        }
        Send::Chunked(ct, body) => p.post_chunked(ct, body.clone()).await,
    }
    .expect("the front door answers")
}

fn form3(topic: &str, msg: &str, hmac: &str) -> String {
    encode_form(&[("Topic", topic), ("MSG", msg), ("HMAC", hmac)])
}

fn signed_form(key: &str, msg: &str) -> String {
    form3(&topic(DEFAULT_BRAND, SURVEY), msg, &sign(key, msg))
}

fn bearer(t: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {t}"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_malformed_deliveries_are_refused_and_nothing_is_queued() {
    let stack = stack().await;
    let p = Publisher::new(stack.webhook_url());
    let t = topic(DEFAULT_BRAND, SURVEY);
    let msg = completed_msg(SURVEY, "R_hostile000001");
    let good_hmac = sign(KEY, &msg);
    let good_form = signed_form(KEY, &msg);
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&msg).unwrap())
            .unwrap();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let padded = |n: usize| format!("{good_form}&Pad={}", "x".repeat(n));
    let wf = workflow_body(SURVEY, "R_hostile000002");

    let rows: Vec<(&str, Send, u16)> = vec![
        // --- signature
        ("wrong key", Send::Form(signed_form("not-the-key", &msg)), 401),
        ("key with a trailing newline", Send::Form(signed_form(&format!("{KEY}\n"), &msg)), 401),
        ("workflow token used as HMAC key", Send::Form(signed_form(TOKEN, &msg)), 401),
        ("truncated HMAC (127 digits)", Send::Form(form3(&t, &msg, &good_hmac[..127])), 401),
        ("HMAC cut to SHA-256 length", Send::Form(form3(&t, &msg, &good_hmac[..64])), 401),
        ("HMAC with two extra digits", Send::Form(form3(&t, &msg, &format!("{good_hmac}00"))), 401),
        ("HMAC of another MSG", Send::Form(form3(&t, &msg, &sign(KEY, &completed_msg(SURVEY, "R_other00000001")))), 401),
        ("non-hex HMAC", Send::Form(form3(&t, &msg, &format!("{}zz", &good_hmac[..126]))), 401),
        ("base64 HMAC", Send::Form(form3(&t, &msg, "wsWFpATCOaowY7RizDNVHT7T7S3giZ9Y1Fb8Dvfr728800RJV5ib0FkmA+Qe3elSj32e0J7hKL9xmqEvRuXFmA==")), 401),
        ("sha512= prefixed HMAC", Send::Form(form3(&t, &msg, &format!("sha512={good_hmac}"))), 401),
        ("HMAC over compact JSON, MSG re-serialised pretty", Send::Form(form3(&t, &pretty, &good_hmac)), 401),
        ("MSG with one id changed after signing", Send::Form(form3(&t, &msg.replace("R_hostile000001", "R_hostile000009"), &good_hmac)), 401),
        ("MSG with a trailing space after signing", Send::Form(form3(&t, &format!("{msg} "), &good_hmac)), 401),
        ("missing HMAC", Send::Form(encode_form(&[("Topic", &t), ("MSG", &msg)])), 401),
        ("empty HMAC", Send::Form(form3(&t, &msg, "")), 401),
        ("signature in a header, not the form", Send::Raw(Some(FORM), vec![("x-qualtrics-signature", good_hmac.clone())], encode_form(&[("Topic", &t), ("MSG", &msg)]).into_bytes()), 401),
        ("lower-case field names", Send::Form(encode_form(&[("topic", &t), ("msg", &msg), ("hmac", &good_hmac)])), 400),
        ("HMAC without MSG", Send::Form(encode_form(&[("Topic", &t), ("HMAC", &good_hmac)])), 400),
        // --- field structure
        ("duplicate HMAC field", Send::Form(format!("{good_form}&HMAC={good_hmac}")), 400),
        ("duplicate MSG field", Send::Form(format!("{good_form}&{}", encode_form(&[("MSG", &msg)]))), 400),
        ("duplicate MSG, second one different", Send::Form(format!("{good_form}&{}", encode_form(&[("MSG", &completed_msg(SURVEY, "R_x"))]))), 400),
        ("malformed percent escape", Send::Form(format!("{good_form}&Topic2=1&MSG%=x")), 400),
        ("percent-encoded invalid UTF-8 in MSG", Send::Form(form3(&t, "x", "y").replace("MSG=x", "MSG=%FF%FE")), 400),
        ("too many fields", Send::Form(format!("{good_form}{}", "&a=1".repeat(80))), 400),
        ("only a Topic", Send::Form(encode_form(&[("Topic", &t)])), 400),
        ("unrelated fields", Send::Form("name=x&value=y".into()), 400),
        // --- MSG content (correctly signed, so only the parse can refuse it)
        ("MSG not JSON", Send::Form(signed_form(KEY, "hello")), 400),
        ("MSG a JSON array", Send::Form(signed_form(KEY, "[1,2]")), 400),
        ("ids only in Topic", Send::Form(signed_form(KEY, r#"{"Status":"Complete"}"#)), 400),
        ("numeric SurveyID", Send::Form(signed_form(KEY, r#"{"Status":"Complete","SurveyID":5,"ResponseID":"R_1"}"#)), 400),
        ("path-like SurveyID", Send::Form(signed_form(KEY, r#"{"Status":"Complete","SurveyID":"SV_1/../x","ResponseID":"R_1"}"#)), 400),
        ("duplicate SurveyID key in MSG", Send::Form(signed_form(KEY, &format!(r#"{{"SurveyID":"SV_unknownSurvey1","SurveyID":"{SURVEY}","ResponseID":"R_1"}}"#))), 400),
        ("BOM inside MSG", Send::Form(signed_form(KEY, &format!("\u{feff}{msg}"))), 400),
        ("NUL inside MSG", Send::Form(signed_form(KEY, &format!("{msg}\0"))), 400),
        ("JSON nested 5000 deep", Send::Form(signed_form(KEY, &deep)), 400),
        ("camelCase ids in MSG", Send::Form(signed_form(KEY, r#"{"Status":"Complete","surveyId":"SV_22VlHYNeldrrrkp","responseId":"R_1"}"#)), 400),
        // --- transport
        ("empty body", Send::Raw(Some(FORM), vec![], vec![]), 400),
        ("chunked, no Content-Length", Send::Chunked(FORM, good_form.clone().into_bytes()), 400),
        ("invalid UTF-8 bytes", Send::Raw(Some(FORM), vec![], [good_form.as_bytes(), b"&x=\xff\xfe"].concat()), 400),
        ("UTF-16LE body without BOM", Send::Raw(Some(FORM), vec![], good_form.encode_utf16().flat_map(u16::to_le_bytes).collect()), 400),
        ("missing Content-Type", Send::Raw(None, vec![], good_form.clone().into_bytes()), 415),
        ("text/plain", Send::Raw(Some("text/plain"), vec![], good_form.clone().into_bytes()), 415),
        ("octet-stream", Send::Raw(Some("application/octet-stream"), vec![], good_form.clone().into_bytes()), 415),
        ("multipart", Send::Raw(Some("multipart/form-data; boundary=x"), vec![], good_form.clone().into_bytes()), 415),
        ("XML", Send::Raw(Some("application/xml"), vec![], b"<x/>".to_vec()), 415),
        ("1 MB body", Send::Form(padded(1024 * 1024)), 413),
        ("just over 100 KB", Send::Form(padded(100 * 1024)), 413),
        // --- unsigned flat forms
        ("flat form, survey does not allow unsigned", Send::Form(devkit::publisher::flat_form(SURVEY, "R_hostile000003")), 401),
        ("flat form, unknown survey", Send::Form(devkit::publisher::flat_form("SV_unknownSurvey1", "R_hostile000003")), 401),
        ("flat form, SurveyID only", Send::Form(encode_form(&[("SurveyID", UNSIGNED_OK)])), 400),
        ("flat form, bad ResponseID", Send::Form(encode_form(&[("SurveyID", UNSIGNED_OK), ("ResponseID", "1 OR 1=1")])), 400),
        // --- workflow JSON
        ("workflow, wrong token", Send::Raw(Some(JSON), bearer("wf-token-b81d2e45"), wf.clone().into_bytes()), 401),
        ("workflow, token prefix", Send::Raw(Some(JSON), bearer(&TOKEN[..10]), wf.clone().into_bytes()), 401),
        ("workflow, no token", Send::Raw(Some(JSON), vec![], wf.clone().into_bytes()), 401),
        ("workflow, token in the wrong header", Send::Raw(Some(JSON), vec![("x-api-key", TOKEN.into())], wf.clone().into_bytes()), 401),
        ("workflow, Basic instead of Bearer", Send::Raw(Some(JSON), vec![("authorization", format!("Basic {TOKEN}"))], wf.clone().into_bytes()), 401),
        ("workflow, webhook key as token", Send::Raw(Some(JSON), bearer(KEY), wf.clone().into_bytes()), 401),
        ("JSON with Qualtrics fields, no token", Send::Raw(Some(JSON), vec![], serde_json::json!({"MSG": msg, "HMAC": good_hmac}).to_string().into_bytes()), 401),
        ("workflow, malformed JSON", Send::Raw(Some(JSON), bearer(TOKEN), b"{\"surveyId\":".to_vec()), 400),
        ("workflow, form body labelled JSON", Send::Raw(Some(JSON), bearer(TOKEN), good_form.clone().into_bytes()), 400),
        ("workflow, missing responseId", Send::Raw(Some(JSON), bearer(TOKEN), format!(r#"{{"surveyId":"{SURVEY}"}}"#).into_bytes()), 400),
        ("workflow, duplicate responseId", Send::Raw(Some(JSON), bearer(TOKEN), format!(r#"{{"surveyId":"{SURVEY}","responseId":"R_1","responseId":"R_2"}}"#).into_bytes()), 400),
        ("workflow, unreplaced piped text", Send::Raw(Some(JSON), bearer(TOKEN), format!(r#"{{"surveyId":"{SURVEY}","responseId":"${{e://Field/ResponseID}}"}}"#).into_bytes()), 400),
        // --- verified, but nothing to do: 202 and nothing queued
        ("signed, unknown survey", Send::Form(signed_form(KEY, &completed_msg("SV_unknownSurvey1", "R_hostile000004"))), 202),
        ("signed, survey without tickets", Send::Form(signed_form(KEY, &completed_msg(NO_TICKETS, "R_hostile000005"))), 202),
        ("signed, Status not Complete", Send::Form(signed_form(KEY, &msg.replace("\"Complete\"", "\"Partial\""))), 202),
    ];
    assert!(rows.len() >= 40, "{} rows", rows.len());

    let mut failures = Vec::new();
    for (name, s, want) in &rows {
        let r = send(&p, s).await;
        let queued = stack.queue_texts(QUEUE).await.len();
        let body: Option<serde_json::Value> = serde_json::from_str(&r.body).ok();
        let has_reason = body
            .as_ref()
            .and_then(|b| b.get(if *want == 202 { "status" } else { "error" }))
            .is_some_and(|v| v.is_string());
        if r.status != *want || queued != 0 || !has_reason {
            failures.push(format!(
                "{name}: status {} (want {want}), queued {queued}, body {:?}",
                r.status, r.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // Tolerated variants: each is accepted and queues exactly one message.
    let tolerated: Vec<(&str, Send, &str)> = vec![
        (
            "upper-case hex HMAC",
            Send::Form(form3(
                &t,
                &completed_msg(SURVEY, "R_tolerated00001"),
                &sign(KEY, &completed_msg(SURVEY, "R_tolerated00001")).to_uppercase(),
            )),
            "R_tolerated00001",
        ),
        (
            "fields reordered, extra fields",
            Send::Form(format!(
                "BrandID=b&{}&x=%zz",
                Delivery::signed(KEY, SURVEY, "R_tolerated00002")
                    .with_order(["MSG", "HMAC", "Topic"])
                    .body()
            )),
            "R_tolerated00002",
        ),
        (
            "UTF-8 BOM before the body (the host strips it)",
            Send::Raw(
                Some(FORM),
                vec![],
                [
                    &[0xEF, 0xBB, 0xBF][..],
                    Delivery::signed(KEY, SURVEY, "R_tolerated00003")
                        .body()
                        .as_bytes(),
                ]
                .concat(),
            ),
            "R_tolerated00003",
        ),
        (
            "UTF-16LE with BOM (the host transcodes it)",
            Send::Raw(
                Some(FORM),
                vec![],
                [
                    &[0xFF, 0xFE][..],
                    &Delivery::signed(KEY, SURVEY, "R_tolerated00007")
                        .body()
                        .encode_utf16()
                        .flat_map(u16::to_le_bytes)
                        .collect::<Vec<u8>>(),
                ]
                .concat(),
            ),
            "R_tolerated00007",
        ),
        (
            "charset parameter",
            Send::Raw(
                Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
                vec![],
                Delivery::signed(KEY, SURVEY, "R_tolerated00004")
                    .body()
                    .into_bytes(),
            ),
            "R_tolerated00004",
        ),
        (
            "oversized Topic is dropped, not trusted",
            Send::Form(form3(
                &"T".repeat(1000),
                &completed_msg(SURVEY, "R_tolerated00005"),
                &sign(KEY, &completed_msg(SURVEY, "R_tolerated00005")),
            )),
            "R_tolerated00005",
        ),
        (
            "free text in MSG",
            Send::Form(signed_form(
                KEY,
                &format!(
                    r#"{{"Status":"Complete","SurveyID":"{SURVEY}","ResponseID":"R_tolerated00006","Comment":"{FREE_TEXT}"}}"#
                ),
            )),
            "R_tolerated00006",
        ),
    ];
    let mut expected = Vec::new();
    for (name, s, response) in &tolerated {
        let r = send(&p, s).await;
        assert_eq!(r.status, 202, "{name}: {r:?}");
        expected.push(response.to_string());
        let texts = stack.queue_texts(QUEUE).await;
        assert_eq!(
            response_ids(&texts),
            {
                let mut e = expected.clone();
                e.sort();
                e
            },
            "{name}"
        );
    }
    let texts = stack.queue_texts(QUEUE).await;
    let long_topic = texts
        .iter()
        .find(|t| t.contains("R_tolerated00005"))
        .unwrap();
    assert!(TicketRequest::parse(long_topic).unwrap().topic.is_none());

    // Nothing secret or free-text reached the logs.
    let out = stack.host.handler_output().join("\n");
    let logs: String = stack
        .host
        .records()
        .iter()
        .flat_map(|r| r.logs.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [KEY, PREVIOUS_KEY, TOKEN, FREE_TEXT, &good_hmac[..32]] {
        assert!(
            !out.contains(needle) && !logs.contains(needle),
            "{needle:?} leaked into the logs"
        );
    }
    // Every refusal was an answered invocation, never a failed one or a hang.
    assert!(stack
        .host
        .records()
        .iter()
        .filter(|r| r.function == "QualtricsWebhook")
        .all(|r| r.outcome.is_ok()));
    stack.assert_no_violations();
}
