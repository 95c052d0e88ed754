//! devkit: the local Azure Functions host and the fakes that let qualtrics-bridge be proven
//! on a laptop — real handler binary, real Azurite, fake external services.

pub mod azurite;
pub mod bench;
pub mod canary;
pub mod counting;
pub mod fakes;
pub mod host;
pub mod ops_sender;
pub mod process;
pub mod publisher;
pub mod queue_client;
pub mod sandbox;
pub mod staging;
pub mod throttle;
