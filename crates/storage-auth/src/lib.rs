//! Azure Storage access as the Functions host resolves it: connection strings (including
//! `UseDevelopmentStorage=true`) and SharedKey request signing.
//!
//! The new Azure SDK for Rust has no SharedKey support, yet Azurite and every local
//! `AzureWebJobsStorage` connection string need it; the handler and devkit share this one
//! implementation so the signing rules live in one place.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use url::Url;

/// The well-known Azurite / storage-emulator account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known, public Azurite account key (documented by Microsoft; not a secret).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The storage REST version this project speaks (accepted by Azurite 3.37).
pub const STORAGE_VERSION: &str = "2021-12-02";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectionStringError {
    #[error("connection string has a part without '=': {0:?}")]
    MalformedPart(String),
    #[error("connection string lacks {0}")]
    Missing(&'static str),
    #[error("connection string has an invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// An account key; `Debug` never shows it.
#[derive(Clone)]
pub struct AccountKey(Vec<u8>);

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(***)")
    }
}

/// A parsed storage connection string with SharedKey credentials.
#[derive(Debug, Clone)]
pub struct ConnectionString {
    pub account: String,
    key: AccountKey,
    pub blob_endpoint: Url,
    pub queue_endpoint: Url,
}

impl ConnectionString {
    /// Parses `UseDevelopmentStorage=true` or `Key=Value;…` as the host does.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let mut protocol = "https".to_string();
        let mut account = None;
        let mut key = None;
        let mut blob = None;
        let mut queue = None;
        let mut suffix = "core.windows.net".to_string();
        let mut dev = false;
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ConnectionStringError::MalformedPart(redact_part(part)))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "usedevelopmentstorage" => dev = v.trim().eq_ignore_ascii_case("true"),
                "defaultendpointsprotocol" => protocol = v.trim().to_ascii_lowercase(),
                "accountname" => account = Some(v.trim().to_string()),
                "accountkey" => key = Some(v.trim().to_string()),
                "blobendpoint" => blob = Some(v.trim().to_string()),
                "queueendpoint" => queue = Some(v.trim().to_string()),
                "endpointsuffix" => suffix = v.trim().to_string(),
                _ => {}
            }
        }
        if dev {
            let account = account.unwrap_or_else(|| DEV_ACCOUNT.to_string());
            let key = key.unwrap_or_else(|| DEV_ACCOUNT_KEY.to_string());
            blob.get_or_insert_with(|| format!("http://127.0.0.1:10000/{account}"));
            queue.get_or_insert_with(|| format!("http://127.0.0.1:10001/{account}"));
            return Self::build(account, &key, blob, queue);
        }
        let account = account.ok_or(ConnectionStringError::Missing("AccountName"))?;
        let key = key.ok_or(ConnectionStringError::Missing("AccountKey"))?;
        blob.get_or_insert_with(|| format!("{protocol}://{account}.blob.{suffix}"));
        queue.get_or_insert_with(|| format!("{protocol}://{account}.queue.{suffix}"));
        Self::build(account, &key, blob, queue)
    }

    fn build(
        account: String,
        key: &str,
        blob: Option<String>,
        queue: Option<String>,
    ) -> Result<Self, ConnectionStringError> {
        let key = STANDARD
            .decode(key)
            .map_err(|_| ConnectionStringError::Invalid {
                field: "AccountKey",
                reason: "not base64".into(),
            })?;
        let endpoint =
            |field: &'static str, v: Option<String>| -> Result<Url, ConnectionStringError> {
                let v = v.ok_or(ConnectionStringError::Missing(field))?;
                let url = Url::parse(v.trim_end_matches('/')).map_err(|e| {
                    ConnectionStringError::Invalid {
                        field,
                        reason: e.to_string(),
                    }
                })?;
                match url.scheme() {
                    "http" | "https" => Ok(url),
                    other => Err(ConnectionStringError::Invalid {
                        field,
                        reason: format!("scheme {other:?} is not http(s)"),
                    }),
                }
            };
        Ok(Self {
            blob_endpoint: endpoint("BlobEndpoint", blob)?,
            queue_endpoint: endpoint("QueueEndpoint", queue)?,
            account,
            key: AccountKey(key),
        })
    }

    /// A SharedKey signer for this account.
    pub fn signer(&self) -> SharedKeySigner {
        SharedKeySigner {
            account: self.account.clone(),
            key: self.key.clone(),
        }
    }

    /// The connection string for Azurite on the given loopback ports.
    pub fn azurite(blob_port: u16, queue_port: u16) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};\
             BlobEndpoint=http://127.0.0.1:{blob_port}/{DEV_ACCOUNT};\
             QueueEndpoint=http://127.0.0.1:{queue_port}/{DEV_ACCOUNT};"
        )
    }
}

fn redact_part(part: &str) -> String {
    // A malformed part might be a key fragment: show only its length.
    format!("<{} characters>", part.len())
}

/// Signs requests with the SharedKey scheme (Blob, Queue; version 2009-09-19 and later).
#[derive(Debug, Clone)]
pub struct SharedKeySigner {
    account: String,
    key: AccountKey,
}

impl SharedKeySigner {
    /// Returns the `Authorization` header value for a request.
    ///
    /// `headers` are all the request's headers (any case); `x-ms-date` or `Date` must be among
    /// them. `content_length` is the body length (0 is signed as empty, per the spec).
    pub fn authorization(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        content_length: usize,
    ) -> String {
        let sts = self.string_to_sign(method, url, headers, content_length);
        // HMAC-SHA256 accepts keys of any length, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        mac.update(sts.as_bytes());
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        format!("SharedKey {}:{}", self.account, sig)
    }

    fn string_to_sign(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        content_length: usize,
    ) -> String {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .unwrap_or("")
        };
        let length = if content_length == 0 {
            String::new()
        } else {
            content_length.to_string()
        };
        let mut s = String::with_capacity(256);
        for part in [
            method,
            get("content-encoding"),
            get("content-language"),
            &length,
            get("content-md5"),
            get("content-type"),
            "", // Date: x-ms-date is used instead
            get("if-modified-since"),
            get("if-match"),
            get("if-none-match"),
            get("if-unmodified-since"),
            get("range"),
        ] {
            s.push_str(part);
            s.push('\n');
        }
        let mut ms: Vec<(String, &str)> = headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
            .collect();
        ms.sort();
        for (k, v) in ms {
            s.push_str(&k);
            s.push(':');
            s.push_str(v);
            s.push('\n');
        }
        s.push('/');
        s.push_str(&self.account);
        s.push_str(url.path());
        let mut query: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in url.query_pairs() {
            let k = k.to_ascii_lowercase();
            match query.iter_mut().find(|(name, _)| *name == k) {
                Some((_, vs)) => vs.push(v.into_owned()),
                None => query.push((k, vec![v.into_owned()])),
            }
        }
        query.sort();
        for (k, mut vs) in query {
            vs.sort();
            s.push('\n');
            s.push_str(&k);
            s.push(':');
            s.push_str(&vs.join(","));
        }
        s
    }
}

/// RFC 7231 date for `x-ms-date`.
pub fn http_date(t: std::time::SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage_expands_to_azurite_defaults() {
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(cs.account, DEV_ACCOUNT);
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            cs.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
    }

    #[test]
    fn account_string_derives_endpoints_from_suffix() {
        let cs = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            cs.blob_endpoint.as_str(),
            "https://acme.blob.core.windows.net/"
        );
        assert_eq!(
            cs.queue_endpoint.as_str(),
            "https://acme.queue.core.windows.net/"
        );
    }

    #[test]
    fn errors_name_the_missing_part_and_never_echo_the_key() {
        let err = ConnectionString::parse("AccountName=acme").unwrap_err();
        assert_eq!(err, ConnectionStringError::Missing("AccountKey"));
        let err = ConnectionString::parse("AccountName=acme;secretstuffwithoutequals").unwrap_err();
        assert!(!err.to_string().contains("secretstuff"));
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert!(!format!("{cs:?}").contains(DEV_ACCOUNT_KEY));
    }

    #[test]
    fn string_to_sign_follows_the_documented_layout() {
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        let url = Url::parse(
            "http://127.0.0.1:10001/devstoreaccount1/q/messages?numofmessages=2&VisibilityTimeout=5",
        )
        .unwrap();
        let sts = cs.signer().string_to_sign(
            "GET",
            &url,
            &[
                ("x-ms-version", STORAGE_VERSION),
                ("x-ms-date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ],
            0,
        );
        assert_eq!(
            sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Tue, 01 Dec 2026 00:00:00 GMT\nx-ms-version:2021-12-02\n\
             /devstoreaccount1/devstoreaccount1/q/messages\nnumofmessages:2\nvisibilitytimeout:5"
        );
    }

    #[test]
    fn http_date_is_rfc7231() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_083_200);
        assert_eq!(http_date(t), "Tue, 01 Dec 2026 00:00:00 GMT");
    }
}
