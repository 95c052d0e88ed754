use clap::Parser;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: the deployed binary is static musl, whose
/// allocator serialises threads and is several times slower for the handler's many small
/// per-request allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3.3's `mi_option_t` (the Rust bindings name no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Freed memory goes back to the OS at once rather than after mimalloc's default 1 s: an
    // export frees download and HTTP buffers continuously, and the delay alone held ~16 MiB
    // more at peak (docs/export.md, "Memory"). Measured: no loss of export speed.
    // SAFETY: sets a global option; mimalloc allows this at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
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
