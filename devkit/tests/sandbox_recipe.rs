//! The README's sandbox recipe as printed: `devkit up` with the sample settings (no services
//! configured) tours the flows — the demo incident resolved and its loop closed (write-back,
//! one follow-up), a sensor event's pulse and a second event held back by the cool-down — and
//! what it prints is checked against the fakes' state; then `devkit publish` with the key and
//! a response id it printed: 202 and a ticket in the fake ServiceNow. Runs the real devkit
//! binary and the release handler.

use devkit::sandbox::{EMAIL_DOMAIN, FOLLOWUP_SURVEY, PULSE_LIST, PULSE_SURVEY};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const DEVKIT: &str = env!("CARGO_BIN_EXE_devkit");

/// Every line a stream printed so far, shared with the test.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Lines {
    let lines = Lines::default();
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Waits until `done` holds for the lines, or fails with what was printed.
async fn wait_for(what: &str, lines: &Lines, other: &Lines, done: impl Fn(&[String]) -> bool) {
    for _ in 0..1200 {
        if done(&lines.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no {what} after 120 s; printed:\n{}\n---\n{}",
        lines.lock().unwrap().join("\n"),
        other.lock().unwrap().join("\n")
    );
}

/// The first line printed that starts with `prefix`, or a failure with everything printed.
async fn line(prefix: &str, err: &Lines, out: &Lines) -> String {
    wait_for(prefix, err, out, |l| {
        l.iter().any(|l| l.starts_with(prefix))
    })
    .await;
    let lines = err.lock().unwrap();
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .cloned()
        .unwrap_or_default()
}

/// The words of `line` that start with `prefix` (ids such as `EMD_…`), trailing `,` `)` cut.
fn ids(line: &str, prefix: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| w.trim_end_matches([',', ')', ':']).trim_start_matches('('))
        .filter(|w| w.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The number right before `word` in `line` (`3 contacts`).
fn count_before(line: &str, word: &str) -> Option<usize> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| w.starts_with(word))?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// The tour's printed lines, each checked against what the fakes hold.
async fn check_the_tour(printed: &BTreeMap<String, String>, err: &Lines, out: &Lines) {
    let http = reqwest::Client::new();
    // The loop: the demo incident resolved in the fake ServiceNow, its event answered 202.
    let resolved = line("sandbox: ServiceNow resolved INC", err, out).await;
    assert!(
        resolved.contains("; event sent to TicketEvents (answered 202)"),
        "{resolved}"
    );
    let incident = ids(&resolved, "INC").remove(0);
    let found: Value = http
        .get(format!(
            "{}/api/now/table/incident",
            printed["FAKE_SERVICENOW_URL"]
        ))
        .query(&[("sysparm_query", format!("number={incident}"))])
        .basic_auth(
            devkit::fakes::servicenow::USERNAME,
            Some(devkit::fakes::servicenow::PASSWORD),
        )
        .send()
        .await
        .expect("fake ServiceNow answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(found["result"][0]["state"], "6", "{found}");

    let received = || async {
        let v: Value = http
            .get(format!("{}/_fake/received", printed["FAKE_QUALTRICS_URL"]))
            .send()
            .await
            .expect("fake Qualtrics answers")
            .json()
            .await
            .expect("JSON");
        v["result"].clone()
    };
    // The write-back as printed is what the fake Qualtrics accepted.
    let updated = line("sandbox: Qualtrics response R_", err, out).await;
    let response = ids(&updated, "R_").remove(0);
    assert!(
        updated.contains("updated: TicketState=resolved, ")
            && updated.contains(&format!("TicketNumber={incident}")),
        "{updated}"
    );
    let fake = received().await;
    let writes: Vec<&Value> = fake["responseUpdates"]
        .as_array()
        .expect("responseUpdates")
        .iter()
        .filter(|u| u["responseId"] == response.as_str())
        .collect();
    assert!(!writes.is_empty(), "{fake}");
    let last = &writes[writes.len() - 1]["embeddedData"];
    assert_eq!(last["TicketState"], "resolved", "{fake}");
    assert_eq!(last["TicketNumber"], incident.as_str(), "{fake}");
    assert_eq!(last["TicketSystem"], "servicenow", "{fake}");

    // Exactly one follow-up, the one printed.
    let followup = line("sandbox: follow-up distribution EMD_", err, out).await;
    assert!(
        followup.contains(&format!("sent for {incident}")),
        "{followup}"
    );
    let of_survey = |fake: &Value, survey: &str| -> Vec<Value> {
        fake["distributions"]
            .as_array()
            .expect("distributions")
            .iter()
            .filter(|d| d["surveyId"] == survey)
            .cloned()
            .collect()
    };
    let followups = of_survey(&fake, FOLLOWUP_SURVEY);
    assert_eq!(followups.len(), 1, "{fake}");
    assert_eq!(followups[0]["id"], ids(&followup, "EMD_")[0].as_str());
    let event = line(
        "sandbox: Qualtrics JSON Event Ticket.Resolved received for",
        err,
        out,
    )
    .await;
    assert!(event.ends_with("(trigger OC_sandboxLoop)"), "{event}");
    assert_eq!(
        fake["jsonEvents"].as_array().map(Vec::len),
        Some(1),
        "{fake}"
    );

    // The pulse: the first event reached the 3 people, in the distribution(s) printed.
    let got = line("sandbox: fake Qualtrics received for sandbox-", err, out).await;
    assert_eq!(count_before(&got, "contacts"), Some(3), "{got}");
    let printed_ids: BTreeSet<String> = ids(&got, "EMD_").into_iter().collect();
    let fake = received().await;
    let pulses = of_survey(&fake, PULSE_SURVEY);
    let pulse_ids: BTreeSet<String> = pulses
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!pulse_ids.is_empty(), "{fake}");
    assert_eq!(printed_ids, pulse_ids, "{got}\n{fake}");
    assert_eq!(
        count_before(&got, "distribution"),
        Some(pulse_ids.len()),
        "{got}"
    );
    let members: BTreeSet<&str> = fake["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .filter(|c| c["mailingListId"] == PULSE_LIST)
        .filter_map(|c| c["contactId"].as_str())
        .collect();
    assert_eq!(members.len(), 3, "three distinct people upserted: {fake}");
    // One distribution per event, to its transaction batch, which holds each person once.
    assert_eq!(pulses.len(), 1, "one distribution for the event: {fake}");
    assert!(
        pulses[0]["recipients"]["transactionBatchId"].is_string(),
        "{fake}"
    );
    let batch: Vec<&str> = pulses[0]["batchContacts"]
        .as_array()
        .expect("batchContacts")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(batch.len(), 3, "each person once in the batch: {fake}");
    let reached: BTreeSet<&str> = batch.into_iter().collect();
    assert_eq!(
        reached, members,
        "the distribution covers the three people: {fake}"
    );

    // The second event of the category, inside the cool-down: nothing new in the fake.
    let held = line("sandbox: second sensor event sandbox-", err, out).await;
    assert!(
        held.ends_with("for the same 3 users held back by cool-down: 0 distributions"),
        "{held}"
    );
    let posted = err
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.starts_with("sandbox: sensor event sandbox-")
                && l.ends_with("posted to OpsEvents: 202")
        })
        .count();
    assert_eq!(posted, 2, "both sensor events accepted");
    assert_eq!(
        of_survey(&received().await, PULSE_SURVEY).len(),
        pulse_ids.len()
    );
}

async fn publish(url: &str, key: &str, survey: &str, response: &str) -> (bool, String) {
    let out = tokio::process::Command::new(DEVKIT)
        .args([
            "publish",
            "--url",
            url,
            "--survey",
            survey,
            "--response",
            response,
        ])
        .env_clear()
        .env("QUALTRICS_WEBHOOK_KEY", key)
        .output()
        .await
        .expect("run devkit publish");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_tours_the_loop_and_the_pulse_and_publish_makes_a_ticket() {
    let root = devkit::azurite::repo_root();
    let handler = root.join("target/release/qualtrics-bridge");
    assert!(
        handler.is_file(),
        "{} is missing: cargo build --release -p qualtrics-bridge",
        handler.display()
    );
    let mut cmd = tokio::process::Command::new(DEVKIT);
    cmd.arg("up")
        .arg("--binary")
        .arg(&handler)
        .args(["--port", "0", "--settings"])
        .arg(root.join("local.settings.sample.json"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for keep in ["PATH", "HOME", devkit::canary::OUTPUT_DIR_VAR] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    let mut up = cmd.spawn().expect("spawn devkit up");
    let out = collect(up.stdout.take().expect("stdout"));
    let err = collect(up.stderr.take().expect("stderr"));

    wait_for("SANDBOX_RESPONSES line", &out, &err, |l| {
        l.iter().any(|l| l.starts_with("SANDBOX_RESPONSES="))
    })
    .await;
    let printed: BTreeMap<String, String> = out
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (url, key, survey) = (
        &printed["WEBHOOK_URL"],
        &printed["QUALTRICS_WEBHOOK_KEY"],
        &printed["SANDBOX_SURVEY"],
    );
    let responses: Vec<&str> = printed["SANDBOX_RESPONSES"].split(' ').collect();
    assert_eq!(responses.len(), 3, "{printed:?}");
    assert!(
        err.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("devkit publish") && l.contains(key.as_str())),
        "the recipe line with the key was printed"
    );

    check_the_tour(&printed, &err, &out).await;

    // Another key is refused: the printed key is what makes the recipe work.
    let (ok, text) = publish(url, "not-the-sandbox-key", survey, responses[0]).await;
    assert!(!ok && text.starts_with("401"), "{text}");
    let (ok, text) = publish(url, key, survey, responses[0]).await;
    assert!(ok && text.starts_with("202"), "{text}");
    let wanted = format!("({})", format_args!("qualtrics:{survey}:{}", responses[0]));
    wait_for("ticket for the published response", &err, &out, |l| {
        l.iter().any(|l| {
            l.starts_with("sandbox: fake ServiceNow created incident") && l.ends_with(&wanted)
        })
    })
    .await;

    // Neither a sandbox address nor an ops secret was printed (devkit echoes the handler's log).
    for l in err.lock().unwrap().iter().chain(out.lock().unwrap().iter()) {
        assert!(
            !l.contains(EMAIL_DOMAIN) && !l.contains("whsec_"),
            "printed: {l}"
        );
    }

    // Ctrl-C stops the host, the handler and Azurite.
    if let Some(pid) = up.id() {
        // SAFETY: a plain signal to the child this test spawned.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    }
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("devkit up stops on SIGINT")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}
