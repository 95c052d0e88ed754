//! XM Directory contacts, transactions and email distributions (reference
//! `close-the-loop.md` §2.3.2–§2.3.4): upsert a person into a mailing list, then either send one
//! survey to that membership, or attach a transaction (`CTR_…`) per person, gather them in one
//! transaction batch and send one distribution to the batch.

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

/// The invitation half of a distribution: message, header, survey link, send date.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub library_id: String,
    pub message_id: String,
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

/// One email distribution to everyone in a transaction batch (§2.3.3 "Transaction batch").
#[derive(Debug, Clone)]
pub struct BatchDistribution {
    pub transaction_batch_id: String,
    pub invitation: Invitation,
}

impl BatchDistribution {
    fn body(&self) -> Value {
        let i = &self.invitation;
        serde_json::json!({
            "message": {"libraryId": i.library_id, "messageId": i.message_id},
            "recipients": {"transactionBatchId": self.transaction_batch_id},
            "header": {
                "fromEmail": i.from_email,
                "fromName": i.from_name,
                "replyToEmail": i.reply_to_email,
                "subject": i.subject,
            },
            "surveyLink": {
                "surveyId": i.survey_id,
                "expirationDate": i.expiration_date,
                "type": "Individual",
            },
            "sendDate": i.send_date,
        })
    }
}

/// One transaction (§2.3.4): this event, on this contact, in this list. `data` can be piped
/// into the survey.
#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    /// `CID_…`.
    #[serde(rename = "contactId")]
    pub contact_id: String,
    #[serde(rename = "mailingListId")]
    pub mailing_list_id: String,
    /// `yyyy-mm-dd hh:mm:ss`, UTC, as Qualtrics' own example.
    #[serde(rename = "transactionDate")]
    pub transaction_date: String,
    pub data: BTreeMap<String, String>,
}

/// A transaction batch id goes into a path: only the characters Qualtrics ids are made of.
fn batch_path(
    op: &'static str,
    directory: &str,
    batch: Option<&str>,
) -> Result<String, QualtricsError> {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match batch {
        None => Ok(format!("directories/{directory}/transactionbatches")),
        Some(b) if ok(b) => Ok(format!(
            "directories/{directory}/transactionbatches/{b}/transactions"
        )),
        Some(_) => Err(QualtricsError::Decode {
            op,
            reason: "not a transaction batch id".into(),
        }),
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
        self.post_distribution(secrets, budget, &distribution.body())
            .await
    }

    /// `POST /distributions` to a transaction batch; returns `EMD_…`. Never resent, like
    /// [`Self::create_distribution`].
    pub async fn create_batch_distribution(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        distribution: &BatchDistribution,
    ) -> Result<String, QualtricsError> {
        self.post_distribution(secrets, budget, &distribution.body())
            .await
    }

    /// The one `POST /distributions` both kinds make, sent once.
    async fn post_distribution(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        body: &Value,
    ) -> Result<String, QualtricsError> {
        const OP: &str = "create distribution";
        let body = encode(OP, body)?;
        let result = self
            .post_once(OP, secrets, budget, "distributions", body)
            .await?;
        id_of(OP, &result.unwrap_or_default(), "id", "EMD_")
    }

    /// `POST /directories/{directory}/transactions`, several transactions in one call (the
    /// body's keys are labels of our choosing, echoed under `createdTransactions`); returns
    /// the `CTR_…` ids in the order given. Retried like a read: a repeat only leaves an extra
    /// transaction that no batch holds, which surveys nobody.
    pub async fn create_transactions(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        directory: &str,
        transactions: &[Transaction],
    ) -> Result<Vec<String>, QualtricsError> {
        const OP: &str = "create transactions";
        let label = |k: usize| format!("tx{k}");
        let body: serde_json::Map<String, Value> = transactions
            .iter()
            .enumerate()
            .map(|(k, t)| serde_json::to_value(t).map(|v| (label(k), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| QualtricsError::Decode {
                op: OP,
                reason: e.to_string(),
            })?;
        let path = format!("directories/{directory}/transactions");
        let r = self
            .call_json(
                OP,
                secrets,
                budget,
                reqwest::Method::POST,
                &path,
                Some(&Value::Object(body)),
            )
            .await?;
        let created = r.get("createdTransactions").unwrap_or(&Value::Null);
        (0..transactions.len())
            .map(|k| {
                created.get(label(k)).map_or(
                    Err(QualtricsError::Decode {
                        op: OP,
                        reason: format!("no createdTransactions.{}", label(k)),
                    }),
                    |t| id_of(OP, t, "id", "CTR_"),
                )
            })
            .collect()
    }

    /// `POST /directories/{directory}/transactionbatches` holding `transaction_ids`; returns
    /// the batch id. Never resent: a lost answer is [`QualtricsError::Unconfirmed`].
    pub async fn create_transaction_batch(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        directory: &str,
        transaction_ids: &[String],
        creation_date: &str,
    ) -> Result<String, QualtricsError> {
        const OP: &str = "create transaction batch";
        let path = batch_path(OP, directory, None)?;
        let body = encode(
            OP,
            &serde_json::json!({"transactionIds": transaction_ids, "creationDate": creation_date}),
        )?;
        let result = self.post_once(OP, secrets, budget, &path, body).await?;
        let id = result
            .as_ref()
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str)
            .filter(|id| batch_path(OP, directory, Some(id)).is_ok());
        id.map(str::to_owned).ok_or_else(|| QualtricsError::Decode {
            op: OP,
            reason: "no batch id in the result".into(),
        })
    }

    /// `POST /directories/{directory}/transactionbatches/{batch}/transactions`: adds
    /// transactions to a batch. Never resent: a repeat could put a person in twice.
    pub async fn add_to_transaction_batch(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        directory: &str,
        batch: &str,
        transaction_ids: &[String],
    ) -> Result<(), QualtricsError> {
        const OP: &str = "add to transaction batch";
        let path = batch_path(OP, directory, Some(batch))?;
        let body = encode(OP, &serde_json::json!({"transactionIds": transaction_ids}))?;
        self.post_once(OP, secrets, budget, &path, body)
            .await
            .map(|_| ())
    }

    /// A POST that must not be repeated ([`Resend::Never`]); a 2xx whose body is lost is
    /// [`QualtricsError::Unconfirmed`]: it took effect.
    async fn post_once(
        &self,
        op: &'static str,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Option<Value>, QualtricsError> {
        let resp = self
            .send(
                op,
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
        match self.read_envelope(op, path, resp).await {
            Err(QualtricsError::Transport { op, reason }) => {
                Err(QualtricsError::Unconfirmed { op, reason })
            }
            other => other,
        }
    }
}
