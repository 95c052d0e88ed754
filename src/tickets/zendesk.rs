//! Zendesk Tickets API, reference `external-apis.md` §3: API token
//! (`ZENDESK_EMAIL` + secret `zendesk-api-token`, sent as `{email}/token:{token}`) or OAuth
//! (no `ZENDESK_EMAIL`: the secret is a bearer access token); lookup by `external_id`, create
//! with an `Idempotency-Key` derived from the response; the 429 body is plain text.

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
use std::time::Duration;

#[derive(Debug)]
pub struct Zendesk {
    base: url::Url,
    email: Option<String>,
    pub http: Endpoint,
}

fn detail(r: &Reply) -> String {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) => {
            let mut s = format!(
                "{} {}",
                v["error"].as_str().unwrap_or_default(),
                v["description"].as_str().unwrap_or_default()
            );
            if let Some(d) = v["details"].as_object() {
                for (field, errs) in d {
                    for e in errs.as_array().into_iter().flatten() {
                        s.push_str(&format!(
                            "; {field}: {}",
                            e["description"].as_str().unwrap_or_default()
                        ));
                    }
                }
            }
            s.trim().to_string()
        }
        Err(_) => r.text(),
    }
}

/// The most ids one `show_many` call takes.
pub const SHOW_MANY_MAX: usize = 100;

impl Zendesk {
    /// The canonical state of a Zendesk status (reference `close-the-loop.md` §8); casing
    /// varies between Zendesk's samples, so it is compared case-insensitively.
    pub fn state_of(status: &str) -> TicketState {
        match status.to_ascii_lowercase().as_str() {
            "solved" => TicketState::Resolved,
            "closed" => TicketState::Closed,
            "deleted" => TicketState::Canceled,
            _ => TicketState::Open,
        }
    }

    pub fn from_settings(
        lookup: &dyn Fn(&str) -> Option<String>,
        limits: &TicketingLimits,
    ) -> Result<Option<Self>, String> {
        let Some(url) = lookup("ZENDESK_BASE_URL") else {
            return Ok(None);
        };
        let base = super::http::check_url("ZENDESK_BASE_URL", &url)?;
        let http = Endpoint::new("Zendesk", limits).map_err(|e| e.to_string())?;
        Ok(Some(Self {
            base,
            email: lookup("ZENDESK_EMAIL"),
            http,
        }))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    async fn authorization(&self, secrets: &SecretsProvider) -> Result<String, CallError> {
        let token = match secrets.get(SecretName::ZendeskApiToken).await {
            Ok(Some(s)) => s.expose().to_string(),
            Ok(None) => {
                return Err(CallError::Permanent(format!(
                    "Zendesk: secret {} is not set",
                    SecretName::ZendeskApiToken
                )))
            }
            Err(e) => return Err(CallError::Transient(e.to_string())),
        };
        Ok(match &self.email {
            Some(email) => format!(
                "Basic {}",
                STANDARD.encode(format!("{email}/token:{token}"))
            ),
            None => format!("Bearer {token}"),
        })
    }

    pub async fn refresh(&self, secrets: &SecretsProvider) {
        let _ = secrets.refresh(SecretName::ZendeskApiToken).await;
    }

    /// The oldest ticket whose `external_id` is exactly `external_id` (ids are not unique).
    pub async fn find(
        &self,
        secrets: &SecretsProvider,
        external_id: &str,
        spent: &mut Duration,
    ) -> Result<Option<TicketRef>, CallError> {
        let auth = self.authorization(secrets).await?;
        let url = self.url("/api/v2/tickets.json");
        let r = self
            .http
            .send("lookup", spent, || {
                self.http
                    .client
                    .get(&url)
                    .query(&[("external_id", external_id)])
                    .header("authorization", &auth)
                    .header("accept", "application/json")
            })
            .await?;
        if r.status != 200 {
            return Err(classify("Zendesk", "lookup", &r, detail(&r)));
        }
        let v = r.json()?;
        let best = v["tickets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["external_id"].as_str() == Some(external_id))
            .filter_map(|t| t["id"].as_u64())
            .min();
        Ok(best.map(|id| TicketRef {
            system: "zendesk".into(),
            id: id.to_string(),
            number: Some(id.to_string()),
            found_by_lookup: true,
        }))
    }

    pub fn body(draft: &Draft, external_id: &str) -> Value {
        let mut t = Map::new();
        t.insert("subject".into(), json!(draft.subject));
        t.insert(
            "comment".into(),
            json!({"body": draft.description, "public": false}),
        );
        if let Some(p) = &draft.priority {
            t.insert("priority".into(), json!(p));
        }
        t.insert("external_id".into(), json!(external_id));
        let mut tags = vec!["qualtrics".to_string()];
        for (k, v) in &draft.extra {
            match k.as_str() {
                "tags" => tags.extend(
                    v.split([' ', ','])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                ),
                "group_id" | "assignee_id" => {
                    let n = v.trim().parse::<u64>().map(Value::from);
                    t.insert(k.clone(), n.unwrap_or_else(|_| json!(v)));
                }
                _ => {
                    t.insert(k.clone(), json!(v));
                }
            }
        }
        tags.dedup();
        t.insert("tags".into(), json!(tags));
        json!({ "ticket": t })
    }

    pub async fn create(
        &self,
        secrets: &SecretsProvider,
        draft: &Draft,
        external_id: &str,
        idempotency_key: &str,
        spent: &mut Duration,
    ) -> Result<TicketRef, CallError> {
        let auth = self.authorization(secrets).await?;
        let url = self.url("/api/v2/tickets.json");
        let body = serde_json::to_vec(&Self::body(draft, external_id)).unwrap_or_default();
        let r = self
            .http
            .send("create", spent, || {
                self.http
                    .client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("accept", "application/json")
                    .header("content-type", "application/json")
                    .header("idempotency-key", idempotency_key)
                    .body(body.clone())
            })
            .await?;
        if r.status == 400 && detail(&r).starts_with("IdempotentRequestError") {
            // The key was used with another body (the mapping or the response changed since
            // an earlier attempt created the ticket): find that ticket instead.
            return match self.find(secrets, external_id, spent).await? {
                Some(found) => Ok(found),
                None => Err(CallError::Transient(
                    "Zendesk create: idempotency key already used, ticket not found yet".into(),
                )),
            };
        }
        if r.status != 201 && r.status != 200 {
            return Err(classify("Zendesk", "create", &r, detail(&r)));
        }
        let v = r.json()?;
        let id = v["ticket"]["id"]
            .as_u64()
            .ok_or_else(|| CallError::Transient("Zendesk create: reply has no ticket.id".into()))?;
        Ok(TicketRef {
            system: "zendesk".into(),
            id: id.to_string(),
            number: Some(id.to_string()),
            found_by_lookup: false,
        })
    }

    /// The current state of up to [`SHOW_MANY_MAX`] tickets
    /// (`GET /api/v2/tickets/show_many.json?ids=…`); tickets Zendesk no longer has are absent
    /// from the reply.
    pub async fn show_many(
        &self,
        secrets: &SecretsProvider,
        ids: &[&str],
        spent: &mut Duration,
    ) -> Result<Vec<Observed>, CallError> {
        if ids.len() > SHOW_MANY_MAX {
            return Err(CallError::Permanent(format!(
                "Zendesk show_many takes at most {SHOW_MANY_MAX} ids, not {}",
                ids.len()
            )));
        }
        let auth = self.authorization(secrets).await?;
        let url = self.url("/api/v2/tickets/show_many.json");
        let joined = ids.join(",");
        let r = self
            .http
            .send("show_many", spent, || {
                self.http
                    .client
                    .get(&url)
                    .query(&[("ids", joined.as_str())])
                    .header("authorization", &auth)
                    .header("accept", "application/json")
            })
            .await?;
        if r.status != 200 {
            return Err(classify("Zendesk", "show_many", &r, detail(&r)));
        }
        let v = r.json()?;
        let Some(tickets) = v["tickets"].as_array() else {
            return Err(CallError::Transient(
                "Zendesk show_many: reply has no tickets array".into(),
            ));
        };
        Ok(tickets
            .iter()
            .filter_map(|t| {
                let id = t["id"].as_u64()?.to_string();
                let status = t["status"].as_str()?.to_ascii_lowercase();
                Some(Observed {
                    number: Some(id.clone()),
                    id,
                    state: Self::state_of(&status),
                    status,
                    close_code: None,
                    changed_at: t["updated_at"].as_str().unwrap_or_default().to_string(),
                    sequence: None,
                    correlation: t["external_id"].as_str().map(str::to_owned),
                })
            })
            .collect())
    }
}
