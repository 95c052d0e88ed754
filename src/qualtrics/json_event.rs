//! Firing a Qualtrics JSON Event (reference `close-the-loop.md` §2.1): a POST to the
//! workflow's inbound-event URL on the same datacenter, authenticated with the API token.

use super::{encode, CallBudget, Outgoing, QualtricsClient, QualtricsError, Resend};
use crate::secrets::SecretsProvider;
use serde_json::Value;

/// The documented path of JSON Event triggers.
pub const JSON_EVENT_PATH: &str = "/inbound-event/v1/event/JSON/triggers";

impl QualtricsClient {
    /// POSTs `event` to `target` (`/inbound-event/…?…`, or a full URL on the API's own origin:
    /// the token never leaves for another host). A 2xx (Qualtrics answers 202) only proves the
    /// token was accepted. Not resent after a lost answer (no de-duplication is documented).
    pub async fn fire_json_event(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        target: &str,
        event: &Value,
    ) -> Result<(), QualtricsError> {
        const OP: &str = "fire JSON event";
        let url = self.same_origin(OP, target)?;
        let body = encode(OP, event)?;
        let out = Outgoing {
            method: reqwest::Method::POST,
            path: &url,
            body: Some(body),
            resend: Resend::Never,
        };
        self.send(OP, secrets, budget, out).await.map(|_| ())
    }
}
