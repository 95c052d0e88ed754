//! The one list of functions: each variant names a capability's [`FunctionSpec`], and the
//! exhaustive `match` in [`Functions::invoke`] (no `_` arm) is the only dispatch, used by
//! start-up's routing. Adding a function is a module with its `SPEC` and service, a variant
//! here, its arm in each `match`, and its `functions/{Name}/function.json`.

use crate::analytics::{self, AnalyticsService};
use crate::close_loop::{
    self, LoopBuildError, LoopService, TicketEventsService, TicketSyncService,
};
use crate::config::BridgeConfig;
use crate::deps::Deps;
use crate::env::SettingError;
use crate::export::{self, ExportService, Job, JobKind};
use crate::host::{Envelope, FunctionSpec, Invocation, InvocationError, InvocationReply};
use crate::pulse::sender::PulseSenderService;
use crate::pulse::{self, OpsEventsService};
use crate::tickets::{self, TicketBuildError, TicketService};
use crate::webhook::{self, WebhookService, WebhookSurvey};

/// A function the host may invoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    QualtricsWebhook,
    ExportPoller,
    TicketCreator,
    TicketEvents,
    LoopCloser,
    TicketSync,
    OpsEvents,
    AnalyticsBuilder,
    PulseSender,
}

impl Function {
    /// A slice, not an array: adding a function is one line here, not a length to bump too.
    pub const ALL: &'static [Function] = &[
        Function::QualtricsWebhook,
        Function::ExportPoller,
        Function::TicketCreator,
        Function::TicketEvents,
        Function::LoopCloser,
        Function::TicketSync,
        Function::OpsEvents,
        Function::AnalyticsBuilder,
        Function::PulseSender,
    ];

    pub fn spec(self) -> &'static FunctionSpec {
        match self {
            Function::QualtricsWebhook => &webhook::SPEC,
            Function::ExportPoller => &export::SPEC,
            Function::TicketCreator => &tickets::SPEC,
            Function::TicketEvents => &close_loop::intake::SPEC,
            Function::LoopCloser => &close_loop::closer::SPEC,
            Function::TicketSync => &close_loop::sync::SPEC,
            Function::OpsEvents => &pulse::SPEC,
            Function::AnalyticsBuilder => &analytics::SPEC,
            Function::PulseSender => &pulse::sender::SPEC,
        }
    }

    /// The function whose folder (and route) is `name`; `None` for any other name.
    pub fn named(name: &str) -> Option<Function> {
        Self::ALL.iter().copied().find(|f| f.spec().name == name)
    }
}

/// A capability could not be built from the configuration and settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tickets(#[from] TicketBuildError),
    #[error(transparent)]
    Export(#[from] SettingError),
    #[error(transparent)]
    Loop(#[from] LoopBuildError),
    #[error(transparent)]
    Sync(#[from] close_loop::sync::SyncBuildError),
}

/// Every capability's state, built once at start-up from its slice of `bridge.toml` and the
/// shared clients.
#[derive(Debug)]
pub struct Functions {
    webhook: WebhookService,
    export: ExportService,
    tickets: TicketService,
    ticket_events: TicketEventsService,
    loop_closer: LoopService,
    ticket_sync: TicketSyncService,
    ops_events: OpsEventsService,
    analytics: AnalyticsService,
    pulse_sender: PulseSenderService,
}

impl Functions {
    pub fn build(bridge: &BridgeConfig, deps: &Deps) -> Result<Self, BuildError> {
        let surveys = &bridge.surveys;
        let webhook = WebhookService::build(
            surveys
                .iter()
                .map(|s| WebhookSurvey {
                    id: s.id.clone(),
                    tickets: s.tickets.is_some(),
                    allow_unsigned: s.allow_unsigned,
                })
                .collect(),
            deps,
        );
        let jobs = surveys
            .iter()
            .filter(|s| s.export)
            .map(|s| Job {
                survey_id: s.id.clone(),
                tickets: s.tickets.is_some(),
                kind: JobKind::Incremental,
            })
            .collect();
        let export = ExportService::build(jobs, deps)?;
        let routes = surveys
            .iter()
            .filter_map(|s| Some((s.id.as_str(), s.tickets.as_ref()?)));
        let tickets = TicketService::build(routes, &bridge.ticketing, deps)?;
        let ticket_events = TicketEventsService::build(deps);
        let loops = surveys
            .iter()
            .filter_map(|s| Some((s.id.as_str(), s.close_loop.as_ref()?.get_ref())));
        let loop_closer = LoopService::build(loops, deps)?;
        let ticket_sync = TicketSyncService::build(&bridge.ticketing, deps)?;
        let ops_events = OpsEventsService::build(bridge.pulses.clone(), deps);
        let exported = surveys
            .iter()
            .filter(|s| s.export)
            .map(|s| (s.id.clone(), s.analytics.clone().unwrap_or_default()));
        let analytics = AnalyticsService::build(exported.collect(), deps)?;
        let pulse_sender = PulseSenderService::build(bridge.pulses.clone(), deps)?;
        Ok(Self {
            webhook,
            export,
            tickets,
            ticket_events,
            loop_closer,
            ticket_sync,
            ops_events,
            analytics,
            pulse_sender,
        })
    }

    pub async fn invoke(
        &self,
        function: Function,
        inv: &Invocation,
        envelope: Envelope<'_>,
    ) -> Result<InvocationReply, InvocationError> {
        match function {
            // The hot path, unboxed.
            Function::QualtricsWebhook => self.webhook.invoke(inv, envelope).await,
            // Boxed: their futures are large, and would make every webhook's future (moved
            // on each call) as large.
            Function::ExportPoller => Box::pin(self.export.invoke(inv, envelope)).await,
            Function::TicketCreator => Box::pin(self.tickets.invoke(inv, envelope)).await,
            Function::TicketEvents => Box::pin(self.ticket_events.invoke(inv, envelope)).await,
            Function::LoopCloser => Box::pin(self.loop_closer.invoke(inv, envelope)).await,
            Function::TicketSync => Box::pin(self.ticket_sync.invoke(inv, envelope)).await,
            Function::OpsEvents => Box::pin(self.ops_events.invoke(inv, envelope)).await,
            Function::AnalyticsBuilder => Box::pin(self.analytics.invoke(inv, envelope)).await,
            Function::PulseSender => Box::pin(self.pulse_sender.invoke(inv, envelope)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve_to_their_function() {
        for &f in Function::ALL {
            assert_eq!(Function::named(f.spec().name), Some(f));
        }
        assert_eq!(Function::named("NoSuchFunction"), None);
        assert_eq!(Function::named(""), None);
        assert_eq!(Function::named("qualtricswebhook"), None);
    }
}
