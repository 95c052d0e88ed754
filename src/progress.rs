//! Progress of an operator command's export on stderr: one redrawn line on a terminal,
//! plain lines otherwise (logs, CI), so stdout keeps only the result.

use crate::export::Step;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Plain mode prints a download line at most every this many bytes.
const PLAIN_BYTES_STEP: u64 = 16 * 1024 * 1024;
/// Terminal mode redraws at most this often.
const REDRAW: Duration = Duration::from_millis(100);

#[derive(Default)]
struct State {
    survey: String,
    export_id: String,
    last_percent: Option<i64>,
    last_bytes_line: u64,
    last_draw: Option<Instant>,
    /// A terminal line without its newline yet.
    open_line: bool,
}

/// Draws [`Step`]s.
pub struct Display {
    terminal: bool,
    state: Mutex<State>,
}

impl Display {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::default(),
        }
    }

    /// Draws one step (or nothing, when it would only repeat the last one).
    pub fn show(&self, step: &Step) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let line = match step {
            Step::Started {
                survey_id,
                export_id,
            } => {
                st.survey = survey_id.clone();
                st.export_id = export_id.clone();
                Some(format!("{survey_id}: export {export_id} started"))
            }
            Step::Polled { percent } => {
                let p = percent.clamp(0.0, 100.0).round() as i64;
                (st.last_percent != Some(p)).then(|| {
                    st.last_percent = Some(p);
                    format!(
                        "{}: export {} {}",
                        st.survey,
                        st.export_id,
                        bar(p as f64 / 100.0, p)
                    )
                })
            }
            Step::Downloaded { bytes } => {
                let due = if self.terminal {
                    st.last_draw.is_none_or(|t| t.elapsed() >= REDRAW)
                } else {
                    st.last_bytes_line == 0 || *bytes >= st.last_bytes_line + PLAIN_BYTES_STEP
                };
                due.then(|| {
                    st.last_bytes_line = *bytes;
                    format!("{}: downloading {}", st.survey, mib(*bytes))
                })
            }
            Step::Committed { lines } => {
                Some(format!("{}: {lines} response(s) written", st.survey))
            }
        };
        let Some(line) = line else { return };
        st.last_draw = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            let done = matches!(step, Step::Committed { .. });
            st.open_line = !done;
            write!(err, "\r\x1b[2K{line}{}", if done { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Draws one step of `analytics rebuild`: a plain line each (a batch takes seconds).
    pub fn show_analytics(&self, step: &crate::analytics::builder::Step) {
        use crate::analytics::builder::Step as A;
        let line = match step {
            A::Batch { blobs, bytes } => {
                format!("batch of {blobs} export blob(s), {}", mib(*bytes))
            }
            A::Blob { name, responses } => format!("{name}: {responses} response(s) in the batch"),
            A::Committed { responses } => format!("batch committed: {responses} response(s)"),
        };
        self.finish();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    /// Ends a bar left open by a run that stopped early, so the result starts a line.
    pub fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            if st.open_line {
                st.open_line = false;
                let _ = writeln!(std::io::stderr());
            }
        }
    }
}

fn bar(fraction: f64, percent: i64) -> String {
    const WIDTH: usize = 30;
    let filled = ((fraction.clamp(0.0, 1.0)) * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {percent:>3}%",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_sizes() {
        assert_eq!(bar(0.5, 50).matches('#').count(), 15);
        assert!(bar(1.0, 100).ends_with("100%"));
        assert_eq!(mib(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
