//! Closing the loop (issue 17): a ticket the bridge raised changes state in its ticket system,
//! and the change goes back to Qualtrics.
//!
//! * `intake` — `TicketEvents`: verified ticket events (`verify`, `events`) matched to their
//!   response through the ticket ledger, queued on `loop-requests`.
//! * `sync` — `TicketSync`: the timer that finds the transitions whose event never arrived
//!   (the open-ticket index, read in batches from each ticket system), queued the same way.
//! * `closer` — `LoopCloser`: applies each queued state to Qualtrics per `[surveys.loop]`
//!   (`config`), from its own loop ledger (`ledger`).
//! * `status` — one ticket's loop read back for operators (`qualtrics-bridge loop status`).
//!
//! Reaches `tickets` (the one cross-capability edge, tests/layering.rs) only to read the
//! ticket ledger, the open-ticket index and the ticket systems' state.

pub mod closer;
pub mod config;
pub mod events;
pub mod intake;
pub mod ledger;
pub mod status;
pub mod sync;
pub mod verify;

pub use closer::{LoopBuildError, LoopService, POISON_QUEUE, TRIGGER_QUEUE};
pub use config::LoopConfig;
pub use intake::TicketEventsService;
pub use sync::TicketSyncService;
