//! What an operator reads when storage refuses the binary: the status, the storage error code
//! and message (an Azurite older than the pinned one refuses the SDK's API version), or the
//! transport failure under the SDK's "retry policy expired".

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qualtrics-bridge");
/// Azurite's published development account key (not a secret).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite 3.35.0's reason phrase and `<Message>` for a service version it does not know.
const REFUSAL: &str = "The API version 2026-04-06 is not supported by Azurite. Please upgrade Azurite to latest version and retry. If you are using Azurite in Visual Studio, please check you have installed latest Visual Studio patch. Azurite command line parameter \"--skipApiVersionCheck\" or Visual Studio Code configuration \"Skip Api Version Check\" can skip this error. ";

/// Answers every request as Azurite 3.35.0 does (captured with curl): 400 with the message as
/// reason phrase, `x-ms-error-code`, a chunked XML body, keep-alive. Counts the requests.
fn old_azurite() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Error>\n  <Code>InvalidHeaderValue</Code>\n  <Message>{REFUSAL}\nRequestId:758de847-b3a9-4d9e-af06-36e178dceb30\nTime:2026-12-07T02:42:54.182Z</Message>\n</Error>"
                    );
                    let response = format!(
                        "HTTP/1.1 400 {REFUSAL}\r\nServer: Azurite-Queue/3.35.0\r\nx-ms-error-code: InvalidHeaderValue\r\nx-ms-request-id: 758de847-b3a9-4d9e-af06-36e178dceb30\r\nx-ms-version: 2025-11-05\r\ncontent-type: application/xml\r\nDate: Mon, 07 Dec 2026 02:42:54 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, requests)
}

fn poison_list(port: u16) -> (Option<i32>, String, Duration) {
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint={endpoint};QueueEndpoint={endpoint}"
    );
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["poison", "list"])
        .env_clear()
        .env("AzureWebJobsStorage", &connection)
        .env(
            "BRIDGE_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml"),
        )
        .output()
        .expect("run binary");
    let elapsed = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    devkit::canary::record_command([("AzureWebJobsStorage", connection)], &stdout, &stderr);
    (out.status.code(), stderr, elapsed)
}

#[test]
fn an_older_azurite_refusing_the_api_version_is_named_with_status_code_and_message() {
    let (port, requests) = old_azurite();
    let (code, stderr, elapsed) = poison_list(port);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "queue ticket-requests-poison: exists failed: 400 InvalidHeaderValue: {}",
            REFUSAL.trim()
        )),
        "{stderr}"
    );
    // One line of cause, not the XML body; nothing of the signed request.
    assert!(
        !stderr.contains("<?xml") && !stderr.contains("RequestId:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("SharedKey") && !stderr.contains(DEV_KEY),
        "{stderr}"
    );
    // A 400 is final: asked once, answered at once (no retry policy in between).
    assert_eq!(requests.load(Ordering::SeqCst), 1, "{stderr}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn unreachable_storage_names_the_transport_failure_under_the_retry_policy() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (code, stderr, _) = poison_list(port);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("retry policy expired") && stderr.contains("Connection refused"),
        "the SDK's outer message alone does not say what failed: {stderr}"
    );
    assert!(
        !stderr.contains("SharedKey") && !stderr.contains(DEV_KEY),
        "{stderr}"
    );
}
