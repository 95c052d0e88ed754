//! Closing the loop (issue 17): a ticket the bridge raised changes state in its system, and the
//! change goes back to Qualtrics. This module owns `TicketSync` (`sync.rs`), the timer that
//! finds the transitions whose webhook event never arrived; it reads the open-ticket index and
//! the ticket systems through `tickets` (the one cross-capability edge allowed) and queues
//! `messages::LoopRequest`s on `loop-requests`.

pub mod sync;

pub use sync::{TicketSyncService, SPEC as SYNC_SPEC};
