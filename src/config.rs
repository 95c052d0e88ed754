//! Typed configuration: the app settings the handler reads, parsed once at start-up.
//!
//! Every environment variable the handler reads is listed in [`KNOWN_SETTINGS`]; the infra
//! contract test checks that each one is either set by the Bicep, provided by the platform,
//! or has a default documented here and in the README.

/// Where a setting's value comes from when the app runs in Azure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingSource {
    /// Set by the Functions host or the platform itself (not by the Bicep).
    Platform,
    /// Set by the deployment (`infra/`) as an app setting.
    Deployment,
    /// Optional; the handler uses this default when it is absent.
    Default(&'static str),
    /// Optional; absent means the feature is off.
    Optional,
}

/// One app setting the handler reads.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    pub name: &'static str,
    pub source: SettingSource,
    pub meaning: &'static str,
}

/// Every app setting (environment variable) the handler reads.
pub const KNOWN_SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "FUNCTIONS_CUSTOMHANDLER_PORT",
        source: SettingSource::Platform,
        meaning: "loopback port the Functions host expects the handler on",
    },
    SettingSpec {
        name: "AzureWebJobsStorage",
        source: SettingSource::Optional,
        meaning:
            "storage connection string (local/Azurite); in Azure the identity-based form is used",
    },
    SettingSpec {
        name: "AzureWebJobsStorage__accountName",
        source: SettingSource::Deployment,
        meaning: "storage account for identity-based access",
    },
    SettingSpec {
        name: "AzureWebJobsStorage__blobServiceUri",
        source: SettingSource::Optional,
        meaning: "explicit blob endpoint for identity-based access",
    },
    SettingSpec {
        name: "AzureWebJobsStorage__queueServiceUri",
        source: SettingSource::Optional,
        meaning: "explicit queue endpoint for identity-based access",
    },
    SettingSpec {
        name: "AzureWebJobsStorage__clientId",
        source: SettingSource::Optional,
        meaning: "client id of a user-assigned identity for storage",
    },
    SettingSpec {
        name: "AzureWebJobsStorage__credential",
        source: SettingSource::Deployment,
        meaning: "`managedidentity` for identity-based storage",
    },
    SettingSpec {
        name: "QUALTRICS_BASE_URL",
        source: SettingSource::Deployment,
        meaning: "https://{datacenter}.qualtrics.com",
    },
    SettingSpec {
        name: "KEY_VAULT_URL",
        source: SettingSource::Deployment,
        meaning: "Key Vault for secrets; unset means secrets come from environment variables",
    },
    SettingSpec {
        name: "EXPORT_SCHEDULE",
        source: SettingSource::Deployment,
        meaning: "NCRONTAB for ExportPoller (read by the host)",
    },
    SettingSpec {
        name: "ANALYTICS_SCHEDULE",
        source: SettingSource::Deployment,
        meaning: "NCRONTAB for AnalyticsBuilder (read by the host)",
    },
    SettingSpec {
        name: "ANALYTICS_CONTAINER",
        source: SettingSource::Default("qualtrics-analytics"),
        meaning: "blob container of the Delta tables (docs/analytics.md)",
    },
    SettingSpec {
        name: "ANALYTICS_TIME_BUDGET_SECONDS",
        source: SettingSource::Default("420"),
        meaning: "AnalyticsBuilder stops starting batches when less than a sixth of this is left; a batch it cannot finish is redone next run",
    },
    SettingSpec {
        name: "ANALYTICS_BATCH_MIN_MB",
        source: SettingSource::Default("64"),
        meaning: "new export blobs are written to the tables once they hold this many MiB, or the oldest is ANALYTICS_BATCH_MAX_AGE_SECONDS old",
    },
    SettingSpec {
        name: "ANALYTICS_BATCH_MAX_AGE_SECONDS",
        source: SettingSource::Default("3600"),
        meaning: "age of the oldest new export blob at which a smaller batch is written anyway",
    },
    SettingSpec {
        name: "ANALYTICS_BATCH_MAX_MB",
        source: SettingSource::Default("256"),
        meaning: "most NDJSON (MiB) one batch reads: one Parquet file per table per batch",
    },
    SettingSpec {
        name: "ANALYTICS_CHECKPOINT_INTERVAL",
        source: SettingSource::Default("10"),
        meaning: "a Delta checkpoint every this many versions of a table",
    },
    SettingSpec {
        name: "BRIDGE_CONFIG",
        source: SettingSource::Default("bridge.toml"),
        meaning: "path of the survey/routing config, relative to the app root",
    },
    SettingSpec {
        name: "EXPORT_CONTAINER",
        source: SettingSource::Default("qualtrics-exports"),
        meaning: "blob container for exported responses",
    },
    SettingSpec {
        name: "STATE_CONTAINER",
        source: SettingSource::Default("bridge-state"),
        meaning: "blob container for export state and the ticket ledger",
    },
    SettingSpec {
        name: "TICKET_SYNC_SCHEDULE",
        source: SettingSource::Deployment,
        meaning: "NCRONTAB for TicketSync (read by the host)",
    },
    SettingSpec {
        name: "TICKET_SYNC_TIME_BUDGET_SECONDS",
        source: SettingSource::Default("240"),
        meaning: "TicketSync starts no batch once less than a sixth of this budget is left; the rest resumes next run",
    },
    SettingSpec {
        name: "TICKET_SYNC_BATCH_SIZE",
        source: SettingSource::Default("100"),
        meaning: "tickets per state read of TicketSync (1 to 100: Zendesk show_many's maximum)",
    },
    SettingSpec {
        name: "EXPORT_TIME_BUDGET_SECONDS",
        source: SettingSource::Default("420"),
        meaning: "ExportPoller stops starting new work when this budget (well under the 10 min function timeout) runs short; the rest resumes next run",
    },
    SettingSpec {
        name: "EXPORT_POLL_INTERVAL_MS",
        source: SettingSource::Default("2000"),
        meaning: "first export-progress poll interval; backs off x1.5 up to 10 s",
    },
    SettingSpec {
        name: "EXPORT_MAX_TICKET_MESSAGES",
        source: SettingSource::Default("1000"),
        meaning: "reconciliation ticket requests per ExportPoller reply; the rest wait in the state blob",
    },
    SettingSpec {
        name: "EXPORT_THROTTLE_RETRIES",
        source: SettingSource::Default("30"),
        meaning: "Qualtrics 429 retries one ExportPoller run may spend across all its surveys",
    },
    SettingSpec {
        name: "TICKET_LEASE_SECONDS",
        source: SettingSource::Default("30"),
        meaning: "ticket ledger lease (15-60 s), renewed while TicketCreator works: a crashed worker's claim is taken over within this time",
    },
    SettingSpec {
        name: "TICKET_RETRY_MAX_DELAY_SECONDS",
        source: SettingSource::Default("300"),
        meaning: "ceiling of the backoff before a re-enqueued ticket request comes back (a longer Retry-After is still followed)",
    },
    SettingSpec {
        name: "TICKET_RETRY_WINDOW_SECONDS",
        source: SettingSource::Default("259200"),
        meaning: "a ticket request still failing transiently this long after its first failure is dead-lettered with the reason",
    },
    SettingSpec {
        name: "LOOP_RETRY_MAX_DELAY_SECONDS",
        source: SettingSource::Default("300"),
        meaning: "ceiling of the backoff before a re-enqueued loop request comes back (a longer Qualtrics Retry-After is still followed)",
    },
    SettingSpec {
        name: "LOOP_RETRY_WINDOW_SECONDS",
        source: SettingSource::Default("259200"),
        meaning: "a loop request still failing transiently this long after its first failure is dead-lettered with the reason",
    },
    SettingSpec {
        name: "LOOP_CALL_TIMEOUT_SECONDS",
        source: SettingSource::Default("30"),
        meaning: "LoopCloser's limit on each Qualtrics call (1-120 s); a distribution whose answer does not come in time is recorded as ambiguous, never resent",
    },
    SettingSpec {
        name: "PULSE_RETRY_MAX_DELAY_SECONDS",
        source: SettingSource::Default("300"),
        meaning: "ceiling of the backoff before a re-enqueued pulse request comes back (a longer Qualtrics Retry-After is still followed)",
    },
    SettingSpec {
        name: "PULSE_RETRY_WINDOW_SECONDS",
        source: SettingSource::Default("86400"),
        meaning: "a pulse request still failing transiently this long after its first failure is dead-lettered with the reason",
    },
    SettingSpec {
        name: "PULSE_CALL_TIMEOUT_SECONDS",
        source: SettingSource::Default("30"),
        meaning: "PulseSender's limit on each Qualtrics call (1-120 s); a distribution whose answer does not come in time is recorded as ambiguous, never resent",
    },
    SettingSpec {
        name: "PULSE_CALLS_PER_MINUTE",
        source: SettingSource::Default("2900"),
        meaning: "the pace of PulseSender's Qualtrics calls per handler process (1-100000), under Qualtrics' brand-wide 3,000/min",
    },
    SettingSpec {
        name: "BRIDGE_TEST_CRASH_AT",
        source: SettingSource::Optional,
        meaning: "test-only fault hook: abort the handler once at a named export, loop, pulse or analytics point (docs/export.md, docs/loop-closer.md, docs/pulse.md, docs/analytics.md); never set in Azure",
    },
    SettingSpec {
        name: "SERVICENOW_INSTANCE_URL",
        source: SettingSource::Optional,
        meaning: "ServiceNow instance, e.g. https://acme.service-now.com",
    },
    SettingSpec {
        name: "SERVICENOW_USERNAME",
        source: SettingSource::Optional,
        meaning: "ServiceNow Basic-auth user (password in Key Vault)",
    },
    SettingSpec {
        name: "SERVICENOW_CLIENT_ID",
        source: SettingSource::Optional,
        meaning: "ServiceNow OAuth client id (secret in Key Vault)",
    },
    SettingSpec {
        name: "ZENDESK_BASE_URL",
        source: SettingSource::Optional,
        meaning: "Zendesk instance, e.g. https://acme.zendesk.com",
    },
    SettingSpec {
        name: "ZENDESK_EMAIL",
        source: SettingSource::Optional,
        meaning: "Zendesk API user (token in Key Vault)",
    },
    SettingSpec {
        name: "IDENTITY_ENDPOINT",
        source: SettingSource::Platform,
        meaning: "managed identity token endpoint (App Service contract)",
    },
    SettingSpec {
        name: "IDENTITY_HEADER",
        source: SettingSource::Platform,
        meaning: "managed identity request header value",
    },
    SettingSpec {
        name: "AZURE_CLIENT_ID",
        source: SettingSource::Optional,
        meaning:
            "client id of a user-assigned identity for Key Vault; absent means system-assigned",
    },
    SettingSpec {
        name: "SSL_CERT_FILE",
        source: SettingSource::Optional,
        meaning: "extra PEM roots to trust (local test CA only)",
    },
    SettingSpec {
        name: "BRIDGE_LOG",
        source: SettingSource::Default("info"),
        meaning: "log filter (tracing EnvFilter syntax)",
    },
];

use crate::analytics::privacy::AnalyticsConfig;
use crate::close_loop::LoopConfig;
use crate::env::setting;
use crate::pulse::config::{check_all as check_pulses, PulseRoute};
use crate::tickets::{mapping::Mapping, TicketRoute, TicketingLimits};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A setting is missing or has a value the handler cannot use. Names the setting, never
/// echoes a value that could be secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting {0} is not set")]
    Missing(&'static str),
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Bridge { path: String, message: String },
}

/// `SV_` followed by letters, digits or `_`: the shape of a Qualtrics survey id.
pub fn is_survey_id(id: &str) -> bool {
    id.starts_with("SV_")
        && id.len() >= 4
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Settings the handler needs before it can listen.
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    pub port: u16,
    /// The app root (the directory holding host.json); relative paths resolve against it.
    pub app_root: PathBuf,
    pub bridge_config: PathBuf,
}

impl HandlerSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        const PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
        let raw = setting(PORT).ok_or(ConfigError::Missing(PORT))?;
        let port = raw
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ConfigError::Invalid {
                name: PORT,
                reason: format!("{raw:?} is not a TCP port (1-65535)"),
            })?;
        Ok(Self::with_port(port))
    }

    /// Everything but the port, which only the handler mode needs (operator commands pass 0).
    pub fn with_port(port: u16) -> Self {
        let app_root = setting("FUNCTIONS_APP_ROOT_PATH")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        let bridge_config =
            app_root.join(setting("BRIDGE_CONFIG").unwrap_or_else(|| "bridge.toml".into()));
        Self {
            port,
            app_root,
            bridge_config,
        }
    }
}

/// One `[[surveys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurveyConfig {
    pub id: String,
    #[serde(default)]
    pub export: bool,
    #[serde(default)]
    pub tickets: Option<TicketRoute>,
    /// Accept unsigned flat-form webhooks for this survey (logged as unauthenticated).
    #[serde(default)]
    pub allow_unsigned: bool,
    /// What reaches the analytics tables; absent: no identity, no embedded data, free text.
    #[serde(default)]
    pub analytics: Option<AnalyticsConfig>,
    /// `[surveys.loop]`: what `LoopCloser` does with this survey's tickets' states.
    #[serde(default, rename = "loop")]
    pub close_loop: Option<toml::Spanned<LoopConfig>>,
}

/// `bridge.toml`: which surveys are exported and which raise tickets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `sandbox = true` marks devkit's sample (`./bridge.toml`): `scripts/package.sh` refuses
    /// to ship a file that carries it, so a deploy never runs on the sample's survey.
    #[serde(default)]
    pub sandbox: bool,
    #[serde(default)]
    pub surveys: Vec<SurveyConfig>,
    #[serde(default)]
    pub ticketing: TicketingLimits,
    /// `[[pulses]]`: which ops event types send which pulse survey (docs/pulse.md).
    #[serde(default)]
    pub pulses: Vec<PulseRoute>,
}

impl HandlerSettings {
    /// `bridge.toml` at [`Self::bridge_config`]. A missing file at the default path is an
    /// empty config (logged: nothing is exported, no ticket raised); a missing file that
    /// `BRIDGE_CONFIG` names is an error.
    pub fn load_bridge(&self) -> Result<BridgeConfig, ConfigError> {
        if self.bridge_config.exists() || setting("BRIDGE_CONFIG").is_some() {
            return BridgeConfig::load(&self.bridge_config);
        }
        tracing::warn!(
            path = %self.bridge_config.display(),
            "no bridge config: no survey is exported and no ticket is raised"
        );
        Ok(BridgeConfig::default())
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl BridgeConfig {
    /// Loads and validates the file; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Bridge {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses `bridge.toml` text; the error carries line and field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, s) in cfg.surveys.iter().enumerate() {
            if !is_survey_id(&s.id) {
                return Err(format!(
                    "surveys[{i}].id: {:?} is not a Qualtrics survey id (SV_…)",
                    s.id
                ));
            }
            if cfg.surveys[..i].iter().any(|o| o.id == s.id) {
                return Err(format!("surveys[{i}].id: {} is listed twice", s.id));
            }
            if let Some(a) = &s.analytics {
                a.check().map_err(|e| {
                    let line = e
                        .span
                        .as_ref()
                        .map(|sp| format!("line {}, ", line_of(text, sp.start)))
                        .unwrap_or_default();
                    format!("{line}surveys[{i}].analytics.{}: {}", e.field, e.message)
                })?;
            }
            if let Some(route) = &s.tickets {
                Mapping::compile(route).map_err(|e| {
                    let line = e
                        .span
                        .as_ref()
                        .map(|sp| format!("line {}, ", line_of(text, sp.start)))
                        .unwrap_or_default();
                    let col = e
                        .column
                        .map(|c| format!("column {c}: "))
                        .unwrap_or_default();
                    format!("{line}surveys[{i}].tickets.{}: {col}{}", e.field, e.message)
                })?;
            }
            if let Some(lc) = &s.close_loop {
                lc.get_ref().check().map_err(|e| {
                    format!(
                        "line {}, surveys[{i}].loop.{e}",
                        line_of(text, lc.span().start)
                    )
                })?;
            }
        }
        check_pulses(&cfg.pulses, crate::pulse::event::MAX_PEOPLE).map_err(|(i, e)| {
            // A defaulted field has no span: the entry's first key stands in.
            let at = if e.span.is_empty() {
                cfg.pulses[i].event_type.span().start
            } else {
                e.span.start
            };
            format!(
                "line {}, pulses[{i}].{}: {}",
                line_of(text, at),
                e.field,
                e.message
            )
        })?;
        Ok(cfg)
    }

    pub fn survey(&self, id: &str) -> Option<&SurveyConfig> {
        self.surveys.iter().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses() {
        let cfg = BridgeConfig::parse(include_str!("../bridge.toml")).unwrap();
        assert!(cfg.surveys[0].tickets.is_some());
        assert!(
            cfg.sandbox,
            "the sample must stay recognisable to scripts/package.sh"
        );
        assert!(!BridgeConfig::parse("").unwrap().sandbox);
    }

    #[test]
    fn errors_name_line_and_field() {
        let err =
            BridgeConfig::parse("[[surveys]]\nid = \"SV_1\"\nexport = \"yes\"\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("export"), "{err}");
        let err = BridgeConfig::parse(
            "[[surveys]]\nid = \"SV_1\"\n[surveys.tickets]\nsystem = \"jira\"\n",
        )
        .unwrap_err();
        assert!(err.contains("line 4") && err.contains("jira"), "{err}");
        let err = BridgeConfig::parse("[[surveys]]\nid = \"R_1\"\n").unwrap_err();
        assert!(err.contains("surveys[0].id"), "{err}");
        let err = BridgeConfig::parse(
            "[[surveys]]\nid = \"SV_1\"\n[surveys.analytics]\nidentity = [\"ipAddress\"]\nembedded = [\"Team\",\n  \"recipientEmail\"]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("line 6") && err.contains("surveys[0].analytics.embedded[1]"),
            "{err}"
        );
        let err = BridgeConfig::parse(
            "[[surveys]]\nid = \"SV_1\"\n[surveys.analytics]\nidentity = [\"email\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("line 4") && err.contains("identity"), "{err}");
        let lp = "[[surveys]]\nid = \"SV_1\"\n[surveys.loop]\n";
        let cfg = BridgeConfig::parse(lp).unwrap();
        assert!(
            cfg.surveys[0]
                .close_loop
                .as_ref()
                .unwrap()
                .get_ref()
                .write_back
        );
        let err = BridgeConfig::parse(&format!(
            "{lp}write_back = true\nfields = {{ state = 3 }}\n"
        ))
        .unwrap_err();
        assert!(err.contains("line 5") && err.contains("state"), "{err}");
        let err = BridgeConfig::parse(&format!(
            "{lp}fields = {{ state = \"X\", system = \"X\" }}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("line 3, surveys[0].loop.fields") && err.contains("used twice"),
            "{err}"
        );
    }

    const PULSE: &str = "[[pulses]]\nevent_type = \"incident.resolved\"\nsurvey = \"SV_1\"\nlibrary = \"UR_1\"\nmessage = \"MS_1\"\ndirectory = \"POOL_1\"\nmailing_list = \"CG_1\"\n";

    #[test]
    fn pulses_parse_with_defaults() {
        let cfg = BridgeConfig::parse(PULSE).unwrap();
        let p = &cfg.pulses[0];
        assert_eq!(p.event_type(), "incident.resolved");
        assert_eq!(p.category(), "incident.resolved");
        assert_eq!(*p.cooldown_hours.get_ref(), 336);
        assert_eq!(p.max_people(), 100);
    }

    #[test]
    fn bad_pulses_name_line_and_field() {
        let rows = [
            (PULSE.replace("SV_1", "R_1"), "line 3, pulses[0].survey"),
            (PULSE.replace("MS_1", "MS_"), "line 5, pulses[0].message"),
            (PULSE.replace("UR_1", "GR_1"), ""),
            (PULSE.replace("CG_1", "POOL_1"), "line 7, pulses[0].mailing_list"),
            (PULSE.replace("incident.resolved", "incident resolved"), "line 2, pulses[0].event_type"),
            (format!("{PULSE}max_people = 10001\n"), "line 8, pulses[0].max_people: must be 1-10000"),
            (format!("{PULSE}max_people = 0\n"), "line 8, pulses[0].max_people"),
            (format!("{PULSE}cooldown_hours = 9000\n"), "line 8, pulses[0].cooldown_hours"),
            (format!("{PULSE}embedded_data = [\"\"]\n"), "line 8, pulses[0].embedded_data"),
            (format!("{PULSE}cooldown_hours = -1\n"), "line 8"),
            (format!("{PULSE}surveys = 1\n"), "unknown field `surveys`"),
            (format!("{PULSE}\n{PULSE}"), "line 10, pulses[1].event_type: \"incident.resolved\" is handled by an earlier entry"),
            (PULSE.replace("directory = \"POOL_1\"\n", ""), "missing field `directory`"),
        ];
        for (text, want) in rows {
            match BridgeConfig::parse(&text) {
                Ok(_) => assert!(want.is_empty(), "accepted: {text}"),
                Err(e) => assert!(!want.is_empty() && e.contains(want), "{e} (want {want})"),
            }
        }
    }
}
