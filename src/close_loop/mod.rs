//! Closing the loop (issue 17): a ticket the bridge raised changes state in its ticket system,
//! and the change goes back to Qualtrics.
//!
//! * `intake` — `TicketEvents`: verified ticket events (`verify`, `events`) matched to their
//!   response through the ticket ledger, queued on `loop-requests`.
//!
//! Reaches `tickets` (the one cross-capability edge, tests/layering.rs) only to read the
//! ticket ledger, the open-ticket index and the ticket systems' state.

pub mod events;
pub mod intake;
pub mod verify;

pub use intake::TicketEventsService;
