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

/// Test-only fault hook: `BRIDGE_TEST_CRASH_AT=<point>` aborts the process at `point` once per
/// app root, only while the marker `.bridge-test-crash-<point>` does not exist in the app root
/// (`FUNCTIONS_APP_ROOT_PATH`, else the current directory); it is created just before the
/// abort. The marker's name and directory are fixed and `point` is one of the code's own
/// literals, so the setting cannot make the handler write a file anywhere else.
#[derive(Debug, Clone, Default)]
pub struct CrashHook {
    at: Option<String>,
    marker_dir: Option<std::path::PathBuf>,
}

impl CrashHook {
    pub fn from_settings(lookup: Lookup<'_>) -> Self {
        Self {
            at: lookup("BRIDGE_TEST_CRASH_AT"),
            marker_dir: lookup("FUNCTIONS_APP_ROOT_PATH")
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::current_dir().ok()),
        }
    }

    /// Aborts the process if the hook names `point` and has not fired there yet.
    pub fn point(&self, point: &'static str) {
        if self.at.as_deref() != Some(point) {
            return;
        }
        let Some(root) = self.marker_dir.as_ref() else {
            return;
        };
        let marker = root.join(format!(".bridge-test-crash-{point}"));
        // `create_new`: an existing (or uncreatable) marker means this point has crashed once.
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_err()
        {
            return;
        }
        tracing::error!(
            point,
            "BRIDGE_TEST_CRASH_AT: aborting the process (test fault hook)"
        );
        std::process::abort();
    }
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
