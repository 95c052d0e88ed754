//! `devkit`: run qualtrics-bridge locally behind the local Functions host on Azurite.
//! `devkit --help` and `devkit <command> --help` describe each command.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use devkit::azurite::{repo_root, Azurite};
use devkit::host::app::Settings;
use devkit::host::{HostOptions, LocalHost, TimerMode};
use std::path::{Path, PathBuf};

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
            sandbox = Sandbox::start_if_unconfigured(&mut settings).await?;
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
    if let (Some(sandbox), Some(url)) = (&sandbox, host.function_url("QualtricsWebhook")) {
        sandbox.demo(&url).await;
        sandbox.recipe();
    }
    let watch = sandbox.as_ref().map(Sandbox::watch_tickets);
    eprintln!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await.ok();
    if let Some(w) = watch {
        w.abort();
    }
    host.shutdown(std::time::Duration::from_secs(5)).await;
    drop(azurite);
    drop(sandbox);
    Ok(())
}

/// Sandbox mode: with no Qualtrics or ticketing settings, `devkit up` runs fake Qualtrics and
/// ServiceNow on loopback and points the handler at them, so the whole flow can be tried with
/// no accounts. Nothing leaves the machine.
struct Sandbox {
    /// Held so the fake keeps serving; dropping it stops it.
    _qualtrics: devkit::fakes::qualtrics::FakeQualtrics,
    servicenow: std::sync::Arc<devkit::fakes::servicenow::FakeServiceNow>,
    webhook_key: String,
    /// The completed response the start-up demo delivers.
    demo_response: String,
    /// Further completed responses the fake Qualtrics holds, for `devkit publish`.
    responses: Vec<String>,
}

const SANDBOX_SURVEY: &str = "SV_22VlHYNeldrrrkp";
/// How many completed responses the sandbox offers for `devkit publish`.
const SANDBOX_RESPONSES: usize = 3;
/// The analytics dataset: responses over the last `SANDBOX_ANALYTICS_DAYS` days.
const SANDBOX_ANALYTICS_RESPONSES: usize = 3000;
const SANDBOX_ANALYTICS_DAYS: u32 = 120;

/// The dataset ends a day before now (so a first export takes all of it), and starts at a
/// whole UTC day, so one seed gives one dataset per day of running.
fn sandbox_data_start_ms() -> i64 {
    const DAY: i64 = 86_400_000;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    (now / DAY - i64::from(SANDBOX_ANALYTICS_DAYS) - 1) * DAY
}

impl Sandbox {
    async fn start_if_unconfigured(settings: &mut Settings) -> anyhow::Result<Option<Self>> {
        let set = |settings: &Settings, k: &str| {
            settings.get(k).filter(|v| !v.trim().is_empty()).cloned()
        };
        let configured = [
            "QUALTRICS_BASE_URL",
            "SERVICENOW_INSTANCE_URL",
            "ZENDESK_BASE_URL",
        ]
        .iter()
        .any(|k| set(settings, k).is_some());
        if configured {
            return Ok(None);
        }
        // A preset key (environment or settings file) is kept, so a shell that already
        // exports one can sign deliveries; otherwise a throwaway key for this run.
        let webhook_key = set(settings, "QUALTRICS_WEBHOOK_KEY")
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let token = uuid::Uuid::new_v4().simple().to_string();
        let qualtrics = devkit::fakes::qualtrics::FakeQualtrics::start(&token).await?;
        let servicenow = devkit::fakes::servicenow::FakeServiceNow::start().await?;
        // The analytics survey: a definition and a few months of responses to build tables from.
        let dataset = devkit::fakes::sandbox_data::generate(
            devkit::fakes::sandbox_data::SANDBOX_ANALYTICS_SURVEY,
            devkit::fakes::sandbox_data::SANDBOX_SEED,
            SANDBOX_ANALYTICS_RESPONSES,
            sandbox_data_start_ms(),
            SANDBOX_ANALYTICS_DAYS,
        );
        qualtrics.add_dataset(&dataset);
        let mut responses = qualtrics.add_responses(SANDBOX_SURVEY, 1 + SANDBOX_RESPONSES);
        let demo_response = responses.remove(0);
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
        eprintln!(
            " Nothing leaves this machine; the webhook key below is a throwaway for this run."
        );
        eprintln!("==============================================================================");
        Ok(Some(Self {
            _qualtrics: qualtrics,
            servicenow: std::sync::Arc::new(servicenow),
            webhook_key,
            demo_response,
            responses,
        }))
    }

    /// Sends the signed webhook of a completed response the fake Qualtrics holds through the
    /// local host, and reports the ticket the fake ServiceNow received.
    async fn demo(&self, webhook_url: &str) {
        let response = &self.demo_response;
        let delivery =
            devkit::publisher::Delivery::signed(&self.webhook_key, SANDBOX_SURVEY, response);
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

    /// Prints what `devkit publish` needs in sandbox mode: the key (a throwaway, sandbox-only
    /// value) and the responses the fake Qualtrics knows, as `NAME=value` lines on stdout.
    fn recipe(&self) {
        let (survey, responses) = (SANDBOX_SURVEY, self.responses.join(" "));
        println!("QUALTRICS_WEBHOOK_KEY={}", self.webhook_key);
        println!("SANDBOX_SURVEY={survey}");
        println!("SANDBOX_RESPONSES={responses}");
        let first = self.responses.first().map(String::as_str).unwrap_or("R_…");
        eprintln!("Send your own delivery (another shell; any of SANDBOX_RESPONSES):");
        eprintln!(
            "  QUALTRICS_WEBHOOK_KEY={} target/release/devkit publish --url \"$WEBHOOK_URL\" --survey {survey} --response {first}",
            self.webhook_key
        );
    }

    /// Reports each ticket the fake ServiceNow creates from now on, so a `devkit publish`
    /// shows its outcome here.
    fn watch_tickets(&self) -> tokio::task::JoinHandle<()> {
        let servicenow = self.servicenow.clone();
        tokio::spawn(async move {
            let mut seen = servicenow.incidents().len();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let incidents = servicenow.incidents();
                for i in incidents.iter().skip(seen) {
                    let about = i.fields.get("correlation_id").map(String::as_str);
                    eprintln!(
                        "sandbox: fake ServiceNow created incident {} ({})",
                        i.number,
                        about.unwrap_or("no correlation id")
                    );
                }
                seen = seen.max(incidents.len());
            }
        })
    }
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
