//! The test stack: real Azurite, the real release binary staged as an app root, and devkit's
//! local Functions host in front of it. Each test gets its own stack on free ports.
#![allow(dead_code)] // each test binary uses a different part of this module

use devkit::azurite::{repo_root, Azurite};
use devkit::host::app::Settings;
use devkit::host::{HostOptions, LocalHost, TimerMode, DEFAULT_QUEUE_LEASE};
use devkit::queue_client::{QueueClient, RawMessage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const FUNCTION_KEY: &str = "test-function-key";
pub const MASTER_KEY: &str = "test-master-key";

/// A running stack; dropping it stops everything.
///
/// A protocol violation fails the test by default: [`Stack::settle`] checks for them, and so
/// does dropping the stack at the end of a test that has not already failed. A test that
/// provokes one on purpose says so with [`Stack::expect_violations`].
pub struct Stack {
    pub host: LocalHost,
    pub azurite: Azurite,
    pub queues: QueueClient,
    pub app_dir: tempfile::TempDir,
    /// Azurite's data directory when it runs on disk (dropped after Azurite).
    pub storage_dir: Option<tempfile::TempDir>,
    violations_expected: AtomicBool,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Panicking while a failed test unwinds would abort the whole test binary.
        if !std::thread::panicking() {
            self.check_violations();
        }
    }
}

/// Builds a stack with overrides.
pub struct StackBuilder {
    settings: Settings,
    bridge_toml: Option<String>,
    without: Vec<String>,
    persistent: bool,
    queue_lease: Duration,
    handler_script: Option<String>,
}

impl Default for StackBuilder {
    fn default() -> Self {
        let mut settings = Settings::new();
        // Far-future schedule: tests fire timers on demand.
        settings.insert("EXPORT_SCHEDULE".into(), "0 0 0 1 1 *".into());
        settings.insert("TICKET_SYNC_SCHEDULE".into(), "0 0 0 1 1 *".into());
        settings.insert("ANALYTICS_SCHEDULE".into(), "0 0 0 1 1 *".into());
        // Retry at once and poll quickly, so retry tests take seconds, not minutes.
        settings.insert(
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout".into(),
            "00:00:00".into(),
        );
        settings.insert(
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval".into(),
            "00:00:00.2".into(),
        );
        settings.insert("BRIDGE_LOG".into(), "info".into());
        Self {
            settings,
            bridge_toml: None,
            without: Vec::new(),
            persistent: false,
            queue_lease: DEFAULT_QUEUE_LEASE,
            handler_script: None,
        }
    }
}

impl StackBuilder {
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.insert(name.into(), value.into());
        self
    }

    pub fn without_setting(mut self, name: &str) -> Self {
        self.settings.remove(name);
        self
    }

    /// Leaves a function out of the app (e.g. `TicketCreator`, so that `ticket-requests` keeps
    /// exactly what was put there instead of being drained).
    pub fn without_function(mut self, name: &str) -> Self {
        self.without.push(name.into());
        self
    }

    /// Replaces the app's `bridge.toml`.
    pub fn bridge_toml(mut self, text: &str) -> Self {
        self.bridge_toml = Some(text.into());
        self
    }

    /// Runs Azurite on disk, so that `stack.azurite.restart()` keeps queues and blobs.
    pub fn persistent_storage(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// The local host's visibility lease on a queue message while it runs.
    pub fn queue_lease(mut self, lease: Duration) -> Self {
        self.queue_lease = lease;
        self
    }

    /// Runs `python3` with this script as the handler instead of the release binary, for
    /// harness tests that need a handler which breaks the protocol.
    pub fn handler_script(mut self, python: &str) -> Self {
        self.handler_script = Some(python.into());
        self
    }

    pub async fn start(self) -> Stack {
        let storage_dir = self
            .persistent
            .then(|| tempfile::tempdir().expect("azurite data dir"));
        let azurite = match &storage_dir {
            Some(dir) => Azurite::start_persistent(dir.path()).await,
            None => Azurite::start().await,
        }
        // Display, not Debug: the error says what to install.
        .unwrap_or_else(|e| panic!("azurite starts: {e}"));
        let app_dir = tempfile::tempdir().expect("temp dir");
        devkit::staging::stage(
            &repo_root(),
            env!("CARGO_BIN_EXE_qualtrics-bridge").as_ref(),
            app_dir.path(),
        )
        .expect("stage app");
        if let Some(text) = &self.bridge_toml {
            std::fs::write(app_dir.path().join("bridge.toml"), text).expect("write bridge.toml");
        }
        if let Some(script) = &self.handler_script {
            std::fs::write(app_dir.path().join("handler.py"), script).expect("write handler.py");
            let path = app_dir.path().join("host.json");
            let mut host: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read host.json"))
                    .expect("host.json");
            host["customHandler"]["description"]["defaultExecutablePath"] = "python3".into();
            host["customHandler"]["description"]["arguments"] = serde_json::json!(["handler.py"]);
            std::fs::write(&path, host.to_string()).expect("write host.json");
        }
        for name in &self.without {
            std::fs::remove_dir_all(app_dir.path().join(name)).expect("unstage function");
        }
        let mut settings = self.settings;
        settings
            .entry("AzureWebJobsStorage".into())
            .or_insert_with(|| azurite.connection_string());
        let host = LocalHost::start(HostOptions {
            app_root: app_dir.path().to_path_buf(),
            settings,
            port: 0,
            function_key: FUNCTION_KEY.into(),
            master_key: MASTER_KEY.into(),
            timers: TimerMode::Manual,
            echo: std::env::var_os("DEVKIT_ECHO").is_some(),
            queue_lease: self.queue_lease,
        })
        .await
        .expect("local host starts");
        let queues = QueueClient::new(&azurite.connection());
        Stack {
            host,
            azurite,
            queues,
            app_dir,
            storage_dir,
            violations_expected: AtomicBool::new(false),
        }
    }

    /// The settings of a Zendesk at `url` with devkit's fake credentials.
    pub fn zendesk(self, url: &str) -> Self {
        self.setting("ZENDESK_BASE_URL", url)
            .setting("ZENDESK_EMAIL", devkit::fakes::zendesk::EMAIL)
            .setting("ZENDESK_API_TOKEN", devkit::fakes::zendesk::API_TOKEN)
    }
}

impl Stack {
    pub async fn start() -> Self {
        StackBuilder::default().start().await
    }

    /// The webhook URL with the function key.
    pub fn webhook_url(&self) -> String {
        self.host
            .function_url("QualtricsWebhook")
            .expect("webhook function")
    }

    /// Puts one webhook-sourced ticket request per response of `survey` on `ticket-requests`.
    pub async fn request_tickets(&self, survey: &str, responses: &[String]) {
        use base64::Engine;
        self.queues
            .create_queue("ticket-requests")
            .await
            .expect("queue");
        for r in responses {
            let text = format!(
                r#"{{"v":1,"surveyId":"{survey}","responseId":"{r}","source":"webhook","receivedAt":"2026-12-01T00:00:00Z"}}"#
            );
            self.queues
                .put_message(
                    "ticket-requests",
                    &base64::engine::general_purpose::STANDARD.encode(text),
                )
                .await
                .expect("put");
        }
    }

    /// Messages on a queue (peeked), decoded from the host's base64 encoding.
    pub async fn queue_texts(&self, queue: &str) -> Vec<String> {
        use base64::Engine;
        self.queues
            .peek_messages(queue)
            .await
            .expect("peek")
            .into_iter()
            .map(|m: RawMessage| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&m.text)
                    .expect("base64 message");
                String::from_utf8(bytes).expect("utf-8 message")
            })
            .collect()
    }

    /// Waits until `check` holds or `limit` passes; returns whether it held.
    pub async fn eventually<F, Fut>(&self, limit: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Asserts the handler broke no protocol rule so far (also checked at [`Self::settle`] and
    /// when the stack is dropped).
    pub fn assert_no_violations(&self) {
        assert!(
            self.host.violations().is_empty(),
            "protocol violations: {:?}",
            self.host.violations()
        );
    }

    /// How many invocations so far ended in an error (the host retried or dead-lettered them).
    pub fn failed_invocations(&self) -> usize {
        let records = self.host.records();
        records.iter().filter(|r| r.outcome.is_err()).count()
    }

    /// Opts this test out of the default violation check, for a test that provokes violations
    /// on purpose; returns the violations so far, for the test to assert on.
    pub fn expect_violations(&self) -> Vec<devkit::host::Violation> {
        self.violations_expected.store(true, Ordering::SeqCst);
        self.host.violations()
    }

    fn check_violations(&self) {
        if !self.violations_expected.load(Ordering::SeqCst) {
            self.assert_no_violations();
        }
    }

    /// Waits until everything the host was given is done, or panics at `limit`: no invocation
    /// in flight, every queue the app's triggers read empty, leased (invisible) messages
    /// included, and no leased message on their `-poison` twins. Then checks for protocol
    /// violations.
    pub async fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let before = self.host.activity();
            let pending = if before.in_flight > 0 {
                format!("{} invocation(s) in flight", before.in_flight)
            } else {
                match self.queues_pending().await {
                    // Nothing started meanwhile: the queues were empty with nothing running.
                    None if self.host.activity() == before => break,
                    None => "an invocation started during the check".to_string(),
                    Some(p) => p,
                }
            };
            assert!(
                Instant::now() < deadline,
                "the stack did not settle within {limit:?}: {pending}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.check_violations();
    }

    /// What keeps the trigger queues from being done, or `None`.
    async fn queues_pending(&self) -> Option<String> {
        for queue in self.host.trigger_queues() {
            match self.queues.approximate_count(&queue).await {
                Ok(0) => {}
                Ok(n) => return Some(format!("{n} message(s) on {queue}")),
                Err(e) => return Some(format!("{queue}: {e}")),
            }
            // Nothing reads the poison twin; a message leased there means an operator's
            // replay (or a test) is still at work. Peek sees at most 32 messages, so a larger
            // poison queue cannot be checked this way.
            let poison = format!("{queue}-poison");
            let count = match self.queues.approximate_count(&poison).await {
                Ok(n) => n,
                Err(e) => return Some(format!("{poison}: {e}")),
            };
            if count <= 32 {
                match self.queues.peek_messages(&poison).await {
                    Ok(visible) if visible.len() as u64 == count => {}
                    Ok(visible) => {
                        return Some(format!(
                            "{} leased message(s) on {poison}",
                            count.saturating_sub(visible.len() as u64)
                        ))
                    }
                    Err(e) => return Some(format!("{poison}: {e}")),
                }
            }
        }
        None
    }
}

/// The storage account of `azurite` through the handler's own clients.
pub fn storage_of(azurite: &Azurite) -> qualtrics_bridge::storage::Storage {
    let cs = azurite.connection_string();
    let lookup = move |n: &str| (n == "AzureWebJobsStorage").then(|| cs.clone());
    let transport = qualtrics_bridge::identity::transport(&lookup).expect("transport");
    qualtrics_bridge::storage::Storage::connect("AzureWebJobsStorage", &lookup, &transport)
        .expect("storage")
}

/// A blob's bytes, or `None` when it cannot be read.
pub async fn blob_bytes(
    s: &qualtrics_bridge::storage::Storage,
    container: &str,
    name: &str,
) -> Option<Vec<u8>> {
    let c = s.blob_container(container).ok()?;
    let r = c.blob_client(name).download(None).await.ok()?;
    Some(r.body.collect().await.ok()?.to_vec())
}

/// A blob's text, or `None` when it cannot be read or is not UTF-8.
pub async fn blob_text(
    s: &qualtrics_bridge::storage::Storage,
    container: &str,
    name: &str,
) -> Option<String> {
    String::from_utf8(blob_bytes(s, container, name).await?).ok()
}

/// Every blob name in `container`, all pages. A storage error fails the test: an audit that
/// read an empty listing from a failed request would pass whatever was stored.
pub async fn blob_names(s: &qualtrics_bridge::storage::Storage, container: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let c = s.blob_container(container).expect("container client");
    let mut pages = c.list_blobs(None).expect("list blobs").into_pages();
    let mut names = Vec::new();
    while let Some(page) = pages.try_next().await.expect("list blobs page") {
        let m = page.into_model().expect("list blobs model");
        names.extend(m.blob_items.into_iter().filter_map(|b| b.name));
    }
    names
}

/// No respondent address reached the handler's output or the invocations' `Logs[]`.
pub fn assert_no_address_logged(stack: &Stack, emails: &[&str]) {
    let out = stack.host.handler_output().join("\n");
    let logs: String = stack
        .host
        .records()
        .iter()
        .flat_map(|r| r.logs.clone())
        .collect();
    for e in emails {
        assert!(
            !out.contains(e) && !logs.contains(e),
            "address {e} was logged"
        );
    }
}

/// The analytics oracles' python (`scripts/install-oracles.sh`: pinned deltalake, duckdb,
/// pyarrow, matplotlib from PyPI; installed on first use). `ANALYTICS_ORACLE_PYTHON` overrides it.
pub fn oracle_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ANALYTICS_ORACLE_PYTHON") {
        return p.into();
    }
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/install-oracles.sh"))
        .output()
        .expect("run scripts/install-oracles.sh");
    assert!(
        out.status.success(),
        "install-oracles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}
