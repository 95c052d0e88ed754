//! qualtrics-bridge: an Azure Functions custom handler that turns Qualtrics feedback into
//! exports in Blob Storage and tickets in ServiceNow or Zendesk.
//!
//! `startup` builds the app from typed configuration; `host` owns the custom-handler wire
//! protocol; `functions` is the one registry of functions; each capability lives in its own
//! module and owns its state (`XService::build` from its config slice and `deps::Deps`).

pub mod analytics;
pub mod cli;
pub mod clock;
pub mod close_loop;
pub mod config;
pub mod deps;
pub mod env;
pub mod export;
pub mod fault;
pub mod functions;
pub mod host;
pub mod identity;
pub mod json;
pub mod loop_setup;
pub mod messages;
pub mod poison;
pub mod progress;
pub mod pulse;
pub mod qualtrics;
pub mod redelivery;
pub mod retry_after;
pub mod secrets;
pub mod startup;
pub mod storage;
pub mod subscriptions;
pub mod swar;
pub mod telemetry;
pub mod tickets;
pub mod webhook;
