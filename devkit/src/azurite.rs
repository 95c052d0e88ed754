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
    #[error("Azurite exited while starting (a port was taken)")]
    Exited,
    #[error("Azurite {found} ({path}) is older than {needed}, the first that accepts the storage service version the Azure SDK crates send (see scripts/install-azurite.sh); install {needed} or newer")]
    TooOld {
        path: PathBuf,
        found: String,
        needed: String,
    },
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
        // A port taken by another process between the check and Azurite's bind makes Azurite
        // exit (EADDRINUSE) after the ports it did open answered: try again on new ports.
        let mut tries = 0;
        loop {
            tries += 1;
            let me = Self {
                child: Mutex::new(None),
                // Azurite can be restarted on the same ports (`restart`).
                blob_port: restartable_port().map_err(AzuriteError::Start)?,
                queue_port: restartable_port().map_err(AzuriteError::Start)?,
                table_port: restartable_port().map_err(AzuriteError::Start)?,
                entry: entry.clone(),
                oauth_args: oauth_args.clone(),
                location: location.clone(),
            };
            match me.spawn().await {
                Err(AzuriteError::Exited) if tries < 3 => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(me),
            }
        }
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

    /// Whether the Azurite process has exited.
    fn exited(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    async fn spawn(&self) -> Result<(), AzuriteError> {
        let mut cmd = Command::new("node");
        // No `--skipApiVersionCheck`: Azurite refuses a service version it does not know, as
        // Azure would, so an Azurite older than the pin fails loudly instead of half-working.
        cmd.arg(&self.entry)
            .args(["--silent", "--disableTelemetry"]);
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
        for port in [self.blob_port, self.queue_port, self.table_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                if self.exited() {
                    return Err(AzuriteError::Exited);
                }
                if started.elapsed() > limit {
                    return Err(AzuriteError::NotReady(limit));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        // Every port answers, but one may be another process's: Azurite then exits at once.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if self.exited() {
            return Err(AzuriteError::Exited);
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
/// the pinned version through `scripts/install-azurite.sh` when it is missing or another
/// version (the SDK's service version needs the pin; older ones refuse it).
pub fn azurite_entry() -> Result<PathBuf, AzuriteError> {
    let root = repo_root();
    if let Some(p) = std::env::var_os("AZURITE_JS") {
        let entry = PathBuf::from(p);
        // `…/node_modules/azurite/dist/src/azurite.js` → `…/node_modules/azurite/package.json`
        let package = entry.ancestors().nth(3).map(|d| d.join("package.json"));
        let found = package.as_deref().and_then(package_version);
        if let (Some(found), Some(needed)) = (found, pinned_version(&root)) {
            if version_key(&found) < version_key(&needed) {
                return Err(AzuriteError::TooOld {
                    path: entry,
                    found,
                    needed,
                });
            }
        }
        return Ok(entry);
    }
    let entry = root.join("tools/azurite/node_modules/azurite/dist/src/azurite.js");
    if entry.exists() && installed_version(&root) == pinned_version(&root) {
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

/// The version `scripts/install-azurite.sh` pins (`AZURITE_VERSION="…"`).
fn pinned_version(root: &Path) -> Option<String> {
    let script = std::fs::read_to_string(root.join("scripts/install-azurite.sh")).ok()?;
    script.lines().find_map(|l| {
        Some(
            l.strip_prefix("AZURITE_VERSION=")?
                .trim_matches('"')
                .to_string(),
        )
    })
}

/// The version of the Azurite installed under `tools/azurite`.
fn installed_version(root: &Path) -> Option<String> {
    package_version(&root.join("tools/azurite/node_modules/azurite/package.json"))
}

/// `version` of an npm `package.json`.
fn package_version(path: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(v.get("version")?.as_str()?.to_string())
}

/// `3.37.0` → `[3, 37, 0]`, for ordering versions (a non-numeric part counts as 0).
fn version_key(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| p.split('-').next().unwrap_or("").parse().unwrap_or(0))
        .collect()
}

/// The workspace root (the parent of `devkit/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_and_the_pin_is_readable() {
        assert!(version_key("3.35.0") < version_key("3.37.0"));
        assert!(version_key("3.9.0") < version_key("3.37.0"));
        assert!(version_key("3.37.1") > version_key("3.37.0"));
        let pin = pinned_version(&repo_root()).expect("AZURITE_VERSION in install-azurite.sh");
        assert!(version_key(&pin) >= version_key("3.37.0"), "{pin}");
    }
}
