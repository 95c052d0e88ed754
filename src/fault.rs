//! The test-only fault hook `BRIDGE_TEST_CRASH_AT=<point>`: aborts the process once at a named
//! point of a run (docs/export.md, "Crashes"), so end-to-end tests can prove crash recovery
//! with the real binary. Unset in Azure, it costs one string comparison per point.

use crate::env::Lookup;
use std::path::PathBuf;

/// Where and whether to abort.
#[derive(Debug, Clone, Default)]
pub struct CrashHook {
    at: Option<String>,
    /// Where the once-only markers live: the app root (`FUNCTIONS_APP_ROOT_PATH`), else the
    /// current directory.
    marker_dir: Option<PathBuf>,
}

impl CrashHook {
    pub fn from_settings(lookup: Lookup<'_>) -> Self {
        Self {
            at: lookup("BRIDGE_TEST_CRASH_AT"),
            marker_dir: lookup("FUNCTIONS_APP_ROOT_PATH")
                .map(PathBuf::from)
                .or_else(|| std::env::current_dir().ok()),
        }
    }

    /// Aborts the process at `point` once per app root: only while the marker
    /// `.bridge-test-crash-<point>` does not exist in the app root; it is created just before
    /// the abort. The marker's name and directory are fixed and `point` is one of the code's
    /// own literals, so the setting cannot make the handler write a file anywhere else.
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
