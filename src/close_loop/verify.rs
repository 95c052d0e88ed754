//! Pure verification of ticket-system events: no I/O, no secrets kept, `now` passed in.
//!
//! Both systems sign the same way (reference `close-the-loop.md` §4.2, §3.3): the signature
//! header is `base64(HMAC-SHA256(key = the secret's UTF-8 bytes, msg = timestamp header
//! verbatim + raw body))`, standard base64 with padding, no separator, nothing re-serialised.
//! Zendesk names the headers `X-Zendesk-Webhook-Signature(-Timestamp)`; the ServiceNow business
//! rule shipped in `docs/close-loop.md` sends `X-Bridge-Signature` / `X-Bridge-Timestamp`.
//!
//! The timestamp is signed as the string sent; it is parsed separately, only for
//! [`check_freshness`].

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// Standard padded base64 of 32 bytes.
const SIGNATURE_B64_LEN: usize = 44;

/// How old a signed timestamp may be. Zendesk publishes no window and no retry schedule, and
/// does not say whether a retry is re-signed: its retries (three on 409, five on a timeout of
/// 12 s each, 429/503 after a `Retry-After` under 60 s, a circuit breaker pausing sends) fit in
/// minutes, so one hour never refuses one of them. Replay within the window is harmless: the
/// loop is applied monotonically and de-duplicated downstream (§7).
pub const MAX_AGE: Duration = Duration::hours(1);
/// How far ahead of our clock a timestamp may be (the sender's clock may run fast).
pub const MAX_AHEAD: Duration = Duration::minutes(5);

/// Why a signature was refused. Coarse on purpose: the caller learns nothing about keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not base64 of 32 bytes")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoKey,
}

/// Why a signed timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp is neither RFC 3339 nor yyyy-MM-dd HH:mm:ss UTC")]
    Unparseable,
    #[error("timestamp is older than the freshness window")]
    Stale,
    #[error("timestamp is in the future")]
    Future,
}

/// A webhook secret made ready to verify with (the HMAC state after absorbing the key).
#[derive(Clone)]
pub struct SigningKey(std::sync::Arc<hmac::Key>);

impl SigningKey {
    /// `secret` is used as given: Zendesk's secret string is the key, never base64-decoded.
    pub fn new(secret: &[u8]) -> Self {
        Self(std::sync::Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret,
        )))
    }

    fn tag(&self, timestamp: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(timestamp.as_bytes());
        ctx.update(body);
        ctx.sign()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The signature header value for `timestamp` + `body` under `secret` (what the sender puts
/// in `X-Zendesk-Webhook-Signature` / `X-Bridge-Signature`).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    STANDARD.encode(SigningKey::new(secret).tag(timestamp, body))
}

/// Verifies `signature` over `timestamp` + `body` against each key; returns the index of the
/// key that matched. Every key is tried (no early exit), each compared in constant time.
pub fn verify_signature(
    timestamp: &str,
    body: &[u8],
    signature: &str,
    keys: &[SigningKey],
) -> Result<usize, SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoKey);
    }
    // Only the canonical padded form of 32 bytes: hex, unpadded or URL-safe variants are a
    // different construction, not a spelling of the right one.
    if signature.len() != SIGNATURE_B64_LEN {
        return Err(SignatureError::Malformed);
    }
    let supplied = STANDARD
        .decode(signature)
        .ok()
        .filter(|b| b.len() == TAG_LEN)
        .ok_or(SignatureError::Malformed)?;
    let mut matched = None;
    for (i, key) in keys.iter().enumerate() {
        let ok = bool::from(key.tag(timestamp, body).as_ref().ct_eq(&supplied));
        if ok && matched.is_none() {
            matched = Some(i);
        }
    }
    matched.ok_or(SignatureError::Mismatch)
}

/// Parses a signed timestamp: RFC 3339 (Zendesk; the shipped business rule) or ServiceNow's
/// `yyyy-MM-dd HH:mm:ss`, which is UTC (`GlideDateTime.getValue()`).
pub fn parse_timestamp(text: &str) -> Result<OffsetDateTime, TimestampError> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let glide = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(text, glide)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| TimestampError::Unparseable)
}

/// Whether a signed timestamp is within [`MAX_AGE`] before `now` and [`MAX_AHEAD`] after it.
/// A timestamp that parses as neither form (Zendesk's test vector's `1234`, say) is refused:
/// without a time there is no window to be in.
pub fn check_freshness(text: &str, now: OffsetDateTime) -> Result<(), TimestampError> {
    let at = parse_timestamp(text)?;
    if at < now - MAX_AGE {
        return Err(TimestampError::Stale);
    }
    if at > now + MAX_AHEAD {
        return Err(TimestampError::Future);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use time::macros::datetime;

    /// Zendesk's static test secret, used as a string (reference §4.2).
    const ZENDESK_TEST_SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
    /// Vector 1's body: aaronellington/zendesk-go
    /// `zendesk/test_files/requests/webhook/user/group_membership_created.json` @dfeda33d.
    const VECTOR_1_BODY: &[u8] =
        include_bytes!("../../tests/fixtures/zendesk/group_membership_created.json");
    const VECTOR_1_SIGNATURE: &str = "10IqYzYTLHRftNsNE+im0DeOM6/JactIRuy0XCHJ9B8=";
    const V1_NO_NEWLINE: &str = "kvWjaewTmBsDVRjQ3UaEiTsGMU5eeIv33St++Kl9z+Q=";
    const VECTOR_2_TIMESTAMP: &str = "2021-03-25T05:09:27Z";
    const VECTOR_2_BODY: &str = r#"{"ticket_id":"35436","external_id":"qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm","status":"Solved","updated_at":"2021-03-25T05:09:20Z"}"#;
    const VECTOR_2_SIGNATURE: &str = "f/5UHBOoRDSK7Xx0fZ00XODkKwbS/o85k91eVfokiEM=";
    const SERVICENOW_SECRET: &str = "bridge-servicenow-test-secret";
    const SERVICENOW_TIMESTAMP: &str = "2026-01-05T10:38:52Z";
    const SERVICENOW_BODY: &str = r#"{"v":1,"system":"servicenow","sys_id":"c537bae64f411200adf9f8e18110c76e","number":"INC0010002","state":"6","close_code":"Solved (Permanently)","correlation_id":"qualtrics:SV_22VlHYNeldrrrkp:R_1l9mcVuXubb4aGm","sys_updated_on":"2026-01-05 10:38:50","sys_mod_count":"7"}"#;
    const SERVICENOW_SIGNATURE: &str = "TMUBABScB+UDBH6ltYZn+sAG70vpo6krpMM9QPfr//g=";

    fn key(secret: &str) -> Vec<SigningKey> {
        vec![SigningKey::new(secret.as_bytes())]
    }

    #[test]
    fn vector_1_fixture_is_the_published_bytes() {
        assert_eq!(VECTOR_1_BODY.len(), 534);
        let digest: String = Sha256::digest(VECTOR_1_BODY)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            "99ea3ee87a1131f583105cda2225e7bbbf371072ada32bfde0cf2e89e9b49f2d"
        );
        assert!(VECTOR_1_BODY.ends_with(b"}\n") && VECTOR_1_BODY.contains(&b'\t'));
    }

    #[test]
    fn published_vectors_verify_byte_for_byte() {
        let zendesk = key(ZENDESK_TEST_SECRET);
        // Vector 1: the timestamp `1234` is signed as the string sent.
        assert_eq!(
            sign(ZENDESK_TEST_SECRET.as_bytes(), "1234", VECTOR_1_BODY),
            VECTOR_1_SIGNATURE
        );
        assert_eq!(
            verify_signature("1234", VECTOR_1_BODY, VECTOR_1_SIGNATURE, &zendesk),
            Ok(0)
        );
        assert_eq!(
            verify_signature(
                VECTOR_2_TIMESTAMP,
                VECTOR_2_BODY.as_bytes(),
                VECTOR_2_SIGNATURE,
                &zendesk
            ),
            Ok(0)
        );
        assert_eq!(VECTOR_2_BODY.len(), 138);
        assert_eq!(
            verify_signature(
                SERVICENOW_TIMESTAMP,
                SERVICENOW_BODY.as_bytes(),
                SERVICENOW_SIGNATURE,
                &key(SERVICENOW_SECRET)
            ),
            Ok(0)
        );
    }

    #[test]
    fn the_previous_secret_verifies_and_says_so() {
        let keys = [
            SigningKey::new(b"the-new-secret"),
            SigningKey::new(ZENDESK_TEST_SECRET.as_bytes()),
        ];
        assert_eq!(
            verify_signature(
                VECTOR_2_TIMESTAMP,
                VECTOR_2_BODY.as_bytes(),
                VECTOR_2_SIGNATURE,
                &keys
            ),
            Ok(1)
        );
        assert_eq!(
            verify_signature(VECTOR_2_TIMESTAMP, b"{}", VECTOR_2_SIGNATURE, &[]),
            Err(SignatureError::NoKey)
        );
    }

    /// Every wrong construction in the reference's table, and more, is refused.
    #[test]
    fn wrong_constructions_are_refused() {
        use SignatureError::{Malformed, Mismatch};
        let zendesk = key(ZENDESK_TEST_SECRET);
        let body = VECTOR_2_BODY.as_bytes();
        let ts = VECTOR_2_TIMESTAMP;
        let decoded_secret = STANDARD.decode(ZENDESK_TEST_SECRET).unwrap();
        let reserialised = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(VECTOR_2_BODY).unwrap(),
        )
        .unwrap();
        let v1_no_newline = &VECTOR_1_BODY[..VECTOR_1_BODY.len() - 1];
        let body_then_ts = [body, ts.as_bytes()].concat();
        #[rustfmt::skip]
        let rows: Vec<(&str, &str, &[u8], String, SignatureError)> = vec![
            ("hex digest", ts, body, "7ffe541c13a844348aed7c747d9d345ce0e42b06d2fe8f3993dd5e55fa248843".into(), Malformed),
            ("'.' separator (published value)", ts, body, "kyUywn6LSHbVQWm5q8oBpAzHb290jv/KASLp1Hu8qiY=".into(), Mismatch),
            ("'.' separator (computed)", ts, body, sign(ZENDESK_TEST_SECRET.as_bytes(), &format!("{ts}."), body), Mismatch),
            ("secret base64-decoded first (published value)", ts, body, "ZmtmIuYYf0DUDdFY3T1psZl8iCDNGrNC5vIgjpXuRBQ=".into(), Mismatch),
            ("secret base64-decoded first (computed)", ts, body, sign(&decoded_secret, ts, body), Mismatch),
            ("re-serialised JSON", ts, body, sign(ZENDESK_TEST_SECRET.as_bytes(), ts, reserialised.as_bytes()), Mismatch),
            ("signed without the trailing newline", "1234", VECTOR_1_BODY, V1_NO_NEWLINE.into(), Mismatch),
            ("vector 1 signature over vector 1 without newline", "1234", v1_no_newline, VECTOR_1_SIGNATURE.into(), Mismatch),
            ("body only, no timestamp", ts, body, sign(ZENDESK_TEST_SECRET.as_bytes(), "", body), Mismatch),
            ("body then timestamp", "", &body_then_ts, VECTOR_2_SIGNATURE.into(), Mismatch),
            ("another timestamp", "2021-03-25T05:09:28Z", body, VECTOR_2_SIGNATURE.into(), Mismatch),
            ("timestamp re-formatted", "2021-03-25T05:09:27+00:00", body, VECTOR_2_SIGNATURE.into(), Mismatch),
            ("HMAC-SHA1 length", ts, body, STANDARD.encode([7u8; 20]), Malformed),
            ("unpadded base64", ts, body, VECTOR_2_SIGNATURE.trim_end_matches('=').into(), Malformed),
            ("URL-safe base64", ts, body, VECTOR_2_SIGNATURE.replace('/', "_"), Malformed),
            ("sha256= prefix", ts, body, format!("sha256={VECTOR_2_SIGNATURE}"), Malformed),
            ("surrounding space", ts, body, format!(" {VECTOR_2_SIGNATURE}"), Malformed),
            ("empty", ts, body, String::new(), Malformed),
            ("44 characters, not base64", ts, body, "!".repeat(44), Malformed),
            ("wrong secret", ts, body, sign(b"not-the-secret", ts, body), Mismatch),
            ("secret with a trailing newline", ts, body, sign(format!("{ZENDESK_TEST_SECRET}\n").as_bytes(), ts, body), Mismatch),
        ];
        // The published value is what a verifier that drops the newline computes.
        assert_eq!(
            verify_signature("1234", v1_no_newline, V1_NO_NEWLINE, &zendesk),
            Ok(0)
        );
        for (name, ts, body, sig, want) in rows {
            assert_eq!(
                verify_signature(ts, body, &sig, &zendesk),
                Err(want),
                "{name}"
            );
        }
    }

    #[test]
    fn freshness_window() {
        use TimestampError::{Future, Stale, Unparseable};
        let now = datetime!(2026-01-05 10:40:00 UTC);
        #[rustfmt::skip]
        let rows: Vec<(&str, Result<(), TimestampError>)> = vec![
            ("2026-01-05T10:40:00Z", Ok(())),
            ("2026-01-05T10:38:52Z", Ok(())),
            ("2026-01-05 10:38:52", Ok(())),
            ("2026-01-05T11:38:52+01:00", Ok(())),
            ("2026-01-05T09:40:00Z", Ok(())),
            ("2026-01-05T09:39:59Z", Err(Stale)),
            ("2026-01-05T10:45:00Z", Ok(())),
            ("2026-01-05T10:45:01Z", Err(Future)),
            ("2021-03-25T05:09:27Z", Err(Stale)),
            // Vector 1's timestamp verifies its signature, but is no time: refused.
            ("1234", Err(Unparseable)),
            ("", Err(Unparseable)),
            ("1767609532", Err(Unparseable)),
            ("2026-01-05T10:38:52", Err(Unparseable)),
            // RFC 3339 §5.6 allows a space for `T`.
            ("2026-01-05 10:38:52Z", Ok(())),
            ("Mon, 05 Jan 2026 10:38:52 GMT", Err(Unparseable)),
            ("2026-13-05T10:38:52Z", Err(Unparseable)),
        ];
        for (text, want) in rows {
            assert_eq!(check_freshness(text, now), want, "{text:?}");
        }
    }
}
