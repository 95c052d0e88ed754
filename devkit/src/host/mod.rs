//! The local Functions host: runs the real handler binary the way the Azure Functions host
//! does (reference `functions-host-protocol.md` §9), on Azurite. Used by the tests and by
//! `devkit host` for local runs where Core Tools is not installed.

pub mod app;
pub mod envelope;
pub mod ncrontab;
pub mod reply;
pub mod worker;

mod front_door;
mod queue;
mod timer;

use crate::queue_client::QueueClient;
use app::{App, AppError, FunctionSpec, Settings};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reply::{queue_messages, Reply, ReplyError};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage_auth::ConnectionString;
use tokio::sync::RwLock;
use worker::{OutputLog, Worker, WorkerError, WorkerSpec};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("connection {name}: {reason}")]
    Connection { name: String, reason: String },
    #[error("function {function}: {reason}")]
    Function { function: String, reason: String },
    #[error("cannot open the front door: {0}")]
    Listen(#[source] std::io::Error),
}

/// Whether timers follow their schedules or fire only on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    Schedule,
    Manual,
}

/// How to run the local host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The app root: `host.json`, the binary and one folder per function.
    pub app_root: PathBuf,
    /// App settings; they also become the handler's environment.
    pub settings: Settings,
    /// Front door port; 0 picks a free one.
    pub port: u16,
    /// Key accepted for `authLevel: function` (`?code=` or `x-functions-key`).
    pub function_key: String,
    /// Key accepted everywhere, including `/admin/functions/{name}`.
    pub master_key: String,
    pub timers: TimerMode,
    /// Echo the handler's output to stderr.
    pub echo: bool,
    /// Visibility lease taken on a queue message while it runs ([`DEFAULT_QUEUE_LEASE`], as
    /// the host). A message whose release failed (storage down) reappears only after it, so
    /// chaos tests shorten it to keep their runs bounded.
    pub queue_lease: Duration,
}

/// The host's lease on a queue message being processed: 10 minutes.
pub const DEFAULT_QUEUE_LEASE: Duration = Duration::from_secs(600);

/// How often the supervisor checks whether the handler is still alive.
const SUPERVISE_EVERY: Duration = Duration::from_millis(50);

/// The host's `HttpFunctionInvocationDispatcher`: worker errors less than
/// `WorkerRestartErrorIntervalThresholdInMinutes` (30) apart share one bucket, and the error
/// that fills it to [`WORKER_ERRORS_PER_HOST`] shuts the Functions host down instead of
/// restarting the worker (reference §1).
const WORKER_ERROR_WINDOW: Duration = Duration::from_secs(30 * 60);
const WORKER_ERRORS_PER_HOST: usize = 3;

/// What happened to one invocation.
#[derive(Debug, Clone)]
pub struct InvocationRecord {
    pub id: String,
    pub function: String,
    /// `Err` holds the failure as the host saw it.
    pub outcome: Result<(), String>,
    pub logs: Vec<String>,
    pub dequeue_count: Option<u32>,
}

/// A protocol rule the handler broke (a hang, a fragile output): always a defect.
pub type Violation = String;

pub(crate) struct Shared {
    app: App,
    opts: HostOptions,
    worker: RwLock<Worker>,
    storage: Option<QueueClient>,
    records: Mutex<Vec<InvocationRecord>>,
    violations: Mutex<Vec<Violation>>,
    output: OutputLog,
    /// Restarts after the handler exited on its own (worker or host restarts).
    crash_restarts: AtomicU32,
    /// How many of those were host restarts ([`WORKER_ERRORS_PER_HOST`] errors in a row).
    host_restarts: AtomicU32,
    worker_errors: Mutex<ErrorBucket>,
    /// Set while the host is restarting: the front door answers 503, as Azure's does while
    /// no host is running.
    restarting: AtomicBool,
    /// Invocations sent and not yet recorded, and every invocation ever started.
    in_flight: AtomicUsize,
    started: AtomicU64,
}

/// The host's worker-error bucket: when each error of the current host's run happened.
#[derive(Debug, Default)]
struct ErrorBucket(Vec<Instant>);

impl ErrorBucket {
    /// Records an error at `at` (emptying the bucket first when the previous error is more than
    /// 30 minutes old); true when it fills the bucket, i.e. the host shuts down. The new host
    /// starts with an empty bucket.
    fn record(&mut self, at: Instant) -> bool {
        if self
            .0
            .last()
            .is_some_and(|last| at.duration_since(*last) > WORKER_ERROR_WINDOW)
        {
            self.0.clear();
        }
        self.0.push(at);
        let shutdown = self.0.len() >= WORKER_ERRORS_PER_HOST;
        if shutdown {
            self.0.clear();
        }
        shutdown
    }
}

/// What the host is doing, for waiting on completion rather than on a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Invocations in flight (sent to the handler, outputs not yet bound).
    pub in_flight: usize,
    /// Invocations started since the host started: unchanged between two reads with nothing
    /// in flight means nothing ran in between.
    pub started: u64,
}

/// Counts one invocation as in flight until dropped (also when its future is cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running local host; dropping it stops the handler and every loop.
pub struct LocalHost {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalHost {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Everything the handler said, for the suite-wide redaction scan.
        let mut lines = self.shared.output.lines();
        if let Ok(records) = self.shared.records.lock() {
            lines.extend(records.iter().flat_map(|r| r.logs.iter().cloned()));
        }
        crate::canary::persist("host", &lines);
    }
}

impl LocalHost {
    /// Loads the app, starts the handler, and opens the front door, queue listeners and timers.
    pub async fn start(opts: HostOptions) -> Result<Self, HostError> {
        let app = App::load(&opts.app_root, &opts.settings)?;
        crate::canary::register_settings(opts.settings.iter());
        if app.host.enable_forwarding {
            tracing::warn!("forwarding/proxying is set, but every function here has non-HTTP bindings, so the host uses the JSON envelope");
        }
        let executable = {
            let candidate = app.root.join(&app.host.executable);
            if candidate.is_file() {
                candidate
            } else {
                app.host.executable.clone()
            }
        };
        let spec = WorkerSpec {
            executable,
            arguments: app.host.arguments.clone(),
            working_directory: app.root.join(&app.host.working_directory),
            app_root: app.root.clone(),
            env: opts.settings.clone(),
            echo: opts.echo,
            invocation_timeout: app.host.function_timeout + Duration::from_secs(60),
        };
        let storage = storage_client(&app, &opts.settings)?;
        let worker = Worker::start(spec).await?;
        let output = worker.output.clone();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
            .await
            .map_err(HostError::Listen)?;
        let port = listener.local_addr().map_err(HostError::Listen)?.port();
        let shared = Arc::new(Shared {
            app,
            opts,
            worker: RwLock::new(worker),
            storage,
            records: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            output,
            crash_restarts: AtomicU32::new(0),
            host_restarts: AtomicU32::new(0),
            worker_errors: Mutex::new(ErrorBucket::default()),
            restarting: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        });
        let mut tasks = vec![
            tokio::spawn(front_door::serve(shared.clone(), listener)),
            tokio::spawn(supervise(shared.clone())),
        ];
        for f in shared.app.functions.clone() {
            match f.trigger().map(|t| t.kind.as_str()) {
                Some("queueTrigger") => tasks.push(queue::listen(shared.clone(), f).await?),
                Some("timerTrigger") => {
                    if let Some(t) = timer::schedule(shared.clone(), f)? {
                        tasks.push(t);
                    }
                }
                Some("httpTrigger") => {}
                other => {
                    return Err(HostError::Function {
                        function: f.name.clone(),
                        reason: format!("trigger {other:?} is not supported by the local host"),
                    })
                }
            }
        }
        Ok(Self {
            shared,
            base_url: format!("http://127.0.0.1:{port}"),
            tasks,
        })
    }

    /// The public URL of an HTTP function's route, with the function key in `?code=`.
    pub fn function_url(&self, function: &str) -> Option<String> {
        let f = self.shared.app.function(function)?;
        let route = f
            .trigger()?
            .str("route")
            .unwrap_or(&f.name)
            .trim_matches('/')
            .to_string();
        Some(format!(
            "{}/{}/{route}?code={}",
            self.base_url, self.shared.app.host.route_prefix, self.shared.opts.function_key
        ))
    }

    /// Fires a timer (or any non-HTTP function with an empty input) now, like
    /// `POST /admin/functions/{name}`, and waits for the outcome.
    pub async fn fire(&self, function: &str) -> Result<InvocationRecord, HostError> {
        timer::fire_now(&self.shared, function).await
    }

    /// Every invocation so far, in completion order.
    pub fn records(&self) -> Vec<InvocationRecord> {
        self.shared
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Protocol rules the handler broke; a test should assert this is empty.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Everything the handler printed, across restarts.
    pub fn handler_output(&self) -> Vec<String> {
        self.shared.output.lines()
    }

    /// The storage account's queues as the host sees them.
    pub fn queues(&self) -> Option<&QueueClient> {
        self.shared.storage.as_ref()
    }

    /// Milliseconds from spawn to the first answer on `GET /` at the last (re)start.
    pub async fn handler_startup(&self) -> Duration {
        self.shared.worker.read().await.startup
    }

    pub async fn handler_pid(&self) -> Option<u32> {
        self.shared.worker.read().await.pid()
    }

    /// Kills the handler with SIGKILL and waits until the host has replaced it, as after a
    /// crash: the kill counts as a worker error, so the third within 30 minutes restarts the
    /// host ([`Self::host_restarts`]).
    ///
    /// The kill does not wait for in-flight invocations: they fail, as they would in Azure.
    pub async fn restart_handler(&self) -> Result<(), HostError> {
        // The count and the pid are read under one lock: the supervisor counts a restart while
        // it still holds the worker, so a restart in progress is either counted in `before` with
        // its new pid, or not begun. Reading the count first lost that race: the new handler
        // was killed, the count had already moved, and the next invocation found no handler.
        let (before, pid) = {
            let worker = self.shared.worker.read().await;
            (self.crash_restarts(), worker.pid())
        };
        if let Some(pid) = pid {
            // ESRCH (already gone) is fine: the supervisor replaces it either way.
            let _ = crate::process::sigkill(pid);
        }
        while self.crash_restarts() == before {
            if self.supervisor_gone() {
                return Err(HostError::Function {
                    function: "(host)".into(),
                    reason: "the handler could not be restarted".into(),
                });
            }
            tokio::time::sleep(SUPERVISE_EVERY).await;
        }
        Ok(())
    }

    fn supervisor_gone(&self) -> bool {
        // `tasks[1]` is `supervise`, spawned right after the front door.
        self.tasks.get(1).is_none_or(|t| t.is_finished())
    }

    /// How many times the handler exited on its own (a crash, an outside kill of
    /// [`Self::handler_pid`], [`Self::restart_handler`]) and a new one was started, by a
    /// worker restart or a host restart.
    pub fn crash_restarts(&self) -> u32 {
        self.shared.crash_restarts.load(Ordering::SeqCst)
    }

    /// How many of [`Self::crash_restarts`] were host restarts: the host shuts down at the
    /// third worker error within 30 minutes of the previous one, and the platform starts a
    /// new host, whose error count starts at zero.
    pub fn host_restarts(&self) -> u32 {
        self.shared.host_restarts.load(Ordering::SeqCst)
    }

    /// Invocations in flight and started so far.
    pub fn activity(&self) -> Activity {
        Activity {
            in_flight: self.shared.in_flight.load(Ordering::SeqCst),
            started: self.shared.started.load(Ordering::SeqCst),
        }
    }

    /// The queues the app's queue triggers read (lower case, as the host uses them).
    pub fn trigger_queues(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .app
            .functions
            .iter()
            .filter_map(|f| f.trigger())
            .filter(|t| t.kind == "queueTrigger")
            .filter_map(|t| t.str("queueName"))
            .map(str::to_ascii_lowercase)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Stops the loops and sends SIGTERM to the handler; returns its exit status.
    pub async fn shutdown(&self, grace: Duration) -> Option<std::process::ExitStatus> {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.worker.write().await.terminate(grace).await
    }
}

/// Starts the handler again whenever it exits on its own, as the Functions host restarts its
/// worker channel, or restarts the whole host at the third worker error in a row. In-flight
/// invocations have already failed with the process; the write lock waits for them to return.
async fn supervise(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SUPERVISE_EVERY).await;
        if !shared.worker.read().await.has_exited() {
            continue;
        }
        let mut w = shared.worker.write().await;
        if !w.has_exited() {
            continue; // restarted by someone else meanwhile
        }
        let host_restart = shared.worker_error(Instant::now());
        if host_restart {
            tracing::error!(
                "Exceeded http worker restart retry count. Shutting down Functions Host; the platform starts a new one"
            );
            shared.restarting.store(true, Ordering::SeqCst);
        } else {
            tracing::warn!("the handler exited; restarting it");
        }
        let restarted = w.restart().await;
        shared.restarting.store(false, Ordering::SeqCst);
        match restarted {
            Ok(()) => {
                if host_restart {
                    shared.host_restarts.fetch_add(1, Ordering::SeqCst);
                }
                shared.crash_restarts.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(error = %e, "the handler could not be restarted");
                return;
            }
        }
    }
}

fn storage_client(app: &App, settings: &Settings) -> Result<Option<QueueClient>, HostError> {
    let names: Vec<String> = app
        .functions
        .iter()
        .flat_map(|f| f.bindings.iter())
        .filter(|b| b.kind.starts_with("queue"))
        .map(|b| {
            b.str("connection")
                .filter(|c| !c.is_empty())
                .unwrap_or("AzureWebJobsStorage")
                .to_string()
        })
        .collect();
    let Some(name) = names.first() else {
        return Ok(None);
    };
    if let Some(other) = names.iter().find(|n| *n != name) {
        return Err(HostError::Connection {
            name: other.clone(),
            reason: format!(
                "the local host supports one storage connection; {name} is already used"
            ),
        });
    }
    let value = settings
        .get(name.as_str())
        .or_else(|| settings.get(&format!("AzureWebJobs{name}")))
        .filter(|v| !v.trim().is_empty());
    let Some(value) = value else {
        let identity = settings.keys().any(|k| k.starts_with(&format!("{name}__")));
        return Err(HostError::Connection {
            name: name.clone(),
            reason: if identity {
                "identity-based connections are not supported by the local host yet; set a connection string".into()
            } else {
                "the setting is missing".into()
            },
        });
    };
    let conn = ConnectionString::parse(value).map_err(|e| HostError::Connection {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(QueueClient::new(&conn)))
}

impl Shared {
    /// Records a worker error; true when the host shuts down (see [`ErrorBucket`]).
    fn worker_error(&self, at: Instant) -> bool {
        self.worker_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(at)
    }

    /// Whether the host is restarting (no front door until the new one is up).
    pub(crate) fn restarting(&self) -> bool {
        self.restarting.load(Ordering::SeqCst)
    }

    /// Sends one invocation, binds its queue outputs and records the outcome.
    pub(crate) async fn invoke(
        &self,
        f: &FunctionSpec,
        envelope: Value,
        dequeue_count: Option<u32>,
    ) -> Result<Reply, ReplyError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.started.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.in_flight);
        let result = {
            let worker = self.worker.read().await;
            worker.invoke(&f.name, &id, &envelope).await
        };
        let result = match result {
            Ok(reply) => self.bind_outputs(f, &reply).await.map(|()| reply),
            Err(e) => Err(e),
        };
        if let Err(ReplyError::Hang) = &result {
            tracing::error!(function = %f.name, "{}", ReplyError::Hang);
            self.violation(format!("{}: {}", f.name, ReplyError::Hang));
        }
        let record = InvocationRecord {
            id,
            function: f.name.clone(),
            outcome: result.as_ref().map(|_| ()).map_err(ToString::to_string),
            logs: result.as_ref().map(|r| r.logs.clone()).unwrap_or_default(),
            dequeue_count,
        };
        match &record.outcome {
            Ok(()) => tracing::info!(function = %f.name, id = %record.id, "invocation succeeded"),
            Err(e) => {
                tracing::warn!(function = %f.name, id = %record.id, error = %e, "invocation failed")
            }
        }
        if let Ok(mut r) = self.records.lock() {
            r.push(record);
        }
        result
    }

    fn violation(&self, v: String) {
        if let Ok(mut list) = self.violations.lock() {
            list.push(v);
        }
    }

    /// Enqueues every queue output (before the invocation counts as done, like the host).
    async fn bind_outputs(&self, f: &FunctionSpec, reply: &Reply) -> Result<(), ReplyError> {
        for b in f.outputs().filter(|b| b.kind == "queue") {
            let (messages, fragile) = queue_messages(&b.name, reply.outputs.get(&b.name));
            if let Some(w) = fragile {
                tracing::error!(function = %f.name, "{w}");
                self.violation(format!("{}: {w}", f.name));
            }
            if messages.is_empty() {
                continue;
            }
            let queue = b.str("queueName").unwrap_or_default().to_ascii_lowercase();
            let client = self.storage.as_ref().ok_or_else(|| {
                ReplyError::Transport("no storage connection for queue outputs".into())
            })?;
            self.put(client, &queue, &messages)
                .await
                .map_err(|e| ReplyError::Transport(format!("binding {} failed: {e}", b.name)))?;
        }
        Ok(())
    }

    pub(crate) async fn put(
        &self,
        client: &QueueClient,
        queue: &str,
        messages: &[Vec<u8>],
    ) -> Result<(), crate::queue_client::QueueError> {
        client.create_queue(queue).await?;
        for m in messages {
            let text = if self.app.host.queues.base64 {
                STANDARD.encode(m)
            } else {
                String::from_utf8_lossy(m).into_owned()
            };
            client.put_message(queue, &text).await?;
        }
        Ok(())
    }
}

/// Current UTC time as the host writes `sys.UtcNow`.
pub(crate) fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_worker_error_within_30_minutes_restarts_the_host() {
        let t0 = Instant::now();
        let min = |m: u64| t0 + Duration::from_secs(60 * m);
        let mut b = ErrorBucket::default();
        // 1st and 2nd: worker restarts; 3rd, each within 30 min of the previous: host restart.
        assert!(!b.record(min(0)));
        assert!(!b.record(min(29)));
        assert!(b.record(min(58)));
        // The new host counts from zero.
        assert!(!b.record(min(59)));
        assert!(!b.record(min(60)));
        assert!(b.record(min(61)));
        // More than 30 minutes since the previous error empties the bucket first.
        assert!(!b.record(min(100)));
        assert!(!b.record(min(131)));
        assert!(!b.record(min(140)));
        assert!(b.record(min(141)));
    }
}
