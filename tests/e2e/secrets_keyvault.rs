//! `SecretsProvider` against the fake Key Vault (HTTPS with a test CA, 401 challenge) through
//! the managed identity (fake App Service endpoint): reads, rotation without restart, optional
//! secrets, faults, and the cost of cached and cold reads.

use devkit::fakes::{FakeIdentity, FakeKeyVault, TestPki, VaultFault};
use qualtrics_bridge::identity;
use qualtrics_bridge::secrets::{SecretName, SecretsProvider};
use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Fixture {
    vault: FakeKeyVault,
    settings: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let identity = FakeIdentity::process_wide();
    let pki = TestPki::generate().expect("pki");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pki.write(dir.path()).expect("pki files");
    let vault = FakeKeyVault::start(&pki).await.expect("vault");
    let mut settings: HashMap<String, String> = identity.settings().into_iter().collect();
    settings.insert("KEY_VAULT_URL".into(), vault.url());
    settings.insert("SSL_CERT_FILE".into(), files.ca.display().to_string());
    Fixture {
        vault,
        settings,
        _dir: dir,
    }
}

fn provider(settings: &HashMap<String, String>) -> SecretsProvider {
    let lookup = |name: &str| settings.get(name).cloned();
    let transport = identity::transport(&lookup).expect("transport");
    SecretsProvider::from_settings(&lookup, &transport).expect("provider")
}

#[tokio::test]
async fn webhook_key_is_read_from_the_vault_and_rotation_needs_no_restart() {
    let f = fixture().await;
    f.vault
        .set_secret("qualtrics-webhook-key", "whk-value-one-7c1f");
    let secrets = provider(&f.settings);
    assert!(secrets
        .source_name()
        .starts_with("Key Vault https://127.0.0.1:"));

    let v1 = secrets.get(SecretName::QualtricsWebhookKey).await.unwrap();
    assert_eq!(v1.unwrap().expose(), "whk-value-one-7c1f");
    assert_eq!(f.vault.challenges(), 1, "one 401 challenge, then the token");

    // Rotate in the vault. Until told, the provider serves the cached value, with no request.
    f.vault
        .set_secret("qualtrics-webhook-key", "whk-value-two-9d2e");
    let before = f.vault.requests();
    let cached = secrets.get(SecretName::QualtricsWebhookKey).await.unwrap();
    assert_eq!(cached.unwrap().expose(), "whk-value-one-7c1f");
    assert_eq!(f.vault.requests(), before, "a cached read makes no request");

    // A consumer found the key stopped working: refresh picks up the new version.
    assert!(secrets
        .refresh(SecretName::QualtricsWebhookKey)
        .await
        .unwrap());
    let v2 = secrets.get(SecretName::QualtricsWebhookKey).await.unwrap();
    assert_eq!(v2.unwrap().expose(), "whk-value-two-9d2e");
    // A second refresh within 30 s is refused without a request.
    let before = f.vault.requests();
    assert!(!secrets
        .refresh(SecretName::QualtricsWebhookKey)
        .await
        .unwrap());
    assert_eq!(f.vault.requests(), before);
}

#[tokio::test]
async fn a_missing_optional_secret_is_absent_and_a_required_one_is_named() {
    let f = fixture().await;
    let secrets = provider(&f.settings);
    let prev = secrets
        .get(SecretName::QualtricsWebhookKeyPrevious)
        .await
        .expect("a 404 is not an error");
    assert!(prev.is_none());
    let err = secrets
        .require(SecretName::QualtricsWebhookKey)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("qualtrics-webhook-key") && err.contains(&f.vault.url()),
        "{err}"
    );
}

#[tokio::test]
async fn forbidden_and_unreachable_vaults_give_errors_naming_vault_and_secret() {
    let mut f = fixture().await;
    f.vault
        .set_secret("zendesk-api-token", "zd-token-value-5a5a");
    f.vault.set_fault(Some(VaultFault::Forbidden));
    let secrets = provider(&f.settings);
    let err = secrets
        .get(SecretName::ZendeskApiToken)
        .await
        .unwrap_err()
        .to_string();
    eprintln!("403: {err}");
    assert!(
        err.contains("zendesk-api-token") && err.contains(&f.vault.url()),
        "{err}"
    );
    assert!(
        err.contains("403") && !err.contains("zd-token-value"),
        "{err}"
    );

    // Works once access is granted (the failure was not cached).
    f.vault.set_fault(None);
    let ok = secrets.get(SecretName::ZendeskApiToken).await.unwrap();
    assert_eq!(ok.unwrap().expose(), "zd-token-value-5a5a");

    // Unreachable: the port now refuses connections. Fresh provider, bounded time.
    let url = f.vault.url();
    f.vault.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let secrets = provider(&f.settings);
    let started = Instant::now();
    let err = secrets
        .get(SecretName::ZendeskApiToken)
        .await
        .unwrap_err()
        .to_string();
    eprintln!("unreachable after {:?}: {err}", started.elapsed());
    assert!(
        err.contains("zendesk-api-token") && err.contains(&url),
        "{err}"
    );
    assert!(err.contains("unreachable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_stale_value_is_served_when_a_re_read_fails() {
    let mut f = fixture().await;
    f.vault
        .set_secret("qualtrics-api-token", "api-token-value-1b1b");
    let lookup = |name: &str| f.settings.get(name).cloned();
    let transport = identity::transport(&lookup).unwrap();
    let secrets = SecretsProvider::from_settings(&lookup, &transport)
        .unwrap()
        .with_cache_ttl(Duration::from_millis(1));
    assert!(secrets
        .get(SecretName::QualtricsApiToken)
        .await
        .unwrap()
        .is_some());
    f.vault.stop();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stale = secrets.get(SecretName::QualtricsApiToken).await.unwrap();
    assert_eq!(stale.unwrap().expose(), "api-token-value-1b1b");
    // A forced refresh reports the failure.
    assert!(secrets
        .refresh(SecretName::QualtricsApiToken)
        .await
        .is_err());
}

/// The figures: a cached read makes no request; a cold read (token + challenge + get, new
/// connections) on the local fakes takes at most 50 ms (best of 5; median and worst printed).
#[tokio::test]
async fn cached_reads_cost_nothing_and_a_cold_read_is_fast() {
    let f = fixture().await;
    f.vault
        .set_secret("qualtrics-webhook-key", "whk-cold-read-value");
    let mut cold = Vec::new();
    for _ in 0..5 {
        let secrets = provider(&f.settings);
        let started = Instant::now();
        let v = secrets.get(SecretName::QualtricsWebhookKey).await.unwrap();
        cold.push(started.elapsed());
        assert!(v.is_some());
        let before = f.vault.requests();
        let started = Instant::now();
        for _ in 0..1000 {
            secrets.get(SecretName::QualtricsWebhookKey).await.unwrap();
        }
        let per_cached = started.elapsed() / 1000;
        assert_eq!(
            f.vault.requests(),
            before,
            "1000 cached reads made no request"
        );
        eprintln!("cached read: {per_cached:?} each, 0 requests");
    }
    cold.sort();
    eprintln!(
        "cold read (new provider: MI token + 401 challenge + GET over TLS): best {:?}, median {:?}, worst {:?}",
        cold[0], cold[2], cold[4]
    );
    assert!(cold[0] <= Duration::from_millis(50), "cold reads: {cold:?}");
}
