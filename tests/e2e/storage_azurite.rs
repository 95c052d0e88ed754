//! `storage::Storage` against real Azurite: SharedKey (connection string) on plain Azurite, and
//! the managed identity (fake App Service endpoint) on Azurite `--oauth basic` over HTTPS with
//! a test CA trusted through `SSL_CERT_FILE`.

use azure_core::http::RequestContent;
use azure_storage_queue::models::QueueMessage;
use devkit::azurite::Azurite;
use devkit::fakes::{FakeIdentity, TestPki};
use qualtrics_bridge::identity::{self, CredentialSource};
use qualtrics_bridge::storage::{Storage, StorageAuth};
use std::collections::HashMap;

fn lookup_of(map: HashMap<String, String>) -> impl Fn(&str) -> Option<String> {
    move |name| map.get(name).cloned()
}

/// Container create → upload → download, and queue create → send → receive.
async fn round_trip(storage: &Storage, tag: &str) {
    let container = storage
        .blob_container("bridge-state")
        .expect("container client");
    container.create(None).await.expect("create container");
    let blob = container.blob_client(&format!("tickets/SV_1/R_{tag}.json"));
    let body = format!(r#"{{"state":"claimed","tag":"{tag}"}}"#);
    blob.upload(RequestContent::from(body.clone().into_bytes()), None)
        .await
        .expect("upload");
    let got = blob
        .download(None)
        .await
        .expect("download")
        .body
        .collect_string()
        .await
        .expect("read body");
    assert_eq!(got, body);

    let queue = storage.queue("ticket-requests").expect("queue client");
    queue.create(None).await.expect("create queue");
    let msg = QueueMessage {
        message_text: Some(format!("hello-{tag}")),
    };
    queue
        .send_message(msg.try_into().expect("xml"), None)
        .await
        .expect("send");
    let received = queue
        .receive_messages(None)
        .await
        .expect("receive")
        .into_model()
        .expect("messages");
    let texts: Vec<String> = received
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.message_text)
        .collect();
    assert_eq!(texts, vec![format!("hello-{tag}")]);
}

#[tokio::test]
async fn shared_key_round_trip_on_plain_azurite() {
    let azurite = Azurite::start().await.expect("azurite");
    let map = HashMap::from([(
        "AzureWebJobsStorage".to_string(),
        azurite.connection_string(),
    )]);
    let lookup = lookup_of(map);
    let transport = identity::transport(&lookup).expect("transport");
    let storage = Storage::connect("AzureWebJobsStorage", &lookup, &transport).expect("storage");
    assert_eq!(
        storage.auth(),
        &StorageAuth::SharedKey {
            account: "devstoreaccount1".into()
        }
    );
    round_trip(&storage, "sharedkey").await;
    // The Debug form names endpoints, never the account key.
    assert!(!format!("{storage:?}").contains(storage_auth::DEV_ACCOUNT_KEY));
}

#[tokio::test]
async fn managed_identity_round_trip_on_oauth_azurite_over_https() {
    let fake_identity = FakeIdentity::process_wide();
    let pki = TestPki::generate().expect("test pki");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pki.write(dir.path()).expect("write pki");
    let azurite = Azurite::start_oauth(&files.cert, &files.key)
        .await
        .expect("azurite oauth");
    let mut map: HashMap<String, String> = fake_identity.settings().into_iter().collect();
    map.extend([
        (
            "AzureWebJobsStorage__blobServiceUri".to_string(),
            azurite.blob_endpoint(),
        ),
        (
            "AzureWebJobsStorage__queueServiceUri".to_string(),
            azurite.queue_endpoint(),
        ),
        (
            "AzureWebJobsStorage__credential".to_string(),
            "managedidentity".to_string(),
        ),
        (
            "AzureWebJobsStorage__clientId".to_string(),
            "0a1b2c3d-user-assigned".to_string(),
        ),
    ]);

    // Without the test CA the TLS handshake must fail: verification is on.
    let untrusting = lookup_of(map.clone());
    let transport = identity::transport(&untrusting).expect("transport");
    let storage =
        Storage::connect("AzureWebJobsStorage", &untrusting, &transport).expect("storage");
    let err = storage
        .blob_container("nope")
        .unwrap()
        .create(None)
        .await
        .expect_err("an untrusted certificate must be refused");
    // Any error would pass `expect_err` (a refused connection, a token failure): the chain
    // must name the certificate check.
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" | {e} {e:?}"));
        source = e.source();
    }
    assert!(
        chain.contains("UnknownIssuer") || chain.to_lowercase().contains("certificate"),
        "not a certificate-verification failure: {chain}"
    );

    map.insert("SSL_CERT_FILE".into(), files.ca.display().to_string());
    let lookup = lookup_of(map);
    let transport = identity::transport(&lookup).expect("transport");
    let storage = Storage::connect("AzureWebJobsStorage", &lookup, &transport).expect("storage");
    assert_eq!(
        storage.auth(),
        &StorageAuth::Token(CredentialSource::ManagedIdentity {
            client_id: Some("0a1b2c3d-user-assigned".into())
        })
    );
    round_trip(&storage, "identity").await;

    let requests = fake_identity.requests();
    assert!(
        requests.iter().any(|r| r.status == 200
            && r.client_id.as_deref() == Some("0a1b2c3d-user-assigned")
            && r.resource.as_deref() == Some("https://storage.azure.com")
            && r.api_version.as_deref() == Some("2019-08-01")),
        "the storage token came from the user-assigned identity: {requests:?}"
    );
}
