//! A small Azure Queue Storage REST client (SharedKey) — what the local host and the tests
//! need from Azurite: create, put, get with a visibility lease, update, delete, peek, count.
//!
//! Deliberately independent of the handler's storage code, so a bug there cannot hide here.

use reqwest::Method;
use std::time::{Duration, SystemTime};
use storage_auth::{http_date, ConnectionString, SharedKeySigner, STORAGE_VERSION};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue request {op} failed: {source}")]
    Transport {
        op: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("queue request {op} returned {status}: {body}")]
    Status {
        op: &'static str,
        status: u16,
        body: String,
    },
    #[error("unexpected queue response to {op}: {reason}")]
    Parse { op: &'static str, reason: String },
}

/// A message as Get Messages returns it; `text` is the raw `MessageText` (base64 under the
/// host's default encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub id: String,
    pub pop_receipt: String,
    pub dequeue_count: u32,
    pub insertion_time: String,
    pub expiration_time: String,
    pub next_visible_time: String,
    pub text: String,
}

/// Client for one storage account's queue endpoint.
#[derive(Debug, Clone)]
pub struct QueueClient {
    http: reqwest::Client,
    endpoint: Url,
    signer: SharedKeySigner,
}

impl QueueClient {
    pub fn new(conn: &ConnectionString) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            endpoint: conn.queue_endpoint.clone(),
            signer: conn.signer(),
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{path}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<reqwest::Response, QueueError> {
        let date = http_date(SystemTime::now());
        let body = body.unwrap_or_default();
        let content_type = if body.is_empty() {
            ""
        } else {
            "application/xml"
        };
        let mut headers = vec![
            ("x-ms-date", date.as_str()),
            ("x-ms-version", STORAGE_VERSION),
        ];
        if !content_type.is_empty() {
            headers.push(("content-type", content_type));
        }
        let auth = self
            .signer
            .authorization(method.as_str(), &url, &headers, body.len());
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", auth)
            .header("content-length", body.len());
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|source| QueueError::Transport { op, source })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            Err(QueueError::Status { op, status, body })
        }
    }

    /// Creates the queue; an existing queue is fine.
    pub async fn create_queue(&self, queue: &str) -> Result<(), QueueError> {
        match self
            .send("create queue", Method::PUT, self.url(queue, &[]), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(QueueError::Status { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Puts a message whose `MessageText` is `text` verbatim (encode first if needed).
    pub async fn put_message(&self, queue: &str, text: &str) -> Result<(), QueueError> {
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            xml_escape(text)
        );
        self.send(
            "put message",
            Method::POST,
            self.url(&format!("{queue}/messages"), &[]),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    /// Gets up to `max` messages, hiding them for `visibility`.
    pub async fn get_messages(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<RawMessage>, QueueError> {
        let n = max.clamp(1, 32).to_string();
        let vt = visibility.as_secs().max(1).to_string();
        let url = self.url(
            &format!("{queue}/messages"),
            &[("numofmessages", &n), ("visibilitytimeout", &vt)],
        );
        let text = self.text("get messages", url).await?;
        parse_messages("get messages", &text)
    }

    /// Peeks up to 32 messages without hiding them (no pop receipts).
    pub async fn peek_messages(&self, queue: &str) -> Result<Vec<RawMessage>, QueueError> {
        let url = self.url(
            &format!("{queue}/messages"),
            &[("peekonly", "true"), ("numofmessages", "32")],
        );
        match self.text("peek messages", url).await {
            Err(QueueError::Status { status: 404, .. }) => Ok(Vec::new()),
            other => parse_messages("peek messages", &other?),
        }
    }

    /// `x-ms-approximate-messages-count` (Get Queue Metadata): every message on the queue,
    /// visible or leased; 0 for a queue that does not exist.
    pub async fn approximate_count(&self, queue: &str) -> Result<u64, QueueError> {
        const OP: &str = "get queue metadata";
        let url = self.url(queue, &[("comp", "metadata")]);
        let resp = match self.send(OP, Method::GET, url, None).await {
            Err(QueueError::Status { status: 404, .. }) => return Ok(0),
            other => other?,
        };
        resp.headers()
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or(QueueError::Parse {
                op: OP,
                reason: "no numeric x-ms-approximate-messages-count header".into(),
            })
    }

    async fn text(&self, op: &'static str, url: Url) -> Result<String, QueueError> {
        self.send(op, Method::GET, url, None)
            .await?
            .text()
            .await
            .map_err(|source| QueueError::Transport { op, source })
    }

    pub async fn delete_message(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
    ) -> Result<(), QueueError> {
        let url = self.url(
            &format!("{queue}/messages/{id}"),
            &[("popreceipt", pop_receipt)],
        );
        self.send("delete message", Method::DELETE, url, None)
            .await
            .map(|_| ())
    }

    /// Makes a leased message visible again after `visibility` (0 = at once), or extends the
    /// lease by that much; returns the new pop receipt.
    pub async fn release_message(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String, QueueError> {
        let vt = visibility.as_secs().to_string();
        let url = self.url(
            &format!("{queue}/messages/{id}"),
            &[("popreceipt", pop_receipt), ("visibilitytimeout", &vt)],
        );
        let resp = self.send("update message", Method::PUT, url, None).await?;
        resp.headers()
            .get("x-ms-popreceipt")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(QueueError::Parse {
                op: "update message",
                reason: "no x-ms-popreceipt header".into(),
            })
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

fn parse_messages(op: &'static str, xml: &str) -> Result<Vec<RawMessage>, QueueError> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<QueueMessage>") {
        let Some(end) = rest[start..].find("</QueueMessage>") else {
            break;
        };
        let m = &rest[start..start + end];
        let field = |name: &str| tag(m, name).map(xml_unescape).unwrap_or_default();
        let dequeue_count = field("DequeueCount");
        out.push(RawMessage {
            id: field("MessageId"),
            pop_receipt: field("PopReceipt"),
            dequeue_count: dequeue_count.parse().map_err(|_| QueueError::Parse {
                op,
                reason: format!("DequeueCount {dequeue_count:?}"),
            })?,
            insertion_time: field("InsertionTime"),
            expiration_time: field("ExpirationTime"),
            next_visible_time: field("TimeNextVisible"),
            text: field("MessageText"),
        });
        rest = &rest[start + end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_messages_xml() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage><MessageId>a1</MessageId><InsertionTime>Tue, 01 Dec 2026 00:00:00 GMT</InsertionTime><ExpirationTime>Tue, 08 Dec 2026 00:00:00 GMT</ExpirationTime><PopReceipt>p&amp;1</PopReceipt><TimeNextVisible>Tue, 01 Dec 2026 00:10:00 GMT</TimeNextVisible><DequeueCount>2</DequeueCount><MessageText>eyJ2IjoxfQ==</MessageText></QueueMessage></QueueMessagesList>";
        let m = parse_messages("t", xml).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].pop_receipt, "p&1");
        assert_eq!(m[0].dequeue_count, 2);
        assert_eq!(m[0].text, "eyJ2IjoxfQ==");
    }
}
