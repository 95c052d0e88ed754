//! The redaction audit. Values that must never reach the handler's output — secrets, free-text
//! answers, respondent addresses — are registered here by the fakes and the local host as they
//! are handed out. When `BRIDGE_TEST_OUTPUT_DIR` is set, every local host writes what its
//! handler printed (stdout, stderr and each invocation's `Logs[]`) and the values registered so
//! far into that directory when it stops; `devkit scan-output DIR` then checks every output
//! file of the whole test run against every value any test registered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where the local hosts leave their output for the scan.
pub const OUTPUT_DIR_VAR: &str = "BRIDGE_TEST_OUTPUT_DIR";
/// Shorter values are not registered: they would match by accident.
pub const MIN_LEN: usize = 8;

static VALUES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Marks `value` as something the handler must never print.
pub fn register(value: &str) {
    if value.len() >= MIN_LEN {
        if let Ok(mut v) = VALUES.lock() {
            v.insert(value.to_string());
        }
    }
}

/// Registers the values of settings that hold secrets: names ending in a secret-ish word, and
/// the `AccountKey` of storage connection strings.
pub fn register_settings<N: AsRef<str>, V: AsRef<str>>(settings: impl IntoIterator<Item = (N, V)>) {
    for (name, value) in settings {
        let (name, value) = (name.as_ref(), value.as_ref());
        let upper = name.to_ascii_uppercase();
        if ["KEY", "KEY_PREVIOUS", "TOKEN", "PASSWORD", "SECRET"]
            .iter()
            .any(|s| upper.ends_with(s))
        {
            register(value);
        }
        for part in value.split(';') {
            if let Some(key) = part.trim().strip_prefix("AccountKey=") {
                register(key);
            }
        }
    }
}

/// For tests that run the binary themselves: registers the secret settings it was given and
/// keeps what it printed for the scan.
pub fn record_command<N: AsRef<str>, V: AsRef<str>>(
    env: impl IntoIterator<Item = (N, V)>,
    stdout: &str,
    stderr: &str,
) {
    register_settings(env);
    persist("cli", &[stdout.to_string(), stderr.to_string()]);
}

/// Writes `lines` (one output) and the values registered so far, when the scan is enabled.
pub fn persist(label: &str, lines: &[String]) {
    let Some(dir) = std::env::var_os(OUTPUT_DIR_VAR).map(PathBuf::from) else {
        // Said once per test process, so a run outside `scripts/test.sh` knows it was skipped.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "devkit: redaction scan skipped ({OUTPUT_DIR_VAR} is not set; scripts/test.sh sets it)"
            );
        });
        return;
    };
    let stem = format!(
        "{label}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let values: Vec<String> = VALUES
        .lock()
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default();
    let needles: String = values
        .iter()
        .map(|v| serde_json::Value::String(v.clone()).to_string() + "\n")
        .collect();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{stem}.out")), lines.join("\n"));
    let _ = std::fs::write(dir.join(format!("{stem}.needles")), needles);
}

/// One registered value found in an output file. The value itself is not kept: the report
/// must not print what it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub file: PathBuf,
    pub line: usize,
    /// `3 chars…` and the length: enough to find the source, too little to reuse.
    pub hint: String,
}

/// What a scan covered and found.
#[derive(Debug, Default)]
pub struct Scan {
    pub outputs: usize,
    pub lines: usize,
    pub values: usize,
    pub leaks: Vec<Leak>,
}

/// Scans every `*.out` and `*.log` file in `dir` for every value in every `*.needles` file.
pub fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut values = BTreeSet::new();
    let mut outputs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("needles") => {
                for line in std::fs::read_to_string(&path)?.lines() {
                    if let Ok(v) = serde_json::from_str::<String>(line) {
                        if v.len() >= MIN_LEN {
                            values.insert(v);
                        }
                    }
                }
            }
            Some("out") | Some("log") => outputs.push(path),
            _ => {}
        }
    }
    outputs.sort();
    let mut scan = Scan {
        outputs: outputs.len(),
        values: values.len(),
        ..Scan::default()
    };
    for file in outputs {
        let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
        for (n, line) in text.lines().enumerate() {
            scan.lines += 1;
            for v in &values {
                if line.contains(v.as_str()) {
                    scan.leaks.push(Leak {
                        file: file.clone(),
                        line: n + 1,
                        hint: format!(
                            "{}… ({} chars)",
                            v.chars().take(3).collect::<String>(),
                            v.chars().count()
                        ),
                    });
                }
            }
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_value_in_any_output_is_a_leak_and_short_values_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.needles"),
            "\"s3cret-webhook-key\"\n\"short\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.needles"), "\"respondent@example.com\"\n").unwrap();
        std::fs::write(
            dir.path().join("a.out"),
            "fine\nkey=s3cret-webhook-key\nshort\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c.log"),
            "{\"to\":\"respondent@example.com\"}",
        )
        .unwrap();
        let s = scan(dir.path()).unwrap();
        assert_eq!((s.outputs, s.values, s.lines), (2, 2, 4));
        assert_eq!(s.leaks.len(), 2);
        assert_eq!(s.leaks[0].line, 2);
        assert_eq!(s.leaks[0].hint, "s3c… (18 chars)");
        assert!(s.leaks[1].file.ends_with("c.log"));
    }

    #[test]
    fn secret_settings_and_account_keys_are_registered() {
        let settings: Vec<(String, String)> = vec![
            ("QUALTRICS_WEBHOOK_KEY".into(), "whk-registered-1".into()),
            ("BRIDGE_LOG".into(), "info-not-a-secret".into()),
            (
                "AzureWebJobsStorage".into(),
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=acct-key-registered==;"
                    .into(),
            ),
        ];
        register_settings(settings.iter().map(|(k, v)| (k, v)));
        let v = VALUES.lock().unwrap();
        assert!(v.contains("whk-registered-1"));
        assert!(v.contains("acct-key-registered=="));
        assert!(!v.contains("info-not-a-secret"));
    }
}
