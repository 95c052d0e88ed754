//! A loopback HTTP/1.1 proxy that counts the requests passing through it, by method and Blob
//! operation (`GET ?comp=list`, `PUT ?comp=block`, …), and the bytes each way: put in front
//! of Azurite, it shows how many storage requests a run made without trusting the handler's
//! own account of them.
//!
//! It reads each request's head and frames its body (`Content-Length` or chunked) to find
//! where the next request starts; replies pass through untouched.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What went through the proxy since the last [`CountingProxy::take`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// `"GET comp=list"`, `"PUT"`, … → requests.
    pub requests: BTreeMap<String, u64>,
    pub request_bytes: u64,
    pub reply_bytes: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// A running proxy; dropping it closes the listener and every connection.
pub struct CountingProxy {
    pub port: u16,
    counts: Arc<Mutex<Counts>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        let accept = tokio::spawn(async move {
            // Owned here, so aborting the accept loop drops every connection with it.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let counts = shared.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = relay(client, server, &counts).await;
                    }
                });
            }
        });
        Ok(Self {
            port,
            counts,
            accept,
        })
    }

    /// The counts so far, and a fresh start.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `"METHOD comp=…"` of a request line.
fn kind(request_line: &str) -> String {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("?");
    let comp = parts
        .next()
        .and_then(|target| target.split_once('?'))
        .and_then(|(_, query)| query.split('&').find(|p| p.starts_with("comp=")));
    match comp {
        Some(c) => format!("{method} {c}"),
        None => method.to_string(),
    }
}

async fn relay(client: TcpStream, server: TcpStream, counts: &Mutex<Counts>) -> io::Result<()> {
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies = async {
        // Counted as they pass: a kept-alive connection outlives a `take`.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return client_write.shutdown().await;
            }
            client_write.write_all(&buf[..n]).await?;
            counts.lock().unwrap_or_else(|p| p.into_inner()).reply_bytes += n as u64;
        }
    };
    let requests = async {
        let mut r = BufReader::new(client_read);
        loop {
            let mut head = Vec::new();
            let (mut length, mut chunked) = (0u64, false);
            loop {
                let start = head.len();
                if r.read_until(b'\n', &mut head).await? == 0 {
                    // The client closed the connection: so does the proxy, towards Azurite.
                    return server_write.shutdown().await;
                }
                let line = String::from_utf8_lossy(&head[start..]).to_ascii_lowercase();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line.starts_with("transfer-encoding:") && line.contains("chunked") {
                    chunked = true;
                }
            }
            let first = String::from_utf8_lossy(&head).lines().next().map(kind);
            server_write.write_all(&head).await?;
            let mut body = 0u64;
            if chunked {
                loop {
                    let mut size_line = Vec::new();
                    r.read_until(b'\n', &mut size_line).await?;
                    server_write.write_all(&size_line).await?;
                    let text = String::from_utf8_lossy(&size_line);
                    let hex = text.trim().split(';').next().unwrap_or("0");
                    let size = u64::from_str_radix(hex, 16).unwrap_or(0);
                    // The chunk and its CRLF (the last chunk: the trailer's empty line).
                    body += copy_exact(&mut r, &mut server_write, size + 2).await?;
                    if size == 0 {
                        break;
                    }
                }
            } else {
                body = copy_exact(&mut r, &mut server_write, length).await?;
            }
            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
            *c.requests.entry(first.unwrap_or_default()).or_default() += 1;
            c.request_bytes += head.len() as u64 + body;
        }
    };
    let (a, b) = tokio::join!(replies, requests);
    a.and(b)
}

async fn copy_exact(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    n: u64,
) -> io::Result<u64> {
    let mut limited = r.take(n);
    let copied = tokio::io::copy(&mut limited, w).await?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::kind;

    #[test]
    fn requests_are_named_by_method_and_blob_operation() {
        assert_eq!(
            kind("GET /devstoreaccount1/c?restype=container&comp=list&prefix=x HTTP/1.1"),
            "GET comp=list"
        );
        assert_eq!(kind("PUT /devstoreaccount1/c/b HTTP/1.1"), "PUT");
        assert_eq!(kind("HEAD /a/b?x=1 HTTP/1.1"), "HEAD");
    }
}
