//! Child processes that never outlive the test or host that started them.

use std::net::TcpListener;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// A free loopback TCP port (released before return; good enough for tests on one machine).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A free loopback port below the kernel's ephemeral range (32768 and up on Linux), for a
/// server that is stopped and started again on the same port: while it is down, an ephemeral
/// port could go to an outgoing connection — or to a client retrying it, which then connects
/// to itself — and the restart would fail with EADDRINUSE (seen in a chaos run).
///
/// A port is handed out once per process: two servers started at the same time (tests run in
/// parallel in one binary) could otherwise both find it free before either binds it.
pub fn restartable_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for attempt in 0..500u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    free_port()
}

/// Spawns `cmd` so that it is killed when this process dies (`PR_SET_PDEATHSIG`) or when the
/// returned handle is dropped.
pub fn spawn_owned(mut cmd: Command) -> std::io::Result<Child> {
    cmd.kill_on_drop(true).stdin(Stdio::null());
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends SIGKILL to `pid`, as the OOM killer or a crash would end a process: no clean-up, no
/// reply to anything in flight.
pub fn sigkill(pid: u32) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
