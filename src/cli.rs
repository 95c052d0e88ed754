//! The command line: handler mode by default, plus operator subcommands. Exit codes: 0 done,
//! 1 failed at run time, 2 bad usage or invalid configuration.

use crate::config::{setting, HandlerSettings, SettingSource, KNOWN_SETTINGS};
use crate::secrets::SecretName;
use crate::startup::{self, App};
use crate::storage::Storage;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// qualtrics-bridge: Qualtrics feedback → Blob exports and ServiceNow/Zendesk tickets.
///
/// Without a subcommand it runs as an Azure Functions custom handler on
/// 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (the Functions host starts it that way).
/// Operator subcommands read the same app settings (environment variables) and bridge.toml.
#[derive(Debug, Parser)]
#[command(name = "qualtrics-bridge", version, about, long_about = None)]
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
}

#[derive(Debug, Subcommand)]
pub enum PoisonCommand {
    /// Show parked messages with the ledger's reason (at most 32, oldest first).
    List {
        #[arg(long, default_value_t = 32)]
        limit: u32,
    },
    /// Move messages back to ticket-requests, byte-exact.
    Replay {
        /// Move at most this many.
        #[arg(long, default_value_t = u32::MAX)]
        limit: u32,
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
    }
}

async fn poison(cmd: PoisonCommand) -> ExitCode {
    let storage = match Storage::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("poison: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        PoisonCommand::List { limit } => crate::poison::list(&storage, limit).await.map(|parked| {
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
        PoisonCommand::Replay { limit, dry_run } => crate::poison::replay(&storage, limit, dry_run)
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
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poison: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_check() -> ExitCode {
    let settings = HandlerSettings::with_port(0);
    let app = match App::load(&settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("config check: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!("bridge config: {}", settings.bridge_config.display());
    if app.bridge.surveys.is_empty() {
        println!("  no surveys: nothing is exported and no ticket is raised");
    }
    for s in &app.bridge.surveys {
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
