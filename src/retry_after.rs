//! `Retry-After` (RFC 9110 §10.2.3): delay seconds or an HTTP date. One parser for every
//! client that honours it (Qualtrics, ServiceNow, Zendesk).

use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, SystemTime};

/// The wait `value` asks for at `now`; `None` when it is neither a non-negative number of
/// seconds nor an HTTP date. A date in the past means no wait.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        // Whole seconds per the RFC; decimals are tolerated. Too large to represent: unusable.
        return v
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response, read at the current time.
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    parse(headers.get(RETRY_AFTER)?.to_str().ok()?, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // 2026-01-31T12:00:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_769_860_800);
        let s = |n: u64| Some(Duration::from_secs(n));
        let rows: &[(&str, &str, Option<Duration>)] = &[
            ("seconds", "120", s(120)),
            ("zero", "0", s(0)),
            ("padded", " 5 ", s(5)),
            ("decimal", "1.5", Some(Duration::from_millis(1500))),
            ("negative", "-1", None),
            ("sign", "+5", None),
            ("empty", "", None),
            ("word", "soon", None),
            ("unit", "5s", None),
            ("infinite", "1e400", None),
            ("too large", "1e30", None),
            ("IMF-fixdate ahead", "Sat, 31 Jan 2026 12:00:30 GMT", s(30)),
            ("IMF-fixdate now", "Sat, 31 Jan 2026 12:00:00 GMT", s(0)),
            ("IMF-fixdate past", "Sat, 31 Jan 2026 11:00:00 GMT", s(0)),
            ("RFC 850", "Saturday, 31-Jan-26 12:01:00 GMT", s(60)),
            ("asctime", "Sat Jan 31 12:02:00 2026", s(120)),
            ("not GMT", "Sat, 31 Jan 2026 12:00:30 UTC", None),
            ("date without time", "Sat, 31 Jan 2026", None),
        ];
        for (name, value, want) in rows {
            assert_eq!(parse(value, now), *want, "{name}: {value:?}");
        }
    }

    #[test]
    fn from_headers_reads_the_header_or_none() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(from_headers(&h), Some(Duration::from_secs(7)));
    }
}
