//! ServiceNow Table API (`incident`), reference `external-apis.md` §2: Basic auth
//! (`SERVICENOW_USERNAME` + secret `servicenow-password`) or OAuth client credentials
//! (`SERVICENOW_CLIENT_ID` + secret `servicenow-client-secret`), lookup by `correlation_id`
//! (checking the returned value: a misspelt query returns every row), create with
//! `correlation_display = qualtrics-bridge`.

use super::config::TicketingLimits;
use super::http::{classify, CallError, Endpoint, Reply};
use super::ledger::TicketRef;
use super::mapping::Draft;
use super::open::Observed;
use crate::messages::TicketState;
use crate::secrets::{SecretName, SecretsProvider};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

pub const CORRELATION_DISPLAY: &str = "qualtrics-bridge";
/// The most `sys_id`s one state read asks for: 100 ids are about 3.3 KB of query string, well
/// under the URL limits in front of an instance, and one page of the reply.
pub const STATES_MAX: usize = 100;
const STATE_FIELDS: &str =
    "sys_id,number,state,close_code,sys_updated_on,sys_mod_count,correlation_id";

#[derive(Debug)]
enum Auth {
    Basic {
        username: String,
    },
    OAuth {
        client_id: String,
        token: tokio::sync::Mutex<Option<(String, Instant)>>,
    },
}

#[derive(Debug)]
pub struct ServiceNow {
    base: url::Url,
    auth: Auth,
    pub http: Endpoint,
}

fn detail(r: &Reply) -> String {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) => {
            let m = v["error"]["message"].as_str().unwrap_or_default();
            let d = v["error"]["detail"].as_str().unwrap_or_default();
            format!("{m}{}{d}", if d.is_empty() { "" } else { ": " })
        }
        Err(_) => r.text(),
    }
}

/// `sys_updated_on` (`YYYY-MM-DD HH:MM:SS`, UTC) as RFC 3339; anything else is kept as is
/// (it then orders before every real time, see `LoopRequest::order_key`).
pub fn rfc3339_of(glide: &str) -> String {
    match glide.split_once(' ') {
        Some((d, t)) if glide.len() == 19 => format!("{d}T{t}Z"),
        _ => glide.to_string(),
    }
}

/// A `sys_id`: 32 hexadecimal characters (nothing that could change an encoded query).
pub fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ServiceNow {
    /// The canonical state of an incident `state` (reference `close-the-loop.md` §3.1, §8:
    /// the Helsinki-and-later numbers).
    pub fn state_of(state: &str) -> TicketState {
        match state.trim() {
            "6" => TicketState::Resolved,
            "7" => TicketState::Closed,
            "8" => TicketState::Canceled,
            _ => TicketState::Open,
        }
    }

    /// From `SERVICENOW_INSTANCE_URL` and `SERVICENOW_USERNAME` / `SERVICENOW_CLIENT_ID`.
    pub fn from_settings(
        lookup: &dyn Fn(&str) -> Option<String>,
        limits: &TicketingLimits,
    ) -> Result<Option<Self>, String> {
        let Some(url) = lookup("SERVICENOW_INSTANCE_URL") else {
            return Ok(None);
        };
        let base = super::http::check_url("SERVICENOW_INSTANCE_URL", &url)?;
        let auth = match (lookup("SERVICENOW_USERNAME"), lookup("SERVICENOW_CLIENT_ID")) {
            (Some(username), None) => Auth::Basic { username },
            (None, Some(client_id)) => Auth::OAuth {
                client_id,
                token: tokio::sync::Mutex::new(None),
            },
            (Some(_), Some(_)) => {
                return Err("settings SERVICENOW_USERNAME and SERVICENOW_CLIENT_ID are both set: choose Basic or OAuth".into())
            }
            (None, None) => {
                return Err("setting SERVICENOW_INSTANCE_URL is set but neither SERVICENOW_USERNAME (Basic) nor SERVICENOW_CLIENT_ID (OAuth) is".into())
            }
        };
        let http = Endpoint::new("ServiceNow", limits).map_err(|e| e.to_string())?;
        Ok(Some(Self { base, auth, http }))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    fn secret_name(&self) -> SecretName {
        match self.auth {
            Auth::Basic { .. } => SecretName::ServicenowPassword,
            Auth::OAuth { .. } => SecretName::ServicenowClientSecret,
        }
    }

    async fn secret(&self, secrets: &SecretsProvider) -> Result<String, CallError> {
        let name = self.secret_name();
        match secrets.get(name).await {
            Ok(Some(s)) => Ok(s.expose().to_string()),
            Ok(None) => Err(CallError::Permanent(format!(
                "ServiceNow: secret {name} is not set"
            ))),
            Err(e) => Err(CallError::Transient(e.to_string())),
        }
    }

    async fn authorization(
        &self,
        secrets: &SecretsProvider,
        spent: &mut Duration,
    ) -> Result<String, CallError> {
        match &self.auth {
            Auth::Basic { username } => {
                let password = self.secret(secrets).await?;
                Ok(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{username}:{password}"))
                ))
            }
            Auth::OAuth { client_id, token } => {
                let mut cached = token.lock().await;
                if let Some((t, until)) = cached.as_ref() {
                    if *until > Instant::now() {
                        return Ok(format!("Bearer {t}"));
                    }
                }
                let secret = self.secret(secrets).await?;
                let url = self.url("/oauth_token.do");
                let form: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", client_id)
                    .append_pair("client_secret", &secret)
                    .finish();
                let r = self
                    .http
                    .send("token", spent, || {
                        self.http
                            .client
                            .post(&url)
                            .header("accept", "application/json")
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(form.clone())
                    })
                    .await?;
                if r.status != 200 {
                    // A refused client secret is an auth failure (the caller refreshes once).
                    let e = classify("ServiceNow", "token", &r, r.text());
                    return Err(match (r.status, e) {
                        (400 | 401, e) => CallError::Auth(e.to_string()),
                        (_, e) => e,
                    });
                }
                let v = r.json()?;
                let access = v["access_token"].as_str().ok_or_else(|| {
                    CallError::Transient("ServiceNow token: no access_token".into())
                })?;
                let ttl = v["expires_in"].as_u64().unwrap_or(1799).saturating_sub(60);
                *cached = Some((
                    access.to_string(),
                    Instant::now() + Duration::from_secs(ttl),
                ));
                Ok(format!("Bearer {access}"))
            }
        }
    }

    /// Called after a 401: re-reads the secret and drops the OAuth token.
    pub async fn refresh(&self, secrets: &SecretsProvider) {
        if let Auth::OAuth { token, .. } = &self.auth {
            *token.lock().await = None;
        }
        let _ = secrets.refresh(self.secret_name()).await;
    }

    /// The rows of `GET /api/now/table/incident?{query}` (`what` names the call in errors).
    async fn rows(
        &self,
        secrets: &SecretsProvider,
        what: &str,
        query: &[(&str, String)],
        spent: &mut Duration,
    ) -> Result<Vec<Value>, CallError> {
        let auth = self.authorization(secrets, spent).await?;
        let url = self.url("/api/now/table/incident");
        let r = self
            .http
            .send(what, spent, || {
                self.http
                    .client
                    .get(&url)
                    .query(query)
                    .header("authorization", &auth)
                    .header("accept", "application/json")
            })
            .await?;
        if r.status != 200 {
            return Err(classify("ServiceNow", what, &r, detail(&r)));
        }
        match r.json()?["result"].take() {
            Value::Array(rows) => Ok(rows),
            _ => Err(CallError::Transient(format!(
                "ServiceNow {what}: reply has no result array"
            ))),
        }
    }

    /// The incident whose `correlation_id` is exactly `correlation`, if any.
    pub async fn find(
        &self,
        secrets: &SecretsProvider,
        correlation: &str,
        spent: &mut Duration,
    ) -> Result<Option<TicketRef>, CallError> {
        let query = [
            ("sysparm_query", format!("correlation_id={correlation}")),
            ("sysparm_limit", "1".to_string()),
            ("sysparm_fields", "sys_id,number,correlation_id".to_string()),
            ("sysparm_no_count", "true".to_string()),
        ];
        let rows = self.rows(secrets, "lookup", &query, spent).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        // An ignored (misspelt or unknown) query field returns every row: never trust a row
        // whose correlation_id is not ours.
        if row["correlation_id"].as_str() != Some(correlation) {
            return Err(CallError::Permanent(format!(
                "ServiceNow lookup by correlation_id returned an incident with correlation_id {:?}: the instance is not honouring the query, so duplicates cannot be ruled out",
                row["correlation_id"].as_str().unwrap_or("")
            )));
        }
        Ok(Some(TicketRef {
            system: "servicenow".into(),
            id: row["sys_id"].as_str().unwrap_or_default().to_string(),
            number: row["number"].as_str().map(str::to_owned),
            found_by_lookup: true,
        }))
    }

    /// The request body for `draft`.
    pub fn body(draft: &Draft, correlation: &str) -> Value {
        let mut m = Map::new();
        for (k, v) in &draft.extra {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        m.insert("short_description".into(), json!(draft.subject));
        m.insert("description".into(), json!(draft.description));
        if let Some(u) = &draft.urgency {
            m.insert("urgency".into(), json!(u));
        }
        if let Some(p) = &draft.priority {
            // ServiceNow computes priority from impact × urgency.
            m.insert("impact".into(), json!(p));
        }
        m.insert("correlation_id".into(), json!(correlation));
        m.insert("correlation_display".into(), json!(CORRELATION_DISPLAY));
        Value::Object(m)
    }

    pub async fn create(
        &self,
        secrets: &SecretsProvider,
        draft: &Draft,
        correlation: &str,
        spent: &mut Duration,
    ) -> Result<TicketRef, CallError> {
        let auth = self.authorization(secrets, spent).await?;
        let url = self.url("/api/now/table/incident");
        let body = Self::body(draft, correlation);
        let r = self
            .http
            .send("create", spent, || {
                self.http
                    .client
                    .post(&url)
                    .query(&[
                        ("sysparm_exclude_reference_link", "true"),
                        ("sysparm_fields", "sys_id,number,correlation_id"),
                    ])
                    .header("authorization", &auth)
                    .header("accept", "application/json")
                    .json(&body)
            })
            .await?;
        if r.status != 201 && r.status != 200 {
            return Err(classify("ServiceNow", "create", &r, detail(&r)));
        }
        let v = r.json()?;
        let sys_id = v["result"]["sys_id"].as_str().ok_or_else(|| {
            CallError::Transient("ServiceNow create: reply has no result.sys_id".into())
        })?;
        Ok(TicketRef {
            system: "servicenow".into(),
            id: sys_id.to_string(),
            number: v["result"]["number"].as_str().map(str::to_owned),
            found_by_lookup: false,
        })
    }

    /// The current state of up to [`STATES_MAX`] incidents (`sysparm_query=sys_idIN…`);
    /// incidents the instance no longer has are absent from the reply. A row that was not
    /// asked for means the instance ignored the query: an error, never a wrong state.
    pub async fn states(
        &self,
        secrets: &SecretsProvider,
        sys_ids: &[&str],
        spent: &mut Duration,
    ) -> Result<Vec<Observed>, CallError> {
        if sys_ids.len() > STATES_MAX || !sys_ids.iter().all(|s| is_sys_id(s)) {
            return Err(CallError::Permanent(format!(
                "ServiceNow state read takes at most {STATES_MAX} sys_ids of 32 hex characters"
            )));
        }
        let query = [
            ("sysparm_query", format!("sys_idIN{}", sys_ids.join(","))),
            ("sysparm_fields", STATE_FIELDS.to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
            ("sysparm_limit", sys_ids.len().to_string()),
            ("sysparm_no_count", "true".to_string()),
        ];
        let rows = self.rows(secrets, "state read", &query, spent).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let field = |k: &str| row[k].as_str().unwrap_or_default().to_string();
            let id = field("sys_id");
            if !sys_ids.contains(&id.as_str()) {
                return Err(CallError::Permanent(
                    "ServiceNow state read returned an incident that was not asked for: the instance is not honouring sys_idIN".into(),
                ));
            }
            let status = field("state");
            let close_code = field("close_code");
            let number = field("number");
            out.push(Observed {
                id,
                number: (!number.is_empty()).then_some(number),
                state: Self::state_of(&status),
                status: status.to_ascii_lowercase(),
                close_code: (!close_code.is_empty()).then_some(close_code),
                changed_at: rfc3339_of(&field("sys_updated_on")),
                sequence: field("sys_mod_count").parse().ok(),
                correlation: row["correlation_id"].as_str().map(str::to_owned),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_times_map_as_the_reference_says() {
        for (s, want) in [
            ("1", TicketState::Open),
            ("3", TicketState::Open),
            ("6", TicketState::Resolved),
            ("7", TicketState::Closed),
            ("8", TicketState::Canceled),
        ] {
            assert_eq!(ServiceNow::state_of(s), want, "{s}");
        }
        assert_eq!(rfc3339_of("2026-01-05 10:38:50"), "2026-01-05T10:38:50Z");
        assert_eq!(rfc3339_of("yesterday"), "yesterday");
        assert!(is_sys_id("c537bae64f411200adf9f8e18110c76e"));
        assert!(!is_sys_id("c537bae64f411200adf9f8e18110c76e^ORDERBYx"));
    }
}
