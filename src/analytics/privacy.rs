//! What a survey lets into the analytics tables (`[surveys.analytics]` in `bridge.toml`):
//! respondent identity fields only when asked for and then as a keyed hash, embedded data by
//! allow-list, free text droppable (DESIGN: contract additions).

use crate::secrets::Secret;
use aws_lc_rs::hmac;
use serde::Deserialize;
use toml::Spanned;

/// A respondent identity field of the export row (DESIGN: never in the tables unless asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityField {
    IpAddress,
    RecipientEmail,
    RecipientFirstName,
    RecipientLastName,
    ExternalDataReference,
    LocationLatitude,
    LocationLongitude,
}

impl IdentityField {
    pub const ALL: [Self; 7] = [
        Self::IpAddress,
        Self::RecipientEmail,
        Self::RecipientFirstName,
        Self::RecipientLastName,
        Self::ExternalDataReference,
        Self::LocationLatitude,
        Self::LocationLongitude,
    ];

    /// The key in the export row's `values`.
    pub fn export_key(self) -> &'static str {
        match self {
            Self::IpAddress => "ipAddress",
            Self::RecipientEmail => "recipientEmail",
            Self::RecipientFirstName => "recipientFirstName",
            Self::RecipientLastName => "recipientLastName",
            Self::ExternalDataReference => "externalDataReference",
            Self::LocationLatitude => "locationLatitude",
            Self::LocationLongitude => "locationLongitude",
        }
    }
}

/// What a survey lets into the tables (`[surveys.analytics]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Embedded-data keys allowed into `response_embedded_data` (exact names).
    pub embedded_allow: Vec<String>,
    /// Keep free text (`_TEXT` answers, form fields, "other" texts); off drops `value_text`.
    pub free_text: bool,
    /// Identity fields the survey asks for; each reaches `survey_response` only as
    /// [`identity_hash`] under `hash_key`.
    pub identity: Vec<IdentityField>,
    /// The keyed hash's key (secret `analytics-hash-key`). Without it no identity field is
    /// written, whatever `identity` says.
    pub hash_key: Option<Secret>,
}

/// Lowercase hex HMAC-SHA256(key, field name ‖ 0x00 ‖ normalised value). Keyed because the
/// inputs are guessable: an unkeyed SHA-256 of an e-mail address or an IPv4 address is
/// reversed by hashing candidate lists (every IPv4 address is 2^32 hashes; leaked address
/// lists are public), so it is pseudonymous only in name. The field name keeps equal values
/// of different fields apart; e-mail addresses are trimmed and lower-cased so one person
/// hashes alike across surveys.
pub fn identity_hash(key: &Secret, field: IdentityField, value: &str) -> String {
    let value = value.trim();
    let value = match field {
        IdentityField::RecipientEmail => value.to_lowercase(),
        _ => value.to_string(),
    };
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose().as_bytes());
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(field.export_key().as_bytes());
    ctx.update(&[0]);
    ctx.update(value.as_bytes());
    let tag = ctx.sign();
    let mut out = String::with_capacity(64);
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `[surveys.analytics]`. Absent: no identity field, no embedded data, free text kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Identity fields to keep, hashed (`ipAddress`, `recipientEmail`, …).
    #[serde(default)]
    pub identity: Vec<Spanned<IdentityField>>,
    /// Embedded-data keys allowed into `response_embedded_data` (exact names).
    #[serde(default)]
    pub embedded: Vec<Spanned<String>>,
    /// Keep free text (`_TEXT`, form fields, "other" texts); `false` drops it.
    #[serde(default = "keep")]
    pub free_text: bool,
}

fn keep() -> bool {
    true
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            identity: Vec::new(),
            embedded: Vec::new(),
            free_text: true,
        }
    }
}

/// A bad `[surveys.analytics]` entry: the field path and, where known, its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub field: String,
    pub span: Option<std::ops::Range<usize>>,
    pub message: String,
}

impl AnalyticsConfig {
    /// Refuses entries that would do nothing or leak: an embedded key that is a response
    /// metadata or identity field (those are never embedded data; identity goes through
    /// `identity`), one shaped like a question key, an empty or repeated name.
    pub fn check(&self) -> Result<(), PolicyError> {
        for (i, key) in self.embedded.iter().enumerate() {
            let err = |message: String| PolicyError {
                field: format!("embedded[{i}]"),
                span: Some(key.span()),
                message,
            };
            let name = key.get_ref();
            if name.trim().is_empty() {
                return Err(err("is empty".into()));
            }
            if super::decode::is_metadata(name) {
                return Err(err(format!(
                    "{name:?} is response metadata, not embedded data (identity fields go in `identity`, hashed)"
                )));
            }
            if super::decode::is_question_key(name) {
                return Err(err(format!(
                    "{name:?} is a question's key, not embedded data"
                )));
            }
            if self.embedded[..i].iter().any(|o| o.get_ref() == name) {
                return Err(err(format!("{name:?} is listed twice")));
            }
        }
        for (i, f) in self.identity.iter().enumerate() {
            if self.identity[..i]
                .iter()
                .any(|o| o.get_ref() == f.get_ref())
            {
                return Err(PolicyError {
                    field: format!("identity[{i}]"),
                    span: Some(f.span()),
                    message: format!("{:?} is listed twice", f.get_ref().export_key()),
                });
            }
        }
        Ok(())
    }

    /// The decoder's policy; `hash_key` is the secret `analytics-hash-key`, read by the caller.
    pub fn policy(&self, hash_key: Option<Secret>) -> Policy {
        Policy {
            embedded_allow: self.embedded.iter().map(|k| k.get_ref().clone()).collect(),
            free_text: self.free_text,
            identity: self.identity.iter().map(|f| *f.get_ref()).collect(),
            hash_key,
        }
    }

    /// `config check --output json`: what reaches the tables.
    pub fn json(&self) -> serde_json::Value {
        let identity: Vec<_> = self
            .identity
            .iter()
            .map(|f| f.get_ref().export_key())
            .collect();
        let embedded: Vec<_> = self.embedded.iter().map(|k| k.get_ref().as_str()).collect();
        serde_json::json!({
            "identityHashed": identity,
            "embedded": embedded,
            "freeText": self.free_text,
        })
    }

    /// One line for `config check`: what reaches the tables.
    pub fn describe(&self) -> String {
        let identity = if self.identity.is_empty() {
            "no identity fields".to_string()
        } else {
            let names: Vec<_> = self
                .identity
                .iter()
                .map(|f| f.get_ref().export_key())
                .collect();
            format!(
                "identity {} (HMAC-SHA256 with secret analytics-hash-key)",
                names.join(", ")
            )
        };
        let embedded = if self.embedded.is_empty() {
            "no embedded data".to_string()
        } else {
            let names: Vec<_> = self.embedded.iter().map(|k| k.get_ref().as_str()).collect();
            format!("embedded data {}", names.join(", "))
        };
        let text = if self.free_text {
            "free text kept"
        } else {
            "free text dropped"
        };
        format!("{identity}; {embedded}; {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AnalyticsConfig, String> {
        toml::from_str::<AnalyticsConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_and_checks_the_section() {
        let c = parse(
            "identity = [\"recipientEmail\", \"ipAddress\"]\nembedded = [\"Team\"]\nfree_text = false\n",
        )
        .unwrap();
        c.check().unwrap();
        let p = c.policy(None);
        assert_eq!(
            p.identity,
            [IdentityField::RecipientEmail, IdentityField::IpAddress]
        );
        assert_eq!(p.embedded_allow, ["Team"]);
        assert!(!p.free_text);
        assert!(
            c.describe().contains("free text dropped"),
            "{}",
            c.describe()
        );
        assert!(parse("").unwrap().free_text, "free text is kept by default");
        let e = parse("identity = [\"email\"]\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("email"), "{e}");
        let e = parse("embeded = []\n").unwrap_err();
        assert!(e.contains("embeded"), "{e}");
        for (bad, why) in [
            ("embedded = [\"Team\", \"recipientEmail\"]", "metadata"),
            ("embedded = [\"QID3_TEXT\"]", "question"),
            ("embedded = [\"\"]", "empty"),
            ("embedded = [\"A\", \"A\"]", "twice"),
            ("identity = [\"ipAddress\", \"ipAddress\"]", "twice"),
        ] {
            let e = parse(bad).unwrap().check().unwrap_err();
            assert!(e.message.contains(why), "{bad}: {e:?}");
            assert!(e.span.is_some());
        }
    }
}
