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
use serde_json::json;
use std::fmt::Write;
use std::path::PathBuf;
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

/// `--config`: which bridge.toml a command reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// The survey/routing config file [default: bridge.toml]. A relative path resolves against
    /// FUNCTIONS_APP_ROOT_PATH when that is set, else the current directory.
    #[arg(long = "config", value_name = "PATH", env = "BRIDGE_CONFIG")]
    pub path: Option<PathBuf>,
}

/// `--output`: prose for people, or one JSON document on stdout for scripts (the `az` habit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArg {
    /// Output format; json prints one JSON document on stdout (messages stay on stderr).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as the custom handler (the default).
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and replay a poison queue (ticket-requests-poison, or loop-requests-poison with
    /// --queue loop).
    #[command(subcommand)]
    Poison(PoisonCommand),
    /// Manage the Qualtrics event subscriptions that deliver webhooks to this app.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Close the loop: set up the ticket systems that send their events to TicketEvents.
    #[command(subcommand)]
    Loop(LoopCommand),
    /// Export one survey now (a one-off backfill), through the timer's export code.
    #[command(long_about = EXPORT_HELP)]
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// The survey to export (SV_…); it need not be in bridge.toml.
        #[arg(long, value_name = "SURVEY_ID")]
        survey: String,
        /// Only responses recorded after this instant: RFC 3339 (2026-11-01T00:00:00Z) or a
        /// date (2026-11-01, midnight UTC). Absent: every response.
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
    },
    /// The analytics tables (Delta) built from the export blobs.
    #[command(subcommand)]
    Analytics(AnalyticsCommand),
    /// What an ops event would do under [[pulses]]: a dry run that sends and writes nothing.
    #[command(long_about = PULSES_HELP)]
    Pulses {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: OutputArg,
        /// The event body, as OpsEvents would receive it: a file, or - for stdin.
        #[arg(long, value_name = "FILE")]
        event: PathBuf,
        /// The body's shape, as OpsEvents' ?format=: bridge, systrack or clevertap.
        #[arg(long, value_name = "FORMAT", default_value = "bridge")]
        format: String,
        /// Required: the command only shows what PulseSender would do (events are sent
        /// through OpsEvents, never from the command line).
        #[arg(long, required = true)]
        dry_run: bool,
    },
}

const PULSES_HELP: &str = "What an ops event would do under [[pulses]], without sending anything.

Reads the event body (--event FILE, or - for stdin), checks it as OpsEvents does, finds the
[[pulses]] entry that handles its eventType, and decides for each person as PulseSender
would, from the state PulseSender keeps: already handled for this eventId, inside the
category's cool-down, nobody to send to (no address and no CGC_ membership), or due. People
are shown by the first 12 hex characters of their keyed hash (the prefix PulseSender logs),
never by address. Prints how many distributions PulseSender would create.

Dry run is the only mode: events reach Qualtrics only through OpsEvents and PulseSender.
Nothing is sent to Qualtrics and nothing is written (no contact, ledger or cool-down).
Settings: AzureWebJobsStorage…, STATE_CONTAINER, the analytics-hash-key secret.";

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Build one survey's rows from its export blobs now, through the timer's code.
    #[command(long_about = REBUILD_HELP)]
    Rebuild {
        #[command(flatten)]
        config: ConfigArg,
        /// The survey (SV_…); it need not be in bridge.toml.
        #[arg(long, value_name = "SURVEY_ID")]
        survey: String,
        /// Only export blobs whose export started at or after this instant: RFC 3339 or a
        /// date (midnight UTC). Absent: every blob.
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// The container to write the tables to (default: ANALYTICS_CONTAINER).
        #[arg(long, value_name = "NAME")]
        container: Option<String>,
    },
}

const REBUILD_HELP: &str =
    "Build one survey's rows of survey_response, question_response and response_embedded_data
from its export blobs now, through AnalyticsBuilder's code, without waiting for a batch to fill.

Tables are append-only: rebuild into an empty container (--container) to regenerate them, e.g.
after a decoder fix, then point readers at it. The rebuild keeps its own cursor
(bridge-state/analytics-rebuild/{container}/{surveyId}.json): a rerun after a crash or a stop
resumes where it left off and adds no file twice; the timer's cursor is never read or moved.

Progress goes to stderr; the result to stdout.
Settings: AzureWebJobsStorage…, EXPORT_CONTAINER, ANALYTICS_CONTAINER.";

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
        #[command(flatten)]
        config: ConfigArg,
        // json: the plan, and after a run without --dry-run what was done.
        #[command(flatten)]
        output: OutputArg,
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
        #[command(flatten)]
        queue: PoisonQueueArg,
        /// Show at most this many (1-32; one peek of the queue returns at most 32).
        /// Absent: all, up to 32.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
        limit: Option<u32>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Move messages back to their trigger queue (ticket-requests or loop-requests), byte-exact.
    Replay {
        #[command(flatten)]
        queue: PoisonQueueArg,
        /// Move at most this many. Absent: all (a --dry-run lists at most 32, one peek).
        #[arg(long)]
        limit: Option<u32>,
        /// Print what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which poison queue a `poison` command works on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PoisonQueue {
    /// ticket-requests-poison (TicketCreator)
    #[default]
    Tickets,
    /// loop-requests-poison (LoopCloser)
    Loop,
}

#[derive(Debug, clap::Args)]
pub struct PoisonQueueArg {
    /// The poison queue: `tickets` (ticket-requests-poison) or `loop` (loop-requests-poison).
    #[arg(long, value_enum, default_value_t = PoisonQueue::Tickets)]
    pub queue: PoisonQueue,
}

impl PoisonQueueArg {
    fn which(&self) -> crate::poison::Queue {
        match self.queue {
            PoisonQueue::Tickets => crate::poison::Queue::Tickets,
            PoisonQueue::Loop => crate::poison::Queue::Loop,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LoopCommand {
    /// Print the Zendesk webhook (events mode) or the ServiceNow business rule that sends ticket
    /// status changes to this app; changes nothing, prints no key or secret.
    Setup {
        /// The ticket system to set up.
        #[arg(value_enum)]
        system: LoopSystem,
        /// This app's base URL (https://<app>.azurewebsites.net), without key or path.
        #[arg(long, value_name = "URL")]
        url: String,
    },
    /// Show one response's ticket and loop state from the ledgers (reads only).
    #[command(long_about = LOOP_STATUS_HELP)]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: OutputArg,
        /// The response (R_…).
        #[arg(long, value_name = "R_ID", required_unless_present = "ticket")]
        response: Option<String>,
        /// The survey of --response (SV_…). Absent: each survey in bridge.toml.
        #[arg(long, value_name = "SV_ID", requires = "response")]
        survey: Option<String>,
        /// The ticket: zendesk:<id> or servicenow:<INC number or sys_id>.
        #[arg(long, value_name = "SYSTEM:NUMBER")]
        ticket: Option<String>,
    },
}

const LOOP_STATUS_HELP: &str =
    "Show what the ledgers hold about one response's ticket and its loop.

By --response R_… (the ticket ledger is per survey: --survey, else each survey of
bridge.toml in turn) or by --ticket SYSTEM:NUMBER (zendesk:<id>, servicenow:<INC number or
sys_id>; an INC number is found by reading that system's open-ticket index and loop ledger
entries, a sys_id directly). Prints the ticket (system, number, ledger state), the last
state LoopCloser applied and its change time, whether it is written back onto the response
(applied, pending, or none yet), the follow-up survey (none, claimed, sent EMD_…, skipped,
ambiguous), the JSON Events fired, and whether TicketSync still watches the ticket (the
open-ticket index). Reads only; nothing is written. Exit 1 when nothing is stored for it.
Settings: AzureWebJobsStorage…, STATE_CONTAINER.";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LoopSystem {
    Zendesk,
    Servicenow,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate bridge.toml and the settings; print the resolved plan with secrets masked.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: OutputArg,
    },
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
        Command::Config(ConfigCommand::Check { config, output }) => {
            config_check(&config, output.output)
        }
        Command::Poison(cmd) => poison(cmd).await,
        Command::Subscriptions(SubscriptionsCommand::Sync {
            config,
            output,
            url,
            rotate_key,
            dry_run,
        }) => subscriptions_sync(&config, output.output, &url, rotate_key, dry_run).await,
        Command::Export {
            config,
            survey,
            since,
        } => export(&config, &survey, since.as_deref()).await,
        Command::Loop(LoopCommand::Setup { system, url }) => loop_setup(system, &url),
        Command::Loop(LoopCommand::Status {
            config,
            output,
            response,
            survey,
            ticket,
        }) => {
            let target = StatusTarget {
                response,
                survey,
                ticket,
            };
            loop_status(&config, output.output, target).await
        }
        Command::Pulses {
            config,
            output,
            event,
            format,
            dry_run: _,
        } => pulses_dry_run(&config, output.output, &event, &format).await,
        Command::Analytics(AnalyticsCommand::Rebuild {
            config,
            survey,
            since,
            container,
        }) => analytics_rebuild(&config, &survey, since.as_deref(), container).await,
    }
}

fn loop_setup(system: LoopSystem, url: &str) -> ExitCode {
    let system = match system {
        LoopSystem::Zendesk => crate::close_loop::events::System::Zendesk,
        LoopSystem::Servicenow => crate::close_loop::events::System::Servicenow,
    };
    match crate::loop_setup::instructions(url, system) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => usage("loop setup", e),
    }
}

/// Which loop `loop status` shows.
#[derive(Debug)]
struct StatusTarget {
    response: Option<String>,
    survey: Option<String>,
    ticket: Option<String>,
}

/// The shared clients with storage, as the handler builds them; exit 2 without storage.
fn deps_with_storage(cmd: &str) -> Result<Deps, ExitCode> {
    let deps = deps(cmd)?;
    if deps.storage.is_none() {
        return Err(usage(
            cmd,
            "no storage connection: set AzureWebJobsStorage (or AzureWebJobsStorage__…)",
        ));
    }
    Ok(deps)
}

/// The state container (`STATE_CONTAINER`) of `deps`' storage.
fn state_container(
    cmd: &str,
    deps: &Deps,
) -> Result<azure_storage_blob::BlobContainerClient, ExitCode> {
    match deps.storage.as_ref() {
        Some(s) => s
            .blob_container(deps.state_container.as_str())
            .map_err(|e| usage(cmd, e)),
        None => Err(usage(cmd, "no storage connection")),
    }
}

async fn loop_status(config: &ConfigArg, output: Output, target: StatusTarget) -> ExitCode {
    use crate::close_loop::status::StatusReader;
    const CMD: &str = "loop status";
    let ticket = match target.ticket.as_deref().map(parse_ticket).transpose() {
        Ok(t) => t,
        Err(e) => return usage(CMD, e),
    };
    if let Some(r) = &target.response {
        if !crate::messages::is_qualtrics_id(r, "R_") {
            return usage(CMD, "--response: not a response id (R_…)");
        }
    }
    if let Some(s) = &target.survey {
        if !crate::messages::is_qualtrics_id(s, "SV_") {
            return usage(CMD, "--survey: not a survey id (SV_…)");
        }
    }
    let (bridge, _) = match bridge(CMD, config) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let surveys: Vec<String> = match &target.survey {
        Some(s) => vec![s.clone()],
        None => bridge.surveys.iter().map(|s| s.id.clone()).collect(),
    };
    if target.response.is_some() && surveys.is_empty() {
        return usage(CMD, "bridge.toml has no survey: pass --survey");
    }
    let deps = match deps_with_storage(CMD) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let name = deps.state_container.as_str();
    let reader = match deps.storage.as_ref().map(|s| StatusReader::new(s, name)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return usage(CMD, e),
        None => return usage(CMD, "no storage connection"),
    };
    let found = match (&target.response, &ticket) {
        (Some(r), _) => reader.by_response(&surveys, r).await,
        (None, Some((system, number))) => reader.by_ticket(system, number).await,
        (None, None) => return usage(CMD, "give --response or --ticket"),
    };
    let status = match found {
        Ok(Some(s)) => s,
        Ok(None) => {
            let what = match (&target.response, &ticket) {
                (Some(r), _) => format!(
                    "response {r}: no ticket ledger entry in survey(s) {}",
                    surveys.join(", ")
                ),
                (None, Some((system, number))) => format!(
                    "ticket {system}:{number}: neither the loop ledger nor the open-ticket index knows it"
                ),
                (None, None) => String::new(),
            };
            return failed(CMD, what);
        }
        Err(e) => return failed(CMD, e),
    };
    if let (Some((system, number)), Some(_)) = (&ticket, &target.response) {
        let matches = status.ticket_id.as_ref().is_some_and(|(s, id)| {
            s == system
                && (id == number
                    || status
                        .ticket
                        .as_ref()
                        .and_then(|t| t.ticket.as_ref())
                        .and_then(|t| t.number.as_deref())
                        == Some(number.as_str()))
        });
        if !matches {
            return failed(
                CMD,
                format!(
                    "response {}: its ticket is not {system}:{number}",
                    status.response_id
                ),
            );
        }
    }
    let write_back_on = bridge
        .surveys
        .iter()
        .find(|s| s.id == status.survey_id)
        .and_then(|s| s.close_loop.as_ref())
        .map(|l| l.get_ref().write_back);
    match output {
        Output::Text => print!("{}", status_text(&status, write_back_on)),
        Output::Json => println!("{:#}", status_json(&status, write_back_on)),
    }
    ExitCode::SUCCESS
}

/// `zendesk:35436` / `servicenow:INC0010001` → (system, number).
fn parse_ticket(t: &str) -> Result<(String, String), String> {
    let (system, number) = t.split_once(':').ok_or(
        "--ticket: SYSTEM:NUMBER expected (zendesk:<id>, servicenow:<INC number or sys_id>)",
    )?;
    let system = system.trim().to_ascii_lowercase();
    if !matches!(system.as_str(), "zendesk" | "servicenow") {
        return Err("--ticket: the system is zendesk or servicenow".into());
    }
    let number = number.trim();
    // Ticket ids and numbers name blobs: letters, digits, '-', '_', '.' only (as LoopCloser).
    let ok = !number.is_empty()
        && number.len() <= 64
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err("--ticket: the number is 1-64 letters, digits, '-', '_', '.'".into());
    }
    Ok((system, number.to_owned()))
}

/// The write-back as shown: `off` when the survey's [surveys.loop] turns it off.
fn write_back_shown(
    entry: &crate::close_loop::ledger::LoopEntry,
    on: Option<bool>,
) -> &'static str {
    if on == Some(false) {
        return "off";
    }
    crate::close_loop::status::write_back_status(entry).name()
}

fn state_text(s: crate::messages::TicketState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `loop status` as prose.
fn status_text(s: &crate::close_loop::status::LoopStatus, write_back_on: Option<bool>) -> String {
    use crate::close_loop::status::follow_up_text;
    let mut t = String::new();
    let _ = writeln!(t, "response {} (survey {})", s.response_id, s.survey_id);
    match &s.ticket {
        None => {
            let _ = writeln!(t, "  ticket ledger: no entry");
        }
        Some(e) => {
            let state = format!("{:?}", e.state).to_ascii_lowercase();
            let what = match &e.ticket {
                Some(r) => format!(
                    "{} {} (id {})",
                    r.system,
                    r.number.as_deref().unwrap_or(&r.id),
                    r.id
                ),
                None => "no ticket".into(),
            };
            let reason = e
                .reason
                .as_deref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default();
            let _ = writeln!(t, "  ticket: {what}, {state} at {}{reason}", e.updated_at);
        }
    }
    match &s.loop_entry {
        None => {
            let _ = writeln!(
                t,
                "  loop: no state applied yet (no event or sync has reached LoopCloser)"
            );
        }
        Some(l) => {
            match &l.applied {
                Some(a) => {
                    let seq = a
                        .sequence
                        .map(|n| format!(", sequence {n}"))
                        .unwrap_or_default();
                    let code = a
                        .close_code
                        .as_deref()
                        .map(|c| format!(", close code {c:?}"))
                        .unwrap_or_default();
                    let reopened = if a.reopened { " (reopened)" } else { "" };
                    let _ = writeln!(
                        t,
                        "  applied: {}{reopened} (status {:?}), changed at {}{seq}{code}",
                        state_text(a.state),
                        a.status,
                        a.changed_at
                    );
                }
                None => {
                    let _ = writeln!(t, "  applied: nothing yet");
                }
            }
            let written = l
                .write_back
                .as_ref()
                .map(|w| format!(" (last written: {} at {})", w.state, w.at))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  write-back: {}{written}",
                write_back_shown(l, write_back_on)
            );
            let f = &l.follow_up;
            let when =
                f.at.as_deref()
                    .map(|a| format!(" at {a}"))
                    .unwrap_or_default();
            let why = f
                .reason
                .as_deref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default();
            let _ = writeln!(t, "  follow-up: {}{when}{why}", follow_up_text(l));
            if l.json_events.is_empty() {
                let _ = writeln!(t, "  JSON events: none");
            }
            for e in &l.json_events {
                let status = serde_json::to_value(e.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = writeln!(
                    t,
                    "  JSON event: {} {status} at {}",
                    state_text(e.state),
                    e.at
                );
            }
            if l.ignored > 0 {
                let _ = writeln!(t, "  ignored: {} older or repeated change(s)", l.ignored);
            }
        }
    }
    let index = match &s.open {
        Some(o) => match &o.last_synced {
            Some(ls) => format!(
                "yes (TicketSync last queued {} changed at {}, at {})",
                state_text(ls.state),
                ls.changed_at,
                ls.at
            ),
            None => "yes (not synced yet)".into(),
        },
        None => "no".into(),
    };
    let _ = writeln!(t, "  open-ticket index: {index}");
    t
}

/// `loop status` as one JSON document.
fn status_json(
    s: &crate::close_loop::status::LoopStatus,
    write_back_on: Option<bool>,
) -> serde_json::Value {
    let ticket = s.ticket.as_ref().map(|e| {
        json!({
            "state": e.state,
            "system": e.ticket.as_ref().map(|t| &t.system).or(e.system.as_ref()),
            "id": e.ticket.as_ref().map(|t| &t.id),
            "number": e.ticket.as_ref().and_then(|t| t.number.as_ref()),
            "recordedAt": e.updated_at,
            "reason": e.reason,
        })
    });
    let loop_state = s.loop_entry.as_ref().map(|l| {
        json!({
            "applied": l.applied.as_ref().map(|a| json!({
                "state": a.state,
                "status": a.status,
                "changedAt": a.changed_at,
                "sequence": a.sequence,
                "closeCode": a.close_code,
                "reopened": a.reopened,
            })),
            "writeBack": {
                "status": write_back_shown(l, write_back_on),
                "written": l.write_back,
            },
            "followUp": {
                "status": l.follow_up.status,
                "distributionId": l.follow_up.distribution_id,
                "at": l.follow_up.at,
                "reason": l.follow_up.reason,
            },
            "jsonEvents": l.json_events,
            "ignored": l.ignored,
            "updatedAt": l.updated_at,
        })
    });
    json!({
        "surveyId": s.survey_id,
        "responseId": s.response_id,
        "ticket": ticket,
        "ticketId": s.ticket_id.as_ref().map(|(system, id)| json!({"system": system, "id": id})),
        "loop": loop_state,
        "openIndex": {
            "indexed": s.open.is_some(),
            "lastSynced": s.open.as_ref().and_then(|o| o.last_synced.as_ref()),
        },
    })
}

async fn pulses_dry_run(
    config: &ConfigArg,
    output: Output,
    event: &std::path::Path,
    format: &str,
) -> ExitCode {
    use crate::pulse::{event as ops_event, people};
    const CMD: &str = "pulses";
    let format = match ops_event::format_of(Some(format)) {
        Ok(f) => f,
        Err(_) => return usage(CMD, "--format: bridge, systrack or clevertap"),
    };
    let body = match read_event(event) {
        Ok(b) => b,
        Err(e) => return usage(CMD, e),
    };
    let now = time::OffsetDateTime::now_utc();
    // Checked as OpsEvents checks it; the error names the field, never a value.
    let event = match ops_event::parse(format, &body, now) {
        Ok(e) => e,
        Err(e) => return usage(CMD, format!("--event: {e}")),
    };
    let (bridge, _) = match bridge(CMD, config) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let head = json!({
        "eventId": event.event_id,
        "eventType": event.event_type,
        "format": format.name(),
        "people": event.people.len(),
    });
    let Some(route) = crate::pulse::route_for(&bridge.pulses, &event.event_type) else {
        let why =
            "no [[pulses]] entry handles this event type: OpsEvents answers 202 and queues nothing";
        return print_refused(output, &head, None, why);
    };
    let pulse = json!({
        "eventType": route.event_type(),
        "survey": route.survey.get_ref(),
        "category": route.category(),
        "cooldownHours": route.cooldown_hours.get_ref(),
        "maxPeople": route.max_people(),
    });
    if event.people.len() > route.max_people() {
        let why = "more people than the entry's max_people: OpsEvents refuses it (422), nothing is queued";
        return print_refused(output, &head, Some(&pulse), why);
    }
    let deps = match deps_with_storage(CMD) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let container = match state_container(CMD, &deps) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let root = match deps
        .secrets
        .get(crate::secrets::SecretName::AnalyticsHashKey)
        .await
    {
        Ok(Some(k)) => k,
        Ok(None) => {
            return usage(
                CMD,
                "secret analytics-hash-key is not set (PulseSender keys people by it)",
            )
        }
        Err(e) => return failed(CMD, e),
    };
    let plan = match people::plan(&container, root.expose().as_bytes(), route, &event, now).await {
        Ok(p) => p,
        Err(e) => return failed(CMD, e),
    };
    match output {
        Output::Text => print!("{}", pulse_plan_text(&event, format, route, &plan)),
        Output::Json => println!("{:#}", pulse_plan_json(head, pulse, &plan)),
    }
    ExitCode::SUCCESS
}

/// The event body from a file or stdin (`-`), at most what OpsEvents accepts.
fn read_event(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let limit = crate::pulse::event::MAX_BODY_BYTES;
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("--event {}: {e}", path.display()))?;
    if bytes.len() > limit {
        return Err(format!(
            "--event {}: larger than 1 MiB (OpsEvents answers 413)",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("--event {}: not UTF-8", path.display()))
}

/// An event the intake would not queue: said, with exit 0 (the dry run answered).
fn print_refused(
    output: Output,
    head: &serde_json::Value,
    pulse: Option<&serde_json::Value>,
    why: &str,
) -> ExitCode {
    match output {
        Output::Text => {
            println!(
                "event {} ({}): {why}",
                head["eventId"].as_str().unwrap_or_default(),
                head["eventType"].as_str().unwrap_or_default()
            );
            println!("dry run: nothing sent, nothing written");
        }
        Output::Json => println!(
            "{:#}",
            json!({"event": head, "pulse": pulse, "queued": false, "reason": why,
                   "people": [], "distributions": 0, "dryRun": true})
        ),
    }
    ExitCode::SUCCESS
}

fn verdict_text(v: &crate::pulse::people::Verdict) -> String {
    use crate::pulse::people::Verdict;
    match v {
        Verdict::NoIdentity => "skipped: no address, externalRef or contact id".into(),
        Verdict::Already(s) => format!("already handled for this event ({s})"),
        Verdict::Cooling { since } => {
            format!("in cool-down (surveyed for the category at {since})")
        }
        Verdict::Unreachable => "skipped: no address and no contact id (CID_…)".into(),
        Verdict::Due => "would be surveyed".into(),
    }
}

/// `pulses --dry-run` as prose.
fn pulse_plan_text(
    event: &crate::messages::PulseEvent,
    format: crate::messages::PulseFormat,
    route: &crate::pulse::config::PulseRoute,
    plan: &crate::pulse::people::Plan,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "event {} ({}, {} format): {} people",
        event.event_id,
        event.event_type,
        format.name(),
        event.people.len()
    );
    let _ = writeln!(
        t,
        "pulse {}: survey {}, category {}, cool-down {} h, at most {} people",
        route.event_type(),
        route.survey.get_ref(),
        route.category(),
        route.cooldown_hours.get_ref(),
        route.max_people()
    );
    for p in &plan.people {
        let who = match &p.key {
            Some(k) => format!("person {k}"),
            None => format!("people[{}]", p.index),
        };
        let _ = writeln!(t, "  {who}  {}", verdict_text(&p.verdict));
    }
    let _ = writeln!(
        t,
        "would survey {}, in cool-down {}, already handled {}, skipped {}",
        plan.count("due"),
        plan.count("cooling"),
        plan.count("already"),
        plan.count("unreachable") + plan.count("no-identity")
    );
    let _ = writeln!(
        t,
        "distributions that would be sent: {} (to the event's transaction batch, {} batch call(s))",
        plan.distributions(),
        plan.batch_calls()
    );
    let _ = writeln!(t, "dry run: nothing sent, nothing written");
    t
}

/// `pulses --dry-run` as one JSON document.
fn pulse_plan_json(
    head: serde_json::Value,
    pulse: serde_json::Value,
    plan: &crate::pulse::people::Plan,
) -> serde_json::Value {
    use crate::pulse::people::Verdict;
    let people: Vec<_> = plan
        .people
        .iter()
        .map(|p| {
            let mut v = json!({"index": p.index, "person": p.key, "verdict": p.verdict.name()});
            match &p.verdict {
                Verdict::Cooling { since } => v["since"] = json!(since),
                Verdict::Already(s) => v["status"] = json!(s),
                _ => {}
            }
            v
        })
        .collect();
    let counts = json!({
        "due": plan.count("due"),
        "cooling": plan.count("cooling"),
        "already": plan.count("already"),
        "unreachable": plan.count("unreachable"),
        "noIdentity": plan.count("no-identity"),
    });
    json!({"event": head, "pulse": pulse, "queued": true, "reason": null, "people": people,
           "counts": counts, "distributions": plan.distributions(), "dryRun": true})
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

/// The settings with `--config` (or `BRIDGE_CONFIG`) applied, resolved as the handler does.
/// A file named there must exist; only the default may be absent (then: no surveys).
fn settings_with(cmd: &str, config: &ConfigArg) -> Result<HandlerSettings, ExitCode> {
    let mut settings = HandlerSettings::with_port(0);
    if let Some(path) = config.path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        settings.bridge_config = settings.app_root.join(path);
        if !settings.bridge_config.is_file() {
            return Err(usage(
                cmd,
                format!(
                    "--config (BRIDGE_CONFIG): {} is not a file",
                    settings.bridge_config.display()
                ),
            ));
        }
    }
    Ok(settings)
}

/// `bridge.toml` as the handler reads it, for commands that read it; says which file.
fn bridge(cmd: &str, config: &ConfigArg) -> Result<(BridgeConfig, HandlerSettings), ExitCode> {
    let settings = settings_with(cmd, config)?;
    eprintln!("{cmd}: bridge config {}", config_line(&settings));
    let bridge = settings.load_bridge().map_err(|e| usage(cmd, e))?;
    Ok((bridge, settings))
}

/// The shared clients as the handler builds them, from the environment.
fn deps(cmd: &str) -> Result<Deps, ExitCode> {
    Deps::build(std::sync::Arc::new(env_lookup)).map_err(|e| usage(cmd, e))
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

/// The config path, and whether it is there (an absent default means no surveys).
fn config_line(settings: &HandlerSettings) -> String {
    let path = settings.bridge_config.display();
    if settings.bridge_config.is_file() {
        path.to_string()
    } else {
        format!("{path} (not found: no surveys)")
    }
}

/// Missing or unusable settings and secrets are configuration (2); the rest run time (1).
fn qualtrics_failure(cmd: &str, e: QualtricsError) -> ExitCode {
    match e {
        QualtricsError::Token(..) | QualtricsError::Config(_) => usage(cmd, e),
        _ => failed(cmd, e),
    }
}

async fn subscriptions_sync(
    config: &ConfigArg,
    output: Output,
    url: &str,
    rotate: bool,
    dry_run: bool,
) -> ExitCode {
    const CMD: &str = "subscriptions sync";
    let ours = match OurUrl::parse(url) {
        Ok(u) => u,
        Err(e) => return usage(CMD, e),
    };
    let (bridge, settings) = match bridge(CMD, config) {
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
    let text = output == Output::Text;
    if text {
        print!("{}", plan_text(&plan, existing.len(), &ours, dry_run));
    }
    if plan.is_noop() || dry_run {
        if !text {
            let doc = sync_json(&settings, &plan, existing.len(), &ours, dry_run, None);
            println!("{doc:#}");
        }
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
    if text {
        print!("{}", report_text(&report));
    } else {
        let doc = sync_json(
            &settings,
            &plan,
            existing.len(),
            &ours,
            false,
            Some(&report),
        );
        println!("{doc:#}");
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &report.failures {
            eprintln!("{CMD}: {f}");
        }
        ExitCode::FAILURE
    }
}

/// The sync plan as prose, one line per subscription.
fn plan_text(plan: &subscriptions::Plan, listed: usize, ours: &OurUrl, dry_run: bool) -> String {
    let mut t = String::new();
    let would = if dry_run { "would " } else { "" };
    let _ = writeln!(
        t,
        "{listed} event subscription(s) listed; this app's URL: {}",
        ours.masked()
    );
    for (id, topic) in &plan.keep {
        let _ = writeln!(t, "  keep          {id}  {topic}");
    }
    for topic in &plan.create {
        let _ = writeln!(t, "  {would}create  {topic}");
    }
    for d in &plan.delete {
        let reason = d.reason.describe();
        let _ = writeln!(t, "  {would}delete  {}  {}  ({reason})", d.id, d.topic);
    }
    let _ = writeln!(
        t,
        "  {} subscription(s) of other URLs left alone",
        plan.foreign
    );
    if plan.is_noop() {
        let _ = writeln!(t, "nothing to do: the subscriptions match bridge.toml");
    } else if dry_run {
        let (c, d) = (plan.create.len(), plan.delete.len());
        let _ = writeln!(t, "dry run: nothing changed ({c} to create, {d} to delete)");
    }
    t
}

/// What a sync did, as prose.
fn report_text(report: &subscriptions::Report) -> String {
    let mut t = String::new();
    for (topic, id) in &report.created {
        let _ = writeln!(t, "created {id}  {topic}");
    }
    for id in &report.deleted {
        let _ = writeln!(t, "deleted {id}");
    }
    let (c, d) = (report.created.len(), report.deleted.len());
    let _ = writeln!(t, "{c} created, {d} deleted");
    t
}

/// The sync plan (and, after a run, what it did) as one JSON document; the URL is masked.
fn sync_json(
    settings: &HandlerSettings,
    plan: &subscriptions::Plan,
    listed: usize,
    ours: &OurUrl,
    dry_run: bool,
    report: Option<&subscriptions::Report>,
) -> serde_json::Value {
    let reason = |r: subscriptions::Reason| match r {
        subscriptions::Reason::Stale => "stale",
        subscriptions::Reason::Duplicate => "duplicate",
        subscriptions::Reason::OtherKey => "other-key",
        subscriptions::Reason::Rotated => "rotated",
    };
    json!({
        "config": settings.bridge_config.display().to_string(),
        "url": ours.masked(),
        "listed": listed,
        "dryRun": dry_run,
        "plan": {
            "keep": plan.keep.iter().map(|(id, topic)| json!({"id": id, "topic": topic})).collect::<Vec<_>>(),
            "create": plan.create.iter().map(|topic| json!({"topic": topic})).collect::<Vec<_>>(),
            "delete": plan.delete.iter().map(|d| json!({
                "id": d.id,
                "topic": d.topic,
                "reason": reason(d.reason),
                "description": d.reason.describe(),
            })).collect::<Vec<_>>(),
            "foreign": plan.foreign,
        },
        "result": report.map(|r| json!({
            "created": r.created.iter().map(|(topic, id)| json!({"id": id, "topic": topic})).collect::<Vec<_>>(),
            "deleted": r.deleted,
            "failures": r.failures,
        })),
    })
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

async fn export(config: &ConfigArg, survey: &str, since: Option<&str>) -> ExitCode {
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
    // The file is not needed for a backfill, but a command given --config says which it read
    // and refuses a broken one, as the others do.
    if let Err(code) = bridge(CMD, config) {
        return code;
    }
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

async fn analytics_rebuild(
    config: &ConfigArg,
    survey: &str,
    since: Option<&str>,
    container: Option<String>,
) -> ExitCode {
    use crate::analytics::builder;
    const CMD: &str = "analytics rebuild";
    if !crate::config::is_survey_id(survey) {
        return usage(
            CMD,
            format!("--survey: {survey:?} is not a Qualtrics survey id (SV_…)"),
        );
    }
    let since = match since
        .map(|t| parse_since(t).and_then(|t| blob_stamp(&t)))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return usage(CMD, e),
    };
    let analytics = match bridge(CMD, config) {
        // A survey not in bridge.toml is rebuilt with the default policy (no identity, no
        // embedded data, free text kept), as the timer would if it were configured bare.
        Ok((b, _)) => b
            .surveys
            .iter()
            .find(|s| s.id == survey)
            .and_then(|s| s.analytics.clone())
            .unwrap_or_default(),
        Err(code) => return code,
    };
    let deps = match deps(CMD) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let settings = match builder::AnalyticsSettings::build(&deps) {
        Ok(s) => builder::AnalyticsSettings {
            analytics_container: container.unwrap_or(s.analytics_container.clone()),
            time_budget: BACKFILL_TIME_BUDGET,
            min_remaining: Duration::from_secs(60),
            ..s
        },
        Err(e) => return usage(CMD, e),
    };
    println!(
        "analytics rebuild {survey} into {}: export blobs {}",
        settings.analytics_container,
        since
            .as_deref()
            .map(|s| format!("from {s}"))
            .unwrap_or_else(|| "of any time".into())
    );
    let display = std::sync::Arc::new(crate::progress::Display::stderr());
    let shown = display.clone();
    let progress: builder::ProgressFn =
        std::sync::Arc::new(move |step| shown.show_analytics(&step));
    let job = builder::Job {
        survey_id: survey.to_string(),
        kind: builder::JobKind::Rebuild { since },
        analytics,
    };
    let service = builder::AnalyticsService::new(Vec::new(), settings, &deps);
    let result = service.run(&[job], "cli", Some(progress)).await;
    display.finish();
    let reports = match result {
        Ok(r) => r,
        Err(e @ builder::RunError::NoStorage) => return usage(CMD, e),
        Err(e) => return failed(CMD, e),
    };
    let mut code = ExitCode::SUCCESS;
    for r in &reports {
        println!("{}", r.line());
        if !matches!(
            r.outcome,
            builder::Outcome::Built { .. } | builder::Outcome::Linked { .. }
        ) {
            code = ExitCode::FAILURE;
        }
    }
    code
}

/// An RFC 3339 instant as export blob names start: `YYYYMMDDTHHMMSSZ`.
fn blob_stamp(rfc3339: &str) -> Result<String, String> {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
        .and_then(|t| t.format(&f).map_err(|e| e.to_string()))
        .map_err(|e| format!("--since: {e}"))
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
        PoisonCommand::List {
            queue,
            limit,
            output,
        } => {
            let which = queue.which();
            crate::poison::list(&storage, which, limit.unwrap_or(32))
                .await
                .map(|parked| match output.output {
                    Output::Text => print!("{}", parked_text(which, &parked)),
                    Output::Json => println!("{:#}", parked_json(which, &parked)),
                })
        }
        PoisonCommand::Replay {
            queue,
            limit,
            dry_run,
        } => {
            let which = queue.which();
            crate::poison::replay(&storage, which, limit.unwrap_or(u32::MAX), dry_run)
                .await
                .map(|report| {
                    let verb = if dry_run { "would move" } else { "moved" };
                    for id in &report.moved {
                        println!("{verb} {id}");
                    }
                    println!(
                        "{verb} {} message(s) to {}",
                        report.moved.len(),
                        which.trigger()
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

/// What is shown of a message that is not a ticket request: enough to recognise it.
fn parked_excerpt(p: &crate::poison::Parked) -> String {
    p.text().chars().take(120).collect()
}

/// Parked messages as prose, one line each.
fn parked_text(which: crate::poison::Queue, parked: &[crate::poison::Parked]) -> String {
    if parked.is_empty() {
        return format!("{}: empty\n", which.poison());
    }
    let kind = match which {
        crate::poison::Queue::Tickets => "ticket",
        crate::poison::Queue::Loop => "loop",
    };
    let mut t = String::new();
    for p in parked {
        let what = match &p.about {
            Some(about) => about.clone(),
            None => format!("not a {kind} request: {}", parked_excerpt(p)),
        };
        let why = p.ledger.as_deref().unwrap_or("no ledger entry");
        t.push_str(&format!(
            "{}  {}  {what}  — {why}\n",
            p.message_id, p.inserted
        ));
    }
    t
}

/// Parked messages as one JSON document; `request` is the message as queued, or null.
fn parked_json(which: crate::poison::Queue, parked: &[crate::poison::Parked]) -> serde_json::Value {
    let messages: Vec<_> = parked
        .iter()
        .map(|p| {
            json!({
                "messageId": p.message_id,
                "insertedOn": p.inserted,
                "dequeueCount": p.dequeue_count,
                "request": p.request,
                "text": p.request.is_none().then(|| parked_excerpt(p)),
                "reason": p.ledger,
            })
        })
        .collect();
    json!({"queue": which.poison(), "messages": messages})
}

fn config_check(config: &ConfigArg, output: Output) -> ExitCode {
    const CMD: &str = "config check";
    let settings = match settings_with(CMD, config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let bridge = match settings.load_bridge() {
        Ok(b) => b,
        Err(e) => return usage(CMD, e),
    };
    // Build everything start-up builds, so the check refuses what start-up would.
    let built = deps(CMD).and_then(|d| Functions::build(&bridge, &d).map_err(|e| usage(CMD, e)));
    if let Err(code) = built {
        return code;
    }
    match output {
        Output::Text => print!("{}", check_text(&settings, &bridge)),
        Output::Json => println!("{:#}", check_json(&settings, &bridge)),
    }
    ExitCode::SUCCESS
}

/// One setting as `config check` shows it.
enum Shown {
    /// Its value, masked where it may carry a key.
    Set(String),
    Default(&'static str),
    Platform,
    Unset,
}

impl Shown {
    fn of(spec: &crate::config::SettingSpec) -> Self {
        match (setting(spec.name), spec.source) {
            (Some(v), _) => Self::Set(mask(spec.name, &v)),
            (None, SettingSource::Default(d)) => Self::Default(d),
            (None, SettingSource::Platform) => Self::Platform,
            (None, _) => Self::Unset,
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Set(v) => v.clone(),
            Self::Default(d) => format!("(default) {d}"),
            Self::Platform => "(set by the platform)".into(),
            Self::Unset => "(unset)".into(),
        }
    }

    fn json(&self) -> serde_json::Value {
        let (state, value) = match self {
            Self::Set(v) => ("set", Some(v.as_str())),
            Self::Default(d) => ("default", Some(*d)),
            Self::Platform => ("platform", None),
            Self::Unset => ("unset", None),
        };
        json!({"state": state, "value": value})
    }
}

/// The `config check` report as prose.
fn check_text(settings: &HandlerSettings, bridge: &BridgeConfig) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "bridge config: {}", config_line(settings));
    if bridge.sandbox {
        let _ = writeln!(
            t,
            "  sandbox = true: devkit's sample; scripts/package.sh refuses to package it"
        );
    }
    if bridge.surveys.is_empty() {
        let _ = writeln!(
            t,
            "  no surveys: nothing is exported and no ticket is raised"
        );
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
        let export = if s.export { "on" } else { "off" };
        let _ = writeln!(t, "  {}: export {export}, {tickets}{unsigned}", s.id);
        let analytics = s.analytics.clone().unwrap_or_default();
        let _ = writeln!(t, "    analytics: {}", analytics.describe());
        if let Some(lc) = &s.close_loop {
            let _ = writeln!(t, "    loop: {}", lc.get_ref().describe());
        }
    }
    for p in &bridge.pulses {
        let _ = writeln!(
            t,
            "  pulse {}: survey {}, message {}/{}, list {}/{}, category {}, cool-down {} h, at most {} people{}",
            p.event_type(),
            p.survey.get_ref(),
            p.library.get_ref(),
            p.message.get_ref(),
            p.directory.get_ref(),
            p.mailing_list.get_ref(),
            p.category(),
            p.cooldown_hours.get_ref(),
            p.max_people(),
            if p.embedded_data.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = p.embedded_data.iter().map(|n| n.get_ref().as_str()).collect();
                format!(", embedded data {}", names.join(", "))
            }
        );
    }
    let _ = writeln!(t, "settings:");
    for spec in KNOWN_SETTINGS {
        let _ = writeln!(t, "  {} = {}", spec.name, Shown::of(spec).text());
    }
    let source = match setting("KEY_VAULT_URL") {
        Some(url) => format!("Key Vault {url}, read on first use"),
        None => "environment variables".into(),
    };
    let _ = writeln!(t, "secrets ({source}):");
    if setting("KEY_VAULT_URL").is_none() {
        for name in SECRETS {
            let state = if setting(&name.env_name()).is_some() {
                "set"
            } else {
                "missing"
            };
            let _ = writeln!(t, "  {name} ({}) {state}", name.env_name());
        }
    }
    let _ = writeln!(t, "config check: ok");
    t
}

/// The `config check` report as one JSON document; values that may carry a key are masked and
/// secrets are only ever "set" or not.
fn check_json(settings: &HandlerSettings, bridge: &BridgeConfig) -> serde_json::Value {
    let surveys: Vec<_> = bridge
        .surveys
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "export": s.export,
                "tickets": s.tickets.as_ref().map(|t| json!({
                    "system": format!("{:?}", t.system).to_ascii_lowercase(),
                    "when": t.when_text(),
                })),
                "allowUnsigned": s.allow_unsigned,
                "analytics": s.analytics.clone().unwrap_or_default().json(),
                "loop": s.close_loop.as_ref().and_then(|l| serde_json::to_value(l.get_ref()).ok()),
            })
        })
        .collect();
    let pulses: Vec<_> = bridge
        .pulses
        .iter()
        .map(|p| {
            json!({
                "eventType": p.event_type(),
                "survey": p.survey.get_ref(),
                "library": p.library.get_ref(),
                "message": p.message.get_ref(),
                "directory": p.directory.get_ref(),
                "mailingList": p.mailing_list.get_ref(),
                "embeddedData": p.embedded_data.iter().map(|n| n.get_ref()).collect::<Vec<_>>(),
                "category": p.category(),
                "cooldownHours": p.cooldown_hours.get_ref(),
                "maxPeople": p.max_people(),
            })
        })
        .collect();
    let known: Vec<_> = KNOWN_SETTINGS
        .iter()
        .map(|spec| {
            let mut shown = Shown::of(spec).json();
            shown["name"] = json!(spec.name);
            shown
        })
        .collect();
    let key_vault = setting("KEY_VAULT_URL");
    let secrets: Vec<_> = SECRETS
        .iter()
        .map(|name| {
            let set = key_vault
                .is_none()
                .then(|| setting(&name.env_name()).is_some());
            json!({"name": name.to_string(), "env": name.env_name(), "set": set})
        })
        .collect();
    json!({
        "ok": true,
        "config": settings.bridge_config.display().to_string(),
        "configFound": settings.bridge_config.is_file(),
        "sandbox": bridge.sandbox,
        "surveys": surveys,
        "pulses": pulses,
        "settings": known,
        "secrets": {
            "source": if key_vault.is_some() { "keyVault" } else { "environment" },
            "keyVaultUrl": key_vault,
            "items": secrets,
        },
    })
}

const SECRETS: &[SecretName] = &[
    SecretName::QualtricsApiToken,
    SecretName::QualtricsWebhookKey,
    SecretName::QualtricsWebhookKeyPrevious,
    SecretName::QualtricsWorkflowToken,
    SecretName::ServicenowPassword,
    SecretName::ServicenowClientSecret,
    SecretName::ZendeskApiToken,
    SecretName::ZendeskWebhookSecret,
    SecretName::ZendeskWebhookSecretPrevious,
    SecretName::ServicenowWebhookSecret,
    SecretName::ServicenowWebhookSecretPrevious,
    SecretName::AnalyticsHashKey,
    SecretName::OpsWebhookSecret,
    SecretName::OpsWebhookSecretPrevious,
    SecretName::OpsStaticToken,
    SecretName::OpsStaticTokenPrevious,
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
