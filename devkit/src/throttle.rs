//! A loopback TCP proxy that paces what clients send (request bodies such as `Put Block`)
//! to a fixed rate shared by all its connections, and passes replies through at full speed:
//! put in front of Azurite, it makes the upload slower than a download, the case where an
//! export pipeline without backpressure would buffer the difference.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A running proxy; dropping it closes the listener and every connection.
pub struct ThrottledProxy {
    pub port: u16,
    accept: tokio::task::JoinHandle<()>,
}

impl ThrottledProxy {
    /// Listens on a free loopback port and forwards to `target`, client bytes at
    /// `bytes_per_sec` in total.
    pub async fn start(target: SocketAddr, bytes_per_sec: u64) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let pace = Arc::new(Pace {
            next: Mutex::new(Instant::now()),
            bytes_per_sec: bytes_per_sec.max(1),
        });
        let accept = tokio::spawn(async move {
            // Owned here, so aborting the accept loop drops every connection with it.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let pace = pace.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = relay(client, server, &pace).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { port, accept })
    }
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The shared schedule: when the next client byte may go.
struct Pace {
    next: Mutex<Instant>,
    bytes_per_sec: u64,
}

impl Pace {
    /// Waits until `n` more bytes fit the rate.
    async fn take(&self, n: usize) {
        let due = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            *next
        };
        tokio::time::sleep_until(due).await;
    }
}

async fn relay(client: TcpStream, server: TcpStream, pace: &Pace) -> io::Result<()> {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_r.read(&mut buf).await?;
            if n == 0 {
                return server_w.shutdown().await;
            }
            pace.take(n).await;
            server_w.write_all(&buf[..n]).await?;
        }
    };
    let downstream = async {
        tokio::io::copy(&mut server_r, &mut client_w).await?;
        client_w.shutdown().await
    };
    tokio::try_join!(upstream, downstream).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_bytes_are_paced_and_replies_pass_through() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let proxy = ThrottledProxy::start(target, 1_000_000).await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        let sent = vec![7u8; 500_000];
        let t0 = std::time::Instant::now();
        let (mut r, mut w) = c.split();
        let write = async {
            w.write_all(&sent).await.unwrap();
        };
        let mut got = vec![0u8; sent.len()];
        let read = async {
            r.read_exact(&mut got).await.unwrap();
        };
        tokio::join!(write, read);
        let took = t0.elapsed();
        assert_eq!(got, sent);
        // 500 kB at 1 MB/s: about half a second, never much less.
        assert!(took >= Duration::from_millis(400), "{took:?}");
    }
}
