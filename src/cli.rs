//! The command line: handler mode by default, plus operator subcommands. Exit codes: 0 done,
//! 1 failed at run time, 2 bad usage or invalid configuration.

use crate::config::{BridgeConfig, HandlerSettings, SettingSource, KNOWN_SETTINGS};
use crate::deps::Deps;
use crate::env::{env_lookup, setting};
use crate::export;
use crate::functions::Functions;
use crate::qualtrics::{CallBudget, QualtricsClient, QualtricsError};
use crate::secrets::{SecretName, SecretsProvider};
use crate::startup;
use crate::storage::Storage;
use crate::subscriptions::{self, OurUrl};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// qualtrics-bridge: Qualtrics feedback → Blob exports and ServiceNow/Zendesk tickets.
///
/// Without a subcommand it runs as an Azure Functions custom handler on
/// 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (the Functions host starts it that way).
/// Operator subcommands read the same app settings (environment variables) and bridge.toml.
#[derive(Debug, Parser)]
// `about`/`long_about` come from the doc comment above (a bare `about` would show the crate
// description instead, and `long_about = None` would drop the paragraphs).
#[command(name = "qualtrics-bridge", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as the custom handler (the default).
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and replay the poison queue (ticket-requests-poison).
    #[command(subcommand)]
    Poison(PoisonCommand),
    /// Manage the Qualtrics event subscriptions that deliver webhooks to this app.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Export one survey now (a one-off backfill), through the timer's export code.
    #[command(long_about = EXPORT_HELP)]
    Export {
        /// The survey to export (SV_…); it need not be in bridge.toml.
        #[arg(long, value_name = "SURVEY_ID")]
        survey: String,
        /// Only responses recorded after this instant: RFC 3339 (2026-11-01T00:00:00Z) or a
        /// date (2026-11-01, midnight UTC). Absent: every response.
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
    },
}

const EXPORT_HELP: &str =
    "Export one survey now (a one-off backfill), through the timer's export code.

The responses go to the export container in the same layout as ExportPoller's
({surveyId}/{yyyy}/{mm}/{dd}/{startedAt}-{exportId}.ndjson). The timer's incremental state
(bridge-state/exports/{surveyId}.json) is never read or changed: a backfill does not continue
from, or move, the timer's continuation token, and queues no ticket requests. It keeps its own
state blob (bridge-state/backfills/{surveyId}.json) for its lease and crash repair: a second
backfill of the same survey at the same time is refused, and a rerun after a crash first
finishes the interrupted one. Responses a backfill exports may also be in the timer's blobs:
consumers de-duplicate by responseId.

Progress goes to stderr (a bar on a terminal, plain lines otherwise); the result to stdout.
Settings: AzureWebJobsStorage…, QUALTRICS_BASE_URL, the qualtrics-api-token secret.";

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Make the event subscriptions for --url match bridge.toml.
    #[command(long_about = SYNC_HELP)]
    Sync {
        /// This app's webhook URL, as Qualtrics should call it, with the function key:
        /// https://<app>/api/qualtrics/events?code=<key>.
        #[arg(long, value_name = "URL")]
        url: String,
        /// Re-create every subscription of --url with the current qualtrics-webhook-key, then
        /// delete the old ones (Qualtrics cannot update a subscription).
        #[arg(long)]
        rotate_key: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

const SYNC_HELP: &str = "Make the event subscriptions for --url match bridge.toml.

Lists every Qualtrics event subscription (all pages). Those whose publicationUrl is --url
(compared normalised: case, default port, trailing slash and parameter order do not matter,
nor the function key in ?code= unless --url has one) are this app's; all others are left
alone, whatever their topic. Then:
  * creates surveyengine.completedResponse.<SV_id> for each survey in bridge.toml that has
    none, with the qualtrics-webhook-key secret as sharedKey;
  * deletes this app's subscriptions whose survey is no longer in bridge.toml, duplicates
    (one is kept per topic), and those whose URL carries another function key than --url's
    (replaced by a new one).
Creates happen first; if any fails, nothing is deleted. A second run changes nothing.

Settings: QUALTRICS_BASE_URL, BRIDGE_CONFIG, the qualtrics-api-token (a brand-admin token)
and qualtrics-webhook-key secrets (Key Vault with KEY_VAULT_URL, else environment).";

#[derive(Debug, Subcommand)]
pub enum PoisonCommand {
    /// Show parked messages with the ledger's reason (at most 32, oldest first).
    List {
        /// Show at most this many (1-32; one peek of the queue returns at most 32).
        /// Absent: all, up to 32.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
        limit: Option<u32>,
    },
    /// Move messages back to ticket-requests, byte-exact.
    Replay {
        /// Move at most this many. Absent: all (a --dry-run lists at most 32, one peek).
        #[arg(long)]
        limit: Option<u32>,
        /// Print what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate bridge.toml and the settings; print the resolved plan with secrets masked.
    Check,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match startup::run_from_env().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qualtrics-bridge: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Check) => config_check(),
        Command::Poison(cmd) => poison(cmd).await,
        Command::Subscriptions(SubscriptionsCommand::Sync {
            url,
            rotate_key,
            dry_run,
        }) => subscriptions_sync(&url, rotate_key, dry_run).await,
        Command::Export { survey, since } => export(&survey, since.as_deref()).await,
    }
}

/// A usage or configuration error: exit code 2.
fn usage(cmd: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{cmd}: {e}");
    ExitCode::from(2)
}

/// A run-time failure: exit code 1.
fn failed(cmd: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{cmd}: {e}");
    ExitCode::FAILURE
}

/// The shared clients as the handler builds them, from the environment.
fn deps(cmd: &str) -> Result<Deps, ExitCode> {
    Deps::build(std::sync::Arc::new(env_lookup)).map_err(|e| usage(cmd, e))
}

/// `bridge.toml` as the handler reads it, and where it was read from.
fn bridge(cmd: &str) -> Result<(BridgeConfig, HandlerSettings), ExitCode> {
    let settings = HandlerSettings::with_port(0);
    let bridge = settings.load_bridge().map_err(|e| usage(cmd, e))?;
    Ok((bridge, settings))
}

/// The secrets and the Qualtrics client, built as the handler builds them (and nothing
/// else: a subscriptions sync needs no storage).
fn qualtrics(cmd: &str) -> Result<(SecretsProvider, Option<QualtricsClient>), ExitCode> {
    let lookup = &env_lookup;
    crate::identity::check(lookup).map_err(|e| usage(cmd, e))?;
    let transport = crate::identity::transport(lookup).map_err(|e| usage(cmd, e))?;
    let secrets = SecretsProvider::from_settings(lookup, &transport).map_err(|e| usage(cmd, e))?;
    let client = QualtricsClient::from_settings(lookup).map_err(|e| usage(cmd, e))?;
    Ok((secrets, client))
}

/// Missing or unusable settings and secrets are configuration (2); the rest run time (1).
fn qualtrics_failure(cmd: &str, e: QualtricsError) -> ExitCode {
    match e {
        QualtricsError::Token(..) | QualtricsError::Config(_) => usage(cmd, e),
        _ => failed(cmd, e),
    }
}

async fn subscriptions_sync(url: &str, rotate: bool, dry_run: bool) -> ExitCode {
    const CMD: &str = "subscriptions sync";
    let ours = match OurUrl::parse(url) {
        Ok(u) => u,
        Err(e) => return usage(CMD, e),
    };
    let (bridge, settings) = match bridge(CMD) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if bridge.surveys.is_empty() {
        // An empty or missing bridge.toml would otherwise delete every subscription of --url.
        return usage(
            CMD,
            format!(
                "{}: no survey configured; refusing to sync",
                settings.bridge_config.display()
            ),
        );
    }
    let (secrets, client) = match qualtrics(CMD) {
        Ok(q) => q,
        Err(code) => return code,
    };
    let Some(client) = client.as_ref() else {
        return usage(
            CMD,
            format!("setting {} is not set", crate::qualtrics::BASE_URL_SETTING),
        );
    };
    // No function timeout here; 429 retries are still bounded.
    let budget = CallBudget::new(None, 30);
    let existing = match client.list_event_subscriptions(&secrets, &budget).await {
        Ok(e) => e,
        Err(e) => return qualtrics_failure(CMD, e),
    };
    let wanted: Vec<String> = bridge
        .surveys
        .iter()
        .map(|s| subscriptions::topic_of(&s.id))
        .collect();
    let plan = subscriptions::plan(&existing, &wanted, &ours, rotate);
    println!(
        "{} event subscription(s) listed; this app's URL: {}",
        existing.len(),
        ours.masked()
    );
    let would = if dry_run { "would " } else { "" };
    for (id, topic) in &plan.keep {
        println!("  keep          {id}  {topic}");
    }
    for topic in &plan.create {
        println!("  {would}create  {topic}");
    }
    for d in &plan.delete {
        println!(
            "  {would}delete  {}  {}  ({})",
            d.id,
            d.topic,
            d.reason.describe()
        );
    }
    println!(
        "  {} subscription(s) of other URLs left alone",
        plan.foreign
    );
    if plan.is_noop() {
        println!("nothing to do: the subscriptions match bridge.toml");
        return ExitCode::SUCCESS;
    }
    if dry_run {
        println!(
            "dry run: nothing changed ({} to create, {} to delete)",
            plan.create.len(),
            plan.delete.len()
        );
        return ExitCode::SUCCESS;
    }
    // Read even for a delete-only plan: a sync that cannot create is not one to start.
    let key = match secrets.get(SecretName::QualtricsWebhookKey).await {
        Ok(Some(k)) => k,
        Ok(None) => {
            return usage(
                CMD,
                format!(
                    "secret {} is not set ({}); it is the subscriptions' sharedKey",
                    SecretName::QualtricsWebhookKey,
                    secrets.source_name()
                ),
            )
        }
        Err(e) => return failed(CMD, e),
    };
    let report = subscriptions::execute(client, &secrets, &budget, &plan, &ours, &key).await;
    for (topic, id) in &report.created {
        println!("created {id}  {topic}");
    }
    for id in &report.deleted {
        println!("deleted {id}");
    }
    println!(
        "{} created, {} deleted",
        report.created.len(),
        report.deleted.len()
    );
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &report.failures {
            eprintln!("{CMD}: {f}");
        }
        ExitCode::FAILURE
    }
}

/// `--since` as the RFC 3339 UTC instant Qualtrics expects.
fn parse_since(text: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let t = text.trim();
    let instant = match time::OffsetDateTime::parse(t, &Rfc3339) {
        Ok(i) => i,
        Err(_) => time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]"))
            .map(|d| d.midnight().assume_utc())
            .map_err(|_| {
                format!("--since: {t:?} is not an RFC 3339 date-time (2026-11-01T00:00:00Z) or a date (2026-11-01)")
            })?,
    };
    instant
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| format!("--since: {e}"))
}

async fn export(survey: &str, since: Option<&str>) -> ExitCode {
    const CMD: &str = "export";
    if !crate::config::is_survey_id(survey) {
        return usage(
            CMD,
            format!("--survey: {survey:?} is not a Qualtrics survey id (SV_…)"),
        );
    }
    let since = match since.map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return usage(CMD, e),
    };
    let deps = match deps(CMD) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let job = export::Job {
        survey_id: survey.to_string(),
        tickets: false,
        kind: export::JobKind::Backfill {
            since: since.clone(),
        },
    };
    // No function timeout bounds a command: allow a long export, still stopping in the end.
    let settings = match export::ExportSettings::build(&deps) {
        Ok(s) => export::ExportSettings {
            time_budget: BACKFILL_TIME_BUDGET,
            min_remaining: Duration::from_secs(90),
            ..s
        },
        Err(e) => return usage(CMD, e),
    };
    let display = std::sync::Arc::new(crate::progress::Display::stderr());
    let shown = display.clone();
    let progress: export::ProgressFn = std::sync::Arc::new(move |step| shown.show(&step));
    println!(
        "export {survey}: responses recorded {}",
        since
            .as_deref()
            .map(|s| format!("after {s}"))
            .unwrap_or_else(|| "at any time".into())
    );
    let service = export::ExportService::new(Vec::new(), settings, &deps);
    let result = service.run(&[job], "cli", Some(progress)).await;
    display.finish();
    let reports = match result {
        Ok(r) => r,
        Err(e @ (export::RunError::NoQualtrics | export::RunError::NoStorage)) => {
            return usage(CMD, e)
        }
        Err(e) => return failed(CMD, e),
    };
    let mut code = ExitCode::SUCCESS;
    for r in &reports {
        println!("{}", r.line());
        if !matches!(r.outcome, export::Outcome::Exported { .. }) {
            code = ExitCode::FAILURE;
        }
    }
    code
}

/// How long one `qualtrics-bridge export` may run.
const BACKFILL_TIME_BUDGET: Duration = Duration::from_secs(6 * 3600);

async fn poison(cmd: PoisonCommand) -> ExitCode {
    let storage = match Storage::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("poison: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        PoisonCommand::List { limit } => crate::poison::list(&storage, limit.unwrap_or(32))
            .await
            .map(|parked| {
                if parked.is_empty() {
                    println!("{}: empty", crate::poison::POISON_QUEUE);
                }
                for p in parked {
                    let what = match &p.request {
                        Some(r) => format!("{}/{} ({:?})", r.survey_id, r.response_id, r.source),
                        None => format!(
                            "not a ticket request: {}",
                            p.text().chars().take(120).collect::<String>()
                        ),
                    };
                    let why = p.ledger.as_deref().unwrap_or("no ledger entry");
                    println!("{}  {}  {what}  — {why}", p.message_id, p.inserted);
                }
            }),
        PoisonCommand::Replay { limit, dry_run } => {
            crate::poison::replay(&storage, limit.unwrap_or(u32::MAX), dry_run)
                .await
                .map(|report| {
                    let verb = if dry_run { "would move" } else { "moved" };
                    for id in &report.moved {
                        println!("{verb} {id}");
                    }
                    println!(
                        "{verb} {} message(s) to {}",
                        report.moved.len(),
                        crate::poison::TRIGGER_QUEUE
                    );
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poison: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds everything the handler builds at start-up (so it refuses what start-up would),
/// then prints it.
fn config_check() -> ExitCode {
    const CMD: &str = "config check";
    let (bridge, settings) = match bridge(CMD) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let built = deps(CMD).and_then(|d| Functions::build(&bridge, &d).map_err(|e| usage(CMD, e)));
    if let Err(code) = built {
        return code;
    }
    println!("bridge config: {}", settings.bridge_config.display());
    if bridge.surveys.is_empty() {
        println!("  no surveys: nothing is exported and no ticket is raised");
    }
    for s in &bridge.surveys {
        let tickets = match &s.tickets {
            Some(t) => format!(
                "tickets → {:?}{}",
                t.system,
                t.when_text()
                    .map(|w| format!(" when {w}"))
                    .unwrap_or_else(|| " for every completed response".into())
            ),
            None => "no tickets".into(),
        };
        let unsigned = if s.allow_unsigned {
            ", accepts UNSIGNED webhooks"
        } else {
            ""
        };
        println!(
            "  {}: export {}, {tickets}{unsigned}",
            s.id,
            if s.export { "on" } else { "off" }
        );
    }
    println!("settings:");
    for spec in KNOWN_SETTINGS {
        let shown = match (setting(spec.name), spec.source) {
            (Some(v), _) => mask(spec.name, &v),
            (None, SettingSource::Default(d)) => format!("(default) {d}"),
            (None, SettingSource::Platform) => "(set by the platform)".into(),
            (None, _) => "(unset)".into(),
        };
        println!("  {} = {shown}", spec.name);
    }
    println!(
        "secrets ({}):",
        match setting("KEY_VAULT_URL") {
            Some(url) => format!("Key Vault {url}, read on first use"),
            None => "environment variables".into(),
        }
    );
    if setting("KEY_VAULT_URL").is_none() {
        for name in SECRETS {
            let state = if setting(&name.env_name()).is_some() {
                "set"
            } else {
                "missing"
            };
            println!("  {name} ({}) {state}", name.env_name());
        }
    }
    println!("config check: ok");
    ExitCode::SUCCESS
}

const SECRETS: [SecretName; 7] = [
    SecretName::QualtricsApiToken,
    SecretName::QualtricsWebhookKey,
    SecretName::QualtricsWebhookKeyPrevious,
    SecretName::QualtricsWorkflowToken,
    SecretName::ServicenowPassword,
    SecretName::ServicenowClientSecret,
    SecretName::ZendeskApiToken,
];

/// Values that may carry a key are never printed as they are.
fn mask(name: &str, value: &str) -> String {
    if name == "AzureWebJobsStorage" {
        return match storage_auth::ConnectionString::parse(value) {
            Ok(c) => format!("connection string for account {} (key masked)", c.account),
            Err(e) => format!("INVALID connection string: {e}"),
        };
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::{parse_since, Cli};
    use clap::CommandFactory;

    /// The doc comments are the help: the top level's paragraphs, and every `--limit` says
    /// its default and cap.
    #[test]
    fn help_shows_the_doc_comments() {
        let mut cli = Cli::command();
        let top = cli.render_long_help().to_string();
        assert!(top.contains("Qualtrics feedback"), "{top}");
        assert!(top.contains("Azure Functions custom handler"), "{top}");
        let poison = cli.find_subcommand_mut("poison").unwrap();
        let list = poison
            .find_subcommand_mut("list")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(list.contains("Absent: all, up to 32"), "{list}");
        let replay = poison
            .find_subcommand_mut("replay")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(replay.contains("Absent: all"), "{replay}");
        assert!(!replay.contains("4294967295"), "{replay}");
    }

    #[test]
    fn since_is_sent_as_utc() {
        assert_eq!(
            parse_since("2026-11-01T08:00:00+01:00").unwrap(),
            "2026-11-01T07:00:00Z"
        );
        assert_eq!(parse_since(" 2026-11-01 ").unwrap(), "2026-11-01T00:00:00Z");
        assert_eq!(
            parse_since("2026-11-01T07:00:00.250Z").unwrap(),
            "2026-11-01T07:00:00.25Z"
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-11-01T07:00:00"] {
            assert!(parse_since(bad).unwrap_err().contains("--since"), "{bad}");
        }
    }
}
