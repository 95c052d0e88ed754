//! The end-to-end tests, one module per former test file, in one test binary: each stack test
//! links the whole handler library and devkit, and twenty-one binaries of ~10 MB each were
//! most of a cold CI build (≈ 29 s of CPU apiece to compile and link). One binary shares that
//! work; the tests still each start their own stack on free ports.
//!
//! Run one module: `cargo test --release --test e2e chaos::`. Benchmarks are `#[ignore]`d
//! modules run by their scripts (`scripts/bench-*.sh`).

#[path = "../common/mod.rs"]
mod common;

mod analytics_bench;
mod analytics_delta;
mod chaos;
mod export_bench;
mod export_e2e;
mod handler_protocol;
mod host_conformance;
mod loop_bench;
mod loop_chaos;
mod loop_closer_e2e;
mod operations_cli;
mod operations_poison;
mod ops_events_e2e;
mod pulse_bench;
mod pulse_sender_e2e;
mod secrets_handler;
mod secrets_keyvault;
mod storage_azurite;
mod ticket_events_e2e;
mod ticket_sync_e2e;
mod tickets_bench;
mod tickets_e2e;
mod webhook_e2e;
