//! Calls to a ticket system: one shared rate-limit gate per system (a 429's `Retry-After` holds
//! back every concurrent invocation, not just the one that got it), timeouts, and the
//! failure classes of issue 6.

use super::config::TicketingLimits;
use reqwest::header::HeaderMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a call did not succeed, by what the invocation should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 5xx, timeouts, long 429s, unreachable: the request is re-enqueued to come back later.
    #[error("{0}")]
    Transient(String),
    /// A 4xx that cannot succeed, or a configuration that cannot work: ledger `failed`
    /// and dead-letter.
    #[error("{0}")]
    Permanent(String),
    /// 401/403: refresh the secret once, then it is permanent.
    #[error("{0}")]
    Auth(String),
}

/// A reply the caller classifies.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect()
    }

    pub fn json(&self) -> Result<serde_json::Value, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CallError::Transient(format!("HTTP {}: body is not JSON ({e})", self.status))
        })
    }
}

/// One target system's HTTP client and its rate-limit gate.
#[derive(Debug)]
pub struct Endpoint {
    pub name: &'static str,
    pub client: reqwest::Client,
    gate: Mutex<Option<Instant>>,
    max_retry_after: Duration,
    budget: Duration,
}

impl Endpoint {
    pub fn new(name: &'static str, limits: &TicketingLimits) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(limits.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(limits.timeout_secs.clamp(1, 10)))
            .user_agent(concat!("qualtrics-bridge/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Self {
            name,
            client,
            gate: Mutex::new(None),
            max_retry_after: Duration::from_secs(limits.max_retry_after_secs),
            budget: Duration::from_secs(limits.throttle_budget_secs),
        })
    }

    /// How long the system asked us to wait (its latest `Retry-After`), from now.
    pub fn throttled_for(&self) -> Duration {
        self.gate_until().map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    fn gate_until(&self) -> Option<Instant> {
        self.gate
            .lock()
            .ok()
            .and_then(|g| *g)
            .filter(|t| *t > Instant::now())
    }

    fn hold_gate(&self, until: Instant) {
        if let Ok(mut g) = self.gate.lock() {
            if g.is_none_or(|t| t < until) {
                *g = Some(until);
            }
        }
    }

    /// Sends the request `build` makes (again on each 429), waiting out short `Retry-After`s
    /// within `spent` (the invocation's shared throttle budget). Returns any non-429 reply;
    /// transport failures and timeouts are transient.
    pub async fn send(
        &self,
        what: &str,
        spent: &mut Duration,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, CallError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            if let Some(until) = self.gate_until() {
                let wait = until.saturating_duration_since(Instant::now());
                *spent += wait;
                if *spent > self.budget {
                    return Err(CallError::Transient(format!(
                        "{} {what}: still rate limited after {}s of waiting",
                        self.name,
                        spent.as_secs()
                    )));
                }
                tokio::time::sleep(wait).await;
            }
            let resp = build().send().await.map_err(|e| {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "failed"
                };
                CallError::Transient(format!("{} {what}: {kind}: {e}", self.name))
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(|e| {
                CallError::Transient(format!("{} {what}: reading the reply: {e}", self.name))
            })?;
            if status != 429 {
                return Ok(Reply {
                    status,
                    headers,
                    body,
                });
            }
            // 429: the body may be plain text (Zendesk); never parse it.
            let wait = match crate::retry_after::from_headers(&headers) {
                Some(d) if d > self.max_retry_after => {
                    // Every invocation holds back, and a re-enqueued request follows it.
                    self.hold_gate(Instant::now() + d);
                    return Err(CallError::Transient(format!(
                        "{} {what}: rate limited; Retry-After {}s is too long to wait here",
                        self.name,
                        d.as_secs()
                    )));
                }
                Some(d) => d.max(Duration::from_millis(50)),
                None => {
                    let jitter =
                        Duration::from_millis((uuid::Uuid::new_v4().as_u128() % 250) as u64);
                    let d = backoff + jitter;
                    backoff = (backoff * 2).min(self.max_retry_after.max(Duration::from_secs(1)));
                    d
                }
            };
            self.hold_gate(Instant::now() + wait);
        }
    }
}

/// Classifies a non-2xx reply.
pub fn classify(system: &str, what: &str, r: &Reply, detail: String) -> CallError {
    let msg = format!("{system} {what}: HTTP {}: {detail}", r.status);
    match r.status {
        401 | 403 => CallError::Auth(msg),
        408 | 409 | 425 | 500..=599 => CallError::Transient(msg),
        400..=499 => CallError::Permanent(msg),
        // 1xx/3xx (a redirect to a login page, a hibernating instance): try again later.
        _ => CallError::Transient(msg),
    }
}

/// Outbound URLs must be https, except loopback (the local fakes).
pub fn check_url(setting: &str, value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value.trim().trim_end_matches('/'))
        .map_err(|e| format!("setting {setting}: {value:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "setting {setting}: {url} must use https (plain http is allowed on loopback only)"
        )),
    }
}
