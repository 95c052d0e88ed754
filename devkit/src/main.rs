//! `devkit`: run qualtrics-bridge locally behind the local Functions host on Azurite.
//!
//! ```text
//! devkit up   --binary target/release/qualtrics-bridge [--port 7071] [--settings local.settings.json]
//! devkit host --app-root DIR [--port 7071] [--settings local.settings.json]
//! devkit publish --url URL [--key-env QUALTRICS_WEBHOOK_KEY] --survey SV_… --response R_…
//! devkit bench-startup --binary PATH [--runs 20]
//! devkit scan-output DIR [--min-outputs N]
//! ```

use anyhow::{bail, Context};
use devkit::azurite::{repo_root, Azurite};
use devkit::host::app::Settings;
use devkit::host::{HostOptions, LocalHost, TimerMode};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage:
  devkit up   --binary PATH [--port 7071] [--settings FILE]   stage the repo's app, start Azurite and the host
  devkit host --app-root DIR [--port 7071] [--settings FILE]  run the host on an existing app root
  devkit publish --url URL [--key-env NAME] --survey SV_… --response R_…  send one signed delivery
  devkit bench-startup --binary PATH [--runs 20]              spawn-to-ready time, idle RSS, size
  devkit scan-output DIR [--min-outputs N]                    redaction audit of a test run's output

Settings come from FILE's \"Values\" (local.settings.json format), then the environment for the
names it does not set. The function key is printed on start (DEVKIT_FUNCTION_KEY overrides it).";

struct Args {
    command: String,
    binary: Option<PathBuf>,
    app_root: Option<PathBuf>,
    settings: Option<PathBuf>,
    port: u16,
    runs: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().unwrap_or_default();
    let mut args = Args {
        command,
        binary: None,
        app_root: None,
        settings: None,
        port: 7071,
        runs: 20,
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--binary" => args.binary = Some(value()?.into()),
            "--app-root" => args.app_root = Some(value()?.into()),
            "--settings" => args.settings = Some(value()?.into()),
            "--port" => {
                let v = value()?;
                args.port = v
                    .parse()
                    .with_context(|| format!("--port {v:?} is not a port"))?;
            }
            "--runs" => {
                let v = value()?;
                args.runs = v
                    .parse()
                    .with_context(|| format!("--runs {v:?} is not a count"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn load_settings(file: Option<&Path>) -> anyhow::Result<Settings> {
    let mut settings = Settings::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        if let Some(values) = json.get("Values").and_then(|v| v.as_object()) {
            for (k, v) in values {
                let v = v
                    .as_str()
                    .with_context(|| format!("{}: Values.{k} must be a string", file.display()))?;
                settings.insert(k.clone(), v.to_string());
            }
        }
    }
    for (k, v) in std::env::vars() {
        settings.entry(k).or_insert(v);
    }
    Ok(settings)
}

/// `devkit scan-output DIR [--min-outputs N]`: fails if any protected value (secret, free
/// text, respondent address) registered during a test run appears in any output it collected,
/// or if fewer than N outputs were collected (a scan of nothing proves nothing).
fn scan_output(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.next().context("scan-output needs DIR")?);
    let mut min_outputs = 1usize;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--min-outputs" => {
                min_outputs = args
                    .next()
                    .context("--min-outputs needs a number")?
                    .parse()
                    .context("--min-outputs needs a number")?
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let scan =
        devkit::canary::scan(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    eprintln!(
        "redaction scan of {}: {} outputs, {} lines, {} protected values, {} leaks",
        dir.display(),
        scan.outputs,
        scan.lines,
        scan.values,
        scan.leaks.len()
    );
    for leak in &scan.leaks {
        eprintln!(
            "  LEAK {}:{}: a protected value {}",
            leak.file.display(),
            leak.line,
            leak.hint
        );
    }
    if scan.outputs < min_outputs || (min_outputs > 0 && scan.values == 0) {
        bail!(
            "only {} outputs and {} protected values collected (need at least {min_outputs} and 1): was {} set for the test run?",
            scan.outputs,
            scan.values,
            devkit::canary::OUTPUT_DIR_VAR
        );
    }
    if !scan.leaks.is_empty() {
        bail!("{} protected values reached the output", scan.leaks.len());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("publish") => return devkit::publisher::cli(std::env::args().skip(2)).await,
        Some("scan-output") => return scan_output(std::env::args().skip(2)),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = parse_args()?;
    if args.command == "bench-startup" {
        return bench_startup(&args);
    }
    let mut settings = load_settings(args.settings.as_deref())?;
    settings
        .entry("EXPORT_SCHEDULE".into())
        .or_insert_with(|| "0 */15 * * * *".into());
    let mut azurite = None;
    let mut sandbox = None;
    let app_root = match args.command.as_str() {
        "up" => {
            let binary = args.binary.context("devkit up needs --binary")?;
            let dest = repo_root().join("target/devkit-app");
            devkit::staging::stage(&repo_root(), &binary, &dest).context("cannot stage the app")?;
            let storage = settings
                .get("AzureWebJobsStorage")
                .map(String::as_str)
                .unwrap_or("");
            if storage.is_empty() || storage.eq_ignore_ascii_case("UseDevelopmentStorage=true") {
                let a = Azurite::start().await?;
                eprintln!(
                    "Azurite: blob 127.0.0.1:{} queue 127.0.0.1:{} (in memory)",
                    a.blob_port, a.queue_port
                );
                settings.insert("AzureWebJobsStorage".into(), a.connection_string());
                azurite = Some(a);
            }
            sandbox = Sandbox::start_if_unconfigured(&mut settings).await?;
            dest
        }
        "host" => args.app_root.context("devkit host needs --app-root")?,
        "" => bail!("{USAGE}"),
        other => bail!("unknown command {other:?}\n{USAGE}"),
    };
    let function_key = std::env::var("DEVKIT_FUNCTION_KEY")
        .unwrap_or_else(|_| uuid::Uuid::new_v4().simple().to_string());
    let master_key = uuid::Uuid::new_v4().simple().to_string();
    let host = LocalHost::start(HostOptions {
        app_root,
        settings,
        port: args.port,
        function_key,
        master_key: master_key.clone(),
        timers: TimerMode::Schedule,
        echo: true,
        queue_lease: devkit::host::DEFAULT_QUEUE_LEASE,
    })
    .await?;
    eprintln!(
        "Local Functions host on {} (handler ready in {:?})",
        host.base_url,
        host.handler_startup().await
    );
    if let Some(url) = host.function_url("QualtricsWebhook") {
        println!("WEBHOOK_URL={url}");
    }
    println!("ADMIN_KEY={master_key}");
    eprintln!("Run the export timer now: curl -X POST -H 'x-functions-key: {master_key}' -H 'content-type: application/json' -d '{{}}' {}/admin/functions/ExportPoller", host.base_url);
    if let (Some(sandbox), Some(url)) = (&sandbox, host.function_url("QualtricsWebhook")) {
        sandbox.demo(&url).await;
    }
    eprintln!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await.ok();
    host.shutdown(std::time::Duration::from_secs(5)).await;
    drop(azurite);
    drop(sandbox);
    Ok(())
}

/// Sandbox mode: with no Qualtrics or ticketing settings, `devkit up` runs fake Qualtrics and
/// ServiceNow on loopback and points the handler at them, so the whole flow can be tried with
/// no accounts. Nothing leaves the machine.
struct Sandbox {
    qualtrics: devkit::fakes::qualtrics::FakeQualtrics,
    servicenow: devkit::fakes::servicenow::FakeServiceNow,
    webhook_key: String,
}

const SANDBOX_SURVEY: &str = "SV_22VlHYNeldrrrkp";

impl Sandbox {
    async fn start_if_unconfigured(settings: &mut Settings) -> anyhow::Result<Option<Self>> {
        let configured = [
            "QUALTRICS_BASE_URL",
            "SERVICENOW_INSTANCE_URL",
            "ZENDESK_BASE_URL",
        ]
        .iter()
        .any(|k| settings.get(*k).is_some_and(|v| !v.trim().is_empty()));
        if configured {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let webhook_key = uuid::Uuid::new_v4().simple().to_string();
        let qualtrics = devkit::fakes::qualtrics::FakeQualtrics::start(&token).await?;
        let servicenow = devkit::fakes::servicenow::FakeServiceNow::start().await?;
        for (k, v) in [
            ("QUALTRICS_BASE_URL", qualtrics.base_url.clone()),
            ("QUALTRICS_API_TOKEN", token),
            ("QUALTRICS_WEBHOOK_KEY", webhook_key.clone()),
            ("SERVICENOW_INSTANCE_URL", servicenow.url()),
            (
                "SERVICENOW_USERNAME",
                devkit::fakes::servicenow::USERNAME.to_string(),
            ),
            (
                "SERVICENOW_PASSWORD",
                devkit::fakes::servicenow::PASSWORD.to_string(),
            ),
        ] {
            settings.insert(k.into(), v);
        }
        eprintln!("==============================================================================");
        eprintln!(
            " SANDBOX MODE: no Qualtrics/ServiceNow/Zendesk settings, so the handler talks to"
        );
        eprintln!(
            " devkit's fake Qualtrics ({}) and fake ServiceNow ({}).",
            qualtrics.base_url,
            servicenow.url()
        );
        eprintln!(" Nothing leaves this machine; keys and tokens are random for this run.");
        eprintln!("==============================================================================");
        Ok(Some(Self {
            qualtrics,
            servicenow,
            webhook_key,
        }))
    }

    /// Records one completed response in the fake Qualtrics, sends its signed webhook through
    /// the local host, and reports the ticket the fake ServiceNow received.
    async fn demo(&self, webhook_url: &str) {
        let Some(response) = self.qualtrics.add_responses(SANDBOX_SURVEY, 1).pop() else {
            return;
        };
        let delivery =
            devkit::publisher::Delivery::signed(&self.webhook_key, SANDBOX_SURVEY, &response);
        match devkit::publisher::Publisher::new(webhook_url)
            .deliver(&delivery)
            .await
        {
            Ok(reply) => eprintln!(
                "demo: signed webhook for {SANDBOX_SURVEY}/{response} answered {}",
                reply.status
            ),
            Err(e) => {
                eprintln!("demo: webhook delivery failed: {e}");
                return;
            }
        }
        for _ in 0..100 {
            if let Some(incident) = self.servicenow.incidents().into_iter().next() {
                eprintln!(
                    "demo: fake ServiceNow created incident {} for that response",
                    incident.number
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        eprintln!("demo: no ticket after 10 s; see the handler's log above");
    }
}

fn bench_startup(args: &Args) -> anyhow::Result<()> {
    let binary = args
        .binary
        .clone()
        .context("bench-startup needs --binary")?;
    let dest = repo_root().join("target/devkit-bench-app");
    devkit::staging::stage(&repo_root(), &binary, &dest).context("cannot stage the app")?;
    let f = devkit::bench::startup(&dest.join("qualtrics-bridge"), &dest, args.runs.max(1))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "startup: {} runs, median {:.1} ms, max {:.1} ms (spawn to first GET / answer)",
        f.runs.len(),
        ms(f.median()),
        ms(f.max())
    );
    println!("idle RSS: {:.1} MiB", f.idle_rss_kib as f64 / 1024.0);
    println!(
        "binary: {:.2} MB ({} bytes)",
        f.binary_bytes as f64 / 1e6,
        f.binary_bytes
    );
    Ok(())
}
