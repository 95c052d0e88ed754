//! The custom-handler protocol: what the Functions host sends (the JSON envelope) and what it
//! accepts back. Every surprising shape of `reference/functions-host-protocol.md` is decoded
//! here, once, so the functions see plain typed values.

mod reply;
mod request;

pub use reply::{error_body, HttpOutput, InvocationReply};
pub use request::{Envelope, EnvelopeError, HttpTrigger, QueueTrigger, ScheduleStatus, TimerInfo};

/// Header carrying the host's invocation id on every invocation request.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// What starts a function: the `in` binding of its `function.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `httpTrigger`
    Http,
    /// `timerTrigger`
    Timer,
    /// `queueTrigger`
    Queue,
}

impl Trigger {
    /// The binding `type` in `function.json`.
    pub fn binding_type(self) -> &'static str {
        match self {
            Self::Http => "httpTrigger",
            Self::Timer => "timerTrigger",
            Self::Queue => "queueTrigger",
        }
    }
}

/// A function as the host knows it: its folder name under `functions/` and its trigger
/// binding. Each capability declares one per function it serves, next to its code.
#[derive(Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    pub name: &'static str,
    pub trigger: Trigger,
    /// The trigger binding's name (the key of its entry in the envelope's `Data`).
    pub input: &'static str,
}

/// A boxed error, kept as the `source` of an [`InvocationError::Retry`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An invocation the handler could not complete. The host is told with a non-2xx reply, so a
/// queue message is retried (then poisoned) and an HTTP caller gets 500.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A transient condition: the host should run the invocation again later.
    #[error("{context}")]
    Retry {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl InvocationError {
    /// A transient condition described by `context` alone.
    pub fn retry(context: impl Into<String>) -> Self {
        Self::Retry {
            context: context.into(),
            source: None,
        }
    }

    /// A transient condition caused by `source`.
    pub fn retry_from(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Retry {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The message and its causes, `: `-separated (what the log and the host's reply carry).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// What every function receives besides its payload.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The host's invocation id (`X-Azure-Functions-InvocationId`).
    pub id: String,
    pub function: &'static FunctionSpec,
}
