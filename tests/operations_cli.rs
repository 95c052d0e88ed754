//! `qualtrics-bridge subscriptions sync` and `qualtrics-bridge export` (backfill): the real
//! release binary as a subprocess, against devkit's fake Qualtrics and real Azurite.

mod common;

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
