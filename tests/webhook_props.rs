//! Property tests of webhook verification: any change to a signed `MSG` is refused, and no
//! input — arbitrary bytes, any media type, any headers — panics or is queued unverified.

use proptest::prelude::*;
use qualtrics_bridge::config::BridgeConfig;
use qualtrics_bridge::deps::Deps;
use qualtrics_bridge::functions::{Function, Functions};
use qualtrics_bridge::host::{Envelope, Invocation};
use qualtrics_bridge::webhook::verify;
use serde_json::{json, Value};

const KEY: &str = "prop-key-5d1f";

fn msg(survey: &str, response: &str, extra: &str) -> String {
    format!(
        r#"{{"Status":"Complete","SurveyID":"{survey}","ResponseID":"{response}","Comment":{}}}"#,
        json!(extra)
    )
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn apply(original: &[u8], edit: &Edit) -> Vec<u8> {
    let mut m = original.to_vec();
    match *edit {
        Edit::Flip(i, bit) => {
            let i = i % m.len();
            m[i] ^= 1 << (bit % 8);
        }
        Edit::Insert(i, b) => m.insert(i % (m.len() + 1), b),
        Edit::Delete(i) => {
            m.remove(i % m.len());
        }
    }
    m
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

/// The functions as start-up builds them (no settings), with a test survey table; shared by
/// every case.
fn app() -> &'static Functions {
    static APP: std::sync::OnceLock<Functions> = std::sync::OnceLock::new();
    APP.get_or_init(|| {
        let bridge = BridgeConfig::parse(
            "[[surveys]]\nid = \"SV_1\"\nallow_unsigned = false\n[surveys.tickets]\nsystem = \"servicenow\"\n",
        )
        .unwrap();
        Functions::build(&bridge, &Deps::for_tests()).expect("the functions build")
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one POST through the function and returns (status, queued messages).
fn invoke(
    rt: &tokio::runtime::Runtime,
    app: &Functions,
    headers: Value,
    body: Option<String>,
) -> (u16, usize) {
    std::env::set_var("QUALTRICS_WEBHOOK_KEY", KEY);
    std::env::set_var("QUALTRICS_WORKFLOW_TOKEN", "prop-token");
    let mut req = json!({"Url": "http://x/api/qualtrics/events?code=k", "Method": "POST", "Headers": headers});
    if let Some(b) = body {
        req["Body"] = Value::String(b);
    }
    let bytes = json!({"Data": {"req": req}, "Metadata": {}})
        .to_string()
        .into_bytes();
    let envelope = Envelope::parse(&bytes).unwrap();
    let reply = rt
        .block_on(app.invoke(
            Function::QualtricsWebhook,
            &Invocation {
                id: "prop".into(),
                function: Function::QualtricsWebhook.spec(),
            },
            envelope,
        ))
        .expect("an HTTP reply, never a failed invocation");
    let v: Value = serde_json::from_slice(&reply.to_json()).unwrap();
    let status: u16 = v["Outputs"]["res"]["statusCode"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let queued = v["Outputs"]
        .get("tickets")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    (status, queued)
}

fn form(m: &str, hmac: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Topic", "b.surveyengine.completedResponse.SV_1")
        .append_pair("MSG", m)
        .append_pair("HMAC", hmac)
        .finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Flipping, inserting or deleting any one byte of a signed MSG breaks the signature.
    #[test]
    fn any_change_to_a_signed_msg_is_refused(
        response in "R_[a-zA-Z0-9]{1,20}",
        extra in any::<String>(),
        e in edit(),
    ) {
        let original = msg("SV_1", &response, &extra);
        // Signed by devkit's RustCrypto signer, independent of the handler's `verify::sign`.
        let sig = devkit::publisher::sign(KEY, &original);
        prop_assert_eq!(verify::verify_hmac(original.as_bytes(), &sig, &[verify::HmacKey::new(KEY.as_bytes())]), Ok(0));
        let changed = apply(original.as_bytes(), &e);
        prop_assume!(changed != original.as_bytes());
        prop_assert!(verify::verify_hmac(&changed, &sig, &[verify::HmacKey::new(KEY.as_bytes())]).is_err());
    }

    /// The same through the function: a changed MSG (still valid UTF-8) is a 4xx, nothing queued.
    #[test]
    fn changed_msg_is_refused_end_to_end(response in "R_[a-zA-Z0-9]{1,20}", extra in "[ -~]{0,40}", e in edit()) {
        let (rt, app) = (rt(), app());
        let original = msg("SV_1", &response, &extra);
        let sig = devkit::publisher::sign(KEY, &original);
        let headers = json!({"Content-Type": ["application/x-www-form-urlencoded"]});
        prop_assert_eq!(invoke(&rt, app, headers.clone(), Some(form(&original, &sig))), (202, 1));
        let changed = apply(original.as_bytes(), &e);
        prop_assume!(changed != original.as_bytes());
        if let Ok(changed) = String::from_utf8(changed) {
            let (status, queued) = invoke(&rt, app, headers, Some(form(&changed, &sig)));
            prop_assert!((400..500).contains(&status), "status {}", status);
            prop_assert_eq!(queued, 0);
        }
    }

    /// Arbitrary bytes, as the host would deliver them (lossy text or base64), under any of
    /// the interesting media types and auth headers: never a panic, never a 5xx, never queued.
    #[test]
    fn arbitrary_bodies_never_panic_or_queue(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ct in prop_oneof![
            Just(None),
            Just(Some("application/x-www-form-urlencoded".to_string())),
            Just(Some("application/json".to_string())),
            Just(Some("application/octet-stream".to_string())),
            Just(Some("text/plain".to_string())),
            "[ -~]{0,30}".prop_map(Some),
        ],
        auth in prop_oneof![Just(None), Just(Some("Bearer wrong".to_string())), "[ -~]{0,30}".prop_map(Some)],
    ) {
        let (rt, app) = (rt(), app());
        let mut headers = serde_json::Map::new();
        if let Some(ct) = &ct {
            headers.insert("Content-Type".into(), json!([ct]));
        }
        if let Some(a) = auth {
            headers.insert("Authorization".into(), json!([a]));
        }
        let body = if ct.as_deref() == Some("application/octet-stream") {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let (status, queued) = invoke(&rt, app, Value::Object(headers), (!bytes.is_empty()).then_some(body));
        prop_assert!((400..500).contains(&status), "status {}", status);
        prop_assert_eq!(queued, 0);
    }

    /// Arbitrary text as each form field of an otherwise well-shaped delivery.
    #[test]
    fn arbitrary_form_fields_never_panic_or_queue(topic in any::<String>(), m in any::<String>(), hmac in any::<String>()) {
        let (rt, app) = (rt(), app());
        let headers = json!({"Content-Type": ["application/x-www-form-urlencoded"]});
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Topic", &topic).append_pair("MSG", &m).append_pair("HMAC", &hmac).finish();
        let (status, queued) = invoke(&rt, app, headers, Some(body));
        prop_assert!((400..500).contains(&status), "status {}", status);
        prop_assert_eq!(queued, 0);
    }

    /// The pure parsers accept any string without panicking. Deliberately without an
    /// assertion: the property is totality (a panic fails the case), and what each parser
    /// returns is pinned by the unit tests in `src/webhook/verify.rs`.
    #[test]
    fn parsers_total(s in any::<String>()) {
        let _ = verify::parse_form(&s);
        let _ = verify::parse_msg(&s);
        let _ = verify::parse_workflow(&s);
        let _ = verify::decode_hmac_hex(&s);
        let _ = verify::bearer(&s);
        let _ = verify::form_decode(&s);
    }
}
