//! Timer triggers: fire on the function's NCRONTAB, or on demand. A failure is logged and
//! not retried; the next occurrence fires as usual.

use super::envelope::{timer_envelope, TimerStatus};
use super::ncrontab::Schedule;
use super::{utc_now, FunctionSpec, HostError, InvocationRecord, Shared, TimerMode};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn iso(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The function's NCRONTAB (after `%SETTING%` resolution); an invalid one names the function.
fn parse_schedule(f: &FunctionSpec) -> Result<Schedule, HostError> {
    let expr = f
        .trigger()
        .and_then(|t| t.str("schedule"))
        .unwrap_or_default();
    Schedule::parse(expr).map_err(|e| HostError::Function {
        function: f.name.clone(),
        reason: e.to_string(),
    })
}

/// Starts the schedule loop of a timer function (none in manual mode).
pub(super) fn schedule(
    shared: Arc<Shared>,
    f: FunctionSpec,
) -> Result<Option<tokio::task::JoinHandle<()>>, HostError> {
    let schedule = parse_schedule(&f)?;
    if shared.opts.timers == TimerMode::Manual {
        return Ok(None);
    }
    let run_on_startup = f
        .trigger()
        .and_then(|t| t.raw.get("runOnStartup"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Ok(Some(tokio::spawn(async move {
        let mut last: Option<OffsetDateTime> = None;
        if run_on_startup {
            let _ = invoke(&shared, &f, &schedule, &mut last).await;
        }
        loop {
            let now = OffsetDateTime::now_utc();
            let Some(next) = schedule.next_after(now) else {
                tracing::error!(function = %f.name, "schedule has no next occurrence");
                return;
            };
            let wait = (next - now).try_into().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let _ = invoke(&shared, &f, &schedule, &mut last).await;
        }
    })))
}

async fn invoke(
    shared: &Shared,
    f: &FunctionSpec,
    schedule: &Schedule,
    last: &mut Option<OffsetDateTime>,
) -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    let use_monitor = f
        .trigger()
        .and_then(|t| t.raw.get("useMonitor"))
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let status = match (use_monitor, *last) {
        (true, Some(l)) => Some(TimerStatus {
            last: iso(l),
            next: schedule.next_after(now).map(iso).unwrap_or_default(),
            last_updated: iso(l),
        }),
        _ => None,
    };
    let binding = f.trigger().map(|t| t.name.clone()).unwrap_or_default();
    let envelope = timer_envelope(&f.name, &binding, status.as_ref(), false, &utc_now());
    *last = Some(now);
    shared
        .invoke(f, envelope, None)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs a timer function now and returns its record.
pub(super) async fn fire_now(shared: &Shared, name: &str) -> Result<InvocationRecord, HostError> {
    let f = shared
        .app
        .function(name)
        .filter(|f| f.trigger().is_some_and(|t| t.kind == "timerTrigger"))
        .cloned()
        .ok_or_else(|| HostError::Function {
            function: name.to_string(),
            reason: "no timer function by that name".into(),
        })?;
    let schedule = parse_schedule(&f)?;
    let mut last = None;
    let _ = invoke(shared, &f, &schedule, &mut last).await;
    shared
        .records
        .lock()
        .ok()
        .and_then(|r| r.iter().rev().find(|r| r.function == f.name).cloned())
        .ok_or_else(|| HostError::Function {
            function: f.name.clone(),
            reason: "invocation was not recorded".into(),
        })
}
