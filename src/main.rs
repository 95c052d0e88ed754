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
    // No transparent huge pages for this process: mimalloc advises its arena for them, so
    // every 2 MiB region holding one live block stayed wholly resident, and freed memory
    // inside it could not be returned. That rounding was the export's allocator slack: a
    // slowed-upload export peaked at 49–54 MiB with huge pages and 30–33 MiB without, for
    // 16 MiB of live heap (docs/export.md, "Memory"). Set before the runtime allocates
    // anything large; the kernel applies it to every mapping of the process, the arena
    // mimalloc reserved before `main` included.
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers only and changes no memory we hold.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
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
