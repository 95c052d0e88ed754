//! `ExportPoller`: the timer-driven incremental export of Qualtrics responses into Blob Storage.
//!
//! The export run arrives with the export issue; for now the function records the tick.

use crate::host::{Envelope, Invocation, InvocationError, InvocationReply};
use crate::startup::App;

pub const FUNCTION: &str = "ExportPoller";
const TIMER: &str = "timer";

pub async fn invoke(
    app: &App,
    inv: &Invocation,
    envelope: Envelope,
) -> Result<InvocationReply, InvocationError> {
    let timer = envelope.timer(TIMER)?;
    let surveys = app.bridge.surveys.iter().filter(|s| s.export).count();
    let last = timer
        .schedule_status
        .as_ref()
        .and_then(|s| s.last.as_deref())
        .unwrap_or("never");
    tracing::info!(invocation_id = %inv.id, function = FUNCTION, past_due = timer.is_past_due, last, surveys, "timer fired");
    Ok(InvocationReply::new().log(format!(
        "timer fired (past due: {}, last: {last}); {surveys} survey(s) configured for export",
        timer.is_past_due
    )))
}
