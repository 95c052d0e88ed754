//! `qualtrics-bridge poison list|replay` against real Azurite.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use devkit::azurite::Azurite;
use devkit::queue_client::QueueClient;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qualtrics-bridge");

fn run(azurite: &Azurite, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("AzureWebJobsStorage", azurite.connection_string())
        .env(
            "BRIDGE_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml"),
        )
        .output()
        .expect("run binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    devkit::canary::record_command(
        [("AzureWebJobsStorage", azurite.connection_string())],
        &stdout,
        &stderr,
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_replay_move_exactly_the_listed_messages_byte_exact() {
    let azurite = Azurite::start().await.expect("azurite");
    let queues = QueueClient::new(&azurite.connection());
    queues.create_queue("ticket-requests-poison").await.unwrap();
    let texts = [
        r#"{"v":1,"surveyId":"SV_a","responseId":"R_1","source":"webhook","receivedAt":"2026-12-01T00:00:00Z"}"#,
        r#"{"v":1,"surveyId":"SV_a","responseId":"R_2","source":"export","receivedAt":"2026-12-01T00:00:01Z"}"#,
        "not a request \u{e9}",
    ];
    for t in texts {
        queues
            .put_message("ticket-requests-poison", &STANDARD.encode(t))
            .await
            .unwrap();
    }

    let (code, out, err) = run(&azurite, &["poison", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("SV_a/R_1 (Webhook)") && out.contains("SV_a/R_2 (Export)"),
        "{out}"
    );
    assert!(
        out.contains("not a ticket request: not a request é"),
        "{out}"
    );

    let (code, out, _) = run(&azurite, &["poison", "replay", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would move 3 message(s)"), "{out}");
    assert_eq!(
        queues
            .peek_messages("ticket-requests-poison")
            .await
            .unwrap()
            .len(),
        3,
        "dry run moved nothing"
    );
    assert!(queues
        .peek_messages("ticket-requests")
        .await
        .unwrap()
        .is_empty());

    let (code, out, err) = run(&azurite, &["poison", "replay", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("moved 2 message(s)"), "{out}");
    let moved: Vec<String> = queues
        .peek_messages("ticket-requests")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    let expected: Vec<String> = texts[..2].iter().map(|t| STANDARD.encode(t)).collect();
    assert_eq!(moved, expected, "the first two, byte-exact, in order");
    let left: Vec<String> = queues
        .peek_messages("ticket-requests-poison")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(left, vec![STANDARD.encode(texts[2])]);

    let (code, out, _) = run(&azurite, &["poison", "replay"]);
    assert_eq!(code, 0);
    assert!(out.contains("moved 1 message(s)"), "{out}");
    assert!(queues
        .peek_messages("ticket-requests-poison")
        .await
        .unwrap()
        .is_empty());
}

#[test]
fn poison_without_storage_settings_is_a_usage_error_naming_the_setting() {
    let out = Command::new(BIN)
        .args(["poison", "list"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AzureWebJobsStorage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_poison_queue_lists_and_replays_to_loop_requests() {
    let azurite = Azurite::start().await.expect("azurite");
    let queues = QueueClient::new(&azurite.connection());
    queues.create_queue("loop-requests-poison").await.unwrap();
    let texts = [
        r#"{"v":1,"system":"zendesk","ticketId":"35436","surveyId":"SV_a","responseId":"R_1","status":"solved","state":"resolved","changedAt":"2026-12-01T00:00:00Z","source":"event","receivedAt":"2026-12-01T00:00:01Z"}"#,
        "not a loop request \u{e9}",
    ];
    for t in texts {
        queues
            .put_message("loop-requests-poison", &STANDARD.encode(t))
            .await
            .unwrap();
    }
    let (code, out, err) = run(&azurite, &["poison", "list", "--queue", "loop"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("zendesk 35436 → SV_a/R_1 (Resolved at 2026-12-01T00:00:00Z)"),
        "{out}"
    );
    assert!(
        out.contains("not a loop request: not a loop request é"),
        "{out}"
    );
    // The ticket queue is another queue.
    let (code, out, _) = run(&azurite, &["poison", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("ticket-requests-poison: empty"), "{out}");

    let (code, out, err) = run(&azurite, &["poison", "replay", "--queue", "loop"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("moved 2 message(s) to loop-requests"), "{out}");
    let mut moved: Vec<String> = queues
        .peek_messages("loop-requests")
        .await
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8(STANDARD.decode(&m.text).unwrap()).unwrap())
        .collect();
    moved.sort();
    let mut want: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(moved, want, "byte-exact");
    assert!(queues
        .peek_messages("loop-requests-poison")
        .await
        .unwrap()
        .is_empty());
}
