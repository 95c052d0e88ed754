//! Sandbox mode of `devkit up`: with no Qualtrics or ticketing settings, the handler talks to
//! fake Qualtrics and ServiceNow on loopback, under a generated config (the app's `bridge.toml`
//! plus a `[surveys.loop]` for the demo survey and a `[[pulses]]` entry) and throwaway secrets.
//! The tour then walks each flow and prints what the fakes received: a webhook raises an
//! incident; the incident is resolved, its signed event closes the loop (write-back,
//! follow-up, JSON Event); a sensor event sends a pulse survey, and a second one is held back
//! by the cool-down. Nothing leaves the machine; no address or secret is printed.

use crate::fakes::qualtrics::FakeQualtrics;
use crate::fakes::servicenow::{self, FakeServiceNow, Incident};
use crate::fakes::ticket_events::EventTarget;
use crate::host::app::Settings;
use crate::host::LocalHost;
use crate::ops_sender::OpsSender;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The survey whose responses raise tickets and whose tickets close the loop.
pub const SANDBOX_SURVEY: &str = "SV_22VlHYNeldrrrkp";
/// The survey the loop's follow-up distribution sends.
pub const FOLLOWUP_SURVEY: &str = "SV_sandboxFollowUp";
/// The pulse survey a sensor event sends.
pub const PULSE_SURVEY: &str = "SV_sandboxPulse";
/// The mailing list pulse contacts are upserted into.
pub const PULSE_LIST: &str = "CG_sandboxPulse";
/// The event type the sandbox's `[[pulses]]` entry handles (what `ops_sender` posts).
pub const PULSE_EVENT_TYPE: &str = "SensorNotification.Activated";
/// The domain of every sandbox address (respondent and pulse users); none is ever printed.
pub const EMAIL_DOMAIN: &str = "sandbox.example.com";
/// The generated config, in the app root.
pub const CONFIG_FILE: &str = "sandbox.bridge.toml";
/// How many completed responses the sandbox offers for `devkit publish`.
const SANDBOX_RESPONSES: usize = 3;
/// The analytics dataset: responses over the last `SANDBOX_ANALYTICS_DAYS` days.
pub const SANDBOX_ANALYTICS_RESPONSES: usize = 3000;
pub const SANDBOX_ANALYTICS_DAYS: u32 = 120;
/// How many people the sensor events name.
const PULSE_PEOPLE: usize = 3;
/// The longest wait for one step of the tour.
const STEP: Duration = Duration::from_secs(30);

/// Appended to the demo survey: write-back, one follow-up survey, one JSON Event.
fn loop_section() -> String {
    format!(
        r#"followup = {{ survey = "{FOLLOWUP_SURVEY}", library = "UR_sandboxLibrary", message = "MS_sandboxFollowUp", mailing_list = "CG_sandboxFollowUp", directory = "POOL_sandbox", subject = "How did we do on your ticket?" }}
json_event = {{ context_id = "{SANDBOX_SURVEY}", user_id = "UR_sandboxOwner", brand_id = "sandbox", trigger_id = "OC_sandboxLoop" }}
"#
    )
}

/// The sandbox's pulse: sensor events → a pulse survey, one a day per person per category.
fn pulse_entry() -> String {
    format!(
        r#"event_type = "{PULSE_EVENT_TYPE}"
category = "device-health"
cooldown_hours = 24
survey = "{PULSE_SURVEY}"
library = "UR_sandboxLibrary"
message = "MS_sandboxPulse"
directory = "POOL_sandbox"
mailing_list = "{PULSE_LIST}"
subject = "A quick question about your device"
"#
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0} is not valid TOML: {1}")]
    Config(String, toml::de::Error),
    #[error("cannot write the sandbox config: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot render the sandbox config: {0}")]
    Render(#[from] toml::ser::Error),
    #[error("cannot start a fake service: {0}")]
    Fake(std::io::Error),
}

/// The sandbox config: `base` (the app's `bridge.toml`) with a `[surveys.loop]` for
/// [`SANDBOX_SURVEY`] and a `[[pulses]]` entry for [`PULSE_EVENT_TYPE`], each unless `base`
/// already has one. Comments are not kept: the file is generated for one run.
pub fn sandbox_config(base: &str, base_name: &str) -> Result<String, SandboxError> {
    let parse = |text: &str| {
        text.parse::<toml::Table>()
            .map_err(|e| SandboxError::Config(base_name.to_string(), e))
    };
    let mut config = parse(base)?;
    // The snippets are ours: they parse, or the unit test below fails.
    let (section, entry) = (parse(&loop_section())?, parse(&pulse_entry())?);
    if let Some(toml::Value::Array(surveys)) = config.get_mut("surveys") {
        let demo = surveys
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|s| s.get("id").and_then(toml::Value::as_str) == Some(SANDBOX_SURVEY));
        if let Some(demo) = demo {
            demo.entry("loop")
                .or_insert_with(|| toml::Value::Table(section));
        }
    }
    let pulses = config
        .entry("pulses")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    if let toml::Value::Array(pulses) = pulses {
        let handled = pulses
            .iter()
            .any(|p| p.get("event_type").and_then(toml::Value::as_str) == Some(PULSE_EVENT_TYPE));
        if !handled {
            pulses.push(toml::Value::Table(entry));
        }
    }
    Ok(format!(
        "# Generated by `devkit up` in sandbox mode from {base_name}, for this run only.\n{}",
        toml::to_string(&config)?
    ))
}

/// 32 random bytes, as a `uuid` v4 pair (the CSPRNG the crate already uses).
fn random_bytes() -> Vec<u8> {
    [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| u.as_bytes().to_vec())
        .collect()
}

fn random_hex() -> String {
    random_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The dataset ends a day before now (so a first export takes all of it), and starts at a
/// whole UTC day, so one seed gives one dataset per day of running.
pub fn sandbox_data_start_ms() -> i64 {
    const DAY: i64 = 86_400_000;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    (now / DAY - i64::from(SANDBOX_ANALYTICS_DAYS) - 1) * DAY
}

/// Polls `check` until it gives a value or `STEP` has passed.
async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The running sandbox: the fakes (stopped when dropped) and this run's throwaway secrets.
pub struct Sandbox {
    qualtrics: FakeQualtrics,
    servicenow: Arc<FakeServiceNow>,
    webhook_key: String,
    /// `SERVICENOW_WEBHOOK_SECRET`: the fake's business rule signs with it.
    servicenow_secret: String,
    /// `OPS_WEBHOOK_SECRET` (`whsec_…`): the fake sensor signs with it.
    ops_secret: String,
    /// The completed response the tour delivers (it has a respondent address).
    demo_response: String,
    /// Further completed responses the fake Qualtrics holds, for `devkit publish`.
    responses: Vec<String>,
    /// Makes this run's pulse event ids and addresses its own (a persistent Azurite keeps
    /// ledgers and cool-downs across runs).
    run: String,
}

impl Sandbox {
    /// The fake ServiceNow the sandbox points the handler at.
    pub fn servicenow(&self) -> &FakeServiceNow {
        &self.servicenow
    }

    /// Starts the fakes and points `settings` at them when no Qualtrics or ticketing setting is
    /// set; writes the sandbox config into `app_root`. `None`: the settings name real services.
    pub async fn start_if_unconfigured(
        settings: &mut Settings,
        app_root: &Path,
    ) -> Result<Option<Self>, SandboxError> {
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
        // Never printed: only devkit's fakes sign with them.
        let servicenow_secret = random_hex();
        let ops_secret = format!("whsec_{}", STANDARD.encode(random_bytes()));
        let hash_key = set(settings, "ANALYTICS_HASH_KEY").unwrap_or_else(random_hex);
        for s in [&servicenow_secret, &ops_secret, &hash_key] {
            crate::canary::register(s);
        }
        let base_name = set(settings, "BRIDGE_CONFIG").unwrap_or_else(|| "bridge.toml".into());
        let base_path = app_root.join(&base_name);
        let base = std::fs::read_to_string(&base_path).unwrap_or_default();
        let config: PathBuf = app_root.join(CONFIG_FILE);
        std::fs::write(&config, sandbox_config(&base, &base_name)?)?;

        let qualtrics = FakeQualtrics::start(&token)
            .await
            .map_err(SandboxError::Fake)?;
        let servicenow = FakeServiceNow::start().await.map_err(SandboxError::Fake)?;
        // The analytics survey: a definition and a few months of responses to build tables from.
        let dataset = crate::fakes::sandbox_data::generate(
            crate::fakes::sandbox_data::SANDBOX_ANALYTICS_SURVEY,
            crate::fakes::sandbox_data::SANDBOX_SEED,
            SANDBOX_ANALYTICS_RESPONSES,
            sandbox_data_start_ms(),
            SANDBOX_ANALYTICS_DAYS,
        );
        qualtrics.add_dataset(&dataset);
        let mut responses = qualtrics.add_responses(SANDBOX_SURVEY, 1 + SANDBOX_RESPONSES);
        let demo_response = responses.remove(0);
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        // The demo was answered through an email distribution: the follow-up goes there.
        qualtrics.set_recipient(
            &demo_response,
            &format!("sam.{run}@{EMAIL_DOMAIN}"),
            "Sam",
            "Sandbox",
        );
        for (k, v) in [
            ("QUALTRICS_BASE_URL", qualtrics.base_url.clone()),
            ("QUALTRICS_API_TOKEN", token),
            ("QUALTRICS_WEBHOOK_KEY", webhook_key.clone()),
            ("SERVICENOW_INSTANCE_URL", servicenow.url()),
            ("SERVICENOW_USERNAME", servicenow::USERNAME.to_string()),
            ("SERVICENOW_PASSWORD", servicenow::PASSWORD.to_string()),
            ("SERVICENOW_WEBHOOK_SECRET", servicenow_secret.clone()),
            ("OPS_WEBHOOK_SECRET", ops_secret.clone()),
            ("ANALYTICS_HASH_KEY", hash_key),
            ("BRIDGE_CONFIG", config.display().to_string()),
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
            " Config: {} ({base_name} + a loop and a pulse).",
            config.display()
        );
        eprintln!(
            " Nothing leaves this machine; the keys and secrets are throwaways for this run."
        );
        eprintln!("==============================================================================");
        Ok(Some(Self {
            qualtrics,
            servicenow: Arc::new(servicenow),
            webhook_key,
            servicenow_secret,
            ops_secret,
            demo_response,
            responses,
            run,
        }))
    }

    /// The tour: a webhook raises an incident, the incident's resolution closes the loop, a
    /// sensor event sends a pulse and a second one is held back. Each step prints what
    /// happened, or what did not within its deadline.
    pub async fn tour(&self, host: &LocalHost) {
        let Some(incident) = self.raise(host).await else {
            return;
        };
        self.close_the_loop(host, &incident).await;
        self.pulse(host).await;
    }

    /// Sends the signed webhook of a completed response the fake Qualtrics holds through the
    /// local host, and reports the incident the fake ServiceNow received.
    async fn raise(&self, host: &LocalHost) -> Option<Incident> {
        let url = host.function_url("QualtricsWebhook")?;
        let response = &self.demo_response;
        let delivery =
            crate::publisher::Delivery::signed(&self.webhook_key, SANDBOX_SURVEY, response);
        match crate::publisher::Publisher::new(url)
            .deliver(&delivery)
            .await
        {
            Ok(reply) => eprintln!(
                "demo: signed webhook for {SANDBOX_SURVEY}/{response} answered {}",
                reply.status
            ),
            Err(e) => {
                eprintln!("demo: webhook delivery failed: {e}");
                return None;
            }
        }
        let incident = wait_for(|| self.servicenow.incidents().into_iter().next()).await;
        match &incident {
            Some(i) => eprintln!(
                "demo: fake ServiceNow created incident {} for that response",
                i.number
            ),
            None => eprintln!("demo: no ticket after {STEP:?}; see the handler's log above"),
        }
        incident
    }

    /// An agent resolves the incident; the fake's business rule sends its signed event to
    /// `TicketEvents`; `LoopCloser` writes back, sends one follow-up and fires the JSON Event.
    async fn close_the_loop(&self, host: &LocalHost, incident: &Incident) {
        let Some((url, key)) = host.function_url("TicketEvents").and_then(|u| {
            u.split_once("?code=")
                .map(|(u, k)| (u.to_string(), k.to_string()))
        }) else {
            eprintln!("sandbox: the app has no TicketEvents function; no loop to show");
            return;
        };
        self.servicenow.set_events(Some(EventTarget {
            url: url.replace("{system}", "servicenow"),
            secret: self.servicenow_secret.clone(),
            headers: vec![("x-functions-key".into(), key)],
        }));
        // TicketEvents matches the event through the ledger entry TicketCreator writes before
        // it answers: resolving earlier would make the event "not ours".
        let created = wait_for(|| {
            host.records()
                .iter()
                .any(|r| r.function == "TicketCreator" && r.outcome.is_ok())
                .then_some(())
        })
        .await;
        if created.is_none() {
            eprintln!("sandbox: TicketCreator did not finish; no loop to show");
            return;
        }
        let number = &incident.number;
        if let Err(e) =
            self.servicenow
                .set_state(&incident.sys_id, "6", Some("Solved (Permanently)"))
        {
            eprintln!("sandbox: cannot resolve {number}: {e}");
            return;
        }
        let events = self.servicenow.events();
        match wait_for(|| events.sent().into_iter().next()).await {
            Some(sent) => eprintln!(
                "sandbox: ServiceNow resolved {number} ; event sent to TicketEvents (answered {})",
                sent.status.map_or("nothing".into(), |s| s.to_string())
            ),
            None => {
                eprintln!("sandbox: ServiceNow resolved {number} ; its event was not sent");
                return;
            }
        }

        let rid = &self.demo_response;
        let written = wait_for(|| {
            self.qualtrics
                .response_updates()
                .into_iter()
                .filter(|u| &u.response_id == rid)
                .filter_map(|u| serde_json::from_str::<Value>(&u.body).ok())
                .find_map(|b| {
                    let data = b["embeddedData"].as_object()?.clone();
                    (data.get("TicketState")?.as_str()? == "resolved").then_some(data)
                })
        })
        .await;
        let Some(data) = written else {
            eprintln!(
                "sandbox: no write-back to {rid} after {STEP:?}; see the handler's log above"
            );
            return;
        };
        // The state first, then the rest as written.
        let mut pairs: Vec<(&String, &Value)> = data.iter().collect();
        pairs.sort_by_key(|(k, _)| k.as_str() != "TicketState");
        let pairs: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        eprintln!(
            "sandbox: Qualtrics response {rid} updated: {}",
            pairs.join(", ")
        );

        let followup = wait_for(|| {
            self.qualtrics
                .distributions()
                .into_iter()
                .find(|d| d.body["surveyLink"]["surveyId"] == FOLLOWUP_SURVEY)
        })
        .await;
        match followup {
            Some(d) => eprintln!(
                "sandbox: follow-up distribution {} sent for {number} (survey {FOLLOWUP_SURVEY})",
                d.id
            ),
            None => eprintln!("sandbox: no follow-up for {number} after {STEP:?}"),
        }
        match wait_for(|| self.qualtrics.json_events().into_iter().next()).await {
            Some(e) => eprintln!(
                "sandbox: Qualtrics JSON Event {} received for {number} (trigger {})",
                e.body["eventType"].as_str().unwrap_or("?"),
                e.query.get("triggerId").map_or("?", String::as_str)
            ),
            None => eprintln!("sandbox: no JSON Event for {number} after {STEP:?}"),
        }
    }

    /// A fake sensor posts a signed event naming a few people to `OpsEvents`; `PulseSender`
    /// upserts them and sends; a second event of the same category is held back.
    async fn pulse(&self, host: &LocalHost) {
        let Some(url) = host.function_url("OpsEvents") else {
            eprintln!("sandbox: the app has no OpsEvents function; no pulse to show");
            return;
        };
        let sender = match OpsSender::new(url, &self.ops_secret) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sandbox: {e}");
                return;
            }
        };
        let people: Vec<String> = ["ana", "ben", "cy"]
            .iter()
            .take(PULSE_PEOPLE)
            .map(|n| format!("{n}.{}@{EMAIL_DOMAIN}", self.run))
            .collect();
        for p in &people {
            crate::canary::register(p);
        }
        let people: Vec<&str> = people.iter().map(String::as_str).collect();
        let n = people.len();
        let sent_before = self.pulse_distributions().len();

        let first = format!("sandbox-{}-1", self.run);
        if !self.post(host, &sender, &first, &people).await {
            return;
        }
        let contacts = self
            .qualtrics
            .contact_upserts()
            .iter()
            .filter(|(list, _)| list == PULSE_LIST)
            .count();
        let sent: Vec<String> = self.pulse_distributions().split_off(sent_before);
        eprintln!(
            "sandbox: fake Qualtrics received for {first}: {contacts} contacts upserted into {PULSE_LIST}, {} distribution(s) of {PULSE_SURVEY} ({})",
            sent.len(),
            sent.join(", ")
        );

        let second = format!("sandbox-{}-2", self.run);
        let before = self.pulse_distributions().len();
        if !self.post(host, &sender, &second, &people).await {
            return;
        }
        let more = self.pulse_distributions().len() - before;
        if more == 0 {
            eprintln!(
                "sandbox: second sensor event {second} for the same {n} users held back by cool-down: 0 distributions"
            );
        } else {
            eprintln!(
                "sandbox: second sensor event {second} for the same {n} users NOT held back: {more} distributions"
            );
        }
    }

    /// Ids of the distributions of the pulse survey, in creation order.
    fn pulse_distributions(&self) -> Vec<String> {
        self.qualtrics
            .distributions()
            .into_iter()
            .filter(|d| d.body["surveyLink"]["surveyId"] == PULSE_SURVEY)
            .map(|d| d.id)
            .collect()
    }

    /// Posts one sensor event and waits until `PulseSender` has finished with it; false when
    /// it was refused or not processed in time (said so).
    async fn post(&self, host: &LocalHost, sender: &OpsSender, id: &str, people: &[&str]) -> bool {
        let reply = match sender.sensor(id, "VPN client crash", people).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sandbox: sensor event {id} not posted: {e}");
                return false;
            }
        };
        eprintln!(
            "sandbox: sensor event {id} ({PULSE_EVENT_TYPE}) for {} users posted to OpsEvents: {}",
            people.len(),
            reply.status
        );
        if reply.status != 202 {
            return false;
        }
        // PulseSender's log lines name the event id; its invocation's end is the event's end.
        let done = wait_for(|| {
            host.records()
                .iter()
                .any(|r| {
                    r.function == "PulseSender"
                        && r.outcome.is_ok()
                        && r.logs.iter().any(|l| l.contains(id))
                })
                .then_some(())
        })
        .await;
        if done.is_none() {
            eprintln!("sandbox: PulseSender did not finish {id} after {STEP:?}; see the handler's log above");
        }
        done.is_some()
    }

    /// Prints what `devkit publish` needs in sandbox mode: the key (a throwaway, sandbox-only
    /// value), the responses the fake Qualtrics knows and the fakes' URLs, as `NAME=value` lines
    /// on stdout.
    pub fn recipe(&self) {
        let (survey, responses) = (SANDBOX_SURVEY, self.responses.join(" "));
        println!("QUALTRICS_WEBHOOK_KEY={}", self.webhook_key);
        println!("SANDBOX_SURVEY={survey}");
        println!("SANDBOX_RESPONSES={responses}");
        println!("FAKE_QUALTRICS_URL={}", self.qualtrics.base_url);
        println!("FAKE_SERVICENOW_URL={}", self.servicenow.url());
        let first = self.responses.first().map(String::as_str).unwrap_or("R_…");
        eprintln!("Send your own delivery (another shell; any of SANDBOX_RESPONSES):");
        eprintln!(
            "  QUALTRICS_WEBHOOK_KEY={} target/release/devkit publish --url \"$WEBHOOK_URL\" --survey {survey} --response {first}",
            self.webhook_key
        );
        eprintln!("What the fake Qualtrics received (write-backs, contacts, distributions, JSON Events; no addresses):");
        eprintln!("  curl -s \"$FAKE_QUALTRICS_URL/_fake/received\"");
    }

    /// Reports each ticket the fake ServiceNow creates from now on, so a `devkit publish`
    /// shows its outcome here.
    pub fn watch_tickets(&self) -> tokio::task::JoinHandle<()> {
        let servicenow = self.servicenow.clone();
        tokio::spawn(async move {
            let mut seen = servicenow.incidents().len();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repos_sample_gets_a_loop_on_the_demo_survey_and_a_pulse() {
        let base = std::fs::read_to_string(crate::azurite::repo_root().join("bridge.toml"))
            .expect("bridge.toml");
        let text = sandbox_config(&base, "bridge.toml").expect("config");
        let v: toml::Table = text.parse().expect("generated TOML parses");
        let surveys = v["surveys"].as_array().expect("surveys");
        let demo = surveys
            .iter()
            .find(|s| s["id"].as_str() == Some(SANDBOX_SURVEY))
            .expect("demo survey");
        assert_eq!(
            demo["loop"]["followup"]["survey"].as_str(),
            Some(FOLLOWUP_SURVEY)
        );
        assert_eq!(demo["tickets"]["system"].as_str(), Some("servicenow"));
        // Only the demo survey gets a loop; the rest is the sample as it was.
        assert_eq!(
            surveys.iter().filter(|s| s.get("loop").is_some()).count(),
            1
        );
        assert_eq!(v["sandbox"].as_bool(), Some(true));
        let pulses = v["pulses"].as_array().expect("pulses");
        assert_eq!(pulses.len(), 1);
        assert_eq!(pulses[0]["event_type"].as_str(), Some(PULSE_EVENT_TYPE));
        assert_eq!(pulses[0]["mailing_list"].as_str(), Some(PULSE_LIST));
    }

    #[test]
    fn an_existing_loop_or_pulse_is_kept_and_bad_toml_is_named() {
        let base = format!(
            "[[surveys]]\nid = \"{SANDBOX_SURVEY}\"\n[surveys.loop]\nwrite_back = false\n\n[[pulses]]\nevent_type = \"{PULSE_EVENT_TYPE}\"\nsurvey = \"SV_mine\"\n"
        );
        let v: toml::Table = sandbox_config(&base, "mine.toml")
            .expect("config")
            .parse()
            .expect("TOML");
        assert_eq!(v["surveys"][0]["loop"]["write_back"].as_bool(), Some(false));
        assert!(v["surveys"][0]["loop"].get("followup").is_none());
        assert_eq!(v["pulses"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["pulses"][0]["survey"].as_str(), Some("SV_mine"));
        let err = sandbox_config("[[surveys]\n", "broken.toml").expect_err("bad TOML");
        assert!(
            err.to_string().starts_with("broken.toml is not valid TOML"),
            "{err}"
        );
    }
}
