//! The README's sandbox recipe as printed: `devkit up` with the sample settings (no services
//! configured), then `devkit publish` with the key and a response id it printed: 202 and a
//! ticket in the fake ServiceNow. Runs the real devkit binary and the release handler.

use std::collections::BTreeMap;
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
async fn sandbox_prints_what_publish_needs_and_the_delivery_makes_a_ticket() {
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
