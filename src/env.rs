//! Reading app settings (environment variables): a leaf every module may import, so no
//! capability needs `config` to read one.

/// Reads one setting; `None` when absent or blank.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An owned [`Lookup`] that start-up hands to every builder (tests inject their own).
pub type SharedLookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Reads one setting; empty values count as absent, as in the Azure portal.
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The process environment as a [`Lookup`].
pub fn env_lookup(name: &str) -> Option<String> {
    setting(name)
}

/// A setting has a value the handler cannot use. Names the setting, never echoes the value
/// (a misplaced secret must not reach a log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name} is invalid: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub reason: String,
}

/// A whole-number setting, `default` when absent; a value that does not parse is an error
/// (silently falling back would hide a typo such as `7m`).
pub fn number<T: std::str::FromStr>(
    lookup: Lookup<'_>,
    name: &'static str,
    default: T,
) -> Result<T, SettingError> {
    match lookup(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| SettingError {
            name,
            reason: "not a whole number in range".into(),
        }),
    }
}

/// A whole number from setting `name` ([`number`]), `default` when absent, within `range`; a
/// value out of range stops start-up rather than silently becoming the default.
pub fn number_in(
    lookup: Lookup<'_>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, SettingError> {
    let n = number(lookup, name, default)?;
    if range.contains(&n) {
        return Ok(n);
    }
    Err(SettingError {
        name,
        reason: format!(
            "not a whole number from {} to {}",
            range.start(),
            range.end()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_default_or_name_the_setting() {
        let lookup = |n: &str| match n {
            "A" => Some(" 42 ".to_string()),
            "B" => Some("7m".to_string()),
            _ => None,
        };
        assert_eq!(number::<u64>(&lookup, "A", 1), Ok(42));
        assert_eq!(number::<u64>(&lookup, "C", 1), Ok(1));
        let e = number::<u64>(&lookup, "B", 1).unwrap_err();
        assert_eq!(e.name, "B");
        assert!(!e.to_string().contains("7m"), "{e}");
    }
}
