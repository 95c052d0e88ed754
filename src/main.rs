use clap::Parser;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: the deployed binary is static musl, whose
/// allocator serialises threads and is several times slower for the handler's many small
/// per-request allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    qualtrics_bridge::cli::run(qualtrics_bridge::cli::Cli::parse()).await
}
