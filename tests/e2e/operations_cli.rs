//! `qualtrics-bridge subscriptions sync` and `qualtrics-bridge export` (backfill): the real
//! release binary as a subprocess, against devkit's fake Qualtrics and real Azurite.

use crate::common;

use common::StackBuilder;
use devkit::azurite::Azurite;
use devkit::fakes::qualtrics::{Call, FakeQualtrics, FakeSubscription};
use qualtrics_bridge::storage::Storage;
use std::collections::BTreeMap;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_qualtrics-bridge");
const TOKEN: &str = "fake-qualtrics-token-ops";
const WEBHOOK_KEY: &str = "ops-webhook-key-current";
const FN_KEY: &str = "fn-key-ops-1";
const OTHER: &str = "https://elsewhere.example.org/hooks/qualtrics";
const EXPORTS: &str = "qualtrics-exports";

fn our_url() -> String {
    format!("http://127.0.0.1:7071/api/qualtrics/events?code={FN_KEY}")
}

fn topic(sid: &str) -> String {
    format!("surveyengine.completedResponse.{sid}")
}

fn bridge_toml(dir: &tempfile::TempDir, surveys: &[&str]) -> String {
    let text: String = surveys
        .iter()
        .map(|s| format!("[[surveys]]\nid = \"{s}\"\nexport = true\n"))
        .collect();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

struct Output {
    code: i32,
    out: String,
    err: String,
}

/// Runs the binary with exactly `env` (nothing inherited).
async fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run binary");
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    devkit::canary::record_command(env.iter().copied(), &o.out, &o.err);
    for secret in [WEBHOOK_KEY, FN_KEY, TOKEN] {
        assert!(
            !o.out.contains(secret) && !o.err.contains(secret),
            "a secret reached the output of {args:?}"
        );
    }
    o
}

async fn sync(fake: &FakeQualtrics, config: &str, key: &str, extra: &[&str]) -> Output {
    let url = our_url();
    let mut args = vec!["subscriptions", "sync", "--url", &url];
    args.extend_from_slice(extra);
    run(
        &[
            ("QUALTRICS_BASE_URL", &fake.base_url),
            ("QUALTRICS_API_TOKEN", TOKEN),
            ("QUALTRICS_WEBHOOK_KEY", key),
            ("BRIDGE_CONFIG", config),
        ],
        &args,
    )
    .await
}

/// The calls that change subscriptions, in order.
fn changes(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .filter(|c| c.path.starts_with("/API/v3/eventsubscriptions") && c.method != "GET")
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect()
}

fn is_ours(s: &FakeSubscription) -> bool {
    s.publication_url
        .to_ascii_lowercase()
        .contains("/api/qualtrics/events")
}

fn ours(fake: &FakeQualtrics) -> Vec<FakeSubscription> {
    fake.subscriptions().into_iter().filter(is_ours).collect()
}

fn foreign(fake: &FakeQualtrics) -> Vec<FakeSubscription> {
    fake.subscriptions()
        .into_iter()
        .filter(|s| !is_ours(s))
        .collect()
}

/// A brand with two pages' worth of foreign subscriptions around ours.
fn seed(fake: &FakeQualtrics) -> BTreeMap<&'static str, String> {
    fake.set_subscription_page_size(2);
    let url = our_url();
    let mut ids = BTreeMap::new();
    ids.insert("foreign_b", fake.seed_subscription(&topic("SV_b"), OTHER));
    ids.insert("a", fake.seed_subscription(&topic("SV_a"), &url));
    ids.insert("foreign_all", fake.seed_subscription("*", OTHER));
    // Same host, another path: not ours either.
    ids.insert(
        "foreign_path",
        fake.seed_subscription(&topic("SV_gone"), "http://127.0.0.1:7071/api/other"),
    );
    ids.insert("a_dup", fake.seed_subscription(&topic("SV_a"), &url));
    // Last page, and written differently: still ours.
    ids.insert(
        "gone",
        fake.seed_subscription(
            &topic("SV_gone"),
            &format!("HTTP://127.0.0.1:7071/api/qualtrics/events/?code={FN_KEY}"),
        ),
    );
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_creates_the_missing_removes_stale_and_duplicates_then_changes_nothing() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a", "SV_b", "SV_c"]);
    let ids = seed(&fake);
    let foreign_before = foreign(&fake);

    let o = sync(&fake, &config, WEBHOOK_KEY, &[]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let calls = fake.calls();
    // Every page was read: 6 subscriptions, 2 per page.
    let lists: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == "GET")
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(
        lists,
        [
            "/API/v3/eventsubscriptions",
            "/API/v3/eventsubscriptions?offset=2",
            "/API/v3/eventsubscriptions?offset=4"
        ]
    );
    let ch = changes(&calls);
    let post = ("POST".to_string(), "/API/v3/eventsubscriptions".to_string());
    let del = |k: &str| {
        (
            "DELETE".to_string(),
            format!("/API/v3/eventsubscriptions/{}", ids[k]),
        )
    };
    assert_eq!(
        ch,
        vec![post.clone(), post, del("gone"), del("a_dup")],
        "exactly the missing two created, then the stale and the duplicate deleted"
    );
    // The create bodies have the documented shape (the fake masks the key it records).
    let bodies: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "POST")
        .filter_map(|c| c.body.clone())
        .collect();
    for (b, sid) in bodies.iter().zip(["SV_b", "SV_c"]) {
        assert_eq!(
            b,
            &serde_json::json!({"topics": topic(sid), "publicationUrl": our_url(), "encrypt": false, "sharedKey": "***"})
        );
    }
    let mine = ours(&fake);
    let topics: Vec<&str> = mine.iter().map(|s| s.topics.as_str()).collect();
    assert_eq!(topics, [topic("SV_a"), topic("SV_b"), topic("SV_c")]);
    assert_eq!(mine[0].id, ids["a"], "the first listed one is kept");
    assert!(
        mine[1..]
            .iter()
            .all(|s| s.shared_key.as_deref() == Some(WEBHOOK_KEY)),
        "new subscriptions carry the webhook key"
    );
    assert_eq!(
        foreign(&fake),
        foreign_before,
        "foreign subscriptions untouched"
    );
    assert!(o.out.contains("2 created, 2 deleted"), "{}", o.out);
    assert!(o.out.contains("code=***"), "{}", o.out);

    // Second run: nothing to do, nothing changed.
    let before = fake.calls().len();
    let o = sync(&fake, &config, WEBHOOK_KEY, &[]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(o.out.contains("nothing to do"), "{}", o.out);
    assert!(changes(&fake.calls()[before..]).is_empty());

    // A survey leaves bridge.toml: only its subscription of ours goes, never a foreign one.
    let config = bridge_toml(&dir, &["SV_a", "SV_c"]);
    let before = fake.calls().len();
    let o = sync(&fake, &config, WEBHOOK_KEY, &[]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert_eq!(
        changes(&fake.calls()[before..]),
        vec![(
            "DELETE".to_string(),
            format!("/API/v3/eventsubscriptions/{}", mine[1].id)
        )]
    );
    assert_eq!(foreign(&fake), foreign_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a", "SV_b"]);
    let ids = seed(&fake);
    let before = fake.subscriptions();

    let o = sync(&fake, &config, WEBHOOK_KEY, &["--dry-run"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(changes(&fake.calls()).is_empty(), "{:?}", fake.calls());
    assert_eq!(fake.subscriptions(), before);
    for want in [
        format!("keep          {}  {}", ids["a"], topic("SV_a")),
        format!("would create  {}", topic("SV_b")),
        format!(
            "would delete  {}  {}  (stale",
            ids["gone"],
            topic("SV_gone")
        ),
        format!(
            "would delete  {}  {}  (duplicate)",
            ids["a_dup"],
            topic("SV_a")
        ),
        "3 subscription(s) of other URLs left alone".to_string(),
        "dry run: nothing changed (1 to create, 2 to delete)".to_string(),
    ] {
        assert!(o.out.contains(&want), "missing {want:?} in\n{}", o.out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_creates_every_subscription_before_deleting_the_old_ones() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a", "SV_b"]);
    let old = sync(&fake, &config, "ops-webhook-key-old", &[]).await;
    assert_eq!(old.code, 0, "{}\n{}", old.out, old.err);
    let foreign_id = fake.seed_subscription(&topic("SV_a"), OTHER);
    let old_ids: Vec<String> = ours(&fake).into_iter().map(|s| s.id).collect();
    assert_eq!(old_ids.len(), 2);

    let before = fake.calls().len();
    let o = sync(&fake, &config, WEBHOOK_KEY, &["--rotate-key"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let ch = changes(&fake.calls()[before..]);
    let methods: Vec<&str> = ch.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods, ["POST", "POST", "DELETE", "DELETE"], "{ch:?}");
    let deleted: Vec<String> = ch[2..]
        .iter()
        .map(|(_, p)| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(deleted, old_ids);
    let mine = ours(&fake);
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter()
            .all(|s| s.shared_key.as_deref() == Some(WEBHOOK_KEY) && !old_ids.contains(&s.id)),
        "only new subscriptions with the current key remain"
    );
    assert!(fake.subscriptions().iter().any(|s| s.id == foreign_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_deletes_nothing_and_a_rerun_finishes() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a", "SV_b"]);
    let stale = fake.seed_subscription(&topic("SV_gone"), &our_url());
    // A 429 (waited out through Retry-After), then a create Qualtrics refuses.
    fake.throttle_next(1, Some(0));
    fake.reject_next_subscription_creates(1);

    let o = sync(&fake, &config, WEBHOOK_KEY, &[]).await;
    assert_eq!(o.code, 1, "{}\n{}", o.out, o.err);
    assert!(
        o.err.contains(&format!("create {}", topic("SV_a")))
            && o.err.contains("Invalid publicationUrl")
            && o.err.contains("nothing deleted"),
        "{}",
        o.err
    );
    let statuses: Vec<(String, u16)> = fake
        .calls()
        .iter()
        .map(|c| (c.method.clone(), c.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("GET".to_string(), 429),
            ("GET".to_string(), 200),
            ("POST".to_string(), 400),
            ("POST".to_string(), 200)
        ]
    );
    assert!(fake.subscriptions().iter().any(|s| s.id == stale));

    let o = sync(&fake, &config, WEBHOOK_KEY, &[]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(o.out.contains("1 created, 1 deleted"), "{}", o.out);
    let topics: Vec<String> = ours(&fake).into_iter().map(|s| s.topics).collect();
    assert_eq!(topics, [topic("SV_b"), topic("SV_a")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_and_configuration_exit_2_naming_the_input() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a"]);
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_string_lossy().into_owned();
    let good: Vec<(&str, &str)> = vec![
        ("QUALTRICS_BASE_URL", &fake.base_url),
        ("QUALTRICS_API_TOKEN", TOKEN),
        ("QUALTRICS_WEBHOOK_KEY", WEBHOOK_KEY),
        ("BRIDGE_CONFIG", &config),
    ];
    let url = our_url();
    let without_base: Vec<_> = good[1..].to_vec();
    let mut empty_config = good.clone();
    empty_config[3] = ("BRIDGE_CONFIG", &empty);
    type Case<'a> = (&'a [(&'a str, &'a str)], Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            &good,
            vec!["subscriptions", "sync", "--url", "ftp://example.org/x"],
            "--url",
        ),
        (
            &good,
            vec!["subscriptions", "sync", "--url", "http://example.org/x"],
            "--url",
        ),
        (&good, vec!["subscriptions", "sync"], "--url"),
        (
            &good,
            vec!["subscriptions", "sync", "--url", &url, "--bogus"],
            "--bogus",
        ),
        (
            &without_base,
            vec!["subscriptions", "sync", "--url", &url],
            "QUALTRICS_BASE_URL",
        ),
        (
            &empty_config,
            vec!["subscriptions", "sync", "--url", &url],
            "no survey configured",
        ),
        (&good, vec!["export", "--survey", "R_123"], "--survey"),
        (&good, vec!["export"], "--survey"),
        (
            &good,
            vec!["export", "--survey", "SV_a", "--since", "last tuesday"],
            "--since",
        ),
        (
            &without_base,
            vec!["export", "--survey", "SV_a"],
            "QUALTRICS_BASE_URL",
        ),
    ];
    for (env, args, named) in cases {
        let o = run(env, &args).await;
        assert_eq!(o.code, 2, "{args:?}: {}{}", o.out, o.err);
        assert!(
            o.err.contains(named),
            "{args:?}: {named:?} not in {}",
            o.err
        );
    }
    assert!(changes(&fake.calls()).is_empty());
}

async fn blob(s: &Storage, container: &str, name: &str) -> Option<Vec<u8>> {
    common::blob_bytes(s, container, name).await
}

/// Every export blob: name → bytes.
async fn export_blobs(s: &Storage) -> BTreeMap<String, Vec<u8>> {
    let names = common::blob_names(s, EXPORTS).await;
    let mut out = BTreeMap::new();
    for n in names {
        let bytes = blob(s, EXPORTS, &n).await.unwrap_or_default();
        out.insert(n, bytes);
    }
    out
}

/// `{surveyId}/{yyyy}/{mm}/{dd}/` and the `-{exportId}.ndjson` shape, without the run's
/// start time and the export id, which differ by design between two runs.
fn layout(name: &str) -> String {
    let (dir, file) = name.rsplit_once('/').unwrap();
    let (started, rest) = file.split_once('-').unwrap();
    assert_eq!(started.len(), "20261202T015000Z".len(), "{name}");
    assert!(
        rest.starts_with("ES_") && rest.ends_with(".ndjson"),
        "{name}"
    );
    format!("{dir}/<startedAt>-<exportId>.ndjson")
}

fn cli_env<'a>(fake: &'a FakeQualtrics, azurite: &str, config: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("QUALTRICS_BASE_URL", fake.base_url.clone()),
        ("QUALTRICS_API_TOKEN", TOKEN.to_string()),
        ("BRIDGE_CONFIG", config.to_string()),
        ("EXPORT_POLL_INTERVAL_MS", "20".to_string()),
        ("AzureWebJobsStorage", azurite.to_string()),
    ]
}

async fn backfill(env: &[(&str, String)], args: &[&str]) -> Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(&env, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_writes_the_timers_blobs_and_leaves_its_cursor_alone() {
    const SV: &str = "SV_backfill01";
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 5);
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &[SV]);
    let stack = StackBuilder::default()
        .setting("QUALTRICS_BASE_URL", &fake.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("EXPORT_POLL_INTERVAL_MS", "20")
        .bridge_toml(&std::fs::read_to_string(&config).unwrap())
        .start()
        .await;
    let s = common::storage_of(&stack.azurite);

    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(r.outcome.is_ok(), "{:?}", r.logs);
    let timer_blobs = export_blobs(&s).await;
    assert_eq!(timer_blobs.len(), 1);
    let state_name = format!("exports/{SV}.json");
    let cursor = blob(&s, "bridge-state", &state_name).await.expect("state");

    let env = cli_env(&fake, &stack.azurite.connection_string(), &config);
    let o = backfill(&env, &["export", "--survey", SV]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(
        o.out.contains(&format!("{SV}: exported 5 response(s)")),
        "{}",
        o.out
    );
    // Not a terminal: plain progress lines on stderr.
    assert!(
        o.err.contains("started") && o.err.contains("5 response(s) written"),
        "{}",
        o.err
    );

    let all = export_blobs(&s).await;
    let new: Vec<(&String, &Vec<u8>)> = all
        .iter()
        .filter(|(n, _)| !timer_blobs.contains_key(*n))
        .collect();
    assert_eq!(new.len(), 1, "{:?}", all.keys());
    let (timer_name, timer_bytes) = timer_blobs.iter().next().unwrap();
    assert_eq!(layout(new[0].0), layout(timer_name));
    assert!(
        new[0].1 == timer_bytes,
        "backfill bytes differ from the timer's"
    );
    // And both are the source: one line per response, as the fake served it, in its order.
    let source: Vec<u8> = fake
        .served(SV)
        .into_iter()
        .flat_map(|(_, text)| (text + "\n").into_bytes())
        .collect();
    assert!(
        *timer_bytes == source,
        "the export differs from what the fake served"
    );
    // Both starts were the same request body.
    let bodies: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/export-responses"))
        .filter_map(|c| c.body)
        .collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1]);

    // The timer's cursor was neither read-modified nor moved: its next run exports only
    // what is new.
    assert!(
        blob(&s, "bridge-state", &state_name).await.as_deref() == Some(cursor.as_slice()),
        "the timer's state blob changed"
    );
    fake.add_responses(SV, 2);
    let r = stack.host.fire("ExportPoller").await.expect("fire");
    assert!(
        r.logs.iter().any(|l| l.contains("exported 2 response(s)")),
        "{:?}",
        r.logs
    );
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_since_sends_start_date_and_exports_only_later_responses() {
    use time::format_description::well_known::Rfc3339;
    const SV: &str = "SV_backfill02";
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    fake.add_responses(SV, 3);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cut = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let later = fake.add_responses(SV, 2);
    let azurite = Azurite::start().await.expect("azurite");
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_other"]);
    // Given with an offset; sent as UTC.
    let since = cut
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())
        .format(&Rfc3339)
        .unwrap();
    let expected = cut.format(&Rfc3339).unwrap();

    let env = cli_env(&fake, &azurite.connection_string(), &config);
    let o = backfill(&env, &["export", "--survey", SV, "--since", &since]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let start = fake
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with("/export-responses"))
        .and_then(|c| c.body)
        .expect("an export was started");
    assert_eq!(
        start,
        serde_json::json!({"format": "json", "compress": true, "allowContinuation": true, "startDate": expected})
    );
    let s = common::storage_of(&azurite);
    let blobs = export_blobs(&s).await;
    assert_eq!(blobs.len(), 1);
    let text = String::from_utf8(blobs.values().next().unwrap().clone()).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["responseId"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids, later);
    // The timer's state was never created.
    assert!(blob(&s, "bridge-state", &format!("exports/{SV}.json"))
        .await
        .is_none());
}

/// Parses a command's stdout as the one JSON document `--output json` promises.
fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_str(&o.out)
        .unwrap_or_else(|e| panic!("{e}: not one JSON document:\n{}", o.out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_json_names_the_file_and_masks_what_may_carry_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a"]);
    let key = storage_auth::DEV_ACCOUNT_KEY;
    let conn = format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;QueueEndpoint=http://127.0.0.1:2/devstoreaccount1;");
    // --config wins over BRIDGE_CONFIG, which names a file that is not there.
    let env = [
        ("BRIDGE_CONFIG", "/nonexistent/bridge.toml"),
        ("AzureWebJobsStorage", conn.as_str()),
        ("QUALTRICS_WEBHOOK_KEY", WEBHOOK_KEY),
    ];
    let o = run(
        &env,
        &["config", "check", "--config", &config, "--output", "json"],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(
        !o.out.contains(key) && !o.err.contains(key),
        "account key leaked"
    );
    let doc = json_of(&o);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["config"], config.as_str());
    assert_eq!(doc["configFound"], true);
    assert_eq!(doc["sandbox"], false);
    assert_eq!(
        doc["surveys"],
        serde_json::json!([{"id": "SV_a", "export": true, "tickets": null, "allowUnsigned": false, "loop": null,
            "analytics": {"embedded": [], "freeText": true, "identityHashed": []}}])
    );
    let setting = |name: &str| {
        doc["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no setting {name} in {doc:#}"))
    };
    assert_eq!(
        setting("AzureWebJobsStorage"),
        serde_json::json!({"name": "AzureWebJobsStorage", "state": "set", "value": "connection string for account devstoreaccount1 (key masked)"})
    );
    assert_eq!(setting("EXPORT_CONTAINER")["state"], "default");
    assert_eq!(setting("EXPORT_CONTAINER")["value"], "qualtrics-exports");
    assert_eq!(
        setting("QUALTRICS_BASE_URL")["value"],
        serde_json::Value::Null
    );
    assert_eq!(doc["secrets"]["source"], "environment");
    let secrets = doc["secrets"]["items"].as_array().unwrap();
    assert_eq!(secrets.len(), 16);
    for s in secrets {
        let set = s["name"] == "qualtrics-webhook-key";
        assert_eq!(s["set"], set, "{s}");
    }
    let webhook = secrets
        .iter()
        .find(|s| s["name"] == "qualtrics-webhook-key")
        .unwrap();
    assert_eq!(webhook["env"], "QUALTRICS_WEBHOOK_KEY");

    // BRIDGE_CONFIG alone is the fallback; the sample says it is the sandbox one.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml");
    let o = run(
        &[("BRIDGE_CONFIG", sample)],
        &["config", "check", "--output", "json"],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["config"], sample);
    assert_eq!(doc["sandbox"], true);
    assert_eq!(
        doc["surveys"][0]["tickets"],
        serde_json::json!({"system": "servicenow", "when": null})
    );
    // Text output says it too.
    let o = run(&[], &["config", "check", "--config", sample]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(
        o.out.contains(&format!("bridge config: {sample}\n"))
            && o.out.contains("sandbox = true: devkit's sample"),
        "{}",
        o.out
    );

    // A named file that is not there is a usage error naming it.
    let o = run(&env, &["config", "check", "--output", "json"]).await;
    assert_eq!(o.code, 2, "{}\n{}", o.out, o.err);
    assert!(
        o.out.is_empty() && o.err.contains("/nonexistent/bridge.toml"),
        "{}",
        o.err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_json_is_the_plan_then_what_was_done() {
    let fake = FakeQualtrics::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_toml(&dir, &["SV_a", "SV_b"]);
    let ids = seed(&fake);
    let before = fake.subscriptions();

    let o = sync(
        &fake,
        &config,
        WEBHOOK_KEY,
        &["--dry-run", "--output", "json"],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(changes(&fake.calls()).is_empty(), "{:?}", fake.calls());
    assert_eq!(fake.subscriptions(), before);
    assert!(
        o.err
            .contains(&format!("subscriptions sync: bridge config {config}")),
        "{}",
        o.err
    );
    let doc = json_of(&o);
    assert_eq!(doc["config"], config.as_str());
    assert_eq!(
        doc["url"],
        "http://127.0.0.1:7071/api/qualtrics/events?code=***"
    );
    assert_eq!(doc["listed"], 6);
    assert_eq!(doc["dryRun"], true);
    assert_eq!(doc["result"], serde_json::Value::Null);
    assert_eq!(
        doc["plan"],
        serde_json::json!({
            "keep": [{"id": ids["a"], "topic": topic("SV_a")}],
            "create": [{"topic": topic("SV_b")}],
            "delete": [
                {"id": ids["gone"], "topic": topic("SV_gone"), "reason": "stale",
                 "description": "stale: survey not in bridge.toml"},
                {"id": ids["a_dup"], "topic": topic("SV_a"), "reason": "duplicate",
                 "description": "duplicate"},
            ],
            "foreign": 3,
        })
    );

    let o = sync(&fake, &config, WEBHOOK_KEY, &["--output", "json"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["dryRun"], false);
    let created = ours(&fake)
        .into_iter()
        .find(|s| s.topics == topic("SV_b"))
        .expect("SV_b subscribed");
    assert_eq!(
        doc["result"],
        serde_json::json!({
            "created": [{"id": created.id, "topic": topic("SV_b")}],
            "deleted": [ids["gone"], ids["a_dup"]],
            "failures": [],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_list_json_has_each_message_with_its_request_or_text() {
    use base64::Engine;
    let azurite = Azurite::start().await.expect("azurite");
    let queues = devkit::queue_client::QueueClient::new(&azurite.connection());
    queues.create_queue("ticket-requests-poison").await.unwrap();
    let request = r#"{"v":1,"surveyId":"SV_a","responseId":"R_1","source":"webhook","receivedAt":"2026-12-01T00:00:00Z"}"#;
    for text in [request, "not a request"] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        queues
            .put_message("ticket-requests-poison", &encoded)
            .await
            .unwrap();
    }
    let conn = azurite.connection_string();
    let o = run(
        &[("AzureWebJobsStorage", conn.as_str())],
        &["poison", "list", "--output", "json"],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["queue"], "ticket-requests-poison");
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{doc:#}");
    let request: serde_json::Value = serde_json::from_str(request).unwrap();
    assert_eq!(messages[0]["request"], request);
    assert_eq!(messages[0]["text"], serde_json::Value::Null);
    assert_eq!(messages[1]["request"], serde_json::Value::Null);
    assert_eq!(messages[1]["text"], "not a request");
    for m in messages {
        assert!(
            m["messageId"].as_str().is_some_and(|s| !s.is_empty()),
            "{m}"
        );
        assert!(
            m["insertedOn"].as_str().is_some_and(|s| !s.is_empty()),
            "{m}"
        );
        assert_eq!(m["dequeueCount"], 0, "peeked, never received: {m}");
        // No ledger blob for these responses.
        assert_eq!(m["reason"], serde_json::Value::Null, "{m}");
    }
}

#[tokio::test]
async fn config_check_shows_what_the_loop_does_and_refuses_a_bad_loop_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    let good = "[[surveys]]\nid = \"SV_a\"\n[surveys.loop]\nfollowup = { survey = \"SV_f\", library = \"UR_1\", message = \"MS_1\", mailing_list = \"CG_1\", directory = \"POOL_1\", close_codes = [\"Solved\"], skip_if_reopened_within_hours = 24 }\n";
    std::fs::write(&path, good).unwrap();
    let config = path.to_string_lossy().into_owned();
    let o = run(&[], &["config", "check", "--config", &config]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(
        o.out.contains("loop: write-back TicketSystem,TicketId,TicketNumber,TicketState,TicketStateAt,TicketCloseCode,BridgeWriteBack; follow-up SV_f via POOL_1/CG_1 on resolved if close code in [\"Solved\"], not if reopened within 24h"),
        "{}",
        o.out
    );
    std::fs::write(&path, good.replace("MS_1", "EMD_1")).unwrap();
    let o = run(&[], &["config", "check", "--config", &config]).await;
    assert_eq!(o.code, 2, "{}\n{}", o.out, o.err);
    assert!(
        o.err.contains("line 4") && o.err.contains("message") && o.err.contains("MS_"),
        "{}",
        o.err
    );
}

/// Runs the binary with exactly `env` and `stdin` as its standard input.
async fn run_with_stdin(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn binary");
    let mut input = child.stdin.take().expect("stdin");
    // A command refused before it reads stdin closes it: that is its answer, not an error.
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    let out = child.wait_with_output().await.expect("run binary");
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    devkit::canary::record_command(env.iter().copied(), &o.out, &o.err);
    o
}

/// `loop status` reads back what the real TicketCreator, TicketEvents and LoopCloser stored
/// for a ServiceNow incident: by response and by INC number, as text and JSON; a response
/// with a ticket but no event yet; an unknown response (exit 1) and a bad --ticket (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_status_shows_the_ticket_the_applied_state_and_the_follow_up() {
    use devkit::fakes::servicenow::{self, FakeServiceNow};
    use devkit::fakes::ticket_events::EventTarget;
    const SV: &str = "SV_loopStatus1";
    const SN_SECRET: &str = "sn-status-signing-secret";
    let q = FakeQualtrics::start(TOKEN).await.unwrap();
    let sn = FakeServiceNow::start().await.unwrap();
    let toml = format!(
        r#"[[surveys]]
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
        .start()
        .await;
    let responses = q.add_responses(SV, 2);
    let address = "pat.status@example.org";
    q.set_recipient(&responses[0], address, "Pat", "Respondent");
    stack.request_tickets(SV, &responses).await;
    stack.settle(Duration::from_secs(60)).await;
    let incidents = sn.incidents();
    assert_eq!(incidents.len(), 2);
    let of = |rid: &str| {
        incidents
            .iter()
            .find(|i| i.fields["correlation_id"].ends_with(rid))
            .cloned()
            .expect("incident of the response")
    };
    let (resolved, untouched) = (of(&responses[0]), of(&responses[1]));
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
    sn.set_state(&resolved.sys_id, "6", Some("Solved (Permanently)"))
        .unwrap();
    assert!(
        stack
            .eventually(Duration::from_secs(60), || async {
                sn.events().in_flight() == 0 && !q.distributions().is_empty()
            })
            .await,
        "the follow-up went out"
    );
    stack.settle(Duration::from_secs(60)).await;
    let emd = q.distributions()[0].id.clone();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, &toml).unwrap();
    let config = config.to_string_lossy().into_owned();
    let conn = stack.azurite.connection_string();
    let env = [
        ("AzureWebJobsStorage", conn.as_str()),
        ("BRIDGE_CONFIG", config.as_str()),
    ];

    let o = run(&env, &["loop", "status", "--response", &responses[0]]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    for want in [
        format!("response {} (survey {SV})", responses[0]),
        format!(
            "ticket: servicenow {} (id {}), created at",
            resolved.number, resolved.sys_id
        ),
        "applied: resolved (status \"6\"), changed at".to_string(),
        "close code \"Solved (Permanently)\"".to_string(),
        "write-back: applied (last written: resolved at".to_string(),
        format!("follow-up: sent {emd} at"),
        "JSON events: none".to_string(),
        "open-ticket index: yes (not synced yet)".to_string(),
    ] {
        assert!(o.out.contains(&want), "missing {want:?} in\n{}", o.out);
    }
    assert!(!o.out.contains(address) && !o.err.contains(address));

    // By INC number (a scan of the index), as JSON: the same loop.
    let ticket = format!("servicenow:{}", resolved.number);
    let o = run(
        &env,
        &["loop", "status", "--ticket", &ticket, "--output", "json"],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["surveyId"], SV);
    assert_eq!(doc["responseId"], responses[0].as_str());
    assert_eq!(doc["ticket"]["state"], "created");
    assert_eq!(doc["ticket"]["number"], resolved.number.as_str());
    assert_eq!(
        doc["ticketId"],
        serde_json::json!({"system": "servicenow", "id": resolved.sys_id})
    );
    assert_eq!(doc["loop"]["applied"]["state"], "resolved");
    assert_eq!(doc["loop"]["applied"]["sequence"], 1);
    assert_eq!(doc["loop"]["writeBack"]["status"], "applied");
    assert_eq!(doc["loop"]["writeBack"]["written"]["state"], "resolved");
    assert_eq!(doc["loop"]["followUp"]["status"], "sent");
    assert_eq!(doc["loop"]["followUp"]["distributionId"], emd.as_str());
    assert_eq!(doc["openIndex"]["indexed"], true);
    // And what the fake received agrees: one write-back of that state, one follow-up.
    assert_eq!(q.response_updates().len(), 1);
    assert_eq!(q.distributions().len(), 1);

    // A ticket no event has reached: created, indexed, no loop state.
    let o = run(
        &env,
        &[
            "loop",
            "status",
            "--response",
            &responses[1],
            "--survey",
            SV,
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["ticket"]["id"], untouched.sys_id.as_str());
    assert_eq!(doc["loop"], serde_json::Value::Null);
    assert_eq!(doc["openIndex"]["indexed"], true);

    // Unknown response: exit 1 naming it; a malformed --ticket: exit 2.
    let o = run(&env, &["loop", "status", "--response", "R_noSuchResponse1"]).await;
    assert_eq!(o.code, 1, "{}\n{}", o.out, o.err);
    assert!(
        o.out.is_empty() && o.err.contains("R_noSuchResponse1") && o.err.contains(SV),
        "{}",
        o.err
    );
    let o = run(
        &env,
        &["loop", "status", "--ticket", "servicenow:INC9999999"],
    )
    .await;
    assert_eq!(o.code, 1, "{}\n{}", o.out, o.err);
    assert!(o.err.contains("servicenow:INC9999999"), "{}", o.err);
    for (args, named) in [
        (vec!["loop", "status", "--ticket", "jira:1"], "--ticket"),
        (
            vec!["loop", "status", "--ticket", "zendesk:../x"],
            "--ticket",
        ),
        (vec!["loop", "status", "--response", "SV_x"], "--response"),
        (vec!["loop", "status"], "--response"),
    ] {
        let o = run(&env, &args).await;
        assert_eq!(o.code, 2, "{args:?}: {}{}", o.out, o.err);
        assert!(o.err.contains(named), "{args:?}: {}", o.err);
    }
    // A mismatched pair is refused rather than shown.
    let wrong = format!("servicenow:{}", untouched.number);
    let o = run(
        &env,
        &[
            "loop",
            "status",
            "--response",
            &responses[0],
            "--ticket",
            &wrong,
        ],
    )
    .await;
    assert_eq!(o.code, 1, "{}\n{}", o.out, o.err);
    common::assert_no_address_logged(&stack, &[address]);
}

/// Two event types sharing the `vpn` cool-down category (as pulse_sender_e2e's).
const PULSES: &str = r#"
[[pulses]]
event_type = "vpn.drop"
category = "vpn"
survey = "SV_pulse1"
library = "UR_lib1"
message = "MS_msg1"
directory = "POOL_dir1"
mailing_list = "CG_pulse1"
cooldown_hours = 24

[[pulses]]
event_type = "vpn.slow"
category = "vpn"
survey = "SV_pulse2"
library = "UR_lib1"
message = "MS_msg2"
directory = "POOL_dir1"
mailing_list = "CG_pulse1"
max_people = 3
"#;

fn ops_event(id: &str, event_type: &str, people: serde_json::Value) -> String {
    serde_json::json!({"eventId": id, "eventType": event_type,
        "occurredAt": "2026-12-07T09:59:00Z", "people": people})
    .to_string()
}

/// `pulses --dry-run` against state a real PulseSender run wrote: the person it surveyed is
/// in cool-down for the other event type of the category, the others are due or have nobody
/// to send to; the event already sent shows everyone as handled. Fake Qualtrics receives no
/// request and no blob is written during the dry runs; no address is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulses_dry_run_reports_the_cool_down_and_sends_nothing() {
    use base64::Engine;
    const HASH_KEY: &str = "ops-cli-hash-key-0123456789";
    let q = FakeQualtrics::start(TOKEN).await.unwrap();
    let stack = StackBuilder::default()
        .bridge_toml(PULSES)
        .setting("QUALTRICS_BASE_URL", &q.base_url)
        .setting("QUALTRICS_API_TOKEN", TOKEN)
        .setting("ANALYTICS_HASH_KEY", HASH_KEY)
        .start()
        .await;
    let (a, b, c) = (
        "ana.pulse@example.org",
        "ben.pulse@example.org",
        "cy.pulse@example.org",
    );
    for e in [a, b, c] {
        devkit::canary::register(e);
    }
    let first = ops_event(
        "evt-ops-1",
        "vpn.drop",
        serde_json::json!([{"email": a}, {"email": b}]),
    );
    let request = serde_json::json!({
        "v": 1, "format": "bridge", "auth": "token", "receivedAt": "2026-12-07T10:00:00Z",
        "event": serde_json::from_str::<serde_json::Value>(&first).unwrap(),
    })
    .to_string();
    stack.queues.create_queue("pulse-requests").await.unwrap();
    stack
        .queues
        .put_message(
            "pulse-requests",
            &base64::engine::general_purpose::STANDARD.encode(&request),
        )
        .await
        .unwrap();
    stack.settle(Duration::from_secs(60)).await;
    let sent = q.distributions().len();
    assert!(sent > 0, "the real run surveyed a and b");
    // The keys PulseSender stored for a and b (their cool-down marks, never the address).
    let s = common::storage_of(&stack.azurite);
    let surveyed: Vec<String> = common::blob_names(&s, "bridge-state")
        .await
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("pulse/cooldown/")
                .and_then(|rest| rest.split('/').nth(1))
                .map(|k| k[..12].to_string())
        })
        .collect();
    assert_eq!(surveyed.len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, PULSES).unwrap();
    let config = config.to_string_lossy().into_owned();
    let conn = stack.azurite.connection_string();
    let env = [
        ("AzureWebJobsStorage", conn.as_str()),
        ("BRIDGE_CONFIG", config.as_str()),
        ("ANALYTICS_HASH_KEY", HASH_KEY),
    ];
    let calls_before = q.calls().len();
    let blobs_before = common::blob_names(&s, "bridge-state").await;

    // vpn.slow shares vpn's cool-down: a is held back, c is due, an externalRef alone has
    // nobody to send to.
    let second = ops_event(
        "evt-ops-2",
        "vpn.slow",
        serde_json::json!([{"email": a}, {"email": c}, {"externalRef": "E-77"}]),
    );
    let file = dir.path().join("event.json");
    std::fs::write(&file, &second).unwrap();
    let file = file.to_string_lossy().into_owned();
    let o = run(&env, &["pulses", "--event", &file, "--dry-run"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let cooling: Vec<&str> = o
        .out
        .lines()
        .filter(|l| l.contains("in cool-down (surveyed for the category at"))
        .collect();
    assert_eq!(cooling.len(), 1, "{}", o.out);
    assert!(
        surveyed
            .iter()
            .any(|k| cooling[0].contains(&format!("person {k}"))),
        "the cool-down person is one PulseSender surveyed:\n{}",
        o.out
    );
    let due: Vec<&str> = o
        .out
        .lines()
        .filter(|l| l.ends_with("would be surveyed"))
        .collect();
    assert_eq!(due.len(), 1, "{}", o.out);
    assert!(!surveyed.iter().any(|k| due[0].contains(k.as_str())));
    for want in [
        "event evt-ops-2 (vpn.slow, bridge format): 3 people",
        "pulse vpn.slow: survey SV_pulse2, category vpn, cool-down 336 h, at most 3 people",
        "skipped: no address and no contact id",
        "would survey 1, in cool-down 1, already handled 0, skipped 1",
        "distributions that would be sent: 1",
        "dry run: nothing sent, nothing written",
    ] {
        assert!(o.out.contains(want), "missing {want:?} in\n{}", o.out);
    }

    // The event already sent, from stdin, as JSON: both people handled, nothing due.
    let o = run_with_stdin(
        &env,
        &["pulses", "--event", "-", "--dry-run", "--output", "json"],
        &first,
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["event"]["eventId"], "evt-ops-1");
    assert_eq!(doc["pulse"]["category"], "vpn");
    assert_eq!(
        doc["counts"],
        serde_json::json!({"due": 0, "cooling": 0, "already": 2, "unreachable": 0, "noIdentity": 0})
    );
    assert_eq!(doc["distributions"], 0);
    assert_eq!(doc["dryRun"], true);
    let mut keys: Vec<String> = doc["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["status"], "added", "{p}");
            p["person"].as_str().unwrap().to_string()
        })
        .collect();
    keys.sort();
    let mut want = surveyed.clone();
    want.sort();
    assert_eq!(keys, want);

    // No type handles it / more people than max_people: said, exit 0, nothing read or sent.
    let o = run_with_stdin(
        &env,
        &["pulses", "--event", "-", "--dry-run"],
        &ops_event("evt-ops-3", "disk.full", serde_json::json!([{"email": a}])),
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    assert!(
        o.out
            .contains("no [[pulses]] entry handles this event type"),
        "{}",
        o.out
    );
    let four = serde_json::json!([{"externalRef": "1"}, {"externalRef": "2"}, {"externalRef": "3"}, {"externalRef": "4"}]);
    let o = run_with_stdin(
        &env,
        &["pulses", "--event", "-", "--dry-run", "--output", "json"],
        &ops_event("evt-ops-4", "vpn.slow", four),
    )
    .await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(doc["queued"], false);
    assert!(doc["reason"].as_str().unwrap().contains("422"), "{doc}");

    // Nothing reached Qualtrics, nothing was written, no address was printed.
    assert_eq!(
        q.calls().len(),
        calls_before,
        "{:?}",
        &q.calls()[calls_before..]
    );
    assert_eq!(common::blob_names(&s, "bridge-state").await, blobs_before);
    assert_eq!(q.distributions().len(), sent);

    // Usage: --dry-run is required; a bad body or format, or no hash key, is exit 2.
    for (env, args, stdin, named) in [
        (
            &env[..],
            vec!["pulses", "--event", "-"],
            first.as_str(),
            "--dry-run",
        ),
        (
            &env[..],
            vec!["pulses", "--event", "-", "--dry-run"],
            "{\"eventId\":",
            "--event",
        ),
        (
            &env[..],
            vec![
                "pulses",
                "--event",
                "-",
                "--dry-run",
                "--format",
                "pagerduty",
            ],
            first.as_str(),
            "--format",
        ),
        (
            &env[..2],
            vec!["pulses", "--event", "-", "--dry-run"],
            first.as_str(),
            "analytics-hash-key",
        ),
    ] {
        let o = run_with_stdin(env, &args, stdin).await;
        assert_eq!(o.code, 2, "{args:?}: {}{}", o.out, o.err);
        assert!(o.err.contains(named), "{args:?}: {}", o.err);
    }
    assert_eq!(q.calls().len(), calls_before);

    // config check shows both entries, defaults filled in (text in operations_config.rs).
    let o = run(&env, &["config", "check", "--output", "json"]).await;
    assert_eq!(o.code, 0, "{}\n{}", o.out, o.err);
    let doc = json_of(&o);
    assert_eq!(
        doc["pulses"][1],
        serde_json::json!({"eventType": "vpn.slow", "survey": "SV_pulse2", "library": "UR_lib1",
            "message": "MS_msg2", "directory": "POOL_dir1", "mailingList": "CG_pulse1",
            "embeddedData": [], "category": "vpn", "cooldownHours": 336, "maxPeople": 3})
    );
    for e in [a, b, c] {
        common::assert_no_address_logged(&stack, &[e]);
    }
}
