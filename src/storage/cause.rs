//! Storage failures as an operator should read them. `azure_core::Error`'s own `Display`
//! shows only the outermost message: a transport failure under the retry policy reads "retry
//! policy expired…" without saying what failed, and an error response prints its whole XML
//! body (including `AuthenticationErrorDetail`, which quotes the request's signature).

use azure_core::error::ErrorKind;
use std::error::Error as StdError;
use std::fmt;

/// Displays an SDK error as `{status} {x-ms-error-code}: {Message}` when storage answered, else
/// as its chain of causes (URLs without their query, where a SAS would be).
pub struct Cause<'a>(pub &'a azure_core::Error);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                write!(f, "{status}")?;
                // The body's `Code` and `Message` (the SDK's parser); only the first line of the
                // message: the rest is the request id and time.
                let parsed = azure_storage_blob::StorageError::try_from(azure_core::Error::from(
                    self.0.kind().clone(),
                ))
                .ok();
                let code = parsed
                    .as_ref()
                    .and_then(|p| p.error_code.as_ref().map(|c| c.to_string()))
                    .or_else(|| error_code.clone());
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                match parsed.and_then(|p| p.message) {
                    Some(m) => write!(f, ": {}", m.lines().next().unwrap_or_default().trim()),
                    None => write!(f, " {}", status.canonical_reason()),
                }
            }
            _ => {
                // Wrappers repeat their cause's text (the SDK's error around reqwest's): say
                // each part once.
                let mut parts: Vec<String> = Vec::new();
                let mut urls = Vec::new();
                let mut current: Option<&(dyn StdError + 'static)> = Some(self.0);
                while let Some(e) = current {
                    if let Some(url) = e.downcast_ref::<reqwest::Error>().and_then(|r| r.url()) {
                        urls.push(url.clone());
                    }
                    let text = e.to_string();
                    if parts.last() != Some(&text) {
                        parts.push(text);
                    }
                    current = e.source();
                }
                let mut text = parts.join(": ");
                // reqwest names the URL in its message; a SAS token would be in its query.
                for url in urls.iter().filter(|u| u.query().is_some()) {
                    let mut bare = url.clone();
                    bare.set_query(None);
                    text = text.replace(url.as_str(), bare.as_str());
                }
                f.write_str(&text)
            }
        }
    }
}
