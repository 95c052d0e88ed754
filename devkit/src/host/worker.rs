//! The handler process: spawned with the host's environment, polled for readiness every
//! 25 ms for up to 30 s (any HTTP answer counts), restarted up to three times, and invoked
//! with chunked `POST /{FunctionName}` requests carrying the host's headers.

use super::reply::{parse_reply, Reply, ReplyError};
use crate::process::{free_port, spawn_owned};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The host version the local host claims in its headers.
pub const HOST_VERSION: &str = "4.1037.0";
const READY_POLL: Duration = Duration::from_millis(25);
const READY_LIMIT: Duration = Duration::from_secs(30);
const MAX_STARTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the handler {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Initializing HttpWorker timed out: the handler did not answer GET / within {0:?}")]
    NotReady(Duration),
    #[error("the handler exited during start-up ({status}); its last output:\n{output}")]
    Exited { status: String, output: String },
}

/// Lines the handler wrote, stdout and stderr interleaved, kept for assertions.
#[derive(Debug, Clone, Default)]
pub struct OutputLog(Arc<Mutex<Vec<String>>>);

impl OutputLog {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, line: String) {
        if let Ok(mut l) = self.0.lock() {
            l.push(line);
        }
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// How to start the handler.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub executable: PathBuf,
    pub arguments: Vec<String>,
    pub working_directory: PathBuf,
    pub app_root: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Echo the handler's output to this process's stderr.
    pub echo: bool,
    /// Per-invocation timeout (`functionTimeout` + 1 minute, as the host's client).
    pub invocation_timeout: Duration,
}

/// A running handler process.
#[derive(Debug)]
pub struct Worker {
    spec: WorkerSpec,
    /// In a mutex so that a supervisor holding only a shared reference can notice an exit.
    child: Mutex<Option<Child>>,
    pub port: u16,
    pub output: OutputLog,
    http: reqwest::Client,
    /// Start-up time of the last (re)start: spawn to first answer on `GET /`.
    pub startup: Duration,
}

impl Worker {
    /// Starts the handler, retrying up to three times as the host does.
    pub async fn start(spec: WorkerSpec) -> Result<Self, WorkerError> {
        let http = reqwest::Client::builder()
            .timeout(spec.invocation_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        let mut me = Self {
            spec,
            child: Mutex::new(None),
            port: 0,
            output: OutputLog::default(),
            http,
            startup: Duration::ZERO,
        };
        me.restart().await?;
        Ok(me)
    }

    /// (Re)starts the handler on a new port.
    pub async fn restart(&mut self) -> Result<(), WorkerError> {
        let mut last = None;
        for _ in 0..MAX_STARTS {
            self.kill().await;
            match self.start_once().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "handler failed to start");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(WorkerError::NotReady(READY_LIMIT)))
    }

    async fn start_once(&mut self) -> Result<(), WorkerError> {
        let port = free_port().map_err(|source| WorkerError::Spawn {
            path: self.spec.executable.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.spec.executable);
        let port_s = port.to_string();
        let worker_id = uuid::Uuid::new_v4().to_string();
        cmd.args(&self.spec.arguments)
            .current_dir(&self.spec.working_directory)
            .envs(&self.spec.env)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", &port_s)
            .env("FUNCTIONS_HTTPWORKER_PORT", &port_s)
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
            .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
            .env("FUNCTIONS_APP_ROOT_PATH", &self.spec.app_root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = spawn_owned(cmd).map_err(|source| WorkerError::Spawn {
            path: self.spec.executable.clone(),
            source,
        })?;
        for (stream, is_err) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                false,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                true,
            ),
        ] {
            let Some(stream) = stream else { continue };
            let log = self.output.clone();
            let echo = self.spec.echo;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if echo {
                        eprintln!(
                            "{}{line}",
                            if is_err {
                                "[handler:err] "
                            } else {
                                "[handler] "
                            }
                        );
                    }
                    log.push(line);
                }
            });
        }
        self.port = port;
        *self.child_mut() = Some(child);
        // Poll GET / every 25 ms; the budget counts sleeps only, like Utility.DelayAsync.
        let mut waited = Duration::ZERO;
        loop {
            match self
                .http
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
            {
                Ok(_) => break,
                Err(e) if !e.is_connect() => break, // any non-socket failure counts as ready
                Err(_) => {}
            }
            if let Some(child) = self.child_mut().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // Give the output readers a moment to drain.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Err(WorkerError::Exited {
                        status: status.to_string(),
                        output: self.output.tail(20),
                    });
                }
            }
            if waited >= READY_LIMIT {
                return Err(WorkerError::NotReady(READY_LIMIT));
            }
            tokio::time::sleep(READY_POLL).await;
            waited += READY_POLL;
        }
        self.startup = spawned.elapsed();
        Ok(())
    }

    /// Invokes `function` with `envelope`; the body is sent chunked, as the host's
    /// `ObjectContent` is.
    pub async fn invoke(
        &self,
        function: &str,
        invocation_id: &str,
        envelope: &serde_json::Value,
    ) -> Result<Reply, ReplyError> {
        let body = Bytes::from(envelope.to_string());
        let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let resp = self
            .http
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("x-azure-functions-hostversion", HOST_VERSION)
            .header("x-azure-functions-invocationid", invocation_id)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| ReplyError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| ReplyError::Transport(e.to_string()))?;
        parse_reply(status, content_type.as_deref(), &body)
    }

    fn child_mut(&mut self) -> &mut Option<Child> {
        match self.child.get_mut() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The handler's process id, if running.
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child.as_ref().and_then(Child::id)
    }

    /// Whether the handler process has exited (killed from outside, crashed, aborted).
    pub fn has_exited(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the handler at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child_mut().take() {
            let _ = child.kill().await;
        }
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit; returns the exit status.
    pub async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child_mut().take()?;
        if let Some(pid) = child.id() {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }
}
