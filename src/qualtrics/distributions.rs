//! XM Directory contacts and email distributions (reference `close-the-loop.md` §2.3.2,
//! §2.3.3): upsert one person into a mailing list, then send one survey to that membership.

use super::{encode, CallBudget, Outgoing, QualtricsClient, QualtricsError, Resend};
use crate::secrets::SecretsProvider;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A contact to create in a mailing list (with directory de-duplication on, an upsert).
/// Holds personal data: never log it.
#[derive(Serialize)]
pub struct Contact {
    #[serde(rename = "firstName", skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(rename = "lastName", skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    pub email: String,
    #[serde(rename = "extRef", skip_serializing_if = "Option::is_none")]
    pub ext_ref: Option<String>,
    #[serde(rename = "embeddedData")]
    pub embedded_data: BTreeMap<String, String>,
    pub unsubscribed: bool,
}

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Contact(<redacted>)")
    }
}

/// The created (or updated) contact: `CID_…` and its list membership `CGC_…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    pub id: String,
    pub lookup_id: String,
}

/// One email distribution to one list membership.
#[derive(Debug, Clone)]
pub struct EmailDistribution {
    pub library_id: String,
    pub message_id: String,
    pub mailing_list_id: String,
    /// The membership (`CGC_…`) the survey goes to.
    pub contact_lookup_id: String,
    pub from_email: String,
    pub from_name: String,
    pub reply_to_email: String,
    pub subject: String,
    pub survey_id: String,
    /// RFC 3339 UTC.
    pub expiration_date: String,
    /// RFC 3339 UTC.
    pub send_date: String,
}

impl EmailDistribution {
    fn body(&self) -> Value {
        serde_json::json!({
            "message": {"libraryId": self.library_id, "messageId": self.message_id},
            "recipients": {"mailingListId": self.mailing_list_id, "contactId": self.contact_lookup_id},
            "header": {
                "fromEmail": self.from_email,
                "fromName": self.from_name,
                "replyToEmail": self.reply_to_email,
                "subject": self.subject,
            },
            "surveyLink": {
                "surveyId": self.survey_id,
                "expirationDate": self.expiration_date,
                "type": "Individual",
            },
            "sendDate": self.send_date,
        })
    }
}

fn id_of(
    op: &'static str,
    result: &Value,
    key: &str,
    prefix: &str,
) -> Result<String, QualtricsError> {
    result
        .get(key)
        .and_then(Value::as_str)
        .filter(|id| crate::messages::is_qualtrics_id(id, prefix))
        .map(str::to_owned)
        .ok_or_else(|| QualtricsError::Decode {
            op,
            reason: format!("no {prefix}… {key} in the result"),
        })
}

impl QualtricsClient {
    /// `POST /directories/{directory}/mailinglists/{list}/contacts`: with directory
    /// de-duplication on, repeating it updates the same contact, so it is retried like a read.
    pub async fn upsert_list_contact(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        directory: &str,
        mailing_list: &str,
        contact: &Contact,
    ) -> Result<ContactRef, QualtricsError> {
        const OP: &str = "create mailing-list contact";
        let body = serde_json::to_value(contact).map_err(|e| QualtricsError::Decode {
            op: OP,
            reason: e.to_string(),
        })?;
        let path = format!("directories/{directory}/mailinglists/{mailing_list}/contacts");
        let r = self
            .call_json(
                OP,
                secrets,
                budget,
                reqwest::Method::POST,
                &path,
                Some(&body),
            )
            .await?;
        Ok(ContactRef {
            id: id_of(OP, &r, "id", "CID_")?,
            lookup_id: id_of(OP, &r, "contactLookupId", "CGC_")?,
        })
    }

    /// `POST /distributions`; returns the distribution id (`EMD_…`). Never resent: Qualtrics
    /// documents no idempotency key, so a lost answer is [`QualtricsError::Unconfirmed`] and a
    /// 5xx is returned as is (the caller decides; neither proves that nothing was sent).
    pub async fn create_distribution(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        distribution: &EmailDistribution,
    ) -> Result<String, QualtricsError> {
        const OP: &str = "create distribution";
        let body = encode(OP, &distribution.body())?;
        let path = "distributions";
        let resp = self
            .send(
                OP,
                secrets,
                budget,
                Outgoing {
                    method: reqwest::Method::POST,
                    path,
                    body: Some(body),
                    resend: Resend::Never,
                },
            )
            .await?;
        let result = match self.read_envelope(OP, path, resp).await {
            Ok(r) => r,
            // The 2xx came but its body did not: the distribution exists.
            Err(QualtricsError::Transport { op, reason }) => {
                return Err(QualtricsError::Unconfirmed { op, reason })
            }
            Err(e) => return Err(e),
        };
        id_of(OP, &result.unwrap_or_default(), "id", "EMD_")
    }
}
