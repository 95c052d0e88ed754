//! `qualtrics-bridge config check`: the resolved plan with secrets masked, and errors that
//! name file, line and field with exit code 2.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qualtrics-bridge");

fn check(env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    devkit::canary::record_command(env.iter().copied(), &stdout, &stderr);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn prints_the_plan_and_masks_secrets() {
    let key = storage_auth::DEV_ACCOUNT_KEY;
    let conn = format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;QueueEndpoint=http://127.0.0.1:2/devstoreaccount1;");
    let (code, out, err) = check(&[
        (
            "BRIDGE_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml"),
        ),
        ("AzureWebJobsStorage", &conn),
        ("QUALTRICS_WEBHOOK_KEY", "s3cr3t-webhook-key"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SV_22VlHYNeldrrrkp: export on"), "{out}");
    // Each survey's analytics policy: the sample's analytics survey allow-lists two keys.
    assert!(
        out.contains("analytics: no identity fields; embedded data Store, Region; free text kept"),
        "{out}"
    );
    assert!(
        out.contains("analytics-hash-key (ANALYTICS_HASH_KEY) missing"),
        "{out}"
    );
    assert!(
        out.contains("connection string for account devstoreaccount1 (key masked)"),
        "{out}"
    );
    assert!(
        out.contains("qualtrics-webhook-key (QUALTRICS_WEBHOOK_KEY) set"),
        "{out}"
    );
    assert!(out.contains("config check: ok"));
    for secret in [key, "s3cr3t-webhook-key"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "secret leaked"
        );
    }
}

#[test]
fn each_kind_of_error_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, wants) in [
        (
            "[[surveys]]\nid = \"SV_1\"\nexport = 3\n",
            &["line 3", "export"][..],
        ),
        (
            "[[surveys]]\nid = \"SV_1\"\n[surveys.tickets]\nsystem = \"jira\"\n",
            &["line 4", "jira"],
        ),
        (
            "[[surveys]]\nid = \"SV_1\"\ncolour = \"red\"\n",
            &["line 3", "colour"],
        ),
        ("[[surveys]]\nid = \"R_1\"\n", &["surveys[0].id"]),
        (
            "[[surveys]]\nid = \"SV_1\"\n[[surveys]]\nid = \"SV_1\"\n",
            &["surveys[1].id", "twice"],
        ),
        (
            "[[surveys]]\nid = \"SV_1\"\n[surveys.analytics]\nembedded = [\"ipAddress\"]\n",
            &["line 4", "surveys[0].analytics.embedded[0]", "identity"],
        ),
        (
            "\n[[pulses]]\nevent_type = \"incident.resolved\"\nsurvey = \"SV_1\"\nlibrary = \"UR_1\"\nmessage = \"MS_1\"\ndirectory = \"POOL_1\"\nmailing_list = \"POOL_2\"\n",
            &["line 8", "pulses[0].mailing_list", "CG_"],
        ),
    ] {
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, toml).unwrap();
        let (code, _, err) = check(&[("BRIDGE_CONFIG", path.to_str().unwrap())]);
        assert_eq!(code, 2, "{toml}");
        assert!(err.contains("bridge.toml"), "{err}");
        for w in wants {
            assert!(err.contains(w), "{toml}: missing {w:?} in {err}");
        }
    }
    let (code, _, err) = check(&[("BRIDGE_CONFIG", "/nonexistent/bridge.toml")]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/bridge.toml"), "{err}");
}

/// `config check` lists each `[[pulses]]` entry with its defaults filled in.
#[test]
fn pulses_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        "[[pulses]]\nevent_type = \"incident.resolved\"\nsurvey = \"SV_1\"\nlibrary = \"UR_1\"\nmessage = \"MS_1\"\ndirectory = \"POOL_1\"\nmailing_list = \"CG_1\"\nembedded_data = [\"severity\"]\n",
    )
    .unwrap();
    let (code, out, err) = check(&[("BRIDGE_CONFIG", path.to_str().unwrap())]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pulse incident.resolved: survey SV_1, message UR_1/MS_1, list POOL_1/CG_1, category incident.resolved, cool-down 336 h, at most 100 people, embedded data severity"),
        "{out}"
    );
}

/// A numeric setting that does not parse is refused (it used to fall back to the default
/// silently): exit 2, naming the setting and never echoing the value.
#[test]
fn unparsable_numbers_are_refused_naming_the_setting() {
    let bridge = concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml");
    for (name, value) in [
        ("EXPORT_TIME_BUDGET_SECONDS", "7m"),
        ("EXPORT_POLL_INTERVAL_MS", "-5"),
        ("EXPORT_MAX_TICKET_MESSAGES", "1e3"),
        ("EXPORT_THROTTLE_RETRIES", "99999999999"),
    ] {
        let (code, out, err) = check(&[("BRIDGE_CONFIG", bridge), (name, value)]);
        assert_eq!(code, 2, "{name}={value}: {out}{err}");
        assert!(err.contains(name), "{name}: {err}");
        assert!(!err.contains(value), "{name}: the value is echoed: {err}");
        assert!(!out.contains("config check: ok"), "{out}");
    }
    let (code, out, err) = check(&[
        ("BRIDGE_CONFIG", bridge),
        ("EXPORT_TIME_BUDGET_SECONDS", " 300 "),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("config check: ok"), "{out}");
}
