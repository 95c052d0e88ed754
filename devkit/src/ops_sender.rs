//! A fake ops-event sender: a monitoring tool that posts a sensor event for a few users to
//! `OpsEvents`, signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, key = the
//! base64-decoded `whsec_` secret). The HMAC is RustCrypto's, independent of the handler's.

use crate::publisher::{PublishError, Publisher, Reply};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret is not `whsec_` + base64.
#[derive(Debug, thiserror::Error)]
#[error("the secret is not whsec_ + base64")]
pub struct BadSecret;

/// The HMAC key of a `whsec_` secret: its base64-decoded bytes.
fn key_of(secret: &str) -> Result<Vec<u8>, BadSecret> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| BadSecret)
}

/// `v1,<base64>` for `body` under `key` at Unix second `timestamp`.
fn sign_with(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// `v1,<base64>` for `body` under `secret` (`whsec_…`) at Unix second `timestamp`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, BadSecret> {
    Ok(sign_with(&key_of(secret)?, id, timestamp, body))
}

/// A sensor event in the bridge's shape (docs/pulse.md) naming `emails`.
pub fn sensor_event(event_id: &str, sensor: &str, emails: &[&str]) -> String {
    let people: Vec<_> = emails
        .iter()
        .map(|e| serde_json::json!({"email": e}))
        .collect();
    serde_json::json!({
        "eventId": event_id,
        "eventType": "SensorNotification.Activated",
        "occurredAt": time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "people": people,
        "attributes": {"sensorNames": [sensor]},
    })
    .to_string()
}

/// Posts signed events to one `OpsEvents` URL (with `?code=`).
#[derive(Debug, Clone)]
pub struct OpsSender {
    publisher: Publisher,
    key: Vec<u8>,
}

impl OpsSender {
    pub fn new(url: impl Into<String>, secret: &str) -> Result<Self, BadSecret> {
        Ok(Self {
            publisher: Publisher::new(url),
            key: key_of(secret)?,
        })
    }

    /// Signs `body` now under a fresh `webhook-id` and posts it as JSON.
    pub async fn send(&self, body: &str) -> Result<Reply, PublishError> {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign_with(&self.key, &id, ts, body);
        let ts = ts.to_string();
        let headers = [
            ("webhook-id", id.as_str()),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        self.publisher
            .post(Some("application/json"), &headers, body.to_string())
            .await
    }

    /// Posts a sensor event for `emails`.
    pub async fn sensor(
        &self,
        event_id: &str,
        sensor: &str,
        emails: &[&str],
    ) -> Result<Reply, PublishError> {
        self.send(&sensor_event(event_id, sensor, emails)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_published_vector() {
        assert_eq!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            )
            .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(sign("whsec_!!", "a", 1, "b").is_err());
    }
}
