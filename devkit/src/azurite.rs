//! Real Azurite for tests and local runs: the pinned npm package, started on free loopback
//! ports with telemetry off — in memory, or on disk when a test stops and restarts it — and
//! stopped when the handle is dropped.

use crate::process::{restartable_port, spawn_owned};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use storage_auth::ConnectionString;
use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum AzuriteError {
    #[error("cannot install Azurite (scripts/install-azurite.sh): {0}")]
    Install(String),
    #[error("cannot start Azurite: {0}")]
    Start(#[source] std::io::Error),
    #[error("Azurite did not open its ports within {0:?}")]
    NotReady(Duration),
}

/// A running Azurite (blob + queue), killed on drop.
#[derive(Debug)]
pub struct Azurite {
    /// In a mutex so that a test can stop and restart storage while traffic uses it.
    child: Mutex<Option<Child>>,
    pub blob_port: u16,
    pub queue_port: u16,
    table_port: u16,
    entry: PathBuf,
    /// `--oauth basic --cert … --key …` (HTTPS only), or empty for plain SharedKey mode.
    oauth_args: Vec<String>,
    /// Data directory (`--location`); `None` keeps everything in memory.
    location: Option<PathBuf>,
}

/// How long a graceful stop may take before Azurite is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Azurite {
    /// Installs (if needed) and starts Azurite on free ports.
    pub async fn start() -> Result<Self, AzuriteError> {
        Self::launch(Vec::new(), None).await
    }

    /// Starts Azurite with its data in `dir`, so that [`Self::restart`] keeps every queue
    /// message and blob, as a storage outage in Azure does.
    pub async fn start_persistent(dir: &Path) -> Result<Self, AzuriteError> {
        Self::launch(Vec::new(), Some(dir.to_path_buf())).await
    }

    async fn launch(
        oauth_args: Vec<String>,
        location: Option<PathBuf>,
    ) -> Result<Self, AzuriteError> {
        let entry = azurite_entry()?;
        let me = Self {
            child: Mutex::new(None),
            // Azurite can be restarted on the same ports (`restart`).
            blob_port: restartable_port().map_err(AzuriteError::Start)?,
            queue_port: restartable_port().map_err(AzuriteError::Start)?,
            table_port: restartable_port().map_err(AzuriteError::Start)?,
            entry,
            oauth_args,
            location,
        };
        me.spawn().await?;
        Ok(me)
    }

    /// Starts Azurite in OAuth mode: `--oauth basic` over HTTPS with the given PEM leaf
    /// certificate and key (e.g. from [`crate::fakes::TestPki::write`]). It then accepts bearer
    /// tokens whose `iss`/`aud`/lifetime are right (signatures are not checked) as well as
    /// SharedKey, and only HTTPS. Endpoints: [`Self::blob_endpoint`], [`Self::queue_endpoint`].
    pub async fn start_oauth(cert: &Path, key: &Path) -> Result<Self, AzuriteError> {
        Self::launch(
            vec![
                "--oauth".into(),
                "basic".into(),
                "--cert".into(),
                cert.display().to_string(),
                "--key".into(),
                key.display().to_string(),
            ],
            None,
        )
        .await
    }

    fn scheme(&self) -> &'static str {
        if self.oauth_args.is_empty() {
            "http"
        } else {
            "https"
        }
    }

    /// The blob service URL (path-style, no trailing slash).
    pub fn blob_endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            self.scheme(),
            self.blob_port,
            storage_auth::DEV_ACCOUNT
        )
    }

    /// The queue service URL (path-style, no trailing slash).
    pub fn queue_endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            self.scheme(),
            self.queue_port,
            storage_auth::DEV_ACCOUNT
        )
    }

    async fn spawn(&self) -> Result<(), AzuriteError> {
        let mut cmd = Command::new("node");
        cmd.arg(&self.entry)
            .args(["--silent", "--disableTelemetry", "--skipApiVersionCheck"]);
        match &self.location {
            Some(dir) => cmd.arg("--location").arg(dir),
            None => cmd.arg("--inMemoryPersistence"),
        };
        cmd.args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &self.blob_port.to_string(),
        ])
        .args([
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            &self.queue_port.to_string(),
        ])
        .args([
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            &self.table_port.to_string(),
        ])
        .args(&self.oauth_args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let child = spawn_owned(cmd).map_err(AzuriteError::Start)?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let limit = Duration::from_secs(30);
        let started = Instant::now();
        for port in [self.blob_port, self.queue_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                if started.elapsed() > limit {
                    return Err(AzuriteError::NotReady(limit));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }

    /// The `AzureWebJobsStorage` connection string for this instance.
    pub fn connection_string(&self) -> String {
        if self.oauth_args.is_empty() {
            return ConnectionString::azurite(self.blob_port, self.queue_port);
        }
        format!(
            "DefaultEndpointsProtocol=https;AccountName={};AccountKey={};BlobEndpoint={};QueueEndpoint={};",
            storage_auth::DEV_ACCOUNT,
            storage_auth::DEV_ACCOUNT_KEY,
            self.blob_endpoint(),
            self.queue_endpoint()
        )
    }

    pub fn connection(&self) -> ConnectionString {
        // The string is built from known-good parts.
        match ConnectionString::parse(&self.connection_string()) {
            Ok(c) => c,
            Err(e) => unreachable!("azurite connection string: {e}"),
        }
    }

    /// Stops Azurite. In memory, it is killed and its data is lost, as after a crash; on disk,
    /// it gets SIGTERM and saves its metadata (it only autosaves every 5 s otherwise).
    pub async fn stop(&self) {
        let taken = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut child) = taken else {
            return;
        };
        if self.location.is_some() {
            if let Some(pid) = child.id() {
                // SAFETY: signalling our own child process.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
                    return;
                }
            }
        }
        let _ = child.kill().await;
    }

    /// Starts it again on the same ports.
    pub async fn restart(&self) -> Result<(), AzuriteError> {
        self.stop().await;
        self.spawn().await
    }
}

/// Finds Azurite's entry script: `$AZURITE_JS`, else the repo's `tools/azurite`, installing
/// the pinned version through `scripts/install-azurite.sh` when it is missing.
pub fn azurite_entry() -> Result<PathBuf, AzuriteError> {
    if let Some(p) = std::env::var_os("AZURITE_JS") {
        return Ok(PathBuf::from(p));
    }
    let root = repo_root();
    let entry = root.join("tools/azurite/node_modules/azurite/dist/src/azurite.js");
    if entry.exists() {
        return Ok(entry);
    }
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/install-azurite.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| AzuriteError::Install(e.to_string()))?;
    if !out.status.success() || !entry.exists() {
        return Err(AzuriteError::Install(format!(
            "installer exited with {}",
            out.status
        )));
    }
    Ok(entry)
}

/// The workspace root (the parent of `devkit/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
