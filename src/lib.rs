//! qualtrics-bridge: an Azure Functions custom handler that turns Qualtrics feedback into
//! exports in Blob Storage and tickets in ServiceNow or Zendesk.
//!
//! `startup` builds the app from typed configuration; `host` owns the custom-handler wire
//! protocol; each function's capability lives in its own module.

pub mod cli;
pub mod config;
pub mod env;
pub mod export;
pub mod host;
pub mod identity;
pub mod json;
pub mod messages;
pub mod poison;
pub mod progress;
pub mod qualtrics;
pub mod secrets;
pub mod startup;
pub mod storage;
pub mod subscriptions;
pub mod swar;
pub mod telemetry;
pub mod tickets;
pub mod webhook;
