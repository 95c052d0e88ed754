//! `TicketCreator`: turns a ticket request from the queue into exactly one ticket.
//!
//! Decoding and validation are here; a message that can never succeed goes to the
//! `deadletter` output at once with its original text. Ticket creation arrives with the
//! tickets issue: until then a valid request for a survey that raises tickets fails the
//! invocation, so the host retries it and finally parks it in the poison queue, where it can
//! be replayed — nothing is dropped.

use crate::host::{Envelope, Invocation, InvocationError, InvocationReply};
use crate::messages::TicketRequest;
use crate::startup::App;

pub const FUNCTION: &str = "TicketCreator";
const REQUEST: &str = "request";
const DEADLETTER: &str = "deadletter";

pub async fn invoke(
    app: &App,
    inv: &Invocation,
    envelope: Envelope,
) -> Result<InvocationReply, InvocationError> {
    let msg = envelope.queue(REQUEST)?;
    let request = match TicketRequest::parse(&msg.text) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(invocation_id = %inv.id, function = FUNCTION, dequeue_count = msg.dequeue_count, reason = %why, outcome = "deadlettered", "invalid ticket request");
            return Ok(InvocationReply::new()
                .queue(DEADLETTER, vec![msg.text])
                .log(format!("dead-lettered: {why}")));
        }
    };
    let route = app
        .bridge
        .survey(&request.survey_id)
        .and_then(|s| s.tickets.as_ref());
    match route {
        None => {
            tracing::info!(invocation_id = %inv.id, function = FUNCTION, survey_id = %request.survey_id, response_id = %request.response_id, outcome = "skipped", "survey raises no tickets");
            Ok(InvocationReply::new().log(format!(
                "{}/{}: survey raises no tickets; skipped",
                request.survey_id, request.response_id
            )))
        }
        Some(route) => Err(InvocationError::Retry(format!(
            "{}/{}: ticket creation in {:?} is not implemented yet (attempt {})",
            request.survey_id, request.response_id, route.system, msg.dequeue_count
        ))),
    }
}
