//! `GET /API/v3/survey-definitions/{surveyId}` (reference `analytics-layer.md` §3.2): the
//! survey's current definition, returned as raw JSON because its shapes are too irregular for
//! a strict type (the analytics layer reads it tolerantly).

use super::{CallBudget, QualtricsClient, QualtricsError};
use crate::secrets::SecretsProvider;
use serde_json::Value;

impl QualtricsClient {
    /// The definition's `result` object. The survey id goes into the path: only the
    /// characters survey ids are made of.
    pub async fn get_survey_definition(
        &self,
        secrets: &SecretsProvider,
        budget: &CallBudget,
        survey_id: &str,
    ) -> Result<Value, QualtricsError> {
        const OP: &str = "get survey definition";
        if survey_id.is_empty()
            || !survey_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(QualtricsError::Decode {
                op: OP,
                reason: "not a survey id".into(),
            });
        }
        let path = format!("survey-definitions/{survey_id}");
        let result = self
            .call_json(OP, secrets, budget, reqwest::Method::GET, &path, None)
            .await?;
        if !result.is_object() {
            return Err(QualtricsError::Decode {
                op: OP,
                reason: "result is not an object".into(),
            });
        }
        Ok(result)
    }
}
