//! `devkit demo-analytics`: builds the analytics layer from the sandbox dataset through the
//! real binary, then hands the tables to a reader command.
//!
//! Stages the app with the repo's `bridge.toml` (the sandbox sample, plus `[surveys.loop]` for
//! SV_3kSandboxVisits), starts Azurite, the fake
//! Qualtrics (SV_3kSandboxVisits: 3,000 responses over 120 days) and the fake ServiceNow, and
//! runs the real functions in the order a deployment would: ExportPoller exports the survey and
//! queues its ticket requests, TicketCreator raises an incident for each response its rule
//! selects (`values.QID1 <= 2`), every other incident is resolved through `loop-requests`
//! (LoopCloser applies it), and AnalyticsBuilder builds the tables. Then the command after `--`
//! runs with `AZURITE_BLOB_STORAGE_URL` (the blob endpoint, without the account) and
//! `ANALYTICS_CONTAINER` set, and everything stops. Nothing leaves the machine.

use super::{repo_root, Azurite, HostOptions, LocalHost, Sandbox, Settings, TimerMode};
use anyhow::{bail, Context};
use base64::Engine;
use devkit::fakes::sandbox_data::SANDBOX_ANALYTICS_SURVEY;
use devkit::queue_client::QueueClient;
use std::path::Path;
use std::time::{Duration, Instant};

const CONTAINER: &str = "qualtrics-analytics";
/// How long the whole build may take before the demo gives up.
const LIMIT: Duration = Duration::from_secs(900);

pub async fn run(binary: &Path, then: &[String]) -> anyhow::Result<()> {
    let Some((program, args)) = then.split_first() else {
        bail!("demo-analytics: give the reader command after `--`");
    };
    let dest = repo_root().join("target/devkit-demo-app");
    devkit::staging::stage(&repo_root(), binary, &dest).context("cannot stage the app")?;
    // The sample's last survey is SV_3kSandboxVisits: close its loop too (write-back to the
    // fake Qualtrics), so resolved incidents reach the loop ledger and ticket_link.
    let toml = dest.join("bridge.toml");
    let mut text = std::fs::read_to_string(&toml).context("staged bridge.toml")?;
    text.push_str("\n[surveys.loop]\n");
    std::fs::write(&toml, text).context("staged bridge.toml")?;
    let azurite = Azurite::start().await?;
    let mut settings = Settings::new();
    for (k, v) in [
        // Timers run when the demo fires them, in order.
        ("EXPORT_SCHEDULE", "0 0 0 1 1 *"),
        ("TICKET_SYNC_SCHEDULE", "0 0 0 1 1 *"),
        ("ANALYTICS_SCHEDULE", "0 0 0 1 1 *"),
        // Build whatever was exported, however little.
        ("ANALYTICS_BATCH_MAX_AGE_SECONDS", "0"),
        ("BRIDGE_LOG", "warn"),
    ] {
        settings.insert(k.into(), v.into());
    }
    settings.insert("AzureWebJobsStorage".into(), azurite.connection_string());
    let sandbox = Sandbox::start_if_unconfigured(&mut settings, &dest)
        .await?
        .context("sandbox mode did not start")?;
    let host = LocalHost::start(HostOptions {
        app_root: dest,
        settings,
        port: 0,
        function_key: uuid::Uuid::new_v4().simple().to_string(),
        master_key: uuid::Uuid::new_v4().simple().to_string(),
        timers: TimerMode::Manual,
        echo: false,
        queue_lease: devkit::host::DEFAULT_QUEUE_LEASE,
    })
    .await?;
    let result = build(&host, &azurite, &sandbox).await;
    let status = match result {
        Ok(()) => {
            let blob = azurite.blob_endpoint();
            let base = blob.trim_end_matches("/devstoreaccount1");
            eprintln!("demo: tables built; running the reader: {}", then.join(" "));
            Some(
                tokio::process::Command::new(program)
                    .args(args)
                    .env("AZURITE_BLOB_STORAGE_URL", base)
                    .env("ANALYTICS_CONTAINER", CONTAINER)
                    .status()
                    .await
                    .with_context(|| format!("cannot run {program}"))?,
            )
        }
        Err(e) => {
            eprintln!("demo: {e:#}");
            None
        }
    };
    host.shutdown(Duration::from_secs(5)).await;
    drop(sandbox);
    drop(azurite);
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("the reader failed: {s}"),
        None => bail!("the analytics layer was not built"),
    }
}

async fn fire(host: &LocalHost, function: &str) -> anyhow::Result<Vec<String>> {
    let r = host.fire(function).await?;
    if let Err(e) = r.outcome {
        bail!("{function} failed: {e}");
    }
    Ok(r.logs)
}

/// Waits until `queue` is empty and no invocation is in flight, twice in a row with nothing
/// started between (the queue trigger has taken, and finished, every message).
async fn drained(host: &LocalHost, queues: &QueueClient, queue: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    let mut idle_since = None;
    while Instant::now() < deadline {
        let left = queues.approximate_count(queue).await.unwrap_or(u64::MAX);
        let a = host.activity();
        idle_since = match (left, a.in_flight, idle_since) {
            (0, 0, Some(started)) if started == a.started => return Ok(()),
            (0, 0, _) => Some(a.started),
            _ => None,
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    bail!("{queue} did not drain within {LIMIT:?}")
}

async fn build(host: &LocalHost, azurite: &Azurite, sandbox: &Sandbox) -> anyhow::Result<()> {
    let queues = QueueClient::new(&azurite.connection());
    let t0 = Instant::now();
    loop {
        let logs = fire(host, "ExportPoller").await?;
        if let Some(line) = logs
            .iter()
            .find(|l| l.starts_with(&format!("{SANDBOX_ANALYTICS_SURVEY}: exported")))
        {
            eprintln!("demo: {line}");
            break;
        }
        if t0.elapsed() > LIMIT {
            bail!("the export did not finish: {logs:?}");
        }
    }
    // The export queues ticket requests only for responses the webhook may have missed
    // lately; a deployment's webhook would have delivered every detractor: queue those the
    // same way (TicketCreator's rule still decides).
    queues.create_queue("ticket-requests").await?;
    let data = devkit::fakes::sandbox_data::generate(
        SANDBOX_ANALYTICS_SURVEY,
        devkit::fakes::sandbox_data::SANDBOX_SEED,
        devkit::sandbox::SANDBOX_ANALYTICS_RESPONSES,
        devkit::sandbox::sandbox_data_start_ms(),
        devkit::sandbox::SANDBOX_ANALYTICS_DAYS,
    );
    let mut requested = 0;
    for r in &data.responses {
        let row: serde_json::Value = serde_json::from_str(&r.text)?;
        if row["values"]["QID1_NPS_GROUP"] != 1 {
            continue;
        }
        let request = serde_json::json!({"v": 1, "surveyId": SANDBOX_ANALYTICS_SURVEY,
            "responseId": r.id, "source": "webhook", "receivedAt": "2026-12-01T00:00:00Z"});
        let text = base64::engine::general_purpose::STANDARD.encode(request.to_string());
        queues.put_message("ticket-requests", &text).await?;
        requested += 1;
    }
    eprintln!("demo: {requested} detractor(s) delivered to TicketCreator");
    drained(host, &queues, "ticket-requests").await?;
    let incidents = sandbox.servicenow().incidents();
    eprintln!(
        "demo: TicketCreator raised {} incident(s) in the fake ServiceNow",
        incidents.len()
    );
    queues.create_queue("loop-requests").await?;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut resolved = 0;
    for (i, incident) in incidents.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let Some(rid) = incident
            .fields
            .get("correlation_id")
            .and_then(|c| c.rsplit(':').next())
        else {
            continue;
        };
        let change = serde_json::json!({
            "v": 1, "system": "servicenow", "ticketId": incident.sys_id,
            "ticketNumber": incident.number, "surveyId": SANDBOX_ANALYTICS_SURVEY,
            "responseId": rid, "status": "6", "state": "resolved", "changedAt": now,
            "sequence": 2, "source": "event", "eventId": format!("demo-{i}"), "receivedAt": now,
        });
        let text = base64::engine::general_purpose::STANDARD.encode(change.to_string());
        queues.put_message("loop-requests", &text).await?;
        resolved += 1;
    }
    drained(host, &queues, "loop-requests").await?;
    eprintln!("demo: {resolved} incident(s) resolved through LoopCloser");
    for line in fire(host, "AnalyticsBuilder").await? {
        eprintln!("demo: {line}");
    }
    Ok(())
}
