//! A Qualtrics publisher: builds the deliveries Qualtrics really sends (reference
//! `external-apis.md` §1.4.2–1.4.3, §1.4.6) and POSTs them to a `publicationUrl` — in tests,
//! the local host's front door with the function key in `?code=`.
//!
//! * signed event-subscription forms (`Topic`, `MSG`, `HMAC` = hex HMAC-SHA512 over `MSG`),
//!   with the brand-prefixed topic and any field order;
//! * flat unsigned forms;
//! * workflow web-service JSON calls with a static token header;
//! * raw bodies (any content type, chunked without `Content-Length`) for hostile tests;
//! * duplicate and reordered batches on demand.
//!
//! `devkit publish …` ([`cli`]) sends one signed delivery, for `scripts/run-local.sh`.

use hmac::{Hmac, Mac};
use sha2::Sha512;
use std::time::Duration;

/// Brand id prefixed to topics by default (the Kyma fixtures' brand).
pub const DEFAULT_BRAND: &str = "sapdevelopment";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("POST {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Lowercase hex HMAC-SHA512 of `msg` under `key`, as Qualtrics computes `HMAC`.
pub fn sign(key: &str, msg: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(key.as_bytes()) else {
        return String::new(); // unreachable: HMAC takes keys of any length
    };
    mac.update(msg.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `{BrandID}.surveyengine.completedResponse.{SurveyID}`.
pub fn topic(brand: &str, survey: &str) -> String {
    format!("{brand}.surveyengine.completedResponse.{survey}")
}

/// A completed-response `MSG` in Qualtrics' key order (anonymous-link variant).
pub fn completed_msg(survey: &str, response: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    format!(
        r#"{{"Status":"Complete","SurveyID":"{survey}","ResponseID":"{response}","CompletedDate":"{date}","BrandID":"{DEFAULT_BRAND}"}}"#
    )
}

/// `application/x-www-form-urlencoded` of `pairs`, in order.
pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// One event-subscription delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub msg: String,
    /// `None` sends no `HMAC` field.
    pub hmac: Option<String>,
    /// Field order in the body, by name (`Topic`, `MSG`, `HMAC`); Qualtrics' order varies.
    pub order: [&'static str; 3],
}

impl Delivery {
    /// A signed completed-response delivery for `survey`/`response`.
    pub fn signed(key: &str, survey: &str, response: &str) -> Self {
        Self::signed_msg(
            key,
            &topic(DEFAULT_BRAND, survey),
            completed_msg(survey, response),
        )
    }

    /// A delivery of an arbitrary `msg`, signed with `key`.
    pub fn signed_msg(key: &str, topic: &str, msg: String) -> Self {
        Self {
            topic: topic.to_string(),
            hmac: Some(sign(key, &msg)),
            msg,
            order: ["Topic", "HMAC", "MSG"],
        }
    }

    pub fn with_order(mut self, order: [&'static str; 3]) -> Self {
        self.order = order;
        self
    }

    /// The form body.
    pub fn body(&self) -> String {
        let pairs: Vec<(&str, &str)> = self
            .order
            .iter()
            .filter_map(|name| match *name {
                "Topic" => Some(("Topic", self.topic.as_str())),
                "MSG" => Some(("MSG", self.msg.as_str())),
                "HMAC" => self.hmac.as_deref().map(|h| ("HMAC", h)),
                _ => None,
            })
            .collect();
        encode_form(&pairs)
    }
}

/// The flat unsigned form (subscription without `sharedKey`).
pub fn flat_form(survey: &str, response: &str) -> String {
    encode_form(&[
        ("Topic", &topic(DEFAULT_BRAND, survey)),
        ("Status", "Complete"),
        ("SurveyID", survey),
        ("ResponseID", response),
        ("CompletedDate", "2019-06-26 13:28:11"),
        ("BrandID", DEFAULT_BRAND),
    ])
}

/// The body of a workflow web-service task.
pub fn workflow_body(survey: &str, response: &str) -> String {
    serde_json::json!({ "surveyId": survey, "responseId": response }).to_string()
}

/// Delivery order of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    AsGiven,
    Reversed,
    /// A deterministic shuffle from this seed.
    Shuffled(u64),
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// POSTs deliveries to one URL (`publicationUrl`, e.g. the front door with `?code=`).
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    pub url: String,
}

impl Publisher {
    pub fn new(url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.into(),
        }
    }

    /// POSTs `body` with `Content-Length` and, when given, `Content-Type` and extra headers.
    pub async fn post(
        &self,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Result<Reply, PublishError> {
        let body: Vec<u8> = body.into();
        let mut req = self
            .http
            .post(&self.url)
            .header("content-length", body.len());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body)).await
    }

    /// POSTs `body` chunked, without `Content-Length` (the host then sends no `Body`).
    pub async fn post_chunked(
        &self,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<Reply, PublishError> {
        let chunk: Result<Vec<u8>, std::io::Error> = Ok(body.into());
        let stream = futures::stream::iter([chunk]);
        let req = self
            .http
            .post(&self.url)
            .header("content-type", content_type)
            .body(reqwest::Body::wrap_stream(stream));
        self.send(req).await
    }

    pub async fn get(&self) -> Result<Reply, PublishError> {
        self.send(self.http.get(&self.url)).await
    }

    /// Sends one event-subscription delivery as Qualtrics does.
    pub async fn deliver(&self, d: &Delivery) -> Result<Reply, PublishError> {
        self.post(Some("application/x-www-form-urlencoded"), &[], d.body())
            .await
    }

    /// Sends every delivery `1 + duplicates` times, in `order` (duplicates included in the
    /// reordering), one after the other; returns the replies in sending order.
    pub async fn deliver_all(
        &self,
        deliveries: &[Delivery],
        duplicates: usize,
        order: Order,
    ) -> Result<Vec<(Delivery, Reply)>, PublishError> {
        let mut plan: Vec<&Delivery> = deliveries
            .iter()
            .flat_map(|d| std::iter::repeat_n(d, duplicates + 1))
            .collect();
        match order {
            Order::AsGiven => {}
            Order::Reversed => plan.reverse(),
            Order::Shuffled(seed) => shuffle(&mut plan, seed),
        }
        let mut out = Vec::with_capacity(plan.len());
        for d in plan {
            out.push((d.clone(), self.deliver(d).await?));
        }
        Ok(out)
    }

    /// A workflow web-service call with `Authorization: Bearer token`.
    pub async fn workflow_bearer(
        &self,
        token: &str,
        survey: &str,
        response: &str,
    ) -> Result<Reply, PublishError> {
        let auth = format!("Bearer {token}");
        self.post(
            Some("application/json"),
            &[("authorization", &auth)],
            workflow_body(survey, response),
        )
        .await
    }

    /// A workflow web-service call with `X-Bridge-Token: token`.
    pub async fn workflow_header(
        &self,
        token: &str,
        survey: &str,
        response: &str,
    ) -> Result<Reply, PublishError> {
        self.post(
            Some("application/json"),
            &[("x-bridge-token", token)],
            workflow_body(survey, response),
        )
        .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, PublishError> {
        let err = |source| PublishError::Transport {
            url: redact(&self.url),
            source,
        };
        let resp = req.send().await.map_err(err)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(err)?;
        Ok(Reply { status, body })
    }
}

/// The URL without its query (`code=` is a key).
fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or("").to_string()
}

/// Fisher–Yates with a xorshift generator: deterministic for a seed, no extra dependency.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// `devkit publish …`: one signed delivery (optionally duplicated) of a completed response,
/// signed with the key in the environment variable `key_env`. Fails unless every reply is 2xx.
pub async fn publish(
    url: &str,
    key_env: &str,
    brand: &str,
    survey: &str,
    response: &str,
    duplicates: usize,
) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    let key = std::env::var(key_env)
        .ok()
        .filter(|k| !k.is_empty())
        .with_context(|| format!("environment variable {key_env} (the webhook key) is not set"))?;
    let d = Delivery::signed_msg(&key, &topic(brand, survey), completed_msg(survey, response));
    let replies = Publisher::new(url)
        .deliver_all(std::slice::from_ref(&d), duplicates, Order::AsGiven)
        .await?;
    let mut ok = true;
    for (_, r) in &replies {
        println!("{} {}", r.status, r.body);
        ok &= (200..300).contains(&r.status);
    }
    if !ok {
        bail!("the webhook refused the delivery");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_published_vector_1() {
        let msg = r#"{"Status":"Complete","SurveyID":"SV_1AmkKSDmoZ4XlQx","ResponseID":"R_0B7IcnXszjEUHLP","CompletedDate":"2019-06-25 07:58:25","BrandID":"sapdevelopment"}"#;
        assert_eq!(sign("kyma4ever", msg), "c2c585a404c239aa3063b462cc33551d3ed3ed2de0899f58d456fc0ef7ebef6f3c3af44957989bd0592603e41edde9528f7d9ed09ee128bf719aa12f46e5c598");
    }

    #[test]
    fn body_follows_the_order_and_round_trips() {
        let d = Delivery::signed("k", "SV_1", "R_1").with_order(["MSG", "Topic", "HMAC"]);
        let body = d.body();
        assert!(body.starts_with("MSG=%7B%22Status%22"), "{body}");
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(fields[0].1, d.msg);
        assert_eq!(fields[2].1, sign("k", &d.msg));
    }

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let mut a: Vec<u32> = (0..20).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..20).collect::<Vec<_>>());
        a.sort();
        assert_eq!(a, (0..20).collect::<Vec<_>>());
    }
}
