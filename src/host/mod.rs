//! The custom-handler protocol: what the Functions host sends (the JSON envelope) and what it
//! accepts back. Every surprising shape of `reference/functions-host-protocol.md` is decoded
//! here, once, so the functions see plain typed values.

mod reply;
mod request;

pub use reply::{error_body, HttpOutput, InvocationReply};
pub use request::{Envelope, EnvelopeError, HttpTrigger, QueueTrigger, ScheduleStatus, TimerInfo};

/// Header carrying the host's invocation id on every invocation request.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// An invocation the handler could not complete. The host is told with a non-2xx reply, so a
/// queue message is retried (then poisoned) and an HTTP caller gets 500.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A transient condition: the host should run the invocation again later.
    #[error("{0}")]
    Retry(String),
}

/// What every function receives besides its payload.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The host's invocation id (`X-Azure-Functions-InvocationId`).
    pub id: String,
    pub function: &'static str,
}
