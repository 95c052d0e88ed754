//! Start-up benchmark of the handler binary: spawn to first answer on `GET /`, idle RSS, and
//! binary size. Polls every millisecond (the host polls every 25 ms, which would hide
//! differences below that).

use crate::process::free_port;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Figures of one benchmark run.
#[derive(Debug, Clone)]
pub struct StartupFigures {
    pub runs: Vec<Duration>,
    pub idle_rss_kib: u64,
    pub binary_bytes: u64,
}

impl StartupFigures {
    pub fn median(&self) -> Duration {
        let mut v = self.runs.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.runs.iter().max().copied().unwrap_or_default()
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 ")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts `binary` `runs` times with `app_root` as its working directory.
pub fn startup(binary: &Path, app_root: &Path, runs: usize) -> std::io::Result<StartupFigures> {
    let mut times = Vec::with_capacity(runs);
    let mut idle_rss_kib = 0;
    for i in 0..runs {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .current_dir(app_root)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        while !answers(port) {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                return Err(std::io::Error::other(
                    "handler did not answer GET / within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(started.elapsed());
        if i + 1 == runs {
            std::thread::sleep(Duration::from_millis(500));
            idle_rss_kib = rss_kib(child.id());
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(StartupFigures {
        runs: times,
        idle_rss_kib,
        binary_bytes: std::fs::metadata(binary)?.len(),
    })
}

/// Peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Resets a process's `VmHWM` to its current RSS (`clear_refs` 5), so that one long-lived
/// process gives a peak per run.
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// A finished child process with its peak RSS.
#[derive(Debug)]
pub struct MeasuredRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_kib: u64,
    pub elapsed: Duration,
}

/// Runs `cmd` to its end and returns its peak RSS from `wait4` (`ru_maxrss`): exact, where
/// polling `/proc` would miss the moments before the exit.
pub fn run_measured(mut cmd: Command) -> std::io::Result<MeasuredRun> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, with valid pointers to locals; std's `Child`
        // never waits for it afterwards (it is dropped without `wait`).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let elapsed = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(MeasuredRun {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        peak_rss_kib: usage.ru_maxrss as u64,
        elapsed,
    })
}
