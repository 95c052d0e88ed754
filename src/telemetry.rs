//! Logging: one JSON object per line on stdout, which the host forwards to Application
//! Insights; each invocation's summary line also goes into the reply's `Logs[]`.
//!
//! The formatter is hand-written rather than `tracing-subscriber`'s JSON layer: every webhook
//! writes a line, and the generic formatter cost as much as verifying the HMAC. The shape is the
//! same flat object (`timestamp`, `level`, the event's fields, `message`).
//!
//! Lines are collected in memory and written in batches (see [`flush`]): one `write(2)` per
//! line, under the stdout lock, made the runtime's worker threads queue behind each other's
//! writes — at 40k deliveries/s every other request waited on a futex.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the JSON logger; `BRIDGE_LOG` (EnvFilter syntax) overrides the `info` default.
pub fn init() {
    let filter = EnvFilter::try_from_env("BRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::registry()
        .with(JsonLines::stdout().with_filter(filter))
        .try_init()
        .is_ok();
    if installed {
        // `panic = "abort"`: write what is waiting before the process goes.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            report(info);
        }));
    }
}

/// A batch is written once this many bytes wait…
const FLUSH_BYTES: usize = 16 * 1024;
/// …or once its oldest line is this old (when the next line is added).
const FLUSH_AGE: Duration = Duration::from_millis(50);

/// Lines not yet on stdout, in the order they were logged.
static PENDING: Mutex<Pending> = Mutex::new(Pending {
    bytes: Vec::new(),
    since: None,
});
/// Whether `PENDING` may hold anything: lets an idle worker's [`flush`] skip the lock.
static HAS_PENDING: AtomicBool = AtomicBool::new(false);

struct Pending {
    bytes: Vec<u8>,
    /// When the oldest waiting line was added.
    since: Option<Instant>,
}

/// Writes the waiting lines to stdout. The runtime calls it whenever a worker thread runs out
/// of work (`on_thread_park`), so a line reaches stdout as soon as the handler is idle, and
/// under load in batches of [`FLUSH_BYTES`] or after [`FLUSH_AGE`]. The handler calls it
/// again before it exits, and the panic hook does before an abort; only a SIGKILL can lose
/// the last lines (the host has each invocation's `Logs[]` in the reply regardless).
pub fn flush() {
    if !HAS_PENDING.load(Ordering::Acquire) {
        return;
    }
    // Stdout first, then the batch: two flushes write their batches in the order taken.
    let mut out = std::io::stdout().lock();
    let batch = {
        let Ok(mut pending) = PENDING.lock() else {
            return;
        };
        HAS_PENDING.store(false, Ordering::Release);
        pending.since = None;
        std::mem::take(&mut pending.bytes)
    };
    if !batch.is_empty() {
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

/// Adds one finished line to the batch; writes the batch if it is big or old enough.
fn append(line: &[u8]) {
    let due = {
        let Ok(mut pending) = PENDING.lock() else {
            // A poisoned lock (a panic mid-append): write directly rather than lose the line.
            let _ = std::io::stdout().lock().write_all(line);
            return;
        };
        let oldest = *pending.since.get_or_insert_with(Instant::now);
        pending.bytes.extend_from_slice(line);
        HAS_PENDING.store(true, Ordering::Release);
        pending.bytes.len() >= FLUSH_BYTES || oldest.elapsed() >= FLUSH_AGE
    };
    if due {
        flush();
    }
}

/// Runs `fut` as the invocation `invocation_id` of `function`: every line logged while it is
/// polled carries both. A thread-local swapped in and out around each poll rather than a
/// `tracing` span: a span cost a registry slot, two extensions and an enter/exit per poll on
/// every webhook. Tasks it spawns do not inherit it (as they did not inherit a span).
pub fn in_invocation<F: Future>(
    invocation_id: &str,
    function: &'static str,
    fut: F,
) -> InInvocation<F> {
    InInvocation {
        fields: Some(InvocationFields::new(invocation_id, function)),
        fut,
    }
}

pin_project_lite::pin_project! {
    /// The future [`in_invocation`] returns.
    pub struct InInvocation<F> {
        fields: Option<InvocationFields>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for InInvocation<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _in = Entered::new(this.fields);
        this.fut.poll(cx)
    }
}

/// The invocation being run on this thread, as its log fields.
struct InvocationFields {
    /// The id as a JSON string literal.
    id: String,
    function: &'static str,
}

impl InvocationFields {
    fn new(invocation_id: &str, function: &'static str) -> Self {
        let mut id = String::with_capacity(invocation_id.len() + 2);
        push_json_str(&mut id, invocation_id);
        Self { id, function }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<InvocationFields>> = const { RefCell::new(None) };
}

/// While alive, the thread's current invocation is the one from `slot` (and `slot` holds
/// what was current before); dropping it swaps them back.
struct Entered<'a> {
    slot: &'a mut Option<InvocationFields>,
    swapped: bool,
}

impl<'a> Entered<'a> {
    fn new(slot: &'a mut Option<InvocationFields>) -> Self {
        let swapped = swap_current(slot);
        Self { slot, swapped }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.swapped {
            swap_current(self.slot);
        }
    }
}

fn swap_current(slot: &mut Option<InvocationFields>) -> bool {
    CURRENT
        .try_with(|current| match current.try_borrow_mut() {
            Ok(mut current) => {
                std::mem::swap(&mut *current, slot);
                true
            }
            Err(_) => false,
        })
        .unwrap_or(false)
}

/// What an invocation did, gathered by the function and written by the dispatcher as the one
/// `invocation` line (with the invocation id, function and duration). Ids only: never a value
/// a respondent typed, an email address or a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationSummary {
    /// `succeeded` unless the function says more precisely (`queued`, `refused`, `created`…).
    pub outcome: Option<&'static str>,
    /// The HTTP status given to an HTTP caller.
    pub status: Option<u16>,
    pub survey_id: Option<String>,
    pub response_id: Option<String>,
    /// Qualtrics' `meta.requestId` of the last API call, for support cases.
    pub request_id: Option<String>,
    /// The ticket created or found (ServiceNow `sys_id`/number, Zendesk id).
    pub ticket_id: Option<String>,
    /// How a webhook delivery proved its origin.
    pub auth: Option<&'static str>,
    /// Why it was refused, ignored or failed (a fixed description, never input text).
    pub reason: Option<String>,
    /// The line's level; a failed invocation is always an error.
    pub severity: Severity,
}

/// How loudly an invocation's summary is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Severity {
    #[default]
    Info,
    /// Worth a look: a refusal, an unauthenticated delivery.
    Warn,
    /// Needs an operator: a dead-lettered request.
    Error,
}

/// Writes one invocation's summary line; call it inside [`in_invocation`].
pub fn log_invocation(duration_ms: u64, failed: bool, s: &InvocationSummary) {
    let outcome = s
        .outcome
        .unwrap_or(if failed { "failed" } else { "succeeded" });
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                duration_ms,
                outcome,
                status = s.status,
                survey_id = s.survey_id.as_deref(),
                response_id = s.response_id.as_deref(),
                request_id = s.request_id.as_deref(),
                ticket_id = s.ticket_id.as_deref(),
                auth = s.auth,
                reason = s.reason.as_deref(),
                "invocation"
            )
        };
    }
    match (failed, s.severity) {
        (true, _) | (false, Severity::Error) => line!(error),
        (false, Severity::Warn) => line!(warn),
        (false, Severity::Info) => line!(info),
    }
}

/// The layer that writes each event as one JSON line to stdout, with the fields of the spans
/// it happened in and the id and function of the invocation it belongs to ([`in_invocation`]).
struct JsonLines {
    sink: Sink,
}

/// Where finished lines go: stdout in the handler, a vector in tests.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

impl JsonLines {
    fn stdout() -> Self {
        Self {
            sink: Box::new(append),
        }
    }
}

/// A span's fields, rendered once when the span is created.
struct SpanJson {
    /// `,"name":value` fragments, back to back.
    text: String,
    /// Each field's name and where its fragment starts in `text`.
    fields: Vec<(&'static str, usize)>,
}

impl SpanJson {
    fn fragments(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let ends = self
            .fields
            .iter()
            .skip(1)
            .map(|(_, at)| *at)
            .chain(std::iter::once(self.text.len()));
        self.fields
            .iter()
            .zip(ends)
            .map(|((name, start), end)| (*name, self.text.get(*start..end).unwrap_or("")))
    }
}

/// Per-thread scratch space: a line costs no allocation once these have grown.
#[derive(Default)]
struct Scratch {
    line: String,
    names: Vec<(&'static str, usize)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// `YYYY-MM-DDTHH:MM:SS` of the last second formatted on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut text = String::new();
        let mut fields = Vec::new();
        attrs.record(&mut JsonFields {
            out: &mut text,
            names: &mut fields,
        });
        span.extensions_mut().insert(SpanJson { text, fields });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return; // an event logged while formatting one: drop it rather than panic
            };
            let Scratch { line, names } = &mut *scratch;
            line.clear();
            names.clear();
            format_event(line, names, event, SystemTime::now());
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    if let Some(json) = span.extensions().get::<SpanJson>() {
                        for (name, fragment) in json.fragments() {
                            // The event's own field wins over a span's of the same name.
                            if !names.iter().any(|(n, _)| *n == name) {
                                names.push((name, 0));
                                line.push_str(fragment);
                            }
                        }
                    }
                }
            }
            let _ = CURRENT.try_with(|current| {
                let Ok(current) = current.try_borrow() else {
                    return;
                };
                let Some(fields) = &*current else { return };
                if !names.iter().any(|(n, _)| *n == "invocation_id") {
                    line.push_str(",\"invocation_id\":");
                    line.push_str(&fields.id);
                }
                if !names.iter().any(|(n, _)| *n == "function") {
                    line.push_str(",\"function\":\"");
                    line.push_str(fields.function);
                    line.push('"');
                }
            });
            line.push_str("}\n");
            (self.sink)(line.as_bytes());
        });
    }
}

/// Writes `{"timestamp":…,"level":…` and the event's fields; the caller closes the object.
fn format_event(
    out: &mut String,
    names: &mut Vec<(&'static str, usize)>,
    event: &Event<'_>,
    now: SystemTime,
) {
    out.push_str("{\"timestamp\":\"");
    push_timestamp(out, now);
    out.push_str("\",\"level\":\"");
    out.push_str(level_name(*event.metadata().level()));
    out.push('"');
    event.record(&mut JsonFields { out, names });
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// RFC 3339 UTC with microseconds, as `tracing-subscriber` writes it.
fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            let t = i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            cell.1.clear();
            let _ = write!(
                cell.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            cell.0 = secs;
        }
        out.push_str(&cell.1);
    });
    // `.{:06}Z` without `fmt`: six digits, zero-padded.
    let micros = since.subsec_micros();
    out.push('.');
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(char::from(b'0' + ((micros / div) % 10) as u8));
    }
    out.push('Z');
}

/// Appends each field as `,"name":value` and notes where each one starts.
struct JsonFields<'a> {
    out: &'a mut String,
    names: &'a mut Vec<(&'static str, usize)>,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.names.push((field.name(), self.out.len()));
        self.out.push_str(",\"");
        self.out.push_str(field.name());
        self.out.push_str("\":");
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaper(self.out), "{value:?}");
        self.out.push('"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaper(self.out), "{value}");
        self.out.push('"');
    }
}

/// A JSON string literal of `s`.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let _ = Escaper(out).write_str(s);
    out.push('"');
}

/// Escapes what it is given as the inside of a JSON string literal.
struct Escaper<'a>(&'a mut String);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::json::escape(s, |piece| self.0.push_str(piece));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn in_invocation_sync<R>(id: &str, function: &'static str, f: impl FnOnce() -> R) -> R {
        let mut fields = Some(InvocationFields::new(id, function));
        let _in = Entered::new(&mut fields);
        f()
    }

    /// Runs `f` with a `JsonLines` layer that writes into a vector, and returns the lines.
    fn capture(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let layer = JsonLines {
            sink: Box::new(move |b| {
                if let Ok(mut l) = sink.lock() {
                    l.push(String::from_utf8_lossy(b).into_owned());
                }
            }),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        let lines = lines.lock().unwrap().clone();
        lines
            .iter()
            .map(|l| {
                assert!(l.ends_with("}\n") && l.matches('\n').count() == 1, "{l:?}");
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .collect()
    }

    #[test]
    fn every_kind_of_field_becomes_one_valid_json_line() {
        let lines = capture(|| {
            let err = std::io::Error::other("disk \"full\"");
            tracing::warn!(
                text = "tab\there \"quoted\" \\ ctl\u{1} é",
                display = %"x\ny",
                debug = ?vec![1, 2],
                n = 42u64,
                neg = -3i64,
                yes = true,
                ratio = 0.5f64,
                nan = f64::NAN,
                error = &err as &(dyn std::error::Error + 'static),
                missing = None::<&str>,
                "done {}", 7
            );
        });
        let v = &lines[0];
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "done 7");
        assert_eq!(v["text"], "tab\there \"quoted\" \\ ctl\u{1} é");
        assert_eq!(v["display"], "x\ny");
        assert_eq!(v["debug"], "[1, 2]");
        assert_eq!(v["n"], 42);
        assert_eq!(v["neg"], -3);
        assert_eq!(v["yes"], true);
        assert_eq!(v["ratio"], 0.5);
        assert!(v["nan"].is_null());
        assert_eq!(v["error"], "disk \"full\"");
        assert!(v.get("missing").is_none(), "None fields are left out");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok()
                && ts.len() == "2026-12-02T01:34:56.123456Z".len()
                && ts.ends_with('Z'),
            "{ts}"
        );
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let mut out = String::new();
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_764_639_296_000_042);
        push_timestamp(&mut out, t);
        assert_eq!(out, "2025-12-02T01:34:56.000042Z");
    }

    #[test]
    fn lines_inside_an_invocation_carry_its_id_and_the_event_field_wins() {
        let lines = capture(|| {
            in_invocation_sync("inv-7", "ExportResponses", || {
                tracing::info!(op = "get response", "qualtrics result");
                tracing::info!(function = "override", "explicit");
            })
        });
        assert_eq!(lines[0]["invocation_id"], "inv-7");
        assert_eq!(lines[0]["function"], "ExportResponses");
        assert_eq!(lines[0]["op"], "get response");
        assert_eq!(lines[1]["function"], "override");
        let raw = lines[1].to_string();
        assert_eq!(raw.matches("\"function\"").count(), 1, "{raw}");
    }

    #[test]
    fn invocation_summary_is_one_line_with_every_id() {
        let lines = capture(|| {
            in_invocation_sync("inv-1", "CreateTickets", || {
                log_invocation(
                    12,
                    false,
                    &InvocationSummary {
                        outcome: Some("created"),
                        survey_id: Some("SV_1".into()),
                        response_id: Some("R_1".into()),
                        request_id: Some("req-9".into()),
                        ticket_id: Some("INC0010001".into()),
                        ..Default::default()
                    },
                )
            })
        });
        assert_eq!(lines.len(), 1);
        let v = &lines[0];
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "invocation");
        for (k, want) in [
            ("invocation_id", "inv-1"),
            ("function", "CreateTickets"),
            ("outcome", "created"),
            ("survey_id", "SV_1"),
            ("response_id", "R_1"),
            ("request_id", "req-9"),
            ("ticket_id", "INC0010001"),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        assert_eq!(v["duration_ms"], 12);
        assert!(v.get("reason").is_none());
    }

    #[test]
    fn failed_and_warning_summaries_take_their_level() {
        let lines = capture(|| {
            log_invocation(1, true, &InvocationSummary::default());
            let warn = InvocationSummary {
                outcome: Some("refused"),
                severity: Severity::Warn,
                ..Default::default()
            };
            log_invocation(1, false, &warn);
        });
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["outcome"], "failed");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["outcome"], "refused");
    }
}
