//! The fake Qualtrics' rate limits: leaky buckets per endpoint plus one brand-wide bucket, as
//! Qualtrics computes them (reference `external-apis.md` §1.5: "leaky bucket", excess → `429`,
//! "requests succeed again after enough requests have emptied out of the bucket"). Off unless a
//! test sets them ([`FakeQualtrics::set_rate_limits`]); over a limit the answer is the normal
//! error envelope with `429` and a `Retry-After` of the whole seconds until one request fits.
//! The bucket size is not documented, so it is a parameter.

use super::FakeQualtrics;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The endpoints with a per-endpoint figure (reference `external-apis.md` §1.5 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /surveys/{id}/responses/{id}` ("single response").
    ResponseGet,
    /// `PUT /responses/{id}` (the write-back).
    ResponseUpdate,
    /// `POST /directories/{POOL}/mailinglists/{CG}/contacts`.
    Contacts,
    /// `POST /distributions`.
    Distributions,
    /// `POST /directories/{POOL}/transactions` (no published figure: the brand limit only).
    Transactions,
    /// `POST /directories/{POOL}/transactionbatches` and `…/transactionbatches/{id}/transactions`
    /// (AlexQ's template: 500/min, **[UNCONFIRMED]**).
    TransactionBatches,
    /// `POST /inbound-event/v1/event/JSON/triggers`.
    JsonEvent,
}

impl Endpoint {
    fn of(method: &str, path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segs.as_slice()) {
            ("GET", ["API", "v3", "surveys", _, "responses", _]) => Some(Self::ResponseGet),
            ("PUT", ["API", "v3", "responses", _]) => Some(Self::ResponseUpdate),
            ("POST", ["API", "v3", "directories", _, "mailinglists", _, "contacts"]) => {
                Some(Self::Contacts)
            }
            ("POST", ["API", "v3", "distributions"]) => Some(Self::Distributions),
            ("POST", ["API", "v3", "directories", _, "transactions"]) => Some(Self::Transactions),
            ("POST", ["API", "v3", "directories", _, "transactionbatches", ..]) => {
                Some(Self::TransactionBatches)
            }
            ("POST", ["inbound-event", "v1", "event", "JSON", "triggers"]) => Some(Self::JsonEvent),
            _ => None,
        }
    }
}

/// A leaky bucket: `per_minute` drain out of a bucket holding `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_minute: f64,
    pub burst: f64,
}

impl Limit {
    fn per_sec(&self) -> f64 {
        (self.per_minute / 60.0).max(f64::MIN_POSITIVE)
    }
}

/// What [`FakeQualtrics::set_rate_limits`] takes.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    /// Every call of the token counts here too.
    pub brand: Option<Limit>,
    pub endpoints: HashMap<Endpoint, Limit>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: Limit,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: Limit) -> Self {
        Self {
            limit,
            level: 0.0,
            at: Instant::now(),
        }
    }

    fn drain(&mut self, now: Instant) {
        let leaked = now.saturating_duration_since(self.at).as_secs_f64() * self.limit.per_sec();
        self.level = (self.level - leaked).max(0.0);
        self.at = now;
    }

    /// How long until one more request fits (zero: it fits now).
    fn wait(&self) -> Duration {
        let over = self.level + 1.0 - self.limit.burst.max(1.0);
        Duration::from_secs_f64((over / self.limit.per_sec()).max(0.0))
    }
}

#[derive(Debug, Default)]
pub(super) struct Limiter {
    brand: Option<Bucket>,
    endpoints: HashMap<Endpoint, Bucket>,
    /// Admitted and refused calls per endpoint (`None`: any other route), limited or not.
    counts: HashMap<Option<Endpoint>, (u64, u64)>,
}

impl Limiter {
    /// `None`: admitted (and counted in its buckets); `Some(secs)`: refuse with this
    /// `Retry-After`. A refused call takes nothing from any bucket.
    pub(super) fn admit(&mut self, method: &str, path: &str) -> Option<u64> {
        if self.brand.is_none() && self.endpoints.is_empty() {
            return None;
        }
        let now = Instant::now();
        let endpoint = Endpoint::of(method, path);
        let mut wait = Duration::ZERO;
        let buckets = self
            .brand
            .iter_mut()
            .chain(endpoint.and_then(|e| self.endpoints.get_mut(&e)));
        let mut fits: Vec<&mut Bucket> = Vec::new();
        for b in buckets {
            b.drain(now);
            wait = wait.max(b.wait());
            fits.push(b);
        }
        let count = self.counts.entry(endpoint).or_default();
        if wait.is_zero() {
            fits.into_iter().for_each(|b| b.level += 1.0);
            count.0 += 1;
            None
        } else {
            count.1 += 1;
            Some(wait.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

impl FakeQualtrics {
    /// Enforces these limits from now on (the default, empty, enforces none).
    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.with(|i| {
            i.limiter = Limiter {
                brand: limits.brand.map(Bucket::new),
                endpoints: limits
                    .endpoints
                    .into_iter()
                    .map(|(e, l)| (e, Bucket::new(l)))
                    .collect(),
                counts: HashMap::new(),
            }
        })
    }

    /// `(admitted, refused with 429)` calls of `endpoint` since the limits were set, whether
    /// or not it has a per-endpoint limit (`None`: the routes outside [`Endpoint`]).
    pub fn rate_counts(&self, endpoint: Option<Endpoint>) -> (u64, u64) {
        self.with(|i| i.limiter.counts.get(&endpoint).copied().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_refuses_until_a_request_has_leaked_out() {
        let mut l = Limiter::default();
        l.endpoints.insert(
            Endpoint::ResponseUpdate,
            Bucket::new(Limit {
                per_minute: 60.0,
                burst: 2.0,
            }),
        );
        let p = "/API/v3/responses/R_1";
        assert_eq!(l.admit("PUT", p), None);
        assert_eq!(l.admit("PUT", p), None);
        assert_eq!(l.admit("PUT", p), Some(1));
        // Another endpoint has no limit here.
        assert_eq!(l.admit("POST", "/API/v3/distributions"), None);
        assert_eq!(l.counts[&Some(Endpoint::ResponseUpdate)], (2, 1));
    }
}
