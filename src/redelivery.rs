//! Redelivery of the queue requests that carry their own retry bookkeeping ([`Retry`]):
//! `TicketCreator`, `LoopCloser` and `PulseSender` put a transiently failing request back on
//! their trigger queue themselves, invisible for a backoff (never shorter than the target's
//! `Retry-After`), and dead-letter it as it first came once its retry window has passed.
//!
//! Why not the host's own retry: the host re-delivers at once (`visibilityTimeout` 0) and
//! counts attempts per message, not per request, so a 429 would be retried into the limit and a
//! storage outage would burn the five attempts in seconds (docs/tickets.md).

use crate::env::{Lookup, SettingError};
use crate::host::{InvocationError, InvocationReply};
use crate::messages::{LoopRequest, PulseRequest, Retry, TicketRequest};
use crate::storage::Storage;
use crate::telemetry::{InvocationSummary, Severity};
use std::time::Duration;

/// The reply's output binding for the poison queue (each function's `deadletter` output).
const DEADLETTER: &str = "deadletter";

/// A queue request that records how often it came back.
pub trait Redeliverable: Clone {
    fn retry(&self) -> Option<&Retry>;
    fn with_retry(self, retry: Option<Retry>) -> Self;
    /// The exact message text put on the queue.
    fn to_text(&self) -> String;
}

macro_rules! redeliverable {
    ($($t:ty),*) => {$(
        impl Redeliverable for $t {
            fn retry(&self) -> Option<&Retry> {
                self.retry.as_ref()
            }
            fn with_retry(self, retry: Option<Retry>) -> Self {
                Self { retry, ..self }
            }
            fn to_text(&self) -> String {
                <$t>::to_text(self)
            }
        }
    )*};
}
redeliverable!(TicketRequest, LoopRequest, PulseRequest);

/// The settings of one function's retries: names and bounds differ per function.
pub struct RetrySettings {
    /// The trigger queue the request goes back to.
    pub queue: &'static str,
    /// `…_RETRY_MAX_DELAY_SECONDS`: the backoff's ceiling (a longer `Retry-After` is followed).
    pub max_delay: &'static str,
    /// `…_RETRY_WINDOW_SECONDS`: a request failing for longer is dead-lettered.
    pub window: &'static str,
    pub window_default: Duration,
    pub window_max: Duration,
}

/// Where and how a function's failing requests come back.
pub struct Redelivery {
    /// The trigger queue through the handler's own storage client (`None`: no queue endpoint,
    /// so the invocation fails and the host retries instead).
    queue: Option<azure_storage_queue::QueueClient>,
    max_delay: Duration,
    window: Duration,
    /// The window's setting, named in the reason of a request given up on.
    window_setting: &'static str,
}

impl std::fmt::Debug for Redelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redelivery")
            .field("queue", &self.queue.as_ref().map(|q| q.url().as_str()))
            .field("max_delay", &self.max_delay)
            .field("window", &self.window)
            .finish()
    }
}

/// A request's next attempt: its bookkeeping and how long it stays invisible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextTry {
    pub retry: Retry,
    pub delay: Duration,
}

impl Redelivery {
    /// `storage`: the handler's storage connection (`None`: the host retries instead).
    pub fn build(
        storage: Option<&Storage>,
        lookup: Lookup<'_>,
        s: &RetrySettings,
    ) -> Result<Self, SettingError> {
        let queue = crate::storage::optional_client(
            storage,
            |st| st.queue(s.queue),
            &format!(
                "no queue endpoint: failed {} messages cannot be re-enqueued, the host retries them",
                s.queue
            ),
        );
        let secs = |name, default: Duration, max: Duration| {
            crate::env::number_in(lookup, name, default.as_secs(), 1..=max.as_secs())
                .map(Duration::from_secs)
        };
        Ok(Self {
            queue,
            max_delay: secs(
                s.max_delay,
                Duration::from_secs(300),
                crate::storage::MAX_QUEUE_DELAY,
            )?,
            window: secs(s.window, s.window_default, s.window_max)?,
            window_setting: s.window,
        })
    }

    /// The poison reason when `request`, failing again for `why`, has been failing for longer
    /// than the retry window; `None` while it may still come back.
    pub fn gave_up(&self, request: &impl Redeliverable, why: &str) -> Option<String> {
        self.past_window(request).then(|| {
            format!(
                "gave up: still failing after {} attempts over more than {}s ({}): {why}",
                request.retry().map_or(0, |r| r.attempt) + 1,
                self.window.as_secs(),
                self.window_setting
            )
        })
    }

    /// Whether `request` has been failing for longer than the retry window. Only this handler
    /// writes `since`; an unreadable one cannot be judged, so it ends the retries.
    fn past_window(&self, request: &impl Redeliverable) -> bool {
        let Some(retry) = request.retry() else {
            return false;
        };
        crate::clock::age_secs(&retry.since) > self.window.as_secs() as i64
    }

    /// Sends `text` to the trigger queue, invisible for `delay`.
    pub async fn send(&self, text: &str, delay: Duration) -> Result<(), String> {
        match &self.queue {
            Some(q) => crate::storage::send_later(q, text, delay)
                .await
                .map_err(|e| e.to_string()),
            None => Err("the storage connection has no queue endpoint".into()),
        }
    }

    /// The next attempt of `request`: a jittered backoff, never shorter than `throttled` (the
    /// target's `Retry-After`), at most the configured ceiling otherwise.
    pub fn next_try(&self, request: &impl Redeliverable, throttled: Duration) -> NextTry {
        let (retry, delay) = Retry::next(
            request.retry(),
            crate::clock::now_rfc3339,
            self.max_delay,
            throttled,
        );
        NextTry { retry, delay }
    }

    /// Puts `request` back on the trigger queue as `next` says and completes the invocation with
    /// a warning (`summary` says `retrying`); when it cannot be put back the invocation fails and
    /// the host retries the message. `ids` names the request in the log line.
    pub async fn later<R: Redeliverable>(
        &self,
        request: &R,
        next: NextTry,
        ids: &str,
        why: &str,
        mut summary: InvocationSummary,
    ) -> Result<InvocationReply, InvocationError> {
        let NextTry { retry, delay } = next;
        let attempt = retry.attempt;
        let text = request.clone().with_retry(Some(retry)).to_text();
        match self.send(&text, delay).await {
            Ok(()) => {
                tracing::warn!(
                    attempt,
                    delay_secs = delay.as_secs(),
                    reason = %why,
                    "transient failure: re-enqueueing"
                );
                summary.severity = Severity::Warn;
                Ok(InvocationReply::new()
                    .log(format!(
                        "{ids}: {why}; re-enqueued, back in {}s (attempt {})",
                        delay.as_secs(),
                        attempt + 1
                    ))
                    .summary(summary))
            }
            Err(e) => Err(InvocationError::retry_from(
                format!("{ids}: {why}; cannot re-enqueue: the host retries the message"),
                e,
            )),
        }
    }
}

/// The text to dead-letter: the message as it first came, without the retry bookkeeping, so a
/// poison replay starts a fresh window. `trigger_text` is the text this delivery carried.
pub fn as_first_came<R: Redeliverable>(trigger_text: &str, request: &R) -> String {
    match request.retry() {
        None => trigger_text.to_owned(),
        Some(_) => request.clone().with_retry(None).to_text(),
    }
}

/// The reply that moves `text` to the function's poison queue, the reason in the log
/// (`ids`: who it was about, or empty) and in `summary`, whose outcome says `deadlettered`.
pub fn dead_letter(
    text: String,
    ids: &str,
    why: &str,
    mut summary: InvocationSummary,
) -> InvocationReply {
    summary.severity = Severity::Error;
    let ids = if ids.is_empty() {
        String::new()
    } else {
        format!("{ids}: ")
    };
    InvocationReply::new()
        .queue(DEADLETTER, vec![text])
        .log(format!("dead-lettered: {ids}{why}"))
        .summary(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Retry;

    fn redelivery(window: u64) -> Redelivery {
        Redelivery {
            queue: None,
            max_delay: Duration::from_secs(300),
            window: Duration::from_secs(window),
            window_setting: "TEST_RETRY_WINDOW_SECONDS",
        }
    }

    fn request(retry: Option<Retry>) -> LoopRequest {
        let text = r#"{"v":1,"system":"servicenow","ticketId":"c537bae64f411200adf9f8e18110c76e","ticketNumber":"INC0010002","surveyId":"SV_22VlHYNeldrrrkp","responseId":"R_1l9mcVuXubb4aGm","status":"6","state":"resolved","changedAt":"2026-01-05T10:38:50Z","source":"event","receivedAt":"2026-01-05T10:38:52Z"}"#;
        match LoopRequest::parse(text) {
            Ok(r) => r.with_retry(retry),
            Err(e) => panic!("fixture does not parse: {e}"),
        }
    }

    fn retry_since(since: &str) -> Option<Retry> {
        Some(Retry {
            attempt: 3,
            since: since.into(),
        })
    }

    #[test]
    fn a_first_delivery_is_never_past_its_window() {
        assert!(!redelivery(1).past_window(&request(None)));
    }

    #[test]
    fn the_window_counts_from_the_first_failure() {
        let r = redelivery(3600);
        assert!(!r.past_window(&request(retry_since(&crate::clock::now_rfc3339()))));
        assert!(r.past_window(&request(retry_since("2020-01-01T00:00:00Z"))));
    }

    #[test]
    fn the_reason_for_giving_up_names_the_attempts_and_the_setting() {
        let r = redelivery(3600);
        assert_eq!(
            r.gave_up(&request(retry_since(&crate::clock::now_rfc3339())), "503"),
            None
        );
        assert_eq!(
            r.gave_up(&request(retry_since("2020-01-01T00:00:00Z")), "HTTP 503").as_deref(),
            Some("gave up: still failing after 4 attempts over more than 3600s (TEST_RETRY_WINDOW_SECONDS): HTTP 503")
        );
    }

    #[test]
    fn an_unreadable_since_ends_the_retries() {
        assert!(redelivery(3600).past_window(&request(retry_since("yesterday"))));
    }

    #[test]
    fn dead_letters_carry_the_message_as_it_first_came() {
        let first = request(None);
        let text = first.to_text();
        assert_eq!(as_first_came(&text, &first), text);
        let retried = request(retry_since(&crate::clock::now_rfc3339()));
        let back = as_first_came(&retried.to_text(), &retried);
        assert_eq!(back, text);
        assert!(!back.contains("retry"));
    }

    #[test]
    fn each_retry_counts_from_the_first_failure_and_waits_out_retry_after() {
        let r = redelivery(3600);
        let first = r.next_try(&request(None), Duration::from_secs(400));
        assert_eq!(first.retry.attempt, 1);
        // `Retry-After` wins over the ceiling (300 s here).
        assert!(first.delay >= Duration::from_secs(400), "{first:?}");
        let again = r.next_try(&request(Some(first.retry.clone())), Duration::ZERO);
        assert_eq!(again.retry.attempt, 2);
        assert_eq!(again.retry.since, first.retry.since);
        assert!(again.delay <= Duration::from_secs(300), "{again:?}");
    }

    #[tokio::test]
    async fn without_a_queue_the_request_cannot_be_sent_back() {
        let r = redelivery(3600).send("{}", Duration::ZERO).await;
        assert_eq!(
            r,
            Err("the storage connection has no queue endpoint".to_string())
        );
    }
}
