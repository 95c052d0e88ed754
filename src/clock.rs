//! Timestamps as the ledgers and queue messages store them: RFC 3339 text, UTC, whole seconds.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as the ledgers write it.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Seconds since `at`; `i64::MAX` when `at` is not RFC 3339 (only the handler writes these
/// stamps, so an unreadable one is treated as long past: a claim it dates is not waited for).
pub fn age_secs(at: &str) -> i64 {
    OffsetDateTime::parse(at, &Rfc3339)
        .map(|t| (OffsetDateTime::now_utc() - t).whole_seconds())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_reads_back_as_no_age() {
        assert!((0..=1).contains(&age_secs(&now_rfc3339())));
    }

    #[test]
    fn an_unreadable_stamp_is_long_past() {
        assert_eq!(age_secs("soon"), i64::MAX);
        assert!(age_secs("2020-01-01T00:00:00Z") > 365 * 24 * 3600);
    }
}
