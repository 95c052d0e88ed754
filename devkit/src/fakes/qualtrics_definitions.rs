//! Fake `GET /API/v3/survey-definitions/{surveyId}` (reference `analytics-layer.md` §3.2) and
//! the sandbox dataset's seeding: the definition set with `set_definition` is returned in the
//! usual `{result, meta}` envelope; an unknown survey is a 404 envelope, as the real API
//! answers. Auth, recording and the injected faults are the other routes' (`gate`).

use super::{envelope_error, gate, ok, FakeQualtrics, Shared, Stored};
use crate::fakes::sandbox_data::SandboxDataset;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;

pub(super) async fn get_definition(
    State(inner): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut i = inner.lock().expect("fake lock");
    let path = format!("/API/v3/survey-definitions/{sid}");
    if let Some(r) = gate(&mut i, "GET", path, &headers, None) {
        return r;
    }
    match i.definitions.get(&sid).cloned() {
        Some(d) => ok(d),
        None => {
            super::set_last_status(&mut i, 404);
            envelope_error(StatusCode::NOT_FOUND, "Survey not found")
        }
    }
}

impl FakeQualtrics {
    /// What `GET /survey-definitions/{survey}` returns from now on (the API's `result`).
    pub fn set_definition(&self, survey: &str, definition: Value) {
        self.with(|i| {
            i.definitions.insert(survey.into(), definition);
        })
    }

    /// Serves `data`: its definition, and its responses appended to the survey's log (with
    /// their own `recordedDate`s) so exports and single-response reads return their rows.
    pub fn add_dataset(&self, data: &SandboxDataset) {
        self.set_definition(&data.survey_id, data.definition.clone());
        self.with(|i| {
            let s = i.surveys.entry(data.survey_id.clone()).or_default();
            for r in &data.responses {
                let seq = s.max_seq() + 1;
                s.log.push(Stored {
                    seq,
                    recorded_ms: r.recorded_ms,
                    id: r.id.clone(),
                    text: Some(Arc::from(r.text.as_str())),
                });
            }
        })
    }
}
