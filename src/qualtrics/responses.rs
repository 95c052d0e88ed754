//! Writing embedded data back onto one response (reference `close-the-loop.md` §2.2.1).

use super::{encode, CallBudget, Outgoing, QualtricsClient, QualtricsError, Resend};
use crate::secrets::SecretsProvider;
use serde::Serialize;
use std::collections::BTreeMap;

/// The body of `PUT /responses/{responseId}`, in the documented key order.
#[derive(Serialize)]
struct UpdateResponse<'a> {
    #[serde(rename = "surveyId")]
    survey_id: &'a str,
    /// `false`: Qualtrics then moves `recordedDate` by 1 ms instead of to now.
    #[serde(rename = "resetRecordedDate")]
    reset_recorded_date: bool,
    #[serde(rename = "embeddedData")]
    embedded_data: &'a BTreeMap<String, String>,
}

impl<'a> UpdateResponse<'a> {
    fn new(survey_id: &'a str, embedded_data: &'a BTreeMap<String, String>) -> Self {
        Self {
            survey_id,
            reset_recorded_date: false,
            embedded_data,
        }
    }
}

impl QualtricsClient {
    /// `PUT /responses/{responseId}` with `embeddedData` (strings only). Setting the same
    /// values twice is harmless, so 5xx and transport errors are retried here.
    pub async fn update_response(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        survey_id: &str,
        response_id: &str,
        embedded_data: &BTreeMap<String, String>,
    ) -> Result<(), QualtricsError> {
        const OP: &str = "update response";
        // Keys in the documented order; embedded-data keys in byte order.
        let body = encode(OP, &UpdateResponse::new(survey_id, embedded_data))?;
        let path = format!("responses/{response_id}");
        let resp = self
            .send(
                OP,
                secrets,
                budget,
                Outgoing {
                    method: reqwest::Method::PUT,
                    path: &path,
                    body: Some(body),
                    resend: Resend::Safe,
                },
            )
            .await?;
        // The reply is `meta` only (its `result`, if any, is not used).
        self.read_envelope(OP, &path, resp).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_documented_shape_and_order() {
        let mut ed = BTreeMap::new();
        ed.insert("TicketState".to_string(), "resolved".to_string());
        ed.insert("BridgeWriteBack".to_string(), "1".to_string());
        let body = encode("t", &UpdateResponse::new("SV_1", &ed)).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"surveyId":"SV_1","resetRecordedDate":false,"embeddedData":{"BridgeWriteBack":"1","TicketState":"resolved"}}"#
        );
    }
}
