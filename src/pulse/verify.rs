//! Pure verification of ops events: no I/O, `now` passed in, no secret kept beyond the ready
//! keys the caller hands in.
//!
//! * [`verify_standard`] checks a Standard Webhooks signature (standardwebhooks.com, the
//!   scheme svix uses): `webhook-signature` is a space-separated list of `v1,<base64>`
//!   entries, each HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{raw body}` under the
//!   base64-decoded bytes of a `whsec_…` secret; any entry matching any key accepts. The
//!   timestamp must lie within [`TOLERANCE_SECS`] of `now` either way (the reference
//!   libraries' window), which together with de-duplication on the event id is the replay
//!   defence.
//! * [`token_matches`] compares a static header secret (`X-Bridge-Token`) in constant time,
//!   for senders that cannot sign (SysTrack, CleverTap).
//!
//! Reference: `ops-events.md` §1 (scheme and test vector).

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How far `webhook-timestamp` may be from now, either way (5 minutes, as the spec's
/// reference libraries).
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// Longest accepted `webhook-id` (svix ids are ~30 characters).
pub const MAX_ID_LEN: usize = 256;
/// Most `v1,` entries looked at: a sender signs with one or two secrets during rotation.
pub const MAX_SIGNATURES: usize = 8;
/// The prefix of a Standard Webhooks secret; what follows is base64 of the key bytes.
const SECRET_PREFIX: &str = "whsec_";

/// Why a signed delivery was refused. Deliberately coarse, never carries a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook-id is missing, empty, too long or not printable ASCII")]
    BadId,
    #[error("webhook-timestamp is not integer Unix seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the 5 minute window")]
    Stale,
    #[error("webhook-signature has no well-formed v1 entry")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("no usable ops-webhook-secret is configured")]
    NoKey,
}

/// A Standard Webhooks secret made ready to verify with; `None` inside when the secret is
/// not `whsec_` + base64 (such a key matches nothing, and says so through [`Self::is_usable`]).
#[derive(Clone)]
pub struct SigningKey(Option<std::sync::Arc<hmac::Key>>);

impl SigningKey {
    /// The key of a secret as the spec writes it: `whsec_` + base64 of the key bytes. A
    /// secret without the prefix is decoded as bare base64, as the reference libraries do.
    pub fn new(secret: &[u8]) -> Self {
        let text = secret
            .strip_prefix(SECRET_PREFIX.as_bytes())
            .unwrap_or(secret);
        let key = STANDARD
            .decode(text)
            .ok()
            .filter(|k| !k.is_empty())
            .map(|k| std::sync::Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &k)));
        Self(key)
    }

    pub fn is_usable(&self) -> bool {
        self.0.is_some()
    }

    /// HMAC-SHA256 of `{id}.{timestamp}.{body}`; `None` for an unusable key.
    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Option<[u8; 32]> {
        let key = self.0.as_ref()?;
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        Some(out)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The three Standard Webhooks headers as received.
#[derive(Debug, Clone, Copy)]
pub struct StandardHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// `v1,<base64>` as a standard-base64 HMAC-SHA256 tag (padding required); anything else
/// (another version, hex, no `v1,`) is not a v1 signature.
fn v1_tag(entry: &str) -> Option<[u8; 32]> {
    let b64 = entry.strip_prefix("v1,")?;
    let bytes = STANDARD.decode(b64).ok()?;
    bytes.try_into().ok()
}

/// Checks a Standard Webhooks delivery against each key; returns the index of the key that
/// matched. Every key and every `v1` entry is compared (no early exit), in constant time.
pub fn verify_standard(
    h: StandardHeaders<'_>,
    body: &[u8],
    keys: &[SigningKey],
    now: i64,
) -> Result<usize, SignatureError> {
    let id =
        h.id.filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id.bytes().all(|b| (b'!'..=b'~').contains(&b))
        })
        .ok_or(SignatureError::BadId)?;
    let timestamp = h
        .timestamp
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(SignatureError::BadTimestamp)?;
    let at: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - at).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let tags: Vec<[u8; 32]> = h
        .signature
        .unwrap_or("")
        .split(' ')
        .filter(|e| !e.is_empty())
        .take(MAX_SIGNATURES)
        .filter_map(v1_tag)
        .collect();
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if !keys.iter().any(SigningKey::is_usable) {
        return Err(SignatureError::NoKey);
    }
    let mut matched = None;
    for (i, key) in keys.iter().enumerate() {
        let Some(mac) = key.mac(id, timestamp, body) else {
            continue;
        };
        let hit = tags
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | mac.ct_eq(t));
        if bool::from(hit) && matched.is_none() {
            matched = Some(i);
        }
    }
    matched.ok_or(SignatureError::Mismatch)
}

/// `v1,<base64>` for `body` under `secret` (`whsec_…`): what a Standard Webhooks sender puts
/// in `webhook-signature`. For tests and devkit's fake sender.
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let ts = timestamp.to_string();
    let mac = SigningKey::new(secret.as_bytes()).mac(id, &ts, body)?;
    Some(format!("v1,{}", STANDARD.encode(mac)))
}

/// A static header secret made ready to compare with: its SHA-256, so neither the content
/// nor the length of the secret leaks through the comparison's timing.
#[derive(Clone)]
pub struct StaticToken([u8; 32]);

impl StaticToken {
    pub fn new(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

/// The index of the token `presented` equals (every token compared, in constant time).
pub fn token_matches(presented: &str, tokens: &[StaticToken]) -> Option<usize> {
    if presented.is_empty() {
        return None;
    }
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut matched = None;
    for (i, t) in tokens.iter().enumerate() {
        if bool::from(t.0.ct_eq(&digest)) && matched.is_none() {
            matched = Some(i);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    // ops-events.md §1: the value published with the reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn keys(secrets: &[&str]) -> Vec<SigningKey> {
        secrets
            .iter()
            .map(|s| SigningKey::new(s.as_bytes()))
            .collect()
    }

    fn check(
        id: Option<&str>,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &str,
        secrets: &[&str],
        now: i64,
    ) -> Result<usize, SignatureError> {
        let h = StandardHeaders {
            id,
            timestamp: ts,
            signature: sig,
        };
        verify_standard(h, body.as_bytes(), &keys(secrets), now)
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// HMAC-SHA256 under raw `key` over `msg`, base64: for building wrong constructions.
    fn raw_mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg)
            .as_ref()
            .to_vec()
    }

    #[test]
    fn published_vector_byte_for_byte() {
        assert_eq!(
            sign_standard(SECRET, ID, TS, BODY.as_bytes()).as_deref(),
            Some(SIG)
        );
        let ts = TS.to_string();
        assert_eq!(
            check(Some(ID), Some(&ts), Some(SIG), BODY, &[SECRET], TS),
            Ok(0)
        );
    }

    /// name, webhook-id, webhook-timestamp, webhook-signature, body, secrets, now, verdict.
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<String>,
        &'a str,
        Vec<&'a str>,
        i64,
        Result<usize, SignatureError>,
    );

    #[test]
    fn table() {
        let ts = TS.to_string();
        let key = STANDARD
            .decode(SECRET.trim_start_matches(SECRET_PREFIX))
            .unwrap();
        let signed = |msg: String| format!("v1,{}", STANDARD.encode(raw_mac(&key, msg.as_bytes())));
        let hex_sig = format!(
            "v1,{}",
            hex(&raw_mac(&key, format!("{ID}.{ts}.{BODY}").as_bytes()))
        );
        let text_key_sig = format!(
            "v1,{}",
            STANDARD.encode(raw_mac(
                SECRET.as_bytes(),
                format!("{ID}.{ts}.{BODY}").as_bytes()
            ))
        );
        let text_key_no_prefix = format!(
            "v1,{}",
            STANDARD.encode(raw_mac(
                SECRET.trim_start_matches(SECRET_PREFIX).as_bytes(),
                format!("{ID}.{ts}.{BODY}").as_bytes()
            ))
        );
        let unpadded = SIG.trim_end_matches('=').to_string();
        let other = "whsec_".to_string() + &STANDARD.encode([7u8; 24]);
        let far = "1".repeat(13);
        use SignatureError::*;
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("vector", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS, Ok(0)),
            ("vector, previous key matches", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![&other, SECRET], TS, Ok(1)),
            ("several signatures, one good", Some(ID), Some(&ts), Some(format!("v1,AAAA v1a,xyz {SIG}")), BODY, vec![SECRET], TS, Ok(0)),
            ("4:59 late", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS + 299, Ok(0)),
            ("5:00 early", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS - 300, Ok(0)),
            ("stale: 5:01 late", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS + 301, Err(Stale)),
            ("stale: 5:01 in the future", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS - 301, Err(Stale)),
            ("hex instead of base64", Some(ID), Some(&ts), Some(hex_sig), BODY, vec![SECRET], TS, Err(Malformed)),
            ("secret text used as key", Some(ID), Some(&ts), Some(text_key_sig), BODY, vec![SECRET], TS, Err(Mismatch)),
            ("secret without whsec_ not base64-decoded", Some(ID), Some(&ts), Some(text_key_no_prefix), BODY, vec![SECRET], TS, Err(Mismatch)),
            ("id and timestamp swapped", Some(ID), Some(&ts), Some(signed(format!("{ts}.{ID}.{BODY}"))), BODY, vec![SECRET], TS, Err(Mismatch)),
            ("no separator", Some(ID), Some(&ts), Some(signed(format!("{ID}{ts}{BODY}"))), BODY, vec![SECRET], TS, Err(Mismatch)),
            ("wrong separator", Some(ID), Some(&ts), Some(signed(format!("{ID}:{ts}:{BODY}"))), BODY, vec![SECRET], TS, Err(Mismatch)),
            ("body re-serialised", Some(ID), Some(&ts), Some(SIG.into()), r#"{"test":2432232314}"#, vec![SECRET], TS, Err(Mismatch)),
            ("body with a trailing newline", Some(ID), Some(&ts), Some(SIG.into()), "{\"test\": 2432232314}\n", vec![SECRET], TS, Err(Mismatch)),
            ("other id", Some("msg_other"), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS, Err(Mismatch)),
            ("missing v1,", Some(ID), Some(&ts), Some(SIG[3..].into()), BODY, vec![SECRET], TS, Err(Malformed)),
            ("v2 label", Some(ID), Some(&ts), Some(SIG.replace("v1,", "v2,")), BODY, vec![SECRET], TS, Err(Malformed)),
            ("v1= instead of v1,", Some(ID), Some(&ts), Some(SIG.replace("v1,", "v1=")), BODY, vec![SECRET], TS, Err(Malformed)),
            ("unpadded base64", Some(ID), Some(&ts), Some(unpadded), BODY, vec![SECRET], TS, Err(Malformed)),
            ("truncated tag", Some(ID), Some(&ts), Some(SIG[..20].into()), BODY, vec![SECRET], TS, Err(Malformed)),
            ("comma-separated list", Some(ID), Some(&ts), Some(format!("v1,AAAA,{SIG}")), BODY, vec![SECRET], TS, Err(Malformed)),
            ("empty signature", Some(ID), Some(&ts), Some(String::new()), BODY, vec![SECRET], TS, Err(Malformed)),
            ("missing signature", Some(ID), Some(&ts), None, BODY, vec![SECRET], TS, Err(Malformed)),
            ("wrong key", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![&other], TS, Err(Mismatch)),
            ("no key configured", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec![], TS, Err(NoKey)),
            ("secret not base64", Some(ID), Some(&ts), Some(SIG.into()), BODY, vec!["whsec_!!!"], TS, Err(NoKey)),
            ("missing id", None, Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadId)),
            ("id with a space", Some("msg 1"), Some(&ts), Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadId)),
            ("missing timestamp", Some(ID), None, Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadTimestamp)),
            ("timestamp in milliseconds", Some(ID), Some("1614265330000"), Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadTimestamp)),
            ("RFC 3339 timestamp", Some(ID), Some("2021-02-25T15:02:10Z"), Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadTimestamp)),
            ("negative timestamp", Some(ID), Some("-1614265330"), Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadTimestamp)),
            ("absurd timestamp", Some(ID), Some(&far), Some(SIG.into()), BODY, vec![SECRET], TS, Err(BadTimestamp)),
        ];
        for (name, id, ts, sig, body, secrets, now, want) in rows {
            assert_eq!(
                check(id, ts, sig.as_deref(), body, &secrets, now),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn static_tokens() {
        let tokens = [StaticToken::new(b"tok-1"), StaticToken::new(b"tok-0")];
        assert_eq!(token_matches("tok-1", &tokens), Some(0));
        assert_eq!(token_matches("tok-0", &tokens), Some(1));
        assert_eq!(token_matches("tok-", &tokens), None);
        assert_eq!(token_matches("tok-1 ", &tokens), None);
        assert_eq!(token_matches("", &[StaticToken::new(b"")]), None);
        assert_eq!(token_matches("x", &[]), None);
    }
}
