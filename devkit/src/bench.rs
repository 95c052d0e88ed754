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
