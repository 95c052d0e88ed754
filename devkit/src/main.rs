//! `devkit`: run qualtrics-bridge locally behind the local Functions host on Azurite.
//! `devkit --help` and `devkit <command> --help` describe each command.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use devkit::azurite::{repo_root, Azurite};
use devkit::host::app::Settings;
use devkit::host::{HostOptions, LocalHost, TimerMode};
use devkit::sandbox::Sandbox;
use std::path::{Path, PathBuf};

mod demo_analytics;

/// Local Functions host, fake services and tools for qualtrics-bridge.
#[derive(Debug, Parser)]
#[command(name = "devkit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stage the repo's app, start Azurite and the local host (sandbox mode when no Qualtrics
    /// or ticketing setting is set).
    Up {
        /// The handler binary to stage (target/release/qualtrics-bridge).
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Run the local host on an existing app root.
    Host {
        /// Directory holding host.json, the handler and <Function>/function.json.
        #[arg(long, value_name = "DIR")]
        app_root: PathBuf,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Send one signed completed-response delivery (form: Topic, MSG, HMAC) and print the
    /// status; fails unless it is 2xx.
    Publish {
        /// The webhook URL, with ?code=<function key> (devkit up prints it as WEBHOOK_URL).
        #[arg(long)]
        url: String,
        /// Environment variable that holds the webhook key to sign with.
        #[arg(long, value_name = "NAME", default_value = "QUALTRICS_WEBHOOK_KEY")]
        key_env: String,
        /// The survey (SV_…).
        #[arg(long, value_name = "SV_…")]
        survey: String,
        /// The response (R_…); in sandbox mode, one devkit up printed as SANDBOX_RESPONSES.
        #[arg(long, value_name = "R_…")]
        response: String,
        /// Brand id in the topic.
        #[arg(long, default_value = devkit::publisher::DEFAULT_BRAND)]
        brand: String,
        /// Send this many extra copies (duplicate deliveries).
        #[arg(long, value_name = "N", default_value_t = 0)]
        duplicates: usize,
    },
    /// Build the analytics tables from the sandbox dataset through the real binary (export,
    /// tickets, loop, AnalyticsBuilder on Azurite), then run the reader command given after
    /// `--` with AZURITE_BLOB_STORAGE_URL and ANALYTICS_CONTAINER set
    /// (scripts/demo-analytics.sh).
    DemoAnalytics {
        /// The handler binary to stage (target/release/qualtrics-bridge).
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// The reader command and its arguments.
        #[arg(last = true, required = true)]
        then: Vec<String>,
    },
    /// Spawn-to-ready time, idle RSS and size of the handler.
    BenchStartup {
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Redaction audit of a test run's output: fails if a protected value reached it, or if
    /// fewer than N outputs were collected (a scan of nothing proves nothing).
    ScanOutput {
        dir: PathBuf,
        #[arg(long, value_name = "N", default_value_t = 1)]
        min_outputs: usize,
    },
}

#[derive(Debug, Args)]
struct HostArgs {
    /// Front door port.
    #[arg(long, default_value_t = 7071)]
    port: u16,
    /// Settings file in local.settings.json format. Like Core Tools, a non-empty environment
    /// variable wins over the file's "Values" entry of the same name.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
}

/// The settings the handler sees, with Core Tools' precedence: a variable set (non-empty) in
/// the environment wins over the file's `Values` entry, which fills the rest. Returns the
/// names skipped from the file.
fn merge_settings(
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<(Settings, Vec<String>)> {
    let mut settings: Settings = env.into_iter().collect();
    let mut skipped = Vec::new();
    let Some((path, text)) = file else {
        return Ok((settings, skipped));
    };
    let json: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(values) = json.get("Values").and_then(|v| v.as_object()) {
        for (k, v) in values {
            let v = v
                .as_str()
                .with_context(|| format!("{}: Values.{k} must be a string", path.display()))?;
            if settings.get(k).is_some_and(|e| !e.is_empty()) {
                skipped.push(k.clone());
            } else {
                settings.insert(k.clone(), v.to_string());
            }
        }
    }
    Ok((settings, skipped))
}

fn load_settings(file: Option<&Path>) -> anyhow::Result<Settings> {
    let text = file
        .map(|f| std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display())))
        .transpose()?;
    let (settings, skipped) = merge_settings(file.zip(text.as_deref()), std::env::vars())?;
    for k in skipped {
        // Core Tools' own words, so the behaviour is recognisable.
        eprintln!("Skipping '{k}' from local settings as it's already defined in current environment variables.");
    }
    Ok(settings)
}

/// `devkit scan-output DIR [--min-outputs N]`: fails if any protected value (secret, free
/// text, respondent address) registered during a test run appears in any output it collected,
/// or if fewer than N outputs were collected (a scan of nothing proves nothing).
fn scan_output(dir: &Path, min_outputs: usize) -> anyhow::Result<()> {
    let scan =
        devkit::canary::scan(dir).with_context(|| format!("cannot read {}", dir.display()))?;
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
    let (binary, app_root, host) = match Cli::parse().command {
        Command::Publish {
            url,
            key_env,
            survey,
            response,
            brand,
            duplicates,
        } => {
            return devkit::publisher::publish(
                &url, &key_env, &brand, &survey, &response, duplicates,
            )
            .await
        }
        Command::ScanOutput { dir, min_outputs } => return scan_output(&dir, min_outputs),
        Command::DemoAnalytics { binary, then } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_target(false)
                .init();
            return demo_analytics::run(&binary, &then).await;
        }
        Command::BenchStartup { binary, runs } => return bench_startup(&binary, runs),
        Command::Up { binary, host } => (Some(binary), None, host),
        Command::Host { app_root, host } => (None, Some(app_root), host),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let mut settings = load_settings(host.settings.as_deref())?;
    settings
        .entry("EXPORT_SCHEDULE".into())
        .or_insert_with(|| "0 */15 * * * *".into());
    settings
        .entry("TICKET_SYNC_SCHEDULE".into())
        .or_insert_with(|| "0 */30 * * * *".into());
    settings
        .entry("ANALYTICS_SCHEDULE".into())
        .or_insert_with(|| "0 5 * * * *".into());
    let mut azurite = None;
    let mut sandbox = None;
    let app_root = match (binary, app_root) {
        (Some(binary), _) => {
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
            sandbox = Sandbox::start_if_unconfigured(&mut settings, &dest)
                .await
                .context("cannot start sandbox mode")?;
            dest
        }
        (None, Some(root)) => root,
        (None, None) => bail!("devkit: no app to run"),
    };
    let function_key = std::env::var("DEVKIT_FUNCTION_KEY")
        .unwrap_or_else(|_| uuid::Uuid::new_v4().simple().to_string());
    let master_key = uuid::Uuid::new_v4().simple().to_string();
    let host = LocalHost::start(HostOptions {
        app_root,
        settings,
        port: host.port,
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
    // Ctrl-C during the tour stops everything too (the tour waits up to a minute or two).
    let mut stopped = false;
    if let Some(sandbox) = &sandbox {
        tokio::select! {
            () = sandbox.tour(&host) => sandbox.recipe(),
            _ = tokio::signal::ctrl_c() => stopped = true,
        }
    }
    let watch = sandbox.as_ref().map(Sandbox::watch_tickets);
    if !stopped {
        eprintln!("Ctrl-C stops everything.");
        tokio::signal::ctrl_c().await.ok();
    }
    if let Some(w) = watch {
        w.abort();
    }
    host.shutdown(std::time::Duration::from_secs(5)).await;
    drop(azurite);
    drop(sandbox);
    Ok(())
}

fn bench_startup(binary: &Path, runs: usize) -> anyhow::Result<()> {
    let dest = repo_root().join("target/devkit-bench-app");
    devkit::staging::stage(&repo_root(), binary, &dest).context("cannot stage the app")?;
    let f = devkit::bench::startup(&dest.join("qualtrics-bridge"), &dest, runs.max(1))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_wins_over_the_files_values_as_in_core_tools() {
        let file = r#"{"Values": {"QUALTRICS_BASE_URL": "", "BRIDGE_CONFIG": "file.toml",
            "EXPORT_SCHEDULE": "0 0 * * * *", "KEY_VAULT_URL": "https://file.vault.azure.net"}}"#;
        let env = vars(&[
            ("QUALTRICS_BASE_URL", "http://127.0.0.1:9/"),
            ("BRIDGE_CONFIG", "env.toml"),
            ("KEY_VAULT_URL", ""),
            ("ONLY_ENV", "x"),
        ]);
        let (s, skipped) =
            merge_settings(Some((Path::new("local.settings.json"), file)), env).unwrap();
        // Set in the environment: the file's entry is skipped, even when the file's is empty.
        assert_eq!(s["QUALTRICS_BASE_URL"], "http://127.0.0.1:9/");
        assert_eq!(s["BRIDGE_CONFIG"], "env.toml");
        assert_eq!(skipped, ["BRIDGE_CONFIG", "QUALTRICS_BASE_URL"]);
        // Empty in the environment counts as unset (Core Tools: IsNullOrEmpty): the file's wins.
        assert_eq!(s["KEY_VAULT_URL"], "https://file.vault.azure.net");
        assert_eq!(s["EXPORT_SCHEDULE"], "0 0 * * * *");
        assert_eq!(s["ONLY_ENV"], "x");
    }

    #[test]
    fn values_must_be_strings_and_the_file_json() {
        let path = Path::new("local.settings.json");
        let err =
            merge_settings(Some((path, r#"{"Values": {"PORT": 7071}}"#)), vars(&[])).unwrap_err();
        assert!(err.to_string().contains("Values.PORT"), "{err}");
        assert!(merge_settings(Some((path, "{")), vars(&[])).is_err());
    }

    #[test]
    fn every_command_parses_with_its_flags() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "devkit",
            "publish",
            "--url",
            "http://127.0.0.1:1/x",
            "--survey",
            "SV_1",
            "--response",
            "R_1",
        ])
        .unwrap();
        match cli.command {
            Command::Publish {
                key_env,
                brand,
                duplicates,
                ..
            } => {
                assert_eq!(key_env, "QUALTRICS_WEBHOOK_KEY");
                assert_eq!(brand, devkit::publisher::DEFAULT_BRAND);
                assert_eq!(duplicates, 0);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["devkit", "up", "--binary", "b", "--port", "8080"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Up {
                host: HostArgs { port: 8080, .. },
                ..
            }
        ));
        for bad in [
            &["devkit", "up"][..],
            &["devkit", "up", "--binary", "b", "--port", "x"],
            &["devkit", "host", "--app-root", "d", "--bogus"],
            &["devkit", "nonsense"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
