use clap::Parser;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: the deployed binary is static musl, whose
/// allocator serialises threads and is several times slower for the handler's many small
/// per-request allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Log lines are written in batches, whenever a worker runs out of work.
        .on_thread_park(qualtrics_bridge::telemetry::flush)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qualtrics-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(qualtrics_bridge::cli::run(
        qualtrics_bridge::cli::Cli::parse(),
    ));
    // Stop the workers first: a task cancelled at shutdown may still log.
    drop(runtime);
    qualtrics_bridge::telemetry::flush();
    code
}
