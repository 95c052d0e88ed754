//! The real handler binary behind the local host, reading its secrets from the fake Key Vault
//! through the fake managed-identity endpoint (HTTPS, test CA via `SSL_CERT_FILE`): it loads
//! the webhook key, keeps serving when the vault is unreachable or forbids access, never logs
//! a secret value, and refuses to start with a half-configured identity.

use crate::common;

use common::StackBuilder;
use devkit::fakes::{FakeIdentity, FakeKeyVault, TestPki, VaultFault};
use devkit::process::free_port;
use std::time::Duration;

const KEY_VALUE: &str = "whk-real-binary-value-3f9a";

fn with_identity(
    b: StackBuilder,
    identity: &FakeIdentity,
    ca: &std::path::Path,
    vault: &str,
) -> StackBuilder {
    let mut b = b
        .setting("KEY_VAULT_URL", vault)
        .setting("SSL_CERT_FILE", &ca.display().to_string());
    for (k, v) in identity.settings() {
        b = b.setting(&k, &v);
    }
    b
}

fn output_mentions(lines: &[String], needles: &[&str]) -> bool {
    lines.iter().any(|l| needles.iter().all(|n| l.contains(n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_reads_the_webhook_key_from_key_vault_via_managed_identity() {
    let identity = FakeIdentity::start().await.expect("identity");
    let pki = TestPki::generate().expect("pki");
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    let vault = FakeKeyVault::start(&pki).await.expect("vault");
    vault.set_secret("qualtrics-webhook-key", KEY_VALUE);

    let stack = with_identity(StackBuilder::default(), &identity, &files.ca, &vault.url())
        .start()
        .await;
    let loaded = stack
        .eventually(Duration::from_secs(10), || async {
            output_mentions(
                &stack.host.handler_output(),
                &["secret available", "qualtrics-webhook-key"],
            )
        })
        .await;
    let output = stack.host.handler_output();
    assert!(
        loaded,
        "the handler never reported the key as available: {output:#?}"
    );
    assert!(
        output_mentions(
            &output,
            &["secrets source selected", "Key Vault", &vault.url()]
        ),
        "{output:#?}"
    );
    assert!(vault.served() >= 1 && vault.challenges() >= 1);
    assert!(identity
        .requests()
        .iter()
        .any(|r| r.status == 200 && r.resource.as_deref() == Some("https://vault.azure.net")));

    let resp = reqwest::get(stack.webhook_url())
        .await
        .expect("GET webhook");
    assert_eq!(resp.status(), 200);
    // The behaviour, not the log line: a delivery signed with the vault's key is accepted,
    // one signed with another key is not.
    use devkit::publisher::{Delivery, Publisher};
    let publisher = Publisher::new(stack.webhook_url());
    let status = |key: &'static str, response: &'static str| {
        let publisher = &publisher;
        async move {
            publisher
                .deliver(&Delivery::signed(key, "SV_22VlHYNeldrrrkp", response))
                .await
                .expect("deliver")
                .status
        }
    };
    assert_eq!(status(KEY_VALUE, "R_vault1").await, 202, "the vault's key");
    assert_eq!(status("whk-not-the-vault-key", "R_vault2").await, 401);
    let output = stack.host.handler_output();
    assert!(
        !output.iter().any(|l| l.contains(KEY_VALUE)),
        "a secret value reached the logs"
    );
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_keeps_serving_when_key_vault_is_unreachable() {
    let identity = FakeIdentity::start().await.expect("identity");
    let pki = TestPki::generate().expect("pki");
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    let dead = format!("https://127.0.0.1:{}/", free_port().unwrap());

    let stack = with_identity(StackBuilder::default(), &identity, &files.ca, &dead)
        .start()
        .await;
    // GET (Qualtrics' URL check) does not need a secret: it answers at once.
    let resp = reqwest::get(stack.webhook_url())
        .await
        .expect("GET webhook");
    assert_eq!(resp.status(), 200);
    let reported = stack
        .eventually(Duration::from_secs(20), || async {
            output_mentions(
                &stack.host.handler_output(),
                &[
                    "secret unavailable",
                    "qualtrics-webhook-key",
                    &dead,
                    "unreachable",
                ],
            )
        })
        .await;
    assert!(
        reported,
        "no clear error: {:#?}",
        stack.host.handler_output()
    );
    let resp = reqwest::get(stack.webhook_url())
        .await
        .expect("GET webhook");
    assert_eq!(resp.status(), 200);
    stack.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_reports_a_forbidden_vault_without_leaking_the_value() {
    let identity = FakeIdentity::start().await.expect("identity");
    let pki = TestPki::generate().expect("pki");
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    let vault = FakeKeyVault::start(&pki).await.expect("vault");
    vault.set_secret("qualtrics-webhook-key", KEY_VALUE);
    vault.set_fault(Some(VaultFault::Forbidden));

    let stack = with_identity(StackBuilder::default(), &identity, &files.ca, &vault.url())
        .start()
        .await;
    let reported = stack
        .eventually(Duration::from_secs(10), || async {
            output_mentions(
                &stack.host.handler_output(),
                &[
                    "secret unavailable",
                    "qualtrics-webhook-key",
                    &vault.url(),
                    "403",
                ],
            )
        })
        .await;
    let output = stack.host.handler_output();
    assert!(reported, "no clear 403 error: {output:#?}");
    let resp = reqwest::get(stack.webhook_url())
        .await
        .expect("GET webhook");
    assert_eq!(resp.status(), 200);
    assert!(!output.iter().any(|l| l.contains(KEY_VALUE)));
    assert!(
        !output.iter().any(|l| l.contains(&identity.header())),
        "IDENTITY_HEADER leaked"
    );
    stack.assert_no_violations();
}

#[tokio::test]
async fn half_configured_identity_stops_start_up_naming_the_missing_variable() {
    let port = free_port().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_qualtrics-bridge"));
    cmd.env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
        .env("KEY_VAULT_URL", "https://example.vault.azure.net/")
        .env("BRIDGE_LOG", "info")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the handler must exit promptly, not hang on IMDS")
        .expect("run handler");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("but IDENTITY_HEADER is not"),
        "the error must name the missing variable: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_key_rotated_in_the_vault_is_accepted_without_a_restart() {
    use devkit::publisher::{Delivery, Publisher};
    let identity = FakeIdentity::start().await.expect("identity");
    let pki = TestPki::generate().expect("pki");
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path()).unwrap();
    let vault = FakeKeyVault::start(&pki).await.expect("vault");
    vault.set_secret("qualtrics-webhook-key", "whk-rotation-v1-0d41");
    let stack = with_identity(StackBuilder::default(), &identity, &files.ca, &vault.url())
        .start()
        .await;
    let publisher = Publisher::new(stack.webhook_url());
    let survey = "SV_22VlHYNeldrrrkp";
    let send = |key: &'static str, response: &'static str| {
        let publisher = &publisher;
        async move {
            publisher
                .deliver(&Delivery::signed(key, survey, response))
                .await
                .expect("deliver")
                .status
        }
    };
    let pid = stack.host.handler_pid().await;

    assert_eq!(
        send("whk-rotation-v1-0d41", "R_rot1").await,
        202,
        "current key"
    );
    // Rotate in the vault: the handler's cached key is now stale.
    vault.set_secret("qualtrics-webhook-key", "whk-rotation-v2-77c8");
    assert_eq!(
        send("whk-rotation-v2-77c8", "R_rot2").await,
        202,
        "the new key is picked up by the forced refresh on mismatch"
    );
    assert_eq!(
        send("whk-rotation-v1-0d41", "R_rot3").await,
        401,
        "the old key no longer verifies (no previous key is set)"
    );
    assert_eq!(stack.host.handler_pid().await, pid, "no restart");
    let output = stack.host.handler_output();
    for secret in ["whk-rotation-v1-0d41", "whk-rotation-v2-77c8"] {
        assert!(
            !output.iter().any(|l| l.contains(secret)),
            "a key reached the logs"
        );
    }
    stack.assert_no_violations();
}
